//! One scheduling decision: filter the nodes, score the feasible ones, pick
//! the best; or explain why no node fits.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use crate::framework::{fits, CycleState, Existing, Nomination, Profile, Status};
use crate::node_info::NodeInfo;

/// Why a pod fits nowhere: reason → number of nodes that gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
    /// Each node's verdict, by index, for preemption to weigh.
    pub statuses: Vec<Status>,
}

impl FitError {
    /// Counts the reasons of the nodes that failed, `(index, verdict)`.
    fn new(nodes: usize, failed: Vec<(usize, Status)>) -> Self {
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut statuses = vec![Status::Success; nodes];
        for (i, s) in failed {
            match &s {
                Status::Error(e) => *reasons.entry(e.clone()).or_default() += 1,
                s => {
                    for r in s.reasons() {
                        *reasons.entry(r.to_string()).or_default() += 1;
                    }
                }
            }
            statuses[i] = s;
        }
        Self {
            nodes,
            reasons,
            statuses,
        }
    }

    /// Upstream's message: "0/5 nodes are available: 2 Insufficient cpu,
    /// 3 node(s) had untolerated taint {dedicated: gpu}.", or that there
    /// is no node at all.
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "no nodes available to schedule pods".into();
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if parts.is_empty() {
            format!("0/{} nodes are available.", self.nodes)
        } else {
            format!(
                "0/{} nodes are available: {}.",
                self.nodes,
                parts.join(", ")
            )
        }
    }
}

/// After a failed cycle, asks the post-filters (preemption) whom to evict
/// and where.
pub fn preempt(
    profile: &Profile,
    pod: &Pod,
    nodes: &[NodeInfo],
    existing: Existing,
    fit: &FitError,
) -> Option<Nomination> {
    let mut state = CycleState::for_pod(pod);
    state.existing = existing;
    for p in &profile.pre_filters {
        p.pre_filter(&mut state, pod, nodes);
    }
    profile
        .post_filters
        .iter()
        .find_map(|p| p.post_filter(&state, pod, nodes, &profile.filters, &fit.statuses))
}

/// The node chosen for a pod, by index, and what the cycle computed, for
/// the Reserve plugins.
pub struct Placement {
    pub node: usize,
    pub state: CycleState,
}

/// How many feasible nodes to find before scoring, as upstream's adaptive
/// `percentageOfNodesToScore`: all of a small cluster, a shrinking share
/// (never under 5 %, never under 100 nodes) of a large one.
pub fn feasible_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = (50 - nodes as i64 / 125).max(5) as usize;
    (nodes * percent / 100).max(100)
}

/// Picks a node for `pod` among `nodes`, starting the search at `start`
/// (rotated between cycles so that every node gets its turn).
pub fn schedule(
    profile: &Profile,
    pod: &Pod,
    nodes: &[NodeInfo],
    existing: Existing,
    start: usize,
    score_all: bool,
) -> Result<Placement, FitError> {
    let mut state = CycleState::for_pod(pod);
    state.existing = existing;
    for p in &profile.pre_filters {
        p.pre_filter(&mut state, pod, nodes);
    }
    let want = if score_all {
        nodes.len()
    } else {
        feasible_to_find(nodes.len())
    };
    let mut feasible = Vec::with_capacity(want.min(nodes.len()));
    let mut failed = Vec::new();
    for i in 0..nodes.len() {
        if feasible.len() >= want {
            break;
        }
        let idx = (start + i) % nodes.len();
        match fits(&profile.filters, &state, pod, &nodes[idx]) {
            Status::Success => feasible.push(idx),
            s => failed.push((idx, s)),
        }
    }
    if feasible.is_empty() {
        return Err(FitError::new(nodes.len(), failed));
    }
    if feasible.len() == 1 {
        return Ok(Placement {
            node: feasible[0],
            state,
        });
    }
    for p in &profile.pre_scores {
        p.pre_score(&mut state, pod, nodes);
    }
    let mut totals = vec![0i64; feasible.len()];
    for plugin in &profile.scores {
        let mut scores: Vec<i64> = feasible
            .iter()
            .map(|&i| plugin.score(&state, pod, &nodes[i]))
            .collect();
        plugin.normalize(&mut scores);
        for (t, s) in totals.iter_mut().zip(scores) {
            *t += s * plugin.weight();
        }
    }
    // The best score wins; ties are broken at random, as upstream does.
    let best = totals.iter().copied().max().unwrap_or(0);
    let mut rng = rand::rng();
    let mut chosen = feasible[0];
    let mut seen = 0;
    for (&i, &t) in feasible.iter().zip(&totals) {
        if t == best {
            seen += 1;
            if rng.random_range(0..seen) == 0 {
                chosen = i;
            }
        }
    }
    Ok(Placement {
        node: chosen,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::default_profile;
    use crate::plugins::test_util::{node, pod};
    use serde_json::json;

    #[test]
    fn explains_with_counted_reasons() {
        let mut nodes: Vec<NodeInfo> = (0..2)
            .map(|i| {
                node(
                    &format!("small{i}"),
                    json!({}),
                    json!({}),
                    json!({"cpu": "1", "memory": "1Gi"}),
                )
            })
            .collect();
        nodes.extend((0..3).map(|i| {
            node(
                &format!("gpu{i}"),
                json!({}),
                json!({"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}),
                json!({"cpu": "8", "memory": "8Gi"}),
            )
        }));
        let p = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "2"}}}]}),
        );
        let Err(err) = schedule(
            &default_profile(),
            &p,
            &nodes,
            Existing::default(),
            0,
            false,
        ) else {
            panic!("the pod fits nowhere");
        };
        assert_eq!(err.message(), "0/5 nodes are available: 2 Insufficient cpu, 3 node(s) had untolerated taint {dedicated: gpu}.");
        assert_eq!(
            FitError::new(0, Vec::new()).message(),
            "no nodes available to schedule pods"
        );
    }

    #[test]
    fn picks_the_emptier_node() {
        let busy_pod = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "3", "memory": "3Gi"}}}]}),
        );
        let mut busy = node(
            "busy",
            json!({}),
            json!({}),
            json!({"cpu": "4", "memory": "4Gi"}),
        );
        busy.account(&busy_pod, 1);
        let idle = node(
            "idle",
            json!({}),
            json!({}),
            json!({"cpu": "4", "memory": "4Gi"}),
        );
        let nodes = vec![busy, idle];
        let p = pod(
            json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}}]}),
        );
        for start in 0..2 {
            let chosen = schedule(
                &default_profile(),
                &p,
                &nodes,
                Existing::default(),
                start,
                false,
            )
            .map(|p| p.node);
            assert_eq!(chosen.ok(), Some(1));
        }
    }

    #[test]
    fn adaptive_share_of_nodes() {
        assert_eq!(feasible_to_find(50), 50);
        assert_eq!(feasible_to_find(1000), 420);
        assert_eq!(feasible_to_find(5000), 500);
        assert_eq!(feasible_to_find(100_000), 5000);
    }
}
