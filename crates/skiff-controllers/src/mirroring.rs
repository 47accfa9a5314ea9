//! EndpointSlices mirrored from the Endpoints of Services without a
//! selector, as upstream's mirroring controller writes them: the proxy and
//! the DNS read slices only, so addresses a user lists by hand (a database
//! outside the cluster, a peer's pods) reach them this way. One slice per
//! address family and port set, owned by the Endpoints.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::ResourceExt;
use serde_json::{json, Value};

use crate::endpoints::{map_patch, MANAGED_BY, SKIP_MIRROR};
use crate::{owned, pods};
use skiff_core::endpoint_slices::SERVICE_NAME;
use skiff_runtime::api::{self, Cluster, Deletion, Error, Target};
use skiff_runtime::cache::{key_of, Cache, Informer};
use skiff_runtime::controller::{Action, Reconcile};
use skiff_runtime::events;
use skiff_runtime::expectations::Expectations;
use skiff_runtime::queue::Queue;

const MANAGER: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints used as a leader-election lock are not addresses.
const LEADER: &str = "control-plane.alpha.kubernetes.io/leader";
/// Annotations of the Endpoints a slice does not carry.
const NOT_COPIED: [&str; 2] = [
    "endpoints.kubernetes.io/last-change-trigger-time",
    "kubectl.kubernetes.io/last-applied-configuration",
];
/// Addresses mirrored per port set, upstream's default
/// (`--mirroring-max-endpoints-per-subset`).
const PER_SUBSET: usize = 1000;
const COMPONENT: &str = "endpointslicemirroring-controller";

/// A port as slices compare them: name, port, protocol, app protocol.
type PortKey = (String, i32, String, Option<String>);
/// A slice's identity: its address type and sorted ports.
type SliceKey = (&'static str, Vec<PortKey>);

/// Whether `ep` asks to be mirrored: not marked to skip, not a lock.
fn wants_mirror(ep: &Endpoints) -> bool {
    ep.labels().get(SKIP_MIRROR).map(String::as_str) != Some("true")
        && !ep.annotations().contains_key(LEADER)
}

/// Whether `svc` leaves its endpoints to its users (an empty selector is
/// stored as none upstream).
fn selectorless(svc: &Service) -> bool {
    let selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref());
    selector.is_none_or(|s| s.is_empty())
}

fn port_key(p: &EndpointPort) -> PortKey {
    (
        p.name.clone().unwrap_or_default(),
        p.port.unwrap_or_default(),
        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
        p.app_protocol.clone(),
    )
}

fn slice_port((name, port, protocol, app_protocol): &PortKey) -> EndpointPort {
    EndpointPort {
        name: Some(name.clone()),
        port: Some(*port),
        protocol: Some(protocol.clone()),
        app_protocol: app_protocol.clone(),
    }
}

/// The address type and endpoint of one address, written as its IP in
/// canonical form; none when the address is no IP.
fn endpoint_of(address: &EndpointAddress, ready: bool) -> Option<(&'static str, Endpoint)> {
    let ip = match address.ip.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    let family = if ip.is_ipv4() { "IPv4" } else { "IPv6" };
    let endpoint = Endpoint {
        addresses: vec![ip.to_string()],
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
        node_name: address.node_name.clone(),
        target_ref: address.target_ref.clone(),
        ..Default::default()
    };
    Some((family, endpoint))
}

/// Endpoints as a set: their JSON, sorted and without repeats.
fn endpoint_set<'a>(endpoints: impl IntoIterator<Item = &'a Endpoint>) -> Vec<Value> {
    let mut set: Vec<Value> = endpoints.into_iter().map(api::encode).collect();
    set.sort_by_cached_key(Value::to_string);
    set.dedup();
    set
}

/// What the Endpoints ask for: each slice's endpoints, and how many
/// addresses were no IPs or over the limit.
struct Desired {
    slices: BTreeMap<SliceKey, Vec<Value>>,
    invalid: usize,
    skipped: usize,
}

