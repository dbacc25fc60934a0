//! nf_tables over netlink (the `nlink` crate). The only module (with `addr.rs`) that uses
//! nlink, so the netlink library can be swapped without touching commands or the model.
//!
//! Apply is ONE batch: destroy our table if present, then create table, sets, elements
//! (split into several messages so no netlink attribute nest overflows), chains, verdict
//! maps and their entries (split likewise), and rules.
//! The kernel commits all of it or none of it; a refused message is reported by name.
//!
//! - `encode`: the model lowered to nlink, step by step for one batch (rules to the
//!   expressions nft generates for the same text);
//! - `wire`: netlink attributes written by hand (element lists, uid/gid sets, DNAT maps)
//!   and the socket's send buffer;
//! - `decode`: the kernel's table read back as a `Snapshot`, and the snapshot a ruleset
//!   should read back as;
//! - `vmap`: verdict maps (`map m { type ipv4_addr : verdict; }`, `ip daddr vmap @m`),
//!   encoded and read back;
//! - here: the `Backend` over one netfilter netlink socket.

mod decode;
mod delta;
mod dump;
mod encode;
pub mod nflog;
mod record;
mod vmap;
mod wire;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use nlink::netlink::nftables::{self as nft, Family, Verdict};
use nlink::netlink::{Connection, Nftables};

use super::{Backend, Inspect, Lifetime, Options, OwnedTable, is_owned_comment};
use crate::error::{Error, Result};
use crate::model::{self, Ruleset};
use crate::snapshot::Snapshot;
use encode::OldTable;
use record::Record;

/// nft's datatype numbers for the set key types nlink has no name for.
const TYPE_UID: u32 = 24;
const TYPE_GID: u32 = 25;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

pub struct NetlinkBackend {
    rt: tokio::runtime::Runtime,
    conn: Connection<Nftables>,
    /// The reads nlink makes costly (`dump.rs`): a second, blocking socket.
    reader: std::cell::RefCell<dump::Reader>,
    /// The ruleset generation our last replace batch committed as, when it was bound
    /// (`commit_replace`): `check_applied` needs no read-back while it still holds.
    committed_at: Option<u32>,
    /// Create tables with NFT_TABLE_F_OWNER: they live as long as this socket.
    process_owned: bool,
    /// `--force`: take over a same-named table that is not marked as ours.
    force: bool,
}

impl NetlinkBackend {
    /// [`NetlinkBackend::open`] with the default options (tables persist, no `--force`).
    pub fn connect() -> Result<Self> {
        Self::open(Options::default())
    }

