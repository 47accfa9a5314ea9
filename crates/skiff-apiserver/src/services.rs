//! Service addresses: ClusterIPs from the service CIDR, and NodePorts and
//! health-check NodePorts from 30000–32767. Each allocation is a key in the store naming its Service,
//! created atomically, so two Services never get the same address, and
//! allocations survive restarts. Keys whose Service is gone (a crash between
//! allocating and storing) are released at start.

use std::net::Ipv4Addr;
use std::sync::Arc;

use bytes::Bytes;
use rand::Rng;
use serde_json::{json, Value};
use skiff_core::cidr::Cidr;
use skiff_core::status::Cause;
use skiff_core::validate::needs_health_check;
use skiff_core::{meta, registry, ApiError};
use skiff_store::{ListOptions, Store};

const IP_KEYS: &str = "/skiff/allocations/clusterips/";
const PORT_KEYS: &str = "/skiff/allocations/nodeports/";
/// The NodePort range, as upstream's default.
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

pub struct Allocator {
    pub range: Cidr,
    store: Arc<dyn Store>,
}

/// What a Service holds: its ClusterIP (if any) and NodePorts (its
/// health-check port among them).
#[derive(Debug, Default, PartialEq)]
pub struct Held {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<u16>,
}

fn owner(svc: &Value) -> String {
    format!(
        "{}/{}/{}",
        meta::namespace(svc).unwrap_or_default(),
        meta::name(svc),
        meta::get_str(svc, "uid").unwrap_or_default()
    )
}

fn store_error(e: skiff_store::Error) -> ApiError {
    ApiError::internal(format!("allocating a Service address: {e}"))
}

fn invalid(svc: &Value, field: String, value: &str, why: &str) -> ApiError {
    ApiError::invalid(
        "",
        "Service",
        meta::name(svc),
        vec![Cause::invalid(field, value, why)],
    )
}

/// The ClusterIP and NodePorts a Service asks for.
pub fn held(svc: &Value) -> Held {
    let spec = &svc["spec"];
    let ports = spec["ports"].as_array().into_iter().flatten();
    let node_ports = ports.map(|p| &p["nodePort"]);
    Held {
        ip: spec["clusterIP"].as_str().and_then(|ip| ip.parse().ok()),
        ports: node_ports
            .chain([&spec["healthCheckNodePort"]])
            .filter_map(port)
            .collect(),
    }
}

