//! The HTTPS listener: rustls with HTTP/2 and HTTP/1.1 (for upgrades).

use std::sync::Arc;

use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

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
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a connection may take to send a request's headers, the first
/// or the next on a kept-alive connection (upstream's ReadHeaderTimeout).
pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(32);

/// Connections served at once; beyond, new ones wait in the listen
/// backlog until one ends.
const MAX_CONNECTIONS: usize = 8192;

/// Accepts connections forever, one task each.
pub async fn run(listener: TcpListener, tls: Arc<rustls::ServerConfig>, api: Arc<Api>) {
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
            let identity = crate::auth::ClientCertificate(
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
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let api = api.clone();
                let mut req = req.map(Body::new);
                req.extensions_mut().insert(crate::audit::Peer(peer.ip()));
                req.extensions_mut().insert(identity.clone());
                async move { Ok::<_, std::convert::Infallible>(api.handle(req).await) }
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
                .keep_alive_interval(Some(std::time::Duration::from_secs(30)))
                .keep_alive_timeout(std::time::Duration::from_secs(20));
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}
