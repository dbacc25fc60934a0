//! nf_tables over netlink (the `nlink` crate). The only module that uses nlink, so the
//! netlink library can be swapped without touching commands or the model.
//!
//! Apply is ONE batch: destroy our table if present, then create table, sets, elements
//! (split into several messages so no netlink attribute nest overflows), chains and rules.
//! The kernel commits all of it or none of it; a refused message is reported by name.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use nlink::netlink::nftables::{
    self as nft, BaseChain as NlBase, ByteorderOp, CmpOp, Expr, Family, LookupExpr, MetaKey,
    NatHook, PayloadBase, Priority, Register, SetKeyType, Verdict,
};
use nlink::netlink::{Connection, Nftables};

use super::{Backend, OwnedTable, is_owned_comment};
use crate::error::{Error, Result};
use crate::model::{self, Action, Element, IpFamily, KeyType, Match, Owner, Ruleset};
use crate::snapshot::{ChainSnapshot, SetSnapshot, Snapshot};

/// Elements per NEWSETELEM message. An IPv6 interval range is two wire elements of
/// ~60 bytes, so 256 ranges stay well below the 64 KiB limit of one attribute nest.
const ELEMENTS_PER_MESSAGE: usize = 256;
/// Send buffer for big batches (a 50 000-range IPv6 set is ~6 MB on the wire).
const SEND_BUFFER: i32 = 64 << 20;

/// nft's datatype numbers for the set key types nlink has no name for.
const TYPE_UID: u32 = 24;
const TYPE_GID: u32 = 25;

/// `enum nft_table_flags`: the table is switched off (its chains see no packets).
const NFT_TABLE_F_DORMANT: u32 = 1;

const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;

pub struct NetlinkBackend {
    rt: tokio::runtime::Runtime,
    conn: Connection<Nftables>,
    /// Create tables with NFT_TABLE_F_OWNER: they live as long as this socket.
    process_owned: bool,
    /// `--force`: take over a same-named table that is not marked as ours.
    force: bool,
    /// The last full read-back: (ruleset generation, table, snapshot). Every commit in this
    /// network namespace, by anyone, bumps the generation, so while it is unchanged the
    /// kernel still holds exactly this: a no-op resync then skips the element dump.
    last_read: Option<(u32, String, Option<Snapshot>)>,
}

