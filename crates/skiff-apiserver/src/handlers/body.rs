//! Request bodies: size limit, JSON or YAML, the kind check, and field
//! validation against the typed struct.

use axum::body::Body;
use bytes::Bytes;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::HeaderMap;
use serde_json::{json, Map, Value};
use skiff_core::registry::ResourceType;
use skiff_core::ApiError;

/// Upstream's limit on a request body.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub async fn read(body: Body, headers: &HeaderMap) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(ApiError::too_large(MAX_BODY));
    }
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY))
}

/// The media type of the body, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a body of this media type is read as JSON (no type, any type,
/// or a JSON type that is not YAML).
fn is_json(content_type: &str) -> bool {
    matches!(content_type, "" | "*/*")
        || (content_type.contains("json") && !content_type.contains("yaml"))
}

/// Parses JSON, YAML or Kubernetes protobuf, as the content type says.
pub fn parse(bytes: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if content_type == "application/vnd.kubernetes.protobuf" {
        return skiff_core::protobuf::decode(bytes);
    }
    let value: Value = if is_json(content_type) {
        serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "error decoding request body: json parse error: {e}"
            ))
        })?
    } else if content_type.contains("yaml") {
        serde_yaml::from_slice(bytes)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))?
    } else {
        return Err(ApiError::unsupported_media_type(content_type));
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(value)
}

/// Fills in an absent `apiVersion` or `kind` from the URL's resource, as
/// upstream's decoder does for a create or an update.
pub fn default_kind(r: &ResourceType, obj: &mut Value) {
    if obj["kind"].as_str().is_none_or(str::is_empty) {
        obj["kind"] = Value::from(r.kind);
    }
    if obj["apiVersion"].as_str().is_none_or(str::is_empty) {
        obj["apiVersion"] = Value::from(r.api_version());
    }
}

/// Checks that the object's `apiVersion` and `kind` fit the resource.
pub fn check_kind(r: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let kind = obj["kind"].as_str().unwrap_or("");
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            compact(obj)
        )));
    }
    if api_version.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{}'",
            compact(obj)
        )));
    }
    let (group, _) = skiff_core::registry::split_api_version(api_version);
    if kind != r.kind || group != r.group {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {api_version}, Kind={kind}",
            r.kind
        )));
    }
    if api_version != r.api_version() {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            r.api_version()
        )));
    }
    Ok(())
}

