//! Audit, the stage after authentication: one audit.k8s.io/v1 Event per
//! request, at the level the policy's first matching rule gives (None,
//! Metadata, Request, RequestResponse), written as JSON lines to
//! `--audit-log-path`. Without `--audit-policy-file` every request is
//! logged at Metadata, so no Secret's content ever reaches the log.

use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::User;
use crate::authz::Target;

/// The address a request came from.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub std::net::IpAddr);

/// What the handlers learn of a request as it passes the stages, for its
/// audit event; empty (and `on` false) when nothing is audited.
#[derive(Default)]
pub struct Trail {
    pub on: bool,
    pub received: String,
    pub uri: String,
    pub source: String,
    pub user_agent: String,
    pub user: Option<User>,
    /// Bodies are logged without their managed fields.
    pub omit_managed_fields: bool,
    /// Whom the request impersonated, if anyone.
    pub acted: Option<User>,
    pub verb: String,
    pub target: Option<Target>,
    pub level: Level,
    pub request: Option<Value>,
    /// The name a creation's body gives its object (the path names
    /// none), for the event's `objectRef`, as upstream's.
    pub created: Option<String>,
}

impl Trail {
    /// The trail of a request the log will see: when and where from.
    pub fn begin<B>(req: &hyper::Request<B>) -> Self {
        let uri = req.uri();
        let header = |name| {
            req.headers()
                .get(name)
                .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        Self {
            on: true,
            received: skiff_core::meta::now_micro(),
            uri: uri
                .path_and_query()
                .map_or_else(|| uri.path().to_owned(), |p| p.to_string()),
            source: req
                .extensions()
                .get::<Peer>()
                .map(|p| p.0.to_string())
                .unwrap_or_default(),
            user_agent: header(hyper::header::USER_AGENT),
            ..Default::default()
        }
    }
}

/// How much of a request the log keeps.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    #[default]
    None,
    Metadata,
    Request,
    RequestResponse,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

/// One rule of a policy: empty lists match everything.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
struct Rule {
    level: Level,
    omit_stages: Vec<String>,
    omit_managed_fields: Option<bool>,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
}

/// An audit.k8s.io/v1 Policy.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: Vec<String>,
    omit_managed_fields: bool,
}

/// The only stage events are written at.
const COMPLETE: &str = "ResponseComplete";
const STAGES: &[&str] = &["RequestReceived", "ResponseStarted", COMPLETE, "Panic"];

fn any_or(list: &[String], f: impl Fn(&str) -> bool) -> bool {
    list.is_empty() || list.iter().any(|x| f(x))
}

impl Rule {
    fn matches(&self, user: &User, verb: &str, target: &Target) -> bool {
        if !any_or(&self.users, |u| u == user.name)
            || !any_or(&self.user_groups, |g| {
                user.groups.iter().any(|mine| mine == g)
            })
            || !any_or(&self.verbs, |v| v == verb)
        {
            return false;
        }
        match target {
            Target::Path(path) => {
                self.resources.is_empty()
                    && self.namespaces.is_empty()
                    && any_or(&self.non_resource_urls, |u| {
                        u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
                    })
            }
            Target::Resource {
                group,
                resource,
                subresource,
                namespace,
                name,
            } => {
                if !self.non_resource_urls.is_empty() {
                    return false;
                }
                let ns = namespace.as_deref().unwrap_or("");
                let full = match subresource {
                    Some(s) => format!("{resource}/{s}"),
                    None => resource.clone(),
                };
                any_or(&self.namespaces, |n| n == ns)
                    && (self.resources.is_empty()
                        || self.resources.iter().any(|gr| {
                            gr.group == *group
                                && any_or(&gr.resources, |r| {
                                    r == "*"
                                        || r == full
                                        || r == format!("{resource}/*")
                                        || r.strip_prefix("*/")
                                            .is_some_and(|s| subresource.as_deref() == Some(s))
                                })
                                && any_or(&gr.resource_names, |n| Some(n) == name.as_deref())
                        }))
            }
        }
    }
}

