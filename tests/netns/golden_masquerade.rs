//! Golden tests of `nftkit masquerade --dry-run`: each case's flags and config dir
//! (tests/golden/masquerade/configs/<dir>) render to tests/golden/masquerade/<case>.nft,
//! and `nft -c -f` (in a throwaway network namespace) accepts that text.
//! `UPDATE_GOLDEN=1 cargo test --test netns golden_masquerade::` rewrites the files.

use std::process::Command;

use crate::common::golden::{Golden, assert_matches_golden, assert_nft_accepts};

struct Case {
    name: &'static str,
    /// Directory under tests/golden/masquerade/configs.
    config: &'static str,
    args: &'static [&'static str],
}

const CASES: &[Case] = &[
    // No ip-masq* file: RFC 1918 defaults, link-local exempt, IPv4 only.
    Case {
        name: "defaults",
        config: "defaults",
        args: &[],
    },
    Case {
        name: "all-reserved",
        config: "defaults",
        args: &["--nomasq-all-reserved-ranges"],
    },
    // Two files (YAML + JSON) merged; overlaps and duplicates aggregated.
    Case {
        name: "config-cidrs",
        config: "cidrs",
        args: &[],
    },
    Case {
        name: "enable-ipv6",
        config: "ipv6",
        args: &["--enable-ipv6"],
    },
    Case {
        name: "masq-link-local",
        config: "link-local",
        args: &[],
    },
    Case {
        name: "masq-link-local-ipv6",
        config: "link-local",
        args: &["--enable-ipv6=true"],
    },
    // A present but empty file drops the defaults.
    Case {
        name: "empty-file",
        config: "empty-file",
        args: &[],
    },
    Case {
        name: "random-fully",
        config: "defaults",
        args: &["--random-fully"],
    },
    Case {
        name: "custom-chain",
        config: "defaults",
        args: &["--masq-chain", "IP-MASQ", "--table", "node-masq"],
    },
];

fn goldens() -> Vec<Golden> {
    let configs =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/masquerade/configs");
    CASES
        .iter()
        .map(|c| {
            let mut argv: Vec<std::ffi::OsString> = vec![
                "masquerade".into(),
                "--config-dir".into(),
                configs.join(c.config).into(),
            ];
            argv.extend(c.args.iter().map(Into::into));
            Golden::new("masquerade", c.name, &argv)
        })
        .collect()
}

#[test]
fn masquerade_dry_run_matches_golden_files() {
    assert_matches_golden(&goldens());
}

#[test]
fn masquerade_golden_files_are_accepted_by_nft_check() {
    assert_nft_accepts(&goldens());
}

#[test]
fn masquerade_invalid_input_is_exit_2_with_one_line() {
    let tmp = std::env::temp_dir().join(format!("nftkit-golden-masq-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(
        tmp.join("ip-masq-agent"),
        "nonMasqueradeCIDRs: [10.0.0.1/8]\n",
    )
    .unwrap();
    let cfg = tmp.display().to_string();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--config-dir", &cfg],
            &["ip-masq-agent", "10.0.0.1/8", "10.0.0.0/8"],
        ),
        (&["--resync-interval", "0"], &["--resync-interval", "\"0\""]),
        (
            &["--resync-interval", "1 minute"],
            &["--resync-interval", "\"1 minute\""],
        ),
        (&["--masq-chain", "a b"], &["--masq-chain", "\"a b\""]),
        (&["--enable-ipv6=maybe"], &["--enable-ipv6", "maybe"]),
    ];
    for (args, needles) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
            .env_clear()
            .args(["--dry-run", "masquerade"])
            .args(*args)
            .output()
            .expect("run nftkit");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().last().unwrap_or_default();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        for n in *needles {
            assert!(last.contains(n), "{args:?}: {n:?} not in {last:?}");
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Upstream manifests pass klog flags (`--v=2`) and Go-style booleans; they still parse.
#[test]
fn masquerade_accepts_upstream_manifest_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .env_clear()
        .args(["--dry-run", "-q", "masquerade", "--v=2", "--logtostderr"])
        .args(["--enable-ipv6=false", "--nomasq-all-reserved-ranges=true"])
        .args(["--resync-interval", "60", "--config-dir"])
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/masquerade/configs/defaults"),
        )
        .output()
        .expect("run nftkit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("240.0.0.0/4") && !text.contains("nomasq-v6"),
        "{text}"
    );
}
