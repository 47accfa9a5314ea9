//! Sending a review to a webhook over HTTPS and reading its answer. A
//! webhook behind a Service is reached at one of the Service's ready
//! endpoints (as upstream with `--enable-aggregator-routing`), its
//! certificate checked for `<service>.<namespace>.svc`. The server trusts
//! the configuration's `caBundle`, or without one the machine's roots.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use skiff_core::endpoint_slices::SERVICE_NAME;
use skiff_core::meta;
use skiff_core::registry;

use crate::storage::Objects;

/// The largest answer read from a webhook (a patch may rewrite an
/// object of the store's largest size).
const MAX_ANSWER: usize = 10 << 20;

/// Where a webhook is: the URL to post to, and the address its host
/// stands for when it is a Service's.
struct Target {
    url: String,
    pinned: Option<(String, SocketAddr)>,
}

/// A Service's ready endpoint for its port `port`: the address and the
/// port its pods listen on.
async fn endpoint(
    objects: &Objects,
    ns: &str,
    name: &str,
    port: i64,
) -> Result<SocketAddr, String> {
    let services = registry::preferred("", "services").expect("services are served");
    let svc = objects
        .recent(services, Some(ns), name)
        .await
        .map_err(|e| e.message)?
        .ok_or_else(|| format!("service \"{ns}/{name}\" not found"))?;
    let ports = svc["spec"]["ports"].as_array().into_iter().flatten();
    let port_name = ports
        .into_iter()
        .find(|p| p["port"].as_i64() == Some(port))
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .ok_or_else(|| format!("service \"{ns}/{name}\" has no port {port}"))?;
    let slices = registry::preferred("discovery.k8s.io", "endpointslices").expect("served");
    // Only slices that mention the Service are decoded.
    let theirs = |stored: &[u8]| crate::storage::mentions(stored, name.as_bytes());
    for slice in objects
        .recent_list_where(slices, Some(ns), theirs)
        .await
        .map_err(|e| e.message)?
    {
        if meta::get(&slice, "labels").and_then(|l| l[SERVICE_NAME].as_str()) != Some(name) {
            continue;
        }
        let ports = slice["ports"].as_array().into_iter().flatten();
        let target = ports
            .into_iter()
            .find(|p| p["name"].as_str().unwrap_or_default() == port_name)
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok());
        let Some(target) = target else { continue };
        let ready = slice["endpoints"].as_array().into_iter().flatten();
        let ready = ready
            .into_iter()
            .filter(|e| e["conditions"]["ready"] != false)
            .filter_map(|e| e["addresses"][0].as_str()?.parse::<IpAddr>().ok());
        if let Some(ip) = ready.into_iter().next() {
            return Ok(SocketAddr::new(ip, target));
        }
    }
    Err(format!(
        "service \"{ns}/{name}\" has no ready endpoint for port {port}"
    ))
}

async fn target(objects: &Objects, config: &Value) -> Result<Target, String> {
    if let Some(url) = config["url"].as_str() {
        return Ok(Target {
            url: url.to_owned(),
            pinned: None,
        });
    }
    let svc = &config["service"];
    let (ns, name) = (
        svc["namespace"].as_str().unwrap_or_default(),
        svc["name"].as_str().unwrap_or_default(),
    );
    let port = svc["port"].as_i64().unwrap_or(443);
    let addr = endpoint(objects, ns, name, port).await?;
    let host = format!("{name}.{ns}.svc");
    let path = svc["path"].as_str().unwrap_or_default();
    Ok(Target {
        url: format!("https://{host}:{}{path}", addr.port()),
        pinned: Some((host, addr)),
    })
}

/// The roots this machine trusts (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the
/// system's store), read once.
fn system_roots() -> &'static [reqwest::Certificate] {
    static ROOTS: std::sync::OnceLock<Vec<reqwest::Certificate>> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "reading the system's trusted roots");
        }
        found
            .certs
            .iter()
            .filter_map(|der| reqwest::Certificate::from_der(der).ok())
            .collect()
    })
}

/// What a client is built from: the trust it is given, its timeout, and
/// the address a Service's name stands for.
type ClientKey = (String, Duration, Option<(String, SocketAddr)>);

/// The clients made so far: each keeps its connections, so a webhook is
/// not dialled and a TLS configuration not built again for every write.
static CLIENTS: LazyLock<Mutex<HashMap<ClientKey, reqwest::Client>>> =
    LazyLock::new(Default::default);

