//! Two admission steps on a namespace's policy objects: LimitRanger fills
//! in and bounds pods' requests and limits; ResourceQuota charges each new
//! object to its namespace's quotas (in their `status.used`, atomically per
//! quota) and refuses what would go over, with upstream's messages. A
//! pod's resize is bounded and charged (what it grows by) alike. The
//! quota controller recomputes usage from the objects themselves.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::registry::{self, ResourceType};
use skiff_core::{limit_range, meta, quantity, quota, ApiError};

use super::{Attributes, Mutating, Operation, Validating, Verdict};
use crate::storage::{Change, Objects};

/// Every object of a resource in a namespace, as the watch cache has them.
async fn all_in(
    objects: &Objects,
    plural: &str,
    group: &str,
    ns: &str,
) -> Result<Vec<Value>, ApiError> {
    let Some(r) = registry::preferred(group, plural) else {
        return Ok(Vec::new());
    };
    objects.recent_list(r, Some(ns)).await
}

/// LimitRanger: defaults from the namespace's LimitRanges, then their
/// bounds.
pub struct LimitRanger(pub Objects);

#[async_trait]
impl Mutating for LimitRanger {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        pod: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        let resize = is_resize(a);
        if !(a.operation == Operation::Create && a.is("", "Pod") || resize) {
            return Ok(());
        }
        let ns = meta::namespace(pod).unwrap_or("default").to_owned();
        let ranges = all_in(&self.0, "limitranges", "", &ns).await?;
        if ranges.is_empty() {
            return Ok(());
        }
        if !resize {
            limit_range::default_pod(pod, &ranges);
        }
        let broken = limit_range::violations(pod, &ranges);
        if broken.is_empty() {
            return Ok(());
        }
        Err(ApiError::forbidden(format!(
            "pods \"{}\" is forbidden: [{}]",
            meta::name(pod),
            broken.join(", ")
        )))
    }
}

/// ResourceQuota: charges a new object to every quota of its namespace
/// that counts it (not in a dry run).
pub struct ResourceQuota(pub Objects);

#[async_trait]
impl Validating for ResourceQuota {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        let created = a.operation == Operation::Create && a.subresource.is_none();
        (created || is_resize(a)) && !a.dry_run
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        let Some(ns) = meta::namespace(obj) else {
            return Ok(());
        };
        // Most namespaces have no quota: nothing to count then.
        let quotas = all_in(&self.0, "resourcequotas", "", ns).await?;
        if quotas.is_empty() {
            return Ok(());
        }
        let mut delta = quota::usage(a.resource.group, a.resource.plural, obj);
        // A resize is charged what it adds.
        if let (true, Some(old)) = (is_resize(a), a.old) {
            let before = quota::usage(a.resource.group, a.resource.plural, old);
            for (key, amount) in &mut delta {
                *amount -= before.get(key).copied().unwrap_or(0);
            }
            delta.retain(|_, amount| *amount > 0);
        }
        self.charge(a.resource, obj, ns, quotas, &delta).await
    }
}

/// A write through a pod's `resize` subresource.
fn is_resize(a: &Attributes<'_>) -> bool {
    a.operation == Operation::Update
        && a.subresource == Some("resize")
        && (a.resource.group, a.resource.kind) == ("", "Pod")
}

impl ResourceQuota {
    /// Charges `delta`, what `obj` in `ns` counts, to `quotas` (those of
    /// `ns`), or refuses it.
    async fn charge(
        &self,
        r: &ResourceType,
        obj: &Value,
        ns: &str,
        quotas: Vec<Value>,
        delta: &BTreeMap<String, i128>,
    ) -> Result<(), ApiError> {
        let forbidden = |message: String| {
            ApiError::forbidden(format!(
                "{} \"{}\" is forbidden: {message}",
                r.plural,
                meta::name(obj)
            ))
        };
        let resource = registry::lookup("", "v1", "resourcequotas").expect("served");
        for q in quotas {
            if !quota::in_scope(&q["spec"], r.group, r.plural, obj) {
                continue;
            }
            let name = meta::name(&q).to_owned();
            let hard: BTreeMap<String, String> =
                serde_json::from_value(q["spec"]["hard"].clone()).unwrap_or_default();
            if r.plural == "pods" && r.group.is_empty() {
                let missing = unspecified(obj, &hard);
                if !missing.is_empty() {
                    return Err(forbidden(format!(
                        "failed quota: {name}: must specify {}",
                        missing.join("; ")
                    )));
                }
            }
            let charged: Vec<&String> = hard.keys().filter(|k| delta.contains_key(*k)).collect();
            if charged.is_empty() {
                continue;
            }
            // Usage the controller has not written yet is counted here.
            let mut live = BTreeMap::new();
            for key in &charged {
                if q["status"]["used"][key.as_str()].is_null() {
                    let usage = self.live_usage(key, ns, &q["spec"]).await?;
                    live.insert(key.to_string(), usage);
                }
            }
            self.0
                .update(resource, Some(ns), &name, |mut current| {
                    let mut exceeded = Vec::new();
                    let mut next = BTreeMap::new();
                    for key in &charged {
                        let used = current["status"]["used"][key.as_str()]
                            .as_str()
                            .and_then(quantity::parse_milli)
                            .or_else(|| live.get(key.as_str()).copied())
                            .unwrap_or(0);
                        let limit = hard[key.as_str()].as_str();
                        let after = used + delta[key.as_str()];
                        if quantity::parse_milli(limit).is_some_and(|l| after > l) {
                            exceeded.push((key.as_str(), used, limit));
                        }
                        next.insert(key.to_string(), after);
                    }
                    if !exceeded.is_empty() {
                        let list = |f: &dyn Fn(&(&str, i128, &str)) -> String| {
                            exceeded.iter().map(f).collect::<Vec<_>>().join(",")
                        };
                        return Err(forbidden(format!(
                            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                            list(&|(k, _, _)| format!("{k}={}", quota::format(k, delta[*k]))),
                            list(&|(k, used, _)| format!("{k}={}", quota::format(k, *used))),
                            list(&|(k, _, limit)| format!("{k}={limit}")),
                        )));
                    }
                    current["status"]["hard"] = current["spec"]["hard"].clone();
                    if !current["status"]["used"].is_object() {
                        current["status"]["used"] = json!({});
                    }
                    for (key, value) in next {
                        current["status"]["used"][&key] = json!(quota::format(&key, value));
                    }
                    Ok(Change::Write(current))
                })
                .await?;
        }
        Ok(())
    }

