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
//! Every update is one atomic batch that replaces the whole owned table (CONTRACT.md
//! "Ownership and atomicity"): there are no incremental element updates, so the batch
//! after one pod label change is as large as the table (see tests/netpol_live.rs for
//! the measured size).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::build::{NetpolConfig, build_with_summary};
use super::manifest::{self, Cluster, Pod, Policy};
use super::selector::Labels;
use crate::apply;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::runner::{self, Job, LoopStats};

/// Where the API server and credentials come from.
#[derive(Debug, Clone)]
pub enum KubeSource {
    /// `--kubeconfig PATH` or `KUBECONFIG` (read and parsed while validating flags).
    File {
        /// The option that named it, for messages.
        option: &'static str,
        path: String,
        config: Box<kube::config::Kubeconfig>,
    },
    /// Neither given: `~/.kube/config`, else the in-cluster service account.
    Infer,
}

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
}

impl LiveConfig {
    /// A burst of changes is applied at the latest this long after its first change, so a
    /// steady stream of events still updates the table.
    pub fn max_delay(&self) -> Duration {
        (self.debounce * 10).max(Duration::from_secs(1))
    }
}

/// Read a kubeconfig file (or a `:`-separated list, as `KUBECONFIG` allows). Errors are
/// invalid input naming `option`.
pub fn read_kubeconfig(option: &'static str, raw: &str) -> Result<KubeSource> {
    let bad = |e: &dyn std::fmt::Display| {
        // One line: YAML errors carry a multi-line excerpt.
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default().to_string();
        Error::invalid(option, raw, format!("a readable kubeconfig file ({first})"))
    };
    let mut merged: Option<kube::config::Kubeconfig> = None;
    for p in std::env::split_paths(raw).filter(|p| !p.as_os_str().is_empty()) {
        let kc = kube::config::Kubeconfig::read_from(&p).map_err(|e| bad(&e))?;
        merged = Some(match merged {
            None => kc,
            Some(m) => m.merge(kc).map_err(|e| bad(&e))?,
        });
    }
    let config = merged.ok_or_else(|| bad(&"no file named"))?;
    Ok(KubeSource::File {
        option,
        path: raw.to_string(),
        config: Box::new(config),
    })
}

/// (namespace, name); namespace empty for namespaces themselves.
type Key = (String, String);

/// One watched kind's converted objects.
#[derive(Debug)]
struct Store<T> {
    items: BTreeMap<Key, T>,
    /// Objects the converter refused, with why (their current version is not in `items`
    /// in a usable form, so no update may be built while any is here).
    rejected: BTreeMap<Key, String>,
    /// Objects (and refusals) of a (re-)list in progress, swapped in at `InitDone`.
    relist: Option<(BTreeMap<Key, T>, BTreeMap<Key, String>)>,
    synced: bool,
    /// The watch of this kind failing: (first error, latest error, its text), cleared by
    /// the next event.
    failing: Option<(Instant, Instant, String)>,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: BTreeMap::new(),
            rejected: BTreeMap::new(),
            relist: None,
            synced: false,
            failing: None,
        }
    }
}

/// A watch whose last error is older than this is taken to be working again: while it
/// fails, a retry comes at least every 75 s (backoff at most 30 s plus 50% jitter, plus
/// kube's 30 s connect timeout). A re-established watch yields nothing until something
/// changes, so silence is the only sign of recovery besides data.
const WATCH_RECOVERED_AFTER: Duration = Duration::from_secs(90);

impl<T> Store<T> {
    fn failing_for(&self, now: Instant) -> Option<(Duration, &str)> {
        let (first, latest, text) = self.failing.as_ref()?;
        (now.saturating_duration_since(*latest) < WATCH_RECOVERED_AFTER)
            .then(|| (now.saturating_duration_since(*first), text.as_str()))
    }
}

/// The cluster as last seen, in the `manifest` types the build takes.
#[derive(Debug, Default)]
pub struct Objects {
    pods: Store<Pod>,
    namespaces: Store<Labels>,
    policies: Store<Policy>,
}

