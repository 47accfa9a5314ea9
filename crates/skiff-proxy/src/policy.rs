//! NetworkPolicies of this node's pods, enforced in the nftables table
//! `ip skiff-policy`: a `forward` chain (bridged traffic between pods of
//! the node passes it too, through the bridge's netfilter call) lets
//! established connections through and sends new ones to the chain of an
//! isolated destination pod (`in-…`) and then of an isolated source pod
//! (`eg-…`). Each such chain returns for what one of its policies' rules
//! allows and drops the rest. Traffic after a Service's DNAT is judged by
//! the pod it reaches, as upstream's.
//!
//! Every address and port in the script is a parsed value; selectors only
//! pick pods, whose addresses come from their status.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use skiff_core::cidr::Cidr;
use skiff_core::selector;

use crate::rules::protocol;

/// The table the policy enforcement owns, and nothing else.
pub const TABLE: &str = "skiff-policy";

/// The ports a rule may name.
const PORTS: std::ops::RangeInclusive<i32> = 1..=65535;

/// Which way a rule looks: at who sends to a pod, or where a pod sends.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Ingress,
    Egress,
}

/// A pod as policies see it.
struct Member<'a> {
    pod: &'a Pod,
    namespace: &'a str,
    ip: Ipv4Addr,
}

/// What the peers of a rule match.
enum Peers {
    Any,
    /// Pods' addresses, and blocks of addresses.
    Some(BTreeSet<Ipv4Addr>, Vec<Cidr>),
}

impl Peers {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        match self {
            Peers::Any => true,
            Peers::Some(pods, blocks) => {
                pods.contains(&ip) || blocks.iter().any(|b| b.offset(ip).is_some())
            }
        }
    }

    /// The matches of the peers' addresses in `field` (`saddr`, `daddr`),
    /// each ready for the rest of a rule: one for every pod, one per
    /// block (blocks may overlap each other and the pods, which one set
    /// may not).
    fn matches(&self, field: &str) -> Vec<String> {
        match self {
            Peers::Any => vec![String::new()],
            Peers::Some(pods, blocks) => {
                let mut out = Vec::new();
                if !pods.is_empty() {
                    let list: Vec<String> = pods.iter().map(Ipv4Addr::to_string).collect();
                    out.push(format!("ip {field} {{ {} }} ", list.join(", ")));
                }
                out.extend(blocks.iter().map(|b| format!("ip {field} {b} ")));
                out
            }
        }
    }
}

/// A selector that matches pods' or namespaces' labels; a malformed one
/// matches nothing, as upstream's conversion error leaves it.
fn matcher(sel: &LabelSelector) -> Option<selector::LabelSelector> {
    let value = serde_json::to_value(sel).ok()?;
    selector::LabelSelector::from_object(&value).ok()
}

fn labels_match(sel: &selector::LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    sel.matches(|k| labels?.get(k).map(String::as_str))
}

/// The policy types a policy has: as written, else Ingress, and Egress
/// when it has an egress section (upstream's defaulting).
fn affects(p: &NetworkPolicy, d: Direction) -> bool {
    let Some(spec) = &p.spec else { return false };
    match &spec.policy_types {
        Some(types) => types.iter().any(|t| {
            t == match d {
                Direction::Ingress => "Ingress",
                Direction::Egress => "Egress",
            }
        }),
        None => d == Direction::Ingress || spec.egress.is_some(),
    }
}

/// The pods with an address that policies can name: not on the host's
/// network, not over.
fn members<'a>(pods: &'a [std::sync::Arc<Pod>]) -> Vec<Member<'a>> {
    pods.iter()
        .filter_map(|p| {
            let spec = p.spec.as_ref()?;
            let status = p.status.as_ref()?;
            if spec.host_network == Some(true)
                || matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"))
            {
                return None;
            }
            Some(Member {
                pod: p,
                namespace: p.metadata.namespace.as_deref()?,
                ip: status.pod_ip.as_deref()?.parse().ok()?,
            })
        })
        .collect()
}

/// The container port named `name` with `proto` on `pod`.
fn named_port(pod: &Pod, name: &str, proto: &str) -> Option<i32> {
    let spec = pod.spec.as_ref()?;
    let containers = skiff_core::pod_containers::long_running(spec);
    containers
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(name) && protocol(p.protocol.as_ref()) == Some(proto))
        .map(|p| p.container_port)
}

/// Everything needed to turn one node's policies into rules.
struct World<'a> {
    members: Vec<Member<'a>>,
    namespaces: BTreeMap<&'a str, &'a Namespace>,
}

