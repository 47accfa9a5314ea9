//! The Service proxy and pod routes of every node: it follows Services,
//! EndpointSlices and Nodes through the API server and keeps the `ip skiff`
//! nftables table in step (see [`rules`]), applying each change as one
//! atomic `nft -f` transaction. It routes every other node's podCIDR via
//! that node's InternalIP, and the rest of the cluster and service ranges
//! to `unreachable`, so no packet for them leaves the machine. It enforces
//! the NetworkPolicies of its node's pods (see [`policy`]), and answers
//! load balancers' health checks (see [`health`]). It removes everything
//! it made when it stops.

pub mod health;
pub mod policy;
pub mod rules;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use skiff_core::endpoint_slices::ZONE;
use skiff_runtime::cache::{follow, Cache};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use rules::{Ruleset, TABLE};

#[derive(Clone, Debug)]
pub struct Config {
    /// This node, whose own podCIDR is local.
    pub node_name: String,
    /// Ranges whose packets must never leave the machine.
    pub unreachable: Vec<String>,
}

/// Why nft refused a change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running nft (is Debian's nftables installed?): {0}")]
    Spawn(std::io::Error),
    #[error("nft: {0}")]
    Rejected(String),
}

/// Applies an nft script in one transaction.
pub async fn apply(script: &str) -> Result<(), Error> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(Error::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(Error::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(Error::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Rejected(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

/// Lets packets from pods be DNATed to loopback endpoints (the API server
/// and cluster DNS of a single-node cluster listen on 127.0.0.1).
const ROUTE_LOCALNET: &str = "/proc/sys/net/ipv4/conf/all/route_localnet";

/// Whether any endpoint is on the loopback range.
fn dnats_to_loopback(set: &Ruleset) -> bool {
    set.chains
        .values()
        .flatten()
        .any(|r| r.contains("dnat ip to 127."))
}

/// Removes the table and routes when the proxy stops, however it stops,
/// and restores `route_localnet`.
struct Cleanup {
    /// Routes added, as `ip route` arguments.
    routes: Vec<Vec<String>>,
    localnet_was: Option<String>,
}

/// Runs `ip route <verb> <route…>`; whether it worked.
async fn route(verb: &str, spec: &[String]) -> bool {
    let status = tokio::process::Command::new("ip")
        .arg("route")
        .arg(verb)
        .args(spec)
        .stderr(Stdio::null())
        .status()
        .await;
    status.is_ok_and(|s| s.success())
}

/// Routes to the other nodes' pods: podCIDR → InternalIP. Only a podCIDR
/// inside the cluster's range, via an IPv4 address, becomes a route (a
/// Node naming `default` or `0.0.0.0/0` would take the host's traffic).
fn node_routes(
    nodes: &[Arc<Node>],
    me: &str,
    cluster: Option<skiff_core::cidr::Cidr>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for n in nodes {
        if n.metadata.name.as_deref() == Some(me) {
            continue;
        }
        let cidr = n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
        let ip = n
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .map(|a| a.address.clone());
        let cidr = cidr.and_then(|c| c.parse::<skiff_core::cidr::Cidr>().ok());
        let ip = ip.and_then(|i| i.parse::<std::net::Ipv4Addr>().ok());
        let inside = |c: &skiff_core::cidr::Cidr| {
            cluster.is_some_and(|range| {
                c.prefix >= range.prefix && range.offset(std::net::Ipv4Addr::from(c.base)).is_some()
            })
        };
        if let (Some(cidr), Some(ip)) = (cidr.filter(inside), ip) {
            out.insert(cidr.to_string(), ip.to_string());
        }
    }
    out
}

/// Where bridged IPv4 traffic is sent through netfilter: traffic between
/// pods of one node crosses only the bridge, and the policy table sees it
/// only through this.
const BRIDGE_NETFILTER: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Has bridged traffic pass netfilter, for policies between pods of this
/// node; says so when it cannot.
fn filter_bridged_traffic() {
    let on = std::fs::read_to_string(BRIDGE_NETFILTER).is_ok_and(|v| v.trim() == "1");
    if !on {
        if let Err(e) = std::fs::write(BRIDGE_NETFILTER, "1") {
            tracing::warn!(error = %e, "bridged traffic bypasses netfilter: NetworkPolicies do not apply between pods of this node");
        }
    }
}

/// What NetworkPolicies select among: every pod, and the namespaces.
type Members = (Arc<Cache<Pod>>, Arc<Cache<Namespace>>);

/// What [`policy::script`] gives when no pod is isolated.
fn no_policy() -> String {
    policy::script(&[], &[], &[], "")
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for table in [TABLE, policy::TABLE] {
            let _ = std::process::Command::new("nft")
                .args(["delete", "table", "ip", table])
                .stderr(Stdio::null())
                .status();
        }
        if let Some(was) = &self.localnet_was {
            let _ = std::fs::write(ROUTE_LOCALNET, was);
        }
        for spec in &self.routes {
            let _ = std::process::Command::new("ip")
                .args(["route", "delete"])
                .args(spec)
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Keeps the rules in step with the cluster until the task is dropped.
pub async fn run(client: Client, config: Config) {
    let mut cleanup = Cleanup {
        routes: Vec::new(),
        localnet_was: None,
    };
    for range in &config.unreachable {
        let spec = vec!["unreachable".to_owned(), range.clone()];
        if route("replace", &spec).await {
            cleanup.routes.push(spec);
        } else {
            tracing::warn!(%range, "could not route the range to unreachable");
        }
    }
    let wake = Arc::new(Notify::new());
    let services: Arc<Cache<Service>> = follow(&client, Some(wake.clone()));
    let slices: Arc<Cache<EndpointSlice>> = follow(&client, Some(wake.clone()));
    let nodes: Arc<Cache<Node>> = follow(&client, Some(wake.clone()));
    let policies: Arc<Cache<NetworkPolicy>> = follow(&client, Some(wake.clone()));
    // Services do not wait for policies: a proxy that may not read them
    // still routes.
    tokio::join!(
        services.wait_synced(),
        slices.wait_synced(),
        nodes.wait_synced()
    );
    let mut members: Option<Members> = None;
    let mut enforced: Option<String> = None;
    let mut applied: Option<Ruleset> = None;
    let mut routed: BTreeMap<String, String> = BTreeMap::new();
    let mut health_checks = health::Servers::default();
    loop {
        let cluster = config.unreachable.first().and_then(|r| r.parse().ok());
        let want = node_routes(&nodes.list(), &config.node_name, cluster);
        for (cidr, via) in &routed {
            if want.get(cidr) != Some(via) {
                let spec = vec![cidr.clone(), "via".to_owned(), via.clone()];
                route("delete", &spec).await;
                cleanup.routes.retain(|r| *r != spec);
            }
        }
        let mut now = BTreeMap::new();
        for (cidr, via) in want {
            if routed.get(&cidr) != Some(&via) {
                let spec = vec![cidr.clone(), "via".to_owned(), via.clone()];
                if !route("replace", &spec).await {
                    // Tried again on the next change.
                    tracing::warn!(%cidr, %via, "could not route to a node's pods");
                    continue;
                }
                cleanup.routes.push(spec);
            }
            now.insert(cidr, via);
        }
        routed = now;
        // Pods and namespaces are followed from the first policy on; the
        // table stays as it is until they are listed, without holding up
        // the Services.
        if members.is_none() && !policies.is_empty() {
            members = Some((
                follow(&client, Some(wake.clone())),
                follow(&client, Some(wake.clone())),
            ));
            filter_bridged_traffic();
        }
        let policy = match &members {
            Some((pods, namespaces)) if pods.is_synced() && namespaces.is_synced() => {
                Some(policy::script(
                    &policies.list(),
                    &pods.list(),
                    &namespaces.list(),
                    &config.node_name,
                ))
            }
            Some(_) => None,
            None => Some(no_policy()),
        };
        if let Some(policy) = policy.filter(|p| enforced.as_ref() != Some(p)) {
            match apply(&policy).await {
                Ok(()) => enforced = Some(policy),
                // Tried again on the next change.
                Err(e) => tracing::error!(error = %e, "could not update the NetworkPolicy rules"),
            }
        }
        let svcs: Vec<Service> = services.list().iter().map(|s| (**s).clone()).collect();
        let eps: Vec<EndpointSlice> = slices.list().iter().map(|s| (**s).clone()).collect();
        let me = nodes.get(&config.node_name);
        let zone = me
            .as_ref()
            .and_then(|n| n.metadata.labels.as_ref()?.get(ZONE));
        let place = rules::Place {
            node: &config.node_name,
            zone: zone.map(String::as_str),
        };
        let next = rules::desired(&svcs, &eps, place);
        if cleanup.localnet_was.is_none() && dnats_to_loopback(&next) {
            if let Ok(was) = std::fs::read_to_string(ROUTE_LOCALNET) {
                match std::fs::write(ROUTE_LOCALNET, "1") {
                    Ok(()) => cleanup.localnet_was = Some(was),
                    Err(e) => tracing::warn!(error = %e, "could not allow loopback endpoints"),
                }
            }
        }
        let script = rules::script(applied.as_ref(), &next);
        if !script.is_empty() {
            match apply(&script).await {
                Ok(()) => applied = Some(next),
                Err(e) => {
                    // Start over from a fresh table next time.
                    tracing::error!(error = %e, "could not update the proxy rules");
                    applied = None;
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            }
        } else if applied.is_none() {
            applied = Some(next);
        }
        let answers = health::wanted(&svcs, &eps, &config.node_name, applied.is_some());
        health_checks.serve(answers).await;
        wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pod_ranges_inside_the_cluster_become_routes() {
        let node = |name: &str, cidr: &str, ip: &str| {
            Arc::new(
                serde_json::from_value::<Node>(serde_json::json!({
                    "metadata": {"name": name},
                    "spec": {"podCIDR": cidr},
                    "status": {"addresses": [{"type": "InternalIP", "address": ip}]},
                }))
                .unwrap(),
            )
        };
        let nodes = [
            node("me", "10.42.0.0/24", "192.168.1.1"),
            node("b", "10.42.1.0/24", "192.168.1.2"),
            node("c", "default", "192.168.1.3"),
            node("d", "0.0.0.0/0", "192.168.1.4"),
            node("e", "10.42.2.0/24", "192.168.1.5 onlink"),
            node("f", "10.99.0.0/24", "192.168.1.6"),
        ];
        let routes = node_routes(&nodes, "me", "10.42.0.0/16".parse().ok());
        assert_eq!(
            routes.into_iter().collect::<Vec<_>>(),
            [("10.42.1.0/24".to_owned(), "192.168.1.2".to_owned())]
        );
    }
}
