//! Merging the parsed files as upstream does (CIDRs unioned, booleans OR-ed, defaults
//! only without files), overlapping CIDRs merged, conflicts between files listed; and
//! [`load`], the whole config step.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::config_dir::{RawFile, read_config_dir};
use super::file::{KEY_CIDRS, KEY_LINK_LOCAL, KEY_LINK_LOCAL_V6, parse_file};
use super::{FileConfig, LINK_LOCAL_V4, Loaded, MasqConfig, Settings, Source, ipv4net};
use crate::error::Result;

/// Upstream's defaults: RFC 1918 ...
const RFC1918: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(10, 0, 0, 0), 8),
    (Ipv4Addr::new(172, 16, 0, 0), 12),
    (Ipv4Addr::new(192, 168, 0, 0), 16),
];
/// ... plus these with `--nomasq-all-reserved-ranges` (11 in all).
const OTHER_RESERVED: &[(Ipv4Addr, u8)] = &[
    (Ipv4Addr::new(100, 64, 0, 0), 10),
    (Ipv4Addr::new(192, 0, 0, 0), 24),
    (Ipv4Addr::new(192, 0, 2, 0), 24),
    (Ipv4Addr::new(192, 88, 99, 0), 24),
    (Ipv4Addr::new(198, 18, 0, 0), 15),
    (Ipv4Addr::new(198, 51, 100, 0), 24),
    (Ipv4Addr::new(203, 0, 113, 0), 24),
    (Ipv4Addr::new(240, 0, 0, 0), 4),
];

/// Upstream's defaults, used only when no `ip-masq*` file exists.
pub fn defaults(all_reserved: bool) -> MasqConfig {
    let mut v4: Vec<Ipv4Net> = RFC1918.iter().map(|&(a, l)| ipv4net(a, l)).collect();
    if all_reserved {
        v4.extend(OTHER_RESERVED.iter().map(|&(a, l)| ipv4net(a, l)));
    }
    MasqConfig {
        v4: Ipv4Net::aggregate(&v4),
        ..Default::default()
    }
}

/// Merge parsed files as upstream does (CIDRs unioned, booleans OR-ed) and list the
/// conflicts between them. Overlapping CIDRs are merged (interval sets refuse overlaps).
pub fn merge(files: &[FileConfig]) -> (MasqConfig, Vec<String>) {
    let mut cfg = MasqConfig::default();
    let total = files.iter().map(|f| f.cidrs.len()).sum();
    let mut v4 = Vec::with_capacity(total);
    let mut v6 = Vec::new();
    for f in files {
        for net in &f.cidrs {
            match net {
                IpNet::V4(n) => v4.push(*n),
                IpNet::V6(n) => v6.push(*n),
            }
        }
        cfg.masq_link_local |= f.masq_link_local.unwrap_or(false);
        cfg.masq_link_local_ipv6 |= f.masq_link_local_ipv6.unwrap_or(false);
    }
    // Sorted, repeats show side by side (aggregation sorts too, and merges them).
    v4.sort_unstable();
    v6.sort_unstable();
    let repeated = v4.windows(2).any(|w| w[0] == w[1]) || v6.windows(2).any(|w| w[0] == w[1]);
    cfg.v4 = aggregate_v4(v4);
    cfg.v6 = aggregate_v6(v6);

    let name = |i: usize| files[i].path.display().to_string();
    let mut conflicts = Vec::new();
    for (key, get) in [
        (
            KEY_LINK_LOCAL,
            (|f: &FileConfig| f.masq_link_local) as fn(&FileConfig) -> Option<bool>,
        ),
        (KEY_LINK_LOCAL_V6, |f: &FileConfig| f.masq_link_local_ipv6),
    ] {
        let yes: Vec<String> = (0..files.len())
            .filter(|&i| get(&files[i]) == Some(true))
            .map(name)
            .collect();
        let no: Vec<String> = (0..files.len())
            .filter(|&i| get(&files[i]) == Some(false))
            .map(name)
            .collect();
        if !yes.is_empty() && !no.is_empty() {
            conflicts.push(format!(
                "{key} is true in {} but false in {}; using true (any true wins)",
                yes.join(", "),
                no.join(", ")
            ));
        }
    }
    if !repeated {
        return (cfg, conflicts);
    }
    // Repeated CIDRs: every listing as (CIDR, position over all files, file index), sorted
    // by CIDR then position (positions are unique), so each repeat is a run of listings in
    // file order; reported in the order of their first listing.
    let mut listed: Vec<(IpNet, u32, u32)> = Vec::with_capacity(total);
    for (i, f) in files.iter().enumerate() {
        for net in &f.cidrs {
            listed.push((*net, listed.len() as u32, i as u32));
        }
    }
    listed.sort_unstable();
    let mut repeats: Vec<&[(IpNet, u32, u32)]> = listed
        .chunk_by(|a, b| a.0 == b.0)
        .filter(|run| run.len() > 1)
        .collect();
    repeats.sort_unstable_by_key(|run| run[0].1);
    for run in repeats {
        let mut where_: Vec<String> = Vec::new();
        for in_file in run.chunk_by(|a, b| a.2 == b.2) {
            let s = match in_file.len() {
                1 => name(in_file[0].2 as usize),
                n => format!("{} ({n} times)", name(in_file[0].2 as usize)),
            };
            if !where_.contains(&s) {
                where_.push(s);
            }
        }
        conflicts.push(format!(
            "CIDR {} is listed {} times: in {}",
            run[0].0,
            run.len(),
            where_.join(", ")
        ));
    }
    (cfg, conflicts)
}

