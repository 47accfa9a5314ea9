//! Structural schemas (the `openAPIV3Schema` of a definition's version):
//! the definition-time check, pruning of unknown fields, defaulting, and
//! validation of an object with upstream's messages.

use serde_json::{Map, Value};

use super::cel::Rules;
use super::cel_cost;
use crate::status::Cause;

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

fn flag(s: &Value, name: &str) -> bool {
    s[name].as_bool().unwrap_or(false)
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

/// Checks that a schema is structural (every node says its type, or that
/// it is int-or-string, or keeps unknown fields; the root is an object),
/// that its rules compile, and that they stay within their cost limits
/// ([`super::cel_cost`]) unless `costed` is false (a version's schema an
/// update leaves as it was stored: upstream lets an accepted definition
/// be updated whatever its rules' estimates have become).
pub fn check_root(s: &Value, at: &str, costed: bool, causes: &mut Vec<Cause>) {
    let ty = s["type"].as_str().unwrap_or("");
    if s.is_object() && ty != "object" {
        causes.push(Cause::invalid(
            join(at, "type"),
            ty,
            "must be object at the root",
        ));
    }
    let mut costs = Vec::new();
    check(s, at, 1, &mut costs, causes);
    if !costed {
        return;
    }
    for rule in costs.iter().filter(|r| r.cost > cel_cost::RULE_LIMIT) {
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: rule.field.clone(),
            message: format!(
                "Forbidden: {}",
                cel_cost::over_budget(rule.what, rule.cost, cel_cost::RULE_LIMIT)
            ),
        });
    }
    let total = costs
        .iter()
        .fold(0u64, |sum, rule| sum.saturating_add(rule.cost));
    if total > cel_cost::SCHEMA_LIMIT {
        // Upstream names the four costliest rules of at least 1 % of the limit.
        costs.retain(|rule| rule.cost >= cel_cost::SCHEMA_LIMIT / 100);
        costs.sort_by_key(|rule| std::cmp::Reverse(rule.cost));
        for rule in costs.into_iter().take(4) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: rule.field,
                message:
                    "Forbidden: contributed to estimated rule cost total exceeding cost limit \
                          for entire OpenAPIv3 schema"
                        .into(),
            });
        }
        causes.push(Cause {
            reason: "FieldValueForbidden",
            field: at.to_owned(),
            message: format!(
                "Forbidden: {}",
                cel_cost::over_budget(
                    "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                    total,
                    cel_cost::SCHEMA_LIMIT
                )
            ),
        });
    }
}

/// A rule's (or message expression's) estimate, times the occurrences
/// of its node.
struct RuleCost {
    field: String,
    /// How upstream names it in a refusal.
    what: &'static str,
    cost: u64,
}

/// One node of [`check_root`]; `occurs` is how often the node can occur
/// in one object.
fn check(s: &Value, at: &str, occurs: u64, costs: &mut Vec<RuleCost>, causes: &mut Vec<Cause>) {
    let Some(map) = s.as_object() else {
        causes.push(Cause::invalid(at, "", "must be an object"));
        return;
    };
    let ty = map.get("type").and_then(Value::as_str).unwrap_or("");
    let open =
        flag(s, "x-kubernetes-int-or-string") || flag(s, "x-kubernetes-preserve-unknown-fields");
    if ty.is_empty() && !open {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: join(at, "type"),
            message: "Required value: must not be empty for specified object fields".into(),
        });
    } else if !ty.is_empty() && !TYPES.contains(&ty) {
        causes.push(Cause::unsupported(join(at, "type"), ty, TYPES));
    }
    if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
        if regex::Regex::new(pattern).is_err() {
            causes.push(Cause::invalid(
                join(at, "pattern"),
                pattern,
                "must be a valid regular expression",
            ));
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            check(
                p,
                &format!("{at}.properties[{name}]"),
                occurs,
                costs,
                causes,
            );
        }
    }
    if let Some(items) = map.get("items") {
        let occurs = cel_cost::occurrences(occurs, s);
        check(items, &join(at, "items"), occurs, costs, causes);
    } else if ty == "array" {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: join(at, "items"),
            message: "Required value: must be specified".into(),
        });
    }
    if let Some(extra) = map.get("additionalProperties").filter(|a| a.is_object()) {
        if map.contains_key("properties") {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: join(at, "additionalProperties"),
                message: "Forbidden: additionalProperties and properties are mutual exclusive"
                    .into(),
            });
        }
        let occurs = cel_cost::occurrences(occurs, s);
        check(
            extra,
            &join(at, "additionalProperties"),
            occurs,
            costs,
            causes,
        );
    }
    if let Some(rules) = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for (i, rule) in rules.iter().enumerate() {
            let here = format!("{at}.x-kubernetes-validations[{i}]");
            for (field, what, failed) in [
                ("rule", "estimated rule cost", "compilation failed"),
                (
                    "messageExpression",
                    "estimated messageExpression cost",
                    "messageExpression compilation failed",
                ),
            ] {
                let Some(text) = rule[field].as_str() else {
                    continue;
                };
                let field = format!("{here}.{field}");
                match super::cel::compile(text) {
                    Err(e) => causes.push(Cause::invalid(&field, text, format!("{failed}: {e}"))),
                    Ok(program) => costs.push(RuleCost {
                        field,
                        what,
                        cost: cel_cost::worst_case(program.expression(), s).saturating_mul(occurs),
                    }),
                }
            }
        }
    }
}

