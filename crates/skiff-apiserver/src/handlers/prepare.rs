//! What the server does to an object between decoding and storing it:
//! system metadata, defaults, admission, the strategy, validation,
//! generation and field management.

use rand::Rng;
use serde_json::Value;
use skiff_core::apply::{track_update, Manager};
use skiff_core::registry::ResourceType;
use skiff_core::schema::Root;
use skiff_core::status::Cause;
use skiff_core::{defaults, meta, validate, ApiError};

use super::{strategy, Api};
use crate::admission::{Attributes, Verdict};

/// Metadata only the server sets.
const SYSTEM_META: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generation",
    "selfLink",
];

/// Five characters as upstream's `generateName` appends.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn has_generation(r: &ResourceType, obj: &Value) -> bool {
    obj.get("spec").is_some() || r.has_status()
}

/// Whether the spec changed: everything but metadata and status (and the
/// type of a kind without a status, whose other fields are its spec).
fn spec_changed(r: &ResourceType, root: &Root, current: &Value, next: &Value) -> bool {
    let ignored: &[&str] = if r.has_status() {
        &["metadata", "status"]
    } else {
        &["metadata", "status", "apiVersion", "kind"]
    };
    if meta::equal_except(current, next, ignored, &[]) {
        return false;
    }
    // An object stored before empty lists were left out is no other spec.
    let mut current = current.clone();
    root.drop_empty(&mut current);
    !meta::equal_except(&current, next, ignored, &[])
}

impl Api {
    /// Prepares a new object: namespace, name, system metadata, status and
    /// defaults, managed fields, then admission's mutating plugins, the
    /// strategy and validation, and the validating plugins. Returns what
    /// admission has for the reply.
    pub async fn prepare_create(
        &self,
        a: &Attributes<'_>,
        path_ns: Option<&str>,
        obj: &mut Value,
        manager: &str,
    ) -> Result<Verdict, ApiError> {
        let r = a.resource;
        if r.namespaced {
            let ns = match (path_ns, meta::namespace(obj)) {
                (Some(p), Some(b)) if p != b => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                (Some(p), _) => p.to_owned(),
                (None, Some(b)) => b.to_owned(),
                (None, None) => return Err(ApiError::method_not_allowed("POST", r.plural)),
            };
            meta::set(obj, "namespace", ns);
        } else {
            meta::remove(obj, "namespace");
        }
        if meta::name(obj).is_empty() {
            if let Some(prefix) = meta::get_str(obj, "generateName").map(str::to_owned) {
                meta::set(obj, "name", format!("{prefix}{}", random_suffix()));
            }
        }
        for field in SYSTEM_META {
            meta::remove(obj, field);
        }
        meta::remove(obj, "resourceVersion");
        meta::set(obj, "uid", uuid::Uuid::new_v4().to_string());
        meta::set(obj, "creationTimestamp", meta::now());
        if has_generation(r, obj) {
            meta::set(obj, "generation", 1);
        }
        let strategy = strategy::of(r);
        match strategy.initial_status(r, obj) {
            Some(status) => obj["status"] = strategy::typed_status(r, status),
            None => {
                if let Some(o) = obj.as_object_mut() {
                    o.remove("status");
                }
            }
        }
        defaults::apply(r, obj);
        let root = Root::of(r);
        root.drop_empty(obj);
        // As upstream, the writer owns what it sent and its defaults, not
        // what admission and the strategy add (a service account's token
        // volume, a priority).
        let manager = Manager {
            name: manager,
            api_version: &r.api_version(),
            subresource: None,
            status_apart: r.has_status(),
        };
        track_update(None, obj, &manager, root.shape());
        let mut said = self.admission.admit(a, obj).await?;
        said.warnings.extend(strategy.prepare_create(obj));
        validate::object(r, obj, None)?;
        self.admission.validate(a, obj, said).await
    }
}

