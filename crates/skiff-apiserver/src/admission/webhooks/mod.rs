//! Admission webhooks, as upstream's `MutatingAdmissionWebhook` and
//! `ValidatingAdmissionWebhook`: a write that a configured webhook's
//! rules and selectors match is sent to it as an `AdmissionReview`. A
//! validating webhook may refuse it (all are asked at once); a mutating
//! one may also patch it, and runs again (`reinvocationPolicy:
//! IfNeeded`) when a later one changed the object. Both may warn. A
//! webhook whose match conditions (CEL) do not all hold is not asked; one
//! whose rules name another version of the resource sees the write in
//! that version (`matchPolicy: Equivalent`). A webhook that cannot be
//! reached refuses the write or lets it pass, as its `failurePolicy`
//! says. Webhook configurations themselves are never sent to webhooks, so
//! a broken one can be removed.

mod call;
pub(super) mod rules;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use async_trait::async_trait;
use base64::Engine;
use serde_json::{json, Value};
use skiff_core::crd::cel;
use skiff_core::crd::cel_authorizer::Authorize;
use skiff_core::registry::{self, ResourceType};
use skiff_core::{meta, ApiError};

use super::{Attributes, Mutating, Operation, Validating, Verdict};
use crate::authz::Authorizer;
use crate::storage::{self, Objects};
use rules::Seen;

const GROUP: &str = "admissionregistration.k8s.io";

/// One webhook of a configuration, and how it sees the write at hand.
struct Hook {
    spec: Value,
    seen: Seen,
}

impl Hook {
    fn name(&self) -> &str {
        self.spec["name"].as_str().unwrap_or_default()
    }

    fn fails_open(&self) -> bool {
        self.spec["failurePolicy"] == "Ignore"
    }
}

/// The webhooks of every configuration of `plural`, configurations in
/// name order, as upstream calls them.
async fn hooks(objects: &Objects, plural: &str) -> Result<Vec<Hook>, ApiError> {
    let r = registry::preferred(GROUP, plural).expect("webhook configurations are served");
    let mut configs = objects.recent_list(r, None).await?;
    configs.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
    Ok(configs
        .into_iter()
        .flat_map(|mut c| match c["webhooks"].take() {
            Value::Array(list) => list,
            _ => Vec::new(),
        })
        .map(|spec| Hook {
            spec,
            seen: Seen::AsMade,
        })
        .collect())
}

/// Writes no webhook or admission policy sees: of their own
/// configurations.
pub(super) fn exempt(a: &Attributes<'_>) -> bool {
    a.resource.group == GROUP && !a.resource.custom
}

