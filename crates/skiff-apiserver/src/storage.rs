//! Objects over the key-value store: JSON encoding, `resourceVersion` from
//! the store's revisions, and compare-and-swap updates.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;
use skiff_core::registry::ResourceType;
use skiff_core::{events, meta, ApiError};
use skiff_store::{KeyValue, ListOptions, Revision, Store};

use crate::response::store_error;

/// The typed-object view of the store.
#[derive(Clone)]
pub struct Objects {
    pub store: Arc<dyn Store>,
}

/// Decodes a stored object and stamps its `resourceVersion`.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    decode_at(&kv.value, kv.mod_rev)
}

pub fn decode_at(bytes: &[u8], rev: Revision) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::internal(format!("stored object is corrupt: {e}")))?;
    meta::set(&mut obj, "resourceVersion", rev.to_string());
    Ok(obj)
}

/// The object a store read found, if any.
fn decoded(
    kv: skiff_store::Result<Option<KeyValue>>,
    r: &ResourceType,
    name: &str,
) -> Result<Option<Value>, ApiError> {
    let kv = kv.map_err(|e| store_error(e, r, name))?;
    kv.map(|mut kv| {
        kv.value = in_version(r, kv.value);
        decode(&kv)
    })
    .transpose()
}

/// A custom resource's storage version, when `r` is another served
/// version of it (the objects of every version are stored at one).
fn storage_version(r: &ResourceType) -> Option<String> {
    if !r.custom {
        return None;
    }
    let served = skiff_core::crd::served(r)?;
    (served.storage_version != r.version)
        .then(|| format!("{}/{}", served.group, served.storage_version))
}

/// A stored object as `r`'s version shows it, when that differs
/// (`None` conversion: only its `apiVersion` does).
pub fn converted(r: &ResourceType, stored: &[u8]) -> Option<Bytes> {
    if is_hpa_v1(r) {
        let obj = serde_json::from_slice::<Value>(stored).ok()?;
        return Some(encode(&skiff_core::autoscaling::to_v1(&obj)));
    }
    if events::is_new_api(r.group, r.plural) {
        let obj = serde_json::from_slice::<Value>(stored).ok()?;
        return Some(encode(&events::from_core(&obj)));
    }
    storage_version(r)?;
    let mut obj = serde_json::from_slice::<Value>(stored).ok()?;
    obj["apiVersion"] = Value::from(r.api_version());
    Some(encode(&obj))
}

/// HorizontalPodAutoscalers at v1, stored (and converted) at v2.
fn is_hpa_v1(r: &ResourceType) -> bool {
    (r.group, r.version, r.plural) == ("autoscaling", "v1", "horizontalpodautoscalers")
}

/// A stored object as `r`'s version shows it (see [`converted`]).
pub fn in_version(r: &ResourceType, stored: Bytes) -> Bytes {
    converted(r, &stored).unwrap_or(stored)
}

/// An object written through `r` as it is stored.
fn for_storage(r: &ResourceType, obj: &Value) -> Result<Bytes, ApiError> {
    if is_hpa_v1(r) {
        return encode_bounded(&skiff_core::autoscaling::to_v2(obj));
    }
    if events::is_new_api(r.group, r.plural) {
        return encode_bounded(&events::to_core(obj));
    }
    match storage_version(r) {
        Some(api_version) => {
            let mut stored = obj.clone();
            stored["apiVersion"] = Value::from(api_version);
            encode_bounded(&stored)
        }
        None => encode_bounded(obj),
    }
}

/// An object written through `from` as `to` shows it, both being views
/// of one stored resource (its versions; both APIs of events).
pub fn convert(from: &ResourceType, to: &ResourceType, obj: &Value) -> Result<Value, ApiError> {
    let shown = in_version(to, for_storage(from, obj)?);
    let mut out: Value = serde_json::from_slice(&shown)
        .map_err(|e| ApiError::internal(format!("converting the object: {e}")))?;
    if let Some(rv) = meta::get(obj, "resourceVersion").cloned() {
        meta::set(&mut out, "resourceVersion", rv);
    }
    Ok(out)
}

/// Where pods are stored.
pub const PODS: &str = "/registry/core/pods/";

/// The largest object stored (etcd's request limit, 1.5 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 << 19;

/// Encodes an object for storage, refusing one over [`MAX_OBJECT_BYTES`]
/// (a patch or an update can grow an object past what a request body
/// may carry).
pub fn encode_bounded(obj: &Value) -> Result<Bytes, ApiError> {
    let bytes = encode(obj);
    if bytes.len() > MAX_OBJECT_BYTES {
        return Err(ApiError::too_large(MAX_OBJECT_BYTES));
    }
    Ok(bytes)
}

