//! Authorization with RBAC: ServiceAccounts bound to `view`, `edit` and
//! `admin` in one namespace and nothing in another; each allowed verb
//! works, each forbidden one gets 403 with upstream's message; `edit`
//! cannot manage RBAC; a ClusterRole labelled to aggregate into `view`
//! extends it.

mod support;

use std::time::Duration;

use support::{wait_for, Cluster};

const LIMIT: Duration = Duration::from_secs(20);

/// A token for ServiceAccount `name` in namespace `a`.
fn token(c: &Cluster, name: &str) -> String {
    c.ok(&["create", "serviceaccount", name, "-n", "a"]);
    c.ok(&["create", "token", name, "-n", "a"])
        .trim()
        .to_owned()
}

/// kubectl as the holder of `token`.
fn as_user(c: &Cluster, token: &str, args: &[&str]) -> std::process::Output {
    c.kubectl_as(token, args)
}

fn allowed(c: &Cluster, token: &str, args: &[&str]) {
    let out = wait_for(&format!("{args:?} to be allowed"), LIMIT, || {
        let out = as_user(c, token, args);
        out.status.success().then_some(out)
    });
    assert!(out.status.success());
}

fn forbidden(c: &Cluster, token: &str, args: &[&str]) -> String {
    let out = as_user(c, token, args);
    assert!(!out.status.success(), "{args:?} should be forbidden");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(said.contains("is forbidden: User"), "{args:?}: {said}");
    said
}

