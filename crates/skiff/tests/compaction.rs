//! Compaction with the real kubectl: the store forgets history older than
//! its last tick, so a deleted Secret's bytes leave every file of the data
//! dir, a continue token from before is answered 410, and the database
//! shrinks after a delete storm.

mod support;

use std::time::Duration;

use base64::Engine;
use support::{found_under, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn compaction_forgets_what_was_deleted() {
    let c = Cluster::start_with_flags(&["--compaction-interval", "1s"]);
    let dir = c.dir.path();
    // Secrets are stored with their data in base64, as sent.
    let canary = "canary-7c41e2-never-seen-again";
    let needle = base64::engine::general_purpose::STANDARD.encode(canary);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "gone",
        &format!("--from-literal=k={canary}"),
    ]);
    for i in 0..2 {
        c.ok(&["create", "configmap", &format!("page-{i}")]);
    }
    let page: serde_json::Value = serde_json::from_str(&c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?limit=1",
    ]))
    .unwrap();
    let token = page["metadata"]["continue"].as_str().unwrap().to_owned();
    assert!(found_under(dir, needle.as_bytes()), "the Secret is stored");
    c.ok(&["delete", "secret", "gone"]);

    // A delete storm: 300 ConfigMaps of 8 KiB, then none.
    let big = "x".repeat(8 << 10);
    let mut manifests = String::new();
    for i in 0..300 {
        manifests.push_str(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: storm-{i}, labels: {{storm: \"yes\"}}}}\ndata: {{v: {big}}}\n---\n"
        ));
    }
    let out = c.kubectl_stdin(&["create", "-f", "-"], &manifests);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peak = skiff_testkit::database_bytes(dir);
    // One deletecollection (kubectl's own deletes are throttled client-side).
    c.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=storm%3Dyes",
    ]);

    wait_for(
        "the deleted Secret's bytes to leave the disk",
        LIMIT,
        || (!found_under(dir, needle.as_bytes())).then_some(()),
    );
    // The compacted token is expired; so is a forged one whose revision
    // the store never reached, and a token that is not one is a bad request.
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(r#"{"rv":1000000000000,"start":"/registry/configmaps/default/a"}"#);
    let tokens = [
        (token.as_str(), "too old"),
        (forged.as_str(), "too old"),
        ("not-a-token", "not valid"),
    ];
    for (token, expect) in tokens {
        let out = c.kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?limit=1&continue={token}"),
        ]);
        let refused = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && refused.contains(expect),
            "{refused}"
        );
    }
    let shrunk = wait_for("the database to shrink", LIMIT, || {
        let now = skiff_testkit::database_bytes(dir);
        (now < peak / 2).then_some(now)
    });
    assert!(shrunk < peak);
}
