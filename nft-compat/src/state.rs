//! What one nftkit table owns in one IP family, and the restore input between two states.
//!
//! Ownership is the comment, never the name alone. Candidates are the chains named
//! `PREFIX-…` (see [`crate::naming`]) in the tables raw, nat and filter; of these a chain
//! is nftkit's only when it can be proven (iptables chains carry no comment of their own):
//!
//! - a rule carrying the ownership comment ([`OWNER_PREFIX`]) jumps or goes to it (our
//!   jump from a built-in chain, or a rule of another chain of ours), or
//! - it is not empty and every one of its rules carries the comment.
//!
//! A jump rule of a built-in chain is ours only when it carries the comment too. An empty
//! chain with our name that no commented rule enters is not provably ours. Anything else
//! with a clashing name is foreign ([`FamilyState::foreign`]): the backend refuses to
//! replace or delete it unless told to (`--force`, [`FamilyState::from_save_claiming`]).
//! [`plan`] writes nothing but the two states it is given: chains outside them are never
//! declared, rules outside them never deleted.
//!
//! Which nftkit tables a save holds at all is [`owned_prefixes`] (found through commented
//! rules), and the comment they carry [`owner_comment`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::Table;
use crate::naming;
use crate::save::{Save, SavedTable};

/// The comment prefix that marks a rule as nftkit's (`managed by nftkit <command>`).
pub const OWNER_PREFIX: &str = "managed by nftkit";

/// Whether a rule spec carries nftkit's ownership comment.
pub fn is_ours(spec: &str) -> bool {
    crate::rule::comment_of(spec).is_some_and(|c| c.starts_with(OWNER_PREFIX))
}

/// One owned chain and its rule specs (without `-A NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedChain {
    pub name: String,
    pub rules: Vec<String>,
}

/// A rule in a built-in chain that enters an owned chain.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Jump {
    /// The built-in chain, e.g. `OUTPUT`.
    pub from: String,
    /// The spec, e.g. `-m comment --comment "managed by nftkit redirect" -j NFTKIT-REDIRECT-OUTPUT`.
    pub spec: String,
}

/// The owned part of one iptables table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    pub table: Table,
    pub chains: Vec<OwnedChain>,
    /// Desired: each once, in the order they should end up in (we insert at the top).
    /// Read back: as found, duplicates included.
    pub jumps: Vec<Jump>,
}

impl TableState {
    pub fn chain(&self, name: &str) -> Option<&OwnedChain> {
        self.chains.iter().find(|c| c.name == name)
    }
}

/// The owned part of one family: a table state per table used, in [`Table`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FamilyState {
    pub tables: Vec<TableState>,
}

impl FamilyState {
    pub fn is_empty(&self) -> bool {
        self.tables
            .iter()
            .all(|t| t.chains.is_empty() && t.jumps.is_empty())
    }

    pub fn table(&self, t: Table) -> Option<&TableState> {
        self.tables.iter().find(|s| s.table == t)
    }

