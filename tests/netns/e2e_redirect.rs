//! End-to-end tests for `nftkit redirect` (kubernetes-qpoint-init): real
//! packets between network namespaces, real nf_tables, the real binary.
//!
//! Every test builds its own namespaces (see `common::Topology`): a "pod"
//! namespace where nftkit runs and the local proxy listens (127.0.0.1 / ::1
//! on 10080, 10443, 15001) and a "remote" namespace behind a veth holding
//! 198.51.100.7, 2001:db8::7, the private 10.1.2.3 / fd00::1 and the DNAT
//! targets 203.0.113.10 / 2001:db8::10. Servers answer with a tag naming
//! where the connection landed (`proxy:10080`, `remote:80`, `target:10080`,
//! ...), so each assertion states where a connection must end up.
//!
//! Needs root; run through `scripts/test.sh`.

use crate::common::*;
use std::time::Duration;

const REDIRECT: &[&str] = &["redirect"];
const NO_ENV: &[(&str, &str)] = &[];

/// The table `redirect` owns by default.
const TABLE: &str = "nftkit-redirect";

fn assert_table_shape(ns: &Netns) {
    let t = ns.table("inet", TABLE).unwrap_or_else(|| {
        panic!(
            "table inet {TABLE} missing in {}:\n{}",
            ns.name,
            ns.nft(&["list", "ruleset"]).stdout
        )
    });
    for needle in [
        "chain nat-output",
        "type nat hook output priority",
        "set accept-v4",
        "set accept-v6",
        "set accept-uids",
        "set accept-gids",
        "set mapped-ports",
    ] {
        assert!(
            t.contains(needle),
            "table inet {TABLE} lacks {needle:?}:\n{t}"
        );
    }
    assert!(
        t.contains("priority dstnat") || t.contains("priority -100"),
        "nat-output should be at priority dstnat (-100):\n{t}"
    );
}

// ---------------------------------------------------------------------------
// The harness itself (no nftkit involved)
// ---------------------------------------------------------------------------

/// Checks the topology, the in-namespace servers, the socat client with
/// setpriv, UDP delivery and namespace cleanup — so that a failure in the
/// tests below points at nftkit, not at the harness.
#[test]
fn harness_topology_servers_and_cleanup() {
    require_root();
    let names;
    {
        let topo = Topology::new();
        names = (topo.pod.name.clone(), topo.remote.name.clone());
        let (_pod_srv, remote_srv) = topo.servers();
        topo.expect(1001, 1001, REMOTE_V4, 80, Some("remote:80"));
        topo.expect(1001, 1001, REMOTE_V4, 22, Some("remote:22"));
        topo.expect(1001, 1001, REMOTE_V6, 443, Some("remote6:443"));
        topo.expect(1001, 1001, PRIVATE_V4, 80, Some("private:80"));
        topo.expect(1001, 1001, PRIVATE_V6, 443, Some("private6:443"));
        topo.expect(1001, 1001, TARGET_V4, 10080, Some("target:10080"));
        topo.expect(1001, 1001, TARGET_V6, 10080, Some("target6:10080"));
        topo.expect(1001, 1001, "127.0.0.1", 10080, Some("proxy:10080"));
        topo.expect(1001, 1001, "::1", 10443, Some("proxy6:10443"));
        topo.expect(1001, 1001, "127.0.0.5", 80, Some("local:80"));
        topo.expect(1001, 1001, REMOTE_V4, 10080, None);
        let hit = remote_srv
            .hits()
            .into_iter()
            .find(|h| h.tag == "remote:80")
            .expect("remote:80 recorded");
        assert_eq!(hit.peer.ip(), ip(POD_V4), "{hit:?}");

        let udp_remote = UdpServer::start(&topo.remote, &[(sa(REMOTE_V4, 80), "remote-udp")]);
        let out = udp_send(&topo.pod, 1001, 1001, ip(REMOTE_V4), 80, "hello-harness");
        assert!(out.success(), "{out}");
        assert_eq!(
            udp_remote
                .wait_for("hello-harness", Duration::from_secs(3))
                .as_deref(),
            Some("remote-udp")
        );

        // /etc/netns/NAME is created on demand and visible through ip netns exec.
        topo.pod.write_etc("hosts", "203.0.113.10 proxy.test\n");
        let out = topo.pod.must(&["getent", "hosts", "proxy.test"]);
        assert!(out.stdout.contains("203.0.113.10"), "{out}");
        // The pod starts with an empty ruleset.
        assert_eq!(topo.pod.ruleset().trim(), "");
    }
    let list = must(&["ip", "netns", "list"]).stdout;
    for n in [&names.0, &names.1] {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(n.as_str())),
            "netns {n} not cleaned up:\n{list}"
        );
        assert!(
            !std::path::Path::new("/etc/netns").join(n).exists(),
            "/etc/netns/{n} not cleaned up"
        );
    }
}

// ---------------------------------------------------------------------------
// Traffic
// ---------------------------------------------------------------------------

