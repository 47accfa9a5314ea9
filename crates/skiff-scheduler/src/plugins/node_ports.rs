//! NodePorts: a pod that asks for a port of the node (`hostPort`) fits only
//! where no pod placed there holds the same port, protocol and address
//! (`0.0.0.0`, the default, holds every address).

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, Filter, Status};
use crate::node_info::NodeInfo;

pub struct NodePorts;

pub const REASON: &str = "node(s) didn't have free ports for the requested pod ports";

impl Filter for NodePorts {
    fn name(&self) -> &'static str {
        "NodePorts"
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let wanted = &state.host_ports;
        if wanted.is_empty() {
            return Status::Success;
        }
        let mut held = node.pods.iter().flat_map(|p| p.host_ports.iter());
        let taken = held.any(|h| wanted.iter().any(|w| w.conflicts(h)));
        if taken {
            Status::unschedulable(REASON)
        } else {
            Status::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{plain, pod};
    use serde_json::json;

    #[test]
    fn table() {
        let asking = |port: i64, ip: &str, protocol: &str| {
            pod(json!({"containers": [{"name": "c", "image": "i", "ports": [
                {"containerPort": 80, "hostPort": port, "hostIP": ip, "protocol": protocol}]}]}))
        };
        let mut node = plain("a");
        node.account(&asking(8080, "", "TCP"), 1);
        node.account(&asking(9090, "10.0.0.1", "TCP"), 1);
        for (name, p, ok) in [
            ("no host port", pod(json!({})), true),
            ("the same port", asking(8080, "", "TCP"), false),
            (
                "the same port on one address",
                asking(8080, "127.0.0.1", "TCP"),
                false,
            ),
            ("the same port over UDP", asking(8080, "", "UDP"), true),
            ("another port", asking(8081, "", "TCP"), true),
            ("another address", asking(9090, "10.0.0.2", "TCP"), true),
            ("every address", asking(9090, "0.0.0.0", "TCP"), false),
        ] {
            let status = NodePorts.filter(&CycleState::for_pod(&p), &p, &node);
            assert_eq!(status.is_success(), ok, "{name}");
        }
    }
}
