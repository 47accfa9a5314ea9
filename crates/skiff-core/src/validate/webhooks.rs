//! Admission webhook configurations, checked as upstream's
//! `ValidateValidatingWebhookConfiguration` and its mutating twin: each
//! webhook has a unique, fully qualified name, one way to be reached
//! (an `https` URL or a Service), rules of known operations and scopes,
//! declared side effects, a review version Skiff speaks, and a timeout of
//! 1 to 30 seconds, and match conditions that are named CEL expressions.

use serde_json::Value;

use super::{is_dns_label, is_dns_subdomain, qualified_name_problem, LABEL_MSG, SUBDOMAIN_MSG};
use crate::selector::LabelSelector;
use crate::status::Cause;

const OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
pub(super) const FAILURE_POLICIES: &[&str] = &["Fail", "Ignore"];
pub(super) const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
const SIDE_EFFECTS: &[&str] = &["None", "NoneOnDryRun"];
const REINVOCATION: &[&str] = &["IfNeeded", "Never"];
/// The AdmissionReview versions Skiff sends (both have one shape).
pub const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// A configuration's `webhooks`; `mutating` for a
/// MutatingWebhookConfiguration.
pub(super) fn configuration(obj: &Value, mutating: bool, causes: &mut Vec<Cause>) {
    let hooks = obj["webhooks"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, hook) in hooks.iter().enumerate() {
        let here = format!("webhooks[{i}]");
        let name = hook["name"].as_str().unwrap_or_default();
        let field = |f: &str| format!("{here}.{f}");
        if name.is_empty() {
            causes.push(Cause::required(field("name")));
        } else if !is_dns_subdomain(name) {
            causes.push(Cause::invalid(field("name"), name, SUBDOMAIN_MSG));
        } else if name.split('.').count() < 3 {
            let why = "should be a domain with at least three segments separated by dots";
            causes.push(Cause::invalid(field("name"), name, why));
        }
        let earlier = &hooks[..i];
        if !name.is_empty() && earlier.iter().any(|h| h["name"] == name) {
            causes.push(Cause::duplicate(field("name"), format!("{name:?}")));
        }
        client_config(&hook["clientConfig"], &field("clientConfig"), causes);
        for (j, rule) in hook["rules"].as_array().into_iter().flatten().enumerate() {
            rule_with_operations(rule, &format!("{here}.rules[{j}]"), causes);
        }
        let one_of = |key: &str, allowed: &[&str], causes: &mut Vec<Cause>| {
            if let Some(v) = hook[key].as_str() {
                if !allowed.contains(&v) {
                    causes.push(Cause::unsupported(field(key), v, allowed));
                }
            }
        };
        one_of("failurePolicy", FAILURE_POLICIES, causes);
        one_of("matchPolicy", MATCH_POLICIES, causes);
        match hook["sideEffects"].as_str() {
            None => causes.push(Cause::required_because(
                field("sideEffects"),
                format!("must specify one of {}", quoted(SIDE_EFFECTS)),
            )),
            Some(v) if !SIDE_EFFECTS.contains(&v) => {
                causes.push(Cause::unsupported(field("sideEffects"), v, SIDE_EFFECTS));
            }
            Some(_) => {}
        }
        if mutating {
            one_of("reinvocationPolicy", REINVOCATION, causes);
        }
        review_versions(
            &hook["admissionReviewVersions"],
            &field("admissionReviewVersions"),
            causes,
        );
        if let Some(t) = hook["timeoutSeconds"].as_i64() {
            if !(1..=30).contains(&t) {
                let why = "the timeout value must be between 1 and 30 seconds";
                causes.push(Cause::invalid_value(
                    field("timeoutSeconds"),
                    &hook["timeoutSeconds"],
                    why,
                ));
            }
        }
        for key in ["namespaceSelector", "objectSelector"] {
            let sel = &hook[key];
            if !sel.is_null() {
                if let Err(e) = LabelSelector::from_object(sel) {
                    causes.push(Cause::invalid_value(field(key), sel, e.message));
                }
            }
        }
        match_conditions(&hook["matchConditions"], &field("matchConditions"), causes);
    }
}

/// The most match conditions a webhook may have.
const MAX_CONDITIONS: usize = 64;

