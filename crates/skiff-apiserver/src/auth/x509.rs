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
