//! InterPodAffinity: required pod affinity and anti-affinity filter nodes by
//! the pods already in the same topology domain (`topologyKey`), existing
//! pods' anti-affinity keeps newcomers away, and preferred terms score.

use std::collections::{HashMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm};
use skiff_core::selector::LabelSelector;

use crate::framework::{normalize_min_max, CycleState, Filter, PreFilter, PreScore, Score, Status};
use crate::node_info::{NodeInfo, PlacedPod};

pub struct InterPodAffinity;

const NAME: &str = "InterPodAffinity";

/// A term resolved against the cluster: the topology values (of its key)
/// where a matching pod runs.
struct Domains {
    key: String,
    values: HashMap<String, i64>,
}

#[derive(Default)]
struct State {
    affinity: Vec<(Domains, bool)>,
    anti_affinity: Vec<Domains>,
    /// Topology values that existing pods' anti-affinity forbids, by key.
    forbidden: HashMap<String, HashSet<String>>,
}

/// Preferred terms resolved against the cluster, with their weights
/// (negative for anti-affinity).
struct Preferred(Vec<(i64, Domains)>);

const PREFERRED: &str = "InterPodAffinity/preferred";

/// Whether `pod` (in `namespace` with `labels`) is selected by `term`,
/// a term owned by a pod in `owner_ns`.
fn selects(
    term: &PodAffinityTerm,
    owner_ns: &str,
    namespace: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let in_namespace = match (&term.namespaces, &term.namespace_selector) {
        (Some(list), _) if !list.is_empty() => list.iter().any(|n| n == namespace),
        (_, Some(sel)) if sel.match_labels.is_none() && sel.match_expressions.is_none() => true,
        _ => namespace == owner_ns,
    };
    let Some(sel) = &term.label_selector else {
        return false;
    };
    let Ok(sel) = LabelSelector::from_object(&serde_json::to_value(sel).unwrap_or_default()) else {
        return false;
    };
    in_namespace && sel.matches(|k| labels.get(k).map(String::as_str))
}

fn domains(term: &PodAffinityTerm, owner_ns: &str, nodes: &[NodeInfo]) -> Domains {
    let mut values = HashMap::new();
    for node in nodes {
        let Some(value) = node.label(&term.topology_key) else {
            continue;
        };
        let n = node
            .pods
            .iter()
            .filter(|p| selects(term, owner_ns, &p.namespace, &p.labels))
            .count() as i64;
        if n > 0 {
            *values.entry(value.to_owned()).or_default() += n;
        }
    }
    Domains {
        key: term.topology_key.clone(),
        values,
    }
}

fn terms(
    pod: &Pod,
) -> (
    Vec<PodAffinityTerm>,
    Vec<PodAffinityTerm>,
    Vec<(i64, PodAffinityTerm)>,
) {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
    let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
    let required = pa
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    let required_anti = anti
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default();
    let mut preferred: Vec<(i64, PodAffinityTerm)> = pa
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|w| (i64::from(w.weight), w.pod_affinity_term))
        .collect();
    preferred.extend(
        anti.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .clone()
        })
        .unwrap_or_default()
        .into_iter()
        .map(|w| (-i64::from(w.weight), w.pod_affinity_term)),
    );
    (required, required_anti, preferred)
}

impl PreFilter for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_filter(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let (required, required_anti, _) = terms(pod);
        let mut s = State::default();
        for t in &required {
            // The first pod of a group that selects itself may go anywhere.
            s.affinity
                .push((domains(t, &ns, nodes), selects(t, &ns, &ns, &labels)));
        }
        s.anti_affinity = required_anti
            .iter()
            .map(|t| domains(t, &ns, nodes))
            .collect();
        // Placed pods' anti-affinity binds this one too, when any has some.
        if state.existing.anti_affinity {
            for node in nodes.iter().filter(|n| n.with_anti_affinity > 0) {
                for placed in &node.pods {
                    forbid(&mut s, placed, node, &ns, &labels);
                }
            }
        }
        // Nothing to check: the filter lets every node through.
        if !(s.affinity.is_empty() && s.anti_affinity.is_empty() && s.forbidden.is_empty()) {
            state.put(NAME, s);
        }
    }
}

impl PreScore for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn pre_score(&self, state: &mut CycleState, pod: &Pod, nodes: &[NodeInfo]) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let (_, _, preferred) = terms(pod);
        if preferred.is_empty() {
            return;
        }
        let resolved = preferred
            .iter()
            .map(|(w, t)| (*w, domains(t, &ns, nodes)))
            .collect();
        state.put(PREFERRED, Preferred(resolved));
    }
}

fn forbid(
    s: &mut State,
    existing: &PlacedPod,
    node: &NodeInfo,
    ns: &str,
    labels: &std::collections::BTreeMap<String, String>,
) {
    for t in &existing.anti_affinity {
        if let Some(value) = node.label(&t.topology_key) {
            if selects(t, &existing.namespace, ns, labels) {
                s.forbidden
                    .entry(t.topology_key.clone())
                    .or_default()
                    .insert(value.to_owned());
            }
        }
    }
}

