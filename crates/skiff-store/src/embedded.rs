//! The embedded backend: one SQLite file holding a log of every write, in the
//! manner of an MVCC key-value store. A row is one revision of one key; the
//! latest row of a key is its value, or a tombstone. Writes go through one
//! writer thread that commits whole batches in one transaction (group commit)
//! and acknowledges each write only after the commit is durable.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{broadcast, oneshot};

use crate::{
    prefix_end, Error, Event, EventKind, KeyValue, ListOptions, ListPage, Result, Revision, Store,
    WatchStream,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log (key, rev);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    Compact {
        revision: Revision,
    },
}

struct Request {
    op: Op,
    reply: oneshot::Sender<Result<Option<Event>>>,
}

/// The SQLite-backed store.
pub struct Embedded {
    path: PathBuf,
    writer: mpsc::Sender<Request>,
    reader: Arc<Mutex<Connection>>,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

fn sqlite(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn open(path: &Path) -> Result<Connection> {
    // Only its owner reads the database (it holds Secrets); SQLite gives
    // the WAL file the database's mode.
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |source| Error::Io {
        path: path.display().to_string(),
        source,
    };
    // Only a new file is opened here: closing a descriptor of a file this
    // process has locked would drop the lock.
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        _ => {}
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    // unix-excl: the process holds one lock on the file, so no other
    // process opens it, a transaction takes no file lock of its own, and
    // the WAL index lives in memory.
    let conn = Connection::open_with_flags_and_vfs(path, OpenFlags::default(), c"unix-excl")
        .map_err(sqlite(path))?;
    // Pages freed by compaction go back to the file system. This takes
    // only on a new file, before WAL mode and the first table; an older
    // file keeps its free pages for reuse.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy) => Error::InUse {
                path: path.display().to_string(),
            },
            _ => sqlite(path)(e),
        })?;
    // secure_delete: the bytes of removed rows (a compacted Secret) are
    // overwritten, not left in free pages.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; PRAGMA secure_delete = ON;",
    )
    .map_err(sqlite(path))?;
    Ok(conn)
}

impl Embedded {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let conn = open(&path)?;
        conn.execute_batch(SCHEMA).map_err(sqlite(&path))?;
        let meta = |name: &str| -> Result<i64> {
            conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map(|v| v.unwrap_or(0))
            .map_err(sqlite(&path))
        };
        let last_logged: i64 = conn
            .query_row("SELECT COALESCE(MAX(rev), 0) FROM log", [], |r| r.get(0))
            .map_err(sqlite(&path))?;
        let revision = Arc::new(AtomicI64::new(meta("revision")?.max(last_logged)));
        let compacted = Arc::new(AtomicI64::new(meta("compacted")?));
        let (events, _) = broadcast::channel(1024);
        let (writer, requests) = mpsc::channel();
        let mut w = Writer {
            conn,
            path: path.clone(),
            revision: revision.clone(),
            compacted: compacted.clone(),
            events: events.clone(),
        };
        std::thread::Builder::new()
            .name("skiff-store-writer".into())
            .spawn(move || w.run(requests))
            .expect("spawn the store writer thread");
        Ok(Self {
            reader: Arc::new(Mutex::new(open(&path)?)),
            path,
            writer,
            revision,
            compacted,
            events,
        })
    }

    async fn submit(&self, op: Op) -> Result<Option<Event>> {
        let (reply, done) = oneshot::channel();
        self.writer
            .send(Request { op, reply })
            .map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        let reader = self.reader.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = reader.lock().unwrap_or_else(|e| e.into_inner());
            f(&conn).map_err(|source| Error::Sqlite {
                path: path.display().to_string(),
                source,
            })
        })
        .await
        .map_err(|_| Error::Closed)?
    }

    fn check_revision(&self, revision: Revision) -> Result<()> {
        let oldest = self.compacted.load(Ordering::Acquire);
        if revision < oldest {
            return Err(Error::Compacted {
                requested: revision,
                oldest,
            });
        }
        let latest = self.revision.load(Ordering::Acquire);
        if revision > latest {
            return Err(Error::FutureRevision {
                requested: revision,
                latest,
            });
        }
        Ok(())
    }
}

/// The exclusive upper bound of keys under `prefix`, as a BLOB that sorts
/// after every key when the prefix is empty.
fn key_end(prefix: &str) -> Vec<u8> {
    prefix_end(prefix).unwrap_or_else(|| vec![0xff; 64])
}

fn row_event(row: &rusqlite::Row) -> rusqlite::Result<Event> {
    let key: Vec<u8> = row.get(0)?;
    let deleted: bool = row.get(3)?;
    let kv = KeyValue {
        key: String::from_utf8_lossy(&key).into_owned(),
        value: Bytes::from(row.get::<_, Vec<u8>>(4)?),
        create_rev: row.get(2)?,
        mod_rev: row.get(1)?,
    };
    let kind = if deleted {
        EventKind::Deleted
    } else if kv.create_rev == kv.mod_rev {
        EventKind::Created
    } else {
        EventKind::Updated
    };
    Ok(Event {
        kind,
        kv,
        prev: None,
    })
}

