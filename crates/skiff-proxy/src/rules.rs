//! What the proxy wants in nftables, computed from Services and
//! EndpointSlices, and the script that moves the kernel from one such state
//! to the next: only changed chains are rewritten and only changed map
//! elements touched, in one atomic `nft -f` transaction.
//!
//! Per Service port: a `svc-…` chain that picks a ready endpoint at random
//! (or the one a client is pinned to, for `sessionAffinity: ClientIP`) and
//! an `ep-…` chain per endpoint that marks the packet for masquerading and
//! DNATs it. The `services` map sends ClusterIP and external-IP traffic
//! to its chain and `nodeports` sends NodePort traffic on local addresses
//! there. A `Local` traffic policy gets chains of its own (`svl-…` inside,
//! `svx-…` outside) over this node's endpoints only. A port with no
//! endpoint to pick has no element: its packets meet the service range's
//! `unreachable` route and fail at once.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use sha2::{Digest, Sha256};
use skiff_core::cidr::Cidr;
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

/// The protocol as nftables names it (TCP when unset); `None` for any
/// other string, which never reaches a script.
pub(crate) fn protocol(p: Option<&String>) -> Option<&'static str> {
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

/// Where the rules are for: a node, and its zone if it has one.
#[derive(Clone, Copy, Debug)]
pub struct Place<'a> {
    pub node: &'a str,
    pub zone: Option<&'a str>,
}

impl<'a> From<&'a str> for Place<'a> {
    fn from(node: &'a str) -> Self {
        Place { node, zone: None }
    }
}

/// A ready endpoint of a port, as seen from one node.
struct Target {
    local: bool,
    /// Whether its node hints name this node; none without node hints.
    for_node: Option<bool>,
    /// Whether its zone hints name this node's zone; none without.
    for_zone: Option<bool>,
}

/// The endpoints cluster-wide traffic takes, as kube-proxy reads the
/// hints a Service's `trafficDistribution` has the slices carry: those
/// for this node, when every endpoint has node hints and one is for it;
/// else those for this zone, when every endpoint has zone hints and one
/// is for it; else all.
fn by_topology(targets: &BTreeMap<(String, i32), Target>) -> Vec<&(String, i32)> {
    let all_with = |hint: fn(&Target) -> Option<bool>| {
        let hinted = targets.values().all(|t| hint(t).is_some());
        hinted && targets.values().any(|t| hint(t) == Some(true))
    };
    let hint: Option<fn(&Target) -> Option<bool>> = if all_with(|t| t.for_node) {
        Some(|t| t.for_node)
    } else if all_with(|t| t.for_zone) {
        Some(|t| t.for_zone)
    } else {
        None
    };
    targets
        .iter()
        .filter(|(_, t)| hint.is_none_or(|h| h(t) == Some(true)))
        .map(|(k, _)| k)
        .collect()
}

