//! One `networking.k8s.io/v1` NetworkPolicy object converted to the model the build
//! takes: pod and namespace selectors, ipBlocks, ports and endPorts, policyTypes
//! defaulted as the API server does. Errors name the policy and the field path
//! (`spec.ingress[0].ports[1].endPort`). Used by both the `--from-file` manifest and live
//! mode (through `manifest::policy`).

use ipnet::IpNet;
use serde_json::Value;

use super::fields::{Ctx, Protocol, array, get, meta, port_number, protocol, string, string_map};
use super::selector::{Operator, Requirement, Selector};
use crate::error::Result;
use crate::parse::{CidrRules, cidr::parse as parse_cidr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    /// `spec.podSelector` (empty = every pod of the namespace).
    pub pod_selector: Selector,
    /// Effective `policyTypes` (defaulted as the API server does).
    pub affects_ingress: bool,
    pub affects_egress: bool,
    pub ingress: Vec<PolicyRule>,
    pub egress: Vec<PolicyRule>,
    /// Annotation `nftkit.io/audit: "true"`: what only this policy would drop is let
    /// through, counted and logged as `would-drop`.
    pub audit: bool,
}

/// The annotation that puts one policy in audit mode.
pub const AUDIT_ANNOTATION: &str = "nftkit.io/audit";

/// One `ingress[]` / `egress[]` item: traffic to/from any of `peers` on any of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    /// `from` / `to`; empty = every address.
    pub peers: Vec<Peer>,
    /// Empty = every port and protocol.
    pub ports: Vec<PortSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// `podSelector` and/or `namespaceSelector`. No namespace selector = the policy's
    /// namespace; no pod selector = every pod of the selected namespaces.
    Pods {
        pods: Option<Selector>,
        namespaces: Option<Selector>,
    },
    /// `ipBlock`: `cidr` minus `except`.
    Block { cidr: IpNet, except: Vec<IpNet> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    /// None = every port of `protocol`.
    pub port: Option<PortRef>,
    /// `endPort`: the range `port..=end_port` (numeric `port` only).
    pub end_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    /// A container port name, resolved on each destination pod.
    Name(String),
}

/// A `metav1.LabelSelector` (also ClusterNetworkPolicy subjects and peers, `cnp_parse`).
pub(super) fn selector(ctx: &Ctx, v: &Value, path: &str) -> Result<Selector> {
    if !v.is_object() {
        return Err(ctx.err(path, v, "a label selector (matchLabels / matchExpressions)"));
    }
    let match_labels = string_map(ctx, get(v, "matchLabels"), &format!("{path}.matchLabels"))?;
    let mut expressions = Vec::new();
    for (i, e) in array(
        ctx,
        get(v, "matchExpressions"),
        &format!("{path}.matchExpressions"),
    )?
    .iter()
    .enumerate()
    {
        let p = format!("{path}.matchExpressions[{i}]");
        let key = get(e, "key")
            .map(|k| string(ctx, k, &format!("{p}.key")))
            .transpose()?
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ctx.err(&format!("{p}.key"), &Value::Null, "a label key"))?;
        let opv = get(e, "operator").unwrap_or(&Value::Null);
        let op = opv.as_str().and_then(Operator::parse).ok_or_else(|| {
            ctx.err(
                &format!("{p}.operator"),
                opv,
                "In, NotIn, Exists or DoesNotExist",
            )
        })?;
        let values: Vec<String> = array(ctx, get(e, "values"), &format!("{p}.values"))?
            .iter()
            .enumerate()
            .map(|(j, x)| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(ctx.err(&format!("{p}.values[{j}]"), other, "a string")),
            })
            .collect::<Result<_>>()?;
        match op {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(ctx.err(
                    &format!("{p}.values"),
                    &Value::Array(vec![]),
                    "at least one value for operator In or NotIn",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                return Err(ctx.err(
                    &format!("{p}.values"),
                    get(e, "values").unwrap_or(&Value::Null),
                    "no values for operator Exists or DoesNotExist",
                ));
            }
            _ => {}
        }
        expressions.push(Requirement { key, op, values });
    }
    Ok(Selector {
        match_labels,
        expressions,
    })
}

