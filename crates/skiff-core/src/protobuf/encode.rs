//! Encoding objects' JSON forms as Kubernetes protobuf, for clients that
//! ask for `application/vnd.kubernetes.protobuf` (client-go's typed and
//! metadata clients list it first).
//!
//! Fields are written in ascending field number, as Go's generated
//! marshallers do. An object with a field its message does not have is
//! not encoded at all ([`Unencodable`]): the caller answers in JSON rather
//! than drop the field.

use base64::Engine;
use serde_json::{Map, Value};

use super::{message_name, table, Kind, Scalar, MAGIC};

/// Why an object has no protobuf form.
#[derive(Debug, PartialEq, Eq)]
pub struct Unencodable(pub String);

type Result<T> = std::result::Result<T, Unencodable>;

fn unencodable(what: impl Into<String>) -> Unencodable {
    Unencodable(what.into())
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(tag: u64, wire: u64, out: &mut Vec<u8>) {
    varint(tag << 3 | wire, out);
}

/// Writes field `tag` as length-delimited bytes that `body` appends, the
/// length slotted in before them once known.
fn delimited(
    tag: u64,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<()>,
) -> Result<()> {
    key(tag, 2, out);
    let start = out.len();
    body(out)?;
    let mut len = Vec::with_capacity(4);
    varint((out.len() - start) as u64, &mut len);
    out.splice(start..start, len);
    Ok(())
}

fn bytes_field(tag: u64, data: &[u8], out: &mut Vec<u8>) {
    key(tag, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn integer(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

fn scalar(tag: u64, s: Scalar, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    let wrong = || unencodable(format!("field {tag} is not a {s:?}: {v}"));
    match s {
        Scalar::String => bytes_field(tag, v.as_str().ok_or_else(wrong)?.as_bytes(), out),
        Scalar::Bytes => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or_else(wrong)?)
                .map_err(|_| wrong())?;
            bytes_field(tag, &data, out);
        }
        Scalar::Bool => {
            key(tag, 0, out);
            varint(u64::from(v.as_bool().ok_or_else(wrong)?), out);
        }
        Scalar::Int32 => {
            let i = integer(v)
                .filter(|i| i32::try_from(*i).is_ok())
                .ok_or_else(wrong)?;
            key(tag, 0, out);
            varint(i as u64, out);
        }
        Scalar::Int64 => {
            key(tag, 0, out);
            varint(integer(v).ok_or_else(wrong)? as u64, out);
        }
        Scalar::Double => {
            key(tag, 1, out);
            out.extend_from_slice(&v.as_f64().ok_or_else(wrong)?.to_bits().to_le_bytes());
        }
    }
    Ok(())
}

fn value(tag: u64, kind: &Kind, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    match kind {
        Kind::Scalar(s) => scalar(tag, *s, v, out),
        Kind::Message(name) => delimited(tag, out, |out| message(name, v, out)),
        Kind::Map(_) => Err(unencodable(format!("field {tag}: a map of maps"))),
    }
}

/// Apimachinery's messages with JSON forms of their own; `None` for the
/// rest.
fn special(name: &str, v: &Value, out: &mut Vec<u8>) -> Option<Result<()>> {
    let wrong = || unencodable(format!("{name} from {v}"));
    let done = match name {
        "io.k8s.apimachinery.pkg.apis.meta.v1.time"
        | "io.k8s.apimachinery.pkg.apis.meta.v1.microtime" => {
            let Some(t) = v
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
            else {
                return Some(Err(wrong()));
            };
            if t.timestamp() != 0 {
                key(1, 0, out);
                varint(t.timestamp() as u64, out);
            }
            if t.timestamp_subsec_nanos() != 0 {
                key(2, 0, out);
                varint(u64::from(t.timestamp_subsec_nanos()), out);
            }
            Ok(())
        }
        "io.k8s.apimachinery.pkg.util.intstr.intorstring" => match v {
            Value::String(s) => {
                key(1, 0, out);
                varint(1, out);
                bytes_field(3, s.as_bytes(), out);
                Ok(())
            }
            _ => match integer(v).filter(|i| i32::try_from(*i).is_ok()) {
                Some(i) => {
                    key(1, 0, out);
                    varint(0, out);
                    key(2, 0, out);
                    varint(i as u64, out);
                    Ok(())
                }
                None => Err(wrong()),
            },
        },
        "io.k8s.apimachinery.pkg.api.resource.quantity" => match v {
            Value::String(s) => {
                bytes_field(1, s.as_bytes(), out);
                Ok(())
            }
            Value::Number(n) => {
                bytes_field(1, n.to_string().as_bytes(), out);
                Ok(())
            }
            _ => Err(wrong()),
        },
        "io.k8s.apimachinery.pkg.apis.meta.v1.fieldsv1"
        | "io.k8s.apimachinery.pkg.runtime.rawextension" => {
            let raw = serde_json::to_vec(v).map_err(|_| wrong());
            raw.map(|raw| bytes_field(1, &raw, out))
        }
        _ if is_string_list(name) => match v.as_array() {
            Some(items) => items
                .iter()
                .try_for_each(|item| scalar(1, Scalar::String, item, out)),
            None => Err(wrong()),
        },
        _ => return None,
    };
    Some(done)
}

/// Messages wrapping a list of strings that JSON writes as the list
/// (`ExtraValue`, `Verbs`).
pub(super) fn is_string_list(name: &str) -> bool {
    name.ends_with(".extravalue") || name == "io.k8s.apimachinery.pkg.apis.meta.v1.verbs"
}

fn message(name: &str, v: &Value, out: &mut Vec<u8>) -> Result<()> {
    if let Some(done) = special(name, v, out) {
        return done;
    }
    let obj = v
        .as_object()
        .ok_or_else(|| unencodable(format!("{name} from {v}")))?;
    // Objects in lists carry their apiVersion and kind, which the envelope
    // (or the list's) holds in protobuf.
    let unknown = obj.iter().find(|(k, v)| {
        !v.is_null() && !knows(name, k) && !matches!(k.as_str(), "apiVersion" | "kind")
    });
    if let Some((k, _)) = unknown {
        return Err(unencodable(format!("{name} has no field {k:?}")));
    }
    fields(name, obj, out)
}

/// Whether message `name`, or one it embeds, has a field named `json`.
fn knows(name: &str, json: &str) -> bool {
    table().get(name).is_some_and(|msg| {
        msg.fields
            .values()
            .any(|f| match (&f.kind, f.json.as_str()) {
                (Kind::Message(inner), "-") => knows(inner, json),
                _ => f.json == json,
            })
    })
}

/// Writes the fields of message `name` that `obj` holds, embedded
/// messages' fields from `obj` itself.
fn fields(name: &str, obj: &Map<String, Value>, out: &mut Vec<u8>) -> Result<()> {
    let msg = table()
        .get(name)
        .ok_or_else(|| unencodable(format!("no message {name}")))?;
    for &tag in &msg.by_tag {
        let f = &msg.fields[&tag];
        if f.json == "-" {
            let Kind::Message(inner) = &f.kind else {
                continue;
            };
            let before = out.len();
            let mut wrote = false;
            delimited(tag, out, |out| {
                let start = out.len();
                fields(inner, obj, out)?;
                wrote = out.len() > start;
                Ok(())
            })?;
            if !wrote {
                out.truncate(before);
            }
            continue;
        }
        let Some(v) = obj.get(&f.json).filter(|v| !v.is_null()) else {
            continue;
        };
        match (&f.kind, f.repeated) {
            (Kind::Map(of), _) => {
                let entries = v
                    .as_object()
                    .ok_or_else(|| unencodable(format!("{name}.{} is not a map", f.json)))?;
                for (k, item) in entries {
                    delimited(tag, out, |out| {
                        bytes_field(1, k.as_bytes(), out);
                        if item.is_null() {
                            return Ok(());
                        }
                        value(2, of, item, out)
                    })?;
                }
            }
            (kind, true) => {
                let items = v
                    .as_array()
                    .ok_or_else(|| unencodable(format!("{name}.{} is not a list", f.json)))?;
                for item in items {
                    value(tag, kind, item, out)?;
                }
            }
            (kind, false) => value(tag, kind, v, out)?,
        }
    }
    Ok(())
}

/// The message of an object's apiVersion and kind, if it has one.
fn message_of(obj: &Value) -> Result<(&str, &str, String)> {
    let api_version = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    let name = match kind {
        // Status is meta's, served in every group-version.
        "Status" => "io.k8s.apimachinery.pkg.apis.meta.v1.status".to_owned(),
        _ => message_name(api_version, kind),
    };
    if !table().contains_key(&name) {
        return Err(unencodable(format!(
            "{api_version} {kind} has no protobuf message"
        )));
    }
    Ok((api_version, kind, name))
}

/// An object (with `apiVersion` and `kind`) as a protobuf body: the magic
/// `k8s\0`, then a `runtime.Unknown` holding the type and the message.
pub fn encode(obj: &Value) -> Result<Vec<u8>> {
    let (api_version, kind, name) = message_of(obj)?;
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(MAGIC);
    delimited(1, &mut out, |out| {
        bytes_field(1, api_version.as_bytes(), out);
        bytes_field(2, kind.as_bytes(), out);
        Ok(())
    })?;
    delimited(2, &mut out, |out| message(&name, obj, out))?;
    Ok(out)
}

/// One watch event as a protobuf stream frame: a 4-byte big-endian length,
/// then a `WatchEvent` (no envelope) whose object is [`encode`]d.
pub fn watch_frame(event_type: &str, obj: &Value) -> Result<Vec<u8>> {
    let object = encode(obj)?;
    let mut out = vec![0; 4];
    bytes_field(1, event_type.as_bytes(), &mut out);
    delimited(2, &mut out, |out| {
        bytes_field(1, &object, out);
        Ok(())
    })?;
    let len = u32::try_from(out.len() - 4).map_err(|_| unencodable("event too large"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use k8s_pb::api::core::v1 as pb;
    use prost::Message as _;
    use serde_json::json;

    use super::*;

    fn pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2026-12-01T10:00:00Z",
                "labels": {"app": "web", "tier": "front"},
                "finalizers": ["example.com/keep"],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1",
                    "uid": "u-0", "controller": true, "blockOwnerDeletion": false}],
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "apiVersion": "v1",
                    "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}]
            },
            "spec": {
                "containers": [{
                    "name": "app", "image": "busybox", "command": ["sleep", "3600"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                    "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"},
                        "initialDelaySeconds": 0, "periodSeconds": 10},
                    "readinessProbe": {"tcpSocket": {"port": 8080}},
                    "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}
                }],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cfg", "defaultMode": 420}},
                    {"name": "scratch", "emptyDir": {}}
                ],
                "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                    "effect": "NoExecute", "tolerationSeconds": 300}]
            },
            "status": {
                "phase": "Running", "podIP": "10.42.0.7",
                "conditions": [{"type": "Ready", "status": "True",
                    "lastTransitionTime": "2026-12-01T10:00:05Z"}]
            }
        })
    }

    fn unwrap(body: &[u8]) -> (String, String, Vec<u8>) {
        let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(
            body.strip_prefix(MAGIC).expect("the magic prefix"),
        )
        .unwrap();
        let type_meta = unknown.type_meta.unwrap();
        (
            type_meta.api_version.unwrap(),
            type_meta.kind.unwrap(),
            unknown.raw.unwrap(),
        )
    }

    /// What this module writes, the k8s-pb crate's bindings (generated from
    /// upstream's `.proto` files) read back field for field.
    #[test]
    fn an_encoded_pod_decodes_with_upstreams_messages() {
        let (api_version, kind, raw) = unwrap(&encode(&pod()).unwrap());
        assert_eq!((api_version.as_str(), kind.as_str()), ("v1", "Pod"));
        let p = pb::Pod::decode(raw.as_slice()).unwrap();
        let meta = p.metadata.unwrap();
        assert_eq!(meta.name.as_deref(), Some("web"));
        assert_eq!(meta.generation, Some(3));
        assert_eq!(meta.labels["tier"], "front");
        assert_eq!(
            meta.creation_timestamp.unwrap().seconds,
            Some(1_796_119_200)
        );
        let owner = &meta.owner_references[0];
        assert_eq!(
            (owner.controller, owner.block_owner_deletion),
            (Some(true), Some(false))
        );
        let fields = meta.managed_fields[0]
            .fields_v1
            .clone()
            .unwrap()
            .raw
            .unwrap();
        assert_eq!(
            serde_json::from_slice::<Value>(&fields).unwrap(),
            json!({"f:metadata": {"f:labels": {"f:app": {}}}})
        );

        let spec = p.spec.unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.command, ["sleep", "3600"]);
        assert_eq!(c.ports[0].container_port, Some(8080));
        let limits = &c.resources.as_ref().unwrap().limits;
        assert_eq!(limits["memory"].string.as_deref(), Some("64Mi"));
        let probe = c.liveness_probe.clone().unwrap();
        assert_eq!(probe.initial_delay_seconds, Some(0));
        let port = probe.handler.unwrap().http_get.unwrap().port.unwrap();
        assert_eq!(
            (port.r#type, port.str_val.as_deref()),
            (Some(1), Some("http"))
        );
        let port = c.readiness_probe.clone().unwrap().handler.unwrap();
        let port = port.tcp_socket.unwrap().port.unwrap();
        assert_eq!((port.r#type, port.int_val), (Some(0), Some(8080)));
        let security = c.security_context.clone().unwrap();
        assert_eq!(security.allow_privilege_escalation, Some(false));
        let source = spec.volumes[0].volume_source.clone().unwrap();
        assert_eq!(source.config_map.unwrap().default_mode, Some(420));
        let scratch = spec.volumes[1].volume_source.clone().unwrap();
        assert!(
            scratch.empty_dir.is_some(),
            "an empty emptyDir is still there"
        );
        assert_eq!(spec.tolerations[0].toleration_seconds, Some(300));

        let status = p.status.unwrap();
        assert_eq!(status.pod_ip.as_deref(), Some("10.42.0.7"));
        assert_eq!(
            status.conditions[0].last_transition_time.unwrap().seconds,
            Some(1_796_119_205)
        );
    }

    /// The request decoder reads back what the encoder writes.
    #[test]
    fn objects_survive_an_encode_and_decode() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "pw", "annotations": {"a": "b"}},
            "data": {"password": "czNjcmV0", "empty": ""}, "type": "Opaque"});
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                    "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}});
        let csr = json!({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": "node"},
            "spec": {"request": "Y3Ny", "signerName": "kubernetes.io/kube-apiserver-client",
                "extra": {"scopes": ["a", "b"]}, "usages": ["client auth"]}});
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e"}, "eventTime": "2026-12-01T10:00:00.123456Z",
            "reason": "Scheduled", "action": "Binding", "type": "Normal", "reportingController": "s",
            "reportingInstance": "s-1"});
        for obj in [pod(), secret, deployment, csr, event] {
            let bytes = encode(&obj).unwrap();
            assert_eq!(super::super::decode(&bytes).unwrap(), obj);
        }
    }

    #[test]
    fn lists_statuses_and_watch_frames_encode() {
        let list = json!({"apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "9", "continue": "c"}, "items": [pod(), pod()]});
        let (_, kind, raw) = unwrap(&encode(&list).unwrap());
        assert_eq!(kind, "PodList");
        let list = pb::PodList::decode(raw.as_slice()).unwrap();
        assert_eq!(list.items.len(), 2);
        assert_eq!(
            list.metadata.unwrap().resource_version.as_deref(),
            Some("9")
        );

        let status = json!({"apiVersion": "v1", "kind": "Status", "metadata": {},
            "status": "Failure", "reason": "NotFound", "code": 404,
            "details": {"name": "web", "kind": "pods"}, "message": "pods \"web\" not found"});
        let (_, _, raw) = unwrap(&encode(&status).unwrap());
        let status =
            k8s_pb::apimachinery::pkg::apis::meta::v1::Status::decode(raw.as_slice()).unwrap();
        assert_eq!(
            (status.code, status.reason.as_deref()),
            (Some(404), Some("NotFound"))
        );

        let frame = watch_frame("ADDED", &pod()).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let event =
            k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::decode(&frame[4..]).unwrap();
        assert_eq!(event.r#type.as_deref(), Some("ADDED"));
        let (_, kind, raw) = unwrap(&event.object.unwrap().raw.unwrap());
        assert_eq!(kind, "Pod");
        assert!(pb::Pod::decode(raw.as_slice()).is_ok());
    }

    /// A field the message lacks, a value of the wrong type or a kind
    /// without a message is refused, never dropped.
    #[test]
    fn what_protobuf_cannot_carry_is_refused() {
        let mut unknown = pod();
        unknown["spec"]["containers"][0]["shinyNewField"] = json!(true);
        let Err(Unencodable(why)) = encode(&unknown) else {
            panic!("encoded an unknown field")
        };
        assert!(why.contains("shinyNewField"), "{why}");
        let mut wrong = pod();
        wrong["spec"]["containers"][0]["ports"][0]["containerPort"] = json!("80");
        assert!(encode(&wrong).is_err());
        let mut too_big = pod();
        too_big["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(1u64 << 40);
        assert!(encode(&too_big).is_err());
        let custom =
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}});
        assert!(encode(&custom).is_err());
    }
}
