//! VolumeBinding, as upstream's: a pod fits a node only where every claim
//! it uses can be served: a bound claim's volume must allow the node; a
//! claim waiting for its first consumer needs a free volume the node may
//! use or a class that can provision there. Once a node is chosen, the
//! waiting claims are told which (`volume.kubernetes.io/selected-node`),
//! so that the volume controller binds or provisions on it, and the pod
//! is bound only once they are; a claim whose node is taken back (its
//! volume cannot be made there) sends the pod back to be placed again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use skiff_core::volumes::{self as v, LOCAL_PATH, LOCAL_PATH_ROOT, SELECTED_NODE};
use tokio::sync::watch;

use crate::framework::{CycleState, Filter, PreBind, PreFilter, Reserve, Status};
use crate::node_info::NodeInfo;

const NAME: &str = "VolumeBinding";
pub const CONFLICT: &str = "node(s) had volume node affinity conflict";
pub const NO_VOLUME: &str = "node(s) didn't find available persistent volumes to bind";
pub const NO_LOCAL_PATH: &str = "node(s) keep no local-path volumes";

/// How long pre-bind waits for a pod's claims to be bound (upstream's
/// `bindTimeoutSeconds`).
const BIND_TIMEOUT: Duration = Duration::from_secs(600);

/// The claims, volumes and classes the scheduler's watchers keep.
pub struct Volumes {
    inner: RwLock<View>,
    /// Told of every change, for pre-binds waiting on their claims.
    changes: watch::Sender<()>,
}

impl Default for Volumes {
    fn default() -> Self {
        Self {
            inner: RwLock::default(),
            changes: watch::channel(()).0,
        }
    }
}

/// The objects of [`Volumes`].
#[derive(Default)]
pub struct View {
    /// By `namespace/name`.
    pub claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    /// Waiting claims a placed pod reserved a node for, until the claim
    /// shows it (`namespace/name` → node).
    assumed: HashMap<String, String>,
    pub volumes: HashMap<String, Arc<PersistentVolume>>,
    pub classes: HashMap<String, Arc<StorageClass>>,
    /// What each node can attach, by node name.
    pub csi_nodes: HashMap<String, Arc<CSINode>>,
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    match &meta.namespace {
        Some(ns) => format!("{ns}/{}", meta.name.clone().unwrap_or_default()),
        None => meta.name.clone().unwrap_or_default(),
    }
}

impl Volumes {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn put<K: Kept>(&self, obj: K) {
        keep(&mut self.write(), obj);
        self.changes.send_replace(());
    }

    pub fn remove<K: Kept>(&self, obj: &K) {
        K::table(&mut self.write()).remove(&name_of(obj.meta()));
        self.changes.send_replace(());
    }

    /// A relist: the objects of `K` are exactly these.
    pub fn replace<K: Kept>(&self, objs: Vec<K>) {
        {
            let mut view = self.write();
            K::table(&mut view).clear();
            for obj in objs {
                keep(&mut view, obj);
            }
        }
        self.changes.send_replace(());
    }
}

fn keep<K: Kept>(view: &mut View, obj: K) {
    let key = name_of(obj.meta());
    K::seen(view, &key, &obj);
    K::table(view).insert(key, Arc::new(obj));
}

/// A kind [`Volumes`] keeps, by `namespace/name`.
pub trait Kept:
    kube::Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + k8s_openapi::serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    fn table(view: &mut View) -> &mut HashMap<String, Arc<Self>>;

    /// What else a new state of the object tells.
    fn seen(_view: &mut View, _key: &str, _obj: &Self) {}
}

impl Kept for PersistentVolumeClaim {
    fn table(view: &mut View) -> &mut HashMap<String, Arc<Self>> {
        &mut view.claims
    }

    /// A claim showing its node (or bound) needs no assumption any more.
    fn seen(view: &mut View, key: &str, claim: &Self) {
        let bound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        if v::selected_node(claim).is_some() || bound.is_some_and(|n| !n.is_empty()) {
            view.assumed.remove(key);
        }
    }
}

