//! The garbage collector: deletes objects whose owners are gone
//! (Background), deletes an owner's dependents before the owner
//! (Foreground, the `foregroundDeletion` finalizer) or frees them (Orphan,
//! the `orphan` finalizer). It keeps a graph of owner references over
//! every kind that is stored: those the controller manager keeps in
//! informers, and the others (custom resources among them) followed by
//! their metadata alone.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;
use kube::core::ApiResource;
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::task::{AbortHandle, JoinSet};

use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Informer, Object};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;
use skiff_runtime::watch::{self, Change};

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// What the collector knows of one object.
#[derive(Clone, Debug)]
struct Entry {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
    owners: Vec<OwnerReference>,
    deleting: bool,
    finalizers: Vec<String>,
}

/// What the graph knew of an object before a change.
#[derive(Clone, Copy)]
struct Before<'a> {
    owners: &'a [OwnerReference],
    deleting: bool,
}

impl<'a> Before<'a> {
    fn of(m: &'a ObjectMeta) -> Self {
        Self {
            owners: m.owner_references.as_deref().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
        }
    }
}

impl Entry {
    fn target(&self) -> Target {
        Target {
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

#[derive(Default)]
struct Graph {
    objects: HashMap<String, Entry>,
    /// Owner uid → dependent uids.
    dependents: HashMap<String, HashSet<String>>,
}

pub struct GarbageCollector {
    graph: Arc<Mutex<Graph>>,
    queue: Arc<Queue>,
    cluster: Arc<dyn Cluster>,
    /// The kinds an informer tells of, as `group/plural`.
    watched: Mutex<HashSet<String>>,
}

/// Kinds nothing owns, or that are not stored: not followed.
const UNFOLLOWED: [(&str, &str); 4] = [
    ("", "events"),
    ("events.k8s.io", "events"),
    ("", "componentstatuses"),
    ("metrics.k8s.io", "*"),
];

impl GarbageCollector {
    pub fn new(cluster: Arc<dyn Cluster>, queue: Arc<Queue>) -> Self {
        Self {
            graph: Arc::default(),
            queue,
            cluster,
            watched: Mutex::default(),
        }
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the collector is told of objects through.
    pub fn observer(&self) -> Observer {
        Observer {
            graph: self.graph.clone(),
            queue: self.queue.clone(),
        }
    }

    /// Adds one kind of object the manager keeps in an informer to the
    /// graph.
    pub fn watch<K>(&self, informer: &mut Informer<K>)
    where
        K: Object,
    {
        let observer = self.observer();
        let resource = ApiResource::erase::<K>(&());
        let kind = format!("{}/{}", resource.group, resource.plural);
        self.watched.lock().unwrap().insert(kind);
        informer.on_change(move |old, new| {
            observer.observe(&resource, old.map(|o| o.meta()), new.map(|n| n.meta()));
        });
    }

    /// The followers, by metadata, of every built-in kind no informer
    /// tells of ([`Self::watch`]) and of every custom resource: as
    /// upstream's collector, every kind that is stored, but events.
    pub fn follow_the_rest(&self, client: &kube::Client) -> Vec<BoxFuture<'static, ()>> {
        let mut out: Vec<BoxFuture<'static, ()>> = Vec::new();
        for resource in self.unwatched() {
            out.push(Box::pin(self.observer().follow(client.clone(), resource)));
        }
        out.push(Box::pin(self.observer().follow_custom(client.clone())));
        out
    }

    /// The built-in kinds no informer tells of, each at one version.
    fn unwatched(&self) -> Vec<ApiResource> {
        let mut seen = self.watched.lock().unwrap().clone();
        let mut out = Vec::new();
        for t in skiff_core::registry::RESOURCES {
            let unfollowed = UNFOLLOWED
                .iter()
                .any(|(g, p)| *g == t.group && (*p == t.plural || *p == "*"));
            if unfollowed || !seen.insert(format!("{}/{}", t.group, t.plural)) {
                continue;
            }
            out.push(api_resource(t));
        }
        out
    }

    /// Whether the owner exists, asking the API server when the graph has
    /// not seen it (it may be of a kind the graph does not hold).
    async fn owner_exists(
        &self,
        namespace: Option<&str>,
        r: &OwnerReference,
    ) -> Result<bool, Error> {
        if self.graph().objects.contains_key(&r.uid) {
            return Ok(true);
        }
        let (group, version) = skiff_core::registry::split_api_version(&r.api_version);
        let resource = match skiff_core::registry::by_kind(group, version, &r.kind) {
            Some(t) if !t.custom => Some((api_resource(t), t.namespaced)),
            _ => skiff_runtime::api::custom_resources(self.cluster.as_ref())
                .await?
                .into_iter()
                .find(|(c, _)| c.api_version == r.api_version && c.kind == r.kind),
        };
        let Some((resource, namespaced)) = resource else {
            // An unknown kind: never collect on a guess.
            return Ok(true);
        };
        let target = Target {
            resource,
            namespace: if namespaced {
                namespace.map(str::to_owned)
            } else {
                None
            },
            name: r.name.clone(),
        };
        match self.cluster.get(&target).await {
            // No object has a name that is no path segment.
            Err(Error::InvalidName { .. }) => Ok(false),
            got => Ok(got?.is_some_and(|o| o["metadata"]["uid"] == r.uid.as_str())),
        }
    }

    async fn remove_finalizer(&self, e: &Entry, finalizer: &str) -> Result<(), Error> {
        let rest: Vec<&String> = e.finalizers.iter().filter(|f| *f != finalizer).collect();
        match self
            .cluster
            .merge_patch(
                &e.target(),
                json!({"metadata": {"finalizers": rest}}),
                false,
            )
            .await
        {
            Err(err) if !err.is_not_found() => Err(err),
            _ => Ok(()),
        }
    }

    async fn set_owners(&self, e: &Entry, owners: Vec<&OwnerReference>) -> Result<(), Error> {
        let refs: Vec<Value> = owners
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or_default())
            .collect();
        match self
            .cluster
            .merge_patch(
                &e.target(),
                json!({"metadata": {"ownerReferences": refs}}),
                false,
            )
            .await
        {
            Err(err) if !err.is_not_found() => Err(err),
            _ => Ok(()),
        }
    }

    async fn delete(&self, e: &Entry, uid: &str, propagation: &'static str) -> Result<(), Error> {
        let how = Deletion {
            uid: Some(uid.to_owned()),
            propagation: Some(propagation),
            ..Default::default()
        };
        match self.cluster.delete(&e.target(), how).await {
            Err(err) if !err.is_not_found() && !err.is_conflict() => Err(err),
            _ => Ok(()),
        }
    }

    fn dependents_of(&self, uid: &str) -> Vec<(String, Entry)> {
        let g = self.graph();
        g.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| g.objects.get(d).map(|e| (d.clone(), e.clone())))
            .collect()
    }
}

#[async_trait]
impl Reconcile for GarbageCollector {
    fn name(&self) -> &'static str {
        "garbage-collector"
    }

