//! Upstream's events-API recorder (client-go's `tools/events`), which the
//! scheduler records through: the same event again (same type, action,
//! reason, reporter, object and related object, whatever its message)
//! makes a series. The second time writes `series.count` 2 on the first
//! event; later ones only count, and are written when the series ends
//! (six quiet minutes) and every thirty minutes while it goes on.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::correlator::Write;

/// Quiet time after which a series ends (or a lone event is forgotten).
const FINISH: Duration = Duration::from_secs(6 * 60);
/// How often a series that goes on is written.
const REFRESH: Duration = Duration::from_secs(30 * 60);

/// The first event of a key, and its series once seen again: small, as
/// every event a recorder writes is kept for six minutes.
struct Entry {
    namespace: Box<str>,
    name: Box<str>,
    /// Its `eventTime` as written.
    event_time: Option<Box<str>>,
    first: DateTime<Utc>,
    series: Option<Box<Counted>>,
}

struct Counted {
    count: i64,
    last: DateTime<Utc>,
    /// The event as a series, to write whole if it expired meanwhile.
    event: Value,
}

/// Decides what recording an event writes; clocked by its caller.
#[derive(Default)]
pub struct Series {
    entries: HashMap<(u64, u64), Entry>,
    refreshed: Option<DateTime<Utc>>,
}

fn text<'a>(v: &'a Value, field: &str) -> &'a str {
    v[field].as_str().unwrap_or_default()
}

/// What makes two events the same, as upstream's `getKey`, as two 64-bit
/// hashes of its text: 128 bits tell apart the events of six minutes in a
/// fraction of the text's memory.
fn key(e: &Value) -> (u64, u64) {
    let text = key_text(e);
    let hash = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        text.hash(&mut h);
        h.finish()
    };
    (hash(0), hash(1))
}

fn key_text(e: &Value) -> String {
    let object = |o: &Value| {
        [
            "apiVersion",
            "kind",
            "namespace",
            "name",
            "uid",
            "resourceVersion",
            "fieldPath",
        ]
        .map(|f| text(o, f))
        .join("\u{1}")
    };
    [
        text(e, "type"),
        text(e, "action"),
        text(e, "reason"),
        text(e, "reportingComponent"),
        text(e, "reportingInstance"),
        &object(&e["involvedObject"]),
        &object(&e["related"]),
    ]
    .join("\u{0}")
}