fn desired(ep: &Endpoints) -> Desired {
    let mut out = Desired {
        slices: BTreeMap::new(),
        invalid: 0,
        skipped: 0,
    };
    let mut added: BTreeMap<SliceKey, Vec<Endpoint>> = BTreeMap::new();
    for subset in ep.subsets.iter().flatten() {
        let mut ports: Vec<PortKey> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let name = p.name.clone().unwrap_or_default();
                (name, p.port, protocol, p.app_protocol.clone())
            })
            .collect();
        ports.sort();
        let ready = subset.addresses.iter().flatten().map(|a| (a, true));
        let not_ready = subset.not_ready_addresses.iter().flatten();
        let mut taken = 0;
        for (address, is_ready) in ready.chain(not_ready.map(|a| (a, false))) {
            if taken >= PER_SUBSET {
                out.skipped += 1;
                continue;
            }
            match endpoint_of(address, is_ready) {
                Some((family, endpoint)) => {
                    taken += 1;
                    added
                        .entry((family, ports.clone()))
                        .or_default()
                        .push(endpoint);
                }
                None => out.invalid += 1,
            }
        }
    }
    for (key, endpoints) in added {
        let mut set = endpoint_set(&endpoints);
        out.skipped += set.len().saturating_sub(PER_SUBSET);
        set.truncate(PER_SUBSET);
        out.slices.insert(key, set);
    }
    out
}

fn slice_key(slice: &EndpointSlice) -> SliceKey {
    let family = match slice.address_type.as_str() {
        "IPv6" => "IPv6",
        "FQDN" => "FQDN",
        _ => "IPv4",
    };
    let mut ports: Vec<PortKey> = slice.ports.iter().flatten().map(port_key).collect();
    ports.sort();
    (family, ports)
}

pub struct MirroringController {
    services: Arc<Cache<Service>>,
    endpoints: Arc<Cache<Endpoints>>,
    slices: Arc<Cache<EndpointSlice>>,
    cluster: Arc<dyn Cluster>,
    expectations: Arc<Expectations>,
    /// The Endpoints' version last warned about, per key: one warning per
    /// version, as this recorder does not aggregate.
    warned: Mutex<HashMap<String, String>>,
}

impl MirroringController {
    pub fn new(
        services: &mut Informer<Service>,
        endpoints: &mut Informer<Endpoints>,
        slices: &mut Informer<EndpointSlice>,
        cluster: Arc<dyn Cluster>,
        queue: Arc<Queue>,
    ) -> Self {
        let expectations = Arc::new(Expectations::default());
        owned::track(
            slices,
            "Endpoints",
            queue.clone(),
            Some(expectations.clone()),
            |_| Vec::new(),
        );
        let q = queue.clone();
        endpoints.on_change(move |old, new| {
            if [old, new].into_iter().flatten().any(wants_mirror) {
                if let Some(ep) = new.or(old) {
                    q.add(key_of(ep));
                }
            }
        });
        services.on_change(move |old, new| {
            let before = old.map(selectorless);
            let after = new.map(selectorless);
            if before != after {
                if let Some(svc) = new.or(old) {
                    queue.add(key_of(svc));
                }
            }
        });
        Self {
            services: services.cache(),
            endpoints: endpoints.cache(),
            slices: slices.cache(),
            cluster,
            expectations,
            warned: Mutex::default(),
        }
    }

    /// The slices this controller mirrored for the Endpoints `ns/name`.
    fn mirrored(&self, ns: &str, name: &str) -> Vec<Arc<EndpointSlice>> {
        let mut mine: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_in(ns)
            .into_iter()
            .filter(|s| {
                let labels = s.labels();
                labels.get(SERVICE_NAME).map(String::as_str) == Some(name)
                    && labels.get(MANAGED_BY).map(String::as_str) == Some(MANAGER)
            })
            .collect();
        mine.sort_by_key(|s| s.name_any());
        mine
    }

