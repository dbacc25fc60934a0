//! Live mode of `nftkit netpol`: watch pods, namespaces and NetworkPolicies on the API
//! server (kube-rs watchers) and keep the table in step.
//!
//! ```text
//!  watcher thread (tokio)                         main thread (the backend's own runtime)
//!  watcher(Pod) ────────┐                         wait for the first complete list of all
//!  watcher(Namespace) ──┼─> Objects (converted) ─> three kinds, apply; then on changes:
//!  watcher(NetworkPolicy)┘   + Note::Changed       debounce, rebuild, compare with the last
//!                                                  applied Ruleset, apply if different;
//!                                                  every --resync-interval: read back and
//!                                                  re-apply on drift (runner::step)
//! ```
//!
//! Objects are converted when they arrive, through the same `manifest` functions the
//! `--from-file` mode uses (k8s-openapi object -> JSON -> `manifest::pod` / `policy` /
//! `meta`), so both sources share one validation and one set of semantics. Status-only
//! pod updates convert to an equal object and cause no rebuild at all.
//!
//! Never a partial view (CONTRACT.md `netpol`):
//! - An object the converter refuses (the API server validated it, so this is rare) is
//!   not skipped — skipping a policy would leave the pods it isolates open. While any
//!   object is refused, every update is refused: the last good table stays in force, the
//!   daemon reports not ready, `nftkit_netpol_unconvertible_objects` counts the objects,
//!   and the log names each one (kind, namespace/name, field, value). Fixing or deleting
//!   the object lets the next update through.
//! - Nothing is applied before pods, namespaces and networkpolicies have each been listed
//!   completely; until then an existing table (a previous run's, kept because tables
//!   persist by default) stays exactly as it is. The first apply replaces it in one batch.
//! - The API server unreachable, at start or later, is retried for ever (0.8 s doubling
//!   to 30 s, with jitter); the daemon never exits for it. After `--sync-timeout`
//!   without a complete first list, or with a kind's watch failing for that long, it
//!   logs an error (again every `--sync-timeout`), counts it in `nftkit_errors_total`
//!   and reports not ready; the table stays. A watch counts as failing from its first
//!   error until data arrives again or no error came for 90 s. An expired resourceVersion (410 Gone) makes
//!   the watcher re-list, and the re-listed objects replace the old ones atomically
//!   (`Event::InitDone`).
//!
//! Every update is one atomic batch (CONTRACT.md "Ownership and atomicity"). When the new
//! table differs from the last applied one only in set elements (a pod on another node
//! added, deleted or relabelled, a namespace relabelled) and the kernel is known to hold
//! the last one, the batch removes and adds just those elements (`incremental`): chains,
//! rules and the per-policy counters stay. Anything else replaces the whole table, whose
//! batch is as large as the table (see tests/netns/netpol_live.rs for the measured size).
//!
//! The pieces: `watch` (kubeconfig, API client, the watcher thread and its backoff),
//! `store` (the converted objects, list/watch state, refused objects) and this file
//! (the options and the loop: debounce, apply, retry, resync, readiness).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::build::{NetpolConfig, Observe, build_observed};
use super::counters::Totals;
use super::incremental::{self, Path};
use super::manifest::Cluster;
use super::store::{Note, lock};
use super::verdicts;
use crate::apply;
use crate::backend::{Backend, Lifetime};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::runner::{self, LoopJob, LoopStats};

pub use super::store::Objects;
pub use super::watch::{KubeSource, Watch, read_kubeconfig};

/// Validated options of live mode.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub node: String,
    pub kube: KubeSource,
    /// Quiet time after the last change of a burst before the table is rebuilt.
    pub debounce: Duration,
    /// How often the kernel is read back and compared (drift check).
    pub resync: Duration,
    /// How long the API server may be unreachable (no complete first list, or a failing
    /// watch) before the daemon logs errors and reports not ready; `--dry-run` and
    /// `verify` give up after it (exit 1).
    pub sync_timeout: Duration,
    /// Keep the table when the process dies (no table owner flag); the default.
    pub persist: bool,
    /// Verdict logs and audit mode.
    pub observe: Observe,
    /// `--from-file F --watch`: the objects come from F, re-read when it changes, not
    /// from the API server.
    pub file: Option<FileSource>,
}

/// A manifest file watched for changes, and how to read it.
#[derive(Debug, Clone)]
pub struct FileSource {
    pub path: std::path::PathBuf,
    pub read: fn(&std::path::Path) -> Result<Cluster>,
}

