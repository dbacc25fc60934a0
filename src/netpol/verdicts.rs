//! Verdict logs: what a `log group` packet of the netpol table means. The log rules'
//! prefixes (see `build`) name the decision — `nftkit accept ingress/shop/db-allow#0`
//! (NetworkPolicy shop/db-allow, its ingress rule 0), `nftkit drop ingress/shop`
//! (isolation without an allowing policy: the default deny), `nftkit would-drop
//! egress/shop` (audit mode), `nftkit drop ingress/Admin/deny-db#0` (rule 0 of the Admin
//! tier's ClusterNetworkPolicy deny-db; also `accept` and `pass`) — and the packet gives
//! the flow; the pods come from the
//! cluster the table was built from.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::build::LOG_PREFIX;
use super::cnp::Tier;

/// The decision a log rule reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// `accept`, `drop` or `would-drop`.
    pub verdict: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub namespace: String,
    /// The NetworkPolicy and its rule index; None for the default deny.
    pub policy: Option<(String, usize)>,
}

/// The decision in a log prefix, or None if the prefix is not one of ours.
pub fn decision(prefix: &str) -> Option<Decision> {
    let rest = prefix.strip_prefix(LOG_PREFIX)?.strip_prefix(' ')?;
    let (verdict, what) = rest.split_once(' ')?;
    let mut parts = what.splitn(3, '/');
    let direction = parts.next()?.to_string();
    let namespace = parts.next()?.to_string();
    let policy = match parts.next() {
        None => None,
        Some(p) => {
            let (name, rule) = p.rsplit_once('#')?;
            Some((name.to_string(), rule.parse().ok()?))
        }
    };
    Some(Decision {
        verdict: verdict.to_string(),
        direction,
        namespace,
        policy,
    })
}

/// A packet's addresses, protocol and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub protocol: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
}

/// The flow of a packet from its network header (IPv4, or IPv6 without extension
/// headers before the transport header); None for anything shorter or else.
pub fn flow(packet: &[u8]) -> Option<Flow> {
    let (proto, src, dst, l4): (u8, IpAddr, IpAddr, &[u8]) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let src: [u8; 4] = packet.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = packet.get(16..20)?.try_into().ok()?;
            // A later fragment has no transport header.
            let fragment_offset = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]) & 0x1fff;
            let l4 = if fragment_offset == 0 {
                packet.get(ihl..).unwrap_or_default()
            } else {
                &[]
            };
            (
                *packet.get(9)?,
                Ipv4Addr::from(src).into(),
                Ipv4Addr::from(dst).into(),
                l4,
            )
        }
        6 => {
            let src: [u8; 16] = packet.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
            (
                *packet.get(6)?,
                Ipv6Addr::from(src).into(),
                Ipv6Addr::from(dst).into(),
                packet.get(40..).unwrap_or_default(),
            )
        }
        _ => return None,
    };
    let protocol = match proto {
        1 => "icmp".to_string(),
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        58 => "icmpv6".to_string(),
        132 => "sctp".to_string(),
        n => n.to_string(),
    };
    let ports = matches!(proto, 6 | 17 | 132) && l4.len() >= 4;
    let port = |at: usize| ports.then(|| u16::from_be_bytes([l4[at], l4[at + 1]]));
    Some(Flow {
        protocol,
        src,
        dst,
        sport: port(0),
        dport: port(2),
    })
}

/// Log one logged packet as a verdict event (target `nftkit::verdict`), naming the local
/// pod (the destination of ingress, the source of egress), the peer pod where `pods`
/// knows it, and the deciding policy and rule or `default-deny`.
pub fn log(prefix: &str, packet: &[u8], pods: &HashMap<IpAddr, String>) {
    let (Some(d), Some(f)) = (decision(prefix), flow(packet)) else {
        tracing::debug!(prefix, "nflog packet not understood");
        return;
    };
    let (local, peer) = if d.direction == "egress" {
        (f.src, f.dst)
    } else {
        (f.dst, f.src)
    };
    let pod = pods.get(&local).map(String::as_str).unwrap_or("");
    let peer_pod = pods.get(&peer).map(String::as_str).unwrap_or("");
    let port = |p: Option<u16>| p.map(|p| p.to_string()).unwrap_or_default();
    // A ClusterNetworkPolicy's rule: `<direction>/<Tier>/<policy>#<rule>`.
    let cluster = Tier::from_object_prefix(&d.namespace).is_some();
    let (kind, policy, rule) = match &d.policy {
        Some((name, rule)) if cluster => ("ClusterNetworkPolicy", name.clone(), rule.to_string()),
        Some((name, rule)) => (
            "NetworkPolicy",
            format!("{}/{name}", d.namespace),
            rule.to_string(),
        ),
        None => ("default-deny", String::new(), String::new()),
    };
    let (tier, namespace) = if cluster {
        (d.namespace.as_str(), "")
    } else {
        ("NetworkPolicy", d.namespace.as_str())
    };
    tracing::info!(
        target: "nftkit::verdict",
        verdict = %d.verdict,
        direction = %d.direction,
        protocol = %f.protocol,
        src = %f.src,
        sport = %port(f.sport),
        dst = %f.dst,
        dport = %port(f.dport),
        pod = %pod,
        peer_pod = %peer_pod,
        kind = %kind,
        tier = %tier,
        policy = %policy,
        rule = %rule,
        namespace = %namespace,
        "verdict"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_policy_prefixes_name_tier_policy_and_rule() {
        assert_eq!(
            decision("nftkit drop ingress/Admin/deny-db#2"),
            Some(Decision {
                verdict: "drop".into(),
                direction: "ingress".into(),
                namespace: "Admin".into(),
                policy: Some(("deny-db".into(), 2)),
            })
        );
    }

    #[test]
    fn prefixes_name_the_policy_and_rule_or_the_default_deny() {
        assert_eq!(
            decision("nftkit accept ingress/shop/db-allow#2"),
            Some(Decision {
                verdict: "accept".into(),
                direction: "ingress".into(),
                namespace: "shop".into(),
                policy: Some(("db-allow".into(), 2)),
            })
        );
        let d = decision("nftkit would-drop egress/shop").unwrap();
        assert_eq!((d.verdict.as_str(), d.policy), ("would-drop", None));
        assert_eq!(decision("someone else's prefix"), None);
        assert_eq!(decision("nftkit accept ingress/shop/p#x"), None);
    }

    #[test]
    fn flows_of_ipv4_and_ipv6_packets() {
        // IPv4, IHL 5, UDP 10.0.0.1:40000 -> 10.0.0.2:5353.
        let mut v4 = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        v4.extend_from_slice(&[0x9c, 0x40, 0x14, 0xe9, 0, 8, 0, 0]);
        assert_eq!(
            flow(&v4),
            Some(Flow {
                protocol: "udp".into(),
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                sport: Some(40000),
                dport: Some(5353),
            })
        );
        // IPv6 TCP 2001:db8::1:1234 -> 2001:db8::2:80.
        let mut v6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
        v6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x04, 0xd2, 0, 80]);
        let f = flow(&v6).unwrap();
        assert_eq!(
            (f.protocol.as_str(), f.sport, f.dport),
            ("tcp", Some(1234), Some(80))
        );
        // ICMP: no ports; garbage: nothing.
        v4[9] = 1;
        assert_eq!(flow(&v4).unwrap().dport, None);
        assert_eq!(flow(&[0x45, 0]), None);
        assert_eq!(flow(&[]), None);
    }
}
