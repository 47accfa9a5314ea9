//! The default plugins, each with its own table tests.

mod balanced_allocation;
mod default_binder;
mod default_preemption;
mod image_locality;
mod inter_pod_affinity;
mod node_affinity;
mod node_name;
mod node_ports;
mod node_resources_fit;
mod node_unschedulable;
mod node_volume_limits;
mod pod_topology_spread;
mod taint_toleration;
mod volume_binding;

pub use balanced_allocation::BalancedAllocation;
pub use default_binder::DefaultBinder;
pub use default_preemption::DefaultPreemption;
pub use image_locality::ImageLocality;
pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_ports::NodePorts;
pub use node_resources_fit::{LeastAllocated, NodeResourcesFit};
pub use node_unschedulable::NodeUnschedulable;
pub use node_volume_limits::NodeVolumeLimits;
pub use pod_topology_spread::PodTopologySpread;
pub use taint_toleration::{tolerates, TaintToleration};
pub use volume_binding::{Kept, VolumeBinding, Volumes};

use std::sync::Arc;

use crate::framework::Profile;

/// Upstream's default profile, with its score weights, without volumes.
pub fn default_profile() -> Profile {
    profile(Arc::default(), None)
}

/// Upstream's default profile, with its score weights; volume binding
/// reads `volumes` and names chosen nodes on claims through `client`.
pub fn profile(volumes: Arc<Volumes>, client: Option<kube::Client>) -> Profile {
    let binding = || VolumeBinding {
        volumes: volumes.clone(),
        client: client.clone(),
    };
    Profile {
        pre_filters: vec![
            Box::new(binding()),
            Box::new(InterPodAffinity),
            Box::new(PodTopologySpread::default()),
        ],
        filters: vec![
            Box::new(NodeUnschedulable),
            Box::new(NodeName),
            Box::new(TaintToleration),
            Box::new(NodeAffinity),
            Box::new(NodePorts),
            Box::new(NodeResourcesFit),
            Box::new(NodeVolumeLimits {
                volumes: volumes.clone(),
            }),
            Box::new(binding()),
            Box::new(InterPodAffinity),
            Box::new(PodTopologySpread::default()),
        ],
        post_filters: vec![Box::new(DefaultPreemption)],
        pre_scores: vec![Box::new(InterPodAffinity), Box::new(ImageLocality)],
        scores: vec![
            Box::new(TaintToleration),
            Box::new(NodeAffinity),
            Box::new(LeastAllocated),
            Box::new(BalancedAllocation),
            Box::new(InterPodAffinity),
            Box::new(PodTopologySpread::default()),
            Box::new(ImageLocality),
        ],
        // Waiting claims are held to the chosen node here, named on the
        // claims at pre-bind; the volume controller binds.
        reserves: vec![Box::new(binding())],
        pre_binds: vec![Box::new(binding())],
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{json, Value};

    use crate::node_info::NodeInfo;

    pub fn pod(spec: Value) -> Pod {
        let mut spec = spec;
        if spec.get("containers").is_none() {
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
        }
        serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    pub fn node(name: &str, labels: Value, spec: Value, allocatable: Value) -> NodeInfo {
        NodeInfo::new(
            serde_json::from_value::<Node>(json!({
                "metadata": {"name": name, "labels": labels},
                "spec": spec,
                "status": {"allocatable": allocatable},
            }))
            .unwrap(),
        )
    }

    pub fn plain(name: &str) -> NodeInfo {
        node(
            name,
            json!({}),
            json!({}),
            json!({"cpu": "4", "memory": "8Gi", "pods": "110"}),
        )
    }
}
