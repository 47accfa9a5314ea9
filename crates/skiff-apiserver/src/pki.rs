//! The cluster's credentials, made on first start and kept in the data dir:
//! a CA, the API server's serving certificate, the admin's client
//! certificate (in `system:masters`) with its kubeconfig, an admin token
//! (for benchmarks and scripts), and the node join token (a bootstrap
//! credential: it may only ask for a node certificate). The control
//! plane's own components get client certificates for their upstream
//! users at each start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::{Digest, Sha256};
use skiff_core::certs::Authority;

use crate::Error;

/// Paths and secrets of a server's credentials.
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub admin_token: String,
    pub node_token: String,
    /// The client certificate the API server shows node agents.
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
    /// The key service account tokens are signed with (PKCS#8 DER).
    pub service_account_key: Vec<u8>,
    /// The CA's key (PEM), to sign client certificates.
    pub ca_key_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(io(path))
}

fn write_private(path: &Path, contents: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn cert_error(e: rcgen::Error) -> Error {
    Error::Certificate(e.to_string())
}

/// Names the serving certificate is valid for.
fn serving_names(bind: IpAddr) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns = vec![
        "localhost".to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            dns.push(host.to_owned());
        }
    }
    let mut ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "10.43.0.1".parse().unwrap()];
    if !bind.is_unspecified() && !ips.contains(&bind) {
        ips.push(bind);
    }
    (dns, ips)
}

impl Credentials {
    /// Loads the credentials under `dir`, making any that are missing.
    pub fn load_or_create(dir: &Path, bind: IpAddr) -> Result<Self, Error> {
        let tls = dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(io(&tls))?;
        let ca_crt = tls.join("ca.crt");
        let ca_key = tls.join("ca.key");
        if !ca_crt.exists() {
            let key = KeyPair::generate().map_err(cert_error)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(DnType::CommonName, "skiff-ca");
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.self_signed(&key).map_err(cert_error)?;
            write_private(&ca_key, &key.serialize_pem())?;
            write_private(&ca_crt, &cert.pem())?;
            // A new CA invalidates any certificate it did not sign.
            let _ = std::fs::remove_file(tls.join("serving.crt"));
            let _ = std::fs::remove_file(tls.join("kubelet-client.crt"));
            let _ = std::fs::remove_file(tls.join("admin.crt"));
        }
        let serving_crt = tls.join("serving.crt");
        let serving_key = tls.join("serving.key");
        if !serving_crt.exists() {
            let issuer = ca_issuer(&ca_key)?;
            let key = KeyPair::generate().map_err(cert_error)?;
            let (dns, ips) = serving_names(bind);
            let mut params = CertificateParams::new(dns).map_err(cert_error)?;
            params
                .subject_alt_names
                .extend(ips.into_iter().map(SanType::IpAddress));
            params
                .distinguished_name
                .push(DnType::CommonName, "kube-apiserver");
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
            write_private(&serving_key, &key.serialize_pem())?;
            write_private(&serving_crt, &cert.pem())?;
        }
        let client_crt = tls.join("kubelet-client.crt");
        let client_key = tls.join("kubelet-client.key");
        if !client_crt.exists() {
            let issuer = ca_issuer(&ca_key)?;
            let key = KeyPair::generate().map_err(cert_error)?;
            let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
            params
                .distinguished_name
                .push(DnType::CommonName, "kube-apiserver-kubelet-client");
            params
                .distinguished_name
                .push(DnType::OrganizationName, "system:masters");
            params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            params.not_after = rcgen::date_time_ymd(2036, 1, 1);
            let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;
            write_private(&client_key, &key.serialize_pem())?;
            write_private(&client_crt, &cert.pem())?;
        }
        let sa_key = tls.join("service-account.key");
        if !sa_key.exists() {
            let key = KeyPair::generate().map_err(cert_error)?;
            write_private(&sa_key, &key.serialize_pem())?;
        }
        let service_account_key = KeyPair::from_pem(&read(&sa_key)?)
            .map_err(cert_error)?
            .serialize_der();
        let ca_pem = read(&ca_crt)?;
        let admin_path = tls.join("admin.token");
        if !admin_path.exists() {
            write_private(&admin_path, &random_hex(32))?;
        }
        let admin_crt = tls.join("admin.crt");
        let admin_key = tls.join("admin.key");
        if !admin_crt.exists() {
            let ca = Authority::new(&ca_pem, &read(&ca_key)?).map_err(Error::Certificate)?;
            let (cert, key) = ca
                .issue_client(
                    "system:admin",
                    &["system:masters"],
                    chrono::Utc::now().timestamp(),
                    i64::MAX,
                )
                .map_err(Error::Certificate)?;
            write_private(&admin_key, &key)?;
            write_private(&admin_crt, &cert)?;
        }
        let node_path = dir.join("node-token");
        if !node_path.exists() {
            // As k3s does: the CA's hash lets a joining node pin the CA.
            let hash = hex(&Sha256::digest(ca_pem.as_bytes()));
            write_private(&node_path, &format!("K10{hash}::node:{}", random_hex(16)))?;
        }
        Ok(Self {
            cert_pem: read(&serving_crt)?,
            key_pem: read(&serving_key)?,
            admin_token: read(&admin_path)?.trim().to_owned(),
            node_token: read(&node_path)?.trim().to_owned(),
            kubelet_client_cert_pem: read(&client_crt)?,
            kubelet_client_key_pem: read(&client_key)?,
            service_account_key,
            ca_key_pem: read(&ca_key)?,
            admin_cert_pem: read(&admin_crt)?,
            admin_key_pem: read(&admin_key)?,
            ca_pem,
        })
    }

