//! Events that tell the story of each reconcile step (`kubectl get events`).

use kube::{Resource, ResourceExt};
use serde_json::{json, Value};

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
