//! Filters over an event's fields, as the JSON form of the event shows them
//! (envelope fields such as `source_system` at the top, payload fields by
//! their path: `agent_data.confidence_score`).
//!
//! Written in TOML or JSON as one of:
//! `{ field = "client_name", eq = "acme" }` (also `ne`),
//! `{ field = "scope", in = ["global", "client"] }`,
//! `{ field = "workflow_id", prefix = "wf-" }`,
//! `{ field = "observed", gt = 0.5 }` (also `gte`, `lt`, `lte`),
//! `{ all = [ ... ] }` (and), `{ any = [ ... ] }` (or), `{ not = { ... } }`.
//! A field the event does not have matches no comparison (`ne` included).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A filter, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawFilter", into = "RawFilter")]
pub enum Filter {
    Eq(FieldPath, Value),
    Ne(FieldPath, Value),
    In(FieldPath, Vec<Value>),
    Prefix(FieldPath, String),
    Compare(FieldPath, Ordering, f64),
    All(Vec<Filter>),
    Any(Vec<Filter>),
    Not(Box<Filter>),
}

/// A numeric comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ordering {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// A dotted path into the event's JSON (`agent_data.confidence_score`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    text: String,
    parts: Vec<String>,
}

impl FieldPath {
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<String> = text.split('.').map(str::to_owned).collect();
        if parts.iter().any(String::is_empty) {
            return Err(format!("field '{text}': empty segment in the path"));
        }
        Ok(FieldPath {
            text: text.to_owned(),
            parts,
        })
    }

    /// The value at this path, if the event has it (`null` counts as absent).
    pub fn lookup<'a>(&self, json: &'a Value) -> Option<&'a Value> {
        let mut at = json;
        for part in &self.parts {
            at = match at {
                Value::Object(map) => map.get(part)?,
                Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        (!at.is_null()).then_some(at)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl Filter {
    /// Whether the event, in its JSON form, passes.
    pub fn matches(&self, json: &Value) -> bool {
        match self {
            Filter::Eq(f, v) => f.lookup(json).is_some_and(|x| same(x, v)),
            Filter::Ne(f, v) => f.lookup(json).is_some_and(|x| !same(x, v)),
            Filter::In(f, vs) => f
                .lookup(json)
                .is_some_and(|x| vs.iter().any(|v| same(x, v))),
            Filter::Prefix(f, p) => f
                .lookup(json)
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with(p.as_str())),
            Filter::Compare(f, op, n) => {
                f.lookup(json)
                    .and_then(Value::as_f64)
                    .is_some_and(|x| match op {
                        Ordering::Gt => x > *n,
                        Ordering::Gte => x >= *n,
                        Ordering::Lt => x < *n,
                        Ordering::Lte => x <= *n,
                    })
            }
            Filter::All(fs) => fs.iter().all(|f| f.matches(json)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(json)),
            Filter::Not(f) => !f.matches(json),
        }
    }
}

/// Equality where `1` and `1.0` are the same number.
fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The written form: one struct with every key, so that a mistake is
/// reported as what it is ("two operators") rather than as serde's
/// "data did not match any variant".
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    eq: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ne: Option<Value>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    in_: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lt: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lte: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    all: Option<Vec<Filter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    any: Option<Vec<Filter>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    not: Option<Box<Filter>>,
}

const OPERATORS: &str = "eq, ne, in, prefix, gt, gte, lt, lte, all, any or not";

impl TryFrom<RawFilter> for Filter {
    type Error = String;

    fn try_from(raw: RawFilter) -> Result<Self, String> {
        let mut found: Vec<Filter> = Vec::new();
        let field = || -> Result<FieldPath, String> {
            let text = raw.field.as_deref().ok_or("a comparison needs a 'field'")?;
            FieldPath::parse(text)
        };
        if let Some(v) = raw.eq.clone() {
            found.push(Filter::Eq(field()?, v));
        }
        if let Some(v) = raw.ne.clone() {
            found.push(Filter::Ne(field()?, v));
        }
        if let Some(vs) = raw.in_.clone() {
            found.push(Filter::In(field()?, vs));
        }
        if let Some(p) = raw.prefix.clone() {
            found.push(Filter::Prefix(field()?, p));
        }
        for (n, op) in [
            (raw.gt, Ordering::Gt),
            (raw.gte, Ordering::Gte),
            (raw.lt, Ordering::Lt),
            (raw.lte, Ordering::Lte),
        ] {
            if let Some(n) = n {
                found.push(Filter::Compare(field()?, op, n));
            }
        }
        let combinator = raw.all.is_some() || raw.any.is_some() || raw.not.is_some();
        if combinator && raw.field.is_some() {
            return Err("'field' belongs to a comparison, not to all/any/not".to_owned());
        }
        if let Some(fs) = raw.all {
            found.push(Filter::All(fs));
        }
        if let Some(fs) = raw.any {
            found.push(Filter::Any(fs));
        }
        if let Some(f) = raw.not {
            found.push(Filter::Not(f));
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!("a filter needs one of {OPERATORS}")),
            _ => Err(format!(
                "a filter has exactly one of {OPERATORS}; split several into 'all'"
            )),
        }
    }
}

