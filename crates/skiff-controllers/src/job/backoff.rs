//! How long a Job waits before it replaces failed pods, as upstream's pod
//! failure back-off: 10 s after the first failure since the last
//! success, twice as long after each further one, at most 10 minutes.
//! The failures are kept in memory as each pod is counted (upstream's
//! back-off records), so a failed pod deleted after the Job counted it
//! still holds the Job back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

const FIRST: Duration = Duration::from_secs(10);
const LONGEST: Duration = Duration::from_secs(600);

/// When a finished pod finished, in milliseconds, as upstream's
/// `getFinishedTime` reads it: when its last container ended if all
/// did (its sidecars', the init containers that always restart, counted
/// too), else when its Ready condition turned false, else when it was
/// asked to stop (its deletion less its grace period), else its creation.
pub fn finished_at(pod: &Pod) -> Option<i64> {
    let status = pod.status.as_ref();
    let sidecars: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .map(|c| c.name.as_str())
        .collect();
    let apps = status.and_then(|s| s.container_statuses.as_ref());
    let inits = status.and_then(|s| s.init_container_statuses.as_ref());
    let apps = latest_end(None, apps.into_iter().flatten());
    let sidecar_statuses = inits
        .into_iter()
        .flatten()
        .filter(|c| sidecars.contains(&c.name.as_str()));
    let containers = latest_end(apps, sidecar_statuses);
    let not_ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .and_then(|c| Some(c.last_transition_time.as_ref()?.0));
    let meta = &pod.metadata;
    let stopped = meta.deletion_timestamp.as_ref().map(|t| {
        let grace = meta.deletion_grace_period_seconds.unwrap_or(0);
        t.0.as_millisecond()
            .saturating_sub(grace.saturating_mul(1000))
    });
    containers
        .or(not_ready)
        .map(|t| t.as_millisecond())
        .or(stopped)
        .or(meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond()))
}

/// The latest end among `statuses` and `before`, as upstream's
/// `latestFinishTime`: none if one of them has not ended.
fn latest_end<'a>(
    before: Option<jiff::Timestamp>,
    statuses: impl Iterator<Item = &'a ContainerStatus>,
) -> Option<jiff::Timestamp> {
    let mut latest = before;
    for c in statuses {
        let end = c
            .state
            .as_ref()?
            .terminated
            .as_ref()?
            .finished_at
            .as_ref()?
            .0;
        latest = latest.max(Some(end));
    }
    latest
}

/// The wait left at `now` (milliseconds) after `failures` failures, the
/// last at `last`.
pub fn left(failures: u32, last: Option<i64>, now: i64) -> Duration {
    let Some(last) = last.filter(|_| failures > 0) else {
        return Duration::ZERO;
    };
    let doublings = (failures - 1).min(16);
    let wait = (FIRST * 2u32.pow(doublings)).min(LONGEST);
    let since = Duration::from_millis(now.saturating_sub(last).max(0) as u64);
    wait.saturating_sub(since)
}

/// A Job's failures since its last success, and when the last was.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Record {
    failures: u32,
    last: Option<i64>,
}

impl Record {
    /// The record once the newly finished pods are counted: a success
    /// clears the failures before it. (Upstream takes the newest pod's
    /// end as the last failure even when an earlier count ended later;
    /// the later of the two is kept here, which never shortens a wait.)
    pub fn after<'a>(
        self,
        succeeded: impl Iterator<Item = &'a Pod>,
        failed: impl Iterator<Item = &'a Pod>,
    ) -> Self {
        // A pod with no time at all finished at the dawn of time.
        let at = |p: &Pod| finished_at(p).unwrap_or(i64::MIN);
        let mut failed: Vec<i64> = failed.map(at).collect();
        failed.sort_unstable();
        let Some(success) = succeeded.map(at).max() else {
            return match failed.last() {
                Some(&last) => Self {
                    failures: self.failures.saturating_add(failed.len() as u32),
                    last: self.last.max(Some(last)),
                },
                None => self,
            };
        };
        let since: Vec<i64> = failed.into_iter().filter(|&t| t > success).collect();
        Self {
            failures: since.len() as u32,
            last: since.last().copied(),
        }
    }

    /// The wait left at `now` before the Job creates new pods.
    pub fn left(&self, now: i64) -> Duration {
        left(self.failures, self.last, now)
    }
}

