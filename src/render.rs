//! Ruleset -> nft script text: `--dry-run` output, golden files and logs.
//!
//! The script replaces the owned table the way the netlink backend does (declare, delete,
//! recreate), so `nft -f` of it is loadable repeatedly and has the same effect as an apply.

use std::fmt::Write;

use crate::model::{Action, Chain, Element, IpFamily, Match, Rule, Ruleset, Set, VerdictMap};

/// The whole replace script for `rs`.
pub fn nft_script(rs: &Ruleset) -> String {
    let mut out = String::new();
    // Declaring first makes the delete succeed whether or not the table exists.
    let _ = writeln!(out, "table inet {}", rs.table);
    let _ = writeln!(out, "delete table inet {}", rs.table);
    out.push_str(&nft_table(rs));
    out
}

/// The table definition alone, in the layout `nft list table` uses.
pub fn nft_table(rs: &Ruleset) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "table inet {} {{", rs.table);
    let _ = writeln!(out, "\tcomment {}", quote(&rs.comment));
    for counter in rs.counters() {
        out.push('\n');
        let _ = writeln!(out, "\tcounter {counter} {{");
        let _ = writeln!(out, "\t\tcomment {}", quote(&rs.comment));
        let _ = writeln!(out, "\t}}");
    }
    for (limit, per_second) in rs.limits() {
        out.push('\n');
        let _ = writeln!(out, "\tlimit {limit} {{");
        let _ = writeln!(out, "\t\tcomment {}", quote(&rs.comment));
        let _ = writeln!(out, "\t\trate {per_second}/second");
        let _ = writeln!(out, "\t}}");
    }
    for set in &rs.sets {
        out.push('\n');
        render_set(&mut out, set, &rs.comment);
    }
    for map in &rs.maps {
        out.push('\n');
        render_map(&mut out, map, &rs.comment);
    }
    for chain in &rs.chains {
        out.push('\n');
        render_chain(&mut out, chain, &rs.comment);
    }
    out.push_str("}\n");
    out
}

fn render_set(out: &mut String, set: &Set, comment: &str) {
    let _ = writeln!(out, "\tset {} {{", set.name);
    let _ = writeln!(out, "\t\ttype {}", set.key.nft_name());
    if set.interval {
        let _ = writeln!(out, "\t\tflags interval");
    }
    if !set.elements.is_empty() {
        let items: Vec<String> = set.elements.iter().map(element).collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
    }
    let _ = writeln!(out, "\t\tcomment {}", quote(comment));
    let _ = writeln!(out, "\t}}");
}

/// `map NAME { type K : verdict; elements = { A : goto C, ... } }`, as nft lists it.
fn render_map(out: &mut String, map: &VerdictMap, comment: &str) {
    let _ = writeln!(out, "\tmap {} {{", map.name);
    let _ = writeln!(out, "\t\ttype {} : verdict", map.key.nft_name());
    if !map.entries.is_empty() {
        let items: Vec<String> = map
            .entries
            .iter()
            .map(|(e, chain)| map_entry(e, chain))
            .collect();
        let _ = writeln!(out, "\t\telements = {{ {} }}", items.join(", "));
    }
    let _ = writeln!(out, "\t\tcomment {}", quote(comment));
    let _ = writeln!(out, "\t}}");
}

/// One verdict map entry as nft prints it: `10.0.0.1 : goto CHAIN`.
pub fn map_entry(key: &Element, chain: &str) -> String {
    format!("{} : goto {chain}", element(key))
}

fn render_chain(out: &mut String, chain: &Chain, comment: &str) {
    let _ = writeln!(out, "\tchain {} {{", chain.name);
    let _ = writeln!(out, "\t\tcomment {}", quote(comment));
    if let Some(base) = chain.base {
        let _ = writeln!(
            out,
            "\t\ttype {} hook {} priority {}; policy accept;",
            base.kind.nft_name(),
            base.hook.nft_name(),
            base.priority
        );
    }
    for rule in &chain.rules {
        let _ = writeln!(out, "\t\t{} comment {}", rule_text(rule), quote(comment));
    }
    let _ = writeln!(out, "\t}}");
}

/// A rule's body in nft syntax, without its comment.
pub fn rule_text(rule: &Rule) -> String {
    let mut parts: Vec<String> = rule.matches.iter().map(match_text).collect();
    if rule.action != Action::Continue {
        parts.push(action_text(&rule.action));
    }
    parts.join(" ")
}

