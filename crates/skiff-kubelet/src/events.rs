//! The agent's events about its pods (`Pulling`, `Created`, `Unhealthy`,
//! `BackOff` …) and its node (`FreeDiskSpaceFailed`), written through the runtime's event sink as upstream's
//! kubelet writes them: the same event again raises its count, similar
//! ones are combined, and recording never waits on the API server.

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use serde_json::json;
use skiff_runtime::events::Sink;

/// Normal or Warning, as upstream's event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

/// Records events about this node and its pods.
pub struct Recorder {
    node: String,
    sink: Sink,
}

/// `spec.containers{name}`, the field path events name a container by.
pub fn container_path(name: &str) -> String {
    format!("spec.containers{{{name}}}")
}

impl Recorder {
    /// A recorder writing as `client`.
    pub fn new(client: Client, node: &str) -> Self {
        Self {
            node: node.to_owned(),
            sink: Sink::new(client),
        }
    }

    /// Records that `reason: message` happened to the node, named as
    /// upstream's kubelet names it (its uid is its name).
    pub fn record_node(&self, kind: Type, reason: &str, message: &str) {
        let involved = json!({"kind": "Node", "name": self.node, "uid": self.node});
        self.write("default", &self.node, involved, kind, reason, message);
    }

    /// Records that `reason: message` happened to `pod` (or to its part at
    /// `field_path`, e.g. [`container_path`]).
    pub fn record(&self, pod: &Pod, field_path: &str, kind: Type, reason: &str, message: &str) {
        let m = &pod.metadata;
        let pod_name = m.name.clone().unwrap_or_default();
        let namespace = m.namespace.clone().unwrap_or_else(|| "default".into());
        let mut involved = json!({
            "apiVersion": "v1", "kind": "Pod", "namespace": namespace,
            "name": pod_name, "uid": m.uid,
        });
        if !field_path.is_empty() {
            involved["fieldPath"] = json!(field_path);
        }
        self.write(&namespace, &pod_name, involved, kind, reason, message);
    }

    /// Records an event about `involved`, named after `name`.
    fn write(
        &self,
        namespace: &str,
        name: &str,
        involved: serde_json::Value,
        kind: Type,
        reason: &str,
        message: &str,
    ) {
        let now = chrono::Utc::now();
        let stamp = now.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        self.sink.record(json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {
                "name": format!("{name}.{:016x}", now.timestamp_nanos_opt().unwrap_or_default()),
                "namespace": namespace,
            },
            "involvedObject": involved,
            "reason": reason, "message": message,
            "type": match kind { Type::Normal => "Normal", Type::Warning => "Warning" },
            "source": {"component": "kubelet", "host": self.node},
            "reportingComponent": "kubelet", "reportingInstance": self.node,
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }));
    }
}
