//! Strategic merge patch: a merge patch that knows, from the schema, which
//! lists merge by key, plus the directives kubectl sends (`$patch`,
//! `$retainKeys`, `$setElementOrder/…`, `$deleteFromPrimitiveList/…`).

use serde_json::{Map, Value};

use crate::schema::{ListStrategy, Shape};
use crate::ApiError;

/// Which lists merge by key: strategic merge patch's (upstream's
/// `patchMergeKey` struct tags) or server-side apply's (its list types).
#[derive(Clone, Copy)]
enum Lists {
    Patch,
    Apply,
}

impl Lists {
    fn strategy<'a>(self, shape: Option<Shape<'a>>, prop: &str) -> ListStrategy<'a> {
        match (self, shape) {
            (_, None) => ListStrategy::Atomic,
            (Self::Patch, Some(s)) => s.list_strategy(prop),
            (Self::Apply, Some(s)) => s.apply_list_strategy(prop),
        }
    }
}

/// Applies `patch` to `original`, an object of shape `shape` (`None`
/// patches as a plain merge patch would, with directives honoured).
pub fn patch(original: &Value, patch: &Value, shape: Option<Shape<'_>>) -> Result<Value, ApiError> {
    merge(original, patch, shape, Lists::Patch)
}

/// Merges an applied configuration into `original`, its lists keyed as
/// server-side apply keys them.
pub fn apply(
    original: &Value,
    config: &Value,
    shape: Option<Shape<'_>>,
) -> Result<Value, ApiError> {
    merge(original, config, shape, Lists::Apply)
}

