//! Simulated nodes: one process registers many nodes, keeps their Leases
//! and Ready condition fresh, and runs the pods bound to them with the real
//! pod worker on a fake runtime per node (addresses from the node's range).
//! No containers run.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{json, Value};
use skiff_runtime::lean::ForAdmission;
use skiff_runtime::watch::Change;

use crate::pods::{Dispatcher, Worker};
use crate::runtime::fake::FakeRuntime;

/// How many API calls the agent makes at once.
const CONCURRENCY: usize = 16;
/// How many pods of all simulated nodes sync at once.
const PARALLEL_SYNCS: usize = 64;
/// The label every simulated node carries.
const SIMULATED: &str = "node.skiff.dev/simulated";
/// How often what belongs to no pod is removed from the fake runtimes.
const HOUSEKEEPING: Duration = Duration::from_secs(10);

/// What the simulated nodes look like.
#[derive(Clone, Debug)]
pub struct Config {
    pub count: usize,
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    /// Extra labels on every node.
    pub labels: Vec<(String, String)>,
    /// Taints on every node: `(key, value, effect)`.
    pub taints: Vec<(String, String, String)>,
    /// Nodes are spread over this many `topology.kubernetes.io/zone`s.
    pub zones: usize,
    /// How often Leases are renewed; the kubelet's default is 10 s.
    pub heartbeat: Duration,
}

impl Config {
    fn name(&self, i: usize) -> String {
        format!("{}-{i:05}", self.prefix)
    }

    /// A synthetic /24 per node for pod IPs, from a hash of the node's
    /// name so that separate agents rarely collide (node IPAM proper
    /// belongs to the controller manager).
    fn pod_subnet(&self, i: usize) -> (u8, u8) {
        let h = self.name(i).bytes().fold(0x811c_9dc5u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        (64 + (h >> 8 & 0x3f) as u8, (h & 0xff) as u8)
    }

    fn node(&self, i: usize) -> Value {
        let name = self.name(i);
        let mut labels = json!({
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            SIMULATED: "true",
        });
        if self.zones > 0 {
            labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", i % self.zones));
        }
        for (k, v) in &self.labels {
            labels[k] = json!(v);
        }
        let taints: Vec<Value> = self
            .taints
            .iter()
            .map(|(k, v, e)| json!({"key": k, "value": v, "effect": e}))
            .collect();
        let (a, b) = self.pod_subnet(i);
        let resources = json!({"cpu": self.cpu, "memory": self.memory, "pods": self.pods, "ephemeral-storage": "100Gi"});
        json!({
            "apiVersion": "v1", "kind": "Node",
            // Claims provisioned here are never mounted: a simulated pod
            // has no files.
            "metadata": {"name": name, "labels": labels,
                "annotations": {skiff_core::volumes::LOCAL_PATH_ROOT: "/simulated/local-path"}},
            "spec": {"podCIDR": format!("10.{a}.{b}.0/24"), "taints": taints},
            "status": status(&resources, i),
        })
    }
}

fn status(resources: &Value, i: usize) -> Value {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |t: &str, s: &str, reason: &str, message: &str| json!({"type": t, "status": s, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now});
    json!({
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "simulated"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "simulated"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "simulated"),
            condition("Ready", "True", "KubeletReady", "simulated node is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": node_ip(i)}, {"type": "Hostname", "address": format!("node-{i}")}],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "simulated", "osImage": "Skiff simulated node",
            "containerRuntimeVersion": "simulated://1", "kubeletVersion": "v1.35.0-skiff", "kubeProxyVersion": "",
            "operatingSystem": "linux", "architecture": "amd64",
        },
    })
}

/// Registers the nodes and keeps them alive until the task is dropped.
pub async fn run(client: Client, config: Config) -> Result<(), kube::Error> {
    let names: Vec<String> = (0..config.count).map(|i| config.name(i)).collect();
    let registered = stream::iter(0..config.count)
        .map(|i| {
            let (client, node) = (&client, config.node(i));
            async move {
                let node = crate::node::register(client, node).await?;
                let uid = node.metadata.uid.clone().unwrap_or_default();
                Ok::<_, kube::Error>((uid, crate::admission::what_it_reads(node)))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    // Admission reads each node as registered, then as the watch of the
    // simulated nodes shows it.
    let registered: Vec<(String, Node)> = registered.into_iter().collect::<Result<_, _>>()?;
    let owners: Vec<(String, String)> = registered
        .iter()
        .map(|(uid, n)| (n.name_any(), uid.clone()))
        .collect();
    let registered: HashMap<String, Node> = registered
        .into_iter()
        .map(|(_, n)| (n.name_any(), n))
        .collect();
    tracing::info!(count = config.count, "simulated nodes registered");
    let index: Arc<HashMap<String, usize>> = Arc::new(
        names
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, n)| (n, i))
            .collect(),
    );
    let leases = tokio::spawn(renew_leases(client.clone(), owners, config.heartbeat));
    let pods = run_pods(client, config, index, registered).await;
    leases.abort();
    pods
}

/// Keeps one Lease per node (by name and uid) in `kube-node-lease`
/// renewed.
async fn renew_leases(client: Client, nodes: Vec<(String, String)>, every: Duration) {
    let mut keepers: Vec<_> = nodes
        .iter()
        .map(|(name, uid)| crate::node::LeaseKeeper::new(&client, name, uid))
        .collect();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        stream::iter(keepers.iter_mut())
            .for_each_concurrent(CONCURRENCY, |keeper| async move {
                if let Err(e) = keeper.renew().await {
                    tracing::warn!(error = %e, "lease renewal failed");
                }
            })
            .await;
    }
}

