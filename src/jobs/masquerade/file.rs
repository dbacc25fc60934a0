//! Parsing one config file: YAML or JSON (a strict fast path for the usual block YAML,
//! [`crate::fast_yaml`], then serde), upstream's keys and boolean spellings, and the CIDR
//! rules of upstream's validation.

use std::path::Path;

use ipnet::IpNet;
use serde_norway::Value;

use super::{FileConfig, file_error};
use crate::error::{Error, Result};
use crate::fast_yaml::{Node, Scalar};
use crate::parse::{CidrError, CidrRules, cidr::parse as parse_cidr};

pub(super) const KEY_CIDRS: &str = "nonMasqueradeCIDRs";
pub(super) const KEY_LINK_LOCAL: &str = "masqLinkLocal";
pub(super) const KEY_LINK_LOCAL_V6: &str = "masqLinkLocalIPv6";

/// Parse one config file's content (YAML or JSON) and validate it as upstream does.
pub fn parse_file(path: &Path, bytes: &[u8], enable_ipv6: bool) -> Result<FileConfig> {
    let mut out = FileConfig {
        path: path.to_path_buf(),
        ..Default::default()
    };
    // The usual block YAML (`key:` then `  - CIDR` lines) in one linear pass, with no
    // Value per list item; checked exactly as the full parser's document below.
    if let Some(doc) = crate::fast_yaml::parse(bytes) {
        for (key, node) in &doc.entries {
            let known = [KEY_CIDRS, KEY_LINK_LOCAL, KEY_LINK_LOCAL_V6]
                .iter()
                .any(|k| key.eq_ignore_ascii_case(k));
            match node {
                Node::Seq(items) if key.eq_ignore_ascii_case(KEY_CIDRS) => {
                    let what = cidr_what(path);
                    let mut cidrs = Vec::with_capacity(items.len());
                    for item in items {
                        cidrs.push(match *item {
                            Scalar::Null => cidr(&what, "", enable_ipv6),
                            Scalar::Str(s) => cidr(&what, s, enable_ipv6),
                            Scalar::Bool(_) => cidr_item(&what, &item.to_value(), enable_ipv6),
                        }?);
                    }
                    out.cidrs = cidrs;
                }
                _ if known => set_key(&mut out, path, key, &node.to_value(), enable_ipv6)?,
                _ => {}
            }
        }
        return Ok(out);
    }
    // libyaml is quadratic in nesting depth and keeps every event in memory: refuse such
    // input in one linear pass first.
    crate::parse::check_yaml_size(bytes).map_err(|why| file_error(path, why))?;
    let doc: Value = match serde_norway::from_slice(bytes) {
        Ok(v) => v,
        // JSON is YAML, but libyaml is pickier about some whitespace (tabs) than JSON.
        Err(yaml_err) => serde_json::from_slice::<Value>(bytes)
            .map_err(|_| file_error(path, format!("not valid YAML or JSON: {yaml_err}")))?,
    };
    let map = match untag(&doc) {
        // An empty file (or `null`) sets nothing, as upstream.
        Value::Null => return Ok(out),
        Value::Mapping(m) => m,
        other => {
            return Err(file_error(
                path,
                format!(
                    "the document is {}; expected a mapping with keys {KEY_CIDRS}, {KEY_LINK_LOCAL}, {KEY_LINK_LOCAL_V6}",
                    kind(other)
                ),
            ));
        }
    };
    for (k, v) in map {
        let Some(key) = untag(k).as_str() else {
            continue;
        };
        set_key(&mut out, path, key, untag(v), enable_ipv6)?;
    }
    Ok(out)
}

/// Apply one top-level entry. Go's encoding/json matches keys case-insensitively; unknown
/// keys are ignored.
fn set_key(
    out: &mut FileConfig,
    path: &Path,
    key: &str,
    v: &Value,
    enable_ipv6: bool,
) -> Result<()> {
    if key.eq_ignore_ascii_case(KEY_CIDRS) {
        out.cidrs = cidr_list(path, key, v, enable_ipv6)?;
    } else if key.eq_ignore_ascii_case(KEY_LINK_LOCAL) {
        out.masq_link_local = boolean(path, key, v)?;
    } else if key.eq_ignore_ascii_case(KEY_LINK_LOCAL_V6) {
        out.masq_link_local_ipv6 = boolean(path, key, v)?;
    }
    Ok(())
}

