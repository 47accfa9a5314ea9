//! The DaemonSet controller: one pod on every node the template may run on
//! (nodeSelector, required node affinity, taints against the template's
//! tolerations plus the ones upstream adds to daemons), including nodes
//! that join later; rolling updates within maxUnavailable, or surging
//! within maxSurge.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
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

/// `(maxSurge, maxUnavailable)` of a rolling update over `desired` nodes,
/// percentages rounded up as upstream's; when both are zero, one node may
/// be unavailable.
fn limits(rolling: Option<&RollingUpdateDaemonSet>, desired: i32) -> (i32, i32) {
    let scaled = |v: Option<&IntOrString>, default: i32| {
        v.map_or(default, |v| rollout::scaled(Some(v), desired, true, "0"))
    };
    let surge = scaled(rolling.and_then(|r| r.max_surge.as_ref()), 0);
    let unavailable = scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), 1);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
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
        let set = ds.name_any();
        let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        // The revisions the set's pods run, those being deleted too.
        let mut running: HashSet<String> = HashSet::new();
        for p in self.pods.list_in(&ds.namespace().unwrap_or_default()) {
            if !pods::controlled_by(&p.metadata, &uid) {
                continue;
            }
            if let Some(h) = p.labels().get(HASH_LABEL) {
                running.insert(format!("{set}-{h}"));
            }
            if p.metadata.deletion_timestamp.is_none() {
                if let Some(n) = target_node(&p) {
                    by_node.entry(n).or_default().push(p);
                }
            }
        }
        let nodes = self.nodes.list();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let now = chrono::Utc::now();
        let mut delete: Vec<Arc<Pod>> = Vec::new();
        let mut misscheduled = 0;
        // The nodes that should run the daemon, each with its live pods,
        // oldest first.
        let mut eligible: Vec<(String, Vec<Arc<Pod>>)> = Vec::new();
        for node in &nodes {
            let name = node.name_any();
            let mut here = by_node.remove(&name).unwrap_or_default();
            if should_run(&ds, node) {
                // Failed pods are replaced.
                let (failed, mut live): (Vec<_>, Vec<_>) =
                    here.into_iter().partition(|p| pods::phase(p) == "Failed");
                delete.extend(failed);
                live.sort_by_key(|p| {
                    p.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0.as_millisecond())
                        .unwrap_or(0)
                });
                eligible.push((name, live));
            } else {
                misscheduled += i32::from(!here.is_empty());
                delete.append(&mut here);
            }
        }
        // Pods for nodes that no longer exist.
        delete.extend(by_node.into_values().flatten());
        let desired = eligible.len() as i32;
        let strategy = spec.update_strategy.as_ref();
        let rolling = strategy.is_none_or(|u| u.type_.as_deref() != Some("OnDelete"));
        let (max_surge, max_unavailable) = if rolling {
            limits(strategy.and_then(|u| u.rolling_update.as_ref()), desired)
        } else {
            (0, 0)
        };
        let surge = max_surge > 0;
        let is_new = |p: &Pod| p.labels().get(HASH_LABEL) == Some(&hash);
        let is_available = |p: &Pod| pods::is_available(p, min_ready, now);
        let mut create: Vec<String> = Vec::new();
        let (mut scheduled, mut ready, mut updated, mut available) = (0, 0, 0, 0);
        // The rolling update, as upstream's: nodes whose stale pod is
        // unavailable are replaced at once; the others (candidates) only
        // within maxUnavailable (deleting first) or maxSurge (starting the
        // new pod beside the old one first).
        let (mut unavailable, mut surging) = (0, 0);
        let mut replace: Vec<(String, Arc<Pod>)> = Vec::new();
        let mut candidates: Vec<(String, Arc<Pod>)> = Vec::new();
        for (name, live) in eligible {
            let Some(first) = live.first() else {
                create.push(name);
                unavailable += 1;
                continue;
            };
            scheduled += 1;
            ready += i32::from(pods::is_ready(first));
            available += i32::from(is_available(first));
            updated += i32::from(is_new(first));
            let (new, old): (Vec<_>, Vec<_>) = live.iter().partition(|p| is_new(p));
            // One pod per node; while surging, an old one beside a new one
            // until the new one is ready.
            if surge {
                delete.extend(new.iter().skip(1).map(|p| (*p).clone()));
                delete.extend(old.iter().skip(1).map(|p| (*p).clone()));
                if let (Some(n), Some(o)) = (new.first(), old.first()) {
                    if !pods::is_ready(o) || pods::is_ready(n) {
                        delete.push((*o).clone());
                    }
                }
            } else {
                delete.extend(live.iter().skip(1).cloned());
            }
            if !rolling {
                continue;
            }
            if new.len() > 1 || old.len() > 1 {
                // Left to the pruning above; counts as in progress.
                *(if surge {
                    &mut surging
                } else {
                    &mut unavailable
                }) += 1;
                continue;
            }
            match (new.first(), old.first()) {
                (Some(n), None) => unavailable += i32::from(!surge && !is_available(n)),
                (None, Some(o)) if !is_available(o) => replace.push((name, (*o).clone())),
                (None, Some(o)) => candidates.push((name, (*o).clone())),
                (Some(n), Some(o)) if surge => {
                    if is_available(n) {
                        delete.push((*o).clone());
                    } else {
                        surging += 1;
                    }
                }
                _ => unavailable += 1,
            }
        }
        let room = if surge {
            max_surge - surging
        } else {
            max_unavailable - unavailable
        };
        candidates.truncate(room.max(0) as usize);
        for (node, old) in replace.into_iter().chain(candidates) {
            if surge {
                create.push(node);
            } else {
                delete.push(old);
            }
        }
        delete.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        delete.dedup_by(|a, b| a.metadata.name == b.metadata.name);
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
        // History beyond revisionHistoryLimit goes, as upstream's
        // cleanupHistory: old revisions count towards the limit, but those
        // a pod still runs are kept.
        let current = format!("{set}-{hash}");
        let old: Vec<_> = revisions::history(&self.revisions, &*ds)
            .into_iter()
            .filter(|r| r.name_any() != current)
            .collect();
        let excess = old
            .len()
            .saturating_sub(revisions::limit(spec.revision_history_limit));
        let unused: Vec<_> = old
            .into_iter()
            .filter(|r| !running.contains(&r.name_any()))
            .collect();
        revisions::delete_oldest(&*self.cluster, &unused, excess).await?;
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

    /// A created daemon pod as the cluster shows it later: running, ready
    /// or not, created at `second`.
    fn running(created: &Value, ready: bool, second: u32) -> Pod {
        let mut p = created.clone();
        p["metadata"]["creationTimestamp"] = json!(format!("2026-01-01T00:00:{second:02}Z"));
        p["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready",
            "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2026-01-01T00:01:00Z"}]});
        serde_json::from_value(p).unwrap()
    }

    /// A controller on a fake cluster, with the informers it follows.
    fn setup() -> (
        Arc<FakeCluster>,
        Informer<DaemonSet>,
        Informer<Pod>,
        Informer<Node>,
        DaemonSetController,
    ) {
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
        (fake, sets, pods, nodes, c)
    }

    /// A controller over nodes a, b and c, each running an available pod
    /// of the first template, the set then given a second template and
    /// `rolling_update`.
    async fn rolled_out(
        rolling_update: Value,
    ) -> (Arc<FakeCluster>, Informer<Pod>, DaemonSetController) {
        let (fake, sets, pods, nodes, c) = setup();
        for n in ["a", "b", "c"] {
            nodes.apply(node(n, json!({}), json!([])));
        }
        sets.apply(ds(
            json!({"containers": [{"name": "c", "image": "busybox"}]}),
        ));
        c.reconcile("d/agent").await.unwrap();
        for p in fake.bodies("create").iter().filter(|o| o["kind"] == "Pod") {
            pods.apply(running(p, true, 0));
        }
        let mut next = ds(json!({"containers": [{"name": "c", "image": "busybox:2"}]}));
        next.metadata.generation = Some(2);
        next.spec.as_mut().unwrap().update_strategy = serde_json::from_value(
            json!({"type": "RollingUpdate", "rollingUpdate": rolling_update}),
        )
        .unwrap();
        sets.apply(next);
        fake.clear();
        (fake, pods, c)
    }

    fn pods_made(fake: &FakeCluster, verb: &str) -> Vec<Value> {
        fake.bodies(verb)
            .into_iter()
            .filter(|o| verb != "create" || o["kind"] == "Pod")
            .collect()
    }

    #[tokio::test]
    async fn a_rolling_update_deletes_as_many_as_max_unavailable_rounded_up() {
        for (max_unavailable, want) in [(json!(1), 1), (json!("50%"), 2), (json!("100%"), 3)] {
            let (fake, _, c) =
                rolled_out(json!({"maxUnavailable": max_unavailable, "maxSurge": 0})).await;
            c.reconcile("d/agent").await.unwrap();
            assert_eq!(fake.made("delete").len(), want, "{max_unavailable}");
            assert!(pods_made(&fake, "create").is_empty());
        }
    }

    #[tokio::test]
    async fn a_surging_update_starts_each_new_pod_before_stopping_the_old() {
        let (fake, pods, c) = rolled_out(json!({"maxUnavailable": 0, "maxSurge": 1})).await;
        c.reconcile("d/agent").await.unwrap();
        // One new pod beside an old one; nothing stops yet.
        let created = pods_made(&fake, "create");
        assert_eq!(created.len(), 1);
        assert!(fake.made("delete").is_empty());
        let node = target_node(&running(&created[0], false, 1)).unwrap();
        let old_there: Vec<String> = pods
            .cache()
            .list()
            .iter()
            .filter(|p| target_node(p).as_deref() == Some(&*node))
            .map(|p| format!("pods d/{}", p.name_any()))
            .collect();
        // While the new pod is not ready, the old one keeps running.
        pods.apply(running(&created[0], false, 1));
        fake.clear();
        c.reconcile("d/agent").await.unwrap();
        assert!(pods_made(&fake, "create").is_empty());
        assert!(fake.made("delete").is_empty());
        // Once it is, the old one goes and the next node surges.
        pods.apply(running(&created[0], true, 1));
        fake.clear();
        c.reconcile("d/agent").await.unwrap();
        assert_eq!(fake.made("delete"), old_there);
        let next = pods_made(&fake, "create");
        assert_eq!(next.len(), 1);
        assert_ne!(target_node(&running(&next[0], false, 2)).unwrap(), node);
    }

    #[tokio::test]
    async fn history_beyond_the_limit_goes_but_not_what_a_pod_runs() {
        use crate::revisions::testing::{deleted, revision};
        let (fake, pods, c) = rolled_out(json!({"maxUnavailable": 1})).await;
        let mut set = (*c.sets.get("d/agent").unwrap()).clone();
        set.spec.as_mut().unwrap().revision_history_limit = Some(1);
        c.sets.insert(set);
        for (n, hash) in ["a", "b", "c"].iter().enumerate() {
            let name = format!("agent-{hash}");
            c.revisions
                .insert(revision("DaemonSet", "agent", "ds", &name, n as i64 + 1));
        }
        let mut pod = (*pods.cache().list()[0]).clone();
        pod.labels_mut().insert(HASH_LABEL.into(), "b".into());
        pods.apply(pod);
        c.reconcile("d/agent").await.unwrap();
        // Upstream's DaemonSets count b, which a pod runs, towards the
        // limit but keep it.
        assert_eq!(
            deleted(&fake),
            [
                "controllerrevisions d/agent-a",
                "controllerrevisions d/agent-c"
            ]
        );
    }

    #[tokio::test]
    async fn one_pod_per_eligible_node_pinned_by_affinity() {
        let (fake, sets, _, nodes, c) = setup();
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
