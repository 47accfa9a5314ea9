//! ValidatingAdmissionPolicies with the real kubectl: a binding warns,
//! refuses or audits as its actions say, reads its parameters, and a
//! policy that cannot be evaluated fails closed or open as it says.

mod support;

use serde_json::Value;
use std::time::Duration;

use support::{create, wait_for, Cluster};

const MAX_REPLICAS: &str = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: max-replicas.example.com}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [apps], apiVersions: [v1], operations: [CREATE, UPDATE], resources: [deployments]}
  validations:
  - expression: object.spec.replicas <= 5
";

fn binding(actions: &str) -> String {
    format!(
        "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: max-replicas-binding.example.com}}
spec:
  policyName: max-replicas.example.com
  validationActions: {actions}
  matchResources:
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: default}}
"
    )
}

#[test]
fn a_binding_warns_or_refuses_as_its_actions_say() {
    let c = Cluster::start();
    create(&c, MAX_REPLICAS);
    create(&c, &binding("[Warn]"));
    let listed = c.ok(&["get", "validatingadmissionpolicies"]);
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "VALIDATIONS", "PARAMKIND", "AGE"],
        "{listed}"
    );
    assert!(
        listed.contains("max-replicas.example.com   1             <unset>"),
        "{listed}"
    );
    let bindings = c.ok(&["get", "validatingadmissionpolicybindings"]);
    assert!(
        bindings.contains("max-replicas.example.com   <unset>"),
        "{bindings}"
    );

    let warned = c.kubectl(&["create", "deploy", "wide", "--image=x", "--replicas=10"]);
    assert!(warned.status.success());
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'max-replicas.example.com' with binding 'max-replicas-binding.example.com': failed expression: object.spec.replicas <= 5"),
        "{stderr}"
    );

    c.ok(&[
        "patch",
        "validatingadmissionpolicybinding",
        "max-replicas-binding.example.com",
        "--type=merge",
        "-p",
        r#"{"spec":{"validationActions":["Deny"]}}"#,
    ]);
    let refused = c.fails(&["create", "deploy", "wider", "--image=x", "--replicas=10"]);
    assert!(
        refused.contains(r#"deployments.apps "wider" is forbidden: ValidatingAdmissionPolicy 'max-replicas.example.com' with binding 'max-replicas-binding.example.com' denied request: failed expression: object.spec.replicas <= 5"#),
        "{refused}"
    );
    // An update is matched too; the Status is upstream's: 422 Invalid.
    // (A scale is `deployments/scale`, which the rule does not name.)
    let scaled = c.kubectl(&[
        "patch",
        "deploy",
        "wide",
        "-p",
        r#"{"spec":{"replicas":11}}"#,
        "-v=6",
    ]);
    assert!(!scaled.status.success());
    let log = String::from_utf8_lossy(&scaled.stderr);
    assert!(log.contains("422 Unprocessable Entity"), "{log}");
    let raw = c.kubectl(&[
        "get",
        "--raw",
        "/apis/apps/v1/namespaces/default/deployments/wide",
    ]);
    let stored: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        stored["spec"]["replicas"], 10,
        "the refused update is not stored"
    );
    c.ok(&["create", "deploy", "small", "--image=x", "--replicas=3"]);
    // Namespaces the binding does not select are not checked.
    c.ok(&["create", "namespace", "other"]);
    c.ok(&[
        "create",
        "deploy",
        "wide",
        "-n",
        "other",
        "--image=x",
        "--replicas=10",
    ]);

    // A warning said before a refusal reaches the client with it: a
    // second binding (first by name) only warns.
    create(
        &c,
        "apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: a-warning.example.com}
spec:
  policyName: max-replicas.example.com
  validationActions: [Warn]
",
    );
    let out = c.kubectl(&["create", "deploy", "widest", "--image=x", "--replicas=12"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'max-replicas.example.com' with binding 'a-warning.example.com'"),
        "{stderr}"
    );
    assert!(stderr.contains("denied request"), "{stderr}");
}

const PARAMETERS: &str = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: limits.example.com}
spec:
  failurePolicy: Fail
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE, DELETE], resources: [configmaps]}
  matchConditions:
  - name: not-skipped
    expression: \"request.operation == 'DELETE' || !has(object.metadata.labels) || !('skip' in object.metadata.labels)\"
  variables:
  - name: size
    expression: \"has(object.data) ? size(object.data) : 0\"
  validations:
  - expression: request.operation == 'DELETE' || variables.size <= int(params.data.most)
    messageExpression: \"'at most ' + params.data.most + ' keys in ' + namespaceObject.metadata.name + ', not ' + string(variables.size)\"
    reason: Forbidden
  - expression: request.operation != 'DELETE' || !has(oldObject.metadata.labels) || oldObject.metadata.labels['keep'] != 'true'
    message: kept objects stay
  auditAnnotations:
  - key: size
    valueExpression: \"request.operation == 'DELETE' ? null : string(variables.size)\"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: limits-binding.example.com}
