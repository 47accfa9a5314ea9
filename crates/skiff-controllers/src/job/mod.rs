//! The Job controller: runs pods until `completions` succeed, at most
//! `parallelism` at a time, each with its own completion index when the
//! Job is `Indexed`; fails the Job past its backoff limits (of the Job or
//! of each index), on a pod failure policy's `FailJob` rule or past
//! `activeDeadlineSeconds`; completes it early once its success policy
//! is met; deletes finished Jobs after `ttlSecondsAfterFinished`.

mod backoff;
mod indexed;
mod policies;
mod tracking;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::{Job, JobSpec, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{json, Value};

use self::policies::Verdict;
use self::tracking::{Counts, Releasing, StatusWriter, Written};
use crate::owned;
use crate::pods::{self, PodControl};
use crate::status::omit_zero;
use skiff_core::completion_indexes::Indexes;
use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::expectations::Expectations;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "job-controller";

/// The `managedBy` of Jobs this controller runs, as upstream's.
const MANAGER: &str = "kubernetes.io/job-controller";

pub struct JobController {
    pub jobs: Arc<Cache<Job>>,
    pub pods: Arc<Cache<Pod>>,
    pub cluster: Arc<dyn Cluster>,
    pub expectations: Arc<Expectations>,
    /// Pods whose finalizer is being removed, until the cache shows it
    /// gone: a stale pod must not be counted twice.
    releasing: Arc<Releasing>,
    /// The status versions it wrote that the cache has yet to show.
    written: Written,
    /// Each Job's failures since its last success, for the back-off.
    backoffs: backoff::Records,
}

impl JobController {
    pub fn new(
        jobs: &mut Informer<Job>,
        pods: &mut Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let expectations = Arc::new(Expectations::default());
        let releasing = Arc::new(Releasing::default());
        let observed = releasing.clone();
        pods.on_change(move |old, now| {
            // Seen without its finalizer, or gone.
            let released = match now {
                Some(p) => Some(p).filter(|p| !tracking::has_finalizer(p)),
                None => old,
            };
            if let Some(uid) = released.and_then(|p| p.metadata.uid.as_deref()) {
                observed.seen(uid);
            }
        });
        owned::queue_self(jobs, queue.clone());
        owned::track(pods, "Job", queue, Some(expectations.clone()), |_| {
            Vec::new()
        });
        Self {
            jobs: jobs.cache(),
            pods: pods.cache(),
            cluster,
            expectations,
            releasing,
            written: Written::default(),
            backoffs: backoff::Records::default(),
        }
    }

    /// Whether the Job has still to count the pod: it carries the
    /// finalizer, and no removal of it is under way.
    fn tracked(&self, pod: &Pod) -> bool {
        tracking::has_finalizer(pod)
            && !self
                .releasing
                .has(pod.metadata.uid.as_deref().unwrap_or_default())
    }

