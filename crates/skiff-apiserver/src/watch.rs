//! Watch streams: one JSON event per line (or one length-prefixed protobuf
//! frame each, for clients that ask), from the watch cache, with initial
//! events, bookmarks and selector transitions as upstream sends them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde_json::{json, Value};
use skiff_core::registry::ResourceType;
use skiff_core::sparse::Paths;
use skiff_core::{protobuf, table, ApiError};
use skiff_store::{EventKind, ListOptions, Only, Revision};

use crate::handlers::read::Filter;
use crate::handlers::{Api, Call};
use crate::response::{self, wants_table};
use crate::storage::{decode_at, in_version, push_with_rv, with_rv, PODS};

/// The field pods' watches are indexed by: a node agent watches only
/// its own node's pods (and upstream's scheduler the pods on none).
const NODE_NAME: &str = "spec.nodeName";

/// The watch cache's indexes (see [`skiff_store::Index`]).
pub const INDEXES: &[skiff_store::Index] = &[skiff_store::Index {
    resource: PODS,
    value: node_of,
}];

fn is_pods(r: &ResourceType) -> bool {
    r.group.is_empty() && r.plural == "pods"
}

/// A stored pod's node, `""` if none.
fn node_of(stored: &[u8]) -> Option<String> {
    static READ: LazyLock<Paths> = LazyLock::new(|| Paths::of([NODE_NAME]));
    let pod = READ.read(stored).ok()?;
    match &pod["spec"]["nodeName"] {
        Value::Null => Some(String::new()),
        Value::String(node) => Some(node.clone()),
        _ => None,
    }
}

/// How often an idle watch with bookmarks allowed gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// How one watch renders its objects.
struct Render {
    r: &'static ResourceType,
    table: bool,
    /// Metadata only (`PartialObjectMetadata`).
    metadata: bool,
    /// Protobuf frames rather than JSON lines.
    protobuf: bool,
    include: String,
}

impl Render {
    /// One event line for an object at revision `rev`, in the watched
    /// version. JSON objects are spliced in unparsed; Tables and protobuf
    /// need the parsed object.
    fn event(&self, kind: &str, stored: &[u8], rev: Revision) -> Option<Bytes> {
        if self.protobuf && self.metadata {
            let obj = decode_at(stored, rev).ok()?;
            return Some(self.frame(kind, &response::partial(&obj)));
        }
        if self.protobuf {
            return Some(self.protobuf_frame(kind, &with_rv(stored, rev)));
        }
        let mut line = Vec::with_capacity(stored.len() + 96);
        line.extend_from_slice(b"{\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\",\"object\":");
        if self.table {
            let obj = decode_at(stored, rev).ok()?;
            let table = table::render(
                self.r,
                std::slice::from_ref(&obj),
                &rev.to_string(),
                None,
                &self.include,
            );
            serde_json::to_writer(&mut line, &table).ok()?;
        } else if self.metadata {
            let obj = decode_at(stored, rev).ok()?;
            serde_json::to_writer(&mut line, &response::partial(&obj)).ok()?;
        } else {
            push_with_rv(&mut line, stored, rev);
        }
        line.extend_from_slice(b"}\n");
        Some(Bytes::from(line))
    }

    fn bookmark(&self, rev: Revision, initial_end: bool) -> Bytes {
        let mut metadata = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = if self.metadata {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata})
        } else {
            json!({"kind": self.r.kind, "apiVersion": self.r.api_version(), "metadata": metadata})
        };
        self.frame("BOOKMARK", &obj)
    }

    /// The ERROR event that ends a watch whose revision is compacted away.
    fn expired(&self, rev: &str) -> Bytes {
        let status = ApiError::gone(format!("too old resource version: {rev}")).to_status();
        self.frame("ERROR", &status)
    }

    /// An event of a parsed object, in the stream's encoding.
    fn frame(&self, kind: &str, obj: &Value) -> Bytes {
        if self.protobuf {
            return self.protobuf_frame(kind, &serde_json::to_vec(obj).unwrap_or_default());
        }
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    /// A protobuf frame of an object's JSON bytes. An object protobuf
    /// cannot carry is an ERROR event (an internal error) rather than an
    /// object with a field lost.
    fn protobuf_frame(&self, kind: &str, json: &[u8]) -> Bytes {
        match protobuf::encode::watch_frame(kind, json) {
            Ok(frame) => Bytes::from(frame),
            Err(why) => {
                tracing::warn!(reason = why.0, "a watched object has no protobuf form");
                let status = ApiError::internal(why.0).to_status();
                let status = serde_json::to_vec(&status).unwrap_or_default();
                Bytes::from(protobuf::encode::watch_frame("ERROR", &status).unwrap_or_default())
            }
        }
    }

    fn content_type(&self) -> &'static str {
        if self.protobuf {
            "application/vnd.kubernetes.protobuf;stream=watch"
        } else {
            "application/json"
        }
    }
}

