//! A fake Kubernetes API server for `nftkit netpol` live mode (tests/netns/netpol_live.rs,
//! tests/netns/e2e_netpol.rs), and the helpers around it: a kubeconfig pointing at it, the
//! daemon's `/readyz` and `/metrics` fetched inside its namespace.
//!
//! The server is a small HTTP/1.1 server in the test process, listening on 127.0.0.1
//! *inside the test's network namespace* (its socket is created by a thread that entered
//! the namespace); nftkit runs in the same namespace with a kubeconfig pointing at it, so
//! the real kube-rs client, watcher and k8s-openapi decoding are exercised. It serves list
//! responses with resourceVersions, watch streams (`?watch=true`, chunked newline-delimited
//! JSON with ADDED/MODIFIED/DELETED events) and, after `expire`, an ERROR event with code
//! 410 that forces the client to re-list. The ClusterNetworkPolicy CRD's path answers
//! 404, as an API server without the CRD does, until `serve_crd(true)`. Every connection
//! has timeouts; every thread stops when the server is dropped.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::Netns;

/// The resources nftkit watches: (plural, list path, apiVersion, kind).
const RESOURCES: [(&str, &str, &str, &str); 4] = [
    ("pods", "/api/v1/pods", "v1", "Pod"),
    ("namespaces", "/api/v1/namespaces", "v1", "Namespace"),
    (
        "networkpolicies",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
    ),
    (
        CNP,
        "/apis/policy.networking.k8s.io/v1alpha2/clusternetworkpolicies",
        "policy.networking.k8s.io/v1alpha2",
        "ClusterNetworkPolicy",
    ),
];

/// The CRD's plural: served only after `FakeApi::serve_crd(true)`.
pub const CNP: &str = "clusternetworkpolicies";

fn resource(plural: &str) -> (&'static str, &'static str, &'static str, &'static str) {
    *RESOURCES
        .iter()
        .find(|r| r.0 == plural)
        .unwrap_or_else(|| panic!("unknown resource {plural}"))
}

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// plural -> "ns/name" -> object (with kind, apiVersion, resourceVersion).
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// (resourceVersion, plural, event type, object), in order.
    events: Vec<(u64, &'static str, &'static str, Value)>,
    /// A watch from a resourceVersion below this gets 410 Gone.
    compacted: u64,
    /// Bumped to end every open watch stream.
    epoch: u64,
    /// Requests served, per plural: (lists, watches, 410s sent).
    lists: BTreeMap<&'static str, usize>,
    watches: BTreeMap<&'static str, usize>,
    gone: usize,
    /// The ClusterNetworkPolicy CRD installed (else its path answers 404).
    crd: bool,
    /// 404s sent for the CRD's path.
    crd_404: usize,
    /// The CRD's path answers 403 (the ServiceAccount may not read it).
    crd_forbidden: bool,
}

struct Shared {
    state: Mutex<ApiState>,
    changed: Condvar,
    stop: AtomicBool,
}

pub struct FakeApi {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

fn key_of(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{}/{}",
        m["namespace"].as_str().unwrap_or(""),
        m["name"].as_str().expect("metadata.name")
    )
}

impl FakeApi {
    /// Listens on 127.0.0.1 (random port) inside `ns`.
    pub fn start(ns: &Netns) -> FakeApi {
        FakeApi::start_at(ns, 0)
    }

    /// Listens on 127.0.0.1:`port` inside `ns` (0: a random port).
    pub fn start_at(ns: &Netns, port: u16) -> FakeApi {
        let listener: TcpListener = ns.enter(move || {
            let l = TcpListener::bind(("127.0.0.1", port)).expect("bind fake API server");
            l.set_nonblocking(true).expect("nonblocking");
            l
        });
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(ApiState::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(600);
            let mut conns: Vec<JoinHandle<()>> = Vec::new();
            while !s.stop.load(Ordering::SeqCst) && Instant::now() < end {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s2 = Arc::clone(&s);
                        conns.push(thread::spawn(move || serve(stream, &s2)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
                conns.retain(|c| !c.is_finished());
            }
            s.stop.store(true, Ordering::SeqCst);
            s.changed.notify_all();
            for c in conns {
                let _ = c.join();
            }
        });
        FakeApi {
            port,
            shared,
            thread: Some(thread),
        }
    }

    fn state(&self) -> MutexGuard<'_, ApiState> {
        self.shared.state.lock().unwrap()
    }

