//! A NetworkPolicy's spec, as upstream validates it: ports are numbers,
//! ranges or port names; a peer is an ipBlock or selectors, not both;
//! an ipBlock's exceptions lie strictly inside it; policy types are
//! Ingress and Egress. Every agent writes these into nftables, so what
//! upstream refuses never reaches a node.

use serde_json::Value;

use super::port_name_problem;
use crate::cidr::Cidr;
use crate::selector::LabelSelector;
use crate::status::Cause;

const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn port(p: &Value, at: &str, causes: &mut Vec<Cause>) {
    if let Some(proto) = p["protocol"].as_str() {
        if !matches!(proto, "TCP" | "UDP" | "SCTP") {
            let field = format!("{at}.protocol");
            causes.push(Cause::unsupported(field, proto, &["SCTP", "TCP", "UDP"]));
        }
    }
    let end = &p["endPort"];
    let in_range = |n: i64| (1..=65535).contains(&n);
    match &p["port"] {
        Value::Null => {
            if !end.is_null() {
                let why = "may not be specified when `port` is not specified";
                causes.push(Cause::invalid(
                    format!("{at}.endPort"),
                    &end.to_string(),
                    why,
                ));
            }
        }
        Value::String(name) => {
            if let Some(why) = port_name_problem(name) {
                causes.push(Cause::invalid(format!("{at}.port"), name, why));
            }
            if !end.is_null() {
                let why = "may not be specified when `port` is non-numeric";
                causes.push(Cause::invalid(
                    format!("{at}.endPort"),
                    &end.to_string(),
                    why,
                ));
            }
        }
        number => {
            let n = number.as_i64().unwrap_or(0);
            if !in_range(n) {
                causes.push(Cause::invalid(
                    format!("{at}.port"),
                    &n.to_string(),
                    PORT_RANGE,
                ));
            }
            if let Some(e) = end.as_i64() {
                if e < n {
                    let why = "must be greater than or equal to `port`";
                    causes.push(Cause::invalid(format!("{at}.endPort"), &e.to_string(), why));
                }
                if !in_range(e) {
                    causes.push(Cause::invalid(
                        format!("{at}.endPort"),
                        &e.to_string(),
                        PORT_RANGE,
                    ));
                }
            }
        }
    }
}

fn selector(sel: &Value, at: String, causes: &mut Vec<Cause>) {
    if let Err(e) = LabelSelector::from_object(sel) {
        causes.push(Cause::invalid(at, &sel.to_string(), e.message));
    }
}

fn peer(p: &Value, at: &str, causes: &mut Vec<Cause>) {
    let kinds = ["podSelector", "namespaceSelector", "ipBlock"];
    let named = kinds.iter().filter(|k| !p[**k].is_null()).count();
    for k in &kinds[..2] {
        if !p[*k].is_null() {
            selector(&p[*k], format!("{at}.{k}"), causes);
        }
    }
    let block = &p["ipBlock"];
    if !block.is_null() {
        ip_block(block, &format!("{at}.ipBlock"), causes);
    }
    if named == 0 {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: at.into(),
            message: "Required value: must specify a peer".into(),
        });
    } else if named > 1 && !block.is_null() {
        causes.push(Cause::forbidden(
            at,
            "may not specify both ipBlock and another peer",
        ));
    }
}

