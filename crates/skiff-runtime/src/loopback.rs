//! A client over in-process connections to the API server (see
//! `skiff_apiserver::Loopback`): the same HTTP requests, kube's client
//! stack, without TLS or a socket between a component and its server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use kube::client::ConfigExt;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};

/// A client whose every connection is one `connect` opens, sending
/// `component`'s `User-Agent`.
pub fn client<F>(connect: F, component: &str) -> kube::Client
where
    F: Fn() -> DuplexStream + Clone + Send + Sync + 'static,
{
    let connector = tower::service_fn(move |_: hyper::Uri| {
        std::future::ready(Ok::<_, io::Error>(TokioIo::new(Pipe(connect()))))
    });
    let http = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_timer(TokioTimer::new())
        .build::<_, kube::client::Body>(connector);
    let config = kube::Config::new(hyper::Uri::from_static("http://loopback"));
    let agent = crate::user_agent::value(component);
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .map_request(move |mut req: hyper::Request<kube::client::Body>| {
            req.headers_mut()
                .entry(hyper::header::USER_AGENT)
                .or_insert_with(|| agent.clone());
            req
        })
        .service(http);
    kube::Client::new(service, "default")
}

/// One in-memory connection, as hyper's pool keeps them.
struct Pipe(DuplexStream);

impl Connection for Pipe {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Pipe {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Pipe {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