#[test]
fn roles_grant_what_they_say_in_their_namespace_only() {
    let c = Cluster::start_with_flags(&["--disable-scheduler"]);
    for ns in ["a", "b"] {
        c.ok(&["create", "namespace", ns]);
        c.ok(&["create", "configmap", "cfg", "-n", ns, "--from-literal=k=v"]);
        c.ok(&[
            "create",
            "secret",
            "generic",
            "sec",
            "-n",
            ns,
            "--from-literal=k=v",
        ]);
    }
    let (alice, bob, carol) = (token(&c, "alice"), token(&c, "bob"), token(&c, "carol"));
    for (user, role) in [("alice", "view"), ("bob", "edit"), ("carol", "admin")] {
        c.ok(&[
            "create",
            "rolebinding",
            user,
            "-n",
            "a",
            &format!("--clusterrole={role}"),
            &format!("--serviceaccount=a:{user}"),
        ]);
    }

    // Who am I, and what may I do?
    let who =
        String::from_utf8_lossy(&as_user(&c, &alice, &["auth", "whoami"]).stdout).into_owned();
    assert!(who.contains("system:serviceaccount:a:alice"), "{who}");
    let can = |token: &str, args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        String::from_utf8_lossy(&as_user(&c, token, &all).stdout)
            .trim()
            .to_owned()
    };
    wait_for("alice's binding", LIMIT, || {
        (can(&alice, &["list", "pods", "-n", "a"]) == "yes").then_some(())
    });
    assert_eq!(can(&alice, &["list", "secrets", "-n", "a"]), "no");
    assert_eq!(can(&bob, &["create", "deployments.apps", "-n", "a"]), "yes");
    assert_eq!(can(&bob, &["create", "deployments.apps", "-n", "b"]), "no");

    // view: reads, but not Secrets, and writes nothing.
    allowed(&c, &alice, &["get", "configmaps", "-n", "a"]);
    let said = forbidden(&c, &alice, &["get", "secrets", "-n", "a"]);
    assert!(
        said.contains(r#"User "system:serviceaccount:a:alice" cannot list resource "secrets" in API group "" in the namespace "a""#),
        "{said}"
    );
    forbidden(&c, &alice, &["create", "configmap", "new", "-n", "a"]);
    let said = forbidden(&c, &alice, &["get", "configmaps", "-n", "b"]);
    assert!(said.contains(r#"in the namespace "b""#), "{said}");
    forbidden(&c, &alice, &["get", "nodes"]);

    // What alice may do here, listed; and the reviews components ask.
    let list = as_user(&c, &alice, &["auth", "can-i", "--list", "-n", "a"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        listed.contains("configmaps") && !listed.contains("secrets"),
        "{listed}"
    );
    let review = |kind: &str, spec: &str| {
        let (group_version, plural) = match kind {
            "SubjectAccessReview" => ("authorization.k8s.io/v1", "subjectaccessreviews"),
            _ => ("authentication.k8s.io/v1", "tokenreviews"),
        };
        let manifest = format!(
            "{{\"apiVersion\": \"{group_version}\", \"kind\": \"{kind}\", \"spec\": {spec}}}"
        );
        let path = format!("/apis/{group_version}/{plural}");
        let out = c.kubectl_stdin(&["create", "--raw", &path, "-f", "-"], &manifest);
        support::assert_success(&out, kind);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let sar = |resource: &str| {
        review(
            "SubjectAccessReview",
            &format!(r#"{{"user": "system:serviceaccount:a:alice", "groups": ["system:serviceaccounts"], "resourceAttributes": {{"verb": "list", "resource": "{resource}", "namespace": "a"}}}}"#),
        )["status"]["allowed"]
            .clone()
    };
    assert_eq!(
        (sar("configmaps"), sar("secrets")),
        (serde_json::json!(true), serde_json::json!(false))
    );
    let tr = review("TokenReview", &format!(r#"{{"token": "{alice}"}}"#));
    assert_eq!(
        tr["status"]["user"]["username"], "system:serviceaccount:a:alice",
        "{tr}"
    );
    let bad = review("TokenReview", r#"{"token": "nonsense"}"#);
    assert_eq!(bad["status"]["authenticated"], false, "{bad}");

    // Impersonation: the admin acts as alice and has only her rights;
    // alice may not act as anyone.
    let as_alice = ["--as", "system:serviceaccount:a:alice"];
    let mut whoami = as_alice.to_vec();
    whoami.extend([
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]);
    assert_eq!(c.ok(&whoami), "system:serviceaccount:a:alice");
    let mut list = as_alice.to_vec();
    list.extend(["get", "configmaps", "-n", "a", "-o", "name"]);
    c.ok(&list);
    let mut secrets = as_alice.to_vec();
    secrets.extend(["get", "secrets", "-n", "a"]);
    let said = c.fails(&secrets);
    assert!(
        said.contains(r#"User "system:serviceaccount:a:alice" cannot list resource "secrets""#),
        "{said}"
    );
    let said = forbidden(
        &c,
        &alice,
        &[
            "get",
            "pods",
            "-n",
            "a",
            "--as",
            "carol",
            "--as-group",
            "devs",
        ],
    );
    assert!(
        said.contains(r#"User "system:serviceaccount:a:alice" cannot impersonate resource "users" in API group "" at the cluster scope"#),
        "{said}"
    );

    // edit: writes and reads Secrets, but manages no RBAC.
    allowed(&c, &bob, &["create", "configmap", "made", "-n", "a"]);
    allowed(&c, &bob, &["get", "secret", "sec", "-n", "a"]);
    allowed(&c, &bob, &["delete", "configmap", "made", "-n", "a"]);
    let bind_view = [
        "create",
        "rolebinding",
        "x",
        "-n",
        "a",
        "--clusterrole=view",
        "--user=someone",
    ];
    forbidden(&c, &bob, &bind_view);
    forbidden(&c, &bob, &["get", "secrets", "-n", "b"]);

    // admin: RBAC in its namespace.
    allowed(&c, &carol, &bind_view);
    forbidden(
        &c,
        &carol,
        &[
            "create",
            "clusterrolebinding",
            "y",
            "--clusterrole=view",
            "--user=someone",
        ],
    );

    // No escalation: admin in `a` may not bind what it does not hold, nor
    // write a role with more than it has.
    let said = String::from_utf8_lossy(
        &as_user(
            &c,
            &carol,
            &[
                "create",
                "rolebinding",
                "root",
                "-n",
                "a",
                "--clusterrole=cluster-admin",
                "--user=carol",
            ],
        )
        .stderr,
    )
    .into_owned();
    assert!(
        said.contains("attempting to grant RBAC permissions not currently held"),
        "{said}"
    );
    allowed(
        &c,
        &carol,
        &[
            "create",
            "role",
            "pod-reader",
            "-n",
            "a",
            "--verb=get",
            "--resource=pods",
        ],
    );
    let said = String::from_utf8_lossy(
        &as_user(
            &c,
            &carol,
            &[
                "create",
                "role",
                "node-reader",
                "-n",
                "a",
                "--verb=get",
                "--resource=nodes",
            ],
        )
        .stderr,
    )
    .into_owned();
    assert!(said.contains("not currently held"), "{said}");

    // A ClusterRole labelled to join `view` extends it.
    c.ok(&[
        "create",
        "clusterrole",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
    ]);
    c.ok(&[
        "label",
        "clusterrole",
        "secret-reader",
        "rbac.authorization.k8s.io/aggregate-to-view=true",
    ]);
    allowed(&c, &alice, &["get", "secrets", "-n", "a"]);
    forbidden(&c, &alice, &["get", "secrets", "-n", "b"]);

    // Bindings and roles are validated and defaulted as upstream's: a user
    // subject without its group gets it; a subject of a kind no one
    // authenticates as, or a rule granting nothing, is refused.
    let binding = |subject: &str| {
        format!(
            r#"{{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {{"name": "dave", "namespace": "a"}},
                "roleRef": {{"kind": "ClusterRole", "name": "view"}}, "subjects": [{subject}]}}"#
        )
    };
    let out = c.kubectl_stdin(
        &["apply", "-f", "-"],
        &binding(r#"{"kind": "User", "name": "dave"}"#),
    );
    support::assert_success(&out, "a binding without groups");
    let groups = "jsonpath={.roleRef.apiGroup} {.subjects[0].apiGroup}";
    assert_eq!(
        c.ok(&["get", "rolebinding", "dave", "-n", "a", "-o", groups]),
        "rbac.authorization.k8s.io rbac.authorization.k8s.io"
    );
    assert_eq!(
        c.ok(&["auth", "can-i", "list", "pods", "-n", "a", "--as", "dave"])
            .trim(),
        "yes"
    );
    let said = c.fails_stdin(&binding(r#"{"kind": "Robot", "name": "r2"}"#));
    assert!(
        said.contains(r#"subjects[0].kind: Unsupported value: "Robot": supported values: "ServiceAccount", "User", "Group""#),
        "{said}"
    );
    let said = c.fails_stdin(
        r#"{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "nothing", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["pods"]}]}"#,
    );
    assert!(
        said.contains("rules[0].verbs: Required value: verbs must contain at least one value"),
        "{said}"
    );

    // The admin (system:masters) may do anything; discovery works for all.
    c.ok(&["get", "secrets", "-A"]);
    allowed(&c, &alice, &["api-versions"]);

    // Without credentials: the anonymous user, allowed public information.
    let anonymous = |path: &str| {
        let ca = reqwest::Certificate::from_pem(&c.ca_pem()).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap();
        let url = format!("{}{path}", c.url());
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let reply = client.get(url).send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        })
    };
    assert_eq!(anonymous("/version").0, 200);
    let (code, said) = anonymous("/api/v1/namespaces/a/configmaps");
    assert_eq!(code, 403, "{said}");
    assert!(
        said.contains(r#"User \"system:anonymous\" cannot list"#),
        "{said}"
    );

    // A pod's token is for the account it runs as.
    c.ok(&["run", "stranger", "-n", "a", "--image=busybox"]);
    let refused = c.fails(&[
        "create",
        "token",
        "alice",
        "-n",
        "a",
        "--bound-object-kind=Pod",
        "--bound-object-name=stranger",
    ]);
    assert!(
        refused.contains("to pod running with different serviceaccount name"),
        "{refused}"
    );
    // A token whose account, or pod, is gone stops working.
    c.ok(&[
        "run",
        "holder",
        "-n",
        "a",
        "--image=busybox",
        r#"--overrides={"spec":{"serviceAccountName":"alice"}}"#,
    ]);
    let uid = c.ok(&[
        "get",
        "pod",
        "holder",
        "-n",
        "a",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    let bound = c.ok(&[
        "create",
        "token",
        "alice",
        "-n",
        "a",
        "--bound-object-kind=Pod",
        "--bound-object-name=holder",
        &format!("--bound-object-uid={uid}"),
    ]);
    allowed(&c, bound.trim(), &["get", "configmaps", "-n", "a"]);
    c.ok(&[
        "delete",
        "pod",
        "holder",
        "-n",
        "a",
        "--grace-period=0",
        "--force",
    ]);
    let out = as_user(&c, bound.trim(), &["get", "configmaps", "-n", "a"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "the pod is gone"
    );
    c.ok(&["delete", "serviceaccount", "alice", "-n", "a"]);
    let out = as_user(&c, &alice, &["get", "configmaps", "-n", "a"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "the account is gone"
    );
}
