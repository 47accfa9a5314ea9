//! Streams the runtime serves itself: `kubectl attach` (a container's own
//! stdin, stdout and terminal) and `kubectl exec -t` (a command on a
//! terminal). The agent asks CRI for a stream (`Attach`, `Exec`), which
//! containerd's streaming server answers on loopback; the agent relays
//! between the caller's WebSocket (`v5.channel.k8s.io` or `v4`) and the
//! runtime's (`v4.channel.k8s.io`). Both frame data the same way (a
//! channel byte, then data); v5's "close stdin" frame has no v4 form and
//! is dropped, which is harmless on a terminal, where Ctrl-D travels as
//! data.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use hyper::StatusCode;
use k8s_cri::v1 as cri;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as UpMessage;

use crate::server::{failure, Streams};

/// The protocol the runtime's streaming server is spoken to in.
const RUNTIME_PROTOCOL: &str = "v4.channel.k8s.io";
/// v5's frame that closes a stream (`255`, then the channel).
const CLOSE: u8 = 255;

/// Which of the container's streams the caller wants.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Options {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Options {
    pub fn parse(query: &str) -> Self {
        let mut o = Self::default();
        let yes = |v: &str| matches!(v, "true" | "1");
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            match &*k {
                "stdin" => o.stdin = yes(&v),
                "stdout" => o.stdout = yes(&v),
                "stderr" => o.stderr = yes(&v),
                "tty" => o.tty = yes(&v),
                _ => {}
            }
        }
        // A terminal merges stderr into stdout (CRI refuses both).
        if o.tty {
            o.stderr = false;
        }
        o
    }
}

/// `kubectl attach`: the running container's own streams.
pub async fn attach(
    State(streams): State<Arc<Streams>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let options = Options::parse(query.as_deref().unwrap_or_default());
    let Ok(upgrade) = upgrade else {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "attach needs a WebSocket upgrade (v5.channel.k8s.io)",
        );
    };
    let id = match streams.running(&ns, &pod, &container).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    let request = cri::AttachRequest {
        container_id: id,
        stdin: options.stdin,
        tty: options.tty,
        stdout: options.stdout,
        stderr: options.stderr,
    };
    let url = match streams.cri.runtime.clone().attach(request).await {
        Ok(r) => r.into_inner().url,
        Err(e) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.message(),
            )
        }
    };
    relayed(upgrade, url)
}

/// `kubectl exec -t`: `command` on a terminal in container `id`.
pub async fn exec_on_terminal(
    streams: &Streams,
    id: String,
    command: Vec<String>,
    options: Options,
    upgrade: WebSocketUpgrade,
) -> Response {
    let request = cri::ExecRequest {
        container_id: id,
        cmd: command,
        tty: true,
        stdin: options.stdin,
        stdout: options.stdout,
        stderr: false,
    };
    match streams.cri.runtime.clone().exec(request).await {
        Ok(r) => relayed(upgrade, r.into_inner().url),
        Err(e) => failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e.message(),
        ),
    }
}

fn relayed(upgrade: WebSocketUpgrade, url: String) -> Response {
    upgrade
        .protocols(["v5.channel.k8s.io", RUNTIME_PROTOCOL])
        .on_upgrade(move |socket| async move {
            if let Err(e) = relay(socket, &url).await {
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
async fn relay(client: WebSocket, url: &str) -> Result<(), String> {
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
    let (mut to_client, mut from_client) = client.split();
    let inbound = async {
        while let Some(Ok(message)) = from_client.next().await {
            let forward = match message {
                Message::Binary(data) if data.first() == Some(&CLOSE) => continue,
                Message::Binary(data) => UpMessage::Binary(data),
                Message::Text(text) => UpMessage::text(text.as_str()),
                Message::Close(_) => break,
                _ => continue,
            };
            if to_runtime.send(forward).await.is_err() {
                break;
            }
        }
        let _ = to_runtime.close().await;
    };
    let outbound = async {
        while let Some(Ok(message)) = from_runtime.next().await {
            let forward = match message {
                UpMessage::Binary(data) => Message::Binary(data),
                UpMessage::Text(text) => Message::Text(text.as_str().into()),
                UpMessage::Close(_) => break,
                _ => continue,
            };
            if to_client.send(forward).await.is_err() {
                return;
            }
        }
        let normal = CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = to_client.send(Message::Close(Some(normal))).await;
    };
    // The runtime ends the session (the process exited, or the caller
    // went and the runtime noticed); the caller leaving ends it too.
    tokio::select! {
        _ = outbound => {}
        _ = inbound => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_from_the_query() {
        let o = Options::parse("container=c&stdin=true&stdout=1&stderr=true&tty=true");
        assert_eq!(
            o,
            Options {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            },
            "a terminal has no separate stderr"
        );
        assert!(Options::parse("stderr=true").stderr);
    }

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
