//! Actions → iptables targets: the verdict of each model action, the constraints an
//! action adds (a DNAT target fixes the family; a DNAT map gives one alternative per
//! entry, a verdict map one `-s/-d ADDR -g CHAIN` per entry, in entry order), and which
//! targets each iptables table accepts.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use nft_compat::Table;
use nft_compat::rule::Target;

use super::constraint::C;
use super::unsupported;
use crate::error::Result;
use crate::model::{Action, AddrField, Element, IpFamily, Ruleset};

/// What an action needs from the rule, and its iptables target (chain references are
/// model names here, resolved per table later).
pub(super) enum Verdict {
    Target(String),
    Jump(String),
    Goto(String),
}

/// The constraints an action adds (one list per alternative: a DNAT map or a verdict map
/// gives one per entry) and its verdict.
pub(super) fn action(backend: &str, rs: &Ruleset, a: &Action) -> Result<(Vec<Vec<C>>, Verdict)> {
    let plain = |t: &str| (vec![Vec::new()], Verdict::Target(t.to_string()));
    Ok(match a {
        Action::Accept => plain("ACCEPT"),
        Action::Drop => plain("DROP"),
        Action::Return => plain("RETURN"),
        // Only counts and logs in nf_tables (refused with them); without a verdict an
        // iptables rule has nothing to do: no alternatives, no rule.
        Action::Continue => (Vec::new(), Verdict::Target(String::new())),
        Action::Jump(c) => (vec![Vec::new()], Verdict::Jump(c.clone())),
        Action::Goto(c) => (vec![Vec::new()], Verdict::Goto(c.clone())),
        // One `-s/-d ADDR -g CHAIN` per entry; the target is per entry (`C::GotoTo`). An
        // empty map: no alternatives, no rule (every lookup misses).
        Action::GotoMap { family, field, map } => {
            let m = rs.map(map).ok_or_else(|| {
                unsupported(backend, format!("a reference to the undeclared map @{map}"))
            })?;
            let opts = m
                .entries
                .iter()
                .map(|(e, chain)| {
                    let net: IpNet = match (family, e) {
                        (IpFamily::V4, Element::V4(n)) => (*n).into(),
                        (IpFamily::V6, Element::V6(n)) => (*n).into(),
                        _ => {
                            return Err(unsupported(
                                backend,
                                format!("map @{map}: key {e:?} does not fit the rule that uses it"),
                            ));
                        }
                    };
                    let addr = match field {
                        AddrField::Saddr => C::Src(net),
                        AddrField::Daddr => C::Dst(net),
                    };
                    Ok(vec![C::Family(*family), addr, C::GotoTo(chain.clone())])
                })
                .collect::<Result<Vec<_>>>()?;
            (opts, Verdict::Target(String::new()))
        }
        Action::Notrack => plain("CT --notrack"),
        Action::Masquerade {
            fully_random: false,
        } => plain("MASQUERADE"),
        Action::Masquerade { fully_random: true } => plain("MASQUERADE --random-fully"),
        Action::Redirect { port } => plain(&format!("REDIRECT --to-ports {port}")),
        Action::Dnat { addr, port } => {
            let fam = IpFamily::of(&IpNet::from(*addr));
            (
                vec![vec![C::Family(fam)]],
                Verdict::Target(format!(
                    "DNAT --to-destination {}",
                    ipt_addr_port(&SocketAddr::new(*addr, *port))
                )),
            )
        }
        Action::DnatMap {
            family,
            proto,
            entries,
        } => {
            let opts = entries
                .iter()
                .map(|(orig, target)| {
                    vec![
                        C::Family(*family),
                        C::Dst(IpNet::from(orig.ip())),
                        C::Dport(*proto, orig.port(), orig.port()),
                        C::DnatTo(*target),
                    ]
                })
                .collect();
            // The target text is per entry: `lower_rule` takes it from `dnat_to`.
            (opts, Verdict::Target(String::new()))
        }
    })
}

pub(super) fn ipt_addr_port(sa: &SocketAddr) -> String {
    match sa.ip() {
        IpAddr::V4(a) => format!("{a}:{}", sa.port()),
        IpAddr::V6(a) => format!("[{a}]:{}", sa.port()),
    }
}

