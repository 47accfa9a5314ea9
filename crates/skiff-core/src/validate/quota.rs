//! ResourceQuotas and LimitRanges, checked as upstream checks them: every
//! amount parses and is at least 0 (one that did not would bound
//! nothing), counts are whole, and a quota's scopes are ones it knows and
//! do not contradict each other.

use serde_json::Value;

use super::resources::quantity;
use crate::status::Cause;

/// Quota resources that count objects, so whole numbers.
const COUNTS: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
];

const SCOPES: &[&str] = &[
    "BestEffort",
    "CrossNamespacePodAffinity",
    "NotBestEffort",
    "NotTerminating",
    "PriorityClass",
    "Terminating",
];

pub(super) fn resource_quota(spec: &Value, causes: &mut Vec<Cause>) {
    for (name, amount) in spec["hard"].as_object().into_iter().flatten() {
        let field = format!("spec.hard[{name}]");
        let whole = COUNTS.contains(&name.as_str());
        if quantity(amount, &field, causes).is_some_and(|m| whole && m % 1000 != 0) {
            let text = amount.as_str().unwrap_or_default();
            causes.push(Cause::invalid(&field, text, "must be an integer"));
        }
    }
    let listed = spec["scopes"].as_array().into_iter().flatten();
    let selected = spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["scopeName"]);
    let scopes: Vec<&str> = listed.chain(selected).filter_map(Value::as_str).collect();
    for scope in &scopes {
        if !SCOPES.contains(scope) {
            causes.push(Cause::unsupported("spec.scopes", scope, SCOPES));
        }
    }
    for (a, b) in [
        ("Terminating", "NotTerminating"),
        ("BestEffort", "NotBestEffort"),
    ] {
        if scopes.contains(&a) && scopes.contains(&b) {
            causes.push(Cause::invalid_value(
                "spec.scopes",
                &spec["scopes"],
                format!("conflicting scopes: {a}, {b}"),
            ));
        }
    }
    for (i, e) in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let operator = e["operator"].as_str().unwrap_or_default();
        let field = format!("spec.scopeSelector.matchExpressions[{i}].operator");
        if !matches!(operator, "In" | "NotIn" | "Exists" | "DoesNotExist") {
            causes.push(Cause::unsupported(
                field,
                operator,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            ));
        }
    }
}

pub(super) fn limit_range(spec: &Value, causes: &mut Vec<Cause>) {
    for (i, limit) in spec["limits"].as_array().into_iter().flatten().enumerate() {
        for bound in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            for (name, amount) in limit[bound].as_object().into_iter().flatten() {
                let field = format!("spec.limits[{i}].{bound}[{name}]");
                quantity(amount, &field, causes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::registry::lookup;
    use crate::validate::object;

    fn fields(plural: &str, spec: Value) -> Vec<String> {
        let r = lookup("", "v1", plural).unwrap();
        let obj = json!({"metadata": {"name": "x"}, "spec": spec});
        let Err(err) = object(r, &obj, None) else {
            return Vec::new();
        };
        let causes = err.details.unwrap()["causes"].as_array().unwrap().clone();
        causes
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn amounts_that_bound_nothing_are_refused() {
        let good =
            json!({"hard": {"pods": "10", "requests.cpu": "1500m"}, "scopes": ["BestEffort"]});
        assert_eq!(fields("resourcequotas", good), Vec::<String>::new());
        let bad = json!({"hard": {"pods": "1500m", "requests.cpu": "lots", "requests.memory": "-1"},
            "scopes": ["Terminating", "NotTerminating", "Sometimes"]});
        assert_eq!(
            fields("resourcequotas", bad),
            [
                "spec.hard[pods]",
                "spec.hard[requests.cpu]",
                "spec.hard[requests.memory]",
                "spec.scopes",
                "spec.scopes",
            ]
        );
        let range = json!({"limits": [{"type": "Container", "max": {"memory": "big"}, "default": {"cpu": "-1"}}]});
        assert_eq!(
            fields("limitranges", range),
            ["spec.limits[0].max[memory]", "spec.limits[0].default[cpu]"]
        );
    }
}
