//! `nftkit dnat`: the iptables routing mode gke-metadata-server never shipped (its issue
//! #345), as a node daemon: send connections for `ORIG_IP:PORT` (169.254.169.254:80) to
//! `TARGET_IP:PORT` (the emulator), from host processes (nat output) and from pods routed
//! through this node (nat prerouting), minus sockets of `--accept-uids`/`--accept-gids` so
//! the emulator itself still reaches the real metadata server (upstream issue #424).
//!
//! Table `inet nftkit-dnat`:
//!
//! ```text
//! set accept-uids { type uid; elements = { 988 } }
//! chain nat-prerouting { type nat hook prerouting priority -100;           # dstnat
//!     ip daddr 169.254.169.254 tcp dport 80 dnat ip to 198.51.100.5:8080 }
//! chain nat-output { type nat hook output priority -100;
//!     meta skuid @accept-uids return                 # -m owner --uid-owner U -j RETURN
//!     ip daddr 169.254.169.254 tcp dport 80 dnat ip to 198.51.100.5:8080 }
//! chain filter-forward { type filter hook forward priority 0;
//!     ip daddr 198.51.100.5 tcp dport 8080 ct state established,related,new accept
//!     ip saddr 198.51.100.5 tcp sport 8080 ct state established,related accept }
//! ```
//! Several maps of one family become one rule over an anonymous map:
//! `dnat ip to ip daddr . tcp dport map { 169.254.169.254 . 80 : 198.51.100.5 . 8080, ... }`.
//! iptables equivalent: `-t nat -A OUTPUT|PREROUTING -d ORIG -p tcp --dport P -j DNAT
//! --to-destination TARGET:PORT` and `-A FORWARD -d TARGET -p tcp --dport PORT -m state
//! --state NEW,ESTABLISHED,RELATED -j ACCEPT` (the port is kept; upstream's PR #360 lost it)
//! plus the replies, `-A FORWARD -s TARGET -p tcp --sport PORT -m state --state
//! ESTABLISHED,RELATED -j ACCEPT`: with `iptables -P FORWARD DROP` (Docker sets it) the
//! target's answers are forwarded too, so a pod's DNATed connection completes. (The reply
//! is seen in forward with the target's address: the source of a reply to a DNATed
//! connection is rewritten back to ORIG only at postrouting.)
//! The forward accepts are two rules per target: a few targets, and the model has no
//! concatenated sets (an address set and a port set would also accept their cross product).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::jobs::GoDaemonArgs;
use crate::jobs::foreign_drop::ForeignDropWatch;
use crate::model::*;
use crate::parse::{self, IdKind, IdRange};
use crate::runner;

pub const COMMAND: &str = "dnat";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Flags of `nftkit dnat`. Boolean flags take Go's forms (`--daemon=false`), as
/// `local-address`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct DnatArgs {
    /// ORIG_IP:PORT=TARGET_IP:PORT (IPv6 as [addr]:port); repeatable or comma-separated
    /// [required]
    #[arg(long = "map", value_name = "ORIG=TARGET")]
    pub map: Vec<String>,
    /// Transport protocol of the mapped ports
    #[arg(long, value_enum, default_value = "tcp")]
    pub protocol: Protocol,
    /// Where to DNAT: output (host processes), prerouting (routed pods), or both
    #[arg(long, value_name = "LIST", default_value = "output,prerouting")]
    pub hooks: String,
    /// UIDs whose sockets are not DNATed (output hook): numbers, ranges a-b or names
    #[arg(long, value_name = "LIST")]
    pub accept_uids: Option<String>,
    /// GIDs whose sockets are not DNATed (output hook)
    #[arg(long, value_name = "LIST")]
    pub accept_gids: Option<String>,
    #[command(flatten)]
    pub run: GoDaemonArgs,
}

/// One `--map` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mapping {
    pub orig: SocketAddr,
    pub target: SocketAddr,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnatConfig {
    /// Sorted by original destination.
    pub maps: Vec<Mapping>,
    pub proto: L4Proto,
    pub output: bool,
    pub prerouting: bool,
    pub accept_uids: Vec<IdRange>,
    pub accept_gids: Vec<IdRange>,
    pub daemon: bool,
    pub cleanup: bool,
    pub interval: Duration,
    pub persist: bool,
}

