//! Verdict maps end to end, in namespaces of the test's own: a router's forward base chain
//! `ip daddr vmap @m` sends 10.9.0.1 to a dropping chain and 10.9.0.2 to an accepting
//! one (10.9.0.3 is not in the map: the next rule drops it), checked with real TCP
//! connections and UDP datagrams from a client behind the router, applied by the
//! nftables backend, by `nft -f` of the dry-run text, and by iptables-legacy (one `-d
//! ADDR -g CHAIN` rule per entry); `compare` is empty after each apply and names an
//! entry changed by hand with `nft`.
//!
//! ```text
//! client 192.0.2.2 ── 192.0.2.1 router 198.18.0.1 ── 198.18.0.2 server
//!                                                     + 10.9.0.1, .2, .3
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use nftkit::backend::iptables::IptablesBackend;
use nftkit::backend::netlink::NetlinkBackend;
use nftkit::backend::{Backend, Inspect, Options};
use nftkit::model::{
    Action, AddrField, BaseChain, Chain, ChainType, Element, Hook, IpFamily, KeyType, Match, Rule,
    Ruleset, VerdictMap,
};

use crate::common::{
    Netns, TcpServer, UdpServer, addr_add, ip, require_root, route_add, sa, tcp_tag, udp_send, veth,
};

const TABLE: &str = "nftkit-vmap";

struct Lab {
    client: Netns,
    router: Netns,
    _server: Netns,
    _tcp: TcpServer,
    udp: UdpServer,
}

impl Lab {
    fn new() -> Lab {
        let (client, router, server) = (Netns::new(), Netns::new(), Netns::new());
        veth(&client, "eth0", &router, "c0");
        veth(&router, "s0", &server, "eth0");
        addr_add(&client, "eth0", "192.0.2.2/24");
        addr_add(&router, "c0", "192.0.2.1/24");
        addr_add(&router, "s0", "198.18.0.1/24");
        addr_add(&server, "eth0", "198.18.0.2/24");
        for a in ["10.9.0.1/32", "10.9.0.2/32", "10.9.0.3/32"] {
            addr_add(&server, "eth0", a);
        }
        route_add(&client, "10.9.0.0/24", "192.0.2.1");
        route_add(&router, "10.9.0.0/24", "198.18.0.2");
        route_add(&server, "192.0.2.0/24", "198.18.0.1");
        router.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let tcp: Vec<(SocketAddr, &str)> = vec![
            (sa("10.9.0.1", 80), "one"),
            (sa("10.9.0.2", 80), "two"),
            (sa("10.9.0.3", 80), "three"),
        ];
        let udp: Vec<(SocketAddr, &str)> =
            vec![(sa("10.9.0.1", 5353), "one"), (sa("10.9.0.2", 5353), "two")];
        let (tcp, udp) = (
            TcpServer::start(&server, &tcp),
            UdpServer::start(&server, &udp),
        );
        Lab {
            client,
            router,
            _server: server,
            _tcp: tcp,
            udp,
        }
    }

    fn tcp(&self, dst: &str) -> Option<String> {
        tcp_tag(&self.client, 0, 0, ip(dst), 80)
    }

    /// Whether a datagram to `dst` arrives (within a second).
    fn udp(&self, dst: &str, data: &str) -> bool {
        udp_send(&self.client, 0, 0, ip(dst), 5353, data);
        self.udp.wait_for(data, Duration::from_secs(1)).is_some()
    }

    /// Where TCP and UDP to the three addresses go: one dropped (map), two accepted
    /// (map), three dropped (not in the map: the next rule).
    fn expect_dispatch(&self, round: &str) {
        let ruleset = || self.router.nft(&["list", "ruleset"]).stdout;
        assert_eq!(self.tcp("10.9.0.1"), None, "{round}\n{}", ruleset());
        assert_eq!(
            self.tcp("10.9.0.2").as_deref(),
            Some("two"),
            "{round}\n{}",
            ruleset()
        );
        assert_eq!(self.tcp("10.9.0.3"), None, "{round}\n{}", ruleset());
        assert!(!self.udp("10.9.0.1", &format!("{round}-1")), "{round}");
        assert!(self.udp("10.9.0.2", &format!("{round}-2")), "{round}");
    }
}