impl Policy {
    /// Every request at Metadata.
    pub fn metadata_only() -> Self {
        Self {
            rules: vec![Rule {
                level: Level::Metadata,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Reads an audit.k8s.io/v1 Policy (YAML or JSON) from a file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a Policy; unknown fields and stages are refused rather than
    /// ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
        if value["kind"] != "Policy" {
            return Err("not an audit.k8s.io Policy".into());
        }
        if let Some(o) = value.as_object_mut() {
            for envelope in ["apiVersion", "kind", "metadata"] {
                o.remove(envelope);
            }
        }
        let policy: Self = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let stages = policy.rules.iter().flat_map(|r| &r.omit_stages);
        let mut all = policy.omit_stages.iter().chain(stages);
        if let Some(bad) = all.find(|s| !STAGES.contains(&s.as_str())) {
            return Err(format!("unknown stage {bad:?} in omitStages"));
        }
        Ok(policy)
    }

    /// The level of the first rule that matches (None when none does, or
    /// when it or the policy omits the stage events are written at), and
    /// whether its bodies are logged without their managed fields.
    pub fn decide(&self, user: &User, verb: &str, target: &Target) -> (Level, bool) {
        let Some(rule) = self.rules.iter().find(|r| r.matches(user, verb, target)) else {
            return (Level::None, false);
        };
        let omitted = |stages: &[String]| stages.iter().any(|s| s == COMPLETE);
        let level = if omitted(&self.omit_stages) || omitted(&rule.omit_stages) {
            Level::None
        } else {
            rule.level
        };
        (
            level,
            rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
        )
    }
}

/// What one audit event says.
/// Annotations admission adds to a request's audit event (as upstream's
/// `pod-security.kubernetes.io/audit-violations`), carried on the reply.
#[derive(Clone, Debug, Default)]
pub struct Annotations(pub Vec<(String, String)>);

/// `reply` with audit annotations, if there are any.
pub fn annotated(
    mut reply: axum::response::Response,
    annotations: Vec<(String, String)>,
) -> axum::response::Response {
    if !annotations.is_empty() {
        reply.extensions_mut().insert(Annotations(annotations));
    }
    reply
}

pub struct Record<'a> {
    pub level: Level,
    pub id: &'a str,
    pub uri: &'a str,
    pub verb: &'a str,
    pub user: &'a User,
    /// The user the request acted as, when it impersonated one.
    pub impersonated: Option<&'a User>,
    pub source: &'a str,
    pub user_agent: &'a str,
    pub target: &'a Target,
    pub code: u16,
    pub received: &'a str,
    pub request: Option<&'a Value>,
    pub response: Option<&'a Value>,
    pub omit_managed_fields: bool,
    pub annotations: Option<&'a Annotations>,
    /// The name a creation's body gives its object.
    pub created: Option<&'a str>,
}

/// The audit.k8s.io/v1 Event of a request that completed.
pub fn event(r: &Record) -> Value {
    let user = |u: &User| json!({"username": u.name, "groups": u.groups});
    let mut e = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1",
        "level": format!("{:?}", r.level), "auditID": r.id, "stage": "ResponseComplete",
        "requestURI": r.uri, "verb": r.verb, "user": user(r.user),
        "sourceIPs": [r.source], "userAgent": r.user_agent,
        "responseStatus": {"metadata": {}, "code": r.code},
        "requestReceivedTimestamp": r.received,
        "stageTimestamp": skiff_core::meta::now_micro(),
    });
    if let Some(i) = r.impersonated {
        e["impersonatedUser"] = user(i);
    }
    if let Some(Annotations(notes)) = r.annotations {
        let notes: serde_json::Map<String, Value> =
            notes.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        e["annotations"] = Value::Object(notes);
    }
    if let Target::Resource {
        group,
        resource,
        subresource,
        namespace,
        name,
    } = r.target
    {
        let mut object = json!({"resource": resource, "apiGroup": group});
        let name = name.as_deref().or(r.created);
        for (k, v) in [
            ("subresource", subresource.as_deref()),
            ("namespace", namespace.as_deref()),
            ("name", name),
        ] {
            if let Some(v) = v {
                object[k] = json!(v);
            }
        }
        e["objectRef"] = object;
    }
    let logged = |body: &Value| {
        let mut body = body.clone();
        if r.omit_managed_fields {
            if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
        }
        body
    };
    if let Some(body) = r.request.filter(|_| r.level >= Level::Request) {
        e["requestObject"] = logged(body);
    }
    if let Some(body) = r.response.filter(|_| r.level >= Level::RequestResponse) {
        e["responseObject"] = logged(body);
    }
    e
}