/// A `MicroTime`, as `eventTime` and `series.lastObservedTime` are.
pub fn micro(t: DateTime<Utc>) -> Value {
    Value::from(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

impl Counted {
    fn write(&self, namespace: &str, name: &str) -> Write {
        let series = json!({"count": self.count, "lastObservedTime": micro(self.last)});
        let mut event = self.event.clone();
        event["series"] = series.clone();
        Write::Patch {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            patch: json!({ "series": series }),
            event,
        }
    }
}

impl Series {
    /// What recording `event` (a core/v1 Event with an `eventTime`) at
    /// `now` writes, if anything.
    pub fn record(&mut self, event: Value, now: DateTime<Utc>) -> Option<Write> {
        let key = key(&event);
        let Some(entry) = self.entries.get_mut(&key) else {
            self.entries.insert(
                key,
                Entry {
                    namespace: text(&event["metadata"], "namespace").into(),
                    name: text(&event["metadata"], "name").into(),
                    event_time: event["eventTime"].as_str().map(Into::into),
                    first: now,
                    series: None,
                },
            );
            return Some(Write::Create(event));
        };
        if let Some(series) = &mut entry.series {
            series.count += 1;
            series.last = now;
            return None;
        }
        // The first event, as it was written, now a series.
        let mut first = event;
        first["metadata"]["name"] = Value::from(&*entry.name);
        first["eventTime"] = entry.event_time.as_deref().map_or(Value::Null, Value::from);
        let series = entry.series.insert(Box::new(Counted {
            count: 2,
            last: now,
            event: first,
        }));
        Some(series.write(&entry.namespace, &entry.name))
    }

    /// What is due at `now`: the last count of each series that ended,
    /// and every other series' count each thirty minutes. Lone events
    /// quiet for six minutes are forgotten.
    pub fn tick(&mut self, now: DateTime<Utc>) -> Vec<Write> {
        let since = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
        let refreshed = *self.refreshed.get_or_insert(now);
        let refresh = since(refreshed) >= REFRESH;
        if refresh {
            self.refreshed = Some(now);
        }
        let mut writes = Vec::new();
        self.entries.retain(|_, e| match &e.series {
            Some(s) if since(s.last) >= FINISH => {
                writes.push(s.write(&e.namespace, &e.name));
                false
            }
            Some(s) => {
                if refresh {
                    writes.push(s.write(&e.namespace, &e.name));
                }
                true
            }
            None => since(e.first) < FINISH,
        });
        writes
    }

    /// How many events it remembers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(pod_rv: &str, message: &str, at: DateTime<Utc>) -> Value {
        json!({
            "metadata": {"name": format!("p.{}", at.timestamp_micros()), "namespace": "d"},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": "d",
                "name": "p", "uid": "u", "resourceVersion": pod_rv},
            "type": "Warning", "reason": "FailedScheduling", "action": "Scheduling",
            "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler",
            "message": message, "eventTime": micro(at),
        })
    }

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn patched(write: Option<Write>) -> (String, Value, Value) {
        match write {
            Some(Write::Patch {
                name, patch, event, ..
            }) => (name, patch, event),
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    #[test]
    fn the_second_time_starts_a_series_on_the_first_event_and_later_ones_count() {
        let mut s = Series::default();
        let first = event("1", "0/3 nodes are available", at(0));
        let Some(Write::Create(created)) = s.record(first.clone(), at(0)) else {
            panic!("the first is created");
        };
        assert_eq!(created, first);
        // Another message counts in the same series, as upstream's key
        // leaves the message out.
        let (name, patch, whole) = patched(s.record(event("1", "0/4 nodes", at(10)), at(10)));
        assert_eq!(name, first["metadata"]["name"]);
        assert_eq!(
            patch,
            json!({"series": {"count": 2, "lastObservedTime": micro(at(10))}})
        );
        assert_eq!(whole["eventTime"], first["eventTime"]);
        assert_eq!(whole["metadata"]["name"], first["metadata"]["name"]);
        assert_eq!(whole["series"], patch["series"]);
        assert_eq!(s.record(event("1", "m", at(20)), at(20)), None);
        assert_eq!(s.record(event("1", "m", at(30)), at(30)), None);
        // Another version of the object is another event.
        assert!(matches!(
            s.record(event("2", "m", at(40)), at(40)),
            Some(Write::Create(_))
        ));
        assert_eq!(s.len(), 2);
        // Within six quiet minutes nothing is due; then the series' last
        // count is written and it ends, and the lone event is forgotten.
        assert_eq!(s.tick(at(30 + 359)), vec![]);
        let writes = s.tick(at(40 + 360));
        assert_eq!(writes.len(), 1);
        let (_, patch, _) = patched(writes.into_iter().next());
        assert_eq!(
            patch,
            json!({"series": {"count": 4, "lastObservedTime": micro(at(30))}})
        );
        assert!(s.is_empty());
        assert!(matches!(
            s.record(event("1", "m", at(500)), at(500)),
            Some(Write::Create(_))
        ));
    }

    #[test]
    fn a_series_that_goes_on_is_written_every_thirty_minutes() {
        let mut s = Series::default();
        assert_eq!(s.tick(at(0)), vec![]);
        s.record(event("1", "m", at(1)), at(1));
        patched(s.record(event("1", "m", at(2)), at(2)));
        let mut writes = Vec::new();
        for minute in 1..=31 {
            let now = at(minute * 60);
            s.record(event("1", "m", now), now);
            writes.extend(s.tick(now));
        }
        assert_eq!(writes.len(), 1, "one refresh in 31 minutes");
        let (_, patch, _) = patched(writes.pop());
        assert_eq!(patch["series"]["count"], 2 + 30);
        assert_eq!(s.len(), 1, "it goes on");
    }
}