impl Kept for PersistentVolume {
    fn table(view: &mut View) -> &mut HashMap<String, Arc<Self>> {
        &mut view.volumes
    }
}

impl Kept for StorageClass {
    fn table(view: &mut View) -> &mut HashMap<String, Arc<Self>> {
        &mut view.classes
    }
}

impl Kept for CSINode {
    fn table(view: &mut View) -> &mut HashMap<String, Arc<Self>> {
        &mut view.csi_nodes
    }
}

/// What one claim of the pod needs of a node.
enum Need {
    /// Its volume's node affinity must allow the node.
    Bound(Arc<PersistentVolume>),
    /// A free volume the node may use, or a class that provisions there;
    /// only on `node` once one was chosen for the claim.
    Waiting {
        claim: Arc<PersistentVolumeClaim>,
        node: Option<String>,
        free: Vec<Arc<PersistentVolume>>,
        provisioner: Option<String>,
    },
}

/// The pod's needs, or why it fits nowhere.
type Needs = Result<Vec<Need>, String>;

pub struct VolumeBinding {
    pub volumes: Arc<Volumes>,
    pub client: Option<Client>,
}

impl VolumeBinding {
    fn needs(&self, pod: &Pod) -> Needs {
        let view = self.volumes.read();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut needs = Vec::new();
        for c in v::pod_claims(pod) {
            let Some(claim) = view.claims.get(&format!("{ns}/{}", c.name)) else {
                return Err(match c.ephemeral {
                    // Normal for a moment after such a pod is created.
                    true => format!(
                        "waiting for ephemeral volume controller to create the persistentvolumeclaim {:?}",
                        c.name
                    ),
                    false => format!("persistentvolumeclaim {:?} not found", c.name),
                });
            };
            if c.ephemeral && !v::owned_by(claim, pod) {
                return Err(v::not_the_pods(claim, pod));
            }
            if claim.metadata.deletion_timestamp.is_some() {
                return Err(format!(
                    "persistentvolumeclaim {:?} is being deleted",
                    c.name
                ));
            }
            let bound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
            if let Some(name) = bound.filter(|n| !n.is_empty()) {
                match view.volumes.get(name) {
                    Some(pv) => needs.push(Need::Bound(pv.clone())),
                    None => return Err(format!("persistentvolume {name:?} not found")),
                }
                continue;
            }
            let class = view.classes.get(v::claim_class(claim));
            let waits = class.and_then(|c| c.volume_binding_mode.as_deref())
                == Some("WaitForFirstConsumer");
            if !waits {
                return Err("pod has unbound immediate PersistentVolumeClaims".into());
            }
            let free = view
                .volumes
                .values()
                .filter(|pv| v::mismatch(claim, pv).is_none())
                .cloned()
                .collect();
            let key = format!("{ns}/{}", c.name);
            let node = v::selected_node(claim)
                .map(str::to_owned)
                .or_else(|| view.assumed.get(&key).cloned());
            needs.push(Need::Waiting {
                claim: claim.clone(),
                node,
                free,
                provisioner: class.map(|c| c.provisioner.clone()),
            });
        }
        Ok(needs)
    }
}

fn keeps_local_path(node: &Node) -> bool {
    let annotations = node.metadata.annotations.as_ref();
    annotations.is_some_and(|a| a.contains_key(LOCAL_PATH_ROOT))
}

impl PreFilter for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, _: &[NodeInfo]) {
        if v::pod_claims(pod).next().is_some() {
            state.put(NAME, self.needs(pod));
        }
    }
}

