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

/// Which top-level fields a write owns, by the subresource it goes
/// through: a write to `/status` (or to a CSR's `/approval`) owns the
/// status and nothing else (the strategy keeps the rest as stored, as
/// upstream's reset fields); any other write everything but the status,
/// or everything where the resource has no status subresource. No write
/// owns `apiVersion` or `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Main,
    Status,
    Whole,
}

impl Scope {
    /// The scope of a write through `subresource` to a resource with a
    /// status subresource (`status_apart`) or without.
    pub fn of(subresource: Option<&str>, status_apart: bool) -> Self {
        match subresource {
            Some("status" | "approval") => Self::Status,
            _ if status_apart => Self::Main,
            _ => Self::Whole,
        }
    }

    /// Whether a write in this scope owns the top-level field `k`
    /// (`metadata` for its fields other than [`UNOWNED_META`]).
    fn owns(self, k: &str) -> bool {
        match self {
            Self::Main => !matches!(k, "apiVersion" | "kind" | "status"),
            Self::Status => k == "status",
            Self::Whole => !matches!(k, "apiVersion" | "kind"),
        }
    }
}

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
    /// Every field of `obj`, an object of shape `shape`, that a write in
    /// `scope` owns.
    pub fn of(obj: &Value, shape: Option<Shape<'_>>, scope: Scope) -> Self {
        Self::from_json(&tree(obj, shape, scope))
    }

    /// The fields an apply of `config` owns: as [`FieldSet::of`], but no
    /// empty map, object or list that is not atomic (upstream's set of an
    /// applied configuration has none: `labels: {}` claims nothing).
    pub fn applied(config: &Value, shape: Option<Shape<'_>>, scope: Scope) -> Self {
        Self::from_json(&tree_of(config, shape, scope, true, |_, _| true))
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

/// The `fieldsV1` tree of every field of `obj`, an object of shape
/// `shape`, that a write in `scope` owns.
pub fn tree(obj: &Value, shape: Option<Shape<'_>>, scope: Scope) -> Value {
    tree_of(obj, shape, scope, false, |_, _| true)
}

/// The part of [`tree`] under `paths`, as [`touched`] gives them.
pub fn tree_under(obj: &Value, shape: Option<Shape<'_>>, scope: Scope, paths: &[Path]) -> Value {
    tree_of(obj, shape, scope, false, |in_meta, k| {
        paths.contains(&field_path(in_meta, k))
    })
}

/// Where a write in `scope` changed the object: the fields it owns whose
/// values differ between `old` and `new`, as paths of one element
/// (`f:spec`) or, in the metadata, of two (`f:metadata`, `f:labels`).
pub fn touched(old: &Value, new: &Value, scope: Scope) -> Vec<Path> {
    let mut out = Vec::new();
    each_owned(old, scope, |in_meta, k, v| {
        if owned_field(new, in_meta, k) != Some(v) {
            out.push(field_path(in_meta, k));
        }
    });
    each_owned(new, scope, |in_meta, k, _| {
        if owned_field(old, in_meta, k).is_none() {
            out.push(field_path(in_meta, k));
        }
    });
    out
}

/// The tree of the owned fields of `obj` that `wanted` picks (by whether
/// they are metadata fields, and by name), in the object's order; of an
/// applied configuration when `applied` (see [`FieldSet::applied`]).
fn tree_of(
    obj: &Value,
    shape: Option<Shape<'_>>,
    scope: Scope,
    applied: bool,
    wanted: impl Fn(bool, &str) -> bool,
) -> Value {
    let meta_shape = shape.and_then(|s| s.property("metadata"));
    let mut out = Map::new();
    each_owned(obj, scope, |in_meta, k, v| {
        if !wanted(in_meta, k) {
            return;
        }
        let holder = if in_meta { meta_shape } else { shape };
        let Some(sub) = node(v, holder, Some(k), applied) else {
            return;
        };
        let into = if in_meta {
            let meta = out.entry("f:metadata").or_insert_with(|| json!({}));
            meta.as_object_mut().expect("built as an object")
        } else {
            &mut out
        };
        into.insert(field_key(k), sub);
    });
    Value::Object(out)
}

/// Calls `f` with every field of `obj` a write in `scope` owns, in the
/// object's order: `(true, name, value)` for a metadata field, `(false, …)`
/// for a top-level one.
fn each_owned<'a>(obj: &'a Value, scope: Scope, mut f: impl FnMut(bool, &'a str, &'a Value)) {
    for (k, v) in obj.as_object().into_iter().flatten() {
        if !scope.owns(k) {
            continue;
        }
        if k == "metadata" {
            for (mk, mv) in v.as_object().into_iter().flatten() {
                if !UNOWNED_META.contains(&mk.as_str()) {
                    f(true, mk, mv);
                }
            }
        } else {
            f(false, k, v);
        }
    }
}

