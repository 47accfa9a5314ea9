use serde_json::json;

use super::*;

fn widgets() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["name"],
                            "x-kubernetes-validations": [{"rule": "self.replicas <= self.maxReplicas", "message": "replicas must be at most maxReplicas"}],
                            "properties": {
                                "name": {"type": "string", "minLength": 3},
                                "replicas": {"type": "integer", "minimum": 0, "default": 1},
                                "maxReplicas": {"type": "integer", "default": 5},
                                "mode": {"type": "string", "enum": ["fast", "slow"]},
                                "port": {"x-kubernetes-int-or-string": true},
                                "tags": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"},
                                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        },
                        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}}
                    }
                }}
            }]
        }
    })
}

fn served_widgets() -> Served {
    served(&widgets())
}

/// The first version of definition `d`, served.
fn served(d: &Value) -> Served {
    let d = Definition::parse(d);
    let v = d.versions[0].clone();
    Served {
        group: d.group.clone(),
        storage_version: "v1".into(),
        rules: cel::Rules::of(&v.schema),
        version: v,
    }
}

fn messages(causes: &[crate::status::Cause]) -> Vec<String> {
    causes
        .iter()
        .map(|c| format!("{}: {}", c.field, c.message))
        .collect()
}

#[test]
fn a_good_definition_passes_and_a_bad_one_says_why() {
    assert_eq!(messages(&check(&widgets(), None)), Vec::<String>::new());
    let mut bad = widgets();
    bad["metadata"]["name"] = json!("gadgets.example.com");
    bad["spec"]["group"] = json!("nodot");
    bad["spec"]["versions"][0]["storage"] = json!(false);
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["name"] = json!({"minLength": 3});
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"][0]["rule"] = json!("self.replicas <=");
    bad["spec"]["conversion"] = json!({"strategy": "Webhook"});
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"][0]["messageExpression"] = json!("'too many' +");
    let got = messages(&check(&bad, None));
    let text = got.join("\n");
    assert!(
        text.contains(
            "spec.group: Invalid value: \"nodot\": should be a domain with at least one dot"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "spec.conversion.strategy: Unsupported value: \"Webhook\": supported values: \"None\""
        ),
        "{text}"
    );
    assert!(
        text.contains("messageExpression: Invalid value: \"'too many' +\": messageExpression compilation failed"),
        "{text}"
    );
    assert!(text.contains("metadata.name: Invalid value: \"gadgets.example.com\": must be spec.names.plural+\".\"+spec.group"), "{text}");
    assert!(
        text.contains("must have exactly one version marked as storage version"),
        "{text}"
    );
    assert!(
        text.contains("properties[spec].properties[name].type: Required value"),
        "{text}"
    );
    assert!(text.contains("x-kubernetes-validations[0].rule: Invalid value: \"self.replicas <=\": compilation failed"), "{text}");
}

#[test]
fn decoding_prunes_unknown_fields_and_defaulting_fills_in() {
    let s = served_widgets();
    let (mut obj, unknown) = s.decode(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"name": "abc", "bogus": 1, "free": {"anything": {"goes": true}}},
        "extra": "x"
    }));
    assert_eq!(unknown, vec!["spec.bogus".to_string(), "extra".to_string()]);
    assert_eq!(
        obj["spec"],
        json!({"name": "abc", "free": {"anything": {"goes": true}}})
    );
    structural::default(&mut obj, &s.version.schema);
    assert_eq!(
        obj["spec"],
        json!({"name": "abc", "replicas": 1, "maxReplicas": 5, "free": {"anything": {"goes": true}}})
    );
    assert_eq!(obj["metadata"]["name"], "w");
}

#[test]
fn validation_speaks_upstreams_words() {
    let s = served_widgets();
    let obj = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"name": "ab", "replicas": -1, "maxReplicas": 5, "mode": "medium", "port": true, "tags": ["a", "a"]}});
    let got = messages(&s.validate(&obj, None));
    assert_eq!(got, vec![
        "spec.name: Invalid value: \"ab\": spec.name in body should be at least 3 chars long".to_string(),
        "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0".to_string(),
        "spec.mode: Unsupported value: \"medium\": supported values: \"fast\", \"slow\"".to_string(),
        "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer,string: \"boolean\"".to_string(),
        "spec.tags[1]: Duplicate value: \"a\"".to_string(),
    ]);
    let missing = json!({"spec": {"replicas": 1, "maxReplicas": 5}});
    assert_eq!(
        messages(&s.validate(&missing, None)),
        vec!["spec.name: Required value".to_string()]
    );
}

