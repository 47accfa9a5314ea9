//! Field management: server-side apply, and the `managedFields` bookkeeping
//! of ordinary writes.

use serde_json::{json, Map, Value};

use crate::fields::{
    self, display, remove_at, tree, value_at, value_at_mut, FieldSet, Path, Scope,
};
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
    /// Whether the resource has a status subresource: then only writes
    /// through it own the status.
    pub status_apart: bool,
}

impl Manager<'_> {
    fn scope(&self) -> Scope {
        Scope::of(self.subresource, self.status_apart)
    }

    /// Whether `e` is this manager's entry for `operation`: upstream keys
    /// entries by manager, operation and subresource.
    fn wrote(&self, e: &Entry, operation: &str) -> bool {
        e.manager == self.name
            && e.operation == operation
            && e.subresource.as_deref() == self.subresource
    }

    /// A new entry of this manager's updates, owning `fields`.
    fn update_entry(&self, fields: Value) -> Value {
        let now = meta::now();
        entry_json(
            self.name,
            "Update",
            self.api_version,
            &now,
            self.subresource,
            fields,
        )
    }
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
    for e in &mut managers {
        fields::rekey(&mut e.fields, current, shape);
    }
    // Key fields left out take their defaults, as the items are keyed;
    // they are not the applier's for that.
    let mut patch = config.clone();
    meta::remove(&mut patch, "managedFields");
    let prepared = fields::prepare_applied(&mut patch, shape);
    let config = &patch;
    let mut applied = FieldSet::applied(config, shape, manager.scope());
    for path in &prepared.defaulted {
        applied.0.remove(path);
    }
    // A manager applies to each subresource as another.
    let is_me = |e: &Entry| manager.wrote(e, "Apply");

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

    let mut merged = strategic::apply(current, config, shape)?;
    for path in &prepared.atomic {
        if let (Some(to), Some(from)) = (value_at_mut(&mut merged, path), value_at(config, path)) {
            *to = from.clone();
        }
    }

    let previous = managers
        .iter()
        .find(|e| is_me(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for path in previous.0.difference(&applied.0) {
        let owned_elsewhere = managers
            .iter()
            .any(|e| !is_me(e) && e.fields.0.contains(path));
        // Inside an atomic object applied whole (an entry stored before
        // it was known atomic names its fields one by one).
        let applied_whole = prepared.atomic.iter().any(|a| path.starts_with(a));
        if !owned_elsewhere && !applied_whole {
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
    let last_applied = FieldSet::applied(&last, shape, Scope::Main);
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
        let mut fields = tree(new, shape, manager.scope());
        fields::mark_added(&mut fields, None, shape);
        if fields.as_object().is_some_and(|m| !m.is_empty()) {
            let entry = manager.update_entry(fields);
            meta::set(new, "managedFields", Value::Array(vec![entry]));
        }
        return;
    };
    // As upstream, ownership moves only where the write changed the
    // object: the fields it left as they were are not walked, and their
    // owners keep them as stored.
    let scope = manager.scope();
    let touched = fields::touched(old, new, scope);
    if touched.is_empty() {
        // The same object sent again: nothing moves.
        // Sent without its managed fields, it keeps the stored ones.
        if given.is_none() {
            if let Some(stored) = meta::get(old, "managedFields").cloned() {
                meta::set(new, "managedFields", stored);
            }
        }
        return;
    }
    let now_tree = fields::tree_under(new, shape, scope, &touched);
    let is_touched = |p: &Path| touched.iter().any(|t| p.starts_with(t));
    let changed_tree = fields::changed_tree(&now_tree, old, new, shape);
    let nothing_changed = changed_tree.as_object().is_none_or(Map::is_empty);
    // The changed paths, made only when a stored entry needs them.
    let changed_paths = std::cell::OnceCell::new();
    let changed = || changed_paths.get_or_init(|| FieldSet::from_json(&changed_tree).0);
    let is_me = |e: &Entry| manager.wrote(e, "Update");
    // Only the writer's entry and those owning something where the write
    // changed the object can change: the others stay as stored, unparsed
    // (a status write leaves the spec's owners alone).
    let stored = match meta::meta_mut(new)
        .get_mut("managedFields")
        .map(Value::take)
    {
        Some(Value::Array(list)) => list,
        _ => meta::get(old, "managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    let mut list = Vec::with_capacity(stored.len() + 1);
    let mut found = false;
    for raw in stored {
        let owns_touched = touched.iter().any(|t| {
            t.iter()
                .try_fold(&raw["fieldsV1"], |node, part| node.get(part))
                .is_some()
        });
        let maybe_me = raw["manager"] == manager.name;
        if !(owns_touched || maybe_me) {
            list.push(raw);
            continue;
        }
        let Some(mut e) = Entry::parse(&raw) else {
            continue;
        };
        // Paths stored under a list's old keys are read under its keys.
        fields::rekey(&mut e.fields, old, shape);
        e.fields
            .0
            .retain(|p| !is_touched(p) || fields::names_in(&now_tree, p));
        if is_me(&e) {
            found = true;
            if !nothing_changed {
                e.fields.0.extend(changed().iter().cloned());
                e.time = meta::now();
            }
        } else {
            let changed = changed();
            e.fields.0.retain(|p| !changed.contains(p));
        }
        if !e.fields.is_empty() {
            list.push(e.to_json());
        }
    }
    if !found && !nothing_changed {
        list.push(manager.update_entry(changed_tree));
    }
    if list.is_empty() {
        meta::remove(new, "managedFields");
    } else {
        meta::set(new, "managedFields", list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const DEPLOY: Option<Shape> = Some(Shape::Definition("io.k8s.api.apps.v1.Deployment"));

    fn mgr(name: &str) -> Manager<'_> {
        Manager {
            name,
            api_version: "apps/v1",
            subresource: None,
            status_apart: true,
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
    fn an_atomic_map_is_owned_and_applied_whole() {
        let with_node_selector = |selector: Value| {
            let mut d = deploy(1, "i");
            d["spec"]["template"]["spec"]["nodeSelector"] = selector;
            d
        };
        let first = with_node_selector(json!({"disk": "ssd", "zone": "a"}));
        let first = apply(None, &first, &mgr("alice"), false, DEPLOY).unwrap();
        let owned = &first["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(
            owned["f:spec"]["f:template"]["f:spec"]["f:nodeSelector"],
            json!({}),
            "{owned}"
        );
        // Another value of the map is a conflict over the whole map, even
        // where no key is set twice; forced, the map is the applier's alone.
        let other = with_node_selector(json!({"arch": "arm64"}));
        let err = apply(Some(&first), &other, &mgr("bob"), false, DEPLOY).unwrap_err();
        assert!(
            err.message.contains(".spec.template.spec.nodeSelector"),
            "{}",
            err.message
        );
        let forced = apply(Some(&first), &other, &mgr("bob"), true, DEPLOY).unwrap();
        let selector = &forced["spec"]["template"]["spec"]["nodeSelector"];
        assert_eq!(selector, &json!({"arch": "arm64"}));
        // An entry stored when the map was owned key by key loses no key
        // when its manager applies the same map again.
        let mut legacy = first.clone();
        let spec =
            json!({"f:template": {"f:spec": {"f:nodeSelector": {"f:disk": {}, "f:zone": {}}}}});
        legacy["metadata"]["managedFields"][0]["fieldsV1"] = json!({"f:spec": spec});
        let again = with_node_selector(json!({"disk": "ssd", "zone": "a"}));
        let again = apply(Some(&legacy), &again, &mgr("alice"), false, DEPLOY).unwrap();
        let kept = &again["spec"]["template"]["spec"]["nodeSelector"];
        assert_eq!(kept, &json!({"disk": "ssd", "zone": "a"}));
        // An update records the map whole too.
        let mut updated = forced.clone();
        updated["spec"]["template"]["spec"]["nodeSelector"]["arch"] = json!("amd64");
        track_update(Some(&forced), &mut updated, &mgr("carol"), DEPLOY);
        let managed = updated["metadata"]["managedFields"].as_array().unwrap();
        let carol = managed.iter().find(|e| e["manager"] == "carol").unwrap();
        let spec = json!({"f:template": {"f:spec": {"f:nodeSelector": {}}}});
        assert_eq!(carol["fieldsV1"], json!({"f:spec": spec}));
    }

    #[test]
    fn an_atomic_struct_is_owned_and_applied_whole() {
        let with_selector = |selector: Value| {
            let mut d = deploy(1, "i");
            d["spec"]["selector"] = selector;
            d
        };
        let labels = json!({"matchLabels": {"app": "web", "tier": "a"}});
        let first = apply(None, &with_selector(labels), &mgr("alice"), false, DEPLOY).unwrap();
        let owned = &first["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
        assert_eq!(owned["f:selector"], json!({}), "{owned}");
        // A label selector is replaced whole: nothing of alice's is kept.
        let other = with_selector(json!({"matchExpressions": [
            {"key": "app", "operator": "Exists"}]}));
        let err = apply(Some(&first), &other, &mgr("bob"), false, DEPLOY).unwrap_err();
        assert!(err.message.contains(".spec.selector"), "{}", err.message);
        let forced = apply(Some(&first), &other, &mgr("bob"), true, DEPLOY).unwrap();
        assert_eq!(forced["spec"]["selector"], other["spec"]["selector"]);
        // A fieldRef of a container's env, deeper down, is one leaf too.
        let mut env = deploy(1, "i");
        env["spec"]["template"]["spec"]["containers"][0]["env"] =
            json!([{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]);
        let applied = apply(None, &env, &mgr("alice"), false, DEPLOY).unwrap();
        let container = &applied["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
            ["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"];
        assert_eq!(
            container["f:env"]["k:{\"name\":\"NODE\"}"]["f:valueFrom"],
            json!({"f:fieldRef": {}}),
            "{container}"
        );
    }

    #[test]
    fn atomic_items_of_a_keyed_list_are_owned_whole() {
        let owned_by = |uid: &str, name: &str| {
            let mut d = deploy(1, "i");
            d["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Pod",
                "name": name, "uid": uid}]);
            d
        };
        let first = apply(None, &owned_by("u1", "a"), &mgr("alice"), false, DEPLOY).unwrap();
        let owned = &first["metadata"]["managedFields"][0]["fieldsV1"]["f:metadata"];
        assert_eq!(
            owned["f:ownerReferences"],
            json!({"k:{\"uid\":\"u1\"}": {}}),
            "{owned}"
        );
        // Applied again with fewer fields, the item is the applied one.
        let mut fewer = owned_by("u1", "b");
        fewer["metadata"]["ownerReferences"][0]
            .as_object_mut()
            .unwrap()
            .remove("apiVersion");
        let again = apply(Some(&first), &fewer, &mgr("alice"), false, DEPLOY).unwrap();
        assert_eq!(
            again["metadata"]["ownerReferences"],
            fewer["metadata"]["ownerReferences"]
        );
        // Dropped from the configuration, the item goes.
        let gone = apply(Some(&again), &deploy(1, "i"), &mgr("alice"), false, DEPLOY).unwrap();
        let left = gone["metadata"]["ownerReferences"].as_array();
        assert!(left.is_none_or(Vec::is_empty), "{gone}");
    }

    #[test]
    fn ports_are_keyed_by_number_and_protocol() {
        let with_ports = |ports: Value| {
            let mut d = deploy(1, "i");
            d["spec"]["template"]["spec"]["containers"][0]["ports"] = ports;
            d
        };
        let ports_of = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["ports"].clone();
        let owned_ports = |d: &Value| {
            d["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
                ["f:containers"]["k:{\"name\":\"c\"}"]["f:ports"]
                .clone()
        };
        // One number over two protocols is two ports.
        let dns = json!([{"containerPort": 53, "protocol": "UDP"},
                         {"containerPort": 53, "protocol": "TCP"}]);
        let first = apply(None, &with_ports(dns.clone()), &mgr("alice"), false, DEPLOY).unwrap();
        assert_eq!(ports_of(&first), dns);
        let keys: Vec<String> = owned_ports(&first)
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            [
                "k:{\"containerPort\":53,\"protocol\":\"TCP\"}",
                "k:{\"containerPort\":53,\"protocol\":\"UDP\"}"
            ]
        );
        let again = apply(
            Some(&first),
            &with_ports(dns.clone()),
            &mgr("alice"),
            false,
            DEPLOY,
        );
        assert_eq!(ports_of(&again.unwrap()), dns);
        // A port without a protocol is keyed as TCP, and the protocol is
        // not the applier's for that.
        let web = json!([{"containerPort": 80}]);
        let applied = apply(None, &with_ports(web), &mgr("alice"), false, DEPLOY).unwrap();
        assert_eq!(
            owned_ports(&applied),
            json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":
                {".": {}, "f:containerPort": {}}})
        );
        // An entry stored when ports were keyed by number alone is read
        // with both keys: applying the same port again keeps it.
        let stored = with_ports(json!([{"containerPort": 80, "protocol": "TCP"}]));
        let mut legacy = apply(None, &stored, &mgr("alice"), false, DEPLOY).unwrap();
        legacy["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]
            ["f:containers"]["k:{\"name\":\"c\"}"]["f:ports"] =
            json!({"k:{\"containerPort\":80}": {".": {}, "f:containerPort": {}}});
        let reapplied = with_ports(json!([{"containerPort": 80}]));
        let kept = apply(Some(&legacy), &reapplied, &mgr("alice"), false, DEPLOY).unwrap();
        assert_eq!(
            ports_of(&kept),
            json!([{"containerPort": 80, "protocol": "TCP"}])
        );
    }

    #[test]
    fn an_update_rekeys_paths_stored_under_old_keys() {
        let mut d = deploy(1, "i");
        d["spec"]["template"]["spec"]["containers"][0]["ports"] =
            json!([{"containerPort": 80, "protocol": "TCP"}]);
        let mut created = d.clone();
        track_update(None, &mut created, &mgr("helm"), DEPLOY);
        // As stored before ports were keyed by protocol too.
        let ports = &mut created["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
            ["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:ports"];
        *ports = json!({".": {}, "k:{\"containerPort\":80}":
            {".": {}, "f:containerPort": {}, "f:protocol": {}}});
        // Another writer changes the container's image: helm keeps its port.
        let mut next = created.clone();
        next["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j");
        track_update(Some(&created), &mut next, &mgr("kubectl-set"), DEPLOY);
        let helm = &next["metadata"]["managedFields"][0];
        assert_eq!(helm["manager"], "helm");
        let ports = &helm["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
            ["k:{\"name\":\"c\"}"]["f:ports"];
        assert_eq!(
            ports["k:{\"containerPort\":80,\"protocol\":\"TCP\"}"],
            json!({".": {}, "f:containerPort": {}, "f:protocol": {}}),
            "{helm}"
        );
    }

    #[test]
    fn a_custom_atomic_object_is_applied_whole() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "target": {"type": "object", "x-kubernetes-map-type": "atomic",
                       "properties": {"kind": {"type": "string"}, "name": {"type": "string"}}}}}}});
        let shape = Some(Shape::Custom(&schema));
        let widget = |target: Value| {
            json!({"apiVersion": "example.com/v1", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": {"target": target}})
        };
        let first = widget(json!({"kind": "Pod", "name": "a"}));
        let first = apply(None, &first, &mgr("alice"), false, shape).unwrap();
        let second = widget(json!({"name": "b"}));
        let forced = apply(Some(&first), &second, &mgr("bob"), true, shape).unwrap();
        assert_eq!(
            forced["spec"]["target"],
            json!({"name": "b"}),
            "no kind kept from alice"
        );
        let managed = forced["metadata"]["managedFields"].as_array().unwrap();
        let owners: Vec<_> = managed
            .iter()
            .map(|e| (&e["manager"], &e["fieldsV1"]))
            .collect();
        let target = json!({"f:spec": {"f:target": {}}});
        assert_eq!(
            owners,
            [(&json!("bob"), &target)],
            "alice owned the target alone"
        );
    }

    #[test]
    fn an_applied_empty_object_claims_nothing() {
        let mut with_empty = deploy(1, "i");
        with_empty["spec"]["template"]["spec"]["securityContext"] = json!({});
        with_empty["metadata"]["labels"] = json!({});
        let first = apply(None, &with_empty, &mgr("alice"), false, DEPLOY).unwrap();
        let owned = &first["metadata"]["managedFields"][0]["fieldsV1"];
        assert!(owned.get("f:metadata").is_none(), "{owned}");
        assert!(
            owned["f:spec"]["f:template"]["f:spec"]
                .get("f:securityContext")
                .is_none(),
            "{owned}"
        );
        // Another writer fills it in; alice's next apply leaves it out, and
        // what the other wrote stays.
        let mut filled = first.clone();
        filled["spec"]["template"]["spec"]["securityContext"] = json!({"runAsUser": 1000});
        track_update(Some(&first), &mut filled, &mgr("bob"), DEPLOY);
        let again = apply(Some(&filled), &deploy(1, "i"), &mgr("alice"), false, DEPLOY).unwrap();
        assert_eq!(
            again["spec"]["template"]["spec"]["securityContext"],
            json!({"runAsUser": 1000})
        );
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
    fn updates_mark_the_nodes_they_add_as_upstream() {
        // What `kubectl create deployment` sends, as the server stores it.
        let mut created = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate",
                             "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}}}});
        track_update(None, &mut created, &mgr("kubectl-create"), DEPLOY);
        let labels = json!({".": {}, "f:app": {}});
        let want = json!({
            "f:metadata": {"f:labels": labels},
            "f:spec": {"f:replicas": {}, "f:selector": {},
                "f:strategy": {"f:type": {},
                    "f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}}},
                "f:template": {"f:metadata": {"f:labels": labels},
                    "f:spec": {"f:containers": {"k:{\"name\":\"c\"}":
                        {".": {}, "f:name": {}, "f:image": {}, "f:resources": {}}}}}}});
        let entry = &created["metadata"]["managedFields"][0]["fieldsV1"];
        assert_eq!(
            FieldSet::from_json(entry),
            FieldSet::from_json(&want),
            "{entry}"
        );
        // A new image: the container was there, so only the image moves.
        let mut set = created.clone();
        set["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j");
        track_update(Some(&created), &mut set, &mgr("kubectl-set"), DEPLOY);
        let entries = set["metadata"]["managedFields"].as_array().unwrap();
        let image = json!({"f:spec": {"f:template": {"f:spec": {"f:containers":
            {"k:{\"name\":\"c\"}": {"f:image": {}}}}}}});
        assert_eq!(entries[1]["fieldsV1"], image);
        // The creator keeps the container itself.
        let item = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"c\"}",
            ".",
        ];
        let item: Path = item.map(String::from).to_vec();
        assert!(FieldSet::from_json(&entries[0]["fieldsV1"])
            .0
            .contains(&item));
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
        // A stored path the object does not hold stays through writes that
        // leave its field as it was (as upstream, which compares only what
        // a write changed), with the managed fields sent or not.
        let mut stale = first.clone();
        let ghost = json!({"manager": "ghost", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:paused": {}}}});
        stale["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(ghost);
        let mut next = stale.clone();
        next["status"] = json!({"replicas": 2});
        next["metadata"]["labels"] = json!({"a": "b"});
        track_update(Some(&stale), &mut next, &mgr("kubelet"), DEPLOY);
        let entries = next["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries[1]["manager"], "ghost");
        // The labels are new: the writer owns the map itself too (`.`).
        assert_eq!(
            entries[2]["fieldsV1"],
            json!({"f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
        );
        let mut bare = stale.clone();
        bare["status"] = json!({"replicas": 2});
        meta::remove(&mut bare, "managedFields");
        track_update(Some(&stale), &mut bare, &mgr("kubelet"), DEPLOY);
        assert_eq!(
            bare["metadata"]["managedFields"],
            stale["metadata"]["managedFields"]
        );
        // A write that changes the spec drops it, and its owner with it.
        let mut scaled = stale.clone();
        scaled["spec"]["replicas"] = json!(2);
        track_update(Some(&stale), &mut scaled, &mgr("scaler"), DEPLOY);
        let managers: Vec<&Value> = scaled["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| &e["manager"])
            .collect();
        assert_eq!(managers, ["alice", "scaler"]);
    }

    /// Who owns what after an update, worked out from the whole field
    /// trees of both objects: the incremental bookkeeping must agree. A
    /// write owns the leaves it changed and the `.` of every node it
    /// added: a keyed item or a field with fields of its own that the old
    /// object lacked, other than those every Deployment has.
    fn owners_from_whole_trees(old: &Value, new: &Value, writer: &str) -> Vec<(String, FieldSet)> {
        const ALWAYS: &[&[&str]] = &[
            &["f:metadata"],
            &["f:spec"],
            &["f:status"],
            &["f:spec", "f:selector"],
            &["f:spec", "f:strategy"],
            &["f:spec", "f:template"],
            &["f:spec", "f:template", "f:metadata"],
            &["f:spec", "f:template", "f:spec"],
            &["f:spec", "f:template", "f:spec", "f:containers"],
        ];
        let added = |node: &[String]| {
            value_at(old, node).is_none_or(Value::is_null)
                && !ALWAYS.iter().any(|a| a.iter().eq(node.iter()))
        };
        let now = FieldSet::of(new, DEPLOY, Scope::Main);
        let mut changed = BTreeSet::new();
        for p in &now.0 {
            let (last, node) = p.split_last().unwrap();
            if last == "." {
                if added(node) {
                    changed.insert(p.clone());
                }
            } else if value_at(old, p) != value_at(new, p) {
                changed.insert(p.clone());
                for n in 1..p.len() {
                    if p[n - 1].starts_with("f:") && added(&p[..n]) {
                        changed.insert([&p[..n], &[".".to_owned()]].concat());
                    }
                }
            }
        }
        let still = |p: &Path| {
            now.0.contains(p)
                || p.split_last()
                    .is_some_and(|(l, node)| l == "." && value_at(new, node).is_some())
        };
        let mut owners: Vec<(String, FieldSet)> = entries(old)
            .into_iter()
            .map(|e| {
                let mut kept = e.fields.0;
                kept.retain(|p| still(p) && (e.manager == writer || !changed.contains(p)));
                if e.manager == writer {
                    kept.extend(changed.iter().cloned());
                }
                (e.manager, FieldSet(kept))
            })
            .collect();
        if !changed.is_empty() && !owners.iter().any(|(m, _)| m == writer) {
            owners.push((writer.to_owned(), FieldSet(changed)));
        }
        owners.retain(|(_, f)| !f.is_empty());
        owners
    }

    #[test]
    fn updates_walk_only_what_they_changed_and_agree_with_whole_trees() {
        let edits: [fn(&mut Value); 10] = [
            |d| d["spec"]["replicas"] = json!(7),
            |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("j"),
            |d| d["metadata"]["labels"] = json!({"app": "web", "tier": "front"}),
            |d| {
                meta::remove(d, "labels");
            },
            |d| {
                let containers = d["spec"]["template"]["spec"]["containers"]
                    .as_array_mut()
                    .unwrap();
                containers.push(json!({"name": "side", "image": "s", "args": ["x"]}));
            },
            |d| {
                d["spec"].as_object_mut().unwrap().remove("strategy");
                d["spec"]["paused"] = json!(true);
            },
            |d| d["status"] = json!({"replicas": 3}),
            |d| d["metadata"]["annotations"] = json!({"note": "n"}),
            |d| {
                d["spec"]["template"]["spec"]["containers"][0]["ports"] =
                    json!([{"containerPort": 80}])
            },
            |d| d["metadata"]["finalizers"] = json!(["f"]),
        ];
        let mut base = deploy(1, "i");
        base["metadata"]["labels"] = json!({"app": "web"});
        base["spec"]["strategy"] = json!({"type": "Recreate"});
        let applied = apply(None, &base, &mgr("alice"), false, DEPLOY).unwrap();
        let mut stored = applied.clone();
        stored["spec"]["replicas"] = json!(4);
        track_update(Some(&applied), &mut stored, &mgr("scaler"), DEPLOY);
        let mut checked = 0;
        for (i, first) in edits.iter().enumerate() {
            for (j, second) in edits.iter().enumerate().skip(i) {
                for (writer, send_managed) in
                    [("scaler", true), ("editor", true), ("editor", false)]
                {
                    let mut next = stored.clone();
                    first(&mut next);
                    second(&mut next);
                    if !send_managed {
                        meta::remove(&mut next, "managedFields");
                    }
                    let want = owners_from_whole_trees(&stored, &next, writer);
                    track_update(Some(&stored), &mut next, &mgr(writer), DEPLOY);
                    let got: Vec<(String, FieldSet)> = entries(&next)
                        .into_iter()
                        .map(|e| (e.manager, e.fields))
                        .collect();
                    assert_eq!(got, want, "edits {i} and {j} by {writer}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 55 * 3);
    }

    fn status_mgr(name: &str) -> Manager<'_> {
        Manager {
            subresource: Some("status"),
            ..mgr(name)
        }
    }

    fn with_status(status: Value) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "status": status})
    }

    fn entry<'a>(obj: &'a Value, manager: &str, subresource: Option<&str>) -> &'a Value {
        let list = obj["metadata"]["managedFields"].as_array().unwrap();
        list.iter()
            .find(|e| e["manager"] == manager && e["subresource"].as_str() == subresource)
            .unwrap_or_else(|| panic!("no entry of {manager} ({subresource:?}) in {list:?}"))
    }

    #[test]
    fn status_applies_own_the_status_and_drop_what_they_no_longer_apply() {
        let created = apply(None, &deploy(1, "i"), &mgr("ctl"), false, DEPLOY).unwrap();
        let both = with_status(json!({"replicas": 1, "conditions": [
            {"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]}));
        let first = apply(Some(&created), &both, &status_mgr("ctl"), false, DEPLOY).unwrap();
        assert_eq!(
            entry(&first, "ctl", Some("status"))["fieldsV1"],
            json!({"f:status": {"f:conditions": {
                "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}},
                "k:{\"type\":\"Progressing\"}": {".": {}, "f:status": {}, "f:type": {}}},
                "f:replicas": {}}})
        );
        // The same manager's apply to the main resource is another entry.
        assert_eq!(
            entry(&first, "ctl", None)["fieldsV1"],
            entry(&created, "ctl", None)["fieldsV1"]
        );
        let one = with_status(json!({"conditions": [{"type": "Available", "status": "False"}]}));
        let second = apply(Some(&first), &one, &status_mgr("ctl"), false, DEPLOY).unwrap();
        assert_eq!(
            second["status"],
            json!({"conditions": [{"type": "Available", "status": "False"}]})
        );
        assert_eq!(second["spec"], created["spec"]);
        // Another manager's status field is a conflict, as a spec field is.
        let other = with_status(json!({"replicas": 5}));
        let err = apply(Some(&first), &other, &status_mgr("other"), false, DEPLOY).unwrap_err();
        assert!(err.message.contains(".status.replicas"), "{}", err.message);
    }

    #[test]
    fn status_updates_move_status_fields_to_the_writer_and_spec_updates_leave_them() {
        let created = apply(None, &deploy(1, "i"), &mgr("ctl"), false, DEPLOY).unwrap();
        let mut reported = created.clone();
        reported["status"] = json!({"replicas": 1, "readyReplicas": 1});
        track_update(
            Some(&created),
            &mut reported,
            &status_mgr("controller"),
            DEPLOY,
        );
        let owned = json!({"f:status": {"f:readyReplicas": {}, "f:replicas": {}}});
        assert_eq!(
            entry(&reported, "controller", Some("status"))["fieldsV1"],
            owned
        );
        // The spec's owner is kept as stored.
        assert_eq!(entry(&reported, "ctl", None), entry(&created, "ctl", None));
        let mut scaled = reported.clone();
        scaled["spec"]["replicas"] = json!(3);
        track_update(Some(&reported), &mut scaled, &mgr("scaler"), DEPLOY);
        assert_eq!(
            entry(&scaled, "controller", Some("status"))["fieldsV1"],
            owned
        );
        assert_eq!(
            entry(&scaled, "scaler", None)["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
    }

    #[test]
    fn without_a_status_subresource_the_main_resource_owns_the_status() {
        let whole = |name| Manager {
            status_apart: false,
            ..mgr(name)
        };
        let mut config = deploy(1, "i");
        config["status"] = json!({"replicas": 1, "readyReplicas": 1});
        let first = apply(None, &config, &whole("ctl"), false, DEPLOY).unwrap();
        assert_eq!(
            entry(&first, "ctl", None)["fieldsV1"]["f:status"],
            json!({"f:readyReplicas": {}, "f:replicas": {}})
        );
        config["status"] = json!({"replicas": 1});
        let second = apply(Some(&first), &config, &whole("ctl"), false, DEPLOY).unwrap();
        assert_eq!(second["status"], json!({"replicas": 1}));
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
