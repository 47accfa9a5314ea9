//! Resources made at each read rather than stored: ComponentStatus (the
//! scheduler's and controller manager's health from their leader Leases,
//! the store's from a read), read-only; and the local APIServices (every
//! served group-version, as upstream lists them), listed beside the
//! APIServices users create (stored, and reported unavailable: Skiff
//! proxies no aggregated API).

use serde_json::{json, Value};
use skiff_core::registry::{self, ResourceType};
use skiff_core::{meta, ApiError};

use super::Api;

/// Whether `r` is made at each read, and only read.
pub fn is_synthesized(r: &ResourceType) -> bool {
    (r.group, r.plural) == ("", "componentstatuses") || r.group == METRICS
}

/// The resource metrics API's group.
const METRICS: &str = "metrics.k8s.io";

/// Whether `r` lists local objects beside stored ones.
pub fn has_local(r: &ResourceType) -> bool {
    (r.group, r.plural) == ("apiregistration.k8s.io", "apiservices")
}

/// The status of an APIService a user creates: not available, and why.
pub fn unavailable(service: &Value) -> Value {
    let spec = &service["spec"];
    json!({"conditions": [{"type": "Available", "status": "False", "reason": "FailedDiscoveryCheck",
        "message": format!("Skiff does not proxy aggregated APIs: requests for {}/{} are not forwarded to {}/{}",
            spec["group"].as_str().unwrap_or(""), spec["version"].as_str().unwrap_or(""),
            spec["service"]["namespace"].as_str().unwrap_or(""), spec["service"]["name"].as_str().unwrap_or("")),
        "lastTransitionTime": meta::now()}]})
}

fn health(name: &str, healthy: Result<(), String>) -> Value {
    let (status, message) = match healthy {
        Ok(()) => ("True", "ok".to_owned()),
        Err(why) => ("False", why),
    };
    json!({"kind": "ComponentStatus", "apiVersion": "v1",
        "metadata": {"name": name, "creationTimestamp": null},
        "conditions": [{"type": "Healthy", "status": status, "message": message}]})
}

impl Api {
    /// A get or list of a synthesized resource; nothing else is allowed.
    pub(super) async fn read_synthesized(
        &self,
        call: &super::Call<'_>,
        verb: crate::request::Verb,
    ) -> Result<axum::response::Response, ApiError> {
        use crate::request::Verb;
        use crate::response;
        let r = call.target.resource;
        let mut items = if r.group == METRICS {
            self.usage(call).await?
        } else {
            self.synthesized(r).await?
        };
        // A list beside stored objects is at their revision, so that a
        // watch can follow it (local objects never change).
        let mut revision = None;
        if has_local(r) {
            let (stored, rv, _) = self
                .objects
                .list(r, None, skiff_store::ListOptions::default())
                .await?;
            let stored = stored
                .iter()
                .map(crate::storage::decode)
                .collect::<Result<Vec<_>, _>>()?;
            items.retain(|local| !stored.iter().any(|s| meta::name(s) == meta::name(local)));
            items.extend(stored);
            items.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
            revision = Some(rv.to_string());
        }
        let table = response::wants_table(call.accept());
        let include = call.query.include_object.as_deref().unwrap_or("Metadata");
        match verb {
            Verb::Get => {
                let name = call.target.name.as_deref().unwrap_or_default();
                let obj = items
                    .into_iter()
                    .find(|o| meta::name(o) == name)
                    .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
                if table {
                    let t = skiff_core::table::render(r, &[obj], "", None, include);
                    return Ok(response::json(200, &t));
                }
                Ok(response::json(200, &obj))
            }
            Verb::List => {
                let metadata = match revision {
                    Some(rv) => json!({"resourceVersion": rv}),
                    None => json!({}),
                };
                if table {
                    let t = skiff_core::table::render(r, &items, "", None, include);
                    return Ok(response::json(200, &t));
                }
                Ok(response::json(
                    200,
                    &json!({"kind": r.list_kind(), "apiVersion": r.api_version(),
                        "metadata": metadata, "items": items}),
                ))
            }
            other => Err(ApiError::method_not_allowed(other.name(), r.plural)),
        }
    }

    /// The objects of a synthesized resource, in name order.
    pub(super) async fn synthesized(&self, r: &ResourceType) -> Result<Vec<Value>, ApiError> {
        if r.plural == "apiservices" {
            return Ok(api_services(&self.started));
        }
        let mut out = Vec::new();
        for (name, lease) in [
            ("controller-manager", "kube-controller-manager"),
            ("scheduler", "kube-scheduler"),
        ] {
            out.push(health(name, self.lease_held(lease).await));
        }
        let store = self
            .objects
            .store
            .current_revision()
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        out.push(health("etcd-0", store));
        Ok(out)
    }

