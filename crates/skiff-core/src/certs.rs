//! Client certificates as upstream reads them: the subject's Common Name
//! is the user, its Organizations are the groups. Making a certificate
//! signing request for such a name, reading one, and signing it with the
//! cluster CA (what the CSR API's signers do).

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, Issuer,
    KeyPair, KeyUsagePurpose,
};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Who a certificate names, and when it is valid (Unix seconds).
#[derive(Clone, Debug, PartialEq)]
pub struct Identity {
    pub name: String,
    pub groups: Vec<String>,
    pub not_before: i64,
    pub not_after: i64,
}

impl Identity {
    pub fn valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }
}

/// The identity in a certificate (DER); `None` if it does not parse or
/// names no one.
pub fn identity(der: &[u8]) -> Option<Identity> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    let validity = cert.validity();
    Some(Identity {
        name,
        groups,
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
    })
}

/// What a certificate signing request asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Whether it asks for any subject alternative name.
    pub alt_names: bool,
}

/// Reads a PEM certificate signing request, checking its signature.
pub fn read_request(pem: &[u8]) -> Result<Request, String> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|_| "not a PEM block".to_owned())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(format!(
            "a PEM block of type {:?}, not CERTIFICATE REQUEST",
            block.label
        ));
    }
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| format!("not a certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "the request's signature does not verify".to_owned())?;
    let subject = &csr.certification_request_info.subject;
    let alt_names = csr.requested_extensions().into_iter().flatten().any(|e| {
        matches!(
            e,
            x509_parser::extensions::ParsedExtension::SubjectAlternativeName(_)
        )
    });
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or_default()
        .to_owned();
    let organizations = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Ok(Request {
        common_name,
        organizations,
        alt_names,
    })
}

/// A new key (PEM) and a request (PEM) for a certificate naming `name`
/// in `groups`.
pub fn new_request(name: &str, groups: &[&str]) -> Result<(String, String), String> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = subject(name, groups);
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((key.serialize_pem(), csr.pem().map_err(|e| e.to_string())?))
}

fn subject(name: &str, groups: &[&str]) -> rcgen::DistinguishedName {
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    for g in groups {
        dn.push(DnType::OrganizationName, *g);
    }
    dn
}

/// The cluster CA, able to sign.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    not_after: i64,
}

impl Authority {
    pub fn new(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("CA key: {e}"))?;
        let (_, block) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|_| "CA certificate: not PEM".to_owned())?;
        let not_after = identity(&block.contents)
            .map(|i| i.not_after)
            .ok_or("CA certificate: unreadable")?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).map_err(|e| format!("CA certificate: {e}"))?;
        Ok(Self { issuer, not_after })
    }

    /// A client certificate (PEM) for the key of `request_pem`, naming
    /// only the subject's Common Name and Organizations (nothing else a
    /// request asks for is copied), valid from five minutes ago (for
    /// clocks a little behind) for `seconds`, never past the CA's end.
    pub fn sign_client(&self, request_pem: &str, now: i64, seconds: i64) -> Result<String, String> {
        let asked = read_request(request_pem.as_bytes())?;
        let csr = CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|e| format!("certificate request: {e}"))?;
        let groups: Vec<&str> = asked.organizations.iter().map(String::as_str).collect();
        let params = self.client_params(&asked.common_name, &groups, now, seconds)?;
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| e.to_string())?;
        Ok(signed.pem())
    }

    /// A new key and client certificate (both PEM) naming `name` in
    /// `groups`, as the server issues its own components.
    pub fn issue_client(
        &self,
        name: &str,
        groups: &[&str],
        now: i64,
        seconds: i64,
    ) -> Result<(String, String), String> {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let params = self.client_params(name, groups, now, seconds)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| e.to_string())?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    fn client_params(
        &self,
        name: &str,
        groups: &[&str],
        now: i64,
        seconds: i64,
    ) -> Result<CertificateParams, String> {
        let time = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).map_err(|e| e.to_string());
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
        params.distinguished_name = subject(name, groups);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = time(now - 300)?;
        params.not_after = time(now.saturating_add(seconds).min(self.not_after))?;
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authority() -> (Authority, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        (
            Authority::new(&cert.pem(), &key.serialize_pem()).unwrap(),
            cert.pem(),
        )
    }

    fn der(pem: &str) -> Vec<u8> {
        x509_parser::pem::parse_x509_pem(pem.as_bytes())
            .unwrap()
            .1
            .contents
    }

    #[test]
    fn a_signed_request_names_its_subject_for_the_time_asked() {
        let (ca, _) = authority();
        let (_key, csr) = new_request("system:node:a", &["system:nodes"]).unwrap();
        let asked = read_request(csr.as_bytes()).unwrap();
        assert_eq!(asked.common_name, "system:node:a");
        assert_eq!(asked.organizations, ["system:nodes"]);
        assert!(!asked.alt_names);
        let now = 1_900_000_000;
        let cert = ca.sign_client(&csr, now, 3600).unwrap();
        let id = identity(&der(&cert)).unwrap();
        assert_eq!(id.name, "system:node:a");
        assert_eq!(id.groups, ["system:nodes"]);
        assert_eq!((id.not_before, id.not_after), (now - 300, now + 3600));
        assert!(id.valid_at(now) && !id.valid_at(now + 3600));
    }

    #[test]
    fn certificates_end_with_their_authority() {
        let (ca, _) = authority();
        let (cert, _) = ca
            .issue_client("system:kube-scheduler", &[], 1_900_000_000, i64::MAX)
            .unwrap();
        let id = identity(&der(&cert)).unwrap();
        assert_eq!(id.not_after, ca.not_after);
        assert!(id.groups.is_empty());
    }

    #[test]
    fn requests_are_checked() {
        let (_, ca_pem) = authority();
        assert!(read_request(b"garbage").is_err());
        let err = read_request(ca_pem.as_bytes()).unwrap_err();
        assert!(err.contains("CERTIFICATE REQUEST"), "{err}");
        let (_, csr) = new_request("alice", &[]).unwrap();
        // Flip a byte of the signature (at the end of the DER).
        let mut bytes = der(&csr);
        let last = bytes.len() - 2;
        bytes[last] ^= 0x55;
        let forged = pem_of("CERTIFICATE REQUEST", &bytes);
        assert!(read_request(forged.as_bytes()).is_err());
    }

    fn pem_of(label: &str, der: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }
}
