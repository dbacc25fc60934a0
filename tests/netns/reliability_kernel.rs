//! Issue 11, part 6: kernel edge cases for `local-address` and `dnat`: a missing
//! interface, an interface renamed under a running daemon, the address already present
//! with another prefix, IPv6 disabled in the namespace. Each either works or is exit 1
//! with a clear message, and nothing is half-applied.
//!
//! Root only: everything happens in throw-away network namespaces.

use std::time::Duration;

use crate::common::*;

fn addrs(ns: &Netns, dev: &str) -> String {
    ns.must(&["ip", "-o", "addr", "show", "dev", dev]).stdout
}

#[test]
fn missing_interface_is_exit_1_and_nothing_is_applied() {
    require_root();
    let ns = Netns::new();
    let out = ns.nftkit(
        &[],
        &[
            "local-address",
            "--ip-address",
            "192.0.2.20",
            "--interface",
            "nosuch0",
            "--setup-iptables",
            "--daemon=false",
        ],
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("interface nosuch0 does not exist"),
        "{out}"
    );
    assert!(
        ns.table("inet", "nftkit-local-address").is_none(),
        "table applied anyway"
    );
}

#[test]
fn address_with_another_prefix_is_kept_and_the_host_address_added() {
    require_root();
    let ns = Netns::new();
    ns.must(&[
        "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "peer0",
    ]);
    ns.must(&["ip", "addr", "add", "192.0.2.21/24", "dev", "dummy0"]);
    for _ in 0..2 {
        ns.nftkit_ok(
            &[],
            &[
                "local-address",
                "--ip-address",
                "192.0.2.21",
                "--interface",
                "dummy0",
                "--daemon=false",
            ],
        );
    }
    let a = addrs(&ns, "dummy0");
    assert!(
        a.contains("192.0.2.21/24"),
        "the operator's /24 was removed:\n{a}"
    );
    assert_eq!(
        a.matches("192.0.2.21/32").count(),
        1,
        "not idempotent:\n{a}"
    );
}

#[test]
fn a_daemon_survives_its_interface_being_renamed_and_recreated() {
    require_root();
    let ns = Netns::new();
    ns.must(&[
        "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "peer0",
    ]);
    let mut d = NftkitDaemon::start(
        &ns,
        &[
            "local-address",
            "--ip-address",
            "192.0.2.22",
            "--interface",
            "dummy0",
            "--setup-iptables",
            "--sync-interval",
            "1s",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    ns.must(&["ip", "link", "set", "dummy0", "name", "other0"]);
    // The interface is gone under its name: the daemon reports it and keeps running.
    assert!(
        poll_until(Duration::from_secs(5), || d.log().contains("nosuch")
            || d.log().contains("dummy0 does not exist")
            || d.log().contains("ERROR")),
        "no error logged for the missing interface:\n{}",
        d.log()
    );
    assert!(d.running(), "daemon died:\n{}", d.log());
    assert!(
        ns.table("inet", "nftkit-local-address").is_some(),
        "table lost"
    );
    // A new dummy0 gets the address within an interval or two.
    ns.must(&[
        "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "peer1",
    ]);
    assert!(
        poll_until(Duration::from_secs(5), || addrs(&ns, "dummy0")
            .contains("192.0.2.22/32")),
        "address not restored on the recreated interface:\n{}",
        d.log()
    );
}

#[test]
fn ipv6_disabled_in_the_namespace() {
    require_root();
    let ns = Netns::new();
    for k in ["all", "default", "lo"] {
        ns.must(&["sysctl", "-q", &format!("net.ipv6.conf.{k}.disable_ipv6=1")]);
    }
    // An IPv6 address cannot be added: exit 1 with the real reason, nothing applied.
    let out = ns.nftkit(
        &[],
        &[
            "local-address",
            "--ip-address",
            "2001:db8::5",
            "--setup-iptables",
            "--daemon=false",
        ],
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("IPv6 is disabled"), "{out}");
    assert!(
        !out.stderr.contains("CAP_NET_ADMIN"),
        "misleading capability hint:\n{out}"
    );
    assert!(
        ns.table("inet", "nftkit-local-address").is_none(),
        "half-applied"
    );
    // nf_tables inet tables do not depend on IPv6 being enabled: both families apply.
    ns.nftkit_ok(
        &[],
        &[
            "dnat",
            "--map",
            "192.0.2.1:80=192.0.2.2:81,[2001:db8::1]:80=[2001:db8::2]:81",
            "--daemon=false",
        ],
    );
    ns.nftkit_ok(&[], &["redirect"]);
    ns.nftkit_ok(
        &[],
        &[
            "verify",
            "dnat",
            "--map",
            "192.0.2.1:80=192.0.2.2:81,[2001:db8::1]:80=[2001:db8::2]:81",
        ],
    );
    // IPv4 local-address still works.
    ns.nftkit_ok(
        &[],
        &[
            "local-address",
            "--ip-address",
            "192.0.2.23",
            "--setup-iptables",
            "--daemon=false",
        ],
    );
}
