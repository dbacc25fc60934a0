//! Kubernetes `networking.k8s.io/v1` NetworkPolicy for the pods of one node: the cluster
//! objects (`manifest`), label selectors (`selector`), ipBlock interval arithmetic
//! (`ipblock`) and the rules (`build`); live mode (`live`: the loop, fed by `watch`, the
//! API server's watchers, through `store`, the converted objects). `jobs::netpol` is the
//! command around it.

pub mod build;
pub mod ipblock;
pub mod live;
pub mod manifest;
pub mod selector;
mod store;
mod watch;

pub use build::{NetpolConfig, build};