    /// Rules in owned chains (jumps not counted).
    pub fn rule_count(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.chains)
            .map(|c| c.rules.len())
            .sum()
    }

    pub fn chain_count(&self) -> usize {
        self.tables.iter().map(|t| t.chains.len()).sum()
    }

    /// The owned part of `save` for chain prefix `prefix`: the chains and jumps proven
    /// ours by the comment (see the module documentation).
    ///
    /// Chains of another nftkit table whose prefix extends ours (`--table nftkit-redirect-x`
    /// next to `nftkit-redirect`) are left out: a chain entered from a built-in chain is a
    /// base chain, so its name tells its prefix, and that prefix's chains are not ours.
    pub fn from_save(save: &Save, prefix: &str) -> FamilyState {
        Self::from_save_claiming(save, prefix, |_, _| false)
    }

    /// [`FamilyState::from_save`] plus the candidates `claim` accepts although they are
    /// not provably ours (`--force`: take over a clashing name), together with every jump
    /// into a claimed chain. `|_, _| true` is ownership by name alone.
    pub fn from_save_claiming(
        save: &Save,
        prefix: &str,
        claim: impl Fn(Table, &str) -> bool,
    ) -> FamilyState {
        let longer = longer_prefixes(save, prefix);
        let named = |chain: &str| {
            naming::is_owned(prefix, chain) && !longer.iter().any(|p| naming::is_owned(p, chain))
        };
        let mut tables = Vec::new();
        for table in Table::ALL {
            let Some(st) = save.table(table.name()) else {
                continue;
            };
            let chains: Vec<OwnedChain> = st
                .chains
                .iter()
                .filter(|(n, policy)| {
                    policy.is_none() && named(n) && (proven_ours(st, n) || claim(table, n))
                })
                .map(|(n, _)| OwnedChain {
                    name: n.clone(),
                    rules: st.rules_of(n).map(str::to_string).collect(),
                })
                .collect();
            let jumps: Vec<Jump> = st
                .rules
                .iter()
                .filter(|(c, _)| st.is_builtin(c))
                .filter(|(_, spec)| {
                    crate::rule::target_of(spec).is_some_and(|(_, t)| {
                        chains.iter().any(|c| c.name == t) && (is_ours(spec) || claim(table, &t))
                    })
                })
                .map(|(c, spec)| Jump {
                    from: c.clone(),
                    spec: spec.clone(),
                })
                .collect();
            if !chains.is_empty() || !jumps.is_empty() {
                tables.push(TableState {
                    table,
                    chains,
                    jumps,
                });
            }
        }
        FamilyState { tables }
    }

    /// What carries a name of `prefix` in `save` but is not provably ours: candidate
    /// chains (with their rules) and jump rules without the comment that enter a
    /// candidate chain (ours or not).
    pub fn foreign(save: &Save, prefix: &str) -> FamilyState {
        let ours = Self::from_save(save, prefix);
        let all = Self::from_save_claiming(save, prefix, |_, _| true);
        let tables = all
            .tables
            .into_iter()
            .filter_map(|t| {
                let mine = ours.table(t.table);
                let chains: Vec<OwnedChain> = t
                    .chains
                    .into_iter()
                    .filter(|c| mine.is_none_or(|m| m.chain(&c.name).is_none()))
                    .collect();
                let jumps: Vec<Jump> = t.jumps.into_iter().filter(|j| !is_ours(&j.spec)).collect();
                (!chains.is_empty() || !jumps.is_empty()).then_some(TableState {
                    table: t.table,
                    chains,
                    jumps,
                })
            })
            .collect();
        FamilyState { tables }
    }

    /// Whether table `t` has chain `name` in this state.
    pub fn has_chain(&self, t: Table, name: &str) -> bool {
        self.table(t).is_some_and(|s| s.chain(name).is_some())
    }
}

/// Whether chain `name` of `st` is provably nftkit's: a commented rule enters it, or it
/// has rules and all of them carry the comment.
fn proven_ours(st: &SavedTable, name: &str) -> bool {
    let entered = st.rules.iter().any(|(_, spec)| {
        is_ours(spec) && crate::rule::target_of(spec).is_some_and(|(_, t)| t == name)
    });
    let mut rules = st.rules_of(name).peekable();
    entered || (rules.peek().is_some() && rules.all(is_ours))
}

