//! The iptables backends (`--backend iptables-legacy` / `iptables-nft`): the same desired
//! [`Ruleset`] rendered as `iptables-restore --noflush` input of that flavour and read back
//! through its `iptables-save`. Plain iptables terms live in `nft-compat`; this module
//! lowers nftkit's model to them and runs the binaries.
//!
//! Mapping (see README):
//! - owned chains `PREFIX-<HOOK>` / `PREFIX-<NAME>`, `PREFIX` = the table name upper-cased
//!   (`nftkit-redirect` → `NFTKIT-REDIRECT-OUTPUT`); a base chain is entered by one rule
//!   `-I <BUILT-IN> 1 -m comment --comment "managed by nftkit <command>" -j PREFIX-<HOOK>`,
//!   added only when iptables-save does not show it already;
//! - nat base chains → table nat, built-in chain of their hook; filter chains at priority
//!   raw (-300) → table raw; other filter chains → table filter; regular chains go to every
//!   table whose base chains reach them;
//! - an `inet` rule is split by family: IPv4-only matches (addresses, `meta nfproto ipv4`,
//!   an IPv4 DNAT target) put it in iptables only, IPv6-only ones in ip6tables only, and
//!   family-neutral rules go to both; a family none of whose chains has a rule is not
//!   touched at all (IPv6 without `--enable-ipv6`);
//! - sets become one rule per element (per combination, when a rule uses several sets).
//!   Not ipset: ipset is a separate kernel subsystem and binary that the `-compat` image
//!   does not carry, its sets are global (not per chain) so ownership and atomic
//!   replacement would need a second protocol, and iptables-nft cannot embed it. The cost
//!   is linear matching; our sets are small (redirect) or applied rarely (masquerade).
//!
//! Ownership (CONTRACT.md): every rule we write carries `managed by nftkit <command>`, and
//! only what that proves is ours (nft-compat `state`: a chain entered by a commented rule,
//! or non-empty with every rule commented; a jump with the comment). A chain or rule named
//! like ours without it is refused, before either family is written: an apply that would
//! write such a chain, a delete while one exists (exit 1 naming it; `--force` takes over
//! the chains an apply writes, or deletes by name).
//!
//! Every run of a tool is bounded by [`TOOL_TIMEOUT`] (then killed, exit 1 naming it).
//!
//! Atomicity: one `iptables-restore` run per family. Each `*table` block commits on its
//! own (both flavours commit per table), so if a later table or the second family is
//! refused, the tables already committed are rolled back to what iptables-save showed
//! before (best effort, logged). IPv4 and IPv6 are two runs, as with any iptables tool.
//!
//! Here: the backend itself (read, plan, restore, roll back, snapshots). [`lower`]: the
//! model → desired state of each family; `exec`: running the binaries; `ownership`: what
//! an apply or delete may touch, and the refusal for the rest.

use std::collections::BTreeSet;

use nft_compat::naming;
use nft_compat::save::Save;
use nft_compat::state::{self, FamilyState, owned_prefixes, owner_comment};
use nft_compat::{Flavour, IpVersion};

use super::{Backend, Inspect, Lifetime, Options, OwnedTable};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::snapshot::{ChainSnapshot, Snapshot};

mod exec;
mod lower;
mod ownership;

pub use exec::{Exec, SystemExec, TOOL_TIMEOUT};
use exec::{LOCK_WAIT_SECONDS, Tools, has_cap_net_admin};
pub use lower::lower;

/// The flavour behind a `--backend` value, None for nftables / auto.
pub fn flavour_of(choice: super::BackendChoice) -> Option<Flavour> {
    match choice {
        super::BackendChoice::IptablesLegacy => Some(Flavour::Legacy),
        super::BackendChoice::IptablesNft => Some(Flavour::Nft),
        super::BackendChoice::Auto | super::BackendChoice::Nftables => None,
    }
}

pub struct IptablesBackend {
    flavour: Flavour,
    tools: Tools,
    /// `--force`: take over or delete chains named like ours that lack our comment.
    force: bool,
}

impl IptablesBackend {
    /// The backend for `flavour`; exit 1 naming the package if a binary is missing.
    pub fn new(flavour: Flavour, opts: Options) -> Result<Self> {
        // The tools' own messages do not always say so (legacy restore without the
        // capability: "unable to initialize table 'nat'"); check before running them.
        if !has_cap_net_admin() {
            return Err(Error::runtime(format!(
                "backend {} needs CAP_NET_ADMIN, which this process lacks (run as root or grant the capability; --dry-run needs none)",
                flavour.name()
            )));
        }
        Self::with_exec(flavour, Box::new(SystemExec::default()), opts)
    }

