//! `nftkit netpol` live mode against a fake Kubernetes API server (tests/netns/netpol_api.rs),
//! listening inside the test's network namespace, so the real kube-rs client, watcher and
//! k8s-openapi decoding are exercised and only the namespace's own table is programmed.
//!
//! Datapath coverage (packets between pod namespaces) is in tests/netns/e2e_netpol.rs: live mode
//! builds the same Ruleset as `--from-file`, which these tests check with
//! `nftkit verify netpol --from-file <the fake server's objects as a kubectl List>`.

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::netpol_api::*;
use serde_json::{Value, json};

const TABLE: &str = "nftkit-netpol";
const WAIT: Duration = Duration::from_secs(20);

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

/// Batches committed so far (ops::apply_and_check's "applied" line).
/// Batches sent: whole-table applies and element-only updates.
fn applies(d: &NftkitDaemon) -> usize {
    plain(&d.log())
        .lines()
        .filter(|l| l.contains(" applied backend=") || l.contains("(set elements only, one batch)"))
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
/// of 20 events, a change that leaves the table as it is, SIGTERM (with `--persist=false`
/// the owned table goes).
#[test]
fn live_mode_follows_the_api_server() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    seed(&api);
    let dir = TempDir::new("live");
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let kc = kc.to_str().unwrap();
    // --persist=false: the table carries the kernel's owner flag and dies with us.
    let mut d = NftkitDaemon::start(
        &ns,
        &live_args(kc, &["--resync-interval", "30s", "--persist=false"]),
    );

    // Initial list: the table appears; no policy yet, so no chain of policies.
    wait_table(&ns, &d, "created", |t| t.contains("chain filter-forward"));
    assert!(!table_text(&ns).contains("chain ingress/prod/db {"));
    assert_eq!(applies(&d), 1, "{}", plain(&d.log()));
    verify_matches_file(&ns, &api, &dir, "node-1");

    // ADDED policy: db-0 isolated, web pods allowed on the named port.
    api.apply("networkpolicies", policy("prod", "db", "db", "web"));
    wait_table(&ns, &d, "given the policy", |t| {
        t.contains("chain ingress/prod/db {") && t.contains("10.244.2.7")
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
        !t.contains("chain ingress/prod/db {") && !t.contains("10.244.2.8")
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
        t.contains("10.244.1.6 : goto ingress/prod/db")
            && t.contains("10.244.2.7")
            && !t.contains("10.244.2.8")
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
    assert!(
        table_text(&ns).contains("flags owner"),
        "{}",
        table_text(&ns)
    );
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
    let dir = TempDir::new("live");
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
        t.contains("chain ingress/prod/db {")
    });
    ns.must(&["nft", "delete", "table", "inet", TABLE]);
    wait_table(&ns, &d, "re-created", |t| {
        t.contains("chain ingress/prod/db {")
    });
    ns.must(&["nft", "flush", "chain", "inet", TABLE, "ingress/prod/db"]);
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

/// The API server going away after the first list: the table stays as it is, the daemon
/// keeps running and reports not ready once the watches have failed for --sync-timeout;
/// when the server answers again (events after the resourceVersion the watches resume
/// from), it is ready again.
#[test]
fn live_mode_keeps_the_table_while_the_api_server_is_away() {
    require_root();
    let ns = Netns::new();
    let port = free_port(&ns);
    let metrics = free_port(&ns);
    let api = FakeApi::start_at(&ns, port);
    seed(&api);
    api.apply("networkpolicies", policy("prod", "db", "db", "web"));
    let dir = TempDir::new("live");
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{port}"));
    let kc = kc.to_str().unwrap();
    let mut d = NftkitDaemon::start(
        &ns,
        &[
            &["--metrics-addr", &metrics.to_string()][..],
            &live_args(kc, &["--sync-timeout", "2s", "--resync-interval", "1s"]),
        ]
        .concat(),
    );
    if !poll_until(WAIT, || readyz(&ns, metrics) == 200) {
        panic!("never ready:\n{}", plain(&d.log()));
    }
    let before = table_text(&ns);
    assert!(before.contains("chain ingress/prod/db {"), "{before}");

    drop(api);
    if !poll_until(WAIT, || readyz(&ns, metrics) == 503) {
        panic!("still ready without API server:\n{}", plain(&d.log()));
    }
    let log = plain(&d.log());
    assert!(log.contains("API server unreachable: watch of"), "{log}");
    thread::sleep(Duration::from_secs(2));
    assert!(d.running(), "{}", plain(&d.log()));
    assert_eq!(
        table_text(&ns),
        before,
        "table changed while the API server was away"
    );

    // Back, with the same objects written twice (the watches resume from the old
    // resourceVersion and see the second round as events).
    let api = FakeApi::start_at(&ns, port);
    for _ in 0..2 {
        seed(&api);
        api.apply("networkpolicies", policy("prod", "db", "db", "web"));
    }
    if !poll_until(Duration::from_secs(60), || readyz(&ns, metrics) == 200) {
        panic!(
            "not ready after the API server came back:\n{}",
            plain(&d.log())
        );
    }
    assert!(plain(&d.log()).contains("API server reachable again"));
    assert_eq!(table_text(&ns), before);
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", plain(&d.log()));
    assert!(ns.table("inet", TABLE).is_some(), "persists by default");
}

/// Failures at start: for `--dry-run` (one list), the API server unreachable (closed
/// port; TLS to a plain-HTTP server) beyond `--sync-timeout` is exit 1; the daemon
/// instead keeps retrying, programs nothing and reports not ready (also
/// tests/netns/e2e_netpol.rs). Bad input is exit 2.
#[test]
fn live_mode_start_failures() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    seed(&api);
    let dir = TempDir::new("live");
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
            &[
                &["--dry-run"][..],
                &live_args(kc.to_str().unwrap(), &["--sync-timeout", "3s"]),
            ]
            .concat(),
        );
        assert_eq!(out.code, Some(1), "{url}: {out}");
        assert!(
            out.stderr.contains("nftkit: API server unreachable"),
            "{url}: {out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
        assert!(started.elapsed() < Duration::from_secs(15));
        assert!(ns.table("inet", TABLE).is_none(), "nothing programmed");
        // The daemon does not give up.
        let metrics = free_port(&ns);
        let mut d = NftkitDaemon::start(
            &ns,
            &[
                &["--metrics-addr", &metrics.to_string()][..],
                &live_args(kc.to_str().unwrap(), &["--sync-timeout", "1s"]),
            ]
            .concat(),
        );
        if !poll_until(WAIT, || {
            plain(&d.log()).contains("API server unreachable: no complete list")
        }) {
            panic!("{url}: no unreachable error:\n{}", plain(&d.log()));
        }
        assert!(d.running(), "{url}: exited:\n{}", plain(&d.log()));
        assert_eq!(readyz(&ns, metrics), 503);
        assert!(ns.table("inet", TABLE).is_none(), "nothing programmed");
        assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", plain(&d.log()));
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
// Scale: 1000 pods, 200 policies (the cluster of tests/netns/netpol_scale.rs)
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
    let dir = TempDir::new("live");
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
    // Only peer sets change: an element-only batch (netpol/incremental.rs).
    if log.contains("(set elements only, one batch)") {
        let table = ns.table("inet", TABLE).expect("table");
        eprintln!(
            "netpol live scale ({PODS} pods, {} on node-0, {POLICIES} policies): first list + apply {initial:?}; \
             one label change -> committed in {to_commit:?} (debounce 200ms included; {} ms in the loop) \
             as set elements only: {} removed, {} added (of {} elements); nft list table: {} KiB",
            PODS / nodes,
            field("elapsed_ms"),
            field("removed"),
            field("added"),
            field("elements"),
            table.len() / 1024,
        );
        verify_matches_file(&ns, &api, &dir, "node-0");
        assert!(to_commit < Duration::from_secs(30), "{to_commit:?}");
        assert_eq!(d.stop_with(libc::SIGTERM), Some(0));
        return;
    }
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
