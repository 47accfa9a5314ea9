//! Service account tokens: JWTs (ES256) the server signs for the
//! `serviceaccounts/token` subresource (TokenRequest) and accepts as
//! bearer tokens while they are unexpired and meant for the API server.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use serde_json::{json, Value};

use crate::auth::User;

/// The audiences a TokenRequest or TokenReview `spec` names, else the
/// API server's own.
pub fn audiences(spec: &Value) -> Vec<String> {
    spec["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .filter(|a: &Vec<String>| !a.is_empty())
        .unwrap_or_else(|| vec![ISSUER.to_owned()])
}

/// The issuer, and the audience the API server accepts, as upstream's
/// default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct Issuer {
    key: EcdsaKeyPair,
    public: Vec<u8>,
    rng: SystemRandom,
}

/// What a token is for.
pub struct Claims<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub uid: &'a str,
    pub audiences: Vec<String>,
    pub expires: i64,
    /// The pod the token is bound to: name and uid.
    pub pod: Option<(String, String)>,
}

impl Issuer {
    /// An issuer signing with a P-256 key in PKCS#8 DER.
    pub fn new(pkcs8: &[u8]) -> Result<Self, String> {
        let rng = SystemRandom::new();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
                .map_err(|e| format!("service account key: {e}"))?;
        let public = key.public_key().as_ref().to_vec();
        Ok(Self { key, public, rng })
    }

    pub fn issue(&self, c: &Claims, now: i64) -> Result<String, String> {
        let header = json!({"alg": "ES256", "typ": "JWT"});
        let mut k8s =
            json!({"namespace": c.namespace, "serviceaccount": {"name": c.name, "uid": c.uid}});
        if let Some((name, uid)) = &c.pod {
            k8s["pod"] = json!({"name": name, "uid": uid});
        }
        let payload = json!({
            "iss": ISSUER, "aud": c.audiences, "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.name),
            "iat": now, "nbf": now, "exp": c.expires, "kubernetes.io": k8s,
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let sig = self
            .key
            .sign(&self.rng, signed.as_bytes())
            .map_err(|e| format!("signing: {e}"))?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The service account a token names, if it is ours, meant for one of
    /// `audiences` (the API server's own for a request) and valid at
    /// `now`, with what it is bound to (which must still exist for the
    /// token to be honoured) and which of the audiences it is meant for.
    pub fn verify_for(
        &self,
        token: &str,
        now: i64,
        audiences: &[String],
    ) -> Option<(User, Bound, Vec<String>)> {
        let (signed, sig) = token.rsplit_once('.')?;
        let (_, payload) = signed.split_once('.')?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.public)
            .verify(signed.as_bytes(), &sig)
            .ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        let meant: Vec<String> = audiences
            .iter()
            .filter(|want| {
                claims["aud"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == want.as_str()))
            })
            .cloned()
            .collect();
        let valid = claims["iss"] == ISSUER
            && claims["exp"].as_i64().is_some_and(|e| now < e)
            && claims["nbf"].as_i64().is_none_or(|n| n <= now)
            && !meant.is_empty();
        if !valid {
            return None;
        }
        let sub = claims["sub"].as_str()?;
        let (ns, account) = sub
            .strip_prefix("system:serviceaccount:")?
            .split_once(':')?;
        let k8s = &claims["kubernetes.io"];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let bound = Bound {
            namespace: ns.to_owned(),
            account: account.to_owned(),
            account_uid: text(&k8s["serviceaccount"]["uid"]),
            pod: k8s["pod"]
                .is_object()
                .then(|| (text(&k8s["pod"]["name"]), text(&k8s["pod"]["uid"]))),
        };
        let user = User {
            name: sub.to_owned(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ],
        };
        Some((user, bound, meant))
    }
}

/// What a service account token is bound to: its account (by uid) and,
/// when it was made for one, a pod (name and uid).
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub namespace: String,
    pub account: String,
    pub account_uid: String,
    pub pod: Option<(String, String)>,
}

impl Bound {
    /// Whether `account` (and `pod`, for a pod-bound token) are the very
    /// objects the token was made for: a deleted and re-created one has
    /// another uid.
    pub fn holds(&self, account: Option<&Value>, pod: Option<&Value>) -> bool {
        let uid = |o: Option<&Value>| {
            o.and_then(|o| o["metadata"]["uid"].as_str())
                .map(str::to_owned)
        };
        let account_ok = uid(account).is_some_and(|u| u == self.account_uid);
        let pod_ok = match &self.pod {
            None => true,
            Some((_, want)) => uid(pod).is_some_and(|u| &u == want),
        };
        account_ok && pod_ok
    }
}

/// An issuer with a new key, for tests.
#[cfg(test)]
pub(crate) fn test_issuer() -> Issuer {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &SystemRandom::new(),
    )
    .unwrap();
    Issuer::new(pkcs8.as_ref()).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Issuer {
        fn verify(&self, token: &str, now: i64) -> Option<(User, Bound)> {
            self.verify_for(token, now, &[ISSUER.to_owned()])
                .map(|(user, bound, _)| (user, bound))
        }
    }

    fn issuer() -> Issuer {
        test_issuer()
    }

    fn claims(audience: &str, expires: i64) -> Claims<'static> {
        Claims {
            namespace: "apps",
            name: "builder",
            uid: "u1",
            audiences: vec![audience.to_owned()],
            expires,
            pod: Some(("web-0".into(), "p1".into())),
        }
    }

    #[test]
    fn tokens_name_their_service_account_until_they_expire() {
        let i = issuer();
        let token = i.issue(&claims(ISSUER, 1_000), 100).unwrap();
        let (user, bound) = i.verify(&token, 500).unwrap();
        assert_eq!(user.name, "system:serviceaccount:apps:builder");
        assert_eq!(bound.pod, Some(("web-0".into(), "p1".into())));
        let with_uid = |u: &str| serde_json::json!({"metadata": {"uid": u}});
        assert!(bound.holds(Some(&with_uid("u1")), Some(&with_uid("p1"))));
        assert!(!bound.holds(Some(&with_uid("u1")), None), "the pod is gone");
        assert!(
            !bound.holds(Some(&with_uid("u1")), Some(&with_uid("p2"))),
            "another pod of that name"
        );
        assert!(
            !bound.holds(None, Some(&with_uid("p1"))),
            "the account is gone"
        );
        assert!(user
            .groups
            .contains(&"system:serviceaccounts:apps".to_owned()));
        assert!(i.verify(&token, 1_000).is_none(), "expired");
        let elsewhere = i.issue(&claims("vault", 1_000), 100).unwrap();
        assert!(
            i.verify(&elsewhere, 500).is_none(),
            "meant for another audience"
        );
        // A TokenReview asking about that audience gets it back.
        let asked = audiences(&serde_json::json!({"audiences": ["vault", "other"]}));
        let (_, _, meant) = i.verify_for(&elsewhere, 500, &asked).unwrap();
        assert_eq!(meant, vec!["vault".to_owned()]);
        assert_eq!(audiences(&serde_json::json!({})), vec![ISSUER.to_owned()]);
        let mut forged = token.clone();
        forged.replace_range(token.len() - 4.., "AAAA");
        assert!(i.verify(&forged, 500).is_none());
        assert!(
            issuer().verify(&token, 500).is_none(),
            "another issuer's key"
        );
    }
}
