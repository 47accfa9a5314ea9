//! REST handlers: authenticate, route, decode, admit, store, reply.

mod body;
pub mod delete;
#[cfg(test)]
mod fuzz;
mod prepare;
pub mod read;
mod strategy;
mod subresource;
mod synthesized;
mod write;

pub(crate) use prepare::random_suffix;
pub use synthesized::is_synthesized;

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use hyper::{HeaderMap, Request};
use serde_json::{json, Value};
use skiff_core::ApiError;
use skiff_store::Store;

use crate::admission::{self, Operation};
use crate::audit;
use crate::auth::{self, User};
use crate::authz::{self, Attributes, Authorizer, Decision};
use crate::node_proxy::NodeDialer;
use crate::request::{self, Query, Route, Target, Verb};
use crate::response;
use crate::services::Allocator;
use crate::storage::Objects;
use crate::tokens::Issuer;
use skiff_core::cidr::Cidr;

/// The API: the store's objects and who may use them.
pub struct Api {
    pub objects: Objects,
    auth: auth::Chain,
    ca_pem: String,
    nodes: NodeDialer,
    pub services: Allocator,
    issuer: Arc<Issuer>,
    authorizer: Arc<dyn Authorizer>,
    admission: admission::Chain,
    /// The audit policy and log, with `--audit-log-path`.
    audit: Option<(audit::Policy, audit::Log)>,
    /// The caps on requests in flight.
    limits: crate::inflight::Limits,
    /// The CustomResourceDefinitions' follower, told of each write to one.
    definitions: Option<Arc<crate::crds::Definitions>>,
    /// The agents' last scraped usage, served as `metrics.k8s.io`.
    pub resource_metrics: Arc<crate::resource_metrics::ResourceMetrics>,
    /// The process's Prometheus metrics, served at `/metrics`.
    registry: skiff_core::metrics::Registry,
    metrics: crate::metrics::ApiMetrics,
    /// When this server started: the local APIServices' creation.
    started: String,
}

/// Everything a resource handler needs to know about its request.
pub struct Call<'a> {
    pub target: &'a Target,
    pub query: &'a Query,
    pub headers: &'a HeaderMap,
    pub user: &'a User,
}

impl Call<'_> {
    pub fn accept(&self) -> &str {
        self.headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The field manager: the `fieldManager` parameter, else the client's
    /// user agent up to its first `/`, as upstream does.
    pub fn manager(&self) -> String {
        if let Some(m) = &self.query.field_manager {
            return m.clone();
        }
        let agent = self
            .headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        agent.split('/').next().unwrap_or(agent).to_owned()
    }

    /// What admission knows of this request's write to `r`.
    pub fn attributes<'a>(
        &'a self,
        operation: Operation,
        r: &'a skiff_core::registry::ResourceType,
        old: Option<&'a Value>,
    ) -> admission::Attributes<'a> {
        admission::Attributes {
            operation,
            resource: r,
            subresource: self.target.subresource.as_deref(),
            namespace: self.target.namespace.as_deref(),
            user: self.user,
            old,
            dry_run: self.query.dry_run,
        }
    }
}

impl Api {
    pub fn new(
        store: Arc<dyn Store>,
        auth: auth::Chain,
        ca_pem: String,
        nodes: NodeDialer,
        service_range: Cidr,
        issuer: Arc<Issuer>,
        authorizer: Arc<dyn Authorizer>,
    ) -> Self {
        let registry = skiff_core::metrics::Registry::default();
        let objects = Objects { store };
        Self {
            issuer,
            admission: admission::Chain::standard(objects.clone(), authorizer.clone()),
            authorizer,
            services: Allocator::new(service_range, objects.store.clone()),
            objects,
            auth,
            ca_pem,
            nodes,
            audit: None,
            limits: crate::inflight::Limits::new(0, 0),
            definitions: None,
            resource_metrics: Arc::default(),
            metrics: crate::metrics::ApiMetrics::new(&registry),
            registry,
            started: skiff_core::meta::now(),
        }
    }

