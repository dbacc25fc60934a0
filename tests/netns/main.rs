//! The tests that need root: each builds its own network namespaces (or runs
//! `unshare -n`, `setpriv`, a chroot) and programs the kernel there, never in the
//! root namespace. One test binary (`cargo test --test netns`), one module per
//! former test file; the namespace lab is `tests/common`, shared with `tests/it`.

#[path = "../common/mod.rs"]
mod common;
mod netpol_api;
mod netpol_churn;
mod netpol_cnp;

mod cross_aarch64;
mod doctor;
mod e2e_backends;
mod e2e_dnat;
mod e2e_local_address;
mod e2e_masquerade;
mod e2e_netpol;
mod e2e_ownership;
mod e2e_redirect;
mod golden;
mod golden_dnat;
mod golden_local_address;
mod golden_masquerade;
mod iptables_atomic;
mod iptables_detect;
mod iptables_golden;
mod metrics_endpoints;
mod netlink_backend;
mod netpol_explain;
mod netpol_golden;
mod netpol_live;
mod netpol_live_cnp;
mod netpol_scale;
mod reliability_concurrency;
mod reliability_crash;
mod reliability_drift;
mod reliability_kernel;
mod reliability_privilege;
mod static_binary;
mod verdict_map;
mod verify_script;