fn compact(obj: &Value) -> String {
    let s = obj.to_string();
    if s.len() > 200 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

/// The object a create or an update sends, checked as `parse`,
/// `default_kind`, `check_kind` and `typed` do one after another. A
/// built-in kind in JSON goes from the bytes straight into its typed
/// struct; only a body that fails that way is parsed again step by step,
/// for the error those steps give.
pub fn object(
    r: &ResourceType,
    bytes: &[u8],
    content_type: &str,
    validation: Option<&str>,
) -> Result<(Value, Vec<String>), ApiError> {
    if is_json(content_type) && !r.custom {
        let mut unknown = Vec::new();
        let report = (validation != Some("Ignore")).then_some(&mut unknown);
        if let Ok(clean) = (r.decode_json)(bytes, report) {
            return unknown_fields(clean, unknown, validation);
        }
    }
    let mut obj = parse(bytes, content_type)?;
    default_kind(r, &mut obj);
    check_kind(r, &obj)?;
    typed(r, obj, validation)
}

/// Round-trips an object through its typed struct. Shape errors are 400;
/// unknown fields are errors under `Strict`, warnings under `Warn` (the
/// default) and dropped silently under `Ignore`.
pub fn typed(
    r: &ResourceType,
    obj: Value,
    validation: Option<&str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let (clean, unknown) = match skiff_core::crd::served(r) {
        Some(served) => served.decode(obj),
        None => built_in(r, obj, validation)?,
    };
    unknown_fields(clean, unknown, validation)
}

/// [`typed`] for an object a merge patch made from a stored one: only the
/// top-level fields the patch names go through the typed struct, and of
/// the metadata only the fields it names; the others are the stored
/// object's, typed when stored. A status patch then leaves the spec and
/// the managed fields, most of a pod, as they are, even when it names
/// the pod's uid as a precondition. Custom resources, whose schemas
/// default on every write, go through whole.
pub fn typed_patched(
    r: &ResourceType,
    mut patched: Value,
    patch: &Value,
    validation: Option<&str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let (Some(named), Some(obj), None) = (
        patch.as_object(),
        patched.as_object_mut(),
        skiff_core::crd::served(r),
    ) else {
        return typed(r, patched, validation);
    };
    let (kept, mut sent): (Map<_, _>, Map<_, _>) = std::mem::take(obj)
        .into_iter()
        .partition(|(k, _)| !named.contains_key(k) && !matches!(k.as_str(), "apiVersion" | "kind"));
    let named_meta = named.get("metadata").and_then(Value::as_object);
    let kept_meta: Map<_, _> = match (named_meta, sent.get_mut("metadata")) {
        (Some(names), Some(Value::Object(meta))) => {
            let (kept, sent) = std::mem::take(meta)
                .into_iter()
                .partition(|(k, _)| !names.contains_key(k));
            *meta = sent;
            kept
        }
        _ => Map::new(),
    };
    *obj = sent;
    let (mut clean, warnings) = typed(r, patched, validation)?;
    if let Some(obj) = clean.as_object_mut() {
        obj.extend(kept);
        if !kept_meta.is_empty() {
            if let Value::Object(meta) = obj.entry("metadata").or_insert_with(|| json!({})) {
                meta.extend(kept_meta);
            }
        }
    }
    Ok((clean, warnings))
}

/// The warnings, or under `Strict` the error, for the fields the typed
/// struct did not know.
pub fn unknown_fields(
    clean: Value,
    unknown: Vec<String>,
    validation: Option<&str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let messages: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {f:?}"))
        .collect();
    if validation == Some("Strict") && !messages.is_empty() {
        return Err(ApiError::bad_request(format!(
            "strict decoding error: {}",
            messages.join(", ")
        )));
    }
    if validation == Some("Ignore") {
        return Ok((clean, Vec::new()));
    }
    Ok((clean, messages))
}

/// A built-in object's typed round-trip and the paths it dropped.
fn built_in(
    r: &ResourceType,
    obj: Value,
    validation: Option<&str>,
) -> Result<(Value, Vec<String>), ApiError> {
    let mut unknown = Vec::new();
    let report = (validation != Some("Ignore")).then_some(&mut unknown);
    let clean = (r.decode)(obj, report).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version {:?} cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })?;
    Ok((clean, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn unknown_fields_are_found_with_paths() {
        let r = skiff_core::registry::lookup("apps", "v1", "deployments").unwrap();
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "bogus": 1},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "imagex": "typo"}]}}}});
        let (_, warnings) = typed(r, d.clone(), None).unwrap();
        assert_eq!(
            warnings,
            vec![
                "unknown field \"metadata.bogus\"".to_string(),
                "unknown field \"spec.template.spec.containers[0].imagex\"".to_string(),
            ]
        );
        let err = typed(r, d, Some("Strict")).unwrap_err();
        assert_eq!(err.code, 400);
        assert!(err.message.starts_with("strict decoding error"));
    }

    #[test]
    fn a_patched_object_typed_in_part_is_the_whole_typed() {
        let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        let stored = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "creationTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "m", "operation": "Update", "apiVersion": "v1",
                    "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:restartPolicy": {}}}}]},
            "spec": {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Always"},
            "status": {"phase": "Pending"}});
        let (stored, _) = typed(pods, stored, None).unwrap();
        let patches = [
            json!({"status": {"phase": "Running", "podIP": "10.0.0.1"}}),
            json!({"metadata": {"labels": {"a": "b"}, "bogus": 1}, "status": {"bogusStatus": true}}),
            json!({"spec": {"containers": [{"name": "c", "image": "j", "imagex": "typo"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00.5Z"}]}}),
            json!({"status": null}),
            json!({"metadata": {"uid": "u1"}, "status": {"phase": "Running"}}),
            json!({"metadata": {"labels": {"a": "b"}, "annotations": null}}),
            json!({"metadata": {"labels": {"a": 1}}}),
            json!({"metadata": null}),
        ];
        for patch in patches {
            let mut patched = stored.clone();
            json_patch::merge(&mut patched, &patch);
            for validation in [None, Some("Ignore"), Some("Strict")] {
                let whole = typed(pods, patched.clone(), validation);
                let part = typed_patched(pods, patched.clone(), &patch, validation);
                match (whole, part) {
                    (Ok(w), Ok(p)) => assert_eq!(w, p, "{patch}"),
                    (Err(w), Err(p)) => assert_eq!((w.code, w.message), (p.code, p.message)),
                    (w, p) => panic!("{patch}: {w:?} against {p:?}"),
                }
            }
        }
        // A JSON patch (a list of operations) goes through whole.
        let ops = json!([{"op": "add", "path": "/spec/bogus", "value": 1}]);
        let mut patched = stored.clone();
        patched["spec"]["bogus"] = json!(1);
        let (_, warnings) = typed_patched(pods, patched, &ops, None).unwrap();
        assert_eq!(warnings, ["unknown field \"spec.bogus\""]);
    }

    /// `object` step by step, the way it checks a body it cannot decode
    /// straight into the typed struct.
    fn in_steps(
        r: &ResourceType,
        bytes: &[u8],
        validation: Option<&str>,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let mut obj = parse(bytes, "application/json")?;
        default_kind(r, &mut obj);
        check_kind(r, &obj)?;
        typed(r, obj, validation)
    }

    #[test]
    fn bytes_decoded_once_give_what_the_steps_give() {
        let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        let deployments = skiff_core::registry::lookup("apps", "v1", "deployments").unwrap();
        let bodies: &[(&ResourceType, &str)] = &[
            (
                pods,
                r#"{"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"name": "c", "image": "i", "imagex": "typo"}, {"name": "d", "image": "i", "ports": [{"containerPort": 80, "bogus": true}]}]}}"#,
            ),
            (
                pods,
                r#"{"apiVersion": "v1", "kind": "Pod", "extra": {"deep": [1, 2]}, "metadata": {"name": "p", "labels": {"a": "1", "a": "2"}}}"#,
            ),
            (
                deployments,
                r#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "bogus": 1}, "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "imagex": "typo"}]}}}}"#,
            ),
        ];
        for (r, body) in bodies {
            for validation in [None, Some("Warn"), Some("Ignore"), Some("Strict")] {
                let once = object(r, body.as_bytes(), "application/json", validation);
                let steps = in_steps(r, body.as_bytes(), validation);
                match (once, steps) {
                    (Ok(once), Ok(steps)) => assert_eq!(once, steps, "{body} {validation:?}"),
                    (Err(once), Err(steps)) => {
                        assert_eq!((once.code, once.message), (steps.code, steps.message))
                    }
                    (once, steps) => panic!("{body} {validation:?}: {once:?} against {steps:?}"),
                }
            }
        }
        let (_, warnings) = object(pods, bodies[0].1.as_bytes(), "", None).unwrap();
        assert_eq!(
            warnings,
            [
                "unknown field \"spec.containers[0].imagex\"",
                "unknown field \"spec.containers[1].ports[0].bogus\"",
            ]
        );
        let (pod, _) = object(pods, bodies[1].1.as_bytes(), "", None).unwrap();
        assert_eq!(
            pod["metadata"]["labels"]["a"], "2",
            "the last of a repeated key"
        );
        let err = object(deployments, bodies[2].1.as_bytes(), "", Some("Strict")).unwrap_err();
        assert_eq!(
            err.message,
            "strict decoding error: unknown field \"metadata.bogus\", unknown field \"spec.template.spec.containers[0].imagex\""
        );
    }

    #[test]
    fn a_body_the_typed_struct_refuses_gets_the_steps_error() {
        let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        for body in [
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "p"}}"#,
            r#"{"apiVersion": "apps/v1", "kind": "Pod"}"#,
            r#"{"apiVersion": "", "kind": "Pod", "metadata": {"name": "p"}}"#,
            r#"{"metadata": {"name": 3}}"#,
            r#"{"metadata": {"name": "p"}"#,
            r#"[1, 2]"#,
            r#"{"metadata": {}} trailing"#,
        ] {
            let once = object(pods, body.as_bytes(), "application/json", None);
            let steps = in_steps(pods, body.as_bytes(), None);
            match (once, steps) {
                (Ok(once), Ok(steps)) => assert_eq!(once, steps, "{body}"),
                (Err(once), Err(steps)) => {
                    assert_eq!(once.code, 400, "{body}");
                    assert_eq!(once.message, steps.message, "{body}");
                }
                (once, steps) => panic!("{body}: {once:?} against {steps:?}"),
            }
        }
        let (pod, _) = object(
            pods,
            br#"{"apiVersion": "", "kind": "Pod", "metadata": {"name": "p"}}"#,
            "",
            None,
        )
        .unwrap();
        assert_eq!(pod["apiVersion"], "v1", "an empty apiVersion is filled in");
    }

    #[test]
    fn wrong_kind_is_a_bad_request() {
        let r = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        assert_eq!(
            check_kind(r, &json!({"apiVersion": "v1", "kind": "Service"}))
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            check_kind(r, &json!({"apiVersion": "v1"}))
                .unwrap_err()
                .code,
            400
        );
        check_kind(r, &json!({"apiVersion": "v1", "kind": "Pod"})).unwrap();
        let mut bare = json!({"metadata": {"name": "p"}});
        default_kind(r, &mut bare);
        check_kind(r, &bare).unwrap();
        let mut other = json!({"apiVersion": "apps/v1"});
        default_kind(r, &mut other);
        assert_eq!(check_kind(r, &other).unwrap_err().code, 400);
    }
}
