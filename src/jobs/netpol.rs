//! `nftkit netpol`: Kubernetes `networking.k8s.io/v1` NetworkPolicy enforcement for the
//! pods of one node (replaces kube-policy-manager, with v1 semantics).
//!
//! Table `inet nftkit-netpol`, base chain `filter-forward` (type filter, hook forward,
//! priority filter = 0), per-pod chains `ingress/<ns>/<pod>` and `egress/<ns>/<pod>`, peer
//! sets `<direction>/<ns>/<policy>/<rule>-v4|v6`; see `netpol::build` for the layout and
//! why only the forward hook is used.
//!
//! Sources: `--from-file` (a `kubectl get pods,namespaces,networkpolicies -A -o yaml`
//! List, YAML or JSON), applied once; otherwise the API server (`--kubeconfig`,
//! `KUBECONFIG`, `~/.kube/config` or in-cluster), watched continuously (`netpol::live`):
//! debounced updates, each one atomic batch, a periodic drift check; the table persists
//! when the process dies unless `--persist=false` (kernel table owner flag). An
//! unreachable API server or an unconvertible object never ends the daemon and never
//! changes the table: it reports not ready and retries. `--dry-run` and `verify netpol`
//! without `--from-file` list the API server once. Every option is validated in both
//! modes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::apply;
use crate::backend::Lifetime;
use crate::error::{Error, Outcome, Result};
use crate::jobs::masquerade::MAX_FILE_BYTES;
use crate::model::Ruleset;
use crate::netpol::build::{
    DEFAULT_LOG_GROUP, DEFAULT_LOG_RATE, LogVerdicts, NetpolConfig, Observe, build_observed,
};
use crate::netpol::explain;
use crate::netpol::live::{self, FileSource, KubeSource, LiveConfig};
use crate::netpol::manifest::{self, Cluster};
use crate::parse::go_bool;
use crate::runner;

pub use crate::netpol::build::COMMAND;

/// Flags of `nftkit netpol`.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct NetpolArgs {
    /// The cluster's pods, namespaces and networkpolicies as one
    /// `kubectl get pods,namespaces,networkpolicies -A -o yaml` List (YAML or JSON; it may
    /// hold clusternetworkpolicies too); applied once
    #[arg(long, value_name = "PATH")]
    pub from_file: Option<PathBuf>,
    /// This node's name: pods whose spec.nodeName equals it are policed [env: NODE_NAME]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig for watching the API server; without it and KUBECONFIG, ~/.kube/config,
    /// else the in-cluster service account [env: KUBECONFIG]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Live mode: quiet time after a change before the table is rebuilt, so a burst of
    /// events becomes one update (a steady stream is applied at least every 10x this,
    /// and at least every second) [default: 200ms]
    #[arg(long, value_name = "DURATION")]
    pub debounce: Option<String>,
    /// Live mode: how often the kernel table is read back and re-applied if someone
    /// changed it (Go duration, or whole seconds) [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub resync_interval: Option<String>,
    /// Live mode: how long the API server may be unreachable — no complete first list of
    /// pods, namespaces and networkpolicies, or a watch failing — before the daemon logs
    /// an error (again every DURATION) and reports not ready on /readyz. It never exits
    /// for it: the existing table stays in force and the API server is retried with
    /// backoff for ever. `--dry-run` and `verify` without --from-file give up after it
    /// (exit 1) [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub sync_timeout: Option<String>,
    /// Live mode: keep the table when the process dies (SIGKILL, OOM, rolling update),
    /// re-adopted by the next start; `--persist=false` sets the kernel's table owner flag,
    /// so the table goes with the process
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub persist: bool,
    /// Log verdicts to stderr, each naming the deciding policy: none, drops (and audit
    /// mode's would-drops), or all (every policy's accepts too). The kernel hands the
    /// packets to --log-group over nfnetlink_log; live mode reads and logs them
    #[arg(long, value_name = "WHICH", value_enum, default_value = "none")]
    pub log_verdicts: LogVerdicts,
    /// Logged packets per second for the whole node (a kernel-side limit shared by every
    /// log rule) [default: 100]
    #[arg(long, value_name = "N")]
    pub log_rate: Option<String>,
    /// The nfnetlink_log group the log rules send to [default: 100]
    #[arg(long, value_name = "GROUP")]
    pub log_group: Option<String>,
    /// Audit mode: nothing is dropped; what the policies would drop is counted
    /// (verdict would-drop) and logged as would-drop. One policy alone: annotation
    /// nftkit.io/audit: "true"
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub audit: bool,
    /// With --from-file: keep running and re-read the file whenever it changes (replace it
    /// atomically, e.g. by rename); a version that does not read keeps the last good rules
    /// and reports not ready. Logs, counters and /metrics work as in live mode
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub watch: bool,
}

