//! create (POST), update (PUT) and patch (PATCH, including server-side
//! apply).

use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;
use skiff_core::registry::ResourceType;
use skiff_core::schema::{schemas, Root, Shape};
use skiff_core::{apply, meta, strategic, ApiError};

use super::body::{self, check_kind, content_type, typed};
use super::prepare::prepare_update;
use super::{with_warnings, Api, Call};
use crate::admission::{Operation, Verdict};
use crate::services::{self, Need, Pool};
use crate::storage::{Change, Written};
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
        let validation = call.query.field_validation.as_deref();
        let (mut obj, mut warnings) =
            body::object(r, &raw, &content_type(call.headers), validation)?;
        let a = call.attributes(Operation::Create, r, None);
        let admitted = self
            .prepare_create(&a, t.namespace.as_deref(), &mut obj, &call.manager())
            .await?;
        warnings.extend(admitted.warnings);
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
        let media = content_type(call.headers);
        if t.subresource.as_deref() == Some("scale") {
            let scale = body::parse(&raw, &media)?;
            return self.update_scale(call, name, scale).await;
        }
        let validation = call.query.field_validation.as_deref();
        let (incoming, mut warnings) = body::object(r, &raw, &media, validation)?;
        let given = meta::name(&incoming);
        if !given.is_empty() && given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let precondition = meta::resource_version(&incoming);
        let manager = call.manager();
        let sub = t.subresource.as_deref();
        let (updated, admitted) = self
            .update_object(call, r, ns, name, |current| {
                if precondition.is_some_and(|rv| Some(rv) != meta::resource_version(current)) {
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
                prepare_update(r, current, next, &manager, sub)
            })
            .await?;
        warnings.extend(admitted.warnings);
        let reply = self.updated_reply(call, r, updated).await?;
        Ok(with_warnings(reply, &warnings))
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
        let (updated, admitted) = self
            .update_object(call, r, ns, name, |current| {
                let patched = apply_patch(&kind, current, &patch, built_in(r))?;
                if meta::resource_version(&patched) != meta::resource_version(current) {
                    return Err(ApiError::stale(r.group, r.plural, name));
                }
                check_kind(r, &patched)?;
                let (patched, w) = body::typed_patched(r, patched, &patch, validation)?;
                warnings = w;
                prepare_update(r, current, patched, &manager, sub)
            })
            .await?;
        warnings.extend(admitted.warnings);
        let reply = self.updated_reply(call, r, updated).await?;
        Ok(with_warnings(reply, &warnings))
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
        if t.subresource.as_deref() == Some("scale") {
            return self.apply_scale(call, name, config, &manager).await;
        }
        // Upstream's apply reads a configuration at the URL's version only,
        // and records the managed fields itself.
        let given = config["apiVersion"].as_str().unwrap_or_default();
        if config["kind"] == r.kind && !given.is_empty() && given != r.api_version() {
            return Err(ApiError::bad_request(format!(
                "Incorrect version specified in apply patch. Specified patch version: {given}, expected: {}",
                r.api_version()
            )));
        }
        check_kind(r, &config)?;
        if meta::get(&config, "managedFields").is_some_and(|m| !m.is_null()) {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
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
            status_apart: r.has_status(),
        };
        let force = call.query.force;
        let root = Root::of(r);
        loop {
            if self.objects.try_get(r, ns, name).await?.is_none() {
                // A subresource is written, never created.
                if sub.is_some() {
                    return Err(ApiError::not_found(r.group, r.plural, name));
                }
                let mut obj = apply::apply(None, &config, &mgr, force, root.shape())?;
                let a = call.attributes(Operation::Create, r, None);
                let admitted = self.prepare_create(&a, ns, &mut obj, &manager).await?;
                warnings.extend(admitted.warnings);
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
                .update_object(call, r, ns, name, |current| {
                    let merged = apply::apply(Some(current), &config, &mgr, force, root.shape())?;
                    prepare_update(r, current, merged, &manager, sub)
                })
                .await;
            match result {
                Ok((updated, admitted)) => {
                    warnings.extend(admitted.warnings);
                    let reply = self.updated_reply(call, r, updated).await?;
                    return Ok(with_warnings(reply, &warnings));
                }
                Err(e) if e.reason == "NotFound" && e.message.contains(name) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Stores a new object; a Service first gets its ClusterIP and
    /// NodePorts, given back if storing fails.
    pub async fn store_new(&self, r: &ResourceType, obj: &mut Value) -> Result<Vec<u8>, ApiError> {
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

    /// Writes the next state of an object by compare-and-swap, again
    /// from the top when another writer got there first: `next_of` derives
    /// it from the stored one (the strategy's part), admission looks at it,
    /// a Service's NodePorts are claimed before and given back after, and
    /// only a change is written. A dry run stops before writing or
    /// claiming anything. Returns the object and admission's verdict.
    pub async fn update_object<F>(
        &self,
        call: &Call<'_>,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut next_of: F,
    ) -> Result<(Written, Verdict), ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        let mut pool = Pool::default();
        loop {
            match self
                .try_update(call, r, (ns, name), &mut next_of, &mut pool)
                .await
            {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => continue,
                Err(e) => {
                    self.services.release(&pool.held()).await;
                    return Err(e);
                }
            }
        }
    }

    /// One attempt of [`Api::update_object`]: `None` when it must start
    /// again (the object changed, or NodePorts were claimed first).
    async fn try_update<F>(
        &self,
        call: &Call<'_>,
        r: &ResourceType,
        (ns, name): (Option<&str>, &str),
        next_of: &mut F,
        pool: &mut Pool,
    ) -> Result<Option<(Written, Verdict)>, ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        let (current, read) = self.objects.read(r, ns, name).await?;
        let mut next = next_of(&current)?;
        let a = call.attributes(Operation::Update, r, Some(&current));
        let said = self.admission.admit(&a, &mut next).await?;
        let verdict = self.admission.validate(&a, &next, said).await?;
        let mut change = Change::unless_same(&current, next);
        if call.query.dry_run {
            let shown = match change {
                Change::Write(mut next) => {
                    if let Some(rv) = meta::get(&current, "resourceVersion").cloned() {
                        meta::set(&mut next, "resourceVersion", rv);
                    }
                    next
                }
                Change::Keep => current,
            };
            return Ok(Some((shown.into(), verdict)));
        }
        if !is_service(r) {
            return Ok(self
                .objects
                .write(r, &read, change)
                .await?
                .map(|v| (v, verdict)));
        }
        if let Change::Write(next) = &mut change {
            let need = services::settle(&current, next, pool);
            if need != Need::default() {
                self.services.fill(&current, &need, pool).await?;
                return Ok(None);
            }
        }
        let Some(updated) = self.objects.write(r, &read, change).await? else {
            return Ok(None);
        };
        // What was claimed or held before and is not held now goes back.
        let now = services::held(&updated.obj).ports;
        let mut unused = pool.held();
        unused.ports.extend(services::held(&current).ports);
        unused.ports.retain(|p| !now.contains(p));
        self.services.release(&unused).await;
        Ok(Some((updated, verdict)))
    }

    /// Gives back what a deleted object held (a Service's addresses).
    pub async fn released(&self, r: &ResourceType, gone: &Value) {
        if is_service(r) {
            self.services.release(&services::held(gone)).await;
        }
    }

    /// The reply to an update: the object as this write stored it (the
    /// stored bytes, not encoded again), or as its deletion finished.
    async fn updated_reply(
        &self,
        call: &Call<'_>,
        r: &ResourceType,
        updated: Written,
    ) -> Result<Response, ApiError> {
        let finished = self
            .finish_deletion(r, &updated.obj, call.query.dry_run)
            .await?;
        Ok(match (finished, updated.json) {
            (Some(gone), _) => reply(call, 200, &gone),
            (None, Some(json)) if !response::wants_metadata(call.accept()) => {
                response::bytes(200, "application/json", json)
            }
            (None, _) => reply(call, 200, &updated.obj),
        })
    }

    /// Deletes an object whose deletion waited only for finalizers that are
    /// now gone (unless this is a dry run); returns it as deleted, or none
    /// when it stays.
    async fn finish_deletion(
        &self,
        r: &ResourceType,
        obj: &Value,
        dry_run: bool,
    ) -> Result<Option<Value>, ApiError> {
        if dry_run {
            return Ok(None);
        }
        // A grace period still running (a pod's node has not reported it
        // stopped), or what the strategy holds it for.
        let grace_left = meta::get(obj, "deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            > 0;
        if !meta::is_deleting(obj)
            || !meta::finalizers(obj).is_empty()
            || grace_left
            || super::strategy::of(r).holds_deletion(obj)
        {
            return Ok(None);
        }
        match self
            .objects
            .delete(
                r,
                meta::namespace(obj),
                meta::name(obj),
                meta::resource_version(obj),
            )
            .await
        {
            Ok(gone) => {
                self.released(r, &gone).await;
                Ok(Some(gone))
            }
            Err(e) if e.code == 404 || e.code == 409 => Ok(None),
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
        return Err(ApiError::refused(
            413,
            "RequestEntityTooLarge",
            format!(
                "the allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, but found {}",
                ops.0.len()
            ),
        ));
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
        json_patch::patch(&mut doc, &[op]).map_err(|e| {
            ApiError::refused(
                422,
                "Invalid",
                format!("the JSON patch could not be applied: {e}"),
            )
        })?;
    }
    Ok(doc)
}

/// Applies a JSON, merge or strategic merge patch.
/// A built-in kind's shape, which strategic merge patch needs (custom
/// resources patch as a merge patch would).
fn built_in(r: &ResourceType) -> Option<Shape<'static>> {
    schemas().root(r).map(Shape::Definition)
}

pub(super) fn apply_patch(
    kind: &str,
    current: &Value,
    patch: &Value,
    shape: Option<Shape<'_>>,
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
        "application/strategic-merge-patch+json" => strategic::patch(current, patch, shape),
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
