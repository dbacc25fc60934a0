//! Backends: apply a [`Ruleset`] as one atomic replacement of the owned table, read it
//! back, delete it. `netlink` speaks nf_tables directly; `fake` keeps state in memory for
//! logic tests.

use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::model::delta::Delta;
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

/// How long the tables a backend applies live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Lifetime {
    /// They outlive the process, as iptables rules do (every one-shot command, and
    /// daemons by default: `--persist`).
    #[default]
    Persist,
    /// Tied to this process (the kernel's table owner flag, 5.13+): removed when it exits.
    /// A daemon with `--persist=false`. Backends that cannot do this warn and persist.
    Process,
}

/// What a backend is opened with; fixed for its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// `--force`: replace or delete a same-named table that lacks our ownership comment
    /// (normally refused).
    pub force: bool,
    pub lifetime: Lifetime,
}

/// Opens the backend `--backend` chose, its tables living as long as the argument says.
/// Called only after the input was validated, so invalid input never touches the kernel.
pub type Opener<'a> = &'a mut dyn FnMut(Lifetime) -> Result<Box<dyn Backend>>;

/// The job's own table on one backend: write it atomically, compare it, remove it.
pub trait Backend: Inspect {
    fn name(&self) -> &'static str;
    /// Replace the owned table with `rs` in one atomic batch. What this backend cannot
    /// express is refused before anything is sent ([`Error::Unsupported`]).
    fn apply(&mut self, rs: &Ruleset) -> Result<()>;
    /// Change the owned table, which holds the ruleset `delta` was computed from
    /// ([`crate::model::delta::element_delta`]), into `new` by removing and adding
    /// elements only, in one atomic batch (all removals before all additions). Refuses a
    /// table that is missing or not marked ours; with `delta.expect_generation`, commits
    /// only if the kernel's ruleset generation is still that one. Callers fall back to
    /// [`Backend::apply`] on any error. Default: [`Error::Unsupported`].
    fn apply_delta(&mut self, new: &Ruleset, delta: &Delta) -> Result<()> {
        let _ = (new, delta);
        Err(Error::Unsupported {
            backend: self.name().to_string(),
            what: "element-only updates".into(),
        })
    }
    /// The kernel's table of `rs`'s name next to `rs`, elements included: what `verify`,
    /// a resync and a one-shot re-run compare. Err([`Error::Unsupported`]) for a ruleset
    /// this backend cannot express, so it is exit 1, never a false drift. A backend may
    /// compare raw values and format only what differs.
    fn compare(&mut self, rs: &Ruleset) -> Result<Comparison>;
    /// [`Backend::compare`] before an apply that sends nothing when equal: a backend may
    /// skip re-reading what provably has not changed since it wrote it (nf_tables: set
    /// elements, while the ruleset generation its batch recorded in the table still
    /// holds; the structure is always read). `verify` uses `compare`, which reads
    /// everything. Default: `compare`.
    fn compare_before_apply(&mut self, rs: &Ruleset) -> Result<Comparison> {
        self.compare(rs)
    }
    /// The check right after an acknowledged apply of `rs`: what differs (empty if
    /// nothing). Default: [`Backend::compare`]. A backend whose element read-back is costly
    /// may compare structure only (table, chains, rules, set types): the kernel committed
    /// the elements with the batch it acknowledged, and a concurrent replace shows in the
    /// structure.
    fn check_applied(&mut self, rs: &Ruleset) -> Result<Vec<String>> {
        Ok(self.compare(rs)?.diff)
    }
    /// The kernel's table `table`, or None if it does not exist.
    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>>;
    /// Remove table `table`; Ok(false) if it did not exist. Refuses a table not marked ours
    /// (unless opened with `force`).
    fn delete(&mut self, table: &str) -> Result<bool>;
    /// A number that changes whenever the kernel's ruleset may have changed (nf_tables:
    /// the ruleset generation, bumped by every commit in the network namespace). Lets a
    /// daemon skip the read-back while neither the kernel nor the desired table changed
    /// since they were last found equal. Default: None (unknown: always read back).
    fn ruleset_generation(&mut self) -> Option<u64> {
        None
    }
}

