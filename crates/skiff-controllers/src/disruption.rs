//! The disruption controller: keeps each PodDisruptionBudget's status
//! true, as upstream's: how many of its pods are healthy, how many it
//! needs, and so how many may be disrupted now. The eviction subresource
//! reads `disruptionsAllowed` and counts each eviction down in it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_core::selector;

use crate::pods;
use skiff_runtime::api::{served_by, Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "controllermanager";
/// How long an evicted pod counts as disrupted before its deletion shows,
/// as upstream's `DeletionTimeout`.
const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The pods of its namespace a budget covers: those its selector
/// matches (an empty or absent one matches every pod, as policy/v1 has
/// it); none for a selector that does not parse.
struct Covers(Option<selector::LabelSelector>);

impl Covers {
    fn of(budget: &PodDisruptionBudget) -> Self {
        let sel = budget
            .spec
            .as_ref()
            .map(|s| serde_json::to_value(&s.selector));
        let sel = sel.and_then(Result::ok).unwrap_or_default();
        Covers(selector::LabelSelector::from_object(&sel).ok())
    }

    fn pod(&self, p: &Pod) -> bool {
        let labels = |k: &str| p.metadata.labels.as_ref()?.get(k).map(String::as_str);
        self.0.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// The workloads whose scale a budget's percentages are taken of.
pub struct Owners {
    pub sets: Arc<Cache<ReplicaSet>>,
    pub rcs: Arc<Cache<ReplicationController>>,
    pub deployments: Arc<Cache<Deployment>>,
    pub statefulsets: Arc<Cache<StatefulSet>>,
    /// Which custom resources are served, for owners of other kinds.
    pub definitions: Arc<Cache<CustomResourceDefinition>>,
}

pub struct DisruptionController {
    budgets: Arc<Cache<PodDisruptionBudget>>,
    pods: Arc<Cache<Pod>>,
    owners: Owners,
    cluster: Arc<dyn Cluster>,
}

impl DisruptionController {
    /// Keyed by budget; a pod's change looks again at the budgets that
    /// cover it, before or after.
    pub fn new(
        budgets: &mut Informer<PodDisruptionBudget>,
        pods: &mut Informer<Pod>,
        owners: Owners,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let q = queue.clone();
        budgets.on_change(move |old, new| {
            if let Some(b) = new.or(old) {
                q.add(format!(
                    "{}/{}",
                    b.namespace().unwrap_or_default(),
                    b.name_any()
                ));
            }
        });
        let cache = budgets.cache();
        pods.on_change(move |old, new| {
            let Some(ns) = new.or(old).and_then(|p| p.namespace()) else {
                return;
            };
            for b in cache.list_in(&ns) {
                let covers = Covers::of(&b);
                if old.into_iter().chain(new).any(|p| covers.pod(p)) {
                    queue.add(format!("{ns}/{}", b.name_any()));
                }
            }
        });
        Self {
            budgets: budgets.cache(),
            pods: pods.cache(),
            owners,
            cluster,
        }
    }

    /// The replicas the pod's controller asks for, with its uid: `None`
    /// for a pod no workload with a scale controls. `custom`: the scales
    /// of custom resources, by uid.
    fn scale_of(&self, pod: &Pod, custom: &BTreeMap<String, i64>) -> Option<(String, i64)> {
        let owner = pods::controller_of(&pod.metadata)?;
        let ns = pod.namespace().unwrap_or_default();
        let key = format!("{ns}/{}", owner.name);
        let replicas = |r: Option<i32>| i64::from(r.unwrap_or(1));
        match owner.kind.as_str() {
            "ReplicaSet" => {
                let set = self.owners.sets.get(&key)?;
                // A Deployment's ReplicaSet counts at the Deployment's scale.
                if let Some(d) =
                    pods::controller_of(&set.metadata).filter(|o| o.kind == "Deployment")
                {
                    let deployment = self.owners.deployments.get(&format!("{ns}/{}", d.name))?;
                    let scale = replicas(deployment.spec.as_ref()?.replicas);
                    return Some((d.uid.clone(), scale));
                }
                Some((owner.uid.clone(), replicas(set.spec.as_ref()?.replicas)))
            }
            "ReplicationController" => {
                let rc = self.owners.rcs.get(&key)?;
                Some((owner.uid.clone(), replicas(rc.spec.as_ref()?.replicas)))
            }
            "StatefulSet" => {
                let set = self.owners.statefulsets.get(&key)?;
                Some((owner.uid.clone(), replicas(set.spec.as_ref()?.replicas)))
            }
            _ => Some((owner.uid.clone(), *custom.get(&owner.uid)?)),
        }
    }

    /// The scales of the custom resources controlling `pods`, by uid,
    /// read through their `scale` subresource as upstream's finder reads
    /// them; a controller that has none, is gone, or has a name no URL can
    /// hold is left out.
    async fn custom_scales(
        &self,
        ns: &str,
        pods: &[Arc<Pod>],
    ) -> Result<BTreeMap<String, i64>, Error> {
        let mut owners: BTreeMap<&str, &OwnerReference> = BTreeMap::new();
        for p in pods {
            if let Some(o) =
                pods::controller_of(&p.metadata).filter(|o| !BUILT_IN.contains(&o.kind.as_str()))
            {
                owners.insert(&o.uid, o);
            }
        }
        let mut scales = BTreeMap::new();
        if owners.is_empty() {
            return Ok(scales);
        }
        let definitions = self.owners.definitions.list();
        let served: Vec<_> = definitions.iter().flat_map(|d| served_by(d)).collect();
        for (uid, owner) in owners {
            let group = owner.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let mut kinds = served
                .iter()
                .filter(|(r, _)| r.group == group && r.kind == owner.kind);
            // The owner's own version, else any the definition serves.
            let Some((resource, _)) = kinds
                .clone()
                .find(|(r, _)| r.api_version == owner.api_version)
                .or_else(|| kinds.next())
            else {
                continue;
            };
            let target = Target {
                resource: resource.clone(),
                namespace: Some(ns.to_owned()),
                name: owner.name.clone(),
            };
            let scale = match self.cluster.get_subresource(&target, "scale").await {
                Ok(Some(scale)) => scale,
                Ok(None) | Err(Error::InvalidName { .. }) => continue,
                Err(e) => return Err(e),
            };
            if scale["metadata"]["uid"] == uid {
                scales.insert(
                    uid.to_owned(),
                    scale["spec"]["replicas"].as_i64().unwrap_or(0),
                );
            }
        }
        Ok(scales)
    }
}

/// The controllers whose scale the caches hold.
const BUILT_IN: [&str; 3] = ["ReplicaSet", "ReplicationController", "StatefulSet"];

/// Whether a budget's counts need the scale of the pods' controllers: a
/// percentage, or `maxUnavailable`.
fn needs_scale(budget: &PodDisruptionBudget) -> bool {
    let spec = budget.spec.as_ref();
    let min = spec.and_then(|s| s.min_available.as_ref());
    let max = spec.and_then(|s| s.max_unavailable.as_ref());
    matches!(min, Some(IntOrString::String(_))) || (min.is_none() && max.is_some())
}

/// What a budget's numbers come to.
#[derive(Debug, PartialEq)]
pub struct Counts {
    pub expected: i64,
    pub desired: i64,
    pub healthy: i64,
}

impl Counts {
    /// Disruptions allowed, less those already under way.
    pub fn allowed(&self, disrupted: usize) -> i64 {
        (self.healthy - self.desired - disrupted as i64).max(0)
    }
}

/// `value` of `total`: a number as it is, a percentage rounded up.
fn scaled(value: &IntOrString, total: i64) -> Result<i64, String> {
    match value {
        IntOrString::Int(n) => Ok(i64::from(*n)),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok((percent * total + 99) / 100)
        }
    }
}

/// A budget's counts, as upstream's `getExpectedPodCount`: a plain
/// `minAvailable` counts the pods there are; a percentage or
/// `maxUnavailable` needs the scale of the pods' controllers (`scales`,
/// `None` if a pod has none).
pub fn counts(
    budget: &PodDisruptionBudget,
    healthy: i64,
    pods: usize,
    scales: impl FnOnce() -> Option<i64>,
) -> Result<Counts, String> {
    let spec = budget.spec.clone().unwrap_or_default();
    let (expected, desired) = match (&spec.min_available, &spec.max_unavailable) {
        (Some(IntOrString::Int(n)), _) => (pods as i64, i64::from(*n)),
        (Some(min), _) => {
            let expected = scales().ok_or("found no controllers for pods")?;
            (expected, scaled(min, expected)?)
        }
        (None, Some(max)) => {
            let expected = scales().ok_or("found no controllers for pods")?;
            (expected, (expected - scaled(max, expected)?).max(0))
        }
        (None, None) => (pods as i64, 0),
    };
    Ok(Counts {
        expected,
        desired,
        healthy,
    })
}

#[async_trait]
impl Reconcile for DisruptionController {
    fn name(&self) -> &'static str {
        "disruption"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(budget) = self.budgets.get(key) else {
            return Ok(Action::Done);
        };
        let ns = budget.namespace().unwrap_or_default();
        let covers = Covers::of(&budget);
        let mine: Vec<Arc<Pod>> = self
            .pods
            .list_in(&ns)
            .into_iter()
            .filter(|p| covers.pod(p))
            .collect();
        let healthy = mine
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none() && pods::is_ready(p))
            .count() as i64;
        let custom = match needs_scale(&budget) {
            true => self.custom_scales(&ns, &mine).await?,
            false => BTreeMap::new(),
        };
        let scales = || {
            let mut by_owner = BTreeMap::new();
            for p in &mine {
                let (uid, scale) = self.scale_of(p, &custom)?;
                by_owner.insert(uid, scale);
            }
            Some(by_owner.values().sum())
        };
        let status = budget.status.clone().unwrap_or_default();
        // Evicted pods count as disrupted until they go, for a while.
        let now = chrono::Utc::now();
        let mut disrupted = BTreeMap::new();
        let mut recheck = None;
        for (name, at) in status.disrupted_pods.iter().flatten() {
            let at = chrono::DateTime::from_timestamp(at.0.as_second(), 0).unwrap_or(now);
            let left =
                (at + chrono::Duration::from_std(DELETION_TIMEOUT).unwrap_or_default()) - now;
            let alive = mine
                .iter()
                .any(|p| &p.name_any() == name && p.metadata.deletion_timestamp.is_none());
            if alive && left > chrono::Duration::zero() {
                disrupted.insert(
                    name.clone(),
                    json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                );
                let left = left.to_std().unwrap_or_default();
                recheck = Some(recheck.map_or(left, |r: Duration| r.min(left)));
            }
        }
        let next = match counts(&budget, healthy, mine.len(), scales) {
            Ok(c) => {
                let allowed = c.allowed(disrupted.len());
                let (condition, reason) = match allowed > 0 {
                    true => ("True", "SufficientPods"),
                    false => ("False", "InsufficientPods"),
                };
                json!({"observedGeneration": budget.metadata.generation, "currentHealthy": c.healthy,
                    "desiredHealthy": c.desired, "expectedPods": c.expected, "disruptionsAllowed": allowed,
                    "disruptedPods": if disrupted.is_empty() { Value::Null } else { json!(disrupted) },
                    "conditions": [self.condition(&status, condition, reason, "")]})
            }
            Err(why) => {
                self.cluster.event(events::about(
                    &*budget,
                    COMPONENT,
                    true,
                    "CalculateExpectedPodCountFailed",
                    &format!("Failed to calculate the number of expected pods: {why}"),
                ));
                json!({"observedGeneration": budget.metadata.generation, "currentHealthy": healthy,
                    "desiredHealthy": 0, "expectedPods": 0, "disruptionsAllowed": 0, "disruptedPods": Value::Null,
                    "conditions": [self.condition(&status, "False", "SyncFailed", &why)]})
            }
        };
        let old = serde_json::to_value(&status).unwrap_or_default();
        let same = [
            "observedGeneration",
            "currentHealthy",
            "desiredHealthy",
            "expectedPods",
            "disruptionsAllowed",
            "disruptedPods",
        ]
        .iter()
        .all(|f| old[*f] == next[*f] || (next[*f].is_null() && old.get(*f).is_none()))
            && old["conditions"][0]["status"] == next["conditions"][0]["status"]
            && old["conditions"][0]["reason"] == next["conditions"][0]["reason"];
        if !same {
            let target = Target::of::<PodDisruptionBudget>(Some(&ns), &budget.name_any());
            self.cluster
                .merge_patch(&target, json!({"status": next}), true)
                .await?;
        }
        Ok(recheck.map_or(Action::Done, Action::RequeueAfter))
    }
}

