//! Events at both APIs: `v1` and `events.k8s.io/v1` are one resource,
//! stored as `v1` (as upstream stores them), so an event one client
//! writes through either is what `kubectl get events` and
//! `kubectl describe` show. The two differ only in field names.

use serde_json::{Map, Value};

/// Fields named differently at the two APIs: (`v1`, `events.k8s.io/v1`).
const RENAMED: [(&str, &str); 7] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Whether a resource is `events.k8s.io`'s view of events.
pub fn is_new_api(group: &str, plural: &str) -> bool {
    (group, plural) == ("events.k8s.io", "events")
}

/// An `events.k8s.io/v1` event as `v1` says it.
pub fn to_core(event: &Value) -> Value {
    renamed(event, "v1", |(core, new)| (new, core))
}

/// A `v1` event as `events.k8s.io/v1` says it.
pub fn from_core(event: &Value) -> Value {
    renamed(event, "events.k8s.io/v1", |pair| pair)
}

/// `event` with each field renamed `from` → `to` by `direction` over
/// [`RENAMED`], at `api_version`.
fn renamed(
    event: &Value,
    api_version: &str,
    direction: impl Fn((&'static str, &'static str)) -> (&'static str, &'static str),
) -> Value {
    let Some(fields) = event.as_object() else {
        return event.clone();
    };
    let mut out = Map::with_capacity(fields.len());
    for (name, value) in fields {
        let name = RENAMED
            .iter()
            .map(|pair| direction(*pair))
            .find(|(from, _)| from == name)
            .map_or(name.as_str(), |(_, to)| to);
        out.insert(name.to_owned(), value.clone());
    }
    out.insert("apiVersion".into(), Value::from(api_version));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_round_trip_through_either_api_keeps_every_field() {
        let core = json!({
            "kind": "Event", "apiVersion": "v1",
            "metadata": {"name": "p.1", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d"},
            "reason": "Pulled", "message": "pulled", "type": "Normal",
            "source": {"component": "kubelet"}, "count": 2,
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": null,
            "eventTime": null, "reportingComponent": "kubelet", "reportingInstance": "n",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:00.000000Z"},
        });
        let new = from_core(&core);
        assert_eq!(new["apiVersion"], "events.k8s.io/v1");
        assert_eq!(new["regarding"]["name"], "p");
        assert_eq!(new["note"], "pulled");
        assert_eq!(new["deprecatedSource"]["component"], "kubelet");
        assert_eq!(new["deprecatedCount"], 2);
        assert_eq!(new["deprecatedLastTimestamp"], Value::Null);
        assert_eq!(new["reportingController"], "kubelet");
        assert_eq!(new["series"]["count"], 2);
        assert!(new.get("message").is_none() && new.get("involvedObject").is_none());
        assert_eq!(to_core(&new), core);
    }
}
