//! The certificate controllers, as upstream's csrapproving and
//! csrsigning: node client certificate requests are approved when their
//! requester may ask for them (a SubjectAccessReview on
//! `certificatesigningrequests/nodeclient`, or `selfnodeclient` for a
//! node renewing its own), and approved requests for the API server's
//! client signers are signed with the cluster CA.

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::core::ApiResource;
use serde_json::json;
use skiff_core::certs::{self, Authority};

use skiff_runtime::api::{Cluster, Error, Target};
use skiff_runtime::cache::{Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::queue::Queue;

pub const KUBELET_CLIENT: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub const CLIENT: &str = "kubernetes.io/kube-apiserver-client";

/// How long a certificate lasts unless its request asks for less
/// (upstream's `--cluster-signing-duration`).
pub const SIGNING_DURATION: i64 = 365 * 24 * 3600;

const USAGES: &[&str] = &["digital signature", "key encipherment", "client auth"];

fn request_pem(csr: &CertificateSigningRequest) -> Vec<u8> {
    csr.spec.request.0.clone()
}

fn encoding(source: serde_json::Error) -> Error {
    Error::Decode {
        kind: "CertificateSigningRequest".into(),
        source,
    }
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == kind))
}

/// Why a request is not one for `signer` to sign, if it is not.
fn refuse(csr: &CertificateSigningRequest, signer: &str) -> Option<String> {
    let asked = match certs::read_request(&request_pem(csr)) {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let usages = csr.spec.usages.clone().unwrap_or_default();
    if !usages.iter().any(|u| u == "client auth") {
        return Some("a client certificate must ask for the \"client auth\" usage".into());
    }
    if let Some(u) = usages.iter().find(|u| !USAGES.contains(&u.as_str())) {
        return Some(format!("usage {u:?} is not allowed for signer {signer}"));
    }
    if asked.alt_names {
        return Some("subject alternative names are not allowed for client certificates".into());
    }
    if signer == KUBELET_CLIENT {
        let node = asked
            .common_name
            .strip_prefix("system:node:")
            .unwrap_or_default();
        if node.is_empty() {
            return Some("subject common name must begin with \"system:node:\"".into());
        }
        if asked.organizations != ["system:nodes"] {
            return Some("subject organization must be exactly [\"system:nodes\"]".into());
        }
    }
    None
}

/// Approves node client requests whose requester may ask for them.
pub struct Approver {
    requests: Arc<Cache<CertificateSigningRequest>>,
    cluster: Arc<dyn Cluster>,
}

impl Approver {
    pub fn new(
        requests: &mut Informer<CertificateSigningRequest>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        crate::owned::queue_self(requests, queue);
        Self {
            requests: requests.cache(),
            cluster,
        }
    }

    /// Whether the requester may create `certificatesigningrequests/<sub>`.
    async fn may(&self, csr: &CertificateSigningRequest, sub: &str) -> Result<bool, Error> {
        let review = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": csr.spec.username, "groups": csr.spec.groups, "uid": csr.spec.uid,
                "resourceAttributes": {"group": "certificates.k8s.io", "resource": "certificatesigningrequests",
                    "subresource": sub, "verb": "create"}}});
        let answer = self
            .cluster
            .create(
                &ApiResource::erase::<SubjectAccessReview>(&()),
                None,
                review,
            )
            .await?;
        Ok(answer["status"]["allowed"] == true)
    }
}

#[async_trait]
impl Reconcile for Approver {
    fn name(&self) -> &'static str {
        "csrapproving"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let Some(csr) = self.requests.get(name) else {
            return Ok(Action::Done);
        };
        let decided = has_condition(&csr, "Approved") || has_condition(&csr, "Denied");
        if decided
            || csr.spec.signer_name != KUBELET_CLIENT
            || refuse(&csr, KUBELET_CLIENT).is_some()
        {
            return Ok(Action::Done);
        }
        let Ok(asked) = certs::read_request(&request_pem(&csr)) else {
            return Ok(Action::Done);
        };
        let own = csr.spec.username.as_deref() == Some(asked.common_name.as_str());
        let allowed = (own && self.may(&csr, "selfnodeclient").await?)
            || self.may(&csr, "nodeclient").await?;
        if !allowed {
            return Ok(Action::Done);
        }
        let mut approved = serde_json::to_value(csr.as_ref()).map_err(encoding)?;
        let mut conditions = approved["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions.push(json!({"type": "Approved", "status": "True", "reason": "AutoApproved",
            "message": "Auto approving kubelet client certificate after SubjectAccessReview.",
            "lastUpdateTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
        approved["status"]["conditions"] = json!(conditions);
        let target = Target::of::<CertificateSigningRequest>(None, name);
        self.cluster
            .replace_subresource(&target, "approval", approved)
            .await?;
        Ok(Action::Done)
    }
}

/// Signs approved requests for the API server's client signers.
pub struct Signer {
    requests: Arc<Cache<CertificateSigningRequest>>,
    cluster: Arc<dyn Cluster>,
    authority: Authority,
}

