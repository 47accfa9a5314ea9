//! The HorizontalPodAutoscaler controller (autoscaling/v2): every sync
//! period it reads the target's `/scale`, the selected pods' usage from
//! `metrics.k8s.io`, computes the replicas each metric asks for
//! ([`replicas`]), normalizes the largest ([`normalize`]), rescales, and
//! reports metrics, conditions and events as upstream's does. Resource
//! and ContainerResource metrics are served; Pods, Object and External
//! metrics need a custom metrics API, which Skiff does not serve, and
//! are reported as failing.

pub mod normalize;
pub mod replicas;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler, MetricSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_core::quantity::parse_milli;
use skiff_core::selector::LabelSelector;

use normalize::{Behavior, History, Policy, Rules};
use replicas::{PodFacts, Recommendation, Sample, Target};
use skiff_runtime::api::{Cluster, Error, Target as ObjectTarget};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "horizontal-pod-autoscaler";

/// A scale target's size and the selector of its pods.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub replicas: i32,
    pub selector: String,
}

/// What the autoscaler reads and writes beyond its own objects: scales
/// of any kind, and pod metrics.
#[async_trait]
pub trait Targets: Send + Sync {
    async fn scale(&self, ns: &str, target: &CrossVersionObjectReference) -> Result<Scale, Error>;
    async fn set_scale(
        &self,
        ns: &str,
        target: &CrossVersionObjectReference,
        replicas: i32,
    ) -> Result<(), Error>;
    /// The PodMetrics of the pods `selector` selects in `ns`.
    async fn pod_metrics(&self, ns: &str, selector: &str) -> Result<Vec<Value>, Error>;
}

/// [`Targets`] through the API server, as upstream's scale client and
/// resource metrics client.
pub struct KubeTargets {
    client: kube::Client,
    resources: Mutex<HashMap<(String, String), ApiResource>>,
}

impl KubeTargets {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            resources: Mutex::default(),
        }
    }

    /// The resource of a kind, found through discovery once.
    async fn resource(&self, target: &CrossVersionObjectReference) -> Result<ApiResource, Error> {
        let key = (
            target.api_version.clone().unwrap_or_default(),
            target.kind.clone(),
        );
        if let Some(r) = self
            .resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(r.clone());
        }
        let (group, version) = key.0.split_once('/').unwrap_or(("", &key.0));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &key.1);
        let (resource, _) = kube::discovery::pinned_kind(&self.client, &gvk).await?;
        self.resources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, resource.clone());
        Ok(resource)
    }

    async fn api(
        &self,
        ns: &str,
        target: &CrossVersionObjectReference,
    ) -> Result<Api<DynamicObject>, Error> {
        let resource = self.resource(target).await?;
        Ok(Api::namespaced_with(self.client.clone(), ns, &resource))
    }
}

#[async_trait]
impl Targets for KubeTargets {
    async fn scale(&self, ns: &str, target: &CrossVersionObjectReference) -> Result<Scale, Error> {
        let scale = self.api(ns, target).await?.get_scale(&target.name).await?;
        let status = scale.status.unwrap_or_default();
        Ok(Scale {
            replicas: status.replicas,
            selector: status.selector.unwrap_or_default(),
        })
    }

    async fn set_scale(
        &self,
        ns: &str,
        target: &CrossVersionObjectReference,
        replicas: i32,
    ) -> Result<(), Error> {
        let api = self.api(ns, target).await?;
        let mut scale = api.get_scale(&target.name).await?;
        scale.spec.get_or_insert_default().replicas = Some(replicas);
        api.replace_scale(&target.name, &PostParams::default(), &scale)
            .await?;
        Ok(())
    }

    async fn pod_metrics(&self, ns: &str, selector: &str) -> Result<Vec<Value>, Error> {
        let resource = ApiResource {
            group: "metrics.k8s.io".into(),
            version: "v1beta1".into(),
            api_version: "metrics.k8s.io/v1beta1".into(),
            kind: "PodMetrics".into(),
            plural: "pods".into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
        let list = api.list(&ListParams::default().labels(selector)).await?;
        Ok(list
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect())
    }
}

pub struct HpaController {
    hpas: Arc<Cache<HorizontalPodAutoscaler>>,
    pods: Arc<Cache<Pod>>,
    cluster: Arc<dyn Cluster>,
    targets: Arc<dyn Targets>,
    history: Mutex<HashMap<String, History>>,
    sync_period: Duration,
    downscale_window: Duration,
}

impl HpaController {
    pub fn new(
        hpas: &mut Informer<HorizontalPodAutoscaler>,
        pods: &Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        targets: Arc<dyn Targets>,
        queue: Arc<Queue>,
        (sync_period, downscale_window): (Duration, Duration),
    ) -> Self {
        crate::owned::queue_self(hpas, queue);
        Self {
            hpas: hpas.cache(),
            pods: pods.cache(),
            cluster,
            targets,
            history: Mutex::default(),
            sync_period,
            downscale_window,
        }
    }

