//! HorizontalPodAutoscalers at both served versions: defaults as
//! upstream's, and conversion between `autoscaling/v1` and the stored
//! `autoscaling/v2`. What v1 cannot say (metrics other than CPU
//! utilization, behavior, conditions) rides in annotations, as upstream
//! keeps it, so that a v1 round trip loses nothing.

use serde_json::{json, Map, Value};

/// v2 metrics other than the CPU utilization target, in a v1 object.
const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// v2 current metrics other than CPU utilization, in a v1 object.
const CURRENT_METRICS: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";

/// The default target: 80 % of the pods' CPU requests.
fn cpu_target(percent: i64) -> Value {
    json!({"type": "Resource", "resource": {"name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": percent}}})
}

/// Fills upstream's defaults into an autoscaler of `version`.
pub fn default(version: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("minReplicas").or_insert(json!(1));
    if version != "v2" {
        return;
    }
    let no_metrics = spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    if no_metrics {
        spec.insert("metrics".into(), json!([cpu_target(80)]));
    }
    if let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        let down = json!({"selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        for (name, defaults) in [("scaleUp", up), ("scaleDown", down)] {
            let rules = behavior.entry(name).or_insert(json!({}));
            let (Some(rules), Value::Object(defaults)) = (rules.as_object_mut(), defaults) else {
                continue;
            };
            for (k, v) in defaults {
                rules.entry(k).or_insert(v);
            }
        }
    }
}

/// Whether a v2 metric is the one v1 speaks of: CPU utilization.
fn is_cpu_utilization(metric: &Value, side: &str) -> bool {
    metric["type"] == "Resource"
        && metric["resource"]["name"] == "cpu"
        && (side == "current" || metric["resource"][side]["type"] == "Utilization")
}

fn annotations(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let metadata = obj["metadata"].as_object_mut().expect("an object");
    let a = metadata.entry("annotations").or_insert(json!({}));
    if !a.is_object() {
        *a = json!({});
    }
    a.as_object_mut().expect("an object")
}

/// Keeps `value` under `key` as JSON text, unless it is empty.
fn stash(obj: &mut Value, key: &str, value: Value) {
    let empty = value.is_null() || value.as_array().is_some_and(|a| a.is_empty());
    if !empty {
        annotations(obj).insert(key.into(), Value::String(value.to_string()));
    }
}

/// Takes back what [`stash`] kept.
fn unstash(obj: &mut Value, key: &str) -> Option<Value> {
    let text = annotations(obj).remove(key)?;
    serde_json::from_str(text.as_str()?).ok()
}

/// Drops an empty annotations map left behind.
fn tidy(obj: &mut Value) {
    if obj["metadata"]["annotations"]
        .as_object()
        .is_some_and(|a| a.is_empty())
    {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    }
}

/// A stored (v2) autoscaler as v1 shows it.
pub fn to_v1(v2: &Value) -> Value {
    let mut out = v2.clone();
    out["apiVersion"] = json!("autoscaling/v1");
    let spec = &v2["spec"];
    let metrics = spec["metrics"].as_array().cloned().unwrap_or_default();
    let (cpu, other): (Vec<Value>, Vec<Value>) = metrics
        .into_iter()
        .partition(|m| is_cpu_utilization(m, "target"));
    let mut v1_spec = json!({"scaleTargetRef": spec["scaleTargetRef"],
        "maxReplicas": spec["maxReplicas"]});
    if !spec["minReplicas"].is_null() {
        v1_spec["minReplicas"] = spec["minReplicas"].clone();
    }
    if let Some(cpu) = cpu.first() {
        v1_spec["targetCPUUtilizationPercentage"] =
            cpu["resource"]["target"]["averageUtilization"].clone();
    }
    out["spec"] = v1_spec;
    stash(&mut out, METRICS, Value::Array(other));
    stash(&mut out, BEHAVIOR, spec["behavior"].clone());
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let current = status["currentMetrics"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let (cpu, other): (Vec<Value>, Vec<Value>) = current
            .into_iter()
            .partition(|m| is_cpu_utilization(m, "current"));
        let mut v1_status = json!({"currentReplicas": status["currentReplicas"],
            "desiredReplicas": status["desiredReplicas"]});
        for k in ["observedGeneration", "lastScaleTime"] {
            if !status[k].is_null() {
                v1_status[k] = status[k].clone();
            }
        }
        if let Some(u) = cpu
            .first()
            .map(|m| &m["resource"]["current"]["averageUtilization"])
            .filter(|u| !u.is_null())
        {
            v1_status["currentCPUUtilizationPercentage"] = u.clone();
        }
        out["status"] = v1_status;
        stash(&mut out, CURRENT_METRICS, Value::Array(other));
        stash(&mut out, CONDITIONS, status["conditions"].clone());
    }
    out
}

