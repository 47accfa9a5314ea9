//! The claim side: bind an unbound claim to a volume, or have its class
//! provision one; keep a bound claim's status and size; let a deleted
//! claim go once no pod uses it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::ResourceExt;
use serde_json::json;
use skiff_core::volumes::{self as v, BIND_COMPLETED, BOUND_BY_CONTROLLER, CLAIM_PROTECTION};

use super::{claims_of, Shared};
use crate::pods;
use skiff_runtime::api::Error;
use skiff_runtime::controller::{Action, Reconcile};

pub struct ClaimController {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl Reconcile for ClaimController {
    fn name(&self) -> &'static str {
        "persistentvolumeclaim"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let s = &self.shared;
        let Some(claim) = s.claims.get(key) else {
            s.forget("PersistentVolumeClaim", key);
            return Ok(Action::Done);
        };
        if claim.metadata.deletion_timestamp.is_some() {
            if !self.in_use(&claim) {
                s.release(&*claim, CLAIM_PROTECTION).await?;
            }
            return Ok(Action::Done);
        }
        let volume = claim.spec.as_ref().and_then(|s| s.volume_name.clone());
        match volume.filter(|v| !v.is_empty()) {
            None => self.bind_or_provision(&claim).await,
            Some(name) => self.sync_bound(&claim, &name).await,
        }
    }
}

impl ClaimController {
    /// Whether a pod that has not finished names the claim (as upstream,
    /// a pod not yet scheduled counts: it may start at any moment).
    fn in_use(&self, claim: &PersistentVolumeClaim) -> bool {
        let ns = claim.namespace().unwrap_or_default();
        let name = claim.name_any();
        self.shared.pods.list_in(&ns).iter().any(|p| {
            !matches!(pods::phase(p), "Succeeded" | "Failed") && claims_of(p).any(|c| c == name)
        })
    }

