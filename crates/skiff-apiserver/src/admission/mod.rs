//! Admission, as upstream's: after authorization and before storage every
//! write passes the mutating plugins, then the resource's strategy and
//! validation, then the validating plugins, each list in upstream's
//! order. A plugin looks at the writes it cares for and lets the others
//! pass; a new one is added to [`Chain::standard`] and nowhere else.

mod cel_authorizer;
mod certificates;
mod endpoints;
mod namespace_lifecycle;
mod node_restriction;
mod pod_security;
mod policies;
mod priority;
mod quota;
mod rbac;
mod runtime_class;
mod service_account;
mod storage;
mod webhooks;

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::registry::ResourceType;
use skiff_core::ApiError;

use crate::auth::User;
use crate::authz::Authorizer;
use crate::storage::Objects;

pub use certificates::merge_status;
pub use namespace_lifecycle::BUILT_IN_NAMESPACES;

/// What a write does to its object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
    /// A pod's exec, attach or port forwarding.
    Connect,
}

/// What admission knows of a write besides its object.
pub struct Attributes<'a> {
    pub operation: Operation,
    pub resource: &'a ResourceType,
    pub subresource: Option<&'a str>,
    /// The namespace the request names (its object may not say it: an
    /// Eviction's, a connection's options).
    pub namespace: Option<&'a str>,
    pub user: &'a User,
    /// The stored object an update or a deletion starts from (for a
    /// service account token request, the pod the token is bound to).
    pub old: Option<&'a Value>,
    pub dry_run: bool,
}

impl<'a> Attributes<'a> {
    /// A creation by `user` outside of a request (the server's own).
    pub fn creating(resource: &'a ResourceType, user: &'a User) -> Self {
        Self {
            operation: Operation::Create,
            resource,
            subresource: None,
            namespace: None,
            user,
            old: None,
            dry_run: false,
        }
    }

    /// Whether the write is to the main resource of this built-in kind.
    fn is(&self, group: &str, kind: &str) -> bool {
        self.subresource.is_none()
            && !self.resource.custom
            && self.resource.group == group
            && self.resource.kind == kind
    }
}

/// What admission answers beside yes or no: warnings for the client and
/// annotations for the request's audit event.
#[derive(Debug, Default)]
pub struct Verdict {
    pub warnings: Vec<String>,
    pub audit: Vec<(String, String)>,
}

/// A plugin that may change the object it admits.
#[async_trait]
pub trait Mutating: Send + Sync {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: &mut Value,
        verdict: &mut Verdict,
    ) -> Result<(), ApiError>;
}

/// A plugin that only accepts or refuses (and may warn).
#[async_trait]
pub trait Validating: Send + Sync {
    /// Whether the plugin looks at this write at all (a deletion reads
    /// its object only when some plugin does).
    fn handles(&self, _a: &Attributes<'_>) -> bool {
        true
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        verdict: &mut Verdict,
    ) -> Result<(), ApiError>;
}

/// The plugins, in the order they run.
pub struct Chain {
    mutating: Vec<Box<dyn Mutating>>,
    validating: Vec<Box<dyn Validating>>,
}

impl Chain {
    pub fn new(mutating: Vec<Box<dyn Mutating>>, validating: Vec<Box<dyn Validating>>) -> Self {
        Self {
            mutating,
            validating,
        }
    }

    /// Upstream's default plugins that Skiff has, in upstream's order.
    pub fn standard(objects: Objects, authorizer: Arc<dyn Authorizer>) -> Self {
        Self::new(
            vec![
                Box::new(namespace_lifecycle::NamespaceLifecycle(objects.clone())),
                Box::new(quota::LimitRanger(objects.clone())),
                Box::new(service_account::ServiceAccount(objects.clone())),
                Box::new(priority::Priority(objects.clone())),
                Box::new(runtime_class::RuntimeClass(objects.clone())),
                Box::new(storage::DefaultStorageClass(objects.clone())),
                Box::new(storage::StorageObjectInUseProtection),
                Box::new(certificates::Requester),
                Box::new(webhooks::MutatingWebhooks(
                    objects.clone(),
                    authorizer.clone(),
                )),
            ],
            vec![
                Box::new(namespace_lifecycle::NamespaceLifecycle(objects.clone())),
                Box::new(node_restriction::NodeRestriction),
                Box::new(endpoints::LoopbackEndpoints),
                Box::new(priority::Priority(objects.clone())),
                Box::new(pod_security::PodSecurity(objects.clone())),
                Box::new(storage::PersistentVolumeClaimResize(objects.clone())),
                Box::new(certificates::ApprovalAndSigning(authorizer.clone())),
                Box::new(rbac::Escalation(authorizer.clone())),
                Box::new(policies::ValidatingPolicies(
                    objects.clone(),
                    authorizer.clone(),
                )),
                Box::new(webhooks::ValidatingWebhooks(
                    objects.clone(),
                    authorizer.clone(),
                )),
                Box::new(quota::ResourceQuota(objects)),
            ],
        )
    }

