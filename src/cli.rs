//! Command line: global options and one subcommand per job (CONTRACT.md).

use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::BackendChoice;
use crate::error::Error;
use crate::jobs::Job;
use crate::jobs::dnat::DnatArgs;
use crate::jobs::local_address::LocalAddressArgs;
use crate::jobs::masquerade::MasqueradeArgs;
use crate::jobs::netpol::{NetpolArgs, NetpolCommand};
use crate::jobs::redirect::RedirectArgs;

/// The help heading of the options every command takes, listed apart from a command's
/// own (as kubectl does).
const GLOBAL: &str = "Global options";

#[derive(Parser, Debug)]
#[command(
    name = "nftkit",
    version,
    about = "Kubernetes node and pod packet rules over nf_tables netlink (no iptables or nft binary needed)",
    after_help = "Exit codes: 0 done, 1 runtime failure (kernel unchanged), 2 invalid input (nothing sent), 3 verify found drift, 4 netpol explain: the flow is denied."
)]
pub struct Cli {
    /// Which packet-filter backend to program
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "NFTKIT_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub backend: BackendChoice,
    /// Validate and print the ruleset that would be committed (nft syntax); touch nothing
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub dry_run: bool,
    /// Name of the owned table [default: nftkit-<command>]
    #[arg(long, global = true,
        help_heading = GLOBAL, env = "NFTKIT_TABLE", value_name = "NAME")]
    pub table: Option<String>,
    /// Log line format on stderr
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "NFTKIT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true,
        help_heading = GLOBAL, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true, help_heading = GLOBAL)]
    pub quiet: bool,
    /// Replace or delete a same-named table even if it lacks nftkit's ownership comment
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub force: bool,
    /// Daemons: serve /metrics, /healthz and /readyz on PORT (127.0.0.1) or ADDRESS:PORT
    #[arg(long, global = true,
        help_heading = GLOBAL, env = "NFTKIT_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Transparent redirect of a pod's egress TCP (drop-in for kubernetes-qpoint-init)
    Redirect(RedirectArgs),
    /// MASQUERADE node egress except non-masquerade CIDRs from config files (drop-in for
    /// ip-masq-agent-v2)
    Masquerade(MasqueradeArgs),
    /// Keep an address on an interface, with NOTRACK/ACCEPT rules for IP:PORT (drop-in for
    /// the gardener apiserver-proxy sidecar)
    LocalAddress(LocalAddressArgs),
    /// DNAT ORIG_IP:PORT to TARGET_IP:PORT for host processes and routed pods (the
    /// gke-metadata-server routing mode)
    Dnat(DnatArgs),
    /// Kubernetes NetworkPolicy (networking.k8s.io/v1) and ClusterNetworkPolicy
    /// (policy.networking.k8s.io/v1alpha2: Admin tier before NetworkPolicy, Baseline tier
    /// after it) for the pods of this node; `netpol explain` tells what the rules decide
    /// for one flow
    Netpol(NetpolCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the top-level man page (roff), or write one page per command into a directory
    Man {
        /// Write nftkit.1, nftkit-redirect.1, ... (every command and verify's targets) into
        /// DIR (created if missing) and list the files, instead of printing nftkit.1
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// List what nftkit owns on this host
    Status {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
    /// Compare the kernel with a command's desired state; exit 3 and print the diff on drift
    Verify {
        #[command(subcommand)]
        target: JobCommand,
    },
    /// Remove what one command (or --all) owns, nothing else
    Delete {
        /// The command whose table to remove
        #[arg(value_enum, required_unless_present = "all", conflicts_with = "all")]
        command: Option<JobName>,
        /// Remove every table nftkit owns
        #[arg(long)]
        all: bool,
    },
    /// Report what on this host can defeat nftkit's rules: other tables' drop chains at
    /// nftkit's hooks, iptables-legacy rules, firewalld, sysctls, conntrack usage
    #[command(
        long_about = "Report what on this host can defeat nftkit's rules, each finding with its consequence and what to do:\n\n\
- other tables' base chains at the hooks nftkit uses, with their priority relative to nftkit's chains and their policy; one with policy drop or drop/reject rules interferes, because an accept in nftkit's table ends only nftkit's own chain\n\
- iptables-legacy rules or DROP policies (they run next to nf_tables)\n\
- firewalld's table\n\
- net.ipv4.ip_forward (needed by masquerade, dnat and netpol), IPv6 forwarding, strict rp_filter\n\
- conntrack table usage (nf_conntrack_count against nf_conntrack_max)\n\n\
Reads the kernel over netlink and /proc (never runs nft); needs CAP_NET_ADMIN. Changes nothing.",
        after_help = "Exit codes: 0 nothing found would interfere (notes may be printed), 1 something would (or the kernel could not be read), 2 invalid arguments."
    )]
    Doctor {
        /// Machine-readable output: {interferes, jobs, findings: [{severity, kind, subject, consequence, action, jobs}], facts}
        #[arg(long)]
        json: bool,
    },
    /// Print which backend `--backend auto` picks here, and the evidence
    Detect {
        /// Machine-readable output
        #[arg(long)]
        json: bool,
    },
}

