//! The nf_tables netlink backend against the real kernel, each test in a network
//! namespace of its own (the test thread joins it with setns): big batches, atomic
//! failure, read-back, ownership. Needs root, as CI runs.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use nftkit::backend::netlink::NetlinkBackend;
use nftkit::backend::{Backend, Inspect, Options};
use nftkit::jobs::redirect::{self, PortMapping, RedirectConfig, Targets};
use nftkit::model::{IpFamily, Match};
use nftkit::snapshot;

use crate::common::{Netns, cpu_heavy};

/// A backend opened with `--force`.
const FORCE: Options = Options {
    force: true,
    lifetime: nftkit::backend::Lifetime::Persist,
};

/// `nft ARGS` inside `ns`, which must succeed; its stdout.
fn nft(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    ns.must(&argv).stdout
}

fn base_config() -> RedirectConfig {
    RedirectConfig {
        accept_uids: vec![],
        accept_gids: vec![],
        mappings: vec![PortMapping {
            to: 10080,
            dest: Some(80),
        }],
        to_ipv4: None,
        to_ipv6: None,
        to_domain: None,
        blocks_v4: vec!["127.0.0.0/8".parse().unwrap()],
        blocks_v6: vec!["::1/128".parse().unwrap()],
    }
}

/// `n` disjoint, non-adjacent IPv4 /25s and IPv6 /64s.
fn many_blocks(n: usize) -> (Vec<Ipv4Net>, Vec<Ipv6Net>) {
    let v4 = (0..n)
        .map(|i| Ipv4Net::new(Ipv4Addr::from(0x0b00_0000u32 + (i as u32) * 256), 25).unwrap())
        .collect();
    let v6 = (0..n)
        .map(|i| {
            let hi = 0x2001_0db8_0000_0000u64 + (i as u64) * 2;
            Ipv6Net::new(Ipv6Addr::from(((hi as u128) << 64).to_be_bytes()), 64).unwrap()
        })
        .collect();
    (v4, v6)
}

#[test]
fn fifty_thousand_elements_per_family_apply_in_one_batch_and_read_back() {
    let _turn = cpu_heavy();
    let ns = Netns::new();
    let mut cfg = base_config();
    let (v4, v6) = many_blocks(50_000);
    cfg.blocks_v4 = v4;
    cfg.blocks_v6 = v6;
    let rs = redirect::build(&cfg, Targets::default(), "nftkit-redirect");
    let (diff, count) = ns.enter(|| {
        let mut b = NetlinkBackend::connect().expect("connect");
        b.apply(&rs).expect("apply 100k elements");
        let observed = b.read_back(&rs.table).unwrap();
        let count = observed.as_ref().map(|s| s.element_count()).unwrap_or(0);
        (snapshot::diff(&b.expected(&rs), observed.as_ref()), count)
    });
    assert!(diff.is_empty(), "{diff:?}");
    assert!(count >= 100_000, "read back {count} elements");
    let listed = nft(
        &ns,
        &["list", "set", "inet", "nftkit-redirect", "accept-v6"],
    );
    assert!(
        listed.contains("2001:db8::/64") && listed.contains("2001:db8:1:869e::/64"),
        "tail of the set missing"
    );
}

#[test]
fn a_refused_message_late_in_a_big_batch_leaves_the_old_table_byte_identical() {
    let _turn = cpu_heavy();
    let ns = Netns::new();
    let good = redirect::build(&base_config(), Targets::default(), "nftkit-redirect");
    let mut cfg = base_config();
    cfg.blocks_v4 = many_blocks(50_000).0;
    let mut bad = redirect::build(&cfg, Targets::default(), "nftkit-redirect");
    // The last rule of the batch names a set that does not exist: the kernel refuses it
    // after accepting every element message before it.
    bad.chains[0].rules.push(nftkit::model::Rule {
        matches: vec![Match::DaddrInSet {
            family: IpFamily::V4,
            set: "no-such-set".into(),
        }],
        action: nftkit::model::Action::Return,
    });
    ns.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        b.apply(&good).unwrap();
    });
    let listed_before = nft(&ns, &["list", "ruleset"]);
    let err = ns.enter(|| NetlinkBackend::connect().unwrap().apply(&bad).unwrap_err());
    assert_eq!(err.exit_code(), 1);
    let msg = err.to_string();
    assert!(
        msg.contains("add rule #5 to chain nat-output: ip daddr @no-such-set return")
            && msg.contains("No such file"),
        "error should name the refused rule: {msg}"
    );
    assert!(
        msg.contains("nftkit-redirect"),
        "error should name the table: {msg}"
    );
    assert_eq!(
        nft(&ns, &["list", "ruleset"]),
        listed_before,
        "kernel state changed by a refused batch"
    );
}