    /// Open a netfilter netlink socket in the current network namespace and check that
    /// nf_tables answers (needs CAP_NET_ADMIN).
    pub fn open(opts: Options) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::runtime(format!("cannot start runtime: {e}")))?;
        let conn = rt
            .block_on(async { Connection::<Nftables>::new() })
            .map_err(|e| kernel_error("open nf_tables netlink socket", &e))?;
        wire::raise_send_buffer(conn.socket().as_raw_fd());
        let _ = conn.socket().set_rcvbuf(4 << 20);
        let mut reader =
            dump::Reader::open().map_err(|e| dump_error("open nf_tables netlink socket", e))?;
        // Does nf_tables answer here? (The generation is the cheapest question.)
        reader
            .generation()
            .map_err(|e| dump_error("ask nf_tables for its ruleset generation", e))?;
        Ok(NetlinkBackend {
            rt,
            conn,
            reader: std::cell::RefCell::new(reader),
            committed_at: None,
            process_owned: opts.lifetime == Lifetime::Process,
            force: opts.force,
        })
    }

    /// Every base chain of families ip, ip6 and inet at the five IP hooks, with its table's
    /// comment, priority, policy and number of drop/reject rules. Read-only.
    pub fn base_chains(&mut self) -> Result<Vec<super::BaseChain>> {
        let hooks = [
            model::Hook::Prerouting,
            model::Hook::Input,
            model::Hook::Forward,
            model::Hook::Output,
            model::Hook::Postrouting,
        ];
        let tables = self
            .rt
            .block_on(self.conn.list_tables())
            .map_err(|e| kernel_error("list tables", &e))?;
        let chains = self
            .rt
            .block_on(self.conn.list_chains())
            .map_err(|e| kernel_error("list chains", &e))?;
        let mut rules_of: BTreeMap<(u8, String), Vec<nft::RuleInfo>> = BTreeMap::new();
        let mut out = Vec::new();
        for c in &chains {
            let Some(hook) = c.hook.and_then(|h| hooks.get(h as usize).copied()) else {
                continue;
            };
            let family = match c.family {
                Family::Ip => "ip",
                Family::Ip6 => "ip6",
                Family::Inet => "inet",
                _ => continue,
            };
            let key = (c.family as u8, c.table.clone());
            if !rules_of.contains_key(&key) {
                let rules = self
                    .rt
                    .block_on(self.conn.list_rules(&c.table, c.family))
                    .map_err(|e| kernel_error(&format!("list rules of table {}", c.table), &e))?;
                rules_of.insert(key.clone(), rules);
            }
            let drop_rules = rules_of[&key]
                .iter()
                .filter(|r| r.chain == c.name)
                .filter(|r| {
                    r.expressions().iter().any(|e| match e {
                        nft::RuleExpr::Verdict(Verdict::Drop) | nft::RuleExpr::Reject { .. } => {
                            true
                        }
                        // iptables-nft's `-j REJECT` is an xtables target.
                        nft::RuleExpr::Unknown { name, data, .. } => {
                            name == "target" && data.windows(6).any(|w| w == b"REJECT")
                        }
                        _ => false,
                    })
                })
                .count();
            let rules = rules_of[&key].iter().filter(|r| r.chain == c.name).count();
            out.push(super::BaseChain {
                family,
                table: c.table.clone(),
                table_comment: tables
                    .iter()
                    .find(|t| t.family == c.family && t.name == c.table)
                    .and_then(|t| t.comment.clone()),
                chain: c.name.clone(),
                hook,
                chain_type: c.chain_type.map(|t| t.as_str()).unwrap_or("filter"),
                priority: c.priority.unwrap_or(0),
                // NF_DROP is 0.
                policy_drop: c.policy == Some(0),
                rules,
                drop_rules,
            });
        }
        Ok(out)
    }

    /// The snapshot `rs` reads back as, elements included.
    pub fn expected(&self, rs: &Ruleset) -> Snapshot {
        decode::expected_snapshot(rs, true)
    }

    /// Our table of name `table` (one GETTABLE, not a dump of every table).
    fn table_info(&self, table: &str) -> Result<Option<TableInfo>> {
        let raw = self.read(&format!("read table inet {table}"), |r| r.table(table))?;
        Ok(raw.map(|t| TableInfo {
            name: table.to_string(),
            flags: t.flags,
            comment: t.comment(),
            record: Record::find(&t.userdata),
        }))
    }

    /// The replace batch for `rs` and what each of its messages does (see
    /// `encode::build_batch`), the table carrying `record`.
    fn build_batch(
        &self,
        rs: &Ruleset,
        record: Option<Record>,
    ) -> Result<(nft::Transaction, Vec<BatchOp>)> {
        let old = if nft::connection::kernel_has_destroy() {
            OldTable::Destroy
        } else if self.table_info(&rs.table)?.is_some() {
            OldTable::Delete
        } else {
            OldTable::Absent
        };
        let mut tx = Some(self.conn.transaction());
        let mut ops = Vec::new();
        encode::build_batch(rs, old, self.process_owned, &mut |step, op| {
            let step = match step {
                wire::Step::AddTable { flags, .. } => wire::Step::AddTable {
                    flags,
                    udata: record.map(|r| r.entry()).unwrap_or_default(),
                },
                other => other,
            };
            tx = tx.take().map(|tx| step.queue(tx, rs));
            ops.push(op);
        })?;
        let tx = tx.expect("the transaction is always put back");
        Ok((tx, ops))
    }

    /// Commit the replace batch for `rs`, bound to the ruleset generation it was built at
    /// so the table can record the generation its commit produces (`record.rs`). Someone
    /// committing in between makes the kernel refuse it (ERESTART): built again, and the
    /// last attempt goes unbound and without a record.
    fn commit_replace(&mut self, rs: &Ruleset) -> Result<()> {
        const BOUND_ATTEMPTS: usize = 3;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let generation = if attempt <= BOUND_ATTEMPTS {
                self.read("read the ruleset generation", |r| r.generation())
                    .ok()
            } else {
                None
            };
            let built = std::time::Instant::now();
            let record = generation.map(|g| Record::after_commit_at(g, rs));
            let (mut tx, ops) = self.build_batch(rs, record)?;
            if let Some(g) = generation {
                tx = tx.expect_generation(g);
            }
            let sent = std::time::Instant::now();
            let result = self.rt.block_on(tx.commit(&self.conn));
            // The kernel's share: it checks and commits the whole batch inside the send.
            tracing::debug!(
                build_us = (sent - built).as_micros() as u64,
                commit_us = sent.elapsed().as_micros() as u64,
                messages = ops.len(),
                "batch sent and acknowledged"
            );
            self.committed_at = match (&result, &record) {
                (Ok(()), Some(r)) => Some(r.generation),
                _ => None,
            };
            match result {
                Err(e) if generation.is_some() && e.errno() == Some(libc::ERESTART) => {
                    tracing::debug!(attempt, "ruleset changed while the batch was built; again");
                }
                other => return other.map_err(|e| batch_error(rs, &e, &ops)),
            }
        }
    }
}

