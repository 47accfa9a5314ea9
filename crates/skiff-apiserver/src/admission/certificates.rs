//! CertificateSigningRequests, as upstream's registry and admission treat
//! them: a new request records who made it (its requester's name and
//! groups, whatever the body said) and must hold a PEM request that
//! parses; approving or denying one (`/approval`) needs `approve` on its
//! signer, issuing its certificate (`/status`) needs `sign`; a decision
//! and a certificate, once made, stay.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::status::Cause;
use skiff_core::ApiError;

use super::{Mutating, Operation, Validating, Verdict};
use crate::auth::User;
use crate::authz::{Attributes, Authorizer, Decision, Target};

const GROUP: &str = "certificates.k8s.io";
const KIND: &str = "CertificateSigningRequest";

fn is_request(a: &super::Attributes<'_>) -> bool {
    a.resource.group == GROUP && a.resource.kind == KIND
}

/// A new request records who made it (upstream's registry does this in
/// its strategy; here it needs the user, which admission has).
pub struct Requester;

#[async_trait]
impl Mutating for Requester {
    async fn admit(
        &self,
        a: &super::Attributes<'_>,
        csr: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation == Operation::Create && is_request(a) {
            admit_new(a.user, csr)?;
        }
        Ok(())
    }
}

/// CertificateApproval and CertificateSigning: a decision needs `approve`
/// on the request's signer, a certificate `sign`.
pub struct ApprovalAndSigning(pub Arc<dyn Authorizer>);

#[async_trait]
impl Validating for ApprovalAndSigning {
    fn handles(&self, a: &super::Attributes<'_>) -> bool {
        a.operation == Operation::Update && is_request(a)
    }

    async fn validate(
        &self,
        a: &super::Attributes<'_>,
        next: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        match a.old {
            Some(current) => admit_change(self.0.as_ref(), a.user, current, next),
            None => Ok(()),
        }
    }
}

fn invalid(csr: &Value, causes: Vec<Cause>) -> ApiError {
    let name = csr["metadata"]["name"].as_str().unwrap_or_default();
    ApiError::invalid(GROUP, KIND, name, causes)
}

/// Records the requester and checks the request (create).
fn admit_new(user: &User, csr: &mut Value) -> Result<(), ApiError> {
    csr["spec"]["username"] = json!(user.name);
    csr["spec"]["groups"] = json!(user.groups);
    if let Some(spec) = csr["spec"].as_object_mut() {
        spec.remove("uid");
        spec.remove("extra");
    }
    let spec = &csr["spec"];
    let mut causes = Vec::new();
    match spec["request"].as_str().map(decode) {
        None => causes.push(Cause::required("spec.request")),
        Some(Err(e)) => causes.push(Cause::invalid("spec.request", "", e)),
        Some(Ok(pem)) => {
            if let Err(e) = skiff_core::certs::read_request(&pem) {
                causes.push(Cause::invalid("spec.request", "", e));
            }
        }
    }
    let signer = spec["signerName"].as_str().unwrap_or_default();
    let well_formed = signer.split_once('/').is_some_and(|(domain, path)| {
        !domain.is_empty() && !path.is_empty() && domain.contains('.')
    });
    if !well_formed {
        causes.push(Cause::invalid(
            "spec.signerName",
            signer,
            "must be a fully qualified domain and path of the form 'example.com/signer-name'",
        ));
    }
    if spec["usages"].as_array().is_none_or(Vec::is_empty) {
        causes.push(Cause::required("spec.usages"));
    }
    if let Some(s) = spec["expirationSeconds"].as_i64() {
        if s < 600 {
            causes.push(Cause::invalid(
                "spec.expirationSeconds",
                &s.to_string(),
                "may not specify a duration less than 600 seconds (10 minutes)",
            ));
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(csr, causes))
    }
}

/// `spec.request` is base64 in JSON.
fn decode(b64: &str) -> Result<Vec<u8>, String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("not base64: {e}"))
}

