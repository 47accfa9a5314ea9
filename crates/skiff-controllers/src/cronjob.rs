//! The CronJob controller: creates a Job at each scheduled time (standard
//! five-field cron syntax, in UTC or the CronJob's `timeZone`), honouring
//! concurrencyPolicy, startingDeadlineSeconds, suspend and the history
//! limits.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Timelike, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::job::finished;
use crate::owned;
use crate::pods;
use skiff_runtime::api::{self, Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

const COMPONENT: &str = "cronjob-controller";
/// Upstream gives up on catching up after this many missed start times.
const MAX_MISSED: usize = 100;

pub struct CronJobController {
    pub cronjobs: Arc<Cache<CronJob>>,
    pub jobs: Arc<Cache<Job>>,
    pub cluster: Arc<dyn Cluster>,
}

impl CronJobController {
    pub fn new(
        cronjobs: &mut Informer<CronJob>,
        jobs: &mut Informer<Job>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        owned::queue_self(cronjobs, queue.clone());
        owned::track(jobs, "CronJob", queue, None, |_| Vec::new());
        Self {
            cronjobs: cronjobs.cache(),
            jobs: jobs.cache(),
            cluster,
        }
    }
}

impl CronJobController {
    /// Deletes one of the CronJob's Jobs, with its pods; a Job already
    /// gone is no error.
    async fn delete_job(&self, job: &Job) -> Result<(), Error> {
        let target = Target::of::<Job>(job.namespace().as_deref(), &job.name_any());
        let how = Deletion {
            uid: job.uid(),
            propagation: Some("Background"),
            ..Default::default()
        };
        match self.cluster.delete(&target, how).await {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A parsed schedule in its time zone: the cron fields name wall-clock
/// times there (UTC without one).
pub struct Schedule {
    cron: croner::Cron,
    zone: Option<jiff::tz::TimeZone>,
}

impl Schedule {
    /// `schedule` in `time_zone` (an IANA name), or why not.
    pub fn new(schedule: &str, time_zone: Option<&str>) -> Result<Self, (&'static str, String)> {
        let cron = skiff_core::cron::parse(schedule).map_err(|e| ("UnparseableSchedule", e))?;
        let zone = time_zone
            .map(|name| {
                jiff::tz::TimeZone::get(name).map_err(|e| {
                    (
                        "UnknownTimeZone",
                        format!("invalid timeZone: {name:?}: {e}"),
                    )
                })
            })
            .transpose()?;
        Ok(Self { cron, zone })
    }

    /// The wall-clock time at `t` in the zone, written as if in UTC (what
    /// the cron fields are matched against).
    fn wall(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let Some(zone) = &self.zone else { return t };
        let Ok(ts) = jiff::Timestamp::from_second(t.timestamp()) else {
            return t;
        };
        let civil = ts.to_zoned(zone.clone()).datetime();
        let date = chrono::NaiveDate::from_ymd_opt(
            i32::from(civil.year()),
            civil.month() as u32,
            civil.day() as u32,
        );
        let time = chrono::NaiveTime::from_hms_opt(
            civil.hour() as u32,
            civil.minute() as u32,
            civil.second() as u32,
        );
        match (date, time) {
            (Some(d), Some(t)) => d.and_time(t).and_utc(),
            _ => t,
        }
    }

    /// The instant a wall-clock time (as from [`Self::wall`]) names: in a
    /// gap the time after it, in a fold the first, as upstream's Go
    /// `time.Date` does.
    fn instant(&self, wall: DateTime<Utc>) -> DateTime<Utc> {
        let Some(zone) = &self.zone else { return wall };
        let n = wall.naive_utc();
        let civil = jiff::civil::DateTime::new(
            n.year() as i16,
            n.month() as i8,
            n.day() as i8,
            n.hour() as i8,
            n.minute() as i8,
            n.second() as i8,
            0,
        );
        let at = civil
            .and_then(|c| zone.to_ambiguous_zoned(c).compatible())
            .map(|z| z.timestamp().as_second());
        at.ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or(wall)
    }

    /// Scheduled times after `after`, in order.
    fn times_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        let walls = self.cron.iter_after(self.wall(after));
        // A fold repeats wall times: each instant once, in order.
        walls.map(|w| self.instant(w)).filter(move |t| *t > after)
    }

    /// The latest scheduled time in `(after, now]`, and how many there were.
    pub fn latest_missed(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> (Option<DateTime<Utc>>, usize) {
        let (mut latest, mut count) = (None, 0);
        for t in self.times_after(after) {
            if t > now {
                break;
            }
            latest = Some(t);
            count += 1;
            if count > MAX_MISSED {
                // Too many to walk: jump to the last one before now.
                let recent = self
                    .times_after(now - chrono::Duration::days(1))
                    .take_while(|t| *t <= now)
                    .last();
                return (recent.or(latest), count);
            }
        }
        (latest, count)
    }

    /// The first scheduled time after `now`.
    pub fn next_after(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.times_after(now).next()
    }
}

#[async_trait]
impl Reconcile for CronJobController {
    fn name(&self) -> &'static str {
        "cronjob"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(cj) = self.cronjobs.get(key) else {
            return Ok(Action::Done);
        };
        if cj.metadata.deletion_timestamp.is_some() {
            return Ok(Action::Done);
        }
        let spec = cj.spec.clone().unwrap_or_default();
        let now = Utc::now();
        let schedule = match Schedule::new(&spec.schedule, spec.time_zone.as_deref()) {
            Ok(s) => s,
            Err((reason, why)) => {
                self.cluster
                    .event(events::about(&*cj, COMPONENT, true, reason, &why));
                return Ok(Action::Done);
            }
        };
        let ns = cj.namespace().unwrap_or_default();
        let uid = cj.uid().unwrap_or_default();
        let mut owned: Vec<Arc<Job>> = self
            .jobs
            .list_in(&ns)
            .into_iter()
            .filter(|j| pods::controlled_by(&j.metadata, &uid))
            .collect();
        owned.sort_by_key(|j| {
            j.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0)
        });
        let mut active: Vec<Arc<Job>> = owned
            .iter()
            .filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none())
            .cloned()
            .collect();
        // History limits.
        for (kind, limit) in [
            ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
            ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
        ] {
            let done: Vec<&Arc<Job>> = owned
                .iter()
                .filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none())
                .collect();
            let extra = done.len().saturating_sub(limit.max(0) as usize);
            for j in &done[..extra] {
                self.delete_job(j).await?;
            }
        }
        let last_successful = owned
            .iter()
            .filter(|j| finished(j) == Some("Complete"))
            .filter_map(|j| {
                j.status
                    .as_ref()?
                    .completion_time
                    .as_ref()
                    .map(|t| t.0.to_string())
            })
            .max();
        let status = cj.status.clone().unwrap_or_default();
        let after = status
            .last_schedule_time
            .as_ref()
            .map(|t| t.0.as_second())
            .or(cj
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()))
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or(now);
        let (due, _) = schedule.latest_missed(after, now);
        let mut last_schedule = status.last_schedule_time.as_ref().map(|t| t.0.to_string());
        if let Some(t) = due {
            let too_late = spec
                .starting_deadline_seconds
                .is_some_and(|d| (now - t).num_seconds() > d);
            let forbidden =
                spec.concurrency_policy.as_deref() == Some("Forbid") && !active.is_empty();
            if spec.suspend == Some(true) || forbidden {
                // Try again at the next tick.
            } else if too_late {
                self.cluster.event(events::about(
                    &*cj,
                    COMPONENT,
                    true,
                    "MissSchedule",
                    &format!("Missed scheduled time to start a job: {}", stamp(t)),
                ));
                last_schedule = Some(stamp(t));
            } else {
                if spec.concurrency_policy.as_deref() == Some("Replace") {
                    for j in active.drain(..) {
                        self.delete_job(&j).await?;
                        self.cluster.event(events::about(
                            &*cj,
                            COMPONENT,
                            false,
                            "SuccessfulDelete",
                            &format!("Deleted job {}", j.name_any()),
                        ));
                    }
                }
                let template = spec.job_template.clone();
                let mut meta = serde_json::to_value(&template.metadata).unwrap_or_default();
                if !meta.is_object() {
                    meta = json!({});
                }
                let name = format!("{}-{}", cj.name_any(), t.timestamp() / 60);
                meta["name"] = json!(name);
                meta["namespace"] = json!(ns);
                meta["ownerReferences"] = json!([pods::controller_ref(&*cj)]);
                meta["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"] =
                    json!(t.to_rfc3339());
                let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": template.spec});
                match api::create::<Job>(&*self.cluster, &job).await {
                    Ok(created) => {
                        self.cluster.event(events::about(
                            &*cj,
                            COMPONENT,
                            false,
                            "SuccessfulCreate",
                            &format!("Created job {name}"),
                        ));
                        active.push(Arc::new(created));
                    }
                    Err(e) if e.is_conflict() => {}
                    Err(e) => {
                        self.cluster.event(events::about(
                            &*cj,
                            COMPONENT,
                            true,
                            "FailedCreate",
                            &format!("Error creating job: {e}"),
                        ));
                        return Err(e);
                    }
                }
                last_schedule = Some(stamp(t));
            }
        }
        let refs: Vec<Value> = active
            .iter()
            .map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j.name_any(), "namespace": ns, "uid": j.uid()}))
            .collect();
        let next = json!({"active": if refs.is_empty() { Value::Null } else { json!(refs) }, "lastScheduleTime": last_schedule, "lastSuccessfulTime": last_successful});
        let old = serde_json::to_value(&status).unwrap_or_default();
        let same = |f: &str| {
            let strip_rv = |v: &Value| {
                v.as_array()
                    .map(|a| a.iter().map(|r| r["uid"].clone()).collect::<Vec<_>>())
            };
            if f == "active" {
                strip_rv(&old[f]) == strip_rv(&next[f])
            } else {
                old[f] == next[f]
            }
        };
        if !["active", "lastScheduleTime", "lastSuccessfulTime"]
            .iter()
            .all(|f| same(f))
        {
            let target = Target::of::<CronJob>(Some(&ns), &cj.name_any());
            self.cluster
                .merge_patch(&target, json!({"status": next}), true)
                .await?;
        }
        let wake = schedule
            .next_after(now)
            .map(|t| (t - now).to_std().unwrap_or_default() + Duration::from_millis(100))
            .unwrap_or(Duration::from_secs(60));
        Ok(Action::RequeueAfter(wake))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn schedules_and_missed_times() {
        let every5 = Schedule::new("*/5 * * * *", None).unwrap();
        let (latest, count) =
            every5.latest_missed(at("2024-01-01T00:00:00Z"), at("2024-01-01T00:17:00Z"));
        assert_eq!((latest, count), (Some(at("2024-01-01T00:15:00Z")), 3));
        assert_eq!(
            every5.latest_missed(at("2024-01-01T00:15:00Z"), at("2024-01-01T00:17:00Z")),
            (None, 0)
        );
        let every_minute = Schedule::new("* * * * *", None).unwrap();
        let (latest, _) =
            every_minute.latest_missed(at("2024-01-01T00:00:00Z"), at("2024-01-02T00:00:30Z"));
        assert_eq!(latest, Some(at("2024-01-02T00:00:00Z")));
    }

    #[test]
    fn a_time_zone_names_wall_clock_times_there() {
        // 09:00 in Berlin: 08:00 UTC in winter, 07:00 in summer.
        let nine = Schedule::new("0 9 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            nine.next_after(at("2024-01-10T00:00:00Z")),
            Some(at("2024-01-10T08:00:00Z"))
        );
        assert_eq!(
            nine.next_after(at("2024-07-10T00:00:00Z")),
            Some(at("2024-07-10T07:00:00Z"))
        );
        let (latest, count) =
            nine.latest_missed(at("2024-01-10T07:59:00Z"), at("2024-01-10T08:00:30Z"));
        assert_eq!((latest, count), (Some(at("2024-01-10T08:00:00Z")), 1));
        // 02:30 does not exist on the spring-forward day: it runs at 03:00.
        let gap = Schedule::new("30 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            gap.next_after(at("2024-03-31T00:00:00Z")),
            Some(at("2024-03-31T01:30:00Z"))
        );
        let unknown = Schedule::new("* * * * *", Some("Mars/Olympus"))
            .err()
            .unwrap();
        assert_eq!(unknown.0, "UnknownTimeZone");
    }

    #[tokio::test]
    async fn creates_a_job_for_a_due_time_unless_forbidden() {
        let fake = Arc::new(FakeCluster::default());
        let (mut cjs, mut jobs) = (Informer::default(), Informer::default());
        let c = CronJobController::new(&mut cjs, &mut jobs, fake.clone(), Queue::new());
        let two_minutes_ago = stamp(Utc::now() - chrono::Duration::minutes(2));
        cjs.apply(serde_json::from_value(json!({
            "metadata": {"name": "tick", "namespace": "d", "uid": "cj", "creationTimestamp": two_minutes_ago},
            "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                     "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}}},
        })).unwrap());
        c.reconcile("d/tick").await.unwrap();
        let created = fake.bodies("create");
        assert_eq!(created.len(), 1);
        assert_eq!(created[0]["metadata"]["ownerReferences"][0]["uid"], "cj");
        assert!(created[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("tick-"));
        // The job is still running: Forbid makes no second one.
        jobs.apply(serde_json::from_value(created[0].clone()).unwrap());
        let mut cj: CronJob = (*c.cronjobs.get("d/tick").unwrap()).clone();
        cj.metadata.creation_timestamp =
            serde_json::from_value(json!(stamp(Utc::now() - chrono::Duration::minutes(5))))
                .unwrap();
        cjs.apply(cj);
        fake.clear();
        c.reconcile("d/tick").await.unwrap();
        assert!(fake.made("create").is_empty());
    }
}
