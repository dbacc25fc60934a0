//! Lowering: nftkit's model → the owned iptables state of each family
//! ([`FamilyState`]), in iptables-save's canonical text. Pure; no I/O.
//!
//! Each model rule becomes the conjunction of its matches' constraints; a set match
//! contributes one alternative per element, a DNAT map one per entry, so a rule becomes
//! the cross product (contradictions dropped: an IPv4 address in an IPv6 rule, two
//! disjoint prefixes, two different ports). What iptables cannot say is an error naming
//! the backend and the feature.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use nft_compat::Table;
use nft_compat::naming;
use nft_compat::rule::{Rule as IptRule, Target};
use nft_compat::state::{FamilyState, Jump, OwnedChain, TableState};

use crate::error::{Error, Result};
use crate::model::{
    Action, BaseChain, Chain, ChainType, CtState, Element, Hook, IpFamily, L4Proto, Match, Owner,
    Ruleset, priority,
};

/// More iptables rules than this from one nftkit rule (sets multiplied out) is refused.
const MAX_EXPANSION: usize = 500_000;

fn unsupported(backend: &str, what: impl std::fmt::Display) -> Error {
    Error::runtime(format!(
        "backend {backend} cannot express {what}; use --backend nftables"
    ))
}

/// The iptables table and built-in chain of a base chain.
fn placement(backend: &str, chain: &str, b: BaseChain) -> Result<(Table, &'static str)> {
    let table = match b.kind {
        ChainType::Nat => Table::Nat,
        ChainType::Filter if b.priority == priority::RAW => Table::Raw,
        ChainType::Filter => Table::Filter,
    };
    let builtin = match b.hook {
        Hook::Prerouting => "PREROUTING",
        Hook::Input => "INPUT",
        Hook::Forward => "FORWARD",
        Hook::Output => "OUTPUT",
        Hook::Postrouting => "POSTROUTING",
    };
    if !table.has_builtin(builtin) {
        return Err(unsupported(
            backend,
            format!(
                "base chain {chain} (type {} hook {} priority {}): the iptables table {} has no {builtin} chain",
                b.kind.nft_name(),
                b.hook.nft_name(),
                b.priority,
                table.name()
            ),
        ));
    }
    Ok((table, builtin))
}

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
}

#[derive(Debug, Clone)]
enum C {
    Family(IpFamily),
    Src(IpNet),
    Dst(IpNet),
    Proto(L4Proto),
    NotProto(L4Proto),
    Sport(L4Proto, u16, u16),
    Dport(L4Proto, u16, u16),
    Extra(String),
    DnatTo(SocketAddr),
}

