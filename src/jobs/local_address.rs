//! `nftkit local-address`: drop-in for the gardener apiserver-proxy sidecar (a node
//! DaemonSet): keep one address on an interface and, with `--setup-iptables`, let traffic
//! to and from `IP:PORT` skip connection tracking and pass the filter hooks.
//!
//! The address (IPv4 /32, IPv6 /128, IPv6 without DAD) goes over rtnetlink (`crate::addr`).
//! With rules, table `inet nftkit-local-address`:
//!
//! ```text
//! chain raw-prerouting { type filter hook prerouting priority -300;  # raw
//!     ip daddr 10.96.0.2 tcp dport 443 notrack }   # -t raw -A PREROUTING -d IP -p tcp --dport P -j NOTRACK
//! chain raw-output { type filter hook output priority -300;
//!     ip daddr 10.96.0.2 tcp dport 443 notrack     # -t raw -A OUTPUT -d IP -p tcp --dport P -j NOTRACK
//!     ip saddr 10.96.0.2 tcp sport 443 notrack }   # -t raw -A OUTPUT -s IP -p tcp --sport P -j NOTRACK
//! chain filter-input { type filter hook input priority 0;
//!     ip daddr 10.96.0.2 tcp dport 443 accept }    # -A INPUT -d IP -p tcp --dport P -j ACCEPT
//! chain filter-output { type filter hook output priority 0;
//!     ip saddr 10.96.0.2 tcp sport 443 accept }    # -A OUTPUT -s IP -p tcp --sport P -j ACCEPT
//! ```
//! (`ip6` for an IPv6 address; upstream was IPv4-only.) Upstream inserted its ACCEPTs at
//! the top of the shared iptables chains, ahead of any DROP there. In nftables an accept
//! ends only our own base chain: another table's chain at the same hook still drops. So
//! nftkit looks for such chains (policy drop, or drop/reject rules) and logs a warning
//! naming them, at start and whenever the set of them changes.
//!
//! As a daemon (`--daemon`, the default) every `--sync-interval` it checks the address and
//! the table, repairs what is missing or different, and sends nothing when all is in place.
//! SIGTERM/SIGINT stop it; with `--cleanup` it then removes the address and the table
//! (never the interface: upstream tried to delete even `lo`).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::addr::{AddrManager, Ensured, host_prefix};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::jobs::GoDaemonArgs;
use crate::jobs::foreign_drop::ForeignDropWatch;
use crate::model::*;
use crate::parse::{self, go_bool};
use crate::runner;

pub const COMMAND: &str = "local-address";

/// Flags as the apiserver-proxy README documents them (no environment variables upstream),
/// plus nftkit's `--persist`. Boolean flags take Go's forms: `--daemon`, `--daemon=false`.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LocalAddressArgs {
    /// The address to keep on the interface: IPv4 (added as /32) or IPv6 (/128) [required]
    #[arg(long, value_name = "IP")]
    pub ip_address: Option<String>,
    /// Interface that carries the address (must exist)
    #[arg(long, value_name = "NAME", default_value = "lo")]
    pub interface: String,
    /// TCP port of the NOTRACK/ACCEPT rules (upstream's README says 443; its code 9443)
    #[arg(long, value_name = "PORT", default_value = "443")]
    pub port: String,
    /// Also program the raw NOTRACK and filter ACCEPT rules for IP:PORT
    #[arg(
        long = "setup-iptables",
        visible_alias = "setup-rules",
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_value = "false",
        default_missing_value = "true",
        value_parser = go_bool
    )]
    pub setup_iptables: bool,
    #[command(flatten)]
    pub run: GoDaemonArgs,
}

/// Validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAddressConfig {
    pub ip: IpAddr,
    pub interface: String,
    pub port: u16,
    pub rules: bool,
    pub daemon: bool,
    pub cleanup: bool,
    pub interval: Duration,
    pub persist: bool,
}

/// A unicast address to put on an interface.
pub fn host_address(what: &str, raw: &str) -> Result<IpAddr> {
    let t = raw.trim();
    let t = t
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(t);
    let bad = |why: &str| Error::invalid(what, raw, why);
    let ip: IpAddr = t.parse().map_err(|_| {
        bad("expected an IPv4 or IPv6 address such as 10.96.0.2 or 2001:db8::2 (no prefix length)")
    })?;
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(bad("expected a unicast address"));
    }
    if let IpAddr::V4(a) = ip
        && a.is_broadcast()
    {
        return Err(bad("expected a unicast address"));
    }
    if let Some(why) = parse::ipv4_mapped_refusal(ip) {
        return Err(bad(&why));
    }
    Ok(ip)
}

