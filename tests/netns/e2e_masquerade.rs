//! End-to-end tests for `nftkit masquerade` (ip-masq-agent-v2): real packets through a
//! router namespace running nftkit, the real binary, real config directories.
//!
//! ```text
//!  client eth0 10.244.0.2/24          router c0 10.244.0.1/24      s0 192.0.2.1/24     server eth0 192.0.2.10/24
//!         2001:db8:1::2/64  -------->         2001:db8:1::1/64        2001:db8:2::1/64 ------>  2001:db8:2::10/64
//!         default via router          (ip_forward on, nftkit here)                      also 203.0.113.10, 10.200.0.10,
//!                                                                                        169.254.169.254, 198.51.100.7,
//!                                                                                        2001:db8:3::7, fd00::9
//! ```
//! The server answers TCP on port 80 of each address and records the peer: the router's
//! 192.0.2.1 / 2001:db8:2::1 means masqueraded, the client's own address means not.
//! Needs root; run through `scripts/test.sh`.

use crate::common::*;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const TABLE: &str = "nftkit-masquerade";
const CLIENT_V4: &str = "10.244.0.2";
const CLIENT_V6: &str = "2001:db8:1::2";
const ROUTER_UP_V4: &str = "192.0.2.1";
const ROUTER_UP_V6: &str = "2001:db8:2::1";
/// Outside every default range.
const OUTSIDE: &str = "203.0.113.10";
/// Inside RFC 1918 (a default non-masquerade range).
const PRIVATE: &str = "10.200.0.10";
const LINK_LOCAL: &str = "169.254.169.254";
/// Only in the full reserved list (--nomasq-all-reserved-ranges).
const RESERVED: &str = "198.51.100.7";
const OUTSIDE_V6: &str = "2001:db8:3::7";
const ULA_V6: &str = "fd00::9";

