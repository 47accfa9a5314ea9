//! A component names itself to the server in its `User-Agent`, as
//! upstream's do (`kube-scheduler/v1.35.0 …`): the server takes the field
//! manager of a write that names none from it, and the audit log shows it.

use hyper::header::{HeaderValue, USER_AGENT};

/// `client`, sending its requests as `component`'s (a request that names
/// its own agent keeps it).
pub fn named(client: kube::Client, component: &str) -> kube::Client {
    let agent = format!("{component}/v1.35.0-skiff.{}", env!("CARGO_PKG_VERSION"));
    let agent = HeaderValue::from_str(&agent).expect("component names are header-safe");
    let namespace = client.default_namespace().to_owned();
    let service = tower::service_fn(move |mut req: hyper::Request<kube::client::Body>| {
        req.headers_mut()
            .entry(USER_AGENT)
            .or_insert_with(|| agent.clone());
        let client = client.clone();
        async move { client.send(req).await }
    });
    kube::Client::new(service, namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn requests_carry_the_component_name() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let server = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
            let agent = req.headers().get(USER_AGENT).cloned();
            record.lock().unwrap().push(agent);
            async move {
                let body = kube::client::Body::from(br#"{"major":"1","minor":"35"}"#.to_vec());
                Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
            }
        });
        let client = named(kube::Client::new(server, "default"), "kube-scheduler");
        client.apiserver_version().await.unwrap();
        let agent = seen.lock().unwrap()[0].clone().unwrap();
        let agent = agent.to_str().unwrap();
        assert!(
            agent.starts_with("kube-scheduler/v1.35.0-skiff."),
            "{agent}"
        );
    }
}