/// The most clients kept; beyond, the cache starts over.
const MAX_CLIENTS: usize = 64;

/// A client for a webhook with `config`, made once.
fn client(
    config: &Value,
    timeout: Duration,
    pinned: Option<&(String, SocketAddr)>,
) -> Result<reqwest::Client, String> {
    let bundle = config["caBundle"].as_str().unwrap_or_default();
    let key = (bundle.to_owned(), timeout, pinned.cloned());
    let clients = || CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(made) = clients().get(&key) {
        return Ok(made.clone());
    }
    let made = new_client(bundle, timeout, pinned)?;
    let mut all = clients();
    if all.len() >= MAX_CLIENTS {
        all.clear();
    }
    all.insert(key, made.clone());
    Ok(made)
}

fn new_client(
    bundle: &str,
    timeout: Duration,
    pinned: Option<&(String, SocketAddr)>,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    let roots = match Some(bundle).filter(|b| !b.is_empty()) {
        Some(bundle) => {
            let pem = base64::engine::general_purpose::STANDARD
                .decode(bundle)
                .map_err(|e| format!("caBundle is not base64: {e}"))?;
            reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("caBundle holds no certificate: {e}"))?
        }
        // Without a bundle, the roots this machine trusts, as upstream.
        None => system_roots().to_vec(),
    };
    for cert in roots {
        builder = builder.add_root_certificate(cert);
    }
    if let Some((host, addr)) = pinned {
        builder = builder.resolve(host, *addr);
    }
    builder.build().map_err(|e| e.to_string())
}

/// Posts `review` to the webhook `hook`; its `response`, checked to
/// answer request `uid`.
pub async fn post(
    objects: &Objects,
    hook: &Value,
    review: &Value,
    uid: &str,
) -> Result<Value, String> {
    let config = &hook["clientConfig"];
    let timeout = Duration::from_secs(hook["timeoutSeconds"].as_u64().unwrap_or(10));
    let target = target(objects, config)
        .await
        .map_err(|e| format!("failed to call webhook: {e}"))?;
    let client = client(config, timeout, target.pinned.as_ref())?;
    let failed =
        |e: &dyn std::fmt::Display| format!("failed to call webhook: Post {:?}: {e}", target.url);
    let mut reply = client
        .post(&target.url)
        .json(review)
        .send()
        .await
        .map_err(|e| failed(&error_chain(&e)))?;
    let status = reply.status();
    let mut body = Vec::new();
    while let Some(chunk) = reply.chunk().await.map_err(|e| failed(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(failed(&"the answer is larger than 10 MiB"));
        }
        body.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        return Err(failed(&format!("the server answered {status}")));
    }
    let mut answer: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("received invalid webhook response: {e}"))?;
    let response = answer["response"].take();
    if !response.is_object() {
        return Err("received invalid webhook response: no response".into());
    }
    if response["uid"] != uid {
        return Err(format!(
            "expected response.uid={uid:?}, got {:?}",
            response["uid"].as_str().unwrap_or_default()
        ));
    }
    Ok(response)
}

/// An error with its causes, as Go prints wrapped errors.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::Fixture;
    use serde_json::json;

    #[tokio::test]
    async fn a_service_webhook_is_reached_at_a_ready_endpoint_on_its_target_port() {
        let f = Fixture::new();
        f.put(
            "",
            "services",
            json!({"metadata": {"name": "hook", "namespace": "d"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}}),
        )
        .await;
        f.put("discovery.k8s.io", "endpointslices", json!({
            "metadata": {"name": "hook-a", "namespace": "d", "labels": {"kubernetes.io/service-name": "hook"}},
            "addressType": "IPv4", "ports": [{"name": "https", "port": 8443}],
            "endpoints": [{"addresses": ["10.42.0.8"], "conditions": {"ready": false}},
                          {"addresses": ["10.42.0.9"], "conditions": {"ready": true}}]}))
            .await;
        let found = endpoint(&f.objects, "d", "hook", 443).await;
        assert_eq!(found, Ok("10.42.0.9:8443".parse().unwrap()));
        let config =
            json!({"service": {"namespace": "d", "name": "hook", "port": 443, "path": "/v"}});
        let t = target(&f.objects, &config).await.unwrap();
        assert_eq!(t.url, "https://hook.d.svc:8443/v");
        let missing = endpoint(&f.objects, "d", "hook", 80).await;
        assert_eq!(missing, Err("service \"d/hook\" has no port 80".into()));
    }
}