/// Scenario 1 + 3: defaults redirect :80 and :443 of any other uid to the
/// local proxy; unmapped ports go out untouched.
#[test]
fn defaults_redirect_mapped_ports() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(NO_ENV, REDIRECT);
    assert_table_shape(&topo.pod);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, REMOTE_V4, 443, Some("proxy:10443"));
    topo.expect(1001, 1001, REMOTE_V4, 22, Some("remote:22"));
    topo.expect(1001, 1001, REMOTE_V4, 8080, Some("remote:8080"));
    // root is not exempt either
    topo.expect(0, 0, REMOTE_V4, 80, Some("proxy:10080"));
}

/// Scenario 2: sockets owned by uid 1010 or gid 1010 are not redirected.
#[test]
fn defaults_accepted_uid_or_gid_not_redirected() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(NO_ENV, REDIRECT);
    topo.expect(1010, 2000, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1010, 2000, REMOTE_V4, 443, Some("remote:443"));
    topo.expect(2000, 1010, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(2000, 1010, REMOTE_V6, 443, Some("remote6:443"));
    topo.expect(1010, 1010, REMOTE_V6, 80, Some("remote6:80"));
    // a neighbouring uid/gid is redirected
    topo.expect(1011, 1009, REMOTE_V4, 80, Some("proxy:10080"));
}

/// Scenario 3: destinations in the accept blocks (10/8, 127/8, ::1, fc00::/7)
/// are never NATed, whoever connects.
#[test]
fn defaults_accept_blocks_not_redirected() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(NO_ENV, REDIRECT);
    topo.expect(1001, 1001, PRIVATE_V4, 80, Some("private:80"));
    topo.expect(1001, 1001, "127.0.0.5", 80, Some("local:80"));
    topo.expect(1001, 1001, "::1", 80, Some("local6:80"));
    topo.expect(1001, 1001, PRIVATE_V6, 443, Some("private6:443"));
    // the proxy ports themselves stay reachable on loopback
    topo.expect(1001, 1001, "127.0.0.1", 10080, Some("proxy:10080"));
}

/// Scenario 4: a lone `PORT_MAPPING=15001` redirects every TCP port.
#[test]
fn lone_port_mapping_redirects_every_port() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(&[("PORT_MAPPING", "15001")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 22, Some("proxy:15001"));
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:15001"));
    topo.expect(1001, 1001, REMOTE_V4, 8080, Some("proxy:15001"));
    topo.expect(1001, 1001, REMOTE_V6, 22, Some("proxy6:15001"));
    topo.expect(1010, 2000, REMOTE_V4, 22, Some("remote:22"));
    topo.expect(2000, 1010, REMOTE_V6, 8080, Some("remote6:8080"));
    topo.expect(1001, 1001, PRIVATE_V4, 80, Some("private:80"));
}

