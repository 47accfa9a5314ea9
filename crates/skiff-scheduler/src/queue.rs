//! The scheduling queue: pods waiting for a try (active, highest priority
//! first, then oldest, as upstream's PrioritySort), and pods that fit
//! nowhere until the cluster changes (unschedulable).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::Duration;

/// The first back-off after a failed attempt, doubled each time.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// The longest back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A pod's `namespace/name`.
pub type Key = String;

#[derive(Default)]
pub struct Queue {
    active: BinaryHeap<(i32, Reverse<u64>, Key)>,
    /// Keys in `active`, with the sequence number of their live entry
    /// (entries of forgotten keys stay in the heap until popped).
    queued: HashMap<Key, u64>,
    priorities: HashMap<Key, i32>,
    unschedulable: HashSet<Key>,
    attempts: HashMap<Key, u32>,
    seq: u64,
}

impl Queue {
    /// Adds a pod to the active queue, once.
    pub fn push(&mut self, key: Key, priority: i32) {
        self.unschedulable.remove(&key);
        self.priorities.insert(key.clone(), priority);
        if !self.queued.contains_key(&key) {
            self.seq += 1;
            self.queued.insert(key.clone(), self.seq);
            self.active.push((priority, Reverse(self.seq), key));
        }
    }

    pub fn pop(&mut self) -> Option<Key> {
        while let Some((_, Reverse(seq), key)) = self.active.pop() {
            if self.queued.get(&key) == Some(&seq) {
                self.queued.remove(&key);
                return Some(key);
            }
        }
        None
    }

    /// Parks a pod until an event that could make it fit.
    pub fn park(&mut self, key: Key) {
        if !self.queued.contains_key(&key) {
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
        self.queued.remove(key);
        self.priorities.remove(key);
    }

    /// A node joined or changed, or a pod left: every parked pod gets
    /// another try.
    pub fn wake_all(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            let priority = self.priorities.get(&key).copied().unwrap_or(0);
            self.push(key, priority);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// How many pods are active and how many parked.
    pub fn sizes(&self) -> (usize, usize) {
        (self.queued.len(), self.unschedulable.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_priority_first_then_oldest() {
        let mut q = Queue::default();
        q.push("low".into(), 0);
        q.push("high".into(), 1000);
        q.push("low2".into(), 0);
        q.push("high2".into(), 1000);
        q.forget("low");
        let order: Vec<Key> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, ["high", "high2", "low2"]);
    }

    #[test]
    fn parked_pods_return_on_wake() {
        let mut q = Queue::default();
        q.push("a".into(), 0);
        q.push("a".into(), 0);
        q.push("b".into(), 0);
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.park("a".into());
        assert_eq!(q.pop().as_deref(), Some("b"));
        assert!(q.pop().is_none());
        q.wake_all();
        assert_eq!(q.pop().as_deref(), Some("a"));
        q.push("c".into(), 0);
        q.forget("c");
        assert!(q.is_empty());
        let waits: Vec<u64> = (0..6).map(|_| q.back_off("d").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        q.forget("d");
        assert_eq!(q.back_off("d").as_secs(), 1);
    }
}