    /// Create or replace an object (ADDED / MODIFIED event).
    pub fn apply(&self, plural: &str, obj: Value) {
        let mut st = self.state();
        record_apply(&mut st, plural, obj, true);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Delete an object (DELETED event).
    pub fn delete(&self, plural: &str, key: &str) {
        let mut st = self.state();
        record_delete(&mut st, plural, key, true);
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Change objects without any watch event (as if the events were compacted away),
    /// then end every watch stream: clients resume from a resourceVersion that is now too
    /// old, get an ERROR event with code 410 and must re-list to see the changes.
    pub fn expire_with(&self, f: impl FnOnce(&mut Gap)) {
        let mut st = self.state();
        f(&mut Gap { st: &mut st });
        st.compacted = st.rv;
        st.epoch += 1;
        drop(st);
        self.shared.changed.notify_all();
    }

    pub fn lists(&self, plural: &str) -> usize {
        self.state()
            .lists
            .get(resource(plural).0)
            .copied()
            .unwrap_or(0)
    }

    /// Install (`true`) or remove the ClusterNetworkPolicy CRD; removing it ends every
    /// watch stream, as the API server does.
    pub fn serve_crd(&self, on: bool) {
        let mut st = self.state();
        st.crd = on;
        if !on {
            st.epoch += 1;
        }
        drop(st);
        self.shared.changed.notify_all();
    }

    /// Answer the CRD's path with 403 Forbidden (`true`), as an API server does for a
    /// ServiceAccount whose ClusterRole does not grant it.
    pub fn forbid_crd(&self, on: bool) {
        self.state().crd_forbidden = on;
    }

    /// Requests for the CRD's path answered 404.
    pub fn crd_404s(&self) -> usize {
        self.state().crd_404
    }

    pub fn gone_sent(&self) -> usize {
        self.state().gone
    }

    /// Every object as one `kubectl get pods,namespaces,networkpolicies -A -o yaml` List.
    pub fn dump(&self) -> String {
        let st = self.state();
        let items: Vec<Value> = st
            .objects
            .values()
            .flat_map(|m| m.values().cloned())
            .collect();
        json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Mutations inside `expire_with`: no events recorded.
pub struct Gap<'a> {
    st: &'a mut ApiState,
}

impl Gap<'_> {
    pub fn apply(&mut self, plural: &str, obj: Value) {
        record_apply(self.st, plural, obj, false);
    }
    pub fn delete(&mut self, plural: &str, key: &str) {
        record_delete(self.st, plural, key, false);
    }
}

fn record_apply(st: &mut ApiState, plural: &str, mut obj: Value, event: bool) {
    let (plural, _, api_version, kind) = resource(plural);
    st.rv += 1;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    obj["metadata"]["uid"] = json!(format!("uid-{}", key_of(&obj)));
    let key = key_of(&obj);
    let old = st
        .objects
        .entry(plural)
        .or_default()
        .insert(key, obj.clone());
    if event {
        let t = if old.is_some() { "MODIFIED" } else { "ADDED" };
        let rv = st.rv;
        st.events.push((rv, plural, t, obj));
    }
}

fn record_delete(st: &mut ApiState, plural: &str, key: &str, event: bool) {
    let (plural, ..) = resource(plural);
    let mut obj = st
        .objects
        .entry(plural)
        .or_default()
        .remove(key)
        .unwrap_or_else(|| panic!("delete: no {plural} {key}"));
    st.rv += 1;
    obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
    if event {
        let rv = st.rv;
        st.events.push((rv, plural, "DELETED", obj));
    }
}

fn respond(stream: &mut TcpStream, status: &str, body: &str) {
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn chunk(stream: &mut TcpStream, line: &str) -> bool {
    let data = format!("{line}\n");
    write!(stream, "{:x}\r\n{data}\r\n", data.len()).is_ok() && stream.flush().is_ok()
}

/// One connection: one GET, answered, then closed.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: BTreeMap<&str, &str> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    if path == RESOURCES.iter().find(|r| r.0 == CNP).map_or("", |r| r.1)
        && shared.state.lock().unwrap().crd_forbidden
    {
        respond(
            &mut stream,
            "403 Forbidden",
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"clusternetworkpolicies.policy.networking.k8s.io is forbidden","reason":"Forbidden","details":{"group":"policy.networking.k8s.io","kind":"clusternetworkpolicies"},"code":403}"#,
        );
        return;
    }
    let found = RESOURCES.iter().find(|r| r.1 == path).filter(|r| {
        let mut st = shared.state.lock().unwrap();
        let served = r.0 != CNP || st.crd;
        if !served {
            st.crd_404 += 1;
        }
        served
    });
    let Some(&(plural, _, api_version, kind)) = found else {
        // As kube-apiserver's not-found handler answers (a Status, 404).
        respond(
            &mut stream,
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#,
        );
        return;
    };
    let watch = matches!(params.get("watch"), Some(&"true") | Some(&"1"));
    if !watch {
        let mut st = shared.state.lock().unwrap();
        *st.lists.entry(plural).or_default() += 1;
        // Items without kind/apiVersion, as a real API server lists them.
        let items: Vec<Value> = st
            .objects
            .get(plural)
            .map(|m| {
                m.values()
                    .map(|o| {
                        let mut o = o.clone();
                        if let Some(m) = o.as_object_mut() {
                            m.remove("kind");
                            m.remove("apiVersion");
                        }
                        o
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = json!({"kind": format!("{kind}List"), "apiVersion": api_version,
            "metadata": {"resourceVersion": st.rv.to_string()}, "items": items});
        drop(st);
        respond(&mut stream, "200 OK", &body.to_string());
        return;
    }
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60u64)
        .min(120);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    if write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let mut st = shared.state.lock().unwrap();
    *st.watches.entry(plural).or_default() += 1;
    if from < st.compacted {
        st.gone += 1;
        drop(st);
        let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
        chunk(&mut stream, &status.to_string());
        let _ = write!(stream, "0\r\n\r\n");
        return;
    }
    let epoch = st.epoch;
    let mut cursor = from;
    loop {
        let pending: Vec<Value> = st
            .events
            .iter()
            .filter(|(rv, p, ..)| *rv > cursor && *p == plural)
            .map(|(_, _, t, o)| json!({"type": t, "object": o}))
            .collect();
        cursor = st.rv;
        if st.epoch != epoch || shared.stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        if !pending.is_empty() {
            drop(st);
            for e in &pending {
                if !chunk(&mut stream, &e.to_string()) {
                    return;
                }
            }
            st = shared.state.lock().unwrap();
            continue;
        }
        st = shared
            .changed
            .wait_timeout(st, Duration::from_millis(100))
            .unwrap()
            .0;
    }
    drop(st);
    let _ = write!(stream, "0\r\n\r\n");
}

pub fn kubeconfig(dir: &std::path::Path, url: &str) -> PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: test\ncurrent-context: fake\nusers:\n- name: test\n  user:\n    token: test-token\n"
        ),
    )
    .expect("write kubeconfig");
    p
}

/// The log without ANSI colour codes.
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A port on 127.0.0.1 inside `ns` that nothing listens on (a test namespace is fresh, so
/// the first free one counts up from 20000).
///
/// Below the kernel's ephemeral range (32768-60999): a daemon retrying a connection to a
/// stopped server on an ephemeral port can be given that very port as its source and
/// connect to itself (TCP simultaneous open), which then holds the port and makes the
/// server's restart fail with "Address already in use".
pub fn free_port(ns: &Netns) -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(20_000);
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(port < 32_768, "no free port below the ephemeral range");
        if ns.enter(move || TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return port;
        }
    }
}

/// (status code, body) of `GET path` to 127.0.0.1:port inside `ns`; None if nothing
/// answers (every step bounded by a timeout).
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Option<(u16, String)> {
    let path = path.to_string();
    ns.enter(move || {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    })
}

/// `/readyz`'s status code (0 if nothing answers).
pub fn readyz(ns: &Netns, port: u16) -> u16 {
    http_get(ns, port, "/readyz").map_or(0, |(c, _)| c)
}

/// The value of a metric line starting with `prefix` on `/metrics`.
pub fn metric(ns: &Netns, port: u16, prefix: &str) -> Option<f64> {
    let (_, body) = http_get(ns, port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(prefix))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Kind -> plural of the resources the fake server serves.
pub fn plural_of(kind: &str) -> &'static str {
    RESOURCES
        .iter()
        .find(|r| r.3 == kind)
        .unwrap_or_else(|| panic!("unknown kind {kind}"))
        .0
}
