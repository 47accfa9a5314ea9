//! Upstream's RuntimeClass admission. A pod that names a class takes the
//! class's overhead and scheduling (node selector and tolerations); a pod
//! naming a class that does not exist is refused, as is an overhead that
//! is not the class's.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::quantity::parse_milli;
use skiff_core::{meta, registry, ApiError};

use super::{Attributes, Mutating, Operation};
use crate::storage::Objects;

pub struct RuntimeClass(pub Objects);

#[async_trait]
impl Mutating for RuntimeClass {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        pod: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation != Operation::Create || a.subresource.is_some() || !a.is("", "Pod") {
            return Ok(());
        }
        let class = match pod["spec"]["runtimeClassName"].as_str() {
            None => None,
            Some(name) => {
                let classes = registry::lookup("node.k8s.io", "v1", "runtimeclasses")
                    .expect("runtime classes are served");
                let found = self.0.try_get(classes, None, name).await?;
                let why = format!("pod rejected: RuntimeClass {name:?} not found");
                Some(found.ok_or_else(|| refused(pod, why))?)
            }
        };
        let fixed = class.as_ref().map(|c| &c["overhead"]["podFixed"]);
        overhead(pod, fixed.filter(|f| !f.is_null()))?;
        if let Some(scheduling) = class.as_ref().map(|c| &c["scheduling"]) {
            node_selector(pod, &scheduling["nodeSelector"])?;
            let spec = &mut pod["spec"];
            let own = spec["tolerations"].as_array().cloned().unwrap_or_default();
            let added = scheduling["tolerations"]
                .as_array()
                .map_or(&[][..], Vec::as_slice);
            if !added.is_empty() {
                spec["tolerations"] = Value::Array(merged(own, added));
            }
        }
        Ok(())
    }
}

fn refused(pod: &Value, why: String) -> ApiError {
    ApiError::forbidden(format!("pods {:?} is forbidden: {why}", meta::name(pod)))
}

/// Sets the class's overhead (`fixed`) on the pod. A pod may carry one
/// only if it is the class's: none without a class's overhead, the same
/// amounts with one.
fn overhead(pod: &mut Value, fixed: Option<&Value>) -> Result<(), ApiError> {
    let own = &pod["spec"]["overhead"];
    match fixed {
        Some(fixed) => {
            let set = own.as_object().is_some_and(|m| !m.is_empty());
            if set && !same_amounts(own, fixed) {
                let why =
                    "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead";
                return Err(refused(pod, why.into()));
            }
            pod["spec"]["overhead"] = fixed.clone();
        }
        None if !own.is_null() => {
            let why = "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead";
            return Err(refused(pod, why.into()));
        }
        None => {}
    }
    Ok(())
}

/// Whether two resource lists hold the same amounts, however written
/// (`1` and `1000m` are the same).
fn same_amounts(a: &Value, b: &Value) -> bool {
    let amounts = |v: &Value| -> Option<BTreeMap<String, i128>> {
        let list = v.as_object()?;
        list.iter()
            .map(|(k, q)| Some((k.clone(), parse_milli(q.as_str()?)?)))
            .collect()
    };
    amounts(a).is_some_and(|x| Some(x) == amounts(b))
}

