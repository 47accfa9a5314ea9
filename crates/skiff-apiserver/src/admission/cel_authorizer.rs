//! What answers the `authorizer` of admission expressions: the API
//! server's own authorizers, for the requester or the service account an
//! expression names.

use std::sync::Arc;

use skiff_core::crd::cel_authorizer::{Authorize, Check, Decision};

use crate::auth::User;
use crate::authz::{self, Authorizer, Target};

/// Checks for `user`'s request, answered by `authorizer`.
pub fn for_request(authorizer: Arc<dyn Authorizer>, user: &User) -> Authorize {
    let user = user.clone();
    Arc::new(move |check: &Check| {
        let user = match &check.service_account {
            Some((namespace, name)) => service_account(namespace, name),
            None => user.clone(),
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        let target = match &check.path {
            Some(path) => Target::Path(path.clone()),
            None => Target::Resource {
                group: check.group.clone(),
                resource: check.resource.clone(),
                subresource: some(&check.subresource),
                namespace: some(&check.namespace),
                name: some(&check.name),
            },
        };
        let a = authz::Attributes {
            user,
            verb: check.verb.clone(),
            target,
        };
        Decision {
            allowed: authorizer.authorize(&a) == authz::Decision::Allow,
            reason: String::new(),
        }
    })
}

/// A service account as it authenticates with its token.
fn service_account(namespace: &str, name: &str) -> User {
    User {
        name: format!("system:serviceaccount:{namespace}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".into(),
        ],
    }
}
