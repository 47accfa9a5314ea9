//! Encoding objects' JSON forms as Kubernetes protobuf, for clients that
//! ask for `application/vnd.kubernetes.protobuf` (client-go's typed and
//! metadata clients list it first).
//!
//! [`transcode`] reads the JSON bytes once and writes protobuf as it goes,
//! without building the object. An object with a field its message does
//! not have is not encoded at all ([`Unencodable`]): the caller answers in
//! JSON rather than drop the field.

use std::borrow::Cow;
use std::fmt;
use std::sync::OnceLock;

use base64::Engine;
use foldhash::HashMap;
use serde::de::{
    self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde_json::value::RawValue;

use super::{message_name, table, Kind, Scalar, MAGIC};
use crate::text::Text;

/// Why an object has no protobuf form.
#[derive(Debug, PartialEq, Eq)]
pub struct Unencodable(pub String);

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

/// Writes field `tag` as length-delimited bytes that `body` appends. The
/// length goes in a one-byte slot left before them, widened (moving the
/// bytes once) only when it needs more.
fn delimited<E>(
    tag: u64,
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    key(tag, 2, out);
    let slot = out.len();
    out.push(0);
    body(out)?;
    let len = out.len() - slot - 1;
    if len < 0x80 {
        out[slot] = len as u8;
    } else {
        let mut prefix = Vec::with_capacity(10);
        varint(len as u64, &mut prefix);
        out.splice(slot..=slot, prefix);
    }
    Ok(())
}

fn bytes_field(tag: u64, data: &[u8], out: &mut Vec<u8>) {
    key(tag, 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

fn varint_field(tag: u64, v: u64, out: &mut Vec<u8>) {
    key(tag, 0, out);
    varint(v, out);
}

fn double(tag: u64, f: f64, out: &mut Vec<u8>) {
    key(tag, 1, out);
    out.extend_from_slice(&f.to_bits().to_le_bytes());
}

/// A JSON scalar as read.
#[derive(Clone, Copy, Debug)]
enum Json<'a> {
    Str(&'a str),
    Int(i64),
    Uint(u64),
    Float(f64),
    Bool(bool),
}

impl Json<'_> {
    fn integer(self) -> Option<i64> {
        match self {
            Json::Int(i) => Some(i),
            Json::Uint(u) => i64::try_from(u).ok(),
            Json::Float(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Some(f as i64),
            _ => None,
        }
    }

    fn int32(self) -> Option<i32> {
        self.integer().and_then(|i| i32::try_from(i).ok())
    }
}

fn scalar(tag: u64, s: Scalar, v: Json, out: &mut Vec<u8>) -> Result<(), String> {
    let wrong = || format!("field {tag} is not a {s:?}: {v:?}");
    match (s, v) {
        (Scalar::String, Json::Str(text)) => bytes_field(tag, text.as_bytes(), out),
        (Scalar::Bytes, Json::Str(text)) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| wrong())?;
            bytes_field(tag, &data, out);
        }
        (Scalar::Bool, Json::Bool(b)) => varint_field(tag, u64::from(b), out),
        (Scalar::Int32, v) => varint_field(tag, v.int32().ok_or_else(wrong)? as u64, out),
        (Scalar::Int64, v) => varint_field(tag, v.integer().ok_or_else(wrong)? as u64, out),
        (Scalar::Double, Json::Float(f)) => double(tag, f, out),
        (Scalar::Double, Json::Int(i)) => double(tag, i as f64, out),
        (Scalar::Double, Json::Uint(u)) => double(tag, u as f64, out),
        _ => return Err(wrong()),
    }
    Ok(())
}

const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.microtime";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.intorstring";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.quantity";

/// Messages JSON writes as a scalar ([`special`]).
fn is_scalar_form(name: &str) -> bool {
    [TIME, MICRO_TIME, INT_OR_STRING, QUANTITY].contains(&name)
}

/// The fields of a message JSON writes as a scalar: times, int-or-strings
/// and quantities.
fn special(name: &str, v: Json, out: &mut Vec<u8>) -> Result<(), String> {
    let wrong = || format!("{name} from {v:?}");
    match (name, v) {
        (TIME | MICRO_TIME, Json::Str(text)) => {
            let t = chrono::DateTime::parse_from_rfc3339(text).map_err(|_| wrong())?;
            if t.timestamp() != 0 {
                varint_field(1, t.timestamp() as u64, out);
            }
            if t.timestamp_subsec_nanos() != 0 {
                varint_field(2, u64::from(t.timestamp_subsec_nanos()), out);
            }
        }
        (INT_OR_STRING, Json::Str(text)) => {
            varint_field(1, 1, out);
            bytes_field(3, text.as_bytes(), out);
        }
        (INT_OR_STRING, v) => {
            let i = v.int32().ok_or_else(wrong)?;
            varint_field(1, 0, out);
            varint_field(2, i as u64, out);
        }
        (QUANTITY, Json::Str(text)) => bytes_field(1, text.as_bytes(), out),
        (QUANTITY, Json::Int(i)) => bytes_field(1, i.to_string().as_bytes(), out),
        (QUANTITY, Json::Uint(u)) => bytes_field(1, u.to_string().as_bytes(), out),
        (QUANTITY, Json::Float(f)) => bytes_field(1, f.to_string().as_bytes(), out),
        _ => return Err(wrong()),
    }
    Ok(())
}

/// Messages holding an embedded JSON document as bytes.
fn is_raw(name: &str) -> bool {
    matches!(
        name,
        "io.k8s.apimachinery.pkg.apis.meta.v1.fieldsv1"
            | "io.k8s.apimachinery.pkg.runtime.rawextension"
    )
}

/// Messages wrapping a list of strings that JSON writes as the list
/// (`ExtraValue`, `Verbs`).
pub(super) fn is_string_list(name: &str) -> bool {
    name.ends_with(".extravalue") || name == "io.k8s.apimachinery.pkg.apis.meta.v1.verbs"
}

/// Where a JSON field of a message goes: field `tag`, of the embedded
/// message in field `embedded` when there is one.
struct Place {
    embedded: Option<u64>,
    tag: u64,
    kind: &'static Kind,
    repeated: bool,
}

type Places = HashMap<&'static str, HashMap<&'static str, Place>>;

/// Each message's fields by JSON name, its embedded messages' included.
fn places() -> &'static Places {
    static PLACES: OnceLock<Places> = OnceLock::new();
    PLACES.get_or_init(|| {
        let table = table();
        let place = |embedded, tag, f: &'static super::Field| Place {
            embedded,
            tag,
            kind: &f.kind,
            repeated: f.repeated,
        };
        table
            .iter()
            .map(|(name, msg)| {
                let mut by_json = HashMap::default();
                for (&tag, f) in &msg.fields {
                    match (&f.kind, f.json.as_str()) {
                        // One level deep: no embedded message embeds another.
                        (Kind::Message(inner), "-") => {
                            let inner = table.get(inner).map(|m| &m.fields);
                            for (&inner_tag, g) in inner.into_iter().flatten() {
                                by_json.insert(g.json.as_str(), place(Some(tag), inner_tag, g));
                            }
                        }
                        (_, json) => {
                            by_json.insert(json, place(None, tag, f));
                        }
                    }
                }
                (name.as_str(), by_json)
            })
            .collect()
    })
}