impl Objects {
    fn synced(&self) -> bool {
        self.pods.synced && self.namespaces.synced && self.policies.synced
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.pods.synced {
            m.push(<K8sPod as Watched>::PLURAL);
        }
        if !self.namespaces.synced {
            m.push(<Namespace as Watched>::PLURAL);
        }
        if !self.policies.synced {
            m.push(<NetworkPolicy as Watched>::PLURAL);
        }
        m
    }

    /// `kind namespace/name: why` of every object the converter refused.
    pub fn rejected(&self) -> Vec<String> {
        fn list<T>(out: &mut Vec<String>, kind: &str, s: &Store<T>) {
            for ((ns, name), why) in &s.rejected {
                let object = if ns.is_empty() {
                    name.clone()
                } else {
                    format!("{ns}/{name}")
                };
                out.push(format!("{kind} {object}: {why}"));
            }
        }
        let mut out = Vec::new();
        list(&mut out, <K8sPod as Watched>::PLURAL, &self.pods);
        list(&mut out, <Namespace as Watched>::PLURAL, &self.namespaces);
        list(&mut out, <NetworkPolicy as Watched>::PLURAL, &self.policies);
        out
    }

    /// Why the API server counts as unreachable at `now`, if it does: no complete first
    /// list `timeout` after `started`, or a kind's watch failing for `timeout` or more.
    fn unreachable(&self, started: Instant, now: Instant, timeout: Duration) -> Option<String> {
        let last_error = || {
            [
                &self.pods.failing,
                &self.namespaces.failing,
                &self.policies.failing,
            ]
            .into_iter()
            .flatten()
            .max_by_key(|f| f.1)
            .map(|f| f.2.clone())
            .unwrap_or_else(|| "none (no answer)".into())
        };
        if !self.synced() {
            let waited = now.saturating_duration_since(started);
            return (waited >= timeout).then(|| {
                format!(
                    "no complete list of {} after {:.0?} (--sync-timeout {:?}); last error: {}",
                    self.missing().join(", "),
                    waited,
                    timeout,
                    last_error()
                )
            });
        }
        let failing = [
            (<K8sPod as Watched>::PLURAL, self.pods.failing_for(now)),
            (
                <Namespace as Watched>::PLURAL,
                self.namespaces.failing_for(now),
            ),
            (
                <NetworkPolicy as Watched>::PLURAL,
                self.policies.failing_for(now),
            ),
        ];
        let long: Vec<String> = failing
            .into_iter()
            .filter_map(|(kind, f)| {
                let (d, text) = f?;
                (d >= timeout).then(|| format!("watch of {kind} failing for {d:.0?}: {text}"))
            })
            .collect();
        (!long.is_empty()).then(|| long.join("; "))
    }

    /// The objects as the build takes them (sorted by namespace and name, as
    /// `manifest::parse` sorts a file's).
    pub fn cluster(&self) -> Cluster {
        Cluster {
            pods: self.pods.items.values().cloned().collect(),
            namespaces: self
                .namespaces
                .items
                .iter()
                .map(|((_, name), labels)| (name.clone(), labels.clone()))
                .collect(),
            policies: self.policies.items.values().cloned().collect(),
        }
    }

    /// The complete cluster, or why there is none to build from: a kind not listed yet,
    /// or objects the converter refused (never a partial view).
    pub fn complete(&self) -> Result<Cluster> {
        if !self.synced() {
            return Err(Error::runtime(format!(
                "no complete list of {} yet",
                self.missing().join(", ")
            )));
        }
        let rejected = self.rejected();
        if !rejected.is_empty() {
            return Err(Error::invalid(
                format!(
                    "cluster object{}",
                    if rejected.len() == 1 { "" } else { "s" }
                ),
                rejected.join("; "),
                "objects nftkit can convert; until they are fixed or deleted, the last good rules stay in force",
            ));
        }
        Ok(self.cluster())
    }
}