impl Api {
    pub async fn watch(&self, call: &Call<'_>) -> Result<Response, ApiError> {
        let r = call.target.resource;
        let q = call.query;
        let filter = Filter::from_call(call)?;
        let ns = filter.namespace(call).map(str::to_owned);
        let prefix = r.list_prefix(ns.as_deref());
        let table = wants_table(call.accept());
        let render = Render {
            r,
            table,
            protobuf: !table && response::wants_protobuf(call.accept()),
            metadata: response::wants_metadata(call.accept()),
            include: q
                .include_object
                .clone()
                .unwrap_or_else(|| "Metadata".into()),
        };
        let rv = q.resource_version.clone().unwrap_or_default();
        let send_initial = q.send_initial_events || rv.is_empty() || rv == "0";
        let bookmark_initial = q.send_initial_events && q.allow_bookmarks;
        let mut initial = Vec::new();
        let from: Revision = if send_initial {
            let (items, rev, _) = self
                .objects
                .list(r, ns.as_deref(), ListOptions::default())
                .await?;
            for kv in &items {
                if filter.matches_bytes(&kv.value)? {
                    initial.extend(render.event("ADDED", &kv.value, kv.mod_rev));
                }
            }
            rev
        } else {
            rv.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?
        };
        let content_type = render.content_type();
        let progress = Arc::new(AtomicI64::new(from));
        let only = Only {
            name: filter.fields.exact("metadata.name").map(str::to_owned),
            indexed: filter
                .fields
                .exact(NODE_NAME)
                .filter(|_| is_pods(r))
                .map(str::to_owned),
            progress: Some(progress.clone()),
        };
        let events = match self.objects.store.watch_only(&prefix, from, &only).await {
            Ok(s) => s,
            Err(skiff_store::Error::Compacted { .. }) => {
                let expired = futures::stream::once(async move { render.expired(&rv) });
                return Ok(stream_response(expired, content_type));
            }
            Err(e) => return Err(crate::response::store_error(e, r, "")),
        };
        if bookmark_initial {
            initial.push(render.bookmark(from, true));
        }
        let timeout = Duration::from_secs(q.timeout_seconds.unwrap_or(1800).max(1));
        let live = Live {
            events,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            ticker: tokio::time::interval_at(
                tokio::time::Instant::now() + BOOKMARK_EVERY,
                BOOKMARK_EVERY,
            ),
            bookmarks: q.allow_bookmarks,
            last: from,
            progress,
            render,
            filter,
        };
        // Rendered as the client reads: the body is the watch itself, with
        // no task and no queue between the cache and the connection.
        let live = futures::stream::unfold(Some(live), |live| async move {
            let mut live = live?;
            let (line, last_one) = live.next_line().await?;
            Some((line, (!last_one).then_some(live)))
        });
        let lines = futures::stream::iter(initial).chain(live);
        Ok(stream_response(lines, content_type))
    }
}

/// A watch after its initial events: store events rendered for the
/// client, bookmarks when it allows them, until its timeout.
struct Live {
    events: skiff_store::WatchStream,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    ticker: tokio::time::Interval,
    bookmarks: bool,
    /// The revision of the last event seen.
    last: Revision,
    /// How far the events this watch was not handed reach (see
    /// [`Only::progress`]): a bookmark carries it once the watch holds
    /// nothing unread, so a watch of a quiet node resumes from near now,
    /// as it would had it read them all.
    progress: Arc<AtomicI64>,
    render: Render,
    filter: Filter,
}

impl Live {
    /// The next line to send, and whether it is the last; none once the
    /// watch is over.
    async fn next_line(&mut self) -> Option<(Bytes, bool)> {
        loop {
            let next = tokio::select! {
                _ = &mut self.deadline => return None,
                _ = self.ticker.tick() => {
                    if !self.bookmarks {
                        continue;
                    }
                    // Past what this watch was not handed, once it holds
                    // nothing unread: read first, then look.
                    let skipped = self.progress.load(Ordering::Acquire);
                    match self.events.next().now_or_never() {
                        None => {
                            let rev = self.last.max(skipped);
                            return Some((self.render.bookmark(rev, false), false));
                        }
                        Some(next) => next,
                    }
                }
                next = self.events.next() => next,
            };
            match next? {
                Err(_) => return Some((self.render.expired(&self.last.to_string()), true)),
                Ok(event) => {
                    self.last = event.kv.mod_rev;
                    if let Some(line) = translate(&self.render, &self.filter, &event) {
                        return Some((line, false));
                    }
                }
            }
        }
    }
}

