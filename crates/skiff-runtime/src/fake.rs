//! An in-memory stand-in for the API server, for controllers' unit tests:
//! it records every write and answers reads from what was written.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use kube::core::ApiResource;
use serde_json::{json, Value};

use super::api::{Cluster, Deletion, Error, Target};

/// One recorded write, as `verb plural ns/name`, with its body.
#[derive(Clone, Debug)]
pub struct Call {
    pub verb: &'static str,
    pub resource: String,
    pub key: String,
    pub body: Value,
}

#[derive(Default)]
pub struct FakeCluster {
    pub calls: Mutex<Vec<Call>>,
    pub events: Mutex<Vec<Value>>,
    objects: Mutex<BTreeMap<(String, String), Value>>,
    serial: Mutex<u64>,
}

fn key(ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_owned(),
    }
}

impl FakeCluster {
    fn record(&self, verb: &'static str, resource: &ApiResource, key: String, body: Value) {
        self.calls.lock().unwrap().push(Call {
            verb,
            resource: resource.plural.clone(),
            key,
            body,
        });
    }

    /// Stores an object that reads will find.
    pub fn put(&self, plural: &str, obj: Value) {
        let k = key(
            obj["metadata"]["namespace"].as_str(),
            obj["metadata"]["name"].as_str().unwrap_or(""),
        );
        self.objects
            .lock()
            .unwrap()
            .insert((plural.to_owned(), k), obj);
    }

    /// The stored objects of one resource, as the cluster holds them now.
    pub fn objects(&self, plural: &str) -> Vec<Value> {
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|((p, _), _)| p == plural)
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// The recorded calls with this verb, as `plural key`.
    pub fn made(&self, verb: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.verb == verb)
            .map(|c| format!("{} {}", c.resource, c.key))
            .collect()
    }

    /// The bodies of the recorded calls with this verb.
    pub fn bodies(&self, verb: &str) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.verb == verb)
            .map(|c| c.body.clone())
            .collect()
    }

    /// The reasons and messages of the recorded events.
    pub fn event_messages(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["reason"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    pub fn clear(&self) {
        self.calls.lock().unwrap().clear();
        self.events.lock().unwrap().clear();
    }
}

#[async_trait]
impl Cluster for FakeCluster {
    async fn create(
        &self,
        r: &ApiResource,
        ns: Option<&str>,
        mut obj: Value,
    ) -> Result<Value, Error> {
        let n = {
            let mut s = self.serial.lock().unwrap();
            *s += 1;
            *s
        };
        if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
            let prefix = obj["metadata"]["generateName"]
                .as_str()
                .unwrap_or("x-")
                .to_owned();
            obj["metadata"]["name"] = json!(format!("{prefix}{n:05}"));
        }
        obj["metadata"]["uid"] = json!(format!("uid-{n}"));
        let k = key(ns, obj["metadata"]["name"].as_str().unwrap_or(""));
        let mut objects = self.objects.lock().unwrap();
        if objects.contains_key(&(r.plural.clone(), k.clone())) {
            return Err(Error::Api {
                code: 409,
                reason: "AlreadyExists".into(),
                message: format!("{k} already exists"),
            });
        }
        objects.insert((r.plural.clone(), k.clone()), obj.clone());
        drop(objects);
        self.record("create", r, k, obj.clone());
        Ok(obj)
    }

    async fn merge_patch(&self, t: &Target, patch: Value, status: bool) -> Result<Value, Error> {
        let k = key(t.namespace.as_deref(), t.segment()?);
        self.record(
            if status { "patch-status" } else { "patch" },
            &t.resource,
            k.clone(),
            patch.clone(),
        );
        let mut objects = self.objects.lock().unwrap();
        let obj = objects
            .entry((t.resource.plural.clone(), k))
            .or_insert_with(|| json!({"metadata": {"name": t.name, "namespace": t.namespace}}));
        json_patch::merge(obj, &patch);
        Ok(obj.clone())
    }

    async fn json_patch(&self, t: &Target, patch: Value) -> Result<Value, Error> {
        let k = key(t.namespace.as_deref(), t.segment()?);
        self.record("json-patch", &t.resource, k, patch);
        Ok(json!({}))
    }

    async fn delete(&self, t: &Target, how: Deletion) -> Result<(), Error> {
        let k = key(t.namespace.as_deref(), t.segment()?);
        self.record(
            "delete",
            &t.resource,
            k.clone(),
            json!({"propagation": how.propagation, "uid": how.uid}),
        );
        self.objects
            .lock()
            .unwrap()
            .remove(&(t.resource.plural.clone(), k));
        Ok(())
    }

    async fn get(&self, t: &Target) -> Result<Option<Value>, Error> {
        let k = key(t.namespace.as_deref(), t.segment()?);
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(&(t.resource.plural.clone(), k))
            .cloned())
    }

    /// What [`FakeCluster::put`] stored under `<plural>/<subresource>`.
    async fn get_subresource(&self, t: &Target, sub: &str) -> Result<Option<Value>, Error> {
        let k = key(t.namespace.as_deref(), t.segment()?);
        let plural = format!("{}/{sub}", t.resource.plural);
        Ok(self.objects.lock().unwrap().get(&(plural, k)).cloned())
    }

    async fn list(&self, r: &ApiResource, ns: Option<&str>) -> Result<Vec<Value>, Error> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .iter()
            .filter(|((plural, _), o)| {
                *plural == r.plural && ns.is_none_or(|ns| o["metadata"]["namespace"] == ns)
            })
            .map(|(_, o)| o.clone())
            .collect())
    }

    async fn delete_collection(&self, r: &ApiResource, ns: &str) -> Result<(), Error> {
        self.record("deletecollection", r, ns.to_owned(), Value::Null);
        self.objects
            .lock()
            .unwrap()
            .retain(|(plural, _), o| !(*plural == r.plural && o["metadata"]["namespace"] == ns));
        Ok(())
    }

    async fn replace_subresource(&self, t: &Target, sub: &str, obj: Value) -> Result<Value, Error> {
        let k = key(t.namespace.as_deref(), t.segment()?);
        self.record(
            if sub == "finalize" {
                "finalize"
            } else {
                "replace"
            },
            &t.resource,
            k,
            obj.clone(),
        );
        Ok(obj)
    }

    fn event(&self, event: Value) {
        self.events.lock().unwrap().push(event);
    }
}
