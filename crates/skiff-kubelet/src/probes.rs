//! Startup, liveness and readiness probes (exec, httpGet, tcpSocket) with
//! upstream's timings: initialDelaySeconds, periodSeconds, timeoutSeconds,
//! successThreshold and failureThreshold.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::runtime::ContainerRuntime;

#[derive(Default)]
struct Seen {
    successes: i32,
    failures: i32,
    last: Option<Instant>,
    /// Passing (`Some(true)`) or failed past its threshold (`Some(false)`).
    verdict: Option<bool>,
}

/// What the probes say about a running container.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub ready: bool,
    /// Set when the container must be killed: the probe that failed it
    /// (`Liveness` or `Startup`).
    pub kill: Option<&'static str>,
    /// The grace period that probe gives the container, if its own.
    pub grace: Option<i64>,
    /// What each probe that failed this time said (`Readiness probe
    /// failed: …`), for `Unhealthy` events.
    pub failures: Vec<String>,
}

/// Probe results per container id and probe kind.
#[derive(Default)]
pub struct Prober {
    seen: Mutex<HashMap<(String, &'static str), Seen>>,
}

impl Prober {
    /// Runs the container's due probes and says what follows.
    pub async fn check(
        &self,
        runtime: &dyn ContainerRuntime,
        c: &Container,
        id: &str,
        started: Instant,
        pod_ip: &str,
    ) -> Outcome {
        let mut failures = Vec::new();
        let at = (runtime, c, id, started, pod_ip);
        if let Some(p) = &c.startup_probe {
            match self.run(at, p, "Startup", &mut failures).await {
                Some(true) => {}
                Some(false) => {
                    return Outcome {
                        ready: false,
                        kill: Some("Startup"),
                        grace: p.termination_grace_period_seconds,
                        failures,
                    }
                }
                None => {
                    return Outcome {
                        failures,
                        ..Outcome::default()
                    }
                }
            }
        }
        if let Some(p) = &c.liveness_probe {
            if self.run(at, p, "Liveness", &mut failures).await == Some(false) {
                return Outcome {
                    ready: false,
                    kill: Some("Liveness"),
                    grace: p.termination_grace_period_seconds,
                    failures,
                };
            }
        }
        let ready = match &c.readiness_probe {
            Some(p) => self.run(at, p, "Readiness", &mut failures).await == Some(true),
            None => true,
        };
        Outcome {
            ready,
            failures,
            ..Outcome::default()
        }
    }

    /// Whether the container's startup probe has passed.
    pub fn started(&self, id: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(id.to_owned(), "Startup"))
            .is_some_and(|s| s.verdict == Some(true))
    }

    /// Forgets containers that are gone.
    pub fn retain(&self, live: &[String]) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(id, _), _| live.contains(id));
    }

    /// Runs one probe if it is due; returns its verdict so far, and adds
    /// what it said to `failures` if it ran and failed.
    async fn run(
        &self,
        (runtime, c, id, started, pod_ip): (&dyn ContainerRuntime, &Container, &str, Instant, &str),
        p: &Probe,
        kind: &'static str,
        failures: &mut Vec<String>,
    ) -> Option<bool> {
        let key = (id.to_owned(), kind);
        let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
        let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        {
            let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            let s = seen.get(&key);
            let due = started.elapsed() >= delay
                && s.and_then(|s| s.last).is_none_or(|l| l.elapsed() >= period);
            // A passed startup probe is not run again.
            if !due || (kind == "Startup" && s.and_then(|s| s.verdict) == Some(true)) {
                return s.and_then(|s| s.verdict);
            }
        }
        let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
        let result = probe(runtime, c, p, id, pod_ip, timeout).await;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let s = seen.entry(key).or_default();
        s.last = Some(Instant::now());
        match result {
            Ok(()) => {
                s.successes += 1;
                s.failures = 0;
                if s.successes >= p.success_threshold.unwrap_or(1).max(1) {
                    s.verdict = Some(true);
                }
            }
            Err(m) => {
                s.failures += 1;
                s.successes = 0;
                failures.push(format!("{kind} probe failed: {m}"));
                // An unproven readiness probe counts as failing from the
                // first failure.
                if s.failures >= p.failure_threshold.unwrap_or(3).max(1)
                    || (kind == "Readiness" && s.verdict.is_none())
                {
                    s.verdict = Some(false);
                }
            }
        }
        s.verdict
    }
}