impl From<Filter> for RawFilter {
    fn from(filter: Filter) -> RawFilter {
        let with = |f: FieldPath| RawFilter {
            field: Some(f.text),
            ..RawFilter::default()
        };
        match filter {
            Filter::Eq(f, v) => RawFilter {
                eq: Some(v),
                ..with(f)
            },
            Filter::Ne(f, v) => RawFilter {
                ne: Some(v),
                ..with(f)
            },
            Filter::In(f, vs) => RawFilter {
                in_: Some(vs),
                ..with(f)
            },
            Filter::Prefix(f, p) => RawFilter {
                prefix: Some(p),
                ..with(f)
            },
            Filter::Compare(f, op, n) => {
                let mut raw = with(f);
                match op {
                    Ordering::Gt => raw.gt = Some(n),
                    Ordering::Gte => raw.gte = Some(n),
                    Ordering::Lt => raw.lt = Some(n),
                    Ordering::Lte => raw.lte = Some(n),
                }
                raw
            }
            Filter::All(fs) => RawFilter {
                all: Some(fs),
                ..RawFilter::default()
            },
            Filter::Any(fs) => RawFilter {
                any: Some(fs),
                ..RawFilter::default()
            },
            Filter::Not(f) => RawFilter {
                not: Some(f),
                ..RawFilter::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(json: Value) -> Filter {
        serde_json::from_value(json).expect("a valid filter")
    }

    fn agent_completed() -> Value {
        json!({
            "event_id": "e-1",
            "source_system": "opal-agents",
            "workflow_id": "wf-42",
            "execution_status": "success",
            "processing_time_ms": 1200,
            "agent_data": {"confidence_score": 0.87, "tags": ["a", "b"]},
            "error": null
        })
    }

    #[test]
    fn equality_and_in_over_envelope_and_payload() {
        let e = agent_completed();
        assert!(filter(json!({"field": "source_system", "eq": "opal-agents"})).matches(&e));
        assert!(!filter(json!({"field": "source_system", "eq": "other"})).matches(&e));
        assert!(
            filter(json!({"field": "execution_status", "in": ["failure", "success"]})).matches(&e)
        );
        assert!(!filter(json!({"field": "execution_status", "in": ["failure"]})).matches(&e));
        assert!(filter(json!({"field": "processing_time_ms", "eq": 1200.0})).matches(&e));
    }

    #[test]
    fn nested_payload_fields_by_path() {
        let e = agent_completed();
        assert!(filter(json!({"field": "agent_data.confidence_score", "gte": 0.87})).matches(&e));
        assert!(!filter(json!({"field": "agent_data.confidence_score", "gt": 0.87})).matches(&e));
        assert!(filter(json!({"field": "agent_data.confidence_score", "lt": 0.9})).matches(&e));
        assert!(filter(json!({"field": "agent_data.tags.1", "eq": "b"})).matches(&e));
        assert!(!filter(json!({"field": "agent_data.missing", "eq": 1})).matches(&e));
    }

    #[test]
    fn prefix_numbers_and_absent_fields() {
        let e = agent_completed();
        assert!(filter(json!({"field": "workflow_id", "prefix": "wf-"})).matches(&e));
        assert!(!filter(json!({"field": "workflow_id", "prefix": "x"})).matches(&e));
        // A prefix of a number, a comparison with a string: no match, no panic.
        assert!(!filter(json!({"field": "processing_time_ms", "prefix": "1"})).matches(&e));
        assert!(!filter(json!({"field": "workflow_id", "gt": 1})).matches(&e));
        // null is absent: `ne` does not match it either.
        assert!(!filter(json!({"field": "error", "ne": "boom"})).matches(&e));
    }

    #[test]
    fn and_or_not() {
        let e = agent_completed();
        let both = filter(json!({"all": [
            {"field": "workflow_id", "prefix": "wf-"},
            {"field": "processing_time_ms", "gt": 1000}
        ]}));
        assert!(both.matches(&e));
        let one_fails = filter(json!({"all": [
            {"field": "workflow_id", "prefix": "wf-"},
            {"field": "processing_time_ms", "gt": 5000}
        ]}));
        assert!(!one_fails.matches(&e));
        let either = filter(json!({"any": [
            {"field": "workflow_id", "eq": "nope"},
            {"field": "processing_time_ms", "gt": 1000}
        ]}));
        assert!(either.matches(&e));
        assert!(!filter(json!({"not": {"field": "workflow_id", "eq": "wf-42"}})).matches(&e));
    }

    #[test]
    fn mistakes_are_named() {
        let two = serde_json::from_value::<Filter>(json!({"field": "a", "eq": 1, "gt": 2}))
            .expect_err("refused");
        assert!(two.to_string().contains("exactly one"), "{two}");
        let no_field = serde_json::from_value::<Filter>(json!({"eq": 1})).expect_err("refused");
        assert!(
            no_field.to_string().contains("needs a 'field'"),
            "{no_field}"
        );
        let unknown = serde_json::from_value::<Filter>(json!({"field": "a", "equals": 1}))
            .expect_err("refused");
        assert!(unknown.to_string().contains("equals"), "{unknown}");
    }

    #[test]
    fn round_trips_through_its_written_form() {
        let f = filter(
            json!({"any": [{"field": "a.b", "in": [1, "x"]}, {"not": {"field": "c", "lte": 3.0}}]}),
        );
        let back: Filter =
            serde_json::from_value(serde_json::to_value(&f).expect("json")).expect("parse");
        assert_eq!(f, back);
    }
}
