//! nft-compat: nftkit's compatibility layer for hosts that need iptables.
//!
//! Plain iptables terms, no knowledge of nftkit's model and no I/O:
//!
//! - [`naming`]: owned chain names `NFTKIT-<COMMAND>-<PART>` (≤ 28 characters) and how
//!   to recognise them again;
//! - [`rule`]: one iptables rule in the canonical form `iptables-save` prints, so text we
//!   render compares equal with text we read back;
//! - [`save`]: a parser for `iptables-save` output;
//! - [`state`]: the chains and jump rules one nftkit table owns in one IP family (proven
//!   by the ownership comment, never by the name alone), taken from a save or built by
//!   nftkit, and the `iptables-restore --noflush` input that turns
//!   one state into another (apply, delete and rollback are all that one function);
//! - [`detect`]: the evidence `--backend auto` weighs and the pure decision over it.
//!
//! The two flavours (`iptables-legacy`, `iptables-nft`) take the same restore input and
//! print the same save output; only the binaries differ ([`Flavour`]).

pub mod detect;
pub mod naming;
pub mod rule;
pub mod save;
pub mod state;

pub use naming::{MAX_CHAIN_NAME, chain_name};

/// Which iptables implementation drives the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// `iptables-legacy`: the x_tables setsockopt interface (`ip_tables` modules).
    Legacy,
    /// `iptables-nft`: iptables syntax over nf_tables (tables `ip nat`, `ip6 filter`, ...).
    Nft,
}

impl Flavour {
    /// The `--backend` value, e.g. `iptables-legacy`.
    pub fn name(self) -> &'static str {
        match self {
            Flavour::Legacy => "iptables-legacy",
            Flavour::Nft => "iptables-nft",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Flavour::Legacy => "legacy",
            Flavour::Nft => "nft",
        }
    }

    /// `iptables-legacy-restore`, `ip6tables-nft-restore`, ...
    pub fn restore_binary(self, ip: IpVersion) -> String {
        format!("{}-{}-restore", ip.command(), self.suffix())
    }

    /// `iptables-legacy-save`, `ip6tables-nft-save`, ...
    pub fn save_binary(self, ip: IpVersion) -> String {
        format!("{}-{}-save", ip.command(), self.suffix())
    }

    /// The Debian (and Ubuntu) package that ships both flavours' binaries.
    pub const DEBIAN_PACKAGE: &'static str = "iptables";
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    pub const BOTH: [IpVersion; 2] = [IpVersion::V4, IpVersion::V6];

    /// `iptables` / `ip6tables`.
    pub fn command(self) -> &'static str {
        match self {
            IpVersion::V4 => "iptables",
            IpVersion::V6 => "ip6tables",
        }
    }

    /// `IPv4` / `IPv6`, for messages.
    pub fn label(self) -> &'static str {
        match self {
            IpVersion::V4 => "IPv4",
            IpVersion::V6 => "IPv6",
        }
    }
}

/// The iptables tables nftkit writes to. Order = order in restore input and snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `raw` (priority -300): NOTRACK.
    Raw,
    /// `nat`: REDIRECT, DNAT, MASQUERADE.
    Nat,
    /// `filter` (priority 0): ACCEPT / DROP.
    Filter,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Raw, Table::Nat, Table::Filter];

    pub fn name(self) -> &'static str {
        match self {
            Table::Raw => "raw",
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }

    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The built-in chains of this table (both families have the same ones).
    pub fn builtin_chains(self) -> &'static [&'static str] {
        match self {
            Table::Raw => &["PREROUTING", "OUTPUT"],
            Table::Nat => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            Table::Filter => &["INPUT", "FORWARD", "OUTPUT"],
        }
    }

    pub fn has_builtin(self, chain: &str) -> bool {
        self.builtin_chains().contains(&chain)
    }
}
