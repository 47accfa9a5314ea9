//! Admission webhooks with the real kubectl: a validating webhook refuses
//! and warns, a mutating one patches, selectors pick the namespaces they
//! are for, and a webhook that cannot be reached fails closed or open as
//! its policy says. The webhooks are an HTTPS server of this test, on
//! 127.0.0.1.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde_json::{json, Value};
use support::{create, free_port, Cluster};

/// An HTTPS server answering reviews: `/validate` refuses objects
/// labelled `deny: "yes"` and warns about the others, `/observe` lets
/// everything through, `/mutate` labels them `mutated: "yes"` (with a
/// warning), `/move` moves them to `default`. It keeps every review it
/// was sent, with the path it was sent to.
struct Webhook {
    port: u16,
    ca: String,
    seen: Arc<Mutex<Vec<Value>>>,
}

fn answer(path: &str, review: &Value) -> Value {
    let request = &review["request"];
    let mut response = json!({"uid": request["uid"], "allowed": true});
    let labels = &request["object"]["metadata"]["labels"];
    if request["operation"] == "CONNECT" {
        let (command, kind) = (&request["object"]["command"], &request["kind"]["kind"]);
        let what = format!(
            "{kind} {command} in {}/{}",
            request["name"], request["subResource"]
        );
        response["allowed"] = json!(false);
        response["status"] = json!({"message": format!("no exec: {what}")});
        return json!({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response});
    }
    match path {
        "/validate" if labels["deny"] == "yes" => {
            response["allowed"] = json!(false);
            response["status"] =
                json!({"code": 403, "reason": "Forbidden", "message": "labelled deny"});
        }
        "/validate" => response["warnings"] = json!(["seen by the test webhook"]),
        "/observe" => {}
        _ => {
            let patch = match path {
                "/move" => {
                    json!([{"op": "replace", "path": "/metadata/namespace", "value": "default"}])
                }
                _ => json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]),
            };
            let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(encoded);
            response["warnings"] = json!(["patched by the test webhook"]);
        }
    }
    json!({"apiVersion": review["apiVersion"], "kind": "AdmissionReview", "response": response})
}

/// One HTTP/1.1 request on `stream`: its path and JSON body.
fn read_request(stream: &mut impl Read) -> Option<(String, Value)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })?
        .parse()
        .ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((
        path,
        serde_json::from_slice(&buf[head_end..head_end + length]).ok()?,
    ))
}

impl Webhook {
    fn start() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = cert.cert.pem();
        let chain = vec![cert.cert.der().clone()];
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(mut tcp) = tcp else { continue };
                let Ok(mut tls) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut stream = rustls::Stream::new(&mut tls, &mut tcp);
                let Some((path, review)) = read_request(&mut stream) else {
                    continue;
                };
                let body = answer(&path, &review).to_string();
                let mut review = review;
                review["path"] = json!(path);
                kept.lock().unwrap().push(review);
                let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = stream.write_all(reply.as_bytes());
                let _ = stream.flush();
                tls.send_close_notify();
                let _ = tls.complete_io(&mut tcp);
            }
        });
        Self { port, ca, seen }
    }

    fn ca_bundle(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.ca)
    }

    fn configuration(&self, kind: &str, name: &str, url: &str, policy: &str) -> String {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nwebhooks:\n- name: {name}\n  clientConfig: {{url: '{url}', caBundle: {}}}\n  rules: [{{operations: [CREATE, UPDATE], apiGroups: [''], apiVersions: [v1], resources: [configmaps]}}]\n  namespaceSelector: {{matchLabels: {{webhooks: 'on'}}}}\n  failurePolicy: {policy}\n  sideEffects: None\n  admissionReviewVersions: [v1]\n",
            self.ca_bundle()
        )
    }
}

fn configmap(ns: &str, name: &str, label: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{label}}}}}\ndata: {{a: b}}\n")
}

