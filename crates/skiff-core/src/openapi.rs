//! OpenAPI v3 documents, one per group-version, generated from the
//! k8s-openapi types: what `kubectl apply` (field validation) and
//! `kubectl explain` read.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::registry::{self, ResourceType, RESOURCES};
use crate::schema::schemas;

/// The URL path of a group-version's document: `api/v1`, `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn query(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "query", "description": description, "schema": {"type": "string", "uniqueItems": true}})
}

fn path_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}})
}

fn operation(
    r: &ResourceType,
    action: &str,
    id: &str,
    body: Option<&str>,
    response: &str,
) -> Value {
    let mut op = json!({
        "operationId": id,
        "tags": [r.api_version().replace('/', "_")],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema_ref(response)}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
    });
    let mut params = vec![];
    if matches!(action, "post" | "put" | "patch") {
        params.push(query(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
        ));
        params.push(query("fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."));
        params.push(query("fieldValidation", "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (the default), Strict."));
    }
    if action == "patch" {
        params.push(json!({"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}}));
    }
    if !params.is_empty() {
        op["parameters"] = Value::Array(params);
    }
    if let Some(body) = body {
        let content = if action == "patch" {
            let s = json!({"schema": {"type": "object"}});
            json!({"application/json-patch+json": s, "application/merge-patch+json": s,
                   "application/strategic-merge-patch+json": s, "application/apply-patch+yaml": s})
        } else {
            json!({"*/*": {"schema": schema_ref(body)}})
        };
        op["requestBody"] = json!({"content": content, "required": true});
    }
    op
}

/// The OpenAPI document of one built-in group-version, or `None` if not
/// served.
pub fn document(group: &str, version: &str) -> Option<Value> {
    let s = schemas();
    let served: Vec<&ResourceType> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect();
    if served.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut roots = BTreeSet::new();
    for r in &served {
        let Some(root) = s.root(r) else { continue };
        roots.insert(root.to_owned());
        add_paths(r, root, &mut paths);
        if r.has_subresource("scale") {
            roots.insert("io.k8s.api.autoscaling.v1.Scale".into());
        }
    }
    roots.insert("io.k8s.apimachinery.pkg.apis.meta.v1.Status".into());
    roots.insert("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into());
    let mut components = Map::new();
    for name in reachable(&s.definitions, roots) {
        if let Some(def) = s.definitions.get(&name) {
            components.insert(name, def.clone());
        }
    }
    Some(wrap(paths, components))
}

/// The OpenAPI document of a custom group-version: each served custom
/// resource's schema as its definition says, or `None` if none is served.
pub fn custom_document(group: &str, version: &str) -> Option<Value> {
    let s = schemas();
    let mut paths = Map::new();
    let mut components = Map::new();
    let mut roots: BTreeSet<String> = [
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta",
        "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
        "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    for r in registry::all() {
        if !(r.custom && r.group == group && r.version == version) {
            continue;
        }
        let Some(served) = crate::crd::served(r) else {
            continue;
        };
        let reversed: Vec<&str> = r.group.split('.').rev().collect();
        let root = format!("{}.{}.{}", reversed.join("."), r.version, r.kind);
        let gvk = json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        let mut schema = served.version.schema.clone();
        if !schema.is_object() {
            schema = json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
        }
        let props = schema["properties"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        let mut with_meta = Map::new();
        with_meta.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        with_meta.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        with_meta.insert("metadata".into(), json!({"allOf": [schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")], "description": "Standard object's metadata."}));
        with_meta.extend(props.into_iter().filter(|(k, _)| k != "metadata"));
        schema["properties"] = Value::Object(with_meta);
        schema["x-kubernetes-group-version-kind"] = gvk.clone();
        components.insert(root.clone(), schema);
        components.insert(format!("{root}List"), json!({
            "type": "object",
            "description": format!("{}List is a list of {}", r.kind, r.kind),
            "required": ["items"],
            "properties": {
                "apiVersion": {"type": "string"},
                "items": {"type": "array", "items": schema_ref(&root)},
                "kind": {"type": "string"},
                "metadata": {"allOf": [schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")]},
            },
            "x-kubernetes-group-version-kind": [{"group": r.group, "version": r.version, "kind": format!("{}List", r.kind)}],
        }));
        add_paths(r, &root, &mut paths);
        if r.has_subresource("scale") {
            roots.insert("io.k8s.api.autoscaling.v1.Scale".into());
        }
    }
    if components.is_empty() {
        return None;
    }
    for name in reachable(&s.definitions, roots) {
        if let Some(def) = s.definitions.get(&name) {
            components.insert(name, def.clone());
        }
    }
    Some(wrap(paths, components))
}

fn wrap(paths: Map<String, Value>, components: Map<String, Value>) -> Value {
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0"},
        "paths": paths,
        "components": {"schemas": components},
    })
}

/// The operations on one resource, its status and scale.
fn add_paths(r: &ResourceType, root: &str, paths: &mut Map<String, Value>) {
    let prefix = format!("/{}", gv_path(r.group, r.version));
    let id = format!("{}{}", r.api_version().replace(['/', '.'], "_"), r.kind);
    let (collection, item, ns) = if r.namespaced {
        (
            format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural),
            true,
        )
    } else {
        (
            format!("{prefix}/{}", r.plural),
            format!("{prefix}/{}/{{name}}", r.plural),
            false,
        )
    };
    let mut coll = json!({
        "get": operation(r, "list", &format!("list{id}"), None, root),
        "post": operation(r, "post", &format!("create{id}"), Some(root), root),
        "delete": operation(r, "deletecollection", &format!("deletecollection{id}"), None, "io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
    });
    let mut one = json!({
        "get": operation(r, "get", &format!("read{id}"), None, root),
        "put": operation(r, "put", &format!("replace{id}"), Some(root), root),
        "patch": operation(r, "patch", &format!("patch{id}"), Some(root), root),
        "delete": operation(r, "delete", &format!("delete{id}"), None, "io.k8s.apimachinery.pkg.apis.meta.v1.Status"),
    });
    let mut item_params = vec![path_param("name")];
    if ns {
        coll["parameters"] = json!([path_param("namespace")]);
        item_params.push(path_param("namespace"));
        paths.insert(
            format!("{prefix}/{}", r.plural),
            json!({"get": operation(r, "list", &format!("list{id}ForAllNamespaces"), None, root)}),
        );
    }
    one["parameters"] = Value::Array(item_params.clone());
    paths.insert(collection, coll);
    paths.insert(item.clone(), one);
    if r.has_status() {
        let mut status = json!({
            "get": operation(r, "get", &format!("read{id}Status"), None, root),
            "put": operation(r, "put", &format!("replace{id}Status"), Some(root), root),
            "patch": operation(r, "patch", &format!("patch{id}Status"), Some(root), root),
        });
        status["parameters"] = Value::Array(item_params.clone());
        paths.insert(format!("{item}/status"), status);
    }
    if r.has_subresource("scale") {
        let scale = "io.k8s.api.autoscaling.v1.Scale";
        let mut ops = json!({
            "get": operation(r, "get", &format!("read{id}Scale"), None, scale),
            "put": operation(r, "put", &format!("replace{id}Scale"), Some(scale), scale),
            "patch": operation(r, "patch", &format!("patch{id}Scale"), Some(scale), scale),
        });
        ops["parameters"] = Value::Array(item_params);
        paths.insert(format!("{item}/scale"), ops);
    }
}

/// Every definition reachable from `roots` through `$ref`s.
fn reachable(defs: &Map<String, Value>, roots: BTreeSet<String>) -> BTreeSet<String> {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                    out.push(r.rsplit('/').next().unwrap_or(r).to_owned());
                }
                m.values().for_each(|c| refs(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| refs(c, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            if let Some(d) = defs.get(&name) {
                refs(d, &mut todo);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apps_document_has_patch_with_field_validation_and_schemas() {
        let doc = document("apps", "v1").unwrap();
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            patch["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let schemas = &doc["components"]["schemas"];
        assert!(schemas
            .get("io.k8s.api.apps.v1.DeploymentStrategy")
            .is_some());
        assert!(schemas.get("io.k8s.api.core.v1.Container").is_some());
        assert!(document("nope", "v1").is_none());
    }
}