/// Interval used by daemon tests, and how long a change may take to show: one interval
/// plus slack for a loaded 2-core machine.
const INTERVAL: &str = "1";
const WITHIN_ONE_INTERVAL: Duration = Duration::from_millis(2500);

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "nftkit-e2e-masq-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    fn s(&self) -> String {
        self.0.display().to_string()
    }
    /// Write a file atomically (rename), as kubelet's ConfigMap writer does.
    fn write(&self, name: &str, content: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.0.join(name)).unwrap();
    }
    /// Publish `keys` the way kubelet updates a ConfigMap volume (its AtomicWriter): a new
    /// `..<timestamp>` directory, `..data` swapped to it by rename, a `KEY -> ..data/KEY`
    /// link per key, links of removed keys deleted, the old directory removed.
    fn configmap(&self, keys: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        static N: AtomicUsize = AtomicUsize::new(0);
        let ts = format!(
            "..2024_06_01_12_00_00.{:09}",
            N.fetch_add(1, Ordering::SeqCst)
        );
        std::fs::create_dir(self.0.join(&ts)).unwrap();
        for (k, v) in keys {
            std::fs::write(self.0.join(&ts).join(k), v).unwrap();
        }
        let old = std::fs::read_link(self.0.join("..data")).ok();
        symlink(&ts, self.0.join("..data_tmp")).unwrap();
        std::fs::rename(self.0.join("..data_tmp"), self.0.join("..data")).unwrap();
        for (k, _) in keys {
            if std::fs::symlink_metadata(self.0.join(k)).is_err() {
                symlink(format!("..data/{k}"), self.0.join(k)).unwrap();
            }
        }
        for e in std::fs::read_dir(&self.0).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("..")
                && e.file_type().unwrap().is_symlink()
                && !keys.iter().any(|(k, _)| *k == name)
            {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(self.0.join(old)).unwrap();
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Lab {
    client: Netns,
    router: Netns,
    _server: Netns,
    srv: TcpServer,
    /// `--config-dir`.
    config: TempDir,
    /// NFTKIT_STATE_DIR (status reports), so tests never write /run.
    state: TempDir,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let client = Netns::new();
        let router = Netns::new();
        let server = Netns::new();
        veth(&client, "eth0", &router, "c0");
        veth(&router, "s0", &server, "eth0");
        addr_add(&client, "eth0", &format!("{CLIENT_V4}/24"));
        addr_add(&client, "eth0", &format!("{CLIENT_V6}/64"));
        addr_add(&router, "c0", "10.244.0.1/24");
        addr_add(&router, "c0", "2001:db8:1::1/64");
        addr_add(&router, "s0", &format!("{ROUTER_UP_V4}/24"));
        addr_add(&router, "s0", &format!("{ROUTER_UP_V6}/64"));
        addr_add(&server, "eth0", "192.0.2.10/24");
        addr_add(&server, "eth0", "2001:db8:2::10/64");
        for a in [OUTSIDE, PRIVATE, LINK_LOCAL, RESERVED] {
            addr_add(&server, "eth0", &format!("{a}/32"));
        }
        for a in [OUTSIDE_V6, ULA_V6] {
            addr_add(&server, "eth0", &format!("{a}/128"));
        }
        client.must(&["ip", "route", "add", "default", "via", "10.244.0.1"]);
        client.must(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:1::1",
        ]);
        server.must(&["ip", "route", "add", "default", "via", ROUTER_UP_V4]);
        server.must(&["ip", "-6", "route", "add", "default", "via", ROUTER_UP_V6]);
        for dst in [OUTSIDE, PRIVATE, LINK_LOCAL, RESERVED] {
            route_add(&router, &format!("{dst}/32"), "192.0.2.10");
        }
        for dst in [OUTSIDE_V6, ULA_V6] {
            route_add(&router, &format!("{dst}/128"), "2001:db8:2::10");
        }
        router.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.must(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let listeners: Vec<(std::net::SocketAddr, &str)> =
            [OUTSIDE, PRIVATE, LINK_LOCAL, RESERVED, OUTSIDE_V6, ULA_V6]
                .iter()
                .map(|a| (sa(a, 80), *a))
                .collect();
        let srv = TcpServer::start(&server, &listeners);
        Lab {
            client,
            router,
            _server: server,
            srv,
            config: TempDir::new("cfg"),
            state: TempDir::new("state"),
        }
    }

    /// A lab whose router got `masquerade --once` with 10.0.0.0/8 and 198.18.0.0/15 not
    /// masqueraded; the table as nft lists it.
    fn with_two_ranges_applied() -> (Lab, String) {
        let lab = Lab::new();
        lab.config.write(
            "ip-masq-agent",
            "nonMasqueradeCIDRs: [10.0.0.0/8, 198.18.0.0/15]\n",
        );
        lab.masq_ok(&["--once"]);
        let applied = lab.table().expect("table applied");
        (lab, applied)
    }

    /// `nft delete element` of `cidr` from the IPv4 set, by hand.
    fn delete_element(&self, cidr: &str) {
        let elements = format!("{{ {cidr} }}");
        self.router.must(&[
            "nft",
            "delete",
            "element",
            "inet",
            TABLE,
            "nomasq-v4",
            &elements,
        ]);
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("NFTKIT_STATE_DIR", self.state.s())]
    }

    /// nftkit in the router with `args` after `masquerade --config-dir DIR`.
    fn masq(&self, args: &[&str]) -> Out {
        let mut v = vec!["masquerade", "--config-dir"];
        let dir = self.config.s();
        v.push(&dir);
        v.extend_from_slice(args);
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.router.nftkit(&env, &v)
    }

    fn masq_ok(&self, args: &[&str]) -> Out {
        let out = self.masq(args);
        assert!(
            out.success(),
            "nftkit masquerade failed:\n{out}\n--- router ruleset ---\n{}",
            self.router.ruleset()
        );
        out
    }

    /// nftkit in the router with other subcommands (status, verify, delete).
    fn nftkit(&self, args: &[&str]) -> Out {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.router.nftkit(&env, args)
    }

    /// The source address the server saw for a new TCP connection from the client to
    /// `dst`:80 (None if the connection failed).
    fn seen_from(&self, dst: &str) -> Option<IpAddr> {
        let before = self.srv.hits().len();
        let out = tcp_connect(&self.client, 0, 0, ip(dst), 80);
        if answered_tag(&out).as_deref() != Some(dst) {
            return None;
        }
        // The server records the hit after the client closes; wait briefly.
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some(h) = self.srv.hits()[before..].iter().find(|h| h.tag == dst) {
                return Some(h.peer.ip());
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Asserts that traffic to `dst` arrives masqueraded (from the router) or not.
    fn expect(&self, dst: &str, masqueraded: bool) {
        let client = if dst.contains(':') {
            CLIENT_V6
        } else {
            CLIENT_V4
        };
        let router = if dst.contains(':') {
            ROUTER_UP_V6
        } else {
            ROUTER_UP_V4
        };
        let want = ip(if masqueraded { router } else { client });
        let got = self.seen_from(dst);
        if got != Some(want) {
            panic!(
                "client -> {dst}: expected source {want} ({}), server saw {got:?}\n--- router ruleset ---\n{}",
                if masqueraded {
                    "masqueraded"
                } else {
                    "not masqueraded"
                },
                self.router.ruleset()
            );
        }
    }

    fn table(&self) -> Option<String> {
        self.router.table("inet", TABLE)
    }

    /// A background `nftkit -v masquerade --config-dir DIR --resync-interval INTERVAL
    /// ARGS` daemon in the router.
    fn daemon(&self, args: &[&str]) -> NftkitDaemon {
        let dir = self.config.s();
        let mut v = vec![
            "masquerade",
            "--config-dir",
            &dir,
            "--resync-interval",
            INTERVAL,
        ];
        v.extend_from_slice(args);
        let state = self.state.s();
        NftkitDaemon::start_with_env(&self.router, &[("NFTKIT_STATE_DIR", &state)], &v)
    }
}

// ---------------------------------------------------------------------------
// One-shot runs
// ---------------------------------------------------------------------------

/// No config files: RFC 1918 and link-local keep their source, everything else is
/// masqueraded, IPv6 untouched without --enable-ipv6; verify/status/delete work.
#[test]
fn defaults_masquerade_outside_rfc1918_and_delete_restores() {
    let lab = Lab::new();
    // Harness check: without rules nothing is masqueraded.
    lab.expect(OUTSIDE, false);
    lab.config
        .write("README", "nonMasqueradeCIDRs: [203.0.113.0/24]\n"); // ignored name
    let out = lab.masq_ok(&["--once"]);
    assert!(out.stderr.contains("RFC 1918"), "{out}");
    let t = lab.table().expect("table applied");
    for needle in [
        "type nat hook postrouting priority srcnat",
        "fib daddr type != local jump IP-MASQ-AGENT",
        "chain IP-MASQ-AGENT",
        "set nomasq-v4",
        "10.0.0.0/8",
        "masquerade",
    ] {
        assert!(t.contains(needle), "{needle:?} missing:\n{t}");
    }
    lab.expect(OUTSIDE, true);
    lab.expect(RESERVED, true);
    lab.expect(PRIVATE, false);
    lab.expect(LINK_LOCAL, false);
    lab.expect(OUTSIDE_V6, false);
    lab.expect(ULA_V6, false);

    let v = lab.nftkit(&["verify", "masquerade", "--config-dir", &lab.config.s()]);
    assert_eq!(v.code, Some(0), "{v}");
    // The nft/jq health check script agrees.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/verify-ruleset.sh");
    let v = lab
        .router
        .run(&[script, "--set", "nomasq-v4", "masquerade"]);
    assert_eq!(v.code, Some(0), "{v}");
    // Verify with other flags sees drift (exit 3).
    let v = lab.nftkit(&[
        "verify",
        "masquerade",
        "--config-dir",
        &lab.config.s(),
        "--nomasq-all-reserved-ranges",
    ]);
    assert_eq!(v.code, Some(3), "{v}");
    // Elements as users write them: CIDRs, not the kernel's inclusive ranges.
    assert!(v.stdout.contains("198.51.100.0/24"), "{v}");
    assert!(!v.stdout.contains("198.51.100.0-198.51.100.255"), "{v}");
    let s = lab.nftkit(&["status"]);
    assert!(s.success() && s.stdout.contains(TABLE), "{s}");
    // A one-shot run leaves no daemon report.
    assert!(!s.stdout.contains("masquerade:"), "{s}");
    // Re-running is idempotent.
    lab.masq_ok(&["--once"]);
    assert_eq!(lab.table().as_deref(), Some(t.as_str()));

    let d = lab.nftkit(&["delete", "masquerade"]);
    assert!(d.success(), "{d}");
    assert!(lab.table().is_none());
    lab.expect(OUTSIDE, false);
}

/// Two files (one through the ConfigMap `..data` symlink layout, one JSON) are merged;
/// a file whose name lacks the prefix is ignored; masqLinkLocal from one file wins.
#[test]
fn config_files_are_merged() {
    let lab = Lab::new();
    let data = lab.config.path().join("..2024_06_01_12_00_00.000000001");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(
        data.join("ip-masq-agent"),
        "nonMasqueradeCIDRs:\n  - 203.0.113.0/24\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "..2024_06_01_12_00_00.000000001",
        lab.config.path().join("..data"),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        "..data/ip-masq-agent",
        lab.config.path().join("ip-masq-agent"),
    )
    .unwrap();
    lab.config.write(
        "ip-masq-agent-reconciled",
        r#"{"nonMasqueradeCIDRs": ["10.0.0.0/8"], "masqLinkLocal": true}"#,
    );
    lab.config
        .write("other", "nonMasqueradeCIDRs: [198.51.100.0/24]\n");
    lab.masq_ok(&["--once"]);
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, false);
    lab.expect(LINK_LOCAL, true);
    lab.expect(RESERVED, true);
}

/// A present but empty file drops the RFC 1918 defaults (logged as a notice).
#[test]
fn empty_config_file_drops_the_defaults() {
    let lab = Lab::new();
    lab.config.write("ip-masq-agent", "");
    let out = lab.masq_ok(&["--once"]);
    assert!(out.stderr.contains("default ranges are not used"), "{out}");
    lab.expect(PRIVATE, true);
    lab.expect(OUTSIDE, true);
    lab.expect(LINK_LOCAL, false);
}

/// A missing config dir means the defaults, with a warning (upstream crashed).
#[test]
fn missing_config_dir_means_defaults_with_a_warning() {
    let lab = Lab::new();
    let gone = lab.config.path().join("does-not-exist");
    let out = lab.router.nftkit(
        &[("NFTKIT_STATE_DIR", lab.state.s().as_str())],
        &[
            "masquerade",
            "--once",
            "--config-dir",
            &gone.display().to_string(),
        ],
    );
    assert!(out.success(), "{out}");
    assert!(
        out.stderr.contains("WARN") && out.stderr.contains("does not exist"),
        "{out}"
    );
    lab.expect(PRIVATE, false);
    lab.expect(OUTSIDE, true);
}

/// An invalid file is exit 2 with the file and value named; nothing is applied, and an
/// existing table stays byte-identical.
#[test]
fn invalid_config_is_exit_2_and_changes_nothing() {
    let lab = Lab::new();
    lab.config
        .write("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.1/8]\n");
    let out = lab.masq(&["--once"]);
    assert_eq!(out.code, Some(2), "{out}");
    let line = out.stderr.lines().last().unwrap_or_default();
    assert!(
        line.contains("ip-masq-agent")
            && line.contains("10.0.0.1/8")
            && line.contains("10.0.0.0/8"),
        "{out}"
    );
    assert!(lab.table().is_none(), "nothing may be applied");
    assert_eq!(lab.router.ruleset().trim(), "");

    lab.config
        .write("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n");
    lab.masq_ok(&["--once"]);
    let before = lab.table().unwrap();
    for bad in [
        "nonMasqueradeCIDRs: [fd00::/8]\n",
        "nonMasqueradeCIDRs: [10.0.0.0/8, \"\"]\n",
        "{*",
    ] {
        lab.config.write("ip-masq-b", bad);
        let out = lab.masq(&["--once"]);
        assert_eq!(out.code, Some(2), "{bad}: {out}");
        assert!(out.stderr.contains("ip-masq-b"), "{bad}: {out}");
        assert_eq!(lab.table().as_deref(), Some(before.as_str()), "{bad}");
    }
}

/// Files that disagree on a boolean, or repeat a CIDR, are reported naming the files
/// (log and status); the merge stays upstream's (any true wins, CIDRs once).
#[test]
fn disagreeing_files_are_reported() {
    let lab = Lab::new();
    lab.config.write(
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [203.0.113.0/24]\nmasqLinkLocal: false\n",
    );
    lab.config.write(
        "ip-masq-agent-2",
        "nonMasqueradeCIDRs: [203.0.113.0/24, 10.0.0.0/8]\nmasqLinkLocal: true\n",
    );
    let out = lab.masq_ok(&["--once"]);
    let warn: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("conflicting"))
        .collect();
    let a = format!("{}/ip-masq-agent", lab.config.s());
    let b = format!("{}/ip-masq-agent-2", lab.config.s());
    assert!(
        warn.iter()
            .any(|l| l.contains("masqLinkLocal") && l.contains(&a) && l.contains(&b)),
        "{out}"
    );
    assert!(
        warn.iter()
            .any(|l| l.contains("203.0.113.0/24") && l.contains(&a) && l.contains(&b)),
        "{out}"
    );
    lab.expect(LINK_LOCAL, true);
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, false);

    // A daemon also reports them in `status` while it runs.
    let mut d = lab.daemon(&["--persist=false"]);
    d.wait_log("reconciling", Duration::from_secs(10));
    assert!(d.log().contains("conflicting configuration"), "{}", d.log());
    let s = lab.nftkit(&["status"]);
    assert!(
        s.stdout.contains("masquerade: ready; daemon pid")
            && s.stdout.contains(&format!(
                "conflict: masqLinkLocal is true in {b} but false in {a}"
            ))
            && s.stdout.contains("conflict: CIDR 203.0.113.0/24"),
        "{s}"
    );
    let j = lab.nftkit(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("status --json");
    assert_eq!(
        v["masquerade"][TABLE]["conflicts"]
            .as_array()
            .map(|a| a.len()),
        Some(2),
        "{v}"
    );
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    // Its report goes with it (as its table does with --persist=false).
    assert_eq!(
        std::fs::read_dir(lab.state.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".json"))
            .count(),
        0
    );
}

