//! One model rule → its iptables rules. Each match (and the action) allows one or more
//! alternatives, each a list of constraints ([`C`]); the rule becomes their cross product,
//! every combination folded into one [`Alt`] (contradictions dropped: an IPv4 address in
//! an IPv6 rule, two disjoint prefixes, two different ports) and rendered in
//! iptables-save's canonical order.

use std::net::SocketAddr;

use ipnet::IpNet;
use nft_compat::rule::{Rule as IptRule, Target};

use super::actions::{Verdict, action, ipt_addr_port};
use super::constraint::C;
use super::matches::options;
use super::unsupported;
use crate::error::Result;
use crate::model::{IpFamily, L4Proto, Ruleset};

/// More iptables rules than this from one nftkit rule (sets multiplied out) is refused.
const MAX_EXPANSION: usize = 500_000;

/// One iptables rule under construction (a conjunction of constraints).
#[derive(Debug, Clone, Default)]
struct Alt {
    family: Option<IpFamily>,
    src: Option<IpNet>,
    dst: Option<IpNet>,
    proto: Option<L4Proto>,
    not_protos: Vec<L4Proto>,
    /// Inclusive port ranges.
    sport: Option<(u16, u16)>,
    dport: Option<(u16, u16)>,
    /// `-m` fragments other than the tcp/udp one, in model order.
    extra: Vec<String>,
    /// Set by a DNAT map entry: `DNAT --to-destination` this.
    dnat_to: Option<SocketAddr>,
    /// Set by a verdict map entry: `-g` this model chain.
    goto: Option<String>,
}

/// The intersection of two prefixes: the narrower one, or None if disjoint.
fn narrower(a: IpNet, b: IpNet) -> Option<IpNet> {
    if a.contains(&b) {
        Some(b)
    } else if b.contains(&a) {
        Some(a)
    } else {
        None
    }
}

impl Alt {
    /// `self` further constrained by `c`; None if nothing can match both.
    fn with(mut self, c: &C) -> Option<Alt> {
        let fam = |a: &mut Alt, f: IpFamily| match a.family {
            Some(g) if g != f => false,
            _ => {
                a.family = Some(f);
                true
            }
        };
        let proto = |a: &mut Alt, p: L4Proto| match a.proto {
            Some(q) if q != p => false,
            _ => {
                a.proto = Some(p);
                true
            }
        };
        match c {
            C::Family(f) => fam(&mut self, *f).then_some(self),
            C::Src(n) | C::Dst(n) => {
                if !fam(&mut self, IpFamily::of(n)) {
                    return None;
                }
                let slot = if matches!(c, C::Src(_)) {
                    &mut self.src
                } else {
                    &mut self.dst
                };
                *slot = Some(match *slot {
                    Some(have) => narrower(have, *n)?,
                    None => *n,
                });
                Some(self)
            }
            C::Proto(p) => proto(&mut self, *p).then_some(self),
            C::NotProto(p) => {
                self.not_protos.push(*p);
                Some(self)
            }
            C::Sport(p, lo, hi) | C::Dport(p, lo, hi) => {
                if !proto(&mut self, *p) {
                    return None;
                }
                let slot = if matches!(c, C::Sport(..)) {
                    &mut self.sport
                } else {
                    &mut self.dport
                };
                // Intersect the inclusive ranges.
                let (lo, hi) = match *slot {
                    Some((a, b)) => ((*lo).max(a), (*hi).min(b)),
                    None => (*lo, *hi),
                };
                if lo > hi {
                    return None;
                }
                *slot = Some((lo, hi));
                Some(self)
            }
            C::Extra(s) => {
                self.extra.push(s.clone());
                Some(self)
            }
            C::DnatTo(sa) => {
                self.dnat_to = Some(*sa);
                Some(self)
            }
            C::GotoTo(chain) => {
                self.goto = Some(chain.clone());
                Some(self)
            }
        }
    }
}