/// The pods of all simulated nodes, from one watch, each handed to the
/// real pod worker of its node, which runs it on that node's fake
/// runtime: pods start at once, pods that run to completion (restartPolicy
/// Never or OnFailure) succeed at once, and deleted pods go.
async fn run_pods(
    client: Client,
    config: Config,
    index: Arc<HashMap<String, usize>>,
    mut registered: HashMap<String, Node>,
) -> Result<(), kube::Error> {
    let completing: Arc<Mutex<HashSet<String>>> = Arc::default();
    let syncs = Arc::new(tokio::sync::Semaphore::new(PARALLEL_SYNCS));
    let mut nodes: HashMap<String, Dispatcher> = index
        .iter()
        .map(|(name, &i)| {
            let completing = completing.clone();
            let completes = Box::new(move |uid: &str| {
                let set = completing.lock().unwrap_or_else(|e| e.into_inner());
                set.contains(uid)
            });
            let (a, b) = config.pod_subnet(i);
            let runtime = Arc::new(FakeRuntime::simulating([10, a, b], completes));
            let worker = Worker::simulated(
                client.clone(),
                runtime,
                name.clone(),
                node_ip(i),
                syncs.clone(),
            );
            if let Some(node) = registered.remove(name) {
                worker.set_node(node);
            }
            (name.clone(), Dispatcher::new(Arc::new(worker)))
        })
        .collect();
    let pods: Api<Pod> = Api::all(client.clone());
    let selector = watcher::Config::default().fields("spec.nodeName!=");
    let events = skiff_runtime::watch::changes(pods, selector);
    let mut events = std::pin::pin!(events);
    let simulated = watcher::Config::default().labels(&format!("{SIMULATED}=true"));
    let nodes_api = Api::<Node>::all(client.clone());
    let node_changes =
        skiff_runtime::watch::changes_without::<_, ForAdmission>(nodes_api, simulated);
    let mut node_changes = std::pin::pin!(node_changes);
    let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
    loop {
        let change = tokio::select! {
            change = events.next() => match change {
                Some(change) => change,
                None => return Ok(()),
            },
            Some(change) = node_changes.next() => {
                let changed = match change {
                    Change::Relisted(all) => all,
                    Change::Applied(node) => vec![node],
                    Change::Deleted(_) => Vec::new(),
                };
                for node in changed {
                    if let Some(d) = nodes.get(&node.name_any()) {
                        d.set_node(node);
                    }
                }
                continue;
            }
            _ = housekeeping.tick() => {
                for node in nodes.values_mut() {
                    node.housekeeping().await;
                }
                continue;
            }
        };
        let note = |pod: &Pod, deleted: bool| {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let policy = pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref());
            let mut set = completing.lock().unwrap_or_else(|e| e.into_inner());
            if deleted || policy.is_none_or(|p| p == "Always") {
                set.remove(&uid);
            } else {
                set.insert(uid);
            }
        };
        match change {
            Change::Relisted(pods) => {
                let mut by_node: HashMap<String, Vec<Pod>> =
                    nodes.keys().map(|n| (n.clone(), Vec::new())).collect();
                for pod in pods {
                    if let Some(list) = node_of(&pod).and_then(|n| by_node.get_mut(&n)) {
                        note(&pod, false);
                        list.push(pod);
                    }
                }
                for (name, pods) in by_node {
                    if let Some(node) = nodes.get_mut(&name) {
                        node.handle(Change::Relisted(pods));
                    }
                }
            }
            Change::Applied(pod) => {
                if let Some(node) = node_of(&pod).and_then(|n| nodes.get_mut(&n)) {
                    note(&pod, false);
                    node.handle(Change::Applied(pod));
                }
            }
            Change::Deleted(pod) => {
                if let Some(node) = node_of(&pod).and_then(|n| nodes.get_mut(&n)) {
                    note(&pod, true);
                    node.handle(Change::Deleted(pod));
                }
            }
        }
    }
}

fn node_of(pod: &Pod) -> Option<String> {
    pod.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// A simulated node's address, in TEST-NET-1: nothing is ever sent there.
fn node_ip(i: usize) -> String {
    format!("192.0.2.{}", i % 250 + 1)
}