impl Filter for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(needs) = state.get::<Needs>(NAME) else {
            return Status::Success;
        };
        let needs = match needs {
            Ok(n) => n,
            Err(why) => return Status::unresolvable(why.clone()),
        };
        for need in needs {
            match need {
                Need::Bound(pv) if !v::node_allows(pv, &node.node) => {
                    return Status::unresolvable(CONFLICT)
                }
                Need::Bound(_) => {}
                Need::Waiting {
                    free,
                    provisioner,
                    node: chosen,
                    ..
                } => {
                    if chosen.as_deref().is_some_and(|n| n != node.name()) {
                        return Status::unresolvable(CONFLICT);
                    }
                    if free.iter().any(|pv| v::node_allows(pv, &node.node)) {
                        continue;
                    }
                    match provisioner.as_deref() {
                        Some(LOCAL_PATH) if !keeps_local_path(&node.node) => {
                            return Status::unresolvable(NO_LOCAL_PATH)
                        }
                        Some(_) => {}
                        None => return Status::unresolvable(NO_VOLUME),
                    }
                }
            }
        }
        Status::Success
    }
}

/// The keys of the waiting claims a pod's placement decides.
fn deciding(state: &CycleState) -> Vec<String> {
    let Some(Ok(needs)) = state.get::<Needs>(NAME) else {
        return Vec::new();
    };
    needs
        .iter()
        .filter_map(|need| match need {
            Need::Waiting {
                claim, node: None, ..
            } => Some(name_of(&claim.metadata)),
            _ => None,
        })
        .collect()
}

/// Until the claims show the chosen node, the next pods that use them are
/// held to it, so that two pods sharing a claim never go apart.
impl Reserve for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    fn reserve(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let mut view = self.volumes.write();
        for key in deciding(state) {
            view.assumed.insert(key, node.name().to_owned());
        }
        Status::Success
    }

    fn unreserve(&self, state: &CycleState, _: &Pod, node: &str) {
        let mut view = self.volumes.write();
        for key in deciding(state) {
            if view.assumed.get(&key).is_some_and(|n| n == node) {
                view.assumed.remove(&key);
            }
        }
    }
}

#[async_trait::async_trait]
impl PreBind for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Names the chosen node on each claim that waits for it, then waits
    /// until they are bound.
    async fn pre_bind(&self, state: &CycleState, _: &Pod, node: &str) -> Status {
        let Some(Ok(needs)) = state.get::<Needs>(NAME) else {
            return Status::Success;
        };
        let waiting: Vec<&PersistentVolumeClaim> = needs
            .iter()
            .filter_map(|need| match need {
                Need::Waiting { claim, .. } => Some(claim.as_ref()),
                Need::Bound(_) => None,
            })
            .collect();
        if let Some(client) = &self.client {
            let named = name_node(client, &waiting, node).await;
            if !named.is_success() {
                return named;
            }
        }
        let keys: Vec<String> = waiting.iter().map(|c| name_of(&c.metadata)).collect();
        self.wait_bound(&keys, node).await
    }
}

impl VolumeBinding {
    /// Waits until every claim of `keys` is bound; fails when one is
    /// gone, given another node, or has its node taken back (its volume
    /// cannot be made there), or after [`BIND_TIMEOUT`].
    async fn wait_bound(&self, keys: &[String], node: &str) -> Status {
        if keys.is_empty() {
            return Status::Success;
        }
        let deadline = tokio::time::Instant::now() + BIND_TIMEOUT;
        let mut changes = self.volumes.changes.subscribe();
        let mut named = HashSet::new();
        loop {
            {
                let view = self.volumes.read();
                let mut unbound = 0;
                for key in keys {
                    let Some(claim) = view.claims.get(key) else {
                        return Status::Error(format!("persistentvolumeclaim {key} is gone"));
                    };
                    let bound = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
                    if bound.is_some_and(|b| !b.is_empty()) {
                        continue;
                    }
                    unbound += 1;
                    match v::selected_node(claim) {
                        Some(n) if n == node => {
                            named.insert(key);
                        }
                        Some(other) => {
                            return Status::Error(format!(
                                "persistentvolumeclaim {key} was given node {other}"
                            ))
                        }
                        None if named.contains(key) => {
                            return Status::Error(format!(
                                "the volume of persistentvolumeclaim {key} cannot be made on node {node}"
                            ))
                        }
                        None => {}
                    }
                }
                if unbound == 0 {
                    return Status::Success;
                }
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Status::Error(format!(
                        "timed out waiting for the pod's claims to be bound on node {node}"
                    ))
                }
            }
        }
    }
}

