//! Errors in Kubernetes' own `Status` form: an HTTP code, a machine-readable
//! reason clients branch on, and a message for people.

use serde_json::{json, Value};

/// A failed request, as the API reports it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    /// `details` of the Status: name, group, kind, causes (boxed, as is
    /// what follows: errors stay small).
    pub details: Option<Box<Value>>,
    /// What admission had said when it refused.
    pub said: Option<Box<Said>>,
}

/// The warnings and audit annotations admission gathered before it
/// refused a write: upstream sends and records them with the refusal.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Said {
    pub warnings: Vec<String>,
    pub audit: Vec<(String, String)>,
}

/// One field-level cause of an `Invalid` error.
#[derive(Clone, Debug, PartialEq)]
pub struct Cause {
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }
    pub fn invalid(field: impl Into<String>, value: &str, why: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value:?}: {why}"),
        }
    }
    /// An `Invalid` cause quoting the value as upstream does: strings
    /// quoted, numbers and other values bare.
    pub fn invalid_value(field: impl Into<String>, v: &Value, why: impl std::fmt::Display) -> Self {
        match v {
            Value::String(s) => Self::invalid(field, s, why),
            other => Self {
                reason: "FieldValueInvalid",
                field: field.into(),
                message: format!("Invalid value: {other}: {why}"),
            },
        }
    }
    /// A `Required` cause that says when or what is required.
    pub fn required_because(field: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueRequired",
            field: field.into(),
            message: format!("Required value: {why}"),
        }
    }
    pub fn duplicate(field: impl Into<String>, shown: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {shown}"),
        }
    }
    pub fn forbidden(field: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {why}"),
        }
    }
    pub fn immutable(field: impl Into<String>) -> Self {
        Self {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: "field is immutable".into(),
        }
    }
    pub fn too_long(field: impl Into<String>, max_bytes: usize) -> Self {
        Self {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max_bytes} bytes"),
        }
    }
    pub fn too_many(field: impl Into<String>, count: usize, max: usize) -> Self {
        Self {
            reason: "FieldValueTooMany",
            field: field.into(),
            message: format!("Too many: {count}: must have at most {max} items"),
        }
    }
    pub fn unsupported(field: impl Into<String>, value: &str, allowed: &[&str]) -> Self {
        Self {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                allowed
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// `details`, in the order of upstream's Go struct (name, group, kind),
/// which clients compare byte for byte.
fn details(group: &str, kind: &str, name: &str) -> Value {
    let mut d = serde_json::Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    d.insert("kind".into(), json!(kind));
    Value::Object(d)
}

/// The `group.resource` form upstream uses in messages (`deployments.apps`).
fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            said: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            404,
            "NotFound",
            format!("{} {name:?} not found", qualified(group, resource)),
        );
        e.details = Some(Box::new(details(group, resource, name)));
        e
    }
    pub fn no_route(path: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("the server could not find the requested resource ({path})"),
        )
    }
    pub fn method_not_allowed(verb: &str, resource: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("{verb} is not supported on {resource}"),
        )
    }
    pub fn not_acceptable(message: impl Into<String>) -> Self {
        Self::new(406, "NotAcceptable", message)
    }
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{} {name:?} already exists", qualified(group, resource)),
        );
        e.details = Some(Box::new(details(group, resource, name)));
        e
    }
    pub fn conflict(group: &str, resource: &str, name: &str, why: impl std::fmt::Display) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} {name:?}: {why}",
                qualified(group, resource)
            ),
        );
        e.details = Some(Box::new(details(group, resource, name)));
        e
    }
    pub fn stale(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }
    /// A server-side apply conflict, one cause per contested field.
    pub fn apply_conflict(conflicts: &[(String, String)]) -> Self {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(manager, field)| format!("conflict with {manager:?}: {field}"))
            .collect();
        let mut e = Self::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                lines.join("\n")
            ),
        );
        e.details = Some(Box::new(json!({
            "causes": conflicts.iter().map(|(manager, field)| json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {manager:?}"),
                "field": field,
            })).collect::<Vec<_>>()
        })));
        e
    }
    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml; got {content_type:?}"))
    }
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<Cause>) -> Self {
        let summary: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let mut d = details(group, kind, name);
        d["causes"] = causes
            .iter()
            .map(|c| json!({ "reason": c.reason, "message": c.message, "field": c.field }))
            .collect();
        let mut e = Self::new(
            422,
            "Invalid",
            format!(
                "{kind}.{} {name:?} is invalid: {}",
                if group.is_empty() { "" } else { group },
                summary.join(", ")
            )
            .replace(". \"", " \""),
        );
        e.details = Some(Box::new(d));
        e
    }
    /// An eviction a PodDisruptionBudget refuses (429), as upstream's:
    /// `why` says which budget and what it needs.
    pub fn disruption_budget(why: impl Into<String>) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Cannot evict pod as it would violate the pod's disruption budget.",
        );
        e.details = Some(Box::new(
            json!({"causes": [{"reason": "DisruptionBudget", "message": why.into()}]}),
        ));
        e
    }
    /// A write an admission plugin refused, worded as upstream's
    /// `admission.NewForbidden` (`pods "x" is forbidden: why`), with the
    /// code and reason the plugin chose and `why` as its one cause.
    pub fn admission_refused(
        code: u16,
        reason: &str,
        (group, resource, name): (&str, &str, &str),
        why: &str,
    ) -> Self {
        let target = qualified(group, resource);
        let message = if name.is_empty() {
            format!("{target} is forbidden: {why}")
        } else {
            format!("{target} {name:?} is forbidden: {why}")
        };
        let mut e = Self::refused(code, reason, message);
        let mut d = details(group, resource, name);
        d["causes"] = json!([{ "message": why }]);
        e.details = Some(Box::new(d));
        e
    }
    /// A refusal whose code and reason another party chose (an admission
    /// webhook): a reason upstream does not define is left out.
    pub fn refused(code: u16, reason: &str, message: impl Into<String>) -> Self {
        const REASONS: &[&str] = &[
            "Unauthorized",
            "Forbidden",
            "NotFound",
            "AlreadyExists",
            "Conflict",
            "Gone",
            "Invalid",
            "ServerTimeout",
            "Timeout",
            "TooManyRequests",
            "BadRequest",
            "MethodNotAllowed",
            "NotAcceptable",
            "RequestEntityTooLarge",
            "UnsupportedMediaType",
            "InternalError",
            "Expired",
            "ServiceUnavailable",
        ];
        let reason = REASONS
            .iter()
            .find(|r| **r == reason)
            .copied()
            .unwrap_or("");
        Self::new(code, reason, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(504, "Timeout", message)
    }

    /// The `v1 Status` body.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        });
        if !self.reason.is_empty() {
            s["reason"] = json!(self.reason);
        }
        if let Some(d) = &self.details {
            s["details"] = (**d).clone();
        }
        s["code"] = json!(self.code);
        s
    }
}

/// A `Success` Status (for deletes that return no object).
pub fn success(group: &str, kind: &str, name: &str, uid: &str) -> Value {
    let mut d = details(group, kind, name);
    if !uid.is_empty() {
        d["uid"] = json!(uid);
    }
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d })
}