impl DisruptionController {
    /// The `DisruptionAllowed` condition, keeping its transition time
    /// while its status stays.
    fn condition(
        &self,
        status: &k8s_openapi::api::policy::v1::PodDisruptionBudgetStatus,
        value: &str,
        reason: &str,
        message: &str,
    ) -> Value {
        let previous = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "DisruptionAllowed" && c.status == value);
        let since = previous
            .map(|c| c.last_transition_time.0.to_string())
            .unwrap_or_else(skiff_core::meta::now);
        json!({"type": "DisruptionAllowed", "status": value, "reason": reason, "message": message,
            "lastTransitionTime": since, "observedGeneration": status.observed_generation})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(min: Option<Value>, max: Option<Value>) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "b"},
            "spec": {"minAvailable": min, "maxUnavailable": max}}))
        .unwrap()
    }

    /// Owners with empty caches.
    fn no_owners() -> Owners {
        Owners {
            sets: Informer::default().cache(),
            rcs: Informer::default().cache(),
            deployments: Informer::default().cache(),
            statefulsets: Informer::default().cache(),
            definitions: Informer::default().cache(),
        }
    }

    #[test]
    fn a_pod_change_wakes_only_the_budgets_that_cover_it() {
        let (mut budgets, mut pods) = (Informer::default(), Informer::default());
        let owners = no_owners();
        let queue = Queue::new();
        let fake = Arc::new(skiff_runtime::fake::FakeCluster::default());
        let _c = DisruptionController::new(&mut budgets, &mut pods, owners, fake, queue.clone());
        for (name, selector) in [
            ("web", json!({"matchLabels": {"app": "web"}})),
            ("db", json!({"matchLabels": {"app": "db"}})),
            ("all", json!({})),
        ] {
            budgets.apply(
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                    "spec": {"minAvailable": 1, "selector": selector}}))
                .unwrap(),
            );
        }
        while let Some(k) = queue.try_next() {
            queue.done(&k);
        }
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p", "namespace": "d", "labels": {"app": "web"}}}),
        )
        .unwrap();
        pods.apply(pod);
        let mut woken: Vec<String> = std::iter::from_fn(|| queue.try_next()).collect();
        woken.sort();
        assert_eq!(woken, ["d/all", "d/web"]);
    }

    /// Owners whose definitions serve a custom resource with a scale
    /// subresource: Widgets.
    fn widget_owners() -> Owners {
        let definitions = Informer::default();
        definitions.apply(serde_json::from_value(json!({"metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "subresources": {"scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}}]}}))
            .unwrap());
        Owners {
            definitions: definitions.cache(),
            ..no_owners()
        }
    }

    #[tokio::test]
    async fn a_percentage_over_pods_of_a_custom_resource_reads_its_scale() {
        let (mut budgets, mut pods) = (Informer::default(), Informer::default());
        let owners = widget_owners();
        let fake = Arc::new(skiff_runtime::fake::FakeCluster::default());
        let c =
            DisruptionController::new(&mut budgets, &mut pods, owners, fake.clone(), Queue::new());
        fake.put(
            "widgets/scale",
            json!({"metadata": {"name": "w", "namespace": "d", "uid": "w1"},
            "spec": {"replicas": 4}}),
        );
        budgets.apply(
            serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "d"},
                "spec": {"maxUnavailable": "50%", "selector": {"matchLabels": {"app": "w"}}}}))
            .unwrap(),
        );
        for name in ["p1", "p2", "p3"] {
            pods.apply(
                serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "w"},
                    "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "w1", "controller": true}]},
                    "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
                .unwrap(),
            );
        }
        c.reconcile("d/b").await.unwrap();
        let status = &fake.bodies("patch-status")[0]["status"];
        // 4 expected, 2 desired, 3 healthy: one may go.
        assert_eq!(
            (
                &status["expectedPods"],
                &status["desiredHealthy"],
                &status["disruptionsAllowed"]
            ),
            (&json!(4), &json!(2), &json!(1)),
            "{status}"
        );
    }

    #[tokio::test]
    async fn an_owner_name_that_is_no_path_segment_is_never_requested() {
        let (mut budgets, mut pods) = (Informer::default(), Informer::default());
        let fake = Arc::new(skiff_runtime::fake::FakeCluster::default());
        let c = DisruptionController::new(
            &mut budgets,
            &mut pods,
            widget_owners(),
            fake.clone(),
            Queue::new(),
        );
        // Were the name sent, this is what a lax server would answer.
        fake.put(
            "widgets/scale",
            json!({"metadata": {"name": "../../secrets/token", "namespace": "d", "uid": "w1"},
            "spec": {"replicas": 1}}),
        );
        budgets.apply(
            serde_json::from_value(json!({"metadata": {"name": "b", "namespace": "d"},
                "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "w"}}}}))
            .unwrap(),
        );
        pods.apply(
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d", "labels": {"app": "w"},
                "ownerReferences": [{"apiVersion": "example.com/v1", "kind": "Widget",
                    "name": "../../secrets/token", "uid": "w1", "controller": true}]},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap(),
        );
        c.reconcile("d/b").await.unwrap();
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(status["conditions"][0]["reason"], "SyncFailed", "{status}");
        assert_eq!(status["disruptionsAllowed"], 0, "{status}");
    }

    #[test]
    fn counts_as_upstream() {
        let none = || None;
        let three = || Some(3);
        let cases = [
            (
                "minAvailable 2 of the pods there are",
                budget(Some(json!(2)), None),
                none as fn() -> Option<i64>,
                Ok((2, 2, 1)),
            ),
            (
                "minAvailable 50% of a scale of 3, rounded up",
                budget(Some(json!("50%")), None),
                three,
                Ok((3, 2, 1)),
            ),
            (
                "maxUnavailable 1 of 3",
                budget(None, Some(json!(1))),
                three,
                Ok((3, 2, 1)),
            ),
            (
                "maxUnavailable 34% of 3: 2 may go",
                budget(None, Some(json!("34%"))),
                three,
                Ok((3, 1, 2)),
            ),
            (
                "a percentage without controllers",
                budget(Some(json!("50%")), None),
                none,
                Err(()),
            ),
        ];
        for (name, b, scales, want) in cases {
            let got = counts(&b, 3, 2, scales)
                .map(|c| (c.expected, c.desired, c.allowed(0)))
                .map_err(|_| ());
            let want = want.map(|(e, d, a): (i64, i64, i64)| (e, d, a));
            assert_eq!(got, want, "{name}");
        }
        let c = counts(&budget(Some(json!(2)), None), 3, 3, || None).unwrap();
        assert_eq!((c.allowed(0), c.allowed(1), c.allowed(5)), (1, 0, 0));
    }
}
