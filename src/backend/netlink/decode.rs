//! What the kernel holds, read back as a `Snapshot` (chains with their rules as nft
//! prints them, sets with sorted element texts), and the snapshot a ruleset should read
//! back as, so the two compare as text.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nlink::netlink::nftables::{self as nft, CmpOp, Family, MetaKey, PayloadBase, Register};

use super::dump::{WireKey, WireRange};
use super::encode::nl_rule;
use super::record::elements_digest;
use super::vmap;
use super::wire::{dnat_map_layout, element_wire, hex, key_name, nl_key, push_wire_value};
use super::{NFPROTO_IPV4, NFPROTO_IPV6, NetlinkBackend, TableInfo, kernel_error};
use crate::backend::{Comparison, is_owned_comment};
use crate::error::Result;
use crate::model::{self, Action, IpFamily, Ruleset};
use crate::snapshot::{self, ChainSnapshot, SetSnapshot, Snapshot};

/// `enum nft_table_flags`: the table is switched off (its chains see no packets).
const NFT_TABLE_F_DORMANT: u32 = 1;

impl NetlinkBackend {
    /// The kernel's table; without `elements` the named sets' element lists are left
    /// empty (the kernel's element dump is the costly part: it walks the set's tree
    /// from the start again for every ~32 KiB of output).
    pub(super) fn snapshot_of(&self, table: &TableInfo, elements: bool) -> Result<Snapshot> {
        let name = table.name.as_str();
        let conn = &self.conn;
        let (chains, rules, sets) = self
            .rt
            .block_on(async {
                let chains = conn.list_chains_in(name, Family::Inet).await?;
                let rules = conn.list_rules(name, Family::Inet).await?;
                let sets = conn.list_sets_in(name, Family::Inet).await?;
                Ok::<_, nlink::Error>((chains, rules, sets))
            })
            .map_err(|e| kernel_error(&format!("read table {name}"), &e))?;
        let mut chain_snaps: Vec<ChainSnapshot> = chains
            .iter()
            .map(|c| ChainSnapshot {
                name: c.name.clone(),
                base: chain_base(c.chain_type, c.hook, c.priority, c.policy),
                rules: Vec::new(),
            })
            .collect();
        // Anonymous maps (DNAT maps) are part of their rule, not sets of the table.
        let mut anon = HashMap::new();
        for s in sets
            .iter()
            .filter(|s| s.flags.contains(nft::SetFlags::ANONYMOUS))
        {
            let elements = self
                .rt
                .block_on(conn.list_set_elements(name, &s.name, Family::Inet))
                .map_err(|e| kernel_error(&format!("read set {}", s.name), &e))?;
            anon.insert(s.name.clone(), anon_map(s.key_type, &elements));
        }
        for r in &rules {
            if let Some(c) = chain_snaps.iter_mut().find(|c| c.name == r.chain) {
                c.rules.push(rule_text(r, &anon));
            }
        }
        let mut set_snaps = BTreeMap::new();
        let dump_started = std::time::Instant::now();
        let mut dumped = 0;
        for s in sets
            .iter()
            .filter(|s| !s.flags.contains(nft::SetFlags::ANONYMOUS))
        {
            // Verdict maps always with their entries (see `vmap::expected_map_snapshot`).
            if vmap::is_verdict_map(s) {
                let entries = self
                    .rt
                    .block_on(conn.list_set_elements(name, &s.name, Family::Inet))
                    .map_err(|e| kernel_error(&format!("read map {}", s.name), &e))?;
                set_snaps.insert(s.name.clone(), vmap::map_snapshot(s.key_type, &entries));
                continue;
            }
            let elements = if elements {
                self.rt
                    .block_on(conn.list_set_elements(name, &s.name, Family::Inet))
                    .map_err(|e| kernel_error(&format!("read set {}", s.name), &e))?
            } else {
                Vec::new()
            };
            dumped += elements.len();
            set_snaps.insert(
                s.name.clone(),
                set_snapshot(
                    s.key_type,
                    s.flags.contains(nft::SetFlags::INTERVAL),
                    &elements,
                ),
            );
        }
        if elements {
            // Mostly the kernel's: it walks each set's tree again for every 32 KiB it sends.
            tracing::debug!(
                elements = dumped,
                dump_us = dump_started.elapsed().as_micros() as u64,
                "set elements read back"
            );
        }
        Ok(Snapshot {
            table: name.to_string(),
            comment: table_comment(table.comment.clone(), table.flags),
            chains: chain_snaps,
            sets: set_snaps,
        })
    }
}

