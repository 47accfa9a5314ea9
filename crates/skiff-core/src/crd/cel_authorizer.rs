//! The `authorizer` variable of admission expressions, as upstream's CEL
//! authorization library offers it: a check is built as
//! `authorizer.group(g).resource(r)`, narrowed by `.subresource(s)`,
//! `.namespace(n)`, `.name(x)`, `.fieldSelector(f)` and
//! `.labelSelector(l)`, or as `authorizer.path(p)`, and asked
//! with `.check(verb)`; the decision says `allowed()`, `reason()`,
//! `errored()` and `error()`. `authorizer.serviceAccount(ns, name)` asks
//! for that account instead of the requester, and
//! `authorizer.requestResource` is the request's own resource.
//!
//! The values are CEL maps that say which step of a check they are.

use std::collections::HashMap;
use std::sync::Arc;

use cel::extractors::This;
use cel::objects::Key;
use cel::{Context, ExecutionError, Value};

/// What a check asks of the authorizer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Check {
    /// The service account asked for (namespace, name); none: the
    /// requester.
    pub service_account: Option<(String, String)>,
    /// A non-resource path, or else the resource below.
    pub path: Option<String>,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The selectors the check names, as written. Upstream hands them to
    /// its authorizers parsed; its RBAC decides without them, and so do
    /// Skiff's RBAC and Node authorizers.
    pub field_selector: String,
    pub label_selector: String,
    pub verb: String,
}

/// The authorizer's answer to a check.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: String,
}

/// Answers checks for one request.
pub type Authorize = Arc<dyn Fn(&Check) -> Decision + Send + Sync>;

/// The key that names what a map of this library is.
const STEP: &str = "authorizer.step";

/// Adds `authorizer` to `context`: checks that `authorize` answers, and
/// `requestResource` from the admission `request`.
pub fn register(
    context: &mut Context<'static, 'static>,
    authorize: Authorize,
    request: &serde_json::Value,
) -> Result<(), String> {
    let err = |e: cel::DeclarationError| e.to_string();
    let text = |f: &str| request[f].as_str().unwrap_or_default().to_owned();
    let resource = &request["resource"];
    let own = Check {
        group: resource["group"].as_str().unwrap_or_default().into(),
        resource: resource["resource"].as_str().unwrap_or_default().into(),
        subresource: text("subResource"),
        namespace: text("namespace"),
        name: text("name"),
        ..Check::default()
    };
    let mut authorizer = fields("authorizer", &Check::default());
    authorizer.insert(key("requestResource"), to_map("resource", &own));
    context.add_variable_from_value("authorizer", Value::from(authorizer));
    for (name, from, field) in [
        ("path", "authorizer", Field::Path),
        ("group", "authorizer", Field::Group),
        ("resource", "group", Field::Resource),
        ("subresource", "resource", Field::Subresource),
        ("namespace", "resource", Field::Namespace),
        ("name", "resource", Field::Name),
        ("fieldSelector", "resource", Field::Fields),
        ("labelSelector", "resource", Field::Labels),
    ] {
        let to = match field {
            Field::Path => "path",
            Field::Group => "group",
            _ => "resource",
        };
        context
            .add_function(name, move |This(this): This<Value>, value: Arc<String>| {
                let mut check = of_step(&this, &[from], name)?;
                if matches!(field, Field::Path | Field::Resource) && value.trim().is_empty() {
                    return Err(ExecutionError::function_error(
                        name,
                        format!("{name} must not be empty"),
                    ));
                }
                field.set(&mut check, value.to_string());
                Ok::<_, ExecutionError>(to_map(to, &check))
            })
            .map_err(err)?;
    }
    context
        .add_function(
            "serviceAccount",
            |This(this): This<Value>, namespace: Arc<String>, name: Arc<String>| {
                let mut check = of_step(&this, &["authorizer"], "serviceAccount")?;
                let invalid = |what: &str| {
                    ExecutionError::function_error(
                        "serviceAccount",
                        format!("Invalid service account {what}"),
                    )
                };
                if !crate::validate::is_dns_subdomain(&name) {
                    return Err(invalid("name"));
                }
                if !crate::validate::is_dns_label(&namespace) {
                    return Err(invalid("namespace"));
                }
                check.service_account = Some((namespace.to_string(), name.to_string()));
                Ok::<_, ExecutionError>(to_map("authorizer", &check))
            },
        )
        .map_err(err)?;
    context
        .add_function(
            "check",
            move |This(this): This<Value>, verb: Arc<String>| {
                let mut check = of_step(&this, &["path", "resource"], "check")?;
                check.verb = verb.to_string();
                let decision = authorize(&check);
                let fields = HashMap::from([
                    (key(STEP), Value::from("decision")),
                    (key("allowed"), Value::Bool(decision.allowed)),
                    (key("reason"), Value::from(decision.reason)),
                ]);
                Ok::<_, ExecutionError>(Value::from(fields))
            },
        )
        .map_err(err)?;
    for name in ["allowed", "reason", "errored", "error"] {
        context
            .add_function(name, move |This(this): This<Value>| {
                let Value::Map(m) = &this else {
                    return Err(ExecutionError::function_error(name, "not a decision"));
                };
                if m.map.get(&key(STEP)) != Some(&Value::from("decision")) {
                    return Err(ExecutionError::function_error(name, "not a decision"));
                }
                // Skiff's authorizers answer every check: none errs.
                Ok(match name {
                    "errored" => Value::Bool(false),
                    "error" => Value::from(""),
                    field => m.map.get(&key(field)).cloned().unwrap_or(Value::Null),
                })
            })
            .map_err(err)?;
    }
    Ok(())
}

