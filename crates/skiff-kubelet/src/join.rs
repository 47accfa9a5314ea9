//! Joining a cluster: the node token names the CA's hash (as k3s tokens
//! do); the agent fetches the CA from `/cacerts`, checks the hash, and from
//! then on trusts only that CA.

use std::path::Path;

use base64::Engine;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::{Digest, Sha256};

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

/// A client for `server` authenticated by the node token, trusting the CA
/// whose hash the token names; and that CA.
pub async fn client(server: &str, token: &str) -> Result<(kube::Client, String), Error> {
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
    let ca_data = base64::engine::general_purpose::STANDARD.encode(&ca);
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: skiff\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_data}\nusers:\n- name: node\n  user:\n    token: {token:?}\ncontexts:\n- name: skiff\n  context: {{cluster: skiff, user: node}}\ncurrent-context: skiff\n"
    );
    let kubeconfig = Kubeconfig::from_yaml(&yaml).map_err(|e| Error::Kubeconfig(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))?;
    Ok((kube::Client::try_from(config)?, ca))
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
}
