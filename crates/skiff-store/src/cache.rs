//! The watch cache: the whole keyspace kept in memory, fed by one watch on
//! the backend, with a window of recent events. Lists and watches are served
//! from here; writes go straight through to the backend. A read waits until
//! the cache has caught up with the backend's latest revision, so a client
//! always reads its own writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::{watch, RwLock};

use crate::{
    Error, Event, EventKind, KeyValue, ListOptions, ListPage, Result, Revision, Store, WatchStream,
};

/// A [`Store`] that serves reads and watches from memory.
pub struct WatchCache {
    inner: Arc<dyn Store>,
    state: Arc<RwLock<State>>,
    /// The revision the cache has applied up to.
    applied: watch::Receiver<Revision>,
    watchers: Arc<Watchers>,
    /// How many events a watcher may fall behind before it is dropped.
    backlog: usize,
}

/// A field that the watches of one resource can ask for by value, as
/// upstream's watch cache indexes pods by node: an event is then read
/// once, not once per watch (a node agent watches only its own pods).
#[derive(Clone, Copy, Debug)]
pub struct Index {
    /// The resource's key prefix (`/registry/core/pods/`).
    pub resource: &'static str,
    /// The field's value in an object's stored bytes: `""` when unset,
    /// `None` when it cannot tell (every watch then gets the event).
    pub value: fn(&[u8]) -> Option<String>,
}

/// The open watches, by the resource their prefix lies in (`""` for a
/// prefix wider than one resource), so that an event wakes only the
/// watches that may want it.
type Watchers = Mutex<HashMap<String, Vec<Watcher>>>;

/// What one watch wants of the objects under its prefix (see
/// [`Store::watch_only`]).
#[derive(Clone, Debug, Default)]
pub struct Only {
    /// The object of this name (a node agent's watch of its Node).
    pub name: Option<String>,
    /// The objects whose [`Index`]ed field is, or was, this value.
    pub indexed: Option<String>,
    /// Raised to the revision of each event of its resource the watch is
    /// not handed, after the events it was handed before. Read before the
    /// watch finds nothing more to read, it is a revision a bookmark may
    /// carry.
    pub progress: Option<Arc<AtomicI64>>,
}

/// One open watch, fed by the cache.
struct Watcher {
    prefix: String,
    only: Only,
    tx: mpsc::Sender<Arc<Event>>,
    /// Set when the watch fell `backlog` events behind and was dropped.
    lagged: Arc<AtomicBool>,
}

/// How much history the cache keeps for watchers resuming from a past
/// revision: at most this many events, and at most this many bytes of
/// values, so that a storm of large updates shortens it (watchers resuming
/// from before it re-list) rather than growing memory by the size of every
/// version.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    pub events: usize,
    pub bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            events: 100_000,
            bytes: 64 << 20,
        }
    }
}

struct State {
    items: BTreeMap<String, KeyValue>,
    history: VecDeque<Arc<Event>>,
    /// The bytes of the values in `history` (each version once: an
    /// event's previous value is the event before's value).
    history_bytes: usize,
    /// Events after this revision are all in `history`.
    history_start: Revision,
    /// The events of `history` again, by the resource their key lies in:
    /// a watch of a quiet resource resumes from before the whole history
    /// starts, as long as none of that resource's events left it.
    by_resource: HashMap<String, Recent>,
    /// The revision the cache was loaded at: a resource with no events
    /// since has all of them (none).
    loaded: Revision,
    revision: Revision,
    limits: HistoryLimits,
}

/// One resource's recent events: all of those after `start`.
struct Recent {
    start: Revision,
    events: VecDeque<Arc<Event>>,
}

