//! NodeAffinity: `nodeSelector` and required node affinity filter nodes;
//! preferred node affinity scores them.

use k8s_openapi::api::core::v1::Pod;
use skiff_core::placement::{node_selected, term_matches};

use crate::framework::{normalize_to_max, CycleState, Filter, Score, Status};
use crate::node_info::NodeInfo;

pub struct NodeAffinity;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let Some(spec) = &pod.spec else {
            return Status::Success;
        };
        if node_selected(spec, &node.node) {
            Status::Success
        } else {
            Status::unresolvable(REASON)
        }
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn weight(&self) -> i64 {
        2
    }

    /// The summed weights of the preferred terms the node matches.
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> i64 {
        pod.spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .into_iter()
            .flatten()
            .filter(|p| term_matches(&node.node, &p.preference))
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    fn required(exprs: serde_json::Value) -> serde_json::Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": exprs}]}}}})
    }

    #[test]
    fn filter_table() {
        let n = node(
            "n1",
            json!({"zone": "a", "disk": "ssd", "cores": "8"}),
            json!({}),
            json!({}),
        );
        let cases = [
            (json!({}), true),
            (json!({"nodeSelector": {"zone": "a"}}), true),
            (json!({"nodeSelector": {"zone": "b"}}), false),
            (json!({"nodeSelector": {"zone": "a", "disk": "hdd"}}), false),
            (
                required(json!([{"key": "zone", "operator": "In", "values": ["a", "b"]}])),
                true,
            ),
            (
                required(json!([{"key": "zone", "operator": "NotIn", "values": ["a"]}])),
                false,
            ),
            (
                required(json!([{"key": "gpu", "operator": "DoesNotExist"}])),
                true,
            ),
            (
                required(json!([{"key": "disk", "operator": "Exists"}])),
                true,
            ),
            (
                required(json!([{"key": "cores", "operator": "Gt", "values": ["4"]}])),
                true,
            ),
            (
                required(json!([{"key": "cores", "operator": "Lt", "values": ["4"]}])),
                false,
            ),
            (
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}}),
                true,
            ),
        ];
        for (spec, ok) in cases {
            assert_eq!(
                NodeAffinity
                    .filter(&CycleState::default(), &pod(spec.clone()), &n)
                    .is_success(),
                ok,
                "{spec}"
            );
        }
    }

    #[test]
    fn preferred_terms_score_by_weight() {
        let spec = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]}}});
        let p = pod(spec);
        let a = node("a", json!({"zone": "a"}), json!({}), json!({}));
        let b = node(
            "b",
            json!({"zone": "a", "disk": "ssd"}),
            json!({}),
            json!({}),
        );
        let mut scores = vec![
            NodeAffinity.score(&CycleState::default(), &p, &a),
            NodeAffinity.score(&CycleState::default(), &p, &b),
        ];
        assert_eq!(scores, vec![10, 40]);
        NodeAffinity.normalize(&mut scores);
        assert_eq!(scores, vec![25, 100]);
    }
}