/// Writes `node` on each claim that does not name it yet.
async fn name_node(client: &Client, claims: &[&PersistentVolumeClaim], node: &str) -> Status {
    for claim in claims {
        if v::selected_node(claim) == Some(node) {
            continue;
        }
        let ns = claim.metadata.namespace.clone().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"metadata": {"annotations": {SELECTED_NODE: node}}});
        let name = claim.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return Status::Error(format!("naming node {node} on claim {ns}/{name}: {e}"));
        }
    }
    Status::Success
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    fn claim(name: &str, class: &str, volume: Option<&str>) -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}}}}))
        .unwrap()
    }

    fn pinned(name: &str, node: &str, class: &str) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": class,
                "local": {"path": "/x"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}}}))
        .unwrap()
    }

    fn class(name: &str, provisioner: &str, mode: &str) -> StorageClass {
        serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode})).unwrap()
    }

    fn decide(plugin: &VolumeBinding, claim: &str, nodes: &[NodeInfo]) -> Vec<Status> {
        let p =
            pod(json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]}));
        let mut state = CycleState::default();
        plugin.pre_filter(&mut state, &p, nodes);
        nodes.iter().map(|n| plugin.filter(&state, &p, n)).collect()
    }

    #[test]
    fn table() {
        let volumes = Arc::new(Volumes::default());
        let plugin = VolumeBinding {
            volumes: volumes.clone(),
            client: None,
        };
        let local = |name: &str, root: bool| {
            let mut n = node(
                name,
                json!({"kubernetes.io/hostname": name}),
                json!({}),
                json!({}),
            );
            if root {
                n.node.metadata.annotations =
                    Some([(LOCAL_PATH_ROOT.to_owned(), "/v".to_owned())].into());
            }
            n
        };
        let nodes = [local("a", true), local("b", true), local("c", false)];
        volumes.put(class("local-path", LOCAL_PATH, "WaitForFirstConsumer"));
        volumes.put(class("later", "example.com/disk", "WaitForFirstConsumer"));
        volumes.put(class("now", "example.com/disk", "Immediate"));
        volumes.put(pinned("on-b", "b", "later"));
        volumes.put(pinned("bound-a", "a", "local-path"));
        volumes.put(claim("bound", "local-path", Some("bound-a")));
        volumes.put(claim("waiting", "local-path", None));
        volumes.put(claim("static", "", None));
        volumes.put(claim("immediate", "now", None));
        let ok = Status::Success;
        let conflict = Status::unresolvable(CONFLICT);
        assert_eq!(
            decide(&plugin, "bound", &nodes),
            [ok.clone(), conflict.clone(), conflict]
        );
        let no_root = Status::unresolvable(NO_LOCAL_PATH);
        assert_eq!(
            decide(&plugin, "waiting", &nodes),
            [ok.clone(), ok.clone(), no_root]
        );
        let missing = Status::unresolvable("persistentvolumeclaim \"nope\" not found");
        assert_eq!(decide(&plugin, "nope", &nodes[..1]), [missing]);
        let immediate = Status::unresolvable("pod has unbound immediate PersistentVolumeClaims");
        assert_eq!(decide(&plugin, "immediate", &nodes[..1]), [immediate]);
        assert_eq!(
            decide(&plugin, "static", &nodes[..1]),
            [Status::unresolvable(
                "pod has unbound immediate PersistentVolumeClaims"
            )]
        );

        // A waiting claim, once a pod using it is placed, holds the next
        // pods to that node: reserved first, then named on the claim.
        let both = &nodes[..2];
        let p = pod(
            json!({"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": "waiting"}}]}),
        );
        let mut state = CycleState::default();
        plugin.pre_filter(&mut state, &p, both);
        assert!(plugin.reserve(&state, &p, &both[1]).is_success());
        let conflict = Status::unresolvable(CONFLICT);
        assert_eq!(
            decide(&plugin, "waiting", both),
            [conflict.clone(), ok.clone()]
        );
        plugin.unreserve(&state, &p, "b");
        assert_eq!(decide(&plugin, "waiting", both), [ok.clone(), ok.clone()]);
        let mut chosen = claim("waiting", "local-path", None);
        chosen.metadata.annotations = Some([(SELECTED_NODE.to_owned(), "a".to_owned())].into());
        volumes.put(chosen);
        assert_eq!(decide(&plugin, "waiting", both), [ok, conflict]);
    }

    #[test]
    fn an_ephemeral_volume_waits_for_the_claim_made_for_its_pod() {
        let volumes = Arc::new(Volumes::default());
        let plugin = VolumeBinding {
            volumes: volumes.clone(),
            client: None,
        };
        let mut a = node("a", json!({}), json!({}), json!({}));
        a.node.metadata.annotations = Some([(LOCAL_PATH_ROOT.to_owned(), "/v".to_owned())].into());
        let nodes = [a];
        volumes.put(class("local-path", LOCAL_PATH, "WaitForFirstConsumer"));
        let mut p = pod(
            json!({"volumes": [{"name": "v", "ephemeral": {"volumeClaimTemplate": {
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]}),
        );
        p.metadata.uid = Some("pod-uid".into());
        let decide = |p: &Pod| {
            let mut state = CycleState::default();
            plugin.pre_filter(&mut state, p, &nodes);
            plugin.filter(&state, p, &nodes[0])
        };
        assert_eq!(
            decide(&p),
            Status::unresolvable(
                "waiting for ephemeral volume controller to create the persistentvolumeclaim \"p-v\""
            )
        );
        // A claim of that name the pod does not own is not its volume.
        volumes.put(claim("p-v", "local-path", None));
        assert_eq!(
            decide(&p),
            Status::unresolvable(
                "PVC default/p-v was not created for pod default/p (pod is not owner)"
            )
        );
        let mut made = claim("p-v", "local-path", None);
        made.metadata.owner_references = serde_json::from_value(json!([{"apiVersion": "v1",
            "kind": "Pod", "name": "p", "uid": "pod-uid", "controller": true}]))
        .unwrap();
        volumes.put(made);
        assert!(decide(&p).is_success());
    }

    /// Pre-bind lets the pod be bound once its claims are, and sends it
    /// back when a claim's node is taken back or given to another.
    #[tokio::test]
    async fn pre_bind_waits_for_the_claims_to_be_bound() {
        let volumes = Arc::new(Volumes::default());
        let plugin = Arc::new(VolumeBinding {
            volumes: volumes.clone(),
            client: None,
        });
        let named = |node: Option<&str>, volume: Option<&str>| {
            let mut c = claim("data", "local-path", volume);
            c.metadata.annotations =
                node.map(|n| [(SELECTED_NODE.to_owned(), n.to_owned())].into());
            c
        };
        let keys = vec!["default/data".to_owned()];
        let wait = |plugin: &Arc<VolumeBinding>| {
            let (plugin, keys) = (plugin.clone(), keys.clone());
            tokio::spawn(async move { plugin.wait_bound(&keys, "a").await })
        };

        volumes.put(named(None, None));
        let waiting = wait(&plugin);
        tokio::task::yield_now().await;
        volumes.put(named(Some("a"), None));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "named, not bound yet");
        volumes.put(named(Some("a"), Some("pvc-1")));
        assert_eq!(waiting.await.unwrap(), Status::Success);

        volumes.put(named(None, None));
        let waiting = wait(&plugin);
        volumes.put(named(Some("a"), None));
        tokio::task::yield_now().await;
        volumes.put(named(None, None));
        let taken_back = waiting.await.unwrap();
        assert!(
            matches!(&taken_back, Status::Error(m) if m.contains("cannot be made on node a")),
            "{taken_back:?}"
        );

        volumes.put(named(Some("b"), None));
        let elsewhere = wait(&plugin).await.unwrap();
        assert!(
            matches!(&elsewhere, Status::Error(m) if m.contains("was given node b")),
            "{elsewhere:?}"
        );
    }
}
