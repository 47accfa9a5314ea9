//! The JSON schemas of every served type, generated once from the
//! k8s-openapi structs, with the patch metadata upstream keeps in Go struct
//! tags: which lists merge, and by which key.

use foldhash::{HashMap, HashMapExt};
use std::sync::OnceLock;

use serde_json::{Map, Value};

use crate::registry::{ResourceType, RESOURCES};

/// How a list field behaves under strategic merge patch and apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListStrategy<'a> {
    /// Replaced whole.
    Atomic,
    /// A set of scalars: merged by value.
    Set,
    /// A list of objects merged by the values of these keys.
    Map(Vec<&'a str>),
}

/// Where a value sits in a schema: a definition of the built-in types, or
/// a node of a custom resource's structural schema (whose lists merge as
/// its `x-kubernetes-list-type` and `x-kubernetes-list-map-keys` say).
#[derive(Clone, Copy, Debug)]
pub enum Shape<'a> {
    Definition(&'a str),
    Custom(&'a Value),
}

impl<'a> Shape<'a> {
    fn custom_property(node: &'a Value, prop: &str) -> Option<&'a Value> {
        node.get("properties")?.get(prop)
    }

    /// The shape of property `prop`'s own value.
    pub fn property(self, prop: &str) -> Option<Shape<'a>> {
        match self {
            Self::Definition(d) => schemas().property_def(d, prop).map(Shape::Definition),
            Self::Custom(n) => Self::custom_property(n, prop).map(Shape::Custom),
        }
    }

    /// The shape of object property `prop`'s fields: none for a map
    /// (`additionalProperties`), whose entries are not fields of a shape.
    pub fn fields_of(self, prop: &str) -> Option<Shape<'a>> {
        match self {
            Self::Definition(d) => indexed(d, prop)
                .filter(|p| !p.map)
                .and_then(|p| p.def)
                .map(Shape::Definition),
            Self::Custom(n) => Self::custom_property(n, prop)
                .filter(|p| p.get("additionalProperties").is_none())
                .map(Shape::Custom),
        }
    }

    /// Whether object property `prop` is atomic (`x-kubernetes-map-type:
    /// atomic`): owned and applied whole, not field by field.
    pub fn is_atomic_object(self, prop: &str) -> bool {
        match self {
            Self::Definition(d) => indexed(d, prop).is_some_and(|p| p.atomic),
            Self::Custom(n) => Self::custom_property(n, prop)
                .is_some_and(|p| p["x-kubernetes-map-type"] == "atomic"),
        }
    }

    /// Whether every object of this shape has property `prop`, as Go
    /// writes the type (a custom resource's objects have nothing always).
    pub fn always_has(self, prop: &str) -> bool {
        match self {
            Self::Definition(d) => indexed(d, prop).is_some_and(|p| p.always),
            Self::Custom(_) => false,
        }
    }

    /// Whether the items of keyed list property `prop` are atomic: each
    /// owned and applied whole.
    pub fn has_atomic_items(self, prop: &str) -> bool {
        match self {
            Self::Definition(d) => indexed(d, prop).is_some_and(|p| p.atomic_items),
            Self::Custom(n) => Self::custom_property(n, prop)
                .is_some_and(|p| p["items"]["x-kubernetes-map-type"] == "atomic"),
        }
    }

    /// The shape of the items of list property `prop`.
    pub fn items(self, prop: &str) -> Option<Shape<'a>> {
        match self {
            Self::Definition(d) => schemas().items_def(d, prop).map(Shape::Definition),
            Self::Custom(n) => Self::custom_property(n, prop)?
                .get("items")
                .map(Shape::Custom),
        }
    }

    /// How server-side apply and managed fields key list property `prop`
    /// (a custom resource's lists merge alike under patch and apply).
    pub fn apply_list_strategy(self, prop: &str) -> ListStrategy<'a> {
        match self {
            Self::Definition(d) => schemas().apply_list_strategy(d, prop),
            Self::Custom(_) => self.list_strategy(prop),
        }
    }

    /// The default of key field `key` of an item of this shape, which an
    /// applied item may leave out.
    pub fn key_default(self, key: &str) -> Option<Value> {
        match self {
            Self::Definition(d) => KEY_DEFAULTS
                .iter()
                .find(|(def, field, _)| *def == d && *field == key)
                .map(|(_, _, default)| Value::from(*default)),
            Self::Custom(n) => Self::custom_property(n, key)?.get("default").cloned(),
        }
    }

    /// How strategic merge patch merges list property `prop`.
    pub fn list_strategy(self, prop: &str) -> ListStrategy<'a> {
        match self {
            Self::Definition(d) => schemas().list_strategy(d, prop),
            Self::Custom(n) => {
                let Some(p) = Self::custom_property(n, prop) else {
                    return ListStrategy::Atomic;
                };
                match p["x-kubernetes-list-type"].as_str() {
                    Some("map") => ListStrategy::Map(
                        p["x-kubernetes-list-map-keys"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect(),
                    ),
                    Some("set") => ListStrategy::Set,
                    _ => ListStrategy::Atomic,
                }
            }
        }
    }
}

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// What gives a resource's objects their shape, held while it is used.
pub enum Root {
    Definition(&'static str),
    Custom(std::sync::Arc<crate::crd::Served>),
    Untyped,
}

impl Root {
    pub fn of(r: &ResourceType) -> Self {
        if let Some(served) = crate::crd::served(r) {
            return Self::Custom(served);
        }
        match schemas().root(r) {
            Some(d) => Self::Definition(d),
            None => Self::Untyped,
        }
    }