    /// Serves custom resources as these definitions say.
    pub fn with_definitions(mut self, definitions: Arc<crate::crds::Definitions>) -> Self {
        self.definitions = Some(definitions);
        self
    }

    /// Adds the API server's metrics to `registry` and serves it.
    pub fn with_metrics(mut self, registry: skiff_core::metrics::Registry) -> Self {
        self.metrics = crate::metrics::ApiMetrics::new(&registry);
        self.registry = registry;
        self
    }

    /// Audits requests with this policy into this log.
    pub fn with_audit(mut self, policy: audit::Policy, log: audit::Log) -> Self {
        self.audit = Some((policy, log));
        self
    }

    /// Caps the requests in flight.
    pub fn with_limits(mut self, limits: crate::inflight::Limits) -> Self {
        self.limits = limits;
        self
    }

    pub async fn handle(&self, req: Request<Body>) -> Response {
        // Nothing is gathered for the log when there is none.
        let mut trail = match self.audit {
            Some(_) => audit::Trail::begin(&req),
            None => audit::Trail::default(),
        };
        let started = std::time::Instant::now();
        let mutating = !matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS");
        let in_flight = self.metrics.in_flight(mutating);
        let mut labels = crate::metrics::Request::of_method(req.method());
        let reply = match self.dispatch(req, &mut trail, &mut labels).await {
            Ok(r) => r,
            Err(e) => response::error(&e),
        };
        drop(in_flight);
        self.metrics
            .observe(labels, reply.status().as_u16(), started.elapsed());
        let Some((_, log)) = &self.audit else {
            return reply;
        };
        let (Some(user), Some(target)) = (&trail.user, &trail.target) else {
            return reply;
        };
        if trail.level == audit::Level::None {
            return reply;
        }
        // The reply's body, when the level keeps it and it is one object
        // (logged as JSON whatever its encoding).
        let content_type = reply
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .map(|v| v.as_bytes());
        let json = content_type.is_some_and(|v| v.starts_with(b"application/json"));
        let protobuf = content_type == Some(skiff_core::protobuf::CONTENT_TYPE.as_bytes());
        let (reply, response) = if trail.level == audit::Level::RequestResponse
            && (json || protobuf)
            && trail.verb != "watch"
        {
            let (head, body) = reply.into_parts();
            match axum::body::to_bytes(body, usize::MAX).await {
                Ok(bytes) => {
                    let object = if protobuf {
                        skiff_core::protobuf::decode(&bytes).ok()
                    } else {
                        serde_json::from_slice(&bytes).ok()
                    };
                    (Response::from_parts(head, Body::from(bytes)), object)
                }
                Err(_) => (Response::from_parts(head, Body::empty()), None),
            }
        } else {
            (reply, None)
        };
        let id = uuid::Uuid::new_v4().to_string();
        log.write(&audit::event(&audit::Record {
            level: trail.level,
            id: &id,
            uri: &trail.uri,
            verb: &trail.verb,
            user,
            impersonated: trail.acted.as_ref(),
            source: &trail.source,
            user_agent: &trail.user_agent,
            target,
            code: reply.status().as_u16(),
            received: &trail.received,
            request: trail.request.as_ref(),
            response: response.as_ref(),
            omit_managed_fields: trail.omit_managed_fields,
            annotations: reply.extensions().get::<audit::Annotations>(),
            created: trail.created.as_deref(),
        }));
        reply
    }

