//! The cluster's names, built from Services and EndpointSlices as upstream's
//! DNS specification lays them out:
//! - `svc.ns.svc.<domain>`: the ClusterIP, or every ready endpoint of a
//!   headless Service;
//! - `host.svc.ns.svc.<domain>`: an endpoint with a hostname (StatefulSet
//!   pods);
//! - `_port._proto.svc.ns.svc.<domain>`: SRV records of named ports;
//! - `svc.ns.svc.<domain>` of an ExternalName Service: a CNAME to its
//!   external name.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use skiff_core::endpoint_slices::slices_of;

/// One record a name holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    A(Ipv4Addr),
    Srv {
        port: u16,
        target: String,
    },
    /// The name is an alias of this one (fully qualified).
    Cname(String),
}

/// What a query finds.
#[derive(Debug, PartialEq)]
pub enum Found<'a> {
    /// The name exists; these are its records (maybe none of the type).
    Records(Vec<&'a Entry>),
    /// No such name in the cluster domain.
    NoName,
    /// The name is outside the cluster domain.
    Elsewhere,
}

#[derive(Debug, Default)]
pub struct Zone {
    domain: String,
    names: HashMap<String, Vec<Entry>>,
}

fn ready_addresses(slices: &[&EndpointSlice]) -> Vec<(Ipv4Addr, Option<String>)> {
    let mut out = Vec::new();
    for e in slices.iter().flat_map(|s| &s.endpoints) {
        if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        if let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) {
            if !out.iter().any(|(known, _)| *known == ip) {
                out.push((ip, e.hostname.clone()));
            }
        }
    }
    out
}

impl Zone {
    pub fn build(domain: &str, services: &[Service], slices: &[EndpointSlice]) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut zone = Zone {
            domain: domain.clone(),
            names: HashMap::new(),
        };
        for svc in services {
            let (Some(ns), Some(name)) = (&svc.metadata.namespace, &svc.metadata.name) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let base = format!("{name}.{ns}.svc.{domain}");
            // The namespace and `svc` levels exist, if empty.
            zone.names.entry(format!("{ns}.svc.{domain}")).or_default();
            if spec.type_.as_deref() == Some("ExternalName") {
                // Validated as a DNS subdomain, with or without its dot.
                let external = spec.external_name.as_deref().unwrap_or("");
                let target = external.trim_end_matches('.').to_ascii_lowercase();
                if !target.is_empty() {
                    zone.names
                        .insert(base, vec![Entry::Cname(format!("{target}."))]);
                }
                continue;
            }
            let mine: Vec<&EndpointSlice> = slices_of(slices, ns, name).collect();
            let headless = spec.cluster_ip.as_deref() == Some("None");
            let mut targets = Vec::new();
            if headless {
                for (ip, host) in ready_addresses(&mine) {
                    zone.names
                        .entry(base.clone())
                        .or_default()
                        .push(Entry::A(ip));
                    if let Some(host) = host {
                        let fqdn = format!("{host}.{base}");
                        zone.names
                            .entry(fqdn.clone())
                            .or_default()
                            .push(Entry::A(ip));
                        targets.push(fqdn);
                    }
                }
                zone.names.entry(base.clone()).or_default();
            } else if let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) {
                zone.names
                    .entry(base.clone())
                    .or_default()
                    .push(Entry::A(ip));
                targets.push(base.clone());
            } else {
                continue;
            }
            for port in spec.ports.iter().flatten() {
                let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) else {
                    continue;
                };
                let proto = port
                    .protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .to_ascii_lowercase();
                let srv = format!("_{port_name}._{proto}.{base}");
                let entries = zone.names.entry(srv).or_default();
                for target in &targets {
                    entries.push(Entry::Srv {
                        port: port.port as u16,
                        target: format!("{target}."),
                    });
                }
            }
        }
        zone.names.entry(format!("svc.{domain}")).or_default();
        zone.names.entry(domain).or_default();
        zone
    }

    /// The records of `name` (any case, with or without the final dot).
    pub fn find(&self, name: &str) -> Found<'_> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let inside = name == self.domain || name.ends_with(&format!(".{}", self.domain));
        if !inside {
            return Found::Elsewhere;
        }
        match self.names.get(&name) {
            Some(entries) => Found::Records(entries.iter().collect()),
            None => Found::NoName,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn zone() -> Zone {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "prod"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
        ]))
        .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "db-1", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4",
             "endpoints": [{"addresses": ["10.42.0.7"], "hostname": "db-0", "conditions": {"ready": true}},
                           {"addresses": ["10.42.1.8"], "hostname": "db-1", "conditions": {"ready": true}},
                           {"addresses": ["10.42.1.9"], "conditions": {"ready": false}}]},
        ]))
        .unwrap();
        Zone::build("cluster.local", &services, &slices)
    }

    #[test]
    fn services_resolve_to_their_cluster_ip() {
        let z = zone();
        assert_eq!(
            z.find("web.default.svc.cluster.local."),
            Found::Records(vec![&Entry::A("10.43.0.20".parse().unwrap())])
        );
        assert_eq!(
            z.find("_http._tcp.web.default.svc.cluster.local"),
            Found::Records(vec![&Entry::Srv {
                port: 80,
                target: "web.default.svc.cluster.local.".into()
            }])
        );
        assert_eq!(z.find("nope.default.svc.cluster.local"), Found::NoName);
        assert_eq!(z.find("default.svc.cluster.local"), Found::Records(vec![]));
        assert_eq!(z.find("example.com"), Found::Elsewhere);
    }

    #[test]
    fn an_external_name_is_an_alias() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "mail", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "Mail.Example.com."}},
        ]))
        .unwrap();
        let z = Zone::build("cluster.local", &services, &[]);
        assert_eq!(
            z.find("mail.default.svc.cluster.local"),
            Found::Records(vec![&Entry::Cname("mail.example.com.".into())])
        );
    }

    #[test]
    fn headless_services_resolve_to_ready_pods_and_their_hostnames() {
        let z = zone();
        let Found::Records(all) = z.find("DB.prod.svc.cluster.local") else {
            panic!("db is known");
        };
        assert_eq!(all.len(), 2, "the unready endpoint is left out");
        assert_eq!(
            z.find("db-1.db.prod.svc.cluster.local"),
            Found::Records(vec![&Entry::A("10.42.1.8".parse().unwrap())])
        );
        let Found::Records(srv) = z.find("_pg._tcp.db.prod.svc.cluster.local") else {
            panic!("SRV exists");
        };
        assert_eq!(srv.len(), 2);
    }
}
