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
/// audit event.
#[derive(Default)]
pub struct Trail {
    pub user: Option<User>,
    /// Whom the request impersonated, if anyone.
    pub acted: Option<User>,
    pub verb: String,
    pub target: Option<Target>,
    pub level: Level,
    pub request: Option<Value>,
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
#[serde(rename_all = "camelCase", default)]
struct GroupResources {
    group: String,
    resources: Vec<String>,
    resource_names: Vec<String>,
}

/// One rule of a policy: empty lists match everything.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Rule {
    level: Level,
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
#[serde(default)]
pub struct Policy {
    rules: Vec<Rule>,
}

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
        }
    }

    /// Reads an audit.k8s.io/v1 Policy (YAML or JSON).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let value: Value =
            serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if value["kind"] != "Policy" {
            return Err(format!("{}: not an audit.k8s.io Policy", path.display()));
        }
        serde_json::from_value(value).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The level of the first rule that matches; None when none does.
    pub fn level(&self, user: &User, verb: &str, target: &Target) -> Level {
        self.rules
            .iter()
            .find(|r| r.matches(user, verb, target))
            .map_or(Level::None, |r| r.level)
    }
}

/// What one audit event says.
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
    if let Target::Resource {
        group,
        resource,
        subresource,
        namespace,
        name,
    } = r.target
    {
        let mut object = json!({"resource": resource, "apiGroup": group});
        for (k, v) in [
            ("subresource", subresource),
            ("namespace", namespace),
            ("name", name),
        ] {
            if let Some(v) = v {
                object[k] = json!(v);
            }
        }
        e["objectRef"] = object;
    }
    if r.level >= Level::Request {
        if let Some(body) = r.request {
            e["requestObject"] = body.clone();
        }
    }
    if r.level >= Level::RequestResponse {
        if let Some(body) = r.response {
            e["responseObject"] = body.clone();
        }
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

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

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
        let policy: Policy = serde_yaml::from_str(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  users: [system:kube-proxy]\n- level: Metadata\n  resources: [{group: '', resources: [secrets]}]\n- level: RequestResponse\n  verbs: [create]\n  namespaces: [prod]\n- level: Request\n",
        )
        .unwrap();
        let alice = user("alice", &["system:authenticated"]);
        let proxy = user("system:kube-proxy", &[]);
        let secrets = res("", "secrets", Some("prod"));
        let pods = res("", "pods", Some("prod"));
        assert_eq!(policy.level(&proxy, "get", &pods), Level::None);
        assert_eq!(policy.level(&alice, "create", &secrets), Level::Metadata);
        assert_eq!(
            policy.level(&alice, "create", &pods),
            Level::RequestResponse
        );
        assert_eq!(
            policy.level(&alice, "create", &res("", "pods", Some("dev"))),
            Level::Request
        );
        assert_eq!(
            policy.level(&alice, "get", &Target::Path("/healthz".into())),
            Level::Request
        );
        assert_eq!(Policy::default().level(&alice, "get", &pods), Level::None);
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
}