#[test]
fn a_table_with_our_name_but_no_ownership_comment_is_not_touched() {
    let _turn = cpu_heavy();
    let ns = Netns::new();
    ns.nft_load("table inet nftkit-redirect {\n chain c {\n type filter hook input priority 0; policy accept;\n }\n}\n");
    let before = nft(&ns, &["list", "ruleset"]);
    let rs = redirect::build(&base_config(), Targets::default(), "nftkit-redirect");
    let (apply_err, delete_err, owned) = ns.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        (
            b.apply(&rs).unwrap_err(),
            b.delete("nftkit-redirect").unwrap_err(),
            b.list_owned().unwrap(),
        )
    });
    assert!(
        apply_err.to_string().contains("not managed by nftkit"),
        "{apply_err}"
    );
    assert!(
        delete_err.to_string().contains("not managed by nftkit"),
        "{delete_err}"
    );
    assert!(owned.is_empty());
    assert_eq!(nft(&ns, &["list", "ruleset"]), before);
}

#[test]
fn reapply_replaces_and_delete_removes_only_our_table() {
    let _turn = cpu_heavy();
    let ns = Netns::new();
    ns.nft_load("table ip foreign {\n chain c {\n type filter hook output priority 0; policy accept;\n ip daddr 192.0.2.1 counter drop\n }\n}\n");
    let foreign = nft(&ns, &["list", "table", "ip", "foreign"]);
    let a = redirect::build(&base_config(), Targets::default(), "nftkit-redirect");
    let mut cfg = base_config();
    cfg.mappings = vec![PortMapping {
        to: 15001,
        dest: None,
    }];
    let b_rs = redirect::build(&cfg, Targets::default(), "nftkit-redirect");
    ns.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        b.apply(&a).unwrap();
        b.apply(&b_rs).unwrap();
        let observed = b.read_back("nftkit-redirect").unwrap();
        assert!(snapshot::diff(&b.expected(&b_rs), observed.as_ref()).is_empty());
        assert_eq!(b.list_owned().unwrap().len(), 1);
        assert!(b.delete("nftkit-redirect").unwrap());
        assert!(
            !b.delete("nftkit-redirect").unwrap(),
            "second delete finds nothing"
        );
        assert!(b.read_back("nftkit-redirect").unwrap().is_none());
    });
    assert_eq!(nft(&ns, &["list", "table", "ip", "foreign"]), foreign);
}

