//! End-to-end tests for `nftkit local-address` (gardener apiserver-proxy sidecar): the real
//! binary in network namespaces, real rtnetlink addresses, real nf_tables and conntrack.
//!
//! Topology per test: a "node" namespace where nftkit runs (the address goes on its `lo`
//! or on its veth end `eth0`, 192.0.2.2/24, 2001:db8:2::2/64) and a "client" namespace
//! behind the veth (192.0.2.1, 2001:db8:2::1) with routes to the address through the node.
//! A fixture table in the node (`ct state established accept` at input) makes conntrack
//! track the namespace's traffic, so "no conntrack entry" means the NOTRACK rules worked
//! rather than that nothing is tracked at all.
//!
//! Needs root; run through `scripts/test.sh`.

use crate::common::*;
use std::time::{Duration, Instant};

const TABLE: &str = "nftkit-local-address";
const IP4: &str = "10.96.0.2";
const IP6: &str = "2001:db8:96::2";

/// Conntrack is registered in a namespace only once some rule needs it.
const CONNTRACK_FIXTURE: &str = "table inet fixture {\n chain in {\n type filter hook input priority 10; policy accept;\n ct state established accept\n }\n}\n";

struct Lab {
    node: Netns,
    client: Netns,
}

impl Lab {
    fn new() -> Lab {
        let node = Netns::new();
        let client = Netns::new();
        veth(&node, "eth0", &client, "eth0");
        addr_add(&node, "eth0", "192.0.2.2/24");
        addr_add(&node, "eth0", "2001:db8:2::2/64");
        addr_add(&client, "eth0", "192.0.2.1/24");
        addr_add(&client, "eth0", "2001:db8:2::1/64");
        route_add(&client, &format!("{IP4}/32"), "192.0.2.2");
        route_add(&client, &format!("{IP6}/128"), "2001:db8:2::2");
        node.nft_load(CONNTRACK_FIXTURE);
        Lab { node, client }
    }

    /// Lines of `ip -o addr show` in the node mentioning `ip` (with its host prefix).
    fn addr_lines(&self, ip: &str) -> Vec<String> {
        let prefix = if ip.contains(':') { "/128" } else { "/32" };
        let out = self.node.must(&["ip", "-o", "addr", "show"]);
        out.stdout
            .lines()
            .filter(|l| l.contains(&format!(" {ip}{prefix} ")))
            .map(|l| l.to_string())
            .collect()
    }

    fn addr_on(&self, dev: &str, ip: &str) -> bool {
        self.addr_lines(ip)
            .iter()
            .any(|l| l.split_whitespace().nth(1) == Some(dev))
    }

    /// `conntrack -L` entries of the node that mention `ip` and `dport=PORT`.
    fn conntrack(&self, ip: &str, port: u16) -> Vec<String> {
        let out = self.node.run(&["conntrack", "-L"]);
        assert!(
            out.code == Some(0) || out.stderr.contains("0 flow entries"),
            "conntrack -L failed:\n{out}"
        );
        out.stdout
            .lines()
            .filter(|l| l.contains(&format!("dst={ip} ")) && l.contains(&format!("dport={port} ")))
            .map(|l| l.to_string())
            .collect()
    }

    /// Listeners on the address (of the family of `addr`) at 443 and 80.
    fn servers(&self, addr: &str) -> TcpServer {
        let six = if addr.contains(':') { "6" } else { "" };
        TcpServer::start(
            &self.node,
            &[
                (sa(addr, 443), &format!("apiserver{six}:443")),
                (sa(addr, 80), &format!("other{six}:80")),
            ],
        )
    }
}

fn table_present(ns: &Netns) -> bool {
    ns.table("inet", TABLE).is_some()
}