#[test]
fn rules_run_with_self_and_their_message() {
    let s = served_widgets();
    let over = json!({"spec": {"name": "abc", "replicas": 7, "maxReplicas": 5}});
    assert_eq!(
        messages(&s.validate(&over, None)),
        vec!["spec: Invalid value: \"object\": replicas must be at most maxReplicas".to_string()]
    );
    let fine = json!({"spec": {"name": "abc", "replicas": 5, "maxReplicas": 5, "port": "http"}});
    assert!(s.validate(&fine, None).is_empty());
}

#[test]
fn transition_rules_see_the_stored_value_on_update_only() {
    let mut d = widgets();
    d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["name"]["x-kubernetes-validations"] =
        json!([{"rule": "self == oldSelf", "message": "name is immutable"}]);
    let s = served(&d);
    let new = json!({"spec": {"name": "abc", "replicas": 1, "maxReplicas": 5}});
    assert!(s.validate(&new, None).is_empty());
    let old = json!({"spec": {"name": "xyz", "replicas": 1, "maxReplicas": 5}});
    assert_eq!(
        messages(&s.validate(&new, Some(&old))),
        vec!["spec.name: Invalid value: \"string\": name is immutable".to_string()]
    );
    assert!(s.validate(&new, Some(&new)).is_empty());
}

#[test]
fn printer_columns_follow_paths_and_filters() {
    let obj = json!({"spec": {"replicas": 3, "items": [{"name": "a"}, {"name": "b"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "False"}]}});
    let col = |path: &str, kind: &str| Column {
        name: "x".into(),
        kind: kind.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.into(),
    };
    assert_eq!(
        columns::cell(&col(".spec.replicas", "integer"), &obj),
        json!(3)
    );
    assert_eq!(
        columns::cell(
            &col(".status.conditions[?(@.type==\"Ready\")].status", "string"),
            &obj
        ),
        json!("True")
    );
    assert_eq!(
        columns::cell(&col(".spec.items[*].name", "string"), &obj),
        json!("a,b")
    );
    assert_eq!(
        columns::cell(&col(".spec.items[1]['name']", "string"), &obj),
        json!("b")
    );
    assert_eq!(
        columns::cell(&col(".spec.missing", "string"), &obj),
        Value::Null
    );
    assert!(columns::Path::parse("spec.replicas").is_none());
}

