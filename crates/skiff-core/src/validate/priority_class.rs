//! PriorityClasses, checked as upstream checks them: the `system-` names
//! are the two system classes' only, and no other class may rank above
//! the highest value a user may give, so no user's pods outrank (and
//! preempt) the system's.

use serde_json::Value;

use crate::status::Cause;

/// The highest value a class other than a system one may have.
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;

/// The system classes: name, value and description (neither is the
/// global default).
pub const SYSTEM: [(&str, i64, &str); 2] = [
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
];

const POLICIES: &[&str] = &["Never", "PreemptLowerPriority"];

pub(super) fn check(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let value = obj["value"].as_i64().unwrap_or(0);
    if name.starts_with("system-") {
        let why = match SYSTEM.iter().find(|(n, _, _)| *n == name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some((_, v, _)) if *v != value => {
                Some(format!("value of {name} PriorityClass must be {v}"))
            }
            Some(_) if obj["globalDefault"] == true => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(why) = why {
            causes.push(Cause::forbidden(
                "metadata.name",
                format!("priority class names with 'system-' prefix are reserved for system use only. error: {why}"),
            ));
        }
    } else if value > HIGHEST_USER_DEFINABLE {
        causes.push(Cause::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}"),
        ));
    }
    if let Some(policy) = obj["preemptionPolicy"].as_str() {
        if !POLICIES.contains(&policy) {
            causes.push(Cause::unsupported("preemptionPolicy", policy, POLICIES));
        }
    }
    if let Some(old) = old {
        if obj["value"] != old["value"] {
            causes.push(Cause::forbidden(
                "value",
                "may not be changed in an update.",
            ));
        }
        if obj["preemptionPolicy"] != old["preemptionPolicy"] {
            causes.push(Cause::immutable("preemptionPolicy"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::fields_of;

    fn fields(obj: &Value, old: Option<&Value>) -> Vec<String> {
        fields_of("scheduling.k8s.io", "priorityclasses", obj, old)
    }

    #[test]
    fn no_user_class_outranks_the_system() {
        let class = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert_eq!(
            fields(&class("high", 1_000_000_000), None),
            Vec::<String>::new()
        );
        assert_eq!(fields(&class("higher", 1_000_000_001), None), ["value"]);
        assert_eq!(
            fields(&class("system-node-critical", 2_000_001_000), None),
            Vec::<String>::new()
        );
        assert_eq!(
            fields(&class("system-node-critical", 5), None),
            ["metadata.name"]
        );
        assert_eq!(fields(&class("system-mine", 5), None), ["metadata.name"]);
        let mut odd = class("odd", 1);
        odd["preemptionPolicy"] = json!("Sometimes");
        assert_eq!(fields(&odd, None), ["preemptionPolicy"]);
        // Neither the value nor the policy changes after creation.
        let mut before = class("high", 10);
        before["preemptionPolicy"] = json!("Never");
        let mut after = class("high", 20);
        after["preemptionPolicy"] = json!("PreemptLowerPriority");
        assert_eq!(fields(&after, Some(&before)), ["value", "preemptionPolicy"]);
    }
}