/// `IP:PORT` or `[IPv6]:PORT`, both parts required.
fn endpoint(entry: &str, raw: &str, which: &str) -> Result<SocketAddr> {
    let bad = |why: String| Error::invalid("--map", entry, why);
    let raw = raw.trim();
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (h, p) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("{which} {raw:?}: missing ']'")))?;
        let p = p.strip_prefix(':').ok_or_else(|| {
            bad(format!(
                "{which} {raw:?}: port missing (expected [addr]:port)"
            ))
        })?;
        (h, p)
    } else {
        match raw.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(bad(format!(
                    "{which} {raw:?}: write an IPv6 address with its port as [addr]:port"
                )));
            }
            Some((h, p)) => (h, p),
            None => {
                return Err(bad(format!(
                    "{which} {raw:?}: port missing (expected IP:PORT)"
                )));
            }
        }
    };
    let ip: IpAddr = host
        .parse()
        .map_err(|_| bad(format!("{which} {raw:?}: {host:?} is not an IP address")))?;
    if raw.starts_with('[') && ip.is_ipv4() {
        return Err(bad(format!(
            "{which} {raw:?}: brackets are for IPv6 addresses"
        )));
    }
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad(format!("{which} {raw:?}: expected a unicast address")));
    }
    if let Some(why) = parse::ipv4_mapped_refusal(ip) {
        return Err(bad(format!("{which} {raw:?}: {why}")));
    }
    let port = match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) && port.bytes().all(|b| b.is_ascii_digit()) => p as u16,
        _ => {
            return Err(bad(format!(
                "{which} {raw:?}: port must be a number 1-65535"
            )));
        }
    };
    Ok(SocketAddr::new(ip, port))
}

/// One `ORIG=TARGET` entry.
pub fn mapping(entry: &str) -> Result<Mapping> {
    let Some((o, t)) = entry.split_once('=') else {
        return Err(Error::invalid(
            "--map",
            entry,
            "expected ORIG_IP:PORT=TARGET_IP:PORT (IPv6 as [addr]:port)",
        ));
    };
    let orig = endpoint(entry, o, "original")?;
    let target = endpoint(entry, t, "target")?;
    if orig.is_ipv4() != target.is_ipv4() {
        return Err(Error::invalid(
            "--map",
            entry,
            "original and target must be of the same family (both IPv4 or both IPv6)",
        ));
    }
    if orig == target {
        return Err(Error::invalid(
            "--map",
            entry,
            "target equals the original destination",
        ));
    }
    Ok(Mapping { orig, target })
}

pub fn parse(args: &DnatArgs, db_root: &Path) -> Result<DnatConfig> {
    let mut maps: Vec<Mapping> = Vec::new();
    if args.map.is_empty() {
        return Err(Error::Usage(
            "--map is required: ORIG_IP:PORT=TARGET_IP:PORT, e.g. --map 169.254.169.254:80=10.0.0.5:8080".into(),
        ));
    }
    for raw in &args.map {
        let items = parse::list("--map", raw)?;
        if items.is_empty() {
            return Err(Error::invalid(
                "--map",
                raw,
                "expected ORIG_IP:PORT=TARGET_IP:PORT (IPv6 as [addr]:port)",
            ));
        }
        for item in items {
            let m = mapping(item)?;
            if let Some(prev) = maps.iter().find(|p| p.orig == m.orig) {
                return Err(Error::invalid(
                    "--map",
                    item,
                    format!(
                        "original destination {} is already mapped to {}",
                        m.orig, prev.target
                    ),
                ));
            }
            maps.push(m);
        }
    }
    maps.sort();
    let mut output = false;
    let mut prerouting = false;
    let hooks = parse::list("--hooks", &args.hooks)?;
    if hooks.is_empty() {
        return Err(Error::invalid(
            "--hooks",
            &args.hooks,
            "expected output, prerouting or both",
        ));
    }
    for h in hooks {
        match h {
            "output" => output = true,
            "prerouting" => prerouting = true,
            _ => {
                return Err(Error::invalid(
                    "--hooks",
                    &args.hooks,
                    format!("unknown hook {h:?}: expected output, prerouting or both"),
                ));
            }
        }
    }
    let ids = |flag: &Option<String>, what: &str, kind| -> Result<Vec<IdRange>> {
        let Some(raw) = flag else {
            return Ok(Vec::new());
        };
        let mut out = parse::list(what, raw)?
            .into_iter()
            .map(|i| parse::id(what, i, kind, db_root))
            .collect::<Result<Vec<_>>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    };
    let accept_uids = ids(&args.accept_uids, "--accept-uids", IdKind::User)?;
    let accept_gids = ids(&args.accept_gids, "--accept-gids", IdKind::Group)?;
    if !output && (!accept_uids.is_empty() || !accept_gids.is_empty()) {
        return Err(Error::Usage(
            "--accept-uids/--accept-gids need the output hook (--hooks with output): prerouting traffic has no local socket".into(),
        ));
    }
    Ok(DnatConfig {
        maps,
        proto: match args.protocol {
            Protocol::Tcp => L4Proto::Tcp,
            Protocol::Udp => L4Proto::Udp,
        },
        output,
        prerouting,
        accept_uids,
        accept_gids,
        daemon: args.run.daemon,
        cleanup: args.run.cleanup,
        interval: parse::interval("--sync-interval", &args.run.sync_interval)?,
        persist: args.run.persist,
    })
}