    async fn reconcile(&self, uid: &str) -> Result<Action, Error> {
        let Some(entry) = self.graph().objects.get(uid).cloned() else {
            return Ok(Action::Done);
        };
        if entry.deleting && entry.finalizers.iter().any(|f| f == ORPHAN) {
            for (_, d) in self.dependents_of(uid) {
                let keep: Vec<&OwnerReference> = d.owners.iter().filter(|r| r.uid != uid).collect();
                self.set_owners(&d, keep).await?;
            }
            return self
                .remove_finalizer(&entry, ORPHAN)
                .await
                .map(|_| Action::Done);
        }
        if entry.deleting && entry.finalizers.iter().any(|f| f == FOREGROUND) {
            let mut blocking = 0;
            for (duid, d) in self.dependents_of(uid) {
                let blocks = d
                    .owners
                    .iter()
                    .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
                if blocks {
                    blocking += 1;
                }
                if !d.deleting {
                    self.delete(&d, &duid, if blocks { "Foreground" } else { "Background" })
                        .await?;
                }
            }
            if blocking == 0 {
                self.remove_finalizer(&entry, FOREGROUND).await?;
            }
            return Ok(Action::Done);
        }
        if entry.owners.is_empty() {
            return Ok(Action::Done);
        }
        let mut gone = Vec::new();
        let mut owner_in_foreground = false;
        for r in &entry.owners {
            if self.owner_exists(entry.namespace.as_deref(), r).await? {
                let g = self.graph();
                if let Some(o) = g.objects.get(&r.uid) {
                    owner_in_foreground |= o.deleting
                        && o.finalizers.iter().any(|f| f == FOREGROUND)
                        && r.block_owner_deletion == Some(true);
                }
            } else {
                gone.push(r.uid.clone());
            }
        }
        if gone.is_empty() {
            return Ok(Action::Done);
        }
        if gone.len() == entry.owners.len() {
            if !entry.deleting {
                self.delete(
                    &entry,
                    uid,
                    if owner_in_foreground {
                        "Foreground"
                    } else {
                        "Background"
                    },
                )
                .await?;
            }
        } else {
            let keep: Vec<&OwnerReference> = entry
                .owners
                .iter()
                .filter(|r| !gone.contains(&r.uid))
                .collect();
            self.set_owners(&entry, keep).await?;
        }
        Ok(Action::Done)
    }
}

