//! A Service's load-balancer fields, as upstream validates them: each
//! belongs to `type: LoadBalancer` only; source ranges are CIDRs; the
//! class is a qualified name that may not change once set; the
//! health-check port belongs to a `Local` external traffic policy and
//! stays as allocated.

use serde_json::Value;

use super::qualified_name_problem;
use crate::status::Cause;

const ONLY_LB: &str = "may only be used when `type` is 'LoadBalancer'";

/// Whether `s` is a CIDR of either family (`10.9.8.0/24`, `2001:db8::/64`).
fn is_cidr(s: &str) -> bool {
    let Some((ip, prefix)) = s.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

/// The load-balancer fields of `spec` (and `old`, the spec before an
/// update).
pub(super) fn check(spec: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let lb = spec["type"] == "LoadBalancer";
    let ranges = spec["loadBalancerSourceRanges"].as_array();
    if let Some(ranges) = ranges.filter(|r| !r.is_empty()) {
        // Upstream's field path, capital letter included.
        let at = "spec.LoadBalancerSourceRanges";
        if !lb {
            causes.push(Cause::forbidden(at, ONLY_LB));
        }
        for (i, r) in ranges.iter().enumerate() {
            // Space-padded values are allowed, as upstream allows them.
            let value = r.as_str().unwrap_or_default().trim();
            if !is_cidr(value) {
                let why = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";
                causes.push(Cause::invalid(format!("{at}[{i}]"), value, why));
            }
        }
    }
    if !spec["allocateLoadBalancerNodePorts"].is_null() && !lb {
        causes.push(Cause::forbidden(
            "spec.allocateLoadBalancerNodePorts",
            ONLY_LB,
        ));
    }
    let class = "spec.loadBalancerClass";
    if let Some(name) = spec["loadBalancerClass"].as_str() {
        if !lb {
            causes.push(Cause::forbidden(class, ONLY_LB));
        }
        if let Some(why) = qualified_name_problem(name) {
            causes.push(Cause::invalid(class, name, why));
        }
    }
    let health = "spec.healthCheckNodePort";
    let needs = super::needs_health_check(spec);
    let port = spec["healthCheckNodePort"].as_i64().unwrap_or(0);
    if port != 0 && !needs {
        let why =
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'";
        causes.push(Cause::invalid_value(
            health,
            &spec["healthCheckNodePort"],
            why,
        ));
    }
    let kept = old.filter(|o| super::needs_health_check(o) && needs);
    if kept.is_some_and(|o| o["healthCheckNodePort"] != spec["healthCheckNodePort"]) {
        causes.push(Cause::forbidden(health, "field is immutable"));
    }
    // Between two LoadBalancer states the class stays as it was, set or
    // not, as upstream's `sameLoadBalancerClass`.
    let before = old.filter(|o| o["type"] == "LoadBalancer");
    if let Some(before) = before.filter(|_| lb) {
        if before["loadBalancerClass"] != spec["loadBalancerClass"] {
            causes.push(Cause::invalid(
                class,
                spec["loadBalancerClass"].as_str().unwrap_or_default(),
                "may not change once set",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(spec: Value, old: Option<Value>) -> Vec<String> {
        let mut causes = Vec::new();
        check(&spec, old.as_ref(), &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn a_health_check_port_belongs_to_a_local_policy_and_stays() {
        let local = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 31000});
        assert!(fields(local.clone(), None).is_empty());
        let mut cluster = local.clone();
        cluster["externalTrafficPolicy"] = json!("Cluster");
        let mut causes = Vec::new();
        check(&cluster, None, &mut causes);
        assert_eq!(causes[0].message, "Invalid value: 31000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'");
        let mut moved = local.clone();
        moved["healthCheckNodePort"] = json!(31001);
        let mut causes = Vec::new();
        check(&moved, Some(&local), &mut causes);
        assert_eq!(
            (causes[0].field.as_str(), causes[0].message.as_str()),
            ("spec.healthCheckNodePort", "Forbidden: field is immutable")
        );
    }

    #[test]
    fn load_balancer_fields_belong_to_load_balancers() {
        let lb = json!({"type": "LoadBalancer", "loadBalancerSourceRanges": [" 10.0.0.0/8", "2001:db8::/64"],
            "allocateLoadBalancerNodePorts": false, "loadBalancerClass": "example.com/lb"});
        assert!(fields(lb.clone(), None).is_empty());
        let mut plain = lb.clone();
        plain["type"] = json!("NodePort");
        assert_eq!(
            fields(plain, None),
            [
                "spec.LoadBalancerSourceRanges",
                "spec.allocateLoadBalancerNodePorts",
                "spec.loadBalancerClass"
            ]
        );
        let bad = json!({"type": "LoadBalancer", "loadBalancerSourceRanges": ["10.0.0.0", "10.0.0.0/33"],
            "loadBalancerClass": "-lb"});
        assert_eq!(
            fields(bad, None),
            [
                "spec.LoadBalancerSourceRanges[0]",
                "spec.LoadBalancerSourceRanges[1]",
                "spec.loadBalancerClass"
            ]
        );
        let mut moved = lb.clone();
        moved["loadBalancerClass"] = json!("example.com/other");
        assert_eq!(fields(moved, Some(lb.clone())), ["spec.loadBalancerClass"]);
        // Nor is one added to a load balancer that had none; it comes with
        // the type.
        let mut before = lb.clone();
        before.as_object_mut().unwrap().remove("loadBalancerClass");
        assert_eq!(
            fields(lb.clone(), Some(before.clone())),
            ["spec.loadBalancerClass"]
        );
        before["type"] = json!("ClusterIP");
        assert!(fields(lb, Some(before)).is_empty());
    }
}
