//! Impersonation (`kubectl --as`, `--as-group`), the stage between
//! authentication and authorization: a user allowed to `impersonate` the
//! named user, groups and uid acts as them. Each of those is checked on its
//! own, as upstream does: `users`, `groups` and `serviceaccounts` in the
//! core group, `uids` and `userextras/{key}` in authentication.k8s.io.

use hyper::HeaderMap;
use skiff_core::ApiError;

use crate::auth::User;
use crate::authz::Target;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whom a request asks to act as.
#[derive(Debug, PartialEq)]
pub struct Request {
    pub user: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
    /// Extra keys (the values are not kept: nothing here reads them).
    pub extra: Vec<String>,
}

/// The impersonation a request asks for, if any.
pub fn requested(headers: &HeaderMap) -> Result<Option<Request>, ApiError> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    };
    let user = values(USER).into_iter().next();
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next();
    let extra: Vec<String> = headers
        .keys()
        .filter_map(|k| k.as_str().strip_prefix(EXTRA))
        .map(str::to_owned)
        .collect();
    match user {
        Some(user) if !user.is_empty() => Ok(Some(Request {
            user,
            groups,
            uid,
            extra,
        })),
        _ if groups.is_empty() && uid.is_none() && extra.is_empty() => Ok(None),
        _ => Err(ApiError::bad_request(
            "requested impersonation of groups, a uid or extra fields without impersonating a user",
        )),
    }
}

fn core(resource: &str, namespace: Option<&str>, name: &str) -> Target {
    Target::Resource {
        group: String::new(),
        resource: resource.into(),
        subresource: None,
        namespace: namespace.map(str::to_owned),
        name: Some(name.into()),
    }
}

/// What the requester must be allowed to `impersonate`, one target each.
pub fn targets(r: &Request) -> Vec<Target> {
    let mut out = Vec::new();
    match service_account(&r.user) {
        Some((ns, name)) => out.push(core("serviceaccounts", Some(ns), name)),
        None => out.push(core("users", None, &r.user)),
    }
    out.extend(r.groups.iter().map(|g| core("groups", None, g)));
    let auth = |resource: &str, subresource: Option<&str>, name: &str| Target::Resource {
        group: "authentication.k8s.io".into(),
        resource: resource.into(),
        subresource: subresource.map(str::to_owned),
        namespace: None,
        name: Some(name.into()),
    };
    if let Some(uid) = &r.uid {
        out.push(auth("uids", None, uid));
    }
    for key in &r.extra {
        out.push(auth("userextras", Some(key), ""));
    }
    out
}

/// `system:serviceaccount:<ns>:<name>` as `(ns, name)`.
fn service_account(user: &str) -> Option<(&str, &str)> {
    user.strip_prefix("system:serviceaccount:")?.split_once(':')
}

/// The user the request then acts as: the named groups, and those every
/// authenticated user (and service account) has.
pub fn user(r: &Request) -> User {
    let mut groups = r.groups.clone();
    let mut add = |g: String| {
        if !groups.contains(&g) {
            groups.push(g);
        }
    };
    if let Some((ns, _)) = service_account(&r.user) {
        add("system:serviceaccounts".into());
        add(format!("system:serviceaccounts:{ns}"));
    }
    if r.user != "system:anonymous" {
        add("system:authenticated".into());
    }
    User {
        name: r.user.clone(),
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn a_user_with_groups() {
        let r = requested(&headers(&[
            ("Impersonate-User", "jane"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Group", "ops"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(r.groups, ["devs", "ops"]);
        let users: Vec<String> = targets(&r)
            .iter()
            .map(|t| match t {
                Target::Resource { resource, name, .. } => {
                    format!("{resource}/{}", name.clone().unwrap())
                }
                Target::Path(p) => p.clone(),
            })
            .collect();
        assert_eq!(users, ["users/jane", "groups/devs", "groups/ops"]);
        let u = user(&r);
        assert_eq!(u.groups, ["devs", "ops", "system:authenticated"]);
    }

    #[test]
    fn a_service_account_is_checked_as_one() {
        let r = requested(&headers(&[(
            "Impersonate-User",
            "system:serviceaccount:ns1:robot",
        )]))
        .unwrap()
        .unwrap();
        assert_eq!(targets(&r), [core("serviceaccounts", Some("ns1"), "robot")]);
        assert_eq!(
            user(&r).groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
    }

    #[test]
    fn groups_alone_are_refused_and_nothing_asked_is_none() {
        assert!(requested(&headers(&[("Impersonate-Group", "devs")])).is_err());
        assert_eq!(requested(&HeaderMap::new()).unwrap(), None);
    }
}