/// The owned field `k` of `obj`, a metadata field when `in_meta`.
fn owned_field<'a>(obj: &'a Value, in_meta: bool, k: &str) -> Option<&'a Value> {
    match in_meta {
        true => obj.get("metadata")?.get(k),
        false => obj.get(k),
    }
}

/// The path of the owned field `k`, a metadata field when `in_meta`.
fn field_path(in_meta: bool, k: &str) -> Path {
    let field = field_key(k);
    match in_meta {
        true => vec!["f:metadata".to_owned(), field],
        false => vec![field],
    }
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
/// `shape` (the shape holding the field); `{}` for a leaf; none for an
/// empty map or list of an applied configuration (`applied`).
fn node(v: &Value, shape: Option<Shape<'_>>, field: Option<&str>, applied: bool) -> Option<Value> {
    let (shape, field) = match (shape, field) {
        (Some(s), Some(f)) => (s, f),
        _ => return Some(untyped(v)),
    };
    let mut out = Map::new();
    match v {
        Value::Object(_) if shape.is_atomic_object(field) => {}
        Value::Object(m) => {
            let own = shape.fields_of(field);
            for (k, child) in m {
                let sub = match own {
                    Some(o) => node(child, Some(o), Some(k), applied),
                    None => Some(untyped(child)),
                };
                if let Some(sub) = sub {
                    out.insert(field_key(k), sub);
                }
            }
            if applied && out.is_empty() {
                return None;
            }
        }
        Value::Array(items) => match shape.apply_list_strategy(field) {
            ListStrategy::Atomic => {}
            _ if items.is_empty() => {
                if applied {
                    return None;
                }
            }
            ListStrategy::Set => {
                for item in items {
                    out.insert(format!("v:{item}"), json!({}));
                }
            }
            ListStrategy::Map(keys) if shape.has_atomic_items(field) => {
                for item in items {
                    out.insert(item_key(item, &keys), json!({}));
                }
            }
            ListStrategy::Map(keys) => {
                let items_shape = shape.items(field);
                for item in items {
                    let mut entry = Map::new();
                    entry.insert(".".into(), json!({}));
                    for (k, child) in item.as_object().into_iter().flatten() {
                        if let Some(sub) = node(child, items_shape, Some(k), applied) {
                            entry.insert(field_key(k), sub);
                        }
                    }
                    out.insert(item_key(item, &keys), Value::Object(entry));
                }
            }
        },
        _ => {}
    }
    Some(Value::Object(out))
}

/// Marks with `.` the nodes of `tree`, the `fieldsV1` tree of what an
/// update wrote, that the update added, as upstream records an update: a
/// keyed item, or an object, map or list with fields of its own, that
/// `old` (none for a create) did not have, unless every object of its
/// type has it (a resource's `spec`, a Deployment's `strategy`); the items
/// `old` had lose their mark. `metadata` itself is no manager's.
pub fn mark_added(tree: &mut Value, old: Option<&Value>, shape: Option<Shape<'_>>) {
    /// Where the walk is: the shape of the object or of the list's items,
    /// and whether every object of the type at hand has the node.
    #[derive(Clone, Copy)]
    struct At<'a> {
        fields: Option<Shape<'a>>,
        items: Option<Shape<'a>>,
        always: bool,
    }
    fn walk(node: &mut Map<String, Value>, old: Option<&Value>, at: At<'_>, root: bool) {
        // Nodes whose only change was their mark: nothing of theirs changed.
        let mut unchanged = Vec::new();
        for (part, child) in node.iter_mut() {
            let Some(sub) = child.as_object_mut().filter(|m| !m.is_empty()) else {
                continue;
            };
            let (here, was) = match part.strip_prefix("f:") {
                Some(f) => {
                    let here = At {
                        fields: at.fields.and_then(|s| s.fields_of(f)),
                        items: at.fields.and_then(|s| s.items(f)),
                        always: at.always && at.fields.is_some_and(|s| s.always_has(f)),
                    };
                    (here, old.and_then(|o| o.get(f)))
                }
                None => {
                    let here = At {
                        fields: at.items,
                        items: None,
                        always: false,
                    };
                    (here, old.and_then(|o| step(o, part)))
                }
            };
            let added = !here.always && was.is_none_or(Value::is_null);
            if added && !(root && part == "f:metadata") {
                if !sub.contains_key(".") {
                    sub.shift_insert(0, ".".into(), json!({}));
                }
            } else if sub.shift_remove(".").is_some() && sub.is_empty() {
                unchanged.push(part.clone());
                continue;
            }
            walk(sub, was, here, false);
        }
        for part in unchanged {
            node.shift_remove(&part);
        }
    }
    let at = At {
        fields: shape,
        items: None,
        always: matches!(shape, Some(Shape::Definition(_))),
    };
    if let Some(root) = tree.as_object_mut() {
        walk(root, old, at, true);
    }
}

