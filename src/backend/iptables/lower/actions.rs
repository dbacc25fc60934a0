//! Actions → iptables targets: the verdict of each model action, the constraints an
//! action adds (a DNAT target fixes the family; a DNAT map gives one alternative per
//! entry), and which targets each iptables table accepts.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use nft_compat::Table;
use nft_compat::rule::Target;

use super::constraint::C;
use super::unsupported;
use crate::error::Result;
use crate::model::{Action, IpFamily};

/// What an action needs from the rule, and its iptables target (chain references are
/// model names here, resolved per table later).
pub(super) enum Verdict {
    Target(String),
    Jump(String),
    Goto(String),
}

/// The constraints an action adds (one list per alternative: a DNAT map gives one per
/// entry) and its verdict.
pub(super) fn action(a: &Action) -> (Vec<Vec<C>>, Verdict) {
    let plain = |t: &str| (vec![Vec::new()], Verdict::Target(t.to_string()));
    match a {
        Action::Accept => plain("ACCEPT"),
        Action::Drop => plain("DROP"),
        Action::Return => plain("RETURN"),
        // Only counts and logs in nf_tables (refused with them); without a verdict an
        // iptables rule has nothing to do: no alternatives, no rule.
        Action::Continue => (Vec::new(), Verdict::Target(String::new())),
        Action::Jump(c) => (vec![Vec::new()], Verdict::Jump(c.clone())),
        Action::Goto(c) => (vec![Vec::new()], Verdict::Goto(c.clone())),
        // Not lowered yet: no rule (nothing builds one yet).
        Action::GotoMap { .. } => (Vec::new(), Verdict::Target(String::new())),
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
    }
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
}
