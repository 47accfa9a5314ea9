//! The reviews: what a user asks about itself — SelfSubjectAccessReview
//! (`kubectl auth can-i`: may I do this?), SelfSubjectRulesReview (`can-i
//! --list`: what may I do here?) and SelfSubjectReview (`kubectl auth
//! whoami`: who am I?) — and what components ask about others:
//! SubjectAccessReview (may this user?), LocalSubjectAccessReview (may
//! this user, in this namespace?) and TokenReview (whose token is this?,
//! answered by the handlers, which hold the authenticator).
//! Nothing is stored: the answer is the reply.

use serde_json::{json, Value};

use super::{Attributes, Authorizer, Decision, Target};
use crate::auth::User;

/// A review endpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum Review {
    Access,
    Rules,
    Subject,
    SubjectAccess,
    /// In the namespace of its path.
    LocalSubjectAccess(String),
    Token,
}

impl Review {
    /// The review a path names, if any.
    pub fn of(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Self::Access),
            "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews" => Some(Self::Rules),
            "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Self::Subject),
            "/apis/authorization.k8s.io/v1/subjectaccessreviews" => Some(Self::SubjectAccess),
            "/apis/authentication.k8s.io/v1/tokenreviews" => Some(Self::Token),
            other => {
                let ns = other
                    .strip_prefix("/apis/authorization.k8s.io/v1/namespaces/")?
                    .strip_suffix("/localsubjectaccessreviews")?;
                (!ns.is_empty() && !ns.contains('/'))
                    .then(|| Self::LocalSubjectAccess(ns.to_owned()))
            }
        }
    }

    /// A local review's request must ask about its own namespace (an
    /// empty one is filled in); the message refusing it if not.
    pub fn check(&self, request: &mut Value) -> Result<(), String> {
        let Self::LocalSubjectAccess(ns) = self else {
            return Ok(());
        };
        let asked = &mut request["spec"]["resourceAttributes"]["namespace"];
        match asked.as_str() {
            None | Some("") => {
                *asked = json!(ns);
                Ok(())
            }
            Some(a) if a == ns => Ok(()),
            Some(a) => Err(format!(
                "spec.resourceAttributes.namespace must match metadata.namespace: {a:?} != {ns:?}"
            )),
        }
    }

    /// What creating this review is, for authorization.
    pub fn target(&self) -> Target {
        let (group, resource) = match self {
            Self::Access => ("authorization.k8s.io", "selfsubjectaccessreviews"),
            Self::Rules => ("authorization.k8s.io", "selfsubjectrulesreviews"),
            Self::Subject => ("authentication.k8s.io", "selfsubjectreviews"),
            Self::SubjectAccess => ("authorization.k8s.io", "subjectaccessreviews"),
            Self::LocalSubjectAccess(_) => ("authorization.k8s.io", "localsubjectaccessreviews"),
            Self::Token => ("authentication.k8s.io", "tokenreviews"),
        };
        let namespace = match self {
            Self::LocalSubjectAccess(ns) => Some(ns.clone()),
            _ => None,
        };
        Target::Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace,
            name: None,
        }
    }

    /// The reply to `request` from `user` (all but [`Review::Token`]).
    pub fn answer(&self, user: &User, authorizer: &dyn Authorizer, request: &Value) -> Value {
        match self {
            Self::Token => json!({}),
            Self::Rules => {
                let ns = request["spec"]["namespace"].as_str().unwrap_or_default();
                let rules = authorizer.rules_for(user, ns);
                let resource: Vec<Value> = rules
                    .iter()
                    .filter(|r| !r.resources.is_empty())
                    .map(|r| json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources, "resourceNames": r.resource_names}))
                    .collect();
                let non_resource: Vec<Value> = rules
                    .iter()
                    .filter(|r| !r.non_resource_urls.is_empty())
                    .map(|r| json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls}))
                    .collect();
                json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                    "metadata": {"creationTimestamp": null},
                    "spec": request["spec"],
                    "status": {"resourceRules": resource, "nonResourceRules": non_resource, "incomplete": false},
                })
            }
            Self::SubjectAccess | Self::LocalSubjectAccess(_) => {
                let spec = &request["spec"];
                let asked = User {
                    name: spec["user"].as_str().unwrap_or_default().to_owned(),
                    groups: serde_json::from_value(spec["groups"].clone()).unwrap_or_default(),
                };
                let mut reply = Self::Access.answer(&asked, authorizer, request);
                if let Self::LocalSubjectAccess(ns) = self {
                    reply["kind"] = json!("LocalSubjectAccessReview");
                    reply["metadata"]["namespace"] = json!(ns);
                } else {
                    reply["kind"] = json!("SubjectAccessReview");
                }
                reply
            }
            Self::Subject => json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
                "metadata": {"creationTimestamp": null},
                "status": {"userInfo": {"username": user.name, "groups": user.groups}},
            }),
            Self::Access => {
                let spec = &request["spec"];
                let r = &spec["resourceAttributes"];
                let (verb, target) = if r.is_object() {
                    let text = |k: &str| r[k].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
                    (
                        text("verb").unwrap_or_default(),
                        Target::Resource {
                            group: text("group").unwrap_or_default(),
                            resource: text("resource").unwrap_or_default(),
                            subresource: text("subresource"),
                            namespace: text("namespace"),
                            name: text("name"),
                        },
                    )
                } else {
                    let n = &spec["nonResourceAttributes"];
                    (
                        n["verb"].as_str().unwrap_or_default().to_owned(),
                        Target::Path(n["path"].as_str().unwrap_or_default().to_owned()),
                    )
                };
                let asked = Attributes {
                    user: user.clone(),
                    verb,
                    target,
                };
                let allowed = authorizer.authorize(&asked) == Decision::Allow;
                json!({
                    "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                    "metadata": {"creationTimestamp": null},
                    "spec": spec,
                    "status": {"allowed": allowed},
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::Rbac;

    #[test]
    fn reviews_answer_for_the_asker() {
        let user = User {
            name: "alice".into(),
            groups: vec!["system:authenticated".into()],
        };
        assert_eq!(
            Review::of("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),
            Some(Review::Access)
        );
        assert_eq!(
            Review::of("/apis/authorization.k8s.io/v1/subjectaccessreviews"),
            Some(Review::SubjectAccess)
        );
        assert_eq!(
            Review::of("/apis/authorization.k8s.io/v1/localsubjectaccessreviews"),
            None
        );
        let local =
            Review::of("/apis/authorization.k8s.io/v1/namespaces/a/localsubjectaccessreviews")
                .unwrap();
        assert_eq!(local, Review::LocalSubjectAccess("a".into()));
        let mut elsewhere = json!({"spec": {"resourceAttributes": {"namespace": "b"}}});
        assert!(local
            .check(&mut elsewhere)
            .unwrap_err()
            .contains("must match"));
        let mut unset = json!({"spec": {"user": "alice", "resourceAttributes": {"verb": "get", "resource": "pods"}}});
        local.check(&mut unset).unwrap();
        assert_eq!(unset["spec"]["resourceAttributes"]["namespace"], "a");
        let reply = local.answer(&user, &Rbac::default(), &unset);
        assert_eq!(reply["kind"], "LocalSubjectAccessReview");
        assert_eq!(reply["status"]["allowed"], false);
        let who = Review::Subject.answer(&user, &Rbac::default(), &json!({}));
        assert_eq!(who["status"]["userInfo"]["username"], "alice");
        let ask = json!({"spec": {"resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "a"}}});
        let no = Review::Access.answer(&user, &Rbac::default(), &ask);
        assert_eq!(no["status"]["allowed"], false);
        let yes = Review::Access.answer(&user, &super::super::AlwaysAllow, &ask);
        assert_eq!(yes["status"]["allowed"], true);
        let mut about_bob = ask.clone();
        about_bob["spec"]["user"] = json!("bob");
        let other = Review::SubjectAccess.answer(&user, &super::super::AlwaysAllow, &about_bob);
        assert_eq!(
            (other["kind"].as_str(), other["status"]["allowed"].as_bool()),
            (Some("SubjectAccessReview"), Some(true))
        );
        let rules = Review::Rules.answer(
            &user,
            &super::super::AlwaysAllow,
            &json!({"spec": {"namespace": "a"}}),
        );
        assert_eq!(rules["status"]["resourceRules"][0]["verbs"], json!(["*"]));
        assert_eq!(
            rules["status"]["nonResourceRules"][0]["nonResourceURLs"],
            json!(["*"])
        );
        let none = Review::Rules.answer(
            &user,
            &Rbac::default(),
            &json!({"spec": {"namespace": "a"}}),
        );
        assert_eq!(none["status"]["resourceRules"], json!([]));
    }
}