/// `TO_IPV4_ADDR` turns the IPv4 REDIRECT into DNAT to `addr:to_port`;
/// IPv6 keeps redirecting locally.
#[test]
fn to_ipv4_addr_dnats_ipv4() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(&[("TO_IPV4_ADDR", TARGET_V4)], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    topo.expect(1001, 1001, REMOTE_V4, 443, Some("target:10443"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(1010, 2000, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1001, 1001, REMOTE_V4, 22, Some("remote:22"));
}

/// Scenario 5: IPv6 redirect to [::1]:to_port; ::1 and fc00::/7 accepted.
#[test]
fn ipv6_redirect_and_accept_blocks() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(NO_ENV, REDIRECT);
    topo.expect(1001, 1001, REMOTE_V6, 443, Some("proxy6:10443"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 22, Some("remote6:22"));
    topo.expect(1001, 1001, "::1", 80, Some("local6:80"));
    topo.expect(1001, 1001, PRIVATE_V6, 443, Some("private6:443"));
    topo.expect(1010, 2000, REMOTE_V6, 443, Some("remote6:443"));
}

/// `TO_IPV6_ADDR` DNATs IPv6 to `[addr]:to_port`; IPv4 keeps redirecting.
#[test]
fn to_ipv6_addr_dnats_ipv6() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(&[("TO_IPV6_ADDR", TARGET_V6)], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("target6:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 443, Some("target6:10443"));
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    topo.expect(2000, 1010, REMOTE_V6, 80, Some("remote6:80"));
}

/// Both targets given as flags, overriding the environment.
#[test]
fn to_addr_flags_win_over_env() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(
        &[
            ("TO_IPV4_ADDR", "203.0.113.99"),
            ("TO_IPV6_ADDR", "2001:db8::99"),
        ],
        &[
            "redirect",
            "--to-ipv4-addr",
            TARGET_V4,
            "--to-ipv6-addr",
            TARGET_V6,
        ],
    );
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 443, Some("target6:10443"));
}

fn write_resolver_files(ns: &Netns) {
    ns.write_etc(
        "hosts",
        "127.0.0.1 localhost\n::1 localhost\n\
         203.0.113.10 proxy.test\n2001:db8::10 proxy.test\n\
         203.0.113.10 proxy4.test\n",
    );
    // No reachable DNS server: lookups that miss the hosts file fail fast.
    ns.write_etc("resolv.conf", NO_DNS_RESOLV_CONF);
}

/// Scenario 6: `TO_DOMAIN` resolved through the system resolver (here the
/// namespace's hosts file): A → IPv4 DNAT, AAAA → IPv6 DNAT; an A-only name
/// leaves IPv6 on local REDIRECT.
#[test]
fn to_domain_resolves_through_hosts_file() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    write_resolver_files(&topo.pod);

    topo.pod.nftkit_ok(&[("TO_DOMAIN", "proxy.test")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 443, Some("target6:10443"));
    topo.expect(1010, 1010, REMOTE_V4, 80, Some("remote:80"));

    topo.pod
        .nftkit_ok(&[("TO_DOMAIN", "proxy4.test")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));

    // An explicit per-family address wins over the domain.
    topo.pod.nftkit_ok(
        &[("TO_DOMAIN", "proxy.test"), ("TO_IPV6_ADDR", "2001:db8::7")],
        REDIRECT,
    );
    topo.expect(1001, 1001, REMOTE_V4, 443, Some("target:10443"));
    // DNAT to 2001:db8::7:10080 — nothing listens there: refused.
    topo.expect(1001, 1001, REMOTE_V6, 80, None);
}

/// A `TO_DOMAIN` that does not resolve is a runtime failure (exit 1) and
/// nothing is installed.
#[test]
fn to_domain_unresolvable_exits_1_without_table() {
    require_root();
    let ns = Netns::new();
    write_resolver_files(&ns);
    let out = ns.nftkit(&[("TO_DOMAIN", "no-such-host.invalid")], REDIRECT);
    assert_eq!(out.code, Some(1), "expected exit 1:\n{out}");
    assert!(
        !out.stderr.trim().is_empty(),
        "expected an error message:\n{out}"
    );
    assert!(
        ns.table("inet", TABLE).is_none(),
        "table must not exist after a failed resolve:\n{}",
        ns.ruleset()
    );
    assert_eq!(ns.ruleset().trim(), "", "ruleset must stay empty");

    // Also after a good apply: the previous table stays as it was.
    ns.nftkit_ok(NO_ENV, REDIRECT);
    let before = ns.ruleset();
    let out = ns.nftkit(&[("TO_DOMAIN", "no-such-host.invalid")], REDIRECT);
    assert_eq!(out.code, Some(1), "expected exit 1:\n{out}");
    assert_eq!(ns.ruleset(), before, "ruleset changed by a failed run");
}

/// Scenario 7: UDP is never touched, even on mapped ports or with a lone
/// (every-port) mapping.
#[test]
fn udp_is_untouched() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    let pod_udp = UdpServer::start(
        &topo.pod,
        &[
            (sa("127.0.0.1", 10080), "proxy-udp"),
            (sa("::1", 10080), "proxy6-udp"),
            (sa("127.0.0.1", 15001), "proxy-udp-15001"),
        ],
    );
    let remote_udp = UdpServer::start(
        &topo.remote,
        &[
            (sa(REMOTE_V4, 80), "remote-udp:80"),
            (sa(REMOTE_V6, 80), "remote6-udp:80"),
            (sa(REMOTE_V4, 53), "remote-udp:53"),
        ],
    );
    let check = |label: &str, dst: &str, port: u16, want: &str| {
        let msg = format!("udp-{label}-{dst}-{port}");
        let out = udp_send(&topo.pod, 1001, 1001, ip(dst), port, &msg);
        assert!(out.success(), "udp send failed:\n{out}");
        let got = remote_udp.wait_for(&msg, Duration::from_secs(3));
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{msg}: datagram did not reach the remote; pod got {:?}\n--- ruleset ---\n{}",
            pod_udp.received(),
            topo.pod.ruleset()
        );
        assert!(
            !pod_udp.received().iter().any(|d| d.data.trim() == msg),
            "{msg}: datagram was redirected locally: {:?}",
            pod_udp.received()
        );
    };
    topo.pod.nftkit_ok(NO_ENV, REDIRECT);
    check("defaults", REMOTE_V4, 80, "remote-udp:80");
    check("defaults", REMOTE_V6, 80, "remote6-udp:80");
    topo.pod.nftkit_ok(&[("PORT_MAPPING", "15001")], REDIRECT);
    check("lone", REMOTE_V4, 53, "remote-udp:53");
    check("lone", REMOTE_V4, 80, "remote-udp:80");
    // TCP is still redirected under the same rules.
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:15001"));
}

/// UID/GID ranges, a lone port mapping and DNAT together.
#[test]
fn uid_gid_ranges_with_lone_port_dnat() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    let _extra = TcpServer::start(
        &topo.remote,
        &[
            (sa(TARGET_V4, 15001), "target:15001"),
            (sa(TARGET_V6, 15001), "target6:15001"),
        ],
    );
    topo.pod.nftkit_ok(
        &[
            ("ACCEPT_UIDS", "1010,2000-2999"),
            ("ACCEPT_GIDS", "1010, 3000-3099"),
            ("PORT_MAPPING", "15001"),
            ("TO_IPV4_ADDR", TARGET_V4),
            ("TO_IPV6_ADDR", TARGET_V6),
        ],
        REDIRECT,
    );
    topo.expect(2000, 5000, REMOTE_V4, 22, Some("remote:22"));
    topo.expect(2999, 5000, REMOTE_V6, 80, Some("remote6:80"));
    topo.expect(5000, 3050, REMOTE_V4, 8080, Some("remote:8080"));
    topo.expect(3000, 5000, REMOTE_V4, 22, Some("target:15001"));
    topo.expect(1999, 3100, REMOTE_V4, 80, Some("target:15001"));
    topo.expect(1001, 1001, REMOTE_V6, 443, Some("target6:15001"));
    topo.expect(1001, 1001, PRIVATE_V4, 80, Some("private:80"));
}