/// A base chain's `type ... hook ... priority ...` as read back; None for a regular chain.
impl NetlinkBackend {
    /// `Backend::compare` for the existing table `info`: the structure compared as text,
    /// each set's elements as sorted wire bytes, formatted only when they differ (a
    /// verify at 10 000 elements formatted 20 000 strings to find them equal).
    ///
    /// With `trust_record`, the elements are not read when the table's record
    /// (`record.rs`, read with `info`) says this table's batch wrote them for a ruleset
    /// of equal elements and the ruleset generation is still the one that batch committed
    /// as. Read in this order: the record (`info`, before this call), the structure, the
    /// generation: an unchanged generation at the end means nothing was committed since
    /// the record's batch, so the structure read is of that state too.
    pub(super) fn compare_table(
        &self,
        info: &TableInfo,
        rs: &Ruleset,
        trust_record: bool,
    ) -> Result<Comparison> {
        let record = info.record.filter(|_| trust_record);
        let observed = self.snapshot_of(info, false)?;
        let mut diff = snapshot::diff(&expected_snapshot(rs, false), Some(&observed));
        if let Some(r) = record
            && r.digest == elements_digest(rs)
            && self.read("read the ruleset generation", |r| r.generation())? == r.generation
        {
            tracing::debug!(
                generation = r.generation,
                "set elements as nftkit wrote them, nothing committed since: not read"
            );
            return Ok(Comparison {
                found: Some(is_owned_comment(info.comment.as_deref())),
                diff,
            });
        }
        let dump_started = std::time::Instant::now();
        let mut dumped = 0;
        for set in &rs.sets {
            let type_id = nl_key(set.key).type_id();
            // A missing set or one of another type is already in the diff.
            let Some(os) = observed.sets.get(&set.name) else {
                continue;
            };
            if os.key != key_name(type_id) || os.interval != set.interval {
                continue;
            }
            let have = self.read(&format!("read set {}", set.name), |r| {
                r.set_ranges(&rs.table, &set.name, set.interval)
            })?;
            dumped += have.len();
            let mut want: Vec<WireRange> = set
                .elements
                .iter()
                .map(|e| {
                    let (k, end, n) = element_wire(e, set.interval);
                    (WireKey::from_wire(k, n), WireKey::from_wire(end, n))
                })
                .collect();
            want.sort_unstable();
            if have == want {
                continue;
            }
            let (mut want, mut have) = (as_slices(&want), as_slices(&have));
            // Worded as the full snapshot diff words it.
            let only_this_set = |elements: Vec<String>| Snapshot {
                table: rs.table.clone(),
                comment: None,
                chains: Vec::new(),
                sets: BTreeMap::from([(
                    set.name.clone(),
                    SetSnapshot {
                        key: os.key.clone(),
                        interval: set.interval,
                        elements,
                    },
                )]),
            };
            diff.extend(snapshot::diff(
                &only_this_set(elements_text(type_id, &mut want)),
                Some(&only_this_set(elements_text(type_id, &mut have))),
            ));
        }
        tracing::debug!(
            elements = dumped,
            dump_us = dump_started.elapsed().as_micros() as u64,
            "set elements read back"
        );
        Ok(Comparison {
            found: Some(is_owned_comment(info.comment.as_deref())),
            diff,
        })
    }
}

fn as_slices(ranges: &[WireRange]) -> Vec<(&[u8], &[u8])> {
    ranges
        .iter()
        .map(|(k, e)| (k.as_bytes(), e.as_bytes()))
        .collect()
}

fn chain_base(
    kind: Option<nft::ChainType>,
    hook: Option<u32>,
    priority: Option<i32>,
    policy: Option<u32>,
) -> Option<String> {
    match (kind, hook, priority) {
        // Our base chains are always policy accept; a policy drop set by hand is drift
        // (it drops what the chain does not match), so it shows.
        (Some(t), Some(h), Some(p)) => Some(format!(
            "{}{}",
            base_text(t.as_str(), hook_name(h), p),
            if policy == Some(0) {
                " policy drop"
            } else {
                ""
            }
        )),
        _ => None,
    }
}

/// The table's comment as the snapshot shows it. A dormant table (`nft add table ...
/// { flags dormant; }`) is switched off whole: drift, shown with the comment (Snapshot
/// has no flags field).
fn table_comment(comment: Option<String>, flags: u32) -> Option<String> {
    comment.map(|c| {
        if flags & NFT_TABLE_F_DORMANT != 0 {
            format!("{c} [table flags dormant: disabled]")
        } else {
            c
        }
    })
}

