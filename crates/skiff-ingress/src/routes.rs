//! Where a request goes: the routing table of the Ingresses of our class,
//! matched as upstream specifies (an exact host before a wildcard one, the
//! longest path, `Exact` before `Prefix` at equal length, `Prefix` by whole
//! path segments), then the backend Service's ready endpoints.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend, IngressClass};
use skiff_core::endpoint_slices::slices_of;

/// The class this controller serves.
pub const CLASS: &str = "skiff";
pub const CONTROLLER: &str = "skiff.dev/ingress";

/// A Service port an Ingress points at.
#[derive(Clone, Debug, PartialEq)]
pub struct Backend {
    pub namespace: String,
    pub service: String,
    pub port: Port,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Port {
    Number(i32),
    Name(String),
}

#[derive(Clone, Debug)]
struct Route {
    host: Option<String>,
    path: String,
    exact: bool,
    backend: Backend,
}

/// The routes of every Ingress of our class.
#[derive(Clone, Debug, Default)]
pub struct Table {
    routes: Vec<Route>,
    default: Option<Backend>,
}

fn backend(ns: &str, b: &IngressBackend) -> Option<Backend> {
    let s = b.service.as_ref()?;
    let port = s.port.as_ref()?;
    let port = match (&port.number, &port.name) {
        (Some(n), _) => Port::Number(*n),
        (None, Some(name)) => Port::Name(name.clone()),
        _ => return None,
    };
    Some(Backend {
        namespace: ns.to_owned(),
        service: s.name.clone(),
        port,
    })
}

/// Whether an Ingress is ours: its class is `skiff`, or it names none and
/// `skiff` is the default class.
pub fn ours(ingress: &Ingress, classes: &[IngressClass]) -> bool {
    let class = ingress
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone());
    match class {
        Some(c) => classes.iter().any(|k| {
            k.metadata.name.as_deref() == Some(c.as_str())
                && k.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
        }),
        None => classes.iter().any(|k| {
            k.spec.as_ref().and_then(|s| s.controller.as_deref()) == Some(CONTROLLER)
                && k.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get("ingressclass.kubernetes.io/is-default-class"))
                    .is_some_and(|v| v == "true")
        }),
    }
}

/// Whether `host` matches a rule's host (`*.example.com` covers exactly
/// one more label).
fn host_matches(rule: &str, host: &str) -> bool {
    match rule.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
        None => rule == host,
    }
}

/// Whether `path` is `prefix` or below it, by whole segments.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Table {
    /// The routes of `ingresses`; where two claim the same host and path,
    /// the oldest Ingress keeps it (then by namespace and name), whatever
    /// order they come in.
    pub fn build(ingresses: &[Ingress]) -> Self {
        let mut t = Table::default();
        let mut ingresses: Vec<&Ingress> = ingresses.iter().collect();
        ingresses.sort_by_key(|i| {
            let m = &i.metadata;
            (
                m.creation_timestamp.as_ref().map(|t| t.0),
                m.namespace.clone(),
                m.name.clone(),
            )
        });
        for ing in ingresses {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            let Some(spec) = &ing.spec else { continue };
            if let Some(b) = spec.default_backend.as_ref().and_then(|b| backend(&ns, b)) {
                t.default.get_or_insert(b);
            }
            for rule in spec.rules.iter().flatten() {
                for p in rule.http.iter().flat_map(|h| &h.paths) {
                    let Some(b) = backend(&ns, &p.backend) else {
                        continue;
                    };
                    t.routes.push(Route {
                        host: rule.host.clone().filter(|h| !h.is_empty()),
                        path: p.path.clone().unwrap_or_else(|| "/".into()),
                        exact: p.path_type == "Exact",
                        backend: b,
                    });
                }
            }
        }
        t
    }

    /// The backend for a request to `host` and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<&Backend> {
        let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
        let best = self
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.host.as_deref().is_none_or(|h| host_matches(h, &host)))
            .filter(|(_, r)| {
                if r.exact {
                    r.path == path
                } else {
                    prefix_matches(&r.path, path)
                }
            })
            .max_by_key(|(i, r)| {
                let host_rank = match r.host.as_deref() {
                    Some(h) if !h.starts_with("*.") => 2,
                    Some(_) => 1,
                    None => 0,
                };
                let rank = (host_rank, r.path.trim_end_matches('/').len(), r.exact);
                // Ties go to the first route, the oldest Ingress's.
                (rank, std::cmp::Reverse(*i))
            });
        best.map(|(_, r)| &r.backend).or(self.default.as_ref())
    }
}

