//! `kubectl logs`: reads the CRI log files containerd writes (one record per
//! line: `<RFC 3339 time> <stream> <P|F> <text>`) with upstream's options
//! (`follow`, `previous`, `tailLines`, `sinceSeconds`, `sinceTime`,
//! `timestamps`, `limitBytes`); a followed log goes on in the new file
//! once it rotates.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper::StatusCode;
use k8s_cri::v1 as cri;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::server::{failure, Streams};

/// How often a followed log is checked for more lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Options {
    #[serde(default, deserialize_with = "crate::session::de_go_bool")]
    follow: bool,
    #[serde(default, deserialize_with = "crate::session::de_go_bool")]
    previous: bool,
    #[serde(default, deserialize_with = "crate::session::de_go_bool")]
    timestamps: bool,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<DateTime<Utc>>,
    limit_bytes: Option<usize>,
}

/// One record of a CRI log file.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    time: &'a str,
    /// The text, with its newline unless the record is partial.
    text: String,
}

fn parse(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let _stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    let newline = if tag.starts_with('P') { "" } else { "\n" };
    Some(Record {
        time,
        text: format!("{text}{newline}"),
    })
}

/// The text of the last `lines` lines of a CRI log file's `content`.
pub fn last_lines(content: &str, lines: i64) -> String {
    let options = Options {
        tail_lines: Some(lines),
        ..Default::default()
    };
    options.select(content)
}

impl Options {
    fn since(&self) -> Option<DateTime<Utc>> {
        self.since_time.or_else(|| {
            self.since_seconds
                .map(|s| Utc::now() - chrono::Duration::seconds(s))
        })
    }

    fn render(&self, r: &Record) -> String {
        if self.timestamps {
            format!("{} {}", r.time, r.text)
        } else {
            r.text.clone()
        }
    }

    /// The lines of `content` these options select, rendered.
    fn select(&self, content: &str) -> String {
        let since = self.since();
        let mut kept: VecDeque<String> = VecDeque::new();
        let mut partial = String::new();
        for mut r in content.lines().filter_map(parse) {
            if !r.text.ends_with('\n') {
                partial.push_str(&r.text);
                continue;
            }
            r.text.insert_str(0, &std::mem::take(&mut partial));
            let recent = since.is_none_or(|s| {
                DateTime::parse_from_rfc3339(r.time).is_ok_and(|t| t.with_timezone(&Utc) >= s)
            });
            if !recent {
                continue;
            }
            kept.push_back(self.render(&r));
            if let Some(n) = self.tail_lines.filter(|n| *n >= 0) {
                while kept.len() > n as usize {
                    kept.pop_front();
                }
            }
        }
        kept.into_iter().collect()
    }
}

/// Cuts `text` so that at most `left` bytes go out, counting down.
fn within_limit(mut text: String, left: &mut Option<usize>) -> String {
    if let Some(l) = left {
        let mut cut = (*l).min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        *l -= cut;
    }
    text
}

