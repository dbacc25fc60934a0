//! The end-to-end traffic scenarios, run on every backend with the same assertions:
//! `nftables` (netlink), `iptables-legacy` and `iptables-nft` (iptables-restore of that
//! flavour). Each scenario is a function taking the backend; `on_all_backends!` makes one
//! test per (backend, scenario), named `<backend>::<scenario>`, e.g.
//! `iptables_legacy::redirect_defaults` — filter with `scripts/test.sh iptables_nft::`.
//!
//! Topologies come from tests/common (Topology: pod + remote); the masquerade, dnat and
//! local-address scenarios build their own small namespaces here. Needs root; run through
//! scripts/test.sh.

use crate::common::*;
use std::net::IpAddr;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum B {
    Nftables,
    IptablesLegacy,
    IptablesNft,
}

impl B {
    fn flag(self) -> &'static str {
        match self {
            B::Nftables => "nftables",
            B::IptablesLegacy => "iptables-legacy",
            B::IptablesNft => "iptables-nft",
        }
    }

    /// `iptables-legacy` / `iptables-nft` command prefix for ip4 (`iptables`) or ip6.
    fn tool(self, v6: bool, what: &str) -> String {
        let fam = if v6 { "ip6tables" } else { "iptables" };
        match self {
            B::Nftables => panic!("no iptables tool for the nftables backend"),
            B::IptablesLegacy => format!("{fam}-legacy{what}"),
            B::IptablesNft => format!("{fam}-nft{what}"),
        }
    }

    /// nftkit `--backend B ARGS` in `ns`.
    fn nftkit(self, ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> Out {
        let mut v = vec!["--backend", self.flag()];
        v.extend_from_slice(args);
        ns.nftkit(env, &v)
    }

    fn ok(self, ns: &Netns, env: &[(&str, &str)], args: &[&str]) -> Out {
        let out = self.nftkit(ns, env, args);
        assert!(
            out.success(),
            "nftkit --backend {} failed:\n{out}\n{}",
            self.flag(),
            self.dump(ns)
        );
        out
    }

    /// Everything that could hold our rules, for failure messages.
    fn dump(self, ns: &Netns) -> String {
        let mut s = format!(
            "--- nft list ruleset ---\n{}",
            ns.nft(&["list", "ruleset"]).stdout
        );
        for b in [B::IptablesLegacy, B::IptablesNft] {
            for v6 in [false, true] {
                let t = b.tool(v6, "-save");
                // Without the "# Generated ... on <time>" lines, so two dumps compare.
                let text: Vec<String> = ns
                    .run(&[t.as_str()])
                    .stdout
                    .lines()
                    .filter(|l| !l.starts_with('#'))
                    .map(str::to_string)
                    .collect();
                s.push_str(&format!("--- {t} ---\n{}\n", text.join("\n")));
            }
        }
        s
    }

    /// Removes every rule of the command's main chain behind nftkit's back.
    fn flush_chain(self, ns: &Netns, nft_table: &str, nft_chain: &str, ipt: (&str, &str)) {
        match self {
            B::Nftables => {
                ns.must(&["nft", "flush", "chain", "inet", nft_table, nft_chain]);
            }
            _ => {
                let (table, chain) = ipt;
                ns.must(&[self.tool(false, "").as_str(), "-t", table, "-F", chain]);
            }
        }
    }

    /// Whether anything of `nftkit-<command>` is left in the kernel (this backend's view).
    fn has_owned(self, ns: &Netns, command: &str) -> bool {
        match self {
            B::Nftables => ns.table("inet", &format!("nftkit-{command}")).is_some(),
            _ => {
                let prefix = format!("NFTKIT-{}", command.to_ascii_uppercase());
                [false, true].iter().any(|v6| {
                    ns.run(&[self.tool(*v6, "-save").as_str()])
                        .stdout
                        .contains(&prefix)
                })
            }
        }
    }
}

