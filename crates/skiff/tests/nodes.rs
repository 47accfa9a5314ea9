//! Node identities with the real kubectl: the join token is a bootstrap
//! credential that can only ask for a node certificate (auto-approved and
//! signed by the controller manager); each node's certificate lets it
//! read only what its own pods use and write only its own objects (the
//! Node authorizer and NodeRestriction); `kubectl certificate
//! approve|deny` decides other requests.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use support::{kubectl_path, wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(30);

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A CertificateSigningRequest manifest for `user` in `groups`; its key.
fn csr(name: &str, user: &str, groups: &[&str], signer: &str) -> (String, String) {
    let (key, request) = skiff_core::certs::new_request(user, groups).unwrap();
    let manifest = format!(
        "apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\nspec:\n  request: {}\n  signerName: {signer}\n  usages: [digital signature, client auth]\n",
        b64(request.as_bytes())
    );
    (manifest, key)
}

/// The certificate issued for request `name`, once there is one.
fn issued(c: &Cluster, name: &str) -> String {
    let cert = wait_for(&format!("{name} to be issued"), LIMIT, || {
        let out = c.ok(&["get", "csr", name, "-o", "jsonpath={.status.certificate}"]);
        (!out.trim().is_empty()).then_some(out)
    });
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(cert.trim())
            .unwrap(),
    )
    .unwrap()
}

/// A kubeconfig holding a client certificate and key.
fn kubeconfig(c: &Cluster, name: &str, cert: &str, key: &str) -> PathBuf {
    let path = c.dir.path().join(format!("{name}.kubeconfig"));
    let config = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: s\n  context: {{cluster: s, user: u}}\ncurrent-context: s\n",
        c.url(),
        b64(&c.ca_pem()),
        b64(cert.as_bytes()),
        b64(key.as_bytes())
    );
    std::fs::write(&path, config).unwrap();
    path
}

