//! What may change in a pod once it exists, as upstream's
//! `ValidatePodUpdate` and `ValidatePodResize`: an update changes images,
//! the active deadline (only down), tolerations (only added), a negative
//! grace period (to 1), scheduling gates (only removed) and, while gated,
//! where the pod may go; the `resize` subresource changes containers' cpu
//! and memory and their resize policies, keeping the pod's QoS class.
//! Each container's resize policy is checked on every write.

use serde_json::Value;

use super::At;
use crate::status::Cause;

const UPDATE_MSG: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// The resources a resize may change, and so a resize policy may name.
const RESIZABLE: &[&str] = &["cpu", "memory"];
const RESIZE_RESTARTS: &[&str] = &["NotRequired", "RestartContainer"];

/// Whether `c` is an init container that runs beside the app (a sidecar).
fn is_sidecar(c: &Value) -> bool {
    c["restartPolicy"] == "Always"
}

/// The containers of `spec` in `list`.
fn list<'a>(spec: &'a Value, list: &str) -> &'a [Value] {
    spec[list].as_array().map_or(&[], Vec::as_slice)
}

/// Equal but for nulls and empty lists and maps, which a client may send
/// or leave out alike.
fn same(a: &Value, b: &Value) -> bool {
    same_except(a, b, &[])
}

/// [`same`], but for the fields of two maps named in `except`.
fn same_except(a: &Value, b: &Value, except: &[&str]) -> bool {
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = x.keys().chain(y.keys());
            keys.filter(|k| !except.contains(&k.as_str())).all(|k| {
                let (p, q) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                (empty(p) && empty(q)) || same(p, q)
            })
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        _ => a == b || (empty(a) && empty(b)),
    }
}

/// The checks of a pod update's spec.
pub(super) fn update(new: &Value, old: &Value, causes: &mut Vec<Cause>) {
    let (spec, before) = (&new["spec"], &old["spec"]);
    // Most updates (every status write) leave the spec as it was.
    if spec == before {
        return;
    }
    active_deadline(spec, before, causes);
    tolerations(spec, before, causes);
    let grace = |s: &Value| s["terminationGracePeriodSeconds"].as_i64();
    let mut kept = vec!["activeDeadlineSeconds", "tolerations", "schedulingGates"];
    kept.push("ephemeralContainers");
    // Fields refused apart, each by name (`immutable`).
    kept.extend([
        "nodeName",
        "restartPolicy",
        "volumes",
        "runtimeClassName",
        "overhead",
    ]);
    if grace(before).is_some_and(|g| g < 0) && grace(spec) == Some(1) {
        kept.push("terminationGracePeriodSeconds");
    }
    // Where a gated pod may go can change until it is scheduled.
    if !list(before, "schedulingGates").is_empty() {
        kept.extend(["nodeSelector", "affinity"]);
    }
    // The spec but for what may change, compared in place: containers
    // but for their images.
    let containers_changed = ["containers", "initContainers"].iter().any(|name| {
        let (now, then) = (list(spec, name), list(before, name));
        now.len() != then.len()
            || now
                .iter()
                .zip(then)
                .any(|(n, t)| !same_except(n, t, &["image"]))
    });
    kept.extend(["containers", "initContainers"]);
    let changed = containers_changed || !same_except(spec, before, &kept);
    if changed {
        causes.push(Cause::forbidden("spec", UPDATE_MSG));
    }
}

