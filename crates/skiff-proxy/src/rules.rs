//! What the proxy wants in nftables, computed from Services and
//! EndpointSlices, and the script that moves the kernel from one such state
//! to the next: only changed chains are rewritten and only changed map
//! elements touched, in one atomic `nft -f` transaction.
//!
//! Per Service port: a `svc-…` chain that picks a ready endpoint at random
//! (or the one a client is pinned to, for `sessionAffinity: ClientIP`) and
//! an `ep-…` chain per endpoint that marks the packet for masquerading and
//! DNATs it. The `services` map sends ClusterIP traffic to its chain and
//! `nodeports` sends NodePort traffic on local addresses there. A port with
//! no ready endpoint has no element: its packets meet the service range's
//! `unreachable` route and fail at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sha2::{Digest, Sha256};
use skiff_core::endpoint_slices::slices_of;

/// The table the proxy owns, and nothing else.
pub const TABLE: &str = "skiff";
/// Marks packets to masquerade on the way out (hairpin and NodePort).
const MASQUERADE_MARK: &str = "0x4000";

/// The proxy's whole state in nftables.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ruleset {
    /// `ip . proto . port` → chain.
    pub services: BTreeMap<String, String>,
    /// `proto . port` → chain.
    pub node_ports: BTreeMap<String, String>,
    /// Chain name → its rules.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Client-affinity sets → their timeout in seconds.
    pub affinity: BTreeMap<String, i32>,
}

/// The fixed part of the table, created once.
pub fn base() -> String {
    format!(
        "table ip {TABLE} {{
  map services {{ type ipv4_addr . inet_proto . inet_service : verdict; }}
  map nodeports {{ type inet_proto . inet_service : verdict; }}
  chain dispatch {{
    ip daddr . meta l4proto . th dport vmap @services
    fib daddr type local meta l4proto . th dport vmap @nodeports
  }}
  chain prerouting {{ type nat hook prerouting priority -100; policy accept; jump dispatch; }}
  chain output {{ type nat hook output priority -100; policy accept; jump dispatch; }}
  chain postrouting {{ type nat hook postrouting priority 100; policy accept; meta mark & {MASQUERADE_MARK} == {MASQUERADE_MARK} masquerade; }}
}}
"
    )
}

/// A short, stable chain-name part for a Service port.
fn id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("/").as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The chain of one Service port (protocol in lower case).
pub fn service_chain(ns: &str, name: &str, port_name: &str, proto: &str) -> String {
    format!("svc-{}", id(&[ns, name, port_name, proto]))
}

/// The protocol as nftables names it; `None` for any other string, which
/// never reaches a script.
fn protocol(p: Option<&String>) -> Option<&'static str> {
    match p.map(String::as_str) {
        None | Some("TCP") => Some("tcp"),
        Some("UDP") => Some("udp"),
        Some("SCTP") => Some("sctp"),
        Some(_) => None,
    }
}

/// An address from an object, if it is an IPv4 address: the script gets
/// the parsed value, never the object's string.
fn ipv4(s: &str) -> Option<std::net::Ipv4Addr> {
    s.parse().ok()
}

