//! Upstream's JSON field order. Go writes `kind` and `apiVersion` first,
//! then a struct's fields in declaration order, and a map's keys sorted;
//! clients' tests compare responses byte for byte. The protobuf messages
//! list each struct's fields in declaration order, so their table orders
//! the JSON too. Fields the table does not know (custom resources,
//! embedded objects) keep their own order.

use std::sync::OnceLock;

use foldhash::HashMap;
use serde_json::{Map, Value};

use super::{message_name, table, Kind};

/// How a field's value is ordered.
#[derive(Clone, Copy, Debug)]
enum Nested {
    Plain,
    /// An object (or a list of them) of the message at this index.
    Message(usize),
    /// A map: keys sorted, values plain or of a message.
    Map(Option<usize>),
}

/// One message's fields: each one's place in declaration order (embedded
/// structs inlined) and how its value is ordered.
#[derive(Default)]
struct Ordered {
    fields: HashMap<String, (usize, Nested)>,
}

struct Orders {
    by_name: HashMap<String, usize>,
    messages: Vec<Ordered>,
}

fn orders() -> &'static Orders {
    static ORDERS: OnceLock<Orders> = OnceLock::new();
    ORDERS.get_or_init(|| {
        let table = table();
        let by_name: HashMap<String, usize> = table
            .keys()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        let mut names: Vec<(&String, usize)> = by_name.iter().map(|(n, i)| (n, *i)).collect();
        names.sort_by_key(|(_, i)| *i);
        let messages = names
            .into_iter()
            .map(|(name, _)| {
                let mut fields = Vec::new();
                inline(name, &by_name, &mut fields, 0);
                let fields = fields
                    .into_iter()
                    .enumerate()
                    .map(|(at, (json, nested))| (json, (at, nested)))
                    .collect();
                Ordered { fields }
            })
            .collect();
        Orders { by_name, messages }
    })
}

/// Appends the fields of message `name` to `into`, an embedded struct's
/// (JSON name `-`) where it is declared.
fn inline(
    name: &str,
    by_name: &HashMap<String, usize>,
    into: &mut Vec<(String, Nested)>,
    depth: usize,
) {
    let Some(message) = table().get(name) else {
        return;
    };
    for tag in &message.order {
        let field = &message.fields[tag];
        let nested = |kind: &Kind| match kind {
            Kind::Message(m) => by_name
                .get(m)
                .map_or(Nested::Plain, |i| Nested::Message(*i)),
            _ => Nested::Plain,
        };
        match (&field.kind, field.json.as_str()) {
            (Kind::Message(inner), "-") if depth < 4 => inline(inner, by_name, into, depth + 1),
            (Kind::Map(value), json) => {
                let of = match nested(value) {
                    Nested::Message(i) => Some(i),
                    _ => None,
                };
                into.push((json.to_owned(), Nested::Map(of)));
            }
            (kind, json) => into.push((json.to_owned(), nested(kind))),
        }
    }
}

/// The message of a kind, if the table has it.
fn of_kind(api_version: &str, kind: &str) -> Option<usize> {
    orders()
        .by_name
        .get(&message_name(api_version, kind))
        .copied()
}

/// Writes an object as JSON in upstream's order: `kind`, `apiVersion`,
/// then its kind's fields.
pub fn write(out: &mut Vec<u8>, obj: &Map<String, Value>) {
    write_object(out, obj, false);
}

/// As [`write`], leaving the metadata's `resourceVersion` out (as the
/// store keeps objects).
pub fn write_without_revision(out: &mut Vec<u8>, obj: &Map<String, Value>) {
    write_object(out, obj, true);
}

fn write_object(out: &mut Vec<u8>, obj: &Map<String, Value>, no_revision: bool) {
    let str_of = |k: &str| obj.get(k).and_then(Value::as_str).unwrap_or_default();
    let message = of_kind(str_of("apiVersion"), str_of("kind"));
    out.push(b'{');
    let mut first = true;
    for key in ["kind", "apiVersion"] {
        if let Some(v) = obj.get(key) {
            field(out, &mut first, key, v, Nested::Plain);
        }
    }
    let rest = obj
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "kind" | "apiVersion"));
    for (k, v, nested) in in_order(rest, message) {
        match (k.as_str(), v, no_revision) {
            ("metadata", Value::Object(meta), true) => {
                if !first {
                    out.push(b',');
                }
                first = false;
                out.extend_from_slice(b"\"metadata\":{");
                let kept = meta.iter().filter(|(k, _)| *k != "resourceVersion");
                let meta_message = match nested {
                    Nested::Message(m) => Some(m),
                    _ => None,
                };
                let mut inner_first = true;
                for (k, v, nested) in in_order(kept, meta_message) {
                    field(out, &mut inner_first, k, v, nested);
                }
                out.push(b'}');
            }
            _ => field(out, &mut first, k, v, nested),
        }
    }
    out.push(b'}');
}

