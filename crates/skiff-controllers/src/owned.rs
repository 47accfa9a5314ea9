//! Routes changes of owned objects (pods of a ReplicaSet, ReplicaSets of a
//! Deployment, …) to their controller's queue, and counts the creations and
//! deletions its expectations wait for.

use std::sync::Arc;

use kube::api::ObjectMeta;

use crate::pods::controller_of;
use skiff_runtime::cache::{Informer, Object};
use skiff_runtime::expectations::Expectations;
use skiff_runtime::queue::Queue;

/// The key of the controller of `meta`, if it is of kind `owner_kind`.
fn owner_key(meta: &ObjectMeta, owner_kind: &str) -> Option<String> {
    let r = controller_of(meta).filter(|r| r.kind == owner_kind)?;
    Some(match meta.namespace.as_deref() {
        Some(ns) => format!("{ns}/{}", r.name),
        None => r.name.clone(),
    })
}

/// Wires `informer` of owned objects to the owner's `queue`. Orphans go to
/// every owner `candidates` names, which may adopt them.
pub fn track<C>(
    informer: &mut Informer<C>,
    owner_kind: &'static str,
    queue: Arc<Queue>,
    expectations: Option<Arc<Expectations>>,
    candidates: impl Fn(&C) -> Vec<String> + Send + Sync + 'static,
) where
    C: Object,
{
    informer.on_change(move |old, new| {
        let observe = |key: &str, created: bool| {
            if let Some(e) = &expectations {
                if created {
                    e.creation_observed(key);
                } else {
                    e.deletion_observed(key);
                }
            }
        };
        let old_owner = old.and_then(|o| owner_key(o.meta(), owner_kind));
        let new_owner = new.and_then(|o| owner_key(o.meta(), owner_kind));
        match (old, new) {
            (None, Some(obj)) => {
                if let Some(k) = &new_owner {
                    observe(k, obj.meta().deletion_timestamp.is_none());
                }
            }
            (Some(before), Some(after)) => {
                if before.meta().deletion_timestamp.is_none()
                    && after.meta().deletion_timestamp.is_some()
                {
                    if let Some(k) = &new_owner {
                        observe(k, false);
                    }
                }
            }
            (Some(before), None) => {
                if before.meta().deletion_timestamp.is_none() {
                    if let Some(k) = &old_owner {
                        observe(k, false);
                    }
                }
            }
            (None, None) => {}
        }
        for k in [&old_owner, &new_owner].into_iter().flatten() {
            queue.add(k.clone());
        }
        if new_owner.is_none() {
            if let Some(obj) = new {
                for k in candidates(obj) {
                    queue.add(k);
                }
            }
        }
        // A label change may make another owner's selector match.
        if let (Some(before), Some(after)) = (old, new) {
            if before.meta().labels != after.meta().labels {
                for k in candidates(before).into_iter().chain(candidates(after)) {
                    queue.add(k);
                }
            }
        }
    });
}

/// Queues the key of every changed object of the owner kind itself.
pub fn queue_self<K>(informer: &mut Informer<K>, queue: Arc<Queue>)
where
    K: Object,
{
    informer.on_change(move |old, new| {
        if let Some(o) = new.or(old) {
            queue.add(skiff_runtime::cache::key_of(o));
        }
    });
}
