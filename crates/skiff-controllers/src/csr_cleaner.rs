//! The CSR cleaner, as upstream's: certificate signing requests do not
//! pile up. One issued, denied or failed goes an hour after that
//! happened; one still pending after a day goes too. Each request is
//! looked at again when its time comes, rather than on a periodic sweep.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::ResourceExt;

use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

/// How long a request is kept once issued, denied or failed.
const DECIDED_FOR: SignedDuration = SignedDuration::from_hours(1);
/// How long a request may wait for a decision.
const PENDING_FOR: SignedDuration = SignedDuration::from_hours(24);

/// The time now; a test's clock is set by hand.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct CsrCleaner {
    requests: Arc<Cache<CertificateSigningRequest>>,
    cluster: Arc<dyn Cluster>,
    clock: Clock,
}

impl CsrCleaner {
    pub fn new(
        requests: &mut Informer<CertificateSigningRequest>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        Self::with_clock(requests, cluster, queue, Arc::new(Timestamp::now))
    }

    pub fn with_clock(
        requests: &mut Informer<CertificateSigningRequest>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
        clock: Clock,
    ) -> Self {
        crate::owned::queue_self(requests, queue);
        Self {
            requests: requests.cache(),
            cluster,
            clock,
        }
    }
}

/// When a request is to go: an hour after it was issued (approved, with
/// a certificate), denied or failed; a day after it was made while no
/// decision came.
fn deadline(csr: &CertificateSigningRequest) -> Option<Timestamp> {
    let status = csr.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    let issued = status.and_then(|s| s.certificate.as_ref()).is_some();
    let created = csr.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let decided = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
            .map(|c| c.last_update_time.as_ref().map(|t| t.0).or(created))
    };
    let after = |at: Option<Timestamp>, wait| at.and_then(|at| at.checked_add(wait).ok());
    let ends = [
        decided("Approved").filter(|_| issued),
        decided("Denied"),
        decided("Failed"),
    ];
    match ends.into_iter().flatten().min() {
        Some(decided) => after(decided, DECIDED_FOR),
        None if decided("Approved").is_some() => None,
        None => after(created, PENDING_FOR),
    }
}

#[async_trait]
impl Reconcile for CsrCleaner {
    fn name(&self) -> &'static str {
        "csrcleaner"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let Some(csr) = self.requests.get(name) else {
            return Ok(Action::Done);
        };
        let Some(due) = deadline(&csr) else {
            return Ok(Action::Done);
        };
        let now = (self.clock)();
        if due > now {
            let left = Duration::try_from(due.duration_since(now)).unwrap_or_default();
            return Ok(Action::RequeueAfter(left.max(Duration::from_secs(1))));
        }
        let how = Deletion {
            uid: csr.uid(),
            ..Default::default()
        };
        let target = Target::of::<CertificateSigningRequest>(None, name);
        match self.cluster.delete(&target, how).await {
            Err(e) if !e.is_not_found() && !e.is_conflict() => Err(e),
            _ => Ok(Action::Done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use skiff_runtime::fake::FakeCluster;

    fn csr(created: &str, certificate: bool, conditions: Value) -> CertificateSigningRequest {
        let mut status = json!({"conditions": conditions});
        if certificate {
            status["certificate"] = json!("Y2VydA==");
        }
        serde_json::from_value(json!({
            "metadata": {"name": "r", "uid": "u", "creationTimestamp": created},
            "spec": {"request": "", "signerName": "example.com/s", "usages": []},
            "status": status}))
        .unwrap()
    }

    fn cleaner(
        now: &'static str,
        request: CertificateSigningRequest,
    ) -> (CsrCleaner, Arc<FakeCluster>) {
        let fake = Arc::new(FakeCluster::default());
        let mut requests = Informer::default();
        let clock: Clock = Arc::new(move || now.parse().unwrap());
        let c = CsrCleaner::with_clock(&mut requests, fake.clone(), Queue::new(), clock);
        requests.apply(request);
        (c, fake)
    }

    fn approved(at: &str) -> Value {
        json!([{"type": "Approved", "status": "True", "lastUpdateTime": at}])
    }

    #[tokio::test]
    async fn issued_requests_go_an_hour_after_approval() {
        let issued = csr(
            "2026-01-01T00:00:00Z",
            true,
            approved("2026-01-01T00:10:00Z"),
        );
        let (c, fake) = cleaner("2026-01-01T00:40:00Z", issued.clone());
        let action = c.reconcile("r").await.unwrap();
        assert_eq!(action, Action::RequeueAfter(Duration::from_secs(30 * 60)));
        assert!(fake.made("delete").is_empty());
        let (c, fake) = cleaner("2026-01-01T01:10:00Z", issued);
        assert_eq!(c.reconcile("r").await.unwrap(), Action::Done);
        assert_eq!(fake.made("delete").len(), 1);
        // Approved but not issued yet: the signer's to finish.
        let waiting = csr(
            "2026-01-01T00:00:00Z",
            false,
            approved("2026-01-01T00:10:00Z"),
        );
        let (c, fake) = cleaner("2026-01-03T00:00:00Z", waiting);
        assert_eq!(c.reconcile("r").await.unwrap(), Action::Done);
        assert!(fake.made("delete").is_empty());
    }

    #[tokio::test]
    async fn denied_and_failed_requests_go_after_an_hour_pending_ones_after_a_day() {
        let denied =
            json!([{"type": "Denied", "status": "True", "lastUpdateTime": "2026-01-01T00:00:00Z"}]);
        let (c, fake) = cleaner(
            "2026-01-01T01:00:01Z",
            csr("2026-01-01T00:00:00Z", false, denied),
        );
        c.reconcile("r").await.unwrap();
        assert_eq!(fake.made("delete").len(), 1);
        let failed = json!([{"type": "Approved", "status": "True"},
            {"type": "Failed", "status": "True", "lastUpdateTime": "2026-01-01T00:30:00Z"}]);
        let (c, _) = cleaner(
            "2026-01-01T01:00:00Z",
            csr("2026-01-01T00:00:00Z", false, failed),
        );
        let action = c.reconcile("r").await.unwrap();
        assert_eq!(action, Action::RequeueAfter(Duration::from_secs(30 * 60)));
        let pending = csr("2026-01-01T00:00:00Z", false, json!([]));
        let (c, fake) = cleaner("2026-01-01T23:00:00Z", pending.clone());
        let action = c.reconcile("r").await.unwrap();
        assert_eq!(action, Action::RequeueAfter(Duration::from_secs(3600)));
        assert!(fake.made("delete").is_empty());
        let (c, fake) = cleaner("2026-01-02T00:00:00Z", pending);
        c.reconcile("r").await.unwrap();
        assert_eq!(fake.made("delete").len(), 1);
    }
}
