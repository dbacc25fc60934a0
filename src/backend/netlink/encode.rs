//! The model lowered to nlink for one replace batch: the batch's steps in order (what
//! each message does, for error messages), chains, and rules as the expressions nft
//! itself generates for the same text.

use std::net::IpAddr;

use nlink::netlink::nftables::{
    self as nft, BaseChain as NlBase, ByteorderOp, CmpOp, Expr, Family, LookupExpr, MetaKey,
    NatHook, PayloadBase, Priority, Register, Verdict,
};

use super::wire::{
    self, ANON_MAP_NAME, ELEMENTS_PER_MESSAGE, Step, dnat_map_layout, nl_key, nul_terminated,
    put_attr,
};
use super::{BatchOp, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::error::{Error, Result};
use crate::model::{self, Action, IpFamily, KeyType, Match, Owner, Ruleset};

/// How the batch removes the table it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OldTable {
    /// DESTROYTABLE: removes it if present (kernels with `destroy`).
    Destroy,
    /// DELTABLE: the table exists and the kernel has no `destroy`.
    Delete,
    /// No table to remove.
    Absent,
}

/// The replace batch for `rs`, step by step, each with what it does (by position), so a
/// refusal can name our object rather than a message number. The descriptions are
/// formatted only if the kernel refuses something (a 50 000-element batch has 200
/// element messages whose previews would cost more than the rest of the build). Steps
/// are handed to `emit` one at a time, so the batch is built without a second copy.
pub(super) fn build_batch(
    rs: &Ruleset,
    old: OldTable,
    process_owned: bool,
    emit: &mut dyn FnMut(Step, BatchOp),
) -> Result<()> {
    let t = rs.table.as_str();
    match old {
        OldTable::Destroy => emit(Step::DestroyTable, BatchOp::RemoveTable),
        OldTable::Delete => emit(Step::DelTable, BatchOp::RemoveTable),
        OldTable::Absent => {}
    }
    let flags = if process_owned {
        nft::NFT_TABLE_F_OWNER
    } else {
        0
    };
    emit(
        Step::AddTable {
            flags,
            udata: Vec::new(),
        },
        BatchOp::AddTable,
    );
    for (i, name) in rs.counters().into_iter().enumerate() {
        emit(
            Step::AddObject(nft::Object::counter(t, name).comment(rs.comment.as_str())),
            BatchOp::AddCounter(i),
        );
    }
    for (i, (name, per_second)) in rs.limits().into_iter().enumerate() {
        let limit = nft::LimitExpr::packets(u64::from(per_second), nft::LimitUnit::Second);
        emit(
            Step::AddObject(nft::Object::limit(t, name, limit).comment(rs.comment.as_str())),
            BatchOp::AddLimit(i),
        );
    }
    for (i, set) in rs.sets.iter().enumerate() {
        let step = match set.key {
            // nlink cannot mark a key as host-endian; without that nft would print
            // uid 1010 as 4060282880. Write the NEWSET ourselves, as nft does.
            KeyType::Uid | KeyType::Gid => {
                Step::Raw(wire::host_order_set(t, set, &rs.comment, i as u32))
            }
            _ => Step::AddSet(nl_set(t, set, &rs.comment)),
        };
        emit(step, BatchOp::AddSet(i));
        for (n, part) in set.elements.chunks(ELEMENTS_PER_MESSAGE).enumerate() {
            let first = n * ELEMENTS_PER_MESSAGE;
            emit(
                Step::Raw(wire::element_message(t, set, part)),
                BatchOp::AddElements {
                    set: i,
                    range: first..first + part.len(),
                },
            );
        }
    }
    for (c, chain) in rs.chains.iter().enumerate() {
        emit(
            Step::AddChain(nl_chain(t, chain, &rs.comment)?),
            BatchOp::AddChain(c),
        );
    }
    // Verdict maps: after the chains their entries go to, before the rules using them.
    super::vmap::map_steps(rs, emit)?;
    let mut map_ids = std::collections::HashSet::new();
    for (c, chain) in rs.chains.iter().enumerate() {
        for (i, rule) in chain.rules.iter().enumerate() {
            if let Action::DnatMap {
                family,
                proto,
                entries,
            } = &rule.action
            {
                let id = dnat_map_set_id(&chain.name, rule);
                if !map_ids.insert(id) {
                    return Err(Error::runtime(format!(
                        "chain {} holds the same dnat map rule twice",
                        chain.name
                    )));
                }
                for msg in wire::dnat_map_messages(t, *family, *proto, entries, id) {
                    emit(Step::Raw(msg), BatchOp::AddMap { chain: c, rule: i });
                }
            }
            emit(
                Step::AddRule(nl_rule(t, &chain.name, rule, &rs.comment)?),
                BatchOp::AddRule { chain: c, rule: i },
            );
        }
    }
    Ok(())
}

