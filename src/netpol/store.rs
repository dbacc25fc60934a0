//! The cluster as live mode last saw it: each watched kind's objects, converted when
//! they arrive through the same `manifest` functions the `--from-file` mode uses
//! (k8s-openapi object -> JSON -> `manifest::pod` / `policy` / `meta`; ClusterNetworkPolicy,
//! a CRD that may not be served, in `cnp_object`), with what the
//! loop needs to decide whether it may build (`netpol::live`): whether each kind has
//! been listed completely, whether a kind's watch is failing (and since when), and the
//! objects the converter refused.
//!
//! `apply_event` turns one kube watcher event into store changes and the notes the
//! main loop reacts to; a status-only pod update converts to an equal object and
//! notifies nothing. A refused object drops its previous version and blocks every
//! build until it is fixed or deleted; a re-list (`Event::Init` .. `InitDone`) replaces
//! a kind's objects atomically.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod as K8sPod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::runtime::watcher;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::cnp::ClusterPolicy;
use super::cnp_object::ClusterNetworkPolicyObject;
use super::cnp_parse::cluster_policy;
use super::manifest::{self, Cluster, Pod, Policy};
use super::selector::Labels;
use crate::error::{Error, Result};

/// (namespace, name); namespace empty for namespaces themselves.
type Key = (String, String);

/// One watched kind's converted objects.
#[derive(Debug)]
pub(super) struct Store<T> {
    items: BTreeMap<Key, T>,
    /// Objects the converter refused, with why (their current version is not in `items`
    /// in a usable form, so no update may be built while any is here).
    rejected: BTreeMap<Key, String>,
    /// Objects (and refusals) of a (re-)list in progress, swapped in at `InitDone`.
    relist: Option<(BTreeMap<Key, T>, BTreeMap<Key, String>)>,
    synced: bool,
    /// The watch of this kind failing: (first error, latest error, its text), cleared by
    /// the next event.
    pub(super) failing: Option<(Instant, Instant, String)>,
    /// The API server answered 404 for the kind (a CRD not installed) since its last
    /// complete list.
    not_served: bool,
}

impl<T> Default for Store<T> {
    fn default() -> Self {
        Store {
            items: BTreeMap::new(),
            rejected: BTreeMap::new(),
            relist: None,
            synced: false,
            failing: None,
            not_served: false,
        }
    }
}

/// A watch whose last error is older than this is taken to be working again: while it
/// fails, a retry comes at least every 75 s (backoff at most 30 s plus 50% jitter, plus
/// kube's 30 s connect timeout). A re-established watch yields nothing until something
/// changes, so silence is the only sign of recovery besides data.
const WATCH_RECOVERED_AFTER: Duration = Duration::from_secs(90);

impl<T> Store<T> {
    /// The API server does not serve the kind (404: its CRD is not installed): listed and
    /// empty. The notes for the main loop, and whether this is news (to log once).
    pub(super) fn not_served(&mut self) -> (Vec<Note>, bool) {
        let news = !self.not_served;
        self.not_served = true;
        self.relist = None;
        self.failing = None;
        let changed = !self.items.is_empty() || !self.rejected.is_empty();
        self.items.clear();
        self.rejected.clear();
        let mut notes = Vec::new();
        if !self.synced {
            self.synced = true;
            notes.push(Note::Synced);
        }
        if changed {
            notes.push(Note::Changed);
        }
        (notes, news)
    }

    /// Whether the kind was listed from the API server (not only counted empty because
    /// it is not served).
    pub(super) fn holds_a_listing(&self) -> bool {
        self.synced && !self.not_served
    }

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
    pub(super) cluster_policies: Store<ClusterPolicy>,
    /// `--from-file --watch`: why the file's current version cannot be used (the objects
    /// of its last good version stay).
    file_error: Option<String>,
}

impl Objects {
    pub(super) fn synced(&self) -> bool {
        self.pods.synced
            && self.namespaces.synced
            && self.policies.synced
            && self.cluster_policies.synced
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
        if !self.cluster_policies.synced {
            m.push(<ClusterNetworkPolicyObject as Watched>::PLURAL);
        }
        m
    }