/// The webhooks of `plural` that `a` (of `obj`) is for.
async fn matching(
    objects: &Objects,
    plural: &str,
    a: &Attributes<'_>,
    obj: &Value,
) -> Result<Vec<Hook>, ApiError> {
    if exempt(a) {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for mut hook in hooks(objects, plural).await? {
        let Some(seen) = rules::matches(&hook.spec, a) else {
            continue;
        };
        if rules::selected(objects, &hook.spec, a, obj).await? {
            hook.seen = seen;
            out.push(hook);
        }
    }
    Ok(out)
}

/// The review of `a` for `hook`, of `obj` and `old` as the hook sees
/// them.
fn review(
    hook: &Hook,
    a: &Attributes<'_>,
    (obj, old): (&Value, Option<&Value>),
    uid: &str,
) -> Value {
    let versions = hook.spec["admissionReviewVersions"].as_array();
    let version = versions
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .find(|v| skiff_core::validate::webhooks::REVIEW_VERSIONS.contains(v))
        .unwrap_or("v1");
    let request = request(hook.seen, a, (obj, old), uid);
    json!({"apiVersion": format!("admission.k8s.io/{version}"), "kind": "AdmissionReview", "request": request})
}

/// The `AdmissionRequest` of `a`, of `obj` and `old` as they are `seen`.
pub(super) fn request(
    seen: Seen,
    a: &Attributes<'_>,
    (obj, old): (&Value, Option<&Value>),
    uid: &str,
) -> Value {
    let made = a.resource;
    let r = match seen {
        Seen::AsMade => made,
        Seen::As(equivalent) => equivalent,
    };
    let operation = rules::operation(a.operation);
    let (object, old) = match a.operation {
        Operation::Delete => (Value::Null, old.cloned().unwrap_or_else(|| obj.clone())),
        Operation::Update => (obj.clone(), old.cloned().unwrap_or(Value::Null)),
        Operation::Create | Operation::Connect => (obj.clone(), Value::Null),
    };
    let options = |kind: &str| json!({"apiVersion": "meta.k8s.io/v1", "kind": kind});
    let options = match a.operation {
        Operation::Create => options("CreateOptions"),
        Operation::Update => options("UpdateOptions"),
        Operation::Delete => options("DeleteOptions"),
        // The connect options are the object itself.
        Operation::Connect => Value::Null,
    };
    // Through a subresource, the kind is of the object sent there (a
    // Scale, an Eviction, the PodExecOptions of a CONNECT).
    let sent = match (
        a.subresource,
        obj["apiVersion"].as_str(),
        obj["kind"].as_str(),
    ) {
        (Some(_), Some(api_version), Some(kind)) => {
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            Some(json!({"group": group, "version": version, "kind": kind}))
        }
        _ => None,
    };
    let kind_of =
        |r: &ResourceType| json!({"group": r.group, "version": r.version, "kind": r.kind});
    let resource_of =
        |r: &ResourceType| json!({"group": r.group, "version": r.version, "resource": r.plural});
    // A write seen in another version is of the object or its status.
    let (kind, request_kind) = match (sent, seen) {
        (Some(sent), Seen::AsMade) => (sent.clone(), sent),
        _ => (kind_of(r), kind_of(made)),
    };
    // A connection is named by its pod.
    let named = match (a.operation, a.old) {
        (Operation::Connect, Some(pod)) => pod.clone(),
        _ if obj.is_null() => old.clone(),
        _ => obj.clone(),
    };
    let mut request = json!({
        "uid": uid,
        "kind": kind, "resource": resource_of(r),
        "requestKind": request_kind, "requestResource": resource_of(made),
        "name": meta::name(&named),
        "operation": operation,
        "userInfo": {"username": a.user.name, "groups": a.user.groups},
        "object": object, "oldObject": old,
        "dryRun": a.dry_run,
        "options": options,
    });
    let ns = a.namespace.or_else(|| meta::get_str(&named, "namespace"));
    if let Some(ns) = ns.filter(|n| !n.is_empty()) {
        request["namespace"] = json!(ns);
    }
    if let Some(sub) = a.subresource {
        request["subResource"] = json!(sub);
        request["requestSubResource"] = json!(sub);
    }
    request
}

/// What a webhook answered; none if its match conditions pass the
/// request by, or its failure policy lets a failure pass.
async fn ask(
    (objects, authorizer): (&Objects, &Arc<dyn Authorizer>),
    hook: &Hook,
    a: &Attributes<'_>,
    seen: (&Value, Option<&Value>),
) -> Result<Option<Value>, ApiError> {
    let uid = uuid::Uuid::new_v4().to_string();
    let review = review(hook, a, seen, &uid);
    let authorize = super::cel_authorizer::for_request(authorizer.clone(), a.user);
    let answer = match conditions_hold(hook, &review["request"], authorize) {
        Ok(false) => return Ok(None),
        Ok(true) => call::post(objects, &hook.spec, &review, &uid).await,
        Err(e) => Err(format!("failed evaluating match conditions: {e}")),
    };
    match answer {
        Ok(response) => Ok(Some(response)),
        Err(e) if hook.fails_open() => {
            tracing::warn!(webhook = hook.name(), error = %e, "webhook failed; its failurePolicy lets the request pass");
            Ok(None)
        }
        Err(e) => Err(ApiError::internal(format!(
            "Internal error occurred: failed calling webhook {:?}: {e}",
            hook.name()
        ))),
    }
}

/// The write's object and the one it replaces, as they are `seen` (in
/// the version a hook's rules name, with `matchPolicy: Equivalent`).
pub(super) fn as_seen<'v>(
    seen: Seen,
    a: &Attributes<'v>,
    obj: &'v Value,
) -> Result<(Cow<'v, Value>, Option<Cow<'v, Value>>), ApiError> {
    let old = a.old.filter(|_| a.operation != Operation::Connect);
    match seen {
        Seen::AsMade => Ok((Cow::Borrowed(obj), old.map(Cow::Borrowed))),
        Seen::As(seen) => {
            let convert = |o: &Value| storage::convert(a.resource, seen, o).map(Cow::Owned);
            let shown = if obj.is_null() {
                Cow::Borrowed(obj)
            } else {
                convert(obj)?
            };
            Ok((shown, old.map(convert).transpose()?))
        }
    }
}