/// `--nomasq-all-reserved-ranges` exempts the whole reserved list (no config files).
#[test]
fn all_reserved_ranges() {
    let lab = Lab::new();
    lab.masq_ok(&["--once", "--nomasq-all-reserved-ranges"]);
    lab.expect(RESERVED, false);
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, false);
    lab.expect(LINK_LOCAL, false);
}

/// `--enable-ipv6`: no IPv6 defaults (ULA masqueraded too); IPv6 CIDRs from files exempt.
#[test]
fn ipv6_with_enable_ipv6() {
    let lab = Lab::new();
    lab.masq_ok(&["--once", "--enable-ipv6"]);
    lab.expect(OUTSIDE_V6, true);
    lab.expect(ULA_V6, true);
    lab.expect(PRIVATE, false);
    lab.config.write(
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [fd00::/8, 10.0.0.0/8]\n",
    );
    lab.masq_ok(&["--once", "--enable-ipv6=true", "--random-fully"]);
    assert!(lab.table().unwrap().contains("fully-random"));
    lab.expect(ULA_V6, false);
    lab.expect(OUTSIDE_V6, true);
    lab.expect(OUTSIDE, true);
    // The same file without --enable-ipv6 is refused, as upstream.
    let out = lab.masq(&["--once"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--enable-ipv6"), "{out}");
}

/// 50 000 nonMasqueradeCIDRs from one file apply in one go and read back complete.
#[test]
fn fifty_thousand_cidrs_apply() {
    let lab = Lab::new();
    let mut text = String::from("nonMasqueradeCIDRs:\n  - 203.0.113.0/24\n");
    for i in 0..50_000u32 {
        // /30s eight addresses apart: no two merge.
        let a = std::net::Ipv4Addr::from(0x0a00_0000u32 + i * 8);
        text.push_str(&format!("  - {a}/30\n"));
    }
    lab.config.write("ip-masq-agent", &text);
    let started = Instant::now();
    let out = lab.masq_ok(&["--once"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "took {took:?}\n{out}");
    let j = lab.nftkit(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&j.stdout).expect("status --json");
    assert_eq!(v["tables"][0]["elements"], 50_001, "{v}");
    let v = lab.nftkit(&["verify", "masquerade", "--config-dir", &lab.config.s()]);
    assert_eq!(v.code, Some(0), "{v}");
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, true);
    eprintln!("50 000 CIDRs: nftkit masquerade --once took {took:?}");
}

// ---------------------------------------------------------------------------
// Daemon
// ---------------------------------------------------------------------------

/// Config changes are picked up within one interval; a broken config later keeps the
/// last good rules (logged naming the file, status NOT READY) and the daemon keeps
/// running; with --persist=false the owned table resists outside deletion and dies with
/// the process.
#[test]
fn daemon_follows_config_and_keeps_last_good_rules() {
    let lab = Lab::new();
    // Every update goes through the ConfigMap volume layout, as in a real DaemonSet.
    lab.config
        .configmap(&[("ip-masq-agent", "nonMasqueradeCIDRs: [203.0.113.0/24]\n")]);
    let mut d = lab.daemon(&["--persist=false"]);
    d.wait_log("reconciling", Duration::from_secs(10));
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, true);

    // Config change: picked up within one interval.
    lab.config
        .configmap(&[("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n")]);
    assert!(
        poll_until(WITHIN_ONE_INTERVAL, || lab
            .table()
            .is_some_and(|t| t.contains("10.0.0.0/8"))),
        "change not applied within one interval:\n{}",
        d.log()
    );
    lab.expect(OUTSIDE, true);
    lab.expect(PRIVATE, false);

    // Broken config: old rules stay, error names the file, daemon keeps running.
    let good = lab.table().unwrap();
    lab.config
        .configmap(&[("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.1/8]\n")]);
    d.wait_log("10.0.0.1/8", WITHIN_ONE_INTERVAL);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(d.running(), "daemon exited on a bad config:\n{}", d.log());
    assert!(
        d.log().lines().any(|l| l.contains("ERROR")
            && l.contains("keeping the last good rules")
            && l.contains("ip-masq-agent")),
        "{}",
        d.log()
    );
    assert_eq!(lab.table().as_deref(), Some(good.as_str()));
    lab.expect(PRIVATE, false);
    let s = lab.nftkit(&["status"]);
    assert!(
        s.stdout.contains("NOT READY") && s.stdout.contains("10.0.0.1/8"),
        "{s}"
    );

    // Fixed again (and a second file): applied.
    lab.config.configmap(&[
        ("ip-masq-agent", "nonMasqueradeCIDRs: [10.0.0.0/8]\n"),
        ("ip-masq-agent-2", "nonMasqueradeCIDRs: [203.0.113.0/24]\n"),
    ]);
    assert!(
        poll_until(WITHIN_ONE_INTERVAL, || lab
            .table()
            .is_some_and(|t| t.contains("203.0.113.0/24"))),
        "{}",
        d.log()
    );
    lab.expect(OUTSIDE, false);
    // Removing every file brings back the defaults.
    lab.config.configmap(&[]);
    assert!(
        poll_until(WITHIN_ONE_INTERVAL, || lab
            .table()
            .is_some_and(|t| t.contains("192.168.0.0/16"))),
        "{}",
        d.log()
    );

    // With --persist=false the table is the process's: others cannot delete it ...
    let del = lab.router.nft(&["delete", "table", "inet", TABLE]);
    assert!(
        !del.success(),
        "owner flag should refuse outside deletion: {del}"
    );
    assert!(lab.table().is_some());
    // ... and it goes away with the process. SIGTERM exits 0.
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(lab.table().is_none(), "table should die with the daemon");
    lab.expect(OUTSIDE, false);
}

/// With --persist: an external delete or flush is repaired within one interval, a
/// resync with unchanged config sends nothing (nft monitor stays silent), and the table
/// survives SIGTERM.
#[test]
fn daemon_repairs_drift_and_noop_resync_is_silent() {
    let lab = Lab::new();
    let mut d = lab.daemon(&["--persist"]);
    d.wait_log("reconciling", Duration::from_secs(10));
    lab.expect(OUTSIDE, true);

    // No-op resyncs: zero ruleset events while several resyncs run.
    let before = d.count("in sync; nothing sent");
    let mon = lab
        .router
        .cmd(&["timeout", "3.5", "nft", "monitor"])
        .timeout(Duration::from_secs(10))
        .run();
    let resyncs = d.count("in sync; nothing sent") - before;
    assert!(
        resyncs >= 2,
        "expected >= 2 resyncs in 3.5 s, saw {resyncs}:\n{}",
        d.log()
    );
    assert_eq!(
        mon.code,
        Some(124),
        "nft monitor should run until timeout: {mon}"
    );
    assert_eq!(
        mon.stdout.trim(),
        "",
        "no-op resync changed the ruleset:\n{mon}"
    );

    // Positive control: a config change does show up in nft monitor.
    let router = &lab.router;
    let mon = std::thread::scope(|s| {
        let h = s.spawn(|| {
            router
                .cmd(&["timeout", "3", "nft", "monitor"])
                .timeout(Duration::from_secs(10))
                .run()
        });
        std::thread::sleep(Duration::from_millis(500));
        lab.config
            .write("ip-masq-agent", "nonMasqueradeCIDRs: [203.0.113.0/24]\n");
        h.join().unwrap()
    });
    assert!(
        mon.stdout.contains("table inet nftkit-masquerade"),
        "config change not seen by nft monitor:\n{mon}\n{}",
        d.log()
    );
    assert!(poll_until(WITHIN_ONE_INTERVAL, || lab
        .table()
        .is_some_and(|t| t.contains("203.0.113.0/24"))));
    lab.expect(OUTSIDE, false);

    // External delete: re-created within one interval.
    lab.router.must(&["nft", "delete", "table", "inet", TABLE]);
    assert!(
        poll_until(WITHIN_ONE_INTERVAL, || lab.table().is_some()),
        "deleted table not repaired:\n{}",
        d.log()
    );
    // External flush of the masquerade chain: repaired.
    lab.router
        .must(&["nft", "flush", "chain", "inet", TABLE, "IP-MASQ-AGENT"]);
    assert!(
        poll_until(WITHIN_ONE_INTERVAL, || lab
            .table()
            .is_some_and(|t| t.contains("masquerade comment"))),
        "flushed chain not repaired:\n{}",
        d.log()
    );
    assert!(d.log().contains("kernel differs from desired state"));
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, true);

    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(lab.table().is_some(), "--persist keeps the table");
    let v = lab.nftkit(&["verify", "masquerade", "--config-dir", &lab.config.s()]);
    assert_eq!(v.code, Some(0), "{v}");
    assert!(lab.nftkit(&["delete", "masquerade"]).success());
    assert!(lab.table().is_none());
}