fn nl_set(table: &str, set: &model::Set, comment: &str) -> nft::Set {
    let mut s = nft::Set::new(table, &set.name)
        .family(Family::Inet)
        .key_type(nl_key(set.key))
        .comment(comment);
    if set.interval {
        s = s.interval();
    }
    s
}

fn nl_chain(table: &str, chain: &model::Chain, comment: &str) -> Result<nft::Chain> {
    let mut c = nft::Chain::new(table, chain.name.as_str())
        .map_err(|e| Error::invalid("chain name", &chain.name, e))?
        .family(Family::Inet)
        .comment(comment);
    if let Some(b) = chain.base {
        let prio = Priority::from_i32(b.priority);
        let base = match b.kind {
            model::ChainType::Nat => NlBase::nat(
                match b.hook {
                    model::Hook::Prerouting => NatHook::Prerouting,
                    model::Hook::Input => NatHook::Input,
                    model::Hook::Output => NatHook::Output,
                    model::Hook::Postrouting | model::Hook::Forward => NatHook::Postrouting,
                },
                prio,
            ),
            model::ChainType::Filter => NlBase::filter(
                match b.hook {
                    model::Hook::Prerouting => nft::FilterHook::Prerouting,
                    model::Hook::Input => nft::FilterHook::Input,
                    model::Hook::Forward => nft::FilterHook::Forward,
                    model::Hook::Output => nft::FilterHook::Output,
                    model::Hook::Postrouting => nft::FilterHook::Postrouting,
                },
                prio,
            ),
        };
        c = c.base(base.policy(nft::Policy::Accept));
    }
    Ok(c)
}

/// Lower one rule to the expressions nft itself generates for the same text, so that
/// `nft list` shows our rules exactly as the `--dry-run` script writes them.
/// Lower one rule to the nlink rule nft itself generates for the same text, so that
/// `nft list` shows our rules exactly as the `--dry-run` script writes them.
pub(super) fn nl_rule(
    table: &str,
    chain: &str,
    rule: &model::Rule,
    comment: &str,
) -> Result<nft::Rule> {
    let rule_b = nft::Rule::new(table, chain)
        .family(Family::Inet)
        .expressions(rule_exprs(chain, rule)?)
        .comment(comment);
    Ok(match &rule.action {
        Action::Accept => rule_b.accept(),
        Action::Drop => rule_b.drop(),
        Action::Jump(chain) => rule_b.then(Verdict::JumpTo(chain_name(chain)?)),
        Action::Goto(chain) => rule_b.then(Verdict::GotoTo(chain_name(chain)?)),
        // Its lookup, whose result is the verdict, is among the expressions.
        Action::GotoMap { .. } => rule_b,
        Action::Notrack => rule_b.notrack(),
        Action::Masquerade {
            fully_random: false,
        } => rule_b.masquerade(),
        Action::Masquerade { fully_random: true } => {
            rule_b.nat(nft::NatStatement::masquerade().fully_random())
        }
        Action::Return => rule_b.then(Verdict::Return),
        Action::Continue => rule_b,
        Action::Redirect { port } => rule_b.redirect(Some(*port)),
        Action::Dnat {
            addr: IpAddr::V4(a),
            port,
        } => rule_b.dnat(*a, Some(*port)),
        Action::Dnat {
            addr: IpAddr::V6(a),
            port,
        } => rule_b.dnat_v6(*a, Some(*port)),
        // Its lookup and nat are among the expressions.
        Action::DnatMap { .. } => rule_b,
    })
}