/// The ruleset for these Services and their EndpointSlices, on `node`.
///
/// A port's traffic policies pick its endpoints: `internalTrafficPolicy:
/// Local` sends ClusterIP traffic only to endpoints on this node, and
/// `externalTrafficPolicy: Local` NodePort and external-IP traffic, which
/// then keeps the client's address (only traffic from this node itself is
/// masqueraded). Traffic for every endpoint takes those the slices' hints
/// give this node or zone (see [`by_topology`]). With no endpoint to
/// pick, a port has no element.
pub fn desired<'a>(
    services: &[Service],
    slices: &[EndpointSlice],
    place: impl Into<Place<'a>>,
) -> Ruleset {
    let Place { node, zone } = place.into();
    let mut set = Ruleset::default();
    for svc in services {
        let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
            continue;
        };
        let Some(spec) = &svc.spec else { continue };
        let cluster_ip = spec.cluster_ip.as_deref().and_then(ipv4);
        let external_ips: Vec<std::net::Ipv4Addr> = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|ip| ipv4(ip))
            .collect();
        // A load balancer's addresses, as its controller wrote them in the
        // status, take external traffic here too (those with `ipMode:
        // Proxy` do not: the balancer sends to the node's own address),
        // from its source ranges only when it has any.
        let balancer: Vec<std::net::Ipv4Addr> = match spec.type_.as_deref() {
            Some("LoadBalancer") => svc
                .status
                .iter()
                .filter_map(|s| s.load_balancer.as_ref()?.ingress.as_ref())
                .flatten()
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| ipv4(i.ip.as_deref()?))
                .collect(),
            _ => Vec::new(),
        };
        let ranges: Vec<Cidr> = spec
            .load_balancer_source_ranges
            .iter()
            .flatten()
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            spec.session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref()?.timeout_seconds)
                .unwrap_or(10800)
        });
        let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let mine: Vec<&EndpointSlice> = slices_of(slices, ns, name).collect();
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port.protocol.as_ref()) else {
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            // Ready endpoints of this port, each once, where they are.
            let mut targets: BTreeMap<(String, i32), Target> = BTreeMap::new();
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
                    let Some(addr) = e.addresses.first().and_then(|a| ipv4(a)) else {
                        continue;
                    };
                    if !ready {
                        continue;
                    }
                    let hints = e.hints.as_ref();
                    let for_node = hints
                        .and_then(|h| h.for_nodes.as_ref())
                        .filter(|n| !n.is_empty())
                        .map(|n| n.iter().any(|n| n.name == node));
                    let for_zone = hints
                        .and_then(|h| h.for_zones.as_ref())
                        .filter(|z| !z.is_empty())
                        .map(|z| z.iter().any(|z| Some(z.name.as_str()) == zone));
                    let target = Target {
                        local: e.node_name.as_deref() == Some(node),
                        for_node,
                        for_zone,
                    };
                    targets.insert((addr.to_string(), target_port), target);
                }
            }
            let all = by_topology(&targets);
            let local: Vec<&(String, i32)> = targets
                .iter()
                .filter(|(_, t)| t.local)
                .map(|(k, _)| k)
                .collect();
            let svc_chain = service_chain(ns, name, &port_name, proto);
            let pick = Pick { proto, affinity };
            // The chain for each kind of traffic: every endpoint, or this
            // node's; external traffic to this node's keeps its source.
            let internal = match internal_local {
                true => pick.chain(&mut set, &format!("svl-{}", &svc_chain[4..]), &local, true),
                false => pick.chain(&mut set, &svc_chain, &all, true),
            };
            let external = match external_local {
                true => pick.chain(&mut set, &format!("svx-{}", &svc_chain[4..]), &local, false),
                false => pick.chain(&mut set, &svc_chain, &all, true),
            };
            if let (Some(ip), Some(chain)) = (cluster_ip, &internal) {
                let key = format!("{ip} . {proto} . {}", port.port);
                set.services.insert(key, chain.clone());
            }
            let Some(chain) = external else { continue };
            for ip in &external_ips {
                let key = format!("{ip} . {proto} . {}", port.port);
                set.services.insert(key, chain.clone());
            }
            if !balancer.is_empty() {
                let entry = match ranges.is_empty() {
                    true => chain.clone(),
                    false => firewall(&mut set, &svc_chain, &ranges, &chain),
                };
                for ip in &balancer {
                    let key = format!("{ip} . {proto} . {}", port.port);
                    set.services.insert(key, entry.clone());
                }
            }
            if let Some(node_port) = port.node_port.filter(|p| *p > 0) {
                set.node_ports
                    .insert(format!("{proto} . {node_port}"), chain);
            }
        }
    }
    set
}

/// The chain `fw-<id>` in front of a load balancer's addresses: traffic
/// from outside `ranges` is dropped, the rest goes on to `then`.
fn firewall(set: &mut Ruleset, svc_chain: &str, ranges: &[Cidr], then: &str) -> String {
    let name = format!("fw-{}", &svc_chain[4..]);
    let sources: Vec<String> = ranges.iter().map(Cidr::to_string).collect();
    let rules = vec![
        format!("ip saddr != {{ {} }} drop", sources.join(", ")),
        format!("goto {then}"),
    ];
    set.chains.insert(name.clone(), rules);
    name
}

