//! Storage admission, as upstream's plugins: DefaultStorageClass gives a
//! new claim that names no class the default one; StorageObjectInUseProtection
//! puts the protection finalizers on claims and volumes (the volume
//! controllers take them off once nothing uses the object);
//! PersistentVolumeClaimResize lets a claim grow only where its class
//! allows expansion.

use std::collections::HashSet;

use serde_json::{json, Value};
use skiff_core::registry::{self, ResourceType};
use skiff_core::volumes::{CLAIM_PROTECTION, DEFAULT_CLASS, VOLUME_PROTECTION};
use skiff_core::{meta, ApiError};

use super::Api;

fn is_claim(r: &ResourceType) -> bool {
    r.group.is_empty() && r.kind == "PersistentVolumeClaim"
}

fn classes() -> &'static ResourceType {
    registry::lookup("storage.k8s.io", "v1", "storageclasses").expect("storage classes are served")
}

impl Api {
    /// A claim without `storageClassName` (not one with `""`, which asks
    /// for static binding) gets the default class, the newest if several
    /// are marked.
    pub(super) async fn default_storage_class(&self, claim: &mut Value) -> Result<(), ApiError> {
        if !claim["spec"]["storageClassName"].is_null() {
            return Ok(());
        }
        let items = self.objects.recent_list(classes(), None).await?;
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

    /// For a write to a claim's spec, the classes that allow expansion;
    /// `None` for every other write (a status write changes no request).
    pub(super) async fn expandable_classes(
        &self,
        r: &ResourceType,
        subresource: Option<&str>,
    ) -> Result<Option<HashSet<String>>, ApiError> {
        if !is_claim(r) || subresource.is_some() {
            return Ok(None);
        }
        let items = self.objects.recent_list(classes(), None).await?;
        Ok(Some(
            items
                .iter()
                .filter(|c| c["allowVolumeExpansion"] == true)
                .map(|c| meta::name(c).to_owned())
                .collect(),
        ))
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

/// A claim asks for more storage only if it is bound and its class
/// allows expansion.
pub fn admit_resize(
    expandable: Option<&HashSet<String>>,
    current: &Value,
    next: &Value,
) -> Result<(), ApiError> {
    let Some(expandable) = expandable else {
        return Ok(());
    };
    let storage = |o: &Value| o["spec"]["resources"]["requests"]["storage"].clone();
    let asked = storage(next)
        .as_str()
        .and_then(skiff_core::quantity::parse_milli);
    let had = storage(current)
        .as_str()
        .and_then(skiff_core::quantity::parse_milli);
    if asked <= had {
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

    #[test]
    fn claims_grow_only_where_their_class_allows() {
        let claim = |size: &str, volume: &str| {
            json!({"metadata": {"name": "data"}, "spec": {"storageClassName": "local-path", "volumeName": volume,
                "resources": {"requests": {"storage": size}}}})
        };
        let expandable: HashSet<String> = ["local-path".to_owned()].into();
        let none = HashSet::new();
        let bound = claim("1Gi", "pv1");
        assert!(admit_resize(Some(&expandable), &bound, &claim("2Gi", "pv1")).is_ok());
        let refused = admit_resize(Some(&none), &bound, &claim("2Gi", "pv1")).unwrap_err();
        assert_eq!(refused.code, 403);
        assert!(admit_resize(Some(&expandable), &claim("1Gi", ""), &claim("2Gi", "")).is_err());
        assert!(admit_resize(Some(&none), &bound, &bound).is_ok());
        assert!(admit_resize(None, &bound, &claim("2Gi", "pv1")).is_ok());
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
