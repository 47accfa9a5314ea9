//! PersistentVolumes, PersistentVolumeClaims and StorageClasses, checked
//! as upstream checks them.

use serde_json::Value;

use crate::quantity::parse_milli;
use crate::status::Cause;

/// The volume sources a PersistentVolume may name (one of them).
const SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn forbidden(field: &str, message: impl Into<String>) -> Cause {
    Cause {
        reason: "FieldValueForbidden",
        field: field.into(),
        message: format!("Forbidden: {}", message.into()),
    }
}

fn access_modes(modes: &Value, field: &str, causes: &mut Vec<Cause>) {
    let modes = modes.as_array().map(Vec::as_slice).unwrap_or_default();
    if modes.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value: at least 1 access mode is required".into(),
        });
    }
    for m in modes {
        let m = m.as_str().unwrap_or_default();
        if !ACCESS_MODES.contains(&m) {
            causes.push(Cause::unsupported(field, m, ACCESS_MODES));
        }
    }
    let once_pod = modes.iter().any(|m| m == "ReadWriteOncePod");
    if once_pod && modes.len() > 1 {
        causes.push(forbidden(
            field,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn volume_mode(mode: &Value, field: &str, causes: &mut Vec<Cause>) {
    if let Some(m) = mode.as_str() {
        if !matches!(m, "Filesystem" | "Block") {
            causes.push(Cause::unsupported(field, m, &["Block", "Filesystem"]));
        }
    }
}

fn storage_quantity(q: &Value, field: &str, causes: &mut Vec<Cause>) {
    match q.as_str().map(|s| (s, parse_milli(s))) {
        None => causes.push(Cause::required(field)),
        Some((s, None)) => causes.push(Cause::invalid(field, s, "must be a valid quantity")),
        Some((s, Some(n))) if n <= 0 => {
            causes.push(Cause::invalid(field, s, "must be greater than zero"))
        }
        Some(_) => {}
    }
}

/// An absolute path without `..` (a hostPath or local volume's).
fn host_path(path: &Value, field: &str, causes: &mut Vec<Cause>) {
    let Some(p) = path.as_str().filter(|p| !p.is_empty()) else {
        causes.push(Cause::required(field));
        return;
    };
    if p.split('/').any(|part| part == "..") {
        causes.push(Cause::invalid(field, p, "must not contain '..'"));
    }
    if !p.starts_with('/') {
        causes.push(Cause::invalid(field, p, "must be an absolute path"));
    }
}

pub fn volume(spec: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    storage_quantity(&spec["capacity"]["storage"], "spec.capacity", causes);
    access_modes(&spec["accessModes"], "spec.accessModes", causes);
    volume_mode(&spec["volumeMode"], "spec.volumeMode", causes);
    let sources: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|s| !spec[*s].is_null())
        .collect();
    match sources.as_slice() {
        [] => causes.push(Cause {
            reason: "FieldValueRequired",
            field: "spec".into(),
            message: "Required value: must specify a volume type".into(),
        }),
        [_] => {}
        [_, more @ ..] => {
            for s in more {
                causes.push(forbidden(
                    &format!("spec.{s}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if !spec["hostPath"].is_null() {
        host_path(&spec["hostPath"]["path"], "spec.hostPath.path", causes);
    }
    if !spec["local"].is_null() {
        host_path(&spec["local"]["path"], "spec.local.path", causes);
        if spec["nodeAffinity"].is_null() {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: "spec.nodeAffinity".into(),
                message: "Required value: Local volume requires node affinity".into(),
            });
        }
    }
    if let Some(p) = spec["persistentVolumeReclaimPolicy"].as_str() {
        let allowed = ["Delete", "Recycle", "Retain"];
        if !allowed.contains(&p) {
            causes.push(Cause::unsupported(
                "spec.persistentVolumeReclaimPolicy",
                p,
                &allowed,
            ));
        }
    }
    let Some(old) = old.map(|o| &o["spec"]) else {
        return;
    };
    let source = |s: &Value| -> Vec<(&str, Value)> {
        SOURCES
            .iter()
            .filter(|k| !s[**k].is_null())
            .map(|k| (*k, s[*k].clone()))
            .collect()
    };
    if source(spec) != source(old) {
        causes.push(forbidden(
            "spec.persistentvolumesource",
            "spec.persistentvolumesource is immutable after creation",
        ));
    }
    if !old["nodeAffinity"].is_null() && spec["nodeAffinity"] != old["nodeAffinity"] {
        causes.push(Cause::immutable("spec.nodeAffinity"));
    }
    if spec["volumeMode"] != old["volumeMode"] {
        causes.push(Cause::immutable("spec.volumeMode"));
    }
}

/// A claim's spec at `at`: a claim's own, or a template's (a generic
/// ephemeral volume's).
pub fn claim_spec(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    access_modes(&spec["accessModes"], &format!("{at}.accessModes"), causes);
    volume_mode(&spec["volumeMode"], &format!("{at}.volumeMode"), causes);
    let storage = &spec["resources"]["requests"]["storage"];
    let storage_at = format!("{at}.resources[storage]");
    if storage.is_null() {
        causes.push(Cause::required(storage_at));
    } else {
        storage_quantity(storage, &storage_at, causes);
    }
}

/// A claim: what it asks for; once made, only a bound claim's storage
/// request may change (and not below what it has), and its volume be
/// named once.
pub fn claim(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    claim_spec(spec, "spec", causes);
    let storage = &spec["resources"]["requests"]["storage"];
    let Some(old) = old else {
        return;
    };
    let before = &old["spec"];
    let mut comparable = spec.clone();
    let mut keep = |field: &str| match (comparable.as_object_mut(), before.get(field)) {
        (Some(c), Some(v)) => {
            c.insert(field.into(), v.clone());
        }
        (Some(c), None) => {
            c.remove(field);
        }
        (None, _) => {}
    };
    // The volume may be named once (binding).
    if before["volumeName"].as_str().is_none_or(str::is_empty) {
        keep("volumeName");
    }
    let bound = old["status"]["phase"] == "Bound";
    if bound {
        keep("resources");
    }
    if comparable != *before {
        causes.push(forbidden(
            "spec",
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ));
    }
    // Shrinking a request (to recover from a failed expansion) stops at
    // what the volume has.
    let has = parse_milli(old["status"]["capacity"]["storage"].as_str().unwrap_or(""));
    let before = parse_milli(
        before["resources"]["requests"]["storage"]
            .as_str()
            .unwrap_or(""),
    );
    let asked = storage.as_str().and_then(parse_milli);
    if let (Some(has), Some(asked), Some(before)) = (has, asked, before) {
        if bound && asked < before && asked < has {
            causes.push(forbidden(
                "spec.resources.requests.storage",
                "field can not be less than status.capacity",
            ));
        }
    }
}

pub fn class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    provisioner(&obj["provisioner"], "provisioner", causes);
    if let Some(p) = obj["reclaimPolicy"].as_str() {
        if !matches!(p, "Delete" | "Retain") {
            causes.push(Cause::unsupported(
                "reclaimPolicy",
                p,
                &["Delete", "Retain"],
            ));
        }
    }
    if let Some(m) = obj["volumeBindingMode"].as_str() {
        let allowed = ["Immediate", "WaitForFirstConsumer"];
        if !allowed.contains(&m) {
            causes.push(Cause::unsupported("volumeBindingMode", m, &allowed));
        }
    }
    let Some(old) = old else {
        return;
    };
    for (field, what) in [
        ("parameters", "parameters"),
        ("provisioner", "provisioner"),
        ("reclaimPolicy", "reclaimPolicy"),
        ("volumeBindingMode", "volumeBindingMode"),
    ] {
        if obj[field] != old[field] {
            causes.push(forbidden(
                field,
                format!("updates to {what} are forbidden."),
            ));
        }
    }
}

/// A provisioner's or CSI driver's name: a qualified name.
fn provisioner(name: &Value, field: &str, causes: &mut Vec<Cause>) {
    match name.as_str() {
        Some(p) if !p.is_empty() => {
            if !crate::validate::is_dns_subdomain(&p.replace('/', ".").to_ascii_lowercase()) {
                causes.push(Cause::invalid(field, p, "must be a qualified name"));
            }
        }
        _ => causes.push(Cause::required(field)),
    }
}

/// A VolumeAttributesClass: the driver that applies it, named, and what
/// it applies, both fixed once made.
pub fn attributes_class(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    provisioner(&obj["driverName"], "driverName", causes);
    let Some(old) = old else {
        return;
    };
    for key in ["driverName", "parameters"] {
        if obj[key] != old[key] {
            causes.push(forbidden(key, format!("updates to {key} are forbidden.")));
        }
    }
}

const FS_GROUP_POLICIES: &[&str] = &["File", "None", "ReadWriteOnceWithFSType"];
const LIFECYCLE_MODES: &[&str] = &["Persistent", "Ephemeral"];

/// A CSIDriver's `spec` (upstream's `ValidateCSIDriver` and its update):
/// its switches set (defaulting sets them), known policies and modes,
/// one token request per audience of at least ten minutes, and whether
/// it attaches and how its volumes live fixed once made.
pub fn csi_driver(spec: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    // Upstream's field name for `attachRequired`, kept as it says it.
    for (key, field) in [
        ("attachRequired", "spec.attachedRequired"),
        ("podInfoOnMount", "spec.podInfoOnMount"),
        ("storageCapacity", "spec.storageCapacity"),
    ] {
        if !spec[key].is_boolean() {
            causes.push(Cause::required(field));
        }
    }
    if let Some(p) = spec["fsGroupPolicy"].as_str() {
        if !FS_GROUP_POLICIES.contains(&p) {
            causes.push(Cause::unsupported(
                "spec.fsGroupPolicy",
                p,
                FS_GROUP_POLICIES,
            ));
        }
    }
    let requests = spec["tokenRequests"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for (i, request) in requests.iter().enumerate() {
        let audience = request["audience"].as_str().unwrap_or_default();
        if requests[..i].iter().any(|r| r["audience"] == audience) {
            let field = format!("spec.tokenRequests[{i}].audience");
            causes.push(Cause::duplicate(field, format!("{audience:?}")));
            continue;
        }
        let field = format!("spec.tokenRequests[{i}].expirationSeconds");
        let seconds = &request["expirationSeconds"];
        match seconds.as_i64() {
            Some(s) if s < 600 => causes.push(Cause::invalid_value(
                field,
                seconds,
                "may not specify a duration less than 10 minutes",
            )),
            Some(s) if s > 1 << 32 => causes.push(Cause::invalid_value(
                field,
                seconds,
                "may not specify a duration larger than 2^32 seconds",
            )),
            _ => {}
        }
    }
    let modes = spec["volumeLifecycleModes"]
        .as_array()
        .into_iter()
        .flatten();
    for mode in modes.filter_map(Value::as_str) {
        if !LIFECYCLE_MODES.contains(&mode) {
            causes.push(Cause::unsupported(
                "spec.volumeLifecycleModes",
                mode,
                LIFECYCLE_MODES,
            ));
        }
    }
    let period = &spec["nodeAllocatableUpdatePeriodSeconds"];
    if period.as_i64().is_some_and(|p| p < 10) {
        let why = "must be greater than or equal to 10 seconds";
        causes.push(Cause::invalid_value(
            "spec.nodeAllocatableUpdatePeriodSeconds",
            period,
            why,
        ));
    }
    if let Some(old) = old {
        for (key, field) in [
            ("attachRequired", "spec.attachedRequired"),
            ("volumeLifecycleModes", "spec.volumeLifecycleModes"),
        ] {
            if spec[key] != old[key] {
                causes.push(Cause::invalid_value(
                    field,
                    &spec[key],
                    "field is immutable",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(causes: &[Cause]) -> Vec<String> {
        causes.iter().map(|c| c.field.clone()).collect()
    }

    #[test]
    fn volumes() {
        let mut causes = Vec::new();
        volume(&json!({}), None, &mut causes);
        assert_eq!(
            fields(&causes),
            ["spec.capacity", "spec.accessModes", "spec"]
        );

        let good = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/srv/data"}});
        let mut causes = Vec::new();
        volume(&good, None, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");

        let mut causes = Vec::new();
        let bad = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "srv/../etc"}, "nfs": {"server": "x", "path": "/"},
            "persistentVolumeReclaimPolicy": "Keep"});
        volume(&bad, None, &mut causes);
        assert_eq!(
            fields(&causes),
            [
                "spec.nfs",
                "spec.hostPath.path",
                "spec.hostPath.path",
                "spec.persistentVolumeReclaimPolicy"
            ]
        );

        let local = json!({"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "local": {"path": "/x"}});
        let mut causes = Vec::new();
        volume(&local, None, &mut causes);
        assert_eq!(fields(&causes), ["spec.nodeAffinity"]);

        let mut moved = good.clone();
        moved["hostPath"]["path"] = json!("/etc");
        let mut causes = Vec::new();
        volume(&moved, Some(&json!({"spec": good})), &mut causes);
        assert_eq!(fields(&causes), ["spec.persistentvolumesource"]);
    }

    #[test]
    fn claims_change_only_their_request_once_bound() {
        let spec = json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}});
        let pending = json!({"spec": spec, "status": {"phase": "Pending"}});
        let mut causes = Vec::new();
        claim(&pending, None, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");

        let mut named = pending.clone();
        named["spec"]["volumeName"] = json!("pv1");
        let mut causes = Vec::new();
        claim(&named, Some(&pending), &mut causes);
        assert!(causes.is_empty(), "binding names the volume: {causes:?}");

        let mut grown = pending.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut causes = Vec::new();
        claim(&grown, Some(&pending), &mut causes);
        assert_eq!(fields(&causes), ["spec"], "an unbound claim keeps its spec");

        let bound = json!({"spec": named["spec"], "status": {"phase": "Bound", "capacity": {"storage": "1Gi"}}});
        let mut grown = bound.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut causes = Vec::new();
        claim(&grown, Some(&bound), &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut shrunk = bound.clone();
        shrunk["spec"]["resources"]["requests"]["storage"] = json!("512Mi");
        let mut causes = Vec::new();
        claim(&shrunk, Some(&bound), &mut causes);
        assert_eq!(fields(&causes), ["spec.resources.requests.storage"]);
        let mut smaller_than_its_volume = bound.clone();
        smaller_than_its_volume["status"]["capacity"]["storage"] = json!("2Gi");
        let mut causes = Vec::new();
        claim(
            &smaller_than_its_volume,
            Some(&smaller_than_its_volume),
            &mut causes,
        );
        assert!(
            causes.is_empty(),
            "a claim may ask less than its volume has: {causes:?}"
        );
        let mut renamed = bound.clone();
        renamed["spec"]["volumeName"] = json!("pv2");
        let mut causes = Vec::new();
        claim(&renamed, Some(&bound), &mut causes);
        assert_eq!(fields(&causes), ["spec"]);
    }

    #[test]
    fn classes() {
        let c = json!({"provisioner": "skiff.io/local-path", "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer"});
        let mut causes = Vec::new();
        class(&c, None, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut changed = c.clone();
        changed["reclaimPolicy"] = json!("Retain");
        changed["volumeBindingMode"] = json!("Later");
        let mut causes = Vec::new();
        class(&changed, Some(&c), &mut causes);
        assert_eq!(
            fields(&causes),
            ["volumeBindingMode", "reclaimPolicy", "volumeBindingMode"]
        );
    }
}
