//! Issue 11, part 4: hostile input for every parser other than redirect's (that one is
//! tests/it/proptest_redirect.rs): masquerade config files (YAML/JSON), local-address and
//! dnat flags (`--ip-address`, `--port`, `--interface`, `--sync-interval` Go durations,
//! `--map`, `--hooks`, owners), and netpol manifests (mutations of the golden manifests).
//!
//! Property for each: no panic; either a valid config, which then builds, renders and
//! applies to the fake backend, or an error with exit code 2 and a one-line message
//! naming the option or file. `PROPTEST_CASES` sets the case count (default 1000;
//! scripts/test.sh runs 10 000).

use std::path::Path;

use clap::Parser;
use nftkit::backend::Backend;
use nftkit::backend::fake::FakeBackend;
use nftkit::cli::{Cli, Command};
use nftkit::error::Error;
use nftkit::jobs::{Ctx, Job, dnat, local_address, masquerade};
use nftkit::model::Ruleset;
use proptest::prelude::*;

/// A job's `--dry-run` text, as `nftkit --dry-run COMMAND` prints it.
fn dry_run(job: &dyn Job, table: &str) -> nftkit::error::Result<String> {
    let cx = Ctx {
        table,
        env: &|_| None,
    };
    job.dry_run(cx, &|rs| Ok(nftkit::render::nft_script(rs)))
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// An input error: exit 2, one line, naming `names` (any of them).
fn check_input_error(e: &Error, names: &[&str]) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(e.exit_code(), 2, "not an input error: {}", e);
    let msg = e.to_string();
    prop_assert!(!msg.contains('\n'), "multi-line message: {:?}", msg);
    prop_assert!(
        names.iter().any(|n| msg.contains(n)),
        "message names none of {:?}: {}",
        names,
        msg
    );
    Ok(())
}

/// A valid config's table renders and applies to the fake backend.
fn check_applies(rs: &Ruleset) -> std::result::Result<(), TestCaseError> {
    let text = nftkit::render::nft_script(rs);
    prop_assert!(text.contains(&rs.table));
    let mut fake = FakeBackend::new();
    prop_assert!(fake.apply(rs).is_ok(), "fake refused {}", text);
    Ok(())
}

/// Values that look almost right, so generation reaches deep into the parsers.
fn near_valid() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("10.96.0.2".to_string()),
        Just("2001:db8::2".to_string()),
        Just("[2001:db8::2]".to_string()),
        Just("[2001:db8::2]:443".to_string()),
        Just("169.254.169.254:80".to_string()),
        Just("10.0.0.5:8080".to_string()),
        Just("0.0.0.0".to_string()),
        Just("255.255.255.255".to_string()),
        Just("224.0.0.1".to_string()),
        Just("::".to_string()),
        Just("10.0.0.0/8".to_string()),
        Just("10.0.0.1/8".to_string()),
        Just("443".to_string()),
        Just("0".to_string()),
        Just("65536".to_string()),
        Just("-1".to_string()),
        Just("1m30s".to_string()),
        Just("1.5h".to_string()),
        Just("1e3s".to_string()),
        Just("0s".to_string()),
        Just("999999999999h".to_string()),
        Just("µs".to_string()),
        Just(".s".to_string()),
        Just("lo".to_string()),
        Just("eth0:1".to_string()),
        Just("abcdefghijklmnopq".to_string()),
        Just("output".to_string()),
        Just("prerouting".to_string()),
        Just("root".to_string()),
        Just("1000-2000".to_string()),
        Just("".to_string()),
        "[0-9]{1,20}",
        "[0-9.]{0,8}(ns|us|ms|s|m|h|d)?",
        "[0-9a-f:./\\[\\]=-]{0,30}",
        any::<String>(),
    ]
}

/// Near-valid pieces joined by separators the parsers split on.
fn joined() -> impl Strategy<Value = String> {
    let sep = prop_oneof![
        Just(""),
        Just(","),
        Just("="),
        Just(":"),
        Just(", "),
        Just("-")
    ];
    prop::collection::vec((near_valid(), sep), 1..4).prop_map(|parts| {
        parts
            .into_iter()
            .map(|(a, s)| format!("{a}{s}"))
            .collect::<String>()
    })
}

const LOCAL_FLAGS: &[&str] = &[
    "--ip-address",
    "--interface",
    "--port",
    "--sync-interval",
    "--setup-iptables",
    "--daemon",
    "--persist",
];

