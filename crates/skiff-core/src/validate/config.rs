//! ConfigMaps and Secrets, checked as upstream checks them: keys name
//! files, a Secret of a known type holds the keys its type promises, and
//! one marked `immutable` keeps its data and the mark for good (the node
//! agent may stop watching it). Their data may hold 1 MiB at most.

use base64::Engine;
use serde_json::Value;

use super::is_data_key;
use crate::status::Cause;

const KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// The most bytes a ConfigMap's or Secret's values may hold in all
/// (upstream's `MaxSecretSize`).
const MAX_DATA: usize = 1 << 20;

const IMMUTABLE_MSG: &str = "field is immutable when `immutable` is set";

fn entries(map: &Value) -> impl Iterator<Item = (&String, &Value)> {
    map.as_object().into_iter().flatten()
}

fn keys(map: &Value, at: &str, causes: &mut Vec<Cause>) {
    for (key, _) in entries(map) {
        if !is_data_key(key) {
            causes.push(Cause::invalid(format!("{at}[{key}]"), key, KEY_MSG));
        }
    }
}

/// The data `old` held fixed, if it was marked immutable: `immutable`
/// stays true and each of `fields` as it was.
fn kept(obj: &Value, old: Option<&Value>, fields: &[&str], causes: &mut Vec<Cause>) {
    let Some(old) = old.filter(|o| o["immutable"] == true) else {
        return;
    };
    if obj["immutable"] != true {
        causes.push(Cause::forbidden("immutable", IMMUTABLE_MSG));
    }
    for field in fields {
        let empty = |v: &Value| v.as_object().is_none_or(|m| m.is_empty());
        let same = obj[*field] == old[*field] || (empty(&obj[*field]) && empty(&old[*field]));
        if !same {
            causes.push(Cause::forbidden(*field, IMMUTABLE_MSG));
        }
    }
}

pub(super) fn config_map(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    keys(&obj["data"], "data", causes);
    keys(&obj["binaryData"], "binaryData", causes);
    for (key, _) in entries(&obj["data"]) {
        if !obj["binaryData"][key].is_null() {
            let why = "duplicate of key present in data";
            causes.push(Cause::invalid("binaryData", key, why));
        }
    }
    let text: usize = entries(&obj["data"]).map(|(_, v)| text_len(v)).sum();
    let binary: usize = entries(&obj["binaryData"])
        .map(|(_, v)| binary_len(v))
        .sum();
    if text + binary > MAX_DATA {
        // Upstream names no field: the whole object is too big.
        causes.push(Cause::too_long("[]", MAX_DATA));
    }
    kept(obj, old, &["data", "binaryData"], causes);
}

fn text_len(v: &Value) -> usize {
    v.as_str().map_or(0, str::len)
}

/// How many bytes a base64 value decodes to.
fn binary_len(v: &Value) -> usize {
    let text = v.as_str().unwrap_or_default().trim_end_matches('=');
    text.len() * 3 / 4
}

/// A Secret, after its `stringData` was written into its `data`.
pub(super) fn secret(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let data = &obj["data"];
    keys(data, "data", causes);
    let has = |key: &str| !data[key].is_null();
    let required = |key: &str| Cause::required(format!("data[{key}]"));
    let kind = obj["type"].as_str().unwrap_or_default();
    match kind {
        "kubernetes.io/service-account-token" => {
            let account = "kubernetes.io/service-account.name";
            let named = obj["metadata"]["annotations"][account].as_str();
            if named.is_none_or(str::is_empty) {
                causes.push(Cause::required(format!("metadata.annotations[{account}]")));
            }
        }
        "kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson" => {
            let key = if kind == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            match decoded(&data[key]) {
                None => causes.push(required(key)),
                Some(bytes) => {
                    if let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes)
                    {
                        let field = format!("data[{key}]");
                        causes.push(Cause::invalid(field, "<secret contents redacted>", e));
                    }
                }
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            causes.push(required("username"));
            causes.push(required("password"));
        }
        "kubernetes.io/ssh-auth"
            if decoded(&data["ssh-privatekey"]).is_none_or(|k| k.is_empty()) =>
        {
            causes.push(required("ssh-privatekey"));
        }
        "kubernetes.io/tls" => {
            for key in ["tls.crt", "tls.key"] {
                if !has(key) {
                    causes.push(required(key));
                }
            }
        }
        _ => {}
    }
    if let Some(old) = old {
        if obj["type"] != old["type"] {
            causes.push(Cause::invalid("type", kind, "field is immutable"));
        }
    }
    if entries(data).map(|(_, v)| binary_len(v)).sum::<usize>() > MAX_DATA {
        causes.push(Cause::too_long("data", MAX_DATA));
    }
    kept(obj, old, &["data"], causes);
}

