//! NodeRestriction admission, as upstream's: a node writes only its own
//! Node (and not the labels reserved for administrators), its own Lease,
//! and the status of pods bound to it; it creates no pods (Skiff has no
//! static pods, so no mirror pods either).

use async_trait::async_trait;
use serde_json::Value;
use skiff_core::registry::ResourceType;
use skiff_core::volumes::LOCAL_PATH_CLEANUP;
use skiff_core::{meta, ApiError};

use super::{Attributes, Operation, Validating, Verdict};
use crate::auth::User;
use crate::authz::node::node_of;

/// Labels only administrators may set on a Node.
const RESERVED: &str = "node-restriction.kubernetes.io/";

pub struct NodeRestriction;

#[async_trait]
impl Validating for NodeRestriction {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        a.operation != Operation::Connect && node_of(a.user).is_some()
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        _verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        match (a.operation, a.subresource) {
            (Operation::Delete, _) => match a.old {
                Some(current) => admit_delete(a.user, a.resource, current),
                None => Ok(()),
            },
            (Operation::Create, Some("token")) if a.resource.plural == "serviceaccounts" => {
                admit_token(a.user, a.old)
            }
            _ => admit(a.user, a.resource, a.subresource, a.old, obj),
        }
    }
}

fn admit(
    user: &User,
    r: &ResourceType,
    subresource: Option<&str>,
    current: Option<&Value>,
    obj: &Value,
) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let forbidden = |m: String| Err(ApiError::forbidden(m));
    match (r.group, r.kind) {
        ("", "Node") => {
            let name = meta::name(obj);
            if name != node {
                return forbidden(format!("node {node:?} is not allowed to modify node {name:?}"));
            }
            let reserved = |o: Option<&Value>| -> Vec<(String, Value)> {
                o.and_then(|o| o["metadata"]["labels"].as_object())
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| k.starts_with(RESERVED) || k.contains(&format!(".{RESERVED}")))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            if reserved(current) != reserved(Some(obj)) {
                return forbidden(format!(
                    "node {node:?} is not allowed to modify labels under {RESERVED}"
                ));
            }
            Ok(())
        }
        ("", "Pod") => match (current, subresource) {
            (None, _) => forbidden(format!(
                "pod does not have \"kubernetes.io/config.mirror\" annotation, node {node:?} can only create mirror pods"
            )),
            (Some(current), _) => {
                let bound = current["spec"]["nodeName"].as_str().unwrap_or_default();
                if bound == node {
                    Ok(())
                } else {
                    forbidden(format!(
                        "node {node:?} can only update pod status for pods with spec.nodeName set to itself"
                    ))
                }
            }
        },
        // The Node authorizer lets a node write only the local-path
        // volumes on it, and here only their cleanup finalizer.
        ("", "PersistentVolume") => {
            // Everything but the cleanup finalizer, as compared.
            let rest = |o: &Value| {
                let mut o = o.clone();
                let finalizers: Vec<String> = meta::finalizers(&o)
                    .into_iter()
                    .filter(|f| f != LOCAL_PATH_CLEANUP)
                    .collect();
                let m = meta::meta_mut(&mut o);
                m.remove("resourceVersion");
                m.remove("managedFields");
                m.insert("finalizers".into(), serde_json::json!(finalizers));
                o
            };
            match current {
                Some(current) if rest(current) == rest(obj) => Ok(()),
                _ => forbidden(format!(
                    "node {node:?} may only add or remove the {LOCAL_PATH_CLEANUP} finalizer of a volume"
                )),
            }
        }
        ("coordination.k8s.io", "Lease") => {
            let own = meta::namespace(obj) == Some("kube-node-lease") && meta::name(obj) == node;
            if own {
                Ok(())
            } else {
                forbidden("can only access node lease with the same name as the requesting node".into())
            }
        }
        _ => Ok(()),
    }
}

/// A node deletes or evicts only the pods bound to it.
fn admit_delete(user: &User, r: &ResourceType, current: &Value) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let bound = current["spec"]["nodeName"].as_str().unwrap_or_default();
    if r.group.is_empty() && r.kind == "Pod" && bound != node {
        return Err(ApiError::forbidden(format!(
            "node {node:?} can only delete pods with spec.nodeName set to itself"
        )));
    }
    Ok(())
}