/// One field's JSON value, written as field `tag` of kind `kind` (each
/// item of it, when `repeated`).
struct Field<'o> {
    tag: u64,
    kind: &'static Kind,
    repeated: bool,
    out: &'o mut Vec<u8>,
}

impl Field<'_> {
    fn scalar(self, v: Json) -> Result<(), String> {
        match (self.repeated, self.kind) {
            (false, Kind::Scalar(s)) => scalar(self.tag, *s, v, self.out),
            (false, Kind::Message(name)) => {
                delimited(self.tag, self.out, |out| special(name, v, out))
            }
            _ => Err(format!("field {} from {v:?}", self.tag)),
        }
    }
}

impl<'de> DeserializeSeed<'de> for Field<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.kind {
            Kind::Message(name) if !self.repeated && is_raw(name) => {
                let raw = <&RawValue>::deserialize(d)?;
                if raw.get() != "null" {
                    delimited(self.tag, self.out, |out| {
                        bytes_field(1, raw.get().as_bytes(), out);
                        Ok(())
                    })?;
                }
                Ok(())
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Field<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "the value of protobuf field {}", self.tag)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.scalar(Json::Bool(v)).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.scalar(Json::Int(v)).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.scalar(Json::Uint(v)).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.scalar(Json::Float(v)).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.scalar(Json::Str(v)).map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (tag, out) = (self.tag, self.out);
        match (self.repeated, self.kind) {
            (true, kind) => loop {
                let item = Field {
                    tag,
                    kind,
                    repeated: false,
                    out: &mut *out,
                };
                if seq.next_element_seed(item)?.is_none() {
                    return Ok(());
                }
            },
            (false, Kind::Message(name)) if is_string_list(name) => delimited(tag, out, |out| {
                while let Some(Text(text)) = seq.next_element()? {
                    bytes_field(1, text.as_bytes(), out);
                }
                Ok(())
            }),
            _ => Err(de::Error::custom(format!("field {tag} is not a list"))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (tag, out) = (self.tag, self.out);
        match (self.repeated, self.kind) {
            (false, Kind::Map(of)) => {
                while let Some(Text(k)) = map.next_key()? {
                    delimited(tag, out, |out| {
                        bytes_field(1, k.as_bytes(), out);
                        map.next_value_seed(Field {
                            tag: 2,
                            kind: of,
                            repeated: false,
                            out,
                        })
                    })?;
                }
                Ok(())
            }
            (false, Kind::Message(name)) if !is_string_list(name) && !is_scalar_form(name) => {
                delimited(tag, out, |out| {
                    Message::new(name, out)
                        .map_err(de::Error::custom)?
                        .finish(&mut map)
                })
            }
            _ => Err(de::Error::custom(format!("field {tag} is not an object"))),
        }
    }
}

/// The message `name` being written from a JSON object: the fields of
/// embedded messages (which JSON inlines) are gathered into their own
/// field, written last.
struct Message<'o> {
    name: &'o str,
    places: &'static HashMap<&'static str, Place>,
    embedded: Vec<(u64, Vec<u8>)>,
    out: &'o mut Vec<u8>,
}