/// Fail safe by default: a SIGKILLed daemon (no flag) leaves its table, so traffic is
/// still masqueraded and exemptions still hold; a restarted daemon adopts the table.
#[test]
fn daemon_table_survives_sigkill_by_default() {
    let lab = Lab::new();
    lab.config
        .configmap(&[("ip-masq-agent", "nonMasqueradeCIDRs: [203.0.113.0/24]\n")]);
    let mut d = lab.daemon(&[]);
    d.wait_log("reconciling", Duration::from_secs(10));
    let before = lab.table().expect("table");
    assert!(
        !before.contains("flags owner"),
        "default must persist:\n{before}"
    );
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        lab.table().as_deref(),
        Some(before.as_str()),
        "table lost with its daemon"
    );
    lab.expect(OUTSIDE, false);
    lab.expect(PRIVATE, true);
    let mut d = lab.daemon(&[]);
    d.wait_log("reconciling", Duration::from_secs(10));
    assert_eq!(lab.table().as_deref(), Some(before.as_str()));
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(lab.table().is_some(), "SIGTERM keeps a persisting table");
    lab.expect(PRIVATE, true);
    assert!(lab.nftkit(&["delete", "masquerade"]).success());
}

/// A bad config at daemon start is exit 2 and nothing is applied.
#[test]
fn daemon_bad_config_at_start_is_exit_2() {
    let lab = Lab::new();
    lab.config
        .write("ip-masq-agent", "masqLinkLocal: perhaps\n");
    let mut d = lab.daemon(&[]);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(2), "{}", d.log());
    assert!(d.log().contains("ip-masq-agent") && d.log().contains("perhaps"));
    assert!(lab.table().is_none());
}

