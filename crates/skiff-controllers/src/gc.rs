//! The garbage collector: deletes objects whose owners are gone
//! (Background), deletes an owner's dependents before the owner
//! (Foreground, the `foregroundDeletion` finalizer) or frees them (Orphan,
//! the `orphan` finalizer). It keeps a graph of owner references over the
//! kinds the controller manager watches.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::ApiResource;
use serde_json::{json, Value};

use skiff_runtime::api::{Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{Informer, Object};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

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
}

impl GarbageCollector {
    pub fn new(cluster: Arc<dyn Cluster>, queue: Arc<Queue>) -> Self {
        Self {
            graph: Arc::default(),
            queue,
            cluster,
        }
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds one kind of object to the graph.
    pub fn watch<K>(&self, informer: &mut Informer<K>)
    where
        K: Object,
    {
        let (graph, queue) = (self.graph.clone(), self.queue.clone());
        let resource = ApiResource::erase::<K>(&());
        informer.on_change(move |old, new| {
            let mut g = graph.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(o) = old {
                let uid = o.meta().uid.clone().unwrap_or_default();
                for r in o.meta().owner_references.iter().flatten() {
                    if let Some(d) = g.dependents.get_mut(&r.uid) {
                        d.remove(&uid);
                    }
                }
                if new.is_none() {
                    g.objects.remove(&uid);
                    // Its dependents lost an owner; its owners may be
                    // waiting for it in a foreground deletion.
                    for d in g.dependents.get(&uid).into_iter().flatten() {
                        queue.add(d.clone());
                    }
                    for r in o.meta().owner_references.iter().flatten() {
                        queue.add(r.uid.clone());
                    }
                }
            }
            if let Some(n) = new {
                let m = n.meta();
                let uid = m.uid.clone().unwrap_or_default();
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
                        .insert(uid.clone());
                }
                let interesting = !entry.owners.is_empty()
                    || entry
                        .finalizers
                        .iter()
                        .any(|f| f == ORPHAN || f == FOREGROUND);
                let started_deleting =
                    entry.deleting && old.is_none_or(|o| o.meta().deletion_timestamp.is_none());
                if started_deleting {
                    for r in &entry.owners {
                        queue.add(r.uid.clone());
                    }
                }
                g.objects.insert(uid.clone(), entry);
                if interesting {
                    queue.add(uid);
                }
            }
        });
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
            Some(t) if !t.custom => Some((
                ApiResource {
                    group: t.group.into(),
                    version: t.version.into(),
                    api_version: t.api_version(),
                    kind: t.kind.into(),
                    plural: t.plural.into(),
                },
                t.namespaced,
            )),
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