const DNAT_FLAGS: &[&str] = &[
    "--map",
    "--map",
    "--protocol",
    "--hooks",
    "--accept-uids",
    "--accept-gids",
    "--sync-interval",
    "--daemon",
];

/// `nftkit <cmd> --flag=value ...` for a random subset of `flags`.
fn argv(cmd: &'static str, flags: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec((prop::sample::select(flags), joined(), any::<bool>()), 0..7).prop_map(
        move |items| {
            let mut v = vec!["nftkit".to_string(), cmd.to_string()];
            for (f, val, separate) in items {
                if separate && !val.starts_with('-') {
                    v.push(f.to_string());
                    v.push(val);
                } else {
                    v.push(format!("{f}={val}"));
                }
            }
            v
        },
    )
}

// ---------------------------------------------------------------------------
// masquerade config files
// ---------------------------------------------------------------------------

fn yaml_scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("10.0.0.0/8".to_string()),
        Just("10.0.0.1/8".to_string()),
        Just("fd00::/8".to_string()),
        Just("169.254.0.0/16".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        Just("\"\"".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("!!binary aGVsbG8=".to_string()),
        Just("&a 1".to_string()),
        Just("*a".to_string()),
        Just("0x10".to_string()),
        Just("1e999".to_string()),
        "[0-9./:a-f]{0,20}",
        any::<String>().prop_map(|s| format!("{s:?}")),
    ]
}

