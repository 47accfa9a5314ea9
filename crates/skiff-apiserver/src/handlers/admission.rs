//! What the server does to an object between decoding and storing it:
//! system metadata, namespace lifecycle, defaults, pod admission,
//! validation, generation and field management.

use rand::Rng;
use serde_json::{json, Value};
use skiff_core::apply::{track_update, Manager};
use skiff_core::registry::{self, ResourceType};
use skiff_core::schema::schemas;
use skiff_core::{defaults, meta, validate, ApiError};

use super::pod_security::Admitted;
use super::{strategy, Api};
use crate::response::store_error;

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
pub(super) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn root_def(r: &ResourceType) -> Option<&'static str> {
    schemas().root(r)
}

fn has_generation(r: &ResourceType, obj: &Value) -> bool {
    obj.get("spec").is_some() || r.has_status()
}

/// The object without the parts a spec change ignores.
fn spec_of(r: &ResourceType, obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        if !r.has_status() {
            m.remove("apiVersion");
            m.remove("kind");
        }
    }
    o
}

impl Api {
    /// Refuses writes into a namespace that is missing or being deleted.
    pub async fn check_namespace(
        &self,
        r: &ResourceType,
        ns: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        let namespaces = registry::lookup("", "v1", "namespaces").expect("namespaces are served");
        #[derive(serde::Deserialize)]
        struct Meta {
            #[serde(rename = "deletionTimestamp")]
            deletion: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Namespace {
            metadata: Meta,
        }
        let key = namespaces.key(None, ns);
        let store = &self.objects.store;
        let read = |kv: Option<skiff_store::KeyValue>| -> Result<Option<Namespace>, ApiError> {
            kv.map(|kv| {
                serde_json::from_slice(&kv.value).map_err(|e| ApiError::internal(e.to_string()))
            })
            .transpose()
        };
        // The cache as it stands answers almost always; a missing or
        // terminating namespace is confirmed with a consistent read.
        let mut found = read(
            store
                .get_any(&key)
                .await
                .map_err(|e| store_error(e, namespaces, ns))?,
        )?;
        if found.as_ref().is_none_or(|n| n.metadata.deletion.is_some()) {
            found = read(
                store
                    .get(&key)
                    .await
                    .map_err(|e| store_error(e, namespaces, ns))?,
            )?;
        }
        match found {
            None => Err(ApiError::not_found("", "namespaces", ns)),
            Some(n) if n.metadata.deletion.is_some() => Err(ApiError {
                details: Some(json!({"name": name, "kind": r.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]})),
                ..ApiError::forbidden(format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    r.plural
                ))
            }),
            Some(_) => Ok(()),
        }
    }

    /// Prepares a new object: namespace, name, system metadata, status,
    /// defaults, pod admission, validation and managed fields. Returns the
    /// warnings admission has for the client and its audit annotations.
    pub async fn prepare_create(
        &self,
        r: &ResourceType,
        path_ns: Option<&str>,
        obj: &mut Value,
        manager: &str,
    ) -> Result<Admitted, ApiError> {
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
        if let Some(ns) = meta::namespace(obj).map(str::to_owned) {
            self.check_namespace(r, &ns, meta::name(obj)).await?;
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
        if r.kind == "Pod" && r.group.is_empty() {
            self.resolve_priority(obj).await?;
            self.admit_service_account(obj).await?;
            self.limit_pod(obj).await?;
        }
        if r.kind == "PersistentVolumeClaim" && r.group.is_empty() {
            self.default_storage_class(obj).await?;
        }
        super::storage::protect(r, obj);
        strategy.prepare_create(obj);
        validate::object(r, obj, None)?;
        let admitted = self.pod_security(r, obj).await?;
        let manager = Manager {
            name: manager,
            api_version: &r.api_version(),
            subresource: None,
        };
        track_update(None, obj, &manager, root_def(r));
        Ok(admitted)
    }
}

impl Api {
    /// Upstream's Priority admission: a pod's `priorityClassName` (or the
    /// global default class) sets its `priority` and `preemptionPolicy`.
    async fn resolve_priority(&self, pod: &mut Value) -> Result<(), ApiError> {
        let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
            .expect("priority classes are served");
        let name = pod["spec"]["priorityClassName"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let class = if name.is_empty() {
            let items = self.objects.recent_list(classes, None).await?;
            items.into_iter().find(|c| c["globalDefault"] == true)
        } else {
            let found = self.objects.try_get(classes, None, &name).await?;
            Some(found.ok_or_else(|| {
                ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: no PriorityClass with name {name} was found",
                    meta::name(pod)
                ))
            })?)
        };
        if let Some(class) = class {
            if !pod["spec"]["priority"].is_null() && pod["spec"]["priority"] != class["value"] {
                return Err(ApiError::forbidden(format!(
                    "pods \"{}\" is forbidden: the integer value of priority ({}) must not be provided in pod spec; priority admission controller computed {} from the given PriorityClass name",
                    meta::name(pod),
                    pod["spec"]["priority"],
                    class["value"]
                )));
            }
            pod["spec"]["priorityClassName"] = class["metadata"]["name"].clone();
            pod["spec"]["priority"] = class["value"].clone();
            if let Some(policy) = class["preemptionPolicy"].as_str() {
                pod["spec"]["preemptionPolicy"] = json!(policy);
            }
        }
        Ok(())
    }
}

/// Prepares the next state of a stored object from a requested one:
/// the resource's strategy decides what a write through `subresource`
/// may change; system metadata stays; the generation counts spec changes.
pub fn prepare_update(
    r: &ResourceType,
    current: &Value,
    next: Value,
    manager: &str,
    subresource: Option<&str>,
) -> Result<Value, ApiError> {
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
                vec![skiff_core::status::Cause {
                    reason: "FieldValueForbidden",
                    field: "metadata.finalizers".into(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                }],
            ));
        }
    }
    defaults::apply(r, &mut next);
    if meta::get(current, "generation").is_some() && spec_of(r, &next) != spec_of(r, current) {
        let generation = meta::get(current, "generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta::set(&mut next, "generation", generation + 1);
    }
    validate::object(r, &next, Some(current))?;
    let manager = Manager {
        name: manager,
        api_version: &r.api_version(),
        subresource,
    };
    track_update(Some(current), &mut next, &manager, root_def(r));
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        next["status"] = json!({"replicas": 99});
        let same = prepare_update(r, &current, next.clone(), "m", None).unwrap();
        assert_eq!(same["metadata"]["uid"], "u1");
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