impl Backend for NetlinkBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply(&mut self, rs: &Ruleset) -> Result<()> {
        if let Some(existing) = self.table_info(&rs.table)?
            && !is_owned_comment(existing.comment.as_deref())
        {
            if !self.force {
                return Err(Error::runtime(format!(
                    "table inet {} exists but is not managed by nftkit (no ownership comment); refusing to replace it (--force takes it over)",
                    rs.table
                )));
            }
            tracing::warn!(table = %rs.table, "replacing a table not managed by nftkit (--force)");
        }
        self.commit_replace(rs)
    }

    /// One batch of element removals, then additions (`delta.rs`).
    fn apply_delta(&mut self, new: &Ruleset, delta: &model::delta::Delta) -> Result<()> {
        self.apply_element_delta(new, delta)
    }

    /// After an acknowledged batch: structure only (see `Backend::check_applied`).
    ///
    /// Not even that while the kernel's generation is still the one our bound batch
    /// committed as: nobody committed since, so the kernel holds the batch it
    /// acknowledged, and the concurrent replace this check is for cannot have happened.
    fn check_applied(&mut self, rs: &Ruleset) -> Result<Vec<String>> {
        if let Some(g) = self.committed_at.take()
            && self
                .read("read the ruleset generation", |r| r.generation())
                .is_ok_and(|now| now == g)
        {
            tracing::debug!(
                generation = g,
                "nothing committed since our batch: not read back"
            );
            return Ok(Vec::new());
        }
        let observed = match self.table_info(&rs.table)? {
            None => None,
            Some(info) => Some(self.snapshot_of(&info, false)?),
        };
        Ok(crate::snapshot::diff(
            &decode::expected_snapshot(rs, false),
            observed.as_ref(),
        ))
    }

    fn compare(&mut self, rs: &Ruleset) -> Result<super::Comparison> {
        self.compare_to(rs, false)
    }

    /// Set elements are not read while the table's record proves they are the ones
    /// nftkit wrote for an equal ruleset (`record.rs`).
    fn compare_before_apply(&mut self, rs: &Ruleset) -> Result<super::Comparison> {
        self.compare_to(rs, true)
    }

    fn ruleset_generation(&mut self) -> Option<u64> {
        self.rt.block_on(self.conn.generation()).ok().map(u64::from)
    }

    /// The whole table, elements formatted: for `read_back` callers (another backend's
    /// copy, tests). A daemon's resync skips even `compare` while the ruleset generation
    /// is unchanged (the runner's cache, the only one).
    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>> {
        match self.table_info(table)? {
            None => Ok(None),
            Some(info) => Ok(Some(self.snapshot_of(&info, true)?)),
        }
    }

    fn delete(&mut self, table: &str) -> Result<bool> {
        let Some(info) = self.table_info(table)? else {
            return Ok(false);
        };
        if !is_owned_comment(info.comment.as_deref()) && !self.force {
            return Err(Error::runtime(format!(
                "table inet {table} is not managed by nftkit (no ownership comment); not deleting it (--force does)"
            )));
        }
        let tx = self.conn.transaction().del_table(table, Family::Inet);
        self.rt
            .block_on(tx.commit(&self.conn))
            .map_err(|e| kernel_error(&format!("delete table inet {table}"), &e))?;
        Ok(true)
    }
}