    /// Leaves out the empty optional lists and maps of a written object,
    /// as upstream's decoding into Go types does. A custom resource keeps
    /// its JSON as sent but for its metadata, which upstream decodes.
    pub fn drop_empty(&self, obj: &mut Value) {
        let (def, obj) = match (self, obj) {
            (Self::Definition(d), Value::Object(o)) => (*d, o),
            (Self::Custom(_), Value::Object(o)) => match o.get_mut("metadata") {
                Some(Value::Object(meta)) => (OBJECT_META, meta),
                _ => return,
            },
            _ => return,
        };
        drop_empty(def, obj);
    }

    pub fn shape(&self) -> Option<Shape<'_>> {
        match self {
            Self::Definition(d) => Some(Shape::Definition(d)),
            Self::Custom(served) => Some(Shape::Custom(&served.version.schema)),
            Self::Untyped => None,
        }
    }
}

/// `(definition, property, merge key)`; no key means a set of scalars.
/// Upstream's `patchStrategy:"merge"` struct tags.
const MERGE_LISTS: &[(&str, &str, Option<&str>)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", Some("name")),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", Some("name")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "ephemeralContainers",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.PodSpec", "volumes", Some("name")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "imagePullSecrets",
        Some("name"),
    ),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", Some("ip")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        Some("topologyKey"),
    ),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", Some("name")),
    (
        "io.k8s.api.core.v1.PodSpec",
        "schedulingGates",
        Some("name"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        Some("containerPort"),
    ),
    ("io.k8s.api.core.v1.Container", "env", Some("name")),
    (
        "io.k8s.api.core.v1.Container",
        "volumeMounts",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.Container",
        "volumeDevices",
        Some("devicePath"),
    ),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", Some("name")),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeMounts",
        Some("mountPath"),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "volumeDevices",
        Some("devicePath"),
    ),
    ("io.k8s.api.core.v1.PodStatus", "conditions", Some("type")),
    ("io.k8s.api.core.v1.PodStatus", "podIPs", Some("ip")),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", Some("ip")),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", Some("type")),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", Some("type")),
    ("io.k8s.api.core.v1.NodeSpec", "podCIDRs", None),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", Some("port")),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", Some("name")),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimStatus",
        "conditions",
        Some("type"),
    ),
    (
        "io.k8s.api.core.v1.NamespaceStatus",
        "conditions",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DeploymentStatus",
        "conditions",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.ReplicaSetStatus",
        "conditions",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.StatefulSetStatus",
        "conditions",
        Some("type"),
    ),
    (
        "io.k8s.api.apps.v1.DaemonSetStatus",
        "conditions",
        Some("type"),
    ),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", Some("type")),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "finalizers",
        None,
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        "ownerReferences",
        Some("uid"),
    ),
];

