//! Where each model chain goes and what it is called: a base chain → the iptables table
//! of its type and priority (nat; raw at priority -300; filter) and the built-in chain of
//! its hook, named `PREFIX-<HOOK>`; a regular chain → `PREFIX-<NAME>` (hashed when long),
//! distinct from every other name.

use nft_compat::{Table, naming};

use super::unsupported;
use crate::error::{Error, Result};
use crate::model::{BaseChain, ChainType, Hook, Ruleset, priority};

/// (model name, iptables name, table and built-in chain of a base chain).
pub(super) type Named = (String, String, Option<(Table, &'static str)>);

/// The iptables table and built-in chain of a base chain.
fn placement(backend: &str, chain: &str, b: BaseChain) -> Result<(Table, &'static str)> {
    let table = match b.kind {
        ChainType::Nat => Table::Nat,
        ChainType::Filter if b.priority == priority::RAW => Table::Raw,
        ChainType::Filter => Table::Filter,
    };
    let builtin = match b.hook {
        Hook::Prerouting => "PREROUTING",
        Hook::Input => "INPUT",
        Hook::Forward => "FORWARD",
        Hook::Output => "OUTPUT",
        Hook::Postrouting => "POSTROUTING",
    };
    if !table.has_builtin(builtin) {
        return Err(unsupported(
            backend,
            format!(
                "base chain {chain} (type {} hook {} priority {}): the iptables table {} has no {builtin} chain",
                b.kind.nft_name(),
                b.hook.nft_name(),
                b.priority,
                table.name()
            ),
        ));
    }
    Ok((table, builtin))
}

/// The [`Named`] of every chain of `rs`, in model order; `prefix` is the table's chain
/// prefix. Exit 2 if the table name leaves no room for the chain names.
pub(super) fn names(backend: &str, rs: &Ruleset, prefix: &str) -> Result<Vec<Named>> {
    let mut names: Vec<Named> = Vec::new();
    let base_names: Vec<String> = rs
        .chains
        .iter()
        .filter_map(|c| c.base)
        .filter_map(|b| placement(backend, "", b).ok())
        .filter_map(|(_, builtin)| naming::base_chain_name(prefix, builtin))
        .collect();
    for c in &rs.chains {
        let (name, place) = match c.base {
            Some(b) => {
                let (table, builtin) = placement(backend, &c.name, b)?;
                (
                    naming::base_chain_name(prefix, builtin),
                    Some((table, builtin)),
                )
            }
            // Hashed names can clash (netpol has a chain per pod): try the next hash.
            None => {
                let taken = |n: &str| {
                    base_names.iter().any(|b| b == n) || names.iter().any(|(_, m, _)| m == n)
                };
                let mut attempt = 0;
                let name = loop {
                    match naming::regular_chain_name_attempt(prefix, &c.name, attempt) {
                        Some(n) if taken(&n) && attempt < 100 => attempt += 1,
                        other => break other,
                    }
                };
                (name, None)
            }
        };
        let name = name.ok_or_else(|| {
            Error::invalid(
                "--table",
                &rs.table,
                format!(
                    "a name of at most {} characters for the iptables backends (chain names `{}-…` must fit {} characters)",
                    naming::MAX_CHAIN_NAME.saturating_sub(10),
                    prefix,
                    naming::MAX_CHAIN_NAME
                ),
            )
        })?;
        names.push((c.name.clone(), name, place));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;

    #[test]
    fn tables_by_type_and_priority_and_regular_chains_follow_jumps() {
        let r = rs(
            vec![
                base(
                    "raw-output",
                    ChainType::Filter,
                    Hook::Output,
                    priority::RAW,
                    vec![rule(
                        vec![
                            Match::Saddr("192.0.2.1/32".parse().unwrap()),
                            Match::Sport {
                                proto: L4Proto::Tcp,
                                port: 443,
                            },
                        ],
                        Action::Notrack,
                    )],
                ),
                base(
                    "filter-forward",
                    ChainType::Filter,
                    Hook::Forward,
                    priority::FILTER,
                    vec![rule(
                        vec![Match::CtState(vec![
                            CtState::Established,
                            CtState::New,
                            CtState::Related,
                        ])],
                        Action::Goto("accepts".into()),
                    )],
                ),
                base(
                    "nat-post",
                    ChainType::Nat,
                    Hook::Postrouting,
                    priority::SRCNAT,
                    vec![rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::FibDaddrLocal { negate: true },
                        ],
                        Action::Jump("IP-MASQ-AGENT".into()),
                    )],
                ),
                Chain {
                    name: "accepts".into(),
                    base: None,
                    rules: vec![rule(vec![], Action::Accept)],
                },
                Chain {
                    name: "IP-MASQ-AGENT".into(),
                    base: None,
                    rules: vec![rule(vec![], Action::Masquerade { fully_random: true })],
                },
            ],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-legacy").unwrap();
        assert_eq!(
            specs(&v4, Table::Raw),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -s 192.0.2.1/32 -p tcp -m tcp --sport 443 {C} -j CT --notrack"
            )]
        );
        assert_eq!(
            specs(&v4, Table::Filter),
            vec![
                format!(
                    "-A NFTKIT-T-FORWARD -m conntrack --ctstate NEW,RELATED,ESTABLISHED {C} -g NFTKIT-T-ACCEPTS"
                ),
                format!("-A NFTKIT-T-ACCEPTS {C} -j ACCEPT"),
            ]
        );
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![
                format!(
                    "-A NFTKIT-T-POSTROUTING -m addrtype ! --dst-type LOCAL {C} -j NFTKIT-T-IP-MASQ-AGENT"
                ),
                format!("-A NFTKIT-T-IP-MASQ-AGENT {C} -j MASQUERADE --random-fully"),
            ]
        );
        // IPv6: the nat jump is IPv4-only, so IP-MASQ-AGENT is unreachable there; the
        // filter chains are family-neutral.
        assert!(v6.table(Table::Raw).unwrap().chains[0].rules.is_empty());
        let nat6 = v6.table(Table::Nat).unwrap();
        assert_eq!(nat6.chains.len(), 1, "{nat6:?}");
        assert!(nat6.chains[0].rules.is_empty());
        assert_eq!(specs(&v6, Table::Filter).len(), 2);
    }

    #[test]
    fn clashing_hashed_chain_names_are_resolved() {
        // Two long names whose first hashed forms clash (found by search; 24-bit hash).
        let prefix = naming::prefix("nftkit-t");
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..200_000)
            .find_map(|i| {
                let name = format!("ingress/some-namespace/pod-{i}");
                let n = naming::regular_chain_name(&prefix, &name).unwrap();
                seen.insert(n, name.clone()).map(|other| (other, name))
            })
            .expect("a clash within 200 000 names");
        let chain = |name: &str| Chain {
            name: name.into(),
            base: None,
            rules: vec![rule(vec![], Action::Drop)],
        };
        let r = rs(
            vec![
                base(
                    "fwd",
                    ChainType::Filter,
                    Hook::Forward,
                    0,
                    vec![
                        rule(
                            vec![Match::Daddr("10.0.0.1/32".parse().unwrap())],
                            Action::Jump(a.clone()),
                        ),
                        rule(
                            vec![Match::Daddr("10.0.0.2/32".parse().unwrap())],
                            Action::Jump(b.clone()),
                        ),
                    ],
                ),
                chain(&a),
                chain(&b),
            ],
            vec![],
        );
        let [v4, _] = lower(&r, "iptables-nft").unwrap();
        let t = v4.table(Table::Filter).unwrap();
        assert_eq!(t.chains.len(), 3);
        assert_ne!(t.chains[1].name, t.chains[2].name);
        assert!(t.chains[0].rules[0].ends_with(&t.chains[1].name));
        assert!(t.chains[0].rules[1].ends_with(&t.chains[2].name));
    }
}
