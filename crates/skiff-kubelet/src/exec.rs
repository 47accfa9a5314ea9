//! `kubectl exec` over WebSocket (`v5.channel.k8s.io`, or `v4`): each binary
//! message is a channel byte and data (0 stdin, 1 stdout, 2 stderr, 3 the
//! final `Status`, 4 terminal size; `255 0` closes stdin in v5). Without a
//! terminal the process runs through `runc exec`, which starts it inside
//! the container with the container's environment, user and cgroup, as
//! containerd's shim does; with one (`-t`), the runtime runs it on a
//! terminal of its own (see `runtime_stream`).

use std::process::Stdio;
use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::StatusCode;
use k8s_cri::v1 as cri;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::runtime_stream;
use crate::server::{failure, Streams};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

/// What the caller asked to run.
#[derive(Debug, Default, PartialEq)]
struct Request {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

fn parse(query: &str) -> Request {
    let mut r = Request::default();
    let yes = |v: &str| matches!(v, "true" | "1");
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match &*k {
            "command" => r.command.push(v.into_owned()),
            "stdin" => r.stdin = yes(&v),
            "stdout" => r.stdout = yes(&v),
            "stderr" => r.stderr = yes(&v),
            "tty" => r.tty = yes(&v),
            _ => {}
        }
    }
    r
}

/// The `Status` sent on channel 3 when the command ends.
fn exit_status(code: Option<i32>) -> Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(code) => json!({"metadata": {}, "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}}),
        None => json!({"metadata": {}, "status": "Failure",
            "message": "command terminated by a signal", "reason": "InternalError"}),
    }
}

pub async fn serve(
    State(streams): State<Arc<Streams>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let request = parse(query.as_deref().unwrap_or_default());
    if request.command.is_empty() {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one command for the container",
        );
    }
    let Ok(upgrade) = upgrade else {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "exec needs a WebSocket upgrade (v5.channel.k8s.io)",
        );
    };
    let attempts = match streams.attempts(&ns, &pod, &container).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    let latest = &attempts[attempts.len() - 1];
    if latest.state != cri::ContainerState::ContainerRunning as i32 {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("container {container:?} in pod {pod:?} is not running"),
        );
    }
    if request.tty {
        let options = runtime_stream::Options {
            stdin: request.stdin,
            stdout: request.stdout,
            stderr: false,
            tty: true,
        };
        let id = latest.id.clone();
        return runtime_stream::exec_on_terminal(&streams, id, request.command, options, upgrade)
            .await;
    }
    let child = Command::new("runc")
        .arg("--root")
        .arg(&streams.runc_root)
        .arg("exec")
        .arg(&latest.id)
        .args(&request.command)
        .stdin(if request.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("starting runc exec: {e}"),
            )
        }
    };
    upgrade
        .protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(move |socket| relay(socket, child, request))
}

/// Copies the process's output out and the caller's input in, then sends
/// the exit status and closes.
async fn relay(socket: WebSocket, mut child: Child, request: Request) {
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Bytes)>(16);
    fn pump(
        mut from: impl AsyncRead + Unpin + Send + 'static,
        channel: u8,
        wanted: bool,
        tx: tokio::sync::mpsc::Sender<(u8, Bytes)>,
    ) {
        tokio::spawn(async move {
            let mut buf = vec![0; 32 * 1024];
            while let Ok(n @ 1..) = from.read(&mut buf).await {
                if wanted
                    && tx
                        .send((channel, Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                {
                    return;
                }
            }
        });
    }
    if let Some(out) = child.stdout.take() {
        pump(out, STDOUT, request.stdout, tx.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, STDERR, request.stderr, tx.clone());
    }
    drop(tx);
    let mut stdin = child.stdin.take();
    let input = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) => match data.first() {
                    Some(&STDIN) => {
                        if let Some(s) = stdin.as_mut() {
                            if s.write_all(&data[1..]).await.is_err() {
                                stdin = None;
                            }
                        }
                    }
                    Some(&CLOSE) if data.get(1) == Some(&STDIN) => stdin = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
    });
    while let Some((channel, data)) = rx.recv().await {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(&data);
        if sink.send(Message::Binary(frame.into())).await.is_err() {
            // The caller is gone: so is the process.
            let _ = child.kill().await;
            input.abort();
            return;
        }
    }
    let code = child.wait().await.ok().and_then(|s| s.code());
    let mut frame = vec![STATUS];
    frame.extend_from_slice(exit_status(code).to_string().as_bytes());
    let _ = sink.send(Message::Binary(frame.into())).await;
    // A normal closure (1000): clients take a close without a code as an
    // error.
    let normal = CloseFrame {
        code: axum::extract::ws::close_code::NORMAL,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(normal))).await;
    input.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_the_command_and_streams() {
        let r = parse(
            "command=sh&command=-c&command=echo+hi&stdin=true&stdout=true&stderr=1&container=c",
        );
        assert_eq!(
            r,
            Request {
                command: vec!["sh".into(), "-c".into(), "echo hi".into()],
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false,
            }
        );
        assert!(parse("command=sh&tty=true").tty);
        assert!(!parse("command=ls").stdin);
    }

    #[test]
    fn exit_codes_become_statuses() {
        assert_eq!(exit_status(Some(0))["status"], "Success");
        let failed = exit_status(Some(3));
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(None)["status"], "Failure");
    }
}
