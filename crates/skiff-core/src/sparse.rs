//! Reading a few fields of stored JSON without building the rest: the
//! values at the wanted paths come out as a sparse object, everything
//! else is only scanned (a watch's field selector reads one field of
//! every event's object). A list on the way to a path is read element
//! by element with the rest of the path (`spec.containers.env`).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::text::Text;

/// The fields to keep: a tree of names, each kept whole at its leaf.
#[derive(Debug, Default)]
pub struct Paths(BTreeMap<String, Paths>);

impl Paths {
    /// The tree of dotted paths (`spec.nodeName`, `metadata.labels`).
    pub fn of<'a>(dotted: impl IntoIterator<Item = &'a str>) -> Self {
        let mut root = Self::default();
        for path in dotted {
            let mut node = &mut root;
            for part in path.split('.') {
                node = node.0.entry(part.to_owned()).or_default();
            }
        }
        root
    }

    /// `bytes` with only these paths' values (absent ones stay absent).
    pub fn read(&self, bytes: &[u8]) -> serde_json::Result<Value> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = self.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for &Paths {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.is_empty() {
            return Value::deserialize(d);
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for &Paths {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        // Keys are looked at where they stand; only the wanted are kept.
        while let Some(Text(key)) = map.next_key()? {
            match self.0.get(key.as_ref()) {
                Some(wanted) => {
                    let value = map.next_value_seed(wanted)?;
                    out.insert(key.into_owned(), value);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(element) = seq.next_element_seed(self)? {
            out.push(element);
        }
        Ok(Value::Array(out))
    }

    // A scalar where an object with wanted fields would be: none of them
    // is there.

    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_wanted_paths_come_out_whole() {
        let obj = json!({
            "metadata": {"name": "p", "labels": {"app": "web", "tier": "a"}, "annotations": {"x": "y"}},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "c", "env": [{"name": "A"}]}, {"name": "d"}, 3],
                "hostNetwork": true,
            },
            "status": "odd",
        });
        let bytes = serde_json::to_vec(&obj).unwrap();
        let paths = Paths::of([
            "metadata.labels",
            "spec.nodeName",
            "spec.hostNetwork",
            "spec.containers.env",
            "status.phase",
        ]);
        assert_eq!(
            paths.read(&bytes).unwrap(),
            json!({
                "metadata": {"labels": {"app": "web", "tier": "a"}},
                "spec": {
                    "nodeName": "n1",
                    "hostNetwork": true,
                    "containers": [{"env": [{"name": "A"}]}, {}, null],
                },
                "status": null,
            })
        );
    }

    #[test]
    fn escaped_keys_are_read_as_their_text() {
        let paths = Paths::of(["spec.nodeName"]);
        let bytes = br#"{"sp\u0065c": {"node\u004eame": "n1", "x\"y": 1}}"#;
        assert_eq!(
            paths.read(bytes).unwrap(),
            json!({"spec": {"nodeName": "n1"}})
        );
    }

    #[test]
    fn broken_json_is_an_error() {
        let paths = Paths::of(["spec.nodeName"]);
        assert!(paths.read(br#"{"spec": {"nodeName": "n1"}"#).is_err());
        assert!(paths.read(br#"{"spec": {"other": [1, }}"#).is_err());
        assert!(paths.read(br#"{"spec": {}} trailing"#).is_err());
    }
}
