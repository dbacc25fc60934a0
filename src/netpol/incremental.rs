//! Live mode's update of the kernel from the last applied table to the next one: set
//! elements only when nothing else changed and the kernel is known to hold exactly the
//! last table (pod churn is cheap), otherwise the whole-table replacement.
//!
//! "Known to hold": the ruleset generation read right after our last successful apply,
//! element update or resync is still the kernel's (every commit in the network
//! namespace, by anyone, bumps it), and the element batch itself is bound to that
//! generation, so a commit in between makes the kernel refuse it (no read-back needed).
//! Any refusal or error falls back to the replacement, which repairs whatever happened.

use crate::apply;
use crate::backend::{self, Backend};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::model::delta::element_delta;

/// How the kernel was brought to the desired table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The whole table (or nothing, when it was already in place: `Unchanged`).
    Replaced(apply::Outcome),
    /// Set elements removed and added in one batch; chains, rules and named counters
    /// untouched.
    Elements {
        removed: usize,
        added: usize,
        /// The generation our batch committed (the one it was bound to, plus one).
        generation: u64,
    },
}

/// Bring the kernel from `last` (None: nothing applied by this run yet) to `rs`; `known`
/// is the ruleset generation at which the kernel held `last`. `process_owned`: a first
/// apply always replaces (the table's owner flag must name this process).
pub fn update(
    b: &mut dyn Backend,
    last: Option<&Ruleset>,
    known: Option<u64>,
    rs: &Ruleset,
    process_owned: bool,
) -> Result<Path> {
    let Some(last) = last else {
        return apply::first_apply(b, rs, process_owned).map(Path::Replaced);
    };
    if let Some(path) = elements_only(b, last, known, rs) {
        return Ok(path);
    }
    apply::apply_and_check(b, rs).map(|()| Path::Replaced(apply::Outcome::Applied))
}

/// The element-only update, or None when it does not apply or did not work (the caller
/// replaces the table).
fn elements_only(
    b: &mut dyn Backend,
    last: &Ruleset,
    known: Option<u64>,
    rs: &Ruleset,
) -> Option<Path> {
    let Some(mut delta) = element_delta(last, rs) else {
        tracing::debug!(table = %rs.table, "more than set elements changed");
        return None;
    };
    let Some(g) = known else {
        tracing::debug!(table = %rs.table, "kernel state since the last apply unknown");
        return None;
    };
    let now = b.ruleset_generation();
    if now != Some(g) {
        tracing::info!(
            table = %rs.table,
            known = g,
            now = ?now,
            "ruleset changed since the last apply (generation); replacing the whole table"
        );
        return None;
    }
    backend::validated(rs).ok()?;
    delta.expect_generation = Some(g);
    match b.apply_delta(rs, &delta) {
        Ok(()) => {}
        Err(e @ Error::Unsupported { .. }) => {
            tracing::debug!(table = %rs.table, error = %e, "no element-only update");
            return None;
        }
        Err(e) => {
            tracing::warn!(table = %rs.table, error = %e, "element-only update failed; replacing the whole table");
            return None;
        }
    }
    // No read-back: the batch was bound to generation `g`, at which the kernel held
    // `last` (checked when it was applied), so the kernel committed exactly `last` plus
    // this delta, or refused. Whatever anyone commits afterwards, the resync finds.
    Some(Path::Elements {
        removed: delta.removed(),
        added: delta.added(),
        generation: g.wrapping_add(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeBackend;
    use crate::model::Action;
    use crate::model::fixtures::{regular, rule, v4set};

    /// Live mode's table with one set of `peers` and one chain.
    fn rs(peers: &[&str]) -> Ruleset {
        Ruleset {
            table: "nftkit-netpol".into(),
            ..crate::model::fixtures::rs(
                vec![v4set("peers", true, peers)],
                vec![regular("c", vec![rule(vec![], Action::Drop)])],
            )
        }
    }

    #[test]
    fn element_changes_go_as_a_delta_while_the_kernel_holds_the_last_table() {
        let mut b = FakeBackend::new();
        let a = rs(&["10.0.0.0/24"]);
        let path = update(&mut b, None, None, &a, false).unwrap();
        assert_eq!(path, Path::Replaced(apply::Outcome::Applied));
        let g = b.ruleset_generation();

        let next = rs(&["10.0.0.0/24", "10.1.0.0/16"]);
        let path = update(&mut b, Some(&a), g, &next, false).unwrap();
        assert_eq!(
            path,
            Path::Elements {
                removed: 0,
                added: 1,
                generation: g.unwrap() + 1
            }
        );
        assert_eq!((b.applies, b.deltas), (1, 1));
        assert!(b.compare(&next).unwrap().in_place());
        let g = b.ruleset_generation();

        // Someone changed the kernel since: the whole table, which repairs it.
        b.flush_chain("nftkit-netpol", "c");
        let third = rs(&["10.1.0.0/16"]);
        let path = update(&mut b, Some(&next), g, &third, false).unwrap();
        assert_eq!(path, Path::Replaced(apply::Outcome::Applied));
        assert_eq!((b.applies, b.deltas), (2, 1));
        assert!(b.compare(&third).unwrap().in_place());

        // Unknown generation: the whole table.
        let fourth = rs(&["10.2.0.0/16"]);
        update(&mut b, Some(&third), None, &fourth, false).unwrap();
        assert_eq!((b.applies, b.deltas), (3, 1));
    }

    #[test]
    fn structure_changes_and_refused_deltas_replace_the_whole_table() {
        let mut b = FakeBackend::new();
        let a = rs(&["10.0.0.0/24"]);
        update(&mut b, None, None, &a, false).unwrap();
        let g = b.ruleset_generation();
        let mut other = rs(&["10.0.0.0/24"]);
        other.chains[0].rules[0].action = Action::Accept;
        let path = update(&mut b, Some(&a), g, &other, false).unwrap();
        assert_eq!(path, Path::Replaced(apply::Outcome::Applied));
        assert_eq!((b.applies, b.deltas), (2, 0));

        // The kernel lost an element we would remove: the delta is refused, the table
        // replaced.
        let g = b.ruleset_generation();
        let wrong_last = rs(&["10.0.0.0/24", "10.9.0.0/16"]);
        let mut wrong_last_other = wrong_last.clone();
        wrong_last_other.chains = other.chains.clone();
        let mut next = rs(&["10.0.0.0/24"]);
        next.chains = other.chains.clone();
        let path = update(&mut b, Some(&wrong_last_other), g, &next, false).unwrap();
        assert_eq!(path, Path::Replaced(apply::Outcome::Applied));
        assert_eq!((b.applies, b.deltas), (3, 0));
        assert!(b.compare(&next).unwrap().in_place());

        // A delta the backend fails: the replacement goes through.
        let g = b.ruleset_generation();
        let mut after = rs(&["10.3.0.0/16"]);
        after.chains = other.chains.clone();
        b.fail_next = Some("boom".into());
        let path = update(&mut b, Some(&next), g, &after, false).unwrap();
        assert_eq!(path, Path::Replaced(apply::Outcome::Applied));
        assert_eq!((b.applies, b.deltas), (4, 0));
        assert!(b.compare(&after).unwrap().in_place());
    }
}
