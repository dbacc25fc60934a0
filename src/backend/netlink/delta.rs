//! Element-only updates (`Backend::apply_delta`): ONE batch of DELSETELEM messages, then
//! NEWSETELEM messages, each list split as the replace batch splits it
//! (`ELEMENTS_PER_MESSAGE`, `vmap::ENTRIES_PER_MESSAGE`), nothing else. Verdict-map
//! entries go through `vmap.rs`'s builders (a key whose chain changed: removed with its
//! old `goto`, added with the new one, in the same batch). The elements are written by the same
//! `wire::element_message` the replace batch uses, so an interval set's range is removed
//! in exactly the form it was added: its start, and `last + 1` flagged INTERVAL_END
//! (none for a range that runs to the top). Removals come first: an interval set passes
//! through a subset of the old ranges and ends at the new ones, never overlapping.
//!
//! The batch carries the ruleset generation the caller found the old table at (when it
//! gives one): the kernel refuses it (ERESTART) if anything was committed since.

use nlink::netlink::nftables as nft;

use super::wire::{ELEMENTS_PER_MESSAGE, element_message};
use super::{NetlinkBackend, is_owned_comment, kernel_error, vmap};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::model::delta::Delta;

/// What one message of the delta batch does, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
struct DeltaOp {
    /// A verdict map's entries, not a set's elements.
    map: bool,
    set: String,
    remove: bool,
    first: usize,
    elements: Vec<String>,
}

impl DeltaOp {
    fn describe(&self) -> String {
        let shown = super::preview(&self.elements);
        format!(
            "{} {} {}..{} {} {} {} ({shown})",
            if self.remove { "remove" } else { "add" },
            if self.map { "entries" } else { "elements" },
            self.first,
            self.first + self.elements.len(),
            if self.remove { "from" } else { "to" },
            if self.map { "map" } else { "set" },
            self.set,
        )
    }
}

/// One message of the delta batch.
enum Msg {
    /// A set's elements, written as the replace batch writes them.
    Raw(nft::RawMessage),
    /// A verdict map's entries removed, through nlink's map builders as `vmap.rs` adds them.
    DelEntries(nft::Set, Vec<nft::SetElement>),
    AddEntries(nft::Set, Vec<nft::SetElement>),
}

/// The delta batch's messages for the sets and maps of `new` (all removals first), each
/// with what it does. Refuses a delta naming a set or map `new` lacks.
fn messages(new: &Ruleset, delta: &Delta) -> Result<Vec<(Msg, DeltaOp)>> {
    let mut removes = Vec::new();
    let mut adds = Vec::new();
    for d in &delta.sets {
        let set = new.sets.iter().find(|s| s.name == d.name).ok_or_else(|| {
            Error::runtime(format!(
                "internal error: element delta for set {} that table inet {} lacks",
                d.name, new.table
            ))
        })?;
        for (list, remove, out) in [(&d.remove, true, &mut removes), (&d.add, false, &mut adds)] {
            for (n, part) in list.chunks(ELEMENTS_PER_MESSAGE).enumerate() {
                let mut m = element_message(&new.table, set, part);
                if remove {
                    m.msg = nft::NFT_MSG_DELSETELEM;
                    m.flags = 0;
                }
                out.push((
                    Msg::Raw(m),
                    DeltaOp {
                        map: false,
                        set: set.name.clone(),
                        remove,
                        first: n * ELEMENTS_PER_MESSAGE,
                        elements: part.iter().map(crate::render::element).collect(),
                    },
                ));
            }
        }
    }
    for d in &delta.maps {
        let map = new.maps.iter().find(|m| m.name == d.name).ok_or_else(|| {
            Error::runtime(format!(
                "internal error: entry delta for map {} that table inet {} lacks",
                d.name, new.table
            ))
        })?;
        let set = vmap::nl_map(&new.table, map, &new.comment);
        for (list, remove, out) in [(&d.remove, true, &mut removes), (&d.add, false, &mut adds)] {
            for (n, part) in list.chunks(vmap::ENTRIES_PER_MESSAGE).enumerate() {
                let entries = part
                    .iter()
                    .map(|(key, chain)| vmap::nl_entry(map, key, chain))
                    .collect::<Result<Vec<_>>>()?;
                let op = DeltaOp {
                    map: true,
                    set: map.name.clone(),
                    remove,
                    first: n * vmap::ENTRIES_PER_MESSAGE,
                    elements: part
                        .iter()
                        .map(|(k, c)| format!("{} : goto {c}", crate::render::element(k)))
                        .collect(),
                };
                let msg = if remove {
                    Msg::DelEntries(set.clone(), entries)
                } else {
                    Msg::AddEntries(set.clone(), entries)
                };
                out.push((msg, op));
            }
        }
    }
    removes.extend(adds);
    Ok(removes)
}

