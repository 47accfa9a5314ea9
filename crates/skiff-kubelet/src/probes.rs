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
            kill: None,
            failures,
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
        let host = http.host.clone().unwrap_or_else(|| pod_ip.to_owned());
        let url = format!(
            "http://{host}:{port}{}",
            http.path.as_deref().unwrap_or("/")
        );
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| e.to_string())?;
        let r = client
            .get(&url)
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
