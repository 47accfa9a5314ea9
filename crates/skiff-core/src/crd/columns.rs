//! `additionalPrinterColumns`: the JSONPath subset they use (fields,
//! quoted names, indices, `[*]` and `[?(@.key=="value")]` filters) and
//! the cells they give.

use serde_json::{json, Value};

use super::Column;

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.key=="value")]`, the key a dotted path.
    Filter(Vec<String>, Value),
}

/// A parsed column path.
#[derive(Clone, Debug, PartialEq)]
pub struct Path(Vec<Step>);

impl Path {
    /// Parses `.spec.replicas`, `{.status.phase}`, `.a['b.c'][0]`,
    /// `.status.conditions[?(@.type=="Ready")].status`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut s = text.trim();
        if let Some(inner) = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            s = inner;
        }
        let mut steps = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                if end == 0 {
                    return None;
                }
                steps.push(Step::Field(r[..end].to_owned()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let end = bracket_end(r)?;
                steps.push(bracket(&r[..end])?);
                rest = &r[end + 1..];
            } else {
                return None;
            }
        }
        Some(Self(steps))
    }

    /// The values the path finds in `v`.
    pub fn find<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut at = vec![v];
        for step in &self.0 {
            let mut next = Vec::new();
            for v in at {
                match step {
                    Step::Field(name) => next.extend(v.get(name)),
                    Step::Index(i) => next.extend(v.get(*i)),
                    Step::All => match v {
                        Value::Array(items) => next.extend(items),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter(key, want) => {
                        for item in v.as_array().into_iter().flatten() {
                            let got = key.iter().try_fold(item, |o, k| o.get(k));
                            if got == Some(want) {
                                next.push(item);
                            }
                        }
                    }
                }
            }
            at = next;
        }
        at
    }
}

/// Where the bracket opened just before `r` closes, past quoted text.
fn bracket_end(r: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in r.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ']') => return Some(i),
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<&str> {
    let s = s.trim();
    s.strip_prefix('\'')
        .and_then(|t| t.strip_suffix('\''))
        .or_else(|| s.strip_prefix('"').and_then(|t| t.strip_suffix('"')))
}

fn bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse() {
        return Some(Step::Index(i));
    }
    if let Some(name) = unquote(inner) {
        return Some(Step::Field(name.to_owned()));
    }
    let cond = inner.strip_prefix("?(")?.strip_suffix(')')?;
    let (left, right) = cond.split_once("==")?;
    let key: Vec<String> = left
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(str::to_owned)
        .collect();
    let right = right.trim();
    let want = match unquote(right) {
        Some(text) => Value::String(text.to_owned()),
        None => serde_json::from_str(right).ok()?,
    };
    Some(Step::Filter(key, want))
}

/// The cell of one column for one object: a number, a boolean, a string,
/// an age for dates, or null when the path finds nothing.
pub fn cell(column: &Column, obj: &Value) -> Value {
    let Some(path) = Path::parse(&column.json_path) else {
        return Value::Null;
    };
    let found = path.find(obj);
    let Some(first) = found.first() else {
        return Value::Null;
    };
    if found.len() > 1 {
        let parts: Vec<String> = found.iter().map(|v| plain(v)).collect();
        return json!(parts.join(","));
    }
    match column.kind.as_str() {
        "date" => match first.as_str() {
            Some(t) => json!(crate::table::age(t)),
            None => json!(plain(first)),
        },
        "integer" if first.is_i64() || first.is_u64() => (*first).clone(),
        "number" if first.is_number() => (*first).clone(),
        "boolean" if first.is_boolean() => (*first).clone(),
        _ => json!(plain(first)),
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
