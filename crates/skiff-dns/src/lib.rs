//! Cluster DNS: answers for the cluster domain over UDP and TCP, from a
//! [`zone::Zone`] rebuilt whenever a Service or EndpointSlice changes.
//! Messages are parsed and written with `hickory-proto`. Names outside the
//! cluster domain go to the node's own resolvers (see [`upstream`]), as
//! CoreDNS's `forward . /etc/resolv.conf`; without any, they are refused.

pub mod upstream;
pub mod zone;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::Query;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Api, Client};
use skiff_runtime::cache::{follow, Cache};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;

use upstream::Upstream;
use zone::{Entry, Found, Zone};

/// How long answers may be cached, as upstream's CoreDNS default.
const TTL: u32 = 5;

#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen (UDP and TCP); port 0 picks one.
    pub addr: SocketAddr,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    /// Where names outside the cluster domain are asked.
    pub upstream: Upstream,
}

/// The reply to one query message over TCP (truncated only past the
/// 65,535 bytes a TCP message can hold), or `None` if it cannot be parsed.
pub async fn respond(zone: &Zone, upstream: &Upstream, request: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(request).ok()?;
    match answer(zone, upstream, &query, request, true).await {
        Answer::Relayed(reply) => Some(reply),
        Answer::Built(reply) => within(reply, u16::MAX as usize),
    }
}

/// A reply: built here, or an upstream's as it came.
enum Answer {
    Built(Message),
    Relayed(Vec<u8>),
}

/// `reply` in at most `limit` bytes: whole, or truncated (TC set, no
/// answers) so that the client knows it is not.
fn within(mut reply: Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    reply.take_answers();
    reply.take_additionals();
    reply.set_truncated(true);
    reply.to_vec().ok()
}

/// An empty reply to `query`, authoritative.
fn reply_to(query: &Message) -> Message {
    let mut reply = Message::new();
    reply
        .set_id(query.id())
        .set_message_type(MessageType::Response)
        .set_op_code(query.op_code())
        .set_recursion_desired(query.recursion_desired())
        .set_recursion_available(false)
        .set_authoritative(true);
    reply
}

/// The reply to `query` (whose bytes are `request`), over TCP or UDP: from
/// the zone, or for a name outside it the upstream's. An alias (an
/// ExternalName Service) is followed, inside the zone or upstream, as
/// CoreDNS follows it.
async fn answer(
    zone: &Zone,
    upstream: &Upstream,
    query: &Message,
    request: &[u8],
    tcp: bool,
) -> Answer {
    let mut reply = reply_to(query);
    let Some(q) = query.queries().first() else {
        reply.set_response_code(ResponseCode::FormErr);
        return Answer::Built(reply);
    };
    reply.add_query(q.clone());
    let entries = match zone.find(&q.name().to_ascii()) {
        Found::Elsewhere if upstream.is_empty() => {
            reply.set_authoritative(false);
            reply.set_response_code(ResponseCode::Refused);
            return Answer::Built(reply);
        }
        Found::Elsewhere => {
            return match upstream.ask(request, tcp).await {
                Some(relayed) => Answer::Relayed(relayed),
                None => {
                    reply.set_authoritative(false);
                    reply.set_response_code(ResponseCode::ServFail);
                    Answer::Built(reply)
                }
            };
        }
        Found::NoName => {
            reply.set_response_code(ResponseCode::NXDomain);
            return Answer::Built(reply);
        }
        Found::Records(entries) => entries,
    };
    let kind = q.query_type();
    for e in entries {
        if let Entry::Cname(target) = e {
            let Ok(alias) = Name::from_ascii(target) else {
                continue;
            };
            let data = RData::CNAME(CNAME(alias.clone()));
            reply.add_answer(Record::from_rdata(q.name().clone(), TTL, data));
            if !matches!(kind, RecordType::CNAME | RecordType::ANY) {
                let found = chase(zone, upstream, &alias, kind, tcp).await;
                reply.add_answers(found);
            }
            continue;
        }
        reply.add_answers(records(q.name(), e, kind));
    }
    Answer::Built(reply)
}

