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

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nft_compat::naming;
use nft_compat::save::{self, Save};
use nft_compat::state::{self, FamilyState};
use nft_compat::{Flavour, IpVersion, Table};

use super::{Backend, OWNER_PREFIX, OwnedTable};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::snapshot::{ChainSnapshot, Snapshot};

mod lower;
pub use lower::lower;

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

/// How long an iptables tool may run before it is killed (exit 1 naming it). Restores
/// wait up to `-w` seconds for the xtables lock first; this bounds everything else (a
/// hung kernel call, a stuck wrapper script), so a daemon's loop never blocks forever.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// The real thing: `$PATH` plus the sbin directories; each run is bounded by `timeout`.
pub struct SystemExec {
    pub timeout: Duration,
}

impl Default for SystemExec {
    fn default() -> Self {
        SystemExec {
            timeout: TOOL_TIMEOUT,
        }
    }
}

impl Exec for SystemExec {
    /// Err(TimedOut) when the program outlives `timeout`; it is killed and reaped.
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
        // Feed stdin and drain stdout/stderr from threads: a large restore input would
        // otherwise deadlock against a full pipe, and the wait below must stay free to
        // notice the deadline.
        let feeder = match (stdin, child.stdin.take()) {
            (Some(text), Some(mut pipe)) => {
                let text = text.to_string();
                Some(std::thread::spawn(move || pipe.write_all(text.as_bytes())))
            }
            _ => None,
        };
        // Each reader reports when its pipe closes, which is (almost always) when the tool
        // exits: the wait below wakes then instead of polling on a fixed tick.
        let (closed, pipe_closed) = std::sync::mpsc::channel::<()>();
        let drain = |pipe: Option<Box<dyn Read + Send>>| {
            let closed = closed.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                let _ = closed.send(());
                buf
            })
        };
        let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as _));
        let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as _));
        let deadline = Instant::now() + self.timeout;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if pipe_closed.recv_timeout(left).is_err() {
                break;
            }
        }
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                // The readers end with the pipes (the tool has no children of its own);
                // they are not joined, so nothing here can block again.
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "did not finish within {} s and was killed",
                        self.timeout.as_secs_f64()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let stdout = out_reader.join().unwrap_or_default();
        let stderr = err_reader.join().unwrap_or_default();
        if let Some(f) = feeder {
            // A write error (EPIPE) means the tool stopped reading: its exit status and
            // stderr say why.
            let _ = f.join();
        }
        Ok(std::process::Output {
            status,
            stdout,
            stderr,
        })
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
    /// `--force`: take over or delete chains named like ours that lack our comment.
    force: bool,
}

impl IptablesBackend {
    /// The backend for `flavour`; exit 1 naming the package if a binary is missing.
    pub fn new(flavour: Flavour) -> Result<Self> {
        // The tools' own messages do not always say so (legacy restore without the
        // capability: "unable to initialize table 'nat'"); check before running them.
        if !has_cap_net_admin() {
            return Err(Error::runtime(format!(
                "backend {} needs CAP_NET_ADMIN, which this process lacks (run as root or grant the capability; --dry-run needs none)",
                flavour.name()
            )));
        }
        Self::with_exec(flavour, Box::new(SystemExec::default()))
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
            force: false,
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
            .map_err(|e| run_error(&bin, &e))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(Error::runtime(format!(
                "{bin} failed ({}): {}{}",
                out.status,
                one_line(&stderr),
                privilege_hint(&stderr)
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
            .map_err(|e| run_error(&bin, &e))?;
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
            "{bin} --noflush refused the {} rules ({}): {}{quoted}{}",
            ip.label(),
            out.status,
            one_line(&stderr),
            privilege_hint(&stderr)
        )))
    }

