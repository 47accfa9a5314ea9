//! The agent's HTTPS endpoint, which the API server calls for pod logs,
//! exec and port forwarding (`/containerLogs/…`, `/exec/…`,
//! `/portForward/…`), the pods' usage (`/stats/summary`,
//! `/metrics/resource`) and its own metrics (`/metrics`). It serves a
//! self-signed certificate and admits callers with a client certificate
//! from the cluster CA (the API server's) or a bearer token whose user may
//! use this node ([`crate::endpoint_auth`]).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_cri::v1 as cri;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::cri_config::{NAMESPACE_LABEL, NAME_LABEL, POD_LABEL};
use crate::pods::attempt_of_container;
use crate::runtime::ContainerRuntime;
use crate::{exec, logs, port_forward, runtime_stream};

/// What the stream handlers need.
pub struct Streams {
    /// The agent's API client, for TokenReview and SubjectAccessReview.
    pub client: kube::Client,
    pub runtime: Arc<dyn ContainerRuntime>,
    /// What the node's pods use, for `/stats/summary`.
    pub usage: Arc<crate::usage::Usage>,
    /// The agent's metrics, for `/metrics`.
    pub metrics: skiff_core::metrics::Registry,
    pub node_name: String,
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A Kubernetes `Status` reply from the agent.
pub fn failure(code: StatusCode, reason: &str, message: impl Into<String>) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message.into(), "reason": reason, "code": code.as_u16()});
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn runtime_error(e: tonic::Status) -> Response {
    failure(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        e.message(),
    )
}

impl Streams {
    /// The pod's newest sandbox.
    async fn sandbox(&self, ns: &str, pod: &str) -> Result<cri::PodSandbox, Response> {
        self.runtime
            .sandboxes(&[(POD_LABEL, pod), (NAMESPACE_LABEL, ns)])
            .await
            .map_err(runtime_error)?
            .into_iter()
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| {
                failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("pod {ns}/{pod} is not running on this node"),
                )
            })
    }

    /// The pod's IP address.
    pub async fn pod_ip(&self, ns: &str, pod: &str) -> Result<std::net::IpAddr, Response> {
        let sandbox = self.sandbox(ns, pod).await?;
        let ip = self
            .runtime
            .sandbox_ip(&sandbox.id)
            .await
            .map_err(runtime_error)?;
        ip.parse().map_err(|_| {
            failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("pod {ns}/{pod} has no IP address yet"),
            )
        })
    }

    /// A pod's containers of one name, oldest attempt first, from its
    /// newest sandbox.
    pub async fn attempts(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> Result<Vec<cri::Container>, Response> {
        let sandbox = self.sandbox(ns, pod).await?;
        let mut containers = self
            .runtime
            .containers(Some(&sandbox.id))
            .await
            .map_err(runtime_error)?;
        containers.retain(|c| c.labels.get(NAME_LABEL).map(String::as_str) == Some(container));
        if containers.is_empty() {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container {container:?} in pod {pod:?} is waiting to start"),
            ));
        }
        containers.sort_by_key(attempt_of_container);
        Ok(containers)
    }
}

impl Streams {
    /// The ID of the container's running attempt.
    pub async fn running(&self, ns: &str, pod: &str, container: &str) -> Result<String, Response> {
        let attempts = self.attempts(ns, pod, container).await?;
        let latest = &attempts[attempts.len() - 1];
        if latest.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container {container:?} in pod {pod:?} is not running"),
            ));
        }
        Ok(latest.id.clone())
    }
}

fn router(streams: Arc<Streams>) -> Router {
    let authorize =
        axum::middleware::from_fn_with_state(streams.clone(), crate::endpoint_auth::authorize);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(logs::serve))
        .route("/stats/summary", get(summary))
        .route("/metrics/resource", get(resource_metrics))
        .route("/metrics", get(metrics))
        .route(
            "/exec/{ns}/{pod}/{container}",
            get(exec::serve).post(exec::serve),
        )
        .route(
            "/attach/{ns}/{pod}/{container}",
            get(runtime_stream::attach).post(runtime_stream::attach),
        )
        .route(
            "/portForward/{ns}/{pod}",
            get(port_forward::serve).post(port_forward::serve),
        )
        .layer(authorize)
        .with_state(streams)
}

/// Upstream's Summary API: CPU and memory of the node's pods.
async fn summary(axum::extract::State(streams): axum::extract::State<Arc<Streams>>) -> Response {
    let body = streams.usage.summary(&streams.node_name).to_string();
    ([("content-type", "application/json")], body).into_response()
}

/// The agent's own Prometheus metrics.
async fn metrics(axum::extract::State(streams): axum::extract::State<Arc<Streams>>) -> Response {
    let body = skiff_core::metrics::encode(&streams.metrics);
    ([("content-type", skiff_core::metrics::CONTENT_TYPE)], body).into_response()
}

/// Upstream's resource metrics: the runtime's statistics and containers'
/// creation times taken now, and the node's own use.
async fn resource_metrics(
    axum::extract::State(streams): axum::extract::State<Arc<Streams>>,
) -> Response {
    let stats = match streams.runtime.stats().await {
        Ok(stats) => stats,
        Err(e) => {
            tracing::debug!(error = %e.message(), "container statistics");
            Vec::new()
        }
    };
    let created = streams.runtime.containers(None).await.unwrap_or_default();
    let created = created.into_iter().map(|c| (c.id, c.created_at)).collect();
    let node = crate::resource_metrics::node_usage();
    let body = crate::resource_metrics::render(&stats, &created, node.as_ref());
    ([("content-type", "text/plain; version=0.0.4")], body).into_response()
}

/// TLS that verifies a client certificate against the cluster CA when one
/// is presented; callers without one need a bearer token.
fn tls_config(ca_pem: &str, names: Vec<String>) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| Error::Certificate(e.to_string()))?;
        roots.add(cert)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Certificate(e.to_string()))?;
    let own =
        rcgen::generate_simple_self_signed(names).map_err(|e| Error::Certificate(e.to_string()))?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(own.signing_key.serialize_der())
        .map_err(|e| Error::Certificate(e.to_owned()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![own.cert.der().clone()], key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long a request's headers may take once begun, as the API server's.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(32);
/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 1024;

/// Binds `addr` and serves until the task is dropped; returns the bound
/// address once listening.
pub async fn start(
    addr: SocketAddr,
    ca_pem: &str,
    node_name: &str,
    streams: Arc<Streams>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), Error> {
    let tls = tls_config(ca_pem, vec![node_name.to_owned(), addr.ip().to_string()])?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| Error::Bind { addr, source })?;
    let router = router(streams);
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let serving = tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Ok((tcp, peer)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, router) = (acceptor.clone(), router.clone());
            tokio::spawn(async move {
                let _slot = slot;
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                let stream = match handshake.await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "agent TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "agent TLS handshake timed out");
                        return;
                    }
                };
                let verified = crate::endpoint_auth::Certified(
                    stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|cert| skiff_core::certs::identity(cert))
                        .map(Arc::new),
                );
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut().insert(verified.clone());
                    router.clone().oneshot(req)
                });
                // HTTP/1.1 only (the one protocol offered in the handshake).
                let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
                builder
                    .http1()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                if let Err(e) = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(%peer, error = %e, "agent connection ended");
                }
            });
        }
    });
    Ok((bound, serving))
}
