//! TaintToleration: `NoSchedule` and `NoExecute` taints keep off pods that
//! do not tolerate them; `PreferNoSchedule` taints lower a node's score.

use k8s_openapi::api::core::v1::{Pod, Taint};
use skiff_core::placement::tolerated;

use crate::framework::{normalize_to_max, CycleState, Filter, Score, Status};
use crate::node_info::NodeInfo;

pub struct TaintToleration;

/// Whether any of the pod's tolerations matches the taint.
pub fn tolerates(pod: &Pod, taint: &Taint) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .is_some_and(|ts| tolerated(ts, taint))
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> Status {
        let untolerated = taints(node)
            .iter()
            .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
            .find(|t| !tolerates(pod, t));
        match untolerated {
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            )),
            None => Status::Success,
        }
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn weight(&self) -> i64 {
        3
    }

    /// The number of `PreferNoSchedule` taints the pod does not tolerate.
    fn score(&self, _: &CycleState, pod: &Pod, node: &NodeInfo) -> i64 {
        taints(node)
            .iter()
            .filter(|t| t.effect == "PreferNoSchedule" && !tolerates(pod, t))
            .count() as i64
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_to_max(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::{json, Value};

    fn taint(key: &str, value: &str, effect: &str) -> Value {
        json!({"key": key, "value": value, "effect": effect})
    }

    /// Effects × operators: which tolerations let a pod onto a tainted node.
    #[test]
    fn filter_matrix() {
        let cases: Vec<(Value, Value, bool)> = vec![
            (taint("dedicated", "gpu", "NoSchedule"), json!([]), false),
            (taint("dedicated", "gpu", "NoExecute"), json!([]), false),
            (
                taint("dedicated", "gpu", "PreferNoSchedule"),
                json!([]),
                true,
            ),
            (
                taint("dedicated", "gpu", "NoSchedule"),
                json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]),
                true,
            ),
            (
                taint("dedicated", "gpu", "NoSchedule"),
                json!([{"key": "dedicated", "value": "gpu"}]),
                true,
            ),
            (
                taint("dedicated", "gpu", "NoSchedule"),
                json!([{"key": "dedicated", "operator": "Equal", "value": "cpu"}]),
                false,
            ),
            (
                taint("dedicated", "gpu", "NoSchedule"),
                json!([{"key": "dedicated", "operator": "Exists"}]),
                true,
            ),
            (
                taint("dedicated", "gpu", "NoSchedule"),
                json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute"}]),
                false,
            ),
            (
                taint("dedicated", "gpu", "NoExecute"),
                json!([{"key": "dedicated", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]),
                true,
            ),
            (
                taint("dedicated", "gpu", "NoSchedule"),
                json!([{"operator": "Exists"}]),
                true,
            ),
            (
                taint("dedicated", "gpu", "NoExecute"),
                json!([{"operator": "Exists", "effect": "NoExecute"}]),
                true,
            ),
            (
                taint("other", "x", "NoSchedule"),
                json!([{"key": "dedicated", "operator": "Exists"}]),
                false,
            ),
            (
                taint("dedicated", "", "NoSchedule"),
                json!([{"key": "dedicated", "operator": "Equal"}]),
                true,
            ),
        ];
        for (t, tolerations, ok) in cases {
            let n = node("n", json!({}), json!({"taints": [t.clone()]}), json!({}));
            let status = TaintToleration.filter(
                &CycleState::default(),
                &pod(json!({"tolerations": tolerations.clone()})),
                &n,
            );
            assert_eq!(
                status.is_success(),
                ok,
                "taint {t} tolerations {tolerations}"
            );
            if !ok {
                assert!(status.reasons()[0].starts_with("node(s) had untolerated taint {"));
            }
        }
    }

    #[test]
    fn prefer_no_schedule_lowers_the_score() {
        let soft = node(
            "a",
            json!({}),
            json!({"taints": [taint("k", "v", "PreferNoSchedule")]}),
            json!({}),
        );
        let clean = node("b", json!({}), json!({}), json!({}));
        let p = pod(json!({}));
        let mut scores = vec![
            TaintToleration.score(&CycleState::default(), &p, &soft),
            TaintToleration.score(&CycleState::default(), &p, &clean),
        ];
        TaintToleration.normalize(&mut scores);
        assert_eq!(scores, vec![0, 100]);
    }
}
