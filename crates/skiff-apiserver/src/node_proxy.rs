//! The pod subresources a node agent serves (`log`, `exec`, `attach`,
//! `portforward`): the API server finds the pod's node and forwards the
//! request there over TLS with its client certificate, splicing upgraded
//! connections (WebSocket, SPDY) byte for byte, as upstream's proxy does.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use hyper::header::{CONNECTION, HOST, UPGRADE};
use hyper::http::request::Parts;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use serde_json::Value;
use skiff_core::{registry, ApiError};

use crate::pki::Credentials;
use crate::request::Target;
use crate::storage::Objects;
use crate::Error;

/// The largest scrape of an agent's metrics taken in.
const MAX_SCRAPE_BYTES: usize = 16 << 20;

/// The port an agent serves on unless its Node says otherwise.
const DEFAULT_KUBELET_PORT: u16 = 10250;

/// Dials node agents with the API server's client certificate.
pub struct NodeDialer {
    tls: tokio_rustls::TlsConnector,
}

/// Accepts the agent's self-signed serving certificate, as upstream does
/// without `--kubelet-certificate-authority`; the agent, in turn, accepts
/// only the cluster CA's client certificate.
#[derive(Debug)]
struct AnyAgent(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyAgent {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl NodeDialer {
    pub fn new(creds: &Credentials) -> Result<Self, Error> {
        let certs = rustls_pemfile::certs(&mut creds.kubelet_client_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Certificate(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut creds.kubelet_client_key_pem.as_bytes())
            .map_err(|e| Error::Certificate(e.to_string()))?
            .ok_or_else(|| Error::Certificate("no key in kubelet-client.key".into()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyAgent(provider)))
            .with_client_auth_cert(certs, key)?;
        Ok(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    /// Forwards a pod stream request for `pod` to the agent of its node.
    pub async fn forward(
        &self,
        objects: &Objects,
        target: &Target,
        pod: &Value,
        parts: Parts,
    ) -> Result<Response, ApiError> {
        let ns = target.namespace.as_deref().unwrap_or("default");
        let name = target.name.as_deref().unwrap_or_default();
        let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if node_name.is_empty() {
            return Err(ApiError::bad_request(format!(
                "pod {name} does not have a host assigned"
            )));
        }
        let query = parts
            .uri
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let path = match target.subresource.as_deref() {
            Some("portforward") => format!("/portForward/{ns}/{name}{query}"),
            Some(sub) => {
                let container = container(pod, parts.uri.query())?;
                let verb = if sub == "log" { "containerLogs" } else { sub };
                format!("/{verb}/{ns}/{name}/{container}{query}")
            }
            None => unreachable!("only subresources are forwarded"),
        };
        self.send(objects, node_name, &path, parts).await
    }

    /// Forwards a request to a node agent's own endpoint at `path`.
    pub async fn proxy(
        &self,
        objects: &Objects,
        node: &str,
        path: &str,
        parts: Parts,
    ) -> Result<Response, ApiError> {
        self.send(objects, node, path, parts).await
    }

    /// GETs `path` from a node's agent within `timeout`: the body of a
    /// 200 reply, at most [`MAX_SCRAPE_BYTES`]. Only nodes whose agent
    /// published its endpoint are dialled (simulated nodes do not).
    pub async fn scrape(&self, node: &Value, path: &str, timeout: Duration) -> Option<String> {
        let (ip, port) = agent_address(node)?;
        node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64()?;
        let fetch = async {
            let tcp = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
            let tls = self
                .tls
                .connect(ServerName::IpAddress(ip.into()), tcp)
                .await
                .ok()?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .ok()?;
            tokio::spawn(connection);
            let request = hyper::Request::get(path)
                .header(HOST, format!("{ip}:{port}"))
                .body(Body::empty())
                .ok()?;
            let reply = sender.send_request(request).await.ok()?;
            if reply.status() != StatusCode::OK {
                return None;
            }
            let body = Body::new(reply.into_body());
            let bytes = axum::body::to_bytes(body, MAX_SCRAPE_BYTES).await.ok()?;
            String::from_utf8(bytes.to_vec()).ok()
        };
        tokio::time::timeout(timeout, fetch).await.ok().flatten()
    }

    /// Sends the request to `path` on the node's agent, splicing an
    /// upgraded connection.
    async fn send(
        &self,
        objects: &Objects,
        node_name: &str,
        path: &str,
        mut parts: Parts,
    ) -> Result<Response, ApiError> {
        let nodes = registry::lookup("", "v1", "nodes").expect("nodes are registered");
        let node = objects.get(nodes, None, node_name).await?;
        let (ip, port) = agent_address(&node).ok_or_else(|| {
            ApiError::internal(format!("node {node_name:?} has no InternalIP address"))
        })?;
        let dial_error = |e: &dyn std::fmt::Display| {
            ApiError::internal(format!("error dialing backend: {ip}:{port}: {e}"))
        };
        let tcp = tokio::net::TcpStream::connect((ip, port))
            .await
            .map_err(|e| dial_error(&e))?;
        let _ = tcp.set_nodelay(true);
        let tls = self
            .tls
            .connect(ServerName::IpAddress(ip.into()), tcp)
            .await
            .map_err(|e| dial_error(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| dial_error(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "agent connection");
            }
        });
        let mut request = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(path)
            .header(HOST, format!("{ip}:{port}"));
        for (k, v) in &parts.headers {
            let forwarded = k == UPGRADE
                || k == CONNECTION
                || k.as_str().starts_with("sec-websocket-")
                || k.as_str().starts_with("x-stream-protocol-");
            if forwarded {
                request = request.header(k, v);
            }
        }
        let request = request
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut reply = sender
            .send_request(request)
            .await
            .map_err(|e| dial_error(&e))?;
        if reply.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(reply.map(Body::new));
        }
        let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
        let agent = hyper::upgrade::on(&mut reply);
        tokio::spawn(async move {
            let Some(client) = client else { return };
            match futures::future::try_join(client, agent).await {
                Ok((client, agent)) => {
                    let (mut a, mut b) = (TokioIo::new(client), TokioIo::new(agent));
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                }
                Err(e) => tracing::debug!(error = %e, "stream upgrade failed"),
            }
        });
        let (head, _) = reply.into_parts();
        Ok(Response::from_parts(head, Body::empty()))
    }
}

/// The agent's address: the node's InternalIP and kubelet port.
fn agent_address(node: &Value) -> Option<(IpAddr, u16)> {
    let status = &node["status"];
    let ip = status["addresses"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "InternalIP")?["address"]
        .as_str()?
        .parse()
        .ok()?;
    let port = status["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some((ip, port))
}

/// The container a request names, or the pod's only (or default) one.
fn container(pod: &Value, query: Option<&str>) -> Result<String, ApiError> {
    let named = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty());
    if let Some(c) = named {
        return Ok(c);
    }
    let names: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let default = pod["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
        .as_str()
        .filter(|d| names.contains(d));
    match (default, names.as_slice()) {
        (Some(d), _) => Ok(d.to_owned()),
        (None, [only]) => Ok((*only).to_owned()),
        _ => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            pod["metadata"]["name"].as_str().unwrap_or_default(),
            names.join(" ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn agent_address_from_node_status() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}}}});
        assert_eq!(
            agent_address(&node),
            Some(("10.0.0.5".parse().unwrap(), 10350))
        );
        let bare =
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}});
        assert_eq!(agent_address(&bare).unwrap().1, DEFAULT_KUBELET_PORT);
        assert_eq!(agent_address(&json!({"status": {}})), None);
    }

    #[test]
    fn container_choice() {
        let pod = |names: &[&str], default: Option<&str>| {
            let containers: Vec<Value> = names.iter().map(|n| json!({"name": n})).collect();
            json!({"metadata": {"name": "p", "annotations": {"kubectl.kubernetes.io/default-container": default}},
                   "spec": {"containers": containers}})
        };
        assert_eq!(container(&pod(&["a"], None), None).unwrap(), "a");
        assert_eq!(
            container(&pod(&["a", "b"], None), Some("container=b&follow=true")).unwrap(),
            "b"
        );
        assert_eq!(container(&pod(&["a", "b"], Some("b")), None).unwrap(), "b");
        let e = container(&pod(&["a", "b"], None), None).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.message.contains("choose one of: [a b]"), "{}", e.message);
    }
}
