//! RuntimeClasses and the pod fields they set, checked as upstream checks
//! them: a class's handler names a runtime on the node (a DNS label, kept
//! for the class's life); an overhead holds quantities of container
//! resources.

use serde_json::Value;

use super::{
    is_dns_label, is_dns_subdomain, is_label_value, qualified_name_problem, resources, tolerations,
    At, LABEL_MSG, LABEL_VALUE_MSG, SUBDOMAIN_MSG,
};
use crate::status::Cause;

/// A RuntimeClass.
pub(super) fn class(obj: &Value, causes: &mut Vec<Cause>) {
    let handler = obj["handler"].as_str().unwrap_or_default();
    if !is_dns_label(handler) {
        causes.push(Cause::invalid("handler", handler, LABEL_MSG));
    }
    let fixed = &obj["overhead"]["podFixed"];
    resources::amounts(fixed, At::Root("overhead.podFixed"), causes);
    let scheduling = &obj["scheduling"];
    let at = At::Root("scheduling.nodeSelector");
    for (k, v) in scheduling["nodeSelector"].as_object().into_iter().flatten() {
        if let Some(why) = qualified_name_problem(k) {
            causes.push(Cause::invalid(at.to_string(), k, why));
        }
        let v = v.as_str().unwrap_or_default();
        if !is_label_value(v) {
            causes.push(Cause::invalid(at.to_string(), v, LABEL_VALUE_MSG));
        }
    }
    tolerations::check(scheduling, At::Root("scheduling"), causes);
}

/// The class a pod names, and the overhead its admission set.
pub(super) fn pod(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    if let Some(name) = spec["runtimeClassName"].as_str() {
        if !is_dns_subdomain(name) {
            let field = at.field("runtimeClassName").to_string();
            causes.push(Cause::invalid(field, name, SUBDOMAIN_MSG));
        }
    }
    resources::amounts(&spec["overhead"], at.field("overhead"), causes);
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::{causes_of, fields_of};

    #[test]
    fn a_class_has_a_label_for_handler_and_container_resources_for_overhead() {
        let class = |handler: &str, overhead: Value, scheduling: Value| {
            json!({"metadata": {"name": "sandboxed"}, "handler": handler,
                "overhead": {"podFixed": overhead}, "scheduling": scheduling})
        };
        let good = class(
            "runc",
            json!({"cpu": "250m", "example.com/dongle": "1"}),
            json!({"nodeSelector": {"sandbox": "yes"}, "tolerations": [{"operator": "Exists"}]}),
        );
        let fields = |obj: &Value, old| fields_of("node.k8s.io", "runtimeclasses", obj, old);
        assert_eq!(fields(&good, None), Vec::<String>::new());
        let bad = class(
            "Run_C",
            json!({"cpu": "-1", "pods": "1", "memory": "lots"}),
            json!({"nodeSelector": {"a b": "yes"}, "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
        );
        assert_eq!(
            fields(&bad, None),
            [
                "handler",
                "overhead.podFixed[cpu]",
                "overhead.podFixed[pods]",
                "overhead.podFixed[memory]",
                "scheduling.nodeSelector",
                "scheduling.tolerations[0].operator",
            ]
        );
        // The handler is the class's for life; the rest may change.
        let changed = class("kata", json!({"cpu": "1"}), json!({}));
        assert_eq!(fields(&changed, Some(&good)), ["handler"]);
        let moved = class("runc", json!({"cpu": "1"}), json!({}));
        assert_eq!(fields(&moved, Some(&good)), Vec::<String>::new());
    }

    #[test]
    fn a_pod_names_its_class_and_tolerates_as_upstream_checks() {
        let pod = |spec: Value| {
            let mut spec = spec;
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
            json!({"metadata": {"name": "p"}, "spec": spec})
        };
        let good = pod(
            json!({"runtimeClassName": "sandboxed", "overhead": {"cpu": "250m"},
            "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 5}]}),
        );
        assert_eq!(causes_of("", "pods", &good, None), vec![]);
        let bad = pod(
            json!({"runtimeClassName": "Sand/Boxed", "overhead": {"cpu": "x"},
            "tolerations": [
                {"operator": "Equal", "value": "v"},
                {"key": "k", "operator": "Maybe"},
                {"key": "k", "effect": "NoSchedule", "tolerationSeconds": 5},
                {"key": "k", "effect": "Sometimes"}]}),
        );
        let got = causes_of("", "pods", &bad, None);
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.runtimeClassName",
                "spec.overhead[cpu]",
                "spec.tolerations[0].operator",
                "spec.tolerations[1].operator",
                "spec.tolerations[2].effect",
                "spec.tolerations[3].effect",
            ]
        );
        assert!(
            got[2]
                .1
                .contains("operator must be Exists when `key` is empty"),
            "{got:?}"
        );
        assert!(
            got[3].1.starts_with("Unsupported value: \"Maybe\""),
            "{got:?}"
        );
        // The class and the overhead are the pod's for life.
        let other = pod(
            json!({"runtimeClassName": "other", "overhead": {"cpu": "250m"},
            "tolerations": [{"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute", "tolerationSeconds": 5}]}),
        );
        assert_eq!(
            fields_of("", "pods", &other, Some(&good)),
            ["spec.runtimeClassName"]
        );
    }
}