/// The documented per-family block lists, the undocumented `ACCEPT_BLOCKS`
/// (items sorted by family) and their precedence.
#[test]
fn accept_block_variables() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();

    // Documented IPv4 list replaces the IPv4 default; IPv6 keeps its default.
    topo.pod
        .nftkit_ok(&[("IPV4_ACCEPT_BLOCKS", "198.51.100.0/24")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1001, 1001, PRIVATE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(1001, 1001, PRIVATE_V6, 443, Some("private6:443"));

    // Upstream's ACCEPT_BLOCKS feeds both families.
    topo.pod.nftkit_ok(
        &[("ACCEPT_BLOCKS", "2001:db8::/64,198.51.100.0/24")],
        REDIRECT,
    );
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("remote6:80"));
    topo.expect(1001, 1001, PRIVATE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, PRIVATE_V6, 443, Some("proxy6:10443"));

    // A per-family variable wins for its family.
    topo.pod.nftkit_ok(
        &[
            ("ACCEPT_BLOCKS", "2001:db8::/64,198.51.100.0/24"),
            ("IPV4_ACCEPT_BLOCKS", "10.0.0.0/8"),
        ],
        REDIRECT,
    );
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, PRIVATE_V4, 80, Some("private:80"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("remote6:80"));

    // Only IPv4 items in ACCEPT_BLOCKS: IPv6 keeps its default.
    topo.pod
        .nftkit_ok(&[("ACCEPT_BLOCKS", "198.51.100.0/24")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(1001, 1001, PRIVATE_V6, 443, Some("private6:443"));

    // Flags win over variables.
    topo.pod.nftkit_ok(
        &[("IPV6_ACCEPT_BLOCKS", "2001:db8::/64")],
        &["redirect", "--ipv6-accept-blocks", "fc00::/7"],
    );
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(1001, 1001, PRIVATE_V6, 443, Some("private6:443"));
}

/// Flags win over variables; a flag given explicitly empty means an empty
/// list (so uid/gid 1010 lose their exemption).
#[test]
fn flags_win_and_explicit_empty_flags() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(
        &[("PORT_MAPPING", "10080:80")],
        &["redirect", "--port-mapping", "15001:22"],
    );
    topo.expect(1001, 1001, REMOTE_V4, 22, Some("proxy:15001"));
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("remote:80"));

    topo.pod.nftkit_ok(
        &[("ACCEPT_UIDS", "1001"), ("ACCEPT_GIDS", "1001")],
        &["redirect", "--accept-uids", "", "--accept-gids", ""],
    );
    topo.expect(1010, 1010, REMOTE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));

    topo.pod.nftkit_ok(
        &[("ACCEPT_UIDS", "1010")],
        &["redirect", "--accept-uids", "1001"],
    );
    topo.expect(1001, 2000, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1010, 2000, REMOTE_V4, 80, Some("proxy:10080"));
    // ACCEPT_GIDS default (1010) still applies
    topo.expect(2000, 1010, REMOTE_V4, 80, Some("remote:80"));
}

