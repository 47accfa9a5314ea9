//! Upstream's ServiceAccount admission: every pod runs as a service
//! account (`default` unless named), which must exist, and gets its
//! credentials as the `kube-api-access-<suffix>` projected volume (a bound
//! token, the cluster CA from `kube-root-ca.crt` and the namespace) mounted
//! at [`MOUNT_PATH`] in every container, unless the pod or its account
//! turns automounting off.

use std::sync::LazyLock;

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::registry;
use skiff_core::{meta, ApiError};

use super::{Attributes, Mutating, Operation};
use crate::handlers::random_suffix;
use crate::storage::Objects;

/// Where containers find their service account's credentials.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A token's lifetime as upstream's admission asks for it (the kubelet
/// renews it at 80 %).
const TOKEN_SECONDS: i64 = 3607;
/// The field of a pod or an account that turns its token off.
const AUTOMOUNT: &str = "automountServiceAccountToken";
const PULL_SECRETS: &str = "imagePullSecrets";

pub struct ServiceAccount(pub Objects);

#[async_trait]
impl Mutating for ServiceAccount {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        pod: &mut Value,
        _: &mut super::Verdict,
    ) -> Result<(), ApiError> {
        if a.operation != Operation::Create || !a.is("", "Pod") {
            return Ok(());
        }
        let ns = meta::namespace(pod).unwrap_or("default").to_owned();
        let name = pod["spec"]["serviceAccountName"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_owned();
        pod["spec"]["serviceAccountName"] = Value::String(name.clone());
        pod["spec"]["serviceAccount"] = Value::String(name.clone());
        let accounts = registry::lookup("", "v1", "serviceaccounts").expect("served");
        let account = self
            .0
            .recent_mentioning(
                accounts,
                Some(&ns),
                &name,
                &[AUTOMOUNT.as_bytes(), PULL_SECRETS.as_bytes()],
            )
            .await?;
        // The default account appears moments after its namespace; a pod
        // created meanwhile is let through, as its token follows.
        if account.is_none() && name != "default" {
            return Err(ApiError::forbidden(format!(
                "pods \"{}\" is forbidden: error looking up service account {ns}/{name}: serviceaccount \"{name}\" not found",
                meta::name(pod)
            )));
        }
        let automount = match &pod["spec"][AUTOMOUNT] {
            Value::Bool(b) => *b,
            _ => account
                .as_ref()
                .and_then(|a| a[AUTOMOUNT].as_bool())
                .unwrap_or(true),
        };
        if automount {
            mount_credentials(pod);
        }
        // A pod without pull secrets of its own takes its account's names.
        let own = pod["spec"][PULL_SECRETS]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        let names = account.as_ref().and_then(|a| a[PULL_SECRETS].as_array());
        if let Some(names) = names.filter(|n| !own && !n.is_empty()) {
            let named = names.iter().map(|r| json!({"name": r["name"]})).collect();
            pod["spec"][PULL_SECRETS] = Value::Array(named);
        }
        Ok(())
    }
}

/// The credentials volume, named when it is added.
static VOLUME: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "name": "",
        "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]},
    })
});

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
    let mut projected = VOLUME.clone();
    projected["name"] = Value::String(volume.clone());
    match spec["volumes"].as_array_mut() {
        Some(volumes) => volumes.push(projected),
        None => spec["volumes"] = Value::Array(vec![projected]),
    }
    for list in containers {
        let list = spec.get_mut(list).and_then(Value::as_array_mut);
        for c in list.into_iter().flatten() {
            if mounted_by(c) {
                continue;
            }
            let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
            match c["volumeMounts"].as_array_mut() {
                Some(mounts) => mounts.push(mount),
                None => c["volumeMounts"] = Value::Array(vec![mount]),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{creating, user, Fixture};

    #[tokio::test]
    async fn a_pod_runs_as_an_existing_account_with_its_token_unless_turned_off() {
        let f = Fixture::new();
        f.put(
            "",
            "serviceaccounts",
            json!({"metadata": {"name": "quiet", "namespace": "a"}, "automountServiceAccountToken": false}),
        )
        .await;
        let plugin = ServiceAccount(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "pods", &alice);
        let pod = |account: &str| {
            json!({"metadata": {"name": "p", "namespace": "a"},
                "spec": {"serviceAccountName": account, "containers": [{"name": "c"}]}})
        };
        let mut missing = pod("ghost");
        let err = plugin
            .admit(&a, &mut missing, &mut Default::default())
            .await
            .unwrap_err();
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: error looking up service account a/ghost: serviceaccount \"ghost\" not found"
        );
        let mut quiet = pod("quiet");
        plugin
            .admit(&a, &mut quiet, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(quiet["spec"]["serviceAccount"], "quiet");
        assert!(quiet["spec"]["volumes"].is_null());
        // The default account may still be on its way: let through, mounted.
        let mut first = pod("");
        plugin
            .admit(&a, &mut first, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(first["spec"]["serviceAccountName"], "default");
        assert_eq!(
            first["spec"]["containers"][0]["volumeMounts"][0]["mountPath"],
            MOUNT_PATH
        );
    }

    #[tokio::test]
    async fn a_pod_without_pull_secrets_takes_its_accounts() {
        let f = Fixture::new();
        f.put(
            "",
            "serviceaccounts",
            json!({"metadata": {"name": "builder", "namespace": "a"}, "imagePullSecrets": [{"name": "regcred"}]}),
        )
        .await;
        let plugin = ServiceAccount(f.objects.clone());
        let alice = user("alice", &[]);
        let a = creating("", "pods", &alice);
        let pod = |secrets: Value| {
            json!({"metadata": {"name": "p", "namespace": "a"},
                "spec": {"serviceAccountName": "builder", "imagePullSecrets": secrets, "containers": [{"name": "c"}]}})
        };
        let mut plain = pod(Value::Null);
        plugin
            .admit(&a, &mut plain, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(
            plain["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}])
        );
        let mut own = pod(json!([{"name": "mine"}]));
        plugin
            .admit(&a, &mut own, &mut Default::default())
            .await
            .unwrap();
        assert_eq!(own["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));
    }

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