    /// Put our chains of family `ip` back as they were (`before`); best effort.
    fn rollback(&self, ip: IpVersion, before: &FamilyState, prefix: &str) {
        let result = self.save(ip).and_then(|now| {
            // Ours now, plus whatever `before` held (chains taken over with --force).
            let now = FamilyState::from_save_claiming(&now, prefix, |t, n| before.has_chain(t, n));
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

    /// Saves of both families; the IPv4 one must be readable, an unreadable IPv6 one is
    /// None (no IPv6 tables in this kernel).
    fn saves(&self) -> Result<[Option<Save>; 2]> {
        let v4 = self.save(IpVersion::V4)?;
        let v6 = match self.save(IpVersion::V6) {
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

    /// The refusal for objects named like ours that are not provably ours
    /// (CONTRACT.md "Ownership"): exit 1 naming them, their table and the way out.
    fn refuse(&self, clashes: &[String], table: &str, replace: bool) -> Error {
        const SHOWN: usize = 5;
        let mut list = clashes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if clashes.len() > SHOWN {
            list.push_str(&format!("; and {} more", clashes.len() - SHOWN));
        }
        Error::runtime(format!(
            "backend {}: {list}: named like nftkit table {table}'s chains ({}-*) but not managed by nftkit (no ownership comment on it or on a rule that enters it); refusing to {} (--force {})",
            self.flavour.name(),
            naming::prefix(table),
            if replace { "replace it" } else { "delete it" },
            if replace {
                "takes it over"
            } else {
                "deletes by name"
            },
        ))
    }
}

/// `chain NAME in table T (iptables/ip6tables)` for each foreign chain of `foreign` that
/// `pick` selects, and `rule "-A B SPEC" in table T (...)` for each foreign jump it selects.
fn describe(
    ip: IpVersion,
    foreign: &FamilyState,
    chain: impl Fn(Table, &str) -> bool,
    jump: impl Fn(Table, &str) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for t in &foreign.tables {
        for c in t.chains.iter().filter(|c| chain(t.table, &c.name)) {
            out.push(format!(
                "chain {} in table {} ({})",
                c.name,
                t.table.name(),
                ip.command()
            ));
        }
        for j in &t.jumps {
            let target = nft_compat::rule::target_of(&j.spec)
                .map(|(_, t)| t)
                .unwrap_or_default();
            if jump(t.table, &target) {
                out.push(format!(
                    "rule \"-A {} {}\" in table {} ({})",
                    j.from,
                    j.spec,
                    t.table.name(),
                    ip.command()
                ));
            }
        }
    }
    out
}

/// Exit 1 for a tool that could not be started or was killed at its deadline.
fn run_error(bin: &str, e: &std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::TimedOut {
        Error::runtime(format!("{bin} {e}"))
    } else {
        Error::runtime(format!("{bin}: cannot run: {e}"))
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

/// Whether CAP_NET_ADMIN (bit 12) is in this process's effective set (/proc/self/status
/// `CapEff`). Unknown (no /proc) counts as yes: the tools then report for themselves.
fn has_cap_net_admin() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// The iptables tools say "Permission denied (you must be root)" or "Operation not
/// permitted" without naming the capability; nftkit's messages do (CONTRACT.md exit 1).
fn privilege_hint(stderr: &str) -> &'static str {
    const DENIED: [&str; 3] = [
        "Permission denied",
        "you must be root",
        "Operation not permitted",
    ];
    if DENIED.iter().any(|m| stderr.contains(m)) {
        " (needs CAP_NET_ADMIN)"
    } else {
        ""
    }
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
        // Read both families and settle ownership before writing anything, so a refusal
        // leaves every table as it was.
        let mut befores: Vec<(IpVersion, &FamilyState, FamilyState)> = Vec::new();
        let mut clashes = Vec::new();
        for (ip, want) in IpVersion::BOTH.into_iter().zip(desired.iter()) {
            let save = match self.save(ip) {
                Ok(s) => s,
                // Nothing to write and nothing readable (e.g. no IPv6 in this kernel).
                Err(_) if want.is_empty() => continue,
                Err(e) => return Err(e),
            };
            let ours = FamilyState::from_save(&save, &prefix);
            let foreign = FamilyState::foreign(&save, &prefix);
            // A foreign chain we would write, or a foreign rule entering one of our
            // chains that this apply deletes (it would keep the chain referenced).
            let stale = |t: Table, n: &str| ours.has_chain(t, n) && !want.has_chain(t, n);
            let found = describe(
                ip,
                &foreign,
                |t, n| want.has_chain(t, n),
                |t, n| want.has_chain(t, n) && !ours.has_chain(t, n) || stale(t, n),
            );
            let before = if found.is_empty() {
                ours
            } else if self.force {
                tracing::warn!(
                    backend = self.flavour.name(),
                    taken_over = %found.join("; "),
                    "replacing chains and rules not managed by nftkit (--force)"
                );
                FamilyState::from_save_claiming(&save, &prefix, |t, n| {
                    want.has_chain(t, n) || ours.has_chain(t, n)
                })
            } else {
                clashes.extend(found);
                ours
            };
            if want.is_empty() && before.is_empty() {
                continue;
            }
            befores.push((ip, want, before));
        }
        if !clashes.is_empty() {
            return Err(self.refuse(&clashes, &rs.table, true));
        }
        let mut done: Vec<(IpVersion, &FamilyState)> = Vec::new();
        for (ip, want, before) in &befores {
            let input = state::plan(want, before);
            tracing::debug!(family = ip.label(), input = %input, "iptables-restore input");
            if let Err(e) = self.restore(*ip, &input) {
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
            let have = if self.force {
                FamilyState::from_save_claiming(save, &prefix, |_, _| true)
            } else {
                let foreign = FamilyState::foreign(save, &prefix);
                clashes.extend(describe(ip, &foreign, |_, _| true, |_, _| true));
                FamilyState::from_save(save, &prefix)
            };
            if !have.is_empty() {
                plans.push((ip, state::plan(&FamilyState::default(), &have)));
            }
        }
        if !clashes.is_empty() {
            return Err(self.refuse(&clashes, table, false));
        }
        let any = !plans.is_empty();
        for (ip, input) in plans {
            self.restore(ip, &input)?;
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

    fn set_force(&mut self, on: bool) {
        self.force = on;
    }

    fn other_backends(&self) -> Vec<Box<dyn Backend>> {
        super::usable_backends(Some(self.flavour.name()))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing is installed.
    struct Bare;

    impl Exec for Bare {
        fn run(&self, p: &str, _: &[&str], _: Option<&str>) -> std::io::Result<Output> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                p.to_string(),
            ))
        }
        fn find(&self, _: &str) -> Option<PathBuf> {
            None
        }
    }

    use std::process::Output;

    #[test]
    fn missing_binaries_are_exit_1_naming_the_package() {
        for f in [Flavour::Legacy, Flavour::Nft] {
            let e = IptablesBackend::with_exec(f, Box::new(Bare))
                .err()
                .expect("must fail");
            assert_eq!(e.exit_code(), 1);
            let msg = e.to_string();
            assert!(msg.contains(f.name()), "{msg}");
            assert!(msg.contains(&f.restore_binary(IpVersion::V6)), "{msg}");
            assert!(msg.contains("Debian package \"iptables\""), "{msg}");
        }
    }

    /// Every tool "installed"; each run is `sleep 10` through the real SystemExec.
    struct Slow(SystemExec);

    impl Exec for Slow {
        fn run(&self, _: &str, _: &[&str], stdin: Option<&str>) -> std::io::Result<Output> {
            self.0.run("sleep", &["10"], stdin)
        }
        fn find(&self, program: &str) -> Option<PathBuf> {
            Some(PathBuf::from(program))
        }
    }

    #[test]
    fn a_hung_tool_is_killed_at_its_deadline() {
        let quick = SystemExec {
            timeout: Duration::from_millis(300),
        };
        let started = Instant::now();
        let e = quick.run("sleep", &["10"], None).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Output and stdin still pass through for a tool that finishes in time.
        let out = quick.run("cat", &[], Some("restore input\n")).unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"restore input\n");

        // Through the backend: exit 1 naming the tool.
        for f in [Flavour::Legacy, Flavour::Nft] {
            let mut b = IptablesBackend::with_exec(
                f,
                Box::new(Slow(SystemExec {
                    timeout: Duration::from_millis(200),
                })),
            )
            .unwrap();
            let started = Instant::now();
            let e = b.read_back("nftkit-t").unwrap_err();
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_eq!(e.exit_code(), 1);
            let msg = e.to_string();
            assert!(
                msg.contains(&f.save_binary(IpVersion::V4)) && msg.contains("killed"),
                "{msg}"
            );
            let e = b.delete("nftkit-t").unwrap_err();
            assert!(e.to_string().contains("killed"), "{e}");
        }
    }

    /// Replays one IPv4 save (IPv6: empty) and records every restore input.
    struct Recorder {
        save_v4: String,
        restores: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
    }

    impl Exec for Recorder {
        fn run(&self, p: &str, _: &[&str], stdin: Option<&str>) -> std::io::Result<Output> {
            use std::os::unix::process::ExitStatusExt;
            let stdout = if p == "iptables-nft-save" {
                self.save_v4.clone().into_bytes()
            } else {
                Vec::new()
            };
            if let Some(input) = stdin {
                self.restores.borrow_mut().push(input.to_string());
            }
            Ok(Output {
                status: std::process::ExitStatus::from_raw(0),
                stdout,
                stderr: Vec::new(),
            })
        }
        fn find(&self, program: &str) -> Option<PathBuf> {
            Some(PathBuf::from(program))
        }
    }

    /// kube-proxy's chains under `--table kube`: an apply writing KUBE-POSTROUTING and a
    /// delete are refused before any restore runs; --force takes over only the chain it
    /// writes.
    #[test]
    fn clashing_foreign_chains_are_refused_before_anything_is_written() {
        use crate::model::{Action, BaseChain, Chain, ChainType, Hook, Rule, priority};
        let save_v4 = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n\
             :KUBE-SERVICES - [0:0]\n:KUBE-POSTROUTING - [0:0]\n\
             -A PREROUTING -j KUBE-SERVICES\n-A POSTROUTING -j KUBE-POSTROUTING\n\
             -A KUBE-SERVICES -d 192.0.2.1/32 -j RETURN\n\
             -A KUBE-POSTROUTING -j RETURN\nCOMMIT\n";
        let restores = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let mut b = IptablesBackend::with_exec(
            Flavour::Nft,
            Box::new(Recorder {
                save_v4: save_v4.into(),
                restores: restores.clone(),
            }),
        )
        .unwrap();
        let rs = Ruleset {
            table: "kube".into(),
            comment: "managed by nftkit masquerade".into(),
            sets: vec![],
            chains: vec![Chain {
                name: "nat-postrouting".into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Postrouting,
                    priority: priority::SRCNAT,
                }),
                rules: vec![Rule {
                    matches: vec![crate::model::Match::NfProto(crate::model::IpFamily::V4)],
                    action: Action::Masquerade {
                        fully_random: false,
                    },
                }],
            }],
        };
        let msg = b.apply(&rs).unwrap_err().to_string();
        assert!(
            msg.contains("chain KUBE-POSTROUTING in table nat (iptables)")
                && msg.contains("iptables-nft")
                && msg.contains("--force")
                && !msg.contains("KUBE-SERVICES"),
            "{msg}"
        );
        let msg = b.delete("kube").unwrap_err().to_string();
        assert!(
            msg.contains("chain KUBE-SERVICES in table nat") && msg.contains("--force"),
            "{msg}"
        );
        assert!(restores.borrow().is_empty(), "{:?}", restores.borrow());

        b.set_force(true);
        b.apply(&rs).unwrap();
        let input = restores.borrow()[0].clone();
        assert!(input.contains(":KUBE-POSTROUTING - [0:0]"), "{input}");
        assert!(
            input.contains("-D POSTROUTING -j KUBE-POSTROUTING"),
            "{input}"
        );
        assert!(!input.contains("KUBE-SERVICES"), "{input}");
    }

    #[test]
    fn failed_line_is_found() {
        assert_eq!(failed_line("iptables-restore: line 4 failed"), Some(4));
        assert_eq!(
            failed_line("line 17: RULE_INSERT failed (Invalid argument)"),
            Some(17)
        );
        assert_eq!(failed_line("no number"), None);
    }
}