    async fn bind_or_provision(&self, claim: &PersistentVolumeClaim) -> Result<Action, Error> {
        let s = &self.shared;
        let class_name = v::claim_class(claim);
        let class = (!class_name.is_empty())
            .then(|| s.classes.get(class_name))
            .flatten();
        let waits = class
            .as_ref()
            .and_then(|c| c.volume_binding_mode.as_deref())
            == Some("WaitForFirstConsumer");
        let selected = v::selected_node(claim).map(str::to_owned);
        let node = selected.as_deref().and_then(|n| s.nodes.get(n));
        if !waits || selected.is_some() {
            let volumes = s.volumes.list();
            if let Some(pv) = v::best_match(claim, volumes.iter().map(|v| &**v), node.as_deref()) {
                return self.bind(claim, pv).await.map(|_| Action::Done);
            }
        }
        if claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Pending") {
            s.patch(claim, json!({"status": {"phase": "Pending"}}), true)
                .await?;
        }
        let Some(class) = class else {
            let message = match class_name {
                "" => "no persistent volumes available for this claim and no storage class is set"
                    .to_owned(),
                name => format!("storageclass.storage.k8s.io {name:?} not found"),
            };
            s.tell(claim, !class_name.is_empty(), "FailedBinding", &message);
            return Ok(Action::Done);
        };
        if waits && selected.is_none() {
            s.tell(
                claim,
                false,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            );
            return Ok(Action::Done);
        }
        if class.provisioner != v::LOCAL_PATH {
            s.tell(
                claim,
                false,
                "ExternalProvisioning",
                &format!(
                    "Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.",
                    class.provisioner
                ),
            );
            return Ok(Action::Done);
        }
        match super::provision::local_path(s, claim, &class, selected.as_deref()).await? {
            true => Ok(Action::Done),
            // No node to put it on yet: nodes come and go.
            false => Ok(Action::RequeueAfter(Duration::from_secs(10))),
        }
    }

    /// Binds as upstream, each step safe to repeat: the volume names the
    /// claim (guarded by its resourceVersion, so two claims never take
    /// one volume), the volume is Bound, the claim names the volume, the
    /// claim is Bound.
    async fn bind(
        &self,
        claim: &PersistentVolumeClaim,
        pv: &PersistentVolume,
    ) -> Result<(), Error> {
        let s = &self.shared;
        let spec = pv.spec.clone().unwrap_or_default();
        let named =
            spec.claim_ref.as_ref().and_then(|r| r.uid.as_deref()) == claim.uid().as_deref();
        if !named {
            let reserved = spec.claim_ref.is_some();
            let mut patch = json!({"spec": {"claimRef": {
                "kind": "PersistentVolumeClaim", "apiVersion": "v1",
                "namespace": claim.namespace(), "name": claim.name_any(),
                "uid": claim.uid(), "resourceVersion": claim.resource_version()}}});
            if !reserved {
                patch["metadata"]["annotations"] = json!({BOUND_BY_CONTROLLER: "yes"});
            }
            s.patch(pv, patch, false).await?;
            // The rest follows when the volume comes back from its watch.
            return Ok(());
        }
        if pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound") {
            s.patch(pv, json!({"status": {"phase": "Bound"}}), true)
                .await?;
            return Ok(());
        }
        let mut annotations = json!({BIND_COMPLETED: "yes"});
        let user_named = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if !user_named {
            annotations[BOUND_BY_CONTROLLER] = json!("yes");
        }
        s.patch(
            claim,
            json!({"metadata": {"annotations": annotations}, "spec": {"volumeName": pv.name_any()}}),
            false,
        )
        .await?;
        Ok(())
    }

    async fn sync_bound(&self, claim: &PersistentVolumeClaim, name: &str) -> Result<Action, Error> {
        let s = &self.shared;
        let phase = claim.status.as_ref().and_then(|s| s.phase.as_deref());
        let Some(pv) = s.volumes.get(name) else {
            if phase != Some("Lost") {
                s.patch(claim, json!({"status": {"phase": "Lost"}}), true)
                    .await?;
                s.tell(
                    claim,
                    true,
                    "ClaimLost",
                    "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
                );
            }
            return Ok(Action::Done);
        };
        let r = pv.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let ours = r.is_some_and(|r| {
            r.namespace == claim.metadata.namespace
                && r.name == claim.metadata.name
                && r.uid
                    .as_deref()
                    .is_none_or(|u| Some(u) == claim.uid().as_deref())
        });
        if !ours {
            if r.is_none() {
                // Named by its author: bind if the volume serves it.
                if let Some(why) = v::mismatch(claim, &pv) {
                    let message = format!("Cannot bind to requested volume {name:?}: {why}");
                    s.tell(claim, true, "FailedBinding", &message);
                    return Ok(Action::Done);
                }
                return self.bind(claim, &pv).await.map(|_| Action::Done);
            }
            s.tell(
                claim,
                true,
                "ClaimMisbound",
                "Two claims are bound to the same volume, this one is bound incorrectly",
            );
            if phase != Some("Lost") {
                s.patch(claim, json!({"status": {"phase": "Lost"}}), true)
                    .await?;
            }
            return Ok(Action::Done);
        }
        if r.and_then(|r| r.uid.as_deref()).is_none_or(str::is_empty)
            || pv.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
        {
            return self.bind(claim, &pv).await.map(|_| Action::Done);
        }
        let capacity = pv.spec.as_ref().and_then(|s| s.capacity.clone());
        let status = claim.status.clone().unwrap_or_default();
        let had = status.capacity.as_ref().and_then(|c| c.get("storage"));
        let has = capacity.as_ref().and_then(|c| c.get("storage"));
        let modes = pv.spec.as_ref().and_then(|s| s.access_modes.clone());
        if phase != Some("Bound")
            || (had.is_none() && has.is_some())
            || status.access_modes != modes
        {
            s.patch(
                claim,
                json!({"status": {"phase": "Bound", "capacity": capacity, "accessModes": modes}}),
                true,
            )
            .await?;
            return Ok(Action::Done);
        }
        super::provision::expand(s, claim, &pv).await?;
        Ok(Action::Done)
    }
}
