//! The scheduling queue: pods waiting for a try (active), and pods that fit
//! nowhere until the cluster changes (unschedulable).

use std::collections::{HashSet, VecDeque};

/// A pod's `namespace/name`.
pub type Key = String;

#[derive(Default)]
pub struct Queue {
    active: VecDeque<Key>,
    queued: HashSet<Key>,
    unschedulable: HashSet<Key>,
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

    /// Forgets a pod (bound or deleted).
    pub fn forget(&mut self, key: &str) {
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
    }
}
