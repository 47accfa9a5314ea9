//! Keeps each ResourceQuota's `status` true: `hard` as the spec says,
//! `used` summed from the objects it counts (pods from the cache, other
//! kinds listed), as upstream's resource quota controller does. Admission
//! charges new objects between two passes; deletions are seen here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::core::ApiResource;
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_core::quota;

use skiff_runtime::api::{self, Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

/// How often usage of kinds without a watch here is recounted.
const RECOUNT: Duration = Duration::from_secs(30);

pub struct ResourceQuotaController {
    quotas: Arc<Cache<ResourceQuota>>,
    pods: Arc<Cache<Pod>>,
    cluster: Arc<dyn Cluster>,
}

impl ResourceQuotaController {
    /// Keyed by namespace.
    pub fn new(
        quotas: &mut Informer<ResourceQuota>,
        pods: &mut Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let q = queue.clone();
        quotas.on_change(move |old, new| {
            if let Some(ns) = new.or(old).and_then(|o| o.namespace()) {
                q.add(ns);
            }
        });
        let cache = quotas.cache();
        pods.on_change(move |old, new| {
            if let Some(ns) = new.or(old).and_then(|o| o.namespace()) {
                if !cache.list_in(&ns).is_empty() {
                    queue.add(ns);
                }
            }
        });
        Self {
            quotas: quotas.cache(),
            pods: pods.cache(),
            cluster,
        }
    }

    /// The objects of `(group, plural)` in `ns`.
    async fn objects(&self, group: &str, plural: &str, ns: &str) -> Result<Vec<Value>, Error> {
        if group.is_empty() && plural == "pods" {
            return Ok(self
                .pods
                .list_in(ns)
                .iter()
                .map(|p| api::encode(&**p))
                .collect());
        }
        let Some(r) = skiff_core::registry::preferred(group, plural) else {
            return Ok(Vec::new());
        };
        let resource = ApiResource {
            group: r.group.into(),
            version: r.version.into(),
            api_version: r.api_version(),
            kind: r.kind.into(),
            plural: r.plural.into(),
        };
        self.cluster.list(&resource, Some(ns)).await
    }
}

#[async_trait]
impl Reconcile for ResourceQuotaController {
    fn name(&self) -> &'static str {
        "resourcequota"
    }

    async fn reconcile(&self, ns: &str) -> Result<Action, Error> {
        let quotas = self.quotas.list_in(ns);
        if quotas.is_empty() {
            return Ok(Action::Done);
        }
        let mut counted: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
        for q in &quotas {
            let hard = q
                .spec
                .as_ref()
                .and_then(|s| s.hard.clone())
                .unwrap_or_default();
            let spec = api::encode(&q.spec);
            let mut used = BTreeMap::new();
            for key in hard.keys() {
                let Some(kind) = quota::counted_kind(key) else {
                    continue;
                };
                if !counted.contains_key(&kind) {
                    let objects = self.objects(&kind.0, &kind.1, ns).await?;
                    counted.insert(kind.clone(), objects);
                }
                let total: i128 = counted[&kind]
                    .iter()
                    .filter(|o| quota::in_scope(&spec, &kind.0, &kind.1, o))
                    .filter_map(|o| quota::usage(&kind.0, &kind.1, o).get(key).copied())
                    .sum();
                used.insert(key.clone(), quota::format(key, total));
            }
            let status = json!({"hard": hard, "used": used});
            if api::encode(&q.status) == status {
                continue;
            }
            let target = Target::of::<ResourceQuota>(Some(ns), &q.name_any());
            match self
                .cluster
                .merge_patch(&target, json!({"status": status}), true)
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(Action::RequeueAfter(RECOUNT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    #[tokio::test]
    async fn used_counts_live_pods_and_listed_configmaps() {
        let fake = Arc::new(FakeCluster::default());
        let (mut quotas, mut pods) = (Informer::default(), Informer::default());
        let c = ResourceQuotaController::new(&mut quotas, &mut pods, fake.clone(), Queue::new());
        quotas.apply(
            serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "t"},
                "spec": {"hard": {"pods": "3", "requests.cpu": "1", "count/configmaps": "5"}}}))
            .unwrap(),
        );
        let pod = |name: &str, phase: &str| {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "t"},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "250m"}}}]},
                "status": {"phase": phase}}))
            .unwrap()
        };
        pods.apply(pod("a", "Running"));
        pods.apply(pod("b", "Pending"));
        pods.apply(pod("done", "Succeeded"));
        fake.put(
            "configmaps",
            json!({"metadata": {"name": "m", "namespace": "t"}}),
        );
        c.reconcile("t").await.unwrap();
        let patched = fake.bodies("patch-status");
        assert_eq!(
            patched[0]["status"]["used"],
            json!({"pods": "2", "requests.cpu": "500m", "count/configmaps": "1"})
        );
        assert_eq!(patched[0]["status"]["hard"]["pods"], "3");
    }
}
