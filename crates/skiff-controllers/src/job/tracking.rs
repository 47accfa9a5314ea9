//! Counting each finished pod once, as upstream's job controller does:
//! a Job's pods carry the `batch.kubernetes.io/job-tracking` finalizer
//! until the Job has counted them, so a pod deleted before the controller
//! saw it finish still counts, and one deleted after does not uncount.
//! A finished pod is listed in `status.uncountedTerminatedPods` first, its
//! finalizer removed next, and it moves into the counts last, so neither
//! a crash nor a failed write counts it twice or never. Nor does a stale
//! cache: status is written over the version it was read at
//! ([`StatusWriter`]), a Job is left alone until the cache shows its last
//! write ([`Written`]), and a pod being released is not counted again
//! ([`Releasing`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{json, Value};
use skiff_runtime::api::{Cluster, Error, Target};

use crate::pods;

pub const FINALIZER: &str = "batch.kubernetes.io/job-tracking";

pub fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == FINALIZER)
}

/// Adds the finalizer to a new pod.
pub fn hold(pod: &mut Value) {
    let finalizers = &mut pod["metadata"]["finalizers"];
    match finalizers.as_array_mut() {
        Some(list) => list.push(json!(FINALIZER)),
        None => *finalizers = json!([FINALIZER]),
    }
}

/// Whether the Job takes the pod as failed, as upstream's `isPodFailed`:
/// a pod being deleted before it succeeded counts as failed, unless only
/// pods that reached `Failed` are replaced.
pub fn is_failed(pod: &Pod, replace_failed_only: bool) -> bool {
    match pods::phase(pod) {
        "Failed" => true,
        _ if replace_failed_only => false,
        phase => pod.metadata.deletion_timestamp.is_some() && phase != "Succeeded",
    }
}

/// A Job's counts of finished pods, with the pods listed as finished but
/// whose finalizer is still to go.
pub struct Counts {
    pub succeeded: i32,
    pub failed: i32,
    uncounted_succeeded: BTreeSet<String>,
    uncounted_failed: BTreeSet<String>,
    /// Whether pods were listed since the status was read.
    pub listed: bool,
}

impl Counts {
    /// The status's counts, with the listed pods that no longer carry the
    /// finalizer (or are gone) moved into them.
    pub fn of(status: &JobStatus, owned: &[Arc<Pod>]) -> Self {
        let uncounted = status.uncounted_terminated_pods.as_ref();
        let set = |list: Option<&Vec<String>>| list.into_iter().flatten().cloned().collect();
        let mut counts = Self {
            succeeded: status.succeeded.unwrap_or(0),
            failed: status.failed.unwrap_or(0),
            uncounted_succeeded: set(uncounted.and_then(|u| u.succeeded.as_ref())),
            uncounted_failed: set(uncounted.and_then(|u| u.failed.as_ref())),
            listed: false,
        };
        let held: BTreeSet<&str> = owned
            .iter()
            .filter(|p| has_finalizer(p))
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        counts.settle(|uid| held.contains(uid));
        counts
    }

    /// Moves the listed pods `held` no longer says hold their finalizer
    /// into the counts.
    pub fn settle(&mut self, held: impl Fn(&str) -> bool) {
        let before = (self.uncounted_succeeded.len(), self.uncounted_failed.len());
        self.uncounted_succeeded.retain(|uid| held(uid));
        self.uncounted_failed.retain(|uid| held(uid));
        let moved = |was: usize, now: usize| (was - now) as i32;
        self.succeeded = self
            .succeeded
            .saturating_add(moved(before.0, self.uncounted_succeeded.len()));
        self.failed = self
            .failed
            .saturating_add(moved(before.1, self.uncounted_failed.len()));
    }

    pub fn is_listed(&self, uid: &str) -> bool {
        self.uncounted_succeeded.contains(uid) || self.uncounted_failed.contains(uid)
    }

    pub fn is_listed_failed(&self, uid: &str) -> bool {
        self.uncounted_failed.contains(uid)
    }

    /// Lists a finished pod not counted yet.
    pub fn list(&mut self, uid: &str, succeeded: bool) {
        let list = match succeeded {
            true => &mut self.uncounted_succeeded,
            false => &mut self.uncounted_failed,
        };
        self.listed |= list.insert(uid.to_owned());
    }

    /// Succeeded pods, counted or listed.
    pub fn all_succeeded(&self) -> i32 {
        self.succeeded
            .saturating_add(self.uncounted_succeeded.len() as i32)
    }

    /// Failed pods, counted or listed.
    pub fn all_failed(&self) -> i32 {
        self.failed
            .saturating_add(self.uncounted_failed.len() as i32)
    }

    /// Whether every listed pod is counted.
    pub fn is_settled(&self) -> bool {
        self.uncounted_succeeded.is_empty() && self.uncounted_failed.is_empty()
    }

