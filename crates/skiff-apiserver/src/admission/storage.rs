//! Storage admission, as upstream's plugins: DefaultStorageClass gives a
//! new claim that names no class the default one; StorageObjectInUseProtection
//! puts the protection finalizers on claims and volumes (the volume
//! controllers take them off once nothing uses the object);
//! PersistentVolumeClaimResize lets a claim grow only where its class
//! allows expansion.

use std::collections::HashSet;

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::registry::{self, ResourceType};
use skiff_core::volumes::{CLAIM_PROTECTION, DEFAULT_CLASS, VOLUME_PROTECTION};
use skiff_core::{meta, ApiError};

use super::{Attributes, Mutating, Operation, Validating, Verdict};
use crate::storage::Objects;

fn classes() -> &'static ResourceType {
    registry::lookup("storage.k8s.io", "v1", "storageclasses").expect("storage classes are served")
}

/// DefaultStorageClass: a claim without `storageClassName` (not one
/// with `""`, which asks for static binding) gets the default class, the
/// newest if several are marked.
pub struct DefaultStorageClass(pub Objects);

#[async_trait]
impl Mutating for DefaultStorageClass {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        claim: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation != Operation::Create
            || !a.is("", "PersistentVolumeClaim")
            || !claim["spec"]["storageClassName"].is_null()
        {
            return Ok(());
        }
        let items = self.0.recent_list(classes(), None).await?;
        let default = items
            .iter()
            .filter(|c| c["metadata"]["annotations"][DEFAULT_CLASS] == "true")
            .max_by_key(|c| {
                let created = meta::get_str(c, "creationTimestamp").unwrap_or_default();
                (created.to_owned(), meta::name(c).to_owned())
            });
        if let Some(class) = default {
            claim["spec"]["storageClassName"] = json!(meta::name(class));
        }
        Ok(())
    }
}

/// StorageObjectInUseProtection: new claims and volumes get their
/// protection finalizer.
pub struct StorageObjectInUseProtection;

#[async_trait]
impl Mutating for StorageObjectInUseProtection {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation == Operation::Create && a.subresource.is_none() && !a.resource.custom {
            protect(a.resource, obj);
        }
        Ok(())
    }
}

/// PersistentVolumeClaimResize: a claim grows only where its class
/// allows expansion.
pub struct PersistentVolumeClaimResize(pub Objects);

#[async_trait]
impl Validating for PersistentVolumeClaimResize {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation == Operation::Update && a.is("", "PersistentVolumeClaim")
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        claim: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        let Some(current) = a.old else {
            return Ok(());
        };
        if !grows(current, claim) {
            return Ok(());
        }
        let items = self.0.recent_list(classes(), None).await?;
        let expandable: HashSet<String> = items
            .iter()
            .filter(|c| c["allowVolumeExpansion"] == true)
            .map(|c| meta::name(c).to_owned())
            .collect();
        admit_resize(&expandable, current, claim)
    }
}

/// The protection finalizer of a new claim or volume.
pub fn protect(r: &ResourceType, obj: &mut Value) {
    let finalizer = match (r.group, r.kind) {
        ("", "PersistentVolumeClaim") => CLAIM_PROTECTION,
        ("", "PersistentVolume") => VOLUME_PROTECTION,
        _ => return,
    };
    if meta::finalizers(obj).iter().any(|f| f == finalizer) {
        return;
    }
    let m = meta::meta_mut(obj);
    let list = m.entry("finalizers").or_insert(json!([]));
    match list.as_array_mut() {
        Some(l) => l.push(json!(finalizer)),
        None => *list = json!([finalizer]),
    }
}

/// Whether a claim asks for more storage than it had.
fn grows(current: &Value, next: &Value) -> bool {
    let storage = |o: &Value| {
        o["spec"]["resources"]["requests"]["storage"]
            .as_str()
            .and_then(skiff_core::quantity::parse_milli)
    };
    storage(next) > storage(current)
}

/// A claim asks for more storage only if it is bound and its class
/// allows expansion.
fn admit_resize(
    expandable: &HashSet<String>,
    current: &Value,
    next: &Value,
) -> Result<(), ApiError> {
    if !grows(current, next) {
        return Ok(());
    }
    let class = current["spec"]["storageClassName"].as_str().unwrap_or("");
    let bound = current["spec"]["volumeName"]
        .as_str()
        .is_some_and(|v| !v.is_empty());
    if bound && expandable.contains(class) {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "persistentvolumeclaims {:?} is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
        meta::name(current)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};

    #[tokio::test]
    async fn a_claim_naming_no_class_gets_the_newest_default() {
        let f = Fixture::new();
        for (name, created, default) in [
            ("old", "2025-01-01T00:00:00Z", "true"),
            ("new", "2026-01-01T00:00:00Z", "true"),
            ("newest", "2026-06-01T00:00:00Z", "false"),
        ] {
            f.put(
                "storage.k8s.io",
                "storageclasses",
                json!({"metadata": {"name": name, "creationTimestamp": created,
                    "annotations": {DEFAULT_CLASS: default}}, "provisioner": "p"}),
            )
            .await;
        }
        let plugin = DefaultStorageClass(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "persistentvolumeclaims", &alice);
        let mut claim = json!({"metadata": {"name": "c"}, "spec": {}});
        plugin
            .admit(&a, &mut claim, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(claim["spec"]["storageClassName"], "new");
        let mut static_only = json!({"metadata": {"name": "c"}, "spec": {"storageClassName": ""}});
        plugin
            .admit(&a, &mut static_only, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(static_only["spec"]["storageClassName"], "");
    }

    #[test]
    fn claims_grow_only_where_their_class_allows() {
        let claim = |size: &str, volume: &str| {
            json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "local-path", "volumeName": volume,
                "resources": {"requests": {"storage": size}}}})
        };
        let expandable: HashSet<String> = ["local-path".to_owned()].into();
        let none = HashSet::new();
        let bound = claim("1Gi", "pv1");
        assert!(admit_resize(&expandable, &bound, &claim("2Gi", "pv1")).is_ok());
        let refused = admit_resize(&none, &bound, &claim("2Gi", "pv1")).unwrap_err();
        assert_eq!(refused.code, 403);
        assert!(admit_resize(&expandable, &claim("1Gi", ""), &claim("2Gi", "")).is_err());
        assert!(admit_resize(&none, &bound, &bound).is_ok());
        assert!(!grows(&bound, &claim("512Mi", "pv1")));
    }

    #[test]
    fn new_claims_and_volumes_are_protected_once() {
        let r = registry::lookup("", "v1", "persistentvolumeclaims").unwrap();
        let mut claim = json!({"metadata": {"name": "data", "finalizers": ["x"]}});
        protect(r, &mut claim);
        protect(r, &mut claim);
        assert_eq!(
            claim["metadata"]["finalizers"],
            json!(["x", CLAIM_PROTECTION])
        );
        let r = registry::lookup("", "v1", "persistentvolumes").unwrap();
        let mut volume = json!({"metadata": {"name": "pv1"}});
        protect(r, &mut volume);
        assert_eq!(volume["metadata"]["finalizers"], json!([VOLUME_PROTECTION]));
    }
}
