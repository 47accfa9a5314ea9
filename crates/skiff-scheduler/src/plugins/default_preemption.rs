//! DefaultPreemption: when a pod fits nowhere, find the node where evicting
//! the fewest, least important lower-priority pods makes it fit.

use std::cmp::Reverse;

use k8s_openapi::api::core::v1::Pod;

use crate::framework::{fits, CycleState, Filter, Nomination, PostFilter, Status};
use crate::node_info::NodeInfo;

pub struct DefaultPreemption;

impl PostFilter for DefaultPreemption {
    fn name(&self) -> &'static str {
        "DefaultPreemption"
    }

    fn post_filter(
        &self,
        state: &CycleState,
        pod: &Pod,
        nodes: &[NodeInfo],
        filters: &[Box<dyn Filter>],
        statuses: &[Status],
    ) -> Option<Nomination> {
        let spec = pod.spec.as_ref()?;
        if spec.preemption_policy.as_deref() == Some("Never") {
            return None;
        }
        let priority = spec.priority.unwrap_or(0);
        // The best candidate has the least important most important
        // victim, then the lowest priority sum, then the fewest victims.
        let mut best: Option<((i32, i64, usize), Nomination)> = None;
        for (i, node) in nodes.iter().enumerate() {
            // Evicting pods cannot fix an unresolvable verdict.
            if !matches!(statuses.get(i), Some(Status::Unschedulable(_))) {
                continue;
            }
            let mut trial = node.clone();
            let mut removed = Vec::new();
            let mut j = 0;
            while j < trial.pods.len() {
                if trial.pods[j].priority < priority && !trial.pods[j].terminating {
                    removed.push(trial.remove(j));
                } else {
                    j += 1;
                }
            }
            if removed.is_empty() || !fits(filters, state, pod, &trial).is_success() {
                continue;
            }
            // Reprieve as many as still let the pod fit, most important first.
            removed.sort_by_key(|p| Reverse(p.priority));
            let mut victims = Vec::new();
            for p in removed {
                trial.restore(p);
                if !fits(filters, state, pod, &trial).is_success() {
                    victims.push(trial.remove(trial.pods.len() - 1));
                }
            }
            let rank = (
                victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
                victims.iter().map(|v| i64::from(v.priority)).sum(),
                victims.len(),
            );
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, Nomination { node: i, victims }));
            }
        }
        best.map(|(_, n)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use crate::plugins::NodeResourcesFit;
    use serde_json::json;

    fn sized(name: &str, cpu: &str, priority: i32) -> Pod {
        let mut p = pod(
            json!({"priority": priority, "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}),
        );
        p.metadata.name = Some(name.into());
        p
    }

    fn preempt(incoming: &Pod, nodes: &[NodeInfo]) -> Option<(usize, Vec<String>)> {
        let filters: Vec<Box<dyn Filter>> = vec![Box::new(NodeResourcesFit)];
        let state = CycleState::for_pod(incoming);
        let statuses: Vec<Status> = nodes
            .iter()
            .map(|n| fits(&filters, &state, incoming, n))
            .collect();
        let n = DefaultPreemption.post_filter(&state, incoming, nodes, &filters, &statuses)?;
        let mut names: Vec<String> = n.victims.iter().map(|v| v.name.clone()).collect();
        names.sort();
        Some((n.node, names))
    }

    fn full(name: &str, pods: &[(&str, &str, i32)]) -> NodeInfo {
        let mut n = node(
            name,
            json!({}),
            json!({}),
            json!({"cpu": "2", "memory": "8Gi", "pods": "110"}),
        );
        for (p, cpu, prio) in pods {
            n.account(&sized(p, cpu, *prio), 1);
        }
        n
    }

    #[test]
    fn preemption_table() {
        let big = sized("big", "1", 100);
        // The fewest, least important victims win.
        let nodes = [
            full("a", &[("a1", "1", 50), ("a2", "1", 30)]),
            full(
                "b",
                &[("b1", "500m", 10), ("b2", "500m", 10), ("b3", "1", 10)],
            ),
        ];
        assert_eq!(preempt(&big, &nodes), Some((1, vec!["b3".into()])));
        // Equal or higher priorities are never victims.
        let nodes = [full("a", &[("a1", "2", 100)])];
        assert_eq!(preempt(&big, &nodes), None);
        // A pod that may not preempt does not.
        let mut polite = big.clone();
        polite.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        let nodes = [full("a", &[("a1", "2", 0)])];
        assert_eq!(preempt(&polite, &nodes), None);
        // Too big for any node even when empty: nothing to gain.
        let huge = sized("huge", "3", 100);
        assert_eq!(preempt(&huge, &nodes), None);
    }
}