/// What the watcher thread tells the main loop.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Note {
    /// Objects changed in a way that may change the desired table.
    Changed,
    /// One kind finished its first complete list.
    Synced,
    /// A watch failed (already logged); it is retried with backoff.
    Error,
}

/// A k8s-openapi type we watch, and how it becomes a `manifest` object.
trait Watched:
    kube::Resource<DynamicType = ()>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
    type Item: Clone + PartialEq + Send;
    const PLURAL: &'static str;
    /// Through the shared `manifest` validation (the object as JSON, as kubectl shows it).
    fn convert(v: &Value) -> Result<Self::Item>;
    fn store(o: &mut Objects) -> &mut Store<Self::Item>;
}

impl Watched for K8sPod {
    type Item = Pod;
    const PLURAL: &'static str = "pods";
    fn convert(v: &Value) -> Result<Pod> {
        manifest::pod(v)
    }
    fn store(o: &mut Objects) -> &mut Store<Pod> {
        &mut o.pods
    }
}

impl Watched for Namespace {
    type Item = Labels;
    const PLURAL: &'static str = "namespaces";
    fn convert(v: &Value) -> Result<Labels> {
        manifest::meta(v, "Namespace", false).map(|(_, _, labels)| labels)
    }
    fn store(o: &mut Objects) -> &mut Store<Labels> {
        &mut o.namespaces
    }
}

impl Watched for NetworkPolicy {
    type Item = Policy;
    const PLURAL: &'static str = "networkpolicies";
    fn convert(v: &Value) -> Result<Policy> {
        manifest::policy(v)
    }
    fn store(o: &mut Objects) -> &mut Store<Policy> {
        &mut o.policies
    }
}

fn key_of<K: kube::Resource>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Convert `obj`; a refusal is logged naming the object, and returned.
fn convert<K: Watched>(obj: &K, key: &Key) -> std::result::Result<K::Item, String> {
    let converted = serde_json::to_value(obj)
        .map_err(|e| Error::runtime(format!("cannot serialise: {e}")))
        .and_then(|v| K::convert(&v));
    converted.map_err(|e| {
        tracing::error!(
            kind = K::PLURAL,
            object = %format!("{}/{}", key.0, key.1),
            error = %e,
            "refusing an object nftkit cannot convert; no update is applied until it is fixed or deleted (the last good rules stay in force)"
        );
        e.to_string()
    })
}

/// Apply one watcher event to the store; what to tell the main loop.
fn apply_event<K: Watched>(objects: &mut Objects, event: watcher::Event<K>) -> Vec<Note> {
    let store = K::store(objects);
    // Data from the server means the watch works (`Init` only announces a list: the
    // watcher yields it again before every retry of a failed list).
    if !matches!(event, watcher::Event::Init) {
        store.failing = None;
    }
    match event {
        watcher::Event::Init => {
            store.relist = Some((BTreeMap::new(), BTreeMap::new()));
            vec![]
        }
        watcher::Event::InitApply(obj) => {
            let key = key_of(&obj);
            let item = convert(&obj, &key);
            if let Some((items, rejected)) = store.relist.as_mut() {
                match item {
                    Ok(item) => {
                        items.insert(key, item);
                    }
                    Err(why) => {
                        rejected.insert(key, why);
                    }
                }
            }
            vec![]
        }
        watcher::Event::InitDone => {
            let (listed, rejected) = store.relist.take().unwrap_or_default();
            let changed = listed != store.items || rejected != store.rejected;
            let first = !store.synced;
            store.items = listed;
            store.rejected = rejected;
            store.synced = true;
            tracing::info!(
                kind = K::PLURAL,
                objects = store.items.len(),
                refused = store.rejected.len(),
                changed,
                "{}",
                if first { "listed" } else { "re-listed" }
            );
            let mut notes = Vec::new();
            if first {
                notes.push(Note::Synced);
            }
            if changed {
                notes.push(Note::Changed);
            }
            notes
        }
        watcher::Event::Apply(obj) => {
            let key = key_of(&obj);
            match convert(&obj, &key) {
                Ok(item) => {
                    let was_rejected = store.rejected.remove(&key).is_some();
                    if store.items.get(&key) != Some(&item) {
                        tracing::debug!(kind = K::PLURAL, object = %format!("{}/{}", key.0, key.1), "changed");
                        store.items.insert(key, item);
                        vec![Note::Changed]
                    } else if was_rejected {
                        vec![Note::Changed]
                    } else {
                        vec![]
                    }
                }
                Err(why) => {
                    // The previous version is no longer the object's truth: drop it, so
                    // nothing can ever be built from a stale half of the cluster.
                    store.items.remove(&key);
                    let same = store.rejected.get(&key) == Some(&why);
                    store.rejected.insert(key, why);
                    if same { vec![] } else { vec![Note::Changed] }
                }
            }
        }
        watcher::Event::Delete(obj) => {
            let key = key_of(&obj);
            let was_rejected = store.rejected.remove(&key).is_some();
            if store.items.remove(&key).is_some() || was_rejected {
                tracing::debug!(kind = K::PLURAL, object = %format!("{}/{}", key.0, key.1), "deleted");
                vec![Note::Changed]
            } else {
                vec![]
            }
        }
    }
}

