//! Topology Aware Routing (`service.kubernetes.io/topology-mode: Auto`),
//! as upstream's EndpointSlice `topologycache`: each ready endpoint is
//! hinted for one zone, so that each zone gets a share of the endpoints
//! in proportion to its nodes' allocatable CPU, no endpoint overloaded by
//! more than 20 %. Endpoints stay in their own zone where they can; the
//! zones with more than their share give endpoints to those with less.
//! Where that cannot be done, no endpoint is hinted.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Node;
use skiff_core::endpoint_slices::ZONE;
use skiff_runtime::cache::Cache;

const MODE: &str = "service.kubernetes.io/topology-mode";
/// The annotation `topology-mode` replaced, still read.
const OLD_MODE: &str = "service.kubernetes.io/topology-aware-hints";
/// The most load over its share an endpoint may be given.
const OVERLOAD: f64 = 0.2;
/// Nodes with these labels are left out of each zone's capacity.
const EXCLUDED: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Whether a Service's annotations ask for topology-aware hints.
pub fn enabled(annotations: &BTreeMap<String, String>) -> bool {
    let mode = annotations.get(MODE).or_else(|| annotations.get(OLD_MODE));
    mode.is_some_and(|m| m == "Auto" || m == "auto")
}

/// Whether a node is left out of its zone's capacity (a control plane's).
pub fn excluded(node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    labels.is_some_and(|l| EXCLUDED.iter().any(|e| l.contains_key(*e)))
}

/// The zones' CPU shares ([`cpu_shares`]) kept until a node's zone,
/// readiness or CPU changes, as upstream's topology cache is set on node
/// events rather than worked out again for each Service.
#[derive(Default)]
pub struct Shares(Mutex<Option<Arc<Option<ZoneShares>>>>);

/// Each zone's share of the CPU, by zone.
pub type ZoneShares = BTreeMap<String, f64>;

impl Shares {
    pub fn of(&self, nodes: &Cache<Node>) -> Arc<Option<ZoneShares>> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.get_or_insert_with(|| Arc::new(cpu_shares(&nodes.list())))
            .clone()
    }

    /// A node changed: the next Service works the shares out again.
    pub fn forget(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Each zone's share of the ready nodes' allocatable CPU; none when a
/// ready node has no zone or no CPU, or when fewer than two zones have
/// ready nodes (upstream's `SetNodes`).
fn cpu_shares(nodes: &[Arc<Node>]) -> Option<ZoneShares> {
    let mut by_zone: BTreeMap<String, i128> = BTreeMap::new();
    for node in nodes {
        if excluded(node) || !crate::node_lifecycle::is_ready(node) {
            continue;
        }
        let labels = node.metadata.labels.as_ref();
        let zone = labels.and_then(|l| l.get(ZONE)).filter(|z| !z.is_empty())?;
        let cpu = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("cpu"))
            .and_then(|q| skiff_core::quantity::parse_milli(&q.0))
            .filter(|&m| m > 0)?;
        *by_zone.entry(zone.clone()).or_default() += cpu;
    }
    let total: i128 = by_zone.values().sum();
    if by_zone.len() < 2 || total == 0 {
        return None;
    }
    let share = |cpu: i128| cpu as f64 / total as f64;
    Some(by_zone.into_iter().map(|(z, c)| (z, share(c))).collect())
}

/// How many endpoints each zone should have; none when a zone would get
/// none, or when the least each zone needs not to be overloaded adds up
/// to more than there are (upstream's `getAllocations`).
fn allocations(
    shares: &BTreeMap<String, f64>,
    endpoints: usize,
) -> Result<BTreeMap<&str, f64>, Refusal> {
    let counts = (endpoints, shares.len());
    if shares.len() > endpoints {
        return Err(Refusal::TooFewEndpoints(counts));
    }
    let mut left = endpoints;
    let mut out = BTreeMap::new();
    for (zone, share) in shares {
        let desired = share * endpoints as f64;
        let minimum = (desired / (1.0 + OVERLOAD)).ceil() as usize;
        left = left
            .checked_sub(minimum)
            .ok_or(Refusal::Overloaded(counts))?;
        out.insert(zone.as_str(), desired.max(minimum as f64));
    }
    Ok(out)
}

/// Why no hints are given, with upstream's messages.
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// A ready node has no zone or CPU, or the ready nodes are in one zone.
    NodeInfo,
    /// Fewer endpoints than zones: (endpoints, zones).
    TooFewEndpoints((usize, usize)),
    /// The least each zone needs overloads an endpoint: (endpoints, zones).
    Overloaded((usize, usize)),
    /// A ready endpoint's zone is unknown.
    NoZone,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NodeInfo => f.write_str("Insufficient Node information: allocatable CPU or zone not specified on one or more nodes"),
            Refusal::TooFewEndpoints((e, z)) => write!(f, "Insufficient number of endpoints ({e} endpoints, {z} zones)"),
            Refusal::Overloaded((e, z)) => write!(f, "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold ({e} endpoints, {z} zones)"),
            Refusal::NoZone => f.write_str("One or more endpoints do not have a zone specified"),
        }
    }
}

