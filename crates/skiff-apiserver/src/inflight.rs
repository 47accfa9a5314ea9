//! Max requests in flight, as upstream's `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`: beyond either cap a request is
//! answered at once with 429 and `Retry-After`, so that a burst cannot
//! pile up without bound. Long-running requests (watches, exec, attach,
//! port-forward, proxy, logs) hold no slot.

use std::sync::Arc;

use hyper::{Method, Uri};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The two caps; `None` is no cap (upstream's 0).
#[derive(Clone, Debug)]
pub struct Limits {
    reads: Option<Arc<Semaphore>>,
    writes: Option<Arc<Semaphore>>,
}

impl Limits {
    pub fn new(reads: usize, writes: usize) -> Self {
        let cap = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self {
            reads: cap(reads),
            writes: cap(writes),
        }
    }

    /// A slot for the request, held until it is dropped; `Err` when its
    /// cap is reached. Long-running requests need none.
    pub fn admit(&self, method: &Method, uri: &Uri) -> Result<Option<OwnedSemaphorePermit>, ()> {
        if long_running(method, uri) {
            return Ok(None);
        }
        let mutating = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        let cap = if mutating { &self.writes } else { &self.reads };
        match cap {
            None => Ok(None),
            Some(s) => s.clone().try_acquire_owned().map(Some).map_err(|_| ()),
        }
    }
}

/// Upstream's long-running check: the watch and proxy verbs, and the
/// attach, exec, log, port-forward and proxy subresources.
fn long_running(method: &Method, uri: &Uri) -> bool {
    let path = uri.path();
    let watch = uri
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|kv| matches!(kv, "watch=true" | "watch=1"));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    // `/api/v1/watch/…` or `/apis/<group>/<version>/watch/…`.
    let at = if segments.get(1) == Some(&"api") {
        3
    } else {
        4
    };
    let legacy_watch = segments.get(at) == Some(&"watch");
    let subresource = segments.last().copied().unwrap_or_default();
    let streaming = matches!(
        subresource,
        "attach" | "exec" | "log" | "portforward" | "proxy"
    ) || segments.contains(&"proxy");
    (*method == Method::GET && (watch || legacy_watch)) || streaming
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn caps_reads_and_writes_apart_and_spares_long_running_requests() {
        let limits = Limits::new(1, 1);
        let list = uri("/api/v1/pods");
        let held = limits.admit(&Method::GET, &list).unwrap();
        assert!(held.is_some());
        assert!(limits.admit(&Method::GET, &list).is_err(), "a second read");
        let write = limits.admit(&Method::POST, &uri("/api/v1/namespaces/d/pods"));
        assert!(write.unwrap().is_some(), "writes have their own cap");
        for long in [
            "/api/v1/pods?watch=true",
            "/api/v1/watch/pods",
            "/apis/apps/v1/watch/namespaces/d/deployments",
            "/api/v1/namespaces/d/pods/p/log?follow=true",
            "/api/v1/namespaces/d/pods/p/exec?command=sh",
            "/api/v1/nodes/n/proxy/stats/summary",
        ] {
            let method = if long.contains("exec") {
                Method::POST
            } else {
                Method::GET
            };
            assert!(
                limits.admit(&method, &uri(long)).unwrap().is_none(),
                "{long}"
            );
        }
        drop(held);
        assert!(
            limits.admit(&Method::GET, &list).is_ok(),
            "the slot came back"
        );
        let unlimited = Limits::new(0, 0);
        assert!(unlimited.admit(&Method::GET, &list).unwrap().is_none());
    }
}