/// The bytes of a base64 value; none when absent or not base64.
fn decoded(v: &Value) -> Option<Vec<u8>> {
    let text = v.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::{causes_of, fields_of};

    fn secret(kind: &str, data: Value) -> Value {
        json!({"metadata": {"name": "s", "namespace": "n"}, "type": kind, "data": data})
    }

    fn fields(obj: &Value, old: Option<&Value>) -> Vec<String> {
        fields_of("", "secrets", obj, old)
    }

    #[test]
    fn a_secret_holds_what_its_type_promises() {
        let tls = secret(
            "kubernetes.io/tls",
            json!({"tls.crt": "Yw==", "tls.key": "aw=="}),
        );
        assert!(fields(&tls, None).is_empty());
        let half = secret("kubernetes.io/tls", json!({"tls.crt": "Yw=="}));
        assert_eq!(fields(&half, None), ["data[tls.key]"]);
        assert_eq!(
            fields(&secret("kubernetes.io/basic-auth", json!({})), None),
            ["data[username]", "data[password]"]
        );
        assert!(fields(
            &secret("kubernetes.io/basic-auth", json!({"password": ""})),
            None
        )
        .is_empty());
        assert_eq!(
            fields(
                &secret("kubernetes.io/ssh-auth", json!({"ssh-privatekey": ""})),
                None
            ),
            ["data[ssh-privatekey]"]
        );
        // "{}" and "[]" in base64.
        let config = |b64: &str| {
            secret(
                "kubernetes.io/dockerconfigjson",
                json!({".dockerconfigjson": b64}),
            )
        };
        assert!(fields(&config("e30="), None).is_empty());
        let causes = causes_of("", "secrets", &config("W10="), None);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].0, "data[.dockerconfigjson]");
        assert!(
            causes[0]
                .1
                .starts_with("Invalid value: \"<secret contents redacted>\": "),
            "{:?}",
            causes[0]
        );
        assert_eq!(
            fields(
                &secret("kubernetes.io/service-account-token", json!({})),
                None
            ),
            ["metadata.annotations[kubernetes.io/service-account.name]"]
        );
        // The type is fixed at creation.
        let opaque = secret("Opaque", json!({}));
        assert_eq!(fields(&half, Some(&opaque)), ["data[tls.key]", "type"]);
    }

    #[test]
    fn data_holds_one_mebibyte_at_most() {
        use base64::Engine;
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        let half = 1 << 19;
        let full = secret("Opaque", json!({"a": b64(half), "b": b64(half)}));
        assert!(fields(&full, None).is_empty());
        let over = secret("Opaque", json!({"a": b64(half), "b": b64(half + 1)}));
        let causes = causes_of("", "secrets", &over, None);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0],
            (
                "data".to_owned(),
                "Too long: may not be more than 1048576 bytes".to_owned()
            )
        );
        let map = |text: usize, binary: usize| {
            json!({"metadata": {"name": "m", "namespace": "n"},
                "data": {"t": "x".repeat(text)}, "binaryData": {"b": b64(binary)}})
        };
        assert!(fields_of("", "configmaps", &map(half, half), None).is_empty());
        assert_eq!(
            fields_of("", "configmaps", &map(half, half + 1), None),
            ["[]"]
        );
    }

    #[test]
    fn immutable_data_stays() {
        let mut before = secret("Opaque", json!({"a": "YQ=="}));
        before["immutable"] = json!(true);
        let mut changed = before.clone();
        changed["data"]["a"] = json!("Yg==");
        assert_eq!(fields(&changed, Some(&before)), ["data"]);
        let mut unmarked = before.clone();
        unmarked["immutable"] = json!(false);
        assert_eq!(fields(&unmarked, Some(&before)), ["immutable"]);
        // Labels may still change; a mutable one may be marked.
        let mut labelled = before.clone();
        labelled["metadata"]["labels"] = json!({"k": "v"});
        assert!(fields(&labelled, Some(&before)).is_empty());
        let plain = secret("Opaque", json!({"a": "YQ=="}));
        assert!(fields(&before, Some(&plain)).is_empty());

        let map = |data: Value| json!({"metadata": {"name": "c", "namespace": "n"}, "immutable": true, "data": data});
        let got = fields_of(
            "",
            "configmaps",
            &map(json!({"a": "2"})),
            Some(&map(json!({"a": "1"}))),
        );
        assert_eq!(got, ["data"]);
    }

    #[test]
    fn a_config_map_names_each_key_once() {
        let map = json!({"metadata": {"name": "c", "namespace": "n"}, "data": {"a": "1", "b/c": "2"},
            "binaryData": {"a": "MQ=="}});
        assert_eq!(
            fields_of("", "configmaps", &map, None),
            ["data[b/c]", "binaryData"]
        );
    }
}
