//! The reconcile loop shared by the long-running commands (masquerade, local-address,
//! dnat, netpol).
//!
//! Every interval: rebuild the desired table from config (a bad config keeps the last good
//! one and marks the daemon not ready), repair non-table state the job owns (addresses),
//! read the kernel back and compare. Equal: nothing is sent (a no-op resync is read-only).
//! Different (config changed, or someone edited or deleted the table): log the drift and
//! re-apply atomically. SIGTERM/SIGINT end the loop after the current step.
//!
//! Readiness follows the kernel, not just the config ([`LoopStats::is_ready`]): a daemon
//! is not ready while its last [`NOT_READY_AFTER_FAILURES`] apply or verify attempts all
//! failed, or while the kernel's table of our name is not ours. Each pass is published to
//! the metrics state ([`crate::metrics::publish`]), which is also the tick `/healthz`
//! watches.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::apply;
use crate::backend::{Backend, Lifetime};
use crate::error::Result;
use crate::model::Ruleset;
pub use crate::stats::LoopStats;

/// What a long-running command plugs into the loop.
pub trait LoopJob {
    /// Re-read configuration and build the desired table. Called at start and every interval.
    fn desired(&mut self) -> Result<Ruleset>;
    /// Repair state outside the table (an address on an interface) and look around
    /// (read-only, through the loop's `backend`). Called before each table check;
    /// default: nothing.
    fn repair(&mut self, _backend: &mut dyn Backend) -> Result<()> {
        Ok(())
    }
}

pub struct LoopOptions {
    pub interval: Duration,
    /// Stop after the first successful apply (`--once`, `--daemon=false`).
    pub once: bool,
    /// The table outlives the process (`--persist`, the default). A daemon with
    /// `--persist=false` ties its tables to itself (the kernel's owner flag), so its first
    /// apply always replaces the table, even an equal one left by an earlier run.
    pub persist: bool,
}

impl LoopOptions {
    /// How long the tables applied by this run live: the backend the loop is given must be
    /// opened with this.
    pub fn lifetime(&self) -> Lifetime {
        if !self.once && !self.persist {
            Lifetime::Process
        } else {
            Lifetime::Persist
        }
    }

    fn process_owned(&self) -> bool {
        self.lifetime() == Lifetime::Process
    }
}

/// SIGTERM / SIGINT set this flag; the loop checks it between steps.
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| {
            crate::error::Error::runtime(format!("cannot handle signal {sig}: {e}"))
        })?;
    }
    Ok(stop)
}

/// Run `job` until `stop` is set (or once). The first build and apply must succeed:
/// a bad config at start is an error (exit 2), as is a refused first apply (exit 1).
pub fn run(
    backend: &mut dyn Backend,
    job: &mut dyn LoopJob,
    opts: &LoopOptions,
    stop: &AtomicBool,
) -> Result<LoopStats> {
    let good = job.desired()?;
    // Health endpoints come up before the first apply: /healthz answers, /readyz says 503.
    let published = if opts.once {
        crate::metrics::Shared::default()
    } else {
        crate::metrics::start(opts.interval)?
    };
    run_published(backend, job, opts, stop, good, &published)
}