    /// Which level the policy gives this request; reads its body for the
    /// log when the level keeps it.
    async fn audit_level(
        &self,
        trail: &mut audit::Trail,
        verb: &str,
        target: &authz::Target,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<Body, ApiError> {
        let (Some((policy, _)), Some(user)) = (&self.audit, &trail.user) else {
            return Ok(body);
        };
        trail.verb = verb.to_owned();
        trail.target = Some(target.clone());
        (trail.level, trail.omit_managed_fields) = policy.decide(user, verb, target);
        let kept =
            trail.level >= audit::Level::Request && matches!(verb, "create" | "update" | "patch");
        // A creation names its object in its body, which is read for the
        // name at any level, as upstream's.
        let unnamed = trail.level >= audit::Level::Metadata
            && verb == "create"
            && matches!(target, authz::Target::Resource { name: None, .. });
        if !kept && !unnamed {
            return Ok(body);
        }
        let bytes = axum::body::to_bytes(body, body::MAX_BODY)
            .await
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        // JSON, YAML or protobuf, logged as JSON.
        let request = body::parse(&bytes, &body::content_type(headers)).ok();
        if unnamed {
            let name = request
                .as_ref()
                .and_then(|o| o["metadata"]["name"].as_str());
            trail.created = name.filter(|n| !n.is_empty()).map(str::to_owned);
        }
        if kept {
            trail.request = request;
        }
        Ok(Body::from(bytes))
    }

    async fn dispatch(
        &self,
        req: Request<Body>,
        trail: &mut audit::Trail,
        labels: &mut crate::metrics::Request,
    ) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let route = request::route(&path);
        let Ok(_slot) = self
            .limits
            .admit(&parts.method, route.as_ref().ok(), parts.uri.query())
        else {
            return Ok(response::too_many_requests());
        };
        let text = |body: Vec<u8>| response::bytes(200, "text/plain; charset=utf-8", body);
        match route {
            Ok(Route::Health) => return Ok(text(b"ok".to_vec())),
            Ok(Route::CaCerts) => return Ok(text(self.ca_pem.clone().into_bytes())),
            _ => {}
        }
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let certificate = parts
            .extensions
            .get::<auth::ClientCertificate>()
            .and_then(|c| c.0.as_deref());
        let user = self.auth.user(certificate, header).await?;
        let authenticated = trail.on.then(|| user.clone());
        let user = self.impersonate(user, &parts.headers)?;
        if authenticated.as_ref().is_some_and(|a| *a != user) {
            trail.acted = Some(user.clone());
        }
        trail.user = authenticated;
        tracing::debug!(user = %user.name, groups = ?user.groups, method = %parts.method, %path, "request");
        let accept = parts
            .headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        if let Some(review) = authz::reviews::Review::of(&path) {
            let body = self
                .audit_level(trail, "create", &review.target(), &parts.headers, body)
                .await?;
            return self.review(review, user, &parts, body).await;
        }
        let route = route?;
        let query = match &route {
            Route::Resource(_) => Some(Query::parse(parts.uri.query())?),
            _ => None,
        };
        let target = match (&route, &query) {
            (Route::Resource(target), Some(query)) => {
                let verb = if is_node_stream(target) {
                    // Streams into a pod need `create` (upstream asks it of
                    // WebSocket upgrades too); logs need `get`.
                    if target.subresource.as_deref() == Some("log") {
                        "get"
                    } else {
                        "create"
                    }
                } else {
                    request::verb(&parts.method, target, query)?.name()
                };
                (
                    verb,
                    authz::Target::Resource {
                        group: target.resource.group.to_owned(),
                        resource: target.resource.plural.to_owned(),
                        subresource: target.subresource.clone(),
                        namespace: target.namespace.clone(),
                        name: target.name.clone(),
                    },
                )
            }
            (Route::NodeProxy { node, .. }, _) => (
                skiff_core::verb::of_method(parts.method.as_str()),
                authz::Target::Resource {
                    group: String::new(),
                    resource: "nodes".into(),
                    subresource: Some("proxy".into()),
                    namespace: None,
                    name: Some(node.clone()),
                },
            ),
            _ => ("get", authz::Target::Path(path.clone())),
        };
        if let (Route::Resource(t), authz::Target::Resource { .. }) = (&route, &target.1) {
            let apply = parts
                .headers
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/apply-patch"));
            let verb = match &query {
                Some(q) if !is_node_stream(t) => request::verb(&parts.method, t, q)?.name(),
                _ => target.0,
            };
            labels.verb = crate::metrics::verb(verb, is_node_stream(t), apply);
            labels.group = t.resource.group;
            labels.version = t.resource.version;
            labels.resource = t.resource.plural;
            labels.subresource = t
                .resource
                .subresources
                .iter()
                .find(|s| Some(**s) == t.subresource.as_deref())
                .copied()
                .unwrap_or("");
            labels.scope = match (&t.name, &t.namespace) {
                (Some(_), _) => "resource",
                (None, Some(_)) => "namespace",
                (None, None) => "cluster",
            };
        }
        let body = self
            .audit_level(trail, target.0, &target.1, &parts.headers, body)
            .await?;
        let attributes = Attributes {
            user,
            verb: target.0.to_owned(),
            target: target.1,
        };
        if self.authorizer.authorize(&attributes) != Decision::Allow {
            let message = authz::refusal(self.authorizer.as_ref(), &attributes);
            tracing::info!(%message, "request refused");
            return Err(ApiError::forbidden(message));
        }
        match route {
            Route::Health | Route::CaCerts => unreachable!("answered before authentication"),
            Route::Version => Ok(response::json(200, &version())),
            Route::Metrics => Ok(response::bytes(
                200,
                skiff_core::metrics::CONTENT_TYPE,
                skiff_core::metrics::encode(&self.registry).into_bytes(),
            )),
            Route::RootDiscovery { legacy } => Ok(crate::discovery::root(legacy, &accept)),
            Route::GroupDiscovery { group } => crate::discovery::group(&group),
            Route::ResourceList { group, version } => crate::discovery::resources(&group, &version),
            Route::OpenApiIndex => Ok(crate::openapi::index()),
            Route::OpenApiDocument { group, version } => crate::openapi::document(&group, &version),
            Route::NodeProxy { node, path } => {
                let query = parts
                    .uri
                    .query()
                    .map(|q| format!("?{q}"))
                    .unwrap_or_default();
                let to = format!("{path}{query}");
                self.nodes.proxy(&self.objects, &node, &to, parts).await
            }
            Route::Resource(target) if is_node_stream(&target) => {
                let ns = target.namespace.as_deref();
                let name = target.name.as_deref().unwrap_or_default();
                let pod = self.objects.get(target.resource, ns, name).await?;
                if let Some(options) = crate::connect::options(&target, parts.uri.query()) {
                    self.admit_connect(&target, &attributes.user, &options, &pod)
                        .await?;
                }
                self.nodes
                    .forward(&self.objects, &target, &pod, parts)
                    .await
            }
            Route::Resource(target) => {
                let query = query.expect("parsed for every resource route");
                let verb = request::verb(&parts.method, &target, &query)?;
                let call = Call {
                    target: &target,
                    query: &query,
                    headers: &parts.headers,
                    user: &attributes.user,
                };
                let reads = matches!(verb, Verb::Get | Verb::List | Verb::Watch);
                let local = synthesized::has_local(target.resource)
                    && matches!(verb, Verb::Get | Verb::List);
                if synthesized::is_synthesized(target.resource) || local {
                    return self.read_synthesized(&call, verb).await;
                }
                let body = if reads {
                    bytes::Bytes::new()
                } else {
                    body::read(body, &parts.headers).await?
                };
                let mut reply = match verb {
                    Verb::Get => self.get(&call).await,
                    Verb::List => self.list(&call).await,
                    Verb::Watch => self.watch(&call).await,
                    Verb::Create => self.create(&call, body).await,
                    Verb::Update => self.update(&call, body).await,
                    Verb::Patch => self.patch(&call, body).await,
                    Verb::Delete => self.delete(&call, body).await,
                    Verb::DeleteCollection => self.delete_collection(&call, body).await,
                }?;
                if verb != Verb::Watch && response::wants_protobuf(call.accept()) {
                    reply = response::to_protobuf(reply).await;
                }
                // A written definition is served (or not) when the reply
                // comes, not a moment later.
                if let Some(definitions) = &self.definitions {
                    if !reads && target.resource.group == "apiextensions.k8s.io" {
                        if let Err(e) = definitions.reload().await {
                            tracing::warn!(error = %e, "reading CustomResourceDefinitions");
                        }
                    }
                }
                reply.headers_mut().insert(
                    "Audit-Id",
                    HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                        .unwrap_or(HeaderValue::from_static("-")),
                );
                Ok(reply)
            }
        }
    }
}

