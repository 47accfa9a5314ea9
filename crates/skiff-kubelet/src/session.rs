//! The caller's side of an exec or attach session as channel frames (0
//! stdin, 1 stdout, 2 stderr, 3 the final `Status`, 4 terminal size),
//! whichever protocol carries them: WebSocket (`v5.channel.k8s.io`, `v4`:
//! a channel byte, then data; v5's `255 N` closes channel N), or SPDY/3.1
//! (kubectl's fallback: one stream per channel, named by its `streamType`
//! header; a half-closed stream is a closed channel).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::header::{CONNECTION, UPGRADE};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use crate::server::failure;
use crate::spdy;

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STATUS: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5's frame that closes a channel (`255`, then the channel).
const CLOSE: u8 = 255;
/// The SPDY protocol version agreed: v4's channels, as the kubelet serves.
const SPDY_PROTOCOL: &str = "v4.channel.k8s.io";
/// How long the close of a WebSocket session waits after its last frame.
const CLOSE_AFTER: Duration = Duration::from_millis(20);
/// How long a SPDY caller has to open the streams it asked for.
const STREAMS_TIMEOUT: Duration = Duration::from_secs(30);

/// What the caller sends.
#[derive(Debug, PartialEq)]
pub enum Inbound {
    Data(u8, Bytes),
    /// The caller will send nothing more on this channel (stdin's end).
    Closed(u8),
}

/// An open session: frames from the caller, and a sender of frames to it.
/// Dropping every `outbound` sender ends the session.
pub struct Session {
    pub inbound: mpsc::Receiver<Inbound>,
    pub outbound: mpsc::Sender<(u8, Bytes)>,
}

/// The channels a session carries, from the request's query.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Channels {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl Channels {
    pub fn parse(query: &str) -> Self {
        let mut c = Self::default();
        let yes = go_bool;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            // The API's names, and the node agent's own (`input`,
            // `output`, `error`), which upstream's kubelet reads.
            match &*k {
                "stdin" | "input" => c.stdin = yes(&v),
                "stdout" | "output" => c.stdout = yes(&v),
                "stderr" | "error" => c.stderr = yes(&v),
                "tty" => c.tty = yes(&v),
                _ => {}
            }
        }
        // A terminal merges stderr into stdout.
        if c.tty {
            c.stderr = false;
        }
        c
    }
}

/// A boolean parameter as Go's `strconv.ParseBool` reads it (the Python
/// client sends `stdout=True`).
pub fn go_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// [`go_bool`] for a query field.
pub fn de_go_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    Ok(go_bool(&text))
}

/// A request to upgrade to a session, not yet answered.
pub enum Upgrade {
    WebSocket(WebSocketUpgrade),
    Spdy(Request),
}

impl Upgrade {
    /// The upgrade `request` asks for: SPDY/3.1 or WebSocket.
    pub async fn of(request: Request) -> Result<Self, Response> {
        let asked = request
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if asked.eq_ignore_ascii_case("SPDY/3.1") {
            return Ok(Self::Spdy(request));
        }
        let (mut parts, _) = request.into_parts();
        WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map(Self::WebSocket)
            .map_err(|_| {
                failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "this needs an upgrade to WebSocket (v5.channel.k8s.io) or SPDY/3.1",
                )
            })
    }

    /// Accepts the upgrade and runs `serve` on the session.
    pub fn accept<F, Fut>(self, channels: Channels, serve: F) -> Response
    where
        F: FnOnce(Session) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        match self {
            Self::WebSocket(ws) => ws
                .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
                .on_upgrade(move |socket| serve(websocket(socket))),
            Self::Spdy(mut request) => {
                let upgraded = hyper::upgrade::on(&mut request);
                tokio::spawn(async move {
                    let io = match upgraded.await {
                        Ok(io) => TokioIo::new(io),
                        Err(e) => return tracing::debug!(error = %e, "SPDY upgrade failed"),
                    };
                    match spdy_session(io, channels).await {
                        Ok(session) => serve(session).await,
                        Err(why) => tracing::info!(%why, "SPDY session"),
                    }
                });
                Response::builder()
                    .status(StatusCode::SWITCHING_PROTOCOLS)
                    .header(CONNECTION, "Upgrade")
                    .header(UPGRADE, "SPDY/3.1")
                    .header("X-Stream-Protocol-Version", SPDY_PROTOCOL)
                    .body(axum::body::Body::empty())
                    .expect("static headers are valid")
            }
        }
    }
}

