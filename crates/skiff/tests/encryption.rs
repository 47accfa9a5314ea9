//! Encryption at rest with the real kubectl: with an EncryptionConfiguration
//! Secrets are stored sealed with AES-GCM (no file under the data dir holds
//! their data), read back across a restart, re-sealed with a new key by
//! rewriting them (rotation), then with another provider (secretbox).

mod support;

use base64::Engine;
use support::{found_under, Cluster};

/// An EncryptionConfiguration for Secrets: these providers with their
/// keys, then identity.
fn providers(list: &[(&str, &[(&str, &str)])]) -> String {
    let mut text = String::from("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n");
    for (kind, keys) in list {
        text.push_str(&format!("  - {kind}:\n      keys:\n"));
        for (name, secret) in keys.iter() {
            text.push_str(&format!("      - {{name: {name}, secret: {secret}}}\n"));
        }
    }
    text + "  - identity: {}\n"
}

fn config(keys: &[(&str, &str)]) -> String {
    providers(&[("aesgcm", keys)])
}

/// Writes every Secret back unchanged, which seals it with the first
/// provider's first key (upstream's rotation step).
fn rewrite_secrets(c: &Cluster) {
    let all = c.ok(&["get", "secrets", "-o", "json"]);
    // (kubectl validates a replace with OpenAPI v2, which Skiff does not
    // serve yet.)
    let out = c.kubectl_stdin(&["replace", "--validate=false", "-f", "-"], &all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn secrets_are_sealed_at_rest_and_rotate() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (one, two) = (("one", b64(&[7u8; 32])), ("two", b64(&[9u8; 32])));
    let keys_dir = tempfile::tempdir().unwrap();
    let file = keys_dir.path().join("encryption.yaml");
    std::fs::write(&file, config(&[(one.0, &one.1)])).unwrap();
    let flag = file.display().to_string();
    let mut c = Cluster::unstarted(false);
    c.spawn(&["--encryption-provider-config", &flag]);

    let canary = "canary-sealed-3b9e";
    let needle = b64(canary.as_bytes());
    c.ok(&[
        "create",
        "secret",
        "generic",
        "s",
        &format!("--from-literal=k={canary}"),
    ]);
    c.ok(&[
        "create",
        "configmap",
        "plain",
        &format!("--from-literal=k={canary}"),
    ]);
    let read = c.ok(&["get", "secret", "s", "-o", "jsonpath={.data.k}"]);
    assert_eq!(read, needle);
    let dir = c.dir.path().to_path_buf();
    let dir = dir.as_path();
    assert!(found_under(dir, b"k8s:enc:aesgcm:v1:one:"));
    assert!(
        !found_under(dir, needle.as_bytes()),
        "the Secret's data is sealed"
    );
    assert!(found_under(dir, canary.as_bytes()), "ConfigMaps are not");

    // Across a restart, and after a rotation: the new key first, the old
    // one still there to read; rewriting the Secrets seals them anew.
    c.kill();
    std::fs::write(&file, config(&[(two.0, &two.1), (one.0, &one.1)])).unwrap();
    c.spawn(&["--encryption-provider-config", &flag]);
    assert_eq!(
        c.ok(&["get", "secret", "s", "-o", "jsonpath={.data.k}"]),
        needle
    );
    rewrite_secrets(&c);
    assert!(found_under(dir, b"k8s:enc:aesgcm:v1:two:"));
    // Another provider first: what aesgcm sealed still reads, and
    // rewriting seals it with secretbox.
    c.kill();
    let boxed = [("box", b64(&[5u8; 32]))];
    let boxed: Vec<(&str, &str)> = boxed.iter().map(|(n, s)| (*n, s.as_str())).collect();
    let switched = providers(&[("secretbox", &boxed), ("aesgcm", &[(two.0, &two.1)])]);
    std::fs::write(&file, switched).unwrap();
    c.spawn(&["--encryption-provider-config", &flag]);
    rewrite_secrets(&c);
    assert!(found_under(dir, b"k8s:enc:secretbox:v1:box:"));
    assert_eq!(
        c.ok(&["get", "secret", "s", "-o", "jsonpath={.data.k}"]),
        needle
    );
    // Without the key it was sealed with, the server does not start, and
    // says why.
    c.kill();
    std::fs::write(&file, config(&[("three", &b64(&[1u8; 16]))])).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "server",
            "--disable-agent",
            "--dns-port",
            "0",
            "--disable-ingress",
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--https-port", &c.port.to_string()])
        .args(["--encryption-provider-config", &flag])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no provider has the key"), "{err}");
}
