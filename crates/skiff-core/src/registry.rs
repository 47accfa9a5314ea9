//! Every resource the API serves: where it lives, its scope and names, and
//! the typed k8s-openapi struct that checks its shape. The built-in ones
//! are fixed; custom ones come and go with CustomResourceDefinitions.

use std::sync::{LazyLock, Mutex, RwLock};

use foldhash::HashMap;
use schemars::{generate::SchemaGenerator, Schema};
use serde_json::Value;

/// Reads JSON bytes through a typed struct, as `ResourceType::decode_json`.
pub type DecodeJson = fn(&[u8], Option<&mut Vec<String>>) -> Result<Value, serde_json::Error>;

/// One resource type at one group-version.
#[derive(Debug)]
pub struct ResourceType {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// The singular name, when it is not the lowercased kind.
    pub singular: &'static str,
    /// Defined by a CustomResourceDefinition: its schema (see `crd`)
    /// checks the shape, not `decode`.
    pub custom: bool,
    /// Round-trips an object through its typed struct: an error means the
    /// object has the wrong shape; fields the struct does not know are
    /// dropped, their paths added to the list when one is given (in the
    /// same pass).
    pub decode: fn(Value, Option<&mut Vec<String>>) -> Result<Value, serde_json::Error>,
    /// `decode` from JSON bytes, without building the untyped object first.
    pub decode_json: DecodeJson,
    /// Adds the type's JSON schema to a generator.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn singular(&self) -> String {
        if self.singular.is_empty() {
            self.kind.to_ascii_lowercase()
        } else {
            self.singular.to_owned()
        }
    }

    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    pub fn has_subresource(&self, name: &str) -> bool {
        self.subresources.contains(&name)
    }

    /// Whether updates to the main resource ignore `status` (upstream's
    /// status strategy), because a status subresource exists.
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }

    /// The storage key prefix shared by every version of this resource
    /// (and by both APIs of events).
    pub fn key_prefix(&self) -> String {
        self.key_with(&[])
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => self.key_with(&[ns, "/", name]),
            _ => self.key_with(&[name]),
        }
    }

    /// The key prefix of a list, in one namespace or across all.
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => self.key_with(&[ns, "/"]),
            _ => self.key_prefix(),
        }
    }

    /// The key prefix followed by `parts`, built in one allocation (a key
    /// is made for every read and write).
    fn key_with(&self, parts: &[&str]) -> String {
        // Both APIs' events are one resource, stored as the core one.
        let group = if self.group.is_empty() || crate::events::is_new_api(self.group, self.plural) {
            "core"
        } else {
            self.group
        };
        let head = ["/registry/", group, "/", self.plural, "/"];
        let len = head.iter().chain(parts).map(|p| p.len()).sum();
        let mut key = String::with_capacity(len);
        for part in head.iter().chain(parts) {
            key.push_str(part);
        }
        key
    }
}

fn decode<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: Value,
    unknown: Option<&mut Vec<String>>,
) -> Result<Value, serde_json::Error> {
    let typed: T = match unknown {
        None => serde_json::from_value(v)?,
        Some(unknown) => serde_ignored::deserialize(v, |path| unknown.push(dotted(&path)))?,
    };
    serde_json::to_value(typed)
}

/// A Scale (`autoscaling/v1`, a subresource's body that no resource
/// stores) through its typed struct, as a resource's `decode`.
pub fn decode_scale(
    v: Value,
    unknown: Option<&mut Vec<String>>,
) -> Result<Value, serde_json::Error> {
    decode::<k8s_openapi::api::autoscaling::v1::Scale>(v, unknown)
}

fn decode_json<T: serde::de::DeserializeOwned + serde::Serialize>(
    bytes: &[u8],
    unknown: Option<&mut Vec<String>>,
) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let typed: T = match unknown {
        None => serde::Deserialize::deserialize(&mut de)?,
        Some(unknown) => serde_ignored::deserialize(&mut de, |path| unknown.push(dotted(&path)))?,
    };
    de.end()?;
    serde_json::to_value(typed)
}

/// A field's path as upstream's strict decoding names it:
/// `spec.containers[0].imagex`.
fn dotted(path: &serde_ignored::Path) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", dotted(parent)),
        Path::Map { parent, key } => match dotted(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => dotted(parent),
    }
}

