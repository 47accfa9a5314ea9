//! Port forwarding, in the two forms upstream's kubelet serves. SPDY
//! (`portforward.k8s.io`, kubectl's): for each forwarded connection the
//! client opens an error stream and a data stream sharing a `requestID`;
//! the agent connects to the pod's port and copies both ways, reporting a
//! failure on the error stream. WebSocket (`v4.channel.k8s.io`, the
//! client libraries'): one connection per port of the `ports` query,
//! channel `2i` its data and `2i+1` its errors, each opened by the port
//! number (two bytes, little-endian). And the tunnel kubectl 1.31+
//! prefers: the SPDY session carried in the binary messages of a
//! WebSocket (`SPDY/3.1+portforward.k8s.io`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper::header::{CONNECTION, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::server::{failure, Streams};
use crate::spdy::{self, SessionSender, Stream};

const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of kubectl's SPDY tunnel.
const TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";

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
    if upgrade.eq_ignore_ascii_case("websocket") {
        return websocket(streams, ns, pod, request).await;
    }
    if !upgrade.eq_ignore_ascii_case("SPDY/3.1") {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("port forwarding needs an upgrade to SPDY/3.1 ({PROTOCOL}) or WebSocket"),
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

/// The ports of a WebSocket request: `ports=80,443` or `ports=80&ports=443`.
fn ports(query: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "ports" {
            for p in v.split(',').filter(|p| !p.is_empty()) {
                match p.trim().parse::<u16>() {
                    Ok(n) if n > 0 => out.push(n),
                    _ => return Err(format!("invalid port {p:?}")),
                }
            }
        }
    }
    if out.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    Ok(out)
}

async fn websocket(streams: Arc<Streams>, ns: String, pod: String, request: Request) -> Response {
    let tunnelled = request
        .headers()
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == TUNNEL);
    let ports = match (tunnelled, ports(request.uri().query().unwrap_or_default())) {
        (true, _) => Vec::new(),
        (false, Ok(p)) => p,
        (false, Err(why)) => return failure(StatusCode::BAD_REQUEST, "BadRequest", why),
    };
    let ip = match streams.pod_ip(&ns, &pod).await {
        Ok(ip) => ip,
        Err(reply) => return reply,
    };
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(u) => u,
        Err(_) => {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "not a WebSocket upgrade",
            )
        }
    };
    let pod = format!("{ns}/{pod}");
    if tunnelled {
        return upgrade
            .protocols([TUNNEL])
            .on_upgrade(move |socket| tunnel(socket, ip, pod));
    }
    upgrade
        .protocols(["v4.channel.k8s.io"])
        .on_upgrade(move |socket| forward_channels(socket, ip, ports, pod))
}

/// kubectl's tunnel: the SPDY session's bytes travel in the WebSocket's
/// binary messages, and are served as a plain SPDY connection is.
async fn tunnel(socket: WebSocket, ip: IpAddr, pod: String) {
    let (session, pipe) = tokio::io::duplex(64 * 1024);
    let (mut from_session, mut to_session) = tokio::io::split(pipe);
    let (mut sink, mut source) = socket.split();
    let inbound = async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if to_session.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_session.shutdown().await;
    };
    let outbound = async move {
        let mut buf = vec![0u8; 32 * 1024];
        while let Ok(n @ 1..) = from_session.read(&mut buf).await {
            if sink
                .send(Message::Binary(buf[..n].to_vec().into()))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    tokio::join!(forward(session, ip, pod), inbound, outbound);
}

/// One connection per port, over channels of one WebSocket.
async fn forward_channels(socket: WebSocket, ip: IpAddr, ports: Vec<u16>, pod: String) {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(16);
    let frame = |channel: usize, data: &[u8]| {
        let mut f = Vec::with_capacity(data.len() + 1);
        f.push(channel as u8);
        f.extend_from_slice(data);
        f
    };
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let prefix = port.to_le_bytes();
        let _ = out_tx.send(frame(2 * i, &prefix)).await;
        let _ = out_tx.send(frame(2 * i + 1, &prefix)).await;
        match tokio::net::TcpStream::connect((ip, *port)).await {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                let (mut from_pod, to_pod) = tcp.into_split();
                writers.push(Some(to_pod));
                let out = out_tx.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    while let Ok(n @ 1..) = from_pod.read(&mut buf).await {
                        if out.send(frame(2 * i, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }));
            }
            Err(e) => {
                writers.push(None);
                let message = format!("error forwarding port {port} to pod {pod}: {e}");
                let _ = out_tx.send(frame(2 * i + 1, message.as_bytes())).await;
            }
        }
    }
    drop(out_tx);
    let sending = tokio::spawn(async move {
        while let Some(f) = out_rx.recv().await {
            if sink.send(Message::Binary(f.into())).await.is_err() {
                return;
            }
        }
        // Every pod connection ended: a normal closure.
        let normal = CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
    });
    while let Some(Ok(message)) = source.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Text(text) => bytes::Bytes::from(text.as_str().as_bytes().to_vec()),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        let channel = channel as usize;
        // Only data channels carry bytes to the pod.
        if channel % 2 == 1 {
            continue;
        }
        if let Some(Some(w)) = writers.get_mut(channel / 2) {
            if w.write_all(payload).await.is_err() {
                writers[channel / 2] = None;
            }
        }
    }
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
    for r in readers {
        r.abort();
    }
    sending.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_query_in_either_form() {
        assert_eq!(ports("ports=80,443").unwrap(), vec![80, 443]);
        assert_eq!(ports("ports=80&ports=8080").unwrap(), vec![80, 8080]);
        assert!(ports("ports=0").is_err());
        assert!(ports("ports=http").is_err());
        assert!(ports("").is_err());
    }
}
