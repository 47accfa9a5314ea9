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
    /// Whether what the token is bound to still exists: the watch cache
    /// answers almost always (as upstream's informers do); what it does
    /// not hold is confirmed with a consistent read. A failed read counts
    /// as gone.
    async fn live(&self, bound: &Bound) -> bool {
        if self.holds(bound, false).await == Some(true) {
            return true;
        }
        self.holds(bound, true).await == Some(true)
    }

    async fn holds(&self, bound: &Bound, consistent: bool) -> Option<bool> {
        let lookup =
            |plural| registry::lookup("", "v1", plural).expect("core resources are served");
        let ns = Some(bound.namespace.as_str());
        let read = |plural, name: &str| {
            let r = lookup(plural);
            let name = name.to_owned();
            async move {
                match consistent {
                    true => self.objects.try_get(r, ns, &name).await,
                    false => self.objects.recent(r, ns, &name).await,
                }
            }
        };
        let account = read("serviceaccounts", &bound.account).await.ok()?;
        let pod = match &bound.pod {
            Some((name, _)) => read("pods", name).await.ok()?,
            None => None,
        };
        Some(bound.holds(account.as_ref(), pod.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixture;
    use crate::tokens::{test_issuer, Claims, ISSUER};
    use serde_json::json;

    #[tokio::test]
    async fn a_token_holds_while_its_account_and_pod_do() {
        let f = Fixture::new();
        f.put(
            "",
            "serviceaccounts",
            json!({"metadata": {"name": "builder", "namespace": "apps", "uid": "a1"}}),
        )
        .await;
        f.put(
            "",
            "pods",
            json!({"metadata": {"name": "web-0", "namespace": "apps", "uid": "p1"}}),
        )
        .await;
        let issuer = Arc::new(test_issuer());
        let accounts = ServiceAccounts {
            issuer: issuer.clone(),
            objects: f.objects.clone(),
        };
        let now = chrono::Utc::now().timestamp();
        let token = |account_uid: &'static str, pod: Option<(&str, &str)>| {
            let claims = Claims {
                namespace: "apps",
                name: "builder",
                uid: account_uid,
                audiences: vec![ISSUER.to_owned()],
                expires: now + 600,
                pod: pod.map(|(n, u)| (n.to_owned(), u.to_owned())),
            };
            issuer.issue(&claims, now).unwrap()
        };
        let audiences = [ISSUER.to_owned()];
        let check = |token: String| {
            let accounts = &accounts;
            let audiences = &audiences;
            async move {
                let shown = Credentials {
                    certificate: None,
                    token: Some(&token),
                    audiences,
                    now,
                };
                accounts.authenticate(&shown).await
            }
        };
        match check(token("a1", Some(("web-0", "p1")))).await {
            Outcome::Valid { user, .. } => {
                assert_eq!(user.name, "system:serviceaccount:apps:builder")
            }
            other => panic!("{other:?}"),
        }
        // Another account of the same name (re-created), another pod.
        assert_eq!(check(token("old", None)).await, Outcome::Invalid);
        assert_eq!(
            check(token("a1", Some(("web-0", "gone")))).await,
            Outcome::Invalid
        );
        assert_eq!(
            check(token("a1", Some(("web-1", "p2")))).await,
            Outcome::Invalid
        );
        // Not a token of ours at all.
        assert_eq!(check("a.b.c".into()).await, Outcome::NotMine);
    }
}
