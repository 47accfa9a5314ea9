//! Reading and writing the `metadata` of objects held as JSON values.

use serde_json::{Map, Value};

/// A borrowed view of an object's metadata fields.
pub fn get<'a>(obj: &'a Value, field: &str) -> Option<&'a Value> {
    obj.get("metadata")?.get(field)
}

pub fn get_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    get(obj, field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    get_str(obj, "name").unwrap_or("")
}

pub fn namespace(obj: &Value) -> Option<&str> {
    get_str(obj, "namespace").filter(|s| !s.is_empty())
}

/// The metadata map, created if absent.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = Value::Object(Map::new());
    }
    obj["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn set(obj: &mut Value, field: &str, value: impl Into<Value>) {
    meta_mut(obj).insert(field.to_owned(), value.into());
}

pub fn remove(obj: &mut Value, field: &str) -> Option<Value> {
    meta_mut(obj).remove(field)
}

/// The object's labels as string pairs.
pub fn labels(obj: &Value) -> impl Iterator<Item = (&str, &str)> {
    get(obj, "labels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
}

pub fn resource_version(obj: &Value) -> Option<i64> {
    get_str(obj, "resourceVersion")?.parse().ok()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    get(obj, "finalizers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub fn is_deleting(obj: &Value) -> bool {
    get(obj, "deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// The value at a dotted path such as `spec.nodeName`.
pub fn path<'a>(obj: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(obj, |v, part| v.get(part))
}

/// Now, in the RFC 3339 form upstream writes (`2024-05-01T10:00:00Z`).
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now with microseconds, as upstream's MicroTime (`…T10:00:00.123456Z`).
pub fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
