//! Endpoints and EndpointSlices for Services with a selector: the IPs of
//! the pods it selects, ready or not, with the Service's ports resolved
//! against each pod's container ports, each slice endpoint with its
//! node's zone and the hints the Service's `trafficDistribution` asks for,
//! or topology-aware ones when its `topology-mode` annotation is `Auto`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::{pods, topology_hints};
use skiff_core::endpoint_slices::{SERVICE_NAME, ZONE};
use skiff_runtime::api::{self, Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{key_of, Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::queue::Queue;

pub(crate) const MANAGED_BY: &str = "endpointslice.kubernetes.io/managed-by";
/// On Endpoints whose slices are kept beside them (this controller's, the
/// API server's `default/kubernetes`): the mirroring controller leaves them.
pub(crate) const SKIP_MIRROR: &str = "endpointslice.kubernetes.io/skip-mirror";
const MANAGER: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice, upstream's default.
const PER_SLICE: usize = 100;
const COMPONENT: &str = "endpointslice-controller";
pub struct EndpointsController {
    pub services: Arc<Cache<Service>>,
    pub pods: Arc<Cache<Pod>>,
    pub endpoints: Arc<Cache<Endpoints>>,
    pub slices: Arc<Cache<EndpointSlice>>,
    pub nodes: Arc<Cache<Node>>,
    pub cluster: Arc<dyn Cluster>,
    /// Each Service's last topology-aware verdict: hinted, or why not.
    topology: std::sync::Mutex<HashMap<String, Result<(), String>>>,
    shares: Arc<topology_hints::Shares>,
}

/// The hints a ready endpoint on `node` in `zone` carries for a Service's
/// traffic distribution, as upstream's `trafficdist` heuristics write
/// them: its zone for `PreferClose`/`PreferSameZone`, its node and zone
/// for `PreferSameNode`, none otherwise.
fn hints(distribution: Option<&str>, node: Option<&str>, zone: Option<&str>) -> Option<Value> {
    let zones = zone.map(|z| json!([{"name": z}]));
    let nodes = node.map(|n| json!([{"name": n}]));
    let (zones, nodes) = match distribution {
        Some("PreferClose" | "PreferSameZone") => (zones, None),
        Some("PreferSameNode") => (zones, nodes),
        _ => return None,
    };
    let mut hints = serde_json::Map::new();
    if let Some(z) = zones {
        hints.insert("forZones".into(), z);
    }
    if let Some(n) = nodes {
        hints.insert("forNodes".into(), n);
    }
    (!hints.is_empty()).then_some(Value::Object(hints))
}

/// A merge patch turning the map `current` (labels, annotations) into
/// `want`: changed keys set, gone ones removed.
pub(crate) fn map_patch(
    current: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
) -> Value {
    let mut patch = serde_json::Map::new();
    for k in current.keys().filter(|k| !want.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    for (k, v) in want.iter().filter(|(k, v)| current.get(*k) != Some(v)) {
        patch.insert(k.clone(), json!(v));
    }
    Value::Object(patch)
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    let labels = pod.labels();
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl EndpointsController {
    /// Hints each ready endpoint of `slices` for a zone, in proportion to
    /// the zones' CPU ([`topology_hints`]); why not, when that cannot be
    /// done.
    fn hint_zones(&self, slices: &mut [Value]) -> Result<(), topology_hints::Refusal> {
        let ready = slices
            .iter_mut()
            .flat_map(|s| s["endpoints"].as_array_mut().into_iter().flatten())
            .filter(|e| e["conditions"]["ready"] == true);
        let mut ready: Vec<&mut Value> = ready.collect();
        let zones: Vec<Option<String>> = ready
            .iter()
            .map(|e| e["zone"].as_str().map(str::to_owned))
            .collect();
        let zones: Vec<Option<&str>> = zones.iter().map(Option::as_deref).collect();
        let shares = self.shares.of(&self.nodes);
        let hinted = topology_hints::assign(shares.as_ref().as_ref(), &zones)?;
        for (e, zone) in ready.iter_mut().zip(hinted) {
            e["hints"] = json!({"forZones": [{"name": zone}]});
        }
        Ok(())
    }

    fn forget_topology(&self, key: &str) {
        let mut seen = self.topology.lock().unwrap_or_else(|e| e.into_inner());
        seen.remove(key);
    }

    /// Records upstream's events when a Service's topology-aware hints
    /// start, stop or cannot be given (`verdict`; none without the
    /// annotation): once per change, as this recorder does not aggregate.
    fn tell_topology(&self, svc: &Service, key: &str, verdict: Option<Result<(), String>>) {
        let mut seen = self.topology.lock().unwrap_or_else(|e| e.into_inner());
        let before = match &verdict {
            Some(v) => seen.insert(key.to_owned(), v.clone()),
            None => seen.remove(key),
        };
        if before == verdict {
            return;
        }
        let (warning, reason, message) = match (&before, &verdict) {
            (_, Some(Ok(()))) => (
                false,
                "TopologyAwareHintsEnabled",
                "Topology Aware Hints has been enabled",
            ),
            (_, Some(Err(why))) => (true, "TopologyAwareHintsDisabled", why.as_str()),
            (Some(Ok(())), None) => (
                true,
                "TopologyAwareHintsDisabled",
                "Topology Aware Hints has been disabled",
            ),
            (_, None) => return,
        };
        let message = format!("{message}, addressType: IPv4");
        let about = events::about(svc, COMPONENT, warning, reason, &message);
        self.cluster.event(about);
    }

    pub fn new(
        services: &mut Informer<Service>,
        pods: &mut Informer<Pod>,
        nodes: &mut Informer<Node>,
        endpoints: &Informer<Endpoints>,
        slices: &mut Informer<EndpointSlice>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        crate::owned::queue_self(services, queue.clone());
        let svc_cache = services.cache();
        // A node's zone is its endpoints': when it changes, every Service
        // is looked at again (rare: zones are set when nodes join). Its
        // readiness and CPU weigh in topology-aware hints.
        let shares = Arc::new(topology_hints::Shares::default());
        let (all, q, kept) = (svc_cache.clone(), queue.clone(), shares.clone());
        nodes.on_change(move |old, new| {
            let zone = |n: &Node| n.labels().get(ZONE).cloned();
            let capacity = |n: Option<&Node>| {
                let ready = n.map(crate::node_lifecycle::is_ready);
                let cpu = n
                    .and_then(|n| n.status.as_ref())
                    .and_then(|s| s.allocatable.as_ref())
                    .and_then(|a| a.get("cpu").cloned());
                let excluded = n.map(topology_hints::excluded);
                (n.map(zone), ready, cpu, excluded)
            };
            let zoned = matches!((old, new), (Some(a), Some(b)) if zone(a) != zone(b));
            if !zoned && capacity(old) == capacity(new) {
                return;
            }
            kept.forget();
            for svc in all.list() {
                if zoned || topology_hints::enabled(svc.annotations()) {
                    q.add(key_of(&*svc));
                }
            }
        });
        let q = queue.clone();
        pods.on_change(move |old, new| {
            // Only what endpoints show matters: labels, IP, readiness, node.
            if let (Some(a), Some(b)) = (old, new) {
                let view = |p: &Pod| {
                    (
                        p.labels().clone(),
                        p.status.as_ref().and_then(|s| s.pod_ip.clone()),
                        pods::is_ready(p),
                        p.metadata.deletion_timestamp.is_some(),
                        pods::phase(p).to_owned(),
                    )
                };
                if view(a) == view(b) {
                    return;
                }
            }
            for p in [old, new].into_iter().flatten() {
                for svc in svc_cache.list_in(&p.namespace().unwrap_or_default()) {
                    if selects(&svc, p) {
                        q.add(key_of(&*svc));
                    }
                }
            }
        });
        slices.on_change(move |_, new| {
            if let Some(s) = new {
                if let Some(svc) = s.labels().get(SERVICE_NAME) {
                    queue.add(format!("{}/{svc}", s.namespace().unwrap_or_default()));
                }
            }
        });
        Self {
            services: services.cache(),
            pods: pods.cache(),
            endpoints: endpoints.cache(),
            slices: slices.cache(),
            nodes: nodes.cache(),
            cluster,
            topology: Default::default(),
            shares,
        }
    }

    async fn remove(&self, key: &str) -> Result<(), Error> {
        if let Some(ep) = self.endpoints.get(key) {
            let target = Target::of::<Endpoints>(ep.namespace().as_deref(), &ep.name_any());
            match self.cluster.delete(&target, Deletion::default()).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// A Service port resolved for one pod: `(name, port, protocol)`.
type Port = (String, i32, String);

fn resolve_ports(svc: &Service, pod: &Pod) -> Option<Vec<Port>> {
    let mut out = Vec::new();
    for p in svc.spec.as_ref()?.ports.iter().flatten() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            None => p.port,
            Some(IntOrString::Int(i)) => *i,
            Some(IntOrString::String(name)) => {
                let found = pod
                    .spec
                    .as_ref()?
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()));
                match found {
                    Some(cp) => cp.container_port,
                    None => continue,
                }
            }
        };
        out.push((p.name.clone().unwrap_or_default(), port, protocol));
    }
    Some(out)
}

fn target_ref(pod: &Pod) -> Value {
    json!({"kind": "Pod", "namespace": pod.namespace(), "name": pod.name_any(), "uid": pod.uid()})
}

#[async_trait]
impl Reconcile for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let Some(svc) = self.services.get(key) else {
            self.forget_topology(key);
            self.remove(key).await?;
            return Ok(Action::Done);
        };
        // As upstream: a Service without a selector gets the endpoints its
        // users write, an ExternalName one none at all.
        let spec = svc.spec.as_ref();
        let external_name = spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName");
        if spec
            .and_then(|s| s.selector.as_ref())
            .is_none_or(|s| s.is_empty())
            || external_name
            || svc.metadata.deletion_timestamp.is_some()
        {
            return Ok(Action::Done);
        }
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let publish_not_ready = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            == Some(true);
        // Pods grouped by their resolved ports.
        let mut groups: BTreeMap<Vec<Port>, Vec<(Arc<Pod>, bool)>> = BTreeMap::new();
        let mut selected: Vec<Arc<Pod>> = self
            .pods
            .list_in(&ns)
            .into_iter()
            .filter(|p| selects(&svc, p))
            .collect();
        selected.sort_by_key(|p| p.name_any());
        for pod in selected {
            let ip = pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default();
            if ip.is_empty() || matches!(pods::phase(&pod), "Succeeded" | "Failed") {
                continue;
            }
            let Some(ports) = resolve_ports(&svc, &pod) else {
                continue;
            };
            let ready = (pods::is_ready(&pod) || publish_not_ready)
                && pod.metadata.deletion_timestamp.is_none();
            groups.entry(ports).or_default().push((pod, ready));
        }
        let ip = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.pod_ip.clone())
                .unwrap_or_default()
        };
        // As upstream: a pod whose subdomain is this Service is named by
        // its hostname (StatefulSet pods: `web-0.web.ns.svc…`).
        let hostname = |p: &Pod| {
            let spec = p.spec.as_ref()?;
            (spec.subdomain.as_deref() == Some(name.as_str()))
                .then(|| spec.hostname.clone())
                .flatten()
        };
        let named = |mut v: Value, p: &Pod| {
            if let Some(h) = hostname(p) {
                v["hostname"] = json!(h);
            }
            v
        };
        let address = |p: &Pod| {
            named(
                json!({"ip": ip(p), "nodeName": p.spec.as_ref().and_then(|s| s.node_name.clone()), "targetRef": target_ref(p)}),
                p,
            )
        };
        let ports_json = |ports: &[Port]| -> Vec<Value> {
            ports
                .iter()
                .map(|(n, p, proto)| {
                    let mut v = json!({"port": p, "protocol": proto});
                    if !n.is_empty() {
                        v["name"] = json!(n);
                    }
                    v
                })
                .collect()
        };
        let subsets: Vec<Value> = groups
            .iter()
            .filter(|(ports, _)| !ports.is_empty())
            .map(|(ports, members)| {
                let (ready, not_ready): (Vec<_>, Vec<_>) = members
                    .iter()
                    .filter(|(p, _)| p.metadata.deletion_timestamp.is_none())
                    .partition(|(_, r)| *r);
                let mut s = json!({"ports": ports_json(ports)});
                if !ready.is_empty() {
                    s["addresses"] =
                        json!(ready.iter().map(|(p, _)| address(p)).collect::<Vec<_>>());
                }
                if !not_ready.is_empty() {
                    s["notReadyAddresses"] = json!(not_ready
                        .iter()
                        .map(|(p, _)| address(p))
                        .collect::<Vec<_>>());
                }
                s
            })
            .collect();
        let labels = svc.labels().clone();
        let mut ep_labels = labels.clone();
        ep_labels.insert(SKIP_MIRROR.into(), "true".into());
        match self.endpoints.get(key) {
            Some(ep) => {
                let current = serde_json::to_value(&ep.subsets).unwrap_or_default();
                let want = if subsets.is_empty() {
                    Value::Null
                } else {
                    json!(subsets)
                };
                if current != want || *ep.labels() != ep_labels {
                    let target = Target::of::<Endpoints>(Some(&ns), &name);
                    let labels = map_patch(ep.labels(), &ep_labels);
                    let patch = json!({"metadata": {"labels": labels}, "subsets": subsets});
                    self.cluster.merge_patch(&target, patch, false).await?;
                }
            }
            None => {
                let ep = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "labels": ep_labels}, "subsets": subsets});
                match api::create::<Endpoints>(&*self.cluster, &ep).await {
                    Err(e) if !e.is_conflict() => return Err(e),
                    _ => {}
                }
            }
        }
        // EndpointSlices: one per port set, at most PER_SLICE endpoints each.
        // Topology-aware hints, when asked for, take the place of those of
        // a traffic distribution, as upstream's.
        let auto = topology_hints::enabled(svc.annotations());
        let distribution = svc
            .spec
            .as_ref()
            .and_then(|s| s.traffic_distribution.as_deref())
            .filter(|_| !auto);
        let slice_endpoint = |p: &Pod, ready: bool| {
            let terminating = p.metadata.deletion_timestamp.is_some();
            let node = p.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let zone = node
                .and_then(|n| self.nodes.get(n))
                .and_then(|n| n.labels().get(ZONE).cloned());
            let mut e = named(
                json!({"addresses": [ip(p)], "conditions": {"ready": ready, "serving": pods::is_ready(p) || publish_not_ready, "terminating": terminating},
                   "nodeName": node, "targetRef": target_ref(p)}),
                p,
            );
            if let Some(h) = hints(distribution, node, zone.as_deref()).filter(|_| ready) {
                e["hints"] = h;
            }
            if let Some(z) = zone {
                e["zone"] = json!(z);
            }
            e
        };
        let mut desired: Vec<Value> = Vec::new();
        for (ports, members) in &groups {
            for chunk in members.chunks(PER_SLICE) {
                let endpoints: Vec<Value> = chunk
                    .iter()
                    .map(|(p, ready)| slice_endpoint(p, *ready))
                    .collect();
                desired.push(json!({"ports": ports_json(ports), "endpoints": endpoints}));
            }
        }
        let verdict = auto.then(|| self.hint_zones(&mut desired).map_err(|r| r.to_string()));
        self.tell_topology(&svc, key, verdict);
        let mut existing: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_in(&ns)
            .into_iter()
            .filter(|s| {
                s.labels().get(SERVICE_NAME) == Some(&name)
                    && s.labels().get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
            })
            .collect();
        existing.sort_by_key(|s| s.name_any());
        // A Service always keeps one slice, emptied when no pod is left
        // (its last endpoints must not linger as terminating ones).
        if desired.is_empty() {
            desired.push(json!({"ports": [], "endpoints": []}));
        }
        for (i, want) in desired.iter().enumerate() {
            match existing.get(i) {
                Some(slice) => {
                    let current = json!({"ports": serde_json::to_value(&slice.ports).unwrap_or_default(), "endpoints": serde_json::to_value(&slice.endpoints).unwrap_or_default()});
                    let normalize = |v: &Value| if v.is_null() { json!([]) } else { v.clone() };
                    if normalize(&current["ports"]) != want["ports"]
                        || normalize(&current["endpoints"]) != want["endpoints"]
                    {
                        let target = Target::of::<EndpointSlice>(Some(&ns), &slice.name_any());
                        self.cluster
                            .merge_patch(&target, want.clone(), false)
                            .await?;
                    }
                }
                None => {
                    let mut slice_labels = labels.clone();
                    slice_labels.insert(SERVICE_NAME.into(), name.clone());
                    slice_labels.insert(MANAGED_BY.into(), MANAGER.into());
                    let obj = json!({
                        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"generateName": format!("{name}-"), "namespace": ns, "labels": slice_labels, "ownerReferences": [pods::controller_ref(&*svc)]},
                        "addressType": "IPv4", "ports": want["ports"], "endpoints": want["endpoints"],
                    });
                    api::create::<EndpointSlice>(&*self.cluster, &obj).await?;
                }
            }
        }
        for extra in existing.iter().skip(desired.len()) {
            let target = Target::of::<EndpointSlice>(Some(&ns), &extra.name_any());
            match self.cluster.delete(&target, Deletion::default()).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    fn pod(name: &str, ip: &str, ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "d", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]},
        }))
        .unwrap()
    }

    struct Informers {
        services: Informer<Service>,
        pods: Informer<Pod>,
        nodes: Informer<Node>,
        slices: Informer<EndpointSlice>,
    }

    /// The EndpointSlice the controller created first.
    fn created_slice(fake: &FakeCluster) -> Value {
        let mut created = fake.bodies("create").into_iter();
        created.find(|o| o["kind"] == "EndpointSlice").unwrap()
    }

    fn controller() -> (Arc<FakeCluster>, EndpointsController, Informers) {
        let fake = Arc::new(FakeCluster::default());
        let mut i = Informers {
            services: Informer::default(),
            pods: Informer::default(),
            nodes: Informer::default(),
            slices: Informer::default(),
        };
        let endpoints = Informer::default();
        let c = EndpointsController::new(
            &mut i.services,
            &mut i.pods,
            &mut i.nodes,
            &endpoints,
            &mut i.slices,
            fake.clone(),
            Queue::new(),
        );
        (fake, c, i)
    }

    #[tokio::test]
    async fn ready_and_unready_pods_with_named_ports() {
        let (fake, c, Informers { services, pods, .. }) = controller();
        services.apply(serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "svc"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "web", "port": 80, "targetPort": "http"}]},
        })).unwrap());
        pods.apply(pod("a", "10.42.0.5", true));
        pods.apply(pod("b", "10.42.0.6", false));
        pods.apply(pod("nip", "", true));
        c.reconcile("d/web").await.unwrap();
        let created = fake.bodies("create");
        let ep = created.iter().find(|o| o["kind"] == "Endpoints").unwrap();
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.42.0.5");
        assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.42.0.6");
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 8080);
        assert_eq!(
            ep["metadata"]["labels"][SKIP_MIRROR], "true",
            "not mirrored"
        );
        let slice = created_slice(&fake);
        assert_eq!(slice["metadata"]["labels"][SERVICE_NAME], "web");
        assert_eq!(slice["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(slice["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slice["metadata"]["ownerReferences"][0]["uid"], "svc");
    }

    #[tokio::test]
    async fn an_external_name_service_gets_no_endpoints() {
        let (fake, c, Informers { services, pods, .. }) = controller();
        services.apply(serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "d", "uid": "svc"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "selector": {"app": "web"}},
        })).unwrap());
        pods.apply(pod("a", "10.42.0.5", true));
        c.reconcile("d/web").await.unwrap();
        assert_eq!(fake.made("create"), Vec::<String>::new());
    }

    #[tokio::test]
    async fn endpoints_carry_their_zone_and_the_hints_the_distribution_asks_for() {
        let (fake, c, i) = controller();
        i.nodes.apply(
            serde_json::from_value(json!({"metadata": {"name": "n1", "labels": {ZONE: "z1"}}}))
                .unwrap(),
        );
        let svc = |distribution: &str| -> Service {
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "d", "uid": "svc"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}],
                         "trafficDistribution": distribution},
            }))
            .unwrap()
        };
        i.services.apply(svc("PreferClose"));
        i.pods.apply(pod("a", "10.42.0.5", true));
        i.pods.apply(pod("b", "10.42.0.6", false));
        c.reconcile("d/web").await.unwrap();
        let slice = created_slice(&fake);
        let (ready, not_ready) = (&slice["endpoints"][0], &slice["endpoints"][1]);
        assert_eq!(ready["zone"], "z1");
        assert_eq!(ready["hints"], json!({"forZones": [{"name": "z1"}]}));
        assert!(
            not_ready.get("hints").is_none(),
            "only ready endpoints get hints"
        );
        assert_eq!(
            hints(Some("PreferSameNode"), Some("n1"), None),
            Some(json!({"forNodes": [{"name": "n1"}]}))
        );
        assert_eq!(hints(None, Some("n1"), Some("z1")), None);
        assert_eq!(hints(Some("PreferClose"), Some("n1"), None), None);
    }

    #[tokio::test]
    async fn topology_mode_auto_shares_the_endpoints_among_zones_by_cpu() {
        let (fake, c, i) = controller();
        for (name, zone) in [("n1", "z1"), ("n2", "z2")] {
            i.nodes.apply(
                serde_json::from_value(json!({"metadata": {"name": name, "labels": {ZONE: zone}},
                    "status": {"allocatable": {"cpu": "2"}, "conditions": [{"type": "Ready", "status": "True"}]}}))
                .unwrap(),
            );
        }
        i.services.apply(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "d", "uid": "svc",
                             "annotations": {"service.kubernetes.io/topology-mode": "Auto"}},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}],
                         "trafficDistribution": "PreferSameNode"},
            }))
            .unwrap(),
        );
        for (name, ip, node) in [
            ("a", "10.42.0.5", "n1"),
            ("b", "10.42.0.6", "n1"),
            ("c", "10.42.0.7", "n1"),
            ("d", "10.42.1.5", "n2"),
        ] {
            let mut p = pod(name, ip, true);
            p.spec.as_mut().unwrap().node_name = Some(node.into());
            i.pods.apply(p);
        }
        c.reconcile("d/web").await.unwrap();
        let slice = created_slice(&fake);
        let hinted: Vec<(&str, &Value)> = slice["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["zone"].as_str().unwrap(), &e["hints"]))
            .collect();
        let for_zone = |z: &str| json!({"forZones": [{"name": z}]});
        // Two of z1's three endpoints stay; one serves z2, whose CPU is
        // half the cluster's; the node hints of the distribution give way.
        let to_z2 = hinted.iter().filter(|(_, h)| **h == for_zone("z2")).count();
        assert_eq!(to_z2, 2, "{hinted:?}");
        assert!(hinted.contains(&("z2", &for_zone("z2"))), "{hinted:?}");
        assert_eq!(
            hinted.iter().filter(|(_, h)| **h == for_zone("z1")).count(),
            2
        );
        // The verdict is told once, and again when it changes.
        c.reconcile("d/web").await.unwrap();
        i.nodes.apply(
            serde_json::from_value(json!({"metadata": {"name": "n2", "labels": {ZONE: "z2"}},
                "status": {"allocatable": {"cpu": "2"}, "conditions": [{"type": "Ready", "status": "False"}]}}))
            .unwrap(),
        );
        c.reconcile("d/web").await.unwrap();
        assert_eq!(
            fake.event_messages(),
            [
                "TopologyAwareHintsEnabled Topology Aware Hints has been enabled, addressType: IPv4",
                "TopologyAwareHintsDisabled Insufficient Node information: allocatable CPU or zone not specified on one or more nodes, addressType: IPv4",
            ]
        );
    }

    #[tokio::test]
    async fn scaling_to_zero_empties_the_slice_every_time() {
        let (
            fake,
            c,
            Informers {
                services,
                pods,
                slices,
                ..
            },
        ) = controller();
        services.apply(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "d", "uid": "svc"},
                "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
            }))
            .unwrap(),
        );
        // The controller sees the cluster's slices as its informer would.
        let addresses = || {
            let mut ips = Vec::new();
            for s in fake.objects("endpointslices") {
                slices.apply(serde_json::from_value(s.clone()).unwrap());
                for e in s["endpoints"].as_array().into_iter().flatten() {
                    ips.push(e["addresses"][0].as_str().unwrap().to_owned());
                }
            }
            ips.sort();
            ips
        };
        for round in 0..3 {
            let (a, b) = (format!("a{round}"), format!("b{round}"));
            let ips = [
                format!("10.42.0.{}", 10 + round),
                format!("10.42.0.{}", 20 + round),
            ];
            pods.apply(pod(&a, &ips[0], true));
            pods.apply(pod(&b, &ips[1], true));
            c.reconcile("d/web").await.unwrap();
            assert_eq!(addresses(), ips.to_vec(), "round {round}: both pods");
            // Scaled to 0: the pods terminate, then go.
            for (name, ip) in [(&a, &ips[0]), (&b, &ips[1])] {
                let mut p = pod(name, ip, true);
                p.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        k8s_openapi::jiff::Timestamp::now(),
                    ));
                pods.apply(p);
            }
            c.reconcile("d/web").await.unwrap();
            assert_eq!(addresses(), ips.to_vec(), "round {round}: terminating");
            for name in [&a, &b] {
                pods.delete(&pod(name, "", true));
            }
            c.reconcile("d/web").await.unwrap();
            assert_eq!(
                addresses(),
                Vec::<String>::new(),
                "round {round}: no endpoint left"
            );
            assert_eq!(fake.objects("endpointslices").len(), 1, "one slice kept");
        }
    }
}
