//! Node lifecycle: a node whose Lease goes unrenewed for the grace period
//! turns `Ready=Unknown` and is tainted `node.kubernetes.io/unreachable`
//! (`not-ready` when it reports NotReady); pods on a node with `NoExecute`
//! taints they do not tolerate are evicted, after `tolerationSeconds` where
//! they set it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_core::placement::toleration_matches;

use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// The NoSchedule taint for each pressure condition the agent reports.
const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];
const COMPONENT: &str = "node-controller";

pub struct NodeLifecycleController {
    pub nodes: Arc<Cache<Node>>,
    pub leases: Arc<Cache<Lease>>,
    pub pods: Arc<Cache<Pod>>,
    pub cluster: Arc<dyn Cluster>,
    pub grace: Duration,
    /// The last heartbeat seen per node and when this controller saw it:
    /// judging by our own clock avoids trusting the node's.
    seen: Mutex<HashMap<String, (String, Instant)>>,
}

impl NodeLifecycleController {
    pub fn new(
        nodes: &mut Informer<Node>,
        leases: &mut Informer<Lease>,
        pods: &mut Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
        grace: Duration,
    ) -> Self {
        crate::owned::queue_self(nodes, queue.clone());
        let q = queue.clone();
        leases.on_change(move |_, new| {
            if let Some(l) = new.filter(|l| l.namespace().as_deref() == Some("kube-node-lease")) {
                q.add(l.name_any());
            }
        });
        pods.on_change(move |old, new| {
            let node = |p: Option<&Pod>| p.and_then(|p| p.spec.as_ref()?.node_name.clone());
            if let Some(n) = node(new).filter(|n| node(old).as_ref() != Some(n)) {
                queue.add(n);
            }
        });
        Self {
            nodes: nodes.cache(),
            leases: leases.cache(),
            pods: pods.cache(),
            cluster,
            grace,
            seen: Mutex::default(),
        }
    }

    /// The node's latest heartbeat: its Lease's renewTime, else its Ready
    /// condition's lastHeartbeatTime.
    fn heartbeat(&self, node: &Node) -> String {
        let lease = self
            .leases
            .get(&format!("kube-node-lease/{}", node.name_any()));
        lease
            .and_then(|l| {
                l.spec
                    .as_ref()?
                    .renew_time
                    .as_ref()
                    .map(|t| t.0.to_string())
            })
            .or_else(|| {
                ready(node).and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0.to_string()))
            })
            .unwrap_or_default()
    }

    /// How long since this controller saw the node's heartbeat change.
    fn silent_for(&self, node: &Node) -> Duration {
        let beat = self.heartbeat(node);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .entry(node.name_any())
            .or_insert_with(|| (beat.clone(), Instant::now()));
        if entry.0 != beat {
            *entry = (beat, Instant::now());
        }
        entry.1.elapsed()
    }

    async fn mark_unknown(&self, node: &Node) -> Result<(), Error> {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let held = node
            .status
            .iter()
            .flat_map(|s| s.conditions.iter().flatten());
        let mut conditions: Vec<Value> = held
            .clone()
            .map(|c| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if KUBELET_CONDITIONS.contains(&c.type_.as_str()) && c.status != "Unknown" {
                    v["status"] = json!("Unknown");
                    v["reason"] = json!("NodeStatusUnknown");
                    v["message"] = json!("Kubelet stopped posting node status.");
                    v["lastTransitionTime"] = json!(now);
                }
                v
            })
            .collect();
        for kind in KUBELET_CONDITIONS {
            if !held.clone().any(|c| c.type_ == kind) {
                conditions.push(json!({
                    "type": kind, "status": "Unknown", "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                }));
            }
        }
        let target = Target::of::<Node>(None, &node.name_any());
        self.cluster
            .merge_patch(&target, json!({"status": {"conditions": conditions}}), true)
            .await?;
        self.cluster.event(events::about(
            node,
            COMPONENT,
            false,
            "NodeNotReady",
            &format!("Node {} status is now: NodeNotReady", node.name_any()),
        ));
        Ok(())
    }

    /// Sets the condition taints the node should carry: for its readiness
    /// (NoSchedule and NoExecute), and NoSchedule for each pressure its
    /// agent reports, as upstream's `TaintNodesByCondition`.
    async fn sync_taints(&self, node: &Node, readiness: &str) -> Result<(), Error> {
        let want = match readiness {
            "Unknown" => Some(UNREACHABLE),
            "False" => Some(NOT_READY),
            _ => None,
        };
        let pressed: Vec<&str> = PRESSURE_TAINTS
            .iter()
            .filter(|(condition, _)| {
                node.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == *condition && c.status == "True")
            })
            .map(|(_, key)| *key)
            .collect();
        let managed = |key: &str| {
            key == UNREACHABLE || key == NOT_READY || PRESSURE_TAINTS.iter().any(|(_, k)| *k == key)
        };
        let wanted = |key: &str| Some(key) == want || pressed.contains(&key);
        let current: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        let mut next: Vec<Value> = current
            .iter()
            .filter(|t| !managed(&t.key) || wanted(&t.key))
            .map(|t| serde_json::to_value(t).unwrap_or_default())
            .collect();
        let missing =
            |key: &str, effect: &str| !current.iter().any(|t| t.key == key && t.effect == effect);
        if let Some(key) = want {
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            for effect in ["NoSchedule", "NoExecute"] {
                if missing(key, effect) {
                    next.push(json!({"key": key, "effect": effect, "timeAdded": now}));
                }
            }
        }
        for key in pressed {
            if missing(key, "NoSchedule") {
                next.push(json!({"key": key, "effect": "NoSchedule"}));
            }
        }
        if next.len() == current.len()
            && next
                .iter()
                .zip(&current)
                .all(|(a, b)| a["key"] == b.key.as_str() && a["effect"] == b.effect.as_str())
        {
            return Ok(());
        }
        let target = Target::of::<Node>(None, &node.name_any());
        self.cluster
            .merge_patch(&target, json!({"spec": {"taints": next}}), false)
            .await
            .map(|_| ())
    }

    /// Evicts pods that do not tolerate the node's NoExecute taints; returns
    /// when the next toleration runs out.
    async fn evict(&self, node: &Node) -> Result<Option<Duration>, Error> {
        let taints: Vec<Taint> = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.effect == "NoExecute")
            .collect();
        if taints.is_empty() {
            return Ok(None);
        }
        let now = chrono::Utc::now();
        let mut next: Option<Duration> = None;
        let name = node.name_any();
        for pod in self.pods.list() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(name.as_str())
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            match eviction_delay(&pod, &taints, now) {
                Some(d) if d.is_zero() => {
                    let target = Target::of::<Pod>(pod.namespace().as_deref(), &pod.name_any());
                    match self
                        .cluster
                        .delete(
                            &target,
                            Deletion {
                                uid: pod.uid(),
                                ..Default::default()
                            },
                        )
                        .await
                    {
                        Err(e) if !e.is_not_found() && !e.is_conflict() => return Err(e),
                        _ => {}
                    }
                    self.cluster.event(events::about(
                        &*pod,
                        "taint-eviction-controller",
                        false,
                        "TaintManagerEviction",
                        &format!(
                            "Marking for deletion Pod {}/{}",
                            pod.namespace().unwrap_or_default(),
                            pod.name_any()
                        ),
                    ));
                }
                Some(d) => next = Some(next.map_or(d, |n| n.min(d))),
                None => {}
            }
        }
        Ok(next)
    }
}