impl NetlinkBackend {
    /// Open a netfilter netlink socket in the current network namespace and check that
    /// nf_tables answers (needs CAP_NET_ADMIN).
    pub fn connect() -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::runtime(format!("cannot start runtime: {e}")))?;
        let conn = rt
            .block_on(async { Connection::<Nftables>::new() })
            .map_err(|e| kernel_error("open nf_tables netlink socket", &e))?;
        raise_send_buffer(conn.socket().as_raw_fd());
        let _ = conn.socket().set_rcvbuf(4 << 20);
        let b = NetlinkBackend {
            rt,
            conn,
            process_owned: false,
            force: false,
            last_read: None,
        };
        b.rt.block_on(b.conn.list_tables_in(Family::Inet))
            .map_err(|e| kernel_error("list nf_tables tables", &e))?;
        Ok(b)
    }

    fn table_info(&self, table: &str) -> Result<Option<nft::Table>> {
        let tables = self
            .rt
            .block_on(self.conn.list_tables_in(Family::Inet))
            .map_err(|e| kernel_error("list tables", &e))?;
        Ok(tables.into_iter().find(|t| t.name == table))
    }

    /// The kernel's table; without `elements` the named sets' element lists are left
    /// empty (the kernel's element dump is the costly part: it walks the set's tree
    /// from the start again for every ~32 KiB of output).
    fn snapshot_of(&self, table: &nft::Table, elements: bool) -> Result<Snapshot> {
        let name = table.name.as_str();
        let conn = &self.conn;
        let (chains, rules, sets) = self
            .rt
            .block_on(async {
                let chains = conn.list_chains_in(name, Family::Inet).await?;
                let rules = conn.list_rules(name, Family::Inet).await?;
                let sets = conn.list_sets_in(name, Family::Inet).await?;
                Ok::<_, nlink::Error>((chains, rules, sets))
            })
            .map_err(|e| kernel_error(&format!("read table {name}"), &e))?;
        let mut chain_snaps: Vec<ChainSnapshot> = chains
            .iter()
            .map(|c| ChainSnapshot {
                name: c.name.clone(),
                base: match (c.chain_type, c.hook, c.priority) {
                    // Our base chains are always policy accept; a policy drop set by hand
                    // is drift (it drops what the chain does not match), so it shows.
                    (Some(t), Some(h), Some(p)) => Some(format!(
                        "{}{}",
                        base_text(t.as_str(), hook_name(h), p),
                        if c.policy == Some(0) {
                            " policy drop"
                        } else {
                            ""
                        }
                    )),
                    _ => None,
                },
                rules: Vec::new(),
            })
            .collect();
        // Anonymous maps (DNAT maps) are part of their rule, not sets of the table.
        let mut anon = std::collections::HashMap::new();
        for s in sets
            .iter()
            .filter(|s| s.flags.contains(nft::SetFlags::ANONYMOUS))
        {
            let elements = self
                .rt
                .block_on(conn.list_set_elements(name, &s.name, Family::Inet))
                .map_err(|e| kernel_error(&format!("read set {}", s.name), &e))?;
            let entries = elements
                .iter()
                .filter_map(|e| match e.data() {
                    Some(nft::SetElementData::Value(d)) => Some((e.key().to_vec(), d.clone())),
                    _ => None,
                })
                .collect();
            anon.insert(
                s.name.clone(),
                AnonMap {
                    key_type: s.key_type,
                    entries,
                },
            );
        }
        for r in &rules {
            if let Some(c) = chain_snaps.iter_mut().find(|c| c.name == r.chain) {
                c.rules.push(
                    r.nft_syntax_stateless()
                        .or_else(|| dnat_map_rule_text(r, &anon))
                        .unwrap_or_else(|| {
                            format!("<undecoded rule {}>", hex(&r.expression_bytes))
                        }),
                );
            }
        }
        let mut set_snaps = BTreeMap::new();
        let dump_started = std::time::Instant::now();
        let mut dumped = 0;
        for s in sets
            .iter()
            .filter(|s| !s.flags.contains(nft::SetFlags::ANONYMOUS))
        {
            let elements = if elements {
                self.rt
                    .block_on(conn.list_set_elements(name, &s.name, Family::Inet))
                    .map_err(|e| kernel_error(&format!("read set {}", s.name), &e))?
            } else {
                Vec::new()
            };
            dumped += elements.len();
            let key = key_name(s.key_type);
            let mut ranges: Vec<(&[u8], &[u8])> = elements
                .iter()
                .map(|e| (e.key(), e.key_end().unwrap_or(e.key())))
                .collect();
            let items = elements_text(s.key_type, &mut ranges);
            set_snaps.insert(
                s.name.clone(),
                SetSnapshot {
                    key,
                    interval: s.flags.contains(nft::SetFlags::INTERVAL),
                    elements: items,
                },
            );
        }
        if elements {
            // Mostly the kernel's: it walks each set's tree again for every 32 KiB it sends.
            tracing::debug!(
                elements = dumped,
                dump_us = dump_started.elapsed().as_micros() as u64,
                "set elements read back"
            );
        }
        Ok(Snapshot {
            table: name.to_string(),
            // A dormant table (`nft add table ... { flags dormant; }`) is switched off
            // whole: drift, shown with the comment (Snapshot has no flags field).
            comment: table.comment.clone().map(|c| {
                if table.flags & NFT_TABLE_F_DORMANT != 0 {
                    format!("{c} [table flags dormant: disabled]")
                } else {
                    c
                }
            }),
            chains: chain_snaps,
            sets: set_snaps,
        })
    }

    /// The replace batch for `rs`, and what each of its messages does (by position), so a
    /// refusal can name our object rather than a message number. The descriptions are
    /// formatted only if the kernel refuses something (a 50 000-element batch has 200
    /// element messages whose previews would cost more than the rest of the build).
    fn build_batch(&self, rs: &Ruleset) -> Result<(nft::Transaction, Vec<BatchOp>)> {
        let t = rs.table.as_str();
        let mut tx = self.conn.transaction();
        let mut ops = Vec::new();
        if nft::connection::kernel_has_destroy() {
            tx = tx.destroy_table(t, Family::Inet);
            ops.push(BatchOp::RemoveTable);
        } else if self.table_info(t)?.is_some() {
            tx = tx.del_table(t, Family::Inet);
            ops.push(BatchOp::RemoveTable);
        }
        let flags = if self.process_owned {
            nft::NFT_TABLE_F_OWNER
        } else {
            0
        };
        tx = tx.add_table_with_comment(t, Family::Inet, flags, Some(&rs.comment));
        ops.push(BatchOp::AddTable);
        for (i, set) in rs.sets.iter().enumerate() {
            let nl = nl_set(t, set, &rs.comment);
            tx = match set.key {
                // nlink cannot mark a key as host-endian; without that nft would print
                // uid 1010 as 4060282880. Write the NEWSET ourselves, as nft does.
                KeyType::Uid | KeyType::Gid => {
                    tx.raw(host_order_set(t, set, &rs.comment, i as u32))
                }
                _ => tx.add_set(nl.clone()),
            };
            ops.push(BatchOp::AddSet(i));
            for (n, part) in set.elements.chunks(ELEMENTS_PER_MESSAGE).enumerate() {
                tx = tx.raw(element_message(t, set, part));
                let first = n * ELEMENTS_PER_MESSAGE;
                ops.push(BatchOp::AddElements {
                    set: i,
                    range: first..first + part.len(),
                });
            }
        }
        for (c, chain) in rs.chains.iter().enumerate() {
            tx = tx.add_chain(nl_chain(t, chain, &rs.comment)?);
            ops.push(BatchOp::AddChain(c));
        }
        let mut map_ids = std::collections::HashSet::new();
        for (c, chain) in rs.chains.iter().enumerate() {
            for (i, rule) in chain.rules.iter().enumerate() {
                if let Action::DnatMap {
                    family,
                    proto,
                    entries,
                } = &rule.action
                {
                    let id = dnat_map_set_id(&chain.name, rule);
                    if !map_ids.insert(id) {
                        return Err(Error::runtime(format!(
                            "chain {} holds the same dnat map rule twice",
                            chain.name
                        )));
                    }
                    for msg in dnat_map_messages(t, *family, *proto, entries, id) {
                        tx = tx.raw(msg);
                        ops.push(BatchOp::AddMap { chain: c, rule: i });
                    }
                }
                tx = tx.add_rule(nl_rule(t, &chain.name, rule, &rs.comment)?);
                ops.push(BatchOp::AddRule { chain: c, rule: i });
            }
        }
        Ok((tx, ops))
    }
}

/// What one message of the replace batch does, by position in `rs` (see `build_batch`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum BatchOp {
    RemoveTable,
    AddTable,
    AddSet(usize),
    AddElements {
        set: usize,
        range: std::ops::Range<usize>,
    },
    AddChain(usize),
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
            return Error::runtime(format!(
                "kernel refused the batch for table inet {table}, nothing committed: {}",
                named.join("; ")
            ));
        }
    }
    kernel_error(&format!("apply table inet {table}"), e)
}