/// The Jobs' back-off records, by key.
#[derive(Default)]
pub struct Records(Mutex<HashMap<String, Record>>);

impl Records {
    pub fn get(&self, key: &str) -> Record {
        self.lock().get(key).copied().unwrap_or_default()
    }

    pub fn set(&self, key: &str, record: Record) {
        let mut records = self.lock();
        match record == Record::default() {
            true => records.remove(key),
            false => records.insert(key.to_owned(), record),
        };
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn finished(phase: &str, at: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "status": {"phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": at}]}}))
        .unwrap()
    }

    #[test]
    fn the_wait_doubles_per_failure_since_the_last_success() {
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let now = at("2026-01-01T00:00:05Z");
        let one = [finished("Failed", "2026-01-01T00:00:00Z")];
        let first = Record::default().after([].iter(), one.iter());
        assert_eq!(first.left(now), Duration::from_secs(5));
        let two = [
            finished("Failed", "2025-12-31T23:59:30Z"),
            finished("Failed", "2025-12-31T23:59:00Z"),
        ];
        let three = first.after([].iter(), two.iter());
        assert_eq!(three.left(now), Duration::from_secs(35));
        // Counted pods are not looked at again: the record keeps them.
        assert_eq!(three.after([].iter(), [].iter()), three);
        let success = [finished("Succeeded", "2025-12-31T23:59:45Z")];
        let after_success = Record::default().after(success.iter(), one.iter().chain(&two));
        assert_eq!(after_success.left(now), Duration::from_secs(5));
        let cleared = three.after(success.iter(), [].iter());
        assert_eq!(cleared, Record::default());
        assert_eq!(left(30, Some(now), now), LONGEST);
        assert_eq!(left(0, Some(now), now), Duration::ZERO);
    }

    #[test]
    fn a_pod_finished_when_its_last_container_ended_if_all_did() {
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let ended = |at: &str| json!({"state": {"terminated": {"exitCode": 1, "finishedAt": at}}});
        let mut pod = serde_json::to_value(finished("Failed", "2026-01-01T00:00:09Z")).unwrap();
        pod["status"]["containerStatuses"] =
            json!([ended("2026-01-01T00:00:02Z"), ended("2026-01-01T00:00:03Z")]);
        let all_ended: Pod = serde_json::from_value(pod.clone()).unwrap();
        assert_eq!(finished_at(&all_ended), Some(at("2026-01-01T00:00:03Z")));
        // A sidecar ends after the app; a plain init container before.
        let mut with_sidecar = pod.clone();
        with_sidecar["spec"] = json!({"containers": [],
            "initContainers": [{"name": "side", "restartPolicy": "Always"}, {"name": "init"}]});
        with_sidecar["status"]["initContainerStatuses"] = json!([
            {"name": "side", "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:05Z"}}},
            {"name": "init", "state": {"terminated": {"exitCode": 0, "finishedAt": "2026-01-01T00:00:08Z"}}},
        ]);
        let with_sidecar: Pod = serde_json::from_value(with_sidecar).unwrap();
        assert_eq!(finished_at(&with_sidecar), Some(at("2026-01-01T00:00:05Z")));
        pod["status"]["containerStatuses"][1] = json!({"state": {"running": {}}});
        let one_running: Pod = serde_json::from_value(pod.clone()).unwrap();
        assert_eq!(finished_at(&one_running), Some(at("2026-01-01T00:00:09Z")));
        pod["status"] = json!({});
        pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:30Z");
        pod["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        let deleted: Pod = serde_json::from_value(pod).unwrap();
        assert_eq!(finished_at(&deleted), Some(at("2026-01-01T00:00:00Z")));
    }
}
