//! The Deployment controller: one ReplicaSet per pod template, rolled
//! forward by RollingUpdate (maxSurge, maxUnavailable) or Recreate, with
//! revisions, history limits and Progressing/Available conditions. It
//! never touches pods: the ReplicaSet controller does.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::owned;
use crate::pods::{self, controller_of};
use crate::rollout::{self, HASH_LABEL};
use crate::status::omit_zero;
use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "deployment-controller";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
const DESIRED: &str = "deployment.kubernetes.io/desired-replicas";
const MAX: &str = "deployment.kubernetes.io/max-replicas";
/// Annotations of a Deployment that its ReplicaSets do not copy.
const NOT_COPIED: &[&str] = &[
    REVISION,
    DESIRED,
    MAX,
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision-history",
];

pub struct DeploymentController {
    pub deployments: Arc<Cache<Deployment>>,
    pub sets: Arc<Cache<ReplicaSet>>,
    pub pods: Arc<Cache<Pod>>,
    pub cluster: Arc<dyn Cluster>,
}

impl DeploymentController {
    pub fn new(
        deployments: &mut Informer<Deployment>,
        sets: &mut Informer<ReplicaSet>,
        pods: &Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        owned::queue_self(deployments, queue.clone());
        let cache = deployments.cache();
        owned::track(sets, "Deployment", queue, None, move |rs: &ReplicaSet| {
            let ns = rs.namespace().unwrap_or_default();
            cache
                .list_in(&ns)
                .iter()
                .filter(|d| pods::selects(d.spec.as_ref().map(|s| &s.selector), &rs.metadata))
                .map(|d| format!("{ns}/{}", d.name_any()))
                .collect()
        });
        Self {
            deployments: deployments.cache(),
            sets: sets.cache(),
            pods: pods.cache(),
            cluster,
        }
    }
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(
    rs: &ReplicaSet,
    f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>,
) -> i32 {
    rs.status.as_ref().and_then(f).unwrap_or(0)
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn template_value(t: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>) -> Value {
    serde_json::to_value(t).unwrap_or_default()
}

/// One pass over a Deployment and its ReplicaSets.
struct Pass<'a> {
    c: &'a DeploymentController,
    d: &'a Deployment,
    want: i32,
    surge: i32,
    unavailable: i32,
    /// The ReplicaSet running the current template, if it exists.
    new: Option<ReplicaSet>,
    olds: Vec<ReplicaSet>,
    /// Whether this pass created the new ReplicaSet.
    created: bool,
}

impl Pass<'_> {
    async fn scale(&self, rs: &ReplicaSet, to: i32) -> Result<(), Error> {
        let from = replicas(rs);
        if from == to {
            return Ok(());
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED: self.want.to_string(), MAX: (self.want + self.surge).to_string()}},
            "spec": {"replicas": to},
        });
        let target = Target::of::<ReplicaSet>(rs.namespace().as_deref(), &rs.name_any());
        self.c.cluster.merge_patch(&target, patch, false).await?;
        let dir = if to > from { "up" } else { "down" };
        self.c.cluster.event(events::about(
            self.d,
            COMPONENT,
            false,
            "ScalingReplicaSet",
            &format!(
                "Scaled {dir} replica set {} from {from} to {to}",
                rs.name_any()
            ),
        ));
        Ok(())
    }

    fn total(&self) -> i32 {
        self.new.iter().chain(&self.olds).map(replicas).sum()
    }

    fn next_revision(&self) -> i64 {
        self.olds.iter().map(revision).max().unwrap_or(0) + 1
    }

    /// Finds the new ReplicaSet or creates it with `initial` replicas, and
    /// gives it the newest revision.
    async fn ensure_new(&mut self, initial: i32) -> Result<(), Error> {
        let d = self.d;
        let next = self.next_revision();
        if let Some(rs) = &self.new {
            // An old template back in use (rollout undo) gets the next
            // revision.
            if revision(rs) < next - 1 || revision(rs) == 0 {
                let target = Target::of::<ReplicaSet>(rs.namespace().as_deref(), &rs.name_any());
                let patch = json!({"metadata": {"annotations": {REVISION: next.to_string()}}});
                let updated = self.c.cluster.merge_patch(&target, patch, false).await?;
                self.new = serde_json::from_value(updated).ok().or(self.new.take());
            }
            return Ok(());
        }
        let spec = d.spec.clone().unwrap_or_default();
        let mut template = template_value(Some(&spec.template));
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = rollout::template_hash(&rollout::without_hash(&template), collisions);
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        let mut selector = serde_json::to_value(&spec.selector).unwrap_or_default();
        selector["matchLabels"][HASH_LABEL] = json!(hash);
        let mut annotations: serde_json::Map<String, Value> = d
            .annotations()
            .iter()
            .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        annotations.insert(REVISION.into(), json!(next.to_string()));
        annotations.insert(DESIRED.into(), json!(self.want.to_string()));
        annotations.insert(MAX.into(), json!((self.want + self.surge).to_string()));
        let name = format!("{}-{hash}", d.name_any());
        let rs = json!({
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": d.namespace(), "labels": template["metadata"]["labels"],
                         "annotations": annotations, "ownerReferences": [pods::controller_ref(d)]},
            "spec": {"replicas": initial, "minReadySeconds": spec.min_ready_seconds.unwrap_or(0), "selector": selector, "template": template},
        });
        match skiff_runtime::api::create::<ReplicaSet>(&*self.c.cluster, &rs).await {
            Ok(created) => {
                self.created = true;
                self.c.cluster.event(events::about(
                    d,
                    COMPONENT,
                    false,
                    "ScalingReplicaSet",
                    &format!("Scaled up replica set {name} from 0 to {initial}"),
                ));
                self.new = Some(created);
                Ok(())
            }
            Err(e) if e.is_conflict() => {
                // A ReplicaSet of that name exists with another template:
                // count the collision so the next hash differs.
                let existing = self
                    .c
                    .sets
                    .get(&format!("{}/{name}", d.namespace().unwrap_or_default()));
                let same = existing.as_ref().is_some_and(|rs| {
                    controller_of(&rs.metadata).is_some_and(|r| Some(&r.uid) == d.uid().as_ref())
                        && rollout::without_hash(&template_value(
                            rs.spec.as_ref().and_then(|s| s.template.as_ref()),
                        )) == rollout::without_hash(&template_value(Some(&spec.template)))
                });
                if !same {
                    let target = Target::of::<Deployment>(d.namespace().as_deref(), &d.name_any());
                    let patch = json!({"status": {"collisionCount": collisions.unwrap_or(0) + 1}});
                    self.c.cluster.merge_patch(&target, patch, true).await?;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// RollingUpdate: scale the new set up within surge, then old sets down
    /// within unavailability. Returns whether it scaled anything.
    async fn rolling(&mut self) -> Result<bool, Error> {
        let max_total = self.want + self.surge;
        if self.new.is_none() {
            let initial = (max_total - self.total()).clamp(0, self.want);
            self.ensure_new(initial).await?;
            return Ok(true);
        }
        self.ensure_new(0).await?;
        let new = self.new.clone().expect("ensured");
        let current = replicas(&new);
        if current > self.want {
            self.scale(&new, self.want).await?;
            return Ok(true);
        }
        if current < self.want {
            let up = (max_total - self.total() + current).min(self.want);
            if up > current {
                self.scale(&new, up).await?;
                return Ok(true);
            }
        }
        // Scale old sets down, never below the minimum available.
        let old_total: i32 = self.olds.iter().map(replicas).sum();
        if old_total == 0 {
            return Ok(false);
        }
        let min_available = self.want - self.unavailable;
        let new_unavailable = replicas(&new) - status_of(&new, |s| s.available_replicas);
        let mut budget = self.total() - min_available - new_unavailable;
        if budget <= 0 {
            return Ok(false);
        }
        let mut olds = self.olds.clone();
        olds.sort_by_key(|rs| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0)
        });
        let mut scaled = false;
        // First the unhealthy pods of old sets.
        for rs in &mut olds {
            let unhealthy = replicas(rs) - status_of(rs, |s| s.available_replicas);
            let cut = unhealthy.min(budget).max(0);
            if cut > 0 && replicas(rs) > 0 {
                self.scale(rs, replicas(rs) - cut).await?;
                rs.spec.get_or_insert_with(Default::default).replicas = Some(replicas(rs) - cut);
                budget -= cut;
                scaled = true;
            }
        }
        // Then available ones, as long as enough stay available.
        let available: i32 = self
            .new
            .iter()
            .chain(&olds)
            .map(|rs| status_of(rs, |s| s.available_replicas))
            .sum();
        let mut left = (available - min_available).min(budget);
        for rs in &olds {
            if left <= 0 {
                break;
            }
            let cut = replicas(rs).min(left);
            if cut > 0 {
                self.scale(rs, replicas(rs) - cut).await?;
                left -= cut;
                scaled = true;
            }
        }
        Ok(scaled)
    }

    /// Recreate: old sets to zero, wait for their pods to go, then the new.
    async fn recreate(&mut self) -> Result<bool, Error> {
        let mut scaled = false;
        for rs in &self.olds {
            if replicas(rs) > 0 {
                self.scale(rs, 0).await?;
                scaled = true;
            }
        }
        if scaled {
            return Ok(true);
        }
        let old_running = self
            .olds
            .iter()
            .any(|rs| status_of(rs, |s| Some(s.replicas)) > 0)
            || self
                .c
                .pods
                .list_in(&self.d.namespace().unwrap_or_default())
                .iter()
                .any(|p| {
                    pods::is_active(p)
                        && self.olds.iter().any(|rs| {
                            controller_of(&p.metadata)
                                .is_some_and(|r| Some(&r.uid) == rs.uid().as_ref())
                        })
                });
        if old_running {
            return Ok(false);
        }
        if self.new.is_none() {
            self.ensure_new(self.want).await?;
            return Ok(true);
        }
        self.ensure_new(0).await?;
        let new = self.new.clone().expect("ensured");
        if replicas(&new) != self.want {
            self.scale(&new, self.want).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// A paused Deployment only follows `replicas`, on its active set.
    async fn scale_only(&self) -> Result<bool, Error> {
        let active: Vec<&ReplicaSet> = self
            .new
            .iter()
            .chain(&self.olds)
            .filter(|rs| replicas(rs) > 0)
            .collect();
        let target = match (active.as_slice(), &self.new) {
            ([one], _) => Some(*one),
            ([], Some(new)) => Some(new),
            _ => None,
        };
        if let Some(rs) = target {
            if replicas(rs) != self.want {
                self.scale(rs, self.want).await?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes fully scaled-down old sets beyond `revisionHistoryLimit`.
    async fn clean_up(&self) -> Result<(), Error> {
        let limit = self
            .d
            .spec
            .as_ref()
            .and_then(|s| s.revision_history_limit)
            .unwrap_or(10)
            .max(0) as usize;
        let mut idle: Vec<&ReplicaSet> = self
            .olds
            .iter()
            .filter(|rs| {
                replicas(rs) == 0
                    && status_of(rs, |s| Some(s.replicas)) == 0
                    && rs.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if idle.len() <= limit {
            return Ok(());
        }
        idle.sort_by_key(|rs| revision(rs));
        for rs in &idle[..idle.len() - limit] {
            let target = Target::of::<ReplicaSet>(rs.namespace().as_deref(), &rs.name_any());
            match self
                .c
                .cluster
                .delete(
                    &target,
                    Deletion {
                        uid: rs.uid(),
                        ..Default::default()
                    },
                )
                .await
            {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes replicas counts and conditions; returns when to look again.
    async fn status(&self, progressed: bool) -> Result<Option<Duration>, Error> {
        let d = self.d;
        let spec = d.spec.clone().unwrap_or_default();
        let all: Vec<&ReplicaSet> = self.new.iter().chain(&self.olds).collect();
        let sum = |f: fn(&k8s_openapi::api::apps::v1::ReplicaSetStatus) -> Option<i32>| -> i32 {
            all.iter().map(|rs| status_of(rs, f)).sum()
        };
        let total = sum(|s| Some(s.replicas));
        let ready = sum(|s| s.ready_replicas);
        let available = sum(|s| s.available_replicas);
        let updated = self
            .new
            .as_ref()
            .map_or(0, |rs| status_of(rs, |s| Some(s.replicas)));
        // As upstream's GetTerminatingReplicaCountForReplicaSets: unknown
        // while a ReplicaSet its controller has synced does not count them;
        // one not synced yet counts none.
        let terminating = all.iter().try_fold(0, |n, rs| {
            let s = rs.status.as_ref();
            match s.and_then(|s| s.terminating_replicas) {
                Some(t) => Some(n + t),
                None if s.and_then(|s| s.observed_generation).unwrap_or(0) == 0 => Some(n),
                None => None,
            }
        });
        let now = chrono::Utc::now();
        let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let old = d.status.clone().unwrap_or_default();
        let old_conditions = old.conditions.clone().unwrap_or_default();
        let previous = |t: &str| old_conditions.iter().find(|c| c.type_ == t);
        let condition = |t: &str, status: &str, reason: &str, message: String, touch: bool| {
            let prev = previous(t);
            let same = prev.is_some_and(|c| c.status == status);
            let keep = |f: Option<String>| {
                if same {
                    f.unwrap_or_else(|| stamp.clone())
                } else {
                    stamp.clone()
                }
            };
            let last_update = if touch || prev.is_none_or(|c| c.reason.as_deref() != Some(reason)) {
                stamp.clone()
            } else {
                prev.and_then(|c| c.last_update_time.as_ref())
                    .map(|t| t.0.to_string())
                    .unwrap_or_else(|| stamp.clone())
            };
            json!({"type": t, "status": status, "reason": reason, "message": message,
                   "lastUpdateTime": last_update,
                   "lastTransitionTime": keep(prev.and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0.to_string()))})
        };
        let available_cond = if available >= self.want - self.unavailable {
            condition(
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                false,
            )
        } else {
            condition(
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                false,
            )
        };
        let new_name = self
            .new
            .as_ref()
            .map(|rs| rs.name_any())
            .unwrap_or_default();
        let complete = updated == self.want
            && available >= self.want
            && total == self.want
            && self
                .new
                .as_ref()
                .is_some_and(|rs| replicas(rs) == self.want);
        let counts_changed = [
            (old.replicas, total),
            (old.updated_replicas, updated),
            (old.ready_replicas, ready),
            (old.available_replicas, available),
        ]
        .iter()
        .any(|&(was, now)| was.unwrap_or(0) != now);
        let deadline = spec.progress_deadline_seconds.unwrap_or(600);
        let mut requeue = None;
        let progressing = if spec.paused == Some(true) {
            condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
                false,
            )
        } else if complete {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{new_name}\" has successfully progressed."),
                false,
            )
        } else if self.created {
            condition(
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{new_name}\""),
                true,
            )
        } else if progressed
            || counts_changed
            || previous("Progressing").is_none_or(|c| {
                c.reason.as_deref() == Some("NewReplicaSetAvailable")
                    || c.reason.as_deref() == Some("DeploymentPaused")
            })
        {
            requeue = Some(Duration::from_secs(deadline.max(1) as u64));
            condition(
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{new_name}\" is progressing."),
                true,
            )
        } else {
            let since = previous("Progressing")
                .and_then(|c| c.last_update_time.as_ref())
                .map(|t| t.0.as_second())
                .unwrap_or(now.timestamp());
            let left = since + i64::from(deadline) - now.timestamp();
            if left <= 0
                || previous("Progressing")
                    .is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            {
                condition(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{new_name}\" has timed out progressing."),
                    false,
                )
            } else {
                requeue = Some(Duration::from_secs(left as u64));
                let prev = previous("Progressing").cloned();
                prev.map(|c| serde_json::to_value(c).unwrap_or_default())
                    .unwrap_or_default()
            }
        };
        let status = json!({
            "observedGeneration": d.metadata.generation,
            "replicas": omit_zero(total), "updatedReplicas": omit_zero(updated),
            "readyReplicas": omit_zero(ready), "availableReplicas": omit_zero(available),
            "unavailableReplicas": omit_zero((self.want - available).max(0)),
            "terminatingReplicas": terminating,
            "conditions": [available_cond, progressing],
        });
        let mut merged = serde_json::to_value(&old).unwrap_or_default();
        json_patch::merge(&mut merged, &status);
        let before = serde_json::to_value(&old).unwrap_or_default();
        let strip = |v: &Value| {
            let mut v = v.clone();
            for c in v["conditions"].as_array_mut().into_iter().flatten() {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastUpdateTime");
                    o.remove("lastTransitionTime");
                }
            }
            v
        };
        if strip(&merged) != strip(&before) {
            let target = Target::of::<Deployment>(d.namespace().as_deref(), &d.name_any());
            self.c
                .cluster
                .merge_patch(&target, json!({"status": status}), true)
                .await?;
        }
        Ok(requeue)
    }
}

#[async_trait]
impl Reconcile for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(Action::Done);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = d.spec.clone().unwrap_or_default();
        let uid = d.uid().unwrap_or_default();
        let template = rollout::without_hash(&template_value(Some(&spec.template)));
        let mut new = None;
        let mut olds = Vec::new();
        let mut sets: Vec<Arc<ReplicaSet>> = Vec::new();
        for rs in self.sets.list_in(&d.namespace().unwrap_or_default()) {
            let matches = pods::selects(Some(&spec.selector), &rs.metadata);
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        sets.push(rs);
                    } else {
                        self.set_owner(&d, &rs, false).await?;
                    }
                }
                None if matches => {
                    self.set_owner(&d, &rs, true).await?;
                    sets.push(rs);
                }
                _ => {}
            }
        }
        sets.sort_by_key(|rs| {
            rs.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond())
                .unwrap_or(0)
        });
        for rs in sets {
            let t = rollout::without_hash(&template_value(
                rs.spec.as_ref().and_then(|s| s.template.as_ref()),
            ));
            if new.is_none() && t == template {
                new = Some((*rs).clone());
            } else {
                olds.push((*rs).clone());
            }
        }
        let want = spec.replicas.unwrap_or(1).max(0);
        let rolling = spec
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref());
        let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        let (surge, unavailable) = if recreate {
            (0, want)
        } else {
            rollout::surge_and_unavailable(
                rolling.and_then(|r| r.max_surge.as_ref()),
                rolling.and_then(|r| r.max_unavailable.as_ref()),
                want,
            )
        };
        let mut pass = Pass {
            c: self,
            d: &d,
            want,
            surge,
            unavailable,
            new,
            olds,
            created: false,
        };
        let progressed = if spec.paused == Some(true) {
            pass.scale_only().await?
        } else if recreate {
            pass.recreate().await?
        } else {
            pass.rolling().await?
        };
        if let Some(rs) = &pass.new {
            let rev = revision(rs).to_string();
            if d.annotations().get(REVISION) != Some(&rev) {
                let target = Target::of::<Deployment>(d.namespace().as_deref(), &d.name_any());
                self.cluster
                    .merge_patch(
                        &target,
                        json!({"metadata": {"annotations": {REVISION: rev}}}),
                        false,
                    )
                    .await?;
            }
        }
        if !progressed && spec.paused != Some(true) {
            pass.clean_up().await?;
        }
        Ok(match pass.status(progressed).await? {
            Some(d) => Action::RequeueAfter(d),
            None => Action::Done,
        })
    }
}