/// The commands `verify` can check, with the same options as the command itself.
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Check the table `nftkit redirect` with these options would program
    Redirect(RedirectArgs),
    /// Check the table `nftkit masquerade` with these options would program
    Masquerade(MasqueradeArgs),
    /// Check the address and table `nftkit local-address` with these options would program
    LocalAddress(LocalAddressArgs),
    /// Check the table `nftkit dnat` with these options would program
    Dnat(DnatArgs),
    /// Check the table `nftkit netpol` with these options would program
    Netpol(NetpolArgs),
}

impl JobCommand {
    pub fn job(&self) -> &dyn Job {
        match self {
            JobCommand::Redirect(a) => a,
            JobCommand::Masquerade(a) => a,
            JobCommand::LocalAddress(a) => a,
            JobCommand::Dnat(a) => a,
            JobCommand::Netpol(a) => a,
        }
    }
}

impl Command {
    /// The job this command runs, if it is one.
    pub fn job(&self) -> Option<&dyn Job> {
        match self {
            Command::Redirect(a) => Some(a),
            Command::Masquerade(a) => Some(a),
            Command::LocalAddress(a) => Some(a),
            Command::Dnat(a) => Some(a),
            Command::Netpol(a) => a.sub.is_none().then_some(&a.args as &dyn Job),
            Command::Completions { .. }
            | Command::Man { .. }
            | Command::Status { .. }
            | Command::Verify { .. }
            | Command::Delete { .. }
            | Command::Doctor { .. }
            | Command::Detect { .. } => None,
        }
    }
}

/// The shell completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "nftkit",
        &mut buf,
    );
    buf
}

