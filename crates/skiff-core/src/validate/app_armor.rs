//! AppArmor settings as upstream validates them: each `appArmorProfile`
//! field; the deprecated per-container annotations (a profile they can
//! name, a container that exists, agreeing with the fields when a pod is
//! created, never added, changed or removed afterwards).

use serde_json::Value;

use super::At;
use crate::app_armor::{
    annotated, annotation_problem, ANNOTATION_PREFIX, CONTAINER_LISTS, MAX_LOCALHOST_PROFILE, TYPES,
};
use crate::status::Cause;

const LOCALHOST_REQUIRED: &str = "must be set when AppArmor type is Localhost";

/// One `appArmorProfile` field at `at`, as upstream's
/// `ValidateAppArmorProfileField`.
pub fn profile(profile: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    if profile.is_null() {
        return;
    }
    let name_at = || at.field("localhostProfile").to_string();
    let name = &profile["localhostProfile"];
    match profile["type"].as_str().unwrap_or_default() {
        "Localhost" => match name.as_str() {
            None => causes.push(Cause::required_because(name_at(), LOCALHOST_REQUIRED)),
            Some(n) if n.trim() != n => causes.push(Cause::invalid(
                name_at(),
                n,
                "must not be padded with whitespace",
            )),
            Some("") => causes.push(Cause::required_because(name_at(), LOCALHOST_REQUIRED)),
            Some(n) if n.len() > MAX_LOCALHOST_PROFILE => {
                causes.push(Cause::too_long(name_at(), MAX_LOCALHOST_PROFILE))
            }
            Some(_) => {}
        },
        "RuntimeDefault" | "Unconfined" => {
            if !name.is_null() {
                causes.push(Cause::invalid_value(
                    name_at(),
                    name,
                    "can only be set when AppArmor type is Localhost",
                ));
            }
        }
        "" => causes.push(Cause::required_because(
            at.field("type").to_string(),
            "type is required when appArmorProfile is set",
        )),
        other => causes.push(Cause::unsupported(
            at.field("type").to_string(),
            other,
            TYPES,
        )),
    }
}

/// The containers of a pod spec with their paths, as upstream visits
/// them.
fn containers<'a>(spec: &'a Value, at: &str) -> Vec<(String, &'a Value)> {
    let each = |list: &'static str| {
        let items = spec[list].as_array().map_or(&[][..], Vec::as_slice);
        items
            .iter()
            .enumerate()
            .map(move |(i, c)| (format!("{at}.{list}[{i}]"), c))
    };
    CONTAINER_LISTS.into_iter().flat_map(each).collect()
}

/// Whether any container of a pod spec (ephemeral ones too) is `name`.
fn has_container(spec: &Value, name: &str) -> bool {
    let mut all = CONTAINER_LISTS
        .iter()
        .flat_map(|l| spec[*l].as_array().into_iter().flatten());
    all.any(|c| c["name"] == name)
}

/// The deprecated annotations of a pod (or template) whose spec is
/// `spec`, at `at`: upstream's `ValidateAppArmorPodAnnotations`.
pub fn annotations(annotations: &Value, spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(annotations) = annotations.as_object() else {
        return;
    };
    for (key, value) in annotations {
        let Some(container) = key.strip_prefix(ANNOTATION_PREFIX) else {
            continue;
        };
        let field = format!("{at}[{key}]");
        if !has_container(spec, container) {
            causes.push(Cause::invalid(&field, container, "container not found"));
        }
        let value = value.as_str().unwrap_or_default();
        if let Some(why) = annotation_problem(value) {
            causes.push(Cause::invalid(&field, value, why));
        }
    }
}

/// A new pod's annotations agree with its fields, as upstream's
/// `validateAppArmorAnnotationsAndFieldsMatchOnCreate`.
pub fn match_on_create(pod: &Value, causes: &mut Vec<Cause>) {
    let spec = &pod["spec"];
    if spec["os"]["name"] == "windows" || !annotated(pod) {
        return;
    }
    let pod_profile = &spec["securityContext"]["appArmorProfile"];
    for (at, c) in containers(spec, "spec") {
        let own = &c["securityContext"]["appArmorProfile"];
        let profile = if own.is_null() { pod_profile } else { own };
        let name = c["name"].as_str().unwrap_or_default();
        let key = format!("{ANNOTATION_PREFIX}{name}");
        let annotation = pod["metadata"]["annotations"][&key].as_str();
        let Some(annotation) = annotation.filter(|_| !profile.is_null()) else {
            continue;
        };
        let here = format!("{at}.securityContext.appArmorProfile");
        let named = annotation.strip_prefix("localhost/");
        let same_type = match profile["type"].as_str() {
            Some("Unconfined") => annotation == "unconfined",
            Some("RuntimeDefault") => annotation == "runtime/default",
            Some("Localhost") => named.is_some(),
            _ => true,
        };
        if !same_type {
            causes.push(Cause::forbidden(
                format!("{here}.type"),
                "apparmor type in annotation and field must match",
            ));
        } else if profile["type"] == "Localhost" && profile["localhostProfile"].as_str() != named {
            causes.push(Cause::forbidden(
                format!("{here}.localhostProfile"),
                "apparmor profile in annotation and field must match",
            ));
        }
    }
}

/// A pod's deprecated annotations stay as they were created, as
/// upstream's `ValidatePodSpecificAnnotationUpdates`.
pub fn unchanged(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let of = |pod: &Value| {
        pod["metadata"]["annotations"]
            .as_object()
            .cloned()
            .unwrap_or_default()
    };
    let (new, old) = (of(new), of(old));
    let ours = |k: &&String| k.starts_with(ANNOTATION_PREFIX);
    for (key, before) in old.iter().filter(|(k, _)| ours(k)) {
        if new.get(key) != Some(before) {
            causes.push(Cause::forbidden(
                format!("metadata.annotations[{key}]"),
                "may not remove or update AppArmor annotations",
            ));
        }
    }
    for key in new.keys().filter(ours).filter(|k| !old.contains_key(*k)) {
        causes.push(Cause::forbidden(
            format!("metadata.annotations[{key}]"),
            "may not add AppArmor annotations",
        ));
    }
}
