//! What the API server, the volume controllers, the scheduler and the
//! agent agree on about persistent storage: the annotations and finalizers
//! they hand each other, and when a volume can serve a claim.

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Volume};
use k8s_openapi::api::storage::v1::StorageClass;

use crate::placement::term_matches;
use crate::quantity::parse_milli;
use crate::selector::LabelSelector;

/// The built-in provisioner: a directory per volume on the node that
/// first uses it.
pub const LOCAL_PATH: &str = "skiff.io/local-path";
/// The class made at bootstrap, provisioned by [`LOCAL_PATH`].
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// A Node annotation: where its agent keeps local-path volumes.
pub const LOCAL_PATH_ROOT: &str = "skiff.io/local-path-root";
/// Holds a local-path volume until its node removed the directory.
pub const LOCAL_PATH_CLEANUP: &str = "skiff.io/local-path-cleanup";

pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
pub const CLAIM_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const VOLUME_PROTECTION: &str = "kubernetes.io/pv-protection";
pub const HOSTNAME: &str = "kubernetes.io/hostname";

/// The claim a pod's volume stands for: the one it names, or for a
/// generic ephemeral volume the one the ephemeral volume controller makes
/// for the pod, `<pod>-<volume>` (upstream's `VolumeClaimName`).
pub fn pod_claim(pod: &Pod, v: &Volume) -> Option<PodClaim> {
    if let Some(c) = &v.persistent_volume_claim {
        return Some(PodClaim {
            name: c.claim_name.clone(),
            ephemeral: false,
        });
    }
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    v.ephemeral.as_ref().map(|_| PodClaim {
        name: format!("{pod_name}-{}", v.name),
        ephemeral: true,
    })
}

/// A claim a pod's volume uses (see [`pod_claim`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PodClaim {
    pub name: String,
    /// Made for the pod, which must own it: a claim of that name made
    /// otherwise is not the pod's.
    pub ephemeral: bool,
}

/// The claims `pod`'s volumes use.
pub fn pod_claims(pod: &Pod) -> impl Iterator<Item = PodClaim> + '_ {
    let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes.filter_map(move |v| pod_claim(pod, v))
}

/// Whether `claim` was made for `pod` (it is the pod's controller).
pub fn owned_by(claim: &PersistentVolumeClaim, pod: &Pod) -> bool {
    let owners = claim.metadata.owner_references.iter().flatten();
    let mut controllers = owners.filter(|o| o.controller == Some(true));
    controllers.any(|o| Some(&o.uid) == pod.metadata.uid.as_ref())
}

/// Upstream's words for an ephemeral volume's claim `pod` does not own.
pub fn not_the_pods(claim: &PersistentVolumeClaim, pod: &Pod) -> String {
    let (c, p) = (&claim.metadata, &pod.metadata);
    format!(
        "PVC {}/{} was not created for pod {}/{} (pod is not owner)",
        c.namespace.as_deref().unwrap_or_default(),
        c.name.as_deref().unwrap_or_default(),
        p.namespace.as_deref().unwrap_or_default(),
        p.name.as_deref().unwrap_or_default()
    )
}

/// The storage a claim asks for, as written (`1Gi`).
pub fn request(claim: &PersistentVolumeClaim) -> Option<&str> {
    let resources = claim.spec.as_ref()?.resources.as_ref()?;
    Some(resources.requests.as_ref()?.get("storage")?.0.as_str())
}

/// The storage a claim asks for, in thousandths of a byte.
pub fn requested(claim: &PersistentVolumeClaim) -> i128 {
    request(claim).and_then(parse_milli).unwrap_or(0)
}

/// The storage a volume has, in thousandths of a byte.
pub fn capacity(pv: &PersistentVolume) -> i128 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_milli(&q.0))
        .unwrap_or(0)
}

pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    let spec = claim.spec.as_ref();
    spec.and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn volume_class(pv: &PersistentVolume) -> &str {
    let spec = pv.spec.as_ref();
    spec.and_then(|s| s.storage_class_name.as_deref())
        .unwrap_or("")
}

