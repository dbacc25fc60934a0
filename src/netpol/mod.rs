//! Kubernetes `networking.k8s.io/v1` NetworkPolicy for the pods of one node: the cluster
//! objects (`manifest`; NetworkPolicy specs in `policy`, ClusterNetworkPolicies in
//! `cnp` / `cnp_parse` and live in `cnp_object`, the validating field readers in
//! `fields`), label selectors (`selector`), ipBlock interval arithmetic
//! (`ipblock`) and the rules (`build`), their per-policy counters on `/metrics`
//! (`counters`), verdict logs (`verdicts`); `explain` runs one flow through the built
//! rules; live mode (`live`: the loop, fed by `watch`, the
//! API server's watchers, through `store`, the converted objects). `jobs::netpol` is the
//! command around it.

pub mod build;
pub mod cnp;
mod cnp_object;
mod cnp_parse;
pub mod counters;
pub mod explain;
mod fields;
pub mod incremental;
mod index;
pub mod ipblock;
pub mod live;
pub mod manifest;
pub mod names;
pub mod observe;
mod policy;
pub mod selector;
mod store;
mod tiers;
pub mod verdicts;
mod watch;

pub use build::{NetpolConfig, build};