/// `nftkit-<command>` markers, normalised iptables-save output of one tool (comments and
/// counters dropped, so two saves of an unchanged table compare equal).
fn save_text(ns: &Netns, tool: &str) -> String {
    let out = ns.must(&[tool]);
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.rfind(" [") {
            Some(i) if l.starts_with(':') => format!("{} [0:0]", &l[..i]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every line of the save that does not mention an NFTKIT chain.
fn foreign_lines(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("NFTKIT-"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Generates `mod nftables`, `mod iptables_legacy`, `mod iptables_nft`, each with one
/// `#[test]` per scenario.
macro_rules! on_all_backends {
    ($($scenario:ident),* $(,)?) => {
        mod nftables {
            $( #[test] fn $scenario() { super::require_root(); super::$scenario(super::B::Nftables) } )*
        }
        mod iptables_legacy {
            $( #[test] fn $scenario() { super::require_root(); super::$scenario(super::B::IptablesLegacy) } )*
        }
        mod iptables_nft {
            $( #[test] fn $scenario() { super::require_root(); super::$scenario(super::B::IptablesNft) } )*
        }
    };
}

on_all_backends!(
    redirect_defaults,
    redirect_lone_port,
    redirect_dnat_target,
    redirect_udp_untouched,
    redirect_verify_then_drift,
    redirect_foreign_rules_untouched,
    masquerade_core,
    local_address_core,
    dnat_core,
    dnat_daemon_repairs_drift,
    netpol_core,
);

// ---------------------------------------------------------------------------
// redirect (kubernetes-qpoint-init)
// ---------------------------------------------------------------------------

const NO_ENV: &[(&str, &str)] = &[];

/// Connects from the pod and asserts where the connection landed (None = it fails).
fn expect(b: B, topo: &Topology, uid: u32, gid: u32, dst: &str, port: u16, want: Option<&str>) {
    let out = tcp_connect(&topo.pod, uid, gid, ip(dst), port);
    let got = answered_tag(&out);
    if got.as_deref() != want {
        panic!(
            "[{}] uid {uid} gid {gid} -> {dst} port {port}: expected {want:?}, got {got:?}\n{out}\n{}",
            b.flag(),
            b.dump(&topo.pod)
        );
    }
}

/// Defaults: :80 and :443 to the local proxies (both families), other ports, uid/gid 1010
/// and the accept blocks untouched.
fn redirect_defaults(b: B) {
    let topo = Topology::new();
    let _srv = topo.servers();
    b.ok(&topo.pod, NO_ENV, &["redirect"]);
    expect(b, &topo, 1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    expect(b, &topo, 1001, 1001, REMOTE_V4, 443, Some("proxy:10443"));
    expect(b, &topo, 0, 0, REMOTE_V4, 80, Some("proxy:10080"));
    expect(b, &topo, 1001, 1001, REMOTE_V4, 22, Some("remote:22"));
    // uid 1010 / gid 1010 are not redirected
    expect(b, &topo, 1010, 2000, REMOTE_V4, 80, Some("remote:80"));
    expect(b, &topo, 2000, 1010, REMOTE_V4, 443, Some("remote:443"));
    expect(b, &topo, 1011, 1009, REMOTE_V4, 80, Some("proxy:10080"));
    // accept blocks
    expect(b, &topo, 1001, 1001, PRIVATE_V4, 80, Some("private:80"));
    expect(b, &topo, 1001, 1001, "127.0.0.5", 80, Some("local:80"));
    expect(b, &topo, 1001, 1001, "::1", 80, Some("local6:80"));
    expect(b, &topo, 1001, 1001, PRIVATE_V6, 443, Some("private6:443"));
    // IPv6
    expect(b, &topo, 1001, 1001, REMOTE_V6, 443, Some("proxy6:10443"));
    expect(b, &topo, 1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    expect(b, &topo, 1001, 1001, REMOTE_V6, 22, Some("remote6:22"));
    expect(b, &topo, 1010, 1010, REMOTE_V6, 80, Some("remote6:80"));
}

/// A lone `PORT_MAPPING` port catches every TCP port, minus the exemptions.
fn redirect_lone_port(b: B) {
    let topo = Topology::new();
    let _srv = topo.servers();
    b.ok(&topo.pod, &[("PORT_MAPPING", "15001")], &["redirect"]);
    expect(b, &topo, 1001, 1001, REMOTE_V4, 22, Some("proxy:15001"));
    expect(b, &topo, 1001, 1001, REMOTE_V4, 8080, Some("proxy:15001"));
    expect(b, &topo, 1001, 1001, REMOTE_V6, 22, Some("proxy6:15001"));
    expect(b, &topo, 1010, 2000, REMOTE_V4, 22, Some("remote:22"));
    expect(b, &topo, 2000, 1010, REMOTE_V6, 8080, Some("remote6:8080"));
    expect(b, &topo, 1001, 1001, PRIVATE_V4, 80, Some("private:80"));
}

/// `TO_IPV4_ADDR` / `TO_IPV6_ADDR`: DNAT to `target:to_port`, per family.
fn redirect_dnat_target(b: B) {
    let topo = Topology::new();
    let _srv = topo.servers();
    b.ok(&topo.pod, &[("TO_IPV4_ADDR", TARGET_V4)], &["redirect"]);
    expect(b, &topo, 1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    expect(b, &topo, 1001, 1001, REMOTE_V4, 443, Some("target:10443"));
    expect(b, &topo, 1001, 1001, REMOTE_V6, 80, Some("proxy6:10080"));
    expect(b, &topo, 1010, 2000, REMOTE_V4, 80, Some("remote:80"));
    b.ok(
        &topo.pod,
        &[("TO_IPV4_ADDR", TARGET_V4), ("TO_IPV6_ADDR", TARGET_V6)],
        &["redirect"],
    );
    expect(b, &topo, 1001, 1001, REMOTE_V6, 443, Some("target6:10443"));
    expect(b, &topo, 1001, 1001, REMOTE_V4, 80, Some("target:10080"));
    expect(b, &topo, 2000, 1010, REMOTE_V6, 80, Some("remote6:80"));
}

/// UDP is never touched, even on mapped ports or with a lone mapping.
fn redirect_udp_untouched(b: B) {
    let topo = Topology::new();
    let _srv = topo.servers();
    let pod_udp = UdpServer::start(
        &topo.pod,
        &[
            (sa("127.0.0.1", 10080), "proxy-udp"),
            (sa("127.0.0.1", 15001), "proxy-udp-15001"),
        ],
    );
    let remote_udp = UdpServer::start(
        &topo.remote,
        &[
            (sa(REMOTE_V4, 80), "remote-udp:80"),
            (sa(REMOTE_V6, 80), "remote6-udp:80"),
        ],
    );
    let check = |label: &str, dst: &str, want: &str| {
        let msg = format!("udp-{}-{label}-{dst}", b.flag());
        let out = udp_send(&topo.pod, 1001, 1001, ip(dst), 80, &msg);
        assert!(out.success(), "udp send failed:\n{out}");
        let got = remote_udp.wait_for(&msg, Duration::from_secs(3));
        assert_eq!(
            got.as_deref(),
            Some(want),
            "{msg}: datagram did not reach the remote; pod got {:?}\n{}",
            pod_udp.received(),
            b.dump(&topo.pod)
        );
    };
    b.ok(&topo.pod, NO_ENV, &["redirect"]);
    check("defaults", REMOTE_V4, "remote-udp:80");
    check("defaults", REMOTE_V6, "remote6-udp:80");
    b.ok(&topo.pod, &[("PORT_MAPPING", "15001")], &["redirect"]);
    check("lone", REMOTE_V4, "remote-udp:80");
    expect(b, &topo, 1001, 1001, REMOTE_V4, 80, Some("proxy:15001"));
}

/// verify: 0 after apply, 3 after our chain is flushed (nothing changed by verify), 0
/// after re-apply; re-apply adds no second jump; delete removes everything of ours.
fn redirect_verify_then_drift(b: B) {
    let ns = Netns::new();
    let env = [("ACCEPT_UIDS", "1010,2000-2999")];
    b.ok(&ns, &env, &["redirect"]);
    b.ok(&ns, &env, &["redirect"]);
    let out = b.nftkit(&ns, &env, &["verify", "redirect"]);
    assert_eq!(
        out.code,
        Some(0),
        "verify after apply:\n{out}\n{}",
        b.dump(&ns)
    );
    if b != B::Nftables {
        for v6 in [false, true] {
            let save = ns.must(&[b.tool(v6, "-save").as_str(), "-t", "nat"]).stdout;
            let jumps = save
                .lines()
                .filter(|l| l.starts_with("-A OUTPUT") && l.contains("NFTKIT-REDIRECT-OUTPUT"))
                .count();
            assert_eq!(jumps, 1, "one jump rule after two applies:\n{save}");
        }
    }
    // Other desired state: drift.
    let out = b.nftkit(&ns, &[], &["verify", "redirect"]);
    assert_eq!(out.code, Some(3), "verify with other ACCEPT_UIDS:\n{out}");

    b.flush_chain(
        &ns,
        "nftkit-redirect",
        "nat-output",
        ("nat", "NFTKIT-REDIRECT-OUTPUT"),
    );
    let before = b.dump(&ns);
    let out = b.nftkit(&ns, &env, &["verify", "redirect"]);
    assert_eq!(out.code, Some(3), "verify after flushing our chain:\n{out}");
    assert!(!out.stdout.trim().is_empty(), "no diff printed:\n{out}");
    assert_eq!(b.dump(&ns), before, "verify changed the kernel");

    b.ok(&ns, &env, &["redirect"]);
    let out = b.nftkit(&ns, &env, &["verify", "redirect"]);
    assert_eq!(out.code, Some(0), "verify after re-apply:\n{out}");

    let st = b.ok(&ns, NO_ENV, &["status"]);
    assert!(st.stdout.contains("nftkit-redirect"), "{st}");
    b.ok(&ns, NO_ENV, &["delete", "redirect"]);
    assert!(
        !b.has_owned(&ns, "redirect"),
        "delete left rules:\n{}",
        b.dump(&ns)
    );
    let out = b.nftkit(&ns, &env, &["verify", "redirect"]);
    assert_eq!(out.code, Some(3), "verify after delete:\n{out}");
    // Deleting what is gone is fine.
    b.ok(&ns, NO_ENV, &["delete", "redirect"]);
}

const FOREIGN_NFT: &str = r#"table inet foreign {
    chain out {
        type nat hook output priority -100; policy accept;
        ip daddr 192.0.2.1 tcp dport 9999 redirect to :9998
    }
}
"#;

/// Foreign rules of all three kinds (nft table, iptables-legacy and iptables-nft rules
/// and chains in the tables we use, both families) are byte-identical after apply,
/// re-apply and delete (apart from our own lines while applied).
fn redirect_foreign_rules_untouched(b: B) {
    let topo = Topology::new();
    let _srv = topo.servers();
    let ns = &topo.pod;
    ns.nft_load(FOREIGN_NFT);
    for flavour in [B::IptablesLegacy, B::IptablesNft] {
        for v6 in [false, true] {
            let t = flavour.tool(v6, "");
            let dst = if v6 { "2001:db8::99" } else { "192.0.2.99" };
            let t = t.as_str();
            ns.must(&[t, "-t", "nat", "-N", "FOREIGN-NAT"]);
            ns.must(&[
                t,
                "-t",
                "nat",
                "-A",
                "FOREIGN-NAT",
                "-d",
                dst,
                "-j",
                "RETURN",
            ]);
            ns.must(&[
                t,
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-d",
                dst,
                "-j",
                "FOREIGN-NAT",
            ]);
            ns.must(&[
                t, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9997", "-d", dst, "-j",
                "RETURN",
            ]);
            ns.must(&[t, "-t", "filter", "-A", "INPUT", "-d", dst, "-j", "ACCEPT"]);
            ns.must(&[t, "-t", "raw", "-N", "FOREIGN-RAW"]);
        }
    }
    let tools: Vec<String> = [B::IptablesLegacy, B::IptablesNft]
        .iter()
        .flat_map(|f| [f.tool(false, "-save"), f.tool(true, "-save")])
        .collect();
    let snap = || {
        let mut v: Vec<String> = tools.iter().map(|t| save_text(ns, t)).collect();
        v.push(ns.table("inet", "foreign").expect("inet foreign"));
        v
    };
    let foreign = |v: &[String]| v.iter().map(|s| foreign_lines(s)).collect::<Vec<_>>();
    let before = snap();

    b.ok(ns, NO_ENV, &["redirect"]);
    expect(b, &topo, 1001, 1001, REMOTE_V4, 80, Some("proxy:10080"));
    expect(b, &topo, 1001, 1001, REMOTE_V6, 443, Some("proxy6:10443"));
    assert_eq!(
        foreign(&snap()),
        foreign(&before),
        "apply changed foreign rules"
    );
    b.ok(ns, NO_ENV, &["redirect"]);
    assert_eq!(
        foreign(&snap()),
        foreign(&before),
        "re-apply changed foreign rules"
    );
    b.ok(ns, NO_ENV, &["delete", "redirect"]);
    assert_eq!(
        snap(),
        before,
        "delete left a trace or changed foreign rules"
    );
    expect(b, &topo, 1001, 1001, REMOTE_V4, 80, Some("remote:80"));
    b.ok(ns, NO_ENV, &["redirect"]);
    b.ok(ns, NO_ENV, &["delete", "--all"]);
    assert_eq!(
        snap(),
        before,
        "delete --all left a trace or changed foreign rules"
    );
}

// ---------------------------------------------------------------------------
// masquerade (ip-masq-agent-v2)
// ---------------------------------------------------------------------------

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// client (10.244.0.2, 2001:db8:1::2) -> router (nftkit) -> server holding an outside
/// address (203.0.113.10, 2001:db8:3::7) and a private one (10.200.0.10, fd00::9); the
/// server answers with its address as tag and records the peer.
struct MasqLab {
    client: Netns,
    router: Netns,
    _server: Netns,
    srv: TcpServer,
}

impl MasqLab {
    fn new() -> MasqLab {
        let client = Netns::new();
        let router = Netns::new();
        let server = Netns::new();
        veth(&client, "eth0", &router, "c0");
        veth(&router, "s0", &server, "eth0");
        addr_add(&client, "eth0", "10.244.0.2/24");
        addr_add(&client, "eth0", "2001:db8:1::2/64");
        addr_add(&router, "c0", "10.244.0.1/24");
        addr_add(&router, "c0", "2001:db8:1::1/64");
        addr_add(&router, "s0", "192.0.2.1/24");
        addr_add(&router, "s0", "2001:db8:2::1/64");
        addr_add(&server, "eth0", "192.0.2.10/24");
        addr_add(&server, "eth0", "2001:db8:2::10/64");
        for a in ["203.0.113.10/32", "10.200.0.10/32"] {
            addr_add(&server, "eth0", a);
        }
        for a in ["2001:db8:3::7/128", "fd00::9/128"] {
            addr_add(&server, "eth0", a);
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
        server.must(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
        server.must(&[
            "ip",
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:2::1",
        ]);
        route_add(&router, "203.0.113.10/32", "192.0.2.10");
        route_add(&router, "10.200.0.10/32", "192.0.2.10");
        route_add(&router, "2001:db8:3::7/128", "2001:db8:2::10");
        route_add(&router, "fd00::9/128", "2001:db8:2::10");
        router.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        router.must(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        let listeners: Vec<(std::net::SocketAddr, &str)> =
            ["203.0.113.10", "10.200.0.10", "2001:db8:3::7", "fd00::9"]
                .iter()
                .map(|a| (sa(a, 80), *a))
                .collect();
        let srv = TcpServer::start(&server, &listeners);
        MasqLab {
            client,
            router,
            _server: server,
            srv,
        }
    }

    /// The source address the server saw for a new connection to `dst`:80.
    fn seen_from(&self, dst: &str) -> Option<IpAddr> {
        let before = self.srv.hits().len();
        let out = tcp_connect(&self.client, 0, 0, ip(dst), 80);
        if answered_tag(&out).as_deref() != Some(dst) {
            return None;
        }
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

    fn expect(&self, b: B, dst: &str, masqueraded: bool) {
        let (client, router) = if dst.contains(':') {
            ("2001:db8:1::2", "2001:db8:2::1")
        } else {
            ("10.244.0.2", "192.0.2.1")
        };
        let want = ip(if masqueraded { router } else { client });
        let got = self.seen_from(dst);
        if got != Some(want) {
            panic!(
                "[{}] client -> {dst}: expected source {want} (masqueraded: {masqueraded}), server saw {got:?}\n{}",
                b.flag(),
                b.dump(&self.router)
            );
        }
    }
}

/// Defaults (RFC 1918 and link-local exempt) masquerade outside destinations only, IPv6
/// is left alone without --enable-ipv6; a config file with --enable-ipv6 covers both
/// families; verify 0 then 3 after flushing our chains; delete stops masquerading.
fn masquerade_core(b: B) {
    let lab = MasqLab::new();
    let cfg = TempDir::new("masq-cfg");
    let state = TempDir::new("masq-state");
    let st = state.s();
    let env = [("NFTKIT_STATE_DIR", st.as_str())];
    let dir = cfg.s();
    let masq = |extra: &[&'static str]| -> Vec<String> {
        let mut v = vec!["masquerade".to_string(), "--config-dir".into(), dir.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    lab.expect(b, "203.0.113.10", false);
    b.ok(&lab.router, &env, &strs(&masq(&["--once"])));
    lab.expect(b, "203.0.113.10", true);
    lab.expect(b, "10.200.0.10", false);
    lab.expect(b, "2001:db8:3::7", false);
    let verify = |extra: &[&'static str]| {
        let mut v = vec!["verify".to_string()];
        v.extend(masq(extra));
        b.nftkit(&lab.router, &env, &strs(&v))
    };
    let out = verify(&[]);
    assert_eq!(
        out.code,
        Some(0),
        "verify after apply:\n{out}\n{}",
        b.dump(&lab.router)
    );

    std::fs::write(
        cfg.0.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.0/8, fd00::/8]\n",
    )
    .unwrap();
    b.ok(
        &lab.router,
        &env,
        &strs(&masq(&["--once", "--enable-ipv6"])),
    );
    lab.expect(b, "203.0.113.10", true);
    lab.expect(b, "10.200.0.10", false);
    lab.expect(b, "2001:db8:3::7", true);
    lab.expect(b, "fd00::9", false);
    let out = verify(&["--enable-ipv6"]);
    assert_eq!(out.code, Some(0), "verify:\n{out}\n{}", b.dump(&lab.router));
    match b {
        B::Nftables => {
            let t = lab.router.table("inet", "nftkit-masquerade").unwrap();
            let chain = if t.contains("chain nat-postrouting") {
                "nat-postrouting"
            } else {
                "postrouting"
            };
            lab.router
                .nft(&["flush", "chain", "inet", "nftkit-masquerade", chain]);
        }
        _ => {
            lab.router.must(&[
                b.tool(true, "").as_str(),
                "-t",
                "nat",
                "-F",
                "NFTKIT-MASQUERADE-POST",
            ]);
        }
    }
    let out = verify(&["--enable-ipv6"]);
    assert_eq!(
        out.code,
        Some(3),
        "verify after flush:\n{out}\n{}",
        b.dump(&lab.router)
    );
    b.ok(&lab.router, NO_ENV, &["delete", "masquerade"]);
    assert!(
        !b.has_owned(&lab.router, "masquerade"),
        "{}",
        b.dump(&lab.router)
    );
    lab.expect(b, "203.0.113.10", false);
    lab.expect(b, "2001:db8:3::7", false);
}

// ---------------------------------------------------------------------------
// local-address (apiserver-proxy sidecar)
// ---------------------------------------------------------------------------

/// Conntrack is registered in a namespace only once some rule needs it.
const CONNTRACK_FIXTURE: &str = "table inet fixture {\n chain in {\n type filter hook input priority 10; policy accept;\n ct state established accept\n }\n}\n";

/// Conntrack entries of `ns` to `ip` port `port`.
fn conntrack(ns: &Netns, ip: &str, port: u16) -> Vec<String> {
    let out = ns.run(&["conntrack", "-L"]);
    out.stdout
        .lines()
        .filter(|l| l.contains(&format!("dst={ip} ")) && l.contains(&format!("dport={port} ")))
        .map(str::to_string)
        .collect()
}

/// The address on lo, a client reaching IP:443 untracked (NOTRACK in raw) while :80 is
/// tracked, for IPv4 and IPv6; verify 0 then 3 after flushing our raw chain; delete.
fn local_address_core(b: B) {
    let node = Netns::new();
    let client = Netns::new();
    veth(&node, "eth0", &client, "eth0");
    addr_add(&node, "eth0", "192.0.2.2/24");
    addr_add(&node, "eth0", "2001:db8:2::2/64");
    addr_add(&client, "eth0", "192.0.2.1/24");
    addr_add(&client, "eth0", "2001:db8:2::1/64");
    route_add(&client, "10.96.0.2/32", "192.0.2.2");
    route_add(&client, "2001:db8:96::2/128", "2001:db8:2::2");
    node.nft_load(CONNTRACK_FIXTURE);
    for (addr, six) in [("10.96.0.2", ""), ("2001:db8:96::2", "6")] {
        let args = [
            "local-address",
            "--ip-address",
            addr,
            "--setup-iptables",
            "--daemon=false",
        ];
        b.ok(&node, NO_ENV, &args);
        let _srv = TcpServer::start(
            &node,
            &[
                (sa(addr, 443), &format!("apiserver{six}:443")),
                (sa(addr, 80), &format!("other{six}:80")),
            ],
        );
        assert_eq!(
            tcp_tag(&client, 1001, 1001, ip(addr), 443),
            Some(format!("apiserver{six}:443")),
            "{}",
            b.dump(&node)
        );
        assert_eq!(
            tcp_tag(&client, 1001, 1001, ip(addr), 80),
            Some(format!("other{six}:80"))
        );
        assert!(
            conntrack(&node, addr, 443).is_empty(),
            "[{}] {addr}:443 must be untracked: {:?}\n{}",
            b.flag(),
            conntrack(&node, addr, 443),
            b.dump(&node)
        );
        assert!(
            !conntrack(&node, addr, 80).is_empty(),
            "other ports are tracked (else this proves nothing)"
        );
        let verify = [
            "verify",
            "local-address",
            "--ip-address",
            addr,
            "--setup-iptables",
        ];
        let out = b.nftkit(&node, NO_ENV, &verify);
        assert_eq!(out.code, Some(0), "{out}\n{}", b.dump(&node));
        match b {
            B::Nftables => {
                node.must(&[
                    "nft",
                    "flush",
                    "chain",
                    "inet",
                    "nftkit-local-address",
                    "raw-prerouting",
                ]);
            }
            _ => {
                node.must(&[
                    b.tool(!six.is_empty(), "").as_str(),
                    "-t",
                    "raw",
                    "-F",
                    "NFTKIT-LOCAL-ADDRESS-PRE",
                ]);
            }
        }
        let out = b.nftkit(&node, NO_ENV, &verify);
        assert_eq!(
            out.code,
            Some(3),
            "verify after flush:\n{out}\n{}",
            b.dump(&node)
        );
        b.ok(&node, NO_ENV, &["delete", "local-address"]);
        assert!(!b.has_owned(&node, "local-address"), "{}", b.dump(&node));
        node.must(&["ip", "addr", "flush", "dev", "lo", "scope", "global"]);
    }
}

// ---------------------------------------------------------------------------
// dnat (gke-metadata-server routing mode)
// ---------------------------------------------------------------------------

/// Host processes (nat output) and a routed pod (nat prerouting) reach the emulator
/// instead of 169.254.169.254:80; the emulator's uid does not; IPv6 too; verify, delete.
fn dnat_core(b: B) {
    let node = Netns::new();
    let remote = Netns::new();
    let pod = Netns::new();
    veth(&node, "eth0", &remote, "eth0");
    veth(&pod, "eth0", &node, "p0");
    addr_add(&node, "eth0", "192.0.2.2/24");
    addr_add(&node, "eth0", "2001:db8:2::2/64");
    addr_add(&remote, "eth0", "192.0.2.3/24");
    addr_add(&remote, "eth0", "2001:db8:2::3/64");
    for a in ["169.254.169.254/32", "198.51.100.5/32"] {
        addr_add(&remote, "eth0", a);
    }
    for a in ["fd00::254/128", "2001:db8:5::5/128"] {
        addr_add(&remote, "eth0", a);
    }
    addr_add(&node, "p0", "10.244.1.1/24");
    addr_add(&pod, "eth0", "10.244.1.2/24");
    pod.must(&["ip", "route", "add", "default", "via", "10.244.1.1"]);
    remote.must(&["ip", "route", "add", "10.244.1.0/24", "via", "192.0.2.2"]);
    for dst in ["169.254.169.254/32", "198.51.100.5/32"] {
        route_add(&node, dst, "192.0.2.3");
    }
    for dst in ["fd00::254/128", "2001:db8:5::5/128"] {
        route_add(&node, dst, "2001:db8:2::3");
    }
    node.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let _srv = TcpServer::start(
        &remote,
        &[
            (sa("169.254.169.254", 80), "real:80"),
            (sa("198.51.100.5", 8080), "emu:8080"),
            (sa("fd00::254", 80), "real6:80"),
            (sa("2001:db8:5::5", 8080), "emu6:8080"),
        ],
    );
    let args = [
        "dnat",
        "--map",
        "169.254.169.254:80=198.51.100.5:8080",
        "--map",
        "[fd00::254]:80=[2001:db8:5::5]:8080",
        "--accept-uids",
        "988",
    ];
    let check = |ns: &Netns, uid: u32, dst: &str, want: Option<&str>| {
        let got = tcp_tag(ns, uid, uid, ip(dst), 80);
        assert_eq!(
            got.as_deref(),
            want,
            "[{}] uid {uid} in {} -> {dst}:80\n{}",
            b.flag(),
            ns.name,
            b.dump(&node)
        );
    };
    check(&node, 1001, "169.254.169.254", Some("real:80"));
    let mut run = args.to_vec();
    run.push("--daemon=false");
    b.ok(&node, NO_ENV, &run);
    check(&node, 1001, "169.254.169.254", Some("emu:8080"));
    check(&node, 988, "169.254.169.254", Some("real:80"));
    check(&node, 1001, "fd00::254", Some("emu6:8080"));
    check(&node, 988, "fd00::254", Some("real6:80"));
    check(&pod, 1001, "169.254.169.254", Some("emu:8080"));
    let mut verify = vec!["verify"];
    verify.extend_from_slice(&args);
    let out = b.nftkit(&node, NO_ENV, &verify);
    assert_eq!(out.code, Some(0), "{out}\n{}", b.dump(&node));
    b.flush_chain(
        &node,
        "nftkit-dnat",
        "nat-output",
        ("nat", "NFTKIT-DNAT-OUTPUT"),
    );
    let out = b.nftkit(&node, NO_ENV, &verify);
    assert_eq!(out.code, Some(3), "verify after flush:\n{out}");
    b.ok(&node, NO_ENV, &["delete", "dnat"]);
    assert!(!b.has_owned(&node, "dnat"), "{}", b.dump(&node));
    check(&node, 1001, "169.254.169.254", Some("real:80"));
    check(&pod, 1001, "169.254.169.254", Some("real:80"));
}

/// The reconcile loop on each backend: a no-op resync applies nothing, a flushed chain is
/// repaired within an interval or two, SIGTERM with --cleanup removes everything of ours.
fn dnat_daemon_repairs_drift(b: B) {
    let node = Netns::new();
    let map = "169.254.169.254:80=198.51.100.5:8080";
    let mut d = NftkitDaemon::start(
        &node,
        &[
            "--backend",
            b.flag(),
            "dnat",
            "--map",
            map,
            "--sync-interval=1s",
            // No owner flag on nftables, so the test may flush the chain like on iptables.
            "--persist",
            "--cleanup",
        ],
    );
    d.wait_log("reconciling", Duration::from_secs(10));
    let verify = ["--backend", b.flag(), "verify", "dnat", "--map", map];
    let out = node.nftkit(NO_ENV, &verify);
    assert_eq!(out.code, Some(0), "{out}\n{}", d.log());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        d.count("applied"),
        1,
        "a no-op resync applied:\n{}",
        d.log()
    );
    b.flush_chain(
        &node,
        "nftkit-dnat",
        "nat-output",
        ("nat", "NFTKIT-DNAT-OUTPUT"),
    );
    assert!(
        poll_until(Duration::from_secs(4), || node.nftkit(NO_ENV, &verify).code
            == Some(0)),
        "[{}] flushed chain not repaired:\n{}\n{}",
        b.flag(),
        d.log(),
        b.dump(&node)
    );
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", d.log());
    assert!(
        !b.has_owned(&node, "dnat"),
        "--cleanup left rules:\n{}",
        b.dump(&node)
    );
}

// ---------------------------------------------------------------------------
// netpol (kube-policy-manager, --from-file)
// ---------------------------------------------------------------------------

/// Three pods routed by the node: db (10.244.1.2) accepts TCP 5432 from app=web
/// (10.244.2.2) only; other (10.244.3.2) is blocked, so is web to another port; db's
/// replies and its own connections out pass. verify 0 / 3 after a flush; delete.
fn netpol_core(b: B) {
    let node = Netns::new();
    node.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let mut pods = Vec::new();
    let mut servers = Vec::new();
    for (i, name) in ["db", "web", "other"].iter().enumerate() {
        let i = i + 1;
        let ns = Netns::new();
        let dev = format!("p{i}");
        veth(&node, &dev, &ns, "eth0");
        addr_add(&node, &dev, &format!("10.244.{i}.1/24"));
        addr_add(&ns, "eth0", &format!("10.244.{i}.2/24"));
        ns.must(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &format!("10.244.{i}.1"),
        ]);
        let tags: Vec<String> = [5432u16, 8080]
            .iter()
            .map(|p| format!("{name}:{p}"))
            .collect();
        servers.push(TcpServer::start(
            &ns,
            &[
                (sa("0.0.0.0", 5432), tags[0].as_str()),
                (sa("0.0.0.0", 8080), tags[1].as_str()),
            ],
        ));
        pods.push(ns);
    }
    let pod = |name: &str, app: &str, i: usize| {
        serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": format!("10.244.{i}.2"),
                       "podIPs": [{"ip": format!("10.244.{i}.2")}]}})
    };
    let manifest = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}},
        pod("db", "db", 1), pod("web", "web", 2), pod("other", "other", 3),
        {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
         "metadata": {"name": "db-from-web", "namespace": "shop"},
         "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                               "ports": [{"protocol": "TCP", "port": 5432}]}]}}
    ]});
    let dir = TempDir::new("netpol");
    let file = dir.0.join("cluster.json");
    std::fs::write(&file, manifest.to_string()).unwrap();
    let f = file.display().to_string();
    let env = [("NODE_NAME", "node-1")];
    let check = |from: usize, to: usize, port: u16, allowed: bool| {
        let names = ["db", "web", "other"];
        let got = tcp_tag(
            &pods[from],
            1001,
            1001,
            ip(&format!("10.244.{}.2", to + 1)),
            port,
        );
        let want = allowed.then(|| format!("{}:{port}", names[to]));
        assert_eq!(
            got,
            want,
            "[{}] {} -> {}:{port}\n{}",
            b.flag(),
            names[from],
            names[to],
            b.dump(&node)
        );
    };
    b.ok(&node, &env, &["netpol", "--from-file", &f]);
    check(1, 0, 5432, true);
    check(2, 0, 5432, false);
    check(1, 0, 8080, false);
    check(0, 1, 8080, true);
    check(2, 1, 5432, true);
    let verify = ["verify", "netpol", "--from-file", f.as_str()];
    let out = b.nftkit(&node, &env, &verify);
    assert_eq!(out.code, Some(0), "{out}\n{}", b.dump(&node));
    b.flush_chain(
        &node,
        "nftkit-netpol",
        "filter-forward",
        ("filter", "NFTKIT-NETPOL-FORWARD"),
    );
    let out = b.nftkit(&node, &env, &verify);
    assert_eq!(out.code, Some(3), "verify after flush:\n{out}");
    b.ok(&node, NO_ENV, &["delete", "netpol"]);
    assert!(!b.has_owned(&node, "netpol"), "{}", b.dump(&node));
    check(2, 0, 5432, true);
}
