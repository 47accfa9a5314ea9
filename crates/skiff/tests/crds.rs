//! CustomResourceDefinitions with the real kubectl: a definition becomes a
//! kind kubectl lists, explains, validates, applies server-side and
//! scales; deleting it deletes its objects.

mod support;

use std::time::Duration;

use support::{assert_success, create, wait_for, Cluster};

const DEFINITION: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    additionalPrinterColumns:
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Mode, type: string, jsonPath: .spec.mode}
    selectableFields:
    - {jsonPath: .spec.mode}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            description: What the widget should be.
            required: [name]
            x-kubernetes-validations:
            - {rule: "self.replicas <= self.maxReplicas", message: "replicas must be at most maxReplicas"}
            properties:
              name: {type: string, minLength: 3, description: The widget's own name.}
              replicas: {type: integer, minimum: 0, default: 1}
              maxReplicas: {type: integer, default: 5}
              mode: {type: string, enum: [fast, slow]}
              ports:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    port: {type: integer}
          status:
            type: object
            properties:
              replicas: {type: integer}
              phase: {type: string}
              conditions:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [type]
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
"#;

fn established(c: &Cluster) {
    wait_for(
        "the definition to be established",
        Duration::from_secs(10),
        || {
            let crd = c.json(&["get", "crd", "widgets.example.com"]);
            let conditions = crd["status"]["conditions"].as_array()?.clone();
            conditions
                .iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
                .then_some(())
        },
    );
}

/// Server-side apply through `/status`, as controllers report: the
/// applier owns the status fields it applied, in an entry that names the
/// subresource; what it stops applying goes; another manager's different
/// value conflicts; and an object that does not exist is not created.
#[test]
fn status_applied_server_side_is_owned_and_what_is_dropped_goes() {
    let c = Cluster::start();
    create(&c, DEFINITION);
    established(&c);
    create(
        &c,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {name: first}\n",
    );
    let apply_status = |manager: &str, name: &str, status: &str| {
        c.kubectl_stdin(
            &[
                "apply",
                "--server-side",
                "--subresource=status",
                &format!("--field-manager={manager}"),
                "-f",
                "-",
            ],
            &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: {name}}}\nstatus: {status}\n"),
        )
    };
    let both = "{replicas: 2, phase: Ready, conditions: [{type: Ready, status: 'True'}, {type: Synced, status: 'True'}]}";
    assert_success(&apply_status("ctl", "w1", both), "apply status");
    let w = c.json(&["get", "widget", "w1", "--show-managed-fields"]);
    let entries = w["metadata"]["managedFields"].as_array().unwrap();
    // kubectl renames the client-side applier's entry to `ctl` (its
    // upgrade to server-side apply); the status entry is another.
    let ctl = entries
        .iter()
        .find(|e| e["manager"] == "ctl" && e["subresource"] == "status")
        .unwrap_or_else(|| panic!("no status entry of ctl: {w}"));
    assert_eq!(ctl["operation"], "Apply");
    let owned = &ctl["fieldsV1"]["f:status"];
    assert!(
        owned.get("f:phase").is_some()
            && owned["f:conditions"]
                .get(r#"k:{"type":"Synced"}"#)
                .is_some(),
        "{ctl}"
    );
    assert!(ctl["fieldsV1"].get("f:spec").is_none(), "{ctl}");

    let one = "{replicas: 2, conditions: [{type: Ready, status: 'True'}]}";
    assert_success(&apply_status("ctl", "w1", one), "apply status again");
    let w = c.json(&["get", "widget", "w1"]);
    assert_eq!(
        w["status"],
        serde_json::json!({"replicas": 2, "conditions": [{"type": "Ready", "status": "True"}]})
    );
    assert_eq!(w["spec"]["name"], "first");

    let other = apply_status("other", "w1", "{replicas: 3}");
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(
        !other.status.success() && err.contains(".status.replicas"),
        "{err}"
    );

    let missing = apply_status("ctl", "w9", one);
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(
        !missing.status.success() && err.contains("not found"),
        "{err}"
    );
    let err = c.fails(&["get", "widget", "w9"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn a_definition_serves_a_kind_kubectl_lists_explains_validates_scales_and_deletes() {
    let c = Cluster::start();
    create(&c, DEFINITION);
    established(&c);
    create(
        &c,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {name: first, mode: fast}\n",
    );
    // Printer columns, short names, defaults.
    let table = c.ok(&["get", "wd"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REPLICAS", "MODE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["w1", "1", "fast"], "{table}");
    let w = c.json(&["get", "widget", "w1"]);
    assert_eq!(w["spec"]["maxReplicas"], 5);
    assert!(
        w.get("status").is_none(),
        "status is the status subresource's: {w}"
    );

    // kubectl explain reads the schema from OpenAPI v3.
    let explained = c.ok(&["explain", "widgets.spec"]);
    assert!(
        explained.contains("What the widget should be."),
        "{explained}"
    );
    assert!(explained.contains("The widget's own name."), "{explained}");

    // Schema and rule violations in upstream's words.
    let err = c.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"name":"ab","mode":"medium"}}"#,
    ]);
    assert!(
        err.contains("spec.name in body should be at least 3 chars long"),
        "{err}"
    );
    assert!(
        err.contains(r#"spec.mode: Unsupported value: "medium": supported values: "fast", "slow""#),
        "{err}"
    );
    let err = c.fails(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":9}}"#,
    ]);
    assert!(
        err.contains("replicas must be at most maxReplicas"),
        "{err}"
    );
    let err = c.fails_stdin("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w0}\nspec: {name: zero, colour: red}\n");
    assert!(err.contains(r#"unknown field "spec.colour""#), "{err}");

    // /scale with kubectl scale; the status subresource alone.
    c.ok(&["scale", "widget", "w1", "--replicas=3"]);
    let w = c.json(&["get", "widget", "w1", "--show-managed-fields"]);
    assert_eq!(w["spec"]["replicas"], 3);
    let scaled = w["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "scale")
        .unwrap_or_else(|| panic!("no entry of the scale: {w}"));
    assert_eq!(
        (&scaled["manager"], &scaled["fieldsV1"]),
        (
            &"kubectl".into(),
            &serde_json::json!({"f:spec": {"f:replicas": {}}})
        )
    );
    c.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2},"spec":{"replicas":0}}"#,
    ]);
    let w = c.json(&["get", "widget", "w1"]);
    assert_eq!(
        (
            w["status"]["replicas"].as_i64(),
            w["spec"]["replicas"].as_i64()
        ),
        (Some(2), Some(3))
    );
    let raw = c.ok(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets/w1/scale",
    ]);
    let scale: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        (
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["replicas"].as_i64()
        ),
        (Some(3), Some(2))
    );
    // A Scale applied server-side, as a client library sends it (kubectl
    // maps no resource to the kind Scale): the replicas conflict with
    // their owners unless forced, then are the applier's.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = c.https().build().unwrap();
    let scale_url = format!(
        "{}/apis/example.com/v1/namespaces/default/widgets/w1/scale",
        c.url()
    );
    let apply_scale = |force: bool| {
        runtime.block_on(async {
            let reply = client
                .patch(format!("{scale_url}?fieldManager=scaler&force={force}"))
                .bearer_auth(c.admin_token())
                .header("content-type", "application/apply-patch+yaml")
                .body(r#"{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{"name":"w1"},"spec":{"replicas":4}}"#)
                .send()
                .await
                .unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        })
    };
    let (code, clash) = apply_scale(false);
    assert!(
        code == 409 && clash.contains(".spec.replicas"),
        "{code} {clash}"
    );
    let (code, forced) = apply_scale(true);
    assert_eq!(code, 200, "{forced}");
    let forced: serde_json::Value = serde_json::from_str(&forced).unwrap();
    assert_eq!(
        (&forced["kind"], &forced["spec"]["replicas"]),
        (&"Scale".into(), &4.into())
    );
    let w = c.json(&["get", "widget", "w1", "--show-managed-fields"]);
    assert_eq!(w["spec"]["replicas"], 4);
    let entries = w["metadata"]["managedFields"].as_array().unwrap();
    let scaler = entries.iter().find(|e| e["manager"] == "scaler");
    assert_eq!(
        scaler.map(|e| (&e["operation"], &e["subresource"], &e["fieldsV1"])),
        Some((
            &"Apply".into(),
            &"scale".into(),
            &serde_json::json!({"f:spec": {"f:replicas": {}}})
        )),
        "{w}"
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["manager"] != "scaler")
            .all(|e| e["fieldsV1"]["f:spec"].get("f:replicas").is_none()),
        "{w}"
    );

    // A Scale written with PUT is read as upstream reads it: through its
    // typed struct, for the object the URL names.
    let put_scale = |query: &str, body: &str| {
        runtime.block_on(async {
            let reply = client
                .put(format!("{scale_url}{query}"))
                .bearer_auth(c.admin_token())
                .header("content-type", "application/json")
                .body(body.to_owned())
                .send()
                .await
                .unwrap();
            let warning = reply
                .headers()
                .get("warning")
                .map(|w| w.to_str().unwrap().to_owned());
            (
                reply.status().as_u16(),
                reply.text().await.unwrap(),
                warning,
            )
        })
    };
    let scale_with = |meta: &str, spec: &str| {
        format!(
            r#"{{"apiVersion":"autoscaling/v1","kind":"Scale","metadata":{meta},"spec":{spec}}}"#
        )
    };
    let (code, text, _) = put_scale("", &scale_with(r#"{"name":"w2"}"#, r#"{"replicas":1}"#));
    assert!(
        code == 400
            && text.contains("the name of the object (w2) does not match the name on the URL (w1)"),
        "{code} {text}"
    );
    let (code, text, _) = put_scale(
        "",
        &scale_with(r#"{"name":"w1","uid":"other"}"#, r#"{"replicas":1}"#),
    );
    assert!(
        code == 409 && text.contains("Precondition failed: UID in precondition: other"),
        "{code} {text}"
    );
    let misspelt = scale_with(r#"{"name":"w1"}"#, r#"{"replicas":5,"replica":1}"#);
    let (code, text, _) = put_scale("?fieldValidation=Strict", &misspelt);
    assert!(
        code == 400 && text.contains(r#"strict decoding error: unknown field \"spec.replica\""#),
        "{code} {text}"
    );
    let (code, text, warning) = put_scale("", &misspelt);
    assert_eq!(code, 200, "{text}");
    assert!(warning.is_some_and(|w| w.contains("spec.replica")));
    assert_eq!(c.json(&["get", "widget", "w1"])["spec"]["replicas"], 5);

    // Server-side apply: ownership of what was applied, a conflict for another manager.
    let applied = "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {name: second, mode: slow}\n";
    let out = c.kubectl_stdin(&["apply", "--server-side", "-f", "-"], applied);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w2 = c.json(&["get", "widget", "w2", "--show-managed-fields"]);
    let owned = &w2["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"];
    assert!(
        owned.get("f:mode").is_some() && owned.get("f:maxReplicas").is_none(),
        "{w2}"
    );
    let other = c.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=other", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {name: second, mode: fast}\n",
    );
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && err.contains("conflict"), "{err}");

    // Selectable fields: lists (and watches) select on them, on no others.
    let slow = c.ok(&[
        "get",
        "widgets",
        "--field-selector=spec.mode=slow",
        "-o",
        "name",
    ]);
    assert_eq!(slow.trim(), "widget.example.com/w2");
    let fast = c.ok(&[
        "get",
        "widgets",
        "--field-selector=spec.mode!=slow",
        "-o",
        "name",
    ]);
    assert_eq!(fast.trim(), "widget.example.com/w1");
    let err = c.fails(&["get", "widgets", "--field-selector=spec.name=second"]);
    assert!(
        err.contains("field label not supported: spec.name"),
        "{err}"
    );

    // A list the schema keys by name merges per entry between managers:
    // each owns its own entry and takes away only that.
    let ports = |manager: &str, ports: &str| {
        let out = c.kubectl_stdin(
            &["apply", "--server-side", &format!("--field-manager={manager}"), "-f", "-"],
            &format!("apiVersion: example.com/v1\nkind: Widget\nmetadata: {{name: w3}}\nspec: {{name: third, ports: [{ports}]}}\n"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let w3 = c.json(&["get", "widget", "w3"]);
        let names: Vec<String> = w3["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}={}", p["name"].as_str().unwrap(), p["port"]))
            .collect();
        names
    };
    assert_eq!(ports("a", "{name: a, port: 1}"), ["a=1"]);
    assert_eq!(ports("b", "{name: b, port: 2}"), ["a=1", "b=2"]);
    assert_eq!(ports("a", "{name: a, port: 3}"), ["a=3", "b=2"]);
    assert_eq!(ports("b", ""), ["a=3"]);
    let clash = c.kubectl_stdin(
        &["apply", "--server-side", "--field-manager=b", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3}\nspec: {name: third, ports: [{name: a, port: 9}]}\n",
    );
    let err = String::from_utf8_lossy(&clash.stderr);
    assert!(
        !clash.status.success() && err.contains(".spec.ports[name=\"a\"].port"),
        "{err}"
    );

    // Deleting the definition deletes its objects, then the kind is gone.
    c.ok(&["delete", "crd", "widgets.example.com", "--timeout=30s"]);
    let err = c.fails(&["get", "widgets.example.com"]);
    assert!(
        err.contains("the server doesn't have a resource type"),
        "{err}"
    );
    create(&c, DEFINITION);
    established(&c);
    let listed = c.json(&["get", "widgets"]);
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
}

#[test]
fn conflicting_and_invalid_definitions_are_refused_or_not_established() {
    let c = Cluster::start();
    let bad = DEFINITION
        .replace("name: widgets.example.com", "name: gadgets.example.com")
        .replace("storage: true", "storage: false");
    let err = c.fails_stdin(&bad);
    assert!(err.contains(r#"metadata.name: Invalid value: "gadgets.example.com": must be spec.names.plural+"."+spec.group"#), "{err}");
    assert!(
        err.contains("must have exactly one version marked as storage version"),
        "{err}"
    );
    // A definition may not take a built-in resource's names.
    let clash = DEFINITION
        .replace("widgets.example.com", "deployments.apps")
        .replace("group: example.com", "group: apps")
        .replace("plural: widgets", "plural: deployments");
    let err = c.fails_stdin(&clash);
    assert!(
        err.contains("should be a domain with at least one dot"),
        "{err}"
    );
    let same_kind = DEFINITION
        .replace("widgets", "gizmos")
        .replace("shortNames: [wd]", "shortNames: [gz]");
    create(&c, DEFINITION);
    established(&c);
    create(&c, &same_kind);
    let crd = wait_for(
        "NamesAccepted to be decided",
        Duration::from_secs(10),
        || {
            let crd = c.json(&["get", "crd", "gizmos.example.com"]);
            crd["status"]["conditions"]
                .as_array()
                .is_some()
                .then_some(crd)
        },
    );
    let names = crd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "NamesAccepted")
        .cloned()
        .unwrap();
    assert_eq!(names["status"], "False", "{crd}");
    assert!(
        names["message"]
            .as_str()
            .unwrap()
            .contains("\"Widget\" is already in use"),
        "{crd}"
    );
}

#[test]
fn served_versions_share_one_store_with_none_conversion() {
    let c = Cluster::start();
    let two = DEFINITION.replace(
        "  versions:\n  - name: v1\n    served: true\n    storage: true\n",
        "  versions:\n  - name: v1beta1\n    served: true\n    storage: false\n    schema:\n      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}\n  - name: v1\n    served: true\n    storage: true\n",
    );
    assert_ne!(two, DEFINITION, "the second version was added");
    create(&c, &two);
    established(&c);
    create(
        &c,
        "apiVersion: example.com/v1beta1\nkind: Widget\nmetadata: {name: old}\nspec: {name: older}\n",
    );
    let v1 = c.json(&["get", "widgets.v1.example.com", "old"]);
    assert_eq!(v1["apiVersion"], "example.com/v1", "{v1}");
    let beta = c.json(&["get", "widgets.v1beta1.example.com", "old"]);
    assert_eq!(beta["apiVersion"], "example.com/v1beta1", "{beta}");
    assert_eq!(beta["spec"]["name"], "older");
    // A patch through either version reaches the one object.
    c.ok(&[
        "patch",
        "widgets.v1beta1.example.com",
        "old",
        "--type=merge",
        "-p",
        r#"{"spec":{"mode":"slow"}}"#,
    ]);
    assert_eq!(
        c.json(&["get", "widgets.v1.example.com", "old"])["spec"]["mode"],
        "slow"
    );
    let listed = c.json(&["get", "widgets.v1beta1.example.com"]);
    assert_eq!(
        listed["items"][0]["apiVersion"], "example.com/v1beta1",
        "{listed}"
    );
}

/// A budget's percentage over pods that a custom resource controls is
/// taken of that resource's scale, found through the definitions the
/// controller manager watches.
#[test]
fn a_budget_over_pods_of_a_custom_resource_counts_its_scale() {
    let c = Cluster::start();
    create(&c, DEFINITION);
    established(&c);
    create(
        &c,
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {name: second, replicas: 4, maxReplicas: 8}\n",
    );
    let uid = c.json(&["get", "widget", "w2"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    for name in ["wp-1", "wp-2"] {
        create(&c, &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: widget}}\n  ownerReferences:\n  - {{apiVersion: example.com/v1, kind: Widget, name: w2, uid: {uid}, controller: true}}\nspec:\n  containers:\n  - {{name: main, image: busybox}}\n"));
    }
    c.ok(&[
        "create",
        "pdb",
        "widgets",
        "--selector=app=widget",
        "--max-unavailable=50%",
    ]);
    let status = wait_for("the budget's counts", Duration::from_secs(30), || {
        let s = c.json(&["get", "pdb", "widgets"])["status"].clone();
        s["expectedPods"]
            .as_i64()
            .is_some_and(|n| n > 0)
            .then_some(s)
    });
    // 4 wanted by the widget's scale, half of them needed.
    assert_eq!(
        (
            status["expectedPods"].as_i64(),
            status["desiredHealthy"].as_i64()
        ),
        (Some(4), Some(2)),
        "{status}"
    );
}
