//! Tolerations, of a pod or of a RuntimeClass, and a node's taints,
//! checked as upstream's `ValidateTolerations` and `validateNodeTaints`:
//! the scheduler and the taint manager read them.

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

/// A node's taints: a qualified key, a label value, a known effect, one
/// taint per key and effect.
pub(super) fn taints(spec: &Value, causes: &mut Vec<Cause>) {
    let list = spec["taints"].as_array().map_or(&[][..], Vec::as_slice);
    let mut seen = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let at = format!("spec.taints[{i}]");
        let text = |f: &str| t[f].as_str().unwrap_or_default();
        let (key, value, effect) = (text("key"), text("value"), text("effect"));
        if let Some(why) = qualified_name_problem(key) {
            causes.push(Cause::invalid(format!("{at}.key"), key, why));
        }
        if !is_label_value(value) {
            causes.push(Cause::invalid(
                format!("{at}.value"),
                value,
                LABEL_VALUE_MSG,
            ));
        }
        if effect.is_empty() {
            causes.push(Cause::required(format!("{at}.effect")));
        } else if !EFFECTS.contains(&effect) {
            causes.push(Cause::unsupported(format!("{at}.effect"), effect, EFFECTS));
        }
        if seen.contains(&(key, effect)) {
            causes.push(Cause::duplicate(
                at,
                format!("{t}: taints must be unique by key and effect pair"),
            ));
            continue;
        }
        seen.push((key, effect));
    }
}
