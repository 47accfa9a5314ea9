//! Objects read without their `metadata.managedFields`. No reader of a
//! watch looks at them (upstream's informers strip them too), and they are
//! a large part of every object, so they are skipped in the JSON unread
//! instead of decoded and dropped. Readers that place or count pods rather
//! than run them skip the parts of a pod only its node reads as well, and
//! a node's admission skips the parts of its status it does not read
//! ([`Leaves`]).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::DynamicResourceScope;
use kube::Resource;
use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use skiff_core::text::Text;

/// `K` as read without its managed fields, nor what `L` leaves out.
#[derive(Clone, Debug)]
pub struct Lean<K, L = ManagedFields>(pub K, pub PhantomData<L>);

/// What a [`Lean`] read leaves out of a pod or a node, beside its
/// managed fields.
pub trait Leaves: Clone + fmt::Debug + Send + Sync + 'static {
    /// The parts of a pod left out, if any.
    const POD: Option<PodParts>;
    /// Whether a node's status is read for what it offers only
    /// (`capacity` and `allocatable`).
    const NODE_OFFER_ONLY: bool = false;
}

/// The parts of a pod a reader leaves out: what only its node reads (the
/// containers' commands, environment, mounts, probes, hooks and security
/// settings; its ephemeral containers; every volume's source but a claim,
/// an ephemeral claim or inline CSI), and the containers' statuses too
/// if `statuses_too`, but for their names and resources (what a resize
/// under way holds, which the scheduler counts).
#[derive(Clone, Copy, Debug)]
pub struct PodParts {
    pub statuses_too: bool,
}

/// Only the managed fields are left out.
#[derive(Clone, Debug)]
pub struct ManagedFields;

impl Leaves for ManagedFields {
    const POD: Option<PodParts> = None;
}

/// For the controllers, which count pods and their restarts.
#[derive(Clone, Debug)]
pub struct ForControllers;

impl Leaves for ForControllers {
    const POD: Option<PodParts> = Some(PodParts {
        statuses_too: false,
    });
}

/// For the scheduler, which reads of container statuses only what they
/// hold.
#[derive(Clone, Debug)]
pub struct ForScheduler;

impl Leaves for ForScheduler {
    const POD: Option<PodParts> = Some(PodParts { statuses_too: true });
}

/// For a node's admission, which reads its labels, taints and what it
/// offers: not its conditions, addresses, images or versions.
#[derive(Clone, Debug)]
pub struct ForAdmission;

impl Leaves for ForAdmission {
    const POD: Option<PodParts> = None;
    const NODE_OFFER_ONLY: bool = true;
}

impl<'de, K, L> Deserialize<'de> for Lean<K, L>
where
    K: Deserialize<'de> + Resource<DynamicType = ()>,
    L: Leaves,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let level = match (L::POD, K::kind(&()).as_ref()) {
            (Some(parts), "Pod") => Level::Pod(parts),
            (_, "Node") if L::NODE_OFFER_ONLY => Level::Node,
            _ => Level::Object,
        };
        K::deserialize(Skipping { inner: d, level }).map(|k| Lean(k, PhantomData))
    }
}

/// Where `K`'s API is: the scope is dynamic so that an `Api` of any
/// scope, namespaced or not, can be rebuilt for `Lean<K>`.
impl<K: Resource<DynamicType = ()>, L> Resource for Lean<K, L> {
    type DynamicType = ();
    type Scope = DynamicResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.meta()
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0.meta_mut()
    }
}

/// Which map, or list of maps, is being read.
#[derive(Clone, Copy)]
enum Level {
    /// The object: its `metadata` is read at [`Level::Metadata`], every
    /// other field as it is.
    Object,
    /// The object's metadata: `managedFields` is skipped.
    Metadata,
    /// A pod whose `parts` are left out.
    Pod(PodParts),
    PodSpec,
    PodStatus,
    /// A list of container statuses, each read at
    /// [`Level::ContainerStatus`].
    ContainerStatuses,
    ContainerStatus,
    /// A list of containers, each read at [`Level::Container`].
    Containers,
    Container,
    /// A list of volumes, each read at [`Level::Volume`].
    Volumes,
    Volume,
    /// A node read for its admission.
    Node,
    NodeStatus,
}

/// The fields of a container only its node reads.
const NODE_ONLY: &[&str] = &[
    "command",
    "args",
    "env",
    "envFrom",
    "volumeMounts",
    "volumeDevices",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
    "securityContext",
];