impl LiveConfig {
    /// A burst of changes is applied at the latest this long after its first change, so a
    /// steady stream of events still updates the table.
    pub fn max_delay(&self) -> Duration {
        (self.debounce * 10).max(Duration::from_secs(1))
    }
}

/// List once and return the cluster (`--dry-run` and `verify` without `--from-file`).
pub fn fetch_once(cfg: &LiveConfig) -> Result<Cluster> {
    if let Some(f) = &cfg.file {
        return (f.read)(&f.path);
    }
    let watch = Watch::start(&cfg.kube, cfg.resync)?;
    watch.wait_synced(cfg.sync_timeout)?;
    watch.cluster()
}

/// The desired table from the current objects.
struct LiveJob<'a> {
    watch: &'a Watch,
    node: String,
    table: String,
    observe: Observe,
}

impl LiveJob<'_> {
    /// The desired table and the objects it was built from, or why none may be built now
    /// (incomplete or refused objects).
    fn build(&self) -> Result<(Ruleset, Cluster)> {
        let cfg = NetpolConfig {
            node: self.node.clone(),
            cluster: self.watch.cluster()?,
        };
        let (rs, s) = build_observed(&cfg, &self.table, &self.observe);
        tracing::debug!(
            pods = cfg.cluster.pods.len(),
            local_pods = s.local_pods,
            policies = cfg.cluster.policies.len(),
            policies_selecting = s.policies,
            cluster_policies = s.cluster_policies,
            ingress_isolated = s.ingress_isolated,
            egress_isolated = s.egress_isolated,
            "netpol desired state"
        );
        Ok((rs, cfg.cluster))
    }
}

impl LoopJob for LiveJob<'_> {
    fn desired(&mut self) -> Result<Ruleset> {
        self.build().map(|(rs, _)| rs)
    }
}

/// Each pod address and its `namespace/name`, for verdict events.
fn pod_names(cluster: &Cluster) -> HashMap<IpAddr, String> {
    cluster
        .pods
        .iter()
        .flat_map(|p| {
            p.ips
                .iter()
                .map(|ip| (*ip, format!("{}/{}", p.namespace, p.name)))
        })
        .collect()
}

/// Whether the table has a log rule (someone must read its nflog group).
fn logs(rs: &Ruleset) -> bool {
    rs.chains
        .iter()
        .flat_map(|c| &c.rules)
        .flat_map(|r| &r.matches)
        .any(|m| matches!(m, crate::model::Match::Log { .. }))
}

/// Set elements and verdict map entries in `rs` (for the log: the batch carries all of
/// them).
pub fn element_count(rs: &Ruleset) -> usize {
    rs.sets.iter().map(|s| s.elements.len()).sum::<usize>()
        + rs.maps.iter().map(|m| m.entries.len()).sum::<usize>()
}

/// Bytes of each logged packet copied to us: an IPv6 header and a transport header's ports.
const NFLOG_COPY_RANGE: u32 = 64;

/// How often the per-policy counters are read for `/metrics`.
const COUNTERS_EVERY: Duration = Duration::from_secs(1);

/// netpol's own lines on `/metrics`.
fn extra_metrics(table: &str, unconvertible: usize) -> String {
    format!(
        "# HELP nftkit_netpol_unconvertible_objects Cluster objects nftkit cannot convert; while above 0 no update is applied and the last good rules stay.\n\
         # TYPE nftkit_netpol_unconvertible_objects gauge\n\
         nftkit_netpol_unconvertible_objects{{table=\"{table}\"}} {unconvertible}\n"
    )
}