/// Encodes an object for storage in upstream's field order (which
/// clients compare; `kind`, `apiVersion` and `metadata` first), without
/// its `resourceVersion`, which [`with_rv`] splices in without parsing.
pub fn encode(obj: &Value) -> Bytes {
    let Some(map) = obj.as_object() else {
        return Bytes::from(serde_json::to_vec(obj).unwrap_or_default());
    };
    let with_metadata;
    let map = match map.get("metadata") {
        Some(_) => map,
        None => {
            let mut m = map.clone();
            m.insert("metadata".into(), Value::Object(Default::default()));
            with_metadata = m;
            &with_metadata
        }
    };
    let mut out = Vec::with_capacity(1024);
    skiff_core::protobuf::order::write_without_revision(&mut out, map);
    // The bytes live on in the watch cache: copied out of the grown buffer
    // into a block of their size (an allocator may shrink a block in
    // place, keeping what `shrink_to_fit` gives back unused).
    Bytes::copy_from_slice(&out)
}

/// Whether stored JSON holds `needle` anywhere: a cheap look before a
/// decode (a false positive only costs the decode).
pub fn mentions(stored: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(stored, needle).is_some()
}

/// A stored object's JSON with its `resourceVersion` spliced into the
/// metadata where upstream has it (after `uid`, else first), without
/// parsing it (see [`encode`]).
pub fn with_rv(bytes: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 32);
    push_with_rv(&mut out, bytes, rev);
    out
}

/// [`with_rv`] written at the end of `out`.
pub fn push_with_rv(out: &mut Vec<u8>, bytes: &[u8], rev: Revision) {
    const KEY: &[u8] = b"\"metadata\":{";
    let Some(at) = memchr::memmem::find(bytes, KEY) else {
        // Not written by `encode`: take the slow road.
        if let Ok(v) = decode_at(bytes, rev) {
            let _ = serde_json::to_writer(out, &v);
        }
        return;
    };
    let start = at + KEY.len();
    let rv = |out: &mut Vec<u8>| {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "\"resourceVersion\":\"{rev}\"");
    };
    match after_uid(&bytes[start..]) {
        Some(end) => {
            out.extend_from_slice(&bytes[..start + end]);
            out.push(b',');
            rv(out);
            out.extend_from_slice(&bytes[start + end..]);
        }
        None => {
            out.extend_from_slice(&bytes[..start]);
            rv(out);
            if bytes.get(start) != Some(&b'}') {
                out.push(b',');
            }
            out.extend_from_slice(&bytes[start..]);
        }
    }
}