#[test]
fn versions_sort_as_kubernetes_does() {
    let mut v = vec!["v1alpha1", "foo", "v2beta1", "v1", "v1beta2", "v2"];
    v.sort_by(|a, b| version_order(a, b));
    assert_eq!(v, vec!["v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]);
}

#[test]
fn rules_have_kubernetes_libraries_and_message_expressions() {
    let mut d = widgets();
    d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        ["sizes"] = json!({"type": "array", "items": {"type": "integer"}});
    d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["x-kubernetes-validations"] = json!([
        {"rule": "!has(self.sizes) || (self.sizes.isSorted() && self.sizes.sum() <= 10 && self.sizes.max() < 8 && self.sizes.min() >= 0)",
            "messageExpression": "'sizes of ' + self.name + ' do not fit'"},
        {"rule": "self.name.lowerAscii() == self.name && self.name.split('-').size() <= 2",
            "message": "lower case, one dash at most"},
        {"rule": "self.name.find('[0-9]+') == '' || self.name.findAll('[0-9]').size() < 3",
            "messageExpression": "1 + 1"},
    ]);
    let s = served(&d);
    let spec = |name: &str, sizes: Value| json!({"spec": {"name": name, "replicas": 1, "maxReplicas": 5, "sizes": sizes}});
    assert_eq!(
        messages(&s.validate(&spec("abc-d", json!([1, 2, 3])), None)),
        Vec::<String>::new()
    );
    assert_eq!(
        messages(&s.validate(&spec("abc", json!([3, 1])), None)),
        vec!["spec: Invalid value: \"object\": sizes of abc do not fit".to_string()]
    );
    assert_eq!(
        messages(&s.validate(&spec("Abc", json!([9])), None)),
        vec![
            "spec: Invalid value: \"object\": sizes of Abc do not fit".to_string(),
            "spec: Invalid value: \"object\": lower case, one dash at most".to_string(),
        ]
    );
    // A message expression that gives no string falls back to the rule.
    assert_eq!(
        messages(&s.validate(&spec("a123", json!([1])), None)),
        vec!["spec: Invalid value: \"object\": failed rule: self.name.find('[0-9]+') == '' || self.name.findAll('[0-9]').size() < 3".to_string()]
    );
}

/// `widgets()` with `spec.properties[name]` set to `schema`.
fn with_spec_field(name: &str, schema: Value) -> Value {
    let mut d = widgets();
    d["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        [name] = schema;
    d
}

#[test]
fn rule_costs_are_bounded_when_a_definition_is_written() {
    let at = "spec.versions[0].schema.openAPIV3Schema";
    let pairs = "self.all(t, self.exists(u, u.startsWith(t)))";
    // Unbounded strings in an unbounded list: priced as a 3 MiB request full of them.
    let d = with_spec_field(
        "names",
        json!({"type": "array", "items": {"type": "string"},
            "x-kubernetes-validations": [{"rule": pairs}]}),
    );
    let rule = format!("{at}.properties[spec].properties[names].x-kubernetes-validations[0].rule");
    let why = "(try simplifying the rule, or adding maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)";
    assert_eq!(
        messages(&check(&d, None)),
        vec![
            format!("{rule}: Forbidden: estimated rule cost exceeds budget by factor of more than 100x {why}"),
            format!("{rule}: Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"),
            format!("{at}: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of more than 100x {why}"),
        ]
    );
    // A definition stored before (under other estimates) stays updatable
    // while that schema is unchanged; a changed one is priced again.
    let mut labelled = d.clone();
    labelled["metadata"]["labels"] = json!({"team": "a"});
    assert_eq!(messages(&check(&labelled, Some(&d))), Vec::<String>::new());
    let mut other = d.clone();
    other["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["description"] = json!("changed");
    assert_eq!(check(&other, Some(&d)).len(), 3);
    // Bounds make the same rule cheap.
    let d = with_spec_field(
        "names",
        json!({"type": "array", "maxItems": 20, "items": {"type": "string", "maxLength": 64},
            "x-kubernetes-validations": [{"rule": pairs}]}),
    );
    assert_eq!(messages(&check(&d, None)), Vec::<String>::new());

    // A cheap rule on an item counts once per item the list can hold.
    let item_rule = |list: Value| {
        let mut list = list;
        list["items"] = json!({"type": "object", "properties": {"name": {"type": "string"}},
            "x-kubernetes-validations": [{"rule": "self.name.startsWith('a')"}]});
        check(&with_spec_field("members", list), None)
    };
    let refused = item_rule(json!({"type": "array"}));
    assert!(
        refused[0].message.starts_with(
            "Forbidden: estimated rule cost exceeds budget by factor of more than 100x"
        ),
        "{:?}",
        messages(&refused)
    );
    assert_eq!(
        refused[0].field,
        format!("{at}.properties[spec].properties[members].items.x-kubernetes-validations[0].rule")
    );
    assert!(item_rule(json!({"type": "array", "maxItems": 16})).is_empty());

    // Rules each within their own limit, over the schema's limit together.
    let rules: Vec<Value> = (0..11)
        .map(|i| json!({"rule": format!("self.all(t, t.startsWith('{i}'))")}))
        .collect();
    let d = with_spec_field(
        "labels",
        json!({"type": "array", "maxItems": 30, "items": {"type": "string"},
            "x-kubernetes-validations": rules}),
    );
    let said = messages(&check(&d, None));
    assert_eq!(said.len(), 5, "{said:?}");
    assert!(said[..4]
        .iter()
        .all(|m| m.ends_with("Forbidden: contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema")));
    assert!(said[4].starts_with(&format!(
        "{at}: Forbidden: x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of 1.0"
    )));
}

#[test]
fn rules_too_costly_for_one_object_stop_before_they_run() {
    // One rule: within the definition's limit, past one call's on a full list.
    let d = with_spec_field(
        "nums",
        json!({"type": "array", "maxItems": 900, "items": {"type": "integer"},
            "x-kubernetes-validations": [{"rule": "self.all(x, self.all(y, x + y != -1))"},
                {"rule": "size(self) < 2000"}]}),
    );
    assert_eq!(messages(&check(&d, None)), Vec::<String>::new());
    let s = served(&d);
    let spec = |nums: Vec<i64>| json!({"spec": {"name": "abc", "replicas": 1, "maxReplicas": 5, "nums": nums}});
    assert!(s.validate(&spec((0..100).collect()), None).is_empty());
    assert_eq!(
        messages(&s.validate(&spec((0..900).collect()), None)),
        vec!["spec.nums: Invalid value: \"array\": 'operation cancelled: actual cost limit exceeded': no further validation rules will be run due to call cost exceeds limit for rule: self.all(x, self.all(y, x + y != -1))".to_string()]
    );

    // Many rules, each cheap enough alone, past the object's budget together.
    let rules: Vec<Value> = (0..101)
        .map(|i| json!({"rule": format!("!self.contains('{i:03}')")}))
        .collect();
    let d = with_spec_field(
        "text",
        json!({"type": "string", "x-kubernetes-validations": rules}),
    );
    assert_eq!(messages(&check(&d, None)), Vec::<String>::new());
    let s = served(&d);
    let text = |len: usize| json!({"spec": {"name": "abc", "replicas": 1, "maxReplicas": 5, "text": "x".repeat(len)}});
    assert!(s.validate(&text(1000), None).is_empty());
    assert_eq!(
        messages(&s.validate(&text(1 << 20), None)),
        vec!["spec.text: Invalid value: \"string\": validation failed due to running out of cost budget, no further validation rules will be run".to_string()]
    );
}

#[test]
fn selectable_fields_are_simple_paths_to_scalars() {
    let mut d = widgets();
    d["spec"]["versions"][0]["selectableFields"] = json!([
        {"jsonPath": ".spec.mode"}, {"jsonPath": ".spec.replicas"}, {"jsonPath": ".spec.mode"},
        {"jsonPath": ".spec.tags"}, {"jsonPath": ".spec.colour"}, {"jsonPath": "spec.name"},
        {"jsonPath": ".spec.tags[0]"}, {"jsonPath": ""},
    ]);
    let at = "spec.versions[0].selectableFields";
    assert_eq!(
        messages(&check(&d, None)),
        vec![
            format!("{at}[2].jsonPath: Duplicate value: \".spec.mode\""),
            format!("{at}[3].jsonPath: Invalid value: \".spec.tags\": must point to a field of type string, boolean or integer. Enum string fields and strings with formats are allowed."),
            format!("{at}[4].jsonPath: Invalid value: \".spec.colour\": is an invalid path: does not refer to a valid field"),
            format!("{at}[5].jsonPath: Invalid value: \"spec.name\": is an invalid path: must start with '.'"),
            format!("{at}[6].jsonPath: Invalid value: \".spec.tags[0]\": is an invalid path: \"tags[0]\" is not a field name (array notation is not allowed)"),
            format!("{at}[7].jsonPath: Required value"),
        ]
    );
    let s = served(&{
        d["spec"]["versions"][0]["selectableFields"] = json!([{"jsonPath": ".spec.mode"}]);
        d
    });
    assert_eq!(s.version.selectable, ["spec.mode"]);
}

#[test]
fn admission_expressions_share_one_budget_and_see_their_variables() {
    let items: Vec<Value> = (0..1_200).map(|i| json!(format!("item-{i}"))).collect();
    let object = json!({"items": items, "name": "x"});
    let request = json!({"operation": "CREATE"});
    let values = [("object", &object), ("request", &request)];
    let program = |e: &str| cel::compile(e).unwrap();
    let mut activation = cel::Activation::new(&values);
    let xs = program("object.items");
    activation.with_variables([("xs", &xs)]);
    assert_eq!(
        activation.holds(&program("size(variables.xs) == 1200")),
        Ok(true)
    );
    assert_eq!(
        activation.string(&program("object.name + request.operation")),
        Ok(Some("xCREATE".to_owned()))
    );
    // Every pair of 1,200 items is beyond the budget, through a variable
    // as directly: the expression fails before it runs.
    let pairs = program("variables.xs.all(a, variables.xs.all(b, a == b || true))");
    let refused = activation.holds(&pairs).unwrap_err();
    assert!(refused.contains("actual cost limit exceeded"), "{refused}");
    // The budget is spent: even a cheap expression is refused after it,
    // and a new evaluation has its own.
    assert!(activation.holds(&program("object.name == 'x'")).is_err());
    let mut fresh = cel::Activation::new(&values);
    fresh.with_variables([("xs", &xs)]);
    assert_eq!(
        fresh.holds(&program("object.items.exists(i, i == 'item-3')")),
        Ok(true)
    );
}