impl NetlinkBackend {
    /// The snapshot `rs` reads back as; without `with_elements` the sets' element lists
    /// are empty (the structure-only check after apply).
    fn expected_snapshot(&self, rs: &Ruleset, with_elements: bool) -> Snapshot {
        let t = rs.table.as_str();
        let chains = rs
            .chains
            .iter()
            .map(|c| ChainSnapshot {
                name: c.name.clone(),
                base: c
                    .base
                    .map(|b| base_text(b.kind.nft_name(), b.hook.nft_name(), b.priority)),
                rules: c
                    .rules
                    .iter()
                    .map(|r| {
                        if let Action::DnatMap {
                            family,
                            proto,
                            entries,
                        } = &r.action
                        {
                            return dnat_map_snapshot_text(
                                *family,
                                *proto,
                                entries,
                                Some(&rs.comment),
                            );
                        }
                        nl_rule(t, &c.name, r, &rs.comment)
                            .ok()
                            .and_then(|r| r.nft_syntax_stateless())
                            .unwrap_or_else(|| {
                                format!(
                                    "{} comment \"{}\"",
                                    crate::render::rule_text(r),
                                    rs.comment
                                )
                            })
                    })
                    .collect(),
            })
            .collect();
        let sets = rs
            .sets
            .iter()
            .map(|s| {
                let type_id = nl_key(s.key).type_id();
                let elements = if !with_elements {
                    Vec::new()
                } else {
                    let wire: Vec<([u8; 16], [u8; 16], usize)> = s
                        .elements
                        .iter()
                        .map(|e| element_wire(e, s.interval))
                        .collect();
                    let mut ranges: Vec<(&[u8], &[u8])> =
                        wire.iter().map(|(k, e, n)| (&k[..*n], &e[..*n])).collect();
                    elements_text(type_id, &mut ranges)
                };
                (
                    s.name.clone(),
                    SetSnapshot {
                        key: key_name(type_id),
                        interval: s.interval,
                        elements,
                    },
                )
            })
            .collect();
        Snapshot {
            table: t.to_string(),
            comment: Some(rs.comment.clone()),
            chains,
            sets,
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
        let built = std::time::Instant::now();
        let (tx, ops) = self.build_batch(rs)?;
        let sent = std::time::Instant::now();
        let result = self
            .rt
            .block_on(tx.commit(&self.conn))
            .map_err(|e| batch_error(rs, &e, &ops));
        // The kernel's share: it checks and commits the whole batch inside the send.
        tracing::debug!(
            build_us = (sent - built).as_micros() as u64,
            commit_us = sent.elapsed().as_micros() as u64,
            messages = ops.len(),
            "batch sent and acknowledged"
        );
        result
    }

    fn expected(&self, rs: &Ruleset) -> Snapshot {
        self.expected_snapshot(rs, true)
    }

    /// After an acknowledged batch: structure only (see `Backend::check_applied`).
    fn check_applied(&mut self, rs: &Ruleset) -> Result<Vec<String>> {
        let observed = match self.table_info(&rs.table)? {
            None => None,
            Some(info) => Some(self.snapshot_of(&info, false)?),
        };
        Ok(crate::snapshot::diff(
            &self.expected_snapshot(rs, false),
            observed.as_ref(),
        ))
    }

    fn ruleset_generation(&mut self) -> Option<u64> {
        self.rt.block_on(self.conn.generation()).ok().map(u64::from)
    }

    fn read_back(&mut self, table: &str) -> Result<Option<Snapshot>> {
        let generation = || self.rt.block_on(self.conn.generation()).ok();
        let before = generation();
        if let (Some(g), Some((lg, lt, snap))) = (before, &self.last_read)
            && *lg == g
            && lt == table
        {
            return Ok(snap.clone());
        }
        let snap = match self.table_info(table)? {
            None => None,
            Some(info) => Some(self.snapshot_of(&info, true)?),
        };
        // Cached only if nothing was committed while we read (a consistent dump).
        self.last_read = match before {
            Some(g) if generation() == Some(g) => Some((g, table.to_string(), snap.clone())),
            _ => None,
        };
        Ok(snap)
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

    fn set_force(&mut self, on: bool) {
        self.force = on;
    }

    fn other_backends(&self) -> Vec<Box<dyn Backend>> {
        super::usable_backends(Some("nftables"))
    }

    fn set_process_owned(&mut self, on: bool) {
        self.process_owned = on;
    }

    fn foreign_drop_chains(
        &mut self,
        own_table: &str,
        hook: model::Hook,
    ) -> Result<Vec<super::ForeignDrop>> {
        let want = match hook {
            model::Hook::Prerouting => 0,
            model::Hook::Input => 1,
            model::Hook::Forward => 2,
            model::Hook::Output => 3,
            model::Hook::Postrouting => 4,
        };
        let chains = self
            .rt
            .block_on(self.conn.list_chains())
            .map_err(|e| kernel_error("list chains", &e))?;
        let mut rules_of: BTreeMap<(u8, String), Vec<nft::RuleInfo>> = BTreeMap::new();
        let mut out = Vec::new();
        for c in chains.iter().filter(|c| c.hook == Some(want)) {
            let family = match c.family {
                Family::Ip => "ip",
                Family::Ip6 => "ip6",
                Family::Inet => "inet",
                _ => continue,
            };
            if c.family == Family::Inet && c.table == own_table {
                continue;
            }
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
            // NF_DROP is 0.
            let policy_drop = c.policy == Some(0);
            if policy_drop || drop_rules > 0 {
                out.push(super::ForeignDrop {
                    family,
                    table: c.table.clone(),
                    chain: c.name.clone(),
                    policy_drop,
                    drop_rules,
                });
            }
        }
        Ok(out)
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
            let snap = self.snapshot_of(t, true)?;
            out.push(OwnedTable {
                backend: "nftables",
                table: t.name.clone(),
                comment: t.comment.clone().unwrap_or_default(),
                chains: snap.chains.len(),
                rules: snap.rule_count(),
                sets: snap.sets.len(),
                elements: snap.element_count(),
            });
        }
        Ok(out)
    }
}

/// Map an nlink error to exit 1 with a hint for the usual causes.
/// For `--backend auto` (backend/detect.rs): does nf_tables answer in this network
/// namespace? `Ok(Ok(()))` yes; `Ok(Err(reason))` the kernel lacks it (EOPNOTSUPP,
/// EPROTONOSUPPORT, EAFNOSUPPORT, ENOENT: no nf_tables / nfnetlink); `Err` anything else
/// (EPERM: missing CAP_NET_ADMIN, which another backend would not fix).
pub fn probe() -> Result<std::result::Result<(), String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::runtime(format!("cannot start runtime: {e}")))?;
    let answer = rt.block_on(async {
        let conn = Connection::<Nftables>::new()?;
        conn.list_tables_in(Family::Inet).await.map(|_| ())
    });
    match answer {
        Ok(()) => Ok(Ok(())),
        Err(e)
            if matches!(
                e.errno(),
                Some(libc::EOPNOTSUPP)
                    | Some(libc::EPROTONOSUPPORT)
                    | Some(libc::EAFNOSUPPORT)
                    | Some(libc::ENOENT)
            ) =>
        {
            Ok(Err(e.to_string()))
        }
        Err(e) => Err(kernel_error("probe nf_tables over netlink", &e)),
    }
}

fn kernel_error(op: &str, e: &nlink::Error) -> Error {
    let hint = match e.errno() {
        Some(libc::EPERM) => " (needs CAP_NET_ADMIN)",
        Some(libc::EOPNOTSUPP) | Some(libc::EPROTONOSUPPORT) => {
            " (nf_tables or a needed module is missing)"
        }
        _ => "",
    };
    Error::runtime(format!("{op}: {e}{hint}"))
}

/// Raise SO_SNDBUF (forcing past wmem_max, which needs CAP_NET_ADMIN) so a batch of tens
/// of thousands of elements goes out in one sendmsg; best effort.
fn raise_send_buffer(fd: i32) {
    let size = SEND_BUFFER;
    let ptr = &size as *const i32 as *const libc::c_void;
    let len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: fd is the live netlink socket; the option value is a valid c_int.
    unsafe {
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, ptr, len) != 0 {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, ptr, len);
        }
    }
}