/// `--log-verdicts`, `--log-rate`, `--log-group` and `--audit`, validated.
pub fn observe(args: &NetpolArgs) -> Result<Observe> {
    let number = |flag: &str, raw: &Option<String>, max: u32, default: u32| -> Result<u32> {
        match raw {
            None => Ok(default),
            Some(r) => match r.trim().parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(Error::invalid(
                    flag,
                    r,
                    format!("a whole number from 1 to {max}"),
                )),
            },
        }
    };
    Ok(Observe {
        verdicts: args.log_verdicts,
        rate: number("--log-rate", &args.log_rate, 1_000_000, DEFAULT_LOG_RATE)?,
        group: number(
            "--log-group",
            &args.log_group,
            u32::from(u16::MAX),
            u32::from(DEFAULT_LOG_GROUP),
        )? as u16,
        audit: args.audit,
    })
}

/// `nftkit netpol`: the command's own flags, or one of its subcommands (`explain`).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
#[command(
    args_conflicts_with_subcommands = true,
    after_long_help = "ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2): each direction is decided on its own (egress on the source pod, ingress on the destination pod; a connection needs both), in this order:\n\
  1. Admin tier: the policies selecting the pod by subject, lowest priority first (equal priorities by name), each policy's rules in order; the first match decides: Accept (allowed), Deny (dropped), Pass (the rest of the Admin tier is skipped)\n\
  2. NetworkPolicy: a pod a NetworkPolicy selects is allowed by its rules or denied\n\
  3. Baseline tier: for pods no NetworkPolicy selects: Accept, Deny, Pass (to the default)\n\
  4. the default: allowed\n\
Live mode watches clusternetworkpolicies while the CRD is served (re-checked every --resync-interval); --from-file Lists may hold ClusterNetworkPolicy items. Not supported: the experimental nodes and domainNames peers (such an object is refused as unconvertible, never half-enforced)."
)]
pub struct NetpolCommand {
    #[command(flatten)]
    pub args: NetpolArgs,
    #[command(subcommand)]
    pub sub: Option<NetpolSub>,
}

#[derive(clap::Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum NetpolSub {
    /// Print what this node's rules decide for one flow, and the policy rule (or the
    /// default deny) that decides it; computed offline from the ruleset `netpol` programs
    #[command(
        long_about = "Print what this node's rules decide for one flow — allow or deny — and why: the policy and rule that allow it, or the default deny of an isolated pod, with the path through the chains.\n\n\
The flow's first packet runs through the very ruleset `nftkit netpol --from-file F --node-name N` would program (not a second NetworkPolicy evaluator), offline: nothing is read from or sent to the kernel. Only pods of --node-name are policed: for a flow between other nodes' pods the answer is what this node does (let it pass), and the report says so.",
        after_help = "Exit codes: 0 the flow is allowed, 4 it is denied, 2 invalid input (a bad flag, an unknown pod, a manifest error), 1 internal error.\n\n\
Example: nftkit netpol explain --from-file cluster.yaml --node-name node-1 --from shop/web --to shop/db --port 5432"
    )]
    Explain(ExplainArgs),
}

/// Flags of `nftkit netpol explain`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ExplainArgs {
    /// The cluster's pods, namespaces and networkpolicies as one
    /// `kubectl get pods,namespaces,networkpolicies -A -o yaml` List (YAML or JSON)
    #[arg(long, value_name = "PATH", required = true)]
    pub from_file: PathBuf,
    /// This node's name: whose rules decide [env: NODE_NAME]
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// Source: NAMESPACE/POD of the manifest, an IP address, or a CIDR (its first address)
    #[arg(long, value_name = "NS/POD|CIDR", required = true)]
    pub from: String,
    /// Destination: NAMESPACE/POD of the manifest, an IP address, or a CIDR (its first
    /// address)
    #[arg(long, value_name = "NS/POD|CIDR", required = true)]
    pub to: String,
    /// Destination port and protocol: 5432, 5432/tcp, 53/udp, 9000/sctp (tcp by default)
    #[arg(long, value_name = "PORT[/PROTO]", required = true)]
    pub port: String,
    /// Machine-readable output: {decision, node, from, to, protocol, port, policed_here,
    /// reason, checks: [{direction, pod, result, ...}], path: [{chain, rule, text, sets}]}
    #[arg(long)]
    pub json: bool,
}