/// An interface name the kernel can hold (IFNAMSIZ - 1 bytes, no '/', no whitespace).
pub fn interface_name(what: &str, raw: &str) -> Result<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 15
        && raw != "."
        && raw != ".."
        && !raw
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Error::invalid(
            what,
            raw,
            "expected an interface name of 1-15 characters without '/', ':' or spaces",
        ))
    }
}

pub fn parse(args: &LocalAddressArgs) -> Result<LocalAddressConfig> {
    Ok(LocalAddressConfig {
        ip: match &args.ip_address {
            Some(raw) => host_address("--ip-address", raw)?,
            None => {
                return Err(Error::Usage(
                    "--ip-address is required: the address to keep on the interface, e.g. --ip-address 10.96.0.2".into(),
                ));
            }
        },
        interface: interface_name("--interface", &args.interface)?,
        port: parse::port("--port", &args.port)?,
        rules: args.setup_iptables,
        daemon: args.run.daemon,
        cleanup: args.run.cleanup,
        interval: parse::interval("--sync-interval", &args.run.sync_interval)?,
        persist: args.run.persist,
    })
}

/// The owned table for `cfg` (only meaningful with `cfg.rules`). Pure.
pub fn build(cfg: &LocalAddressConfig, table: &str) -> Ruleset {
    let host = ipnet::IpNet::from(cfg.ip);
    let to = |action: Action| Rule {
        matches: vec![
            Match::Daddr(host),
            Match::Dport {
                proto: L4Proto::Tcp,
                port: cfg.port,
            },
        ],
        action,
    };
    let from = |action: Action| Rule {
        matches: vec![
            Match::Saddr(host),
            Match::Sport {
                proto: L4Proto::Tcp,
                port: cfg.port,
            },
        ],
        action,
    };
    let chain = |name: &str, hook, priority, rules| Chain {
        name: name.into(),
        base: Some(BaseChain {
            kind: ChainType::Filter,
            hook,
            priority,
        }),
        rules,
    };
    Ruleset {
        table: table.to_string(),
        comment: format!("managed by nftkit {COMMAND}"),
        sets: Vec::new(),
        maps: Vec::new(),
        chains: vec![
            chain(
                "raw-prerouting",
                Hook::Prerouting,
                priority::RAW,
                vec![to(Action::Notrack)],
            ),
            chain(
                "raw-output",
                Hook::Output,
                priority::RAW,
                vec![to(Action::Notrack), from(Action::Notrack)],
            ),
            chain(
                "filter-input",
                Hook::Input,
                priority::FILTER,
                vec![to(Action::Accept)],
            ),
            chain(
                "filter-output",
                Hook::Output,
                priority::FILTER,
                vec![from(Action::Accept)],
            ),
        ],
    }
}

/// The table `verify local-address` compares; without `--setup-iptables` there is none.
pub fn desired(args: &LocalAddressArgs, table: &str) -> Result<Ruleset> {
    let cfg = parse(args)?;
    if !cfg.rules {
        return Err(Error::Usage(
            "local-address without --setup-iptables programs no table: nothing to compare".into(),
        ));
    }
    Ok(build(&cfg, table))
}

impl super::Job for LocalAddressArgs {
    fn name(&self) -> &'static str {
        COMMAND
    }

    fn desired(&self, cx: super::Ctx) -> Result<Ruleset> {
        desired(self, cx.table)
    }

    fn dry_run(
        &self,
        cx: super::Ctx,
        render: &dyn Fn(&Ruleset) -> Result<String>,
    ) -> Result<String> {
        dry_run(self, cx.table, render)
    }

    fn run(&self, cx: super::Ctx, backend_for: super::BackendFor) -> Result<()> {
        run(self, cx.table, backend_for)
    }

    fn verify(&self, cx: super::Ctx, backend_for: super::BackendFor) -> Result<super::Check> {
        verify(self, cx.table, backend_for)
    }
}

/// `--dry-run` text: the table, or a comment when only the address would be managed.
fn dry_run(
    args: &LocalAddressArgs,
    table: &str,
    render: &dyn Fn(&Ruleset) -> Result<String>,
) -> Result<String> {
    let cfg = parse(args)?;
    if cfg.rules {
        render(&build(&cfg, table))
    } else {
        Ok(format!(
            "# no nf_tables rules (--setup-iptables not given): only {}/{} on {} would be managed\n",
            cfg.ip,
            host_prefix(cfg.ip),
            cfg.interface
        ))
    }
}