/// Tells the collector's graph of objects as they change.
#[derive(Clone)]
pub struct Observer {
    graph: Arc<Mutex<Graph>>,
    queue: Arc<Queue>,
}

impl Observer {
    /// Tells the graph of a change an informer saw: `old` as it was. An
    /// object of the same name but another uid (deleted and made again
    /// while the watch was down) is one gone and another new.
    fn observe(&self, resource: &ApiResource, old: Option<&ObjectMeta>, new: Option<&ObjectMeta>) {
        let uid = |m: &ObjectMeta| m.uid.clone().unwrap_or_default();
        let mut g = self.graph.lock().unwrap_or_else(|e| e.into_inner());
        match (old, new) {
            (Some(o), Some(n)) if o.uid != n.uid => {
                self.change(&mut g, resource, &uid(o), Some(Before::of(o)), None);
                self.change(&mut g, resource, &uid(n), None, Some(n));
            }
            _ => {
                let Some(m) = new.or(old) else { return };
                self.change(&mut g, resource, &uid(m), old.map(Before::of), new);
            }
        }
    }

    /// Tells the graph of a change to an object followed by its metadata:
    /// the graph's entry is what was known of it before.
    fn observe_followed(&self, resource: &ApiResource, uid: &str, new: Option<&ObjectMeta>) {
        let mut g = self.graph.lock().unwrap_or_else(|e| e.into_inner());
        let old = match g.objects.get(uid) {
            Some(e) if e.resource == *resource => g.objects.remove(uid),
            _ => None,
        };
        let before = old.as_ref().map(|e| Before {
            owners: &e.owners,
            deleting: e.deleting,
        });
        self.change(&mut g, resource, uid, before, new);
    }

    fn change(
        &self,
        g: &mut Graph,
        resource: &ApiResource,
        uid: &str,
        before: Option<Before<'_>>,
        new: Option<&ObjectMeta>,
    ) {
        if let Some(o) = &before {
            for r in o.owners {
                if let Some(d) = g.dependents.get_mut(&r.uid) {
                    d.remove(uid);
                }
            }
            if new.is_none() {
                g.objects.remove(uid);
                // Its dependents lost an owner; its owners may be
                // waiting for it in a foreground deletion.
                for d in g.dependents.get(uid).into_iter().flatten() {
                    self.queue.add(d.clone());
                }
                for r in o.owners {
                    self.queue.add(r.uid.clone());
                }
            }
        }
        if let Some(m) = new {
            let entry = Entry {
                resource: resource.clone(),
                namespace: m.namespace.clone(),
                name: m.name.clone().unwrap_or_default(),
                owners: m.owner_references.clone().unwrap_or_default(),
                deleting: m.deletion_timestamp.is_some(),
                finalizers: m.finalizers.clone().unwrap_or_default(),
            };
            for r in &entry.owners {
                g.dependents
                    .entry(r.uid.clone())
                    .or_default()
                    .insert(uid.to_owned());
            }
            let interesting = !entry.owners.is_empty()
                || entry
                    .finalizers
                    .iter()
                    .any(|f| f == ORPHAN || f == FOREGROUND);
            let started_deleting = entry.deleting && before.is_none_or(|o| !o.deleting);
            if started_deleting {
                for r in &entry.owners {
                    self.queue.add(r.uid.clone());
                }
            }
            g.objects.insert(uid.to_owned(), entry);
            if interesting {
                self.queue.add(uid.to_owned());
            }
        }
    }