/// Run `nftkit netpol explain`: print the explanation; the outcome is Denied (exit 4)
/// when the flow is dropped.
pub fn explain(
    args: &ExplainArgs,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn std::io::Write,
) -> Result<Outcome> {
    // Flags first (cheap, named in the error), then the manifest.
    let from = explain::parse_endpoint("--from", &args.from)?;
    let to = explain::parse_endpoint("--to", &args.to)?;
    let (port, proto) = explain::parse_port(&args.port)?;
    let cfg = parse(
        &NetpolArgs {
            from_file: Some(args.from_file.clone()),
            node_name: args.node_name.clone(),
            ..NetpolArgs::default()
        },
        env,
    )?;
    let e = explain::explain(&cfg, (&args.from, &from), (&args.to, &to), port, proto)?;
    let text = if args.json {
        format!("{}\n", e.json())
    } else {
        e.text()
    };
    out.write_all(text.as_bytes())
        .map_err(|e| Error::runtime(format!("stdout: {e}")))?;
    Ok(if e.allowed {
        Outcome::Done
    } else {
        Outcome::Denied
    })
}

/// What `nftkit netpol` reads its objects from.
#[derive(Debug, Clone)]
pub enum Source {
    File(NetpolConfig),
    Live(LiveConfig),
}

/// Whether these flags select live mode (no `--from-file`).
pub fn is_live(args: &NetpolArgs) -> bool {
    args.from_file.is_none()
}

fn duration(option: &str, raw: Option<&str>, default: &str) -> Result<Duration> {
    crate::parse::interval(option, raw.unwrap_or(default))
}

/// Validate flags and environment; read the manifest file, or the kubeconfig. Every
/// option is validated whatever the mode, so a manifest with a typo in an option the
/// mode does not use (`--from-file F --debounce fast`) fails at once, not when someone
/// later drops `--from-file`.
pub fn parse_source(args: &NetpolArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Source> {
    let node = node_name(args, env)?;
    let debounce = duration("--debounce", args.debounce.as_deref(), "200ms")?;
    let resync = duration("--resync-interval", args.resync_interval.as_deref(), "60s")?;
    let sync_timeout = duration("--sync-timeout", args.sync_timeout.as_deref(), "60s")?;
    let observe = observe(args)?;
    let flag_kube = args
        .kubeconfig
        .as_ref()
        .map(|p| live::read_kubeconfig("--kubeconfig", &p.display().to_string()))
        .transpose()?;
    if let Some(path) = &args.from_file {
        if args.watch {
            let read: fn(&Path) -> Result<Cluster> = read_manifest;
            read(path)?;
            return Ok(Source::Live(LiveConfig {
                node,
                kube: KubeSource::Infer,
                debounce,
                resync,
                sync_timeout,
                persist: args.persist,
                observe,
                file: Some(FileSource {
                    path: path.clone(),
                    read,
                }),
            }));
        }
        let cluster = read_manifest(path)?;
        return Ok(Source::File(NetpolConfig { node, cluster }));
    }
    if args.watch {
        return Err(Error::Usage(
            "netpol: --watch re-reads --from-file; without it, live mode watches the API server"
                .into(),
        ));
    }
    let kube = match (
        flag_kube,
        env("KUBECONFIG").filter(|v| !v.trim().is_empty()),
    ) {
        (Some(k), _) => k,
        (None, Some(v)) => live::read_kubeconfig("KUBECONFIG", &v)?,
        (None, None) => KubeSource::Infer,
    };
    Ok(Source::Live(LiveConfig {
        node,
        kube,
        debounce,
        resync,
        sync_timeout,
        persist: args.persist,
        observe,
        file: None,
    }))
}

/// Read `--from-file` with the input limit of masquerade's config files
/// ([`MAX_FILE_BYTES`], 16 MiB): a larger file is refused from its size, before it is read
/// (parsing holds the whole document in memory, tens of times the file's size), and a
/// file that grows while being read is cut off at the limit and refused too.
fn read_manifest(path: &Path) -> Result<Cluster> {
    let bad = |why: String| Error::invalid("--from-file", path.display(), why);
    let too_big = |n: u64| {
        bad(format!(
            "a manifest of at most {} MiB (the limit of masquerade's config files); this one is {n} bytes",
            MAX_FILE_BYTES >> 20
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("a readable file ({e})")))?;
    let meta = file
        .metadata()
        .map_err(|e| bad(format!("a readable file ({e})")))?;
    if meta.is_dir() {
        return Err(bad("a file, not a directory".into()));
    }
    if meta.is_file() && meta.len() > MAX_FILE_BYTES {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| bad(format!("a readable file ({e})")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "UTF-8 text (YAML or JSON); byte {} is not",
            e.utf8_error().valid_up_to()
        ))
    })?;
    manifest::parse(&path.display().to_string(), &text)
}

