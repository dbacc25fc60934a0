//! Command line: global options and one subcommand per job (CONTRACT.md).

use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::BackendChoice;
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
}

/// The commands `verify` can check, with the same options as the command itself.
#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Check the table `nftkit redirect` with these options would program
    Redirect(RedirectArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobName {
    Redirect,
}

impl JobName {
    pub fn as_str(self) -> &'static str {
        match self {
            JobName::Redirect => "redirect",
        }
    }
}
