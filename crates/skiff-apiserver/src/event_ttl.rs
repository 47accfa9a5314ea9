//! Events expire, as upstream's do (`--event-ttl`, an hour by default):
//! an event not written for that long is deleted, so a busy cluster's
//! events do not pile up in the store and the watch cache for ever.
//! Upstream ties each event's key to an etcd lease renewed at each write;
//! here the server sweeps, reading when each event was last written from
//! its own timestamps. A deletion is guarded by the revision swept, so an
//! event written meanwhile stays.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use skiff_store::{Error, Store};

/// Sweeps `store`'s events for ever, deleting those older than `ttl`.
pub async fn run(store: Arc<dyn Store>, ttl: Duration) {
    let mut tick = tokio::time::interval(sweep_every(ttl));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match sweep(&*store, ttl, Utc::now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::debug!(expired, "events expired"),
            Err(e) => tracing::warn!(error = %e, "expiring events"),
        }
    }
}

/// A quarter of the TTL, between a second and a minute: an event lives
/// at most that much past its TTL.
fn sweep_every(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Where Skiff kept `events.k8s.io` events before both APIs' events were
/// one resource: no API shows them, and they expire as the others do.
const FORMER_NEW_API_EVENTS: &str = "/registry/events.k8s.io/events/";

/// Deletes the events last written `ttl` or longer before `now`; returns
/// how many.
async fn sweep(store: &dyn Store, ttl: Duration, now: DateTime<Utc>) -> skiff_store::Result<usize> {
    let events = skiff_core::registry::lookup("", "v1", "events").expect("events are served");
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    let mut expired = 0;
    let mut stored = store.list_any(&events.key_prefix()).await?;
    stored.extend(store.list_any(FORMER_NEW_API_EVENTS).await?);
    for kv in stored {
        if last_written(&kv.value).is_none_or(|at| now - at < ttl) {
            continue;
        }
        match store.delete(&kv.key, Some(kv.mod_rev)).await {
            Ok(_) => expired += 1,
            // Written again (its TTL starts over) or deleted meanwhile.
            Err(Error::Conflict { .. } | Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(expired)
}

/// The timestamps that tell when an event was last written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stamps {
    metadata: Metadata,
    last_timestamp: Option<DateTime<Utc>>,
    event_time: Option<DateTime<Utc>>,
    series: Option<Series>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    creation_timestamp: Option<DateTime<Utc>>,
    #[serde(default)]
    managed_fields: Vec<Managed>,
}

#[derive(Deserialize)]
struct Managed {
    time: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Series {
    last_observed_time: Option<DateTime<Utc>>,
}

/// When a stored event was last written: the latest of its creation, its
/// last occurrence and its managers' writes; none if it says no time.
fn last_written(stored: &[u8]) -> Option<DateTime<Utc>> {
    let s: Stamps = serde_json::from_slice(stored).ok()?;
    let managers = s.metadata.managed_fields.into_iter().map(|m| m.time);
    [
        s.metadata.creation_timestamp,
        s.last_timestamp,
        s.event_time,
        s.series.and_then(|s| s.last_observed_time),
    ]
    .into_iter()
    .chain(managers)
    .flatten()
    .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    fn event(name: &str, created: &str, last: Option<&str>) -> Bytes {
        let obj = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "d", "creationTimestamp": created},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d"},
            "lastTimestamp": last, "eventTime": null, "reason": "R"});
        Bytes::from(serde_json::to_vec(&obj).unwrap())
    }

    #[test]
    fn an_event_was_last_written_at_its_latest_timestamp() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let created = "2026-01-01T00:00:00Z";
        assert_eq!(last_written(&event("a", created, None)), Some(at(created)));
        let repeated = event("a", created, Some("2026-01-01T00:30:00Z"));
        assert_eq!(last_written(&repeated), Some(at("2026-01-01T00:30:00Z")));
        let series = json!({"metadata": {"creationTimestamp": created,
            "managedFields": [{"manager": "m", "time": "2026-01-01T00:10:00Z"}]},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:20:00.000000Z"}});
        let series = serde_json::to_vec(&series).unwrap();
        assert_eq!(last_written(&series), Some(at("2026-01-01T00:20:00Z")));
        assert_eq!(last_written(b"{\"metadata\": {}}"), None);
    }

    #[test]
    fn the_sweep_runs_between_a_second_and_a_minute() {
        assert_eq!(
            sweep_every(Duration::from_secs(3600)),
            Duration::from_secs(60)
        );
        assert_eq!(sweep_every(Duration::from_secs(8)), Duration::from_secs(2));
        assert_eq!(
            sweep_every(Duration::from_millis(10)),
            Duration::from_secs(1)
        );
    }

    #[tokio::test]
    async fn a_sweep_deletes_the_events_older_than_the_ttl_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::Embedded::open(dir.path().join("db")).unwrap();
        let key = |name: &str| format!("/registry/core/events/d/{name}");
        store
            .create(&key("old"), event("old", "2026-01-01T00:00:00Z", None))
            .await
            .unwrap();
        let repeated = event(
            "repeated",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:59:00Z"),
        );
        store.create(&key("repeated"), repeated).await.unwrap();
        let former = format!("{FORMER_NEW_API_EVENTS}d/former");
        let stale = event("former", "2026-01-01T00:00:00Z", None);
        store.create(&former, stale).await.unwrap();
        let pod = Bytes::from_static(
            b"{\"metadata\": {\"creationTimestamp\": \"2026-01-01T00:00:00Z\"}}",
        );
        store.create("/registry/core/pods/d/p", pod).await.unwrap();
        let now = "2026-01-01T01:30:00Z".parse().unwrap();
        let expired = sweep(&store, Duration::from_secs(3600), now).await.unwrap();
        assert_eq!(expired, 2);
        assert!(store.get(&key("old")).await.unwrap().is_none());
        assert!(store.get(&former).await.unwrap().is_none());
        assert!(store.get(&key("repeated")).await.unwrap().is_some());
        assert!(store
            .get("/registry/core/pods/d/p")
            .await
            .unwrap()
            .is_some());
    }
}
