//! What the scheduler knows about one node: the node itself and the
//! resources its pods (bound or assumed) request.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
pub use skiff_core::node_fit::{pod_requests, HostPort, Resources};

/// Requests that count when a pod asks for nothing, for scoring only
/// (upstream's non-zero defaults: 100m CPU, 200Mi memory).
pub const DEFAULT_CPU_MILLI: i128 = 100;
pub const DEFAULT_MEMORY_MILLI: i128 = 200 * 1024 * 1024 * 1000;

/// What affinity and spreading need to know of a pod on a node.
#[derive(Clone, Debug, Default)]
pub struct PlacedPod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Its required anti-affinity terms, which bind newcomers too.
    pub anti_affinity: Vec<k8s_openapi::api::core::v1::PodAffinityTerm>,
    pub priority: i32,
    pub requests: Resources,
    /// Being deleted: it still holds its resources, but preemption no
    /// longer counts it as a victim.
    pub terminating: bool,
    /// The volumes a node's volume limits count: claims and inline CSI.
    pub volumes: Vec<PodVolume>,
    /// The node's ports it holds.
    pub host_ports: Vec<HostPort>,
}

/// A volume of a pod that may count against a node's limits.
#[derive(Clone, Debug, PartialEq)]
pub enum PodVolume {
    /// A PersistentVolumeClaim of the pod's namespace.
    Claim(String),
    /// An inline CSI volume: its driver and the volume's name in the pod.
    Inline { driver: String, name: String },
}

impl PodVolume {
    /// The pod's volumes that may count against a node's limits.
    pub fn of(pod: &Pod) -> Vec<Self> {
        let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
        volumes
            .filter_map(|v| match (skiff_core::volumes::pod_claim(pod, v), &v.csi) {
                (Some(c), _) => Some(Self::Claim(c.name)),
                (None, Some(csi)) => Some(Self::Inline {
                    driver: csi.driver.clone(),
                    name: v.name.clone(),
                }),
                (None, None) => None,
            })
            .collect()
    }
}

impl PlacedPod {
    /// What the scheduler keeps of a pod placed on a node.
    pub fn of(pod: &Pod) -> Self {
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            anti_affinity: pod
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            requests: pod_requests(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            volumes: PodVolume::of(pod),
            host_ports: HostPort::of(pod),
        }
    }
}

/// The next [`NodeInfo::generation`]; never 0, shared by all node infos so
/// that no two states of any node share one.
static GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    GENERATION.fetch_add(1, Ordering::Relaxed)
}

#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    /// The node without its status: plugins read its metadata and spec;
    /// what counts of the status, the allocatable resources, is parsed
    /// into `allocatable` (conditions, addresses and system info are most
    /// of a typed node's heap).
    pub node: Node,
    /// Changes whenever the node or the pods counted on it change, and is
    /// unique across node infos: what plugins key their memos by.
    pub generation: u64,
    /// Shared with the scheduler's record of placed pods, not copied.
    pub pods: Vec<Arc<PlacedPod>>,
    /// How many of `pods` carry required anti-affinity terms.
    pub with_anti_affinity: usize,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Requests with the non-zero defaults, for scoring.
    pub requested_nonzero: Resources,
    pub pod_count: i128,
    /// The images the node holds, by each of their names: their sizes.
    pub images: Arc<HashMap<String, i64>>,
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        let mut info = Self::default();
        info.set_node(node);
        info
    }

    /// Takes a newer version of the node, keeping the pods counted on it.
    /// Returns whether anything a pod's fit depends on changed: its
    /// allocatable resources, labels, annotations or spec (taints,
    /// `unschedulable`). Conditions count through the taints the node
    /// lifecycle controller derives from them; a heartbeat changes none.
    pub fn set_node(&mut self, mut node: Node) -> bool {
        let allocatable = skiff_core::node_fit::allocatable(&node);
        let listed = node.status.as_ref().and_then(|s| s.images.as_ref());
        let images: HashMap<String, i64> = (listed.into_iter().flatten())
            .flat_map(|i| {
                let size = i.size_bytes.unwrap_or(0);
                i.names.iter().flatten().map(move |n| (n.clone(), size))
            })
            .collect();
        if images != *self.images {
            self.images = Arc::new(images);
        }
        node.status = None;
        let (old, new) = (&self.node.metadata, &node.metadata);
        let changed = allocatable != self.allocatable
            || old.labels != new.labels
            || old.annotations != new.annotations
            || self.node.spec != node.spec;
        self.allocatable = allocatable;
        self.node = node;
        self.generation = next_generation();
        changed
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// Counts a pod on this node (`sign` 1) or stops counting it (-1).
    pub fn account(&mut self, pod: &Pod, sign: i128) {
        let placed = PlacedPod::of(pod);
        if sign > 0 {
            self.restore(placed);
        } else {
            self.forget(&placed.namespace, &placed.name);
        }
    }

    /// Stops counting the pod of this namespace and name, if counted.
    pub fn forget(&mut self, namespace: &str, name: &str) {
        if let Some(i) = self
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
        {
            self.remove(i);
        }
    }

    /// Stops counting the `i`th pod, as if it were gone; returns it.
    pub fn remove(&mut self, i: usize) -> Arc<PlacedPod> {
        self.generation = next_generation();
        let gone = self.pods.swap_remove(i);
        self.requested.add(&gone.requests, -1);
        self.requested_nonzero
            .add(&with_defaults(&gone.requests), -1);
        self.pod_count -= 1;
        self.with_anti_affinity -= usize::from(!gone.anti_affinity.is_empty());
        gone
    }

    /// Counts a placed pod on this node (again, after [`NodeInfo::remove`]).
    pub fn restore(&mut self, placed: impl Into<Arc<PlacedPod>>) {
        let placed = placed.into();
        self.generation = next_generation();
        self.requested.add(&placed.requests, 1);
        self.requested_nonzero
            .add(&with_defaults(&placed.requests), 1);
        self.pod_count += 1;
        self.with_anti_affinity += usize::from(!placed.anti_affinity.is_empty());
        self.pods.push(placed);
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.node
            .metadata
            .labels
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }

    /// What is left of a resource.
    pub fn free(&self, resource: &str) -> i128 {
        self.allocatable.get(resource) - self.requested.get(resource)
    }
}

/// Requests with upstream's non-zero defaults where cpu or memory is unset.
fn with_defaults(r: &Resources) -> Resources {
    Resources {
        cpu: if r.cpu > 0 { r.cpu } else { DEFAULT_CPU_MILLI },
        memory: if r.memory > 0 {
            r.memory
        } else {
            DEFAULT_MEMORY_MILLI
        },
        ..Default::default()
    }
}
