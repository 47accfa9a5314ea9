//! One strategy per resource, as upstream's registry strategies: what a
//! new object starts with, what a write through each subresource may
//! change, what holds a deletion and how long. The handlers ask the
//! strategy of the resource at hand; a kind with nothing of its own uses
//! the generic one, so a new kind plugs in here without touching them.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use serde_json::{json, Value};
use skiff_core::meta;
use skiff_core::registry::ResourceType;
use skiff_core::validate::needs_health_check;

/// What a resource does at each step of a write.
pub trait Strategy: Sync {
    /// The status a new object starts with: by default none where there
    /// is a status subresource (it is the writers' of `/status`), as sent
    /// elsewhere.
    fn initial_status(&self, r: &ResourceType, sent: &Value) -> Option<Value> {
        if r.has_status() {
            Some(json!({}))
        } else {
            sent.get("status").cloned()
        }
    }

    /// What the server sets on a new object after defaults; the
    /// warnings that brings.
    fn prepare_create(&self, _obj: &mut Value) -> Vec<String> {
        Vec::new()
    }

    /// The next state of `current` from `next`, written through
    /// `subresource`: `/status` changes only the status, the main
    /// resource everything but (where a status subresource exists).
    fn prepare_update(
        &self,
        r: &ResourceType,
        current: &Value,
        next: Value,
        subresource: Option<&str>,
    ) -> Value {
        split_status(r, current, next, subresource)
    }

    /// How many seconds a deletion waits (a running pod's grace period).
    fn grace_seconds(&self, _obj: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Whether the object waits for more than its finalizers and its
    /// grace period to go.
    fn holds_deletion(&self, _obj: &Value) -> bool {
        false
    }

    /// What marking the object for deletion changes besides metadata.
    fn mark_deleting(&self, _obj: &mut Value) {}
}

/// A status as its typed struct writes it: the fields upstream's Go types
/// always serialize (counts, flags) present even when zero.
pub fn typed_status(r: &ResourceType, status: Value) -> Value {
    if r.custom {
        return status;
    }
    // A kind's new objects mostly start with the same status (a pod's is
    // `{"phase": "Pending"}`): the last one typed is kept per kind.
    type Kind = (&'static str, &'static str, &'static str);
    static LAST: LazyLock<Mutex<HashMap<Kind, (Value, Value)>>> = LazyLock::new(Default::default);
    let kind = (r.group, r.version, r.kind);
    let last = || LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, typed)) = last().get(&kind).filter(|(sent, _)| *sent == status) {
        return typed.clone();
    }
    let typed = typed(r, status.clone());
    last().insert(kind, (status, typed.clone()));
    typed
}

fn typed(r: &ResourceType, status: Value) -> Value {
    let mut shell = serde_json::Map::with_capacity(3);
    shell.insert("apiVersion".into(), r.api_version().into());
    shell.insert("kind".into(), r.kind.into());
    shell.insert("status".into(), status.clone());
    match (r.decode)(Value::Object(shell), None) {
        Ok(mut typed) => typed["status"].take(),
        Err(_) => status,
    }
}