/// Where the metadata's own `uid` field ends, in the JSON of the
/// metadata's fields (after its `{`): a scan of strings and nesting, so a
/// `uid` inside labels or owner references is not taken for it.
fn after_uid(meta: &[u8]) -> Option<usize> {
    let (mut depth, mut i) = (0usize, 0);
    let mut key_at_top = true;
    while i < meta.len() {
        match meta[i] {
            b'"' => {
                let begin = i;
                i += 1;
                while i < meta.len() && meta[i] != b'"' {
                    i += if meta[i] == b'\\' { 2 } else { 1 };
                }
                // A top-level key `uid` whose value is a string.
                if depth == 0 && key_at_top && &meta[begin..=i.min(meta.len() - 1)] == b"\"uid\"" {
                    let value = meta.get(i + 1..)?.strip_prefix(b":\"")?;
                    let close = value.iter().position(|b| *b == b'"')?;
                    return Some(i + 3 + close + 1);
                }
                key_at_top = false;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' if depth == 0 => return None,
            b'}' | b']' => depth -= 1,
            b',' if depth == 0 => key_at_top = true,
            _ => {}
        }
        i += 1;
    }
    None
}

/// What a read-modify-write decided.
pub enum Change {
    Write(Value),
    Keep,
}

/// An object after an update.
pub struct Written {
    pub obj: Value,
    /// The JSON this update stored, with its resourceVersion, as a client
    /// is shown it; none when nothing new was stored.
    pub json: Option<Vec<u8>>,
}

impl From<Value> for Written {
    fn from(obj: Value) -> Self {
        Self { obj, json: None }
    }
}

impl Change {
    /// Writes `next` unless it equals `current` but for its
    /// resourceVersion (upstream skips such no-op updates).
    pub fn unless_same(current: &Value, next: Value) -> Self {
        if meta::equal_except(current, &next, &[], &["resourceVersion"]) {
            Self::Keep
        } else {
            Self::Write(next)
        }
    }
}

impl Objects {
    pub async fn get(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        decode(&self.get_raw(r, ns, name).await?)
    }

    /// The stored bytes and revision of an object.
    pub async fn get_raw(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<KeyValue, ApiError> {
        let mut kv = self
            .store
            .get(&r.key(ns, name))
            .await
            .map_err(|e| store_error(e, r, name))?
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        kv.value = in_version(r, kv.value);
        Ok(kv)
    }

    /// An object as the watch cache has it, which may trail the latest
    /// write: for admission's reads of policy objects.
    pub async fn recent(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let kv = self.store.get_any(&r.key(ns, name)).await;
        decoded(kv, r, name)
    }

    /// As [`Self::recent`], decoding the object only when its stored
    /// bytes mention one of `needles`; one found without any is an empty
    /// object (for a reader that only looks for what they name).
    pub async fn recent_mentioning(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        needles: &[&[u8]],
    ) -> Result<Option<Value>, ApiError> {
        let kv = self.store.get_any(&r.key(ns, name)).await;
        match kv {
            Ok(Some(kv)) if !needles.iter().any(|n| mentions(&kv.value, n)) => {
                Ok(Some(Value::Object(Default::default())))
            }
            kv => decoded(kv, r, name),
        }
    }

    /// Every object of a resource in a namespace (or everywhere), as the
    /// watch cache has them.
    pub async fn recent_list(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        self.recent_list_where(r, ns, |_| true).await
    }

    /// As [`Self::recent_list`], decoding only the objects whose stored
    /// bytes `keep` lets through.
    pub async fn recent_list_where(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        keep: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Value>, ApiError> {
        let items = self
            .store
            .list_any(&r.list_prefix(ns))
            .await
            .map_err(|e| store_error(e, r, ""))?;
        items
            .into_iter()
            .filter(|kv| keep(&kv.value))
            .map(|mut kv| {
                kv.value = in_version(r, kv.value);
                decode(&kv)
            })
            .collect()
    }

    pub async fn try_get(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let kv = self.store.get(&r.key(ns, name)).await;
        decoded(kv, r, name)
    }

    /// Stores a new object; returns its JSON as stored, with the new
    /// `resourceVersion` (also set on `obj`).
    pub async fn create(&self, r: &ResourceType, obj: &mut Value) -> Result<Vec<u8>, ApiError> {
        let name = meta::name(obj).to_owned();
        let key = r.key(meta::namespace(obj), &name);
        let bytes = for_storage(r, obj)?;
        let rev = self
            .store
            .create(&key, bytes.clone())
            .await
            .map_err(|e| store_error(e, r, &name))?;
        meta::set(obj, "resourceVersion", rev.to_string());
        Ok(with_rv(&in_version(r, bytes), rev))
    }

    /// Reads the object, lets `change` decide its next state, and writes it
    /// if the object did not change meanwhile (retrying if it did).
    pub async fn update<F>(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(Value) -> Result<Change, ApiError>,
    {
        loop {
            let (current, read) = self.read(r, ns, name).await?;
            if let Some(done) = self.write(r, &read, change(current)?).await? {
                return Ok(done.obj);
            }
        }
    }

    /// An object as `r` shows it, with what it is stored as: the start
    /// of a compare-and-swap [`Objects::write`] finishes.
    pub async fn read(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> Result<(Value, KeyValue), ApiError> {
        let kv = self
            .store
            .get(&r.key(ns, name))
            .await
            .map_err(|e| store_error(e, r, name))?
            .ok_or_else(|| ApiError::not_found(r.group, r.plural, name))?;
        let shown = converted(r, &kv.value);
        let obj = decode_at(shown.as_deref().unwrap_or(&kv.value), kv.mod_rev)?;
        Ok((obj, kv))
    }

    /// Writes `change` over what [`Objects::read`] found, if the object is
    /// still as read; `None` if it changed or went meanwhile (read again).
    pub async fn write(
        &self,
        r: &ResourceType,
        read: &KeyValue,
        change: Change,
    ) -> Result<Option<Written>, ApiError> {
        let name = read.key.rsplit('/').next().unwrap_or_default();
        let (bytes, mut written) = match change {
            Change::Write(next) => (for_storage(r, &next)?, Some(next)),
            // Unchanged, but stored in a form to renew: written again.
            Change::Keep if self.store.stale(read) => (read.value.clone(), None),
            Change::Keep => {
                return decode_at(&in_version(r, read.value.clone()), read.mod_rev)
                    .map(|obj| Some(Written::from(obj)))
            }
        };
        match self
            .store
            .update(&read.key, bytes.clone(), read.mod_rev)
            .await
        {
            Ok(rev) => match written.take() {
                Some(mut obj) => {
                    meta::set(&mut obj, "resourceVersion", rev.to_string());
                    let json = Some(with_rv(&in_version(r, bytes), rev));
                    Ok(Some(Written { obj, json }))
                }
                None => decode_at(&in_version(r, bytes), rev).map(|obj| Some(Written::from(obj))),
            },
            Err(skiff_store::Error::Conflict { .. } | skiff_store::Error::NotFound { .. }) => {
                Ok(None)
            }
            Err(e) => Err(store_error(e, r, name)),
        }
    }

    /// Replaces the object if its revision is still `expected`.
    pub async fn replace(
        &self,
        r: &ResourceType,
        obj: &mut Value,
        expected: Revision,
    ) -> Result<(), ApiError> {
        let name = meta::name(obj).to_owned();
        let key = r.key(meta::namespace(obj), &name);
        let rev = self
            .store
            .update(&key, for_storage(r, obj)?, expected)
            .await
            .map_err(|e| store_error(e, r, &name))?;
        meta::set(obj, "resourceVersion", rev.to_string());
        Ok(())
    }

    /// Deletes the object if its revision is still `expected` (when given).
    pub async fn delete(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        name: &str,
        expected: Option<Revision>,
    ) -> Result<Value, ApiError> {
        let kv = self
            .store
            .delete(&r.key(ns, name), expected)
            .await
            .map_err(|e| store_error(e, r, name))?;
        decode_at(&in_version(r, kv.value), kv.mod_rev)
    }

    pub async fn list(
        &self,
        r: &ResourceType,
        ns: Option<&str>,
        opts: ListOptions,
    ) -> Result<(Vec<KeyValue>, Revision, bool), ApiError> {
        let page = self
            .store
            .list(&r.list_prefix(ns), opts)
            .await
            .map_err(|e| store_error(e, r, ""))?;
        let items = page
            .items
            .into_iter()
            .map(|mut kv| {
                kv.value = in_version(r, kv.value);
                kv
            })
            .collect();
        Ok((items, page.revision, page.more))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn splicing_the_revision_equals_decoding() {
        for obj in [
            json!({"kind": "Pod", "apiVersion": "v1", "spec": {"template": {"metadata": {"x": 1}}}, "metadata": {"name": "a", "resourceVersion": "3"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {}}),
            json!({"kind": "Widget", "apiVersion": "x.io/v1", "metadata": {"labels": {"uid": "l"},
                "ownerReferences": [{"uid": "o"}], "name": "w\\\"uid\":\"", "uid": "u"}}),
        ] {
            let stored = encode(&obj);
            assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
            let spliced: Value = serde_json::from_slice(&with_rv(&stored, 42)).unwrap();
            assert_eq!(spliced, decode_at(&stored, 42).unwrap());
            assert_eq!(spliced["metadata"]["resourceVersion"], "42");
            assert!(spliced["spec"]
                .get("template")
                .is_none_or(|t| t["metadata"].get("resourceVersion").is_none()));
        }
    }

    #[test]
    fn a_mention_is_found_anywhere_and_only_whole() {
        let pod = br#"{"spec":{"nodeName":"n1"},"status":{"phase":"Pending"}}"#;
        assert!(mentions(pod, br#""nodeName":""#));
        assert!(mentions(pod, br#"{"spec""#));
        assert!(mentions(pod, br#""Pending"}}"#));
        assert!(!mentions(pod, br#""nodeName":"n2""#));
        assert!(!mentions(br#"{"a":1}"#, br#"{"a":1} and more"#));
    }

    #[test]
    fn the_revision_comes_after_the_uid_as_upstream_writes_it() {
        let pod = json!({"metadata": {"labels": {"uid": "l"}, "uid": "u", "name": "p"},
            "apiVersion": "v1", "kind": "Pod"});
        let shown = String::from_utf8(with_rv(&encode(&pod), 7)).unwrap();
        assert_eq!(
            shown,
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","uid":"u","resourceVersion":"7","labels":{"uid":"l"}}}"#
        );
        // Stored in another order (before Skiff wrote upstream's), a `uid`
        // nested in labels or owner references is not taken for the
        // object's.
        let old = br#"{"kind":"Pod","apiVersion":"v1","metadata":{"labels":{"uid":"l"},"ownerReferences":[{"uid":"o"}],"uid":"u"}}"#;
        let spliced: Value = serde_json::from_slice(&with_rv(old, 9)).unwrap();
        assert_eq!(spliced["metadata"]["resourceVersion"], "9");
        assert_eq!(spliced["metadata"]["labels"], json!({"uid": "l"}));
        assert_eq!(
            spliced["metadata"]["ownerReferences"],
            json!([{"uid": "o"}])
        );
    }
}