    async fn delete(&self, slices: &[Arc<EndpointSlice>]) -> Result<(), Error> {
        for slice in slices {
            let target =
                Target::of::<EndpointSlice>(slice.namespace().as_deref(), &slice.name_any());
            match self.cluster.delete(&target, Deletion::default()).await {
                Err(e) if !e.is_not_found() => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Tells, once per version of `ep`, of addresses left out.
    fn warn(&self, ep: &Endpoints, key: &str, d: &Desired) {
        let version = ep.resource_version().unwrap_or_default();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if d.invalid + d.skipped == 0 {
            warned.remove(key);
            return;
        }
        if warned.insert(key.to_owned(), version.clone()) == Some(version) {
            return;
        }
        if d.invalid > 0 {
            let message = format!(
                "Skipped {} invalid IP addresses when mirroring to EndpointSlices",
                d.invalid
            );
            let event = events::about(ep, COMPONENT, true, "InvalidIPAddress", &message);
            self.cluster.event(event);
        }
        if d.skipped > 0 {
            let message = format!("A max of {PER_SUBSET} addresses can be mirrored to EndpointSlices per Endpoints subset. {} addresses were skipped", d.skipped);
            let event = events::about(ep, COMPONENT, true, "TooManyAddressesToMirror", &message);
            self.cluster.event(event);
        }
    }

    /// The labels and annotations a slice mirrored from `ep` carries.
    fn metadata(ep: &Endpoints) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
        let mut labels = ep.labels().clone();
        labels.insert(SERVICE_NAME.into(), ep.name_any());
        labels.insert(MANAGED_BY.into(), MANAGER.into());
        let mut annotations = ep.annotations().clone();
        annotations.retain(|k, _| !NOT_COPIED.contains(&k.as_str()));
        (labels, annotations)
    }
}

#[async_trait]
impl Reconcile for MirroringController {
    fn name(&self) -> &'static str {
        "endpointslice-mirroring"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, Error> {
        let (ns, name) = match key.split_once('/') {
            Some((ns, name)) => (ns, name),
            None => return Ok(Action::Done),
        };
        let existing = self.mirrored(ns, name);
        let ep = self.endpoints.get(key).filter(|ep| wants_mirror(ep));
        let svc = self.services.get(key).filter(|svc| selectorless(svc));
        let (Some(ep), Some(_)) = (ep, svc) else {
            self.expectations.remove(key);
            self.warned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            self.delete(&existing).await?;
            return Ok(Action::Done);
        };
        if !self.expectations.satisfied(key) {
            return Ok(Action::Done);
        }
        let want = desired(&ep);
        self.warn(&ep, key, &want);
        let (labels, annotations) = Self::metadata(&ep);

        // Each wanted slice keeps the first existing one of its key; the
        // rest go, or are recycled for wanted keys that have none.
        let mut by_key: BTreeMap<SliceKey, Vec<Arc<EndpointSlice>>> = BTreeMap::new();
        for slice in existing {
            by_key.entry(slice_key(&slice)).or_default().push(slice);
        }
        let mut kept: Vec<(Arc<EndpointSlice>, &SliceKey)> = Vec::new();
        let mut missing: Vec<&SliceKey> = Vec::new();
        for k in want.slices.keys() {
            match by_key.get_mut(k) {
                Some(same) => kept.push((same.remove(0), k)),
                None => missing.push(k),
            }
        }
        let mut spare: Vec<Arc<EndpointSlice>> = by_key.into_values().flatten().collect();
        let mut creates = Vec::new();
        for k in missing {
            match spare.iter().position(|s| slice_key(s).0 == k.0) {
                Some(i) => kept.push((spare.remove(i), k)),
                None => creates.push(k),
            }
        }
        if ep.metadata.deletion_timestamp.is_some() {
            creates.clear();
        }
        self.expectations.expect(key, creates.len(), spare.len());

        for (slice, k) in kept {
            let ports: Vec<EndpointPort> = k.1.iter().map(slice_port).collect();
            let endpoints = &want.slices[k];
            let same = slice_key(&slice) == *k
                && endpoint_set(slice.endpoints.iter()) == *endpoints
                && *slice.labels() == labels
                && *slice.annotations() == annotations;
            if same {
                continue;
            }
            let patch = json!({
                "metadata": {
                    "labels": map_patch(slice.labels(), &labels),
                    "annotations": map_patch(slice.annotations(), &annotations),
                },
                "ports": ports,
                "endpoints": endpoints,
            });
            let target = Target::of::<EndpointSlice>(Some(ns), &slice.name_any());
            self.cluster.merge_patch(&target, patch, false).await?;
        }
        for k in creates {
            let ports: Vec<EndpointPort> = k.1.iter().map(slice_port).collect();
            let obj = json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "generateName": format!("{name}-"), "namespace": ns,
                    "labels": labels, "annotations": annotations,
                    "ownerReferences": [pods::controller_ref(&*ep)],
                },
                "addressType": k.0, "ports": ports, "endpoints": want.slices[k],
            });
            if let Err(e) = api::create::<EndpointSlice>(&*self.cluster, &obj).await {
                self.expectations.creation_observed(key);
                return Err(e);
            }
        }
        self.delete(&spare).await?;
        Ok(Action::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_runtime::fake::FakeCluster;

    struct Bed {
        fake: Arc<FakeCluster>,
        c: MirroringController,
        services: Informer<Service>,
        endpoints: Informer<Endpoints>,
        slices: Informer<EndpointSlice>,
    }

    impl Bed {
        fn new() -> Self {
            let fake = Arc::new(FakeCluster::default());
            let mut services = Informer::default();
            let mut endpoints = Informer::default();
            let mut slices = Informer::default();
            let c = MirroringController::new(
                &mut services,
                &mut endpoints,
                &mut slices,
                fake.clone(),
                Queue::new(),
            );
            Self {
                fake,
                c,
                services,
                endpoints,
                slices,
            }
        }

        /// Reconciles `d/db`, then shows the controller the cluster's
        /// slices as its informer would; returns them by name.
        async fn sync(&self) -> Vec<Value> {
            self.c.reconcile("d/db").await.unwrap();
            let mut all = self.fake.objects("endpointslices");
            for s in &all {
                self.slices
                    .apply(serde_json::from_value(s.clone()).unwrap());
            }
            for gone in self.slices.cache().list() {
                if !all.iter().any(|s| s["metadata"]["name"] == gone.name_any()) {
                    self.slices.delete(&gone);
                }
            }
            all.sort_by_key(|s| s["metadata"]["name"].to_string());
            all
        }
    }

    fn service(selector: Option<Value>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "d", "uid": "svc"},
            "spec": {"selector": selector, "ports": [{"port": 5432}]},
        }))
        .unwrap()
    }

    fn endpoints(labels: Value, subsets: Value) -> Endpoints {
        serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "d", "uid": "ep", "resourceVersion": "1",
                         "labels": labels,
                         "annotations": {"team": "data", NOT_COPIED[1]: "{}"}},
            "subsets": subsets,
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn addresses_of_a_selectorless_service_are_mirrored_by_family_and_ports() {
        let bed = Bed::new();
        bed.services.apply(service(None));
        bed.endpoints.apply(endpoints(
            json!({"app": "db"}),
            json!([
                {"addresses": [{"ip": "10.9.0.1", "hostname": "primary"}, {"ip": "fd00::1"}],
                 "notReadyAddresses": [{"ip": "10.9.0.2"}],
                 "ports": [{"name": "pg", "port": 5432}]},
                {"addresses": [{"ip": "10.9.0.3"}], "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]},
            ]),
        ));
        let slices = bed.sync().await;
        assert_eq!(slices.len(), 2, "{slices:?}");
        let v4 = slices.iter().find(|s| s["addressType"] == "IPv4").unwrap();
        let v6 = slices.iter().find(|s| s["addressType"] == "IPv6").unwrap();
        let ips = |s: &Value| -> Vec<(String, bool)> {
            let mut ips: Vec<(String, bool)> = s["endpoints"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    let ip = e["addresses"][0].as_str().unwrap().to_owned();
                    (ip, e["conditions"]["ready"].as_bool().unwrap())
                })
                .collect();
            ips.sort();
            ips
        };
        let both = [("10.9.0.1", true), ("10.9.0.2", false), ("10.9.0.3", true)];
        let both: Vec<(String, bool)> = both.iter().map(|(i, r)| (i.to_string(), *r)).collect();
        assert_eq!(ips(v4), both, "subsets with the same ports share a slice");
        assert_eq!(ips(v6), [("fd00::1".to_string(), true)]);
        assert_eq!(
            v4["ports"],
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}])
        );
        let primary = v4["endpoints"].as_array().unwrap().iter();
        let primary: Vec<&Value> = primary.filter(|e| e["hostname"] == "primary").collect();
        assert_eq!(primary.len(), 1);
        let meta = &v4["metadata"];
        assert_eq!(meta["labels"][SERVICE_NAME], "db");
        assert_eq!(meta["labels"][MANAGED_BY], MANAGER);
        assert_eq!(meta["labels"]["app"], "db");
        assert_eq!(meta["annotations"], json!({"team": "data"}));
        assert_eq!(meta["ownerReferences"][0]["kind"], "Endpoints");
        assert_eq!(meta["ownerReferences"][0]["uid"], "ep");

        // In step: nothing more is written.
        bed.fake.clear();
        bed.sync().await;
        assert!(bed.fake.made("patch").is_empty() && bed.fake.made("create").is_empty());

        // The v6 address goes, a port changes: the v6 slice is deleted,
        // the v4 one rewritten in place.
        bed.endpoints.apply(endpoints(
            json!({"app": "db"}),
            json!([{"addresses": [{"ip": "10.9.0.1"}], "ports": [{"name": "pg", "port": 6432}]}]),
        ));
        let slices = bed.sync().await;
        assert_eq!(slices.len(), 1, "{slices:?}");
        assert_eq!(slices[0]["metadata"]["name"], v4["metadata"]["name"]);
        assert_eq!(slices[0]["ports"][0]["port"], 6432);
        assert_eq!(ips(&slices[0]), [("10.9.0.1".to_string(), true)]);
    }

    #[tokio::test]
    async fn slices_go_when_the_service_selects_or_the_endpoints_skip_mirroring() {
        let bed = Bed::new();
        let subsets = json!([{"addresses": [{"ip": "10.9.0.1"}], "ports": [{"port": 5432}]}]);
        bed.services.apply(service(None));
        bed.endpoints.apply(endpoints(json!({}), subsets.clone()));
        assert_eq!(bed.sync().await.len(), 1);
        bed.services.apply(service(Some(json!({"app": "db"}))));
        assert!(
            bed.sync().await.is_empty(),
            "a selector's slices are the endpoints controller's"
        );
        bed.services.apply(service(None));
        assert_eq!(bed.sync().await.len(), 1);
        bed.endpoints
            .apply(endpoints(json!({SKIP_MIRROR: "true"}), subsets.clone()));
        assert!(bed.sync().await.is_empty());
        bed.endpoints.apply(endpoints(json!({}), subsets));
        assert_eq!(bed.sync().await.len(), 1);
        bed.services.delete(&service(None));
        assert!(bed.sync().await.is_empty(), "no Service, no slices");
    }

    #[tokio::test]
    async fn a_stale_cache_makes_no_second_slice_and_skipped_addresses_are_told_once() {
        let bed = Bed::new();
        bed.services.apply(service(None));
        let many: Vec<Value> = (0..PER_SUBSET + 2)
            .map(|i| json!({"ip": format!("10.9.{}.{}", i / 250, i % 250 + 1)}))
            .collect();
        bed.endpoints.apply(endpoints(
            json!({}),
            json!([{"addresses": many, "ports": [{"port": 5432}]}]),
        ));
        // Before the informer shows the created slice, a second pass waits.
        bed.c.reconcile("d/db").await.unwrap();
        bed.c.reconcile("d/db").await.unwrap();
        let slices = bed.fake.objects("endpointslices");
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0]["endpoints"].as_array().unwrap().len(), PER_SUBSET);
        bed.sync().await;
        assert_eq!(
            bed.fake.event_messages(),
            ["TooManyAddressesToMirror A max of 1000 addresses can be mirrored to EndpointSlices per Endpoints subset. 2 addresses were skipped"]
        );
    }
}
