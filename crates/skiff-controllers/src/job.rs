//! The Job controller: runs pods until `completions` succeed, at most
//! `parallelism` at a time; fails the Job past `backoffLimit` failures or
//! `activeDeadlineSeconds`; deletes finished Jobs after
//! `ttlSecondsAfterFinished`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::owned;
use crate::pods::{self, PodControl};
use crate::status::omit_zero;
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
}

impl JobController {
    pub fn new(
        jobs: &mut Informer<Job>,
        pods: &mut Informer<Pod>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let expectations = Arc::new(Expectations::default());
        owned::queue_self(jobs, queue.clone());
        owned::track(pods, "Job", queue, Some(expectations.clone()), |_| {
            Vec::new()
        });
        Self {
            jobs: jobs.cache(),
            pods: pods.cache(),
            cluster,
            expectations,
        }
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

    async fn delete_pods(&self, key: &str, job: &Job, pods: &[Arc<Pod>]) -> Result<(), Error> {
        if pods.is_empty() {
            return Ok(());
        }
        self.expectations.expect(key, 0, pods.len());
        self.control(key, job).delete_all(pods).await
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

#[async_trait]
impl Reconcile for JobController {
    fn name(&self) -> &'static str {
        "job"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(job) = self.jobs.get(key) else {
            self.expectations.remove(key);
            return Ok(Action::Done);
        };
        if job.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        // A Job another controller manages (`managedBy`) is left to it.
        let managed_by = job.spec.as_ref().and_then(|s| s.managed_by.as_deref());
        if managed_by.is_some_and(|m| m != MANAGER) {
            return Ok(Action::Done);
        }
        let now = chrono::Utc::now();
        let spec = job.spec.clone().unwrap_or_default();
        let status = job.status.clone().unwrap_or_default();
        let uid = job.uid().unwrap_or_default();
        let owned: Vec<Arc<Pod>> = self
            .pods
            .list_in(&job.namespace().unwrap_or_default())
            .into_iter()
            .filter(|p| pods::controlled_by(&p.metadata, &uid))
            .collect();
        let active: Vec<Arc<Pod>> = owned
            .iter()
            .filter(|p| pods::is_active(p))
            .cloned()
            .collect();
        if finished(&job).is_some() {
            self.delete_pods(key, &job, &active).await?;
            let Some(ttl) = spec.ttl_seconds_after_finished else {
                return Ok(Action::Done);
            };
            let done = status.completion_time.as_ref().or(status
                .conditions
                .iter()
                .flatten()
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
            return match self.cluster.delete(&target, how).await {
                Err(e) if !e.is_not_found() => Err(e),
                _ => Ok(Action::Done),
            };
        }
        let succeeded = (owned
            .iter()
            .filter(|p| pods::phase(p) == "Succeeded")
            .count() as i32)
            .max(status.succeeded.unwrap_or(0));
        let failed = (owned.iter().filter(|p| pods::phase(p) == "Failed").count() as i32)
            .max(status.failed.unwrap_or(0));
        let ready = active.iter().filter(|p| pods::is_ready(p)).count();
        let terminating = owned.iter().filter(|p| pods::is_terminating(p)).count();
        let start = status
            .start_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| stamp(now));
        let started = status
            .start_time
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(now.timestamp());
        let parallelism = spec.parallelism.unwrap_or(1).max(0);
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let mut requeue = None;
        let mut conditions: Vec<Value> = Vec::new();
        let mut completion_time = None;
        let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "reason": reason, "message": message, "lastProbeTime": stamp(now), "lastTransitionTime": stamp(now)});
        let complete = match spec.completions {
            Some(c) => succeeded >= c,
            None => succeeded > 0 && active.is_empty(),
        };
        let failure = if failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if spec
            .active_deadline_seconds
            .is_some_and(|d| now.timestamp() - started >= d)
        {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else {
            None
        };
        if let Some((reason, message)) = failure {
            self.delete_pods(key, &job, &active).await?;
            conditions.push(condition("FailureTarget", reason, message));
            conditions.push(condition("Failed", reason, message));
            self.cluster
                .event(events::about(&*job, COMPONENT, true, reason, message));
        } else if complete {
            self.delete_pods(key, &job, &active).await?;
            conditions.push(condition(
                "SuccessCriteriaMet",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            conditions.push(condition(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
            completion_time = Some(stamp(now));
            self.cluster.event(events::about(
                &*job,
                COMPONENT,
                false,
                "Completed",
                "Job completed",
            ));
        } else if self.expectations.satisfied(key) && spec.suspend != Some(true) {
            let want = match spec.completions {
                Some(c) => parallelism.min(c - succeeded).max(0),
                None if succeeded > 0 => 0,
                None => parallelism,
            } as usize;
            if active.len() < want {
                let n = want - active.len();
                self.expectations.expect(key, n, 0);
                let ns = job.namespace().unwrap_or_default();
                let mut pod =
                    pods::from_template(Some(&spec.template), &ns, pods::controller_ref(&*job));
                pod["metadata"]["generateName"] = json!(format!("{}-", job.name_any()));
                let control = self.control(key, &job);
                for i in 0..n {
                    if let Err(e) = control.create(pod.clone()).await {
                        for _ in i + 1..n {
                            self.expectations.creation_observed(key);
                        }
                        return Err(e);
                    }
                }
            } else if active.len() > want {
                let mut extra = active.clone();
                extra.sort_by_key(|p| pods::deletion_rank(p));
                self.delete_pods(key, &job, &extra[..active.len() - want])
                    .await?;
            }
            if let Some(d) = spec.active_deadline_seconds {
                requeue = Some(Duration::from_secs(
                    (started + d - now.timestamp()).max(1) as u64
                ));
            }
        } else if spec.suspend == Some(true) {
            self.delete_pods(key, &job, &active).await?;
        }
        let mut next = json!({
            "startTime": start, "active": omit_zero(active.len()), "succeeded": omit_zero(succeeded),
            "failed": omit_zero(failed), "ready": ready, "terminating": terminating,
            // Upstream counts finished pods through a finalizer and lists
            // those it has yet to count here; this controller counts them
            // as it sees them, so the lists are always empty.
            "uncountedTerminatedPods": {},
        });
        if !conditions.is_empty() {
            next["conditions"] = json!(conditions);
            if failure.is_none() {
                next["active"] = Value::Null;
            }
        }
        if let Some(t) = completion_time {
            next["completionTime"] = json!(t);
        }
        let old = serde_json::to_value(&status).unwrap_or_default();
        let changed = !conditions.is_empty()
            || old["startTime"].is_null()
            || ["active", "succeeded", "failed", "ready", "terminating"]
                .iter()
                .any(|f| old[f].as_i64().unwrap_or(0) != next[f].as_i64().unwrap_or(0));
        if changed {
            let target = Target::of::<Job>(job.namespace().as_deref(), &job.name_any());
            self.cluster
                .merge_patch(&target, json!({"status": next}), true)
                .await?;
        }
        Ok(requeue.map_or(Action::Done, Action::RequeueAfter))
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
            "metadata": {"name": name, "namespace": "d", "uid": name, "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "pi", "uid": "job", "controller": true}]},
            "spec": {"containers": []}, "status": {"phase": phase},
        }))
        .unwrap()
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
        pods.apply(pod("a", "Succeeded"));
        pods.apply(pod("b", "Succeeded"));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        assert_eq!(fake.made("create").len(), 1, "one completion left");
        pods.apply(pod("c", "Succeeded"));
        fake.clear();
        c.reconcile("d/pi").await.unwrap();
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(status["succeeded"], 3);
        assert_eq!(status["conditions"][1]["type"], "Complete");
        assert!(status["completionTime"].is_string());
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
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(
            (&status["terminating"], &status["ready"]),
            (&json!(1), &json!(0))
        );
        assert!(status["active"].is_null(), "a zero Go leaves out: {status}");
    }

    #[tokio::test]
    async fn fails_past_the_backoff_limit() {
        let (fake, jobs, pods, c) = setup();
        jobs.apply(job(1, 1, 1));
        pods.apply(pod("a", "Failed"));
        pods.apply(pod("b", "Failed"));
        c.reconcile("d/pi").await.unwrap();
        let status = &fake.bodies("patch-status")[0]["status"];
        assert_eq!(status["conditions"][1]["type"], "Failed");
        assert_eq!(status["conditions"][1]["reason"], "BackoffLimitExceeded");
        assert!(fake.made("create").is_empty());
    }
}
