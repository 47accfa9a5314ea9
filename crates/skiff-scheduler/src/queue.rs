//! The scheduling queue: pods waiting for a try (active), and pods that fit
//! nowhere until the cluster changes (unschedulable).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// The first back-off after a failed attempt, doubled each time.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A pod's `namespace/name`.
pub type Key = String;

#[derive(Default)]
pub struct Queue {
    active: VecDeque<Key>,
    queued: HashSet<Key>,
    unschedulable: HashSet<Key>,
    attempts: HashMap<Key, u32>,
}

impl Queue {
    /// Adds a pod to the active queue, once.
    pub fn push(&mut self, key: Key) {
        self.unschedulable.remove(&key);
        if self.queued.insert(key.clone()) {
            self.active.push_back(key);
        }
    }

    pub fn pop(&mut self) -> Option<Key> {
        let key = self.active.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    /// Parks a pod until an event that could make it fit.
    pub fn park(&mut self, key: Key) {
        if !self.queued.contains(&key) {
            self.unschedulable.insert(key);
        }
    }

    /// How long a pod whose attempt failed waits before the next one:
    /// 1 s, doubling up to 10 s, as upstream's back-off queue.
    pub fn back_off(&mut self, key: &str) -> Duration {
        let n = self.attempts.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        INITIAL_BACKOFF
            .saturating_mul(1 << (*n - 1).min(10))
            .min(MAX_BACKOFF)
    }

    /// Forgets a pod (bound or deleted).
    pub fn forget(&mut self, key: &str) {
        self.attempts.remove(key);
        self.unschedulable.remove(key);
        if self.queued.remove(key) {
            self.active.retain(|k| k != key);
        }
    }

    /// A node joined or changed, or a pod left: every parked pod gets
    /// another try.
    pub fn wake_all(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            self.push(key);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parked_pods_return_on_wake() {
        let mut q = Queue::default();
        q.push("a".into());
        q.push("a".into());
        q.push("b".into());
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.park("a".into());
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert!(q.pop().is_none());
        q.wake_all();
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.push("c".into());
        q.forget("c");
        assert!(q.is_empty());
        let waits: Vec<u64> = (0..6).map(|_| q.back_off("d").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        q.forget("d");
        assert_eq!(q.back_off("d").as_secs(), 1);
    }
}