/// A rule as nft prints it (`nft -s list`), a DNAT map rule as we write it, or else its
/// expression bytes in hex.
fn rule_text(r: &nft::RuleInfo, anon: &HashMap<String, AnonMap>) -> String {
    r.nft_syntax_stateless()
        .or_else(|| dnat_map_rule_text(&r.expressions(), r.comment_text.as_deref(), anon))
        .unwrap_or_else(|| format!("<undecoded rule {}>", hex(&r.expression_bytes)))
}

/// A named set read back, with key type `key_type`.
fn set_snapshot(key_type: u32, interval: bool, elements: &[nft::SetElement]) -> SetSnapshot {
    let mut ranges: Vec<(&[u8], &[u8])> = elements
        .iter()
        .map(|e| (e.key(), e.key_end().unwrap_or(e.key())))
        .collect();
    SetSnapshot {
        key: key_name(key_type),
        interval,
        elements: elements_text(key_type, &mut ranges),
    }
}

/// An anonymous map read back: key type and (key, data) byte pairs.
struct AnonMap {
    key_type: u32,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

fn anon_map(key_type: u32, elements: &[nft::SetElement]) -> AnonMap {
    let entries = elements
        .iter()
        .filter_map(|e| match e.data() {
            Some(nft::SetElementData::Value(d)) => Some((e.key().to_vec(), d.clone())),
            _ => None,
        })
        .collect();
    AnonMap { key_type, entries }
}

/// The snapshot `rs` reads back as; without `with_elements` the sets' element lists
/// are empty (the structure-only check after apply).
pub(super) fn expected_snapshot(rs: &Ruleset, with_elements: bool) -> Snapshot {
    let t = rs.table.as_str();
    let chains = rs
        .chains
        .iter()
        .map(|c| ChainSnapshot {
            name: c.name.clone(),
            base: c
                .base
                .map(|b| base_text(b.kind.nft_name(), b.hook.nft_name(), b.priority)),
            rules: c
                .rules
                .iter()
                .map(|r| {
                    if let Action::DnatMap {
                        family,
                        proto,
                        entries,
                    } = &r.action
                    {
                        return dnat_map_snapshot_text(*family, *proto, entries, Some(&rs.comment));
                    }
                    nl_rule(t, &c.name, r, &rs.comment)
                        .ok()
                        .and_then(|r| r.nft_syntax_stateless())
                        .unwrap_or_else(|| {
                            format!("{} comment \"{}\"", crate::render::rule_text(r), rs.comment)
                        })
                })
                .collect(),
        })
        .collect();
    let sets = rs
        .sets
        .iter()
        .map(|s| {
            let type_id = nl_key(s.key).type_id();
            let elements = if !with_elements {
                Vec::new()
            } else {
                let wire: Vec<([u8; 16], [u8; 16], usize)> = s
                    .elements
                    .iter()
                    .map(|e| element_wire(e, s.interval))
                    .collect();
                let mut ranges: Vec<(&[u8], &[u8])> =
                    wire.iter().map(|(k, e, n)| (&k[..*n], &e[..*n])).collect();
                elements_text(type_id, &mut ranges)
            };
            (
                s.name.clone(),
                SetSnapshot {
                    key: key_name(type_id),
                    interval: s.interval,
                    elements,
                },
            )
        })
        .chain(
            rs.maps
                .iter()
                .map(|m| (m.name.clone(), vmap::expected_map_snapshot(m))),
        )
        .collect();
    Snapshot {
        table: t.to_string(),
        comment: Some(rs.comment.clone()),
        chains,
        sets,
    }
}

fn base_text(kind: &str, hook: &str, priority: i32) -> String {
    format!("type {kind} hook {hook} priority {priority}")
}

/// Hook numbers of the inet family (NF_INET_*).
fn hook_name(n: u32) -> &'static str {
    match n {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        _ => "unknown",
    }
}

/// Elements as sorted `a` / `a-b` texts, from (key, inclusive end) wire bytes of a set
/// with key type `type_id`. Sorted by the bytes (numeric order for addresses and ports)
/// before formatting, so both sides of a comparison need no string sort.
pub(super) fn elements_text(type_id: u32, ranges: &mut [(&[u8], &[u8])]) -> Vec<String> {
    ranges.sort_unstable();
    let mut out = Vec::with_capacity(ranges.len());
    for (key, end) in ranges.iter() {
        let mut s = String::with_capacity(32);
        push_wire_value(&mut s, type_id, key);
        if end != key {
            s.push('-');
            push_wire_value(&mut s, type_id, end);
        }
        out.push(s);
    }
    out
}

