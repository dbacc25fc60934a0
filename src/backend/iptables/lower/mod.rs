//! Lowering: nftkit's model → the owned iptables state of each family
//! ([`FamilyState`]), in iptables-save's canonical text. Pure; no I/O.
//!
//! Each model rule becomes the conjunction of its matches' constraints; a set match
//! contributes one alternative per element, a DNAT map one per entry, so a rule becomes
//! the cross product (contradictions dropped: an IPv4 address in an IPv6 rule, two
//! disjoint prefixes, two different ports). What iptables cannot say is an error naming
//! the backend and the feature.
//!
//! Here: assembling the families (which chains each table needs, the jumps into them).
//! `chains`: placement and names; `rule`: one rule's cross product; `matches` and
//! `actions`: what each match and action contributes.

use std::collections::BTreeSet;

use nft_compat::Table;
use nft_compat::naming;
use nft_compat::rule::{Rule as IptRule, Target};
use nft_compat::state::{FamilyState, Jump, OwnedChain, TableState};

use crate::error::{Error, Result};
use crate::model::{Chain, IpFamily, Ruleset};

mod actions;
mod chains;
mod constraint;
mod matches;
mod rule;

use actions::check_target;
use rule::{Lowered, lower_rule};

fn unsupported(backend: &str, what: impl std::fmt::Display) -> Error {
    Error::Unsupported {
        backend: backend.to_string(),
        what: what.to_string(),
    }
}

