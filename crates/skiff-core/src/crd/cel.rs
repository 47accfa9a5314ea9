//! `x-kubernetes-validations`: CEL rules over a schema node, `self`
//! bound to the value there and `oldSelf` to the stored one (transition
//! rules run only on updates), compiled once per definition, with the
//! libraries Kubernetes adds to CEL's standard one: the strings, lists
//! and math extensions, Kubernetes' list functions (`isSorted`, `sum`,
//! `min`, `max`, `indexOf`, `lastIndexOf`), regular expressions (`find`,
//! `findAll`) and the quantity, URL and IP libraries
//! ([`super::cel_libraries`]). A `messageExpression` words the refusal.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use cel::extractors::This;
pub use cel::Program;
use cel::{Context, Env, ExecutionError};
use serde_json::Value;

use super::cel_cost;
use crate::status::Cause;

/// The environment rules compile in.
fn env() -> &'static Arc<Env> {
    static ENV: OnceLock<Arc<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        for extension in [
            cel::extensions::strings,
            cel::extensions::lists,
            cel::extensions::math,
        ] {
            env.add_extension(extension)
                .expect("CEL's extensions register once");
        }
        Arc::new(env)
    })
}

/// A context for one evaluation: the environment, Kubernetes' functions.
pub(super) fn context() -> Context<'static, 'static> {
    let mut c = Context::with_env(env().clone());
    kubernetes_functions(&mut c).expect("Kubernetes' CEL functions register once");
    super::cel_libraries::register(&mut c).expect("Kubernetes' CEL libraries register once");
    c
}

/// Kubernetes' list and regex functions.
fn kubernetes_functions(c: &mut Context<'static, 'static>) -> Result<(), String> {
    let err = |e: cel::DeclarationError| e.to_string();
    c.add_function("isSorted", |This(l): This<Arc<Vec<cel::Value>>>| {
        l.windows(2).all(|w| w[0] <= w[1])
    })
    .map_err(err)?;
    c.add_function("sum", |This(l): This<Arc<Vec<cel::Value>>>| sum(&l))
        .map_err(err)?;
    c.add_function("min", |This(l): This<Arc<Vec<cel::Value>>>| {
        extreme(&l, std::cmp::Ordering::Less)
    })
    .map_err(err)?;
    c.add_function("max", |This(l): This<Arc<Vec<cel::Value>>>| {
        extreme(&l, std::cmp::Ordering::Greater)
    })
    .map_err(err)?;
    c.add_function(
        "find",
        |This(s): This<Arc<String>>, pattern: Arc<String>| -> Result<cel::Value, ExecutionError> {
            let re = regex(&pattern)?;
            Ok(cel::Value::String(Arc::new(
                re.find(&s)
                    .map(|m| m.as_str().to_owned())
                    .unwrap_or_default(),
            )))
        },
    )
    .map_err(err)?;
    c.add_function(
        "findAll",
        |This(s): This<Arc<String>>, pattern: Arc<String>| -> Result<cel::Value, ExecutionError> {
            let re = regex(&pattern)?;
            let found: Vec<cel::Value> = re
                .find_iter(&s)
                .map(|m| cel::Value::String(Arc::new(m.as_str().to_owned())))
                .collect();
            Ok(cel::Value::List(Arc::new(found)))
        },
    )
    .map_err(err)?;
    Ok(())
}

fn regex(pattern: &str) -> Result<regex::Regex, ExecutionError> {
    regex::Regex::new(pattern).map_err(|e| ExecutionError::function_error("regex", e.to_string()))
}

/// The sum of a list of numbers (0 for an empty one).
fn sum(list: &[cel::Value]) -> Result<cel::Value, ExecutionError> {
    let mut total = cel::Value::Int(0);
    for (i, v) in list.iter().enumerate() {
        total = match (i, &total, v) {
            (0, _, v) => v.clone(),
            (_, cel::Value::Int(a), cel::Value::Int(b)) => cel::Value::Int(
                a.checked_add(*b)
                    .ok_or_else(|| ExecutionError::function_error("sum", "integer overflow"))?,
            ),
            (_, cel::Value::UInt(a), cel::Value::UInt(b)) => cel::Value::UInt(
                a.checked_add(*b)
                    .ok_or_else(|| ExecutionError::function_error("sum", "integer overflow"))?,
            ),
            (_, cel::Value::Float(a), cel::Value::Float(b)) => cel::Value::Float(a + b),
            _ => {
                return Err(ExecutionError::function_error(
                    "sum",
                    "mixed or non-numeric list",
                ))
            }
        };
    }
    Ok(total)
}

