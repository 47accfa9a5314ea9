//! Node IPAM: each node without a podCIDR gets the next free /24 of the
//! cluster CIDR.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use serde_json::json;
use skiff_core::cidr::Cidr;

use skiff_runtime::api::{Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

pub struct IpamController {
    pub nodes: Arc<Cache<Node>>,
    pub cluster: Arc<dyn Cluster>,
    pub range: Cidr,
    /// Ranges this controller handed out, by node.
    assigned: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl IpamController {
    pub fn new(
        nodes: &mut Informer<Node>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
        range: Cidr,
    ) -> Self {
        crate::owned::queue_self(nodes, queue);
        Self {
            nodes: nodes.cache(),
            cluster,
            range,
            assigned: Default::default(),
        }
    }
}

#[async_trait]
impl Reconcile for IpamController {
    fn name(&self) -> &'static str {
        "node-ipam"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(node) = self.nodes.get(key) else {
            return Ok(Action::Done);
        };
        if node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .is_some_and(|c| !c.is_empty())
        {
            return Ok(Action::Done);
        }
        // Ranges handed out but not yet seen in the cache count as used:
        // two nodes joining at once must not share one.
        let cidr = {
            let mut assigned = self.assigned.lock().unwrap_or_else(|e| e.into_inner());
            let nodes = self.nodes.list();
            // Assigned already, and the cache has not seen it yet: the same
            // range again, never a second one.
            let mine = assigned.get(&node.name_any()).cloned();
            match mine {
                Some(cidr) => cidr,
                None => {
                    assigned.retain(|name, _| nodes.iter().any(|n| n.name_any() == *name));
                    let used: HashSet<String> = nodes
                        .iter()
                        .filter_map(|n| n.spec.as_ref()?.pod_cidr.clone())
                        .chain(assigned.values().cloned())
                        .collect();
                    let free = (0..)
                        .map_while(|i| self.range.subnet(i))
                        .map(|c| c.to_string())
                        .find(|c| !used.contains(c));
                    let Some(cidr) = free else {
                        tracing::warn!(node = %node.name_any(), range = %self.range, "no podCIDR left");
                        return Ok(Action::Done);
                    };
                    assigned.insert(node.name_any(), cidr.clone());
                    cidr
                }
            }
        };
        self.patch(&node.name_any(), cidr).await
    }
}

impl IpamController {
    /// Writes a node's podCIDR; forgets the assignment if that fails.
    async fn patch(&self, name: &str, cidr: String) -> Result<Action, Error> {
        let target = Target::of::<Node>(None, name);
        let patched = self
            .cluster
            .merge_patch(
                &target,
                json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}),
                false,
            )
            .await;
        if patched.is_err() {
            self.assigned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
        }
        patched?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn controller() -> (Arc<FakeCluster>, Informer<Node>, IpamController) {
        let fake = Arc::new(FakeCluster::default());
        let mut nodes = Informer::default();
        let range = "10.42.0.0/16".parse().unwrap();
        let c = IpamController::new(&mut nodes, fake.clone(), Queue::new(), range);
        (fake, nodes, c)
    }

    #[tokio::test]
    async fn a_node_keeps_its_range_while_the_cache_catches_up() {
        let (fake, nodes, c) = controller();
        for name in ["b", "a"] {
            nodes.apply(serde_json::from_value(json!({"metadata": {"name": name}})).unwrap());
        }
        // b is reconciled twice before its podCIDR reaches the cache.
        c.reconcile("b").await.unwrap();
        c.reconcile("b").await.unwrap();
        c.reconcile("a").await.unwrap();
        let given: Vec<String> = fake
            .bodies("patch")
            .iter()
            .map(|p| p["spec"]["podCIDR"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(given, ["10.42.0.0/24", "10.42.0.0/24", "10.42.1.0/24"]);
    }

    #[test]
    fn subnets_of_a_range() {
        let c: Cidr = "10.42.0.0/16".parse().unwrap();
        assert_eq!(c.subnet(0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(c.subnet(255).unwrap().to_string(), "10.42.255.0/24");
        assert_eq!(c.subnet(256), None);
        assert!("10.42.0.0".parse::<Cidr>().is_err());
    }

    #[tokio::test]
    async fn gives_the_next_free_range() {
        let (fake, nodes, c) = controller();
        nodes.apply(
            serde_json::from_value(
                json!({"metadata": {"name": "a"}, "spec": {"podCIDR": "10.42.0.0/24"}}),
            )
            .unwrap(),
        );
        nodes.apply(serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap());
        c.reconcile("b").await.unwrap();
        assert_eq!(fake.bodies("patch")[0]["spec"]["podCIDR"], "10.42.1.0/24");
        // A node joining before the cache shows b's range gets the next.
        nodes.apply(serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap());
        c.reconcile("c").await.unwrap();
        assert_eq!(fake.bodies("patch")[1]["spec"]["podCIDR"], "10.42.2.0/24");
    }
}