impl NetlinkBackend {
    /// `Backend::apply_delta` (see the module documentation).
    pub(super) fn apply_element_delta(&mut self, new: &Ruleset, delta: &Delta) -> Result<()> {
        let t = &new.table;
        match self.table_info(t)? {
            None => {
                return Err(Error::runtime(format!(
                    "table inet {t} does not exist; no element-only update"
                )));
            }
            Some(info) if !is_owned_comment(info.comment.as_deref()) => {
                return Err(Error::runtime(format!(
                    "table inet {t} is not managed by nftkit (no ownership comment); no element-only update"
                )));
            }
            Some(_) => {}
        }
        let msgs = messages(new, delta)?;
        if msgs.is_empty() {
            return Ok(());
        }
        let mut tx = self.conn.transaction();
        if let Some(g) = delta.expect_generation {
            // The kernel's generation is a u32; ours came from it.
            let g = u32::try_from(g)
                .map_err(|_| Error::runtime(format!("ruleset generation {g} out of range")))?;
            tx = tx.expect_generation(g);
        }
        let mut ops = Vec::with_capacity(msgs.len());
        for (m, op) in msgs {
            tx = match m {
                Msg::Raw(m) => tx.raw(m),
                Msg::DelEntries(set, entries) => tx.del_set_elements(&set, &entries),
                Msg::AddEntries(set, entries) => tx.add_set_elements(&set, &entries),
            };
            ops.push(op);
        }
        let sent = std::time::Instant::now();
        let result = self.rt.block_on(tx.commit(&self.conn));
        tracing::debug!(
            commit_us = sent.elapsed().as_micros() as u64,
            messages = ops.len(),
            removed = delta.removed(),
            added = delta.added(),
            "element batch sent and acknowledged"
        );
        result.map_err(|e| delta_error(t, &e, &ops))
    }
}

