//! How far a rollout or a disruption may go: the update strategies of
//! Deployments, DaemonSets and StatefulSets and a PodDisruptionBudget's
//! bounds, checked as upstream's apps and policy validation checks them.

use serde_json::Value;

use crate::status::Cause;

const PERCENT_MSG: &str = "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')";

/// An int-or-percent field's number (a count, or a percentage without its
/// `%`; 0 when absent or malformed), after upstream's checks: a count is
/// not negative, a percentage is digits then `%`, and at most 100% unless
/// `beyond_100`.
fn int_or_percent(v: &Value, field: &str, beyond_100: bool, causes: &mut Vec<Cause>) -> i64 {
    match v {
        Value::Null => 0,
        Value::String(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
            match digits.map(|d| d.parse::<i64>().unwrap_or(i64::MAX)) {
                None => {
                    causes.push(Cause::invalid_value(field, v, PERCENT_MSG));
                    0
                }
                Some(p) => {
                    if p > 100 && !beyond_100 {
                        causes.push(Cause::invalid_value(
                            field,
                            v,
                            "must not be greater than 100%",
                        ));
                    }
                    p
                }
            }
        }
        other => {
            let n = other.as_i64().unwrap_or(0);
            if n < 0 {
                causes.push(Cause::invalid_value(
                    field,
                    v,
                    "must be greater than or equal to 0",
                ));
            }
            n
        }
    }
}

/// A rolling update's `(maxUnavailable, maxSurge)`, checked, under `at`.
fn bounds(
    rolling: &Value,
    at: &str,
    surge_beyond_100: bool,
    causes: &mut Vec<Cause>,
) -> (i64, i64) {
    let field = |name: &str| format!("{at}.{name}");
    let unavailable = int_or_percent(
        &rolling["maxUnavailable"],
        &field("maxUnavailable"),
        false,
        causes,
    );
    let surge = int_or_percent(
        &rolling["maxSurge"],
        &field("maxSurge"),
        surge_beyond_100,
        causes,
    );
    (unavailable, surge)
}