impl State {
    fn apply(&mut self, mut event: Event) -> Arc<Event> {
        let prev = match event.kind {
            EventKind::Deleted => self.items.remove(&event.kv.key),
            _ => self.items.insert(event.kv.key.clone(), event.kv.clone()),
        };
        if event.kind == EventKind::Updated {
            event.prev = prev.map(|kv| kv.value);
        }
        self.revision = event.kv.mod_rev;
        let event = Arc::new(event);
        self.history_bytes += event.kv.value.len();
        self.history.push_back(event.clone());
        if let Some(resource) = resource_prefix(&event.kv.key) {
            let recent = match self.by_resource.get_mut(resource) {
                Some(recent) => recent,
                None => self
                    .by_resource
                    .entry(resource.to_owned())
                    .or_insert_with(|| Recent {
                        start: self.loaded,
                        events: VecDeque::new(),
                    }),
            };
            recent.events.push_back(event.clone());
        }
        while self.history.len() > self.limits.events
            || (self.history_bytes > self.limits.bytes && self.history.len() > 1)
        {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= old.kv.value.len();
            self.history_start = old.kv.mod_rev;
            let resource = resource_prefix(&old.kv.key);
            if let Some(recent) = resource.and_then(|r| self.by_resource.get_mut(r)) {
                // The oldest of its resource's too: both are in revision order.
                recent.events.pop_front();
                recent.start = old.kv.mod_rev;
            }
        }
        event
    }

    /// The events kept for watches of `prefix`, and the revision after
    /// which they are all there.
    fn recent(&self, prefix: &str) -> (Revision, Option<&VecDeque<Arc<Event>>>) {
        let Some(resource) = resource_prefix(prefix) else {
            return (self.history_start, Some(&self.history));
        };
        match self.by_resource.get(resource) {
            Some(recent) => (recent.start, Some(&recent.events)),
            None => (self.loaded, None),
        }
    }
}

/// What the cache holds now, for metrics.
#[derive(Debug, Default, PartialEq)]
pub struct Figures {
    /// Objects by resource (`pods`, `deployments.apps`).
    pub objects: BTreeMap<String, u64>,
    /// Events kept for watchers that resume, and their bytes.
    pub events: usize,
    pub event_bytes: usize,
    /// Open watches by resource; `*` for those wider than one.
    pub watches: BTreeMap<String, u64>,
}

/// The part of a storage key (or key prefix) that names its resource:
/// `/registry/core/pods/` for `/registry/core/pods/d/p`.
fn resource_prefix(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("/registry/")?;
    let group = rest.find('/')?;
    let plural = rest[group + 1..].find('/')?;
    Some(&key[.."/registry/".len() + group + 1 + plural + 1])
}

/// Hands `event` to the watches of `bucket` whose prefix it falls under
/// and that want its object: by name, or by a value of `index` it has or
/// had. Drops the watches that closed or fell too far behind.
fn feed(bucket: Option<&mut Vec<Watcher>>, event: &Arc<Event>, index: Option<&Index>) {
    let Some(watchers) = bucket else {
        return;
    };
    // Read once for all the watches, and only if one asked.
    let mut values = None;
    let mut wanted = |want: &str| {
        let Some(index) = index else {
            return true;
        };
        let (now, before) = values.get_or_insert_with(|| {
            let before = event.prev.as_ref().map(|prev| (index.value)(prev));
            ((index.value)(&event.kv.value), before)
        });
        let has = |v: &Option<String>| v.as_deref().is_none_or(|v| v == want);
        has(now) || before.as_ref().is_some_and(has)
    };
    let name = event.kv.key.rsplit('/').next();
    watchers.retain(|w| {
        let skip = !event.kv.key.starts_with(&w.prefix)
            || w.only.name.as_deref().is_some_and(|n| Some(n) != name)
            || w.only.indexed.as_deref().is_some_and(|want| !wanted(want));
        if skip {
            if let Some(progress) = &w.only.progress {
                progress.fetch_max(event.kv.mod_rev, Ordering::AcqRel);
            }
            return !w.tx.is_closed();
        }
        match w.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                w.lagged.store(true, Ordering::Release);
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    });
}

/// The resource a storage key belongs to: `/registry/core/pods/…` is
/// `pods`, `/registry/apps/deployments/…` is `deployments.apps`.
fn resource_of(key: &str) -> Option<String> {
    let named = resource_prefix(key)?.strip_prefix("/registry/")?;
    let (group, plural) = named.trim_end_matches('/').split_once('/')?;
    Some(if group == "core" {
        plural.to_owned()
    } else {
        format!("{plural}.{group}")
    })
}