/// Lists that server-side apply and managed fields key otherwise than
/// strategic merge patch merges them: upstream's `listType` and
/// `listMapKey` markers where they differ from its `patchMergeKey` tags (as
/// client-go's generated apply schema has them). No keys: atomic.
const APPLY_LISTS: &[(&str, &str, Option<&[&str]>)] = &[
    (
        "io.k8s.api.core.v1.Container",
        "ports",
        Some(&["containerPort", "protocol"]),
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        "ports",
        Some(&["containerPort", "protocol"]),
    ),
    (
        "io.k8s.api.core.v1.ServiceSpec",
        "ports",
        Some(&["port", "protocol"]),
    ),
    (
        "io.k8s.api.core.v1.PodSpec",
        "topologySpreadConstraints",
        Some(&["topologyKey", "whenUnsatisfiable"]),
    ),
    ("io.k8s.api.core.v1.PodStatus", "hostIPs", None),
    ("io.k8s.api.batch.v1.JobStatus", "conditions", None),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        "conditions",
        Some(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.PodStatus",
        "resourceClaimStatuses",
        Some(&["name"]),
    ),
    (
        "io.k8s.api.policy.v1.PodDisruptionBudgetStatus",
        "conditions",
        Some(&["type"]),
    ),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus",
        "conditions",
        Some(&["type"]),
    ),
    (
        "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
        "conditions",
        Some(&["type"]),
    ),
    (
        "io.k8s.api.core.v1.ResourceRequirements",
        "claims",
        Some(&["name"]),
    ),
    (
        "io.k8s.api.core.v1.ComponentStatus",
        "conditions",
        Some(&["type"]),
    ),
    (
        "io.k8s.api.storage.v1.CSINodeSpec",
        "drivers",
        Some(&["name"]),
    ),
];

/// Key fields with a default, which an applied item may leave out:
/// `(definition of the items, field, default)`.
const KEY_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
];

/// The maps upstream's OpenAPI marks `x-kubernetes-map-type: atomic` (as
/// k8s-openapi's generated merge strategies have them).
const ATOMIC_MAPS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "nodeSelector"),
    ("io.k8s.api.core.v1.ServiceSpec", "selector"),
    ("io.k8s.api.core.v1.ReplicationControllerSpec", "selector"),
    ("io.k8s.api.node.v1.Scheduling", "nodeSelector"),
];

/// The served types upstream marks `+structType=atomic` (its OpenAPI puts
/// `x-kubernetes-map-type: atomic` on their definitions; read from
/// client-go's generated apply schema): owned and applied whole wherever
/// they appear, as a field or as the items of a keyed list.
const ATOMIC_STRUCTS: &[&str] = &[
    "io.k8s.api.autoscaling.v1.CrossVersionObjectReference",
    "io.k8s.api.core.v1.ConfigMapKeySelector",
    "io.k8s.api.core.v1.EndpointAddress",
    "io.k8s.api.core.v1.EndpointPort",
    "io.k8s.api.core.v1.FileKeySelector",
    "io.k8s.api.core.v1.LocalObjectReference",
    "io.k8s.api.core.v1.NodeSelector",
    "io.k8s.api.core.v1.NodeSelectorTerm",
    "io.k8s.api.core.v1.ObjectFieldSelector",
    "io.k8s.api.core.v1.ObjectReference",
    "io.k8s.api.core.v1.ResourceFieldSelector",
    "io.k8s.api.core.v1.SecretKeySelector",
    "io.k8s.api.core.v1.SecretReference",
    "io.k8s.api.core.v1.TopologySelectorTerm",
    "io.k8s.api.core.v1.TypedLocalObjectReference",
    "io.k8s.api.discovery.v1.EndpointPort",
    "io.k8s.api.networking.v1.ServiceBackendPort",
    "io.k8s.api.rbac.v1.RoleRef",
    "io.k8s.api.rbac.v1.Subject",
    "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
    "io.k8s.apimachinery.pkg.apis.meta.v1.OwnerReference",
];

/// Fields of an atomic type that upstream's schema owns field by field all
/// the same (`elementRelationship: separable` on the field).
const GRANULAR_FIELDS: &[(&str, &str)] = &[("io.k8s.api.core.v1.PersistentVolumeSpec", "claimRef")];

/// Struct fields that Go's types hold by value, not by pointer, beyond a
/// `metadata`, `spec` or `status` (which always are) and the required
/// fields: an object always has them, empty at worst (upstream's OpenAPI
/// gives them `default: {}`).
const BY_VALUE: &[(&str, &str)] = &[
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "updateStrategy"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "updateStrategy"),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", "template"),
    ("io.k8s.api.core.v1.Container", "resources"),
    ("io.k8s.api.core.v1.EphemeralContainer", "resources"),
    ("io.k8s.api.core.v1.NodeStatus", "daemonEndpoints"),
    ("io.k8s.api.core.v1.NodeStatus", "nodeInfo"),
    ("io.k8s.api.core.v1.NodeDaemonEndpoints", "kubeletEndpoint"),
    ("io.k8s.api.core.v1.ServiceStatus", "loadBalancer"),
    ("io.k8s.api.networking.v1.IngressStatus", "loadBalancer"),
    ("io.k8s.api.core.v1.PersistentVolumeClaimSpec", "resources"),
    ("io.k8s.api.core.v1.PodTemplate", "template"),
    ("io.k8s.api.core.v1.Event", "source"),
    ("io.k8s.api.events.v1.Event", "deprecatedSource"),
];