#[test]
fn webhooks_refuse_warn_and_patch_the_writes_they_select() {
    let c = Cluster::start();
    let hook = Webhook::start();
    c.ok(&["create", "namespace", "hooked"]);
    c.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", hook.port);
    let validating = "ValidatingWebhookConfiguration";
    create(
        &c,
        &hook.configuration(validating, "deny.skiff.test", &url("/validate"), "Fail"),
    );
    create(
        &c,
        &hook.configuration(validating, "observe.skiff.test", &url("/observe"), "Fail"),
    );
    create(
        &c,
        &hook.configuration(
            "MutatingWebhookConfiguration",
            "label.skiff.test",
            &url("/mutate"),
            "Fail",
        ),
    );
    let listed = c.ok(&["get", "validatingwebhookconfigurations"]);
    let deny = listed.lines().find(|l| l.starts_with("deny.skiff.test "));
    let webhooks = deny.and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(webhooks, Some("1"), "{listed}");

    // Refused with the webhook's words, in a namespace it selects only.
    let refused = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &configmap("hooked", "denied", "deny: 'yes'"),
    );
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(
        why.contains("admission webhook \"deny.skiff.test\" denied the request: labelled deny"),
        "{why}"
    );
    // Validating webhooks are all asked at once: the one after the
    // refusing one was asked too.
    let observed =
        hook.seen.lock().unwrap().iter().any(|r| {
            r["path"] == "/observe" && r["request"]["object"]["metadata"]["name"] == "denied"
        });
    assert!(observed, "the second validating webhook was not asked");
    create(&c, &configmap("default", "elsewhere", "deny: 'yes'"));
    let elsewhere = c.json(&["get", "configmap", "elsewhere"]);
    assert!(
        elsewhere["metadata"]["labels"]["mutated"].is_null(),
        "not selected"
    );

    // Let through with its warning, after the mutating webhook's patch,
    // which the validating one saw.
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &configmap("hooked", "passed", "app: x"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The mutating webhook's warning comes first, as its phase does.
    let warned = String::from_utf8_lossy(&out.stderr);
    let patched = warned.find("Warning: patched by the test webhook");
    let seen = warned.find("Warning: seen by the test webhook");
    assert!(patched.is_some() && patched < seen, "{warned}");
    let made = c.json(&["get", "configmap", "passed", "-n", "hooked"]);
    assert_eq!(made["metadata"]["labels"]["mutated"], "yes");
    let reviews = hook.seen.lock().unwrap().clone();
    let validated = reviews
        .iter()
        .rev()
        .find(|r| r["request"]["object"]["metadata"]["name"] == "passed")
        .unwrap();
    let request = &validated["request"];
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(request["namespace"], "hooked");
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(request["resource"]["resource"], "configmaps");
    assert!(request["userInfo"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g == "system:masters"));
    assert_eq!(request["object"]["metadata"]["labels"]["mutated"], "yes");

    // A webhook nobody answers: closed, refused; open, let through.
    let nowhere = format!("https://127.0.0.1:{}/", free_port());
    let down = hook.configuration(validating, "down.skiff.test", &nowhere, "Fail");
    create(&c, &down);
    let refused = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &configmap("hooked", "closed", "app: x"),
    );
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        why.contains("failed calling webhook \"down.skiff.test\""),
        "{why}"
    );
    c.ok(&[
        "patch",
        validating,
        "down.skiff.test",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]"#,
    ]);
    create(&c, &configmap("hooked", "open", "app: x"));
    // Configurations never go through webhooks: a broken one can go.
    c.ok(&["delete", validating, "down.skiff.test"]);

    // A patch may not move the object elsewhere.
    let mutating = "MutatingWebhookConfiguration";
    create(
        &c,
        &hook.configuration(mutating, "move.skiff.test", &url("/move"), "Fail"),
    );
    let moved = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &configmap("hooked", "moved", "app: x"),
    );
    let why = String::from_utf8_lossy(&moved.stderr);
    assert!(!moved.status.success());
    assert!(
        why.contains("\"move.skiff.test\" may not change metadata.namespace"),
        "{why}"
    );
    c.ok(&["delete", mutating, "move.skiff.test"]);

    // A pod's exec is a CONNECT a webhook may refuse.
    let exec = format!("apiVersion: admissionregistration.k8s.io/v1\nkind: {validating}\nmetadata: {{name: exec.skiff.test}}\nwebhooks:\n- name: exec.skiff.test\n  clientConfig: {{url: '{}', caBundle: {}}}\n  rules: [{{operations: [CONNECT], apiGroups: [''], apiVersions: [v1], resources: [pods/exec]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n", url("/validate"), hook.ca_bundle());
    create(&c, &exec);
    create(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: shell, namespace: hooked}\nspec:\n  containers: [{name: c, image: busybox}]\n");
    let out = c.kubectl(&["exec", "-n", "hooked", "shell", "--", "ls", "/"]);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        why.contains("admission webhook \"exec.skiff.test\" denied the request: no exec: \"PodExecOptions\" [\"ls\",\"/\"] in \"shell\"/\"exec\""),
        "{why}"
    );

    // An eviction's body need not name its namespace: the request's is
    // the one selected.
    let evict = format!("apiVersion: admissionregistration.k8s.io/v1\nkind: {validating}\nmetadata: {{name: evict.skiff.test}}\nwebhooks:\n- name: evict.skiff.test\n  clientConfig: {{url: '{}', caBundle: {}}}\n  rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods/eviction]}}]\n  namespaceSelector: {{matchLabels: {{webhooks: 'on'}}}}\n  sideEffects: None\n  admissionReviewVersions: [v1]\n", url("/validate"), hook.ca_bundle());
    create(&c, &evict);
    create(&c, "apiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: default}\nspec:\n  containers: [{name: c, image: busybox}]\n");
    for (ns, pod) in [("default", "other"), ("hooked", "shell")] {
        let url = format!("/api/v1/namespaces/{ns}/pods/{pod}/eviction");
        let body = format!(
            r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{pod}"}}}}"#
        );
        let out = c.kubectl_stdin(&["create", "--raw", &url, "-f", "-"], &body);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let evictions: Vec<Value> = hook
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["request"]["subResource"] == "eviction")
        .map(|r| r["request"].clone())
        .collect();
    assert_eq!(
        evictions.len(),
        1,
        "only the selected namespace's: {evictions:?}"
    );
    assert_eq!(evictions[0]["namespace"], "hooked");
    assert_eq!(evictions[0]["name"], "shell");
    assert_eq!(evictions[0]["kind"]["kind"], "Eviction");

    // Configurations are checked as upstream checks them.
    let plain = hook.configuration(validating, "plain.skiff.test", "http://127.0.0.1/", "Fail");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &plain);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("'https' is the only allowed URL scheme"),
        "{why}"
    );
    let cel = format!(
        "{}  matchConditions: [{{name: a, expression: 'object.x ==='}}]\n",
        hook.configuration(validating, "cel.skiff.test", &url("/validate"), "Fail")
    );
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &cel);
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("webhooks[0].matchConditions[0].expression: Invalid value: \"object.x ===\": compilation failed"),
        "{why}"
    );

    // A webhook whose match conditions do not all hold is not asked; one
    // whose conditions cannot be evaluated fails as its policy says. A
    // condition may ask the authorizer (here about an account with no
    // rights).
    c.ok(&["delete", validating, "deny.skiff.test"]);
    let conditional = format!(
        "{}  matchConditions: [{{name: unless-skipped, expression: \"!('skip' in object.metadata.labels)\"}}, {{name: nobody-may, expression: \"!authorizer.serviceAccount('hooked', 'nobody').group('').resource('configmaps').check('create').allowed()\"}}]\n",
        hook.configuration(validating, "conditional.skiff.test", &url("/validate"), "Fail")
    );
    create(&c, &conditional);
    create(
        &c,
        &configmap("hooked", "skipped", "deny: 'yes', skip: 'yes'"),
    );
    let asked = |name: &str| {
        let seen = hook.seen.lock().unwrap();
        seen.iter()
            .filter(|r| r["path"] == "/validate")
            .any(|r| r["request"]["object"]["metadata"]["name"] == name)
    };
    assert!(!asked("skipped"));
    let why = c.fails_stdin(&configmap("hooked", "caught", "deny: 'yes'"));
    assert!(
        why.contains(
            "admission webhook \"conditional.skiff.test\" denied the request: labelled deny"
        ),
        "{why}"
    );
    let broken = format!(
        "{}  matchConditions: [{{name: missing-field, expression: 'object.metadata.nothing == 1'}}]\n",
        hook.configuration(validating, "broken.skiff.test", &url("/validate"), "Fail")
    );
    create(&c, &broken);
    let why = c.fails_stdin(&configmap("hooked", "unevaluated", "skip: 'yes'"));
    assert!(
        why.contains("failed calling webhook \"broken.skiff.test\": failed evaluating match conditions: expression \"missing-field\" resulted in error"),
        "{why}"
    );
}