fn family_of(net: &IpNet) -> IpFamily {
    match net {
        IpNet::V4(_) => IpFamily::V4,
        IpNet::V6(_) => IpFamily::V6,
    }
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
            C::Src(n) => {
                if !fam(&mut self, family_of(n)) {
                    return None;
                }
                self.src = Some(match self.src {
                    Some(s) => narrower(s, *n)?,
                    None => *n,
                });
                Some(self)
            }
            C::Dst(n) => {
                if !fam(&mut self, family_of(n)) {
                    return None;
                }
                self.dst = Some(match self.dst {
                    Some(d) => narrower(d, *n)?,
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

fn ipt_addr_port(sa: &SocketAddr) -> String {
    match sa.ip() {
        IpAddr::V4(a) => format!("{a}:{}", sa.port()),
        IpAddr::V6(a) => format!("[{a}]:{}", sa.port()),
    }
}

/// `--ctstate` in the order iptables-save prints states.
fn ctstate_text(states: &[CtState]) -> String {
    const ORDER: [(CtState, &str); 5] = [
        (CtState::Invalid, "INVALID"),
        (CtState::New, "NEW"),
        (CtState::Related, "RELATED"),
        (CtState::Established, "ESTABLISHED"),
        (CtState::Untracked, "UNTRACKED"),
    ];
    ORDER
        .iter()
        .filter(|(s, _)| states.contains(s))
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

fn owner_text(owner: Owner, first: u32, last: u32) -> String {
    let flag = match owner {
        Owner::Uid => "--uid-owner",
        Owner::Gid => "--gid-owner",
    };
    // iptables refuses the range form a-a.
    if first == last {
        format!("-m owner {flag} {first}")
    } else {
        format!("-m owner {flag} {first}-{last}")
    }
}

/// Elements of set `name`, checked against what the match needs.
fn set_elements<'a>(backend: &str, rs: &'a Ruleset, name: &str) -> Result<&'a [Element]> {
    rs.set(name).map(|s| s.elements.as_slice()).ok_or_else(|| {
        unsupported(
            backend,
            format!("a reference to the undeclared set @{name}"),
        )
    })
}

/// The alternatives one match allows (a set gives one per element).
fn options(backend: &str, rs: &Ruleset, m: &Match) -> Result<Vec<Vec<C>>> {
    let one = |c: C| Ok(vec![vec![c]]);
    let bad_element = |set: &str, e: &Element| {
        unsupported(
            backend,
            format!("set @{set}: element {e:?} does not fit the match that uses it"),
        )
    };
    match m {
        Match::NfProto(f) => one(C::Family(*f)),
        Match::L4Proto {
            proto,
            negate: false,
        } => one(C::Proto(*proto)),
        Match::L4Proto {
            proto,
            negate: true,
        } => one(C::NotProto(*proto)),
        Match::Daddr(n) => one(C::Dst(*n)),
        Match::Saddr(n) => one(C::Src(*n)),
        Match::DaddrInSet { family, set } | Match::SaddrInSet { family, set } => {
            let dst = matches!(m, Match::DaddrInSet { .. });
            set_elements(backend, rs, set)?
                .iter()
                .map(|e| {
                    let net: IpNet = match (family, e) {
                        (IpFamily::V4, Element::V4(n)) => (*n).into(),
                        (IpFamily::V6, Element::V6(n)) => (*n).into(),
                        _ => return Err(bad_element(set, e)),
                    };
                    Ok(vec![if dst { C::Dst(net) } else { C::Src(net) }])
                })
                .collect()
        }
        Match::Dport { proto, port } => one(C::Dport(*proto, *port, *port)),
        Match::Sport { proto, port } => one(C::Sport(*proto, *port, *port)),
        Match::DportRange { proto, first, last } => one(C::Dport(*proto, *first, *last)),
        Match::DportInSet { proto, set } => set_elements(backend, rs, set)?
            .iter()
            .map(|e| match e {
                Element::Port(p) => Ok(vec![C::Dport(*proto, *p, *p)]),
                _ => Err(bad_element(set, e)),
            })
            .collect(),
        Match::FibDaddrLocal { negate } => one(C::Extra(format!(
            "-m addrtype {}--dst-type LOCAL",
            if *negate { "! " } else { "" }
        ))),
        Match::CtState(states) => {
            if states.is_empty() {
                return Ok(Vec::new());
            }
            one(C::Extra(format!(
                "-m conntrack --ctstate {}",
                ctstate_text(states)
            )))
        }
        Match::OwnerInSet { owner, set } => set_elements(backend, rs, set)?
            .iter()
            .map(|e| match e {
                Element::Id(id) => Ok(vec![C::Extra(owner_text(*owner, *id, *id))]),
                _ => Err(bad_element(set, e)),
            })
            .collect(),
        Match::OwnerRange { owner, first, last } => {
            one(C::Extra(owner_text(*owner, *first, *last)))
        }
    }
}

/// What an action needs from the rule, and its iptables target (chain references are
/// model names here, resolved per table later).
enum Verdict {
    Target(String),
    Jump(String),
    Goto(String),
}

/// The constraints an action adds (one list per alternative: a DNAT map gives one per
/// entry) and its verdict.
fn action(a: &Action) -> (Vec<Vec<C>>, Verdict) {
    let plain = |t: &str| (vec![Vec::new()], Verdict::Target(t.to_string()));
    match a {
        Action::Accept => plain("ACCEPT"),
        Action::Drop => plain("DROP"),
        Action::Return => plain("RETURN"),
        Action::Jump(c) => (vec![Vec::new()], Verdict::Jump(c.clone())),
        Action::Goto(c) => (vec![Vec::new()], Verdict::Goto(c.clone())),
        Action::Notrack => plain("CT --notrack"),
        Action::Masquerade {
            fully_random: false,
        } => plain("MASQUERADE"),
        Action::Masquerade { fully_random: true } => plain("MASQUERADE --random-fully"),
        Action::Redirect { port } => plain(&format!("REDIRECT --to-ports {port}")),
        Action::Dnat { addr, port } => {
            let fam = match addr {
                IpAddr::V4(_) => IpFamily::V4,
                IpAddr::V6(_) => IpFamily::V6,
            };
            (
                vec![vec![C::Family(fam)]],
                Verdict::Target(format!(
                    "DNAT --to-destination {}",
                    ipt_addr_port(&SocketAddr::new(*addr, *port))
                )),
            )
        }
        Action::DnatMap {
            family,
            proto,
            entries,
        } => {
            let opts = entries
                .iter()
                .map(|(orig, target)| {
                    vec![
                        C::Family(*family),
                        C::Dst(IpNet::from(orig.ip())),
                        C::Dport(*proto, orig.port(), orig.port()),
                        C::DnatTo(*target),
                    ]
                })
                .collect();
            // The target text is per entry: `lower_rule` takes it from `dnat_to`.
            (opts, Verdict::Target(String::new()))
        }
    }
}

/// One lowered rule of a chain: its family and spec pieces; the target is resolved per
/// table (chain names) by `finish`.
struct Lowered {
    family: Option<IpFamily>,
    rule: IptRule,
    /// Model name of the chain jumped/gone to, if any.
    refers: Option<String>,
}

/// Every iptables rule one model rule becomes.
fn lower_rule(
    backend: &str,
    rs: &Ruleset,
    chain: &str,
    r: &crate::model::Rule,
) -> Result<Vec<Lowered>> {
    let mut alts = vec![Alt::default()];
    let (act_opts, verdict) = action(&r.action);
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
        let (target, refers) = match (&verdict, a.dnat_to) {
            (_, Some(to)) => (
                Target::Jump(format!("DNAT --to-destination {}", ipt_addr_port(&to))),
                None,
            ),
            (Verdict::Target(t), None) => (Target::Jump(t.clone()), None),
            (Verdict::Jump(c), None) => (Target::Jump(c.clone()), Some(c.clone())),
            (Verdict::Goto(c), None) => (Target::Goto(c.clone()), Some(c.clone())),
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

/// Targets an iptables table accepts (the kernel refuses the others there; we say so
/// before sending anything).
fn check_target(backend: &str, table: Table, chain: &str, t: &Target) -> Result<()> {
    let Target::Jump(t) = t else { return Ok(()) };
    let name = t.split_whitespace().next().unwrap_or("");
    let needs = match name {
        "DROP" if table == Table::Nat => {
            Some("a table other than nat (iptables refuses DROP in nat)")
        }
        "CT" if table != Table::Raw => Some("the raw table (priority -300)"),
        "MASQUERADE" | "REDIRECT" | "DNAT" if table != Table::Nat => Some("a nat chain"),
        _ => None,
    };
    match needs {
        Some(n) => Err(unsupported(
            backend,
            format!(
                "-j {name} in chain {chain} of table {}: it needs {n}",
                table.name()
            ),
        )),
        None => Ok(()),
    }
}

/// The desired owned state of `rs`, IPv4 then IPv6. `backend` names the flavour in errors.
pub fn lower(rs: &Ruleset, backend: &str) -> Result<[FamilyState; 2]> {
    let prefix = naming::prefix(&rs.table);
    // (model name, iptables name, table and built-in chain of a base chain).
    type Named = (String, String, Option<(Table, &'static str)>);
    let mut names: Vec<Named> = Vec::new();
    let base_names: Vec<String> = rs
        .chains
        .iter()
        .filter_map(|c| c.base)
        .filter_map(|b| placement(backend, "", b).ok())
        .filter_map(|(_, builtin)| naming::base_chain_name(&prefix, builtin))
        .collect();
    for c in &rs.chains {
        let (name, place) = match c.base {
            Some(b) => {
                let (table, builtin) = placement(backend, &c.name, b)?;
                (
                    naming::base_chain_name(&prefix, builtin),
                    Some((table, builtin)),
                )
            }
            // Hashed names can clash (netpol has a chain per pod): try the next hash.
            None => {
                let taken = |n: &str| {
                    base_names.iter().any(|b| b == n) || names.iter().any(|(_, m, _)| m == n)
                };
                let mut attempt = 0;
                let name = loop {
                    match naming::regular_chain_name_attempt(&prefix, &c.name, attempt) {
                        Some(n) if taken(&n) && attempt < 100 => attempt += 1,
                        other => break other,
                    }
                };
                (name, None)
            }
        };
        let name = name.ok_or_else(|| {
            Error::invalid(
                "--table",
                &rs.table,
                format!(
                    "a name of at most {} characters for the iptables backends (chain names `{}-…` must fit {} characters)",
                    naming::MAX_CHAIN_NAME.saturating_sub(10),
                    prefix,
                    naming::MAX_CHAIN_NAME
                ),
            )
        })?;
        names.push((c.name.clone(), name, place));
    }
    let ipt_name = |model: &str| -> Result<&str> {
        names
            .iter()
            .find(|(m, _, _)| m == model)
            .map(|(_, n, _)| n.as_str())
            .ok_or_else(|| unsupported(backend, format!("a jump to the undeclared chain {model}")))
    };

    // Lower every rule once.
    let mut lowered: Vec<(&Chain, Vec<Lowered>)> = Vec::new();
    for c in &rs.chains {
        let mut rules = Vec::new();
        for r in &c.rules {
            rules.extend(lower_rule(backend, rs, &c.name, r)?);
        }
        lowered.push((c, rules));
    }

    let mut out: [FamilyState; 2] = Default::default();
    for (slot, family) in [(0usize, IpFamily::V4), (1, IpFamily::V6)] {
        let in_family = |l: &&Lowered| l.family.is_none_or(|f| f == family);
        let mut tables: Vec<TableState> = Vec::new();
        for table in Table::ALL {
            // Base chains of this table, by priority (lowest first = first jumped to).
            let mut bases: Vec<(&Chain, &'static str)> = rs
                .chains
                .iter()
                .zip(&names)
                .filter_map(|(c, (_, _, place))| match place {
                    Some((t, b)) if *t == table => Some((c, *b)),
                    _ => None,
                })
                .collect();
            if bases.is_empty() {
                continue;
            }
            bases.sort_by_key(|(c, _)| c.base.map(|b| b.priority));
            // Chains reachable in this family from these base chains, in model order.
            let mut reach: BTreeSet<&str> = bases.iter().map(|(c, _)| c.name.as_str()).collect();
            let mut queue: Vec<&str> = reach.iter().copied().collect();
            while let Some(cur) = queue.pop() {
                let Some((_, rules)) = lowered.iter().find(|(c, _)| c.name == cur) else {
                    continue;
                };
                for l in rules.iter().filter(in_family) {
                    if let Some(t) = &l.refers
                        && reach.insert(t.as_str())
                    {
                        queue.push(t.as_str());
                    }
                }
            }
            let mut chains = Vec::new();
            for (c, rules) in lowered
                .iter()
                .filter(|(c, _)| reach.contains(c.name.as_str()))
            {
                let name = ipt_name(&c.name)?.to_string();
                let mut specs = Vec::new();
                for l in rules.iter().filter(in_family) {
                    let mut rule = l.rule.clone();
                    if let Some(model) = &l.refers {
                        let target = ipt_name(model)?.to_string();
                        rule.target = match rule.target {
                            Target::Goto(_) => Target::Goto(target),
                            Target::Jump(_) => Target::Jump(target),
                        };
                    }
                    check_target(backend, table, &c.name, &rule.target)?;
                    specs.push(rule.spec());
                }
                chains.push(OwnedChain { name, rules: specs });
            }
            let mut seen = BTreeSet::new();
            for c in &chains {
                if !seen.insert(c.name.as_str()) {
                    return Err(unsupported(
                        backend,
                        format!(
                            "two chains that both become {} in table {} (one base chain per hook and table)",
                            c.name,
                            table.name()
                        ),
                    ));
                }
            }
            let jumps = bases
                .iter()
                .map(|(c, builtin)| {
                    let mut j = IptRule::new(Target::Jump(ipt_name(&c.name)?.to_string()));
                    j.comment = Some(rs.comment.clone());
                    Ok(Jump {
                        from: builtin.to_string(),
                        spec: j.spec(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            tables.push(TableState {
                table,
                chains,
                jumps,
            });
        }
        let fam = FamilyState { tables };
        // A family with no rule at all is left alone (no empty chains, no jumps).
        if fam.rule_count() > 0 {
            out[slot] = fam;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{owned_prefixes, owner_comment, snapshot};
    use super::*;
    use crate::model::{Rule, Set};
    use nft_compat::save;

    const C: &str = r#"-m comment --comment "managed by nftkit t""#;

    fn rs(chains: Vec<Chain>, sets: Vec<Set>) -> Ruleset {
        Ruleset {
            table: "nftkit-t".into(),
            comment: "managed by nftkit t".into(),
            sets,
            chains,
        }
    }

    fn base(name: &str, kind: ChainType, hook: Hook, prio: i32, rules: Vec<Rule>) -> Chain {
        Chain {
            name: name.into(),
            base: Some(BaseChain {
                kind,
                hook,
                priority: prio,
            }),
            rules,
        }
    }

    fn rule(matches: Vec<Match>, action: Action) -> Rule {
        Rule { matches, action }
    }

    fn specs(f: &FamilyState, table: Table) -> Vec<String> {
        f.table(table)
            .map(|t| {
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(move |r| format!("-A {} {r}", c.name)))
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn redirect_default_lowers_to_canonical_lines() {
        let cfg = crate::jobs::redirect::parse(
            &Default::default(),
            &|_| None,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let r = crate::jobs::redirect::build(&cfg, Default::default(), "nftkit-redirect");
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        let c = r#"-m comment --comment "managed by nftkit redirect""#;
        let ch = "-A NFTKIT-REDIRECT-OUTPUT";
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![
                format!("{ch} ! -p tcp {c} -j RETURN"),
                format!("{ch} -d 10.0.0.0/8 {c} -j RETURN"),
                format!("{ch} -d 127.0.0.0/8 {c} -j RETURN"),
                format!("{ch} -d 172.16.0.0/12 {c} -j RETURN"),
                format!("{ch} -d 192.168.0.0/16 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 -m owner --uid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 443 -m owner --uid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 -m owner --gid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 443 -m owner --gid-owner 1010 {c} -j RETURN"),
                format!("{ch} -p tcp -m tcp --dport 80 {c} -j REDIRECT --to-ports 10080"),
                format!("{ch} -p tcp -m tcp --dport 443 {c} -j REDIRECT --to-ports 10443"),
            ]
        );
        let v6s = specs(&v6, Table::Nat);
        assert!(
            v6s.contains(&format!("{ch} -d ::1/128 {c} -j RETURN")),
            "{v6s:?}"
        );
        assert!(
            v6s.contains(&format!("{ch} -d fc00::/7 {c} -j RETURN")),
            "{v6s:?}"
        );
        assert!(!v6s.iter().any(|s| s.contains("10.0.0.0")), "{v6s:?}");
        assert_eq!(
            v4.table(Table::Nat).unwrap().jumps,
            vec![Jump {
                from: "OUTPUT".into(),
                spec: format!("{c} -j NFTKIT-REDIRECT-OUTPUT")
            }]
        );
    }

    #[test]
    fn families_split_and_dnat_per_family() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![
                    rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::L4Proto {
                                proto: L4Proto::Tcp,
                                negate: false,
                            },
                        ],
                        Action::Dnat {
                            addr: "203.0.113.10".parse().unwrap(),
                            port: 15001,
                        },
                    ),
                    rule(
                        vec![Match::Dport {
                            proto: L4Proto::Tcp,
                            port: 80,
                        }],
                        Action::Dnat {
                            addr: "2001:db8::10".parse().unwrap(),
                            port: 8080,
                        },
                    ),
                    rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::Daddr("2001:db8::/32".parse().unwrap()),
                        ],
                        Action::Return,
                    ),
                ],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -p tcp {C} -j DNAT --to-destination 203.0.113.10:15001"
            )]
        );
        assert_eq!(
            specs(&v6, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -p tcp -m tcp --dport 80 {C} -j DNAT --to-destination [2001:db8::10]:8080"
            )]
        );
    }

    #[test]
    fn tables_by_type_and_priority_and_regular_chains_follow_jumps() {
        let r = rs(
            vec![
                base(
                    "raw-output",
                    ChainType::Filter,
                    Hook::Output,
                    priority::RAW,
                    vec![rule(
                        vec![
                            Match::Saddr("192.0.2.1/32".parse().unwrap()),
                            Match::Sport {
                                proto: L4Proto::Tcp,
                                port: 443,
                            },
                        ],
                        Action::Notrack,
                    )],
                ),
                base(
                    "filter-forward",
                    ChainType::Filter,
                    Hook::Forward,
                    priority::FILTER,
                    vec![rule(
                        vec![Match::CtState(vec![
                            CtState::Established,
                            CtState::New,
                            CtState::Related,
                        ])],
                        Action::Goto("accepts".into()),
                    )],
                ),
                base(
                    "nat-post",
                    ChainType::Nat,
                    Hook::Postrouting,
                    priority::SRCNAT,
                    vec![rule(
                        vec![
                            Match::NfProto(IpFamily::V4),
                            Match::FibDaddrLocal { negate: true },
                        ],
                        Action::Jump("IP-MASQ-AGENT".into()),
                    )],
                ),
                Chain {
                    name: "accepts".into(),
                    base: None,
                    rules: vec![rule(vec![], Action::Accept)],
                },
                Chain {
                    name: "IP-MASQ-AGENT".into(),
                    base: None,
                    rules: vec![rule(vec![], Action::Masquerade { fully_random: true })],
                },
            ],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-legacy").unwrap();
        assert_eq!(
            specs(&v4, Table::Raw),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -s 192.0.2.1/32 -p tcp -m tcp --sport 443 {C} -j CT --notrack"
            )]
        );
        assert_eq!(
            specs(&v4, Table::Filter),
            vec![
                format!(
                    "-A NFTKIT-T-FORWARD -m conntrack --ctstate NEW,RELATED,ESTABLISHED {C} -g NFTKIT-T-ACCEPTS"
                ),
                format!("-A NFTKIT-T-ACCEPTS {C} -j ACCEPT"),
            ]
        );
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![
                format!(
                    "-A NFTKIT-T-POSTROUTING -m addrtype ! --dst-type LOCAL {C} -j NFTKIT-T-IP-MASQ-AGENT"
                ),
                format!("-A NFTKIT-T-IP-MASQ-AGENT {C} -j MASQUERADE --random-fully"),
            ]
        );
        // IPv6: the nat jump is IPv4-only, so IP-MASQ-AGENT is unreachable there; the
        // filter chains are family-neutral.
        assert!(v6.table(Table::Raw).unwrap().chains[0].rules.is_empty());
        let nat6 = v6.table(Table::Nat).unwrap();
        assert_eq!(nat6.chains.len(), 1, "{nat6:?}");
        assert!(nat6.chains[0].rules.is_empty());
        assert_eq!(specs(&v6, Table::Filter).len(), 2);
    }

    #[test]
    fn a_family_without_rules_is_left_alone() {
        let r = rs(
            vec![base(
                "nat-post",
                ChainType::Nat,
                Hook::Postrouting,
                priority::SRCNAT,
                vec![rule(
                    vec![Match::NfProto(IpFamily::V4)],
                    Action::Masquerade {
                        fully_random: false,
                    },
                )],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(v4.rule_count(), 1);
        assert!(v6.is_empty());
    }

    #[test]
    fn sets_multiply_out_and_empty_sets_match_nothing() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![
                    rule(
                        vec![
                            Match::DportInSet {
                                proto: L4Proto::Tcp,
                                set: "ports".into(),
                            },
                            Match::OwnerInSet {
                                owner: Owner::Uid,
                                set: "uids".into(),
                            },
                            Match::OwnerRange {
                                owner: Owner::Gid,
                                first: 7,
                                last: 7,
                            },
                        ],
                        Action::Return,
                    ),
                    rule(
                        vec![Match::DaddrInSet {
                            family: IpFamily::V4,
                            set: "empty".into(),
                        }],
                        Action::Return,
                    ),
                ],
            )],
            vec![
                Set {
                    name: "ports".into(),
                    key: crate::model::KeyType::InetService,
                    interval: false,
                    elements: vec![Element::Port(80), Element::Port(443)],
                },
                Set {
                    name: "uids".into(),
                    key: crate::model::KeyType::Uid,
                    interval: false,
                    elements: vec![Element::Id(0), Element::Id(1010)],
                },
                Set {
                    name: "empty".into(),
                    key: crate::model::KeyType::Ipv4Addr,
                    interval: true,
                    elements: vec![],
                },
            ],
        );
        let [v4, _] = lower(&r, "iptables-nft").unwrap();
        let got = specs(&v4, Table::Nat);
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(
            got[0],
            format!(
                "-A NFTKIT-T-OUTPUT -p tcp -m tcp --dport 80 -m owner --uid-owner 0 -m owner --gid-owner 7 {C} -j RETURN"
            )
        );
        assert!(
            got[3].contains("--dport 443 -m owner --uid-owner 1010"),
            "{got:?}"
        );
    }

    #[test]
    fn dnat_map_becomes_one_rule_per_entry() {
        let r = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![rule(
                    vec![],
                    Action::DnatMap {
                        family: IpFamily::V4,
                        proto: L4Proto::Tcp,
                        entries: vec![(
                            "169.254.169.254:80".parse().unwrap(),
                            "198.51.100.5:8080".parse().unwrap(),
                        )],
                    },
                )],
            )],
            vec![],
        );
        let [v4, v6] = lower(&r, "iptables-nft").unwrap();
        assert_eq!(
            specs(&v4, Table::Nat),
            vec![format!(
                "-A NFTKIT-T-OUTPUT -d 169.254.169.254/32 -p tcp -m tcp --dport 80 {C} -j DNAT --to-destination 198.51.100.5:8080"
            )]
        );
        assert!(v6.is_empty());
    }

    #[test]
    fn clashing_hashed_chain_names_are_resolved() {
        // Two long names whose first hashed forms clash (found by search; 24-bit hash).
        let prefix = naming::prefix("nftkit-t");
        let mut seen = std::collections::HashMap::new();
        let (a, b) = (0..200_000)
            .find_map(|i| {
                let name = format!("ingress/some-namespace/pod-{i}");
                let n = naming::regular_chain_name(&prefix, &name).unwrap();
                seen.insert(n, name.clone()).map(|other| (other, name))
            })
            .expect("a clash within 200 000 names");
        let chain = |name: &str| Chain {
            name: name.into(),
            base: None,
            rules: vec![rule(vec![], Action::Drop)],
        };
        let r = rs(
            vec![
                base(
                    "fwd",
                    ChainType::Filter,
                    Hook::Forward,
                    0,
                    vec![
                        rule(
                            vec![Match::Daddr("10.0.0.1/32".parse().unwrap())],
                            Action::Jump(a.clone()),
                        ),
                        rule(
                            vec![Match::Daddr("10.0.0.2/32".parse().unwrap())],
                            Action::Jump(b.clone()),
                        ),
                    ],
                ),
                chain(&a),
                chain(&b),
            ],
            vec![],
        );
        let [v4, _] = lower(&r, "iptables-nft").unwrap();
        let t = v4.table(Table::Filter).unwrap();
        assert_eq!(t.chains.len(), 3);
        assert_ne!(t.chains[1].name, t.chains[2].name);
        assert!(t.chains[0].rules[0].ends_with(&t.chains[1].name));
        assert!(t.chains[0].rules[1].ends_with(&t.chains[2].name));
    }

    #[test]
    fn what_iptables_cannot_express_is_refused_by_name() {
        let drop_in_nat = rs(
            vec![base(
                "nat-output",
                ChainType::Nat,
                Hook::Output,
                priority::DSTNAT,
                vec![rule(vec![], Action::Drop)],
            )],
            vec![],
        );
        let e = lower(&drop_in_nat, "iptables-legacy").unwrap_err();
        assert_eq!(e.exit_code(), 1);
        let msg = e.to_string();
        assert!(
            msg.contains("iptables-legacy") && msg.contains("DROP"),
            "{msg}"
        );

        let nat_forward = rs(
            vec![base("x", ChainType::Nat, Hook::Forward, 0, vec![])],
            vec![],
        );
        let msg = lower(&nat_forward, "iptables-nft").unwrap_err().to_string();
        assert!(
            msg.contains("FORWARD") && msg.contains("iptables-nft"),
            "{msg}"
        );

        let two_nots = rs(
            vec![base(
                "f",
                ChainType::Filter,
                Hook::Input,
                0,
                vec![rule(
                    vec![
                        Match::L4Proto {
                            proto: L4Proto::Tcp,
                            negate: true,
                        },
                        Match::L4Proto {
                            proto: L4Proto::Udp,
                            negate: true,
                        },
                    ],
                    Action::Drop,
                )],
            )],
            vec![],
        );
        assert!(
            lower(&two_nots, "iptables-nft")
                .unwrap_err()
                .to_string()
                .contains("several protocols")
        );

        let mut long = drop_in_nat.clone();
        long.table = "a-very-long-table-name-for-iptables".into();
        long.chains[0].rules.clear();
        assert_eq!(lower(&long, "iptables-nft").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn snapshot_of_lowered_state_equals_snapshot_of_its_save() {
        let cfg = crate::jobs::redirect::parse(
            &Default::default(),
            &|_| None,
            std::path::Path::new("/nonexistent"),
        )
        .unwrap();
        let r = crate::jobs::redirect::build(&cfg, Default::default(), "nftkit-redirect");
        let fams = lower(&r, "iptables-nft").unwrap();
        // What iptables-save prints after restoring the plan on an empty host.
        let mut saves = Vec::new();
        for f in &fams {
            let mut text = String::new();
            for t in &f.tables {
                text.push_str(&format!("*{}\n", t.table.name()));
                for b in t.table.builtin_chains() {
                    text.push_str(&format!(":{b} ACCEPT [0:0]\n"));
                }
                for c in &t.chains {
                    text.push_str(&format!(":{} - [0:0]\n", c.name));
                }
                for j in &t.jumps {
                    text.push_str(&format!("-A {} {}\n", j.from, j.spec));
                }
                for c in &t.chains {
                    for r in &c.rules {
                        text.push_str(&format!("-A {} {r}\n", c.name));
                    }
                }
                text.push_str("COMMIT\n");
            }
            saves.push(save::parse(&text).unwrap());
        }
        let back: Vec<FamilyState> = saves
            .iter()
            .map(|s| FamilyState::from_save(s, "NFTKIT-REDIRECT"))
            .collect();
        assert_eq!(
            snapshot("nftkit-redirect", Some(r.comment.clone()), &fams),
            snapshot("nftkit-redirect", owner_comment(&back), &back)
        );
        let mut prefixes = BTreeSet::new();
        for s in &saves {
            prefixes.extend(owned_prefixes(s));
        }
        assert_eq!(
            prefixes.into_iter().collect::<Vec<_>>(),
            ["NFTKIT-REDIRECT"]
        );
    }
}
