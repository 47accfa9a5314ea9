//! The built-in ingress controller, inside `skiff server`: IngressClass
//! `skiff` (the default class), and an HTTP and an HTTPS reverse proxy
//! (hyper) that route by host and path ([`routes`]) to the ready endpoints
//! of the backend Service, round robin. HTTPS terminates TLS with the
//! certificates of the Ingresses' `tls` Secrets, chosen by SNI. Everything
//! follows Ingress, Service, EndpointSlice and Secret changes live.

pub mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::PostParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use skiff_runtime::cache::{follow, Cache, Informer};
use tokio::net::TcpListener;

use routes::Table;
use skiff_core::endpoint_slices::SERVICE_NAME;

#[derive(Clone, Debug)]
pub struct Config {
    /// Plain HTTP; port 0 picks one.
    pub http: SocketAddr,
    /// HTTPS; port 0 picks one.
    pub https: SocketAddr,
}

/// What the proxy reads on every request.
struct State {
    ingresses: Arc<Cache<Ingress>>,
    classes: Arc<Cache<IngressClass>>,
    services: Arc<Cache<Service>>,
    slices: Arc<Cache<EndpointSlice>>,
    secrets: Arc<Cache<Secret>>,
    next: AtomicUsize,
    /// TLS certificates by host, rebuilt when Secrets or Ingresses change.
    certs: Certs,
    /// The routes, rebuilt when Ingresses or IngressClasses change.
    table: RwLock<Arc<Table>>,
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1):
/// those `Connection` names, and the standard hop-by-hop ones.
fn strip_hop_by_hop(headers: &mut hyper::HeaderMap) {
    let named: Vec<String> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    for h in named {
        headers.remove(h.as_str());
    }
    for h in [
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(h);
    }
}

fn text(code: StatusCode, message: &str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "text/plain")
        .body(Body::from(format!("{message}\n")))
        .expect("static headers are valid")
}

impl State {
    fn refresh_table(&self) {
        let classes: Vec<IngressClass> =
            self.classes.list().iter().map(|c| (**c).clone()).collect();
        let ours: Vec<Ingress> = self
            .ingresses
            .list()
            .iter()
            .filter(|i| routes::ours(i, &classes))
            .map(|i| (**i).clone())
            .collect();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Table::build(&ours));
    }

    fn table(&self) -> Arc<Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Proxies one request to a ready endpoint of its backend.
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or(req.uri().host())
            .unwrap_or_default()
            .to_owned();
        let table = self.table();
        let Some(backend) = table.find(&host, req.uri().path()) else {
            return text(
                StatusCode::NOT_FOUND,
                "no Ingress rule matches this host and path",
            );
        };
        // Only the backend's Service and its slices are read.
        let key = format!("{}/{}", backend.namespace, backend.service);
        let services: Vec<Service> = self
            .services
            .get(&key)
            .map(|s| (*s).clone())
            .into_iter()
            .collect();
        let slices: Vec<EndpointSlice> = self
            .slices
            .list_in(&backend.namespace)
            .iter()
            .filter(|s| {
                let labels = s.metadata.labels.as_ref();
                labels.and_then(|l| l.get(SERVICE_NAME)) == Some(&backend.service)
            })
            .map(|s| (**s).clone())
            .collect();
        let targets = routes::endpoints(backend, &services, &slices);
        if targets.is_empty() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!(
                    "service {}/{} has no ready endpoints",
                    backend.namespace, backend.service
                ),
            );
        }
        let target = targets[self.next.fetch_add(1, Ordering::Relaxed) % targets.len()];
        forward(req, target).await
    }

    /// The TLS certificates the Ingresses name, by host.
    fn refresh_certs(&self) {
        let mut certs = HashMap::new();
        for ing in self.ingresses.list() {
            let ns = ing.metadata.namespace.clone().unwrap_or_default();
            for tls in ing.spec.iter().flat_map(|s| s.tls.iter().flatten()) {
                let Some(name) = &tls.secret_name else {
                    continue;
                };
                let Some(secret) = self.secrets.get(&format!("{ns}/{name}")) else {
                    continue;
                };
                let Some(key) = certified(&secret) else {
                    tracing::warn!(secret = %name, "not a usable TLS Secret");
                    continue;
                };
                for host in tls.hosts.iter().flatten() {
                    certs.insert(host.to_ascii_lowercase(), key.clone());
                }
            }
        }
        *self.certs.write().unwrap_or_else(|e| e.into_inner()) = certs;
    }
}

/// Sends a request on to `target` and its reply back. An upgrade (a
/// WebSocket) keeps its hop-by-hop headers, and once the backend agrees
/// (101) the two connections are spliced until either side closes.
async fn forward(mut req: Request<Incoming>, target: SocketAddr) -> Response<Body> {
    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
    let client_side = upgrade.then(|| hyper::upgrade::on(&mut req));
    if !upgrade {
        strip_hop_by_hop(req.headers_mut());
    }
    let upstream = async {
        let tcp = tokio::net::TcpStream::connect(target).await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn.with_upgrades());
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        *req.uri_mut() = path.parse().map_err(std::io::Error::other)?;
        sender
            .send_request(req)
            .await
            .map_err(std::io::Error::other)
    };
    let mut reply = match upstream.await {
        Ok(reply) => reply,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("backend {target}: {e}")),
    };
    match (
        reply.status() == StatusCode::SWITCHING_PROTOCOLS,
        client_side,
    ) {
        (true, Some(client_side)) => {
            let backend_side = hyper::upgrade::on(&mut reply);
            tokio::spawn(async move {
                let (Ok(client), Ok(backend)) = (client_side.await, backend_side.await) else {
                    return;
                };
                let (mut client, mut backend) = (TokioIo::new(client), TokioIo::new(backend));
                let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
            });
        }
        _ => strip_hop_by_hop(reply.headers_mut()),
    }
    reply.map(Body::new)
}

