//! Who may use the agent's endpoint, as upstream's kubelet decides: the
//! user of a client certificate from the cluster CA (Common Name and
//! Organizations), or of a bearer token the API server vouches for
//! (TokenReview), when it may do the request's verb on this node's
//! `nodes/proxy`, `nodes/log`, `nodes/stats` or `nodes/metrics`
//! (SubjectAccessReview). Nodes' own certificates come from the same CA,
//! and the `system:node` rules grant none of those.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use hyper::StatusCode;
use serde_json::{json, Value};

use crate::server::{failure, Streams};

/// The identity in the client certificate the connection presented (the
/// TLS layer verified it against the cluster CA), if any.
#[derive(Clone, Default)]
pub struct Certified(pub Option<Arc<skiff_core::certs::Identity>>);

/// The node subresource a path falls under, as upstream maps them.
pub fn subresource(path: &str) -> &'static str {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    match first {
        "stats" => "stats",
        "metrics" => "metrics",
        "logs" | "containerLogs" => "log",
        _ => "proxy",
    }
}

/// POSTs a review to the API server and returns its status.
async fn review(client: &kube::Client, path: &str, body: Value) -> Result<Value, String> {
    let request = hyper::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&body).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let reply: Value = client.request(request).await.map_err(|e| e.to_string())?;
    Ok(reply["status"].clone())
}

/// The middleware: lets the request through, or answers 401 or 403.
pub async fn authorize(State(streams): State<Arc<Streams>>, req: Request, next: Next) -> Response {
    if req.uri().path() == "/healthz" {
        return next.run(req).await;
    }
    let client = &streams.client;
    let certified = req
        .extensions()
        .get::<Certified>()
        .cloned()
        .unwrap_or_default();
    let user = match certified.0 {
        Some(id) if id.valid_at(chrono::Utc::now().timestamp()) => {
            let mut groups = id.groups.clone();
            groups.push("system:authenticated".into());
            json!({"username": id.name, "groups": groups})
        }
        Some(_) => return failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized"),
        None => match token_user(client, bearer(&req)).await {
            Ok(user) => user,
            Err(reply) => return reply,
        },
    };
    let verb = skiff_core::verb::of_method(req.method().as_str());
    let sub = subresource(req.uri().path());
    let node = &streams.node_name;
    let access = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    let asked = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": user["username"], "groups": user["groups"], "uid": user["uid"],
            "resourceAttributes": {"verb": verb, "resource": "nodes", "subresource": sub, "name": node}}});
    match review(client, access, asked).await {
        Ok(s) if s["allowed"] == true => next.run(req).await,
        Ok(_) => {
            let name = user["username"].as_str().unwrap_or_default();
            let message = format!(
                "Forbidden (user={name}, verb={verb}, resource=nodes, subresource(s)=[{sub}])"
            );
            failure(StatusCode::FORBIDDEN, "Forbidden", message)
        }
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e),
    }
}

fn bearer(req: &Request) -> Option<String> {
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
}

/// The user of the request's bearer token, as the API server's
/// TokenReview tells; or the reply refusing the request.
async fn token_user(client: &kube::Client, token: Option<String>) -> Result<Value, Response> {
    let Some(token) = token else {
        return Err(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        ));
    };
    let tokens = "/apis/authentication.k8s.io/v1/tokenreviews";
    let asked = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}});
    match review(client, tokens, asked).await {
        Ok(s) if s["authenticated"] == true => Ok(s["user"].clone()),
        Ok(_) => Err(failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
        )),
        Err(e) => Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            e,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_as_upstream() {
        assert_eq!(subresource("/stats/summary"), "stats");
        assert_eq!(subresource("/metrics/cadvisor"), "metrics");
        assert_eq!(subresource("/containerLogs/ns/pod/c"), "log");
        assert_eq!(subresource("/exec/ns/pod/c"), "proxy");
        assert_eq!(subresource("/portForward/ns/pod"), "proxy");
    }
}