impl DeploymentController {
    async fn set_owner(&self, d: &Deployment, rs: &ReplicaSet, adopt: bool) -> Result<(), Error> {
        let mut refs: Vec<Value> = rs
            .metadata
            .owner_references
            .iter()
            .flatten()
            .filter(|r| Some(&r.uid) != d.uid().as_ref())
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        if adopt {
            refs.push(pods::controller_ref(d));
        }
        let target = Target::of::<ReplicaSet>(rs.namespace().as_deref(), &rs.name_any());
        self.cluster
            .merge_patch(
                &target,
                json!({"metadata": {"ownerReferences": refs, "uid": rs.uid()}}),
                false,
            )
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn deployment(image: &str, replicas: i32) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}},
        }))
        .unwrap()
    }

    /// A ReplicaSet as the controller made it, with `available` pods.
    fn rs_for(
        d: &Deployment,
        replicas: i32,
        available: i32,
        revision: i64,
        created: &str,
    ) -> ReplicaSet {
        let t = template_value(d.spec.as_ref().map(|s| &s.template));
        let hash = rollout::template_hash(&rollout::without_hash(&t), None);
        let mut template = t.clone();
        template["metadata"]["labels"][HASH_LABEL] = json!(hash);
        serde_json::from_value(json!({
            "metadata": {"name": format!("web-{hash}"), "namespace": "d", "uid": format!("rs-{hash}"), "labels": template["metadata"]["labels"],
                         "creationTimestamp": created, "annotations": {REVISION: revision.to_string()},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": true}]},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", HASH_LABEL: hash}}, "template": template},
            "status": {"replicas": replicas, "readyReplicas": available, "availableReplicas": available},
        }))
        .unwrap()
    }

    fn setup() -> (
        Arc<FakeCluster>,
        Informer<Deployment>,
        Informer<ReplicaSet>,
        DeploymentController,
    ) {
        let fake = Arc::new(FakeCluster::default());
        let (mut ds, mut sets, pods) = (
            Informer::default(),
            Informer::default(),
            Informer::default(),
        );
        let c = DeploymentController::new(&mut ds, &mut sets, &pods, fake.clone(), Queue::new());
        (fake, ds, sets, c)
    }

    #[tokio::test]
    async fn creates_the_first_replica_set_at_full_size() {
        let (fake, ds, _, c) = setup();
        ds.apply(deployment("a", 3));
        c.reconcile("d/web").await.unwrap();
        let created = fake.bodies("create");
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["spec"]["replicas"], 3);
        assert_eq!(created[0]["metadata"]["annotations"][REVISION], "1");
        let hash = created[0]["metadata"]["labels"][HASH_LABEL]
            .as_str()
            .unwrap();
        assert_eq!(created[0]["metadata"]["name"], format!("web-{hash}"));
        assert_eq!(
            created[0]["spec"]["selector"]["matchLabels"][HASH_LABEL],
            hash
        );
        assert!(
            fake.event_messages()[0].starts_with("ScalingReplicaSet Scaled up replica set web-")
        );
        let status = fake.bodies("patch-status").pop().unwrap();
        assert_eq!(
            status["status"]["conditions"][1]["reason"],
            "NewReplicaSetCreated"
        );
    }

    /// One step at a time, a rolling update never has fewer than
    /// `replicas - maxUnavailable` available nor more than
    /// `replicas + maxSurge` pods.
    #[tokio::test]
    async fn rolling_update_steps_stay_within_bounds() {
        let (fake, ds, sets, c) = setup();
        let old = deployment("a", 4);
        let new_d = deployment("b", 4);
        let mut old_rs = rs_for(&old, 4, 4, 1, "2024-01-01T00:00:00Z");
        let mut new_rs = rs_for(&new_d, 0, 0, 2, "2024-01-02T00:00:00Z");
        ds.apply(new_d.clone());
        sets.apply(old_rs.clone());
        sets.apply(new_rs.clone());
        for _ in 0..12 {
            fake.clear();
            c.reconcile("d/web").await.unwrap();
            let calls = fake.calls.lock().unwrap().clone();
            for call in calls
                .iter()
                .filter(|c| c.verb == "patch" && c.body["spec"]["replicas"].is_i64())
            {
                let to = call.body["spec"]["replicas"].as_i64().unwrap() as i32;
                // Pods become available at once in this simulation.
                let target = if call.key.ends_with(&old_rs.name_any()) {
                    &mut old_rs
                } else {
                    &mut new_rs
                };
                target.spec.as_mut().unwrap().replicas = Some(to);
                let st = target.status.as_mut().unwrap();
                st.replicas = to;
                st.available_replicas = Some(to);
                st.ready_replicas = Some(to);
            }
            let total = replicas(&old_rs) + replicas(&new_rs);
            assert!(total <= 5, "at most replicas + maxSurge: {total}");
            assert!(total >= 3, "at least replicas - maxUnavailable: {total}");
            sets.apply(old_rs.clone());
            sets.apply(new_rs.clone());
        }
        assert_eq!((replicas(&old_rs), replicas(&new_rs)), (0, 4));
    }

    #[tokio::test]
    async fn terminating_replicas_sum_the_sets_counts_while_all_are_known() {
        let (fake, ds, sets, c) = setup();
        let (a, b) = (deployment("a", 2), deployment("b", 2));
        ds.apply(b.clone());
        let mut old = rs_for(&a, 0, 0, 1, "2024-01-01T00:00:00Z");
        let mut new = rs_for(&b, 2, 2, 2, "2024-01-02T00:00:00Z");
        for (rs, terminating) in [(&mut old, 2), (&mut new, 1)] {
            let st = rs.status.as_mut().unwrap();
            st.observed_generation = Some(1);
            st.terminating_replicas = Some(terminating);
        }
        sets.apply(old.clone());
        sets.apply(new.clone());
        c.reconcile("d/web").await.unwrap();
        let status = fake.bodies("patch-status").pop().unwrap()["status"].clone();
        assert_eq!(status["terminatingReplicas"], 3, "{status}");
        // A synced set that does not report them leaves the sum unknown.
        old.status.as_mut().unwrap().terminating_replicas = None;
        sets.apply(old);
        fake.clear();
        c.reconcile("d/web").await.unwrap();
        let status = fake.bodies("patch-status").pop().unwrap()["status"].clone();
        assert_eq!(status["terminatingReplicas"], Value::Null, "{status}");
    }

    #[tokio::test]
    async fn undo_gives_the_old_set_the_next_revision() {
        let (fake, ds, sets, c) = setup();
        let a = deployment("a", 2);
        let b = deployment("b", 2);
        sets.apply(rs_for(&a, 0, 0, 1, "2024-01-01T00:00:00Z"));
        sets.apply(rs_for(&b, 2, 2, 2, "2024-01-02T00:00:00Z"));
        ds.apply(a);
        c.reconcile("d/web").await.unwrap();
        let revs: Vec<Value> = fake
            .bodies("patch")
            .into_iter()
            .filter_map(|p| p["metadata"]["annotations"].get(REVISION).cloned())
            .collect();
        assert!(revs.contains(&json!("3")), "{revs:?}");
    }

    #[tokio::test]
    async fn recreate_scales_old_sets_down_first() {
        let (fake, ds, sets, c) = setup();
        let mut d = deployment("b", 2);
        d.spec.as_mut().unwrap().strategy =
            serde_json::from_value(json!({"type": "Recreate"})).unwrap();
        sets.apply(rs_for(&deployment("a", 2), 2, 2, 1, "2024-01-01T00:00:00Z"));
        ds.apply(d);
        c.reconcile("d/web").await.unwrap();
        assert!(
            fake.made("create").is_empty(),
            "the new set waits for the old pods to go"
        );
        assert_eq!(fake.bodies("patch")[0]["spec"]["replicas"], 0);
    }
}