fn lock(objects: &Mutex<Objects>) -> MutexGuard<'_, Objects> {
    // A panic while holding the lock cannot leave a half-applied event that matters more
    // than losing the daemon; keep going with what is there.
    objects.lock().unwrap_or_else(|p| p.into_inner())
}

/// Backoff between failed list/watch attempts of one kind: 0.8 s doubling to 30 s (as
/// client-go's reflector and kube's `DefaultBackoff`), plus up to half of it as jitter so
/// a DaemonSet's nodes do not retry in step. kube's own `StreamBackoff` cannot be used:
/// a failed initial list sends the watcher back to its first state, which yields
/// `Event::Init` before the next list, and that Ok item resets the backoff — against an
/// API server that is down it retried about once a second for ever.
const BACKOFF_MIN: Duration = Duration::from_millis(800);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// The delay after `previous` (None: the first failure), before jitter.
fn next_backoff(previous: Option<Duration>) -> Duration {
    previous.map_or(BACKOFF_MIN, |d| (d * 2).min(BACKOFF_MAX))
}

/// `d` plus up to half of it (clock nanoseconds as the random source).
fn jittered(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

/// Watch one kind forever (errors are logged and retried with backoff).
async fn watch_kind<K: Watched>(client: Client, objects: Arc<Mutex<Objects>>, tx: Sender<Note>) {
    let api: Api<K> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default()).boxed();
    let mut backoff: Option<Duration> = None;
    while let Some(item) = stream.next().await {
        let mut sleep = None;
        let notes = match item {
            Ok(event) => {
                // `Init` only announces a list; data from the server ends the backoff.
                if !matches!(event, watcher::Event::Init) {
                    backoff = None;
                }
                apply_event(&mut lock(&objects), event)
            }
            Err(e) => {
                let text = e.to_string();
                match &e {
                    // Expected (events compacted away): re-list at once.
                    watcher::Error::WatchError(status) if status.code == 410 => {
                        tracing::warn!(
                            kind = K::PLURAL,
                            error = %text,
                            "watch expired (410 Gone); re-listing"
                        );
                    }
                    _ => {
                        let d = next_backoff(backoff);
                        backoff = Some(d);
                        sleep = Some(jittered(d));
                        tracing::warn!(
                            kind = K::PLURAL,
                            error = %text,
                            retry_in_s = d.as_secs_f64(),
                            "watch failed; retrying with backoff"
                        );
                    }
                }
                let now = Instant::now();
                let mut o = lock(&objects);
                let store = K::store(&mut o);
                let first = store.failing.as_ref().map_or(now, |f| f.0);
                store.failing = Some((first, now, format!("{}: {text}", K::PLURAL)));
                vec![Note::Error]
            }
        };
        for n in notes {
            if tx.send(n).is_err() {
                return;
            }
        }
        if let Some(d) = sleep {
            tokio::time::sleep(d).await;
        }
    }
}