impl WatchCache {
    /// What the cache holds now; none while a write holds it.
    pub fn figures(&self) -> Option<Figures> {
        let state = self.state.try_read().ok()?;
        let mut objects = BTreeMap::new();
        for key in state.items.keys() {
            if let Some(resource) = resource_of(key) {
                *objects.entry(resource).or_default() += 1;
            }
        }
        let mut watches = BTreeMap::new();
        for (bucket, open) in self.watchers.lock().expect("watchers lock").iter() {
            let open = open.iter().filter(|w| !w.tx.is_closed()).count() as u64;
            if open > 0 {
                let resource = resource_of(bucket).unwrap_or_else(|| "*".into());
                *watches.entry(resource).or_default() += open;
            }
        }
        Some(Figures {
            objects,
            events: state.history.len(),
            event_bytes: state.history_bytes,
            watches,
        })
    }

    /// Loads the backend's whole keyspace and follows its changes, keeping
    /// the history `limits` allow for watchers that resume.
    pub async fn new(
        inner: Arc<dyn Store>,
        limits: HistoryLimits,
        indexes: &[Index],
    ) -> Result<Arc<Self>> {
        let (items, revision) = load(inner.as_ref()).await?;
        let limits = HistoryLimits {
            events: limits.events.max(1),
            ..limits
        };
        let state = Arc::new(RwLock::new(State {
            items,
            history: VecDeque::with_capacity(limits.events.min(4096)),
            history_bytes: 0,
            history_start: revision,
            by_resource: HashMap::new(),
            loaded: revision,
            revision,
            limits,
        }));
        let (applied_tx, applied) = watch::channel(revision);
        let watchers = Arc::new(Watchers::default());
        let cache = Arc::new(Self {
            inner: inner.clone(),
            state: state.clone(),
            applied,
            watchers: watchers.clone(),
            backlog: limits.events.clamp(16, 1 << 16),
        });
        let (following_tx, mut following) = watch::channel(false);
        tokio::spawn(follow(
            inner,
            state,
            applied_tx,
            watchers,
            indexes.to_vec(),
            following_tx,
        ));
        // Ready once it follows the backend: a compaction made before then
        // would otherwise make it reload and forget the history it holds.
        let _ = tokio::time::timeout(FOLLOW_DEADLINE, following.wait_for(|f| *f)).await;
        Ok(cache)
    }

    /// Waits until the cache has applied the backend's latest revision.
    async fn sync(&self) -> Result<()> {
        let latest = self.inner.current_revision().await?;
        let mut applied = self.applied.clone();
        applied
            .wait_for(|rev| *rev >= latest)
            .await
            .map_err(|_| Error::Closed)?;
        Ok(())
    }