fn family_kw(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "ip",
        IpFamily::V6 => "ip6",
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::NfProto(IpFamily::V4) => "meta nfproto ipv4".into(),
        Match::NfProto(IpFamily::V6) => "meta nfproto ipv6".into(),
        Match::L4Proto { proto, negate } => {
            format!(
                "meta l4proto {}{}",
                if *negate { "!= " } else { "" },
                proto.nft_name()
            )
        }
        Match::DaddrInSet { family, set } => format!("{} daddr @{set}", family_kw(*family)),
        Match::Daddr(net) => match net {
            ipnet::IpNet::V4(n) => format!("ip daddr {}", element(&Element::V4(*n))),
            ipnet::IpNet::V6(n) => format!("ip6 daddr {}", element(&Element::V6(*n))),
        },
        Match::SaddrInSet { family, set } => format!("{} saddr @{set}", family_kw(*family)),
        Match::Saddr(net) => match net {
            ipnet::IpNet::V4(n) => format!("ip saddr {}", element(&Element::V4(*n))),
            ipnet::IpNet::V6(n) => format!("ip6 saddr {}", element(&Element::V6(*n))),
        },
        Match::Dport { proto, port } => format!("{} dport {port}", proto.nft_name()),
        Match::Sport { proto, port } => format!("{} sport {port}", proto.nft_name()),
        Match::DportRange { proto, first, last } => {
            format!("{} dport {first}-{last}", proto.nft_name())
        }
        Match::FibDaddrLocal { negate } => {
            format!("fib daddr type {}local", if *negate { "!= " } else { "" })
        }
        Match::CtState(states) => {
            let names: Vec<&str> = states.iter().map(|s| s.nft_name()).collect();
            format!("ct state {}", names.join(","))
        }
        Match::DportInSet { proto, set } => format!("{} dport @{set}", proto.nft_name()),
        Match::OwnerInSet { owner, set } => format!("meta {} @{set}", owner.nft_key()),
        Match::OwnerRange { owner, first, last } => {
            format!("meta {} {first}-{last}", owner.nft_key())
        }
        Match::Count { counter } => format!("counter name {}", quote(counter)),
        Match::Limit { name, .. } => format!("limit name {}", quote(name)),
        Match::Log { group, prefix } => format!("log prefix {} group {group}", quote(prefix)),
    }
}

fn action_text(a: &Action) -> String {
    match a {
        Action::Accept => "accept".into(),
        Action::Drop => "drop".into(),
        Action::Jump(chain) => format!("jump {chain}"),
        Action::Goto(chain) => format!("goto {chain}"),
        Action::GotoMap { family, field, map } => format!(
            "{} {} vmap @{map}",
            match family {
                IpFamily::V4 => "ip",
                IpFamily::V6 => "ip6",
            },
            field.nft_name()
        ),
        Action::Notrack => "notrack".into(),
        Action::Masquerade {
            fully_random: false,
        } => "masquerade".into(),
        Action::Masquerade { fully_random: true } => "masquerade fully-random".into(),
        Action::Return => "return".into(),
        Action::Continue => String::new(),
        Action::Redirect { port } => format!("redirect to :{port}"),
        Action::Dnat {
            addr: std::net::IpAddr::V4(a),
            port,
        } => format!("dnat ip to {a}:{port}"),
        Action::Dnat {
            addr: std::net::IpAddr::V6(a),
            port,
        } => format!("dnat ip6 to [{a}]:{port}"),
        Action::DnatMap {
            family,
            proto,
            entries,
        } => dnat_map_text(*family, *proto, entries),
    }
}

/// `dnat ip to ip daddr . tcp dport map { A . P : B . Q, ... }`, as nft lists it.
pub fn dnat_map_text(
    family: IpFamily,
    proto: crate::model::L4Proto,
    entries: &[(std::net::SocketAddr, std::net::SocketAddr)],
) -> String {
    let fam = family_kw(family);
    let items: Vec<String> = entries
        .iter()
        .map(|(o, t)| format!("{} . {} : {} . {}", o.ip(), o.port(), t.ip(), t.port()))
        .collect();
    format!(
        "dnat {fam} to {fam} daddr . {} dport map {{ {} }}",
        proto.nft_name(),
        items.join(", ")
    )
}

/// An element as nft prints it: host prefixes without their length.
pub fn element(e: &Element) -> String {
    e.to_string()
}

/// nft string literal. Comments are ours (no quotes inside), but escape anyway.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "'"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AddrField, KeyType};

    #[test]
    fn verdict_maps_are_declared_after_the_sets_and_used_by_vmap_rules() {
        let rs = Ruleset {
            table: "t".into(),
            comment: "ours".into(),
            sets: vec![Set {
                name: "s".into(),
                key: KeyType::InetService,
                interval: false,
                elements: vec![Element::Port(80)],
            }],
            maps: vec![VerdictMap {
                name: "m".into(),
                key: KeyType::Ipv4Addr,
                entries: vec![
                    (Element::V4("10.0.0.1/32".parse().unwrap()), "a".into()),
                    (Element::V4("10.0.0.2/32".parse().unwrap()), "b".into()),
                ],
            }],
            chains: vec![Chain {
                name: "a".into(),
                base: None,
                rules: vec![Rule {
                    matches: vec![],
                    action: Action::GotoMap {
                        family: IpFamily::V6,
                        field: AddrField::Saddr,
                        map: "m6".into(),
                    },
                }],
            }],
        };
        let text = nft_table(&rs);
        let want = "\tmap m {\n\t\ttype ipv4_addr : verdict\n\t\telements = { 10.0.0.1 : goto a, 10.0.0.2 : goto b }\n\t\tcomment \"ours\"\n\t}\n";
        assert!(text.contains(want), "{text}");
        assert!(text.find("set s {").unwrap() < text.find("map m {").unwrap());
        assert!(text.find("map m {").unwrap() < text.find("chain a {").unwrap());
        assert!(
            text.contains("\t\tip6 saddr vmap @m6 comment \"ours\"\n"),
            "{text}"
        );
        // An empty map has no elements line.
        let mut empty = rs.clone();
        empty.maps[0].entries.clear();
        assert!(!nft_table(&empty).contains("elements = { 10"));
    }
}