impl Api {
    /// A review the user asks about itself (`kubectl auth can-i`, `whoami`).
    async fn review(
        &self,
        review: authz::reviews::Review,
        user: User,
        parts: &hyper::http::request::Parts,
        body: Body,
    ) -> Result<Response, ApiError> {
        if parts.method != hyper::Method::POST {
            return Err(ApiError::method_not_allowed(
                parts.method.as_str(),
                parts.uri.path(),
            ));
        }
        let attributes = Attributes {
            user,
            verb: "create".into(),
            target: review.target(),
        };
        if self.authorizer.authorize(&attributes) != Decision::Allow {
            return Err(ApiError::forbidden(authz::forbidden_message(&attributes)));
        }
        let raw = body::read(body, &parts.headers).await?;
        let mut request = body::parse(&raw, &body::content_type(&parts.headers))?;
        review.check(&mut request).map_err(ApiError::bad_request)?;
        let answer = match review {
            authz::reviews::Review::Token => self.token_review(&request).await,
            _ => review.answer(&attributes.user, self.authorizer.as_ref(), &request),
        };
        Ok(response::json(201, &answer))
    }

    /// TokenReview: whose is this token, if it is valid now.
    async fn token_review(&self, request: &Value) -> Value {
        let token = request["spec"]["token"].as_str().unwrap_or_default();
        let asked = crate::tokens::audiences(&request["spec"]);
        let status = match self.auth.review(token, &asked).await {
            Some((user, meant)) => json!({"authenticated": true,
                "user": {"username": user.name, "groups": user.groups}, "audiences": meant}),
            None => json!({"authenticated": false, "error": "invalid bearer token"}),
        };
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {"creationTimestamp": null}, "spec": request["spec"], "status": status})
    }
}

