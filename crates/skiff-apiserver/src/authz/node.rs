//! The Node authorizer, as upstream's: a node (`system:node:<name>` in
//! `system:nodes`) may read only the Secrets, ConfigMaps, claims, volumes
//! and ServiceAccounts that the pods bound to it use, mint tokens only
//! for those accounts, and use only its own Lease; everything else a
//! node may do is the `system:node` rules. Which pod uses what is a
//! graph kept from the store's watch of pods and claims.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, RwLock};

use futures::StreamExt;
use serde_json::Value;
use skiff_core::sparse::Paths;
use skiff_store::{EventKind, ListOptions, Store};

use super::{Attributes, Authorizer, Decision, Target};
use crate::auth::User;
use crate::storage::{decode_at, PODS};

const CLAIMS: &str = "/registry/core/persistentvolumeclaims/";
const VOLUMES: &str = "/registry/core/persistentvolumes/";

/// What a pod can make its node read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Secret,
    ConfigMap,
    Claim,
    ServiceAccount,
}

/// One object in a namespace that a pod uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Used {
    kind: Kind,
    namespace: String,
    name: String,
}

/// The node a pod is bound to and what it uses.
struct PodUse {
    node: String,
    uses: Vec<Used>,
}

#[derive(Default)]
struct Edges {
    /// By pod key.
    pods: HashMap<String, PodUse>,
    /// How many of a node's pods use an object.
    counts: HashMap<(String, Used), usize>,
    /// Which volume each claim (namespace, name) is bound to.
    claims: HashMap<(String, String), String>,
    /// The node each local-path volume lives on: its agent makes and
    /// removes the directory, and releases the volume's cleanup finalizer.
    local_volumes: HashMap<String, String>,
}

