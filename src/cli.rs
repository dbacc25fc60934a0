//! Command line: global options and one subcommand per job (CONTRACT.md).

use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::BackendChoice;
use crate::jobs::dnat::DnatArgs;
use crate::jobs::local_address::LocalAddressArgs;
use crate::jobs::masquerade::MasqueradeArgs;
use crate::jobs::netpol::NetpolArgs;
use crate::jobs::redirect::RedirectArgs;

#[derive(Parser, Debug)]
#[command(
    name = "nftkit",
    version,
    about = "Kubernetes node and pod packet rules over nf_tables netlink (no iptables or nft binary needed)",
    after_help = "Exit codes: 0 done, 1 runtime failure (kernel unchanged), 2 invalid input (nothing sent), 3 verify found drift."
)]
pub struct Cli {
    /// Which packet-filter backend to program
    #[arg(
        long,
        global = true,
        env = "NFTKIT_BACKEND",
        value_enum,
        default_value = "auto"
    )]
    pub backend: BackendChoice,
    /// Validate and print the ruleset that would be committed (nft syntax); touch nothing
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Name of the owned table [default: nftkit-<command>]
    #[arg(long, global = true, env = "NFTKIT_TABLE", value_name = "NAME")]
    pub table: Option<String>,
    /// Log line format on stderr
    #[arg(
        long,
        global = true,
        env = "NFTKIT_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Replace or delete a same-named table even if it lacks nftkit's ownership comment
    #[arg(long, global = true)]
    pub force: bool,
    /// Daemons: serve /metrics, /healthz and /readyz on PORT (127.0.0.1) or ADDRESS:PORT
    #[arg(long, global = true, env = "NFTKIT_METRICS_ADDR", value_name = "ADDR")]
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
    /// Kubernetes NetworkPolicy (networking.k8s.io/v1) for the pods of this node
    Netpol(NetpolArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions
    Man,
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

/// Go's flag package takes `-flag` and `-flag=value` as well as `--flag`: upstream
/// manifests of the Go tools we replace write `-enable-ipv6`, `-v=2`. After a Go-derived
/// subcommand, a single-dash token naming one of its long options (up to `=`) becomes
/// the double-dash form; everything else (short flags such as `-v`, values, `--`) is
/// left as it is.
pub fn go_flag_forms(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let root = <Cli as clap::CommandFactory>::command();
    let mut longs: Option<Vec<String>> = None;
    let mut out = Vec::with_capacity(args.len());
    for (i, arg) in args.into_iter().enumerate() {
        let text = arg.to_str().map(str::to_string);
        match (&longs, text) {
            (_, Some(t)) if t == "--" => {
                out.push(arg);
                longs = Some(Vec::new()); // nothing after `--` is rewritten
            }
            (None, Some(t)) if i > 0 && GO_COMMANDS.contains(&t.as_str()) => {
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
                out.push(arg);
            }
            (Some(names), Some(t))
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forms(args: &[&str]) -> Vec<String> {
        go_flag_forms(args.iter().map(Into::into).collect())
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
                "--v=2",
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
}
