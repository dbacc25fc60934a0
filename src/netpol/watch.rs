//! Live mode's connection to the API server: where the server and credentials come
//! from (`--kubeconfig`, `KUBECONFIG`, `~/.kube/config` or in-cluster), and the four
//! kube-rs watchers (pods, namespaces, NetworkPolicies, ClusterNetworkPolicies) on a
//! thread and tokio runtime of their own, feeding the shared `store::Objects` and telling
//! the main loop (`netpol::live`) through a channel.
//!
//! A failed list or watch is retried for ever with our own backoff (0.8 s doubling to
//! 30 s, with jitter; see `BACKOFF_MIN`), and recorded in the kind's store as failing;
//! an expired resourceVersion (410 Gone) re-lists at once. A 404 for a kind that may not
//! be served (the ClusterNetworkPolicy CRD not installed) is no failure: the kind is
//! listed and empty, logged once, and listed again every resync interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::watcher;
use kube::{Api, Client};

use super::cnp_object::ClusterNetworkPolicyObject;
use super::manifest::Cluster;
use super::store::{Note, Objects, Watched, apply_event, lock};
use crate::error::{Error, Result};

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

/// The API server's status code in `e`, if it answered with one.
fn status_code(e: &watcher::Error) -> Option<u16> {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    }
}

/// Watch one kind forever (errors are logged and retried with backoff; a kind that may
/// be not served is re-checked every `recheck` while the API server answers 404).
async fn watch_kind<K: Watched>(
    client: Client,
    objects: Arc<Mutex<Objects>>,
    tx: Sender<Note>,
    recheck: Duration,
) {
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
            // 404: the CRD is not installed. 403 before anything was ever listed: the
            // ServiceAccount may not read it (a ClusterRole from before this kind); the
            // kind then counts as empty too, so an upgraded image keeps working, with a
            // warning. A 403 after a listing is an error like any other (the last good
            // rules stay, not ready).
            Err(e)
                if K::NOT_SERVED.is_some()
                    && (status_code(&e) == Some(404)
                        || (status_code(&e) == Some(403)
                            && !K::store(&mut lock(&objects)).holds_a_listing())) =>
            {
                let (notes, news) = K::store(&mut lock(&objects)).not_served();
                if news && status_code(&e) == Some(403) {
                    tracing::warn!(
                        kind = K::PLURAL,
                        recheck_in_s = recheck.as_secs_f64(),
                        "{} not readable (403 Forbidden: grant list and watch on it to the ServiceAccount); NetworkPolicy still enforced, ClusterNetworkPolicy not",
                        K::PLURAL
                    );
                } else if news {
                    tracing::info!(
                        kind = K::PLURAL,
                        recheck_in_s = recheck.as_secs_f64(),
                        "{}",
                        K::NOT_SERVED.unwrap_or_default()
                    );
                }
                backoff = None;
                sleep = Some(recheck);
                notes
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

/// How often `--from-file --watch` looks at the file's metadata (one stat: 20 a second
/// cost nothing measurable, and a change is seen within 25 ms on average).
const FILE_POLL: Duration = Duration::from_millis(50);

/// The watchers, running on their own thread and tokio runtime (the backend blocks on a
/// runtime of its own, so the two must not share a thread).
pub struct Watch {
    pub(super) objects: Arc<Mutex<Objects>>,
    pub(super) rx: Receiver<Note>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Build the client from `source` and start the four watchers; a kind the API
    /// server does not serve (a CRD not installed) is listed again every `recheck`.
    pub fn start(source: &KubeSource, recheck: Duration) -> Result<Watch> {
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
                            watch_kind::<K8sPod>(
                                client.clone(),
                                Arc::clone(&o),
                                tx.clone(),
                                recheck
                            ),
                            watch_kind::<Namespace>(
                                client.clone(),
                                Arc::clone(&o),
                                tx.clone(),
                                recheck
                            ),
                            watch_kind::<NetworkPolicy>(
                                client.clone(),
                                Arc::clone(&o),
                                tx.clone(),
                                recheck
                            ),
                            watch_kind::<ClusterNetworkPolicyObject>(
                                client,
                                Arc::clone(&o),
                                tx,
                                recheck
                            ),
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

    /// `--from-file --watch`: `path` read with `read` now (an error here is the caller's:
    /// bad input at start) and again whenever its metadata (inode, size, modification
    /// time) changes, as an atomic replace by rename or an edit does. A version that does
    /// not read is refused: the last good objects stay, and the loop reports it.
    pub fn file(
        path: &std::path::Path,
        read: fn(&std::path::Path) -> Result<crate::netpol::manifest::Cluster>,
    ) -> Result<Watch> {
        use std::os::unix::fs::MetadataExt;
        let stamp = |p: &std::path::Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        };
        let objects = Arc::new(Mutex::new(Objects::default()));
        let mut seen = stamp(path);
        lock(&objects).set_file(Ok(read(path)?));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let _ = tx.send(Note::Synced);
        let (o, s, path) = (Arc::clone(&objects), Arc::clone(&stop), path.to_path_buf());
        let thread = std::thread::Builder::new()
            .name("netpol-file".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(FILE_POLL);
                    let now = stamp(&path);
                    if now == seen {
                        continue;
                    }
                    seen = now;
                    let read = read(&path).map_err(|e| e.to_string());
                    match &read {
                        Ok(_) => tracing::info!(path = %path.display(), "file changed; re-read"),
                        Err(e) => tracing::debug!(error = %e, "file changed but refused"),
                    }
                    lock(&o).set_file(read);
                    if tx.send(Note::Changed).is_err() {
                        return;
                    }
                }
            })
            .map_err(|e| Error::runtime(format!("cannot start the file watch: {e}")))?;
        Ok(Watch {
            objects,
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// Wait until pods, namespaces, networkpolicies and clusternetworkpolicies have each
    /// been listed once, or found not served (`--dry-run` and `verify` without
    /// `--from-file`): exit 1 after `timeout`.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
