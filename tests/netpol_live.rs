//! `nftkit netpol` live mode against a fake Kubernetes API server.
//!
//! The fake server is a small HTTP/1.1 server in this test process, listening on
//! 127.0.0.1 *inside the test's network namespace* (its socket is created by a thread that
//! entered the namespace); nftkit runs in the same namespace with a kubeconfig pointing at
//! it, so the real kube-rs client, watcher and k8s-openapi decoding are exercised and
//! only the namespace's own table is programmed. The server serves list responses with
//! resourceVersions, watch streams (`?watch=true`, chunked newline-delimited JSON with
//! ADDED/MODIFIED/DELETED events) and, after `expire`, an ERROR event with code 410 that
//! forces the client to re-list. Every connection has timeouts; every thread stops when
//! the server is dropped.
//!
//! Datapath coverage (packets between pod namespaces) is in tests/e2e_netpol.rs: live mode
//! builds the same Ruleset as `--from-file`, which these tests check with
//! `nftkit verify netpol --from-file <the fake server's objects as a kubectl List>`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const TABLE: &str = "nftkit-netpol";
const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// The fake API server
// ---------------------------------------------------------------------------

/// The three resources nftkit watches: (plural, list path, apiVersion, kind).
const RESOURCES: [(&str, &str, &str, &str); 3] = [
    ("pods", "/api/v1/pods", "v1", "Pod"),
    ("namespaces", "/api/v1/namespaces", "v1", "Namespace"),
    (
        "networkpolicies",
        "/apis/networking.k8s.io/v1/networkpolicies",
        "networking.k8s.io/v1",
        "NetworkPolicy",
    ),
];

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
        let listener: TcpListener = ns.enter(|| {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind fake API server");
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
    let Some(&(plural, _, api_version, kind)) = RESOURCES.iter().find(|r| r.1 == path) else {
        respond(
            &mut stream,
            "404 Not Found",
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#,
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

// ---------------------------------------------------------------------------
// Objects and helpers
// ---------------------------------------------------------------------------

fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

fn pod(ns: &str, name: &str, node: &str, ip: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x",
            "ports": [{"name": "pg", "containerPort": 5432, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn policy(ns: &str, name: &str, target: &str, from_app: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": target}}, "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": from_app}}}],
                "ports": [{"port": "pg"}]}]}})
}

fn kubeconfig(dir: &std::path::Path, url: &str) -> PathBuf {
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

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let d = std::env::temp_dir().join(format!("{}-live", unique_name()));
        std::fs::create_dir_all(&d).expect("mkdir");
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The log without ANSI colour codes.
fn plain(log: &str) -> String {
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

/// Batches committed so far (ops::apply_and_check's "applied" line).
fn applies(d: &NftkitDaemon) -> usize {
    plain(&d.log())
        .lines()
        .filter(|l| l.contains(" applied backend="))
        .count()
}

fn unchanged_notes(d: &NftkitDaemon) -> usize {
    plain(&d.log())
        .lines()
        .filter(|l| l.contains("desired table unchanged; nothing sent"))
        .count()
}

fn table_text(ns: &Netns) -> String {
    ns.table("inet", TABLE).unwrap_or_default()
}

/// Waits until the table satisfies `f`; panics with the table and log otherwise.
fn wait_table(ns: &Netns, d: &NftkitDaemon, what: &str, f: impl Fn(&str) -> bool) {
    if !poll_until(WAIT, || f(&table_text(ns))) {
        panic!(
            "table never {what}:\n{}\n--- log ---\n{}",
            table_text(ns),
            plain(&d.log())
        );
    }
}

/// `nftkit verify netpol --from-file <the server's objects>`: the live table equals what
/// the from-file mode builds for the same objects.
fn verify_matches_file(ns: &Netns, api: &FakeApi, dir: &TempDir, node: &str) {
    let f = dir.0.join("dump.json");
    std::fs::write(&f, api.dump()).expect("write dump");
    let out = ns.nftkit(
        &[],
        &[
            "verify",
            "netpol",
            "--node-name",
            node,
            "--from-file",
            f.to_str().unwrap(),
        ],
    );
    assert!(out.success(), "live table differs from --from-file:\n{out}");
}

/// Waits (bounded) until verify against the server's current objects passes.
fn wait_converged(ns: &Netns, api: &FakeApi, dir: &TempDir, node: &str, d: &NftkitDaemon) {
    let f = dir.0.join("dump.json");
    let ok = poll_until(WAIT, || {
        std::fs::write(&f, api.dump()).expect("write dump");
        ns.nftkit(
            &[],
            &[
                "verify",
                "netpol",
                "--node-name",
                node,
                "--from-file",
                f.to_str().unwrap(),
            ],
        )
        .success()
    });
    if !ok {
        verify_matches_file(ns, api, dir, node);
        panic!("not converged:\n{}", plain(&d.log()));
    }
}

fn seed(api: &FakeApi) {
    api.apply("namespaces", namespace("prod", json!({"team": "a"})));
    api.apply("namespaces", namespace("dev", json!({"team": "b"})));
    api.apply(
        "pods",
        pod("prod", "db-0", "node-1", "10.244.1.5", json!({"app": "db"})),
    );
    api.apply(
        "pods",
        pod(
            "prod",
            "web-0",
            "node-2",
            "10.244.2.7",
            json!({"app": "web"}),
        ),
    );
    api.apply(
        "pods",
        pod(
            "dev",
            "misc-0",
            "node-2",
            "10.244.2.9",
            json!({"app": "misc"}),
        ),
    );
}

fn live_args<'a>(kc: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "netpol",
        "--node-name",
        "node-1",
        "--kubeconfig",
        kc,
        "--debounce",
        "200ms",
    ];
    v.extend_from_slice(extra);
    v
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// Initial list, ADDED / MODIFIED / DELETED via watch, a 410 forcing a re-list, a burst
/// of 20 events, a change that leaves the table as it is, SIGTERM (the owned table goes).
#[test]
fn live_mode_follows_the_api_server() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    seed(&api);
    let dir = TempDir::new();
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let kc = kc.to_str().unwrap();
    let mut d = NftkitDaemon::start(&ns, &live_args(kc, &["--resync-interval", "30s"]));

    // Initial list: the table appears; no policy yet, so no per-pod chain.
    wait_table(&ns, &d, "created", |t| t.contains("chain filter-forward"));
    assert!(!table_text(&ns).contains("ingress/prod/db-0"));
    assert_eq!(applies(&d), 1, "{}", plain(&d.log()));
    verify_matches_file(&ns, &api, &dir, "node-1");

    // ADDED policy: db-0 isolated, web pods allowed on the named port.
    api.apply("networkpolicies", policy("prod", "db", "db", "web"));
    wait_table(&ns, &d, "given the policy", |t| {
        t.contains("chain ingress/prod/db-0") && t.contains("10.244.2.7")
    });
    verify_matches_file(&ns, &api, &dir, "node-1");
    assert!(table_text(&ns).contains("5432"), "named port resolved");

    // ADDED pod with the peer label: its IP joins the set.
    api.apply(
        "pods",
        pod(
            "prod",
            "web-1",
            "node-2",
            "10.244.2.8",
            json!({"app": "web"}),
        ),
    );
    wait_table(&ns, &d, "given web-1's address", |t| {
        t.contains("10.244.2.8")
    });
    // MODIFIED pod label: web-0 no longer a peer.
    api.apply(
        "pods",
        pod(
            "prod",
            "web-0",
            "node-2",
            "10.244.2.7",
            json!({"app": "cache"}),
        ),
    );
    wait_table(&ns, &d, "rid of web-0's address", |t| {
        !t.contains("10.244.2.7") && t.contains("10.244.2.8")
    });
    verify_matches_file(&ns, &api, &dir, "node-1");

    // A change that leaves the desired table as it is: nothing is sent.
    let before = applies(&d);
    let notes = unchanged_notes(&d);
    api.apply(
        "pods",
        pod(
            "dev",
            "misc-0",
            "node-2",
            "10.244.2.9",
            json!({"app": "misc", "v": "2"}),
        ),
    );
    if !poll_until(WAIT, || unchanged_notes(&d) > notes) {
        panic!("change not seen:\n{}", plain(&d.log()));
    }
    assert_eq!(applies(&d), before, "unchanged state must send nothing");

    // DELETED policy: its chain and sets go.
    api.delete("networkpolicies", "prod/db");
    wait_table(&ns, &d, "rid of the policy", |t| {
        !t.contains("ingress/prod/db-0") && !t.contains("10.244.2.8")
    });
    verify_matches_file(&ns, &api, &dir, "node-1");

    // 410 Gone: changes the client never got as events; it must re-list to see them.
    let pod_lists = api.lists("pods");
    api.expire_with(|gap| {
        gap.apply("networkpolicies", policy("prod", "db", "db", "cache"));
        gap.apply(
            "pods",
            pod("prod", "db-1", "node-1", "10.244.1.6", json!({"app": "db"})),
        );
        gap.delete("pods", "prod/web-1");
    });
    wait_table(&ns, &d, "re-listed after 410", |t| {
        t.contains("ingress/prod/db-1") && t.contains("10.244.2.7") && !t.contains("10.244.2.8")
    });
    assert!(api.gone_sent() >= 3, "every watch got 410");
    assert!(api.lists("pods") > pod_lists, "pods re-listed");
    assert!(
        plain(&d.log()).contains("watch expired (410 Gone); re-listing"),
        "{}",
        plain(&d.log())
    );
    wait_converged(&ns, &api, &dir, "node-1", &d);

    // A burst of 20 events inside the debounce window: few batches, final state right.
    let before = applies(&d);
    for i in 0..20 {
        let app = if i % 2 == 0 { "cache" } else { "web" };
        api.apply(
            "pods",
            pod(
                "prod",
                &format!("burst-{i}"),
                "node-2",
                &format!("10.244.3.{}", i + 1),
                json!({"app": app}),
            ),
        );
    }
    wait_table(&ns, &d, "given the burst", |t| t.contains("10.244.3.19"));
    thread::sleep(Duration::from_millis(800));
    let burst_applies = applies(&d) - before;
    eprintln!("burst of 20 events -> {burst_applies} batch(es)");
    assert!(
        (1..=2).contains(&burst_applies),
        "20 events in one debounce window gave {burst_applies} batches:\n{}",
        plain(&d.log())
    );
    verify_matches_file(&ns, &api, &dir, "node-1");

    // SIGTERM: clean exit, and the owned table goes with the process.
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", plain(&d.log()));
    assert!(plain(&d.log()).contains("stopping on signal"));
    assert!(
        poll_until(Duration::from_secs(5), || ns.table("inet", TABLE).is_none()),
        "owned table outlived the process"
    );
}

/// `--persist`: drift (the table deleted and a chain flushed by someone else) is repaired
/// at the next resync; the table stays after SIGINT. `--dry-run` lists the server once.
#[test]
fn live_mode_persist_repairs_drift_and_dry_run_lists_once() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    seed(&api);
    api.apply("networkpolicies", policy("prod", "db", "db", "web"));
    let dir = TempDir::new();
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let kc = kc.to_str().unwrap();

    // --dry-run: the same text as --dry-run --from-file with the same objects.
    let dump = dir.0.join("dump.json");
    std::fs::write(&dump, api.dump()).unwrap();
    let live = ns.nftkit(&[], &[&["--dry-run"][..], &live_args(kc, &[])].concat());
    let file = ns.nftkit(
        &[],
        &[
            "--dry-run",
            "netpol",
            "--node-name",
            "node-1",
            "--from-file",
            dump.to_str().unwrap(),
        ],
    );
    assert!(live.success() && file.success(), "{live}\n{file}");
    assert_eq!(live.stdout, file.stdout);
    assert!(live.stdout.contains("10.244.2.7"));
    assert!(
        ns.table("inet", TABLE).is_none(),
        "dry-run touched the kernel"
    );

    let mut d = NftkitDaemon::start(
        &ns,
        &live_args(kc, &["--persist", "--resync-interval", "1s"]),
    );
    wait_table(&ns, &d, "created", |t| {
        t.contains("chain ingress/prod/db-0")
    });
    ns.must(&["nft", "delete", "table", "inet", TABLE]);
    wait_table(&ns, &d, "re-created", |t| {
        t.contains("chain ingress/prod/db-0")
    });
    ns.must(&["nft", "flush", "chain", "inet", TABLE, "ingress/prod/db-0"]);
    // The rule using the peer set is back.
    wait_table(&ns, &d, "repaired", |t| t.contains("@ingress/prod/db/0-v4"));
    verify_matches_file(&ns, &api, &dir, "node-1");
    let repairs = plain(&d.log())
        .matches("kernel differs from desired state; re-applying")
        .count();
    assert_eq!(
        repairs,
        2,
        "deletion and flush repaired:\n{}",
        plain(&d.log())
    );
    // A quiet resync sends nothing.
    let before = applies(&d);
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(applies(&d), before, "{}", plain(&d.log()));

    assert_eq!(d.stop_with(libc::SIGINT), Some(0), "{}", plain(&d.log()));
    assert!(
        ns.table("inet", TABLE).is_some(),
        "--persist keeps the table"
    );
}

/// Failures at start: API server unreachable (closed port; TLS to a plain-HTTP server)
/// beyond the retries is exit 1 with nothing programmed; bad input is exit 2.
#[test]
fn live_mode_start_failures() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    seed(&api);
    let dir = TempDir::new();
    let closed = {
        let l: TcpListener = ns.enter(|| TcpListener::bind("127.0.0.1:0").unwrap());
        l.local_addr().unwrap().port()
    };
    for url in [
        format!("http://127.0.0.1:{closed}"),
        format!("https://127.0.0.1:{}", api.port),
    ] {
        let kc = kubeconfig(&dir.0, &url);
        let started = Instant::now();
        let out = ns.nftkit(
            &[],
            &live_args(kc.to_str().unwrap(), &["--sync-timeout", "3s"]),
        );
        assert_eq!(out.code, Some(1), "{url}: {out}");
        assert!(
            out.stderr.contains("nftkit: API server unreachable"),
            "{url}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(15));
        assert!(ns.table("inet", TABLE).is_none(), "nothing programmed");
    }
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let kc = kc.to_str().unwrap();
    let bad = dir.0.join("bad-kubeconfig");
    std::fs::write(&bad, "clusters: [\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "netpol",
                "--node-name",
                "node-1",
                "--kubeconfig",
                bad.to_str().unwrap(),
            ],
            "--kubeconfig",
        ),
        (
            vec![
                "netpol",
                "--node-name",
                "node-1",
                "--kubeconfig",
                "/nonexistent/kc",
            ],
            "/nonexistent/kc",
        ),
        (live_args(kc, &["--debounce", "0"]), "--debounce"),
        (
            live_args(kc, &["--resync-interval", "soon"]),
            "--resync-interval",
        ),
        (vec!["netpol", "--kubeconfig", kc], "NODE_NAME"),
    ];
    for (args, needle) in cases {
        let out = ns.nftkit(&[], &args);
        assert_eq!(out.code, Some(2), "{out}");
        assert!(out.stderr.contains(needle), "{needle}: {out}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
    }
    // KUBECONFIG is read when --kubeconfig is not given.
    let out = ns.nftkit(
        &[("KUBECONFIG", kc), ("NODE_NAME", "node-1")],
        &["--dry-run", "netpol"],
    );
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("table inet nftkit-netpol"), "{out}");
    assert_eq!(api.lists("pods"), 1);
}