spec:
  policyName: limits.example.com
  validationActions: [Deny, Audit]
  paramRef: {name: limits, namespace: params, parameterNotFoundAction: Deny}
  matchResources:
    namespaceSelector:
      matchLabels: {kubernetes.io/metadata.name: default}
";

#[test]
fn a_binding_reads_its_parameters_and_variables() {
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("audit.log");
    let c = Cluster::start_with_flags(&["--audit-log-path", log.to_str().unwrap()]);
    create(&c, PARAMETERS);
    // No parameters yet, so the binding refuses
    // (`parameterNotFoundAction: Deny`).
    let missing = c.fails(&["create", "configmap", "one", "--from-literal=a=1"]);
    assert!(
        missing.contains("failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction"),
        "{missing}"
    );
    c.ok(&["create", "namespace", "params"]);
    c.ok(&[
        "create",
        "configmap",
        "limits",
        "-n",
        "params",
        "--from-literal=most=2",
    ]);
    c.ok(&[
        "create",
        "configmap",
        "two",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    let raw = c.kubectl(&[
        "create",
        "configmap",
        "three",
        "--from-literal=a=1",
        "--from-literal=b=2",
        "--from-literal=c=3",
        "-v=6",
    ]);
    let stderr = String::from_utf8_lossy(&raw.stderr);
    assert!(
        stderr.contains("configmaps \"three\" is forbidden: ValidatingAdmissionPolicy 'limits.example.com' with binding 'limits-binding.example.com' denied request: at most 2 keys in default, not 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("403 Forbidden"),
        "reason Forbidden is a 403: {stderr}"
    );
    // What the match conditions leave out is not checked.
    let skipped = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped, labels: {skip: 'yes'}}\ndata: {a: '1', b: '2', c: '3'}\n";
    create(&c, skipped);

    // A deletion sees the object as `oldObject`.
    c.ok(&["label", "configmap", "two", "keep=true"]);
    let kept = c.fails(&["delete", "configmap", "two"]);
    assert!(kept.contains("denied request: kept objects stay"), "{kept}");

    // The audit event carries the policy's annotation and, for the refusal,
    // the failure (the `Audit` action).
    let creations = |code: u64| -> Vec<Value> {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let events = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok());
        events
            .filter(|e| {
                e["verb"] == "create"
                    && e["objectRef"]["resource"] == "configmaps"
                    && e["objectRef"]["namespace"] == "default"
                    && e["responseStatus"]["code"] == code
            })
            .collect()
    };
    let refusals = wait_for("the refusal audited", Duration::from_secs(10), || {
        let found = creations(403);
        (!found.is_empty()).then_some(found)
    });
    let created = creations(201);
    let sizes: Vec<&Value> = created
        .iter()
        .map(|e| &e["annotations"]["limits.example.com/size"])
        .collect();
    assert!(sizes.contains(&&Value::from("2")), "{created:#?}");
    let three = &refusals[0];
    let failure: Value = serde_json::from_str(
        three["annotations"]["validation.policy.admission.k8s.io/validation_failure"]
            .as_str()
            .unwrap_or_else(|| panic!("no failure annotation in {three:#}")),
    )
    .unwrap();
    assert_eq!(failure[0]["policy"], "limits.example.com", "{failure}");
    assert_eq!(failure[0]["expressionIndex"], 0, "{failure}");
    assert_eq!(
        failure[0]["validationActions"],
        serde_json::json!(["Deny", "Audit"])
    );
}

#[test]
fn a_policy_that_cannot_be_evaluated_fails_as_it_says() {
    let c = Cluster::start();
    let policy = |failure: &str| {
        format!(
            "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: broken.example.com}}
spec:
  failurePolicy: {failure}
  matchConstraints:
    resourceRules:
    - {{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [secrets]}}
  validations:
  - expression: object.data.missing == 'x'
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: broken-binding.example.com}}
spec:
  policyName: broken.example.com
  validationActions: [Deny]
"
        )
    };
    create(&c, &policy("Fail"));
    let refused = c.fails(&["create", "secret", "generic", "s", "--from-literal=a=b"]);
    assert!(
        refused
            .contains("denied request: expression 'object.data.missing == 'x'' resulted in error"),
        "{refused}"
    );
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &policy("Ignore"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["create", "secret", "generic", "s", "--from-literal=a=b"]);
}