fn schema<T: schemars::JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

macro_rules! resources {
    ($( $group:literal $version:literal $kind:literal $plural:literal $scope:ident $ty:ty,
        [$($short:literal),*] [$($cat:literal),*] [$($sub:literal),*]; )*) => {
        /// Every served resource, in discovery order.
        pub static RESOURCES: &[ResourceType] = &[$(
            ResourceType {
                group: $group,
                version: $version,
                kind: $kind,
                plural: $plural,
                namespaced: resources!(@scope $scope),
                short_names: &[$($short),*],
                categories: &[$($cat),*],
                subresources: &[$($sub),*],
                singular: "",
                custom: false,
                decode: decode::<$ty>,
                decode_json: decode_json::<$ty>,
                schema: schema::<$ty>,
            },
        )*];
    };
    (@scope Namespaced) => { true };
    (@scope Cluster) => { false };
}

use k8s_openapi::api::{
    admissionregistration::v1 as admreg, apps::v1 as apps, autoscaling::v1 as as1,
    autoscaling::v2 as as2, batch::v1 as batch, certificates::v1 as certs,
    coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, events::v1 as ev,
    networking::v1 as net, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as sched, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1 as reg;

resources! {
    "" "v1" "Namespace" "namespaces" Cluster core::Namespace, ["ns"] [] ["status", "finalize"];
    "" "v1" "Pod" "pods" Namespaced core::Pod, ["po"] ["all"] ["status", "binding", "eviction", "log", "exec", "attach", "portforward", "ephemeralcontainers", "resize"];
    "" "v1" "Node" "nodes" Cluster core::Node, ["no"] [] ["status", "proxy"];
    "" "v1" "Service" "services" Namespaced core::Service, ["svc"] ["all"] ["status"];
    "" "v1" "Endpoints" "endpoints" Namespaced core::Endpoints, ["ep"] [] [];
    "" "v1" "ConfigMap" "configmaps" Namespaced core::ConfigMap, ["cm"] [] [];
    "" "v1" "Secret" "secrets" Namespaced core::Secret, [] [] [];
    "" "v1" "Event" "events" Namespaced core::Event, ["ev"] [] [];
    "" "v1" "ServiceAccount" "serviceaccounts" Namespaced core::ServiceAccount, ["sa"] [] ["token"];
    "" "v1" "PersistentVolume" "persistentvolumes" Cluster core::PersistentVolume, ["pv"] [] ["status"];
    "" "v1" "PersistentVolumeClaim" "persistentvolumeclaims" Namespaced core::PersistentVolumeClaim, ["pvc"] [] ["status"];
    "" "v1" "LimitRange" "limitranges" Namespaced core::LimitRange, ["limits"] [] [];
    "" "v1" "ResourceQuota" "resourcequotas" Namespaced core::ResourceQuota, ["quota"] [] ["status"];
    "apps" "v1" "Deployment" "deployments" Namespaced apps::Deployment, ["deploy"] ["all"] ["status", "scale"];
    "apps" "v1" "ReplicaSet" "replicasets" Namespaced apps::ReplicaSet, ["rs"] ["all"] ["status", "scale"];
    "apps" "v1" "StatefulSet" "statefulsets" Namespaced apps::StatefulSet, ["sts"] ["all"] ["status", "scale"];
    "apps" "v1" "DaemonSet" "daemonsets" Namespaced apps::DaemonSet, ["ds"] ["all"] ["status"];
    "apps" "v1" "ControllerRevision" "controllerrevisions" Namespaced apps::ControllerRevision, [] [] [];
    "batch" "v1" "Job" "jobs" Namespaced batch::Job, [] ["all"] ["status"];
    "batch" "v1" "CronJob" "cronjobs" Namespaced batch::CronJob, ["cj"] ["all"] ["status"];
    "autoscaling" "v2" "HorizontalPodAutoscaler" "horizontalpodautoscalers" Namespaced as2::HorizontalPodAutoscaler, ["hpa"] ["all"] ["status"];
    "autoscaling" "v1" "HorizontalPodAutoscaler" "horizontalpodautoscalers" Namespaced as1::HorizontalPodAutoscaler, ["hpa"] ["all"] ["status"];
    "coordination.k8s.io" "v1" "Lease" "leases" Namespaced coord::Lease, [] [] [];
    "scheduling.k8s.io" "v1" "PriorityClass" "priorityclasses" Cluster sched::PriorityClass, ["pc"] [] [];
    "node.k8s.io" "v1" "RuntimeClass" "runtimeclasses" Cluster node::RuntimeClass, [] [] [];
    "storage.k8s.io" "v1" "StorageClass" "storageclasses" Cluster storage::StorageClass, ["sc"] [] [];
    "storage.k8s.io" "v1" "CSINode" "csinodes" Cluster storage::CSINode, [] [] [];
    "storage.k8s.io" "v1" "CSIDriver" "csidrivers" Cluster storage::CSIDriver, [] [] [];
    "storage.k8s.io" "v1" "VolumeAttributesClass" "volumeattributesclasses" Cluster storage::VolumeAttributesClass, ["vac"] [] [];
    "rbac.authorization.k8s.io" "v1" "Role" "roles" Namespaced rbac::Role, [] [] [];
    "rbac.authorization.k8s.io" "v1" "RoleBinding" "rolebindings" Namespaced rbac::RoleBinding, [] [] [];
    "rbac.authorization.k8s.io" "v1" "ClusterRole" "clusterroles" Cluster rbac::ClusterRole, [] [] [];
    "rbac.authorization.k8s.io" "v1" "ClusterRoleBinding" "clusterrolebindings" Cluster rbac::ClusterRoleBinding, [] [] [];
    "networking.k8s.io" "v1" "Ingress" "ingresses" Namespaced net::Ingress, ["ing"] [] ["status"];
    "networking.k8s.io" "v1" "IngressClass" "ingressclasses" Cluster net::IngressClass, [] [] [];
    "networking.k8s.io" "v1" "NetworkPolicy" "networkpolicies" Namespaced net::NetworkPolicy, ["netpol"] [] [];
    "discovery.k8s.io" "v1" "EndpointSlice" "endpointslices" Namespaced disc::EndpointSlice, [] [] [];
    "events.k8s.io" "v1" "Event" "events" Namespaced ev::Event, ["ev"] [] [];
    "certificates.k8s.io" "v1" "CertificateSigningRequest" "certificatesigningrequests" Cluster certs::CertificateSigningRequest, ["csr"] [] ["status", "approval"];
    "policy" "v1" "PodDisruptionBudget" "poddisruptionbudgets" Namespaced policy::PodDisruptionBudget, ["pdb"] [] ["status"];
    "" "v1" "ReplicationController" "replicationcontrollers" Namespaced core::ReplicationController, ["rc"] ["all"] ["status", "scale"];
    "" "v1" "ComponentStatus" "componentstatuses" Cluster core::ComponentStatus, ["cs"] [] [];
    "" "v1" "PodTemplate" "podtemplates" Namespaced core::PodTemplate, [] [] [];
    "admissionregistration.k8s.io" "v1" "ValidatingWebhookConfiguration" "validatingwebhookconfigurations" Cluster admreg::ValidatingWebhookConfiguration, [] ["api-extensions"] [];
    "admissionregistration.k8s.io" "v1" "MutatingWebhookConfiguration" "mutatingwebhookconfigurations" Cluster admreg::MutatingWebhookConfiguration, [] ["api-extensions"] [];
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicy" "validatingadmissionpolicies" Cluster admreg::ValidatingAdmissionPolicy, [] ["api-extensions"] ["status"];
    "admissionregistration.k8s.io" "v1" "ValidatingAdmissionPolicyBinding" "validatingadmissionpolicybindings" Cluster admreg::ValidatingAdmissionPolicyBinding, [] ["api-extensions"] [];
    "apiregistration.k8s.io" "v1" "APIService" "apiservices" Cluster reg::APIService, [] ["api-extensions"] ["status"];
    "metrics.k8s.io" "v1beta1" "NodeMetrics" "nodes" Cluster crate::metrics_api::NodeMetrics, [] [] [];
    "metrics.k8s.io" "v1beta1" "PodMetrics" "pods" Namespaced crate::metrics_api::PodMetrics, [] [] [];
    "apiextensions.k8s.io" "v1" "CustomResourceDefinition" "customresourcedefinitions" Cluster ext::CustomResourceDefinition, ["crd", "crds"] ["api-extensions"] ["status"];
}

/// The custom resources served now, from the established definitions.
static CUSTOM: RwLock<Vec<&'static ResourceType>> = RwLock::new(Vec::new());

/// Every custom resource type ever served by this process. A type lives
/// for the process (requests hold it by reference); one that comes back
/// unchanged, as a definition re-applied, is reused, so this grows only
/// with definitions that differ (as do its strings: see [`intern`]).
static KEPT: Mutex<Vec<&'static ResourceType>> = Mutex::new(Vec::new());

impl ResourceType {
    /// The same names, scope and subresources.
    fn same(&self, other: &ResourceType) -> bool {
        (
            self.group,
            self.version,
            self.kind,
            self.plural,
            self.singular,
        ) == (
            other.group,
            other.version,
            other.kind,
            other.plural,
            other.singular,
        ) && self.namespaced == other.namespaced
            && self.short_names == other.short_names
            && self.categories == other.categories
            && self.subresources == other.subresources
            && self.custom == other.custom
    }
}

/// Serves these custom resource types from now on, in place of those
/// before.
pub fn set_custom(types: Vec<ResourceType>) {
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let mut now = Vec::with_capacity(types.len());
    for t in types {
        let found = kept.iter().find(|k| k.same(&t)).copied();
        now.push(found.unwrap_or_else(|| {
            let leaked: &'static ResourceType = Box::leak(Box::new(t));
            kept.push(leaked);
            leaked
        }));
    }
    *CUSTOM.write().unwrap_or_else(|e| e.into_inner()) = now;
}

/// Strings custom resource types hold, each kept once for the process.
static STRINGS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
/// Lists of strings custom resource types hold, each kept once.
static LISTS: Mutex<Vec<&'static [&'static str]>> = Mutex::new(Vec::new());

