//! Verdict maps: `map NAME { type ipv4_addr : verdict; elements = { A : goto C, ... } }`
//! and the rules that use them (`ip daddr vmap @NAME`), lowered through nlink's map
//! builders, and read back as a [`SetSnapshot`] whose key is `ipv4_addr : verdict` and
//! whose elements are `A : goto C`, sorted by address.
//!
//! In the batch a map comes after the chains (the kernel resolves an element's `goto C`
//! when the element is added, so C must already be in the batch) and before the rules
//! (a rule's lookup names the map). Like a set, the map carries the ownership comment.

use nlink::netlink::nftables::{self as nft, Expr, Family, Register, Verdict};

use super::wire::{Step, element_wire, nl_key, push_wire_value};
use super::{BatchOp, NFPROTO_IPV4, NFPROTO_IPV6};
use crate::error::{Error, Result};
use crate::model::{self, AddrField, Element, IpFamily, VerdictMap};
use crate::snapshot::SetSnapshot;

/// Map entries per NEWSETELEM message: an entry with a 255-byte chain name is ~300 bytes
/// on the wire, so 128 stay well below the 64 KiB limit of one attribute nest.
pub(super) const ENTRIES_PER_MESSAGE: usize = 128;

/// The nlink set of `map` (a verdict map with the ownership comment).
pub(super) fn nl_map(table: &str, map: &VerdictMap, comment: &str) -> nft::Set {
    nft::Set::new(table, &map.name)
        .family(Family::Inet)
        .key_type(nl_key(map.key))
        .vmap()
        .comment(comment)
}

/// One entry as nlink's map element: the address and `goto CHAIN`.
pub(super) fn nl_entry(map: &VerdictMap, key: &Element, chain: &str) -> Result<nft::SetElement> {
    let element = match key {
        Element::V4(n) => nft::SetElement::ipv4(n.addr()),
        Element::V6(n) => nft::SetElement::ipv6(n.addr()),
        other => {
            return Err(Error::runtime(format!(
                "map {}: key {other:?} is not an address",
                map.name
            )));
        }
    };
    let chain = nft::ChainName::new(chain).map_err(|e| Error::invalid("chain name", chain, e))?;
    Ok(element.verdict(Verdict::GotoTo(chain)))
}

/// The steps creating every map of `rs`: its NEWSET, then its entries split over several
/// NEWSETELEM messages of the same batch.
pub(super) fn map_steps(rs: &model::Ruleset, emit: &mut dyn FnMut(Step, BatchOp)) -> Result<()> {
    for (i, map) in rs.maps.iter().enumerate() {
        let set = nl_map(&rs.table, map, &rs.comment);
        emit(Step::AddSet(set.clone()), BatchOp::AddVerdictMap(i));
        for (n, part) in map.entries.chunks(ENTRIES_PER_MESSAGE).enumerate() {
            let elements = part
                .iter()
                .map(|(key, chain)| nl_entry(map, key, chain))
                .collect::<Result<Vec<_>>>()?;
            let first = n * ENTRIES_PER_MESSAGE;
            emit(
                Step::AddElements(set.clone(), elements),
                BatchOp::AddMapEntries {
                    map: i,
                    range: first..first + part.len(),
                },
            );
        }
    }
    Ok(())
}

/// The expressions of `ip daddr vmap @MAP` (as nft writes it): the family check, the
/// address loaded, and a lookup whose result is the verdict.
pub(super) fn vmap_exprs(family: IpFamily, field: AddrField, map: &str) -> Vec<Expr> {
    let r0 = Register::R0;
    let (nfproto, offset, len) = match (family, field) {
        (IpFamily::V4, AddrField::Saddr) => (NFPROTO_IPV4, 12, 4),
        (IpFamily::V4, AddrField::Daddr) => (NFPROTO_IPV4, 16, 4),
        (IpFamily::V6, AddrField::Saddr) => (NFPROTO_IPV6, 8, 16),
        (IpFamily::V6, AddrField::Daddr) => (NFPROTO_IPV6, 24, 16),
    };
    vec![
        Expr::Meta {
            dreg: r0,
            key: nft::MetaKey::NfProto,
        },
        Expr::Cmp {
            sreg: r0,
            op: nft::CmpOp::Eq,
            data: vec![nfproto],
        },
        Expr::Payload {
            dreg: r0,
            base: nft::PayloadBase::Network,
            offset,
            len,
        },
        Expr::Lookup(nft::LookupExpr::new(map, r0).dreg(Register::Verdict)),
    ]
}

