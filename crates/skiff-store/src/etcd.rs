//! The etcd backend, through the etcd-client crate. Revisions are etcd's own.

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, KeyValue as EtcdKv, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use futures::StreamExt;

use crate::{
    prefix_end, Error, Event, EventKind, KeyValue, ListOptions, ListPage, Result, Revision, Store,
    WatchStream,
};

/// A store kept in an etcd cluster.
pub struct Etcd {
    client: Client,
}

/// etcd's error code for a compacted revision (gRPC OutOfRange).
const COMPACTED: &str = "required revision has been compacted";

impl Etcd {
    /// Connects to the comma-separated `endpoints`
    /// (e.g. `http://127.0.0.1:2379`).
    pub async fn connect(endpoints: &str) -> Result<Self> {
        let endpoints: Vec<&str> = endpoints.split(',').map(str::trim).collect();
        let client = Client::connect(endpoints, None).await?;
        Ok(Self { client })
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    /// Gives the space compaction freed back to the file system (etcd's
    /// defragmentation, as `etcdctl defrag` does it, on the member this
    /// client reaches); the database's size before and after, in bytes.
    pub async fn defragment(&self) -> Result<(i64, i64)> {
        let mut client = self.client();
        let before = client.status().await?.db_size();
        client.defragment().await?;
        let after = client.status().await?.db_size();
        Ok((before, after))
    }

    /// The latest value of `key` from a transaction's `or_else` read.
    fn current(resp: &etcd_client::TxnResponse) -> Option<KeyValue> {
        resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(convert),
            _ => None,
        })
    }
}

/// etcd refuses an empty key; "\0" with range end "\0" means every key.
fn range_start(prefix: &str) -> String {
    if prefix.is_empty() {
        "\0".to_owned()
    } else {
        prefix.to_owned()
    }
}

fn convert(kv: &EtcdKv) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_rev: kv.create_revision(),
        mod_rev: kv.mod_revision(),
    }
}

fn header_rev(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| h.revision())
}

fn compacted(err: etcd_client::Error, requested: Revision) -> Error {
    if err.to_string().contains(COMPACTED) {
        Error::Compacted {
            requested,
            oldest: requested + 1,
        }
    } else if err.to_string().contains("future revision") {
        Error::FutureRevision {
            requested,
            latest: requested - 1,
        }
    } else {
        Error::Etcd(err)
    }
}

#[async_trait]
impl Store for Etcd {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let resp = self.client().kv_client().txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists { key: key.into() });
        }
        Ok(header_rev(resp.header()))
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self.client().get(key, None).await?;
        Ok(resp.kvs().first().map(convert))
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage> {
        let start = match &opts.start_after {
            Some(k) => format!("{k}\0"),
            None => range_start(prefix),
        };
        let mut get = GetOptions::new().with_range(prefix_end(prefix).unwrap_or_else(|| vec![0]));
        if opts.limit > 0 {
            get = get.with_limit(opts.limit as i64);
        }
        let requested = opts.revision.unwrap_or(0);
        if requested > 0 {
            get = get.with_revision(requested);
        }
        let resp = self
            .client()
            .get(start, Some(get))
            .await
            .map_err(|e| compacted(e, requested))?;
        Ok(ListPage {
            items: resp.kvs().iter().map(convert).collect(),
            revision: if requested > 0 {
                requested
            } else {
                header_rev(resp.header())
            },
            more: resp.more(),
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected: Revision) -> Result<Revision> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, expected)])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().kv_client().txn(txn).await?;
        if resp.succeeded() {
            return Ok(header_rev(resp.header()));
        }
        match Self::current(&resp) {
            None => Err(Error::NotFound { key: key.into() }),
            Some(kv) => Err(Error::Conflict {
                key: key.into(),
                expected,
                actual: kv.mod_rev,
            }),
        }
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue> {
        let condition = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([condition])
            .and_then([TxnOp::get(key, None), TxnOp::delete(key, None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.client().kv_client().txn(txn).await?;
        let current = Self::current(&resp);
        match (resp.succeeded(), current) {
            (true, Some(mut kv)) => {
                kv.mod_rev = header_rev(resp.header());
                Ok(kv)
            }
            (_, None) => Err(Error::NotFound { key: key.into() }),
            (false, Some(kv)) => Err(Error::Conflict {
                key: key.into(),
                expected: expected.unwrap_or_default(),
                actual: kv.mod_rev,
            }),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix).unwrap_or_else(|| vec![0]))
            .with_start_revision(after + 1)
            .with_prev_key();
        let mut stream = self.client().watch(range_start(prefix), Some(opts)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(resp) = stream.next().await {
                let resp = match resp {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.send(Err(compacted(e, after))).await;
                        return;
                    }
                };
                if resp.compact_revision() > 0 {
                    let _ = tx
                        .send(Err(Error::Compacted {
                            requested: after,
                            oldest: resp.compact_revision(),
                        }))
                        .await;
                    return;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let event = match ev.event_type() {
                        EventType::Put => Event {
                            kind: if kv.create_revision() == kv.mod_revision() {
                                EventKind::Created
                            } else {
                                EventKind::Updated
                            },
                            kv: convert(kv),
                            prev: ev.prev_kv().map(|p| Bytes::copy_from_slice(p.value())),
                        },
                        EventType::Delete => {
                            let Some(prev) = ev.prev_kv() else { continue };
                            let mut last = convert(prev);
                            last.mod_rev = kv.mod_revision();
                            Event {
                                kind: EventKind::Deleted,
                                kv: last,
                                prev: None,
                            }
                        }
                    };
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(crate::embedded::tokio_stream_from(rx))
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.client()
            .compact(revision, None)
            .await
            .map_err(|e| compacted(e, revision))?;
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision> {
        let resp = self
            .client()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await?;
        Ok(header_rev(resp.header()))
    }
}
