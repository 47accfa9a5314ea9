//! `x-kubernetes-validations`: CEL rules over a schema node, `self`
//! bound to the value there and `oldSelf` to the stored one (transition
//! rules run only on updates), compiled once per definition.

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Program};
use serde_json::Value;

use crate::status::Cause;

/// A rule's compile error, in words.
pub fn compile(rule: &str) -> Result<Program, String> {
    Program::compile(rule).map_err(|e| e.to_string())
}

/// The compiled rules of one schema, by their text.
#[derive(Default)]
pub struct Rules(HashMap<String, Rule>);

/// A compiled rule, and whether it compares with the stored value.
struct Rule {
    program: Program,
    transition: bool,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Rules {
    /// Compiles every rule of a schema (a definition that stored it has
    /// had them checked).
    pub fn of(schema: &Value) -> Self {
        let mut out = HashMap::new();
        collect(schema, &mut out);
        Self(out)
    }

    /// Runs the rules of schema node `s` on `v`.
    pub fn check(
        &self,
        s: &Value,
        v: &Value,
        old: Option<&Value>,
        at: &str,
        causes: &mut Vec<Cause>,
    ) {
        let Some(rules) = s["x-kubernetes-validations"].as_array() else {
            return;
        };
        let value = to_cel(v);
        let old_value = old.map(to_cel);
        for rule in rules {
            let text = rule["rule"].as_str().unwrap_or_default();
            let Some(Rule {
                program,
                transition,
            }) = self.0.get(text)
            else {
                continue;
            };
            if *transition && old_value.is_none() {
                continue;
            }
            let mut context = Context::default();
            context.add_variable_from_value("self", value.clone());
            if let Some(o) = &old_value {
                context.add_variable_from_value("oldSelf", o.clone());
            }
            let field = match rule["fieldPath"].as_str() {
                Some(p) if !p.is_empty() => format!("{at}{p}"),
                _ => at.to_owned(),
            };
            let field = field.trim_start_matches('.').to_owned();
            let ty = s["type"].as_str().unwrap_or("object");
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    let message = match rule["message"].as_str() {
                        Some(m) if !m.is_empty() => m.to_owned(),
                        _ => format!("failed rule: {text}"),
                    };
                    let reason = match rule["reason"].as_str() {
                        Some("FieldValueForbidden") => "FieldValueForbidden",
                        Some("FieldValueRequired") => "FieldValueRequired",
                        Some("FieldValueDuplicate") => "FieldValueDuplicate",
                        _ => "FieldValueInvalid",
                    };
                    causes.push(Cause {
                        reason,
                        field,
                        message: format!("Invalid value: {ty:?}: {message}"),
                    });
                }
                Ok(other) => causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field,
                    message: format!(
                        "Invalid value: {ty:?}: rule {text:?} gave {other:?}, not a boolean"
                    ),
                }),
                Err(e) => causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field,
                    message: format!("Invalid value: {ty:?}: rule execution error: {e}"),
                }),
            }
        }
    }
}

fn collect(s: &Value, out: &mut HashMap<String, Rule>) {
    let Some(map) = s.as_object() else { return };
    if let Some(rules) = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for text in rules.iter().filter_map(|r| r["rule"].as_str()) {
            if let Ok(p) = compile(text) {
                let transition = p.references().has_variable("oldSelf");
                out.insert(
                    text.to_owned(),
                    Rule {
                        program: p,
                        transition,
                    },
                );
            }
        }
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        props.values().for_each(|p| collect(p, out));
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(child) = map.get(key) {
            collect(child, out);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(children) = map.get(key).and_then(Value::as_array) {
            children.iter().for_each(|c| collect(c, out));
        }
    }
}

/// A JSON value as CEL sees it: integers as `int`, objects as maps.
fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => match n.as_u64() {
                Some(u) => cel::Value::UInt(u),
                None => cel::Value::Float(n.as_f64().unwrap_or_default()),
            },
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let m: HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(m)
        }
    }
}