/// Writes `v` as JSON, ordered as `nested` says.
fn value(out: &mut Vec<u8>, v: &Value, nested: Nested) {
    match (v, nested) {
        (Value::Array(items), Nested::Message(_)) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                value(out, item, nested);
            }
            out.push(b']');
        }
        (Value::Object(map), Nested::Message(m)) => {
            out.push(b'{');
            let mut first = true;
            for (k, v, nested) in in_order(map.iter(), Some(m)) {
                field(out, &mut first, k, v, nested);
            }
            out.push(b'}');
        }
        (Value::Object(map), Nested::Map(of)) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by_key(|(k, _)| *k);
            let inner = of.map_or(Nested::Plain, Nested::Message);
            out.push(b'{');
            let mut first = true;
            for (k, v) in entries {
                field(out, &mut first, k, v, inner);
            }
            out.push(b'}');
        }
        (v, _) => {
            let _ = serde_json::to_writer(&mut *out, v);
        }
    }
}

/// An object's fields: the message's in its order, then the others in
/// theirs.
fn in_order<'a>(
    fields: impl Iterator<Item = (&'a String, &'a Value)>,
    message: Option<usize>,
) -> impl Iterator<Item = (&'a String, &'a Value, Nested)> {
    let known = message.map(|m| &orders().messages[m].fields);
    let mut placed: Vec<(usize, &String, &Value, Nested)> = fields
        .map(|(k, v)| match known.and_then(|f| f.get(k)) {
            Some((at, nested)) => (*at, k, v, *nested),
            None => (usize::MAX, k, v, Nested::Plain),
        })
        .collect();
    // Stable: the others keep their order.
    placed.sort_by_key(|(at, ..)| *at);
    placed.into_iter().map(|(_, k, v, n)| (k, v, n))
}

fn field(out: &mut Vec<u8>, first: &mut bool, k: &str, v: &Value, nested: Nested) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    let _ = serde_json::to_writer(&mut *out, k);
    out.push(b':');
    value(out, v, nested);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ordered(v: &Value) -> String {
        let mut out = Vec::new();
        write(&mut out, v.as_object().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn objects_come_out_in_go_struct_order() {
        let d = json!({"status": {"replicas": 1, "observedGeneration": 2},
            "spec": {"template": {"spec": {"containers": [{"image": "i", "name": "c"}]}},
                "selector": {"matchLabels": {"b": "2", "a": "1"}}, "replicas": 3},
            "metadata": {"uid": "u", "name": "web", "labels": {"z": "1", "a": "2"},
                "creationTimestamp": "2026-01-01T00:00:00Z", "namespace": "default"},
            "apiVersion": "apps/v1", "kind": "Deployment"});
        assert_eq!(
            ordered(&d),
            concat!(
                r#"{"kind":"Deployment","apiVersion":"apps/v1","#,
                r#""metadata":{"name":"web","namespace":"default","uid":"u","creationTimestamp":"2026-01-01T00:00:00Z","labels":{"a":"2","z":"1"}},"#,
                r#""spec":{"replicas":3,"selector":{"matchLabels":{"a":"1","b":"2"}},"template":{"spec":{"containers":[{"name":"c","image":"i"}]}}},"#,
                r#""status":{"observedGeneration":2,"replicas":1}}"#
            )
        );
    }

    #[test]
    fn unknown_kinds_and_fields_keep_their_order() {
        let cr = json!({"kind": "Widget", "apiVersion": "x.io/v1", "spec": {"b": 1, "a": 2}, "metadata": {"name": "w"}});
        assert_eq!(
            ordered(&cr),
            r#"{"kind":"Widget","apiVersion":"x.io/v1","spec":{"b":1,"a":2},"metadata":{"name":"w"}}"#
        );
        let cm = json!({"kind": "ConfigMap", "apiVersion": "v1", "zz": 1, "data": {"b": "1", "a": "2"}, "immutable": true});
        assert_eq!(
            ordered(&cm),
            r#"{"kind":"ConfigMap","apiVersion":"v1","immutable":true,"data":{"a":"2","b":"1"},"zz":1}"#
        );
    }

    #[test]
    fn embedded_structs_are_inlined_where_declared() {
        // A probe's handler (exec, httpGet, …) is embedded before its own
        // fields.
        let pod = json!({"kind": "Pod", "apiVersion": "v1", "spec": {"containers": [{"name": "c",
            "livenessProbe": {"periodSeconds": 5, "exec": {"command": ["true"]}}}]}});
        assert!(ordered(&pod)
            .contains(r#""livenessProbe":{"exec":{"command":["true"]},"periodSeconds":5}"#));
    }
}
