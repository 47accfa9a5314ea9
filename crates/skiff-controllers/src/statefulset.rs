//! The StatefulSet controller: pods `web-0…web-N` with stable names and
//! their own PersistentVolumeClaims, created in order (OrderedReady) or all
//! at once (Parallel), updated from the highest ordinal down to the
//! partition, with ControllerRevisions as history.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, PodTemplateSpec};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::owned;
use crate::pods;
use crate::revisions;
use crate::rollout;
use crate::status::omit_zero;
use skiff_runtime::api::{self, Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "statefulset-controller";
pub const REVISION_LABEL: &str = "controller-revision-hash";
const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct StatefulSetController {
    pub sets: Arc<Cache<StatefulSet>>,
    pub pods: Arc<Cache<Pod>>,
    pub revisions: Arc<Cache<ControllerRevision>>,
    pub claims: Arc<Cache<PersistentVolumeClaim>>,
    pub cluster: Arc<dyn Cluster>,
}

impl StatefulSetController {
    pub fn new(
        sets: &mut Informer<StatefulSet>,
        pods: &mut Informer<Pod>,
        revisions: &mut Informer<ControllerRevision>,
        claims: &Informer<PersistentVolumeClaim>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        owned::queue_self(sets, queue.clone());
        owned::track(pods, "StatefulSet", queue.clone(), None, |_| Vec::new());
        owned::track(revisions, "StatefulSet", queue, None, |_| Vec::new());
        Self {
            sets: sets.cache(),
            pods: pods.cache(),
            revisions: revisions.cache(),
            claims: claims.cache(),
            cluster,
        }
    }

    async fn ensure_claims(&self, sts: &StatefulSet, ordinal: i32) -> Result<(), Error> {
        let ns = sts.namespace().unwrap_or_default();
        let labels = serde_json::to_value(
            sts.spec
                .as_ref()
                .and_then(|s| s.selector.match_labels.clone()),
        )
        .unwrap_or_default();
        for t in sts
            .spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
        {
            let name = format!("{}-{}-{ordinal}", t.name_any(), sts.name_any());
            if self.claims.get(&format!("{ns}/{name}")).is_some() {
                continue;
            }
            let mut claim_labels = labels.clone();
            if let (Some(l), Some(extra)) =
                (claim_labels.as_object_mut(), t.metadata.labels.as_ref())
            {
                l.extend(extra.iter().map(|(k, v)| (k.clone(), json!(v))));
            }
            let mut claim = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": ns, "labels": claim_labels, "annotations": t.metadata.annotations},
                "spec": t.spec,
            });
            // whenDeleted: Delete makes the set own its claims, so they
            // go with it.
            if retention(sts).0 == "Delete" {
                claim["metadata"]["ownerReferences"] = json!([pods::controller_ref(sts)]);
            }
            match api::create::<PersistentVolumeClaim>(&*self.cluster, &claim).await {
                Ok(_) => self.cluster.event(events::about(
                    sts,
                    COMPONENT,
                    false,
                    "SuccessfulCreate",
                    &format!(
                        "create Claim {name} Pod {}-{ordinal} in StatefulSet {} success",
                        sts.name_any(),
                        sts.name_any()
                    ),
                )),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn create_pod(
        &self,
        sts: &StatefulSet,
        ordinal: i32,
        template: Option<&PodTemplateSpec>,
        revision: &str,
    ) -> Result<(), Error> {
        self.ensure_claims(sts, ordinal).await?;
        let ns = sts.namespace().unwrap_or_default();
        let set = sts.name_any();
        let name = format!("{set}-{ordinal}");
        let mut pod = pods::from_template(template, &ns, pods::controller_ref(sts));
        pod["metadata"]["name"] = json!(name);
        let labels = &mut pod["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[POD_NAME_LABEL] = json!(name);
        labels[POD_INDEX_LABEL] = json!(ordinal.to_string());
        labels[REVISION_LABEL] = json!(revision);
        let spec = &mut pod["spec"];
        spec["hostname"] = json!(name);
        if let Some(svc) = sts
            .spec
            .as_ref()
            .and_then(|s| s.service_name.clone())
            .filter(|s| !s.is_empty())
        {
            spec["subdomain"] = json!(svc);
        }
        let mut volumes: Vec<Value> = spec["volumes"].as_array().cloned().unwrap_or_default();
        for t in sts
            .spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
        {
            let claim = t.name_any();
            volumes.retain(|v| v["name"] != claim.as_str());
            volumes.push(json!({"name": claim, "persistentVolumeClaim": {"claimName": format!("{claim}-{set}-{ordinal}")}}));
        }
        if !volumes.is_empty() {
            spec["volumes"] = json!(volumes);
        }
        match api::create::<Pod>(&*self.cluster, &pod).await {
            Ok(_) => {
                self.cluster.event(events::about(
                    sts,
                    COMPONENT,
                    false,
                    "SuccessfulCreate",
                    &format!("create Pod {name} in StatefulSet {set} successful"),
                ));
                Ok(())
            }
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => {
                self.cluster.event(events::about(
                    sts,
                    COMPONENT,
                    true,
                    "FailedCreate",
                    &format!("create Pod {name} in StatefulSet {set} failed error: {e}"),
                ));
                Err(e)
            }
        }
    }

    /// whenScaled: Delete: the claims of ordinals scaled away go once
    /// their pods have.
    async fn delete_scaled_claims(
        &self,
        sts: &StatefulSet,
        by_ordinal: &BTreeMap<i32, Arc<Pod>>,
        wanted: &std::ops::Range<i32>,
    ) -> Result<(), Error> {
        let ns = sts.namespace().unwrap_or_default();
        let set = sts.name_any();
        let selector = sts
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone());
        let templates: Vec<String> = sts
            .spec
            .iter()
            .flat_map(|s| s.volume_claim_templates.iter().flatten())
            .map(|t| t.name_any())
            .collect();
        for claim in self.claims.list_in(&ns) {
            if claim.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let name = claim.name_any();
            let ordinal = templates.iter().find_map(|t| {
                name.strip_prefix(&format!("{t}-{set}-"))?
                    .parse::<i32>()
                    .ok()
            });
            let Some(i) = ordinal.filter(|i| !wanted.contains(i) && !by_ordinal.contains_key(i))
            else {
                continue;
            };
            // Only claims this set made (they carry its selector's labels).
            let labels = claim.labels();
            let made = selector
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v));
            if !made {
                continue;
            }
            api::delete_exact(&*self.cluster, &*claim).await?;
            self.cluster.event(events::about(
                sts,
                COMPONENT,
                false,
                "SuccessfulDelete",
                &format!("delete Claim {name} Pod {set}-{i} in StatefulSet {set} success"),
            ));
        }
        Ok(())
    }

    async fn delete_pod(&self, sts: &StatefulSet, pod: &Pod) -> Result<(), Error> {
        api::delete_exact(&*self.cluster, pod).await?;
        self.cluster.event(events::about(
            sts,
            COMPONENT,
            false,
            "SuccessfulDelete",
            &format!(
                "delete Pod {} in StatefulSet {} successful",
                pod.name_any(),
                sts.name_any()
            ),
        ));
        Ok(())
    }
}

