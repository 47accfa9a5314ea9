//! Runs a reconciler: several workers take keys from its queue, one key at
//! a time each; failures come back with back-off.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::api::Error;
use super::queue::Queue;

/// What to do after a successful reconcile.
#[derive(Debug, PartialEq)]
pub enum Action {
    Done,
    /// Look again after this long, e.g. when a pod becomes available.
    RequeueAfter(Duration),
}

/// An idempotent step towards the desired state of the object at `key`.
/// It reads the caches, never the event that queued it.
#[async_trait]
pub trait Reconcile: Send + Sync + 'static {
    /// The name used in logs and events.
    fn name(&self) -> &'static str;
    async fn reconcile(&self, key: &str) -> Result<Action, Error>;
}

/// Runs `workers` workers on `queue` until the task is dropped.
pub async fn run<R: Reconcile>(reconciler: Arc<R>, queue: Arc<Queue>, workers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (r, q) = (reconciler.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let key = q.next().await;
                step(&*r, &q, key).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// Reconciles one key and settles it in the queue.
pub async fn step<R: Reconcile>(r: &R, queue: &Arc<Queue>, key: String) {
    let started = std::time::Instant::now();
    let result = r.reconcile(&key).await;
    queue.worked(started.elapsed());
    match result {
        Ok(action) => {
            queue.forget(&key);
            if let Action::RequeueAfter(d) = action {
                queue.add_after(key.clone(), d);
            }
        }
        Err(e) => {
            if e.is_conflict() {
                tracing::debug!(controller = r.name(), %key, error = %e, "conflict; retrying");
            } else {
                tracing::warn!(controller = r.name(), %key, error = %e, "reconcile failed");
            }
            queue.retry(&key);
        }
    }
    queue.done(&key);
}