/// The latest row of `key` at or before `at`, tombstones included.
fn latest(conn: &Connection, key: &str, at: Revision) -> rusqlite::Result<Option<Event>> {
    conn.prepare_cached(
        "SELECT key, rev, create_rev, deleted, value FROM log
         WHERE key = ?1 AND rev <= ?2 ORDER BY rev DESC LIMIT 1",
    )?
    .query_row(params![key.as_bytes(), at], row_event)
    .optional()
}

fn live(conn: &Connection, key: &str, at: Revision) -> rusqlite::Result<Option<KeyValue>> {
    Ok(latest(conn, key, at)?
        .filter(|e| e.kind != EventKind::Deleted)
        .map(|e| e.kv))
}

/// The latest revision of a live `key` and the revision that created it,
/// without reading its value: what a create or an update checks.
fn live_revisions(conn: &Connection, key: &str) -> rusqlite::Result<Option<(Revision, Revision)>> {
    let row = conn
        .prepare_cached(
            "SELECT rev, create_rev, deleted FROM log WHERE key = ?1 ORDER BY rev DESC LIMIT 1",
        )?
        .query_row([key.as_bytes()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, bool>(2)?))
        })
        .optional()?;
    Ok(row.and_then(|(rev, create_rev, deleted)| (!deleted).then_some((rev, create_rev))))
}

#[async_trait]
impl Store for Embedded {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let key = key.to_owned();
        let event = self.submit(Op::Create { key, value }).await?;
        Ok(event.map_or(0, |e| e.kv.mod_rev))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let key = key.to_owned();
        let at = self.revision.load(Ordering::Acquire);
        self.read(move |conn| live(conn, &key, at)).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage> {
        let revision = match opts.revision {
            Some(r) if r > 0 => {
                self.check_revision(r)?;
                r
            }
            _ => self.revision.load(Ordering::Acquire),
        };
        let start = match &opts.start_after {
            Some(k) => {
                let mut k = k.as_bytes().to_vec();
                k.push(0);
                k
            }
            None => prefix.as_bytes().to_vec(),
        };
        let end = key_end(prefix);
        let limit = if opts.limit == 0 {
            i64::MAX
        } else {
            opts.limit as i64 + 1
        };
        let mut items = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT l.key, l.rev, l.create_rev, l.deleted, l.value FROM log l
                     JOIN (SELECT key, MAX(rev) AS rev FROM log
                           WHERE key >= ?1 AND key < ?2 AND rev <= ?3 GROUP BY key) m
                       ON l.rev = m.rev
                     WHERE l.deleted = 0 ORDER BY l.key LIMIT ?4",
                )?;
                let rows = stmt.query_map(params![start, end, revision, limit], row_event)?;
                rows.map(|r| r.map(|e| e.kv))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let more = opts.limit > 0 && items.len() > opts.limit;
        items.truncate(if more { opts.limit } else { items.len() });
        Ok(ListPage {
            items,
            revision,
            more,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let key = key.to_owned();
        let event = self
            .submit(Op::Update {
                key,
                value,
                expected,
            })
            .await?;
        Ok(event.map_or(0, |e| e.kv.mod_rev))
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let key = key.to_owned();
        let event = self.submit(Op::Delete { key, expected }).await?;
        event.map(|e| e.kv).ok_or(Error::Closed)
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        // Subscribe before reading history so that nothing falls between.
        let mut live_events = self.events.subscribe();
        let oldest = self.compacted.load(Ordering::Acquire);
        if after < oldest {
            return Err(Error::Compacted {
                requested: after,
                oldest,
            });
        }
        let (start, end) = (prefix.as_bytes().to_vec(), key_end(prefix));
        let history = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT key, rev, create_rev, deleted, value FROM log
                     WHERE rev > ?1 AND key >= ?2 AND key < ?3 ORDER BY rev",
                )?;
                let rows = stmt.query_map(params![after, start, end], row_event)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .await?;
        let mut last = history.last().map_or(after, |e| e.kv.mod_rev);
        let prefix = prefix.to_owned();
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            for e in history {
                if tx.send(Ok(e)).await.is_err() {
                    return;
                }
            }
            loop {
                let next = tokio::select! {
                    next = live_events.recv() => next,
                    // The watcher went away: stop rather than wait for a write.
                    _ = tx.closed() => return,
                };
                let batch = match next {
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx
                            .send(Err(Error::Compacted {
                                requested: last,
                                oldest: last + 1,
                            }))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                for e in batch.iter() {
                    if e.kv.mod_rev > last && e.kv.key.starts_with(&prefix) {
                        last = e.kv.mod_rev;
                        if tx.send(Ok(e.clone())).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(tokio_stream_from(rx))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.check_revision(revision)?;
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }

    async fn current_revision(&self) -> Result<Revision> {
        Ok(self.revision.load(Ordering::Acquire))
    }
}

pub(crate) fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> futures::stream::BoxStream<'static, T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// Owns the writing connection; commits batches of writes.
struct Writer {
    conn: Connection,
    path: PathBuf,
    revision: Arc<AtomicI64>,
    compacted: Arc<AtomicI64>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
}

impl Writer {
    fn run(&mut self, requests: mpsc::Receiver<Request>) {
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit(batch);
        }
    }

    fn commit(&mut self, batch: Vec<Request>) {
        let mut rev = self.revision.load(Ordering::Acquire);
        let started = std::time::Instant::now();
        let size = batch.len();

        let outcome = (|| -> rusqlite::Result<Vec<Result<Option<Event>>>> {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut results = Vec::with_capacity(batch.len());
            for req in &batch {
                results.push(apply(&tx, &req.op, &mut rev, &self.compacted)?);
            }
            tx.commit()?;
            Ok(results)
        })();
        tracing::trace!(size, elapsed = ?started.elapsed(), "store batch committed");
        match outcome {
            Ok(results) => {
                self.revision.store(rev, Ordering::Release);
                let events: Vec<Event> = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok().and_then(|e| e.clone()))
                    .collect();
                if !events.is_empty() {
                    let _ = self.events.send(Arc::new(events));
                }
                let compacted = batch.iter().any(|r| matches!(r.op, Op::Compact { .. }));
                if compacted {
                    self.reclaim();
                }
                for (req, result) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(result);
                }
            }
            Err(source) => {
                tracing::error!(error = %source, "store batch failed; rolled back");
                for req in batch {
                    let _ = req.reply.send(Err(Error::Sqlite {
                        path: self.path.display().to_string(),
                        source: rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
                            Some(source.to_string()),
                        ),
                    }));
                }
            }
        }
    }
}