    /// Adds one kind of object no informer of the manager keeps to the
    /// graph, following its metadata alone, as upstream's collector
    /// follows every kind that can be deleted: a ConfigMap or a custom
    /// resource owned by another object goes with it, and a custom
    /// resource's deletion reaches its dependents. The graph's entries
    /// are all it keeps of them.
    pub async fn follow(self, client: kube::Client, resource: ApiResource) {
        let changes = watch::metadata_changes(client, &resource, Default::default());
        futures::pin_mut!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Change::Applied(m) => self.seen(&resource, &m),
                Change::Deleted(m) => {
                    if let Some(uid) = m.uid.as_deref() {
                        self.observe_followed(&resource, uid, None);
                    }
                }
                Change::Relisted(all) => {
                    let now: HashSet<&str> = all.iter().filter_map(|m| m.uid.as_deref()).collect();
                    for uid in self.uids_of(&resource) {
                        if !now.contains(uid.as_str()) {
                            self.observe_followed(&resource, &uid, None);
                        }
                    }
                    for m in &all {
                        self.seen(&resource, m);
                    }
                }
            }
        }
    }

    fn seen(&self, resource: &ApiResource, m: &ObjectMeta) {
        if let Some(uid) = m.uid.as_deref() {
            self.observe_followed(resource, uid, Some(m));
        }
    }

    /// The uids of the graph's objects of one kind.
    fn uids_of(&self, resource: &ApiResource) -> Vec<String> {
        let g = self.graph.lock().unwrap_or_else(|e| e.into_inner());
        g.objects
            .iter()
            .filter(|(_, e)| e.resource == *resource)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    /// Drops the objects of a kind no longer followed from the graph, as
    /// gone: their dependents are looked at again (an owner the graph
    /// does not hold is asked of the API server).
    fn forget(&self, resource: &ApiResource) {
        for uid in self.uids_of(resource) {
            self.observe_followed(resource, &uid, None);
        }
    }

    /// Follows every custom resource, from when its definition is made to
    /// when it is deleted, at the version it is stored at.
    pub async fn follow_custom(self, client: kube::Client) {
        let mut following: HashMap<String, (ApiResource, AbortHandle)> = HashMap::new();
        let mut tasks = JoinSet::new();
        let definitions = Api::<CustomResourceDefinition>::all(client.clone());
        let changes = watch::changes(definitions, Default::default());
        futures::pin_mut!(changes);
        while let Some(change) = changes.next().await {
            let (stop, start) = match change {
                Change::Applied(d) => (vec![], vec![d]),
                Change::Deleted(d) => (vec![d.name_any()], vec![]),
                Change::Relisted(all) => {
                    let names: HashSet<String> = all.iter().map(|d| d.name_any()).collect();
                    let gone = following.keys().filter(|n| !names.contains(*n)).cloned();
                    (gone.collect(), all)
                }
            };
            for name in stop {
                if let Some((resource, task)) = following.remove(&name) {
                    task.abort();
                    self.forget(&resource);
                }
            }
            for d in start {
                let Some(resource) = stored_resource(&d) else {
                    continue;
                };
                let name = d.name_any();
                if following.get(&name).is_some_and(|(r, _)| *r == resource) {
                    continue;
                }
                let task = tasks.spawn(self.clone().follow(client.clone(), resource.clone()));
                if let Some((before, old)) = following.insert(name, (resource, task)) {
                    old.abort();
                    self.forget(&before);
                }
            }
            // Reap the aborted.
            while tasks.try_join_next().is_some() {}
        }
    }
}

