//! What a CEL rule may cost, as upstream bounds it. When a definition
//! is written, each rule's worst case is estimated from its schema's size
//! bounds (`maxItems`, `maxProperties`, `maxLength`; unbounded sizes are
//! what fits in one 3 MiB request) and multiplied by the times its node
//! can occur in one object: a rule may cost at most
//! [`RULE_LIMIT`], all rules of a schema [`SCHEMA_LIMIT`]. When an object
//! is checked, a rule whose worst case passes [`CALL_LIMIT`] is estimated
//! again from the object's own sizes before it runs, and all rules of an
//! object together share [`OBJECT_BUDGET`].
//!
//! The cost model follows cel-go's in shape: one unit per variable,
//! field and call; a comprehension costs its body once per item; string
//! scans a unit per ten characters; a regular expression that again per
//! character of its pattern; `in` on a list one unit per item.

use cel::common::ast::{operators, EntryExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;

/// The most one rule's estimate may be, times its node's occurrences.
pub const RULE_LIMIT: u64 = 10_000_000;
/// The most all the rules of one schema may be estimated at.
pub const SCHEMA_LIMIT: u64 = 100_000_000;
/// The most one evaluation may cost.
pub const CALL_LIMIT: u64 = 1_000_000;
/// The most the evaluations for one object may cost together.
pub const OBJECT_BUDGET: u64 = 10_000_000;

/// The largest request, which bounds what a schema leaves unbounded.
const REQUEST_BYTES: u64 = 3 * 1024 * 1024;
/// The longest string a request can carry.
const LONGEST_STRING: u64 = REQUEST_BYTES - 2;

/// How often a node of a schema can occur in one object, inside `items`
/// and `additionalProperties` of the nodes above it.
pub fn occurrences(parent: u64, container: &Value) -> u64 {
    parent.saturating_mul(Shape::Schema(container).size())
}

/// Upstream's words for an estimate past its limit.
pub fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_owned()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding \
         maxItems, maxProperties, and maxLength where arrays, maps, and strings are declared)"
    )
}

/// The worst case of a rule at schema node `schema`, for one evaluation.
pub fn worst_case(rule: &IdedExpr, schema: &Value) -> u64 {
    Estimator::new(Shape::Schema(schema), Shape::Schema(schema), u64::MAX)
        .cost(rule)
        .cost
}

/// The cost of a rule on value `v` (and its stored value `old`), or
/// `None` once it passes `limit`.
pub fn on_value(rule: &IdedExpr, v: &Value, old: Option<&Value>, limit: u64) -> Option<u64> {
    let old = Shape::Value(old.unwrap_or(v));
    let cost = Estimator::new(Shape::Value(v), old, limit).cost(rule).cost;
    (cost <= limit).then_some(cost)
}

/// The cost of an expression with `values` bound by name (an admission
/// policy's `object`, `request`, …), or `None` once it passes `limit`.
pub fn with_values(rule: &IdedExpr, values: &[(&str, &Value)], limit: u64) -> Option<u64> {
    let scope = values
        .iter()
        .map(|(name, v)| ((*name).to_owned(), Shape::Value(v)))
        .collect();
    let cost = Estimator { scope, limit }.cost(rule).cost;
    (cost <= limit).then_some(cost)
}

/// What the estimator knows of a value's size.
#[derive(Clone, Debug)]
enum Shape<'a> {
    /// A node of the object's schema.
    Schema(&'a Value),
    /// A value of the object being checked.
    Value(&'a Value),
    /// A computed value: its size and the largest size of its items.
    Sized { size: u64, item: u64 },
}

const UNKNOWN: Shape<'static> = Shape::Sized {
    size: LONGEST_STRING,
    item: LONGEST_STRING,
};

impl<'a> Shape<'a> {
    fn scalar() -> Self {
        Shape::Sized { size: 1, item: 0 }
    }

    /// The most characters, items or entries the value has.
    fn size(&self) -> u64 {
        match self {
            Shape::Schema(s) => schema_size(s),
            Shape::Value(v) => match v {
                // Bytes bound characters, and need no count.
                Value::String(s) => s.len() as u64,
                Value::Array(items) => items.len() as u64,
                Value::Object(map) => map.len() as u64,
                _ => 1,
            },
            Shape::Sized { size, .. } => *size,
        }
    }

