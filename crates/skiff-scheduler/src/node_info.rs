//! What the scheduler knows about one node: the node itself and the
//! resources its pods (bound or assumed) request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use skiff_core::quantity::parse_milli;

/// Resource amounts in thousandths (`cpu: 100m` → 100, `memory: 1Ki` →
/// 1_024_000). The common resources have fields of their own, so that
/// filtering and scoring thousands of nodes a pod compares numbers, not
/// names; extended resources (`nvidia.com/gpu`) are kept by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub ephemeral_storage: i128,
    pub pods: i128,
    pub extended: BTreeMap<String, i128>,
}

impl Resources {
    /// Reads a `ResourceList`, skipping quantities that do not parse.
    pub fn parse(list: &BTreeMap<String, Quantity>) -> Self {
        let mut out = Self::default();
        for (name, q) in list {
            if let Some(v) = parse_milli(&q.0) {
                *out.slot(name) = v;
            }
        }
        out
    }

    /// The amount of one resource, by name.
    pub fn get(&self, name: &str) -> i128 {
        match name {
            "cpu" => self.cpu,
            "memory" => self.memory,
            "ephemeral-storage" => self.ephemeral_storage,
            "pods" => self.pods,
            other => self.extended.get(other).copied().unwrap_or(0),
        }
    }

    fn slot(&mut self, name: &str) -> &mut i128 {
        match name {
            "cpu" => &mut self.cpu,
            "memory" => &mut self.memory,
            "ephemeral-storage" => &mut self.ephemeral_storage,
            "pods" => &mut self.pods,
            other => self.extended.entry(other.to_owned()).or_default(),
        }
    }

    /// Every resource with a non-zero amount, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i128)> {
        [
            ("cpu", self.cpu),
            ("memory", self.memory),
            ("ephemeral-storage", self.ephemeral_storage),
            ("pods", self.pods),
        ]
        .into_iter()
        .chain(self.extended.iter().map(|(k, v)| (k.as_str(), *v)))
        .filter(|(_, v)| *v != 0)
    }

    /// Adds `sign` times `other`.
    fn add(&mut self, other: &Resources, sign: i128) {
        self.cpu += sign * other.cpu;
        self.memory += sign * other.memory;
        self.ephemeral_storage += sign * other.ephemeral_storage;
        self.pods += sign * other.pods;
        for (k, v) in &other.extended {
            *self.extended.entry(k.clone()).or_default() += sign * v;
        }
    }

    /// Each resource the larger of the two.
    fn max(&mut self, other: &Resources) {
        self.cpu = self.cpu.max(other.cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.extended {
            let slot = self.extended.entry(k.clone()).or_default();
            *slot = (*slot).max(*v);
        }
    }

    /// With upstream's non-zero defaults where cpu or memory is unset.
    fn with_defaults(&self) -> Self {
        Self {
            cpu: if self.cpu > 0 {
                self.cpu
            } else {
                DEFAULT_CPU_MILLI
            },
            memory: if self.memory > 0 {
                self.memory
            } else {
                DEFAULT_MEMORY_MILLI
            },
            ..Default::default()
        }
    }
}

/// Requests that count when a pod asks for nothing, for scoring only
/// (upstream's non-zero defaults: 100m CPU, 200Mi memory).
pub const DEFAULT_CPU_MILLI: i128 = 100;
pub const DEFAULT_MEMORY_MILLI: i128 = 200 * 1024 * 1024 * 1000;
/// The kubelet's default `maxPods`, for nodes that report none.
const DEFAULT_MAX_PODS: i128 = 110;

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

/// A port of the node a pod holds (`hostPort`).
#[derive(Clone, Debug, PartialEq)]
pub struct HostPort {
    /// `0.0.0.0` (every address) unless the pod names one.
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// The host ports of the pod's containers and sidecars.
    pub fn of(pod: &Pod) -> Vec<Self> {
        let Some(spec) = pod.spec.as_ref() else {
            return Vec::new();
        };
        skiff_core::pod_containers::host_ports(spec)
            .map(|p| Self {
                ip: p
                    .host_ip
                    .clone()
                    .filter(|ip| !ip.is_empty())
                    .unwrap_or_else(|| "0.0.0.0".into()),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.host_port.unwrap_or_default(),
            })
            .collect()
    }

    /// Whether two pods could not both hold these, as upstream's
    /// `HostPortInfo`.
    pub fn conflicts(&self, other: &HostPort) -> bool {
        let any = |ip: &str| ip == "0.0.0.0";
        self.port == other.port
            && self.protocol == other.protocol
            && (self.ip == other.ip || any(&self.ip) || any(&other.ip))
    }
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
            .filter_map(|v| match (&v.persistent_volume_claim, &v.csi) {
                (Some(c), _) => Some(Self::Claim(c.claim_name.clone())),
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
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        let mut info = Self::default();
        info.set_node(node);
        info
    }

    /// Takes a newer version of the node, keeping the pods counted on it.
    pub fn set_node(&mut self, mut node: Node) {
        let list = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
        let mut allocatable = list.map(Resources::parse).unwrap_or_default();
        if !list.is_some_and(|l| l.contains_key("pods")) {
            allocatable.pods = DEFAULT_MAX_PODS * 1000;
        }
        self.allocatable = allocatable;
        node.status = None;
        self.node = node;
        self.generation = next_generation();
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
            .add(&gone.requests.with_defaults(), -1);
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
            .add(&placed.requests.with_defaults(), 1);
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

/// A pod's requests: its containers' summed, or its largest init
/// container's where that is more, plus overhead. A limit with no request
/// counts as the request, as upstream defaulting makes it.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let container = |c: &k8s_openapi::api::core::v1::Container| -> Resources {
        let Some(res) = c.resources.as_ref() else {
            return Resources::default();
        };
        let mut out = res
            .limits
            .as_ref()
            .map(Resources::parse)
            .unwrap_or_default();
        for (k, q) in res.requests.iter().flatten() {
            if let Some(v) = parse_milli(&q.0) {
                *out.slot(k) = v;
            }
        }
        out
    };
    let mut total = Resources::default();
    for c in &spec.containers {
        total.add(&container(c), 1);
    }
    // As upstream's PodRequests: sidecars run beside the app and beside
    // every init container after them; init containers one at a time.
    let (mut sidecars, mut init) = (Resources::default(), Resources::default());
    for c in spec.init_containers.iter().flatten() {
        let mut during = container(c);
        if skiff_core::pod_containers::is_sidecar(c) {
            total.add(&during, 1);
            sidecars.add(&during, 1);
            during = sidecars.clone();
        } else {
            during.add(&sidecars, 1);
        }
        init.max(&during);
    }
    total.max(&init);
    if let Some(overhead) = &spec.overhead {
        total.add(&Resources::parse(overhead), 1);
    }
    total
}
