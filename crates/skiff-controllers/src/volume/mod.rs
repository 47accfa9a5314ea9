//! The PersistentVolume controller, as upstream's: claims are bound to
//! the smallest volume that serves them or provisioned one by their class
//! (the built-in `skiff.io/local-path`, a directory on the node of the
//! claim's first pod); volumes go Available, Bound, Released and are
//! reclaimed by their policy; protection finalizers come off once nothing
//! uses a claim or a volume. Generic ephemeral volumes get their claims
//! made for their pods.

mod claims;
mod ephemeral;
mod provision;
mod volumes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;
use serde_json::{json, Value};

use skiff_runtime::api::{Cluster, Error, Target};
use skiff_runtime::cache::{key_of, Cache, Informer};
use skiff_runtime::queue::Queue;

pub use claims::ClaimController;
pub use ephemeral::EphemeralController;
pub use volumes::VolumeController;

const COMPONENT: &str = "persistentvolume-controller";

/// What both loops read and write.
pub struct Shared {
    pub claims: Arc<Cache<PersistentVolumeClaim>>,
    pub volumes: Arc<Cache<PersistentVolume>>,
    pub classes: Arc<Cache<StorageClass>>,
    pub nodes: Arc<Cache<Node>>,
    pub pods: Arc<Cache<Pod>>,
    pub cluster: Arc<dyn Cluster>,
    /// The last event reason told about each object, so that a claim
    /// waiting for the same thing is not told again on every pass.
    told: Mutex<HashMap<String, String>>,
}

impl Shared {
    /// Wires the informers to the two queues: a claim change looks at the
    /// claim and its volume, a volume change at the volume, its claim and
    /// (when it may serve one) the waiting claims; a pod change at the
    /// claims it uses.
    pub fn new(
        informers: Informers<'_>,
        cluster: Arc<dyn Cluster>,
        claim_queue: Arc<Queue>,
        volume_queue: Arc<Queue>,
    ) -> Arc<Self> {
        let Informers {
            claims,
            volumes,
            classes,
            nodes,
            pods,
        } = informers;
        let shared = Arc::new(Self {
            claims: claims.cache(),
            volumes: volumes.cache(),
            classes: classes.cache(),
            nodes: nodes.cache(),
            pods: pods.cache(),
            cluster,
            told: Mutex::default(),
        });
        let (cq, vq) = (claim_queue.clone(), volume_queue.clone());
        claims.on_change(move |old, new| {
            for c in [old, new].into_iter().flatten() {
                cq.add(key_of(c));
                if let Some(v) = c.spec.as_ref().and_then(|s| s.volume_name.clone()) {
                    vq.add(v);
                }
            }
        });
        let (cq, vq) = (claim_queue.clone(), volume_queue);
        let pending = shared.claims.clone();
        volumes.on_change(move |old, new| {
            for v in [old, new].into_iter().flatten() {
                vq.add(v.name_any());
                if let Some(r) = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
                    let ns = r.namespace.clone().unwrap_or_default();
                    cq.add(format!("{ns}/{}", r.name.clone().unwrap_or_default()));
                }
            }
            // A volume that may serve a claim wakes the claims of its class.
            if let Some(v) = new.filter(|v| v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()))
            {
                let class = skiff_core::volumes::volume_class(v);
                for c in pending.list() {
                    let unbound = c.spec.as_ref().is_none_or(|s| s.volume_name.is_none());
                    if unbound && skiff_core::volumes::claim_class(&c) == class {
                        cq.add(key_of(&*c));
                    }
                }
            }
        });
        let (cq, pending) = (claim_queue.clone(), shared.claims.clone());
        classes.on_change(move |_, new| {
            let Some(class) = new else { return };
            for c in pending.list() {
                if skiff_core::volumes::claim_class(&c) == class.name_any() {
                    cq.add(key_of(&*c));
                }
            }
        });
        let cq = claim_queue;
        pods.on_change(move |old, new| {
            for p in [old, new].into_iter().flatten() {
                let ns = p.namespace().unwrap_or_default();
                for claim in claims_of(p) {
                    cq.add(format!("{ns}/{claim}"));
                }
            }
        });
        shared
    }

    /// Records an event about `obj` unless the last one told was the same.
    fn tell<K>(&self, obj: &K, warning: bool, reason: &str, message: &str)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let key = format!("{}/{}", K::kind(&()), key_of(obj));
        let said = format!("{reason}: {message}");
        let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
        if told.get(&key) == Some(&said) {
            return;
        }
        told.insert(key, said);
        drop(told);
        self.cluster.event(skiff_runtime::events::about(
            obj, COMPONENT, warning, reason, message,
        ));
    }

    /// Forgets what was told about objects that are gone.
    fn forget(&self, kind: &str, key: &str) {
        let key = format!("{kind}/{key}");
        self.told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// A merge patch of an object or its status, guarded by the
    /// resourceVersion it was read at.
    async fn patch<K>(&self, obj: &K, mut patch: Value, status: bool) -> Result<(), Error>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        patch["metadata"]["resourceVersion"] = json!(obj.meta().resource_version);
        let target = Target::of::<K>(obj.meta().namespace.as_deref(), &obj.name_any());
        self.cluster.merge_patch(&target, patch, status).await?;
        Ok(())
    }

    /// Takes `finalizer` off the object, if it is there.
    async fn release<K>(&self, obj: &K, finalizer: &str) -> Result<(), Error>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let finalizers = &obj.meta().finalizers;
        if !finalizers.iter().flatten().any(|f| f == finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        match self
            .patch(obj, json!({"metadata": {"finalizers": rest}}), false)
            .await
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

/// The informers the volume controllers follow.
pub struct Informers<'a> {
    pub claims: &'a mut Informer<PersistentVolumeClaim>,
    pub volumes: &'a mut Informer<PersistentVolume>,
    pub classes: &'a mut Informer<StorageClass>,
    pub nodes: &'a Informer<Node>,
    pub pods: &'a mut Informer<Pod>,
}

/// The claims a pod's volumes use (a generic ephemeral volume's among
/// them).
pub fn claims_of(pod: &Pod) -> impl Iterator<Item = String> + '_ {
    skiff_core::volumes::pod_claims(pod).map(|c| c.name)
}

#[cfg(test)]
mod tests;