/// `masquerade --once` run again with an unchanged config sends nothing (issue 20: no
/// ruleset events, `-v` says so), yet any difference is still found: an element added
/// by hand, a flushed chain, and a table of our name that lacks the ownership comment
/// (refused, exit 1, left as it was) each stop the shortcut.
#[test]
fn once_rerun_with_unchanged_config_sends_nothing_but_sees_every_difference() {
    let (lab, applied) = Lab::with_two_ranges_applied();
    lab.expect(OUTSIDE, true);

    // The re-run: nothing reaches the kernel.
    let router = &lab.router;
    let (mon, out) = std::thread::scope(|s| {
        let h = s.spawn(|| {
            router
                .cmd(&["timeout", "2.5", "nft", "monitor"])
                .timeout(Duration::from_secs(10))
                .run()
        });
        std::thread::sleep(Duration::from_millis(500));
        let out = lab.masq_ok(&["--once", "-v"]);
        (h.join().unwrap(), out)
    });
    assert!(
        out.stderr.contains("unchanged, nothing sent"),
        "re-run should say it sent nothing:\n{out}"
    );
    assert_eq!(
        mon.code,
        Some(124),
        "nft monitor should run until timeout: {mon}"
    );
    assert_eq!(
        mon.stdout.trim(),
        "",
        "unchanged re-run changed the ruleset:\n{mon}"
    );
    assert_eq!(lab.table().as_deref(), Some(applied.as_str()));

    // An element added by hand (only a full element compare sees it) is put right.
    lab.router.must(&[
        "nft",
        "add",
        "element",
        "inet",
        TABLE,
        "nomasq-v4",
        "{ 198.51.100.0/24 }",
    ]);
    let out = lab.masq_ok(&["--once", "-v"]);
    assert!(!out.stderr.contains("unchanged, nothing sent"), "{out}");
    assert_eq!(lab.table().as_deref(), Some(applied.as_str()));

    // A flushed chain is put right, and packets are masqueraded again.
    lab.router
        .must(&["nft", "flush", "chain", "inet", TABLE, "IP-MASQ-AGENT"]);
    lab.expect(OUTSIDE, false);
    let out = lab.masq_ok(&["--once", "-v"]);
    assert!(!out.stderr.contains("unchanged, nothing sent"), "{out}");
    assert_eq!(lab.table().as_deref(), Some(applied.as_str()));
    lab.expect(OUTSIDE, true);

    // The same table without our comment is someone else's: refused, never "unchanged".
    let dry = lab.masq_ok(&["--dry-run"]).stdout;
    // The table's own comment is the only line indented once.
    let table_comment = "\tcomment \"managed by nftkit masquerade\"";
    let foreign: Vec<&str> = dry.lines().filter(|l| *l != table_comment).collect();
    assert_eq!(foreign.len() + 1, dry.lines().count(), "{dry}");
    let foreign = foreign.join("\n");
    lab.router.nft_load(&foreign);
    let before = lab.table().expect("foreign table");
    let out = lab.masq(&["--once"]);
    assert_eq!(
        out.code,
        Some(1),
        "a table without our comment must be refused:\n{out}"
    );
    assert!(out.stderr.contains("not managed by nftkit"), "{out}");
    assert_eq!(lab.table().as_deref(), Some(before.as_str()));
}

