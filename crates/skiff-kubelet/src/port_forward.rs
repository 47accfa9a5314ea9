//! `kubectl port-forward` over SPDY (`portforward.k8s.io`): for each
//! forwarded connection the client opens an error stream and a data stream
//! sharing a `requestID`; the agent connects to the pod's port and copies
//! both ways, reporting a failure on the error stream. (A WebSocket
//! request is refused, and kubectl falls back to SPDY.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use hyper::header::{CONNECTION, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::server::{failure, Streams};
use crate::spdy::{self, SessionSender, Stream};

const PROTOCOL: &str = "portforward.k8s.io";

pub async fn serve(
    State(streams): State<Arc<Streams>>,
    Path((ns, pod)): Path<(String, String)>,
    mut request: Request,
) -> Response {
    let upgrade = request
        .headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("port forwarding needs an upgrade to SPDY/3.1 ({PROTOCOL})"),
        );
    }
    let ip = match streams.pod_ip(&ns, &pod).await {
        Ok(ip) => ip,
        Err(reply) => return reply,
    };
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => forward(TokioIo::new(io), ip, format!("{ns}/{pod}")).await,
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, "SPDY/3.1")
        .header("X-Stream-Protocol-Version", PROTOCOL)
        .body(Body::empty())
        .expect("static headers are valid")
}

/// Pairs the streams of each forwarded connection and serves them.
async fn forward<IO>(io: IO, ip: IpAddr, pod: String)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut incoming) = spdy::session(io);
    let mut halves: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = incoming.recv().await {
        if sender.reply(stream.id).await.is_err() {
            return;
        }
        let header = |k: &str| stream.headers.get(k).cloned().unwrap_or_default();
        let request = format!("{}/{}", header("requestid"), header("port"));
        let kind = header("streamtype");
        let pair = halves.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => pair.0 = Some(stream),
            "data" => pair.1 = Some(stream),
            _ => {
                let _ = sender.reset(stream.id).await;
                continue;
            }
        }
        if let (Some(_), Some(_)) = pair {
            if let Some((Some(error), Some(data))) = halves.remove(&request) {
                tokio::spawn(connect(sender.clone(), ip, pod.clone(), error, data));
            }
        }
    }
}

/// One forwarded connection: the pod's port to the data stream and back.
async fn connect<IO>(
    sender: SessionSender<IO>,
    ip: IpAddr,
    pod: String,
    error: Stream,
    mut data: Stream,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let port = data.headers.get("port").cloned().unwrap_or_default();
    let tcp = match port.parse::<u16>() {
        Ok(p) => tokio::net::TcpStream::connect((ip, p))
            .await
            .map_err(|e| e.to_string()),
        Err(_) => Err(format!("invalid port {port:?}")),
    };
    let tcp = match tcp {
        Ok(t) => t,
        Err(why) => {
            let message = format!("error forwarding port {port} to pod {pod}: {why}");
            let _ = sender.data(error.id, message.as_bytes(), true).await;
            let _ = sender.data(data.id, &[], true).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut from_pod, mut to_pod) = tcp.into_split();
    let inbound = async {
        while let Some(chunk) = data.data.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
    };
    let outbound = async {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = from_pod.read(&mut buf).await {
            if sender.data(data.id, &buf[..n], false).await.is_err() {
                return;
            }
        }
        let _ = sender.data(data.id, &[], true).await;
    };
    tokio::join!(inbound, outbound);
    let _ = sender.data(error.id, &[], true).await;
}
