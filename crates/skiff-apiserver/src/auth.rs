//! Authentication: bearer tokens issued at first start, and service account
//! tokens (JWTs this server signed).

use std::sync::Arc;

use crate::pki::Credentials;
use crate::tokens::{Bound, Issuer};

/// Who made a request.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

pub struct Authenticator {
    tokens: Vec<(String, User)>,
    issuer: Arc<Issuer>,
}

impl Authenticator {
    pub fn new(creds: &Credentials, issuer: Arc<Issuer>) -> Self {
        let user = |name: &str, groups: &[&str]| User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        Self {
            tokens: vec![
                (
                    creds.admin_token.clone(),
                    user("system:admin", &["system:masters", "system:authenticated"]),
                ),
                (
                    creds.node_token.clone(),
                    user(
                        "system:node-joiner",
                        &["system:nodes", "system:authenticated"],
                    ),
                ),
            ],
            issuer,
        }
    }

    /// The user an `Authorization` header value names, if any, with what
    /// a service account token is bound to.
    pub fn authenticate(&self, header: &str) -> Option<(User, Option<Bound>)> {
        let token = header.strip_prefix("Bearer ")?.trim();
        let fixed = self
            .tokens
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(_, u)| (u.clone(), None));
        fixed.or_else(|| {
            self.issuer
                .verify(token, chrono::Utc::now().timestamp())
                .map(|(user, bound)| (user, Some(bound)))
        })
    }
}

/// Who sends a request without credentials, as upstream names it.
pub fn anonymous() -> User {
    User {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