impl World<'_> {
    /// The addresses one peer names, from `policy_ns`'s point of view.
    fn peer(
        &self,
        peer: &NetworkPolicyPeer,
        policy_ns: &str,
        pods_out: &mut BTreeSet<Ipv4Addr>,
        blocks_out: &mut Vec<Cidr>,
    ) {
        if let Some(block) = &peer.ip_block {
            // An ipBlock with exceptions becomes one element per part of
            // the block the exceptions leave.
            if let Ok(cidr) = block.cidr.parse::<Cidr>() {
                let except: Vec<Cidr> = block
                    .except
                    .iter()
                    .flatten()
                    .filter_map(|e| e.parse().ok())
                    .collect();
                blocks_out.extend(subtract(cidr, &except));
            }
            return;
        }
        let pods = peer.pod_selector.as_ref().map(matcher);
        let namespaces = peer.namespace_selector.as_ref().map(matcher);
        for m in &self.members {
            let in_namespace = match &namespaces {
                None => m.namespace == policy_ns,
                Some(None) => false,
                Some(Some(sel)) => self
                    .namespaces
                    .get(m.namespace)
                    .is_some_and(|n| labels_match(sel, n.metadata.labels.as_ref())),
            };
            let selected = match &pods {
                None => true,
                Some(None) => false,
                Some(Some(sel)) => labels_match(sel, m.pod.metadata.labels.as_ref()),
            };
            if in_namespace && selected {
                pods_out.insert(m.ip);
            }
        }
    }

    fn peers(&self, peers: Option<&Vec<NetworkPolicyPeer>>, policy_ns: &str) -> Peers {
        match peers.filter(|p| !p.is_empty()) {
            None => Peers::Any,
            Some(list) => {
                let (mut pods, mut blocks) = (BTreeSet::new(), Vec::new());
                for p in list {
                    self.peer(p, policy_ns, &mut pods, &mut blocks);
                }
                Peers::Some(pods, blocks)
            }
        }
    }

    /// The rules one policy rule makes in the chain of `pod`, each ending
    /// in `return`; none where it matches nothing.
    fn rules(&self, d: Direction, rule: &Rule<'_>, pod: &Member, ns: &str) -> Vec<String> {
        let peers = self.peers(rule.peers, ns);
        let field = match d {
            Direction::Ingress => "saddr",
            Direction::Egress => "daddr",
        };
        let matches = peers.matches(field);
        let Some(ports) = rule.ports.filter(|p| !p.is_empty()) else {
            return matches.iter().map(|m| format!("{m}return")).collect();
        };
        let mut out = Vec::new();
        for port in ports {
            let Some(proto) = protocol(port.protocol.as_ref()) else {
                continue;
            };
            let clause = match &port.port {
                None => format!("meta l4proto {proto}"),
                // Ports the API server refuses (left from before it
                // checked) make no rule rather than a script nft refuses.
                Some(IntOrString::Int(n)) if !PORTS.contains(n) => continue,
                Some(IntOrString::Int(n)) => match port.end_port {
                    Some(end) if end > *n && PORTS.contains(&end) => {
                        format!("{proto} dport {n}-{end}")
                    }
                    _ => format!("{proto} dport {n}"),
                },
                // The pod's own port of that name.
                Some(IntOrString::String(name)) if d == Direction::Ingress => {
                    match named_port(pod.pod, name, proto) {
                        Some(n) => format!("{proto} dport {n}"),
                        None => continue,
                    }
                }
                // Each destination pod's port of that name.
                Some(IntOrString::String(name)) => {
                    let pairs: BTreeSet<String> = self
                        .members
                        .iter()
                        .filter(|m| peers.contains(m.ip))
                        .filter_map(|m| {
                            Some(format!("{} . {}", m.ip, named_port(m.pod, name, proto)?))
                        })
                        .collect();
                    if !pairs.is_empty() {
                        let pairs: Vec<String> = pairs.into_iter().collect();
                        out.push(format!(
                            "meta l4proto {proto} ip daddr . th dport {{ {} }} return",
                            pairs.join(", ")
                        ));
                    }
                    continue;
                }
            };
            out.extend(matches.iter().map(|m| format!("{m}{clause} return")));
        }
        out
    }
}

/// A rule of either direction: its peers and ports.
struct Rule<'a> {
    peers: Option<&'a Vec<NetworkPolicyPeer>>,
    ports: Option<&'a Vec<NetworkPolicyPort>>,
}

/// The rules of `policy` in direction `d`.
fn rules_of(policy: &NetworkPolicy, d: Direction) -> Vec<Rule<'_>> {
    let Some(spec) = &policy.spec else {
        return Vec::new();
    };
    match d {
        Direction::Ingress => spec
            .ingress
            .iter()
            .flatten()
            .map(|r| Rule {
                peers: r.from.as_ref(),
                ports: r.ports.as_ref(),
            })
            .collect(),
        Direction::Egress => spec
            .egress
            .iter()
            .flatten()
            .map(|r| Rule {
                peers: r.to.as_ref(),
                ports: r.ports.as_ref(),
            })
            .collect(),
    }
}