/// The status/spec split every strategy starts from.
pub fn split_status(
    r: &ResourceType,
    current: &Value,
    mut next: Value,
    subresource: Option<&str>,
) -> Value {
    match subresource {
        // Only the ephemeral containers change through their subresource.
        Some("ephemeralcontainers") => {
            let ephemeral = next["spec"]["ephemeralContainers"].clone();
            let managed = meta::get(&next, "managedFields").cloned();
            next = current.clone();
            next["spec"]["ephemeralContainers"] = ephemeral;
            if let Some(m) = managed {
                meta::set(&mut next, "managedFields", m);
            }
        }
        // A resize changes containers' resources and resize policies
        // only; containers added, removed, renamed or reordered are left for
        // validation to refuse.
        Some("resize") => {
            let same_shape = ["containers", "initContainers"].iter().all(|l| {
                let names = |v: &Value| -> Vec<Value> {
                    let list = v["spec"][*l].as_array().into_iter().flatten();
                    list.map(|c| c["name"].clone()).collect()
                };
                names(&next) == names(current)
            });
            if same_shape {
                let managed = meta::get(&next, "managedFields").cloned();
                let mut resized = current.clone();
                for list in ["containers", "initContainers"] {
                    let count = current["spec"][list].as_array().map_or(0, Vec::len);
                    for i in 0..count {
                        for field in ["resources", "resizePolicy"] {
                            let asked = next["spec"][list][i].get(field).cloned();
                            let c = &mut resized["spec"][list][i];
                            match asked {
                                Some(v) => c[field] = v,
                                None => {
                                    if let Some(m) = c.as_object_mut() {
                                        m.remove(field);
                                    }
                                }
                            }
                        }
                    }
                }
                next = resized;
                if let Some(m) = managed {
                    meta::set(&mut next, "managedFields", m);
                }
            }
        }
        // Usually `next` is `current` with another status, and is kept
        // as it is (no copy); only what else it changed is put back.
        Some("status") if meta::equal_except(current, &next, &["status"], &["managedFields"]) => {
            if next.get("status").is_none() {
                next["status"] = Value::Null;
            }
            if meta::get(&next, "managedFields").is_none() {
                if let Some(m) = meta::get(current, "managedFields") {
                    meta::set(&mut next, "managedFields", m.clone());
                }
            }
        }
        Some("status") => {
            let status = next.get("status").cloned().unwrap_or(Value::Null);
            let managed = meta::get(&next, "managedFields").cloned();
            next = current.clone();
            next["status"] = status;
            if let Some(m) = managed {
                meta::set(&mut next, "managedFields", m);
            }
        }
        _ if r.has_status() => match current.get("status") {
            Some(s) => next["status"] = s.clone(),
            None => {
                if let Some(m) = next.as_object_mut() {
                    m.remove("status");
                }
            }
        },
        _ => {}
    }
    // A pod's ephemeral containers change through their subresource
    // only (upstream's pod strategy keeps them on every other write).
    if (r.group, r.kind) == ("", "Pod") && subresource != Some("ephemeralcontainers") {
        match current["spec"].get("ephemeralContainers") {
            Some(e) => next["spec"]["ephemeralContainers"] = e.clone(),
            None => {
                if let Some(spec) = next.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.remove("ephemeralContainers");
                }
            }
        }
    }
    next
}

/// The strategy of a resource.
pub fn of(r: &ResourceType) -> &'static dyn Strategy {
    match (r.group, r.kind) {
        ("", "Pod") => &Pods,
        ("", "Namespace") => &Namespaces,
        ("", "Node" | "Event") | ("events.k8s.io", "Event") => &StatusAsSent,
        ("", "Service") => &Services,
        ("batch", "Job") => &Jobs,
        ("certificates.k8s.io", "CertificateSigningRequest") => &CertificateSigningRequests,
        ("apiextensions.k8s.io", "CustomResourceDefinition") => &Definitions,
        ("apiregistration.k8s.io", "APIService") => &ApiServices,
        _ if r.custom => &Custom,
        _ => &Generic,
    }
}

struct Generic;
impl Strategy for Generic {}

/// A custom resource with a status subresource starts without one, as
/// upstream's.
struct Custom;
impl Strategy for Custom {
    fn initial_status(&self, r: &ResourceType, sent: &Value) -> Option<Value> {
        if r.has_status() {
            None
        } else {
            sent.get("status").cloned()
        }
    }
}

/// An APIService users create says it is not served.
struct ApiServices;
impl Strategy for ApiServices {
    fn initial_status(&self, _: &ResourceType, sent: &Value) -> Option<Value> {
        Some(super::synthesized::unavailable(sent))
    }
}

/// A definition is held until its objects are deleted.
struct Definitions;
impl Strategy for Definitions {
    fn prepare_create(&self, obj: &mut Value) -> Vec<String> {
        let mut finalizers = meta::finalizers(obj);
        if !finalizers.iter().any(|f| f == skiff_core::crd::CLEANUP) {
            finalizers.push(skiff_core::crd::CLEANUP.to_owned());
        }
        meta::set(obj, "finalizers", finalizers);
        Vec::new()
    }
}

