//! Compaction, as upstream's: at each tick the store forgets the history
//! older than the revision it had at the previous tick. The log then holds
//! one to two intervals of changes (a watcher resuming from further back
//! gets 410 and lists again, as from etcd), and a deleted or overwritten
//! object's bytes leave the disk.

use std::sync::Arc;
use std::time::Duration;

use skiff_store::{Error, Store};

/// Compacts `store` every `every`, for ever.
pub async fn run(store: Arc<dyn Store>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut previous = None;
    loop {
        tick.tick().await;
        if let Some(revision) = previous {
            match store.compact(revision).await {
                Ok(()) => tracing::debug!(revision, "store compacted"),
                // Another API server on the same etcd was first.
                Err(Error::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, revision, "compacting the store"),
            }
        }
        previous = store.current_revision().await.ok();
    }
}