struct Job {
    cfg: LocalAddressConfig,
    rs: Ruleset,
    addrs: AddrManager,
    watch: ForeignDropWatch,
    started: bool,
    /// Whether this process put the address on the interface (at start or as a repair):
    /// `--cleanup` removes only such an address, never one that was there before us.
    added: bool,
}

impl Job {
    fn repair_address(&mut self) -> Result<()> {
        let (ip, ifname) = (self.cfg.ip, self.cfg.interface.as_str());
        let t = Instant::now();
        let result = self.addrs.ensure(ifname, ip)?;
        let elapsed_us = t.elapsed().as_micros() as u64;
        self.added |= result == Ensured::Added;
        match (result, self.started) {
            (Ensured::Added, false) => {
                tracing::info!(address = %ip, interface = ifname, elapsed_us, "address added")
            }
            (Ensured::Added, true) => tracing::warn!(
                address = %ip,
                interface = ifname,
                elapsed_us,
                "address was missing; added it again"
            ),
            (Ensured::Present, false) => {
                tracing::info!(address = %ip, interface = ifname, "address already present")
            }
            (Ensured::Present, true) => {
                tracing::debug!(address = %ip, interface = ifname, elapsed_us, "address in place")
            }
        }
        if !self.started {
            let others = self.addrs.also_on(ifname, ip)?;
            if !others.is_empty() {
                tracing::warn!(
                    address = %ip,
                    interfaces = %others.join(","),
                    "the address is also on other interfaces; nftkit leaves them alone"
                );
            }
        }
        self.started = true;
        Ok(())
    }
}

impl runner::LoopJob for Job {
    fn desired(&mut self) -> Result<Ruleset> {
        tracing::trace!("resync");
        Ok(self.rs.clone())
    }

    /// Only with rules: the loop runs for a table.
    fn repair(&mut self, backend: &mut dyn Backend) -> Result<()> {
        self.repair_address()?;
        let family = if self.cfg.ip.is_ipv4() {
            IpFamily::V4
        } else {
            IpFamily::V6
        };
        self.watch.check(
            backend,
            &self.rs.table,
            &[Hook::Input, Hook::Output],
            &[family],
            &format!("traffic of {}:{}", self.cfg.ip, self.cfg.port),
        );
        Ok(())
    }
}

/// Run `nftkit local-address`.
pub fn run(args: &LocalAddressArgs, table: &str, backend_for: super::BackendFor) -> Result<()> {
    let cfg = parse(args)?;
    let rs = build(&cfg, table);
    tracing::info!(
        address = %cfg.ip,
        interface = %cfg.interface,
        port = cfg.port,
        rules = cfg.rules,
        daemon = cfg.daemon,
        cleanup = cfg.cleanup,
        sync_interval_s = cfg.interval.as_secs_f64(),
        "local-address configuration"
    );
    let stop = if cfg.daemon {
        runner::stop_on_signals()?
    } else {
        Arc::new(AtomicBool::new(false))
    };
    let addrs = AddrManager::connect()?;
    // Fail early, before any change, when the interface is missing.
    addrs.ifindex(&cfg.interface)?;
    let mut job = Job {
        cfg: cfg.clone(),
        rs,
        addrs,
        watch: ForeignDropWatch::default(),
        started: false,
        added: false,
    };
    let mut backend = None;
    let result = if cfg.rules {
        // Tables persist by default; --persist=false ties a daemon's table to it.
        let opts = runner::LoopOptions {
            interval: cfg.interval,
            once: !cfg.daemon,
            persist: cfg.persist,
        };
        let mut b = backend_for(opts.lifetime())?;
        let r = runner::run(b.as_mut(), &mut job, &opts, &stop);
        backend = Some(b);
        r.map(|_| ())
    } else {
        address_only_loop(&mut job, &stop)
    };
    if cfg.cleanup {
        let cleaned = cleanup(&cfg, table, &job.addrs, job.added, backend.as_mut());
        result.and(cleaned)
    } else {
        result
    }
}

/// Without rules there is no table and no nf_tables access at all: keep the address.
/// A daemon serves `--metrics-addr` here too (probes of a DaemonSet without
/// `--setup-iptables`): ready while the address is in place, as a table-keeping daemon is
/// while its table is.
fn address_only_loop(job: &mut Job, stop: &AtomicBool) -> Result<()> {
    job.repair_address()?;
    if !job.cfg.daemon {
        return Ok(());
    }
    let published = crate::metrics::start(job.cfg.interval)?;
    let mut stats = crate::stats::LoopStats {
        ready: true,
        ..Default::default()
    };
    stats.record_success();
    crate::metrics::publish(&published, &stats, &job.rs);
    tracing::info!(
        interval_s = job.cfg.interval.as_secs_f64(),
        "reconciling the address"
    );
    while runner::sleep_unless_stopped(job.cfg.interval, stop) {
        match job.repair_address() {
            Ok(()) => stats.record_success(),
            Err(e) => {
                stats.errors += 1;
                stats.record_failure();
                tracing::error!(error = %e, "repair failed; will retry next interval");
            }
        }
        crate::metrics::publish(&published, &stats, &job.rs);
    }
    tracing::info!("stopping on signal");
    Ok(())
}