/// Canonical snapshot text of a DNAT map rule: entries sorted, since the kernel lists a
/// map's elements in its own order.
fn dnat_map_snapshot_text(
    family: IpFamily,
    proto: model::L4Proto,
    entries: &[(std::net::SocketAddr, std::net::SocketAddr)],
    comment: Option<&str>,
) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort();
    let body = crate::render::dnat_map_text(family, proto, &sorted);
    match comment {
        Some(c) => format!("{body} comment \"{c}\""),
        None => body,
    }
}

/// Read back a rule of exactly the `DnatMap` shape; None for anything else.
/// Read back a rule of exactly the `DnatMap` shape (see `encode::dnat_map_exprs`) from its
/// expressions and comment; None for anything else.
fn dnat_map_rule_text(
    exprs: &[nft::RuleExpr],
    comment: Option<&str>,
    anon: &HashMap<String, AnonMap>,
) -> Option<String> {
    use nft::RuleExpr as E;
    let [
        E::Meta {
            key: MetaKey::NfProto,
            ..
        },
        E::Cmp {
            op: CmpOp::Eq,
            data: nfproto,
            ..
        },
        E::Meta {
            key: MetaKey::L4Proto,
            ..
        },
        E::Cmp {
            op: CmpOp::Eq,
            data: l4,
            ..
        },
        E::Payload {
            base: PayloadBase::Network,
            offset: addr_off,
            dreg: addr_reg,
            ..
        },
        E::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: port_reg,
            ..
        },
        E::Lookup {
            set,
            sreg,
            dreg: Some(map_reg),
            invert: false,
            ..
        },
        E::Nat {
            nat_type: nft::NatType::Dnat,
            addr: Some((nat_addr, _)),
            proto: Some((nat_port, _)),
            ..
        },
    ] = exprs
    else {
        return None;
    };
    let family = match nfproto.as_slice() {
        [NFPROTO_IPV4] => IpFamily::V4,
        [NFPROTO_IPV6] => IpFamily::V6,
        _ => return None,
    };
    let proto = match l4.as_slice() {
        [6] => model::L4Proto::Tcp,
        [17] => model::L4Proto::Udp,
        [132] => model::L4Proto::Sctp,
        _ => return None,
    };
    let (type_id, len, want_port_reg) = dnat_map_layout(family);
    let want_off = if family == IpFamily::V4 { 16 } else { 24 };
    if *addr_off != want_off
        || *addr_reg != Register::R0
        || *sreg != Register::R0
        || *map_reg != Register::R0
        || *nat_addr != Register::R0
        || *port_reg != want_port_reg
        || *nat_port != want_port_reg
    {
        return None;
    }
    let map = anon.get(set)?;
    if map.key_type != type_id {
        return None;
    }
    let field = |b: &[u8]| -> Option<std::net::SocketAddr> {
        if b.len() != len as usize {
            return None;
        }
        let a = (len - 4) as usize;
        let ip: IpAddr = match family {
            IpFamily::V4 => Ipv4Addr::from(<[u8; 4]>::try_from(&b[..a]).ok()?).into(),
            IpFamily::V6 => Ipv6Addr::from(<[u8; 16]>::try_from(&b[..a]).ok()?).into(),
        };
        Some(std::net::SocketAddr::new(
            ip,
            u16::from_be_bytes([b[a], b[a + 1]]),
        ))
    };
    let entries = map
        .entries
        .iter()
        .map(|(k, d)| Some((field(k)?, field(d)?)))
        .collect::<Option<Vec<_>>>()?;
    Some(dnat_map_snapshot_text(family, proto, &entries, comment))
}

#[cfg(test)]
mod tests {
    use super::super::TYPE_GID;
    use super::super::wire::put_attr;
    use super::*;
    use crate::model::{
        BaseChain, Chain, ChainType, Element, Hook, KeyType, L4Proto, Match, Rule, Set,
    };