/// Match conditions: each a qualified name, once, and a CEL expression
/// that compiles.
pub(super) fn match_conditions(conditions: &Value, here: &str, causes: &mut Vec<Cause>) {
    let conditions = conditions.as_array().map_or(&[][..], Vec::as_slice);
    if conditions.len() > MAX_CONDITIONS {
        causes.push(Cause::too_many(here, conditions.len(), MAX_CONDITIONS));
    }
    let mut names = Vec::new();
    for (i, condition) in conditions.iter().enumerate() {
        let at = |f: &str| format!("{here}[{i}].{f}");
        let expression = condition["expression"].as_str().unwrap_or_default().trim();
        if expression.is_empty() {
            causes.push(Cause::required(at("expression")));
        } else {
            expression_compiles(expression, &at("expression"), causes);
        }
        let name = condition["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(Cause::required(at("name")));
        } else if let Some(why) = qualified_name_problem(name) {
            causes.push(Cause::invalid(at("name"), name, why));
        }
        if !name.is_empty() {
            if names.contains(&name) {
                causes.push(Cause::duplicate(at("name"), format!("{name:?}")));
            }
            names.push(name);
        }
    }
}

/// An admission CEL expression that compiles.
pub(super) fn expression_compiles(text: &str, at: &str, causes: &mut Vec<Cause>) {
    if let Err(e) = crate::crd::cel::compile(text) {
        causes.push(Cause::invalid(at, text, format!("compilation failed: {e}")));
    }
}

fn quoted(values: &[&str]) -> String {
    let list: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    list.join(", ")
}

/// A webhook is reached at an `https` URL without user or fragment, or
/// at a Service's port and absolute path.
fn client_config(cc: &Value, here: &str, causes: &mut Vec<Cause>) {
    match (cc["url"].as_str(), cc["service"].is_object()) {
        (Some(_), true) | (None, false) => causes.push(Cause::required_because(
            here,
            "exactly one of url or service is required",
        )),
        (Some(url), false) => {
            let field = format!("{here}.url");
            match url.split_once("://") {
                Some(("https", rest)) if !rest.is_empty() => {
                    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
                    if host.contains('@') {
                        causes.push(Cause::invalid(
                            &field,
                            url,
                            "user information is not permitted in the URL",
                        ));
                    }
                    if url.contains('#') {
                        causes.push(Cause::invalid(
                            &field,
                            url,
                            "fragments are not permitted in the URL",
                        ));
                    }
                    if url.contains('?') {
                        causes.push(Cause::invalid(
                            &field,
                            url,
                            "query parameters are not permitted in the URL",
                        ));
                    }
                    if host.is_empty() {
                        causes.push(Cause::invalid(&field, url, "host must be specified"));
                    }
                }
                Some(("https", _)) => {
                    causes.push(Cause::invalid(&field, url, "host must be specified"))
                }
                _ => causes.push(Cause::invalid(
                    &field,
                    url,
                    "'https' is the only allowed URL scheme",
                )),
            }
        }
        (None, true) => {
            let svc = &cc["service"];
            let field = |f: &str| format!("{here}.service.{f}");
            for key in ["namespace", "name"] {
                match svc[key].as_str() {
                    None | Some("") => causes.push(Cause::required(field(key))),
                    Some(v) if !is_dns_label(v) => {
                        causes.push(Cause::invalid(field(key), v, LABEL_MSG))
                    }
                    Some(_) => {}
                }
            }
            if let Some(path) = svc["path"].as_str() {
                if !path.is_empty() && !path.starts_with('/') {
                    causes.push(Cause::invalid(field("path"), path, "must start with a '/'"));
                }
            }
            if let Some(port) = svc["port"].as_i64() {
                if !(1..=65535).contains(&port) {
                    let why = "port is not valid: must be between 1 and 65535, inclusive";
                    causes.push(Cause::invalid_value(field("port"), &svc["port"], why));
                }
            }
        }
    }
}