    pub fn with_exec(flavour: Flavour, exec: Box<dyn Exec>, opts: Options) -> Result<Self> {
        if opts.lifetime == Lifetime::Process {
            tracing::warn!(
                backend = flavour.name(),
                "iptables rules cannot be tied to this process: they stay after it exits (remove them with `nftkit delete`)"
            );
        }
        Ok(IptablesBackend {
            flavour,
            tools: Tools::find(flavour, exec)?,
            force: opts.force,
        })
    }

    /// The comparable form `rs` reads back as; Err(Unsupported) for what iptables cannot
    /// express.
    fn expected(&self, rs: &Ruleset) -> Result<Snapshot> {
        let fams = lower(rs, self.flavour.name())?;
        Ok(snapshot(&rs.table, Some(rs.comment.clone()), &fams))
    }

    /// Put our chains of family `ip` back as they were (`before`); best effort.
    fn rollback(&self, ip: IpVersion, before: &FamilyState, prefix: &str) {
        let result = self.tools.save(ip).and_then(|now| {
            // Ours now, plus whatever `before` held (chains taken over with --force).
            let now = FamilyState::from_save_claiming(&now, prefix, |t, n| before.has_chain(t, n));
            if &now == before {
                return Ok(false);
            }
            self.tools
                .restore(ip, &state::plan(before, &now))
                .map(|()| true)
        });
        match result {
            Ok(true) => tracing::warn!(family = ip.label(), "rolled back to the previous rules"),
            Ok(false) => tracing::debug!(family = ip.label(), "unchanged; nothing to roll back"),
            Err(e) => tracing::error!(family = ip.label(), error = %e, "rollback failed"),
        }
    }

    /// Saves of both families; the IPv4 one must be readable, an unreadable IPv6 one is
    /// None (no IPv6 tables in this kernel).
    fn saves(&self) -> Result<[Option<Save>; 2]> {
        let v4 = self.tools.save(IpVersion::V4)?;
        let v6 = match self.tools.save(IpVersion::V6) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "no IPv6 tables to read");
                None
            }
        };
        Ok([Some(v4), v6])
    }

    /// Owned state of `prefix` in both families (proven by the comment; a family whose
    /// save fails is simply empty; errors only when the IPv4 tables cannot be read).
    fn current(&self, prefix: &str) -> Result<[FamilyState; 2]> {
        let [v4, v6] = self.saves()?;
        let of = |s: Option<Save>| {
            s.map(|s| FamilyState::from_save(&s, prefix))
                .unwrap_or_default()
        };
        Ok([of(v4), of(v6)])
    }
}

impl Backend for IptablesBackend {
    fn name(&self) -> &'static str {
        self.flavour.name()
    }

    fn apply(&mut self, rs: &Ruleset) -> Result<()> {
        let desired = lower(rs, self.flavour.name())?;
        let prefix = naming::prefix(&rs.table);
        // Read both families and settle ownership before writing anything, so a refusal
        // leaves every table as it was.
        let mut befores: Vec<(IpVersion, &FamilyState, FamilyState)> = Vec::new();
        let mut clashes = Vec::new();
        for (ip, want) in IpVersion::BOTH.into_iter().zip(desired.iter()) {
            let save = match self.tools.save(ip) {
                Ok(s) => s,
                // Nothing to write and nothing readable (e.g. no IPv6 in this kernel).
                Err(_) if want.is_empty() => continue,
                Err(e) => return Err(e),
            };
            let (before, found) =
                ownership::before_apply(self.flavour.name(), ip, &save, &prefix, want, self.force);
            clashes.extend(found);
            if want.is_empty() && before.is_empty() {
                continue;
            }
            befores.push((ip, want, before));
        }
        if !clashes.is_empty() {
            return Err(ownership::refuse(
                self.flavour.name(),
                &clashes,
                &rs.table,
                true,
            ));
        }
        let mut done: Vec<(IpVersion, &FamilyState)> = Vec::new();
        for (ip, want, before) in &befores {
            let input = state::plan(want, before);
            tracing::debug!(family = ip.label(), input = %input, "iptables-restore input");
            if let Err(e) = self.tools.restore(*ip, &input) {
                self.rollback(*ip, before, &prefix);
                for (ip2, b) in done.iter().rev() {
                    self.rollback(*ip2, b, &prefix);
                }
                return Err(e);
            }
            done.push((*ip, before));
        }
        Ok(())
    }

    fn compare(&mut self, rs: &Ruleset) -> Result<super::Comparison> {
        let expected = self.expected(rs)?;
        let observed = self.read_back(&rs.table)?;
        Ok(super::compare_snapshots(&expected, observed.as_ref()))
    }

    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>> {
        let fams = self.current(&naming::prefix(table))?;
        if fams.iter().all(FamilyState::is_empty) {
            return Ok(None);
        }
        let comment = owner_comment(&fams);
        Ok(Some(snapshot(table, comment, &fams)))
    }

    /// Removes the chains and jump rules proven ours. Anything else named like them (a
    /// foreign chain, a rule without our comment entering our chain) is refused, as the
    /// nftables backend refuses a table without the comment; `--force` deletes by name.
    fn delete(&mut self, table: &str) -> Result<bool> {
        let prefix = naming::prefix(table);
        let saves = self.saves()?;
        let mut plans = Vec::new();
        let mut clashes = Vec::new();
        for (ip, save) in IpVersion::BOTH.into_iter().zip(saves.iter()) {
            let Some(save) = save else { continue };
            let (have, found) = ownership::before_delete(ip, save, &prefix, self.force);
            clashes.extend(found);
            if !have.is_empty() {
                plans.push((ip, state::plan(&FamilyState::default(), &have)));
            }
        }
        if !clashes.is_empty() {
            return Err(ownership::refuse(
                self.flavour.name(),
                &clashes,
                table,
                false,
            ));
        }
        let any = !plans.is_empty();
        for (ip, input) in plans {
            self.tools.restore(ip, &input)?;
        }
        Ok(any)
    }
}