// ---------------------------------------------------------------------------
// Scale: 1000 pods, 200 policies (the cluster of tests/netpol_scale.rs)
// ---------------------------------------------------------------------------

const PODS: usize = 1000;
const POLICIES: usize = 200;
const NAMESPACES: usize = 20;

fn scale_pod(j: usize, nodes: usize, app: usize) -> Value {
    let ip = format!("10.244.{}.{}", j / 200, j % 200 + 2);
    json!({"metadata": {"name": format!("pod-{j}"), "namespace": format!("ns-{}", j % NAMESPACES),
            "labels": {"app": format!("a{app}"), "tier": format!("t{}", j % 3)}},
        "spec": {"nodeName": format!("node-{}", j % nodes), "containers": [{"name": "c", "image": "x", "ports": [
            {"name": "http", "containerPort": 8080 + (j % 4)}, {"name": "metrics", "containerPort": 9090}]}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn scale_seed(api: &FakeApi, nodes: usize) {
    for n in 0..NAMESPACES {
        api.apply(
            "namespaces",
            namespace(
                &format!("ns-{n}"),
                json!({"team": format!("t{}", n % 5), "env": if n % 2 == 0 { "prod" } else { "dev" }}),
            ),
        );
    }
    for j in 0..PODS {
        api.apply("pods", scale_pod(j, nodes, j % 10));
    }
    for k in 0..POLICIES {
        let mut spec = json!({
            "podSelector": {"matchLabels": {"app": format!("a{}", k % 10)}},
            "ingress": [{
                "from": [
                    {"podSelector": {"matchLabels": {"tier": format!("t{}", k % 3)}}},
                    {"namespaceSelector": {"matchLabels": {"team": format!("t{}", k % 5)}},
                     "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": [format!("a{}", (k + 1) % 10)]}]}},
                    {"ipBlock": {"cidr": "192.0.2.0/24", "except": [format!("192.0.2.{}/32", k % 256)]}}
                ],
                "ports": [{"port": 80}, {"port": "http"}, {"protocol": "UDP", "port": 30000, "endPort": 30000 + k as u32}]
            }]
        });
        if k % 4 == 0 {
            spec["egress"] = json!([{"to": [{"podSelector": {"matchLabels": {"app": format!("a{}", (k + 3) % 10)}}}],
                "ports": [{"port": "metrics"}, {"port": "http"}]}]);
        }
        api.apply(
            "networkpolicies",
            json!({"metadata": {"name": format!("pol-{k}"), "namespace": format!("ns-{}", k % NAMESPACES)}, "spec": spec}),
        );
    }
}

/// The value of `field=` on the last log line containing `needle`.
fn last_field(log: &str, needle: &str, field: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    let at = line.find(&format!(" {field}="))? + field.len() + 2;
    Some(
        line[at..]
            .split_whitespace()
            .next()?
            .trim_matches('"')
            .to_string(),
    )
}

/// One pod label change at 1000 pods / 200 policies: the time from the event to the
/// committed batch, and the batch's size. The table is replaced whole (CONTRACT.md), so
/// the batch carries every chain, rule, set and element, not only the changed ones.
fn measure_label_change(nodes: usize) {
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    scale_seed(&api, nodes);
    let dir = TempDir::new();
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let started = Instant::now();
    let mut d = NftkitDaemon::start(
        &ns,
        &[
            "netpol",
            "--node-name",
            "node-0",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--debounce",
            "200ms",
        ],
    );
    let updated = |d: &NftkitDaemon| plain(&d.log()).matches("netpol table updated").count();
    if !poll_until(Duration::from_secs(120), || updated(&d) == 1) {
        panic!("no initial apply:\n{}", plain(&d.log()));
    }
    let initial = started.elapsed();
    // pod-5 (namespace ns-5, team t0) becomes app a1: a peer of the 20 policies that
    // select node-0's app-a0 pods, so their peer sets change.
    let t = Instant::now();
    api.apply("pods", scale_pod(5, nodes, 1));
    if !poll_until(Duration::from_secs(60), || updated(&d) == 2) {
        panic!("label change not applied:\n{}", plain(&d.log()));
    }
    let to_commit = t.elapsed();
    let log = plain(&d.log());
    let field = |f: &str| last_field(&log, "netpol table updated", f).unwrap_or_default();
    let apply_us = last_field(&log, " applied backend=", "elapsed_us").unwrap_or_default();
    let (chains, rules, sets, elements): (usize, usize, usize, usize) = (
        field("chains").parse().unwrap(),
        field("rules").parse().unwrap(),
        field("sets").parse().unwrap(),
        field("elements").parse().unwrap(),
    );
    // Messages of the netlink batch (backend/netlink/encode.rs): begin, destroy + add table,
    // one per chain, set and rule, element messages of up to 256 elements per set, end.
    let table = ns.table("inet", TABLE).expect("table");
    eprintln!(
        "netpol live scale ({PODS} pods, {} on node-0, {POLICIES} policies): first list + apply {initial:?}; \
         one label change -> committed in {to_commit:?} (debounce 200ms included; kernel commit {apply_us} us); \
         batch = whole table: {chains} chains, {rules} rules, {sets} sets, {elements} elements, \
         >= {} netlink messages; nft list table: {} KiB",
        PODS / nodes,
        // begin, destroy table, add table, end; chains; sets; rules; element messages
        // (at least one per set, 256 elements each).
        4 + chains + sets + rules + sets.max(elements.div_ceil(256)),
        table.len() / 1024,
    );
    verify_matches_file(&ns, &api, &dir, "node-0");
    assert!(to_commit < Duration::from_secs(30), "{to_commit:?}");
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0));
}

#[test]
fn live_scale_one_label_change_ten_nodes() {
    require_root();
    measure_label_change(10);
}

#[test]
fn live_scale_one_label_change_all_local() {
    require_root();
    measure_label_change(1);
}