pub async fn serve(
    State(streams): State<Arc<Streams>>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(options): Query<Options>,
) -> Response {
    let attempts = match streams.attempts(&ns, &pod, &container).await {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    let chosen = if options.previous {
        match attempts.len().checked_sub(2).map(|i| &attempts[i]) {
            Some(c) => c.clone(),
            None => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("previous terminated container {container:?} in pod {pod:?} not found"),
                )
            }
        }
    } else {
        attempts[attempts.len() - 1].clone()
    };
    let runtime = streams.runtime.clone();
    let status = move |id: String| {
        let runtime = runtime.clone();
        async move { runtime.container_status(&id).await.ok() }
    };
    let Some(first) = status(chosen.id.clone()).await else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("container {container:?} in pod {pod:?} is gone"),
        );
    };
    let path = first.log_path.clone();
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("reading log {path}: {e}"),
            )
        }
    };
    let mut content = String::new();
    if let Err(e) = file.read_to_string(&mut content).await {
        return failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("reading log {path}: {e}"),
        );
    }
    // Only whole lines are read; a partly written last line waits.
    let whole = content.rfind('\n').map_or(0, |i| i + 1);
    let mut left = options.limit_bytes;
    let head = within_limit(options.select(&content[..whole]), &mut left);
    let running =
        |s: &cri::ContainerStatus| s.state == cri::ContainerState::ContainerRunning as i32;
    if !options.follow || !running(&first) {
        return text(Body::from(head));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let _ = tx.send(Ok(Bytes::from(head))).await;
    let id = chosen.id.clone();
    tokio::spawn(async move {
        let mut offset = whole as u64;
        let mut pending = String::new();
        let mut polls = 0u32;
        loop {
            tokio::time::sleep(FOLLOW_POLL).await;
            polls += 1;
            // The container's state is checked before reading, so lines it
            // wrote before exiting are still sent.
            let done =
                polls.is_multiple_of(10) && !status(id.clone()).await.is_some_and(|s| running(&s));
            let mut more = String::new();
            read_from(&mut file, &mut offset, &mut more).await;
            // Rotated: the old file is read to its end (once more, for
            // what was written as the runtime reopened), then the new one.
            if more.is_empty() && replaced(&file, &path).await {
                read_from(&mut file, &mut offset, &mut more).await;
                if let Ok(new) = tokio::fs::File::open(&path).await {
                    (file, offset) = (new, 0);
                }
            }
            pending.push_str(&more);
            if let Some(i) = pending.rfind('\n') {
                let lines: String = pending.drain(..=i).collect();
                let rendered: String = lines
                    .lines()
                    .filter_map(parse)
                    .map(|r| options.render(&r))
                    .collect();
                let rendered = within_limit(rendered, &mut left);
                if tx.send(Ok(Bytes::from(rendered))).await.is_err() {
                    return;
                }
            }
            if done || left == Some(0) || tx.is_closed() {
                return;
            }
        }
    });
    text(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

/// Reads what `file` has past `offset` into `into`, moving `offset` on.
async fn read_from(file: &mut tokio::fs::File, offset: &mut u64, into: &mut String) {
    if file.seek(std::io::SeekFrom::Start(*offset)).await.is_ok() {
        if let Ok(n) = file.read_to_string(into).await {
            *offset += n as u64;
        }
    }
}

/// Whether `path` now names another file than `file` (the log rotated).
async fn replaced(file: &tokio::fs::File, path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata().await, tokio::fs::metadata(path).await) {
        (Ok(open), Ok(now)) => (open.dev(), open.ino()) != (now.dev(), now.ino()),
        _ => false,
    }
}

fn text(body: Body) -> Response {
    Response::builder()
        .header("content-type", "text/plain")
        .body(body)
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2026-01-01T00:00:01.000000001Z stdout F one\n\
2026-01-01T00:00:02Z stderr F two\n\
2026-01-01T00:00:03Z stdout P thr\n\
2026-01-01T00:00:03Z stdout F ee\n";

    #[test]
    fn records_keep_partial_lines_together() {
        let all = Options::default().select(LOG);
        assert_eq!(all, "one\ntwo\nthree\n");
        assert_eq!(
            parse("2026-01-01T00:00:01Z stdout F ").unwrap().text,
            "\n",
            "an empty line stays a line"
        );
    }

    #[test]
    fn options_select_and_render() {
        let tail = Options {
            tail_lines: Some(1),
            ..Default::default()
        };
        assert_eq!(tail.select(LOG), "three\n");
        let stamped = Options {
            timestamps: true,
            tail_lines: Some(2),
            ..Default::default()
        };
        assert_eq!(
            stamped.select(LOG).lines().next().unwrap(),
            "2026-01-01T00:00:02Z two"
        );
        let since = Options {
            since_time: Some("2026-01-01T00:00:02Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(since.select(LOG), "two\nthree\n");
        let none = Options {
            tail_lines: Some(0),
            ..Default::default()
        };
        assert_eq!(none.select(LOG), "");
    }

    #[test]
    fn byte_limit_counts_down() {
        let mut left = Some(5);
        assert_eq!(within_limit("one\ntwo\n".into(), &mut left), "one\nt");
        assert_eq!(within_limit("more".into(), &mut left), "");
        let mut unlimited = None;
        assert_eq!(within_limit("all".into(), &mut unlimited), "all");
    }
}