fn port(c: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// Runs a lifecycle hook (`preStop`, `postStart`): exec, httpGet,
/// tcpSocket or sleep; `Ok` on success, the failure message otherwise.
pub async fn hook(
    runtime: &dyn ContainerRuntime,
    c: &Container,
    handler: &LifecycleHandler,
    id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(s) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    let as_probe = Probe {
        exec: handler.exec.clone(),
        http_get: handler.http_get.clone(),
        tcp_socket: handler.tcp_socket.clone(),
        ..Default::default()
    };
    probe(runtime, c, &as_probe, id, pod_ip, timeout).await
}

/// What the prober says it is, as upstream's `kube-probe/<minor>`.
const PROBE_AGENT: &str = "kube-probe/1.35";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// A gRPC probe: the standard health service's `Check`, passing when it
/// answers SERVING, with upstream's messages.
async fn grpc_health(
    host: &str,
    port: i32,
    service: String,
    timeout: Duration,
) -> Result<(), String> {
    let target = format!("{host}:{port}");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{target}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent(PROBE_AGENT)
        .map_err(|e| e.to_string())?;
    let channel = endpoint.connect().await.map_err(|e| {
        format!(
            "timeout: failed to connect service {target:?} within {}s: {e}",
            timeout.as_secs()
        )
    })?;
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.map_err(|e| e.to_string())?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
    let request = tonic::Request::new(HealthCheckRequest { service });
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    let answer = client.unary(request, path, codec).await.map_err(|status| {
        match status.code() {
            tonic::Code::Unimplemented => format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {}",
                status.message()
            ),
            tonic::Code::DeadlineExceeded => format!(
                "timeout: health rpc did not complete within {}s",
                timeout.as_secs()
            ),
            _ => format!("error: health rpc probe failed: {status}"),
        }
    })?;
    match answer.into_inner().status {
        1 => Ok(()),
        status => {
            let name = match status {
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            };
            Err(format!("service unhealthy (responded with {name:?})"))
        }
    }
}

