//! `--metrics-addr` on a real daemon: /healthz, /readyz and Prometheus /metrics scraped
//! over TCP inside the daemon's network namespace, readiness dropping on a broken config.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Netns, NftkitDaemon, poll_until};

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
