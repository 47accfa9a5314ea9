//! Upstream's RuntimeClass admission. Skiff serves no RuntimeClass, so a
//! pod that names one, or carries an overhead that only a class defines,
//! is refused as upstream refuses it when no such class exists, rather
//! than run with the default runtime.

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::{meta, ApiError};

use super::{Attributes, Mutating, Operation};

pub struct RuntimeClass;

#[async_trait]
impl Mutating for RuntimeClass {
    async fn admit(&self, a: &Attributes<'_>, pod: &mut Value) -> Result<(), ApiError> {
        if a.operation != Operation::Create || a.subresource.is_some() || !a.is("", "Pod") {
            return Ok(());
        }
        let spec = &pod["spec"];
        let why = match spec["runtimeClassName"].as_str() {
            Some(class) => format!("RuntimeClass {class:?} not found"),
            None if !spec["overhead"].is_null() => {
                "Pod Overhead set without corresponding RuntimeClass defined Overhead".to_owned()
            }
            None => return Ok(()),
        };
        Err(ApiError::forbidden(format!(
            "pods {:?} is forbidden: pod rejected: {why}",
            meta::name(pod)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user};
    use serde_json::json;

    #[tokio::test]
    async fn a_pod_naming_a_runtime_class_or_an_overhead_is_refused() {
        let alice = user("alice", &[]);
        let a = creating("", "pods", &alice);
        let mut plain = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        RuntimeClass.admit(&a, &mut plain).await.unwrap();
        let mut named = json!({"metadata": {"name": "p"}, "spec": {"runtimeClassName": "gvisor"}});
        let err = RuntimeClass.admit(&a, &mut named).await.unwrap_err();
        assert_eq!(
            (err.code, err.message.as_str()),
            (
                403,
                "pods \"p\" is forbidden: pod rejected: RuntimeClass \"gvisor\" not found"
            )
        );
        let mut overhead = json!({"metadata": {"name": "p"}, "spec": {"overhead": {"cpu": "1"}}});
        let err = RuntimeClass.admit(&a, &mut overhead).await.unwrap_err();
        assert!(err.message.ends_with("pod rejected: Pod Overhead set without corresponding RuntimeClass defined Overhead"), "{}", err.message);
    }
}