/// The expressions of `rule`'s matches (and of a `DnatMap`'s lookup and nat, a `GotoMap`'s
/// verdict lookup); the verdict
/// or statement of the other actions is added by `nl_rule`.
fn rule_exprs(chain: &str, rule: &model::Rule) -> Result<Vec<Expr>> {
    let r0 = Register::R0;
    let meta = |key| Expr::Meta { dreg: r0, key };
    let cmp = |op, data: Vec<u8>| Expr::Cmp { sreg: r0, op, data };
    let payload = |base, offset, len| Expr::Payload {
        dreg: r0,
        base,
        offset,
        len,
    };
    let nfproto = |f: IpFamily| {
        [
            meta(MetaKey::NfProto),
            cmp(
                CmpOp::Eq,
                vec![if f == IpFamily::V4 {
                    NFPROTO_IPV4
                } else {
                    NFPROTO_IPV6
                }],
            ),
        ]
    };
    let daddr = |f: IpFamily| match f {
        IpFamily::V4 => payload(PayloadBase::Network, 16, 4),
        IpFamily::V6 => payload(PayloadBase::Network, 24, 16),
    };
    let saddr = |f: IpFamily| match f {
        IpFamily::V4 => payload(PayloadBase::Network, 12, 4),
        IpFamily::V6 => payload(PayloadBase::Network, 8, 16),
    };
    // `ip daddr 10.0.0.0/8`: load, mask unless a full prefix, compare.
    let prefix = |exprs: &mut Vec<Expr>, net: &ipnet::IpNet, load: &dyn Fn(IpFamily) -> Expr| {
        let (family, addr, mask): (IpFamily, Vec<u8>, Vec<u8>) = match net {
            ipnet::IpNet::V4(n) => (
                IpFamily::V4,
                n.network().octets().to_vec(),
                n.netmask().octets().to_vec(),
            ),
            ipnet::IpNet::V6(n) => (
                IpFamily::V6,
                n.network().octets().to_vec(),
                n.netmask().octets().to_vec(),
            ),
        };
        exprs.extend(nfproto(family));
        exprs.push(load(family));
        if net.prefix_len() != net.max_prefix_len() {
            let xor = vec![0; mask.len()];
            exprs.push(Expr::Bitwise {
                sreg: r0,
                dreg: r0,
                len: mask.len() as u32,
                mask,
                xor,
            });
        }
        exprs.push(cmp(CmpOp::Eq, addr));
    };
    let mut exprs: Vec<Expr> = Vec::new();
    for m in &rule.matches {
        match m {
            Match::Count { counter } => exprs.push(Expr::Objref(nft::ObjrefExpr::Named {
                object_type: nft::ObjectType::Counter,
                name: counter.clone(),
            })),
            Match::Limit { name, .. } => exprs.push(Expr::Objref(nft::ObjrefExpr::Named {
                object_type: nft::ObjectType::Limit,
                name: name.clone(),
            })),
            Match::Log { group, prefix } => exprs.push(Expr::Log(
                nft::LogExpr::new().prefix(prefix.as_str()).group(*group),
            )),
            Match::NfProto(f) => exprs.extend(nfproto(*f)),
            Match::L4Proto { proto, negate } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(
                    if *negate { CmpOp::Neq } else { CmpOp::Eq },
                    vec![proto.number()],
                ));
            }
            Match::DaddrInSet { family, set } => {
                exprs.extend(nfproto(*family));
                exprs.push(daddr(*family));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::Daddr(net) => prefix(&mut exprs, net, &daddr),
            Match::Saddr(net) => prefix(&mut exprs, net, &saddr),
            Match::SaddrInSet { family, set } => {
                exprs.extend(nfproto(*family));
                exprs.push(saddr(*family));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::Sport { proto, port } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 0, 2));
                exprs.push(cmp(CmpOp::Eq, port.to_be_bytes().to_vec()));
            }
            Match::FibDaddrLocal { negate } => {
                // RTN_LOCAL, host order, as nft writes `fib daddr type local`.
                exprs.push(Expr::Fib {
                    dreg: r0,
                    result: nft::FibResult::AddrType,
                    flags: nft::FibFlags::DADDR,
                });
                exprs.push(cmp(
                    if *negate { CmpOp::Neq } else { CmpOp::Eq },
                    2u32.to_ne_bytes().to_vec(),
                ));
            }
            Match::CtState(states) => {
                let bits: u32 = states.iter().map(|s| s.bit()).fold(0, |a, b| a | b);
                exprs.push(Expr::Ct {
                    dreg: r0,
                    key: nft::CtKey::State,
                });
                exprs.push(Expr::Bitwise {
                    sreg: r0,
                    dreg: r0,
                    len: 4,
                    mask: bits.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                exprs.push(cmp(CmpOp::Neq, vec![0; 4]));
            }
            Match::Dport { proto, port } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 2, 2));
                exprs.push(cmp(CmpOp::Eq, port.to_be_bytes().to_vec()));
            }
            Match::DportRange { proto, first, last } => {
                // As nft writes `tcp dport 8000-9000`: two big-endian comparisons.
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 2, 2));
                exprs.push(cmp(CmpOp::Gte, first.to_be_bytes().to_vec()));
                exprs.push(cmp(CmpOp::Lte, last.to_be_bytes().to_vec()));
            }
            Match::DportInSet { proto, set } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 2, 2));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::OwnerInSet { owner, set } => {
                exprs.push(meta(owner_key(*owner)));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::OwnerRange { owner, first, last } => {
                // skuid is host order; nft byte-swaps it so ranges compare as numbers.
                exprs.push(meta(owner_key(*owner)));
                exprs.push(Expr::Byteorder {
                    sreg: r0,
                    dreg: r0,
                    op: ByteorderOp::Hton,
                    len: 4,
                    size: 4,
                });
                exprs.push(cmp(CmpOp::Gte, first.to_be_bytes().to_vec()));
                exprs.push(cmp(CmpOp::Lte, last.to_be_bytes().to_vec()));
            }
        }
    }
    if let Action::DnatMap { family, proto, .. } = &rule.action {
        if !rule.matches.is_empty() {
            return Err(Error::runtime(format!(
                "a dnat map rule takes no other matches (chain {chain})"
            )));
        }
        exprs.extend(dnat_map_exprs(
            *family,
            *proto,
            dnat_map_set_id(chain, rule),
        ));
    }
    if let Action::GotoMap { family, field, map } = &rule.action {
        exprs.extend(super::vmap::vmap_exprs(*family, *field, map));
    }
    Ok(exprs)
}