/// The ready endpoints of a backend, from its Service and EndpointSlices.
pub fn endpoints(b: &Backend, services: &[Service], slices: &[EndpointSlice]) -> Vec<SocketAddr> {
    let Some(svc) = services.iter().find(|s| {
        s.metadata.namespace.as_deref() == Some(b.namespace.as_str())
            && s.metadata.name.as_deref() == Some(b.service.as_str())
    }) else {
        return Vec::new();
    };
    let port = svc
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| match &b.port {
            Port::Number(n) => p.port == *n,
            Port::Name(name) => p.name.as_deref() == Some(name.as_str()),
        });
    let Some(port) = port else { return Vec::new() };
    let port_name = port.name.clone().unwrap_or_default();
    let mut out = Vec::new();
    for slice in slices_of(slices, &b.namespace, &b.service) {
        let Some(target) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name)
            .and_then(|p| p.port)
        else {
            continue;
        };
        for e in &slice.endpoints {
            if e.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            if let Some(ip) = e.addresses.first().and_then(|a| a.parse().ok()) {
                out.push(SocketAddr::new(ip, target as u16));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ingress(spec: serde_json::Value) -> Ingress {
        serde_json::from_value(json!({"metadata": {"name": "i", "namespace": "d"}, "spec": spec}))
            .unwrap()
    }

    fn to(service: &str) -> serde_json::Value {
        json!({"service": {"name": service, "port": {"number": 80}}})
    }

    #[test]
    fn hosts_and_paths_route_as_upstream() {
        let t = Table::build(&[ingress(json!({
        "defaultBackend": to("fallback"),
        "rules": [
            {"host": "app.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix", "backend": to("web")},
                {"path": "/api", "pathType": "Prefix", "backend": to("api")},
                {"path": "/api/v2", "pathType": "Exact", "backend": to("v2")}]}},
            {"host": "*.test", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": to("wild")}]}},
        ]}))]);
        let svc = |host: &str, path: &str| t.find(host, path).map(|b| b.service.clone());
        assert_eq!(svc("app.test", "/"), Some("web".into()));
        assert_eq!(svc("app.test:8080", "/api/users"), Some("api".into()));
        assert_eq!(
            svc("app.test", "/apiary"),
            Some("web".into()),
            "prefixes match whole segments"
        );
        assert_eq!(svc("app.test", "/api/v2"), Some("v2".into()));
        assert_eq!(
            svc("app.test", "/api/v2/x"),
            Some("api".into()),
            "Exact is exact"
        );
        assert_eq!(svc("other.test", "/x"), Some("wild".into()));
        assert_eq!(
            svc("a.b.test", "/x"),
            Some("fallback".into()),
            "a wildcard covers one label"
        );
        assert_eq!(svc("nowhere", "/"), Some("fallback".into()));
    }

    #[test]
    fn the_oldest_ingress_keeps_a_contested_host() {
        let claim = |name: &str, created: &str, service: &str| -> Ingress {
            serde_json::from_value(
                json!({"metadata": {"name": name, "namespace": "d", "creationTimestamp": created},
                "spec": {"rules": [{"host": "app.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": to(service)}]}}]}}),
            )
            .unwrap()
        };
        let old = claim("z-old", "2026-01-01T00:00:00Z", "first");
        let new = claim("a-new", "2026-06-01T00:00:00Z", "second");
        for order in [[old.clone(), new.clone()], [new, old]] {
            let t = Table::build(&order);
            let found = t.find("app.test", "/").map(|b| b.service.clone());
            assert_eq!(found, Some("first".into()));
        }
    }

    #[test]
    fn classes_decide_which_ingresses_are_ours() {
        let class = |name: &str, controller: &str, default: bool| -> IngressClass {
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": {"ingressclass.kubernetes.io/is-default-class": default.to_string()}},
                "spec": {"controller": controller}})).unwrap()
        };
        let named = |c: Option<&str>| ingress(json!({"ingressClassName": c}));
        let classes = vec![
            class("skiff", CONTROLLER, true),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        assert!(ours(&named(Some("skiff")), &classes));
        assert!(ours(&named(None), &classes));
        assert!(!ours(&named(Some("nginx")), &classes));
        assert!(!ours(&named(None), &[class("skiff", CONTROLLER, false)]));
    }

    #[test]
    fn endpoints_of_a_named_port() {
        let services: Vec<Service> =
            serde_json::from_value(json!([{"metadata": {"name": "web", "namespace": "d"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}]))
            .unwrap();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([{"metadata": {"name": "web-1", "namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": true}}, {"addresses": ["10.42.0.6"], "conditions": {"ready": false}}]}])).unwrap();
        let b = Backend {
            namespace: "d".into(),
            service: "web".into(),
            port: Port::Name("http".into()),
        };
        assert_eq!(
            endpoints(&b, &services, &slices),
            vec!["10.42.0.5:8080".parse().unwrap()]
        );
        let by_number = Backend {
            port: Port::Number(80),
            ..b.clone()
        };
        assert_eq!(endpoints(&by_number, &services, &slices).len(), 1);
        let missing = Backend {
            service: "nope".into(),
            ..b
        };
        assert!(endpoints(&missing, &services, &slices).is_empty());
    }
}