impl Inspect for IptablesBackend {
    fn list_owned(&mut self) -> Result<Vec<OwnedTable>> {
        let saves: Vec<Save> = self.saves()?.into_iter().flatten().collect();
        let mut prefixes = BTreeSet::new();
        for s in &saves {
            prefixes.extend(owned_prefixes(s));
        }
        let mut out = Vec::new();
        for p in prefixes {
            let fams: Vec<FamilyState> = saves
                .iter()
                .map(|s| FamilyState::from_save(s, &p))
                .collect();
            out.push(OwnedTable {
                backend: self.flavour.name(),
                table: naming::table_of_prefix(&p),
                comment: owner_comment(&fams).unwrap_or_default(),
                chains: fams.iter().map(FamilyState::chain_count).sum(),
                rules: fams.iter().map(FamilyState::rule_count).sum(),
                sets: 0,
                elements: 0,
            });
        }
        Ok(out)
    }

    fn other_backends(&self) -> Vec<Box<dyn Backend>> {
        super::usable_backends(Some(self.flavour.name()))
    }
}

/// The comparable form: one chain entry per (family, table, chain); `base` lists the
/// built-in-chain rules that enter it; rules are iptables-save lines.
fn snapshot(table: &str, comment: Option<String>, fams: &[FamilyState]) -> Snapshot {
    let mut chains = Vec::new();
    for (ip, fam) in IpVersion::BOTH.into_iter().zip(fams) {
        for ts in &fam.tables {
            for c in &ts.chains {
                let entries: Vec<String> = ts
                    .jumps
                    .iter()
                    .filter(|j| {
                        nft_compat::rule::target_of(&j.spec).is_some_and(|(_, t)| t == c.name)
                    })
                    .map(|j| format!("-A {} {}", j.from, j.spec))
                    .collect();
                chains.push(ChainSnapshot {
                    name: format!("{} -t {} {}", ip.command(), ts.table.name(), c.name),
                    base: (!entries.is_empty()).then(|| entries.join("; ")),
                    rules: c
                        .rules
                        .iter()
                        .map(|r| format!("-A {} {r}", c.name))
                        .collect(),
                });
            }
        }
    }
    Snapshot {
        table: table.to_string(),
        comment,
        chains,
        sets: Default::default(),
    }
}

/// `--dry-run` text: the restore input per family for a host with none of our rules yet,
/// each labelled with the command that would read it.
pub fn restore_script(flavour: Flavour, rs: &Ruleset) -> Result<String> {
    let fams = lower(rs, flavour.name())?;
    let mut out = String::new();
    for (ip, fam) in IpVersion::BOTH.into_iter().zip(fams.iter()) {
        if fam.is_empty() {
            out.push_str(&format!(
                "# {}: no rules ({} is not touched)\n",
                ip.label(),
                ip.command()
            ));
            continue;
        }
        out.push_str(&format!(
            "# {}: {} -w {LOCK_WAIT_SECONDS} --noflush (jump rules are inserted only if iptables-save lacks them)\n",
            ip.label(),
            flavour.restore_binary(ip)
        ));
        out.push_str(&state::plan(fam, &FamilyState::default()));
    }
    Ok(out)
}
