//! Events, checked as upstream checks them: every event names an object
//! in its own namespace; one with an `eventTime` (the new API's kind)
//! also says who reported it, what was done and why, within upstream's
//! lengths. Through `events.k8s.io` an event must be written in the new
//! form only (no deprecated fields), and only its series may change.
//! Fields are named as `v1` names them, as upstream's messages do.

use std::borrow::Cow;

use serde_json::Value;

use super::qualified_name_problem;
use crate::events;
use crate::registry::ResourceType;
use crate::status::Cause;

/// Upstream's length limits of an event's fields.
const REPORTING_INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

/// Fields an `events.k8s.io` update may not change.
const FIXED: [&str; 13] = [
    "involvedObject",
    "reason",
    "message",
    "source",
    "firstTimestamp",
    "lastTimestamp",
    "count",
    "type",
    "eventTime",
    "action",
    "related",
    "reportingComponent",
    "reportingInstance",
];

pub(super) fn check(r: &ResourceType, obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let new_api = events::is_new_api(r.group, r.plural);
    // Read as v1 names the fields; a v1 event as it is.
    let (event, old) = if new_api {
        let old = old.map(|o| Cow::Owned(events::to_core(o)));
        (Cow::Owned(events::to_core(obj)), old)
    } else {
        (Cow::Borrowed(obj), old.map(Cow::Borrowed))
    };
    legacy(&event, new_api, causes);
    if !new_api {
        return;
    }
    match &old {
        None => strict_create(&event, causes),
        Some(old) => strict_update(&event, old, causes),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// What every event must be, through either API.
fn legacy(event: &Value, new_api: bool, causes: &mut Vec<Cause>) {
    let namespace = text(&event["metadata"]["namespace"]);
    let involved = text(&event["involvedObject"]["namespace"]);
    let mismatch = || {
        Cause::invalid(
            "involvedObject.namespace",
            involved,
            "does not match event.namespace",
        )
    };
    if event["eventTime"].is_null() {
        let matches = if involved.is_empty() {
            matches!(namespace, "" | "default")
        } else {
            namespace == involved
        };
        if !matches {
            causes.push(mismatch());
        }
        return;
    }
    if involved.is_empty() && !matches!(namespace, "default" | "kube-system") {
        causes.push(mismatch());
    }
    let controller = if new_api {
        "reportingController"
    } else {
        "reportingComponent"
    };
    let reporter = text(&event["reportingComponent"]);
    if reporter.is_empty() {
        causes.push(Cause::required(controller));
    }
    if let Some(why) = qualified_name_problem(reporter) {
        causes.push(Cause::invalid(controller, reporter, why));
    }
    for (field, max) in [
        ("reportingInstance", REPORTING_INSTANCE_MAX),
        ("action", ACTION_MAX),
        ("reason", REASON_MAX),
    ] {
        let value = text(&event[field]);
        if value.is_empty() {
            causes.push(Cause::required(field));
        }
        if value.len() > max {
            causes.push(at_most(field, max));
        }
    }
    if text(&event["message"]).len() > NOTE_MAX {
        causes.push(at_most("message", NOTE_MAX));
    }
}

fn at_most(field: &str, max: usize) -> Cause {
    Cause::invalid(field, "", format!("can have at most {max} characters"))
}

/// A new event through `events.k8s.io`: in the new form only.
fn strict_create(event: &Value, causes: &mut Vec<Cause>) {
    series(event, causes);
    if event["eventTime"].is_null() {
        causes.push(Cause::required("eventTime"));
    }
    let kind = text(&event["type"]);
    if !matches!(kind, "Normal" | "Warning") {
        causes.push(Cause::invalid(
            "type",
            "",
            format!("has invalid value: {kind}"),
        ));
    }
    let unset = |field: &str| Cause::invalid(field, "", "needs to be unset");
    for field in ["firstTimestamp", "lastTimestamp"] {
        if !event[field].is_null() {
            causes.push(unset(field));
        }
    }
    if event["count"].as_i64().unwrap_or_default() != 0 {
        causes.push(unset("count"));
    }
    let source = &event["source"];
    if !text(&source["component"]).is_empty() || !text(&source["host"]).is_empty() {
        causes.push(unset("source"));
    }
}

/// A change through `events.k8s.io`: its series only.
fn strict_update(event: &Value, old: &Value, causes: &mut Vec<Cause>) {
    if event["series"] != old["series"] {
        series(event, causes);
    }
    for field in FIXED {
        let shown = match field {
            "reportingComponent" => "reportingController",
            other => other,
        };
        if event[field] != old[field] {
            causes.push(Cause::invalid_value(
                shown,
                &event[field],
                "field is immutable",
            ));
        }
    }
}

fn series(event: &Value, causes: &mut Vec<Cause>) {
    let series = &event["series"];
    if series.is_null() {
        return;
    }
    if series["count"].as_i64().unwrap_or_default() < 2 {
        causes.push(Cause::invalid("series.count", "", "should be at least 2"));
    }
    if series["lastObservedTime"].is_null() {
        causes.push(Cause::required("series.lastObservedTime"));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::causes_of;

    fn new_event() -> Value {
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "d"},
            "reportingController": "example.com/ctl", "reportingInstance": "ctl-1",
            "action": "Scaling", "reason": "Scaled", "note": "scaled", "type": "Normal"})
    }

    fn fields(group: &str, obj: &Value, old: Option<&Value>) -> Vec<String> {
        causes_of(group, "events", obj, old)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    #[test]
    fn an_event_names_an_object_of_its_namespace() {
        let event = |ns: &str, involved: Value| {
            json!({"metadata": {"name": "e", "namespace": ns}, "involvedObject": involved,
                "reason": "R", "message": "m"})
        };
        assert!(fields("", &event("d", json!({"namespace": "d"})), None).is_empty());
        // A cluster-scoped object's events live in `default`.
        assert!(fields("", &event("default", json!({"kind": "Node"})), None).is_empty());
        let causes = causes_of("", "events", &event("d", json!({"namespace": "e"})), None);
        assert_eq!(
            causes,
            [(
                "involvedObject.namespace".to_owned(),
                "Invalid value: \"e\": does not match event.namespace".to_owned()
            )]
        );
        assert_eq!(
            fields("", &event("d", json!({"kind": "Node"})), None),
            ["involvedObject.namespace"]
        );
    }

    #[test]
    fn a_new_event_says_who_did_what_and_why() {
        assert!(fields("events.k8s.io", &new_event(), None).is_empty());
        let mut bare = new_event();
        for field in [
            "reportingController",
            "reportingInstance",
            "action",
            "reason",
        ] {
            bare.as_object_mut().unwrap().remove(field);
        }
        bare["note"] = json!("n".repeat(1025));
        bare["type"] = json!("Odd");
        assert_eq!(
            fields("events.k8s.io", &bare, None),
            [
                "reportingController",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
                "message",
                "type"
            ]
        );
        // Through v1 the reporter is named as v1 names it.
        let mut core = crate::events::to_core(&new_event());
        core.as_object_mut().unwrap().remove("reportingComponent");
        assert_eq!(
            fields("", &core, None),
            ["reportingComponent", "reportingComponent"]
        );
    }

    #[test]
    fn the_new_api_takes_no_deprecated_fields_and_changes_only_series() {
        let mut old_style = new_event();
        old_style["deprecatedCount"] = json!(3);
        old_style["deprecatedSource"] = json!({"component": "c"});
        old_style["deprecatedFirstTimestamp"] = json!("2026-01-01T00:00:00Z");
        old_style.as_object_mut().unwrap().remove("eventTime");
        assert_eq!(
            fields("events.k8s.io", &old_style, None),
            ["eventTime", "firstTimestamp", "count", "source"]
        );
        let old = new_event();
        let mut next = old.clone();
        next["series"] = json!({"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"});
        assert!(fields("events.k8s.io", &next, Some(&old)).is_empty());
        next["note"] = json!("other");
        next["series"] = json!({"count": 1});
        assert_eq!(
            fields("events.k8s.io", &next, Some(&old)),
            ["series.count", "series.lastObservedTime", "message"]
        );
        // Through v1 an event may change (the count of a repeated one).
        let core = crate::events::to_core(&old);
        let mut counted = core.clone();
        counted["count"] = json!(2);
        assert!(fields("", &counted, Some(&core)).is_empty());
    }
}
