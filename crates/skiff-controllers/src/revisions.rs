//! ControllerRevisions: the template history of StatefulSets and
//! DaemonSets, which `kubectl rollout history|undo` read.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

use crate::pods;
use crate::rollout;
use skiff_runtime::api::{self, Cluster, Error};
use skiff_runtime::cache::Cache;

/// The revision recording `template`: `(name, hash)`. It is created when
/// missing, and given the newest number when an old template returns.
pub async fn ensure<K: Resource<DynamicType = ()>>(
    cluster: &dyn Cluster,
    revisions: &Cache<ControllerRevision>,
    owner: &K,
    template: Option<&PodTemplateSpec>,
    labels: Value,
    collision_count: Option<i32>,
) -> Result<(String, String), Error> {
    let template = serde_json::to_value(template).unwrap_or_default();
    let hash = rollout::template_hash(&rollout::without_hash(&template), collision_count);
    let name = format!("{}-{hash}", owner.name_any());
    let ns = owner.namespace().unwrap_or_default();
    let owned = history(revisions, owner);
    let newest = owned.iter().map(|r| r.revision).max().unwrap_or(0);
    if let Some(existing) = owned.iter().find(|r| r.name_any() == name) {
        if existing.revision < newest {
            let target = api::Target::of::<ControllerRevision>(Some(&ns), &name);
            cluster
                .merge_patch(&target, json!({"revision": newest + 1}), false)
                .await?;
        }
        return Ok((name, hash));
    }
    let mut patched = template.clone();
    patched["$patch"] = json!("replace");
    let revision = json!({
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "ownerReferences": [pods::controller_ref(owner)]},
        "data": {"spec": {"template": patched}},
        "revision": newest + 1,
    });
    match api::create::<ControllerRevision>(cluster, &revision).await {
        Err(e) if !e.is_conflict() => Err(e),
        _ => Ok((name, hash)),
    }
}

/// The revisions `owner` controls, oldest first.
pub fn history<K: Resource<DynamicType = ()>>(
    revisions: &Cache<ControllerRevision>,
    owner: &K,
) -> Vec<Arc<ControllerRevision>> {
    let uid = owner.uid().unwrap_or_default();
    let mut out: Vec<_> = revisions
        .list_in(&owner.namespace().unwrap_or_default())
        .into_iter()
        .filter(|r| pods::controlled_by(&r.metadata, &uid))
        .collect();
    out.sort_by_key(|r| r.revision);
    out
}

/// Deletes the oldest `count` of `unused` (revisions no pod runs, oldest
/// first): the clean-up that keeps a history to `revisionHistoryLimit`.
pub async fn delete_oldest(
    cluster: &dyn Cluster,
    unused: &[Arc<ControllerRevision>],
    count: usize,
) -> Result<(), Error> {
    for r in unused.iter().take(count) {
        api::delete_exact(cluster, &**r).await?;
    }
    Ok(())
}

/// A workload's `revisionHistoryLimit`: 10 unless set.
pub fn limit(set: Option<i32>) -> usize {
    set.unwrap_or(10).max(0) as usize
}

/// The pod template a revision recorded.
pub fn template_of(revision: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = revision.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

#[cfg(test)]
pub mod testing {
    use serde_json::json;

    use super::*;

    /// Revision `n` of the `kind` named `owner` (uid `uid`) in namespace d.
    pub fn revision(kind: &str, owner: &str, uid: &str, name: &str, n: i64) -> ControllerRevision {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "ownerReferences": [{"apiVersion": "apps/v1",
                "kind": kind, "name": owner, "uid": uid, "controller": true}]},
            "revision": n,
        }))
        .unwrap()
    }

    /// The revisions a fake cluster was asked to delete.
    pub fn deleted(fake: &skiff_runtime::fake::FakeCluster) -> Vec<String> {
        fake.made("delete")
            .into_iter()
            .filter(|d| d.starts_with("controllerrevisions "))
            .collect()
    }
}