/// `--cleanup`: remove the table, and the address if this process added it (`added`; one
/// that was on the interface before we started stays). Both are tried; every failure is
/// reported.
fn cleanup(
    cfg: &LocalAddressConfig,
    table: &str,
    addrs: &AddrManager,
    added: bool,
    backend: Option<&mut Box<dyn Backend>>,
) -> Result<()> {
    let mut errors = Vec::new();
    let (ip, ifname) = (cfg.ip, cfg.interface.as_str());
    if !added {
        tracing::info!(address = %ip, interface = ifname, "address was there before nftkit started; leaving it");
    } else {
        match addrs.remove(ifname, ip) {
            Ok(true) => tracing::info!(address = %ip, interface = ifname, "address removed"),
            Ok(false) => tracing::info!(address = %ip, interface = ifname, "address was not there"),
            Err(e) => errors.push(e),
        }
    }
    if let Some(b) = backend {
        match b.delete(table) {
            Ok(true) => tracing::info!(table, "table removed"),
            Ok(false) => tracing::info!(table, "table was not there"),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Several {
            what: "cleanup".into(),
            errors,
        })
    }
}

/// `verify local-address`: the address on its interface and, with rules, the table.
fn verify(
    args: &LocalAddressArgs,
    table: &str,
    backend_for: super::BackendFor,
) -> Result<super::Check> {
    let cfg = parse(args)?;
    let mut diff = Vec::new();
    let addrs = AddrManager::connect()?;
    let (ip, prefix, ifname) = (cfg.ip, host_prefix(cfg.ip), &cfg.interface);
    if !addrs.has(ifname, ip)? {
        diff.push(format!("- address {ip}/{prefix} is missing on {ifname}"));
    }
    let address = format!("address {ip}/{prefix} on {ifname}");
    let subject = if cfg.rules {
        let rs = build(&cfg, table);
        diff.extend(crate::apply::drift(
            backend_for(crate::backend::Lifetime::Persist)?.as_mut(),
            &rs,
        )?);
        format!("{address} and table inet {table}")
    } else {
        address
    };
    Ok(super::Check {
        subject,
        plural: true,
        diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        a: LocalAddressArgs,
    }

    fn args(argv: &[&str]) -> std::result::Result<LocalAddressArgs, clap::Error> {
        let mut v = vec!["t"];
        v.extend_from_slice(argv);
        T::try_parse_from(v).map(|t| t.a)
    }

    fn cfg(argv: &[&str]) -> Result<LocalAddressConfig> {
        parse(&args(argv).expect("clap"))
    }

    #[test]
    fn defaults_as_the_upstream_readme() {
        let c = cfg(&["--ip-address", "10.96.0.2"]).unwrap();
        assert_eq!(c.interface, "lo");
        assert_eq!(c.port, 443);
        assert!(!c.rules);
        assert!(c.daemon);
        assert!(!c.cleanup);
        assert!(
            c.persist,
            "tables outlive the daemon by default (CONTRACT.md)"
        );
        assert!(
            !cfg(&["--ip-address", "10.96.0.2", "--persist=false"])
                .unwrap()
                .persist
        );
        assert_eq!(c.interval, Duration::from_secs(60));
    }

    #[test]
    fn go_style_booleans_and_the_setup_rules_alias() {
        let c = cfg(&[
            "--ip-address=10.96.0.2",
            "--setup-rules",
            "--daemon=false",
            "--cleanup",
            "--sync-interval=1m30s",
        ])
        .unwrap();
        assert!(c.rules && !c.daemon && c.cleanup);
        assert_eq!(c.interval, Duration::from_secs(90));
        assert!(
            cfg(&["--ip-address=10.96.0.2", "--setup-iptables=true"])
                .unwrap()
                .rules
        );
        assert!(
            !cfg(&["--ip-address=10.96.0.2", "--setup-iptables=F"])
                .unwrap()
                .rules
        );
        assert!(args(&["--ip-address=10.96.0.2", "--daemon=maybe"]).is_err());
        // Go's pflag does not take a separate value for a bool flag.
        assert!(args(&["--ip-address=10.96.0.2", "--daemon", "false"]).is_err());
        let e = parse(&args(&[]).unwrap()).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("--ip-address is required"), "{e}");
    }

    #[test]
    fn invalid_values_name_the_flag() {
        for (argv, flag) in [
            (&["--ip-address", "10.96.0.300"][..], "--ip-address"),
            (&["--ip-address", "10.96.0.2/32"][..], "--ip-address"),
            (&["--ip-address", ""][..], "--ip-address"),
            (&["--ip-address", "0.0.0.0"][..], "--ip-address"),
            (&["--ip-address", "ff02::1"][..], "--ip-address"),
            (&["--ip-address", "10.96.0.2", "--port", "0"][..], "--port"),
            (
                &["--ip-address", "10.96.0.2", "--port", "65536"][..],
                "--port",
            ),
            (
                &["--ip-address", "10.96.0.2", "--port", "https"][..],
                "--port",
            ),
            (
                &["--ip-address", "10.96.0.2", "--sync-interval", "10 s"][..],
                "--sync-interval",
            ),
            (
                &["--ip-address", "10.96.0.2", "--sync-interval", "0s"][..],
                "--sync-interval",
            ),
            (
                &["--ip-address", "10.96.0.2", "--interface", "a/b"][..],
                "--interface",
            ),
            (
                &[
                    "--ip-address",
                    "10.96.0.2",
                    "--interface",
                    "sixteen-chars-xx",
                ][..],
                "--interface",
            ),
        ] {
            let e = cfg(argv).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{argv:?}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(flag), "{argv:?}: {msg}");
            assert!(!msg.contains('\n'), "one line: {msg}");
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_and_huge_intervals_are_refused_with_the_reason() {
        let e = cfg(&["--ip-address", "::ffff:10.96.0.2"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("--ip-address")
                && e.to_string().contains("::ffff:10.96.0.2")
                && e.to_string().contains("write 10.96.0.2"),
            "{e}"
        );
        let e = cfg(&[
            "--ip-address",
            "10.96.0.2",
            "--sync-interval",
            "1h99999999999999999h",
        ])
        .unwrap_err();
        assert!(e.to_string().contains("too large"), "{e}");
        assert!(!e.to_string().contains("positive"), "{e}");
    }

    #[test]
    fn ipv4_rules_are_the_five_upstream_rules() {
        let c = cfg(&["--ip-address", "10.96.0.2", "--setup-iptables"]).unwrap();
        let rs = build(&c, "nftkit-local-address");
        let text: Vec<(String, Vec<String>)> = rs
            .chains
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.rules.iter().map(render::rule_text).collect(),
                )
            })
            .collect();
        let want = |n: &str, r: &[&str]| (n.to_string(), r.iter().map(|s| s.to_string()).collect());
        assert_eq!(
            text,
            vec![
                want(
                    "raw-prerouting",
                    &["ip daddr 10.96.0.2 tcp dport 443 notrack"]
                ),
                want(
                    "raw-output",
                    &[
                        "ip daddr 10.96.0.2 tcp dport 443 notrack",
                        "ip saddr 10.96.0.2 tcp sport 443 notrack"
                    ]
                ),
                want("filter-input", &["ip daddr 10.96.0.2 tcp dport 443 accept"]),
                want(
                    "filter-output",
                    &["ip saddr 10.96.0.2 tcp sport 443 accept"]
                ),
            ]
        );
        assert_eq!(rs.comment, "managed by nftkit local-address");
        let prios: Vec<(Hook, i32)> = rs
            .chains
            .iter()
            .map(|c| (c.base.unwrap().hook, c.base.unwrap().priority))
            .collect();
        assert_eq!(
            prios,
            vec![
                (Hook::Prerouting, -300),
                (Hook::Output, -300),
                (Hook::Input, 0),
                (Hook::Output, 0)
            ]
        );
    }

    #[test]
    fn ipv6_rules_use_ip6() {
        let c = cfg(&["--ip-address", "2001:db8::2", "--port", "9443"]).unwrap();
        let rs = build(&c, "t");
        assert_eq!(
            render::rule_text(&rs.chains[2].rules[0]),
            "ip6 daddr 2001:db8::2 tcp dport 9443 accept"
        );
    }

    #[test]
    fn verify_needs_rules() {
        let a = args(&["--ip-address", "10.96.0.2"]).unwrap();
        assert_eq!(desired(&a, "t").unwrap_err().exit_code(), 2);
        assert!(
            dry_run(&a, "t", &|rs| Ok(render::nft_script(rs)))
                .unwrap()
                .starts_with("# no nf_tables rules")
        );
    }
}
