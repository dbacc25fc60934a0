//! The constraints each model match allows, as alternatives of [`C`]: one for a plain
//! match, one per element for a set match (an empty set: none, so the rule matches
//! nothing), and the iptables text of the `-m` modules (conntrack, owner, addrtype).

use ipnet::IpNet;

use super::constraint::C;
use super::unsupported;
use crate::error::Result;
use crate::model::{CtState, Element, IpFamily, Match, Owner, Ruleset};

/// `--ctstate` in the order iptables-save prints states.
fn ctstate_text(states: &[CtState]) -> String {
    const ORDER: [(CtState, &str); 5] = [
        (CtState::Invalid, "INVALID"),
        (CtState::New, "NEW"),
        (CtState::Related, "RELATED"),
        (CtState::Established, "ESTABLISHED"),
        (CtState::Untracked, "UNTRACKED"),
    ];
    ORDER
        .iter()
        .filter(|(s, _)| states.contains(s))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn owner_text(owner: Owner, first: u32, last: u32) -> String {
    let flag = match owner {
        Owner::Uid => "--uid-owner",
        Owner::Gid => "--gid-owner",
    };
    // iptables refuses the range form a-a.
    if first == last {
        format!("-m owner {flag} {first}")
    } else {
        format!("-m owner {flag} {first}-{last}")
    }
}

/// Elements of set `name`, checked against what the match needs.
fn set_elements<'a>(backend: &str, rs: &'a Ruleset, name: &str) -> Result<&'a [Element]> {
    rs.set(name).map(|s| s.elements.as_slice()).ok_or_else(|| {
        unsupported(
            backend,
            format!("a reference to the undeclared set @{name}"),
        )
    })
}

/// The alternatives one match allows (a set gives one per element).
pub(super) fn options(backend: &str, rs: &Ruleset, m: &Match) -> Result<Vec<Vec<C>>> {
    let one = |c: C| Ok(vec![vec![c]]);
    let bad_element = |set: &str, e: &Element| {
        unsupported(
            backend,
            format!("set @{set}: element {e:?} does not fit the match that uses it"),
        )
    };
    match m {
        Match::NfProto(f) => one(C::Family(*f)),
        Match::L4Proto {
            proto,
            negate: false,
        } => one(C::Proto(*proto)),
        Match::L4Proto {
            proto,
            negate: true,
        } => one(C::NotProto(*proto)),
        Match::Daddr(n) => one(C::Dst(*n)),
        Match::Saddr(n) => one(C::Src(*n)),
        Match::DaddrInSet { family, set } | Match::SaddrInSet { family, set } => {
            let dst = matches!(m, Match::DaddrInSet { .. });
            set_elements(backend, rs, set)?
                .iter()
                .map(|e| {
                    let net: IpNet = match (family, e) {
                        (IpFamily::V4, Element::V4(n)) => (*n).into(),
                        (IpFamily::V6, Element::V6(n)) => (*n).into(),
                        _ => return Err(bad_element(set, e)),
                    };
                    Ok(vec![if dst { C::Dst(net) } else { C::Src(net) }])
                })
                .collect()
        }
        Match::Dport { proto, port } => one(C::Dport(*proto, *port, *port)),
        Match::Sport { proto, port } => one(C::Sport(*proto, *port, *port)),
        Match::DportRange { proto, first, last } => one(C::Dport(*proto, *first, *last)),
        Match::DportInSet { proto, set } => set_elements(backend, rs, set)?
            .iter()
            .map(|e| match e {
                Element::Port(p) => Ok(vec![C::Dport(*proto, *p, *p)]),
                _ => Err(bad_element(set, e)),
            })
            .collect(),
        Match::FibDaddrLocal { negate } => one(C::Extra(format!(
            "-m addrtype {}--dst-type LOCAL",
            if *negate { "! " } else { "" }
        ))),
        Match::CtState(states) => {
            if states.is_empty() {
                return Ok(Vec::new());
            }
            one(C::Extra(format!(
                "-m conntrack --ctstate {}",
                ctstate_text(states)
            )))
        }
        Match::OwnerInSet { owner, set } => set_elements(backend, rs, set)?
            .iter()
            .map(|e| match e {
                Element::Id(id) => Ok(vec![C::Extra(owner_text(*owner, *id, *id))]),
                _ => Err(bad_element(set, e)),
            })
            .collect(),
        Match::OwnerRange { owner, first, last } => {
            one(C::Extra(owner_text(*owner, *first, *last)))
        }
        // iptables counts every rule itself (`iptables -L -v`); no named counters.
        Match::Count { .. } => Ok(vec![vec![]]),
        Match::Limit { .. } | Match::Log { .. } => Err(unsupported(
            backend,
            "verdict logging (a named limit and an nflog group)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn sets_multiply_out_and_empty_sets_match_nothing() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![
                    rule(
                        vec![
                            Match::DportInSet {
                                proto: L4Proto::Tcp,
                                set: "ports".into(),
                            },
                            Match::OwnerInSet {
                                owner: Owner::Uid,
                                set: "uids".into(),
                            },
                            Match::OwnerRange {
                                owner: Owner::Gid,
                                first: 7,
                                last: 7,
                            },
                        ],
                        Action::Return,
                    ),
                    rule(
                        vec![Match::DaddrInSet {
                            family: IpFamily::V4,
                            set: "empty".into(),
                        }],
                        Action::Return,
                    ),
                ],
            )],
            vec![
                Set {
                    name: "ports".into(),
                    key: crate::model::KeyType::InetService,
                    interval: false,
                    elements: vec![Element::Port(80), Element::Port(443)],
                },
                Set {
                    name: "uids".into(),
                    key: crate::model::KeyType::Uid,
                    interval: false,
                    elements: vec![Element::Id(0), Element::Id(1010)],
                },
                Set {
                    name: "empty".into(),
                    key: crate::model::KeyType::Ipv4Addr,
                    interval: true,
                    elements: vec![],
                },
            ],
        );
        let [v4, _] = lower(&r, "iptables-nft").unwrap();
        let got = specs(&v4, Table::Nat);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            format!(
                "-A NFTKIT-T-OUTPUT -p tcp -m tcp --dport 80 -m owner --uid-owner 0 -m owner --gid-owner 7 {C} -j RETURN"
            )
        );
        assert!(
            got[3].contains("--dport 443 -m owner --uid-owner 1010"),
            "{got:?}"
        );
    }
}