/// Mappings keep upstream's first-match order: a lone port placed after
/// specific ones catches only the rest; placed first, it catches everything;
/// a repeated destination port goes to its first `to_port`.
#[test]
fn port_mapping_first_match_order() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();

    topo.pod
        .nftkit_ok(&[("PORT_MAPPING", "10080:80,15001")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, REMOTE_V4, 22, Some("proxy:15001"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 443, Some("proxy6:15001"));
    // the exemption covers every port once a lone mapping exists
    topo.expect(1010, 2000, REMOTE_V4, 22, Some("remote:22"));
    topo.expect(2000, 1010, REMOTE_V4, 80, Some("remote:80"));

    topo.pod
        .nftkit_ok(&[("PORT_MAPPING", "15001,10080:80")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:15001"));
    topo.expect(1001, 1001, REMOTE_V4, 22, Some("proxy:15001"));

    topo.pod
        .nftkit_ok(&[("PORT_MAPPING", "10080:80,10443:80")], REDIRECT);
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    topo.expect(1001, 1001, REMOTE_V4, 443, Some("remote:443"));
}

/// UID/GID names are looked up in the pod's /etc/passwd and /etc/group
/// (here bind-mounted by `ip netns exec` from /etc/netns/NAME).
#[test]
fn accept_uid_gid_names_from_passwd_and_group() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.write_etc(
        "passwd",
        "root:x:0:0:root:/root:/bin/sh\nqproxy:x:1234:1234::/nonexistent:/usr/sbin/nologin\n",
    );
    topo.pod.write_etc("group", "root:x:0:\nqgroup:x:4321:\n");
    topo.pod.nftkit_ok(
        &[("ACCEPT_UIDS", "qproxy"), ("ACCEPT_GIDS", "qgroup,1010")],
        REDIRECT,
    );
    topo.expect(1234, 5000, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(5000, 4321, REMOTE_V6, 443, Some("remote6:443"));
    topo.expect(5000, 1010, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(1010, 5000, REMOTE_V4, 80, Some("proxy:10080"));
}

/// Overlapping and duplicate items (accepted by upstream's iptables) are
/// accepted and merged: apply succeeds, verify agrees, the renderer agrees
/// with the netlink backend, and packets behave as the union.
#[test]
fn overlapping_and_duplicate_items_are_accepted() {
    require_root();
    let env = [
        (
            "IPV4_ACCEPT_BLOCKS",
            "10.0.0.0/8,10.1.0.0/16,10.0.0.0/8,198.51.100.0/25",
        ),
        ("IPV6_ACCEPT_BLOCKS", "fc00::/7,fd00::/8,::1/128,::1/128"),
        ("ACCEPT_UIDS", "1010,1000-2000,1500-2500,1010"),
        ("ACCEPT_GIDS", "1010,1010"),
        ("PORT_MAPPING", "10080:80,10080:80,10443:443"),
    ];
    let topo = Topology::new();
    let _srv = topo.servers();
    topo.pod.nftkit_ok(&env, REDIRECT);
    let out = topo.pod.nftkit(&env, &["verify", "redirect"]);
    assert_eq!(out.code, Some(0), "verify after apply:\n{out}");
    topo.expect(3000, 3000, REMOTE_V4, 80, Some("remote:80"));
    topo.expect(3000, 3000, PRIVATE_V4, 80, Some("private:80"));
    topo.expect(3000, 3000, PRIVATE_V6, 443, Some("private6:443"));
    topo.expect(2400, 3000, REMOTE_V6, 80, Some("remote6:80"));
    topo.expect(2600, 3000, REMOTE_V6, 80, Some("proxy6:10080"));
    topo.expect(2600, 3000, REMOTE_V6, 443, Some("proxy6:10443"));
    dry_run_matches_apply(&env);
}

// ---------------------------------------------------------------------------
// Kernel state: idempotence, ownership, verify, invalid input, dry-run
// ---------------------------------------------------------------------------

/// Re-running is idempotent: same ruleset (text and JSON minus handles).
#[test]
fn reapply_is_idempotent() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    let env = [("TO_IPV4_ADDR", TARGET_V4)];
    topo.pod.nftkit_ok(&env, REDIRECT);
    let text1 = topo.pod.ruleset();
    let json1 = topo.pod.ruleset_json_no_handles();
    topo.pod.nftkit_ok(&env, REDIRECT);
    let text2 = topo.pod.ruleset();
    let json2 = topo.pod.ruleset_json_no_handles();
    assert_eq!(text1, text2, "nft list ruleset differs after the 2nd run");
    assert_eq!(
        json1, json2,
        "nft -j list ruleset (minus handles) differs after the 2nd run"
    );
    assert_eq!(
        text2.matches("table ").count(),
        1,
        "exactly one table expected:\n{text2}"
    );
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    topo.expect(1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
}

/// Unset and empty variables mean their defaults; whitespace around items
/// and a trailing comma are tolerated.
#[test]
fn empty_vars_mean_defaults_and_lists_are_tolerant() {
    require_root();
    let ns = Netns::new();
    ns.nftkit_ok(NO_ENV, REDIRECT);
    let defaults = ns.ruleset();
    let cases: &[&[(&str, &str)]] = &[
        &[
            ("PORT_MAPPING", ""),
            ("ACCEPT_UIDS", ""),
            ("ACCEPT_GIDS", ""),
        ],
        &[
            ("IPV4_ACCEPT_BLOCKS", ""),
            ("IPV6_ACCEPT_BLOCKS", ""),
            ("ACCEPT_BLOCKS", ""),
        ],
        &[
            ("TO_IPV4_ADDR", ""),
            ("TO_IPV6_ADDR", ""),
            ("TO_DOMAIN", ""),
        ],
        &[("PORT_MAPPING", " 10080:80 , 10443:443,")],
        &[("ACCEPT_UIDS", " 1010 ,"), ("ACCEPT_GIDS", "1010,")],
        &[(
            "IPV4_ACCEPT_BLOCKS",
            "127.0.0.0/8, 10.0.0.0/8 ,172.16.0.0/12,192.168.0.0/16,",
        )],
    ];
    for env in cases {
        let out = ns.nftkit_ok(env, REDIRECT);
        let now = ns.ruleset();
        assert_eq!(
            now, defaults,
            "env {env:?} should give the default ruleset\n{out}"
        );
    }
}

const FOREIGN: &str = r#"
table inet foreign {
    set blocked {
        type ipv4_addr
        flags interval
        elements = { 192.0.2.0/24 }
    }
    chain out {
        type filter hook output priority 10; policy accept;
        ip daddr @blocked tcp dport 9 drop
        tcp dport 9999 reject
        meta skuid 4242 accept
    }
    chain helper {
        udp dport 9998 drop
    }
}
table ip nat {
    chain OUTPUT {
        type nat hook output priority -100; policy accept;
        ip daddr 192.0.2.1 tcp dport 9997 redirect to :9996
    }
}
"#;

/// Tables nftkit does not own are never touched: apply, `delete redirect`
/// and `delete --all` leave them byte-identical.
#[test]
fn foreign_tables_untouched() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    let ns = &topo.pod;
    ns.nft_load(FOREIGN);
    let snap = || {
        (
            ns.table("inet", "foreign").expect("inet foreign exists"),
            ns.table("ip", "nat").expect("ip nat exists"),
        )
    };
    let before = snap();

    ns.nftkit_ok(NO_ENV, REDIRECT);
    assert_table_shape(ns);
    assert_eq!(snap(), before, "foreign tables changed by apply");
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));

    ns.nftkit_ok(NO_ENV, REDIRECT);
    assert_eq!(snap(), before, "foreign tables changed by re-apply");

    ns.nftkit_ok(NO_ENV, &["delete", "redirect"]);
    assert!(
        ns.table("inet", TABLE).is_none(),
        "delete redirect left the table:\n{}",
        ns.ruleset()
    );
    assert_eq!(snap(), before, "foreign tables changed by delete redirect");
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("remote:80"));

    // deleting what is already gone is fine and still touches nothing else
    let out = ns.nftkit(NO_ENV, &["delete", "redirect"]);
    assert_eq!(
        out.code,
        Some(0),
        "delete of an absent table should succeed:\n{out}"
    );
    assert_eq!(snap(), before);

    ns.nftkit_ok(NO_ENV, REDIRECT);
    ns.nftkit_ok(NO_ENV, &["delete", "--all"]);
    assert!(
        ns.table("inet", TABLE).is_none(),
        "delete --all left the table:\n{}",
        ns.ruleset()
    );
    assert_eq!(snap(), before, "foreign tables changed by delete --all");
}