fn merge(
    original: &Value,
    patch: &Value,
    shape: Option<Shape<'_>>,
    lists: Lists,
) -> Result<Value, ApiError> {
    let mut doc = original.clone();
    match merge_into(&mut doc, patch, shape, lists)? {
        Merged::Kept => Ok(doc),
        Merged::Deleted => Err(ApiError::bad_request("the patch deletes the whole object")),
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError::bad_request(msg.into())
}

/// What became of a value a patch merged into.
#[derive(PartialEq)]
enum Merged {
    Kept,
    Deleted,
}

/// Merges `patch` into `target` in place (`Null` standing for a value
/// not there yet), cloning only what the patch brings.
fn merge_into(
    target: &mut Value,
    patch: &Value,
    shape: Option<Shape<'_>>,
    lists: Lists,
) -> Result<Merged, ApiError> {
    let Some(p) = patch.as_object() else {
        if patch.is_null() {
            return Ok(Merged::Deleted);
        }
        *target = patch.clone();
        return Ok(Merged::Kept);
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => return Ok(Merged::Deleted),
        Some("replace") => {
            let mut out = p.clone();
            out.remove("$patch");
            *target = Value::Object(out);
            return Ok(Merged::Kept);
        }
        Some("merge") | None => {}
        Some(other) => return Err(bad(format!("unknown patch type: {other:?}"))),
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(out) = target else {
        unreachable!("made an object above")
    };
    for (key, value) in p {
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let drop: Vec<&Value> = value.as_array().into_iter().flatten().collect();
            if let Some(Value::Array(items)) = out.get_mut(field) {
                items.retain(|v| !drop.contains(&v));
            }
            continue;
        }
        if key.starts_with("$setElementOrder/") {
            continue;
        }
        if key.starts_with('$') {
            return Err(bad(format!("unknown patch directive: {key:?}")));
        }
        let mut fresh = Value::Null;
        let slot = out.get_mut(key).unwrap_or(&mut fresh);
        let merged = match value {
            Value::Array(items) => {
                let strategy = lists.strategy(shape, key);
                let items_shape = shape.and_then(|s| s.items(key));
                let order = p
                    .get(&format!("$setElementOrder/{key}"))
                    .and_then(Value::as_array);
                merge_list(slot, items, &strategy, items_shape, lists, order)?;
                Merged::Kept
            }
            _ => merge_into(slot, value, shape.and_then(|s| s.property(key)), lists)?,
        };
        match merged {
            Merged::Kept if out.contains_key(key) => {}
            Merged::Kept => {
                out.insert(key.clone(), fresh);
            }
            Merged::Deleted => {
                out.remove(key);
            }
        }
    }
    // Lists named only in an order directive are reordered in place.
    for (key, order) in p {
        if let (Some(field), Value::Array(order)) = (key.strip_prefix("$setElementOrder/"), order) {
            if p.contains_key(field) {
                continue;
            }
            let strategy = lists.strategy(shape, field);
            if let Some(Value::Array(items)) = out.get_mut(field) {
                reorder(items, order, &strategy);
            }
        }
    }
    if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    Ok(Merged::Kept)
}

/// Merges the patch's `items` into the list in `slot` (`Null` when there
/// is none yet) as `strategy` says.
fn merge_list(
    slot: &mut Value,
    patch: &[Value],
    strategy: &ListStrategy,
    items_shape: Option<Shape<'_>>,
    lists: Lists,
    order: Option<&Vec<Value>>,
) -> Result<(), ApiError> {
    let orig = match std::mem::take(slot) {
        Value::Array(items) => items,
        _ => Vec::new(),
    };
    let without_directives = || {
        patch
            .iter()
            .filter(|v| v.get("$patch").is_none())
            .cloned()
            .collect()
    };
    let mut out: Vec<Value> = match strategy {
        ListStrategy::Atomic => {
            if patch.iter().any(|v| v.get("$patch").is_some()) {
                let replace = patch.iter().any(|v| v["$patch"] == "replace");
                if !replace {
                    return Err(bad("$patch directives need a list with a merge key"));
                }
            }
            without_directives()
        }
        ListStrategy::Set => {
            let mut out = orig;
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            out
        }
        ListStrategy::Map(_)
            if patch
                .iter()
                .any(|v| v.get("$patch").and_then(Value::as_str) == Some("replace")) =>
        {
            *slot = Value::Array(without_directives());
            return Ok(());
        }
        ListStrategy::Map(keys) => {
            let mut out = orig;
            for item in patch {
                if let Some(key) = keys.iter().find(|k| item.get(**k).is_none()) {
                    return Err(bad(format!(
                        "map: {item} does not contain declared merge key: {key}"
                    )));
                }
                let pos = out.iter().position(|o| same_item(o, item, keys));
                let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                match (pos, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (None, true) => {}
                    (Some(i), false) => {
                        if merge_into(&mut out[i], item, items_shape, lists)? == Merged::Deleted {
                            out.remove(i);
                        }
                    }
                    (None, false) => {
                        let mut added = Value::Null;
                        if merge_into(&mut added, item, items_shape, lists)? == Merged::Kept {
                            out.push(added);
                        }
                    }
                }
            }
            out
        }
    };
    if let Some(order) = order {
        reorder(&mut out, order, strategy);
    }
    *slot = Value::Array(out);
    Ok(())
}

/// Whether two items of a list merged by `keys` are one item: equal at
/// every key, one that is missing counting as null (as
/// [`crate::fields::item_key`] has it).
fn same_item(a: &Value, b: &Value, keys: &[&str]) -> bool {
    keys.iter()
        .all(|k| a.get(*k).unwrap_or(&Value::Null) == b.get(*k).unwrap_or(&Value::Null))
}

/// Orders `items` as `order` lists them; items it does not name keep their
/// relative order, after the named ones.
fn reorder(items: &mut [Value], order: &[Value], strategy: &ListStrategy) {
    let rank = |v: &Value| -> usize {
        order
            .iter()
            .position(|o| match strategy {
                ListStrategy::Map(keys) => {
                    keys.iter().all(|k| o.get(*k).is_some()) && same_item(o, v, keys)
                }
                _ => o == v,
            })
            .unwrap_or(usize::MAX)
    };
    items.sort_by_key(|v| rank(v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEPLOY: Option<Shape> = Some(Shape::Definition("io.k8s.api.apps.v1.Deployment"));

    fn check(original: Value, p: Value, want: Value) {
        assert_eq!(patch(&original, &p, DEPLOY).unwrap(), want);
    }

    fn pod(containers: Value) -> Value {
        json!({"spec": {"template": {"spec": {"containers": containers}}}})
    }

    #[test]
    fn containers_merge_by_name() {
        check(
            pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}])),
            pod(json!([{"name": "b", "image": "b:2"}])),
            pod(json!([{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}])),
        );
    }

    #[test]
    fn delete_directive_removes_one_item() {
        check(
            pod(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])),
            pod(json!([{"name": "a", "$patch": "delete"}])),
            pod(json!([{"name": "b", "image": "b"}])),
        );
    }

    #[test]
    fn set_element_order_orders_the_merged_list() {
        let p = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [{"name": "a", "image": "a:2"}]}}}});
        check(
            pod(json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}])),
            p,
            pod(json!([{"name": "b", "image": "b"}, {"name": "a", "image": "a:2"}])),
        );
    }

    #[test]
    fn null_removes_and_maps_merge() {
        check(
            json!({"metadata": {"labels": {"a": "1", "b": "2"}}}),
            json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
            json!({"metadata": {"labels": {"b": "2", "c": "3"}}}),
        );
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let t = |v: Value| json!({"spec": {"template": {"spec": {"tolerations": v}}}});
        check(
            t(json!([{"key": "a"}])),
            t(json!([{"key": "b"}])),
            t(json!([{"key": "b"}])),
        );
    }

    #[test]
    fn retain_keys_drops_the_other_union_member() {
        check(
            json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}),
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}),
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
        );
    }

    #[test]
    fn primitive_set_lists_union_and_delete() {
        check(
            json!({"metadata": {"finalizers": ["a", "b"]}}),
            json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
    }

    #[test]
    fn replace_directive_replaces_a_map() {
        check(
            json!({"metadata": {"labels": {"a": "1"}}}),
            json!({"metadata": {"labels": {"$patch": "replace", "b": "2"}}}),
            json!({"metadata": {"labels": {"b": "2"}}}),
        );
    }

    #[test]
    fn items_are_one_when_every_key_is_equal() {
        let keys = ["port", "protocol"];
        let cases = [
            (
                json!({"port": 80, "protocol": "TCP"}),
                json!({"protocol": "TCP", "port": 80, "name": "x"}),
                true,
            ),
            (
                json!({"port": 80}),
                json!({"port": 80, "protocol": null}),
                true,
            ),
            (
                json!({"port": 80, "protocol": "UDP"}),
                json!({"port": 80, "protocol": "TCP"}),
                false,
            ),
            (json!({"port": 80}), json!({"port": 81}), false),
            (json!({"port": 80}), json!({"port": "80"}), false),
        ];
        for (a, b, one) in cases {
            assert_eq!(same_item(&a, &b, &keys), one, "{a} and {b}");
            // The identity the managed fields write says the same.
            let by_identity =
                crate::fields::item_key(&a, &keys) == crate::fields::item_key(&b, &keys);
            assert_eq!(by_identity, one, "{a} and {b}");
        }
    }

    #[test]
    fn missing_merge_key_is_a_bad_request() {
        let err = patch(&pod(json!([])), &pod(json!([{"image": "x"}])), DEPLOY).unwrap_err();
        assert_eq!(err.code, 400);
    }
}