pub fn is_default(class: &StorageClass) -> bool {
    let annotations = class.metadata.annotations.as_ref();
    annotations
        .and_then(|a| a.get(DEFAULT_CLASS))
        .map(String::as_str)
        == Some("true")
}

fn annotation<'a>(
    meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The node a claim waits to be provisioned or bound on, once the
/// scheduler chose one.
pub fn selected_node(claim: &PersistentVolumeClaim) -> Option<&str> {
    annotation(&claim.metadata, SELECTED_NODE)
}

/// Whether the volume was made by the built-in provisioner.
pub fn is_local_path(pv: &PersistentVolume) -> bool {
    annotation(&pv.metadata, PROVISIONED_BY) == Some(LOCAL_PATH)
}

/// Whether the volume's node affinity lets `node` use it (no affinity
/// lets every node).
pub fn node_allows(pv: &PersistentVolume, node: &Node) -> bool {
    let required = pv
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref());
    required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(node, t)))
}

/// The one node a volume's affinity names (`kubernetes.io/hostname In
/// [node]`, as provisioned local volumes have).
pub fn pinned_node(pv: &PersistentVolume) -> Option<&str> {
    let required = pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?;
    let [term] = required.node_selector_terms.as_slice() else {
        return None;
    };
    let [r] = term.match_expressions.as_deref()? else {
        return None;
    };
    let single = r.key == HOSTNAME && r.operator == "In";
    match r.values.as_deref() {
        Some([node]) if single => Some(node),
        _ => None,
    }
}

/// Why `pv` cannot serve `claim`, or `None` when it can: the same class,
/// volume attributes class and volume mode, every access mode asked for,
/// enough storage, the claim's selector, and no other claim named in its
/// `claimRef`.
pub fn mismatch(claim: &PersistentVolumeClaim, pv: &PersistentVolume) -> Option<&'static str> {
    let (Some(cs), Some(vs)) = (claim.spec.as_ref(), pv.spec.as_ref()) else {
        return Some("no spec");
    };
    if pv.metadata.deletion_timestamp.is_some() {
        return Some("being deleted");
    }
    if let Some(r) = &vs.claim_ref {
        let same = r.namespace == claim.metadata.namespace && r.name == claim.metadata.name;
        let uid_ok = r
            .uid
            .as_deref()
            .is_none_or(|u| u.is_empty() || Some(u) == claim.metadata.uid.as_deref());
        if !same || !uid_ok {
            return Some("bound to another claim");
        }
    }
    let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Released" | "Failed")) {
        return Some("released");
    }
    if claim_class(claim) != volume_class(pv) {
        return Some("another storage class");
    }
    let attributes = |c: &Option<String>| c.clone().unwrap_or_default();
    if attributes(&cs.volume_attributes_class_name) != attributes(&vs.volume_attributes_class_name)
    {
        return Some("another volume attributes class");
    }
    let mode = |m: Option<&str>| m.unwrap_or("Filesystem").to_owned();
    if mode(cs.volume_mode.as_deref()) != mode(vs.volume_mode.as_deref()) {
        return Some("another volume mode");
    }
    let offered = vs.access_modes.as_deref().unwrap_or_default();
    if !cs
        .access_modes
        .iter()
        .flatten()
        .all(|m| offered.contains(m))
    {
        return Some("other access modes");
    }
    if capacity(pv) < requested(claim) {
        return Some("too small");
    }
    if let Some(sel) = &cs.selector {
        let selector = serde_json::to_value(sel)
            .ok()
            .and_then(|v| LabelSelector::from_object(&v).ok());
        let labels = pv.metadata.labels.clone().unwrap_or_default();
        let matched = selector.is_some_and(|s| s.matches(|k| labels.get(k).map(String::as_str)));
        if !matched {
            return Some("labels not selected");
        }
    }
    None
}

