//! Joining a cluster. The node token names the CA's hash (as k3s tokens
//! do): the agent fetches the CA from `/cacerts`, checks the hash, and from
//! then on trusts only that CA. The token itself is a bootstrap
//! credential: with it the agent asks, through the CSR API, for a client
//! certificate naming the node (`system:node:<name>` in `system:nodes`),
//! keeps it under its data dir, and renews it, with the certificate
//! itself, when four fifths of its life have passed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;
use sha2::{Digest, Sha256};
use skiff_core::certs;
use skiff_runtime::rotating::Rotating;

/// The signer of node client certificates.
const SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

/// How long a request may wait for approval and signing.
const ISSUE_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read token file {path}: {source}")]
    TokenFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the node token is not of the form K10<ca-hash>::node:<secret>")]
    TokenFormat,
    #[error("fetch the cluster CA from {url}: {source}")]
    FetchCa { url: String, source: reqwest::Error },
    #[error("the CA served by {url} does not match the hash in the node token")]
    CaMismatch { url: String },
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("client: {0}")]
    Client(#[from] kube::Error),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a token from a file (the server's `<data-dir>/node-token`).
pub fn read_token(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|source| Error::TokenFile {
            path: path.display().to_string(),
            source,
        })
}

/// The CA hash a `K10<hash>::node:<secret>` token carries.
fn ca_hash(token: &str) -> Result<&str, Error> {
    token
        .strip_prefix("K10")
        .and_then(|t| t.split_once("::"))
        .map(|(hash, _)| hash)
        .filter(|h| h.len() == 64)
        .ok_or(Error::TokenFormat)
}

/// Fetches the CA from `server` and checks it against the token's hash.
async fn fetch_ca(server: &str, token: &str) -> Result<String, Error> {
    let want = ca_hash(token)?;
    let url = format!("{}/cacerts", server.trim_end_matches('/'));
    // The CA is not known yet: its hash, checked below, is what proves it.
    let insecure = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .map_err(|source| Error::FetchCa {
            url: url.clone(),
            source,
        })?;
    let fetch = async {
        insecure
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await
    };
    let ca = fetch.await.map_err(|source| Error::FetchCa {
        url: url.clone(),
        source,
    })?;
    let got: String = Sha256::digest(ca.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if got != want {
        return Err(Error::CaMismatch { url });
    }
    Ok(ca)
}

/// How a client authenticates.
enum Credential<'a> {
    Token(&'a str),
    /// Certificate and key, PEM.
    Certificate(&'a str, &'a str),
}

async fn client_for(
    server: &str,
    ca: &str,
    credential: Credential<'_>,
) -> Result<kube::Client, Error> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match credential {
        Credential::Token(token) => json!({"token": token}),
        Credential::Certificate(cert, key) => {
            json!({"client-certificate-data": b64(cert), "client-key-data": b64(key)})
        }
    };
    let config = json!({"apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "skiff", "cluster": {"server": server, "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "node", "user": user}],
        "contexts": [{"name": "skiff", "context": {"cluster": "skiff", "user": "node"}}],
        "current-context": "skiff"});
    let kubeconfig: Kubeconfig =
        serde_json::from_value(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(node_config(kubeconfig).await?)?)
}

/// The client configuration of `kubeconfig`, sending the kubelet's
/// `User-Agent`.
async fn node_config(kubeconfig: Kubeconfig) -> Result<kube::Config, Error> {
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    skiff_runtime::user_agent::set(&mut config, "kubelet");
    Ok(config)
}

/// Where the node's certificate and key live (one PEM file, 0600).
fn certificate_path(data_dir: &Path) -> PathBuf {
    data_dir.join("pki/kubelet-client-current.pem")
}

/// The node's certificate and key from `path`, if they name `user` and
/// are valid now.
fn stored(path: &Path, user: &str, now: i64) -> Option<(String, String, certs::Identity)> {
    let pem = std::fs::read_to_string(path).ok()?;
    let key_at = pem.find("-----BEGIN PRIVATE KEY-----")?;
    let (cert, key) = pem.split_at(key_at);
    let der = rustls_pemfile::certs(&mut cert.as_bytes()).next()?.ok()?;
    let id = certs::identity(&der)?;
    (id.name == user && id.valid_at(now)).then(|| (cert.to_owned(), key.to_owned(), id))
}