impl Writer {
    /// After a compaction: free pages back to the file system and the WAL
    /// (which still holds the removed rows' pages) checkpointed and
    /// truncated.
    fn reclaim(&self) {
        // Each step of `incremental_vacuum` frees one page.
        let reclaimed = (|| {
            let mut vacuum = self.conn.prepare("PRAGMA incremental_vacuum")?;
            let mut pages = vacuum.query([])?;
            while pages.next()?.is_some() {}
            self.conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        })();
        if let Err(e) = reclaimed {
            tracing::warn!(error = %e, "reclaiming space after compaction");
        }
    }
}

/// Applies one write inside the batch transaction. The outer error aborts
/// the whole batch; the inner one is this write's own refusal.
fn apply(
    tx: &Connection,
    op: &Op,
    rev: &mut Revision,
    compacted: &AtomicI64,
) -> rusqlite::Result<Result<Option<Event>>> {
    let mut insert =
        |key: &str, create_rev: Option<Revision>, deleted: bool, value: &Bytes| {
            *rev += 1;
            let create_rev = create_rev.unwrap_or(*rev);
            tx.prepare_cached(
            "INSERT INTO log (rev, key, create_rev, deleted, value) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![*rev, key.as_bytes(), create_rev, deleted, value.as_ref()])?;
            let kind = match (deleted, create_rev == *rev) {
                (true, _) => EventKind::Deleted,
                (false, true) => EventKind::Created,
                (false, false) => EventKind::Updated,
            };
            Ok::<_, rusqlite::Error>(Some(Event {
                kind,
                kv: KeyValue {
                    key: key.to_owned(),
                    value: value.clone(),
                    create_rev,
                    mod_rev: *rev,
                },
                prev: None,
            }))
        };
    Ok(match op {
        Op::Create { key, value } => match live_revisions(tx, key)? {
            Some(_) => Err(Error::AlreadyExists { key: key.clone() }),
            None => Ok(insert(key, None, false, value)?),
        },
        Op::Update {
            key,
            value,
            expected,
        } => match live_revisions(tx, key)? {
            None => Err(Error::NotFound { key: key.clone() }),
            Some((mod_rev, _)) if mod_rev != *expected => Err(Error::Conflict {
                key: key.clone(),
                expected: *expected,
                actual: mod_rev,
            }),
            Some((_, create_rev)) => Ok(insert(key, Some(create_rev), false, value)?),
        },
        Op::Delete { key, expected } => match live(tx, key, Revision::MAX)? {
            None => Err(Error::NotFound { key: key.clone() }),
            Some(kv) if expected.is_some_and(|e| e != kv.mod_rev) => Err(Error::Conflict {
                key: key.clone(),
                expected: expected.unwrap_or_default(),
                actual: kv.mod_rev,
            }),
            Some(kv) => Ok(insert(key, Some(kv.create_rev), true, &kv.value)?),
        },
        Op::Compact { revision } => {
            // Drop every row superseded at `revision`, and tombstones.
            tx.execute(
                "DELETE FROM log WHERE rev <= ?1 AND (deleted = 1 OR rev < (
                    SELECT MAX(l2.rev) FROM log l2 WHERE l2.key = log.key AND l2.rev <= ?1))",
                [revision],
            )?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('compacted', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                [revision],
            )?;
            // Tombstones are gone now, so the log's last row may no longer
            // carry the latest revision: keep it here.
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('revision', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
                [*rev],
            )?;
            compacted.fetch_max(*revision, Ordering::AcqRel);
            Ok(None)
        }
    })
}