    fn control<'a>(&'a self, key: &'a str, job: &'a Job) -> PodControl<'a, Job> {
        PodControl {
            cluster: &*self.cluster,
            expectations: &self.expectations,
            key,
            owner: job,
            component: COMPONENT,
        }
    }

    /// Deletes pods the Job still counts when they finish.
    async fn delete_pods(&self, key: &str, job: &Job, pods: &[Arc<Pod>]) -> Result<(), Error> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, 0, pods.len());
        self.control(key, job).delete_all(pods).await
    }

    /// Deletes pods the Job does not count (surplus or suspended ones):
    /// their finalizer goes first, as upstream's `deleteJobPods`.
    async fn drop_pods(&self, key: &str, job: &Job, pods: &[Arc<Pod>]) -> Result<(), Error> {
        if let (_, Some(e)) = self.release(pods).await {
            return Err(e);
        }
        self.delete_pods(key, job, pods).await
    }

    /// Removes the tracking finalizer from `pods`: the UIDs of those it is
    /// gone from (or that are gone), and the first error.
    async fn release(&self, pods: &[Arc<Pod>]) -> (BTreeSet<String>, Option<Error>) {
        let patches = pods
            .iter()
            .filter(|p| self.tracked(p))
            .filter_map(|p| Some((p, tracking::release_patch(p)?)));
        let done = futures::future::join_all(patches.map(|(p, patch)| async move {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            self.releasing.expect(&uid);
            let name = p.metadata.name.as_deref().unwrap_or_default();
            let target = Target::of::<Pod>(p.metadata.namespace.as_deref(), name);
            let result = self.cluster.json_patch(&target, patch).await;
            (uid, result)
        }))
        .await;
        let mut gone = BTreeSet::new();
        let mut error = None;
        for (uid, result) in done {
            match result {
                Err(e) if !e.is_not_found() => {
                    self.releasing.seen(&uid);
                    error.get_or_insert(e);
                }
                _ => {
                    gone.insert(uid);
                }
            }
        }
        (gone, error)
    }

    /// Releases the pods in the namespace of `key` that no Job counts any
    /// more: those of an earlier Job by its name, or of none (orphaned),
    /// that still carry the tracking finalizer.
    async fn release_orphans(&self, key: &str, uid: Option<&str>) -> Result<(), Error> {
        let (ns, name) = key.split_once('/').unwrap_or(("", key));
        let orphans: Vec<Arc<Pod>> = self
            .pods
            .list_in(ns)
            .into_iter()
            .filter(|p| tracking::has_finalizer(p))
            .filter(|p| match pods::controller_of(&p.metadata) {
                None => true,
                Some(r) => r.kind == "Job" && r.name == name && Some(r.uid.as_str()) != uid,
            })
            .collect();
        match self.release(&orphans).await {
            (_, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The condition type that says the Job finished, if it did.
pub fn finished(job: &Job) -> Option<&str> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// What the Job's pods tell of its progress.
struct Tally {
    succeeded: i32,
    /// Failures that count against `backoffLimit`.
    failed: i32,
    /// The indexes that succeeded, for an Indexed Job.
    done: Option<Indexes>,
    /// The indexes past their backoff limit, under a per-index limit.
    failed_indexes: Option<Indexes>,
    /// The message of a pod failure policy's `FailJob` rule a pod matched.
    fail_job: Option<String>,
}

/// Tallies the Job's pods, listing in `counts` those newly finished that
/// it still tracks.
fn tally(
    spec: &JobSpec,
    status: &JobStatus,
    owned: &[Arc<Pod>],
    counts: &mut Counts,
    tracked: impl Fn(&Pod) -> bool,
) -> Tally {
    let completions = spec.completions.unwrap_or(0);
    let of_phase = |phase: &'static str| owned.iter().filter(move |p| pods::phase(p) == phase);
    let verdicts: Vec<(&Arc<Pod>, Verdict)> = of_phase("Failed")
        .map(|p| (p, policies::judge(spec.pod_failure_policy.as_ref(), p)))
        .collect();
    let in_range = |i: &i32| *i < completions;
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    for p in owned.iter().filter(|p| tracked(p)) {
        let uid = p.metadata.uid.as_deref().unwrap_or_default();
        if pods::phase(p) == "Succeeded" {
            // An Indexed Job counts its done indexes instead.
            if !indexed && !counts.is_listed(uid) {
                counts.list(uid, true);
            }
        } else if tracking::is_failed(p, replaces_failed_only(spec))
            && !counts.is_listed_failed(uid)
            && counts_against_backoff(spec, p)
        {
            counts.list(uid, false);
        }
    }
    let done = indexed.then(|| {
        let before = status.completed_indexes.as_deref().unwrap_or("");
        let now = of_phase("Succeeded")
            .filter_map(|p| indexed::of(p))
            .filter(in_range);
        Indexes::read(before, completions).with(now.collect::<Vec<_>>())
    });
    let per_index = spec.backoff_limit_per_index.filter(|_| done.is_some());
    let failed_indexes = per_index.map(|limit| {
        let before = status.failed_indexes.as_deref().unwrap_or("");
        let now = verdicts
            .iter()
            .filter(|(p, v)| {
                *v == Verdict::FailIndex || (v.counts() && indexed::failures_before(p).0 >= limit)
            })
            .filter_map(|(p, _)| indexed::of(p))
            .filter(in_range);
        Indexes::read(before, completions).with(now.collect::<Vec<_>>())
    });
    let succeeded = match &done {
        Some(done) => done.total() as i32,
        None => counts.all_succeeded(),
    };
    let fail_job = verdicts.into_iter().find_map(|(_, v)| match v {
        Verdict::FailJob(message) => Some(message),
        _ => None,
    });
    Tally {
        succeeded,
        failed: counts.all_failed(),
        done,
        failed_indexes,
        fail_job,
    }
}

/// Whether a failed pod counts in `failed`: not ignored by the pod
/// failure policy, and of an index the Job has, if it is Indexed.
fn counts_against_backoff(spec: &JobSpec, pod: &Pod) -> bool {
    let in_range = |i: i32| i < spec.completions.unwrap_or(0);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    (!indexed || indexed::of(pod).is_some_and(in_range))
        && policies::judge(spec.pod_failure_policy.as_ref(), pod).counts()
}

/// Whether a pod being deleted holds its place until it fails (under
/// `podReplacementPolicy: Failed`, the default with a pod failure policy).
fn replaces_failed_only(spec: &JobSpec) -> bool {
    spec.pod_replacement_policy.as_deref() == Some("Failed") || spec.pod_failure_policy.is_some()
}

/// Why the Job fails, if it does: a reason and a message, as upstream's.
fn failure(
    spec: &JobSpec,
    tally: &Tally,
    active: &[Arc<Pod>],
    late: bool,
) -> Option<(&'static str, String)> {
    let limit = spec.backoff_limit.unwrap_or(6);
    if let Some(message) = &tally.fail_job {
        return Some(("PodFailurePolicy", message.clone()));
    }
    if tally.failed > limit || restarts_past(spec, active, limit) {
        let message = "Job has reached the specified backoff limit";
        return Some(("BackoffLimitExceeded", message.into()));
    }
    if late {
        let message = "Job was active longer than specified deadline";
        return Some(("DeadlineExceeded", message.into()));
    }
    let failed = tally.failed_indexes.as_ref().map_or(0, Indexes::total);
    if spec
        .max_failed_indexes
        .is_some_and(|max| failed > i64::from(max))
    {
        let message = "Job has exceeded the specified maximal number of failed indexes";
        return Some(("MaxFailedIndexesExceeded", message.into()));
    }
    let completions = i64::from(spec.completions.unwrap_or(0));
    if failed > 0 && failed + i64::from(tally.succeeded) >= completions {
        return Some(("FailedIndexes", "Job has failed indexes".into()));
    }
    None
}

/// Whether pods restarted in place (`OnFailure`) as often as the backoff
/// limit allows, as upstream's `pastBackoffLimitOnFailure`.
fn restarts_past(spec: &JobSpec, active: &[Arc<Pod>], limit: i32) -> bool {
    let policy = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let restarts: i32 = active
        .iter()
        .filter(|p| matches!(pods::phase(p), "Running" | "Pending"))
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .fold(0i32, |sum, c| sum.saturating_add(c.restart_count));
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

#[async_trait]
impl Reconcile for JobController {
    fn name(&self) -> &'static str {
        "job"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(job) = self.jobs.get(key) else {
            self.expectations.remove(key);
            self.written.forget(key);
            self.backoffs.forget(key);
            self.release_orphans(key, None).await?;
            return Ok(Action::Done);
        };
        let uid = job.uid().unwrap_or_default();
        // A Job read before its last status write would count its released
        // pods no more (and run them again): the write's event wakes it.
        if self.written.ahead_of(key, &job) {
            return Ok(Action::Done);
        }
        self.release_orphans(key, Some(&uid)).await?;
        let owned: Vec<Arc<Pod>> = self
            .pods
            .list_in(&job.namespace().unwrap_or_default())
            .into_iter()
            .filter(|p| pods::controlled_by(&p.metadata, &uid))
            .collect();
        // A Job another controller manages (`managedBy`) is left to it.
        let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
        if managed_by.is_some_and(|m| m != MANAGER) {
            return Ok(Action::Done);
        }
        if job.metadata.deletion_timestamp.is_some() {
            // Its pods are counted no more; they go with it.
            return match self.release(&owned).await {
                (_, Some(e)) => Err(e),
                _ => Ok(Action::Done),
            };
        }
        let now = chrono::Utc::now();
        let spec = job.spec.clone().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        if finished(&job).is_some() {
            self.backoffs.forget(key);
            self.drop_pods(key, &job, &active).await?;
            return self.expire(&job, &spec, &status, now).await;
        }
        let mut counts = Counts::of(&status, &owned);
        let backoff = self.backoff_after(key, &spec, &owned, &counts);
        let tally = tally(&spec, &status, &owned, &mut counts, |p| self.tracked(p));
        let succeeded = tally.succeeded;
        let mut ready = active.iter().filter(|p| pods::is_ready(p)).count();
        let mut terminating = owned.iter().filter(|p| pods::is_terminating(p)).count();
        let suspended = spec.suspend == Some(true);
        let mut conditions = Conditions::of(&status, stamp(now));
        // A suspended Job has not started; a resumed one starts anew.
        let resumed = !suspended && conditions.is_true("Suspended");
        let start = match &status.start_time {
            Some(t) if !resumed => Some(t.0),
            _ if suspended => None,
            _ => Some(jiff::Timestamp::from_second(now.timestamp()).unwrap_or_default()),
        };
        let started = start.map_or(now.timestamp(), |t| t.as_second());
        let mut requeue = None;
        let late = !suspended
            && spec
                .active_deadline_seconds
                .is_some_and(|d| now.timestamp() - started >= d);
        // A verdict of an earlier sync stands, as upstream's interim
        // conditions: success met first, then a failure target.
        let met = conditions.reason_of("SuccessCriteriaMet");
        let failure = match met {
            Some(_) => None,
            None => conditions
                .reason_of("FailureTarget")
                .or_else(|| failure(&spec, &tally, &active, late).map(|(r, m)| (r.to_owned(), m))),
        };
        let completions = spec.completions.unwrap_or(0);
        let by_policy = tally
            .done
            .as_ref()
            .and_then(|done| policies::success(spec.success_policy.as_ref(), completions, done));
        let success = match (met, spec.completions, by_policy) {
            (Some(met), _, _) => Some(met),
            (None, _, Some(message)) => Some(("SuccessPolicy".to_owned(), message)),
            (None, Some(c), None) if succeeded >= c => {
                Some(("CompletionsReached".to_owned(), REACHED.to_owned()))
            }
            (None, None, None) if succeeded > 0 && active.is_empty() => {
                Some(("CompletionsReached".to_owned(), REACHED.to_owned()))
            }
            _ => None,
        }
        .filter(|_| failure.is_none());
        if let Some((reason, message)) = &failure {
            conditions.set("FailureTarget", true, reason, message);
        } else if let Some((reason, message)) = &success {
            conditions.set("SuccessCriteriaMet", true, reason, message);
        }
        let finishing = failure.is_some() || success.is_some();
        if finishing {
            // Deleted pods keep their finalizer: they are counted below.
            self.delete_pods(key, &job, &active).await?;
            terminating += active.len();
            ready = 0;
        } else if suspended {
            self.drop_pods(key, &job, &active).await?;
            if conditions.set("Suspended", true, "JobSuspended", "Job suspended") {
                let about = events::about(&*job, COMPONENT, false, "Suspended", "Job suspended");
                self.cluster.event(about);
            }
        } else {
            if conditions.set("Suspended", false, "JobResumed", "Job resumed") {
                let about = events::about(&*job, COMPONENT, false, "Resumed", "Job resumed");
                self.cluster.event(about);
            }
            if self.expectations.satisfied(key) {
                let parallelism = spec.parallelism.unwrap_or(1).max(0);
                let want = match spec.completions {
                    Some(c) => parallelism.min(c - succeeded).max(0),
                    None if succeeded > 0 => 0,
                    None => parallelism,
                } as usize;
                // A pod being deleted may hold its place until it is gone.
                let holding: Vec<Arc<Pod>> = match replaces_failed_only(&spec) {
                    true => owned
                        .iter()
                        .filter(|p| pods::is_terminating(p))
                        .cloned()
                        .collect(),
                    false => Vec::new(),
                };
                let plan = Plan {
                    want,
                    active: &active,
                    holding: &holding,
                    owned: &owned,
                    tally: &tally,
                    backoff: backoff.left(jiff::Timestamp::now().as_millisecond()),
                };
                let backing_off = self.manage(key, &job, &spec, plan).await?;
                let deadline = spec
                    .active_deadline_seconds
                    .map(|d| Duration::from_secs((started + d - now.timestamp()).max(1) as u64));
                requeue = backing_off.into_iter().chain(deadline).min();
            }
        }
        let mut writer = StatusWriter::of(&job, key, &self.written);
        let released = self
            .count_finished(
                &mut writer,
                &spec,
                &owned,
                &mut counts,
                &conditions,
                backoff,
            )
            .await?;
        // The Job finishes once every pod is counted and none is still
        // stopping, as upstream's `enactJobFinished`.
        let mut completion_time = None;
        let done = finishing && counts.is_settled() && terminating == 0;
        if let (true, Some((reason, message))) = (done, &failure) {
            conditions.set("Failed", true, reason, message);
            self.cluster
                .event(events::about(&*job, COMPONENT, true, reason, message));
        } else if let (true, Some((reason, message))) = (done, &success) {
            conditions.set("Complete", true, reason, message);
            completion_time = Some(stamp(now));
            self.cluster.event(events::about(
                &*job,
                COMPONENT,
                false,
                "Completed",
                "Job completed",
            ));
        }
        let succeeded = match tally.done {
            Some(_) => succeeded,
            None => counts.succeeded,
        };
        let mut next = json!({
            "startTime": start.map(|t| t.to_string()), "active": omit_zero(active.len()), "succeeded": omit_zero(succeeded),
            "failed": omit_zero(counts.failed), "ready": ready, "terminating": terminating,
            "uncountedTerminatedPods": counts.uncounted(),
        });
        if let Some(done) = tally.done.as_ref().filter(|d| !d.is_empty()) {
            next["completedIndexes"] = json!(done.to_string());
        }
        if let Some(failed) = &tally.failed_indexes {
            next["failedIndexes"] = json!(failed.to_string());
        }
        if finishing {
            next["active"] = Value::Null;
        }
        if conditions.changed {
            next["conditions"] = json!(conditions.list);
        }
        if let Some(t) = completion_time {
            next["completionTime"] = json!(t);
        }
        let old = serde_json::to_value(&status).unwrap_or_default();
        let changed = conditions.changed
            || resumed
            || released
            || (old["startTime"].is_null() && start.is_some())
            || ["completedIndexes", "failedIndexes"]
                .iter()
                .any(|f| old[f] != next[f])
            || ["active", "succeeded", "failed", "ready", "terminating"]
                .iter()
                .any(|f| old[f].as_i64().unwrap_or(0) != next[f].as_i64().unwrap_or(0));
        if changed {
            writer.write(&*self.cluster, next).await?;
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
    }
}

impl JobController {
    /// The Job's back-off record once the pods that finished since the
    /// status was written are counted, as upstream's `newBackoffRecord`:
    /// those it tracks and has not listed yet. It is kept once they are
    /// listed ([`Self::count_finished`]).
    fn backoff_after(
        &self,
        key: &str,
        spec: &JobSpec,
        owned: &[Arc<Pod>],
        counts: &Counts,
    ) -> backoff::Record {
        let fresh = owned
            .iter()
            .filter(|p| self.tracked(p))
            .filter(|p| !counts.is_listed(p.metadata.uid.as_deref().unwrap_or_default()));
        let succeeded = fresh.clone().filter(|p| pods::phase(p) == "Succeeded");
        let failed = fresh.filter(|p| tracking::is_failed(p, replaces_failed_only(spec)));
        self.backoffs
            .get(key)
            .after(succeeded.map(|p| &**p), failed.map(|p| &**p))
    }

    /// Counts the Job's finished pods, as upstream's
    /// `trackJobStatusAndRemoveFinalizers`: lists the newly finished ones in
    /// the status (with the interim conditions), keeps the back-off record
    /// that counts them, removes their finalizer, and moves those it went
    /// from into `counts`. All of a finishing Job's pods (one with a
    /// failure or success target) are released; the running ones count as
    /// failed when it fails. Whether any finalizer went.
    async fn count_finished(
        &self,
        writer: &mut StatusWriter<'_>,
        spec: &JobSpec,
        owned: &[Arc<Pod>],
        counts: &mut Counts,
        conditions: &Conditions,
        backoff: backoff::Record,
    ) -> Result<bool, Error> {
        let failing = conditions.is_true("FailureTarget");
        let finishing = failing || conditions.is_true("SuccessCriteriaMet");
        let replace_failed_only = replaces_failed_only(spec);
        let releasing: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| self.tracked(p))
            .filter(|p| {
                finishing
                    || pods::phase(p) == "Succeeded"
                    || tracking::is_failed(p, replace_failed_only)
            })
            .cloned()
            .collect();
        if releasing.is_empty() {
            return Ok(false);
        }
        for p in releasing.iter().filter(|_| failing) {
            let uid = p.metadata.uid.as_deref().unwrap_or_default();
            if pods::phase(p) != "Succeeded"
                && !counts.is_listed_failed(uid)
                && counts_against_backoff(spec, p)
            {
                counts.list(uid, false);
            }
        }
        if counts.listed {
            let mut listed = json!({"uncountedTerminatedPods": counts.uncounted()});
            if conditions.changed {
                listed["conditions"] = json!(conditions.list);
            }
            writer.write(&*self.cluster, listed).await?;
        }
        // Listed, the pods are not counted again: their failures are in
        // the record from now on.
        self.backoffs.set(writer.key(), backoff);
        let (gone, error) = self.release(&releasing).await;
        let held: BTreeSet<&str> = owned
            .iter()
            .filter(|p| tracking::has_finalizer(p))
            .filter_map(|p| p.metadata.uid.as_deref())
            .filter(|uid| !gone.contains(*uid))
            .collect();
        counts.settle(|uid| held.contains(uid));
        match error {
            Some(e) => Err(e),
            None => Ok(!gone.is_empty()),
        }
    }

    /// Deletes a finished Job once its `ttlSecondsAfterFinished` passed.
    async fn expire(
        &self,
        job: &Job,
        spec: &JobSpec,
        status: &JobStatus,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Action, Error> {
        let Some(ttl) = spec.ttl_seconds_after_finished else {
            return Ok(Action::Done);
        };
        // When it finished: its completion, or its Complete or Failed
        // condition turning true.
        let done = status.completion_time.as_ref().or(status
            .conditions
            .iter()
            .flatten()
            .filter(|c| matches!(c.type_.as_str(), "Complete" | "Failed") && c.status == "True")
            .find_map(|c| c.last_transition_time.as_ref()));
        let done = done.map(|t| t.0.as_second()).unwrap_or(now.timestamp());
        let left = done + i64::from(ttl) - now.timestamp();
        if left > 0 {
            return Ok(Action::RequeueAfter(Duration::from_secs(left as u64)));
        }
        let target = Target::of::<Job>(job.namespace().as_deref(), &job.name_any());
        let how = Deletion {
            uid: job.uid(),
            propagation: Some("Foreground"),
            ..Default::default()
        };
        match self.cluster.delete(&target, how).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(Action::Done),
        }
    }
}

const REACHED: &str = "Reached expected number of succeeded pods";

/// A Job's conditions as the controller rewrites them.
struct Conditions {
    list: Vec<Value>,
    changed: bool,
    now: String,
}

impl Conditions {
    fn of(status: &JobStatus, now: String) -> Self {
        let list = status.conditions.iter().flatten();
        Self {
            list: list.filter_map(|c| serde_json::to_value(c).ok()).collect(),
            changed: false,
            now,
        }
    }

    fn is_true(&self, kind: &str) -> bool {
        self.reason_of(kind).is_some()
    }

    /// The reason and message of a true condition of this type.
    fn reason_of(&self, kind: &str) -> Option<(String, String)> {
        let c = self
            .list
            .iter()
            .find(|c| c["type"] == kind && c["status"] == "True")?;
        let text = |field: &str| c[field].as_str().unwrap_or_default().to_owned();
        Some((text("reason"), text("message")))
    }

    /// Sets a condition as upstream's `ensureJobConditionStatus` does: a
    /// condition that says the same is left alone, and a false one is
    /// not added. Whether it changed anything.
    fn set(&mut self, kind: &str, status: bool, reason: &str, message: &str) -> bool {
        let status = if status { "True" } else { "False" };
        let condition = json!({"type": kind, "status": status, "reason": reason, "message": message,
            "lastProbeTime": self.now, "lastTransitionTime": self.now});
        let same =
            |c: &Value| c["status"] == status && c["reason"] == reason && c["message"] == message;
        match self.list.iter_mut().find(|c| c["type"] == kind) {
            Some(c) if same(c) => return false,
            Some(c) => *c = condition,
            None if status == "False" => return false,
            None => self.list.push(condition),
        }
        self.changed = true;
        true
    }
}

/// What a running Job's pods should become.
struct Plan<'a> {
    /// How many pods should run.
    want: usize,
    active: &'a [Arc<Pod>],
    /// Pods being deleted that a replacement waits for.
    holding: &'a [Arc<Pod>],
    owned: &'a [Arc<Pod>],
    tally: &'a Tally,
    /// The wait left before failed pods are replaced.
    backoff: Duration,
}

impl JobController {
    /// Creates or deletes pods until `plan.want` run: for an Indexed Job,
    /// one per index not done, lowest first, and never two of one index.
    /// Failed pods are replaced after the back-off; the wait left, if a
    /// replacement waits.
    async fn manage(
        &self,
        key: &str,
        job: &Job,
        spec: &JobSpec,
        plan: Plan<'_>,
    ) -> Result<Option<Duration>, Error> {
        let completions = spec.completions.unwrap_or(0);
        let indexed = plan.tally.done.is_some();
        let mut surplus: Vec<Arc<Pod>> = Vec::new();
        let mut keep: Vec<Arc<Pod>> = plan.active.to_vec();
        if indexed {
            // Pods without a valid index, of a failed index, or a second
            // pod of one index go first.
            keep.sort_by_key(|p| (indexed::of(p), std::cmp::Reverse(pods::deletion_rank(p))));
            let failed = plan.tally.failed_indexes.clone().unwrap_or_default();
            let mut seen = Vec::new();
            keep.retain(|p| {
                let index = indexed::of(p).filter(|&i| i < completions && !failed.has(i));
                let kept = index.is_some_and(|i| !seen.contains(&i));
                seen.extend(index);
                if !kept {
                    surplus.push(p.clone());
                }
                kept
            });
        }
        if keep.len() > plan.want {
            keep.sort_by_key(|p| pods::deletion_rank(p));
            surplus.extend(keep.drain(..keep.len() - plan.want));
        }
        if !surplus.is_empty() {
            // Replacements wait until the deletions are seen.
            return self.drop_pods(key, job, &surplus).await.map(|()| None);
        }
        let missing = plan.want.saturating_sub(keep.len() + plan.holding.len());
        if missing == 0 {
            return Ok(None);
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let per_index = spec.backoff_limit_per_index.is_some();
        if !per_index && !plan.backoff.is_zero() {
            return Ok(Some(plan.backoff));
        }
        let mut waiting = None;
        let ns = job.namespace().unwrap_or_default();
        let mut pod = pods::from_template(Some(&spec.template), &ns, pods::controller_ref(job));
        tracking::hold(&mut pod);
        let mut new_pods = Vec::new();
        if let Some(done) = &plan.tally.done {
            indexed::add_index_variable(&mut pod);
            let taken_by = |pods: &[Arc<Pod>]| {
                pods.iter()
                    .filter_map(|p| indexed::of(p))
                    .collect::<Vec<_>>()
            };
            let mut taken = done.with(taken_by(&keep)).with(taken_by(plan.holding));
            if let Some(failed) = &plan.tally.failed_indexes {
                taken = taken.union(failed);
            }
            for index in taken.first_missing(missing, completions) {
                let mut indexed_pod = pod.clone();
                let mut failures = None;
                if per_index {
                    // Each index backs off from its own failures.
                    let (so_far, last) = failures_so_far(index, plan.owned, spec);
                    let count = so_far.0.saturating_add(so_far.1).max(0) as u32;
                    let wait = backoff::left(count, last, now);
                    if !wait.is_zero() {
                        waiting = waiting.into_iter().chain([wait]).min();
                        continue;
                    }
                    failures = Some(so_far);
                }
                indexed::stamp(&mut indexed_pod, &job.name_any(), index, failures);
                new_pods.push(indexed_pod);
            }
        } else {
            pod["metadata"]["generateName"] = json!(format!("{}-", job.name_any()));
            new_pods.resize(missing, pod);
        }
        let n = new_pods.len();
        self.expectations.expect(key, n, 0);
        let control = self.control(key, job);
        for (i, pod) in new_pods.into_iter().enumerate() {
            if let Err(e) = control.create(pod).await {
                for _ in i + 1..n {
                    self.expectations.creation_observed(key);
                }
                return Err(e);
            }
        }
        Ok(waiting)
    }
}

/// The failures of `index` so far, counted and ignored, that its next
/// pod carries (those its latest failed pod carried, and that pod's
/// own), and when that pod finished.
fn failures_so_far(index: i32, owned: &[Arc<Pod>], spec: &JobSpec) -> ((i32, i32), Option<i64>) {
    let failed = owned
        .iter()
        .filter(|p| pods::phase(p) == "Failed" && indexed::of(p) == Some(index));
    let latest = failed.max_by_key(|p| {
        let (counted, ignored) = indexed::failures_before(p);
        counted.saturating_add(ignored)
    });
    let Some(pod) = latest else {
        return ((0, 0), None);
    };
    let (counted, ignored) = indexed::failures_before(pod);
    let last = backoff::finished_at(pod);
    if policies::judge(spec.pod_failure_policy.as_ref(), pod).counts() {
        ((counted.saturating_add(1), ignored), last)
    } else {
        ((counted, ignored.saturating_add(1)), last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn job(completions: i32, parallelism: i32, backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "d", "uid": "job"},
            "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
                     "template": {"metadata": {"labels": {"job-name": "pi"}}, "spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}},
        }))
        .unwrap()
    }

    fn pod(name: &str, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": name, "finalizers": [tracking::FINALIZER],
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job", "controller": true}]},
            "spec": {"containers": []}, "status": {"phase": phase},
        }))
        .unwrap()
    }

    /// The status the controller last wrote, all its patches merged.
    fn written(fake: &FakeCluster) -> Value {
        let mut status = json!({});
        for body in fake.bodies("patch-status") {
            json_patch::merge(&mut status, &body["status"]);
        }
        status
    }

    /// Feeds the controller's writes back to its caches, as the API
    /// server's watch would: the Job's status, and its pods without the
    /// finalizers it removed.
    fn feed_back(fake: &FakeCluster, jobs: &Informer<Job>, pods: &Informer<Pod>) {
        feed_job(fake, jobs);
        for released in fake.made("json-patch") {
            let key = released.trim_start_matches("pods ");
            let mut pod = (*pods.cache().get(key).unwrap()).clone();
            pod.metadata.finalizers = None;
            pods.apply(pod);
        }
        fake.clear();
    }

    /// Feeds the Job's written status back to its cache.
    fn feed_job(fake: &FakeCluster, jobs: &Informer<Job>) {
        let mut job = serde_json::to_value(&*jobs.cache().get("d/pi").unwrap()).unwrap();
        json_patch::merge(&mut job["status"], &written(fake));
        jobs.apply(serde_json::from_value(job).unwrap());
    }

    fn setup() -> (
        Arc<FakeCluster>,
        Informer<Job>,
        Informer<Pod>,
        JobController,
    ) {
        let fake = Arc::new(FakeCluster::default());
        let (mut jobs, mut pods) = (Informer::default(), Informer::default());
        let c = JobController::new(&mut jobs, &mut pods, fake.clone(), Queue::new());
        (fake, jobs, pods, c)
    }

    #[tokio::test]
    async fn runs_parallelism_pods_until_completions_succeed() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(3, 2, 6));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 2);
        let created = &fake.bodies("create")[0];
        assert_eq!(
            created["metadata"]["finalizers"],
            json!([tracking::FINALIZER])
        );
        pods.apply(pod("a", "Succeeded"));
        pods.apply(pod("b", "Succeeded"));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 1, "one completion left");
        // Listed first, released next, counted last.
        let listed = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(
            listed["uncountedTerminatedPods"]["succeeded"],
            json!(["a", "b"])
        );
        let mut released = fake.made("json-patch");
        released.sort();
        assert_eq!(released, ["pods d/a", "pods d/b"]);
        let status = written(&fake);
        assert_eq!(status["succeeded"], 2);
        assert!(status["uncountedTerminatedPods"]["succeeded"].is_null());

        // A counted pod deleted does not uncount; a new one counts.
        feed_back(&fake, &jobs, &pods);
        pods.delete(&pod("a", "Succeeded"));
        pods.apply(pod("c", "Succeeded"));
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["succeeded"], 3);
        assert_eq!(status["conditions"][1]["type"], "Complete");
        assert!(status["completionTime"].is_string());
    }

    #[tokio::test]
    async fn a_pod_listed_but_not_yet_counted_is_counted_once_its_finalizer_is_gone() {
        let (fake, jobs, _pods, c) = setup();
        let mut listed = serde_json::to_value(job(3, 1, 6)).unwrap();
        listed["status"] = json!({"succeeded": 1, "uncountedTerminatedPods": {"succeeded": ["a"]}});
        jobs.apply(serde_json::from_value(listed).unwrap());
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["succeeded"], 2, "{status}");
        assert!(fake.made("json-patch").is_empty());
    }

    #[tokio::test]
    async fn a_pod_released_but_not_yet_seen_so_is_not_counted_again() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(3, 1, 6));
        pods.apply(pod("a", "Succeeded"));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(written(&fake)["succeeded"], 1);
        // The Job's new status is seen, the pod's release not yet.
        feed_job(&fake, &jobs);
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert!(fake.made("json-patch").is_empty());
        let writes = fake.bodies("patch-status");
        assert!(
            writes.iter().all(|w| w["status"]["succeeded"].is_null()),
            "{writes:?}"
        );
        // Seen without its finalizer, it still counts once.
        let mut released = pod("a", "Succeeded");
        released.metadata.finalizers = None;
        pods.apply(released);
        c.reconcile("d/pi").await.unwrap();
        let writes = fake.bodies("patch-status");
        assert!(
            writes.iter().all(|w| w["status"]["succeeded"].is_null()),
            "{writes:?}"
        );
    }

    #[tokio::test]
    async fn a_job_read_before_its_last_status_write_waits_for_it() {
        let (fake, jobs, pods, c) = setup();
        let mut stale = serde_json::to_value(job(2, 1, 6)).unwrap();
        stale["metadata"]["resourceVersion"] = json!("5");
        jobs.apply(serde_json::from_value(stale.clone()).unwrap());
        // Its pod counted and released, in a status the cache lacks yet.
        let mut released = pod("a", "Succeeded");
        released.metadata.finalizers = None;
        pods.apply(released);
        c.written.wrote("d/pi", "9");
        c.reconcile("d/pi").await.unwrap();
        assert!(fake.made("create").is_empty(), "a would run again");
        assert!(fake.bodies("patch-status").is_empty());
        // Once the cache shows the write, the Job goes on from its counts.
        stale["metadata"]["resourceVersion"] = json!("9");
        stale["status"] = json!({"succeeded": 1});
        jobs.apply(serde_json::from_value(stale).unwrap());
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 1, "one completion left");
    }

    #[tokio::test]
    async fn pods_no_job_counts_lose_the_finalizer() {
        let (fake, _jobs, pods, c) = setup();
        pods.apply(pod("a", "Running"));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("json-patch"), ["pods d/a"]);
    }

    #[tokio::test]
    async fn a_pod_being_deleted_is_terminating_not_active() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(3, 1, 6));
        let mut leaving = serde_json::to_value(pod("a", "Running")).unwrap();
        leaving["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        pods.apply(serde_json::from_value(leaving).unwrap());
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 1, "replaced at once");
        let status = written(&fake);
        assert_eq!(
            (&status["terminating"], &status["ready"], &status["failed"]),
            (&json!(1), &json!(0), &json!(1))
        );
        assert!(status["active"].is_null(), "a zero Go leaves out: {status}");
    }

    /// A job with `extra` merged into its spec.
    fn job_with(extra: Value) -> Job {
        let mut j = serde_json::to_value(job(4, 2, 6)).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            j["spec"][k] = v.clone();
        }
        serde_json::from_value(j).unwrap()
    }

    /// A pod of index `index` in `phase`, with `extra` merged into it.
    fn indexed_pod(name: &str, index: i32, phase: &str, extra: Value) -> Pod {
        let mut p = serde_json::to_value(pod(name, phase)).unwrap();
        p["metadata"]["annotations"] = json!({indexed::INDEX: index.to_string()});
        for (k, v) in extra.as_object().unwrap() {
            for (field, value) in v.as_object().unwrap() {
                p[k][field] = value.clone();
            }
        }
        serde_json::from_value(p).unwrap()
    }

    fn created_indexes(fake: &FakeCluster) -> Vec<String> {
        fake.bodies("create")
            .iter()
            .map(|p| {
                p["metadata"]["labels"][indexed::INDEX]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn an_indexed_job_runs_each_index_once_and_records_the_done_ones() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job_with(json!({"completionMode": "Indexed"})));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(created_indexes(&fake), ["0", "1"]);
        let first = &fake.bodies("create")[0];
        assert_eq!(first["metadata"]["generateName"], "pi-0-");
        assert_eq!(first["spec"]["hostname"], "pi-0");
        assert_eq!(
            first["spec"]["containers"][0]["env"][0]["name"],
            "JOB_COMPLETION_INDEX"
        );
        pods.apply(indexed_pod("a", 0, "Succeeded", json!({})));
        pods.apply(indexed_pod("b", 1, "Running", json!({})));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(created_indexes(&fake), ["2"], "index 1 still runs");
        let status = written(&fake);
        assert_eq!(
            (&status["completedIndexes"], &status["succeeded"]),
            (&json!("0"), &json!(1))
        );

        pods.apply(indexed_pod("c", 1, "Running", json!({})));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("delete").len(), 1, "a second pod of index 1 goes");
        assert!(fake.made("create").is_empty());
    }

    #[tokio::test]
    async fn an_index_past_its_own_backoff_limit_fails_and_is_not_rerun() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job_with(
            json!({"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": 1}),
        ));
        pods.apply(indexed_pod("a", 0, "Failed", json!({})));
        pods.apply(indexed_pod("b", 1, "Running", json!({})));
        c.reconcile("d/pi").await.unwrap();
        let replacement = &fake.bodies("create")[0]["metadata"]["annotations"];
        assert_eq!(replacement[indexed::INDEX], "0");
        assert_eq!(
            replacement["batch.kubernetes.io/job-index-failure-count"],
            "1"
        );

        let again = json!({"metadata": {"annotations": {indexed::INDEX: "0", "batch.kubernetes.io/job-index-failure-count": "1"}}});
        pods.apply(indexed_pod("a2", 0, "Failed", again));
        pods.apply(indexed_pod("b", 1, "Succeeded", json!({})));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert!(fake.made("create").is_empty(), "index 0 failed for good");
        let status = written(&fake);
        assert_eq!(
            (&status["failedIndexes"], &status["completedIndexes"]),
            (&json!("0"), &json!("1"))
        );
        assert_eq!(status["conditions"][1]["reason"], "FailedIndexes");
    }

    #[tokio::test]
    async fn the_pod_failure_policy_fails_the_job_or_ignores_a_failure() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job_with(json!({"backoffLimit": 0, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]}})));
        let evicted =
            json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True"}]}});
        pods.apply(indexed_pod("a", 0, "Failed", evicted));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(
            fake.made("create").len(),
            2,
            "the ignored failure is replaced"
        );
        let status = written(&fake);
        assert!(
            status["failed"].is_null() && status["conditions"].is_null(),
            "{status}"
        );

        let exited = json!({"status": {"containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 42}}}]}});
        pods.apply(indexed_pod("b", 0, "Failed", exited));
        feed_back(&fake, &jobs, &pods);
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["conditions"][1]["reason"], "PodFailurePolicy");
        assert_eq!(
            status["conditions"][1]["message"],
            "Container c for pod d/b failed with exit code 42 matching FailJob rule at index 0"
        );
    }

    #[tokio::test]
    async fn a_met_success_policy_completes_the_job_early() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job_with(json!({"completionMode": "Indexed",
            "successPolicy": {"rules": [{"succeededIndexes": "0"}]}})));
        pods.apply(indexed_pod("a", 0, "Succeeded", json!({})));
        pods.apply(indexed_pod("b", 1, "Running", json!({})));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("delete"), ["pods d/b"]);
        let status = written(&fake);
        assert_eq!(status["conditions"][0]["type"], "SuccessCriteriaMet");
        assert!(status["conditions"][1].is_null(), "b still stops");
        // Once it stopped, the Job completes.
        feed_back(&fake, &jobs, &pods);
        pods.delete(&indexed_pod("b", 1, "Running", json!({})));
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["conditions"][1]["reason"], "SuccessPolicy");
        assert_eq!(
            status["conditions"][1]["message"],
            "Matched rules at index 0"
        );
    }

    #[tokio::test]
    async fn a_pod_being_deleted_holds_its_place_when_only_failed_pods_are_replaced() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job_with(
            json!({"parallelism": 1, "podReplacementPolicy": "Failed"}),
        ));
        let leaving = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}});
        pods.apply(indexed_pod("a", 0, "Running", leaving));
        c.reconcile("d/pi").await.unwrap();
        assert!(fake.made("create").is_empty());
    }

    #[tokio::test]
    async fn restarts_in_place_count_against_the_backoff_limit() {
        let (fake, jobs, pods, c) = setup();
        let mut on_failure = serde_json::to_value(job(1, 1, 2)).unwrap();
        on_failure["spec"]["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        jobs.apply(serde_json::from_value(on_failure).unwrap());
        let restarted = json!({"status": {"containerStatuses": [{"name": "c", "image": "i", "imageID": "",
            "ready": false, "restartCount": 2}]}});
        pods.apply(indexed_pod("a", 0, "Running", restarted));
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["conditions"][0]["reason"], "BackoffLimitExceeded");
        assert_eq!(fake.made("delete"), ["pods d/a"]);
        // The pod being deleted counts as failed; the Job fails once it is
        // gone.
        assert_eq!(status["failed"], 1, "{status}");
        assert!(status["conditions"][1].is_null(), "{status}");
        feed_back(&fake, &jobs, &pods);
        pods.delete(&pod("a", "Running"));
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["conditions"][1]["type"], "Failed");
    }

    #[tokio::test]
    async fn a_failed_pod_is_replaced_after_the_back_off() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(3, 1, 6));
        let just_now = jiff::Timestamp::now().to_string();
        let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": just_now}]}});
        pods.apply(indexed_pod("a", 0, "Failed", not_ready));
        let action = c.reconcile("d/pi").await.unwrap();
        assert!(fake.made("create").is_empty(), "not at once");
        let Action::RequeueAfter(wait) = action else {
            panic!("{action:?}")
        };
        assert!(
            wait > Duration::from_secs(8) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
    }

    #[tokio::test]
    async fn a_failed_pod_deleted_once_counted_still_holds_the_job_back() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(2, 1, 6));
        let just_now = jiff::Timestamp::now().to_string();
        let mut failed = serde_json::to_value(pod("a", "Failed")).unwrap();
        failed["status"]["conditions"] =
            json!([{"type": "Ready", "status": "False", "lastTransitionTime": just_now}]);
        let failed: Pod = serde_json::from_value(failed).unwrap();
        pods.apply(failed.clone());
        let action = c.reconcile("d/pi").await.unwrap();
        assert!(matches!(action, Action::RequeueAfter(_)), "{action:?}");
        assert_eq!(written(&fake)["failed"], 1);
        // Counted and released, then deleted: the back-off stands.
        feed_back(&fake, &jobs, &pods);
        pods.delete(&failed);
        let action = c.reconcile("d/pi").await.unwrap();
        assert!(fake.made("create").is_empty(), "not at once");
        let Action::RequeueAfter(wait) = action else {
            panic!("{action:?}")
        };
        assert!(wait > Duration::from_secs(8), "{wait:?}");

        // A success clears it.
        feed_back(&fake, &jobs, &pods);
        pods.apply(pod("b", "Succeeded"));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 1, "{:?}", fake.made("create"));
    }

    #[tokio::test]
    async fn a_suspended_job_runs_nothing_until_resumed() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job_with(json!({"suspend": true})));
        pods.apply(pod("a", "Running"));
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("delete"), ["pods d/a"]);
        assert!(fake.made("create").is_empty());
        let status = written(&fake);
        assert_eq!(status["conditions"][0]["reason"], "JobSuspended");
        assert!(status["startTime"].is_null(), "not started: {status}");
        assert_eq!(
            fake.event_messages(),
            ["SuccessfulDelete Deleted pod: a", "Suspended Job suspended"]
        );

        let mut resumed = serde_json::to_value(job_with(json!({"suspend": false}))).unwrap();
        resumed["status"] = fake.bodies("patch-status")[0]["status"].clone();
        jobs.apply(serde_json::from_value(resumed).unwrap());
        pods.delete(&pod("a", "Running"));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 2);
        let status = written(&fake);
        let suspended = &status["conditions"][0];
        assert_eq!(
            (&suspended["status"], &suspended["reason"]),
            (&json!("False"), &json!("JobResumed"))
        );
        assert!(status["startTime"].is_string());
    }

    #[tokio::test]
    async fn fails_past_the_backoff_limit() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(1, 1, 1));
        pods.apply(pod("a", "Failed"));
        pods.apply(pod("b", "Failed"));
        c.reconcile("d/pi").await.unwrap();
        let status = written(&fake);
        assert_eq!(status["failed"], 2);
        assert_eq!(status["conditions"][1]["type"], "Failed");
        assert_eq!(status["conditions"][1]["reason"], "BackoffLimitExceeded");
        assert!(fake.made("create").is_empty());
    }
}
