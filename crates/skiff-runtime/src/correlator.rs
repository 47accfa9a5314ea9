//! Upstream's event correlator (client-go's `EventCorrelator`): what a
//! recorded event becomes before it is written. Similar events (one
//! source, object, type and reason) with more than ten messages in ten
//! minutes are combined into one; the same event again raises the count of
//! the one written; and a source may write 25 events about one object,
//! then one every five minutes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Entries each cache keeps, as upstream's LRU caches.
const CACHE_ENTRIES: usize = 4096;
/// Messages of similar events before they are combined.
const AGGREGATE_MAX: usize = 10;
/// Quiet time after which similar events count from zero again.
const AGGREGATE_INTERVAL: Duration = Duration::from_secs(600);
/// Events a source may write about one object at once …
const SPAM_BURST: f64 = 25.0;
/// … and how many a second after that (one every five minutes).
const SPAM_QPS: f64 = 1.0 / 300.0;

/// A write to the API server.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// A new event.
    Create(Value),
    /// The event `name` (in `namespace`) seen again: its count, last time
    /// and message; `event` whole, to create if it expired meanwhile.
    Patch {
        namespace: String,
        name: String,
        patch: Value,
        event: Value,
    },
}

/// A map bounded as an LRU cache is, in two generations: each time the
/// recent one fills half the size it becomes the older one, whose entries
/// not used since are then forgotten.
struct Lru<V> {
    recent: HashMap<String, V>,
    older: HashMap<String, V>,
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Self {
            recent: HashMap::new(),
            older: HashMap::new(),
        }
    }
}

impl<V: Default> Lru<V> {
    /// The entry of `key`, made if new, as one recently used.
    fn entry(&mut self, key: String) -> &mut V {
        if !self.recent.contains_key(&key) {
            let kept = self.older.remove(&key);
            if self.recent.len() >= CACHE_ENTRIES / 2 {
                self.older = std::mem::take(&mut self.recent);
            }
            self.recent.insert(key.clone(), kept.unwrap_or_default());
        }
        self.recent.entry(key).or_default()
    }
}

#[derive(Default)]
struct Similar {
    messages: HashSet<String>,
    last: Option<DateTime<Utc>>,
}

#[derive(Default)]
struct Logged {
    count: i64,
    first: Value,
    name: String,
}

/// Tokens left, and when last taken from; none yet is a full bucket.
#[derive(Default)]
struct Bucket(Option<(f64, DateTime<Utc>)>);

impl Bucket {
    /// Takes a token if one is there.
    fn take(&mut self, now: DateTime<Utc>) -> bool {
        let tokens = self.0.map_or(SPAM_BURST, |(t, at)| {
            let elapsed = (now - at).num_milliseconds().max(0) as f64 / 1000.0;
            (t + elapsed * SPAM_QPS).min(SPAM_BURST)
        });
        let taken = tokens >= 1.0;
        self.0 = Some((if taken { tokens - 1.0 } else { tokens }, now));
        taken
    }
}

/// Filters, combines and counts one component's events.
#[derive(Default)]
pub struct Correlator {
    similar: Lru<Similar>,
    logged: Lru<Logged>,
    spam: Lru<Bucket>,
}

fn text<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |v, p| v.get(p))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The source and the object, the part of every key.
fn source_and_object(e: &Value) -> Vec<&str> {
    let o = &e["involvedObject"];
    vec![
        text(e, &["source", "component"]),
        text(e, &["source", "host"]),
        text(o, &["kind"]),
        text(o, &["namespace"]),
        text(o, &["name"]),
        text(o, &["uid"]),
        text(o, &["apiVersion"]),
    ]
}

/// What makes an event the same event: also the part of the object, its
/// type, reason and message.
fn event_key(e: &Value) -> String {
    let mut key = source_and_object(e);
    key.insert(5, text(e, &["involvedObject", "fieldPath"]));
    key.extend([
        text(e, &["type"]),
        text(e, &["reason"]),
        text(e, &["message"]),
    ]);
    key.join("\u{0}")
}

