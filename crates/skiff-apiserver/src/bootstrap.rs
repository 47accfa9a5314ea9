//! What exists from the first start: the built-in namespaces.

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
    Ok(())
}
