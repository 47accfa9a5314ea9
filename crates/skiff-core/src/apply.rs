//! Field management: server-side apply, and the `managedFields` bookkeeping
//! of ordinary writes.

use serde_json::{json, Map, Value};

use std::collections::BTreeSet;

use crate::fields::{self, display, remove_at, tree, value_at, FieldSet, Path};
use crate::schema::Shape;
use crate::{meta, strategic, ApiError};

/// One entry of `metadata.managedFields`.
#[derive(Clone, Debug)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn parse(v: &Value) -> Option<Self> {
        Some(Self {
            manager: v["manager"].as_str()?.to_owned(),
            operation: v["operation"].as_str().unwrap_or("Update").to_owned(),
            api_version: v["apiVersion"].as_str().unwrap_or("").to_owned(),
            time: v["time"].as_str().unwrap_or("").to_owned(),
            subresource: v["subresource"].as_str().map(str::to_owned),
            fields: FieldSet::from_json(&v["fieldsV1"]),
        })
    }

    fn to_json(&self) -> Value {
        entry_json(
            &self.manager,
            &self.operation,
            &self.api_version,
            &self.time,
            self.subresource.as_deref(),
            self.fields.to_json(),
        )
    }
}

/// A `managedFields` entry as JSON, in upstream's field order (built
/// directly: `json!` would copy the fields tree through a serializer).
fn entry_json(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: &str,
    subresource: Option<&str>,
    fields: Value,
) -> Value {
    let mut m = Map::with_capacity(7);
    m.insert("manager".into(), manager.into());
    m.insert("operation".into(), operation.into());
    m.insert("apiVersion".into(), api_version.into());
    m.insert("time".into(), time.into());
    m.insert("fieldsType".into(), "FieldsV1".into());
    m.insert("fieldsV1".into(), fields);
    if let Some(s) = subresource {
        m.insert("subresource".into(), s.into());
    }
    Value::Object(m)
}

fn entries(obj: &Value) -> Vec<Entry> {
    meta::get(obj, "managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Entry::parse)
        .collect()
}

fn store(obj: &mut Value, list: Vec<Entry>) {
    let list: Vec<Value> = list
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| e.to_json())
        .collect();
    if list.is_empty() {
        meta::remove(obj, "managedFields");
    } else {
        meta::set(obj, "managedFields", list);
    }
}

/// Who is writing, and through which operation.
pub struct Manager<'a> {
    pub name: &'a str,
    pub api_version: &'a str,
    pub subresource: Option<&'a str>,
}

