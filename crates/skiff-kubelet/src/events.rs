//! The agent's events about its pods (`Pulling`, `Created`, `Unhealthy`,
//! `BackOff` …), as upstream's kubelet records them: the same event again
//! raises its count instead of making a new one, at most once per
//! [`REPEAT_INTERVAL`], and writes go out in order from one task so that
//! recording never waits on the API server.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The shortest time between two writes of the same event.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(10);

/// Normal or Warning, as upstream's event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    Normal,
    Warning,
}

/// What identifies one event: the pod, the part of it, and what happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub pod_uid: String,
    pub field_path: String,
    pub kind: Type,
    pub reason: String,
    pub message: String,
}

/// What to write for one recorded occurrence.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// A new event with this name.
    Create(String),
    /// The existing event, now with this count.
    Count(String, i32),
    /// Too soon after the last write; the count is kept for the next one.
    Later,
}

struct Seen {
    name: String,
    count: i32,
    written: Instant,
}

/// Upstream's correlator in small: one event per key, counted.
#[derive(Default)]
pub struct Correlator {
    seen: HashMap<Key, Seen>,
}

impl Correlator {
    pub fn observe(
        &mut self,
        key: &Key,
        now: Instant,
        new_name: impl FnOnce() -> String,
    ) -> Decision {
        match self.seen.get_mut(key) {
            None => {
                let name = new_name();
                self.seen.insert(
                    key.clone(),
                    Seen {
                        name: name.clone(),
                        count: 1,
                        written: now,
                    },
                );
                Decision::Create(name)
            }
            Some(s) => {
                s.count += 1;
                if now.duration_since(s.written) < REPEAT_INTERVAL {
                    return Decision::Later;
                }
                s.written = now;
                Decision::Count(s.name.clone(), s.count)
            }
        }
    }

    /// Forgets the events of pods no longer here.
    pub fn retain(&mut self, pods: &[String]) {
        self.seen.retain(|k, _| pods.contains(&k.pod_uid));
    }
}

enum Write {
    Create(Value),
    Count {
        namespace: String,
        name: String,
        patch: Value,
        /// The whole event, made anew if the old one expired.
        fresh: Value,
    },
}

/// Records events about this node's pods.
pub struct Recorder {
    node: String,
    correlator: Mutex<Correlator>,
    writes: mpsc::UnboundedSender<Write>,
}

/// `spec.containers{name}`, the field path events name a container by.
pub fn container_path(name: &str) -> String {
    format!("spec.containers{{{name}}}")
}

impl Recorder {
    /// A recorder whose writes a spawned task sends to the API server.
    pub fn start(client: Client, node: &str) -> Self {
        let (writes, mut queue) = mpsc::unbounded_channel::<Write>();
        tokio::spawn(async move {
            while let Some(write) = queue.recv().await {
                if let Err(e) = send(&client, write).await {
                    tracing::debug!(error = %e, "could not record an event");
                }
            }
        });
        Self {
            node: node.to_owned(),
            correlator: Mutex::default(),
            writes,
        }
    }

    /// Records that `reason: message` happened to `pod` (or to its part at
    /// `field_path`, e.g. [`container_path`]).
    pub fn record(&self, pod: &Pod, field_path: &str, kind: Type, reason: &str, message: &str) {
        let m = &pod.metadata;
        let key = Key {
            pod_uid: m.uid.clone().unwrap_or_default(),
            field_path: field_path.to_owned(),
            kind,
            reason: reason.to_owned(),
            message: message.to_owned(),
        };
        let now = chrono::Utc::now();
        let pod_name = m.name.clone().unwrap_or_default();
        let decision = self
            .correlator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .observe(&key, Instant::now(), || {
                format!(
                    "{pod_name}.{:016x}",
                    now.timestamp_nanos_opt().unwrap_or_default()
                )
            });
        let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let namespace = m.namespace.clone().unwrap_or_else(|| "default".into());
        let event = |name: &str, count: i32| {
            let mut involved = json!({
                "apiVersion": "v1", "kind": "Pod", "namespace": namespace,
                "name": pod_name, "uid": key.pod_uid,
            });
            if !field_path.is_empty() {
                involved["fieldPath"] = json!(field_path);
            }
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved,
                "reason": reason, "message": message,
                "type": match kind { Type::Normal => "Normal", Type::Warning => "Warning" },
                "source": {"component": "kubelet", "host": self.node},
                "reportingComponent": "kubelet", "reportingInstance": self.node,
                "firstTimestamp": stamp, "lastTimestamp": stamp, "count": count,
            })
        };
        let write = match decision {
            Decision::Later => return,
            Decision::Create(name) => Write::Create(event(&name, 1)),
            Decision::Count(name, count) => Write::Count {
                namespace: namespace.clone(),
                patch: json!({"count": count, "lastTimestamp": stamp}),
                fresh: event(&format!("{name}-{count}"), count),
                name,
            },
        };
        let _ = self.writes.send(write);
    }

    /// Forgets the events of pods (by uid) no longer on this node.
    pub fn retain(&self, pods: &[String]) {
        self.correlator
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(pods);
    }
}

async fn send(client: &Client, write: Write) -> Result<(), kube::Error> {
    let create = |event: Value| async move {
        let ns = event["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_owned();
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let event: Event = serde_json::from_value(event).map_err(kube::Error::SerdeError)?;
        api.create(&PostParams::default(), &event).await.map(drop)
    };
    match write {
        Write::Create(event) => create(event).await,
        Write::Count {
            namespace,
            name,
            patch,
            fresh,
        } => {
            let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Err(kube::Error::Api(e)) if e.code == 404 => create(fresh).await,
                other => other.map(drop),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        Key {
            pod_uid: "u1".into(),
            field_path: container_path("web"),
            kind: Type::Warning,
            reason: reason.into(),
            message: "Liveness probe failed: no".into(),
        }
    }

    #[test]
    fn repeats_count_at_most_once_per_interval() {
        let mut c = Correlator::default();
        let t0 = Instant::now();
        let mut names = 0;
        let mut name = || {
            names += 1;
            format!("p.{names}")
        };
        assert_eq!(
            c.observe(&key("Unhealthy"), t0, &mut name),
            Decision::Create("p.1".into())
        );
        assert_eq!(
            c.observe(&key("Unhealthy"), t0 + Duration::from_secs(1), &mut name),
            Decision::Later
        );
        assert_eq!(
            c.observe(&key("Unhealthy"), t0 + REPEAT_INTERVAL, &mut name),
            Decision::Count("p.1".into(), 3),
            "the count includes the occurrence not written"
        );
        assert_eq!(
            c.observe(&key("Killing"), t0, &mut name),
            Decision::Create("p.2".into())
        );
        c.retain(&["other".into()]);
        assert_eq!(
            c.observe(&key("Unhealthy"), t0, &mut name),
            Decision::Create("p.3".into())
        );
    }
}
