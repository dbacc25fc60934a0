//! `nftkit masquerade`: drop-in for Azure/ip-masq-agent-v2 (a node DaemonSet).
//!
//! Table `inet nftkit-masquerade`; base chain `nat-postrouting` (type nat, hook
//! postrouting, priority srcnat = 100) sends every packet whose destination is not an
//! address of this host to the `--masq-chain` chain, which mirrors upstream's chain:
//!
//! ```text
//! chain nat-postrouting {
//!     type nat hook postrouting priority 100; policy accept;
//!     meta nfproto ipv4 fib daddr type != local jump IP-MASQ-AGENT   # no nfproto with --enable-ipv6
//! }
//! chain IP-MASQ-AGENT {
//!     ip daddr 169.254.0.0/16 return      # unless masqLinkLocal
//!     ip daddr @nomasq-v4 return          # nonMasqueradeCIDRs (IPv4)
//!     ip6 daddr fe80::/10 return          # --enable-ipv6, unless masqLinkLocalIPv6
//!     ip6 daddr @nomasq-v6 return         # --enable-ipv6: nonMasqueradeCIDRs (IPv6)
//!     masquerade                          # or `masquerade fully-random` (--random-fully)
//! }
//! ```
//! iptables equivalent (upstream): `-t nat -A POSTROUTING -m addrtype ! --dst-type LOCAL
//! -j IP-MASQ-AGENT`, then one `-d CIDR -j RETURN` per CIDR and a final `-j MASQUERADE`.
//! Without `--enable-ipv6` IPv6 packets never enter the chain (upstream did not call
//! ip6tables then), so the chain itself needs no family guard.
//!
//! Configuration (upstream's, see CONTRACT.md): every entry of `--config-dir` whose name
//! starts with `ip-masq`, YAML or JSON, keys `nonMasqueradeCIDRs`, `masqLinkLocal`,
//! `masqLinkLocalIPv6` (matched case-insensitively, as Go's encoding/json does). CIDR lists
//! are unioned, booleans OR-ed; defaults (RFC 1918, or the 11 reserved ranges with
//! `--nomasq-all-reserved-ranges`) only when no such file exists. Files that disagree on a
//! boolean or repeat a CIDR are reported (log and `status`); the merge stays upstream's.

mod config_dir;
mod file;
mod job;
mod merge;
mod report;
#[cfg(test)]
mod testutil;

pub use config_dir::{RawFile, read_config_dir};
pub use file::{cidr, parse_file};
pub use job::MasqJob;
pub use merge::{defaults, load, load_from, merge};
pub use report::{Report, read_report, status_lines};

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::{Error, Result};
use crate::model::*;
use crate::runner;
use report::state_path;

pub const COMMAND: &str = "masquerade";
/// The base chain holding the jump (`-t nat POSTROUTING` upstream).
pub const BASE_CHAIN: &str = "nat-postrouting";
pub const SET_V4: &str = "nomasq-v4";
pub const SET_V6: &str = "nomasq-v6";
/// Upstream reads every directory entry whose name starts with this.
pub const FILE_PREFIX: &str = "ip-masq";
/// Larger config files are refused (50 000 CIDRs in YAML are about 1.2 MB).
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Where daemons leave their report for `status` (override: NFTKIT_STATE_DIR).
pub const DEFAULT_STATE_DIR: &str = "/run/nftkit";

const LINK_LOCAL_V4: Ipv4Net = ipv4net(Ipv4Addr::new(169, 254, 0, 0), 16);
const LINK_LOCAL_V6: Ipv6Net = ipv6net(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10);

const fn ipv4net(a: Ipv4Addr, len: u8) -> Ipv4Net {
    match Ipv4Net::new(a, len) {
        Ok(n) => n,
        Err(_) => panic!("bad constant prefix"),
    }
}

const fn ipv6net(a: Ipv6Addr, len: u8) -> Ipv6Net {
    match Ipv6Net::new(a, len) {
        Ok(n) => n,
        Err(_) => panic!("bad constant prefix"),
    }
}