/// The one-shot re-run skips the element dump only while the table's record proves
/// nothing was committed since nftkit's own batch wrote the elements (backend/netlink/
/// record.rs); any commit in the namespace, a table nftkit did not write, or a changed
/// config means the elements are read and compared again. nft sees the comment only.
#[test]
fn rerun_skips_the_element_dump_only_while_nothing_was_committed_since() {
    const NOT_READ: &str = "nothing committed since: not read";
    const UNCHANGED: &str = "unchanged, nothing sent";
    let (lab, applied) = Lab::with_two_ranges_applied();
    // nft lists the table with its comment only (the record is user data nft skips).
    assert_eq!(
        applied
            .matches("comment \"managed by nftkit masquerade\"")
            .count(),
        applied.matches("comment").count(),
        "{applied}"
    );
    assert!(lab.router.nft(&["-j", "list", "ruleset"]).success());

    let out = lab.masq_ok(&["--once", "-vv"]);
    assert!(out.stderr.contains(NOT_READ), "{out}");
    assert!(out.stderr.contains(UNCHANGED), "{out}");

    // Another program commits anything in the namespace: the elements are read again.
    lab.router
        .must(&["nft", "add", "table", "ip", "someone-else"]);
    let out = lab.masq_ok(&["--once", "-vv"]);
    assert!(!out.stderr.contains(NOT_READ), "{out}");
    assert!(out.stderr.contains("set elements read back"), "{out}");
    assert!(out.stderr.contains(UNCHANGED), "{out}");

    // An element deleted by hand is a commit too: seen and put right.
    lab.delete_element("198.18.0.0/15");
    let out = lab.masq_ok(&["--once", "-vv"]);
    assert!(!out.stderr.contains(UNCHANGED), "{out}");
    assert_eq!(lab.table().as_deref(), Some(applied.as_str()));
    let out = lab.masq_ok(&["--once", "-vv"]);
    assert!(out.stderr.contains(NOT_READ), "{out}");

    // A changed config: the record is of other elements, so it is applied.
    lab.config.write(
        "ip-masq-agent",
        "nonMasqueradeCIDRs: [10.0.0.0/8, 198.18.0.0/15, 100.64.0.0/10]\n",
    );
    let out = lab.masq_ok(&["--once", "-vv"]);
    assert!(!out.stderr.contains(UNCHANGED), "{out}");
    assert!(lab.table().unwrap().contains("100.64.0.0/10"));
    lab.expect(OUTSIDE, true);

    // The same table loaded by nft (our comment, no record): read in full, equal.
    let dry = lab.masq_ok(&["--dry-run"]).stdout;
    lab.router.nft_load(&dry);
    let out = lab.masq_ok(&["--once", "-vv"]);
    assert!(!out.stderr.contains(NOT_READ), "{out}");
    assert!(out.stderr.contains(UNCHANGED), "{out}");

    // Commits racing the apply: the batch is bound to the generation it was built at and
    // built again when the kernel refuses it; every apply lands, the last config wins.
    while_others_commit(&lab, || {
        for i in 0..12 {
            lab.config.write(
                "ip-masq-agent",
                &format!(
                    "nonMasqueradeCIDRs: [10.0.0.0/8, 198.51.100.{}/32]\n",
                    i * 8
                ),
            );
            lab.masq_ok(&["--once"]);
        }
    });
    let table = lab.table().unwrap();
    assert!(table.contains("198.51.100.88"), "{table}");
    assert!(!table.contains("198.51.100.80"), "{table}");
    let out = lab.nftkit(&["verify", "masquerade", "--config-dir", &lab.config.s()]);
    assert!(out.success(), "{out}");
}

