//! ValidatingAdmissionPolicy, as upstream's plugin: each binding puts its
//! policy's CEL validations on the writes both match (rules, selectors,
//! match conditions), with the binding's parameters. A validation that
//! fails refuses the write, warns, or is recorded in the audit event, as
//! the binding's `validationActions` say; a policy that cannot be
//! evaluated refuses or lets the write pass, as its `failurePolicy` says.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{json, Value};
use skiff_core::crd::cel::{Activation, Program};
use skiff_core::registry;
use skiff_core::selector::LabelSelector;
use skiff_core::{meta, ApiError};

use super::webhooks::rules::{self, Seen};
use super::webhooks::{as_seen, compiled, exempt, match_conditions_hold, request};
use super::{Attributes, Operation, Validating, Verdict};
use crate::authz::Authorizer;
use crate::storage::Objects;

const GROUP: &str = "admissionregistration.k8s.io";
/// The audit annotation a failed validation with the `Audit` action adds.
const FAILURE_ANNOTATION: &str = "validation.policy.admission.k8s.io/validation_failure";
/// The longest audit annotation value kept.
const MAX_ANNOTATION: usize = 10 * 1024;
/// The longest message a `messageExpression` may give.
const MAX_MESSAGE: usize = 5 * 1024;

/// The ValidatingAdmissionPolicy plugin.
pub struct ValidatingPolicies(pub Objects, pub Arc<dyn Authorizer>);

/// Why a write is refused: the message and the Status reason.
struct Denial {
    message: String,
    reason: String,
}

/// What evaluating one binding of a policy said.
#[derive(Default)]
struct Outcome {
    denial: Option<Denial>,
    warnings: Vec<String>,
    audit: Vec<(String, String)>,
}

/// One policy and one of its bindings, at work on one write.
struct Bound<'p> {
    policy: &'p Value,
    binding: &'p Value,
}

impl Bound<'_> {
    fn policy_name(&self) -> &str {
        meta::name(self.policy)
    }

    fn binding_name(&self) -> &str {
        meta::name(self.binding)
    }

    fn fails_open(&self) -> bool {
        self.policy["spec"]["failurePolicy"] == "Ignore"
    }

    /// The denial for a policy that could not be evaluated, unless its
    /// failure policy lets the write pass.
    fn failed(&self, why: String) -> Option<Denial> {
        if self.fails_open() {
            tracing::warn!(policy = self.policy_name(), error = %why, "admission policy failed; its failurePolicy lets the request pass");
            return None;
        }
        Some(Denial {
            message: why,
            reason: String::new(),
        })
    }

    fn actions(&self) -> Vec<&str> {
        let actions = self.binding["spec"]["validationActions"].as_array();
        actions
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    }
}

/// The name a write is known by (for `resourceNames` and refusals).
fn name_of<'v>(a: &Attributes<'v>, obj: &'v Value) -> &'v str {
    match (a.operation, a.old) {
        (Operation::Connect | Operation::Delete, Some(old)) => meta::name(old),
        _ if !obj.is_null() => meta::name(obj),
        (_, Some(old)) => meta::name(old),
        _ => "",
    }
}

impl ValidatingPolicies {
    /// How the write is seen if `bound` is for it: its policy's match
    /// constraints, then its binding's own match resources, both by rules
    /// (less the excluded) and selectors.
    async fn matched(
        &self,
        bound: &Bound<'_>,
        a: &Attributes<'_>,
        obj: &Value,
    ) -> Result<Option<Seen>, ApiError> {
        let name = name_of(a, obj);
        let constraints = &bound.policy["spec"]["matchConstraints"];
        let Some(seen) = self.within(constraints, a, obj, name).await? else {
            return Ok(None);
        };
        let resources = &bound.binding["spec"]["matchResources"];
        if resources.is_object() && self.within(resources, a, obj, name).await?.is_none() {
            return Ok(None);
        }
        Ok(Some(seen))
    }

