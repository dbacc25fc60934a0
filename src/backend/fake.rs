//! In-memory backend for logic tests: keeps each applied table's expected snapshot,
//! records applies, can be told to fail the next call or to tamper with a table.

use std::collections::BTreeMap;

use super::{Backend, Inspect, OwnedTable, is_owned_comment};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::model::delta::{Delta, identity};
use crate::render;
use crate::snapshot::{ChainSnapshot, SetSnapshot, Snapshot};

#[derive(Debug, Default)]
pub struct FakeBackend {
    pub tables: BTreeMap<String, Snapshot>,
    /// Number of successful applies.
    pub applies: usize,
    /// When set, the next apply or delete fails with this message and changes nothing.
    pub fail_next: Option<String>,
    /// What `foreign_drop_chains` reports, per hook (other tables' dropping chains).
    pub foreign_drops: Vec<(crate::model::Hook, super::ForeignDrop)>,
    /// `--force`: replace or delete tables not marked as ours.
    pub force: bool,
    /// Number of `read_back` calls.
    pub read_backs: usize,
    /// Number of successful element-only updates (`apply_delta`).
    pub deltas: usize,
    /// The ruleset generation: bumped by every commit, like the kernel's (a change made
    /// to `tables` directly counts as one commit, seen when the generation is read).
    commits: u64,
    /// A hash of `tables` at the last commit.
    committed: u64,
}

impl FakeBackend {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables_hash(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        format!("{:?}", self.tables).hash(&mut h);
        h.finish()
    }

    /// One commit: the generation moves on.
    fn commit(&mut self) {
        self.commits += 1;
        self.committed = self.tables_hash();
    }

    /// Simulate `nft flush chain`.
    pub fn flush_chain(&mut self, table: &str, chain: &str) {
        if let Some(c) = self
            .tables
            .get_mut(table)
            .and_then(|t| t.chains.iter_mut().find(|c| c.name == chain))
        {
            c.rules.clear();
        }
    }

    /// Simulate a table someone else created with our name.
    pub fn insert_foreign(&mut self, table: &str) {
        self.tables.insert(
            table.to_string(),
            Snapshot {
                table: table.to_string(),
                ..Default::default()
            },
        );
    }

    /// The snapshot the kernel would hold after applying `rs`: what the fake stores.
    pub fn expected(&self, rs: &Ruleset) -> Snapshot {
        Snapshot {
            table: rs.table.clone(),
            comment: Some(rs.comment.clone()),
            chains: rs
                .chains
                .iter()
                .map(|c| ChainSnapshot {
                    name: c.name.clone(),
                    base: c.base.map(|b| {
                        format!(
                            "type {} hook {} priority {}",
                            b.kind.nft_name(),
                            b.hook.nft_name(),
                            b.priority
                        )
                    }),
                    rules: c.rules.iter().map(render::rule_text).collect(),
                })
                .collect(),
            sets: rs
                .sets
                .iter()
                .map(|s| {
                    let mut elements: Vec<String> =
                        s.elements.iter().map(render::element).collect();
                    elements.sort();
                    (
                        s.name.clone(),
                        SetSnapshot {
                            key: s.key.nft_name().into(),
                            interval: s.interval,
                            elements,
                        },
                    )
                })
                .chain(rs.maps.iter().map(|m| {
                    let mut entries: Vec<String> = m
                        .entries
                        .iter()
                        .map(|(e, chain)| render::map_entry(e, chain))
                        .collect();
                    entries.sort();
                    (
                        m.name.clone(),
                        SetSnapshot {
                            key: format!("{} : verdict", m.key.nft_name()),
                            interval: false,
                            elements: entries,
                        },
                    )
                }))
                .collect(),
        }
    }

    fn take_failure(&mut self) -> Result<()> {
        match self.fail_next.take() {
            Some(msg) => Err(Error::runtime(msg)),
            None => Ok(()),
        }
    }
}

impl Backend for FakeBackend {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn apply(&mut self, rs: &Ruleset) -> Result<()> {
        if let Some(t) = self.tables.get(&rs.table)
            && !is_owned_comment(t.comment.as_deref())
            && !self.force
        {
            return Err(Error::runtime(format!(
                "table inet {} exists but is not managed by nftkit",
                rs.table
            )));
        }
        // Refuse what the kernel would refuse, so tests on the fake can fail.
        super::validated(rs)?;
        self.take_failure()?;
        let snap = self.expected(rs);
        self.tables.insert(rs.table.clone(), snap);
        self.commit();
        self.applies += 1;
        Ok(())
    }

