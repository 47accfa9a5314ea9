//! PodTopologySpread: keeps matching pods spread over topology domains.
//! `DoNotSchedule` constraints filter nodes where the skew would exceed
//! `maxSkew`; `ScheduleAnyway` constraints score emptier domains higher.

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::api::core::v1::Pod;
use skiff_core::selector::LabelSelector;

use super::NodeAffinity;
use crate::framework::{normalize_min_max, CycleState, Filter, PreFilter, Score, Status};
use crate::node_info::NodeInfo;

/// Counting a selector's pods on every node is most of a spread pod's
/// cycle; the counts are remembered per node and recounted only on nodes
/// whose [`NodeInfo::generation`] changed since.
#[derive(Default)]
pub struct PodTopologySpread {
    memo: Mutex<HashMap<MemoKey, Vec<(u64, i64)>>>,
}

/// Namespace, label selector (as JSON) and topology key of a constraint.
type MemoKey = (String, String, String);

/// Constraints remembered at most; more, and the memo starts over.
const MEMO_LIMIT: usize = 64;

const NAME: &str = "PodTopologySpread";

struct Constraint {
    key: String,
    max_skew: i64,
    hard: bool,
    /// Matching pods per domain, every eligible domain present.
    counts: HashMap<String, i64>,
    min: i64,
    /// Whether the incoming pod counts itself.
    self_match: bool,
}

impl PreFilter for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let specs = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.clone())
            .unwrap_or_default();
        let none = CycleState::default();
        let mut constraints = Vec::new();
        for c in specs {
            let selector = c
                .label_selector
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok());
            let sel = selector
                .as_ref()
                .and_then(|s| LabelSelector::from_object(s).ok());
            let matches = |l: &std::collections::BTreeMap<String, String>| {
                sel.as_ref()
                    .is_some_and(|s| s.matches(|k| l.get(k).map(String::as_str)))
            };
            let key = (
                ns.clone(),
                selector.as_ref().map(|s| s.to_string()).unwrap_or_default(),
                c.topology_key.clone(),
            );
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            if memo.len() >= MEMO_LIMIT && !memo.contains_key(&key) {
                memo.clear();
            }
            let known = memo.entry(key).or_default();
            known.resize(nodes.len(), (0, 0));
            let mut counts: HashMap<String, i64> = HashMap::new();
            // Only nodes the pod could go to by its node affinity count
            // (upstream's default nodeAffinityPolicy: Honor).
            for (i, node) in nodes.iter().enumerate() {
                if !NodeAffinity.filter(&none, pod, node).is_success() {
                    continue;
                }
                let Some(value) = node.label(&c.topology_key) else {
                    continue;
                };
                let n = match known[i] {
                    (generation, n) if generation == node.generation => n,
                    _ => {
                        let n = node
                            .pods
                            .iter()
                            .filter(|p| p.namespace == ns && matches(&p.labels))
                            .count() as i64;
                        known[i] = (node.generation, n);
                        n
                    }
                };
                match counts.get_mut(value) {
                    Some(count) => *count += n,
                    None => {
                        counts.insert(value.to_owned(), n);
                    }
                }
            }
            let min = counts.values().copied().min().unwrap_or(0);
            constraints.push(Constraint {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                counts,
                min,
                self_match: matches(&labels),
            });
        }
        if !constraints.is_empty() {
            state.put(NAME, constraints);
        }
    }
}

impl Filter for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(constraints) = state.get::<Vec<Constraint>>(NAME) else {
            return Status::Success;
        };
        for c in constraints.iter().filter(|c| c.hard) {
            let Some(value) = node.label(&c.key) else {
                return Status::unresolvable(
                    "node(s) didn't match pod topology spread constraints (missing required label)",
                );
            };
            let skew = c.counts.get(value).copied().unwrap_or(0) + i64::from(c.self_match) - c.min;
            if skew > c.max_skew {
                return Status::unschedulable(
                    "node(s) didn't match pod topology spread constraints",
                );
            }
        }
        Status::Success
    }
}