/// A node asks for tokens only for pods bound to it.
fn admit_token(user: &User, pod: Option<&Value>) -> Result<(), ApiError> {
    let Some(node) = node_of(user) else {
        return Ok(());
    };
    let Some(pod) = pod else {
        return Err(ApiError::forbidden(format!(
            "node {node:?} requested token not bound to a pod"
        )));
    };
    if pod["spec"]["nodeName"].as_str() != Some(node) {
        return Err(ApiError::forbidden(format!(
            "node {node:?} requested token bound to a pod scheduled on a different node"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use skiff_core::registry;

    fn node(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into()],
        }
    }

    #[test]
    fn a_node_writes_only_its_own() {
        let nodes = registry::lookup("", "v1", "nodes").unwrap();
        let pods = registry::lookup("", "v1", "pods").unwrap();
        let leases = registry::lookup("coordination.k8s.io", "v1", "leases").unwrap();
        let a = node("a");
        let node_b = json!({"metadata": {"name": "b"}});
        let err = admit(&a, nodes, None, Some(&node_b), &node_b).unwrap_err();
        assert_eq!(err.message, r#"node "a" is not allowed to modify node "b""#);
        let node_a = json!({"metadata": {"name": "a", "labels": {"x": "1"}}});
        assert!(admit(&a, nodes, Some("status"), Some(&node_a), &node_a).is_ok());
        let labelled = json!({"metadata": {"name": "a", "labels": {"node-restriction.kubernetes.io/trusted": "yes"}}});
        assert!(admit(&a, nodes, None, Some(&node_a), &labelled).is_err());
        let mine = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "a"}});
        let theirs = json!({"metadata": {"name": "q"}, "spec": {"nodeName": "b"}});
        assert!(admit(&a, pods, Some("status"), Some(&mine), &mine).is_ok());
        assert!(admit(&a, pods, Some("status"), Some(&theirs), &theirs).is_err());
        assert!(admit(&a, pods, None, None, &mine)
            .unwrap_err()
            .message
            .contains("mirror pods"));
        let lease =
            |name: &str| json!({"metadata": {"name": name, "namespace": "kube-node-lease"}});
        assert!(admit(&a, leases, None, None, &lease("a")).is_ok());
        assert!(admit(&a, leases, None, None, &lease("b")).is_err());
        let admin = User {
            name: "alice".into(),
            groups: vec![],
        };
        assert!(admit(&admin, nodes, None, Some(&node_b), &node_b).is_ok());
        let volumes = registry::lookup("", "v1", "persistentvolumes").unwrap();
        let pv = json!({"metadata": {"name": "pvc-1", "resourceVersion": "7",
            "finalizers": ["kubernetes.io/pv-protection"]}, "spec": {"local": {"path": "/v/pvc-1"}}});
        let mut held = pv.clone();
        held["metadata"]["finalizers"] = json!(["kubernetes.io/pv-protection", LOCAL_PATH_CLEANUP]);
        held["metadata"]["resourceVersion"] = json!("8");
        assert!(admit(&a, volumes, None, Some(&pv), &held).is_ok());
        assert!(admit(&a, volumes, None, Some(&held), &pv).is_ok());
        let mut unprotected = pv.clone();
        unprotected["metadata"]["finalizers"] = json!([]);
        assert!(admit(&a, volumes, None, Some(&pv), &unprotected).is_err());
        let mut moved = pv.clone();
        moved["spec"]["local"]["path"] = json!("/etc");
        assert!(admit(&a, volumes, None, Some(&pv), &moved).is_err());
        assert!(admit(&a, volumes, None, None, &pv).is_err());
        assert!(admit_delete(&a, pods, &mine).is_ok());
        assert!(admit_delete(&a, pods, &theirs)
            .unwrap_err()
            .message
            .contains("only delete pods"));
        assert!(admit_delete(&admin, pods, &theirs).is_ok());
        assert!(admit_token(&a, Some(&mine)).is_ok());
        assert!(admit_token(&a, Some(&theirs))
            .unwrap_err()
            .message
            .contains("different node"));
        assert!(admit_token(&a, None)
            .unwrap_err()
            .message
            .contains("not bound to a pod"));
        assert!(admit_token(&admin, None).is_ok());
    }
}