/// Whether `path`, a path of an entry, still names something in `tree`:
/// one of its leaves, or the `.` of one of its nodes.
pub fn names_in(tree: &Value, path: &[String]) -> bool {
    match path.split_last() {
        Some((last, node)) if last == "." => {
            node.iter().try_fold(tree, |n, part| n.get(part)).is_some()
        }
        _ => is_leaf(tree, path),
    }
}

/// A keyed list item's key in a `fieldsV1` tree, `k:{"key":value,…}`
/// with the keys in order, as upstream writes it (written straight out,
/// without building the object first: a tree has one for every item).
pub fn item_key(item: &Value, keys: &[&str]) -> String {
    let mut sorted = keys.to_vec();
    sorted.sort_unstable();
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(b"k:{");
    for (i, k) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string or a value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, k);
        out.push(b':');
        let _ = serde_json::to_writer(&mut out, item.get(k).unwrap_or(&Value::Null));
    }
    out.push(b'}');
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// A field's key in a `fieldsV1` tree, `f:<name>` (built without the
/// formatting machinery: a tree has a key for every field written).
fn field_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len() + 2);
    key.push_str("f:");
    key.push_str(name);
    key
}

/// The subtree of a value with no schema: objects by field, lists atomic.
fn untyped(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, c)| (field_key(k), untyped(c))).collect())
        }
        _ => json!({}),
    }
}

/// The value at a field path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, part| step(v, part))
}

/// [`value_at`], to change.
pub fn value_at_mut<'a>(obj: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(obj, |v, part| step_mut(v, part))
}

/// Renames the keyed items of `set`'s paths that name other key fields
/// than their list's (stored before the list was keyed so, as a port once
/// was by its number alone) to the keys of those items in `obj`; a path
/// that does not resolve in `obj` stays as it is.
pub fn rekey(set: &mut FieldSet, obj: &Value, shape: Option<Shape<'_>>) {
    let Some(shape) = shape else { return };
    let renamed: Vec<(Path, Path)> = set
        .0
        .iter()
        .filter(|p| p.iter().any(|part| part.starts_with("k:")))
        .filter_map(|p| rekeyed(p, obj, shape).map(|new| (p.clone(), new)))
        .collect();
    for (old, new) in renamed {
        set.0.remove(&old);
        set.0.insert(new);
    }
}