impl Signer {
    pub fn new(
        requests: &mut Informer<CertificateSigningRequest>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
        authority: Authority,
    ) -> Self {
        crate::owned::queue_self(requests, queue);
        Self {
            requests: requests.cache(),
            cluster,
            authority,
        }
    }
}

#[async_trait]
impl Reconcile for Signer {
    fn name(&self) -> &'static str {
        "csrsigning"
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let Some(csr) = self.requests.get(name) else {
            return Ok(Action::Done);
        };
        let signer = csr.spec.signer_name.as_str();
        let issued = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some();
        let ready = has_condition(&csr, "Approved") && !has_condition(&csr, "Failed") && !issued;
        if !ready || !matches!(signer, KUBELET_CLIENT | CLIENT) {
            return Ok(Action::Done);
        }
        let mut next = serde_json::to_value(csr.as_ref()).map_err(encoding)?;
        let now = chrono::Utc::now();
        let signed = match refuse(&csr, signer) {
            Some(why) => Err(why),
            None => {
                let pem = String::from_utf8_lossy(&request_pem(&csr)).into_owned();
                let seconds = csr
                    .spec
                    .expiration_seconds
                    .map_or(SIGNING_DURATION, |s| i64::from(s).min(SIGNING_DURATION));
                self.authority.sign_client(&pem, now.timestamp(), seconds)
            }
        };
        match signed {
            Ok(cert) => {
                next["status"]["certificate"] =
                    json!(base64::engine::general_purpose::STANDARD.encode(cert));
            }
            Err(why) => {
                let mut conditions = next["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                conditions.push(json!({"type": "Failed", "status": "True", "reason": "SignerValidationFailure",
                    "message": why, "lastUpdateTime": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
                next["status"]["conditions"] = json!(conditions);
            }
        }
        let target = Target::of::<CertificateSigningRequest>(None, name);
        self.cluster
            .replace_subresource(&target, "status", next)
            .await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use skiff_runtime::fake::FakeCluster;

    fn authority() -> Authority {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        Authority::new(&cert.pem(), &key.serialize_pem()).unwrap()
    }

    fn csr(
        name: &str,
        groups: &[&str],
        signer: &str,
        conditions: Value,
    ) -> CertificateSigningRequest {
        let (_, pem) = certs::new_request(name, groups).unwrap();
        serde_json::from_value(json!({"metadata": {"name": "r"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": signer, "usages": ["digital signature", "client auth"],
            "username": "system:bootstrap:abc"}, "status": {"conditions": conditions}}))
        .unwrap()
    }

    #[tokio::test]
    async fn approved_requests_are_signed_and_bad_ones_fail() {
        let fake = Arc::new(FakeCluster::default());
        let mut requests = Informer::default();
        let signer = Signer::new(&mut requests, fake.clone(), Queue::new(), authority());
        let approved = json!([{"type": "Approved", "status": "True"}]);
        requests.apply(csr(
            "system:node:a",
            &["system:nodes"],
            KUBELET_CLIENT,
            approved.clone(),
        ));
        signer.reconcile("r").await.unwrap();
        let body = &fake.bodies("replace")[0];
        let pem = base64::engine::general_purpose::STANDARD
            .decode(body["status"]["certificate"].as_str().unwrap())
            .unwrap();
        let der = x509_der(&pem);
        let id = certs::identity(&der).unwrap();
        assert_eq!(
            (id.name.as_str(), id.groups.as_slice()),
            ("system:node:a", &["system:nodes".to_owned()][..])
        );
        // A kubelet signer request for another name fails, unsigned.
        fake.clear();
        requests.apply(csr(
            "system:admin",
            &["system:masters"],
            KUBELET_CLIENT,
            approved,
        ));
        signer.reconcile("r").await.unwrap();
        let body = &fake.bodies("replace")[0];
        assert!(body["status"]["certificate"].is_null());
        assert_eq!(body["status"]["conditions"][1]["type"], "Failed");
        // Pending: nothing.
        fake.clear();
        requests.apply(csr(
            "system:node:a",
            &["system:nodes"],
            KUBELET_CLIENT,
            json!([]),
        ));
        signer.reconcile("r").await.unwrap();
        assert!(fake.bodies("replace").is_empty());
    }

    fn x509_der(pem: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(pem);
        let b64: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn only_node_client_requests_suit_the_kubelet_signer() {
        let none = json!([]);
        assert!(refuse(
            &csr(
                "system:node:a",
                &["system:nodes"],
                KUBELET_CLIENT,
                none.clone()
            ),
            KUBELET_CLIENT
        )
        .is_none());
        assert!(refuse(
            &csr("alice", &["system:nodes"], KUBELET_CLIENT, none.clone()),
            KUBELET_CLIENT
        )
        .is_some());
        assert!(refuse(
            &csr(
                "system:node:a",
                &["system:masters"],
                KUBELET_CLIENT,
                none.clone()
            ),
            KUBELET_CLIENT
        )
        .is_some());
        assert!(refuse(&csr("alice", &["devs"], CLIENT, none), CLIENT).is_none());
    }
}