    /// `kind namespace/name: why` of every object the converter refused.
    pub fn rejected(&self) -> Vec<String> {
        fn list<T>(out: &mut Vec<String>, kind: &str, s: &Store<T>) {
            for (key, why) in &s.rejected {
                out.push(format!("{kind} {}: {why}", shown(key)));
            }
        }
        let mut out = Vec::new();
        if let Some(why) = &self.file_error {
            out.push(why.clone());
        }
        list(&mut out, <K8sPod as Watched>::PLURAL, &self.pods);
        list(&mut out, <Namespace as Watched>::PLURAL, &self.namespaces);
        list(&mut out, <NetworkPolicy as Watched>::PLURAL, &self.policies);
        list(
            &mut out,
            <ClusterNetworkPolicyObject as Watched>::PLURAL,
            &self.cluster_policies,
        );
        out
    }

    /// Why the API server counts as unreachable at `now`, if it does: no complete first
    /// list `timeout` after `started`, or a kind's watch failing for `timeout` or more.
    pub(super) fn unreachable(
        &self,
        started: Instant,
        now: Instant,
        timeout: Duration,
    ) -> Option<String> {
        let last_error = || {
            [
                &self.pods.failing,
                &self.namespaces.failing,
                &self.policies.failing,
                &self.cluster_policies.failing,
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
            (
                <ClusterNetworkPolicyObject as Watched>::PLURAL,
                self.cluster_policies.failing_for(now),
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

    /// `--from-file --watch`: the file's objects replace all others, or (`Err`) the file's
    /// current version is refused and the last good objects stay.
    pub(super) fn set_file(&mut self, read: std::result::Result<Cluster, String>) {
        let cluster = match read {
            Ok(c) => c,
            Err(why) => {
                self.file_error = Some(why);
                return;
            }
        };
        self.file_error = None;
        self.pods.items = cluster
            .pods
            .into_iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p))
            .collect();
        self.namespaces.items = cluster
            .namespaces
            .into_iter()
            .map(|(name, labels)| ((String::new(), name), labels))
            .collect();
        self.policies.items = cluster
            .policies
            .into_iter()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p))
            .collect();
        self.cluster_policies.items = cluster
            .cluster_policies
            .into_iter()
            .map(|p| ((String::new(), p.name.clone()), p))
            .collect();
        for synced in [
            &mut self.pods.synced,
            &mut self.namespaces.synced,
            &mut self.policies.synced,
            &mut self.cluster_policies.synced,
        ] {
            *synced = true;
        }
    }

    /// The objects as the build takes them (sorted by namespace and name, cluster
    /// policies by name, as `manifest::parse` sorts a file's).
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
            cluster_policies: self.cluster_policies.items.values().cloned().collect(),
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
pub(super) enum Note {
    /// Objects changed in a way that may change the desired table.
    Changed,
    /// One kind finished its first complete list.
    Synced,
    /// A watch failed (already logged); it is retried with backoff.
    Error,
}

/// A k8s-openapi type we watch, and how it becomes a `manifest` object.
pub(super) trait Watched:
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
    /// For a kind the API server may not serve (a CRD): what to log, once, when it
    /// answers 404; the kind then counts as listed and empty, and is re-checked.
    const NOT_SERVED: Option<&'static str> = None;
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

impl Watched for ClusterNetworkPolicyObject {
    type Item = ClusterPolicy;
    const PLURAL: &'static str = "clusternetworkpolicies";
    const NOT_SERVED: Option<&'static str> =
        Some("ClusterNetworkPolicy CRD not served; NetworkPolicy still enforced");
    fn convert(v: &Value) -> Result<ClusterPolicy> {
        cluster_policy(v)
    }
    fn store(o: &mut Objects) -> &mut Store<ClusterPolicy> {
        &mut o.cluster_policies
    }
}

/// `namespace/name`, or `name` for cluster-scoped objects.
fn shown(key: &Key) -> String {
    if key.0.is_empty() {
        key.1.clone()
    } else {
        format!("{}/{}", key.0, key.1)
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
            object = %shown(key),
            error = %e,
            "refusing an object nftkit cannot convert; no update is applied until it is fixed or deleted (the last good rules stay in force)"
        );
        e.to_string()
    })
}

/// Apply one watcher event to the store; what to tell the main loop.
pub(super) fn apply_event<K: Watched>(
    objects: &mut Objects,
    event: watcher::Event<K>,
) -> Vec<Note> {
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
            // The first list since the kind is served (a CRD installed) is no re-list.
            let listed_now = first || store.not_served;
            store.items = listed;
            store.rejected = rejected;
            store.synced = true;
            store.not_served = false;
            tracing::info!(
                kind = K::PLURAL,
                objects = store.items.len(),
                refused = store.rejected.len(),
                changed,
                "{}",
                if listed_now { "listed" } else { "re-listed" }
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
                        tracing::debug!(kind = K::PLURAL, object = %shown(&key), "changed");
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
                tracing::debug!(kind = K::PLURAL, object = %shown(&key), "deleted");
                vec![Note::Changed]
            } else {
                vec![]
            }
        }
    }
}