/// kubectl with the credential in `kubeconfig`.
fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(kubectl_path())
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(stdin.unwrap_or_default().as_bytes())
        .unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    assert!(
        !out.status.success(),
        "should fail: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nodes_have_their_own_identities_and_see_only_their_own_pods_objects() {
    let c = Cluster::start();
    let token = std::fs::read_to_string(c.dir.path().join("node-token")).unwrap();
    let token = token.trim();

    // The join token: who it is, and that it can ask for a certificate
    // and do nothing else.
    let who = c.kubectl_as(
        token,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.groups}"],
    );
    assert!(String::from_utf8_lossy(&who.stdout).contains("system:bootstrappers"));
    for args in [
        &["get", "pods", "-A"][..],
        &["get", "secrets", "-n", "kube-system"],
        &["create", "configmap", "x"],
        &["get", "nodes"],
    ] {
        let out = c.kubectl_as(token, args);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("forbidden"),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token_config = c.dir.path().join("token.kubeconfig");
    let signer = "kubernetes.io/kube-apiserver-client-kubelet";
    let (manifest, _) = csr("sneaky", "system:admin", &["system:masters"], signer);
    let out = kubectl(
        &token_config,
        &["--token", token, "create", "-f", "-"],
        Some(&manifest),
    );
    assert!(out.status.success());
    let mut node_configs = Vec::new();
    for node in ["a", "b"] {
        let name = format!("node-csr-{node}");
        let (manifest, key) = csr(
            &name,
            &format!("system:node:{node}"),
            &["system:nodes"],
            signer,
        );
        let out = kubectl(
            &token_config,
            &["--token", token, "create", "-f", "-"],
            Some(&manifest),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cert = issued(&c, &name);
        node_configs.push(kubeconfig(&c, node, &cert, &key));
    }
    let table = c.ok(&["get", "csr", "node-csr-a"]);
    assert!(
        table.contains("system:bootstrap:") && table.contains("Approved,Issued"),
        "{table}"
    );
    // A bootstrap credential cannot get a certificate for anyone else:
    // its request (made before the nodes', so looked at first) is not
    // approved, and approved by hand it fails at the kubelet signer.
    let pending = c.ok(&["get", "csr", "sneaky"]);
    assert!(pending.contains("Pending"), "{pending}");
    c.ok(&["certificate", "approve", "sneaky"]);
    let failed = wait_for("the sneaky request to fail", LIMIT, || {
        let out = c.ok(&["get", "csr", "sneaky"]);
        out.contains("Failed").then_some(out)
    });
    assert!(!failed.contains("Issued"), "{failed}");
    let (a, b) = (&node_configs[0], &node_configs[1]);

    // Each node registers itself, and only itself.
    let node = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n");
    assert!(kubectl(a, &["create", "-f", "-"], Some(&node("a")))
        .status
        .success());
    assert!(kubectl(b, &["create", "-f", "-"], Some(&node("b")))
        .status
        .success());
    let who = kubectl(
        a,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&who.stdout), "system:node:a");
    let patch = r#"{"metadata":{"labels":{"x":"y"}}}"#;
    assert!(
        stderr(&kubectl(a, &["patch", "node", "b", "-p", patch], None))
            .contains(r#"node "a" is not allowed to modify node "b""#)
    );
    assert!(kubectl(a, &["patch", "node", "a", "-p", patch], None)
        .status
        .success());

    // Pods bound to each node, each using its own Secret.
    for node in ["a", "b"] {
        c.ok(&[
            "create",
            "secret",
            "generic",
            &format!("for-{node}"),
            "--from-literal=k=v",
        ]);
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: on-{node}}}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: busybox\n    envFrom: [{{secretRef: {{name: for-{node}}}}}]\n"
        );
        c.kubectl_stdin(&["create", "-f", "-"], &pod);
    }
    wait_for("node a to read its pod's Secret", LIMIT, || {
        kubectl(a, &["get", "secret", "for-a"], None)
            .status
            .success()
            .then_some(())
    });
    let refused = stderr(&kubectl(a, &["get", "secret", "for-b"], None));
    assert!(
        refused.contains(r#"User "system:node:a" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'a' and this object"#),
        "{refused}"
    );
    assert!(stderr(&kubectl(a, &["get", "secrets"], None)).contains("forbidden"));
    assert!(kubectl(b, &["get", "secret", "for-b"], None)
        .status
        .success());
    // Pods: read, not made; status written only for its own.
    assert!(kubectl(a, &["get", "pods"], None).status.success());
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: made-by-a}\nspec:\n  nodeName: a\n  containers: [{name: c, image: busybox}]\n";
    assert!(stderr(&kubectl(a, &["create", "-f", "-"], Some(pod)))
        .contains("can only create mirror pods"));
    // As the agent writes status: a PUT of the pod to `/status`.
    let put_status = |pod: &str| {
        let mut obj = c.json(&["get", "pod", pod]);
        obj["status"]["message"] = "hi".into();
        let url = format!("/api/v1/namespaces/default/pods/{pod}/status");
        kubectl(
            a,
            &["replace", "--raw", &url, "-f", "-"],
            Some(&obj.to_string()),
        )
    };
    let refused = stderr(&put_status("on-b"));
    assert!(
        refused.contains("can only update pod status for pods with spec.nodeName set to itself"),
        "{refused}"
    );
    let own = put_status("on-a");
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    // Once its pod is gone, the Secret is out of reach again.
    c.ok(&["delete", "pod", "on-a", "--grace-period=0", "--force"]);
    wait_for("node a to lose the Secret", LIMIT, || {
        (!kubectl(a, &["get", "secret", "for-a"], None)
            .status
            .success())
        .then_some(())
    });
    // Leases: its own only.
    let lease = |name: &str| {
        format!("apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: {name}, namespace: kube-node-lease}}\nspec: {{holderIdentity: {name}}}\n")
    };
    assert!(kubectl(a, &["create", "-f", "-"], Some(&lease("a")))
        .status
        .success());
    let refused = stderr(&kubectl(a, &["create", "-f", "-"], Some(&lease("b"))));
    assert!(
        refused.contains("can only access node lease with the same name"),
        "{refused}"
    );
}