fn base_text(kind: &str, hook: &str, priority: i32) -> String {
    format!("type {kind} hook {hook} priority {priority}")
}

/// Hook numbers of the inet family (NF_INET_*).
fn hook_name(n: u32) -> &'static str {
    match n {
        0 => "prerouting",
        1 => "input",
        2 => "forward",
        3 => "output",
        4 => "postrouting",
        _ => "unknown",
    }
}

fn key_name(type_id: u32) -> String {
    match type_id {
        7 => "ipv4_addr".into(),
        8 => "ipv6_addr".into(),
        13 => "inet_service".into(),
        TYPE_UID => "uid".into(),
        TYPE_GID => "gid".into(),
        n => format!("type#{n}"),
    }
}

fn nl_key(k: KeyType) -> SetKeyType {
    match k {
        KeyType::Ipv4Addr => SetKeyType::Ipv4Addr,
        KeyType::Ipv6Addr => SetKeyType::Ipv6Addr,
        KeyType::InetService => SetKeyType::InetService,
        KeyType::Uid => SetKeyType::Other {
            type_id: TYPE_UID,
            len: 4,
        },
        KeyType::Gid => SetKeyType::Other {
            type_id: TYPE_GID,
            len: 4,
        },
    }
}

fn nl_set(table: &str, set: &model::Set, comment: &str) -> nft::Set {
    let mut s = nft::Set::new(table, &set.name)
        .family(Family::Inet)
        .key_type(nl_key(set.key))
        .comment(comment);
    if set.interval {
        s = s.interval();
    }
    s
}

/// NEWSET for a set of host-endian keys (uid, gid), with nft's userdata: key byte order
/// "host" and the comment. The set id only has to be unique in the batch; nlink numbers its
/// own from 1, so ours start high.
fn host_order_set(table: &str, set: &model::Set, comment: &str, index: u32) -> nft::RawMessage {
    const NFTNL_UDATA_SET_KEYBYTEORDER: u8 = 0;
    const NFTNL_UDATA_SET_COMMENT: u8 = 7;
    const BYTEORDER_HOST_ENDIAN: u32 = 1;
    let type_id = nl_key(set.key).type_id();
    let mut udata = vec![NFTNL_UDATA_SET_KEYBYTEORDER, 4];
    udata.extend_from_slice(&BYTEORDER_HOST_ENDIAN.to_ne_bytes());
    let mut text = comment.as_bytes().to_vec();
    text.truncate(126);
    text.push(0);
    udata.push(NFTNL_UDATA_SET_COMMENT);
    udata.push(text.len() as u8);
    udata.extend_from_slice(&text);
    let mut attrs = Vec::new();
    put_attr(&mut attrs, nft::NFTA_SET_TABLE, &nul_terminated(table));
    put_attr(&mut attrs, nft::NFTA_SET_NAME, &nul_terminated(&set.name));
    put_attr(&mut attrs, nft::NFTA_SET_FLAGS, &0u32.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_TYPE, &type_id.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_LEN, &4u32.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_USERDATA, &udata);
    put_attr(
        &mut attrs,
        nft::NFTA_SET_ID,
        &(0x4000_0000 + index).to_be_bytes(),
    );
    nft::RawMessage::new(nft::NFT_MSG_NEWSET, Family::Inet)
        .flags(libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16)
        .attrs(attrs)
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// One netlink attribute: length, type, payload padded to 4 bytes.
fn put_attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    buf.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len().next_multiple_of(4), 0);
}

/// NEWSETELEM adding `elements` to `set`, encoded here rather than through nlink's
/// `SetElement`s (two allocations per element, then two more per interval end): the same
/// bytes nlink and nft write. An interval set holds a range `[a, b]` as the start `a` and
/// `b + 1` flagged INTERVAL_END; a range that runs to the top has no end element.
fn element_message(table: &str, set: &model::Set, elements: &[Element]) -> nft::RawMessage {
    const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
    let mut attrs = Vec::with_capacity(64 + elements.len() * if set.interval { 40 } else { 20 });
    put_element_list_head(&mut attrs, table, &set.name);
    let list = begin_nest(&mut attrs, nft::NFTA_SET_ELEM_LIST_ELEMENTS);
    let put_element = |attrs: &mut Vec<u8>, key: &[u8], flags: u32| {
        let elem = begin_nest(attrs, nft::NFTA_LIST_ELEM);
        let k = begin_nest(attrs, nft::NFTA_SET_ELEM_KEY);
        put_attr(attrs, nft::NFTA_DATA_VALUE, key);
        end_nest(attrs, k);
        if flags != 0 {
            put_attr(attrs, nft::NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
        }
        end_nest(attrs, elem);
    };
    for e in elements {
        let (key, last, n) = element_wire(e, set.interval);
        put_element(&mut attrs, &key[..n], 0);
        if set.interval {
            let mut after = last;
            // `last + 1`, big-endian; none when `last` is the maximum value.
            if let Some(i) = after[..n].iter().rposition(|b| *b != 0xff) {
                after[i] += 1;
                after[i + 1..n].fill(0);
                put_element(&mut attrs, &after[..n], NFT_SET_ELEM_INTERVAL_END);
            }
        }
    }
    end_nest(&mut attrs, list);
    nft::RawMessage::new(nft::NFT_MSG_NEWSETELEM, Family::Inet)
        .flags(libc::NLM_F_CREATE as u16)
        .attrs(attrs)
}

/// The table and set a NEWSETELEM's element list belongs to.
fn put_element_list_head(buf: &mut Vec<u8>, table: &str, set: &str) {
    put_attr(buf, nft::NFTA_SET_ELEM_LIST_TABLE, &nul_terminated(table));
    put_attr(buf, nft::NFTA_SET_ELEM_LIST_SET, &nul_terminated(set));
}

/// Start a nested attribute of type `kind`; returns where its header is for `end_nest`.
fn begin_nest(buf: &mut Vec<u8>, kind: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at) as u16;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
}