/// Nodes and Events keep the status they are created with.
struct StatusAsSent;
impl Strategy for StatusAsSent {
    fn initial_status(&self, _: &ResourceType, sent: &Value) -> Option<Value> {
        sent.get("status").cloned()
    }
}

/// The longest a deletion waits: a century.
const MAX_GRACE_SECONDS: i64 = 100 * 365 * 24 * 3600;

struct Pods;
impl Strategy for Pods {
    fn initial_status(&self, _: &ResourceType, _: &Value) -> Option<Value> {
        Some(json!({"phase": "Pending"}))
    }

    fn prepare_create(&self, pod: &mut Value) -> Vec<String> {
        drop_alpha_fields(&mut pod["spec"]);
        merge_label_keys(pod);
        admit_pod(pod);
        let warnings = skiff_core::app_armor::fields_from_annotations(pod);
        // A gated pod says so, as upstream's strategy writes it.
        let gated = pod["spec"]["schedulingGates"]
            .as_array()
            .is_some_and(|g| !g.is_empty());
        if gated {
            pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
                "lastProbeTime": null, "lastTransitionTime": meta::now(),
                "reason": "SchedulingGated", "message": "Scheduling is blocked due to non-empty scheduling gates"}]);
        }
        warnings
    }

    /// A pod bound to a node and not finished waits for its grace period
    /// (the request's, else its own, else 30 s); others go at once.
    fn grace_seconds(&self, pod: &Value, requested: Option<i64>) -> i64 {
        let running = !pod["spec"]["nodeName"].as_str().unwrap_or("").is_empty()
            && !matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            );
        // No deadline past a century (beyond it the clock's arithmetic
        // would overflow).
        let grace = requested
            .or(pod["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30)
            .min(MAX_GRACE_SECONDS);
        if running {
            grace.max(0)
        } else {
            0
        }
    }
}

struct Namespaces;
impl Strategy for Namespaces {
    fn initial_status(&self, r: &ResourceType, sent: &Value) -> Option<Value> {
        StatusAsSent.initial_status(r, sent)
    }

