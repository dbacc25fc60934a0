//! `nftkit netpol --dry-run` golden files (tests/golden/netpol/<case>.yaml -> <case>.nft),
//! accepted by `nft -c -f`; the netlink apply of each case lists exactly like `nft -f` of
//! its dry-run text and verifies clean; invalid manifests exit 2 naming object and field,
//! with nothing sent to the kernel. `UPDATE_GOLDEN=1` rewrites the .nft files.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

const CASES: &[&str] = &[
    "docs-example",
    "ports-and-union",
    "docs-example-logged",
    "ports-and-union-audit",
];

/// A case's manifest and extra flags: `-logged` every verdict logged, `-audit` audit mode.
fn case(case: &str) -> (&str, Vec<&'static str>) {
    if let Some(base) = case.strip_suffix("-logged") {
        let flags = vec![
            "--log-verdicts",
            "all",
            "--log-rate",
            "10",
            "--log-group",
            "7",
        ];
        (base, flags)
    } else if let Some(base) = case.strip_suffix("-audit") {
        (base, vec!["--audit"])
    } else {
        (case, vec![])
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/netpol")
}

fn input(name: &str) -> String {
    dir()
        .join(format!("{}.yaml", case(name).0))
        .display()
        .to_string()
}

fn dry_run(case: &str) -> String {
    let out = Command::new(NFTKIT)
        .env_clear()
        .args([
            "-q",
            "--dry-run",
            "netpol",
            "--node-name",
            "node-1",
            "--from-file",
        ])
        .arg(input(case))
        .args(self::case(case).1)
        .output()
        .expect("run nftkit");
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn dry_run_matches_golden_files_and_nft_accepts_them() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for case in CASES {
        let got = dry_run(case);
        let path = dir().join(format!("{case}.nft"));
        if update {
            std::fs::write(&path, &got).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing {}", path.display()));
        assert_eq!(got, want, "case {case} differs from {}", path.display());
        let out = Command::new("unshare")
            .args(["-n", "nft", "-c", "-f"])
            .arg(&path)
            .output()
            .expect("unshare nft");
        assert!(
            out.status.success(),
            "nft -c -f {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn netlink_apply_lists_like_nft_of_the_dry_run_and_verifies() {
    for case in CASES {
        let by_nft = Netns::new();
        by_nft.nft_load(&dry_run(case));
        let by_nftkit = Netns::new();
        let args = [
            "netpol",
            "--node-name",
            "node-1",
            "--from-file",
            &input(case),
        ];
        let args: Vec<&str> = args.iter().copied().chain(self::case(case).1).collect();
        by_nftkit.nftkit_ok(&[], &args);
        assert_eq!(by_nftkit.ruleset(), by_nft.ruleset(), "case {case}");
        // verify: clean on our apply and on nft's load of the same text.
        let mut verify = vec!["verify"];
        verify.extend_from_slice(&args);
        by_nftkit.nftkit_ok(&[], &verify);
        by_nft.nftkit_ok(&[], &verify);
        // Re-applying is idempotent; delete removes the table.
        by_nftkit.nftkit_ok(&[], &args);
        assert_eq!(
            by_nftkit.ruleset(),
            by_nft.ruleset(),
            "case {case} re-applied"
        );
        by_nftkit.nftkit_ok(&[], &["delete", "netpol"]);
        assert!(by_nftkit.table("inet", "nftkit-netpol").is_none());
    }
}

#[test]
fn invalid_manifests_exit_2_and_touch_nothing() {
    let ns = Netns::new();
    let before = ns.ruleset();
    let file = std::env::temp_dir().join(format!("{}-bad.yaml", unique_name()));
    let bad = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1\n  kind: NetworkPolicy\n  metadata: {name: web, namespace: shop}\n  spec:\n    podSelector: {}\n    ingress:\n    - ports:\n      - {port: 80, endPort: 70}\n";
    std::fs::write(&file, bad).unwrap();
    let f = file.display().to_string();
    let out = ns.nftkit(&[], &["netpol", "--node-name", "node-1", "--from-file", &f]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.code, Some(2), "{out}");
    let line = out.stderr.trim();
    assert_eq!(line.lines().count(), 1, "{out}");
    assert!(
        line.contains("NetworkPolicy shop/web")
            && line.contains("spec.ingress[0].ports[0].endPort")
            && line.contains("70"),
        "{line}"
    );
    assert_eq!(ns.ruleset(), before);
    // Missing node name and missing source: usage errors, exit 2.
    let out = ns.nftkit(&[], &["netpol", "--from-file", "/nonexistent"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("NODE_NAME"), "{out}");
    let out = ns.nftkit(&[("NODE_NAME", "node-1")], &["netpol"]);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--from-file"), "{out}");
    let out = ns.nftkit(
        &[("NODE_NAME", "node-1")],
        &["netpol", "--from-file", "/nonexistent"],
    );
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("/nonexistent"), "{out}");
    assert_eq!(ns.ruleset(), before);
}

/// `--from-file` must say what it is, stay under masquerade's 16 MiB input limit, and
/// every option is validated in every mode: each refusal is exit 2 with one line naming
/// the file or option and the value, and the table applied before stays as it was.
/// `items: []` is a valid, empty cluster.
#[test]
fn from_file_refusals_exit_2_and_keep_the_table() {
    let ns = Netns::new();
    let env = [("NODE_NAME", "node-1")];
    ns.nftkit_ok(&env, &["netpol", "--from-file", &input("docs-example")]);
    let before = ns.ruleset();
    assert!(before.contains("table inet nftkit-netpol"), "{before}");
    let dir = std::env::temp_dir().join(format!("{}-from-file", unique_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let empty = write("empty.yaml", "");
    let configmap = write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
    );
    let service = write(
        "svc.yaml",
        "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Service, metadata: {name: web, namespace: shop}}\n",
    );
    let truncated = write("cut.yaml", "apiVersion: v1\nkind: List\n");
    // A sparse file one byte over the limit: refused from its size, never read.
    let big = dir.join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((16 << 20) + 1)
        .unwrap();
    let big = big.display().to_string();
    let docs = input("docs-example");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--from-file", &empty], vec![&empty, "empty"]),
        (
            vec!["--from-file", &configmap],
            vec![&configmap, "\"ConfigMap\""],
        ),
        (
            vec!["--from-file", &service],
            vec![&service, "\"Service\"", "shop/web"],
        ),
        (vec!["--from-file", &truncated], vec![&truncated, "items"]),
        (vec!["--from-file", &big], vec![&big, "16 MiB", "16777217"]),
        (
            vec!["--from-file", &docs, "--debounce", "fast"],
            vec!["--debounce", "fast"],
        ),
        (
            vec!["--from-file", &docs, "--resync-interval", "0"],
            vec!["--resync-interval", "0"],
        ),
        (
            vec!["--from-file", &docs, "--sync-timeout", "soon"],
            vec!["--sync-timeout", "soon"],
        ),
        (
            vec!["--from-file", &docs, "--kubeconfig", "/nonexistent/kc"],
            vec!["--kubeconfig", "/nonexistent/kc"],
        ),
    ];
    for (args, needles) in cases {
        for dry in [true, false] {
            let mut argv = if dry { vec!["--dry-run"] } else { vec![] };
            argv.push("netpol");
            argv.extend(&args);
            let out = ns.nftkit(&env, &argv);
            assert_eq!(out.code, Some(2), "{out}");
            let line = out.stderr.trim();
            assert_eq!(line.lines().count(), 1, "{out}");
            for n in &needles {
                assert!(line.contains(n), "{n}: {out}");
            }
        }
    }
    assert_eq!(ns.ruleset(), before, "a refused file touched the kernel");
    // An explicit empty List: no policies, nothing isolated.
    let none = write("none.yaml", "apiVersion: v1\nkind: List\nitems: []\n");
    ns.nftkit_ok(&env, &["netpol", "--from-file", &none]);
    let t = ns.table("inet", "nftkit-netpol").expect("table");
    assert!(!t.contains("chain ingress/"), "{t}");
    let _ = std::fs::remove_dir_all(&dir);
}
