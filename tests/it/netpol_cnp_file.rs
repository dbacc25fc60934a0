//! ClusterNetworkPolicy objects in `nftkit netpol --from-file` manifests: accepted next to
//! the other kinds; an invalid one is exit 2 with one line naming the file, the object,
//! the field and the value, before any backend is opened (the kernel is untouched).

use std::cell::Cell;
use std::collections::HashMap;
use std::process::Command;

use clap::Parser;
use nftkit::app;
use nftkit::backend::Backend;
use nftkit::cli::Cli;

use crate::common::TempFile;

const GOOD: &str = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: shop, labels: {app: db}}
  spec: {nodeName: node-1, containers: [{name: c}]}
  status: {podIPs: [{ip: 10.244.2.2}]}
- apiVersion: policy.networking.k8s.io/v1alpha2
  kind: ClusterNetworkPolicy
  metadata: {name: deny-internet}
  spec:
    tier: Baseline
    priority: 3
    subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: db}}}}
    egress:
    - name: no-internet
      action: Deny
      to: [{networks: [0.0.0.0/0]}]
      protocols: [{tcp: {destinationPort: {range: {start: 1, end: 1024}}}}]
"#;

/// `nftkit ARGS` in this process; (exit code, whether a backend was opened).
fn run(args: &[&str]) -> (i32, bool) {
    let cli =
        Cli::try_parse_from(std::iter::once("nftkit").chain(args.iter().copied())).expect("parse");
    let env: HashMap<String, String> = HashMap::new();
    let opened = Cell::new(false);
    let mut out = Vec::new();
    let result = app::run(
        &cli,
        &|k| env.get(k).cloned(),
        &mut |_| -> nftkit::error::Result<Box<dyn Backend>> {
            opened.set(true);
            Err(nftkit::error::Error::runtime("no backend in this test"))
        },
        &mut out,
    );
    (
        result.map(|_| 0).unwrap_or_else(|e| e.exit_code()),
        opened.get(),
    )
}

fn binary(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .args(args)
        .env_remove("NODE_NAME")
        .output()
        .expect("run nftkit");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_file_with_a_cluster_network_policy_is_accepted() {
    let f = TempFile::new("cnp-good", GOOD);
    let (code, _, err) = binary(&[
        "--dry-run",
        "netpol",
        "--from-file",
        f.path(),
        "--node-name",
        "node-1",
    ]);
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn an_invalid_cluster_network_policy_is_exit_2_naming_object_and_field() {
    let cases = [
        (
            GOOD.replace("start: 1, end: 1024", "start: 1024, end: 1024"),
            "ClusterNetworkPolicy deny-internet field spec.egress[0].protocols[0].tcp.destinationPort.range.end \"1024\"",
        ),
        (
            GOOD.replace("[0.0.0.0/0]", "[0.0.0.0/0, 300.0.0.0/8]"),
            "ClusterNetworkPolicy deny-internet field spec.egress[0].to[0].networks[1] \"300.0.0.0/8\"",
        ),
        (
            GOOD.replace("tier: Baseline", "tier: Developer"),
            "field spec.tier \"Developer\"",
        ),
        (
            GOOD.replace("[{networks: [0.0.0.0/0]}]", "[{nodes: {}}]"),
            "field spec.egress[0].to[0].nodes \"{}\": not supported by nftkit",
        ),
        (
            GOOD.replace("v1alpha2", "v1alpha1"),
            "ClusterNetworkPolicy deny-internet field apiVersion \"policy.networking.k8s.io/v1alpha1\"",
        ),
    ];
    for (text, needle) in cases {
        let f = TempFile::new("cnp-bad", &text);
        let args = ["netpol", "--from-file", f.path(), "--node-name", "node-1"];
        // Without --dry-run: refused before a backend is opened.
        assert_eq!(run(&args), (2, false), "{needle}");
        let (code, out, err) = binary(&args);
        assert_eq!(code, Some(2), "{err}");
        assert!(out.is_empty(), "{out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(
            err.contains(f.path()) && err.contains(needle),
            "{needle}\n=> {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}