/// The ruleset for these Services and their EndpointSlices.
pub fn desired(services: &[Service], slices: &[EndpointSlice]) -> Ruleset {
    let mut set = Ruleset::default();
    for svc in services {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let cluster_ip = spec.cluster_ip.as_deref().and_then(ipv4);
        let has_ip = cluster_ip.is_some();
        let ip = cluster_ip.map(|ip| ip.to_string()).unwrap_or_default();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref()?.timeout_seconds)
                .unwrap_or(10800)
        });
        let mine: Vec<&EndpointSlice> = slices_of(slices, ns, name).collect();
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port.protocol.as_ref()) else {
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            // Ready endpoints of this port, each once.
            let mut targets: BTreeSet<(String, i32)> = BTreeSet::new();
            for slice in &mine {
                let Some(target) = slice.ports.iter().flatten().find(|p| {
                    p.name.clone().unwrap_or_default() == port_name
                        && protocol(p.protocol.as_ref()) == Some(proto)
                }) else {
                    continue;
                };
                let Some(target_port) = target.port else {
                    continue;
                };
                for e in &slice.endpoints {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                    if ready {
                        if let Some(addr) = e.addresses.first().and_then(|a| ipv4(a)) {
                            targets.insert((addr.to_string(), target_port));
                        }
                    }
                }
            }
            if targets.is_empty() {
                continue;
            }
            let key = format!("{ip} . {proto} . {}", port.port);
            let svc_chain = service_chain(ns, name, &port_name, proto);
            let mut svc_rules = Vec::new();
            let mut picks = Vec::new();
            for (i, (addr, target_port)) in targets.iter().enumerate() {
                let ep_chain = format!("ep-{}-{i}", &svc_chain[4..]);
                let mut rules = Vec::new();
                if let Some(timeout) = affinity {
                    let aff = format!("aff-{}-{i}", &svc_chain[4..]);
                    svc_rules.push(format!("ip saddr @{aff} jump {ep_chain}"));
                    rules.push(format!("update @{aff} {{ ip saddr }}"));
                    set.affinity.insert(aff, timeout);
                }
                rules.push(format!("meta mark set meta mark | {MASQUERADE_MARK}"));
                rules.push(format!(
                    "meta l4proto {proto} dnat ip to {addr}:{target_port}"
                ));
                set.chains.insert(ep_chain.clone(), rules);
                picks.push(format!("{i} : jump {ep_chain}"));
            }
            svc_rules.push(format!(
                "numgen random mod {} vmap {{ {} }}",
                picks.len(),
                picks.join(", ")
            ));
            set.chains.insert(svc_chain.clone(), svc_rules);
            if has_ip {
                set.services.insert(key, svc_chain.clone());
            }
            if let Some(node_port) = port.node_port.filter(|p| *p > 0) {
                set.node_ports
                    .insert(format!("{proto} . {node_port}"), svc_chain);
            }
        }
    }
    set
}