/// Targets an iptables table accepts (the kernel refuses the others there; we say so
/// before sending anything).
pub(super) fn check_target(backend: &str, table: Table, chain: &str, t: &Target) -> Result<()> {
    let Target::Jump(t) = t else { return Ok(()) };
    let name = t.split_whitespace().next().unwrap_or("");
    let needs = match name {
        "DROP" if table == Table::Nat => {
            Some("a table other than nat (iptables refuses DROP in nat)")
        }
        "CT" if table != Table::Raw => Some("the raw table (priority -300)"),
        "MASQUERADE" | "REDIRECT" | "DNAT" if table != Table::Nat => Some("a nat chain"),
        _ => None,
    };
    match needs {
        Some(n) => Err(unsupported(
            backend,
            format!(
                "-j {name} in chain {chain} of table {}: it needs {n}",
                table.name()
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn families_split_and_dnat_per_family() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![
                    rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::L4Proto {
                                proto: L4Proto::Tcp,
                                negate: false,
                            },
                        ],
                        Action::Dnat {
                            addr: "203.0.113.10".parse().unwrap(),
                            port: 15001,
                        },
                    ),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 80,
                        }],
                        Action::Dnat {
                            addr: "2001:db8::10".parse().unwrap(),
                            port: 8080,
                        },
                    ),
                    rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::Daddr("2001:db8::/32".parse().unwrap()),
                        ],
                        Action::Return,
                    ),
                ],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -p tcp {C} -j DNAT --to-destination 203.0.113.10:15001"
            )]
        );
        assert_eq!(
            specs(&v6, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -p tcp -m tcp --dport 80 {C} -j DNAT --to-destination [2001:db8::10]:8080"
            )]
        );
    }

    #[test]
    fn dnat_map_becomes_one_rule_per_entry() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![rule(
                    vec![],
                    Action::DnatMap {
                        family: IpFamily::V4,
                        proto: L4Proto::Tcp,
                        entries: vec![(
                            "169.254.169.254:80".parse().unwrap(),
                            "198.51.100.5:8080".parse().unwrap(),
                        )],
                    },
                )],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 {C} -j DNAT --to-destination 198.51.100.5:8080"
            )]
        );
        assert!(v6.is_empty());
    }

    #[test]
    fn a_verdict_map_becomes_one_goto_per_entry_in_its_family() {
        use crate::model::fixtures::vmap;
        use crate::model::{AddrField, KeyType, VerdictMap};
        let regular = |name: &str, action| Chain {
            name: name.into(),
            base: None,
            rules: vec![rule(vec![], action)],
        };
        let mut r = rs(
            vec![
                base(
                    "fwd",
                    ChainType::Filter,
                    Hook::Forward,
                    priority::FILTER,
                    vec![
                        vmap(IpFamily::V4, AddrField::Daddr, "m"),
                        vmap(IpFamily::V6, AddrField::Saddr, "m6"),
                        vmap(IpFamily::V4, AddrField::Saddr, "empty"),
                    ],
                ),
                regular("a", Action::Drop),
                regular("b", Action::Accept),
            ],
            vec![],
        );
        let v4 = |a: &str| Element::V4(a.parse().unwrap());
        r.maps = vec![
            VerdictMap {
                name: "m".into(),
                key: KeyType::Ipv4Addr,
                entries: vec![
                    (v4("10.0.0.2/32"), "b".into()),
                    (v4("10.0.0.1/32"), "a".into()),
                ],
            },
            VerdictMap {
                name: "m6".into(),
                key: KeyType::Ipv6Addr,
                entries: vec![(Element::V6("fd00::1/128".parse().unwrap()), "a".into())],
            },
            VerdictMap {
                name: "empty".into(),
                key: KeyType::Ipv4Addr,
                entries: vec![],
            },
        ];
        let [v4s, v6s] = lower(&r, "iptables-legacy").unwrap();
        let (a, b) = ("NFTKIT-T-A", "NFTKIT-T-B");
        assert_eq!(
            specs(&v4s, Table::Filter),
            vec![
                format!("-A NFTKIT-T-FORWARD -d 10.0.0.2/32 {C} -g {b}"),
                format!("-A NFTKIT-T-FORWARD -d 10.0.0.1/32 {C} -g {a}"),
                format!("-A {a} {C} -j DROP"),
                format!("-A {b} {C} -j ACCEPT"),
            ]
        );
        // The IPv6 map's chain only: b is reached in IPv4 alone.
        assert_eq!(
            specs(&v6s, Table::Filter),
            vec![
                format!("-A NFTKIT-T-FORWARD -s fd00::1/128 {C} -g {a}"),
                format!("-A {a} {C} -j DROP"),
            ]
        );
        // A missing map, or a key of the other family, is refused by name.
        let mut missing = r.clone();
        missing.maps.clear();
        let e = lower(&missing, "iptables-nft").unwrap_err().to_string();
        assert!(e.contains("undeclared map @m"), "{e}");
        let mut mixed = r.clone();
        mixed.maps[0].entries[0].0 = Element::V6("fd00::2/128".parse().unwrap());
        let e = lower(&mixed, "iptables-nft").unwrap_err().to_string();
        assert!(e.contains("map @m: key"), "{e}");
    }
}