fn ipt_net(n: &IpNet) -> String {
    // iptables-save always prints the prefix length; ipnet's Display does too.
    format!("{}/{}", n.network(), n.prefix_len())
}

/// `80` or `8000:9000`, as iptables-save prints ports.
fn port_range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}:{hi}")
    }
}

/// One lowered rule of a chain: its family and spec pieces; the target is resolved per
/// table (chain names) by `finish`.
pub(super) struct Lowered {
    pub(super) family: Option<IpFamily>,
    pub(super) rule: IptRule,
    /// Model name of the chain jumped/gone to, if any.
    pub(super) refers: Option<String>,
}

/// Every iptables rule one model rule becomes.
pub(super) fn lower_rule(
    backend: &str,
    rs: &Ruleset,
    chain: &str,
    r: &crate::model::Rule,
) -> Result<Vec<Lowered>> {
    let mut alts = vec![Alt::default()];
    let (act_opts, verdict) = action(backend, rs, &r.action)?;
    let all_opts = r
        .matches
        .iter()
        .map(|m| options(backend, rs, m))
        .chain(std::iter::once(Ok(act_opts)));
    for opts in all_opts {
        let opts = opts?;
        let mut next = Vec::with_capacity(alts.len() * opts.len().max(1));
        for a in &alts {
            for cs in &opts {
                if let Some(n) = cs.iter().try_fold(a.clone(), |acc, c| acc.with(c)) {
                    next.push(n);
                }
            }
        }
        if next.len() > MAX_EXPANSION {
            return Err(unsupported(
                backend,
                format!(
                    "a rule of chain {chain} whose sets multiply out to more than {MAX_EXPANSION} iptables rules"
                ),
            ));
        }
        alts = next;
    }
    let mut out = Vec::with_capacity(alts.len());
    for a in alts {
        let protocol = match a.proto {
            Some(p) if a.not_protos.contains(&p) => continue,
            Some(p) => Some((false, p.nft_name().to_string())),
            None => {
                let mut nots = a.not_protos.clone();
                nots.dedup();
                match nots.as_slice() {
                    [] => None,
                    [p] => Some((true, p.nft_name().to_string())),
                    _ => {
                        return Err(unsupported(
                            backend,
                            format!(
                                "a rule of chain {chain} that excludes several protocols ({})",
                                crate::render::rule_text(r)
                            ),
                        ));
                    }
                }
            }
        };
        let mut matches = Vec::new();
        if a.sport.is_some() || a.dport.is_some() {
            let p = a.proto.map(L4Proto::nft_name).unwrap_or("tcp");
            let mut m = format!("-m {p}");
            if let Some(s) = a.sport {
                m.push_str(&format!(" --sport {}", port_range(s)));
            }
            if let Some(d) = a.dport {
                m.push_str(&format!(" --dport {}", port_range(d)));
            }
            matches.push(m);
        }
        matches.extend(a.extra.iter().cloned());
        let (target, refers) = match (&verdict, a.dnat_to, a.goto) {
            (_, _, Some(c)) => (Target::Goto(c.clone()), Some(c)),
            (_, Some(to), None) => (
                Target::Jump(format!("DNAT --to-destination {}", ipt_addr_port(&to))),
                None,
            ),
            (Verdict::Target(t), None, None) => (Target::Jump(t.clone()), None),
            (Verdict::Jump(c), None, None) => (Target::Jump(c.clone()), Some(c.clone())),
            (Verdict::Goto(c), None, None) => (Target::Goto(c.clone()), Some(c.clone())),
        };
        out.push(Lowered {
            family: a.family,
            rule: IptRule {
                source: a.src.as_ref().map(ipt_net),
                destination: a.dst.as_ref().map(ipt_net),
                protocol,
                matches,
                comment: Some(rs.comment.clone()),
                target,
            },
            refers,
        });
    }
    Ok(out)
}
