//! Upstream's ServiceAccount admission: every pod runs as a service
//! account (`default` unless named), which must exist, and gets its
//! credentials as the `kube-api-access-<suffix>` projected volume (a bound
//! token, the cluster CA from `kube-root-ca.crt` and the namespace) mounted
//! at [`MOUNT_PATH`] in every container, unless the pod or its account
//! turns automounting off.

use serde_json::{json, Value};
use skiff_core::registry;
use skiff_core::{meta, ApiError};

use super::admission::random_suffix;
use super::Api;

/// Where containers find their service account's credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A token's lifetime as upstream's admission asks for it (the kubelet
/// renews it at 80 %).
const TOKEN_SECONDS: i64 = 3607;

impl Api {
    pub(super) async fn admit_service_account(&self, pod: &mut Value) -> Result<(), ApiError> {
        let ns = meta::namespace(pod).unwrap_or("default").to_owned();
        let name = pod["spec"]["serviceAccountName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned();
        pod["spec"]["serviceAccountName"] = json!(name);
        pod["spec"]["serviceAccount"] = json!(name);
        let accounts = registry::lookup("", "v1", "serviceaccounts").expect("served");
        let account = self.objects.recent(accounts, Some(&ns), &name).await?;
        // The default account appears moments after its namespace; a pod
        // created meanwhile is let through, as its token follows.
        if account.is_none() && name != "default" {
            return Err(ApiError::forbidden(format!(
                "pods \"{}\" is forbidden: error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found",
                meta::name(pod)
            )));
        }
        let automount = match &pod["spec"]["automountServiceAccountToken"] {
            Value::Bool(b) => *b,
            _ => account
                .as_ref()
                .and_then(|a| a["automountServiceAccountToken"].as_bool())
                .unwrap_or(true),
        };
        if automount {
            mount_credentials(pod);
        }
        Ok(())
    }
}

/// Adds the credentials volume and mounts it in every container that
/// does not mount something at [`MOUNT_PATH`] already.
fn mount_credentials(pod: &mut Value) {
    let containers = ["initContainers", "containers", "ephemeralContainers"];
    let mounted_by = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["mountPath"] == MOUNT_PATH)
    };
    let spec = &mut pod["spec"];
    let wanted = containers.iter().any(|list| {
        spec[*list]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| !mounted_by(c))
    });
    if !wanted {
        return;
    }
    let volume = format!("kube-api-access-{}", random_suffix());
    let projected = json!({
        "name": volume,
        "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]},
    });
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(projected),
        None => spec["volumes"] = json!([projected]),
    }
    for list in containers {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if mounted_by(c) {
                continue;
            }
            let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount),
                None => c["volumeMounts"] = json!([mount]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_container_mounts_one_credentials_volume() {
        let mut pod = json!({"spec": {
            "containers": [{"name": "a"}, {"name": "b", "volumeMounts": [{"name": "own", "mountPath": MOUNT_PATH}]}],
            "initContainers": [{"name": "i"}],
            "volumes": [{"name": "own", "emptyDir": {}}],
        }});
        mount_credentials(&mut pod);
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 2);
        let name = volumes[1]["name"].as_str().unwrap();
        assert!(
            name.starts_with("kube-api-access-") && name.len() == 21,
            "{name}"
        );
        let sources = &volumes[1]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["path"], "token");
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(sources[2]["downwardAPI"]["items"][0]["path"], "namespace");
        let mount_of = |list: &str, i: usize| pod["spec"][list][i]["volumeMounts"].clone();
        assert_eq!(
            mount_of("containers", 0),
            json!([{"name": name, "readOnly": true, "mountPath": MOUNT_PATH}])
        );
        assert_eq!(mount_of("initContainers", 0)[0]["name"], name);
        assert_eq!(
            mount_of("containers", 1).as_array().unwrap().len(),
            1,
            "its own mount stays"
        );
    }

    #[test]
    fn nothing_is_added_when_every_container_has_its_own() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "volumeMounts": [{"name": "x", "mountPath": MOUNT_PATH}]}]}});
        let before = pod.clone();
        mount_credentials(&mut pod);
        assert_eq!(pod, before);
    }
}