    /// The mutating phase: what the plugins said (a webhook's warnings).
    pub async fn admit(&self, a: &Attributes<'_>, obj: &mut Value) -> Result<Verdict, ApiError> {
        let mut verdict = Verdict::default();
        for plugin in &self.mutating {
            plugin.admit(a, obj, &mut verdict).await?;
        }
        Ok(verdict)
    }

    /// The validating phase, adding to what the mutating phase said.
    pub async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        mut verdict: Verdict,
    ) -> Result<Verdict, ApiError> {
        for plugin in self.validating.iter().filter(|p| p.handles(a)) {
            if let Err(mut e) = plugin.validate(a, obj, &mut verdict).await {
                // The refusal carries what was said before it.
                if !verdict.warnings.is_empty() || !verdict.audit.is_empty() {
                    e.said = Some(Box::new(skiff_core::status::Said {
                        warnings: verdict.warnings,
                        audit: verdict.audit,
                    }));
                }
                return Err(e);
            }
        }
        Ok(verdict)
    }

    /// Whether any validating plugin looks at this write.
    pub fn handles(&self, a: &Attributes<'_>) -> bool {
        self.validating.iter().any(|p| p.handles(a))
    }
}

/// What the plugins' tests share: a real store in a scratch directory.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::PathBuf;
    use std::sync::Arc;

    use serde_json::Value;
    use skiff_core::registry;

    use super::Attributes;
    use crate::auth::User;
    use crate::storage::Objects;

    pub struct Fixture {
        pub objects: Objects,
        dir: PathBuf,
    }

    impl Fixture {
        pub fn new() -> Self {
            let dir =
                std::env::temp_dir().join(format!("skiff-admission-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).unwrap();
            let store = skiff_store::Embedded::open(dir.join("state.db")).unwrap();
            Self {
                objects: Objects {
                    store: Arc::new(store),
                },
                dir,
            }
        }

        /// Stores `obj` as an object of `group`'s `plural`.
        pub async fn put(&self, group: &str, plural: &str, mut obj: Value) {
            let r = registry::preferred(group, plural).unwrap();
            self.objects.create(r, &mut obj).await.unwrap();
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    pub fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    /// A creation of `group`'s `plural` by `user`.
    pub fn creating<'a>(group: &str, plural: &str, user: &'a User) -> Attributes<'a> {
        Attributes::creating(registry::preferred(group, plural).unwrap(), user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_core::registry;

    struct Label(&'static str);

    #[async_trait]
    impl Mutating for Label {
        async fn admit(
            &self,
            _a: &Attributes<'_>,
            obj: &mut Value,
            verdict: &mut Verdict,
        ) -> Result<(), ApiError> {
            let seen = obj["seen"].as_str().unwrap_or("").to_owned();
            obj["seen"] = json!(format!("{seen}{}", self.0));
            verdict.warnings.push(format!("labelled {}", self.0));
            Ok(())
        }
    }

    struct Refuse;

    #[async_trait]
    impl Validating for Refuse {
        fn handles(&self, a: &Attributes<'_>) -> bool {
            a.operation == Operation::Delete
        }

        async fn validate(
            &self,
            _a: &Attributes<'_>,
            _obj: &Value,
            _verdict: &mut Verdict,
        ) -> Result<(), ApiError> {
            Err(ApiError::forbidden("no"))
        }
    }

    struct Warn;

    #[async_trait]
    impl Validating for Warn {
        async fn validate(
            &self,
            _a: &Attributes<'_>,
            obj: &Value,
            verdict: &mut Verdict,
        ) -> Result<(), ApiError> {
            verdict.warnings.push(format!("saw {}", obj["seen"]));
            Ok(())
        }
    }

    #[tokio::test]
    async fn plugins_run_in_order_and_only_where_they_apply() {
        let chain = Chain::new(
            vec![Box::new(Label("a")), Box::new(Label("b"))],
            vec![Box::new(Refuse), Box::new(Warn)],
        );
        let user = crate::auth::anonymous();
        let r = registry::lookup("", "v1", "configmaps").unwrap();
        let mut a = Attributes {
            operation: Operation::Create,
            resource: r,
            subresource: None,
            namespace: None,
            user: &user,
            old: None,
            dry_run: false,
        };
        let mut obj = json!({});
        let said = chain.admit(&a, &mut obj).await.unwrap();
        assert_eq!(obj["seen"], "ab");
        // The validating phase adds to what the mutating one said.
        let verdict = chain.validate(&a, &obj, said).await.unwrap();
        assert_eq!(verdict.warnings, ["labelled a", "labelled b", "saw \"ab\""]);
        a.operation = Operation::Delete;
        let refused = chain.validate(&a, &obj, Verdict::default()).await;
        assert_eq!(refused.unwrap_err().code, 403);
        assert!(a.is("", "ConfigMap"));
        a.subresource = Some("status");
        assert!(!a.is("", "ConfigMap"));
    }
}