    /// One expression as the kernel dumps it: name and nested data.
    fn expr(out: &mut Vec<u8>, name: &str, attrs: &[(u16, Vec<u8>)]) {
        let mut data = Vec::new();
        for (kind, payload) in attrs {
            put_attr(&mut data, *kind, payload);
        }
        let mut elem = Vec::new();
        put_attr(
            &mut elem,
            nft::NFTA_EXPR_NAME,
            &[name.as_bytes(), b"\0"].concat(),
        );
        put_attr(&mut elem, nft::NFTA_EXPR_DATA | 0x8000, &data);
        put_attr(out, nft::NFTA_LIST_ELEM | 0x8000, &elem);
    }

    fn be(v: u32) -> Vec<u8> {
        v.to_be_bytes().to_vec()
    }

    fn value(v: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_attr(&mut out, nft::NFTA_DATA_VALUE, v);
        out
    }

    /// `dnat ip to ip daddr . tcp dport map { ... }` as `nft --debug=netlink` shows it
    /// (registers: 1 = reg 1, 9 = the 32-bit reg holding the port).
    fn dnat_map_rule_bytes(set: &str) -> Vec<u8> {
        use nft::*;
        let mut b = Vec::new();
        let cmp = |b: &mut Vec<u8>, data: &[u8]| {
            let attrs = [
                (NFTA_CMP_SREG, be(1)),
                (NFTA_CMP_OP, be(0)),
                (NFTA_CMP_DATA | 0x8000, value(data)),
            ];
            expr(b, "cmp", &attrs);
        };
        expr(
            &mut b,
            "meta",
            &[(NFTA_META_DREG, be(1)), (NFTA_META_KEY, be(15))],
        );
        cmp(&mut b, &[2]);
        expr(
            &mut b,
            "meta",
            &[(NFTA_META_DREG, be(1)), (NFTA_META_KEY, be(16))],
        );
        cmp(&mut b, &[6]);
        let payload = |b: &mut Vec<u8>, dreg, base, offset, len| {
            let attrs = [
                (NFTA_PAYLOAD_DREG, be(dreg)),
                (NFTA_PAYLOAD_BASE, be(base)),
                (NFTA_PAYLOAD_OFFSET, be(offset)),
                (NFTA_PAYLOAD_LEN, be(len)),
            ];
            expr(b, "payload", &attrs);
        };
        payload(&mut b, 1, 1, 16, 4);
        payload(&mut b, 9, 2, 2, 2);
        let lookup = [
            (NFTA_LOOKUP_SET, [set.as_bytes(), b"\0"].concat()),
            (NFTA_LOOKUP_SREG, be(1)),
            (NFTA_LOOKUP_DREG, be(1)),
            (NFTA_LOOKUP_FLAGS, be(0)),
        ];
        expr(&mut b, "lookup", &lookup);
        let nat = [
            (NFTA_NAT_TYPE, be(1)),
            (NFTA_NAT_FAMILY, be(2)),
            (NFTA_NAT_REG_ADDR_MIN, be(1)),
            (NFTA_NAT_REG_PROTO_MIN, be(9)),
        ];
        expr(&mut b, "nat", &nat);
        b
    }

    fn map_entry(orig: [u8; 4], port: u16, to: [u8; 4], to_port: u16) -> nft::SetElement {
        let field = |a: [u8; 4], p: u16| [&a[..], &p.to_be_bytes(), &[0, 0]].concat();
        nft::SetElement::new(field(orig, port)).value(nft::SetElement::new(field(to, to_port)))
    }

    #[test]
    fn a_dnat_map_rule_decodes_from_its_kernel_attributes() {
        let (type_id, _, _) = dnat_map_layout(IpFamily::V4);
        let elements = [
            map_entry([10, 0, 0, 2], 443, [10, 1, 0, 2], 8443),
            map_entry([10, 0, 0, 1], 80, [10, 1, 0, 1], 8080),
            // An element without data is no map entry.
            nft::SetElement::new(vec![0; 8]),
        ];
        let anon = HashMap::from([("__map0".to_string(), anon_map(type_id, &elements))]);
        let exprs = nft::parse_expressions(&dnat_map_rule_bytes("__map0"));
        assert_eq!(
            dnat_map_rule_text(&exprs, Some("ours"), &anon).as_deref(),
            Some(
                "dnat ip to ip daddr . tcp dport map { 10.0.0.1 . 80 : 10.1.0.1 . 8080, \
                 10.0.0.2 . 443 : 10.1.0.2 . 8443 } comment \"ours\""
            )
        );
        // Another map, a map of another type, or another shape: not ours to print.
        let other = nft::parse_expressions(&dnat_map_rule_bytes("__map1"));
        assert_eq!(dnat_map_rule_text(&other, None, &anon), None);
        let wrong_type = HashMap::from([("__map0".to_string(), anon_map(7, &elements))]);
        assert_eq!(dnat_map_rule_text(&exprs, None, &wrong_type), None);
        assert_eq!(dnat_map_rule_text(&exprs[1..], None, &anon), None);
    }