    /// Whether `m` (match resources) takes the write; a binding's without
    /// rules takes every resource its policy does.
    async fn within(
        &self,
        m: &Value,
        a: &Attributes<'_>,
        obj: &Value,
        name: &str,
    ) -> Result<Option<Seen>, ApiError> {
        let policy = &m["matchPolicy"];
        let unruled = m["resourceRules"].as_array().is_none_or(Vec::is_empty);
        let seen = if unruled {
            Some(Seen::AsMade)
        } else {
            rules::matches_rules(&m["resourceRules"], policy, a, name)
        };
        let excluded = rules::matches_rules(&m["excludeResourceRules"], policy, a, name);
        if seen.is_none() || excluded.is_some() || !rules::selected(&self.0, m, a, obj).await? {
            return Ok(None);
        }
        Ok(seen)
    }

    /// The binding's parameters: none if its policy takes none (one
    /// evaluation without `params`), else those its `paramRef` finds.
    async fn params(&self, bound: &Bound<'_>, ns: Option<&str>) -> Result<Vec<Value>, String> {
        let kind = &bound.policy["spec"]["paramKind"];
        let param_ref = &bound.binding["spec"]["paramRef"];
        if !kind.is_object() || !param_ref.is_object() {
            return Ok(vec![Value::Null]);
        }
        let api_version = kind["apiVersion"].as_str().unwrap_or_default();
        let kind_name = kind["kind"].as_str().unwrap_or_default();
        let (group, version) = registry::split_api_version(api_version);
        let Some(r) = registry::by_kind(group, version, kind_name) else {
            return Err(format!(
                "paramKind kind `{api_version}, Kind={kind_name}` not known"
            ));
        };
        // Without a namespace of its own, the parameter is looked for in
        // the request's.
        let ns = match param_ref["namespace"].as_str().filter(|n| !n.is_empty()) {
            _ if !r.namespaced => None,
            Some(ns) => Some(ns),
            None => match ns {
                Some(ns) => Some(ns),
                None => {
                    return Err("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources".into());
                }
            },
        };
        let found: Vec<Value> = match param_ref["name"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => self
                .0
                .recent(r, ns, name)
                .await
                .map_err(|e| e.message)?
                .into_iter()
                .collect(),
            None => {
                let selector =
                    LabelSelector::from_object(&param_ref["selector"]).map_err(|e| e.message)?;
                let all = self.0.recent_list(r, ns).await.map_err(|e| e.message)?;
                all.into_iter()
                    .filter(|p| selector.matches_object(p))
                    .collect()
            }
        };
        if found.is_empty() && param_ref["parameterNotFoundAction"] != "Allow" {
            return Err(
                "no params found for policy binding with `Deny` parameterNotFoundAction".into(),
            );
        }
        Ok(found)
    }

    /// Evaluates `bound` on the write, as seen.
    async fn evaluate(
        &self,
        bound: &Bound<'_>,
        seen: Seen,
        a: &Attributes<'_>,
        obj: &Value,
    ) -> Result<Outcome, ApiError> {
        let mut outcome = Outcome::default();
        let (shown, shown_old) = as_seen(seen, a, obj)?;
        let uid = uuid::Uuid::new_v4().to_string();
        // The request says the object and the one it replaces as CEL sees
        // them (a deletion's object is null).
        let request = request(seen, a, (&shown, shown_old.as_deref()), &uid);
        let ns = request["namespace"].as_str().filter(|n| !n.is_empty());
        let params = match self.params(bound, ns).await {
            Ok(params) => params,
            Err(why) => {
                outcome.denial = bound.failed(format!("failed to configure binding: {why}"));
                return Ok(outcome);
            }
        };
        let namespace = self.namespace_object(a, ns).await?;
        let spec = &bound.policy["spec"];
        let programs = match Programs::of(spec) {
            Ok(p) => p,
            Err(why) => {
                outcome.denial = bound.failed(format!("failed to configure policy: {why}"));
                return Ok(outcome);
            }
        };
        for param in &params {
            let mut activation = Activation::new(&[
                ("object", &request["object"]),
                ("oldObject", &request["oldObject"]),
                ("request", &request),
                ("params", param),
                ("namespaceObject", &namespace),
            ]);
            let authorize = super::cel_authorizer::for_request(self.1.clone(), a.user);
            if let Err(why) = activation.with_authorizer(authorize, &request) {
                outcome.denial = bound.failed(format!("failed to configure policy: {why}"));
                return Ok(outcome);
            }
            let variables = programs.variables.iter().map(|(n, p)| (n.as_str(), &**p));
            activation.with_variables(variables);
            match match_conditions_hold(&spec["matchConditions"], &activation) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(why) => {
                    let failed = Denial {
                        message: why,
                        reason: String::new(),
                    };
                    act(bound, failed, 0, &mut outcome);
                    continue;
                }
            }
            validations(bound, &programs, &activation, &mut outcome);
            annotations(bound, &programs, &activation, &mut outcome);
        }
        Ok(outcome)
    }

    /// The request's namespace, for `namespaceObject` (null for
    /// cluster-wide objects).
    async fn namespace_object(
        &self,
        a: &Attributes<'_>,
        ns: Option<&str>,
    ) -> Result<Value, ApiError> {
        let Some(ns) = ns.filter(|_| a.resource.namespaced) else {
            return Ok(Value::Null);
        };
        let namespaces = registry::preferred("", "namespaces").expect("namespaces are served");
        Ok(self
            .0
            .recent(namespaces, None, ns)
            .await?
            .unwrap_or(Value::Null))
    }
}

