//! What workload controllers share about pods: ownership, readiness and
//! making pods from templates.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::core::ApiResource;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use skiff_core::selector;

use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::events;
use skiff_runtime::expectations::Expectations;

/// The owner reference that marks `obj` as the controller of what it makes.
pub fn controller_ref<K: Resource<DynamicType = ()>>(obj: &K) -> Value {
    json!({
        "apiVersion": K::api_version(&()), "kind": K::kind(&()),
        "name": obj.name_any(), "uid": obj.uid(),
        "controller": true, "blockOwnerDeletion": true,
    })
}

/// The controlling owner of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// Whether `meta` is controlled by the object with this uid.
pub fn controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_of(meta).is_some_and(|r| r.uid == uid)
}

/// Whether a label selector matches labels; an empty or missing selector
/// matches nothing, as workload controllers treat it.
pub fn selects(sel: Option<&LabelSelector>, meta: &ObjectMeta) -> bool {
    let Some(sel) = sel else { return false };
    let value = serde_json::to_value(sel).unwrap_or_default();
    let Ok(sel) = selector::LabelSelector::from_object(&value) else {
        return false;
    };
    !sel.is_empty() && sel.matches(|k| meta.labels.as_ref()?.get(k).map(String::as_str))
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Not finished and not being deleted (upstream's `IsPodActive`).
pub fn is_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_none()
}

/// Being deleted but not finished (upstream's `IsPodTerminating`).
pub fn is_terminating(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && pod.metadata.deletion_timestamp.is_some()
}

/// What the controller manager caches of a pod: its loops read metadata,
/// status, placement, tolerations, containers' names, images, resources and
/// ports, and claims; never containers' commands, environment, mounts,
/// probes, hooks or security settings, ephemeral containers, nor volumes
/// other than claims. The pods are read without the first ones
/// ([`ForControllers`](skiff_runtime::lean::ForControllers)), and this
/// drops the volumes that are no claim, which that read leaves with a
/// name only. Typed, a pod's projected token volume alone is ~5 KB of its
/// ~14 KB, so leaving them out keeps the cache of many pods a third
/// smaller (as upstream's managers drop managed fields).
pub fn trim(pod: &mut Pod) {
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if let Some(volumes) = spec.volumes.as_mut() {
        volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        volumes.shrink_to_fit();
    }
    if spec.volumes.as_ref().is_some_and(Vec::is_empty) {
        spec.volumes = None;
    }
}

/// When the pod's Ready condition turned true, if it is true.
pub fn ready_since(pod: &Pod) -> Option<chrono::DateTime<chrono::Utc>> {
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?;
    let t = c
        .last_transition_time
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    chrono::DateTime::from_timestamp_millis(t)
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: chrono::DateTime<chrono::Utc>) -> bool {
    ready_since(pod).is_some_and(|t| {
        min_ready_seconds <= 0 || t + chrono::Duration::seconds(min_ready_seconds.into()) <= now
    })
}

/// A new pod from a template, owned by `owner`.
pub fn from_template(template: Option<&PodTemplateSpec>, namespace: &str, owner: Value) -> Value {
    let template = template
        .map(|t| serde_json::to_value(t).unwrap_or_default())
        .unwrap_or_default();
    let mut meta = template["metadata"].clone();
    if !meta.is_object() {
        meta = json!({});
    }
    meta["namespace"] = json!(namespace);
    meta["ownerReferences"] = json!([owner]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
        m.remove("resourceVersion");
        m.remove("uid");
        m.remove("creationTimestamp");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"]})
}

/// Upstream's ranking of pods to delete first when scaling down: unbound
/// before bound, pending before unknown before running, not ready before
/// ready, more restarts before fewer, newer before older.
pub fn deletion_rank(pod: &Pod) -> impl Ord {
    let bound = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let restarts: i32 = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_millisecond())
        .unwrap_or(0);
    (
        bound,
        phase,
        is_ready(pod),
        std::cmp::Reverse(restarts),
        std::cmp::Reverse(created),
    )
}

/// The slow-start batch sizes for creating `n` objects: 1, 2, 4, …
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let (mut left, mut size) = (n, 1);
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

/// Creates and deletes one owner's pods with upstream's events, keeping the
/// owner's expectations honest when a write fails.
pub struct PodControl<'a, K> {
    pub cluster: &'a dyn Cluster,
    pub expectations: &'a Expectations,
    /// The owner's key in its expectations.
    pub key: &'a str,
    pub owner: &'a K,
    pub component: &'static str,
}

