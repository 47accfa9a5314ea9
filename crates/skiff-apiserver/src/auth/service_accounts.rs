//! Service account tokens: JWTs this server signed, honoured only while
//! their ServiceAccount (same uid) and, when bound to one, their pod
//! (same uid) exist, so a deleted pod's token stops working.

use std::sync::Arc;

use async_trait::async_trait;
use skiff_core::registry;

use super::{Authenticator, Credentials, Outcome};
use crate::storage::Objects;
use crate::tokens::{Bound, Issuer};

pub struct ServiceAccounts {
    pub issuer: Arc<Issuer>,
    pub objects: Objects,
}

#[async_trait]
impl Authenticator for ServiceAccounts {
    async fn authenticate(&self, c: &Credentials<'_>) -> Outcome {
        let Some(token) = c.token else {
            return Outcome::NotMine;
        };
        match self.issuer.verify_for(token, c.now, c.audiences) {
            Some((user, bound, audiences)) if self.live(&bound).await => {
                Outcome::Valid { user, audiences }
            }
            Some(_) => Outcome::Invalid,
            None => Outcome::NotMine,
        }
    }
}

impl ServiceAccounts {
    /// Whether what the token is bound to still exists (a failed read
    /// counts as gone).
    async fn live(&self, bound: &Bound) -> bool {
        let lookup =
            |plural| registry::lookup("", "v1", plural).expect("core resources are served");
        let ns = Some(bound.namespace.as_str());
        let Ok(account) = self
            .objects
            .try_get(lookup("serviceaccounts"), ns, &bound.account)
            .await
        else {
            return false;
        };
        let pod = match &bound.pod {
            Some((name, _)) => match self.objects.try_get(lookup("pods"), ns, name).await {
                Ok(pod) => pod,
                Err(_) => return false,
            },
            None => None,
        };
        bound.holds(account.as_ref(), pod.as_ref())
    }
}