/// Read-only views beyond the job's own table: what else nftkit owns here, other
/// tables' chains that can drop what we accept, the other backends of this host.
pub trait Inspect {
    /// Every table whose comment marks it as nftkit's.
    fn list_owned(&mut self) -> Result<Vec<OwnedTable>>;
    /// The other backends usable on this host (this network namespace), for `status`,
    /// `delete` and removing a job's copy from them after it was applied here. Never
    /// forced, never instantiating anything (see [`usable_backends`]). Default: none (the
    /// fake has no siblings).
    fn other_backends(&self) -> Vec<Box<dyn Backend>> {
        Vec::new()
    }
    /// Base chains of *other* tables at `hook` (families ip, ip6, inet) that can drop what
    /// our accept lets through: policy drop, or drop/reject rules. An accept ends only our
    /// own base chain, so these still win. `own_table` (inet) is left out. Default: none
    /// known.
    fn foreign_drop_chains(
        &mut self,
        _own_table: &str,
        _hook: crate::model::Hook,
    ) -> Result<Vec<ForeignDrop>> {
        Ok(Vec::new())
    }
    /// The named counters of table `table` (`Match::Count`) with what they counted so
    /// far. Default: none (iptables has no named counters).
    fn counters(&mut self, _table: &str) -> Result<Vec<CounterValue>> {
        Ok(Vec::new())
    }
}

/// A named counter as read from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    pub name: String,
    pub packets: u64,
    pub bytes: u64,
}

/// [`Comparison`] of an expected snapshot with what was read back.
pub fn compare_snapshots(expected: &Snapshot, observed: Option<&Snapshot>) -> Comparison {
    Comparison {
        found: observed.map(|o| is_owned_comment(o.comment.as_deref())),
        diff: crate::snapshot::diff(expected, observed),
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
pub fn select(choice: BackendChoice, opts: Options) -> Result<Box<dyn Backend>> {
    match choice {
        BackendChoice::Nftables => Ok(Box::new(netlink::NetlinkBackend::open(opts)?)),
        BackendChoice::IptablesNft => Ok(Box::new(iptables::IptablesBackend::new(
            nft_compat::Flavour::Nft,
            opts,
        )?)),
        BackendChoice::IptablesLegacy => Ok(Box::new(iptables::IptablesBackend::new(
            nft_compat::Flavour::Legacy,
            opts,
        )?)),
        BackendChoice::Auto => {
            // The probe is the nftables backend itself: when it is chosen, its socket is
            // the one the probe opened.
            let (nl, nf_tables) = match netlink::probe_answer(netlink::NetlinkBackend::open(opts)) {
                Ok(b) => (Some(b), Ok(())),
                Err(netlink::ProbeError::Lacking(why)) => (None, Err(why)),
                Err(netlink::ProbeError::Other(e)) => return Err(e),
            };
            let (_, decision) = detect::detect_given(false, nf_tables)?;
            tracing::info!(
                backend = decision.choice.name(),
                reason = %decision.reason,
                "backend selected (auto)"
            );
            match decision.choice {
                nft_compat::detect::Choice::Nftables => match nl {
                    Some(b) => Ok(Box::new(b)),
                    None => Ok(Box::new(netlink::NetlinkBackend::open(opts)?)),
                },
                nft_compat::detect::Choice::IptablesLegacy => Ok(Box::new(
                    iptables::IptablesBackend::new(nft_compat::Flavour::Legacy, opts)?,
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
    usable_backends_given(except, netlink::xtables_tables_present)
}

/// [`usable_backends`], asking `xtables_tables_present` (an open netlink backend asks
/// over its own socket).
pub fn usable_backends_given(
    except: Option<&str>,
    mut xtables_tables_present: impl FnMut() -> Option<bool>,
) -> Vec<Box<dyn Backend>> {
    let mut out: Vec<Box<dyn Backend>> = Vec::new();
    let wanted = |name: &str| except != Some(name);
    if wanted("nftables") {
        match netlink::NetlinkBackend::open(Options::default()) {
            Ok(b) => out.push(Box::new(b)),
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
        if flavour == nft_compat::Flavour::Nft && xtables_tables_present() == Some(false) {
            tracing::debug!(
                backend = flavour.name(),
                "no ip or ip6 table exists in nf_tables; not consulted"
            );
            continue;
        }
        match iptables::IptablesBackend::new(flavour, Options::default()) {
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