impl<'o> Message<'o> {
    fn new(name: &'o str, out: &'o mut Vec<u8>) -> Result<Self, String> {
        let places = places()
            .get(name)
            .ok_or_else(|| format!("no message {name}"))?;
        Ok(Message {
            name,
            places,
            embedded: Vec::new(),
            out,
        })
    }

    /// Where the field `place` is written.
    fn target(&mut self, place: &Place) -> &mut Vec<u8> {
        let Some(outer) = place.embedded else {
            return self.out;
        };
        let at = match self.embedded.iter().position(|(t, _)| *t == outer) {
            Some(at) => at,
            None => {
                self.embedded.push((outer, Vec::new()));
                self.embedded.len() - 1
            }
        };
        &mut self.embedded[at].1
    }

    /// Writes the object's remaining fields, then the embedded messages.
    fn finish<'de, A: MapAccess<'de>>(mut self, map: &mut A) -> Result<(), A::Error> {
        while let Some(Text(key)) = map.next_key()? {
            map.next_value_seed(Entry {
                message: &mut self,
                key: &key,
            })?;
        }
        for (tag, bytes) in self.embedded {
            if !bytes.is_empty() {
                bytes_field(tag, &bytes, self.out);
            }
        }
        Ok(())
    }
}

/// The value of the JSON field `key` of a [`Message`].
struct Entry<'m, 'o, 'k> {
    message: &'m mut Message<'o>,
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for Entry<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let Some(place) = self.message.places.get(self.key) else {
            // Objects in lists carry their apiVersion and kind, which the
            // envelope (or the list's) holds in protobuf.
            let typed = matches!(self.key, "apiVersion" | "kind");
            if Option::<IgnoredAny>::deserialize(d)?.is_some() && !typed {
                let (name, key) = (self.message.name, self.key);
                return Err(de::Error::custom(format!("{name} has no field {key:?}")));
            }
            return Ok(());
        };
        Field {
            tag: place.tag,
            kind: place.kind,
            repeated: place.repeated,
            out: self.message.target(place),
        }
        .deserialize(d)
    }
}

/// A whole object as a `runtime.Unknown`: its type (`apiVersion` and
/// `kind`, read first; fields before them are held raw until then) and
/// the message of that type.
struct Envelope<'o> {
    out: &'o mut Vec<u8>,
}