/// Optional lists whose Go fields lack `omitempty`: an empty one is kept
/// as written. Every other optional list or map is left out when empty,
/// as Go encodes it (see [`drop_empty`]). Read in upstream's types.
const KEEP_EMPTY: &[(&str, &str)] = &[
    ("io.k8s.api.rbac.v1.Role", "rules"),
    ("io.k8s.api.rbac.v1.ClusterRole", "rules"),
    ("io.k8s.api.discovery.v1.EndpointSlice", "ports"),
    ("io.k8s.api.core.v1.ContainerImage", "names"),
    ("io.k8s.api.core.v1.ProjectedVolumeSource", "sources"),
    ("io.k8s.api.storage.v1.CSINodeDriver", "topologyKeys"),
    (
        "io.k8s.api.batch.v1.PodFailurePolicyRule",
        "onPodConditions",
    ),
    (
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionStatus",
        "storedVersions",
    ),
];

/// Fields whose patches carry `$retainKeys` (one-of unions).
const RETAIN_KEYS: &[(&str, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "volumes"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy"),
    ("io.k8s.api.apps.v1.DaemonSetSpec", "updateStrategy"),
    ("io.k8s.api.apps.v1.StatefulSetSpec", "updateStrategy"),
];

/// All generated schemas, by definition name.
pub struct Schemas {
    pub definitions: Map<String, Value>,
    roots: HashMap<(&'static str, &'static str, &'static str), String>,
}

/// What every write asks of a definition's properties, by definition and
/// property, read out of the schemas once (and borrowing their names).
type Index = HashMap<&'static str, HashMap<&'static str, Property>>;

/// A property of a definition, as patches and managed fields walk it.
#[derive(Default)]
struct Property {
    /// The definition of its own type.
    def: Option<&'static str>,
    /// Whether it is a map (`additionalProperties`), whose entries are no
    /// fields of a shape.
    map: bool,
    /// The definition of its items, for a list.
    items: Option<&'static str>,
    /// The definition of its values, for a map.
    values: Option<&'static str>,
    /// Whether Go leaves it out when empty: an optional list or map
    /// (`omitempty`; see [`KEEP_EMPTY`]).
    omit_empty: bool,
    strategy: Option<ListStrategy<'static>>,
    /// How server-side apply keys it, where that differs from `strategy`.
    apply_strategy: Option<ListStrategy<'static>>,
    /// Owned and applied whole (see [`ATOMIC_MAPS`] and [`ATOMIC_STRUCTS`]).
    atomic: bool,
    /// Whether its items are, for a list.
    atomic_items: bool,
    /// Whether every object of its definition has it, as Go writes its
    /// type: required, or a struct held by value (see [`BY_VALUE`]).
    always: bool,
}

impl Property {
    fn of(schema: &'static Value) -> Self {
        let def = ref_name(schema);
        let items = schema.get("items").and_then(ref_name);
        let atomic_struct = |d: Option<&str>| d.is_some_and(|d| ATOMIC_STRUCTS.contains(&d));
        let map = schema.get("additionalProperties");
        Property {
            def,
            map: map.is_some(),
            items,
            values: map.and_then(ref_name),
            omit_empty: map.is_some() || schema["type"] == "array",
            strategy: None,
            apply_strategy: None,
            atomic: atomic_struct(def),
            atomic_items: atomic_struct(items),
            always: false,
        }
    }
}

/// The index of every definition's properties, with the merge strategy of
/// the lists in [`MERGE_LISTS`] and the atomic objects of [`ATOMIC_MAPS`]
/// and [`ATOMIC_STRUCTS`].
fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index: Index = schemas()
            .definitions
            .iter()
            .map(|(def, schema)| {
                let required = schema.get("required").and_then(Value::as_array);
                let required = |p: &str| required.is_some_and(|r| r.iter().any(|r| r == p));
                let props = schema.get("properties").and_then(Value::as_object);
                let props = props.into_iter().flatten();
                let props = props
                    .map(|(p, s)| {
                        let mut prop = Property::of(s);
                        let by_value = matches!(p.as_str(), "metadata" | "spec" | "status")
                            && prop.def.is_some()
                            || BY_VALUE.contains(&(def.as_str(), p.as_str()));
                        prop.always = by_value || required(p);
                        prop.omit_empty &= !required(p) && !KEEP_EMPTY.contains(&(def, p));
                        (p.as_str(), prop)
                    })
                    .collect();
                (def.as_str(), props)
            })
            .collect();
        for (def, prop, key) in MERGE_LISTS {
            let p = index.entry(def).or_default();
            p.entry(prop).or_default().strategy = Some(match key {
                Some(k) => ListStrategy::Map(vec![k]),
                None => ListStrategy::Set,
            });
        }
        for (def, prop, keys) in APPLY_LISTS {
            let p = index.entry(def).or_default();
            p.entry(prop).or_default().apply_strategy = Some(match keys {
                Some(k) => ListStrategy::Map(k.to_vec()),
                None => ListStrategy::Atomic,
            });
        }
        for (def, prop) in ATOMIC_MAPS {
            if let Some(p) = index.get_mut(def).and_then(|d| d.get_mut(prop)) {
                p.atomic = true;
            }
        }
        for (def, prop) in GRANULAR_FIELDS {
            if let Some(p) = index.get_mut(def).and_then(|d| d.get_mut(prop)) {
                p.atomic = false;
            }
        }
        index
    })
}

