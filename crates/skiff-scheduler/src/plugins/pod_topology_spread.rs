//! PodTopologySpread: keeps matching pods spread over topology domains.
//! `DoNotSchedule` constraints filter nodes where the skew would exceed
//! `maxSkew`; `ScheduleAnyway` constraints score emptier domains higher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use skiff_core::selector::LabelSelector;

use super::{NodeAffinity, TaintToleration};
use crate::framework::{normalize_min_max, CycleState, Filter, PreFilter, Score, Status};
use crate::node_info::{NodeInfo, PlacedPod};

/// Counting a selector's pods in every domain is most of a spread pod's
/// cycle. Each constraint keeps a tally that follows the nodes: a cycle
/// looks again only at nodes whose [`NodeInfo::generation`] changed since
/// the last (a few, as pods are placed one at a time).
#[derive(Default)]
pub struct PodTopologySpread {
    memo: Mutex<HashMap<MemoKey, Tally>>,
}

/// Namespace, label selector and node affinity of the pod (as JSON), and
/// topology key of a constraint: pods alike in these share a tally.
type MemoKey = (String, String, String, String);

/// Constraints remembered at most; more, and the memo starts over.
const MEMO_LIMIT: usize = 64;

const NAME: &str = "PodTopologySpread";

/// One constraint's view of the cluster, kept between cycles.
#[derive(Default)]
struct Tally {
    /// What each node (by its index in the cycle's list) added when last
    /// seen.
    nodes: Vec<Seen>,
    /// Domain values to their index in `domains`; only ever grows.
    ids: Arc<foldhash::HashMap<String, usize>>,
    /// Per domain: the eligible nodes in it and the matching pods on them.
    domains: Vec<(i64, i64)>,
}

/// A node as a tally counted it.
#[derive(Default)]
struct Seen {
    generation: u64,
    /// The node's domain, if the pod could go there.
    domain: Option<usize>,
    pods: i64,
}

impl Tally {
    /// Brings the tally up to `nodes`, looking only at changed ones; only
    /// `eligible` nodes count.
    fn refresh(
        &mut self,
        nodes: &[NodeInfo],
        key: &str,
        eligible: impl Fn(&NodeInfo) -> bool,
        matches: impl Fn(&PlacedPod) -> bool,
    ) {
        let gone: Vec<Seen> = self
            .nodes
            .drain(nodes.len().min(self.nodes.len())..)
            .collect();
        for seen in gone {
            self.forget(&seen);
        }
        self.nodes.resize_with(nodes.len(), Seen::default);
        for (i, node) in nodes.iter().enumerate() {
            if self.nodes[i].generation == node.generation {
                continue;
            }
            let old = std::mem::take(&mut self.nodes[i]);
            self.forget(&old);
            let value = eligible(node).then(|| node.label(key)).flatten();
            let domain = value.map(|v| self.id(v));
            let pods = match domain {
                Some(_) => node.pods.iter().filter(|p| matches(p)).count() as i64,
                None => 0,
            };
            let seen = Seen {
                generation: node.generation,
                domain,
                pods,
            };
            if let Some(d) = seen.domain {
                self.domains[d].0 += 1;
                self.domains[d].1 += seen.pods;
            }
            self.nodes[i] = seen;
        }
    }

    fn forget(&mut self, seen: &Seen) {
        if let Some(d) = seen.domain {
            self.domains[d].0 -= 1;
            self.domains[d].1 -= seen.pods;
        }
    }

    fn id(&mut self, value: &str) -> usize {
        if let Some(&id) = self.ids.get(value) {
            return id;
        }
        let id = self.domains.len();
        Arc::make_mut(&mut self.ids).insert(value.to_owned(), id);
        self.domains.push((0, 0));
        id
    }
}

struct Constraint {
    key: String,
    max_skew: i64,
    hard: bool,
    /// Domain values to indices in `counts`.
    ids: Arc<foldhash::HashMap<String, usize>>,
    /// Matching pods per domain; `None` for a domain with no eligible node.
    counts: Vec<Option<i64>>,
    min: i64,
    /// Whether the incoming pod counts itself.
    self_match: bool,
}

impl Constraint {
    /// Matching pods in the domain of `value`.
    fn count(&self, value: &str) -> i64 {
        self.ids
            .get(value)
            .and_then(|&i| self.counts[i])
            .unwrap_or(0)
    }
}

