//! How long a Job waits before it replaces failed pods, as upstream's pod
//! failure back-off: 10 s after the first failure since the last
//! success, twice as long after each further one, at most 10 minutes.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

use crate::pods;

const FIRST: Duration = Duration::from_secs(10);
const LONGEST: Duration = Duration::from_secs(600);

/// When a finished pod finished, in milliseconds, as upstream's
/// `getFinishedTime` reads it: its Ready condition turning false, else
/// its last container's end, else its deletion, else its creation.
pub fn finished_at(pod: &Pod) -> Option<i64> {
    let status = pod.status.as_ref();
    let not_ready = status
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "False")
        .and_then(|c| c.last_transition_time.as_ref());
    let containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .max_by_key(|t| t.0);
    let meta = &pod.metadata;
    not_ready
        .or(containers)
        .or(meta.deletion_timestamp.as_ref())
        .or(meta.creation_timestamp.as_ref())
        .map(|t| t.0.as_millisecond())
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

/// The wait left at `now` before a Job whose finished pods are `pods`
/// creates new ones: its failures count from its last success on.
pub fn for_job<'a>(pods: impl Iterator<Item = &'a Pod> + Clone, now: i64) -> Duration {
    let of_phase = |phase: &'static str| {
        pods.clone()
            .filter(move |p| pods::phase(p) == phase)
            .filter_map(finished_at)
    };
    let success = of_phase("Succeeded").max();
    let failures: Vec<i64> = of_phase("Failed")
        .filter(|&t| success.is_none_or(|s| t > s))
        .collect();
    left(failures.len() as u32, failures.iter().copied().max(), now)
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
        assert_eq!(for_job(one.iter(), now), Duration::from_secs(5));
        let three = [
            finished("Failed", "2025-12-31T23:59:00Z"),
            finished("Failed", "2025-12-31T23:59:30Z"),
            finished("Failed", "2026-01-01T00:00:00Z"),
        ];
        assert_eq!(for_job(three.iter(), now), Duration::from_secs(35));
        let mut after_success = three.to_vec();
        after_success.insert(0, finished("Succeeded", "2025-12-31T23:59:45Z"));
        assert_eq!(for_job(after_success.iter(), now), Duration::from_secs(5));
        assert_eq!(left(30, Some(now), now), LONGEST);
        assert_eq!(left(0, Some(now), now), Duration::ZERO);
    }
}