impl<'de> Visitor<'de> for Envelope<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut api_version, mut kind) = (None, None);
        let mut early: Vec<(Cow<'de, str>, &'de RawValue)> = Vec::new();
        while api_version.is_none() || kind.is_none() {
            let Some(Text(key)) = map.next_key()? else {
                break;
            };
            match key.as_ref() {
                "apiVersion" => api_version = Some(map.next_value::<Text>()?.0),
                "kind" => kind = Some(map.next_value::<Text>()?.0),
                _ => early.push((key, map.next_value()?)),
            }
        }
        let (api_version, kind) = (api_version.unwrap_or_default(), kind.unwrap_or_default());
        let name = message_of(&api_version, &kind).map_err(|e| de::Error::custom(e.0))?;
        delimited(1, self.out, |out| {
            bytes_field(1, api_version.as_bytes(), out);
            bytes_field(2, kind.as_bytes(), out);
            Ok::<_, A::Error>(())
        })?;
        delimited(2, self.out, |out| {
            let mut message = Message::new(&name, out).map_err(de::Error::custom)?;
            for (key, raw) in early {
                let entry = Entry {
                    message: &mut message,
                    key: &key,
                };
                entry
                    .deserialize(&mut serde_json::Deserializer::from_str(raw.get()))
                    .map_err(de::Error::custom)?;
            }
            message.finish(&mut map)
        })
    }
}

/// The message of an object's apiVersion and kind, if it has one.
fn message_of(api_version: &str, kind: &str) -> Result<String, Unencodable> {
    let name = match kind {
        // Status is meta's, served in every group-version.
        "Status" => "io.k8s.apimachinery.pkg.apis.meta.v1.status".to_owned(),
        _ => message_name(api_version, kind),
    };
    if !table().contains_key(&name) {
        return Err(Unencodable(format!(
            "{api_version} {kind} has no protobuf message"
        )));
    }
    Ok(name)
}

/// An object's JSON bytes (with `apiVersion` and `kind`) as a protobuf
/// body: the magic `k8s\0`, then a `runtime.Unknown` holding the type and
/// the message.
pub fn transcode(json: &[u8]) -> Result<Vec<u8>, Unencodable> {
    let text = std::str::from_utf8(json).map_err(|e| Unencodable(e.to_string()))?;
    let mut out = Vec::with_capacity(json.len() / 2 + 64);
    out.extend_from_slice(MAGIC);
    let mut de = serde_json::Deserializer::from_str(text);
    de.deserialize_map(Envelope { out: &mut out })
        .and_then(|()| de.end())
        .map_err(|e| Unencodable(e.to_string()))?;
    Ok(out)
}

