//! NodeName: a pod that names its node fits only that node.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, Filter, Status};
use crate::node_info::NodeInfo;

pub struct NodeName;

pub const REASON: &str = "node(s) didn't match the requested node name";

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(n) if !n.is_empty() && n != node.name() => Status::unresolvable(REASON),
            _ => Status::Success,
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
        for (spec, node, ok) in [
            (json!({}), "a", true),
            (json!({"nodeName": "a"}), "a", true),
            (json!({"nodeName": "b"}), "a", false),
        ] {
            assert_eq!(
                NodeName
                    .filter(&CycleState::default(), &pod(spec.clone()), &plain(node))
                    .is_success(),
                ok,
                "{spec} on {node}"
            );
        }
    }
}
