//! The reviews a user asks about itself: SelfSubjectAccessReview (`kubectl
//! auth can-i`: may I do this?) and SelfSubjectReview (`kubectl auth
//! whoami`: who am I?). Nothing is stored: the answer is the reply.

use serde_json::{json, Value};

use super::{Attributes, Authorizer, Decision, Target};
use crate::auth::User;

/// A review endpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Review {
    Access,
    Subject,
}

impl Review {
    /// The review a path names, if any.
    pub fn of(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" => Some(Self::Access),
            "/apis/authentication.k8s.io/v1/selfsubjectreviews" => Some(Self::Subject),
            _ => None,
        }
    }

    /// What creating this review is, for authorization.
    pub fn target(self) -> Target {
        let (group, resource) = match self {
            Self::Access => ("authorization.k8s.io", "selfsubjectaccessreviews"),
            Self::Subject => ("authentication.k8s.io", "selfsubjectreviews"),
        };
        Target::Resource {
            group: group.into(),
            resource: resource.into(),
            subresource: None,
            namespace: None,
            name: None,
        }
    }

    /// The reply to `request` from `user`.
    pub fn answer(self, user: &User, authorizer: &dyn Authorizer, request: &Value) -> Value {
        match self {
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
            None
        );
        let who = Review::Subject.answer(&user, &Rbac::default(), &json!({}));
        assert_eq!(who["status"]["userInfo"]["username"], "alice");
        let ask = json!({"spec": {"resourceAttributes": {"verb": "list", "resource": "secrets", "namespace": "a"}}});
        let no = Review::Access.answer(&user, &Rbac::default(), &ask);
        assert_eq!(no["status"]["allowed"], false);
        let yes = Review::Access.answer(&user, &super::super::AlwaysAllow, &ask);
        assert_eq!(yes["status"]["allowed"], true);
    }
}
