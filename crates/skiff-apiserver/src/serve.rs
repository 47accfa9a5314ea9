//! The HTTPS listener (rustls with HTTP/2 and HTTP/1.1, for upgrades),
//! and the connection serving it shares with in-process pipes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::auth::ClientCertificate;
use crate::handlers::Api;
use crate::pki::Credentials;
use crate::Error;

pub fn tls_config(creds: &Credentials) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = rustls_pemfile::certs(&mut creds.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut creds.key_pem.as_bytes())
        .map_err(|e| Error::Certificate(e.to_string()))?
        .ok_or_else(|| Error::Certificate("no private key in serving.key".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates from the cluster CA name their user; a request
    // without one may still bring a token, or be anonymous.
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut creds.ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| Error::Certificate(e.to_string()))?)
            .map_err(|e| Error::Certificate(e.to_string()))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Certificate(e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection may take to send a request's headers, the first
/// or the next on a kept-alive connection (upstream's ReadHeaderTimeout).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(32);

/// Connections served at once; beyond, new ones wait in the listen
/// backlog until one ends.
const MAX_CONNECTIONS: usize = 8192;

/// Accepts connections forever, one task each; a connection with no
/// request in flight for `idle` is closed (upstream's IdleTimeout), so
/// that silent clients do not hold file descriptors.
pub async fn run(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    api: Arc<Api>,
    idle: Duration,
) {
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // A connection that never finishes its handshake is dropped.
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // The chain was verified in the handshake; its identity (and
            // validity, checked per request) is read once.
            let identity = ClientCertificate(
                stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .and_then(|cert| skiff_core::certs::identity(cert))
                    .map(Arc::new),
            );
            // The protocol is the one agreed in the handshake: nothing is
            // read to guess it, so a silent HTTP/1.1 client meets the
            // header timeout.
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
            connection(stream, peer, identity, h2, api, idle).await;
        });
    }
}

/// Serves one connection's requests (HTTP/2 when `h2`, else HTTP/1.1 with
/// upgrades) as `identity` until the peer leaves or it is idle for `idle`.
pub async fn connection<I>(
    io: I,
    peer: SocketAddr,
    identity: ClientCertificate,
    h2: bool,
    api: Arc<Api>,
    idle: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Activity::new();
    let tracked = activity.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let api = api.clone();
        let busy = tracked.begin();
        let unread = Unread::default();
        let mut req = req.map(|b| Body::new(unread.reads(b)));
        req.extensions_mut().insert(crate::audit::Peer(peer.ip()));
        req.extensions_mut().insert(identity.clone());
        async move {
            let reply = api.handle(req).await;
            // A refusal may come before the body was read: what is left
            // is read and dropped, so that an HTTP/2 client gets the
            // reply rather than a reset stream.
            if reply.status().is_client_error() || reply.status().is_server_error() {
                unread.drain().await;
            }
            // In flight until its body is sent (a watch: for as long as
            // it lasts).
            Ok::<_, std::convert::Infallible>(reply.map(|b| Body::new(Busy::new(b, busy))))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match h2 {
        true => builder.http2_only(),
        false => builder.http1_only(),
    };
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    // A peer that stops answering pings is let go.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(1000)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = activity.idle_for(idle) => {
            tracing::debug!(%peer, "closing an idle connection");
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// The most of a refused request's body that is read and dropped.
const DRAIN_BYTES: usize = 16 * 1024 * 1024;
/// How long dropping it may take.
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// A request's body, shared between the handler that reads it and the
/// connection that drains what the handler left.
#[derive(Clone, Default)]
struct Unread(Arc<std::sync::Mutex<Option<Incoming>>>);

impl Unread {
    /// The body the handler reads, through this.
    fn reads(&self, body: Incoming) -> Reading {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(body);
        Reading(self.clone())
    }

    /// Reads and drops the rest, within [`DRAIN_BYTES`] and [`DRAIN_TIME`].
    async fn drain(&self) {
        use hyper::body::Body as _;
        let Some(mut body) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        let mut left = DRAIN_BYTES;
        let _ = tokio::time::timeout(DRAIN_TIME, async {
            while let Some(Ok(frame)) =
                std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
            {
                let n = frame.data_ref().map_or(0, |d| d.len());
                match left.checked_sub(n) {
                    Some(l) => left = l,
                    None => return,
                }
            }
        })
        .await;
    }
}

/// The handler's side of an [`Unread`] body.
struct Reading(Unread);

impl hyper::body::Body for Reading {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let mut body = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        match body.as_mut() {
            Some(b) => std::pin::Pin::new(b).poll_frame(cx),
            None => std::task::Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        let body = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let body = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        body.as_ref().map(|b| b.size_hint()).unwrap_or_default()
    }
}

/// What a connection is doing: requests in flight, and when it last
/// began or finished one.
#[derive(Clone)]
struct Activity(Arc<std::sync::Mutex<(usize, tokio::time::Instant)>>);

impl Activity {
    fn new() -> Self {
        Self(Arc::new(std::sync::Mutex::new((
            0,
            tokio::time::Instant::now(),
        ))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, tokio::time::Instant)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request begins; it ends when the returned guard is dropped.
    fn begin(&self) -> InFlight {
        let mut state = self.lock();
        state.0 += 1;
        state.1 = tokio::time::Instant::now();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let (in_flight, since) = *self.lock();
            let until = since + idle;
            if in_flight == 0 && tokio::time::Instant::now() >= until {
                return;
            }
            let next = if in_flight == 0 {
                until
            } else {
                tokio::time::Instant::now() + idle
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// One request in flight on a connection.
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.0 -= 1;
        state.1 = tokio::time::Instant::now();
    }
}

/// A reply's body that keeps its request in flight until it is done.
struct Busy {
    body: Body,
    _in_flight: InFlight,
}

impl Busy {
    fn new(body: Body, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl hyper::body::Body for Busy {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
