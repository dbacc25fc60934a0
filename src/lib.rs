//! nftkit: Kubernetes node and pod packet rules over nf_tables netlink.
//!
//! Flow: argv + env -> `cli` -> `app` (dispatch) -> a command's validated config (`jobs::*`, each a [`jobs::Job`]) -> pure `build`
//! -> [`model::Ruleset`] -> `--dry-run` text (`render`) or a backend's atomic apply
//! -> read-back and compare (`snapshot`).

pub mod addr;
pub mod app;
pub mod apply;
pub mod backend;
pub mod cli;
pub mod doctor;
pub mod error;
pub mod fast_yaml;
pub mod jobs;
pub mod man;
pub mod metrics;
pub mod model;
pub mod netpol;
pub mod parse;
pub mod render;
pub mod runner;
pub mod snapshot;
pub mod stats;
#[cfg(test)]
mod testutil;