/// A WebSocket as a session: binary messages are frames.
fn websocket(socket: WebSocket) -> Session {
    let (mut sink, mut source) = socket.split();
    let (in_tx, inbound) = mpsc::channel(16);
    let (outbound, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            // Text messages carry frames too (the Python client sends
            // text it writes as text), as upstream reads them.
            let data = match message {
                Message::Binary(data) => data,
                Message::Text(text) => Bytes::from(text.as_str().as_bytes().to_vec()),
                Message::Close(_) => break,
                _ => continue,
            };
            let frame = match (data.first(), data.get(1)) {
                (Some(&CLOSE), Some(&channel)) => Inbound::Closed(channel),
                (Some(&channel), _) => Inbound::Data(channel, data.slice(1..)),
                (None, _) => continue,
            };
            if in_tx.send(frame).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            let mut frame = Vec::with_capacity(data.len() + 1);
            frame.push(channel);
            frame.extend_from_slice(&data);
            if sink.send(Message::Binary(frame.into())).await.is_err() {
                return;
            }
        }
        // The last frame (the status) and the close leave apart: a client
        // that polls its socket between frames (the Python client) misses
        // a close that came in the same TLS record as the frame before it.
        tokio::time::sleep(CLOSE_AFTER).await;
        // A normal closure (1000): clients take a close without a code as
        // an error.
        let normal = CloseFrame {
            code: axum::extract::ws::close_code::NORMAL,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(normal))).await;
    });
    Session { inbound, outbound }
}

/// The channel a SPDY stream stands for, by its `streamType`.
fn channel_of(stream_type: &str) -> Option<u8> {
    match stream_type {
        "stdin" => Some(STDIN),
        "stdout" => Some(STDOUT),
        "stderr" => Some(STDERR),
        "error" => Some(STATUS),
        "resize" => Some(RESIZE),
        _ => None,
    }
}

/// The streams a caller asking for `channels` opens.
fn expected(channels: Channels) -> Vec<u8> {
    let mut wanted = vec![STATUS];
    for (yes, channel) in [
        (channels.stdin, STDIN),
        (channels.stdout, STDOUT),
        (channels.stderr, STDERR),
        (channels.tty, RESIZE),
    ] {
        if yes {
            wanted.push(channel);
        }
    }
    wanted
}

/// A SPDY connection as a session, once the caller opened every stream
/// `channels` needs.
async fn spdy_session<IO>(io: IO, channels: Channels) -> Result<Session, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, mut incoming) = spdy::session(io);
    let mut wanted = expected(channels);
    let mut opened: Vec<(u8, spdy::Stream)> = Vec::new();
    while !wanted.is_empty() {
        let stream = tokio::time::timeout(STREAMS_TIMEOUT, incoming.recv())
            .await
            .map_err(|_| "the caller did not open its streams in time".to_owned())?
            .ok_or("the caller left before opening its streams")?;
        let kind = stream
            .headers
            .get("streamtype")
            .cloned()
            .unwrap_or_default();
        match channel_of(&kind).filter(|c| wanted.contains(c)) {
            Some(channel) => {
                sender.reply(stream.id).await.map_err(|e| e.to_string())?;
                wanted.retain(|c| *c != channel);
                opened.push((channel, stream));
            }
            None => {
                let _ = sender.reset(stream.id).await;
            }
        }
    }
    let (in_tx, inbound) = mpsc::channel(16);
    let (outbound, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let mut ids = Vec::new();
    for (channel, mut stream) in opened {
        ids.push((channel, stream.id));
        if matches!(channel, STDIN | RESIZE) {
            let tx = in_tx.clone();
            tokio::spawn(async move {
                while let Some(data) = stream.data.recv().await {
                    if tx.send(Inbound::Data(channel, data)).await.is_err() {
                        return;
                    }
                }
                let _ = tx.send(Inbound::Closed(channel)).await;
            });
        }
    }
    // The caller's frames end when its connection does: the session
    // holds the inbound side open until then, refusing further streams.
    let reset = sender.clone();
    tokio::spawn(async move {
        while let Some(late) = incoming.recv().await {
            let _ = reset.reset(late.id).await;
        }
        drop(in_tx);
    });
    tokio::spawn(async move {
        while let Some((channel, data)) = out_rx.recv().await {
            let Some(&(_, id)) = ids.iter().find(|(c, _)| *c == channel) else {
                continue;
            };
            if sender.data(id, &data, false).await.is_err() {
                return;
            }
        }
        for (_, id) in ids {
            let _ = sender.data(id, &[], true).await;
        }
    });
    Ok(Session { inbound, outbound })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_from_the_query() {
        let c = Channels::parse("container=c&stdin=true&stdout=1&stderr=true&tty=true");
        assert_eq!(
            c,
            Channels {
                stdin: true,
                stdout: true,
                stderr: false,
                tty: true
            },
            "a terminal has no separate stderr"
        );
        assert!(Channels::parse("stderr=true").stderr);
        // The Python client's spelling.
        let py = Channels::parse("stdin=False&stdout=True&stderr=True&tty=False");
        assert!(py.stdout && py.stderr && !py.stdin && !py.tty);
        let node = Channels::parse("command=ls&output=1&input=1");
        assert!(node.stdout && node.stdin && !node.stderr);
    }

    #[test]
    fn spdy_streams_a_caller_opens() {
        let exec = Channels {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        assert_eq!(expected(exec), vec![STATUS, STDOUT, STDERR]);
        let terminal = Channels::parse("stdin=true&stdout=true&tty=true");
        assert_eq!(expected(terminal), vec![STATUS, STDIN, STDOUT, RESIZE]);
        assert_eq!(channel_of("error"), Some(STATUS));
        assert_eq!(channel_of("data"), None);
    }
}
