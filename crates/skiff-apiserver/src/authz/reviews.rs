//! The reviews: what a user asks about itself — SelfSubjectAccessReview
//! (`kubectl auth can-i`: may I do this?), SelfSubjectRulesReview (`can-i
//! --list`: what may I do here?) and SelfSubjectReview (`kubectl auth
//! whoami`: who am I?) — and what components ask about others:
//! SubjectAccessReview (may this user?) and TokenReview (whose token is
//! this?, answered by the handlers, which hold the authenticator).
//! Nothing is stored: the answer is the reply.

use serde_json::{json, Value};

use super::{Attributes, Authorizer, Decision, Target};
use crate::auth::User;

/// A review endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Review {
    Access,
    Rules,
    Subject,
    SubjectAccess,
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
            _ => None,
        }
    }

    /// What creating this review is, for authorization.
    pub fn target(self) -> Target {
        let (group, resource) = match self {
            Self::Access => ("authorization.k8s.io", "selfsubjectaccessreviews"),
            Self::Rules => ("authorization.k8s.io", "selfsubjectrulesreviews"),
            Self::Subject => ("authentication.k8s.io", "selfsubjectreviews"),
            Self::SubjectAccess => ("authorization.k8s.io", "subjectaccessreviews"),
            Self::Token => ("authentication.k8s.io", "tokenreviews"),
        };
        Target::Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    /// The reply to `request` from `user` (all but [`Review::Token`]).
    pub fn answer(self, user: &User, authorizer: &dyn Authorizer, request: &Value) -> Value {
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
            Self::SubjectAccess => {
                let spec = &request["spec"];
                let asked = User {
                    name: spec["user"].as_str().unwrap_or_default().to_owned(),
                    groups: serde_json::from_value(spec["groups"].clone()).unwrap_or_default(),
                };
                let mut reply = Self::Access.answer(&asked, authorizer, request);
                reply["kind"] = json!("SubjectAccessReview");
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
