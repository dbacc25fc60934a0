//! Backends: apply a [`Ruleset`] as one atomic replacement of the owned table, read it
//! back, delete it. `netlink` speaks nf_tables directly; `fake` keeps state in memory for
//! logic tests.

use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::snapshot::Snapshot;

pub mod detect;
pub mod fake;
pub mod iptables;
pub mod netlink;

/// Comment prefix that marks a table (nftables) or a rule (iptables) as ours
/// (CONTRACT.md "Ownership").
pub const OWNER_PREFIX: &str = nft_compat::state::OWNER_PREFIX;

/// An owned table as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnedTable {
    pub backend: &'static str,
    pub table: String,
    pub comment: String,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    pub elements: usize,
}

pub trait Backend {
    fn name(&self) -> &'static str;
    /// Replace the owned table with `rs` in one atomic batch.
    fn apply(&mut self, rs: &Ruleset) -> Result<()>;
    /// Whether this backend can express `rs`: Err(Runtime) naming the backend and the
    /// feature if not (the iptables backends). Checked before apply and verify, so such a
    /// ruleset is exit 1, never a silent difference or a false drift. Default: all of it.
    fn check(&self, _rs: &Ruleset) -> Result<()> {
        Ok(())
    }
    /// The owned table as this backend would read it back once `rs` is applied.
    fn expected(&self, rs: &Ruleset) -> Snapshot;
    /// The kernel's table `table`, or None if it does not exist.
    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>>;
    /// The kernel's table next to `rs`, elements included: what `verify`, a resync and a
    /// one-shot re-run compare. Default: [`Backend::read_back`] diffed with
    /// [`Backend::expected`]. A backend may compare raw values and format only what
    /// differs, as long as the result is the same.
    fn compare(&mut self, rs: &Ruleset) -> Result<Comparison> {
        let observed = self.read_back(&rs.table)?;
        Ok(Comparison {
            found: observed
                .as_ref()
                .map(|o| is_owned_comment(o.comment.as_deref())),
            diff: crate::snapshot::diff(&self.expected(rs), observed.as_ref()),
        })
    }
    /// The check right after an acknowledged apply of `rs`: what differs between `rs` and
    /// the kernel (empty if nothing). Default: the full read-back and diff. A backend whose
    /// element read-back is costly may compare structure only (table, chains, rules, set
    /// types): the kernel committed the elements with the batch it acknowledged, and a
    /// concurrent replace shows in the structure. `verify` and resyncs use `read_back`.
    fn check_applied(&mut self, rs: &Ruleset) -> Result<Vec<String>> {
        let observed = self.read_back(&rs.table)?;
        Ok(crate::snapshot::diff(&self.expected(rs), observed.as_ref()))
    }
    /// A number that changes whenever the kernel's ruleset may have changed (nf_tables:
    /// the ruleset generation, bumped by every commit in the network namespace). Lets a
    /// daemon skip the read-back while neither the kernel nor the desired table changed
    /// since they were last found equal. Default: None (unknown: always read back).
    fn ruleset_generation(&mut self) -> Option<u64> {
        None
    }
    /// Remove table `table`; Ok(false) if it did not exist. Refuses a table not marked ours.
    fn delete(&mut self, table: &str) -> Result<bool>;
    /// Every table whose comment marks it as nftkit's.
    fn list_owned(&mut self) -> Result<Vec<OwnedTable>>;
    /// Tie tables applied from now on to this process (the kernel's table owner flag,
    /// 5.13+): the kernel removes them when the process exits. Daemons without
    /// `--persist` turn this on. Default: not supported, tables persist.
    fn set_process_owned(&mut self, _on: bool) {}
    /// `--force`: replace or delete a same-named table that lacks our ownership comment
    /// (normally refused). Default: not supported, such tables stay refused.
    fn set_force(&mut self, _on: bool) {}
    /// The other backends usable on this host (this network namespace), for `status`,
    /// `delete` and removing a job's copy from them after it was applied here. Never
    /// forced, never instantiating anything (see [`usable_backends`]). Default: none (the
    /// fake has no siblings).
    fn other_backends(&self) -> Vec<Box<dyn Backend>> {
        Vec::new()
    }
    /// Base chains of *other* tables at `hook` (families ip, ip6, inet) that can drop what
    /// our accept lets through: policy drop, or drop/reject rules. An accept ends only our
    /// own base chain, so these still win. `own_table` (inet) is left out. Read-only.
    /// Default: none known.
    fn foreign_drop_chains(
        &mut self,
        _own_table: &str,
        _hook: crate::model::Hook,
    ) -> Result<Vec<ForeignDrop>> {
        Ok(Vec::new())
    }
}

/// The kernel's table of a ruleset's name next to the ruleset ([`Backend::compare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// None: no such table. Some(owned): it exists; whether it carries our comment.
    pub found: Option<bool>,
    /// What differs, one line each as [`crate::snapshot::diff`] words it; empty if equal.
    pub diff: Vec<String>,
}

impl Comparison {
    /// The kernel holds exactly the ruleset, as ours.
    pub fn in_place(&self) -> bool {
        self.found == Some(true) && self.diff.is_empty()
    }
    /// A table of our name that is not marked as ours.
    pub fn foreign(&self) -> bool {
        self.found == Some(false)
    }
}