/// What makes events similar: all but the message.
fn similar_key(e: &Value) -> String {
    let mut key = source_and_object(e);
    key.extend([
        text(e, &["type"]),
        text(e, &["reason"]),
        text(e, &["reportingComponent"]),
        text(e, &["reportingInstance"]),
    ]);
    key.join("\u{0}")
}

fn stamp(now: DateTime<Utc>) -> Value {
    Value::from(now.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

impl Correlator {
    /// What recording `event` (a core/v1 Event) at `now` writes, if
    /// anything.
    pub fn correlate(&mut self, event: Value, now: DateTime<Utc>) -> Option<Write> {
        let (mut event, key) = self.combine(event, now);
        let logged = self.logged.entry(key);
        let seen = logged.count > 0;
        if seen {
            event["metadata"]["name"] = Value::from(logged.name.clone());
            event["firstTimestamp"] = logged.first.clone();
            event["count"] = Value::from(logged.count + 1);
        }
        logged.count = event["count"].as_i64().unwrap_or(1);
        logged.first = event["firstTimestamp"].clone();
        logged.name = text(&event, &["metadata", "name"]).to_owned();
        let spam_key = source_and_object(&event).join("\u{0}");
        if !self.spam.entry(spam_key).take(now) {
            return None;
        }
        if !seen {
            return Some(Write::Create(event));
        }
        Some(Write::Patch {
            namespace: text(&event, &["metadata", "namespace"]).to_owned(),
            name: logged.name.clone(),
            patch: json!({
                "count": event["count"],
                "lastTimestamp": event["lastTimestamp"],
                "message": event["message"],
            }),
            event,
        })
    }

    /// The event to log and its key: the event itself, or once similar
    /// events have had too many messages, one that combines them.
    fn combine(&mut self, event: Value, now: DateTime<Utc>) -> (Value, String) {
        let key = similar_key(&event);
        let similar = self.similar.entry(key.clone());
        let quiet = similar
            .last
            .is_none_or(|last| (now - last).to_std().unwrap_or_default() > AGGREGATE_INTERVAL);
        if quiet {
            similar.messages.clear();
        }
        similar.last = Some(now);
        similar
            .messages
            .insert(text(&event, &["message"]).to_owned());
        if similar.messages.len() < AGGREGATE_MAX {
            let key = event_key(&event);
            return (event, key);
        }
        // The set stays at its size.
        if let Some(any) = similar.messages.iter().next().cloned() {
            similar.messages.remove(&any);
        }
        let object = &event["involvedObject"];
        let combined = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {
                "name": format!("{}.{:x}", text(object, &["name"]), now.timestamp_nanos_opt().unwrap_or_default()),
                "namespace": event["metadata"]["namespace"],
            },
            "involvedObject": object,
            "reason": event["reason"],
            "message": format!("(combined from similar events): {}", text(&event, &["message"])),
            "type": event["type"],
            "source": event["source"],
            "firstTimestamp": stamp(now),
            "lastTimestamp": stamp(now),
            "count": 1,
        });
        (combined, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, reason: &str, message: &str, at: DateTime<Utc>) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "d"},
            "involvedObject": {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "namespace": "d", "name": "web", "uid": "u1"},
            "reason": reason, "message": message, "type": "Normal",
            "source": {"component": "replicaset-controller"},
            "reportingComponent": "replicaset-controller",
            "firstTimestamp": stamp(at), "lastTimestamp": stamp(at), "count": 1,
        })
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn the_caches_keep_what_is_used_and_stay_bounded() {
        let mut lru = Lru::<i32>::default();
        *lru.entry("kept".into()) = 7;
        for i in 0..3 * CACHE_ENTRIES {
            *lru.entry(format!("k{i}")) = 1;
            if i % 100 == 0 {
                assert_eq!(*lru.entry("kept".into()), 7);
            }
        }
        assert!(lru.recent.len() + lru.older.len() <= CACHE_ENTRIES);
        assert_eq!(*lru.entry("k0".into()), 0, "long unused, forgotten");
    }

    #[test]
    fn the_same_event_again_counts_on_the_first() {
        let mut c = Correlator::default();
        let first = c.correlate(event("web.1", "FailedCreate", "quota", at(0)), at(0));
        assert!(matches!(first, Some(Write::Create(e)) if e["metadata"]["name"] == "web.1"));
        let again = c.correlate(event("web.2", "FailedCreate", "quota", at(5)), at(5));
        let Some(Write::Patch {
            name,
            patch,
            event: whole,
            ..
        }) = again
        else {
            panic!("a repeat patches: {again:?}");
        };
        assert_eq!(name, "web.1");
        assert_eq!(
            patch,
            json!({"count": 2, "lastTimestamp": stamp(at(5)), "message": "quota"})
        );
        assert_eq!(whole["firstTimestamp"], stamp(at(0)));
        assert_eq!(whole["metadata"]["name"], "web.1");
        // Another message is another event.
        let other = c.correlate(event("web.3", "FailedCreate", "other", at(6)), at(6));
        assert!(matches!(other, Some(Write::Create(e)) if e["metadata"]["name"] == "web.3"));
    }

    #[test]
    fn ten_messages_of_one_reason_are_combined() {
        let mut c = Correlator::default();
        let mut writes = Vec::new();
        for i in 0..12 {
            let message = format!("Created pod: web-{i}");
            writes.push(c.correlate(
                event(&format!("web.{i}"), "SuccessfulCreate", &message, at(i)),
                at(i),
            ));
        }
        for w in &writes[..9] {
            assert!(
                matches!(w, Some(Write::Create(e)) if !e["message"].as_str().unwrap().starts_with('('))
            );
        }
        let Some(Write::Create(combined)) = &writes[9] else {
            panic!(
                "the tenth message makes the combined event: {:?}",
                writes[9]
            );
        };
        assert_eq!(
            combined["message"],
            "(combined from similar events): Created pod: web-9"
        );
        assert_eq!(combined["count"], 1);
        let combined_name = combined["metadata"]["name"].clone();
        for (i, w) in writes[10..].iter().enumerate() {
            let Some(Write::Patch { name, patch, .. }) = w else {
                panic!("later ones count on it: {w:?}");
            };
            assert_eq!(Value::from(name.clone()), combined_name);
            assert_eq!(patch["count"], i as i64 + 2);
            assert_eq!(
                patch["message"],
                format!(
                    "(combined from similar events): Created pod: web-{}",
                    i + 10
                )
            );
        }
        // Ten quiet minutes later, they count from zero.
        let later = c.correlate(
            event("web.x", "SuccessfulCreate", "Created pod: web-x", at(1000)),
            at(1000),
        );
        assert!(matches!(later, Some(Write::Create(e)) if e["message"] == "Created pod: web-x"));
    }

    #[test]
    fn one_object_gets_25_writes_then_one_each_five_minutes() {
        let mut c = Correlator::default();
        let written = (0..40)
            .filter(|i| {
                c.correlate(event("web.1", "Unhealthy", "probe failed", at(*i)), at(*i))
                    .is_some()
            })
            .count();
        assert_eq!(written, 25);
        assert!(c
            .correlate(
                event("web.1", "Unhealthy", "probe failed", at(200)),
                at(200)
            )
            .is_none());
        // 300 s after the burst a token is back; the count kept rising
        // through the writes left out.
        let Some(Write::Patch { patch, .. }) = c.correlate(
            event("web.1", "Unhealthy", "probe failed", at(340)),
            at(340),
        ) else {
            panic!("a token is back after five minutes");
        };
        assert_eq!(patch["count"], 42);
    }
}