impl Inspect for NetlinkBackend {
    fn counters(&mut self, table: &str) -> Result<Vec<super::CounterValue>> {
        let objects = self
            .rt
            .block_on(self.conn.list_objects_in(table, Family::Inet))
            .map_err(|e| kernel_error(&format!("list counters of table inet {table}"), &e))?;
        Ok(objects
            .into_iter()
            .filter_map(|o| match o.state {
                nft::ObjectState::Counter { packets, bytes, .. } => Some(super::CounterValue {
                    name: o.name,
                    packets,
                    bytes,
                }),
                _ => None,
            })
            .collect())
    }

    fn other_backends(&self) -> Vec<Box<dyn Backend>> {
        super::usable_backends_given(Some("nftables"), || self.xtables_tables_present())
    }

    fn foreign_drop_chains(
        &mut self,
        own_table: &str,
        hook: model::Hook,
    ) -> Result<Vec<super::ForeignDrop>> {
        Ok(self
            .base_chains()?
            .into_iter()
            .filter(|c| c.hook == hook && !(c.family == "inet" && c.table == own_table))
            .filter(|c| c.policy_drop || c.drop_rules > 0)
            .map(|c| super::ForeignDrop {
                family: c.family,
                table: c.table,
                chain: c.chain,
                policy_drop: c.policy_drop,
                drop_rules: c.drop_rules,
            })
            .collect())
    }

    fn list_owned(&mut self) -> Result<Vec<OwnedTable>> {
        let tables = self
            .rt
            .block_on(self.conn.list_tables_in(Family::Inet))
            .map_err(|e| kernel_error("list tables", &e))?;
        let mut out = Vec::new();
        for t in tables
            .iter()
            .filter(|t| is_owned_comment(t.comment.as_deref()))
        {
            // Counts only: the elements are dumped and counted, never formatted.
            let snap = self.snapshot_of(&t.into(), false)?;
            let mut elements = 0;
            for set in snap.sets.keys() {
                elements += self.read(&format!("read set {set}"), |r| r.count(&t.name, set))?;
            }
            out.push(OwnedTable {
                backend: "nftables",
                table: t.name.clone(),
                comment: t.comment.clone().unwrap_or_default(),
                chains: snap.chains.len(),
                rules: snap.rule_count(),
                sets: snap.sets.len(),
                elements,
            });
        }
        Ok(out)
    }
}

/// A table of ours as read: what the snapshot and the ownership check need.
pub(super) struct TableInfo {
    name: String,
    flags: u32,
    comment: Option<String>,
    /// The elements record nftkit's batch left in the user data (`record.rs`).
    record: Option<Record>,
}

impl From<&nft::Table> for TableInfo {
    fn from(t: &nft::Table) -> Self {
        TableInfo {
            name: t.name.clone(),
            flags: t.flags,
            comment: t.comment.clone(),
            record: None,
        }
    }
}

/// What one message of the replace batch does, by position in `rs` (see `build_batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchOp {
    RemoveTable,
    AddTable,
    AddCounter(usize),
    AddLimit(usize),
    AddSet(usize),
    AddElements {
        set: usize,
        range: std::ops::Range<usize>,
    },
    AddChain(usize),
    AddVerdictMap(usize),
    AddMapEntries {
        map: usize,
        range: std::ops::Range<usize>,
    },
    AddMap {
        chain: usize,
        rule: usize,
    },
    AddRule {
        chain: usize,
        rule: usize,
    },
}