fn store(path: &Path, cert: &str, key: &str) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(format!("{cert}{key}").as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Asks for a certificate naming `user` with `client`'s credential and
/// waits until it is issued; returns the certificate and its key (PEM).
async fn request_certificate(client: &kube::Client, node: &str) -> Result<(String, String), Error> {
    let user = format!("system:node:{node}");
    let (key, request) =
        certs::new_request(&user, &["system:nodes"]).map_err(Error::Certificate)?;
    let api: Api<CertificateSigningRequest> = Api::all(client.clone());
    let csr = serde_json::from_value(json!({"metadata": {"generateName": "node-csr-"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode(&request),
            "signerName": SIGNER, "usages": ["digital signature", "client auth"]}}))
    .map_err(|e| Error::Certificate(e.to_string()))?;
    let made = api.create(&PostParams::default(), &csr).await?;
    let name = made.metadata.name.unwrap_or_default();
    tracing::info!(%name, %user, "asked for a node certificate");
    let deadline = tokio::time::Instant::now() + ISSUE_DEADLINE;
    loop {
        let csr = api.get(&name).await?;
        let status = csr.status.unwrap_or_default();
        if let Some(cert) = status.certificate {
            let cert = String::from_utf8(cert.0).map_err(|e| Error::Certificate(e.to_string()))?;
            return Ok((cert, key));
        }
        let refused = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.type_ == "Denied" || c.type_ == "Failed");
        if let Some(c) = refused {
            return Err(Error::Certificate(format!(
                "request {name} {}: {}",
                c.type_.to_lowercase(),
                c.message.unwrap_or_default()
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Certificate(format!(
                "request {name} was not approved and signed within {ISSUE_DEADLINE:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`:
/// four fifths of the way, as upstream's 70–90 % window's middle.
pub fn renew_at(not_before: i64, not_after: i64) -> i64 {
    not_before + (not_after - not_before) * 4 / 5
}

/// A client for `server` acting as node `node`, and the cluster CA: the
/// node's stored certificate if it is still valid, else a new one asked
/// for with the join token. A task renews it before it ends.
pub async fn client(
    server: &str,
    token: &str,
    data_dir: &Path,
    node: &str,
) -> Result<(kube::Client, String), Error> {
    let ca = fetch_ca(server, token).await?;
    let path = certificate_path(data_dir);
    let user = format!("system:node:{node}");
    let now = chrono::Utc::now().timestamp();
    let (cert, key, id) = match stored(&path, &user, now) {
        Some(found) => found,
        None => {
            let bootstrap = client_for(server, &ca, Credential::Token(token)).await?;
            let (cert, key) = request_certificate(&bootstrap, node).await?;
            store(&path, &cert, &key)?;
            stored(&path, &user, now).ok_or_else(|| {
                Error::Certificate(format!("the issued certificate does not name {user}"))
            })?
        }
    };
    let current = client_for(server, &ca, Credential::Certificate(&cert, &key)).await?;
    let rotating = Rotating::new(current);
    let client = rotating.client();
    tokio::spawn(renew(
        rotating,
        server.to_owned(),
        ca.clone(),
        path,
        node.to_owned(),
        id,
    ));
    Ok((client, ca))
}

/// Renews the node's certificate for ever, each time four fifths of the
/// current one's life have passed; a failure is retried in a minute.
async fn renew(
    rotating: Rotating,
    server: String,
    ca: String,
    path: PathBuf,
    node: String,
    mut id: certs::Identity,
) {
    loop {
        let wait = renew_at(id.not_before, id.not_after) - chrono::Utc::now().timestamp();
        tokio::time::sleep(Duration::from_secs(wait.max(0) as u64)).await;
        let renewed = async {
            let (cert, key) = request_certificate(&rotating.client(), &node).await?;
            let next = client_for(&server, &ca, Credential::Certificate(&cert, &key)).await?;
            store(&path, &cert, &key)?;
            let user = format!("system:node:{node}");
            let (_, _, id) = stored(&path, &user, chrono::Utc::now().timestamp())
                .ok_or_else(|| Error::Certificate("the renewed certificate is unusable".into()))?;
            Ok::<_, Error>((next, id))
        };
        match renewed.await {
            Ok((next, renewed)) => {
                tracing::info!(not_after = renewed.not_after, "node certificate renewed");
                rotating.replace(next);
                id = renewed;
            }
            Err(e) => {
                tracing::warn!(error = %e, "renewing the node certificate");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// A client from a kubeconfig file, and the CA it trusts (PEM).
pub async fn from_kubeconfig(path: &Path) -> Result<(kube::Client, String), Error> {
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let ca = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.certificate_authority_data.as_ref())
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| Error::Kubeconfig(format!("{} names no CA data", path.display())))?;
    Ok((kube::Client::try_from(node_config(kubeconfig).await?)?, ca))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_format() {
        let hash = "a".repeat(64);
        assert_eq!(ca_hash(&format!("K10{hash}::node:secret")).unwrap(), hash);
        assert!(ca_hash("plain-secret").is_err());
        assert!(ca_hash("K10short::node:x").is_err());
    }

    #[test]
    fn renewal_comes_at_four_fifths_of_a_certificates_life() {
        assert_eq!(renew_at(1_000, 2_000), 1_800);
        assert_eq!(renew_at(0, 365 * 86_400), 292 * 86_400);
    }

    #[test]
    fn a_stored_certificate_is_used_only_for_its_node_while_valid() {
        let dir = tempfile_dir();
        let path = dir.join("pki/kubelet-client-current.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:a");
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        store(&path, &cert.pem(), &key.serialize_pem()).unwrap();
        let in_2025 = 1_735_689_600;
        assert!(stored(&path, "system:node:a", in_2025).is_some());
        assert!(
            stored(&path, "system:node:b", in_2025).is_none(),
            "another node's"
        );
        assert!(
            stored(&path, "system:node:a", 1_900_000_000).is_none(),
            "expired"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("skiff-join-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
