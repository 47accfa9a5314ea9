//! What exists from the first start: the built-in namespaces and priority
//! classes.

use serde_json::json;
use skiff_core::registry;
use skiff_core::ApiError;

use crate::handlers::delete::BUILT_IN_NAMESPACES;
use crate::handlers::Api;

pub async fn run(api: &Api) -> Result<(), ApiError> {
    let namespaces = registry::lookup("", "v1", "namespaces").expect("namespaces are served");
    for name in BUILT_IN_NAMESPACES {
        if api.objects.try_get(namespaces, None, name).await?.is_some() {
            continue;
        }
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        api.prepare_create(namespaces, None, &mut ns, "skiff-apiserver")
            .await?;
        match api.objects.create(namespaces, &mut ns).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    let classes = registry::lookup("scheduling.k8s.io", "v1", "priorityclasses")
        .expect("priority classes are served");
    for (name, value, description) in [
        ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
        ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ] {
        if api.objects.try_get(classes, None, name).await?.is_some() {
            continue;
        }
        let mut pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
            "metadata": {"name": name}, "value": value, "description": description});
        api.prepare_create(classes, None, &mut pc, "skiff-apiserver")
            .await?;
        match api.objects.create(classes, &mut pc).await {
            Ok(_) => {}
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