/// A base chain of any table at an IP hook, as `nftkit doctor` weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `ip`, `ip6` or `inet`.
    pub family: &'static str,
    pub table: String,
    /// The table's comment (`managed by nftkit <command>` for ours).
    pub table_comment: Option<String>,
    pub chain: String,
    pub hook: crate::model::Hook,
    /// `filter`, `nat` or `route`.
    pub chain_type: &'static str,
    pub priority: i32,
    pub policy_drop: bool,
    pub rules: usize,
    /// Rules whose verdict is drop or reject.
    pub drop_rules: usize,
}

/// A base chain of another table that drops at a hook we accept at.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForeignDrop {
    /// `ip`, `ip6` or `inet`.
    pub family: &'static str,
    pub table: String,
    pub chain: String,
    pub policy_drop: bool,
    /// Rules whose verdict is drop or reject.
    pub drop_rules: usize,
}

impl ForeignDrop {
    /// Whether it sees packets of `family` (an inet chain sees both).
    pub fn covers(&self, family: crate::model::IpFamily) -> bool {
        match family {
            crate::model::IpFamily::V4 => self.family != "ip6",
            crate::model::IpFamily::V6 => self.family != "ip",
        }
    }
}

impl std::fmt::Display for ForeignDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "table {} {} chain {} (",
            self.family, self.table, self.chain
        )?;
        match (self.policy_drop, self.drop_rules) {
            (true, 0) => write!(f, "policy drop)"),
            (true, n) => write!(f, "policy drop, {n} drop/reject rules)"),
            (false, n) => write!(f, "{n} drop/reject rules)"),
        }
    }
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

/// The backend for `choice`. `auto` weighs the evidence `detect` gathers (CONTRACT.md):
/// nftables unless nf_tables is missing or Kubernetes runs iptables-legacy here.
pub fn select(choice: BackendChoice) -> Result<Box<dyn Backend>> {
    match choice {
        BackendChoice::Nftables => Ok(Box::new(netlink::NetlinkBackend::connect()?)),
        BackendChoice::IptablesNft => Ok(Box::new(iptables::IptablesBackend::new(
            nft_compat::Flavour::Nft,
        )?)),
        BackendChoice::IptablesLegacy => Ok(Box::new(iptables::IptablesBackend::new(
            nft_compat::Flavour::Legacy,
        )?)),
        BackendChoice::Auto => {
            let (_, decision) = detect::detect(false)?;
            tracing::info!(
                backend = decision.choice.name(),
                reason = %decision.reason,
                "backend selected (auto)"
            );
            match decision.choice {
                nft_compat::detect::Choice::Nftables => {
                    Ok(Box::new(netlink::NetlinkBackend::connect()?))
                }
                nft_compat::detect::Choice::IptablesLegacy => Ok(Box::new(
                    iptables::IptablesBackend::new(nft_compat::Flavour::Legacy)?,
                )),
            }
        }
    }
}

/// Every backend usable here except the one named `except`: nftables when nf_tables
/// answers over netlink; iptables-nft when its binaries are installed and nf_tables holds
/// some table of family ip or ip6 (where iptables-nft keeps its tables); iptables-legacy
/// when its binaries are installed and some legacy table already exists (reading
/// `/proc/net/ip*_tables_names`, which instantiates nothing). A backend that cannot be
/// opened is left out (logged at debug): these are only consulted, never required.
pub fn usable_backends(except: Option<&str>) -> Vec<Box<dyn Backend>> {
    let mut out: Vec<Box<dyn Backend>> = Vec::new();
    let wanted = |name: &str| except != Some(name);
    if wanted("nftables") {
        match netlink::probe() {
            Ok(Ok(())) => match netlink::NetlinkBackend::connect() {
                Ok(b) => out.push(Box::new(b)),
                Err(e) => tracing::debug!(backend = "nftables", error = %e, "not usable"),
            },
            Ok(Err(why)) => tracing::debug!(backend = "nftables", reason = %why, "not usable"),
            Err(e) => tracing::debug!(backend = "nftables", error = %e, "not usable"),
        }
    }
    for flavour in [nft_compat::Flavour::Nft, nft_compat::Flavour::Legacy] {
        if !wanted(flavour.name()) {
            continue;
        }
        if flavour == nft_compat::Flavour::Legacy && detect::legacy_tables_present() != Some(true) {
            tracing::debug!(
                backend = flavour.name(),
                "no legacy table exists; not consulted"
            );
            continue;
        }
        // iptables-nft keeps its tables in nf_tables (families ip and ip6): with none
        // there it holds nothing of ours, and its save commands need not run (two
        // process starts, most of a small one-shot apply's time).
        if flavour == nft_compat::Flavour::Nft && netlink::xtables_tables_present() == Some(false) {
            tracing::debug!(
                backend = flavour.name(),
                "no ip or ip6 table exists in nf_tables; not consulted"
            );
            continue;
        }
        match iptables::IptablesBackend::new(flavour) {
            Ok(b) => out.push(Box::new(b)),
            Err(e) => tracing::debug!(backend = flavour.name(), error = %e, "not usable"),
        }
    }
    out
}

/// `rs` as the kernel would take it, or exit 1 naming the problem (a builder's bug: every
/// input was validated before a ruleset was built), before anything is sent.
pub fn validated(rs: &Ruleset) -> Result<&Ruleset> {
    rs.validate().map(|()| rs).map_err(|why| {
        Error::runtime(format!(
            "internal error: table inet {} would be refused: {why}",
            rs.table
        ))
    })
}

/// Whether a table comment marks the table as nftkit's.
pub fn is_owned_comment(comment: Option<&str>) -> bool {
    comment.is_some_and(|c| c.starts_with(OWNER_PREFIX))
}