impl Edges {
    fn forget_pod(&mut self, key: &str) {
        let Some(old) = self.pods.remove(key) else {
            return;
        };
        for used in old.uses {
            let entry = (old.node.clone(), used);
            if let Some(n) = self.counts.get_mut(&entry) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&entry);
                }
            }
        }
    }

    fn put_pod(&mut self, key: &str, pod: &Value) {
        self.forget_pod(key);
        let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
        if node.is_empty() {
            return;
        }
        let uses: Vec<Used> = uses(pod).into_iter().collect();
        for used in &uses {
            *self
                .counts
                .entry((node.to_owned(), used.clone()))
                .or_default() += 1;
        }
        self.pods.insert(
            key.to_owned(),
            PodUse {
                node: node.to_owned(),
                uses,
            },
        );
    }

    fn put_claim(&mut self, claim: &Value) {
        let m = &claim["metadata"];
        let key = (
            m["namespace"].as_str().unwrap_or_default().to_owned(),
            m["name"].as_str().unwrap_or_default().to_owned(),
        );
        match claim["spec"]["volumeName"]
            .as_str()
            .filter(|v| !v.is_empty())
        {
            Some(volume) => self.claims.insert(key, volume.to_owned()),
            None => self.claims.remove(&key),
        };
    }

    fn put_volume(&mut self, pv: &Value) {
        let name = pv["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let typed: Option<k8s_openapi::api::core::v1::PersistentVolume> =
            serde_json::from_value(pv.clone()).ok();
        let node = typed
            .as_ref()
            .filter(|pv| skiff_core::volumes::is_local_path(pv))
            .and_then(skiff_core::volumes::pinned_node);
        match node {
            Some(node) => self.local_volumes.insert(name, node.to_owned()),
            None => self.local_volumes.remove(&name),
        };
    }

    /// Whether `volume` is a local-path volume on `node`.
    fn holds_locally(&self, node: &str, volume: &str) -> bool {
        self.local_volumes.get(volume).is_some_and(|n| n == node)
    }

    fn has(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        let used = Used {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        self.counts.contains_key(&(node.to_owned(), used))
    }

    /// Whether a claim used by one of the node's pods is bound to `volume`.
    fn has_volume(&self, node: &str, volume: &str) -> bool {
        self.claims
            .iter()
            .any(|((ns, claim), v)| v == volume && self.has(node, Kind::Claim, ns, claim))
    }
}

/// Whether a pod's stored JSON may name a node: a `nodeName` key with a
/// string value (any such key).
fn names_a_node(pod: &[u8]) -> bool {
    crate::storage::mentions(pod, br#""nodeName":""#)
}

/// Whether a change to a pod must be read to keep its node's uses. One the
/// graph does not hold yet counts if it may name a node. One it holds is
/// already on its node, which it keeps, and its spec may change what it
/// uses only by adding ephemeral containers: a status write (most of a
/// bound pod's writes) changes nothing.
fn needs_a_look(held: bool, pod: &[u8]) -> bool {
    if held {
        crate::storage::mentions(pod, br#""ephemeralContainers""#)
    } else {
        names_a_node(pod)
    }
}

/// A pod spec's lists of containers, whose environment names secrets and
/// config maps.
const CONTAINER_LISTS: [&str; 3] = ["initContainers", "containers", "ephemeralContainers"];

/// What `uses` and `put_pod` read of a pod: its status and managed
/// fields, most of a running pod's bytes, are only scanned.
static POD_USES: LazyLock<Paths> = LazyLock::new(|| {
    let env = CONTAINER_LISTS
        .iter()
        .flat_map(|c| ["env", "envFrom"].map(|e| format!("spec.{c}.{e}")));
    let fixed = [
        "metadata.namespace",
        "metadata.name",
        "spec.nodeName",
        "spec.serviceAccountName",
        "spec.imagePullSecrets",
        "spec.volumes",
    ];
    let paths: Vec<String> = fixed.into_iter().map(str::to_owned).chain(env).collect();
    Paths::of(paths.iter().map(String::as_str))
});

fn read_pod(bytes: &[u8]) -> Option<Value> {
    POD_USES.read(bytes).ok()
}

/// Everything a pod's spec makes its node read.
fn uses(pod: &Value) -> HashSet<Used> {
    let ns = pod["metadata"]["namespace"].as_str().unwrap_or_default();
    let spec = &pod["spec"];
    let mut out = HashSet::new();
    let mut add = |kind, name: &Value| {
        if let Some(name) = name.as_str().filter(|n| !n.is_empty()) {
            out.insert(Used {
                kind,
                namespace: ns.to_owned(),
                name: name.to_owned(),
            });
        }
    };
    let account = spec["serviceAccountName"]
        .as_str()
        .filter(|a| !a.is_empty())
        .unwrap_or("default");
    add(Kind::ServiceAccount, &Value::from(account));
    for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
        add(Kind::Secret, &s["name"]);
    }
    for v in spec["volumes"].as_array().into_iter().flatten() {
        add(Kind::Secret, &v["secret"]["secretName"]);
        add(Kind::ConfigMap, &v["configMap"]["name"]);
        add(Kind::Claim, &v["persistentVolumeClaim"]["claimName"]);
        for source in v["projected"]["sources"].as_array().into_iter().flatten() {
            add(Kind::Secret, &source["secret"]["name"]);
            add(Kind::ConfigMap, &source["configMap"]["name"]);
        }
        if v["ephemeral"].is_object() {
            let pod_name = pod["metadata"]["name"].as_str().unwrap_or_default();
            let volume = v["name"].as_str().unwrap_or_default();
            add(Kind::Claim, &Value::from(format!("{pod_name}-{volume}")));
        }
    }
    let containers = CONTAINER_LISTS
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten());
    for c in containers {
        for e in c["env"].as_array().into_iter().flatten() {
            add(Kind::Secret, &e["valueFrom"]["secretKeyRef"]["name"]);
            add(Kind::ConfigMap, &e["valueFrom"]["configMapKeyRef"]["name"]);
        }
        for e in c["envFrom"].as_array().into_iter().flatten() {
            add(Kind::Secret, &e["secretRef"]["name"]);
            add(Kind::ConfigMap, &e["configMapRef"]["name"]);
        }
    }
    out
}

/// Which node uses what, kept current from the store.
#[derive(Default)]
pub struct Graph {
    edges: RwLock<Edges>,
}

impl Graph {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Edges> {
        self.edges.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Edges> {
        self.edges.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads every pod, claim and volume; returns the revision read at.
    pub async fn load(&self, store: &dyn Store) -> Result<i64, skiff_store::Error> {
        let pods = store.list(PODS, ListOptions::default()).await?;
        let claims = store.list(CLAIMS, ListOptions::default()).await?;
        let volumes = store.list(VOLUMES, ListOptions::default()).await?;
        let mut edges = Edges::default();
        for kv in &volumes.items {
            if let Ok(pv) = decode_at(&kv.value, kv.mod_rev) {
                edges.put_volume(&pv);
            }
        }
        for kv in &pods.items {
            if let Some(pod) = read_pod(&kv.value) {
                edges.put_pod(&kv.key, &pod);
            }
        }
        for kv in &claims.items {
            if let Ok(claim) = decode_at(&kv.value, kv.mod_rev) {
                edges.put_claim(&claim);
            }
        }
        *self.write() = edges;
        Ok(pods.revision.max(claims.revision).max(volumes.revision))
    }

    /// Applies the store's changes for ever, reading everything again when
    /// the watch breaks.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>, mut revision: i64) {
        loop {
            let streams = match (
                store.watch(PODS, revision).await,
                store.watch(CLAIMS, revision).await,
                store.watch(VOLUMES, revision).await,
            ) {
                (Ok(pods), Ok(claims), Ok(volumes)) => vec![pods, claims, volumes],
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                    tracing::warn!(error = %e, "watching pods for the Node authorizer");
                    // Not at once again: each round reads every pod.
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    Vec::new()
                }
            };
            let mut changes = futures::stream::select_all(streams);
            while let Some(Ok(event)) = changes.next().await {
                let mut edges = self.write();
                let key = &event.kv.key;
                if key.starts_with(VOLUMES) {
                    match event.kind {
                        EventKind::Deleted => {
                            let name = key.trim_start_matches(VOLUMES);
                            edges.local_volumes.remove(name);
                        }
                        _ => {
                            if let Ok(pv) = decode_at(&event.kv.value, event.kv.mod_rev) {
                                edges.put_volume(&pv);
                            }
                        }
                    }
                    continue;
                }
                match (event.kind, key.starts_with(PODS)) {
                    (EventKind::Deleted, true) => edges.forget_pod(key),
                    // Most changes change no uses: their bytes are not
                    // decoded (every new pod, every status write).
                    (_, true) if !needs_a_look(edges.pods.contains_key(key), &event.kv.value) => {}
                    (_, true) => {
                        if let Some(pod) = read_pod(&event.kv.value) {
                            edges.put_pod(key, &pod);
                        }
                    }
                    (EventKind::Deleted, false) => {
                        let mut claim =
                            decode_at(&event.kv.value, event.kv.mod_rev).unwrap_or_default();
                        claim["spec"]["volumeName"] = Value::Null;
                        edges.put_claim(&claim);
                    }
                    (_, false) => {
                        if let Ok(claim) = decode_at(&event.kv.value, event.kv.mod_rev) {
                            edges.put_claim(&claim);
                        }
                    }
                }
            }
            revision =
                super::reload("pods for the Node authorizer", || self.load(store.as_ref())).await;
        }
    }
}

/// The node a user is, if it is one.
pub fn node_of(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix("system:node:")?;
    (!name.is_empty() && user.groups.iter().any(|g| g == "system:nodes")).then_some(name)
}

pub struct NodeAuthorizer {
    graph: Arc<Graph>,
    rules: Vec<super::rbac::Rule>,
}

impl NodeAuthorizer {
    pub fn new(graph: Arc<Graph>) -> Self {
        let rules = super::bootstrap::node_rules()
            .into_iter()
            .filter_map(|r| serde_json::from_value(r).ok())
            .collect();
        Self { graph, rules }
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, a: &Attributes) -> Decision {
        let Some(node) = node_of(&a.user) else {
            return Decision::NoOpinion;
        };
        let Target::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
        } = &a.target
        else {
            return self.by_rules(a);
        };
        let ns = namespace.as_deref().unwrap_or_default();
        let named = name.as_deref();
        let graph = |kind| {
            let allowed = named.is_some_and(|n| self.graph.read().has(node, kind, ns, n));
            if allowed {
                Decision::Allow
            } else {
                Decision::NoOpinion
            }
        };
        match (group.as_str(), resource.as_str(), subresource.as_deref()) {
            ("", "secrets", None) if a.verb == "get" => graph(Kind::Secret),
            ("", "configmaps", None) if a.verb == "get" => graph(Kind::ConfigMap),
            ("", "persistentvolumeclaims", None) if a.verb == "get" => graph(Kind::Claim),
            ("", "serviceaccounts", None) if a.verb == "get" => graph(Kind::ServiceAccount),
            ("", "serviceaccounts", Some("token")) if a.verb == "create" => {
                graph(Kind::ServiceAccount)
            }
            ("", "persistentvolumes", None) => {
                let graph = self.graph.read();
                let allowed = named.is_some_and(|v| match a.verb.as_str() {
                    "get" => graph.has_volume(node, v) || graph.holds_locally(node, v),
                    // NodeRestriction lets it change only the finalizer.
                    "patch" | "update" => graph.holds_locally(node, v),
                    _ => false,
                });
                match allowed {
                    true => Decision::Allow,
                    false => Decision::NoOpinion,
                }
            }
            ("", "secrets" | "configmaps" | "persistentvolumeclaims" | "persistentvolumes", _)
            | ("", "serviceaccounts", _) => Decision::NoOpinion,
            // Its own Lease only (creating one names it in the body,
            // which NodeRestriction checks).
            ("coordination.k8s.io", "leases", _) => {
                let own = ns == "kube-node-lease" && named.is_none_or(|n| n == node);
                if own {
                    self.by_rules(a)
                } else {
                    Decision::NoOpinion
                }
            }
            _ => self.by_rules(a),
        }
    }

    fn rules_of(&self, _: Option<&str>, _: &str) -> Option<Vec<super::rbac::Rule>> {
        None
    }

    fn rules_for(&self, user: &User, _: &str) -> Vec<super::rbac::Rule> {
        match node_of(user) {
            Some(_) => self.rules.clone(),
            None => Vec::new(),
        }
    }

    /// A node's reads of its pods' objects are refused for want of a pod
    /// that uses them, as upstream says.
    fn reason(&self, a: &Attributes) -> Option<String> {
        let node = node_of(&a.user)?;
        let Target::Resource {
            group, resource, ..
        } = &a.target
        else {
            return None;
        };
        let graphed = group.is_empty()
            && matches!(
                resource.as_str(),
                "secrets"
                    | "configmaps"
                    | "persistentvolumeclaims"
                    | "persistentvolumes"
                    | "serviceaccounts"
            );
        graphed.then(|| format!("no relationship found between node '{node}' and this object"))
    }
}