/// An element's wire key and inclusive end (as `element_message` writes it and nlink pairs
/// it back), in a fixed buffer with the key length: no allocation per element.
fn element_wire(e: &Element, interval: bool) -> ([u8; 16], [u8; 16], usize) {
    let mut k = [0u8; 16];
    let mut end = [0u8; 16];
    let n = match e {
        Element::V4(n) => {
            k[..4].copy_from_slice(&n.network().octets());
            let last = if interval { n.broadcast() } else { n.addr() };
            end[..4].copy_from_slice(&last.octets());
            if !interval {
                k[..4].copy_from_slice(&n.addr().octets());
            }
            4
        }
        Element::V6(n) => {
            k.copy_from_slice(&n.network().octets());
            let last = if interval { n.broadcast() } else { n.addr() };
            end.copy_from_slice(&last.octets());
            if !interval {
                k.copy_from_slice(&n.addr().octets());
            }
            16
        }
        Element::Port(p) => {
            k[..2].copy_from_slice(&p.to_be_bytes());
            end[..2].copy_from_slice(&p.to_be_bytes());
            2
        }
        Element::Id(id) => {
            k[..4].copy_from_slice(&id.to_ne_bytes());
            end[..4].copy_from_slice(&id.to_ne_bytes());
            4
        }
    };
    (k, end, n)
}

/// Elements as sorted `a` / `a-b` texts, from (key, inclusive end) wire bytes of a set
/// with key type `type_id`. Sorted by the bytes (numeric order for addresses and ports)
/// before formatting, so both sides of a comparison need no string sort.
fn elements_text(type_id: u32, ranges: &mut [(&[u8], &[u8])]) -> Vec<String> {
    ranges.sort_unstable();
    let mut out = Vec::with_capacity(ranges.len());
    for (key, end) in ranges.iter() {
        let mut s = String::with_capacity(32);
        push_wire_value(&mut s, type_id, key);
        if end != key {
            s.push('-');
            push_wire_value(&mut s, type_id, end);
        }
        out.push(s);
    }
    out
}

