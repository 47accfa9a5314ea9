//! Validation of names, required fields and immutable fields, reported as
//! `Invalid` errors with one cause per field.

use serde_json::Value;

use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::status::Cause;
use crate::{meta, ApiError};

mod admission_policies;
mod api_service;
mod app_armor;
mod autoscaling;
mod config;
mod event;
mod ingress;
mod job;
mod load_balancer;
mod metadata;
mod network_policy;
mod pod_changes;
pub mod priority_class;
mod quota;
mod rbac;
mod resources;
mod rollout;
mod runtime_class;
mod seccomp;
mod storage;
mod tolerations;
pub mod webhooks;

/// Whether a Service with this spec needs a health-check NodePort: a
/// LoadBalancer that keeps external traffic on the node it reaches.
pub fn needs_health_check(spec: &Value) -> bool {
    spec["type"] == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local"
}

/// Whether `s` is a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, ≤ 63).
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Whether `s` is a DNS-1123 subdomain (dot-separated labels, ≤ 253).
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

/// Kinds whose names must be DNS labels rather than subdomains.
fn needs_label_name(kind: &str) -> bool {
    matches!(kind, "Namespace" | "Service")
}

/// Why `name` cannot be a name that appears whole as one segment of a
/// URL path (a role's, an object a reference names), if it cannot
/// (upstream's `IsValidPathSegmentName`).
fn path_segment_problems(name: &str) -> Vec<String> {
    if let Some(bad) = [".", ".."].into_iter().find(|b| *b == name) {
        return vec![format!("may not be '{bad}'")];
    }
    ["/", "%"]
        .into_iter()
        .filter(|c| name.contains(c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// Whether `s` is a DNS-1035 label (a DNS label starting with a letter):
/// what a Service's name must be, as its DNS name starts with it.
fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.starts_with(|c: char| c.is_ascii_lowercase())
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// Validates a whole object about to be written; `old` is the stored one on
/// update.
pub fn object(r: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let name = meta::name(obj);
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if r.kind == "Service" && !r.custom && !is_dns1035_label(name) {
        causes.push(Cause::invalid("metadata.name", name, DNS1035_MSG));
    } else if needs_label_name(r.kind) && !is_dns_label(name) {
        causes.push(Cause::invalid("metadata.name", name, LABEL_MSG));
    } else if (r.group, r.kind) == ("apiregistration.k8s.io", "APIService") {
        api_service::name(obj, &mut causes);
    } else if r.group == rbac::GROUP {
        for why in path_segment_problems(name) {
            causes.push(Cause::invalid("metadata.name", name, why));
        }
    } else if !needs_label_name(r.kind) && !is_dns_subdomain(name) {
        causes.push(Cause::invalid("metadata.name", name, SUBDOMAIN_MSG));
    }
    metadata::check(obj, &mut causes);
    let spec = &obj["spec"];
    match (r.group, r.kind) {
        _ if r.custom => {
            if let Some(served) = crate::crd::served(r) {
                causes.extend(served.validate(obj, old));
            }
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            causes.extend(crate::crd::check(obj, old));
        }
        ("", "Pod") => {
            // A spec as stored (a write to the status or the metadata) was
            // checked when it was written; upstream's status update does
            // not look at it either.
            if old.is_none_or(|o| o["spec"] != *spec) {
                pod_spec(spec, At::Root("spec"), &mut causes);
                ephemeral_containers(spec, old.map(|o| &o["spec"]), &mut causes);
            }
            let annotations = &obj["metadata"]["annotations"];
            app_armor::annotations(annotations, spec, "metadata.annotations", &mut causes);
            match old {
                None => app_armor::match_on_create(obj, &mut causes),
                Some(old) => app_armor::unchanged(obj, old, &mut causes),
            }
        }
        ("", "ReplicationController") => {
            let selector = spec["selector"].as_object().filter(|m| !m.is_empty());
            match selector {
                None => causes.push(Cause::required("spec.selector")),
                Some(sel) => {
                    let labels = &spec["template"]["metadata"]["labels"];
                    if sel.iter().any(|(k, v)| &labels[k] != v) {
                        causes.push(Cause::invalid(
                            "spec.template.metadata.labels",
                            &labels.to_string(),
                            "`selector` does not match template `labels`",
                        ));
                    }
                }
            }
            pod_template(&spec["template"], "spec.template", &mut causes);
            if spec["replicas"].as_i64().is_some_and(|n| n < 0) {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &spec["replicas"].to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            workload(spec, &mut causes);
            match r.kind {
                "Deployment" => rollout::deployment(spec, &mut causes),
                "DaemonSet" => rollout::daemon_set(spec, &mut causes),
                "StatefulSet" => rollout::stateful_set(spec, &mut causes),
                _ => {}
            }
            if spec["replicas"].as_i64().is_some_and(|n| n < 0) {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &spec["replicas"].to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
        ("batch", "Job") => {
            job::spec(spec, "spec", &mut causes);
            job::name(name, spec, &mut causes);
            pod_template(&spec["template"], "spec.template", &mut causes);
        }
        ("batch", "CronJob") => {
            job::cron_job(name, spec, old.is_none(), &mut causes);
            job::spec(
                &spec["jobTemplate"]["spec"],
                "spec.jobTemplate.spec",
                &mut causes,
            );
            pod_template(
                &spec["jobTemplate"]["spec"]["template"],
                "spec.jobTemplate.spec.template",
                &mut causes,
            );
        }
        ("", "Service") => {
            service(spec, &mut causes);
            load_balancer::check(spec, old.map(|o| &o["spec"]), &mut causes);
        }
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(obj, &mut causes),
        ("coordination.k8s.io", "Lease") => lease(spec, &mut causes),
        ("", "Endpoints") => endpoints(obj, &mut causes),
        ("", "Namespace") => metadata::namespace_finalizers(spec, &mut causes),
        ("", "Node") => {
            tolerations::taints(spec, &mut causes);
            if let Some(cidr) = spec["podCIDR"].as_str().filter(|c| !c.is_empty()) {
                if cidr.parse::<crate::cidr::Cidr>().is_err() {
                    causes.push(Cause::invalid("spec.podCIDR", cidr, "must be a valid CIDR"));
                }
                // As upstream: set once; the node's pods already use it.
                let before = old.and_then(|o| o["spec"]["podCIDR"].as_str());
                if before.is_some_and(|b| !b.is_empty() && b != cidr) {
                    causes.push(Cause::forbidden(
                        "spec.podCIDR",
                        "node updates may not change podCIDR except from \"\" to valid",
                    ));
                }
            }
        }
        ("", "PodTemplate") => pod_template(&obj["template"], "template", &mut causes),
        ("", "ConfigMap") => config::config_map(obj, old, &mut causes),
        ("", "Event") | ("events.k8s.io", "Event") => event::check(r, obj, old, &mut causes),
        ("", "Secret") => config::secret(obj, old, &mut causes),
        ("policy", "PodDisruptionBudget") => rollout::disruption_budget(spec, &mut causes),
        ("networking.k8s.io", "NetworkPolicy") => network_policy::check(spec, &mut causes),
        ("networking.k8s.io", "Ingress") => ingress::spec(spec, &mut causes),
        ("networking.k8s.io", "IngressClass") => {
            ingress::class(spec, old.map(|o| &o["spec"]), &mut causes);
        }
        ("", "ResourceQuota") => quota::resource_quota(spec, &mut causes),
        ("", "LimitRange") => quota::limit_range(spec, &mut causes),
        ("", "PersistentVolume") => storage::volume(spec, old, &mut causes),
        ("", "PersistentVolumeClaim") => storage::claim(obj, old, &mut causes),
        ("storage.k8s.io", "StorageClass") => storage::class(obj, old, &mut causes),
        ("storage.k8s.io", "VolumeAttributesClass") => {
            storage::attributes_class(obj, old, &mut causes);
        }
        ("storage.k8s.io", "CSIDriver") => {
            storage::csi_driver(spec, old.map(|o| &o["spec"]), &mut causes);
        }
        ("node.k8s.io", "RuntimeClass") => runtime_class::class(obj, &mut causes),
        ("scheduling.k8s.io", "PriorityClass") => priority_class::check(obj, old, &mut causes),
        ("autoscaling", "HorizontalPodAutoscaler") if r.version == "v1" => {
            let v2 = |o: &Value| crate::autoscaling::to_v2(o)["spec"].take();
            autoscaling::spec(&v2(obj), old.map(v2).as_ref(), &mut causes);
        }
        ("autoscaling", "HorizontalPodAutoscaler") => {
            autoscaling::spec(spec, old.map(|o| &o["spec"]), &mut causes);
        }
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            webhooks::configuration(obj, false, &mut causes);
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            webhooks::configuration(obj, true, &mut causes);
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            admission_policies::policy(crate::meta::name(obj), spec, &mut causes);
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            admission_policies::binding(spec, &mut causes);
        }
        ("apiregistration.k8s.io", "APIService") => api_service::spec(spec, &mut causes),
        (rbac::GROUP, "Role") => rbac::role(obj, true, &mut causes),
        (rbac::GROUP, "ClusterRole") => rbac::role(obj, false, &mut causes),
        (rbac::GROUP, "RoleBinding") => rbac::binding(obj, old, true, &mut causes),
        (rbac::GROUP, "ClusterRoleBinding") => rbac::binding(obj, old, false, &mut causes),
        _ => {}
    }
    if let Some(old) = old {
        immutable(r, obj, old, &mut causes);
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r.group, r.kind, name, causes))
    }
}

/// Validates a pod written through its `resize` subresource: the new
/// pod as any, and only what a resize may change changed from `old`.
pub fn pod_resize(r: &ResourceType, new: &Value, old: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    metadata::check(new, &mut causes);
    pod_spec(&new["spec"], At::Root("spec"), &mut causes);
    causes.extend(pod_changes::resize(new, old));
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(r.group, r.kind, meta::name(new), causes))
    }
}

/// Why `v` is no label value, if it is not.
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// Whether `v` may be a label's value (upstream's `IsValidLabelValue`).
fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && (v.is_empty()
            || (v.as_bytes()[0].is_ascii_alphanumeric()
                && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()))
}

