//! Fuzzing of what a client controls: request bodies in every encoding,
//! patches of every kind, label and field selectors, and the protobuf
//! encoding of what it stored. Each target mutates
//! valid seeds at random (truncations, flipped, inserted and repeated
//! bytes) and asserts that every input is answered with a 4xx error or a
//! result, never a panic or a hang. `SKIFF_FUZZ_ITERATIONS=N` sets the
//! inputs per target (3,000 by default; the long run takes 1,000,000).

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};
use skiff_core::selector::{FieldSelector, LabelSelector};

use super::body::{parse, typed};
use super::write::apply_patch;

fn iterations() -> usize {
    std::env::var("SKIFF_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000)
}

/// A seed with one to five random mutations.
fn mutated(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut input = seed.to_vec();
    for _ in 0..rng.random_range(1..6) {
        let at = rng.random_range(0..=input.len());
        match rng.random_range(0..4) {
            0 => input.truncate(at),
            1 if at < input.len() => input[at] = rng.random(),
            2 => {
                let mut extra = vec![0u8; rng.random_range(1..16)];
                rng.fill_bytes(&mut extra);
                input.splice(at..at, extra);
            }
            _ => {
                let copy = input[at..].to_vec();
                input.extend_from_slice(&copy);
            }
        }
    }
    input
}

/// An error a client caused: a 4xx Status.
fn refused(e: &skiff_core::ApiError, input: &[u8]) {
    assert!(
        (400..500).contains(&e.code),
        "{e:?} for {:?}",
        String::from_utf8_lossy(input)
    );
}

/// YAML's "billion laughs": nine levels of nine aliases each.
fn laughs() -> String {
    let mut doc = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..10 {
        let prev = format!("*a{}", level - 1);
        let items = [prev.as_str(); 9].join(", ");
        doc.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    doc
}

const POD: &[u8] = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i","ports":[{"containerPort":80}],"env":[{"name":"X","value":"1"}]}]}}"#;

/// Bodies are parsed, decoded strictly against the Pod schema and merged
/// as a strategic patch.
#[test]
fn hostile_bodies_get_errors_not_panics() {
    let mut rng = StdRng::seed_from_u64(2026);
    let yaml = b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: i\n    args: [a, b]\n";
    let seeds: [(&str, &[u8]); 3] = [
        ("application/json", POD),
        ("application/yaml", yaml),
        (
            "application/vnd.kubernetes.protobuf",
            b"k8s\0\x0a\x0c\x0a\x02v1\x12\x03Pod\x12\x04\x0a\x02\x0a\x00",
        ),
    ];
    let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
    let shape = skiff_core::schema::Root::of(pods);
    let current: Value = serde_json::from_slice(POD).unwrap();
    let check = |kind: &str, body: &[u8]| {
        let obj = match parse(body, kind) {
            Ok(obj) => obj,
            Err(e) => return refused(&e, body),
        };
        if let Err(e) = typed(pods, obj.clone(), Some("Strict")) {
            refused(&e, body);
        }
        if let Err(e) = skiff_core::strategic::patch(&current, &obj, shape.shape()) {
            refused(&e, body);
        }
    };
    let deep = |open: &str, n: usize| open.repeat(n).into_bytes();
    check("application/json", &deep("[", 100_000));
    check("application/json", &deep(r#"{"a":"#, 100_000));
    check("application/yaml", &deep("- ", 100_000));
    check("application/yaml", &deep("[", 100_000));
    check("application/yaml", b"a: &a [*a, *a, *a]");
    check("application/yaml", laughs().as_bytes());
    for i in 0..iterations() {
        let (kind, seed) = seeds[i % seeds.len()];
        check(kind, &mutated(&mut rng, seed));
    }
}

/// JSON, merge and strategic merge patches, mangled, against a Pod.
#[test]
fn hostile_patches_get_errors_not_panics() {
    let mut rng = StdRng::seed_from_u64(17);
    let pods = skiff_core::registry::lookup("", "v1", "pods").unwrap();
    let root = skiff_core::schema::Root::of(pods);
    let current: Value = serde_json::from_slice(POD).unwrap();
    let json_patch = json!([
        {"op": "add", "path": "/metadata/labels/x", "value": "y"},
        {"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/-"},
        {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
        {"op": "test", "path": "/spec/containers/0/name", "value": "c"},
        {"op": "replace", "path": "/spec/containers/0/ports/0/containerPort", "value": 81},
        {"op": "remove", "path": "/spec/containers/0/env/0"}
    ])
    .to_string();
    let strategic = json!({"metadata": {"labels": {"a": null}}, "spec": {
        "containers": [{"name": "c", "ports": [{"containerPort": 80, "$patch": "delete"}]}],
        "$setElementOrder/containers": [{"name": "c"}]}})
    .to_string();
    let seeds: [(&str, &[u8]); 3] = [
        ("application/json-patch+json", json_patch.as_bytes()),
        (
            "application/merge-patch+json",
            br#"{"metadata":{"labels":{"a":null,"n":"1"}},"spec":{"containers":[]}}"#,
        ),
        (
            "application/strategic-merge-patch+json",
            strategic.as_bytes(),
        ),
    ];
    for i in 0..iterations() {
        let (kind, seed) = seeds[i % seeds.len()];
        let input = mutated(&mut rng, seed);
        let Ok(patch) = serde_json::from_slice::<Value>(&input) else {
            continue;
        };
        if let Err(e) = apply_patch(kind, &current, &patch, root.shape()) {
            refused(&e, &input);
        }
    }
}

/// Label and field selectors, mangled, parsed and matched.
#[test]
fn hostile_selectors_get_errors_not_panics() {
    let mut rng = StdRng::seed_from_u64(5);
    let pod: Value = serde_json::from_slice(POD).unwrap();
    let labels = [
        "a=b,c!=d,e in (f,g),h notin (i),j,!k".as_bytes(),
        b"app.kubernetes.io/name==web,tier",
        b"x in (),y notin ( a , b ),z=",
    ];
    let fields = [
        "metadata.name=p,metadata.namespace!=kube-system".as_bytes(),
        b"spec.nodeName==,status.phase=Running",
    ];
    for i in 0..iterations() {
        let input = mutated(&mut rng, labels[i % labels.len()]);
        let text = String::from_utf8_lossy(&input);
        match LabelSelector::parse(&text) {
            Ok(s) => {
                s.matches_object(&pod);
            }
            Err(e) => refused(&e, &input),
        }
        let input = mutated(&mut rng, fields[i % fields.len()]);
        let text = String::from_utf8_lossy(&input);
        match FieldSelector::parse(&text) {
            Ok(s) => {
                s.matches(&pod);
            }
            Err(e) => refused(&e, &input),
        }
    }
}

/// Whatever JSON a reply holds, its protobuf form is refused or well
/// formed: the encoder never panics nor writes what a decoder cannot read.
#[test]
fn replies_encode_to_readable_protobuf_or_not_at_all() {
    let mut rng = StdRng::seed_from_u64(35);
    let mut encoded = 0;
    for _ in 0..iterations() {
        let input = mutated(&mut rng, POD);
        if let Ok(bytes) = skiff_core::protobuf::encode::transcode(&input) {
            encoded += 1;
            if let Err(e) = skiff_core::protobuf::decode(&bytes) {
                panic!("{e:?} for {:?}", String::from_utf8_lossy(&input));
            }
        }
    }
    assert!(encoded > 0, "some mutations leave a pod");
}