impl PreFilter for PodTopologySpread {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) {
        let Some(specs) = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .filter(|c| !c.is_empty())
        else {
            return;
        };
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let none = CycleState::default();
        let mut constraints = Vec::new();
        for c in specs {
            // Which nodes count, as upstream's policies say: those the
            // pod's node affinity allows (`nodeAffinityPolicy: Honor`, the
            // default), and with `nodeTaintsPolicy: Honor` those whose
            // taints it tolerates.
            let honor_affinity = c.node_affinity_policy.as_deref() != Some("Ignore");
            let honor_taints = c.node_taints_policy.as_deref() == Some("Honor");
            let spec = pod.spec.as_ref();
            let affinity = spec.filter(|_| honor_affinity).map(|s| {
                let node_affinity = s.affinity.as_ref().and_then(|a| a.node_affinity.as_ref());
                (&s.node_selector, node_affinity)
            });
            let tolerations = spec.filter(|_| honor_taints).map(|s| &s.tolerations);
            let eligibility = serde_json::to_string(&(affinity, tolerations)).unwrap_or_default();
            let eligible = |node: &NodeInfo| {
                (!honor_affinity || NodeAffinity.filter(&none, pod, node).is_success())
                    && (!honor_taints || TaintToleration.filter(&none, pod, node).is_success())
            };
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
                eligibility,
                c.topology_key.clone(),
            );
            let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            if memo.len() >= MEMO_LIMIT && !memo.contains_key(&key) {
                memo.clear();
            }
            let tally = memo.entry(key).or_default();
            tally.refresh(nodes, &c.topology_key, eligible, |p| {
                p.namespace == ns && matches(&p.labels)
            });
            let counts: Vec<Option<i64>> = tally
                .domains
                .iter()
                .map(|&(nodes, pods)| (nodes > 0).then_some(pods))
                .collect();
            let mut min = counts.iter().flatten().copied().min().unwrap_or(0);
            // Fewer domains than `minDomains`: the missing ones hold none.
            let domains = counts.iter().flatten().count();
            if c.min_domains.is_some_and(|m| domains < m.max(0) as usize) {
                min = 0;
            }
            constraints.push(Constraint {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew),
                hard: c.when_unsatisfiable == "DoNotSchedule",
                ids: tally.ids.clone(),
                counts,
                min,
                self_match: matches(&labels),
            });
        }
        state.put(NAME, constraints);
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
            let skew = c.count(value) + i64::from(c.self_match) - c.min;
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
            .map(|c| node.label(&c.key).map_or(0, |v| c.count(v)))
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

    /// `spread_pod` with `extra` set in its first constraint and `spec`
    /// in its spec.
    fn with(extra: serde_json::Value, spec: serde_json::Value) -> Pod {
        let p = spread_pod("new", "DoNotSchedule");
        let mut v = serde_json::to_value(&p).unwrap();
        let constraint = &mut v["spec"]["topologySpreadConstraints"][0];
        constraint
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        v["spec"]
            .as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn min_domains_and_node_policies() {
        let none = json!({});
        // Three domains of the four asked for: the missing one holds none.
        let few = with(json!({"minDomains": 4}), none.clone());
        assert_eq!(feasible(&few, &zones([1, 1, 1])), [false, false, false]);
        assert_eq!(
            feasible(&with(none.clone(), none.clone()), &zones([1, 1, 1])),
            [true; 3]
        );
        // Zone a's node is tainted: counted unless taints are honoured.
        let mut tainted = zones([0, 1, 1]);
        tainted[0] = node(
            "n-a",
            json!({"zone": "a"}),
            json!({"taints": [{"key": "k", "effect": "NoSchedule"}]}),
            json!({"cpu": "8"}),
        );
        assert!(!feasible(&with(none.clone(), none.clone()), &tainted)[1]);
        let honor = with(json!({"nodeTaintsPolicy": "Honor"}), none.clone());
        assert!(feasible(&honor, &tainted)[1]);
        // Only zone b by node selector: the others count only if the
        // affinity is ignored.
        let only_b = json!({"nodeSelector": {"zone": "b"}});
        assert!(feasible(&with(none.clone(), only_b.clone()), &zones([0, 1, 1]))[1]);
        let ignore = with(json!({"nodeAffinityPolicy": "Ignore"}), only_b);
        assert!(!feasible(&ignore, &zones([0, 1, 1]))[1]);
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
    fn a_tally_forgets_removed_nodes_and_pods_unlike_in_affinity_do_not_share_it() {
        let plugin = PodTopologySpread::default();
        let p = spread_pod("new", "DoNotSchedule");
        let check = |pod: &Pod, nodes: &[NodeInfo]| -> Vec<bool> {
            let mut state = CycleState::default();
            plugin.pre_filter(&mut state, pod, nodes);
            nodes
                .iter()
                .map(|n| plugin.filter(&state, pod, n).is_success())
                .collect()
        };
        let mut nodes = zones([1, 1, 0]);
        assert_eq!(check(&p, &nodes), [false, false, true]);
        // Zone c's only node goes: its domain no longer sets the minimum.
        nodes.pop();
        assert_eq!(check(&p, &nodes), [true, true]);
        // The same constraint from a pod kept out of zone a: zone a's
        // node does not count, so zone b (1 pod) is at the minimum.
        let mut picky = spread_pod("picky", "DoNotSchedule");
        picky.spec.as_mut().unwrap().affinity = serde_json::from_value(json!({"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]}}}))
        .unwrap();
        let mut three = zones([0, 1, 2]);
        assert_eq!(check(&picky, &three), [true, true, false]);
        assert_eq!(check(&p, &three), [true, false, false]);
        three[0].account(&spread_pod("a0", "DoNotSchedule"), 1);
        assert_eq!(check(&p, &three), [true, true, false]);
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