/// Ephemeral containers (`kubectl debug`): added through their
/// subresource only, never changed or removed, each named apart from the
/// pod's containers, with an image, without ports, probes, lifecycle or
/// resources, and aimed (if at all) at one of the pod's containers.
fn ephemeral_containers(spec: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let list = |s: &Value| {
        s["ephemeralContainers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let new = list(spec);
    let Some(old) = old else {
        if !new.is_empty() {
            causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                "cannot be set on create",
            ));
        }
        return;
    };
    for before in list(old) {
        let name = before["name"].as_str().unwrap_or_default();
        match new.iter().find(|c| c["name"] == before["name"]) {
            None => causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers {name:?} may not be removed"),
            )),
            Some(now) if *now != before => causes.push(Cause::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers {name:?} may not be changed"),
            )),
            Some(_) => {}
        }
    }
    let names = |key: &str| -> Vec<String> {
        spec[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_owned))
            .collect()
    };
    let regular = names("containers");
    let mut taken: Vec<String> = regular
        .iter()
        .cloned()
        .chain(names("initContainers"))
        .collect();
    for (i, c) in new.iter().enumerate() {
        let at = format!("spec.ephemeralContainers[{i}]");
        let name = c["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(format!("{at}.name")));
        } else if !is_dns_label(name) {
            causes.push(Cause::invalid(format!("{at}.name"), name, LABEL_MSG));
        } else if taken.iter().any(|t| t == name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{at}.name"),
                message: format!("Duplicate value: {name:?}"),
            });
        }
        taken.push(name.to_owned());
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("{at}.image")));
        }
        for field in [
            "ports",
            "restartPolicy",
            "restartPolicyRules",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
            "lifecycle",
            "resources",
            "resizePolicy",
        ] {
            if c.get(field).is_some_and(|v| {
                !v.is_null() && v != &serde_json::json!({}) && v != &serde_json::json!([])
            }) {
                causes.push(Cause::forbidden(
                    format!("{at}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        if let Some(target) = c["targetContainerName"].as_str().filter(|t| !t.is_empty()) {
            if !regular.iter().any(|r| r == target) {
                causes.push(Cause {
                    reason: "FieldValueNotFound",
                    field: format!("{at}.targetContainerName"),
                    message: format!("Not found: {target:?}"),
                });
            }
        }
    }
}

fn workload(spec: &Value, causes: &mut Vec<Cause>) {
    match spec.get("selector") {
        None | Some(Value::Null) => causes.push(Cause::required("spec.selector")),
        Some(sel) => match LabelSelector::from_object(sel) {
            Ok(s) if s.is_empty() => causes.push(Cause::invalid(
                "spec.selector",
                "{}",
                "empty selector is invalid for deployment",
            )),
            Ok(s) => {
                if !s.matches_object(&spec["template"]) {
                    causes.push(Cause::invalid(
                        "spec.template.metadata.labels",
                        &spec["template"]["metadata"]["labels"].to_string(),
                        "`selector` does not match template `labels`",
                    ));
                }
            }
            Err(e) => causes.push(Cause::invalid("spec.selector", &sel.to_string(), e.message)),
        },
    }
    // A StatefulSet's claim templates are volumes of its pods.
    let claims = spec["volumeClaimTemplates"].as_array();
    match claims.filter(|c| !c.is_empty()) {
        Some(claims) => {
            let mut template = spec["template"].clone();
            let mut volumes = template["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for c in claims {
                let name = &c["metadata"]["name"];
                volumes.retain(|v| v["name"] != *name);
                volumes.push(
                    serde_json::json!({"name": name, "persistentVolumeClaim": {"claimName": name}}),
                );
            }
            template["spec"]["volumes"] = Value::Array(volumes);
            pod_template(&template, "spec.template", causes);
        }
        None => pod_template(&spec["template"], "spec.template", causes),
    }
}

/// Where a field is: written out only when a cause names it, so that a
/// valid object (nearly every one) costs no path strings.
#[derive(Clone, Copy)]
enum At<'a> {
    Root(&'a str),
    Field(&'a At<'a>, &'a str),
    Item(&'a At<'a>, &'a str, usize),
}

impl<'a> At<'a> {
    fn field(&'a self, name: &'a str) -> Self {
        At::Field(self, name)
    }

    /// Item `i` of the list field `list`.
    fn item(&'a self, list: &'a str, i: usize) -> Self {
        At::Item(self, list, i)
    }
}

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            At::Root(path) => f.write_str(path),
            At::Field(parent, name) => write!(f, "{parent}.{name}"),
            At::Item(parent, list, i) => write!(f, "{parent}.{list}[{i}]"),
        }
    }
}

fn pod_template(t: &Value, at: &str, causes: &mut Vec<Cause>) {
    pod_spec(&t["spec"], At::Root(at).field("spec"), causes);
    let annotations = &t["metadata"]["annotations"];
    let annotations_at = format!("{at}.metadata.annotations");
    app_armor::annotations(annotations, &t["spec"], &annotations_at, causes);
}

fn pod_spec(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if containers.is_empty() {
        causes.push(Cause::required(at.field("containers").to_string()));
    }
    let init = spec["initContainers"].as_array().map(Vec::as_slice);
    let mut seen = Vec::new();
    for (list, items) in [
        ("initContainers", init.unwrap_or(&[])),
        ("containers", containers),
    ] {
        for (i, c) in items.iter().enumerate() {
            let here = at.item(list, i);
            unique_label(c["name"].as_str(), here.field("name"), &mut seen, causes);
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(here.field("image").to_string()));
            }
        }
    }
    volumes(spec, at, causes);
    restart_rules(spec, at, causes);
    scheduling_gates(spec, at, causes);
    ports(spec, at, causes);
    hostname_override(spec, at, causes);
    env_files(spec, at, causes);
    security(spec, at, causes);
    runtime_class::pod(spec, at, causes);
    resources::containers(spec, at, causes);
    pod_changes::resize_policies(spec, at, causes);
    tolerations::check(spec, at, causes);
    beyond_the_agent(spec, at, causes);
    dns(spec, at, causes);
    if let Some(policy) = spec["restartPolicy"].as_str() {
        if !matches!(policy, "Always" | "OnFailure" | "Never") {
            causes.push(Cause::unsupported(
                at.field("restartPolicy").to_string(),
                policy,
                &["Always", "OnFailure", "Never"],
            ));
        }
    }
}

/// A name that must be a DNS label, and be so once among `seen`.
fn unique_label<'a>(
    name: Option<&'a str>,
    field: At<'_>,
    seen: &mut Vec<&'a str>,
    causes: &mut Vec<Cause>,
) {
    match name {
        None | Some("") => causes.push(Cause::required(field.to_string())),
        Some(n) if !is_dns_label(n) => causes.push(Cause::invalid(field.to_string(), n, LABEL_MSG)),
        Some(n) if seen.contains(&n) => causes.push(Cause {
            reason: "FieldValueDuplicate",
            field: field.to_string(),
            message: format!("Duplicate value: {n:?}"),
        }),
        Some(n) => seen.push(n),
    }
}

/// The sysctls a pod may set: upstream's safe set, namespaced per pod.
pub const SAFE_SYSCTLS: &[&str] = &[
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
];

/// A setting Skiff's node agent cannot apply: refused here rather than
/// dropped on the node.
fn not_applied(field: At<'_>) -> Cause {
    Cause::forbidden(
        field.to_string(),
        "Skiff's node agent cannot apply this setting",
    )
}

/// The DNS policy and the pod's own DNS settings, as upstream's
/// `validateDNSPolicy` and `validatePodDNSConfig`.
fn dns(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let policy = spec["dnsPolicy"].as_str();
    let field = at.field("dnsPolicy").to_string();
    let policies = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    if let Some(other) = policy.filter(|p| !policies.contains(p)) {
        causes.push(Cause::unsupported(field, other, &policies));
    }
    let config = &spec["dnsConfig"];
    let here = at.field("dnsConfig");
    let required = |field: String, why: &str| Cause {
        reason: "FieldValueRequired",
        field,
        message: format!("Required value: {why}"),
    };
    let servers = config["nameservers"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if policy == Some("None") {
        if config.is_null() {
            let why = "must provide `dnsConfig` when `dnsPolicy` is None";
            return causes.push(required(here.to_string(), why));
        }
        if servers.is_empty() {
            let why = "must provide at least one DNS nameserver when `dnsPolicy` is None";
            return causes.push(required(here.field("nameservers").to_string(), why));
        }
    }
    if servers.len() > 3 {
        let list = Value::from(servers.to_vec()).to_string();
        let why = "must not have more than 3 nameservers";
        causes.push(Cause::invalid(
            here.field("nameservers").to_string(),
            &list,
            why,
        ));
    }
    for (i, server) in servers.iter().enumerate() {
        let server = server.as_str().unwrap_or_default();
        if server.parse::<std::net::IpAddr>().is_err() {
            let why = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
            causes.push(Cause::invalid(
                here.item("nameservers", i).to_string(),
                server,
                why,
            ));
        }
    }
    let searches = config["searches"].as_array().map_or(0, Vec::len);
    if searches > 32 {
        let why = "must not have more than 32 search paths";
        causes.push(Cause::invalid(here.field("searches").to_string(), "", why));
    }
    for (i, option) in config["options"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if option["name"].as_str().is_none_or(str::is_empty) {
            let why = "Option.Name must not be empty";
            causes.push(required(here.item("options", i).to_string(), why));
        }
    }
}

/// Each container's own restart policy and rules (upstream's
/// ContainerRestartRules, on by default since 1.35; `Always` on an init
/// container makes it a sidecar).
fn restart_rules(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    const POLICIES: [&str; 3] = ["Always", "OnFailure", "Never"];
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let here = at.item(list, i);
            let policy = c["restartPolicy"].as_str();
            if let Some(p) = policy.filter(|p| !POLICIES.contains(p)) {
                let field = here.field("restartPolicy").to_string();
                causes.push(Cause::unsupported(field, p, &POLICIES));
            }
            let rules = c["restartPolicyRules"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            if rules.is_empty() {
                continue;
            }
            let field = here.field("restartPolicyRules");
            if policy.is_none() {
                let why = "must be set when restartPolicyRules are";
                let field = here.field("restartPolicy").to_string();
                causes.push(Cause::forbidden(field, why));
            }
            if rules.len() > 20 {
                causes.push(Cause::too_many(field.to_string(), rules.len(), 20));
            }
            for (j, rule) in rules.iter().enumerate() {
                let here = here.item("restartPolicyRules", j);
                match rule["action"].as_str() {
                    None | Some("") => {
                        causes.push(Cause::required(here.field("action").to_string()))
                    }
                    Some("Restart") => {}
                    Some(other) => {
                        let field = here.field("action").to_string();
                        causes.push(Cause::unsupported(field, other, &["Restart"]));
                    }
                }
                let codes = &rule["exitCodes"];
                let at_codes = here.field("exitCodes");
                if codes.is_null() {
                    causes.push(Cause {
                        message: "Required value: must be specified".into(),
                        ..Cause::required(at_codes.to_string())
                    });
                    continue;
                }
                let operator = codes["operator"].as_str().unwrap_or_default();
                if !matches!(operator, "In" | "NotIn") {
                    let field = at_codes.field("operator").to_string();
                    causes.push(Cause::unsupported(field, operator, &["In", "NotIn"]));
                }
                let values = codes["values"].as_array().map_or(0, Vec::len);
                if values > 255 {
                    causes.push(Cause::too_many(
                        at_codes.field("values").to_string(),
                        values,
                        255,
                    ));
                }
            }
        }
    }
}

/// Why `name` is no qualified name (`[prefix/]name`, upstream's
/// `IsQualifiedName`), if it is not.
fn qualified_name_problem(name: &str) -> Option<String> {
    let (prefix, local) = match name.split_once('/') {
        Some((prefix, local)) => (Some(prefix), local),
        None => (None, name),
    };
    if prefix.is_some_and(|p| !is_dns_subdomain(p)) {
        return Some(format!("prefix part {SUBDOMAIN_MSG}"));
    }
    let bytes = local.as_bytes();
    if local.is_empty() {
        Some("name part must be non-empty".into())
    } else if local.len() > 63 {
        Some("name part must be no more than 63 characters".into())
    } else if !bytes
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')".into())
    } else {
        None
    }
}

/// Scheduling gates: qualified names, each once; a pod still gated may
/// not name its node (upstream's `validateSchedulingGates`).
fn scheduling_gates(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let gates = spec["schedulingGates"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let mut seen = Vec::new();
    for (i, gate) in gates.iter().enumerate() {
        let name = gate["name"].as_str().unwrap_or_default();
        let field = at.item("schedulingGates", i).to_string();
        if let Some(why) = qualified_name_problem(name) {
            causes.push(Cause::invalid(&field, name, why));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field,
                message: format!("Duplicate value: {name:?}"),
            });
        }
        seen.push(name);
    }
    let bound = spec["nodeName"].as_str().is_some_and(|n| !n.is_empty());
    if bound && !gates.is_empty() {
        let why = "cannot be set until all schedulingGates have been cleared";
        causes.push(Cause::forbidden(at.field("nodeName").to_string(), why));
    }
}

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