/// The fields of a volume kept: its name and the sources that are claims
/// or count against a node's volume limits.
const VOLUME_KEPT: &[&str] = &["name", "persistentVolumeClaim", "ephemeral", "csi"];

impl Level {
    /// The level a field's value is read at, if it needs one.
    fn of_field(self, name: &str) -> Option<Level> {
        match (self, name) {
            (Level::Object | Level::Pod(_) | Level::Node, "metadata") => Some(Level::Metadata),
            (Level::Node, "status") => Some(Level::NodeStatus),
            (Level::Pod(_), "spec") => Some(Level::PodSpec),
            (Level::Pod(parts), "status") if parts.statuses_too => Some(Level::PodStatus),
            (Level::PodSpec, "containers" | "initContainers") => Some(Level::Containers),
            (Level::PodSpec, "volumes") => Some(Level::Volumes),
            (Level::PodStatus, "containerStatuses" | "initContainerStatuses") => {
                Some(Level::ContainerStatuses)
            }
            _ => None,
        }
    }

    /// The level each element of a list at this level is read at.
    fn of_element(self) -> Option<Level> {
        match self {
            Level::Containers => Some(Level::Container),
            Level::ContainerStatuses => Some(Level::ContainerStatus),
            Level::Volumes => Some(Level::Volume),
            _ => None,
        }
    }

    /// Whether field `name` of a map at this level is skipped unread.
    fn skips(self, name: &str) -> bool {
        match self {
            Level::Metadata => name == "managedFields",
            Level::PodSpec => name == "ephemeralContainers",
            Level::PodStatus => name == "ephemeralContainerStatuses",
            Level::ContainerStatus => !matches!(name, "name" | "allocatedResources" | "resources"),
            Level::Container => NODE_ONLY.contains(&name),
            Level::Volume => !VOLUME_KEPT.contains(&name),
            Level::NodeStatus => !matches!(name, "capacity" | "allocatable"),
            _ => false,
        }
    }
}

