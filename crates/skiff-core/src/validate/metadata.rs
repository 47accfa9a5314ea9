//! The metadata every object carries, checked as upstream's
//! `ValidateObjectMeta`: label and annotation keys are qualified names,
//! label values label values, annotations fit in 256 KiB, finalizers are
//! qualified names, and owner references name one owner each with at most
//! one controller (the garbage collector acts on them).

use serde_json::Value;

use super::{is_label_value, qualified_name_problem, LABEL_VALUE_MSG};
use crate::status::Cause;

/// The most bytes an object's annotations (keys and values) may hold.
const MAX_ANNOTATIONS: usize = 256 * 1024;

/// Finalizers upstream names without a domain.
const STANDARD_FINALIZERS: [&str; 3] = ["kubernetes", "orphan", "foregroundDeletion"];

pub(super) fn check(obj: &Value, causes: &mut Vec<Cause>) {
    let meta = &obj["metadata"];
    labels(&meta["labels"], causes);
    annotations(&meta["annotations"], causes);
    finalizers(&meta["finalizers"], causes);
    owners(&meta["ownerReferences"], causes);
}

fn labels(labels: &Value, causes: &mut Vec<Cause>) {
    let at = "metadata.labels";
    for (k, v) in labels.as_object().into_iter().flatten() {
        if let Some(why) = qualified_name_problem(k) {
            causes.push(Cause::invalid(at, k, why));
        }
        let v = v.as_str().unwrap_or_default();
        if !is_label_value(v) {
            causes.push(Cause::invalid(at, v, LABEL_VALUE_MSG));
        }
    }
}

fn annotations(annotations: &Value, causes: &mut Vec<Cause>) {
    let at = "metadata.annotations";
    let mut size = 0;
    for (k, v) in annotations.as_object().into_iter().flatten() {
        if let Some(why) = qualified_name_problem(&k.to_ascii_lowercase()) {
            causes.push(Cause::invalid(at, k, why));
        }
        size += k.len() + v.as_str().map_or(0, str::len);
    }
    if size > MAX_ANNOTATIONS {
        causes.push(Cause::too_long(at, MAX_ANNOTATIONS));
    }
}

fn finalizers(list: &Value, causes: &mut Vec<Cause>) {
    let at = "metadata.finalizers";
    let names: Vec<&str> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for name in &names {
        if let Some(why) = qualified_name_problem(name) {
            causes.push(Cause::invalid(at, name, why));
        }
    }
    if names.contains(&"orphan") && names.contains(&"foregroundDeletion") {
        let why = "finalizer orphan and foregroundDeletion cannot be both set";
        causes.push(Cause::invalid_value(at, list, why));
    }
}

/// A Namespace's own finalizers (`spec.finalizers`): upstream's or
/// qualified.
pub(super) fn namespace_finalizers(spec: &Value, causes: &mut Vec<Cause>) {
    let at = "spec.finalizers";
    for name in spec["finalizers"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if let Some(why) = qualified_name_problem(name) {
            causes.push(Cause::invalid(at, name, why));
        } else if !name.contains('/') && !STANDARD_FINALIZERS.contains(&name) {
            let why = "name is neither a standard finalizer name nor is it fully qualified";
            causes.push(Cause::invalid(at, name, why));
        }
    }
}