    /// A field of an object, or an entry of a map.
    fn field(&self, name: &str) -> Shape<'a> {
        match self {
            Shape::Schema(s) => s["properties"]
                .get(name)
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                .map_or(UNKNOWN, Shape::Schema),
            Shape::Value(v) => v.get(name).map_or(Shape::scalar(), Shape::Value),
            Shape::Sized { item, .. } => Shape::Sized {
                size: *item,
                item: *item,
            },
        }
    }

    /// An item of a list or a value of a map, at `index` when it is known.
    fn item(&self, index: Option<usize>) -> Shape<'a> {
        match self {
            Shape::Schema(s) => s
                .get("items")
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                .map_or(UNKNOWN, Shape::Schema),
            Shape::Value(Value::Array(items)) => match index.and_then(|i| items.get(i)) {
                Some(v) => Shape::Value(v),
                None => largest(items.iter()),
            },
            Shape::Value(Value::Object(map)) => largest(map.values()),
            Shape::Value(_) => Shape::scalar(),
            Shape::Sized { item, .. } => Shape::Sized {
                size: *item,
                item: *item,
            },
        }
    }

    /// What a comprehension iterates: each item with how many times it
    /// stands (a schema's item stands for all of them), map keys for maps.
    fn each(&self) -> Vec<(Shape<'a>, u64)> {
        match self {
            Shape::Schema(s) if s["type"] == "array" => {
                vec![(self.item(None), self.size())]
            }
            Shape::Schema(s) => {
                let key = match s["properties"].as_object() {
                    Some(p) if !s.get("additionalProperties").is_some_and(Value::is_object) => p
                        .keys()
                        .map(|k| k.chars().count() as u64)
                        .max()
                        .unwrap_or(0),
                    _ => LONGEST_STRING,
                };
                vec![(Shape::Sized { size: key, item: 0 }, self.size())]
            }
            Shape::Value(Value::Array(items)) => {
                items.iter().map(|v| (Shape::Value(v), 1)).collect()
            }
            Shape::Value(Value::Object(map)) => map
                .keys()
                .map(|k| {
                    let size = k.chars().count() as u64;
                    (Shape::Sized { size, item: 0 }, 1)
                })
                .collect(),
            Shape::Value(_) => Vec::new(),
            Shape::Sized { size, item } => vec![(
                Shape::Sized {
                    size: *item,
                    item: *item,
                },
                *size,
            )],
        }
    }

    fn is_list(&self) -> bool {
        match self {
            Shape::Schema(s) => s["type"] == "array",
            Shape::Value(v) => v.is_array(),
            Shape::Sized { item, .. } => *item > 0,
        }
    }

    /// A computed value no larger than this one.
    fn sized(&self) -> Shape<'static> {
        let item = match self {
            Shape::Sized { item, .. } => *item,
            _ => self.item(None).size(),
        };
        Shape::Sized {
            size: self.size(),
            item,
        }
    }
}

/// The item of the largest size, as a computed value.
fn largest<'v>(values: impl Iterator<Item = &'v Value>) -> Shape<'static> {
    let sizes = values.map(|v| Shape::Value(v).sized());
    let (size, item) = sizes.fold((0, 0), |(s, i), shape| match shape {
        Shape::Sized { size, item } => (s.max(size), i.max(item)),
        _ => (s, i),
    });
    Shape::Sized { size, item }
}

/// A schema node's most characters, items or entries.
fn schema_size(s: &Value) -> u64 {
    let declared = |k: &str| s[k].as_u64();
    match s["type"].as_str() {
        Some("string") => declared("maxLength")
            .or_else(|| {
                s["enum"].as_array().and_then(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .map(|v| v.len() as u64)
                        .max()
                })
            })
            .unwrap_or(LONGEST_STRING),
        Some("array") => declared("maxItems")
            .unwrap_or_else(|| (REQUEST_BYTES - 2) / (smallest_serialized(&s["items"]) + 1)),
        Some("object") if s.get("additionalProperties").is_some_and(Value::is_object) => {
            declared("maxProperties").unwrap_or_else(|| {
                // `"":` and a comma around each value.
                (REQUEST_BYTES - 2) / (smallest_serialized(&s["additionalProperties"]) + 4)
            })
        }
        Some("object") => s["properties"].as_object().map_or(0, |p| p.len() as u64),
        Some(_) => 1,
        None => LONGEST_STRING,
    }
}

