//! ValidatingAdmissionPolicies and their bindings, checked as upstream's
//! `ValidateValidatingAdmissionPolicy` and its binding's twin: a policy
//! matches resources by rules, its CEL expressions (match conditions,
//! variables, validations, messages, audit annotations) compile, and a
//! binding names its policy, how to act on a failure, and where its
//! parameters are.

use serde_json::Value;

use super::webhooks::{
    expression_compiles, match_conditions, named_rule, FAILURE_POLICIES, MATCH_POLICIES,
};
use super::{is_dns1035_label, is_dns_subdomain, qualified_name_problem, DNS1035_MSG};
use crate::selector::LabelSelector;
use crate::status::Cause;

/// The reasons a validation may give for a refusal.
const REASONS: &[&str] = &[
    "Forbidden",
    "Invalid",
    "RequestEntityTooLarge",
    "Unauthorized",
];
const ACTIONS: &[&str] = &["Audit", "Deny", "Warn"];
const NOT_FOUND_ACTIONS: &[&str] = &["Deny", "Allow"];
/// The most audit annotations a policy may have.
const MAX_AUDIT_ANNOTATIONS: usize = 20;

/// A ValidatingAdmissionPolicy's `spec` (its name keys its audit
/// annotations).
pub(super) fn policy(name: &str, spec: &Value, causes: &mut Vec<Cause>) {
    match spec["failurePolicy"].as_str() {
        None => causes.push(Cause::required("spec.failurePolicy")),
        Some(p) if !FAILURE_POLICIES.contains(&p) => {
            causes.push(Cause::unsupported(
                "spec.failurePolicy",
                p,
                FAILURE_POLICIES,
            ));
        }
        Some(_) => {}
    }
    if !spec["paramKind"].is_null() {
        param_kind(&spec["paramKind"], causes);
    }
    let constraints = &spec["matchConstraints"];
    if constraints.is_null() {
        causes.push(Cause::required("spec.matchConstraints"));
    } else {
        match_resources(constraints, "spec.matchConstraints", causes);
        if constraints["resourceRules"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            causes.push(Cause::required("spec.matchConstraints.resourceRules"));
        }
    }
    match_conditions(&spec["matchConditions"], "spec.matchConditions", causes);
    let mut names = Vec::new();
    for (i, variable) in list(&spec["variables"]).iter().enumerate() {
        let at = |f: &str| format!("spec.variables[{i}].{f}");
        let name = variable["name"].as_str().unwrap_or_default();
        if name.trim().is_empty() {
            causes.push(Cause::required_because(at("name"), "name is not specified"));
        } else if !is_identifier(name) {
            causes.push(Cause::invalid(
                at("name"),
                name,
                "name is not a valid CEL identifier",
            ));
        } else if names.contains(&name) {
            causes.push(Cause::duplicate(at("name"), format!("{name:?}")));
        }
        names.push(name);
        expression(&variable["expression"], &at("expression"), causes);
    }
    let validations = list(&spec["validations"]);
    let annotations = list(&spec["auditAnnotations"]);
    if validations.is_empty() && annotations.is_empty() {
        let why = "validations or auditAnnotations must contain at least one item";
        causes.push(Cause::required_because("spec.validations", why));
        causes.push(Cause::required_because("spec.auditAnnotations", why));
    }
    for (i, v) in validations.iter().enumerate() {
        validation(v, &format!("spec.validations[{i}]"), causes);
    }
    if annotations.len() > MAX_AUDIT_ANNOTATIONS {
        let why = format!("must not have more than {MAX_AUDIT_ANNOTATIONS} auditAnnotations");
        causes.push(Cause::invalid("spec.auditAnnotations", "", why));
    }
    let mut keys = Vec::new();
    for (i, a) in annotations.iter().enumerate() {
        let at = |f: &str| format!("spec.auditAnnotations[{i}].{f}");
        let key = a["key"].as_str().unwrap_or_default();
        if let Some(why) = qualified_name_problem(&format!("{name}/{key}")) {
            causes.push(Cause::invalid(at("key"), &format!("{name}/{key}"), why));
        }
        if keys.contains(&key) {
            causes.push(Cause::duplicate(at("key"), format!("{key:?}")));
        }
        keys.push(key);
        expression(&a["valueExpression"], &at("valueExpression"), causes);
    }
}

