//! Hostile input for `nftkit redirect`: random and near-valid values for every variable
//! and flag. Never a panic; either a valid config (exit 0 with the fake backend) or
//! exit 2 with a one-line message naming what was wrong. `PROPTEST_CASES` sets the count
//! (scripts/test.sh runs 10 000).

use std::collections::HashMap;
use std::path::Path;

use clap::Parser;
use ipnet::{Ipv4Net, Ipv6Net};
use nftkit::backend::Backend;
use nftkit::backend::fake::FakeBackend;
use nftkit::cli::Cli;
use nftkit::jobs::redirect::{self, RedirectArgs, RedirectConfig};
use nftkit::parse::IdRange;
use nftkit::snapshot::Snapshot;
use proptest::prelude::*;

const VARS: &[&str] = &[
    "ACCEPT_UIDS",
    "ACCEPT_GIDS",
    "PORT_MAPPING",
    "TO_IPV4_ADDR",
    "TO_IPV6_ADDR",
    "IPV4_ACCEPT_BLOCKS",
    "IPV6_ACCEPT_BLOCKS",
    "ACCEPT_BLOCKS",
];

/// Pieces that look like real values, so the generator reaches deep into the parsers.
fn near_valid() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        Just("10080".to_string()),
        Just("80".to_string()),
        Just("0".to_string()),
        Just("65535".to_string()),
        Just("65536".to_string()),
        Just("4294967295".to_string()),
        Just("-1".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("10.0.0.1/8".to_string()),
        Just("fc00::/7".to_string()),
        Just("::1".to_string()),
        Just("[2001:db8::1]".to_string()),
        Just("203.0.113.10".to_string()),
        Just("1000-2000".to_string()),
        Just("2000-1000".to_string()),
        Just("root".to_string()),
        Just("".to_string()),
        Just(" ".to_string()),
        "[0-9]{1,12}",
        "[0-9a-f:./\\[\\]-]{0,24}",
        any::<String>(),
    ];
    let sep = prop_oneof![
        Just(","),
        Just(":"),
        Just(", "),
        Just(",,"),
        Just("-"),
        Just("/")
    ];
    prop::collection::vec((atom, sep), 0..6).prop_map(|parts| {
        let mut s = String::new();
        for (a, sep) in parts {
            s.push_str(&a);
            s.push_str(sep);
        }
        s
    })
}

fn env_map() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(
        prop::sample::select(VARS).prop_map(str::to_string),
        near_valid(),
        0..VARS.len(),
    )
}