/// The node's Ready condition.
fn ready(node: &Node) -> Option<&k8s_openapi::api::core::v1::NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Whether the node's Ready condition is true.
pub(crate) fn is_ready(node: &Node) -> bool {
    ready(node).is_some_and(|c| c.status == "True")
}

/// How long until the pod must go for these NoExecute taints: zero for a
/// taint it does not tolerate, the smallest remaining `tolerationSeconds`
/// otherwise, `None` when it tolerates them all for ever.
pub fn eviction_delay(
    pod: &Pod,
    taints: &[Taint],
    now: chrono::DateTime<chrono::Utc>,
) -> Option<Duration> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let mut soonest: Option<Duration> = None;
    for taint in taints {
        let matching: Vec<_> = tolerations
            .iter()
            .filter(|t| toleration_matches(t, taint))
            .collect();
        if matching.is_empty() {
            return Some(Duration::ZERO);
        }
        // With several matching tolerations the shortest bound wins; one
        // without a bound tolerates for ever only if none is bounded.
        let Some(seconds) = matching.iter().filter_map(|t| t.toleration_seconds).min() else {
            continue;
        };
        let added = taint
            .time_added
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(now.timestamp());
        let left = (added + seconds.max(0) - now.timestamp()).max(0) as u64;
        let d = Duration::from_secs(left);
        soonest = Some(soonest.map_or(d, |s| s.min(d)));
    }
    soonest
}

#[async_trait]
impl Reconcile for NodeLifecycleController {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(key) else {
            self.seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            return Ok(Action::Done);
        };
        let silent = self.silent_for(&node);
        let mut readiness = ready(&node)
            .map(|c| c.status.clone())
            .unwrap_or_else(|| "Unknown".into());
        let mut recheck = self.grace.saturating_sub(silent) + Duration::from_millis(100);
        if silent > self.grace && readiness != "Unknown" {
            self.mark_unknown(&node).await?;
            readiness = "Unknown".into();
        }
        if readiness == "Unknown" {
            recheck = self.grace;
        }
        self.sync_taints(&node, &readiness).await?;
        if let Some(d) = self.evict(&node).await? {
            recheck = recheck.min(d + Duration::from_millis(100));
        }
        Ok(Action::RequeueAfter(recheck))
    }
}