/// A ValidatingAdmissionPolicyBinding's `spec`.
pub(super) fn binding(spec: &Value, causes: &mut Vec<Cause>) {
    if spec["policyName"].as_str().is_none_or(str::is_empty) {
        causes.push(Cause::required("spec.policyName"));
    }
    if !spec["matchResources"].is_null() {
        match_resources(&spec["matchResources"], "spec.matchResources", causes);
    }
    let param_ref = &spec["paramRef"];
    if !param_ref.is_null() {
        let named = param_ref["name"].as_str().is_some_and(|n| !n.is_empty());
        let selector = &param_ref["selector"];
        if !selector.is_null() {
            if let Err(e) = LabelSelector::from_object(selector) {
                causes.push(Cause::invalid_value(
                    "spec.paramRef.selector",
                    selector,
                    e.message,
                ));
            }
            if named {
                let why = "name and selector are mutually exclusive";
                causes.push(Cause::forbidden("spec.paramRef.selector", why));
            }
        } else if !named {
            let why = "one of name or selector must be specified";
            causes.push(Cause::required_because("spec.paramRef", why));
        }
        match param_ref["parameterNotFoundAction"].as_str() {
            None | Some("") => {
                causes.push(Cause::required("spec.paramRef.parameterNotFoundAction"))
            }
            Some(a) if !NOT_FOUND_ACTIONS.contains(&a) => causes.push(Cause::unsupported(
                "spec.paramRef.parameterNotFoundAction",
                a,
                NOT_FOUND_ACTIONS,
            )),
            Some(_) => {}
        }
    }
    let actions: Vec<&str> = list(&spec["validationActions"])
        .iter()
        .map(|a| a.as_str().unwrap_or_default())
        .collect();
    for (i, action) in actions.iter().enumerate() {
        let at = format!("spec.validationActions[{i}]");
        if !ACTIONS.contains(action) {
            causes.push(Cause::unsupported(&at, action, ACTIONS));
        }
        if actions[..i].contains(action) {
            causes.push(Cause::duplicate(at, format!("{action:?}")));
        }
    }
    if actions.contains(&"Deny") && actions.contains(&"Warn") {
        let why = "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)";
        causes.push(Cause::invalid_value(
            "spec.validationActions",
            &spec["validationActions"],
            why,
        ));
    }
    if actions.is_empty() {
        let why = "at least one validation action is required";
        causes.push(Cause::required_because("spec.validationActions", why));
    }
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map_or(&[][..], Vec::as_slice)
}

/// A CEL identifier: a letter or `_`, then letters, digits or `_`.
fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A required CEL expression that compiles.
fn expression(v: &Value, at: &str, causes: &mut Vec<Cause>) {
    let text = v.as_str().unwrap_or_default();
    if text.trim().is_empty() {
        let last = at.rsplit('.').next().unwrap_or(at);
        causes.push(Cause::required_because(
            at,
            format!("{last} is not specified"),
        ));
    } else {
        expression_compiles(text, at, causes);
    }
}

fn validation(v: &Value, here: &str, causes: &mut Vec<Cause>) {
    let at = |f: &str| format!("{here}.{f}");
    expression(&v["expression"], &at("expression"), causes);
    if let Some(m) = v["messageExpression"].as_str() {
        if m.trim().is_empty() {
            causes.push(Cause::invalid(
                at("messageExpression"),
                m,
                "must be non-empty if specified",
            ));
        } else {
            expression_compiles(m, &at("messageExpression"), causes);
        }
    }
    if let Some(m) = v["message"].as_str() {
        if !m.is_empty() && m.trim().is_empty() {
            let why = "message must be non-empty if specified";
            causes.push(Cause::invalid(at("message"), m, why));
        } else if m.trim().contains(['\n', '\r']) {
            causes.push(Cause::invalid(
                at("message"),
                m,
                "message must not contain line breaks",
            ));
        }
    }
    if let Some(r) = v["reason"].as_str() {
        if !REASONS.contains(&r) {
            causes.push(Cause::unsupported(at("reason"), r, REASONS));
        }
    }
}

/// `apiVersion` (`group/version` or a core version) and `kind`.
fn param_kind(kind: &Value, causes: &mut Vec<Cause>) {
    match kind["apiVersion"].as_str().unwrap_or_default() {
        "" => causes.push(Cause::required("spec.paramKind.apiVersion")),
        api_version => {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let at = "spec.paramKind.apiVersion";
            if group.contains('/') {
                let why = format!("unexpected GroupVersion string: {api_version}");
                causes.push(Cause::invalid(at, api_version, why));
            } else if !group.is_empty() && !is_dns_subdomain(group) {
                causes.push(Cause::invalid(at, group, super::SUBDOMAIN_MSG));
            } else if version.is_empty() {
                causes.push(Cause::invalid(at, api_version, "version must be specified"));
            } else if !is_dns1035_label(version) {
                causes.push(Cause::invalid(at, version, DNS1035_MSG));
            }
        }
    }
    match kind["kind"].as_str().unwrap_or_default() {
        "" => causes.push(Cause::required("spec.paramKind.kind")),
        k if !is_dns1035_label(&k.to_lowercase()) => {
            let why = format!("may have mixed case, but should otherwise match: {DNS1035_MSG}");
            causes.push(Cause::invalid("spec.paramKind.kind", k, why));
        }
        _ => {}
    }
}