/// The applied table against a model built here from the config (not by `redirect::build`):
/// every set holds exactly the configured blocks and single ids, every id range has its
/// rule, and the NAT rules are the port mappings in order, DNAT where a family has a target.
fn check_applied(cfg: &RedirectConfig, applied: &Snapshot) -> Result<(), TestCaseError> {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let net4 = |n: &Ipv4Net| match n.prefix_len() {
        32 => n.addr().to_string(),
        _ => n.to_string(),
    };
    let net6 = |n: &Ipv6Net| match n.prefix_len() {
        128 => n.addr().to_string(),
        _ => n.to_string(),
    };
    let singles = |ids: &[IdRange]| -> Vec<String> {
        ids.iter()
            .filter(|r| r.first == r.last)
            .map(|r| r.first.to_string())
            .collect()
    };
    for (set, want) in [
        (
            "accept-v4",
            cfg.blocks_v4.iter().map(net4).collect::<Vec<_>>(),
        ),
        ("accept-v6", cfg.blocks_v6.iter().map(net6).collect()),
        ("accept-uids", singles(&cfg.accept_uids)),
        ("accept-gids", singles(&cfg.accept_gids)),
    ] {
        let got = applied.sets.get(set).map(|s| s.elements.clone());
        let want = (!want.is_empty()).then(|| sorted(want));
        prop_assert_eq!(got, want, "set {}", set);
    }
    prop_assert_eq!(applied.chains.len(), 1);
    let rules = &applied.chains[0].rules;
    for (key, ids) in [("skuid", &cfg.accept_uids), ("skgid", &cfg.accept_gids)] {
        for r in ids.iter().filter(|r| r.first != r.last) {
            let m = format!("meta {key} {}-{} return", r.first, r.last);
            prop_assert!(
                rules.iter().any(|rule| rule.ends_with(&m)),
                "no rule {}: {:?}",
                m,
                rules
            );
        }
    }
    let mut want_nat = Vec::new();
    for m in &cfg.mappings {
        let dport = match m.dest {
            Some(p) => format!("tcp dport {p}"),
            None => "meta l4proto tcp".to_string(),
        };
        let redirect = format!("redirect to :{}", m.to);
        if cfg.to_ipv4.is_none() && cfg.to_ipv6.is_none() {
            want_nat.push(format!("{dport} {redirect}"));
            continue;
        }
        let v4 = cfg
            .to_ipv4
            .map_or(redirect.clone(), |a| format!("dnat ip to {a}:{}", m.to));
        let v6 = cfg
            .to_ipv6
            .map_or(redirect, |a| format!("dnat ip6 to [{a}]:{}", m.to));
        want_nat.push(format!("meta nfproto ipv4 {dport} {v4}"));
        want_nat.push(format!("meta nfproto ipv6 {dport} {v6}"));
    }
    let got_nat: Vec<&String> = rules
        .iter()
        .filter(|r| r.contains(" redirect to :") || r.contains(" dnat ip"))
        .collect();
    prop_assert_eq!(got_nat, want_nat.iter().collect::<Vec<_>>());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]

    #[test]
    fn parse_never_panics_and_errors_are_exit_2_one_line(env in env_map()) {
        match redirect::parse(&RedirectArgs::default(), &|k| env.get(k).cloned(), Path::new("/nonexistent")) {
            Ok(cfg) => {
                // A valid config always builds, renders and applies to the fake, and the
                // table read back holds what the config asked for.
                let rs = redirect::build(&cfg, redirect::Targets { v4: cfg.to_ipv4, v6: cfg.to_ipv6 }, "t");
                let _ = nftkit::render::nft_script(&rs);
                let mut fake = FakeBackend::new();
                if let Err(e) = fake.apply(&rs) {
                    return Err(TestCaseError::fail(format!("apply refused: {e}")));
                }
                let applied = fake.read_back("t").unwrap().expect("applied table");
                check_applied(&cfg, &applied)?;
            }
            Err(e) => {
                prop_assert_eq!(e.exit_code(), 2);
                let msg = e.to_string();
                prop_assert!(!msg.contains('\n'), "multi-line message: {}", msg);
                prop_assert!(VARS.iter().any(|v| msg.contains(v)), "message names no variable: {}", msg);
            }
        }
    }

    #[test]
    fn flags_never_panic(values in prop::collection::vec(near_valid(), 8)) {
        let flags = ["--accept-uids", "--accept-gids", "--port-mapping", "--to-ipv4-addr",
                     "--to-ipv6-addr", "--ipv4-accept-blocks", "--ipv6-accept-blocks", "--accept-blocks"];
        let mut argv = vec!["nftkit".to_string(), "redirect".to_string()];
        for (f, v) in flags.iter().zip(&values) {
            argv.push(format!("{f}={v}"));
        }
        // Values starting with '-' may not parse as clap values; that is clap's exit 2.
        if let Ok(cli) = Cli::try_parse_from(&argv) {
            let nftkit::cli::Command::Redirect(args) = &cli.command else { unreachable!() };
            if let Err(e) = redirect::parse(args, &|_| None, Path::new("/nonexistent")) {
                prop_assert_eq!(e.exit_code(), 2);
                prop_assert!(e.to_string().contains("--"), "flag not named: {}", e);
            }
        }
    }

    #[test]
    fn arbitrary_argv_never_panics(argv in prop::collection::vec(any::<String>(), 0..6)) {
        let _ = Cli::try_parse_from(std::iter::once("nftkit".to_string()).chain(argv));
    }
}

#[test]
fn a_huge_list_fails_fast_or_loads() {
    // 100 000 items in one flag value (a variable is capped at 128 KiB by the kernel).
    let blocks: Vec<String> = (0..100_000u32)
        .map(|i| format!("11.{}.{}.0/24", i / 256 % 256, i % 256))
        .collect();
    let args = RedirectArgs {
        ipv4_accept_blocks: Some(blocks.join(",")),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let cfg = redirect::parse(&args, &|_| None, Path::new("/")).expect("valid, if large");
    assert!(
        cfg.blocks_v4.len() <= 65_536,
        "adjacent /24s are merged before the kernel sees them"
    );
    assert!(
        started.elapsed().as_secs() < 5,
        "parsing 100 000 CIDRs took {:?}",
        started.elapsed()
    );
    let mut bad = blocks;
    bad[99_999] = "11.0.0.1/8".into();
    let args = RedirectArgs {
        ipv4_accept_blocks: Some(bad.join(",")),
        ..Default::default()
    };
    let e = redirect::parse(&args, &|_| None, Path::new("/")).unwrap_err();
    assert!(e.to_string().contains("11.0.0.1/8"), "{e}");
}
