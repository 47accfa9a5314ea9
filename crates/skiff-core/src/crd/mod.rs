//! CustomResourceDefinitions: what a definition declares (names, scope,
//! versions with their schemas, subresources and printer columns), the
//! checks a definition must pass, and the served custom resource types
//! derived from the established ones.

pub mod cel;
pub mod cel_authorizer;
mod cel_cost;
mod cel_libraries;
pub mod columns;
mod definition;
pub mod structural;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::registry::{self, ResourceType};

pub use definition::{check, Column, Definition, Scale, Version};

/// The finalizer that holds a deleted definition until its objects are gone.
pub const CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";

/// One served version of a custom resource, with what its objects are
/// checked against.
#[derive(Debug)]
pub struct Served {
    pub group: String,
    /// The version objects are stored at.
    pub storage_version: String,
    pub version: Version,
    rules: cel::Rules,
}

impl Served {
    /// Prunes unknown fields, listing their paths.
    pub fn decode(&self, mut obj: Value) -> (Value, Vec<String>) {
        let mut unknown = Vec::new();
        structural::prune_root(&mut obj, &self.version.schema, &mut unknown);
        (obj, unknown)
    }

    /// The schema's and the validation rules' complaints about `obj`
    /// (`old` is the stored object of an update, for transition rules).
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<crate::status::Cause> {
        let mut causes = Vec::new();
        let checked = structural::Checked::new(&self.rules, old);
        checked.root(obj, &self.version.schema, &mut causes);
        causes
    }
}

/// Served versions by (group, version, plural): the custom types' own
/// strings, so a lookup allocates nothing.
type Table = HashMap<(&'static str, &'static str, &'static str), Arc<Served>>;

static SERVED: RwLock<Option<Table>> = RwLock::new(None);

/// Serves these definitions' versions from now on, in place of those
/// before: the registry's custom types and their schemas.
pub fn install(definitions: &[Definition]) {
    let mut types = Vec::new();
    let mut table = Table::new();
    let before = SERVED.read().unwrap_or_else(|e| e.into_inner()).clone();
    for d in definitions {
        let storage = d
            .versions
            .iter()
            .find(|v| v.storage)
            .map(|v| v.name.clone())
            .unwrap_or_default();
        let mut versions: Vec<&Version> = d.versions.iter().filter(|v| v.served).collect();
        versions.sort_by(|a, b| version_order(&a.name, &b.name));
        for v in versions {
            let t = resource_type(d, v);
            let key = (t.group, t.version, t.plural);
            // A version as it was keeps its compiled rules: a reload (any
            // definition's status write) recompiles nothing unchanged.
            let same = before
                .as_ref()
                .and_then(|b| b.get(&key))
                .filter(|s| s.version == *v && s.storage_version == storage)
                .cloned();
            let served = same.unwrap_or_else(|| {
                Arc::new(Served {
                    group: d.group.clone(),
                    storage_version: storage.clone(),
                    rules: cel::Rules::of(&v.schema),
                    version: v.clone(),
                })
            });
            table.insert(key, served);
            types.push(t);
        }
    }
    *SERVED.write().unwrap_or_else(|e| e.into_inner()) = Some(table);
    registry::set_custom(types);
}

/// The served version behind a custom resource type.
pub fn served(r: &ResourceType) -> Option<Arc<Served>> {
    if !r.custom {
        return None;
    }
    let table = SERVED.read().unwrap_or_else(|e| e.into_inner());
    table
        .as_ref()?
        .get(&(r.group, r.version, r.plural))
        .cloned()
}

fn resource_type(d: &Definition, v: &Version) -> ResourceType {
    let mut subresources = Vec::new();
    if v.status {
        subresources.push("status".to_owned());
    }
    if v.scale.is_some() {
        subresources.push("scale".to_owned());
    }
    ResourceType {
        group: registry::intern(&d.group),
        version: registry::intern(&v.name),
        kind: registry::intern(&d.kind),
        plural: registry::intern(&d.plural),
        namespaced: d.namespaced,
        short_names: registry::intern_all(&d.short_names),
        categories: registry::intern_all(&d.categories),
        subresources: registry::intern_all(&subresources),
        singular: registry::intern(&d.singular),
        custom: true,
        decode: |v, _| Ok(v),
        decode_json: |b, _| serde_json::from_slice(b),
        schema: open_schema,
    }
}

fn open_schema(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({"type": "object"})
}

/// Kubernetes' version priority: GA before beta before alpha, higher
/// numbers first, then anything else by name.
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn rank(v: &str) -> Option<(u8, u64, u64)> {
        let rest = v.strip_prefix('v')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let tail = &rest[digits..];
        let (level, minor) = if tail.is_empty() {
            (2, 0)
        } else if let Some(n) = tail.strip_prefix("beta") {
            (1, n.parse().ok()?)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (0, n.parse().ok()?)
        } else {
            return None;
        };
        Some((level, major, minor))
    }
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

#[cfg(test)]
mod tests;