/// A policy's rule: a webhook's, which may also name the objects it is
/// for (each a valid name, once).
pub(super) fn named_rule(rule: &Value, here: &str, causes: &mut Vec<Cause>) {
    let names = rule["resourceNames"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for (i, name) in names.iter().enumerate() {
        let name = name.as_str().unwrap_or_default();
        let at = format!("{here}.resourceNames[{i}]");
        for why in super::path_segment_problems(name) {
            causes.push(Cause::invalid(&at, name, why));
        }
        if names[..i].iter().any(|n| n == name) {
            causes.push(Cause::duplicate(at, format!("{name:?}")));
        }
    }
    rule_with_operations(rule, here, causes);
}

fn rule_with_operations(rule: &Value, here: &str, causes: &mut Vec<Cause>) {
    let list = |key: &str| -> Vec<&str> {
        rule[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    let field = |f: &str| format!("{here}.{f}");
    let operations = list("operations");
    if operations.is_empty() {
        causes.push(Cause::required(field("operations")));
    }
    for (i, op) in operations.iter().enumerate() {
        if !OPERATIONS.contains(op) {
            causes.push(Cause::unsupported(
                format!("{here}.operations[{i}]"),
                op,
                OPERATIONS,
            ));
        }
    }
    if operations.len() > 1 && operations.contains(&"*") {
        causes.push(Cause::invalid(
            field("operations"),
            "*",
            "if '*' is present, must not specify other operations",
        ));
    }
    for key in ["apiGroups", "apiVersions", "resources"] {
        let items = list(key);
        if items.is_empty() {
            causes.push(Cause::required(field(key)));
        }
        if items.len() > 1 && items.contains(&"*") {
            causes.push(Cause::invalid(
                field(key),
                "*",
                "if '*' is present, must not specify other API groups, versions or resources",
            ));
        }
    }
    for (i, res) in list("resources").iter().enumerate() {
        if res.is_empty() {
            causes.push(Cause::required(format!("{here}.resources[{i}]")));
        }
    }
    if let Some(scope) = rule["scope"].as_str() {
        if !SCOPES.contains(&scope) {
            causes.push(Cause::unsupported(field("scope"), scope, SCOPES));
        }
    }
}

fn review_versions(versions: &Value, here: &str, causes: &mut Vec<Cause>) {
    let list: Vec<&str> = versions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if list.is_empty() {
        let why = format!("must specify one of {}", quoted(REVIEW_VERSIONS));
        causes.push(Cause::required_because(here, why));
    } else if !list.iter().any(|v| REVIEW_VERSIONS.contains(v)) {
        let why = format!("must include at least one of {}", quoted(REVIEW_VERSIONS));
        causes.push(Cause::invalid_value(here, versions, why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(hook: Value) -> Vec<String> {
        let mut causes = Vec::new();
        configuration(&json!({"webhooks": [hook]}), true, &mut causes);
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn good() -> Value {
        json!({"name": "deny.example.com", "sideEffects": "None", "admissionReviewVersions": ["v1"],
               "clientConfig": {"url": "https://127.0.0.1:8443/validate"},
               "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}]})
    }

    #[test]
    fn match_conditions_are_named_expressions_that_compile() {
        let mut hook = good();
        hook["matchConditions"] = json!([
            {"name": "not-kube-system", "expression": "request.namespace != 'kube-system'"},
            {"name": "example.com/labelled", "expression": "has(object.metadata.labels)"},
        ]);
        assert_eq!(problems(hook.clone()), Vec::<String>::new());
        hook["matchConditions"] = json!([
            {"name": "a", "expression": "true"},
            {"name": "a", "expression": " "},
            {"name": "-bad", "expression": "authorizer.group('').resource('pods').check('get').allowed()"},
            {"name": "authorized", "expression": "authorizer.path('/x').check('get').allowed()"},
            {"expression": "object.x ==="},
        ]);
        let found = problems(hook);
        let fields: Vec<&str> = found
            .iter()
            .map(|p| p.split(": ").next().unwrap())
            .collect();
        assert_eq!(
            fields,
            [
                "webhooks[0].matchConditions[1].expression",
                "webhooks[0].matchConditions[1].name",
                "webhooks[0].matchConditions[2].name",
                "webhooks[0].matchConditions[4].expression",
                "webhooks[0].matchConditions[4].name",
            ],
            "{found:?}"
        );
        assert!(found[3].contains("compilation failed"), "{found:?}");
        let mut many = good();
        let one = json!({"name": "n", "expression": "true"});
        many["matchConditions"] = Value::Array(vec![one; 65]);
        assert!(problems(many)[0].starts_with("webhooks[0].matchConditions: Too many: 65"));
    }

    #[test]
    fn a_webhook_is_named_reachable_and_declares_its_side_effects() {
        assert_eq!(problems(good()), Vec::<String>::new());
        let mut bad = good();
        bad["name"] = json!("deny");
        bad["clientConfig"] = json!({"url": "http://x/"});
        bad["sideEffects"] = json!("Some");
        bad["admissionReviewVersions"] = json!(["v2"]);
        bad["timeoutSeconds"] = json!(31);
        bad["rules"][0]["operations"] = json!(["PATCH"]);
        bad["matchConditions"] = json!([{"name": "a", "expression": "object.x ==="}]);
        let found = problems(bad);
        for field in [
            "name",
            "clientConfig.url",
            "sideEffects",
            "admissionReviewVersions",
            "timeoutSeconds",
            "rules[0].operations[0]",
            "matchConditions[0].expression",
        ] {
            let field = format!("webhooks[0].{field}: ");
            assert!(
                found.iter().any(|p| p.starts_with(&field)),
                "{field} in {found:?}"
            );
        }
        let mut both = good();
        both["clientConfig"]["service"] = json!({"namespace": "d", "name": "hook"});
        assert_eq!(
            problems(both),
            ["webhooks[0].clientConfig: Required value: exactly one of url or service is required"]
        );
    }
}