/// `Ipv4Net::aggregate(&sorted)`. When no two of the sorted CIDRs overlap or touch (the
/// usual list), that only truncates each (ipnet sorts the same blocks into the same order
/// and merges none), so do just that, in place.
fn aggregate_v4(sorted: Vec<Ipv4Net>) -> Vec<Ipv4Net> {
    aggregate_sorted(
        sorted,
        |n| {
            (
                u32::from(n.network()).into(),
                u32::from(n.broadcast()).into(),
            )
        },
        Ipv4Net::trunc,
        Ipv4Net::aggregate,
    )
}

/// [`aggregate_v4`] for IPv6.
fn aggregate_v6(sorted: Vec<Ipv6Net>) -> Vec<Ipv6Net> {
    aggregate_sorted(
        sorted,
        |n| (n.network().into(), n.broadcast().into()),
        Ipv6Net::trunc,
        Ipv6Net::aggregate,
    )
}

/// `aggregate(&sorted)`, or only `trunc` of each block when `span` (first and last
/// address) shows that no two neighbours overlap or touch.
fn aggregate_sorted<N>(
    mut sorted: Vec<N>,
    span: impl Fn(&N) -> (u128, u128),
    trunc: impl Fn(&N) -> N,
    aggregate: impl Fn(&Vec<N>) -> Vec<N>,
) -> Vec<N> {
    let apart = sorted
        .windows(2)
        .all(|w| span(&w[0]).1.saturating_add(1) < span(&w[1]).0);
    if !apart {
        return aggregate(&sorted);
    }
    for n in &mut sorted {
        *n = trunc(n);
    }
    sorted
}

/// Read, validate and merge the config dir (upstream's whole config step).
pub fn load(s: &Settings) -> Result<Loaded> {
    load_from(s, read_config_dir(&s.config_dir)?.as_deref())
}

