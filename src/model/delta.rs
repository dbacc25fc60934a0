//! Element-only differences between two rulesets: when the desired table changes only in
//! set elements (and verdict-map entries), a backend can send the removed and added
//! elements instead of replacing the whole table (`Backend::apply_delta`).
//!
//! Pure: no I/O. [`element_delta`] is None as soon as anything but elements differs
//! (table, comment, a set's or map's name, key or interval flag, the set and map lists,
//! chains, rules), so a delta never changes structure.
//!
//! Elements are compared as the kernel tells them apart: an interval set's prefix by its
//! range (`10.0.0.1/24` is `10.0.0.0/24`), a plain set's address by the address alone (a
//! plain set holds addresses, not prefixes). Each element is removed or added once, even
//! when a list repeats it. Interval sets hold non-overlapping prefixes (netpol normalises
//! them); removing `old - new` and then adding `new - old` passes only through subsets of
//! `old` and ends at `new`, so the set never holds overlapping ranges.

use std::collections::BTreeSet;

use super::{Element, Ruleset, Set};

/// What to remove and add in one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetDelta {
    pub name: String,
    /// Elements of the old set that the new one lacks, sorted.
    pub remove: Vec<Element>,
    /// Elements of the new set that the old one lacks, sorted.
    pub add: Vec<Element>,
}

/// What to remove and add in one verdict map. A key whose chain changed is removed (with
/// its old chain) and added (with the new one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapDelta {
    pub name: String,
    pub remove: Vec<(Element, String)>,
    pub add: Vec<(Element, String)>,
}

/// The element-only difference from one ruleset to another ([`element_delta`]): only the
/// sets and maps that change, in the rulesets' order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub sets: Vec<SetDelta>,
    pub maps: Vec<MapDelta>,
    /// Commit only if the kernel's ruleset generation is still this one (the caller knows
    /// the kernel held the old ruleset at it); None: no such condition.
    pub expect_generation: Option<u64>,
}

impl Delta {
    /// Nothing to remove or add (the rulesets hold the same elements).
    pub fn is_empty(&self) -> bool {
        self.removed() == 0 && self.added() == 0
    }

    /// Elements and map entries removed.
    pub fn removed(&self) -> usize {
        self.sets.iter().map(|s| s.remove.len()).sum::<usize>()
            + self.maps.iter().map(|m| m.remove.len()).sum::<usize>()
    }

    /// Elements and map entries added.
    pub fn added(&self) -> usize {
        self.sets.iter().map(|s| s.add.len()).sum::<usize>()
            + self.maps.iter().map(|m| m.add.len()).sum::<usize>()
    }

    /// Whether any verdict-map entry changes.
    pub fn touches_maps(&self) -> bool {
        self.maps
            .iter()
            .any(|m| !m.remove.is_empty() || !m.add.is_empty())
    }

    /// `old` with this delta applied: its elements removed and added, each set and map
    /// sorted (what the kernel holds afterwards, in [`normalized`] form). An element to
    /// remove that `old` lacks is an error, as the kernel's ENOENT is.
    pub fn apply_to(&self, old: &Ruleset) -> Result<Ruleset, String> {
        let mut out = normalized(old);
        for d in &self.sets {
            let set = out
                .sets
                .iter_mut()
                .find(|s| s.name == d.name)
                .ok_or_else(|| format!("no set {}", d.name))?;
            let interval = set.interval;
            let mut have: BTreeSet<Element> = set.elements.iter().copied().collect();
            for e in &d.remove {
                if !have.remove(&identity(e, interval)) {
                    return Err(format!("set {} has no element {e:?}", d.name));
                }
            }
            have.extend(d.add.iter().map(|e| identity(e, interval)));
            set.elements = have.into_iter().collect();
        }
        for d in &self.maps {
            let map = out
                .maps
                .iter_mut()
                .find(|m| m.name == d.name)
                .ok_or_else(|| format!("no map {}", d.name))?;
            let mut have: BTreeSet<(Element, String)> = map.entries.iter().cloned().collect();
            for (k, chain) in &d.remove {
                if !have.remove(&(identity(k, false), chain.clone())) {
                    return Err(format!("map {} has no entry {k:?} : {chain}", d.name));
                }
            }
            for (k, chain) in &d.add {
                let k = identity(k, false);
                if have.iter().any(|(have_k, _)| *have_k == k) {
                    return Err(format!("map {} already has key {k:?}", d.name));
                }
                have.insert((k, chain.clone()));
            }
            map.entries = have.into_iter().collect();
        }
        Ok(out)
    }
}