    /// The NodeMetrics or PodMetrics of the nodes or pods the call's
    /// namespace and label selector pick, that have a window of usage.
    async fn usage(&self, call: &super::Call<'_>) -> Result<Vec<Value>, ApiError> {
        let r = call.target.resource;
        let source = registry::lookup("", "v1", r.plural).expect("nodes and pods are served");
        let namespace = call.target.namespace.as_deref().filter(|_| r.namespaced);
        let labels = skiff_core::selector::LabelSelector::parse(
            call.query.label_selector.as_deref().unwrap_or(""),
        )?;
        let (listed, _, _) = self
            .objects
            .list(source, namespace, skiff_store::ListOptions::default())
            .await?;
        let metrics = &self.resource_metrics;
        let mut out = Vec::new();
        for kv in &listed {
            let obj = crate::storage::decode(kv)?;
            if !labels.matches_object(&obj) {
                continue;
            }
            let shown = if r.namespaced {
                metrics
                    .pod(meta::namespace(&obj).unwrap_or_default(), meta::name(&obj))
                    .map(|u| crate::resource_metrics::pod_metrics(&obj, &u))
            } else {
                metrics
                    .node(meta::name(&obj))
                    .map(|u| crate::resource_metrics::node_metrics(&obj, &u))
            };
            out.extend(shown);
        }
        Ok(out)
    }

    /// Whether a leader holds `kube-system/<name>` now.
    async fn lease_held(&self, name: &str) -> Result<(), String> {
        let leases =
            registry::lookup("coordination.k8s.io", "v1", "leases").expect("leases are served");
        let lease = self
            .objects
            .try_get(leases, Some("kube-system"), name)
            .await
            .map_err(|e| e.message)?
            .ok_or_else(|| format!("no leader: the Lease kube-system/{name} does not exist"))?;
        let renewed = lease["spec"]["renewTime"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let duration = lease["spec"]["leaseDurationSeconds"].as_i64().unwrap_or(15);
        match renewed {
            Some(t) if (chrono::Utc::now() - t.to_utc()).num_seconds() <= duration => Ok(()),
            _ => Err(format!(
                "the Lease kube-system/{name} was not renewed in {duration}s"
            )),
        }
    }
}

/// The served group-versions as local APIServices (`v1.apps`, `v1.` for
/// the core group), made when the server `started`.
fn api_services(started: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let custom_groups: Vec<&str> = registry::all()
        .iter()
        .filter(|r| r.custom)
        .map(|r| r.group)
        .collect();
    for (group, versions) in registry::group_versions() {
        for (i, version) in versions.iter().enumerate() {
            let name = format!("{version}.{group}");
            let custom = custom_groups.contains(&group);
            let mut labels = json!({});
            if custom {
                labels = json!({"kube-aggregator.kubernetes.io/automanaged": "true"});
            }
            out.push(json!({
                "kind": "APIService",
                "apiVersion": "apiregistration.k8s.io/v1",
                "metadata": {"name": name, "labels": labels, "creationTimestamp": started},
                "spec": {
                    "group": group,
                    "version": version,
                    "groupPriorityMinimum": if custom { 1000 } else { 18000 },
                    "versionPriority": 15 - i.min(14) as i64,
                },
                "status": {"conditions": [{"type": "Available", "status": "True",
                    "reason": "Local", "message": "Local APIServices are always available",
                    "lastTransitionTime": started}]},
            }));
        }
    }
    out.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_group_versions_are_local_api_services() {
        let services = api_services("2026-01-01T00:00:00Z");
        let apps = services
            .iter()
            .find(|s| meta::name(s) == "v1.apps")
            .unwrap();
        assert_eq!(apps["spec"]["group"], "apps");
        assert_eq!(apps["status"]["conditions"][0]["reason"], "Local");
        assert!(
            services.iter().any(|s| meta::name(s) == "v1."),
            "the core group"
        );
        let mut names: Vec<&str> = services.iter().map(meta::name).collect();
        let listed = names.clone();
        names.sort();
        assert_eq!(names, listed, "in name order");
    }

    #[test]
    fn a_created_api_service_says_it_is_not_served() {
        let s = unavailable(
            &json!({"spec": {"group": "wardle.example.com", "version": "v1alpha1",
            "service": {"namespace": "wardle", "name": "api"}}}),
        );
        let c = &s["conditions"][0];
        assert_eq!(
            (c["type"].as_str(), c["status"].as_str()),
            (Some("Available"), Some("False"))
        );
        assert!(c["message"]
            .as_str()
            .unwrap()
            .contains("wardle.example.com/v1alpha1"));
    }
}