/// The set's `persistentVolumeClaimRetentionPolicy`: (whenDeleted,
/// whenScaled), Retain unless set.
fn retention(sts: &StatefulSet) -> (&str, &str) {
    let policy = sts
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let deleted = policy.and_then(|p| p.when_deleted.as_deref());
    let scaled = policy.and_then(|p| p.when_scaled.as_deref());
    (deleted.unwrap_or("Retain"), scaled.unwrap_or("Retain"))
}

fn healthy(p: &Pod) -> bool {
    pods::phase(p) == "Running" && pods::is_ready(p) && p.metadata.deletion_timestamp.is_none()
}

fn revision_of(p: &Pod) -> Option<&String> {
    p.labels().get(REVISION_LABEL)
}

#[async_trait]
impl Reconcile for StatefulSetController {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(sts) = self.sets.get(key) else {
            return Ok(Action::Done);
        };
        if sts.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = sts.spec.clone().unwrap_or_default();
        let labels = serde_json::to_value(&spec.selector.match_labels).unwrap_or_default();
        let collisions = sts.status.as_ref().and_then(|s| s.collision_count);
        let (update_revision, _) = revisions::ensure(
            &*self.cluster,
            &self.revisions,
            &*sts,
            Some(&spec.template),
            labels,
            collisions,
        )
        .await?;
        let current_revision = sts
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| update_revision.clone());
        let current_template = revisions::history(&self.revisions, &*sts)
            .iter()
            .find(|r| r.name_any() == current_revision)
            .and_then(|r| revisions::template_of(r));
        let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
        let set = sts.name_any();
        let uid = sts.uid().unwrap_or_default();
        let mut by_ordinal: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
        for p in self.pods.list_in(&sts.namespace().unwrap_or_default()) {
            if !pods::controlled_by(&p.metadata, &uid) {
                continue;
            }
            if let Some(i) = p
                .name_any()
                .strip_prefix(&format!("{set}-"))
                .and_then(|s| s.parse::<i32>().ok())
            {
                by_ordinal.insert(i, p);
            }
        }
        let partition = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition)
            .unwrap_or(0);
        let on_delete = spec
            .update_strategy
            .as_ref()
            .and_then(|u| u.type_.as_deref())
            == Some("OnDelete");
        let wanted = start..start + replicas;
        // Replace finished pods; create missing ones in order.
        for i in wanted.clone() {
            match by_ordinal.get(&i) {
                Some(p)
                    if matches!(pods::phase(p), "Succeeded" | "Failed")
                        && p.metadata.deletion_timestamp.is_none() =>
                {
                    self.delete_pod(&sts, p).await?;
                    if !parallel {
                        return Ok(Action::Done);
                    }
                }
                Some(p) => {
                    if !parallel && !healthy(p) {
                        return self
                            .status(&sts, &by_ordinal, &current_revision, &update_revision)
                            .await;
                    }
                }
                None => {
                    let older = i - start < partition
                        && current_template.is_some()
                        && current_revision != update_revision;
                    let (template, revision) = if older {
                        (current_template.as_ref(), current_revision.as_str())
                    } else {
                        (Some(&spec.template), update_revision.as_str())
                    };
                    self.create_pod(&sts, i, template, revision).await?;
                    if !parallel {
                        return self
                            .status(&sts, &by_ordinal, &current_revision, &update_revision)
                            .await;
                    }
                }
            }
        }
        // Scale down from the highest ordinal.
        let condemned: Vec<Arc<Pod>> = by_ordinal
            .iter()
            .rev()
            .filter(|(i, _)| !wanted.contains(i))
            .map(|(_, p)| p.clone())
            .collect();
        for p in &condemned {
            if p.metadata.deletion_timestamp.is_some() {
                if !parallel {
                    return self
                        .status(&sts, &by_ordinal, &current_revision, &update_revision)
                        .await;
                }
                continue;
            }
            if !parallel
                && by_ordinal
                    .values()
                    .any(|o| !healthy(o) && o.name_any() != p.name_any())
            {
                break;
            }
            self.delete_pod(&sts, p).await?;
            if !parallel {
                return self
                    .status(&sts, &by_ordinal, &current_revision, &update_revision)
                    .await;
            }
        }
        if retention(&sts).1 == "Delete" {
            self.delete_scaled_claims(&sts, &by_ordinal, &wanted)
                .await?;
        }
        // Rolling update, highest ordinal first, down to the partition:
        // as many pods at once as `maxUnavailable` leaves room for (one
        // by default; upstream's MaxUnavailableStatefulSet, on in 1.35).
        if !on_delete && condemned.is_empty() {
            let max_unavailable = rollout::scaled(
                spec.update_strategy
                    .as_ref()
                    .and_then(|u| u.rolling_update.as_ref())
                    .and_then(|r| r.max_unavailable.as_ref()),
                replicas,
                true,
                "0%",
            )
            .max(1);
            let unavailable = wanted
                .clone()
                .filter(|i| by_ordinal.get(i).is_none_or(|p| !healthy(p)))
                .count() as i32;
            let stale = wanted
                .clone()
                .rev()
                .filter(|i| i - start >= partition)
                .filter_map(|i| by_ordinal.get(&i))
                .filter(|p| healthy(p) && revision_of(p) != Some(&update_revision));
            for p in stale.take((max_unavailable - unavailable).max(0) as usize) {
                self.delete_pod(&sts, p).await?;
            }
        }
        self.status(&sts, &by_ordinal, &current_revision, &update_revision)
            .await
    }
}

