//! Golden tests of `--dry-run` output: each case's flags and environment render to the
//! text in tests/golden/redirect/<case>.nft, and `nft -c -f` (in a throwaway network
//! namespace) accepts that text.
//! `UPDATE_GOLDEN=1 cargo test --test netns -- --exact golden::dry_run_matches_golden_files`
//! rewrites them.

use std::process::Command;

use crate::common::golden::{
    Golden, REDIRECT_CASES as CASES, assert_matches_golden, assert_nft_accepts,
};

fn goldens() -> Vec<Golden> {
    CASES
        .iter()
        .map(|c| {
            let mut argv = vec!["redirect"];
            argv.extend_from_slice(c.args);
            Golden::new("redirect", c.name, &argv).env(c.env)
        })
        .collect()
}

#[test]
fn dry_run_matches_golden_files() {
    assert_matches_golden(&goldens());
}

#[test]
fn golden_files_are_accepted_by_nft_check() {
    assert_nft_accepts(&goldens());
}

#[test]
fn dry_run_needs_no_privileges() {
    // setpriv drops every capability; --dry-run must still work (no kernel access).
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_nftkit"))
        .args(["-q", "--dry-run", "redirect"])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("table inet nftkit-redirect {"));
}