/// A built-in resource as the client addresses it.
fn api_resource(t: &skiff_core::registry::ResourceType) -> ApiResource {
    ApiResource {
        group: t.group.into(),
        version: t.version.into(),
        api_version: t.api_version(),
        kind: t.kind.into(),
        plural: t.plural.into(),
    }
}

/// The resource a definition's objects are followed at: the version it
/// stores, else the first it serves.
fn stored_resource(crd: &CustomResourceDefinition) -> Option<ApiResource> {
    let d = skiff_core::crd::Definition::parse(&serde_json::to_value(crd).ok()?);
    let served = d.versions.iter().filter(|v| v.served);
    let version = served
        .clone()
        .find(|v| v.storage)
        .or(served.clone().next())?;
    Some(ApiResource {
        group: d.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", d.group, version.name),
        kind: d.kind.clone(),
        plural: d.plural.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    use skiff_runtime::fake::FakeCluster;

    fn rs(finalizers: &[&str], deleting: bool) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "rs", "finalizers": finalizers,
                         "deletionTimestamp": if deleting { Some("2024-01-01T00:00:00Z") } else { None }},
        }))
        .unwrap()
    }

    fn pod(name: &str, block: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": name,
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs", "controller": true, "blockOwnerDeletion": block}]},
        }))
        .unwrap()
    }

    fn setup() -> (
        Arc<FakeCluster>,
        Informer<ReplicaSet>,
        Informer<Pod>,
        Arc<Queue>,
        GarbageCollector,
    ) {
        let fake = Arc::new(FakeCluster::default());
        let queue = Queue::new();
        let gc = GarbageCollector::new(fake.clone(), queue.clone());
        let (mut sets, mut pods) = (Informer::default(), Informer::default());
        gc.watch(&mut sets);
        gc.watch(&mut pods);
        (fake, sets, pods, queue, gc)
    }

    async fn drain(queue: &Arc<Queue>, gc: &GarbageCollector) {
        while let Some(k) = queue.try_next() {
            gc.reconcile(&k).await.unwrap();
            queue.done(&k);
        }
    }

    #[tokio::test]
    async fn background_deletes_dependents_of_a_vanished_owner() {
        let (fake, sets, pods, queue, gc) = setup();
        sets.apply(rs(&[], false));
        pods.apply(pod("p1", true));
        drain(&queue, &gc).await;
        assert!(fake.made("delete").is_empty(), "the owner exists");
        sets.delete(&rs(&[], false));
        drain(&queue, &gc).await;
        assert_eq!(fake.made("delete"), vec!["pods d/p1"]);
    }

    #[tokio::test]
    async fn an_owner_whose_name_no_url_can_hold_is_gone() {
        let (fake, _sets, pods, queue, gc) = setup();
        let mut p = pod("p1", false);
        p.metadata.owner_references.as_mut().unwrap()[0].name = "../web".into();
        // What the API server would answer were the name sent.
        fake.put(
            "replicasets",
            json!({"metadata": {"name": "../web", "namespace": "d", "uid": "rs"}}),
        );
        pods.apply(p);
        drain(&queue, &gc).await;
        assert_eq!(fake.made("delete"), vec!["pods d/p1"]);
    }

    #[tokio::test]
    async fn a_kind_no_longer_followed_leaves_the_graph() {
        let (_fake, _sets, pods, queue, gc) = setup();
        pods.apply(pod("p1", false));
        drain(&queue, &gc).await;
        let observer = gc.observer();
        let pods_resource = ApiResource::erase::<Pod>(&());
        observer.forget(&pods_resource);
        assert_gone_and_owner_looked_at(&gc, &queue, "rs");
    }

    /// The graph holds nothing, and the one object's owner was queued.
    fn assert_gone_and_owner_looked_at(gc: &GarbageCollector, queue: &Queue, owner: &str) {
        assert!(gc.graph().objects.is_empty());
        assert!(gc.graph().dependents[owner].is_empty());
        assert_eq!(
            queue.try_next().as_deref(),
            Some(owner),
            "its owner looked at"
        );
    }

    #[tokio::test]
    async fn an_object_made_again_under_its_name_replaces_the_old_one() {
        let (_fake, _sets, pods, _queue, gc) = setup();
        pods.apply(pod("p1", false));
        let mut again = pod("p1", false);
        again.metadata.uid = Some("p1-again".into());
        pods.apply(again);
        let g = gc.graph();
        assert!(!g.objects.contains_key("p1"), "the old one is gone");
        assert!(g.objects.contains_key("p1-again"));
        let dependents: Vec<&String> = g.dependents["rs"].iter().collect();
        assert_eq!(dependents, ["p1-again"]);
    }

    #[tokio::test]
    async fn a_followed_object_is_known_by_its_graph_entry_alone() {
        let (_fake, _sets, _pods, queue, gc) = setup();
        let observer = gc.observer();
        let config_maps = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let owned_by = |owner: &str| -> ObjectMeta {
            serde_json::from_value(json!({"name": "c", "namespace": "d", "uid": "cm",
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": owner}]}))
            .unwrap()
        };
        observer.seen(&config_maps, &owned_by("a"));
        observer.seen(&config_maps, &owned_by("b"));
        // The owner it had before is read from the graph's entry.
        assert!(gc.graph().dependents["a"].is_empty());
        assert!(gc.graph().dependents["b"].contains("cm"));
        while queue.try_next().is_some() {}
        observer.observe_followed(&config_maps, "cm", None);
        assert_gone_and_owner_looked_at(&gc, &queue, "b");
    }

    #[test]
    fn every_stored_kind_is_followed_once_but_events() {
        let (_fake, _sets, _pods, _queue, gc) = setup();
        let kinds: Vec<String> = gc
            .unwatched()
            .iter()
            .map(|r| format!("{}/{}", r.api_version, r.plural))
            .collect();
        for followed in [
            "v1/configmaps",
            "v1/secrets",
            "coordination.k8s.io/v1/leases",
        ] {
            assert!(kinds.iter().any(|k| k == followed), "{followed}: {kinds:?}");
        }
        for left in [
            "v1/pods",
            "apps/v1/replicasets",
            "v1/events",
            "events.k8s.io/v1/events",
        ] {
            assert!(!kinds.iter().any(|k| k == left), "{left}: {kinds:?}");
        }
        let autoscalers = kinds
            .iter()
            .filter(|k| k.ends_with("/horizontalpodautoscalers"));
        assert_eq!(autoscalers.count(), 1, "{kinds:?}");
        let crd = serde_json::from_value(json!({"metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": false},
                    {"name": "v2", "served": true, "storage": true}]}}))
        .unwrap();
        let stored = stored_resource(&crd).unwrap();
        assert_eq!(
            (stored.api_version.as_str(), stored.plural.as_str()),
            ("example.com/v2", "widgets")
        );
    }

    #[tokio::test]
    async fn orphan_frees_dependents_then_the_owner() {
        let (fake, sets, pods, queue, gc) = setup();
        pods.apply(pod("p1", true));
        sets.apply(rs(&[ORPHAN], true));
        drain(&queue, &gc).await;
        let patches = fake.bodies("patch");
        assert_eq!(patches[0]["metadata"]["ownerReferences"], json!([]));
        assert_eq!(patches[1]["metadata"]["finalizers"], json!([]));
        assert!(fake.made("delete").is_empty());
    }

    #[tokio::test]
    async fn foreground_waits_for_blocking_dependents() {
        let (fake, sets, pods, queue, gc) = setup();
        pods.apply(pod("p1", true));
        sets.apply(rs(&[FOREGROUND], true));
        drain(&queue, &gc).await;
        assert_eq!(fake.made("delete"), vec!["pods d/p1"]);
        assert!(fake.made("patch").is_empty(), "the owner waits");
        pods.delete(&pod("p1", true));
        drain(&queue, &gc).await;
        assert_eq!(fake.bodies("patch")[0]["metadata"]["finalizers"], json!([]));
    }
}