/// YAML- or JSON-ish documents built from the real keys and near-valid values.
fn masq_doc() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("nonMasqueradeCIDRs"),
        Just("NonMasqueradeCidrs"),
        Just("masqLinkLocal"),
        Just("masqLinkLocalIPv6"),
        Just("resyncInterval"),
        Just(""),
    ];
    let yaml_entry = (
        key.clone(),
        prop::collection::vec(yaml_scalar(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(k, vals, as_list)| {
            if as_list {
                let items: String = vals.iter().map(|v| format!("\n  - {v}")).collect();
                format!("{k}:{items}")
            } else {
                format!("{k}: {}", vals.first().cloned().unwrap_or_default())
            }
        });
    let json_entry = (key, prop::collection::vec(yaml_scalar(), 0..4))
        .prop_map(|(k, vals)| format!("\"{k}\": [{}]", vals.join(", ")));
    prop_oneof![
        prop::collection::vec(yaml_entry, 0..4).prop_map(|e| e.join("\n")),
        prop::collection::vec(json_entry, 0..4).prop_map(|e| format!("{{{}}}", e.join(", "))),
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

// ---------------------------------------------------------------------------
// netpol manifests: line mutations of the golden files
// ---------------------------------------------------------------------------

const MANIFESTS: &[&str] = &[
    include_str!("../golden/netpol/docs-example.yaml"),
    include_str!("../golden/netpol/ports-and-union.yaml"),
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value after the first ':' of line N.
    Value(usize, String),
    Delete(usize),
    Duplicate(usize),
    /// Change the indentation of line N by a few spaces.
    Indent(usize, i8),
    /// Insert a line with random text.
    Insert(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let value = prop_oneof![
        yaml_scalar(),
        near_valid(),
        Just("-1".to_string()),
        Just("70000".to_string()),
        Just("UDP".to_string()),
        Just("SCTP".to_string()),
        Just("Ingress".to_string()),
        Just("[Egress, Bogus]".to_string()),
        Just("{matchExpressions: [{key: a, operator: NotIn, values: []}]}".to_string()),
    ];
    prop_oneof![
        (any::<usize>(), value).prop_map(|(n, v)| Mutation::Value(n, v)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Duplicate),
        (any::<usize>(), -4i8..4).prop_map(|(n, d)| Mutation::Indent(n, d)),
        (any::<usize>(), any::<String>()).prop_map(|(n, s)| Mutation::Insert(n, s)),
    ]
}

fn mutate(text: &str, muts: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in muts {
        if lines.is_empty() {
            break;
        }
        let at = |n: usize| n % lines.len();
        match m {
            Mutation::Value(n, v) => {
                let i = at(*n);
                if let Some(p) = lines[i].find(':') {
                    lines[i] = format!("{}: {v}", &lines[i][..p]);
                }
            }
            Mutation::Delete(n) => {
                let i = at(*n);
                lines.remove(i);
            }
            Mutation::Duplicate(n) => {
                let i = at(*n);
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            Mutation::Indent(n, d) => {
                let i = at(*n);
                if *d > 0 {
                    lines[i] = format!("{}{}", " ".repeat(*d as usize), lines[i]);
                } else {
                    let strip = (-*d) as usize;
                    let l = &lines[i];
                    let spaces = l.len() - l.trim_start_matches(' ').len();
                    lines[i] = l[spaces.min(strip)..].to_string();
                }
            }
            Mutation::Insert(n, s) => {
                let i = at(*n);
                lines.insert(i, s.clone());
            }
        }
    }
    lines.join("\n")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn masquerade_config_files_never_panic(doc in masq_doc(), ipv6 in any::<bool>()) {
        let path = Path::new("/etc/config/ip-masq-agent");
        match masquerade::parse_file(path, doc.as_bytes(), ipv6) {
            Ok(fc) => {
                let (cfg, _conflicts) = masquerade::merge(&[fc]);
                let args = masquerade::MasqueradeArgs { enable_ipv6: ipv6, ..Default::default() };
                let settings = masquerade::settings(&args).expect("default settings are valid");
                check_applies(&masquerade::build(&cfg, &settings, "nftkit-masquerade"))?;
            }
            Err(e) => check_input_error(&e, &["/etc/config/ip-masq-agent"])?,
        }
    }

    #[test]
    fn go_durations_never_panic(raw in prop_oneof![near_valid(), joined(), any::<String>()]) {
        match nftkit::parse::go_duration("--sync-interval", &raw) {
            Ok(d) => prop_assert!(d.as_secs() < 1_000_000_000, "{:?} from {:?}", d, raw),
            Err(e) => check_input_error(&e, &["--sync-interval"])?,
        }
    }

    #[test]
    fn local_address_flags_never_panic(argv in argv("local-address", LOCAL_FLAGS)) {
        // clap's own refusals (unknown value forms) are exit 2 in main.rs.
        let Ok(cli) = Cli::try_parse_from(&argv) else { return Ok(()) };
        let Command::LocalAddress(args) = &cli.command else { unreachable!() };
        match local_address::parse(args) {
            Ok(cfg) => {
                check_applies(&local_address::build(&cfg, "nftkit-local-address"))?;
                prop_assert!(dry_run(args, "nftkit-local-address").is_ok());
            }
            Err(e) => check_input_error(&e, LOCAL_FLAGS)?,
        }
    }

    #[test]
    fn dnat_flags_never_panic(argv in argv("dnat", DNAT_FLAGS)) {
        let Ok(cli) = Cli::try_parse_from(&argv) else { return Ok(()) };
        let Command::Dnat(args) = &cli.command else { unreachable!() };
        match dnat::parse(args, Path::new("/nonexistent")) {
            Ok(cfg) => {
                check_applies(&dnat::build(&cfg, "nftkit-dnat"))?;
                prop_assert!(dry_run(args, "nftkit-dnat").is_ok());
            }
            Err(e) => check_input_error(&e, DNAT_FLAGS)?,
        }
    }

    #[test]
    fn dnat_map_entries_never_panic(entry in joined()) {
        if let Err(e) = dnat::mapping(&entry) {
            check_input_error(&e, &["--map"])?;
        }
    }

    #[test]
    fn netpol_manifests_never_panic(
        which in 0..MANIFESTS.len(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let text = mutate(MANIFESTS[which], &muts);
        match nftkit::netpol::manifest::parse("/m.yaml", &text) {
            Ok(cluster) => {
                for node in ["node-1", "node-2"] {
                    let cfg = nftkit::netpol::build::NetpolConfig { node: node.into(), cluster: cluster.clone() };
                    check_applies(&nftkit::netpol::build::build(&cfg, "nftkit-netpol"))?;
                }
            }
            Err(e) => check_input_error(&e, &["/m.yaml"])?,
        }
    }

    #[test]
    fn netpol_arbitrary_text_never_panics(text in any::<String>()) {
        if let Err(e) = nftkit::netpol::manifest::parse("/m.yaml", &text) {
            check_input_error(&e, &["/m.yaml"])?;
        }
    }
}

/// The unmutated golden manifests are valid: the mutation test starts from real input.
#[test]
fn golden_manifests_parse() {
    for m in MANIFESTS {
        let c = nftkit::netpol::manifest::parse("/m.yaml", m).expect("golden manifest");
        assert!(!c.pods.is_empty() && !c.policies.is_empty());
    }
}