/// The watchers, running on their own thread and tokio runtime (the backend blocks on a
/// runtime of its own, so the two must not share a thread).
pub struct Watch {
    objects: Arc<Mutex<Objects>>,
    rx: Receiver<Note>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Build the client from `source` and start the three watchers.
    pub fn start(source: &KubeSource) -> Result<Watch> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::runtime(format!("cannot start runtime: {e}")))?;
        let config = rt.block_on(async {
            match source {
                KubeSource::File {
                    option,
                    path,
                    config,
                } => kube::Config::from_custom_kubeconfig(
                    (**config).clone(),
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|e| {
                    Error::invalid(*option, path, format!("a usable kubeconfig ({e})"))
                }),
                KubeSource::Infer => kube::Config::infer().await.map_err(|e| {
                    Error::Usage(format!(
                        "netpol needs --from-file, --kubeconfig / KUBECONFIG, ~/.kube/config or to run in a pod (in-cluster config): {e}"
                    ))
                }),
            }
        })?;
        tracing::info!(server = %config.cluster_url, "watching the API server");
        let client = {
            let _guard = rt.enter();
            Client::try_from(config)
                .map_err(|e| Error::runtime(format!("cannot create the API client: {e}")))?
        };
        let objects = Arc::new(Mutex::new(Objects::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let (o, s) = (Arc::clone(&objects), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("netpol-watch".into())
            .spawn(move || {
                rt.block_on(async move {
                    let watches = async {
                        futures::join!(
                            watch_kind::<K8sPod>(client.clone(), Arc::clone(&o), tx.clone()),
                            watch_kind::<Namespace>(client.clone(), Arc::clone(&o), tx.clone()),
                            watch_kind::<NetworkPolicy>(client, Arc::clone(&o), tx),
                        )
                    };
                    let stopped = async {
                        while !s.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    };
                    tokio::select! {
                        _ = watches => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| Error::runtime(format!("cannot start the watch thread: {e}")))?;
        Ok(Watch {
            objects,
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// Wait until pods, namespaces and networkpolicies have each been listed once
    /// (`--dry-run` and `verify` without `--from-file`): exit 1 after `timeout`.
    pub fn wait_synced(&self, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let now = Instant::now();
            {
                let o = lock(&self.objects);
                if o.synced() {
                    return Ok(());
                }
                if let Some(why) = o.unreachable(started, now, timeout) {
                    return Err(Error::runtime(format!("API server unreachable: {why}")));
                }
            }
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::runtime("the API watch stopped unexpectedly"));
                }
            }
        }
    }

    /// The complete cluster as currently known, or why there is none (see
    /// [`Objects::complete`]).
    pub fn cluster(&self) -> Result<Cluster> {
        lock(&self.objects).complete()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// List once and return the cluster (`--dry-run` and `verify` without `--from-file`).
pub fn fetch_once(cfg: &LiveConfig) -> Result<Cluster> {
    let watch = Watch::start(&cfg.kube)?;
    watch.wait_synced(cfg.sync_timeout)?;
    watch.cluster()
}

/// The desired table from the current objects.
struct LiveJob<'a> {
    watch: &'a Watch,
    node: String,
    table: String,
}

impl LiveJob<'_> {
    /// The desired table, or why none may be built now (incomplete or refused objects).
    fn build(&self) -> Result<Ruleset> {
        let cfg = NetpolConfig {
            node: self.node.clone(),
            cluster: self.watch.cluster()?,
        };
        let (rs, s) = build_with_summary(&cfg, &self.table);
        tracing::debug!(
            pods = cfg.cluster.pods.len(),
            local_pods = s.local_pods,
            policies = cfg.cluster.policies.len(),
            policies_selecting = s.policies,
            ingress_isolated = s.ingress_isolated,
            egress_isolated = s.egress_isolated,
            "netpol desired state"
        );
        Ok(rs)
    }
}

impl Job for LiveJob<'_> {
    fn desired(&mut self) -> Result<Ruleset> {
        self.build()
    }
}

/// Set elements in `rs` (for the log: the batch carries all of them).
pub fn element_count(rs: &Ruleset) -> usize {
    rs.sets.iter().map(|s| s.elements.len()).sum()
}

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
    backend_for: &mut dyn FnMut() -> Result<Box<dyn Backend>>,
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
    let mut backend = backend_for()?;
    let b = backend.as_mut();
    b.set_process_owned(!cfg.persist);
    // /healthz answers from now on (stale after 3 resync intervals without a pass);
    // /readyz only after the first apply.
    let published = crate::metrics::start(cfg.resync)?;
    let watch = Watch::start(&cfg.kube)?;
    let mut job = LiveJob {
        watch: &watch,
        node: cfg.node.clone(),
        table: table.to_string(),
    };
    let started = Instant::now();
    let mut stats = LoopStats::default();
    // The last table applied (or found equal at a resync); None until the first apply,
    // while an existing table stays untouched.
    let mut last: Option<Ruleset> = None;
    let placeholder = Ruleset {
        table: table.to_string(),
        comment: String::new(),
        sets: vec![],
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
                Ok(rs) if Some(&rs) == last.as_ref() => {
                    retry = None;
                    refused = None;
                    tracing::info!(
                        table = %table,
                        "cluster change leaves the desired table unchanged; nothing sent"
                    );
                }
                Ok(rs) => {
                    refused = None;
                    let t = Instant::now();
                    match apply::apply_and_check(b, &rs) {
                        Ok(()) => {
                            stats.applies += 1;
                            stats.last_apply = Some(t.elapsed());
                            stats.record_success();
                            retry = None;
                            let reason = if last.is_none() {
                                "initial list"
                            } else {
                                "cluster change"
                            };
                            log_update(reason, &rs, Some(t.elapsed()));
                            if last.is_none() {
                                // One job, one backend: the copy elsewhere goes only now.
                                apply::remove_from_other_backends(&*b, &rs.table);
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
            let mut candidate = good.clone();
            runner::step(b, &mut job, &mut candidate, &mut stats);
            if stats.errors == errors {
                *good = candidate;
            }
            next_resync = Instant::now() + cfg.resync;
        }
        stats.ready = last.is_some()
            && refused.is_none()
            && retry.is_none()
            && unreachable.is_none()
            && unconvertible == 0;
        crate::metrics::set_extra(extra_metrics(table, unconvertible));
        crate::metrics::publish(&published, &stats, last.as_ref().unwrap_or(&placeholder));
    }
    tracing::info!(table = %table, applies = stats.applies, "stopping on signal");
    Ok(())
}

fn log_update(reason: &str, rs: &Ruleset, elapsed: Option<Duration>) {
    tracing::info!(
        reason,
        table = %rs.table,
        chains = rs.chains.len(),
        rules = rs.rule_count(),
        sets = rs.sets.len(),
        elements = element_count(rs),
        elapsed_ms = elapsed.map(|d| d.as_secs_f64() * 1000.0),
        "netpol table updated (whole-table replacement, one batch)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, app: &str, phase: &str) -> K8sPod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "prod", "labels": {"app": app}, "resourceVersion": "1"},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": phase, "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}
        }))
        .unwrap()
    }

    #[test]
    fn k8s_openapi_objects_convert_like_the_manifest_file() {
        let p = pod("web-0", "web", "Running");
        let mut o = Objects::default();
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        apply_event(&mut o, watcher::Event::InitApply(p.clone()));
        assert_eq!(
            apply_event::<K8sPod>(&mut o, watcher::Event::InitDone),
            vec![Note::Synced, Note::Changed]
        );
        let text = serde_json::to_string(
            &json!({"kind": "List", "items": [serde_json::to_value(&p).unwrap()]}),
        )
        .unwrap();
        let from_file = manifest::parse("t", &text).unwrap();
        assert_eq!(o.cluster().pods, from_file.pods);
        assert_eq!(o.cluster().pods[0].ports[0].port, 8080);
    }

    #[test]
    fn only_changes_that_matter_notify() {
        let mut o = Objects::default();
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        apply_event::<K8sPod>(&mut o, watcher::Event::InitDone);
        assert_eq!(
            apply_event(&mut o, watcher::Event::Apply(pod("a", "web", "Running"))),
            vec![Note::Changed]
        );
        // A status update that converts to the same object: no rebuild.
        let mut same = pod("a", "web", "Running");
        same.metadata.resource_version = Some("2".into());
        assert_eq!(apply_event(&mut o, watcher::Event::Apply(same)), vec![]);
        assert_eq!(
            apply_event(&mut o, watcher::Event::Apply(pod("a", "db", "Running"))),
            vec![Note::Changed]
        );
        assert_eq!(
            apply_event(&mut o, watcher::Event::Delete(pod("a", "db", "Running"))),
            vec![Note::Changed]
        );
        assert_eq!(
            apply_event(&mut o, watcher::Event::Delete(pod("a", "db", "Running"))),
            vec![]
        );
    }

    #[test]
    fn relist_replaces_everything_and_drops_vanished_objects() {
        let mut o = Objects::default();
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        apply_event(
            &mut o,
            watcher::Event::InitApply(pod("a", "web", "Running")),
        );
        apply_event(
            &mut o,
            watcher::Event::InitApply(pod("b", "web", "Running")),
        );
        apply_event::<K8sPod>(&mut o, watcher::Event::InitDone);
        assert_eq!(o.cluster().pods.len(), 2);
        // 410: the watcher re-lists; "a" vanished in the gap.
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        assert_eq!(o.cluster().pods.len(), 2, "old objects stay until InitDone");
        apply_event(
            &mut o,
            watcher::Event::InitApply(pod("b", "web", "Running")),
        );
        assert_eq!(
            apply_event::<K8sPod>(&mut o, watcher::Event::InitDone),
            vec![Note::Changed]
        );
        let names: Vec<String> = o.cluster().pods.into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["b"]);
        // An identical re-list notifies nothing.
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        apply_event(
            &mut o,
            watcher::Event::InitApply(pod("b", "web", "Running")),
        );
        assert_eq!(
            apply_event::<K8sPod>(&mut o, watcher::Event::InitDone),
            vec![]
        );
    }

    fn pol(cidr: &str) -> NetworkPolicy {
        serde_json::from_value(json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "namespace": "prod"},
            "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}
        }))
        .unwrap()
    }

    fn synced_objects() -> Objects {
        let mut o = Objects::default();
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        apply_event::<K8sPod>(&mut o, watcher::Event::InitDone);
        apply_event(&mut o, watcher::Event::<Namespace>::Init);
        apply_event::<Namespace>(&mut o, watcher::Event::InitDone);
        apply_event(&mut o, watcher::Event::<NetworkPolicy>::Init);
        apply_event::<NetworkPolicy>(&mut o, watcher::Event::InitDone);
        o
    }

    #[test]
    fn an_object_the_converter_refuses_blocks_every_update_until_fixed_or_deleted() {
        let mut o = synced_objects();
        apply_event(&mut o, watcher::Event::Apply(pol("192.0.2.0/24")));
        assert_eq!(o.complete().unwrap().policies.len(), 1);
        // Refused: no cluster to build from (not the one without the policy, which
        // would open its pods), and the refusal names the object, field and value.
        assert_eq!(
            apply_event(&mut o, watcher::Event::Apply(pol("192.0.2.0/33"))),
            vec![Note::Changed]
        );
        let e = o.complete().unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("networkpolicies prod/p")
                && msg.contains("spec.ingress[0].from[0].ipBlock.cidr")
                && msg.contains("192.0.2.0/33"),
            "{msg}"
        );
        assert_eq!(o.rejected().len(), 1);
        // The same refusal again notifies nothing; the fix lets updates through.
        assert_eq!(
            apply_event(&mut o, watcher::Event::Apply(pol("192.0.2.0/33"))),
            vec![]
        );
        assert_eq!(
            apply_event(&mut o, watcher::Event::Apply(pol("198.51.100.0/24"))),
            vec![Note::Changed]
        );
        assert!(o.rejected().is_empty());
        assert_eq!(o.complete().unwrap().policies.len(), 1);
        // Deleting a refused object also unblocks.
        apply_event(&mut o, watcher::Event::Apply(pol("bad")));
        assert!(o.complete().is_err());
        assert_eq!(
            apply_event(&mut o, watcher::Event::Delete(pol("bad"))),
            vec![Note::Changed]
        );
        assert_eq!(o.complete().unwrap().policies, vec![]);
        // Refused in a (re-)list: the list completes, the cluster does not.
        apply_event(&mut o, watcher::Event::<NetworkPolicy>::Init);
        apply_event(&mut o, watcher::Event::InitApply(pol("300.0.0.0/8")));
        apply_event::<NetworkPolicy>(&mut o, watcher::Event::InitDone);
        assert!(o.synced());
        assert!(o.complete().is_err());
        // A namespace converts to its labels, the name label added by the build's lookup.
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": "prod", "labels": {"team": "a"}}}))
                .unwrap();
        apply_event(&mut o, watcher::Event::Apply(ns));
        assert_eq!(
            o.cluster()
                .namespace_labels("prod")
                .get("team")
                .map(String::as_str),
            Some("a")
        );
    }

    #[test]
    fn backoff_doubles_to_30s_with_at_most_half_as_jitter() {
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..8 {
            let next = next_backoff(d);
            let j = jittered(next);
            assert!(j >= next && j <= next + next / 2, "{j:?} for {next:?}");
            seen.push(next.as_millis());
            d = Some(next);
        }
        assert_eq!(seen, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    }

    #[test]
    fn unreachable_after_sync_timeout_at_start_or_with_a_failing_watch() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(60);
        let s = Duration::from_secs;
        let mut o = Objects::default();
        assert_eq!(o.unreachable(t0, t0 + s(59), timeout), None);
        o.pods.failing = Some((t0, t0 + s(50), "pods: connection refused".into()));
        let why = o.unreachable(t0, t0 + s(61), timeout).unwrap();
        assert!(
            why.contains("no complete list of pods, namespaces, networkpolicies")
                && why.contains("connection refused"),
            "{why}"
        );
        // Listed: a watch failing for less than the timeout is a blip ...
        let mut o = synced_objects();
        let t1 = t0 + s(1000);
        o.policies.failing = Some((t1, t1 + s(30), "networkpolicies: refused".into()));
        assert_eq!(o.unreachable(t0, t1 + s(31), timeout), None);
        // ... failing for longer is not ...
        o.policies.failing = Some((t1, t1 + s(60), "networkpolicies: refused".into()));
        let why = o.unreachable(t0, t1 + s(61), timeout).unwrap();
        assert!(why.contains("watch of networkpolicies failing"), "{why}");
        // ... even when the watcher announces a re-list (it does before every retry) ...
        apply_event(&mut o, watcher::Event::<NetworkPolicy>::Init);
        assert!(o.unreachable(t0, t1 + s(61), timeout).is_some());
        // ... until errors stop coming (the watch reconnected) or data arrives.
        assert_eq!(
            o.unreachable(t0, t1 + s(60) + WATCH_RECOVERED_AFTER, timeout),
            None
        );
        apply_event(&mut o, watcher::Event::Apply(pol("192.0.2.0/24")));
        assert_eq!(o.unreachable(t0, t1 + s(61), timeout), None);
    }
}