/// Containers' ports, as upstream's `validateContainerPorts`, and the
/// node's ports they hold (`hostPort`): each once per pod, and on the
/// node's network the container's own.
fn ports(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let in_range = |p: i64| (1..=65535).contains(&p);
    let host_network = spec["hostNetwork"] == true;
    let mut held = Vec::new();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let container = at.item(list, i);
            let mut names = Vec::new();
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                let here = container.item("ports", j);
                if let Some(name) = p["name"].as_str().filter(|n| !n.is_empty()) {
                    let field = here.field("name").to_string();
                    if let Some(why) = port_name_problem(name) {
                        causes.push(Cause::invalid(&field, name, why));
                    } else if names.contains(&name) {
                        causes.push(Cause {
                            reason: "FieldValueDuplicate",
                            field,
                            message: format!("Duplicate value: {name:?}"),
                        });
                    }
                    names.push(name);
                }
                let container_port = p["containerPort"].as_i64().unwrap_or(0);
                let field = here.field("containerPort").to_string();
                if container_port == 0 {
                    causes.push(Cause::required(field));
                } else if !in_range(container_port) {
                    causes.push(Cause::invalid(
                        field,
                        &container_port.to_string(),
                        PORT_RANGE,
                    ));
                }
                let host_port = p["hostPort"].as_i64().unwrap_or(0);
                let field = here.field("hostPort").to_string();
                if host_port != 0 && !in_range(host_port) {
                    causes.push(Cause::invalid(&field, &host_port.to_string(), PORT_RANGE));
                }
                if host_network && host_port != 0 && host_port != container_port {
                    let why = "must match `containerPort` when `hostNetwork` is true";
                    causes.push(Cause::invalid(&field, &host_port.to_string(), why));
                }
                let protocol = p["protocol"].as_str().unwrap_or("TCP");
                if !matches!(protocol, "TCP" | "UDP" | "SCTP") {
                    let field = here.field("protocol").to_string();
                    causes.push(Cause::unsupported(field, protocol, &["SCTP", "TCP", "UDP"]));
                }
                if host_port != 0 {
                    let ip = p["hostIP"].as_str().unwrap_or_default();
                    let key = format!("{protocol}/{ip}/{host_port}");
                    if held.contains(&key) {
                        causes.push(Cause {
                            reason: "FieldValueDuplicate",
                            field,
                            message: format!("Duplicate value: {key:?}"),
                        });
                    }
                    held.push(key);
                }
            }
        }
    }
}

/// Why `name` may not name a port (upstream's `IsValidPortName`), if so.
fn port_name_problem(name: &str) -> Option<&'static str> {
    if name.len() > 15 {
        Some("must be no more than 15 characters")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    } else if !name.bytes().any(|b| b.is_ascii_lowercase()) {
        Some("must contain at least one letter (a-z)")
    } else if name.contains("--") {
        Some("must not contain consecutive hyphens")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must not begin or end with a hyphen")
    } else {
        None
    }
}

/// `hostnameOverride` (upstream's HostnameOverride, on by default since
/// 1.35): the pod's hostname as it is, so a DNS subdomain of at most 64
/// characters, neither on the node's network nor made a full name.
fn hostname_override(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let Some(name) = spec["hostnameOverride"].as_str().filter(|h| !h.is_empty()) else {
        return;
    };
    let field = at.field("hostnameOverride").to_string();
    if name.len() > 64 {
        causes.push(Cause::invalid(
            &field,
            name,
            "must be no more than 64 characters",
        ));
    } else if !is_dns_subdomain(name) {
        causes.push(Cause::invalid(&field, name, SUBDOMAIN_MSG));
    }
    if spec["setHostnameAsFQDN"] == true {
        let why = "may not be set when setHostnameAsFQDN is true";
        causes.push(Cause::forbidden(field.clone(), why));
    }
    if spec["hostNetwork"] == true {
        causes.push(Cause::forbidden(
            field,
            "may not be set when hostNetwork is true",
        ));
    }
}

/// Environment variables read from a file in one of the pod's emptyDir
/// volumes (`fileKeyRef`, upstream's EnvFiles, on by default since 1.35):
/// the volume must be one, the path inside it and the key a name.
fn env_files(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let empty_dirs: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["emptyDir"].is_object())
        .filter_map(|v| v["name"].as_str())
        .collect();
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
                let r = &e["valueFrom"]["fileKeyRef"];
                if r.is_null() {
                    continue;
                }
                let container = at.item(list, i);
                let env = container.item("env", j);
                let from = env.field("valueFrom");
                let here = from.field("fileKeyRef");
                let volume = r["volumeName"].as_str().unwrap_or_default();
                if volume.is_empty() {
                    causes.push(Cause::required(here.field("volumeName").to_string()));
                } else if !empty_dirs.contains(&volume) {
                    let why = "volume must be an emptyDir volume of the pod";
                    causes.push(Cause::invalid(
                        here.field("volumeName").to_string(),
                        volume,
                        why,
                    ));
                }
                match r["path"].as_str().unwrap_or_default() {
                    "" => causes.push(Cause::required(here.field("path").to_string())),
                    path => {
                        if let Some(why) = local_path_problem(path) {
                            causes.push(Cause::invalid(here.field("path").to_string(), path, why));
                        }
                    }
                }
                let key = r["key"].as_str().unwrap_or_default();
                if key.is_empty() {
                    causes.push(Cause::required(here.field("key").to_string()));
                } else if !key.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'=') {
                    let why = "a valid environment variable name must consist only of printable ASCII characters other than '='";
                    causes.push(Cause::invalid(here.field("key").to_string(), key, why));
                }
            }
        }
    }
}

/// Pod settings the node agent has no means for, refused rather than
/// dropped on the node: a pod-level cgroup (`resources`), user namespaces
/// (`hostUsers: false`) and dynamic resource claims.
fn beyond_the_agent(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let set = |v: &Value| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty());
    for field in ["resources", "resourceClaims"] {
        if set(&spec[field]) {
            causes.push(not_applied(at.field(field)));
        }
    }
    if spec["hostUsers"] == false {
        causes.push(not_applied(at.field("hostUsers")));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let container = at.item(list, i);
            if set(&c["resources"]["claims"]) {
                causes.push(not_applied(container.field("resources").field("claims")));
            }
        }
    }
}

/// Security settings the node agent does not implement are refused.
fn security(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let pod = &spec["securityContext"];
    let here = at.field("securityContext");
    for field in ["seLinuxOptions", "windowsOptions", "seLinuxChangePolicy"] {
        if !pod[field].is_null() {
            causes.push(not_applied(here.field(field)));
        }
    }
    app_armor::profile(
        &pod["appArmorProfile"],
        here.field("appArmorProfile"),
        causes,
    );
    for (i, sysctl) in pod["sysctls"].as_array().into_iter().flatten().enumerate() {
        let name = sysctl["name"].as_str().unwrap_or_default();
        if !SAFE_SYSCTLS.contains(&name) {
            causes.push(Cause::forbidden(
                here.item("sysctls", i).field("name").to_string(),
                format!(
                    "{name:?} is not a safe sysctl (the safe ones: {})",
                    SAFE_SYSCTLS.join(", ")
                ),
            ));
        }
    }
    seccomp::profile(&pod["seccompProfile"], here.field("seccompProfile"), causes);
    // Strict needs a runtime that reports the image's own groups.
    if pod["supplementalGroupsPolicy"] == "Strict" {
        causes.push(not_applied(here.field("supplementalGroupsPolicy")));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let sc = &c["securityContext"];
            let container = at.item(list, i);
            let here = container.field("securityContext");
            for field in ["seLinuxOptions", "windowsOptions"] {
                if !sc[field].is_null() {
                    causes.push(not_applied(here.field(field)));
                }
            }
            app_armor::profile(
                &sc["appArmorProfile"],
                here.field("appArmorProfile"),
                causes,
            );
            if sc["procMount"].as_str().is_some_and(|p| p != "Default") {
                causes.push(not_applied(here.field("procMount")));
            }
            seccomp::profile(&sc["seccompProfile"], here.field("seccompProfile"), causes);
        }
    }
}

/// Why `path` may not name a file inside a volume (a path from a pod spec
/// the node agent joins onto a host directory), if it may not: it must be
/// relative and must not step up with `..`.
pub fn local_path_problem(path: &str) -> Option<&'static str> {
    if path.starts_with('/') {
        Some("must be a relative path")
    } else if path.split('/').any(|part| part == "..") {
        Some("must not contain '..'")
    } else {
        None
    }
}

/// Whether `key` may name a ConfigMap's or Secret's entry (a file in its
/// volume): `[-._a-zA-Z0-9]+`, at most 253, not `.` or `..`, not `..`-led.
pub fn is_data_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && key != "."
        && !key.starts_with("..")
}

/// A file path in a volume's `items` (or a projection's).
fn item_path(path: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    match path.as_str() {
        None | Some("") => causes.push(Cause::required(at.to_string())),
        Some(p) => {
            if let Some(why) = local_path_problem(p) {
                causes.push(Cause::invalid(at.to_string(), p, why));
            }
        }
    }
}

/// `items` of a configMap, secret or downwardAPI volume or projection at
/// `at`.
fn items(list: &Value, keyed: bool, at: At<'_>, causes: &mut Vec<Cause>) {
    for (k, item) in list.as_array().into_iter().flatten().enumerate() {
        let here = at.item("items", k);
        if keyed && item["key"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(here.field("key").to_string()));
        }
        item_path(&item["path"], here.field("path"), causes);
    }
}

/// A generic ephemeral volume, as upstream's
/// `validateEphemeralVolumeSource`: a claim template whose metadata holds
/// only labels and annotations (the claim's name is the pod's and the
/// volume's), with a claim's spec.
fn ephemeral_volume(v: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let template = &v["volumeClaimTemplate"];
    let at = at.field("volumeClaimTemplate");
    if template.is_null() {
        causes.push(Cause::required(at.to_string()));
        return;
    }
    let metadata = template["metadata"].as_object().into_iter().flatten();
    for (field, value) in metadata {
        let set = !value.is_null() && value.as_object().is_none_or(|o| !o.is_empty());
        if set && !matches!(field.as_str(), "labels" | "annotations") {
            causes.push(Cause::forbidden(
                at.field("metadata").field(field).to_string(),
                "cannot be set for an ephemeral volume",
            ));
        }
    }
    storage::claim_spec(&template["spec"], &at.field("spec").to_string(), causes);
}