impl StatefulSetController {
    async fn status(
        &self,
        sts: &StatefulSet,
        pods_by: &BTreeMap<i32, Arc<Pod>>,
        current: &str,
        update: &str,
    ) -> Result<Action, Error> {
        let live: Vec<&Arc<Pod>> = pods_by
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        let ready = live.iter().filter(|p| pods::is_ready(p)).count() as i32;
        let updated = live
            .iter()
            .filter(|p| revision_of(p).map(String::as_str) == Some(update))
            .count() as i32;
        let mut current_count = live
            .iter()
            .filter(|p| revision_of(p).map(String::as_str) == Some(current))
            .count() as i32;
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let mut current_revision = current.to_owned();
        if updated == replicas && ready == replicas && live.len() as i32 == replicas {
            current_revision = update.to_owned();
            current_count = updated;
        }
        let min_ready = sts
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0);
        let now = chrono::Utc::now();
        let available = live
            .iter()
            .filter(|p| pods::is_available(p, min_ready, now))
            .count() as i32;
        let status = json!({
            "observedGeneration": sts.metadata.generation, "replicas": live.len(),
            "readyReplicas": omit_zero(ready), "currentReplicas": omit_zero(current_count),
            "updatedReplicas": omit_zero(updated), "availableReplicas": available,
            "currentRevision": current_revision, "updateRevision": update,
            "collisionCount": sts.status.as_ref().and_then(|s| s.collision_count).unwrap_or(0),
        });
        let old = serde_json::to_value(&sts.status).unwrap_or_default();
        let changed = status.as_object().into_iter().flatten().any(|(k, v)| {
            let o = &old[k];
            o != v && !(o.is_null() && (v == 0 || v.is_null()))
        });
        if changed {
            let target = Target::of::<StatefulSet>(sts.namespace().as_deref(), &sts.name_any());
            self.cluster
                .merge_patch(&target, json!({"status": status}), true)
                .await?;
        }
        // History beyond revisionHistoryLimit goes, as upstream's
        // truncateHistory: the current and update revisions and those a pod
        // still runs are kept and not counted.
        let mut live: HashSet<String> = pods_by
            .values()
            .filter_map(|p| revision_of(p).cloned())
            .collect();
        live.extend([current.to_owned(), update.to_owned()]);
        let unused: Vec<_> = revisions::history(&self.revisions, sts)
            .into_iter()
            .filter(|r| !live.contains(&r.name_any()))
            .collect();
        let limit = revisions::limit(sts.spec.as_ref().and_then(|s| s.revision_history_limit));
        let excess = unused.len().saturating_sub(limit);
        revisions::delete_oldest(&*self.cluster, &unused, excess).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn sts(replicas: i32, policy: &str) -> StatefulSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "sts", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "web", "podManagementPolicy": policy,
                     "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]},
        }))
        .unwrap()
    }

    fn running(created: &Value, ready: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(created.clone()).unwrap();
        p.status = serde_json::from_value(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]})).unwrap();
        p
    }

    fn setup() -> (
        Arc<FakeCluster>,
        Informer<StatefulSet>,
        Informer<Pod>,
        StatefulSetController,
    ) {
        let fake = Arc::new(FakeCluster::default());
        let (mut sets, mut pods, mut revs, claims) = (
            Informer::default(),
            Informer::default(),
            Informer::default(),
            Informer::default(),
        );
        let c = StatefulSetController::new(
            &mut sets,
            &mut pods,
            &mut revs,
            &claims,
            fake.clone(),
            Queue::new(),
        );
        (fake, sets, pods, c)
    }

    fn created_pods(fake: &FakeCluster) -> Vec<Value> {
        fake.bodies("create")
            .into_iter()
            .filter(|o| o["kind"] == "Pod")
            .collect()
    }

    #[tokio::test]
    async fn ordered_ready_creates_one_pod_at_a_time_with_its_claim() {
        let (fake, sets, pods, c) = setup();
        sets.apply(sts(2, "OrderedReady"));
        c.reconcile("d/web").await.unwrap();
        let created = created_pods(&fake);
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["metadata"]["name"], "web-0");
        assert_eq!(created[0]["spec"]["hostname"], "web-0");
        assert_eq!(created[0]["spec"]["subdomain"], "web");
        assert_eq!(
            created[0]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
            "data-web-0"
        );
        assert!(fake
            .made("create")
            .contains(&"persistentvolumeclaims d/data-web-0".to_owned()));
        // web-1 waits until web-0 is running and ready.
        pods.apply(running(&created[0], false));
        c.reconcile("d/web").await.unwrap();
        assert_eq!(created_pods(&fake).len(), 1);
        pods.apply(running(&created[0], true));
        c.reconcile("d/web").await.unwrap();
        let created = created_pods(&fake);
        assert_eq!(created.len(), 2);
        assert_eq!(created[1]["metadata"]["name"], "web-1");
    }

    #[tokio::test]
    async fn parallel_creates_all_pods_at_once() {
        let (fake, sets, _, c) = setup();
        sets.apply(sts(3, "Parallel"));
        c.reconcile("d/web").await.unwrap();
        let names: Vec<Value> = created_pods(&fake)
            .iter()
            .map(|p| p["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("web-0"), json!("web-1"), json!("web-2")]);
    }

    #[tokio::test]
    async fn a_rolling_update_replaces_as_many_as_max_unavailable_allows() {
        for (max_unavailable, want) in [
            (None, vec!["pods d/web-2"]),
            (Some(json!(2)), vec!["pods d/web-2", "pods d/web-1"]),
            (Some(json!("50%")), vec!["pods d/web-2", "pods d/web-1"]),
        ] {
            let (fake, sets, pods, c) = setup();
            sets.apply(sts(3, "Parallel"));
            c.reconcile("d/web").await.unwrap();
            for p in created_pods(&fake) {
                pods.apply(running(&p, true));
            }
            let mut next = sts(3, "Parallel");
            let spec = next.spec.as_mut().unwrap();
            spec.template.spec.as_mut().unwrap().containers[0].image = Some("busybox:2".into());
            spec.update_strategy = serde_json::from_value(
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}}),
            )
            .unwrap();
            sets.apply(next);
            fake.clear();
            c.reconcile("d/web").await.unwrap();
            assert_eq!(fake.made("delete"), want, "{max_unavailable:?}");
        }
    }

    #[tokio::test]
    async fn history_beyond_the_limit_goes_but_not_what_a_pod_runs() {
        use crate::revisions::testing::{deleted, revision};
        let (fake, sets, pods, c) = setup();
        let mut set = sts(1, "Parallel");
        set.spec.as_mut().unwrap().revision_history_limit = Some(1);
        sets.apply(set);
        c.reconcile("d/web").await.unwrap();
        for (n, name) in ["web-r1", "web-r2", "web-r3"].iter().enumerate() {
            c.revisions
                .insert(revision("StatefulSet", "web", "sts", name, n as i64 + 1));
        }
        let mut pod = running(&created_pods(&fake)[0], true);
        pod.labels_mut()
            .insert(REVISION_LABEL.into(), "web-r2".into());
        pods.apply(pod);
        fake.clear();
        c.reconcile("d/web").await.unwrap();
        // r2 is run by a pod; of r1 and r3 one is over the limit.
        assert_eq!(deleted(&fake), ["controllerrevisions d/web-r1"]);
    }

    #[tokio::test]
    async fn scales_down_from_the_highest_ordinal() {
        let (fake, sets, pods, c) = setup();
        sets.apply(sts(3, "OrderedReady"));
        for _ in 0..3 {
            c.reconcile("d/web").await.unwrap();
            for p in created_pods(&fake) {
                pods.apply(running(&p, true));
            }
        }
        assert_eq!(created_pods(&fake).len(), 3);
        sets.apply(sts(1, "OrderedReady"));
        fake.clear();
        c.reconcile("d/web").await.unwrap();
        assert_eq!(fake.made("delete"), vec!["pods d/web-2"]);
    }

    #[tokio::test]
    async fn claims_follow_the_retention_policy() {
        let (fake, sets, pods, c) = setup();
        let mut set = sts(2, "Parallel");
        set.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy =
            serde_json::from_value(json!({"whenDeleted": "Delete", "whenScaled": "Delete"}))
                .unwrap();
        sets.apply(set.clone());
        c.reconcile("d/web").await.unwrap();
        let claims: Vec<Value> = fake
            .bodies("create")
            .into_iter()
            .filter(|o| o["kind"] == "PersistentVolumeClaim")
            .collect();
        assert_eq!(claims.len(), 2);
        assert_eq!(
            claims[0]["metadata"]["ownerReferences"][0]["kind"],
            "StatefulSet"
        );
        for claim in &claims {
            c.claims
                .insert(serde_json::from_value(claim.clone()).unwrap());
        }
        for p in created_pods(&fake) {
            pods.apply(running(&p, true));
        }
        set.spec.as_mut().unwrap().replicas = Some(1);
        sets.apply(set);
        fake.clear();
        c.reconcile("d/web").await.unwrap();
        assert_eq!(fake.made("delete"), vec!["pods d/web-1"], "the pod first");
        pods.delete(&pods.cache().get("d/web-1").unwrap());
        fake.clear();
        c.reconcile("d/web").await.unwrap();
        assert_eq!(
            fake.made("delete"),
            vec!["persistentvolumeclaims d/data-web-1"]
        );
    }
}
