//! The fixed tokens made at first start: the administrator's, and the
//! join token, which is a bootstrap credential as kubeadm's and k3s's
//! are (it may ask for a node certificate, no more).

use async_trait::async_trait;

use super::{Authenticator, Credentials, Outcome, User};
use crate::pki;

pub struct StaticTokens(Vec<(String, User)>);

impl StaticTokens {
    pub fn new(creds: &pki::Credentials) -> Self {
        let user = |name: &str, groups: &[&str]| User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        Self(vec![
            (
                creds.admin_token.clone(),
                user("system:admin", &["system:masters", "system:authenticated"]),
            ),
            (
                creds.node_token.clone(),
                user(
                    &format!("system:bootstrap:{}", bootstrap_id(&creds.node_token)),
                    &["system:bootstrappers", "system:authenticated"],
                ),
            ),
        ])
    }
}

#[async_trait]
impl Authenticator for StaticTokens {
    /// A fixed token is meant for any audience.
    async fn authenticate(&self, c: &Credentials<'_>) -> Outcome {
        let Some(token) = c.token else {
            return Outcome::NotMine;
        };
        match self
            .0
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
        {
            Some((_, user)) => Outcome::Valid {
                user: user.clone(),
                audiences: c.audiences.to_vec(),
            },
            None => Outcome::NotMine,
        }
    }
}

/// A join token's id, as a bootstrap token's: the first six characters
/// of its secret (`K10<ca-hash>::node:<secret>`).
fn bootstrap_id(token: &str) -> String {
    let secret = token.rsplit(':').next().unwrap_or_default();
    secret.chars().take(6).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_join_token_names_a_bootstrapper() {
        let tokens = StaticTokens(vec![(
            "K10abc::node:s3cretvalue".into(),
            User {
                name: format!(
                    "system:bootstrap:{}",
                    bootstrap_id("K10abc::node:s3cretvalue")
                ),
                groups: vec!["system:bootstrappers".into()],
            },
        )]);
        let asked = |token| Credentials {
            certificate: None,
            token: Some(token),
            audiences: &[],
            now: 0,
        };
        match tokens
            .authenticate(&asked("K10abc::node:s3cretvalue"))
            .await
        {
            Outcome::Valid { user, .. } => assert_eq!(user.name, "system:bootstrap:s3cret"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tokens
                .authenticate(&asked("K10abc::node:s3cretvaluf"))
                .await,
            Outcome::NotMine
        );
    }
}