/// The records of `entry` for a query of `kind` about `name`.
fn records(name: &Name, entry: &Entry, kind: RecordType) -> Option<Record> {
    let data = match (entry, kind) {
        (Entry::A(ip), RecordType::A | RecordType::ANY) => RData::A(A(*ip)),
        (Entry::Srv { port, target }, RecordType::SRV | RecordType::ANY) => {
            let target = Name::from_ascii(target).ok()?;
            RData::SRV(SRV::new(0, 100, *port, target))
        }
        _ => return None,
    };
    Some(Record::from_rdata(name.clone(), TTL, data))
}

/// The records of `kind` an alias's target has: in the zone, or as the
/// upstream answers for it.
async fn chase(
    zone: &Zone,
    upstream: &Upstream,
    target: &Name,
    kind: RecordType,
    tcp: bool,
) -> Vec<Record> {
    match zone.find(&target.to_ascii()) {
        Found::Records(entries) => entries
            .into_iter()
            .filter_map(|e| records(target, e, kind))
            .collect(),
        Found::NoName => Vec::new(),
        Found::Elsewhere => {
            let mut ask = Message::new();
            ask.set_id(rand::random())
                .set_recursion_desired(true)
                .add_query(Query::query(target.clone(), kind));
            let Ok(bytes) = ask.to_vec() else {
                return Vec::new();
            };
            let reply = upstream.ask(&bytes, tcp).await;
            let reply = reply.and_then(|r| Message::from_vec(&r).ok());
            reply.map(|mut r| r.take_answers()).unwrap_or_default()
        }
    }
}

/// The largest UDP reply without EDNS (RFC 1035).
const UDP_PLAIN: usize = 512;
/// The most an EDNS client is answered over UDP, whatever it offers.
const UDP_EDNS_MAX: usize = 4096;

/// The reply to one query over UDP: within 512 bytes, or the size the
/// client's EDNS offers (up to 4096); a larger one goes out truncated (TC
/// set, no answers) so the client asks again over TCP. An EDNS query is
/// answered with EDNS.
pub async fn respond_udp(zone: &Zone, upstream: &Upstream, request: &[u8]) -> Option<Vec<u8>> {
    let query = Message::from_vec(request).ok()?;
    let offered = query
        .extensions()
        .as_ref()
        .map(|e| e.max_payload() as usize);
    let limit = offered.map_or(UDP_PLAIN, |n| n.clamp(UDP_PLAIN, UDP_EDNS_MAX));
    let mut reply = match answer(zone, upstream, &query, request, false).await {
        Answer::Relayed(reply) => return Some(reply),
        Answer::Built(reply) => reply,
    };
    if let Some(edns) = query.extensions() {
        let mut ours = hickory_proto::op::Edns::new();
        ours.set_max_payload(UDP_EDNS_MAX as u16)
            .set_version(edns.version());
        reply.set_edns(ours);
    }
    within(reply, limit)
}

/// How long a TCP client may take to send its next query (CoreDNS's
/// default idle timeout).
const TCP_IDLE: Duration = Duration::from_secs(8);
/// How long the rest of a query may take once its length has come.
const TCP_READ: Duration = Duration::from_secs(2);
/// TCP connections served at once; beyond, new ones wait to be accepted.
const TCP_CONNECTIONS: usize = 256;
/// UDP queries answered at once (those waiting on an upstream among
/// them); beyond, the next is answered before another is read.
const UDP_QUERIES: usize = 1024;

/// Answers the queries of one TCP connection (each framed by its 16-bit
/// length, RFC 7766) until the client closes it, stays silent for
/// [`TCP_IDLE`], dawdles over a query for [`TCP_READ`] or sends what is
/// not a query.
async fn serve_tcp<S, Z>(mut conn: S, zone: Z, upstream: &Upstream)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    Z: Fn() -> Arc<Zone>,
{
    loop {
        let Ok(Ok(len)) = tokio::time::timeout(TCP_IDLE, conn.read_u16()).await else {
            return;
        };
        let mut msg = vec![0u8; len as usize];
        let Ok(Ok(_)) = tokio::time::timeout(TCP_READ, conn.read_exact(&mut msg)).await else {
            return;
        };
        let Some(reply) = respond(&zone(), upstream, &msg).await else {
            return;
        };
        let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&reply);
        let Ok(Ok(())) = tokio::time::timeout(TCP_IDLE, conn.write_all(&framed)).await else {
            return;
        };
    }
}