/// Validate and merge what [`read_config_dir`] read (`None`: the directory is missing).
pub fn load_from(s: &Settings, entries: Option<&[RawFile]>) -> Result<Loaded> {
    let Some(entries) = entries else {
        return Ok(Loaded {
            config: defaults(s.all_reserved),
            source: Source::Defaults { dir_missing: true },
            conflicts: Vec::new(),
            notices: vec![format!(
                "config dir {} does not exist; using the default non-masquerade ranges",
                s.config_dir.display()
            )],
        });
    };
    if entries.is_empty() {
        return Ok(Loaded {
            config: defaults(s.all_reserved),
            source: Source::Defaults { dir_missing: false },
            conflicts: Vec::new(),
            notices: Vec::new(),
        });
    }
    let files = entries
        .iter()
        .map(|(p, b)| parse_file(p, b, s.enable_ipv6))
        .collect::<Result<Vec<_>>>()?;
    let (config, conflicts) = merge(&files);
    let mut notices = Vec::new();
    if config.v4.is_empty() && config.v6.is_empty() {
        notices.push(format!(
            "config files exist in {} but list no {KEY_CIDRS}: the default ranges are not used, so every destination except {} is masqueraded",
            s.config_dir.display(),
            if config.masq_link_local {
                "none".to_string()
            } else {
                LINK_LOCAL_V4.to_string()
            }
        ));
    }
    Ok(Loaded {
        config,
        source: Source::Files(entries.iter().map(|(p, _)| p.clone()).collect()),
        conflicts,
        notices,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::masquerade::testutil::*;
    use std::net::Ipv6Addr;
    use std::path::PathBuf;

    fn fc(name: &str, cidrs: &[&str], ll: Option<bool>, ll6: Option<bool>) -> FileConfig {
        FileConfig {
            path: PathBuf::from(format!("/d/{name}")),
            cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
            masq_link_local: ll,
            masq_link_local_ipv6: ll6,
        }
    }

    #[test]
    fn merge_unions_ors_and_reports_conflicts() {
        // Two files: union + OR, no conflict.
        let (c, k) = merge(&[
            fc("ip-masq-a", &["10.0.0.0/8"], None, None),
            fc("ip-masq-b", &["172.16.0.0/12"], Some(true), None),
        ]);
        assert_eq!(nets4(&c), ["10.0.0.0/8", "172.16.0.0/12"]);
        assert!(c.masq_link_local && !c.masq_link_local_ipv6);
        assert!(k.is_empty(), "{k:?}");

        // Duplicate across three files: kept once, reported naming all three.
        let (c, k) = merge(&[
            fc("ip-masq-a", &["10.0.0.0/8"], None, None),
            fc("ip-masq-b", &["10.0.0.0/8"], None, None),
            fc("ip-masq-c", &["10.0.0.0/8", "10.0.0.0/8"], None, None),
        ]);
        assert_eq!(nets4(&c), ["10.0.0.0/8"]);
        assert_eq!(
            k,
            [
                "CIDR 10.0.0.0/8 is listed 4 times: in /d/ip-masq-a, /d/ip-masq-b, /d/ip-masq-c (2 times)"
            ]
        );

        // Disagreeing booleans: OR wins, both files named.
        let (c, k) = merge(&[
            fc("ip-masq-a", &[], Some(false), Some(true)),
            fc("ip-masq-b", &[], Some(true), None),
        ]);
        assert!(c.masq_link_local && c.masq_link_local_ipv6);
        assert_eq!(
            k,
            [
                "masqLinkLocal is true in /d/ip-masq-b but false in /d/ip-masq-a; using true (any true wins)"
            ]
        );

        // Overlaps merged before they reach the kernel; not a conflict.
        let (c, k) = merge(&[fc(
            "ip-masq-a",
            &[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "10.0.0.0/9",
                "192.168.0.0/24",
                "192.168.1.0/24",
            ],
            None,
            None,
        )]);
        assert_eq!(nets4(&c), ["10.0.0.0/8", "192.168.0.0/23"]);
        assert!(k.is_empty());

        // Missing fields merge as false / empty.
        let (c, _) = merge(&[fc("ip-masq-a", &[], None, None)]);
        assert_eq!(c, MasqConfig::default());
    }

    #[test]
    fn defaults_only_without_files() {
        let d = Dir::new();
        // No files at all (and a non-prefixed one): defaults.
        d.write("other-config", "nonMasqueradeCIDRs: [1.2.3.0/24]");
        let l = load(&st(&d.0, false, false)).unwrap();
        assert_eq!(l.source, Source::Defaults { dir_missing: false });
        assert_eq!(
            nets4(&l.config),
            ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
        );
        let l = load(&st(&d.0, false, true)).unwrap();
        assert_eq!(
            nets4(&l.config),
            [
                "10.0.0.0/8",
                "100.64.0.0/10",
                "172.16.0.0/12",
                "192.0.0.0/24",
                "192.0.2.0/24",
                "192.88.99.0/24",
                "192.168.0.0/16",
                "198.18.0.0/15",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "240.0.0.0/4"
            ]
        );
        // A present but empty file drops the defaults, with a notice.
        d.write("ip-masq-agent", "");
        let l = load(&st(&d.0, false, true)).unwrap();
        assert!(l.config.v4.is_empty());
        assert!(
            l.notices[0].contains("default ranges are not used"),
            "{:?}",
            l.notices
        );
        // Only masqLinkLocal: no CIDRs either.
        d.write("ip-masq-agent", "masqLinkLocal: true");
        let l = load(&st(&d.0, false, false)).unwrap();
        assert!(l.config.v4.is_empty() && l.config.masq_link_local);
        // Missing directory: defaults with a warning notice (upstream crashed).
        let l = load(&st(&d.0.join("nope"), false, false)).unwrap();
        assert_eq!(l.source, Source::Defaults { dir_missing: true });
        assert_eq!(l.config.v4.len(), 3);
        assert!(l.notices[0].contains("does not exist"));
    }

    #[test]
    fn load_merges_files_in_name_order_and_names_the_bad_one() {
        let d = Dir::new();
        d.write(
            "ip-masq-agent",
            "nonMasqueradeCIDRs: [10.0.0.0/8]\nmasqLinkLocal: false\n",
        )
        .write(
            "ip-masq-agent-reconciled",
            r#"{"nonMasqueradeCIDRs": ["203.0.113.0/24", "10.0.0.0/8"], "masqLinkLocal": true}"#,
        )
        .write("README", "not: [config");
        let l = load(&st(&d.0, false, false)).unwrap();
        assert_eq!(nets4(&l.config), ["10.0.0.0/8", "203.0.113.0/24"]);
        assert!(l.config.masq_link_local);
        assert_eq!(l.conflicts.len(), 2, "{:?}", l.conflicts);
        let (a, b) = (
            format!("{}/ip-masq-agent", d.0.display()),
            format!("{}/ip-masq-agent-reconciled", d.0.display()),
        );
        assert_eq!(
            l.conflicts,
            [
                format!(
                    "masqLinkLocal is true in {b} but false in {a}; using true (any true wins)"
                ),
                format!("CIDR 10.0.0.0/8 is listed 2 times: in {a}, {b}"),
            ]
        );
        let Source::Files(files) = &l.source else {
            panic!()
        };
        assert_eq!(files.len(), 2);

        d.write("ip-masq-zz", "nonMasqueradeCIDRs: [10.0.0.1/8]");
        let e = load(&st(&d.0, false, false)).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("ip-masq-zz") && msg.contains("10.0.0.1/8"),
            "{msg}"
        );
    }

    #[test]
    fn no_cidr_limit() {
        let mut text = String::from("nonMasqueradeCIDRs:\n");
        for i in 0..5000u32 {
            text.push_str(&format!("  - {}/32\n", Ipv4Addr::from(0x0a00_0000 + i * 2)));
        }
        let f = parse_str(&text, false).unwrap();
        let (c, k) = merge(&[f]);
        assert_eq!(c.v4.len(), 5000);
        assert!(k.is_empty());
    }

    /// `merge` before it sorted instead of hashing: the reference its output must match.
    fn merge_reference(files: &[FileConfig]) -> (MasqConfig, Vec<String>) {
        use std::collections::HashMap;
        let mut cfg = MasqConfig::default();
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        let mut seen: HashMap<IpNet, Vec<usize>> = HashMap::new();
        let mut order: Vec<IpNet> = Vec::new();
        for (i, f) in files.iter().enumerate() {
            for net in &f.cidrs {
                let e = seen.entry(*net).or_default();
                if e.is_empty() {
                    order.push(*net);
                    match net {
                        IpNet::V4(n) => v4.push(*n),
                        IpNet::V6(n) => v6.push(*n),
                    }
                }
                e.push(i);
            }
            cfg.masq_link_local |= f.masq_link_local.unwrap_or(false);
            cfg.masq_link_local_ipv6 |= f.masq_link_local_ipv6.unwrap_or(false);
        }
        cfg.v4 = Ipv4Net::aggregate(&v4);
        cfg.v6 = Ipv6Net::aggregate(&v6);
        let name = |i: usize| files[i].path.display().to_string();
        // The boolean conflicts are unchanged code: take them from `merge`.
        let mut conflicts: Vec<String> = merge(files)
            .1
            .into_iter()
            .filter(|c| !c.starts_with("CIDR "))
            .collect();
        for net in order {
            let listed = &seen[&net];
            if listed.len() < 2 {
                continue;
            }
            let mut where_: Vec<String> = Vec::new();
            for &i in listed {
                let n = listed.iter().filter(|&&j| j == i).count();
                let s = if n > 1 {
                    format!("{} ({n} times)", name(i))
                } else {
                    name(i)
                };
                if !where_.contains(&s) {
                    where_.push(s);
                }
            }
            conflicts.push(format!(
                "CIDR {net} is listed {} times: in {}",
                listed.len(),
                where_.join(", ")
            ));
        }
        (cfg, conflicts)
    }

    #[test]
    fn aggregate_matches_ipnet() {
        let mut next = xorshift(0x1234_5678_9abc_def1);
        let (mut apart, mut rounds) = (0, 0);
        for _ in 0..3000 {
            // Few, spread-out blocks (often apart) or many dense ones (often merging);
            // host bits sometimes set (ipnet truncates).
            let few = next(2) == 0;
            let n = 1 + next(if few { 4 } else { 40 });
            let spread = [8, 16, 24][next(3) as usize];
            let v4: Vec<Ipv4Net> = (0..n)
                .map(|_| {
                    let addr = (next(256) as u32) << spread | next(1 << 8) as u32;
                    let len = [0, 1, 8, 16, 24, 30, 31, 32][next(8) as usize];
                    Ipv4Net::new(Ipv4Addr::from(addr), len).unwrap()
                })
                .collect();
            let v6: Vec<Ipv6Net> = v4
                .iter()
                .map(|n| {
                    let a = u128::from(u32::from(n.addr())) << next(97);
                    Ipv6Net::new(Ipv6Addr::from(a), n.prefix_len() * 4).unwrap()
                })
                .collect();
            let (mut s4, mut s6) = (v4.clone(), v6.clone());
            s4.sort_unstable();
            s6.sort_unstable();
            let want = Ipv4Net::aggregate(&v4);
            if want.len() == v4.len() {
                apart += 1;
            }
            rounds += 1;
            assert_eq!(aggregate_v4(s4), want, "{v4:?}");
            assert_eq!(aggregate_v6(s6), Ipv6Net::aggregate(&v6), "{v6:?}");
        }
        assert!(
            apart > rounds / 10 && apart < rounds * 9 / 10,
            "{apart} of {rounds}"
        );
        assert_eq!(aggregate_v4(Vec::new()), []);
        let all = ipv4net(Ipv4Addr::UNSPECIFIED, 0);
        assert_eq!(aggregate_v4(vec![all]), [all]);
        let top = ipv4net(Ipv4Addr::new(255, 255, 255, 255), 32);
        let below = ipv4net(Ipv4Addr::new(255, 255, 255, 252), 31);
        assert_eq!(
            aggregate_v4(vec![below, top]),
            Ipv4Net::aggregate(&vec![below, top])
        );
    }

    #[test]
    fn merge_matches_the_hashing_merge() {
        // A small pseudo-random generator (xorshift): many repeats within and across
        // files, IPv4 and IPv6, overlaps, files sharing a name.
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..500 {
            let nfiles = 1 + next(4) as usize;
            let pool = 1 + next(if round % 2 == 0 { 6 } else { 60 });
            let files: Vec<FileConfig> = (0..nfiles)
                .map(|i| {
                    let cidrs = (0..next(12))
                        .map(|_| {
                            let k = next(pool) as u32;
                            if k % 5 == 4 {
                                IpNet::V6(
                                    Ipv6Net::new(
                                        Ipv6Addr::new(0xfd00, k as u16, 0, 0, 0, 0, 0, 0),
                                        32,
                                    )
                                    .unwrap(),
                                )
                            } else {
                                let len = [8u8, 16, 24, 30][(k % 4) as usize];
                                IpNet::V4(
                                    Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (k << 8)), len)
                                        .unwrap()
                                        .trunc(),
                                )
                            }
                        })
                        .collect();
                    let b = |v: u64| [None, Some(false), Some(true)][v as usize];
                    FileConfig {
                        path: PathBuf::from(format!("/d/ip-masq-{}", i % 3)),
                        cidrs,
                        masq_link_local: b(next(3)),
                        masq_link_local_ipv6: b(next(3)),
                    }
                })
                .collect();
            assert_eq!(merge(&files), merge_reference(&files), "{files:?}");
        }
        // The benchmark's shape: thousands of distinct CIDRs, a few repeats.
        let mut text = String::from("nonMasqueradeCIDRs:\n");
        for i in 0..3000u32 {
            text.push_str(&format!(
                "  - {}/30\n",
                Ipv4Addr::from(0xac10_0000 + (i % 2900) * 8)
            ));
        }
        let f = parse_str(&text, false).unwrap();
        let files = [f, fc("ip-masq-b", &["172.16.0.8/30"], None, None)];
        let (c, k) = merge(&files);
        assert_eq!((c.v4.len(), k.len()), (2900, 100));
        assert_eq!(
            k[1],
            "CIDR 172.16.0.8/30 is listed 3 times: in /etc/config/ip-masq-agent (2 times), /d/ip-masq-b"
        );
        assert_eq!((c, k), merge_reference(&files));
    }
}
