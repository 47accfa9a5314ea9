//! RBAC's escalation prevention for roles and bindings (upstream does it
//! in the RBAC registry; the rules are in [`crate::authz::escalation`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::ApiError;

use super::{Attributes, Operation, Validating, Verdict};
use crate::authz::{escalation, Authorizer};

pub struct Escalation(pub Arc<dyn Authorizer>);

#[async_trait]
impl Validating for Escalation {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation != Operation::Delete && a.resource.group == "rbac.authorization.k8s.io"
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        escalation::check(self.0.as_ref(), a.user, a.resource, obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user};
    use crate::authz::{Attributes as Asked, Decision};
    use serde_json::json;

    /// Holds what an `edit` user would: pods, nothing of RBAC.
    struct Editor;

    impl Authorizer for Editor {
        fn authorize(&self, a: &Asked) -> Decision {
            match &a.target {
                crate::authz::Target::Resource { resource, .. } if resource == "pods" => {
                    Decision::Allow
                }
                _ => Decision::NoOpinion,
            }
        }

        fn rules_of(&self, _: Option<&str>, name: &str) -> Option<Vec<crate::authz::rbac::Rule>> {
            let all = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]);
            (name == "cluster-admin").then(|| serde_json::from_value(all).unwrap())
        }

        fn rules_for(&self, _: &crate::auth::User, _: &str) -> Vec<crate::authz::rbac::Rule> {
            Vec::new()
        }
    }

    #[tokio::test]
    async fn roles_and_bindings_grant_no_more_than_their_writer_holds() {
        let plugin = Escalation(Arc::new(Editor));
        let editor = user("ed", &["system:authenticated"]);
        let a = creating("rbac.authorization.k8s.io", "clusterrolebindings", &editor);
        let binding = json!({"metadata": {"name": "mine"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "User", "name": "ed"}]});
        let mut verdict = Verdict::default();
        let err = plugin
            .validate(&a, &binding, &mut verdict)
            .await
            .unwrap_err();
        assert_eq!(err.code, 403);
        assert!(
            err.message
                .contains("is attempting to grant RBAC permissions not currently held"),
            "{}",
            err.message
        );
        // The superuser group may grant anything.
        let admin = user("root", &["system:masters"]);
        let a = creating("rbac.authorization.k8s.io", "clusterrolebindings", &admin);
        assert!(plugin.validate(&a, &binding, &mut verdict).await.is_ok());
        // Other kinds are not its business.
        let a = creating("", "configmaps", &editor);
        assert!(!plugin.handles(&a) || plugin.validate(&a, &json!({}), &mut verdict).await.is_ok());
    }
}
