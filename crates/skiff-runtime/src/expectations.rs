//! Expectations, as upstream's controllers keep them: after a controller
//! creates or deletes pods it waits to see those changes in its cache before
//! acting on the same owner again, so a stale cache never makes duplicates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Expectations older than this are given up on, as upstream does.
const TTL: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Pending {
    adds: i64,
    dels: i64,
    since: Instant,
}

/// Outstanding creations and deletions per owner key.
#[derive(Default)]
pub struct Expectations {
    map: Mutex<HashMap<String, Pending>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the cache has caught up with everything `key` asked for.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(p) => (p.adds <= 0 && p.dels <= 0) || p.since.elapsed() > TTL,
        }
    }

    /// Records that `adds` creations and `dels` deletions are under way.
    pub fn expect(&self, key: &str, adds: usize, dels: usize) {
        self.lock().insert(
            key.to_owned(),
            Pending {
                adds: adds as i64,
                dels: dels as i64,
                since: Instant::now(),
            },
        );
    }

    pub fn creation_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.adds -= 1;
        }
    }

    pub fn deletion_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.dels -= 1;
        }
    }

    /// Forgets `key`, e.g. once its owner is gone.
    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_every_change_is_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect("ns/rs", 2, 1);
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.deletion_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));
    }
}