/// The zone each ready endpoint is hinted for, given the zones' shares
/// (none when the nodes tell too little) and the zone each endpoint is in
/// (in the slices' order); why not, when no hints can be given.
pub fn assign(
    shares: Option<&BTreeMap<String, f64>>,
    zones: &[Option<&str>],
) -> Result<Vec<String>, Refusal> {
    let shares = shares.ok_or(Refusal::NodeInfo)?;
    let allocations = allocations(shares, zones.len())?;
    let mut hinted: Vec<String> = zones
        .iter()
        .map(|z| z.filter(|z| !z.is_empty()).map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or(Refusal::NoZone)?;
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for zone in zones.iter().flatten() {
        *count.entry(zone).or_default() += 1;
    }
    let (mut giving, mut receiving) = give_and_take(&allocations, &count);
    for hint in hinted.iter_mut() {
        let Some(left) = giving.get_mut(hint.as_str()).filter(|n| **n > 0) else {
            continue;
        };
        let Some((to, wanted)) = receiving.iter_mut().find(|(_, n)| **n > 0) else {
            break;
        };
        *left -= 1;
        *wanted -= 1;
        *hint = (*to).to_owned();
    }
    Ok(hinted)
}

/// How many endpoints each zone gives and receives, moved one at a time
/// from the zone most over its desired count to the one most under it,
/// while both are at least half an endpoint off and one a whole one
/// (upstream's `getGivingAndReceivingZones`).
fn give_and_take<'a>(
    desired: &BTreeMap<&'a str, f64>,
    count: &BTreeMap<&str, usize>,
) -> (BTreeMap<&'a str, usize>, BTreeMap<&'a str, usize>) {
    let mut over: BTreeMap<&str, f64> = BTreeMap::new();
    let mut under: BTreeMap<&str, f64> = BTreeMap::new();
    for (&zone, &want) in desired {
        let have = count.get(zone).copied().unwrap_or(0) as f64;
        if have > want {
            over.insert(zone, have - want);
        } else if have < want {
            under.insert(zone, want - have);
        }
    }
    let most = |m: &BTreeMap<&'a str, f64>| {
        m.iter()
            .fold(None, |best: Option<(&'a str, f64)>, (&z, &n)| match best {
                Some((_, b)) if b >= n => best,
                _ if n > 0.0 => Some((z, n)),
                _ => best,
            })
    };
    let (mut giving, mut receiving) = (BTreeMap::new(), BTreeMap::new());
    while let (Some((from, give)), Some((to, take))) = (most(&over), most(&under)) {
        if (give < 1.0 && take < 1.0) || give < 0.5 || take < 0.5 {
            break;
        }
        *giving.entry(from).or_default() += 1;
        *receiving.entry(to).or_default() += 1;
        over.insert(from, give - 1.0);
        under.insert(to, take - 1.0);
    }
    (giving, receiving)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, zone: Option<&str>, cpu: &str, ready: bool) -> Arc<Node> {
        let labels = match zone {
            Some(z) => json!({ZONE: z}),
            None => json!({}),
        };
        let status = if ready { "True" } else { "False" };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
                "status": {"allocatable": {"cpu": cpu}, "conditions": [{"type": "Ready", "status": status}]}}))
            .unwrap(),
        )
    }

    #[test]
    fn shares_follow_the_ready_nodes_cpu() {
        let nodes = [
            node("a", Some("z1"), "3", true),
            node("b", Some("z2"), "1000m", true),
            node("c", None, "8", false),
        ];
        let shares = cpu_shares(&nodes).unwrap();
        assert_eq!(shares["z1"], 0.75);
        assert_eq!(shares["z2"], 0.25);
        assert!(cpu_shares(&nodes[..1]).is_none(), "one zone");
        let unzoned = [nodes[0].clone(), node("d", None, "1", true)];
        assert!(
            cpu_shares(&unzoned).is_none(),
            "a ready node without a zone"
        );
    }

    #[test]
    fn shares_are_kept_until_forgotten() {
        let nodes = skiff_runtime::cache::Informer::<Node>::default();
        for n in [
            node("a", Some("z1"), "1", true),
            node("b", Some("z2"), "1", true),
        ] {
            nodes.apply((*n).clone());
        }
        let kept = Shares::default();
        let z1 = |s: &Shares| s.of(&nodes.cache()).as_ref().as_ref().unwrap()["z1"];
        assert_eq!(z1(&kept), 0.5);
        nodes.apply((*node("a", Some("z1"), "3", true)).clone());
        assert_eq!(z1(&kept), 0.5, "kept while no node change was told");
        kept.forget();
        assert_eq!(z1(&kept), 0.75);
    }

    #[test]
    fn endpoints_stay_in_their_zone_unless_another_zone_lacks_its_share() {
        let even: BTreeMap<String, f64> = [("z1".into(), 0.5), ("z2".into(), 0.5)].into();
        let even = Some(&even);
        let zones = [Some("z1"), Some("z2"), Some("z1"), Some("z2")];
        assert_eq!(assign(even, &zones).unwrap(), ["z1", "z2", "z1", "z2"]);
        // Three endpoints in z1, one in z2: z1 gives one to z2.
        let zones = [Some("z1"), Some("z1"), Some("z1"), Some("z2")];
        assert_eq!(assign(even, &zones).unwrap(), ["z2", "z1", "z1", "z2"]);
        assert_eq!(
            assign(even, &[Some("z1")]).unwrap_err().to_string(),
            "Insufficient number of endpoints (1 endpoints, 2 zones)"
        );
        assert_eq!(assign(even, &[Some("z1"), None]), Err(Refusal::NoZone));
        assert_eq!(assign(None, &zones), Err(Refusal::NodeInfo));
        // 90 % of the CPU in z1 with two endpoints: z2 needs one, z1 two.
        let skewed: BTreeMap<String, f64> = [("z1".into(), 0.9), ("z2".into(), 0.1)].into();
        assert_eq!(
            assign(Some(&skewed), &[Some("z1"), Some("z2")]),
            Err(Refusal::Overloaded((2, 2)))
        );
    }

    #[test]
    fn the_annotation_asks_in_either_spelling() {
        let with = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(enabled(&with(MODE, "Auto")));
        assert!(enabled(&with(OLD_MODE, "auto")));
        assert!(!enabled(&with(MODE, "Disabled")));
        assert!(!enabled(&BTreeMap::new()));
    }
}