impl BatchOp {
    fn describe(&self, rs: &Ruleset) -> String {
        let t = &rs.table;
        match self {
            BatchOp::RemoveTable => format!("remove old table inet {t}"),
            BatchOp::AddTable => format!("add table inet {t}"),
            BatchOp::AddLimit(i) => {
                format!("add limit {}", rs.limits().get(*i).map_or("?", |l| l.0))
            }
            BatchOp::AddCounter(i) => format!(
                "add counter {}",
                rs.counters().get(*i).copied().unwrap_or("?")
            ),
            BatchOp::AddSet(i) => {
                let set = &rs.sets[*i];
                format!("add set {} ({})", set.name, set.key.nft_name())
            }
            BatchOp::AddElements { set, range } => {
                let set = &rs.sets[*set];
                let shown: Vec<String> = set.elements[range.clone()]
                    .iter()
                    .map(crate::render::element)
                    .collect();
                format!(
                    "add elements {}..{} to set {} ({})",
                    range.start,
                    range.end,
                    set.name,
                    preview(&shown)
                )
            }
            BatchOp::AddChain(c) => format!("add chain {}", rs.chains[*c].name),
            BatchOp::AddVerdictMap(i) => {
                let map = &rs.maps[*i];
                format!("add map {} ({} : verdict)", map.name, map.key.nft_name())
            }
            BatchOp::AddMapEntries { map, range } => {
                let map = &rs.maps[*map];
                let shown: Vec<String> = map.entries[range.clone()]
                    .iter()
                    .map(|(e, chain)| crate::render::map_entry(e, chain))
                    .collect();
                format!(
                    "add entries {}..{} to map {} ({})",
                    range.start,
                    range.end,
                    map.name,
                    preview(&shown)
                )
            }
            BatchOp::AddMap { chain, rule } => format!(
                "add the map of rule #{} of chain {}",
                rule + 1,
                rs.chains[*chain].name
            ),
            BatchOp::AddRule { chain, rule } => {
                let chain = &rs.chains[*chain];
                format!(
                    "add rule #{} to chain {}: {}",
                    rule + 1,
                    chain.name,
                    crate::render::rule_text(&chain.rules[*rule])
                )
            }
        }
    }
}

/// A few elements of a long list, for error messages.
fn preview(items: &[String]) -> String {
    if items.len() <= 3 {
        items.join(", ")
    } else {
        format!("{}, ... {}", items[..2].join(", "), items[items.len() - 1])
    }
}

/// An apply failure naming the refused objects when the kernel said which messages.
fn batch_error(rs: &Ruleset, e: &nlink::Error, ops: &[BatchOp]) -> Error {
    let table = &rs.table;
    if let nlink::ErrorDetail::NftBatch { failures, .. } = e.detail() {
        let named: Vec<String> = failures
            .iter()
            .filter_map(|f| {
                let what = f.index.and_then(|i| ops.get(i))?.describe(rs);
                let why = std::io::Error::from_raw_os_error(f.errno);
                let ack = f
                    .ext_ack
                    .as_deref()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default();
                Some(format!("{what}: {why}{ack}"))
            })
            .collect();
        if !named.is_empty() {
            return Error::Kernel {
                op: format!("kernel refused the batch for table inet {table}, nothing committed"),
                errno: failures.first().map(|f| f.errno),
                message: named.join("; "),
            };
        }
    }
    kernel_error(&format!("apply table inet {table}"), e)
}

/// For `--backend auto` (backend/detect.rs): does nf_tables answer in this network
/// namespace? `Ok(Ok(()))` yes; `Ok(Err(reason))` the kernel lacks it (EOPNOTSUPP,
/// EPROTONOSUPPORT, EAFNOSUPPORT, ENOENT: no nf_tables / nfnetlink); `Err` anything else
/// (EPERM: missing CAP_NET_ADMIN, which another backend would not fix).
pub fn probe() -> Result<std::result::Result<(), String>> {
    probe_answer(NetlinkBackend::open(Options::default()))
        .map(|_| Ok(()))
        .or_else(|e| match e {
            ProbeError::Lacking(why) => Ok(Err(why)),
            ProbeError::Other(e) => Err(e),
        })
}

/// Why nf_tables did not answer.
pub enum ProbeError {
    /// The kernel lacks it (no nf_tables / nfnetlink): another backend may do.
    Lacking(String),
    /// Anything else (EPERM: missing CAP_NET_ADMIN, which another backend would not fix).
    Other(Error),
}