/// Match conditions compiled so far, by their text: a condition is
/// compiled once, not at every write it is asked about.
static PROGRAMS: LazyLock<Mutex<HashMap<String, Arc<cel::Program>>>> =
    LazyLock::new(Default::default);

/// The most compiled conditions kept; beyond, the cache starts over.
const MAX_PROGRAMS: usize = 1024;

/// `expression`, compiled once.
pub(super) fn compiled(expression: &str) -> Result<Arc<cel::Program>, String> {
    let programs = || PROGRAMS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(program) = programs().get(expression) {
        return Ok(program.clone());
    }
    let program = Arc::new(cel::compile(expression)?);
    let mut all = programs();
    if all.len() >= MAX_PROGRAMS {
        all.clear();
    }
    all.insert(expression.to_owned(), program.clone());
    Ok(program)
}

/// Whether every match condition of `hook` holds for `request` (with
/// `object` and `oldObject` bound, as upstream binds them): false as soon
/// as one is false, else an error if one could not be evaluated.
fn conditions_hold(hook: &Hook, request: &Value, authorize: Authorize) -> Result<bool, String> {
    // One budget for all of a webhook's conditions, as upstream's.
    let mut activation = cel::Activation::new(&[
        ("object", &request["object"]),
        ("oldObject", &request["oldObject"]),
        ("request", request),
    ]);
    activation.with_authorizer(authorize, request)?;
    match_conditions_hold(&hook.spec["matchConditions"], &activation)
}

/// Whether every one of `conditions` (a webhook's or an admission
/// policy's `matchConditions`) holds: false as soon as one is false,
/// else an error if one could not be evaluated.
pub(super) fn match_conditions_hold(
    conditions: &Value,
    activation: &cel::Activation<'_>,
) -> Result<bool, String> {
    let mut errors = Vec::new();
    for condition in conditions.as_array().into_iter().flatten() {
        let expression = condition["expression"].as_str().unwrap_or_default();
        let held = compiled(expression).and_then(|p| activation.holds(&p));
        match held {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => errors.push(format!(
                "expression {:?} resulted in error: {e}",
                condition["name"].as_str().unwrap_or_default()
            )),
        }
    }
    if errors.is_empty() {
        Ok(true)
    } else {
        Err(errors.join("; "))
    }
}

/// The error for a webhook's refusal, in upstream's words.
fn denial(hook: &Hook, response: &Value) -> ApiError {
    let status = &response["status"];
    let by = format!("admission webhook {:?} denied the request", hook.name());
    let message = match (status["message"].as_str(), status["reason"].as_str()) {
        (Some(m), _) if !m.is_empty() => format!("{by}: {m}"),
        (_, Some(r)) if !r.is_empty() => format!("{by}: {r}"),
        _ => format!("{by} without explanation"),
    };
    let code = status["code"].as_u64().filter(|c| *c >= 400).unwrap_or(400);
    let code = u16::try_from(code).unwrap_or(400);
    ApiError::refused(code, status["reason"].as_str().unwrap_or_default(), message)
}

/// The validating webhooks.
pub struct ValidatingWebhooks(pub Objects, pub Arc<dyn Authorizer>);

#[async_trait]
impl Validating for ValidatingWebhooks {
    fn handles(&self, a: &Attributes<'_>) -> bool {
        !exempt(a)
    }

