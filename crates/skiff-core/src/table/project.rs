//! Decoding only what a kind's columns read: the rest of a stored object
//! is skipped without being built, and its metadata kept as raw bytes
//! for the row's object.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::text::Text;

/// Which keys of a JSON object to keep.
pub enum Keep {
    /// The whole value.
    All,
    /// Only these keys of an object (or of each object in an array); a
    /// key `*` stands for every key not named.
    Only(&'static [(&'static str, Keep)]),
}

/// The keep of `key` among `keys`.
fn find<'k>(keys: &'k [(&'static str, Keep)], key: &str) -> Option<&'k Keep> {
    let named = keys.iter().find(|(k, _)| *k == key);
    named
        .or_else(|| keys.iter().find(|(k, _)| *k == "*"))
        .map(|(_, keep)| keep)
}

/// A stored object as a row needs it.
pub struct Viewed<'a> {
    /// What the columns read, every other key left out.
    pub view: Value,
    /// The object's metadata as stored.
    pub metadata: Option<&'a RawValue>,
}

/// Decodes `bytes` keeping only `keep`, its metadata also raw.
pub fn view<'a>(
    bytes: &'a [u8],
    keep: &'static [(&'static str, Keep)],
) -> serde_json::Result<Viewed<'a>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let viewed = de.deserialize_map(TopLevel(keep))?;
    de.end()?;
    Ok(viewed)
}

struct TopLevel(&'static [(&'static str, Keep)]);

impl<'de> Visitor<'de> for TopLevel {
    type Value = Viewed<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Viewed<'de>, A::Error> {
        let mut view = Map::new();
        let mut metadata = None;
        while let Some(Text(key)) = map.next_key()? {
            let keep = find(self.0, &key);
            if key == "metadata" {
                let raw: &'de RawValue = map.next_value()?;
                metadata = Some(raw);
                if let Some(keep) = keep {
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    let meta = Project(keep)
                        .deserialize(&mut de)
                        .map_err(serde::de::Error::custom)?;
                    view.insert(key.into_owned(), meta);
                }
                continue;
            }
            match keep {
                Some(keep) => {
                    let v = map.next_value_seed(Project(keep))?;
                    view.insert(key.into_owned(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Viewed {
            view: Value::Object(view),
            metadata,
        })
    }
}

/// A value with only the kept keys.
struct Project<'k>(&'k Keep);

impl<'de> DeserializeSeed<'de> for Project<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Value, D::Error> {
        match self.0 {
            Keep::All => serde::Deserialize::deserialize(de),
            Keep::Only(_) => de.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Project<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let keys = match self.0 {
            Keep::Only(keys) => *keys,
            Keep::All => &[],
        };
        let mut out = Map::new();
        while let Some(Text(key)) = map.next_key()? {
            match find(keys, &key) {
                Some(keep) => {
                    let v = map.next_value_seed(Project(keep))?;
                    out.insert(key.into_owned(), v);
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
        while let Some(v) = seq.next_element_seed(Project(self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEEP: &[(&str, Keep)] = &[
        ("metadata", Keep::Only(&[("name", Keep::All)])),
        (
            "spec",
            Keep::Only(&[("containers", Keep::Only(&[])), ("nodeName", Keep::All)]),
        ),
        ("status", Keep::All),
    ];

    #[test]
    fn only_the_kept_keys_are_decoded_and_metadata_stays_raw() {
        let obj = json!({
            "kind": "Pod",
            "metadata": {"name": "p", "managedFields": [{"manager": "kubectl"}], "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}], "nodeName": "n1", "volumes": [{"name": "v"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        });
        let bytes = serde_json::to_vec(&obj).unwrap();
        let viewed = view(&bytes, KEEP).unwrap();
        assert_eq!(
            viewed.view,
            json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [{}, {}], "nodeName": "n1"},
                "status": {"phase": "Running", "podIP": "10.0.0.1"},
            })
        );
        let raw: Value = serde_json::from_str(viewed.metadata.unwrap().get()).unwrap();
        assert_eq!(raw, obj["metadata"]);
    }

    #[test]
    fn a_star_keeps_every_key_not_named() {
        const ALL_BUT: &[(&str, Keep)] = &[
            ("metadata", Keep::Only(&[("name", Keep::All)])),
            ("*", Keep::All),
        ];
        let bytes = br#"{"metadata":{"name":"p","uid":"u"},"data":{"k":"v"},"type":"Opaque"}"#;
        let viewed = view(bytes, ALL_BUT).unwrap();
        assert_eq!(
            viewed.view,
            json!({"metadata": {"name": "p"}, "data": {"k": "v"}, "type": "Opaque"})
        );
    }

    #[test]
    fn a_kept_key_of_another_type_is_taken_as_it_is() {
        let bytes = br#"{"metadata":{"name":"p"},"spec":null,"status":{"phase":"Pending"}}"#;
        let viewed = view(bytes, KEEP).unwrap();
        assert_eq!(viewed.view["spec"], Value::Null);
        assert!(view(b"{\"metadata\":", KEEP).is_err());
        assert!(view(b"[1]", KEEP).is_err());
    }
}
