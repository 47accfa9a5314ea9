//! The namespace controller: when a namespace is deleted, it deletes
//! everything in it, waits until all of it is gone, then removes the
//! `kubernetes` finalizer so the namespace itself goes.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::ApiResource;
use kube::ResourceExt;
use serde_json::json;

use crate::owned;
use skiff_runtime::api::{Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

/// How often a terminating namespace is checked while its contents go.
const RECHECK: Duration = Duration::from_millis(500);

/// Whether the namespace exists and is not being deleted: controllers
/// that keep an object in every namespace write only into these.
pub fn is_live(namespaces: &Cache<Namespace>, ns: &str) -> bool {
    namespaces
        .get(ns)
        .is_some_and(|n| n.metadata.deletion_timestamp.is_none())
}

/// The outcome of writing a namespace's own object: a conflict (someone
/// made it first) or a 403 (the namespace began terminating meanwhile)
/// leaves nothing to do.
pub fn settled(written: Result<(), Error>) -> Result<Action, Error> {
    match written {
        Err(e) if !e.is_conflict() && !matches!(e, Error::Api { code: 403, .. }) => Err(e),
        _ => Ok(Action::Done),
    }
}

pub struct NamespaceController {
    pub namespaces: Arc<Cache<Namespace>>,
    pub cluster: Arc<dyn Cluster>,
}

impl NamespaceController {
    pub fn new(
        namespaces: &mut Informer<Namespace>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        owned::queue_self(namespaces, queue);
        Self {
            namespaces: namespaces.cache(),
            cluster,
        }
    }
}

/// Every namespaced resource the API serves.
fn namespaced_resources() -> impl Iterator<Item = ApiResource> {
    skiff_core::registry::RESOURCES
        .iter()
        .filter(|r| r.namespaced)
        .map(|t| ApiResource {
            group: t.group.into(),
            version: t.version.into(),
            api_version: t.api_version(),
            kind: t.kind.into(),
            plural: t.plural.into(),
        })
}

#[async_trait]
impl Reconcile for NamespaceController {
    fn name(&self) -> &'static str {
        "namespace"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(ns) = self.namespaces.get(key) else {
            return Ok(Action::Done);
        };
        let finalizers = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default();
        if ns.metadata.deletion_timestamp.is_none() || !finalizers.iter().any(|f| f == "kubernetes")
        {
            return Ok(Action::Done);
        }
        let name = ns.name_any();
        let mut left = 0;
        // Custom resources too: one served version of each reaches all.
        let mut custom: Vec<ApiResource> = Vec::new();
        for (r, namespaced) in skiff_runtime::api::custom_resources(self.cluster.as_ref()).await? {
            if namespaced
                && !custom
                    .iter()
                    .any(|c| c.group == r.group && c.plural == r.plural)
            {
                custom.push(r);
            }
        }
        for r in namespaced_resources().chain(custom) {
            match self.cluster.delete_collection(&r, &name).await {
                Err(Error::Api {
                    code: 404 | 405, ..
                })
                | Ok(()) => {}
                Err(e) => return Err(e),
            }
            left += self.cluster.list(&r, Some(&name)).await?.len();
        }
        if left > 0 {
            tracing::debug!(namespace = %name, left, "waiting for the namespace's contents to go");
            return Ok(Action::RequeueAfter(RECHECK));
        }
        let rest: Vec<&String> = finalizers.iter().filter(|f| *f != "kubernetes").collect();
        let mut body = serde_json::to_value(&*ns).unwrap_or_default();
        body["spec"]["finalizers"] = json!(rest);
        let target = Target::of::<Namespace>(None, &name);
        match self
            .cluster
            .replace_subresource(&target, "finalize", body)
            .await
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(Action::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    #[tokio::test]
    async fn empties_then_finalizes_a_deleted_namespace() {
        let fake = Arc::new(FakeCluster::default());
        let mut informer = Informer::default();
        let c = NamespaceController::new(&mut informer, fake.clone(), Queue::new());
        informer.apply(
            serde_json::from_value(json!({
                "metadata": {"name": "t", "deletionTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"finalizers": ["kubernetes"]},
            }))
            .unwrap(),
        );
        fake.put(
            "configmaps",
            json!({"metadata": {"name": "c", "namespace": "t"}}),
        );
        fake.put(
            "configmaps",
            json!({"metadata": {"name": "c", "namespace": "other"}}),
        );
        assert_eq!(c.reconcile("t").await.unwrap(), Action::Done);
        assert!(fake
            .made("deletecollection")
            .contains(&"configmaps t".to_owned()));
        assert!(!fake
            .made("deletecollection")
            .iter()
            .any(|c| c.ends_with("other")));
        let finalized = fake.bodies("finalize");
        assert_eq!(finalized[0]["spec"]["finalizers"], json!([]));
    }

    #[tokio::test]
    async fn leaves_live_namespaces_alone() {
        let fake = Arc::new(FakeCluster::default());
        let mut informer = Informer::default();
        let c = NamespaceController::new(&mut informer, fake.clone(), Queue::new());
        informer.apply(
            serde_json::from_value(
                json!({"metadata": {"name": "t"}, "spec": {"finalizers": ["kubernetes"]}}),
            )
            .unwrap(),
        );
        c.reconcile("t").await.unwrap();
        assert!(fake.calls.lock().unwrap().is_empty());
    }
}