impl super::Job for NetpolArgs {
    fn name(&self) -> &'static str {
        COMMAND
    }

    fn desired(&self, cx: super::Ctx) -> Result<Ruleset> {
        desired(self, cx.env, cx.table)
    }

    fn run(&self, cx: super::Ctx, backend_for: super::BackendFor) -> Result<()> {
        run(self, cx.env, cx.table, backend_for)
    }
}

/// Run `nftkit netpol` (not `--dry-run`): apply the file once, or watch the API server
/// until SIGTERM/SIGINT.
pub fn run(
    args: &NetpolArgs,
    env: &dyn Fn(&str) -> Option<String>,
    table: &str,
    backend_for: super::BackendFor,
) -> Result<()> {
    match parse_source(args, env)? {
        Source::File(cfg) => {
            let obs = observe(args)?;
            if obs.verdicts != LogVerdicts::None || obs.audit {
                tracing::warn!(
                    "--from-file applies once: the log rules are in place but no nftkit reads --log-group (live mode does)"
                );
            }
            let rs = log_build(&cfg, table, &obs);
            apply::one_shot(backend_for(Lifetime::Persist)?.as_mut(), &rs)
        }
        Source::Live(cfg) => {
            let stop = runner::stop_on_signals()?;
            live::run(&cfg, table, backend_for, &stop)
        }
    }
}

/// `--node-name` or `NODE_NAME`, validated.
fn node_name(args: &NetpolArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
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
    Ok(node.1)
}

/// Validate flags and environment, read and validate the manifest file (`--from-file`).
pub fn parse(args: &NetpolArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<NetpolConfig> {
    let Some(_) = &args.from_file else {
        node_name(args, env)?;
        return Err(Error::Usage(
            "netpol: this needs --from-file PATH (live mode reads the API server)".into(),
        ));
    };
    match parse_source(args, env)? {
        Source::File(cfg) => Ok(cfg),
        Source::Live(_) => Err(Error::Usage(
            "netpol: this needs --from-file PATH (live mode reads the API server)".into(),
        )),
    }
}

/// The desired table for these flags: from the file, or from one list of the API server
/// (`--dry-run`, `verify`).
pub fn desired(
    args: &NetpolArgs,
    env: &dyn Fn(&str) -> Option<String>,
    table: &str,
) -> Result<Ruleset> {
    let cfg = match parse_source(args, env)? {
        Source::File(cfg) => cfg,
        Source::Live(live_cfg) => NetpolConfig {
            cluster: live::fetch_once(&live_cfg)?,
            node: live_cfg.node,
        },
    };
    Ok(log_build(&cfg, table, &observe(args)?))
}

fn log_build(cfg: &NetpolConfig, table: &str, obs: &Observe) -> Ruleset {
    let (rs, s) = build_observed(cfg, table, obs);
    tracing::info!(
        node = %cfg.node,
        pods = cfg.cluster.pods.len(),
        local_pods = s.local_pods,
        policies = cfg.cluster.policies.len(),
        policies_applied = s.policies,
        cluster_policies = s.cluster_policies,
        ingress_isolated = s.ingress_isolated,
        egress_isolated = s.egress_isolated,
        rules = rs.rule_count(),
        sets = rs.sets.len(),
        "netpol desired state"
    );
    rs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(from_file: Option<&str>) -> NetpolArgs {
        NetpolArgs {
            node_name: Some("node-1".into()),
            from_file: from_file.map(PathBuf::from),
            ..NetpolArgs::default()
        }
    }

    #[test]
    fn watch_needs_from_file_and_log_options_are_validated() {
        let none = |_: &str| None;
        let mut a = args(None);
        a.watch = true;
        let e = parse_source(&a, &none).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--watch"), "{e}");
        for (rate, group) in [(Some("0"), None), (Some("x"), None), (None, Some("65536"))] {
            let mut a = args(None);
            a.log_rate = rate.map(Into::into);
            a.log_group = group.map(Into::into);
            let e = observe(&a).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{e}");
            assert!(e.to_string().contains("--log-"), "{e}");
        }
        let o = observe(&args(None)).unwrap();
        assert_eq!((o.rate, o.group, o.audit), (100, 100, false));
    }
}