/// Map elements to delete and to add going from `old` to `new`.
fn elements<'a>(
    old: &'a BTreeMap<String, String>,
    new: &'a BTreeMap<String, String>,
) -> (Vec<&'a String>, Vec<(&'a String, &'a String)>) {
    let gone = old
        .iter()
        .filter(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    let added = new
        .iter()
        .filter(|(k, v)| old.get(*k) != Some(*v))
        .collect();
    (gone, added)
}

/// The nft script from `old` (what is in the kernel; `None` for a fresh
/// table) to `new`.
pub fn script(old: Option<&Ruleset>, new: &Ruleset) -> String {
    let empty = Ruleset::default();
    let mut out = String::new();
    if old.is_none() {
        // Whatever an earlier proxy left goes first.
        let _ = writeln!(out, "table ip {TABLE} {{}}\ndelete table ip {TABLE}");
        out.push_str(&base());
    }
    let old = old.unwrap_or(&empty);
    // Elements first, so no map points at a chain about to go.
    for (map, (gone, added)) in [
        ("services", elements(&old.services, &new.services)),
        ("nodeports", elements(&old.node_ports, &new.node_ports)),
    ] {
        for k in gone {
            let _ = writeln!(out, "delete element ip {TABLE} {map} {{ {k} }}");
        }
        for (k, v) in added {
            // A chain must exist before an element names it.
            if !old.chains.contains_key(v) {
                let _ = writeln!(out, "add chain ip {TABLE} {v}");
            }
            let _ = writeln!(out, "add element ip {TABLE} {map} {{ {k} : jump {v} }}");
        }
    }
    for (aff, timeout) in &new.affinity {
        if old.affinity.get(aff) != Some(timeout) {
            let _ = writeln!(
                out,
                "add set ip {TABLE} {aff} {{ type ipv4_addr; flags dynamic, timeout; timeout {timeout}s; }}"
            );
        }
    }
    // Changed chains are refilled: service chains last, so the endpoint
    // chains they jump to exist.
    let mut order: Vec<(&String, &Vec<String>)> = new
        .chains
        .iter()
        .filter(|(name, rules)| old.chains.get(*name) != Some(*rules))
        .collect();
    order.sort_by_key(|(name, _)| name.starts_with("svc-"));
    for (name, rules) in order {
        let _ = writeln!(out, "add chain ip {TABLE} {name}");
        let _ = writeln!(out, "flush chain ip {TABLE} {name}");
        for r in rules {
            let _ = writeln!(out, "add rule ip {TABLE} {name} {r}");
        }
    }
    // Chains that went: service chains first (they jump to endpoints).
    let mut gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|name| !new.chains.contains_key(*name))
        .collect();
    gone.sort_by_key(|name| !name.starts_with("svc-"));
    for name in &gone {
        let _ = writeln!(out, "flush chain ip {TABLE} {name}");
    }
    for name in gone {
        let _ = writeln!(out, "delete chain ip {TABLE} {name}");
    }
    for aff in old
        .affinity
        .keys()
        .filter(|a| !new.affinity.contains_key(*a))
    {
        let _ = writeln!(out, "delete set ip {TABLE} {aff}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn web(affinity: bool, node_port: Option<i32>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.43.0.20", "sessionAffinity": if affinity { "ClientIP" } else { "None" },
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": node_port}]},
        }))
        .unwrap()
    }

    fn slice(ready: &[(&str, bool)]) -> EndpointSlice {
        let endpoints: Vec<_> = ready
            .iter()
            .map(|(ip, r)| json!({"addresses": [ip], "conditions": {"ready": r}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    #[test]
    fn strings_from_objects_never_reach_the_script() {
        let mut svc = web(false, Some(30080));
        let evil = "tcp } ; flush ruleset ; add table ip x {";
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].protocol = Some(evil.into());
        let mut other = web(false, None);
        other.metadata.name = Some("other".into());
        other.spec.as_mut().unwrap().cluster_ip = Some("10.43.0.21; flush ruleset".into());
        let mut bad = slice(&[("10.42.0.5 ; flush ruleset", true), ("10.42.0.6", true)]);
        bad.metadata.labels =
            Some([("kubernetes.io/service-name".to_owned(), "web".to_owned())].into());
        let set = desired(&[svc, other], &[bad]);
        let script = format!("{set:?}");
        assert!(!script.contains("flush"), "{script}");
        let set = desired(
            &[web(false, None)],
            &[slice(&[
                ("10.42.0.5 ; flush ruleset", true),
                ("10.42.0.6", true),
            ])],
        );
        let dnats: Vec<&String> = set
            .chains
            .values()
            .flatten()
            .filter(|r| r.contains("dnat"))
            .collect();
        assert_eq!(dnats.len(), 1, "only the real address: {dnats:?}");
    }

    #[test]
    fn ready_endpoints_become_dnat_chains() {
        let set = desired(
            &[web(false, Some(30080))],
            &[slice(&[
                ("10.42.0.5", true),
                ("10.42.1.6", true),
                ("10.42.0.9", false),
            ])],
        );
        let chain = &set.services["10.43.0.20 . tcp . 80"];
        assert_eq!(set.node_ports["tcp . 30080"], *chain);
        assert_eq!(
            set.chains[chain].last().unwrap(),
            &format!(
                "numgen random mod 2 vmap {{ 0 : jump ep-{0}-0, 1 : jump ep-{0}-1 }}",
                &chain[4..]
            )
        );
        let dnats: Vec<&String> = set
            .chains
            .values()
            .flatten()
            .filter(|r| r.contains("dnat"))
            .collect();
        assert_eq!(dnats.len(), 2, "the unready endpoint gets no traffic");
        assert!(dnats[0].ends_with("dnat ip to 10.42.0.5:8080"));
    }

    #[test]
    fn no_ready_endpoint_means_no_rules_and_affinity_pins_clients() {
        let empty = desired(&[web(false, None)], &[slice(&[("10.42.0.5", false)])]);
        assert!(empty.services.is_empty() && empty.chains.is_empty());
        let pinned = desired(&[web(true, None)], &[slice(&[("10.42.0.5", true)])]);
        assert_eq!(
            pinned.affinity.values().copied().collect::<Vec<_>>(),
            vec![10800]
        );
        let svc_chain = pinned
            .chains
            .keys()
            .find(|c| c.starts_with("svc-"))
            .unwrap();
        assert!(pinned.chains[svc_chain][0].starts_with("ip saddr @aff-"));
    }

    #[test]
    fn scripts_touch_only_what_changed() {
        let one = desired(&[web(false, None)], &[slice(&[("10.42.0.5", true)])]);
        let fresh = script(None, &one);
        assert!(fresh.contains("delete table ip skiff") && fresh.contains("map services"));
        assert_eq!(script(Some(&one), &one), "", "no change, no script");
        let two = desired(
            &[web(false, None)],
            &[slice(&[("10.42.0.5", true), ("10.42.0.6", true)])],
        );
        let step = script(Some(&one), &two);
        assert!(!step.contains("element ip skiff services"), "{step}");
        assert!(step.contains("dnat ip to 10.42.0.6:8080"), "{step}");
        assert!(
            !step.contains("dnat ip to 10.42.0.5:8080"),
            "the kept endpoint's chain is untouched: {step}"
        );
        let gone = script(Some(&two), &Ruleset::default());
        let delete_element = gone.find("delete element").unwrap();
        let delete_chain = gone.find("delete chain").unwrap();
        assert!(delete_element < delete_chain, "{gone}");
    }
}