    /// Records an event; a failing autoscaler says the same thing at every
    /// sync, which the event sink counts on one event.
    fn event(&self, hpa: &HorizontalPodAutoscaler, warning: bool, reason: &str, message: &str) {
        self.cluster
            .event(events::about(hpa, COMPONENT, warning, reason, message));
    }
}

/// An error as upstream's messages quote it: the API's message alone.
fn said(e: &Error) -> String {
    match e {
        Error::Api { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A duration from seconds in a spec.
fn seconds(s: i32) -> chrono::Duration {
    chrono::Duration::seconds(i64::from(s.max(0)))
}

fn rules(given: Option<&HPAScalingRules>, default: &Rules) -> Rules {
    let Some(given) = given else {
        return default.clone();
    };
    let policies = given.policies.as_ref().map(|ps| {
        ps.iter()
            .map(|p| Policy {
                percent: p.type_ == "Percent",
                value: p.value,
                period: seconds(p.period_seconds),
            })
            .collect()
    });
    Rules {
        stabilization: given
            .stabilization_window_seconds
            .map_or(default.stabilization, seconds),
        select: given
            .select_policy
            .clone()
            .unwrap_or_else(|| default.select.clone()),
        policies: policies.unwrap_or_else(|| default.policies.clone()),
    }
}

/// The behavior of an autoscaler: its own, over upstream's defaults.
fn behavior(hpa: &HorizontalPodAutoscaler, downscale_window: Duration) -> Behavior {
    let window = chrono::Duration::from_std(downscale_window).unwrap_or(chrono::Duration::zero());
    let defaults = Behavior::default_with(window);
    let given = hpa.spec.as_ref().and_then(|s| s.behavior.as_ref());
    match given {
        None => defaults,
        Some(b) => Behavior {
            up: rules(b.scale_up.as_ref(), &defaults.up),
            down: rules(b.scale_down.as_ref(), &defaults.down),
        },
    }
}

/// A window as metrics servers write it (`15.012s`, `1m0s`).
fn parse_window(s: &str) -> Duration {
    let secs = s
        .strip_suffix('s')
        .and_then(|s| match s.split_once('m') {
            Some((m, s)) => Some(m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?),
            None => s.parse().ok(),
        })
        .unwrap_or(0.0);
    Duration::from_secs_f64(secs.max(0.0))
}

fn instant(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.as_millisecond())
}

/// The facts of a pod for `resource`, counting `container` alone when
/// given.
fn facts(pod: &Pod, resource: &str, container: Option<&str>) -> PodFacts {
    let status = pod.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .map(|c| {
            let changed = c.last_transition_time.as_ref().and_then(|t| instant(&t.0));
            (c.status == "True", changed.unwrap_or_default())
        });
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let request = containers
        .iter()
        .filter(|c| container.is_none_or(|n| c.name == n))
        .map(|c| {
            let requests = c.resources.as_ref()?.requests.as_ref()?;
            parse_milli(&requests.get(resource)?.0).map(|m| m as i64)
        })
        .sum::<Option<i64>>();
    PodFacts {
        name: pod.name_any(),
        phase: status.phase.unwrap_or_default(),
        deleting: pod.metadata.deletion_timestamp.is_some(),
        ready,
        started: status.start_time.and_then(|t| instant(&t.0)),
        request,
    }
}

/// The samples of `resource` in PodMetrics, by pod name.
fn samples(metrics: &[Value], resource: &str, container: Option<&str>) -> HashMap<String, Sample> {
    let mut out = HashMap::new();
    for m in metrics {
        let Some(name) = m["metadata"]["name"].as_str() else {
            continue;
        };
        let at = m["timestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.to_utc());
        let window = parse_window(m["window"].as_str().unwrap_or_default());
        let mut value = 0i64;
        let mut found = false;
        for c in m["containers"].as_array().into_iter().flatten() {
            if container.is_some_and(|n| c["name"] != n) {
                continue;
            }
            if let Some(v) = c["usage"][resource].as_str().and_then(parse_milli) {
                value += v as i64;
                found = true;
            }
        }
        if found {
            out.insert(name.to_owned(), Sample { value, at, window });
        }
    }
    out
}

/// A milli-unit figure as a quantity: whole units when exact.
fn milli_quantity(m: i64) -> String {
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// One metric's outcome: its recommendation and status, or why not.
struct Computed {
    recommendation: Result<Recommendation, String>,
    status: Value,
    name: String,
    reason: &'static str,
}

impl HpaController {
    /// The replicas one metric asks for.
    fn compute(
        &self,
        ns: &str,
        spec: &MetricSpec,
        current: i32,
        selector: &LabelSelector,
        metrics: &Result<Vec<Value>, String>,
        now: DateTime<Utc>,
    ) -> Computed {
        let (kind, source, container) = match (&spec.resource, &spec.container_resource) {
            (Some(r), _) if spec.type_ == "Resource" => {
                ("resource", (r.name.clone(), r.target.clone()), None)
            }
            (_, Some(c)) if spec.type_ == "ContainerResource" => (
                "containerResource",
                (c.name.clone(), c.target.clone()),
                Some(c.container.clone()),
            ),
            _ => {
                let why = format!(
                    "unable to get metric of type {}: no custom metrics API (custom.metrics.k8s.io or external.metrics.k8s.io) is served by Skiff",
                    spec.type_
                );
                return Computed {
                    recommendation: Err(why),
                    status: Value::Null,
                    name: spec.type_.clone(),
                    reason: match spec.type_.as_str() {
                        "Pods" => "FailedGetPodsMetric",
                        "Object" => "FailedGetObjectMetric",
                        _ => "FailedGetExternalMetric",
                    },
                };
            }
        };
        let (resource, target) = source;
        let failed = |why: String| Computed {
            recommendation: Err(why),
            status: Value::Null,
            name: format!("{resource} resource"),
            reason: if container.is_some() {
                "FailedGetContainerResourceMetric"
            } else {
                "FailedGetResourceMetric"
            },
        };
        let goal = match (target.average_utilization, &target.average_value) {
            (Some(u), _) if target.type_ == "Utilization" => Target::Utilization(u.max(1)),
            (_, Some(v)) if target.type_ == "AverageValue" => match parse_milli(&v.0) {
                Some(m) if m > 0 => Target::AverageValue(m as i64),
                _ => return failed(format!("invalid target average value {:?}", v.0)),
            },
            _ => {
                return failed(format!(
                    "invalid resource metric source: neither a utilization target nor a value target was set for {resource}"
                ))
            }
        };
        let metrics = match metrics {
            Ok(m) => m,
            Err(e) => {
                return failed(format!(
                    "failed to get {resource} utilization: unable to get metrics for resource {resource}: {e}"
                ))
            }
        };
        let pods: Vec<PodFacts> = self
            .pods
            .list_in(ns)
            .iter()
            .filter(|p| selector.matches(|k| p.labels().get(k).map(String::as_str)))
            .map(|p| facts(p, &resource, container.as_deref()))
            .collect();
        let found = samples(metrics, &resource, container.as_deref());
        let scope = if container.is_some() {
            "container resource"
        } else {
            "resource"
        };
        let name = match goal {
            Target::Utilization(_) => {
                format!("{resource} {scope} utilization (percentage of request)")
            }
            Target::AverageValue(_) => format!("{resource} {scope}"),
        };
        match replicas::recommend(current, &pods, found, goal, &resource, now) {
            Ok(r) => {
                let mut current = json!({"averageValue": milli_quantity(r.average)});
                if let Some(u) = r.utilization {
                    current["averageUtilization"] = json!(u);
                }
                let mut body = json!({"name": resource, "current": current});
                if let Some(c) = &container {
                    body["container"] = json!(c);
                }
                let type_ = if container.is_some() {
                    "ContainerResource"
                } else {
                    "Resource"
                };
                Computed {
                    recommendation: Ok(r),
                    status: json!({"type": type_, kind: body}),
                    name,
                    reason: "",
                }
            }
            Err(e) => failed(format!("failed to get {resource} utilization: {e}")),
        }
    }
}

/// A condition, keeping its transition time when its status is the same.
fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &str,
) {
    let status = if status { "True" } else { "False" };
    let since = conditions
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or(now)
        .to_owned();
    conditions.retain(|c| c["type"] != type_);
    conditions.push(json!({"type": type_, "status": status, "reason": reason,
        "message": message, "lastTransitionTime": since}));
    let order = |c: &Value| {
        ["AbleToScale", "ScalingActive", "ScalingLimited"]
            .iter()
            .position(|t| c["type"] == *t)
    };
    conditions.sort_by_key(order);
}

#[async_trait]
impl Reconcile for HpaController {
    fn name(&self) -> &'static str {
        "horizontalpodautoscaler"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(hpa) = self.hpas.get(key) else {
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            return Ok(Action::Done);
        };
        let now = Utc::now();
        let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let ns = hpa.namespace().unwrap_or_default();
        let spec = hpa.spec.clone().unwrap_or_default();
        let old_status = serde_json::to_value(&hpa.status).unwrap_or(Value::Null);
        let mut conditions: Vec<Value> = old_status["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut status = json!({"observedGeneration": hpa.metadata.generation,
            "currentReplicas": old_status["currentReplicas"].as_i64().unwrap_or(0),
            "desiredReplicas": old_status["desiredReplicas"].as_i64().unwrap_or(0)});
        let reference = format!(
            "{}/{}",
            spec.scale_target_ref.kind, spec.scale_target_ref.name
        );
        let scale = match self.targets.scale(&ns, &spec.scale_target_ref).await {
            Ok(s) => s,
            Err(e) => {
                let message = format!(
                    "the HPA controller was unable to get the target's current scale: {}",
                    said(&e)
                );
                self.event(&hpa, true, "FailedGetScale", &said(&e));
                set_condition(
                    &mut conditions,
                    "AbleToScale",
                    false,
                    "FailedGetScale",
                    &message,
                    &stamp,
                );
                status["conditions"] = json!(conditions);
                self.write_status(&hpa, &old_status, status).await?;
                return Ok(Action::RequeueAfter(self.sync_period));
            }
        };
        let current = scale.replicas;
        status["currentReplicas"] = json!(current);
        let min = spec.min_replicas.unwrap_or(1);
        let max = spec.max_replicas;
        let mut desired = 0;
        let mut rescale_reason = String::new();
        let mut metric_statuses = Vec::new();
        let rescale = if current == 0 && min != 0 {
            set_condition(
                &mut conditions,
                "ScalingActive",
                false,
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
                &stamp,
            );
            false
        } else if current > max {
            rescale_reason = "Current number of replicas above Spec.MaxReplicas".into();
            desired = max;
            true
        } else if current < min {
            rescale_reason = "Current number of replicas below Spec.MinReplicas".into();
            desired = min;
            true
        } else {
            let selector = LabelSelector::parse(&scale.selector);
            let (proposed, name, statuses) = match selector {
                Ok(selector) => self.propose(&hpa, &ns, current, &selector, &scale.selector, now).await,
                Err(e) => (Err(format!("couldn't convert selector into a corresponding internal selector object: {}", e.message)), String::new(), Vec::new()),
            };
            metric_statuses = statuses;
            match proposed {
                Err(e) => {
                    set_condition(
                        &mut conditions,
                        "ScalingActive",
                        false,
                        "FailedGetResourceMetric",
                        &format!("the HPA was unable to compute the replica count: {e}"),
                        &stamp,
                    );
                    self.event(
                        &hpa,
                        true,
                        "FailedComputeMetricsReplicas",
                        &format!(
                            "invalid metrics ({} invalid out of {}), first error is: {e}",
                            spec.metrics.as_ref().map_or(1, |m| m.len().max(1))
                                - metric_statuses.len(),
                            spec.metrics.as_ref().map_or(1, |m| m.len().max(1))
                        ),
                    );
                    status["currentMetrics"] = json!(metric_statuses);
                    status["conditions"] = json!(conditions);
                    self.write_status(&hpa, &old_status, status).await?;
                    return Ok(Action::RequeueAfter(self.sync_period));
                }
                Ok(proposed) => {
                    set_condition(&mut conditions, "ScalingActive", true, "ValidMetricFound",
                        &format!("the HPA was able to successfully calculate a replica count from {name}"), &stamp);
                    if proposed > current {
                        rescale_reason = format!("{name} above target");
                    } else if proposed < current {
                        rescale_reason = "All metrics below target".into();
                    }
                    let b = behavior(&hpa, self.downscale_window);
                    let n = {
                        let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
                        let h = history.entry(key.to_owned()).or_default();
                        h.normalize(&b, current, proposed, (min, max), now)
                    };
                    set_condition(
                        &mut conditions,
                        "AbleToScale",
                        true,
                        n.able.reason,
                        n.able.message,
                        &stamp,
                    );
                    set_condition(
                        &mut conditions,
                        "ScalingLimited",
                        n.limited,
                        n.limit.reason,
                        n.limit.message,
                        &stamp,
                    );
                    desired = n.replicas;
                    desired != current
                }
            }
        };
        if rescale {
            if let Err(e) = self
                .targets
                .set_scale(&ns, &spec.scale_target_ref, desired)
                .await
            {
                self.event(
                    &hpa,
                    true,
                    "FailedRescale",
                    &format!(
                        "New size: {desired}; reason: {rescale_reason}; error: {}",
                        said(&e)
                    ),
                );
                set_condition(
                    &mut conditions,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    &format!(
                        "the HPA controller was unable to update the target scale: {}",
                        said(&e)
                    ),
                    &stamp,
                );
                status["conditions"] = json!(conditions);
                self.write_status(&hpa, &old_status, status).await?;
                return Err(e);
            }
            set_condition(
                &mut conditions,
                "AbleToScale",
                true,
                "SucceededRescale",
                &format!("the HPA controller was able to update the target scale to {desired}"),
                &stamp,
            );
            self.event(
                &hpa,
                false,
                "SuccessfulRescale",
                &format!("New size: {desired}; reason: {rescale_reason}"),
            );
            let b = behavior(&hpa, self.downscale_window);
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let h = history.entry(key.to_owned()).or_default();
            h.rescaled(current, desired, now, b.longest_period());
            status["lastScaleTime"] = json!(stamp);
            tracing::info!(hpa = key, reference, from = current, to = desired, reason = %rescale_reason, "rescaled");
        } else {
            desired = if current == 0 && min != 0 { 0 } else { current };
        }
        status["desiredReplicas"] = json!(desired);
        status["currentMetrics"] = json!(metric_statuses);
        status["conditions"] = json!(conditions);
        self.write_status(&hpa, &old_status, status).await?;
        Ok(Action::RequeueAfter(self.sync_period))
    }
}

impl HpaController {
    /// The largest recommendation over the metrics, with the metric's
    /// name and every metric's status.
    async fn propose(
        &self,
        hpa: &HorizontalPodAutoscaler,
        ns: &str,
        current: i32,
        selector: &LabelSelector,
        selector_text: &str,
        now: DateTime<Utc>,
    ) -> (Result<i32, String>, String, Vec<Value>) {
        let specs = hpa
            .spec
            .as_ref()
            .and_then(|s| s.metrics.clone())
            .unwrap_or_default();
        let metrics = self
            .targets
            .pod_metrics(ns, selector_text)
            .await
            .map_err(|e| said(&e));
        let (mut best, mut name, mut statuses) = (None::<i32>, String::new(), Vec::new());
        let mut first_error = None;
        let mut invalid = 0;
        for spec in &specs {
            let c = self.compute(ns, spec, current, selector, &metrics, now);
            match c.recommendation {
                Ok(r) => {
                    if best.is_none_or(|b| r.replicas > b) {
                        best = Some(r.replicas);
                        name = c.name;
                    }
                    statuses.push(c.status);
                }
                Err(e) => {
                    invalid += 1;
                    self.event(hpa, true, c.reason, &e);
                    first_error.get_or_insert(e);
                }
            }
        }
        // No metric, or some failing and the rest asking for fewer: no
        // change (as upstream, scale down only on complete information).
        match (best, first_error) {
            (Some(b), Some(e)) if invalid > 0 && b < current => (Err(e), name, statuses),
            (Some(b), _) => (Ok(b), name, statuses),
            (None, Some(e)) => (Err(e), name, statuses),
            (None, None) => (Err("no metrics are set".into()), name, statuses),
        }
    }

    /// Writes the status when it changed.
    async fn write_status(
        &self,
        hpa: &HorizontalPodAutoscaler,
        old: &Value,
        mut status: Value,
    ) -> Result<(), Error> {
        if status["currentMetrics"]
            .as_array()
            .is_some_and(|m| m.is_empty())
        {
            status["currentMetrics"] = Value::Null;
        }
        if old["lastScaleTime"].is_string() && status["lastScaleTime"].is_null() {
            status["lastScaleTime"] = old["lastScaleTime"].clone();
        }
        let same = [
            "observedGeneration",
            "currentReplicas",
            "desiredReplicas",
            "currentMetrics",
            "conditions",
            "lastScaleTime",
        ]
        .iter()
        .all(|k| old[*k] == status[*k]);
        if same {
            return Ok(());
        }
        let target = ObjectTarget::of::<HorizontalPodAutoscaler>(
            hpa.namespace().as_deref(),
            &hpa.name_any(),
        );
        self.cluster
            .merge_patch(&target, json!({"status": status}), true)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    /// Scales and metrics held in memory.
    #[derive(Default)]
    struct FakeTargets {
        replicas: Mutex<i32>,
        metrics: Mutex<Option<Vec<Value>>>,
    }

    #[async_trait]
    impl Targets for FakeTargets {
        async fn scale(&self, _: &str, _: &CrossVersionObjectReference) -> Result<Scale, Error> {
            Ok(Scale {
                replicas: *self.replicas.lock().unwrap(),
                selector: "app=web".into(),
            })
        }

        async fn set_scale(
            &self,
            _: &str,
            _: &CrossVersionObjectReference,
            n: i32,
        ) -> Result<(), Error> {
            *self.replicas.lock().unwrap() = n;
            Ok(())
        }

        async fn pod_metrics(&self, _: &str, selector: &str) -> Result<Vec<Value>, Error> {
            assert_eq!(selector, "app=web");
            self.metrics.lock().unwrap().clone().ok_or(Error::Api {
                code: 404,
                reason: "NotFound".into(),
                message:
                    "the server could not find the requested resource (get pods.metrics.k8s.io)"
                        .into(),
            })
        }
    }

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Running", "startTime": "2020-01-01T00:00:00Z",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2020-01-01T00:00:10Z"}]}}))
        .unwrap()
    }

    fn usage(name: &str, cpu: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "d"}, "timestamp": Utc::now().to_rfc3339(),
            "window": "15s", "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": "1Mi"}}]})
    }

    fn hpa(metrics: Value) -> HorizontalPodAutoscaler {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "d", "uid": "h1", "generation": 1},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5, "metrics": metrics}}))
        .unwrap()
    }

    fn cpu50() -> Value {
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
    }

    fn controller(
        replicas: i32,
    ) -> (
        HpaController,
        Arc<FakeCluster>,
        Arc<FakeTargets>,
        Informer<HorizontalPodAutoscaler>,
        Informer<Pod>,
    ) {
        let fake = Arc::new(FakeCluster::default());
        let targets = Arc::new(FakeTargets::default());
        *targets.replicas.lock().unwrap() = replicas;
        let (mut hpas, pods) = (Informer::default(), Informer::default());
        let c = HpaController::new(
            &mut hpas,
            &pods,
            fake.clone(),
            targets.clone(),
            Queue::new(),
            (Duration::from_secs(15), Duration::from_secs(300)),
        );
        (c, fake, targets, hpas, pods)
    }

    fn condition(status: &Value, type_: &str) -> (String, String) {
        let c = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == type_)
            .unwrap();
        (
            c["status"].as_str().unwrap().to_owned(),
            c["reason"].as_str().unwrap().to_owned(),
        )
    }

    #[tokio::test]
    async fn a_busy_pod_scales_its_target_up_to_the_limits() {
        let (c, fake, targets, hpas, pods) = controller(1);
        hpas.apply(hpa(cpu50()));
        pods.apply(pod("a"));
        *targets.metrics.lock().unwrap() = Some(vec![usage("a", "1")]);
        c.reconcile("d/web").await.unwrap();
        assert_eq!(*targets.replicas.lock().unwrap(), 5);
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(status["desiredReplicas"], 5);
        assert_eq!(
            status["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            1000
        );
        assert_eq!(
            status["currentMetrics"][0]["resource"]["current"]["averageValue"],
            "1"
        );
        assert_eq!(
            condition(status, "AbleToScale"),
            ("True".into(), "SucceededRescale".into())
        );
        assert_eq!(
            condition(status, "ScalingActive"),
            ("True".into(), "ValidMetricFound".into())
        );
        assert_eq!(
            condition(status, "ScalingLimited"),
            ("True".into(), "TooManyReplicas".into())
        );
        assert!(status["lastScaleTime"].is_string());
        assert_eq!(
            fake.event_messages(),
            ["SuccessfulRescale New size: 5; reason: cpu resource utilization (percentage of request) above target"]
        );
    }

    #[tokio::test]
    async fn without_metrics_nothing_changes_and_the_status_says_why() {
        let (c, fake, targets, hpas, pods) = controller(2);
        hpas.apply(hpa(cpu50()));
        pods.apply(pod("a"));
        c.reconcile("d/web").await.unwrap();
        c.reconcile("d/web").await.unwrap();
        assert_eq!(*targets.replicas.lock().unwrap(), 2);
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(
            condition(status, "ScalingActive"),
            ("False".into(), "FailedGetResourceMetric".into())
        );
        let events = fake.event_messages();
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("FailedGetResourceMetric failed to get cpu utilization")),
            "{events:?}"
        );
        assert!(
            events.iter().any(|e| e
                .starts_with("FailedComputeMetricsReplicas invalid metrics (1 invalid out of 1)")),
            "{events:?}"
        );
        assert_eq!(
            events[2..],
            events[..2],
            "a second sync says the same again, for the sink to count"
        );
    }

    #[tokio::test]
    async fn custom_metrics_are_refused_and_a_zero_target_is_left_alone() {
        let (c, fake, targets, hpas, pods) = controller(2);
        hpas.apply(hpa(
            json!([{"type": "Pods", "pods": {"metric": {"name": "qps"},
            "target": {"type": "AverageValue", "averageValue": "10"}}}]),
        ));
        pods.apply(pod("a"));
        *targets.metrics.lock().unwrap() = Some(vec![usage("a", "1")]);
        c.reconcile("d/web").await.unwrap();
        let events = fake.event_messages();
        assert!(
            events.iter().any(|e| e.contains("no custom metrics API")),
            "{events:?}"
        );
        assert_eq!(*targets.replicas.lock().unwrap(), 2);
        fake.clear();
        *targets.replicas.lock().unwrap() = 0;
        hpas.apply(hpa(cpu50()));
        c.reconcile("d/web").await.unwrap();
        assert_eq!(*targets.replicas.lock().unwrap(), 0);
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(
            condition(status, "ScalingActive"),
            ("False".into(), "ScalingDisabled".into())
        );
    }

    #[test]
    fn windows_as_metrics_servers_write_them() {
        assert_eq!(parse_window("15.012s"), Duration::from_millis(15_012));
        assert_eq!(parse_window("1m0s"), Duration::from_secs(60));
        assert_eq!(parse_window("bogus"), Duration::ZERO);
    }

    #[test]
    fn samples_sum_containers_or_take_the_one_named() {
        let m = vec![
            json!({"metadata": {"name": "a"}, "timestamp": "2026-01-01T00:00:00Z", "window": "10s",
            "containers": [{"name": "app", "usage": {"cpu": "250000000n", "memory": "1Mi"}},
                           {"name": "side", "usage": {"cpu": "50m", "memory": "1Mi"}}]}),
        ];
        assert_eq!(samples(&m, "cpu", None)["a"].value, 300);
        assert_eq!(samples(&m, "cpu", Some("side"))["a"].value, 50);
        assert_eq!(
            samples(&m, "memory", None)["a"].value,
            2 * 1024 * 1024 * 1000
        );
        assert!(samples(&m, "cpu", Some("gone")).is_empty());
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let mut c = Vec::new();
        set_condition(&mut c, "ScalingActive", true, "ValidMetricFound", "m", "t1");
        set_condition(&mut c, "AbleToScale", true, "ReadyForNewScale", "m", "t1");
        set_condition(
            &mut c,
            "ScalingActive",
            true,
            "ValidMetricFound",
            "m2",
            "t2",
        );
        assert_eq!(c[0]["type"], "AbleToScale", "upstream's order");
        assert_eq!(c[1]["lastTransitionTime"], "t1");
        assert_eq!(c[1]["message"], "m2");
        set_condition(
            &mut c,
            "ScalingActive",
            false,
            "FailedGetResourceMetric",
            "m3",
            "t3",
        );
        assert_eq!(c[1]["lastTransitionTime"], "t3");
    }
}
