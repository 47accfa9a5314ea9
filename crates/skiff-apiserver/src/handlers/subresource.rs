//! The scale, binding, eviction and service account token subresources.

use axum::response::Response;
use serde_json::{json, Value};
use skiff_core::registry::{self, ResourceType};
use skiff_core::selector::LabelSelector;
use skiff_core::{meta, status, ApiError};

use super::body;
use super::delete::DeleteOptions;
use super::prepare::prepare_update;
use super::{Api, Call};
use crate::admission::Operation;
use crate::response;
use crate::storage::{self, Change};

/// The longest a service account token lives: a year.
const MAX_TOKEN_SECONDS: i64 = 365 * 24 * 3600;

/// The Status a binding or an eviction answers: a success, code 201.
fn created(plural: &str, name: &str) -> Value {
    let mut done = status::success("", plural, name, "");
    done["code"] = json!(201);
    done
}

/// A ReplicationController's selector (a map of equalities) as text.
fn rc_selector(map: &Value) -> String {
    map.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `autoscaling/v1 Scale` view of a workload.
pub fn scale_of(r: &ResourceType, obj: &Value) -> Value {
    let custom = skiff_core::crd::served(r).and_then(|s| s.version.scale.clone());
    let (replicas, current, selector) = match custom {
        Some(scale) => scale.read(obj),
        None => (
            obj["spec"]["replicas"]
                .as_i64()
                .unwrap_or(if r.kind == "StatefulSet" { 1 } else { 0 }),
            obj["status"]["replicas"].as_i64().unwrap_or(0),
            if r.kind == "ReplicationController" {
                rc_selector(&obj["spec"]["selector"])
            } else {
                LabelSelector::from_object(&obj["spec"]["selector"])
                    .map(|_| skiff_core::selector::format_object(&obj["spec"]["selector"]))
                    .unwrap_or_default()
            },
        ),
    };
    let m = &obj["metadata"];
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": current, "selector": selector},
    })
}

/// A Scale sent to `name`'s `/scale`, read as upstream's handler reads
/// it: of kind Scale (an apply must say so, an update may leave it out),
/// through its typed struct, its unknown fields warned about or refused as
/// `validation` says, and for the object the URL names. With the warnings.
fn scale_body(
    scale: Value,
    name: &str,
    validation: Option<&str>,
    apply: bool,
) -> Result<(Value, Vec<String>), ApiError> {
    let (kind, api_version) = (&scale["kind"], &scale["apiVersion"]);
    let said = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let is = |v: &Value, want: &str| v == want || (!apply && v.is_null());
    if !is(kind, "Scale") || !is(api_version, "autoscaling/v1") {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type Scale): {}, Kind={}",
            said(api_version),
            said(kind)
        )));
    }
    let mut unknown = Vec::new();
    let report = (validation != Some("Ignore")).then_some(&mut unknown);
    let typed = registry::decode_scale(scale, report).map_err(|e| {
        ApiError::bad_request(format!(
            "Scale in version \"v1\" cannot be handled as a Scale: {e}"
        ))
    })?;
    let (typed, warnings) = body::unknown_fields(typed, unknown, validation)?;
    let given = meta::name(&typed);
    if !given.is_empty() && given != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({given}) does not match the name on the URL ({name})"
        )));
    }
    Ok((typed, warnings))
}

/// The replicas a Scale sets, if it is valid.
fn replicas_of(scale: &Value, name: &str) -> Result<i64, ApiError> {
    let invalid = |cause| ApiError::invalid("autoscaling", "Scale", name, vec![cause]);
    let replicas = scale["spec"]["replicas"]
        .as_i64()
        .ok_or_else(|| invalid(status::Cause::required("spec.replicas")))?;
    if replicas < 0 {
        return Err(invalid(status::Cause::invalid(
            "spec.replicas",
            &replicas.to_string(),
            "must be greater than or equal to 0",
        )));
    }
    Ok(replicas)
}

