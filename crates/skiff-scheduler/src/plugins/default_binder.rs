//! DefaultBinder: binds a pod through the API's `pods/binding`
//! subresource, as upstream's default binder does.

use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;

use crate::framework::{Bind, Status};

pub struct DefaultBinder {
    pub client: Client,
}

#[async_trait::async_trait]
impl Bind for DefaultBinder {
    fn name(&self) -> &'static str {
        "DefaultBinder"
    }

    async fn bind(&self, pod: &Pod, node: &str) -> Status {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            target: ObjectReference {
                kind: Some("Node".into()),
                name: Some(node.to_owned()),
                api_version: Some("v1".into()),
                ..Default::default()
            },
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        match pods
            .create_subresource::<_, serde_json::Value>(
                "binding",
                &name,
                &PostParams::default(),
                &binding,
            )
            .await
        {
            Ok(_) => Status::Success,
            Err(kube::Error::Api(s)) if s.code == 404 => Status::unresolvable("pod is gone"),
            Err(e) => Status::Error(e.to_string()),
        }
    }
}
