//! End-to-end tests for `nftkit dnat` (gke-metadata-server routing mode): the real binary
//! in network namespaces, real packets.
//!
//! ```text
//!  pod  eth0 10.0.0.2/24          node (nftkit, forwarding on)          remote eth0 203.0.113.2/24
//!       2001:db8:2::2/64   <-> eth-pod 10.0.0.1     eth-up 203.0.113.1 <->    2001:db8:1::2/64
//!       default via node         2001:db8:2::1      2001:db8:1::1            the "real IMDS":
//!                                routes 169.254.169.254, 198.51.100/24,       169.254.169.254, 2001:db8:ffff::254
//!                                2001:db8:ffff::/48 via remote                the emulator:
//!                                                                             198.51.100.5, 2001:db8:ffff:5::5
//! ```
//! Servers answer with a tag naming where a connection landed: `imds:80` (the real
//! metadata server), `emulator:8080` (the DNAT target), `target-wrong-port:80` (the target
//! address on the original port: where upstream's PR #360 would have sent it).
//!
//! Needs root; run through `scripts/test.sh`.

use crate::common::*;
use std::time::{Duration, Instant};

const TABLE: &str = "nftkit-dnat";
const IMDS: &str = "169.254.169.254";
const EMU: &str = "198.51.100.5";
const IMDS6: &str = "2001:db8:ffff::254";
const EMU6: &str = "2001:db8:ffff:5::5";
const POD: &str = "10.0.0.2";

struct Lab {
    pod: Netns,
    node: Netns,
    remote: Netns,
}

impl Lab {
    fn new() -> Lab {
        let pod = Netns::new();
        let node = Netns::new();
        let remote = Netns::new();
        veth(&node, "eth-pod", &pod, "eth0");
        veth(&node, "eth-up", &remote, "eth0");
        addr_add(&pod, "eth0", "10.0.0.2/24");
        addr_add(&pod, "eth0", "2001:db8:2::2/64");
        addr_add(&node, "eth-pod", "10.0.0.1/24");
        addr_add(&node, "eth-pod", "2001:db8:2::1/64");
        addr_add(&node, "eth-up", "203.0.113.1/24");
        addr_add(&node, "eth-up", "2001:db8:1::1/64");
        addr_add(&remote, "eth0", "203.0.113.2/24");
        addr_add(&remote, "eth0", "2001:db8:1::2/64");
        for a in [
            format!("{IMDS}/32"),
            format!("{EMU}/32"),
            format!("{IMDS6}/128"),
            format!("{EMU6}/128"),
        ] {
            addr_add(&remote, "eth0", &a);
        }
        pod.must(&["ip", "route", "add", "default", "via", "10.0.0.1"]);
        pod.must(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:2::1",
        ]);
        route_add(&node, &format!("{IMDS}/32"), "203.0.113.2");
        route_add(&node, "198.51.100.0/24", "203.0.113.2");
        route_add(&node, "2001:db8:ffff::/48", "2001:db8:1::2");
        route_add(&remote, "10.0.0.0/24", "203.0.113.1");
        route_add(&remote, "2001:db8:2::/64", "2001:db8:1::1");
        node.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.must(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        Lab { pod, node, remote }
    }

    fn servers(&self) -> TcpServer {
        TcpServer::start(
            &self.remote,
            &[
                (sa(IMDS, 80), "imds:80"),
                (sa(IMDS, 81), "imds:81"),
                (sa(IMDS, 8080), "imds:8080"),
                (sa(EMU, 8080), "emulator:8080"),
                (sa(EMU, 8081), "emulator:8081"),
                (sa(EMU, 80), "target-wrong-port:80"),
                (sa(IMDS6, 80), "imds6:80"),
                (sa(EMU6, 8080), "emulator6:8080"),
            ],
        )
    }

    /// Connects from `ns` as `uid` and asserts where it landed.
    fn expect(&self, ns: &Netns, uid: u32, dst: &str, port: u16, want: Option<&str>) {
        let out = tcp_connect(ns, uid, uid, ip(dst), port);
        let got = answered_tag(&out);
        if got.as_deref() != want {
            panic!(
                "{} uid {uid} -> {dst}:{port}: expected {want:?}, got {got:?}\n{out}\n--- node ruleset ---\n{}",
                ns.name,
                self.node.ruleset()
            );
        }
    }
}