/// How a Service port's chains pick an endpoint.
struct Pick {
    proto: &'static str,
    /// Client affinity's timeout, if clients are pinned.
    affinity: Option<i32>,
}

impl Pick {
    /// Adds the chain `name` that picks one of `targets` at random (or the
    /// one a client is pinned to), with a chain per endpoint that DNATs to
    /// it and marks for masquerading: every packet if `masquerade`, else
    /// only those this node sent. `None` (and no chain) without targets.
    fn chain(
        &self,
        set: &mut Ruleset,
        name: &str,
        targets: &[&(String, i32)],
        masquerade: bool,
    ) -> Option<String> {
        if targets.is_empty() {
            return None;
        }
        if set.chains.contains_key(name) {
            return Some(name.to_owned());
        }
        let proto = self.proto;
        // `svc-<id>` has `ep-<id>-<i>`, `svl-<id>` `epl-<id>-<i>`, and so on.
        let (kind, id) = (name[2..3].trim_start_matches('c'), &name[3..]);
        let mut rules = Vec::new();
        let mut picks = Vec::new();
        for (i, (addr, target_port)) in targets.iter().enumerate() {
            let ep_chain = format!("ep{kind}{id}-{i}");
            let mut ep_rules = Vec::new();
            if let Some(timeout) = self.affinity {
                let aff = format!("aff{kind}{id}-{i}");
                rules.push(format!("ip saddr @{aff} jump {ep_chain}"));
                ep_rules.push(format!("update @{aff} {{ ip saddr }}"));
                set.affinity.insert(aff, timeout);
            }
            let mark = format!("meta mark set meta mark | {MASQUERADE_MARK}");
            ep_rules.push(match masquerade {
                true => mark,
                false => format!("fib saddr type local {mark}"),
            });
            ep_rules.push(format!(
                "meta l4proto {proto} dnat ip to {addr}:{target_port}"
            ));
            set.chains.insert(ep_chain.clone(), ep_rules);
            picks.push(format!("{i} : jump {ep_chain}"));
        }
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            picks.len(),
            picks.join(", ")
        ));
        set.chains.insert(name.to_owned(), rules);
        Some(name.to_owned())
    }
}

