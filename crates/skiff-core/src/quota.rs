//! What objects count against a ResourceQuota (`pods`, `requests.cpu`,
//! `count/deployments.apps`, …), as upstream's evaluators count them, and
//! quantities written back the way the API shows them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::quantity::parse_milli;

/// Usage in thousandths of a unit, by quota resource name.
pub type Usage = BTreeMap<String, i128>;

/// The core resources quota names without `count/`.
const PLAIN_COUNTS: &[&str] = &[
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// Whether an object of `plural` in `group` still uses quota: pods that
/// finished do not.
pub fn counts(plural: &str, obj: &Value) -> bool {
    !(plural == "pods"
        && matches!(
            obj["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed")
        ))
}

/// The sum of one resource over a pod's containers: app containers add
/// up, init containers run one at a time, so the larger wins; sidecars
/// run beside the app and beside the init containers after them.
fn pod_resource(pod: &Value, kind: &str, resource: &str) -> Option<i128> {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let statuses = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .flat_map(|l| status[l].as_array().map_or(&[][..], Vec::as_slice));
    let conditions = status["conditions"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    let infeasible = conditions
        .iter()
        .any(|c| c["type"] == "PodResizePending" && c["reason"] == "Infeasible");
    let amount = |list: &Value| list[resource].as_str().and_then(parse_milli);
    // As upstream's PodRequests and PodLimits with the status' resources:
    // a container being resized counts the most of what it asks, holds
    // and (for requests) was allocated; only what it holds and was
    // allocated while its resize cannot be done.
    let of = |c: &Value| {
        let asked = amount(&c["resources"][kind]);
        let held = statuses
            .clone()
            .find(|s| s["name"] == c["name"] && s["resources"].is_object());
        let Some(held) = held else {
            return asked;
        };
        let mut counted = amount(&held["resources"][kind]);
        if kind == "requests" {
            counted = counted.max(amount(&held["allocatedResources"]));
        }
        if infeasible {
            counted
        } else {
            counted.max(asked)
        }
    };
    let list = |l: &str| spec[l].as_array().map_or(&[][..], Vec::as_slice);
    let (apps, inits) = (list("containers"), list("initContainers"));
    if apps.iter().chain(inits).all(|c| of(c).is_none()) {
        return None;
    }
    let mut sum: i128 = apps.iter().filter_map(of).sum();
    let (mut sidecars, mut init) = (0, 0);
    for c in inits {
        let own = of(c).unwrap_or(0);
        let during = if c["restartPolicy"] == "Always" {
            sum += own;
            sidecars += own;
            sidecars
        } else {
            own + sidecars
        };
        init = init.max(during);
    }
    Some(sum.max(init))
}

/// Whether a quota whose spec is `spec` covers `obj`, an object of
/// `plural` in `group`: its `scopes` and `scopeSelector` narrow which pods
/// it counts (all of them must match); other objects are always covered.
pub fn in_scope(spec: &Value, group: &str, plural: &str, obj: &Value) -> bool {
    if (group, plural) != ("", "pods") {
        return true;
    }
    let scopes = spec["scopes"].as_array().into_iter().flatten();
    let selected = spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten();
    scopes
        .filter_map(Value::as_str)
        .all(|scope| pod_in_scope(scope, None, &obj["spec"]))
        && selected.into_iter().all(|e| {
            let scope = e["scopeName"].as_str().unwrap_or_default();
            pod_in_scope(scope, Some(e), &obj["spec"])
        })
}

/// Whether a pod with `spec` is in `scope`, as upstream's quota evaluator
/// reads it; `selector` is the expression naming the scope, if any (a
/// scope listed in `scopes` means `Exists`).
fn pod_in_scope(scope: &str, selector: Option<&Value>, spec: &Value) -> bool {
    match scope {
        "Terminating" => spec["activeDeadlineSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 0),
        "NotTerminating" => !pod_in_scope("Terminating", None, spec),
        "BestEffort" => crate::qos::class(spec) == "BestEffort",
        "NotBestEffort" => crate::qos::class(spec) != "BestEffort",
        "PriorityClass" => {
            let class = spec["priorityClassName"].as_str().unwrap_or_default();
            let values = selector.map_or(&[][..], |e| {
                e["values"].as_array().map_or(&[][..], Vec::as_slice)
            });
            let listed = values.iter().any(|v| v == class);
            match selector.and_then(|e| e["operator"].as_str()) {
                None | Some("Exists") => !class.is_empty(),
                Some("In") => listed,
                Some("NotIn") => !listed,
                // The class is always a key of the pod's scope labels.
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => cross_namespace_affinity(spec),
        _ => false,
    }
}

/// Whether a pod's affinity terms reach other namespaces (by names or a
/// selector).
fn cross_namespace_affinity(spec: &Value) -> bool {
    let affinity = &spec["affinity"];
    ["podAffinity", "podAntiAffinity"].iter().any(|kind| {
        let of = &affinity[kind];
        let required = of["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten();
        let preferred = of["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| &w["podAffinityTerm"]);
        required.chain(preferred).any(|term| {
            !term["namespaceSelector"].is_null()
                || term["namespaces"].as_array().is_some_and(|n| !n.is_empty())
        })
    })
}

/// What one object uses, for the quota resources that apply to it.
pub fn usage(group: &str, plural: &str, obj: &Value) -> Usage {
    let mut u = Usage::new();
    if !counts(plural, obj) {
        return u;
    }
    let qualified = if group.is_empty() {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    };
    u.insert(format!("count/{qualified}"), 1000);
    if group.is_empty() && PLAIN_COUNTS.contains(&plural) {
        u.insert(plural.to_owned(), 1000);
    }
    match (group, plural) {
        ("", "pods") => {
            let spec = &obj["spec"];
            for resource in ["cpu", "memory", "ephemeral-storage"] {
                // As upstream's PodRequests and PodLimits: the overhead
                // adds to the requests, and to the limits set.
                let overhead = spec["overhead"][resource].as_str().and_then(parse_milli);
                let requests = match (pod_resource(obj, "requests", resource), overhead) {
                    (Some(r), o) => Some(r + o.unwrap_or(0)),
                    (None, o) => o,
                };
                if let Some(r) = requests {
                    u.insert(format!("requests.{resource}"), r);
                    if resource != "ephemeral-storage" {
                        u.insert(resource.to_owned(), r);
                    }
                }
                if let Some(l) = pod_resource(obj, "limits", resource) {
                    let added = overhead.filter(|_| l != 0).unwrap_or(0);
                    u.insert(format!("limits.{resource}"), l + added);
                }
            }
        }
        ("", "services") => {
            let kind = obj["spec"]["type"].as_str().unwrap_or("ClusterIP");
            let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i128;
            match kind {
                "NodePort" => {
                    u.insert("services.nodeports".into(), ports * 1000);
                }
                "LoadBalancer" => {
                    u.insert("services.loadbalancers".into(), 1000);
                    u.insert("services.nodeports".into(), ports * 1000);
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            if let Some(r) = obj["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(parse_milli)
            {
                u.insert("requests.storage".into(), r);
            }
        }
        _ => {}
    }
    u
}

/// The `(group, plural)` whose objects a quota resource name counts.
pub fn counted_kind(resource: &str) -> Option<(String, String)> {
    if let Some(what) = resource.strip_prefix("count/") {
        let (plural, group) = what.split_once('.').unwrap_or((what, ""));
        return Some((group.to_owned(), plural.to_owned()));
    }
    let core = |p: &str| Some((String::new(), p.to_owned()));
    match resource {
        r if PLAIN_COUNTS.contains(&r) => core(r),
        "services.nodeports" | "services.loadbalancers" => core("services"),
        "requests.storage" => core("persistentvolumeclaims"),
        r if r.starts_with("requests.") || r.starts_with("limits.") => core("pods"),
        "cpu" | "memory" => core("pods"),
        _ => None,
    }
}

/// Resources measured in bytes are written in binary units.
fn binary(resource: &str) -> bool {
    ["memory", "storage", "ephemeral-storage"]
        .iter()
        .any(|r| resource == *r || resource.ends_with(&format!(".{r}")))
}

/// A quantity as the API writes it: `300m`, `3`, `384Mi`.
pub fn format(resource: &str, milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    if binary(resource) && units != 0 {
        for (suffix, shift) in [
            ("Ei", 60),
            ("Pi", 50),
            ("Ti", 40),
            ("Gi", 30),
            ("Mi", 20),
            ("Ki", 10),
        ] {
            let size = 1i128 << shift;
            if units % size == 0 {
                return format!("{}{suffix}", units / size);
            }
        }
    }
    units.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sidecars_count_beside_the_app_and_the_inits_after_them() {
        let cpu = |m: &str| json!({"requests": {"cpu": m}});
        let pod = json!({"spec": {
            "containers": [{"resources": cpu("100m")}],
            "initContainers": [
                {"resources": cpu("300m")},
                {"resources": cpu("50m"), "restartPolicy": "Always"},
                {"resources": cpu("400m")},
            ],
        }});
        // The app with its sidecar: 150m; the last init beside the
        // sidecar: 450m.
        assert_eq!(usage("", "pods", &pod)["requests.cpu"], 450);
        let mut steady = pod.clone();
        steady["spec"]["initContainers"][2] = json!({"resources": cpu("10m")});
        assert_eq!(usage("", "pods", &steady)["requests.cpu"], 300);
        steady["spec"]["initContainers"][0] = json!({"resources": cpu("10m")});
        assert_eq!(usage("", "pods", &steady)["requests.cpu"], 150);
    }

    #[test]
    fn a_pod_counts_its_containers_and_the_larger_init() {
        let pod = json!({"spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                {"resources": {"requests": {"cpu": "200m", "memory": "64Mi"}}},
            ],
            "initContainers": [{"resources": {"requests": {"cpu": "500m"}}}],
        }});
        let u = usage("", "pods", &pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["count/pods"], 1000);
        assert_eq!(u["requests.cpu"], 500);
        assert_eq!(u["cpu"], 500);
        assert_eq!(u["requests.memory"], 128 * 1024 * 1024 * 1000);
        assert_eq!(u["limits.cpu"], 1000);
        assert!(!u.contains_key("limits.memory"));
        let done = json!({"spec": {}, "status": {"phase": "Succeeded"}});
        assert!(usage("", "pods", &done).is_empty());
    }

    #[test]
    fn a_pod_being_resized_counts_the_most_it_asks_holds_and_was_allocated() {
        let pod = |status: Value| {
            json!({"spec": {"containers": [{"name": "c", "resources": {
                "requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}}}]},
                "status": status})
        };
        let counted = |status: Value| {
            let u = usage("", "pods", &pod(status));
            (
                u["requests.cpu"],
                (u["requests.memory"] / 1000) >> 20,
                u["limits.cpu"],
            )
        };
        assert_eq!(counted(json!({})), (100, 64, 1000));
        // A shrink the node has not made yet: the node still holds more.
        let shrinking = json!({"containerStatuses": [{"name": "c",
            "allocatedResources": {"cpu": "500m", "memory": "32Mi"},
            "resources": {"requests": {"cpu": "400m", "memory": "32Mi"}, "limits": {"cpu": "2"}}}]});
        assert_eq!(counted(shrinking.clone()), (500, 64, 2000));
        // A resize the node can never make counts what the pod holds.
        let mut infeasible = shrinking;
        infeasible["conditions"] =
            json!([{"type": "PodResizePending", "status": "True", "reason": "Infeasible"}]);
        assert_eq!(counted(infeasible), (500, 32, 2000));
    }

    #[test]
    fn a_pods_overhead_counts_with_its_requests_and_limits() {
        let pod = json!({"spec": {
            "overhead": {"cpu": "250m", "memory": "64Mi"},
            "containers": [{"resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}}]}});
        let u = usage("", "pods", &pod);
        assert_eq!(u["requests.cpu"], 350);
        assert_eq!(u["cpu"], 350);
        assert_eq!(u["limits.cpu"], 1250);
        // Memory: no container asks, the overhead alone counts.
        assert_eq!(u["requests.memory"], 64 * 1024 * 1024 * 1000);
        assert!(!u.contains_key("limits.memory"));
    }

    #[test]
    fn scopes_narrow_which_pods_a_quota_counts() {
        let pod = |spec: Value| json!({"spec": spec});
        let plain = pod(json!({"containers": [{"name": "c"}]}));
        let sized = pod(
            json!({"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}],
            "activeDeadlineSeconds": 30, "priorityClassName": "high"}),
        );
        let scoped = |spec: Value, obj: &Value| in_scope(&spec, "", "pods", obj);
        assert!(scoped(
            json!({"scopes": ["BestEffort", "NotTerminating"]}),
            &plain
        ));
        assert!(!scoped(json!({"scopes": ["BestEffort"]}), &sized));
        assert!(scoped(
            json!({"scopes": ["NotBestEffort", "Terminating", "PriorityClass"]}),
            &sized
        ));
        assert!(!scoped(json!({"scopes": ["PriorityClass"]}), &plain));
        let class = |operator: &str| {
            json!({"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": operator, "values": ["high"]}]}})
        };
        assert!(scoped(class("In"), &sized) && !scoped(class("In"), &plain));
        assert!(!scoped(class("NotIn"), &sized) && scoped(class("NotIn"), &plain));
        let across = pod(
            json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "podAffinityTerm": {"topologyKey": "zone", "namespaces": ["other"]}}]}}}),
        );
        let cross = json!({"scopes": ["CrossNamespacePodAffinity"]});
        assert!(scoped(cross.clone(), &across) && !scoped(cross.clone(), &plain));
        // Objects other than pods are never out of a quota's scope.
        assert!(in_scope(
            &json!({"scopes": ["BestEffort"]}),
            "",
            "services",
            &json!({})
        ));
    }

    #[test]
    fn services_and_other_kinds() {
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}, {"port": 2}]}});
        let u = usage("", "services", &svc);
        assert_eq!((u["services"], u["services.nodeports"]), (1000, 2000));
        let u = usage("apps", "deployments", &json!({}));
        assert_eq!(u.keys().collect::<Vec<_>>(), ["count/deployments.apps"]);
        assert_eq!(
            counted_kind("count/deployments.apps"),
            Some(("apps".into(), "deployments".into()))
        );
        assert_eq!(
            counted_kind("requests.cpu"),
            Some(("".into(), "pods".into()))
        );
        assert_eq!(counted_kind("bogus"), None);
    }

    #[test]
    fn quantities_as_the_api_writes_them() {
        assert_eq!(format("pods", 3000), "3");
        assert_eq!(format("requests.cpu", 300), "300m");
        assert_eq!(format("requests.cpu", 2000), "2");
        assert_eq!(format("requests.memory", 384 * 1024 * 1024 * 1000), "384Mi");
        assert_eq!(format("limits.memory", 1000 * 1000), "1000");
        assert_eq!(format("pods", 0), "0");
    }
}