/// Drops fields the schema does not know, listing their paths;
/// `apiVersion`, `kind` and `metadata` stay at the root.
pub fn prune_root(obj: &mut Value, s: &Value, unknown: &mut Vec<String>) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let meta = ["apiVersion", "kind", "metadata"];
    let kept: Vec<(String, Value)> = meta
        .iter()
        .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
        .collect();
    prune(obj, s, "", unknown);
    if let Some(map) = obj.as_object_mut() {
        map.extend(kept);
    }
}

fn prune(v: &mut Value, s: &Value, at: &str, unknown: &mut Vec<String>) {
    if flag(s, "x-kubernetes-embedded-resource") {
        // apiVersion, kind and metadata of an embedded object are its own.
        let Some(map) = v.as_object_mut() else { return };
        let kept: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
            .iter()
            .filter_map(|k| map.remove(*k).map(|v| (k.to_string(), v)))
            .collect();
        prune_inner(v, s, at, unknown);
        if let Some(map) = v.as_object_mut() {
            map.extend(kept);
        }
        return;
    }
    prune_inner(v, s, at, unknown);
}

fn prune_inner(v: &mut Value, s: &Value, at: &str, unknown: &mut Vec<String>) {
    let keep_unknown = flag(s, "x-kubernetes-preserve-unknown-fields");
    match v {
        Value::Object(map) => {
            let props = s["properties"].as_object();
            let extra = s.get("additionalProperties");
            if let Some(extra) = extra.filter(|e| e.is_object()) {
                for (k, child) in map.iter_mut() {
                    prune(child, extra, &join(at, k), unknown);
                }
                return;
            }
            if extra == Some(&Value::Bool(true)) {
                return;
            }
            let mut gone = Vec::new();
            for (k, child) in map.iter_mut() {
                match props.and_then(|p| p.get(k)) {
                    Some(ps) => prune(child, ps, &join(at, k), unknown),
                    None if keep_unknown => {}
                    None => gone.push(k.clone()),
                }
            }
            for k in gone {
                map.remove(&k);
                unknown.push(join(at, &k));
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item, is, &format!("{at}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Fills in the schema's defaults where fields are absent.
pub fn default(v: &mut Value, s: &Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = s["properties"].as_object() {
                for (k, ps) in props {
                    if !map.contains_key(k) {
                        if let Some(d) = ps.get("default") {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(k) {
                        default(child, ps);
                    }
                }
            } else if let Some(extra) = s.get("additionalProperties").filter(|e| e.is_object()) {
                for child in map.values_mut() {
                    default(child, extra);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for item in items {
                    default(item, is);
                }
            }
        }
        _ => {}
    }
}

/// The type name upstream shows for a value.
fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How a value appears after "Invalid value:": strings quoted, numbers
/// and booleans bare, objects and arrays by type.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(_) | Value::Bool(_) | Value::Null => v.to_string(),
        other => format!("{:?}", type_of(other)),
    }
}

fn invalid(at: &str, v: &Value, why: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: at.to_owned(),
        message: format!("Invalid value: {}: {why}", shown(v)),
    }
}

fn in_body(at: &str) -> String {
    if at.is_empty() {
        "body".to_owned()
    } else {
        format!("{at} in body")
    }
}

/// Validation of one object, with the rules compiled for its schema and
/// the stored object for transition rules.
pub struct Checked<'a> {
    rules: &'a Rules,
    old: Option<&'a Value>,
    /// What the object's rules may still cost; `None` once they stopped.
    budget: std::cell::Cell<Option<u64>>,
}

impl<'a> Checked<'a> {
    pub fn new(rules: &'a Rules, old: Option<&'a Value>) -> Self {
        Self {
            rules,
            old,
            budget: std::cell::Cell::new(Some(cel_cost::OBJECT_BUDGET)),
        }
    }

    /// Validates a whole object (its metadata is the API server's).
    pub fn root(&self, obj: &Value, s: &Value, causes: &mut Vec<Cause>) {
        self.node(obj, self.old, s, "", causes);
    }

    fn node(&self, v: &Value, old: Option<&Value>, s: &Value, at: &str, causes: &mut Vec<Cause>) {
        if v.is_null() && flag(s, "nullable") {
            return;
        }
        let before = causes.len();
        self.shape(v, old, s, at, causes);
        for key in ["allOf", "anyOf", "oneOf"] {
            let Some(subs) = s[key].as_array() else {
                continue;
            };
            let passing = subs
                .iter()
                .filter(|sub| {
                    let mut c = Vec::new();
                    self.shape(v, None, sub, at, &mut c);
                    c.is_empty()
                })
                .count();
            let ok = match key {
                "allOf" => passing == subs.len(),
                "anyOf" => passing > 0,
                _ => passing == 1,
            };
            if !ok {
                let why = match key {
                    "allOf" => "must validate all the schemas (allOf)",
                    "anyOf" => "must validate at least one schema (anyOf)",
                    _ => "must validate one and only one schema (oneOf)",
                };
                causes.push(invalid(at, v, format!("{} {why}", in_body(at))));
            }
        }
        if let Some(not) = s.get("not") {
            let mut c = Vec::new();
            self.shape(v, None, not, at, &mut c);
            if c.is_empty() {
                causes.push(invalid(
                    at,
                    v,
                    format!("{} must not validate the schema (not)", in_body(at)),
                ));
            }
        }
        // Rules run only on values whose shape is right, as upstream.
        if causes.len() == before {
            self.rules.check(s, v, old, at, &self.budget, causes);
        }
    }

    /// Type, format and bounds of one value, then its children.
    fn shape(&self, v: &Value, old: Option<&Value>, s: &Value, at: &str, causes: &mut Vec<Cause>) {
        let ty = s["type"].as_str().unwrap_or("");
        let int_or_string = flag(s, "x-kubernetes-int-or-string");
        let actual = type_of(v);
        let fits = match ty {
            _ if int_or_string => matches!(actual, "integer" | "string"),
            "" => true,
            "number" => matches!(actual, "integer" | "number"),
            "integer" => actual == "integer" || v.as_f64().is_some_and(|f| f.fract() == 0.0),
            t => t == actual,
        };
        if !fits {
            let wanted = if int_or_string { "integer,string" } else { ty };
            causes.push(invalid(
                at,
                &Value::String(actual.into()),
                format!("{} must be of type {wanted}: {:?}", in_body(at), actual),
            ));
            return;
        }
        if let Some(allowed) = s["enum"].as_array() {
            if !allowed.contains(v) {
                let list: Vec<String> = allowed.iter().map(shown).collect();
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: at.to_owned(),
                    message: format!(
                        "Unsupported value: {}: supported values: {}",
                        shown(v),
                        list.join(", ")
                    ),
                });
            }
        }
        match v {
            Value::String(text) => self.string(text, v, s, at, causes),
            Value::Number(_) => number(v, s, at, causes),
            Value::Array(items) => self.array(items, v, old, s, at, causes),
            Value::Object(map) => self.object(map, v, old, s, at, causes),
            _ => {}
        }
    }

    fn string(&self, text: &str, v: &Value, s: &Value, at: &str, causes: &mut Vec<Cause>) {
        let chars = text.chars().count() as u64;
        if let Some(min) = s["minLength"].as_u64().filter(|m| chars < *m) {
            causes.push(invalid(
                at,
                v,
                format!("{} should be at least {min} chars long", in_body(at)),
            ));
        }
        if let Some(max) = s["maxLength"].as_u64().filter(|m| chars > *m) {
            causes.push(Cause {
                reason: "FieldValueTooLong",
                field: at.to_owned(),
                message: format!("Too long: may not be more than {max} bytes"),
            });
        }
        if let Some(pattern) = s["pattern"].as_str() {
            if regex::Regex::new(pattern).is_ok_and(|re| !re.is_match(text)) {
                causes.push(invalid(
                    at,
                    v,
                    format!("{} should match '{pattern}'", in_body(at)),
                ));
            }
        }
        if let Some(format) = s["format"].as_str() {
            if !formatted(format, text) {
                causes.push(invalid(
                    at,
                    v,
                    format!("{} must be of type {format}: {text:?}", in_body(at)),
                ));
            }
        }
    }

    fn array(
        &self,
        items: &[Value],
        v: &Value,
        old: Option<&Value>,
        s: &Value,
        at: &str,
        causes: &mut Vec<Cause>,
    ) {
        let n = items.len() as u64;
        if let Some(min) = s["minItems"].as_u64().filter(|m| n < *m) {
            causes.push(invalid(
                at,
                v,
                format!("{} should have at least {min} items", in_body(at)),
            ));
        }
        if let Some(max) = s["maxItems"].as_u64().filter(|m| n > *m) {
            causes.push(Cause::too_many(at, n as usize, max as usize));
        }
        let list_type = s["x-kubernetes-list-type"].as_str().unwrap_or("");
        let keys: Vec<&str> = s["x-kubernetes-list-map-keys"]
            .as_array()
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let identity = |item: &Value| -> Value {
            if list_type == "map" {
                Value::Array(keys.iter().map(|k| item[*k].clone()).collect())
            } else {
                item.clone()
            }
        };
        if flag(s, "uniqueItems") || matches!(list_type, "set" | "map") {
            for (i, item) in items.iter().enumerate() {
                let id = identity(item);
                if items[..i].iter().any(|o| identity(o) == id) {
                    let shown_id = if list_type == "map" {
                        keys.iter()
                            .map(|k| format!("{{\"{k}\":{}}}", item[*k]))
                            .collect::<Vec<_>>()
                            .join(",")
                    } else {
                        shown(item)
                    };
                    causes.push(Cause {
                        reason: "FieldValueDuplicate",
                        field: format!("{at}[{i}]"),
                        message: format!("Duplicate value: {shown_id}"),
                    });
                }
            }
        }
        let Some(is) = s.get("items") else { return };
        let old_items = old.and_then(Value::as_array);
        for (i, item) in items.iter().enumerate() {
            // Transition rules follow list-map entries by their keys.
            let before = match (list_type, old_items) {
                ("map", Some(olds)) => olds.iter().find(|o| identity(o) == identity(item)),
                _ => None,
            };
            self.node(item, before, is, &format!("{at}[{i}]"), causes);
        }
    }

    fn object(
        &self,
        map: &Map<String, Value>,
        v: &Value,
        old: Option<&Value>,
        s: &Value,
        at: &str,
        causes: &mut Vec<Cause>,
    ) {
        // The root's apiVersion, kind and metadata are the API server's.
        let own =
            |name: &str| !(at.is_empty() && matches!(name, "apiVersion" | "kind" | "metadata"));
        for name in s["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|n| own(n))
        {
            if !map.contains_key(name) {
                causes.push(Cause::required(join(at, name)));
            }
        }
        let n = map.keys().filter(|k| own(k)).count() as u64;
        if let Some(min) = s["minProperties"].as_u64().filter(|m| n < *m) {
            causes.push(invalid(
                at,
                v,
                format!("{} should have at least {min} properties", in_body(at)),
            ));
        }
        if let Some(max) = s["maxProperties"].as_u64().filter(|m| n > *m) {
            causes.push(Cause::too_many(at, n as usize, max as usize));
        }
        if flag(s, "x-kubernetes-embedded-resource") {
            for field in ["apiVersion", "kind"] {
                if map
                    .get(field)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push(Cause::required(join(at, field)));
                }
            }
        }
        let props = s["properties"].as_object();
        let extra = s.get("additionalProperties").filter(|e| e.is_object());
        for (k, child) in map.iter().filter(|(k, _)| own(k)) {
            let child_schema = match (props.and_then(|p| p.get(k)), extra) {
                (Some(ps), _) => ps,
                (None, Some(e)) => e,
                _ => continue,
            };
            let before = old.and_then(|o| o.get(k));
            self.node(child, before, child_schema, &join(at, k), causes);
        }
    }
}