/// `obj` with `replicas`, where `r`'s Scale reads them.
fn write_replicas(r: &ResourceType, obj: &mut Value, replicas: i64) {
    match skiff_core::crd::served(r).and_then(|s| s.version.scale.clone()) {
        Some(scale) => scale.write(obj, replicas),
        None => obj["spec"]["replicas"] = json!(replicas),
    }
}

impl Api {
    /// Sets a workload's replicas from a new Scale.
    pub async fn update_scale(
        &self,
        call: &Call<'_>,
        name: &str,
        scale: Value,
    ) -> Result<Response, ApiError> {
        let r = call.target.resource;
        let validation = call.query.field_validation.as_deref();
        let (scale, warnings) = scale_body(scale, name, validation, false)?;
        let replicas = replicas_of(&scale, name)?;
        let precondition = meta::resource_version(&scale);
        let uid = scale["metadata"]["uid"].as_str().filter(|u| !u.is_empty());
        let manager = call.manager();
        let ns = call.target.namespace.as_deref();
        let (updated, _) = self
            .update_object(call, r, ns, name, |current| {
                if precondition.is_some_and(|rv| Some(rv) != meta::resource_version(current)) {
                    return Err(ApiError::stale(r.group, r.plural, name));
                }
                let stored = current["metadata"]["uid"].as_str().unwrap_or_default();
                if let Some(uid) = uid.filter(|&u| u != stored) {
                    let why = format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {stored}");
                    return Err(ApiError::conflict(r.group, &format!("{}/scale", r.plural), name, why));
                }
                let mut next = current.clone();
                write_replicas(r, &mut next, replicas);
                prepare_update(r, current, next, &manager, Some("scale"))
            })
            .await?;
        let reply = response::json(200, &scale_of(r, &updated.obj));
        Ok(super::with_warnings(reply, &warnings))
    }

    /// Server-side apply of a Scale, as upstream's scale handler: the
    /// replicas it sets are applied to the workload, by `manager` through
    /// `/scale`, with the same ownership and conflicts as any apply.
    pub async fn apply_scale(
        &self,
        call: &Call<'_>,
        name: &str,
        config: Value,
        manager: &str,
    ) -> Result<Response, ApiError> {
        let r = call.target.resource;
        let validation = call.query.field_validation.as_deref();
        let (config, warnings) = scale_body(config, name, validation, true)?;
        let replicas = replicas_of(&config, name)?;
        let api_version = r.api_version();
        let mut applied =
            json!({"apiVersion": api_version, "kind": r.kind, "metadata": {"name": name}});
        write_replicas(r, &mut applied, replicas);
        let mgr = skiff_core::apply::Manager {
            name: manager,
            api_version: &api_version,
            subresource: Some("scale"),
            status_apart: r.has_status(),
        };
        let root = skiff_core::schema::Root::of(r);
        let ns = call.target.namespace.as_deref();
        let (updated, _) = self
            .update_object(call, r, ns, name, |current| {
                let merged = skiff_core::apply::apply(
                    Some(current),
                    &applied,
                    &mgr,
                    call.query.force,
                    root.shape(),
                )?;
                prepare_update(r, current, merged, manager, Some("scale"))
            })
            .await?;
        let reply = response::json(200, &scale_of(r, &updated.obj));
        Ok(super::with_warnings(reply, &warnings))
    }

    /// Binds a pod to a node (`pods/binding`), once.
    pub async fn bind(
        &self,
        call: &Call<'_>,
        name: &str,
        raw: &[u8],
    ) -> Result<Response, ApiError> {
        let binding = body::parse(raw, &body::content_type(call.headers))?;
        let node = binding["target"]["name"].as_str().unwrap_or("").to_owned();
        if node.is_empty() {
            return Err(ApiError::invalid(
                "",
                "Binding",
                name,
                vec![status::Cause::required("target.name")],
            ));
        }
        let pods = call.target.resource;
        let ns = call.target.namespace.as_deref();
        self.update_object(call, pods, ns, name, |current| {
                if meta::is_deleting(current) {
                    return Err(ApiError::conflict("", "pods", name, "pod is being deleted, cannot be assigned to a host"));
                }
                if current["spec"]["schedulingGates"].as_array().is_some_and(|g| !g.is_empty()) {
                    return Err(ApiError::conflict("", "pods", name, format!("pod {name} has non-empty .spec.schedulingGates")));
                }
                if let Some(bound) = current["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                    return Err(ApiError::conflict("", "pods", name, format!("pod {name} is already assigned to node {bound:?}")));
                }
                let mut next = current.clone();
                next["spec"]["nodeName"] = Value::String(node.clone());
                let mut conditions: Vec<Value> = next["status"]["conditions"].as_array().cloned().unwrap_or_default();
                conditions.retain(|c| c["type"] != "PodScheduled");
                let mut scheduled = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": meta::now()});
                if let Some(generation) = meta::get(current, "generation") {
                    scheduled["observedGeneration"] = generation.clone();
                }
                conditions.push(scheduled);
                next["status"]["conditions"] = Value::Array(conditions);
                Ok(next)
            })
            .await?;
        Ok(response::json(201, &created("pods", name)))
    }

