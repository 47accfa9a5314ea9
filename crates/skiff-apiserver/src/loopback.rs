//! In-process connections to the API server for the components the
//! `skiff server` process runs itself: each an in-memory pipe served as
//! HTTP/1.1 for one component's user, as its client certificate would
//! name it, without TLS or a socket. Everything else about a request
//! (authorization, admission, audit, limits) is as over HTTPS.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use skiff_core::certs::Identity;
use tokio::io::DuplexStream;

use crate::auth::ClientCertificate;
use crate::handlers::Api;

/// Bytes buffered each way in one pipe (a watch event or a small list
/// passes in one write).
const PIPE_BYTES: usize = 256 * 1024;
/// An idle pipe is let go by its client's pool first (after a minute);
/// the server closes one only if that client forgot it.
const IDLE: Duration = Duration::from_secs(600);

/// Opens in-process connections served as one user.
#[derive(Clone)]
pub struct Loopback {
    api: Arc<Api>,
    identity: ClientCertificate,
}

impl Loopback {
    pub(crate) fn new(api: Arc<Api>, user: &str) -> Self {
        let identity = Identity {
            name: user.to_owned(),
            groups: Vec::new(),
            not_before: i64::MIN,
            not_after: i64::MAX,
        };
        Self {
            api,
            identity: ClientCertificate(Some(Arc::new(identity))),
        }
    }

    /// A new connection: the client's end of a pipe whose other end the
    /// server serves until either side drops it.
    pub fn connect(&self) -> DuplexStream {
        let (client, server) = tokio::io::duplex(PIPE_BYTES);
        let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        tokio::spawn(crate::serve::connection(
            server,
            peer,
            self.identity.clone(),
            false,
            self.api.clone(),
            IDLE,
        ));
        client
    }
}

#[cfg(test)]
mod tests {
    use hyper::{Method, Request, StatusCode};
    use hyper_util::rt::TokioIo;

    use crate::{start, Component, Config};

    #[tokio::test]
    async fn a_loopback_request_is_served_as_its_component_and_authorized_as_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path());
        config.https_port = 0;
        config.compaction_interval = None;
        config.metrics_resolution = std::time::Duration::ZERO;
        let server = start(config).await.unwrap();
        let pipe = server.loopback(Component::Scheduler).connect();
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(pipe))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut ask = |method: Method, path: &str, body: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("content-type", "application/json")
                .body(body.to_owned())
                .unwrap();
            send.send_request(req)
        };
        let review = ask(
            Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#,
        )
        .await
        .unwrap();
        assert_eq!(review.status(), StatusCode::CREATED);
        let body = axum::body::Body::new(review.into_body());
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            review["status"]["userInfo"]["username"],
            "system:kube-scheduler"
        );
        // The scheduler's role lets it read pods, not delete namespaces.
        let pods = ask(Method::GET, "/api/v1/pods", "").await.unwrap();
        assert_eq!(pods.status(), StatusCode::OK);
        let delete = ask(Method::DELETE, "/api/v1/namespaces/default", "")
            .await
            .unwrap();
        assert_eq!(delete.status(), StatusCode::FORBIDDEN);
    }
}