/// A ruleset using every match and action the model has, for the equivalence test.
fn every_variant() -> nftkit::model::Ruleset {
    use nftkit::model::*;
    let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
    let rule = |matches: Vec<Match>, action: Action| Rule { matches, action };
    let base = |kind, hook, priority| {
        Some(BaseChain {
            kind,
            hook,
            priority,
        })
    };
    Ruleset {
        table: "nftkit-every".into(),
        comment: "managed by nftkit test".into(),
        sets: vec![
            Set {
                name: "no-masq-v4".into(),
                key: KeyType::Ipv4Addr,
                interval: true,
                elements: vec![
                    Element::V4("10.0.0.0/8".parse().unwrap()),
                    Element::V4("192.0.2.7/32".parse().unwrap()),
                ],
            },
            Set {
                name: "src-v6".into(),
                key: KeyType::Ipv6Addr,
                interval: true,
                elements: vec![Element::V6("fd00::/8".parse().unwrap())],
            },
            Set {
                name: "ports".into(),
                key: KeyType::InetService,
                interval: false,
                elements: vec![Element::Port(53), Element::Port(443)],
            },
            Set {
                name: "uids".into(),
                key: KeyType::Uid,
                interval: false,
                elements: vec![Element::Id(0), Element::Id(1337)],
            },
        ],
        maps: vec![
            VerdictMap {
                name: "pods4".into(),
                key: KeyType::Ipv4Addr,
                entries: vec![
                    (
                        Element::V4("10.244.1.5/32".parse().unwrap()),
                        "pod-a".into(),
                    ),
                    (
                        Element::V4("10.244.1.6/32".parse().unwrap()),
                        "pod-a".into(),
                    ),
                ],
            },
            VerdictMap {
                name: "pods6".into(),
                key: KeyType::Ipv6Addr,
                entries: vec![(Element::V6("fd00::5/128".parse().unwrap()), "pod-a".into())],
            },
        ],
        chains: vec![
            Chain {
                name: "nat-postrouting".into(),
                base: base(ChainType::Nat, Hook::Postrouting, priority::SRCNAT),
                rules: vec![rule(
                    vec![Match::FibDaddrLocal { negate: true }],
                    Action::Jump("IP-MASQ".into()),
                )],
            },
            Chain {
                name: "IP-MASQ".into(),
                base: None,
                rules: vec![
                    rule(
                        vec![Match::DaddrInSet {
                            family: IpFamily::V4,
                            set: "no-masq-v4".into(),
                        }],
                        Action::Return,
                    ),
                    rule(vec![Match::Daddr(net("169.254.0.0/16"))], Action::Return),
                    rule(vec![Match::Daddr(net("fe80::/10"))], Action::Return),
                    rule(
                        vec![Match::NfProto(IpFamily::V6)],
                        Action::Masquerade { fully_random: true },
                    ),
                    rule(
                        vec![],
                        Action::Masquerade {
                            fully_random: false,
                        },
                    ),
                ],
            },
            Chain {
                name: "raw-prerouting".into(),
                base: base(ChainType::Filter, Hook::Prerouting, priority::RAW),
                rules: vec![rule(
                    vec![
                        Match::Daddr(net("10.96.0.2/32")),
                        Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 443,
                        },
                    ],
                    Action::Notrack,
                )],
            },
            Chain {
                name: "raw-output".into(),
                base: base(ChainType::Filter, Hook::Output, priority::RAW),
                rules: vec![rule(
                    vec![
                        Match::Saddr(net("2001:db8::2/128")),
                        Match::Sport {
                            proto: L4Proto::Tcp,
                            port: 443,
                        },
                    ],
                    Action::Notrack,
                )],
            },
            Chain {
                name: "filter-forward".into(),
                base: base(ChainType::Filter, Hook::Forward, priority::FILTER),
                rules: vec![
                    rule(
                        vec![Match::CtState(vec![CtState::Established, CtState::Related])],
                        Action::Accept,
                    ),
                    rule(vec![Match::CtState(vec![CtState::Invalid])], Action::Drop),
                    rule(
                        vec![],
                        Action::GotoMap {
                            family: IpFamily::V4,
                            field: AddrField::Daddr,
                            map: "pods4".into(),
                        },
                    ),
                    rule(
                        vec![Match::L4Proto {
                            proto: L4Proto::Tcp,
                            negate: false,
                        }],
                        Action::GotoMap {
                            family: IpFamily::V6,
                            field: AddrField::Saddr,
                            map: "pods6".into(),
                        },
                    ),
                    rule(
                        vec![
                            Match::SaddrInSet {
                                family: IpFamily::V6,
                                set: "src-v6".into(),
                            },
                            Match::DportInSet {
                                proto: L4Proto::Udp,
                                set: "ports".into(),
                            },
                        ],
                        Action::Goto("pod-a".into()),
                    ),
                    rule(
                        vec![Match::OwnerInSet {
                            owner: Owner::Uid,
                            set: "uids".into(),
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![
                            Match::OwnerRange {
                                owner: Owner::Gid,
                                first: 5,
                                last: 9,
                            },
                            Match::L4Proto {
                                proto: L4Proto::Udp,
                                negate: false,
                            },
                        ],
                        Action::Accept,
                    ),
                ],
            },
            Chain {
                name: "pod-a".into(),
                base: None,
                rules: vec![
                    rule(vec![Match::CtState(vec![CtState::New])], Action::Accept),
                    // netpol: endPort ranges and SCTP.
                    rule(
                        vec![Match::DportRange {
                            proto: L4Proto::Tcp,
                            first: 32000,
                            last: 32768,
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Sctp,
                            port: 9,
                        }],
                        Action::Accept,
                    ),
                    rule(
                        vec![Match::L4Proto {
                            proto: L4Proto::Sctp,
                            negate: false,
                        }],
                        Action::Accept,
                    ),
                    rule(vec![], Action::Drop),
                ],
            },
            Chain {
                name: "nat-prerouting".into(),
                base: base(ChainType::Nat, Hook::Prerouting, priority::DSTNAT),
                rules: vec![
                    rule(
                        vec![
                            Match::Daddr(net("169.254.169.254/32")),
                            Match::Dport {
                                proto: L4Proto::Tcp,
                                port: 80,
                            },
                        ],
                        Action::Dnat {
                            addr: "127.0.0.1".parse().unwrap(),
                            port: 988,
                        },
                    ),
                    rule(
                        vec![
                            Match::Daddr(net("fd00::254/128")),
                            Match::Dport {
                                proto: L4Proto::Udp,
                                port: 53,
                            },
                        ],
                        Action::Dnat {
                            addr: "2001:db8::53".parse().unwrap(),
                            port: 5353,
                        },
                    ),
                    rule(
                        vec![],
                        Action::DnatMap {
                            family: IpFamily::V4,
                            proto: L4Proto::Tcp,
                            entries: vec![
                                (
                                    "169.254.169.254:80".parse().unwrap(),
                                    "198.51.100.5:8080".parse().unwrap(),
                                ),
                                (
                                    "192.0.2.53:53".parse().unwrap(),
                                    "198.51.100.6:5353".parse().unwrap(),
                                ),
                                (
                                    "169.254.169.254:8".parse().unwrap(),
                                    "198.51.100.5:8080".parse().unwrap(),
                                ),
                            ],
                        },
                    ),
                    rule(
                        vec![],
                        Action::DnatMap {
                            family: IpFamily::V6,
                            proto: L4Proto::Udp,
                            entries: vec![
                                (
                                    "[2001:db8::254]:53".parse().unwrap(),
                                    "[2001:db8::5]:5353".parse().unwrap(),
                                ),
                                (
                                    "[2001:db8::9]:80".parse().unwrap(),
                                    "[2001:db8::6]:8080".parse().unwrap(),
                                ),
                            ],
                        },
                    ),
                ],
            },
        ],
    }
}

#[test]
fn every_match_and_action_lists_exactly_like_nft_f_of_the_dry_run_text() {
    let _turn = cpu_heavy();
    let rs = every_variant();
    let by_nft = Netns::new();
    by_nft.nft_load(&nftkit::render::nft_script(&rs));
    let by_nftkit = Netns::new();
    let diff = by_nftkit.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        b.apply(&rs).expect("apply");
        snapshot::diff(&b.expected(&rs), b.read_back(&rs.table).unwrap().as_ref())
    });
    assert!(diff.is_empty(), "read-back differs: {diff:?}");
    assert_eq!(
        nft(&by_nftkit, &["list", "ruleset"]),
        nft(&by_nft, &["list", "ruleset"])
    );
    // And the table nft loaded from our text verifies clean against the model too.
    let diff = by_nft.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        snapshot::diff(&b.expected(&rs), b.read_back(&rs.table).unwrap().as_ref())
    });
    assert!(diff.is_empty(), "nft-loaded table differs: {diff:?}");
}

