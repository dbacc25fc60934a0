//! The tests that need no root and no kernel state: the real binary with
//! `--dry-run`, the fake backend, parsers (property tests), manifests and docs.
//! One test binary (`cargo test --test it`), one module per former test file;
//! helpers come from `tests/common`, shared with `tests/netns`.

#[path = "../common/mod.rs"]
mod common;

mod cli_docs;
mod deploy_manifests;
mod migrating_guide;
mod netpol_cnp_file;
mod netpol_explain;
mod netpol_semantics;
mod pipeline;
mod proptest_fast_yaml;
mod proptest_hostile;
mod proptest_redirect;
mod reliability_input;
