//! AppArmor profiles as upstream reads them: the `appArmorProfile` field
//! of a container, else of its pod, and the per-container annotation that
//! came before the field (deprecated since 1.30), which the API server
//! turns into the field when a pod is created.

use serde_json::{json, Value};

/// The deprecated annotation's key, before the container's name.
pub const ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// A pod spec's container lists, in the order upstream visits them.
pub const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// Whether `pod` has any of the deprecated annotations (nearly none has:
/// what reads them costs nothing then).
pub fn annotated(pod: &Value) -> bool {
    let annotations = pod["metadata"]["annotations"].as_object();
    annotations.is_some_and(|a| a.keys().any(|k| k.starts_with(ANNOTATION_PREFIX)))
}

/// The profile types a field may name.
pub const TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];

/// The longest localhost profile name (a path: `PATH_MAX` - 1).
pub const MAX_LOCALHOST_PROFILE: usize = 4095;

/// The field an annotation's value stands for, as upstream's
/// `ApparmorFieldForAnnotation`; none for a value it does not know.
pub fn field_for_annotation(value: &str) -> Option<Value> {
    match value {
        "runtime/default" => Some(json!({"type": "RuntimeDefault"})),
        "unconfined" => Some(json!({"type": "Unconfined"})),
        _ => value
            .strip_prefix("localhost/")
            .map(|name| json!({"type": "Localhost", "localhostProfile": name})),
    }
}

/// Why an annotation's value is no profile, as upstream's
/// `ValidateAppArmorProfileFormat`.
pub fn annotation_problem(value: &str) -> Option<String> {
    let known = value.is_empty()
        || value == "runtime/default"
        || value == "unconfined"
        || value.starts_with("localhost/");
    (!known).then(|| format!("invalid AppArmor profile name: {value:?}"))
}

/// Whether a profile field is valid (see `validate`'s own causes).
fn valid(profile: &Value) -> bool {
    let name = profile["localhostProfile"].as_str();
    match profile["type"].as_str() {
        Some("Localhost") => {
            name.is_some_and(|n| !n.is_empty() && n.trim() == n && n.len() <= MAX_LOCALHOST_PROFILE)
        }
        Some("RuntimeDefault" | "Unconfined") => profile["localhostProfile"].is_null(),
        _ => false,
    }
}

/// Turns a new pod's annotations into the fields they stand for, as
/// upstream's `applyAppArmorVersionSkew`: a container's annotation sets
/// its field when the field is unset and the profile differs from the
/// pod's. Returns upstream's deprecation warnings.
pub fn fields_from_annotations(pod: &mut Value) -> Vec<String> {
    if pod["spec"]["os"]["name"] == "windows" {
        return Vec::new();
    }
    // Nearly no pod has them: nothing is copied for the others.
    if !annotated(pod) {
        return Vec::new();
    }
    let Some(annotations) = pod["metadata"]["annotations"].as_object().cloned() else {
        return Vec::new();
    };
    let pod_profile = pod["spec"]["securityContext"]["appArmorProfile"].clone();
    let mut warnings = Vec::new();
    for list in CONTAINER_LISTS {
        let Some(containers) = pod["spec"][list].as_array_mut() else {
            continue;
        };
        for c in containers {
            sync(c, &annotations, &pod_profile, &mut warnings);
        }
    }
    warnings
}

/// [`fields_from_annotations`] for one container.
fn sync(
    c: &mut Value,
    annotations: &serde_json::Map<String, Value>,
    pod_profile: &Value,
    warnings: &mut Vec<String>,
) {
    let name = c["name"].as_str().unwrap_or_default();
    let key = format!("{ANNOTATION_PREFIX}{name}");
    let Some(value) = annotations.get(&key).and_then(Value::as_str) else {
        return;
    };
    if !c["securityContext"]["appArmorProfile"].is_null() {
        return;
    }
    let field = field_for_annotation(value).filter(valid);
    let warn = match field {
        None => true,
        Some(field) if field != *pod_profile => {
            c["securityContext"]["appArmorProfile"] = field;
            true
        }
        Some(_) => false,
    };
    if warn {
        let field = format!("metadata.annotations[{key}]");
        warnings.push(format!(
            "{field}: deprecated since v1.30; use the \"appArmorProfile\" field instead"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_become_fields_unless_the_pod_says_the_same() {
        let mut pod = json!({
            "metadata": {"annotations": {
                "container.apparmor.security.beta.kubernetes.io/a": "localhost/web",
                "container.apparmor.security.beta.kubernetes.io/b": "runtime/default",
                "container.apparmor.security.beta.kubernetes.io/c": "unconfined",
                "container.apparmor.security.beta.kubernetes.io/d": "bogus"}},
            "spec": {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}},
                "containers": [{"name": "a"}, {"name": "b"},
                    {"name": "c", "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}},
                    {"name": "d"}]}});
        let warnings = fields_from_annotations(&mut pod);
        let field =
            |i: usize| pod["spec"]["containers"][i]["securityContext"]["appArmorProfile"].clone();
        assert_eq!(
            field(0),
            json!({"type": "Localhost", "localhostProfile": "web"})
        );
        assert_eq!(field(1), Value::Null, "the pod's profile already says so");
        assert_eq!(
            field(2),
            json!({"type": "RuntimeDefault"}),
            "a field set stays"
        );
        assert_eq!(field(3), Value::Null);
        assert_eq!(
            warnings,
            [
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/a]: deprecated since v1.30; use the \"appArmorProfile\" field instead",
                "metadata.annotations[container.apparmor.security.beta.kubernetes.io/d]: deprecated since v1.30; use the \"appArmorProfile\" field instead",
            ]
        );
        assert_eq!(
            annotation_problem("bogus").unwrap(),
            "invalid AppArmor profile name: \"bogus\""
        );
        assert_eq!(annotation_problem("localhost/x"), None);
    }
}
