//! `--metrics-addr` on a real daemon: /healthz, /readyz and Prometheus /metrics scraped
//! over TCP inside the daemon's network namespace, readiness dropping on a broken config
//! and on a foreign table, and a server that slow, idle and huge requests neither block
//! nor bloat (its RSS read from /proc).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::common::{Netns, NftkitDaemon, poll_until};

/// (status line, body) of `GET path` to 127.0.0.1:port inside `ns`.
fn get(ns: &Netns, port: u16, path: &str) -> Option<(String, String)> {
    let path = path.to_string();
    ns.enter(move || {
        let mut s =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
                .ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    })
}

#[test]
fn daemon_serves_health_readiness_and_metrics() {
    let ns = Netns::new();
    let dir = std::env::temp_dir().join(format!("nftkit-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cidrs: Vec<String> = (0..300)
        .map(|i| format!("10.{}.{}.0/24", i / 100, (i % 100) * 2))
        .collect();
    std::fs::write(
        dir.join("ip-masq-agent"),
        format!("nonMasqueradeCIDRs: [{}]\n", cidrs.join(", ")),
    )
    .unwrap();
    let port = 19000 + (std::process::id() % 1000) as u16;
    let mut d = NftkitDaemon::start(
        &ns,
        &[
            "--metrics-addr",
            &port.to_string(),
            "masquerade",
            "--persist",
            "--resync-interval",
            "1",
            "--config-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(
        poll_until(Duration::from_secs(10), || get(&ns, port, "/readyz")
            .is_some_and(|(s, _)| s.contains("200"))),
        "never ready:\n{}",
        d.log()
    );
    let (status, body) = get(&ns, port, "/healthz").expect("healthz");
    assert!(status.contains("200") && body == "ok\n", "{status} {body}");
    let (status, metrics) = get(&ns, port, "/metrics").expect("metrics");
    assert!(status.contains("200"), "{status}");
    for line in [
        "nftkit_applies_total{table=\"nftkit-masquerade\"} 1",
        "nftkit_ready{table=\"nftkit-masquerade\"} 1",
        "nftkit_set_elements{table=\"nftkit-masquerade\",set=\"nomasq-v4\"} 300",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line}:\n{metrics}"
        );
    }
    assert!(metrics.contains("# TYPE nftkit_errors_total counter"));
    assert_eq!(
        get(&ns, port, "/nope").map(|(s, _)| s.contains("404")),
        Some(true)
    );

    // Someone deletes the table: repaired, counted.
    ns.nft(&["delete", "table", "inet", "nftkit-masquerade"]);
    assert!(
        poll_until(Duration::from_secs(5), || get(&ns, port, "/metrics")
            .is_some_and(|(_, m)| m.contains(
                "nftkit_drift_repairs_total{table=\"nftkit-masquerade\"} 1"
            ))),
        "repair not counted:\n{}",
        d.log()
    );
    // A broken config: not ready, error counted, the daemon keeps running.
    std::fs::write(
        dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.1/8]\n",
    )
    .unwrap();
    assert!(
        poll_until(Duration::from_secs(5), || get(&ns, port, "/readyz")
            .is_some_and(|(s, _)| s.contains("503"))),
        "still ready with a broken config:\n{}",
        d.log()
    );
    let (_, metrics) = get(&ns, port, "/metrics").unwrap();
    assert!(
        metrics.contains("nftkit_ready{table=\"nftkit-masquerade\"} 0"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("nftkit_errors_total{table=\"nftkit-masquerade\"} 0"),
        "{metrics}"
    );
    assert!(d.running());
    // Fixed again: ready again.
    std::fs::write(
        dir.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.0/8]\n",
    )
    .unwrap();
    assert!(poll_until(Duration::from_secs(5), || get(
        &ns, port, "/readyz"
    )
    .is_some_and(|(s, _)| s.contains("200"))));
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_metrics_address_is_exit_2() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .args(["--metrics-addr", "nowhere", "--dry-run", "redirect"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-addr"));
}

/// A masquerade daemon (defaults config, table kept on exit, 1 s resync) serving on
/// 127.0.0.1:`METRICS_PORT` in `ns`, and its config directory; waits until ready.
const METRICS_PORT: u16 = 9153;

fn ready_daemon(ns: &Netns, tag: &str) -> (NftkitDaemon, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("nftkit-{tag}-{}", common::unique_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = NftkitDaemon::start(
        ns,
        &[
            "--metrics-addr",
            &METRICS_PORT.to_string(),
            "masquerade",
            "--persist",
            "--resync-interval",
            "1",
            "--config-dir",
            dir.to_str().unwrap(),
        ],
    );
    assert!(
        poll_until(Duration::from_secs(10), || get(ns, METRICS_PORT, "/readyz")
            .is_some_and(|(s, _)| s.contains("200"))),
        "never ready:\n{}",
        d.log()
    );
    (d, dir)
}

/// The value of the one sample of `name` in the exposition text.
fn sample(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The pid of the only process in `ns` (the daemon).
fn daemon_pid(ns: &Netns) -> u32 {
    let out = common::must(&["ip", "netns", "pids", &ns.name]);
    let pids: Vec<u32> = out
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    assert_eq!(pids.len(), 1, "processes in the namespace: {pids:?}");
    pids[0]
}

/// A field of /proc/PID/status in its unit (kB for VmRSS).
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Runs `f` on a new thread inside `ns` (sockets it makes live there).
fn spawn_in(ns: &Netns, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    let path = ns.path();
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// A client that connects, sends `GET /healthz HTTP/1.1\r\n` and then one byte every
/// `every` (or nothing, if None) for as long as the server keeps it, then reconnects,
/// until `stop`.
fn pester(stop: Arc<AtomicBool>, every: Option<Duration>) {
    let addr = ([127, 0, 0, 1], METRICS_PORT).into();
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        if every.is_some() && s.write_all(b"GET /healthz HTTP/1.1\r\n").is_err() {
            continue;
        }
        let mut last = Instant::now();
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            // Closed by the server: EOF or reset (a 408 first is read and dropped).
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
            if let Some(every) = every
                && last.elapsed() >= every
            {
                if s.write_all(b"X").is_err() {
                    break;
                }
                last = Instant::now();
            }
        }
    }
}

#[test]
fn slow_idle_and_huge_requests_neither_block_healthz_nor_grow_memory() {
    let _turn = common::cpu_heavy();
    let ns = Netns::new();
    let (d, dir) = ready_daemon(&ns, "metrics-dos");
    let pid = daemon_pid(&ns);
    let threads_before = proc_status(pid, "Threads");
    // 20 slowloris clients (one byte a second) and 20 idle ones, all reconnecting when
    // the server closes them.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..40)
        .map(|i| {
            let stop = stop.clone();
            let every = (i < 20).then_some(Duration::from_secs(1));
            spawn_in(&ns, move || pester(stop, every))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    let mut max_threads = 0;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = get(&ns, METRICS_PORT, "/healthz");
        let took = started.elapsed();
        assert!(
            answer.as_ref().is_some_and(|(s, _)| s.contains("200")),
            "/healthz with 40 slow/idle clients: {answer:?} after {took:?}\n{}",
            d.log()
        );
        worst = worst.max(took);
        max_threads = max_threads.max(proc_status(pid, "Threads"));
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    eprintln!(
        "/healthz with 20 slowloris + 20 idle clients: worst {worst:?}; threads {threads_before} -> max {max_threads}"
    );
    assert!(worst < Duration::from_secs(1), "worst /healthz {worst:?}");
    assert!(
        max_threads <= threads_before + 64,
        "serving threads unbounded: {threads_before} -> {max_threads}"
    );

    // A 256 MiB request line: the connection is closed after 8 KiB, memory stays flat.
    let rss_before = proc_status(pid, "VmRSS");
    let (sent, took) = ns.enter(|| {
        let mut s = TcpStream::connect_timeout(
            &([127, 0, 0, 1], METRICS_PORT).into(),
            Duration::from_secs(2),
        )
        .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let mut sent = 0usize;
        s.write_all(b"GET /").unwrap();
        let chunk = vec![b'a'; 1 << 20];
        while sent < 256 << 20 {
            match s.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        (sent, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let rss_after = proc_status(pid, "VmRSS");
    eprintln!(
        "256 MiB request line: closed after {sent} bytes sent ({took:?}); VmRSS {rss_before} kB -> {rss_after} kB"
    );
    assert!(sent < 64 << 20, "the server read on: {sent} bytes");
    assert!(
        rss_after < rss_before + 4096,
        "VmRSS grew {rss_before} kB -> {rss_after} kB"
    );
    let (status, _) = get(&ns, METRICS_PORT, "/healthz").expect("healthz after the flood");
    assert!(status.contains("200"), "{status}");
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readiness_follows_the_kernel_table_and_the_last_success_advances() {
    let ns = Netns::new();
    let started = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (mut d, dir) = ready_daemon(&ns, "metrics-ready");
    let last_success = || {
        get(&ns, METRICS_PORT, "/metrics")
            .and_then(|(_, m)| sample(&m, "nftkit_last_success_timestamp_seconds"))
            .unwrap_or(0.0)
    };
    let first = last_success();
    assert!(first >= started - 1.0, "{first} < {started}");
    // In sync, every resync (1 s) is a success.
    assert!(
        poll_until(Duration::from_secs(5), || last_success() > first),
        "nftkit_last_success_timestamp_seconds stuck at {first}:\n{}",
        d.log()
    );
    // Someone else's table of our name, swapped in atomically: refused, so not ready.
    ns.nft_load(
        "delete table inet nftkit-masquerade\ntable inet nftkit-masquerade {\n chain c {\n }\n}\n",
    );
    assert!(
        poll_until(Duration::from_secs(5), || get(&ns, METRICS_PORT, "/readyz")
            .is_some_and(
                |(s, b)| s.contains("503") && b.contains("not managed by nftkit")
            )),
        "still ready with a foreign table: {:?}\n{}",
        get(&ns, METRICS_PORT, "/readyz"),
        d.log()
    );
    let (_, metrics) = get(&ns, METRICS_PORT, "/metrics").unwrap();
    assert_eq!(sample(&metrics, "nftkit_ready"), Some(0.0), "{metrics}");
    assert!(d.running());
    let (status, _) = get(&ns, METRICS_PORT, "/healthz").unwrap();
    assert!(status.contains("200"), "the loop still ticks: {status}");
    // Gone again: re-created, ready.
    ns.nft(&["delete", "table", "inet", "nftkit-masquerade"]);
    assert!(
        poll_until(Duration::from_secs(5), || get(&ns, METRICS_PORT, "/readyz")
            .is_some_and(|(s, _)| s.contains("200"))),
        "not ready again:\n{}",
        d.log()
    );
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `local-address` without `--setup-iptables` (address only) serves the endpoints too, so
/// a DaemonSet's probes work in that mode: ready once the address is in place.
#[test]
fn address_only_local_address_serves_health_and_readiness() {
    let ns = Netns::new();
    let port = 20000 + (std::process::id() % 1000) as u16;
    let d = NftkitDaemon::start(
        &ns,
        &[
            "--metrics-addr",
            &port.to_string(),
            "local-address",
            "--ip-address",
            "192.0.2.77",
            "--sync-interval=1s",
        ],
    );
    assert!(
        poll_until(Duration::from_secs(10), || get(&ns, port, "/readyz")
            .is_some_and(|(s, _)| s.contains("200"))),
        "never ready:\n{}",
        d.log()
    );
    let (status, _) = get(&ns, port, "/healthz").expect("healthz");
    assert!(status.contains("200"), "{status}");
    let (_, metrics) = get(&ns, port, "/metrics").expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("nftkit_ready{") && l.ends_with(" 1")),
        "{metrics}"
    );
}