    /// `status.uncountedTerminatedPods` as a merge patch: an empty list
    /// is removed, as Go leaves it out.
    pub fn uncounted(&self) -> Value {
        let list = |uids: &BTreeSet<String>| match uids.is_empty() {
            true => Value::Null,
            false => json!(uids),
        };
        json!({"succeeded": list(&self.uncounted_succeeded), "failed": list(&self.uncounted_failed)})
    }
}

/// A JSON patch that removes the finalizer from `pod`, checking first
/// that it is still where the cache saw it; none if it has none.
pub fn release_patch(pod: &Pod) -> Option<Value> {
    let at = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{at}");
    Some(json!([
        {"op": "test", "path": path, "value": FINALIZER},
        {"op": "remove", "path": path},
    ]))
}

/// Writes a Job's status over the version it was read at only, as
/// upstream's updates: counts written from a stale Job would count its
/// pods again.
pub struct StatusWriter<'a> {
    target: Target,
    version: Option<String>,
    key: &'a str,
    written: &'a Written,
}

impl<'a> StatusWriter<'a> {
    pub fn of(job: &Job, key: &'a str, written: &'a Written) -> Self {
        Self {
            target: Target::of::<Job>(job.namespace().as_deref(), &job.name_any()),
            version: job.metadata.resource_version.clone(),
            key,
            written,
        }
    }

    /// The key of the Job written.
    pub fn key(&self) -> &'a str {
        self.key
    }

    /// Merges `status` in; the next write follows this one.
    pub async fn write(&mut self, cluster: &dyn Cluster, status: Value) -> Result<(), Error> {
        let patch = json!({"metadata": {"resourceVersion": self.version}, "status": status});
        let written = cluster.merge_patch(&self.target, patch, true).await?;
        if let Some(v) = written["metadata"]["resourceVersion"].as_str() {
            self.written.wrote(self.key, v);
            self.version = Some(v.to_owned());
        }
        Ok(())
    }
}

/// The resourceVersion of each Job's last status write until the cache
/// shows it (this store's versions are revisions, which grow).
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, u64>>);

impl Written {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wrote(&self, key: &str, version: &str) {
        if let Ok(v) = version.parse() {
            self.lock().insert(key.to_owned(), v);
        }
    }

    /// Whether the last write is newer than `job` as cached; forgotten
    /// once it is not.
    pub fn ahead_of(&self, key: &str, job: &Job) -> bool {
        let mut written = self.lock();
        let Some(&last) = written.get(key) else {
            return false;
        };
        let cached = job.metadata.resource_version.as_deref();
        match cached.and_then(|v| v.parse::<u64>().ok()) {
            Some(seen) if seen < last => true,
            _ => {
                written.remove(key);
                false
            }
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

/// The UIDs of pods whose tracking finalizer is being removed, as
/// upstream's `uidTrackingExpectations`.
#[derive(Default)]
pub struct Releasing(Mutex<HashSet<String>>);

impl Releasing {
    fn lock(&self) -> MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn expect(&self, uid: &str) {
        self.lock().insert(uid.to_owned());
    }

    pub fn seen(&self, uid: &str) {
        self.lock().remove(uid);
    }

    pub fn has(&self, uid: &str) -> bool {
        self.lock().contains(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, finalizer: bool) -> Arc<Pod> {
        let finalizers: Vec<&str> = if finalizer {
            vec!["x", FINALIZER]
        } else {
            vec![]
        };
        Arc::new(
            serde_json::from_value(json!({"metadata": {"uid": uid, "finalizers": finalizers}}))
                .unwrap(),
        )
    }

    #[test]
    fn listed_pods_whose_finalizer_went_are_counted() {
        let status: JobStatus = serde_json::from_value(json!({"succeeded": 2, "failed": 1,
            "uncountedTerminatedPods": {"succeeded": ["a", "b"], "failed": ["c"]}}))
        .unwrap();
        let mut counts = Counts::of(&status, &[pod("a", true), pod("b", false)]);
        assert_eq!((counts.succeeded, counts.failed), (3, 2));
        assert_eq!(
            counts.uncounted(),
            json!({"succeeded": ["a"], "failed": null})
        );
        assert_eq!(counts.all_succeeded(), 4);
        counts.list("d", false);
        counts.list("d", false);
        assert!(counts.listed);
        assert_eq!(counts.all_failed(), 3);
        counts.settle(|_| false);
        assert!(counts.is_settled());
        assert_eq!((counts.succeeded, counts.failed), (4, 3));
    }

    #[test]
    fn a_pod_being_deleted_is_failed_unless_only_failed_pods_are_replaced() {
        let leaving: Pod = serde_json::from_value(
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
            "status": {"phase": "Running"}}),
        )
        .unwrap();
        assert!(is_failed(&leaving, false));
        assert!(!is_failed(&leaving, true));
    }

    #[test]
    fn the_release_tests_the_finalizer_where_it_was() {
        assert_eq!(
            release_patch(&pod("a", true)).unwrap()[1],
            json!({"op": "remove", "path": "/metadata/finalizers/1"})
        );
        assert!(release_patch(&pod("a", false)).is_none());
    }
}