/// Server-side apply of `config` onto `current` (absent on create) by
/// `manager`. Fields another manager owns with a different value are
/// conflicts unless `force`; fields this manager applied before and no
/// longer applies are removed unless someone else owns them.
pub fn apply(
    current: Option<&Value>,
    config: &Value,
    manager: &Manager,
    force: bool,
    shape: Option<Shape<'_>>,
) -> Result<Value, ApiError> {
    let empty = json!({});
    let current = current.unwrap_or(&empty);
    let mut managers = entries(current);
    let applied = FieldSet::of(config, shape);
    let is_me = |e: &Entry| e.manager == manager.name && e.operation == "Apply";

    let mut conflicts = Vec::new();
    for e in managers.iter().filter(|e| !is_me(e)) {
        // A keyed item itself (`.`) is shared by whoever sets its fields.
        for path in applied
            .0
            .intersection(&e.fields.0)
            .filter(|p| p.last().is_none_or(|l| l != "."))
        {
            if value_at(current, path) != value_at(config, path) {
                conflicts.push((e.manager.clone(), path.clone()));
            }
        }
    }
    let force =
        force || (!conflicts.is_empty() && upgrades_client_side_apply(current, &conflicts, shape));
    if !conflicts.is_empty() && !force {
        let shown: Vec<(String, String)> = conflicts
            .iter()
            .map(|(m, p)| (m.clone(), display(p)))
            .collect();
        return Err(ApiError::apply_conflict(&shown));
    }

    let mut patch = config.clone();
    meta::remove(&mut patch, "managedFields");
    let mut merged = strategic::patch(current, &patch, shape)?;

    let previous = managers
        .iter()
        .find(|e| is_me(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for path in previous.0.difference(&applied.0) {
        let owned_elsewhere = managers
            .iter()
            .any(|e| !is_me(e) && e.fields.0.contains(path));
        if !owned_elsewhere {
            remove_at(&mut merged, path);
        }
    }
    if force {
        for e in managers.iter_mut().filter(|e| !is_me(e)) {
            e.fields.0.retain(|p| !applied.0.contains(p));
        }
    }
    managers.retain(|e| !is_me(e));
    managers.push(Entry {
        manager: manager.name.to_owned(),
        operation: "Apply".into(),
        api_version: manager.api_version.to_owned(),
        time: meta::now(),
        subresource: manager.subresource.map(str::to_owned),
        fields: applied,
    });
    store(&mut merged, managers);
    Ok(merged)
}

/// The manager kubectl's client-side apply writes as.
const CLIENT_SIDE_APPLY: &str = "kubectl-client-side-apply";

/// Upstream's path from client-side to server-side apply: conflicts only
/// with client-side apply, on fields its last-applied configuration set,
/// are taken over rather than refused.
fn upgrades_client_side_apply(
    current: &Value,
    conflicts: &[(String, crate::fields::Path)],
    shape: Option<Shape<'_>>,
) -> bool {
    let Some(last) = meta::get(current, "annotations")
        .and_then(|a| a.get("kubectl.kubernetes.io/last-applied-configuration"))
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    else {
        return false;
    };
    let last_applied = FieldSet::of(&last, shape);
    conflicts
        .iter()
        .all(|(manager, path)| manager == CLIENT_SIDE_APPLY && last_applied.0.contains(path))
}

/// Records an ordinary write (create, update, patch): the fields it changed
/// move to `manager`. A write that sets `managedFields` itself keeps them.
pub fn track_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &Manager,
    shape: Option<Shape<'_>>,
) {
    let given = meta::get(new, "managedFields");
    if given.is_some() && given != old.and_then(|o| meta::get(o, "managedFields")) {
        return;
    }
    let Some(old) = old else {
        // A new object: the writer owns everything in it.
        let fields = tree(new, shape);
        if fields.as_object().is_some_and(|m| !m.is_empty()) {
            let entry = entry_json(
                manager.name,
                "Update",
                manager.api_version,
                &meta::now(),
                manager.subresource,
                fields,
            );
            meta::set(new, "managedFields", Value::Array(vec![entry]));
        }
        return;
    };
    let unchanged = meta::equal_except(old, new, fields::UNOWNED, fields::UNOWNED_META);
    // The object keeps its managed fields, and the write leaves every owned
    // field as it was (a status write): nothing moves, no tree is built.
    if unchanged && given.is_some() {
        return;
    }
    let now_tree = tree(new, shape);
    let mut managers = entries(old);
    for e in managers.iter_mut() {
        e.fields.0.retain(|p| fields::is_leaf(&now_tree, p));
    }
    // A write that leaves every owned field as it was but drops the
    // managed fields (the same object sent again without them) gets the
    // stored ones: the paths are not compared one by one.
    if unchanged {
        store(new, managers);
        return;
    }
    let now = FieldSet::from_json(&now_tree);
    let changed: BTreeSet<Path> = now
        .0
        .iter()
        .filter(|p| value_at(old, p) != value_at(new, p))
        .cloned()
        .collect();
    let is_me = |e: &Entry| {
        e.manager == manager.name
            && e.operation == "Update"
            && e.subresource.as_deref() == manager.subresource
    };
    if !changed.is_empty() {
        for e in managers.iter_mut().filter(|e| !is_me(e)) {
            e.fields.0.retain(|p| !changed.contains(p));
        }
        match managers.iter_mut().find(|e| is_me(e)) {
            Some(e) => {
                e.fields.0.extend(changed);
                e.time = meta::now();
            }
            None => managers.push(Entry {
                manager: manager.name.to_owned(),
                operation: "Update".into(),
                api_version: manager.api_version.to_owned(),
                time: meta::now(),
                subresource: manager.subresource.map(str::to_owned),
                fields: FieldSet(changed),
            }),
        }
    }
    store(new, managers);
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: Option<Shape> = Some(Shape::Definition("io.k8s.api.apps.v1.Deployment"));

    fn mgr(name: &str) -> Manager<'_> {
        Manager {
            name,
            api_version: "apps/v1",
            subresource: None,
        }
    }

    fn deploy(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": image}]}}}})
    }

    #[test]
    fn apply_then_conflict_then_force() {
        let first = apply(None, &deploy(1, "i:1"), &mgr("alice"), false, DEPLOY).unwrap();
        assert_eq!(first["metadata"]["managedFields"][0]["manager"], "alice");
        // Same values from another manager: shared, no conflict.
        let shared = apply(Some(&first), &deploy(1, "i:1"), &mgr("bob"), false, DEPLOY).unwrap();
        let err = apply(Some(&shared), &deploy(3, "i:1"), &mgr("bob"), false, DEPLOY).unwrap_err();
        assert_eq!((err.code, err.reason), (409, "Conflict"));
        assert!(err.message.contains(".spec.replicas"), "{}", err.message);
        let forced = apply(Some(&shared), &deploy(3, "i:1"), &mgr("bob"), true, DEPLOY).unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
    }

    #[test]
    fn fields_dropped_from_config_are_removed() {
        let mut with_label = deploy(1, "i");
        with_label["metadata"]["labels"] = json!({"a": "1"});
        let first = apply(None, &with_label, &mgr("alice"), false, DEPLOY).unwrap();
        let second = apply(Some(&first), &deploy(1, "i"), &mgr("alice"), false, DEPLOY).unwrap();
        assert!(second["metadata"]["labels"].get("a").is_none(), "{second}");
    }

    #[test]
    fn updates_move_changed_fields_to_the_writer() {
        let first = apply(None, &deploy(1, "i"), &mgr("alice"), false, DEPLOY).unwrap();
        let mut scaled = first.clone();
        scaled["spec"]["replicas"] = json!(5);
        track_update(Some(&first), &mut scaled, &mgr("scaler"), DEPLOY);
        let managed = scaled["metadata"]["managedFields"].as_array().unwrap();
        let scaler = managed.iter().find(|e| e["manager"] == "scaler").unwrap();
        assert_eq!(scaler["fieldsV1"], json!({"f:spec": {"f:replicas": {}}}));
        // Now alice re-applying replicas 1 conflicts with the scaler.
        let err = apply(Some(&scaled), &deploy(1, "i"), &mgr("alice"), false, DEPLOY).unwrap_err();
        assert!(err.message.contains("scaler"));
    }

    #[test]
    fn a_write_leaving_owned_fields_as_they_were_moves_none() {
        let first = apply(None, &deploy(1, "i"), &mgr("alice"), false, DEPLOY).unwrap();
        let owned = first["metadata"]["managedFields"].clone();
        let mut status = first.clone();
        status["status"] = json!({"replicas": 1});
        status["metadata"]["resourceVersion"] = json!("7");
        track_update(Some(&first), &mut status, &mgr("kubelet"), DEPLOY);
        assert_eq!(status["metadata"]["managedFields"], owned);
        // Sent without them (a PUT), they are kept from the stored object.
        let mut bare = first.clone();
        meta::remove(&mut bare, "managedFields");
        track_update(Some(&first), &mut bare, &mgr("kubelet"), DEPLOY);
        assert_eq!(bare["metadata"]["managedFields"], owned);
        // A stored path the object no longer holds stays through a write
        // that keeps the managed fields (as upstream, which compares only
        // what the write changed), and goes when they are taken over.
        let mut stale = first.clone();
        stale["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:paused"] = json!({});
        let mut next = stale.clone();
        next["status"] = json!({"replicas": 2});
        track_update(Some(&stale), &mut next, &mgr("kubelet"), DEPLOY);
        assert_eq!(
            next["metadata"]["managedFields"],
            stale["metadata"]["managedFields"]
        );
        meta::remove(&mut next, "managedFields");
        track_update(Some(&stale), &mut next, &mgr("kubelet"), DEPLOY);
        assert_eq!(next["metadata"]["managedFields"], owned);
        // And an owner whose every path is gone goes too.
        let mut gone = first.clone();
        let ghost = json!({"manager": "ghost", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:paused": {}}}});
        gone["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(ghost);
        let mut next = gone.clone();
        meta::remove(&mut next, "managedFields");
        track_update(Some(&gone), &mut next, &mgr("kubelet"), DEPLOY);
        assert_eq!(next["metadata"]["managedFields"], owned);
    }

    #[test]
    fn client_side_apply_fields_are_taken_over() {
        let mut created = deploy(1, "i:1");
        let last = deploy(1, "i:1").to_string();
        created["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": last});
        let mut csa = created.clone();
        track_update(None, &mut csa, &mgr(CLIENT_SIDE_APPLY), DEPLOY);
        let upgraded = apply(
            Some(&csa),
            &deploy(1, "i:2"),
            &mgr("kubectl"),
            false,
            DEPLOY,
        )
        .unwrap();
        assert_eq!(
            upgraded["spec"]["template"]["spec"]["containers"][0]["image"],
            "i:2"
        );
        // Another Update manager's fields still conflict.
        let mut other = created;
        track_update(None, &mut other, &mgr("kubectl-edit"), DEPLOY);
        assert!(apply(
            Some(&other),
            &deploy(1, "i:2"),
            &mgr("kubectl"),
            false,
            DEPLOY
        )
        .is_err());
    }
}
