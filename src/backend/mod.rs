//! Backends: apply a [`Ruleset`] as one atomic replacement of the owned table, read it
//! back, delete it. `netlink` speaks nf_tables directly; `fake` keeps state in memory for
//! logic tests.

use crate::error::{Error, Result};
use crate::model::Ruleset;
use crate::snapshot::Snapshot;

pub mod fake;
pub mod netlink;

/// Comment prefix that marks a table as ours (CONTRACT.md "Ownership").
pub const OWNER_PREFIX: &str = "managed by nftkit";

/// An owned table as `status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnedTable {
    pub backend: &'static str,
    pub table: String,
    pub comment: String,
    pub chains: usize,
    pub rules: usize,
    pub sets: usize,
    pub elements: usize,
}

pub trait Backend {
    fn name(&self) -> &'static str;
    /// Replace the owned table with `rs` in one atomic batch.
    fn apply(&mut self, rs: &Ruleset) -> Result<()>;
    /// The owned table as this backend would read it back once `rs` is applied.
    fn expected(&self, rs: &Ruleset) -> Snapshot;
    /// The kernel's table `table`, or None if it does not exist.
    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>>;
    /// Remove table `table`; Ok(false) if it did not exist. Refuses a table not marked ours.
    fn delete(&mut self, table: &str) -> Result<bool>;
    /// Every table whose comment marks it as nftkit's.
    fn list_owned(&mut self) -> Result<Vec<OwnedTable>>;
    /// Tie tables applied from now on to this process (the kernel's table owner flag,
    /// 5.13+): the kernel removes them when the process exits. Daemons without
    /// `--persist` turn this on. Default: not supported, tables persist.
    fn set_process_owned(&mut self, _on: bool) {}
}

/// `--backend` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Nftables,
    IptablesNft,
    IptablesLegacy,
}

/// The backend for `choice`. The iptables flavours arrive with the compatibility layer.
pub fn select(choice: BackendChoice) -> Result<Box<dyn Backend>> {
    match choice {
        BackendChoice::Auto | BackendChoice::Nftables => {
            let b = netlink::NetlinkBackend::connect()?;
            if choice == BackendChoice::Auto {
                tracing::info!(
                    backend = b.name(),
                    "backend selected (auto: nf_tables answered over netlink)"
                );
            }
            Ok(Box::new(b))
        }
        BackendChoice::IptablesNft | BackendChoice::IptablesLegacy => Err(Error::runtime(format!(
            "backend {} is not yet available in this build; use --backend nftables",
            clap::ValueEnum::to_possible_value(&choice)
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        ))),
    }
}

/// Whether a table comment marks the table as nftkit's.
pub fn is_owned_comment(comment: Option<&str>) -> bool {
    comment.is_some_and(|c| c.starts_with(OWNER_PREFIX))
}
