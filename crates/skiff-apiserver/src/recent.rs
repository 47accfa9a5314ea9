//! Objects this server wrote lately, kept decoded. The read of a
//! read-modify-write that soon follows (a pod's binding, then its first
//! status) takes the object written at the revision it finds, instead of
//! decoding the stored bytes again.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashlink::LinkedHashMap;
use serde_json::Value;
use skiff_store::Revision;

/// What the kept objects may add up to, counted as their stored JSON: a
/// few hundred pods (decoded, an object takes about 15 times its JSON).
const BUDGET: usize = 1 << 20;

/// How long a kept object waits for its read: the write that follows
/// another comes within milliseconds, and an idle server keeps nothing.
pub const FRESH: Duration = Duration::from_secs(1);

/// The oldest goes first when the budget is spent or it is no longer
/// fresh.
#[derive(Default)]
pub struct Recent(Mutex<Kept>);

#[derive(Default)]
struct Kept {
    objects: LinkedHashMap<String, Entry>,
    bytes: usize,
}

struct Entry {
    kept_at: Instant,
    revision: Revision,
    size: usize,
    obj: Value,
}

impl Recent {
    /// Keeps `obj`, which the write of `revision` stored at `key` as
    /// `size` bytes of JSON.
    pub fn keep(&self, key: String, revision: Revision, size: usize, obj: Value) {
        if size > BUDGET / 64 {
            return;
        }
        // What goes out is dropped after the lock is let go.
        let mut gone = Vec::new();
        {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let entry = Entry {
                kept_at: Instant::now(),
                revision,
                size,
                obj,
            };
            if let Some(old) = kept.objects.insert(key, entry) {
                kept.bytes -= old.size;
                gone.push(old);
            }
            kept.bytes += size;
            while kept.bytes > BUDGET {
                let Some((_, oldest)) = kept.objects.pop_front() else {
                    break;
                };
                kept.bytes -= oldest.size;
                gone.push(oldest);
            }
        }
        drop(gone);
    }

    /// Lets go of the objects kept longer than [`FRESH`] before `now`.
    pub fn expire(&self, now: Instant) {
        let mut gone = Vec::new();
        {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            while kept
                .objects
                .front()
                .is_some_and(|(_, e)| now.duration_since(e.kept_at) > FRESH)
            {
                if let Some((_, old)) = kept.objects.pop_front() {
                    kept.bytes -= old.size;
                    gone.push(old);
                }
            }
        }
        drop(gone);
    }

    /// The object at `key` as the write of `revision` left it, if kept. An
    /// object kept at another revision is out of date and goes.
    pub fn take(&self, key: &str, revision: Revision) -> Option<Value> {
        let entry = {
            let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let entry = kept.objects.remove(key)?;
            kept.bytes -= entry.size;
            entry
        };
        (entry.revision == revision).then_some(entry.obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_is_taken_once_and_only_at_the_revision_written() {
        let recent = Recent::default();
        recent.keep("/pods/a".into(), 7, 10, json!({"n": 1}));
        assert_eq!(recent.take("/pods/a", 8), None);
        // Out of date, so it went.
        assert_eq!(recent.take("/pods/a", 7), None);
        recent.keep("/pods/a".into(), 9, 10, json!({"n": 2}));
        assert_eq!(recent.take("/pods/a", 9), Some(json!({"n": 2})));
        assert_eq!(recent.take("/pods/a", 9), None);
    }

    #[test]
    fn the_oldest_go_when_the_budget_is_spent_or_they_are_stale() {
        let recent = Recent::default();
        let size = BUDGET / 64;
        for i in 0..65 {
            recent.keep(format!("/pods/{i}"), i, size, json!(i));
        }
        assert_eq!(recent.take("/pods/0", 0), None);
        assert_eq!(recent.take("/pods/1", 1), Some(json!(1)));
        assert_eq!(recent.take("/pods/64", 64), Some(json!(64)));
        recent.expire(Instant::now());
        assert_eq!(recent.take("/pods/2", 2), Some(json!(2)));
        recent.expire(Instant::now() + FRESH * 2);
        assert_eq!(recent.take("/pods/3", 3), None);
        // Too big to keep at all.
        recent.keep("/big".into(), 1, BUDGET / 64 + 1, json!("big"));
        assert_eq!(recent.take("/big", 1), None);
    }
}
