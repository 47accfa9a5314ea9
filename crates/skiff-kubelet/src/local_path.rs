//! The node's half of `skiff.io/local-path` volumes: the controller
//! provisions a volume as `<root>/<volume name>` on this node; the agent
//! makes the directory when a pod first mounts it (holding the volume
//! with a cleanup finalizer from then on), and when the volume is deleted
//! removes the directory (under the Delete policy; Retain keeps the data)
//! and lets the volume go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::json;
use skiff_core::volumes::{self as v, LOCAL_PATH_CLEANUP};

/// How often the volumes whose directories exist here are looked at.
const SWEEP: Duration = Duration::from_secs(5);

pub struct LocalPath {
    /// Where the directories live (published on the Node).
    pub root: PathBuf,
    pub node: String,
}

impl LocalPath {
    /// The volume's directory, made if missing. Only a volume provisioned
    /// onto this node at exactly `<root>/<its name>` is made here.
    pub async fn ensure(&self, client: &Client, pv: &PersistentVolume) -> Result<PathBuf, String> {
        let name = pv.metadata.name.clone().unwrap_or_default();
        if !skiff_core::validate::is_dns_subdomain(&name) {
            return Err(format!(
                "persistentvolume name {name:?} is not a DNS subdomain"
            ));
        }
        let path = self.root.join(&name);
        let local = pv.spec.as_ref().and_then(|s| s.local.as_ref());
        let at = local.map(|l| Path::new(&l.path));
        if at != Some(path.as_path()) || v::pinned_node(pv) != Some(self.node.as_str()) {
            return Err(format!(
                "persistentvolume {name:?} is not a local-path volume of node {:?} under {}",
                self.node,
                self.root.display()
            ));
        }
        if pv.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolume {name:?} is being deleted"));
        }
        let held = pv
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == LOCAL_PATH_CLEANUP);
        if !held {
            // Held before the directory exists: a volume deleted meanwhile
            // is refused the finalizer and never gets a directory.
            let mut finalizers = pv.metadata.finalizers.clone().unwrap_or_default();
            finalizers.push(LOCAL_PATH_CLEANUP.to_owned());
            let patch = json!({"metadata": {"finalizers": finalizers,
                "resourceVersion": pv.metadata.resource_version}});
            Api::<PersistentVolume>::all(client.clone())
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| format!("holding persistentvolume {name:?}: {e}"))?;
        }
        if !path.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            // As upstream's local-path provisioner: any user of the pod
            // may write it.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(path)
    }

    /// One pass over the directories: those of deleted volumes go (or
    /// stay, under Retain), and the volumes are let go.
    pub async fn sweep(&self, client: &Client) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let api = Api::<PersistentVolume>::all(client.clone());
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let pv = match api.get_opt(&name).await {
                Ok(Some(pv)) => pv,
                // Gone, or no longer this node's: the data stays.
                Ok(None) | Err(_) => continue,
            };
            if pv.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let policy = pv
                .spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
            if policy == Some("Delete") {
                if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                    tracing::warn!(volume = %name, error = %e, "removing a local-path volume");
                    continue;
                }
                tracing::info!(volume = %name, "local-path volume removed");
            }
            let rest: Vec<String> = pv
                .metadata
                .finalizers
                .iter()
                .flatten()
                .filter(|f| *f != LOCAL_PATH_CLEANUP)
                .cloned()
                .collect();
            let patch = json!({"metadata": {"finalizers": rest,
                "resourceVersion": pv.metadata.resource_version}});
            if let Err(e) = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(volume = %name, error = %e, "releasing a local-path volume");
            }
        }
    }

    /// Sweeps until the task is dropped.
    pub async fn run(&self, client: Client) {
        loop {
            self.sweep(&client).await;
            tokio::time::sleep(SWEEP).await;
        }
    }
}