/// An ipBlock CIDR as the API server stores it ([`CidrRules::API_SERVER`]): before 1.33's
/// strict validation it keeps `10.0.0.1/8` as given and means the whole prefix; so do we.
fn block_cidr(ctx: &Ctx, v: &Value, path: &str) -> Result<IpNet> {
    let s = string(ctx, v, path)?;
    parse_cidr(&s, CidrRules::API_SERVER)
        .map_err(|_| ctx.err(path, v, "a CIDR such as 10.0.0.0/8 or 2001:db8::/32"))
}

/// One NetworkPolicy object (as kubectl or the API server writes it).
pub fn policy(item: &Value) -> Result<Policy> {
    let (namespace, name, _) = meta(item, "NetworkPolicy", true)?;
    let object = format!("NetworkPolicy {namespace}/{name}");
    let ctx = Ctx { object: &object };
    if let Some(v) = get(item, "apiVersion")
        && v.as_str() != Some("networking.k8s.io/v1")
    {
        return Err(ctx.err("apiVersion", v, "networking.k8s.io/v1"));
    }
    let spec =
        get(item, "spec").ok_or_else(|| ctx.err("spec", &Value::Null, "a NetworkPolicySpec"))?;
    let pod_selector = match get(spec, "podSelector") {
        None => Selector::everything(),
        Some(v) => selector(&ctx, v, "spec.podSelector")?,
    };
    let ingress = rules(&ctx, get(spec, "ingress"), "spec.ingress", "from")?;
    let egress = rules(&ctx, get(spec, "egress"), "spec.egress", "to")?;
    let (affects_ingress, affects_egress) = match get(spec, "policyTypes") {
        // API defaulting: Ingress always, Egress when there are egress rules.
        None => (true, !egress.is_empty()),
        Some(v) => {
            let list = array(&ctx, Some(v), "spec.policyTypes")?;
            let (mut i, mut e) = (false, false);
            for (n, t) in list.iter().enumerate() {
                match t.as_str() {
                    Some("Ingress") => i = true,
                    Some("Egress") => e = true,
                    _ => {
                        return Err(ctx.err(
                            &format!("spec.policyTypes[{n}]"),
                            t,
                            "Ingress or Egress",
                        ));
                    }
                }
            }
            if list.is_empty() {
                (true, !egress.is_empty())
            } else {
                (i, e)
            }
        }
    };
    let audit = get(item, "metadata")
        .and_then(|m| get(m, "annotations"))
        .and_then(|a| get(a, AUDIT_ANNOTATION))
        .and_then(Value::as_str)
        == Some("true");
    Ok(Policy {
        namespace,
        name,
        pod_selector,
        affects_ingress,
        affects_egress,
        ingress,
        egress,
        audit,
    })
}

fn rules(ctx: &Ctx, v: Option<&Value>, path: &str, peers_key: &str) -> Result<Vec<PolicyRule>> {
    let mut out = Vec::new();
    for (i, r) in array(ctx, v, path)?.iter().enumerate() {
        let rp = format!("{path}[{i}]");
        if !r.is_object() {
            return Err(ctx.err(&rp, r, "a rule with from/to and ports"));
        }
        let mut peers = Vec::new();
        let pp = format!("{rp}.{peers_key}");
        for (j, p) in array(ctx, get(r, peers_key), &pp)?.iter().enumerate() {
            peers.push(peer(ctx, p, &format!("{pp}[{j}]"))?);
        }
        let mut ports = Vec::new();
        let portp = format!("{rp}.ports");
        for (j, p) in array(ctx, get(r, "ports"), &portp)?.iter().enumerate() {
            ports.push(port_spec(ctx, p, &format!("{portp}[{j}]"))?);
        }
        out.push(PolicyRule { peers, ports });
    }
    Ok(out)
}