impl NodeAuthorizer {
    fn by_rules(&self, a: &Attributes) -> Decision {
        if self.rules.iter().any(|r| r.allows(a)) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_pod_naming_a_node_needs_a_look() {
        assert!(!needs_a_look(false, br#"{"spec":{"containers":[]}}"#));
        assert!(needs_a_look(false, br#"{"spec":{"nodeName":"n1"}}"#));
        // Held, on its node: only ephemeral containers add uses.
        let running = br#"{"spec":{"nodeName":"n1","containers":[]},"status":{"ephemeralContainerStatuses":[]}}"#;
        assert!(!needs_a_look(true, running));
        let debugged = br#"{"spec":{"nodeName":"n1","ephemeralContainers":[{"name":"d"}]}}"#;
        assert!(needs_a_look(true, debugged));
    }

    fn node(name: &str) -> User {
        User {
            name: format!("system:node:{name}"),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
        }
    }

    fn ask(
        user: &User,
        verb: &str,
        resource: &str,
        sub: Option<&str>,
        ns: &str,
        name: Option<&str>,
    ) -> Attributes {
        let group = if resource == "leases" {
            "coordination.k8s.io"
        } else {
            ""
        };
        Attributes {
            user: user.clone(),
            verb: verb.into(),
            target: Target::Resource {
                group: group.into(),
                resource: resource.into(),
                subresource: sub.map(Into::into),
                namespace: (!ns.is_empty()).then(|| ns.into()),
                name: name.map(Into::into),
            },
        }
    }

    fn pod(name: &str, node: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "apps"}, "spec": {
            "nodeName": node, "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "registry"}],
            "volumes": [{"name": "c", "configMap": {"name": "settings"}},
                {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env-secret", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "env-config"}}]}]}})
    }

    #[test]
    fn the_stored_bytes_read_in_part_give_what_the_whole_pod_uses() {
        let mut whole = pod("web", "a");
        let volumes = whole["spec"]["volumes"].as_array_mut().unwrap();
        volumes.push(json!({"name": "e", "ephemeral": {"volumeClaimTemplate": {}}}));
        whole["spec"]["initContainers"] =
            json!([{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}]);
        whole["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready"}]});
        let read = read_pod(&serde_json::to_vec(&whole).unwrap()).unwrap();
        assert_eq!(read["spec"]["nodeName"], "a");
        assert_eq!(read.get("status"), None);
        assert_eq!(uses(&read), uses(&whole));
        assert_eq!(uses(&whole).len(), 9);
    }

    #[test]
    fn a_node_reads_only_what_its_pods_use() {
        let graph = Arc::new(Graph::default());
        graph.write().put_pod("/p/apps/web", &pod("web", "a"));
        graph.write().put_claim(&json!({"metadata": {"name": "data", "namespace": "apps"}, "spec": {"volumeName": "pv-1"}}));
        let authz = NodeAuthorizer::new(graph.clone());
        let (a, b) = (node("a"), node("b"));
        let allowed = |user: &User, verb, resource, sub, name| {
            authz.authorize(&ask(user, verb, resource, sub, "apps", name)) == Decision::Allow
        };
        for (resource, name) in [
            ("secrets", "registry"),
            ("secrets", "projected"),
            ("secrets", "env-secret"),
            ("configmaps", "settings"),
            ("configmaps", "env-config"),
            ("persistentvolumeclaims", "data"),
            ("serviceaccounts", "builder"),
        ] {
            assert!(
                allowed(&a, "get", resource, None, Some(name)),
                "{resource} {name}"
            );
            assert!(
                !allowed(&b, "get", resource, None, Some(name)),
                "{resource} {name} by b"
            );
        }
        assert!(!allowed(&a, "get", "secrets", None, Some("other")));
        assert_eq!(
            authz.reason(&ask(&a, "get", "secrets", None, "apps", Some("other"))),
            Some("no relationship found between node 'a' and this object".into())
        );
        assert_eq!(
            authz.reason(&ask(&a, "get", "pods", None, "apps", None)),
            None
        );
        assert!(
            !allowed(&a, "list", "secrets", None, None),
            "no lists of Secrets"
        );
        assert!(!allowed(&a, "update", "secrets", None, Some("registry")));
        assert!(allowed(
            &a,
            "create",
            "serviceaccounts",
            Some("token"),
            Some("builder")
        ));
        assert!(!allowed(
            &a,
            "create",
            "serviceaccounts",
            Some("token"),
            Some("default")
        ));
        let volume = |user: &User| {
            authz.authorize(&ask(
                user,
                "get",
                "persistentvolumes",
                None,
                "",
                Some("pv-1"),
            )) == Decision::Allow
        };
        assert!(volume(&a) && !volume(&b));
        // Leases: its own only.
        let lease = |user: &User, name| {
            authz.authorize(&ask(
                user,
                "update",
                "leases",
                None,
                "kube-node-lease",
                Some(name),
            )) == Decision::Allow
        };
        assert!(lease(&a, "a") && !lease(&a, "b"));
        // The node rules: pods are read, pod status written.
        assert!(allowed(&a, "list", "pods", None, None));
        assert!(allowed(&a, "patch", "pods", Some("status"), Some("web")));
        assert!(!allowed(&a, "create", "pods", Some("exec"), Some("web")));
        // Not a node: no opinion.
        let alice = User {
            name: "alice".into(),
            groups: vec![],
        };
        assert_eq!(
            authz.authorize(&ask(&alice, "get", "pods", None, "apps", None)),
            Decision::NoOpinion
        );
        let impostor = User {
            name: "system:node:a".into(),
            groups: vec![],
        };
        assert_eq!(
            authz.authorize(&ask(&impostor, "list", "pods", None, "apps", None)),
            Decision::NoOpinion
        );
        // The pod moves away, then goes: its uses go with it.
        graph.write().put_pod("/p/apps/web", &pod("web", "b"));
        assert!(!allowed(&a, "get", "secrets", None, Some("registry")));
        assert!(allowed(&b, "get", "secrets", None, Some("registry")));
        graph.write().forget_pod("/p/apps/web");
        assert!(!allowed(&b, "get", "secrets", None, Some("registry")));
    }

    #[test]
    fn shared_uses_are_counted() {
        let graph = Graph::default();
        graph.write().put_pod("/p/apps/one", &pod("one", "a"));
        graph.write().put_pod("/p/apps/two", &pod("two", "a"));
        graph.write().forget_pod("/p/apps/one");
        assert!(graph.read().has("a", Kind::Secret, "apps", "registry"));
        graph.write().forget_pod("/p/apps/two");
        assert!(graph.read().counts.is_empty());
    }
}