/// A refused delta naming the refused messages when the kernel said which.
fn delta_error(table: &str, e: &nlink::Error, ops: &[DeltaOp]) -> Error {
    if e.is_restart() {
        return Error::Kernel {
            op: format!("element update of table inet {table}"),
            errno: e.errno(),
            message: "the ruleset changed since it was last applied (stale generation); nothing committed".into(),
        };
    }
    if let nlink::ErrorDetail::NftBatch { failures, .. } = e.detail() {
        let named: Vec<String> = failures
            .iter()
            .filter_map(|f| {
                let what = f.index.and_then(|i| ops.get(i))?.describe();
                let why = std::io::Error::from_raw_os_error(f.errno);
                Some(format!("{what}: {why}"))
            })
            .collect();
        if !named.is_empty() {
            return Error::Kernel {
                op: format!(
                    "kernel refused the element batch for table inet {table}, nothing committed"
                ),
                errno: failures.first().map(|f| f.errno),
                message: named.join("; "),
            };
        }
    }
    kernel_error(&format!("element update of table inet {table}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::delta::element_delta;
    use crate::model::{Element, KeyType, Set};

    fn set(name: &str, interval: bool, elements: Vec<Element>) -> Set {
        Set {
            name: name.into(),
            key: KeyType::Ipv6Addr,
            interval,
            elements,
        }
    }

    fn v6(i: u32, len: u8) -> Element {
        Element::V6(format!("fd00:{:x}::/{len}", i + 1).parse().unwrap())
    }

    fn rs(sets: Vec<Set>) -> Ruleset {
        Ruleset {
            table: "t".into(),
            comment: "managed by nftkit test".into(),
            sets,
            maps: Vec::new(),
            chains: Vec::new(),
        }
    }

    fn raw(m: &Msg) -> &nft::RawMessage {
        match m {
            Msg::Raw(m) => m,
            _ => panic!("not a set's element message"),
        }
    }

    #[test]
    fn removals_come_first_and_big_lists_are_split_inside_the_one_batch() {
        let old = rs(vec![
            set("a", true, (0..300).map(|i| v6(i, 64)).collect()),
            set("b", false, vec![v6(0, 128)]),
        ]);
        let new = rs(vec![
            set("a", true, (300..600).map(|i| v6(i, 64)).collect()),
            set("b", false, vec![v6(1, 128)]),
        ]);
        let d = element_delta(&old, &new).unwrap();
        let msgs = messages(&new, &d).unwrap();
        let kinds: Vec<(u8, &str, usize, usize)> = msgs
            .iter()
            .map(|(m, op)| {
                let m = raw(m);
                assert!(m.attrs.len() < 65536);
                (m.msg, op.set.as_str(), op.first, op.elements.len())
            })
            .collect();
        let (del, add) = (nft::NFT_MSG_DELSETELEM, nft::NFT_MSG_NEWSETELEM);
        assert_eq!(
            kinds,
            [
                (del, "a", 0, 256),
                (del, "a", 256, 44),
                (del, "b", 0, 1),
                (add, "a", 0, 256),
                (add, "a", 256, 44),
                (add, "b", 0, 1),
            ]
        );
        // Removals carry no create flag; additions the replace batch's.
        assert!(msgs[..3].iter().all(|(m, _)| raw(m).flags == 0));
        assert!(msgs[3..].iter().all(|(m, _)| raw(m).flags != 0));
        assert_eq!(
            msgs[2].1.describe(),
            "remove elements 0..1 from set b (fd00:1::)"
        );
    }

    #[test]
    fn an_interval_range_is_removed_in_the_form_it_was_added() {
        let s = set("a", true, vec![v6(7, 64)]);
        let full = element_message("t", &s, &s.elements);
        let new = rs(vec![set("a", true, vec![])]);
        let d = element_delta(&rs(vec![s.clone()]), &new).unwrap();
        let msgs = messages(&new, &d).unwrap();
        assert_eq!(msgs.len(), 1);
        // Same attributes (start and flagged end), another message type.
        assert_eq!(raw(&msgs[0].0).attrs, full.attrs);
        assert_eq!(raw(&msgs[0].0).msg, nft::NFT_MSG_DELSETELEM);
        let (_, end, n) = super::super::wire::element_wire(&v6(7, 64), true);
        assert_eq!(n, 16);
        assert_eq!(end[..8], [0xfd, 0, 0, 8, 0, 0, 0, 0]);
    }

    #[test]
    fn map_entries_follow_the_set_elements_and_unknown_names_are_refused() {
        let map = |entries: Vec<(Element, String)>| crate::model::VerdictMap {
            name: "m".into(),
            key: KeyType::Ipv6Addr,
            entries,
        };
        let mut old = rs(vec![set("a", false, vec![v6(0, 128)])]);
        old.maps.push(map(vec![(v6(1, 128), "c".into())]));
        let mut new = rs(vec![set("a", false, vec![v6(2, 128)])]);
        new.maps.push(map(vec![(v6(1, 128), "d".into())]));
        let d = element_delta(&old, &new).unwrap();
        let msgs = messages(&new, &d).unwrap();
        let kinds: Vec<String> = msgs
            .iter()
            .map(|(m, op)| {
                let kind = match m {
                    Msg::Raw(_) => "raw",
                    Msg::DelEntries(..) => "del",
                    Msg::AddEntries(..) => "add",
                };
                format!("{kind} {}", op.describe())
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "raw remove elements 0..1 from set a (fd00:1::)",
                "del remove entries 0..1 from map m (fd00:2:: : goto c)",
                "raw add elements 0..1 to set a (fd00:3::)",
                "add add entries 0..1 to map m (fd00:2:: : goto d)",
            ]
        );
        let mut gone = new.clone();
        gone.maps.clear();
        assert!(messages(&gone, &d).is_err());
        let new = rs(vec![]);
        let d = Delta {
            sets: vec![crate::model::delta::SetDelta {
                name: "nope".into(),
                remove: vec![v6(0, 128)],
                add: vec![],
            }],
            ..Default::default()
        };
        assert!(messages(&new, &d).is_err());
        assert!(messages(&new, &Delta::default()).unwrap().is_empty());
    }
}