/// Binds UDP and TCP and serves until the returned task is dropped;
/// returns the bound address.
pub async fn start(
    client: Client,
    config: Config,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let (udp, tcp) = bind_pair(config.addr).await?;
    let addr = udp.local_addr()?;
    let zone = Arc::new(RwLock::new(Arc::new(Zone::default())));
    let task = tokio::spawn(async move {
        let wake = Arc::new(Notify::new());
        let services: Arc<Cache<Service>> = follow(&client, Some(wake.clone()));
        let slices: Arc<Cache<EndpointSlice>> = follow(&client, Some(wake.clone()));
        let z = zone.clone();
        let rebuild = async move {
            loop {
                let svcs: Vec<Service> = services.list().iter().map(|s| (**s).clone()).collect();
                let eps: Vec<EndpointSlice> = slices.list().iter().map(|s| (**s).clone()).collect();
                let next = Arc::new(Zone::build(&config.domain, &svcs, &eps));
                *z.write().unwrap_or_else(|e| e.into_inner()) = next;
                wake.notified().await;
            }
        };
        let current = move || zone.read().unwrap_or_else(|e| e.into_inner()).clone();
        let c = current.clone();
        let upstream = Arc::new(config.upstream);
        let up = upstream.clone();
        let udp_loop = async move {
            let udp = Arc::new(udp);
            let slots = Arc::new(tokio::sync::Semaphore::new(UDP_QUERIES));
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let (request, zone, up, udp) = (buf[..n].to_vec(), c(), up.clone(), udp.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    if let Some(reply) = respond_udp(&zone, &up, &request).await {
                        let _ = udp.send_to(&reply, peer).await;
                    }
                });
            }
        };
        let tcp_loop = async move {
            let slots = Arc::new(tokio::sync::Semaphore::new(TCP_CONNECTIONS));
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((conn, _)) = tcp.accept().await else {
                    continue;
                };
                let (current, upstream) = (current.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_tcp(conn, &current, &upstream).await;
                });
            }
        };
        tokio::join!(rebuild, udp_loop, tcp_loop);
    });
    Ok((addr, task))
}

