//! Informers: a watch keeps a local cache of one kind of object and tells
//! handlers about every change, with the object before and after.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch as signal;

use crate::lean::{Leaves, ManagedFields};
use crate::watch::{self, Change};

/// `namespace/name`, or `name` for cluster-scoped objects.
pub fn key_of<K: Resource>(obj: &K) -> String {
    match obj.meta().namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", obj.name_any()),
        None => obj.name_any(),
    }
}

/// The namespace and name in a key.
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// What an informer can watch: a typed Kubernetes object.
pub trait Object:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// Objects of one kind by key, as last seen.
pub struct Cache<K> {
    objects: RwLock<HashMap<String, Arc<K>>>,
    synced: signal::Sender<bool>,
}

impl<K> Default for Cache<K> {
    fn default() -> Self {
        Self {
            objects: RwLock::default(),
            synced: signal::Sender::new(false),
        }
    }
}

impl<K: Resource> Cache<K> {
    pub fn get(&self, key: &str) -> Option<Arc<K>> {
        self.read().get(key).cloned()
    }

    pub fn list(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// The objects in one namespace.
    pub fn list_in(&self, ns: &str) -> Vec<Arc<K>> {
        self.read()
            .values()
            .filter(|o| o.meta().namespace.as_deref() == Some(ns))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Puts `obj` in the cache, returning what it replaces.
    pub fn insert(&self, obj: K) -> Option<Arc<K>> {
        let key = key_of(&obj);
        self.write().insert(key, Arc::new(obj))
    }

    pub fn remove(&self, key: &str) -> Option<Arc<K>> {
        self.write().remove(key)
    }

    /// Whether the first full list has been loaded.
    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first full list has been loaded.
    pub async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<K>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<K>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Called with the object before and after a change; `None` before means
/// added, `None` after means deleted.
pub type Handler<K> = Box<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// A watch feeding a [`Cache`] and its handlers.
pub struct Informer<K> {
    cache: Arc<Cache<K>>,
    handlers: Vec<Handler<K>>,
    /// Drops what none of the informer's readers uses, before an object is
    /// cached or handed to the handlers.
    trim: Option<fn(&mut K)>,
}

impl<K> Default for Informer<K> {
    fn default() -> Self {
        Self {
            cache: Arc::default(),
            handlers: Vec::new(),
            trim: None,
        }
    }
}

impl<K> Informer<K>
where
    K: Object,
{
    /// An informer that keeps objects as `trim` leaves them (upstream's
    /// informer transforms): for readers that need a part of each object.
    pub fn trimmed(trim: fn(&mut K)) -> Self {
        Self {
            trim: Some(trim),
            ..Self::default()
        }
    }

    pub fn cache(&self) -> Arc<Cache<K>> {
        self.cache.clone()
    }

    pub fn on_change(&mut self, handler: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        self.handlers.push(Box::new(handler));
    }

    /// Applies a change to the cache and tells the handlers.
    pub fn apply(&self, mut obj: K) {
        if let Some(trim) = self.trim {
            trim(&mut obj);
        }
        let new = Arc::new(obj);
        let old = self.cache.write().insert(key_of(&*new), new.clone());
        self.notify(old.as_deref(), Some(&new));
    }

    pub fn delete(&self, obj: &K) {
        let old = self.cache.remove(&key_of(obj));
        self.notify(Some(old.as_deref().unwrap_or(obj)), None);
    }

    fn notify(&self, old: Option<&K>, new: Option<&K>) {
        for h in &self.handlers {
            h(old, new);
        }
    }

    /// Watches `api` forever.
    pub async fn run(self, api: Api<K>, config: watcher::Config) {
        self.run_without::<ManagedFields>(api, config).await
    }

    /// [`Informer::run`], reading objects without what `L` leaves out.
    pub async fn run_without<L: Leaves>(self, api: Api<K>, config: watcher::Config) {
        let changes = watch::changes_without::<K, L>(api, config);
        let mut changes = std::pin::pin!(changes);
        while let Some(change) = changes.next().await {
            match change {
                Change::Relisted(objs) => self.replace(objs),
                Change::Applied(obj) => self.apply(obj),
                Change::Deleted(obj) => self.delete(&obj),
            }
        }
    }

    /// A relist: what it does not show is deleted, the rest applied.
    fn replace(&self, objs: Vec<K>) {
        let seen: HashMap<String, K> = objs.into_iter().map(|o| (key_of(&o), o)).collect();
        let gone: Vec<Arc<K>> = self
            .cache
            .list()
            .into_iter()
            .filter(|o| !seen.contains_key(&key_of(&**o)))
            .collect();
        for obj in gone {
            self.delete(&obj);
        }
        for (_, obj) in seen {
            self.apply(obj);
        }
        self.cache.synced.send_replace(true);
    }
}

/// A cache of `K` kept current from the API server by a spawned informer;
/// every change wakes `wake`, when given, and so does the first full list
/// (so a waker that looks at [`Cache::is_synced`] sees it true).
pub fn follow<K: Object>(
    client: &kube::Client,
    wake: Option<Arc<tokio::sync::Notify>>,
) -> Arc<Cache<K>> {
    let mut informer = Informer::<K>::default();
    let cache = informer.cache();
    if let Some(wake) = wake {
        let on_sync = (cache.clone(), wake.clone());
        informer.on_change(move |_, _| wake.notify_one());
        tokio::spawn(async move {
            on_sync.0.wait_synced().await;
            on_sync.1.notify_one();
        });
    }
    tokio::spawn(informer.run(Api::all(client.clone()), watcher::Config::default()));
    cache
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn map(name: &str) -> ConfigMap {
        let mut m = ConfigMap::default();
        m.metadata.name = Some(name.into());
        m.metadata.namespace = Some("ns".into());
        m.data = Some([("big".to_owned(), "x".repeat(100))].into());
        m
    }

    #[test]
    fn a_trimmed_informer_caches_and_hands_on_what_the_trim_leaves() {
        let mut informer = Informer::<ConfigMap>::trimmed(|m| m.data = None);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        informer.on_change(move |_, new| s.lock().unwrap().push(new.cloned()));
        informer.apply(map("a"));
        informer.replace(vec![map("a"), map("b")]);

        let cache = informer.cache();
        assert_eq!(cache.len(), 2);
        assert!(cache.list().iter().all(|m| m.data.is_none()));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().flatten().all(|m| m.data.is_none()));
        assert_eq!(
            cache.get("ns/b").unwrap().metadata.name.as_deref(),
            Some("b")
        );

        let plain = Informer::<ConfigMap>::default();
        plain.apply(map("a"));
        assert!(plain.cache().get("ns/a").unwrap().data.is_some());
    }
}
