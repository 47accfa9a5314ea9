//! What a pod takes of a node: the resources it requests, counted as
//! upstream's `PodRequests`, and the node's ports it holds. The scheduler
//! places pods by them and the node agent admits pods by them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity::parse_milli;

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
    pub fn add(&mut self, other: &Resources, sign: i128) {
        self.cpu += sign * other.cpu;
        self.memory += sign * other.memory;
        self.ephemeral_storage += sign * other.ephemeral_storage;
        self.pods += sign * other.pods;
        for (k, v) in &other.extended {
            *self.extended.entry(k.clone()).or_default() += sign * v;
        }
    }

    /// Each resource the larger of the two.
    pub fn max(&mut self, other: &Resources) {
        self.cpu = self.cpu.max(other.cpu);
        self.memory = self.memory.max(other.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(other.ephemeral_storage);
        self.pods = self.pods.max(other.pods);
        for (k, v) in &other.extended {
            let slot = self.extended.entry(k.clone()).or_default();
            *slot = (*slot).max(*v);
        }
    }
}

/// The kubelet's default `maxPods`, for nodes that report none.
const DEFAULT_MAX_PODS: i128 = 110;

/// What a node offers its pods: its allocatable resources (its capacity
/// if it reports none), with upstream's 110 pods where it names no count.
pub fn allocatable(node: &Node) -> Resources {
    let list = node
        .status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()));
    let mut out = list.map(Resources::parse).unwrap_or_default();
    if !list.is_some_and(|l| l.contains_key("pods")) {
        out.pods = DEFAULT_MAX_PODS * 1000;
    }
    out
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
        crate::pod_containers::host_ports(spec)
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

/// A pod's requests: its containers' summed, or its largest init
/// container's where that is more, plus overhead. A limit with no request
/// counts as the request, as upstream defaulting makes it. A container
/// being resized counts the most of what it asks, was allocated and
/// holds (its status), as upstream's scheduler counts it.
pub fn pod_requests(pod: &Pod) -> Resources {
    let Some(spec) = &pod.spec else {
        return Resources::default();
    };
    let status = pod.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_ref());
    let init_statuses = status.and_then(|s| s.init_container_statuses.as_ref());
    let container = |c: &k8s_openapi::api::core::v1::Container| -> Resources {
        let mut out = Resources::default();
        if let Some(res) = c.resources.as_ref() {
            out = res
                .limits
                .as_ref()
                .map(Resources::parse)
                .unwrap_or_default();
            for (k, q) in res.requests.iter().flatten() {
                if let Some(v) = parse_milli(&q.0) {
                    *out.slot(k) = v;
                }
            }
        }
        let held = statuses
            .into_iter()
            .chain(init_statuses)
            .flatten()
            .find(|s| s.name == c.name);
        if let Some(held) = held {
            let actual = held.resources.as_ref().and_then(|r| r.requests.as_ref());
            for list in held.allocated_resources.iter().chain(actual) {
                out.max(&Resources::parse(list));
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
        if crate::pod_containers::is_sidecar(c) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_container_being_resized_counts_the_most_it_asks_was_given_or_holds() {
        let pod = |status: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"spec": {"containers": [
                {"name": "c", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
                "status": status}))
            .unwrap()
        };
        let asked = pod_requests(&pod(serde_json::json!({})));
        assert_eq!((asked.cpu, asked.memory), (100, (64 << 20) * 1000));
        // Shrinking: the node still holds the old size until it is applied.
        let shrinking = pod(serde_json::json!({"containerStatuses": [{"name": "c",
            "allocatedResources": {"cpu": "500m"}, "resources": {"requests": {"memory": "128Mi"}}}]}));
        let counted = pod_requests(&shrinking);
        assert_eq!((counted.cpu, counted.memory), (500, (128 << 20) * 1000));
    }
}
