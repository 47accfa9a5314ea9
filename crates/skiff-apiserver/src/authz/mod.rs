//! Authorization, the pipeline stage after authentication: may this user
//! do this verb on this resource (or non-resource path)? `--authorization-mode`
//! picks the authorizer: `RBAC` (the default) or `AlwaysAllow`.

pub mod bootstrap;
mod controller_roles;
pub mod escalation;
pub mod node;
pub mod rbac;
pub mod reviews;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::auth::User;

/// What a request asks to do, as authorizers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    pub user: User,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`.
    pub verb: String,
    pub target: Target,
}

/// A resource (with its subresource, namespace and name) or a path.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    Resource {
        group: String,
        resource: String,
        subresource: Option<String>,
        namespace: Option<String>,
        name: Option<String>,
    },
    Path(String),
}

/// An authorizer's answer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Decision {
    Allow,
    /// Not allowed by this authorizer (others may still allow).
    NoOpinion,
}

/// One authorization mode.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, a: &Attributes) -> Decision;

    /// The rules of the Role `name` in `namespace`, or of the ClusterRole
    /// `name` (aggregated) when `namespace` is `None`; `None` if there is
    /// no such role.
    fn rules_of(&self, namespace: Option<&str>, name: &str) -> Option<Vec<rbac::Rule>>;

    /// The rules that apply to `user` in `namespace` (what `kubectl auth
    /// can-i --list` shows).
    fn rules_for(&self, user: &User, namespace: &str) -> Vec<rbac::Rule>;

    /// Why a request it did not allow was refused, when it can tell more
    /// than the verb and resource.
    fn reason(&self, _: &Attributes) -> Option<String> {
        None
    }
}

/// Reads an authorizer's objects again until the store answers (half a
/// second between tries); returns the revision read at.
pub(crate) async fn reload<F, R>(what: &str, mut load: F) -> i64
where
    F: FnMut() -> R,
    R: Future<Output = Result<i64, skiff_store::Error>>,
{
    loop {
        match load().await {
            Ok(revision) => return revision,
            Err(e) => {
                tracing::warn!(error = %e, "reading {what}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Authorizers asked in turn (`--authorization-mode Node,RBAC`): the
/// first to allow decides.
pub struct Chain(pub Vec<Arc<dyn Authorizer>>);

impl Authorizer for Chain {
    fn authorize(&self, a: &Attributes) -> Decision {
        match self.0.iter().any(|z| z.authorize(a) == Decision::Allow) {
            true => Decision::Allow,
            false => Decision::NoOpinion,
        }
    }

    fn rules_of(&self, namespace: Option<&str>, name: &str) -> Option<Vec<rbac::Rule>> {
        self.0.iter().find_map(|z| z.rules_of(namespace, name))
    }

    fn rules_for(&self, user: &User, namespace: &str) -> Vec<rbac::Rule> {
        let mut out: Vec<rbac::Rule> = Vec::new();
        for rule in self.0.iter().flat_map(|z| z.rules_for(user, namespace)) {
            if !out.contains(&rule) {
                out.push(rule);
            }
        }
        out
    }

    fn reason(&self, a: &Attributes) -> Option<String> {
        self.0.iter().find_map(|z| z.reason(a))
    }
}

/// Allows everything (`--authorization-mode AlwaysAllow`, for benchmarks).
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &Attributes) -> Decision {
        Decision::Allow
    }

    fn rules_of(&self, _: Option<&str>, _: &str) -> Option<Vec<rbac::Rule>> {
        Some(Vec::new())
    }

    fn rules_for(&self, _: &User, _: &str) -> Vec<rbac::Rule> {
        let all = vec!["*".to_owned()];
        vec![rbac::Rule {
            verbs: all.clone(),
            api_groups: all.clone(),
            resources: all.clone(),
            resource_names: Vec::new(),
            non_resource_urls: all,
        }]
    }
}

/// Upstream's message for a request `authorizer` refused, with its reason
/// when it gives one.
pub fn refusal(authorizer: &dyn Authorizer, a: &Attributes) -> String {
    match authorizer.reason(a) {
        Some(why) => format!("{}: {why}", forbidden_message(a)),
        None => forbidden_message(a),
    }
}

/// Upstream's message for a refused request.
pub fn forbidden_message(a: &Attributes) -> String {
    let user = &a.user.name;
    let verb = &a.verb;
    match &a.target {
        Target::Path(path) => {
            format!("forbidden: User {user:?} cannot {verb} path {path:?}")
        }
        Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
        } => {
            let full = match subresource {
                Some(s) => format!("{resource}/{s}"),
                None => resource.clone(),
            };
            let qualified = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            let what = match name {
                Some(n) => format!("{qualified} {n:?}"),
                None => qualified,
            };
            let scope = match namespace {
                Some(ns) => format!("in the namespace {ns:?}"),
                None => "at the cluster scope".to_owned(),
            };
            format!(
                "{what} is forbidden: User {user:?} cannot {verb} resource {full:?} in API group {group:?} {scope}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_as_upstream() {
        let user = User {
            name: "alice".into(),
            groups: vec![],
        };
        let a = Attributes {
            user: user.clone(),
            verb: "list".into(),
            target: Target::Resource {
                group: "".into(),
                resource: "secrets".into(),
                subresource: None,
                namespace: Some("b".into()),
                name: None,
            },
        };
        assert_eq!(
            forbidden_message(&a),
            r#"secrets is forbidden: User "alice" cannot list resource "secrets" in API group "" in the namespace "b""#
        );
        let a = Attributes {
            user: user.clone(),
            verb: "create".into(),
            target: Target::Resource {
                group: "".into(),
                resource: "pods".into(),
                subresource: Some("exec".into()),
                namespace: Some("a".into()),
                name: Some("web".into()),
            },
        };
        assert_eq!(
            forbidden_message(&a),
            r#"pods "web" is forbidden: User "alice" cannot create resource "pods/exec" in API group "" in the namespace "a""#
        );
        let a = Attributes {
            user,
            verb: "get".into(),
            target: Target::Resource {
                group: "apps".into(),
                resource: "deployments".into(),
                subresource: None,
                namespace: None,
                name: None,
            },
        };
        assert!(forbidden_message(&a).starts_with("deployments.apps is forbidden"));
        assert!(forbidden_message(&a).ends_with("at the cluster scope"));
    }
}
