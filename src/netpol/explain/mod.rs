//! `nftkit netpol explain`: what this node's rules decide for one flow, and why.
//!
//! Not a second NetworkPolicy evaluator: the flow's first packet (`ct state new`, no
//! local socket) runs through the `Ruleset` that [`build`] makes for the kernel, with
//! [`model::eval`](crate::model::eval) (nf_tables' rule, jump and set semantics). The
//! rules that matched are then named: a pod chain (`ingress/<ns>/<pod>`,
//! `egress/<ns>/<pod>`) belongs to a local pod, a peer set (`<direction>/<ns>/<policy>/<rule>-v4|v6`)
//! to a policy's rule, and a rule without a peer set to the policy rules that compile to it;
//! the last rule of a pod chain is its default deny.
//!
//! Only pods on this node are policed (`build`): a flow between other nodes' pods or
//! addresses is allowed here, and the other side's policies are its node's decision.

use std::net::IpAddr;

use ipnet::IpNet;

use super::build::{self, Direction, NetpolConfig, TierChain, port_match};
use super::cnp::{ClusterAction, Tier};
use super::manifest::{Pod, Policy, Protocol};
use crate::error::{Error, Result};
use crate::model::eval::{self, End, Evaluation, Packet, Verdict};
use crate::model::{Action, Hook, IpFamily, L4Proto, Match, Ruleset};

/// `--from` / `--to` as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointArg {
    /// `NAMESPACE/POD`
    Pod { namespace: String, name: String },
    /// An address or CIDR (a CIDR stands for its first address).
    Net(IpNet),
}

/// Parse `--from` / `--to` (`option` names it in errors).
pub fn parse_endpoint(option: &str, raw: &str) -> Result<EndpointArg> {
    let t = raw.trim();
    if let Ok(a) = t.parse::<IpAddr>() {
        return Ok(EndpointArg::Net(IpNet::from(a)));
    }
    if let Ok(n) = t.parse::<IpNet>() {
        return Ok(EndpointArg::Net(n.trunc()));
    }
    let bad = || {
        Error::invalid(
            option,
            raw,
            "NAMESPACE/POD, an IP address or a CIDR (such as shop/web, 10.244.1.5 or 192.0.2.0/24)",
        )
    };
    let (ns, name) = t.split_once('/').ok_or_else(bad)?;
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 253
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    if !ok(ns) || !ok(name) {
        return Err(bad());
    }
    Ok(EndpointArg::Pod {
        namespace: ns.into(),
        name: name.into(),
    })
}

/// Parse `--port PORT[/PROTO]` (PROTO tcp, udp or sctp; tcp by default).
pub fn parse_port(raw: &str) -> Result<(u16, L4Proto)> {
    let bad = || {
        Error::invalid(
            "--port",
            raw,
            "PORT[/PROTO]: a port 1-65535, optionally /tcp, /udp or /sctp (such as 5432 or 53/udp)",
        )
    };
    let t = raw.trim();
    let (port, proto) = match t.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (t, "tcp"),
    };
    let proto = match proto.to_ascii_lowercase().as_str() {
        "tcp" => L4Proto::Tcp,
        "udp" => L4Proto::Udp,
        "sctp" => L4Proto::Sctp,
        _ => return Err(bad()),
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((p, proto)),
        _ => Err(bad()),
    }
}

/// One end of the flow, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// As given on the command line.
    pub input: String,
    pub address: IpAddr,
    /// `namespace/name` of the pod that has this address, if any.
    pub pod: Option<String>,
    /// The pod's node.
    pub node: Option<String>,
}

/// What one direction's check on a pod came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No policy of this direction selects the pod: everything is allowed.
    NotIsolated,
    /// Allowed by these policy rules (`namespace/policy`, rule index); `set` is the peer
    /// set that matched.
    Allowed {
        rules: Vec<(String, usize)>,
        set: Option<String>,
    },
    /// Isolated by these policies and none of their rules allows the flow.
    DefaultDeny { policies: Vec<String> },
    /// As `DefaultDeny`, but every isolating policy is in audit mode (annotation
    /// `nftkit.io/audit`): the flow passes, counted and logged as would-drop.
    WouldDrop { policies: Vec<String> },
    /// The flow was decided before this check (it never ran).
    NotReached,
    /// The pod is on another node (or none): its node decides.
    OtherNode(Option<String>),
    /// Decided by rule `rule` (0-based) of ClusterNetworkPolicy `policy` in `tier`: Accept
    /// or Deny (an Admin Pass hands the flow on and is not an outcome).
    Cluster {
        tier: Tier,
        policy: String,
        rule: usize,
        action: ClusterAction,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub direction: Direction,
    pub pod: String,
    pub outcome: Outcome,
}

