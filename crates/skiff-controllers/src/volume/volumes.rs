//! The volume side: Available until a claim takes it, Bound while the
//! claim lives, Released when it is gone, then reclaimed by its policy
//! (Retain keeps it; Delete removes what the built-in provisioner made).

use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_core::volumes::{self as v, BOUND_BY_CONTROLLER, VOLUME_PROTECTION};

use super::Shared;
use skiff_runtime::api::{self, Error};
use skiff_runtime::controller::{Action, Reconcile};

pub struct VolumeController {
    pub shared: Arc<Shared>,
}

fn phase(pv: &PersistentVolume) -> Option<&str> {
    pv.status.as_ref().and_then(|s| s.phase.as_deref())
}

#[async_trait]
impl Reconcile for VolumeController {
    fn name(&self) -> &'static str {
        "persistentvolume"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let s = &self.shared;
        let Some(pv) = s.volumes.get(key) else {
            s.forget("PersistentVolume", key);
            return Ok(Action::Done);
        };
        if pv.metadata.deletion_timestamp.is_some() {
            if phase(&pv) != Some("Bound") {
                s.release(&*pv, VOLUME_PROTECTION).await?;
            }
            return Ok(Action::Done);
        }
        let Some(r) = pv.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            return self.set_phase(&pv, "Available", None).await;
        };
        let claim_key = format!(
            "{}/{}",
            r.namespace.clone().unwrap_or_default(),
            r.name.clone().unwrap_or_default()
        );
        let uid = r.uid.clone().filter(|u| !u.is_empty());
        let claim = s.claims.get(&claim_key);
        let same = claim.as_ref().filter(|c| uid.is_none() || c.uid() == uid);
        match (same, uid) {
            // Reserved for a claim that may come.
            (_, None) => self.set_phase(&pv, "Available", None).await,
            (Some(c), Some(_)) => {
                let named = c.spec.as_ref().and_then(|s| s.volume_name.as_deref());
                match named {
                    Some(n) if n == pv.name_any() => self.set_phase(&pv, "Bound", None).await,
                    // The claim controller finishes binding.
                    None | Some("") => Ok(Action::Done),
                    Some(_) => self.unbind(&pv).await,
                }
            }
            (None, Some(_)) => self.reclaim(&pv).await,
        }
    }
}

impl VolumeController {
    async fn set_phase(
        &self,
        pv: &PersistentVolume,
        to: &str,
        message: Option<&str>,
    ) -> Result<Action, Error> {
        if phase(pv) != Some(to) {
            let status = json!({"status": {"phase": to, "message": message}});
            self.shared.patch(pv, status, true).await?;
        }
        Ok(Action::Done)
    }

    /// The claim went to another volume: a volume the controller bound
    /// is freed; one an administrator reserved stays reserved.
    async fn unbind(&self, pv: &PersistentVolume) -> Result<Action, Error> {
        let ours = pv.annotations().get(BOUND_BY_CONTROLLER).is_some();
        if ours {
            let patch = json!({"metadata": {"annotations": {BOUND_BY_CONTROLLER: Value::Null}},
                "spec": {"claimRef": Value::Null}});
            self.shared.patch(pv, patch, false).await?;
        }
        Ok(Action::Done)
    }

    /// The claim is gone: Released, then the reclaim policy.
    async fn reclaim(&self, pv: &PersistentVolume) -> Result<Action, Error> {
        let s = &self.shared;
        if !matches!(phase(pv), Some("Released" | "Failed")) {
            return self.set_phase(pv, "Released", None).await;
        }
        if phase(pv) == Some("Failed") {
            return Ok(Action::Done);
        }
        let policy = pv
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
            .unwrap_or("Retain");
        match policy {
            "Delete" if v::is_local_path(pv) => {
                api::delete_exact(&*s.cluster, pv).await?;
                Ok(Action::Done)
            }
            "Delete" => {
                let message = format!(
                    "error getting deleter volume plugin for volume {:?}: no deletable volume plugin matched (only volumes provisioned by {} are deleted)",
                    pv.name_any(),
                    v::LOCAL_PATH
                );
                s.tell(pv, true, "VolumeFailedDelete", &message);
                self.set_phase(pv, "Failed", Some(&message)).await
            }
            "Recycle" => {
                let message = "Recycle is not supported: use Delete or Retain";
                s.tell(pv, true, "VolumeFailedRecycle", message);
                self.set_phase(pv, "Failed", Some(message)).await
            }
            _ => Ok(Action::Done),
        }
    }
}