/// The volume that best serves `claim` among `volumes`: one already
/// reserved for it, else the smallest that fits; only volumes `node`
/// may use when the claim waits on a node.
pub fn best_match<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let fits = volumes
        .into_iter()
        .filter(|pv| mismatch(claim, pv).is_none())
        .filter(|pv| node.is_none_or(|n| node_allows(pv, n)));
    let reserved = |pv: &PersistentVolume| {
        pv.spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some()
    };
    fits.min_by_key(|pv| (!reserved(pv), capacity(pv), pv.metadata.name.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "data", "namespace": "d", "uid": "c1"}, "spec": spec}),
        )
        .unwrap()
    }

    fn volume(name: &str, spec: serde_json::Value, labels: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "spec": spec}))
            .unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {HOSTNAME: name}}}))
            .unwrap()
    }

    #[test]
    fn the_smallest_fitting_volume_serves_a_claim() {
        let c = claim(
            json!({"accessModes": ["ReadWriteOnce"], "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}}}),
        );
        let pv = |name: &str, size: &str, modes: serde_json::Value| {
            volume(
                name,
                json!({"capacity": {"storage": size}, "accessModes": modes, "hostPath": {"path": "/x"}}),
                json!({}),
            )
        };
        let small = pv("small", "512Mi", json!(["ReadWriteOnce"]));
        let big = pv("big", "10Gi", json!(["ReadWriteOnce"]));
        let exact = pv("exact", "1Gi", json!(["ReadWriteOnce", "ReadOnlyMany"]));
        let read_only = pv("ro", "1Gi", json!(["ReadOnlyMany"]));
        assert_eq!(mismatch(&c, &small), Some("too small"));
        assert_eq!(mismatch(&c, &read_only), Some("other access modes"));
        // A claim of a volume attributes class takes volumes of it only.
        let mut gold = c.clone();
        gold.spec.as_mut().unwrap().volume_attributes_class_name = Some("gold".into());
        assert_eq!(
            mismatch(&gold, &exact),
            Some("another volume attributes class")
        );
        let mut golden = exact.clone();
        golden.spec.as_mut().unwrap().volume_attributes_class_name = Some("gold".into());
        assert_eq!(mismatch(&gold, &golden), None);
        assert_eq!(
            mismatch(&c, &golden),
            Some("another volume attributes class")
        );
        let all = [small.clone(), big.clone(), exact.clone(), read_only];
        assert_eq!(
            best_match(&c, &all, None).unwrap().metadata.name.as_deref(),
            Some("exact")
        );
        assert_eq!(
            best_match(&c, [&small, &big], None)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("big")
        );

        let mut other_class = exact.clone();
        other_class.spec.as_mut().unwrap().storage_class_name = Some("fast".into());
        assert_eq!(mismatch(&c, &other_class), Some("another storage class"));
        let mut taken = exact.clone();
        taken.spec.as_mut().unwrap().claim_ref =
            serde_json::from_value(json!({"namespace": "d", "name": "other"})).unwrap();
        assert_eq!(mismatch(&c, &taken), Some("bound to another claim"));
        let mut reserved = big.clone();
        reserved.spec.as_mut().unwrap().claim_ref =
            serde_json::from_value(json!({"namespace": "d", "name": "data"})).unwrap();
        assert_eq!(
            best_match(&c, [&exact, &reserved], None)
                .unwrap()
                .metadata
                .name
                .as_deref(),
            Some("big")
        );
    }

    #[test]
    fn selectors_and_node_affinity() {
        let c = claim(
            json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
            "selector": {"matchLabels": {"tier": "db"}}}),
        );
        let spec = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/x"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME, "operator": "In", "values": ["n1"]}]}]}}});
        let db = volume("db", spec.clone(), json!({"tier": "db"}));
        let web = volume("web", spec, json!({"tier": "web"}));
        assert_eq!(mismatch(&c, &web), Some("labels not selected"));
        assert!(mismatch(&c, &db).is_none());
        assert_eq!(pinned_node(&db), Some("n1"));
        assert!(node_allows(&db, &node("n1")));
        assert!(!node_allows(&db, &node("n2")));
        assert!(best_match(&c, [&db], Some(&node("n2"))).is_none());
    }
}