/// An element as the kernel tells it apart in a set (interval or not): see the module
/// documentation.
pub fn identity(e: &Element, interval: bool) -> Element {
    match *e {
        Element::V4(n) if interval => Element::V4(n.trunc()),
        Element::V6(n) if interval => Element::V6(n.trunc()),
        Element::V4(n) => Element::V4(n.addr().into()),
        Element::V6(n) => Element::V6(n.addr().into()),
        other => other,
    }
}

/// `rs` with every set's and map's elements as the kernel holds them: identities, sorted,
/// each once. Two rulesets whose kernel tables hold the same are equal in this form.
pub fn normalized(rs: &Ruleset) -> Ruleset {
    let mut out = rs.clone();
    for s in &mut out.sets {
        let set: BTreeSet<Element> = s.elements.iter().map(|e| identity(e, s.interval)).collect();
        s.elements = set.into_iter().collect();
    }
    for m in &mut out.maps {
        let map: BTreeSet<(Element, String)> = m
            .entries
            .iter()
            .map(|(k, c)| (identity(k, false), c.clone()))
            .collect();
        m.entries = map.into_iter().collect();
    }
    out
}

/// A map's entries by key, or None if a key names two chains (not a map the kernel can
/// hold: no delta for it).
fn map_entries(m: &super::VerdictMap) -> Option<std::collections::BTreeMap<Element, &str>> {
    let mut out = std::collections::BTreeMap::new();
    for (k, chain) in &m.entries {
        if let Some(prev) = out.insert(identity(k, false), chain.as_str())
            && prev != chain
        {
            return None;
        }
    }
    Some(out)
}

fn same_declaration(a: &Set, b: &Set) -> bool {
    a.name == b.name && a.key == b.key && a.interval == b.interval
}

/// The element-only change from `old` to `new`, or None when anything else differs (see
/// the module documentation). An empty delta: the same elements, maybe in another order.
pub fn element_delta(old: &Ruleset, new: &Ruleset) -> Option<Delta> {
    if old.table != new.table
        || old.comment != new.comment
        || old.chains != new.chains
        || old.sets.len() != new.sets.len()
        || old.maps.len() != new.maps.len()
    {
        return None;
    }
    let mut delta = Delta::default();
    for (a, b) in old.sets.iter().zip(&new.sets) {
        if !same_declaration(a, b) {
            return None;
        }
        let ids = |s: &Set| -> BTreeSet<Element> {
            s.elements.iter().map(|e| identity(e, s.interval)).collect()
        };
        let (was, now) = (ids(a), ids(b));
        let remove: Vec<Element> = was.difference(&now).copied().collect();
        let add: Vec<Element> = now.difference(&was).copied().collect();
        if !remove.is_empty() || !add.is_empty() {
            delta.sets.push(SetDelta {
                name: b.name.clone(),
                remove,
                add,
            });
        }
    }
    for (a, b) in old.maps.iter().zip(&new.maps) {
        if a.name != b.name || a.key != b.key {
            return None;
        }
        let (was, now) = (map_entries(a)?, map_entries(b)?);
        let gone = was
            .iter()
            .filter(|(k, c)| now.get(*k) != Some(*c))
            .map(|(k, c)| (*k, c.to_string()));
        let new_entries = now
            .iter()
            .filter(|(k, c)| was.get(*k) != Some(*c))
            .map(|(k, c)| (*k, c.to_string()));
        let (remove, add): (Vec<_>, Vec<_>) = (gone.collect(), new_entries.collect());
        if !remove.is_empty() || !add.is_empty() {
            delta.maps.push(MapDelta {
                name: b.name.clone(),
                remove,
                add,
            });
        }
    }
    Some(delta)
}

#[cfg(test)]
#[path = "delta_tests.rs"]
mod tests;
