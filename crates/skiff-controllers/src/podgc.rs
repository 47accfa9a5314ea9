//! Pod GC: pods bound to a node that has not existed for a quarantine of
//! 40 s are deleted (as upstream's, so that a node registering a moment
//! after its pods were bound keeps them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{key_of, Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

/// How long a node must be missing before its pods are deleted.
pub const QUARANTINE: Duration = Duration::from_secs(40);

/// The time now; a test's clock can be moved by hand.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

pub struct PodGcController {
    pub pods: Arc<Cache<Pod>>,
    pub nodes: Arc<Cache<Node>>,
    pub cluster: Arc<dyn Cluster>,
    clock: Clock,
    /// When each missing node was first seen missing.
    missing_since: Mutex<HashMap<String, Instant>>,
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec
        .as_ref()?
        .node_name
        .as_deref()
        .filter(|n| !n.is_empty())
}

impl PodGcController {
    pub fn new(
        pods: &mut Informer<Pod>,
        nodes: &mut Informer<Node>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        Self::with_clock(pods, nodes, cluster, queue, Arc::new(Instant::now))
    }

    pub fn with_clock(
        pods: &mut Informer<Pod>,
        nodes: &mut Informer<Node>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
        clock: Clock,
    ) -> Self {
        let pod_cache = pods.cache();
        let q = queue.clone();
        nodes.on_change(move |_, new| {
            if new.is_none() {
                for p in pod_cache.list().iter().filter(|p| node_of(p).is_some()) {
                    q.add(key_of(&**p));
                }
            }
        });
        pods.on_change(move |old, new| {
            if let Some(p) =
                new.filter(|p| node_of(p).is_some() && old.is_none_or(|o| node_of(o) != node_of(p)))
            {
                queue.add(key_of(p));
            }
        });
        Self {
            pods: pods.cache(),
            nodes: nodes.cache(),
            cluster,
            clock,
            missing_since: Mutex::default(),
        }
    }

    /// How much longer `node` stays in quarantine, now that it was seen
    /// missing (zero once it is over).
    fn quarantine_left(&self, node: &str) -> Duration {
        let now = (self.clock)();
        let mut missing = self.missing_since.lock().unwrap();
        let since = *missing.entry(node.to_owned()).or_insert(now);
        QUARANTINE.saturating_sub(now - since)
    }

    fn found(&self, node: &str) {
        self.missing_since.lock().unwrap().remove(node);
    }
}

#[async_trait]
impl Reconcile for PodGcController {
    fn name(&self) -> &'static str {
        "pod-gc"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(Action::Done);
        };
        let Some(node) = node_of(&pod) else {
            return Ok(Action::Done);
        };
        if self.nodes.get(node).is_some() {
            self.found(node);
            return Ok(Action::Done);
        }
        let left = self.quarantine_left(node);
        if !left.is_zero() {
            return Ok(Action::RequeueAfter(left));
        }
        // The cache may lag behind a node that just registered.
        if self
            .cluster
            .get(&Target::of::<Node>(None, node))
            .await?
            .is_some()
        {
            self.found(node);
            return Ok(Action::Done);
        }
        let target = Target::of::<Pod>(pod.namespace().as_deref(), &pod.name_any());
        let how = Deletion {
            uid: pod.uid(),
            grace_seconds: Some(0),
            ..Default::default()
        };
        match self.cluster.delete(&target, how).await {
            Err(e) if !e.is_not_found() && !e.is_conflict() => Err(e),
            _ => Ok(Action::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_runtime::fake::FakeCluster;

    #[tokio::test]
    async fn deletes_pods_of_nodes_missing_past_the_quarantine_only() {
        let fake = Arc::new(FakeCluster::default());
        let (mut pods, mut nodes) = (Informer::default(), Informer::default());
        let start = Instant::now();
        let elapsed = Arc::new(Mutex::new(Duration::ZERO));
        let clock = {
            let elapsed = elapsed.clone();
            Arc::new(move || start + *elapsed.lock().unwrap())
        };
        let c =
            PodGcController::with_clock(&mut pods, &mut nodes, fake.clone(), Queue::new(), clock);
        nodes.apply(serde_json::from_value(json!({"metadata": {"name": "here"}})).unwrap());
        for (name, node) in [("a", "here"), ("b", "gone"), ("c", "late")] {
            pods.apply(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": [], "nodeName": node}})).unwrap());
        }
        let run = |key: &'static str| c.reconcile(key);
        assert_eq!(run("d/a").await.unwrap(), Action::Done);
        for key in ["d/b", "d/c"] {
            assert_eq!(run(key).await.unwrap(), Action::RequeueAfter(QUARANTINE));
        }
        *elapsed.lock().unwrap() = Duration::from_secs(30);
        assert_eq!(
            run("d/b").await.unwrap(),
            Action::RequeueAfter(Duration::from_secs(10))
        );
        assert!(
            fake.made("delete").is_empty(),
            "nothing deleted in quarantine"
        );
        // "late" registers during its quarantine and keeps its pod.
        nodes.apply(serde_json::from_value(json!({"metadata": {"name": "late"}})).unwrap());
        *elapsed.lock().unwrap() = QUARANTINE;
        assert_eq!(run("d/b").await.unwrap(), Action::Done);
        assert_eq!(run("d/c").await.unwrap(), Action::Done);
        assert_eq!(fake.made("delete"), vec!["pods d/b"]);
    }
}