/// The watch event a store event becomes for this watcher, if any: an
/// object entering the selector is ADDED, one leaving it DELETED.
/// Selectors match the object in the watched version, as a list does.
fn translate(render: &Render, filter: &Filter, event: &skiff_store::Event) -> Option<Bytes> {
    let rev = event.kv.mod_rev;
    let value = in_version(render.r, event.kv.value.clone());
    let now = filter.matches_bytes(&value).ok()?;
    let kind = match event.kind {
        EventKind::Created => now.then_some("ADDED")?,
        EventKind::Deleted => now.then_some("DELETED")?,
        EventKind::Updated => {
            let before = match &event.prev {
                Some(prev) if !filter.is_everything() => {
                    let prev = in_version(render.r, prev.clone());
                    filter.matches_bytes(&prev).ok()?
                }
                _ => now,
            };
            match (before, now) {
                (true, true) => "MODIFIED",
                (false, true) => "ADDED",
                (true, false) => "DELETED",
                (false, false) => return None,
            }
        }
    };
    render.event(kind, &value, rev)
}

fn stream_response(
    lines: impl futures::Stream<Item = Bytes> + Send + 'static,
    content_type: &str,
) -> Response {
    let body = lines.map(Ok::<_, std::convert::Infallible>);
    let mut reply = response::bytes(200, content_type, Vec::new());
    *reply.body_mut() = Body::from_stream(body);
    reply
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_store::{Event, KeyValue};

    /// A watch of pods whose store stream is `events`, whose events not
    /// handed to it reach `progress`, with bookmarks every minute.
    fn live(events: skiff_store::WatchStream, progress: Revision) -> Live {
        let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
        Live {
            events,
            deadline: Box::pin(tokio::time::sleep(Duration::from_secs(3600))),
            ticker: tokio::time::interval_at(
                tokio::time::Instant::now() + BOOKMARK_EVERY,
                BOOKMARK_EVERY,
            ),
            bookmarks: true,
            last: 1,
            progress: Arc::new(AtomicI64::new(progress)),
            render: Render {
                r: pods,
                table: false,
                metadata: false,
                protobuf: false,
                include: String::new(),
            },
            filter: Filter::everything(),
        }
    }

    fn created(rev: Revision) -> Event {
        let pod = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"a"}}"#;
        Event {
            kind: EventKind::Created,
            kv: KeyValue {
                key: "/registry/core/pods/a/p".into(),
                value: Bytes::from_static(pod),
                create_rev: rev,
                mod_rev: rev,
            },
            prev: None,
        }
    }

    /// A bookmark carries the revision of events the watch was not handed
    /// only once it holds nothing unread: an event before that revision,
    /// still waiting when the minute is up, comes first.
    #[tokio::test(start_paused = true)]
    async fn a_bookmark_passes_what_the_watch_was_not_handed_after_what_it_holds() {
        let line = |(bytes, _): (Bytes, bool)| {
            serde_json::from_slice::<Value>(&bytes).expect("a JSON line")
        };
        // Both the tick and the event ready: whichever is chosen, the
        // event is sent first.
        for _ in 0..16 {
            let (tx, rx) = futures::channel::mpsc::unbounded();
            tx.unbounded_send(Ok(created(5))).unwrap();
            let mut watch = live(rx.boxed(), 10);
            tokio::time::advance(BOOKMARK_EVERY + Duration::from_secs(1)).await;
            let first = line(watch.next_line().await.unwrap());
            assert_eq!(first["type"], "ADDED");
            assert_eq!(first["object"]["metadata"]["resourceVersion"], "5");
            let next = line(watch.next_line().await.unwrap());
            assert_eq!(next["type"], "BOOKMARK");
            assert_eq!(next["object"]["metadata"]["resourceVersion"], "10");
            drop(tx);
        }
    }

    #[test]
    fn a_pod_is_indexed_by_its_node_and_one_on_none_by_the_empty_name() {
        let on = br#"{"metadata":{"name":"p"},"spec":{"containers":[{"name":"c","args":["spec.nodeName"]}],"nodeName":"n1"}}"#;
        assert_eq!(node_of(on).as_deref(), Some("n1"));
        let pending = br#"{"metadata":{"name":"p"},"spec":{"containers":[]}}"#;
        assert_eq!(node_of(pending).as_deref(), Some(""));
        // Unreadable: every watch gets it.
        assert_eq!(node_of(b"{\"spec\":"), None);
        assert_eq!(node_of(br#"{"spec":{"nodeName":7}}"#), None);
    }
}
