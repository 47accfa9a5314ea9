//! ResourceQuotas and LimitRanges, checked as upstream checks them: every
//! amount parses and is at least 0 (one that did not would bound
//! nothing), counts are whole, and a quota's scopes are ones it knows and
//! do not contradict each other.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::qualified_name_problem;
use super::resources::{container_resource, is_extended, quantity};
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
        for why in resource_name_problems(name) {
            causes.push(Cause::invalid(&field, name, why));
        }
        if !name.contains('/') && !standard_quota_resource(name) {
            let why = "must be a standard resource for quota";
            causes.push(Cause::invalid(&field, name, why));
        }
        let whole = COUNTS.contains(&name.as_str()) || is_extended(name);
        if quantity(amount, || field.clone(), causes).is_some_and(|m| whole && m % 1000 != 0) {
            let text = amount.as_str().unwrap_or_default();
            causes.push(Cause::invalid(&field, text, "must be an integer"));
        }
    }
    let hard: Vec<&str> = spec["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .collect();
    let listed: Vec<&str> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for scope in &listed {
        scope_for(scope, &hard, "spec.scopes", &spec["scopes"], causes);
    }
    conflicts(&listed, "spec.scopes", &spec["scopes"], causes);
    let selector = &spec["scopeSelector"];
    let expressions = selector["matchExpressions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let at = "spec.scopeSelector.matchExpressions";
    let mut selected = Vec::new();
    for e in expressions {
        let scope = e["scopeName"].as_str().unwrap_or_default();
        scope_for(scope, &hard, at, selector, causes);
        selected.push(scope);
        let operator = e["operator"].as_str().unwrap_or_default();
        if scope != "PriorityClass" && SCOPES.contains(&scope) && operator != "Exists" {
            causes.push(Cause::invalid(
                format!("{at}.operator"),
                operator,
                "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
            ));
        }
        let values = e["values"].as_array().map_or(0, Vec::len);
        match operator {
            "In" | "NotIn" if values == 0 => causes.push(Cause::required_because(
                format!("{at}.values"),
                "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
            )),
            "Exists" | "DoesNotExist" if values != 0 => causes.push(Cause::invalid_value(
                format!("{at}.values"),
                &e["values"],
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(Cause::invalid(
                format!("{at}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
    }
    conflicts(&selected, at, &spec["scopes"], causes);
}

/// Resources a quota with `scope` may track, where upstream knows the
/// resource (`IsResourceQuotaScopeValidForResource`): pods, and their
/// compute resources except under `BestEffort`.
fn scope_for(scope: &str, hard: &[&str], at: &str, shown: &Value, causes: &mut Vec<Cause>) {
    if !SCOPES.contains(&scope) {
        causes.push(Cause::invalid_value(at, shown, "unsupported scope"));
        return;
    }
    let compute = [
        "cpu",
        "memory",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ];
    let allowed = |r: &str| r == "pods" || (scope != "BestEffort" && compute.contains(&r));
    for r in hard {
        if standard_quota_resource(r) && !allowed(r) {
            causes.push(Cause::invalid_value(
                at,
                shown,
                "unsupported scope applied to resource",
            ));
        }
    }
}

/// The quota resources upstream names (`IsStandardQuotaResourceName`).
fn standard_quota_resource(r: &str) -> bool {
    COUNTS.contains(&r)
        || r.starts_with("hugepages-")
        || r.starts_with("requests.hugepages-")
        || matches!(
            r,
            "cpu"
                | "memory"
                | "ephemeral-storage"
                | "requests.cpu"
                | "requests.memory"
                | "requests.storage"
                | "requests.ephemeral-storage"
                | "limits.cpu"
                | "limits.memory"
                | "limits.ephemeral-storage"
        )
}

/// Why `name` names no resource: one upstream knows, or a qualified name
/// (`count/deployments.apps`, `example.com/gpu`).
fn resource_name_problems(name: &str) -> Vec<String> {
    if let Some(why) = qualified_name_problem(name) {
        return vec![why];
    }
    if name.contains('/') || standard_quota_resource(name) || name == "storage" {
        return Vec::new();
    }
    vec!["must be a standard resource type or fully qualified".into()]
}

/// Scopes no pod can be in at once.
fn conflicts(scopes: &[&str], at: &str, shown: &Value, causes: &mut Vec<Cause>) {
    for (a, b) in [
        ("BestEffort", "NotBestEffort"),
        ("Terminating", "NotTerminating"),
    ] {
        if scopes.contains(&a) && scopes.contains(&b) {
            causes.push(Cause::invalid_value(at, shown, "conflicting scopes"));
        }
    }
}

pub(super) fn limit_range(spec: &Value, causes: &mut Vec<Cause>) {
    let mut types = Vec::new();
    for (i, limit) in spec["limits"].as_array().into_iter().flatten().enumerate() {
        let at = format!("spec.limits[{i}]");
        let kind = limit["type"].as_str().unwrap_or_default();
        if types.contains(&kind) {
            causes.push(Cause::duplicate(format!("{at}.type"), format!("{kind:?}")));
        }
        types.push(kind);
        let standard = matches!(kind, "Pod" | "Container" | "PersistentVolumeClaim");
        if let Some(why) = qualified_name_problem(kind) {
            causes.push(Cause::invalid(format!("{at}.type"), kind, why));
        } else if !standard && !kind.contains('/') {
            let why = "must be a standard limit type or fully qualified";
            causes.push(Cause::invalid(format!("{at}.type"), kind, why));
        }
        // Each bound's amounts that parsed, by resource.
        let mut parsed: BTreeMap<&str, BTreeMap<&str, (i128, &str)>> = BTreeMap::new();
        for bound in BOUNDS {
            for (name, amount) in limit[bound].as_object().into_iter().flatten() {
                let field = format!("{at}.{bound}[{name}]");
                if matches!(kind, "Pod" | "Container") {
                    if !container_resource(name) {
                        let why = "must be a standard resource for containers";
                        causes.push(Cause::invalid(&field, name, why));
                    }
                } else {
                    for why in resource_name_problems(name) {
                        causes.push(Cause::invalid(&field, name, why));
                    }
                }
                if let Some(m) = quantity(amount, || field.clone(), causes) {
                    let text = amount.as_str().unwrap_or_default();
                    parsed.entry(bound).or_default().insert(name, (m, text));
                }
            }
        }
        if kind == "Pod" {
            for bound in ["default", "defaultRequest"] {
                if limit[bound].as_object().is_some_and(|m| !m.is_empty()) {
                    let why = "may not be specified when `type` is 'Pod'";
                    causes.push(Cause::forbidden(format!("{at}.{bound}"), why));
                }
            }
        }
        ordered(&at, &parsed, causes);
    }
}

const BOUNDS: [&str; 5] = [
    "max",
    "min",
    "default",
    "defaultRequest",
    "maxLimitRequestRatio",
];

/// The order of a limit's bounds, as upstream checks and words it: the
/// lower bound, the upper one, the field an error names, whether it shows
/// the lower value, and the upper bound's words.
const ORDER: [(&str, &str, &str, bool, &str); 6] = [
    ("min", "max", "min", true, "max"),
    (
        "min",
        "defaultRequest",
        "defaultRequest",
        false,
        "default request",
    ),
    ("defaultRequest", "max", "defaultRequest", true, "max"),
    (
        "defaultRequest",
        "default",
        "defaultRequest",
        true,
        "default limit",
    ),
    ("min", "default", "default", true, "default"),
    ("default", "max", "default", false, "max"),
];

/// A limit's bounds in order, resource by resource: min ≤ default request
/// ≤ default ≤ max, and a ratio of at least 1.
fn ordered(
    at: &str,
    parsed: &BTreeMap<&str, BTreeMap<&str, (i128, &str)>>,
    causes: &mut Vec<Cause>,
) {
    let get = |bound: &str, name: &str| parsed.get(bound).and_then(|b| b.get(name)).copied();
    let names: BTreeSet<&str> = parsed.values().flat_map(|b| b.keys().copied()).collect();
    for name in names {
        for (low, high, field, shows_low, high_words) in ORDER {
            let (Some(l), Some(h)) = (get(low, name), get(high, name)) else {
                continue;
            };
            if l.0 > h.0 {
                let low_words = match low {
                    "defaultRequest" => "default request",
                    other => other,
                };
                let value = if shows_low { l.1 } else { h.1 };
                causes.push(Cause::invalid(
                    format!("{at}.{field}[{name}]"),
                    value,
                    format!(
                        "{low_words} value {} is greater than {high_words} value {}",
                        l.1, h.1
                    ),
                ));
            }
        }
        if let Some((_, text)) = get("maxLimitRequestRatio", name).filter(|r| r.0 < 1000) {
            causes.push(Cause::invalid(
                format!("{at}.maxLimitRequestRatio[{name}]"),
                text,
                format!("ratio {text} is less than 1"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::fields_of;

    fn fields(plural: &str, spec: Value) -> Vec<String> {
        let obj = json!({"metadata": {"name": "x"}, "spec": spec});
        fields_of("", plural, &obj, None)
    }

    #[test]
    fn amounts_that_bound_nothing_are_refused() {
        for good in [
            json!({"hard": {"pods": "10"}, "scopes": ["BestEffort"]}),
            json!({"hard": {"pods": "10", "requests.cpu": "1500m"}, "scopes": ["NotBestEffort"]}),
            json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}}),
        ] {
            assert_eq!(fields("resourcequotas", good), Vec::<String>::new());
        }
        // A BestEffort quota tracks pods only; selector expressions as upstream's.
        let scoped = json!({"hard": {"requests.cpu": "1"}, "scopes": ["BestEffort"]});
        assert_eq!(fields("resourcequotas", scoped), ["spec.scopes"]);
        let selected = json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "Terminating", "operator": "In", "values": ["x"]},
            {"scopeName": "PriorityClass", "operator": "NotIn"}]}});
        assert_eq!(
            fields("resourcequotas", selected),
            [
                "spec.scopeSelector.matchExpressions.operator",
                "spec.scopeSelector.matchExpressions.values",
            ]
        );
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
        let disordered = json!({"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"},
                "default": {"memory": "1Gi"}, "defaultRequest": {"memory": "2Gi"},
                "maxLimitRequestRatio": {"cpu": "500m"}},
            {"type": "Pod", "default": {"cpu": "1"}},
            {"type": "Pod"}]});
        assert_eq!(
            fields("limitranges", disordered),
            [
                "spec.limits[0].min[cpu]",
                "spec.limits[0].maxLimitRequestRatio[cpu]",
                "spec.limits[0].defaultRequest[memory]",
                "spec.limits[1].default",
                "spec.limits[2].type",
            ]
        );
    }

    #[test]
    fn resources_are_ones_a_quota_or_range_knows() {
        let good = json!({"hard": {"requests.storage": "1Ti", "count/deployments.apps": "3",
            "requests.example.com/gpu": "4", "hugepages-2Mi": "1Gi"}});
        assert_eq!(fields("resourcequotas", good), Vec::<String>::new());
        let causes = crate::validate::causes_of(
            "",
            "resourcequotas",
            &json!({"metadata": {"name": "q"}, "spec": {"hard": {"gpus": "1", "storage": "1Gi",
                "example.com/gpu": "1500m", "-bad/x": "1"}}}),
            None,
        );
        let mut said: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        said.sort();
        assert_eq!(
            said,
            [
                "spec.hard[-bad/x]: Invalid value: \"-bad/x\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
                "spec.hard[example.com/gpu]: Invalid value: \"1500m\": must be an integer",
                "spec.hard[gpus]: Invalid value: \"gpus\": must be a standard resource for quota",
                "spec.hard[gpus]: Invalid value: \"gpus\": must be a standard resource type or fully qualified",
                "spec.hard[storage]: Invalid value: \"storage\": must be a standard resource for quota",
            ]
        );
        let range = json!({"limits": [
            {"type": "Container", "max": {"pods": "1"}},
            {"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}},
            {"type": "Node"}]});
        assert_eq!(
            fields("limitranges", range),
            ["spec.limits[0].max[pods]", "spec.limits[2].type"]
        );
    }
}