/// Host processes (output hook) and a routed pod (prerouting hook) reach the emulator for
/// 169.254.169.254:80, on the emulator's port; an accepted uid reaches the real IMDS;
/// other ports stay untouched; the forward accept is there; SIGTERM with --cleanup
/// restores the direct path.
#[test]
fn host_and_pod_reach_the_target_and_the_accepted_uid_the_real_server() {
    require_root();
    let lab = Lab::new();
    let srv = lab.servers();
    // Before: everything reaches the real server.
    lab.expect(&lab.node, 1001, IMDS, 80, Some("imds:80"));
    lab.expect(&lab.pod, 1001, IMDS, 80, Some("imds:80"));
    let mut d = NftkitDaemon::start(
        &lab.node,
        &[
            "dnat",
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--accept-uids",
            "988",
            "--sync-interval=1s",
            "--cleanup",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    let t = lab.node.table("inet", TABLE).expect("table");
    for needle in [
        "type nat hook prerouting priority dstnat",
        "type nat hook output priority -100",
        "type filter hook forward priority filter",
        "meta skuid @accept-uids return",
        "ip daddr 169.254.169.254 tcp dport 80 dnat ip to 198.51.100.5:8080",
        "ip daddr 198.51.100.5 tcp dport 8080 ct state established,related,new accept",
    ] {
        assert!(t.contains(needle), "table lacks {needle:?}:\n{t}");
    }
    lab.expect(&lab.node, 1001, IMDS, 80, Some("emulator:8080"));
    lab.expect(&lab.node, 0, IMDS, 80, Some("emulator:8080"));
    lab.expect(&lab.pod, 1001, IMDS, 80, Some("emulator:8080"));
    // The emulator's own uid still reaches the real server (upstream issue #424).
    lab.expect(&lab.node, 988, IMDS, 80, Some("imds:80"));
    // Other ports untouched.
    lab.expect(&lab.node, 1001, IMDS, 8080, Some("imds:8080"));
    lab.expect(&lab.pod, 1001, IMDS, 8080, Some("imds:8080"));
    // The pod's connection arrived unmasqueraded, from the pod.
    let hits = srv.hits();
    assert!(
        hits.iter()
            .any(|h| h.tag == "emulator:8080" && h.peer.ip() == ip(POD)),
        "{hits:?}"
    );
    assert!(
        hits.iter().all(|h| h.tag != "target-wrong-port:80"),
        "{hits:?}"
    );

    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", d.log());
    assert!(lab.node.table("inet", TABLE).is_none());
    lab.expect(&lab.node, 1001, IMDS, 80, Some("imds:80"));
    lab.expect(&lab.pod, 1001, IMDS, 80, Some("imds:80"));
}

/// Several maps at once (IPv4 as one map rule) and an IPv6 map, one-shot, for host and
/// pod; then `verify` and `delete`.
#[test]
fn several_maps_and_ipv6() {
    require_root();
    let lab = Lab::new();
    let _srv = lab.servers();
    let args = [
        "dnat",
        "--map",
        "169.254.169.254:80=198.51.100.5:8080,169.254.169.254:81=198.51.100.5:8081",
        "--map",
        "[2001:db8:ffff::254]:80=[2001:db8:ffff:5::5]:8080",
        "--daemon=false",
    ];
    lab.node.nftkit_ok(&[], &args);
    let t = lab.node.table("inet", TABLE).expect("table");
    assert!(
        t.contains("dnat ip to ip daddr . tcp dport map { "),
        "two IPv4 maps become one map rule:\n{t}"
    );
    assert!(!t.contains("flags owner"), "{t}");
    for ns in [&lab.node, &lab.pod] {
        lab.expect(ns, 1001, IMDS, 80, Some("emulator:8080"));
        lab.expect(ns, 1001, IMDS, 81, Some("emulator:8081"));
        lab.expect(ns, 1001, IMDS6, 80, Some("emulator6:8080"));
        lab.expect(ns, 1001, IMDS, 8080, Some("imds:8080"));
    }
    let mut verify = vec!["verify"];
    verify.extend_from_slice(&args[..args.len() - 1]);
    lab.node.nftkit_ok(&[], &verify);
    lab.node.nftkit_ok(&[], &["delete", "dnat"]);
    assert!(lab.node.table("inet", TABLE).is_none());
    let out = lab.node.nftkit(&[], &verify);
    assert_eq!(out.code, Some(3), "{out}");
}

/// --protocol udp: datagrams to ORIG land on the target; TCP to the same address/port is
/// left alone.
#[test]
fn udp_protocol() {
    require_root();
    let lab = Lab::new();
    let _tcp = lab.servers();
    let udp = UdpServer::start(
        &lab.remote,
        &[
            (sa(IMDS, 80), "imds-udp:80"),
            (sa(EMU, 8080), "emulator-udp:8080"),
        ],
    );
    lab.node.nftkit_ok(
        &[],
        &[
            "dnat",
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--protocol",
            "udp",
            "--daemon=false",
        ],
    );
    for (ns, tag) in [(&lab.node, "from-node"), (&lab.pod, "from-pod")] {
        let out = udp_send(ns, 1001, 1001, ip(IMDS), 80, tag);
        assert!(out.success(), "{out}");
        assert_eq!(
            udp.wait_for(tag, Duration::from_secs(3)).as_deref(),
            Some("emulator-udp:8080"),
            "{:?}\n{}",
            udp.received(),
            lab.node.ruleset()
        );
    }
    lab.expect(&lab.node, 1001, IMDS, 80, Some("imds:80"));
    lab.expect(&lab.pod, 1001, IMDS, 80, Some("imds:80"));
}

/// --hooks output only: host processes are redirected, routed pods are not. A deleted
/// table (--persist) is restored within one 1 s interval.
#[test]
fn output_hook_only_and_drift_repair() {
    require_root();
    let lab = Lab::new();
    let _srv = lab.servers();
    let d = NftkitDaemon::start(
        &lab.node,
        &[
            "dnat",
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--hooks",
            "output",
            "--sync-interval=1s",
            "--persist",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    lab.expect(&lab.node, 1001, IMDS, 80, Some("emulator:8080"));
    lab.expect(&lab.pod, 1001, IMDS, 80, Some("imds:80"));
    assert!(lab.node.nft(&["delete", "table", "inet", TABLE]).success());
    let t0 = Instant::now();
    assert!(
        poll_until(Duration::from_secs(3), || lab
            .node
            .table("inet", TABLE)
            .is_some()),
        "not restored:\n{}",
        d.log()
    );
    eprintln!("dnat table repair latency: {:?}", t0.elapsed());
    assert!(t0.elapsed() < Duration::from_millis(1800));
    lab.expect(&lab.node, 1001, IMDS, 80, Some("emulator:8080"));
    drop(d);
    // --persist: the table outlives the daemon; delete cleans up.
    assert!(lab.node.table("inet", TABLE).is_some());
    lab.node.nftkit_ok(&[], &["delete", "dnat"]);
}

/// Malformed maps and options are exit 2 naming the option and the value; nothing is
/// programmed.
#[test]
fn invalid_maps_change_nothing() {
    require_root();
    let lab = Lab::new();
    let before = lab.node.ruleset();
    for (args, needle) in [
        (
            &["--map", "169.254.169.254=198.51.100.5:8080"][..],
            "169.254.169.254=198.51.100.5:8080",
        ),
        (
            &["--map", "169.254.169.254:0=198.51.100.5:8080"][..],
            "port must be",
        ),
        (
            &["--map", "169.254.169.254:80=198.51.100.5:65536"][..],
            "port must be",
        ),
        (
            &["--map", "169.254.169.254:80=[2001:db8::5]:80"][..],
            "same family",
        ),
        (
            &[
                "--map",
                "169.254.169.254:80=198.51.100.5:8080",
                "--map",
                "169.254.169.254:80=198.51.100.6:8080",
            ][..],
            "already mapped",
        ),
        (
            &[
                "--map",
                "169.254.169.254:80=198.51.100.5:8080",
                "--hooks",
                "input",
            ][..],
            "--hooks",
        ),
        (
            &[
                "--map",
                "169.254.169.254:80=198.51.100.5:8080",
                "--sync-interval",
                "0",
            ][..],
            "--sync-interval",
        ),
    ] {
        let mut argv = vec!["dnat"];
        argv.extend_from_slice(args);
        let out = lab.node.nftkit(&[], &argv);
        assert_eq!(out.code, Some(2), "{out}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "{out}");
        assert!(out.stderr.contains(needle), "{out}");
        if args[0] == "--map" && needle != "--hooks" && needle != "--sync-interval" {
            assert!(out.stderr.contains("--map"), "{out}");
        }
    }
    assert_eq!(lab.node.ruleset(), before);
}

/// The node's FORWARD policy is drop (Docker sets it), on each iptables backend with that
/// backend's own binaries: a routed pod's DNATed connection still completes, in both
/// families, because the target's replies are accepted too; other forwarded traffic stays
/// dropped by the policy.
#[test]
fn pod_connection_completes_behind_a_forward_drop_policy() {
    require_root();
    for (backend, v4, v6) in [
        ("iptables-legacy", "iptables-legacy", "ip6tables-legacy"),
        ("iptables-nft", "iptables-nft", "ip6tables-nft"),
    ] {
        let lab = Lab::new();
        let _srv = lab.servers();
        lab.node.must(&[v4, "-P", "FORWARD", "DROP"]);
        lab.node.must(&[v6, "-P", "FORWARD", "DROP"]);
        lab.expect(&lab.pod, 1001, IMDS, 80, None);
        lab.node.nftkit_ok(
            &[],
            &[
                "--backend",
                backend,
                "dnat",
                "--map",
                &format!("{IMDS}:80={EMU}:8080"),
                "--map",
                &format!("[{IMDS6}]:80=[{EMU6}]:8080"),
                "--daemon=false",
            ],
        );
        let saves = || {
            let a = lab.node.must(&[format!("{v4}-save")]).stdout;
            let b = lab.node.must(&[format!("{v6}-save")]).stdout;
            format!("{a}{b}")
        };
        for (dst, want) in [(IMDS, "emulator:8080"), (IMDS6, "emulator6:8080")] {
            let got = tcp_tag(&lab.pod, 1001, 1001, ip(dst), 80);
            assert_eq!(
                got.as_deref(),
                Some(want),
                "[{backend}] pod -> {dst}:80 behind FORWARD DROP\n{}",
                saves()
            );
        }
        // Only the DNATed connections are let through.
        lab.expect(&lab.pod, 1001, IMDS, 81, None);
        lab.node
            .nftkit_ok(&[], &["--backend", backend, "delete", "dnat"]);
    }
}
