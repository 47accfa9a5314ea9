//! Objects read without their `metadata.managedFields`. No reader of a
//! watch looks at them (upstream's informers strip them too), and they are
//! a large part of every object, so they are skipped in the JSON unread
//! instead of decoded and dropped.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicResourceScope;
use kube::Resource;
use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;

/// `K` as read without its managed fields.
#[derive(Clone, Debug)]
pub struct Lean<K>(pub K);

impl<'de, K: Deserialize<'de>> Deserialize<'de> for Lean<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        K::deserialize(Skipping {
            inner: d,
            level: Level::Object,
        })
        .map(Lean)
    }
}

/// Where `K`'s API is: the scope is dynamic so that an `Api` of any
/// scope, namespaced or not, can be rebuilt for `Lean<K>`.
impl<K: Resource<DynamicType = ()>> Resource for Lean<K> {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// Which map is being read.
#[derive(Clone, Copy)]
enum Level {
    /// The object: its `metadata` is read at [`Level::Metadata`], every
    /// other field as it is.
    Object,
    /// The object's metadata: `managedFields` is skipped.
    Metadata,
}

impl Level {
    /// The level a field's value is read at, if it needs one.
    fn of_field(self, name: &str) -> Option<Level> {
        match self {
            Level::Object if name == "metadata" => Some(Level::Metadata),
            _ => None,
        }
    }

    /// Whether field `name` of a map at this level is skipped unread.
    fn skips(self, name: &str) -> bool {
        matches!(self, Level::Metadata) && name == "managedFields"
    }
}

/// A deserializer, the visitor of what it reads, or the seed of a value
/// read at `level`: passes everything through, but hands maps on as
/// [`Fields`].
struct Skipping<T> {
    inner: T,
    level: Level,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_any(Skipping { inner: v, level })
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_option(Skipping { inner: v, level })
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_map(Skipping { inner: v, level })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_struct(name, fields, Skipping { inner: v, level })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_newtype_struct(name, Skipping { inner: v, level })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct identifier
        ignored_any
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Skipping<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Fields {
            inner: map,
            level: self.level,
            next: None,
        })
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: d,
            level: self.level,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Skipping {
            inner: d,
            level: self.level,
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<V::Value, E> {
        self.inner.visit_bool(b)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(n)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<V::Value, E> {
        self.inner.visit_u64(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<V::Value, E> {
        self.inner.visit_f64(n)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        self.inner.visit_str(s)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        self.inner.visit_borrowed_str(s)
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        self.inner.visit_string(s)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(seq)
    }
}

/// A map's entries, minus those its level skips; a field that needs a
/// level of its own is read at it.
struct Fields<A> {
    inner: A,
    level: Level,
    /// The level of the value about to be read.
    next: Option<Level>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(key) = self.inner.next_key_seed(KeyName)? else {
                return Ok(None);
            };
            if self.level.skips(&key) {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            self.next = self.level.of_field(&key);
            return match key {
                Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                Cow::Owned(k) => seed.deserialize(StringDeserializer::new(k)),
            }
            .map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.next.take() {
            Some(level) => self.inner.next_value_seed(Skipping { inner: seed, level }),
            None => self.inner.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A map key, borrowed from the input when it can be.
struct KeyName;

impl<'de> DeserializeSeed<'de> for KeyName {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyName {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Skipping<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Skipping {
            inner: d,
            level: self.level,
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    use serde_json::json;

    use super::*;

    fn pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "a",
                "labels": {"managedFields": "a label, kept"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:containers": {}}}}],
                "resourceVersion": "7",
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"},
        })
    }

    #[test]
    fn managed_fields_are_skipped_and_nothing_else() {
        let bytes = serde_json::to_vec(&pod()).unwrap();
        let Lean(lean) = serde_json::from_slice::<Lean<Pod>>(&bytes).unwrap();
        let mut full: Pod = serde_json::from_slice(&bytes).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert!(lean.metadata.managed_fields.is_none());
        full.metadata.managed_fields = None;
        assert_eq!(lean, full);
        assert_eq!(
            lean.metadata.labels.unwrap()["managedFields"],
            "a label, kept"
        );
    }

    #[test]
    fn only_the_objects_own_metadata_is_trimmed() {
        // A field named managedFields elsewhere (here a ConfigMap's data)
        // is the object's content.
        let map = json!({
            "metadata": {"name": "m", "managedFields": [{"manager": "x"}]},
            "data": {"managedFields": "kept"},
        });
        let Lean(lean) = serde_json::from_value::<Lean<ConfigMap>>(map.clone()).unwrap();
        assert_eq!(lean.data.unwrap()["managedFields"], "kept");
        assert!(lean.metadata.managed_fields.is_none());
        let bytes = serde_json::to_vec(&map).unwrap();
        let Lean(lean) = serde_json::from_slice::<Lean<ConfigMap>>(&bytes).unwrap();
        assert_eq!(lean.metadata.name.as_deref(), Some("m"));
    }

    #[test]
    fn errors_are_the_typed_decoders() {
        let mut bad = pod();
        bad["spec"]["containers"] = json!("nope");
        let bytes = serde_json::to_vec(&bad).unwrap();
        let lean = serde_json::from_slice::<Lean<Pod>>(&bytes).unwrap_err();
        let full = serde_json::from_slice::<Pod>(&bytes).unwrap_err();
        assert_eq!(lean.to_string(), full.to_string());
        let escaped = br#"{"metadata": {"name": "e", "managed\u0046ields": [1]}}"#;
        let Lean(lean) = serde_json::from_slice::<Lean<ConfigMap>>(escaped).unwrap();
        assert!(lean.metadata.managed_fields.is_none());
    }
}