/// One probe attempt: `Ok` on success, the failure message otherwise.
async fn probe(
    runtime: &dyn ContainerRuntime,
    c: &Container,
    p: &Probe,
    id: &str,
    pod_ip: &str,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(exec) = &p.exec {
        let command = exec.command.clone().unwrap_or_default();
        let r = runtime
            .exec_sync(id, &command, timeout.as_secs() as i64)
            .await
            .map_err(|e| e.message().to_owned())?;
        return if r.exit_code == 0 {
            Ok(())
        } else {
            // As upstream: what the command printed is the message.
            let mut output = r.stdout;
            output.extend_from_slice(&r.stderr);
            Err(String::from_utf8_lossy(&output).trim_end().to_owned())
        };
    }
    if let Some(http) = &p.http_get {
        let port = port(c, &http.port).ok_or("unknown named port")?;
        let host = http.host.clone().filter(|h| !h.is_empty());
        let host = host.unwrap_or_else(|| pod_ip.to_owned());
        let scheme = match http.scheme.as_deref() {
            Some("HTTPS") => "https",
            _ => "http",
        };
        let host = match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{host}]"),
            Err(_) => host,
        };
        let path = http.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let url = format!("{scheme}://{host}:{port}{path}");
        // As upstream's prober: certificates are not checked, and the
        // probe's headers (a `Host` among them) replace the defaults.
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| e.to_string())?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::USER_AGENT,
            PROBE_AGENT.parse().map_err(|_| "user agent")?,
        );
        headers.insert(
            reqwest::header::ACCEPT,
            "*/*".parse().map_err(|_| "accept")?,
        );
        for h in http.http_headers.iter().flatten() {
            let name = reqwest::header::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("invalid header name {:?}", h.name))?;
            let value = reqwest::header::HeaderValue::from_str(&h.value)
                .map_err(|_| format!("invalid value of header {:?}", h.name))?;
            headers.insert(name, value);
        }
        let r = client
            .get(&url)
            .headers(headers)
            .send()
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        let code = r.status().as_u16();
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    if let Some(grpc) = &p.grpc {
        let host = match pod_ip.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{pod_ip}]"),
            Err(_) => pod_ip.to_owned(),
        };
        let service = grpc.service.clone().unwrap_or_default();
        return grpc_health(&host, grpc.port, service, timeout).await;
    }
    if let Some(tcp) = &p.tcp_socket {
        let port = port(c, &tcp.port).ok_or("unknown named port")?;
        let host = tcp.host.clone().unwrap_or_else(|| pod_ip.to_owned());
        return match tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port as u16)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
            Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;

    /// A container probed on `port` of 127.0.0.1 by `p`.
    async fn check(p: serde_json::Value) -> Result<(), String> {
        let p: Probe = serde_json::from_value(p).unwrap();
        let c = Container::default();
        let timeout = Duration::from_secs(2);
        probe(&FakeRuntime::default(), &c, &p, "id", "127.0.0.1", timeout).await
    }

    async fn serve(app: axum::Router) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    #[tokio::test]
    async fn http_probes_send_their_headers() {
        use axum::http::{HeaderMap, StatusCode};
        let app = axum::Router::new().route(
            "/healthz",
            axum::routing::get(|headers: HeaderMap| async move {
                let got = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                };
                let ok = got("x-probe") == "yes"
                    && got("host") == "app.example"
                    && got("user-agent") == PROBE_AGENT;
                if ok {
                    StatusCode::OK
                } else {
                    StatusCode::IM_A_TEAPOT
                }
            }),
        );
        let port = serve(app).await;
        let http = |headers: serde_json::Value| serde_json::json!({"httpGet": {"path": "healthz", "port": port, "httpHeaders": headers}});
        let with = http(
            serde_json::json!([{"name": "X-Probe", "value": "yes"}, {"name": "Host", "value": "app.example"}]),
        );
        assert_eq!(check(with).await, Ok(()));
        let without = check(http(serde_json::json!([]))).await;
        assert_eq!(
            without,
            Err("HTTP probe failed with statuscode: 418".into())
        );
    }

    #[derive(Clone)]
    struct Health(i32);
    impl tonic::server::UnaryService<HealthCheckRequest> for Health {
        type Response = HealthCheckResponse;
        type Future =
            std::future::Ready<Result<tonic::Response<HealthCheckResponse>, tonic::Status>>;
        fn call(&mut self, request: tonic::Request<HealthCheckRequest>) -> Self::Future {
            let status = match request.into_inner().service.as_str() {
                "" => self.0,
                _ => 3,
            };
            std::future::ready(Ok(tonic::Response::new(HealthCheckResponse { status })))
        }
    }

    #[tokio::test]
    async fn grpc_probes_ask_the_health_service() {
        let health = |status: i32| {
            axum::Router::new().route(
                "/grpc.health.v1.Health/Check",
                axum::routing::post(move |request: axum::extract::Request| async move {
                    let codec =
                        tonic_prost::ProstCodec::<HealthCheckResponse, HealthCheckRequest>::default(
                        );
                    let mut grpc = tonic::server::Grpc::new(codec);
                    grpc.unary(Health(status), request)
                        .await
                        .map(axum::body::Body::new)
                }),
            )
        };
        let serving = serve(health(1)).await;
        let failing = serve(health(2)).await;
        let grpc = |port: u16, service: &str| serde_json::json!({"grpc": {"port": port, "service": service}});
        assert_eq!(check(grpc(serving, "")).await, Ok(()));
        let unknown = check(grpc(serving, "other")).await;
        assert_eq!(
            unknown,
            Err("service unhealthy (responded with \"SERVICE_UNKNOWN\")".into())
        );
        let not_serving = check(grpc(failing, "")).await;
        assert_eq!(
            not_serving,
            Err("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = check(grpc(port, "")).await.unwrap_err();
        assert!(
            refused.starts_with("timeout: failed to connect service"),
            "{refused}"
        );
    }
}
