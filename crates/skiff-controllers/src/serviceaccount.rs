//! Every active namespace has a `default` ServiceAccount.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::ResourceExt;
use serde_json::json;

use skiff_runtime::api::{self, Cluster, Error};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

pub struct ServiceAccountController {
    pub namespaces: Arc<Cache<Namespace>>,
    pub accounts: Arc<Cache<ServiceAccount>>,
    pub cluster: Arc<dyn Cluster>,
}

impl ServiceAccountController {
    pub fn new(
        namespaces: &mut Informer<Namespace>,
        accounts: &mut Informer<ServiceAccount>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        crate::owned::queue_self(namespaces, queue.clone());
        accounts.on_change(move |old, new| {
            if new.is_none() {
                if let Some(ns) = old.and_then(|a| a.namespace()) {
                    queue.add(ns);
                }
            }
        });
        Self {
            namespaces: namespaces.cache(),
            accounts: accounts.cache(),
            cluster,
        }
    }
}

#[async_trait]
impl Reconcile for ServiceAccountController {
    fn name(&self) -> &'static str {
        "serviceaccount"
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, Error> {
        let live = crate::namespace::is_live(&self.namespaces, ns);
        if !live || self.accounts.get(&format!("{ns}/default")).is_some() {
            return Ok(Action::Done);
        }
        let sa = json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": ns}});
        let made = api::create::<ServiceAccount>(&*self.cluster, &sa).await;
        crate::namespace::settled(made.map(drop))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    #[tokio::test]
    async fn creates_the_default_account_once() {
        let fake = Arc::new(FakeCluster::default());
        let (mut namespaces, mut accounts) = (Informer::default(), Informer::default());
        let c = ServiceAccountController::new(
            &mut namespaces,
            &mut accounts,
            fake.clone(),
            Queue::new(),
        );
        namespaces.apply(serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap());
        c.reconcile("t").await.unwrap();
        assert_eq!(fake.made("create"), vec!["serviceaccounts t/default"]);
        accounts.apply(
            serde_json::from_value(json!({"metadata": {"name": "default", "namespace": "t"}}))
                .unwrap(),
        );
        fake.clear();
        c.reconcile("t").await.unwrap();
        assert!(fake.made("create").is_empty());
    }
}
