//! One conformance suite, run against every backend: the embedded store, etcd
//! (a real `etcd` process started here), and the watch cache over each.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use skiff_store::{
    Embedded, Error, Etcd, EventKind, HistoryLimits, Index, ListOptions, Only, Store, WatchCache,
};

struct Backend {
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
    _etcd: Option<skiff_testkit::etcd::Etcd>,
}

async fn embedded() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Embedded::open(dir.path().join("state.db")).unwrap());
    Backend {
        store,
        _dir: dir,
        _etcd: None,
    }
}

/// A new etcd, and a client of it once it answers.
async fn etcd_parts() -> (Etcd, skiff_testkit::etcd::Etcd, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let process = skiff_testkit::etcd::Etcd::start(dir.path()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        if let Ok(s) = Etcd::connect(&process.url).await {
            if s.current_revision().await.is_ok() {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    (store, process, dir)
}

async fn etcd() -> Backend {
    let (store, process, dir) = etcd_parts().await;
    Backend {
        store: Arc::new(store),
        _dir: dir,
        _etcd: Some(process),
    }
}

/// What compaction frees in etcd's file, defragmentation gives back; the
/// data stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_defragment_gives_back_what_compaction_freed() {
    let (store, _process, _dir) = etcd_parts().await;
    let value = Bytes::from(vec![b'x'; 64 * 1024]);
    for i in 0..200 {
        store
            .create(&format!("/d/{i}"), value.clone())
            .await
            .unwrap();
    }
    for i in 1..200 {
        store.delete(&format!("/d/{i}"), None).await.unwrap();
    }
    store
        .compact(store.current_revision().await.unwrap())
        .await
        .unwrap();
    let (before, after) = store.defragment().await.unwrap();
    assert!(after < before / 2, "{before} bytes became {after}");
    assert_eq!(store.get("/d/0").await.unwrap().unwrap().value, value);
}

/// A watch cache over `backend` that keeps `events` events of history.
async fn cache_over(backend: &Backend, events: usize) -> Arc<WatchCache> {
    let limits = HistoryLimits {
        events,
        ..Default::default()
    };
    WatchCache::new(backend.store.clone(), limits, &[])
        .await
        .unwrap()
}

async fn cached(backend: Backend) -> Backend {
    let store = cache_over(&backend, 1000).await;
    Backend { store, ..backend }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn create_get_update_delete(s: &dyn Store) {
    let r1 = s.create("/t/a", b("1")).await.unwrap();
    assert!(matches!(
        s.create("/t/a", b("x")).await,
        Err(Error::AlreadyExists { .. })
    ));
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((kv.value, kv.create_rev, kv.mod_rev), (b("1"), r1, r1));
    let r2 = s.update("/t/a", b("2"), r1).await.unwrap();
    assert!(r2 > r1);
    assert!(matches!(
        s.update("/t/a", b("3"), r1).await,
        Err(Error::Conflict { .. })
    ));
    assert!(matches!(
        s.update("/t/nope", b("3"), r1).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.delete("/t/a", Some(r1)).await,
        Err(Error::Conflict { .. })
    ));
    let gone = s.delete("/t/a", Some(r2)).await.unwrap();
    assert_eq!(gone.value, b("2"));
    assert!(gone.mod_rev > r2);
    assert_eq!(s.get("/t/a").await.unwrap(), None);
    assert!(matches!(
        s.delete("/t/a", None).await,
        Err(Error::NotFound { .. })
    ));
    assert!(s.current_revision().await.unwrap() >= gone.mod_rev);
    // A deleted key takes no update, and a create starts it anew; its
    // updates keep the revision that created it.
    assert!(matches!(
        s.update("/t/a", b("3"), gone.mod_rev).await,
        Err(Error::NotFound { .. })
    ));
    let r3 = s.create("/t/a", b("3")).await.unwrap();
    assert!(r3 > gone.mod_rev);
    let r4 = s.update("/t/a", b("4"), r3).await.unwrap();
    let kv = s.get("/t/a").await.unwrap().unwrap();
    assert_eq!((kv.value, kv.create_rev, kv.mod_rev), (b("4"), r3, r4));
}

async fn list_pages(s: &dyn Store) {
    for i in 0..25 {
        s.create(&format!("/l/k{i:02}"), b(&i.to_string()))
            .await
            .unwrap();
    }
    s.create("/lz/other", b("x")).await.unwrap();
    let all = s.list("/l/", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), 25);
    assert!(!all.more);
    let mut seen = Vec::new();
    let mut opts = ListOptions {
        limit: 10,
        ..Default::default()
    };
    loop {
        let page = s.list("/l/", opts.clone()).await.unwrap();
        // A change between pages is not seen: pages read at one revision.
        if seen.is_empty() {
            s.update("/l/k20", b("changed"), all.items[20].mod_rev)
                .await
                .unwrap();
        }
        seen.extend(
            page.items
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone())),
        );
        opts.revision = Some(page.revision);
        opts.start_after = page.items.last().map(|kv| kv.key.clone());
        if !page.more {
            break;
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen[20], ("/l/k20".to_string(), b("20")));
    let fresh = s.list("/l/", ListOptions::default()).await.unwrap();
    assert_eq!(fresh.items[20].value, b("changed"));
}

async fn watch_from_revision(s: &dyn Store) {
    let r1 = s.create("/w/a", b("1")).await.unwrap();
    let r2 = s.update("/w/a", b("2"), r1).await.unwrap();
    s.create("/other/x", b("x")).await.unwrap();
    let mut w = s.watch("/w/", r1).await.unwrap();
    let r3 = s.delete("/w/a", None).await.unwrap().mod_rev;
    let r4 = s.create("/w/b", b("b")).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("event in time")
            .unwrap()
            .unwrap();
        got.push((e.kind, e.kv.key, e.kv.value, e.kv.mod_rev));
    }
    assert_eq!(
        got,
        vec![
            (EventKind::Updated, "/w/a".into(), b("2"), r2),
            (EventKind::Deleted, "/w/a".into(), b("2"), r3),
            (EventKind::Created, "/w/b".into(), b("b"), r4),
        ]
    );
}

