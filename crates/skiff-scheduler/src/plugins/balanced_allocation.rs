//! BalancedAllocation: favours nodes whose cpu and memory would be used in
//! equal shares after placing the pod.

use k8s_openapi::api::core::v1::Pod;

use super::node_resources_fit::usage;
use crate::framework::{CycleState, Score, MAX_SCORE};
use crate::node_info::NodeInfo;

pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn weight(&self) -> i64 {
        1
    }

    /// `(1 - std-dev of the used fractions) × 100`; for two resources the
    /// standard deviation is half their difference.
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let fractions = usage(&state.requests, node).map(|(used, cap)| {
            if cap <= 0 {
                1.0
            } else {
                (used as f64 / cap as f64).min(1.0)
            }
        });
        let std = (fractions[0] - fractions[1]).abs() / 2.0;
        ((1.0 - std) * MAX_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    #[test]
    fn balanced_beats_lopsided() {
        let p = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}}]}),
        );
        let even = node(
            "a",
            json!({}),
            json!({}),
            json!({"cpu": "4", "memory": "4Gi"}),
        );
        let lopsided = node(
            "b",
            json!({}),
            json!({}),
            json!({"cpu": "2", "memory": "16Gi"}),
        );
        assert_eq!(
            BalancedAllocation.score(&CycleState::for_pod(&p), &p, &even),
            100
        );
        assert!(BalancedAllocation.score(&CycleState::for_pod(&p), &p, &lopsided) < 100);
    }
}