/// Impersonation, between authentication and authorization.
impl Api {
    /// The user a request acts as: `user`, or whom it impersonates if
    /// `user` may impersonate each part of them.
    fn impersonate(&self, user: User, headers: &hyper::HeaderMap) -> Result<User, ApiError> {
        let Some(wanted) = crate::impersonation::requested(headers)? else {
            return Ok(user);
        };
        for target in crate::impersonation::targets(&wanted) {
            let attributes = Attributes {
                user: user.clone(),
                verb: "impersonate".into(),
                target,
            };
            if self.authorizer.authorize(&attributes) != Decision::Allow {
                return Err(ApiError::forbidden(authz::forbidden_message(&attributes)));
            }
        }
        Ok(crate::impersonation::user(&wanted))
    }
}

impl Api {
    /// Admission of a pod's exec, attach or port forwarding: a `CONNECT`
    /// of its options, which validating webhooks may refuse.
    async fn admit_connect(
        &self,
        target: &crate::request::Target,
        user: &crate::auth::User,
        options: &serde_json::Value,
        pod: &serde_json::Value,
    ) -> Result<(), ApiError> {
        let a = admission::Attributes {
            operation: admission::Operation::Connect,
            resource: target.resource,
            subresource: target.subresource.as_deref(),
            namespace: target.namespace.as_deref(),
            user,
            old: Some(pod),
            dry_run: false,
        };
        self.admission
            .validate(&a, options, Default::default())
            .await
            .map(drop)
    }
}

/// Pod subresources the node agent serves.
fn is_node_stream(target: &crate::request::Target) -> bool {
    target.resource.plural == "pods"
        && matches!(
            target.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward")
        )
}

/// Adds `Warning` headers (RFC 7234 form, as upstream) to a reply.
pub fn with_warnings(mut reply: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {:?}", w);
        if let Ok(v) = HeaderValue::from_str(&text) {
            reply.headers_mut().append("Warning", v);
        }
    }
    reply
}

fn version() -> serde_json::Value {
    json!({
        "major": "1",
        "minor": "35",
        "emulationMajor": "1",
        "emulationMinor": "35",
        "gitVersion": concat!("v1.35.0-skiff.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a }),
    })
}
