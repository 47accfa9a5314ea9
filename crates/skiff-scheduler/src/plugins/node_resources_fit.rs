//! NodeResourcesFit: a pod fits where every resource it requests (cpu,
//! memory, ephemeral-storage, extended resources) and one more pod slot
//! are still free. LeastAllocated scores emptier nodes higher.

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{CycleState, Filter, Score, Status, MAX_SCORE};
use crate::node_info::{NodeInfo, Resources, DEFAULT_CPU_MILLI, DEFAULT_MEMORY_MILLI};

pub struct NodeResourcesFit;

impl Filter for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        if fits_all(&state.requests, node) {
            return Status::Success;
        }
        let mut reasons = Vec::new();
        if node.pod_count + 1 > node.allocatable.pods / 1000 {
            reasons.push("Too many pods".into());
        }
        for (resource, want) in state.requests.iter() {
            if want > 0 && want > node.free(resource) {
                reasons.push(format!("Insufficient {resource}").into());
            }
        }
        if reasons.is_empty() {
            Status::Success
        } else {
            Status::Unschedulable(reasons)
        }
    }
}

/// Whether the node has room for one more pod and all it requests: the
/// answer for nearly every node, read field by field rather than by name.
fn fits_all(want: &Resources, node: &NodeInfo) -> bool {
    let (have, used) = (&node.allocatable, &node.requested);
    let room = |want: i128, have: i128, used: i128| want <= 0 || want <= have - used;
    node.pod_count < have.pods / 1000
        && room(want.cpu, have.cpu, used.cpu)
        && room(want.memory, have.memory, used.memory)
        && room(
            want.ephemeral_storage,
            have.ephemeral_storage,
            used.ephemeral_storage,
        )
        && room(want.pods, have.pods, used.pods)
        && want
            .extended
            .iter()
            .all(|(name, &w)| room(w, have.get(name), used.get(name)))
}

/// The fraction of cpu and memory left free after placing the pod, as a
/// 0..=100 score (upstream's default LeastAllocated strategy).
pub struct LeastAllocated;

/// `(requested after placing the pod, allocatable)` of cpu and memory,
/// with the non-zero defaults.
pub fn usage(requests: &Resources, node: &NodeInfo) -> [(i128, i128); 2] {
    let want = |v: i128, default: i128| if v > 0 { v } else { default };
    [
        (
            node.requested_nonzero.cpu + want(requests.cpu, DEFAULT_CPU_MILLI),
            node.allocatable.cpu,
        ),
        (
            node.requested_nonzero.memory + want(requests.memory, DEFAULT_MEMORY_MILLI),
            node.allocatable.memory,
        ),
    ]
}

impl Score for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn weight(&self) -> i64 {
        1
    }

    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let per = usage(&state.requests, node).map(|(used, cap)| {
            if cap <= 0 || used > cap {
                0
            } else {
                ((cap - used) * MAX_SCORE as i128 / cap) as i64
            }
        });
        per.iter().sum::<i64>() / per.len() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    fn requesting(cpu: &str, memory: &str) -> Pod {
        pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}),
        )
    }

    #[test]
    fn filter_table() {
        let n = node(
            "n",
            json!({}),
            json!({}),
            json!({"cpu": "2", "memory": "4Gi", "pods": "2", "nvidia.com/gpu": "1"}),
        );
        let cases: Vec<(Pod, Vec<&str>)> = vec![
            (requesting("1", "1Gi"), vec![]),
            (requesting("3", "1Gi"), vec!["Insufficient cpu"]),
            (
                requesting("3", "5Gi"),
                vec!["Insufficient cpu", "Insufficient memory"],
            ),
            (
                pod(
                    json!({"containers": [{"name": "c", "image": "i", "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}),
                ),
                vec!["Insufficient nvidia.com/gpu"],
            ),
            (
                pod(
                    json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"ephemeral-storage": "1Gi"}}}]}),
                ),
                vec!["Insufficient ephemeral-storage"],
            ),
            (
                pod(
                    json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m"}}}],
                "initContainers": [{"name": "init", "image": "i", "resources": {"requests": {"cpu": "2500m"}}}]}),
                ),
                vec!["Insufficient cpu"],
            ),
            // A sidecar's 1.5 CPU beside the app's 1: 2.5 in all.
            (
                pod(
                    json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}],
                "initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "1500m"}}}]}),
                ),
                vec!["Insufficient cpu"],
            ),
        ];
        for (p, want) in cases {
            let got = NodeResourcesFit.filter(&CycleState::for_pod(&p), &p, &n);
            assert_eq!(
                got.reasons(),
                want.iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>()
                    .as_slice()
            );
        }
        let mut full = n.clone();
        full.account(&requesting("100m", "1Mi"), 1);
        full.account(&requesting("100m", "1Mi"), 1);
        assert_eq!(
            NodeResourcesFit
                .filter(
                    &CycleState::for_pod(&requesting("100m", "1Mi")),
                    &requesting("100m", "1Mi"),
                    &full
                )
                .reasons(),
            ["Too many pods".to_string()]
        );
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let p = requesting("1", "1Gi");
        let empty = node(
            "a",
            json!({}),
            json!({}),
            json!({"cpu": "4", "memory": "4Gi"}),
        );
        let mut busy = empty.clone();
        busy.account(&requesting("2", "2Gi"), 1);
        assert_eq!(
            LeastAllocated.score(&CycleState::for_pod(&p), &p, &empty),
            75
        );
        assert_eq!(
            LeastAllocated.score(&CycleState::for_pod(&p), &p, &busy),
            25
        );
    }
}