fn number(v: &Value, s: &Value, at: &str, causes: &mut Vec<Cause>) {
    let Some(x) = v.as_f64() else { return };
    if let Some(min) = s["minimum"].as_f64() {
        let exclusive = flag(s, "exclusiveMinimum");
        if x < min || (exclusive && x == min) {
            let how = if exclusive {
                "greater than"
            } else {
                "greater than or equal to"
            };
            causes.push(invalid(
                at,
                v,
                format!("{} should be {how} {}", in_body(at), s["minimum"]),
            ));
        }
    }
    if let Some(max) = s["maximum"].as_f64() {
        let exclusive = flag(s, "exclusiveMaximum");
        if x > max || (exclusive && x == max) {
            let how = if exclusive {
                "less than"
            } else {
                "less than or equal to"
            };
            causes.push(invalid(
                at,
                v,
                format!("{} should be {how} {}", in_body(at), s["maximum"]),
            ));
        }
    }
    if let Some(m) = s["multipleOf"].as_f64().filter(|m| *m > 0.0) {
        if (x / m).fract() != 0.0 {
            causes.push(invalid(
                at,
                v,
                format!(
                    "{} should be a multiple of {}",
                    in_body(at),
                    s["multipleOf"]
                ),
            ));
        }
    }
}

/// The string formats upstream checks; others pass.
fn formatted(format: &str, text: &str) -> bool {
    match format {
        "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok(),
        "ipv4" => text.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => text.parse::<std::net::Ipv6Addr>().is_ok(),
        "uuid" => uuid_like(text),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok()
        }
        _ => true,
    }
}

fn uuid_like(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}