/// One watch event as a protobuf stream frame: a 4-byte big-endian length,
/// then a `WatchEvent` (no envelope) whose object is the [`transcode`]d
/// JSON.
pub fn watch_frame(event_type: &str, json: &[u8]) -> Result<Vec<u8>, Unencodable> {
    let object = transcode(json)?;
    let mut out = vec![0; 4];
    bytes_field(1, event_type.as_bytes(), &mut out);
    delimited(2, &mut out, |out| {
        bytes_field(1, &object, out);
        Ok::<_, Unencodable>(())
    })?;
    let len = u32::try_from(out.len() - 4).map_err(|_| Unencodable("event too large".into()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use k8s_pb::api::core::v1 as pb;
    use prost::Message as _;
    use serde_json::{json, Value};

    use super::*;

    /// A parsed object as a protobuf body.
    fn encode(obj: &Value) -> Result<Vec<u8>, Unencodable> {
        transcode(&serde_json::to_vec(obj).unwrap())
    }

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
                        "initialDelaySeconds": 5, "periodSeconds": 10},
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
        assert_eq!(probe.initial_delay_seconds, Some(5));
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
        // Fields whose Go names have acronyms (clusterIPs, podIPs) that
        // prost splits otherwise.
        let service = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.9"],
                "externalIPs": ["192.0.2.1"], "ports": [{"port": 80}]}});
        let mut running = pod();
        running["status"] = json!({"phase": "Running", "hostIP": "10.0.0.1",
            "hostIPs": [{"ip": "10.0.0.1"}], "podIP": "10.42.0.7", "podIPs": [{"ip": "10.42.0.7"}]});
        let class = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": "c"},
            "spec": {"controller": "x.io/c", "parameters": {"apiGroup": "x.io", "kind": "P", "name": "p"}}});
        for obj in [
            pod(),
            secret,
            deployment,
            csr,
            event,
            service,
            running,
            class,
        ] {
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

        let frame = watch_frame("ADDED", &serde_json::to_vec(&pod()).unwrap()).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let event =
            k8s_pb::apimachinery::pkg::apis::meta::v1::WatchEvent::decode(&frame[4..]).unwrap();
        assert_eq!(event.r#type.as_deref(), Some("ADDED"));
        let (_, kind, raw) = unwrap(&event.object.unwrap().raw.unwrap());
        assert_eq!(kind, "Pod");
        assert!(pb::Pod::decode(raw.as_slice()).is_ok());
    }

    /// Keys in any order (the type last, embedded fields around their
    /// neighbours) and escaped strings encode as the same message
    /// (embedded JSON documents, such as `fieldsV1`, go as they are).
    #[test]
    fn transcoding_takes_keys_in_any_order_and_escapes() {
        let shuffled = br#"{"status": {"podIP": "10.42.0.7", "phase": "Running",
            "conditions": [{"lastTransitionTime": "2026-12-01T10:00:05Z", "type": "Ready", "status": "True"}]},
          "spec": {"volumes": [{"configMap": {"defaultMode": 420, "name": "cfg"}, "name": "cfg"},
                               {"emptyDir": {}, "name": "scratch"}],
            "containers": [{"image": "busybox", "name": "app", "command": ["sleep", "3600"],
              "livenessProbe": {"periodSeconds": 10, "httpGet": {"scheme": "HTTP", "port": "http", "path": "/healthz"}, "initialDelaySeconds": 5},
              "readinessProbe": {"tcpSocket": {"port": 8080}},
              "securityContext": {"allowPrivilegeEscalation": false, "runAsUser": 1000},
              "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
              "ports": [{"protocol": "TCP", "containerPort": 8080, "name": "http"}]}],
            "tolerations": [{"tolerationSeconds": 300, "effect": "NoExecute", "operator": "Exists", "key": "node.kubernetes.io/not-ready"}]},
          "metadata": {"managedFields": [{"fieldsV1": {"f:metadata":{"f:labels":{"f:app":{}}}},
              "fieldsType": "FieldsV1", "time": "2026-12-01T10:00:00Z", "apiVersion": "v1",
              "operation": "Apply", "manager": "kubectl"}],
            "ownerReferences": [{"blockOwnerDeletion": false, "controller": true, "uid": "u-0", "name": "web-1", "kind": "ReplicaSet", "apiVersion": "apps/v1"}],
            "finalizers": ["example.com/keep"], "labels": {"tier": "front", "app": "web"},
            "creationTimestamp": "2026-12-01T10:00:00Z", "generation": 3,
            "resourceVersion": "42", "uid": "u-1", "namespace": "default", "name": "web"},
          "apiVersion": "v1", "kind": "Pod"}"#;
        let (_, _, canonical) = unwrap(&encode(&pod()).unwrap());
        let (_, kind, raw) = unwrap(&transcode(shuffled).unwrap());
        assert_eq!(kind, "Pod");
        assert_eq!(
            pb::Pod::decode(raw.as_slice()).unwrap(),
            pb::Pod::decode(canonical.as_slice()).unwrap()
        );

        let escaped = br#"{"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "c", "labels": {"\u0061pp": "web"}},
            "d\u0061ta": {"quote": "a\"b\\c", "accent": "caf\u00e9 \ud83d\ude00"}}"#;
        let (_, _, raw) = unwrap(&transcode(escaped).unwrap());
        let cm = pb::ConfigMap::decode(raw.as_slice()).unwrap();
        assert_eq!(cm.data["quote"], "a\"b\\c");
        assert_eq!(cm.data["accent"], "caf\u{e9} \u{1f600}");
        assert_eq!(cm.metadata.unwrap().labels["app"], "web");
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
        let mut null = pod();
        null["spec"]["containers"][0]["shinyNewField"] = json!(null);
        assert!(
            encode(&null).is_ok(),
            "an unknown field that is null says nothing"
        );
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
