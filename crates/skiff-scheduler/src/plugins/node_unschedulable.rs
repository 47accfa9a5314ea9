//! NodeUnschedulable: cordoned nodes take only pods that tolerate the
//! `node.kubernetes.io/unschedulable` taint.

use k8s_openapi::api::core::v1::{Pod, Taint};

use super::tolerates;
use crate::framework::{CycleState, Filter, Status};
use crate::node_info::NodeInfo;

pub struct NodeUnschedulable;

pub const REASON: &str = "node(s) were unschedulable";

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let cordoned = node
            .node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        if !cordoned {
            return Status::Success;
        }
        let taint = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerates(pod, &taint) {
            Status::unresolvable(REASON)
        } else {
            Status::Success
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    #[test]
    fn table() {
        let cordoned = node("a", json!({}), json!({"unschedulable": true}), json!({}));
        let open = node("b", json!({}), json!({}), json!({}));
        let tolerant = json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]});
        for (spec, n, ok) in [
            (json!({}), &cordoned, false),
            (json!({}), &open, true),
            (tolerant, &cordoned, true),
        ] {
            assert_eq!(
                NodeUnschedulable
                    .filter(&CycleState::default(), &pod(spec), n)
                    .is_success(),
                ok
            );
        }
    }
}