    /// The CA, able to sign client certificates.
    pub fn authority(&self) -> Result<Authority, Error> {
        Authority::new(&self.ca_pem, &self.ca_key_pem).map_err(Error::Certificate)
    }

    /// Writes `kubeconfig.yaml` for the admin, pointing at `server`.
    pub fn write_kubeconfig(&self, dir: &Path, server: &str) -> Result<PathBuf, Error> {
        let path = dir.join("kubeconfig.yaml");
        let config = kubeconfig(
            server,
            &self.ca_pem,
            &self.admin_cert_pem,
            &self.admin_key_pem,
        );
        write_private(&path, &config)?;
        Ok(path)
    }

    /// Writes a kubeconfig for one of the control plane's own users under
    /// `<dir>/components/`, with a certificate issued now.
    pub fn write_component_kubeconfig(
        &self,
        dir: &Path,
        server: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<PathBuf, Error> {
        let components = dir.join("components");
        std::fs::create_dir_all(&components).map_err(io(&components))?;
        let (cert, key) = self
            .authority()?
            .issue_client(
                user,
                groups,
                chrono::Utc::now().timestamp(),
                COMPONENT_LIFETIME,
            )
            .map_err(Error::Certificate)?;
        let file: String = user
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let path = components.join(format!("{file}.kubeconfig"));
        write_private(&path, &kubeconfig(server, &self.ca_pem, &cert, &key))?;
        Ok(path)
    }
}

/// How long the components' certificates last; they are issued anew at
/// each start.
const COMPONENT_LIFETIME: i64 = 365 * 24 * 3600;

/// A kubeconfig for `server` with a client certificate.
fn kubeconfig(server: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: skiff\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: skiff\n  context:\n    cluster: skiff\n    user: skiff\ncurrent-context: skiff\npreferences: {{}}\n",
        b64(ca_pem),
        b64(cert_pem),
        b64(key_pem),
    )
}

/// The CA as an issuer of certificates.
fn ca_issuer(ca_key: &Path) -> Result<Issuer<'static, KeyPair>, Error> {
    let key = KeyPair::from_pem(&read(ca_key)?).map_err(cert_error)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "skiff-ca");
    Ok(Issuer::new(params, key))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