/// What a policy or binding matches: rules, selectors, a match policy.
fn match_resources(m: &Value, here: &str, causes: &mut Vec<Cause>) {
    let at = |f: &str| format!("{here}.{f}");
    match m["matchPolicy"].as_str() {
        Some(p) if !MATCH_POLICIES.contains(&p) => {
            causes.push(Cause::unsupported(at("matchPolicy"), p, MATCH_POLICIES));
        }
        _ => {}
    }
    for key in ["namespaceSelector", "objectSelector"] {
        let sel = &m[key];
        if !sel.is_null() {
            if let Err(e) = LabelSelector::from_object(sel) {
                causes.push(Cause::invalid_value(at(key), sel, e.message));
            }
        }
    }
    for key in ["resourceRules", "excludeResourceRules"] {
        for (i, rule) in list(&m[key]).iter().enumerate() {
            named_rule(rule, &format!("{here}.{key}[{i}]"), causes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: Vec<Cause>) -> Vec<String> {
        causes
            .into_iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect()
    }

    fn good() -> Value {
        json!({
            "failurePolicy": "Fail",
            "matchConstraints": {"matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {},
                "resourceRules": [{"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"], "resources": ["deployments"]}]},
            "variables": [{"name": "replicas", "expression": "object.spec.replicas"}],
            "validations": [{"expression": "variables.replicas <= 5", "messageExpression": "'too many: ' + string(variables.replicas)", "reason": "Forbidden"}],
            "auditAnnotations": [{"key": "replicas", "valueExpression": "string(object.spec.replicas)"}],
        })
    }

    #[test]
    fn a_policy_matches_resources_and_its_expressions_compile() {
        let mut causes = Vec::new();
        policy("max-replicas", &good(), &mut causes);
        assert_eq!(fields(causes), Vec::<String>::new());
        let mut bad = good();
        bad["failurePolicy"] = json!("Maybe");
        bad["matchConstraints"]["resourceRules"] = json!([]);
        bad["variables"] =
            json!([{"name": "1st", "expression": "true"}, {"name": "x", "expression": " "}]);
        bad["validations"] =
            json!([{"expression": "object.x ===", "reason": "Teapot", "message": "a\nb"}]);
        bad["auditAnnotations"] =
            json!([{"key": "k", "valueExpression": "authorizer.requestResource.check('get') ==="}]);
        let mut causes = Vec::new();
        policy("max-replicas", &bad, &mut causes);
        let found = fields(causes);
        for field in [
            "spec.failurePolicy: Unsupported value",
            "spec.matchConstraints.resourceRules: Required value",
            "spec.variables[0].name: Invalid value",
            "spec.variables[1].expression: Required value: expression is not specified",
            "spec.validations[0].expression: Invalid value",
            "spec.validations[0].message: Invalid value",
            "spec.validations[0].reason: Unsupported value",
            "spec.auditAnnotations[0].valueExpression: Invalid value",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(field)),
                "{field} in {found:#?}"
            );
        }
        let mut empty = good();
        empty["validations"] = json!([]);
        empty["auditAnnotations"] = json!([]);
        let mut causes = Vec::new();
        policy("p", &empty, &mut causes);
        assert_eq!(
            fields(causes),
            [
                "spec.validations: Required value: validations or auditAnnotations must contain at least one item",
                "spec.auditAnnotations: Required value: validations or auditAnnotations must contain at least one item",
            ]
        );
    }

    #[test]
    fn a_binding_names_its_policy_actions_and_parameters() {
        let mut causes = Vec::new();
        binding(
            &json!({"policyName": "p", "validationActions": ["Deny", "Audit"],
                    "paramRef": {"name": "limits", "parameterNotFoundAction": "Allow"}}),
            &mut causes,
        );
        assert_eq!(fields(causes), Vec::<String>::new());
        let mut causes = Vec::new();
        binding(
            &json!({"validationActions": ["Deny", "Warn", "Deny", "Shout"],
                    "paramRef": {"name": "limits", "selector": {}}}),
            &mut causes,
        );
        let found = fields(causes);
        for field in [
            "spec.policyName: Required value",
            "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive",
            "spec.paramRef.parameterNotFoundAction: Required value",
            "spec.validationActions[2]: Duplicate value",
            "spec.validationActions[3]: Unsupported value",
            "spec.validationActions: Invalid value",
        ] {
            assert!(
                found.iter().any(|f| f.starts_with(field)),
                "{field} in {found:#?}"
            );
        }
        let mut causes = Vec::new();
        binding(
            &json!({"policyName": "p", "validationActions": []}),
            &mut causes,
        );
        assert_eq!(
            fields(causes),
            ["spec.validationActions: Required value: at least one validation action is required"]
        );
    }
}