#[test]
fn other_requests_wait_for_kubectl_certificate_approve_or_deny() {
    let c = Cluster::start();
    let signer = "kubernetes.io/kube-apiserver-client";
    let (manifest, key) = csr("alice", "alice", &["devs"], signer);
    c.kubectl_stdin(&["create", "-f", "-"], &manifest);
    let (manifest, _) = csr("mallory", "mallory", &[], signer);
    c.kubectl_stdin(&["create", "-f", "-"], &manifest);
    let pending = c.ok(&["get", "csr"]);
    assert_eq!(pending.matches("Pending").count(), 2, "{pending}");
    c.ok(&["certificate", "approve", "alice"]);
    c.ok(&["certificate", "deny", "mallory"]);
    let cert = issued(&c, "alice");
    let alice = kubeconfig(&c, "alice", &cert, &key);
    let who = kubectl(
        &alice,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&who.stdout), "alice");
    assert!(
        stderr(&kubectl(&alice, &["get", "pods"], None)).contains(r#"User "alice" cannot list"#)
    );
    let denied = c.ok(&["get", "csr", "mallory"]);
    assert!(
        denied.contains("Denied") && !denied.contains("Issued"),
        "{denied}"
    );
    // A decision stays.
    assert!(c
        .fails(&["certificate", "approve", "mallory"])
        .contains("already Denied"));
    // Who may not approve, cannot: an `edit` user of a namespace.
    c.ok(&["create", "namespace", "team"]);
    c.ok(&["create", "serviceaccount", "dev", "-n", "team"]);
    c.ok(&[
        "create",
        "rolebinding",
        "dev-edit",
        "-n",
        "team",
        "--clusterrole=edit",
        "--serviceaccount=team:dev",
    ]);
    let (manifest, _) = csr("bob", "bob", &[], signer);
    c.kubectl_stdin(&["create", "-f", "-"], &manifest);
    let dev = c.ok(&["create", "token", "dev", "-n", "team"]);
    let out = c.kubectl_as(dev.trim(), &["certificate", "approve", "bob"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    assert!(c.ok(&["get", "csr", "bob"]).contains("Pending"));
}

/// A node whose certificate is four fifths through its life asks for the
/// next one with it (approved as `selfnodeclient`, no administrator
/// involved), keeps it in its data dir, and goes on with it.
#[test]
fn a_node_renews_its_certificate_before_it_expires() {
    let c = Cluster::start();
    let token = std::fs::read_to_string(c.dir.path().join("node-token")).unwrap();
    let tls = c.dir.path().join("tls");
    let read = |name: &str| std::fs::read_to_string(tls.join(name)).unwrap();
    let authority = skiff_core::certs::Authority::new(&read("ca.crt"), &read("ca.key")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // Valid for ten more minutes, past four fifths of its life.
    let (cert, key) = authority
        .issue_client("system:node:aged", &["system:nodes"], now - 3000, 3600)
        .unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let stored = agent_dir.path().join("pki/kubelet-client-current.pem");
    std::fs::create_dir_all(stored.parent().unwrap()).unwrap();
    std::fs::write(&stored, format!("{cert}{key}")).unwrap();
    let expiry = |pem: &str| {
        let der = rustls_pemfile::certs(&mut pem.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        let id = skiff_core::certs::identity(&der).unwrap();
        assert_eq!(id.name, "system:node:aged");
        id.not_after
    };
    let old_expiry = expiry(&cert);

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = runtime.block_on(async {
        let (client, _) =
            skiff_kubelet::join::client(&c.url(), token.trim(), agent_dir.path(), "aged")
                .await
                .unwrap();
        client
    });
    let renewed = wait_for("the node certificate to be renewed", LIMIT, || {
        let pem = std::fs::read_to_string(&stored).ok()?;
        let renewed = expiry(&pem);
        (renewed > old_expiry + 24 * 3600).then_some(renewed)
    });
    assert!(renewed > now + 300 * 24 * 3600, "a year's certificate");

    // The node asked with its own certificate, and the request was
    // approved for it as a renewal.
    let requests = c.json(&["get", "csr"]);
    let mine: Vec<&serde_json::Value> = requests["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["spec"]["username"] == "system:node:aged")
        .collect();
    assert_eq!(mine.len(), 1, "{requests}");
    let conditions = mine[0]["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions.iter().any(|c| c["type"] == "Approved"),
        "{conditions:?}"
    );

    // The client goes on, now with the renewed certificate: its own Node
    // is not there yet (404), which the node may ask about (not 403).
    runtime.block_on(async {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        match nodes.get("aged").await {
            Err(kube::Error::Api(e)) => assert_eq!(e.code, 404, "{e:?}"),
            other => panic!("expected 404, got {other:?}"),
        }
    });
}

/// A wrong node setting (upstream's kubelet flags) stops `skiff server`
/// and `skiff agent` with upstream's message before anything starts: no
/// data directory is made.
#[test]
fn wrong_node_settings_stop_the_server_and_the_agent_before_they_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let said = run(&[
        "server",
        "--data-dir",
        data,
        "--eviction-soft",
        "memory.available<1Gi",
    ]);
    assert!(
        said.contains(
            "grace period must be specified for the soft eviction threshold memory.available"
        ),
        "{said}"
    );
    let said = run(&[
        "server",
        "--data-dir",
        data,
        "--eviction-hard",
        "memory.free<1Gi",
    ]);
    assert!(
        said.contains("unsupported eviction signal memory.free"),
        "{said}"
    );
    let said = run(&[
        "agent",
        "--data-dir",
        data,
        "--server",
        "https://127.0.0.1:1",
        "--token",
        "t",
        "--kube-reserved",
        "pid=100",
    ]);
    assert!(said.contains("cannot reserve \"pid\" resource"), "{said}");
    assert!(!Path::new(data).exists(), "nothing started");
}
