//! What a request asks for: the resource path, the verb, and the query.

use hyper::Method;
use skiff_core::registry::{self, ResourceType};
use skiff_core::ApiError;

/// A request for a resource, parsed from its path.
#[derive(Debug)]
pub struct Target {
    pub resource: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The legacy `/watch/` path prefix was used.
    pub watch_path: bool,
}

/// A parsed request path.
#[derive(Debug)]
pub enum Route {
    Health,
    /// `/metrics`: the process's Prometheus metrics.
    Metrics,
    /// `/cacerts`: the cluster CA, for joining nodes to check against the
    /// hash in their token.
    CaCerts,
    Version,
    /// `/api` or `/apis`.
    RootDiscovery {
        legacy: bool,
    },
    /// `/apis/{group}`.
    GroupDiscovery {
        group: String,
    },
    /// `/api/v1`, `/apis/{group}/{version}`.
    ResourceList {
        group: String,
        version: String,
    },
    OpenApiIndex,
    OpenApiDocument {
        group: String,
        version: String,
    },
    Resource(Target),
    /// `/api/v1/nodes/{node}/proxy/{path}`: a request for the node
    /// agent's own endpoint (`/stats/summary`, `/healthz`).
    NodeProxy {
        node: String,
        path: String,
    },
}

/// Parses a path into a route; unknown paths and resources are 404.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let (group, version, rest) = match parts.as_slice() {
        ["healthz" | "livez" | "readyz", ..] => return Ok(Route::Health),
        ["version"] => return Ok(Route::Version),
        ["metrics"] => return Ok(Route::Metrics),
        ["cacerts"] => return Ok(Route::CaCerts),
        ["api"] => return Ok(Route::RootDiscovery { legacy: true }),
        ["apis"] => return Ok(Route::RootDiscovery { legacy: false }),
        ["openapi", "v3"] => return Ok(Route::OpenApiIndex),
        ["openapi", "v3", "api", v] => {
            return Ok(Route::OpenApiDocument {
                group: String::new(),
                version: v.to_string(),
            })
        }
        ["openapi", "v3", "apis", g, v] => {
            return Ok(Route::OpenApiDocument {
                group: g.to_string(),
                version: v.to_string(),
            })
        }
        ["apis", g] => {
            return Ok(Route::GroupDiscovery {
                group: g.to_string(),
            })
        }
        ["api", v] => {
            return Ok(Route::ResourceList {
                group: String::new(),
                version: v.to_string(),
            })
        }
        ["apis", g, v] => {
            return Ok(Route::ResourceList {
                group: g.to_string(),
                version: v.to_string(),
            })
        }
        ["api", "v1", "nodes", node, "proxy", tail @ ..] => {
            return Ok(Route::NodeProxy {
                node: node.to_string(),
                path: format!("/{}", tail.join("/")),
            })
        }
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::no_route(path)),
    };
    let (watch_path, mut rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let mut namespace = None;
    if let ["namespaces", ns, tail @ ..] = rest {
        namespace = Some(ns.to_string());
        if !tail.is_empty() && !matches!(tail[0], "status" | "finalize") {
            rest = tail;
        }
    }
    let (plural, name, subresource) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(ApiError::no_route(path)),
    };
    let resource =
        registry::lookup(group, version, plural).ok_or_else(|| ApiError::no_route(path))?;
    if plural == "namespaces" {
        // `/api/v1/namespaces/{name}` names the namespace itself.
        let name = name.or(namespace.take());
        return Ok(Route::Resource(Target {
            resource,
            namespace: None,
            name,
            subresource,
            watch_path,
        }));
    }
    if let Some(sub) = &subresource {
        if !resource.has_subresource(sub) {
            return Err(ApiError::no_route(path));
        }
    }
    if !resource.namespaced {
        namespace = None;
    }
    Ok(Route::Resource(Target {
        resource,
        namespace,
        name,
        subresource,
        watch_path,
    }))
}

/// The verb of a resource request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    /// The verb as authorization rules name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::List => "list",
            Self::Watch => "watch",
            Self::Create => "create",
            Self::Update => "update",
            Self::Patch => "patch",
            Self::Delete => "delete",
            Self::DeleteCollection => "deletecollection",
        }
    }
}

