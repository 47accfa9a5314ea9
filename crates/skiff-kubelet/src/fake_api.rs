//! A fake API server for unit tests: it records every request, answers
//! writes with a minimal object, lists with nothing and reads with
//! NotFound.

use std::sync::{Arc, Mutex};

use hyper::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// What the workers sent to the API: method, path and body.
pub type Requests = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A client whose API server records every request and answers writes
/// with a minimal object, lists with nothing and reads with NotFound.
pub fn fake_api() -> (Client, Requests) {
    let requests: Requests = Arc::default();
    let log = requests.clone();
    let service = tower::service_fn(move |r: Request<Body>| {
        let log = log.clone();
        async move {
            let (parts, body) = r.into_parts();
            let bytes = body.collect_bytes().await.unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let method = parts.method.to_string();
            log.lock()
                .unwrap()
                .push((method.clone(), parts.uri.path().to_owned(), body.clone()));
            let (code, answer) = match method.as_str() {
                "POST" => (201, body),
                // A collection (`/api/v1/namespaces/{ns}/{plural}`) is empty.
                "GET" if parts.uri.path().split('/').count() % 2 == 0 => (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
                ),
                "GET" => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                ),
                _ => (
                    200,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}),
                ),
            };
            let response = Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    (Client::new(service, "default"), requests)
}
