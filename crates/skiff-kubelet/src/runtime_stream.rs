//! Streams the runtime serves itself: `kubectl attach` (a container's own
//! stdin, stdout and terminal) and `kubectl exec -t` (a command on a
//! terminal). The agent asks CRI for a stream (`Attach`, `Exec`), which
//! containerd's streaming server answers on loopback; the agent relays
//! between the caller's session (`session`: WebSocket or SPDY) and the
//! runtime's (`v4.channel.k8s.io`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper::StatusCode;
use k8s_cri::v1 as cri;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::server::{failure, Streams};
use crate::session::{Channels, Inbound, Session, Upgrade};

/// The protocol the runtime's streaming server is spoken to in.
const RUNTIME_PROTOCOL: &str = "v4.channel.k8s.io";

/// `kubectl attach`: the running container's own streams.
pub async fn attach(
    State(streams): State<Arc<Streams>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    request: Request,
) -> Response {
    let channels = Channels::parse(query.as_deref().unwrap_or_default());
    let upgrade = match Upgrade::of(request).await {
        Ok(u) => u,
        Err(reply) => return reply,
    };
    let id = match streams.running(&ns, &pod, &container).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let request = cri::AttachRequest {
        container_id: id,
        stdin: channels.stdin,
        tty: channels.tty,
        stdout: channels.stdout,
        stderr: channels.stderr,
    };
    match streams.runtime.attach_url(request).await {
        Ok(url) => relayed(upgrade, channels, url),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.message(),
        ),
    }
}

/// `kubectl exec -t`: `command` on a terminal in container `id`.
pub async fn exec_on_terminal(
    streams: &Streams,
    id: String,
    command: Vec<String>,
    channels: Channels,
    upgrade: Upgrade,
) -> Response {
    let request = cri::ExecRequest {
        container_id: id,
        cmd: command,
        tty: true,
        stdin: channels.stdin,
        stdout: channels.stdout,
        stderr: false,
    };
    match streams.runtime.exec_url(request).await {
        Ok(url) => relayed(upgrade, channels, url),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.message(),
        ),
    }
}

fn relayed(upgrade: Upgrade, channels: Channels, url: String) -> Response {
    upgrade.accept(channels, move |session| async move {
        if let Err(e) = relay(session, &url).await {
            tracing::info!(error = %e, "runtime stream");
        }
    })
}

/// The runtime's stream at `url` (`http://127.0.0.1:port/attach/token`)
/// as a WebSocket address.
fn websocket_url(url: &str) -> Result<String, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("runtime stream URL {url:?}: {e}"))?;
    let loopback = parsed
        .host_str()
        .and_then(|h| h.trim_matches(['[', ']']).parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback());
    if !loopback || parsed.scheme() != "http" {
        return Err(format!(
            "the runtime's stream is not on plain loopback: {url}"
        ));
    }
    Ok(url.replacen("http://", "ws://", 1))
}

/// Copies frames both ways until either side ends.
async fn relay(session: Session, url: &str) -> Result<(), String> {
    let mut request = websocket_url(url)?
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        RUNTIME_PROTOCOL.parse().expect("a valid header"),
    );
    let (runtime, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| format!("connecting to the runtime's stream: {e}"))?;
    let (mut to_runtime, mut from_runtime) = runtime.split();
    let Session {
        mut inbound,
        outbound,
    } = session;
    let forward_in = async {
        while let Some(frame) = inbound.recv().await {
            // v4 cannot close one channel; on a terminal Ctrl-D travels as
            // data anyway.
            let Inbound::Data(channel, data) = frame else {
                continue;
            };
            let mut message = Vec::with_capacity(data.len() + 1);
            message.push(channel);
            message.extend_from_slice(&data);
            if to_runtime
                .send(Message::Binary(message.into()))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = to_runtime.close().await;
    };
    let forward_out = async {
        while let Some(Ok(message)) = from_runtime.next().await {
            match message {
                Message::Binary(data) if !data.is_empty() => {
                    let frame = (data[0], data.slice(1..));
                    if outbound.send(frame).await.is_err() {
                        return;
                    }
                }
                Message::Close(_) => return,
                _ => {}
            }
        }
    };
    // The runtime ends the session (the process exited); the caller
    // leaving ends it too.
    tokio::select! {
        _ = forward_out => {}
        _ = forward_in => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_runtime_streams_are_followed() {
        assert_eq!(
            websocket_url("http://127.0.0.1:41234/attach/abc").unwrap(),
            "ws://127.0.0.1:41234/attach/abc"
        );
        assert!(websocket_url("http://10.0.0.5:1/exec/x").is_err());
        assert!(websocket_url("https://127.0.0.1:1/exec/x").is_err());
    }
}