/// A string for a custom resource type: kept for the process, once per
/// distinct text, so reloading the same definitions keeps nothing more.
pub fn intern(s: &str) -> &'static str {
    let mut kept = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = kept.iter().find(|k| **k == s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    kept.push(leaked);
    leaked
}

/// A list of strings, as [`intern`].
pub fn intern_all(items: &[String]) -> &'static [&'static str] {
    let items: Vec<&'static str> = items.iter().map(|s| intern(s)).collect();
    let mut kept = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = kept.iter().find(|k| **k == items.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    kept.push(leaked);
    leaked
}

/// Every served resource, built-in first, then custom.
pub fn all() -> Vec<&'static ResourceType> {
    let custom = CUSTOM.read().unwrap_or_else(|e| e.into_inner());
    RESOURCES.iter().chain(custom.iter().copied()).collect()
}

/// The built-in resources by the names requests find them by: every
/// request looks up several, so they are hashed rather than scanned. The
/// tables are fixed and a request's names only look up, so the fast
/// hasher is safe.
struct Index {
    by_plural: HashMap<(&'static str, &'static str, &'static str), &'static ResourceType>,
    by_kind: HashMap<(&'static str, &'static str, &'static str), &'static ResourceType>,
    /// The first version listed of each group and plural.
    preferred: HashMap<(&'static str, &'static str), &'static ResourceType>,
}

static INDEX: LazyLock<Index> = LazyLock::new(|| {
    let mut index = Index {
        by_plural: HashMap::default(),
        by_kind: HashMap::default(),
        preferred: HashMap::default(),
    };
    for r in RESOURCES {
        index
            .by_plural
            .entry((r.group, r.version, r.plural))
            .or_insert(r);
        index
            .by_kind
            .entry((r.group, r.version, r.kind))
            .or_insert(r);
        index.preferred.entry((r.group, r.plural)).or_insert(r);
    }
    index
});

/// A custom resource passing `test`, for names no built-in one has.
fn find_custom(test: impl Fn(&ResourceType) -> bool) -> Option<&'static ResourceType> {
    let custom = CUSTOM.read().unwrap_or_else(|e| e.into_inner());
    custom.iter().copied().find(|r| test(r))
}

/// Finds a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    let by_plural: &HashMap<(&str, &str, &str), _> = &INDEX.by_plural;
    by_plural
        .get(&(group, version, plural))
        .copied()
        .or_else(|| find_custom(|r| r.group == group && r.version == version && r.plural == plural))
}