/// The DNAT rules (one per family): a plain rule for one mapping, a map for several.
fn dnat_rules(cfg: &DnatConfig) -> Vec<Rule> {
    let mut rules = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        let maps: Vec<&Mapping> = cfg
            .maps
            .iter()
            .filter(|m| m.orig.is_ipv4() == (family == IpFamily::V4))
            .collect();
        match maps.as_slice() {
            [] => {}
            [m] => rules.push(Rule {
                matches: vec![
                    Match::Daddr(ipnet::IpNet::from(m.orig.ip())),
                    Match::Dport {
                        proto: cfg.proto,
                        port: m.orig.port(),
                    },
                ],
                action: Action::Dnat {
                    addr: m.target.ip(),
                    port: m.target.port(),
                },
            }),
            several => rules.push(Rule {
                matches: vec![],
                action: Action::DnatMap {
                    family,
                    proto: cfg.proto,
                    entries: several.iter().map(|m| (m.orig, m.target)).collect(),
                },
            }),
        }
    }
    rules
}

/// The owned table for `cfg`. Pure.
pub fn build(cfg: &DnatConfig, table: &str) -> Ruleset {
    let mut sets = Vec::new();
    let mut chains = Vec::new();
    let nat = |name: &str, hook, rules| Chain {
        name: name.into(),
        base: Some(BaseChain {
            kind: ChainType::Nat,
            hook,
            priority: priority::DSTNAT,
        }),
        rules,
    };
    if cfg.prerouting {
        chains.push(nat("nat-prerouting", Hook::Prerouting, dnat_rules(cfg)));
    }
    if cfg.output {
        let mut rules = Vec::new();
        for (owner, ranges, set, key) in [
            (Owner::Uid, &cfg.accept_uids, "accept-uids", KeyType::Uid),
            (Owner::Gid, &cfg.accept_gids, "accept-gids", KeyType::Gid),
        ] {
            let singles: Vec<Element> = ranges
                .iter()
                .filter(|r| r.first == r.last)
                .map(|r| Element::Id(r.first))
                .collect();
            if !singles.is_empty() {
                sets.push(Set {
                    name: set.into(),
                    key,
                    interval: false,
                    elements: singles,
                });
                rules.push(Rule {
                    matches: vec![Match::OwnerInSet {
                        owner,
                        set: set.into(),
                    }],
                    action: Action::Return,
                });
            }
            for r in ranges.iter().filter(|r| r.first != r.last) {
                rules.push(Rule {
                    matches: vec![Match::OwnerRange {
                        owner,
                        first: r.first,
                        last: r.last,
                    }],
                    action: Action::Return,
                });
            }
        }
        rules.extend(dnat_rules(cfg));
        chains.push(nat("nat-output", Hook::Output, rules));
    }
    let mut targets: Vec<SocketAddr> = cfg.maps.iter().map(|m| m.target).collect();
    targets.sort();
    targets.dedup();
    chains.push(Chain {
        name: "filter-forward".into(),
        base: Some(BaseChain {
            kind: ChainType::Filter,
            hook: Hook::Forward,
            priority: priority::FILTER,
        }),
        // Both directions: a FORWARD policy of drop (Docker sets one) would otherwise drop
        // the target's replies, and the DNATed connection never completes.
        rules: targets
            .iter()
            .flat_map(|t| {
                let addr = ipnet::IpNet::from(t.ip());
                [
                    Rule {
                        matches: vec![
                            Match::Daddr(addr),
                            Match::Dport {
                                proto: cfg.proto,
                                port: t.port(),
                            },
                            Match::CtState(vec![
                                CtState::Established,
                                CtState::Related,
                                CtState::New,
                            ]),
                        ],
                        action: Action::Accept,
                    },
                    Rule {
                        matches: vec![
                            Match::Saddr(addr),
                            Match::Sport {
                                proto: cfg.proto,
                                port: t.port(),
                            },
                            Match::CtState(vec![CtState::Established, CtState::Related]),
                        ],
                        action: Action::Accept,
                    },
                ]
            })
            .collect(),
    });
    Ruleset {
        table: table.to_string(),
        comment: format!("managed by nftkit {COMMAND}"),
        sets,
        maps: Vec::new(),
        chains,
    }
}

