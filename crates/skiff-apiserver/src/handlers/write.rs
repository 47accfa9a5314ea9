//! create (POST), update (PUT) and patch (PATCH, including server-side
//! apply).

use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use skiff_core::registry::ResourceType;
use skiff_core::{apply, meta, strategic, ApiError};

use super::admission::{prepare_update, root_def};
use super::body::{self, check_kind, content_type, typed};
use super::{with_warnings, Api, Call};
use crate::services::{self, Need, Pool};
use crate::storage::Change;
use crate::{audit, response};

impl Api {
    pub async fn create(&self, call: &Call<'_>, raw: Bytes) -> Result<Response, ApiError> {
        let t = call.target;
        let r = t.resource;
        match (t.subresource.as_deref(), &t.name) {
            (Some("binding"), Some(name)) => return self.bind(call, name, &raw).await,
            (Some("eviction"), Some(name)) => return self.evict(call, name, &raw).await,
            (Some("token"), Some(name)) => return self.token_request(call, name, &raw).await,
            (None, None) => {}
            _ => return Err(ApiError::method_not_allowed("POST", r.plural)),
        }
        let mut obj = body::parse(&raw, &content_type(call.headers))?;
        body::default_kind(r, &mut obj);
        check_kind(r, &obj)?;
        let (mut obj, mut warnings) = typed(r, obj, call.query.field_validation.as_deref())?;
        let admitted = self
            .prepare_create(r, t.namespace.as_deref(), &mut obj, &call.manager())
            .await?;
        warnings.extend(admitted.warnings);
        self.admit_as(call, r, None, &mut obj)?;
        if call.query.dry_run {
            let reply = with_warnings(reply(call, 201, &obj), &warnings);
            return Ok(audit::annotated(reply, admitted.audit));
        }
        let stored = self.store_new(r, &mut obj).await?;
        let reply = with_warnings(stored_reply(call, stored), &warnings);
        Ok(audit::annotated(reply, admitted.audit))
    }

    pub async fn update(&self, call: &Call<'_>, raw: Bytes) -> Result<Response, ApiError> {
        let t = call.target;
        let r = t.resource;
        let name = t.name.as_deref().unwrap_or_default();
        let ns = t.namespace.as_deref();
        let mut incoming = body::parse(&raw, &content_type(call.headers))?;
        if t.subresource.as_deref() == Some("scale") {
            return self.update_scale(call, name, incoming).await;
        }
        body::default_kind(r, &mut incoming);
        check_kind(r, &incoming)?;
        let (incoming, warnings) = typed(r, incoming, call.query.field_validation.as_deref())?;
        let given = meta::name(&incoming);
        if !given.is_empty() && given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = meta::resource_version(&incoming);
        let manager = call.manager();
        let sub = t.subresource.as_deref();
        let dry_run = call.query.dry_run;
        let expandable = self.expandable_classes(r, sub).await?;
        let updated = self
            .update_object(r, ns, name, dry_run, |current| {
                if precondition.is_some_and(|rv| Some(rv) != meta::resource_version(&current)) {
                    return Err(ApiError::stale(r.group, r.plural, name));
                }
                let mut next = incoming.clone();
                meta::set(&mut next, "name", name);
                if sub == Some("finalize") {
                    let mut n = current.clone();
                    n["spec"]["finalizers"] = next["spec"]["finalizers"].clone();
                    next = n;
                }
                let sub = if sub == Some("finalize") { None } else { sub };
                let mut next = prepare_update(r, &current, next, &manager, sub)?;
                self.admit_as(call, r, Some(&current), &mut next)?;
                super::storage::admit_resize(expandable.as_ref(), &current, &next)?;
                Ok(Change::unless_same(&current, next))
            })
            .await?;
        let updated = self.finish_deletion(r, updated, dry_run).await?;
        Ok(with_warnings(reply(call, 200, &updated), &warnings))
    }

