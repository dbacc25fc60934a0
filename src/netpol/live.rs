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
//!                                                  re-apply on drift (daemon::step)
//! ```
//!
//! Objects are converted when they arrive, through the same `manifest` functions the
//! `--from-file` mode uses (k8s-openapi object -> JSON -> `manifest::pod` / `policy` /
//! `meta`), so both sources share one validation and one set of semantics. An object
//! the converter refuses (the API server validated it, so this is rare) is logged and its
//! last valid version kept. Status-only pod updates convert to an equal object and cause
//! no rebuild at all.
//!
//! Watch errors are logged and retried with kube's default backoff (0.8 s doubling to
//! 30 s); an expired resourceVersion (410 Gone) makes the watcher re-list, and the
//! re-listed objects replace the old ones atomically (`Event::InitDone`). If the first
//! complete list does not arrive within `--sync-timeout`, the command fails (exit 1).
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
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::build::{NetpolConfig, build_with_summary};
use super::manifest::{self, Cluster, Pod, Policy};
use super::selector::Labels;
use crate::backend::Backend;
use crate::daemon::{self, Job, LoopStats};
use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::ops;

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
    /// How long the first complete list may take (with retries) before exit 1.
    pub sync_timeout: Duration,
    /// Keep the table when the process dies (no table owner flag).
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
    /// Objects of a (re-)list in progress, swapped in at `InitDone`.
    relist: Option<BTreeMap<Key, T>>,
    synced: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: BTreeMap::new(),
            relist: None,
            synced: false,
        }
    }
}

