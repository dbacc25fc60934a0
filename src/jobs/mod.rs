//! One module per command: its flags, validated config and pure `build` of the ruleset.
pub mod dnat;
pub mod local_address;
pub mod masquerade;
pub mod netpol;
pub mod redirect;

use crate::parse::go_bool;

/// The daemon flags `local-address` and `dnat` share, in Go's boolean forms
/// (`--daemon`, `--daemon=false`), as the Go tools they replace parse them.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct GoDaemonArgs {
    /// Keep reconciling every --sync-interval; --daemon=false applies once and exits
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "true",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub daemon: bool,
    /// On exit (SIGTERM/SIGINT, or after a --daemon=false run) remove what the command set
    /// up: the table, and for local-address the address (never the interface)
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub cleanup: bool,
    /// How often to compare the kernel (table, address) with the desired state: a Go
    /// duration (30s, 1m, 1m30s) or whole seconds
    #[arg(long, value_name = "DURATION", default_value = "1m")]
    pub sync_interval: String,
    /// Keep the table when the daemon dies (SIGKILL, OOM, restart), as upstream's iptables
    /// rules stay; --persist=false ties it to the process (kernel table owner flag)
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
}
