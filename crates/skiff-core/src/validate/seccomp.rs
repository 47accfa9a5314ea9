//! A `seccompProfile` field as upstream's `validateSeccompProfileField`
//! checks it: a known type, and a `Localhost` profile named by a path
//! inside the node's profile directory.

use serde_json::Value;

use super::{local_path_problem, At};
use crate::status::Cause;

const TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];

pub fn profile(profile: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    if profile.is_null() {
        return;
    }
    let kind = profile["type"].as_str().unwrap_or_default();
    let type_at = || at.field("type").to_string();
    match kind {
        "" => causes.push(Cause::required_because(
            type_at(),
            "type is required when seccompProfile is set",
        )),
        k if !TYPES.contains(&k) => causes.push(Cause::unsupported(type_at(), k, TYPES)),
        _ => {}
    }
    let name_at = || at.field("localhostProfile").to_string();
    let name = &profile["localhostProfile"];
    match (kind, name.as_str()) {
        ("Localhost", None) => causes.push(Cause::required_because(
            name_at(),
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(path)) => {
            if let Some(why) = local_path_problem(path) {
                causes.push(Cause::invalid(name_at(), path, why));
            }
        }
        _ if !name.is_null() => causes.push(Cause::invalid_value(
            name_at(),
            profile,
            "can only be set when seccomp type is Localhost",
        )),
        _ => {}
    }
}