    pub async fn patch(&self, call: &Call<'_>, raw: Bytes) -> Result<Response, ApiError> {
        let t = call.target;
        let r = t.resource;
        let name = t.name.as_deref().unwrap_or_default();
        let ns = t.namespace.as_deref();
        let kind = content_type(call.headers);
        if kind == "application/apply-patch+yaml" {
            return self.apply(call, &raw).await;
        }
        let patch: Value = serde_json::from_slice(&raw)
            .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
        let validation = call.query.field_validation.as_deref();
        if t.subresource.as_deref() == Some("scale") {
            let current = self.objects.get(r, ns, name).await?;
            let scale = super::subresource::scale_of(r, &current);
            let next = apply_patch(&kind, &scale, &patch, None)?;
            return self.update_scale(call, name, next).await;
        }
        let manager = call.manager();
        let sub = t.subresource.as_deref();
        let mut warnings = Vec::new();
        let dry_run = call.query.dry_run;
        let expandable = self.expandable_classes(r, sub).await?;
        let updated = self
            .update_object(r, ns, name, dry_run, |current| {
                let patched = apply_patch(&kind, &current, &patch, root_def(r))?;
                if meta::resource_version(&patched) != meta::resource_version(&current) {
                    return Err(ApiError::stale(r.group, r.plural, name));
                }
                check_kind(r, &patched)?;
                let (patched, w) = typed(r, patched, validation)?;
                warnings = w;
                let mut next = prepare_update(r, &current, patched, &manager, sub)?;
                self.admit_as(call, r, Some(&current), &mut next)?;
                super::storage::admit_resize(expandable.as_ref(), &current, &next)?;
                Ok(Change::unless_same(&current, next))
            })
            .await?;
        let updated = self.finish_deletion(r, updated, dry_run).await?;
        Ok(with_warnings(reply(call, 200, &updated), &warnings))
    }