/// A port number set to other than 0.
fn port(v: &Value) -> Option<u16> {
    v.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

const HEALTH_CHECK: &str = "spec.healthCheckNodePort";

/// Which of a Service's ports hold NodePorts.
#[derive(Clone, Copy, PartialEq)]
enum NodePorts {
    /// Every port: a NodePort Service, or a LoadBalancer's by default.
    All,
    /// Only ports that ask for one by number: a LoadBalancer with
    /// `allocateLoadBalancerNodePorts: false`, as upstream.
    Asked,
    None,
}

fn node_ports(spec: &Value) -> NodePorts {
    match spec["type"].as_str() {
        Some("NodePort") => NodePorts::All,
        Some("LoadBalancer") if spec["allocateLoadBalancerNodePorts"] == false => NodePorts::Asked,
        Some("LoadBalancer") => NodePorts::All,
        _ => NodePorts::None,
    }
}

impl Allocator {
    pub fn new(range: Cidr, store: Arc<dyn Store>) -> Self {
        Self { range, store }
    }

    /// The `kubernetes` Service's address: the range's first.
    pub fn api_ip(&self) -> Ipv4Addr {
        self.range
            .nth(1)
            .expect("a service range holds two addresses")
    }

    /// Takes `key` for `owner`; false when someone holds it.
    async fn claim(&self, key: String, owner: &str) -> Result<bool, ApiError> {
        match self.store.create(&key, Bytes::from(owner.to_owned())).await {
            Ok(_) => Ok(true),
            Err(skiff_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(store_error(e)),
        }
    }

    async fn release_key(&self, key: String) {
        if let Err(e) = self.store.delete(&key, None).await {
            if !matches!(e, skiff_store::Error::NotFound { .. }) {
                tracing::warn!(%key, error = %e, "could not release a Service address");
            }
        }
    }

    async fn allocate_ip(&self, svc: &Value, asked: Option<&str>) -> Result<Ipv4Addr, ApiError> {
        let who = owner(svc);
        if let Some(asked) = asked {
            let field = "spec.clusterIPs[0]".to_owned();
            let ip: Ipv4Addr = asked
                .parse()
                .map_err(|_| invalid(svc, field.clone(), asked, "must be a valid IP address"))?;
            if self
                .range
                .offset(ip)
                .is_none_or(|o| o == 0 || o + 1 == self.range.size())
            {
                let why = format!(
                    "failed to allocate IP {asked}: the provided IP ({asked}) is not in the valid range. The range of valid IPs is {}",
                    self.range
                );
                return Err(invalid(svc, field, asked, &why));
            }
            if !self.claim(format!("{IP_KEYS}{ip}"), &who).await? {
                let why =
                    format!("failed to allocate IP {asked}: provided IP is already allocated");
                return Err(invalid(svc, field, asked, &why));
            }
            return Ok(ip);
        }
        // As upstream: automatic addresses come from above a low band
        // kept for addresses users ask for (such as the DNS Service's).
        let size = self.range.size();
        let low = (size / 16).clamp(16, 256).min(size / 2);
        let span = size - 1 - low;
        let start = rand::rng().random_range(0..span.max(1));
        for i in 0..span {
            let offset = low + (start + i) % span;
            let ip = self.range.nth(offset).expect("offset inside the range");
            if self.claim(format!("{IP_KEYS}{ip}"), &who).await? {
                return Ok(ip);
            }
        }
        Err(ApiError::internal(format!(
            "failed to allocate a serviceIP: range {} is full",
            self.range
        )))
    }

    /// A NodePort for `field`: `asked`, or any free one.
    async fn allocate_port(
        &self,
        svc: &Value,
        field: String,
        asked: Option<u16>,
    ) -> Result<u16, ApiError> {
        let who = owner(svc);
        if let Some(port) = asked {
            if !NODE_PORTS.contains(&port) {
                let why = "provided port is not in the valid range. The range of valid ports is 30000-32767";
                return Err(invalid(svc, field, &port.to_string(), why));
            }
            if !self.claim(format!("{PORT_KEYS}{port}"), &who).await? {
                return Err(invalid(
                    svc,
                    field,
                    &port.to_string(),
                    "provided port is already allocated",
                ));
            }
            return Ok(port);
        }
        let span = u32::from(NODE_PORTS.end() - NODE_PORTS.start()) + 1;
        let start = rand::rng().random_range(0..span);
        for k in 0..span {
            let port = NODE_PORTS.start() + ((start + k) % span) as u16;
            if self.claim(format!("{PORT_KEYS}{port}"), &who).await? {
                return Ok(port);
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: range is full",
        ))
    }

    /// Gives a new Service its ClusterIP and NodePorts, recording them in
    /// its spec. On error nothing stays allocated.
    pub async fn admit(&self, svc: &mut Value) -> Result<(), ApiError> {
        let mut taken = Held::default();
        let result = self.admit_into(svc, &mut taken).await;
        if result.is_err() {
            self.release(&taken).await;
        }
        result
    }

    async fn admit_into(&self, svc: &mut Value, taken: &mut Held) -> Result<(), ApiError> {
        let spec = svc["spec"].clone();
        let external = spec["type"] == "ExternalName";
        let asked = spec["clusterIP"].as_str().filter(|s| !s.is_empty());
        if !external && asked != Some("None") {
            let ip = self.allocate_ip(svc, asked).await?;
            taken.ip = Some(ip);
            svc["spec"]["clusterIP"] = json!(ip.to_string());
            svc["spec"]["clusterIPs"] = json!([ip.to_string()]);
        }
        if !external {
            // IPv4 only (validation refuses IPv6 and RequireDualStack);
            // PreferDualStack is kept, as upstream keeps it.
            svc["spec"]["ipFamilies"] = json!(["IPv4"]);
            if svc["spec"]["ipFamilyPolicy"].is_null() {
                svc["spec"]["ipFamilyPolicy"] = json!("SingleStack");
            }
        }
        let wanted = node_ports(&spec);
        if wanted != NodePorts::None {
            self.add_node_ports(svc, wanted == NodePorts::Asked, taken)
                .await?;
        }
        if needs_health_check(&spec) {
            let asked = port(&spec["healthCheckNodePort"]);
            let port = self.allocate_port(svc, HEALTH_CHECK.into(), asked).await?;
            taken.ports.push(port);
            svc["spec"]["healthCheckNodePort"] = json!(port);
        }
        Ok(())
    }

    /// Claims the NodePorts ports ask for, and unless `asked_only`
    /// allocates one for each port lacking one.
    async fn add_node_ports(
        &self,
        svc: &mut Value,
        asked_only: bool,
        taken: &mut Held,
    ) -> Result<(), ApiError> {
        let count = svc["spec"]["ports"].as_array().map_or(0, Vec::len);
        for i in 0..count {
            let asked = port(&svc["spec"]["ports"][i]["nodePort"]);
            if asked.is_none() && asked_only {
                continue;
            }
            let snapshot = svc.clone();
            let field = format!("spec.ports[{i}].nodePort");
            let port = self.allocate_port(&snapshot, field, asked).await?;
            taken.ports.push(port);
            svc["spec"]["ports"][i]["nodePort"] = json!(port);
        }
        Ok(())
    }

    /// Claims what [`settle`] found missing: the ports asked for by number
    /// (an error if taken) and `any` more from the range.
    pub async fn fill(&self, svc: &Value, need: &Need, pool: &mut Pool) -> Result<(), ApiError> {
        for (field, port) in &need.specific {
            let port = self.allocate_port(svc, field.clone(), Some(*port)).await?;
            pool.asked.push(port);
        }
        for _ in 0..need.any {
            let port = self.allocate_port(svc, HEALTH_CHECK.into(), None).await?;
            pool.free.push(port);
        }
        Ok(())
    }

    /// Gives back what a Service held.
    pub async fn release(&self, held: &Held) {
        if let Some(ip) = held.ip {
            self.release_key(format!("{IP_KEYS}{ip}")).await;
        }
        for port in &held.ports {
            self.release_key(format!("{PORT_KEYS}{port}")).await;
        }
    }

    /// Releases allocations whose Service no longer exists.
    pub async fn repair(&self) -> Result<(), ApiError> {
        let services = registry::lookup("", "v1", "services").expect("services are served");
        for prefix in [IP_KEYS, PORT_KEYS] {
            let page = self
                .store
                .list(prefix, ListOptions::default())
                .await
                .map_err(store_error)?;
            for kv in page.items {
                let holder = String::from_utf8_lossy(&kv.value).into_owned();
                let mut parts = holder.splitn(3, '/');
                let (ns, name, uid) = (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                );
                let current = self
                    .store
                    .get(&services.key(Some(ns), name))
                    .await
                    .map_err(store_error)?;
                let alive = current.is_some_and(|c| {
                    serde_json::from_slice::<Value>(&c.value)
                        .is_ok_and(|s| meta::get_str(&s, "uid") == Some(uid))
                });
                if !alive {
                    tracing::info!(key = %kv.key, %holder, "releasing an address its Service no longer holds");
                    self.release_key(kv.key.clone()).await;
                }
            }
        }
        Ok(())
    }
}

/// NodePorts claimed for an update before it is written.
#[derive(Debug, Default)]
pub struct Pool {
    /// Claimed from the range, for ports that name none.
    pub free: Vec<u16>,
    /// Claimed because a port asked for them by number.
    pub asked: Vec<u16>,
}

impl Pool {
    /// Everything claimed so far, to give back what goes unused.
    pub fn held(&self) -> Held {
        Held {
            ip: None,
            ports: self.free.iter().chain(&self.asked).copied().collect(),
        }
    }
}

/// What an update still needs claimed.
#[derive(Debug, Default, PartialEq)]
pub struct Need {
    /// (field, NodePort) pairs asked for by number.
    pub specific: Vec<(String, u16)>,
    pub any: usize,
}

/// Settles the NodePorts of an updated Service from what it held before
/// and what `pool` has claimed: kept ports stay, a port naming none keeps
/// its old one (same port and protocol) or takes one from the pool, and
/// a type without NodePorts drops them; a Service that newly needs a
/// health-check port takes one. Returns what is still missing.
pub fn settle(old: &Value, new: &mut Value, pool: &Pool) -> Need {
    let mut need = Need::default();
    let wanted = node_ports(&new["spec"]);
    let before = held(old).ports;
    let old_ports = old["spec"]["ports"].as_array().cloned().unwrap_or_default();
    let mut free = pool.free.iter().copied();
    let mut used: Vec<u16> = Vec::new();
    let ports = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut);
    for (i, p) in ports.into_iter().flatten().enumerate() {
        if wanted == NodePorts::None {
            if let Some(o) = p.as_object_mut() {
                o.remove("nodePort");
            }
            continue;
        }
        match port(&p["nodePort"]) {
            Some(n) if before.contains(&n) || pool.asked.contains(&n) => used.push(n),
            Some(n) => need.specific.push((format!("spec.ports[{i}].nodePort"), n)),
            None if wanted == NodePorts::Asked => {}
            None => {
                let same = old_ports
                    .iter()
                    .find(|o| o["port"] == p["port"] && o["protocol"] == p["protocol"]);
                let kept = same
                    .and_then(|o| o["nodePort"].as_u64())
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| !used.contains(n));
                match kept.or_else(|| free.next()) {
                    Some(n) => {
                        p["nodePort"] = json!(n);
                        used.push(n);
                    }
                    None => need.any += 1,
                }
            }
        }
    }
    if needs_health_check(&new["spec"]) {
        match port(&new["spec"]["healthCheckNodePort"]) {
            Some(n) if before.contains(&n) || pool.asked.contains(&n) => {}
            Some(n) => need.specific.push((HEALTH_CHECK.into(), n)),
            None => match free.next() {
                Some(n) => new["spec"]["healthCheckNodePort"] = json!(n),
                None => need.any += 1,
            },
        }
    }
    need
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(kind: &str, ports: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "d", "uid": "u"}, "spec": {"type": kind, "ports": ports}})
    }

    #[test]
    fn settling_node_ports() {
        let old = svc(
            "NodePort",
            json!([{"port": 80, "protocol": "TCP", "nodePort": 30080}]),
        );
        // The same port without a nodePort keeps its old one.
        let mut new = svc("NodePort", json!([{"port": 80, "protocol": "TCP"}]));
        assert_eq!(settle(&old, &mut new, &Pool::default()), Need::default());
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        // A new port needs one from the pool.
        let mut new = svc(
            "NodePort",
            json!([{"port": 80, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]),
        );
        let need = settle(&old, &mut new, &Pool::default());
        assert_eq!(need.any, 1);
        let pool = Pool {
            free: vec![31000],
            asked: vec![],
        };
        assert_eq!(settle(&old, &mut new, &pool), Need::default());
        assert_eq!(new["spec"]["ports"][1]["nodePort"], 31000);
        // A port asked for by number must be claimed first.
        let mut new = svc(
            "NodePort",
            json!([{"port": 80, "protocol": "TCP", "nodePort": 30500}]),
        );
        assert_eq!(
            settle(&old, &mut new, &Pool::default()).specific,
            vec![("spec.ports[0].nodePort".to_owned(), 30500)]
        );
        // ClusterIP drops NodePorts.
        let mut new = svc(
            "ClusterIP",
            json!([{"port": 80, "protocol": "TCP", "nodePort": 30080}]),
        );
        assert_eq!(settle(&old, &mut new, &Pool::default()), Need::default());
        assert!(new["spec"]["ports"][0].get("nodePort").is_none());
        assert_eq!(held(&new).ports, Vec::<u16>::new());
        // A LoadBalancer that allocates none keeps only ports asked for.
        let mut new = svc(
            "LoadBalancer",
            json!([{"port": 80, "protocol": "TCP", "nodePort": 30080}, {"port": 443, "protocol": "TCP"}]),
        );
        new["spec"]["allocateLoadBalancerNodePorts"] = json!(false);
        assert_eq!(settle(&old, &mut new, &Pool::default()), Need::default());
        assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
        assert!(new["spec"]["ports"][1].get("nodePort").is_none(), "{new}");
        // A LoadBalancer turning its policy Local takes a health-check
        // port from the pool, and needs one when the pool has none.
        let lb = svc(
            "LoadBalancer",
            json!([{"port": 80, "protocol": "TCP", "nodePort": 30080}]),
        );
        let mut local = lb.clone();
        local["spec"]["externalTrafficPolicy"] = json!("Local");
        assert_eq!(settle(&lb, &mut local.clone(), &Pool::default()).any, 1);
        let pool = Pool {
            free: vec![31500],
            asked: vec![],
        };
        assert_eq!(settle(&lb, &mut local, &pool), Need::default());
        assert_eq!(local["spec"]["healthCheckNodePort"], 31500);
        assert_eq!(held(&local).ports, [30080, 31500]);
        // A Service without ports is left without them (not set to null).
        let mut new = json!({"metadata": {"name": "web"}, "spec": {"type": "ClusterIP"}});
        assert_eq!(settle(&old, &mut new, &Pool::default()), Need::default());
        assert!(new["spec"].get("ports").is_none(), "{new}");
    }
}
