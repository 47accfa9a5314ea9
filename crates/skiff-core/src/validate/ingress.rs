//! Ingresses, checked as upstream checks them: hosts are DNS names (a
//! leading `*.` allowed), `Exact` and `Prefix` paths are absolute and
//! plain, every path says its type, and every backend names one Service
//! port.

use serde_json::Value;

use super::{
    is_dns1035_label, is_dns_subdomain, port_name_problem, At, DNS1035_MSG, SUBDOMAIN_MSG,
};
use crate::status::Cause;

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
        (true, false) => {}
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
    }
}
