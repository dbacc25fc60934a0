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
//! Atomicity: one `iptables-restore` run per family. Each `*table` block commits on its
//! own (both flavours commit per table), so if a later table or the second family is
//! refused, the tables already committed are rolled back to what iptables-save showed
//! before (best effort, logged). IPv4 and IPv6 are two runs, as with any iptables tool.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use ipnet::IpNet;
use nft_compat::naming;
use nft_compat::rule::{Rule as IptRule, Target};
use nft_compat::save::{self, Save};
use nft_compat::state::{self, FamilyState, Jump, OwnedChain, TableState};
use nft_compat::{Flavour, IpVersion, Table};

use super::{Backend, OWNER_PREFIX, OwnedTable};
use crate::error::{Error, Result};
use crate::model::{
    Action, BaseChain, Chain, ChainType, CtState, Element, Hook, IpFamily, L4Proto, Match, Owner,
    Ruleset, priority,
};
use crate::snapshot::{ChainSnapshot, Snapshot};

/// More iptables rules than this from one nftkit rule (sets multiplied out) is refused.
const MAX_EXPANSION: usize = 500_000;
/// `-w`: seconds to wait for the xtables lock held by another iptables process.
const LOCK_WAIT_SECONDS: &str = "10";
/// Searched after `$PATH`: the binaries live in sbin, often missing from a user's PATH.
const SBIN_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// Runs the iptables binaries; a seam so tests can replay outputs.
pub trait Exec {
    /// Run `program args` with `stdin`; Err only if it could not be started.
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::io::Result<std::process::Output>;
    /// The full path of `program`, or None if it is not installed.
    fn find(&self, program: &str) -> Option<PathBuf>;
}

/// The real thing: `$PATH` plus the sbin directories.
pub struct SystemExec;

impl Exec for SystemExec {
    fn run(
        &self,
        program: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> std::io::Result<std::process::Output> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Feed stdin from a thread: a large restore input would otherwise deadlock
        // against a full stdout/stderr pipe.
        let feeder = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_string();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        let out = child.wait_with_output()?;
        if let Some(f) = feeder {
            // A write error (EPIPE) means the tool stopped reading: its exit status and
            // stderr say why.
            let _ = f.join();
        }
        Ok(out)
    }

    fn find(&self, program: &str) -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(SBIN_DIRS.iter().map(PathBuf::from))
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

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
    exec: Box<dyn Exec>,
    /// Full paths: (save, restore) per family.
    tools: [(PathBuf, PathBuf); 2],
}

impl IptablesBackend {
    /// The backend for `flavour`; exit 1 naming the package if a binary is missing.
    pub fn new(flavour: Flavour) -> Result<Self> {
        Self::with_exec(flavour, Box::new(SystemExec))
    }

    pub fn with_exec(flavour: Flavour, exec: Box<dyn Exec>) -> Result<Self> {
        let mut missing = Vec::new();
        let mut tool = |name: String| match exec.find(&name) {
            Some(p) => p,
            None => {
                missing.push(name.clone());
                PathBuf::from(name)
            }
        };
        let tools = [
            (
                tool(flavour.save_binary(IpVersion::V4)),
                tool(flavour.restore_binary(IpVersion::V4)),
            ),
            (
                tool(flavour.save_binary(IpVersion::V6)),
                tool(flavour.restore_binary(IpVersion::V6)),
            ),
        ];
        if !missing.is_empty() {
            return Err(Error::runtime(format!(
                "backend {} needs {}, not found in $PATH or /usr/sbin: install the Debian package \"{}\" (apt-get install {}), or use --backend nftables",
                flavour.name(),
                missing.join(", "),
                Flavour::DEBIAN_PACKAGE,
                Flavour::DEBIAN_PACKAGE
            )));
        }
        Ok(IptablesBackend {
            flavour,
            exec,
            tools,
        })
    }

    fn tools(&self, ip: IpVersion) -> &(PathBuf, PathBuf) {
        &self.tools[ip as usize]
    }

    /// `iptables-save` of one family: every table the kernel has, none instantiated by
    /// asking (`-t raw` would load a legacy table, and status/verify must change nothing).
    fn save(&self, ip: IpVersion) -> Result<Save> {
        let bin = self.tools(ip).0.to_string_lossy().into_owned();
        let out = self
            .exec
            .run(&bin, &[], None)
            .map_err(|e| Error::runtime(format!("{bin}: cannot run: {e}")))?;
        if !out.status.success() {
            return Err(Error::runtime(format!(
                "{bin} failed ({}): {}",
                out.status,
                one_line(&String::from_utf8_lossy(&out.stderr))
            )));
        }
        save::parse(&String::from_utf8_lossy(&out.stdout))
            .map_err(|e| Error::runtime(format!("{bin}: {e}")))
    }

    fn restore(&self, ip: IpVersion, input: &str) -> Result<()> {
        let bin = self.tools(ip).1.to_string_lossy().into_owned();
        let out = self
            .exec
            .run(&bin, &["-w", LOCK_WAIT_SECONDS, "--noflush"], Some(input))
            .map_err(|e| Error::runtime(format!("{bin}: cannot run: {e}")))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Legacy says only "line N failed": quote that line of our input.
        let quoted = failed_line(&stderr)
            .and_then(|n| input.lines().nth(n.checked_sub(1)?))
            .map(|l| format!(" [input line: {l}]"))
            .unwrap_or_default();
        Err(Error::runtime(format!(
            "{bin} --noflush refused the {} rules ({}): {}{quoted}",
            ip.label(),
            out.status,
            one_line(&stderr)
        )))
    }