/// Drops the empty optional lists and maps of an object of definition
/// `def`, at every depth, as decoding it into upstream's Go types does:
/// `env: []` and `labels: {}` are stored as absent, a required or
/// [`KEEP_EMPTY`] list stays, and an empty struct (`securityContext: {}`)
/// is no map.
fn drop_empty(def: &str, obj: &mut Map<String, Value>) {
    let Some(props) = index().get(def) else {
        return;
    };
    obj.retain(|name, v| {
        let Some(p) = props.get(name.as_str()) else {
            return true;
        };
        let (empty, inner) = match v {
            Value::Array(a) => (a.is_empty(), p.items),
            Value::Object(o) if p.map => (o.is_empty(), p.values),
            Value::Object(o) => {
                if let Some(d) = p.def {
                    drop_empty(d, o);
                }
                return true;
            }
            _ => return true,
        };
        if empty {
            return !p.omit_empty;
        }
        let item = |d, v: &mut Value| {
            if let Value::Object(o) = v {
                drop_empty(d, o);
            }
        };
        match (inner, v) {
            (Some(d), Value::Array(a)) => a.iter_mut().for_each(|v| item(d, v)),
            (Some(d), Value::Object(o)) => o.values_mut().for_each(|v| item(d, v)),
            _ => {}
        }
        true
    });
}

/// Property `prop` of definition `def`, as the index has it.
fn indexed(def: &str, prop: &str) -> Option<&'static Property> {
    index().get(def)?.get(prop)
}

/// The schemas, generated on first use.
pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(generate)
}

fn generate() -> Schemas {
    let mut gen = schemars::generate::SchemaSettings::openapi3().into_generator();
    let mut roots = HashMap::new();
    for r in RESOURCES {
        let root = (r.schema)(&mut gen);
        if let Some(name) = ref_name(root.as_value()) {
            roots.insert((r.group, r.version, r.kind), name.to_owned());
        }
    }
    add_subresource_types(&mut gen);
    let mut definitions: Map<String, Value> = gen.take_definitions(true).into_iter().collect();
    for ((group, version, kind), name) in &roots {
        if let Some(def) = definitions.get_mut(name) {
            def["x-kubernetes-group-version-kind"] =
                serde_json::json!([{ "group": group, "version": version, "kind": kind }]);
        }
    }
    for (name, kind, group, version) in [
        (
            "io.k8s.api.autoscaling.v1.Scale",
            "Scale",
            "autoscaling",
            "v1",
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.Status",
            "Status",
            "",
            "v1",
        ),
        ("io.k8s.api.core.v1.Binding", "Binding", "", "v1"),
        ("io.k8s.api.policy.v1.Eviction", "Eviction", "policy", "v1"),
    ] {
        if let Some(def) = definitions.get_mut(name) {
            def["x-kubernetes-group-version-kind"] =
                serde_json::json!([{ "group": group, "version": version, "kind": kind }]);
        }
    }
    for (def, prop, key) in MERGE_LISTS {
        if let Some(p) = definitions
            .get_mut(*def)
            .and_then(|d| d["properties"].get_mut(*prop))
        {
            let retain = RETAIN_KEYS.contains(&(def, prop));
            p["x-kubernetes-patch-strategy"] =
                Value::from(if retain { "merge,retainKeys" } else { "merge" });
            match key {
                Some(k) => {
                    p["x-kubernetes-patch-merge-key"] = Value::from(*k);
                    p["x-kubernetes-list-type"] = Value::from("map");
                    p["x-kubernetes-list-map-keys"] = serde_json::json!([k]);
                }
                None => p["x-kubernetes-list-type"] = Value::from("set"),
            }
        }
    }
    for (def, prop, keys) in APPLY_LISTS {
        if let Some(p) = definitions
            .get_mut(*def)
            .and_then(|d| d["properties"].get_mut(*prop))
        {
            match keys {
                Some(k) => {
                    p["x-kubernetes-list-type"] = Value::from("map");
                    p["x-kubernetes-list-map-keys"] = serde_json::json!(k);
                }
                None => {
                    p["x-kubernetes-list-type"] = Value::from("atomic");
                    if let Some(m) = p.as_object_mut() {
                        m.remove("x-kubernetes-list-map-keys");
                    }
                }
            }
        }
    }
    for (def, prop) in ATOMIC_MAPS {
        if let Some(p) = definitions
            .get_mut(*def)
            .and_then(|d| d["properties"].get_mut(*prop))
        {
            p["x-kubernetes-map-type"] = Value::from("atomic");
        }
    }
    for def in ATOMIC_STRUCTS {
        if let Some(d) = definitions.get_mut(*def) {
            d["x-kubernetes-map-type"] = Value::from("atomic");
        }
    }
    for (def, prop) in RETAIN_KEYS {
        if let Some(p) = definitions
            .get_mut(*def)
            .and_then(|d| d["properties"].get_mut(*prop))
        {
            if p.get("x-kubernetes-patch-strategy").is_none() {
                p["x-kubernetes-patch-strategy"] = Value::from("retainKeys");
            }
        }
    }
    Schemas { definitions, roots }
}