/// The conditions the kubelet reports, which turn Unknown when it falls
/// silent; conditions others set are theirs to keep.
const KUBELET_CONDITIONS: [&str; 4] = ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"];

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tolerations: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
    }

    fn taint(key: &str, added_secs_ago: i64, now: chrono::DateTime<chrono::Utc>) -> Taint {
        let added = (now - chrono::Duration::seconds(added_secs_ago))
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        serde_json::from_value(json!({"key": key, "effect": "NoExecute", "timeAdded": added}))
            .unwrap()
    }

    #[test]
    fn eviction_delay_table() {
        let now = chrono::Utc::now();
        let t = [taint(UNREACHABLE, 10, now)];
        let secs = Duration::from_secs;
        for (tolerations, want) in [
            (json!([]), Some(Duration::ZERO)),
            (
                json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]),
                None,
            ),
            (
                json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]),
                Some(secs(290)),
            ),
            (
                json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}]),
                Some(Duration::ZERO),
            ),
            (json!([{"operator": "Exists"}]), None),
            (
                json!([{"key": NOT_READY, "operator": "Exists"}]),
                Some(Duration::ZERO),
            ),
            (
                json!([{"key": UNREACHABLE, "operator": "Equal", "value": "x", "effect": "NoExecute"}]),
                Some(Duration::ZERO),
            ),
        ] {
            assert_eq!(
                eviction_delay(&pod(tolerations.clone()), &t, now),
                want,
                "{tolerations}"
            );
        }
    }

    /// A controller on a fake cluster, with the informers of its nodes and
    /// pods.
    fn controller(
        grace: Duration,
    ) -> (
        Arc<skiff_runtime::fake::FakeCluster>,
        NodeLifecycleController,
        Informer<Node>,
        Informer<Pod>,
    ) {
        let fake = Arc::new(skiff_runtime::fake::FakeCluster::default());
        let (mut nodes, mut leases, mut pods) = (
            Informer::default(),
            Informer::default(),
            Informer::default(),
        );
        let c = NodeLifecycleController::new(
            &mut nodes,
            &mut leases,
            &mut pods,
            fake.clone(),
            Queue::new(),
            grace,
        );
        (fake, c, nodes, pods)
    }

    #[tokio::test]
    async fn a_silent_node_turns_unknown_and_its_pods_go() {
        let (fake, c, nodes, pods) = controller(Duration::ZERO);
        nodes.apply(serde_json::from_value(json!({"metadata": {"name": "n1"}, "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "NetworkUnavailable", "status": "False"}]}})).unwrap());
        pods.apply(serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d", "uid": "u"}, "spec": {"containers": [], "nodeName": "n1"}})).unwrap());
        c.reconcile("n1").await.unwrap();
        let status = &fake.bodies("patch-status")[0];
        let conditions = status["status"]["conditions"].as_array().unwrap();
        let of = |t: &str| &conditions.iter().find(|c| c["type"] == t).unwrap()["status"];
        assert_eq!(of("Ready"), "Unknown");
        // Set by someone else: kept as it was.
        assert_eq!(of("NetworkUnavailable"), "False");
        // Never posted: added as Unknown, as upstream does.
        assert_eq!(of("DiskPressure"), "Unknown");
        assert_eq!(conditions.len(), 5);
        let taints = &fake.bodies("patch")[0]["spec"]["taints"];
        assert_eq!(taints.as_array().unwrap().len(), 2);
        assert_eq!(taints[1]["key"], UNREACHABLE);
        // The next pass sees the taint and evicts the pod, which has no
        // toleration for it.
        let mut tainted: Node = (*c.nodes.get("n1").unwrap()).clone();
        tainted.spec = serde_json::from_value(json!({"taints": taints})).unwrap();
        tainted.status =
            serde_json::from_value(json!({"conditions": [{"type": "Ready", "status": "Unknown"}]}))
                .unwrap();
        nodes.apply(tainted);
        c.reconcile("n1").await.unwrap();
        assert_eq!(fake.made("delete"), vec!["pods d/p"]);
    }

    #[tokio::test]
    async fn pressure_taints_the_node_no_schedule_while_it_lasts() {
        let (fake, c, nodes, _) = controller(Duration::from_secs(3600));
        let node = |conditions: Value, taints: Value| -> Node {
            serde_json::from_value(json!({"metadata": {"name": "n1"},
                "spec": {"taints": taints}, "status": {"conditions": conditions}}))
            .unwrap()
        };
        let pressed = json!([{"type": "Ready", "status": "True"},
            {"type": "MemoryPressure", "status": "True"}, {"type": "DiskPressure", "status": "False"}]);
        let own = json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]);
        nodes.apply(node(pressed, own));
        c.reconcile("n1").await.unwrap();
        let taints = fake.bodies("patch")[0]["spec"]["taints"].clone();
        assert_eq!(
            taints,
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/memory-pressure", "effect": "NoSchedule"}])
        );
        // Relieved: the pressure's taint goes, the others stay.
        let relieved = json!([{"type": "Ready", "status": "True"},
            {"type": "MemoryPressure", "status": "False"}]);
        nodes.apply(node(relieved, taints));
        c.reconcile("n1").await.unwrap();
        assert_eq!(
            fake.bodies("patch")[1]["spec"]["taints"],
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}])
        );
    }
}