fn push_wire_value(out: &mut String, type_id: u32, b: &[u8]) {
    use std::fmt::Write as _;
    match (type_id, b.len()) {
        (7, 4) => {
            // By hand: Ipv4Addr's Display costs several times more, 20 000 times a verify.
            for (i, octet) in b.iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                let o = *octet;
                if o >= 100 {
                    out.push((b'0' + o / 100) as char);
                }
                if o >= 10 {
                    out.push((b'0' + o / 10 % 10) as char);
                }
                out.push((b'0' + o % 10) as char);
            }
        }
        (8, 16) => {
            let _ = write!(
                out,
                "{}",
                Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap_or_default())
            );
        }
        (13, 2) => {
            let _ = write!(out, "{}", u16::from_be_bytes([b[0], b[1]]));
        }
        (TYPE_UID | TYPE_GID, 4) => {
            let _ = write!(out, "{}", u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        }
        _ => out.push_str(&hex(b)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn nl_chain(table: &str, chain: &model::Chain, comment: &str) -> Result<nft::Chain> {
    let mut c = nft::Chain::new(table, chain.name.as_str())
        .map_err(|e| Error::invalid("chain name", &chain.name, e))?
        .family(Family::Inet)
        .comment(comment);
    if let Some(b) = chain.base {
        let prio = Priority::from_i32(b.priority);
        let base = match b.kind {
            model::ChainType::Nat => NlBase::nat(
                match b.hook {
                    model::Hook::Prerouting => NatHook::Prerouting,
                    model::Hook::Input => NatHook::Input,
                    model::Hook::Output => NatHook::Output,
                    model::Hook::Postrouting | model::Hook::Forward => NatHook::Postrouting,
                },
                prio,
            ),
            model::ChainType::Filter => NlBase::filter(
                match b.hook {
                    model::Hook::Prerouting => nft::FilterHook::Prerouting,
                    model::Hook::Input => nft::FilterHook::Input,
                    model::Hook::Forward => nft::FilterHook::Forward,
                    model::Hook::Output => nft::FilterHook::Output,
                    model::Hook::Postrouting => nft::FilterHook::Postrouting,
                },
                prio,
            ),
        };
        c = c.base(base.policy(nft::Policy::Accept));
    }
    Ok(c)
}

/// Lower one rule to the expressions nft itself generates for the same text, so that
/// `nft list` shows our rules exactly as the `--dry-run` script writes them.
fn nl_rule(table: &str, chain: &str, rule: &model::Rule, comment: &str) -> Result<nft::Rule> {
    let r0 = Register::R0;
    let meta = |key| Expr::Meta { dreg: r0, key };
    let cmp = |op, data: Vec<u8>| Expr::Cmp { sreg: r0, op, data };
    let payload = |base, offset, len| Expr::Payload {
        dreg: r0,
        base,
        offset,
        len,
    };
    let nfproto = |f: IpFamily| {
        [
            meta(MetaKey::NfProto),
            cmp(
                CmpOp::Eq,
                vec![if f == IpFamily::V4 {
                    NFPROTO_IPV4
                } else {
                    NFPROTO_IPV6
                }],
            ),
        ]
    };
    let daddr = |f: IpFamily| match f {
        IpFamily::V4 => payload(PayloadBase::Network, 16, 4),
        IpFamily::V6 => payload(PayloadBase::Network, 24, 16),
    };
    let saddr = |f: IpFamily| match f {
        IpFamily::V4 => payload(PayloadBase::Network, 12, 4),
        IpFamily::V6 => payload(PayloadBase::Network, 8, 16),
    };
    // `ip daddr 10.0.0.0/8`: load, mask unless a full prefix, compare.
    let prefix = |exprs: &mut Vec<Expr>, net: &ipnet::IpNet, load: &dyn Fn(IpFamily) -> Expr| {
        let (family, addr, mask): (IpFamily, Vec<u8>, Vec<u8>) = match net {
            ipnet::IpNet::V4(n) => (
                IpFamily::V4,
                n.network().octets().to_vec(),
                n.netmask().octets().to_vec(),
            ),
            ipnet::IpNet::V6(n) => (
                IpFamily::V6,
                n.network().octets().to_vec(),
                n.netmask().octets().to_vec(),
            ),
        };
        exprs.extend(nfproto(family));
        exprs.push(load(family));
        if net.prefix_len() != net.max_prefix_len() {
            let xor = vec![0; mask.len()];
            exprs.push(Expr::Bitwise {
                sreg: r0,
                dreg: r0,
                len: mask.len() as u32,
                mask,
                xor,
            });
        }
        exprs.push(cmp(CmpOp::Eq, addr));
    };
    let mut exprs: Vec<Expr> = Vec::new();
    for m in &rule.matches {
        match m {
            Match::NfProto(f) => exprs.extend(nfproto(*f)),
            Match::L4Proto { proto, negate } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(
                    if *negate { CmpOp::Neq } else { CmpOp::Eq },
                    vec![proto.number()],
                ));
            }
            Match::DaddrInSet { family, set } => {
                exprs.extend(nfproto(*family));
                exprs.push(daddr(*family));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::Daddr(net) => prefix(&mut exprs, net, &daddr),
            Match::Saddr(net) => prefix(&mut exprs, net, &saddr),
            Match::SaddrInSet { family, set } => {
                exprs.extend(nfproto(*family));
                exprs.push(saddr(*family));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::Sport { proto, port } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 0, 2));
                exprs.push(cmp(CmpOp::Eq, port.to_be_bytes().to_vec()));
            }
            Match::FibDaddrLocal { negate } => {
                // RTN_LOCAL, host order, as nft writes `fib daddr type local`.
                exprs.push(Expr::Fib {
                    dreg: r0,
                    result: nft::FibResult::AddrType,
                    flags: nft::FibFlags::DADDR,
                });
                exprs.push(cmp(
                    if *negate { CmpOp::Neq } else { CmpOp::Eq },
                    2u32.to_ne_bytes().to_vec(),
                ));
            }
            Match::CtState(states) => {
                let bits: u32 = states.iter().map(|s| s.bit()).fold(0, |a, b| a | b);
                exprs.push(Expr::Ct {
                    dreg: r0,
                    key: nft::CtKey::State,
                });
                exprs.push(Expr::Bitwise {
                    sreg: r0,
                    dreg: r0,
                    len: 4,
                    mask: bits.to_ne_bytes().to_vec(),
                    xor: vec![0; 4],
                });
                exprs.push(cmp(CmpOp::Neq, vec![0; 4]));
            }
            Match::Dport { proto, port } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 2, 2));
                exprs.push(cmp(CmpOp::Eq, port.to_be_bytes().to_vec()));
            }
            Match::DportRange { proto, first, last } => {
                // As nft writes `tcp dport 8000-9000`: two big-endian comparisons.
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 2, 2));
                exprs.push(cmp(CmpOp::Gte, first.to_be_bytes().to_vec()));
                exprs.push(cmp(CmpOp::Lte, last.to_be_bytes().to_vec()));
            }
            Match::DportInSet { proto, set } => {
                exprs.push(meta(MetaKey::L4Proto));
                exprs.push(cmp(CmpOp::Eq, vec![proto.number()]));
                exprs.push(payload(PayloadBase::Transport, 2, 2));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::OwnerInSet { owner, set } => {
                exprs.push(meta(owner_key(*owner)));
                exprs.push(Expr::Lookup(LookupExpr::new(set.as_str(), r0)));
            }
            Match::OwnerRange { owner, first, last } => {
                // skuid is host order; nft byte-swaps it so ranges compare as numbers.
                exprs.push(meta(owner_key(*owner)));
                exprs.push(Expr::Byteorder {
                    sreg: r0,
                    dreg: r0,
                    op: ByteorderOp::Hton,
                    len: 4,
                    size: 4,
                });
                exprs.push(cmp(CmpOp::Gte, first.to_be_bytes().to_vec()));
                exprs.push(cmp(CmpOp::Lte, last.to_be_bytes().to_vec()));
            }
        }
    }
    if let Action::DnatMap { family, proto, .. } = &rule.action {
        if !rule.matches.is_empty() {
            return Err(Error::runtime(format!(
                "a dnat map rule takes no other matches (chain {chain})"
            )));
        }
        exprs.extend(dnat_map_exprs(
            *family,
            *proto,
            dnat_map_set_id(chain, rule),
        ));
    }
    let rule_b = nft::Rule::new(table, chain)
        .family(Family::Inet)
        .expressions(exprs)
        .comment(comment);
    Ok(match &rule.action {
        Action::Accept => rule_b.accept(),
        Action::Drop => rule_b.drop(),
        Action::Jump(chain) => rule_b.then(Verdict::JumpTo(chain_name(chain)?)),
        Action::Goto(chain) => rule_b.then(Verdict::GotoTo(chain_name(chain)?)),
        Action::Notrack => rule_b.notrack(),
        Action::Masquerade {
            fully_random: false,
        } => rule_b.masquerade(),
        Action::Masquerade { fully_random: true } => {
            rule_b.nat(nft::NatStatement::masquerade().fully_random())
        }
        Action::Return => rule_b.then(Verdict::Return),
        Action::Redirect { port } => rule_b.redirect(Some(*port)),
        Action::Dnat {
            addr: IpAddr::V4(a),
            port,
        } => rule_b.dnat(*a, Some(*port)),
        Action::Dnat {
            addr: IpAddr::V6(a),
            port,
        } => rule_b.dnat_v6(*a, Some(*port)),
        // Its lookup and nat are among the expressions.
        Action::DnatMap { .. } => rule_b,
    })
}

fn chain_name(name: &str) -> Result<nft::ChainName> {
    nft::ChainName::new(name).map_err(|e| Error::invalid("chain name", name, e))
}

fn owner_key(o: Owner) -> MetaKey {
    match o {
        Owner::Uid => MetaKey::SkUid,
        Owner::Gid => MetaKey::SkGid,
    }
}

// ---------------------------------------------------------------------------
// DNAT maps: `dnat ip to ip daddr . tcp dport map { A . P : B . Q, ... }`, lowered as nft
// 1.0.6 lowers the same text (`nft --debug=netlink`): an anonymous constant map `__map%d`
// (key and data `ipv4_addr . inet_service`, each field padded to 4 bytes) created in the
// batch right before its rule, then
//   meta load nfproto => reg 1; cmp eq reg 1 ipv4
//   meta load l4proto => reg 1; cmp eq reg 1 tcp
//   payload load 4b @ network header + 16 => reg 1
//   payload load 2b @ transport header + 2 => reg 9
//   lookup reg 1 set __map%d dreg 1
//   nat dnat ip addr_min reg 1 proto_min reg 9
// (IPv6: 16 address bytes, so the port goes to reg 2). nlink has no anonymous sets and no
// register-level nat, so the set, its elements, the lookup and the nat are written here.
// nlink's rule lifter cannot print such a rule; `dnat_map_rule_text` reads it back.
// ---------------------------------------------------------------------------

const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
/// The name nft gives an anonymous map; the kernel numbers it (`__map0`).
const ANON_MAP_NAME: &str = "__map%d";

