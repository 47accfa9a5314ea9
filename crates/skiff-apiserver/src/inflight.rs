//! Max requests in flight, as upstream's `--max-requests-inflight` and
//! `--max-mutating-requests-inflight`: beyond either cap a request is
//! answered at once with 429 and `Retry-After`, so that a burst cannot
//! pile up without bound. Long-running requests (watches, exec, attach,
//! port-forward, proxy, logs) hold no slot.

use std::sync::Arc;

use hyper::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::request::Route;

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

    /// A slot for the request (its method, parsed path and query), held
    /// until it is dropped; `Err` when its cap is reached. Long-running
    /// requests need none.
    pub fn admit(
        &self,
        method: &Method,
        route: Option<&Route>,
        query: Option<&str>,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        if long_running(method, route, query) {
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
/// attach, exec, log, port-forward and proxy subresources (as the router
/// parsed them: an object named `exec` is no subresource).
fn long_running(method: &Method, route: Option<&Route>, query: Option<&str>) -> bool {
    let watch = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|kv| matches!(kv, "watch=true" | "watch=1"));
    match route {
        Some(Route::NodeProxy { .. }) => true,
        Some(Route::Resource(t)) => {
            let streaming = matches!(
                t.subresource.as_deref(),
                Some("attach" | "exec" | "log" | "portforward" | "proxy")
            );
            streaming || (*method == Method::GET && (watch || t.watch_path))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(
        limits: &Limits,
        method: Method,
        uri: &str,
    ) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let (path, query) = uri
            .split_once('?')
            .map_or((uri, None), |(p, q)| (p, Some(q)));
        let route = crate::request::route(path).ok();
        limits.admit(&method, route.as_ref(), query)
    }

    #[test]
    fn caps_reads_and_writes_apart_and_spares_long_running_requests() {
        let limits = Limits::new(1, 1);
        let list = "/api/v1/pods";
        let held = admit(&limits, Method::GET, list).unwrap();
        assert!(held.is_some());
        assert!(admit(&limits, Method::GET, list).is_err(), "a second read");
        let write = admit(&limits, Method::POST, "/api/v1/namespaces/d/pods");
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
            assert!(admit(&limits, method, long).unwrap().is_none(), "{long}");
        }
        // An object's name is not a subresource.
        let named = admit(&limits, Method::GET, "/api/v1/namespaces/d/configmaps/exec");
        assert!(named.is_err(), "counted as the read it is");
        drop(held);
        assert!(
            admit(&limits, Method::GET, list).is_ok(),
            "the slot came back"
        );
        let unlimited = Limits::new(0, 0);
        assert!(admit(&unlimited, Method::GET, list).unwrap().is_none());
    }
}