impl Score for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn weight(&self) -> i64 {
        2
    }

    /// Fewer matching pods in the node's domains scores higher.
    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let Some(constraints) = state.get::<Vec<Constraint>>(NAME) else {
            return 0;
        };
        -constraints
            .iter()
            .filter(|c| !c.hard)
            .map(|c| {
                node.label(&c.key)
                    .and_then(|v| c.counts.get(v))
                    .copied()
                    .unwrap_or(0)
            })
            .sum::<i64>()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_min_max(scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::Score;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    fn spread_pod(name: &str, when: &str) -> Pod {
        let mut p = pod(
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone",
            "whenUnsatisfiable": when, "labelSelector": {"matchLabels": {"app": "web"}}}]}),
        );
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p
    }

    fn zones(per_zone: [usize; 3]) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = ["a", "b", "c"]
            .iter()
            .map(|z| {
                node(
                    &format!("n-{z}"),
                    json!({"zone": z}),
                    json!({}),
                    json!({"cpu": "8", "memory": "8Gi"}),
                )
            })
            .collect();
        for (i, n) in per_zone.iter().enumerate() {
            for k in 0..*n {
                let placed = spread_pod(&format!("p{i}{k}"), "DoNotSchedule");
                nodes[i].account(&placed, 1);
            }
        }
        nodes
    }

    fn feasible(p: &Pod, nodes: &[NodeInfo]) -> Vec<bool> {
        let mut state = CycleState::default();
        PodTopologySpread::default().pre_filter(&mut state, p, nodes);
        nodes
            .iter()
            .map(|n| {
                PodTopologySpread::default()
                    .filter(&state, p, n)
                    .is_success()
            })
            .collect()
    }

    #[test]
    fn max_skew_table() {
        let p = spread_pod("new", "DoNotSchedule");
        for (counts, want) in [
            ([0, 0, 0], [true, true, true]),
            ([1, 0, 0], [false, true, true]),
            ([1, 1, 0], [false, false, true]),
            ([2, 2, 1], [false, false, true]),
            ([2, 2, 2], [true, true, true]),
        ] {
            assert_eq!(feasible(&p, &zones(counts)), want, "{counts:?}");
        }
        let mut unlabelled = zones([0, 0, 0]);
        unlabelled.push(node("bare", json!({}), json!({}), json!({"cpu": "1"})));
        assert!(
            !feasible(&p, &unlabelled)[3],
            "a node without the key is out"
        );
    }

    #[test]
    fn remembered_counts_follow_changed_nodes() {
        let plugin = PodTopologySpread::default();
        let p = spread_pod("new", "DoNotSchedule");
        let mut nodes = zones([1, 1, 0]);
        let check = |nodes: &[NodeInfo]| -> Vec<bool> {
            let mut state = CycleState::default();
            plugin.pre_filter(&mut state, &p, nodes);
            nodes
                .iter()
                .map(|n| plugin.filter(&state, &p, n).is_success())
                .collect()
        };
        assert_eq!(check(&nodes), [false, false, true]);
        // A pod lands in zone c: the same plugin must see it.
        nodes[2].account(&spread_pod("c0", "DoNotSchedule"), 1);
        assert_eq!(check(&nodes), [true, true, true]);
        // Zone a's node is replaced by an empty one at the same index.
        nodes[0] = node(
            "n-a2",
            json!({"zone": "a"}),
            json!({}),
            json!({"cpu": "8", "memory": "8Gi"}),
        );
        assert_eq!(check(&nodes), [true, false, false]);
    }

    #[test]
    fn schedule_anyway_prefers_the_emptier_zone() {
        let p = spread_pod("new", "ScheduleAnyway");
        let nodes = zones([2, 1, 0]);
        let mut state = CycleState::default();
        PodTopologySpread::default().pre_filter(&mut state, &p, &nodes);
        assert!(nodes.iter().all(|n| PodTopologySpread::default()
            .filter(&state, &p, n)
            .is_success()));
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| PodTopologySpread::default().score(&state, &p, n))
            .collect();
        PodTopologySpread::default().normalize(&mut scores);
        assert_eq!(scores, vec![0, 50, 100]);
    }
}
