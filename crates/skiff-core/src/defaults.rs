//! Upstream's defaults for the fields kubectl shows, applied on every write.

use serde_json::{json, Value};

use crate::meta;
use crate::registry::ResourceType;

/// Sets `obj[key]` to `value` when it is absent or null.
fn or_insert(obj: &mut Value, key: &str, value: Value) {
    if let Some(map) = obj.as_object_mut() {
        let slot = map.entry(key.to_owned()).or_insert(Value::Null);
        if slot.is_null() {
            *slot = value;
        }
    }
}

/// Applies defaults to an object of resource type `r`.
pub fn apply(r: &ResourceType, obj: &mut Value) {
    match (r.group, r.kind) {
        _ if r.custom => {
            if let Some(served) = crate::crd::served(r) {
                crate::crd::structural::default(obj, &served.version.schema);
            }
        }
        ("", "Pod") if obj.get("spec").is_some() => {
            pod_spec(&mut obj["spec"]);
            requests_from_limits(&mut obj["spec"]);
        }
        ("apps", "Deployment") => {
            let spec = spec(obj);
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "progressDeadlineSeconds", json!(600));
            or_insert(spec, "strategy", json!({}));
            or_insert(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                or_insert(&mut spec["strategy"], "rollingUpdate", json!({}));
                let ru = &mut spec["strategy"]["rollingUpdate"];
                or_insert(ru, "maxSurge", json!("25%"));
                or_insert(ru, "maxUnavailable", json!("25%"));
            }
            template(spec);
        }
        ("", "PodTemplate") => template(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => crate::autoscaling::default(r.version, obj),
        ("apiregistration.k8s.io", "APIService") => {
            if let Some(service) = obj["spec"].get_mut("service").filter(|s| s.is_object()) {
                or_insert(service, "port", json!(443));
            }
        }
        ("apps", "ReplicaSet") => {
            let spec = spec(obj);
            or_insert(spec, "replicas", json!(1));
            template(spec);
        }
        ("", "ReplicationController") => {
            // The selector and the labels default to the template's labels.
            let labels = obj["spec"]["template"]["metadata"]["labels"].clone();
            let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
            if !empty(&labels) {
                if empty(&obj["spec"]["selector"]) {
                    obj["spec"]["selector"] = labels.clone();
                }
                if meta::get(obj, "labels").is_none_or(empty) {
                    meta::set(obj, "labels", labels);
                }
            }
            let spec = spec(obj);
            or_insert(spec, "replicas", json!(1));
            template(spec);
        }
        ("apps", "StatefulSet") => {
            let spec = spec(obj);
            or_insert(spec, "replicas", json!(1));
            or_insert(spec, "podManagementPolicy", json!("OrderedReady"));
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "updateStrategy", json!({}));
            let strategy = &mut spec["updateStrategy"];
            if strategy.get("type").is_none_or(Value::is_null) {
                strategy["type"] = json!("RollingUpdate");
                or_insert(strategy, "rollingUpdate", json!({}));
            }
            if strategy["type"] == "RollingUpdate" && strategy["rollingUpdate"].is_object() {
                let rolling = &mut strategy["rollingUpdate"];
                or_insert(rolling, "partition", json!(0));
                or_insert(rolling, "maxUnavailable", json!(1));
            }
            or_insert(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template(spec);
        }
        ("apps", "DaemonSet") => {
            let spec = spec(obj);
            or_insert(spec, "revisionHistoryLimit", json!(10));
            or_insert(spec, "updateStrategy", json!({}));
            let strategy = &mut spec["updateStrategy"];
            or_insert(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                or_insert(strategy, "rollingUpdate", json!({}));
                let rolling = &mut strategy["rollingUpdate"];
                or_insert(rolling, "maxUnavailable", json!(1));
                or_insert(rolling, "maxSurge", json!(0));
            }
            template(spec);
        }
        ("batch", "Job") => job_spec(spec(obj)),
        ("batch", "CronJob") => {
            let spec = spec(obj);
            or_insert(spec, "concurrencyPolicy", json!("Allow"));
            or_insert(spec, "suspend", json!(false));
            or_insert(spec, "successfulJobsHistoryLimit", json!(3));
            or_insert(spec, "failedJobsHistoryLimit", json!(1));
            or_insert(spec, "jobTemplate", json!({}));
            or_insert(&mut spec["jobTemplate"], "spec", json!({}));
            job_spec(&mut spec["jobTemplate"]["spec"]);
        }
        ("", "Service") => {
            let spec = spec(obj);
            or_insert(spec, "type", json!("ClusterIP"));
            or_insert(spec, "sessionAffinity", json!("None"));
            if matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer")) {
                or_insert(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if spec["type"] == "LoadBalancer" {
                or_insert(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            if spec["type"] != "ExternalName" {
                or_insert(spec, "internalTrafficPolicy", json!("Cluster"));
                or_insert(spec, "ipFamilyPolicy", json!("SingleStack"));
                or_insert(spec, "ipFamilies", json!(["IPv4"]));
            }
            for port in spec
                .get_mut("ports")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                or_insert(port, "protocol", json!("TCP"));
                let p = port["port"].clone();
                or_insert(port, "targetPort", p);
            }
        }
        ("", "Namespace") => {
            or_insert(obj, "spec", json!({}));
            or_insert(&mut obj["spec"], "finalizers", json!(["kubernetes"]));
            or_insert(obj, "status", json!({}));
            or_insert(&mut obj["status"], "phase", json!("Active"));
            let name = crate::meta::name(obj).to_owned();
            let meta = crate::meta::meta_mut(obj);
            let labels = meta.entry("labels").or_insert(json!({}));
            if labels.is_null() {
                *labels = json!({});
            }
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        ("", "Secret") => {
            or_insert(obj, "type", json!("Opaque"));
            string_data(obj);
        }
        ("", "PersistentVolumeClaim") => {
            or_insert(spec(obj), "volumeMode", json!("Filesystem"));
            or_insert(obj, "status", json!({}));
            or_insert(&mut obj["status"], "phase", json!("Pending"));
        }
        ("", "PersistentVolume") => {
            or_insert(spec(obj), "persistentVolumeReclaimPolicy", json!("Retain"));
            or_insert(spec(obj), "volumeMode", json!("Filesystem"));
            or_insert(obj, "status", json!({}));
            or_insert(&mut obj["status"], "phase", json!("Pending"));
        }
        ("storage.k8s.io", "CSIDriver") => {
            let spec = spec(obj);
            or_insert(spec, "attachRequired", json!(true));
            or_insert(spec, "podInfoOnMount", json!(false));
            or_insert(spec, "storageCapacity", json!(false));
            or_insert(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
            or_insert(spec, "requiresRepublish", json!(false));
            or_insert(spec, "seLinuxMount", json!(false));
            if spec["volumeLifecycleModes"]
                .as_array()
                .is_none_or(Vec::is_empty)
            {
                spec["volumeLifecycleModes"] = json!(["Persistent"]);
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            or_insert(obj, "reclaimPolicy", json!("Delete"));
            or_insert(obj, "volumeBindingMode", json!("Immediate"));
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => binding(obj),
        ("networking.k8s.io", "IngressClass") => {
            if let Some(params) = obj
                .pointer_mut("/spec/parameters")
                .filter(|p| p.is_object())
            {
                or_insert(params, "scope", json!("Cluster"));
            }
        }
        (
            "admissionregistration.k8s.io",
            kind @ ("ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"),
        ) => {
            webhooks(obj, kind.starts_with("Mutating"));
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            or_insert(spec(obj), "failurePolicy", json!("Fail"));
            if let Some(constraints) = obj.pointer_mut("/spec/matchConstraints") {
                match_resources(constraints);
            }
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            if let Some(resources) = obj.pointer_mut("/spec/matchResources") {
                match_resources(resources);
            }
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            or_insert(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
        }
        _ => {}
    }
}

/// What an admission policy or its binding matches: equivalent requests,
/// every namespace and object, rules of every scope (upstream's defaults).
fn match_resources(m: &mut Value) {
    if !m.is_object() {
        return;
    }
    or_insert(m, "matchPolicy", json!("Equivalent"));
    or_insert(m, "namespaceSelector", json!({}));
    or_insert(m, "objectSelector", json!({}));
    for key in ["resourceRules", "excludeResourceRules"] {
        for rule in m[key].as_array_mut().into_iter().flatten() {
            or_insert(rule, "scope", json!("*"));
        }
    }
}

/// A webhook fails closed, matches equivalent requests, selects every
/// namespace and object, waits 10 seconds, runs once; its rules cover
/// every scope and its Service listens on 443, as upstream's defaults.
fn webhooks(obj: &mut Value, mutating: bool) {
    for hook in obj["webhooks"].as_array_mut().into_iter().flatten() {
        or_insert(hook, "failurePolicy", json!("Fail"));
        or_insert(hook, "matchPolicy", json!("Equivalent"));
        or_insert(hook, "namespaceSelector", json!({}));
        or_insert(hook, "objectSelector", json!({}));
        or_insert(hook, "timeoutSeconds", json!(10));
        if mutating {
            or_insert(hook, "reinvocationPolicy", json!("Never"));
        }
        for rule in hook["rules"].as_array_mut().into_iter().flatten() {
            or_insert(rule, "scope", json!("*"));
        }
        if let Some(service) = hook
            .pointer_mut("/clientConfig/service")
            .filter(|s| s.is_object())
        {
            or_insert(service, "port", json!(443));
        }
    }
}

/// A binding's role and its users and groups are of the RBAC group (its
/// service accounts' group is the core one, which is left unwritten).
fn binding(obj: &mut Value) {
    const RBAC: &str = "rbac.authorization.k8s.io";
    let unset = |v: &Value| v.as_str().is_none_or(str::is_empty);
    if let Some(role_ref) = obj["roleRef"].as_object_mut() {
        if role_ref.get("apiGroup").is_none_or(unset) {
            role_ref.insert("apiGroup".into(), json!(RBAC));
        }
    }
    for subject in obj["subjects"].as_array_mut().into_iter().flatten() {
        if !matches!(subject["kind"].as_str(), Some("User" | "Group")) {
            continue;
        }
        if let Some(s) = subject
            .as_object_mut()
            .filter(|s| s.get("apiGroup").is_none_or(unset))
        {
            s.insert("apiGroup".into(), json!(RBAC));
        }
    }
}

fn spec(obj: &mut Value) -> &mut Value {
    or_insert(obj, "spec", json!({}));
    &mut obj["spec"]
}

fn template(spec: &mut Value) {
    if let Some(pod) = spec.get_mut("template").and_then(|t| t.get_mut("spec")) {
        pod_spec(pod);
    }
}

fn job_spec(spec: &mut Value) {
    or_insert(spec, "parallelism", json!(1));
    if spec["parallelism"] == 1 {
        or_insert(spec, "completions", json!(1));
    }
    // A per-index limit replaces the Job's own, as upstream defaults it.
    let backoff = if spec["backoffLimitPerIndex"].is_null() {
        json!(6)
    } else {
        json!(i32::MAX)
    };
    or_insert(spec, "backoffLimit", backoff);
    or_insert(spec, "completionMode", json!("NonIndexed"));
    or_insert(spec, "suspend", json!(false));
    or_insert(spec, "manualSelector", json!(false));
    let replacement = if spec["podFailurePolicy"].is_null() {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    or_insert(spec, "podReplacementPolicy", json!(replacement));
    let rules = spec.pointer_mut("/podFailurePolicy/rules");
    for rule in rules.and_then(Value::as_array_mut).into_iter().flatten() {
        let patterns = rule.get_mut("onPodConditions");
        for pattern in patterns.and_then(Value::as_array_mut).into_iter().flatten() {
            or_insert(pattern, "status", json!("True"));
        }
    }
    template(spec);
}

/// A Secret's `stringData` is written into its `data`, encoded, over any
/// value there, as upstream's conversion does: it is write-only, never
/// stored or shown.
fn string_data(secret: &mut Value) {
    use base64::Engine;
    let Some(Value::Object(plain)) = secret.as_object_mut().and_then(|s| s.remove("stringData"))
    else {
        return;
    };
    if plain.is_empty() {
        return;
    }
    or_insert(secret, "data", json!({}));
    let Some(data) = secret["data"].as_object_mut() else {
        return;
    };
    for (key, value) in plain {
        let text = value.as_str().unwrap_or_default();
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        data.insert(key, Value::String(encoded));
    }
}

/// A pod's container that limits a resource without requesting it
/// requests its limit, as upstream defaults pods (not templates): the
/// scheduler and quotas then count what the limit allows.
fn requests_from_limits(spec: &mut Value) {
    for list in ["initContainers", "containers"] {
        let containers = spec.get_mut(list).and_then(Value::as_array_mut);
        for resources in containers
            .into_iter()
            .flatten()
            .filter_map(|c| c.get_mut("resources"))
        {
            let Some(limits) = resources["limits"]
                .as_object()
                .filter(|l| !l.is_empty())
                .cloned()
            else {
                continue;
            };
            or_insert(resources, "requests", json!({}));
            if let Some(requests) = resources["requests"].as_object_mut() {
                for (name, limit) in limits {
                    requests.entry(name).or_insert(limit);
                }
            }
        }
    }
}

/// Defaults of a pod spec, in pods and in templates.
pub fn pod_spec(spec: &mut Value) {
    or_insert(spec, "restartPolicy", json!("Always"));
    or_insert(spec, "dnsPolicy", json!("ClusterFirst"));
    or_insert(spec, "schedulerName", json!("default-scheduler"));
    or_insert(spec, "terminationGracePeriodSeconds", json!(30));
    or_insert(spec, "securityContext", json!({}));
    // An image volume's pull policy follows its tag, as a container's.
    let volumes = spec.get_mut("volumes").and_then(Value::as_array_mut);
    for image in volumes
        .into_iter()
        .flatten()
        .filter_map(|v| v.get_mut("image"))
    {
        let policy = pull_policy(image["reference"].as_str().unwrap_or(""));
        or_insert(image, "pullPolicy", json!(policy));
    }
    // On the node's network a port is the node's, as upstream defaults it.
    let host_network = spec["hostNetwork"] == true;
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            container(c);
            let ports = c.get_mut("ports").and_then(Value::as_array_mut);
            for port in ports.into_iter().flatten().filter(|_| host_network) {
                let container_port = port["containerPort"].clone();
                or_insert(port, "hostPort", container_port);
            }
        }
    }
}

fn container(c: &mut Value) {
    or_insert(c, "terminationMessagePath", json!("/dev/termination-log"));
    or_insert(c, "terminationMessagePolicy", json!("File"));
    or_insert(c, "resources", json!({}));
    let image = c["image"].as_str().unwrap_or("");
    or_insert(c, "imagePullPolicy", json!(pull_policy(image)));
    for port in c
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        or_insert(port, "protocol", json!("TCP"));
    }
    let env = c.get_mut("env").and_then(Value::as_array_mut);
    for e in env.into_iter().flatten() {
        if let Some(r) = e.pointer_mut("/valueFrom/fileKeyRef") {
            or_insert(r, "optional", json!(false));
        }
    }
}

/// `Always` for `:latest` or untagged images, else `IfNotPresent`.
fn pull_policy(image: &str) -> &'static str {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    match last.split_once(':') {
        _ if image.contains('@') => "IfNotPresent",
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn pull_policy_table() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("127.0.0.1:5000/busybox", "Always"),
            ("127.0.0.1:5000/busybox:1", "IfNotPresent"),
            ("busybox@sha256:abc", "IfNotPresent"),
        ] {
            assert_eq!(pull_policy(image), want, "{image}");
        }
    }

    #[test]
    fn deployment_defaults_keep_given_values() {
        let mut d = json!({"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
        apply(lookup("apps", "v1", "deployments").unwrap(), &mut d);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let pod = &d["spec"]["template"]["spec"];
        assert!(
            pod.get("initContainers").is_none(),
            "no nulls for absent lists"
        );
        assert!(c.get("ports").is_none());
    }

    #[test]
    fn a_pods_limits_are_its_requests_unless_it_asks_for_less() {
        let resources = json!({"limits": {"cpu": "1", "memory": "1Gi", "example.com/dongle": "2"},
            "requests": {"cpu": "500m"}});
        let spec = json!({"containers": [{"name": "c", "image": "i", "resources": resources}],
            "initContainers": [{"name": "i", "image": "i", "resources": {"limits": {"cpu": "2"}}}]});
        let mut pod = json!({"spec": spec.clone()});
        apply(lookup("", "v1", "pods").unwrap(), &mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "500m", "memory": "1Gi", "example.com/dongle": "2"})
        );
        assert_eq!(
            pod["spec"]["initContainers"][0]["resources"]["requests"],
            json!({"cpu": "2"})
        );
        // Templates are left as written: their pods are defaulted.
        let mut rs = json!({"spec": {"template": {"spec": spec}}});
        apply(lookup("apps", "v1", "replicasets").unwrap(), &mut rs);
        let template = &rs["spec"]["template"]["spec"];
        assert_eq!(
            template["initContainers"][0]["resources"].get("requests"),
            None
        );
    }

    #[test]
    fn a_secrets_string_data_is_written_into_its_data() {
        let mut s =
            json!({"data": {"a": "b2xk", "b": "Yg=="}, "stringData": {"a": "new", "c": "c"}});
        apply(lookup("", "v1", "secrets").unwrap(), &mut s);
        assert_eq!(
            s,
            json!({"data": {"a": "bmV3", "b": "Yg==", "c": "Yw=="}, "type": "Opaque"})
        );
    }

    #[test]
    fn service_ports_default_target_port() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply(lookup("", "v1", "services").unwrap(), &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["type"], "ClusterIP");
    }
}
