//! Serving CustomResourceDefinitions: every change to a definition
//! re-reads them all and installs the served custom types; each
//! definition's status says whether its names were accepted and it is
//! established; a deleted definition's objects go before it does.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use skiff_core::crd::{self, Definition};
use skiff_core::registry::{self, ResourceType};
use skiff_core::{meta, ApiError};
use skiff_store::{ListOptions, Revision, Store};

use crate::storage::{decode, Change, Objects};

/// The definitions' follower.
pub struct Definitions {
    objects: Objects,
    /// One reload at a time, so an older read never installs over a newer.
    reloading: tokio::sync::Mutex<()>,
    /// Definitions whose objects are being deleted.
    cleaning: std::sync::Mutex<HashSet<String>>,
}

fn definitions() -> &'static ResourceType {
    registry::lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("definitions are served")
}

impl Definitions {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            objects: Objects { store },
            reloading: Default::default(),
            cleaning: Default::default(),
        })
    }

    /// Reads every definition, installs what they serve, and brings their
    /// statuses up to date. Returns the revision read at.
    pub async fn reload(self: &Arc<Self>) -> Result<Revision, skiff_store::Error> {
        let _one = self.reloading.lock().await;
        let page = self
            .objects
            .store
            .list(&definitions().list_prefix(None), ListOptions::default())
            .await?;
        let mut all: Vec<Value> = page.items.iter().filter_map(|kv| decode(kv).ok()).collect();
        // Names already accepted stay so; else the first to claim wins.
        all.sort_by_cached_key(|o| {
            let accepted = o["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "NamesAccepted" && c["status"] == "True");
            let created = meta::get_str(o, "creationTimestamp")
                .unwrap_or("")
                .to_owned();
            (!accepted, created, meta::name(o).to_owned())
        });
        let mut accepted: Vec<Definition> = Vec::new();
        let mut statuses = Vec::new();
        for obj in &all {
            let d = Definition::parse(obj);
            let conflict = conflict(&d, &accepted);
            statuses.push((
                meta::name(obj).to_owned(),
                conditions(obj, &d, conflict.as_deref()),
            ));
            if conflict.is_none() {
                accepted.push(d);
            }
        }
        crd::install(&accepted);
        for (name, status) in statuses {
            self.set_status(&name, status).await;
        }
        for obj in &all {
            if meta::is_deleting(obj) && meta::finalizers(obj).iter().any(|f| f == crd::CLEANUP) {
                self.clean_up(Definition::parse(obj), meta::name(obj).to_owned());
            }
        }
        Ok(page.revision)
    }

    /// Reloads on every change to a definition, for ever.
    pub async fn follow(self: Arc<Self>, mut revision: Revision) {
        let prefix = definitions().list_prefix(None);
        loop {
            match self.objects.store.watch(&prefix, revision).await {
                Ok(mut changes) => {
                    let _ = changes.next().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "watching CustomResourceDefinitions");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            revision = crate::authz::reload("CustomResourceDefinitions", || self.reload()).await;
        }
    }

    async fn set_status(&self, name: &str, status: Value) {
        let written = self
            .objects
            .update(definitions(), None, name, |current| {
                let mut next = current.clone();
                next["status"] = merged_status(&current["status"], status.clone());
                Ok(Change::unless_same(&current, next))
            })
            .await;
        if let Err(e) = written {
            if e.code != 404 {
                tracing::warn!(error = %e, name, "writing a definition's status");
            }
        }
    }

    /// Deletes a deleted definition's objects (those with finalizers are
    /// marked and waited for), then lets the definition go.
    fn clean_up(self: &Arc<Self>, d: Definition, name: String) {
        if !self
            .cleaning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone())
        {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                match this.delete_objects(&d).await {
                    Ok(None) => break,
                    // Some wait for their finalizers: the next pass comes
                    // with the next change to the objects.
                    Ok(Some((prefix, revision))) => this.changed(&prefix, revision).await,
                    Err(e) => {
                        tracing::warn!(error = %e.message, name, "deleting a definition's objects");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            if let Err(e) = this.release(&name).await {
                tracing::warn!(error = %e.message, name, "finalizing a definition");
            }
            this.cleaning
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
        });
    }

    /// Waits for a change under `prefix` after `revision` (or a while,
    /// should the watch fail or nothing change).
    async fn changed(&self, prefix: &str, revision: Revision) {
        match self.objects.store.watch(prefix, revision).await {
            Ok(mut changes) => {
                let _ = tokio::time::timeout(Duration::from_secs(30), changes.next()).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }

    /// One pass over the objects: `None` when none is left, else where
    /// they are and the revision they were listed at.
    async fn delete_objects(&self, d: &Definition) -> Result<Option<(String, Revision)>, ApiError> {
        let Some(version) = d.versions.iter().find(|v| v.storage) else {
            return Ok(None);
        };
        let Some(r) = registry::lookup(&d.group, &version.name, &d.plural) else {
            // Never served (its names were refused): nothing was stored.
            return Ok(None);
        };
        let (items, revision, _) = self.objects.list(r, None, ListOptions::default()).await?;
        if items.is_empty() {
            return Ok(None);
        }
        let now = meta::now();
        for kv in &items {
            let obj = decode(kv)?;
            let (ns, name) = (
                meta::namespace(&obj).map(str::to_owned),
                meta::name(&obj).to_owned(),
            );
            let result = if !meta::finalizers(&obj).is_empty() {
                self.objects
                    .update(r, ns.as_deref(), &name, |mut o| {
                        if meta::is_deleting(&o) {
                            return Ok(Change::Keep);
                        }
                        meta::set(&mut o, "deletionTimestamp", now.clone());
                        meta::set(&mut o, "deletionGracePeriodSeconds", 0);
                        Ok(Change::Write(o))
                    })
                    .await
                    .map(|_| ())
            } else {
                self.objects
                    .delete(r, ns.as_deref(), &name, Some(kv.mod_rev))
                    .await
                    .map(|_| ())
            };
            match result {
                Ok(()) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Some((r.list_prefix(None), revision)))
    }

    /// Drops the cleanup finalizer; the definition goes with the last.
    async fn release(&self, name: &str) -> Result<(), ApiError> {
        let r = definitions();
        let updated = self
            .objects
            .update(r, None, name, |mut o| {
                let rest: Vec<String> = meta::finalizers(&o)
                    .into_iter()
                    .filter(|f| f != crd::CLEANUP)
                    .collect();
                meta::set(&mut o, "finalizers", rest);
                Ok(Change::Write(o))
            })
            .await?;
        if meta::finalizers(&updated).is_empty() {
            let rv = meta::resource_version(&updated);
            match self.objects.delete(r, None, name, rv).await {
                Ok(_) => {}
                Err(e) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Why a definition's names cannot be served, if they cannot: a built-in
/// resource or an earlier definition has them.
fn conflict(d: &Definition, accepted: &[Definition]) -> Option<String> {
    if registry::RESOURCES
        .iter()
        .any(|r| r.group == d.group && (r.plural == d.plural || r.kind == d.kind))
    {
        return Some(format!(
            "{:?} is already in use by a built-in resource",
            d.plural
        ));
    }
    for a in accepted.iter().filter(|a| a.group == d.group) {
        if a.plural == d.plural {
            return Some(format!("{:?} is already in use", d.plural));
        }
        if a.kind == d.kind {
            return Some(format!("{:?} is already in use", d.kind));
        }
        if d.short_names.iter().any(|s| a.short_names.contains(s)) {
            return Some("a short name is already in use".into());
        }
    }
    None
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> Value {
    json!({"type": kind, "status": if status { "True" } else { "False" }, "reason": reason, "message": message})
}

/// The status a definition should have.
fn conditions(obj: &Value, d: &Definition, conflict: Option<&str>) -> Value {
    let mut conds = vec![match conflict {
        None => condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
        Some(why) => condition("NamesAccepted", false, "MultipleNamesNotAllowed", why),
    }];
    conds.push(match conflict {
        None => condition(
            "Established",
            true,
            "InitialNamesAccepted",
            "the initial names have been accepted",
        ),
        Some(_) => condition(
            "Established",
            false,
            "NotAccepted",
            "not all names are accepted",
        ),
    });
    if meta::is_deleting(obj) {
        conds.push(condition(
            "Terminating",
            true,
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    let mut stored: Vec<Value> = obj["status"]["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(v) = d.versions.iter().find(|v| v.storage) {
        if !stored.iter().any(|s| s == v.name.as_str()) {
            stored.push(json!(v.name));
        }
    }
    let names = if conflict.is_none() {
        d.accepted_names()
    } else {
        obj["status"]["acceptedNames"].clone()
    };
    json!({"conditions": conds, "acceptedNames": names, "storedVersions": stored})
}

/// `next` with each condition's transition time kept while its status
/// holds, and set to now when it changes.
fn merged_status(current: &Value, mut next: Value) -> Value {
    let now = meta::now();
    if let Some(conds) = next["conditions"].as_array_mut() {
        for c in conds {
            let before = current["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|o| o["type"] == c["type"]);
            c["lastTransitionTime"] = match before {
                Some(b) if b["status"] == c["status"] => b["lastTransitionTime"].clone(),
                _ => json!(now),
            };
        }
    }
    if next["acceptedNames"].is_null() {
        next["acceptedNames"] = json!({"plural": "", "kind": ""});
    }
    next
}
