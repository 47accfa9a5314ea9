//! HorizontalPodAutoscalers, checked as upstream checks them (in their
//! `autoscaling/v2` form, which a v1 object is converted to first): the
//! replica bounds hold, the target names an object, each metric has the
//! one source its type says with a target of the right kind, and the
//! scaling rules stay within upstream's windows.

use serde_json::Value;

use super::path_segment_problems;
use super::resources::{container_resource, QUANTITY_MSG};
use super::{is_dns_label, LABEL_MSG};
use crate::quantity::parse_milli;
use crate::status::Cause;

const MAX_PERIOD_SECONDS: i64 = 1800;
const MAX_STABILIZATION_WINDOW_SECONDS: i64 = 3600;

/// The spec of a v2 autoscaler; `old` is the stored one on update (one
/// already scaled to zero may stay so).
pub(super) fn spec(spec: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let min = spec["minReplicas"].as_i64();
    let kept_zero = old.is_some_and(|o| o["minReplicas"].as_i64() == Some(0));
    let lowest = if kept_zero { 0 } else { 1 };
    if let Some(min) = min.filter(|m| *m < lowest) {
        causes.push(Cause::invalid_value(
            "spec.minReplicas",
            &min.into(),
            format!("must be greater than or equal to {lowest}"),
        ));
    }
    let max = spec["maxReplicas"].as_i64().unwrap_or(0);
    if max < 1 {
        causes.push(Cause::invalid_value(
            "spec.maxReplicas",
            &max.into(),
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|min| max < min) {
        causes.push(Cause::invalid_value(
            "spec.maxReplicas",
            &max.into(),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    object_ref(&spec["scaleTargetRef"], "spec.scaleTargetRef", causes);
    let metrics = spec["metrics"].as_array().map_or(&[][..], Vec::as_slice);
    for (i, m) in metrics.iter().enumerate() {
        metric(m, &format!("spec.metrics[{i}]"), causes);
    }
    let outside = |m: &&Value| m["type"] == "Object" || m["type"] == "External";
    if min == Some(0) && !metrics.iter().any(|m| outside(&m)) {
        causes.push(Cause::forbidden(
            "spec.metrics",
            "must specify at least one Object or External metric to support scaling to zero replicas",
        ));
    }
    for side in ["scaleUp", "scaleDown"] {
        let rules = &spec["behavior"][side];
        if !rules.is_null() {
            scaling_rules(rules, &format!("spec.behavior.{side}"), causes);
        }
    }
}

/// A `CrossVersionObjectReference`: a kind and a name, each fit for a
/// URL path.
fn object_ref(r: &Value, at: &str, causes: &mut Vec<Cause>) {
    for field in ["kind", "name"] {
        match r[field].as_str().unwrap_or_default() {
            "" => causes.push(Cause::required(format!("{at}.{field}"))),
            value => {
                for why in path_segment_problems(value) {
                    causes.push(Cause::invalid(format!("{at}.{field}"), value, why));
                }
            }
        }
    }
}

const SOURCE_TYPES: [&str; 5] = [
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

/// The field holding the source of a metric of type `t`.
fn source_field(t: &str) -> Option<&'static str> {
    Some(match t {
        "Object" => "object",
        "Pods" => "pods",
        "Resource" => "resource",
        "External" => "external",
        "ContainerResource" => "containerResource",
        _ => return None,
    })
}

fn metric(m: &Value, at: &str, causes: &mut Vec<Cause>) {
    let t = m["type"].as_str().unwrap_or_default();
    if t.is_empty() {
        causes.push(Cause::required_because(
            format!("{at}.type"),
            "must specify a metric source type",
        ));
    }
    let present: Vec<&str> = [
        "object",
        "external",
        "pods",
        "resource",
        "containerResource",
    ]
    .into_iter()
    .filter(|f| !m[*f].is_null())
    .collect();
    // As upstream, only the first source given is looked into.
    if let Some(first) = present.first() {
        let source = &m[*first];
        let here = format!("{at}.{first}");
        match *first {
            "object" => object_source(source, &here, causes),
            "external" => external_source(source, &here, causes),
            "pods" => pods_source(source, &here, causes),
            "resource" => resource_source(source, &here, false, causes),
            _ => resource_source(source, &here, true, causes),
        }
    }
    let expected = source_field(t);
    match expected {
        Some(field) if m[field].is_null() => causes.push(Cause::required_because(
            format!("{at}.{field}"),
            "must populate information for the given metric source",
        )),
        Some(_) => {}
        None => causes.push(Cause::unsupported(format!("{at}.type"), t, &SOURCE_TYPES)),
    }
    if present.len() != 1 {
        for other in present.iter().filter(|f| Some(**f) != expected) {
            causes.push(Cause::forbidden(
                format!("{at}.{other}"),
                "must populate the given metric source only",
            ));
        }
    }
}

fn object_source(s: &Value, at: &str, causes: &mut Vec<Cause>) {
    object_ref(
        &s["describedObject"],
        &format!("{at}.describedObject"),
        causes,
    );
    metric_name(&s["metric"], at, causes);
    let target = &s["target"];
    metric_target(target, at, causes);
    if target["value"].is_null() && target["averageValue"].is_null() {
        causes.push(Cause::required_because(
            format!("{at}.target.averageValue"),
            "must set either a target value or averageValue",
        ));
    }
}

fn external_source(s: &Value, at: &str, causes: &mut Vec<Cause>) {
    metric_name(&s["metric"], at, causes);
    let target = &s["target"];
    metric_target(target, at, causes);
    match (target["value"].is_null(), target["averageValue"].is_null()) {
        (true, true) => causes.push(Cause::required_because(
            format!("{at}.target.averageValue"),
            "must set either a target value for metric or a per-pod target",
        )),
        (false, false) => causes.push(Cause::forbidden(
            format!("{at}.target.value"),
            "may not set both a target value for metric and a per-pod target",
        )),
        _ => {}
    }
}

fn pods_source(s: &Value, at: &str, causes: &mut Vec<Cause>) {
    metric_name(&s["metric"], at, causes);
    let target = &s["target"];
    metric_target(target, at, causes);
    if target["averageValue"].is_null() {
        causes.push(Cause::required_because(
            format!("{at}.target.averageValue"),
            "must specify a positive target averageValue",
        ));
    }
}

/// A Resource or (`in_container`) ContainerResource source.
fn resource_source(s: &Value, at: &str, in_container: bool, causes: &mut Vec<Cause>) {
    let name = s["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(Cause::required_because(
            format!("{at}.name"),
            "must specify a resource name",
        ));
    } else if in_container && !container_resource(name) {
        let why = "must be a standard resource for containers";
        causes.push(Cause::invalid(format!("{at}.name"), name, why));
    }
    if in_container {
        match s["container"].as_str().unwrap_or_default() {
            "" => causes.push(Cause::required_because(
                format!("{at}.container"),
                "must specify a container",
            )),
            c if !is_dns_label(c) => {
                causes.push(Cause::invalid(format!("{at}.container"), c, LABEL_MSG));
            }
            _ => {}
        }
    }
    let target = &s["target"];
    metric_target(target, at, causes);
    match (
        target["averageUtilization"].is_null(),
        target["averageValue"].is_null(),
    ) {
        (true, true) => causes.push(Cause::required_because(
            format!("{at}.target.averageUtilization"),
            "must set either a target raw value or a target utilization",
        )),
        (false, false) => causes.push(Cause::forbidden(
            format!("{at}.target.averageValue"),
            "may not set both a target raw value and a target utilization",
        )),
        _ => {}
    }
}

fn metric_name(id: &Value, at: &str, causes: &mut Vec<Cause>) {
    let field = format!("{at}.metric.name");
    match id["name"].as_str().unwrap_or_default() {
        "" => causes.push(Cause::required_because(field, "must specify a metric name")),
        name => {
            for why in path_segment_problems(name) {
                causes.push(Cause::invalid(&field, name, why));
            }
        }
    }
}

/// The `target` of the source at `at`.
fn metric_target(t: &Value, at: &str, causes: &mut Vec<Cause>) {
    let at = format!("{at}.target");
    let kind = t["type"].as_str().unwrap_or_default();
    if kind.is_empty() {
        causes.push(Cause::required_because(
            format!("{at}.type"),
            "must specify a metric target type",
        ));
    }
    if !matches!(kind, "Utilization" | "Value" | "AverageValue") {
        causes.push(Cause::invalid(
            format!("{at}.type"),
            kind,
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for field in ["value", "averageValue"] {
        let Some(text) = t[field].as_str() else {
            continue;
        };
        let why = match parse_milli(text) {
            None => QUANTITY_MSG,
            Some(m) if m <= 0 => "must be positive",
            Some(_) => continue,
        };
        causes.push(Cause::invalid(format!("{at}.{field}"), text, why));
    }
    if let Some(u) = t["averageUtilization"].as_i64().filter(|u| *u < 1) {
        causes.push(Cause::invalid_value(
            format!("{at}.averageUtilization"),
            &u.into(),
            "must be greater than 0",
        ));
    }
}

const SELECT_POLICIES: [&str; 3] = ["Disabled", "Max", "Min"];
const POLICY_TYPES: [&str; 2] = ["Percent", "Pods"];

fn scaling_rules(rules: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(w) = rules["stabilizationWindowSeconds"].as_i64() {
        let why = if w < 0 {
            Some("must be greater than or equal to zero".to_owned())
        } else if w > MAX_STABILIZATION_WINDOW_SECONDS {
            Some(format!(
                "must be less than or equal to {MAX_STABILIZATION_WINDOW_SECONDS}"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let field = format!("{at}.stabilizationWindowSeconds");
            causes.push(Cause::invalid_value(field, &w.into(), why));
        }
    }
    if let Some(p) = rules["selectPolicy"].as_str() {
        if !SELECT_POLICIES.contains(&p) {
            causes.push(Cause::unsupported(
                format!("{at}.selectPolicy"),
                p,
                &SELECT_POLICIES,
            ));
        }
    }
    let policies = rules["policies"].as_array().map_or(&[][..], Vec::as_slice);
    if policies.is_empty() {
        causes.push(Cause::required_because(
            format!("{at}.policies"),
            "must specify at least one Policy",
        ));
    }
    for (i, p) in policies.iter().enumerate() {
        let here = format!("{at}.policies[{i}]");
        let t = p["type"].as_str().unwrap_or_default();
        if !POLICY_TYPES.contains(&t) {
            causes.push(Cause::unsupported(format!("{here}.type"), t, &POLICY_TYPES));
        }
        let value = p["value"].as_i64().unwrap_or(0);
        if value <= 0 {
            let field = format!("{here}.value");
            causes.push(Cause::invalid_value(
                field,
                &value.into(),
                "must be greater than zero",
            ));
        }
        let period = p["periodSeconds"].as_i64().unwrap_or(0);
        let why = if period <= 0 {
            Some("must be greater than zero".to_owned())
        } else if period > MAX_PERIOD_SECONDS {
            Some(format!(
                "must be less than or equal to {MAX_PERIOD_SECONDS}"
            ))
        } else {
            None
        };
        if let Some(why) = why {
            let field = format!("{here}.periodSeconds");
            causes.push(Cause::invalid_value(field, &period.into(), why));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::{causes_of, fields_of};

    fn hpa(spec: Value) -> Value {
        json!({"metadata": {"name": "h", "namespace": "d"}, "spec": spec})
    }

    fn fields(spec: Value) -> Vec<String> {
        fields_of("autoscaling", "horizontalpodautoscalers", &hpa(spec), None)
    }

    fn target() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"})
    }

    fn cpu(target: Value) -> Value {
        json!({"type": "Resource", "resource": {"name": "cpu", "target": target}})
    }

    #[test]
    fn replica_bounds_and_target_hold() {
        let ok = json!({"scaleTargetRef": target(), "minReplicas": 1, "maxReplicas": 5});
        assert!(fields(ok).is_empty());
        let causes = causes_of(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa(
                json!({"scaleTargetRef": {"kind": "Deployment"}, "minReplicas": 7, "maxReplicas": 5}),
            ),
            None,
        );
        assert_eq!(
            causes,
            [
                (
                    "spec.maxReplicas".to_owned(),
                    "Invalid value: 5: must be greater than or equal to `minReplicas`".to_owned()
                ),
                (
                    "spec.scaleTargetRef.name".to_owned(),
                    "Required value".to_owned()
                ),
            ]
        );
        let zero = json!({"scaleTargetRef": target(), "minReplicas": 0, "maxReplicas": 0});
        assert_eq!(
            fields(zero.clone()),
            ["spec.minReplicas", "spec.maxReplicas", "spec.metrics"]
        );
        // One stored at zero (from before) may stay there, with a metric
        // from outside the pods to wake it.
        let old = hpa(zero.clone());
        let mut at_zero = zero;
        at_zero["maxReplicas"] = json!(3);
        let got = fields_of(
            "autoscaling",
            "horizontalpodautoscalers",
            &hpa(at_zero),
            Some(&old),
        );
        assert_eq!(got, ["spec.metrics"]);
    }

    #[test]
    fn a_v1_autoscaler_is_checked_in_its_v2_form() {
        let v1 = |percent: i64| {
            json!({"apiVersion": "autoscaling/v1", "metadata": {"name": "h", "namespace": "d"},
                "spec": {"scaleTargetRef": target(), "maxReplicas": 3, "targetCPUUtilizationPercentage": percent}})
        };
        let r = crate::registry::all()
            .into_iter()
            .find(|r| r.plural == "horizontalpodautoscalers" && r.version == "v1")
            .unwrap();
        assert!(crate::validate::object(r, &v1(50), None).is_ok());
        let err = crate::validate::object(r, &v1(0), None).unwrap_err();
        let said = err.details.unwrap().to_string();
        assert!(
            said.contains("spec.metrics[0].resource.target.averageUtilization"),
            "{said}"
        );
    }

    #[test]
    fn each_metric_has_its_one_source_and_a_fitting_target() {
        let with = |metrics: Value| {
            fields(json!({"scaleTargetRef": target(), "maxReplicas": 3, "metrics": metrics}))
        };
        let good = json!([
            cpu(json!({"type": "Utilization", "averageUtilization": 70})),
            {"type": "Pods", "pods": {"metric": {"name": "rps"},
                "target": {"type": "AverageValue", "averageValue": "10"}}},
            {"type": "ContainerResource", "containerResource": {"name": "memory", "container": "app",
                "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
            {"type": "External", "external": {"metric": {"name": "queue"},
                "target": {"type": "Value", "value": "30"}}},
        ]);
        assert_eq!(with(good), Vec::<String>::new());
        assert_eq!(
            with(json!([cpu(
                json!({"type": "Utilization", "averageUtilization": 0})
            )])),
            ["spec.metrics[0].resource.target.averageUtilization"]
        );
        assert_eq!(
            with(json!([cpu(json!({"type": "Utilization"}))])),
            ["spec.metrics[0].resource.target.averageUtilization"]
        );
        assert_eq!(
            with(json!([cpu(
                json!({"type": "Sometimes", "averageValue": "-1"})
            )])),
            [
                "spec.metrics[0].resource.target.type",
                "spec.metrics[0].resource.target.averageValue"
            ]
        );
        let mut two = cpu(json!({"type": "Utilization", "averageUtilization": 50}));
        two["pods"] = json!({"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "1"}});
        assert_eq!(with(json!([two])), ["spec.metrics[0].pods"]);
        assert_eq!(
            with(json!([{"type": "Pods", "resource": {"name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 50}}}])),
            ["spec.metrics[0].pods"]
        );
        assert_eq!(with(json!([{"type": "Weather"}])), ["spec.metrics[0].type"]);
        assert_eq!(
            with(
                json!([{"type": "Object", "object": {"describedObject": {"kind": "Service"},
                "metric": {"name": "a/b"}, "target": {"type": "Value"}}}])
            ),
            [
                "spec.metrics[0].object.describedObject.name",
                "spec.metrics[0].object.metric.name",
                "spec.metrics[0].object.target.averageValue"
            ]
        );
    }

    #[test]
    fn scaling_rules_stay_in_upstreams_windows() {
        let with = |behavior: Value| {
            fields(json!({"scaleTargetRef": target(), "maxReplicas": 3, "behavior": behavior}))
        };
        let policy = json!({"type": "Pods", "value": 1, "periodSeconds": 60});
        assert_eq!(
            with(
                json!({"scaleUp": {"policies": [policy], "stabilizationWindowSeconds": 3600, "selectPolicy": "Min"}})
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            with(
                json!({"scaleDown": {"stabilizationWindowSeconds": 3601, "selectPolicy": "Most"}})
            ),
            [
                "spec.behavior.scaleDown.stabilizationWindowSeconds",
                "spec.behavior.scaleDown.selectPolicy",
                "spec.behavior.scaleDown.policies"
            ]
        );
        assert_eq!(
            with(
                json!({"scaleUp": {"policies": [{"type": "Nodes", "value": 0, "periodSeconds": 1801}]}})
            ),
            [
                "spec.behavior.scaleUp.policies[0].type",
                "spec.behavior.scaleUp.policies[0].value",
                "spec.behavior.scaleUp.policies[0].periodSeconds"
            ]
        );
    }
}
