//! What a backend reads back from the kernel, and the diff `verify` prints.
//!
//! A [`Snapshot`] is the owned table in comparable form: chains with their hook and rules
//! as text, sets with their elements as inclusive ranges. A backend produces the expected
//! snapshot of a [`Ruleset`](crate::model::Ruleset) the same way it reads the kernel's, so
//! the two compare equal exactly when the kernel holds the desired state.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Snapshot {
    pub table: String,
    pub comment: Option<String>,
    pub chains: Vec<ChainSnapshot>,
    pub sets: BTreeMap<String, SetSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainSnapshot {
    pub name: String,
    /// `type nat hook output priority -100`, or None for a regular chain.
    pub base: Option<String>,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetSnapshot {
    /// nft type name (`ipv4_addr`) or the kernel's type number.
    pub key: String,
    pub interval: bool,
    /// Elements as `a` or inclusive `a-b`, sorted.
    pub elements: Vec<String>,
}

impl Snapshot {
    pub fn element_count(&self) -> usize {
        self.sets.values().map(|s| s.elements.len()).sum()
    }
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

/// Human-readable differences, `-` expected but missing, `+` present but not expected.
/// Empty when equal. `observed` is None when the table does not exist.
pub fn diff(expected: &Snapshot, observed: Option<&Snapshot>) -> Vec<String> {
    let Some(observed) = observed else {
        return vec![format!("- table inet {} is missing", expected.table)];
    };
    let mut out = Vec::new();
    if expected.comment != observed.comment {
        out.push(format!(
            "~ table comment: expected {}, found {}",
            shown(&expected.comment),
            shown(&observed.comment)
        ));
    }
    for ec in &expected.chains {
        match observed.chains.iter().find(|c| c.name == ec.name) {
            None => out.push(format!("- chain {} is missing", ec.name)),
            Some(oc) => {
                if ec.base != oc.base {
                    out.push(format!(
                        "~ chain {}: expected {}, found {}",
                        ec.name,
                        base_shown(&ec.base),
                        base_shown(&oc.base)
                    ));
                }
                if ec.rules != oc.rules {
                    out.push(format!("~ chain {} rules differ:", ec.name));
                    for r in &ec.rules {
                        if !oc.rules.contains(r) {
                            out.push(format!("-   {r}"));
                        }
                    }
                    for r in &oc.rules {
                        if !ec.rules.contains(r) {
                            out.push(format!("+   {r}"));
                        }
                    }
                    if ec.rules.len() == oc.rules.len()
                        && out.last().is_some_and(|l| l.ends_with("differ:"))
                    {
                        out.push("    (same rules, different order)".into());
                    }
                }
            }
        }
    }
    for oc in &observed.chains {
        if !expected.chains.iter().any(|c| c.name == oc.name) {
            out.push(format!(
                "+ chain {} is not expected ({} rules)",
                oc.name,
                oc.rules.len()
            ));
        }
    }
    for (name, es) in &expected.sets {
        let kind = kind_of(es);
        match observed.sets.get(name) {
            None => out.push(format!("- {kind} {name} is missing")),
            Some(os) => {
                if (&es.key, es.interval) != (&os.key, os.interval) {
                    out.push(format!(
                        "~ {kind} {name}: expected type {} interval={}, found type {} interval={}",
                        es.key, es.interval, os.key, os.interval
                    ));
                }
                if es.elements == os.elements {
                    continue;
                }
                // Sets can hold 100 000 elements: compare through hash sets, not nested scans.
                let want: HashSet<&String> = es.elements.iter().collect();
                let have: HashSet<&String> = os.elements.iter().collect();
                let missing: Vec<&String> =
                    es.elements.iter().filter(|e| !have.contains(e)).collect();
                let extra: Vec<&String> =
                    os.elements.iter().filter(|e| !want.contains(e)).collect();
                if !missing.is_empty() {
                    out.push(format!("- {kind} {name} lacks {}", preview(&missing)));
                }
                if !extra.is_empty() {
                    out.push(format!("+ {kind} {name} also holds {}", preview(&extra)));
                }
            }
        }
    }
    for (name, os) in &observed.sets {
        if !expected.sets.contains_key(name) {
            out.push(format!("+ {} {name} is not expected", kind_of(os)));
        }
    }
    out
}

/// `map` for a verdict map (key `ipv4_addr : verdict`), else `set`.
fn kind_of(s: &SetSnapshot) -> &'static str {
    if s.key.ends_with(": verdict") {
        "map"
    } else {
        "set"
    }
}

/// A comment as nft prints it, quoted, or `no comment`.
fn shown(comment: &Option<String>) -> String {
    match comment {
        Some(c) => format!("\"{c}\""),
        None => "no comment".into(),
    }
}

/// A chain's base as nft writes it, or `a regular chain`.
fn base_shown(base: &Option<String>) -> String {
    match base {
        Some(b) => format!("\"{b}\""),
        None => "a regular chain".into(),
    }
}

/// An element as users write it: an address range `a-b` becomes the CIDRs covering it
/// (`10.0.0.0/8`), a single address or port stays as it is, a port range `a-b` too.
fn element_shown(e: &str) -> String {
    use std::net::IpAddr;
    let Some((a, b)) = e.split_once('-') else {
        return e.to_string();
    };
    let cidrs: Vec<String> = match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) => ipnet::Ipv4Subnets::new(a, b, 0)
            .map(|n| n.to_string())
            .collect(),
        (Ok(IpAddr::V6(a)), Ok(IpAddr::V6(b))) => ipnet::Ipv6Subnets::new(a, b, 0)
            .map(|n| n.to_string())
            .collect(),
        _ => return e.to_string(),
    };
    if cidrs.is_empty() {
        e.to_string()
    } else {
        cidrs.join(", ")
    }
}