/// The probe's verdict on an attempt to open the backend: the backend itself when
/// nf_tables answered, so `--backend auto` keeps the socket it probed with.
pub fn probe_answer(
    opened: Result<NetlinkBackend>,
) -> std::result::Result<NetlinkBackend, ProbeError> {
    opened.map_err(|e| match e {
        Error::Kernel {
            errno:
                Some(libc::EOPNOTSUPP | libc::EPROTONOSUPPORT | libc::EAFNOSUPPORT | libc::ENOENT),
            ..
        } => ProbeError::Lacking(e.to_string()),
        other => ProbeError::Other(other),
    })
}

/// Whether nf_tables holds any table of family ip or ip6, where iptables-nft keeps its
/// tables (`nat`, `filter`, ...); None if nf_tables cannot be asked (then iptables-nft is
/// consulted as before).
pub fn xtables_tables_present() -> Option<bool> {
    NetlinkBackend::open(Options::default())
        .ok()?
        .xtables_tables_present()
}

impl NetlinkBackend {
    /// [`xtables_tables_present`] over this backend's socket.
    pub fn xtables_tables_present(&self) -> Option<bool> {
        let families = self
            .read("list nf_tables tables", |r| r.table_families())
            .ok()?;
        Some(
            families
                .iter()
                .any(|f| *f == NFPROTO_IPV4 || *f == NFPROTO_IPV6),
        )
    }
}

impl NetlinkBackend {
    /// `Backend::compare`; with `trust_record`, `compare_before_apply`.
    fn compare_to(&mut self, rs: &Ruleset, trust_record: bool) -> Result<super::Comparison> {
        match self.table_info(&rs.table)? {
            Some(info) => self.compare_table(&info, rs, trust_record),
            None => Ok(super::Comparison {
                found: None,
                diff: crate::snapshot::diff(&decode::expected_snapshot(rs, false), None),
            }),
        }
    }

    /// `f` on the blocking socket for the reads nlink makes costly (`dump.rs`); an error
    /// is exit 1 saying what was being read (`op`).
    fn read<T>(
        &self,
        op: &str,
        f: impl FnOnce(&mut dump::Reader) -> std::io::Result<T>,
    ) -> Result<T> {
        f(&mut self.reader.borrow_mut()).map_err(|e| dump_error(op, e))
    }
}

/// Map an error of `dump.rs` to exit 1.
fn dump_error(op: &str, e: std::io::Error) -> Error {
    Error::Kernel {
        op: op.to_string(),
        errno: e.raw_os_error(),
        message: format!("{e}{}", errno_hint(e.raw_os_error())),
    }
}

/// What the usual errnos mean for us.
fn errno_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT) => {
            " (nf_tables or a needed module is missing)"
        }
        _ => "",
    }
}

/// Map an nlink error to exit 1 with a hint for the usual causes.
fn kernel_error(op: &str, e: &nlink::Error) -> Error {
    Error::Kernel {
        op: op.to_string(),
        errno: e.errno(),
        message: format!("{e}{}", errno_hint(e.errno())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Chain, Element, KeyType, Rule, Set};

    #[test]
    fn refused_messages_are_described_by_what_they_add() {
        let mut rs = Ruleset {
            table: "t".into(),
            comment: "ours".into(),
            sets: vec![Set {
                name: "ports".into(),
                key: KeyType::InetService,
                interval: false,
                elements: (1..=5).map(Element::Port).collect(),
            }],
            maps: Vec::new(),
            chains: vec![],
        };
        rs.chains.push(Chain {
            name: "c".into(),
            base: None,
            rules: vec![Rule {
                matches: vec![],
                action: Action::Drop,
            }],
        });
        let elements = BatchOp::AddElements {
            set: 0,
            range: 0..5,
        };
        assert_eq!(
            elements.describe(&rs),
            "add elements 0..5 to set ports (1, 2, ... 5)"
        );
        assert_eq!(
            BatchOp::AddSet(0).describe(&rs),
            "add set ports (inet_service)"
        );
        assert_eq!(
            BatchOp::AddRule { chain: 0, rule: 0 }.describe(&rs),
            "add rule #1 to chain c: drop"
        );
        assert_eq!(preview(&["a".into(), "b".into()]), "a, b");
    }
}