/// [`run`] after the first build, publishing to `published` after every pass (which is
/// also the tick `/healthz` watches).
pub fn run_published(
    backend: &mut dyn Backend,
    job: &mut dyn LoopJob,
    opts: &LoopOptions,
    stop: &AtomicBool,
    mut good: Ruleset,
    published: &crate::metrics::Shared,
) -> Result<LoopStats> {
    let mut stats = LoopStats::default();
    let publish = |stats: &LoopStats, rs: &Ruleset| crate::metrics::publish(published, stats, rs);
    publish(&stats, &good);
    job.repair(backend)?;
    let started = Instant::now();
    // A re-run or a restarted daemon whose table is already in place sends nothing.
    let outcome = apply::first_apply(backend, &good, opts.process_owned())?;
    if outcome == apply::Outcome::Applied {
        stats.applies += 1;
        stats.last_apply = Some(started.elapsed());
    }
    stats.ready = true;
    stats.record_success();
    // One job lives on one backend: only now that this copy is in place, the job's copy
    // on another backend (an earlier run with another --backend) goes; then ready.
    apply::remove_from_other_backends(&*backend, &good.table);
    publish(&stats, &good);
    if opts.once {
        return Ok(stats);
    }
    tracing::info!(interval_s = opts.interval.as_secs_f64(), table = %good.table, "reconciling");
    let mut in_sync = None;
    while sleep_unless_stopped(opts.interval, stop) {
        step_cached(backend, job, &mut good, &mut stats, &mut in_sync);
        publish(&stats, &good);
    }
    tracing::info!(table = %good.table, "stopping on signal");
    Ok(stats)
}

/// The kernel's ruleset generation at which the table was last found equal to `ruleset`.
pub struct InSync {
    generation: u64,
    ruleset: Ruleset,
}

/// One reconcile pass; errors are logged and counted, never fatal.
pub fn step(
    backend: &mut dyn Backend,
    job: &mut dyn LoopJob,
    good: &mut Ruleset,
    stats: &mut LoopStats,
) {
    step_cached(backend, job, good, stats, &mut None)
}

/// [`step`], skipping the read-back and compare when neither side changed since the last
/// pass found them equal: the same desired table, and the same kernel ruleset generation
/// (every commit in the network namespace, by anyone, bumps it).
pub fn step_cached(
    backend: &mut dyn Backend,
    job: &mut dyn LoopJob,
    good: &mut Ruleset,
    stats: &mut LoopStats,
    in_sync: &mut Option<InSync>,
) {
    match job.desired() {
        Ok(rs) => {
            *good = rs;
            stats.ready = true;
        }
        Err(e) => {
            stats.errors += 1;
            stats.ready = false;
            tracing::error!(error = %e, "invalid configuration; keeping the last good rules");
        }
    }
    if let Err(e) = job.repair(backend) {
        stats.errors += 1;
        tracing::error!(error = %e, "repair failed");
    }
    let generation = backend.ruleset_generation();
    if let (Some(g), Some(last)) = (generation, in_sync.as_ref())
        && last.generation == g
        && last.ruleset == *good
    {
        tracing::debug!(table = %good.table, generation = g, "in sync; nothing sent");
        stats.record_success();
        return;
    }
    *in_sync = None;
    // A table of our name without our comment: the apply below is refused unless --force.
    let (foreign, diff) = match backend.compare(good) {
        Ok(c) => (c.foreign(), c.diff),
        Err(e) => {
            stats.errors += 1;
            stats.record_failure();
            tracing::error!(error = %e, failed_attempts = stats.failed_attempts, "read-back failed");
            return;
        }
    };
    if diff.is_empty() {
        tracing::debug!(table = %good.table, "in sync; nothing sent");
        stats.record_success();
        // Trusted next time only if nothing was committed while we read and compared.
        if let Some(g) = generation
            && backend.ruleset_generation() == Some(g)
        {
            *in_sync = Some(InSync {
                generation: g,
                ruleset: good.clone(),
            });
        }
        return;
    }
    tracing::warn!(table = %good.table, drift = %diff.join("; "), "kernel differs from desired state; re-applying");
    let started = Instant::now();
    match apply::apply_and_check(backend, good) {
        Ok(()) => {
            stats.applies += 1;
            stats.drift_repairs += 1;
            stats.last_apply = Some(started.elapsed());
            stats.record_success();
        }
        Err(e) => {
            stats.errors += 1;
            stats.record_failure();
            stats.table_not_ours = foreign;
            tracing::error!(error = %e, failed_attempts = stats.failed_attempts, "re-apply failed; will retry next interval");
        }
    }
}

