//! Generic ephemeral volumes, as upstream's ephemeral volume controller:
//! each `ephemeral` volume of a pod gets its claim, `<pod>-<volume>`, made
//! from the volume's template and owned by the pod, so that it is
//! provisioned like any claim and goes when the pod goes. A claim of that
//! name the pod does not own is left alone: the scheduler and the node
//! refuse it for the pod.

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use serde_json::{json, Value};

use skiff_runtime::api::{self, Cluster, Error};
use skiff_runtime::cache::{key_of, Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

pub struct EphemeralController {
    pods: Arc<Cache<Pod>>,
    claims: Arc<Cache<PersistentVolumeClaim>>,
    cluster: Arc<dyn Cluster>,
}

fn has_ephemeral(pod: &Pod) -> bool {
    let mut volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
    volumes.any(|v| v.ephemeral.is_some())
}

impl EphemeralController {
    /// A pod with ephemeral volumes is looked at when it changes, and
    /// again when a claim it owns goes (it is made anew).
    pub fn new(
        pods: &mut Informer<Pod>,
        claims: &mut Informer<PersistentVolumeClaim>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let q = queue.clone();
        pods.on_change(move |_, new| {
            if let Some(pod) = new.filter(|p| has_ephemeral(p)) {
                q.add(key_of(pod));
            }
        });
        claims.on_change(move |old, new| {
            let Some(gone) = old.filter(|_| new.is_none()) else {
                return;
            };
            let ns = gone.namespace().unwrap_or_default();
            let owners = gone.metadata.owner_references.iter().flatten();
            for o in owners.filter(|o| o.kind == "Pod" && o.controller == Some(true)) {
                queue.add(format!("{ns}/{}", o.name));
            }
        });
        Self {
            pods: pods.cache(),
            claims: claims.cache(),
            cluster,
        }
    }
}

/// The claim upstream makes for `pod`'s ephemeral volume from `template`
/// (its labels, annotations and spec).
fn claim_for(pod: &Pod, name: &str, template: &Value) -> Value {
    let meta = &template["metadata"];
    let mut metadata = json!({
        "name": name,
        "namespace": pod.namespace(),
        "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(),
            "uid": pod.metadata.uid, "controller": true, "blockOwnerDeletion": true}],
    });
    for field in ["labels", "annotations"] {
        if meta[field].is_object() {
            metadata[field] = meta[field].clone();
        }
    }
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": metadata, "spec": template["spec"]})
}

#[async_trait]
impl Reconcile for EphemeralController {
    fn name(&self) -> &'static str {
        "ephemeral-volume-controller"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(pod) = self.pods.get(key) else {
            return Ok(Action::Done);
        };
        if pod.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let ns = pod.namespace().unwrap_or_default();
        let volumes = pod.spec.iter().flat_map(|s| s.volumes.iter().flatten());
        for v in volumes {
            let Some(source) = &v.ephemeral else {
                continue;
            };
            let Some(claim) = skiff_core::volumes::pod_claim(&pod, v) else {
                continue;
            };
            if self.claims.get(&format!("{ns}/{}", claim.name)).is_some() {
                continue;
            }
            let template = serde_json::to_value(&source.volume_claim_template)
                .map_err(|e| Error::Transport(e.to_string()))?;
            let made = claim_for(&pod, &claim.name, &template);
            match api::create::<PersistentVolumeClaim>(&*self.cluster, &made).await {
                Ok(_) => {}
                // Made meanwhile: the cache shows it soon.
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_claim_is_named_for_the_pod_and_owned_by_it() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "volumes": [{"name": "scratch", "ephemeral": {
                "volumeClaimTemplate": {"metadata": {"labels": {"a": "b"}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}]}
        }))
        .unwrap();
        let v = &pod.spec.as_ref().unwrap().volumes.as_ref().unwrap()[0];
        let claim = skiff_core::volumes::pod_claim(&pod, v).unwrap();
        assert_eq!(
            (claim.name.as_str(), claim.ephemeral),
            ("web-scratch", true)
        );
        let template =
            serde_json::to_value(&v.ephemeral.as_ref().unwrap().volume_claim_template).unwrap();
        let made = claim_for(&pod, &claim.name, &template);
        assert_eq!(made["metadata"]["name"], "web-scratch");
        assert_eq!(made["metadata"]["namespace"], "ns");
        assert_eq!(made["metadata"]["labels"], json!({"a": "b"}));
        assert_eq!(
            made["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u1",
                "controller": true, "blockOwnerDeletion": true}])
        );
        assert_eq!(made["spec"]["resources"]["requests"]["storage"], "1Gi");
        let claim: PersistentVolumeClaim = serde_json::from_value(made).unwrap();
        assert!(skiff_core::volumes::owned_by(&claim, &pod));
    }
}
