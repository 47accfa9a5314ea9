//! delete and deletecollection, with grace periods, finalizers,
//! preconditions and propagation policies.

use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};
use skiff_core::registry::ResourceType;
use skiff_core::selector::{FieldSelector, LabelSelector};
use skiff_core::{meta, status, ApiError};
use skiff_store::ListOptions;

use super::{Api, Call};
use crate::admission::Operation;
use crate::response;
use crate::storage::decode;

/// What a `DeleteOptions` body and the query ask for.
#[derive(Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn parse(call: &Call<'_>, raw: &[u8]) -> Result<Self, ApiError> {
        // JSON, YAML or protobuf, as the client's encoding; or nothing.
        let body: Value = if raw.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            super::body::parse(raw, &super::body::content_type(call.headers)).map_err(|e| {
                ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message))
            })?
        };
        Ok(Self::from_value(&body, call))
    }

    pub fn from_value(body: &Value, call: &Call<'_>) -> Self {
        let q = call.query;
        Self {
            grace_period: q
                .grace_period_seconds
                .or(body["gracePeriodSeconds"].as_i64()),
            propagation: q
                .propagation_policy
                .clone()
                .or(body["propagationPolicy"].as_str().map(str::to_owned)),
            uid: body["preconditions"]["uid"].as_str().map(str::to_owned),
            resource_version: body["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_owned),
            dry_run: q.dry_run || body["dryRun"].as_array().is_some_and(|a| !a.is_empty()),
        }
    }
}

/// What deleting one object amounts to.
enum Plan {
    Now,
    Mark(Value),
    AlreadyMarked,
}

fn plan(r: &ResourceType, obj: &Value, opts: &DeleteOptions) -> Plan {
    let mut next = obj.clone();
    let mut finalizers = meta::finalizers(obj);
    let policy_finalizer = match opts.propagation.as_deref() {
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        _ => None,
    };
    if let Some(f) = policy_finalizer {
        if !finalizers.iter().any(|x| x == f) {
            finalizers.push(f.to_owned());
            meta::set(&mut next, "finalizers", json!(finalizers));
        }
    }
    let strategy = super::strategy::of(r);
    let grace = strategy.grace_seconds(obj, opts.grace_period);
    let held = strategy.holds_deletion(obj);
    if finalizers.is_empty() && grace == 0 && !held {
        return Plan::Now;
    }
    if meta::is_deleting(obj) {
        let shorter = meta::get(obj, "deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| grace < g);
        if !shorter && next == *obj {
            return Plan::AlreadyMarked;
        }
    }
    let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
    meta::set(
        &mut next,
        "deletionTimestamp",
        when.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
    );
    meta::set(&mut next, "deletionGracePeriodSeconds", grace);
    if let Some(g) = meta::get(obj, "generation").and_then(Value::as_i64) {
        if !meta::is_deleting(obj) {
            meta::set(&mut next, "generation", g + 1);
        }
    }
    strategy.mark_deleting(&mut next);
    Plan::Mark(next)
}

impl Api {
    pub async fn delete(&self, call: &Call<'_>, raw: Bytes) -> Result<Response, ApiError> {
        let t = call.target;
        let name = t.name.as_deref().unwrap_or_default();
        if t.subresource.is_some() {
            return Err(ApiError::method_not_allowed(
                "DELETE",
                &format!(
                    "{}/{}",
                    t.resource.plural,
                    t.subresource.as_deref().unwrap_or("")
                ),
            ));
        }
        let opts = DeleteOptions::parse(call, &raw)?;
        let obj = self
            .delete_one(call, t.resource, t.namespace.as_deref(), name, &opts)
            .await?;
        Ok(response::json(200, &obj))
    }

    /// Deletes one object, or marks it for deletion when finalizers or a
    /// grace period hold it, once admission lets it.
    pub async fn delete_one(
        &self,
        call: &Call<'_>,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let admitted = self
            .admission
            .handles(&call.attributes(Operation::Delete, r, None));
        loop {
            let current = self.objects.get(r, ns, name).await?;
            if admitted {
                let a = call.attributes(Operation::Delete, r, Some(&current));
                self.admission
                    .validate(&a, &current, Default::default())
                    .await?;
            }
            let uid = meta::get_str(&current, "uid").unwrap_or("");
            if let Some(want) = &opts.uid {
                if want != uid {
                    return Err(ApiError::conflict(r.group, r.plural, name, format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}")));
                }
            }
            let rv = meta::resource_version(&current);
            if let Some(want) = &opts.resource_version {
                if Some(want.as_str()) != meta::get_str(&current, "resourceVersion") {
                    return Err(ApiError::conflict(r.group, r.plural, name, format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                        rv.unwrap_or_default()
                    )));
                }
            }
            let result = match plan(r, &current, opts) {
                Plan::AlreadyMarked => return Ok(current),
                Plan::Now if opts.dry_run => return Ok(current),
                Plan::Mark(next) if opts.dry_run => return Ok(next),
                Plan::Now => {
                    let gone = self.objects.delete(r, ns, name, rv).await;
                    if let Ok(gone) = &gone {
                        self.released(r, gone).await;
                    }
                    gone
                }
                Plan::Mark(mut next) => self
                    .objects
                    .replace(r, &mut next, rv.unwrap_or(0))
                    .await
                    .map(|()| next),
            };
            match result {
                Err(e) if e.reason == "Conflict" => continue,
                other => return other,
            }
        }
    }

    pub async fn delete_collection(
        &self,
        call: &Call<'_>,
        raw: Bytes,
    ) -> Result<Response, ApiError> {
        let t = call.target;
        let r = t.resource;
        let labels = LabelSelector::parse(call.query.label_selector.as_deref().unwrap_or(""))?;
        let fields = FieldSelector::parse(call.query.field_selector.as_deref().unwrap_or(""))?
            .supported_by_type(r)?;
        let opts = DeleteOptions::parse(call, &raw)?;
        let (items, _, _) = self
            .objects
            .list(r, t.namespace.as_deref(), ListOptions::default())
            .await?;
        for kv in &items {
            let obj = decode(kv)?;
            if !labels.matches_object(&obj) || !fields.matches(&obj) {
                continue;
            }
            match self
                .delete_one(call, r, meta::namespace(&obj), meta::name(&obj), &opts)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(response::json(
            200,
            &status::success(r.group, r.plural, "", ""),
        ))
    }
}