/// Appends events to the log file, one JSON line each, from one task.
#[derive(Clone)]
pub struct Log {
    lines: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Log {
    pub fn open(path: &Path) -> Result<Self, String> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let (lines, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::task::spawn_blocking(move || {
            while let Some(line) = rx.blocking_recv() {
                if let Err(e) = writeln!(file, "{line}") {
                    tracing::error!(error = %e, "audit log write failed");
                }
            }
        });
        Ok(Self { lines })
    }

    pub fn write(&self, event: &Value) {
        let _ = self.lines.send(event.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::admission::testing::user;

    fn res(group: &str, resource: &str, ns: Option<&str>) -> Target {
        Target::Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: ns.map(str::to_owned),
            name: None,
        }
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let policy = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [system:kube-proxy]\n- level: Metadata\n  resources: [{group: '', resources: [secrets]}]\n- level: RequestResponse\n  verbs: [create]\n  namespaces: [prod]\n- level: Request\n",
        )
        .unwrap();
        let alice = user("alice", &["system:authenticated"]);
        let proxy = user("system:kube-proxy", &[]);
        let secrets = res("", "secrets", Some("prod"));
        let pods = res("", "pods", Some("prod"));
        assert_eq!(policy.decide(&proxy, "get", &pods).0, Level::None);
        assert_eq!(policy.decide(&alice, "create", &secrets).0, Level::Metadata);
        assert_eq!(
            policy.decide(&alice, "create", &pods).0,
            Level::RequestResponse
        );
        assert_eq!(
            policy
                .decide(&alice, "create", &res("", "pods", Some("dev")))
                .0,
            Level::Request
        );
        assert_eq!(
            policy
                .decide(&alice, "get", &Target::Path("/healthz".into()))
                .0,
            Level::Request
        );
        assert_eq!(
            Policy::default().decide(&alice, "get", &pods).0,
            Level::None
        );
    }

    #[test]
    fn an_event_keeps_bodies_only_at_their_levels() {
        let alice = user("alice", &[]);
        let target = res("", "secrets", Some("a"));
        let body = json!({"data": {"k": "djE="}});
        let record = |level| Record {
            level,
            id: "1",
            uri: "/api/v1/namespaces/a/secrets",
            verb: "create",
            user: &alice,
            impersonated: None,
            source: "127.0.0.1",
            user_agent: "kubectl",
            target: &target,
            code: 201,
            received: "2026-01-01T00:00:00.000000Z",
            request: Some(&body),
            response: Some(&body),
            omit_managed_fields: false,
            annotations: None,
            created: None,
        };
        let meta = event(&record(Level::Metadata));
        assert_eq!(
            meta["objectRef"],
            json!({"resource": "secrets", "apiGroup": "", "namespace": "a"})
        );
        assert!(meta.get("requestObject").is_none() && meta.get("responseObject").is_none());
        let full = event(&record(Level::RequestResponse));
        assert_eq!(full["requestObject"], body);
        assert_eq!(full["responseObject"], body);
        assert_eq!(full["responseStatus"]["code"], 201);
    }

    #[test]
    fn omitted_stages_managed_fields_and_unknown_fields() {
        let load = Policy::parse;
        let head = "apiVersion: audit.k8s.io/v1\nkind: Policy\n";
        let alice = user("alice", &[]);
        let pods = res("", "pods", Some("a"));
        let quiet = load(&format!(
            "{head}omitStages: [ResponseComplete]\nrules: [{{level: Metadata}}]\n"
        ))
        .unwrap();
        assert_eq!(quiet.decide(&alice, "get", &pods).0, Level::None);
        let lean = load(&format!("{head}omitManagedFields: true\nrules: [{{level: RequestResponse}}, {{level: Metadata, omitManagedFields: false}}]\n")).unwrap();
        assert_eq!(
            lean.decide(&alice, "get", &pods),
            (Level::RequestResponse, true)
        );
        assert!(load(&format!(
            "{head}rules: [{{level: Metadata, omitStages: [Sometime]}}]\n"
        ))
        .is_err());
        assert!(load(&format!("{head}rules: [{{level: Metadata, userz: [a]}}]\n")).is_err());
        let body = json!({"metadata": {"name": "m", "managedFields": [{"manager": "kubectl"}]}});
        let target = res("", "configmaps", Some("a"));
        let event = event(&Record {
            level: Level::RequestResponse,
            id: "1",
            uri: "/",
            verb: "create",
            user: &alice,
            impersonated: None,
            source: "",
            user_agent: "",
            target: &target,
            code: 201,
            received: "",
            request: Some(&body),
            response: Some(&body),
            omit_managed_fields: true,
            annotations: None,
            created: Some("m"),
        });
        assert_eq!(event["objectRef"]["name"], "m");
        assert_eq!(event["requestObject"], json!({"metadata": {"name": "m"}}));
        assert_eq!(event["responseObject"], json!({"metadata": {"name": "m"}}));
    }
}