#[test]
fn force_takes_over_and_deletes_a_table_not_marked_ours() {
    let _turn = cpu_heavy();
    let ns = Netns::new();
    ns.nft_load("table inet nftkit-redirect {\n chain c {\n type filter hook input priority 0; policy accept;\n }\n}\n");
    let rs = redirect::build(&base_config(), Targets::default(), "nftkit-redirect");
    ns.enter(|| {
        let mut b = NetlinkBackend::open(FORCE).unwrap();
        b.apply(&rs).expect("--force replaces the foreign table");
        assert!(
            snapshot::diff(&b.expected(&rs), b.read_back(&rs.table).unwrap().as_ref()).is_empty()
        );
    });
    ns.nft_load("delete table inet nftkit-redirect\ntable inet nftkit-redirect {\n}\n");
    ns.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        assert!(
            b.delete("nftkit-redirect").is_err(),
            "refused without --force"
        );
        let mut b = NetlinkBackend::open(FORCE).unwrap();
        assert!(b.delete("nftkit-redirect").unwrap());
    });
    assert!(!nft(&ns, &["list", "tables"]).contains("nftkit-redirect"));
}

/// `compare` (structure as text, elements as wire bytes, formatted only on a difference)
/// says exactly what the full read-back diff says, for an equal table and for each kind
/// of hand edit, and tells ours from a table without the comment.
#[test]
fn compare_agrees_with_the_full_read_back_diff() {
    let ns = Netns::new();
    let mut cfg = base_config();
    let (v4, v6) = many_blocks(2_000);
    cfg.blocks_v4 = v4;
    cfg.blocks_v6 = v6;
    let rs = redirect::build(&cfg, Targets::default(), "nftkit-redirect");
    let full = |b: &mut NetlinkBackend| {
        let observed = b.read_back(&rs.table).unwrap();
        snapshot::diff(&b.expected(&rs), observed.as_ref())
    };
    let edits: [&[&str]; 5] = [
        &[
            "add",
            "element",
            "inet",
            "nftkit-redirect",
            "accept-v4",
            "{ 198.51.100.0/24 }",
        ],
        &[
            "delete",
            "element",
            "inet",
            "nftkit-redirect",
            "accept-v6",
            "{ 2001:db8::/64 }",
        ],
        &["flush", "set", "inet", "nftkit-redirect", "accept-v4"],
        &["flush", "chain", "inet", "nftkit-redirect", "nat-output"],
        &["delete", "table", "inet", "nftkit-redirect"],
    ];
    let missing = ns.enter(|| {
        let mut b = NetlinkBackend::connect().unwrap();
        let c = b.compare(&rs).unwrap();
        assert_eq!((c.found, c.diff.clone()), (None, full(&mut b)));
        c.diff
    });
    assert_eq!(
        missing,
        vec!["- table inet nftkit-redirect is missing".to_string()]
    );
    for edit in edits {
        ns.enter(|| NetlinkBackend::connect().unwrap().apply(&rs).unwrap());
        let equal = ns.enter(|| NetlinkBackend::connect().unwrap().compare(&rs).unwrap());
        assert!(equal.in_place(), "{:?}", equal.diff);
        nft(&ns, edit);
        let (c, want) = ns.enter(|| {
            let mut b = NetlinkBackend::connect().unwrap();
            (b.compare(&rs).unwrap(), full(&mut b))
        });
        assert!(!c.diff.is_empty(), "{edit:?} not seen");
        assert_eq!(c.diff, want, "after {edit:?}");
    }
    // Our name without our comment: found, not ours.
    ns.nft_load("table inet nftkit-redirect {\n}\n");
    let c = ns.enter(|| NetlinkBackend::connect().unwrap().compare(&rs).unwrap());
    assert!(c.foreign() && !c.in_place(), "{c:?}");
}