fn chain_name(name: &str) -> Result<nft::ChainName> {
    nft::ChainName::new(name).map_err(|e| Error::invalid("chain name", name, e))
}

fn owner_key(o: Owner) -> MetaKey {
    match o {
        Owner::Uid => MetaKey::SkUid,
        Owner::Gid => MetaKey::SkGid,
    }
}

// ---------------------------------------------------------------------------
// DNAT maps: `dnat ip to ip daddr . tcp dport map { A . P : B . Q, ... }`, lowered as nft
// 1.0.6 lowers the same text (`nft --debug=netlink`): an anonymous constant map `__map%d`
// (key and data `ipv4_addr . inet_service`, each field padded to 4 bytes) created in the
// batch right before its rule (`wire::dnat_map_messages`), then
//   meta load nfproto => reg 1; cmp eq reg 1 ipv4
//   meta load l4proto => reg 1; cmp eq reg 1 tcp
//   payload load 4b @ network header + 16 => reg 1
//   payload load 2b @ transport header + 2 => reg 9
//   lookup reg 1 set __map%d dreg 1
//   nat dnat ip addr_min reg 1 proto_min reg 9
// (IPv6: 16 address bytes, so the port goes to reg 2). nlink has no anonymous sets and no
// register-level nat, so the set, its elements, the lookup and the nat are written here.
// nlink's rule lifter cannot print such a rule; `decode::dnat_map_rule_text` reads it back.
// ---------------------------------------------------------------------------

/// A batch-unique id for the map of `rule` in `chain` (the rule's lookup names it by this
/// id, since the kernel only names the set at commit). Derived from the chain and the
/// rule's text so `nl_rule` and `build_batch` agree without passing state.
pub(super) fn dnat_map_set_id(chain: &str, rule: &model::Rule) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in chain
        .bytes()
        .chain([0])
        .chain(crate::render::rule_text(rule).into_bytes())
    {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    0x5000_0000 | (h & 0x0fff_ffff)
}

