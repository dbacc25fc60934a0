//! One `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicy object converted to the
//! [`cnp`](super::cnp) types, validated as the CRD's schema does (tier and action enums,
//! priority 0-1000, exactly one subject, list sizes, ports, CIDRs). Errors name the
//! object (`ClusterNetworkPolicy NAME`), the field path
//! (`spec.egress[1].to[0].networks[2]`), the value and what is expected. Unknown fields
//! are ignored, except that a peer with none of the known fields becomes
//! [`ClusterPeer::Unknown`] (fail closed, decided by the build), and the experimental
//! `nodes` / `domainNames` peers refuse the whole object: what nftkit cannot enforce
//! must not be half-enforced. Used by the manifest file and live mode alike.

use ipnet::IpNet;
use serde_json::Value;

use super::cnp::{
    ClusterAction, ClusterPeer, ClusterPolicy, ClusterPort, ClusterRule, LIST_MAX, PRIORITY_MAX,
    PodSet, Tier,
};
use super::fields::{Ctx, Protocol, array, get, meta, port_number, string};
use super::policy::selector;
use crate::error::Result;
use crate::parse::{CidrRules, cidr::parse as parse_cidr};

/// The kind and the one apiVersion nftkit reads.
pub const KIND: &str = "ClusterNetworkPolicy";
pub const API_VERSION: &str = "policy.networking.k8s.io/v1alpha2";
/// A rule's `name`: at most this many characters.
const RULE_NAME_MAX: usize = 100;
/// A `networks` entry: at most this many characters (the CRD's MaxLength).
const CIDR_MAX_LEN: usize = 43;

/// One ClusterNetworkPolicy object (as kubectl or the API server writes it).
pub fn cluster_policy(item: &Value) -> Result<ClusterPolicy> {
    let (_, name, _) = meta(item, KIND, false)?;
    let object = format!("{KIND} {name}");
    let ctx = Ctx { object: &object };
    if let Some(v) = get(item, "apiVersion")
        && v.as_str() != Some(API_VERSION)
    {
        return Err(ctx.err(
            "apiVersion",
            v,
            &format!("{API_VERSION} (the only version nftkit reads)"),
        ));
    }
    let spec = get(item, "spec").filter(|s| s.is_object()).ok_or_else(|| {
        ctx.err(
            "spec",
            item.get("spec").unwrap_or(&Value::Null),
            "a ClusterNetworkPolicySpec (tier, priority, subject, ingress, egress)",
        )
    })?;
    let tv = get(spec, "tier").unwrap_or(&Value::Null);
    let tier = match tv.as_str() {
        Some("Admin") => Tier::Admin,
        Some("Baseline") => Tier::Baseline,
        _ => return Err(ctx.err("spec.tier", tv, "Admin or Baseline")),
    };
    let pv = get(spec, "priority").unwrap_or(&Value::Null);
    let priority = match pv.as_u64() {
        Some(p) if p <= u64::from(PRIORITY_MAX) => p as u32,
        _ => {
            return Err(ctx.err("spec.priority", pv, &format!("an integer 0-{PRIORITY_MAX}")));
        }
    };
    let subject = pod_set(
        &ctx,
        get(spec, "subject").unwrap_or(&Value::Null),
        "spec.subject",
        "a subject with exactly one of namespaces or pods",
    )?;
    let ingress = rules(&ctx, get(spec, "ingress"), "spec.ingress", false)?;
    let egress = rules(&ctx, get(spec, "egress"), "spec.egress", true)?;
    Ok(ClusterPolicy {
        name,
        tier,
        priority,
        subject,
        ingress,
        egress,
    })
}

/// A list of 1 to 25 items (`min` 0: the field may also be absent or empty).
fn bounded<'v>(ctx: &Ctx, v: Option<&'v Value>, path: &str, min: usize) -> Result<&'v [Value]> {
    let list = array(ctx, v, path)?;
    if list.len() > LIST_MAX {
        return Err(ctx.err(
            path,
            &Value::from(format!("{} items", list.len())),
            &format!("at most {LIST_MAX} items"),
        ));
    }
    if list.len() < min {
        return Err(ctx.err(
            path,
            v.unwrap_or(&Value::Null),
            &format!("a list of {min} to {LIST_MAX} items"),
        ));
    }
    Ok(list)
}