/// Where a chain stands in the jumps: endpoint chains (0) are jumped to
/// by pick chains (1), which firewall chains (2) go to. A chain is made
/// after those it jumps to and removed before them.
fn rank(name: &str) -> u8 {
    if name.starts_with("fw-") {
        2
    } else if ["svc-", "svl-", "svx-"].iter().any(|p| name.starts_with(p)) {
        1
    } else {
        0
    }
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
    // Changed chains are refilled, each after the chains it jumps to.
    let mut order: Vec<(&String, &Vec<String>)> = new
        .chains
        .iter()
        .filter(|(name, rules)| old.chains.get(*name) != Some(*rules))
        .collect();
    order.sort_by_key(|(name, _)| rank(name));
    for (name, rules) in order {
        let _ = writeln!(out, "add chain ip {TABLE} {name}");
        let _ = writeln!(out, "flush chain ip {TABLE} {name}");
        for r in rules {
            let _ = writeln!(out, "add rule ip {TABLE} {name} {r}");
        }
    }
    // Chains that went, each before the chains it jumps to.
    let mut gone: Vec<&String> = old
        .chains
        .keys()
        .filter(|name| !new.chains.contains_key(*name))
        .collect();
    gone.sort_by_key(|name| std::cmp::Reverse(rank(name)));
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
        let set = desired(&[svc, other], &[bad], "n1");
        let script = format!("{set:?}");
        assert!(!script.contains("flush"), "{script}");
        let set = desired(
            &[web(false, None)],
            &[slice(&[
                ("10.42.0.5 ; flush ruleset", true),
                ("10.42.0.6", true),
            ])],
            "n1",
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
            "n1",
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
        let empty = desired(&[web(false, None)], &[slice(&[("10.42.0.5", false)])], "n1");
        assert!(empty.services.is_empty() && empty.chains.is_empty());
        let pinned = desired(&[web(true, None)], &[slice(&[("10.42.0.5", true)])], "n1");
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

    /// The rules of the endpoints chain `chain` picks among.
    fn dnats(set: &Ruleset, chain: &str) -> Vec<String> {
        let picks = &set.chains[chain];
        let eps = picks.last().unwrap().split("jump ").skip(1);
        eps.map(|e| {
            e.trim_end_matches([' ', '}', ','])
                .split(',')
                .next()
                .unwrap()
                .trim()
                .to_owned()
        })
        .flat_map(|ep| set.chains[&ep].clone())
        .collect()
    }

    #[test]
    fn hints_keep_cluster_traffic_in_its_zone_or_on_its_node() {
        let svc = web(false, None);
        let mut hinted = slice(&[("10.42.0.5", true), ("10.42.1.6", true)]);
        for (e, (node, zone)) in hinted
            .endpoints
            .iter_mut()
            .zip([("n1", "z1"), ("n2", "z2")])
        {
            e.node_name = Some(node.into());
            e.hints = serde_json::from_value(json!({"forZones": [{"name": zone}]})).unwrap();
        }
        let picked = |slice: &EndpointSlice, node: &'static str, zone: Option<&'static str>| {
            let set = desired(
                std::slice::from_ref(&svc),
                std::slice::from_ref(slice),
                Place { node, zone },
            );
            let rules = dnats(&set, &set.services["10.43.0.20 . tcp . 80"]);
            rules.into_iter().filter(|r| r.contains("dnat")).count()
        };
        assert_eq!(picked(&hinted, "n1", Some("z1")), 1, "its own zone's");
        assert_eq!(
            picked(&hinted, "n3", Some("z9")),
            2,
            "no endpoint for this zone"
        );
        assert_eq!(picked(&hinted, "n3", None), 2, "a node without a zone");
        let mut partly = hinted.clone();
        partly.endpoints[1].hints = None;
        assert_eq!(
            picked(&partly, "n1", Some("z1")),
            2,
            "hints on every endpoint or none apply"
        );
        let mut by_node = hinted.clone();
        for e in &mut by_node.endpoints {
            let node = e.node_name.clone().unwrap();
            e.hints = serde_json::from_value(
                json!({"forNodes": [{"name": node}], "forZones": [{"name": "z1"}]}),
            )
            .unwrap();
        }
        assert_eq!(picked(&by_node, "n2", Some("z1")), 1, "its own node's");
        assert_eq!(
            picked(&by_node, "n3", Some("z1")),
            2,
            "none on this node: its zone's"
        );
    }

    #[test]
    fn traffic_policies_pick_this_nodes_endpoints_and_external_ips_route() {
        let mut svc = web(false, Some(30080));
        let spec = svc.spec.as_mut().unwrap();
        spec.internal_traffic_policy = Some("Local".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.external_ips = Some(vec!["192.0.2.10".into(), "not an ip".into()]);
        let mut slice = slice(&[("10.42.0.5", true), ("10.42.1.6", true)]);
        slice.endpoints[0].node_name = Some("n1".into());
        slice.endpoints[1].node_name = Some("n2".into());
        let set = desired(&[svc.clone()], &[slice.clone()], "n1");
        let internal = &set.services["10.43.0.20 . tcp . 80"];
        let external = &set.node_ports["tcp . 30080"];
        assert!(internal.starts_with("svl-") && external.starts_with("svx-"));
        assert_eq!(&set.services["192.0.2.10 . tcp . 80"], external);
        assert_eq!(set.services.len(), 2, "{:?}", set.services);
        let internal_rules = dnats(&set, internal);
        assert_eq!(
            internal_rules.last().unwrap(),
            "meta l4proto tcp dnat ip to 10.42.0.5:8080"
        );
        // External traffic keeps its source; only this node's is masqueraded.
        let external_rules = dnats(&set, external);
        assert!(
            external_rules[0].starts_with("fib saddr type local meta mark set"),
            "{external_rules:?}"
        );
        assert_eq!(
            external_rules.len(),
            2,
            "one local endpoint: {external_rules:?}"
        );
        // No endpoint here: no element for either, as upstream drops it.
        let elsewhere = desired(&[svc], &[slice], "n3");
        assert!(elsewhere.services.is_empty() && elsewhere.node_ports.is_empty());
    }

    #[test]
    fn load_balancer_addresses_route_from_their_source_ranges() {
        let mut svc = web(false, Some(30080));
        svc.spec.as_mut().unwrap().type_ = Some("LoadBalancer".into());
        svc.status = serde_json::from_value(json!({"loadBalancer": {"ingress": [
            {"ip": "192.0.2.20"}, {"ip": "192.0.2.21", "ipMode": "Proxy"},
            {"ip": "not an ip"}, {"hostname": "lb.example"}]}}))
        .unwrap();
        let endpoints = [slice(&[("10.42.0.5", true)])];
        let open = desired(&[svc.clone()], &endpoints, "n1");
        let chain = &open.services["10.43.0.20 . tcp . 80"];
        assert_eq!(&open.services["192.0.2.20 . tcp . 80"], chain);
        assert_eq!(open.services.len(), 2, "{:?}", open.services);
        // Ranges put a firewall in front of the balancer's address only.
        svc.spec.as_mut().unwrap().load_balancer_source_ranges = Some(vec![
            " 10.0.0.0/8".into(),
            "192.168.1.7/16".into(),
            "bad; flush ruleset".into(),
        ]);
        let guarded = desired(&[svc.clone()], &endpoints, "n1");
        let fw = &guarded.services["192.0.2.20 . tcp . 80"];
        assert!(fw.starts_with("fw-"), "{fw}");
        assert_eq!(
            guarded.chains[fw],
            [
                "ip saddr != { 10.0.0.0/8, 192.168.0.0/16 } drop".to_owned(),
                format!("goto {chain}")
            ]
        );
        assert_eq!(guarded.node_ports["tcp . 30080"], *chain);
        // A firewall chain is made after the chain it goes to, and goes
        // before it.
        let made = script(Some(&open), &guarded);
        assert!(
            made.find(&format!("add chain ip skiff {fw}")) > None,
            "{made}"
        );
        let fresh = script(None, &guarded);
        let pick = fresh.find(&format!("add rule ip skiff {chain} ")).unwrap();
        let wall = fresh.find(&format!("add rule ip skiff {fw} ")).unwrap();
        assert!(pick < wall, "{fresh}");
        let gone = script(Some(&guarded), &Ruleset::default());
        let wall = gone.find(&format!("delete chain ip skiff {fw}")).unwrap();
        let pick = gone
            .find(&format!("delete chain ip skiff {chain}"))
            .unwrap();
        assert!(wall < pick, "{gone}");
        // A ClusterIP Service's status routes nothing.
        svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let plain = desired(&[svc], &endpoints, "n1");
        assert!(!plain.services.contains_key("192.0.2.20 . tcp . 80"));
    }

    #[test]
    fn scripts_touch_only_what_changed() {
        let one = desired(&[web(false, None)], &[slice(&[("10.42.0.5", true)])], "n1");
        let fresh = script(None, &one);
        assert!(fresh.contains("delete table ip skiff") && fresh.contains("map services"));
        assert_eq!(script(Some(&one), &one), "", "no change, no script");
        let two = desired(
            &[web(false, None)],
            &[slice(&[("10.42.0.5", true), ("10.42.0.6", true)])],
            "n1",
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
