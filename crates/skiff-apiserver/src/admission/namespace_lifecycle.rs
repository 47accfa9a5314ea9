//! Upstream's NamespaceLifecycle: nothing new goes into a namespace that
//! is missing or being deleted, and the built-in namespaces stay.

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::registry::{self, ResourceType};
use skiff_core::{meta, ApiError};

use super::{Attributes, Mutating, Operation, Validating, Verdict};
use crate::response::store_error;
use crate::storage::{mentions, Objects};

pub struct NamespaceLifecycle(pub Objects);

#[async_trait]
impl Mutating for NamespaceLifecycle {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation != Operation::Create || !a.resource.namespaced {
            return Ok(());
        }
        match meta::namespace(obj) {
            Some(ns) => self.check(a.resource, ns, meta::name(obj)).await,
            None => Ok(()),
        }
    }
}

/// Namespaces that always exist; all but the last may not be deleted.
pub const BUILT_IN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[async_trait]
impl Validating for NamespaceLifecycle {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation == Operation::Delete && a.is("", "Namespace")
    }

    async fn validate(
        &self,
        _a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        let name = meta::name(obj);
        if BUILT_IN_NAMESPACES[..3].contains(&name) {
            return Err(ApiError::forbidden(format!(
                "namespaces {name:?} is forbidden: this namespace may not be deleted"
            )));
        }
        Ok(())
    }
}

impl NamespaceLifecycle {
    /// Refuses a new object in `ns` unless the namespace is live.
    async fn check(&self, r: &ResourceType, ns: &str, name: &str) -> Result<(), ApiError> {
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
        let store = &self.0.store;
        // Only a namespace whose bytes mention a deletion is decoded (every
        // create in a namespace asks).
        let read = |kv: Option<skiff_store::KeyValue>| -> Result<Option<Namespace>, ApiError> {
            kv.map(|kv| {
                if !mentions(&kv.value, b"\"deletionTimestamp\"") {
                    let metadata = Meta { deletion: None };
                    return Ok(Namespace { metadata });
                }
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
                details: Some(Box::new(json!({"name": name, "kind": r.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]}))),
                ..ApiError::forbidden(format!(
                    "{} {name:?} is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                    r.plural
                ))
            }),
            Some(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};

    #[tokio::test]
    async fn new_objects_go_only_into_live_namespaces() {
        let f = Fixture::new();
        f.put("", "namespaces", json!({"metadata": {"name": "live"}}))
            .await;
        f.put(
            "",
            "namespaces",
            json!({"metadata": {"name": "going", "deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        )
        .await;
        let plugin = NamespaceLifecycle(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "configmaps", &alice);
        let map = |ns: &str| json!({"metadata": {"name": "m", "namespace": ns}});
        assert!(plugin
            .admit(&a, &mut map("live"), &mut Default::default())
            .await
            .is_ok());
        let missing = plugin
            .admit(&a, &mut map("nowhere"), &mut Default::default())
            .await
            .unwrap_err();
        assert_eq!(missing.code, 404);
        let going = plugin
            .admit(&a, &mut map("going"), &mut Default::default())
            .await
            .unwrap_err();
        assert_eq!(going.code, 403);
        assert_eq!(
            going.message,
            "configmaps \"m\" is forbidden: unable to create new content in namespace going because it is being terminated"
        );
        // Cluster-scoped objects and updates are not its business.
        let nodes = creating("", "nodes", &alice);
        assert!(plugin
            .admit(
                &nodes,
                &mut json!({"metadata": {"name": "n"}}),
                &mut Default::default(),
            )
            .await
            .is_ok());
        // The built-in namespaces stay.
        let mut deleting = creating("", "namespaces", &alice);
        deleting.operation = Operation::Delete;
        assert!(Validating::handles(&plugin, &deleting));
        let mut verdict = Verdict::default();
        let kept = json!({"metadata": {"name": "kube-system"}});
        let err = plugin
            .validate(&deleting, &kept, &mut verdict)
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "namespaces \"kube-system\" is forbidden: this namespace may not be deleted"
        );
        let mine = json!({"metadata": {"name": "live"}});
        assert!(plugin
            .validate(&deleting, &mine, &mut verdict)
            .await
            .is_ok());
    }
}
