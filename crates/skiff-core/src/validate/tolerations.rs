//! Tolerations, of a pod or of a RuntimeClass, checked as upstream's
//! `ValidateTolerations`: the scheduler and the taint manager read them.

use serde_json::Value;

use super::{is_label_value, qualified_name_problem, At, LABEL_VALUE_MSG};
use crate::status::Cause;

const EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Checks each toleration of `holder` (a pod spec or a class's
/// scheduling), found at `at`.
pub(super) fn check(holder: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let list = holder["tolerations"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for (i, t) in list.iter().enumerate() {
        let here = at.item("tolerations", i);
        let text = |f: &str| t[f].as_str().unwrap_or_default();
        let (key, operator, value, effect) =
            (text("key"), text("operator"), text("value"), text("effect"));
        if !key.is_empty() {
            if let Some(why) = qualified_name_problem(key) {
                causes.push(Cause::invalid(here.field("key").to_string(), key, why));
            }
        } else if operator != "Exists" {
            causes.push(Cause::invalid(
                here.field("operator").to_string(),
                operator,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        if !t["tolerationSeconds"].is_null() && effect != "NoExecute" {
            causes.push(Cause::invalid(
                here.field("effect").to_string(),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" if !is_label_value(value) => causes.push(Cause::invalid(
                here.field("operator").to_string(),
                value,
                LABEL_VALUE_MSG,
            )),
            "" | "Equal" => {}
            "Exists" if !value.is_empty() => causes.push(Cause::invalid(
                here.field("operator").to_string(),
                value,
                "value must be empty when `operator` is 'Exists'",
            )),
            "Exists" => {}
            other => causes.push(Cause::unsupported(
                here.field("operator").to_string(),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !EFFECTS.contains(&effect) {
            causes.push(Cause::unsupported(
                here.field("effect").to_string(),
                effect,
                EFFECTS,
            ));
        }
    }
}
