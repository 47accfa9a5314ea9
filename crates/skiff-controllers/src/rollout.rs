//! Pure rollout arithmetic shared by the Deployment, DaemonSet and
//! StatefulSet controllers: template hashes and surge/unavailable bounds.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

/// The label carrying a template's hash on ReplicaSets and their pods.
pub const HASH_LABEL: &str = "pod-template-hash";

/// A short, stable name-safe hash of a template (upstream's
/// `ComputeHash`: FNV-1a over the template plus the collision count, its
/// decimal digits spelled in consonants and digits that form no words).
pub fn template_hash(template: &Value, collision_count: Option<i32>) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(template.to_string().as_bytes());
    if let Some(c) = collision_count.filter(|c| *c > 0) {
        feed(c.to_string().as_bytes());
    }
    h.to_string()
        .bytes()
        .map(|d| ALPHABET[usize::from(d) % ALPHABET.len()] as char)
        .collect()
}

/// A template in a form fit for comparing: without the hash label and
/// without zero values, which clients drop or send at will (kubectl's
/// protobuf carries `stdin: false`, its JSON omits it); upstream compares
/// Go structs, where both are the same.
pub fn without_hash(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(HASH_LABEL);
    }
    drop_zero_values(&mut t);
    t
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

fn drop_zero_values(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for x in o.values_mut() {
                drop_zero_values(x);
            }
            o.retain(|_, x| !is_zero(x));
        }
        Value::Array(a) => a.iter_mut().for_each(drop_zero_values),
        _ => {}
    }
}

/// An int-or-percent against a total: percentages round up for surge and
/// down for unavailability, as upstream.
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool, default: &str) -> i32 {
    let pct = |s: &str| -> i32 {
        let p: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
        let x = p * f64::from(total) / 100.0;
        (if round_up { x.ceil() } else { x.floor() }) as i32
    };
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => pct(s),
        None => pct(default),
    }
}

/// `(maxSurge, maxUnavailable)` resolved against `replicas`; both zero
/// means one may be unavailable.
pub fn surge_and_unavailable(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    replicas: i32,
) -> (i32, i32) {
    let s = scaled(surge, replicas, true, "25%");
    let u = scaled(unavailable, replicas, false, "25%");
    if s == 0 && u == 0 {
        (0, 1)
    } else {
        (s, u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn surge_and_unavailable_table() {
        let pct = |s: &str| IntOrString::String(s.into());
        for (surge, unavail, replicas, want) in [
            (None, None, 4, (1, 1)),
            (None, None, 3, (1, 0)),
            (Some(pct("50%")), Some(pct("50%")), 3, (2, 1)),
            (
                Some(IntOrString::Int(0)),
                Some(IntOrString::Int(0)),
                3,
                (0, 1),
            ),
            (
                Some(IntOrString::Int(2)),
                Some(IntOrString::Int(1)),
                10,
                (2, 1),
            ),
        ] {
            assert_eq!(
                surge_and_unavailable(surge.as_ref(), unavail.as_ref(), replicas),
                want
            );
        }
    }

    #[test]
    fn hash_is_stable_and_ignores_its_own_label() {
        let t = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"image": "a"}]}});
        let mut labelled = t.clone();
        labelled["metadata"]["labels"][HASH_LABEL] = json!("x");
        labelled["spec"]["containers"][0]["stdin"] = json!(false);
        assert_eq!(
            template_hash(&without_hash(&labelled), None),
            template_hash(&t, None)
        );
        assert_ne!(template_hash(&t, None), template_hash(&t, Some(1)));
        assert_eq!(template_hash(&t, None), template_hash(&t, Some(0)));
        assert!(template_hash(&t, None)
            .bytes()
            .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }
}
