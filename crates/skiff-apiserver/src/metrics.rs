//! The API server's Prometheus metrics, as upstream names them: requests
//! by verb, resource and code, their latency, and requests in flight.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use skiff_core::metrics::{latency, register, Registry};

/// What a request was: upstream's labels, all from fixed strings (the
/// registry's names), so that counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Request {
    pub verb: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub scope: &'static str,
    pub component: &'static str,
}

impl Request {
    /// A request not (yet) known to be for a resource: its method.
    pub fn of_method(method: &hyper::Method) -> Self {
        let verb = match method.as_str() {
            "GET" => "GET",
            "POST" => "POST",
            "PUT" => "PUT",
            "PATCH" => "PATCH",
            "DELETE" => "DELETE",
            "HEAD" => "HEAD",
            "OPTIONS" => "OPTIONS",
            _ => "OTHER",
        };
        Request {
            verb,
            group: "",
            version: "",
            resource: "",
            subresource: "",
            scope: "",
            component: "apiserver",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    #[prometheus(flatten)]
    request: Request,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    request_kind: &'static str,
}

/// The API server's metrics.
#[derive(Clone)]
pub struct ApiMetrics {
    requests: Family<Answered, Counter>,
    durations: Family<Request, Histogram>,
    inflight: Family<Kind, Gauge>,
}

impl ApiMetrics {
    pub fn new(registry: &Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(latency),
            inflight: Family::default(),
        };
        register(
            registry,
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code.",
            m.requests.clone(),
        );
        register(
            registry,
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component.",
            m.durations.clone(),
        );
        register(
            registry,
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind in last second.",
            m.inflight.clone(),
        );
        m
    }

    /// Counts a request in flight until the guard is dropped.
    pub fn in_flight(&self, mutating: bool) -> InFlight {
        let kind = Kind {
            request_kind: if mutating { "mutating" } else { "readOnly" },
        };
        let gauge = self.inflight.get_or_create(&kind).clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// Records an answered request.
    pub fn observe(&self, request: Request, code: u16, took: Duration) {
        self.durations
            .get_or_create(&request)
            .observe(took.as_secs_f64());
        let answered = Answered { request, code };
        self.requests.get_or_create(&answered).inc();
    }
}

/// The store's figures, read at each scrape: objects by resource, the
/// watch cache's events kept for resuming watchers, and its open watches.
struct StoreFigures(std::sync::Arc<skiff_store::WatchCache>);

impl std::fmt::Debug for StoreFigures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreFigures")
    }
}

impl Collector for StoreFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = self.0.figures() else {
            return Ok(());
        };
        for (name, help, counts) in [
            (
                "apiserver_storage_objects",
                "Number of stored objects at the time of last check split by kind.",
                &figures.objects,
            ),
            (
                "skiff_watch_cache_watches",
                "Watches the watch cache feeds, by resource (* for wider ones).",
                &figures.watches,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (resource, n) in counts {
                let labels = [("resource", resource.as_str())];
                ConstGauge::new(*n as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        for (name, help, value) in [
            (
                "skiff_watch_cache_events",
                "Events the watch cache keeps for watchers that resume.",
                figures.events,
            ),
            (
                "skiff_watch_cache_event_bytes",
                "Bytes of the events the watch cache keeps.",
                figures.event_bytes,
            ),
        ] {
            let gauge = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value as i64).encode(gauge)?;
        }
        Ok(())
    }
}

/// Reports the store's figures at each scrape of `registry`.
pub fn register_store(registry: &Registry, cache: std::sync::Arc<skiff_store::WatchCache>) {
    registry
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .register_collector(Box::new(StoreFigures(cache)));
}

/// A request in flight; it leaves the count when dropped.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Upstream's verb for a request: the REST verb, upper-case, with
/// streams as `CONNECT` and server-side apply as `APPLY`.
pub fn verb(verb: &str, stream: bool, apply: bool) -> &'static str {
    match verb {
        _ if stream => "CONNECT",
        "create" => "POST",
        "update" => "PUT",
        "patch" if apply => "APPLY",
        "patch" => "PATCH",
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "delete" => "DELETE",
        "deletecollection" => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_code_and_timed() {
        let registry = Registry::default();
        let m = ApiMetrics::new(&registry);
        let request = Request {
            verb: verb("list", false, false),
            resource: "pods",
            version: "v1",
            scope: "namespace",
            ..Request::of_method(&hyper::Method::GET)
        };
        m.observe(request.clone(), 200, Duration::from_millis(3));
        m.observe(request, 200, Duration::from_millis(30));
        let guard = m.in_flight(true);
        let text = skiff_core::metrics::encode(&registry);
        assert!(
            text.contains("apiserver_request_total{verb=\"LIST\",group=\"\",version=\"v1\",resource=\"pods\",subresource=\"\",scope=\"namespace\",component=\"apiserver\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("apiserver_request_duration_seconds_count{verb=\"LIST\""));
        assert!(text.contains("apiserver_current_inflight_requests{request_kind=\"mutating\"} 1"));
        drop(guard);
        let text = skiff_core::metrics::encode(&registry);
        assert!(text.contains("apiserver_current_inflight_requests{request_kind=\"mutating\"} 0"));
        assert_eq!(verb("patch", false, true), "APPLY");
        assert_eq!(verb("create", true, false), "CONNECT");
    }
}
