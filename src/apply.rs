//! Putting a desired table in place and checking it: one atomic apply read back (retried
//! when a concurrent replace wins the race), `verify`, and moving a job off the other
//! backends once its copy is in place. Shared by one-shot commands and the loops.

use crate::backend::{self, Backend};
use crate::error::{Error, Result};
use crate::model::Ruleset;

/// Applies (each a whole replace) before a table that keeps reading back differently is an
/// error. Another process replacing the same table between our commit and our read-back
/// (two nftkit runs racing, tests/netns/reliability_concurrency.rs) makes a committed batch read
/// back differently; re-applying ends the race with one whole table instead of a spurious
/// exit 1. A table that never reads back as applied still fails, after a few attempts.
const APPLY_ATTEMPTS: u32 = 5;

/// Apply `rs` and read it back: a table that does not read back as applied is an error.
pub fn apply_and_check(backend: &mut dyn Backend, rs: &Ruleset) -> Result<()> {
    backend::validated(rs)?;
    commit_and_check(backend, rs)
}

/// [`apply_and_check`] after validation.
fn commit_and_check(backend: &mut dyn Backend, rs: &Ruleset) -> Result<()> {
    let mut attempt = 1;
    let elapsed = loop {
        let started = std::time::Instant::now();
        backend.apply(rs)?;
        let elapsed = started.elapsed();
        // Another process may replace the table between our commit and the read-back: a
        // set vanishing mid-read (ENOENT) is that race too, so it is retried like a diff.
        let diff = match backend.check_applied(rs) {
            Ok(diff) => diff,
            Err(e) if attempt < APPLY_ATTEMPTS => vec![format!("read-back failed: {e}")],
            Err(e) => return Err(e),
        };
        if diff.is_empty() {
            break elapsed;
        }
        if attempt >= APPLY_ATTEMPTS {
            return Err(Error::runtime(format!(
                "table inet {} was committed but reads back differently (after {attempt} attempts): {}",
                rs.table,
                diff.join("; ")
            )));
        }
        tracing::warn!(table = %rs.table, attempt, "committed table reads back differently (replaced concurrently?); applying again");
        // Jitter, so two racing processes fall out of step.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        std::thread::sleep(std::time::Duration::from_micros(
            u64::from((nanos ^ std::process::id()) % 20_000) * u64::from(attempt),
        ));
        attempt += 1;
    };
    tracing::info!(
        backend = backend.name(),
        table = %rs.table,
        rules = rs.rule_count(),
        sets = rs.sets.len(),
        elapsed_us = elapsed.as_micros() as u64,
        "applied"
    );
    Ok(())
}

/// What [`apply_unless_equal`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The kernel already held exactly `rs`, owned by us: nothing was sent.
    Unchanged,
    /// The table was replaced (one atomic batch) and read back.
    Applied,
}

/// [`apply_and_check`], unless the kernel already holds exactly `rs`: a re-run with an
/// unchanged config then sends nothing (no ruleset events, no generation bump, counters
/// kept). The comparison is the full one `verify` makes, ownership comment included, so a
/// table that differs in anything, lost its comment or is someone else's of our name is
/// applied (or refused) as before. A read-back that fails falls back to the apply.
pub fn apply_unless_equal(backend: &mut dyn Backend, rs: &Ruleset) -> Result<Outcome> {
    backend::validated(rs)?;
    match backend.compare_before_apply(rs) {
        Ok(c) if c.in_place() => {
            tracing::info!(backend = backend.name(), table = %rs.table, "unchanged, nothing sent");
            return Ok(Outcome::Unchanged);
        }
        Ok(_) => {}
        // Nothing this backend can write: applying would only fail the same way.
        Err(e @ Error::Unsupported { .. }) => return Err(e),
        Err(e) => {
            tracing::debug!(table = %rs.table, error = %e, "read-back before apply failed; applying")
        }
    }
    commit_and_check(backend, rs).map(|()| Outcome::Applied)
}

/// A run's first apply: [`apply_unless_equal`], except for tables tied to this process
/// (`process_owned`, a daemon with `--persist=false`), which must always be replaced so
/// the kernel's owner flag names this process.
pub fn first_apply(
    backend: &mut dyn Backend,
    rs: &Ruleset,
    process_owned: bool,
) -> Result<Outcome> {
    if process_owned {
        apply_and_check(backend, rs).map(|()| Outcome::Applied)
    } else {
        apply_unless_equal(backend, rs)
    }
}

/// A one-shot command's whole apply: [`apply_unless_equal`], then the job's copy leaves
/// every other backend.
pub fn one_shot(backend: &mut dyn Backend, rs: &Ruleset) -> Result<()> {
    apply_unless_equal(backend, rs)?;
    remove_from_other_backends(backend, &rs.table);
    Ok(())
}

/// One job lives on one backend (CONTRACT.md "Ownership"): after `table` was applied on
/// `active`, remove that job's owned state (same table name / chain prefix) from every
/// other usable backend, so a host never keeps two copies. Call it after the first
/// successful apply of a run, never before (a failed apply must leave the old copy in
/// place). Only what is provably ours there is removed; anything else is left and
/// logged. Best effort: the apply succeeded, so a failure here is a warning, not an error.
/// Returns the backends the copy was removed from.
pub fn remove_from_other_backends(active: &dyn Backend, table: &str) -> Vec<&'static str> {
    let mut removed = Vec::new();
    for mut other in active.other_backends() {
        let name = other.name();
        let ours = match other.read_back(table) {
            Ok(snap) => snap.is_some_and(|s| backend::is_owned_comment(s.comment.as_deref())),
            Err(e) => {
                tracing::debug!(backend = name, table, error = %e, "cannot read; not consulted");
                false
            }
        };
        if !ours {
            continue;
        }
        match other.delete(table) {
            Ok(true) => {
                tracing::info!(
                    backend = name,
                    table,
                    active = active.name(),
                    "removed this job's copy from another backend"
                );
                removed.push(name);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                backend = name,
                table,
                error = %e,
                "could not remove this job's copy from another backend"
            ),
        }
    }
    removed
}

/// Compare the kernel with `rs`: Ok if equal, Error::Drift with the diff otherwise.
pub fn verify(backend: &mut dyn Backend, rs: &Ruleset) -> Result<()> {
    let diff = drift(backend, rs)?;
    if diff.is_empty() {
        Ok(())
    } else {
        Err(Error::Drift {
            table: rs.table.clone(),
            diff: diff.join("\n"),
        })
    }
}

/// What differs between the kernel and `rs` (empty: nothing); Err(Unsupported) when the
/// backend cannot express `rs` at all.
pub fn drift(backend: &mut dyn Backend, rs: &Ruleset) -> Result<Vec<String>> {
    Ok(backend.compare(rs)?.diff)
}