/// `block` less the `except` blocks inside it, as the fewest CIDRs.
fn subtract(block: Cidr, except: &[Cidr]) -> Vec<Cidr> {
    let contains = |outer: &Cidr, inner: &Cidr| {
        inner.prefix >= outer.prefix && outer.offset(Ipv4Addr::from(inner.base)).is_some()
    };
    let cut: Vec<&Cidr> = except.iter().filter(|e| contains(&block, e)).collect();
    if cut.iter().any(|e| e.prefix == block.prefix) {
        return Vec::new();
    }
    if cut.is_empty() {
        return vec![block];
    }
    // Split in halves and keep what the exceptions leave of each.
    let prefix = block.prefix + 1;
    let half = 1u32 << (32 - prefix);
    [block.base, block.base + half]
        .into_iter()
        .flat_map(|base| subtract(Cidr { base, prefix }, except))
        .collect()
}

/// A short, stable chain-name part for a pod.
fn id(pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let digest = Sha256::digest(uid.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// The script that replaces the policy table with what `policies` ask of
/// `node`'s pods (and removes the table when they ask nothing).
pub fn script(
    policies: &[std::sync::Arc<NetworkPolicy>],
    pods: &[std::sync::Arc<Pod>],
    namespaces: &[std::sync::Arc<Namespace>],
    node: &str,
) -> String {
    let world = World {
        members: members(pods),
        namespaces: namespaces
            .iter()
            .filter_map(|n| Some((n.metadata.name.as_deref()?, &**n)))
            .collect(),
    };
    let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut maps: [BTreeMap<Ipv4Addr, String>; 2] = Default::default();
    for pod in &world.members {
        if pod.pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node) {
            continue;
        }
        let selecting: Vec<&NetworkPolicy> = policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(pod.namespace))
            .filter(|p| {
                // No podSelector selects every pod of the namespace.
                let Some(spec) = &p.spec else { return false };
                let all = LabelSelector::default();
                let sel = matcher(spec.pod_selector.as_ref().unwrap_or(&all));
                sel.is_some_and(|s| labels_match(&s, pod.pod.metadata.labels.as_ref()))
            })
            .map(|p| &**p)
            .collect();
        for (i, d) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let isolating: Vec<&&NetworkPolicy> =
                selecting.iter().filter(|p| affects(p, d)).collect();
            if isolating.is_empty() {
                continue;
            }
            let chain = format!("{}-{}", if i == 0 { "in" } else { "eg" }, id(pod.pod));
            let mut rules = Vec::new();
            for p in isolating {
                for rule in rules_of(p, d) {
                    rules.extend(world.rules(d, &rule, pod, pod.namespace));
                }
            }
            rules.push("drop".into());
            maps[i].insert(pod.ip, chain.clone());
            chains.insert(chain, rules);
        }
    }
    let mut out = format!("table ip {TABLE} {{}}\ndelete table ip {TABLE}\n");
    if chains.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table ip {TABLE} {{");
    for name in ["ingress", "egress"] {
        let _ = writeln!(out, "  map {name} {{ type ipv4_addr : verdict; }}");
    }
    for (name, rules) in &chains {
        let _ = writeln!(out, "  chain {name} {{");
        for r in rules {
            let _ = writeln!(out, "    {r}");
        }
        let _ = writeln!(out, "  }}");
    }
    let _ = writeln!(
        out,
        "  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    ct state established,related accept\n    ip daddr vmap @ingress\n    ip saddr vmap @egress\n  }}\n}}"
    );
    for (name, map) in ["ingress", "egress"].iter().zip(&maps) {
        for (ip, chain) in map {
            let _ = writeln!(
                out,
                "add element ip {TABLE} {name} {{ {ip} : jump {chain} }}"
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{json, Value};

    use super::*;

    fn pod(name: &str, ns: &str, node: &str, ip: &str, labels: Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": labels},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i",
                    "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip},
            }))
            .unwrap(),
        )
    }

    fn policy(ns: &str, spec: Value) -> Arc<NetworkPolicy> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": ns}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    fn namespace(name: &str, labels: Value) -> Arc<Namespace> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap(),
        )
    }

    /// The rules of the chain in `script` whose name starts with `prefix`.
    fn chain(script: &str, prefix: &str) -> Vec<String> {
        let start = script.find(&format!("  chain {prefix}")).expect(prefix);
        script[start..]
            .lines()
            .skip(1)
            .take_while(|l| l.trim() != "}")
            .map(|l| l.trim().to_owned())
            .collect()
    }

    fn world() -> (Vec<Arc<Pod>>, Vec<Arc<Namespace>>) {
        let pods = vec![
            pod("web", "shop", "n1", "10.42.0.5", json!({"app": "web"})),
            pod("api", "shop", "n2", "10.42.1.6", json!({"app": "api"})),
            pod("probe", "ops", "n2", "10.42.1.7", json!({"app": "probe"})),
            pod(
                "elsewhere",
                "shop",
                "n2",
                "10.42.1.8",
                json!({"app": "web"}),
            ),
        ];
        let namespaces = vec![
            namespace("shop", json!({"team": "shop"})),
            namespace("ops", json!({"team": "ops"})),
        ];
        (pods, namespaces)
    }

    #[test]
    fn an_isolated_pod_admits_only_what_a_rule_allows() {
        let (pods, namespaces) = world();
        let allow = policy(
            "shop",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "api"}}}], "ports": [{"port": "http"}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}},
                          {"ipBlock": {"cidr": "192.168.0.0/16", "except": ["192.168.1.0/24"]}}],
                 "ports": [{"protocol": "UDP", "port": 53, "endPort": 60}]},
            ]}),
        );
        let script = script(&[allow], &pods, &namespaces, "n1");
        // Only this node's selected pod gets a chain, and only for ingress.
        assert!(script.contains("add element ip skiff-policy ingress { 10.42.0.5 : jump in-"));
        assert!(!script.contains("10.42.1.8 : jump"), "{script}");
        assert!(!script.contains("chain eg-"), "{script}");
        assert_eq!(
            chain(&script, "in-"),
            [
                "ip saddr { 10.42.1.6 } tcp dport 8080 return",
                "ip saddr { 10.42.1.7 } udp dport 53-60 return",
                "ip saddr 192.168.0.0/24 udp dport 53-60 return",
                "ip saddr 192.168.2.0/23 udp dport 53-60 return",
                "ip saddr 192.168.4.0/22 udp dport 53-60 return",
                "ip saddr 192.168.8.0/21 udp dport 53-60 return",
                "ip saddr 192.168.16.0/20 udp dport 53-60 return",
                "ip saddr 192.168.32.0/19 udp dport 53-60 return",
                "ip saddr 192.168.64.0/18 udp dport 53-60 return",
                "ip saddr 192.168.128.0/17 udp dport 53-60 return",
                "drop",
            ]
        );
    }

    #[test]
    fn egress_isolation_and_deny_all() {
        let (pods, namespaces) = world();
        // A policy with an egress section isolates both ways; one that
        // selects all and allows nothing denies everything.
        let egress = policy(
            "shop",
            json!({"podSelector": {}, "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "api"}}}],
                "ports": [{"port": "http"}]}]}),
        );
        let script = script(&[egress], &pods, &namespaces, "n1");
        assert_eq!(chain(&script, "in-"), ["drop"]);
        assert_eq!(
            chain(&script, "eg-"),
            [
                "meta l4proto tcp ip daddr . th dport { 10.42.1.6 . 8080 } return",
                "drop"
            ]
        );
        // A selector that names no pod matches nothing.
        let none = policy(
            "shop",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "gone"}}}]}]}),
        );
        assert_eq!(
            chain(&script_for(&none, &pods, &namespaces), "in-"),
            ["drop"]
        );
        // No policy, no table.
        let empty = script_for_none(&pods, &namespaces);
        assert_eq!(
            empty,
            "table ip skiff-policy {}\ndelete table ip skiff-policy\n"
        );
    }

    fn script_for(p: &Arc<NetworkPolicy>, pods: &[Arc<Pod>], ns: &[Arc<Namespace>]) -> String {
        script(std::slice::from_ref(p), pods, ns, "n1")
    }

    fn script_for_none(pods: &[Arc<Pod>], ns: &[Arc<Namespace>]) -> String {
        script(&[], pods, ns, "n1")
    }

    #[test]
    fn exceptions_leave_the_rest_of_a_block() {
        let block: Cidr = "10.0.0.0/8".parse().unwrap();
        let parts: Vec<String> = subtract(block, &["10.128.0.0/9".parse().unwrap()])
            .iter()
            .map(Cidr::to_string)
            .collect();
        assert_eq!(parts, ["10.0.0.0/9"]);
        assert!(subtract(block, &[block]).is_empty());
        // An exception outside the block changes nothing.
        assert_eq!(subtract(block, &["11.0.0.0/8".parse().unwrap()]), [block]);
    }
}
