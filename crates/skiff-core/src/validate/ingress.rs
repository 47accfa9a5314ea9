//! Ingresses and IngressClasses, checked as upstream checks them: hosts
//! are DNS names (a leading `*.` allowed), `Exact` and `Prefix` paths are
//! absolute and plain, every path says its type, every backend names one
//! Service port or one object; a class names its controller as a
//! domain-prefixed path, fixed once set, and scopes its parameters.

use serde_json::Value;

use super::path_segment_problems;
use super::{
    is_dns1035_label, is_dns_label, is_dns_subdomain, port_name_problem, At, DNS1035_MSG,
    LABEL_MSG, SUBDOMAIN_MSG,
};
use crate::status::Cause;

/// The longest controller name a class may give.
const MAX_CONTROLLER_LEN: usize = 250;
const HTTP_PATH_MSG: &str =
    "Invalid path (regex used for validation is '[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+')";
const SCOPES: &[&str] = &["Cluster", "Namespace"];

const WILDCARD_MSG: &str = "a wildcard DNS-1123 subdomain must start with '*.', followed by a valid DNS subdomain, which must consist of lower case alphanumeric characters, '-' or '.' and end with an alphanumeric character (e.g. '*.example.com', regex used for validation is '\\*\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const PATH_TYPES: &[&str] = &["Exact", "ImplementationSpecific", "Prefix"];