fn ip_block(b: &Value, at: &str, causes: &mut Vec<Cause>) {
    let cidr = b["cidr"].as_str().unwrap_or_default();
    if cidr.is_empty() {
        causes.push(Cause::required(format!("{at}.cidr")));
        return;
    }
    // Only IPv4 ranges reach the nodes' IPv4 tables; an IPv6 one is valid
    // and matches no IPv4 packet.
    let v6 = |s: &str| {
        s.split_once('/').is_some_and(|(ip, p)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 128)
        })
    };
    let outer = match cidr.parse::<Cidr>() {
        Ok(c) => Some(c),
        Err(_) if v6(cidr) => None,
        Err(_) => {
            causes.push(Cause::invalid(
                format!("{at}.cidr"),
                cidr,
                "not a valid CIDR",
            ));
            return;
        }
    };
    for (i, e) in b["except"].as_array().into_iter().flatten().enumerate() {
        let field = format!("{at}.except[{i}]");
        let text = e.as_str().unwrap_or_default();
        let inner = match text.parse::<Cidr>() {
            Ok(c) => c,
            Err(_) if v6(text) && outer.is_none() => continue,
            Err(_) => {
                causes.push(Cause::invalid(field, text, "not a valid CIDR"));
                return;
            }
        };
        let strict = outer.is_some_and(|o| {
            o.prefix < inner.prefix && o.offset(std::net::Ipv4Addr::from(inner.base)).is_some()
        });
        if !strict {
            causes.push(Cause::invalid(
                field,
                text,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

/// The spec of a NetworkPolicy.
pub(super) fn check(spec: &Value, causes: &mut Vec<Cause>) {
    if !spec["podSelector"].is_null() {
        selector(&spec["podSelector"], "spec.podSelector".into(), causes);
    }
    for (list, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("spec.{list}[{i}]");
            for (j, p) in rule["ports"].as_array().into_iter().flatten().enumerate() {
                port(p, &format!("{at}.ports[{j}]"), causes);
            }
            for (j, p) in rule[peers].as_array().into_iter().flatten().enumerate() {
                peer(p, &format!("{at}.{peers}[{j}]"), causes);
            }
        }
    }
    let types = spec["policyTypes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if types.len() > 2 {
        let why = "may not specify more than two policyTypes";
        let shown = spec["policyTypes"].to_string();
        causes.push(Cause::invalid("spec.policyTypes", &shown, why));
        return;
    }
    for (i, t) in types.iter().enumerate() {
        let t = t.as_str().unwrap_or_default();
        if !matches!(t, "Ingress" | "Egress") {
            let field = format!("spec.policyTypes[{i}]");
            causes.push(Cause::unsupported(field, t, &["Ingress", "Egress"]));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(spec: Value) -> Vec<String> {
        let mut causes = Vec::new();
        check(&spec, &mut causes);
        causes.into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn what_reaches_the_nodes_tables_is_checked_as_upstream_checks_it() {
        let good = json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {}, "namespaceSelector": {"matchLabels": {"a": "b"}}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
                                  {"ipBlock": {"cidr": "2001:db8::/64"}}],
                         "ports": [{"port": 80, "endPort": 90}, {"port": "http", "protocol": "UDP"}, {}]}],
            "egress": [{"to": [], "ports": []}]});
        assert!(fields(good).is_empty());
        let bad = json!({"policyTypes": ["Sideways"],
            "ingress": [{"ports": [{"port": 0}, {"port": 80, "endPort": 70}, {"port": "x--y", "endPort": 9},
                                   {"endPort": 9}, {"port": 70000, "protocol": "ICMP"}],
                         "from": [{}, {"podSelector": {}, "ipBlock": {"cidr": "10.0.0.0/8"}},
                                  {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8", "11.0.0.0/16"]}},
                                  {"ipBlock": {"cidr": "10.0.0.0"}}]}]});
        assert_eq!(
            fields(bad),
            [
                "spec.ingress[0].ports[0].port",
                "spec.ingress[0].ports[1].endPort",
                "spec.ingress[0].ports[2].port",
                "spec.ingress[0].ports[2].endPort",
                "spec.ingress[0].ports[3].endPort",
                "spec.ingress[0].ports[4].protocol",
                "spec.ingress[0].ports[4].port",
                "spec.ingress[0].from[0]",
                "spec.ingress[0].from[1]",
                "spec.ingress[0].from[2].ipBlock.except[0]",
                "spec.ingress[0].from[2].ipBlock.except[1]",
                "spec.ingress[0].from[3].ipBlock.cidr",
                "spec.policyTypes[0]",
            ]
        );
    }
}