/// A v1 autoscaler as it is stored (v2).
pub fn to_v2(v1: &Value) -> Value {
    let mut out = v1.clone();
    out["apiVersion"] = json!("autoscaling/v2");
    let spec = &v1["spec"];
    let mut metrics = Vec::new();
    if let Some(percent) = spec["targetCPUUtilizationPercentage"].as_i64() {
        metrics.push(cpu_target(percent));
    }
    if let Some(Value::Array(other)) = unstash(&mut out, METRICS) {
        metrics.extend(other);
    }
    let mut v2_spec = json!({"scaleTargetRef": spec["scaleTargetRef"],
        "maxReplicas": spec["maxReplicas"]});
    if !spec["minReplicas"].is_null() {
        v2_spec["minReplicas"] = spec["minReplicas"].clone();
    }
    if !metrics.is_empty() {
        v2_spec["metrics"] = Value::Array(metrics);
    }
    if let Some(behavior) = unstash(&mut out, BEHAVIOR) {
        v2_spec["behavior"] = behavior;
    }
    out["spec"] = v2_spec;
    let current = unstash(&mut out, CURRENT_METRICS);
    let conditions = unstash(&mut out, CONDITIONS);
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut v2_status = json!({"currentReplicas": status["currentReplicas"],
            "desiredReplicas": status["desiredReplicas"]});
        for k in ["observedGeneration", "lastScaleTime"] {
            if !status[k].is_null() {
                v2_status[k] = status[k].clone();
            }
        }
        let mut metrics = Vec::new();
        if let Some(u) = status["currentCPUUtilizationPercentage"].as_i64() {
            metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": u}}}));
        }
        if let Some(Value::Array(other)) = current {
            metrics.extend(other);
        }
        if !metrics.is_empty() {
            v2_status["currentMetrics"] = Value::Array(metrics);
        }
        if let Some(c) = conditions {
            v2_status["conditions"] = c;
        }
        out["status"] = v2_status;
    }
    tidy(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2() -> Value {
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [cpu_target(50), {"type": "Resource", "resource": {"name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "64Mi"}}}],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 10}}},
            "status": {"currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "current": {"averageUtilization": 70, "averageValue": "70m"}}}],
                "conditions": [{"type": "AbleToScale", "status": "True"}]}})
    }

    #[test]
    fn v1_shows_the_cpu_target_and_keeps_the_rest_in_annotations() {
        let v1 = to_v1(&v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert_eq!(v1["spec"].get("metrics"), None);
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 70);
        let a = &v1["metadata"]["annotations"];
        assert!(a[METRICS].as_str().unwrap().contains("memory"));
        assert!(a[BEHAVIOR]
            .as_str()
            .unwrap()
            .contains("stabilizationWindowSeconds"));
        assert!(a[CONDITIONS].as_str().unwrap().contains("AbleToScale"));
    }

    #[test]
    fn a_v1_round_trip_loses_nothing_v2_says() {
        let original = v2();
        let mut back = to_v2(&to_v1(&original));
        // v1 cannot say the CPU's averageValue; everything else returns.
        back["status"]["currentMetrics"][0]["resource"]["current"]["averageValue"] = json!("70m");
        assert_eq!(back, original);
    }

    #[test]
    fn defaults_as_upstream() {
        let mut hpa = json!({"spec": {"maxReplicas": 3, "behavior": {"scaleUp": {"stabilizationWindowSeconds": 30}}}});
        default("v2", &mut hpa);
        assert_eq!(hpa["spec"]["minReplicas"], 1);
        assert_eq!(hpa["spec"]["metrics"][0], cpu_target(80));
        let b = &hpa["spec"]["behavior"];
        assert_eq!(b["scaleUp"]["stabilizationWindowSeconds"], 30, "kept");
        assert_eq!(b["scaleUp"]["policies"].as_array().unwrap().len(), 2);
        assert_eq!(b["scaleDown"]["selectPolicy"], "Max");
        assert_eq!(b["scaleDown"].get("stabilizationWindowSeconds"), None);
        let mut bare = json!({"spec": {"maxReplicas": 3}});
        default("v2", &mut bare);
        assert_eq!(
            bare["spec"].get("behavior"),
            None,
            "no behavior, none filled in"
        );
        let mut v1 = json!({"spec": {"maxReplicas": 3}});
        default("v1", &mut v1);
        assert_eq!(v1["spec"].get("metrics"), None);
    }
}