pub(super) fn spec(spec: &Value, causes: &mut Vec<Cause>) {
    let at = At::Root("spec");
    let rules = spec["rules"].as_array().map_or(&[][..], Vec::as_slice);
    if rules.is_empty() && spec["defaultBackend"].is_null() {
        causes.push(Cause::invalid_value(
            "spec",
            &spec["rules"],
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if !spec["defaultBackend"].is_null() {
        backend(&spec["defaultBackend"], at.field("defaultBackend"), causes);
    }
    for (i, rule) in rules.iter().enumerate() {
        let here = at.item("rules", i);
        if let Some(h) = rule["host"].as_str().filter(|h| !h.is_empty()) {
            host(h, here.field("host"), causes);
        }
        let http = &rule["http"];
        if http.is_null() {
            continue;
        }
        let paths = http["paths"].as_array().map_or(&[][..], Vec::as_slice);
        if paths.is_empty() {
            causes.push(Cause::required(
                here.field("http").field("paths").to_string(),
            ));
        }
        for (j, p) in paths.iter().enumerate() {
            path(p, here.field("http").item("paths", j), causes);
        }
    }
    for (i, tls) in spec["tls"].as_array().into_iter().flatten().enumerate() {
        let here = at.item("tls", i);
        for (j, h) in tls["hosts"].as_array().into_iter().flatten().enumerate() {
            host(
                h.as_str().unwrap_or_default(),
                At::Item(&here, "hosts", j),
                causes,
            );
        }
        if let Some(secret) = tls["secretName"].as_str().filter(|s| !s.is_empty()) {
            if !is_dns_subdomain(secret) {
                let field = here.field("secretName").to_string();
                causes.push(Cause::invalid(field, secret, SUBDOMAIN_MSG));
            }
        }
    }
    if let Some(class) = spec["ingressClassName"].as_str().filter(|c| !c.is_empty()) {
        if !is_dns_subdomain(class) {
            let field = at.field("ingressClassName").to_string();
            causes.push(Cause::invalid(field, class, SUBDOMAIN_MSG));
        }
    }
}

/// A rule's or a certificate's host: a DNS name, not an address.
fn host(h: &str, at: At<'_>, causes: &mut Vec<Cause>) {
    if h.parse::<std::net::IpAddr>().is_ok() {
        causes.push(Cause::invalid(
            at.to_string(),
            h,
            "must be a DNS name, not an IP address",
        ));
    }
    if h.contains('*') {
        let named = h.strip_prefix("*.").is_some_and(is_dns_subdomain);
        if !named {
            causes.push(Cause::invalid(at.to_string(), h, WILDCARD_MSG));
        }
    } else if !is_dns_subdomain(h) {
        causes.push(Cause::invalid(at.to_string(), h, SUBDOMAIN_MSG));
    }
}

fn path(p: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let Some(kind) = p["pathType"].as_str() else {
        let field = at.field("pathType").to_string();
        causes.push(Cause::required_because(field, "pathType must be specified"));
        return;
    };
    let text = p["path"].as_str().unwrap_or_default();
    let field = at.field("path").to_string();
    let absolute = text.starts_with('/');
    match kind {
        "Exact" | "Prefix" => {
            if !absolute {
                causes.push(Cause::invalid(&field, text, "must be an absolute path"));
            }
            for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                if text.contains(seq) {
                    causes.push(Cause::invalid(
                        &field,
                        text,
                        format!("must not contain '{seq}'"),
                    ));
                }
            }
            for end in ["/..", "/."] {
                if text.ends_with(end) {
                    causes.push(Cause::invalid(
                        &field,
                        text,
                        format!("cannot end with '{end}'"),
                    ));
                }
            }
        }
        "ImplementationSpecific" if !text.is_empty() && !absolute => {
            causes.push(Cause::invalid(&field, text, "must be an absolute path"));
        }
        "ImplementationSpecific" => {}
        other => {
            let field = at.field("pathType").to_string();
            causes.push(Cause::unsupported(field, other, PATH_TYPES));
        }
    }
    backend(&p["backend"], at.field("backend"), causes);
}

/// A backend: a Service's port, by name or number, or a resource.
fn backend(b: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let (service, resource) = (&b["service"], &b["resource"]);
    match (service.is_null(), resource.is_null()) {
        (false, false) => causes.push(Cause::invalid(
            at.to_string(),
            "",
            "cannot set both resource and service backends",
        )),
        (true, true) => causes.push(Cause::invalid(
            at.to_string(),
            "",
            "resource or service backend is required",
        )),
        (true, false) => typed_ref(resource, &at.field("resource").to_string(), causes),
        (false, true) => {
            let here = at.field("service");
            let name = service["name"].as_str().unwrap_or_default();
            if name.is_empty() {
                causes.push(Cause::required(here.field("name").to_string()));
            } else if !is_dns1035_label(name) {
                let field = here.field("name").to_string();
                causes.push(Cause::invalid(field, name, DNS1035_MSG));
            }
            let port = &service["port"];
            let (by_name, number) = (
                port["name"].as_str().unwrap_or_default(),
                port["number"].as_i64().unwrap_or(0),
            );
            let port_at = here.field("port");
            match (by_name.is_empty(), number) {
                (false, n) if n != 0 => causes.push(Cause::invalid(
                    at.to_string(),
                    "",
                    "cannot set both port name & port number",
                )),
                (false, _) => {
                    if let Some(why) = port_name_problem(by_name) {
                        causes.push(Cause::invalid(
                            port_at.field("name").to_string(),
                            by_name,
                            why,
                        ));
                    }
                }
                (true, 0) => causes.push(Cause::required_because(
                    at.to_string(),
                    "port name or number is required",
                )),
                (true, n) if !(1..=65535).contains(&n) => causes.push(Cause::invalid_value(
                    port_at.field("number").to_string(),
                    &port["number"],
                    "must be between 1 and 65535, inclusive",
                )),
                (true, _) => {}
            }
        }
    }
}

/// An IngressClass; `old` is the stored one on update.
pub(super) fn class(spec: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let controller = spec["controller"].as_str().unwrap_or_default();
    let at = "spec.controller";
    if controller.chars().count() > MAX_CONTROLLER_LEN {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: at.into(),
            message: format!("Too long: may not be more than {MAX_CONTROLLER_LEN} bytes"),
        });
    }
    match controller.split_once('/') {
        _ if controller.is_empty() => causes.push(Cause::required(at)),
        Some((host, path)) if !host.is_empty() && !path.is_empty() => {
            if !is_dns_subdomain(host) {
                causes.push(Cause::invalid(at, host, SUBDOMAIN_MSG));
            }
            if !path.bytes().all(http_path_byte) {
                causes.push(Cause::invalid(at, path, HTTP_PATH_MSG));
            }
        }
        _ => causes.push(Cause::invalid(
            at,
            controller,
            "must be a domain-prefixed path (such as \"acme.io/foo\")",
        )),
    }
    if old.is_some_and(|o| o["controller"].as_str().unwrap_or_default() != controller) {
        causes.push(Cause::invalid(at, controller, "field is immutable"));
    }
    let params = &spec["parameters"];
    if params.is_null() {
        return;
    }
    let at = "spec.parameters";
    typed_ref(params, at, causes);
    let Some(scope) = params["scope"].as_str() else {
        causes.push(Cause::required(format!("{at}.scope")));
        return;
    };
    let namespace = params["namespace"].as_str();
    match (scope, namespace) {
        ("Namespace", None) => causes.push(Cause::required_because(
            format!("{at}.namespace"),
            "`parameters.scope` is set to 'Namespace'",
        )),
        ("Namespace", Some(ns)) if !is_dns_label(ns) => {
            causes.push(Cause::invalid(format!("{at}.namespace"), ns, LABEL_MSG));
        }
        ("Cluster", Some(_)) => causes.push(Cause::forbidden(
            format!("{at}.namespace"),
            "`parameters.scope` is set to 'Cluster'",
        )),
        ("Namespace" | "Cluster", _) => {}
        _ => causes.push(Cause::unsupported(format!("{at}.scope"), scope, SCOPES)),
    }
}

/// A byte upstream allows in an HTTP path.
fn http_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&b)
}