impl Cli {
    /// `--table`, validated, or `nftkit-<command>`.
    pub fn table_for(&self, command: &str) -> Result<String, Error> {
        match &self.table {
            None => Ok(format!("nftkit-{command}")),
            Some(t) => {
                let ok = !t.is_empty()
                    && t.len() < 256
                    && t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
                if ok {
                    Ok(t.clone())
                } else {
                    Err(Error::invalid(
                        "--table",
                        t,
                        "expected a name of letters, digits, '_', '-', '.' starting with a letter",
                    ))
                }
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobName {
    Redirect,
    Masquerade,
    LocalAddress,
    Dnat,
    Netpol,
}

impl JobName {
    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Redirect => "redirect",
            JobName::Masquerade => "masquerade",
            JobName::LocalAddress => "local-address",
            JobName::Dnat => "dnat",
            JobName::Netpol => "netpol",
        }
    }
}

/// Subcommands that replace Go programs, whose manifests write flags Go's way.
const GO_COMMANDS: [&str; 4] = ["masquerade", "local-address", "dnat", "netpol"];

/// klog's flags (the Go tools we replace all log through klog or glog): boolean ones take
/// `-flag` or `-flag=BOOL`, the others `-flag=VALUE` or `-flag VALUE`. nftkit logs to
/// stderr and has its own verbosity, so they are accepted and dropped, except `v`.
const KLOG_BOOLS: [&str; 6] = [
    "logtostderr",
    "alsologtostderr",
    "add_dir_header",
    "skip_headers",
    "skip_log_headers",
    "one_output",
];
const KLOG_VALUES: [&str; 7] = [
    "v",
    "log_dir",
    "log_file",
    "log_file_max_size",
    "stderrthreshold",
    "vmodule",
    "log_backtrace_at",
];

/// The command line as clap should see it, from one that upstream manifests of the Go
/// tools may have written (CONTRACT Packaging):
///
/// - klog/glog flags (`--v=2`, `-logtostderr`, `--log_dir=/x`, `-alsologtostderr=false`),
///   before the subcommand for every command and after a Go-derived one, are dropped;
///   `v` sets nftkit's verbosity the way klog's levels read: 0-3 info (the default), 4-5
///   debug (`-v`), 6 and more trace (`-vv`). `-v` alone stays nftkit's own `-v`.
/// - After a Go-derived subcommand, a single-dash token naming one of its long options
///   (up to `=`) becomes the double-dash form (`-enable-ipv6`, `-sync-interval=30s`).
///
/// Nothing after `--` is rewritten. An invalid klog value (`--v=x`,
/// `--logtostderr=maybe`) is an error naming the flag, as Go's flag package exits 2 for it.
pub fn normalize_args(
    args: Vec<std::ffi::OsString>,
) -> std::result::Result<Vec<std::ffi::OsString>, String> {
    normalize_args_for(&<Cli as clap::CommandFactory>::command(), args)
}

/// Why a command line was refused: a klog flag's value ([`normalize_args`]) or clap's
/// verdict (which includes `--help` and `--version`).
#[derive(Debug)]
pub enum ArgsError {
    Klog(String),
    Clap(clap::Error),
}

/// The command line parsed: [`normalize_args`], then clap, over one command tree (building
/// it is most of a small run's own start-up cost, so it is built once, and not freed:
/// the process ends soon, or lives on as a daemon, either way it would not be reused).
pub fn parse_args(args: Vec<std::ffi::OsString>) -> std::result::Result<Cli, ArgsError> {
    use clap::{CommandFactory, FromArgMatches};
    let root = Box::leak(Box::new(Cli::command()));
    let argv = normalize_args_for(root, args).map_err(ArgsError::Klog)?;
    let mut matches = root
        .try_get_matches_from_mut(argv)
        .map_err(ArgsError::Clap)?;
    Cli::from_arg_matches_mut(&mut matches).map_err(|e| ArgsError::Clap(e.format(root)))
}

fn normalize_args_for(
    root: &clap::Command,
    args: Vec<std::ffi::OsString>,
) -> std::result::Result<Vec<std::ffi::OsString>, String> {
    // None: before the job's subcommand; Some(names): after a Go-derived one (its long
    // options and the global ones); Some(empty) after another command or after `--`.
    let mut longs: Option<Vec<String>> = None;
    let mut klog = true;
    let mut out = Vec::with_capacity(args.len());
    let mut args = args.into_iter().enumerate();
    while let Some((i, arg)) = args.next() {
        let Some(t) = arg.to_str().map(str::to_string) else {
            out.push(arg);
            continue;
        };
        if t == "--" {
            out.push(arg);
            out.extend(args.map(|(_, a)| a));
            break;
        }
        if i > 0 && longs.is_none() && !t.starts_with('-') {
            if GO_COMMANDS.contains(&t.as_str()) {
                longs = root.find_subcommand(&t).map(|c| {
                    c.get_arguments()
                        .filter_map(|a| a.get_long().map(str::to_string))
                        .chain(
                            root.get_arguments()
                                .filter(|a| a.is_global_set())
                                .filter_map(|a| a.get_long().map(str::to_string)),
                        )
                        .collect()
                });
            } else if root.find_subcommand(&t).is_some() && t != "verify" {
                // Not a Go tool: its arguments stay as written.
                longs = Some(Vec::new());
                klog = false;
            }
            out.push(arg);
            continue;
        }
        if klog && let Some(dropped) = klog_flag(&t, &mut args)? {
            out.extend(dropped.into_iter().map(Into::into));
            continue;
        }
        match &longs {
            Some(names)
                if t.starts_with('-')
                    && !t.starts_with("--")
                    && names.iter().any(|n| {
                        let name = t[1..].split('=').next().unwrap_or("");
                        name == n && (name.len() > 1 || t.contains('='))
                    }) =>
            {
                out.push(format!("-{t}").into());
            }
            _ => out.push(arg),
        }
    }
    Ok(out)
}

/// If `t` is a klog flag, consume it (and its separate value from `rest`) and return what
/// replaces it: nothing, or nftkit's `-v`/`-vv` for `v`.
fn klog_flag(
    t: &str,
    rest: &mut impl Iterator<Item = (usize, std::ffi::OsString)>,
) -> std::result::Result<Option<Vec<String>>, String> {
    let Some(body) = t.strip_prefix("--").or_else(|| t.strip_prefix('-')) else {
        return Ok(None);
    };
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v.to_string())),
        None => (body, None),
    };
    let bad = |v: &str, why: &str| format!("invalid klog flag {t:?}: value {v:?}, expected {why}");
    if KLOG_BOOLS.contains(&name) {
        if let Some(v) = &value {
            crate::parse::go_bool(v).map_err(|_| bad(v, "true or false"))?;
        }
        return Ok(Some(Vec::new()));
    }
    // `-v` without a value is nftkit's own verbosity flag.
    if !KLOG_VALUES.contains(&name) || (name == "v" && value.is_none() && !t.starts_with("--")) {
        return Ok(None);
    }
    let value = match value {
        Some(v) => v,
        None => match rest.next().map(|(_, a)| a.into_string()) {
            Some(Ok(v)) => v,
            _ => return Err(format!("klog flag {t} needs a value")),
        },
    };
    if name != "v" {
        return Ok(Some(Vec::new()));
    }
    let level: u32 = value
        .trim()
        .parse()
        .map_err(|_| bad(&value, "a verbosity level such as 2"))?;
    Ok(Some(match level {
        0..=3 => Vec::new(),
        4 | 5 => vec!["-v".into()],
        _ => vec!["-vv".into()],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forms(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(Into::into).collect())
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn go_single_dash_flags_become_long_flags_after_go_commands() {
        assert_eq!(
            forms(&[
                "nftkit",
                "masquerade",
                "-enable-ipv6",
                "-v=2",
                "-masq-chain=X",
                "-v"
            ]),
            [
                "nftkit",
                "masquerade",
                "--enable-ipv6",
                "--masq-chain=X",
                "-v"
            ]
        );
        assert_eq!(
            forms(&[
                "nftkit",
                "local-address",
                "-ip-address",
                "10.0.0.1",
                "-daemon=false"
            ]),
            [
                "nftkit",
                "local-address",
                "--ip-address",
                "10.0.0.1",
                "--daemon=false"
            ]
        );
        // Global long options too; unknown names, redirect (not a Go tool) and values stay.
        assert_eq!(
            forms(&["nftkit", "dnat", "-dry-run", "-nope", "-map", "-1"]),
            ["nftkit", "dnat", "--dry-run", "-nope", "--map", "-1"]
        );
        assert_eq!(
            forms(&["nftkit", "redirect", "-accept-uids", "1"]),
            ["nftkit", "redirect", "-accept-uids", "1"]
        );
        for argv in [
            &["nftkit", "masquerade", "--enable-ipv6"][..],
            &["nftkit", "-v", "masquerade", "-q"][..],
        ] {
            assert_eq!(forms(argv), argv);
        }
        // Every rewritten command line parses.
        let argv = forms(&[
            "nftkit",
            "masquerade",
            "-enable-ipv6",
            "-v=2",
            "-resync-interval=5",
        ]);
        let cli = <Cli as clap::Parser>::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Masquerade(m) => {
                assert!(m.enable_ipv6);
                assert_eq!(m.resync_interval, "5");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn netpol_runs_its_job_unless_explain_is_asked() {
        let parse = |args: &[&str]| <Cli as clap::Parser>::try_parse_from(args);
        let cli = parse(&["nftkit", "netpol", "--from-file", "f", "--node-name", "n"]).unwrap();
        assert_eq!(cli.command.job().map(|j| j.name()), Some("netpol"));
        let cli = parse(&[
            "nftkit",
            "netpol",
            "explain",
            "--from-file",
            "f",
            "--from",
            "a/b",
            "--to",
            "c/d",
            "--port",
            "80",
        ])
        .unwrap();
        assert!(cli.command.job().is_none());
        match cli.command {
            Command::Netpol(n) => {
                assert_eq!(n.args.from_file, None);
                assert!(matches!(
                    n.sub,
                    Some(crate::jobs::netpol::NetpolSub::Explain(e)) if e.from == "a/b" && !e.json
                ));
            }
            other => panic!("{other:?}"),
        }
        // verify netpol keeps netpol's flags only.
        assert!(parse(&["nftkit", "verify", "netpol", "explain"]).is_err());
        assert!(parse(&["nftkit", "verify", "netpol", "--from-file", "f"]).is_ok());
    }

    #[test]
    fn klog_flags_are_dropped_before_the_command_and_after_go_commands() {
        for (argv, want) in [
            (
                &["nftkit", "--v=2", "masquerade"][..],
                &["nftkit", "masquerade"][..],
            ),
            (
                &["nftkit", "-v=4", "masquerade"],
                &["nftkit", "-v", "masquerade"],
            ),
            (
                &["nftkit", "--v", "7", "redirect"],
                &["nftkit", "-vv", "redirect"],
            ),
            (
                &[
                    "nftkit",
                    "-logtostderr",
                    "--alsologtostderr=false",
                    "-log_dir=/x",
                    "--log_file",
                    "/y",
                    "netpol",
                ],
                &["nftkit", "netpol"],
            ),
            (
                &[
                    "nftkit",
                    "netpol",
                    "--logtostderr=1",
                    "--v=4",
                    "--from-file",
                    "f",
                ],
                &["nftkit", "netpol", "-v", "--from-file", "f"],
            ),
            (
                &[
                    "nftkit",
                    "verify",
                    "local-address",
                    "-v=2",
                    "-stderrthreshold=INFO",
                ],
                &["nftkit", "verify", "local-address"],
            ),
            // nftkit's own -v; redirect (a shell script upstream) keeps its arguments;
            // nothing after `--`.
            (
                &["nftkit", "-v", "-q", "dnat"],
                &["nftkit", "-v", "-q", "dnat"],
            ),
            (
                &["nftkit", "redirect", "--v=2"],
                &["nftkit", "redirect", "--v=2"],
            ),
            (
                &["nftkit", "masquerade", "--", "--v=2"],
                &["nftkit", "masquerade", "--", "--v=2"],
            ),
        ] {
            assert_eq!(forms(argv), want, "{argv:?}");
        }
        for bad in [
            &["nftkit", "--v=x", "masquerade"][..],
            &["nftkit", "masquerade", "-logtostderr=maybe"],
            &["nftkit", "masquerade", "--log_dir"],
        ] {
            let e = normalize_args(bad.iter().map(Into::into).collect()).unwrap_err();
            assert!(e.contains("klog flag"), "{bad:?}: {e}");
        }
        let cli = <Cli as clap::Parser>::try_parse_from(forms(&[
            "nftkit",
            "--v=4",
            "--logtostderr",
            "masquerade",
            "-v=2",
            "-resync-interval=5",
        ]))
        .unwrap();
        assert_eq!(cli.verbose, 1);
    }
}