/// One rule on the evaluation's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStep {
    pub chain: String,
    pub rule: usize,
    /// The rule in nft syntax.
    pub text: String,
    /// The sets that matched, with the element that holds the address.
    pub sets: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub node: String,
    pub from: Endpoint,
    pub to: Endpoint,
    pub proto: L4Proto,
    pub port: u16,
    pub allowed: bool,
    /// One line: the decision and what made it.
    pub reason: String,
    pub checks: Vec<Check>,
    pub path: Vec<PathStep>,
    /// Whether this node's rules see the flow at all (an endpoint is a pod of this node).
    pub policed_here: bool,
}

fn key(p: &Pod) -> String {
    format!("{}/{}", p.namespace, p.name)
}

fn family(a: &IpAddr) -> IpFamily {
    match a {
        IpAddr::V4(_) => IpFamily::V4,
        IpAddr::V6(_) => IpFamily::V6,
    }
}

/// The candidate addresses of an endpoint and its pod.
fn candidates<'c>(
    cfg: &'c NetpolConfig,
    option: &str,
    raw: &str,
    arg: &EndpointArg,
) -> Result<(Vec<IpAddr>, Option<&'c Pod>)> {
    match arg {
        EndpointArg::Net(n) => Ok((vec![n.network()], None)),
        EndpointArg::Pod { namespace, name } => {
            let pod = cfg
                .cluster
                .pods
                .iter()
                .find(|p| &p.namespace == namespace && &p.name == name)
                .ok_or_else(|| {
                    Error::invalid(option, raw, "a pod of the manifest (NAMESPACE/POD)")
                })?;
            if pod.ips.is_empty() {
                return Err(Error::invalid(
                    option,
                    raw,
                    "a pod with an address (this one has no status.podIPs yet)",
                ));
            }
            Ok((pod.ips.clone(), Some(pod)))
        }
    }
}

/// The pod (not host-network, not terminated) that has address `a`.
fn pod_of(cfg: &NetpolConfig, a: IpAddr) -> Option<&Pod> {
    cfg.cluster
        .pods
        .iter()
        .find(|p| !p.host_network && !p.terminated && p.ips.contains(&a))
}

fn selects(policy: &Policy, pod: &Pod) -> bool {
    policy.namespace == pod.namespace && policy.pod_selector.matches(&pod.labels)
}

fn protocol(p: L4Proto) -> Protocol {
    match p {
        L4Proto::Tcp => Protocol::Tcp,
        L4Proto::Udp => Protocol::Udp,
        L4Proto::Sctp => Protocol::Sctp,
    }
}

