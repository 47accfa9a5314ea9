//! The ReplicaSet controller: keeps `replicas` active pods matching the
//! selector, adopting orphans and releasing pods that no longer match.
//! ReplicationControllers (core/v1, a selector of equalities) are kept by
//! the same loop, as upstream's controller converts them.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::owned;
use crate::pods::{self, controller_of, PodControl};
use crate::status::omit_zero;
use skiff_runtime::api::{Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::expectations::Expectations;
use skiff_runtime::queue::Queue;

/// At most this many pods are created or deleted per reconcile, as upstream.
const BURST: usize = 500;

/// What the loop needs of a set of replicas.
pub trait Replicated: skiff_runtime::cache::Object + k8s_openapi::Resource {
    /// The controller's name in events and logs.
    const COMPONENT: &'static str;
    /// The loop's name.
    const LOOP: &'static str;
    /// Whether its status counts the pods being deleted
    /// (`terminatingReplicas`: a ReplicaSet's does, since 1.35 by default).
    const COUNTS_TERMINATING: bool;
    fn selector(&self) -> Option<LabelSelector>;
    fn replicas(&self) -> i32;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    fn status_value(&self) -> Value;
}

/// The accessors both kinds' specs and statuses share.
macro_rules! same_spec {
    () => {
        fn replicas(&self) -> i32 {
            self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
        }
        fn template(&self) -> Option<&PodTemplateSpec> {
            self.spec.as_ref().and_then(|s| s.template.as_ref())
        }
        fn min_ready_seconds(&self) -> i32 {
            self.spec
                .as_ref()
                .and_then(|s| s.min_ready_seconds)
                .unwrap_or(0)
        }
        fn status_value(&self) -> Value {
            serde_json::to_value(self.status.clone().unwrap_or_default()).unwrap_or_default()
        }
    };
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";
    const LOOP: &'static str = "replicaset";
    const COUNTS_TERMINATING: bool = true;
    fn selector(&self) -> Option<LabelSelector> {
        self.spec.as_ref().map(|s| s.selector.clone())
    }
    same_spec!();
}

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";
    const LOOP: &'static str = "replicationcontroller";
    const COUNTS_TERMINATING: bool = false;
    /// Equalities only; an empty selector selects nothing.
    fn selector(&self) -> Option<LabelSelector> {
        let labels = self.spec.as_ref()?.selector.clone()?;
        (!labels.is_empty()).then(|| LabelSelector {
            match_labels: Some(labels),
            ..Default::default()
        })
    }
    same_spec!();
}

pub struct ReplicaSetController<K: Replicated = ReplicaSet> {
    pub sets: Arc<Cache<K>>,
    pub pods: Arc<Cache<Pod>>,
    pub cluster: Arc<dyn Cluster>,
    pub expectations: Arc<Expectations>,
}

impl<K: Replicated> ReplicaSetController<K> {
    /// Builds the controller and routes the informers' changes to `queue`.
    pub fn new(
        sets: &mut Informer<K>,
        pods: &mut Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let expectations = Arc::new(Expectations::default());
        owned::queue_self(sets, queue.clone());
        let cache = sets.cache();
        owned::track(
            pods,
            <K as k8s_openapi::Resource>::KIND,
            queue,
            Some(expectations.clone()),
            move |pod: &Pod| matching(&cache, pod),
        );
        Self {
            sets: sets.cache(),
            pods: pods.cache(),
            cluster,
            expectations,
        }
    }