fn peer(ctx: &Ctx, v: &Value, path: &str) -> Result<Peer> {
    let pods = get(v, "podSelector")
        .map(|s| selector(ctx, s, &format!("{path}.podSelector")))
        .transpose()?;
    let namespaces = get(v, "namespaceSelector")
        .map(|s| selector(ctx, s, &format!("{path}.namespaceSelector")))
        .transpose()?;
    match get(v, "ipBlock") {
        Some(_) if pods.is_some() || namespaces.is_some() => Err(ctx.err(
            path,
            v,
            "either ipBlock or podSelector/namespaceSelector, not both",
        )),
        Some(b) => {
            let bp = format!("{path}.ipBlock");
            let c = get(b, "cidr")
                .ok_or_else(|| ctx.err(&format!("{bp}.cidr"), &Value::Null, "a CIDR"))?;
            let cidr = block_cidr(ctx, c, &format!("{bp}.cidr"))?;
            let mut except = Vec::new();
            for (k, e) in array(ctx, get(b, "except"), &format!("{bp}.except"))?
                .iter()
                .enumerate()
            {
                let ep = format!("{bp}.except[{k}]");
                let net = block_cidr(ctx, e, &ep)?;
                let inside = match (&cidr, &net) {
                    (IpNet::V4(c), IpNet::V4(n)) => {
                        c.contains(n) && c.prefix_len() < n.prefix_len()
                    }
                    (IpNet::V6(c), IpNet::V6(n)) => {
                        c.contains(n) && c.prefix_len() < n.prefix_len()
                    }
                    _ => false,
                };
                if !inside {
                    return Err(ctx.err(
                        &ep,
                        e,
                        &format!("a CIDR strictly inside the ipBlock cidr {cidr}"),
                    ));
                }
                except.push(net);
            }
            Ok(Peer::Block { cidr, except })
        }
        None if pods.is_none() && namespaces.is_none() => Err(ctx.err(
            path,
            v,
            "a peer with podSelector, namespaceSelector or ipBlock",
        )),
        None => Ok(Peer::Pods { pods, namespaces }),
    }
}

fn port_spec(ctx: &Ctx, v: &Value, path: &str) -> Result<PortSpec> {
    if !v.is_object() {
        return Err(ctx.err(path, v, "a port with protocol, port and endPort"));
    }
    let protocol = protocol(ctx, get(v, "protocol"), &format!("{path}.protocol"))?;
    let port = match get(v, "port") {
        None => None,
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Some(PortRef::Number(port_number(
            ctx,
            &Value::from(s.parse::<u64>().unwrap_or(0)),
            &format!("{path}.port"),
        )?)),
        Some(p @ Value::String(s)) => {
            // IANA_SVC_NAME: 1-15 lowercase letters, digits and '-', at least one letter.
            let ok = !s.is_empty()
                && s.len() <= 15
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && s.chars().any(|c| c.is_ascii_lowercase())
                && !s.starts_with('-')
                && !s.ends_with('-')
                && !s.contains("--");
            if !ok {
                return Err(ctx.err(
                    &format!("{path}.port"),
                    p,
                    "a port number 1-65535 or a port name (IANA_SVC_NAME)",
                ));
            }
            Some(PortRef::Name(s.clone()))
        }
        Some(p) => Some(PortRef::Number(port_number(
            ctx,
            p,
            &format!("{path}.port"),
        )?)),
    };
    let end_port = match get(v, "endPort") {
        None => None,
        Some(e) => {
            let end = port_number(ctx, e, &format!("{path}.endPort"))?;
            match &port {
                Some(PortRef::Number(start)) if end >= *start => Some(end),
                Some(PortRef::Number(start)) => {
                    return Err(ctx.err(
                        &format!("{path}.endPort"),
                        e,
                        &format!("a port >= port ({start})"),
                    ));
                }
                _ => {
                    return Err(ctx.err(
                        &format!("{path}.endPort"),
                        e,
                        "endPort only together with a numeric port",
                    ));
                }
            }
        }
    };
    Ok(PortSpec {
        protocol,
        port,
        end_port,
    })
}

