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

/// Whether two objects are equal but for the top-level fields `skip` and
/// the metadata fields `skip_meta`, compared in place (no copies).
pub fn equal_except(a: &Value, b: &Value, skip: &[&str], skip_meta: &[&str]) -> bool {
    fn maps_equal(
        a: &Map<String, Value>,
        b: &Map<String, Value>,
        skip: &[&str],
        same: impl Fn(&str, &Value, &Value) -> bool,
    ) -> bool {
        let kept =
            |m: &Map<String, Value>| m.keys().filter(|k| !skip.contains(&k.as_str())).count();
        // From the last field: status and spec, which differ most often,
        // come after metadata.
        kept(a) == kept(b)
            && a.iter()
                .rev()
                .filter(|(k, _)| !skip.contains(&k.as_str()))
                .all(|(k, v)| b.get(k).is_some_and(|w| same(k, v, w)))
    }
    match (a.as_object(), b.as_object()) {
        (Some(a), Some(b)) => maps_equal(a, b, skip, |k, v, w| {
            match (k, v.as_object(), w.as_object()) {
                ("metadata", Some(v), Some(w)) => maps_equal(v, w, skip_meta, |_, x, y| x == y),
                _ => v == w,
            }
        }),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skipped_fields_do_not_count_and_order_does_not_matter() {
        let a = json!({"kind": "Pod", "metadata": {"name": "p", "resourceVersion": "1"}, "spec": {"x": 1}, "status": {"phase": "Running"}});
        let b = json!({"status": {"phase": "Pending"}, "spec": {"x": 1}, "metadata": {"resourceVersion": "2", "name": "p"}, "kind": "Pod"});
        assert!(equal_except(&a, &b, &["status"], &["resourceVersion"]));
        assert!(!equal_except(&a, &b, &[], &["resourceVersion"]));
        assert!(!equal_except(&a, &b, &["status"], &[]));
        let no_version = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}, "status": {"phase": "Pending"}});
        assert!(equal_except(&b, &no_version, &[], &["resourceVersion"]));
        let other_name = json!({"kind": "Pod", "metadata": {"name": "q"}, "spec": {"x": 1}, "status": {"phase": "Pending"}});
        assert!(!equal_except(&b, &other_name, &[], &["resourceVersion"]));
        assert!(equal_except(&a, &b, &["metadata", "status"], &[]));
        let extra = json!({"kind": "Pod", "metadata": {}, "spec": {"x": 1}, "extra": null});
        assert!(!equal_except(&a, &extra, &["metadata", "status"], &[]));
        assert!(equal_except(&json!(3), &json!(3), &["status"], &[]));
    }
}