    /// Put our chains of family `ip` back as they were (`before`); best effort.
    fn rollback(&self, ip: IpVersion, before: &FamilyState, prefix: &str) {
        let result = self.save(ip).and_then(|now| {
            let now = FamilyState::from_save(&now, prefix);
            if &now == before {
                return Ok(false);
            }
            self.restore(ip, &state::plan(before, &now)).map(|()| true)
        });
        match result {
            Ok(true) => tracing::warn!(family = ip.label(), "rolled back to the previous rules"),
            Ok(false) => tracing::debug!(family = ip.label(), "unchanged; nothing to roll back"),
            Err(e) => tracing::error!(family = ip.label(), error = %e, "rollback failed"),
        }
    }

    /// Owned state of `prefix` in both families (a family whose save fails and that holds
    /// nothing of ours is simply empty; errors only when neither family can be read).
    fn current(&self, prefix: &str) -> Result<[FamilyState; 2]> {
        let v4 = FamilyState::from_save(&self.save(IpVersion::V4)?, prefix);
        let v6 = match self.save(IpVersion::V6) {
            Ok(s) => FamilyState::from_save(&s, prefix),
            Err(e) => {
                tracing::debug!(error = %e, "no IPv6 tables to read");
                FamilyState::default()
            }
        };
        Ok([v4, v6])
    }
}