/// Key (and data) layout of a DNAT map for `family`: nft's concatenated type id, the
/// padded length in bytes, and the register the port lands in.
fn dnat_map_layout(family: IpFamily) -> (u32, u32, Register) {
    const TYPE_BITS: u32 = 6;
    const INET_SERVICE: u32 = 13;
    match family {
        IpFamily::V4 => ((7 << TYPE_BITS) | INET_SERVICE, 8, Register::Reg32_01),
        IpFamily::V6 => ((8 << TYPE_BITS) | INET_SERVICE, 20, Register::R1),
    }
}

/// A batch-unique id for the map of `rule` in `chain` (the rule's lookup names it by this
/// id, since the kernel only names the set at commit). Derived from the chain and the
/// rule's text so `nl_rule` and `build_batch` agree without passing state.
fn dnat_map_set_id(chain: &str, rule: &model::Rule) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in chain
        .bytes()
        .chain([0])
        .chain(crate::render::rule_text(rule).into_bytes())
    {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    0x5000_0000 | (h & 0x0fff_ffff)
}

/// `ip daddr . tcp dport` as nft records it in the set's userdata (typeof of the key), so
/// `nft list` reads our map exactly as one it made itself.
fn dnat_map_udata(family: IpFamily, proto: model::L4Proto) -> Vec<u8> {
    const KEYBYTEORDER: u8 = 0;
    const DATABYTEORDER: u8 = 1;
    const KEY_TYPEOF: u8 = 3;
    const DATA_INTERVAL: u8 = 6;
    const TYPEOF_EXPR: u8 = 0;
    const TYPEOF_DATA: u8 = 1;
    const EXPR_PAYLOAD: u32 = 7;
    const EXPR_CONCAT: u32 = 13;
    let u32_item = |buf: &mut Vec<u8>, kind: u8, v: u32| {
        buf.push(kind);
        buf.push(4);
        buf.extend_from_slice(&v.to_ne_bytes());
    };
    let nest = |buf: &mut Vec<u8>, kind: u8, inner: Vec<u8>| {
        buf.push(kind);
        buf.push(inner.len() as u8);
        buf.extend_from_slice(&inner);
    };
    // (proto desc, field) of nft's payload templates.
    let (net_desc, net_field) = match family {
        IpFamily::V4 => (12, 12),
        IpFamily::V6 => (13, 9),
    };
    let l4_desc = match proto {
        model::L4Proto::Tcp => 8,
        model::L4Proto::Udp => 6,
        model::L4Proto::Sctp => 10,
    };
    let payload = |desc: u32, field: u32| {
        let mut data = Vec::new();
        u32_item(&mut data, 0, desc);
        u32_item(&mut data, 1, field);
        let mut e = Vec::new();
        u32_item(&mut e, TYPEOF_EXPR, EXPR_PAYLOAD);
        nest(&mut e, TYPEOF_DATA, data);
        e
    };
    let mut parts = Vec::new();
    nest(&mut parts, 0, payload(net_desc, net_field));
    nest(&mut parts, 1, payload(l4_desc, 2));
    let mut key = Vec::new();
    u32_item(&mut key, TYPEOF_EXPR, EXPR_CONCAT);
    nest(&mut key, TYPEOF_DATA, parts);
    let mut out = Vec::new();
    u32_item(&mut out, KEYBYTEORDER, 0);
    u32_item(&mut out, DATABYTEORDER, 0);
    nest(&mut out, KEY_TYPEOF, key);
    u32_item(&mut out, DATA_INTERVAL, 0);
    out
}

