//! APIServices, checked as upstream's aggregator checks them: named
//! `<version>.<group>`, a group and version that could be served, the
//! priorities within their ranges, and a Service to reach with port and
//! trust that agree (a local APIService names none, and so no trust).

use serde_json::Value;

use super::{
    is_dns1035_label, is_dns_subdomain, path_segment_problems, DNS1035_MSG, SUBDOMAIN_MSG,
};
use crate::status::Cause;

/// The name's problems: a path segment, and exactly `<version>.<group>`.
pub(super) fn name(obj: &Value, causes: &mut Vec<Cause>) {
    let name = crate::meta::name(obj);
    let problems = path_segment_problems(name);
    let spec = &obj["spec"];
    let text = |f: &str| spec[f].as_str().unwrap_or_default();
    let required = format!("{}.{}", text("version"), text("group"));
    let problems = if problems.is_empty() && name != required {
        vec![format!(
            "must be `spec.version+\".\"+spec.group`: {required:?}"
        )]
    } else {
        problems
    };
    for why in problems {
        causes.push(Cause::invalid("metadata.name", name, why));
    }
}

pub(super) fn spec(spec: &Value, causes: &mut Vec<Cause>) {
    let text = |f: &str| spec[f].as_str().unwrap_or_default();
    let (group, version) = (text("group"), text("version"));
    if group.is_empty() && version != "v1" {
        let why = "only v1 may have an empty group and it better be legacy kube";
        causes.push(Cause::required_because("spec.group", why));
    }
    if !group.is_empty() && !is_dns_subdomain(group) {
        causes.push(Cause::invalid("spec.group", group, SUBDOMAIN_MSG));
    }
    if !is_dns1035_label(version) {
        causes.push(Cause::invalid("spec.version", version, DNS1035_MSG));
    }
    for (field, max) in [("groupPriorityMinimum", 20000), ("versionPriority", 1000)] {
        let priority = spec[field].as_i64().unwrap_or_default();
        if priority <= 0 || priority > max {
            let why = format!("must be positive and less than {max}");
            causes.push(Cause::invalid_value(
                format!("spec.{field}"),
                &spec[field],
                why,
            ));
        }
    }
    let insecure = spec["insecureSkipTLSVerify"] == true;
    let bundle = text("caBundle");
    let service = &spec["service"];
    if service.is_null() {
        if !bundle.is_empty() {
            let bytes = format!("{} bytes", bundle.trim_end_matches('=').len() * 3 / 4);
            let why = "local APIServices may not have a caBundle";
            causes.push(Cause::invalid("spec.caBundle", &bytes, why));
        }
        if insecure {
            let why = "local APIServices may not have insecureSkipTLSVerify";
            causes.push(Cause::invalid_value(
                "spec.insecureSkipTLSVerify",
                &Value::Bool(true),
                why,
            ));
        }
        return;
    }
    for field in ["namespace", "name"] {
        if service[field].as_str().is_none_or(str::is_empty) {
            causes.push(Cause::required(format!("spec.service.{field}")));
        }
    }
    let port = service["port"].as_i64().unwrap_or_default();
    if !(1..=65535).contains(&port) {
        let why = "port is not valid: must be between 1 and 65535, inclusive";
        causes.push(Cause::invalid_value(
            "spec.service.port",
            &service["port"],
            why,
        ));
    }
    if insecure && !bundle.is_empty() {
        let why = "may not be true if caBundle is present";
        causes.push(Cause::invalid_value(
            "spec.insecureSkipTLSVerify",
            &Value::Bool(true),
            why,
        ));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::causes_of;

    fn service(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": name}, "spec": spec})
    }

    fn fields(obj: &Value) -> Vec<String> {
        let causes = causes_of("apiregistration.k8s.io", "apiservices", obj, None);
        causes.into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn an_api_service_is_named_for_what_it_serves() {
        let remote = json!({"group": "metrics.example.com", "version": "v1beta1",
            "groupPriorityMinimum": 100, "versionPriority": 100,
            "service": {"namespace": "kube-system", "name": "metrics", "port": 443}});
        assert!(fields(&service("v1beta1.metrics.example.com", remote.clone())).is_empty());
        let causes = causes_of(
            "apiregistration.k8s.io",
            "apiservices",
            &service("metrics", remote),
            None,
        );
        assert_eq!(
            causes,
            [(
                "metadata.name".to_owned(),
                "Invalid value: \"metrics\": must be `spec.version+\".\"+spec.group`: \"v1beta1.metrics.example.com\"".to_owned()
            )]
        );
        // The core group's local APIService is `v1.`, as upstream names it.
        let core = json!({"group": "", "version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1});
        assert!(fields(&service("v1.", core)).is_empty());
    }

    #[test]
    fn its_spec_is_checked_as_upstreams() {
        let bad = json!({"group": "", "version": "V1", "groupPriorityMinimum": 0,
            "versionPriority": 1001, "caBundle": "YWJj", "insecureSkipTLSVerify": true});
        assert_eq!(
            fields(&service("V1.", bad)),
            [
                "spec.group",
                "spec.version",
                "spec.groupPriorityMinimum",
                "spec.versionPriority",
                "spec.caBundle",
                "spec.insecureSkipTLSVerify"
            ]
        );
        let remote = json!({"group": "x.example.com", "version": "v1",
            "groupPriorityMinimum": 1, "versionPriority": 1, "caBundle": "YWJj",
            "insecureSkipTLSVerify": true, "service": {"port": 0}});
        assert_eq!(
            fields(&service("v1.x.example.com", remote)),
            [
                "spec.service.namespace",
                "spec.service.name",
                "spec.service.port",
                "spec.insecureSkipTLSVerify"
            ]
        );
    }
}
