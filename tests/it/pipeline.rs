//! The whole command pipeline (`app::run`) against the in-memory fake backend: exit codes,
//! validation before any backend is opened, apply/verify/delete/status, failure handling.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use clap::Parser;
use nftkit::app;
use nftkit::backend::fake::FakeBackend;
use nftkit::backend::{Backend, Comparison, Inspect, OwnedTable};
use nftkit::cli::Cli;
use nftkit::error::Result;
use nftkit::model::Ruleset;
use nftkit::snapshot::Snapshot;

/// Lets the test keep looking at the fake after `app::run` consumed its box.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<FakeBackend>>);

impl Backend for Shared {
    fn name(&self) -> &'static str {
        "fake"
    }
    fn apply(&mut self, rs: &Ruleset) -> Result<()> {
        self.0.borrow_mut().apply(rs)
    }
    fn compare(&mut self, rs: &Ruleset) -> Result<Comparison> {
        self.0.borrow_mut().compare(rs)
    }
    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>> {
        self.0.borrow_mut().read_back(table)
    }
    fn delete(&mut self, table: &str) -> Result<bool> {
        self.0.borrow_mut().delete(table)
    }
}

impl Inspect for Shared {
    fn list_owned(&mut self) -> Result<Vec<OwnedTable>> {
        self.0.borrow_mut().list_owned()
    }
}

/// Run a command line against `fake`; (exit code, stdout, whether a backend was opened).
fn run(fake: &Shared, args: &[&str], env: &[(&str, &str)]) -> (i32, String, bool) {
    let cli =
        Cli::try_parse_from(std::iter::once("nftkit").chain(args.iter().copied())).expect("parse");
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut opened = false;
    let mut out = Vec::new();
    let result = app::run(
        &cli,
        &|k| env.get(k).cloned(),
        &mut |_| {
            opened = true;
            Ok(Box::new(fake.clone()) as Box<dyn Backend>)
        },
        &mut out,
    );
    let code = result.map(|_| 0).unwrap_or_else(|e| e.exit_code());
    (code, String::from_utf8(out).unwrap(), opened)
}

#[test]
fn apply_then_verify_then_drift_then_delete() {
    let fake = Shared::default();
    assert_eq!(run(&fake, &["redirect"], &[]).0, 0);
    assert_eq!(fake.0.borrow().applies, 1);
    let (code, out, _) = run(&fake, &["verify", "redirect"], &[]);
    assert_eq!(code, 0, "{out}");
    fake.0
        .borrow_mut()
        .flush_chain("nftkit-redirect", "nat-output");
    let (code, out, _) = run(&fake, &["verify", "redirect"], &[]);
    assert_eq!(code, 3);
    assert!(out.contains("-   tcp dport 80 redirect to :10080"), "{out}");
    // Verify with other options than applied is drift too.
    run(&fake, &["redirect"], &[]);
    assert_eq!(
        run(&fake, &["verify", "redirect"], &[("PORT_MAPPING", "15001")]).0,
        3
    );
    assert_eq!(run(&fake, &["delete", "redirect"], &[]).0, 0);
    assert!(fake.0.borrow().tables.is_empty());
    assert_eq!(
        run(&fake, &["verify", "redirect"], &[]).0,
        3,
        "missing table is drift"
    );
}

#[test]
fn invalid_input_exits_2_without_opening_a_backend() {
    let fake = Shared::default();
    for (var, val) in [
        ("PORT_MAPPING", "abc:80"),
        ("PORT_MAPPING", "10080:80:90"),
        ("PORT_MAPPING", "0:80"),
        ("PORT_MAPPING", "70000"),
        ("ACCEPT_UIDS", "x1"),
        ("ACCEPT_GIDS", "1,,2"),
        ("IPV4_ACCEPT_BLOCKS", "10.0.0.1/8"),
        ("IPV6_ACCEPT_BLOCKS", "fc00::/129"),
        ("TO_IPV4_ADDR", "::1"),
    ] {
        let (code, _, opened) = run(&fake, &["redirect"], &[(var, val)]);
        assert_eq!(code, 2, "{var}={val}");
        assert!(
            !opened,
            "{var}={val}: backend opened before validation finished"
        );
        let (code, _, opened) = run(&fake, &["verify", "redirect"], &[(var, val)]);
        assert_eq!((code, opened), (2, false), "verify {var}={val}");
    }
    assert_eq!(run(&fake, &["--table", "bad name!", "redirect"], &[]).0, 2);
    assert_eq!(fake.0.borrow().applies, 0);
}

#[test]
fn dry_run_prints_the_script_and_opens_no_backend() {
    let fake = Shared::default();
    let (code, out, opened) = run(&fake, &["--dry-run", "--table", "pod-nat", "redirect"], &[]);
    assert_eq!((code, opened), (0, false));
    assert!(
        out.starts_with("table inet pod-nat\ndelete table inet pod-nat\n"),
        "{out}"
    );
}

#[test]
fn a_refused_apply_is_exit_1_and_leaves_the_previous_table() {
    let fake = Shared::default();
    run(&fake, &["redirect"], &[]);
    let before = fake.0.borrow().tables.clone();
    fake.0.borrow_mut().fail_next = Some("kernel said EINVAL".into());
    assert_eq!(run(&fake, &["redirect"], &[("PORT_MAPPING", "15001")]).0, 1);
    assert_eq!(fake.0.borrow().tables, before);
}

#[test]
fn tables_not_marked_ours_are_refused() {
    let fake = Shared::default();
    fake.0.borrow_mut().insert_foreign("nftkit-redirect");
    assert_eq!(run(&fake, &["redirect"], &[]).0, 1);
    assert_eq!(run(&fake, &["delete", "redirect"], &[]).0, 1);
    assert_eq!(
        run(&fake, &["delete", "--all"], &[]).0,
        0,
        "--all only lists owned tables"
    );
    assert!(fake.0.borrow().tables.contains_key("nftkit-redirect"));
}

#[test]
fn status_lists_owned_tables_as_text_and_json() {
    let fake = Shared::default();
    run(&fake, &["redirect"], &[]);
    run(&fake, &["--table", "second", "redirect"], &[]);
    let (code, out, _) = run(&fake, &["status", "--json"], &[]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tables: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["nftkit-redirect", "second"]);
    assert_eq!(v["tables"][0]["rules"], 7);
    let (_, text, _) = run(&fake, &["status"], &[]);
    assert!(text.contains("table inet second"), "{text}");
    assert_eq!(run(&fake, &["delete", "--all"], &[]).0, 0);
    assert!(fake.0.borrow().tables.is_empty());
}
