//! Backend-neutral desired state: the content of the one `inet` table a command owns.
//!
//! Pure data, no I/O. Commands build a [`Ruleset`] with pure functions; backends render
//! (`render.rs`, nft text) or lower it (`backend/netlink/`, nf_tables expressions).

use std::net::IpAddr;

pub mod delta;
pub mod eval;
#[cfg(test)]
pub(crate) mod fixtures;
mod validate;
pub use validate::{LOG_PREFIX_MAX, NAME_MAX};

use ipnet::{Ipv4Net, Ipv6Net};

/// Everything nftkit puts in one owned table (family `inet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    /// Table name, `nftkit-<command>` unless `--table` says otherwise.
    pub table: String,
    /// Ownership comment: `managed by nftkit <command>`; also on chains, sets and rules.
    pub comment: String,
    pub sets: Vec<Set>,
    /// Verdict maps (`map NAME { type K : verdict; }`), declared after the sets.
    pub maps: Vec<VerdictMap>,
    pub chains: Vec<Chain>,
}

/// `set NAME { type KEY; [flags interval;] elements = { ... } }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub key: KeyType,
    /// `flags interval`: elements may be prefixes or ranges.
    pub interval: bool,
    pub elements: Vec<Element>,
}

/// `map NAME { type ipv4_addr : verdict; elements = { 10.244.1.5 : goto CHAIN, ... } }`:
/// one hash lookup picks the regular chain for a packet's address (per-pod dispatch that
/// costs the same for 10 pods or 1,000). Keys are single addresses (`/32`, `/128`), of the
/// map's key type (`Ipv4Addr` or `Ipv6Addr`); no interval flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictMap {
    pub name: String,
    pub key: KeyType,
    /// (address, chain the packet goes to), sorted by address.
    pub entries: Vec<(Element, String)>,
}

/// Which address of the packet a lookup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrField {
    /// `ip saddr` / `ip6 saddr`
    Saddr,
    /// `ip daddr` / `ip6 daddr`
    Daddr,
}

impl AddrField {
    pub fn nft_name(self) -> &'static str {
        match self {
            AddrField::Saddr => "saddr",
            AddrField::Daddr => "daddr",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// `ipv4_addr`
    Ipv4Addr,
    /// `ipv6_addr`
    Ipv6Addr,
    /// `inet_service` (a TCP/UDP port)
    InetService,
    /// `uid` (host byte order, like `meta skuid`)
    Uid,
    /// `gid`
    Gid,
}

impl KeyType {
    pub fn nft_name(self) -> &'static str {
        match self {
            KeyType::Ipv4Addr => "ipv4_addr",
            KeyType::Ipv6Addr => "ipv6_addr",
            KeyType::InetService => "inet_service",
            KeyType::Uid => "uid",
            KeyType::Gid => "gid",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Element {
    V4(Ipv4Net),
    V6(Ipv6Net),
    Port(u16),
    /// A uid or gid.
    Id(u32),
}

impl From<ipnet::IpNet> for Element {
    fn from(n: ipnet::IpNet) -> Self {
        match n {
            ipnet::IpNet::V4(n) => Element::V4(n),
            ipnet::IpNet::V6(n) => Element::V6(n),
        }
    }
}

/// A single address (`/32`, `/128`).
impl From<IpAddr> for Element {
    fn from(a: IpAddr) -> Self {
        Element::from(ipnet::IpNet::from(a))
    }
}

/// As nft writes it: a single address without its prefix length.
impl std::fmt::Display for Element {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Element::V4(n) if n.prefix_len() == 32 => write!(f, "{}", n.addr()),
            Element::V4(n) => write!(f, "{n}"),
            Element::V6(n) if n.prefix_len() == 128 => write!(f, "{}", n.addr()),
            Element::V6(n) => write!(f, "{n}"),
            Element::Port(p) => write!(f, "{p}"),
            Element::Id(id) => write!(f, "{id}"),
        }
    }
}

/// A chain of the owned table. Base chains carry a hook; regular chains are jump targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub base: Option<BaseChain>,
    pub rules: Vec<Rule>,
}