/// Address and port as one padded map field.
fn addr_port_bytes(sa: &std::net::SocketAddr) -> Vec<u8> {
    let mut v = match sa.ip() {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    v.extend_from_slice(&sa.port().to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

/// NEWSET and NEWSETELEM messages of the anonymous map of a `DnatMap` rule.
fn dnat_map_messages(
    table: &str,
    family: IpFamily,
    proto: model::L4Proto,
    entries: &[(std::net::SocketAddr, std::net::SocketAddr)],
    set_id: u32,
) -> Vec<nft::RawMessage> {
    let (type_id, len, _) = dnat_map_layout(family);
    let flags = nft::NFT_SET_ANONYMOUS | nft::NFT_SET_CONSTANT | nft::NFT_SET_MAP;
    let mut attrs = Vec::new();
    put_attr(&mut attrs, nft::NFTA_SET_TABLE, &nul_terminated(table));
    put_attr(
        &mut attrs,
        nft::NFTA_SET_NAME,
        &nul_terminated(ANON_MAP_NAME),
    );
    put_attr(&mut attrs, nft::NFTA_SET_FLAGS, &flags.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_TYPE, &type_id.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_KEY_LEN, &len.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_DATA_TYPE, &type_id.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_DATA_LEN, &len.to_be_bytes());
    put_attr(&mut attrs, nft::NFTA_SET_ID, &set_id.to_be_bytes());
    let mut desc = Vec::new();
    put_attr(
        &mut desc,
        nft::NFTA_SET_DESC_SIZE,
        &(entries.len() as u32).to_be_bytes(),
    );
    put_attr(&mut attrs, nft::NFTA_SET_DESC | NLA_F_NESTED, &desc);
    put_attr(
        &mut attrs,
        nft::NFTA_SET_USERDATA,
        &dnat_map_udata(family, proto),
    );
    let create = libc::NLM_F_CREATE as u16 | libc::NLM_F_EXCL as u16;
    let mut out = vec![
        nft::RawMessage::new(nft::NFT_MSG_NEWSET, Family::Inet)
            .flags(create)
            .attrs(attrs),
    ];
    for chunk in entries.chunks(ELEMENTS_PER_MESSAGE) {
        let mut elements = Vec::new();
        for (orig, target) in chunk {
            let mut key = Vec::new();
            put_attr(&mut key, nft::NFTA_DATA_VALUE, &addr_port_bytes(orig));
            let mut data = Vec::new();
            put_attr(&mut data, nft::NFTA_DATA_VALUE, &addr_port_bytes(target));
            let mut elem = Vec::new();
            put_attr(&mut elem, nft::NFTA_SET_ELEM_KEY | NLA_F_NESTED, &key);
            put_attr(&mut elem, nft::NFTA_SET_ELEM_DATA | NLA_F_NESTED, &data);
            put_attr(&mut elements, nft::NFTA_LIST_ELEM | NLA_F_NESTED, &elem);
        }
        let mut attrs = Vec::new();
        put_element_list_head(&mut attrs, table, ANON_MAP_NAME);
        put_attr(&mut attrs, NFTA_SET_ELEM_LIST_SET_ID, &set_id.to_be_bytes());
        put_attr(
            &mut attrs,
            nft::NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED,
            &elements,
        );
        out.push(
            nft::RawMessage::new(nft::NFT_MSG_NEWSETELEM, Family::Inet)
                .flags(create)
                .attrs(attrs),
        );
    }
    out
}

/// The expressions of a `DnatMap` rule whose map has batch id `set_id`.
fn dnat_map_exprs(family: IpFamily, proto: model::L4Proto, set_id: u32) -> Vec<Expr> {
    let r0 = Register::R0;
    let (_, _, port_reg) = dnat_map_layout(family);
    let (nfproto, addr_off, addr_len, nat_family) = match family {
        IpFamily::V4 => (NFPROTO_IPV4, 16, 4, 2u32),
        IpFamily::V6 => (NFPROTO_IPV6, 24, 16, 10u32),
    };
    let mut lookup = Vec::new();
    put_attr(&mut lookup, nft::NFTA_LOOKUP_SREG, &1u32.to_be_bytes());
    put_attr(&mut lookup, nft::NFTA_LOOKUP_DREG, &1u32.to_be_bytes());
    put_attr(
        &mut lookup,
        nft::NFTA_LOOKUP_SET,
        &nul_terminated(ANON_MAP_NAME),
    );
    put_attr(&mut lookup, nft::NFTA_LOOKUP_SET_ID, &set_id.to_be_bytes());
    let mut nat = Vec::new();
    put_attr(&mut nat, nft::NFTA_NAT_TYPE, &1u32.to_be_bytes());
    put_attr(&mut nat, nft::NFTA_NAT_FAMILY, &nat_family.to_be_bytes());
    put_attr(&mut nat, nft::NFTA_NAT_REG_ADDR_MIN, &1u32.to_be_bytes());
    put_attr(
        &mut nat,
        nft::NFTA_NAT_REG_PROTO_MIN,
        &port_reg.wire().to_be_bytes(),
    );
    vec![
        Expr::Meta {
            dreg: r0,
            key: MetaKey::NfProto,
        },
        Expr::Cmp {
            sreg: r0,
            op: CmpOp::Eq,
            data: vec![nfproto],
        },
        Expr::Meta {
            dreg: r0,
            key: MetaKey::L4Proto,
        },
        Expr::Cmp {
            sreg: r0,
            op: CmpOp::Eq,
            data: vec![proto.number()],
        },
        Expr::Payload {
            dreg: r0,
            base: PayloadBase::Network,
            offset: addr_off,
            len: addr_len,
        },
        Expr::Payload {
            dreg: port_reg,
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
        },
        Expr::Raw(nft::RawExpr::new("lookup", lookup)),
        Expr::Raw(nft::RawExpr::new("nat", nat)),
    ]
}

/// An anonymous map read back: key type and (key, data) byte pairs.
struct AnonMap {
    key_type: u32,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Canonical snapshot text of a DNAT map rule: entries sorted, since the kernel lists a
/// map's elements in its own order.
fn dnat_map_snapshot_text(
    family: IpFamily,
    proto: model::L4Proto,
    entries: &[(std::net::SocketAddr, std::net::SocketAddr)],
    comment: Option<&str>,
) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort();
    let body = crate::render::dnat_map_text(family, proto, &sorted);
    match comment {
        Some(c) => format!("{body} comment \"{c}\""),
        None => body,
    }
}

/// Read back a rule of exactly the `DnatMap` shape; None for anything else.
fn dnat_map_rule_text(
    r: &nft::RuleInfo,
    anon: &std::collections::HashMap<String, AnonMap>,
) -> Option<String> {
    use nft::RuleExpr as E;
    let exprs = r.expressions();
    let [
        E::Meta {
            key: MetaKey::NfProto,
            ..
        },
        E::Cmp {
            op: CmpOp::Eq,
            data: nfproto,
            ..
        },
        E::Meta {
            key: MetaKey::L4Proto,
            ..
        },
        E::Cmp {
            op: CmpOp::Eq,
            data: l4,
            ..
        },
        E::Payload {
            base: PayloadBase::Network,
            offset: addr_off,
            dreg: addr_reg,
            ..
        },
        E::Payload {
            base: PayloadBase::Transport,
            offset: 2,
            len: 2,
            dreg: port_reg,
            ..
        },
        E::Lookup {
            set,
            sreg,
            dreg: Some(map_reg),
            invert: false,
            ..
        },
        E::Nat {
            nat_type: nft::NatType::Dnat,
            addr: Some((nat_addr, _)),
            proto: Some((nat_port, _)),
            ..
        },
    ] = exprs.as_slice()
    else {
        return None;
    };
    let family = match nfproto.as_slice() {
        [NFPROTO_IPV4] => IpFamily::V4,
        [NFPROTO_IPV6] => IpFamily::V6,
        _ => return None,
    };
    let proto = match l4.as_slice() {
        [6] => model::L4Proto::Tcp,
        [17] => model::L4Proto::Udp,
        [132] => model::L4Proto::Sctp,
        _ => return None,
    };
    let (type_id, len, want_port_reg) = dnat_map_layout(family);
    let want_off = if family == IpFamily::V4 { 16 } else { 24 };
    if *addr_off != want_off
        || *addr_reg != Register::R0
        || *sreg != Register::R0
        || *map_reg != Register::R0
        || *nat_addr != Register::R0
        || *port_reg != want_port_reg
        || *nat_port != want_port_reg
    {
        return None;
    }
    let map = anon.get(set)?;
    if map.key_type != type_id {
        return None;
    }
    let field = |b: &[u8]| -> Option<std::net::SocketAddr> {
        if b.len() != len as usize {
            return None;
        }
        let a = (len - 4) as usize;
        let ip: IpAddr = match family {
            IpFamily::V4 => Ipv4Addr::from(<[u8; 4]>::try_from(&b[..a]).ok()?).into(),
            IpFamily::V6 => Ipv6Addr::from(<[u8; 16]>::try_from(&b[..a]).ok()?).into(),
        };
        Some(std::net::SocketAddr::new(
            ip,
            u16::from_be_bytes([b[a], b[a + 1]]),
        ))
    };
    let entries = map
        .entries
        .iter()
        .map(|(k, d)| Some((field(k)?, field(d)?)))
        .collect::<Option<Vec<_>>>()?;
    Some(dnat_map_snapshot_text(
        family,
        proto,
        &entries,
        r.comment_text.as_deref(),
    ))
}