/// A field a step of a check sets.
#[derive(Clone, Copy)]
enum Field {
    Path,
    Group,
    Resource,
    Subresource,
    Namespace,
    Name,
    /// The field selector.
    Fields,
    /// The label selector.
    Labels,
}

impl Field {
    fn set(self, check: &mut Check, value: String) {
        let field = match self {
            Field::Path => {
                check.path = Some(value);
                return;
            }
            Field::Group => &mut check.group,
            Field::Resource => &mut check.resource,
            Field::Subresource => &mut check.subresource,
            Field::Namespace => &mut check.namespace,
            Field::Name => &mut check.name,
            Field::Fields => &mut check.field_selector,
            Field::Labels => &mut check.label_selector,
        };
        *field = value;
    }
}

fn key(name: &str) -> Key {
    Key::String(Arc::new(name.to_owned()))
}

/// A step of a check as a CEL map.
fn to_map(step: &str, check: &Check) -> Value {
    Value::from(fields(step, check))
}

/// The fields of [`to_map`]'s map.
fn fields(step: &str, check: &Check) -> HashMap<Key, Value> {
    let mut fields = HashMap::from([(key(STEP), Value::from(step.to_owned()))]);
    for (name, value) in [
        ("group", &check.group),
        ("resource", &check.resource),
        ("subresource", &check.subresource),
        ("namespace", &check.namespace),
        ("name", &check.name),
        ("fieldSelector", &check.field_selector),
        ("labelSelector", &check.label_selector),
    ] {
        fields.insert(key(name), Value::from(value.clone()));
    }
    if let Some(path) = &check.path {
        fields.insert(key("path"), Value::from(path.clone()));
    }
    if let Some((namespace, name)) = &check.service_account {
        let account = format!("{namespace}/{name}");
        fields.insert(key("serviceAccount"), Value::from(account));
    }
    fields
}