/// Adds the class's node selector to the pod's; a label the pod selects
/// on with another value is a conflict.
fn node_selector(pod: &mut Value, class: &Value) -> Result<(), ApiError> {
    let Some(class) = class.as_object().filter(|m| !m.is_empty()) else {
        return Ok(());
    };
    let mut selector = pod["spec"]["nodeSelector"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in class {
        match selector.get(k) {
            Some(own) if own != v => {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                let why = format!(
                    "conflict: runtimeClass.scheduling.nodeSelector[{k}] = {}; pod.spec.nodeSelector[{k}] = {}",
                    text(v),
                    text(own)
                );
                return Err(refused(pod, why));
            }
            _ => {
                selector.insert(k.clone(), v.clone());
            }
        }
    }
    pod["spec"]["nodeSelector"] = Value::Object(selector);
    Ok(())
}

/// The pod's tolerations and the class's, leaving out each one that
/// another tolerates a superset of (of two equal ones, the first stays),
/// as upstream's `MergeTolerations`.
fn merged(own: Vec<Value>, added: &[Value]) -> Vec<Value> {
    let all: Vec<Value> = own.into_iter().chain(added.iter().cloned()).collect();
    let mut out: Vec<Value> = Vec::new();
    for (i, t) in all.iter().enumerate() {
        let covered_before = out.iter().any(|kept| covers(kept, t));
        let covered_after = all[i + 1..]
            .iter()
            .any(|later| later != t && covers(later, t));
        if !(covered_before || covered_after) {
            out.push(t.clone());
        }
    }
    out
}

/// Whether toleration `wide` tolerates every taint `t` does.
fn covers(wide: &Value, t: &Value) -> bool {
    if wide == t {
        return true;
    }
    let text = |v: &Value, f: &str| v[f].as_str().unwrap_or_default().to_owned();
    let operator = |v: &Value| match text(v, "operator").as_str() {
        "" => "Equal".to_owned(),
        o => o.to_owned(),
    };
    // An empty key with `Exists` matches every key.
    let any_key = text(wide, "key").is_empty() && operator(wide) == "Exists";
    if text(wide, "key") != text(t, "key") && !any_key {
        return false;
    }
    // An empty effect matches every effect.
    let effect = text(wide, "effect");
    if !effect.is_empty() && effect != text(t, "effect") {
        return false;
    }
    // A bounded stay under NoExecute covers only shorter ones.
    if let Some(limit) = wide["tolerationSeconds"]
        .as_i64()
        .filter(|_| effect == "NoExecute")
    {
        if t["tolerationSeconds"].as_i64().is_none_or(|s| s > limit) {
            return false;
        }
    }
    match operator(wide).as_str() {
        "Equal" => operator(t) == "Equal" && text(t, "value") == text(wide, "value"),
        "Exists" => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};
    use serde_json::json;

    #[tokio::test]
    async fn a_class_sets_its_overhead_and_scheduling() {
        let f = Fixture::new();
        f.put("node.k8s.io", "runtimeclasses", json!({"metadata": {"name": "sandboxed"},
            "handler": "runc", "overhead": {"podFixed": {"cpu": "250m", "memory": "64Mi"}},
            "scheduling": {"nodeSelector": {"sandbox": "yes"},
                "tolerations": [{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}]}}))
        .await;
        let plugin = RuntimeClass(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "pods", &alice);
        let pod = |spec: Value| json!({"metadata": {"name": "p"}, "spec": spec});

        let mut p = pod(
            json!({"runtimeClassName": "sandboxed", "nodeSelector": {"disk": "ssd"},
            "tolerations": [{"key": "sandbox", "operator": "Equal", "value": "x", "effect": "NoSchedule"}]}),
        );
        plugin
            .admit(&a, &mut p, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(
            p["spec"]["overhead"],
            json!({"cpu": "250m", "memory": "64Mi"})
        );
        assert_eq!(
            p["spec"]["nodeSelector"],
            json!({"disk": "ssd", "sandbox": "yes"})
        );
        // The class's toleration covers the pod's narrower one.
        assert_eq!(
            p["spec"]["tolerations"],
            json!([{"key": "sandbox", "operator": "Exists", "effect": "NoSchedule"}])
        );

        // The same overhead, written otherwise, is the class's.
        let mut same = pod(json!({"runtimeClassName": "sandboxed",
            "overhead": {"cpu": "0.25", "memory": "64Mi"}}));
        plugin
            .admit(&a, &mut same, &mut Default::default())
            .await
            .unwrap();
        let mut reordered = pod(json!({"runtimeClassName": "sandboxed",
            "overhead": {"memory": "64Mi", "cpu": "250m"}}));
        plugin
            .admit(&a, &mut reordered, &mut Default::default())
            .await
            .unwrap();

        for (spec, why) in [
            (
                json!({"runtimeClassName": "gvisor"}),
                "pod rejected: RuntimeClass \"gvisor\" not found",
            ),
            (
                json!({"runtimeClassName": "sandboxed", "overhead": {"cpu": "1"}}),
                "pod rejected: Pod's Overhead doesn't match RuntimeClass's defined Overhead",
            ),
            (
                json!({"overhead": {"cpu": "1"}}),
                "pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead",
            ),
            (
                json!({"runtimeClassName": "sandboxed", "nodeSelector": {"sandbox": "no"}}),
                "conflict: runtimeClass.scheduling.nodeSelector[sandbox] = yes; pod.spec.nodeSelector[sandbox] = no",
            ),
        ] {
            let err = plugin.admit(&a, &mut pod(spec), &mut Default::default()).await.unwrap_err();
            assert_eq!(
                (err.code, err.message),
                (403, format!("pods \"p\" is forbidden: {why}"))
            );
        }
        let mut plain = pod(json!({"containers": []}));
        plugin
            .admit(&a, &mut plain, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(plain, pod(json!({"containers": []})));
    }

    #[test]
    fn tolerations_merge_without_the_covered_ones() {
        let everything = json!({"operator": "Exists"});
        let own = vec![
            json!({"key": "a", "operator": "Equal", "value": "1"}),
            json!({"key": "b", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}),
        ];
        // Equal ones are kept once; a wider stay covers a shorter one.
        let added = [
            json!({"key": "a", "operator": "Equal", "value": "1"}),
            json!({"key": "b", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
        ];
        assert_eq!(
            merged(own.clone(), &added),
            vec![own[0].clone(), added[1].clone()]
        );
        assert_eq!(
            merged(own, std::slice::from_ref(&everything)),
            vec![everything]
        );
    }
}
