//! Tag filters (an extension to Pusher): a publisher attaches `tags` to an event, a subscriber
//! passes a `filter` in `pusher:subscribe`, and the hub drops non-matching events before any
//! bytes are queued.
//!
//! Grammar (JSON): `{"field": {"op": value}}` with ops `eq`, `neq`, `in`, `nin`, `exists`,
//! `prefix`; several fields or ops in one object must all match; `{"and": [f, ...]}`,
//! `{"or": [f, ...]}`, `{"not": f}`. Tag values are strings (numbers and booleans given by a
//! publisher are compared as their JSON text).

use std::collections::BTreeMap;

use serde_json::Value;

/// An event's tags.
pub type Tags = BTreeMap<String, String>;

/// Most tags on one event, and the longest key or value.
pub const MAX_TAGS: usize = 32;
/// Longest tag key or value.
pub const MAX_TAG_LEN: usize = 128;
const MAX_NODES: usize = 64;
const MAX_DEPTH: usize = 8;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// A comparison on one tag.
    Field(String, Op),
    /// Every sub-filter matches.
    And(Vec<Filter>),
    /// At least one sub-filter matches.
    Or(Vec<Filter>),
    /// The sub-filter does not match.
    Not(Box<Filter>),
}

/// A comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Equal.
    Eq(String),
    /// Present and different.
    Neq(String),
    /// One of.
    In(Vec<String>),
    /// Present and none of.
    Nin(Vec<String>),
    /// Present (`true`) or absent (`false`).
    Exists(bool),
    /// Starts with.
    Prefix(String),
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(v.to_string()),
        _ => None,
    }
}

fn list(v: &Value) -> Result<Vec<String>, String> {
    v.as_array()
        .ok_or("expected an array")?
        .iter()
        .map(|x| scalar(x).ok_or_else(|| "expected strings".to_owned()))
        .collect()
}

impl Filter {
    /// Parses and bounds a filter (at most 64 nodes, 8 levels deep).
    pub fn parse(v: &Value) -> Result<Self, String> {
        let mut nodes = 0;
        Self::parse_at(v, 0, &mut nodes)
    }

    fn parse_at(v: &Value, depth: usize, nodes: &mut usize) -> Result<Self, String> {
        *nodes += 1;
        if depth > MAX_DEPTH || *nodes > MAX_NODES {
            return Err("filter is too large".into());
        }
        let obj = v.as_object().ok_or("a filter is a JSON object")?;
        let mut all = Vec::new();
        for (k, val) in obj {
            let f = match k.as_str() {
                "and" | "or" => {
                    let subs = val
                        .as_array()
                        .ok_or(format!("{k} takes an array"))?
                        .iter()
                        .map(|s| Self::parse_at(s, depth + 1, nodes))
                        .collect::<Result<Vec<_>, _>>()?;
                    if k == "and" {
                        Filter::And(subs)
                    } else {
                        Filter::Or(subs)
                    }
                }
                "not" => Filter::Not(Box::new(Self::parse_at(val, depth + 1, nodes)?)),
                field => {
                    let ops = val
                        .as_object()
                        .ok_or(format!("{field} needs an operator object"))?;
                    let mut fs = Vec::new();
                    for (op, arg) in ops {
                        let op = match op.as_str() {
                            "eq" => Op::Eq(scalar(arg).ok_or("eq takes a value")?),
                            "neq" => Op::Neq(scalar(arg).ok_or("neq takes a value")?),
                            "in" => Op::In(list(arg)?),
                            "nin" => Op::Nin(list(arg)?),
                            "exists" => Op::Exists(arg.as_bool().ok_or("exists takes a boolean")?),
                            "prefix" => Op::Prefix(scalar(arg).ok_or("prefix takes a value")?),
                            other => return Err(format!("unknown operator {other:?}")),
                        };
                        fs.push(Filter::Field(field.to_owned(), op));
                    }
                    if fs.len() == 1 {
                        fs.remove(0)
                    } else {
                        Filter::And(fs)
                    }
                }
            };
            all.push(f);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }

    /// Whether an event with `tags` passes.
    pub fn matches(&self, tags: &Tags) -> bool {
        match self {
            Filter::And(fs) => fs.iter().all(|f| f.matches(tags)),
            Filter::Or(fs) => fs.iter().any(|f| f.matches(tags)),
            Filter::Not(f) => !f.matches(tags),
            Filter::Field(k, op) => {
                let v = tags.get(k);
                match op {
                    Op::Eq(x) => v == Some(x),
                    Op::Neq(x) => v.is_some_and(|v| v != x),
                    Op::In(xs) => v.is_some_and(|v| xs.contains(v)),
                    Op::Nin(xs) => v.is_some_and(|v| !xs.contains(v)),
                    Op::Exists(e) => v.is_some() == *e,
                    Op::Prefix(p) => v.is_some_and(|v| v.starts_with(p.as_str())),
                }
            }
        }
    }
}

/// Parses publisher tags: an object of scalars, bounded.
pub fn parse_tags(v: &Value) -> Result<Tags, String> {
    let obj = v.as_object().ok_or("tags must be an object")?;
    if obj.len() > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags"));
    }
    let mut tags = Tags::new();
    for (k, val) in obj {
        let s = scalar(val).ok_or("tag values must be strings, numbers or booleans")?;
        if k.len() > MAX_TAG_LEN || s.len() > MAX_TAG_LEN {
            return Err(format!(
                "tag keys and values are at most {MAX_TAG_LEN} bytes"
            ));
        }
        tags.insert(k.clone(), s);
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tags(v: Value) -> Tags {
        parse_tags(&v).unwrap()
    }

    #[test]
    fn operators() {
        let t = tags(json!({"event_type":"goal","team":"home","minute":90}));
        let m = |f: Value| Filter::parse(&f).unwrap().matches(&t);
        assert!(m(json!({"event_type":{"eq":"goal"}})));
        assert!(!m(json!({"event_type":{"eq":"card"}})));
        assert!(m(json!({"team":{"in":["home","away"]}})));
        assert!(m(json!({"team":{"neq":"away"}})));
        assert!(!m(json!({"missing":{"neq":"x"}})));
        assert!(m(json!({"minute":{"eq":90}})));
        assert!(m(json!({"missing":{"exists":false}})));
        assert!(m(json!({"team":{"prefix":"ho"}})));
        assert!(m(
            json!({"or":[{"team":{"eq":"away"}},{"event_type":{"eq":"goal"}}]})
        ));
        assert!(!m(
            json!({"and":[{"team":{"eq":"away"}},{"event_type":{"eq":"goal"}}]})
        ));
        assert!(m(json!({"not":{"team":{"eq":"away"}}})));
        assert!(!m(json!({"team":{"eq":"home"},"event_type":{"eq":"card"}})));
    }

    #[test]
    fn bad_filters_are_refused() {
        assert!(Filter::parse(&json!([1])).is_err());
        assert!(Filter::parse(&json!({"a":{"like":"x"}})).is_err());
        assert!(Filter::parse(&json!({"a":"x"})).is_err());
        let mut deep = json!({"a":{"eq":"x"}});
        for _ in 0..10 {
            deep = json!({ "not": deep });
        }
        assert!(Filter::parse(&deep).is_err());
        assert!(parse_tags(&json!({"a":[1]})).is_err());
    }
}