/// Sleep `total` in short steps; false as soon as `stop` is set.
pub fn sleep_unless_stopped(total: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + total;
    while Instant::now() < deadline {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep((deadline - Instant::now()).min(Duration::from_millis(100)));
    }
    !stop.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fake::FakeBackend;
    use crate::error::Error;
    use crate::model::*;
    use crate::stats::NOT_READY_AFTER_FAILURES;
    use std::time::SystemTime;

    struct Scripted {
        configs: Vec<Result<Ruleset>>,
    }

    impl LoopJob for Scripted {
        fn desired(&mut self) -> Result<Ruleset> {
            if self.configs.len() > 1 {
                self.configs.remove(0)
            } else {
                clone_result(&self.configs[0])
            }
        }
    }

    /// The first apply, as `--once` does it.
    fn run_once(b: &mut dyn Backend, job: &mut dyn LoopJob) -> LoopStats {
        run(
            b,
            job,
            &LoopOptions {
                interval: Duration::ZERO,
                once: true,
                persist: true,
            },
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    fn clone_result(r: &Result<Ruleset>) -> Result<Ruleset> {
        match r {
            Ok(rs) => Ok(rs.clone()),
            Err(e) => Err(Error::invalid("config", "x", e.to_string())),
        }
    }

    fn table(port: u16) -> Ruleset {
        Ruleset {
            table: "nftkit-test".into(),
            comment: "managed by nftkit test".into(),
            sets: vec![],
            maps: Vec::new(),
            chains: vec![Chain {
                name: "c".into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Output,
                    priority: priority::DSTNAT,
                }),
                rules: vec![Rule {
                    matches: vec![Match::Dport {
                        proto: L4Proto::Tcp,
                        port,
                    }],
                    action: Action::Redirect { port: 1 },
                }],
            }],
        }
    }

    #[test]
    fn in_sync_sends_nothing_and_drift_is_repaired() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let stats = run_once(&mut b, &mut job);
        assert_eq!((stats.applies, b.applies), (1, 1));
        let mut good = table(80);
        let mut stats = LoopStats::default();
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!(b.applies, 1, "no-op resync must not apply");
        b.flush_chain("nftkit-test", "c");
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!((b.applies, stats.drift_repairs), (2, 1));
        b.tables.clear();
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!(b.applies, 3, "deleted table re-created");
    }

    #[test]
    fn unchanged_kernel_and_config_skip_the_read_back_until_something_changes() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let mut good = table(80);
        let mut stats = LoopStats::default();
        let mut in_sync = None;
        crate::apply::apply_and_check(&mut b, &good).unwrap();
        let reads = b.read_backs;
        step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
        assert_eq!(b.read_backs, reads + 1, "first pass reads back");
        step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
        step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
        assert_eq!(b.read_backs, reads + 1, "nothing changed: no read-back");
        // A hand edit changes the generation: read back, drift repaired (and the repair's
        // own check reads back once more).
        b.flush_chain("nftkit-test", "c");
        step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
        assert_eq!(
            (b.read_backs, b.applies, stats.drift_repairs),
            (reads + 3, 2, 1)
        );
        // A new desired table (config change) is compared even with the kernel unchanged.
        step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
        let reads = b.read_backs;
        job.configs = vec![Ok(table(443))];
        step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
        assert_eq!(
            (b.read_backs, b.applies),
            (reads + 2, 3),
            "read, applied, checked"
        );
    }

    #[test]
    fn bad_config_later_keeps_last_good_rules_and_marks_not_ready() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![
                Ok(table(80)),
                Err(Error::Usage("bad".into())),
                Ok(table(443)),
            ],
        };
        let mut stats = run_once(&mut b, &mut job);
        let mut good = table(80);
        step(&mut b, &mut job, &mut good, &mut stats);
        assert!(!stats.ready);
        assert_eq!((b.applies, stats.errors), (1, 1));
        step(&mut b, &mut job, &mut good, &mut stats);
        assert!(stats.ready);
        assert_eq!(b.applies, 2, "changed config applied");
        assert_eq!(good, table(443));
    }

    #[test]
    fn bad_config_at_start_is_exit_2_and_touches_nothing() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Err(Error::Usage("bad".into()))],
        };
        let e = run(
            &mut b,
            &mut job,
            &LoopOptions {
                interval: Duration::ZERO,
                once: false,
                persist: true,
            },
            &AtomicBool::new(false),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(b.applies, 0);
    }

    #[test]
    fn failed_reapply_is_retried() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let mut stats = run_once(&mut b, &mut job);
        let mut good = table(80);
        b.tables.clear();
        b.fail_next = Some("EBUSY".into());
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!((b.applies, stats.errors), (1, 1));
        step(&mut b, &mut job, &mut good, &mut stats);
        assert_eq!(b.applies, 2);
    }

    #[test]
    fn stop_flag_ends_the_loop() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let stop = AtomicBool::new(true);
        let stats = run(
            &mut b,
            &mut job,
            &LoopOptions {
                interval: Duration::from_secs(3600),
                once: false,
                persist: true,
            },
            &stop,
        )
        .unwrap();
        assert_eq!(stats.applies, 1);
    }

    /// The loop after a successful first apply of `table(80)`.
    fn started(b: &mut FakeBackend, job: &mut Scripted) -> LoopStats {
        run(
            b,
            job,
            &LoopOptions {
                interval: Duration::ZERO,
                once: true,
                persist: true,
            },
            &AtomicBool::new(false),
        )
        .unwrap()
    }

    #[test]
    fn first_apply_is_ready_and_stamps_the_last_success() {
        let mut b = FakeBackend::new();
        let before = SystemTime::now();
        let stats = started(
            &mut b,
            &mut Scripted {
                configs: vec![Ok(table(80))],
            },
        );
        assert!(stats.is_ready());
        assert!(stats.last_success.unwrap() >= before);
    }

    #[test]
    fn not_ready_after_3_failed_applies_in_a_row_and_ready_after_the_next_success() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let mut stats = started(&mut b, &mut job);
        let mut good = table(80);
        let first_success = stats.last_success;
        for failed in 1..=NOT_READY_AFTER_FAILURES {
            assert!(stats.is_ready(), "ready after {} failures", failed - 1);
            b.tables.clear();
            b.fail_next = Some("EBUSY".into());
            step(&mut b, &mut job, &mut good, &mut stats);
            assert_eq!(stats.failed_attempts, failed);
        }
        assert!(!stats.is_ready(), "still ready after 3 failed applies");
        assert!(stats.ready, "the config side is fine");
        assert_eq!(stats.last_success, first_success, "no success since");
        assert_eq!(
            stats.not_ready_reason().unwrap(),
            "the last 3 apply or verify attempts failed"
        );
        std::thread::sleep(Duration::from_millis(2));
        step(&mut b, &mut job, &mut good, &mut stats);
        assert!(stats.is_ready());
        assert_eq!((stats.failed_attempts, b.applies), (0, 2));
        assert!(stats.last_success > first_success);
    }

    #[test]
    fn a_foreign_table_of_our_name_is_not_ready_at_once_until_it_is_gone() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let mut stats = started(&mut b, &mut job);
        let mut good = table(80);
        b.tables.clear();
        b.insert_foreign("nftkit-test");
        step(&mut b, &mut job, &mut good, &mut stats);
        assert!(stats.table_not_ours && !stats.is_ready());
        assert_eq!(stats.failed_attempts, 1, "the refused apply counts too");
        assert!(
            stats
                .not_ready_reason()
                .unwrap()
                .contains("not managed by nftkit"),
            "{:?}",
            stats.not_ready_reason()
        );
        b.tables.clear();
        step(&mut b, &mut job, &mut good, &mut stats);
        assert!(stats.is_ready() && !stats.table_not_ours);
    }

    #[test]
    fn in_sync_checks_stamp_the_last_success() {
        let mut b = FakeBackend::new();
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let mut stats = started(&mut b, &mut job);
        let mut good = table(80);
        let mut in_sync = None;
        let mut last = stats.last_success;
        // The first pass reads back, the next ones trust the generation: both stamp.
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(2));
            step_cached(&mut b, &mut job, &mut good, &mut stats, &mut in_sync);
            assert!(stats.last_success > last);
            last = stats.last_success;
        }
        assert_eq!(b.applies, 1);
    }

    /// A fake whose read-backs fail while `failing` is set.
    struct FailingReads {
        inner: FakeBackend,
        failing: bool,
    }

    impl Backend for FailingReads {
        fn name(&self) -> &'static str {
            "failing-reads"
        }
        fn apply(&mut self, rs: &Ruleset) -> Result<()> {
            self.inner.apply(rs)
        }
        fn compare(&mut self, rs: &Ruleset) -> Result<crate::backend::Comparison> {
            let observed = self.read_back(&rs.table)?;
            let expected = self.inner.expected(rs);
            Ok(crate::backend::compare_snapshots(
                &expected,
                observed.as_ref(),
            ))
        }
        fn read_back(&mut self, table: &str) -> Result<Option<crate::snapshot::Snapshot>> {
            if self.failing {
                return Err(Error::runtime("dump interrupted"));
            }
            self.inner.read_back(table)
        }
        fn delete(&mut self, table: &str) -> Result<bool> {
            self.inner.delete(table)
        }
    }

    impl crate::backend::Inspect for FailingReads {
        fn list_owned(&mut self) -> Result<Vec<crate::backend::OwnedTable>> {
            self.inner.list_owned()
        }
    }

    #[test]
    fn failed_verifies_count_like_failed_applies() {
        let mut b = FailingReads {
            inner: FakeBackend::new(),
            failing: false,
        };
        let mut job = Scripted {
            configs: vec![Ok(table(80))],
        };
        let mut stats = run_once(&mut b, &mut job);
        let mut good = table(80);
        b.failing = true;
        for _ in 0..NOT_READY_AFTER_FAILURES {
            assert!(stats.is_ready());
            step(&mut b, &mut job, &mut good, &mut stats);
        }
        assert!(!stats.is_ready());
        assert_eq!(stats.errors, u64::from(NOT_READY_AFTER_FAILURES));
        b.failing = false;
        step(&mut b, &mut job, &mut good, &mut stats);
        assert!(stats.is_ready());
    }

    /// Stops the loop at its `passes`-th build, noting when.
    struct Counting {
        builds: u32,
        passes: u32,
        stop: Arc<AtomicBool>,
        last_pass: Option<Instant>,
    }

    impl LoopJob for Counting {
        fn desired(&mut self) -> Result<Ruleset> {
            self.builds += 1;
            if self.builds > self.passes {
                self.stop.store(true, Ordering::Relaxed);
            }
            self.last_pass = Some(Instant::now());
            Ok(table(80))
        }
    }

    #[test]
    fn every_pass_ticks_the_published_state_with_the_loop_interval() {
        let mut b = FakeBackend::new();
        let stop = Arc::new(AtomicBool::new(false));
        let mut job = Counting {
            builds: 0,
            passes: 3,
            stop: stop.clone(),
            last_pass: None,
        };
        let published = crate::metrics::Shared::default();
        let opts = LoopOptions {
            interval: Duration::from_millis(10),
            once: false,
            persist: true,
        };
        crate::metrics::set_interval(&published, opts.interval);
        let first = job.desired().unwrap();
        let stats = run_published(&mut b, &mut job, &opts, &stop, first, &published).unwrap();
        let state = published.lock().unwrap().clone();
        assert_eq!(job.builds, 4, "three passes after the first build");
        assert!(
            state.last_tick.unwrap() >= job.last_pass.unwrap(),
            "the last pass did not tick"
        );
        assert_eq!(state.interval, Some(Duration::from_millis(10)));
        assert_eq!(state.stats, stats);
    }
}
