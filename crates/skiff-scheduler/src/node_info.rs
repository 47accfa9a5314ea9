//! What the scheduler knows about one node: the node itself and the
//! resources its pods (bound or assumed) request.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use skiff_core::quantity::parse_milli;

/// Resource amounts in thousandths (`cpu: 100m` → 100, `memory: 1Ki` →
/// 1_024_000).
pub type Resources = BTreeMap<String, i128>;

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
}

impl PlacedPod {
    fn of(pod: &Pod) -> Self {
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
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct NodeInfo {
    pub node: Node,
    pub pods: Vec<PlacedPod>,
    /// How many of `pods` carry required anti-affinity terms.
    pub with_anti_affinity: usize,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Requests with the non-zero defaults, for scoring.
    pub requested_nonzero: Resources,
    pub pod_count: i128,
}

fn add(into: &mut Resources, from: &Resources, sign: i128) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += sign * v;
    }
}

impl NodeInfo {
    pub fn new(node: Node) -> Self {
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.clone().or_else(|| s.capacity.clone()))
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, q)| Some((k, parse_milli(&q.0)?)))
            .collect();
        Self {
            node,
            allocatable,
            ..Default::default()
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or("")
    }

    /// Counts a pod on this node (`sign` 1) or stops counting it (-1).
    pub fn account(&mut self, pod: &Pod, sign: i128) {
        let placed = PlacedPod::of(pod);
        add(&mut self.requested, &placed.requests, sign);
        add(
            &mut self.requested_nonzero,
            &with_defaults(placed.requests.clone()),
            sign,
        );
        self.pod_count += sign;
        if sign > 0 {
            self.with_anti_affinity += usize::from(!placed.anti_affinity.is_empty());
            self.pods.push(placed);
        } else if let Some(i) = self
            .pods
            .iter()
            .position(|p| p.namespace == placed.namespace && p.name == placed.name)
        {
            let gone = self.pods.swap_remove(i);
            self.with_anti_affinity -= usize::from(!gone.anti_affinity.is_empty());
        }
    }

    /// Stops counting the `i`th pod, as if it were gone; returns it.
    pub fn remove(&mut self, i: usize) -> PlacedPod {
        let gone = self.pods.swap_remove(i);
        add(&mut self.requested, &gone.requests, -1);
        add(
            &mut self.requested_nonzero,
            &with_defaults(gone.requests.clone()),
            -1,
        );
        self.pod_count -= 1;
        self.with_anti_affinity -= usize::from(!gone.anti_affinity.is_empty());
        gone
    }

    /// Counts a pod again after [`NodeInfo::remove`].
    pub fn restore(&mut self, placed: PlacedPod) {
        add(&mut self.requested, &placed.requests, 1);
        add(
            &mut self.requested_nonzero,
            &with_defaults(placed.requests.clone()),
            1,
        );
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
        self.allocatable.get(resource).copied().unwrap_or(0)
            - self.requested.get(resource).copied().unwrap_or(0)
    }
}

/// A pod's requests: its containers' summed, or its largest init
/// container's where that is more, plus overhead. A limit with no request
/// counts as the request, as upstream defaulting makes it.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::new();
    };
    let container = |c: &k8s_openapi::api::core::v1::Container| -> Resources {
        let res = c.resources.as_ref();
        let mut out: Resources = res
            .and_then(|r| r.limits.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, q)| Some((k, parse_milli(&q.0)?)))
            .collect();
        for (k, q) in res.and_then(|r| r.requests.clone()).unwrap_or_default() {
            if let Some(v) = parse_milli(&q.0) {
                out.insert(k, v);
            }
        }
        out
    };
    let mut total = Resources::new();
    for c in &spec.containers {
        add(&mut total, &container(c), 1);
    }
    for c in spec.init_containers.iter().flatten() {
        for (k, v) in container(c) {
            let slot = total.entry(k).or_default();
            *slot = (*slot).max(v);
        }
    }
    for (k, q) in spec.overhead.clone().unwrap_or_default() {
        if let Some(v) = parse_milli(&q.0) {
            *total.entry(k).or_default() += v;
        }
    }
    total
}

fn with_defaults(mut r: Resources) -> Resources {
    r.entry("cpu".into()).or_insert(DEFAULT_CPU_MILLI);
    r.entry("memory".into()).or_insert(DEFAULT_MEMORY_MILLI);
    r
}
