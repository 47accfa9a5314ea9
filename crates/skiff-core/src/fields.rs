//! Field sets, the `fieldsV1` form of `managedFields`: which fields of an
//! object a manager owns. A set is kept as its leaf paths; a path element is
//! `f:<field>`, `k:<merge key json>` for an item of a keyed list, `v:<json>`
//! for an item of a set, and `.` for a keyed item itself.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::schema::{ListStrategy, Shape};

pub type Path = Vec<String>;

/// The leaf paths a manager owns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

/// Top-level fields that no manager owns.
pub const UNOWNED: &[&str] = &["apiVersion", "kind", "status"];

/// Top-level metadata fields that no manager owns.
pub const UNOWNED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
];

impl FieldSet {
    /// Every field set in `obj`, an object of shape `shape`.
    pub fn of(obj: &Value, shape: Option<Shape<'_>>) -> Self {
        Self::from_json(&tree(obj, shape))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `fieldsV1` JSON form.
    pub fn to_json(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for part in path {
                node = node
                    .entry(part.clone())
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .expect("field set nodes are objects");
            }
        }
        Value::Object(root)
    }

    /// Parses the `fieldsV1` JSON form.
    pub fn from_json(v: &Value) -> Self {
        fn go(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
            match v.as_object() {
                Some(m) if !m.is_empty() => {
                    for (k, child) in m {
                        path.push(k.clone());
                        go(child, path, out);
                        path.pop();
                    }
                }
                _ => {
                    if !path.is_empty() {
                        out.insert(path.clone());
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        go(v, &mut Vec::new(), &mut out);
        Self(out)
    }
}

/// The `fieldsV1` tree of every field set in `obj`, an object of shape
/// `shape`.
pub fn tree(obj: &Value, shape: Option<Shape<'_>>) -> Value {
    let mut out = Map::new();
    for (k, v) in obj.as_object().into_iter().flatten() {
        if UNOWNED.contains(&k.as_str()) {
            continue;
        }
        if k == "metadata" {
            let meta_shape = shape.and_then(|s| s.property("metadata"));
            let mut meta = Map::new();
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if !UNOWNED_META.contains(&mk.as_str()) {
                    meta.insert(format!("f:{mk}"), node(mv, meta_shape, Some(mk)));
                }
            }
            if !meta.is_empty() {
                out.insert("f:metadata".into(), Value::Object(meta));
            }
            continue;
        }
        out.insert(format!("f:{k}"), node(v, shape, Some(k)));
    }
    Value::Object(out)
}

/// Where a write changed the object: the owned fields whose values differ
/// between `old` and `new`, as paths of one element (`f:spec`) or, in the
/// metadata, of two (`f:metadata`, `f:labels`).
pub fn touched(old: &Value, new: &Value) -> Vec<Path> {
    fn fields<'a>(v: Option<&'a Value>, empty: &'a Map<String, Value>) -> &'a Map<String, Value> {
        v.and_then(Value::as_object).unwrap_or(empty)
    }
    let empty = Map::new();
    let differ =
        |a: &Map<String, Value>, b: &Map<String, Value>, skip: &[&str], prefix: &[&str]| {
            let added = b.keys().filter(|k| !a.contains_key(*k));
            a.keys()
                .chain(added)
                .filter(|k| !skip.contains(&k.as_str()) && a.get(*k) != b.get(*k))
                .map(|k| {
                    let mut path: Path = prefix.iter().map(|p| (*p).to_owned()).collect();
                    path.push(format!("f:{k}"));
                    path
                })
                .collect::<Vec<_>>()
        };
    let (old, new) = (fields(Some(old), &empty), fields(Some(new), &empty));
    let mut skip = UNOWNED.to_vec();
    skip.push("metadata");
    let mut out = differ(
        fields(old.get("metadata"), &empty),
        fields(new.get("metadata"), &empty),
        UNOWNED_META,
        &["f:metadata"],
    );
    out.extend(differ(old, new, &skip, &[]));
    out
}

/// The part of [`tree`] under `paths`, as [`touched`] gives them.
pub fn tree_under(obj: &Value, shape: Option<Shape<'_>>, paths: &[Path]) -> Value {
    let mut out = Map::new();
    for path in paths {
        match path.as_slice() {
            [f] => {
                let k = f.strip_prefix("f:").unwrap_or(f);
                if let Some(v) = obj.get(k) {
                    out.insert(f.clone(), node(v, shape, Some(k)));
                }
            }
            [m, f] if m == "f:metadata" => {
                let k = f.strip_prefix("f:").unwrap_or(f);
                if let Some(v) = obj.get("metadata").and_then(|m| m.get(k)) {
                    let meta_shape = shape.and_then(|s| s.property("metadata"));
                    if let Some(meta) = out
                        .entry(m.clone())
                        .or_insert_with(|| json!({}))
                        .as_object_mut()
                    {
                        meta.insert(f.clone(), node(v, meta_shape, Some(k)));
                    }
                }
            }
            _ => {}
        }
    }
    Value::Object(out)
}

/// Whether `path` is one of the leaf paths of `tree` (a `fieldsV1` tree):
/// membership in `FieldSet::from_json(tree)` without building the set.
pub fn is_leaf(tree: &Value, path: &[String]) -> bool {
    !path.is_empty()
        && path
            .iter()
            .try_fold(tree, |node, part| node.get(part))
            .is_some_and(|node| node.as_object().is_none_or(Map::is_empty))
}

/// The subtree of `v`, the value of field `field` in an object of shape
/// `shape` (the shape holding the field); `{}` for a leaf.
fn node(v: &Value, shape: Option<Shape<'_>>, field: Option<&str>) -> Value {
    let (shape, field) = match (shape, field) {
        (Some(s), Some(f)) => (s, f),
        _ => return untyped(v),
    };
    let mut out = Map::new();
    match v {
        Value::Object(m) if !m.is_empty() => {
            // A map's entries have no fields of their own shape.
            let own = (!shape.is_map(field))
                .then(|| shape.property(field))
                .flatten();
            for (k, child) in m {
                let sub = match own {
                    Some(o) => node(child, Some(o), Some(k)),
                    None => untyped(child),
                };
                out.insert(format!("f:{k}"), sub);
            }
        }
        Value::Array(items) if !items.is_empty() => match shape.list_strategy(field) {
            ListStrategy::Atomic => {}
            ListStrategy::Set => {
                for item in items {
                    out.insert(format!("v:{item}"), json!({}));
                }
            }
            ListStrategy::Map(keys) => {
                let items_shape = shape.items(field);
                for item in items {
                    let mut entry = Map::new();
                    entry.insert(".".into(), json!({}));
                    for (k, child) in item.as_object().into_iter().flatten() {
                        entry.insert(format!("f:{k}"), node(child, items_shape, Some(k)));
                    }
                    out.insert(format!("k:{}", item_key(item, &keys)), Value::Object(entry));
                }
            }
        },
        _ => {}
    }
    Value::Object(out)
}

/// A keyed list item's identity, `{"key": value, …}` in key order as
/// upstream writes it.
pub fn item_key(item: &Value, keys: &[&str]) -> Value {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    let mut out = Map::new();
    for k in sorted {
        out.insert(k.to_owned(), item.get(k).cloned().unwrap_or(Value::Null));
    }
    Value::Object(out)
}

/// The subtree of a value with no schema: objects by field, lists atomic.
fn untyped(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, c)| (format!("f:{k}"), untyped(c)))
                .collect(),
        ),
        _ => json!({}),
    }
}