/// The whole daemon life: the address once on lo, untracked traffic to IP:443 from the
/// node itself and from a client, tracked traffic to other ports, a read-only resync
/// (`nft monitor` sees nothing), repair of a deleted address, a deleted table and a flushed
/// chain within one 1 s interval, and SIGTERM with --cleanup removing address and table.
#[test]
fn daemon_untracks_ip_port_repairs_drift_and_cleans_up() {
    require_root();
    let lab = Lab::new();
    let mut d = NftkitDaemon::start(
        &lab.node,
        &[
            "local-address",
            "--ip-address",
            IP4,
            "--setup-iptables",
            "--sync-interval=1s",
            "--persist",
            "--cleanup",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    assert_eq!(lab.addr_lines(IP4).len(), 1, "{:?}", lab.addr_lines(IP4));
    assert!(lab.addr_on("lo", IP4));
    let t = lab.node.table("inet", TABLE).expect("table");
    for needle in [
        "type filter hook prerouting priority raw",
        "type filter hook output priority raw",
        "type filter hook input priority filter",
        "type filter hook output priority filter",
        "ip daddr 10.96.0.2 tcp dport 443 notrack",
        "ip saddr 10.96.0.2 tcp sport 443 notrack",
        "ip daddr 10.96.0.2 tcp dport 443 accept",
        "ip saddr 10.96.0.2 tcp sport 443 accept",
    ] {
        assert!(t.contains(needle), "table lacks {needle:?}:\n{t}");
    }
    assert!(!t.contains("flags owner"), "--persist: no owner flag:\n{t}");

    let _srv = lab.servers(IP4);
    // From the node itself (lo) and from the client (through eth0).
    assert_eq!(
        tcp_tag(&lab.node, 1001, 1001, ip(IP4), 443).as_deref(),
        Some("apiserver:443")
    );
    assert_eq!(
        tcp_tag(&lab.client, 1001, 1001, ip(IP4), 443).as_deref(),
        Some("apiserver:443")
    );
    assert_eq!(
        tcp_tag(&lab.client, 1001, 1001, ip(IP4), 80).as_deref(),
        Some("other:80")
    );
    assert!(
        lab.conntrack(IP4, 443).is_empty(),
        "IP:443 must be untracked: {:?}",
        lab.conntrack(IP4, 443)
    );
    assert!(
        !lab.conntrack(IP4, 80).is_empty(),
        "other ports are tracked (else this test proves nothing)"
    );

    // No-op resyncs are read-only: `nft monitor` over three resyncs sees only the canary
    // table this test adds at the end (which shows the monitor was listening).
    let name = lab.node.name.clone();
    let monitor = std::thread::spawn(move || {
        Cmd::new(&[
            "ip", "netns", "exec", &name, "timeout", "3.5", "nft", "monitor",
        ])
        .timeout(Duration::from_secs(10))
        .run()
    });
    std::thread::sleep(Duration::from_millis(3000));
    lab.node.nft_load("table inet canary {\n}\n");
    let monitor = monitor.join().expect("monitor thread");
    let events: Vec<&str> = monitor
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        events.iter().any(|l| l.contains("canary")),
        "monitor saw nothing at all:\n{monitor}"
    );
    assert!(
        events
            .iter()
            .all(|l| l.contains("canary") || l.ends_with("(nft)")),
        "resyncs sent something:\n{monitor}"
    );
    lab.node.must(&["nft", "delete", "table", "inet", "canary"]);
    assert!(d.count("in sync; nothing sent") >= 2, "{}", d.log());
    assert_eq!(d.count("applied"), 1, "{}", d.log());

    // Drift: each repaired within one interval (1 s) plus a step.
    lab.node
        .must(&["ip", "addr", "del", &format!("{IP4}/32"), "dev", "lo"]);
    let t0 = Instant::now();
    assert!(
        poll_until(Duration::from_secs(3), || lab.addr_on("lo", IP4)),
        "address not restored:\n{}",
        d.log()
    );
    let addr_repair = t0.elapsed();
    lab.node
        .nft(&["delete", "table", "inet", TABLE])
        .success()
        .then_some(())
        .expect("delete our table");
    let t0 = Instant::now();
    assert!(
        poll_until(Duration::from_secs(3), || table_present(&lab.node)),
        "table not restored:\n{}",
        d.log()
    );
    let table_repair = t0.elapsed();
    assert!(
        lab.node
            .nft(&["flush", "chain", "inet", TABLE, "filter-input"])
            .success()
    );
    assert!(
        poll_until(Duration::from_secs(3), || lab
            .node
            .table("inet", TABLE)
            .is_some_and(|t| t.contains("tcp dport 443 accept"))),
        "flushed chain not restored:\n{}",
        d.log()
    );
    eprintln!("repair latency: address {addr_repair:?}, table {table_repair:?}");
    assert!(addr_repair < Duration::from_millis(1800), "{addr_repair:?}");
    assert!(
        table_repair < Duration::from_millis(1800),
        "{table_repair:?}"
    );
    assert_eq!(lab.addr_lines(IP4).len(), 1);

    // SIGTERM with --cleanup: address and table gone, lo still there.
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", d.log());
    assert!(lab.addr_lines(IP4).is_empty(), "{:?}", lab.addr_lines(IP4));
    assert!(!table_present(&lab.node));
    lab.node.must(&["ip", "link", "show", "lo"]);
    assert!(
        lab.node.table("inet", "fixture").is_some(),
        "foreign table kept"
    );
}

/// IPv6 on the veth end: added /128 without DAD (usable at once), once, idempotently
/// across runs; a client reaches [IP6]:443 untracked. --daemon=false leaves the table (no
/// owner flag) and exits 0.
#[test]
fn ipv6_on_a_veth_end_once_and_idempotent() {
    require_root();
    let lab = Lab::new();
    let args = [
        "local-address",
        "--ip-address",
        IP6,
        "--interface",
        "eth0",
        "--setup-rules",
        "--daemon=false",
    ];
    lab.node.nftkit_ok(&[], &args);
    lab.node.nftkit_ok(&[], &args);
    assert_eq!(lab.addr_lines(IP6).len(), 1, "{:?}", lab.addr_lines(IP6));
    assert!(lab.addr_on("eth0", IP6));
    assert!(
        !lab.addr_lines(IP6)[0].contains("tentative"),
        "nodad: {:?}",
        lab.addr_lines(IP6)
    );
    let t = lab
        .node
        .table("inet", TABLE)
        .expect("table left by a one-shot run");
    assert!(!t.contains("flags owner"), "{t}");
    assert!(
        t.contains("ip6 daddr 2001:db8:96::2 tcp dport 443 notrack"),
        "{t}"
    );
    let _srv = lab.servers(IP6);
    assert_eq!(
        tcp_tag(&lab.client, 1001, 1001, ip(IP6), 443).as_deref(),
        Some("apiserver6:443")
    );
    assert_eq!(
        tcp_tag(&lab.client, 1001, 1001, ip(IP6), 80).as_deref(),
        Some("other6:80")
    );
    assert!(
        lab.conntrack(IP6, 443).is_empty(),
        "{:?}",
        lab.conntrack(IP6, 443)
    );
    assert!(!lab.conntrack(IP6, 80).is_empty());
    // verify sees both the address and the table; drift in either is exit 3.
    lab.node.nftkit_ok(
        &[],
        &[
            "verify",
            "local-address",
            "--ip-address",
            IP6,
            "--interface",
            "eth0",
            "--setup-rules",
        ],
    );
    lab.node.must(&[
        "ip",
        "-6",
        "addr",
        "del",
        &format!("{IP6}/128"),
        "dev",
        "eth0",
    ]);
    let out = lab.node.nftkit(
        &[],
        &[
            "verify",
            "local-address",
            "--ip-address",
            IP6,
            "--interface",
            "eth0",
            "--setup-rules",
        ],
    );
    assert_eq!(out.code, Some(3), "{out}");
    assert!(
        out.stdout
            .contains("address 2001:db8:96::2/128 is missing on eth0"),
        "{out}"
    );
    lab.node.nftkit_ok(&[], &["delete", "local-address"]);
    assert!(!table_present(&lab.node));
}

/// Without --setup-iptables only the address is managed: no table at all.
#[test]
fn without_rules_only_the_address_is_added() {
    require_root();
    let lab = Lab::new();
    let before = lab.node.ruleset();
    lab.node.nftkit_ok(
        &[],
        &["local-address", "--ip-address", IP4, "--daemon=false"],
    );
    assert_eq!(lab.addr_lines(IP4).len(), 1);
    assert!(lab.addr_on("lo", IP4));
    assert_eq!(lab.node.ruleset(), before, "no nf_tables change");
}

/// Bad input is exit 2 with one line naming the flag, and changes nothing; a missing
/// interface is exit 1 naming it, also changing nothing.
#[test]
fn invalid_input_and_missing_interface_change_nothing() {
    require_root();
    let lab = Lab::new();
    let addrs = lab.node.must(&["ip", "-o", "addr", "show"]).stdout;
    let ruleset = lab.node.ruleset();
    for (args, flag) in [
        (&["--ip-address", "10.96.0.300"][..], "--ip-address"),
        (&["--ip-address", "10.96.0.2/32"][..], "--ip-address"),
        (&["--ip-address", IP4, "--port", "0"][..], "--port"),
        (&["--ip-address", IP4, "--port", "65536"][..], "--port"),
        (
            &["--ip-address", IP4, "--sync-interval", "0"][..],
            "--sync-interval",
        ),
        (
            &["--ip-address", IP4, "--sync-interval=-1s"][..],
            "--sync-interval",
        ),
        (&[][..], "--ip-address"),
    ] {
        let mut argv = vec!["local-address", "--setup-iptables"];
        argv.extend_from_slice(args);
        let out = lab.node.nftkit(&[], &argv);
        assert_eq!(out.code, Some(2), "{out}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
        assert!(out.stderr.contains(flag), "{out}");
    }
    let out = lab.node.nftkit(
        &[],
        &[
            "local-address",
            "--ip-address",
            IP4,
            "--interface",
            "nosuch0",
            "--setup-iptables",
        ],
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("interface nosuch0 does not exist"),
        "{out}"
    );
    assert_eq!(lab.node.must(&["ip", "-o", "addr", "show"]).stdout, addrs);
    assert_eq!(lab.node.ruleset(), ruleset);
}

/// An iptables-nft style `ip filter` INPUT chain with policy drop defeats our accept
/// (nftables semantics); the daemon names it in a warning, and says when it is gone.
#[test]
fn foreign_drop_chain_is_named_in_a_warning() {
    require_root();
    let lab = Lab::new();
    let d = NftkitDaemon::start(
        &lab.node,
        &[
            "local-address",
            "--ip-address",
            IP4,
            "--setup-iptables",
            "--sync-interval=1s",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    assert!(!d.log().contains("another table can drop"), "{}", d.log());
    lab.node.nft_load(
        "table ip filter {\n chain INPUT {\n type filter hook input priority 0; policy drop;\n }\n}\n",
    );
    d.wait_log("another table can drop", Duration::from_secs(4));
    d.wait_log(
        "table ip filter chain INPUT (policy drop) at hook input",
        Duration::from_secs(1),
    );
    // And it really drops: our accept cannot win against another table.
    let _srv = lab.servers(IP4);
    assert_eq!(tcp_tag(&lab.client, 1001, 1001, ip(IP4), 443), None);
    // An ip6 table does not concern an IPv4 address; removing the IPv4 one clears it.
    lab.node.nft_load(
        "table ip6 filter6 {\n chain INPUT {\n type filter hook input priority 0; policy drop;\n }\n}\n",
    );
    lab.node.must(&["nft", "delete", "table", "ip", "filter"]);
    d.wait_log("no other table drops", Duration::from_secs(4));
    assert_eq!(d.count("another table can drop"), 1, "{}", d.log());
    assert_eq!(
        tcp_tag(&lab.client, 1001, 1001, ip(IP4), 443).as_deref(),
        Some("apiserver:443")
    );
}

/// With --persist=false the table carries the owner flag: nobody else can delete it, and
/// the kernel removes it when the daemon dies (SIGKILL: no cleanup code runs). The address,
/// not covered by the flag, stays.
#[test]
fn daemon_table_dies_with_the_process_with_persist_false() {
    require_root();
    let lab = Lab::new();
    let mut d = NftkitDaemon::start(
        &lab.node,
        &[
            "local-address",
            "--ip-address",
            IP4,
            "--setup-iptables",
            "--sync-interval=1s",
            "--persist=false",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    let t = lab.node.table("inet", TABLE).expect("table");
    assert!(t.contains("flags owner"), "{t}");
    let out = lab.node.nft(&["delete", "table", "inet", TABLE]);
    assert!(
        !out.success(),
        "an owned table cannot be deleted by others:\n{out}"
    );
    assert!(d.running());
    d.stop_with(libc::SIGKILL);
    assert!(
        poll_until(Duration::from_secs(3), || !table_present(&lab.node)),
        "owned table outlived its process"
    );
    assert!(lab.addr_on("lo", IP4), "address stays without --cleanup");
}

/// Fail safe by default (CONTRACT.md "Rules outlive the process"): without any --persist
/// flag, a SIGKILLed daemon leaves its table (no owner flag) and the traffic to IP:443
/// stays untracked; a restarted daemon adopts the table without a gap.
#[test]
fn daemon_table_survives_sigkill_by_default() {
    require_root();
    let lab = Lab::new();
    let args = [
        "local-address",
        "--ip-address",
        IP4,
        "--setup-iptables",
        "--sync-interval=1s",
    ];
    let mut d = NftkitDaemon::start(&lab.node, &args);
    d.wait_log("reconciling", Duration::from_secs(10));
    let before = lab.node.table("inet", TABLE).expect("table");
    assert!(
        !before.contains("flags owner"),
        "default must persist:\n{before}"
    );
    d.stop_with(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lab.node.table("inet", TABLE).as_deref(),
        Some(before.as_str()),
        "table changed or vanished with its SIGKILLed daemon"
    );
    let _srv = lab.servers(IP4);
    assert_eq!(
        tcp_tag(&lab.client, 1001, 1001, ip(IP4), 443).as_deref(),
        Some("apiserver:443")
    );
    assert!(
        lab.conntrack(IP4, 443).is_empty(),
        "rules of the dead daemon must still untrack IP:443: {:?}",
        lab.conntrack(IP4, 443)
    );
    // A restart re-adopts it: same table, still no owner flag.
    let mut d = NftkitDaemon::start(&lab.node, &args);
    d.wait_log("reconciling", Duration::from_secs(10));
    assert_eq!(
        lab.node.table("inet", TABLE).as_deref(),
        Some(before.as_str())
    );
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", d.log());
    assert!(
        table_present(&lab.node),
        "SIGTERM without --cleanup keeps the table"
    );
}

/// `--cleanup` removes only an address this process added: one that was on the interface
/// before nftkit started stays (the table, which is ours, goes).
#[test]
fn cleanup_keeps_an_address_that_was_there_before() {
    require_root();
    let lab = Lab::new();
    lab.node
        .must(&["ip", "addr", "add", &format!("{IP4}/32"), "dev", "lo"]);
    let mut d = NftkitDaemon::start(
        &lab.node,
        &[
            "local-address",
            "--ip-address",
            IP4,
            "--setup-iptables",
            "--sync-interval=1s",
            "--cleanup",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    assert!(d.log().contains("address already present"), "{}", d.log());
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", d.log());
    assert!(
        lab.addr_on("lo", IP4),
        "a pre-existing address must stay:\n{}",
        d.log()
    );
    assert!(!table_present(&lab.node), "our table goes with --cleanup");
}