/// Volume names are DNS labels, once each; the paths inside them stay
/// inside them; every mount names a volume, and its subPath stays inside
/// it.
fn volumes(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let mut names = Vec::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let here = at.item("volumes", i);
        unique_label(v["name"].as_str(), here.field("name"), &mut names, causes);
        for kind in ["configMap", "secret"] {
            items(&v[kind]["items"], true, here.field(kind), causes);
        }
        let downward = here.field("downwardAPI");
        items(&v["downwardAPI"]["items"], false, downward, causes);
        if v["ephemeral"].is_object() {
            let ephemeral = here.field("ephemeral");
            ephemeral_volume(&v["ephemeral"], ephemeral, causes);
        }
        if v["image"].is_object() {
            let pod = matches!(at, At::Root("spec"));
            image_volume(&v["image"], pod, here.field("image"), causes);
        }
        let projected = here.field("projected");
        let sources = v["projected"]["sources"].as_array();
        for (j, source) in sources.into_iter().flatten().enumerate() {
            let there = projected.item("sources", j);
            for kind in ["configMap", "secret"] {
                items(&source[kind]["items"], true, there.field(kind), causes);
            }
            let downward = there.field("downwardAPI");
            items(&source["downwardAPI"]["items"], false, downward, causes);
            if source["serviceAccountToken"].is_object() {
                let path = &source["serviceAccountToken"]["path"];
                let token = there.field("serviceAccountToken");
                item_path(path, token.field("path"), causes);
            }
        }
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let container = at.item(list, i);
            let mounts = c["volumeMounts"].as_array();
            for (j, m) in mounts.into_iter().flatten().enumerate() {
                let here = container.item("volumeMounts", j);
                let name = m["name"].as_str().unwrap_or_default();
                if !names.contains(&name) {
                    causes.push(Cause {
                        reason: "FieldValueNotFound",
                        field: here.field("name").to_string(),
                        message: format!("Not found: {name:?}"),
                    });
                }
                if m["mountPath"].as_str().is_none_or(str::is_empty) {
                    causes.push(Cause::required(here.field("mountPath").to_string()));
                }
                // Upstream names these fields without the mount's index.
                let mounts = container.field("volumeMounts");
                let sub_paths =
                    ["subPath", "subPathExpr"].map(|f| m[f].as_str().filter(|p| !p.is_empty()));
                for (field, p) in ["subPath", "subPathExpr"].into_iter().zip(sub_paths) {
                    if let Some(why) = p.and_then(local_path_problem) {
                        causes.push(Cause::invalid(
                            mounts.field(field).to_string(),
                            p.unwrap_or_default(),
                            why,
                        ));
                    }
                }
                if let [Some(_), Some(expr)] = sub_paths {
                    let why = "subPathExpr and subPath are mutually exclusive";
                    causes.push(Cause::invalid(
                        here.field("subPathExpr").to_string(),
                        expr,
                        why,
                    ));
                }
                mount_modes(m, c, mounts, causes);
            }
            volume_devices(c, spec, container, causes);
        }
    }
}

