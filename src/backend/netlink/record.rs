//! The elements record: which elements nftkit wrote into a table's sets, and the ruleset
//! generation its batch committed as, kept in the table's user data next to the comment.
//!
//! Every commit in a network namespace adds one to the ruleset generation, and nothing
//! changes a set of ours without a commit (our sets have no timeouts and no rule of ours
//! adds to them from the packet path; a rule of another table cannot name them). So when
//! the kernel's generation still is the one recorded in the table (the same table: its
//! handle), nobody committed since that batch, and the sets hold what it wrote. A
//! one-shot re-run with an unchanged config then needs no element dump, the costly read
//! (the kernel walks the set again for every 32 KiB it sends). The structure (table,
//! chains, rules, set types) is still read and compared every time, and `verify` reads
//! everything.
//!
//! The batch is bound to the generation it was built at (the kernel refuses it, ERESTART,
//! if anyone committed in between), so the recorded generation is exactly the one the
//! commit produces. nft ignores user data types it does not know: `nft list` shows the
//! comment only.

use std::hash::{Hash, Hasher};

use super::wire::{element_wire, udata_entry};
use crate::model::Ruleset;

/// Ours; libnftnl defines types 0 (comment) only for tables, and nft skips the others.
const UDATA_RECORD: u8 = 0xe1;
/// The record's layout version (first byte of its value).
const RECORD_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    /// The ruleset generation right after the batch that wrote the table.
    pub generation: u32,
    /// [`elements_digest`] of the ruleset it wrote.
    pub digest: u64,
}

impl Record {
    /// The record a batch bound to generation `current` writes for `rs`.
    pub(super) fn after_commit_at(current: u32, rs: &Ruleset) -> Self {
        Record {
            // The kernel skips 0 when the generation wraps.
            generation: current.checked_add(1).unwrap_or(1),
            digest: elements_digest(rs),
        }
    }

    /// The record as one user data entry (type, length, value), to follow the comment's.
    pub(super) fn entry(&self) -> Vec<u8> {
        let mut e = vec![UDATA_RECORD, 13, RECORD_VERSION];
        e.extend_from_slice(&self.generation.to_be_bytes());
        e.extend_from_slice(&self.digest.to_be_bytes());
        e
    }

    /// The record in a table's user data, if it has one of this layout.
    pub(super) fn find(userdata: &[u8]) -> Option<Self> {
        let [RECORD_VERSION, g0, g1, g2, g3, d @ ..] = udata_entry(userdata, UDATA_RECORD)? else {
            return None;
        };
        Some(Record {
            generation: u32::from_be_bytes([*g0, *g1, *g2, *g3]),
            digest: u64::from_be_bytes(d.try_into().ok()?),
        })
    }
}

/// A hash of every set's name, type and elements as the batch writes them (wire bytes),
/// salted with this build's version: another version never trusts our record.
pub(super) fn elements_digest(rs: &Ruleset) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    concat!("nftkit elements ", env!("CARGO_PKG_VERSION")).hash(&mut h);
    for set in &rs.sets {
        set.name.hash(&mut h);
        (set.key as u8, set.interval, set.elements.len()).hash(&mut h);
        for e in &set.elements {
            let (key, end, n) = element_wire(e, set.interval);
            h.write(&key[..n]);
            h.write(&end[..n]);
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::wire::{UDATA_COMMENT, new_table};
    use super::*;
    use crate::model::{Element, KeyType, Set};
    use nlink::netlink::nftables as nft;

    fn ruleset(cidrs: &[&str]) -> Ruleset {
        Ruleset {
            table: "t".into(),
            comment: "managed by nftkit".into(),
            sets: vec![Set {
                name: "s".into(),
                key: KeyType::Ipv4Addr,
                interval: true,
                elements: cidrs
                    .iter()
                    .map(|c| Element::from(c.parse::<ipnet::IpNet>().unwrap()))
                    .collect(),
            }],
            maps: Vec::new(),
            chains: Vec::new(),
        }
    }

    /// The NFTA_TABLE_USERDATA of a NEWTABLE.
    fn userdata(m: &nft::RawMessage) -> Vec<u8> {
        let mut b = &m.attrs[..];
        while b.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
            if u16::from_ne_bytes([b[2], b[3]]) == nft::NFTA_TABLE_USERDATA {
                return b[4..len].to_vec();
            }
            b = &b[len.next_multiple_of(4)..];
        }
        panic!("no user data")
    }

    #[test]
    fn the_record_reads_back_from_the_user_data_next_to_the_comment() {
        let rs = ruleset(&["10.0.0.0/8"]);
        let r = Record::after_commit_at(41, &rs);
        assert_eq!(r.generation, 42);
        assert_eq!(Record::after_commit_at(u32::MAX, &rs).generation, 1);
        let m = new_table("t", 0, &rs.comment, &r.entry());
        let udata = userdata(&m);
        assert_eq!(&udata[..3], &[UDATA_COMMENT, 18, b'm']);
        assert_eq!(Record::find(&udata), Some(r));
        // A comment alone, garbage, a record of another layout: no record.
        let plain = new_table("t", 0, &rs.comment, &[]);
        assert_eq!(Record::find(&userdata(&plain)), None);
        assert_eq!(Record::find(&[UDATA_RECORD, 200, 1]), None);
        assert_eq!(Record::find(&[UDATA_RECORD, 2, 9, 9]), None);
    }

    #[test]
    fn the_digest_changes_with_any_element_and_not_with_rules() {
        let a = ruleset(&["10.0.0.0/8", "192.168.0.0/16"]);
        let b = ruleset(&["10.0.0.0/8", "192.168.0.0/17"]);
        let c = ruleset(&["10.0.0.0/8"]);
        assert_ne!(elements_digest(&a), elements_digest(&b));
        assert_ne!(elements_digest(&a), elements_digest(&c));
        let mut renamed = a.clone();
        renamed.sets[0].name = "other".into();
        assert_ne!(elements_digest(&a), elements_digest(&renamed));
        assert_eq!(elements_digest(&a), elements_digest(&a.clone()));
    }
}