/// A webhook without a `caBundle` is trusted by the roots the server's
/// machine trusts (here `SSL_CERT_FILE`, naming the test's CA), as
/// upstream's; a webhook those roots do not vouch for fails.
#[test]
fn a_webhook_without_a_ca_bundle_is_checked_against_the_machines_roots() {
    let hook = Webhook::start();
    let mut c = Cluster::unstarted(false);
    let roots = c.dir.path().join("roots.pem");
    std::fs::write(&roots, &hook.ca).unwrap();
    c.env
        .push(("SSL_CERT_FILE".into(), roots.display().to_string()));
    c.spawn(&[]);
    c.ok(&["create", "namespace", "hooked"]);
    c.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    let url = format!("https://127.0.0.1:{}/validate", hook.port);
    let configuration = hook.configuration(
        "ValidatingWebhookConfiguration",
        "deny.skiff.test",
        &url,
        "Fail",
    );
    let bundle = format!(", caBundle: {}", hook.ca_bundle());
    assert!(configuration.contains(&bundle));
    create(&c, &configuration.replace(&bundle, ""));
    let why = c.fails_stdin(&configmap("hooked", "denied", "deny: 'yes'"));
    assert!(
        why.contains("admission webhook \"deny.skiff.test\" denied the request: labelled deny"),
        "{why}"
    );

    // Another server, trusting only an unrelated CA, cannot trust it.
    let other = rcgen::generate_simple_self_signed(vec!["elsewhere".to_owned()]).unwrap();
    let mut d = Cluster::unstarted(false);
    let roots = d.dir.path().join("roots.pem");
    std::fs::write(&roots, other.cert.pem()).unwrap();
    d.env
        .push(("SSL_CERT_FILE".into(), roots.display().to_string()));
    d.spawn(&[]);
    d.ok(&["create", "namespace", "hooked"]);
    d.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    create(&d, &configuration.replace(&bundle, ""));
    let why = d.fails_stdin(&configmap("hooked", "untrusted", "app: x"));
    assert!(
        why.contains("failed calling webhook \"deny.skiff.test\""),
        "{why}"
    );
}