/// Flags of `nftkit masquerade`: upstream's (ip-masq-agent-v2 reads no environment
/// variables), v1's `--config-dir` / `--random-fully`, and nftkit's `--once` / `--persist`.
/// Boolean flags also take Go's `--flag=BOOL` form, in the spellings of Go's
/// `strconv.ParseBool` ([`crate::parse::go_bool`]: `1`, `t`, `true`, `TRUE`, `0`, `f`, ...),
/// as upstream's pflag reads them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct MasqueradeArgs {
    /// Name of the chain holding the RETURN and MASQUERADE rules
    #[arg(long, value_name = "NAME", default_value = "IP-MASQ-AGENT")]
    pub masq_chain: String,
    /// Without config files, exempt all reserved IPv4 ranges (not only RFC 1918)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = crate::parse::go_bool)]
    pub nomasq_all_reserved_ranges: bool,
    /// Also masquerade IPv6 and accept IPv6 CIDRs in the config
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = crate::parse::go_bool)]
    pub enable_ipv6: bool,
    /// Time between config re-reads and kernel checks: whole seconds, as upstream, or a Go
    /// duration (90s, 2m)
    #[arg(long, value_name = "SECONDS", default_value = "60")]
    pub resync_interval: String,
    /// Directory with the ip-masq* config files (a ConfigMap volume)
    #[arg(long, value_name = "DIR", default_value = "/etc/config")]
    pub config_dir: PathBuf,
    /// Apply once and exit instead of reconciling every interval
    #[arg(long)]
    pub once: bool,
    /// Masquerade with fully randomised source ports (ip-masq-agent v1's --random-fully)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "false", default_missing_value = "true",
          value_parser = crate::parse::go_bool)]
    pub random_fully: bool,
    /// Keep the table when the daemon dies (SIGKILL, OOM, restart), as upstream's iptables
    /// rules stay; --persist=false ties it to the process (kernel table owner flag)
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_value = "true", default_missing_value = "true",
          value_parser = crate::parse::go_bool)]
    pub persist: bool,
}

impl Default for MasqueradeArgs {
    fn default() -> Self {
        MasqueradeArgs {
            masq_chain: "IP-MASQ-AGENT".into(),
            nomasq_all_reserved_ranges: false,
            enable_ipv6: false,
            resync_interval: "60".into(),
            config_dir: PathBuf::from("/etc/config"),
            once: false,
            random_fully: false,
            persist: true,
        }
    }
}

/// Validated flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub masq_chain: String,
    pub all_reserved: bool,
    pub enable_ipv6: bool,
    pub interval: Duration,
    pub config_dir: PathBuf,
    pub random_fully: bool,
}

/// The merged configuration the rules are built from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MasqConfig {
    /// Non-masquerade IPv4 destinations, merged (no overlaps), sorted.
    pub v4: Vec<Ipv4Net>,
    /// Non-masquerade IPv6 destinations (only with --enable-ipv6).
    pub v6: Vec<Ipv6Net>,
    pub masq_link_local: bool,
    pub masq_link_local_ipv6: bool,
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No `ip-masq*` file: upstream's defaults.
    Defaults { dir_missing: bool },
    /// These files (paths as listed in the config dir, sorted).
    Files(Vec<PathBuf>),
}

/// A loaded and merged configuration with what the log and `status` report about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: MasqConfig,
    pub source: Source,
    /// Files that disagree on a boolean or repeat a CIDR (warnings).
    pub conflicts: Vec<String>,
    /// Worth an info line: defaults dropped by a file without CIDRs, missing directory.
    pub notices: Vec<String>,
}

/// One parsed config file, before merging.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileConfig {
    pub path: PathBuf,
    /// In file order, duplicates kept (conflict detection needs them).
    pub cidrs: Vec<IpNet>,
    /// `None` when the file does not set the key.
    pub masq_link_local: Option<bool>,
    pub masq_link_local_ipv6: Option<bool>,
}

