//! The built-in `skiff.io/local-path` provisioner and resizer: a volume
//! is a directory under the node agent's local-path root, on the node the
//! scheduler chose for the claim's first pod (or, for an `Immediate`
//! class, the first ready node); the agent makes and removes the
//! directory. Growing one only records the new size: a directory has no
//! size of its own.

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use serde_json::json;
use skiff_core::volumes::{
    self as v, BETA_STORAGE_PROVISIONER, HOSTNAME, LOCAL_PATH, LOCAL_PATH_ROOT, PROVISIONED_BY,
    SELECTED_NODE, STORAGE_PROVISIONER,
};

use super::Shared;
use skiff_runtime::api::{self, Error};

/// The name of the volume provisioned for a claim, as upstream's.
pub fn volume_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.uid().unwrap_or_default())
}

/// The local-path root a node's agent published.
fn root(node: &Node) -> Option<&str> {
    let annotations = node.metadata.annotations.as_ref()?;
    annotations.get(LOCAL_PATH_ROOT).map(String::as_str)
}

/// Says why the volume cannot be made; a node the scheduler chose is
/// taken back off the claim, as upstream's provisioners do, so that the
/// waiting pod is placed again. False: no volume yet.
async fn give_back(
    s: &Shared,
    claim: &PersistentVolumeClaim,
    selected: Option<&str>,
    why: &str,
) -> Result<bool, Error> {
    s.tell(claim, true, "ProvisioningFailed", why);
    if selected.is_some() {
        s.patch(
            claim,
            json!({"metadata": {"annotations": {SELECTED_NODE: null}}}),
            false,
        )
        .await?;
    }
    Ok(false)
}

/// Makes the claim's volume; false when there is no node to put it on
/// yet. Whatever the class asks that a directory cannot be is refused
/// with an event, never ignored.
pub async fn local_path(
    s: &Shared,
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    selected: Option<&str>,
) -> Result<bool, Error> {
    let refuse = |why: String| {
        s.tell(claim, true, "ProvisioningFailed", &why);
        Ok(true)
    };
    let spec = claim.spec.clone().unwrap_or_default();
    if spec.volume_mode.as_deref() == Some("Block") {
        return refuse(format!(
            "{LOCAL_PATH} makes directories: volumeMode Block is not supported"
        ));
    }
    if let Some(p) = class.parameters.as_ref().filter(|p| !p.is_empty()) {
        let names: Vec<&String> = p.keys().collect();
        return refuse(format!("{LOCAL_PATH} takes no parameters: {names:?}"));
    }
    if class.mount_options.as_ref().is_some_and(|o| !o.is_empty()) {
        return refuse(format!("{LOCAL_PATH} volumes take no mount options"));
    }
    // A claim asking for attributes waits for a volume made for it.
    let attributes = spec.volume_attributes_class_name.as_deref();
    if let Some(c) = attributes.filter(|c| !c.is_empty()) {
        return refuse(format!(
            "{LOCAL_PATH} cannot apply volume attributes class {c:?}"
        ));
    }
    if spec.data_source.is_some() || spec.data_source_ref.is_some() {
        return refuse(format!(
            "{LOCAL_PATH} cannot fill a volume from a data source"
        ));
    }
    let node = match selected {
        Some(name) => s.nodes.get(name),
        None => {
            let mut nodes: Vec<_> = s
                .nodes
                .list()
                .into_iter()
                .filter(|n| crate::node_lifecycle::is_ready(n) && root(n).is_some())
                .collect();
            nodes.sort_by_key(|n| n.name_any());
            nodes.into_iter().next()
        }
    };
    let Some(node) = node else {
        let why = match selected {
            Some(name) => format!("node {name:?} not found"),
            None => "no ready node keeps local-path volumes".to_owned(),
        };
        return give_back(s, claim, selected, &why).await;
    };
    let Some(root) = root(&node) else {
        let why = format!(
            "node {:?} keeps no local-path volumes: its agent published no {LOCAL_PATH_ROOT}",
            node.name_any()
        );
        return give_back(s, claim, selected, &why).await;
    };
    let name = volume_name(claim);
    if s.volumes.get(&name).is_some() {
        return Ok(true);
    }
    let annotations = claim.annotations();
    if annotations.get(STORAGE_PROVISIONER).map(String::as_str) != Some(LOCAL_PATH) {
        s.patch(
            claim,
            json!({"metadata": {"annotations": {STORAGE_PROVISIONER: LOCAL_PATH, BETA_STORAGE_PROVISIONER: LOCAL_PATH}}}),
            false,
        )
        .await?;
    }
    let hostname = node
        .labels()
        .get(HOSTNAME)
        .cloned()
        .unwrap_or_else(|| node.name_any());
    let storage = v::request(claim);
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": name, "annotations": {PROVISIONED_BY: LOCAL_PATH}},
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.as_deref().unwrap_or("Delete"),
            "storageClassName": class.name_any(),
            "volumeMode": "Filesystem",
            "local": {"path": format!("{}/{name}", root.trim_end_matches('/'))},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME, "operator": "In", "values": [hostname]}]}]}},
            "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": claim.namespace(), "name": claim.name_any(), "uid": claim.uid(),
                "resourceVersion": claim.resource_version()},
        },
    });
    match api::create::<PersistentVolume>(&*s.cluster, &pv).await {
        Ok(_) => {}
        Err(e) if e.is_conflict() => return Ok(true),
        Err(e) => {
            s.tell(claim, true, "ProvisioningFailed", &e.to_string());
            return Err(e);
        }
    }
    s.tell(
        claim,
        false,
        "ProvisioningSucceeded",
        &format!("Successfully provisioned volume {name}"),
    );
    Ok(true)
}

/// Grows a bound local-path volume to what its claim asks (the API
/// refused the request unless the class allows expansion).
pub async fn expand(
    s: &Shared,
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
) -> Result<(), Error> {
    let asked = v::requested(claim);
    if asked <= v::capacity(pv) {
        return Ok(());
    }
    if !v::is_local_path(pv) {
        s.tell(
            claim,
            false,
            "ExternalExpanding",
            "waiting for an external controller to expand this PVC",
        );
        return Ok(());
    }
    let storage = v::request(claim);
    s.patch(
        pv,
        json!({"spec": {"capacity": {"storage": storage}}}),
        false,
    )
    .await?;
    s.patch(
        claim,
        json!({"status": {"capacity": {"storage": storage}}}),
        true,
    )
    .await?;
    s.tell(
        claim,
        false,
        "VolumeResizeSuccessful",
        &format!(
            "resize volume {:?} by resizer {LOCAL_PATH:?} succeeded",
            pv.name_any()
        ),
    );
    Ok(())
}
