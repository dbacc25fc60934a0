//! `nftkit netpol explain` through the real binary: exit 0 for an allowed flow, 4 for a
//! denied one, 2 (one line, naming the value) for invalid input; `--json`'s shape; the
//! `netpol` command itself unchanged next to its new subcommand.

use std::process::{Command, Output};

use serde_json::Value;

use crate::common::TempFile;

const CLUSTER: &str = r#"apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: Namespace, metadata: {name: shop}}
- apiVersion: v1
  kind: Pod
  metadata: {name: web, namespace: shop, labels: {app: web}}
  spec: {nodeName: node-1, containers: [{name: c}]}
  status: {podIPs: [{ip: 10.244.1.2}]}
- apiVersion: v1
  kind: Pod
  metadata: {name: db, namespace: shop, labels: {app: db}}
  spec: {nodeName: node-1, containers: [{name: c, ports: [{name: sql, containerPort: 5432}]}]}
  status: {podIPs: [{ip: 10.244.2.2}]}
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: db-in, namespace: shop}
  spec:
    podSelector: {matchLabels: {app: db}}
    ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{port: sql}]
"#;

fn nftkit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .args(args)
        .env_remove("NODE_NAME")
        .output()
        .expect("run nftkit")
}

fn explain(file: &TempFile, extra: &[&str]) -> Output {
    let mut args = vec![
        "netpol",
        "explain",
        "--from-file",
        file.path(),
        "--node-name",
        "node-1",
    ];
    args.extend_from_slice(extra);
    nftkit(&args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn allowed_exits_0_denied_exits_4_with_the_deciding_rule() {
    let f = TempFile::new("explain", CLUSTER);
    let out = explain(
        &f,
        &["--from", "shop/web", "--to", "shop/db", "--port", "5432"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("allow: shop/web"), "{text}");
    assert!(
        text.contains("networkpolicy shop/db-in ingress[0]"),
        "{text}"
    );
    assert!(
        text.contains("@ingress/shop/db-in/0-v4 holds 10.244.1.2"),
        "{text}"
    );

    let out = explain(
        &f,
        &["--from", "10.9.9.9", "--to", "shop/db", "--port", "5432"],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("deny: 10.9.9.9 -> shop/db"), "{text}");
    assert!(text.contains("default-deny: ingress of shop/db"), "{text}");
    // A denied flow is an answer, not an error: nothing "nftkit: ..." on stderr.
    assert!(!stderr(&out).contains("nftkit:"), "{}", stderr(&out));
}

#[test]
fn json_has_the_decision_the_checks_and_the_path() {
    let f = TempFile::new("explain", CLUSTER);
    for (port, code, decision) in [("5432/tcp", 0, "allow"), ("5432/udp", 4, "deny")] {
        let out = explain(
            &f,
            &[
                "--from", "shop/web", "--to", "shop/db", "--port", port, "--json",
            ],
        );
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        let v: Value = serde_json::from_str(&stdout(&out)).expect("one JSON document");
        assert_eq!(v["decision"], decision);
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["from"]["pod"], "shop/web");
        assert_eq!(v["from"]["address"], "10.244.1.2");
        assert_eq!(v["to"]["pod"], "shop/db");
        assert_eq!(v["port"], 5432);
        assert_eq!(v["protocol"], port.split('/').nth(1).unwrap());
        assert_eq!(v["policed_here"], true);
        assert!(v["reason"].is_string());
        let checks = v["checks"].as_array().unwrap();
        assert_eq!(checks[0]["direction"], "egress");
        assert_eq!(checks[0]["result"], "not-isolated");
        assert_eq!(checks[1]["direction"], "ingress");
        let path = v["path"].as_array().unwrap();
        assert_eq!(path[0]["chain"], "filter-forward");
        assert!(
            path.iter()
                .all(|p| p["rule"].is_u64() && p["text"].is_string())
        );
        if decision == "allow" {
            assert_eq!(checks[1]["result"], "allowed");
            assert_eq!(checks[1]["rules"][0]["policy"], "shop/db-in");
            assert_eq!(checks[1]["rules"][0]["rule"], 0);
            assert_eq!(checks[1]["set"], "ingress/shop/db-in/0-v4");
            // The deciding step: the accept in the chain of db's policies.
            assert_eq!(path.last().unwrap()["sets"][0]["element"], "10.244.1.2");
        } else {
            assert_eq!(checks[1]["result"], "default-deny");
            assert_eq!(checks[1]["policies"][0], "shop/db-in");
            assert_eq!(
                path.last().unwrap()["text"],
                "counter name \"ingress/shop/-isolated\" drop"
            );
        }
    }
}

#[test]
fn invalid_input_is_one_line_naming_the_value_exit_2() {
    let f = TempFile::new("explain", CLUSTER);
    for (args, needle) in [
        (
            &["--from", "shop/nope", "--to", "shop/db", "--port", "1"][..],
            "shop/nope",
        ),
        (
            &["--from", "shop", "--to", "shop/db", "--port", "1"],
            "\"shop\"",
        ),
        (
            &["--from", "shop/web", "--to", "1.2.3.4/40", "--port", "1"],
            "1.2.3.4/40",
        ),
        (
            &["--from", "shop/web", "--to", "shop/db", "--port", "http"],
            "http",
        ),
        (
            &["--from", "shop/web", "--to", "shop/db", "--port", "1/icmp"],
            "1/icmp",
        ),
        (&["--from", "shop/web", "--to", "::1", "--port", "1"], "::1"),
        (&["--from", "shop/web", "--to", "shop/db"], "--port"),
    ] {
        let out = explain(&f, args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(stdout(&out).is_empty(), "{args:?}");
    }
    // The node name and the manifest are validated as `netpol` validates them.
    let out = nftkit(&[
        "netpol",
        "explain",
        "--from-file",
        f.path(),
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("NODE_NAME"), "{}", stderr(&out));
    let out = nftkit(&[
        "netpol",
        "explain",
        "--from-file",
        "/nonexistent-nftkit",
        "--node-name",
        "n1",
        "--from",
        "shop/web",
        "--to",
        "shop/db",
        "--port",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("/nonexistent-nftkit"),
        "{}",
        stderr(&out)
    );
    // netpol's own flags are not explain's.
    let out = nftkit(&["netpol", "--from-file", f.path(), "explain", "--from", "a"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn node_name_comes_from_the_environment_too() {
    let f = TempFile::new("explain", CLUSTER);
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .args([
            "netpol",
            "explain",
            "--from-file",
            f.path(),
            "--from",
            "10.9.9.9",
            "--to",
            "shop/db",
            "--port",
            "5432",
        ])
        .env("NODE_NAME", "node-1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn netpol_itself_is_unchanged_and_help_documents_the_exit_codes() {
    let f = TempFile::new("explain", CLUSTER);
    let out = nftkit(&[
        "--dry-run",
        "netpol",
        "--from-file",
        f.path(),
        "--node-name",
        "node-1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("chain ingress/shop/db"));
    let out = nftkit(&["netpol", "explain", "--help"]);
    assert!(out.status.success());
    let help = stdout(&out);
    for needle in [
        "--from-file",
        "--from",
        "--to",
        "--port",
        "--node-name",
        "--json",
        "4 it is denied",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    let out = nftkit(&["netpol", "--help"]);
    assert!(stdout(&out).contains("explain"), "{}", stdout(&out));
    let out = nftkit(&["--help"]);
    assert!(
        stdout(&out).contains("4 netpol explain"),
        "{}",
        stdout(&out)
    );
}