impl Filter for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn filter(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> Status {
        let Some(s) = state.get::<State>(NAME) else {
            return Status::Success;
        };
        for (d, self_match) in &s.affinity {
            let ok = match node.label(&d.key) {
                None => false,
                Some(v) => d.values.contains_key(v) || (d.values.is_empty() && *self_match),
            };
            if !ok {
                return Status::unschedulable("node(s) didn't match pod affinity rules");
            }
        }
        if s.anti_affinity
            .iter()
            .any(|d| node.label(&d.key).is_some_and(|v| d.values.contains_key(v)))
        {
            return Status::unschedulable("node(s) didn't match pod anti-affinity rules");
        }
        if s.forbidden
            .iter()
            .any(|(k, vs)| node.label(k).is_some_and(|v| vs.contains(v)))
        {
            return Status::unschedulable(
                "node(s) didn't satisfy existing pods anti-affinity rules",
            );
        }
        Status::Success
    }
}

impl Score for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }

    fn weight(&self) -> i64 {
        2
    }

    fn score(&self, state: &CycleState, _: &Pod, node: &NodeInfo) -> i64 {
        let Some(Preferred(preferred)) = state.get::<Preferred>(PREFERRED) else {
            return 0;
        };
        preferred
            .iter()
            .filter_map(|(w, d)| Some(w * d.values.get(node.label(&d.key)?).copied().unwrap_or(0)))
            .sum()
    }

    fn normalize(&self, scores: &mut [i64]) {
        normalize_min_max(scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::test_util::{node, pod};
    use serde_json::{json, Value};

    fn labelled(name: &str, app: &str) -> Pod {
        let mut p = pod(json!({}));
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some([("app".to_string(), app.to_string())].into());
        p
    }

    fn cluster(placed: &[(usize, Pod)]) -> Vec<NodeInfo> {
        let mut nodes: Vec<NodeInfo> = (0..3)
            .map(|i| node(&format!("n{i}"), json!({"kubernetes.io/hostname": format!("n{i}"), "zone": if i < 2 { "a" } else { "b" }}), json!({}), json!({"cpu": "4", "memory": "4Gi"})))
            .collect();
        for (i, p) in placed {
            nodes[*i].account(p, 1);
        }
        nodes
    }

    fn check(incoming: Pod, nodes: &[NodeInfo]) -> Vec<bool> {
        let mut state = CycleState::default();
        InterPodAffinity.pre_filter(&mut state, &incoming, nodes);
        nodes
            .iter()
            .map(|n| InterPodAffinity.filter(&state, &incoming, n).is_success())
            .collect()
    }

    #[test]
    fn preferred_terms_score_after_pre_score() {
        let nodes = cluster(&[(0, labelled("db", "db"))]);
        let mut incoming = pod(
            json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}}]}}}),
        );
        incoming.metadata.name = Some("web".into());
        let mut state = CycleState::default();
        InterPodAffinity.pre_filter(&mut state, &incoming, &nodes);
        let unscored: Vec<i64> = nodes
            .iter()
            .map(|n| InterPodAffinity.score(&state, &incoming, n))
            .collect();
        assert!(unscored.iter().all(|s| *s == 0), "scores need pre_score");
        InterPodAffinity.pre_score(&mut state, &incoming, &nodes);
        let scores: Vec<i64> = nodes
            .iter()
            .map(|n| InterPodAffinity.score(&state, &incoming, n))
            .collect();
        assert!(
            scores[0] > 0 && scores[0] > *scores.last().unwrap(),
            "{scores:?}"
        );
    }

    fn with_affinity(mut p: Pod, kind: &str, app: &str, key: &str) -> Pod {
        let term: Value =
            json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key});
        let affinity = json!({kind: {"requiredDuringSchedulingIgnoredDuringExecution": [term]}});
        p.spec.as_mut().unwrap().affinity = Some(serde_json::from_value(affinity).unwrap());
        p
    }

    #[test]
    fn required_terms_table() {
        let db = labelled("db", "db");
        let nodes = cluster(&[(0, db.clone())]);
        // Affinity to db by host: only n0; by zone: n0 and n1.
        assert_eq!(
            check(
                with_affinity(
                    labelled("w", "web"),
                    "podAffinity",
                    "db",
                    "kubernetes.io/hostname"
                ),
                &nodes
            ),
            [true, false, false]
        );
        assert_eq!(
            check(
                with_affinity(labelled("w", "web"), "podAffinity", "db", "zone"),
                &nodes
            ),
            [true, true, false]
        );
        // Anti-affinity to db by zone: only n2.
        assert_eq!(
            check(
                with_affinity(labelled("w", "web"), "podAntiAffinity", "db", "zone"),
                &nodes
            ),
            [false, false, true]
        );
        // The first pod of a self-affine group goes anywhere.
        assert_eq!(
            check(
                with_affinity(labelled("w", "web"), "podAffinity", "web", "zone"),
                &nodes
            ),
            [true, true, true]
        );
        // An existing pod's anti-affinity keeps matching newcomers away.
        let guarded = with_affinity(
            labelled("g", "guard"),
            "podAntiAffinity",
            "web",
            "kubernetes.io/hostname",
        );
        assert_eq!(
            check(labelled("w", "web"), &cluster(&[(1, guarded)])),
            [true, false, true]
        );
        // Replicas with anti-affinity to themselves: one per host.
        let replica = |n: &str| {
            with_affinity(
                labelled(n, "web"),
                "podAntiAffinity",
                "web",
                "kubernetes.io/hostname",
            )
        };
        assert_eq!(
            check(
                replica("r3"),
                &cluster(&[(0, replica("r1")), (2, replica("r2"))])
            ),
            [false, true, false]
        );
    }
}