#[cfg(test)]
impl Objects {
    /// Every kind listed, empty.
    pub(super) fn synced_for_tests() -> Objects {
        let mut o = Objects::default();
        apply_event(&mut o, watcher::Event::<K8sPod>::Init);
        apply_event::<K8sPod>(&mut o, watcher::Event::InitDone);
        apply_event(&mut o, watcher::Event::<Namespace>::Init);
        apply_event::<Namespace>(&mut o, watcher::Event::InitDone);
        apply_event(&mut o, watcher::Event::<NetworkPolicy>::Init);
        apply_event::<NetworkPolicy>(&mut o, watcher::Event::InitDone);
        apply_event(&mut o, watcher::Event::<ClusterNetworkPolicyObject>::Init);
        apply_event::<ClusterNetworkPolicyObject>(&mut o, watcher::Event::InitDone);
        o
    }
}

pub(super) fn lock<T>(shared: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-applied event that matters more
    // than losing the daemon; keep going with what is there.
    shared.lock().unwrap_or_else(|p| p.into_inner())
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
        Objects::synced_for_tests()
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
    fn unreachable_after_sync_timeout_at_start_or_with_a_failing_watch() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(60);
        let s = Duration::from_secs;
        let mut o = Objects::default();
        assert_eq!(o.unreachable(t0, t0 + s(59), timeout), None);
        o.pods.failing = Some((t0, t0 + s(50), "pods: connection refused".into()));
        let why = o.unreachable(t0, t0 + s(61), timeout).unwrap();
        assert!(
            why.contains(
                "no complete list of pods, namespaces, networkpolicies, clusternetworkpolicies"
            ) && why.contains("connection refused"),
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

    fn cnp(priority: i64) -> ClusterNetworkPolicyObject {
        serde_json::from_value(json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
            "metadata": {"name": "deny-all", "resourceVersion": "3"},
            "spec": {"tier": "Admin", "priority": priority, "subject": {"namespaces": {}},
                "ingress": [{"action": "Deny", "from": [{"namespaces": {}}]}]}
        }))
        .unwrap()
    }

    #[test]
    fn served_objects_convert_and_a_refused_one_is_named() {
        use kube::Resource;
        assert_eq!(
            ClusterNetworkPolicyObject::url_path(&(), None),
            "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies"
        );
        let mut o = Objects::synced_for_tests();
        apply_event(&mut o, watcher::Event::Apply(cnp(10)));
        let c = o.complete().unwrap();
        assert_eq!(c.cluster_policies.len(), 1);
        assert_eq!(c.cluster_policies[0].priority, 10);
        apply_event(&mut o, watcher::Event::Apply(cnp(1001)));
        let msg = o.complete().unwrap_err().to_string();
        assert!(
            msg.contains("clusternetworkpolicies deny-all")
                && msg.contains("spec.priority")
                && msg.contains("1001"),
            "{msg}"
        );
    }

    #[test]
    fn a_crd_not_served_is_listed_and_empty_until_it_is() {
        let mut o = Objects::synced_for_tests();
        let store = ClusterNetworkPolicyObject::store(&mut o);
        *store = Store::default();
        // First answer 404: synced, nothing changed, told once.
        assert_eq!(store.not_served(), (vec![Note::Synced], true));
        assert_eq!(store.not_served(), (vec![], false));
        assert!(o.synced() && o.complete().unwrap().cluster_policies.is_empty());
        // Installed later: the next list fills it.
        apply_event(&mut o, watcher::Event::<ClusterNetworkPolicyObject>::Init);
        apply_event(&mut o, watcher::Event::InitApply(cnp(3)));
        assert_eq!(
            apply_event::<ClusterNetworkPolicyObject>(&mut o, watcher::Event::InitDone),
            vec![Note::Changed]
        );
        assert_eq!(o.complete().unwrap().cluster_policies.len(), 1);
        // Removed again: its objects go with it (and the change is told once more).
        let store = ClusterNetworkPolicyObject::store(&mut o);
        assert_eq!(store.not_served(), (vec![Note::Changed], true));
        assert!(o.complete().unwrap().cluster_policies.is_empty());
    }
}