fn rule(matches: Vec<Match>, action: Action) -> Rule {
    Rule { matches, action }
}

fn v4(a: &str) -> Element {
    Element::V4(a.parse().unwrap())
}

/// The forward chain dispatching by destination, and an IPv6 map by source (no IPv6
/// traffic: it is there to be encoded and read back).
fn ruleset() -> Ruleset {
    let regular = |name: &str, action| Chain {
        name: name.into(),
        base: None,
        rules: vec![rule(vec![], action)],
    };
    Ruleset {
        table: TABLE.into(),
        comment: "managed by nftkit vmap-test".into(),
        sets: vec![],
        maps: vec![
            VerdictMap {
                name: "m".into(),
                key: KeyType::Ipv4Addr,
                entries: vec![
                    (v4("10.9.0.1/32"), "deny".into()),
                    (v4("10.9.0.2/32"), "allow".into()),
                ],
            },
            VerdictMap {
                name: "m6".into(),
                key: KeyType::Ipv6Addr,
                entries: vec![(Element::V6("fd00::1/128".parse().unwrap()), "allow".into())],
            },
        ],
        chains: vec![
            Chain {
                name: "dispatch".into(),
                base: Some(BaseChain {
                    kind: ChainType::Filter,
                    hook: Hook::Forward,
                    priority: 0,
                }),
                rules: vec![
                    rule(
                        vec![],
                        Action::GotoMap {
                            family: IpFamily::V4,
                            field: AddrField::Daddr,
                            map: "m".into(),
                        },
                    ),
                    rule(
                        vec![],
                        Action::GotoMap {
                            family: IpFamily::V6,
                            field: AddrField::Saddr,
                            map: "m6".into(),
                        },
                    ),
                    rule(
                        vec![Match::Daddr("10.9.0.3/32".parse().unwrap())],
                        Action::Drop,
                    ),
                ],
            },
            regular("deny", Action::Drop),
            regular("allow", Action::Accept),
        ],
    }
}

/// `compare` of the nftables backend in the router.
fn nft_diff(lab: &Lab, rs: &Ruleset) -> Vec<String> {
    lab.router.enter(|| {
        NetlinkBackend::connect()
            .unwrap()
            .compare(rs)
            .expect("compare")
            .diff
    })
}

