//! Events that tell the story of each reconcile step (`kubectl get events`),
//! and the sinks that write them as upstream's recorders do: [`Sink`]
//! through the [`Correlator`], in order, from one task, dropping what a
//! full queue cannot take rather than making the caller wait;
//! [`SeriesSink`] through the events API's [`Series`], each write by its
//! caller.

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use k8s_openapi::api::core::v1::Event;
use kube::api::{Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::correlator::{Correlator, Write};
use crate::series::Series;

/// Writes waiting for the sink's task, as upstream's broadcaster queue.
const QUEUE: usize = 1000;

/// An event about `obj`, from `component`.
pub fn about<K: Resource<DynamicType = ()>>(
    obj: &K,
    component: &str,
    warning: bool,
    reason: &str,
    message: &str,
) -> Value {
    let now = chrono::Utc::now();
    let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let ns = obj.namespace().unwrap_or_else(|| "default".into());
    let name = obj.name_any();
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {
            "name": format!("{name}.{:x}", now.timestamp_nanos_opt().unwrap_or_default()),
            "namespace": ns,
        },
        "involvedObject": {
            "apiVersion": K::api_version(&()), "kind": K::kind(&()),
            "namespace": obj.namespace(), "name": name, "uid": obj.uid(),
            "resourceVersion": obj.resource_version(),
        },
        "reason": reason,
        "message": message,
        "type": if warning { "Warning" } else { "Normal" },
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    })
}

/// Writes one component's events to the API server.
#[derive(Clone)]
pub struct Sink {
    client: kube::Client,
    correlator: Arc<Mutex<Correlator>>,
    writes: Arc<OnceLock<mpsc::Sender<Write>>>,
}

impl Sink {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            correlator: Arc::default(),
            writes: Arc::default(),
        }
    }

    /// Records `event` (a core/v1 Event); never waits, never fails the
    /// caller. Must be called on a Tokio runtime.
    pub fn record(&self, event: Value) {
        let write = self
            .correlator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .correlate(event, chrono::Utc::now());
        let Some(write) = write else {
            return;
        };
        let writes = self.writes.get_or_init(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(send_all(self.client.clone(), rx));
            tx
        });
        if writes.try_send(write).is_err() {
            tracing::debug!("event queue full; an event was dropped");
        }
    }
}

/// How often a [`SeriesSink`] writes what its series owe.
const SERIES_TICK: Duration = Duration::from_secs(60);

/// Writes one component's events as upstream's events-API recorder does
/// (the scheduler's): the first of a kind and the start of its series
/// by the caller, later counts from [`SeriesSink::keep`].
#[derive(Clone)]
pub struct SeriesSink {
    client: kube::Client,
    series: Arc<Mutex<Series>>,
}

impl SeriesSink {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            series: Arc::default(),
        }
    }

    /// Records `event` (a core/v1 Event with an `eventTime`); never fails
    /// the caller.
    pub async fn record(&self, event: Value) {
        let write = self
            .series
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(event, chrono::Utc::now());
        if let Some(write) = write {
            if let Err(e) = send(&self.client, write).await {
                tracing::debug!(error = %e, "could not record an event");
            }
        }
    }

    /// Writes, each minute, the counts of series that ended or are due
    /// again; ends once every clone of this sink is gone.
    pub fn keep(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (client, series) = (self.client.clone(), Arc::downgrade(&self.series));
        async move {
            let mut every = tokio::time::interval(SERIES_TICK);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(writes) = due(&series) else { return };
                for write in writes {
                    if let Err(e) = send(&client, write).await {
                        tracing::debug!(error = %e, "could not write an event series");
                    }
                }
            }
        }
    }
}

fn due(series: &Weak<Mutex<Series>>) -> Option<Vec<Write>> {
    let series = series.upgrade()?;
    let mut series = series.lock().unwrap_or_else(|e| e.into_inner());
    Some(series.tick(chrono::Utc::now()))
}

async fn send_all(client: kube::Client, mut writes: mpsc::Receiver<Write>) {
    while let Some(write) = writes.recv().await {
        if let Err(e) = send(&client, write).await {
            tracing::debug!(error = %e, "could not record an event");
        }
    }
}

async fn send(client: &kube::Client, write: Write) -> Result<(), kube::Error> {
    let create = |event: Value| async move {
        let ns = event["metadata"]["namespace"].as_str().unwrap_or("default");
        let url = Event::url_path(&(), Some(ns));
        crate::api::create_unread(client, &url, &event).await
    };
    match write {
        Write::Create(event) => create(event).await,
        Write::Patch {
            namespace,
            name,
            patch,
            event,
        } => {
            let api: kube::Api<Event> = kube::Api::namespaced(client.clone(), &namespace);
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                // Expired meanwhile: written whole again.
                Err(kube::Error::Api(e)) if e.code == 404 => create(event).await,
                other => other.map(drop),
            }
        }
    }
}
