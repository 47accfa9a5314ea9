//! Authentication: client certificates from the cluster CA (Common Name
//! the user, Organizations the groups), bearer tokens issued at first
//! start, and service account tokens (JWTs this server signed).

use std::sync::Arc;

use crate::pki::Credentials;
use crate::tokens::{Bound, Issuer};

/// The identity in the client certificate a connection showed, if any
/// (verified against the cluster CA in the TLS handshake).
#[derive(Clone, Debug, Default)]
pub struct ClientCertificate(pub Option<Arc<skiff_core::certs::Identity>>);

impl ClientCertificate {
    /// The certificate's user, if it is valid at `now`.
    pub fn user(&self, now: i64) -> Option<User> {
        let id = self.0.as_ref().filter(|id| id.valid_at(now))?;
        let mut groups = id.groups.clone();
        groups.push("system:authenticated".into());
        Some(User {
            name: id.name.clone(),
            groups,
        })
    }
}

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
                // The join token is a bootstrap credential, as kubeadm's
                // and k3s's: it may ask for a node certificate, no more.
                (
                    creds.node_token.clone(),
                    user(
                        &format!("system:bootstrap:{}", bootstrap_id(&creds.node_token)),
                        &["system:bootstrappers", "system:authenticated"],
                    ),
                ),
            ],
            issuer,
        }
    }

    /// The user an `Authorization` header value names, if any, with what
    /// a service account token is bound to.
    /// A TokenReview's answer: who the token names if it is meant for one
    /// of `audiences`, and which (a fixed token is meant for any).
    pub fn review(
        &self,
        token: &str,
        audiences: &[String],
    ) -> Option<(User, Option<Bound>, Vec<String>)> {
        let fixed = self
            .tokens
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(_, u)| (u.clone(), None, audiences.to_vec()));
        fixed.or_else(|| {
            self.issuer
                .verify_for(token, chrono::Utc::now().timestamp(), audiences)
                .map(|(user, bound, meant)| (user, Some(bound), meant))
        })
    }

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

/// A join token's id, as a bootstrap token's: the first six characters
/// of its secret (`K10<ca-hash>::node:<secret>`).
fn bootstrap_id(token: &str) -> String {
    let secret = token.rsplit(':').next().unwrap_or_default();
    secret.chars().take(6).collect()
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