pub fn verb(method: &Method, target: &Target, query: &Query) -> Result<Verb, ApiError> {
    let named = target.name.is_some();
    Ok(match *method {
        Method::GET if target.watch_path || query.watch => Verb::Watch,
        Method::GET if named => Verb::Get,
        Method::GET => Verb::List,
        Method::POST => Verb::Create,
        Method::PUT if named => Verb::Update,
        Method::PATCH if named => Verb::Patch,
        Method::DELETE if named => Verb::Delete,
        Method::DELETE => Verb::DeleteCollection,
        _ => {
            return Err(ApiError::method_not_allowed(
                method.as_str(),
                target.resource.plural,
            ))
        }
    })
}

/// The query parameters the API understands.
#[derive(Debug, Default)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
    pub watch: bool,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout_seconds: Option<u64>,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub force: bool,
    pub dry_run: bool,
    pub propagation_policy: Option<String>,
    pub grace_period_seconds: Option<i64>,
    /// Table rows carry `None`, `Metadata` (the default) or `Object`.
    pub include_object: Option<String>,
}

/// A boolean parameter as Go's `strconv.ParseBool` reads it (the Python
/// client sends `watch=True`); present without a value means true.
fn truthy(v: &str) -> bool {
    matches!(v, "" | "1" | "t" | "T" | "true" | "TRUE" | "True")
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Self::default();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let v = v.into_owned();
            let number = |v: &str| -> Result<i64, ApiError> {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {k}")))
            };
            match k.as_ref() {
                "labelSelector" => q.label_selector = Some(v),
                "fieldSelector" => q.field_selector = Some(v),
                "limit" => q.limit = number(&v)?.max(0) as usize,
                "continue" if !v.is_empty() => q.continue_token = Some(v),
                "resourceVersion" if !v.is_empty() => q.resource_version = Some(v),
                "resourceVersionMatch" if !v.is_empty() => q.resource_version_match = Some(v),
                "watch" => q.watch = truthy(&v),
                "allowWatchBookmarks" => q.allow_bookmarks = truthy(&v),
                "sendInitialEvents" => q.send_initial_events = truthy(&v),
                "timeoutSeconds" => q.timeout_seconds = Some(number(&v)?.max(0) as u64),
                "fieldValidation" => q.field_validation = Some(v),
                "fieldManager" => q.field_manager = Some(v),
                "force" => q.force = truthy(&v),
                "dryRun" if v == "All" => q.dry_run = true,
                "dryRun" => {
                    return Err(ApiError::bad_request(format!(
                        "Invalid dryRun value {v:?}: only \"All\" is supported"
                    )))
                }
                "propagationPolicy" => q.propagation_policy = Some(v),
                "gracePeriodSeconds" => q.grace_period_seconds = Some(number(&v)?),
                "includeObject" => q.include_object = Some(v),
                _ => {}
            }
        }
        if let Some(fv) = &q.field_validation {
            if !matches!(fv.as_str(), "Strict" | "Warn" | "Ignore") {
                return Err(ApiError::bad_request(format!(
                    "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {fv:?}"
                )));
            }
        }
        Ok(q)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> Target {
        match route(path).unwrap() {
            Route::Resource(t) => t,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn booleans_read_as_go_does() {
        for yes in ["watch=True", "watch=true", "watch=1", "watch"] {
            assert!(Query::parse(Some(yes)).unwrap().watch, "{yes}");
        }
        for no in ["watch=False", "watch=0", "watch=no"] {
            assert!(!Query::parse(Some(no)).unwrap().watch, "{no}");
        }
    }

    #[test]
    fn paths() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.resource.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/apis/apps/v1/deployments");
        assert_eq!(
            (t.resource.kind, t.namespace, t.name),
            ("Deployment", None, None)
        );
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (t.resource.kind, t.name.as_deref()),
            ("Namespace", Some("kube-system"))
        );
        let t = target("/api/v1/namespaces/x/finalize");
        assert_eq!(
            (t.name.as_deref(), t.subresource.as_deref()),
            (Some("x"), Some("finalize"))
        );
        let t = target("/api/v1/watch/namespaces/default/pods");
        assert!(t.watch_path);
        assert_eq!(route("/apis/apps/v1/nothings").unwrap_err().code, 404);
        assert_eq!(
            route("/api/v1/namespaces/d/configmaps/x/scale")
                .unwrap_err()
                .code,
            404
        );
    }
}
