//! The DaemonSet controller: one pod on every node the template may run on
//! (nodeSelector, required node affinity, taints against the template's
//! tolerations plus the ones upstream adds to daemons), including nodes
//! that join later; rolling updates within maxUnavailable.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_core::placement::{node_selected, tolerated};

use crate::owned;
use crate::pods::{self, PodControl};
use crate::revisions;
use crate::rollout;
use crate::status::omit_zero;
use skiff_runtime::api::{Cluster, Error, Target};
use skiff_runtime::cache::{key_of, Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::expectations::Expectations;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "daemonset-controller";
const HASH_LABEL: &str = "controller-revision-hash";

/// Tolerations every daemon pod gets, as upstream adds them.
fn daemon_tolerations(host_network: bool) -> Vec<Value> {
    let mut t = vec![
        json!({"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}),
        json!({"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}),
    ];
    if host_network {
        t.push(json!({"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}));
    }
    t
}

pub struct DaemonSetController {
    pub sets: Arc<Cache<DaemonSet>>,
    pub pods: Arc<Cache<Pod>>,
    pub nodes: Arc<Cache<Node>>,
    pub revisions: Arc<Cache<ControllerRevision>>,
    pub cluster: Arc<dyn Cluster>,
    pub expectations: Arc<Expectations>,
}

impl DaemonSetController {
    pub fn new(
        sets: &mut Informer<DaemonSet>,
        pods: &mut Informer<Pod>,
        nodes: &mut Informer<Node>,
        revisions: &mut Informer<ControllerRevision>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let expectations = Arc::new(Expectations::default());
        owned::queue_self(sets, queue.clone());
        owned::track(
            pods,
            "DaemonSet",
            queue.clone(),
            Some(expectations.clone()),
            |_| Vec::new(),
        );
        owned::track(revisions, "DaemonSet", queue.clone(), None, |_| Vec::new());
        let cache = sets.cache();
        nodes.on_change(move |old, new| {
            let relevant = |n: &Node| {
                (
                    n.labels().clone(),
                    n.spec.as_ref().and_then(|s| s.taints.clone()),
                )
            };
            if old
                .zip(new)
                .is_some_and(|(a, b)| relevant(a) == relevant(b))
            {
                return;
            }
            for ds in cache.list() {
                queue.add(key_of(&*ds));
            }
        });
        Self {
            sets: sets.cache(),
            pods: pods.cache(),
            nodes: nodes.cache(),
            revisions: revisions.cache(),
            cluster,
            expectations,
        }
    }
}

/// The node a daemon pod is for: where it is bound, else the node its
/// affinity names.
fn target_node(p: &Pod) -> Option<String> {
    let spec = p.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// Whether the daemon should run on the node.
pub fn should_run(ds: &DaemonSet, node: &Node) -> bool {
    let Some(spec) = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref()) else {
        return false;
    };
    let mut tolerations: Vec<Toleration> = spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(
        daemon_tolerations(spec.host_network == Some(true))
            .into_iter()
            .filter_map(|t| serde_json::from_value(t).ok()),
    );
    let taints_ok = node
        .spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(&tolerations, t));
    node_selected(spec, node) && taints_ok
}

#[async_trait]
impl Reconcile for DaemonSetController {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(ds) = self.sets.get(key) else {
            self.expectations.remove(key);
            return Ok(Action::Done);
        };
        if ds.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = ds.spec.clone().unwrap_or_default();
        let labels = serde_json::to_value(&spec.selector.match_labels).unwrap_or_default();
        let collisions = ds.status.as_ref().and_then(|s| s.collision_count);
        let (_, hash) = revisions::ensure(
            &*self.cluster,
            &self.revisions,
            &*ds,
            Some(&spec.template),
            labels,
            collisions,
        )
        .await?;
        let uid = ds.uid().unwrap_or_default();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for p in self.pods.list_in(&ds.namespace().unwrap_or_default()) {
            if pods::controlled_by(&p.metadata, &uid) && p.metadata.deletion_timestamp.is_none() {
                if let Some(n) = target_node(&p) {
                    by_node.entry(n).or_default().push(p);
                }
            }
        }
        let nodes = self.nodes.list();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = chrono::Utc::now();
        let mut create: Vec<String> = Vec::new();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let (mut desired, mut scheduled, mut misscheduled, mut ready, mut updated, mut available) =
            (0, 0, 0, 0, 0, 0);
        let mut stale: Vec<(Arc<Pod>, bool)> = Vec::new();
        for node in &nodes {
            let name = node.name_any();
            let mut here = by_node.remove(&name).unwrap_or_default();
            if should_run(&ds, node) {
                desired += 1;
                // Failed pods are replaced.
                let (failed, mut live): (Vec<_>, Vec<_>) =
                    here.into_iter().partition(|p| pods::phase(p) == "Failed");
                delete.extend(failed);
                if live.is_empty() {
                    create.push(name);
                    continue;
                }
                scheduled += 1;
                live.sort_by_key(|p| {
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond())
                        .unwrap_or(0)
                });
                delete.extend(live.drain(1..));
                let p = &live[0];
                let is_available = pods::is_available(p, min_ready, now);
                ready += i32::from(pods::is_ready(p));
                available += i32::from(is_available);
                if p.labels().get(HASH_LABEL) == Some(&hash) {
                    updated += 1;
                } else {
                    stale.push((p.clone(), is_available));
                }
            } else {
                misscheduled += i32::from(!here.is_empty());
                delete.append(&mut here);
            }
        }
        // Pods for nodes that no longer exist.
        delete.extend(by_node.into_values().flatten());
        // Rolling update: unavailable stale pods go at once; available ones
        // only within maxUnavailable.
        let rolling = spec
            .update_strategy
            .as_ref()
            .is_none_or(|u| u.type_.as_deref() != Some("OnDelete"));
        if rolling {
            let max_unavailable = rollout::scaled(
                spec.update_strategy
                    .as_ref()
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.as_ref()),
                desired,
                false,
                "1",
            )
            .max(1);
            let mut budget = max_unavailable - (desired - available);
            for (p, is_available) in stale {
                if !is_available {
                    delete.push(p);
                } else if budget > 0 {
                    budget -= 1;
                    delete.push(p);
                }
            }
        }
        if self.expectations.satisfied(key) && (!create.is_empty() || !delete.is_empty()) {
            self.expectations.expect(key, create.len(), delete.len());
            let ns = ds.namespace().unwrap_or_default();
            let control = PodControl {
                cluster: &*self.cluster,
                expectations: &self.expectations,
                key,
                owner: &*ds,
                component: COMPONENT,
            };
            let mut failed = None;
            for node in &create {
                let mut pod =
                    pods::from_template(Some(&spec.template), &ns, pods::controller_ref(&*ds));
                pod["metadata"]["generateName"] = json!(format!("{}-", ds.name_any()));
                pod["metadata"]["labels"][HASH_LABEL] = json!(hash);
                pod["metadata"]["labels"]["pod-template-generation"] =
                    json!(ds.metadata.generation.unwrap_or(1).to_string());
                let mut tolerations: Vec<Value> = pod["spec"]["tolerations"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                tolerations.extend(daemon_tolerations(pod["spec"]["hostNetwork"] == true));
                pod["spec"]["tolerations"] = json!(tolerations);
                pod["spec"]["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"] = json!({"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]});
                if let Err(e) = control.create(pod).await {
                    failed.get_or_insert(e);
                }
            }
            control.delete_all(&delete).await?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
        let status = json!({
            "desiredNumberScheduled": desired, "currentNumberScheduled": scheduled, "numberMisscheduled": misscheduled,
            "numberReady": ready, "updatedNumberScheduled": omit_zero(updated),
            "numberAvailable": omit_zero(available), "numberUnavailable": omit_zero(desired - available),
            "observedGeneration": ds.metadata.generation,
        });
        let old = serde_json::to_value(&ds.status).unwrap_or_default();
        let changed = status
            .as_object()
            .into_iter()
            .flatten()
            .any(|(k, v)| old[k].as_i64().unwrap_or(0) != v.as_i64().unwrap_or(0));
        if changed {
            let target = Target::of::<DaemonSet>(ds.namespace().as_deref(), &ds.name_any());
            self.cluster
                .merge_patch(&target, json!({"status": status}), true)
                .await?;
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn node(name: &str, labels: Value, taints: Value) -> Node {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
        )
        .unwrap()
    }

    fn ds(template_spec: Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "d", "uid": "ds", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "template": {"metadata": {"labels": {"app": "agent"}}, "spec": template_spec}},
        }))
        .unwrap()
    }

    #[test]
    fn should_run_table() {
        let plain = node("a", json!({"disk": "ssd"}), json!([]));
        let gpu = node(
            "b",
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        let cordoned = node(
            "c",
            json!({}),
            json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        );
        let unreachable = node(
            "d",
            json!({}),
            json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
        );
        let soft = node(
            "e",
            json!({}),
            json!([{"key": "x", "effect": "PreferNoSchedule"}]),
        );
        let base = json!({"containers": [{"name": "c"}]});
        let tolerant = json!({"containers": [{"name": "c"}], "tolerations": [{"key": "dedicated", "operator": "Exists"}]});
        let picky = json!({"containers": [{"name": "c"}], "nodeSelector": {"disk": "ssd"}});
        for (spec, n, want) in [
            (&base, &plain, true),
            (&base, &gpu, false),
            (&tolerant, &gpu, true),
            (&base, &cordoned, true),
            (&base, &unreachable, true),
            (&base, &soft, true),
            (&picky, &plain, true),
            (&picky, &soft, false),
        ] {
            assert_eq!(
                should_run(&ds(spec.clone()), n),
                want,
                "{spec} on {}",
                n.name_any()
            );
        }
    }

    #[tokio::test]
    async fn one_pod_per_eligible_node_pinned_by_affinity() {
        let fake = Arc::new(FakeCluster::default());
        let (mut sets, mut pods, mut nodes, mut revs) = (
            Informer::default(),
            Informer::default(),
            Informer::default(),
            Informer::default(),
        );
        let c = DaemonSetController::new(
            &mut sets,
            &mut pods,
            &mut nodes,
            &mut revs,
            fake.clone(),
            Queue::new(),
        );
        nodes.apply(node("a", json!({}), json!([])));
        nodes.apply(node(
            "b",
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        ));
        sets.apply(ds(json!({"containers": [{"name": "c"}]})));
        c.reconcile("d/agent").await.unwrap();
        let created: Vec<Value> = fake
            .bodies("create")
            .into_iter()
            .filter(|o| o["kind"] == "Pod")
            .collect();
        assert_eq!(created.len(), 1);
        let fields = &created[0]["spec"]["affinity"]["nodeAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchFields"][0];
        assert_eq!(fields["values"][0], "a");
        assert!(created[0]["spec"]["tolerations"].as_array().unwrap().len() >= 6);
        let hash = created[0]["metadata"]["labels"][HASH_LABEL]
            .as_str()
            .unwrap();
        assert!(fake
            .made("create")
            .contains(&format!("controllerrevisions d/agent-{hash}")));
        // A stale cache does not make a second pod for node a.
        c.reconcile("d/agent").await.unwrap();
        assert_eq!(
            fake.bodies("create")
                .into_iter()
                .filter(|o| o["kind"] == "Pod")
                .count(),
            1
        );
    }
}