    /// Evicts a pod: a delete with the eviction's options, once the pod's
    /// PodDisruptionBudget allows it (counting it down), as upstream's.
    pub async fn evict(
        &self,
        call: &Call<'_>,
        name: &str,
        raw: &[u8],
    ) -> Result<Response, ApiError> {
        let eviction = body::parse(raw, &body::content_type(call.headers))?;
        let opts = DeleteOptions::from_value(&eviction["deleteOptions"], call);
        let pods = registry::lookup("", "v1", "pods").expect("pods are served");
        let ns = call.target.namespace.as_deref();
        let pod = self.objects.get(pods, ns, name).await?;
        // As upstream, an eviction is a creation of pods/eviction to
        // validating admission (webhooks among it).
        let a = call.attributes(Operation::Create, pods, Some(&pod));
        self.admission
            .validate(&a, &eviction, Default::default())
            .await?;
        self.charge_budget(ns, name, &pod).await?;
        self.delete_one(call, pods, ns, name, &opts).await?;
        Ok(response::json(201, &created("pods", name)))
    }

    /// Counts an eviction of `pod` down in its PodDisruptionBudget, or
    /// refuses it: a pod that is done, not yet running or being deleted
    /// needs no budget; more than one budget is an error, as upstream's.
    async fn charge_budget(
        &self,
        ns: Option<&str>,
        name: &str,
        pod: &Value,
    ) -> Result<(), ApiError> {
        let phase = pod["status"]["phase"].as_str().unwrap_or("Pending");
        if matches!(phase, "Succeeded" | "Failed" | "Pending") || meta::is_deleting(pod) {
            return Ok(());
        }
        let budgets =
            registry::lookup("policy", "v1", "poddisruptionbudgets").expect("budgets are served");
        let (items, _, _) = self.objects.list(budgets, ns, Default::default()).await?;
        let mut mine = Vec::new();
        for kv in &items {
            let budget = storage::decode(kv)?;
            // An empty or absent selector matches every pod (policy/v1).
            let selector = &budget["spec"]["selector"];
            if LabelSelector::from_object(selector).is_ok_and(|s| s.matches_object(pod)) {
                mine.push(meta::name(&budget).to_owned());
            }
        }
        let budget = match mine.as_slice() {
            [] => return Ok(()),
            [one] => one.clone(),
            _ => {
                return Err(ApiError::internal(
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                ))
            }
        };
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let now = meta::now();
        self.objects
            .update(budgets, ns, &budget, |mut b| {
                let status = &b["status"];
                let observed = status["observedGeneration"].as_i64().unwrap_or(0);
                if observed < meta::get(&b, "generation").and_then(Value::as_i64).unwrap_or(0) {
                    let why = format!("The disruption budget {budget} is still being processed by the server.");
                    return Err(ApiError::disruption_budget(why));
                }
                let (desired, healthy) = (
                    status["desiredHealthy"].as_i64().unwrap_or(0),
                    status["currentHealthy"].as_i64().unwrap_or(0),
                );
                // An unready pod goes freely while the budget holds
                // (upstream's default unhealthyPodEvictionPolicy).
                let policy = b["spec"]["unhealthyPodEvictionPolicy"].as_str();
                if !ready && (policy == Some("AlwaysAllow") || healthy >= desired) {
                    return Ok(Change::Keep);
                }
                let allowed = status["disruptionsAllowed"].as_i64().unwrap_or(0);
                if allowed <= 0 {
                    let why = format!(
                        "The disruption budget {budget} needs {desired} healthy pods and has {healthy} currently"
                    );
                    return Err(ApiError::disruption_budget(why));
                }
                b["status"]["disruptionsAllowed"] = json!(allowed - 1);
                b["status"]["disruptedPods"][name] = json!(now);
                Ok(Change::Write(b))
            })
            .await?;
        Ok(())
    }