/// Validate the flags.
pub fn settings(args: &MasqueradeArgs) -> Result<Settings> {
    let chain = args.masq_chain.as_str();
    // nft's identifier syntax, so the --dry-run text loads with `nft -f` too.
    let ok = !chain.is_empty()
        && chain.len() <= 255
        && chain.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '.')
        && chain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.".contains(c));
    if !ok {
        return Err(Error::invalid(
            "--masq-chain",
            chain,
            "expected a chain name of letters, digits, '-', '_', '.', '/' starting with a letter (at most 255)",
        ));
    }
    if chain == BASE_CHAIN {
        return Err(Error::invalid(
            "--masq-chain",
            chain,
            format!("{BASE_CHAIN} is the base chain's own name; choose another"),
        ));
    }
    let interval = crate::parse::interval("--resync-interval", &args.resync_interval)?;
    Ok(Settings {
        masq_chain: chain.to_string(),
        all_reserved: args.nomasq_all_reserved_ranges,
        enable_ipv6: args.enable_ipv6,
        interval,
        config_dir: args.config_dir.clone(),
        random_fully: args.random_fully,
    })
}

/// An error about the config file `path`, on one line.
fn file_error(path: &Path, why: impl std::fmt::Display) -> Error {
    Error::invalid("config file", path.display(), one_line(&why.to_string()))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

// ---------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------

fn ret(m: Match) -> Rule {
    Rule {
        matches: vec![m],
        action: Action::Return,
    }
}

/// The owned table for `cfg`. Pure.
pub fn build(cfg: &MasqConfig, s: &Settings, table: &str) -> Ruleset {
    let mut sets = vec![Set {
        name: SET_V4.into(),
        key: KeyType::Ipv4Addr,
        interval: true,
        elements: cfg.v4.iter().copied().map(Element::V4).collect(),
    }];
    let mut rules = Vec::new();
    if !cfg.masq_link_local {
        rules.push(ret(Match::Daddr(IpNet::V4(LINK_LOCAL_V4))));
    }
    rules.push(ret(Match::DaddrInSet {
        family: IpFamily::V4,
        set: SET_V4.into(),
    }));
    let mut jump = Vec::new();
    if s.enable_ipv6 {
        sets.push(Set {
            name: SET_V6.into(),
            key: KeyType::Ipv6Addr,
            interval: true,
            elements: cfg.v6.iter().copied().map(Element::V6).collect(),
        });
        if !cfg.masq_link_local_ipv6 {
            rules.push(ret(Match::Daddr(IpNet::V6(LINK_LOCAL_V6))));
        }
        rules.push(ret(Match::DaddrInSet {
            family: IpFamily::V6,
            set: SET_V6.into(),
        }));
    } else {
        // IPv6 is left alone entirely, as upstream without --enable-ipv6.
        jump.push(Match::NfProto(IpFamily::V4));
    }
    rules.push(Rule {
        matches: Vec::new(),
        action: Action::Masquerade {
            fully_random: s.random_fully,
        },
    });
    jump.push(Match::FibDaddrLocal { negate: true });
    Ruleset {
        table: table.to_string(),
        comment: format!("managed by nftkit {COMMAND}"),
        sets,
        maps: Vec::new(),
        chains: vec![
            Chain {
                name: BASE_CHAIN.into(),
                base: Some(BaseChain {
                    kind: ChainType::Nat,
                    hook: Hook::Postrouting,
                    priority: priority::SRCNAT,
                }),
                rules: vec![Rule {
                    matches: jump,
                    action: Action::Jump(s.masq_chain.clone()),
                }],
            },
            Chain {
                name: s.masq_chain.clone(),
                base: None,
                rules,
            },
        ],
    }
}

// ---------------------------------------------------------------------------
// Logging, status report, running
// ---------------------------------------------------------------------------

/// At most this many conflicts are logged one by one.
const CONFLICTS_LOGGED: usize = 10;

fn log_loaded(l: &Loaded, s: &Settings) {
    let files = match &l.source {
        Source::Files(f) => f
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        Source::Defaults { .. } => format!(
            "none (defaults: {})",
            if s.all_reserved {
                "all reserved ranges"
            } else {
                "RFC 1918"
            }
        ),
    };
    tracing::info!(
        config_dir = %s.config_dir.display(),
        files = %files,
        nomasq_v4 = l.config.v4.len(),
        nomasq_v6 = l.config.v6.len(),
        masq_link_local = l.config.masq_link_local,
        masq_link_local_ipv6 = l.config.masq_link_local_ipv6,
        enable_ipv6 = s.enable_ipv6,
        "masquerade configuration"
    );
    for n in &l.notices {
        if matches!(l.source, Source::Defaults { dir_missing: true }) {
            tracing::warn!("{n}");
        } else {
            tracing::info!("notice: {n}");
        }
    }
    for c in l.conflicts.iter().take(CONFLICTS_LOGGED) {
        tracing::warn!("conflicting configuration: {c}");
    }
    if l.conflicts.len() > CONFLICTS_LOGGED {
        tracing::warn!(
            "conflicting configuration: {} more conflicts not shown",
            l.conflicts.len() - CONFLICTS_LOGGED
        );
    }
}

impl super::Job for MasqueradeArgs {
    fn name(&self) -> &'static str {
        COMMAND
    }

    fn desired(&self, cx: super::Ctx) -> Result<Ruleset> {
        desired(self, cx.table)
    }

    fn run(&self, cx: super::Ctx, backend_for: super::BackendFor) -> Result<()> {
        run(self, cx.table, cx.env, backend_for)
    }
}

