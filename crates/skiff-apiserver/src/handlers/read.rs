//! get and list, as JSON or as a Table.

use axum::response::Response;
use base64::Engine;
use serde_json::{json, Value};
use skiff_core::selector::{FieldSelector, LabelSelector};
use skiff_core::sparse::Paths;
use skiff_core::{table, ApiError};
use skiff_store::{KeyValue, ListOptions, Revision};

use super::{Api, Call};
use crate::response::{self, wants_table};
use crate::storage::{decode, push_with_rv, with_rv};

/// Where a paginated list goes on: the revision it reads at and the last
/// key it returned.
pub fn encode_continue(rev: Revision, key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({"rv": rev, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(Revision, String), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    Ok((
        v["rv"].as_i64().ok_or_else(bad)?,
        v["start"].as_str().ok_or_else(bad)?.to_owned(),
    ))
}

/// Selectors of a list or watch.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// What the selectors read of an object.
    read: Paths,
}

impl Filter {
    pub fn from_call(call: &Call<'_>) -> Result<Self, ApiError> {
        let mut fields = call.query.field_selector.clone().unwrap_or_default();
        if let Some(name) = &call.target.name {
            // A watch on one object's path.
            let term = format!("metadata.name={name}");
            fields = if fields.is_empty() {
                term
            } else {
                format!("{fields},{term}")
            };
        }
        let labels = LabelSelector::parse(call.query.label_selector.as_deref().unwrap_or(""))?;
        let fields = FieldSelector::parse(&fields)?.supported_by_type(call.target.resource)?;
        let labelled = (!labels.is_empty()).then_some("metadata.labels");
        let read = Paths::of(fields.paths().chain(labelled));
        Ok(Self {
            labels,
            fields,
            read,
        })
    }

    /// A filter that lets every object through.
    #[cfg(test)]
    pub fn everything() -> Self {
        Self {
            labels: LabelSelector::parse("").expect("the empty selector"),
            fields: FieldSelector::parse("").expect("the empty selector"),
            read: Paths::default(),
        }
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(obj)
    }

    /// Whether the filter lets every object through.
    pub fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    /// Matches stored JSON, parsing only as much as the selectors need.
    pub fn matches_bytes(&self, bytes: &[u8]) -> Result<bool, ApiError> {
        if self.is_everything() {
            return Ok(true);
        }
        let obj = self
            .read
            .read(bytes)
            .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
        Ok(self.matches(&obj))
    }

    /// A key prefix narrower than the resource's, when the field selector
    /// pins the namespace.
    pub fn namespace<'a>(&'a self, call: &'a Call<'_>) -> Option<&'a str> {
        call.target
            .namespace
            .as_deref()
            .or_else(|| self.fields.exact("metadata.namespace"))
    }
}

impl Api {
    pub async fn get(&self, call: &Call<'_>) -> Result<Response, ApiError> {
        let t = call.target;
        let r = t.resource;
        let name = t.name.as_deref().unwrap_or_default();
        // A status is read as its whole object, and printed as one.
        let whole = t.subresource.as_deref().is_none_or(|s| s == "status");
        let scale = t.subresource.as_deref() == Some("scale");
        let table = wants_table(call.accept()) && (whole || scale);
        let metadata = response::wants_metadata(call.accept()) && whole;
        if !table && !metadata && !scale {
            let kv = self
                .objects
                .get_raw(r, t.namespace.as_deref(), name)
                .await?;
            return Ok(response::bytes(
                200,
                "application/json",
                with_rv(&kv.value, kv.mod_rev),
            ));
        }
        let obj = self.objects.get(r, t.namespace.as_deref(), name).await?;
        let include = call.query.include_object.as_deref().unwrap_or("Metadata");
        if scale {
            let scale = super::subresource::scale_of(r, &obj);
            if table {
                return Ok(response::json(200, &table::render_scale(&scale, include)));
            }
            return Ok(response::json(200, &scale));
        }
        if table {
            let rv = obj["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            return Ok(response::json(
                200,
                &table::render(r, &[obj], &rv, None, include),
            ));
        }
        if metadata {
            return Ok(response::json(200, &response::partial(&obj)));
        }
        Ok(response::json(200, &obj))
    }

    pub async fn list(&self, call: &Call<'_>) -> Result<Response, ApiError> {
        let r = call.target.resource;
        let filter = Filter::from_call(call)?;
        let limit = call.query.limit;
        let mut opts = ListOptions {
            limit: if limit == 0 { 0 } else { limit.max(100) },
            ..Default::default()
        };
        if let Some(token) = &call.query.continue_token {
            let (rev, start) = decode_continue(token)?;
            opts.revision = Some(rev);
            opts.start_after = Some(start);
        } else if call.query.resource_version_match.as_deref() == Some("Exact") {
            let rv = call.query.resource_version.as_deref().unwrap_or("");
            opts.revision =
                Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?);
        }
        let mut items: Vec<KeyValue> = Vec::new();
        let (revision, cont) = loop {
            let (page, rev, more) = self.objects.list(r, filter.namespace(call), opts.clone()).await.map_err(|e| {
                // A revision compacted away, or one the store never reached
                // (a forged token), is an expired continue token.
                if matches!(e.code, 410 | 504) && call.query.continue_token.is_some() {
                    ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
                } else {
                    e
                }
            })?;
            let last = page.last().map(|kv| kv.key.clone());
            for kv in page {
                if filter.matches_bytes(&kv.value)? {
                    items.push(kv);
                }
            }
            if limit > 0 && items.len() >= limit {
                let more = more || items.len() > limit;
                items.truncate(limit);
                let token = more.then(|| encode_continue(rev, &items[limit - 1].key));
                break (rev, token);
            }
            if !more {
                break (rev, None);
            }
            opts.revision = Some(rev);
            opts.start_after = last;
        };
        if wants_table(call.accept()) {
            let include = call.query.include_object.as_deref().unwrap_or("Metadata");
            let stored: Vec<_> = items.iter().map(|kv| (&kv.value[..], kv.mod_rev)).collect();
            let body =
                table::render_stored(r, &stored, &revision.to_string(), cont.as_deref(), include)
                    .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
            return Ok(response::bytes(200, "application/json", body));
        }
        let mut metadata = json!({"resourceVersion": revision.to_string()});
        if let Some(c) = cont {
            metadata["continue"] = json!(c);
        }
        if response::wants_metadata(call.accept()) {
            let items = items
                .iter()
                .map(|kv| decode(kv).map(|o| response::partial(&o)))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(response::json(
                200,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1",
                    "metadata": metadata, "items": items}),
            ));
        }
        let head = format!(
            "{{\"kind\":{},\"apiVersion\":{},\"metadata\":{metadata},\"items\":[",
            Value::from(r.list_kind()),
            Value::from(r.api_version())
        );
        let size: usize = items.iter().map(|kv| kv.value.len() + 32).sum();
        let mut body = Vec::with_capacity(head.len() + size + 2);
        body.extend_from_slice(head.as_bytes());
        for (i, kv) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            push_with_rv(&mut body, &kv.value, kv.mod_rev);
        }
        body.extend_from_slice(b"]}");
        Ok(response::bytes(200, "application/json", body))
    }
}
