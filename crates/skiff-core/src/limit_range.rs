//! Upstream's LimitRanger for pods: a namespace's LimitRanges fill in each
//! container's missing requests and limits (`defaultRequest`, `default`)
//! and hold containers and pods within `min`, `max` and
//! `maxLimitRequestRatio`.

use serde_json::{json, Map, Value};

use crate::quantity::parse_milli;

const CONTAINER_LISTS: [&str; 2] = ["initContainers", "containers"];

/// A LimitRange item's field, with upstream's defaulting of the
/// LimitRange itself: `default` falls back to `max`, `defaultRequest` to
/// `default`.
fn field(item: &Value, name: &str) -> Map<String, Value> {
    let own = item[name].as_object().cloned().unwrap_or_default();
    let fallback = match name {
        "default" => field(item, "max"),
        "defaultRequest" => field(item, "default"),
        _ => return own,
    };
    let mut out = fallback;
    out.extend(own);
    out
}

fn milli(v: &Value) -> Option<i128> {
    v.as_str().and_then(parse_milli)
}

/// Fills in what the pod's containers leave out.
pub fn default_pod(pod: &mut Value, ranges: &[Value]) {
    for item in items(ranges, "Container") {
        let (limits, requests) = (field(item, "default"), field(item, "defaultRequest"));
        for list in CONTAINER_LISTS {
            let spec = pod.get_mut("spec");
            let containers = spec
                .and_then(|s| s.get_mut(list))
                .and_then(Value::as_array_mut);
            for c in containers.into_iter().flatten() {
                for (kind, values) in [("limits", &limits), ("requests", &requests)] {
                    for (resource, q) in values {
                        let r = &mut c["resources"][kind];
                        if !r.is_object() {
                            *r = json!({});
                        }
                        if r[resource].is_null() {
                            r[resource] = q.clone();
                        }
                    }
                }
            }
        }
    }
}

fn items<'a>(ranges: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    ranges
        .iter()
        .flat_map(|r| r["spec"]["limits"].as_array().into_iter().flatten())
        .filter(move |i| i["type"] == kind)
}

/// Checks one set of requests and limits against an item; `per` is
/// `Container` or `Pod`.
fn check(item: &Value, per: &str, requests: &Value, limits: &Value, out: &mut Vec<String>) {
    for (resource, min) in field(item, "min") {
        let shown = min.as_str().unwrap_or_default();
        match requests[&resource].as_str() {
            None => out.push(format!(
                "minimum {resource} usage per {per} is {shown}.  No request is specified"
            )),
            Some(r) if milli(&requests[&resource]) < milli(&min) => out.push(format!(
                "minimum {resource} usage per {per} is {shown}, but request is {r}"
            )),
            _ => {}
        }
    }
    for (resource, max) in field(item, "max") {
        let shown = max.as_str().unwrap_or_default();
        match limits[&resource].as_str() {
            None => out.push(format!(
                "maximum {resource} usage per {per} is {shown}.  No limit is specified"
            )),
            Some(l) if milli(&limits[&resource]) > milli(&max) => out.push(format!(
                "maximum {resource} usage per {per} is {shown}, but limit is {l}"
            )),
            _ => {}
        }
    }
    for (resource, ratio) in field(item, "maxLimitRequestRatio") {
        let (Some(l), Some(r), Some(max)) = (
            milli(&limits[&resource]),
            milli(&requests[&resource]),
            milli(&ratio),
        ) else {
            continue;
        };
        // limit / request > ratio, in integers: limit × 1000 > ratio × request.
        if r > 0 && l * 1000 > max * r {
            let shown = ratio.as_str().unwrap_or_default();
            let actual = l as f64 / r as f64;
            out.push(format!(
                "{resource} max limit to request ratio per {per} is {shown}, but provided ratio is {actual:.6}"
            ));
        }
    }
}

/// What in the pod breaks its namespace's limits; empty when nothing does.
pub fn violations(pod: &Value, ranges: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let containers: Vec<&Value> = CONTAINER_LISTS
        .iter()
        .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
        .collect();
    for item in items(ranges, "Container") {
        for c in &containers {
            let r = &c["resources"];
            check(item, "Container", &r["requests"], &r["limits"], &mut out);
        }
    }
    for item in items(ranges, "Pod") {
        let mut sums = [Map::new(), Map::new()];
        for (i, kind) in ["requests", "limits"].iter().enumerate() {
            let keys: Vec<String> = ["min", "max", "maxLimitRequestRatio"]
                .iter()
                .flat_map(|f| field(item, f).keys().cloned().collect::<Vec<_>>())
                .collect();
            for resource in keys {
                let values: Vec<Option<i128>> = containers
                    .iter()
                    .map(|c| milli(&c["resources"][*kind][&resource]))
                    .collect();
                if values.iter().all(Option::is_some) && !values.is_empty() {
                    let total: i128 = values.iter().flatten().sum();
                    sums[i].insert(resource, json!(format!("{total}m")));
                }
            }
        }
        let [requests, limits] = sums;
        check(
            item,
            "Pod",
            &Value::Object(requests),
            &Value::Object(limits),
            &mut out,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(limits: Value) -> Vec<Value> {
        vec![json!({"spec": {"limits": limits}})]
    }

    #[test]
    fn defaults_fill_only_what_is_missing() {
        let ranges = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"}, "defaultRequest": {"cpu": "100m"}}]));
        let mut pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "1Gi"}}},
        ]}});
        default_pod(&mut pod, &ranges);
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(
            a,
            &json!({"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}})
        );
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["requests"]["cpu"], "50m");
        assert_eq!(b["limits"]["memory"], "1Gi");
        // A list the pod leaves out stays out (not set to null).
        assert!(pod["spec"].get("initContainers").is_none(), "{pod}");
    }

    #[test]
    fn min_max_and_ratio() {
        let ranges = range(json!([{"type": "Container",
            "min": {"cpu": "100m"}, "max": {"memory": "1Gi"}, "maxLimitRequestRatio": {"cpu": "2"}}]));
        let pod = |requests: Value, limits: Value| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": requests, "limits": limits}}]}});
        let ok = pod(
            json!({"cpu": "100m"}),
            json!({"cpu": "200m", "memory": "1Gi"}),
        );
        assert!(violations(&ok, &ranges).is_empty());
        let bad = pod(json!({"cpu": "50m"}), json!({"cpu": "1", "memory": "2Gi"}));
        assert_eq!(
            violations(&bad, &ranges),
            [
                "minimum cpu usage per Container is 100m, but request is 50m",
                "maximum memory usage per Container is 1Gi, but limit is 2Gi",
                "cpu max limit to request ratio per Container is 2, but provided ratio is 20.000000",
            ]
        );
        let bare = pod(json!({}), json!({}));
        assert_eq!(violations(&bare, &ranges).len(), 2, "no request, no limit");
    }

    #[test]
    fn pod_limits_sum_the_containers() {
        let ranges = range(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
        let pod = json!({"spec": {"containers": [
            {"resources": {"limits": {"cpu": "600m"}}}, {"resources": {"limits": {"cpu": "600m"}}}]}});
        assert_eq!(
            violations(&pod, &ranges),
            ["maximum cpu usage per Pod is 1, but limit is 1200m"]
        );
    }
}