/// A webhook whose rules name one version of a resource sees writes made
/// through another (`matchPolicy: Equivalent`, the default) converted to
/// the version it names: an event written through `events.k8s.io` reaches
/// a webhook for `v1` events as a `v1` event, and its patch comes back.
/// With `matchPolicy: Exact` it is not asked.
#[test]
fn an_equivalent_webhook_sees_the_write_in_its_own_version() {
    let c = Cluster::start();
    let hook = Webhook::start();
    c.ok(&["create", "namespace", "hooked"]);
    c.ok(&["label", "namespace", "hooked", "webhooks=on"]);
    let config = |kind: &str, name: &str, path: &str, policy: &str| {
        format!("apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}}}\nwebhooks:\n- name: {name}\n  clientConfig: {{url: 'https://127.0.0.1:{}{path}', caBundle: {}}}\n  rules: [{{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [events]}}]\n  namespaceSelector: {{matchLabels: {{webhooks: 'on'}}}}\n  matchPolicy: {policy}\n  sideEffects: None\n  admissionReviewVersions: [v1]\n", hook.port, hook.ca_bundle())
    };
    let validating = "ValidatingWebhookConfiguration";
    create(
        &c,
        &config(validating, "observe.skiff.test", "/observe", "Equivalent"),
    );
    create(
        &c,
        &config(validating, "exact.skiff.test", "/validate", "Exact"),
    );
    create(
        &c,
        &config(
            "MutatingWebhookConfiguration",
            "label.skiff.test",
            "/mutate",
            "Equivalent",
        ),
    );
    create(&c, "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: seen, namespace: hooked, labels: {deny: 'yes'}}\neventTime: \"2026-01-01T00:00:00.000000Z\"\nregarding: {kind: Pod, name: p, namespace: hooked}\nreportingController: example.com/ctl\nreportingInstance: ctl-1\naction: Acting\nreason: Acted\nnote: written through events.k8s.io\ntype: Normal\n");

    let reviews = hook.seen.lock().unwrap().clone();
    let observed: Vec<&Value> = reviews
        .iter()
        .filter(|r| r["path"] == "/observe")
        .map(|r| &r["request"])
        .collect();
    assert_eq!(observed.len(), 1, "{reviews:?}");
    let request = observed[0];
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "Event"})
    );
    assert_eq!(
        request["requestKind"],
        json!({"group": "events.k8s.io", "version": "v1", "kind": "Event"})
    );
    assert_eq!(request["resource"]["group"], "");
    assert_eq!(request["requestResource"]["group"], "events.k8s.io");
    assert_eq!(request["object"]["apiVersion"], "v1");
    assert_eq!(
        request["object"]["message"],
        "written through events.k8s.io"
    );
    // The mutating webhook's patch, made to the v1 event, came back.
    assert_eq!(request["object"]["metadata"]["labels"]["mutated"], "yes");
    let stored = c.json(&["get", "events.events.k8s.io", "seen", "-n", "hooked"]);
    assert_eq!(stored["metadata"]["labels"]["mutated"], "yes");
    assert_eq!(stored["note"], "written through events.k8s.io");
    // The exact one (which refuses `deny: yes`) was never asked.
    assert!(
        reviews.iter().all(|r| r["path"] != "/validate"),
        "{reviews:?}"
    );
}