    /// Elements removed and added in the stored snapshot; an element to remove that the
    /// table lacks is refused (the kernel's ENOENT) and nothing changes.
    fn apply_delta(&mut self, new: &Ruleset, delta: &Delta) -> Result<()> {
        super::validated(new)?;
        let force = self.force;
        let generation = self.ruleset_generation();
        let Some(t) = self.tables.get(&new.table) else {
            return Err(Error::runtime(format!(
                "table inet {} does not exist",
                new.table
            )));
        };
        if !is_owned_comment(t.comment.as_deref()) && !force {
            return Err(Error::runtime(format!(
                "table inet {} exists but is not managed by nftkit",
                new.table
            )));
        }
        if let Some(g) = delta.expect_generation
            && generation != Some(g)
        {
            return Err(Error::runtime("ruleset generation changed (ERESTART)"));
        }
        let mut t = t.clone();
        for d in &delta.sets {
            let interval = new
                .sets
                .iter()
                .find(|s| s.name == d.name)
                .map(|s| s.interval);
            let (Some(interval), Some(set)) = (interval, t.sets.get_mut(&d.name)) else {
                return Err(Error::runtime(format!("no set {}", d.name)));
            };
            let text = |e: &crate::model::Element| render::element(&identity(e, interval));
            for e in &d.remove {
                let Some(i) = set.elements.iter().position(|x| *x == text(e)) else {
                    return Err(Error::runtime(format!(
                        "set {} has no element {}",
                        d.name,
                        text(e)
                    )));
                };
                set.elements.remove(i);
            }
            for e in &d.add {
                if !set.elements.contains(&text(e)) {
                    set.elements.push(text(e));
                }
            }
            set.elements.sort();
        }
        // Verdict maps are kept as sets of `A : goto C` texts.
        for d in &delta.maps {
            let Some(map) = t.sets.get_mut(&d.name) else {
                return Err(Error::runtime(format!("no map {}", d.name)));
            };
            for (k, chain) in &d.remove {
                let entry = render::map_entry(&identity(k, false), chain);
                let Some(i) = map.elements.iter().position(|x| *x == entry) else {
                    return Err(Error::runtime(format!(
                        "map {} has no entry {entry}",
                        d.name
                    )));
                };
                map.elements.remove(i);
            }
            for (k, chain) in &d.add {
                map.elements
                    .push(render::map_entry(&identity(k, false), chain));
            }
            map.elements.sort();
        }
        self.take_failure()?;
        self.tables.insert(new.table.clone(), t);
        self.commit();
        self.deltas += 1;
        Ok(())
    }

    fn compare(&mut self, rs: &Ruleset) -> Result<super::Comparison> {
        let observed = self.read_back(&rs.table)?;
        Ok(super::compare_snapshots(
            &self.expected(rs),
            observed.as_ref(),
        ))
    }

    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>> {
        self.read_backs += 1;
        Ok(self.tables.get(table).cloned())
    }

    /// Changes with any change to the tables, also tests' direct edits (as the kernel's
    /// generation does with any commit): a hash of their content.
    fn ruleset_generation(&mut self) -> Option<u64> {
        if self.tables_hash() != self.committed {
            self.commit();
        }
        Some(self.commits)
    }

    fn delete(&mut self, table: &str) -> Result<bool> {
        match self.tables.get(table) {
            None => Ok(false),
            Some(t) if !is_owned_comment(t.comment.as_deref()) && !self.force => Err(
                Error::runtime(format!("table inet {table} is not managed by nftkit")),
            ),
            Some(_) => {
                self.take_failure()?;
                self.tables.remove(table);
                self.commit();
                Ok(true)
            }
        }
    }
}

impl Inspect for FakeBackend {
    fn foreign_drop_chains(
        &mut self,
        _own_table: &str,
        hook: crate::model::Hook,
    ) -> Result<Vec<super::ForeignDrop>> {
        Ok(self
            .foreign_drops
            .iter()
            .filter(|(h, _)| *h == hook)
            .map(|(_, c)| c.clone())
            .collect())
    }

    fn list_owned(&mut self) -> Result<Vec<OwnedTable>> {
        Ok(self
            .tables
            .values()
            .filter(|t| is_owned_comment(t.comment.as_deref()))
            .map(|t| OwnedTable {
                backend: "fake",
                table: t.table.clone(),
                comment: t.comment.clone().unwrap_or_default(),
                chains: t.chains.len(),
                rules: t.rule_count(),
                sets: t.sets.len(),
                elements: t.element_count(),
            })
            .collect())
    }
}