fn active_deadline(spec: &Value, before: &Value, causes: &mut Vec<Cause>) {
    let (now, then) = (
        &spec["activeDeadlineSeconds"],
        &before["activeDeadlineSeconds"],
    );
    let field = "spec.activeDeadlineSeconds";
    match (now.as_i64(), then.as_i64()) {
        (Some(n), Some(t)) if n > t => causes.push(Cause::invalid(
            field,
            &n.to_string(),
            "must be less than or equal to previous value",
        )),
        (None, Some(_)) => causes.push(Cause::invalid(
            field,
            "null",
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
}

/// Tolerations may be added; an existing one may change only its
/// `tolerationSeconds`.
fn tolerations(spec: &Value, before: &Value, causes: &mut Vec<Cause>) {
    let now = list(spec, "tolerations");
    let without_seconds = |t: &Value| {
        let mut t = t.clone();
        if let Some(m) = t.as_object_mut() {
            m.remove("tolerationSeconds");
        }
        t
    };
    for (i, t) in list(before, "tolerations").iter().enumerate() {
        let t = without_seconds(t);
        if !now.iter().any(|n| same(&without_seconds(n), &t)) {
            causes.push(Cause::forbidden(
                format!("spec.tolerations[{i}]"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
        }
    }
}

/// The checks of a write through the `resize` subresource, beside those of
/// the new spec itself.
pub fn resize(new: &Value, old: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let (spec, before) = (&new["spec"], &old["spec"]);
    if spec["os"]["name"] == "windows" {
        return vec![Cause::forbidden("", "windows pods cannot be resized")];
    }
    let was = old["status"]["qosClass"]
        .as_str()
        .unwrap_or_else(|| crate::qos::class(before));
    if crate::qos::class(spec) != was {
        causes.push(Cause::invalid(
            "spec",
            was,
            "Pod QOS Class may not change as a result of resizing",
        ));
    }
    let mut ordered = true;
    for name in ["containers", "initContainers"] {
        let (now, then) = (list(spec, name), list(before, name));
        if now.len() != then.len() {
            causes.push(Cause::forbidden(
                format!("spec.{name}"),
                format!("{name} may not be added or removed on resize"),
            ));
            ordered = false;
            continue;
        }
        for (i, (n, t)) in now.iter().zip(then).enumerate() {
            if n["name"] != t["name"] {
                causes.push(Cause::forbidden(
                    format!("spec.{name}[{i}].name"),
                    format!("{name} may not be renamed or reordered on resize"),
                ));
                ordered = false;
            }
        }
    }
    if !ordered {
        return causes;
    }
    let mut munged = spec.clone();
    for name in ["containers", "initContainers"] {
        for (i, (n, t)) in list(spec, name).iter().zip(list(before, name)).enumerate() {
            let resizable = name == "containers" || is_sidecar(t);
            if resizable {
                let at = format!("spec.{name}[{i}].resources");
                for part in ["requests", "limits"] {
                    let kept = t["resources"][part].as_object().into_iter().flatten();
                    if kept
                        .map(|(k, _)| k)
                        .any(|k| n["resources"][part].get(k).is_none())
                    {
                        let what = &part[..part.len() - 1];
                        causes.push(Cause::forbidden(
                            format!("{at}.{part}"),
                            format!("resource {what}s cannot be removed"),
                        ));
                    }
                }
            }
            // Take back what a resize may change: cpu and memory of the
            // app's containers and sidecars, and their resize policies.
            let c = &mut munged[name][i];
            if resizable {
                c["resizePolicy"] = t["resizePolicy"].clone();
                for part in ["requests", "limits"] {
                    for r in RESIZABLE {
                        match t["resources"][part].get(*r) {
                            Some(v) => c["resources"][part][*r] = v.clone(),
                            None => {
                                if let Some(m) = c["resources"][part].as_object_mut() {
                                    m.remove(*r);
                                }
                            }
                        }
                    }
                }
            }
            if !same(c, t) {
                let why = match (name, resizable) {
                    ("containers", _) => "only cpu and memory resources are mutable",
                    (_, true) => "only cpu and memory resources for sidecar containers are mutable",
                    _ => "resources for non-sidecar init containers are immutable",
                };
                causes.push(Cause::forbidden("spec", why));
            }
            munged[name][i] = t.clone();
        }
    }
    if causes.is_empty() && !same(&munged, before) {
        causes.push(Cause::forbidden(
            "spec",
            "only cpu and memory resources are mutable",
        ));
    }
    causes
}

/// A container's `resizePolicy`: cpu or memory, once each, with a known
/// restart policy (only `NotRequired` in a pod that never restarts), and
/// only on the app's containers and sidecars.
pub(super) fn resize_policies(spec: &Value, at: At<'_>, causes: &mut Vec<Cause>) {
    let never = spec["restartPolicy"] == "Never";
    for name in ["initContainers", "containers"] {
        for (i, c) in list(spec, name).iter().enumerate() {
            let policies = list(c, "resizePolicy");
            if policies.is_empty() {
                continue;
            }
            let container = at.item(name, i);
            let here = container.field("resizePolicy");
            if name == "initContainers" && !is_sidecar(c) {
                causes.push(Cause::forbidden(
                    here.to_string(),
                    "must not be set for init containers",
                ));
                continue;
            }
            let mut seen = Vec::new();
            for (j, p) in policies.iter().enumerate() {
                let resource = p["resourceName"].as_str().unwrap_or_default();
                let restart = p["restartPolicy"].as_str().unwrap_or_default();
                if seen.contains(&resource) {
                    causes.push(Cause::duplicate(
                        format!("{here}[{j}]"),
                        format!("{resource:?}"),
                    ));
                }
                seen.push(resource);
                match resource {
                    "" => causes.push(Cause::required(here.to_string())),
                    r if !RESIZABLE.contains(&r) => {
                        causes.push(Cause::unsupported(here.to_string(), r, RESIZABLE))
                    }
                    _ => {}
                }
                match restart {
                    "" => causes.push(Cause::required(here.to_string())),
                    r if !RESIZE_RESTARTS.contains(&r) => {
                        causes.push(Cause::unsupported(here.to_string(), r, RESIZE_RESTARTS))
                    }
                    _ => {}
                }
                if never && restart != "NotRequired" {
                    causes.push(Cause::invalid(
                        here.to_string(),
                        restart,
                        "must be 'NotRequired' when `restartPolicy` is 'Never'",
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::validate::causes_of;

    fn pod(containers: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Always",
            "containers": containers}, "status": {"qosClass": "Burstable"}})
    }

    fn app(cpu: &str, extra: Value) -> Value {
        let mut c = json!({"name": "c", "image": "i", "resources": {
            "requests": {"cpu": cpu, "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    fn resize(new: &Value, old: &Value) -> Vec<(String, String)> {
        super::resize(new, old)
            .into_iter()
            .map(|c| (c.field, c.message))
            .collect()
    }

    #[test]
    fn an_update_changes_only_images_deadlines_and_added_tolerations() {
        let old = pod(json!([app("100m", json!({}))]));
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("j");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        assert_eq!(causes_of("", "pods", &new, Some(&old)), []);
        let mut resized = old.clone();
        resized["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("200m");
        let got = causes_of("", "pods", &resized, Some(&old));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "spec");
        assert!(got[0].1.starts_with("Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"), "{got:?}");
        let mut later = new.clone();
        later["spec"]["activeDeadlineSeconds"] = json!(60);
        later["spec"]["tolerations"] = json!([]);
        let fields: Vec<String> = causes_of("", "pods", &later, Some(&new))
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            ["spec.activeDeadlineSeconds", "spec.tolerations[0]"]
        );
    }

    #[test]
    fn a_resize_changes_cpu_and_memory_within_the_qos_class() {
        let old = pod(json!([app("100m", json!({}))]));
        let mut new = old.clone();
        new["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("200m");
        new["spec"]["containers"][0]["resizePolicy"] =
            json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"}]);
        assert_eq!(resize(&new, &old), []);
        // Requests equal to limits would make the pod Guaranteed.
        let mut guaranteed = old.clone();
        guaranteed["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
        assert_eq!(
            resize(&guaranteed, &old),
            [("spec".into(), "Invalid value: \"Burstable\": Pod QOS Class may not change as a result of resizing".into())]
        );
        let mut other = old.clone();
        other["spec"]["containers"][0]["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
        assert_eq!(
            resize(&other, &old),
            [(
                "spec".into(),
                "Forbidden: only cpu and memory resources are mutable".into()
            )]
        );
        let mut removed = old.clone();
        removed["spec"]["containers"][0]["resources"]["requests"]
            .as_object_mut()
            .unwrap()
            .remove("memory");
        let got = resize(&removed, &old);
        assert!(
            got.contains(&(
                "spec.containers[0].resources.requests".into(),
                "Forbidden: resource requests cannot be removed".into()
            )),
            "{got:?}"
        );
        let mut image = old.clone();
        image["spec"]["containers"][0]["image"] = json!("j");
        assert_eq!(
            resize(&image, &old),
            [(
                "spec".into(),
                "Forbidden: only cpu and memory resources are mutable".into()
            )]
        );
        let two = pod(json!([
            app("100m", json!({})),
            app("100m", json!({"name": "d"}))
        ]));
        let mut swapped = two.clone();
        swapped["spec"]["containers"] =
            json!([two["spec"]["containers"][1], two["spec"]["containers"][0]]);
        let fields: Vec<String> = resize(&swapped, &two).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["spec.containers[0].name", "spec.containers[1].name"]
        );
    }

    #[test]
    fn init_containers_resize_only_as_sidecars() {
        let init = |policy: Value| {
            let mut c = app("100m", json!({"name": "init"}));
            c.as_object_mut()
                .unwrap()
                .extend(policy.as_object().unwrap().clone());
            c
        };
        let mut old = pod(json!([app("100m", json!({}))]));
        old["spec"]["initContainers"] = json!([init(json!({}))]);
        let mut new = old.clone();
        new["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = json!("200m");
        assert_eq!(
            resize(&new, &old),
            [(
                "spec".into(),
                "Forbidden: resources for non-sidecar init containers are immutable".into()
            )]
        );
        old["spec"]["initContainers"] = json!([init(json!({"restartPolicy": "Always"}))]);
        new["spec"]["initContainers"] = old["spec"]["initContainers"].clone();
        new["spec"]["initContainers"][0]["resources"]["requests"]["cpu"] = json!("200m");
        assert_eq!(resize(&new, &old), []);
    }

    #[test]
    fn an_ephemeral_container_has_no_resize_policy() {
        let old = pod(json!([app("100m", json!({}))]));
        let mut new = old.clone();
        new["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": "i",
            "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}]}]);
        assert_eq!(
            causes_of("", "pods", &new, Some(&old)),
            [(
                "spec.ephemeralContainers[0].resizePolicy".to_owned(),
                "Forbidden: cannot be set for an Ephemeral Container".to_owned()
            )]
        );
    }

    #[test]
    fn resize_policies_name_cpu_or_memory_once_with_a_known_restart() {
        let policies = |p: Value, restart: &str| {
            let mut spec = pod(json!([app("100m", json!({"resizePolicy": p}))]));
            spec["spec"]["restartPolicy"] = json!(restart);
            causes_of("", "pods", &spec, None)
        };
        let ok = json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "memory", "restartPolicy": "RestartContainer"}]);
        assert_eq!(policies(ok.clone(), "Always"), []);
        let got = policies(ok, "Never");
        assert_eq!(got.len(), 1);
        assert!(
            got[0]
                .1
                .ends_with("must be 'NotRequired' when `restartPolicy` is 'Never'"),
            "{got:?}"
        );
        let bad = json!([{"resourceName": "cpu", "restartPolicy": "NotRequired"},
            {"resourceName": "cpu", "restartPolicy": "Sometimes"},
            {"resourceName": "ephemeral-storage", "restartPolicy": "NotRequired"}]);
        let fields: Vec<String> = policies(bad, "Always")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "spec.containers[0].resizePolicy[1]",
                "spec.containers[0].resizePolicy",
                "spec.containers[0].resizePolicy"
            ]
        );
    }
}