/// The key pair of a `kubernetes.io/tls` Secret.
fn certified(secret: &Secret) -> Option<Arc<CertifiedKey>> {
    let data = secret.data.as_ref()?;
    let chain = rustls_pemfile::certs(&mut data.get("tls.crt")?.0.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let key = rustls_pemfile::private_key(&mut data.get("tls.key")?.0.as_slice()).ok()??;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    Some(Arc::new(CertifiedKey::new(chain, signer)))
}

/// Certificates by host name.
type Certs = Arc<RwLock<HashMap<String, Arc<CertifiedKey>>>>;

/// Picks the certificate for the name the client asks for (SNI).
#[derive(Debug)]
struct BySni(Certs);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let name = hello.server_name()?.to_ascii_lowercase();
        let certs = self.0.read().unwrap_or_else(|e| e.into_inner());
        certs.get(&name).cloned().or_else(|| {
            let (_, parent) = name.split_once('.')?;
            certs.get(&format!("*.{parent}")).cloned()
        })
    }
}

/// Makes IngressClass `skiff` the default class unless it exists.
async fn ensure_class(client: &Client) -> Result<(), kube::Error> {
    let classes: Api<IngressClass> = Api::all(client.clone());
    if classes.get_opt(routes::CLASS).await?.is_some() {
        return Ok(());
    }
    let class: IngressClass = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": {"name": routes::CLASS, "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": routes::CONTROLLER},
    }))
    .expect("a well-formed IngressClass");
    match classes.create(&PostParams::default(), &class).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Serves connections from `listener`, through TLS when `tls` is given.
async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, state: Arc<State>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (tls, state) = (tls.clone(), state.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(state.handle(req).await) }
            });
            let builder = auto::Builder::new(TokioExecutor::new());
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => {
                        builder
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await
                    }
                    Err(_) => return,
                },
                None => {
                    builder
                        .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                        .await
                }
            };
        });
    }
}

/// Starts the controller; returns the bound HTTP and HTTPS addresses.
pub async fn start(
    client: Client,
    config: Config,
) -> std::io::Result<(SocketAddr, SocketAddr, tokio::task::JoinHandle<()>)> {
    let http = TcpListener::bind(config.http).await?;
    let https = TcpListener::bind(config.https).await?;
    let addrs = (http.local_addr()?, https.local_addr()?);
    let admin = client.clone();
    tokio::spawn(async move {
        skiff_runtime::retry::until_ok(
            "creating IngressClass skiff",
            Duration::from_millis(200),
            Duration::from_secs(10),
            || ensure_class(&admin),
        )
        .await
    });
    let mut ingresses = Informer::<Ingress>::default();
    let mut secrets = Informer::<Secret>::default();
    let refresh = Arc::new(tokio::sync::Notify::new());
    let r = refresh.clone();
    ingresses.on_change(move |_, _| r.notify_one());
    let r = refresh.clone();
    secrets.on_change(move |_, _| r.notify_one());
    let state = Arc::new(State {
        ingresses: ingresses.cache(),
        secrets: secrets.cache(),
        classes: follow(&client, Some(refresh.clone())),
        services: follow(&client, None),
        slices: follow(&client, None),
        next: AtomicUsize::new(0),
        certs: Certs::default(),
        table: RwLock::default(),
    });
    tokio::spawn(ingresses.run(Api::all(client.clone()), watcher::Config::default()));
    tokio::spawn(secrets.run(Api::all(client.clone()), watcher::Config::default()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(BySni(state.certs.clone())));
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let s = state.clone();
    let task = tokio::spawn(async move {
        let certs = async {
            loop {
                s.refresh_certs();
                s.refresh_table();
                refresh.notified().await;
            }
        };
        tokio::join!(
            certs,
            serve(http, None, state.clone()),
            serve(https, Some(acceptor), state)
        );
    });
    Ok((addrs.0, addrs.1, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads up to and including the blank line that ends a head.
    async fn head(s: &mut tokio::net::TcpStream) -> String {
        use tokio::io::AsyncReadExt;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_spliced_through() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A backend that agrees to the upgrade, then echoes.
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = backend.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let asked = head(&mut s).await.to_ascii_lowercase();
            assert!(asked.contains("upgrade: websocket"), "{asked}");
            s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 64];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    return;
                }
                s.write_all(&buf[..n]).await.unwrap();
            }
        });
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = front.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = front.accept().await.unwrap();
            let service = hyper::service::service_fn(move |req| async move {
                Ok::<_, std::convert::Infallible>(forward(req, target).await)
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /chat HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            .await
            .unwrap();
        let answered = head(&mut client).await;
        assert!(answered.starts_with("HTTP/1.1 101"), "{answered}");
        for word in [&b"ping"[..], b"pong!"] {
            client.write_all(word).await.unwrap();
            let mut echoed = vec![0u8; word.len()];
            let read = client.read_exact(&mut echoed);
            tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .expect("the backend's echo comes back through the proxy")
                .unwrap();
            assert_eq!(echoed, word);
        }
    }

    #[test]
    fn hop_by_hop_headers_stay_on_their_hop() {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("x-kept", "yes"),
        ] {
            h.insert(
                hyper::header::HeaderName::from_static(k),
                hyper::header::HeaderValue::from_static(v),
            );
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }
}
