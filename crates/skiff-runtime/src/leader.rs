//! Leader election through a `coordination.k8s.io` Lease, as upstream's
//! client-go does: the holder renews the lease; anyone may take it over once
//! it has not been renewed for its duration. Writes are compare-and-swap on
//! the lease's resourceVersion, so two candidates never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;
use tokio::sync::watch;

/// Timings of an election.
#[derive(Clone, Debug)]
pub struct Timing {
    /// How long a lease holds without renewal.
    pub lease: Duration,
    /// How often the holder renews and others retry.
    pub retry: Duration,
}

impl Default for Timing {
    /// Upstream's defaults: a 15 s lease, retried every 2 s.
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// Campaigns for the lease `namespace/name` as `identity` until the task is
/// dropped. The receiver tells whether this candidate leads now.
pub fn elect(
    client: Client,
    namespace: &str,
    name: &str,
    identity: String,
    timing: Timing,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client, namespace);
    let name = name.to_owned();
    // Upstream's renew deadline: two thirds of the lease.
    let deadline = timing.lease * 2 / 3;
    let task = tokio::spawn(async move {
        let mut renewed: Option<std::time::Instant> = None;
        loop {
            let leading = match try_acquire_or_renew(&leases, &name, &identity, &timing).await {
                Ok(true) => {
                    renewed = Some(std::time::Instant::now());
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::debug!(lease = %name, error = %e, "leader election attempt failed");
                    // A holder that cannot renew steps down before its
                    // lease runs out for everyone else.
                    *tx.borrow() && renewed.is_some_and(|t| t.elapsed() < deadline)
                }
            };
            if leading != *tx.borrow() {
                tracing::info!(lease = %name, %identity, leading, "leadership changed");
            }
            tx.send_replace(leading);
            tokio::time::sleep(timing.retry).await;
        }
    });
    (rx, task)
}

/// One round: returns whether `identity` holds the lease afterwards.
async fn try_acquire_or_renew(
    leases: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: &Timing,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = timing.lease.as_secs().max(1) as i32;
    let Some(current) = leases.get_opt(name).await? else {
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"holderIdentity": identity, "leaseDurationSeconds": seconds,
                     "acquireTime": now.to_string(), "renewTime": now.to_string(), "leaseTransitions": 0},
        }))
        .expect("a well-formed lease");
        return match leases.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    let duration =
        SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
    let expired = spec
        .renew_time
        .as_ref()
        .is_none_or(|t| t.0 + duration < now);
    if holder != identity && !holder.is_empty() && !expired {
        return Ok(false);
    }
    let mut next = current.clone();
    let s = next.spec.get_or_insert_with(Default::default);
    if holder != identity {
        s.holder_identity = Some(identity.to_owned());
        s.acquire_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            now,
        ));
        s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
    }
    s.lease_duration_seconds = Some(seconds);
    s.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        now,
    ));
    // The resourceVersion we read makes this a compare-and-swap.
    match leases.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// A unique identity for this process: host name and a random suffix.
pub fn identity(component: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "skiff".into());
    format!("{host}_{component}_{:08x}", rand::random::<u32>())
}
