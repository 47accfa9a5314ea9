//! Discovery: aggregated (apidiscovery.k8s.io/v2) and legacy
//! (APIVersions, APIGroupList, APIGroup, APIResourceList).

use axum::response::Response;
use serde_json::{json, Value};
use skiff_core::registry::{self, group_versions, ResourceType};
use skiff_core::ApiError;

use crate::response::{self, wants_aggregated};

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// The reviews: create-only resources whose answer is the reply (see
/// `authz::reviews`), listed so that clients find them.
const REVIEWS: &[(&str, &str, &str)] = &[
    (
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
    ),
    ("authentication.k8s.io", "tokenreviews", "TokenReview"),
    (
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
    ),
    (
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
    ),
    (
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
    ),
    (
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
    ),
];

fn reviews<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static (&'static str, &'static str, &'static str)> + 'a {
    REVIEWS
        .iter()
        .filter(move |(g, _, _)| *g == group && version == "v1")
}

/// Every served group with its versions, the reviews' groups included.
fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out = group_versions();
    for (group, _, _) in REVIEWS {
        if !out.iter().any(|(g, _)| g == group) {
            out.push((group, vec!["v1"]));
        }
    }
    out
}

const AGGREGATED: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// A subresource's kind and verbs.
fn subresource(r: &ResourceType, sub: &str) -> (Value, &'static [&'static str]) {
    let kind = |group: &str, version: &str, kind: &str| json!({"group": group, "version": version, "kind": kind});
    match sub {
        "scale" => (
            kind("autoscaling", "v1", "Scale"),
            &["get", "patch", "update"],
        ),
        "binding" => (kind("", "v1", "Binding"), &["create"]),
        "eviction" => (kind("policy", "v1", "Eviction"), &["create"]),
        "token" => (
            kind("authentication.k8s.io", "v1", "TokenRequest"),
            &["create"],
        ),
        "log" => (kind("", "v1", "Pod"), &["get"]),
        "exec" => (kind("", "v1", "PodExecOptions"), &["create", "get"]),
        "attach" => (kind("", "v1", "PodAttachOptions"), &["create", "get"]),
        "portforward" => (kind("", "v1", "PodPortForwardOptions"), &["create", "get"]),
        "finalize" => (kind(r.group, r.version, r.kind), &["update"]),
        _ => (
            kind(r.group, r.version, r.kind),
            &["get", "patch", "update"],
        ),
    }
}

/// The verbs of a resource: all, or reads where it is made at each read.
fn verbs(r: &ResourceType) -> &'static [&'static str] {
    if crate::handlers::is_synthesized(r) {
        &["get", "list"]
    } else {
        VERBS
    }
}

fn served<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static ResourceType> + 'a {
    registry::all()
        .into_iter()
        .filter(move |r| r.group == group && r.version == version)
}

fn aggregated_resource(r: &ResourceType) -> Value {
    json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular(),
        "verbs": verbs(r),
        "shortNames": r.short_names,
        "categories": r.categories,
        "subresources": r.subresources.iter().map(|s| {
            let (kind, verbs) = subresource(r, s);
            json!({"subresource": s, "responseKind": kind, "verbs": verbs})
        }).collect::<Vec<_>>(),
    })
}

fn aggregated_group(group: &str, versions: &[&str]) -> Value {
    json!({
        "metadata": {"name": group, "creationTimestamp": null},
        "versions": versions.iter().map(|v| json!({
            "version": v,
            "resources": served(group, v).map(aggregated_resource).chain(reviews(group, v).map(|(g, plural, kind)| json!({
                "resource": plural,
                "responseKind": {"group": g, "version": "v1", "kind": kind},
                "scope": if plural.starts_with("local") { "Namespaced" } else { "Cluster" },
                "singularResource": plural.trim_end_matches('s'),
                "verbs": ["create"],
            }))).collect::<Vec<_>>(),
            "freshness": "Current",
        })).collect::<Vec<_>>(),
    })
}

fn group_entry(group: &str, versions: &[&str]) -> Value {
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions[0]),
    })
}

/// `/api` or `/apis`.
pub fn root(legacy: bool, accept: &str) -> Response {
    let groups = groups();
    let (core, named): (Vec<_>, Vec<_>) = groups.iter().partition(|(g, _)| g.is_empty());
    if wants_aggregated(accept) {
        let items: Vec<Value> = if legacy { &core } else { &named }
            .iter()
            .map(|(g, vs)| aggregated_group(g, vs))
            .collect();
        let body = json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items});
        let mut reply = response::bytes(
            200,
            AGGREGATED,
            serde_json::to_vec(&body).unwrap_or_default(),
        );
        reply
            .headers_mut()
            .insert("Vary", hyper::header::HeaderValue::from_static("Accept"));
        return reply;
    }
    if legacy {
        return response::json(
            200,
            &json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
            }),
        );
    }
    response::json(
        200,
        &json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": named.iter().map(|(g, vs)| group_entry(g, vs)).collect::<Vec<_>>(),
        }),
    )
}

/// `/apis/{group}`.
pub fn group(group: &str) -> Result<Response, ApiError> {
    let groups = groups();
    let (_, versions) = groups
        .iter()
        .find(|(g, _)| *g == group && !g.is_empty())
        .ok_or_else(|| ApiError::no_route(&format!("/apis/{group}")))?;
    let mut body = group_entry(group, versions);
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Ok(response::json(200, &body))
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resources(group: &str, version: &str) -> Result<Response, ApiError> {
    let mut list = Vec::new();
    for r in served(group, version) {
        list.push(json!({
            "name": r.plural,
            "singularName": r.singular(),
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": verbs(r),
            "shortNames": r.short_names,
            "categories": r.categories,
        }));
        for s in r.subresources {
            let (kind, verbs) = subresource(r, s);
            let mut entry = json!({"name": format!("{}/{s}", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": kind["kind"], "verbs": verbs});
            if kind["group"] != r.group || kind["version"] != r.version {
                entry["group"] = kind["group"].clone();
                entry["version"] = kind["version"].clone();
            }
            list.push(entry);
        }
    }
    for (_, plural, kind) in reviews(group, version) {
        list.push(
            json!({"name": plural, "singularName": plural.trim_end_matches('s'),
            "namespaced": plural.starts_with("local"), "kind": kind, "verbs": ["create"]}),
        );
    }
    if list.is_empty() {
        let path = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        return Err(ApiError::no_route(&path));
    }
    let gv = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    Ok(response::json(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}),
    ))
}