#[test]
fn the_nftables_backend_dispatches_by_map_and_compare_sees_changed_entries() {
    require_root();
    let lab = Lab::new();
    let rs = ruleset();
    let (check, owned) = lab.router.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        b.apply(&rs).expect("apply");
        (b.check_applied(&rs).unwrap(), b.list_owned().unwrap())
    });
    assert!(check.is_empty(), "{check:?}");
    assert_eq!(nft_diff(&lab, &rs), Vec::<String>::new());
    // Map entries count as elements (2 + 1), maps among the sets.
    let table = owned.iter().find(|t| t.table == TABLE).unwrap();
    assert_eq!((table.sets, table.elements), (2, 3));
    let listed = lab.router.nft(&["list", "table", "inet", TABLE]).stdout;
    assert!(
        listed.contains("ip daddr vmap @m") && listed.contains("10.9.0.1 : goto deny"),
        "{listed}"
    );
    lab.expect_dispatch("nftables");

    // Drift by hand: 10.9.0.1 now goes to allow, and a new entry.
    let set = |cmd: &str, what: &str| {
        lab.router
            .must(&["nft", cmd, "element", "inet", TABLE, "m", what]);
    };
    set("delete", "{ 10.9.0.1 }");
    set("add", "{ 10.9.0.1 : goto allow, 10.9.0.3 : goto allow }");
    assert_eq!(lab.tcp("10.9.0.1").as_deref(), Some("one"));
    let diff = nft_diff(&lab, &rs);
    let text = diff.join("\n");
    assert!(
        text.contains("- map m lacks 10.9.0.1 : goto deny")
            && text.contains("10.9.0.1 : goto allow")
            && text.contains("10.9.0.3 : goto allow"),
        "{text}"
    );
    let check = lab.router.enter(|| {
        NetlinkBackend::connect()
            .unwrap()
            .check_applied(&rs)
            .unwrap()
    });
    assert!(!check.is_empty(), "check_applied should see the entries");
    // The vmap rule replaced by hand: the rule differs.
    let handle = lab
        .router
        .nft(&["-a", "list", "chain", "inet", TABLE, "dispatch"])
        .stdout
        .lines()
        .find(|l| l.contains("ip daddr vmap @m"))
        .and_then(|l| l.rsplit("# handle ").next())
        .map(|h| h.trim().to_string())
        .unwrap();
    lab.router.must(&[
        "nft", "replace", "rule", "inet", TABLE, "dispatch", "handle", &handle, "ip", "saddr",
        "vmap", "@m",
    ]);
    let diff = nft_diff(&lab, &rs).join("\n");
    assert!(diff.contains("ip saddr vmap @m"), "{diff}");

    // Applying again restores everything.
    lab.router
        .enter(|| NetlinkBackend::connect().unwrap().apply(&rs).unwrap());
    assert_eq!(nft_diff(&lab, &rs), Vec::<String>::new());
    lab.expect_dispatch("reapplied");
}

#[test]
fn the_dry_run_text_with_a_map_loads_with_nft_and_reads_back_as_applied() {
    require_root();
    let lab = Lab::new();
    let rs = ruleset();
    let script = nftkit::render::nft_script(&rs);
    lab.router.nft_load(&script);
    // Loadable again (the script replaces the table).
    lab.router.nft_load(&script);
    assert_eq!(nft_diff(&lab, &rs), Vec::<String>::new());
    lab.expect_dispatch("nft -f");
}

#[test]
fn iptables_legacy_lowers_the_map_to_one_goto_per_entry() {
    require_root();
    let lab = Lab::new();
    let rs = ruleset();
    let opts = Options::default();
    let diff = lab.router.enter(|| {
        let mut b = IptablesBackend::new(nft_compat::Flavour::Legacy, opts).unwrap();
        b.apply(&rs).expect("apply iptables-legacy");
        b.compare(&rs).unwrap().diff
    });
    assert!(diff.is_empty(), "{diff:?}");
    let saved = lab
        .router
        .must(&["iptables-legacy-save", "-t", "filter"])
        .stdout;
    let c = "-m comment --comment \"managed by nftkit vmap-test\"";
    for line in [
        format!("-A NFTKIT-VMAP-FORWARD -d 10.9.0.1/32 {c} -g NFTKIT-VMAP-DENY"),
        format!("-A NFTKIT-VMAP-FORWARD -d 10.9.0.2/32 {c} -g NFTKIT-VMAP-ALLOW"),
        format!("-A NFTKIT-VMAP-FORWARD -d 10.9.0.3/32 {c} -j DROP"),
    ] {
        assert!(saved.contains(&line), "{line} missing:\n{saved}");
    }
    let v4_order: Vec<&str> = saved
        .lines()
        .filter(|l| l.starts_with("-A NFTKIT-VMAP-FORWARD"))
        .collect();
    assert_eq!(v4_order.len(), 3, "{saved}");
    assert!(v4_order[0].contains("10.9.0.1/32") && v4_order[2].contains("DROP"));
    let saved6 = lab
        .router
        .must(&["ip6tables-legacy-save", "-t", "filter"])
        .stdout;
    assert!(
        saved6.contains(&format!(
            "-A NFTKIT-VMAP-FORWARD -s fd00::1/128 {c} -g NFTKIT-VMAP-ALLOW"
        )),
        "{saved6}"
    );
    lab.expect_dispatch("iptables-legacy");
}