/// The least (`Less`) or greatest (`Greater`) item of a non-empty list.
fn extreme(list: &[cel::Value], want: std::cmp::Ordering) -> Result<cel::Value, ExecutionError> {
    let mut best: Option<&cel::Value> = None;
    for v in list {
        best = match best {
            None => Some(v),
            Some(b) => match v.partial_cmp(b) {
                Some(o) if o == want => Some(v),
                Some(_) => Some(b),
                None => {
                    return Err(ExecutionError::function_error(
                        "min/max",
                        "items do not compare",
                    ))
                }
            },
        };
    }
    best.cloned()
        .ok_or_else(|| ExecutionError::function_error("min/max", "the list is empty"))
}

/// A rule's compile error, in words.
pub fn compile(rule: &str) -> Result<Program, String> {
    env().compile(rule).map_err(|e| e.to_string())
}

/// The most the expressions of one admission evaluation may cost
/// together (upstream's runtime budget).
pub const ADMISSION_BUDGET: u64 = 10_000_000;

/// The bindings one admission evaluation's expressions run with (a
/// webhook's match conditions, or a policy's expressions for one binding
/// and parameter): the request's values, then `variables`. Each
/// expression is charged its cost on these values, estimated before it
/// runs, to one budget; one that would pass it fails.
pub struct Activation<'v> {
    context: Context<'static, 'static>,
    values: Vec<(&'v str, &'v Value)>,
    /// The variables' values, as JSON, for estimates.
    variables: Value,
    budget: Cell<u64>,
}

impl<'v> Activation<'v> {
    pub fn new(values: &[(&'v str, &'v Value)]) -> Self {
        let mut context = context();
        for (name, value) in values {
            context.add_variable_from_value(*name, to_cel(value));
        }
        Self {
            context,
            values: values.to_vec(),
            variables: Value::Object(Default::default()),
            budget: Cell::new(ADMISSION_BUDGET),
        }
    }

    /// Binds `authorizer` to checks that `authorize` answers for the
    /// admission `request` ([`super::cel_authorizer`]).
    pub fn with_authorizer(
        &mut self,
        authorize: super::cel_authorizer::Authorize,
        request: &Value,
    ) -> Result<(), String> {
        super::cel_authorizer::register(&mut self.context, authorize, request)
    }

    /// Binds `variables.<name>` to what each program gives, in order, so
    /// that one may use those before it. One that fails (or costs more
    /// than is left) is left out: only an expression that uses it fails.
    pub fn with_variables<'p>(&mut self, named: impl IntoIterator<Item = (&'p str, &'p Program)>) {
        let mut variables: HashMap<String, cel::Value> = HashMap::new();
        for (name, program) in named {
            let Ok(value) = self.run(program) else {
                continue;
            };
            self.variables[name] = from_cel(&value);
            variables.insert(name.to_owned(), value);
            self.context
                .add_variable_from_value("variables", cel::Value::from(variables.clone()));
        }
        if variables.is_empty() {
            self.context
                .add_variable_from_value("variables", cel::Value::from(variables));
        }
    }

    /// Runs `program` once its cost is charged to the budget.
    fn run(&self, program: &Program) -> Result<cel::Value, String> {
        let mut values = self.values.clone();
        values.push(("variables", &self.variables));
        let left = self.budget.get();
        let Some(cost) = cel_cost::with_values(program.expression(), &values, left) else {
            self.budget.set(0);
            return Err("operation cancelled: actual cost limit exceeded".into());
        };
        self.budget.set(left - cost);
        program.execute(&self.context).map_err(|e| e.to_string())
    }

    /// Whether `program` holds; an error if it fails or gives no boolean.
    pub fn holds(&self, program: &Program) -> Result<bool, String> {
        match self.run(program)? {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!("the expression gave {other:?}, not a boolean")),
        }
    }

    /// The string `program` gives, none for `null`; an error otherwise.
    pub fn string(&self, program: &Program) -> Result<Option<String>, String> {
        match self.run(program)? {
            cel::Value::String(s) => Ok(Some(s.to_string())),
            cel::Value::Null => Ok(None),
            other => Err(format!("the expression gave {other:?}, not a string")),
        }
    }
}

/// The compiled rules of one schema, by their text and message expression.
#[derive(Default)]
pub struct Rules(HashMap<(String, String), Rule>);

/// A compiled rule, its message expression, and whether it compares with
/// the stored value.
struct Rule {
    program: Program,
    message: Option<Program>,
    transition: bool,
    /// Its worst case at its node, for one evaluation.
    worst: u64,
}