impl<K: Resource<DynamicType = ()> + Sync> PodControl<'_, K> {
    fn event(&self, warning: bool, reason: &str, message: &str) {
        self.cluster.event(events::about(
            self.owner,
            self.component,
            warning,
            reason,
            message,
        ));
    }

    /// Creates `pod`; its creation was expected.
    pub async fn create(&self, pod: Value) -> Result<(), Error> {
        let ns = pod["metadata"]["namespace"].as_str().map(str::to_owned);
        match self
            .cluster
            .create(&ApiResource::erase::<Pod>(&()), ns.as_deref(), pod)
            .await
        {
            Ok(created) => {
                let name = created["metadata"]["name"].as_str().unwrap_or("");
                self.event(false, "SuccessfulCreate", &format!("Created pod: {name}"));
                Ok(())
            }
            Err(e) => {
                self.expectations.creation_observed(self.key);
                self.event(true, "FailedCreate", &format!("Error creating: {e}"));
                Err(e)
            }
        }
    }

    /// Deletes `pod`; its deletion was expected. A pod already gone is no
    /// error.
    pub async fn delete(&self, pod: &Pod) -> Result<(), Error> {
        let target = Target::of::<Pod>(pod.namespace().as_deref(), &pod.name_any());
        let how = Deletion {
            uid: pod.uid(),
            ..Default::default()
        };
        match self.cluster.delete(&target, how).await {
            Ok(()) => {
                self.event(
                    false,
                    "SuccessfulDelete",
                    &format!("Deleted pod: {}", pod.name_any()),
                );
                Ok(())
            }
            Err(e) => {
                self.expectations.deletion_observed(self.key);
                if e.is_not_found() {
                    return Ok(());
                }
                self.event(true, "FailedDelete", &format!("Error deleting: {e}"));
                Err(e)
            }
        }
    }

    /// Deletes `pods` at once; their deletions were expected.
    pub async fn delete_all(&self, pods: &[Arc<Pod>]) -> Result<(), Error> {
        let results = futures::future::join_all(pods.iter().map(|p| self.delete(p))).await;
        results.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::lean::{ForControllers, Lean};

    #[test]
    fn a_pod_read_for_the_controllers_and_trimmed_keeps_what_the_loops_read() {
        let container = json!({
            "name": "app", "image": "nginx", "command": ["sh"], "args": ["-c", "sleep 1"],
            "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "token", "mountPath": "/t"}],
            "ports": [{"name": "http", "containerPort": 80}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}},
            "readinessProbe": {"httpGet": {"port": 80}}, "securityContext": {"runAsUser": 1000},
        });
        let json = json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}]},
            "spec": {
                "nodeName": "n1", "hostname": "web-0", "subdomain": "web", "priorityClassName": "high",
                "activeDeadlineSeconds": 30, "overhead": {"cpu": "10m"},
                "initContainers": [container.clone()], "containers": [container],
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}],
                "volumes": [
                    {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data-0"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
                ],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.5",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "app", "image": "nginx", "imageID": "", "ready": true, "restartCount": 2}]},
        });
        let pod: Pod = serde_json::from_value(json.clone()).unwrap();
        let read: Lean<Pod, ForControllers> = serde_json::from_value(json).unwrap();
        let mut trimmed = read.0;
        trim(&mut trimmed);

        let (s, t) = (pod.spec.as_ref().unwrap(), trimmed.spec.as_ref().unwrap());
        let volumes: Vec<_> = t
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["data", "scratch"]);
        assert_eq!(
            crate::volume::claims_of(&trimmed).collect::<Vec<_>>(),
            ["data-0", "p-scratch"]
        );
        for (c, full) in t
            .containers
            .iter()
            .chain(t.init_containers.iter().flatten())
            .zip(
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten()),
            )
        {
            assert!(c.command.is_none() && c.args.is_none() && c.env.is_none());
            assert!(c.volume_mounts.is_none() && c.readiness_probe.is_none());
            assert!(c.security_context.is_none());
            assert!(c.liveness_probe.is_none() && c.lifecycle.is_none());
            assert_eq!((&c.name, &c.image), (&full.name, &full.image));
            assert_eq!((&c.resources, &c.ports), (&full.resources, &full.ports));
        }
        assert_eq!(trimmed.metadata, pod.metadata);
        assert_eq!(trimmed.status, pod.status);
        assert_eq!(
            (&t.node_name, &t.hostname, &t.subdomain, &t.tolerations),
            (&s.node_name, &s.hostname, &s.subdomain, &s.tolerations)
        );
        let counted =
            |p: &Pod| skiff_core::quota::usage("", "pods", &skiff_runtime::api::encode(p));
        assert_eq!(counted(&trimmed), counted(&pod));
        assert!(!counted(&pod).is_empty());
        assert!(is_ready(&trimmed) && is_active(&trimmed));
    }

    #[test]
    fn slow_start_doubles() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
    }
}