/// `type T hook H priority P; policy accept;` — no policy field: we share hooks with other
/// tables, so base chains always accept and drops are explicit rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaseChain {
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    Prerouting,
    Input,
    Forward,
    Output,
    Postrouting,
}

/// Standard priorities (nft names in comments).
pub mod priority {
    /// `raw`
    pub const RAW: i32 = -300;
    /// `dstnat` (prerouting, output)
    pub const DSTNAT: i32 = -100;
    /// `filter`
    pub const FILTER: i32 = 0;
    /// `srcnat` (postrouting, input)
    pub const SRCNAT: i32 = 100;
}

impl ChainType {
    pub fn nft_name(self) -> &'static str {
        match self {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        }
    }
}

impl Hook {
    pub fn nft_name(self) -> &'static str {
        match self {
            Hook::Prerouting => "prerouting",
            Hook::Input => "input",
            Hook::Forward => "forward",
            Hook::Output => "output",
            Hook::Postrouting => "postrouting",
        }
    }
}

/// One rule: all matches must hold, then the action runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// The family of a prefix.
    pub fn of(net: &ipnet::IpNet) -> IpFamily {
        match net {
            ipnet::IpNet::V4(_) => IpFamily::V4,
            ipnet::IpNet::V6(_) => IpFamily::V6,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Proto {
    Tcp,
    Udp,
    /// `sctp` (protocol 132; `sctp dport` is at the same offset as TCP's and UDP's)
    Sctp,
}

impl L4Proto {
    pub fn number(self) -> u8 {
        match self {
            L4Proto::Tcp => 6,
            L4Proto::Udp => 17,
            L4Proto::Sctp => 132,
        }
    }
    pub fn nft_name(self) -> &'static str {
        match self {
            L4Proto::Tcp => "tcp",
            L4Proto::Udp => "udp",
            L4Proto::Sctp => "sctp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `meta nfproto ipv4|ipv6`
    NfProto(IpFamily),
    /// `meta l4proto [!=] tcp`
    L4Proto { proto: L4Proto, negate: bool },
    /// `ip daddr @set` / `ip6 daddr @set` (the set's key type picks the family).
    DaddrInSet { family: IpFamily, set: String },
    /// `ip daddr 10.0.0.0/8` / `ip6 daddr ::1`
    Daddr(ipnet::IpNet),
    /// `ip saddr @set` / `ip6 saddr @set`
    SaddrInSet { family: IpFamily, set: String },
    /// `ip saddr 10.0.0.0/8` / `ip6 saddr ::1`
    Saddr(ipnet::IpNet),
    /// `tcp dport 80`
    Dport { proto: L4Proto, port: u16 },
    /// `tcp sport 443`
    Sport { proto: L4Proto, port: u16 },
    /// `tcp dport 8000-9000` (inclusive; `first < last`)
    DportRange {
        proto: L4Proto,
        first: u16,
        last: u16,
    },
    /// `fib daddr type [!=] local`: the destination is (not) an address of this host.
    FibDaddrLocal { negate: bool },
    /// `ct state established,related`: any of the listed states.
    CtState(Vec<CtState>),
    /// `tcp dport @set`
    DportInSet { proto: L4Proto, set: String },
    /// `meta skuid @set` / `meta skgid @set` (non-interval set, host byte order)
    OwnerInSet { owner: Owner, set: String },
    /// `meta skuid 2000-2999` (inclusive)
    OwnerRange { owner: Owner, first: u32, last: u32 },
    /// `counter name "NAME"`: not a condition (it always holds) but a statement where it
    /// stands: adds the packets that got this far to the table's named counter NAME
    /// (declared by the table because a rule names it, see [`Ruleset::counters`]).
    Count { counter: String },
    /// `limit name "NAME"`: holds while the table's named limit NAME (at most
    /// `per_second` packets a second, shared by every rule naming it) has room. Declared
    /// by the table because a rule names it (see [`Ruleset::limits`]).
    Limit { name: String, per_second: u32 },
    /// `log prefix "PREFIX" group GROUP`: a statement (it always holds): sends the packet
    /// to nfnetlink_log group GROUP with PREFIX (at most 127 bytes).
    Log { group: u16, prefix: String },
}

/// Conntrack states (`ct state`), with the kernel's bit values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtState {
    Invalid,
    Established,
    Related,
    New,
    Untracked,
}

impl CtState {
    pub fn bit(self) -> u32 {
        match self {
            CtState::Invalid => 1,
            CtState::Established => 2,
            CtState::Related => 4,
            CtState::New => 8,
            CtState::Untracked => 64,
        }
    }
    pub fn nft_name(self) -> &'static str {
        match self {
            CtState::Invalid => "invalid",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::New => "new",
            CtState::Untracked => "untracked",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Uid,
    Gid,
}

impl Owner {
    pub fn nft_key(self) -> &'static str {
        match self {
            Owner::Uid => "skuid",
            Owner::Gid => "skgid",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Accept,
    Drop,
    /// `jump CHAIN`: run a regular chain of the owned table, then continue here.
    Jump(String),
    /// `goto CHAIN`: run a regular chain and do not come back.
    Goto(String),
    /// `ip saddr vmap @MAP` (`ip6 ...` for `family` V6): look the packet's address up in
    /// the verdict map MAP and `goto` the chain it names; not in the map: the next rule.
    GotoMap {
        family: IpFamily,
        field: AddrField,
        map: String,
    },
    /// `notrack`: skip connection tracking (raw chains only).
    Notrack,
    /// `masquerade [fully-random]` (nat postrouting).
    Masquerade {
        fully_random: bool,
    },
    /// Leave this chain: in a nat chain, "no NAT here" (iptables `-t nat ... -j ACCEPT`).
    Return,
    /// No verdict: the rule's statements (count, log) run and the next rule follows.
    Continue,
    /// `redirect to :PORT` — to the local address of the packet's family.
    Redirect {
        port: u16,
    },
    /// `dnat ip to A:PORT` / `dnat ip6 to [A]:PORT`
    Dnat {
        addr: IpAddr,
        port: u16,
    },
    /// `dnat ip to ip daddr . tcp dport map { 169.254.169.254 . 80 : 198.51.100.5 . 8080, ... }`:
    /// each listed destination address and port is DNATed to its own target (an anonymous
    /// map, constant, created with the rule). The map's key is the match: such a rule takes
    /// no other matches. Every address (keys and targets) is of `family`.
    DnatMap {
        family: IpFamily,
        proto: L4Proto,
        /// (original destination, target), in the order nft lists them after loading.
        entries: Vec<(std::net::SocketAddr, std::net::SocketAddr)>,
    },
}

impl Ruleset {
    /// The named counters the rules count into, sorted and each once: the table declares
    /// them (`counter NAME { }`) before its sets.
    pub fn counters(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|r| &r.matches)
            .filter_map(|m| match m {
                Match::Count { counter } => Some(counter.as_str()),
                _ => None,
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// The named limits the rules use, sorted by name, each once, with its rate (the
    /// first rule's: `validate` refuses two rates for one name).
    pub fn limits(&self) -> Vec<(&str, u32)> {
        let mut limits: Vec<(&str, u32)> = self
            .chains
            .iter()
            .flat_map(|c| &c.rules)
            .flat_map(|r| &r.matches)
            .filter_map(|m| match m {
                Match::Limit { name, per_second } => Some((name.as_str(), *per_second)),
                _ => None,
            })
            .collect();
        limits.sort_by_key(|l| l.0);
        limits.dedup_by_key(|l| l.0);
        limits
    }

    /// The verdict map named `name`, if declared.
    pub fn map(&self, name: &str) -> Option<&VerdictMap> {
        self.maps.iter().find(|m| m.name == name)
    }

    /// The set named `name`, if declared.
    pub fn set(&self, name: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.name == name)
    }

    /// Number of rules over all chains.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}
