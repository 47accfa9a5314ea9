//! What exists from the first start: the built-in namespaces and priority
//! classes, the bootstrap roles, the default StorageClass, and the
//! `kubernetes` Service whose endpoint is this server.

use std::net::SocketAddr;

use serde_json::{json, Value};
use skiff_core::registry;
use skiff_core::ApiError;

use crate::admission::{Attributes, BUILT_IN_NAMESPACES};
use crate::auth::User;
use crate::handlers::Api;

/// The field manager of what the server writes itself.
const MANAGER: &str = "skiff-apiserver";

/// Who the server is when it writes its own objects (upstream's loopback
/// user).
fn server() -> User {
    User {
        name: "system:apiserver".into(),
        groups: vec!["system:masters".into(), "system:authenticated".into()],
    }
}

pub async fn run(api: &Api, address: SocketAddr) -> Result<(), ApiError> {
    let me = server();
    let namespaces = registry::lookup("", "v1", "namespaces").expect("namespaces are served");
    for name in BUILT_IN_NAMESPACES {
        if api.objects.try_get(namespaces, None, name).await?.is_some() {
            continue;
        }
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.prepare_create(
            &Attributes::creating(namespaces, &me),
            None,
            &mut ns,
            MANAGER,
        )
        .await?;
        match api.objects.create(namespaces, &mut ns).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priority classes are served");
    for (name, value, description) in skiff_core::validate::priority_class::SYSTEM {
        if api.objects.try_get(classes, None, name).await?.is_some() {
            continue;
        }
        let mut pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        api.prepare_create(&Attributes::creating(classes, &me), None, &mut pc, MANAGER)
            .await?;
        match api.objects.create(classes, &mut pc).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    api.services.repair().await?;
    for role in crate::authz::bootstrap::cluster_roles() {
        ensure(api, "clusterroles", "rbac.authorization.k8s.io", role, true).await?;
    }
    for binding in crate::authz::bootstrap::cluster_role_bindings() {
        ensure(
            api,
            "clusterrolebindings",
            "rbac.authorization.k8s.io",
            binding,
            true,
        )
        .await?;
    }
    ensure(
        api,
        "storageclasses",
        "storage.k8s.io",
        local_path_class(),
        false,
    )
    .await?;
    kubernetes_service(api, address).await
}

/// The default class: a directory on the node where the claim's first
/// pod runs. Made at start when missing; an administrator's changes to it
/// are kept.
fn local_path_class() -> Value {
    use skiff_core::volumes::{DEFAULT_CLASS, LOCAL_PATH, LOCAL_PATH_CLASS};
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": LOCAL_PATH, "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer", "allowVolumeExpansion": true})
}

/// Creates an object unless it exists, or, when `replace`, brings its
/// content (every field but `metadata`) to `obj`'s, unless an
/// administrator turned that off (`rbac.authorization.kubernetes.io/autoupdate:
/// "false"`, as upstream).
async fn ensure(
    api: &Api,
    plural: &str,
    group: &str,
    mut obj: Value,
    replace: bool,
) -> Result<(), ApiError> {
    let r = registry::lookup(group, "v1", plural).expect("built-in resources are served");
    let (ns, name) = (
        obj["metadata"]["namespace"].as_str().map(str::to_owned),
        obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    match api.objects.try_get(r, ns.as_deref(), &name).await? {
        Some(current) if replace => {
            let annotations = &current["metadata"]["annotations"];
            if annotations["rbac.authorization.kubernetes.io/autoupdate"] == "false" {
                return Ok(());
            }
            let content: Vec<String> = obj
                .as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .filter(|k| !matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                .cloned()
                .collect();
            if content.iter().all(|f| current[f] == obj[f]) {
                return Ok(());
            }
            let mut next = current.clone();
            for field in content {
                next[&field] = obj[&field].take();
            }
            let rv = skiff_core::meta::resource_version(&current).unwrap_or(0);
            api.objects.replace(r, &mut next, rv).await
        }
        Some(_) => Ok(()),
        None => {
            let me = server();
            api.prepare_create(
                &Attributes::creating(r, &me),
                ns.as_deref(),
                &mut obj,
                MANAGER,
            )
            .await?;
            match api.store_new(r, &mut obj).await {
                Ok(_) => Ok(()),
                Err(e) if e.reason == "AlreadyExists" => Ok(()),
                Err(e) => Err(e),
            }
        }
    }
}

/// The `default/kubernetes` Service at the range's first address, with
/// Endpoints and an EndpointSlice naming this server.
async fn kubernetes_service(api: &Api, address: SocketAddr) -> Result<(), ApiError> {
    let ip = address.ip().to_string();
    let port = address.port();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"clusterIP": api.services.api_ip().to_string(), "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}});
    ensure(api, "services", "", service, false).await?;
    let endpoints = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]});
    ensure(api, "endpoints", "", endpoints, true).await?;
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "skiff-apiserver"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}]});
    ensure(api, "endpointslices", "discovery.k8s.io", slice, true).await
}