#[test]
fn bad_policies_and_bindings_are_refused() {
    let c = Cluster::start();
    let policy = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: bad.example.com}
spec:
  failurePolicy: Sometimes
  matchConstraints: {resourceRules: []}
  validations:
  - {expression: 'object.x ===', reason: Teapot}
";
    let out = c.kubectl_stdin(&["create", "-f", "-"], policy);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for field in [
        "spec.failurePolicy: Unsupported value: \"Sometimes\"",
        "spec.matchConstraints.resourceRules: Required value",
        "spec.validations[0].expression: Invalid value",
        "spec.validations[0].reason: Unsupported value: \"Teapot\"",
    ] {
        assert!(err.contains(field), "{field} in {err}");
    }
    let binding = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: bad-binding.example.com}
spec:
  validationActions: [Deny, Warn]
";
    let out = c.kubectl_stdin(&["create", "-f", "-"], binding);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.policyName: Required value"), "{err}");
    assert!(err.contains("must not contain both Deny and Warn"), "{err}");
}

/// A binding whose parameter names no namespace finds it in the
/// request's; where there is none, `Allow` lets the write pass.
#[test]
fn parameters_are_found_in_the_requests_namespace() {
    let c = Cluster::start();
    create(
        &c,
        "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: keys.example.com}
spec:
  paramKind: {apiVersion: v1, kind: ConfigMap}
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [secrets]}
  validations:
  - expression: size(object.data) <= int(params.data.most)
    messageExpression: \"'at most ' + params.data.most + ' keys'\"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: keys-binding.example.com}
spec:
  policyName: keys.example.com
  validationActions: [Deny]
  paramRef: {name: limits, parameterNotFoundAction: Allow}
",
    );
    for ns in ["team", "free"] {
        c.ok(&["create", "namespace", ns]);
    }
    c.ok(&[
        "create",
        "configmap",
        "limits",
        "-n",
        "team",
        "--from-literal=most=1",
    ]);
    let secret = |ns: &str| {
        c.kubectl(&[
            "create",
            "secret",
            "generic",
            "s",
            "-n",
            ns,
            "--from-literal=a=1",
            "--from-literal=b=2",
        ])
    };
    let refused = secret("team");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("denied request: at most 1 keys"), "{err}");
    let passed = secret("free");
    assert!(
        passed.status.success(),
        "{}",
        String::from_utf8_lossy(&passed.stderr)
    );
}

/// A policy's expressions ask the API server's authorizers through
/// `authorizer`: here only a user who may list the namespace's Secrets
/// may create its ConfigMaps.
#[test]
fn a_policy_asks_the_authorizer_about_the_requester() {
    let c = Cluster::start();
    let policy = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: secret-readers.example.com}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}
  validations:
  - expression: authorizer.group('').resource('secrets').namespace(request.namespace).check('list').allowed()
    message: only those who may list secrets
  - expression: \"!authorizer.serviceAccount('default', 'robot').group('').resource('configmaps').namespace('default').check('create').allowed()\"
    message: the robot may not
";
    create(&c, policy);
    let binding = "
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: secret-readers-binding.example.com}
spec:
  policyName: secret-readers.example.com
  validationActions: [Deny]
";
    create(&c, binding);
    c.ok(&[
        "create",
        "role",
        "cm-writer",
        "--verb=create",
        "--resource=configmaps",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "eve-cm",
        "--role=cm-writer",
        "--user=eve",
    ]);
    let refused = wait_for("the policy to refuse eve", Duration::from_secs(30), || {
        let out = c.kubectl(&["create", "configmap", "by-eve", "--as=eve"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        (!out.status.success() && err.contains("ValidatingAdmissionPolicy")).then_some(err)
    });
    assert!(
        refused.contains("denied request: only those who may list secrets"),
        "{refused}"
    );
    // The administrator may list them.
    c.ok(&["create", "configmap", "by-admin"]);
    c.ok(&[
        "create",
        "role",
        "secret-lister",
        "--verb=list",
        "--resource=secrets",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "eve-secrets",
        "--role=secret-lister",
        "--user=eve",
    ]);
    c.ok(&["create", "configmap", "by-eve", "--as=eve"]);
    // A service account named by the expression is asked about, not the
    // requester.
    c.ok(&["create", "serviceaccount", "robot"]);
    c.ok(&[
        "create",
        "rolebinding",
        "robot-cm",
        "--role=cm-writer",
        "--serviceaccount=default:robot",
    ]);
    let refused = c.fails(&["create", "configmap", "after-robot"]);
    assert!(
        refused.contains("denied request: the robot may not"),
        "{refused}"
    );
}
