//! A key queue as upstream's workqueue: a key is queued at most once, is
//! never handed to two workers at once, and failed keys come back after an
//! exponentially growing delay.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::metrics::Instruments;

/// The first retry delay; it doubles per failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Default)]
struct State {
    queue: VecDeque<String>,
    /// Keys waiting in `queue` or to be queued when their worker is done.
    dirty: HashSet<String>,
    processing: HashSet<String>,
    failures: HashMap<String, u32>,
    /// When each key in `queue` was queued, for the metrics.
    since: HashMap<String, Instant>,
}

/// A deduplicating, rate-limited queue of object keys.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    ready: Notify,
    metrics: OnceLock<Instruments>,
}

impl Queue {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports this queue's metrics under `name` from now on.
    pub fn instrument(&self, instruments: Instruments) {
        let _ = self.metrics.set(instruments);
    }

    /// Queues `key` unless it is queued already.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.lock();
        if !s.dirty.insert(key.clone()) {
            return;
        }
        if let Some(m) = self.metrics.get() {
            m.adds.inc();
        }
        if !s.processing.contains(&key) {
            self.push(&mut s, key);
            drop(s);
            self.ready.notify_one();
        }
    }

    fn push(&self, s: &mut State, key: String) {
        if let Some(m) = self.metrics.get() {
            s.since.insert(key.clone(), Instant::now());
            m.depth.set(s.queue.len() as i64 + 1);
        }
        s.queue.push_back(key);
    }

    /// Records that `key` took `took` to reconcile.
    pub fn worked(&self, took: Duration) {
        if let Some(m) = self.metrics.get() {
            m.worked(took);
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(key);
            }
        });
    }

    /// Queues `key` again after its failure back-off.
    pub fn retry(self: &Arc<Self>, key: &str) {
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_owned()).or_default();
            *n += 1;
            *n
        };
        if let Some(m) = self.metrics.get() {
            m.retries.inc();
        }
        let delay = BASE_BACKOFF
            .saturating_mul(1 << (failures - 1).min(20))
            .min(MAX_BACKOFF);
        self.add_after(key, delay);
    }

    /// Resets `key`'s back-off after a success.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// Takes the next key without waiting, marking it in progress.
    pub fn try_next(&self) -> Option<String> {
        let mut s = self.lock();
        let key = s.queue.pop_front()?;
        if let Some(m) = self.metrics.get() {
            m.depth.set(s.queue.len() as i64);
            if let Some(since) = s.since.remove(&key) {
                m.waited(since.elapsed());
            }
        }
        s.dirty.remove(&key);
        s.processing.insert(key.clone());
        Some(key)
    }

    /// Waits for the next key and marks it in progress.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.ready.notified();
            if let Some(key) = self.try_next() {
                return key;
            }
            notified.await;
        }
    }

    /// Ends work on `key`; if it was queued meanwhile, it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains(key) {
            self.push(&mut s, key.to_owned());
            drop(s);
            self.ready.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deduplicates_and_never_hands_out_a_key_twice() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let a = q.try_next().unwrap();
        assert_eq!(a, "a");
        q.add("a");
        assert_eq!(q.try_next().as_deref(), Some("b"));
        assert_eq!(q.try_next(), None, "a is in progress");
        q.done("a");
        assert_eq!(q.try_next().as_deref(), Some("a"));
    }
}