/// The element dump runs over many netlink messages (backend/netlink/dump.rs reads one
/// marked interrupted again). Under a stream of commits by another program between them,
/// `verify` still finds the 20 000 ranges equal, and still finds a range deleted by hand.
#[test]
fn verify_reads_a_large_set_right_while_others_commit() {
    let lab = Lab::new();
    let cidrs: Vec<String> = (0..20_000u32)
        .map(|i| {
            let a =
                std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(172, 16, 0, 0)) + i * 8);
            format!("  - {a}/30")
        })
        .collect();
    lab.config.write(
        "ip-masq-agent",
        &format!("nonMasqueradeCIDRs:\n{}\n", cidrs.join("\n")),
    );
    lab.masq_ok(&["--once"]);
    let dir = lab.config.s();
    let verify = || lab.nftkit(&["verify", "masquerade", "--config-dir", &dir]);
    while_others_commit(&lab, || {
        for _ in 0..8 {
            let out = verify();
            assert_eq!(out.code, Some(0), "{out}");
        }
    });
    // nft itself reads the whole set before it deletes from it, and starts that read
    // again whenever the generation moved meanwhile: not while the racer runs.
    lab.delete_element("172.16.0.8/30");
    while_others_commit(&lab, || {
        let out = verify();
        assert_eq!(out.code, Some(3), "{out}");
        assert!(out.stdout.contains("lacks 172.16.0.8/30"), "{out}");
    });
}

/// `checks` while another program commits in the router's namespace as fast as it can
/// (a table added and deleted, over and over).
fn while_others_commit(lab: &Lab, checks: impl FnOnce()) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                lab.router.run(&["nft", "add", "table", "ip", "racer"]);
                lab.router.run(&["nft", "delete", "table", "ip", "racer"]);
            }
        });
        // The racer stops when the checks end, whether they passed or not (a failed
        // assertion would otherwise leave the scope waiting for it for ever).
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(checks));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
    });
}