/// A subject or a peer's pods: exactly one of `namespaces` / `pods` (and, for a peer,
/// nothing else known; the caller checks that).
fn pod_set(ctx: &Ctx, v: &Value, path: &str, expected: &str) -> Result<PodSet> {
    let namespaces = get(v, "namespaces");
    let pods = get(v, "pods");
    match (namespaces, pods) {
        (Some(n), None) => Ok(PodSet::Namespaces(selector(
            ctx,
            n,
            &format!("{path}.namespaces"),
        )?)),
        (None, Some(p)) => {
            let pp = format!("{path}.pods");
            if !p.is_object() {
                return Err(ctx.err(&pp, p, "namespaceSelector and podSelector"));
            }
            let sel = |key: &str| {
                let kp = format!("{pp}.{key}");
                let s = get(p, key).ok_or_else(|| {
                    ctx.err(
                        &kp,
                        &Value::Null,
                        "a label selector ({} selects everything)",
                    )
                })?;
                selector(ctx, s, &kp)
            };
            Ok(PodSet::Pods {
                namespaces: sel("namespaceSelector")?,
                pods: sel("podSelector")?,
            })
        }
        _ => Err(ctx.err(path, v, expected)),
    }
}

fn rules(ctx: &Ctx, v: Option<&Value>, path: &str, egress: bool) -> Result<Vec<ClusterRule>> {
    let peers_key = if egress { "to" } else { "from" };
    let mut out = Vec::new();
    for (i, r) in bounded(ctx, v, path, 0)?.iter().enumerate() {
        let rp = format!("{path}[{i}]");
        if !r.is_object() {
            return Err(ctx.err(
                &rp,
                r,
                &format!("a rule with name, action, {peers_key} and protocols"),
            ));
        }
        let name = match get(r, "name") {
            None => String::new(),
            Some(n) => string(ctx, n, &format!("{rp}.name"))?,
        };
        if name.chars().count() > RULE_NAME_MAX {
            return Err(ctx.err(
                &format!("{rp}.name"),
                &Value::from(name),
                &format!("at most {RULE_NAME_MAX} characters"),
            ));
        }
        let av = get(r, "action").unwrap_or(&Value::Null);
        let action = match av.as_str() {
            Some("Accept") => ClusterAction::Accept,
            Some("Deny") => ClusterAction::Deny,
            Some("Pass") => ClusterAction::Pass,
            _ => return Err(ctx.err(&format!("{rp}.action"), av, "Accept, Deny or Pass")),
        };
        let pp = format!("{rp}.{peers_key}");
        let mut peers = Vec::new();
        for (j, p) in bounded(ctx, get(r, peers_key), &pp, 1)?.iter().enumerate() {
            peers.push(peer(ctx, p, &format!("{pp}[{j}]"), egress)?);
        }
        let portp = format!("{rp}.protocols");
        let mut protocols = Vec::new();
        let list = get(r, "protocols");
        for (j, p) in bounded(ctx, list, &portp, usize::from(list.is_some()))?
            .iter()
            .enumerate()
        {
            protocols.push(port(ctx, p, &format!("{portp}[{j}]"))?);
        }
        // The CRD's rule: addresses have no named ports.
        if let Some(j) = peers
            .iter()
            .position(|p| matches!(p, ClusterPeer::Networks(_)))
            && let Some(k) = protocols
                .iter()
                .position(|p| matches!(p, ClusterPort::Named(_)))
        {
            return Err(ctx.err(
                &format!("{portp}[{k}].destinationNamedPort"),
                &Value::from(format!("with {pp}[{j}].networks")),
                "no named port in a rule with a networks peer (networks have no named ports)",
            ));
        }
        out.push(ClusterRule {
            name,
            action,
            peers,
            protocols,
        });
    }
    Ok(out)
}

/// The peer fields nftkit reads (`networks`: egress only).
const PEER_FIELDS: [&str; 3] = ["namespaces", "pods", "networks"];
/// Experimental peer fields nftkit does not implement.
const UNSUPPORTED_PEERS: [(&str, &str); 2] = [
    ("nodes", "nodes peers (experimental) select node addresses"),
    (
        "domainNames",
        "domainNames peers (experimental) need DNS-aware rules",
    ),
];

fn peer(ctx: &Ctx, v: &Value, path: &str, egress: bool) -> Result<ClusterPeer> {
    let Value::Object(m) = v else {
        return Err(ctx.err(path, v, "a peer (namespaces, pods or networks)"));
    };
    for (key, why) in UNSUPPORTED_PEERS {
        if let Some(x) = get(v, key) {
            return Err(ctx.err(
                &format!("{path}.{key}"),
                x,
                &format!(
                    "not supported by nftkit: {why}; the whole policy is refused rather than enforced in part"
                ),
            ));
        }
    }
    let known: Vec<&str> = PEER_FIELDS
        .into_iter()
        .filter(|k| m.get(*k).is_some_and(|x| !x.is_null()))
        .collect();
    match known.as_slice() {
        [] => Ok(ClusterPeer::Unknown),
        ["networks"] if !egress => Err(ctx.err(
            &format!("{path}.networks"),
            &m["networks"],
            "namespaces or pods (networks peers are for egress only)",
        )),
        ["networks"] => {
            let np = format!("{path}.networks");
            let mut nets = Vec::new();
            for (k, c) in bounded(ctx, get(v, "networks"), &np, 1)?.iter().enumerate() {
                nets.push(network(ctx, c, &format!("{np}[{k}]"))?);
            }
            Ok(ClusterPeer::Networks(nets))
        }
        [_] => Ok(ClusterPeer::Pods(pod_set(ctx, v, path, "")?)),
        _ => Err(ctx.err(
            path,
            &Value::from(known.join(", ")),
            "exactly one of namespaces, pods or networks per peer",
        )),
    }
}