/// The desired table for `verify` and `--dry-run` (logs like a run would).
pub fn desired(args: &MasqueradeArgs, table: &str) -> Result<Ruleset> {
    let s = settings(args)?;
    let started = std::time::Instant::now();
    let l = load(&s)?;
    let rs = build(&l.config, &s, table);
    tracing::debug!(
        elapsed_us = started.elapsed().as_micros() as u64,
        "config read and built"
    );
    log_loaded(&l, &s);
    Ok(rs)
}

/// `nftkit masquerade`: validate everything first (exit 2 touches nothing), then apply
/// and, unless `--once`, reconcile every `--resync-interval` until SIGTERM/SIGINT.
pub fn run(
    args: &MasqueradeArgs,
    table: &str,
    env: &dyn Fn(&str) -> Option<String>,
    backend_for: super::BackendFor,
) -> Result<()> {
    let s = settings(args)?;
    let interval = s.interval;
    // Only a daemon leaves a report (a one-shot run logs everything it would say).
    let report_path = if args.once {
        None
    } else {
        state_path(table, env)
    };
    let mut job = MasqJob::new(s, table, report_path.clone(), args.persist);
    let result = job.reload().and_then(|first| {
        job.primed = Some(first);
        run_job(args, &mut job, interval, backend_for)
    });
    if let Some(path) = report_path.filter(|_| !args.persist) {
        // The table dies with this process (owner flag): so does its report.
        let _ = std::fs::remove_file(path);
    }
    result
}