/// The check a map of one of `steps` holds; an error naming `function`
/// for anything else.
fn of_step(value: &Value, steps: &[&str], function: &str) -> Result<Check, ExecutionError> {
    let wrong = || {
        ExecutionError::function_error(function, format!("may only follow {}", steps.join(" or ")))
    };
    let Value::Map(m) = value else {
        return Err(wrong());
    };
    let text = |name: &str| match m.map.get(&key(name)) {
        Some(Value::String(s)) => Some(s.to_string()),
        _ => None,
    };
    let step = text(STEP).ok_or_else(wrong)?;
    if !steps.contains(&step.as_str()) {
        return Err(wrong());
    }
    let field = |name: &str| text(name).unwrap_or_default();
    Ok(Check {
        service_account: text("serviceAccount")
            .and_then(|a| a.split_once('/').map(|(n, a)| (n.to_owned(), a.to_owned()))),
        path: text("path"),
        group: field("group"),
        resource: field("resource"),
        subresource: field("subresource"),
        namespace: field("namespace"),
        name: field("name"),
        field_selector: field("fieldSelector"),
        label_selector: field("labelSelector"),
        verb: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::crd::cel::{compile, Activation};

    #[test]
    fn checks_are_built_step_by_step_and_answered_by_the_authorizer() {
        let asked: Arc<Mutex<Vec<Check>>> = Arc::default();
        let seen = asked.clone();
        let authorize: Authorize = Arc::new(move |check: &Check| {
            seen.lock().unwrap().push(check.clone());
            let allowed = check.resource == "pods" && check.service_account.is_none();
            Decision {
                allowed,
                reason: if allowed {
                    "granted".into()
                } else {
                    String::new()
                },
            }
        });
        let request = json!({"resource": {"group": "", "version": "v1", "resource": "pods"},
            "subResource": "status", "namespace": "web", "name": "p"});
        let mut activation = Activation::new(&[("request", &request)]);
        activation.with_authorizer(authorize, &request).unwrap();
        let holds = |text: &str| activation.holds(&compile(text).unwrap());
        let says = |text: &str| activation.string(&compile(text).unwrap());
        let last = || asked.lock().unwrap().last().cloned().unwrap();

        let text = "authorizer.group('').resource('pods').namespace('web').name('p').check('delete').allowed()";
        assert_eq!(holds(text), Ok(true));
        let want = Check {
            resource: "pods".into(),
            namespace: "web".into(),
            name: "p".into(),
            verb: "delete".into(),
            ..Check::default()
        };
        assert_eq!(last(), want);
        let text = "authorizer.requestResource.check('update').reason()";
        assert_eq!(says(text), Ok(Some("granted".into())));
        let want = Check {
            resource: "pods".into(),
            subresource: "status".into(),
            namespace: "web".into(),
            name: "p".into(),
            verb: "update".into(),
            ..Check::default()
        };
        assert_eq!(last(), want);
        let text = "authorizer.serviceAccount('kube-system', 'robot').group('apps').resource('pods').check('get').allowed()";
        assert_eq!(holds(text), Ok(false));
        assert_eq!(
            last().service_account,
            Some(("kube-system".into(), "robot".into()))
        );
        let text = "authorizer.path('/healthz').check('get').errored()";
        assert_eq!(holds(text), Ok(false));
        assert_eq!(last().path.as_deref(), Some("/healthz"));
        let text = "authorizer.group('').resource('pods').fieldSelector('spec.nodeName=n1').labelSelector('app in (a, b)').check('list').allowed()";
        assert_eq!(holds(text), Ok(true));
        let want = Check {
            resource: "pods".into(),
            field_selector: "spec.nodeName=n1".into(),
            label_selector: "app in (a, b)".into(),
            verb: "list".into(),
            ..Check::default()
        };
        assert_eq!(last(), want);
        // Steps in their order only.
        let err = holds("authorizer.resource('pods').check('get').allowed()").unwrap_err();
        assert!(err.contains("may only follow group"), "{err}");
        let err =
            holds("authorizer.group('').fieldSelector('a=b').check('get').allowed()").unwrap_err();
        assert!(err.contains("may only follow resource"), "{err}");
        // What upstream refuses to build.
        for (text, says) in [
            (
                "authorizer.group('').resource(' ')",
                "resource must not be empty",
            ),
            ("authorizer.path('')", "path must not be empty"),
            (
                "authorizer.serviceAccount('default', 'Robot!')",
                "Invalid service account name",
            ),
            (
                "authorizer.serviceAccount('a.b', 'robot')",
                "Invalid service account namespace",
            ),
        ] {
            let err = holds(&format!("{text}.check('get').allowed()")).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