/// `spec.strategy` of a Deployment.
pub(super) fn deployment(spec: &Value, causes: &mut Vec<Cause>) {
    let strategy = &spec["strategy"];
    let rolling = &strategy["rollingUpdate"];
    // Defaulting sets the type; an object that skipped it is not judged.
    let Some(kind) = strategy["type"].as_str() else {
        return;
    };
    match kind {
        "Recreate" => {
            if !rolling.is_null() {
                causes.push(Cause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let at = "spec.strategy.rollingUpdate";
            // A Deployment's maxSurge may go beyond 100%.
            let (unavailable, surge) = bounds(rolling, at, true, causes);
            if unavailable == 0 && surge == 0 {
                causes.push(Cause::invalid_value(
                    format!("{at}.maxUnavailable"),
                    &rolling["maxUnavailable"],
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
        }
        other => causes.push(Cause::unsupported(
            "spec.strategy",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

/// `spec.updateStrategy` of a DaemonSet: exactly one of maxSurge and
/// maxUnavailable is not zero.
pub(super) fn daemon_set(spec: &Value, causes: &mut Vec<Cause>) {
    let strategy = &spec["updateStrategy"];
    let Some(kind) = strategy["type"].as_str() else {
        return;
    };
    match kind {
        "OnDelete" => {}
        "RollingUpdate" => {
            let at = "spec.updateStrategy.rollingUpdate";
            let rolling = &strategy["rollingUpdate"];
            if rolling.is_null() {
                causes.push(Cause::required(at));
                return;
            }
            let (unavailable, surge) = bounds(rolling, at, false, causes);
            match (unavailable != 0, surge != 0) {
                (true, true) => causes.push(Cause::invalid_value(
                    format!("{at}.maxSurge"),
                    &rolling["maxSurge"],
                    "may not be set when maxUnavailable is non-zero",
                )),
                (false, false) => causes.push(Cause {
                    reason: "FieldValueRequired",
                    field: format!("{at}.maxUnavailable"),
                    message: "Required value: cannot be 0 when maxSurge is 0".into(),
                }),
                _ => {}
            }
        }
        other => causes.push(Cause::unsupported(
            "spec.updateStrategy",
            other,
            &["OnDelete", "RollingUpdate"],
        )),
    }
}

/// `spec.updateStrategy` and `spec.podManagementPolicy` of a StatefulSet.
pub(super) fn stateful_set(spec: &Value, causes: &mut Vec<Cause>) {
    let policy = &spec["podManagementPolicy"];
    if !policy.is_null() && !matches!(policy.as_str(), Some("OrderedReady" | "Parallel")) {
        causes.push(Cause::invalid_value(
            "spec.podManagementPolicy",
            policy,
            "must be 'OrderedReady' or 'Parallel'",
        ));
    }
    let strategy = &spec["updateStrategy"];
    let rolling = &strategy["rollingUpdate"];
    let at = "spec.updateStrategy.rollingUpdate";
    let Some(kind) = strategy["type"].as_str() else {
        return;
    };
    match kind {
        "OnDelete" => {
            if !rolling.is_null() {
                causes.push(Cause::invalid_value(
                    at,
                    rolling,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            let partition = &rolling["partition"];
            if partition.as_i64().is_some_and(|p| p < 0) {
                causes.push(Cause::invalid_value(
                    format!("{at}.partition"),
                    partition,
                    "must be greater than or equal to 0",
                ));
            }
            let unavailable = &rolling["maxUnavailable"];
            if !unavailable.is_null() {
                let field = format!("{at}.maxUnavailable");
                if int_or_percent(unavailable, &field, false, causes) == 0 {
                    causes.push(Cause::invalid_value(&field, unavailable, "cannot be 0"));
                }
            }
        }
        _ => causes.push(Cause::invalid_value(
            "spec.updateStrategy",
            strategy,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
}

/// A PodDisruptionBudget's spec: one of minAvailable and maxUnavailable,
/// each a count or a percentage, and a known unhealthy-pod policy.
pub(super) fn disruption_budget(spec: &Value, causes: &mut Vec<Cause>) {
    let (min, max) = (&spec["minAvailable"], &spec["maxUnavailable"]);
    if !min.is_null() && !max.is_null() {
        causes.push(Cause::invalid_value(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (v, field) in [(min, "spec.minAvailable"), (max, "spec.maxUnavailable")] {
        int_or_percent(v, field, false, causes);
    }
    let policy = &spec["unhealthyPodEvictionPolicy"];
    if let Some(p) = policy.as_str() {
        if !matches!(p, "AlwaysAllow" | "IfHealthyBudget") {
            causes.push(Cause::unsupported(
                "spec.unhealthyPodEvictionPolicy",
                p,
                &["AlwaysAllow", "IfHealthyBudget"],
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::lookup;

    /// The causes' fields and messages for `spec` of a `plural` object,
    /// defaulted first as the API server defaults it.
    fn causes(group: &str, version: &str, plural: &str, spec: Value) -> Vec<(String, String)> {
        let r = lookup(group, version, plural).unwrap();
        let template = json!({"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let mut obj = json!({"metadata": {"name": "x", "namespace": "d"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": template}});
        for (k, v) in spec.as_object().unwrap() {
            obj["spec"][k] = v.clone();
        }
        crate::defaults::apply(r, &mut obj);
        let Err(e) = crate::validate::object(r, &obj, None) else {
            return vec![];
        };
        e.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["field"].as_str().unwrap().into(),
                    c["message"].as_str().unwrap().into(),
                )
            })
            .collect()
    }

    #[test]
    fn daemon_sets_surge_or_leave_nodes_unavailable_not_both() {
        let ds = |rolling: Value| {
            causes(
                "apps",
                "v1",
                "daemonsets",
                json!({"updateStrategy": {"rollingUpdate": rolling}}),
            )
        };
        assert_eq!(ds(json!({"maxSurge": 1, "maxUnavailable": 0})), vec![]);
        assert_eq!(ds(json!({"maxUnavailable": "20%"})), vec![]);
        // maxUnavailable defaults to 1, as upstream's: a surge must zero it.
        assert_eq!(
            ds(json!({"maxSurge": "10%"})),
            vec![(
                "spec.updateStrategy.rollingUpdate.maxSurge".into(),
                "Invalid value: \"10%\": may not be set when maxUnavailable is non-zero".into()
            )]
        );
        assert_eq!(
            ds(json!({"maxSurge": 0, "maxUnavailable": "0%"})),
            vec![(
                "spec.updateStrategy.rollingUpdate.maxUnavailable".into(),
                "Required value: cannot be 0 when maxSurge is 0".into()
            )]
        );
        let fields: Vec<String> = ds(json!({"maxSurge": 0, "maxUnavailable": "150%"}))
            .into_iter()
            .map(|(f, m)| format!("{f}: {m}"))
            .collect();
        assert_eq!(
            fields,
            vec!["spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%"]
        );
        let bad = causes(
            "apps",
            "v1",
            "daemonsets",
            json!({"updateStrategy": {"type": "Sometimes"}}),
        );
        assert_eq!(bad[0].0, "spec.updateStrategy");
    }

    #[test]
    fn deployments_and_stateful_sets_bound_their_rollouts() {
        let deploy =
            |strategy: Value| causes("apps", "v1", "deployments", json!({"strategy": strategy}));
        assert_eq!(
            deploy(json!({"rollingUpdate": {"maxSurge": "200%"}})),
            vec![]
        );
        assert_eq!(
            deploy(json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}})),
            vec![(
                "spec.strategy.rollingUpdate.maxUnavailable".into(),
                "Invalid value: 0: may not be 0 when `maxSurge` is 0".into()
            )]
        );
        assert_eq!(
            deploy(json!({"rollingUpdate": {"maxUnavailable": "half"}}))[0].1,
            format!("Invalid value: \"half\": {PERCENT_MSG}")
        );
        assert_eq!(
            deploy(json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}))[0].0,
            "spec.strategy.rollingUpdate"
        );
        assert_eq!(deploy(json!({"type": "Recreate"})), vec![]);
        let sts = |spec: Value| causes("apps", "v1", "statefulsets", spec);
        assert_eq!(
            sts(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": "50%"}}})),
            vec![]
        );
        let fields = |spec: Value| sts(spec).into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(
            fields(
                json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "partition": -1}}})
            ),
            vec![
                "spec.updateStrategy.rollingUpdate.partition",
                "spec.updateStrategy.rollingUpdate.maxUnavailable"
            ]
        );
        assert_eq!(
            fields(json!({"podManagementPolicy": "Whenever"})),
            vec!["spec.podManagementPolicy"]
        );
        assert_eq!(
            fields(json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {}}})),
            vec!["spec.updateStrategy.rollingUpdate"]
        );
    }

    #[test]
    fn budgets_take_one_bound_as_a_count_or_a_percentage() {
        let pdb = |spec: Value| {
            let r = lookup("policy", "v1", "poddisruptionbudgets").unwrap();
            let obj = json!({"metadata": {"name": "x", "namespace": "d"}, "spec": spec});
            crate::validate::object(r, &obj, None)
                .err()
                .map_or(vec![], |e| {
                    e.details.unwrap()["causes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["field"].as_str().unwrap().to_owned())
                        .collect::<Vec<_>>()
                })
        };
        assert!(pdb(json!({"minAvailable": "50%"})).is_empty());
        assert!(
            pdb(json!({"maxUnavailable": 1, "unhealthyPodEvictionPolicy": "AlwaysAllow"}))
                .is_empty()
        );
        assert_eq!(
            pdb(json!({"minAvailable": 1, "maxUnavailable": 1})),
            vec!["spec"]
        );
        assert_eq!(pdb(json!({"minAvailable": -1})), vec!["spec.minAvailable"]);
        assert_eq!(
            pdb(json!({"maxUnavailable": "101%"})),
            vec!["spec.maxUnavailable"]
        );
        assert_eq!(
            pdb(json!({"minAvailable": 1, "unhealthyPodEvictionPolicy": "Never"})),
            vec!["spec.unhealthyPodEvictionPolicy"]
        );
    }
}