    /// A watch of `prefix` after `after`, of the objects `only` names.
    async fn watch_for(&self, prefix: &str, after: Revision, only: Only) -> Result<WatchStream> {
        let st = loop {
            let st = self.state.read().await;
            if after <= st.revision {
                break st;
            }
            drop(st);
            // A revision the cache has not seen yet: wait for it.
            let mut applied = self.applied.clone();
            let _ = applied.wait_for(|rev| *rev >= after).await;
        };
        let (start, recent) = st.recent(prefix);
        if after < start {
            return Err(Error::Compacted {
                requested: after,
                oldest: start,
            });
        }
        let replay: Vec<Arc<Event>> = recent
            .into_iter()
            .flatten()
            .filter(|e| e.kv.mod_rev > after && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(self.backlog);
        let lagged = Arc::new(AtomicBool::new(false));
        let watcher = Watcher {
            prefix: prefix.to_owned(),
            only,
            tx,
            lagged: lagged.clone(),
        };
        let bucket = resource_prefix(prefix).unwrap_or_default();
        let mut open = self.watchers.lock().expect("watchers lock");
        open.entry(bucket.to_owned()).or_default().push(watcher);
        drop(open);
        drop(st);
        let last = replay.last().map_or(after, |e| e.kv.mod_rev);
        let live = futures::stream::unfold(Some((rx, lagged, last)), |state| async move {
            let (mut rx, lagged, last) = state?;
            match rx.recv().await {
                Some(e) => {
                    let rev = e.kv.mod_rev;
                    Some((Ok(Event::clone(&e)), Some((rx, lagged, rev))))
                }
                // Dropped for falling behind: the client lists again.
                None if lagged.load(Ordering::Acquire) => {
                    let behind = Error::Compacted {
                        requested: last,
                        oldest: last + 1,
                    };
                    Some((Err(behind), None))
                }
                None => None,
            }
        });
        let replay = futures::stream::iter(replay).map(|e| Ok(Event::clone(&e)));
        Ok(replay.chain(live).boxed())
    }
}

async fn load(store: &dyn Store) -> Result<(BTreeMap<String, KeyValue>, Revision)> {
    let mut items = BTreeMap::new();
    let mut opts = ListOptions {
        limit: 10_000,
        ..Default::default()
    };
    loop {
        let page = store.list("", opts.clone()).await?;
        opts.revision = Some(page.revision);
        opts.start_after = page.items.last().map(|kv| kv.key.clone());
        items.extend(page.items.into_iter().map(|kv| (kv.key.clone(), kv)));
        if !page.more {
            return Ok((items, page.revision));
        }
    }
}

/// How long a new cache waits for its backend watch before it serves.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(5);

/// Applies the backend's events to the cache, forever. On a broken or
/// compacted backend watch it reloads the whole state. `following` turns
/// true once the first backend watch is open.
async fn follow(
    inner: Arc<dyn Store>,
    state: Arc<RwLock<State>>,
    applied: watch::Sender<Revision>,
    watchers: Arc<Watchers>,
    indexes: Vec<Index>,
    following: watch::Sender<bool>,
) {
    loop {
        let from = state.read().await.revision;
        let mut stream = match inner.watch("", from).await {
            Ok(s) => {
                following.send_replace(true);
                s
            }
            Err(Error::Compacted { .. }) => {
                reload(inner.as_ref(), &state, &applied, &watchers).await;
                continue;
            }
            Err(Error::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "watch cache: backend watch failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(next) = stream.next().await {
            match next {
                Ok(event) => {
                    let rev = event.kv.mod_rev;
                    let mut st = state.write().await;
                    if rev <= st.revision {
                        continue;
                    }
                    let event = st.apply(event);
                    // Handed out under the lock, so a watch that registers
                    // while holding the read lock sees no gap and no repeat.
                    let mut open = watchers.lock().expect("watchers lock");
                    if let Some(resource) = resource_prefix(&event.kv.key) {
                        let index = indexes.iter().find(|i| i.resource == resource);
                        feed(open.get_mut(resource), &event, index);
                    }
                    feed(open.get_mut(""), &event, None);
                    drop(open);
                    drop(st);
                    applied.send_replace(rev);
                }
                Err(Error::Compacted { .. }) => {
                    reload(inner.as_ref(), &state, &applied, &watchers).await;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watch cache: backend watch broke; resuming");
                    break;
                }
            }
        }
        if applied.is_closed() {
            return;
        }
    }
}

/// Loads the backend's whole state again, after a gap in its events. The
/// open watches missed that gap: each gets what it was handed, then
/// `Compacted`, so its client lists again.
async fn reload(
    inner: &dyn Store,
    state: &RwLock<State>,
    applied: &watch::Sender<Revision>,
    watchers: &Watchers,
) {
    match load(inner).await {
        Ok((items, revision)) => {
            let mut st = state.write().await;
            let open = std::mem::take(&mut *watchers.lock().expect("watchers lock"));
            for w in open.into_values().flatten() {
                w.lagged.store(true, Ordering::Release);
            }
            st.items = items;
            st.history.clear();
            st.history_bytes = 0;
            st.history_start = revision;
            st.by_resource.clear();
            st.loaded = revision;
            st.revision = revision;
            drop(st);
            applied.send_replace(revision);
        }
        Err(e) => {
            tracing::warn!(error = %e, "watch cache: reload failed");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait]
impl Store for WatchCache {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        self.inner.create(key, value).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.sync().await?;
        Ok(self.state.read().await.items.get(key).cloned())
    }

    async fn get_any(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.state.read().await.items.get(key).cloned())
    }

    async fn list_any(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        let st = self.state.read().await;
        let start = std::ops::Bound::Included(prefix.to_owned());
        Ok(st
            .items
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect())
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage> {
        if opts.revision.is_some_and(|r| r > 0) {
            // A continuation at a past revision: the backend keeps history.
            return self.inner.list(prefix, opts).await;
        }
        self.sync().await?;
        let st = self.state.read().await;
        let start = match &opts.start_after {
            Some(k) => std::ops::Bound::Excluded(k.clone()),
            None => std::ops::Bound::Included(prefix.to_owned()),
        };
        let limit = if opts.limit == 0 {
            usize::MAX
        } else {
            opts.limit
        };
        let mut iter = st
            .items
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone());
        let items: Vec<KeyValue> = iter.by_ref().take(limit).collect();
        let more = iter.next().is_some();
        Ok(ListPage {
            items,
            revision: st.revision,
            more,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        self.inner.update(key, value, expected).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        self.inner.delete(key, expected).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        self.watch_for(prefix, after, Only::default()).await
    }

    async fn watch_only(&self, prefix: &str, after: Revision, only: &Only) -> Result<WatchStream> {
        self.watch_for(prefix, after, only.clone()).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision> {
        self.inner.current_revision().await
    }

    fn stale(&self, kv: &KeyValue) -> bool {
        self.inner.stale(kv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_resource() {
        assert_eq!(
            resource_of("/registry/core/pods/d/p").as_deref(),
            Some("pods")
        );
        assert_eq!(
            resource_of("/registry/apps/deployments/d/x").as_deref(),
            Some("deployments.apps")
        );
        assert_eq!(resource_of("/other/key"), None);
    }

    #[test]
    fn keys_and_prefixes_name_their_resource_prefix() {
        let pods = Some("/registry/core/pods/");
        assert_eq!(resource_prefix("/registry/core/pods/d/p"), pods);
        assert_eq!(resource_prefix("/registry/core/pods/d/"), pods);
        assert_eq!(resource_prefix("/registry/core/pods/"), pods);
        // Wider than one resource: fed every event.
        assert_eq!(resource_prefix("/registry/core/pods"), None);
        assert_eq!(resource_prefix("/registry/"), None);
        assert_eq!(resource_prefix(""), None);
    }

    #[test]
    fn history_is_bounded_by_count_and_by_bytes() {
        let mut st = State {
            items: BTreeMap::new(),
            history: VecDeque::new(),
            history_bytes: 0,
            history_start: 0,
            by_resource: HashMap::new(),
            loaded: 0,
            revision: 0,
            limits: HistoryLimits {
                events: 100,
                bytes: 16 << 20,
            },
        };
        let put = |st: &mut State, rev: Revision, size: usize| {
            st.apply(Event {
                kind: EventKind::Updated,
                kv: KeyValue {
                    key: "/registry/configmaps/d/big".into(),
                    value: Bytes::from(vec![b'x'; size]),
                    create_rev: 1,
                    mod_rev: rev,
                },
                prev: None,
            });
        };
        for rev in 1..=200 {
            put(&mut st, rev, 10);
        }
        assert_eq!(st.history.len(), 100);
        assert_eq!(st.history_start, 100);
        // 2 MiB versions: the history keeps what fits in its bytes.
        for rev in 201..=300 {
            put(&mut st, rev, 2 << 20);
        }
        assert!(st.history_bytes <= 16 << 20, "{}", st.history_bytes);
        assert_eq!(st.history.len(), 8);
        assert_eq!(st.history_start, 300 - st.history.len() as Revision);
        let counted: usize = st.history.iter().map(|e| e.kv.value.len()).sum();
        assert_eq!(counted, st.history_bytes);
    }
}