/// The desired owned state of `rs`, IPv4 then IPv6. `backend` names the flavour in errors.
pub fn lower(rs: &Ruleset, backend: &str) -> Result<[FamilyState; 2]> {
    let prefix = naming::prefix(&rs.table);
    let names = chains::names(backend, rs, &prefix)?;
    let ipt_name = |model: &str| -> Result<&str> {
        names
            .iter()
            .find(|(m, _, _)| m == model)
            .map(|(_, n, _)| n.as_str())
            .ok_or_else(|| unsupported(backend, format!("a jump to the undeclared chain {model}")))
    };

    // Lower every rule once.
    let mut lowered: Vec<(&Chain, Vec<Lowered>)> = Vec::new();
    for c in &rs.chains {
        let mut rules = Vec::new();
        for r in &c.rules {
            rules.extend(lower_rule(backend, rs, &c.name, r)?);
        }
        lowered.push((c, rules));
    }

    let mut out: [FamilyState; 2] = Default::default();
    for (slot, family) in [(0usize, IpFamily::V4), (1, IpFamily::V6)] {
        let in_family = |l: &&Lowered| l.family.is_none_or(|f| f == family);
        let mut tables: Vec<TableState> = Vec::new();
        for table in Table::ALL {
            // Base chains of this table, by priority (lowest first = first jumped to).
            let mut bases: Vec<(&Chain, &'static str)> = rs
                .chains
                .iter()
                .zip(&names)
                .filter_map(|(c, (_, _, place))| match place {
                    Some((t, b)) if *t == table => Some((c, *b)),
                    _ => None,
                })
                .collect();
            if bases.is_empty() {
                continue;
            }
            bases.sort_by_key(|(c, _)| c.base.map(|b| b.priority));
            // Chains reachable in this family from these base chains, in model order.
            let mut reach: BTreeSet<&str> = bases.iter().map(|(c, _)| c.name.as_str()).collect();
            let mut queue: Vec<&str> = reach.iter().copied().collect();
            while let Some(cur) = queue.pop() {
                let Some((_, rules)) = lowered.iter().find(|(c, _)| c.name == cur) else {
                    continue;
                };
                for l in rules.iter().filter(in_family) {
                    if let Some(t) = &l.refers
                        && reach.insert(t.as_str())
                    {
                        queue.push(t.as_str());
                    }
                }
            }
            let mut chains = Vec::new();
            for (c, rules) in lowered
                .iter()
                .filter(|(c, _)| reach.contains(c.name.as_str()))
            {
                let name = ipt_name(&c.name)?.to_string();
                let mut specs = Vec::new();
                for l in rules.iter().filter(in_family) {
                    let mut rule = l.rule.clone();
                    if let Some(model) = &l.refers {
                        let target = ipt_name(model)?.to_string();
                        rule.target = match rule.target {
                            Target::Goto(_) => Target::Goto(target),
                            Target::Jump(_) => Target::Jump(target),
                        };
                    }
                    check_target(backend, table, &c.name, &rule.target)?;
                    specs.push(rule.spec());
                }
                chains.push(OwnedChain { name, rules: specs });
            }
            let mut seen = BTreeSet::new();
            for c in &chains {
                if !seen.insert(c.name.as_str()) {
                    return Err(unsupported(
                        backend,
                        format!(
                            "two chains that both become {} in table {} (one base chain per hook and table)",
                            c.name,
                            table.name()
                        ),
                    ));
                }
            }
            let jumps = bases
                .iter()
                .map(|(c, builtin)| {
                    let mut j = IptRule::new(Target::Jump(ipt_name(&c.name)?.to_string()));
                    j.comment = Some(rs.comment.clone());
                    Ok(Jump {
                        from: builtin.to_string(),
                        spec: j.spec(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            tables.push(TableState {
                table,
                chains,
                jumps,
            });
        }
        let fam = FamilyState { tables };
        // A family with no rule at all is left alone (no empty chains, no jumps).
        if fam.rule_count() > 0 {
            out[slot] = fam;
        }
    }
    Ok(out)
}

/// Builders shared by the lowering tests of every submodule.
#[cfg(test)]
mod fixtures {
    pub(super) use super::lower;
    pub(super) use crate::model::{
        Action, BaseChain, Chain, ChainType, CtState, Element, Hook, IpFamily, L4Proto, Match,
        Owner, Rule, Ruleset, Set, priority,
    };
    pub(super) use nft_compat::state::{FamilyState, Jump};
    pub(super) use nft_compat::{Table, naming};

    pub(super) const C: &str = r#"-m comment --comment "managed by nftkit t""#;

    pub(super) fn rs(chains: Vec<Chain>, sets: Vec<Set>) -> Ruleset {
        Ruleset {
            table: "nftkit-t".into(),
            comment: "managed by nftkit t".into(),
            sets,
            maps: Vec::new(),
            chains,
        }
    }

    pub(super) fn base(
        name: &str,
        kind: ChainType,
        hook: Hook,
        prio: i32,
        rules: Vec<Rule>,
    ) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority: prio,
            }),
            rules,
        }
    }

    pub(super) fn rule(matches: Vec<Match>, action: Action) -> Rule {
        Rule { matches, action }
    }

    pub(super) fn specs(f: &FamilyState, table: Table) -> Vec<String> {
        f.table(table)
            .map(|t| {
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(move |r| format!("-A {} {r}", c.name)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{owned_prefixes, owner_comment, snapshot};
    use super::fixtures::*;
    use super::*;
    use nft_compat::save;

    #[test]
    fn redirect_default_lowers_to_canonical_lines() {
        let cfg = crate::jobs::redirect::parse(
            &Default::default(),
            &|_| None,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let r = crate::jobs::redirect::build(&cfg, Default::default(), "nftkit-redirect");
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        let c = r#"-m comment --comment "managed by nftkit redirect""#;
        let ch = "-A NFTKIT-REDIRECT-OUTPUT";
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![
                format!("{ch} ! -p tcp {c} -j RETURN"),
                format!("{ch} -d 10.0.0.0/8 {c} -j RETURN"),
                format!("{ch} -d 127.0.0.0/8 {c} -j RETURN"),
                format!("{ch} -d 172.16.0.0/12 {c} -j RETURN"),
                format!("{ch} -d 192.168.0.0/16 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 -m owner --uid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 443 -m owner --uid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 -m owner --gid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 443 -m owner --gid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 {c} -j REDIRECT --to-ports 10080"),
                format!("{ch} -p tcp -m tcp --dport 443 {c} -j REDIRECT --to-ports 10443"),
            ]
        );
        let v6s = specs(&v6, Table::Nat);
        assert!(
            v6s.contains(&format!("{ch} -d ::1/128 {c} -j RETURN")),
            "{v6s:?}"
        );
        assert!(
            v6s.contains(&format!("{ch} -d fc00::/7 {c} -j RETURN")),
            "{v6s:?}"
        );
        assert!(!v6s.iter().any(|s| s.contains("10.0.0.0")), "{v6s:?}");
        assert_eq!(
            v4.table(Table::Nat).unwrap().jumps,
            vec![Jump {
                from: "OUTPUT".into(),
                spec: format!("{c} -j NFTKIT-REDIRECT-OUTPUT")
            }]
        );
    }

    #[test]
    fn a_family_without_rules_is_left_alone() {
        let r = rs(
            vec![base(
                "nat-post",
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
                vec![rule(
                    vec![Match::NfProto(IpFamily::V4)],
                    Action::Masquerade {
                        fully_random: false,
                    },
                )],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(v4.rule_count(), 1);
        assert!(v6.is_empty());
    }

    #[test]
    fn what_iptables_cannot_express_is_refused_by_name() {
        let drop_in_nat = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![rule(vec![], Action::Drop)],
            )],
            vec![],
        );
        let e = lower(&drop_in_nat, "iptables-legacy").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let msg = e.to_string();
        assert!(
            msg.contains("iptables-legacy") && msg.contains("DROP"),
            "{msg}"
        );

        let nat_forward = rs(
            vec![base("x", ChainType::Nat, Hook::Forward, 0, vec![])],
            vec![],
        );
        let msg = lower(&nat_forward, "iptables-nft").unwrap_err().to_string();
        assert!(
            msg.contains("FORWARD") && msg.contains("iptables-nft"),
            "{msg}"
        );

        let two_nots = rs(
            vec![base(
                "f",
                ChainType::Filter,
                Hook::Input,
                0,
                vec![rule(
                    vec![
                        Match::L4Proto {
                            proto: L4Proto::Tcp,
                            negate: true,
                        },
                        Match::L4Proto {
                            proto: L4Proto::Udp,
                            negate: true,
                        },
                    ],
                    Action::Drop,
                )],
            )],
            vec![],
        );
        assert!(
            lower(&two_nots, "iptables-nft")
                .unwrap_err()
                .to_string()
                .contains("several protocols")
        );

        let mut long = drop_in_nat.clone();
        long.table = "a-very-long-table-name-for-iptables".into();
        long.chains[0].rules.clear();
        assert_eq!(lower(&long, "iptables-nft").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn snapshot_of_lowered_state_equals_snapshot_of_its_save() {
        let cfg = crate::jobs::redirect::parse(
            &Default::default(),
            &|_| None,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let r = crate::jobs::redirect::build(&cfg, Default::default(), "nftkit-redirect");
        let fams = lower(&r, "iptables-nft").unwrap();
        // What iptables-save prints after restoring the plan on an empty host.
        let mut saves = Vec::new();
        for f in &fams {
            let mut text = String::new();
            for t in &f.tables {
                text.push_str(&format!("*{}\n", t.table.name()));
                for b in t.table.builtin_chains() {
                    text.push_str(&format!(":{b} ACCEPT [0:0]\n"));
                }
                for c in &t.chains {
                    text.push_str(&format!(":{} - [0:0]\n", c.name));
                }
                for j in &t.jumps {
                    text.push_str(&format!("-A {} {}\n", j.from, j.spec));
                }
                for c in &t.chains {
                    for r in &c.rules {
                        text.push_str(&format!("-A {} {r}\n", c.name));
                    }
                }
                text.push_str("COMMIT\n");
            }
            saves.push(save::parse(&text).unwrap());
        }
        let back: Vec<FamilyState> = saves
            .iter()
            .map(|s| FamilyState::from_save(s, "NFTKIT-REDIRECT"))
            .collect();
        assert_eq!(
            snapshot("nftkit-redirect", Some(r.comment.clone()), &fams),
            snapshot("nftkit-redirect", owner_comment(&back), &back)
        );
        let mut prefixes = BTreeSet::new();
        for s in &saves {
            prefixes.extend(owned_prefixes(s));
        }
        assert_eq!(
            prefixes.into_iter().collect::<Vec<_>>(),
            ["NFTKIT-REDIRECT"]
        );
    }
}