    /// Until the namespace controller empties `spec.finalizers`.
    fn holds_deletion(&self, ns: &Value) -> bool {
        ns["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    }

    fn mark_deleting(&self, ns: &mut Value) {
        ns["status"]["phase"] = json!("Terminating");
    }
}

struct Services;
impl Strategy for Services {
    fn prepare_update(
        &self,
        r: &ResourceType,
        current: &Value,
        next: Value,
        subresource: Option<&str>,
    ) -> Value {
        let mut next = split_status(r, current, next, subresource);
        drop_type_dependent_fields(current, &mut next);
        next
    }
}

/// As upstream: a Service whose type changes to one without NodePorts
/// loses the NodePorts it had, unless the update set them itself; a
/// health-check port goes with the need for it, and stays while needed
/// when the update leaves it out.
fn drop_type_dependent_fields(current: &Value, next: &mut Value) {
    let health = "healthCheckNodePort";
    match (
        needs_health_check(&current["spec"]),
        needs_health_check(&next["spec"]),
    ) {
        (true, true) if next["spec"][health].as_i64().unwrap_or(0) == 0 => {
            next["spec"][health] = current["spec"][health].clone();
        }
        (true, false) if next["spec"][health] == current["spec"][health] => {
            if let Some(spec) = next["spec"].as_object_mut() {
                spec.remove(health);
            }
        }
        _ => {}
    }
    // A load balancer's own fields go with its type, unless changed too.
    let balanced = |v: &Value| v["spec"]["type"] == "LoadBalancer";
    if balanced(current) && !balanced(next) {
        for field in ["allocateLoadBalancerNodePorts", "loadBalancerClass"] {
            if next["spec"][field] == current["spec"][field] {
                if let Some(spec) = next["spec"].as_object_mut() {
                    spec.remove(field);
                }
            }
        }
    }
    let takes_ports = |v: &Value| {
        matches!(
            v["spec"]["type"].as_str(),
            Some("NodePort" | "LoadBalancer")
        )
    };
    if !takes_ports(current) || takes_ports(next) {
        return;
    }
    // The external traffic policy goes with the type, unless changed too.
    let policy = "externalTrafficPolicy";
    if next["spec"][policy] == current["spec"][policy] {
        if let Some(spec) = next["spec"].as_object_mut() {
            spec.remove(policy);
        }
    }
    let old_ports = current["spec"]["ports"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, port) in next["spec"]["ports"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let unchanged = old_ports
            .get(i)
            .is_some_and(|o| o["nodePort"] == port["nodePort"]);
        if unchanged {
            if let Some(p) = port.as_object_mut() {
                p.remove("nodePort");
            }
        }
    }
}

struct Jobs;
impl Strategy for Jobs {
    /// A Job without `manualSelector` selects its pods by its uid, and its
    /// template carries the matching labels.
    fn prepare_create(&self, job: &mut Value) -> Vec<String> {
        if job["spec"]["manualSelector"] == true {
            return Vec::new();
        }
        let uid = meta::get_str(job, "uid").unwrap_or_default().to_owned();
        let name = meta::name(job).to_owned();
        job["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let labels = &mut job["spec"]["template"]["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        for (key, value) in [
            ("batch.kubernetes.io/controller-uid", &uid),
            ("batch.kubernetes.io/job-name", &name),
            ("controller-uid", &uid),
            ("job-name", &name),
        ] {
            labels[key] = json!(value);
        }
        Vec::new()
    }
}

struct CertificateSigningRequests;
impl Strategy for CertificateSigningRequests {
    /// `/approval` changes only the conditions, `/status` everything of
    /// the status but the decision, the main resource none of it.
    fn prepare_update(
        &self,
        _: &ResourceType,
        current: &Value,
        mut next: Value,
        subresource: Option<&str>,
    ) -> Value {
        let status = crate::admission::merge_status(subresource, current, &next);
        if subresource.is_some() {
            let managed = meta::get(&next, "managedFields").cloned();
            next = current.clone();
            if let Some(m) = managed {
                meta::set(&mut next, "managedFields", m);
            }
        }
        next["status"] = status;
        next
    }
}

/// Drops what only upstream's alpha features (off by default in 1.35)
/// read, as its pod strategy drops the fields of disabled features: a
/// container's `lifecycle.stopSignal` (ContainerStopSignals) and the pod's
/// `workloadRef` (GenericWorkload).
fn drop_alpha_fields(spec: &mut Value) {
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("workloadRef");
    }
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        let lifecycles = containers
            .into_iter()
            .flatten()
            .filter_map(|c| c.get_mut("lifecycle").and_then(Value::as_object_mut));
        for lifecycle in lifecycles {
            lifecycle.remove("stopSignal");
        }
    }
}

/// Folds the pod's own label values into the selectors that name label
/// keys, as upstream's pod strategy does on creation: `matchLabelKeys` of
/// spread constraints and affinity terms become `In` requirements,
/// `mismatchLabelKeys` `NotIn` ones (keys the pod lacks are left out; a
/// term without a selector selects nothing, and stays so).
fn merge_label_keys(pod: &mut Value) {
    let labels = pod["metadata"]["labels"].clone();
    let merge = |term: &mut Value| {
        for (field, operator) in [("matchLabelKeys", "In"), ("mismatchLabelKeys", "NotIn")] {
            let keys = term[field].as_array().cloned().unwrap_or_default();
            let Some(selector) = term.get_mut("labelSelector").filter(|s| s.is_object()) else {
                return;
            };
            for key in keys.iter().filter_map(Value::as_str) {
                let Some(value) = labels[key].as_str() else {
                    continue;
                };
                let requirement = json!({"key": key, "operator": operator, "values": [value]});
                match selector
                    .get_mut("matchExpressions")
                    .and_then(Value::as_array_mut)
                {
                    Some(expressions) => expressions.push(requirement),
                    None => selector["matchExpressions"] = json!([requirement]),
                }
            }
        }
    };
    let Some(spec) = pod.get_mut("spec") else {
        return;
    };
    let spread = spec
        .get_mut("topologySpreadConstraints")
        .and_then(Value::as_array_mut);
    for constraint in spread.into_iter().flatten() {
        // Spread constraints have no mismatch keys.
        merge(constraint);
    }
    if let Some(affinity) = spec.get_mut("affinity") {
        for kind in ["podAffinity", "podAntiAffinity"] {
            let Some(of_kind) = affinity.get_mut(kind) else {
                continue;
            };
            let required = "requiredDuringSchedulingIgnoredDuringExecution";
            let preferred = "preferredDuringSchedulingIgnoredDuringExecution";
            let hard = of_kind.get_mut(required).and_then(Value::as_array_mut);
            for term in hard.into_iter().flatten() {
                merge(term);
            }
            let soft = of_kind.get_mut(preferred).and_then(Value::as_array_mut);
            for weighted in soft.into_iter().flatten() {
                if let Some(term) = weighted.get_mut("podAffinityTerm") {
                    merge(term);
                }
            }
        }
    }
}

/// Upstream's pod admission: priority, QoS class and the default
/// tolerations for unreachable and not-ready nodes.
fn admit_pod(pod: &mut Value) {
    let spec = &mut pod["spec"];
    if spec["priority"].is_null() {
        spec["priority"] = json!(0);
    }
    if spec["enableServiceLinks"].is_null() {
        spec["enableServiceLinks"] = json!(true);
    }
    if spec["preemptionPolicy"].is_null() {
        spec["preemptionPolicy"] = json!("PreemptLowerPriority");
    }
    let mut tolerations: Vec<Value> = spec["tolerations"].as_array().cloned().unwrap_or_default();
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let covered = tolerations.iter().any(|t| {
            (t["key"] == key || (t["key"].is_null() && t["operator"] == "Exists"))
                && (t["effect"].is_null() || t["effect"] == "NoExecute")
        });
        if !covered {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
    spec["tolerations"] = Value::Array(tolerations);
    pod["status"]["qosClass"] = json!(skiff_core::qos::class(&pod["spec"]));
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::registry;

    fn r(group: &str, plural: &str) -> &'static ResourceType {
        registry::preferred(group, plural).unwrap()
    }

    #[test]
    fn a_status_write_changes_the_status_and_managed_fields_only() {
        let deployments = r("apps", "deployments");
        let current = json!({"metadata": {"name": "d", "managedFields": [{"manager": "a"}]},
            "spec": {"replicas": 1}, "status": {"replicas": 0}});
        let mut next = current.clone();
        next["status"] = json!({"replicas": 1});
        let written = split_status(deployments, &current, next.clone(), Some("status"));
        assert_eq!(written, next);
        next["spec"]["replicas"] = json!(9);
        next["metadata"]["labels"] = json!({"sneaked": "in"});
        let written = split_status(deployments, &current, next.clone(), Some("status"));
        assert_eq!(written["spec"]["replicas"], 1);
        assert_eq!(written["metadata"].get("labels"), None);
        assert_eq!(written["status"]["replicas"], 1);
        for sneaked in [false, true] {
            let mut bare = current.clone();
            bare.as_object_mut().unwrap().remove("status");
            bare["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("managedFields");
            if sneaked {
                bare["spec"]["replicas"] = json!(9);
            }
            let written = split_status(deployments, &current, bare, Some("status"));
            assert_eq!(written["status"], Value::Null, "a status sent as none");
            assert_eq!(
                written["metadata"]["managedFields"],
                json!([{"manager": "a"}])
            );
            assert_eq!(written["spec"]["replicas"], 1);
        }
        let mut given = current.clone();
        given["metadata"]["managedFields"] = json!([{"manager": "b"}]);
        let written = split_status(deployments, &current, given, Some("status"));
        assert_eq!(
            written["metadata"]["managedFields"],
            json!([{"manager": "b"}])
        );
    }

    /// A status typed again comes out as the first time, whatever was
    /// typed between.
    #[test]
    fn a_status_typed_again_is_typed_as_before() {
        let jobs = r("batch", "jobs");
        let empty = typed_status(jobs, json!({}));
        assert_eq!(empty, typed(jobs, json!({})));
        let sent = typed_status(jobs, json!({"active": 2}));
        assert_eq!(sent["active"], 2);
        assert_eq!(typed_status(jobs, json!({})), empty);
        let pods = r("", "pods");
        let pending = typed_status(pods, json!({"phase": "Pending"}));
        assert_eq!(pending, json!({"phase": "Pending"}));
        assert_eq!(typed_status(pods, json!({"phase": "Pending"})), pending);
        assert_eq!(
            typed_status(pods, json!({"phase": "Running"}))["phase"],
            "Running"
        );
    }

    /// Every status a new object starts with carries the integers and
    /// booleans its OpenAPI schema requires (clients model them as
    /// required), for every served kind.
    #[test]
    fn initial_statuses_carry_their_required_scalars() {
        let s = skiff_core::schema::schemas();
        let mut checked = 0;
        for r in registry::RESOURCES {
            let Some(status) = of(r).initial_status(r, &json!({"status": {}})) else {
                continue;
            };
            let status = typed_status(r, status);
            let Some(def) = s.root(r).and_then(|root| s.property_def(root, "status")) else {
                continue;
            };
            let schema = &s.definitions[def];
            for field in schema["required"].as_array().into_iter().flatten() {
                let field = field.as_str().unwrap();
                let ty = schema["properties"][field]["type"].as_str().unwrap_or("");
                if matches!(ty, "integer" | "boolean") {
                    assert!(
                        status.get(field).is_some(),
                        "{} status lacks {field}: {status}",
                        r.kind
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked >= 4, "DaemonSet's four counts at least: {checked}");
    }

    #[test]
    fn each_kind_starts_changes_and_goes_as_upstream() {
        let sent = json!({"status": {"phase": "Running"}});
        let start = |g, p| of(r(g, p)).initial_status(r(g, p), &sent);
        assert_eq!(start("", "pods"), Some(json!({"phase": "Pending"})));
        assert_eq!(start("", "nodes"), Some(json!({"phase": "Running"})));
        assert_eq!(start("", "namespaces"), Some(json!({"phase": "Running"})));
        assert_eq!(start("apps", "deployments"), Some(json!({})));
        assert_eq!(start("", "configmaps"), Some(json!({"phase": "Running"})));

        let pods = of(r("", "pods"));
        let mut alpha = json!({"spec": {"workloadRef": {"name": "w"}, "containers": [
            {"name": "a", "lifecycle": {"stopSignal": "SIGUSR1", "preStop": {"sleep": {"seconds": 1}}}},
            {"name": "b"}]}});
        let mut keyed = json!({"metadata": {"labels": {"app": "web", "rev": "7"}}, "spec": {"containers": [],
            "topologySpreadConstraints": [{"labelSelector": {"matchLabels": {"app": "web"}}, "matchLabelKeys": ["rev", "missing"]}],
            "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {}, "mismatchLabelKeys": ["app"]}],
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "podAffinityTerm": {"matchLabelKeys": ["rev"]}}]}}}});
        pods.prepare_create(&mut keyed);
        let spec = &keyed["spec"];
        assert_eq!(
            spec["topologySpreadConstraints"][0]["labelSelector"]["matchExpressions"],
            json!([{"key": "rev", "operator": "In", "values": ["7"]}])
        );
        let anti = &spec["affinity"]["podAntiAffinity"];
        assert_eq!(
            anti["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"],
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]})
        );
        let soft = &anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
        assert_eq!(soft.get("labelSelector"), None);
        pods.prepare_create(&mut alpha);
        assert_eq!(alpha["status"].get("conditions"), None);
        let mut gated = json!({"spec": {"schedulingGates": [{"name": "g"}], "containers": []}});
        pods.prepare_create(&mut gated);
        let condition = &gated["status"]["conditions"][0];
        assert_eq!(
            (&condition["type"], &condition["reason"]),
            (&json!("PodScheduled"), &json!("SchedulingGated"))
        );
        assert_eq!(alpha["spec"].get("workloadRef"), None);
        assert_eq!(alpha["spec"].get("initContainers"), None);
        let containers = &alpha["spec"]["containers"];
        assert_eq!(
            containers[0]["lifecycle"],
            json!({"preStop": {"sleep": {"seconds": 1}}})
        );
        assert_eq!(containers[1].get("lifecycle"), None);
        let pod = |node: &str, phase: &str| json!({"spec": {"nodeName": node}, "status": {"phase": phase}});
        assert_eq!(pods.grace_seconds(&pod("n", "Running"), None), 30);
        assert_eq!(pods.grace_seconds(&pod("n", "Running"), Some(5)), 5);
        assert_eq!(pods.grace_seconds(&pod("", "Pending"), None), 0);
        assert_eq!(pods.grace_seconds(&pod("n", "Succeeded"), None), 0);
        assert_eq!(
            pods.grace_seconds(&pod("n", "Running"), Some(i64::MAX)),
            MAX_GRACE_SECONDS
        );
        assert_eq!(
            of(r("", "configmaps")).grace_seconds(&json!({}), Some(9)),
            0
        );

        let namespaces = of(r("", "namespaces"));
        let mut ns = json!({"spec": {"finalizers": ["kubernetes"]}});
        assert!(namespaces.holds_deletion(&ns));
        namespaces.mark_deleting(&mut ns);
        assert_eq!(ns["status"]["phase"], "Terminating");
        assert!(!namespaces.holds_deletion(&json!({"spec": {"finalizers": []}})));

        let services = r("", "services");
        let node_port = json!({"spec": {"type": "NodePort", "externalTrafficPolicy": "Cluster",
            "ports": [{"port": 80, "nodePort": 30001}]}});
        let mut cluster_ip = node_port.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        let next = of(services).prepare_update(services, &node_port, cluster_ip, None);
        assert!(next["spec"]["ports"][0]["nodePort"].is_null());
        assert!(next["spec"].get("externalTrafficPolicy").is_none());
        // A health-check port stays while needed, and goes with the need.
        let local = json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
            "healthCheckNodePort": 31000, "ports": [{"port": 80}]}});
        let mut left_out = local.clone();
        left_out["spec"]
            .as_object_mut()
            .unwrap()
            .remove("healthCheckNodePort");
        let next = of(services).prepare_update(services, &local, left_out, None);
        assert_eq!(next["spec"]["healthCheckNodePort"], 31000);
        let mut cluster_policy = local.clone();
        cluster_policy["spec"]["externalTrafficPolicy"] = json!("Cluster");
        let next = of(services).prepare_update(services, &local, cluster_policy, None);
        assert!(next["spec"].get("healthCheckNodePort").is_none());

        let jobs = r("batch", "jobs");
        let mut job = json!({"metadata": {"name": "j", "uid": "u"}, "spec": {"template": {}}});
        of(jobs).prepare_create(&mut job);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "j"
        );

        let csrs = r("certificates.k8s.io", "certificatesigningrequests");
        let current = json!({"spec": {"request": "a"}, "status": {"certificate": "c"}});
        let asked = json!({"spec": {"request": "forged"}, "status": {"certificate": "x", "conditions": [{"type": "Approved", "status": "True"}]}});
        let approved = of(csrs).prepare_update(csrs, &current, asked, Some("approval"));
        assert_eq!(approved["spec"]["request"], "a");
        assert_eq!(approved["status"]["certificate"], "c");
        assert_eq!(approved["status"]["conditions"][0]["type"], "Approved");
    }
}