/// How a rule is known in [`Rules`].
fn key(rule: &Value) -> (String, String) {
    let text = |f: &str| rule[f].as_str().unwrap_or_default().to_owned();
    (text("rule"), text("messageExpression"))
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

    /// Runs the rules of schema node `s` on `v`, each charged to the
    /// object's `budget` before it runs; a rule that would cost too much
    /// stops them all, as upstream.
    pub fn check(
        &self,
        s: &Value,
        v: &Value,
        old: Option<&Value>,
        at: &str,
        budget: &Cell<Option<u64>>,
        causes: &mut Vec<Cause>,
    ) {
        let Some(rules) = s["x-kubernetes-validations"].as_array() else {
            return;
        };
        let mut context = context();
        context.add_variable_from_value("self", to_cel(v));
        let transitions = old.is_some();
        if let Some(o) = old {
            context.add_variable_from_value("oldSelf", to_cel(o));
        }
        for rule in rules {
            let text = rule["rule"].as_str().unwrap_or_default();
            let Some(Rule {
                program,
                message: message_expression,
                transition,
                worst,
            }) = self.0.get(&key(rule))
            else {
                continue;
            };
            if *transition && !transitions {
                continue;
            }
            let ty = s["type"].as_str().unwrap_or("object");
            let Some(left) = budget.get() else { return };
            // A trivial rule is charged its worst case without a look.
            let cost = if *worst <= TRIVIAL {
                Some(*worst)
            } else {
                cel_cost::on_value(program.expression(), v, old, cel_cost::CALL_LIMIT)
            };
            let refusal = match cost {
                None => Some(format!(
                    "'operation cancelled: actual cost limit exceeded': no further validation \
                     rules will be run due to call cost exceeds limit for rule: {text}"
                )),
                Some(cost) if cost > left => Some(
                    "validation failed due to running out of cost budget, no further \
                     validation rules will be run"
                        .to_owned(),
                ),
                Some(cost) => {
                    budget.set(Some(left - cost));
                    None
                }
            };
            if let Some(why) = refusal {
                budget.set(None);
                causes.push(Cause {
                    reason: "FieldValueInvalid",
                    field: at.trim_start_matches('.').to_owned(),
                    message: format!("Invalid value: {ty:?}: {why}"),
                });
                return;
            }
            let field = match rule["fieldPath"].as_str() {
                Some(p) if !p.is_empty() => format!("{at}{p}"),
                _ => at.to_owned(),
            };
            let field = field.trim_start_matches('.').to_owned();
            match program.execute(&context) {
                Ok(cel::Value::Bool(true)) => {}
                Ok(cel::Value::Bool(false)) => {
                    let worded =
                        message_expression
                            .as_ref()
                            .and_then(|m| match m.execute(&context) {
                                Ok(cel::Value::String(s)) if !s.trim().is_empty() => {
                                    Some(s.to_string())
                                }
                                _ => None,
                            });
                    let message = match (worded, rule["message"].as_str()) {
                        (Some(w), _) => w,
                        (None, Some(m)) if !m.is_empty() => m.to_owned(),
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

/// A worst case below which a rule is not estimated again on each value.
const TRIVIAL: u64 = 100;

fn collect(s: &Value, out: &mut HashMap<(String, String), Rule>) {
    let Some(map) = s.as_object() else { return };
    if let Some(rules) = map
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            let Ok(p) = compile(rule["rule"].as_str().unwrap_or_default()) else {
                continue;
            };
            let message = rule["messageExpression"]
                .as_str()
                .and_then(|m| compile(m).ok());
            let transition = p.references().has_variable("oldSelf");
            let worst = cel_cost::worst_case(p.expression(), s);
            out.insert(
                key(rule),
                Rule {
                    program: p,
                    message,
                    transition,
                    worst,
                },
            );
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

/// A CEL value as JSON (for estimates): bytes as a string, functions and
/// opaque values as null.
fn from_cel(v: &cel::Value) -> Value {
    match v {
        cel::Value::List(items) => Value::Array(items.iter().map(from_cel).collect()),
        cel::Value::Map(map) => Value::Object(
            map.map
                .iter()
                .map(|(k, v)| (cel_key(k), from_cel(v)))
                .collect(),
        ),
        cel::Value::Int(i) => Value::from(*i),
        cel::Value::UInt(u) => Value::from(*u),
        cel::Value::Float(f) => Value::from(*f),
        cel::Value::String(s) => Value::String(s.to_string()),
        cel::Value::Bytes(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        cel::Value::Bool(b) => Value::Bool(*b),
        _ => Value::Null,
    }
}

fn cel_key(k: &cel::objects::Key) -> String {
    match k {
        cel::objects::Key::String(s) => s.to_string(),
        cel::objects::Key::Int(i) => i.to_string(),
        cel::objects::Key::Uint(u) => u.to_string(),
        cel::objects::Key::Bool(b) => b.to_string(),
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