/// Whether a set the kernel lists is a verdict map.
pub(super) fn is_verdict_map(s: &nft::SetInfo) -> bool {
    s.flags.contains(nft::SetFlags::MAP) && s.data_type == Some(nft::NFT_DATA_VERDICT)
}

/// A verdict as nft prints it in a map.
fn verdict_text(v: &Verdict) -> String {
    match v {
        Verdict::Accept => "accept".into(),
        Verdict::Drop => "drop".into(),
        Verdict::Continue => "continue".into(),
        Verdict::Return => "return".into(),
        Verdict::JumpTo(c) => format!("jump {c}"),
        Verdict::GotoTo(c) => format!("goto {c}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `(key bytes, verdict text)` pairs as the snapshot's sorted `A : VERDICT` texts.
fn entries_text(type_id: u32, mut entries: Vec<(&[u8], String)>) -> Vec<String> {
    entries.sort_unstable();
    entries
        .into_iter()
        .map(|(key, verdict)| {
            let mut s = String::with_capacity(48);
            push_wire_value(&mut s, type_id, key);
            s.push_str(" : ");
            s.push_str(&verdict);
            s
        })
        .collect()
}

fn key_text(type_id: u32) -> String {
    format!("{} : verdict", super::wire::key_name(type_id))
}

/// A verdict map read back: every entry with its verdict (an entry without one shows
/// as `?`).
pub(super) fn map_snapshot(key_type: u32, elements: &[nft::SetElement]) -> SetSnapshot {
    let entries = elements
        .iter()
        .map(|e| {
            let verdict = match e.data() {
                Some(nft::SetElementData::Verdict(v)) => verdict_text(v),
                _ => "?".into(),
            };
            (e.key(), verdict)
        })
        .collect();
    SetSnapshot {
        key: key_text(key_type),
        interval: false,
        elements: entries_text(key_type, entries),
    }
}

/// The snapshot `map` reads back as (always with its entries: maps are small, and a
/// changed entry is drift even in the structure-only check after apply).
pub(super) fn expected_map_snapshot(map: &VerdictMap) -> SetSnapshot {
    let type_id = nl_key(map.key).type_id();
    let wire: Vec<([u8; 16], usize, String)> = map
        .entries
        .iter()
        .map(|(e, chain)| {
            let (k, _, n) = element_wire(e, false);
            (k, n, format!("goto {chain}"))
        })
        .collect();
    let entries = wire.iter().map(|(k, n, v)| (&k[..*n], v.clone())).collect();
    SetSnapshot {
        key: key_text(type_id),
        interval: false,
        elements: entries_text(type_id, entries),
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::{OldTable, build_batch, nl_rule};
    use super::*;
    use crate::model::{Action, Chain, KeyType, Rule, Ruleset};

    fn v4(a: &str) -> Element {
        Element::V4(a.parse().unwrap())
    }

    fn ruleset(entries: usize) -> Ruleset {
        let chain = |name: &str, action| Chain {
            name: name.into(),
            base: None,
            rules: vec![Rule {
                matches: vec![],
                action,
            }],
        };
        Ruleset {
            table: "t".into(),
            comment: "ours".into(),
            sets: vec![],
            maps: vec![VerdictMap {
                name: "m".into(),
                key: KeyType::Ipv4Addr,
                entries: (0..entries)
                    .map(|i| {
                        let a = std::net::Ipv4Addr::from(0x0a00_0000 + i as u32);
                        (Element::V4(a.into()), ["a", "b"][i % 2].to_string())
                    })
                    .collect(),
            }],
            chains: vec![
                chain(
                    "f",
                    Action::GotoMap {
                        family: IpFamily::V4,
                        field: AddrField::Daddr,
                        map: "m".into(),
                    },
                ),
                chain("a", Action::Drop),
                chain("b", Action::Accept),
            ],
        }
    }

    #[test]
    fn maps_come_after_the_chains_and_before_the_rules_their_entries_split() {
        let rs = ruleset(300);
        let mut ops = Vec::new();
        let mut entries = Vec::new();
        build_batch(&rs, OldTable::Absent, false, &mut |step, op| {
            if let Step::AddElements(set, elements) = &step {
                assert_eq!(set.name(), "m");
                entries.push(elements.len());
            }
            ops.push(op);
        })
        .unwrap();
        let entries_op = |map, range| BatchOp::AddMapEntries { map, range };
        assert_eq!(
            ops,
            [
                BatchOp::AddTable,
                BatchOp::AddChain(0),
                BatchOp::AddChain(1),
                BatchOp::AddChain(2),
                BatchOp::AddVerdictMap(0),
                entries_op(0, 0..128),
                entries_op(0, 128..256),
                entries_op(0, 256..300),
                BatchOp::AddRule { chain: 0, rule: 0 },
                BatchOp::AddRule { chain: 1, rule: 0 },
                BatchOp::AddRule { chain: 2, rule: 0 },
            ]
        );
        assert_eq!(entries, [128, 128, 44]);
        assert_eq!(
            entries_op(0, 0..3).describe(&ruleset(3)),
            "add entries 0..3 to map m (10.0.0.0 : goto a, 10.0.0.1 : goto b, 10.0.0.2 : goto a)"
        );
        assert_eq!(
            BatchOp::AddVerdictMap(0).describe(&rs),
            "add map m (ipv4_addr : verdict)"
        );
    }

    #[test]
    fn a_vmap_rule_reads_back_as_the_dry_run_writes_it() {
        for (family, field) in [
            (IpFamily::V4, AddrField::Daddr),
            (IpFamily::V4, AddrField::Saddr),
            (IpFamily::V6, AddrField::Daddr),
            (IpFamily::V6, AddrField::Saddr),
        ] {
            let r = Rule {
                matches: vec![model::Match::Dport {
                    proto: model::L4Proto::Tcp,
                    port: 80,
                }],
                action: Action::GotoMap {
                    family,
                    field,
                    map: "m".into(),
                },
            };
            let text = nl_rule("t", "c", &r, "ours")
                .unwrap()
                .nft_syntax_stateless();
            let want = format!("{} comment \"ours\"", crate::render::rule_text(&r));
            assert_eq!(text.as_deref(), Some(want.as_str()));
        }
    }

    #[test]
    fn entries_read_back_sorted_by_address_with_their_verdicts() {
        let goto = |c: &str| Verdict::GotoTo(nft::ChainName::new(c).unwrap());
        let kernel = [
            nft::SetElement::ipv4([10, 0, 0, 10].into()).verdict(goto("b")),
            nft::SetElement::ipv4([10, 0, 0, 9].into()).verdict(goto("a")),
            nft::SetElement::ipv4([10, 0, 0, 11].into()).verdict(Verdict::Drop),
            nft::SetElement::ipv4([10, 0, 0, 12].into()),
        ];
        let snap = map_snapshot(7, &kernel);
        assert_eq!(snap.key, "ipv4_addr : verdict");
        assert_eq!(
            snap.elements,
            [
                "10.0.0.9 : goto a",
                "10.0.0.10 : goto b",
                "10.0.0.11 : drop",
                "10.0.0.12 : ?"
            ]
        );
        let map = VerdictMap {
            name: "m".into(),
            key: KeyType::Ipv4Addr,
            entries: vec![
                (v4("10.0.0.10/32"), "b".into()),
                (v4("10.0.0.9/32"), "a".into()),
            ],
        };
        let want = expected_map_snapshot(&map);
        assert_eq!(want.key, snap.key);
        assert_eq!(want.elements, snap.elements[..2]);
        let v6 = VerdictMap {
            name: "m6".into(),
            key: KeyType::Ipv6Addr,
            entries: vec![(Element::V6("fd00::1/128".parse().unwrap()), "a".into())],
        };
        let want = expected_map_snapshot(&v6);
        assert_eq!(
            (want.key.as_str(), want.elements),
            ("ipv6_addr : verdict", vec!["fd00::1 : goto a".to_string()])
        );
    }

    #[test]
    fn a_key_that_is_no_address_is_an_error_not_a_panic() {
        let map = VerdictMap {
            name: "m".into(),
            key: KeyType::InetService,
            entries: vec![(Element::Port(80), "a".into())],
        };
        assert!(nl_entry(&map, &Element::Port(80), "a").is_err());
        assert!(nl_entry(&map, &v4("10.0.0.1/32"), "").is_err());
    }
}