/// Types that appear in subresources but are no resource of their own.
fn add_subresource_types(gen: &mut schemars::generate::SchemaGenerator) {
    use k8s_openapi::api::{autoscaling::v1::Scale, core::v1::Binding, policy::v1::Eviction};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Status};
    gen.subschema_for::<Scale>();
    gen.subschema_for::<Binding>();
    gen.subschema_for::<Eviction>();
    gen.subschema_for::<Status>();
    gen.subschema_for::<DeleteOptions>();
}

/// The definition a schema refers to, directly or through `allOf`.
pub fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .or_else(|| schema.get("allOf")?.get(0)?.get("$ref"))
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

impl Schemas {
    /// The root definition name of a resource.
    pub fn root(&self, r: &ResourceType) -> Option<&str> {
        self.roots
            .get(&(r.group, r.version, r.kind))
            .map(String::as_str)
    }

    /// The definition name of property `prop`'s own type, for an object.
    pub fn property_def(&self, def: &str, prop: &str) -> Option<&'static str> {
        indexed(def, prop)?.def
    }

    /// The definition name of the items of list property `prop`.
    pub fn items_def(&self, def: &str, prop: &str) -> Option<&'static str> {
        indexed(def, prop)?.items
    }

    /// How list property `prop` of `def` merges.
    pub fn list_strategy(&self, def: &str, prop: &str) -> ListStrategy<'static> {
        indexed(def, prop)
            .and_then(|p| p.strategy.clone())
            .unwrap_or(ListStrategy::Atomic)
    }

    /// How server-side apply keys list property `prop` of `def`.
    pub fn apply_list_strategy(&self, def: &str, prop: &str) -> ListStrategy<'static> {
        indexed(def, prop)
            .and_then(|p| p.apply_strategy.as_ref().or(p.strategy.as_ref()))
            .cloned()
            .unwrap_or(ListStrategy::Atomic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::lookup;

    #[test]
    fn the_index_says_what_the_schemas_say() {
        let s = schemas();
        let mut props = 0;
        for (def, schema) in &s.definitions {
            let all = schema.get("properties").and_then(Value::as_object);
            for (prop, p) in all.into_iter().flatten() {
                props += 1;
                assert_eq!(s.property_def(def, prop), ref_name(p), "{def}.{prop}");
                let items = p.get("items").and_then(ref_name);
                assert_eq!(s.items_def(def, prop), items, "{def}.{prop}");
                let fields = (p.get("additionalProperties").is_none())
                    .then(|| ref_name(p))
                    .flatten();
                let shape = Shape::Definition(def).fields_of(prop);
                assert_eq!(
                    shape.map(|s| format!("{s:?}")),
                    fields.map(|f| format!("{:?}", Shape::Definition(f)))
                );
            }
        }
        assert!(props > 1000, "{props} properties");
        for (def, prop, key) in MERGE_LISTS {
            let expected = match key {
                Some(k) => ListStrategy::Map(vec![*k]),
                None => ListStrategy::Set,
            };
            assert_eq!(s.list_strategy(def, prop), expected, "{def}.{prop}");
        }
        let pod_spec = "io.k8s.api.core.v1.PodSpec";
        assert_eq!(
            s.list_strategy(pod_spec, "tolerations"),
            ListStrategy::Atomic
        );
        assert_eq!(
            s.list_strategy(pod_spec, "nosuchfield"),
            ListStrategy::Atomic
        );
        assert_eq!(
            s.items_def(pod_spec, "containers"),
            Some("io.k8s.api.core.v1.Container")
        );
    }

    #[test]
    fn atomic_structs_and_apply_lists_are_served() {
        let s = schemas();
        for def in ATOMIC_STRUCTS {
            let served = s.definitions.get(*def);
            assert_eq!(
                served.map(|d| &d["x-kubernetes-map-type"]),
                Some(&Value::from("atomic")),
                "{def}"
            );
        }
        let deploy_spec = Shape::Definition("io.k8s.api.apps.v1.DeploymentSpec");
        assert!(deploy_spec.is_atomic_object("selector"));
        assert!(!deploy_spec.is_atomic_object("template"));
        let meta = Shape::Definition("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta");
        assert!(meta.has_atomic_items("ownerReferences"));
        assert!(!meta.has_atomic_items("managedFields"));
        let pv_spec = Shape::Definition("io.k8s.api.core.v1.PersistentVolumeSpec");
        assert!(!pv_spec.is_atomic_object("claimRef"));
        for (def, prop, keys) in APPLY_LISTS {
            let want = keys.map_or(ListStrategy::Atomic, |k| ListStrategy::Map(k.to_vec()));
            assert_eq!(s.apply_list_strategy(def, prop), want, "{def}.{prop}");
            let served = &s.definitions[*def]["properties"][*prop];
            assert!(served["items"].is_object(), "{def}.{prop} is a served list");
        }
        let binding = Shape::Definition("io.k8s.api.core.v1.Binding");
        assert!(binding.is_atomic_object("target"));
    }

    #[test]
    fn empty_optional_lists_and_maps_are_left_out_as_go_writes_them() {
        let root = |group, plural| Root::of(lookup(group, "v1", plural).unwrap());
        let mut pod = serde_json::json!({
            "metadata": {"name": "p", "labels": {}, "finalizers": []},
            "spec": {"containers": [{"name": "c", "env": [], "args": [], "resources": {}, "securityContext": {}}],
                "nodeSelector": {}, "tolerations": [], "volumes": [{"name": "v", "projected": {"sources": []}}]},
            "status": {"initContainerStatuses": []}});
        root("", "pods").drop_empty(&mut pod);
        // Structs stay (Go holds them by value or by pointer), and a list
        // whose Go field has no `omitempty`.
        let left = serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {}, "securityContext": {}}],
                "volumes": [{"name": "v", "projected": {"sources": []}}]},
            "status": {}});
        assert_eq!(pod, left);
        let mut required = serde_json::json!({"spec": {"containers": []}});
        root("", "pods").drop_empty(&mut required);
        assert_eq!(required, serde_json::json!({"spec": {"containers": []}}));
        let mut role = serde_json::json!({"metadata": {"annotations": {}}, "rules": []});
        root("rbac.authorization.k8s.io", "roles").drop_empty(&mut role);
        assert_eq!(role, serde_json::json!({"metadata": {}, "rules": []}));
        // Into a map's values: a CRD schema's properties.
        let mut crd = serde_json::json!({"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema":
            {"properties": {"x": {"type": "object", "required": [], "properties": {}}}}}}]}});
        root("apiextensions.k8s.io", "customresourcedefinitions").drop_empty(&mut crd);
        let x = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["x"];
        assert_eq!(x, &serde_json::json!({"type": "object"}));
        for (def, prop) in KEEP_EMPTY {
            let served = &schemas().definitions[*def]["properties"][*prop];
            assert_eq!(served["type"], "array", "{def}.{prop} is a served list");
        }
    }

    #[test]
    fn deployment_schema_carries_gvk_and_merge_keys() {
        let s = schemas();
        let root = s
            .root(lookup("apps", "v1", "deployments").unwrap())
            .unwrap();
        assert_eq!(root, "io.k8s.api.apps.v1.Deployment");
        assert_eq!(
            s.definitions[root]["x-kubernetes-group-version-kind"][0]["kind"],
            "Deployment"
        );
        let containers = &s.definitions["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(
            s.list_strategy("io.k8s.api.core.v1.PodSpec", "containers"),
            ListStrategy::Map(vec!["name"])
        );
        assert_eq!(
            s.list_strategy("io.k8s.api.core.v1.PodSpec", "tolerations"),
            ListStrategy::Atomic
        );
        assert_eq!(
            s.property_def("io.k8s.api.apps.v1.DeploymentSpec", "template"),
            Some("io.k8s.api.core.v1.PodTemplateSpec")
        );
    }

    /// The object properties of definition `def`, each present and empty
    /// (lists and maps with one such item), down every path that does
    /// not come back to a definition already on it; of the rest only the
    /// required strings (a time where a time is), no integer or boolean.
    fn skeleton(s: &Schemas, def: &str, path: &mut Vec<String>) -> Value {
        let mut out = Map::new();
        path.push(def.to_owned());
        for field in s.definitions[def]["required"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let field = field.as_str().unwrap_or_default();
            let p = &s.definitions[def]["properties"][field];
            let p = ref_name(p).map_or(p, |d| &s.definitions[d]);
            let filler = match (p["type"].as_str(), p["format"].as_str()) {
                (Some("string") | None, Some("date-time")) => Value::from("2024-01-01T00:00:00Z"),
                (Some("string") | None, Some("byte")) => Value::from("eA=="),
                (Some("string") | None, _) => Value::from("x"),
                (Some("array"), _) => Value::Array(Vec::new()),
                (Some("object"), _) => Value::Object(Map::new()),
                _ => continue,
            };
            out.insert(field.to_owned(), filler);
        }
        let props = s.definitions[def]["properties"].as_object().cloned();
        for (name, p) in props.into_iter().flatten() {
            let (wrap, inner): (fn(Value) -> Value, &Value) =
                match (p.get("items"), p.get("additionalProperties")) {
                    (Some(items), _) => (|v| Value::Array(vec![v]), items),
                    (_, Some(values)) => (|v| serde_json::json!({"k": v}), values),
                    _ => (|v| v, &p),
                };
            let Some(child) = ref_name(inner) else {
                continue;
            };
            if s.definitions[child]["type"] != "object" || path.iter().any(|d| d == child) {
                continue;
            }
            if s.definitions[child]["properties"].as_object().is_none() {
                continue;
            }
            out.insert(name, wrap(skeleton(s, child, path)));
        }
        path.pop();
        Value::Object(out)
    }

    /// The integers and booleans `def` requires that `v` lacks, anywhere.
    fn missing_scalars(s: &Schemas, def: &str, v: &Value, at: &str, out: &mut Vec<String>) {
        let schema = &s.definitions[def];
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap_or_default();
            let ty = schema["properties"][field]["type"].as_str().unwrap_or("");
            if matches!(ty, "integer" | "boolean") && v.get(field).is_none() {
                out.push(format!("{at}.{field}"));
            }
        }
        for (name, p) in schema["properties"].as_object().into_iter().flatten() {
            let Some(present) = v.get(name) else { continue };
            if let Some(child) = p.get("items").and_then(ref_name) {
                for (i, item) in present.as_array().into_iter().flatten().enumerate() {
                    missing_scalars(s, child, item, &format!("{at}.{name}[{i}]"), out);
                }
            } else if let Some(child) = p.get("additionalProperties").and_then(ref_name) {
                for (k, item) in present.as_object().into_iter().flatten() {
                    missing_scalars(s, child, item, &format!("{at}.{name}[{k}]"), out);
                }
            } else if let Some(child) = ref_name(p) {
                if present.is_object() {
                    missing_scalars(s, child, present, &format!("{at}.{name}"), out);
                }
            }
        }
    }

    /// Every served kind, written with every nested object present and no
    /// scalar at all, comes back with each integer and boolean its
    /// OpenAPI schema requires (upstream's Go types always write them;
    /// clients model them as required), at every depth.
    #[test]
    fn every_kind_writes_the_scalars_its_schema_requires() {
        let s = schemas();
        let (mut kinds, mut required) = (0, 0);
        for r in crate::registry::RESOURCES {
            let Some(root) = s.root(r) else { continue };
            let mut obj = skeleton(s, root, &mut Vec::new());
            obj["apiVersion"] = Value::from(r.api_version());
            obj["kind"] = Value::from(r.kind);
            let written = match (r.decode)(obj.clone(), None) {
                Ok(written) => written,
                Err(e) => panic!("{} does not decode {obj}: {e}", r.kind),
            };
            let mut missing = Vec::new();
            missing_scalars(s, root, &written, r.kind, &mut missing);
            assert_eq!(missing, Vec::<String>::new(), "{written}");
            let mut all = Vec::new();
            missing_scalars(s, root, &obj, r.kind, &mut all);
            required += all.len();
            kinds += 1;
        }
        assert!(kinds >= 40, "{kinds} kinds");
        // Well over the kinds: DaemonSet status alone requires four.
        assert!(required >= 200, "{required} required scalars checked");
    }
}
