//! Client certificates: the handshake verified the chain against the
//! cluster CA; the certificate's Common Name is the user, its
//! Organizations the groups, while it is valid.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Authenticator, Credentials, Outcome, User};

/// The identity in the client certificate a connection showed, if any
/// (kept on each of its requests).
#[derive(Clone, Debug, Default)]
pub struct ClientCertificate(pub Option<Arc<skiff_core::certs::Identity>>);

pub struct Certificates;

#[async_trait]
impl Authenticator for Certificates {
    async fn authenticate(&self, c: &Credentials<'_>) -> Outcome {
        let Some(id) = c.certificate else {
            return Outcome::NotMine;
        };
        if !id.valid_at(c.now) {
            return Outcome::Invalid;
        }
        let mut groups = id.groups.clone();
        groups.push("system:authenticated".into());
        Outcome::Valid {
            user: User {
                name: id.name.clone(),
                groups,
            },
            audiences: c.audiences.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_core::certs::Identity;

    #[tokio::test]
    async fn a_certificate_names_its_user_while_it_is_valid() {
        let id = Identity {
            name: "system:node:a".into(),
            groups: vec!["system:nodes".into()],
            not_before: 100,
            not_after: 200,
        };
        let shown = |certificate, now| Credentials {
            certificate,
            token: Some("ignored"),
            audiences: &[],
            now,
        };
        match Certificates.authenticate(&shown(Some(&id), 150)).await {
            Outcome::Valid { user, .. } => {
                assert_eq!(user.name, "system:node:a");
                assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
            }
            other => panic!("{other:?}"),
        }
        let expired = Certificates.authenticate(&shown(Some(&id), 200)).await;
        assert_eq!(expired, Outcome::Invalid);
        let early = Certificates.authenticate(&shown(Some(&id), 99)).await;
        assert_eq!(early, Outcome::Invalid);
        let none = Certificates.authenticate(&shown(None, 150)).await;
        assert_eq!(none, Outcome::NotMine);
    }
}