fn owners(list: &Value, causes: &mut Vec<Cause>) {
    let at = "metadata.ownerReferences";
    let mut controller: Option<String> = None;
    for owner in list.as_array().into_iter().flatten() {
        let text = |f: &str| owner[f].as_str().unwrap_or_default();
        let api_version = text("apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or_default();
        if version.is_empty() {
            let why = "version must not be empty";
            causes.push(Cause::invalid(format!("{at}.apiVersion"), api_version, why));
        }
        for field in ["kind", "name", "uid"] {
            if text(field).is_empty() {
                causes.push(Cause::invalid(
                    format!("{at}.{field}"),
                    "",
                    "must not be empty",
                ));
            }
        }
        if api_version == "v1" && text("kind") == "Event" {
            let why = "/v1, Kind=Event is disallowed from being an owner";
            causes.push(Cause::invalid_value(at, owner, why));
        }
        if owner["controller"] == true {
            let this = format!("{}/{}", text("kind"), text("name"));
            match &controller {
                Some(first) => causes.push(Cause::invalid_value(
                    at,
                    list,
                    format!("Only one reference can have Controller set to true. Found \"true\" in references for {first} and {this}"),
                )),
                None => controller = Some(this),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::{causes_of, fields_of};

    fn map(meta: Value) -> Value {
        let mut meta = meta;
        meta["name"] = json!("c");
        meta["namespace"] = json!("n");
        json!({"metadata": meta})
    }

    fn fields(meta: Value) -> Vec<String> {
        fields_of("", "configmaps", &map(meta), None)
    }

    #[test]
    fn keys_are_qualified_names() {
        let good = json!({"labels": {"app.kubernetes.io/name": "web", "tier": ""},
            "annotations": {"Example.com/Note": "anything at all: {}"}});
        assert!(fields(good).is_empty());
        let bad = json!({"labels": {"a b": "x", "example.com/": "y", "k": "not ok"},
            "annotations": {"-x": "1"}});
        assert_eq!(
            fields(bad),
            [
                "metadata.labels",
                "metadata.labels",
                "metadata.labels",
                "metadata.annotations"
            ]
        );
        let huge = json!({"annotations": {"a": "x".repeat(super::MAX_ANNOTATIONS)}});
        let causes = causes_of("", "configmaps", &map(huge), None);
        assert_eq!(
            causes,
            [(
                "metadata.annotations".to_owned(),
                "Too long: may not be more than 262144 bytes".to_owned()
            )]
        );
    }

    #[test]
    fn finalizers_are_qualified_names() {
        let good = json!({"finalizers": ["kubernetes", "example.com/cleanup", "x.k8s.io"]});
        assert!(fields(good).is_empty());
        assert_eq!(
            fields(json!({"finalizers": ["a b", "orphan", "foregroundDeletion"]})),
            ["metadata.finalizers", "metadata.finalizers"]
        );
        // A namespace's own are upstream's or carry a domain.
        let ns = |f: Value| json!({"metadata": {"name": "n"}, "spec": {"finalizers": f}});
        let of = |f| fields_of("", "namespaces", &ns(f), None);
        assert!(of(json!(["kubernetes", "example.com/x"])).is_empty());
        assert_eq!(of(json!(["cleanup"])), ["spec.finalizers"]);
    }

    #[test]
    fn owners_are_named_and_one_controls() {
        let owner = |kind: &str, name: &str, controller: bool| json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": "u", "controller": controller});
        let good = json!({"ownerReferences": [owner("ReplicaSet", "a", true), owner("Widget", "b", false)]});
        assert!(fields(good).is_empty());
        let two = json!({"ownerReferences": [owner("ReplicaSet", "a", true), owner("ReplicaSet", "b", true)]});
        let causes = causes_of("", "configmaps", &map(two), None);
        assert_eq!(causes.len(), 1);
        assert!(
            causes[0]
                .1
                .ends_with("Found \"true\" in references for ReplicaSet/a and ReplicaSet/b"),
            "{:?}",
            causes[0]
        );
        let empty = json!({"ownerReferences": [{"apiVersion": "apps/", "controller": false}]});
        assert_eq!(
            fields(empty),
            [
                "metadata.ownerReferences.apiVersion",
                "metadata.ownerReferences.kind",
                "metadata.ownerReferences.name",
                "metadata.ownerReferences.uid"
            ]
        );
        let event = json!({"ownerReferences": [{"apiVersion": "v1", "kind": "Event", "name": "e", "uid": "u"}]});
        assert_eq!(fields(event), ["metadata.ownerReferences"]);
    }
}