    async fn validate(
        &self,
        a: &Attributes<'_>,
        obj: &Value,
        verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        // All at once, as upstream calls them; the first refusal (in
        // configuration order) is the answer.
        let hooks = matching(&self.0, "validatingwebhookconfigurations", a, obj).await?;
        let asked = hooks.iter().map(|hook| async move {
            let (obj, old) = as_seen(hook.seen, a, obj)?;
            ask((&self.0, &self.1), hook, a, (&obj, old.as_deref())).await
        });
        let answers = futures::future::join_all(asked).await;
        for (hook, answer) in hooks.iter().zip(answers) {
            let Some(response) = answer? else {
                continue;
            };
            if response["allowed"] != true {
                return Err(denial(hook, &response));
            }
            told(hook, &response, verdict);
        }
        Ok(())
    }
}

/// A webhook's warnings and audit annotations (keyed by its name).
fn told(hook: &Hook, response: &Value, verdict: &mut Verdict) {
    let warnings = response["warnings"].as_array().into_iter().flatten();
    verdict
        .warnings
        .extend(warnings.filter_map(Value::as_str).map(str::to_owned));
    let audit = response["auditAnnotations"]
        .as_object()
        .into_iter()
        .flatten();
    for (k, v) in audit {
        let value = v.as_str().unwrap_or_default().to_owned();
        verdict.audit.push((format!("{}/{k}", hook.name()), value));
    }
}

/// The mutating webhooks.
pub struct MutatingWebhooks(pub Objects, pub Arc<dyn Authorizer>);

impl MutatingWebhooks {
    /// Calls `hook` and applies its patch; whether it changed `obj`.
    async fn mutate(
        &self,
        hook: &Hook,
        a: &Attributes<'_>,
        obj: &mut Value,
        verdict: &mut Verdict,
    ) -> Result<bool, ApiError> {
        let (shown, shown_old) = as_seen(hook.seen, a, obj)?;
        let seen: (&Value, _) = (&shown, shown_old.as_deref());
        let Some(response) = ask((&self.0, &self.1), hook, a, seen).await? else {
            return Ok(false);
        };
        if response["allowed"] != true {
            return Err(denial(hook, &response));
        }
        told(hook, &response, verdict);
        let Some(encoded) = response["patch"].as_str() else {
            return Ok(false);
        };
        let failed = |why: String| {
            ApiError::internal(format!(
                "Internal error occurred: failed calling webhook {:?}: {why}",
                hook.name()
            ))
        };
        if response["patchType"] != "JSONPatch" {
            return Err(failed(format!(
                "unsupported patch type {}: only JSONPatch is",
                response["patchType"]
            )));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| failed(format!("the patch is not base64: {e}")))?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("the patch is not a JSON patch: {e}")))?;
        let mut patched = shown.into_owned();
        json_patch::patch(&mut patched, &patch)
            .map_err(|e| failed(format!("the patch does not apply: {e}")))?;
        // Back in the version the write was made in.
        if let Seen::As(seen) = hook.seen {
            patched = storage::convert(seen, a.resource, &patched)?;
        }
        // The object stays the one the request is for.
        for key in ["name", "namespace", "uid"] {
            let was = meta::get_str(obj, key).unwrap_or_default();
            if (!was.is_empty() || key == "namespace")
                && meta::get_str(&patched, key).unwrap_or_default() != was
            {
                return Err(ApiError::bad_request(format!(
                    "admission webhook {:?} may not change metadata.{key}",
                    hook.name()
                )));
            }
        }
        let changed = patched != *obj;
        *obj = patched;
        Ok(changed)
    }
}

#[async_trait]
impl Mutating for MutatingWebhooks {
    async fn admit(
        &self,
        a: &Attributes<'_>,
        obj: &mut Value,
        verdict: &mut Verdict,
    ) -> Result<(), ApiError> {
        if a.operation == Operation::Delete {
            return Ok(());
        }
        let hooks = matching(&self.0, "mutatingwebhookconfigurations", a, obj).await?;
        let mut last_change = None;
        for (i, hook) in hooks.iter().enumerate() {
            if self.mutate(hook, a, obj, verdict).await? {
                last_change = Some(i);
            }
        }
        // Once more, for those that asked, if a later one changed the
        // object after them.
        let Some(last) = last_change else {
            return Ok(());
        };
        for hook in hooks[..last]
            .iter()
            .filter(|h| h.spec["reinvocationPolicy"] == "IfNeeded")
        {
            self.mutate(hook, a, obj, verdict).await?;
        }
        Ok(())
    }
}
