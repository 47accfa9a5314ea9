//! Amounts of resources (a container's requests and limits, a pod's
//! overhead), checked as upstream checks them. The node turns them into
//! cgroup settings, so an amount that does not parse or is negative is
//! refused, never run without its limit.

use serde_json::Value;

use super::{is_dns_subdomain, At};
use crate::quantity::parse_milli;
use crate::status::Cause;

pub(super) const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// Resources a container may ask for: the standard ones and extended
/// ones outside the `kubernetes.io` domains.
pub(super) fn container_resource(name: &str) -> bool {
    match name.split_once('/') {
        Some((domain, _)) => !domain.ends_with("kubernetes.io") && is_dns_subdomain(domain),
        None => {
            matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
        }
    }
}

/// Whether `name` is an extended resource (a device a node advertises):
/// counted whole and never overcommitted.
pub(super) fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/") && !name.starts_with("requests.")
}

/// Whether a container may request less of `name` than it limits: of the
/// node's own resources, all but huge pages.
fn overcommits(name: &str) -> bool {
    !is_extended(name) && !name.starts_with("hugepages-")
}

/// A list of amounts at `at`: container resources, each a quantity of at
/// least 0, extended ones whole. Returns the amounts that parsed, in
/// thousandths. The field's path is written out only for a cause (this
/// runs for every pod).
pub(super) fn amounts<'a>(
    list: &'a Value,
    at: At<'_>,
    causes: &mut Vec<Cause>,
) -> Vec<(&'a str, i128)> {
    let mut parsed = Vec::new();
    for (name, amount) in list.as_object().into_iter().flatten() {
        let field = || format!("{at}[{name}]");
        if !container_resource(name) {
            let why = "must be a standard resource for containers";
            causes.push(Cause::invalid(field(), name, why));
        }
        let Some(m) = quantity(amount, field, causes) else {
            continue;
        };
        if m % 1000 != 0 && is_extended(name) {
            let text = amount.as_str().unwrap_or_default();
            causes.push(Cause::invalid(field(), text, "must be an integer"));
        }
        parsed.push((name.as_str(), m));
    }
    parsed
}

/// The amount at `field` in thousandths: a quantity of at least 0.
pub(super) fn quantity(
    amount: &Value,
    field: impl FnOnce() -> String,
    causes: &mut Vec<Cause>,
) -> Option<i128> {
    let text = amount.as_str().unwrap_or_default();
    match parse_milli(text) {
        None => causes.push(Cause::invalid(field(), text, QUANTITY_MSG)),
        Some(m) if m < 0 => causes.push(Cause::invalid(
            field(),
            text,
            "must be greater than or equal to 0",
        )),
        Some(m) => return Some(m),
    }
    None
}

/// Each container's requests and limits: amounts as [`amounts`], no
/// request above its limit, and a resource that cannot be overcommitted
/// requested exactly as limited.
pub(super) fn containers(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let container = at.item(list, i);
            let here = container.field("resources");
            let resources = &c["resources"];
            let limits = amounts(&resources["limits"], here.field("limits"), causes);
            let requests = amounts(&resources["requests"], here.field("requests"), causes);
            for (name, asked) in requests {
                let Some((_, limit)) = limits.iter().find(|(n, _)| *n == name) else {
                    if !overcommits(name) {
                        causes.push(Cause::required_because(
                            here.field("limits").to_string(),
                            "Limit must be set for non overcommitable resources",
                        ));
                    }
                    continue;
                };
                let shown = resources["limits"][name].as_str().unwrap_or_default();
                let why = if asked != *limit && !overcommits(name) {
                    format!("must be equal to {name} limit of {shown}")
                } else if asked > *limit {
                    format!("must be less than or equal to {name} limit of {shown}")
                } else {
                    continue;
                };
                let text = resources["requests"][name].as_str().unwrap_or_default();
                causes.push(Cause::invalid(format!("{here}.requests"), text, why));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::causes_of;

    fn causes(resources: Value) -> Vec<(String, String)> {
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": resources}]}});
        causes_of("", "pods", &pod, None)
    }

    #[test]
    fn devices_are_whole_and_never_overcommitted() {
        let got = causes(
            json!({"limits": {"example.com/gpu": "2", "example.com/fpga": "500m"},
            "requests": {"example.com/gpu": "1", "example.com/nic": "1"}}),
        );
        assert_eq!(
            got,
            [
                (
                    "spec.containers[0].resources.limits[example.com/fpga]".to_owned(),
                    "Invalid value: \"500m\": must be an integer".to_owned()
                ),
                (
                    "spec.containers[0].resources.requests".to_owned(),
                    "Invalid value: \"1\": must be equal to example.com/gpu limit of 2".to_owned()
                ),
                (
                    "spec.containers[0].resources.limits".to_owned(),
                    "Required value: Limit must be set for non overcommitable resources".to_owned()
                ),
            ]
        );
        // The node's own resources may be requested below their limit.
        assert_eq!(
            causes(json!({"limits": {"cpu": "2", "example.com/gpu": "1"},
                "requests": {"cpu": "1", "example.com/gpu": "1"}})),
            vec![]
        );
    }

    #[test]
    fn a_limit_that_cannot_be_applied_is_refused() {
        let good = json!({"limits": {"cpu": "1", "memory": "1Gi", "example.com/dongle": "1"},
            "requests": {"cpu": "500m", "memory": "1Gi"}});
        assert_eq!(causes(good), vec![]);
        let bad = json!({"limits": {"cpu": "1", "memory": "lots", "ephemeral-storage": "-1Gi"},
            "requests": {"cpu": "2", "pods": "1"}});
        let got = causes(bad);
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].resources.limits[memory]",
                "spec.containers[0].resources.limits[ephemeral-storage]",
                "spec.containers[0].resources.requests[pods]",
                "spec.containers[0].resources.requests",
            ]
        );
        assert_eq!(
            got[3].1,
            "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
    }
}