/// Prepares the next state of a stored object from a requested one:
/// the resource's strategy decides what a write through `subresource`
/// may change; system metadata stays; the generation counts spec changes.
/// A uid other than the stored one is refused as upstream does (it names
/// an object deleted and created again); an empty one means the same.
pub fn prepare_update(
    r: &ResourceType,
    current: &Value,
    next: Value,
    manager: &str,
    subresource: Option<&str>,
) -> Result<Value, ApiError> {
    if let Some(uid) = meta::get_str(&next, "uid").filter(|u| !u.is_empty()) {
        if Some(uid) != meta::get_str(current, "uid") {
            return Err(ApiError::invalid(
                r.group,
                r.kind,
                meta::name(current),
                vec![Cause::invalid("metadata.uid", uid, "field is immutable")],
            ));
        }
    }
    let mut next = strategy::of(r).prepare_update(r, current, next, subresource);
    for field in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match meta::get(current, field) {
            Some(v) => meta::set(&mut next, field, v.clone()),
            None => {
                meta::remove(&mut next, field);
            }
        }
    }
    if meta::is_deleting(current) {
        let added = meta::finalizers(&next)
            .into_iter()
            .any(|f| !meta::finalizers(current).contains(&f));
        if added {
            return Err(ApiError::invalid(
                r.group,
                r.kind,
                meta::name(current),
                vec![skiff_core::status::Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                )],
            ));
        }
    }
    defaults::apply(r, &mut next);
    let root = Root::of(r);
    root.drop_empty(&mut next);
    if meta::get(current, "generation").is_some() && spec_changed(r, &root, current, &next) {
        let generation = meta::get(current, "generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta::set(&mut next, "generation", generation + 1);
    }
    if (r.group, r.kind, subresource) == ("", "Pod", Some("resize")) {
        validate::pod_resize(r, &next, current)?;
    } else {
        validate::object(r, &next, Some(current))?;
    }
    let manager = Manager {
        name: manager,
        api_version: &r.api_version(),
        subresource,
        status_apart: r.has_status(),
    };
    track_update(Some(current), &mut next, &manager, root.shape());
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_core::registry;

    #[test]
    fn update_keeps_system_fields_and_bumps_generation_on_spec_change() {
        let r = registry::lookup("apps", "v1", "deployments").unwrap();
        let mut current = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "d", "uid": "u1", "generation": 1, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
                "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}},
            "status": {"replicas": 1}});
        // Stored objects always carry their defaults.
        defaults::apply(r, &mut current);
        let mut next = current.clone();
        next["metadata"]["uid"] = json!("forged");
        let refused = prepare_update(r, &current, next.clone(), "m", Some("status")).unwrap_err();
        assert_eq!(refused.code, 422);
        assert!(
            refused
                .message
                .contains(r#"metadata.uid: Invalid value: "forged": field is immutable"#),
            "{}",
            refused.message
        );
        next["metadata"]["uid"] = json!("");
        next["metadata"]["creationTimestamp"] = json!("2030-01-01T00:00:00Z");
        next["status"] = json!({"replicas": 99});
        let same = prepare_update(r, &current, next.clone(), "m", None).unwrap();
        assert_eq!(same["metadata"]["uid"], "u1");
        assert_eq!(
            same["metadata"]["creationTimestamp"],
            "2024-01-01T00:00:00Z"
        );
        assert_eq!(same["status"]["replicas"], 1);
        assert_eq!(same["metadata"]["generation"], 1);
        next["spec"]["replicas"] = json!(3);
        let bumped = prepare_update(r, &current, next.clone(), "m", None).unwrap();
        assert_eq!(bumped["metadata"]["generation"], 2);
        let status = prepare_update(r, &current, next, "m", Some("status")).unwrap();
        assert_eq!(
            (
                status["spec"]["replicas"].clone(),
                status["status"]["replicas"].clone()
            ),
            (json!(1), json!(99))
        );
    }
}