/// The fewest bytes a value of this schema serializes to.
fn smallest_serialized(s: &Value) -> u64 {
    if s["nullable"] == true {
        return 4;
    }
    match s["type"].as_str() {
        Some("string" | "object" | "array") => 2,
        Some("boolean") => 4,
        _ => 1,
    }
}

/// A cost and the shape of the value it yields.
struct Estimate<'a> {
    cost: u64,
    shape: Shape<'a>,
}

struct Estimator<'a> {
    scope: Vec<(String, Shape<'a>)>,
    /// The estimate stops counting once it passes this.
    limit: u64,
}

impl<'a> Estimator<'a> {
    fn new(this: Shape<'a>, old: Shape<'a>, limit: u64) -> Self {
        Self {
            scope: vec![("self".to_owned(), this), ("oldSelf".to_owned(), old)],
            limit,
        }
    }

    fn lookup(&self, name: &str) -> Shape<'a> {
        self.scope
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map_or(Shape::scalar(), |(_, s)| s.clone())
    }

    fn cost(&mut self, e: &IdedExpr) -> Estimate<'a> {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => Estimate {
                cost: 0,
                shape: Shape::Sized {
                    size: s.chars().count() as u64,
                    item: 0,
                },
            },
            Expr::Literal(LiteralValue::Bytes(b)) => Estimate {
                cost: 0,
                shape: Shape::Sized {
                    size: b.len() as u64,
                    item: 0,
                },
            },
            Expr::Literal(_) | Expr::Unspecified => Estimate {
                cost: 0,
                shape: Shape::scalar(),
            },
            Expr::Ident(name) => Estimate {
                cost: 1,
                shape: self.lookup(name),
            },
            Expr::Select(s) => {
                let operand = self.cost(&s.operand);
                Estimate {
                    cost: operand.cost.saturating_add(1),
                    shape: if s.test {
                        Shape::scalar()
                    } else {
                        operand.shape.field(&s.field)
                    },
                }
            }
            Expr::List(l) => {
                let mut cost = 1u64;
                let mut item = 0;
                for element in &l.elements {
                    let x = self.cost(element);
                    cost = cost.saturating_add(x.cost);
                    item = item.max(x.shape.size());
                }
                Estimate {
                    cost,
                    shape: Shape::Sized {
                        size: l.elements.len() as u64,
                        item,
                    },
                }
            }
            Expr::Map(m) => self.entries(&m.entries),
            Expr::Struct(s) => self.entries(&s.entries),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => self.call(&call.func_name, call.target.as_deref(), &call.args),
        }
    }

    fn entries(&mut self, entries: &[cel::common::ast::IdedEntryExpr]) -> Estimate<'a> {
        let mut cost = 1u64;
        let mut item = 0;
        for entry in entries {
            match &entry.expr {
                EntryExpr::MapEntry(m) => {
                    cost = cost.saturating_add(self.cost(&m.key).cost);
                    let v = self.cost(&m.value);
                    cost = cost.saturating_add(v.cost);
                    item = item.max(v.shape.size());
                }
                EntryExpr::StructField(f) => {
                    let v = self.cost(&f.value);
                    cost = cost.saturating_add(v.cost);
                    item = item.max(v.shape.size());
                }
            }
        }
        Estimate {
            cost,
            shape: Shape::Sized {
                size: entries.len() as u64,
                item,
            },
        }
    }

    fn comprehension(&mut self, c: &cel::common::ast::ComprehensionExpr) -> Estimate<'a> {
        let range = self.cost(&c.iter_range);
        let init = self.cost(&c.accu_init);
        let mut cost = range.cost.saturating_add(init.cost);
        let size = range.shape.size();
        let mut item = 0u64;
        for (element, times) in range.shape.each() {
            let mark = self.scope.len();
            self.scope.push((c.iter_var.clone(), element));
            if let Some(second) = &c.iter_var2 {
                self.scope.push((second.clone(), range.shape.item(None)));
            }
            // A map() or filter() accumulator holds at most one entry per item.
            self.scope
                .push((c.accu_var.clone(), Shape::Sized { size, item }));
            let condition = self.cost(&c.loop_cond);
            let step = self.cost(&c.loop_step);
            self.scope.truncate(mark);
            if let Shape::Sized { item: i, .. } = step.shape {
                item = item.max(i);
            }
            let once = condition.cost.saturating_add(step.cost);
            cost = cost.saturating_add(once.saturating_mul(times));
            if cost > self.limit {
                break;
            }
        }
        self.scope
            .push((c.accu_var.clone(), Shape::Sized { size, item }));
        let result = self.cost(&c.result);
        self.scope.pop();
        Estimate {
            cost: cost.saturating_add(result.cost),
            shape: result.shape,
        }
    }

    fn call(&mut self, name: &str, target: Option<&IdedExpr>, exprs: &[IdedExpr]) -> Estimate<'a> {
        let target = target.map(|t| self.cost(t));
        let args: Vec<Estimate<'a>> = exprs.iter().map(|a| self.cost(a)).collect();
        let mut cost = target
            .iter()
            .chain(&args)
            .fold(1u64, |c, e| c.saturating_add(e.cost));
        // The value the call works on: its target, or its first argument.
        let on = target.as_ref().or(args.first());
        let on_size = on.map_or(0, |e| e.shape.size());
        let other_size = |i: usize| {
            let rest = if target.is_some() { i } else { i + 1 };
            args.get(rest).map_or(0, |e| e.shape.size())
        };
        let scan = |n: u64| n.div_ceil(10);
        let mut shape = Shape::scalar();
        match name {
            operators::ADD => {
                let (a, b) = (on_size, other_size(0));
                let size = a.saturating_add(b);
                let lists: Vec<&Shape> = args
                    .iter()
                    .map(|e| &e.shape)
                    .filter(|s| s.is_list())
                    .collect();
                // Lists are joined in one step, strings copied.
                if lists.is_empty() {
                    cost = cost.saturating_add(scan(size));
                }
                let item = lists.iter().map(|s| s.item(None).size()).max().unwrap_or(0);
                shape = Shape::Sized { size, item };
            }
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => {
                cost = cost.saturating_add(scan(on_size.min(other_size(0))));
            }
            operators::IN => {
                // `x in list` scans the list; a map lookup is one step.
                let container = args.get(1).map(|e| &e.shape);
                if matches!(container, Some(Shape::Schema(s)) if s["type"] == "array")
                    || matches!(container, Some(Shape::Value(Value::Array(_))))
                    || matches!(container, Some(Shape::Sized { .. }))
                {
                    cost = cost.saturating_add(container.map_or(0, Shape::size));
                }
            }
            operators::INDEX | operators::OPT_INDEX => {
                let index = match exprs.get(1).map(|a| &a.expr) {
                    Some(Expr::Literal(LiteralValue::Int(i))) => usize::try_from(**i).ok(),
                    _ => None,
                };
                shape = on.map_or(Shape::scalar(), |e| e.shape.item(index));
            }
            operators::CONDITIONAL => {
                let (a, b) = (other_size(0), other_size(1));
                shape = Shape::Sized {
                    size: a.max(b),
                    item: a.max(b),
                };
            }
            "contains" | "startsWith" | "endsWith" | "indexOf" | "lastIndexOf" | "charAt"
            | "trim" | "lowerAscii" | "upperAscii" | "reverse" | "replace" | "substring"
            | "format" | "quote" | "string" | "bytes" | "split" | "join" => {
                let n = match on.map(|e| &e.shape) {
                    Some(list) if list.is_list() => on_size.saturating_mul(list.item(None).size()),
                    _ => on_size,
                };
                cost = cost.saturating_add(scan(n));
                shape = Shape::Sized {
                    size: n,
                    item: on_size,
                };
            }
            "matches" | "find" | "findAll" => {
                let pattern = other_size(0).max(1);
                cost = cost.saturating_add(scan(on_size).saturating_mul(pattern));
                shape = Shape::Sized {
                    size: on_size,
                    item: on_size,
                };
            }
            "isSorted" | "sum" | "min" | "max" => {
                cost = cost.saturating_add(on_size);
            }
            "url" | "isURL" | "ip" | "isIP" | "cidr" | "isCIDR" | "quantity" | "isQuantity" => {
                cost = cost.saturating_add(scan(on_size));
            }
            _ => {}
        }
        Estimate { cost, shape }
    }
}