    async fn adopt_or_release(&self, rs: &K, pod: &Pod, adopt: bool) -> Result<(), Error> {
        let mut refs: Vec<Value> = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| r.uid != rs.uid().unwrap_or_default())
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        if adopt {
            refs.push(pods::controller_ref(rs));
        }
        let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.uid()}});
        let target = Target::of::<Pod>(pod.namespace().as_deref(), &pod.name_any());
        match self.cluster.merge_patch(&target, patch, false).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    fn control<'a>(&'a self, key: &'a str, rs: &'a K) -> PodControl<'a, K> {
        PodControl {
            cluster: &*self.cluster,
            expectations: &self.expectations,
            key,
            owner: rs,
            component: K::COMPONENT,
        }
    }

    /// Creates pods in slow-start batches (1, 2, 4, …), stopping at the
    /// first failure.
    async fn create_pods(&self, key: &str, rs: &K, count: usize) -> Result<(), Error> {
        self.expectations.expect(key, count, 0);
        let ns = rs.namespace().unwrap_or_default();
        let template = rs.template();
        let mut pod = pods::from_template(template, &ns, pods::controller_ref(rs));
        pod["metadata"]["generateName"] = json!(format!("{}-", rs.name_any()));
        let control = self.control(key, rs);
        let mut left = count;
        for batch in pods::slow_start_batches(count) {
            let results = join_all((0..batch).map(|_| control.create(pod.clone()))).await;
            left -= batch;
            if let Some(e) = results.into_iter().find_map(Result::err) {
                for _ in 0..left {
                    self.expectations.creation_observed(key);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Deletes the `count` pods upstream would pick first.
    async fn delete_pods(
        &self,
        key: &str,
        rs: &K,
        mut active: Vec<Arc<Pod>>,
        count: usize,
    ) -> Result<(), Error> {
        active.sort_by_key(|p| pods::deletion_rank(p));
        self.expectations.expect(key, 0, count);
        self.control(key, rs).delete_all(&active[..count]).await
    }
}

/// The sets in the pod's namespace whose selector matches it.
fn matching<K: Replicated>(sets: &Cache<K>, pod: &Pod) -> Vec<String> {
    let ns = pod.namespace().unwrap_or_default();
    sets.list_in(&ns)
        .iter()
        .filter(|rs| pods::selects(rs.selector().as_ref(), &pod.metadata))
        .map(|rs| format!("{ns}/{}", rs.name_any()))
        .collect()
}

#[async_trait]
impl<K: Replicated> Reconcile for ReplicaSetController<K> {
    fn name(&self) -> &'static str {
        K::LOOP
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(rs) = self.sets.get(key) else {
            self.expectations.remove(key);
            return Ok(Action::Done);
        };
        let uid = rs.uid().unwrap_or_default();
        let selector = rs.selector();
        let satisfied = self.expectations.satisfied(key);
        let deleting = rs.meta().deletion_timestamp.is_some();
        let mut owned = Vec::new();
        for pod in self.pods.list_in(&rs.namespace().unwrap_or_default()) {
            let matches = pods::selects(selector.as_ref(), &pod.metadata);
            match controller_of(&pod.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(pod);
                    } else {
                        self.adopt_or_release(&rs, &pod, false).await?;
                    }
                }
                None if matches && !deleting && pod.metadata.deletion_timestamp.is_none() => {
                    self.adopt_or_release(&rs, &pod, true).await?;
                    owned.push(pod);
                }
                _ => {}
            }
        }
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        let want = rs.replicas().max(0) as usize;
        let mut result = Ok(());
        if satisfied && !deleting {
            if active.len() < want {
                result = self
                    .create_pods(key, &rs, (want - active.len()).min(BURST))
                    .await;
            } else if active.len() > want {
                let n = (active.len() - want).min(BURST);
                result = self.delete_pods(key, &rs, active.clone(), n).await;
            }
        }
        let now = chrono::Utc::now();
        let min_ready = rs.min_ready_seconds();
        let ready = active.iter().filter(|p| pods::is_ready(p)).count();
        let available = active
            .iter()
            .filter(|p| pods::is_available(p, min_ready, now))
            .count();
        let template_labels = rs
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let labelled = active
            .iter()
            .filter(|p| {
                template_labels
                    .iter()
                    .all(|(k, v)| p.labels().get(k) == Some(v))
            })
            .count();
        let terminating = owned.iter().filter(|p| pods::is_terminating(p)).count();
        let status = json!({
            "replicas": active.len(), "fullyLabeledReplicas": omit_zero(labelled),
            "readyReplicas": omit_zero(ready), "availableReplicas": omit_zero(available),
            "terminatingReplicas": K::COUNTS_TERMINATING.then_some(terminating),
            "observedGeneration": rs.meta().generation,
        });
        let current = rs.status_value();
        let changed = [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
            "observedGeneration",
        ]
        .iter()
        .any(|f| current[f].as_i64().unwrap_or(0) != status[f].as_i64().unwrap_or(0))
            // Written even at 0, as upstream's pointer is.
            || current["terminatingReplicas"] != status["terminatingReplicas"];
        if changed {
            let target = Target::of::<K>(rs.namespace().as_deref(), &rs.name_any());
            match self
                .cluster
                .merge_patch(&target, json!({"status": status}), true)
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        result?;
        if min_ready > 0 && ready > available {
            return Ok(Action::RequeueAfter(Duration::from_secs(min_ready as u64)));
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "rs-uid", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        }))
        .unwrap()
    }

    fn pod(name: &str, owner: Option<&str>, ready: bool, node: Option<&str>) -> Pod {
        let refs = owner.map(|uid| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": uid, "controller": true}]));
        let conditions = json!([{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2024-01-01T00:00:00Z"}]);
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": format!("{name}-uid"), "labels": {"app": "web"}, "ownerReferences": refs, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": node},
            "status": {"phase": if node.is_some() {"Running"} else {"Pending"}, "conditions": conditions},
        }))
        .unwrap()
    }

    struct Setup {
        fake: Arc<FakeCluster>,
        sets: Informer<ReplicaSet>,
        pods: Informer<Pod>,
        queue: Arc<Queue>,
        controller: ReplicaSetController,
    }

    fn setup() -> Setup {
        let fake = Arc::new(FakeCluster::default());
        let (mut sets, mut pods) = (Informer::default(), Informer::default());
        let queue = Queue::new();
        let controller =
            ReplicaSetController::new(&mut sets, &mut pods, fake.clone(), queue.clone());
        Setup {
            fake,
            sets,
            pods,
            queue,
            controller,
        }
    }

    #[tokio::test]
    async fn creates_missing_pods_once_even_with_a_stale_cache() {
        let s = setup();
        s.sets.apply(rs(3));
        assert_eq!(s.queue.try_next().as_deref(), Some("d/web"));
        s.controller.reconcile("d/web").await.unwrap();
        let created = s.fake.bodies("create");
        assert_eq!(
            s.fake
                .event_messages()
                .iter()
                .filter(|m| m.starts_with("SuccessfulCreate"))
                .count(),
            3
        );
        assert_eq!(created.len(), 3);
        assert_eq!(created[0]["metadata"]["generateName"], "web-");
        assert_eq!(
            created[0]["metadata"]["ownerReferences"][0]["uid"],
            "rs-uid"
        );
        assert_eq!(created[0]["metadata"]["labels"]["app"], "web");
        // The cache has not seen the pods yet: nothing more is created.
        s.fake.clear();
        s.controller.reconcile("d/web").await.unwrap();
        assert!(s.fake.made("create").is_empty());
        // Once the cache catches up, the set is satisfied and stays put.
        for (i, body) in created.iter().enumerate() {
            let mut p = pod(&format!("p{i}"), Some("rs-uid"), false, None);
            p.metadata.name = body["metadata"]["name"].as_str().map(str::to_owned);
            s.pods.apply(p);
        }
        s.controller.reconcile("d/web").await.unwrap();
        assert!(s.fake.made("create").is_empty());
        assert!(s.fake.event_messages().is_empty());
        assert_eq!(
            s.fake.bodies("patch-status").last().unwrap()["status"]["replicas"],
            3
        );
    }

    #[tokio::test]
    async fn pods_being_deleted_are_counted_as_terminating() {
        let s = setup();
        s.sets.apply(rs(1));
        s.pods.apply(pod("up", Some("rs-uid"), true, Some("n1")));
        let mut going = pod("going", Some("rs-uid"), true, Some("n1"));
        going.metadata.deletion_timestamp =
            serde_json::from_value(json!("2024-01-01T00:00:00Z")).ok();
        s.pods.apply(going);
        s.controller.reconcile("d/web").await.unwrap();
        let patches = s.fake.bodies("patch-status");
        let status = &patches.last().unwrap()["status"];
        assert_eq!(status["replicas"], 1, "{status}");
        assert_eq!(status["terminatingReplicas"], 1, "{status}");
    }

    #[tokio::test]
    async fn scales_down_unbound_and_unready_pods_first() {
        let s = setup();
        s.sets.apply(rs(1));
        s.pods.apply(pod("ready", Some("rs-uid"), true, Some("n1")));
        s.pods
            .apply(pod("unready", Some("rs-uid"), false, Some("n1")));
        s.pods.apply(pod("pending", Some("rs-uid"), false, None));
        s.controller.reconcile("d/web").await.unwrap();
        let mut deleted = s.fake.made("delete");
        deleted.sort();
        assert_eq!(deleted, vec!["pods d/pending", "pods d/unready"]);
        assert!(s
            .fake
            .event_messages()
            .contains(&"SuccessfulDelete Deleted pod: pending".to_owned()));
    }

    #[tokio::test]
    async fn adopts_orphans_and_releases_pods_that_stop_matching() {
        let s = setup();
        s.sets.apply(rs(2));
        s.pods.apply(pod("orphan", None, true, Some("n1")));
        let mut stray = pod("stray", Some("rs-uid"), true, Some("n1"));
        stray.metadata.labels = Some([("app".to_owned(), "other".to_owned())].into());
        s.pods.apply(stray);
        s.controller.reconcile("d/web").await.unwrap();
        let patches = s.fake.bodies("patch");
        let adopt = patches
            .iter()
            .find(|p| p["metadata"]["uid"] == "orphan-uid")
            .unwrap();
        assert_eq!(adopt["metadata"]["ownerReferences"][0]["uid"], "rs-uid");
        let release = patches
            .iter()
            .find(|p| p["metadata"]["uid"] == "stray-uid")
            .unwrap();
        assert_eq!(release["metadata"]["ownerReferences"], json!([]));
        assert_eq!(s.fake.made("create").len(), 1, "one adopted, one created");
    }

    /// A ReplicationController is kept by the same loop: its map of
    /// equalities selects, and its pods name it as their controller.
    #[tokio::test]
    async fn keeps_a_replication_controller_by_its_equalities() {
        let fake = Arc::new(FakeCluster::default());
        let (mut rcs, mut pods) = (
            Informer::<ReplicationController>::default(),
            Informer::default(),
        );
        let queue = Queue::new();
        let controller =
            ReplicaSetController::new(&mut rcs, &mut pods, fake.clone(), queue.clone());
        rcs.apply(serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "rc-uid", "generation": 1},
            "spec": {"replicas": 2, "selector": {"app": "web"},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        })).unwrap());
        // An orphan that matches is adopted; one that does not is left.
        let mut stray = pod("stray", None, true, Some("n1"));
        stray.metadata.labels = Some([("app".to_string(), "other".to_string())].into());
        pods.apply(stray);
        pods.apply(pod("orphan", None, true, Some("n1")));
        controller.reconcile("d/web").await.unwrap();
        let created = fake.bodies("create");
        assert_eq!(created.len(), 1, "one more for two replicas");
        let owner = &created[0]["metadata"]["ownerReferences"][0];
        assert_eq!(
            (
                owner["kind"].as_str(),
                owner["apiVersion"].as_str(),
                owner["uid"].as_str()
            ),
            (Some("ReplicationController"), Some("v1"), Some("rc-uid"))
        );
        let adopted = fake.bodies("patch");
        assert_eq!(adopted.len(), 1, "{adopted:?}");
        assert_eq!(adopted[0]["metadata"]["uid"], "orphan-uid");
    }
}
