//! `nftkit netpol`: Kubernetes `networking.k8s.io/v1` NetworkPolicy enforcement for the
//! pods of one node (replaces kube-policy-manager, with v1 semantics).
//!
//! Table `inet nftkit-netpol`, base chain `filter-forward` (type filter, hook forward,
//! priority filter = 0), per-pod chains `ingress/<ns>/<pod>` and `egress/<ns>/<pod>`, peer
//! sets `<direction>/<ns>/<policy>/<rule>-v4|v6`; see `netpol::build` for the layout and
//! why only the forward hook is used.
//!
//! Source: `--from-file` (a `kubectl get pods,namespaces,networkpolicies -A -o yaml`
//! List, YAML or JSON), applied once. Watching the API server is not built yet: without
//! `--from-file` the command refuses with exit 2.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::netpol::build::{NetpolConfig, build_with_summary};
use crate::netpol::manifest;

pub use crate::netpol::build::COMMAND;

/// Flags of `nftkit netpol`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct NetpolArgs {
    /// The cluster's pods, namespaces and networkpolicies as one
    /// `kubectl get pods,namespaces,networkpolicies -A -o yaml` List (YAML or JSON);
    /// applied once
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// This node's name: pods whose spec.nodeName equals it are policed [env: NODE_NAME]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig for watching the API server (not available yet) [env: KUBECONFIG]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// Validate flags and environment, read and validate the manifest file.
pub fn parse(args: &NetpolArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<NetpolConfig> {
    let node = match &args.node_name {
        Some(n) => ("--node-name", n.trim().to_string()),
        None => (
            "NODE_NAME",
            env("NODE_NAME").unwrap_or_default().trim().to_string(),
        ),
    };
    if node.1.is_empty() {
        return Err(Error::Usage(
            "netpol needs this node's name: --node-name or NODE_NAME (the pod's spec.nodeName)"
                .into(),
        ));
    }
    let valid_node = node.1.len() <= 253
        && node
            .1
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid_node {
        return Err(Error::invalid(
            node.0,
            &node.1,
            "a node name (lowercase letters, digits, '-' and '.', at most 253)",
        ));
    }
    let Some(path) = &args.from_file else {
        return Err(Error::Usage(
            "netpol needs --from-file PATH; watching the API server (--kubeconfig, in-cluster) is not available in this build"
                .into(),
        ));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::invalid(
            "--from-file",
            path.display(),
            format!("a readable file ({e})"),
        )
    })?;
    let cluster = manifest::parse(&path.display().to_string(), &text)?;
    Ok(NetpolConfig {
        node: node.1,
        cluster,
    })
}

/// The desired table for these flags.
pub fn desired(
    args: &NetpolArgs,
    env: &dyn Fn(&str) -> Option<String>,
    table: &str,
) -> Result<Ruleset> {
    let cfg = parse(args, env)?;
    let (rs, s) = build_with_summary(&cfg, table);
    tracing::info!(
        node = %cfg.node,
        pods = cfg.cluster.pods.len(),
        local_pods = s.local_pods,
        policies = cfg.cluster.policies.len(),
        policies_applied = s.policies,
        ingress_isolated = s.ingress_isolated,
        egress_isolated = s.egress_isolated,
        rules = rs.rule_count(),
        sets = rs.sets.len(),
        "netpol desired state"
    );
    Ok(rs)
}