/// A UDP socket and a TCP listener on the same port. With port 0 the
/// system picks the UDP port, whose TCP twin may be taken (by any
/// connection's local end): then another pair is tried.
async fn bind_pair(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    const TRIES: usize = 16;
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 && tries < TRIES => {
                tracing::debug!(error = %e, "the DNS port's TCP twin is taken; another pair");
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Publishes the server as the `kube-system/kube-dns` Service at
/// `service_ip`, port 53 over UDP and TCP, with Endpoints and an
/// EndpointSlice naming `serving`.
pub async fn publish(
    client: &Client,
    service_ip: &str,
    serving: SocketAddr,
) -> Result<(), kube::Error> {
    use k8s_openapi::api::core::v1::Endpoints;
    use kube::api::{Patch, PatchParams, PostParams};
    let params = PatchParams::apply("skiff-dns").force();
    let port = serving.port();
    let ip = serving.ip().to_string();
    let labels = serde_json::json!({"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"});
    let service = serde_json::json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
        "spec": {"clusterIP": service_ip, "ports": [
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": port},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": port}]}});
    // Created or replaced whole: its two ports share the number 53, and a
    // merge keyed by port alone would fold them into one.
    let services = Api::<Service>::namespaced(client.clone(), "kube-system");
    let mut service: Service = serde_json::from_value(service).expect("a well-formed Service");
    match services.get_opt("kube-dns").await? {
        Some(current) => {
            service.metadata.resource_version = current.metadata.resource_version;
            services
                .replace("kube-dns", &PostParams::default(), &service)
                .await?;
        }
        None => {
            services.create(&PostParams::default(), &service).await?;
        }
    }
    let endpoints = serde_json::json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"}, {"name": "dns-tcp", "port": port, "protocol": "TCP"}]}]});
    Api::<Endpoints>::namespaced(client.clone(), "kube-system")
        .patch("kube-dns", &params, &Patch::Apply(&endpoints))
        .await?;
    let slice = serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kube-dns", "namespace": "kube-system",
                     "labels": {"kubernetes.io/service-name": "kube-dns", "endpointslice.kubernetes.io/managed-by": "skiff-dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [{"name": "dns", "port": port, "protocol": "UDP"}, {"name": "dns-tcp", "port": port, "protocol": "TCP"}]});
    Api::<EndpointSlice>::namespaced(client.clone(), "kube-system")
        .patch("kube-dns", &params, &Patch::Apply(&slice))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn query(name: &str, kind: RecordType) -> Vec<u8> {
        let mut q = Message::new();
        q.set_id(7)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        q.to_vec().unwrap()
    }

    async fn ask_via(zone: &Zone, upstream: &Upstream, name: &str, kind: RecordType) -> Message {
        let reply = respond(zone, upstream, &query(name, kind)).await.unwrap();
        Message::from_vec(&reply).unwrap()
    }

    async fn ask(zone: &Zone, name: &str, kind: RecordType) -> Message {
        ask_via(zone, &Upstream::default(), name, kind).await
    }

    /// A resolver on loopback that gives every name 192.0.2.7, over UDP
    /// and TCP; its address.
    async fn stand_in_resolver() -> SocketAddr {
        let (udp, tcp) = bind_pair("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = udp.local_addr().unwrap();
        let reply = |request: &[u8]| {
            let q = Message::from_vec(request).unwrap();
            let mut r = reply_to(&q);
            let asked = q.queries()[0].clone();
            let data = RData::A(A("192.0.2.7".parse().unwrap()));
            r.add_answer(Record::from_rdata(asked.name().clone(), TTL, data));
            r.add_query(asked);
            r.to_vec().unwrap()
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                let _ = udp.send_to(&reply(&buf[..n]), peer).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = tcp.accept().await {
                let len = conn.read_u16().await.unwrap();
                let mut msg = vec![0u8; len as usize];
                conn.read_exact(&mut msg).await.unwrap();
                let r = reply(&msg);
                let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&r);
                conn.write_all(&framed).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn other_names_go_to_the_nodes_resolvers_and_aliases_are_followed() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "mail", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "mail.example.com"}},
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.20", "ports": [{"port": 80}]}},
            {"metadata": {"name": "inside", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local"}},
        ]))
        .unwrap();
        let zone = Zone::build("cluster.local", &services, &[]);
        let upstream = Upstream::new(vec![stand_in_resolver().await]);
        let a = RData::A(A("192.0.2.7".parse().unwrap()));
        let udp = respond_udp(&zone, &upstream, &query("example.com.", RecordType::A)).await;
        let udp = Message::from_vec(&udp.unwrap()).unwrap();
        assert_eq!((udp.id(), udp.answers()[0].data()), (7, &a));
        let tcp = ask_via(&zone, &upstream, "example.com.", RecordType::A).await;
        assert_eq!(tcp.answers()[0].data(), &a);
        // An ExternalName is its alias, followed upstream or in the zone.
        let mail = ask_via(
            &zone,
            &upstream,
            "mail.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        let alias = RData::CNAME(CNAME(Name::from_ascii("mail.example.com.").unwrap()));
        assert_eq!(mail.answers().len(), 2);
        assert_eq!(
            (mail.answers()[0].data(), mail.answers()[1].data()),
            (&alias, &a)
        );
        let inside = ask_via(
            &zone,
            &upstream,
            "inside.default.svc.cluster.local.",
            RecordType::A,
        )
        .await;
        let web = RData::A(A("10.43.0.20".parse().unwrap()));
        assert_eq!(inside.answers()[1].data(), &web);
        // Without resolvers, other names are refused; with a silent one,
        // they fail.
        let refused = ask(&zone, "example.com.", RecordType::A).await;
        assert_eq!(refused.response_code(), ResponseCode::Refused);
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let nobody = Upstream::new(vec![silent.local_addr().unwrap()]);
        let udp = respond_udp(&zone, &nobody, &query("example.com.", RecordType::A)).await;
        let failed = Message::from_vec(&udp.unwrap()).unwrap();
        assert_eq!(failed.response_code(), ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn the_udp_and_tcp_sockets_share_a_port() {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (udp, tcp) = bind_pair(any).await.unwrap();
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
        // A port asked for by number is not swapped for another.
        let taken = TcpListener::bind(any).await.unwrap();
        let asked = taken.local_addr().unwrap();
        let udp_free = UdpSocket::bind(asked).await.is_ok();
        if udp_free {
            assert!(bind_pair(asked).await.is_err());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tcp_answers_framed_queries_and_lets_idle_or_slow_clients_go() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
        ]))
        .unwrap();
        let zone = Arc::new(Zone::build("cluster.local", &services, &[]));
        let mut q = Message::new();
        q.set_id(9).add_query(Query::query(
            Name::from_ascii("web.default.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let query = q.to_vec().unwrap();
        let serve = |server| {
            let z = zone.clone();
            tokio::spawn(
                async move { serve_tcp(server, move || z.clone(), &Upstream::default()).await },
            )
        };

        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = serve(server);
        for _ in 0..2 {
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&query);
            client.write_all(&framed).await.unwrap();
            let len = client.read_u16().await.unwrap();
            let mut reply = vec![0u8; len as usize];
            client.read_exact(&mut reply).await.unwrap();
            assert_eq!(Message::from_vec(&reply).unwrap().answers().len(), 1);
        }
        let quiet = tokio::time::Instant::now();
        served.await.unwrap();
        assert!(quiet.elapsed() >= TCP_IDLE, "{:?}", quiet.elapsed());

        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let served = serve(server);
        client.write_all(&[0, 100, 1, 2, 3]).await.unwrap();
        let slow = tokio::time::Instant::now();
        served.await.unwrap();
        assert!(
            slow.elapsed() >= TCP_READ && slow.elapsed() < TCP_IDLE,
            "{:?}",
            slow.elapsed()
        );
    }

    #[tokio::test]
    async fn answers_on_the_wire() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.20", "ports": [{"name": "http", "port": 80}]}},
        ]))
        .unwrap();
        let zone = Zone::build("cluster.local", &services, &[]);
        let a = ask(&zone, "web.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(a.id(), 7);
        assert_eq!(a.response_code(), ResponseCode::NoError);
        assert_eq!(a.answers().len(), 1);
        assert_eq!(
            a.answers()[0].data(),
            &RData::A(A("10.43.0.20".parse().unwrap()))
        );
        let aaaa = ask(&zone, "web.default.svc.cluster.local.", RecordType::AAAA).await;
        assert_eq!(
            (aaaa.response_code(), aaaa.answers().len()),
            (ResponseCode::NoError, 0)
        );
        let srv = ask(
            &zone,
            "_http._tcp.web.default.svc.cluster.local.",
            RecordType::SRV,
        )
        .await;
        assert_eq!(srv.answers().len(), 1);
        let missing = ask(&zone, "db.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(missing.response_code(), ResponseCode::NXDomain);
        assert!(respond(&zone, &Upstream::default(), b"junk")
            .await
            .is_none());
    }

    #[tokio::test]
    async fn large_answers_over_udp_are_truncated_unless_edns_allows_them() {
        let services: Vec<Service> = serde_json::from_value(json!([
            {"metadata": {"name": "many", "namespace": "default"},
             "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]}},
        ]))
        .unwrap();
        let endpoints: Vec<serde_json::Value> = (0..60)
            .map(|i| json!({"addresses": [format!("10.42.0.{}", i + 2)], "conditions": {"ready": true}}))
            .collect();
        let slices: Vec<EndpointSlice> = serde_json::from_value(json!([
            {"metadata": {"name": "many-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "many"}},
             "addressType": "IPv4", "endpoints": endpoints},
        ]))
        .unwrap();
        let zone = Zone::build("cluster.local", &services, &slices);
        let query = |edns: Option<u16>| {
            let mut q = Message::new();
            q.set_id(9).add_query(Query::query(
                Name::from_ascii("many.default.svc.cluster.local.").unwrap(),
                RecordType::A,
            ));
            if let Some(size) = edns {
                let mut e = hickory_proto::op::Edns::new();
                e.set_max_payload(size);
                q.set_edns(e);
            }
            q.to_vec().unwrap()
        };
        let none = Upstream::default();
        let plain = respond_udp(&zone, &none, &query(None)).await.unwrap();
        assert!(plain.len() <= 512);
        let plain = Message::from_vec(&plain).unwrap();
        assert!(plain.truncated() && plain.answers().is_empty());
        let big = respond_udp(&zone, &none, &query(Some(4096))).await;
        let big = Message::from_vec(&big.unwrap()).unwrap();
        assert!(!big.truncated());
        assert_eq!(big.answers().len(), 60);
        assert!(big.extensions().is_some(), "EDNS answered with EDNS");
        // Over TCP the whole answer always goes.
        let tcp = respond(&zone, &none, &query(None)).await;
        let tcp = Message::from_vec(&tcp.unwrap()).unwrap();
        assert_eq!(tcp.answers().len(), 60);
    }
}