/// Runs the validations, acting on each failure as the binding says.
fn validations(
    bound: &Bound<'_>,
    programs: &Programs,
    activation: &Activation,
    outcome: &mut Outcome,
) {
    let validations = bound.policy["spec"]["validations"]
        .as_array()
        .into_iter()
        .flatten();
    for (i, (validation, (program, message))) in validations.zip(&programs.validations).enumerate()
    {
        let expression = validation["expression"].as_str().unwrap_or_default().trim();
        let failed = match activation.holds(program) {
            Ok(true) => continue,
            Ok(false) => Denial {
                message: worded(validation, message.as_deref(), activation)
                    .unwrap_or_else(|| format!("failed expression: {expression}")),
                reason: validation["reason"]
                    .as_str()
                    .unwrap_or("Invalid")
                    .to_owned(),
            },
            Err(e) => Denial {
                message: format!("expression '{expression}' resulted in error: {e}"),
                reason: String::new(),
            },
        };
        act(bound, failed, i, outcome);
    }
}

/// Acts on a failed validation (number `index`) as the binding's actions
/// say: refuse, warn, record. One that could not be evaluated (no
/// reason) is let pass if the policy fails open.
fn act(bound: &Bound<'_>, failed: Denial, index: usize, outcome: &mut Outcome) {
    let failed = if failed.reason.is_empty() {
        let Some(failed) = bound.failed(failed.message) else {
            return;
        };
        failed
    } else {
        failed
    };
    let actions = bound.actions();
    for action in &actions {
        match *action {
            "Warn" => outcome.warnings.push(format!(
                "Validation failed for ValidatingAdmissionPolicy '{}' with binding '{}': {}",
                bound.policy_name(),
                bound.binding_name(),
                failed.message
            )),
            "Audit" => {
                let value = json!([{
                    "message": failed.message, "policy": bound.policy_name(),
                    "binding": bound.binding_name(), "expressionIndex": index,
                    "validationActions": actions,
                }]);
                outcome
                    .audit
                    .push((FAILURE_ANNOTATION.to_owned(), value.to_string()));
            }
            _ => {}
        }
    }
    if actions.contains(&"Deny") && outcome.denial.is_none() {
        outcome.denial = Some(failed);
    }
}

/// A failed validation's message: its `messageExpression`'s if that gives
/// one line of at most 5 KiB, else its `message`.
fn worded(
    validation: &Value,
    expression: Option<&Program>,
    activation: &Activation,
) -> Option<String> {
    let from_expression = expression
        .and_then(|p| activation.string(p).ok().flatten())
        .map(|m| m.trim().to_owned())
        .filter(|m| !m.is_empty() && m.len() <= MAX_MESSAGE && !m.contains('\n'));
    from_expression.or_else(|| {
        validation["message"]
            .as_str()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
    })
}

/// Publishes the policy's audit annotations (`<policy>/<key>`); one whose
/// value is null is left out.
fn annotations(
    bound: &Bound<'_>,
    programs: &Programs,
    activation: &Activation,
    outcome: &mut Outcome,
) {
    let declared = bound.policy["spec"]["auditAnnotations"]
        .as_array()
        .into_iter()
        .flatten();
    for (annotation, program) in declared.zip(&programs.annotations) {
        let key = format!(
            "{}/{}",
            bound.policy_name(),
            annotation["key"].as_str().unwrap_or_default()
        );
        match activation.string(program) {
            Ok(Some(mut value)) => {
                value.truncate(value.floor_char_boundary(MAX_ANNOTATION));
                if !outcome.audit.iter().any(|(k, v)| *k == key && *v == value) {
                    outcome.audit.push((key, value));
                }
            }
            Ok(None) => {}
            Err(e) => {
                let expression = annotation["valueExpression"].as_str().unwrap_or_default();
                let why = format!("valueExpression '{expression}' resulted in error: {e}");
                outcome.denial = outcome.denial.take().or(bound.failed(why));
            }
        }
    }
}