/// A `networks` entry as the API server's `isCIDR` accepts it (host bits allowed, and
/// truncated: [`CidrRules::API_SERVER`], as NetworkPolicy ipBlocks).
fn network(ctx: &Ctx, v: &Value, path: &str) -> Result<IpNet> {
    let s = string(ctx, v, path)?;
    if s.len() > CIDR_MAX_LEN {
        return Err(ctx.err(
            path,
            v,
            &format!("a CIDR of at most {CIDR_MAX_LEN} characters"),
        ));
    }
    parse_cidr(&s, CidrRules::API_SERVER)
        .map_err(|_| ctx.err(path, v, "a CIDR such as 10.0.0.0/8 or 2001:db8::/32"))
}

const PROTOCOLS: [(&str, Protocol); 3] = [
    ("tcp", Protocol::Tcp),
    ("udp", Protocol::Udp),
    ("sctp", Protocol::Sctp),
];

fn port(ctx: &Ctx, v: &Value, path: &str) -> Result<ClusterPort> {
    const EXPECTED: &str = "exactly one of tcp, udp, sctp or destinationNamedPort";
    if !v.is_object() {
        return Err(ctx.err(path, v, EXPECTED));
    }
    let named = get(v, "destinationNamedPort");
    let given: Vec<(&str, Protocol, &Value)> = PROTOCOLS
        .into_iter()
        .filter_map(|(k, p)| get(v, k).map(|x| (k, p, x)))
        .collect();
    match (given.as_slice(), named) {
        ([], Some(n)) => {
            let np = format!("{path}.destinationNamedPort");
            let s = string(ctx, n, &np)?;
            if s.is_empty() {
                return Err(ctx.err(&np, n, "a container port name"));
            }
            Ok(ClusterPort::Named(s))
        }
        ([(key, protocol, x)], None) => {
            let kp = format!("{path}.{key}");
            let dp = format!("{kp}.destinationPort");
            let d = get(x, "destinationPort")
                .ok_or_else(|| ctx.err(&dp, &Value::Null, "a port: {number} or {range}"))?;
            let (first, last) = port_range(ctx, d, &dp)?;
            Ok(ClusterPort::Port {
                protocol: *protocol,
                first,
                last,
            })
        }
        _ => {
            let mut keys: Vec<&str> = given.iter().map(|g| g.0).collect();
            if named.is_some() {
                keys.push("destinationNamedPort");
            }
            let shown = if keys.is_empty() {
                v.clone()
            } else {
                Value::from(keys.join(", "))
            };
            Err(ctx.err(path, &shown, EXPECTED))
        }
    }
}

/// `{number: N}` or `{range: {start, end}}` (start < end), exactly one.
fn port_range(ctx: &Ctx, v: &Value, path: &str) -> Result<(u16, u16)> {
    const EXPECTED: &str = "exactly one of number (1-65535) or range {start, end}";
    if !v.is_object() {
        return Err(ctx.err(path, v, EXPECTED));
    }
    match (get(v, "number"), get(v, "range")) {
        (Some(n), None) => {
            let n = port_number(ctx, n, &format!("{path}.number"))?;
            Ok((n, n))
        }
        (None, Some(r)) => {
            let rp = format!("{path}.range");
            let bound = |key: &str| {
                let kp = format!("{rp}.{key}");
                let b = get(r, key).ok_or_else(|| ctx.err(&kp, &Value::Null, "a port 1-65535"))?;
                port_number(ctx, b, &kp)
            };
            let (start, end) = (bound("start")?, bound("end")?);
            if start >= end {
                return Err(ctx.err(
                    &format!("{rp}.end"),
                    &Value::from(end),
                    &format!("a port above start ({start})"),
                ));
            }
            Ok((start, end))
        }
        _ => Err(ctx.err(path, v, EXPECTED)),
    }
}

#[cfg(test)]
#[path = "cnp_parse_tests.rs"]
mod tests;
