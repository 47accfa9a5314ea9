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

/// A list of amounts at `at`: container resources, each a quantity of at
/// least 0. Returns the amounts that parsed, in thousandths. The field's
/// path is written out only for a cause (this runs for every pod).
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
        if let Some(m) = quantity(amount, field, causes) {
            parsed.push((name.as_str(), m));
        }
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

/// Each container's requests and limits: amounts as [`amounts`], and no
/// request above its limit.
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
                    continue;
                };
                if asked > *limit {
                    let shown = resources["limits"][name].as_str().unwrap_or_default();
                    let text = resources["requests"][name].as_str().unwrap_or_default();
                    causes.push(Cause::invalid(
                        format!("{here}.requests[{name}]"),
                        text,
                        format!("must be less than or equal to {name} limit of {shown}"),
                    ));
                }
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
                "spec.containers[0].resources.requests[cpu]",
            ]
        );
        assert_eq!(
            got[3].1,
            "Invalid value: \"2\": must be less than or equal to cpu limit of 1"
        );
    }
}