/// A policy's expressions, compiled (once each, process-wide).
struct Programs {
    variables: Vec<(String, std::sync::Arc<Program>)>,
    validations: Vec<(std::sync::Arc<Program>, Option<std::sync::Arc<Program>>)>,
    annotations: Vec<std::sync::Arc<Program>>,
}

impl Programs {
    /// The programs of a policy's `spec` (which compiled when it was
    /// written; an error only if the server's CEL changed since).
    fn of(spec: &Value) -> Result<Self, String> {
        let list = |key: &str| spec[key].as_array().map_or(&[][..], Vec::as_slice);
        let text = |v: &Value, key: &str| v[key].as_str().unwrap_or_default().to_owned();
        let variables = list("variables")
            .iter()
            .map(|v| Ok((text(v, "name"), compiled(&text(v, "expression"))?)))
            .collect::<Result<_, String>>()?;
        let validations = list("validations")
            .iter()
            .map(|v| {
                let message = match v["messageExpression"].as_str() {
                    Some(m) if !m.trim().is_empty() => Some(compiled(m)?),
                    _ => None,
                };
                Ok((compiled(&text(v, "expression"))?, message))
            })
            .collect::<Result<_, String>>()?;
        let annotations = list("auditAnnotations")
            .iter()
            .map(|v| compiled(&text(v, "valueExpression")))
            .collect::<Result<_, String>>()?;
        Ok(Self {
            variables,
            validations,
            annotations,
        })
    }
}

/// The error refusing a write, in upstream's words and Status.
fn refusal(a: &Attributes<'_>, name: &str, bound: &Bound<'_>, denial: Denial) -> ApiError {
    let message = format!(
        "ValidatingAdmissionPolicy '{}' with binding '{}' denied request: {}",
        bound.policy_name(),
        bound.binding_name(),
        denial.message
    );
    let reason = if denial.reason.is_empty() {
        "Invalid"
    } else {
        &denial.reason
    };
    // Upstream's `reasonToCode`.
    let code = match reason {
        "Forbidden" => 403,
        "Unauthorized" => 401,
        "RequestEntityTooLarge" => 413,
        _ => 422,
    };
    let r = a.resource;
    ApiError::admission_refused(code, reason, (r.group, r.plural, name), &message)
}

#[async_trait]
impl Validating for ValidatingPolicies {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        !exempt(a)
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        let bindings = registry::preferred(GROUP, "validatingadmissionpolicybindings")
            .expect("policy bindings are served");
        let mut bindings = self.0.recent_list(bindings, None).await?;
        if bindings.is_empty() {
            return Ok(());
        }
        bindings.sort_by(|x, y| meta::name(x).cmp(meta::name(y)));
        let policies = registry::preferred(GROUP, "validatingadmissionpolicies")
            .expect("admission policies are served");
        let policies: HashMap<String, Value> = self
            .0
            .recent_list(policies, None)
            .await?
            .into_iter()
            .map(|p| (meta::name(&p).to_owned(), p))
            .collect();
        let mut refused = None;
        for binding in &bindings {
            let wanted = binding["spec"]["policyName"].as_str().unwrap_or_default();
            let Some(policy) = policies.get(wanted) else {
                continue;
            };
            let bound = Bound { policy, binding };
            let Some(seen) = self.matched(&bound, a, obj).await? else {
                continue;
            };
            let outcome = self.evaluate(&bound, seen, a, obj).await?;
            verdict.warnings.extend(outcome.warnings);
            verdict.audit.extend(outcome.audit);
            if let (None, Some(denial)) = (&refused, outcome.denial) {
                refused = Some(refusal(a, name_of(a, obj), &bound, denial));
            }
        }
        refused.map_or(Ok(()), Err)
    }
}