    /// Server-side apply: creates the object, or merges the applied
    /// configuration into it with field ownership.
    async fn apply(&self, call: &Call<'_>, raw: &[u8]) -> Result<Response, ApiError> {
        let t = call.target;
        let r = t.resource;
        let name = t.name.as_deref().unwrap_or_default();
        let ns = t.namespace.as_deref();
        let manager = call.query.field_manager.clone().ok_or_else(|| {
            ApiError::bad_request(
                "PATCH, application/apply-patch+yaml requires fieldManager parameter",
            )
        })?;
        let config = body::parse(raw, "application/yaml")?;
        check_kind(r, &config)?;
        let (mut config, mut warnings) = typed(r, config, call.query.field_validation.as_deref())?;
        match meta::name(&config) {
            "" => meta::set(&mut config, "name", name),
            given if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )))
            }
            _ => {}
        }
        let sub = t.subresource.as_deref();
        let mgr = apply::Manager {
            name: &manager,
            api_version: &r.api_version(),
            subresource: sub,
        };
        let force = call.query.force;
        let expandable = self.expandable_classes(r, sub).await?;
        loop {
            if self.objects.try_get(r, ns, name).await?.is_none() {
                let mut obj = apply::apply(None, &config, &mgr, force, root_def(r))?;
                let admitted = self.prepare_create(r, ns, &mut obj, &manager).await?;
                warnings.extend(admitted.warnings);
                self.admit_as(call, r, None, &mut obj)?;
                if call.query.dry_run {
                    return Ok(with_warnings(reply(call, 201, &obj), &warnings));
                }
                match self.store_new(r, &mut obj).await {
                    Ok(stored) => return Ok(with_warnings(stored_reply(call, stored), &warnings)),
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            let result = self
                .update_object(r, ns, name, call.query.dry_run, |current| {
                    let merged = apply::apply(Some(&current), &config, &mgr, force, root_def(r))?;
                    let mut next = prepare_update(r, &current, merged, &manager, sub)?;
                    self.admit_as(call, r, Some(&current), &mut next)?;
                    super::storage::admit_resize(expandable.as_ref(), &current, &next)?;
                    Ok(Change::unless_same(&current, next))
                })
                .await;
            match result {
                Ok(updated) => {
                    let updated = self.finish_deletion(r, updated, call.query.dry_run).await?;
                    return Ok(with_warnings(reply(call, 200, &updated), &warnings));
                }
                Err(e) if e.reason == "NotFound" && e.message.contains(name) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores a new object; a Service first gets its ClusterIP and
    /// NodePorts, given back if storing fails.
    pub async fn store_new(&self, r: &ResourceType, obj: &mut Value) -> Result<Vec<u8>, ApiError> {
        self.charge_quota(r, obj).await?;
        if !is_service(r) {
            return self.objects.create(r, obj).await;
        }
        self.services.admit(obj).await?;
        let stored = self.objects.create(r, obj).await;
        if stored.is_err() {
            self.services.release(&services::held(obj)).await;
        }
        stored
    }

    /// `Objects::update` that also settles a Service's NodePorts: ports
    /// an update newly needs are claimed before it is written, and those
    /// it no longer holds are given back after. A dry run only previews
    /// the change: nothing is written or claimed.
    pub async fn update_object<F>(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        dry_run: bool,
        mut change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(Value) -> Result<Change, ApiError>,
    {
        if dry_run {
            return self.objects.preview(r, ns, name, change).await;
        }
        if !is_service(r) {
            return self.objects.update(r, ns, name, change).await;
        }
        let mut pool = Pool::default();
        loop {
            let mut need = Need::default();
            let mut before = None;
            let result = self
                .objects
                .update(r, ns, name, |current| {
                    before = Some(current.clone());
                    match change(current.clone())? {
                        Change::Write(mut next) => {
                            need = services::settle(&current, &mut next, &pool);
                            if need != Need::default() {
                                return Err(ApiError::internal("NodePorts to claim first"));
                            }
                            Ok(Change::unless_same(&current, next))
                        }
                        keep => Ok(keep),
                    }
                })
                .await;
            let claimed = |pool: &Pool| services::Held {
                ip: None,
                ports: pool.free.iter().chain(&pool.asked).copied().collect(),
            };
            match (result, before) {
                (Err(_), Some(current)) if need != Need::default() => {
                    if let Err(e) = self.services.fill(&current, &need, &mut pool).await {
                        self.services.release(&claimed(&pool)).await;
                        return Err(e);
                    }
                }
                (Err(e), _) => {
                    self.services.release(&claimed(&pool)).await;
                    return Err(e);
                }
                (Ok(updated), before) => {
                    let now = services::held(&updated).ports;
                    let mut unused = claimed(&pool);
                    unused
                        .ports
                        .extend(before.map(|b| services::held(&b).ports).unwrap_or_default());
                    unused.ports.retain(|p| !now.contains(p));
                    self.services.release(&unused).await;
                    return Ok(updated);
                }
            }
        }
    }

    /// Gives back what a deleted object held (a Service's addresses).
    pub async fn released(&self, r: &ResourceType, gone: &Value) {
        if is_service(r) {
            self.services.release(&services::held(gone)).await;
        }
    }

    /// Deletes an object whose deletion waited only for finalizers that are
    /// now gone (unless this is a dry run).
    pub async fn finish_deletion(
        &self,
        r: &ResourceType,
        obj: Value,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        if dry_run {
            return Ok(obj);
        }
        // A grace period still running (a pod's node has not reported it
        // stopped), or what the strategy holds it for.
        let grace_left = meta::get(&obj, "deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0;
        if !meta::is_deleting(&obj)
            || !meta::finalizers(&obj).is_empty()
            || grace_left
            || super::strategy::of(r).holds_deletion(&obj)
        {
            return Ok(obj);
        }
        match self
            .objects
            .delete(
                r,
                meta::namespace(&obj),
                meta::name(&obj),
                meta::resource_version(&obj),
            )
            .await
        {
            Ok(gone) => {
                self.released(r, &gone).await;
                Ok(gone)
            }
            Err(e) if e.code == 404 || e.code == 409 => Ok(obj),
            Err(e) => Err(e),
        }
    }
}

/// A written object as the client asked for it: whole, or its metadata
/// alone (`as=PartialObjectMetadata`).
fn reply(call: &Call<'_>, code: u16, obj: &Value) -> Response {
    if response::wants_metadata(call.accept()) {
        return response::json(code, &response::partial(obj));
    }
    response::json(code, obj)
}

/// A created object's stored bytes, or its metadata alone if asked.
fn stored_reply(call: &Call<'_>, stored: Vec<u8>) -> Response {
    if response::wants_metadata(call.accept()) {
        if let Ok(obj) = serde_json::from_slice::<Value>(&stored) {
            return response::json(201, &response::partial(&obj));
        }
    }
    response::bytes(201, "application/json", stored)
}

fn is_service(r: &ResourceType) -> bool {
    r.group.is_empty() && r.kind == "Service"
}

/// Upstream's bound on a JSON patch's operations.
const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

use crate::storage::MAX_OBJECT_BYTES;

/// Applies a JSON patch one operation at a time, counting what each adds
/// (an `add`, `replace` or `copy` of a value adds at most its size), so
/// that a patch doubling the object with every `copy` is refused long
/// before it fills memory.
fn json_patch_bounded(current: &Value, ops: json_patch::Patch) -> Result<Value, ApiError> {
    if ops.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!(
                "the allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, but found {}",
                ops.0.len()
            ),
            details: None,
        });
    }
    let size = |v: &Value| serde_json::to_vec(v).map_or(0, |b| b.len());
    let mut doc = current.clone();
    let mut bound = size(&doc);
    for op in ops.0 {
        bound += match &op {
            json_patch::PatchOperation::Add(a) => size(&a.value),
            json_patch::PatchOperation::Replace(r) => size(&r.value),
            json_patch::PatchOperation::Copy(c) => doc.pointer(c.from.as_str()).map_or(0, size),
            _ => 0,
        };
        if bound > MAX_OBJECT_BYTES {
            return Err(ApiError::too_large(MAX_OBJECT_BYTES));
        }
        json_patch::patch(&mut doc, &[op]).map_err(|e| ApiError {
            code: 422,
            reason: "Invalid",
            message: format!("the JSON patch could not be applied: {e}"),
            details: None,
        })?;
    }
    Ok(doc)
}

/// Applies a JSON, merge or strategic merge patch.
fn apply_patch(
    kind: &str,
    current: &Value,
    patch: &Value,
    def: Option<&str>,
) -> Result<Value, ApiError> {
    match kind {
        "application/json-patch+json" => {
            let ops: json_patch::Patch = serde_json::from_value(patch.clone())
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            json_patch_bounded(current, ops)
        }
        "application/merge-patch+json" => {
            let mut doc = current.clone();
            json_patch::merge(&mut doc, patch);
            Ok(doc)
        }
        "application/strategic-merge-patch+json" => strategic::patch(current, patch, def),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_patches_are_bounded_as_they_apply() {
        let current = json!({"spec": {"a": "x".repeat(1000)}});
        // Each copy doubles the object: refused long before it is big.
        let bomb: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/x{i}")}))
            .collect();
        let ops = serde_json::from_value(json!(bomb)).unwrap();
        assert_eq!(json_patch_bounded(&current, ops).unwrap_err().code, 413);
        let many: Vec<Value> = (0..=MAX_JSON_PATCH_OPERATIONS)
            .map(|_| json!({"op": "test", "path": "/spec", "value": {}}))
            .collect();
        let err =
            json_patch_bounded(&current, serde_json::from_value(json!(many)).unwrap()).unwrap_err();
        assert!(
            err.message.contains("maximum operations"),
            "{}",
            err.message
        );
        let fine = serde_json::from_value(json!([
            {"op": "copy", "from": "/spec/a", "path": "/spec/b"},
            {"op": "remove", "path": "/spec/a"}
        ]))
        .unwrap();
        let patched = json_patch_bounded(&current, fine).unwrap();
        assert_eq!(patched["spec"]["b"].as_str().unwrap().len(), 1000);
        assert!(patched["spec"]["a"].is_null());
    }
}