fn untag(v: &Value) -> &Value {
    match v {
        Value::Tagged(t) => untag(&t.value),
        other => other,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn cidr_list(path: &Path, key: &str, v: &Value, enable_ipv6: bool) -> Result<Vec<IpNet>> {
    let items = match v {
        Value::Null => return Ok(Vec::new()),
        Value::Sequence(items) => items,
        other => {
            return Err(file_error(
                path,
                format!(
                    "{key} is {}; expected a list of CIDRs such as [10.0.0.0/8]",
                    kind(other)
                ),
            ));
        }
    };
    let what = cidr_what(path);
    items
        .iter()
        .map(|item| cidr_item(&what, item, enable_ipv6))
        .collect()
}

/// How errors name an item of the CIDR list in `path`.
fn cidr_what(path: &Path) -> String {
    format!("{KEY_CIDRS} entry in {}", path.display())
}

fn cidr_item(what: &str, item: &Value, enable_ipv6: bool) -> Result<IpNet> {
    match untag(item) {
        // `- ` and `- null` are "" in upstream, which then fails to parse.
        Value::Null => cidr(what, "", enable_ipv6),
        Value::String(s) => cidr(what, s, enable_ipv6),
        other => Err(Error::invalid(
            what,
            scalar_text(other),
            format!(
                "is {}; expected a CIDR string such as 10.0.0.0/8",
                kind(other)
            ),
        )),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => kind(other).to_string(),
    }
}

/// A CIDR as upstream validates it ([`CidrRules::GO_PARSE_CIDR`]): `net.ParseCIDR` (a bare
/// address is refused), the network address aligned to the prefix, IPv6 only with
/// --enable-ipv6.
pub fn cidr(what: &str, raw: &str, enable_ipv6: bool) -> Result<IpNet> {
    let net = parse_cidr(raw, CidrRules::GO_PARSE_CIDR).map_err(|e| match e {
        CidrError::Empty => {
            Error::invalid(what, raw, "empty item; expected a CIDR such as 10.0.0.0/8")
        }
        CidrError::NoPrefix | CidrError::Unparsable => Error::invalid(
            what,
            raw,
            "could not be parsed; expected a CIDR such as 10.0.0.0/8 or fd00::/8",
        ),
        CidrError::HostBits { suggested } => Error::invalid(
            what,
            raw,
            format!("is not aligned to a CIDR block (host bits set); did you mean {suggested}?"),
        ),
    })?;
    if matches!(net, IpNet::V6(_)) && !enable_ipv6 {
        return Err(Error::invalid(
            what,
            raw,
            "is an IPv6 CIDR but IPv6 is not enabled; pass --enable-ipv6",
        ));
    }
    Ok(net)
}

/// Go decodes YAML 1.1 (go-yaml v2): yes/no/on/off/y/n are booleans too.
fn boolean(path: &Path, key: &str, v: &Value) -> Result<Option<bool>> {
    match v {
        Value::Null => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::String(s)
            if matches!(
                s.as_str(),
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON"
            ) =>
        {
            Ok(Some(true))
        }
        Value::String(s)
            if matches!(
                s.as_str(),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF"
            ) =>
        {
            Ok(Some(false))
        }
        other => Err(Error::invalid(
            format!("{key} in {}", path.display()),
            scalar_text(other),
            "expected true or false",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::masquerade::testutil::*;

    #[test]
    fn validate_like_upstream() {
        // (items, ok?) — upstream's validate cases plus ours.
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], None),
            (&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"], None),
            (&["abcdefg"], Some("could not be parsed")),
            (&["10.256.0.0/16"], Some("could not be parsed")),
            (&["10.0.0.0/8", "abcdefg"], Some("could not be parsed")),
            (&["10.0.0.1/8"], Some("did you mean 10.0.0.0/8")),
            (&["10.0.0.0/33"], Some("could not be parsed")),
            (&["10.0.0.1"], Some("could not be parsed")),
            (&[""], Some("empty item")),
            (&["fd00::/8"], Some("--enable-ipv6")),
            (&["fd00::1/8"], Some("did you mean fd00::/8")),
        ];
        for (items, want) in cases {
            let r: Result<Vec<IpNet>> = items.iter().map(|i| cidr("x", i, false)).collect();
            match (want, r) {
                (None, Ok(_)) => {}
                (Some(needle), Err(e)) => {
                    assert_eq!(e.exit_code(), 2);
                    assert!(e.to_string().contains(needle), "{items:?}: {e}");
                }
                (w, r) => panic!("{items:?}: expected {w:?}, got {r:?}"),
            }
        }
        assert!(cidr("x", "fd00::/8", true).is_ok());
    }

    #[test]
    fn parse_files_yaml_and_json() {
        struct Case {
            text: &'static str,
            cidrs: &'static [&'static str],
            ll: Option<bool>,
            ll6: Option<bool>,
        }
        let cases = [
            Case {
                text: "nonMasqueradeCIDRs:\n  - 172.16.0.0/12\n  - 10.0.0.0/16\nmasqLinkLocal: true\nmasqLinkLocalIPv6: true\n",
                cidrs: &["172.16.0.0/12", "10.0.0.0/16"],
                ll: Some(true),
                ll6: Some(true),
            },
            Case {
                text: "nonMasqueradeCIDRs: [172.16.0.0/12, 10.0.0.0/16]",
                cidrs: &["172.16.0.0/12", "10.0.0.0/16"],
                ll: None,
                ll6: None,
            },
            Case {
                text: "masqLinkLocal: true",
                cidrs: &[],
                ll: Some(true),
                ll6: None,
            },
            Case {
                text: r#"{"nonMasqueradeCIDRs": ["172.16.0.0/12", "fd00::/8"], "masqLinkLocal": false}"#,
                cidrs: &["172.16.0.0/12", "fd00::/8"],
                ll: Some(false),
                ll6: None,
            },
            // JSON with tab indentation (libyaml refuses tabs in some places).
            Case {
                text: "{\n\t\"masqLinkLocalIPv6\": true,\n\t\"nonMasqueradeCIDRs\": [\"10.0.0.0/8\"]\n}",
                cidrs: &["10.0.0.0/8"],
                ll: None,
                ll6: Some(true),
            },
            // Unknown keys (v1's cidrLimit, resyncInterval) ignored; keys case-insensitive.
            Case {
                text: "cidrLimit: 64\nresyncInterval: 60s\nNonMasqueradeCidrs: [10.0.0.0/8]\nMASQLINKLOCAL: yes\n",
                cidrs: &["10.0.0.0/8"],
                ll: Some(true),
                ll6: None,
            },
            Case {
                text: "",
                cidrs: &[],
                ll: None,
                ll6: None,
            },
            Case {
                text: "# only a comment\n",
                cidrs: &[],
                ll: None,
                ll6: None,
            },
            Case {
                text: "nonMasqueradeCIDRs:\nmasqLinkLocal: off\n",
                cidrs: &[],
                ll: Some(false),
                ll6: None,
            },
        ];
        for c in cases {
            let f = parse_str(c.text, true).unwrap_or_else(|e| panic!("{:?}: {e}", c.text));
            let got: Vec<String> = f.cidrs.iter().map(|n| n.to_string()).collect();
            assert_eq!(got, c.cidrs, "{:?}", c.text);
            assert_eq!(
                (f.masq_link_local, f.masq_link_local_ipv6),
                (c.ll, c.ll6),
                "{:?}",
                c.text
            );
        }
    }

    #[test]
    fn parse_errors_name_the_file_and_value() {
        let cases = [
            ("{*", "not valid YAML or JSON"),
            ("*", "not valid YAML or JSON"),
            ("nonMasqueradeCIDRs: [10.0.0.0/8, \"\"]", "empty item"),
            ("nonMasqueradeCIDRs:\n  - 10.0.0.0/8\n  -\n", "empty item"),
            ("nonMasqueradeCIDRs: [null]", "empty item"),
            ("nonMasqueradeCIDRs: [10.0.0.1/8]", "\"10.0.0.1/8\""),
            ("nonMasqueradeCIDRs: [fd00::/8]", "--enable-ipv6"),
            ("nonMasqueradeCIDRs: 10.0.0.0/8", "expected a list"),
            ("nonMasqueradeCIDRs: [10]", "expected a CIDR string"),
            ("masqLinkLocal: maybe", "expected true or false"),
            ("- 10.0.0.0/8", "expected a mapping"),
            ("just a string", "expected a mapping"),
        ];
        for (text, needle) in cases {
            let e = parse_str(text, false).unwrap_err();
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{text}");
            assert!(msg.contains("/etc/config/ip-masq-agent"), "{text}: {msg}");
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }
}