/// A container's raw block devices, as upstream's `ValidateVolumeDevices`:
/// each names a claim's volume (a PersistentVolumeClaim or an ephemeral
/// one) once, at its own path without backsteps, and neither the volume
/// nor the path is also mounted.
fn volume_devices(c: &Value, spec: &Value, container: At<'_>, causes: &mut Vec<Cause>) {
    let mounts = c["volumeMounts"].as_array().map_or(&[][..], Vec::as_slice);
    let mounted = |field: &str, value: &str| mounts.iter().any(|m| m[field] == value);
    let (mut names, mut paths) = (Vec::new(), Vec::new());
    let devices = c["volumeDevices"].as_array().into_iter().flatten();
    for (i, d) in devices.enumerate() {
        let here = container.item("volumeDevices", i);
        let (name_at, path_at) = (
            here.field("name").to_string(),
            here.field("devicePath").to_string(),
        );
        let name = d["name"].as_str().unwrap_or_default();
        let path = d["devicePath"].as_str().unwrap_or_default();
        let volume = spec["volumes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["name"] == name);
        if name.is_empty() {
            causes.push(Cause::required(name_at.clone()));
        }
        if names.contains(&name) {
            causes.push(Cause::invalid(name_at.clone(), name, "must be unique"));
        }
        match volume {
            Some(v) if v["persistentVolumeClaim"].is_null() && v["ephemeral"].is_null() => {
                let why = "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode";
                causes.push(Cause::invalid(name_at.clone(), name, why));
            }
            Some(_) => {}
            None => causes.push(Cause {
                reason: "FieldValueNotFound",
                field: name_at.clone(),
                message: format!("Not found: {name:?}"),
            }),
        }
        if path.is_empty() {
            causes.push(Cause::required(path_at.clone()));
        }
        if paths.contains(&path) {
            causes.push(Cause::invalid(path_at.clone(), path, "must be unique"));
        }
        if path.split('/').any(|part| part == "..") {
            let why = "can not contain backsteps ('..')";
            causes.push(Cause::invalid(path_at.clone(), path, why));
        } else {
            paths.push(path);
        }
        if mounted("name", name) {
            let why = "must not already exist in volumeMounts";
            causes.push(Cause::invalid(name_at, name, why));
        }
        if mounted("mountPath", path) {
            let why = "must not already exist as a path in volumeMounts";
            causes.push(Cause::invalid(path_at, path, why));
        }
        if !name.is_empty() {
            names.push(name);
        }
    }
}

/// An image volume, as upstream's `validateImageVolumeSource`: a pod's
/// names its image (a template's may leave it to whoever fills it in),
/// with one of the pull policies.
fn image_volume(image: &Value, pod: bool, at: At<'_>, causes: &mut Vec<Cause>) {
    if pod && image["reference"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required(at.field("reference").to_string()));
    }
    let field = at.field("pullPolicy").to_string();
    match image["pullPolicy"].as_str() {
        Some("Always" | "IfNotPresent" | "Never") => {}
        None | Some("") => causes.push(Cause::required(field)),
        Some(other) => causes.push(Cause::unsupported(
            field,
            other,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
}

/// A mount's propagation and recursive read-only mode, as upstream's
/// `validateMountPropagation` and `validateMountRecursiveReadOnly`.
fn mount_modes(m: &Value, container: &Value, mounts: At<'_>, causes: &mut Vec<Cause>) {
    let propagation = m["mountPropagation"].as_str();
    let field = mounts.field("mountPropagation").to_string();
    match propagation {
        None | Some("None" | "HostToContainer") => {}
        Some("Bidirectional") if container["securityContext"]["privileged"] == true => {}
        Some("Bidirectional") => causes.push(Cause::forbidden(
            field,
            "Bidirectional mount propagation is available only to privileged containers",
        )),
        Some(other) => causes.push(Cause::unsupported(
            field,
            other,
            &["Bidirectional", "HostToContainer", "None"],
        )),
    }
    let field = mounts.field("recursiveReadOnly").to_string();
    match m["recursiveReadOnly"].as_str() {
        None | Some("Disabled") => {}
        Some("Enabled" | "IfPossible") => {
            if m["readOnly"] != true {
                let why = "may only be specified when readOnly is true";
                causes.push(Cause::forbidden(field.clone(), why));
            }
            if propagation.is_some_and(|p| p != "None") {
                let why = "may only be specified when mountPropagation is None or not specified";
                causes.push(Cause::forbidden(field, why));
            }
        }
        Some(other) => causes.push(Cause::unsupported(
            field,
            other,
            &["Disabled", "Enabled", "IfPossible"],
        )),
    }
}

/// A Service's traffic policies and distribution, as upstream's
/// validation; an external IP must be an address.
fn traffic_policies(spec: &Value, kind: &str, causes: &mut Vec<Cause>) {
    const POLICIES: [&str; 2] = ["Cluster", "Local"];
    for field in ["internalTrafficPolicy", "externalTrafficPolicy"] {
        if let Some(p) = spec[field].as_str().filter(|p| !POLICIES.contains(p)) {
            causes.push(Cause::unsupported(format!("spec.{field}"), p, &POLICIES));
        }
    }
    const DISTRIBUTIONS: [&str; 3] = ["PreferClose", "PreferSameNode", "PreferSameZone"];
    if let Some(d) = spec["trafficDistribution"].as_str() {
        if !DISTRIBUTIONS.contains(&d) {
            causes.push(Cause::unsupported(
                "spec.trafficDistribution",
                d,
                &DISTRIBUTIONS,
            ));
        }
    }
    let external = !spec["externalTrafficPolicy"].is_null();
    if external && !matches!(kind, "NodePort" | "LoadBalancer") {
        causes.push(Cause::invalid(
            "spec.externalTrafficPolicy",
            spec["externalTrafficPolicy"].as_str().unwrap_or_default(),
            "may only be set for externally-accessible services",
        ));
    }
    for (i, ip) in spec["externalIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let ip = ip.as_str().unwrap_or_default();
        if ip.parse::<std::net::IpAddr>().is_err() {
            let why = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
            causes.push(Cause::invalid(format!("spec.externalIPs[{i}]"), ip, why));
        }
    }
}

fn service(spec: &Value, causes: &mut Vec<Cause>) {
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    if !matches!(
        kind,
        "ClusterIP" | "NodePort" | "LoadBalancer" | "ExternalName"
    ) {
        causes.push(Cause::unsupported(
            "spec.type",
            kind,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(Cause::required("spec.ports"));
    }
    for (i, p) in ports.iter().enumerate() {
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1 && p["name"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.ports[{i}].name")));
        }
        protocol(&p["protocol"], format!("spec.ports[{i}].protocol"), causes);
        // As upstream, a nodePort of 0 is none.
        let node_port = p["nodePort"].as_i64().is_some_and(|n| n != 0);
        if node_port && !matches!(kind, "NodePort" | "LoadBalancer") {
            causes.push(Cause::forbidden(
                format!("spec.ports[{i}].nodePort"),
                format!("may not be used when `type` is '{kind}'"),
            ));
        }
    }
    traffic_policies(spec, kind, causes);
    families(spec, kind, causes);
    if kind == "ExternalName" {
        // A fully qualified name may end with its dot.
        match spec["externalName"]
            .as_str()
            .map(|n| n.strip_suffix('.').unwrap_or(n))
        {
            None | Some("") => causes.push(Cause::required("spec.externalName")),
            Some(name) if !is_dns_subdomain(name) => {
                causes.push(Cause::invalid("spec.externalName", name, SUBDOMAIN_MSG));
            }
            Some(_) => {}
        }
    }
    match spec["clusterIP"].as_str() {
        None | Some("" | "None") => {}
        Some(ip) if ip.parse::<std::net::Ipv4Addr>().is_err() => causes.push(Cause::invalid(
            "spec.clusterIP",
            ip,
            "must be a valid IPv4 address, (e.g. 10.9.8.7)",
        )),
        Some(_) if kind == "ExternalName" => causes.push(Cause::forbidden(
            "spec.clusterIP",
            "may not be set for ExternalName services",
        )),
        Some(_) => {}
    }
}

/// A Service's IP families, as upstream checks them on a single-stack
/// IPv4 cluster (Skiff's services are IPv4 only).
fn families(spec: &Value, kind: &str, causes: &mut Vec<Cause>) {
    let external = kind == "ExternalName";
    const FOR_EXTERNAL: &str = "may not be set for ExternalName services";
    let policy = &spec["ipFamilyPolicy"];
    match policy.as_str() {
        None => {}
        Some(_) if external => causes.push(Cause::forbidden("spec.ipFamilyPolicy", FOR_EXTERNAL)),
        Some("SingleStack" | "PreferDualStack") => {}
        Some("RequireDualStack") => causes.push(Cause::invalid(
            "spec.ipFamilyPolicy",
            "RequireDualStack",
            "this cluster is not configured for dual-stack services",
        )),
        Some(other) => causes.push(Cause::unsupported(
            "spec.ipFamilyPolicy",
            other,
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        )),
    }
    let families = spec["ipFamilies"].as_array().map_or(&[][..], Vec::as_slice);
    if external && !families.is_empty() {
        causes.push(Cause::forbidden("spec.ipFamilies", FOR_EXTERNAL));
        return;
    }
    for (i, family) in families.iter().enumerate() {
        let field = format!("spec.ipFamilies[{i}]");
        match family.as_str().unwrap_or_default() {
            "IPv4" => {}
            "IPv6" => causes.push(Cause::invalid(
                field,
                "IPv6",
                "not configured on this cluster",
            )),
            other => causes.push(Cause::unsupported(field, other, &["IPv4", "IPv6"])),
        }
    }
}

/// A port's protocol: TCP (the default), UDP or SCTP.
fn protocol(value: &Value, field: String, causes: &mut Vec<Cause>) {
    if let Some(p) = value.as_str() {
        if !matches!(p, "TCP" | "UDP" | "SCTP") {
            causes.push(Cause::unsupported(field, p, &["SCTP", "TCP", "UDP"]));
        }
    }
}

/// Why `ip` may not be an endpoint, if it may not (upstream's
/// `ValidateEndpointIP`): unspecified, link-local (a node's metadata
/// service) and link-local multicast addresses name no backend. Loopback
/// ones are refused by admission, which knows who writes them.
pub fn endpoint_ip_problem(ip: std::net::IpAddr) -> Option<String> {
    use std::net::IpAddr;
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    };
    let link_local_multicast = match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.segments()[0] & 0xff0f == 0xff02,
    };
    if ip.is_unspecified() {
        Some(format!("may not be unspecified ({ip})"))
    } else if link_local {
        Some("may not be in the link-local range (169.254.0.0/16, fe80::/10)".into())
    } else if link_local_multicast {
        Some("may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)".into())
    } else {
        None
    }
}

/// An Endpoints' addresses are IPs that may be endpoints, its ports in
/// range with a known protocol.
fn endpoints(obj: &Value, causes: &mut Vec<Cause>) {
    let subsets = obj["subsets"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, subset) in subsets.iter().enumerate() {
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in subset[list].as_array().into_iter().flatten().enumerate() {
                let field = || format!("subsets[{i}].{list}[{j}].ip");
                let text = a["ip"].as_str().unwrap_or_default();
                match text.parse::<std::net::IpAddr>() {
                    Err(_) => {
                        let why = "must be a valid IP address";
                        causes.push(Cause::invalid(field(), text, why));
                    }
                    Ok(ip) => {
                        if let Some(why) = endpoint_ip_problem(ip) {
                            causes.push(Cause::invalid(field(), text, why));
                        }
                    }
                }
            }
        }
        for (j, p) in subset["ports"].as_array().into_iter().flatten().enumerate() {
            let port = p["port"].as_i64().unwrap_or(0);
            if !(1..=65535).contains(&port) {
                let field = format!("subsets[{i}].ports[{j}].port");
                causes.push(Cause::invalid_value(field, &p["port"], PORT_RANGE));
            }
            protocol(
                &p["protocol"],
                format!("subsets[{i}].ports[{j}].protocol"),
                causes,
            );
        }
    }
}

/// A Lease lasts a positive time and counts its transitions from 0; a
/// preferred holder comes with a strategy, one upstream knows or a
/// qualified name (upstream's `ValidateLeaseSpec`).
fn lease(spec: &Value, causes: &mut Vec<Cause>) {
    if let Some(d) = spec["leaseDurationSeconds"].as_i64().filter(|d| *d <= 0) {
        let why = "must be greater than 0";
        causes.push(Cause::invalid_value(
            "spec.leaseDurationSeconds",
            &d.into(),
            why,
        ));
    }
    if let Some(t) = spec["leaseTransitions"].as_i64().filter(|t| *t < 0) {
        let why = "must be greater than or equal to 0";
        causes.push(Cause::invalid_value(
            "spec.leaseTransitions",
            &t.into(),
            why,
        ));
    }
    let strategy = spec["strategy"].as_str().unwrap_or_default();
    if strategy.contains('/') {
        if let Some(why) = qualified_name_problem(strategy) {
            causes.push(Cause::invalid("spec.strategy", strategy, why));
        }
    } else if !strategy.is_empty() && strategy != "OldestEmulationVersion" {
        causes.push(Cause::unsupported(
            "spec.strategy",
            strategy,
            &["OldestEmulationVersion"],
        ));
    }
    if spec["preferredHolder"]
        .as_str()
        .is_some_and(|h| !h.is_empty())
        && strategy.is_empty()
    {
        causes.push(Cause::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}

/// An EndpointSlice's addresses are of its `addressType`, its ports'
/// protocols TCP, UDP or SCTP.
fn endpoint_slice(obj: &Value, causes: &mut Vec<Cause>) {
    let kind = obj["addressType"].as_str().unwrap_or_default();
    if !matches!(kind, "IPv4" | "IPv6" | "FQDN") {
        causes.push(Cause::unsupported(
            "addressType",
            kind,
            &["FQDN", "IPv4", "IPv6"],
        ));
        return;
    }
    for (i, e) in obj["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (j, a) in e["addresses"].as_array().into_iter().flatten().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let field = || format!("endpoints[{i}].addresses[{j}]");
            let ip: Option<std::net::IpAddr> = match kind {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().ok().map(Into::into),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().ok().map(Into::into),
                _ => {
                    if !is_dns_subdomain(a) {
                        causes.push(Cause::invalid(field(), a, "must be a valid FQDN address"));
                    }
                    continue;
                }
            };
            match ip {
                None => {
                    let why = format!("must be a valid {kind} address");
                    causes.push(Cause::invalid(field(), a, why));
                }
                Some(ip) => {
                    if let Some(why) = endpoint_ip_problem(ip) {
                        causes.push(Cause::invalid(field(), a, why));
                    }
                }
            }
        }
    }
    for (i, p) in obj["ports"].as_array().into_iter().flatten().enumerate() {
        protocol(&p["protocol"], format!("ports[{i}].protocol"), causes);
    }
}

fn immutable(r: &ResourceType, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let paths: &[&str] = match (r.group, r.kind) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => &["spec.selector"],
        ("batch", "Job") => &[
            "spec.selector",
            "spec.completions",
            "spec.completionMode",
            "spec.podFailurePolicy",
            "spec.backoffLimitPerIndex",
            "spec.successPolicy",
            "spec.managedBy",
        ],
        ("", "Service") => &["spec.clusterIP"],
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.volumes",
            "spec.runtimeClassName",
            "spec.overhead",
        ],
        ("node.k8s.io", "RuntimeClass") => &["handler"],
        _ => &[],
    };
    for path in paths {
        let (a, b) = (meta::path(new, path), meta::path(old, path));
        // An unset node name may be set once (by binding).
        let first_set = *path == "spec.nodeName" && b.is_none_or(|v| v.is_null() || v == "");
        let cleared_ip = *path == "spec.clusterIP" && a.is_none_or(Value::is_null);
        if a != b && !first_set && !cleared_ip {
            causes.push(Cause::immutable(*path));
        }
    }
    if r.kind == "Pod" {
        // Scheduling gates may only be removed.
        let gates = |v: &Value| -> Vec<Value> {
            let gates = v["spec"]["schedulingGates"]
                .as_array()
                .into_iter()
                .flatten();
            gates.map(|g| g["name"].clone()).collect()
        };
        let before = gates(old);
        for (i, gate) in gates(new).iter().enumerate() {
            if !before.contains(gate) {
                let name = gate.as_str().unwrap_or_default();
                causes.push(Cause::forbidden(
                    format!("spec.schedulingGates[{i}]"),
                    format!("only deletion is allowed, but found new scheduling gate '{name}'"),
                ));
            }
        }
        pod_changes::update(new, old, causes);
    }
}

/// The causes (field and message) that validating `obj` (over `old`) as
/// an object of `group`'s `plural` finds; none for a valid one.
#[cfg(test)]
fn causes_of(group: &str, plural: &str, obj: &Value, old: Option<&Value>) -> Vec<(String, String)> {
    let r = crate::registry::preferred(group, plural).expect("a served resource");
    let Err(err) = object(r, obj, old) else {
        return Vec::new();
    };
    let details = err.details.expect("an Invalid error has details");
    let causes = details["causes"].as_array().cloned().unwrap_or_default();
    let text = |c: &Value, k: &str| c[k].as_str().unwrap_or_default().to_owned();
    causes
        .iter()
        .map(|c| (text(c, "field"), text(c, "message")))
        .collect()
}

/// The fields of [`causes_of`].
#[cfg(test)]
fn fields_of(group: &str, plural: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
    let causes = causes_of(group, plural, obj, old);
    causes.into_iter().map(|(field, _)| field).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;
    use serde_json::json;

    #[test]
    fn names() {
        for (s, label, sub) in [
            ("web", true, true),
            ("web-1", true, true),
            ("a.b", false, true),
            ("Web", false, false),
            ("-a", false, false),
            ("", false, false),
        ] {
            assert_eq!(is_dns_label(s), label, "{s}");
            assert_eq!(is_dns_subdomain(s), sub, "{s}");
        }
        // A Service's name starts with a letter.
        let services = lookup("", "v1", "services").unwrap();
        let service =
            |name: &str| json!({"metadata": {"name": name}, "spec": {"ports": [{"port": 80}]}});
        assert!(object(services, &service("web-1"), None).is_ok());
        let err = object(services, &service("1web"), None).unwrap_err();
        assert!(err.message.contains("a DNS-1035 label"), "{}", err.message);
    }

    #[test]
    fn block_devices_name_claims_once_at_paths_of_their_own() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = |devices: Value, mounts: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "c", "image": "i", "volumeDevices": devices, "volumeMounts": mounts}],
                "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": "d"}},
                    {"name": "scratch", "emptyDir": {}}]}})
        };
        let fields = |p: &Value| object(pods, p, None).err().map_or(vec![], cause_fields);
        let good = pod(
            json!([{"name": "disk", "devicePath": "/dev/xvda"}]),
            json!([]),
        );
        assert_eq!(fields(&good), Vec::<String>::new());
        let bad = pod(
            json!([
                {"name": "disk", "devicePath": "/dev/xvda"},
                {"name": "disk", "devicePath": "/dev/xvda"},
                {"name": "scratch", "devicePath": "/dev/../etc/x"},
                {"name": "gone", "devicePath": "/m"},
            ]),
            json!([{"name": "scratch", "mountPath": "/m"}]),
        );
        let err = object(pods, &bad, None).unwrap_err();
        let message = err.message.clone();
        assert_eq!(
            cause_fields(err),
            [
                "spec.containers[0].volumeDevices[1].name",
                "spec.containers[0].volumeDevices[1].devicePath",
                "spec.containers[0].volumeDevices[2].name",
                "spec.containers[0].volumeDevices[2].devicePath",
                "spec.containers[0].volumeDevices[2].name",
                "spec.containers[0].volumeDevices[3].name",
                "spec.containers[0].volumeDevices[3].devicePath",
            ]
        );
        for why in [
            "must be unique",
            "can only use volume source type of PersistentVolumeClaim or Ephemeral for block mode",
            "can not contain backsteps ('..')",
            "must not already exist in volumeMounts",
            "Not found: \"gone\"",
            "must not already exist as a path in volumeMounts",
        ] {
            assert!(message.contains(why), "{why} in {message}");
        }
    }

    #[test]
    fn image_volumes_name_their_image_in_pods_and_pull_as_containers_do() {
        let pods = lookup("", "v1", "pods").unwrap();
        let deployments = lookup("apps", "v1", "deployments").unwrap();
        let pod = |image: Value| {
            let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/m"}]}],
                "volumes": [{"name": "v", "image": image}]}});
            crate::defaults::pod_spec(&mut p["spec"]);
            p
        };
        let fields = |p: &Value| object(pods, p, None).err().map_or(vec![], cause_fields);
        let ok = pod(json!({"reference": "busybox:1.36"}));
        assert_eq!(
            ok["spec"]["volumes"][0]["image"]["pullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(fields(&ok), Vec::<String>::new());
        let latest = pod(json!({"reference": "busybox"}));
        assert_eq!(
            latest["spec"]["volumes"][0]["image"]["pullPolicy"],
            "Always"
        );
        let unnamed = pod(json!({}));
        assert_eq!(fields(&unnamed), ["spec.volumes[0].image.reference"]);
        let err = object(
            pods,
            &pod(json!({"reference": "b", "pullPolicy": "Sometimes"})),
            None,
        )
        .unwrap_err();
        assert!(
            err.message.contains("Unsupported value: \"Sometimes\""),
            "{}",
            err.message
        );
        // A template may leave the reference to whoever fills it in.
        let template = json!({"metadata": {"name": "d"}, "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": unnamed["spec"]}}});
        let err = object(deployments, &template, None).err();
        assert!(err.is_none(), "{err:?}");
    }

    #[test]
    fn volume_paths_stay_inside_their_volumes() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = |volume: Value, mount: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"containers": [
                {"name": "c", "image": "i", "volumeMounts": [mount]}], "volumes": [volume]}})
        };
        let fields = |p: &Value| object(pods, p, None).err().map_or(vec![], cause_fields);
        let mount = json!({"name": "v", "mountPath": "/m"});
        let ok = pod(
            json!({"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "a/b"}]}}),
            mount.clone(),
        );
        assert_eq!(fields(&ok), Vec::<String>::new());
        for (volume, field) in [
            (
                json!({"name": "/etc/cron.d", "configMap": {"name": "c"}}),
                "spec.volumes[0].name",
            ),
            (json!({"name": "v", "emptyDir": {}, "x": 1}), ""),
            (
                json!({"name": "v", "configMap": {"name": "c", "items": [{"key": "k", "path": "../../etc/passwd"}]}}),
                "spec.volumes[0].configMap.items[0].path",
            ),
            (
                json!({"name": "v", "secret": {"secretName": "s", "items": [{"key": "k", "path": "/etc/shadow"}]}}),
                "spec.volumes[0].secret.items[0].path",
            ),
            (
                json!({"name": "v", "downwardAPI": {"items": [{"path": "a/../../x", "fieldRef": {"fieldPath": "metadata.name"}}]}}),
                "spec.volumes[0].downwardAPI.items[0].path",
            ),
            (
                json!({"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "../t"}}]}}),
                "spec.volumes[0].projected.sources[0].serviceAccountToken.path",
            ),
        ] {
            let got = fields(&pod(volume.clone(), mount.clone()));
            match field {
                "" => assert!(got.is_empty(), "{volume}: {got:?}"),
                f => assert_eq!(got.first().map(String::as_str), Some(f), "{volume}"),
            }
        }
        let v = json!({"name": "v", "emptyDir": {}});
        for (m, field) in [
            (
                json!({"name": "v", "mountPath": "/m", "subPath": "/"}),
                "spec.containers[0].volumeMounts.subPath",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "subPath": "a/../.."}),
                "spec.containers[0].volumeMounts.subPath",
            ),
            (
                json!({"name": "w", "mountPath": "/m"}),
                "spec.containers[0].volumeMounts[0].name",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "subPath": "a", "subPathExpr": "b"}),
                "spec.containers[0].volumeMounts[0].subPathExpr",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "mountPropagation": "Bidirectional"}),
                "spec.containers[0].volumeMounts.mountPropagation",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "mountPropagation": "Sideways"}),
                "spec.containers[0].volumeMounts.mountPropagation",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "recursiveReadOnly": "Enabled"}),
                "spec.containers[0].volumeMounts.recursiveReadOnly",
            ),
            (
                json!({"name": "v", "mountPath": "/m", "readOnly": true, "recursiveReadOnly": "Always"}),
                "spec.containers[0].volumeMounts.recursiveReadOnly",
            ),
        ] {
            assert_eq!(
                fields(&pod(v.clone(), m.clone())),
                vec![field.to_owned()],
                "{m}"
            );
        }
        for fine in [
            json!({"name": "v", "mountPath": "/m", "mountPropagation": "HostToContainer"}),
            json!({"name": "v", "mountPath": "/m", "readOnly": true, "recursiveReadOnly": "IfPossible"}),
            json!({"name": "v", "mountPath": "/m", "subPathExpr": "$(POD_NAME)"}),
        ] {
            assert_eq!(
                fields(&pod(v.clone(), fine.clone())),
                Vec::<String>::new(),
                "{fine}"
            );
        }
        let cms = lookup("", "v1", "configmaps").unwrap();
        let cm = |key: &str| json!({"metadata": {"name": "c"}, "data": {key: "x"}});
        assert!(object(cms, &cm("app.conf"), None).is_ok());
        for bad in ["../x", "a/b", "..", "."] {
            assert!(object(cms, &cm(bad), None).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_and_protocols_are_what_they_claim() {
        let check = |plural: &str, group: &str, obj: Value| {
            let r = lookup(group, "v1", plural).unwrap();
            object(r, &obj, None).map_err(|e| e.message)
        };
        let svc = |spec: Value| json!({"metadata": {"name": "s"}, "spec": spec});
        assert!(check(
            "services",
            "",
            svc(json!({"ports": [{"port": 80, "protocol": "UDP"}]}))
        )
        .is_ok());
        // A nodePort of 0 is none, as upstream reads it.
        assert!(check(
            "services",
            "",
            svc(json!({"ports": [{"port": 80, "nodePort": 0}]}))
        )
        .is_ok());
        for spec in [
            json!({"ports": [{"port": 80, "protocol": "tcp } flush"}]}),
            json!({"ports": [{"port": 80, "nodePort": 30001}]}),
            json!({"clusterIP": "10.43.0.9; flush ruleset", "ports": [{"port": 80}]}),
        ] {
            assert!(check("services", "", svc(spec.clone())).is_err(), "{spec}");
        }
        let slice = |kind: &str, address: &str| json!({"metadata": {"name": "e"}, "addressType": kind, "endpoints": [{"addresses": [address]}]});
        assert!(check(
            "endpointslices",
            "discovery.k8s.io",
            slice("IPv4", "10.42.0.5")
        )
        .is_ok());
        assert!(check(
            "endpointslices",
            "discovery.k8s.io",
            slice("IPv4", "10.42.0.5 ; flush")
        )
        .is_err());
        assert!(check(
            "endpointslices",
            "discovery.k8s.io",
            slice("IPv6", "10.42.0.5")
        )
        .is_err());
        assert!(check(
            "endpointslices",
            "discovery.k8s.io",
            slice("FQDN", "web.example.com")
        )
        .is_ok());
        let node = |cidr: &str| json!({"metadata": {"name": "n"}, "spec": {"podCIDR": cidr}});
        assert!(check("nodes", "", node("10.42.1.0/24")).is_ok());
        assert!(check("nodes", "", node("default")).is_err());
    }

    #[test]
    fn app_armor_profiles_and_annotations_are_checked_as_upstream_checks_them() {
        let pod = |annotations: Value, pod_sc: Value, sc: Value| {
            json!({"metadata": {"name": "p", "annotations": annotations},
                "spec": {"securityContext": pod_sc,
                "containers": [{"name": "c", "image": "i", "securityContext": sc}]}})
        };
        let none = json!({});
        let runtime = json!({"appArmorProfile": {"type": "RuntimeDefault"}});
        let good = pod(
            none.clone(),
            runtime.clone(),
            json!({"appArmorProfile":
            {"type": "Localhost", "localhostProfile": "k8s-web"}}),
        );
        assert_eq!(causes_of("", "pods", &good, None), []);
        let bad = pod(
            json!({"container.apparmor.security.beta.kubernetes.io/gone": "bogus"}),
            json!({"appArmorProfile": {"type": "Unconfined", "localhostProfile": "x"}}),
            json!({"appArmorProfile": {"type": "Localhost", "localhostProfile": " web"}}),
        );
        let key = "metadata.annotations[container.apparmor.security.beta.kubernetes.io/gone]";
        let at = "spec.containers[0].securityContext.appArmorProfile";
        assert_eq!(
            causes_of("", "pods", &bad, None),
            [
                (
                    "spec.securityContext.appArmorProfile.localhostProfile".to_owned(),
                    r#"Invalid value: "x": can only be set when AppArmor type is Localhost"#
                        .to_owned()
                ),
                (
                    format!("{at}.localhostProfile"),
                    r#"Invalid value: " web": must not be padded with whitespace"#.to_owned()
                ),
                (
                    key.to_owned(),
                    r#"Invalid value: "gone": container not found"#.to_owned()
                ),
                (
                    key.to_owned(),
                    r#"Invalid value: "bogus": invalid AppArmor profile name: "bogus""#.to_owned()
                ),
            ]
        );
        let kinds = pod(
            none.clone(),
            json!({"appArmorProfile": {"type": "Strict"}}),
            json!({"appArmorProfile": {"type": "Localhost"}}),
        );
        assert_eq!(
            causes_of("", "pods", &kinds, None),
            [
                (
                    "spec.securityContext.appArmorProfile.type".to_owned(),
                    r#"Unsupported value: "Strict": supported values: "Localhost", "RuntimeDefault", "Unconfined""#.to_owned()
                ),
                (
                    format!("{at}.localhostProfile"),
                    "Required value: must be set when AppArmor type is Localhost".to_owned()
                ),
            ]
        );
        // On create an annotation must agree with the field it stands for.
        let annotated = |value: &str| {
            pod(
                json!({"container.apparmor.security.beta.kubernetes.io/c": value}),
                none.clone(),
                json!({
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "web"}}),
            )
        };
        assert_eq!(causes_of("", "pods", &annotated("localhost/web"), None), []);
        assert_eq!(
            causes_of("", "pods", &annotated("localhost/other"), None),
            [(
                format!("{at}.localhostProfile"),
                "Forbidden: apparmor profile in annotation and field must match".to_owned()
            )]
        );
        assert_eq!(
            fields_of("", "pods", &annotated("runtime/default"), None),
            [format!("{at}.type")]
        );
        // Afterwards the annotations stay as they are.
        let plain = pod(none.clone(), runtime.clone(), none.clone());
        let added = pod(
            json!({"container.apparmor.security.beta.kubernetes.io/c": "runtime/default"}),
            runtime.clone(),
            none.clone(),
        );
        assert_eq!(
            causes_of("", "pods", &added, Some(&plain)),
            [(
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/c]".to_owned(),
                "Forbidden: may not add AppArmor annotations".to_owned()
            )]
        );
        assert_eq!(
            causes_of("", "pods", &plain, Some(&added))[0].1,
            "Forbidden: may not remove or update AppArmor annotations"
        );
        // A template's annotations are checked too.
        let deployment = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"},
                "annotations": {"container.apparmor.security.beta.kubernetes.io/x": "runtime/default"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        assert_eq!(
            fields_of("apps", "deployments", &deployment, None),
            ["spec.template.metadata.annotations[container.apparmor.security.beta.kubernetes.io/x]"]
        );
    }

    #[test]
    fn an_ephemeral_volume_needs_a_claim_template_with_only_labels_and_annotations() {
        let pod = |volume: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"volumes": [volume],
                "containers": [{"name": "c", "image": "i"}]}})
        };
        let good = pod(json!({"name": "v", "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}}));
        assert_eq!(causes_of("", "pods", &good, None), []);
        let at = "spec.volumes[0].ephemeral.volumeClaimTemplate";
        let named = pod(json!({"name": "v", "ephemeral": {"volumeClaimTemplate": {
            "metadata": {"name": "mine"}, "spec": {"accessModes": ["ReadWriteOnce"]}}}}));
        assert_eq!(
            causes_of("", "pods", &named, None),
            [
                (
                    format!("{at}.metadata.name"),
                    "Forbidden: cannot be set for an ephemeral volume".to_owned()
                ),
                (
                    format!("{at}.spec.resources[storage]"),
                    "Required value".to_owned()
                ),
            ]
        );
        let bare = pod(json!({"name": "v", "ephemeral": {}}));
        assert_eq!(fields_of("", "pods", &bare, None), [at]);
    }

    #[test]
    fn seccomp_profiles_are_checked_as_upstream_checks_them() {
        let pod = |sc: Value| {
            json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "c", "image": "i", "securityContext": {"seccompProfile": sc}}]}})
        };
        let at = "spec.containers[0].securityContext.seccompProfile";
        let good = pod(json!({"type": "Localhost", "localhostProfile": "profiles/audit.json"}));
        assert_eq!(causes_of("", "pods", &good, None), []);
        for (sc, field, message) in [
            (
                json!({"type": "Localhost", "localhostProfile": "../audit.json"}),
                "localhostProfile",
                r#"Invalid value: "../audit.json": must not contain '..'"#,
            ),
            (
                json!({"type": "Localhost", "localhostProfile": "/etc/audit.json"}),
                "localhostProfile",
                r#"Invalid value: "/etc/audit.json": must be a relative path"#,
            ),
            (
                json!({"type": "Localhost"}),
                "localhostProfile",
                "Required value: must be set when seccomp type is Localhost",
            ),
            (
                json!({"type": "Strict"}),
                "type",
                r#"Unsupported value: "Strict": supported values: "Localhost", "RuntimeDefault", "Unconfined""#,
            ),
        ] {
            assert_eq!(
                causes_of("", "pods", &pod(sc), None),
                [(format!("{at}.{field}"), message.to_owned())]
            );
        }
        let named = pod(json!({"type": "RuntimeDefault", "localhostProfile": "x"}));
        assert_eq!(
            fields_of("", "pods", &named, None),
            [format!("{at}.localhostProfile")]
        );
    }

    #[test]
    fn security_settings_the_node_cannot_apply_are_refused() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = |pod_sc: Value, sc: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"securityContext": pod_sc,
                "containers": [{"name": "c", "image": "i", "securityContext": sc}]}})
        };
        let ok = pod(
            json!({"runAsUser": 1, "sysctls": [{"name": "net.ipv4.tcp_syncookies", "value": "1"}]}),
            json!({"capabilities": {"drop": ["ALL"]}, "procMount": "Default", "seccompProfile": {"type": "RuntimeDefault"}}),
        );
        assert!(object(pods, &ok, None).is_ok());
        for (pod_sc, sc, field) in [
            (
                json!({"seLinuxOptions": {"level": "s0"}}),
                json!({}),
                "spec.securityContext.seLinuxOptions",
            ),
            (
                json!({"sysctls": [{"name": "kernel.msgmax", "value": "1"}]}),
                json!({}),
                "spec.securityContext.sysctls[0].name",
            ),
            (
                json!({}),
                json!({"procMount": "Unmasked"}),
                "spec.containers[0].securityContext.procMount",
            ),
            (
                json!({"supplementalGroupsPolicy": "Strict"}),
                json!({}),
                "spec.securityContext.supplementalGroupsPolicy",
            ),
        ] {
            let err = object(pods, &pod(pod_sc.clone(), sc.clone()), None).unwrap_err();
            assert!(
                err.message.contains("Forbidden"),
                "{pod_sc} {sc}: {}",
                err.message
            );
            assert_eq!(err.details.unwrap()["causes"][0]["field"], field);
        }
    }

    #[test]
    fn dns_settings_are_checked_as_upstream() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = |dns: Value| {
            let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
            p["spec"]
                .as_object_mut()
                .unwrap()
                .extend(dns.as_object().unwrap().clone());
            p
        };
        let fine = json!({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.53"], "options": [{"name": "ndots", "value": "2"}]}});
        assert!(object(pods, &pod(fine), None).is_ok());
        for (dns, message) in [
            (json!({"dnsPolicy": "Sometimes"}), "spec.dnsPolicy: Unsupported value: \"Sometimes\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""),
            (json!({"dnsPolicy": "None"}), "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"),
            (json!({"dnsPolicy": "None", "dnsConfig": {}}), "spec.dnsConfig.nameservers: Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"),
            (json!({"dnsConfig": {"nameservers": ["dns.example"]}}), "spec.dnsConfig.nameservers[0]: Invalid value: \"dns.example\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
            (json!({"dnsConfig": {"options": [{"value": "2"}]}}), "spec.dnsConfig.options[0]: Required value: Option.Name must not be empty"),
        ] {
            let err = object(pods, &pod(dns.clone()), None).unwrap_err();
            assert!(err.message.contains(message), "{dns}: {}", err.message);
        }
    }

    #[test]
    fn pod_settings_beyond_the_node_agent_are_refused() {
        let pods = lookup("", "v1", "pods").unwrap();
        let with = |spec: Value, container: Value| {
            let mut c = json!({"name": "c", "image": "i"});
            c.as_object_mut()
                .unwrap()
                .extend(container.as_object().unwrap().clone());
            let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [c]}});
            pod["spec"]
                .as_object_mut()
                .unwrap()
                .extend(spec.as_object().unwrap().clone());
            pod
        };
        assert!(object(pods, &with(json!({"hostUsers": true}), json!({})), None).is_ok());
        for (spec, container, field) in [
            (json!({"hostUsers": false}), json!({}), "spec.hostUsers"),
            (
                json!({"resources": {"limits": {"cpu": "1"}}}),
                json!({}),
                "spec.resources",
            ),
            (
                json!({"resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu"}]}),
                json!({}),
                "spec.resourceClaims",
            ),
        ] {
            let err = object(pods, &with(spec.clone(), container), None).unwrap_err();
            let cause = &err.details.unwrap()["causes"][0];
            assert_eq!(cause["field"], field, "{spec}");
            assert_eq!(
                cause["message"],
                "Forbidden: Skiff's node agent cannot apply this setting"
            );
        }
    }

    #[test]
    fn pod_without_containers_is_invalid_with_causes() {
        let pods = lookup("", "v1", "pods").unwrap();
        let err = object(pods, &json!({"metadata": {"name": "p"}, "spec": {}}), None).unwrap_err();
        assert_eq!((err.code, err.reason), (422, "Invalid"));
        assert_eq!(
            err.details.unwrap()["causes"][0]["field"],
            "spec.containers"
        );
    }

    /// The fields an error's causes name, in order.
    fn cause_fields(err: ApiError) -> Vec<String> {
        err.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn causes_in_templates_name_the_whole_path() {
        let spec = json!({"restartPolicy": "Sometimes", "containers": [
            {"name": "a", "image": "i"}, {"name": "a", "image": " "}]});
        let cases = [
            (
                lookup("", "v1", "pods"),
                json!({"metadata": {"name": "p"}, "spec": spec}),
                "spec",
            ),
            (
                lookup("batch", "v1", "jobs"),
                json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": spec}}}),
                "spec.template.spec",
            ),
            (
                lookup("batch", "v1", "cronjobs"),
                json!({"metadata": {"name": "c"}, "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Allow",
                    "jobTemplate": {"spec": {"template": {"spec": spec}}}}}),
                "spec.jobTemplate.spec.template.spec",
            ),
        ];
        for (r, obj, at) in cases {
            let fields = cause_fields(object(r.unwrap(), &obj, None).unwrap_err());
            let want = ["containers[1].name", "containers[1].image", "restartPolicy"];
            assert_eq!(fields, want.map(|f| format!("{at}.{f}")), "{at}");
        }
    }

    #[test]
    fn restart_rules_and_env_files_are_checked() {
        let pods = lookup("", "v1", "pods").unwrap();
        let pod = |containers: Value| {
            json!({"metadata": {"name": "p"}, "spec": {"containers": containers,
                "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "c"}}]}})
        };
        let rule = json!({"action": "Restart", "exitCodes": {"operator": "In", "values": [42]}});
        let env = |volume: &str, path: &str, key: &str| json!([{"name": "A", "valueFrom": {"fileKeyRef": {"volumeName": volume, "path": path, "key": key}}}]);
        let good = pod(json!([{"name": "a", "image": "i", "restartPolicy": "Never",
            "restartPolicyRules": [rule], "env": env("scratch", "config.env", "A")}]));
        assert!(object(pods, &good, None).is_ok());
        let c = "spec.containers[0]";
        let cases = [
            (
                json!({"restartPolicy": "Sometimes"}),
                vec![format!("{c}.restartPolicy")],
            ),
            (
                json!({"restartPolicyRules": [rule]}),
                vec![format!("{c}.restartPolicy")],
            ),
            (
                json!({"restartPolicy": "Never", "restartPolicyRules": [{"action": "Stop"}]}),
                vec![
                    format!("{c}.restartPolicyRules[0].action"),
                    format!("{c}.restartPolicyRules[0].exitCodes"),
                ],
            ),
            (
                json!({"restartPolicy": "Never", "restartPolicyRules":
                    [{"action": "Restart", "exitCodes": {"operator": "Is", "values": [1]}}]}),
                vec![format!("{c}.restartPolicyRules[0].exitCodes.operator")],
            ),
            (
                json!({"env": env("cfg", "../x", "A=B")}),
                vec![
                    format!("{c}.env[0].valueFrom.fileKeyRef.volumeName"),
                    format!("{c}.env[0].valueFrom.fileKeyRef.path"),
                    format!("{c}.env[0].valueFrom.fileKeyRef.key"),
                ],
            ),
        ];
        let mut ported = good.clone();
        ported["spec"]["hostNetwork"] = json!(true);
        ported["spec"]["containers"][0]["ports"] = json!([
            {"name": "web", "containerPort": 80, "hostPort": 81},
            {"name": "web", "containerPort": 70000},
            {"name": "Bad_Name", "containerPort": 82, "protocol": "ICMP"},
            {"containerPort": 83, "hostPort": 83}, {"containerPort": 83, "hostPort": 83}]);
        let fields = cause_fields(object(pods, &ported, None).unwrap_err());
        let port = |j: usize, f: &str| format!("spec.containers[0].ports[{j}].{f}");
        let want = [
            port(0, "hostPort"),
            port(1, "name"),
            port(1, "containerPort"),
            port(2, "name"),
            port(2, "protocol"),
            port(4, "hostPort"),
        ];
        assert_eq!(fields, want);
        let mut gated = good.clone();
        gated["spec"]["schedulingGates"] =
            json!([{"name": "example.com/wait"}, {"name": "-bad"}, {"name": "example.com/wait"}]);
        gated["spec"]["nodeName"] = json!("n1");
        let fields = cause_fields(object(pods, &gated, None).unwrap_err());
        let want = [
            "spec.schedulingGates[1]",
            "spec.schedulingGates[2]",
            "spec.nodeName",
        ];
        assert_eq!(fields, want);
        let mut waiting = good.clone();
        waiting["spec"]["schedulingGates"] = json!([{"name": "a"}, {"name": "b"}]);
        let mut fewer = waiting.clone();
        fewer["spec"]["schedulingGates"] = json!([{"name": "b"}]);
        assert!(object(pods, &fewer, Some(&waiting)).is_ok());
        let fields = cause_fields(object(pods, &waiting, Some(&fewer)).unwrap_err());
        assert_eq!(fields, ["spec.schedulingGates[0]"]);
        let mut named = good.clone();
        named["spec"]["hostnameOverride"] = json!("Not_A_Name");
        named["spec"]["hostNetwork"] = json!(true);
        let fields = cause_fields(object(pods, &named, None).unwrap_err());
        assert_eq!(fields, ["spec.hostnameOverride", "spec.hostnameOverride"]);
        for (extra, want) in cases {
            let mut container = json!({"name": "a", "image": "i"});
            container
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            let fields = cause_fields(object(pods, &pod(json!([container])), None).unwrap_err());
            assert_eq!(fields, want, "{extra}");
        }
    }

    #[test]
    fn a_cronjobs_schedule_parses_in_a_known_time_zone() {
        let cronjobs = lookup("batch", "v1", "cronjobs").unwrap();
        let cronjob = |schedule: &str, zone: &str| {
            json!({"metadata": {"name": "c"}, "spec": {"schedule": schedule, "timeZone": zone, "concurrencyPolicy": "Forbid",
                "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "a", "image": "i"}]}}}}}})
        };
        assert!(object(cronjobs, &cronjob("0 9 * * *", "Europe/Berlin"), None).is_ok());
        let fields = |obj: &Value, old: Option<&Value>| match object(cronjobs, obj, old) {
            Ok(()) => Vec::new(),
            Err(e) => cause_fields(e),
        };
        assert_eq!(
            fields(&cronjob("CRON_TZ=UTC 0 9 * * *", "Mars/Olympus"), None),
            ["spec.schedule", "spec.timeZone"]
        );
        assert_eq!(
            fields(&cronjob("every monday", "UTC"), None),
            ["spec.schedule"]
        );
        let mut odd = cronjob("@daily", "UTC");
        odd["spec"]["concurrencyPolicy"] = json!("Sometimes");
        odd["spec"]["startingDeadlineSeconds"] = json!(-1);
        odd["spec"]["failedJobsHistoryLimit"] = json!(-1);
        assert_eq!(
            fields(&odd, None),
            [
                "spec.startingDeadlineSeconds",
                "spec.failedJobsHistoryLimit",
                "spec.concurrencyPolicy"
            ]
        );
        // Its Jobs' names add 11 characters to its own: 52 at most, when
        // it is created.
        let mut long = cronjob("@daily", "UTC");
        long["metadata"]["name"] = json!("c".repeat(53));
        assert_eq!(fields(&long, None), ["metadata.name"]);
        assert!(fields(&long, Some(&long)).is_empty());
    }

    fn job(extra: Value) -> Value {
        let template = json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "a", "image": "i"}]}});
        let mut spec = json!({"template": template});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"metadata": {"name": "j"}, "spec": spec})
    }

    fn job_causes(extra: Value) -> Vec<String> {
        let jobs = lookup("batch", "v1", "jobs").unwrap();
        match object(jobs, &job(extra), None) {
            Ok(()) => Vec::new(),
            Err(e) => e.details.unwrap()["causes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    format!(
                        "{}: {}",
                        c["field"].as_str().unwrap(),
                        c["message"].as_str().unwrap()
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn job_modes_and_counts_are_checked_as_upstream() {
        assert!(job_causes(json!({"completionMode": "Indexed", "completions": 3})).is_empty());
        assert_eq!(
            job_causes(json!({"completionMode": "Indexed", "maxFailedIndexes": 2})),
            [
                "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
                "spec.completions: Required value: when completion mode is Indexed",
            ]
        );
        assert_eq!(
            job_causes(json!({"backoffLimitPerIndex": 1, "parallelism": -1})),
            [
                "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
                "spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode",
            ]
        );
        let mut long = job(json!({"completionMode": "Indexed", "completions": 100}));
        long["metadata"]["name"] = json!("a".repeat(61));
        let jobs = lookup("batch", "v1", "jobs").unwrap();
        let err = object(jobs, &long, None).unwrap_err();
        assert!(
            err.message
                .contains("will not able to create pod with invalid DNS label"),
            "{}",
            err.message
        );
        let mut always = job(json!({}));
        always["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
        let err = object(jobs, &always, None).unwrap_err();
        assert!(err.message.contains(r#"spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never""#), "{}", err.message);
    }

    #[test]
    fn job_policies_are_checked_as_upstream() {
        let rule = |r: Value| json!({"podFailurePolicy": {"rules": [r]}});
        assert!(job_causes(rule(json!({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}))).is_empty());
        assert_eq!(
            job_causes(rule(json!({"action": "FailJob", "onExitCodes": {"containerName": "b", "operator": "In", "values": [3, 0, 3]}}))),
            [
                "spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: \"b\": must be one of the container or initContainer names in the pod template",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: [3,0,3]: must be ordered",
            ]
        );
        assert_eq!(
            job_causes(rule(json!({"action": "FailIndex"}))),
            [
                "spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
                "spec.podFailurePolicy.rules[0]: Invalid value: specifying one of OnExitCodes and OnPodConditions is required",
            ]
        );
        let mut failing =
            rule(json!({"action": "Count", "onPodConditions": [{"type": "x", "status": "Maybe"}]}));
        failing["podReplacementPolicy"] = json!("TerminatingOrFailed");
        assert_eq!(
            job_causes(failing),
            [
                "spec.podFailurePolicy.rules[0].onPodConditions[0].status: Unsupported value: \"Maybe\": supported values: \"False\", \"True\", \"Unknown\"",
                "spec.podReplacementPolicy: Unsupported value: \"TerminatingOrFailed\": supported values: \"Failed\"",
            ]
        );
        let success = |r: Value| json!({"completionMode": "Indexed", "completions": 5, "successPolicy": {"rules": [r]}});
        assert!(job_causes(success(
            json!({"succeededIndexes": "0,2-4", "succeededCount": 2})
        ))
        .is_empty());
        assert_eq!(
            job_causes(success(json!({"succeededIndexes": "3,1", "succeededCount": 6}))),
            [
                "spec.successPolicy.rules[0].succeededIndexes: Invalid value: \"3,1\": error parsing succeededIndexes: non-increasing order, previous: 3, current: 1",
                "spec.successPolicy.rules[0].succeededCount: Invalid value: 6: must be less than or equal to 5 (the number of specified completions)",
                "spec.successPolicy.rules[0].succeededCount: Invalid value: 6: must be less than or equal to 0 (the number of indexes in the specified succeededIndexes field)",
            ]
        );
        assert_eq!(
            job_causes(json!({"successPolicy": {"rules": []}})),
            ["spec.successPolicy: Invalid value: {\"rules\":[]}: requires indexed completion mode"]
        );
    }

    #[test]
    fn services_are_ipv4_only_and_external_names_are_names() {
        let services = lookup("", "v1", "services").unwrap();
        let causes = |extra: Value| {
            let mut svc = json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}});
            for (k, v) in extra.as_object().unwrap() {
                svc["spec"][k] = v.clone();
            }
            match object(services, &svc, None) {
                Ok(()) => String::new(),
                Err(e) => e.message,
            }
        };
        assert_eq!(
            causes(json!({"ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4"]})),
            ""
        );
        let dual =
            causes(json!({"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}));
        assert!(dual.contains(r#"spec.ipFamilyPolicy: Invalid value: "RequireDualStack": this cluster is not configured for dual-stack services"#), "{dual}");
        assert!(
            dual.contains(
                r#"spec.ipFamilies[1]: Invalid value: "IPv6": not configured on this cluster"#
            ),
            "{dual}"
        );
        let external =
            |name: &str| causes(json!({"type": "ExternalName", "externalName": name, "ports": []}));
        assert_eq!(external("mail.example.com."), "");
        assert!(
            external("mail example").contains("spec.externalName: Invalid value"),
            "{}",
            external("x y")
        );
        assert!(external("").contains("spec.externalName: Required value"));
    }

    #[test]
    fn a_services_traffic_distribution_is_one_upstream_knows() {
        let services = lookup("", "v1", "services").unwrap();
        let svc = |d: &str| json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}], "trafficDistribution": d}});
        assert!(object(services, &svc("PreferSameNode"), None).is_ok());
        let err = object(services, &svc("Nearby"), None).unwrap_err();
        let why = r#"spec.trafficDistribution: Unsupported value: "Nearby": supported values: "PreferClose", "PreferSameNode", "PreferSameZone""#;
        assert!(err.message.contains(why), "{}", err.message);
    }

    #[test]
    fn node_taints_are_unique_and_well_formed() {
        let node = |taints: Value| json!({"metadata": {"name": "n"}, "spec": {"taints": taints}});
        let fields = |taints| fields_of("", "nodes", &node(taints), None);
        let good = json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "gpu", "effect": "NoExecute"}]);
        assert!(fields(good).is_empty());
        let bad = json!([{"key": "a b", "value": "x y", "effect": "Sometimes"},
            {"key": "k", "effect": "NoSchedule"}, {"key": "k", "value": "v", "effect": "NoSchedule"},
            {"key": "e"}]);
        assert_eq!(
            fields(bad),
            [
                "spec.taints[0].key",
                "spec.taints[0].value",
                "spec.taints[0].effect",
                "spec.taints[2]",
                "spec.taints[3].effect"
            ]
        );
    }

    #[test]
    fn endpoints_name_addresses_that_can_be_backends() {
        let slice = |addresses: Value| {
            json!({"metadata": {"name": "s", "namespace": "n"}, "addressType": "IPv4",
                "endpoints": [{"addresses": addresses}], "ports": [{"port": 80, "protocol": "TCP"}]})
        };
        let of = |obj: &Value| fields_of("discovery.k8s.io", "endpointslices", obj, None);
        assert!(of(&slice(json!(["10.42.0.5", "127.0.0.1"]))).is_empty());
        assert_eq!(
            of(&slice(json!([
                "0.0.0.0",
                "169.254.169.254",
                "224.0.0.1",
                "10.0.0"
            ]))),
            [
                "endpoints[0].addresses[0]",
                "endpoints[0].addresses[1]",
                "endpoints[0].addresses[2]",
                "endpoints[0].addresses[3]"
            ]
        );
        let eps = |ip: &str, port: i64| {
            json!({"metadata": {"name": "e", "namespace": "n"}, "subsets": [{
                "addresses": [{"ip": ip}], "ports": [{"port": port, "protocol": "TCP"}]}]})
        };
        let of = |obj: &Value| fields_of("", "endpoints", obj, None);
        assert!(of(&eps("192.0.2.10", 5432)).is_empty());
        assert_eq!(
            of(&eps("fe80::1", 0)),
            ["subsets[0].addresses[0].ip", "subsets[0].ports[0].port"]
        );
    }

    #[test]
    fn leases_last_and_count_from_zero() {
        let lease =
            |spec: Value| json!({"metadata": {"name": "l", "namespace": "n"}, "spec": spec});
        let fields = |spec| fields_of("coordination.k8s.io", "leases", &lease(spec), None);
        let good = json!({"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
            "strategy": "OldestEmulationVersion", "preferredHolder": "b"});
        assert!(fields(good).is_empty());
        assert_eq!(
            fields(
                json!({"leaseDurationSeconds": 0, "leaseTransitions": -1, "preferredHolder": "b"})
            ),
            [
                "spec.leaseDurationSeconds",
                "spec.leaseTransitions",
                "spec.preferredHolder"
            ]
        );
        assert_eq!(fields(json!({"strategy": "Youngest"})), ["spec.strategy"]);
        assert!(fields(json!({"strategy": "example.com/mine"})).is_empty());
    }

    #[test]
    fn deployment_selector_must_match_and_is_immutable() {
        let d = lookup("apps", "v1", "deployments").unwrap();
        let good = json!({"metadata": {"name": "web"}, "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        object(d, &good, None).unwrap();
        let mut other = good.clone();
        other["spec"]["template"]["metadata"]["labels"]["app"] = json!("db");
        assert_eq!(object(d, &other, None).unwrap_err().code, 422);
        let mut moved = good.clone();
        moved["spec"]["selector"]["matchLabels"]["app"] = json!("db");
        moved["spec"]["template"]["metadata"]["labels"]["app"] = json!("db");
        let err = object(d, &moved, Some(&good)).unwrap_err();
        assert!(
            err.message.contains("field is immutable"),
            "{}",
            err.message
        );
    }
}