    #[test]
    fn elements_read_back_sorted_by_value_as_single_values_or_ranges() {
        let elements = [
            nft::SetElement::ipv4_range([10, 0, 0, 0].into(), [10, 255, 255, 255].into()),
            nft::SetElement::ipv4([9, 1, 2, 3].into()),
        ];
        let snap = set_snapshot(7, true, &elements);
        assert_eq!(snap.key, "ipv4_addr");
        assert!(snap.interval);
        assert_eq!(snap.elements, ["9.1.2.3", "10.0.0.0-10.255.255.255"]);
        let ports = [nft::SetElement::port(8080), nft::SetElement::port(22)];
        assert_eq!(set_snapshot(13, false, &ports).elements, ["22", "8080"]);
        let uid = [nft::SetElement::new(1010u32.to_ne_bytes().to_vec())];
        let uids = set_snapshot(TYPE_GID, false, &uid);
        assert_eq!(
            (uids.key.as_str(), uids.elements),
            ("gid", vec!["1010".to_string()])
        );
        let odd = [nft::SetElement::new(vec![0xab, 0x01])];
        let odd = set_snapshot(99, false, &odd);
        assert_eq!(
            (odd.key.as_str(), odd.elements),
            ("type#99", vec!["ab01".to_string()])
        );
    }

    #[test]
    fn chains_and_tables_show_drift_in_their_text() {
        let nat = Some(nft::ChainType::Nat);
        let base = chain_base(nat, Some(0), Some(-100), Some(1));
        assert_eq!(
            base.as_deref(),
            Some("type nat hook prerouting priority -100")
        );
        let dropping = chain_base(nat, Some(4), Some(100), Some(0));
        assert_eq!(
            dropping.as_deref(),
            Some("type nat hook postrouting priority 100 policy drop")
        );
        assert_eq!(chain_base(None, None, None, None), None);
        assert_eq!(
            table_comment(Some("ours".into()), 0).as_deref(),
            Some("ours")
        );
        assert_eq!(
            table_comment(Some("ours".into()), NFT_TABLE_F_DORMANT).as_deref(),
            Some("ours [table flags dormant: disabled]")
        );
    }

    #[test]
    fn the_expected_snapshot_is_what_the_kernel_should_read_back() {
        let rs = Ruleset {
            table: "t".into(),
            comment: "ours".into(),
            sets: vec![Set {
                name: "dst".into(),
                key: KeyType::Ipv4Addr,
                interval: true,
                elements: vec![
                    Element::V4("10.0.0.0/8".parse().unwrap()),
                    Element::V4("1.2.3.4/32".parse().unwrap()),
                ],
            }],
            maps: Vec::new(),
            chains: vec![Chain {
                name: "pre".into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Prerouting,
                    priority: -100,
                }),
                rules: vec![
                    Rule {
                        matches: vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 80,
                        }],
                        action: Action::Redirect { port: 15001 },
                    },
                    Rule {
                        matches: vec![],
                        action: Action::DnatMap {
                            family: IpFamily::V4,
                            proto: L4Proto::Udp,
                            entries: vec![(
                                "10.0.0.1:53".parse().unwrap(),
                                "10.1.0.1:5353".parse().unwrap(),
                            )],
                        },
                    },
                ],
            }],
        };
        let snap = expected_snapshot(&rs, true);
        assert_eq!(snap.comment.as_deref(), Some("ours"));
        let chain = &snap.chains[0];
        assert_eq!(
            chain.base.as_deref(),
            Some("type nat hook prerouting priority -100")
        );
        assert_eq!(
            chain.rules,
            [
                "tcp dport 80 redirect to :15001 comment \"ours\"",
                "dnat ip to ip daddr . udp dport map { 10.0.0.1 . 53 : 10.1.0.1 . 5353 } comment \"ours\"",
            ]
        );
        let set = &snap.sets["dst"];
        assert_eq!(set.elements, ["1.2.3.4", "10.0.0.0-10.255.255.255"]);
        assert!(
            expected_snapshot(&rs, false).sets["dst"]
                .elements
                .is_empty()
        );
    }
}