/// A reference to an object of a kind in a group: a backend's resource,
/// a class's parameters.
fn typed_ref(r: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(group) = r["apiGroup"].as_str() {
        if !is_dns_subdomain(group) {
            causes.push(Cause::invalid(
                format!("{at}.apiGroup"),
                group,
                SUBDOMAIN_MSG,
            ));
        }
    }
    for field in ["kind", "name"] {
        match r[field].as_str().unwrap_or_default() {
            "" => causes.push(Cause::required_because(
                format!("{at}.{field}"),
                format!("{field} is required"),
            )),
            value => {
                for why in path_segment_problems(value) {
                    causes.push(Cause::invalid(format!("{at}.{field}"), value, why));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::fields_of;

    fn fields(spec: Value) -> Vec<String> {
        let obj = json!({"metadata": {"name": "i"}, "spec": spec});
        fields_of("networking.k8s.io", "ingresses", &obj, None)
    }

    #[test]
    fn hosts_paths_and_backends_as_upstream_checks_them() {
        let to = |name: &str, port: Value| json!({"service": {"name": name, "port": port}});
        let good = json!({"ingressClassName": "skiff", "tls": [{"hosts": ["*.example.com"], "secretName": "tls"}],
            "rules": [{"host": "*.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": to("web", json!({"number": 80}))},
                {"pathType": "ImplementationSpecific", "backend": to("web", json!({"name": "http"}))}]}}]});
        assert_eq!(fields(good), Vec::<String>::new());
        assert_eq!(fields(json!({})), ["spec"]);
        let bad = json!({"rules": [
            {"host": "10.0.0.1", "http": {"paths": [
                {"path": "api", "pathType": "Prefix", "backend": to("9web", json!({"number": 0}))},
                {"path": "/a/../b", "pathType": "Exact", "backend": to("web", json!({"name": "http", "number": 80}))},
                {"path": "/", "backend": to("web", json!({"number": 80}))},
                {"path": "/", "pathType": "Regex", "backend": {}}]}},
            {"host": "a.*.com", "http": {"paths": []}}]});
        assert_eq!(
            fields(bad),
            [
                "spec.rules[0].host",
                "spec.rules[0].http.paths[0].path",
                "spec.rules[0].http.paths[0].backend.service.name",
                "spec.rules[0].http.paths[0].backend",
                "spec.rules[0].http.paths[1].path",
                "spec.rules[0].http.paths[1].backend",
                "spec.rules[0].http.paths[2].pathType",
                "spec.rules[0].http.paths[3].pathType",
                "spec.rules[0].http.paths[3].backend",
                "spec.rules[1].host",
                "spec.rules[1].http.paths",
            ]
        );
        let object = json!({"defaultBackend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "static"}}});
        assert_eq!(fields(object), Vec::<String>::new());
        let unnamed = json!({"defaultBackend": {"resource": {"apiGroup": "", "kind": "a/b"}}});
        assert_eq!(
            fields(unnamed),
            [
                "spec.defaultBackend.resource.apiGroup",
                "spec.defaultBackend.resource.kind",
                "spec.defaultBackend.resource.name",
            ]
        );
    }

    fn class_fields(spec: Value, old: Option<Value>) -> Vec<String> {
        let obj = |spec: Value| json!({"metadata": {"name": "c"}, "spec": spec});
        let old = old.map(obj);
        fields_of(
            "networking.k8s.io",
            "ingressclasses",
            &obj(spec),
            old.as_ref(),
        )
    }

    #[test]
    fn a_class_names_its_controller_and_scopes_its_parameters() {
        let good = json!({"controller": "skiff.dev/ingress", "parameters": {"apiGroup": "k8s.example.com",
            "kind": "Params", "name": "p", "scope": "Namespace", "namespace": "edge"}});
        assert_eq!(class_fields(good.clone(), None), Vec::<String>::new());
        for bad in ["", "ingress", "/ingress", "Skiff.dev/x", "skiff.dev/a b"] {
            assert_eq!(
                class_fields(json!({"controller": bad}), None),
                ["spec.controller"],
                "{bad}"
            );
        }
        let long = format!("skiff.dev/{}", "x".repeat(250));
        assert_eq!(
            class_fields(json!({ "controller": long }), None),
            ["spec.controller"]
        );
        // The controller is fixed once set.
        let moved = json!({"controller": "other.dev/ingress"});
        assert_eq!(class_fields(moved, Some(good)), ["spec.controller"]);
        let params = |p: Value| json!({"controller": "skiff.dev/ingress", "parameters": p});
        assert_eq!(
            class_fields(params(json!({"kind": "P", "name": "p"})), None),
            ["spec.parameters.scope"]
        );
        assert_eq!(
            class_fields(
                params(json!({"kind": "P", "name": "p", "scope": "Cluster", "namespace": "x"})),
                None
            ),
            ["spec.parameters.namespace"]
        );
        assert_eq!(
            class_fields(
                params(json!({"kind": "P", "name": "p", "scope": "Namespace"})),
                None
            ),
            ["spec.parameters.namespace"]
        );
        assert_eq!(
            class_fields(
                params(json!({"kind": "P", "name": "p", "scope": "Global"})),
                None
            ),
            ["spec.parameters.scope"]
        );
    }
}
