//! Validation of names, required fields and immutable fields, reported as
//! `Invalid` errors with one cause per field.

use serde_json::Value;

use crate::registry::ResourceType;
use crate::selector::LabelSelector;
use crate::status::Cause;
use crate::{meta, ApiError};

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

/// Validates a whole object about to be written; `old` is the stored one on
/// update.
pub fn object(r: &ResourceType, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let name = meta::name(obj);
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if needs_label_name(r.kind) && !is_dns_label(name) {
        causes.push(Cause::invalid("metadata.name", name, LABEL_MSG));
    } else if !needs_label_name(r.kind)
        && !is_dns_subdomain(name)
        && !matches!(
            r.kind,
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding"
        )
    {
        causes.push(Cause::invalid("metadata.name", name, SUBDOMAIN_MSG));
    }
    labels(obj, &mut causes);
    let spec = &obj["spec"];
    match (r.group, r.kind) {
        ("", "Pod") => pod_spec(spec, "spec", &mut causes),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => {
            workload(spec, &mut causes);
            if spec["replicas"].as_i64().is_some_and(|n| n < 0) {
                causes.push(Cause::invalid(
                    "spec.replicas",
                    &spec["replicas"].to_string(),
                    "must be greater than or equal to 0",
                ));
            }
        }
        ("batch", "Job") => pod_template(&spec["template"], "spec.template", &mut causes),
        ("batch", "CronJob") => {
            if spec["schedule"].as_str().is_none_or(str::is_empty) {
                causes.push(Cause::required("spec.schedule"));
            }
            pod_template(
                &spec["jobTemplate"]["spec"]["template"],
                "spec.jobTemplate.spec.template",
                &mut causes,
            );
        }
        ("", "Service") => service(spec, &mut causes),
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

fn labels(obj: &Value, causes: &mut Vec<Cause>) {
    for (k, v) in meta::labels(obj) {
        let valid_value = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && (v.is_empty()
                || (v.as_bytes()[0].is_ascii_alphanumeric()
                    && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()));
        if !valid_value {
            causes.push(Cause::invalid(
                "metadata.labels",
                v,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            ));
        }
        let name = k.rsplit('/').next().unwrap_or(k);
        if name.is_empty() || name.len() > 63 {
            causes.push(Cause::invalid(
                "metadata.labels",
                k,
                "name part must be no more than 63 characters",
            ));
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
    pod_template(&spec["template"], "spec.template", causes);
}

fn pod_template(t: &Value, at: &str, causes: &mut Vec<Cause>) {
    pod_spec(&t["spec"], &format!("{at}.spec"), causes);
}

fn pod_spec(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let containers = spec["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if containers.is_empty() {
        causes.push(Cause::required(format!("{at}.containers")));
    }
    let mut seen = Vec::new();
    for (list, items) in [
        ("initContainers", spec["initContainers"].as_array()),
        ("containers", Some(&containers.to_vec())),
    ] {
        for (i, c) in items.into_iter().flatten().enumerate() {
            let here = format!("{at}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push(Cause::required(format!("{here}.name"))),
                Some(n) if !is_dns_label(n) => {
                    causes.push(Cause::invalid(format!("{here}.name"), n, LABEL_MSG))
                }
                Some(n) if seen.contains(&n) => causes.push(Cause {
                    reason: "FieldValueDuplicate",
                    field: format!("{here}.name"),
                    message: format!("Duplicate value: {n:?}"),
                }),
                Some(n) => seen.push(n),
            }
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                causes.push(Cause::required(format!("{here}.image")));
            }
        }
    }
    if let Some(policy) = spec["restartPolicy"].as_str() {
        if !matches!(policy, "Always" | "OnFailure" | "Never") {
            causes.push(Cause::unsupported(
                format!("{at}.restartPolicy"),
                policy,
                &["Always", "OnFailure", "Never"],
            ));
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
    }
}

fn immutable(r: &ResourceType, new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let paths: &[&str] = match (r.group, r.kind) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet") => &["spec.selector"],
        ("batch", "Job") => &["spec.selector", "spec.completions"],
        ("", "Service") => &["spec.clusterIP"],
        ("", "Pod") => &["spec.nodeName", "spec.restartPolicy", "spec.volumes"],
        ("", "PersistentVolumeClaim") => &["spec.storageClassName", "spec.volumeMode"],
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
        let names = |v: &Value| -> Vec<Value> {
            v["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| c["name"].clone())
                .collect()
        };
        if names(new) != names(old) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: "spec".into(),
                message: "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
            });
        }
    }
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