/// `--table` names the owned table so instances coexist; `delete --all`
/// removes every nftkit table and nothing else.
#[test]
fn custom_table_name_and_delete_all() {
    require_root();
    let ns = Netns::new();
    ns.nft_load(FOREIGN);
    let foreign = ns.table("inet", "foreign").unwrap();
    ns.nftkit_ok(NO_ENV, REDIRECT);
    ns.nftkit_ok(
        &[("PORT_MAPPING", "15001")],
        &["--table", "nkalt", "redirect"],
    );
    assert!(ns.table("inet", TABLE).is_some(), "{}", ns.ruleset());
    let alt = ns
        .table("inet", "nkalt")
        .unwrap_or_else(|| panic!("no inet nkalt:\n{}", ns.ruleset()));
    assert!(alt.contains("15001"), "{alt}");

    ns.nftkit_ok(NO_ENV, &["--table", "nkalt", "delete", "redirect"]);
    assert!(ns.table("inet", "nkalt").is_none(), "{}", ns.ruleset());
    assert!(ns.table("inet", TABLE).is_some(), "{}", ns.ruleset());

    ns.nftkit_ok(NO_ENV, &["--table", "nkalt", "redirect"]);
    ns.nftkit_ok(NO_ENV, &["delete", "--all"]);
    assert!(ns.table("inet", "nkalt").is_none(), "{}", ns.ruleset());
    assert!(ns.table("inet", TABLE).is_none(), "{}", ns.ruleset());
    assert_eq!(
        ns.table("inet", "foreign").as_deref(),
        Some(foreign.as_str())
    );
}

/// `status` lists the owned table (text and JSON) and not foreign ones.
#[test]
fn status_lists_owned_table() {
    require_root();
    let ns = Netns::new();
    ns.nft_load(FOREIGN);
    ns.nftkit_ok(NO_ENV, REDIRECT);
    let out = ns.nftkit_ok(NO_ENV, &["status"]);
    assert!(
        out.stdout.contains(TABLE),
        "status does not show {TABLE}:\n{out}"
    );
    assert!(
        !out.stdout.contains("foreign"),
        "status lists a foreign table:\n{out}"
    );
    let out = ns.nftkit_ok(NO_ENV, &["status", "--json"]);
    assert!(
        serde_json::from_str::<serde_json::Value>(out.stdout.trim()).is_ok(),
        "status --json is not one JSON document:\n{out}"
    );
    assert!(
        out.stdout.contains(TABLE),
        "status --json does not show {TABLE}:\n{out}"
    );
}