/// N of the first "line N" in an iptables-restore error.
fn failed_line(stderr: &str) -> Option<usize> {
    let i = stderr.find("line ")?;
    let digits: String = stderr[i + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn one_line(s: &str) -> String {
    let joined: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if joined.is_empty() {
        "no message".into()
    } else {
        joined.join(" / ")
    }
}

impl Backend for IptablesBackend {
    fn name(&self) -> &'static str {
        self.flavour.name()
    }

    fn check(&self, rs: &Ruleset) -> Result<()> {
        lower(rs, self.flavour.name()).map(|_| ())
    }

    fn apply(&mut self, rs: &Ruleset) -> Result<()> {
        let desired = lower(rs, self.flavour.name())?;
        let prefix = naming::prefix(&rs.table);
        let mut done: Vec<(IpVersion, FamilyState)> = Vec::new();
        for (ip, want) in IpVersion::BOTH.into_iter().zip(desired.iter()) {
            let before = match self.save(ip) {
                Ok(s) => FamilyState::from_save(&s, &prefix),
                // Nothing to write and nothing readable (e.g. no IPv6 in this kernel).
                Err(_) if want.is_empty() => continue,
                Err(e) => {
                    for (ip2, b) in done.iter().rev() {
                        self.rollback(*ip2, b, &prefix);
                    }
                    return Err(e);
                }
            };
            if want.is_empty() && before.is_empty() {
                continue;
            }
            let input = state::plan(want, &before);
            tracing::debug!(family = ip.label(), input = %input, "iptables-restore input");
            if let Err(e) = self.restore(ip, &input) {
                self.rollback(ip, &before, &prefix);
                for (ip2, b) in done.iter().rev() {
                    self.rollback(*ip2, b, &prefix);
                }
                return Err(e);
            }
            done.push((ip, before));
        }
        Ok(())
    }

    fn expected(&self, rs: &Ruleset) -> Snapshot {
        match lower(rs, self.flavour.name()) {
            Ok(fams) => snapshot(&rs.table, Some(rs.comment.clone()), &fams),
            // `check` runs first in ops; this keeps a refusal visible if it did not.
            Err(e) => Snapshot {
                table: rs.table.clone(),
                comment: Some(rs.comment.clone()),
                chains: vec![ChainSnapshot {
                    name: format!("<{e}>"),
                    base: None,
                    rules: Vec::new(),
                }],
                sets: Default::default(),
            },
        }
    }

    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>> {
        let fams = self.current(&naming::prefix(table))?;
        if fams.iter().all(FamilyState::is_empty) {
            return Ok(None);
        }
        let comment = owner_comment(&fams);
        Ok(Some(snapshot(table, comment, &fams)))
    }

    fn delete(&mut self, table: &str) -> Result<bool> {
        let prefix = naming::prefix(table);
        let fams = self.current(&prefix)?;
        let mut any = false;
        for (ip, have) in IpVersion::BOTH.into_iter().zip(fams.iter()) {
            if have.is_empty() {
                continue;
            }
            self.restore(ip, &state::plan(&FamilyState::default(), have))?;
            any = true;
        }
        Ok(any)
    }

    fn list_owned(&mut self) -> Result<Vec<OwnedTable>> {
        let mut saves = vec![self.save(IpVersion::V4)?];
        if let Ok(s) = self.save(IpVersion::V6) {
            saves.push(s);
        }
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

    fn set_process_owned(&mut self, on: bool) {
        if on {
            tracing::warn!(
                backend = self.flavour.name(),
                "iptables rules cannot be tied to this process: they stay after it exits (remove them with `nftkit delete`)"
            );
        }
    }
}

/// Prefixes of the nftkit tables present in `save`: targets of built-in-chain rules
/// carrying an nftkit comment (base chains name their prefix); then, for chains left
/// without their jump (someone deleted it), owned-looking chains whose rules carry one and
/// that no prefix found so far claims.
fn owned_prefixes(save: &Save) -> BTreeSet<String> {
    let ours = |spec: &str| {
        nft_compat::rule::comment_of(spec).is_some_and(|c| c.starts_with(OWNER_PREFIX))
    };
    let tables: Vec<_> = save
        .tables
        .iter()
        .filter(|t| Table::from_name(&t.name).is_some())
        .collect();
    let mut out = BTreeSet::new();
    for t in &tables {
        for (chain, spec) in &t.rules {
            if t.is_builtin(chain)
                && ours(spec)
                && let Some((_, target)) = nft_compat::rule::target_of(spec)
                && let Some(p) = naming::prefix_of_base_chain(&target)
            {
                out.insert(p.to_string());
            }
        }
    }
    let mut orphans = BTreeSet::new();
    for t in &tables {
        for (chain, spec) in &t.rules {
            if !t.is_builtin(chain)
                && ours(spec)
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

/// The ownership comment found on our jumps or rules.
fn owner_comment(fams: &[FamilyState]) -> Option<String> {
    fams.iter()
        .flat_map(|f| &f.tables)
        .flat_map(|t| {
            t.jumps.iter().map(|j| j.spec.as_str()).chain(
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(String::as_str)),
            )
        })
        .filter_map(nft_compat::rule::comment_of)
        .find(|c| c.starts_with(OWNER_PREFIX))
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

// ---------------------------------------------------------------------------
// Lowering: model -> per-family owned state
// ---------------------------------------------------------------------------

fn unsupported(backend: &str, what: impl std::fmt::Display) -> Error {
    Error::runtime(format!(
        "backend {backend} cannot express {what}; use --backend nftables"
    ))
}

/// The iptables table and built-in chain of a base chain.
fn placement(backend: &str, chain: &str, b: BaseChain) -> Result<(Table, &'static str)> {
    let table = match b.kind {
        ChainType::Nat => Table::Nat,
        ChainType::Filter if b.priority == priority::RAW => Table::Raw,
        ChainType::Filter => Table::Filter,
    };
    let builtin = match b.hook {
        Hook::Prerouting => "PREROUTING",
        Hook::Input => "INPUT",
        Hook::Forward => "FORWARD",
        Hook::Output => "OUTPUT",
        Hook::Postrouting => "POSTROUTING",
    };
    if !table.has_builtin(builtin) {
        return Err(unsupported(
            backend,
            format!(
                "base chain {chain} (type {} hook {} priority {}): the iptables table {} has no {builtin} chain",
                b.kind.nft_name(),
                b.hook.nft_name(),
                b.priority,
                table.name()
            ),
        ));
    }
    Ok((table, builtin))
}

/// One iptables rule under construction (a conjunction of constraints).
#[derive(Debug, Clone, Default)]
struct Alt {
    family: Option<IpFamily>,
    src: Option<IpNet>,
    dst: Option<IpNet>,
    proto: Option<L4Proto>,
    not_protos: Vec<L4Proto>,
    /// Inclusive port ranges.
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
    /// `-m` fragments other than the tcp/udp one, in model order.
    extra: Vec<String>,
    /// Set by a DNAT map entry: `DNAT --to-destination` this.
    dnat_to: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
enum C {
    Family(IpFamily),
    Src(IpNet),
    Dst(IpNet),
    Proto(L4Proto),
    NotProto(L4Proto),
    Sport(L4Proto, u16, u16),
    Dport(L4Proto, u16, u16),
    Extra(String),
    DnatTo(SocketAddr),
}

fn family_of(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
}

/// The intersection of two prefixes: the narrower one, or None if disjoint.
fn narrower(a: IpNet, b: IpNet) -> Option<IpNet> {
    if a.contains(&b) {
        Some(b)
    } else if b.contains(&a) {
        Some(a)
    } else {
        None
    }
}

impl Alt {
    /// `self` further constrained by `c`; None if nothing can match both.
    fn with(mut self, c: &C) -> Option<Alt> {
        let fam = |a: &mut Alt, f: IpFamily| match a.family {
            Some(g) if g != f => false,
            _ => {
                a.family = Some(f);
                true
            }
        };
        let proto = |a: &mut Alt, p: L4Proto| match a.proto {
            Some(q) if q != p => false,
            _ => {
                a.proto = Some(p);
                true
            }
        };
        match c {
            C::Family(f) => fam(&mut self, *f).then_some(self),
            C::Src(n) => {
                if !fam(&mut self, family_of(n)) {
                    return None;
                }
                self.src = Some(match self.src {
                    Some(s) => narrower(s, *n)?,
                    None => *n,
                });
                Some(self)
            }
            C::Dst(n) => {
                if !fam(&mut self, family_of(n)) {
                    return None;
                }
                self.dst = Some(match self.dst {
                    Some(d) => narrower(d, *n)?,
                    None => *n,
                });
                Some(self)
            }
            C::Proto(p) => proto(&mut self, *p).then_some(self),
            C::NotProto(p) => {
                self.not_protos.push(*p);
                Some(self)
            }
            C::Sport(p, lo, hi) | C::Dport(p, lo, hi) => {
                if !proto(&mut self, *p) {
                    return None;
                }
                let slot = if matches!(c, C::Sport(..)) {
                    &mut self.sport
                } else {
                    &mut self.dport
                };
                // Intersect the inclusive ranges.
                let (lo, hi) = match *slot {
                    Some((a, b)) => ((*lo).max(a), (*hi).min(b)),
                    None => (*lo, *hi),
                };
                if lo > hi {
                    return None;
                }
                *slot = Some((lo, hi));
                Some(self)
            }
            C::Extra(s) => {
                self.extra.push(s.clone());
                Some(self)
            }
            C::DnatTo(sa) => {
                self.dnat_to = Some(*sa);
                Some(self)
            }
        }
    }
}

fn ipt_net(n: &IpNet) -> String {
    // iptables-save always prints the prefix length; ipnet's Display does too.
    format!("{}/{}", n.network(), n.prefix_len())
}

/// `80` or `8000:9000`, as iptables-save prints ports.
fn port_range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}:{hi}")
    }
}

fn ipt_addr_port(sa: &SocketAddr) -> String {
    match sa.ip() {
        IpAddr::V4(a) => format!("{a}:{}", sa.port()),
        IpAddr::V6(a) => format!("[{a}]:{}", sa.port()),
    }
}

/// `--ctstate` in the order iptables-save prints states.
fn ctstate_text(states: &[CtState]) -> String {
    const ORDER: [(CtState, &str); 5] = [
        (CtState::Invalid, "INVALID"),
        (CtState::New, "NEW"),
        (CtState::Related, "RELATED"),
        (CtState::Established, "ESTABLISHED"),
        (CtState::Untracked, "UNTRACKED"),
    ];
    ORDER
        .iter()
        .filter(|(s, _)| states.contains(s))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn owner_text(owner: Owner, first: u32, last: u32) -> String {
    let flag = match owner {
        Owner::Uid => "--uid-owner",
        Owner::Gid => "--gid-owner",
    };
    // iptables refuses the range form a-a.
    if first == last {
        format!("-m owner {flag} {first}")
    } else {
        format!("-m owner {flag} {first}-{last}")
    }
}

/// Elements of set `name`, checked against what the match needs.
fn set_elements<'a>(backend: &str, rs: &'a Ruleset, name: &str) -> Result<&'a [Element]> {
    rs.set(name).map(|s| s.elements.as_slice()).ok_or_else(|| {
        unsupported(
            backend,
            format!("a reference to the undeclared set @{name}"),
        )
    })
}

/// The alternatives one match allows (a set gives one per element).
fn options(backend: &str, rs: &Ruleset, m: &Match) -> Result<Vec<Vec<C>>> {
    let one = |c: C| Ok(vec![vec![c]]);
    let bad_element = |set: &str, e: &Element| {
        unsupported(
            backend,
            format!("set @{set}: element {e:?} does not fit the match that uses it"),
        )
    };
    match m {
        Match::NfProto(f) => one(C::Family(*f)),
        Match::L4Proto {
            proto,
            negate: false,
        } => one(C::Proto(*proto)),
        Match::L4Proto {
            proto,
            negate: true,
        } => one(C::NotProto(*proto)),
        Match::Daddr(n) => one(C::Dst(*n)),
        Match::Saddr(n) => one(C::Src(*n)),
        Match::DaddrInSet { family, set } | Match::SaddrInSet { family, set } => {
            let dst = matches!(m, Match::DaddrInSet { .. });
            set_elements(backend, rs, set)?
                .iter()
                .map(|e| {
                    let net: IpNet = match (family, e) {
                        (IpFamily::V4, Element::V4(n)) => (*n).into(),
                        (IpFamily::V6, Element::V6(n)) => (*n).into(),
                        _ => return Err(bad_element(set, e)),
                    };
                    Ok(vec![if dst { C::Dst(net) } else { C::Src(net) }])
                })
                .collect()
        }
        Match::Dport { proto, port } => one(C::Dport(*proto, *port, *port)),
        Match::Sport { proto, port } => one(C::Sport(*proto, *port, *port)),
        Match::DportRange { proto, first, last } => one(C::Dport(*proto, *first, *last)),
        Match::DportInSet { proto, set } => set_elements(backend, rs, set)?
            .iter()
            .map(|e| match e {
                Element::Port(p) => Ok(vec![C::Dport(*proto, *p, *p)]),
                _ => Err(bad_element(set, e)),
            })
            .collect(),
        Match::FibDaddrLocal { negate } => one(C::Extra(format!(
            "-m addrtype {}--dst-type LOCAL",
            if *negate { "! " } else { "" }
        ))),
        Match::CtState(states) => {
            if states.is_empty() {
                return Ok(Vec::new());
            }
            one(C::Extra(format!(
                "-m conntrack --ctstate {}",
                ctstate_text(states)
            )))
        }
        Match::OwnerInSet { owner, set } => set_elements(backend, rs, set)?
            .iter()
            .map(|e| match e {
                Element::Id(id) => Ok(vec![C::Extra(owner_text(*owner, *id, *id))]),
                _ => Err(bad_element(set, e)),
            })
            .collect(),
        Match::OwnerRange { owner, first, last } => {
            one(C::Extra(owner_text(*owner, *first, *last)))
        }
    }
}

/// What an action needs from the rule, and its iptables target (chain references are
/// model names here, resolved per table later).
enum Verdict {
    Target(String),
    Jump(String),
    Goto(String),
}

fn action(backend: &str, a: &Action) -> Result<(Vec<Vec<C>>, Verdict)> {
    let plain = |t: &str| Ok((vec![Vec::new()], Verdict::Target(t.to_string())));
    match a {
        Action::Accept => plain("ACCEPT"),
        Action::Drop => plain("DROP"),
        Action::Return => plain("RETURN"),
        Action::Jump(c) => Ok((vec![Vec::new()], Verdict::Jump(c.clone()))),
        Action::Goto(c) => Ok((vec![Vec::new()], Verdict::Goto(c.clone()))),
        Action::Notrack => plain("CT --notrack"),
        Action::Masquerade {
            fully_random: false,
        } => plain("MASQUERADE"),
        Action::Masquerade { fully_random: true } => plain("MASQUERADE --random-fully"),
        Action::Redirect { port } => plain(&format!("REDIRECT --to-ports {port}")),
        Action::Dnat { addr, port } => {
            let fam = match addr {
                IpAddr::V4(_) => IpFamily::V4,
                IpAddr::V6(_) => IpFamily::V6,
            };
            Ok((
                vec![vec![C::Family(fam)]],
                Verdict::Target(format!(
                    "DNAT --to-destination {}",
                    ipt_addr_port(&SocketAddr::new(*addr, *port))
                )),
            ))
        }
        Action::DnatMap {
            family,
            proto,
            entries,
        } => {
            let opts = entries
                .iter()
                .map(|(orig, target)| {
                    vec![
                        C::Family(*family),
                        C::Dst(IpNet::from(orig.ip())),
                        C::Dport(*proto, orig.port(), orig.port()),
                        C::DnatTo(*target),
                    ]
                })
                .collect();
            // The target text is per entry; filled in from `dnat_to`.
            let _ = backend;
            Ok((opts, Verdict::Target(String::new())))
        }
    }
}

/// One lowered rule of a chain: its family and spec pieces; the target is resolved per
/// table (chain names) by `finish`.
struct Lowered {
    family: Option<IpFamily>,
    rule: IptRule,
    /// Model name of the chain jumped/gone to, if any.
    refers: Option<String>,
}

/// Every iptables rule one model rule becomes.
fn lower_rule(
    backend: &str,
    rs: &Ruleset,
    chain: &str,
    r: &crate::model::Rule,
) -> Result<Vec<Lowered>> {
    let mut alts = vec![Alt::default()];
    let (act_opts, verdict) = action(backend, &r.action)?;
    let all_opts = r
        .matches
        .iter()
        .map(|m| options(backend, rs, m))
        .chain(std::iter::once(Ok(act_opts)));
    for opts in all_opts {
        let opts = opts?;
        let mut next = Vec::with_capacity(alts.len() * opts.len().max(1));
        for a in &alts {
            for cs in &opts {
                if let Some(n) = cs.iter().try_fold(a.clone(), |acc, c| acc.with(c)) {
                    next.push(n);
                }
            }
        }
        if next.len() > MAX_EXPANSION {
            return Err(unsupported(
                backend,
                format!(
                    "a rule of chain {chain} whose sets multiply out to more than {MAX_EXPANSION} iptables rules"
                ),
            ));
        }
        alts = next;
    }
    let mut out = Vec::with_capacity(alts.len());
    for a in alts {
        let protocol = match a.proto {
            Some(p) if a.not_protos.contains(&p) => continue,
            Some(p) => Some((false, p.nft_name().to_string())),
            None => {
                let mut nots = a.not_protos.clone();
                nots.dedup();
                match nots.as_slice() {
                    [] => None,
                    [p] => Some((true, p.nft_name().to_string())),
                    _ => {
                        return Err(unsupported(
                            backend,
                            format!(
                                "a rule of chain {chain} that excludes several protocols ({})",
                                crate::render::rule_text(r)
                            ),
                        ));
                    }
                }
            }
        };
        let mut matches = Vec::new();
        if a.sport.is_some() || a.dport.is_some() {
            let p = a.proto.map(L4Proto::nft_name).unwrap_or("tcp");
            let mut m = format!("-m {p}");
            if let Some(s) = a.sport {
                m.push_str(&format!(" --sport {}", port_range(s)));
            }
            if let Some(d) = a.dport {
                m.push_str(&format!(" --dport {}", port_range(d)));
            }
            matches.push(m);
        }
        matches.extend(a.extra.iter().cloned());
        let (target, refers) = match (&verdict, a.dnat_to) {
            (_, Some(to)) => (
                Target::Jump(format!("DNAT --to-destination {}", ipt_addr_port(&to))),
                None,
            ),
            (Verdict::Target(t), None) => (Target::Jump(t.clone()), None),
            (Verdict::Jump(c), None) => (Target::Jump(c.clone()), Some(c.clone())),
            (Verdict::Goto(c), None) => (Target::Goto(c.clone()), Some(c.clone())),
        };
        out.push(Lowered {
            family: a.family,
            rule: IptRule {
                source: a.src.as_ref().map(ipt_net),
                destination: a.dst.as_ref().map(ipt_net),
                protocol,
                matches,
                comment: Some(rs.comment.clone()),
                target,
            },
            refers,
        });
    }
    Ok(out)
}

/// Targets an iptables table accepts (the kernel refuses the others there; we say so
/// before sending anything).
fn check_target(backend: &str, table: Table, chain: &str, t: &Target) -> Result<()> {
    let Target::Jump(t) = t else { return Ok(()) };
    let name = t.split_whitespace().next().unwrap_or("");
    let needs = match name {
        "DROP" if table == Table::Nat => {
            Some("a table other than nat (iptables refuses DROP in nat)")
        }
        "CT" if table != Table::Raw => Some("the raw table (priority -300)"),
        "MASQUERADE" | "REDIRECT" | "DNAT" if table != Table::Nat => Some("a nat chain"),
        _ => None,
    };
    match needs {
        Some(n) => Err(unsupported(
            backend,
            format!(
                "-j {name} in chain {chain} of table {}: it needs {n}",
                table.name()
            ),
        )),
        None => Ok(()),
    }
}

/// The desired owned state of `rs`, IPv4 then IPv6. `backend` names the flavour in errors.
pub fn lower(rs: &Ruleset, backend: &str) -> Result<[FamilyState; 2]> {
    let prefix = naming::prefix(&rs.table);
    // (model name, iptables name, table and built-in chain of a base chain).
    type Named = (String, String, Option<(Table, &'static str)>);
    let mut names: Vec<Named> = Vec::new();
    for c in &rs.chains {
        let (name, place) = match c.base {
            Some(b) => {
                let (table, builtin) = placement(backend, &c.name, b)?;
                (
                    naming::base_chain_name(&prefix, builtin),
                    Some((table, builtin)),
                )
            }
            None => (naming::regular_chain_name(&prefix, &c.name), None),
        };
        let name = name.ok_or_else(|| {
            Error::invalid(
                "--table",
                &rs.table,
                format!(
                    "a name of at most {} characters for the iptables backends (chain names `{}-…` must fit {} characters)",
                    naming::MAX_CHAIN_NAME.saturating_sub(10),
                    prefix,
                    naming::MAX_CHAIN_NAME
                ),
            )
        })?;
        names.push((c.name.clone(), name, place));
    }
    let ipt_name = |model: &str| -> Result<&str> {
        names
            .iter()
            .find(|(m, _, _)| m == model)
            .map(|(_, n, _)| n.as_str())
            .ok_or_else(|| unsupported(backend, format!("a jump to the undeclared chain {model}")))
    };

    // Lower every rule once.
    let mut lowered: Vec<(&Chain, Vec<Lowered>)> = Vec::new();
    for c in &rs.chains {
        let mut rules = Vec::new();
        for r in &c.rules {
            rules.extend(lower_rule(backend, rs, &c.name, r)?);
        }
        lowered.push((c, rules));
    }

    let mut out: [FamilyState; 2] = Default::default();
    for (slot, family) in [(0usize, IpFamily::V4), (1, IpFamily::V6)] {
        let in_family = |l: &&Lowered| l.family.is_none_or(|f| f == family);
        let mut tables: Vec<TableState> = Vec::new();
        for table in Table::ALL {
            // Base chains of this table, by priority (lowest first = first jumped to).
            let mut bases: Vec<(&Chain, &'static str)> = rs
                .chains
                .iter()
                .zip(&names)
                .filter_map(|(c, (_, _, place))| match place {
                    Some((t, b)) if *t == table => Some((c, *b)),
                    _ => None,
                })
                .collect();
            if bases.is_empty() {
                continue;
            }
            bases.sort_by_key(|(c, _)| c.base.map(|b| b.priority));
            // Chains reachable in this family from these base chains, in model order.
            let mut reach: BTreeSet<&str> = bases.iter().map(|(c, _)| c.name.as_str()).collect();
            let mut queue: Vec<&str> = reach.iter().copied().collect();
            while let Some(cur) = queue.pop() {
                let Some((_, rules)) = lowered.iter().find(|(c, _)| c.name == cur) else {
                    continue;
                };
                for l in rules.iter().filter(in_family) {
                    if let Some(t) = &l.refers
                        && reach.insert(t.as_str())
                    {
                        queue.push(t.as_str());
                    }
                }
            }
            let mut chains = Vec::new();
            for (c, rules) in lowered
                .iter()
                .filter(|(c, _)| reach.contains(c.name.as_str()))
            {
                let name = ipt_name(&c.name)?.to_string();
                let mut specs = Vec::new();
                for l in rules.iter().filter(in_family) {
                    let mut rule = l.rule.clone();
                    if let Some(model) = &l.refers {
                        let target = ipt_name(model)?.to_string();
                        rule.target = match rule.target {
                            Target::Goto(_) => Target::Goto(target),
                            Target::Jump(_) => Target::Jump(target),
                        };
                    }
                    check_target(backend, table, &c.name, &rule.target)?;
                    specs.push(rule.spec());
                }
                chains.push(OwnedChain { name, rules: specs });
            }
            let mut seen = BTreeSet::new();
            for c in &chains {
                if !seen.insert(c.name.as_str()) {
                    return Err(unsupported(
                        backend,
                        format!(
                            "two chains that both become {} in table {} (one base chain per hook and table)",
                            c.name,
                            table.name()
                        ),
                    ));
                }
            }
            let jumps = bases
                .iter()
                .map(|(c, builtin)| {
                    let mut j = IptRule::new(Target::Jump(ipt_name(&c.name)?.to_string()));
                    j.comment = Some(rs.comment.clone());
                    Ok(Jump {
                        from: builtin.to_string(),
                        spec: j.spec(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            tables.push(TableState {
                table,
                chains,
                jumps,
            });
        }
        let fam = FamilyState { tables };
        // A family with no rule at all is left alone (no empty chains, no jumps).
        if fam.rule_count() > 0 {
            out[slot] = fam;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Rule, Set};

    const C: &str = r#"-m comment --comment "managed by nftkit t""#;

    fn rs(chains: Vec<Chain>, sets: Vec<Set>) -> Ruleset {
        Ruleset {
            table: "nftkit-t".into(),
            comment: "managed by nftkit t".into(),
            sets,
            chains,
        }
    }

    fn base(name: &str, kind: ChainType, hook: Hook, prio: i32, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority: prio,
            }),
            rules,
        }
    }

    fn rule(matches: Vec<Match>, action: Action) -> Rule {
        Rule { matches, action }
    }

    fn specs(f: &FamilyState, table: Table) -> Vec<String> {
        f.table(table)
            .map(|t| {
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(move |r| format!("-A {} {r}", c.name)))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn redirect_default_lowers_to_canonical_lines() {
        let cfg = crate::jobs::redirect::parse(
            &Default::default(),
            &|_| None,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let r = crate::jobs::redirect::build(&cfg, Default::default(), "nftkit-redirect");
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        let c = r#"-m comment --comment "managed by nftkit redirect""#;
        let ch = "-A NFTKIT-REDIRECT-OUTPUT";
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![
                format!("{ch} ! -p tcp {c} -j RETURN"),
                format!("{ch} -d 10.0.0.0/8 {c} -j RETURN"),
                format!("{ch} -d 127.0.0.0/8 {c} -j RETURN"),
                format!("{ch} -d 172.16.0.0/12 {c} -j RETURN"),
                format!("{ch} -d 192.168.0.0/16 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 -m owner --uid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 443 -m owner --uid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 -m owner --gid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 443 -m owner --gid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 {c} -j REDIRECT --to-ports 10080"),
                format!("{ch} -p tcp -m tcp --dport 443 {c} -j REDIRECT --to-ports 10443"),
            ]
        );
        let v6s = specs(&v6, Table::Nat);
        assert!(
            v6s.contains(&format!("{ch} -d ::1/128 {c} -j RETURN")),
            "{v6s:?}"
        );
        assert!(
            v6s.contains(&format!("{ch} -d fc00::/7 {c} -j RETURN")),
            "{v6s:?}"
        );
        assert!(!v6s.iter().any(|s| s.contains("10.0.0.0")), "{v6s:?}");
        assert_eq!(
            v4.table(Table::Nat).unwrap().jumps,
            vec![Jump {
                from: "OUTPUT".into(),
                spec: format!("{c} -j NFTKIT-REDIRECT-OUTPUT")
            }]
        );
    }

    #[test]
    fn families_split_and_dnat_per_family() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![
                    rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::L4Proto {
                                proto: L4Proto::Tcp,
                                negate: false,
                            },
                        ],
                        Action::Dnat {
                            addr: "203.0.113.10".parse().unwrap(),
                            port: 15001,
                        },
                    ),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 80,
                        }],
                        Action::Dnat {
                            addr: "2001:db8::10".parse().unwrap(),
                            port: 8080,
                        },
                    ),
                    rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::Daddr("2001:db8::/32".parse().unwrap()),
                        ],
                        Action::Return,
                    ),
                ],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -p tcp {C} -j DNAT --to-destination 203.0.113.10:15001"
            )]
        );
        assert_eq!(
            specs(&v6, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -p tcp -m tcp --dport 80 {C} -j DNAT --to-destination [2001:db8::10]:8080"
            )]
        );
    }

    #[test]
    fn tables_by_type_and_priority_and_regular_chains_follow_jumps() {
        let r = rs(
            vec![
                base(
                    "raw-output",
                    ChainType::Filter,
                    Hook::Output,
                    priority::RAW,
                    vec![rule(
                        vec![
                            Match::Saddr("192.0.2.1/32".parse().unwrap()),
                            Match::Sport {
                                proto: L4Proto::Tcp,
                                port: 443,
                            },
                        ],
                        Action::Notrack,
                    )],
                ),
                base(
                    "filter-forward",
                    ChainType::Filter,
                    Hook::Forward,
                    priority::FILTER,
                    vec![rule(
                        vec![Match::CtState(vec![
                            CtState::Established,
                            CtState::New,
                            CtState::Related,
                        ])],
                        Action::Goto("accepts".into()),
                    )],
                ),
                base(
                    "nat-post",
                    ChainType::Nat,
                    Hook::Postrouting,
                    priority::SRCNAT,
                    vec![rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::FibDaddrLocal { negate: true },
                        ],
                        Action::Jump("IP-MASQ-AGENT".into()),
                    )],
                ),
                Chain {
                    name: "accepts".into(),
                    base: None,
                    rules: vec![rule(vec![], Action::Accept)],
                },
                Chain {
                    name: "IP-MASQ-AGENT".into(),
                    base: None,
                    rules: vec![rule(vec![], Action::Masquerade { fully_random: true })],
                },
            ],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-legacy").unwrap();
        assert_eq!(
            specs(&v4, Table::Raw),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -s 192.0.2.1/32 -p tcp -m tcp --sport 443 {C} -j CT --notrack"
            )]
        );
        assert_eq!(
            specs(&v4, Table::Filter),
            vec![
                format!(
                    "-A NFTKIT-T-FORWARD -m conntrack --ctstate NEW,RELATED,ESTABLISHED {C} -g NFTKIT-T-ACCEPTS"
                ),
                format!("-A NFTKIT-T-ACCEPTS {C} -j ACCEPT"),
            ]
        );
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![
                format!(
                    "-A NFTKIT-T-POSTROUTING -m addrtype ! --dst-type LOCAL {C} -j NFTKIT-T-IP-MASQ-AGENT"
                ),
                format!("-A NFTKIT-T-IP-MASQ-AGENT {C} -j MASQUERADE --random-fully"),
            ]
        );
        // IPv6: the nat jump is IPv4-only, so IP-MASQ-AGENT is unreachable there; the
        // filter chains are family-neutral.
        assert!(v6.table(Table::Raw).unwrap().chains[0].rules.is_empty());
        let nat6 = v6.table(Table::Nat).unwrap();
        assert_eq!(nat6.chains.len(), 1, "{nat6:?}");
        assert!(nat6.chains[0].rules.is_empty());
        assert_eq!(specs(&v6, Table::Filter).len(), 2);
    }

    #[test]
    fn a_family_without_rules_is_left_alone() {
        let r = rs(
            vec![base(
                "nat-post",
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
                vec![rule(
                    vec![Match::NfProto(IpFamily::V4)],
                    Action::Masquerade {
                        fully_random: false,
                    },
                )],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(v4.rule_count(), 1);
        assert!(v6.is_empty());
    }

    #[test]
    fn sets_multiply_out_and_empty_sets_match_nothing() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![
                    rule(
                        vec![
                            Match::DportInSet {
                                proto: L4Proto::Tcp,
                                set: "ports".into(),
                            },
                            Match::OwnerInSet {
                                owner: Owner::Uid,
                                set: "uids".into(),
                            },
                            Match::OwnerRange {
                                owner: Owner::Gid,
                                first: 7,
                                last: 7,
                            },
                        ],
                        Action::Return,
                    ),
                    rule(
                        vec![Match::DaddrInSet {
                            family: IpFamily::V4,
                            set: "empty".into(),
                        }],
                        Action::Return,
                    ),
                ],
            )],
            vec![
                Set {
                    name: "ports".into(),
                    key: crate::model::KeyType::InetService,
                    interval: false,
                    elements: vec![Element::Port(80), Element::Port(443)],
                },
                Set {
                    name: "uids".into(),
                    key: crate::model::KeyType::Uid,
                    interval: false,
                    elements: vec![Element::Id(0), Element::Id(1010)],
                },
                Set {
                    name: "empty".into(),
                    key: crate::model::KeyType::Ipv4Addr,
                    interval: true,
                    elements: vec![],
                },
            ],
        );
        let [v4, _] = lower(&r, "iptables-nft").unwrap();
        let got = specs(&v4, Table::Nat);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            format!(
                "-A NFTKIT-T-OUTPUT -p tcp -m tcp --dport 80 -m owner --uid-owner 0 -m owner --gid-owner 7 {C} -j RETURN"
            )
        );
        assert!(
            got[3].contains("--dport 443 -m owner --uid-owner 1010"),
            "{got:?}"
        );
    }

    #[test]
    fn dnat_map_becomes_one_rule_per_entry() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![rule(
                    vec![],
                    Action::DnatMap {
                        family: IpFamily::V4,
                        proto: L4Proto::Tcp,
                        entries: vec![(
                            "169.254.169.254:80".parse().unwrap(),
                            "198.51.100.5:8080".parse().unwrap(),
                        )],
                    },
                )],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 {C} -j DNAT --to-destination 198.51.100.5:8080"
            )]
        );
        assert!(v6.is_empty());
    }

    #[test]
    fn what_iptables_cannot_express_is_refused_by_name() {
        let drop_in_nat = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![rule(vec![], Action::Drop)],
            )],
            vec![],
        );
        let e = lower(&drop_in_nat, "iptables-legacy").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let msg = e.to_string();
        assert!(
            msg.contains("iptables-legacy") && msg.contains("DROP"),
            "{msg}"
        );

        let nat_forward = rs(
            vec![base("x", ChainType::Nat, Hook::Forward, 0, vec![])],
            vec![],
        );
        let msg = lower(&nat_forward, "iptables-nft").unwrap_err().to_string();
        assert!(
            msg.contains("FORWARD") && msg.contains("iptables-nft"),
            "{msg}"
        );

        let two_nots = rs(
            vec![base(
                "f",
                ChainType::Filter,
                Hook::Input,
                0,
                vec![rule(
                    vec![
                        Match::L4Proto {
                            proto: L4Proto::Tcp,
                            negate: true,
                        },
                        Match::L4Proto {
                            proto: L4Proto::Udp,
                            negate: true,
                        },
                    ],
                    Action::Drop,
                )],
            )],
            vec![],
        );
        assert!(
            lower(&two_nots, "iptables-nft")
                .unwrap_err()
                .to_string()
                .contains("several protocols")
        );

        let mut long = drop_in_nat.clone();
        long.table = "a-very-long-table-name-for-iptables".into();
        long.chains[0].rules.clear();
        assert_eq!(lower(&long, "iptables-nft").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn snapshot_of_lowered_state_equals_snapshot_of_its_save() {
        let cfg = crate::jobs::redirect::parse(
            &Default::default(),
            &|_| None,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let r = crate::jobs::redirect::build(&cfg, Default::default(), "nftkit-redirect");
        let fams = lower(&r, "iptables-nft").unwrap();
        // What iptables-save prints after restoring the plan on an empty host.
        let mut saves = Vec::new();
        for f in &fams {
            let mut text = String::new();
            for t in &f.tables {
                text.push_str(&format!("*{}\n", t.table.name()));
                for b in t.table.builtin_chains() {
                    text.push_str(&format!(":{b} ACCEPT [0:0]\n"));
                }
                for c in &t.chains {
                    text.push_str(&format!(":{} - [0:0]\n", c.name));
                }
                for j in &t.jumps {
                    text.push_str(&format!("-A {} {}\n", j.from, j.spec));
                }
                for c in &t.chains {
                    for r in &c.rules {
                        text.push_str(&format!("-A {} {r}\n", c.name));
                    }
                }
                text.push_str("COMMIT\n");
            }
            saves.push(save::parse(&text).unwrap());
        }
        let back: Vec<FamilyState> = saves
            .iter()
            .map(|s| FamilyState::from_save(s, "NFTKIT-REDIRECT"))
            .collect();
        assert_eq!(
            snapshot("nftkit-redirect", Some(r.comment.clone()), &fams),
            snapshot("nftkit-redirect", owner_comment(&back), &back)
        );
        let mut prefixes = BTreeSet::new();
        for s in &saves {
            prefixes.extend(owned_prefixes(s));
        }
        assert_eq!(
            prefixes.into_iter().collect::<Vec<_>>(),
            ["NFTKIT-REDIRECT"]
        );
    }
}