    /// A quota resource's usage in `ns`, from the objects themselves that
    /// the quota (`spec`) covers.
    async fn live_usage(&self, key: &str, ns: &str, spec: &Value) -> Result<i128, ApiError> {
        let Some((group, plural)) = quota::counted_kind(key) else {
            return Ok(0);
        };
        let objects = all_in(&self.0, &plural, &group, ns).await?;
        Ok(objects
            .iter()
            .filter(|o| quota::in_scope(spec, &group, &plural, o))
            .filter_map(|o| quota::usage(&group, &plural, o).get(key).copied())
            .sum())
    }
}

/// The compute resources a quota limits that a pod's containers leave
/// unset: `requests.cpu for: app,sidecar`.
fn unspecified(pod: &Value, hard: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for key in hard.keys() {
        let (kind, resource) = match key.split_once('.') {
            Some((k @ ("requests" | "limits"), r)) if r == "cpu" || r == "memory" => (k, r),
            None if key == "cpu" || key == "memory" => ("requests", key.as_str()),
            _ => continue,
        };
        let lacking: Vec<&str> = ["initContainers", "containers"]
            .iter()
            .flat_map(|l| pod["spec"][*l].as_array().into_iter().flatten())
            .filter(|c| c["resources"][kind][resource].is_null())
            .filter_map(|c| c["name"].as_str())
            .collect();
        if !lacking.is_empty() {
            out.push(format!("{key} for: {}", lacking.join(",")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};

    fn pod(name: &str, cpu: Option<&str>) -> Value {
        let resources = match cpu {
            Some(cpu) => json!({"requests": {"cpu": cpu}}),
            None => json!({}),
        };
        json!({"metadata": {"name": name, "namespace": "a"},
            "spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[tokio::test]
    async fn limit_ranges_fill_in_requests_and_bound_them() {
        let f = Fixture::new();
        f.put(
            "",
            "limitranges",
            json!({"metadata": {"name": "l", "namespace": "a"}, "spec": {"limits": [
                {"type": "Container", "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}}]}}),
        )
        .await;
        let plugin = LimitRanger(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "pods", &alice);
        let mut defaulted = pod("p", None);
        plugin
            .admit(&a, &mut defaulted, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(
            defaulted["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
        let mut greedy = pod("q", Some("2"));
        greedy["spec"]["containers"][0]["resources"]["limits"] = json!({"cpu": "2"});
        let err = plugin
            .admit(&a, &mut greedy, &mut Default::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert!(
            err.message.starts_with("pods \"q\" is forbidden: ["),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn quotas_charge_new_objects_and_refuse_past_their_hard_limit() {
        let f = Fixture::new();
        f.put(
            "",
            "resourcequotas",
            json!({"metadata": {"name": "q", "namespace": "a"}, "spec": {"hard": {"pods": "1"}}}),
        )
        .await;
        let plugin = ResourceQuota(f.objects.clone());
        let alice = user("alice", &[]);
        let mut a = creating("", "pods", &alice);
        let mut verdict = Verdict::default();
        a.dry_run = true;
        assert!(!plugin.handles(&a), "a dry run charges nothing");
        a.dry_run = false;
        plugin
            .validate(&a, &pod("one", None), &mut verdict)
            .await
            .unwrap();
        let quotas = registry::lookup("", "v1", "resourcequotas").unwrap();
        let q = f.objects.get(quotas, Some("a"), "q").await.unwrap();
        assert_eq!(q["status"]["used"]["pods"], "1");
        let err = plugin
            .validate(&a, &pod("two", None), &mut verdict)
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "pods \"two\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=1, limited: pods=1"
        );
        // Other namespaces are not charged.
        let mut elsewhere = pod("three", None);
        elsewhere["metadata"]["namespace"] = json!("b");
        assert!(plugin.validate(&a, &elsewhere, &mut verdict).await.is_ok());
    }
}