/// At most 10 items, then a count, so a 50 000-element drift stays readable.
fn preview(items: &[&String]) -> String {
    let shown: Vec<String> = items.iter().take(10).map(|s| element_shown(s)).collect();
    if items.len() > 10 {
        format!("{} elements: {}, ...", items.len(), shown.join(", "))
    } else {
        shown.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(rules: &[&str], elems: &[&str]) -> Snapshot {
        let mut sets = BTreeMap::new();
        sets.insert(
            "s".to_string(),
            SetSnapshot {
                key: "ipv4_addr".into(),
                interval: true,
                elements: elems.iter().map(|s| s.to_string()).collect(),
            },
        );
        Snapshot {
            table: "t".into(),
            comment: Some("managed by nftkit x".into()),
            chains: vec![ChainSnapshot {
                name: "c".into(),
                base: Some("type nat hook output priority -100".into()),
                rules: rules.iter().map(|s| s.to_string()).collect(),
            }],
            sets,
        }
    }

    #[test]
    fn set_differences_show_cidrs_not_ranges() {
        let want = snap(
            &[],
            &[
                "10.0.0.0-10.255.255.255",
                "192.0.2.7",
                "2001:db8::-2001:db8::ffff",
            ],
        );
        let have = snap(&[], &["192.0.2.8-192.0.2.11", "80-90"]);
        let d = diff(&want, Some(&have)).join("\n");
        assert!(
            d.contains("lacks 10.0.0.0/8, 192.0.2.7, 2001:db8::/112")
                && d.contains("also holds 192.0.2.8/30, 80-90"),
            "{d}"
        );
    }

    #[test]
    fn equal_snapshots_have_no_diff() {
        let a = snap(&["r1", "r2"], &["10.0.0.0-10.255.255.255"]);
        assert!(diff(&a, Some(&a.clone())).is_empty());
    }

    #[test]
    fn diff_names_what_changed() {
        let a = snap(&["r1", "r2"], &["1", "2"]);
        let flushed = snap(&[], &["1"]);
        let d = diff(&a, Some(&flushed)).join("\n");
        assert!(
            d.contains("-   r1") && d.contains("-   r2") && d.contains("lacks 2"),
            "{d}"
        );
        assert_eq!(diff(&a, None), vec!["- table inet t is missing"]);
        let reordered = snap(&["r2", "r1"], &["1", "2"]);
        let mut no_comment = a.clone();
        no_comment.comment = None;
        no_comment.chains[0].base = None;
        let d = diff(&a, Some(&no_comment)).join("\n");
        assert!(
            d.contains("expected \"managed by nftkit x\", found no comment")
                && d.contains(
                    "expected \"type nat hook output priority -100\", found a regular chain"
                )
                && !d.contains("Some("),
            "{d}"
        );
        assert!(
            diff(&a, Some(&reordered))
                .join("\n")
                .contains("different order")
        );
    }

    #[test]
    fn verdict_map_differences_name_the_map_and_its_entries() {
        let map = |entries: &[&str]| {
            let mut s = snap(&[], &[]);
            s.sets.clear();
            s.sets.insert(
                "m".into(),
                SetSnapshot {
                    key: "ipv4_addr : verdict".into(),
                    interval: false,
                    elements: entries.iter().map(|e| e.to_string()).collect(),
                },
            );
            s
        };
        let want = map(&["10.0.0.1 : goto a", "10.0.0.2 : goto b"]);
        let have = map(&["10.0.0.1 : goto b", "10.0.0.2 : goto b"]);
        let d = diff(&want, Some(&have));
        assert_eq!(
            d,
            [
                "- map m lacks 10.0.0.1 : goto a",
                "+ map m also holds 10.0.0.1 : goto b"
            ]
        );
        let d = diff(&want, Some(&snap(&[], &[]))).join("\n");
        assert!(
            d.contains("- map m is missing") && d.contains("+ set s is not expected"),
            "{d}"
        );
    }
}