/// The expressions of a `DnatMap` rule whose map has batch id `set_id`.
fn dnat_map_exprs(family: IpFamily, proto: model::L4Proto, set_id: u32) -> Vec<Expr> {
    let r0 = Register::R0;
    let (_, _, port_reg) = dnat_map_layout(family);
    let (nfproto, addr_off, addr_len, nat_family) = match family {
        IpFamily::V4 => (NFPROTO_IPV4, 16, 4, 2u32),
        IpFamily::V6 => (NFPROTO_IPV6, 24, 16, 10u32),
    };
    let mut lookup = Vec::new();
    put_attr(&mut lookup, nft::NFTA_LOOKUP_SREG, &1u32.to_be_bytes());
    put_attr(&mut lookup, nft::NFTA_LOOKUP_DREG, &1u32.to_be_bytes());
    put_attr(
        &mut lookup,
        nft::NFTA_LOOKUP_SET,
        &nul_terminated(ANON_MAP_NAME),
    );
    put_attr(&mut lookup, nft::NFTA_LOOKUP_SET_ID, &set_id.to_be_bytes());
    let mut nat = Vec::new();
    put_attr(&mut nat, nft::NFTA_NAT_TYPE, &1u32.to_be_bytes());
    put_attr(&mut nat, nft::NFTA_NAT_FAMILY, &nat_family.to_be_bytes());
    put_attr(&mut nat, nft::NFTA_NAT_REG_ADDR_MIN, &1u32.to_be_bytes());
    put_attr(
        &mut nat,
        nft::NFTA_NAT_REG_PROTO_MIN,
        &port_reg.wire().to_be_bytes(),
    );
    vec![
        Expr::Meta {
            dreg: r0,
            key: MetaKey::NfProto,
        },
        Expr::Cmp {
            sreg: r0,
            op: CmpOp::Eq,
            data: vec![nfproto],
        },
        Expr::Meta {
            dreg: r0,
            key: MetaKey::L4Proto,
        },
        Expr::Cmp {
            sreg: r0,
            op: CmpOp::Eq,
            data: vec![proto.number()],
        },
        Expr::Payload {
            dreg: r0,
            base: PayloadBase::Network,
            offset: addr_off,
            len: addr_len,
        },
        Expr::Payload {
            dreg: port_reg,
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
        },
        Expr::Raw(nft::RawExpr::new("lookup", lookup)),
        Expr::Raw(nft::RawExpr::new("nat", nat)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CtState, L4Proto, Rule};

    fn rule(matches: Vec<Match>, action: Action) -> Rule {
        Rule { matches, action }
    }

    const R0: Register = Register::R0;

    fn cmp(op: CmpOp, data: &[u8]) -> Expr {
        Expr::Cmp {
            sreg: R0,
            op,
            data: data.to_vec(),
        }
    }

    fn meta(key: MetaKey) -> Expr {
        Expr::Meta { dreg: R0, key }
    }

    fn payload(base: PayloadBase, offset: u32, len: u32) -> Expr {
        Expr::Payload {
            dreg: R0,
            base,
            offset,
            len,
        }
    }

    #[test]
    fn a_prefix_and_a_port_lower_as_nft_writes_them() {
        let r = rule(
            vec![
                Match::Daddr("10.0.0.0/8".parse().unwrap()),
                Match::Dport {
                    proto: L4Proto::Tcp,
                    port: 8080,
                },
            ],
            Action::Accept,
        );
        let want = vec![
            meta(MetaKey::NfProto),
            cmp(CmpOp::Eq, &[NFPROTO_IPV4]),
            payload(PayloadBase::Network, 16, 4),
            Expr::Bitwise {
                sreg: R0,
                dreg: R0,
                len: 4,
                mask: vec![255, 0, 0, 0],
                xor: vec![0; 4],
            },
            cmp(CmpOp::Eq, &[10, 0, 0, 0]),
            meta(MetaKey::L4Proto),
            cmp(CmpOp::Eq, &[6]),
            payload(PayloadBase::Transport, 2, 2),
            cmp(CmpOp::Eq, &8080u16.to_be_bytes()),
        ];
        assert_eq!(rule_exprs("c", &r).unwrap(), want);
    }

    #[test]
    fn a_full_length_prefix_has_no_mask_and_v6_saddr_loads_offset_8() {
        let r = rule(
            vec![Match::Saddr("fd00::1/128".parse().unwrap())],
            Action::Drop,
        );
        let addr: std::net::Ipv6Addr = "fd00::1".parse().unwrap();
        let want = vec![
            meta(MetaKey::NfProto),
            cmp(CmpOp::Eq, &[NFPROTO_IPV6]),
            payload(PayloadBase::Network, 8, 16),
            cmp(CmpOp::Eq, &addr.octets()),
        ];
        assert_eq!(rule_exprs("c", &r).unwrap(), want);
    }

    #[test]
    fn ct_state_and_owner_ranges_lower_to_bitwise_and_byteorder() {
        let r = rule(
            vec![
                Match::CtState(vec![CtState::Established, CtState::Related]),
                Match::OwnerRange {
                    owner: Owner::Uid,
                    first: 1000,
                    last: 1999,
                },
            ],
            Action::Return,
        );
        let want = vec![
            Expr::Ct {
                dreg: R0,
                key: nft::CtKey::State,
            },
            Expr::Bitwise {
                sreg: R0,
                dreg: R0,
                len: 4,
                mask: 6u32.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
            },
            cmp(CmpOp::Neq, &[0; 4]),
            meta(MetaKey::SkUid),
            Expr::Byteorder {
                sreg: R0,
                dreg: R0,
                op: ByteorderOp::Hton,
                len: 4,
                size: 4,
            },
            cmp(CmpOp::Gte, &1000u32.to_be_bytes()),
            cmp(CmpOp::Lte, &1999u32.to_be_bytes()),
        ];
        assert_eq!(rule_exprs("c", &r).unwrap(), want);
    }

    #[test]
    fn rules_read_back_as_the_dry_run_writes_them() {
        let rules = [
            rule(
                vec![
                    Match::DaddrInSet {
                        family: IpFamily::V4,
                        set: "allowed4".into(),
                    },
                    Match::Dport {
                        proto: L4Proto::Tcp,
                        port: 80,
                    },
                ],
                Action::Redirect { port: 15001 },
            ),
            rule(
                vec![Match::FibDaddrLocal { negate: true }],
                Action::Jump("next".into()),
            ),
            rule(
                vec![Match::DportRange {
                    proto: L4Proto::Udp,
                    first: 8000,
                    last: 9000,
                }],
                Action::Masquerade { fully_random: true },
            ),
        ];
        for r in &rules {
            let text = nl_rule("t", "c", r, "ours").unwrap().nft_syntax_stateless();
            let want = format!("{} comment \"ours\"", crate::render::rule_text(r));
            assert_eq!(text.as_deref(), Some(want.as_str()));
        }
    }

    #[test]
    fn a_dnat_map_rule_takes_no_other_matches_and_its_map_id_is_per_rule() {
        let map = |port| Action::DnatMap {
            family: IpFamily::V4,
            proto: L4Proto::Tcp,
            entries: vec![(
                "10.0.0.1:80".parse().unwrap(),
                format!("10.1.0.1:{port}").parse().unwrap(),
            )],
        };
        let with_match = rule(vec![Match::NfProto(IpFamily::V4)], map(80));
        assert!(rule_exprs("c", &with_match).is_err());
        let (a, b) = (rule(vec![], map(80)), rule(vec![], map(81)));
        assert_eq!(dnat_map_set_id("c", &a), dnat_map_set_id("c", &a));
        assert_ne!(dnat_map_set_id("c", &a), dnat_map_set_id("c", &b));
        assert_ne!(dnat_map_set_id("c", &a), dnat_map_set_id("d", &a));
        // The map's lookup and nat come last, after the family and protocol checks.
        let exprs = rule_exprs("c", &a).unwrap();
        assert_eq!(exprs.len(), 8);
        assert_eq!(exprs[..2], [meta(MetaKey::NfProto), cmp(CmpOp::Eq, &[2])]);
    }
}