async fn compaction(s: &dyn Store) {
    let r1 = s.create("/c/a", b("1")).await.unwrap();
    let r2 = s.update("/c/a", b("2"), r1).await.unwrap();
    let r3 = s.create("/c/b", b("b")).await.unwrap();
    s.compact(r2).await.unwrap();
    let old = s
        .list(
            "/c/",
            ListOptions {
                revision: Some(r1),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(old, Err(Error::Compacted { .. })), "{old:?}");
    let at = s
        .list(
            "/c/",
            ListOptions {
                revision: Some(r3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at.items.len(), 2);
    assert_eq!(at.items[0].value, b("2"));
    let mut w = s.watch("/c/", r2).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.kv.mod_rev, r3);
}

/// The cache forgets history past its window; too-old resumes are refused.
async fn watch_too_old_is_gone(s: &dyn Store) {
    let first = s.create("/g/0", b("0")).await.unwrap();
    for i in 1..1100 {
        s.create(&format!("/g/{i}"), b("x")).await.unwrap();
    }
    s.compact(first + 5).await.unwrap();
    // A backend may refuse at once or end the stream with the error.
    let refused = match s.watch("/g/", first).await {
        Err(e) => e,
        Ok(mut w) => tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("an answer in time")
            .expect("an item")
            .expect_err("an error, not an event"),
    };
    assert!(matches!(refused, Error::Compacted { .. }), "{refused:?}");
}

/// Eight writers each add one ten times by compare-and-swap, reading again
/// after every conflict: no increment is lost.
async fn concurrent_compare_and_swap(s: Arc<dyn Store>) {
    s.create("/n/counter", b("0")).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let cur = s.get("/n/counter").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match s
                        .update("/n/counter", b(&(n + 1).to_string()), cur.mod_rev)
                        .await
                    {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.get("/n/counter").await.unwrap().unwrap().value, b("80"));
}

macro_rules! suite {
    ($name:ident, $make:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn create_get_update_delete() {
                let be = $make.await;
                super::create_get_update_delete(be.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn list_pages() {
                let be = $make.await;
                super::list_pages(be.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_from_revision() {
                let be = $make.await;
                super::watch_from_revision(be.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn compaction() {
                let be = $make.await;
                super::compaction(be.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn watch_too_old_is_gone() {
                let be = $make.await;
                super::watch_too_old_is_gone(be.store.as_ref()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_compare_and_swap() {
                let be = $make.await;
                super::concurrent_compare_and_swap(be.store.clone()).await;
            }
        }
    };
}

suite!(embedded_store, embedded());
suite!(etcd_store, etcd());
suite!(cached_embedded, async { cached(embedded().await).await });
suite!(cached_etcd, async { cached(etcd().await).await });

/// A cache over a store that already holds data starts with all of it.
async fn cache_loads_existing_state(backend: Backend) {
    backend.store.create("/e/a", b("1")).await.unwrap();
    let rev = backend.store.create("/e/b", b("2")).await.unwrap();
    let cache = cache_over(&backend, 100).await;
    assert_eq!(
        cache
            .list("", ListOptions::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(cache.get("/e/a").await.unwrap().unwrap().value, b("1"));
    let mut w = cache.watch("/e/", rev).await.unwrap();
    cache.create("/e/c", b("3")).await.unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.kv.key, "/e/c");
    assert!(
        matches!(
            cache.watch("/e/", rev - 1).await,
            Err(Error::Compacted { .. })
        ),
        "older than the load"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_loads_existing_embedded_state() {
    cache_loads_existing_state(embedded().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_loads_existing_etcd_state() {
    cache_loads_existing_state(etcd().await).await;
}

/// The keys of the next `n` events of `w`.
async fn next_keys(w: &mut skiff_store::WatchStream, n: usize) -> Vec<String> {
    let mut keys = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("an event");
        keys.push(e.kv.key);
    }
    keys
}

/// The cache hands each watch the events under its prefix, whatever the
/// other watches name; a watch that falls too far behind gets what it was
/// handed and then `Compacted`, so its client lists again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_feeds_each_watch_its_prefix_and_ends_one_left_behind() {
    let backend = embedded().await;
    let cache = cache_over(&backend, 16).await;
    let from = cache.current_revision().await.unwrap();
    let mut pods = cache.watch("/registry/core/pods/", from).await.unwrap();
    let mut in_a = cache.watch("/registry/core/pods/a/", from).await.unwrap();
    let mut maps = cache
        .watch("/registry/core/configmaps/", from)
        .await
        .unwrap();
    let mut all = cache.watch("/registry/", from).await.unwrap();
    let mut keys = cache.watch("", from).await.unwrap();
    for key in ["/registry/core/pods/a/p", "/registry/core/pods/b/q"] {
        cache.create(key, b("p")).await.unwrap();
    }
    cache
        .create("/registry/core/configmaps/a/m", b("m"))
        .await
        .unwrap();
    cache.create("/other/k", b("k")).await.unwrap();
    let (p, q, m) = (
        "/registry/core/pods/a/p",
        "/registry/core/pods/b/q",
        "/registry/core/configmaps/a/m",
    );
    assert_eq!(next_keys(&mut pods, 2).await, [p, q]);
    assert_eq!(next_keys(&mut in_a, 1).await, [p]);
    assert_eq!(next_keys(&mut maps, 1).await, [m]);
    assert_eq!(next_keys(&mut all, 3).await, [p, q, m]);
    assert_eq!(next_keys(&mut keys, 4).await, [p, q, m, "/other/k"]);
    // Each event is handed out before the next is applied: had the pod
    // watches been handed the ConfigMap, it would be waiting now.
    assert!(pods.next().now_or_never().is_none());
    assert!(in_a.next().now_or_never().is_none());
    assert!(all.next().now_or_never().is_none());
    drop((pods, in_a, maps, all, keys));

    let from = cache.current_revision().await.unwrap();
    let mut behind = cache.watch("/registry/core/secrets/", from).await.unwrap();
    let mut last = from;
    for i in 0..=16 {
        last = cache
            .create(&format!("/registry/core/secrets/a/s{i}"), b("s"))
            .await
            .unwrap();
    }
    // Wait until the cache applied the last one, so the watch was dropped.
    cache.get("/registry/core/secrets/a/s16").await.unwrap();
    assert_eq!(next_keys(&mut behind, 16).await.len(), 16);
    match behind.next().await {
        Some(Err(Error::Compacted { requested, .. })) => assert_eq!(requested, last - 1),
        other => panic!("expected Compacted, got {other:?}"),
    }
    assert!(behind.next().await.is_none());
}

/// A watch that asks for one object by name, or for one value of its
/// resource's index, gets only the events of the objects that have or
/// had it, and those the index cannot read; the others' watches get
/// every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_hands_a_watch_only_the_objects_it_asked_for() {
    let backend = embedded().await;
    // A value `on:<node>` is on that node, `-` on none; others unreadable.
    let node = |v: &[u8]| match std::str::from_utf8(v).ok()? {
        "-" => Some(String::new()),
        v => v.strip_prefix("on:").map(str::to_owned),
    };
    let pods = Index {
        resource: "/registry/core/pods/",
        value: node,
    };
    let cache = WatchCache::new(backend.store.clone(), HistoryLimits::default(), &[pods])
        .await
        .unwrap();
    let from = cache.current_revision().await.unwrap();
    let prefix = "/registry/core/pods/";
    let only = |name: Option<&str>, node: Option<&str>| Only {
        name: name.map(str::to_owned),
        indexed: node.map(str::to_owned),
        progress: None,
    };
    let progress = Arc::new(AtomicI64::new(from));
    let watch = |only: Only| {
        let cache = cache.clone();
        async move { cache.watch_only(prefix, from, &only).await.unwrap() }
    };
    let mut on_1 = watch(Only {
        progress: Some(progress.clone()),
        ..only(None, Some("n1"))
    })
    .await;
    let mut on_2 = watch(only(None, Some("n2"))).await;
    let mut unbound = watch(only(None, Some(""))).await;
    let mut named_q = watch(only(Some("q"), None)).await;
    let mut every = cache.watch(prefix, from).await.unwrap();
    let key = |name: &str| format!("{prefix}a/{name}");
    let rev = cache.create(&key("p"), b("-")).await.unwrap();
    // Bound: the watch of its node gets it, and so does the one of
    // unbound pods, which must see it leave.
    cache.update(&key("p"), b("on:n1"), rev).await.unwrap();
    cache.create(&key("q"), b("on:n2")).await.unwrap();
    cache.create(&key("r"), b("unreadable")).await.unwrap();
    cache.delete(&key("q"), None).await.unwrap();
    // n1's watch is passed by what it was not handed: the deletion of q.
    let deleted = cache.current_revision().await.unwrap();
    cache.get(&key("p")).await.unwrap();
    assert_eq!(progress.load(Ordering::Acquire), deleted);
    let (p, q, r) = (key("p"), key("q"), key("r"));
    let (p, q, r) = (p.as_str(), q.as_str(), r.as_str());
    assert_eq!(next_keys(&mut every, 5).await, [p, p, q, r, q]);
    assert_eq!(next_keys(&mut unbound, 3).await, [p, p, r]);
    assert_eq!(next_keys(&mut on_1, 2).await, [p, r]);
    assert_eq!(next_keys(&mut on_2, 3).await, [q, r, q]);
    assert_eq!(next_keys(&mut named_q, 2).await, [q, q]);
    // Every event was handed out before the next was applied.
    for w in [&mut on_1, &mut on_2, &mut unbound, &mut named_q] {
        assert!(w.next().now_or_never().is_none());
    }
}

/// A watch of a quiet resource resumes from a revision that churn in
/// another resource pushed out of the cache's history, as upstream's
/// per-resource caches allow; the busy resource's watch from there is
/// told to list again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_resumes_a_quiet_resource_from_before_the_churn() {
    let backend = embedded().await;
    let cache = cache_over(&backend, 16).await;
    let quiet = cache
        .create("/registry/core/configmaps/a/m", b("m"))
        .await
        .unwrap();
    for i in 0..40 {
        cache
            .create(&format!("/registry/core/pods/a/p{i}"), b("p"))
            .await
            .unwrap();
    }
    cache.get("/registry/core/pods/a/p39").await.unwrap();
    for prefix in ["/registry/core/pods/", "/registry/"] {
        assert!(
            matches!(
                cache.watch(prefix, quiet).await,
                Err(Error::Compacted { .. })
            ),
            "{prefix}"
        );
    }
    let mut maps = cache
        .watch("/registry/core/configmaps/", quiet)
        .await
        .unwrap();
    let mut secrets = cache.watch("/registry/core/secrets/", quiet).await.unwrap();
    assert!(
        matches!(
            cache.watch("/registry/core/configmaps/", quiet - 1).await,
            Err(Error::Compacted { .. })
        ),
        "its own event left the history"
    );
    cache
        .create("/registry/core/configmaps/a/n", b("n"))
        .await
        .unwrap();
    cache
        .create("/registry/core/secrets/a/s", b("s"))
        .await
        .unwrap();
    assert_eq!(
        next_keys(&mut maps, 1).await,
        ["/registry/core/configmaps/a/n"]
    );
    assert_eq!(
        next_keys(&mut secrets, 1).await,
        ["/registry/core/secrets/a/s"]
    );
}

/// State survives reopening the same file.
#[tokio::test]
async fn embedded_reopens_with_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let rev = {
        let s = Embedded::open(&path).unwrap();
        s.create("/p/a", b("kept")).await.unwrap()
    };
    let s = Embedded::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), rev);
    assert_eq!(s.get("/p/a").await.unwrap().unwrap().value, b("kept"));
    let created = s.create("/p/b", b("x")).await.unwrap();
    assert!(created > rev);
    // A deletion compacted away still counts: revisions never go back.
    let deleted = s.delete("/p/b", None).await.unwrap().mod_rev;
    s.compact(deleted).await.unwrap();
    drop(s);
    let s = Embedded::open(&path).unwrap();
    assert_eq!(s.current_revision().await.unwrap(), deleted);
}
