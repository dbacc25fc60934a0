//! Golden tests of the iptables backends' `--dry-run` output (the iptables-restore input
//! per family): each redirect golden case (the same cases as tests/netns/golden.rs) renders to
//! tests/golden/redirect/<case>.iptables with `--backend iptables-nft`;
//! `UPDATE_GOLDEN=1 cargo test --test netns iptables_golden::` rewrites them.
//!
//! Beyond text equality: the legacy flavour prints the same input (only the binary names
//! differ), and each golden file, restored in a throw-away network namespace with both
//! flavours, reads back through iptables-save as exactly its own `-A` lines — so the text
//! we render is iptables-save's canonical form, which is what makes `verify` exact.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

// The same cases as tests/netns/golden.rs.
use crate::common::golden::{REDIRECT_CASES as CASES, RedirectCase as Case};

fn golden_path(case: &Case) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/redirect")
        .join(format!("{}.iptables", case.name))
}

fn render(case: &Case, backend: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .env_clear()
        .envs(case.env.iter().copied())
        .args(["--dry-run", "-q", "--backend", backend, "redirect"])
        .args(case.args)
        .output()
        .expect("run nftkit");
    assert!(
        out.status.success(),
        "{}: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn dry_run_matches_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for case in CASES {
        let got = render(case, "iptables-nft");
        let path = golden_path(case);
        if update {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {} (UPDATE_GOLDEN=1 writes it)", path.display()));
        assert_eq!(
            got,
            want,
            "case {} differs from {}",
            case.name,
            path.display()
        );
    }
}

#[test]
fn legacy_flavour_differs_only_in_binary_names() {
    for case in CASES {
        let nft = render(case, "iptables-nft");
        let legacy = render(case, "iptables-legacy");
        assert_eq!(
            legacy.replace("tables-legacy-restore", "tables-nft-restore"),
            nft,
            "case {}",
            case.name
        );
    }
}

/// The `# IPv4: ...` / `# IPv6: ...` sections of a golden file.
fn sections(text: &str) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# IPv") {
            out.push((rest.starts_with('6'), String::new()));
        }
        if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn golden_files_restore_and_save_back_identically() {
    for case in CASES {
        let path = golden_path(case);
        let text = std::fs::read_to_string(&path).unwrap();
        for flavour in ["legacy", "nft"] {
            let mut script = String::from("set -e\n");
            // (family, chain) -> rule lines in order.
            let mut want: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            let mut add = |fam: &str, line: String| {
                let chain = line.split_whitespace().next().unwrap_or("").to_string();
                want.entry((fam.to_string(), chain)).or_default().push(line);
            };
            let mut tools = Vec::new();
            for (i, (v6, body)) in sections(&text).into_iter().enumerate() {
                if !body.contains("COMMIT") {
                    continue;
                }
                let fam = if v6 { "ip6tables" } else { "iptables" };
                let file = std::env::temp_dir().join(format!(
                    "nftkit-golden-{}-{}-{flavour}-{i}",
                    std::process::id(),
                    case.name
                ));
                std::fs::write(&file, &body).unwrap();
                script.push_str(&format!(
                    "{fam}-{flavour}-restore --noflush < {}\n",
                    file.display()
                ));
                tools.push(format!("{fam}-{flavour}-save"));
                for l in body.lines() {
                    if let Some(rest) = l.strip_prefix("-A ") {
                        add(fam, rest.to_string());
                    } else if let Some(rest) = l.strip_prefix("-I ") {
                        // `-I CHAIN 1 SPEC` reads back as `-A CHAIN SPEC`.
                        let (chain, spec) = rest.split_once(" 1 ").unwrap();
                        add(fam, format!("{chain} {spec}"));
                    }
                }
            }
            for t in &tools {
                script.push_str(&format!(
                    "{t} | sed -n 's/^-A /{} -A /p'\n",
                    t.split('-').next().unwrap()
                ));
            }
            // unshare -n: a fresh network namespace, so nothing touches the host.
            let out = Command::new("unshare")
                .args(["-n", "sh", "-c", &script])
                .output()
                .expect("run unshare (scripts/test.sh runs as root)");
            assert!(
                out.status.success(),
                "{} ({flavour}): {}",
                case.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                let (fam, rest) = l.split_once(" -A ").unwrap();
                let chain = rest.split_whitespace().next().unwrap_or("").to_string();
                got.entry((fam.to_string(), chain))
                    .or_default()
                    .push(rest.to_string());
            }
            assert_eq!(
                got, want,
                "{} ({flavour}) reads back differently",
                case.name
            );
        }
    }
}