fn run_job(
    args: &MasqueradeArgs,
    job: &mut MasqJob,
    interval: Duration,
    backend_for: super::BackendFor,
) -> Result<()> {
    let stop = runner::stop_on_signals()?;
    let opts = runner::LoopOptions {
        interval,
        once: args.once,
        persist: args.persist,
    };
    let mut backend = backend_for(opts.lifetime())?;
    let result = runner::run(backend.as_mut(), job, &opts, &stop);
    if let Err(e) = &result {
        let mut r = job.report.clone();
        r.config_error = Some(e.to_string());
        job.set_report(r);
    }
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn flags_validated() {
        let ok = settings(&MasqueradeArgs::default()).unwrap();
        assert_eq!(ok.interval, Duration::from_secs(60));
        assert_eq!(ok.masq_chain, "IP-MASQ-AGENT");
        for (args, needle) in [
            (
                MasqueradeArgs {
                    resync_interval: "0".into(),
                    ..Default::default()
                },
                "--resync-interval",
            ),
            (
                MasqueradeArgs {
                    resync_interval: "60 s".into(),
                    ..Default::default()
                },
                "--resync-interval",
            ),
            (
                MasqueradeArgs {
                    masq_chain: "".into(),
                    ..Default::default()
                },
                "--masq-chain",
            ),
            (
                MasqueradeArgs {
                    masq_chain: "bad chain".into(),
                    ..Default::default()
                },
                "--masq-chain",
            ),
            (
                MasqueradeArgs {
                    masq_chain: BASE_CHAIN.into(),
                    ..Default::default()
                },
                "--masq-chain",
            ),
        ] {
            let e = settings(&args).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn booleans_take_go_forms_only() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: MasqueradeArgs,
        }
        let args = |argv: &[&str]| {
            let mut v = vec!["t"];
            v.extend_from_slice(argv);
            T::try_parse_from(v).map(|t| t.a)
        };
        for flag in [
            "--enable-ipv6",
            "--nomasq-all-reserved-ranges",
            "--random-fully",
        ] {
            let get = |a: &MasqueradeArgs| match flag {
                "--enable-ipv6" => a.enable_ipv6,
                "--nomasq-all-reserved-ranges" => a.nomasq_all_reserved_ranges,
                _ => a.random_fully,
            };
            assert!(!get(&args(&[]).unwrap()), "{flag} defaults to false");
            assert!(get(&args(&[flag]).unwrap()), "{flag}");
            for (value, want) in [
                ("T", true),
                ("1", true),
                ("true", true),
                ("FALSE", false),
                ("0", false),
                ("f", false),
            ] {
                let a = args(&[&format!("{flag}={value}")]);
                assert_eq!(a.as_ref().map(get).ok(), Some(want), "{flag}={value}");
            }
            // Go's flag package refuses these; clap's Boolish parser took them.
            for value in ["yes", "on", "no", "off", "y", ""] {
                assert!(
                    args(&[&format!("{flag}={value}")]).is_err(),
                    "{flag}={value} accepted"
                );
            }
        }
    }

    fn rules(rs: &Ruleset, chain: &str) -> Vec<String> {
        rs.chains
            .iter()
            .find(|c| c.name == chain)
            .unwrap()
            .rules
            .iter()
            .map(crate::render::rule_text)
            .collect()
    }

    #[test]
    fn build_rules_like_upstream() {
        let s = st(Path::new("/x"), false, false);
        // Empty config: link-local return, empty set, masquerade; IPv4 only.
        let rs = build(&MasqConfig::default(), &s, "nftkit-masquerade");
        assert_eq!(
            rules(&rs, BASE_CHAIN),
            ["meta nfproto ipv4 fib daddr type != local jump IP-MASQ-AGENT"]
        );
        assert_eq!(
            rules(&rs, "IP-MASQ-AGENT"),
            [
                "ip daddr 169.254.0.0/16 return",
                "ip daddr @nomasq-v4 return",
                "masquerade"
            ]
        );
        assert!(rs.set(SET_V4).unwrap().elements.is_empty());
        assert!(rs.set(SET_V6).is_none());
        let base = rs.chains[0].base.unwrap();
        assert_eq!(
            (base.kind, base.hook, base.priority),
            (ChainType::Nat, Hook::Postrouting, 100)
        );

        // IPv6 with masqLinkLocal (IPv4) and random-fully, custom chain.
        let s6 = Settings {
            enable_ipv6: true,
            random_fully: true,
            masq_chain: "IP-MASQ".into(),
            ..s.clone()
        };
        let cfg = MasqConfig {
            v4: vec!["10.0.0.0/8".parse().unwrap()],
            v6: vec!["fc00::/7".parse().unwrap()],
            masq_link_local: true,
            masq_link_local_ipv6: false,
        };
        let rs = build(&cfg, &s6, "t");
        assert_eq!(
            rules(&rs, BASE_CHAIN),
            ["fib daddr type != local jump IP-MASQ"]
        );
        assert_eq!(
            rules(&rs, "IP-MASQ"),
            [
                "ip daddr @nomasq-v4 return",
                "ip6 daddr fe80::/10 return",
                "ip6 daddr @nomasq-v6 return",
                "masquerade fully-random"
            ]
        );
        assert_eq!(rs.set(SET_V6).unwrap().elements.len(), 1);
        // masqLinkLocalIPv6: no fe80::/10 rule.
        let cfg = MasqConfig {
            masq_link_local_ipv6: true,
            ..cfg
        };
        assert!(
            !rules(&build(&cfg, &s6, "t"), "IP-MASQ")
                .iter()
                .any(|r| r.contains("fe80"))
        );
    }
}
