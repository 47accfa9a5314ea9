//! Pod GC: pods bound to nodes that no longer exist are deleted at once.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;

use crate::runtime::api::{Cluster, Deletion, Error, Target};
use crate::runtime::cache::{key_of, Cache, Informer};
use crate::runtime::controller::{Action, Reconcile};
use crate::runtime::queue::Queue;

pub struct PodGcController {
    pub pods: Arc<Cache<Pod>>,
    pub nodes: Arc<Cache<Node>>,
    pub cluster: Arc<dyn Cluster>,
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
        }
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
            return Ok(Action::Done);
        }
        // The cache may lag behind a node that just registered.
        if self
            .cluster
            .get(&Target::of::<Node>(None, node))
            .await?
            .is_some()
        {
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
    use crate::runtime::fake::FakeCluster;
    use serde_json::json;

    #[tokio::test]
    async fn deletes_pods_of_missing_nodes_only() {
        let fake = Arc::new(FakeCluster::default());
        let (mut pods, mut nodes) = (Informer::default(), Informer::default());
        let c = PodGcController::new(&mut pods, &mut nodes, fake.clone(), Queue::new());
        nodes.apply(serde_json::from_value(json!({"metadata": {"name": "here"}})).unwrap());
        for (name, node) in [("a", "here"), ("b", "gone")] {
            pods.apply(serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"}, "spec": {"containers": [], "nodeName": node}})).unwrap());
            c.reconcile(&format!("d/{name}")).await.unwrap();
        }
        assert_eq!(fake.made("delete"), vec!["pods d/b"]);
    }
}