/// The cluster as last seen, in the `manifest` types the build takes.
#[derive(Debug, Default)]
pub struct Objects {
    pods: Store<Pod>,
    namespaces: Store<Labels>,
    policies: Store<Policy>,
    /// Last watch error, for the message when the first list never completes.
    last_error: Option<String>,
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

/// Convert `obj`; on refusal log it and fall back to `previous` (its last valid version).
fn convert_or_keep<K: Watched>(obj: &K, key: &Key, previous: Option<&K::Item>) -> Option<K::Item> {
    let converted = serde_json::to_value(obj)
        .map_err(|e| Error::runtime(format!("cannot serialise: {e}")))
        .and_then(|v| K::convert(&v));
    match converted {
        Ok(item) => Some(item),
        Err(e) => {
            tracing::error!(
                kind = K::PLURAL,
                object = %format!("{}/{}", key.0, key.1),
                error = %e,
                kept_previous = previous.is_some(),
                "ignoring an object nftkit cannot use; its last valid version (if any) stays in force"
            );
            previous.cloned()
        }
    }
}

/// Apply one watcher event to the store; what to tell the main loop.
fn apply_event<K: Watched>(objects: &mut Objects, event: watcher::Event<K>) -> Vec<Note> {
    let store = K::store(objects);
    match event {
        watcher::Event::Init => {
            store.relist = Some(BTreeMap::new());
            vec![]
        }
        watcher::Event::InitApply(obj) => {
            let key = key_of(&obj);
            let item = convert_or_keep(&obj, &key, store.items.get(&key));
            if let (Some(item), Some(relist)) = (item, store.relist.as_mut()) {
                relist.insert(key, item);
            }
            vec![]
        }
        watcher::Event::InitDone => {
            let listed = store.relist.take().unwrap_or_default();
            let changed = listed != store.items;
            let first = !store.synced;
            store.items = listed;
            store.synced = true;
            tracing::info!(
                kind = K::PLURAL,
                objects = store.items.len(),
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
            match convert_or_keep(&obj, &key, store.items.get(&key)) {
                Some(item) if store.items.get(&key) != Some(&item) => {
                    tracing::debug!(kind = K::PLURAL, object = %format!("{}/{}", key.0, key.1), "changed");
                    store.items.insert(key, item);
                    vec![Note::Changed]
                }
                _ => vec![],
            }
        }
        watcher::Event::Delete(obj) => {
            let key = key_of(&obj);
            if store.items.remove(&key).is_some() {
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

/// Watch one kind forever (errors are logged and retried with backoff).
async fn watch_kind<K: Watched>(client: Client, objects: Arc<Mutex<Objects>>, tx: Sender<Note>) {
    let api: Api<K> = Api::all(client);
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(item) = stream.next().await {
        let notes = match item {
            Ok(event) => apply_event(&mut lock(&objects), event),
            Err(e) => {
                let text = e.to_string();
                match &e {
                    watcher::Error::WatchError(status) if status.code == 410 => {
                        tracing::warn!(
                            kind = K::PLURAL,
                            error = %text,
                            "watch expired (410 Gone); re-listing"
                        );
                    }
                    _ => tracing::warn!(
                        kind = K::PLURAL,
                        error = %text,
                        "watch failed; retrying with backoff"
                    ),
                }
                lock(&objects).last_error = Some(format!("{}: {text}", K::PLURAL));
                vec![Note::Error]
            }
        };
        for n in notes {
            if tx.send(n).is_err() {
                return;
            }
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

    /// Wait until pods, namespaces and networkpolicies have each been listed once.
    /// Ok(false) if `stop` was set first; exit 1 after `timeout`.
    pub fn wait_synced(&self, timeout: Duration, stop: &AtomicBool) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.objects).synced() {
                return Ok(true);
            }
            if stop.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let now = Instant::now();
            if now >= deadline {
                let o = lock(&self.objects);
                return Err(Error::runtime(format!(
                    "API server unreachable: no complete list of {} within {:?} (retried with backoff); last error: {}",
                    o.missing().join(", "),
                    timeout,
                    o.last_error.as_deref().unwrap_or("none (no answer)")
                )));
            }
            match self
                .rx
                .recv_timeout((deadline - now).min(Duration::from_millis(100)))
            {
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::runtime("the API watch stopped unexpectedly"));
                }
            }
        }
    }

    /// The cluster as currently known.
    pub fn cluster(&self) -> Cluster {
        lock(&self.objects).cluster()
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
    watch.wait_synced(cfg.sync_timeout, &AtomicBool::new(false))?;
    Ok(watch.cluster())
}

/// The desired table from the current objects.
struct LiveJob<'a> {
    watch: &'a Watch,
    node: String,
    table: String,
}

impl LiveJob<'_> {
    fn build(&self) -> Ruleset {
        let cfg = NetpolConfig {
            node: self.node.clone(),
            cluster: self.watch.cluster(),
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
        rs
    }
}

impl Job for LiveJob<'_> {
    fn desired(&mut self) -> Result<Ruleset> {
        Ok(self.build())
    }
}

/// Set elements in `rs` (for the log: the batch carries all of them).
pub fn element_count(rs: &Ruleset) -> usize {
    rs.sets.iter().map(|s| s.elements.len()).sum()
}

/// Run live mode until SIGTERM/SIGINT (`stop`).
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
        persist = cfg.persist,
        "netpol live mode"
    );
    let mut backend = backend_for()?;
    let b = backend.as_mut();
    b.set_process_owned(!cfg.persist);
    // /healthz answers while the first list runs; /readyz only after the first apply.
    let published = crate::metrics::start_if_configured()?;
    let watch = Watch::start(&cfg.kube)?;
    if !watch.wait_synced(cfg.sync_timeout, stop)? {
        tracing::info!("stopping on signal before the first list");
        return Ok(());
    }
    let mut job = LiveJob {
        watch: &watch,
        node: cfg.node.clone(),
        table: table.to_string(),
    };
    let mut last = job.build();
    ops::apply_and_check(b, &last)?;
    log_update("initial list", &last, None);
    let mut stats = LoopStats {
        applies: 1,
        ready: true,
        ..LoopStats::default()
    };
    crate::metrics::publish(&published, &stats, &last);
    // (first change, latest change) of the burst being debounced.
    let mut burst: Option<(Instant, Instant)> = None;
    // A failed update is retried at this time, with this backoff.
    let mut retry: Option<(Instant, Duration)> = None;
    let mut next_resync = Instant::now() + cfg.resync;
    while !stop.load(Ordering::Relaxed) {
        match watch.rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Note::Changed) => {
                let now = Instant::now();
                burst = Some((burst.map_or(now, |b| b.0), now));
            }
            Ok(Note::Synced | Note::Error) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(Error::runtime("the API watch stopped unexpectedly"));
            }
        }
        let now = Instant::now();
        let burst_due = burst.is_some_and(|(first, latest)| {
            now - latest >= cfg.debounce || now - first >= cfg.max_delay()
        });
        let retry_due = retry.is_some_and(|(at, _)| now >= at);
        if burst_due || retry_due {
            burst = None;
            let rs = job.build();
            if rs == last {
                retry = None;
                tracing::info!(
                    table = %table,
                    "cluster change leaves the desired table unchanged; nothing sent"
                );
                continue;
            }
            let started = Instant::now();
            match ops::apply_and_check(b, &rs) {
                Ok(()) => {
                    stats.applies += 1;
                    stats.last_apply = Some(started.elapsed());
                    retry = None;
                    log_update("cluster change", &rs, Some(started.elapsed()));
                    last = rs;
                }
                Err(e) => {
                    stats.errors += 1;
                    let delay = retry.map_or(Duration::from_secs(1), |(_, d)| {
                        (d * 2).min(cfg.resync.max(Duration::from_secs(1)))
                    });
                    tracing::error!(error = %e, retry_in_s = delay.as_secs_f64(), "update failed; the previous table stays in force");
                    retry = Some((Instant::now() + delay, delay));
                }
            }
        }
        if Instant::now() >= next_resync {
            let errors = stats.errors;
            let mut good = last.clone();
            daemon::step(b, &mut job, &mut good, &mut stats);
            if stats.errors == errors {
                last = good;
            }
            next_resync = Instant::now() + cfg.resync;
        }
        crate::metrics::publish(&published, &stats, &last);
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

    #[test]
    fn an_object_the_converter_refuses_keeps_its_last_valid_version() {
        let pol = |cidr: &str| -> NetworkPolicy {
            serde_json::from_value(json!({
                "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "p", "namespace": "prod"},
                "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": cidr}}]}]}
            }))
            .unwrap()
        };
        let mut o = Objects::default();
        apply_event(&mut o, watcher::Event::<NetworkPolicy>::Init);
        apply_event::<NetworkPolicy>(&mut o, watcher::Event::InitDone);
        apply_event(&mut o, watcher::Event::Apply(pol("192.0.2.0/24")));
        let before = o.cluster().policies;
        assert_eq!(
            apply_event(&mut o, watcher::Event::Apply(pol("192.0.2.0/33"))),
            vec![]
        );
        assert_eq!(o.cluster().policies, before);
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
}