/// The preferred version of a resource, by group and plural name.
pub fn preferred(group: &str, plural: &str) -> Option<&'static ResourceType> {
    let preferred: &HashMap<(&str, &str), _> = &INDEX.preferred;
    preferred
        .get(&(group, plural))
        .copied()
        .or_else(|| find_custom(|r| r.group == group && r.plural == plural))
}

/// Finds a resource by group, version and kind.
pub fn by_kind(group: &str, version: &str, kind: &str) -> Option<&'static ResourceType> {
    let by_kind: &HashMap<(&str, &str, &str), _> = &INDEX.by_kind;
    by_kind
        .get(&(group, version, kind))
        .copied()
        .or_else(|| find_custom(|r| r.group == group && r.version == version && r.kind == kind))
}

/// The group-versions served, in preference order within each group.
pub fn group_versions() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in all() {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
            Some(_) => {}
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

/// Splits `apps/v1` into `("apps", "v1")` and `v1` into `("", "v1")`.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plural_names_are_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.version == b.version && a.plural == b.plural),
                    "{} served twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn storage_keys_are_laid_out_as_upstream() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert_eq!(pods.key(Some("ns"), "p"), "/registry/core/pods/ns/p");
        assert_eq!(pods.list_prefix(Some("ns")), "/registry/core/pods/ns/");
        assert_eq!(pods.list_prefix(None), "/registry/core/pods/");
        let nodes = lookup("", "v1", "nodes").unwrap();
        // A cluster-scoped resource ignores a namespace.
        assert_eq!(nodes.key(Some("ns"), "n"), "/registry/core/nodes/n");
        assert_eq!(nodes.list_prefix(Some("ns")), "/registry/core/nodes/");
        let deployments = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(deployments.key(None, "d"), "/registry/apps/deployments/d");
    }

    #[test]
    fn decode_checks_shape_and_drops_unknown_fields() {
        let pods = lookup("", "v1", "pods").unwrap();
        let ok = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}], "bogus": 1}});
        let out = (pods.decode)(ok, None).unwrap();
        assert!(out["spec"].get("bogus").is_none());
        let bad = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p"}, "spec": {"containers": "nope"}});
        assert!((pods.decode)(bad, None).is_err());
    }

    #[test]
    fn unknown_fields_are_named_as_upstream_in_the_decoding_pass() {
        let deployments = lookup("apps", "v1", "deployments").unwrap();
        let d = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "bogus": 1, "labels": {"free": "form"}},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": [
                {"name": "c", "image": "i"},
                {"name": "d", "image": "i", "imagex": "typo", "ports": [{"containerPort": 80, "hostPorts": 1}]},
            ]}}},
            "extra": {"deep": [1]}});
        let mut unknown = Vec::new();
        let clean = (deployments.decode)(d, Some(&mut unknown)).unwrap();
        assert_eq!(
            unknown,
            [
                "metadata.bogus",
                "spec.template.spec.containers[1].imagex",
                "spec.template.spec.containers[1].ports[0].hostPorts",
                "extra",
            ]
        );
        assert!(clean.get("extra").is_none());
        assert_eq!(clean["metadata"]["labels"]["free"], "form");
        let mut none = Vec::new();
        let svc = lookup("", "v1", "services").unwrap();
        let s = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        (svc.decode)(s, Some(&mut none)).unwrap();
        assert!(none.is_empty(), "{none:?}");
    }

    #[test]
    fn keys_nest_namespace_under_resource() {
        let d = lookup("apps", "v1", "deployments").unwrap();
        assert_eq!(
            d.key(Some("ns"), "web"),
            "/registry/apps/deployments/ns/web"
        );
        let n = lookup("", "v1", "nodes").unwrap();
        assert_eq!(n.key(Some("ignored"), "n1"), "/registry/core/nodes/n1");
        let events = lookup("events.k8s.io", "v1", "events").unwrap();
        assert_eq!(events.key(Some("d"), "e"), "/registry/core/events/d/e");
    }
}
