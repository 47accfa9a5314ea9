//! Health-check NodePorts, as kube-proxy serves them. A LoadBalancer
//! Service with `externalTrafficPolicy: Local` keeps external traffic on
//! the node it reaches, so an external balancer must send it only to
//! nodes with endpoints of the Service: on the Service's
//! `healthCheckNodePort`, every node answers HTTP with how many ready
//! endpoints it has, 200 when some, 503 when none.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::Serialize;
use skiff_core::endpoint_slices::slices_of;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What a node answers for one Service, in upstream's field order.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    service: Named,
    local_endpoints: usize,
    service_proxy_healthy: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
struct Named {
    namespace: String,
    name: String,
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let up = self.local_endpoints > 0 && self.service_proxy_healthy;
        let code = if up {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let mut body = Vec::new();
        let indent = serde_json::ser::PrettyFormatter::with_indent(b"\t");
        let mut writer = serde_json::Serializer::with_formatter(&mut body, indent);
        // A struct of strings, a number and a bool always serializes.
        let _ = self.serialize(&mut writer);
        let weight = HeaderValue::from(self.local_endpoints);
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::HeaderName::from_static("x-load-balancing-endpoint-weight"),
                weight,
            ),
        ];
        (code, headers, body).into_response()
    }
}

/// The health-check ports this node serves, with their answers: one per
/// Service that has one, counting the ready endpoints on `node`.
pub fn wanted(
    services: &[Service],
    slices: &[EndpointSlice],
    node: &str,
    healthy: bool,
) -> BTreeMap<u16, Answer> {
    let mut out = BTreeMap::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let local = spec.type_.as_deref() == Some("LoadBalancer")
            && spec.external_traffic_policy.as_deref() == Some("Local");
        let port = spec
            .health_check_node_port
            .and_then(|p| u16::try_from(p).ok());
        let (Some(port), true) = (port.filter(|p| *p != 0), local) else {
            continue;
        };
        let namespace = svc.metadata.namespace.clone().unwrap_or_default();
        let name = svc.metadata.name.clone().unwrap_or_default();
        let local_endpoints = slices_of(slices, &namespace, &name)
            .flat_map(|s| &s.endpoints)
            .filter(|e| e.node_name.as_deref() == Some(node))
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses.iter().map(String::as_str))
            .collect::<BTreeSet<&str>>()
            .len();
        out.insert(
            port,
            Answer {
                service: Named { namespace, name },
                local_endpoints,
                service_proxy_healthy: healthy,
            },
        );
    }
    out
}

/// The servers running, by port; each stops when dropped.
#[derive(Default)]
pub struct Servers {
    running: BTreeMap<u16, (watch::Sender<Answer>, JoinHandle<()>)>,
}

impl Servers {
    /// Serves exactly `wanted`: stops servers no longer wanted, updates
    /// the answers of the others, starts new ones. A port that cannot be
    /// bound is tried again on the next call.
    pub async fn serve(&mut self, wanted: BTreeMap<u16, Answer>) {
        self.running.retain(|port, (_, task)| {
            let keep = wanted.contains_key(port);
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, answer) in wanted {
            if let Some((sender, _)) = self.running.get(&port) {
                sender.send_if_modified(|now| {
                    let changed = *now != answer;
                    *now = answer;
                    changed
                });
                continue;
            }
            let at = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            let listener = match tokio::net::TcpListener::bind(at).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%port, error = %e, "could not serve a health-check NodePort");
                    continue;
                }
            };
            let (sender, answers) = watch::channel(answer);
            let app = axum::Router::new().fallback(move || {
                let answer = answers.borrow().clone();
                async move { answer }
            });
            let task = tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(%port, error = %e, "a health-check NodePort stopped");
                }
            });
            self.running.insert(port, (sender, task));
        }
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for (_, task) in self.running.values() {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_counts_its_own_ready_endpoints_of_local_balancers() {
        let svc = |name: &str, policy: &str| -> Service {
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "d"},
                "spec": {"type": "LoadBalancer", "externalTrafficPolicy": policy, "healthCheckNodePort": 31000}}))
            .unwrap()
        };
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-x", "namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": [
                {"addresses": ["10.42.0.5"], "nodeName": "a", "conditions": {"ready": true}},
                {"addresses": ["10.42.0.6"], "nodeName": "a", "conditions": {"ready": false}},
                {"addresses": ["10.42.1.5"], "nodeName": "b", "conditions": {"ready": true}},
            ]}))
        .unwrap();
        let services = [svc("web", "Local"), svc("other", "Cluster")];
        let on_a = wanted(&services, std::slice::from_ref(&slice), "a", true);
        assert_eq!(on_a.len(), 1, "only the Local one");
        assert_eq!(on_a[&31000].local_endpoints, 1);
        let on_c = wanted(&services, &[slice], "c", true);
        assert_eq!(on_c[&31000].local_endpoints, 0);
    }

    #[tokio::test]
    async fn the_answer_is_upstreams() {
        let answer = |n| Answer {
            service: Named {
                namespace: "default".into(),
                name: "wp-nginx-service".into(),
            },
            local_endpoints: n,
            service_proxy_healthy: true,
        };
        let response = answer(1).into_response();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-load-balancing-endpoint-weight"], "1");
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert_eq!(text, "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"wp-nginx-service\"\n\t},\n\t\"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}");
        assert_eq!(text.len(), 127, "as upstream's for this Service");
        assert_eq!(
            answer(0).into_response().status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