#[cfg(test)]
mod tests {
    use crate::netpol::manifest::parse;

    #[test]
    fn policy_types_default() {
        let doc = |spec: &str| {
            format!(
                "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: p, namespace: n}}\nspec: {spec}\n"
            )
        };
        let types = |spec: &str| {
            let p = &parse("t", &doc(spec)).unwrap().policies[0];
            (p.affects_ingress, p.affects_egress)
        };
        assert_eq!(types("{podSelector: {}}"), (true, false));
        assert_eq!(types("{podSelector: {}, egress: [{}]}"), (true, true));
        assert_eq!(
            types("{podSelector: {}, policyTypes: [Egress]}"),
            (false, true)
        );
        assert_eq!(
            types("{podSelector: {}, policyTypes: [Ingress, Egress]}"),
            (true, true)
        );
    }

    #[test]
    fn invalid_manifests_name_object_and_field() {
        let pol = |spec: &str| {
            format!(
                "kind: NetworkPolicy\napiVersion: networking.k8s.io/v1\nmetadata: {{name: p, namespace: n}}\nspec: {spec}\n"
            )
        };
        let cases = [
            (
                pol("{podSelector: {}, ingress: [{ports: [{port: 70000}]}]}"),
                "spec.ingress[0].ports[0].port",
                "70000",
            ),
            (
                pol("{podSelector: {}, ingress: [{ports: [{protocol: ICMP}]}]}"),
                "spec.ingress[0].ports[0].protocol",
                "ICMP",
            ),
            (
                pol("{podSelector: {}, ingress: [{ports: [{port: 90, endPort: 80}]}]}"),
                "spec.ingress[0].ports[0].endPort",
                "80",
            ),
            (
                pol("{podSelector: {}, ingress: [{ports: [{port: http, endPort: 80}]}]}"),
                "endPort",
                "80",
            ),
            (
                pol("{podSelector: {}, ingress: [{ports: [{port: Bad_Name}]}]}"),
                "port",
                "Bad_Name",
            ),
            (
                pol("{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/33}}]}]}"),
                "spec.egress[0].to[0].ipBlock.cidr",
                "10.0.0.0/33",
            ),
            (
                pol(
                    "{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]}",
                ),
                "except[0]",
                "11.0.0.0/16",
            ),
            (
                pol(
                    "{podSelector: {}, egress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]}]}",
                ),
                "spec.egress[0].to[0]",
                "not both",
            ),
            (
                pol("{podSelector: {}, egress: [{to: [{}]}]}"),
                "spec.egress[0].to[0]",
                "a peer",
            ),
            (
                pol("{podSelector: {matchExpressions: [{key: a, operator: Has}]}}"),
                "spec.podSelector.matchExpressions[0].operator",
                "Has",
            ),
            (
                pol("{podSelector: {matchExpressions: [{key: a, operator: In}]}}"),
                "matchExpressions[0].values",
                "at least one",
            ),
            (
                pol("{podSelector: {}, policyTypes: [Both]}"),
                "spec.policyTypes[0]",
                "Both",
            ),
            (
                "kind: Pod\nmetadata: {name: x, namespace: n}\nstatus: {podIP: 10.0.0.300}\n"
                    .to_string(),
                "Pod n/x field status.podIP",
                "10.0.0.300",
            ),
            (
                "kind: Pod\nmetadata: {namespace: n}\n".to_string(),
                "Pod field metadata.name",
                "name",
            ),
            (
                "items: [1, 2\n".to_string(),
                "manifest file t",
                "YAML or JSON",
            ),
        ];
        for (text, field, value) in cases {
            let e = parse("t", &text).expect_err(&text);
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{msg}");
            assert!(
                msg.contains(field) && msg.contains(value),
                "{text}\n=> {msg}"
            );
            if text.contains("NetworkPolicy") {
                assert!(msg.contains("NetworkPolicy n/p"), "{msg}");
            }
        }
    }
}
