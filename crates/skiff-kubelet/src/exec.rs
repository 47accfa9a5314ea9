//! `kubectl exec` over a session (`session`: WebSocket or SPDY). Without a
//! terminal the runtime starts the command with its streams piped
//! ([`ContainerRuntime::spawn`](crate::runtime::ContainerRuntime::spawn));
//! with one (`-t`), the runtime runs it on a terminal of its own (see
//! `runtime_stream`).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use hyper::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::runtime::Process;
use crate::runtime_stream;
use crate::server::{failure, Streams};
use crate::session::{Channels, Inbound, Session, Upgrade, STATUS, STDERR, STDIN, STDOUT};

/// What the caller asked to run.
#[derive(Debug, Default, PartialEq)]
struct Request {
    command: Vec<String>,
    channels: Channels,
}

fn parse(query: &str) -> Request {
    let command = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.into_owned())
        .collect();
    Request {
        command,
        channels: Channels::parse(query),
    }
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
    request: axum::extract::Request,
) -> Response {
    let asked = parse(query.as_deref().unwrap_or_default());
    if asked.command.is_empty() {
        return failure(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "you must specify at least one command for the container",
        );
    }
    let upgrade = match Upgrade::of(request).await {
        Ok(u) => u,
        Err(reply) => return reply,
    };
    let id = match streams.running(&ns, &pod, &container).await {
        Ok(id) => id,
        Err(reply) => return reply,
    };
    if asked.channels.tty {
        return runtime_stream::exec_on_terminal(
            &streams,
            id,
            asked.command,
            asked.channels,
            upgrade,
        )
        .await;
    }
    let channels = asked.channels;
    let process = match streams
        .runtime
        .spawn(&id, &asked.command, channels.stdin)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.message(),
            )
        }
    };
    upgrade.accept(channels, move |session| relay(session, process, channels))
}

/// Copies the process's output out and the caller's input in, then sends
/// the exit status and ends the session.
async fn relay(session: Session, process: Process, channels: Channels) {
    let Session {
        mut inbound,
        outbound,
    } = session;
    let (tx, mut rx) = mpsc::channel::<(u8, Bytes)>(16);
    fn pump(
        mut from: impl AsyncRead + Unpin + Send + 'static,
        channel: u8,
        wanted: bool,
        tx: mpsc::Sender<(u8, Bytes)>,
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
    let Process {
        mut stdin,
        stdout,
        stderr,
        exit,
    } = process;
    pump(stdout, STDOUT, channels.stdout, tx.clone());
    pump(stderr, STDERR, channels.stderr, tx.clone());
    drop(tx);
    let input = tokio::spawn(async move {
        while let Some(frame) = inbound.recv().await {
            match frame {
                Inbound::Data(STDIN, data) => {
                    if let Some(s) = stdin.as_mut() {
                        if s.write_all(&data).await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Inbound::Closed(STDIN) => stdin = None,
                _ => {}
            }
        }
    });
    while let Some(frame) = rx.recv().await {
        if outbound.send(frame).await.is_err() {
            // The caller is gone: so is the process (dropping `exit`
            // kills it).
            input.abort();
            return;
        }
    }
    let code = exit.await;
    let status = Bytes::from(exit_status(code).to_string());
    let _ = outbound.send((STATUS, status)).await;
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
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert!(r.channels.stdin && r.channels.stdout && r.channels.stderr);
        assert!(!r.channels.tty);
        assert!(parse("command=sh&tty=true").channels.tty);
        assert!(!parse("command=ls").channels.stdin);
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
