//! Every active namespace has the `kube-root-ca.crt` ConfigMap holding the
//! cluster CA (`ca.crt`), which pods' service account volumes project, as
//! upstream's root CA certificate publisher keeps it.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::ResourceExt;
use serde_json::json;

use skiff_runtime::api::{self, Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

pub const NAME: &str = "kube-root-ca.crt";

pub struct RootCaPublisher {
    namespaces: Arc<Cache<Namespace>>,
    maps: Arc<Cache<ConfigMap>>,
    cluster: Arc<dyn Cluster>,
    /// The cluster CA, PEM.
    ca: String,
}

impl RootCaPublisher {
    /// `maps` holds only ConfigMaps named [`NAME`].
    pub fn new(
        namespaces: &mut Informer<Namespace>,
        maps: &mut Informer<ConfigMap>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
        ca: String,
    ) -> Self {
        crate::owned::queue_self(namespaces, queue.clone());
        maps.on_change(move |old, new| {
            if let Some(ns) = new.or(old).and_then(|m| m.namespace()) {
                queue.add(ns);
            }
        });
        Self {
            namespaces: namespaces.cache(),
            maps: maps.cache(),
            cluster,
            ca,
        }
    }
}

#[async_trait]
impl Reconcile for RootCaPublisher {
    fn name(&self) -> &'static str {
        "root-ca-cert-publisher"
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, Error> {
        if !crate::namespace::is_live(&self.namespaces, ns) {
            return Ok(Action::Done);
        }
        let data = json!({"ca.crt": self.ca});
        let made = match self.maps.get(&format!("{ns}/{NAME}")) {
            Some(m) if m.data.as_ref().and_then(|d| d.get("ca.crt")) == Some(&self.ca) => {
                return Ok(Action::Done)
            }
            Some(_) => {
                let target = Target::of::<ConfigMap>(Some(ns), NAME);
                let patch = json!({"data": data});
                self.cluster
                    .merge_patch(&target, patch, false)
                    .await
                    .map(drop)
            }
            None => {
                let map = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": NAME, "namespace": ns,
                        "annotations": {"kubernetes.io/description": "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters."}},
                    "data": data});
                api::create::<ConfigMap>(&*self.cluster, &map)
                    .await
                    .map(drop)
            }
        };
        crate::namespace::settled(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    #[tokio::test]
    async fn publishes_the_ca_and_puts_it_back_when_changed() {
        let fake = Arc::new(FakeCluster::default());
        let (mut namespaces, mut maps) = (Informer::default(), Informer::default());
        let c = RootCaPublisher::new(
            &mut namespaces,
            &mut maps,
            fake.clone(),
            Queue::new(),
            "PEM".into(),
        );
        namespaces.apply(serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap());
        c.reconcile("t").await.unwrap();
        assert_eq!(fake.made("create"), vec!["configmaps t/kube-root-ca.crt"]);
        let map = |ca: &str| {
            serde_json::from_value(
                json!({"metadata": {"name": NAME, "namespace": "t"}, "data": {"ca.crt": ca}}),
            )
            .unwrap()
        };
        maps.apply(map("PEM"));
        fake.clear();
        c.reconcile("t").await.unwrap();
        assert!(fake.made("create").is_empty() && fake.made("patch").is_empty());
        maps.apply(map("tampered"));
        c.reconcile("t").await.unwrap();
        assert_eq!(fake.made("patch"), vec!["configmaps t/kube-root-ca.crt"]);
    }
}