impl super::Job for DnatArgs {
    fn name(&self) -> &'static str {
        COMMAND
    }

    fn desired(&self, cx: super::Ctx) -> Result<Ruleset> {
        desired(self, cx.table)
    }

    fn run(&self, cx: super::Ctx, backend_for: super::BackendFor) -> Result<()> {
        run(self, cx.table, backend_for)
    }
}

/// The table for `verify dnat` and `--dry-run`.
pub fn desired(args: &DnatArgs, table: &str) -> Result<Ruleset> {
    Ok(build(&parse(args, Path::new("/"))?, table))
}

struct Job {
    rs: Ruleset,
    watch: ForeignDropWatch,
    families: Vec<IpFamily>,
    check_forward: bool,
}

impl runner::LoopJob for Job {
    fn desired(&mut self) -> Result<Ruleset> {
        tracing::trace!("resync");
        Ok(self.rs.clone())
    }

    fn repair(&mut self, backend: &mut dyn Backend) -> Result<()> {
        if self.check_forward {
            self.watch.check(
                backend,
                &self.rs.table,
                &[Hook::Forward],
                &self.families,
                "forwarded traffic to the DNAT targets",
            );
        }
        Ok(())
    }
}

/// Run `nftkit dnat`.
pub fn run(args: &DnatArgs, table: &str, backend_for: super::BackendFor) -> Result<()> {
    let cfg = parse(args, Path::new("/"))?;
    let rs = build(&cfg, table);
    let shown: Vec<String> = cfg
        .maps
        .iter()
        .map(|m| format!("{}={}", m.orig, m.target))
        .collect();
    tracing::info!(
        maps = %shown.join(","),
        protocol = cfg.proto.nft_name(),
        output = cfg.output,
        prerouting = cfg.prerouting,
        accept_uids = %parse::comma_list(&cfg.accept_uids),
        accept_gids = %parse::comma_list(&cfg.accept_gids),
        daemon = cfg.daemon,
        cleanup = cfg.cleanup,
        sync_interval_s = cfg.interval.as_secs_f64(),
        "dnat configuration"
    );
    let stop = if cfg.daemon {
        runner::stop_on_signals()?
    } else {
        Arc::new(AtomicBool::new(false))
    };
    let opts = runner::LoopOptions {
        interval: cfg.interval,
        once: !cfg.daemon,
        persist: cfg.persist,
    };
    let mut b = backend_for(opts.lifetime())?;
    let mut families = Vec::new();
    if cfg.maps.iter().any(|m| m.orig.is_ipv4()) {
        families.push(IpFamily::V4);
    }
    if cfg.maps.iter().any(|m| m.orig.is_ipv6()) {
        families.push(IpFamily::V6);
    }
    let mut job = Job {
        rs,
        watch: ForeignDropWatch::default(),
        families,
        // Only routed (prerouting) traffic passes the forward hook.
        check_forward: cfg.prerouting,
    };
    let result = runner::run(b.as_mut(), &mut job, &opts, &stop).map(|_| ());
    if cfg.cleanup {
        let cleaned = match b.delete(table) {
            Ok(true) => {
                tracing::info!(table = %table, "table removed");
                Ok(())
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        result.and(cleaned)
    } else {
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: DnatArgs,
    }

    fn args(argv: &[&str]) -> DnatArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(argv);
        T::try_parse_from(v).expect("clap").a
    }

    fn cfg(argv: &[&str]) -> Result<DnatConfig> {
        parse(&args(argv), Path::new("/nonexistent"))
    }

    fn rules(rs: &Ruleset, chain: &str) -> Vec<String> {
        rs.chains
            .iter()
            .find(|c| c.name == chain)
            .map(|c| c.rules.iter().map(render::rule_text).collect())
            .unwrap_or_default()
    }

    #[test]
    fn one_mapping_is_a_plain_rule_in_both_hooks_and_a_forward_accept() {
        let c = cfg(&["--map", "169.254.169.254:80=198.51.100.5:8080"]).unwrap();
        assert!(c.output && c.prerouting && c.daemon && !c.cleanup);
        assert_eq!(c.interval, Duration::from_secs(60));
        let rs = build(&c, "nftkit-dnat");
        let dnat = "ip daddr 169.254.169.254 tcp dport 80 dnat ip to 198.51.100.5:8080";
        assert_eq!(rules(&rs, "nat-prerouting"), vec![dnat]);
        assert_eq!(rules(&rs, "nat-output"), vec![dnat]);
        assert_eq!(
            rules(&rs, "filter-forward"),
            vec![
                "ip daddr 198.51.100.5 tcp dport 8080 ct state established,related,new accept",
                "ip saddr 198.51.100.5 tcp sport 8080 ct state established,related accept",
            ]
        );
        assert!(rs.sets.is_empty());
    }

    #[test]
    fn several_mappings_of_a_family_become_one_map_rule() {
        let c = cfg(&[
            "--map",
            "169.254.169.254:80=198.51.100.5:8080, 192.0.2.1:53=198.51.100.6:5353",
            "--map=[2001:db8::254]:80=[2001:db8::5]:8080",
            "--protocol",
            "udp",
            "--hooks",
            "prerouting",
        ])
        .unwrap();
        let rs = build(&c, "t");
        assert!(rs.chains.iter().all(|c| c.name != "nat-output"));
        assert_eq!(
            rules(&rs, "nat-prerouting"),
            vec![
                "dnat ip to ip daddr . udp dport map { 169.254.169.254 . 80 : 198.51.100.5 . 8080, 192.0.2.1 . 53 : 198.51.100.6 . 5353 }",
                "ip6 daddr 2001:db8::254 udp dport 80 dnat ip6 to [2001:db8::5]:8080",
            ]
        );
        // Three targets, each accepted in both directions.
        assert_eq!(rules(&rs, "filter-forward").len(), 6);
    }

    #[test]
    fn accepted_owners_return_before_the_dnat_on_output_only() {
        let c = cfg(&[
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--accept-uids",
            "988,2000-2999",
            "--accept-gids",
            "988",
        ])
        .unwrap();
        let rs = build(&c, "t");
        assert_eq!(
            rules(&rs, "nat-output"),
            vec![
                "meta skuid @accept-uids return",
                "meta skuid 2000-2999 return",
                "meta skgid @accept-gids return",
                "ip daddr 169.254.169.254 tcp dport 80 dnat ip to 198.51.100.5:8080",
            ]
        );
        assert_eq!(rules(&rs, "nat-prerouting").len(), 1);
        let e = cfg(&[
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--accept-uids",
            "988",
            "--hooks",
            "prerouting",
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--accept-uids"), "{e}");
    }

    #[test]
    fn malformed_maps_are_exit_2_naming_map_and_value() {
        for bad in [
            "169.254.169.254=198.51.100.5:8080",
            "169.254.169.254:80=198.51.100.5",
            "169.254.169.254:0=198.51.100.5:8080",
            "169.254.169.254:80=198.51.100.5:65536",
            "169.254.169.254:80=[2001:db8::5]:8080",
            "[2001:db8::1]:80=198.51.100.5:80",
            "2001:db8::1:80=[2001:db8::5]:80",
            "[2001:db8::1]80=[2001:db8::5]:80",
            "[10.0.0.1]:80=10.0.0.2:80",
            "169.254.169.254:80",
            "metadata:80=198.51.100.5:8080",
            "169.254.169.254:80=198.51.100.5:+80",
            "0.0.0.0:80=198.51.100.5:8080",
            "169.254.169.254:80=169.254.169.254:80",
            "",
        ] {
            let e = cfg(&["--map", bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("--map") && msg.contains(bad), "{bad}: {msg}");
        }
        let e = cfg(&[
            "--map",
            "169.254.169.254:80=198.51.100.5:8080",
            "--map",
            "169.254.169.254:80=198.51.100.6:8080",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("already mapped"), "{e}");
        for hooks in ["", "input", "output,forward"] {
            let e = cfg(&["--map", "1.2.3.4:1=5.6.7.8:2", "--hooks", hooks]).unwrap_err();
            assert!(e.to_string().contains("--hooks"), "{e}");
        }
        let e = cfg(&["--map", "1.2.3.4:1=5.6.7.8:2", "--sync-interval", "0"]).unwrap_err();
        assert!(e.to_string().contains("--sync-interval"), "{e}");
    }
}