/// Run live mode until SIGTERM/SIGINT (`stop`). Errors only for what cannot be retried
/// (no backend, no client, the metrics address taken); an unreachable API server or
/// unconvertible objects are retried for ever with the existing table left in force.
pub fn run(
    cfg: &LiveConfig,
    table: &str,
    backend_for: crate::backend::Opener,
    stop: &AtomicBool,
) -> Result<()> {
    tracing::info!(
        node = %cfg.node,
        debounce_ms = cfg.debounce.as_millis() as u64,
        resync_interval_s = cfg.resync.as_secs_f64(),
        sync_timeout_s = cfg.sync_timeout.as_secs_f64(),
        persist = cfg.persist,
        "netpol live mode"
    );
    let mut backend = backend_for(if cfg.persist {
        Lifetime::Persist
    } else {
        Lifetime::Process
    })?;
    let b = backend.as_mut();
    // /healthz answers from now on (stale after 3 resync intervals without a pass);
    // /readyz only after the first apply.
    let published = crate::metrics::start(cfg.resync)?;
    // Verdict logs: the kernel hands logged packets to the nflog group; we read them from
    // the first time our table has a log rule (--log-verdicts, --audit, or a policy
    // annotated for audit).
    let pods: Arc<Mutex<HashMap<IpAddr, String>>> = Arc::default();
    let mut reading_logs = false;
    let start_reader = |pods: &Arc<Mutex<HashMap<IpAddr, String>>>| {
        let pods = Arc::clone(pods);
        let bound =
            crate::backend::netlink::nflog::spawn(cfg.observe.group, NFLOG_COPY_RANGE, move |p| {
                verdicts::log(&p.prefix, &p.payload, &lock(&pods));
            });
        match bound {
            Ok(()) => tracing::info!(
                group = cfg.observe.group,
                verdicts = ?cfg.observe.verdicts,
                rate_per_s = cfg.observe.rate,
                audit = cfg.observe.audit,
                "logging verdicts"
            ),
            // The policies still apply; only their logs are missing.
            Err(e) => {
                tracing::error!(error = %e, "cannot read the nflog group; verdicts are not logged")
            }
        }
    };
    let watch = match &cfg.file {
        Some(f) => {
            tracing::info!(path = %f.path.display(), "watching the file");
            Watch::file(&f.path, f.read)?
        }
        None => Watch::start(&cfg.kube, cfg.resync)?,
    };
    let mut job = LiveJob {
        watch: &watch,
        node: cfg.node.clone(),
        table: table.to_string(),
        observe: cfg.observe,
    };
    let started = Instant::now();
    let mut stats = LoopStats::default();
    // The last table applied (or found equal at a resync); None until the first apply,
    // while an existing table stays untouched.
    let mut last: Option<Ruleset> = None;
    // The ruleset generation at which the kernel held `last` (read right after our apply,
    // element update or resync); None: unknown, the next update replaces the table.
    let mut known: Option<u64> = None;
    let placeholder = Ruleset {
        table: table.to_string(),
        comment: String::new(),
        sets: vec![],
        maps: Vec::new(),
        chains: vec![],
    };
    // (first change, latest change) of the burst being debounced; the first complete
    // list counts as a change.
    let mut burst: Option<(Instant, Instant)> = None;
    // A failed apply is retried at this time, with this backoff.
    let mut retry: Option<(Instant, Duration)> = None;
    // Why the last build was refused (logged once per reason).
    let mut refused: Option<String> = None;
    // The API server counted unreachable: logged again at this time.
    let mut unreachable_log: Option<Instant> = None;
    let mut next_resync = Instant::now() + cfg.resync;
    // Per-policy counts, read every COUNTERS_EVERY and right before each replacement.
    let mut counts = Totals::default();
    let mut next_count = Instant::now();
    let observe = |b: &mut dyn Backend, counts: &mut Totals| match b.counters(table) {
        Ok(now) => counts.observe(&now),
        Err(e) => tracing::debug!(error = %e, "cannot read the policy counters"),
    };
    while !stop.load(Ordering::Relaxed) {
        match watch.rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Note::Changed | Note::Synced) => {
                let now = Instant::now();
                burst = Some((burst.map_or(now, |b| b.0), now));
            }
            Ok(Note::Error) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::runtime("the API watch stopped unexpectedly"));
            }
        }
        let now = Instant::now();
        let (synced, unreachable, unconvertible) = {
            let o = lock(&watch.objects);
            (
                o.synced(),
                o.unreachable(started, now, cfg.sync_timeout),
                o.rejected().len(),
            )
        };
        match (&unreachable, unreachable_log) {
            (Some(why), at) if at.is_none_or(|at| now >= at) => {
                stats.errors += 1;
                tracing::error!(
                    table = %table,
                    table_applied = last.is_some(),
                    "API server unreachable: {why}; the existing table stays in force, retrying with backoff"
                );
                unreachable_log = Some(now + cfg.sync_timeout);
            }
            (None, Some(_)) => {
                tracing::info!("API server reachable again");
                unreachable_log = None;
            }
            _ => {}
        }
        let burst_due = synced
            && burst.is_some_and(|(first, latest)| {
                last.is_none() || now - latest >= cfg.debounce || now - first >= cfg.max_delay()
            });
        let retry_due = retry.is_some_and(|(at, _)| now >= at);
        if burst_due || retry_due {
            burst = None;
            match job.build() {
                Err(e) => {
                    retry = None;
                    let why = e.to_string();
                    if refused.as_deref() != Some(why.as_str()) {
                        stats.errors += 1;
                        tracing::error!(error = %why, "update refused; the last good rules stay in force");
                        refused = Some(why);
                    }
                }
                Ok((rs, cluster)) if Some(&rs) == last.as_ref() => {
                    if reading_logs {
                        *lock(&pods) = pod_names(&cluster);
                    }
                    retry = None;
                    refused = None;
                    tracing::info!(
                        table = %table,
                        "cluster change leaves the desired table unchanged; nothing sent"
                    );
                }
                Ok((rs, cluster)) => {
                    refused = None;
                    let t = Instant::now();
                    observe(b, &mut counts);
                    // A restarted daemon whose table is already in place sends nothing
                    // (not with --persist=false: its table must be tied to this process).
                    let result = incremental::update(b, last.as_ref(), known, &rs, !cfg.persist);
                    known = None;
                    match result {
                        Ok(path) => {
                            known = b.ruleset_generation();
                            // After an element batch the kernel holds `rs` only at the
                            // generation that batch committed: a later one is someone
                            // else's commit, so the next update compares first.
                            if let Path::Elements { generation, .. } = path
                                && known != Some(generation)
                            {
                                known = None;
                            }
                            match path {
                                Path::Replaced(apply::Outcome::Applied) => {
                                    stats.applies += 1;
                                    stats.last_apply = Some(t.elapsed());
                                    counts.replaced();
                                }
                                Path::Replaced(apply::Outcome::Unchanged) => {}
                                // Named counters survive element updates: no new baseline.
                                Path::Elements { .. } => {
                                    stats.applies += 1;
                                    stats.last_apply = Some(t.elapsed());
                                }
                            }
                            stats.record_success();
                            retry = None;
                            let reason = if last.is_none() {
                                "initial list"
                            } else {
                                "cluster change"
                            };
                            log_update(reason, &rs, path, t.elapsed());
                            if last.is_none() {
                                // One job, one backend: the copy elsewhere goes only now.
                                apply::remove_from_other_backends(&*b, &rs.table);
                            }
                            if !reading_logs && logs(&rs) {
                                start_reader(&pods);
                                reading_logs = true;
                            }
                            if reading_logs {
                                // The pods of the table now in force, for the log events.
                                *lock(&pods) = pod_names(&cluster);
                            }
                            last = Some(rs);
                        }
                        Err(e) => {
                            stats.errors += 1;
                            stats.record_failure();
                            let delay = retry.map_or(Duration::from_secs(1), |(_, d)| {
                                (d * 2).min(cfg.resync.max(Duration::from_secs(1)))
                            });
                            tracing::error!(error = %e, retry_in_s = delay.as_secs_f64(), "update failed; the previous table stays in force");
                            retry = Some((Instant::now() + delay, delay));
                        }
                    }
                }
            }
        }
        if let Some(good) = last.as_mut()
            && Instant::now() >= next_resync
        {
            // Drift check and repair with the last good table; a refused build is
            // counted and logged by the step, the good table kept.
            let errors = stats.errors;
            let applies = stats.applies;
            let mut candidate = good.clone();
            observe(b, &mut counts);
            runner::step(b, &mut job, &mut candidate, &mut stats);
            if stats.applies != applies {
                counts.replaced();
            }
            // The kernel holds `candidate` now (found equal or re-applied), unless the
            // step failed.
            known = None;
            if stats.errors == errors {
                *good = candidate;
                known = b.ruleset_generation();
            }
            next_resync = Instant::now() + cfg.resync;
        }
        stats.ready = last.is_some()
            && refused.is_none()
            && retry.is_none()
            && unreachable.is_none()
            && unconvertible == 0;
        if last.is_some() && Instant::now() >= next_count {
            observe(b, &mut counts);
            next_count = Instant::now() + COUNTERS_EVERY;
        }
        crate::metrics::set_extra(extra_metrics(table, unconvertible) + &counts.metrics(table));
        crate::metrics::publish(&published, &stats, last.as_ref().unwrap_or(&placeholder));
    }
    tracing::info!(table = %table, applies = stats.applies, "stopping on signal");
    Ok(())
}

fn log_update(reason: &str, rs: &Ruleset, path: Path, elapsed: Duration) {
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    if let Path::Elements { removed, added, .. } = path {
        tracing::info!(
            reason,
            table = %rs.table,
            removed,
            added,
            elements = element_count(rs),
            elapsed_ms,
            "netpol table updated (set elements only, one batch)"
        );
        return;
    }
    tracing::info!(
        reason,
        table = %rs.table,
        chains = rs.chains.len(),
        rules = rs.rule_count(),
        sets = rs.sets.len(),
        elements = element_count(rs),
        elapsed_ms,
        "netpol table updated (whole-table replacement, one batch)"
    );
}
