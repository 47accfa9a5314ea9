//! Registry credentials from a pod's `imagePullSecrets`, as upstream's
//! kubelet finds them: each secret's `.dockerconfigjson` (or legacy
//! `.dockercfg`) entries whose registry matches the image's, the most
//! specific first.

use base64::Engine;
use k8s_cri::v1 as cri;
use serde::Deserialize;
use std::collections::BTreeMap;

/// One registry's entry in a docker config.
#[derive(Deserialize, Default)]
struct Entry {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    /// `user:password` in base64, for entries without the two.
    #[serde(default)]
    auth: String,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

/// The registry (`host[:port]`) and repository path of an image
/// reference; Docker Hub's for a name without a registry.
fn registry_and_path(image: &str) -> (&str, &str) {
    match image.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => ("docker.io", image),
    }
}

/// Docker Hub's names for itself.
fn canonical(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        other => other,
    }
}

/// A config key (`https://host[:port]/path/`, `host`, `*.example.com`) as
/// host and path.
fn key_parts(key: &str) -> (&str, &str) {
    let key = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    // Docker Hub's legacy key names its API version, not a repository.
    let path = path.trim_end_matches('/');
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    (canonical(host), path)
}

/// Whether a key's host (with `*` for one DNS label) matches the image's.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (pattern_name, pattern_port) = pattern.split_once(':').unwrap_or((pattern, ""));
    let (name, port) = host.split_once(':').unwrap_or((host, ""));
    let (p, n): (Vec<_>, Vec<_>) = (pattern_name.split('.').collect(), name.split('.').collect());
    pattern_port == port && p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| *p == "*" || p == n)
}

/// The credentials for `image` in the secrets' data, in the order to try:
/// keys naming a longer repository path first.
pub fn credentials(image: &str, secrets: &[BTreeMap<String, Vec<u8>>]) -> Vec<cri::AuthConfig> {
    let (registry, path) = registry_and_path(image);
    let registry = canonical(registry);
    let mut found: Vec<(usize, cri::AuthConfig)> = Vec::new();
    for data in secrets {
        let auths = if let Some(json) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<DockerConfig>(json).map(|c| c.auths)
        } else if let Some(json) = data.get(".dockercfg") {
            serde_json::from_slice(json)
        } else {
            continue;
        };
        for (key, entry) in auths.unwrap_or_default() {
            let (host, prefix) = key_parts(&key);
            let under =
                prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/"));
            if !host_matches(host, registry) || !under {
                continue;
            }
            let (mut username, mut password) = (entry.username, entry.password);
            if username.is_empty() {
                let decoded = base64::engine::general_purpose::STANDARD.decode(entry.auth.trim());
                let decoded = String::from_utf8(decoded.unwrap_or_default()).unwrap_or_default();
                if let Some((u, p)) = decoded.split_once(':') {
                    (username, password) = (u.to_owned(), p.to_owned());
                }
            }
            // No server address, as upstream's keyring: containerd takes
            // one only as a URL, and the registry is matched here.
            let auth = cri::AuthConfig {
                username,
                password,
                ..Default::default()
            };
            found.push((prefix.len(), auth));
        }
    }
    found.sort_by_key(|(specific, _)| std::cmp::Reverse(*specific));
    found.into_iter().map(|(_, auth)| auth).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(key: &str, json: serde_json::Value) -> BTreeMap<String, Vec<u8>> {
        [(key.to_owned(), json.to_string().into_bytes())].into()
    }

    #[test]
    fn credentials_match_the_images_registry_most_specific_first() {
        let auth = base64::engine::general_purpose::STANDARD.encode("hub:secret");
        let secrets = [
            secret(
                ".dockerconfigjson",
                serde_json::json!({"auths": {
                "https://index.docker.io/v1/": {"auth": auth},
                "registry.example.com:5000": {"username": "team", "password": "a"},
                "registry.example.com:5000/shop/": {"username": "shop", "password": "b"},
                "*.corp.example": {"username": "corp", "password": "c"}}}),
            ),
            secret(
                ".dockercfg",
                serde_json::json!({"127.0.0.1:5000": {"username": "local", "password": "d"}}),
            ),
            secret("other", serde_json::json!({})),
        ];
        let users = |image: &str| -> Vec<String> {
            credentials(image, &secrets)
                .into_iter()
                .map(|a| a.username)
                .collect()
        };
        assert_eq!(users("busybox:1"), ["hub"]);
        assert_eq!(users("docker.io/library/busybox"), ["hub"]);
        assert_eq!(
            users("registry.example.com:5000/shop/web:1"),
            ["shop", "team"]
        );
        assert_eq!(users("registry.example.com:5000/other/web:1"), ["team"]);
        assert_eq!(
            users("registry.example.com/shop/web:1"),
            Vec::<String>::new()
        );
        assert_eq!(users("git.corp.example/app"), ["corp"]);
        assert_eq!(users("a.git.corp.example/app"), Vec::<String>::new());
        assert_eq!(users("127.0.0.1:5000/test/busybox:1"), ["local"]);
        assert_eq!(credentials("busybox", &secrets)[0].password, "secret");
    }
}