/// The value at a field path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, part| step(v, part))
}

fn step<'a>(v: &'a Value, part: &str) -> Option<&'a Value> {
    if part == "." {
        return Some(v);
    }
    if let Some(f) = part.strip_prefix("f:") {
        return v.get(f);
    }
    let items = v.as_array()?;
    if let Some(k) = part.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        return items
            .iter()
            .find(|i| want.iter().all(|(wk, wv)| i.get(wk) == Some(wv)));
    }
    let want: Value = serde_json::from_str(part.strip_prefix("v:")?).ok()?;
    items.iter().find(|i| **i == want)
}

/// Removes the field at `path` from `obj`: a keyed item when the path ends
/// in `.`, a set item for `v:`, a field otherwise.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let (last, parent_path) = match path.split_last() {
        Some(split) => split,
        None => return,
    };
    let (target, parent_path) = if last == "." {
        match parent_path.split_last() {
            Some((item, rest)) => (item, rest),
            None => return,
        }
    } else {
        (last, parent_path)
    };
    let Some(parent) = parent_path
        .iter()
        .try_fold(obj, |v, part| step_mut(v, part))
    else {
        return;
    };
    if let Some(f) = target.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = parent.as_array_mut() {
        let found = step(&Value::Array(items.clone()), target).cloned();
        if let Some(found) = found {
            items.retain(|i| *i != found);
        }
    }
}

fn step_mut<'a>(v: &'a mut Value, part: &str) -> Option<&'a mut Value> {
    if part == "." {
        return Some(v);
    }
    if let Some(f) = part.strip_prefix("f:") {
        return v.get_mut(f);
    }
    let found = step(v, part)?.clone();
    v.as_array_mut()?.iter_mut().find(|i| **i == found)
}

/// Upstream's dotted rendering of a path, for conflict messages
/// (`.spec.replicas`, `.spec.template.spec.containers[name="web"].image`).
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if let Some(f) = part.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = part.strip_prefix("k:") {
            let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = part.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: Option<Shape> = Some(Shape::Definition("io.k8s.api.apps.v1.Deployment"));

    #[test]
    fn keyed_lists_use_merge_keys_and_round_trip() {
        let d = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let set = FieldSet::of(&d, DEPLOY);
        let fields = set.to_json();
        assert_eq!(fields["f:metadata"], json!({"f:labels": {"f:app": {}}}));
        assert_eq!(
            fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"],
            json!({".": {}, "f:image": {}, "f:name": {}})
        );
        assert_eq!(FieldSet::from_json(&fields), set);
        let image: Path = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"c\"}",
            "f:image",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(value_at(&d, &image), Some(&json!("i")));
        assert_eq!(
            display(&image),
            ".spec.template.spec.containers[name=\"c\"].image"
        );
        let mut d2 = d.clone();
        let mut item = image.clone();
        *item.last_mut().unwrap() = ".".into();
        remove_at(&mut d2, &item);
        assert_eq!(d2["spec"]["template"]["spec"]["containers"], json!([]));
    }

    #[test]
    fn custom_schemas_key_lists_as_they_declare() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "ports": {"type": "array", "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["protocol", "port"],
                "items": {"type": "object", "properties": {"port": {"type": "integer"},
                    "protocol": {"type": "string"}, "name": {"type": "string"}}}},
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "args": {"type": "array", "items": {"type": "string"}}}}}});
        let obj = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "web"}],
            "tags": ["a"], "args": ["x"]}});
        let fields = FieldSet::of(&obj, Some(Shape::Custom(&schema))).to_json();
        assert_eq!(
            fields["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}})
        );
        assert_eq!(fields["f:spec"]["f:tags"], json!({"v:\"a\"": {}}));
        assert_eq!(fields["f:spec"]["f:args"], json!({}));
    }
}