/// The status a write to `subresource` leaves: `/approval` changes only the
/// conditions, `/status` everything but the Approved and Denied ones.
pub fn merge_status(subresource: Option<&str>, current: &Value, next: &Value) -> Value {
    let mut status = current["status"].clone();
    let decision = |c: &Value| matches!(c["type"].as_str(), Some("Approved" | "Denied"));
    let conditions = |v: &Value| {
        v["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    match subresource {
        Some("approval") => status["conditions"] = json!(conditions(next)),
        Some("status") => {
            let mut kept: Vec<Value> = conditions(current).into_iter().filter(decision).collect();
            kept.extend(conditions(next).into_iter().filter(|c| !decision(c)));
            status = next["status"].clone();
            status["conditions"] = json!(kept);
        }
        _ => {}
    }
    if status["conditions"].as_array().is_some_and(Vec::is_empty) {
        if let Some(s) = status.as_object_mut() {
            s.remove("conditions");
        }
    }
    status
}

fn has(csr: &Value, kind: &str) -> bool {
    csr["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] != "False")
}

/// Checks a change of a request's decision or certificate, and that the
/// user may make it for this signer.
fn admit_change(
    authorizer: &dyn Authorizer,
    user: &User,
    current: &Value,
    next: &Value,
) -> Result<(), ApiError> {
    let (approved, denied) = (has(next, "Approved"), has(next, "Denied"));
    let mut causes = Vec::new();
    if approved && denied {
        causes.push(Cause::invalid(
            "status.conditions",
            "",
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
    for kind in ["Approved", "Denied"] {
        if has(current, kind) && !has(next, kind) {
            causes.push(Cause::invalid(
                "status.conditions",
                "",
                format!("updates may not remove a condition of type {kind:?}"),
            ));
        }
    }
    let certificate = |v: &Value| {
        v["status"]["certificate"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let issued = certificate(next) != certificate(current);
    if issued && !certificate(current).is_empty() {
        causes.push(Cause::invalid(
            "status.certificate",
            "",
            "updates may not modify existing certificate content",
        ));
    }
    if issued && !approved {
        causes.push(Cause::invalid(
            "status.certificate",
            "",
            "certificate may only be set once the request is approved",
        ));
    }
    if !causes.is_empty() {
        return Err(invalid(next, causes));
    }
    let signer = next["spec"]["signerName"].as_str().unwrap_or_default();
    let decided = (approved && !has(current, "Approved")) || (denied && !has(current, "Denied"));
    if decided && !may(authorizer, user, "approve", signer) {
        return Err(ApiError::forbidden(format!(
            "user not permitted to approve requests with signerName {signer:?}"
        )));
    }
    if issued && !may(authorizer, user, "sign", signer) {
        return Err(ApiError::forbidden(format!(
            "user not permitted to sign requests with signerName {signer:?}"
        )));
    }
    Ok(())
}

/// Whether `user` may `verb` the signer, by its name or its domain's
/// wildcard (`example.com/*`), as upstream asks.
fn may(authorizer: &dyn Authorizer, user: &User, verb: &str, signer: &str) -> bool {
    let wildcard = signer.split_once('/').map(|(d, _)| format!("{d}/*"));
    [Some(signer.to_owned()), wildcard]
        .into_iter()
        .flatten()
        .any(|name| {
            let a = Attributes {
                user: user.clone(),
                verb: verb.into(),
                target: Target::Resource {
                    group: GROUP.into(),
                    resource: "signers".into(),
                    subresource: None,
                    namespace: None,
                    name: Some(name),
                },
            };
            authorizer.authorize(&a) == Decision::Allow
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::Index;

    use crate::admission::testing::user;

    fn request() -> Value {
        use base64::Engine;
        let (_, pem) = skiff_core::certs::new_request("system:node:a", &["system:nodes"]).unwrap();
        json!({"metadata": {"name": "node-a"}, "spec": {
            "request": base64::engine::general_purpose::STANDARD.encode(pem),
            "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
            "usages": ["digital signature", "client auth"],
            "username": "someone-else", "groups": ["system:masters"]}})
    }

    #[test]
    fn the_requester_is_who_asked() {
        let mut csr = request();
        admit_new(
            &user("system:bootstrap:abc", &["system:bootstrappers"]),
            &mut csr,
        )
        .unwrap();
        assert_eq!(csr["spec"]["username"], "system:bootstrap:abc");
        assert_eq!(csr["spec"]["groups"], json!(["system:bootstrappers"]));
        let mut bad = request();
        bad["spec"]["request"] = json!("bm90IGEgcmVxdWVzdA==");
        bad["spec"]["signerName"] = json!("nodomain");
        bad["spec"]["expirationSeconds"] = json!(60);
        let err = admit_new(&user("u", &[]), &mut bad).unwrap_err();
        assert_eq!(err.code, 422);
        let fields: Vec<String> = err.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            fields,
            ["spec.request", "spec.signerName", "spec.expirationSeconds"]
        );
    }

    #[test]
    fn decisions_and_certificates_need_their_verbs_and_stay() {
        let roles = vec![json!({"metadata": {"name": "approver"}, "rules": [
            {"apiGroups": ["certificates.k8s.io"], "resources": ["signers"], "verbs": ["approve"],
             "resourceNames": ["kubernetes.io/*"]}]})];
        let bindings = vec![
            json!({"metadata": {"name": "b"}, "roleRef": {"kind": "ClusterRole", "name": "approver"},
            "subjects": [{"kind": "User", "name": "carol"}]}),
        ];
        let authz = crate::authz::rbac::Rbac::from_index(Index::build(&roles, &[], &bindings, &[]));
        let pending = request();
        let mut approved = pending.clone();
        approved["status"] = merge_status(
            Some("approval"),
            &pending,
            &json!({"status": {"conditions": [{"type": "Approved", "status": "True"}]}}),
        );
        assert!(admit_change(&authz, &user("carol", &[]), &pending, &approved).is_ok());
        let err = admit_change(&authz, &user("dave", &[]), &pending, &approved).unwrap_err();
        assert_eq!(err.code, 403);
        assert!(
            err.message.contains("not permitted to approve"),
            "{}",
            err.message
        );
        // /status cannot take the decision back, nor /approval the certificate.
        let mut issued = approved.clone();
        issued["status"] = merge_status(
            Some("status"),
            &approved,
            &json!({"status": {"certificate": "Y2VydA=="}}),
        );
        assert!(has(&issued, "Approved"));
        assert_eq!(issued["status"]["certificate"], "Y2VydA==");
        let err = admit_change(&authz, &user("carol", &[]), &approved, &issued).unwrap_err();
        assert!(
            err.message.contains("sign"),
            "carol may approve, not sign: {}",
            err.message
        );
        let mut denied = issued.clone();
        denied["status"] = merge_status(
            Some("approval"),
            &issued,
            &json!({"status": {"conditions": [{"type": "Denied", "status": "True"}]}}),
        );
        assert_eq!(denied["status"]["certificate"], "Y2VydA==");
        let err = admit_change(&authz, &user("carol", &[]), &issued, &denied).unwrap_err();
        assert_eq!(err.code, 422, "{}", err.message);
        let mut early = pending.clone();
        early["status"] = json!({"certificate": "Y2VydA=="});
        assert_eq!(
            admit_change(&authz, &user("carol", &[]), &pending, &early)
                .unwrap_err()
                .code,
            422
        );
    }
}