/// `path` with its keyed items named by their lists' keys, if any was not.
/// Which items are named otherwise is read from the schema and the path
/// alone; only then is the object looked into (the common answer, none,
/// costs no lookup in it).
fn rekeyed(path: &Path, obj: &Value, shape: Shape<'_>) -> Option<Path> {
    // The keyed items named otherwise: their place in the path, and their
    // list's keys.
    let mut stale = Vec::new();
    let mut shape = Some(shape);
    // The object shape and the field the walk last stepped into.
    let mut holder: Option<(Shape<'_>, &str)> = None;
    for (i, part) in path.iter().enumerate() {
        if let Some(f) = part.strip_prefix("f:") {
            holder = shape.map(|s| (s, f));
            shape = shape.and_then(|s| s.fields_of(f));
        } else if let Some(k) = part.strip_prefix("k:") {
            let Some((of, f)) = holder.take() else { break };
            let ListStrategy::Map(keys) = of.apply_list_strategy(f) else {
                break;
            };
            let named: Map<String, Value> = serde_json::from_str(k).ok()?;
            if named.len() != keys.len() || !keys.iter().all(|k| named.contains_key(*k)) {
                stale.push((i, keys));
            }
            shape = of.items(f);
        } else {
            break;
        }
    }
    if stale.is_empty() {
        return None;
    }
    let mut out = path.clone();
    let mut v = obj;
    for (i, part) in path.iter().enumerate().take(stale.last()?.0 + 1) {
        v = step(v, part)?;
        if let Some((_, keys)) = stale.iter().find(|(at, _)| *at == i) {
            out[i] = item_key(v, keys);
        }
    }
    Some(out)
}

/// What an apply needs of its configuration beyond its fields, found in
/// one walk (see [`prepare_applied`]).
#[derive(Debug, Default)]
pub struct Prepared {
    /// The key fields given their defaults.
    pub defaulted: Vec<Path>,
    /// The atomic objects, which an apply replaces whole where it merges
    /// other objects field by field.
    pub atomic: Vec<Path>,
}

/// Gives the items of keyed lists in `config`, an applied configuration
/// of shape `shape`, the defaults of the key fields they leave out (an
/// applied `containerPort` is a TCP port), and finds its atomic objects.
pub fn prepare_applied(config: &mut Value, shape: Option<Shape<'_>>) -> Prepared {
    fn walk(v: &mut Value, shape: Shape<'_>, path: &mut Path, out: &mut Prepared) {
        for (k, child) in v.as_object_mut().into_iter().flatten() {
            path.push(field_key(k));
            match child {
                Value::Object(_) if shape.is_atomic_object(k) => out.atomic.push(path.clone()),
                Value::Object(_) => {
                    if let Some(own) = shape.fields_of(k) {
                        walk(child, own, path, out);
                    }
                }
                Value::Array(items) => {
                    if let ListStrategy::Map(keys) = shape.apply_list_strategy(k) {
                        let whole = shape.has_atomic_items(k);
                        let of = shape.items(k);
                        for item in items.iter_mut().filter(|i| i.is_object()) {
                            let mut filled = Vec::new();
                            for key in &keys {
                                let default = of.and_then(|of| of.key_default(key));
                                if let (None, Some(default)) = (item.get(*key), default) {
                                    item[*key] = default;
                                    filled.push(field_key(key));
                                }
                            }
                            path.push(item_key(item, &keys));
                            for f in filled {
                                out.defaulted.push([path.as_slice(), &[f]].concat());
                            }
                            match of {
                                _ if whole => out.atomic.push(path.clone()),
                                Some(of) => walk(item, of, path, out),
                                None => {}
                            }
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
            path.pop();
        }
    }
    let mut out = Prepared::default();
    if let Some(shape) = shape {
        walk(config, shape, &mut Vec::new(), &mut out);
    }
    out
}

/// What an update changed, as the `fieldsV1` tree it records: the leaves
/// of `tree` (the tree of what it wrote) whose values differ between `old`
/// and `new`, marked as [`mark_added`] marks them, with keys in the order
/// [`FieldSet::to_json`] writes them. The same tree as those leaves put
/// through `to_json`, `mark_added` and back, built without their paths.
pub fn changed_tree(tree: &Value, old: &Value, new: &Value, shape: Option<Shape<'_>>) -> Value {
    fn walk(
        tree: &Map<String, Value>,
        (old, new): (Option<&Value>, Option<&Value>),
    ) -> Map<String, Value> {
        let mut out = Map::new();
        for (part, sub) in tree {
            let here = (
                old.and_then(|v| step(v, part)),
                new.and_then(|v| step(v, part)),
            );
            match sub.as_object() {
                Some(m) if !m.is_empty() => {
                    let changed = walk(m, here);
                    if !changed.is_empty() {
                        out.insert(part.clone(), Value::Object(changed));
                    }
                }
                _ if here.0 != here.1 => {
                    out.insert(part.clone(), json!({}));
                }
                _ => {}
            }
        }
        out
    }
    let mut changed = Value::Object(match tree.as_object() {
        Some(tree) => walk(tree, (Some(old), Some(new))),
        None => Map::new(),
    });
    mark_added(&mut changed, Some(old), shape);
    changed.sort_all_objects();
    changed
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
        // A key field an item lacks is null, as `item_key` writes it.
        return items.iter().find(|i| {
            want.iter()
                .all(|(wk, wv)| i.get(wk).unwrap_or(&Value::Null) == wv)
        });
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

    /// The changed leaves as `track_update` found them before
    /// [`changed_tree`]: paths, then a tree, marked, and paths again.
    fn changed_by_paths(tree: &Value, old: &Value, new: &Value, shape: Option<Shape<'_>>) -> Value {
        let changed = changed_leaves(tree, old, new);
        let mut added = FieldSet(changed).to_json();
        mark_added(&mut added, Some(old), shape);
        FieldSet::from_json(&added).to_json()
    }

    /// The leaf paths of `tree` (a `fieldsV1` tree) whose values differ
    /// between `old` and `new`: [`value_at`] on both for every leaf, in one
    /// walk down both objects (a keyed item is looked up once, not once per
    /// field of it).
    fn changed_leaves(tree: &Value, old: &Value, new: &Value) -> BTreeSet<Path> {
        fn walk(
            tree: &Map<String, Value>,
            (old, new): (Option<&Value>, Option<&Value>),
            path: &mut Path,
            out: &mut BTreeSet<Path>,
        ) {
            for (part, sub) in tree {
                let here = (
                    old.and_then(|v| step(v, part)),
                    new.and_then(|v| step(v, part)),
                );
                path.push(part.clone());
                match sub.as_object() {
                    Some(m) if !m.is_empty() => walk(m, here, path, out),
                    _ if here.0 != here.1 => {
                        out.insert(path.clone());
                    }
                    _ => {}
                }
                path.pop();
            }
        }
        let mut out = BTreeSet::new();
        if let Some(tree) = tree.as_object() {
            walk(tree, (Some(old), Some(new)), &mut Vec::new(), &mut out);
        }
        out
    }

    #[test]
    fn keyed_lists_use_merge_keys_and_round_trip() {
        let d = json!({"metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let set = FieldSet::of(&d, DEPLOY, Scope::Main);
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
        let fields = FieldSet::of(&obj, Some(Shape::Custom(&schema)), Scope::Main).to_json();
        assert_eq!(
            fields["f:spec"]["f:ports"]["k:{\"port\":80,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}})
        );
        assert_eq!(fields["f:spec"]["f:tags"], json!({"v:\"a\"": {}}));
        assert_eq!(fields["f:spec"]["f:args"], json!({}));
    }

    #[test]
    fn the_changed_tree_is_what_the_changed_paths_give() {
        const POD: Option<Shape> = Some(Shape::Definition("io.k8s.api.core.v1.Pod"));
        let pending = json!({"metadata": {"name": "p", "labels": {"a": "1"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Pending", "qosClass": "Burstable",
                "conditions": [{"type": "PodScheduled", "status": "True"}]}});
        let mut running = pending.clone();
        running["status"] = json!({"phase": "Running", "qosClass": "Burstable", "podIP": "10.0.0.1",
            "podIPs": [{"ip": "10.0.0.1"}], "startTime": "2026-01-01T00:00:00Z",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]});
        let mut stopped = running.clone();
        stopped["status"]["conditions"] =
            json!([{"type": "Ready", "status": "False", "reason": "Stopped"}]);
        stopped["status"]["containerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 0}});
        stopped["status"].as_object_mut().unwrap().remove("podIPs");
        let mut relabelled = stopped.clone();
        relabelled["metadata"]["labels"] = json!({"b": "2", "a": "1"});
        relabelled["spec"]["containers"][0]["image"] = json!("j");
        relabelled["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "d", "image": "k", "ports": [{"containerPort": 80}]}));
        let d1 = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let mut d2 = d1.clone();
        d2["spec"]["strategy"] = json!({"type": "Recreate"});
        d2["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "A", "value": "1"}]);
        let cases = [
            (&pending, &running, POD, Scope::Status),
            (&running, &stopped, POD, Scope::Status),
            (&stopped, &running, POD, Scope::Status),
            (&stopped, &relabelled, POD, Scope::Main),
            (&relabelled, &pending, POD, Scope::Main),
            (&d1, &d2, DEPLOY, Scope::Main),
            (&d2, &d1, DEPLOY, Scope::Main),
            (&d1, &d2, None, Scope::Whole),
        ];
        for (old, new, shape, scope) in cases {
            let touched = touched(old, new, scope);
            let tree = tree_under(new, shape, scope, &touched);
            let direct = changed_tree(&tree, old, new, shape);
            assert_eq!(
                direct,
                changed_by_paths(&tree, old, new, shape),
                "{old} → {new}"
            );
            // The same keys in the same order, not only equal maps.
            assert_eq!(
                direct.to_string(),
                changed_by_paths(&tree, old, new, shape).to_string()
            );
            assert!(
                direct.as_object().is_some_and(|m| !m.is_empty()),
                "{old} → {new}"
            );
        }
    }
}