fn fam_suffix(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

/// The policy rules (of policies selecting `pod` in `dir`) that produce rule `rule` of the
/// pod's chain: by the peer set that matched (its name is the policy rule's), or for a
/// rule without peers by the compiled rule itself.
fn sources(
    cfg: &NetpolConfig,
    rs: &Ruleset,
    dir: Direction,
    pod: &Pod,
    step: &eval::Step,
    pkt: &Packet,
) -> Vec<(String, usize)> {
    let Some(rule) = rs
        .chains
        .iter()
        .find(|c| c.name == step.chain)
        .and_then(|c| c.rules.get(step.rule))
    else {
        return Vec::new();
    };
    let dest = match dir {
        Direction::Ingress => Some(pod),
        Direction::Egress => None,
    };
    // Every allow counts into its policy's counter: that names the policy; the rule
    // without its counter is what the policy rule compiled to.
    let counted = rule
        .matches
        .iter()
        .find(|m| matches!(m, Match::Count { .. }));
    let bare: Vec<Match> = rule
        .matches
        .iter()
        .filter(|m| !matches!(m, Match::Count { .. }))
        .cloned()
        .collect();
    let mut out = Vec::new();
    for policy in cfg.cluster.policies.iter().filter(|p| selects(p, pod)) {
        if counted.is_some_and(|c| *c != build::policy_counter(dir, policy)) {
            continue;
        }
        let (affects, rules) = match dir {
            Direction::Ingress => (policy.affects_ingress, &policy.ingress),
            Direction::Egress => (policy.affects_egress, &policy.egress),
        };
        if !affects {
            continue;
        }
        for (i, r) in rules.iter().enumerate() {
            let produced = if let Some(hit) = step.sets.first() {
                let f = fam_suffix(family(&pkt.daddr));
                let plain = build::object_name(&[
                    dir.name(),
                    &policy.namespace,
                    &policy.name,
                    &format!("{i}-{f}"),
                ]);
                let named = build::object_name(&[
                    dir.name(),
                    &policy.namespace,
                    &policy.name,
                    &i.to_string(),
                    &format!("{}-{}-{f}", protocol(pkt.proto).name(), pkt.dport),
                ]);
                hit.set == plain || hit.set == named
            } else if r.peers.is_empty() {
                let alternatives: Vec<Vec<Match>> = if r.ports.is_empty() {
                    vec![vec![]]
                } else {
                    r.ports.iter().filter_map(|p| port_match(p, dest)).collect()
                };
                alternatives.contains(&bare)
            } else {
                false
            };
            if produced {
                out.push((format!("{}/{}", policy.namespace, policy.name), i));
            }
        }
    }
    out
}

fn isolating(cfg: &NetpolConfig, dir: Direction, pod: &Pod) -> Vec<String> {
    cfg.cluster
        .policies
        .iter()
        .filter(|p| selects(p, pod))
        .filter(|p| match dir {
            Direction::Ingress => p.affects_ingress,
            Direction::Egress => p.affects_egress,
        })
        .map(|p| format!("{}/{}", p.namespace, p.name))
        .collect()
}

/// The check of `dir` on `pod` (the flow's source for egress, its destination for
/// ingress), from the evaluation's path.
fn check(
    cfg: &NetpolConfig,
    rs: &Ruleset,
    dir: Direction,
    pod: &Pod,
    ev: &Evaluation,
    pkt: &Packet,
) -> Check {
    let pod_key = key(pod);
    if pod.node.as_deref() != Some(cfg.node.as_str()) {
        return Check {
            direction: dir,
            pod: pod_key,
            outcome: Outcome::OtherNode(pod.node.clone()),
        };
    }
    let addr = match dir {
        Direction::Egress => pkt.saddr,
        Direction::Ingress => pkt.daddr,
    };
    if let Some(o) = tier_outcome(rs, dir, TierChain::Admin, addr, ev) {
        return Check {
            direction: dir,
            pod: pod_key,
            outcome: o,
        };
    }
    let chain = build::dispatched_chain(rs, dir, TierChain::NetworkPolicy, addr);
    let outcome = if let Some(chain) = chain {
        match ev.path.iter().rfind(|s| s.chain == chain) {
            None => Outcome::NotReached,
            Some(step) => {
                let rule = rs
                    .chains
                    .iter()
                    .find(|c| c.name == chain)
                    .and_then(|c| c.rules.get(step.rule));
                let would_drop = rule.is_some_and(|r| {
                    r.matches.iter().any(|m| {
                        matches!(m, Match::Count { counter } if counter.ends_with(build::WOULD_DROP))
                    })
                });
                match rule.map(|r| r.action.clone()) {
                    Some(Action::Drop) => Outcome::DefaultDeny {
                        policies: isolating(cfg, dir, pod),
                    },
                    _ if would_drop => Outcome::WouldDrop {
                        policies: isolating(cfg, dir, pod),
                    },
                    _ => Outcome::Allowed {
                        rules: sources(cfg, rs, dir, pod, step, pkt),
                        set: step.sets.first().map(|h| h.set.clone()),
                    },
                }
            }
        }
    } else {
        tier_outcome(rs, dir, TierChain::Baseline, addr, ev).unwrap_or(Outcome::NotIsolated)
    };
    Check {
        direction: dir,
        pod: pod_key,
        outcome,
    }
}

/// The decision of the ClusterNetworkPolicy tier `tier` on `addr`'s chain, if one of its
/// rules decided (Accept or Deny): the rule is named by its peer set
/// (`<tier>/<policy>/<direction>/<rule>-v4`); a rule without one is a fail-closed rule
/// (its policy is the one the chain's name lists first that has such a rule).
fn tier_outcome(
    rs: &Ruleset,
    dir: Direction,
    tier: TierChain,
    addr: IpAddr,
    ev: &Evaluation,
) -> Option<Outcome> {
    let name = build::dispatched_chain(rs, dir, tier, addr)?;
    let step = ev.path.iter().rfind(|s| s.chain == name)?;
    let rule = rs
        .chains
        .iter()
        .find(|c| c.name == name)?
        .rules
        .get(step.rule)?;
    let action = match &rule.action {
        Action::Drop => ClusterAction::Deny,
        Action::Return => ClusterAction::Accept,
        // An Admin Pass or the chain's end: the next tier decides.
        _ => return None,
    };
    let tier = match tier {
        TierChain::Baseline => Tier::Baseline,
        _ => Tier::Admin,
    };
    let (policy, index) = match step.sets.first() {
        Some(hit) => {
            let parts: Vec<&str> = hit.set.split('/').collect();
            let index = parts
                .get(3)
                .and_then(|p| p.split(['-', '/']).next())
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            (parts.get(1).copied().unwrap_or("").to_string(), index)
        }
        None => (
            name.split('/')
                .nth(2)
                .unwrap_or("")
                .split('_')
                .next()
                .unwrap_or("")
                .to_string(),
            0,
        ),
    };
    Some(Outcome::Cluster {
        tier,
        policy,
        rule: index,
        action,
    })
}

/// Run `pkt` through every base chain of `rs` at `hook`, by priority, as the kernel does:
/// a drop ends it, an accept passes it to the next one. No base chain there: accepted.
fn evaluate_hook(rs: &Ruleset, hook: Hook, pkt: &Packet) -> Result<Evaluation, String> {
    let mut bases: Vec<_> = rs
        .chains
        .iter()
        .filter(|c| c.base.is_some_and(|b| b.hook == hook))
        .collect();
    bases.sort_by_key(|c| c.base.map(|b| b.priority));
    let mut all = Evaluation {
        verdict: Verdict::Accept,
        end: End::Policy,
        path: Vec::new(),
    };
    for chain in bases {
        let e = eval::evaluate(rs, &chain.name, pkt)?;
        all.path.extend(e.path);
        all.end = e.end;
        if e.verdict == Verdict::Drop {
            all.verdict = Verdict::Drop;
            break;
        }
    }
    Ok(all)
}

/// Explain the flow `from` -> `to` on `port`/`proto` as this node's rules decide it.
pub fn explain(
    cfg: &NetpolConfig,
    from: (&str, &EndpointArg),
    to: (&str, &EndpointArg),
    port: u16,
    proto: L4Proto,
) -> Result<Explanation> {
    let (from_ips, from_pod) = candidates(cfg, "--from", from.0, from.1)?;
    let (to_ips, to_pod) = candidates(cfg, "--to", to.0, to.1)?;
    // The first family both ends have (IPv4 first).
    let pick = [IpFamily::V4, IpFamily::V6].into_iter().find_map(|f| {
        let s = from_ips.iter().find(|a| family(a) == f)?;
        let d = to_ips.iter().find(|a| family(a) == f)?;
        Some((*s, *d))
    });
    let Some((saddr, daddr)) = pick else {
        return Err(Error::invalid(
            "--to",
            to.0,
            format!(
                "an endpoint of the same address family as --from {} ({})",
                from.0,
                from_ips
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    let from_pod = from_pod.or_else(|| pod_of(cfg, saddr));
    let to_pod = to_pod.or_else(|| pod_of(cfg, daddr));
    let endpoint = |input: &str, address, pod: Option<&Pod>| Endpoint {
        input: input.to_string(),
        address,
        pod: pod.map(key),
        node: pod.and_then(|p| p.node.clone()),
    };
    let from_ep = endpoint(from.0, saddr, from_pod);
    let to_ep = endpoint(to.0, daddr, to_pod);
    let here = |p: Option<&Pod>| p.is_some_and(|p| p.node.as_deref() == Some(cfg.node.as_str()));

    let rs = build::build(cfg, build::COMMAND);
    // The node's own addresses (those of its host-network pods): traffic from them leaves
    // through the output hook, traffic to them arrives through input; the rest is forwarded.
    let node_addr = |a: IpAddr| {
        cfg.cluster.pods.iter().any(|p| {
            p.host_network && p.node.as_deref() == Some(cfg.node.as_str()) && p.ips.contains(&a)
        })
    };
    // None: one address at both ends; the traffic stays inside that pod (or host).
    let hook = if saddr == daddr {
        None
    } else if node_addr(saddr) {
        Some(Hook::Output)
    } else if node_addr(daddr) {
        Some(Hook::Input)
    } else {
        Some(Hook::Forward)
    };
    let mut pkt = Packet::new_forwarded(saddr, daddr, proto, port);
    pkt.daddr_local = node_addr(daddr);
    let ev = match hook {
        Some(hook) => evaluate_hook(&rs, hook, &pkt)
            .map_err(|e| Error::runtime(format!("internal error: evaluating the ruleset: {e}")))?,
        None => Evaluation {
            verdict: Verdict::Accept,
            end: End::Policy,
            path: Vec::new(),
        },
    };
    let allowed = ev.verdict == Verdict::Accept;
    let path = ev
        .path
        .iter()
        .map(|s| PathStep {
            chain: s.chain.clone(),
            rule: s.rule,
            text: rs
                .chains
                .iter()
                .find(|c| c.name == s.chain)
                .and_then(|c| c.rules.get(s.rule))
                .map(crate::render::rule_text)
                .unwrap_or_default(),
            sets: s
                .sets
                .iter()
                .map(|h| (h.set.clone(), crate::render::element(&h.element)))
                .collect(),
        })
        .collect();
    let mut checks = Vec::new();
    if let Some(p) = from_pod.filter(|p| !p.host_network) {
        checks.push(check(cfg, &rs, Direction::Egress, p, &ev, &pkt));
    }
    if let Some(p) = to_pod.filter(|p| !p.host_network) {
        checks.push(check(cfg, &rs, Direction::Ingress, p, &ev, &pkt));
    }
    let policed_here = hook == Some(Hook::Forward) && (here(from_pod) || here(to_pod));
    let reason = reason(cfg, &ev, &checks, hook, policed_here);
    Ok(Explanation {
        node: cfg.node.clone(),
        from: from_ep,
        to: to_ep,
        proto,
        port,
        allowed,
        reason,
        checks,
        path,
        policed_here,
    })
}

fn reason(
    cfg: &NetpolConfig,
    ev: &Evaluation,
    checks: &[Check],
    hook: Option<Hook>,
    policed_here: bool,
) -> String {
    let Some(hook) = hook else {
        return "both ends are one address: the traffic never leaves it, nothing polices it".into();
    };
    if hook != Hook::Forward {
        return format!(
            "an endpoint is node {}'s own address (a host-network pod's): its traffic passes the {} hook, which netpol does not police",
            cfg.node,
            hook.nft_name()
        );
    }
    if !policed_here {
        return format!(
            "neither endpoint is a pod of node {}: not this node's decision (the rules here let it pass)",
            cfg.node
        );
    }
    for c in checks {
        let dir = c.direction.name();
        match &c.outcome {
            Outcome::DefaultDeny { policies } if ev.verdict == Verdict::Drop => {
                return format!(
                    "default-deny: {dir} of {} is isolated by networkpolicy {} and no {dir} rule of theirs allows this flow",
                    c.pod,
                    policies.join(", ")
                );
            }
            Outcome::Cluster {
                tier,
                policy,
                rule,
                action: ClusterAction::Deny,
            } if ev.verdict == Verdict::Drop => {
                return format!(
                    "{dir} of {}: denied by ClusterNetworkPolicy {policy} ({} tier) rule {rule}",
                    c.pod,
                    tier.name()
                );
            }
            _ => {}
        }
    }
    if ev.verdict == Verdict::Drop {
        return "dropped by a rule of the table (see the path)".into();
    }
    let parts: Vec<String> = checks
        .iter()
        .map(|c| {
            let dir = c.direction.name();
            match &c.outcome {
                Outcome::NotIsolated => format!("{dir} of {}: not isolated", c.pod),
                Outcome::Allowed { rules, .. } if !rules.is_empty() => format!(
                    "{dir} of {}: allowed by {}",
                    c.pod,
                    rules
                        .iter()
                        .map(|(p, i)| format!("networkpolicy {p} {dir}[{i}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Outcome::Allowed { .. } => format!("{dir} of {}: allowed", c.pod),
                Outcome::DefaultDeny { .. } => format!("{dir} of {}: denied", c.pod),
                Outcome::WouldDrop { policies } => format!(
                    "{dir} of {}: would be denied by networkpolicy {} (audit mode: passes, logged as would-drop)",
                    c.pod,
                    policies.join(", ")
                ),
                Outcome::NotReached => format!("{dir} of {}: not checked", c.pod),
                Outcome::Cluster {
                    tier,
                    policy,
                    rule,
                    action,
                } => format!(
                    "{dir} of {}: {} by ClusterNetworkPolicy {policy} ({} tier) rule {rule}",
                    c.pod,
                    match action {
                        ClusterAction::Deny => "denied",
                        _ => "allowed",
                    },
                    tier.name()
                ),
                Outcome::OtherNode(n) => format!(
                    "{dir} of {}: decided on {}",
                    c.pod,
                    n.as_deref()
                        .map(|n| format!("node {n}"))
                        .unwrap_or_else(|| "no node (unscheduled)".into())
                ),
            }
        })
        .collect();
    if parts.is_empty() {
        return "no rule of the table stops it".into();
    }
    parts.join("; ")
}

mod output;

#[cfg(test)]
mod tests;