    /// `serviceaccounts/token`: a signed token for the account, bound to a
    /// pod when the request names one.
    pub async fn token_request(
        &self,
        call: &Call<'_>,
        name: &str,
        raw: &[u8],
    ) -> Result<Response, ApiError> {
        let r = call.target.resource;
        let ns = call.target.namespace.as_deref().unwrap_or("default");
        let account = self.objects.get(r, Some(ns), name).await?;
        let request = body::parse(raw, &body::content_type(call.headers))?;
        let spec = &request["spec"];
        // Longer requests get the longest lifetime, as upstream's
        // `--service-account-max-token-expiration` does.
        let seconds = spec["expirationSeconds"]
            .as_i64()
            .unwrap_or(3600)
            .min(MAX_TOKEN_SECONDS);
        if seconds < 600 {
            return Err(ApiError::invalid(
                "authentication.k8s.io",
                "TokenRequest",
                name,
                vec![status::Cause::invalid(
                    "spec.expirationSeconds",
                    &seconds.to_string(),
                    "may not specify a duration less than 10 minutes",
                )],
            ));
        }
        let audiences = crate::tokens::audiences(spec);
        let bound = &spec["boundObjectRef"];
        // As upstream: the pod must exist, and its live uid is the one the
        // token carries (a uid given must match it).
        let pod = match bound["kind"].as_str() {
            Some("Pod") => {
                let name = bound["name"].as_str().unwrap_or_default();
                let pods = registry::lookup("", "v1", "pods").expect("pods are served");
                let live = self.objects.get(pods, Some(ns), name).await?;
                let uid = meta::get_str(&live, "uid").unwrap_or_default().to_owned();
                if bound["uid"]
                    .as_str()
                    .is_some_and(|u| !u.is_empty() && u != uid)
                {
                    return Err(ApiError::conflict(
                        "",
                        "pods",
                        name,
                        format!("the UID in the bound object reference ({}) does not match the UID in record ({uid}); the object might have been deleted and then recreated", bound["uid"].as_str().unwrap_or_default()),
                    ));
                }
                // A pod's token is for the account it runs as, no other.
                let runs_as = live["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default");
                if runs_as != meta::name(&account) {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token for serviceaccount {:?} to pod running with different serviceaccount name.",
                        meta::name(&account)
                    )));
                }
                let a = call.attributes(Operation::Create, r, Some(&live));
                self.admission
                    .validate(&a, &request, Default::default())
                    .await?;
                Some((name.to_owned(), uid))
            }
            None => {
                let a = call.attributes(Operation::Create, r, None);
                self.admission
                    .validate(&a, &request, Default::default())
                    .await?;
                None
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind a token to a {other}: only Pods are supported"
                )))
            }
        };
        let now = chrono::Utc::now();
        let expires = now + chrono::Duration::seconds(seconds);
        let claims = crate::tokens::Claims {
            namespace: ns,
            name,
            uid: meta::get_str(&account, "uid").unwrap_or_default(),
            audiences: audiences.clone(),
            expires: expires.timestamp(),
            pod,
        };
        let token = self
            .issuer
            .issue(&claims, now.timestamp())
            .map_err(ApiError::internal)?;
        let reply = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string()},
            "spec": {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": spec.get("boundObjectRef")},
            "status": {"token": token, "expirationTimestamp": expires.format("%Y-%m-%dT%H:%M:%SZ").to_string()},
        });
        Ok(response::json(201, &reply))
    }
}
