//! Authentication, as upstream's: a union of authenticators, each knowing
//! one kind of credential — client certificates from the cluster CA, the
//! fixed tokens made at first start, service account tokens this server
//! signed. The first that accepts a request's credentials names its user;
//! credentials none accepts get 401, and no credentials at all make the
//! request `system:anonymous`.

mod service_accounts;
mod static_tokens;
mod x509;

use std::sync::Arc;

use async_trait::async_trait;
use skiff_core::ApiError;

use crate::pki;
use crate::storage::Objects;
use crate::tokens::Issuer;

pub use x509::ClientCertificate;

/// Who made a request.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// Who sends a request without credentials, as upstream names it.
pub fn anonymous() -> User {
    User {
        name: "system:anonymous".into(),
        groups: vec!["system:unauthenticated".into()],
    }
}

/// What a request (or a TokenReview) shows to prove who it is.
pub struct Credentials<'a> {
    pub certificate: Option<&'a skiff_core::certs::Identity>,
    pub token: Option<&'a str>,
    /// Whom a token must be meant for: the API server itself for a
    /// request, a TokenReview's audiences for a review.
    pub audiences: &'a [String],
    /// Seconds since the epoch.
    pub now: i64,
}

/// One authenticator's answer.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Not a credential of its kind: the next one is asked.
    NotMine,
    /// Its kind, but not valid (expired, forged, revoked).
    Invalid,
    /// Valid, naming this user, meant for these of the asked audiences.
    Valid { user: User, audiences: Vec<String> },
}

#[async_trait]
pub trait Authenticator: Send + Sync {
    async fn authenticate(&self, credentials: &Credentials<'_>) -> Outcome;
}

/// The authenticators, asked in order.
pub struct Chain(Vec<Box<dyn Authenticator>>);

impl Chain {
    pub fn new(authenticators: Vec<Box<dyn Authenticator>>) -> Self {
        Self(authenticators)
    }

    /// The API server's: client certificates, fixed tokens, service
    /// account tokens (honoured while what they are bound to exists).
    pub fn standard(creds: &pki::Credentials, issuer: Arc<Issuer>, objects: Objects) -> Self {
        Self::new(vec![
            Box::new(x509::Certificates),
            Box::new(static_tokens::StaticTokens::new(creds)),
            Box::new(service_accounts::ServiceAccounts { issuer, objects }),
        ])
    }

    async fn first_valid(&self, credentials: &Credentials<'_>) -> Option<(User, Vec<String>)> {
        for authenticator in &self.0 {
            if let Outcome::Valid { user, audiences } =
                authenticator.authenticate(credentials).await
            {
                return Some((user, audiences));
            }
        }
        None
    }

    /// Who made a request showing this certificate (verified against the
    /// cluster CA in the handshake) and this `Authorization` header.
    pub async fn user(
        &self,
        certificate: Option<&skiff_core::certs::Identity>,
        header: Option<&str>,
    ) -> Result<User, ApiError> {
        if certificate.is_none() && header.is_none() {
            return Ok(anonymous());
        }
        let audiences = [crate::tokens::ISSUER.to_owned()];
        let credentials = Credentials {
            certificate,
            token: header
                .and_then(|h| h.strip_prefix("Bearer "))
                .map(str::trim),
            audiences: &audiences,
            now: chrono::Utc::now().timestamp(),
        };
        match self.first_valid(&credentials).await {
            Some((user, _)) => Ok(user),
            None => Err(ApiError::unauthorized()),
        }
    }

    /// A TokenReview's answer: whom the token names if it is valid and
    /// meant for one of `audiences`, and which of them.
    pub async fn review(&self, token: &str, audiences: &[String]) -> Option<(User, Vec<String>)> {
        let credentials = Credentials {
            certificate: None,
            token: Some(token),
            audiences,
            now: chrono::Utc::now().timestamp(),
        };
        self.first_valid(&credentials).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Knows(&'static str, Outcome);

    #[async_trait]
    impl Authenticator for Knows {
        async fn authenticate(&self, c: &Credentials<'_>) -> Outcome {
            match c.token {
                Some(t) if t == self.0 => match &self.1 {
                    Outcome::Valid { user, audiences } => Outcome::Valid {
                        user: user.clone(),
                        audiences: audiences.clone(),
                    },
                    Outcome::Invalid => Outcome::Invalid,
                    Outcome::NotMine => Outcome::NotMine,
                },
                _ => Outcome::NotMine,
            }
        }
    }

    fn valid(name: &str) -> Outcome {
        Outcome::Valid {
            user: User {
                name: name.into(),
                groups: vec![],
            },
            audiences: vec![],
        }
    }

    #[tokio::test]
    async fn the_first_to_accept_names_the_user_and_the_rest_get_401() {
        let chain = Chain::new(vec![
            Box::new(Knows("revoked", Outcome::Invalid)),
            Box::new(Knows("a", valid("alice"))),
            Box::new(Knows("a", valid("shadowed"))),
        ]);
        let user = chain.user(None, Some("Bearer a")).await.unwrap();
        assert_eq!(user.name, "alice");
        for header in ["Bearer revoked", "Bearer unknown", "Basic YTpi"] {
            let refused = chain.user(None, Some(header)).await.unwrap_err();
            assert_eq!(refused.code, 401, "{header}");
        }
        assert_eq!(chain.user(None, None).await.unwrap(), anonymous());
        assert_eq!(chain.review("a", &[]).await.unwrap().0.name, "alice");
        assert!(chain.review("revoked", &[]).await.is_none());
    }
}