/// Invalid input after a good apply: exit 2, one line on stderr naming the
/// variable (and the bad value), the kernel ruleset unchanged.
#[test]
fn invalid_input_exits_2_and_changes_nothing() {
    require_root();
    let topo = Topology::new();
    let _srv = topo.servers();
    let ns = &topo.pod;
    ns.nftkit_ok(NO_ENV, REDIRECT);
    let before = ns.ruleset();
    // (variable, value, text the message must contain besides the name)
    let cases: &[(&str, &str, &str)] = &[
        ("PORT_MAPPING", "abc:80", "abc"),
        ("PORT_MAPPING", "10080:80:90", "90"),
        ("PORT_MAPPING", "10080:http", "http"),
        ("PORT_MAPPING", ":80", ":80"),
        ("PORT_MAPPING", "0:80", "0"),
        ("PORT_MAPPING", "10080:0", "0"),
        ("PORT_MAPPING", "70000:80", "70000"),
        ("PORT_MAPPING", "10080:70000", "70000"),
        ("PORT_MAPPING", "70000", "70000"),
        ("PORT_MAPPING", "10080:80,,10443:443", ""),
        ("ACCEPT_UIDS", "x1", "x1"),
        ("ACCEPT_UIDS", "0,,5", ""),
        ("ACCEPT_UIDS", "-1", "-1"),
        ("ACCEPT_UIDS", "2999-2000", "2999-2000"),
        ("ACCEPT_GIDS", "abc", "abc"),
        ("IPV4_ACCEPT_BLOCKS", "10.0.0.1/8", "10.0.0.1/8"),
        ("IPV4_ACCEPT_BLOCKS", "10.0.0.0/33", "10.0.0.0/33"),
        ("IPV4_ACCEPT_BLOCKS", "fc00::/7", "fc00::/7"),
        ("IPV6_ACCEPT_BLOCKS", "10.0.0.0/8", "10.0.0.0/8"),
        ("IPV6_ACCEPT_BLOCKS", "fc00::1/7", "fc00::1/7"),
        ("ACCEPT_BLOCKS", "banana", "banana"),
        ("TO_IPV4_ADDR", "2001:db8::10", "2001:db8::10"),
        ("TO_IPV4_ADDR", "203.0.113.300", "203.0.113.300"),
        ("TO_IPV6_ADDR", "203.0.113.10", "203.0.113.10"),
    ];
    let mut failures = Vec::new();
    for (var, value, needle) in cases {
        let out = ns.nftkit(&[(var, value)], REDIRECT);
        let err = out.stderr.trim();
        let mut problems = Vec::new();
        if out.code != Some(2) {
            problems.push(format!("exit {:?} instead of 2", out.code));
        }
        if err.lines().count() != 1 {
            problems.push(format!("stderr has {} lines, want 1", err.lines().count()));
        }
        if !err.contains(var) {
            problems.push(format!("stderr does not name {var}"));
        }
        if !err.contains(needle) {
            problems.push(format!("stderr does not show the bad value {needle:?}"));
        }
        if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            problems.push("panic".into());
        }
        let after = ns.ruleset();
        if after != before {
            problems.push(format!("ruleset changed:\n{after}"));
        }
        if !problems.is_empty() {
            failures.push(format!("{var}={value:?}: {}\n{out}", problems.join("; ")));
        }
    }
    // The same through flags: the message names the option.
    let flag_cases: &[&[&str]] = &[
        &["redirect", "--port-mapping", "abc:80"],
        &["redirect", "--accept-uids", "x1"],
        &["redirect", "--ipv4-accept-blocks", "10.0.0.1/8"],
        &["redirect", "--to-ipv6-addr", "nope"],
    ];
    for args in flag_cases {
        let out = ns.nftkit(NO_ENV, args);
        let err = out.stderr.trim();
        let opt = args[1].trim_start_matches("--");
        let env_name = opt.to_uppercase().replace('-', "_");
        let mut problems = Vec::new();
        if out.code != Some(2) {
            problems.push(format!("exit {:?} instead of 2", out.code));
        }
        if err.lines().count() != 1 {
            problems.push(format!("stderr has {} lines, want 1", err.lines().count()));
        }
        if !err.contains(opt) && !err.contains(&env_name) {
            problems.push(format!("stderr names neither --{opt} nor {env_name}"));
        }
        if ns.ruleset() != before {
            problems.push("ruleset changed".into());
        }
        if !problems.is_empty() {
            failures.push(format!("{args:?}: {}\n{out}", problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} invalid-input case(s) misbehaved:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    // The good rules still work.
    topo.expect(1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
}

/// `verify` exits 0 when the kernel matches, 3 with a diff when the chain
/// was flushed, the table deleted, or the desired config differs; it never
/// changes the kernel.
#[test]
fn verify_detects_drift() {
    require_root();
    let ns = Netns::new();
    let verify = &["verify", "redirect"];
    let env = [
        ("TO_IPV4_ADDR", TARGET_V4),
        ("ACCEPT_UIDS", "1010,2000-2999"),
    ];
    ns.nftkit_ok(&env, REDIRECT);
    let out = ns.nftkit(&env, verify);
    assert_eq!(
        out.code,
        Some(0),
        "verify right after apply must pass:\n{out}"
    );

    // different desired state than what is applied
    let out = ns.nftkit(&[("TO_IPV4_ADDR", TARGET_V4)], verify);
    assert_eq!(
        out.code,
        Some(3),
        "verify with other ACCEPT_UIDS must report drift:\n{out}"
    );
    assert!(
        !out.stdout.trim().is_empty(),
        "verify printed no diff:\n{out}"
    );

    ns.must(&["nft", "flush", "chain", "inet", TABLE, "nat-output"]);
    let flushed = ns.ruleset();
    let out = ns.nftkit(&env, verify);
    assert_eq!(
        out.code,
        Some(3),
        "verify after flushing nat-output must exit 3:\n{out}"
    );
    assert!(
        !out.stdout.trim().is_empty(),
        "verify printed no diff:\n{out}"
    );
    assert_eq!(ns.ruleset(), flushed, "verify changed the kernel");

    ns.nftkit_ok(&env, REDIRECT);
    let out = ns.nftkit(&env, verify);
    assert_eq!(out.code, Some(0), "verify after re-apply must pass:\n{out}");

    // a set element removed
    ns.must(&[
        "nft",
        "delete",
        "element",
        "inet",
        TABLE,
        "accept-uids",
        "{ 1010 }",
    ]);
    let out = ns.nftkit(&env, verify);
    assert_eq!(
        out.code,
        Some(3),
        "verify after deleting a set element must exit 3:\n{out}"
    );
    assert!(
        !out.stdout.trim().is_empty(),
        "verify printed no diff:\n{out}"
    );

    ns.must(&["nft", "delete", "table", "inet", TABLE]);
    let out = ns.nftkit(&env, verify);
    assert_eq!(
        out.code,
        Some(3),
        "verify after deleting the table must exit 3:\n{out}"
    );
    assert!(
        !out.stdout.trim().is_empty(),
        "verify printed no diff:\n{out}"
    );
    assert_eq!(ns.ruleset().trim(), "", "verify created something");
}

/// `--dry-run` in `ns`: exits 0, prints a script, leaves the ruleset empty.
fn dry_run(ns: &Netns, env: &[(&str, &str)]) -> String {
    let out = ns.nftkit(env, &["--dry-run", "redirect"]);
    assert!(out.success(), "dry-run failed:\n{out}");
    assert!(
        !out.stdout.trim().is_empty(),
        "dry-run printed nothing:\n{out}"
    );
    assert_eq!(
        ns.ruleset().trim(),
        "",
        "dry-run touched the kernel:\n{out}"
    );
    out.stdout
}

/// The dry-run script, loaded with `nft -f` into a fresh namespace, gives the
/// same `nft list ruleset` as nftkit's own netlink apply: the renderer and the
/// netlink backend agree.
fn dry_run_matches_apply(env: &[(&str, &str)]) {
    let a = Netns::new();
    let script = dry_run(&a, env);
    a.nftkit_ok(env, REDIRECT);
    let applied = a.ruleset();

    let b = Netns::new();
    b.nft_load(&script);
    let loaded = b.ruleset();
    assert_eq!(
        loaded, applied,
        "nft -f of the dry-run output differs from nftkit's apply (env {env:?})\n--- dry-run script ---\n{script}"
    );
    // and loading it again on top of the existing table replaces it in place
    let again = b.cmd(&["nft", "-f", "-"]).stdin(script.as_str()).run();
    assert!(
        again.success(),
        "re-loading the dry-run script failed:\n{again}"
    );
    assert_eq!(
        b.ruleset(),
        applied,
        "re-loading the dry-run script is not idempotent"
    );
    // JSON view agrees as well (handles aside)
    assert_eq!(b.ruleset_json_no_handles(), a.ruleset_json_no_handles());
}

#[test]
fn dry_run_default_matches_apply() {
    require_root();
    dry_run_matches_apply(NO_ENV);
}

#[test]
fn dry_run_targets_ranges_lone_port_matches_apply() {
    require_root();
    dry_run_matches_apply(&[
        ("TO_IPV4_ADDR", TARGET_V4),
        ("TO_IPV6_ADDR", TARGET_V6),
        ("ACCEPT_UIDS", "1010,2000-2999"),
        ("ACCEPT_GIDS", "1010,3000-3099"),
        ("PORT_MAPPING", "15001"),
    ]);
}

#[test]
fn dry_run_mixed_mapping_and_blocks_matches_apply() {
    require_root();
    dry_run_matches_apply(&[
        ("PORT_MAPPING", "10080:80,10443:443,15001:8443"),
        ("ACCEPT_BLOCKS", "10.0.0.0/8,fd00::/8,192.168.0.0/16"),
        ("TO_IPV6_ADDR", TARGET_V6),
    ]);
}

/// `--dry-run` needs no privileges: as an unprivileged uid it prints the same
/// script as root does.
#[test]
fn dry_run_needs_no_privileges() {
    require_root();
    let ns = Netns::new();
    let as_root = dry_run(&ns, NO_ENV);
    let mut c = ns.cmd(&[
        "setpriv",
        "--reuid",
        "1001",
        "--regid",
        "1001",
        "--clear-groups",
        NFTKIT,
        "--dry-run",
        "redirect",
    ]);
    for k in NFTKIT_ENV {
        c = c.env_remove(k);
    }
    let out = c.run();
    assert!(out.success(), "unprivileged dry-run failed:\n{out}");
    assert_eq!(
        out.stdout, as_root,
        "unprivileged dry-run prints another script"
    );
    assert_eq!(ns.ruleset().trim(), "");
}

/// Applying without CAP_NET_ADMIN is a runtime failure (exit 1), not a panic.
#[test]
fn apply_without_privileges_exits_1() {
    require_root();
    let ns = Netns::new();
    let mut c = ns.cmd(&[
        "setpriv",
        "--reuid",
        "1001",
        "--regid",
        "1001",
        "--clear-groups",
        NFTKIT,
        "--backend",
        "nftables",
        "redirect",
    ]);
    for k in NFTKIT_ENV {
        c = c.env_remove(k);
    }
    let out = c.run();
    assert_eq!(
        out.code,
        Some(1),
        "expected exit 1 without CAP_NET_ADMIN:\n{out}"
    );
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert_eq!(ns.ruleset().trim(), "");
}
