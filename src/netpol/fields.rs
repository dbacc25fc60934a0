//! Reading one object's JSON fields (`netpol::manifest`, `netpol::policy`) the way the
//! API server validates them: absent and `null` are the same, YAML scalars in label maps
//! are strings, ports are 1-65535. Every error names the object, the field path, the
//! value and what is expected.

use serde_json::Value;

use super::selector::Labels;
use crate::error::{Error, Result};

/// Error context: which object and which field.
pub(super) struct Ctx<'a> {
    pub(super) object: &'a str,
}

impl Ctx<'_> {
    pub(super) fn err(&self, field: &str, value: &Value, expected: &str) -> Error {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Error::invalid(format!("{} field {field}", self.object), shown, expected)
    }
}

pub(super) fn get<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.get(key).filter(|x| !x.is_null())
}

pub(super) fn string(ctx: &Ctx, v: &Value, path: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ctx.err(path, v, "a string"))
}

pub(super) fn array<'v>(ctx: &Ctx, v: Option<&'v Value>, path: &str) -> Result<&'v [Value]> {
    match v {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(ctx.err(path, other, "a list")),
    }
}

pub(super) fn string_map(ctx: &Ctx, v: Option<&Value>, path: &str) -> Result<Labels> {
    let mut out = Labels::new();
    match v {
        None => {}
        Some(Value::Object(m)) => {
            for (k, val) in m {
                let s = match val {
                    Value::String(s) => s.clone(),
                    // YAML `app: 1` / `on: true` arrive as numbers and booleans.
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(ctx.err(&format!("{path}.{k}"), other, "a string")),
                };
                out.insert(k.clone(), s);
            }
        }
        Some(other) => return Err(ctx.err(path, other, "a map of strings")),
    }
    Ok(out)
}

pub(super) fn port_number(ctx: &Ctx, v: &Value, path: &str) -> Result<u16> {
    match v.as_u64() {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(ctx.err(path, v, "a port number 1-65535")),
    }
}

pub(super) fn protocol(ctx: &Ctx, v: Option<&Value>, path: &str) -> Result<Protocol> {
    match v {
        None => Ok(Protocol::Tcp),
        Some(v) => v
            .as_str()
            .and_then(Protocol::parse)
            .ok_or_else(|| ctx.err(path, v, "TCP, UDP or SCTP")),
    }
}

/// A container port's or a policy port's protocol (`TCP` when omitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub(super) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// (namespace, name, labels) from `metadata`. Also used by live mode (`netpol::store`) on
/// the objects the API server sends, so both sources share one validation.
pub fn meta(item: &Value, kind: &str, namespaced: bool) -> Result<(String, String, Labels)> {
    let m = get(item, "metadata");
    let name = m.and_then(|m| get(m, "name")).and_then(Value::as_str);
    let ns = m
        .and_then(|m| get(m, "namespace"))
        .and_then(Value::as_str)
        .unwrap_or(if namespaced { "default" } else { "" });
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(Error::invalid(
            format!("{kind} field metadata.name"),
            m.and_then(|m| m.get("name"))
                .cloned()
                .unwrap_or(Value::Null),
            "a non-empty name",
        ));
    };
    let object = if namespaced {
        format!("{kind} {ns}/{name}")
    } else {
        format!("{kind} {name}")
    };
    let ctx = Ctx { object: &object };
    let labels = string_map(&ctx, m.and_then(|m| get(m, "labels")), "metadata.labels")?;
    Ok((ns.to_string(), name.to_string(), labels))
}