/// Prefixes of base chains in `save` (targets of built-in-chain rules) that extend
/// `prefix` (`NFTKIT-REDIRECT-X` for `NFTKIT-REDIRECT`).
fn longer_prefixes(save: &Save, prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in &save.tables {
        for (_, p) in base_chain_entries(t) {
            if p != prefix && naming::is_owned(prefix, &p) && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

/// The rules of `t`'s built-in chains that enter a chain named like a base chain, each
/// with that chain's prefix (`-A OUTPUT … -j NFTKIT-REDIRECT-OUTPUT` → `NFTKIT-REDIRECT`).
fn base_chain_entries(t: &SavedTable) -> impl Iterator<Item = (&str, String)> + '_ {
    t.rules
        .iter()
        .filter(|(chain, _)| t.is_builtin(chain))
        .filter_map(|(_, spec)| {
            let (_, target) = crate::rule::target_of(spec)?;
            let p = naming::prefix_of_base_chain(&target)?.to_string();
            Some((spec.as_str(), p))
        })
}

/// Prefixes of the nftkit tables present in `save`: targets of built-in-chain rules
/// carrying an nftkit comment (base chains name their prefix); then, for chains left
/// without their jump (someone deleted it), owned-looking chains whose rules carry one and
/// that no prefix found so far claims.
pub fn owned_prefixes(save: &Save) -> BTreeSet<String> {
    let tables: Vec<_> = save
        .tables
        .iter()
        .filter(|t| Table::from_name(&t.name).is_some())
        .collect();
    let mut out = BTreeSet::new();
    for t in &tables {
        out.extend(
            base_chain_entries(t)
                .filter(|(spec, _)| is_ours(spec))
                .map(|(_, p)| p),
        );
    }
    let mut orphans = BTreeSet::new();
    for t in &tables {
        for (chain, spec) in &t.rules {
            if !t.is_builtin(chain)
                && is_ours(spec)
                && !out.iter().any(|p| naming::is_owned(p, chain))
                && let Some(p) = naming::prefix_of_base_chain(chain)
            {
                orphans.insert(p.to_string());
            }
        }
    }
    out.extend(orphans);
    out
}

/// The ownership comment found on the jumps or rules of `fams` (the first one).
pub fn owner_comment(fams: &[FamilyState]) -> Option<String> {
    fams.iter()
        .flat_map(|f| &f.tables)
        .flat_map(|t| {
            t.jumps.iter().map(|j| j.spec.as_str()).chain(
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(String::as_str)),
            )
        })
        .filter_map(crate::rule::comment_of)
        .find(|c| c.starts_with(OWNER_PREFIX))
}

/// `iptables-restore --noflush` input that turns `current` into `desired`, one
/// `*table … COMMIT` block per table either of them uses:
///
/// 1. declare every desired chain and every stale one (`:NAME - [0:0]`), which creates it
///    or flushes it;
/// 2. delete jumps that are not wanted (stale targets, duplicates, altered specs);
/// 3. delete stale chains (`-X`; nothing refers to them any more);
/// 4. append the desired rules;
/// 5. insert missing jumps at the top of their built-in chain (`-I CHAIN 1`), so that
///    our rules see packets before foreign rules of the same chain can ACCEPT them.
///
/// Empty when both are empty. `plan(desired, &FamilyState::default())` is the input for a
/// host with no trace of us (dry-run); `plan(&FamilyState::default(), current)` deletes.
pub fn plan(desired: &FamilyState, current: &FamilyState) -> String {
    let mut out = String::new();
    for table in Table::ALL {
        let want = desired.table(table);
        let have = current.table(table);
        if want.is_none() && have.is_none() {
            continue;
        }
        let no_chains: Vec<OwnedChain> = Vec::new();
        let no_jumps: Vec<Jump> = Vec::new();
        let want_chains = want.map_or(&no_chains, |t| &t.chains);
        let have_chains = have.map_or(&no_chains, |t| &t.chains);
        let want_jumps = want.map_or(&no_jumps, |t| &t.jumps);
        let have_jumps = have.map_or(&no_jumps, |t| &t.jumps);
        let stale: Vec<&OwnedChain> = have_chains
            .iter()
            .filter(|c| !want_chains.iter().any(|w| w.name == c.name))
            .collect();

        let _ = writeln!(out, "*{}", table.name());
        for c in want_chains.iter().chain(stale.iter().copied()) {
            let _ = writeln!(out, ":{} - [0:0]", c.name);
        }
        // Jumps: keep one of each wanted jump that is present; delete the rest.
        let mut keep: BTreeMap<&Jump, usize> = BTreeMap::new();
        for j in want_jumps {
            keep.insert(j, 1);
        }
        let mut present: BTreeMap<&Jump, usize> = BTreeMap::new();
        for j in have_jumps {
            let left = keep.entry(j).or_insert(0);
            if *left > 0 {
                *left -= 1;
                *present.entry(j).or_insert(0) += 1;
            } else {
                let _ = writeln!(out, "-D {} {}", j.from, j.spec);
            }
        }
        for c in &stale {
            let _ = writeln!(out, "-X {}", c.name);
        }
        for c in want_chains {
            for r in &c.rules {
                let _ = writeln!(out, "-A {} {}", c.name, r);
            }
        }
        // Inserting at 1 reverses order: insert the last wanted jump first.
        for j in want_jumps.iter().rev() {
            if !present.contains_key(j) {
                let _ = writeln!(out, "-I {} 1 {}", j.from, j.spec);
            }
        }
        out.push_str("COMMIT\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::save::parse;

    const C: &str = r#"-m comment --comment "managed by nftkit redirect""#;

    fn desired() -> FamilyState {
        FamilyState {
            tables: vec![TableState {
                table: Table::Nat,
                chains: vec![OwnedChain {
                    name: "NFTKIT-REDIRECT-OUTPUT".into(),
                    rules: vec![format!("! -p tcp {C} -j RETURN")],
                }],
                jumps: vec![Jump {
                    from: "OUTPUT".into(),
                    spec: format!("{C} -j NFTKIT-REDIRECT-OUTPUT"),
                }],
            }],
        }
    }

    #[test]
    fn fresh_host_declares_appends_and_inserts() {
        assert_eq!(
            plan(&desired(), &FamilyState::default()),
            format!(
                "*nat\n:NFTKIT-REDIRECT-OUTPUT - [0:0]\n-A NFTKIT-REDIRECT-OUTPUT ! -p tcp {C} -j RETURN\n-I OUTPUT 1 {C} -j NFTKIT-REDIRECT-OUTPUT\nCOMMIT\n"
            )
        );
        assert_eq!(plan(&FamilyState::default(), &FamilyState::default()), "");
    }

    #[test]
    fn read_back_of_applied_state_equals_desired_and_reapply_keeps_jump() {
        let save = parse(&format!(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:NFTKIT-REDIRECT-OUTPUT - [0:0]\n:KUBE-X - [0:0]\n:NFTKIT-REDIRECTX-OUTPUT - [0:0]\n\
             -A OUTPUT {C} -j NFTKIT-REDIRECT-OUTPUT\n-A OUTPUT -j KUBE-X\n\
             -A NFTKIT-REDIRECT-OUTPUT ! -p tcp {C} -j RETURN\nCOMMIT\n"
        ))
        .unwrap();
        let current = FamilyState::from_save(&save, "NFTKIT-REDIRECT");
        assert_eq!(current, desired());
        let text = plan(&desired(), &current);
        assert!(!text.contains("-I OUTPUT"), "{text}");
        assert!(!text.contains("-D "), "{text}");
        assert!(text.contains(":NFTKIT-REDIRECT-OUTPUT - [0:0]"), "{text}");
        assert!(
            !text.contains("KUBE") && !text.contains("REDIRECTX"),
            "{text}"
        );
    }

    #[test]
    fn stale_chains_duplicate_and_altered_jumps_are_removed() {
        let save = parse(&format!(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:PREROUTING ACCEPT [0:0]\n:NFTKIT-REDIRECT-OUTPUT - [0:0]\n:NFTKIT-REDIRECT-PREROUTING - [0:0]\n\
             -A PREROUTING {C} -j NFTKIT-REDIRECT-PREROUTING\n\
             -A OUTPUT {C} -j NFTKIT-REDIRECT-OUTPUT\n-A OUTPUT {C} -j NFTKIT-REDIRECT-OUTPUT\n-A OUTPUT -j NFTKIT-REDIRECT-OUTPUT\n\
             -A NFTKIT-REDIRECT-PREROUTING -j NFTKIT-REDIRECT-OUTPUT\nCOMMIT\n"
        ))
        .unwrap();
        // By name (`--force`): the jump without our comment is taken over too.
        let current = FamilyState::from_save_claiming(&save, "NFTKIT-REDIRECT", |_, _| true);
        let text = plan(&desired(), &current);
        assert_eq!(
            text,
            format!(
                "*nat\n:NFTKIT-REDIRECT-OUTPUT - [0:0]\n:NFTKIT-REDIRECT-PREROUTING - [0:0]\n\
                 -D PREROUTING {C} -j NFTKIT-REDIRECT-PREROUTING\n\
                 -D OUTPUT {C} -j NFTKIT-REDIRECT-OUTPUT\n-D OUTPUT -j NFTKIT-REDIRECT-OUTPUT\n\
                 -X NFTKIT-REDIRECT-PREROUTING\n\
                 -A NFTKIT-REDIRECT-OUTPUT ! -p tcp {C} -j RETURN\nCOMMIT\n"
            )
        );
        // Deleting everything.
        let text = plan(&FamilyState::default(), &current);
        assert!(text.contains("-X NFTKIT-REDIRECT-OUTPUT"), "{text}");
        assert_eq!(text.matches("-D ").count(), 4, "{text}");
    }

    #[test]
    fn ownership_is_the_comment_not_the_name() {
        // kube-proxy's chains under `--table kube` (prefix KUBE): named like ours, no
        // comment anywhere. Plus one chain of ours, one empty chain nobody enters, and a
        // jump without the comment into our chain.
        let save = parse(&format!(
            "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n:KUBE-EMPTY - [0:0]\n\
             :KUBE-OUTPUT - [0:0]\n:KUBE-MINE - [0:0]\n:KUBE-MIXED - [0:0]\n\
             -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n\
             -A OUTPUT {C} -j KUBE-OUTPUT\n-A OUTPUT -j KUBE-OUTPUT\n\
             -A KUBE-SERVICES -d 10.96.0.1/32 -j RETURN\n\
             -A KUBE-POSTROUTING -j MASQUERADE\n\
             -A KUBE-MINE {C} -j RETURN\n\
             -A KUBE-MIXED {C} -j RETURN\n-A KUBE-MIXED -j RETURN\n\
             -A KUBE-OUTPUT ! -p tcp {C} -j RETURN\nCOMMIT\n"
        ))
        .unwrap();
        let ours = FamilyState::from_save(&save, "KUBE");
        let nat = ours.table(Table::Nat).unwrap();
        let names: Vec<&str> = nat.chains.iter().map(|c| c.name.as_str()).collect();
        // KUBE-OUTPUT: entered by our jump; KUBE-MINE: every rule commented.
        assert_eq!(names, ["KUBE-OUTPUT", "KUBE-MINE"]);
        assert_eq!(
            nat.jumps,
            vec![Jump {
                from: "OUTPUT".into(),
                spec: format!("{C} -j KUBE-OUTPUT")
            }]
        );
        let foreign = FamilyState::foreign(&save, "KUBE");
        let f = foreign.table(Table::Nat).unwrap();
        let names: Vec<&str> = f.chains.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "KUBE-SERVICES",
                "KUBE-POSTROUTING",
                "KUBE-EMPTY",
                "KUBE-MIXED"
            ]
        );
        let jumps: Vec<String> = f
            .jumps
            .iter()
            .map(|j| format!("-A {} {}", j.from, j.spec))
            .collect();
        assert_eq!(
            jumps,
            [
                "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
                "-A OUTPUT -j KUBE-SERVICES",
                "-A POSTROUTING -j KUBE-POSTROUTING",
                "-A OUTPUT -j KUBE-OUTPUT",
            ]
        );
        // Deleting ours never names a foreign chain or rule.
        let text = plan(&FamilyState::default(), &ours);
        assert!(
            !text.contains("SERVICES") && !text.contains("KUBE-POSTROUTING"),
            "{text}"
        );
        assert!(!text.contains("-D OUTPUT -j KUBE-OUTPUT"), "{text}");
        // Claiming one name (`--force` for a chain we write) takes it and its jumps.
        let claimed =
            FamilyState::from_save_claiming(&save, "KUBE", |_, n| n == "KUBE-POSTROUTING");
        let nat = claimed.table(Table::Nat).unwrap();
        assert!(nat.chain("KUBE-POSTROUTING").is_some());
        assert!(nat.chain("KUBE-SERVICES").is_none());
        assert!(nat.jumps.iter().any(|j| j.spec == "-j KUBE-POSTROUTING"));
        // By name alone: everything.
        let all = FamilyState::from_save_claiming(&save, "KUBE", |_, _| true);
        assert_eq!(all.chain_count(), 6);
        assert_eq!(all.tables[0].jumps.len(), 5);
    }

    #[test]
    fn a_longer_prefix_is_another_table() {
        let save = parse(&format!(
            "*nat\n:OUTPUT ACCEPT [0:0]\n:NFTKIT-REDIRECT-OUTPUT - [0:0]\n:NFTKIT-REDIRECT-X-OUTPUT - [0:0]\n:NFTKIT-REDIRECT-X-TARGETS - [0:0]\n\
             -A OUTPUT {C} -j NFTKIT-REDIRECT-X-OUTPUT\n-A OUTPUT {C} -j NFTKIT-REDIRECT-OUTPUT\n\
             -A NFTKIT-REDIRECT-X-OUTPUT {C} -j NFTKIT-REDIRECT-X-TARGETS\n\
             -A NFTKIT-REDIRECT-OUTPUT ! -p tcp {C} -j RETURN\nCOMMIT\n"
        ))
        .unwrap();
        assert_eq!(FamilyState::from_save(&save, "NFTKIT-REDIRECT"), desired());
        let x = FamilyState::from_save(&save, "NFTKIT-REDIRECT-X");
        assert_eq!(x.chain_count(), 2);
        assert_eq!(x.tables[0].jumps.len(), 1);
    }

    #[test]
    fn jumps_keep_their_desired_order() {
        let mut d = desired();
        d.tables[0].jumps.push(Jump {
            from: "OUTPUT".into(),
            spec: "-j NFTKIT-REDIRECT-OUTPUT2".into(),
        });
        let text = plan(&d, &FamilyState::default());
        let second = text.find("-I OUTPUT 1 -j NFTKIT-REDIRECT-OUTPUT2").unwrap();
        let first = text.find(&format!("-I OUTPUT 1 {C}")).unwrap();
        assert!(second < first, "{text}");
    }
}