/// A deserializer, the visitor of what it reads, or the seed of a value
/// read at `level`: passes everything through, but hands maps on as
/// [`Fields`].
struct Skipping<T> {
    inner: T,
    level: Level,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Skipping<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_any(Skipping { inner: v, level })
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_option(Skipping { inner: v, level })
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner.deserialize_map(Skipping { inner: v, level })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_struct(name, fields, Skipping { inner: v, level })
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        v: V,
    ) -> Result<V::Value, D::Error> {
        let level = self.level;
        self.inner
            .deserialize_newtype_struct(name, Skipping { inner: v, level })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_enum(name, variants, v)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct identifier
        ignored_any
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Skipping<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(Fields {
            inner: map,
            level: self.level,
            next: None,
        })
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Skipping {
            inner: d,
            level: self.level,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Skipping {
            inner: d,
            level: self.level,
        })
    }

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<V::Value, E> {
        self.inner.visit_bool(b)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<V::Value, E> {
        self.inner.visit_i64(n)
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<V::Value, E> {
        self.inner.visit_u64(n)
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<V::Value, E> {
        self.inner.visit_f64(n)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<V::Value, E> {
        self.inner.visit_str(s)
    }

    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<V::Value, E> {
        self.inner.visit_borrowed_str(s)
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<V::Value, E> {
        self.inner.visit_string(s)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        match self.level.of_element() {
            Some(level) => self.inner.visit_seq(Elements { inner: seq, level }),
            None => self.inner.visit_seq(seq),
        }
    }
}

/// A list's elements, each read at `level`.
struct Elements<A> {
    inner: A,
    level: Level,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Elements<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Skipping {
            inner: seed,
            level: self.level,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

/// A map's entries, minus those its level skips; a field that needs a
/// level of its own is read at it.
struct Fields<A> {
    inner: A,
    level: Level,
    /// The level of the value about to be read.
    next: Option<Level>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            let Some(Text(key)) = self.inner.next_key()? else {
                return Ok(None);
            };
            if self.level.skips(&key) {
                self.inner.next_value::<IgnoredAny>()?;
                continue;
            }
            self.next = self.level.of_field(&key);
            return match key {
                Cow::Borrowed(k) => seed.deserialize(BorrowedStrDeserializer::new(k)),
                Cow::Owned(k) => seed.deserialize(StringDeserializer::new(k)),
            }
            .map(Some);
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.next.take() {
            Some(level) => self.inner.next_value_seed(Skipping { inner: seed, level }),
            None => self.inner.next_value_seed(seed),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Skipping<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Skipping {
            inner: d,
            level: self.level,
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
    use serde_json::json;

    use super::*;

    fn pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "a",
                "labels": {"managedFields": "a label, kept"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsV1": {"f:spec": {"f:containers": {}}}}],
                "resourceVersion": "7",
            },
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": "Pending"},
        })
    }

    #[test]
    fn a_node_read_for_admission_keeps_its_labels_taints_and_offer_only() {
        let node = json!({
            "metadata": {"name": "n", "labels": {"disk": "ssd"}},
            "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "2"}, "capacity": {"cpu": "4"},
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]},
        });
        let Lean(lean, _) =
            serde_json::from_value::<Lean<Node, ForAdmission>>(node.clone()).unwrap();
        let status = lean.status.unwrap();
        assert!(status.conditions.is_none() && status.addresses.is_none());
        assert_eq!(status.allocatable.unwrap()["cpu"].0, "2");
        assert_eq!(status.capacity.unwrap()["cpu"].0, "4");
        assert_eq!(lean.metadata.labels.unwrap()["disk"], "ssd");
        assert_eq!(lean.spec.unwrap().taints.unwrap()[0].key, "k");
        // Other readers keep the whole status.
        let Lean(full, _) = serde_json::from_value::<Lean<Node>>(node).unwrap();
        assert!(full.status.unwrap().conditions.is_some());
    }

    #[test]
    fn managed_fields_are_skipped_and_nothing_else() {
        let bytes = serde_json::to_vec(&pod()).unwrap();
        let Lean(lean, _) = serde_json::from_slice::<Lean<Pod>>(&bytes).unwrap();
        let mut full: Pod = serde_json::from_slice(&bytes).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        assert!(lean.metadata.managed_fields.is_none());
        full.metadata.managed_fields = None;
        assert_eq!(lean, full);
        assert_eq!(
            lean.metadata.labels.unwrap()["managedFields"],
            "a label, kept"
        );
    }

    #[test]
    fn only_the_objects_own_metadata_is_trimmed() {
        // A field named managedFields elsewhere (here a ConfigMap's data)
        // is the object's content.
        let map = json!({
            "metadata": {"name": "m", "managedFields": [{"manager": "x"}]},
            "data": {"managedFields": "kept"},
        });
        let Lean(lean, _) = serde_json::from_value::<Lean<ConfigMap>>(map.clone()).unwrap();
        assert_eq!(lean.data.unwrap()["managedFields"], "kept");
        assert!(lean.metadata.managed_fields.is_none());
        let bytes = serde_json::to_vec(&map).unwrap();
        let Lean(lean, _) = serde_json::from_slice::<Lean<ConfigMap>>(&bytes).unwrap();
        assert_eq!(lean.metadata.name.as_deref(), Some("m"));
    }

    /// A pod with every part a lean read may leave out.
    fn full_pod() -> serde_json::Value {
        let container = |name: &str| {
            json!({"name": name, "image": "busybox", "command": ["sh"], "args": ["-c", "true"],
                "env": [{"name": "A", "value": "b"}], "envFrom": [{"configMapRef": {"name": "m"}}],
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "resources": {"requests": {"cpu": "100m"}},
                "volumeMounts": [{"name": "token", "mountPath": "/t"}],
                "volumeDevices": [{"name": "dev", "devicePath": "/d"}],
                "livenessProbe": {"exec": {"command": ["true"]}},
                "readinessProbe": {"exec": {"command": ["true"]}},
                "startupProbe": {"exec": {"command": ["true"]}},
                "lifecycle": {"preStop": {"exec": {"command": ["true"]}}},
                "securityContext": {"runAsUser": 1000}})
        };
        let mut init = container("init");
        init["restartPolicy"] = json!("Always");
        let mut pod = pod();
        pod["spec"] = json!({
            "containers": [container("c")],
            "initContainers": [init],
            "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
            "volumes": [
                {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
                {"name": "inline", "csi": {"driver": "csi.example.com"}},
                {"name": "config", "configMap": {"name": "m"}},
            ],
            "nodeSelector": {"zone": "a"},
            "tolerations": [{"key": "k", "operator": "Exists"}],
        });
        pod["status"] = json!({"phase": "Running", "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "c", "image": "busybox", "imageID": "", "ready": true, "restartCount": 2,
                "allocatedResources": {"cpu": "100m"}, "resources": {"requests": {"cpu": "100m"}}}],
            "initContainerStatuses": [{"name": "init", "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]});
        pod
    }

    /// `full` as the typed decoder reads it, with what a reader of pods
    /// that places or counts them leaves out taken away by hand.
    fn without_node_parts(full: &serde_json::Value, statuses_too: bool) -> Pod {
        let mut pod: Pod = serde_json::from_value(full.clone()).unwrap();
        pod.metadata.managed_fields = None;
        let spec = pod.spec.as_mut().unwrap();
        spec.ephemeral_containers = None;
        let init = spec.init_containers.iter_mut().flatten();
        for c in spec.containers.iter_mut().chain(init) {
            c.command = None;
            c.args = None;
            c.env = None;
            c.env_from = None;
            c.volume_mounts = None;
            c.volume_devices = None;
            c.liveness_probe = None;
            c.readiness_probe = None;
            c.startup_probe = None;
            c.lifecycle = None;
            c.security_context = None;
        }
        for v in spec.volumes.iter_mut().flatten() {
            *v = k8s_openapi::api::core::v1::Volume {
                name: v.name.clone(),
                persistent_volume_claim: v.persistent_volume_claim.take(),
                ephemeral: v.ephemeral.take(),
                csi: v.csi.take(),
                ..Default::default()
            };
        }
        if statuses_too {
            let status = pod.status.as_mut().unwrap();
            let statuses = status.container_statuses.iter_mut().flatten();
            for s in statuses.chain(status.init_container_statuses.iter_mut().flatten()) {
                *s = k8s_openapi::api::core::v1::ContainerStatus {
                    name: s.name.clone(),
                    allocated_resources: s.allocated_resources.take(),
                    resources: s.resources.take(),
                    ..Default::default()
                };
            }
        }
        pod
    }

    #[test]
    fn the_scheduler_reads_no_part_only_the_node_reads_nor_container_states() {
        let full = full_pod();
        let bytes = serde_json::to_vec(&full).unwrap();
        let Lean(lean, _) = serde_json::from_slice::<Lean<Pod, ForScheduler>>(&bytes).unwrap();
        assert_eq!(lean, without_node_parts(&full, true));
        let spec = lean.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.ports.as_ref().unwrap()[0].host_port, Some(8080));
        assert!(c.resources.is_some());
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.restart_policy.as_deref(), Some("Always"));
        assert_eq!(spec.volumes.as_ref().unwrap().len(), 5);
        assert_eq!(
            lean.status.as_ref().unwrap().phase.as_deref(),
            Some("Running")
        );
    }

    #[test]
    fn the_controllers_keep_container_statuses() {
        let full = full_pod();
        let bytes = serde_json::to_vec(&full).unwrap();
        let Lean(lean, _) = serde_json::from_slice::<Lean<Pod, ForControllers>>(&bytes).unwrap();
        assert_eq!(lean, without_node_parts(&full, false));
        let statuses = lean.status.unwrap().container_statuses.unwrap();
        assert_eq!(statuses[0].restart_count, 2);
    }

    #[test]
    fn pod_parts_are_left_out_of_pods_only() {
        // A ConfigMap whose data has a pod's field names keeps them.
        let map = json!({"metadata": {"name": "m", "managedFields": [{"manager": "x"}]},
            "data": {"spec": "kept", "containers": "kept"}});
        let Lean(lean, _) = serde_json::from_value::<Lean<ConfigMap, ForScheduler>>(map).unwrap();
        assert_eq!(lean.data.as_ref().unwrap().len(), 2);
        assert!(lean.metadata.managed_fields.is_none());
        // A plain lean read of a pod keeps every part.
        let full = full_pod();
        let bytes = serde_json::to_vec(&full).unwrap();
        let Lean(lean, _) = serde_json::from_slice::<Lean<Pod>>(&bytes).unwrap();
        let mut typed: Pod = serde_json::from_value(full).unwrap();
        typed.metadata.managed_fields = None;
        assert_eq!(lean, typed);
    }

    #[test]
    fn errors_are_the_typed_decoders() {
        let mut bad = pod();
        bad["spec"]["containers"] = json!("nope");
        let bytes = serde_json::to_vec(&bad).unwrap();
        let lean = serde_json::from_slice::<Lean<Pod>>(&bytes).unwrap_err();
        let full = serde_json::from_slice::<Pod>(&bytes).unwrap_err();
        assert_eq!(lean.to_string(), full.to_string());
        let escaped = br#"{"metadata": {"name": "e", "managed\u0046ields": [1]}}"#;
        let Lean(lean, _) = serde_json::from_slice::<Lean<ConfigMap>>(escaped).unwrap();
        assert!(lean.metadata.managed_fields.is_none());
    }
}
