//! The cluster's memory: a key-value store with a cluster-wide revision.
//!
//! [`Store`] has the shape of upstream's `storage.Interface`: create, get,
//! list, watch from a revision, compare-and-swap update, delete and
//! compaction. Keys and values are opaque; the revision of the write that
//! last touched a key is that object's `resourceVersion`.
//!
//! Backends: [`Embedded`] (SQLite, one file, group commit) and [`Etcd`].
//! [`WatchCache`] wraps either and serves reads and watches from memory.

mod cache;
mod embedded;
mod error;
mod etcd;

pub use cache::{Figures, HistoryLimits, Index, Only, WatchCache};
pub use embedded::Embedded;
pub use error::{Error, Result};
pub use etcd::Etcd;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

/// A cluster-wide revision; every write makes a new one.
pub type Revision = i64;

/// One key with its value and the revisions that created and last modified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_rev: Revision,
    pub mod_rev: Revision,
}

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
}

/// One change. For a deletion `kv` holds the last value and `kv.mod_rev` is
/// the revision of the deletion. `prev` is the value before an update, where
/// the source knows it (the watch cache always does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub prev: Option<Bytes>,
}

/// A stream of events in revision order. It ends with `Err(Compacted)` when
/// the watcher fell too far behind to be served.
pub type WatchStream = BoxStream<'static, Result<Event>>;

/// How to list.
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// At most this many items; 0 means all.
    pub limit: usize,
    /// Only keys greater than this one (for continuation).
    pub start_after: Option<String>,
    /// Read at this past revision instead of the latest.
    pub revision: Option<Revision>,
}

/// One page of a list.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the page was read at.
    pub revision: Revision,
    /// Whether more items follow the last one.
    pub more: bool,
}

/// The storage interface every backend implements.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a new key; fails with `AlreadyExists` if it is present.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision>;
    /// Reads the latest value of a key.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;
    /// Reads a key from what the store has at hand, which may trail the
    /// latest write (upstream's `resourceVersion=0` reads).
    async fn get_any(&self, key: &str) -> Result<Option<KeyValue>> {
        self.get(key).await
    }
    /// Lists keys under a prefix, in key order.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage>;
    /// Lists every key under a prefix from what the store has at hand,
    /// which may trail the latest write (what admission reads policy
    /// objects with, as upstream's informers serve them).
    async fn list_any(&self, prefix: &str) -> Result<Vec<KeyValue>> {
        Ok(self.list(prefix, ListOptions::default()).await?.items)
    }
    /// Replaces a key's value if its `mod_rev` is still `expected`.
    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision>;
    /// Deletes a key, if its `mod_rev` is `expected` when given. Returns the
    /// deleted value, with `mod_rev` set to the revision of the deletion.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue>;
    /// Streams every change under a prefix made after revision `after`.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;
    /// [`Store::watch`] for a watch that wants only some of the objects
    /// under its prefix: a store may leave the others out. The caller
    /// still filters what it gets.
    async fn watch_only(&self, prefix: &str, after: Revision, only: &Only) -> Result<WatchStream> {
        let _ = only;
        self.watch(prefix, after).await
    }
    /// Forgets history up to and including `revision`.
    async fn compact(&self, revision: Revision) -> Result<()>;
    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision>;
    /// Whether this value, as read, should be written again even unchanged
    /// (it was encrypted with a key that is no longer the first).
    fn stale(&self, _kv: &KeyValue) -> bool {
        false
    }
}

/// The smallest key greater than every key starting with `prefix`; `None`
/// when no key is (the empty prefix).
pub(crate) fn prefix_end(prefix: &str) -> Option<Vec<u8>> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}
