//! The cluster objects netpol reads — pods, namespaces, `networking.k8s.io/v1`
//! NetworkPolicies — from a `kubectl get pods,namespaces,networkpolicies -A -o yaml` List
//! (YAML or JSON; several `---` documents, typed lists such as `PodList`, and single Pod,
//! Namespace or NetworkPolicy objects are accepted too).
//!
//! The file must say what it is: an empty file, a top level that is neither a List nor
//! one of those kinds, a List without an `items` list, or an item of another kind
//! (Service, ConfigMap, ...) is refused, naming the file and the value — a truncated or
//! wrong file must not become "no policies", which would open every pod. An explicit
//! `items: []` is a valid, empty cluster.
//!
//! Only the fields the semantics need are read, each validated as the API server would;
//! an error names the object (`NetworkPolicy default/allow-db`), the field path
//! (`spec.ingress[0].ports[1].endPort`), the value and what is expected. Unknown fields
//! are ignored.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use super::selector::{Labels, Operator, Requirement, Selector};
use crate::error::{Error, Result};

/// Label the API server puts on every namespace (1.21+); added here when a namespace
/// object is missing or predates it, so `namespaceSelector` on it works everywhere.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cluster {
    pub pods: Vec<Pod>,
    /// Namespace name -> labels.
    pub namespaces: BTreeMap<String, Labels>,
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    /// `spec.nodeName`; None while unscheduled.
    pub node: Option<String>,
    /// `spec.hostNetwork`: such a pod has the node's addresses and is never policed.
    pub host_network: bool,
    /// `status.podIPs` (or `status.podIP`); empty until the pod has a sandbox.
    pub ips: Vec<IpAddr>,
    /// `containerPort`s of all containers (init containers too), for named ports.
    pub ports: Vec<ContainerPort>,
    /// `status.phase` Succeeded or Failed: its IP may already belong to another pod.
    pub terminated: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TCP" => Protocol::Tcp,
            "UDP" => Protocol::Udp,
            "SCTP" => Protocol::Sctp,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

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
}

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

impl Cluster {
    /// Labels of namespace `ns`, with the name label the API server guarantees.
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        let mut l = self.namespaces.get(ns).cloned().unwrap_or_default();
        l.entry(NAMESPACE_NAME_LABEL.to_string())
            .or_insert_with(|| ns.to_string());
        l
    }
}

/// Parse a manifest file's text. `source` names the file in errors.
pub fn parse(source: &str, text: &str) -> Result<Cluster> {
    let docs = documents(source, text)?;
    if docs.is_empty() {
        return Err(Error::invalid(
            format!("manifest file {source}"),
            "",
            "a kubectl List of pods, namespaces and networkpolicies; the file is empty \
             (a cluster without objects is `kind: List` with `items: []`)",
        ));
    }
    let mut cluster = Cluster::default();
    let mut items = Vec::new();
    for (n, doc) in docs.into_iter().enumerate() {
        let at = if n == 0 {
            String::new()
        } else {
            format!(" document {}", n + 1)
        };
        top_level(source, &at, doc, &mut items)?;
    }
    // Errors about one object name the file too (CONTRACT.md: the message names the file).
    let in_file = |e: Error| match e {
        Error::Invalid {
            what,
            value,
            expected,
        } => Error::Invalid {
            what: format!("{source}: {what}"),
            value,
            expected,
        },
        Error::Usage(m) => Error::Usage(format!("{source}: {m}")),
        other => other,
    };
    for item in &items {
        let kind = item.get("kind").and_then(Value::as_str).unwrap_or("");
        match kind {
            "Pod" => cluster.pods.push(pod(item).map_err(in_file)?),
            "Namespace" => {
                let (_, name, labels) = meta(item, "Namespace", false).map_err(in_file)?;
                cluster.namespaces.insert(name, labels);
            }
            "NetworkPolicy" => cluster.policies.push(policy(item).map_err(in_file)?),
            // `top_level` let only the known kinds through.
            _ => {}
        }
    }
    // Stable order, whatever the file's: namespace, then name.
    cluster
        .pods
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    cluster
        .policies
        .sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    for w in cluster.policies.windows(2) {
        if (&w[0].namespace, &w[0].name) == (&w[1].namespace, &w[1].name) {
            return Err(Error::invalid(
                format!("{source}: NetworkPolicy {}/{}", w[0].namespace, w[0].name),
                "duplicate",
                "each NetworkPolicy once",
            ));
        }
    }
    Ok(cluster)
}

fn documents(source: &str, text: &str) -> Result<Vec<Value>> {
    let bad = |e: &dyn std::fmt::Display| {
        Error::invalid(
            format!("manifest file {source}"),
            e.to_string(),
            "a kubectl List of pods, namespaces and networkpolicies in YAML or JSON",
        )
    };
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map(|v| vec![v])
            .map_err(|e| bad(&e));
    }
    // libyaml takes time quadratic in the nesting depth before serde_norway's recursion
    // limit refuses it: refuse deep nesting in one linear pass first. (No node cap here:
    // a big cluster's List is legitimately large.)
    let (depth, _) = crate::parse::flow_depth(text.as_bytes());
    if depth > crate::parse::MAX_FLOW_DEPTH {
        return Err(Error::invalid(
            format!("manifest file {source}"),
            format!("lists/maps nested {depth} levels deep"),
            format!("at most {} levels", crate::parse::MAX_FLOW_DEPTH),
        ));
    }
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| bad(&e))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The kinds nftkit reads (`kubectl get pods,namespaces,networkpolicies`).
pub const KINDS: [&str; 3] = ["Pod", "Namespace", "NetworkPolicy"];

const WHAT_TOP: &str = "a kubectl List (`apiVersion: v1`, `kind: List`, `items: [...]`) of \
    pods, namespaces and networkpolicies, or one Pod, Namespace or NetworkPolicy";

fn kind_of(v: &Value) -> Option<&str> {
    v.get("kind").and_then(Value::as_str)
}

/// One document of the file: a List (its items checked and collected) or one object of a
/// known kind. Anything else is refused; `at` names the document when there are several.
fn top_level(source: &str, at: &str, doc: Value, out: &mut Vec<Value>) -> Result<()> {
    let what = format!("manifest file {source}{at} kind");
    let shown = match &doc {
        Value::Object(_) => kind_of(&doc).unwrap_or("").to_string(),
        Value::Array(_) => "a bare list".to_string(),
        other => other.to_string(),
    };
    match kind_of(&doc) {
        Some(k) if KINDS.contains(&k) => {
            out.push(doc);
            Ok(())
        }
        Some(k) if list_item_kind(k).is_some() => list_items(source, at, "", doc, out),
        _ => Err(Error::invalid(what, shown, WHAT_TOP)),
    }
}

/// For a list kind (`List`, `PodList`, ...): the kind its items have when they do not say
/// (the API server leaves `kind` out of typed lists' items); `Some(None)` for `List`.
fn list_item_kind(kind: &str) -> Option<Option<&'static str>> {
    if kind == "List" {
        return Some(None);
    }
    let item = kind.strip_suffix("List")?;
    KINDS.iter().find(|k| **k == item).map(|k| Some(*k))
}

/// A List's items, checked: each one a known kind (or a nested List).
fn list_items(source: &str, at: &str, path: &str, doc: Value, out: &mut Vec<Value>) -> Result<()> {
    let kind = kind_of(&doc).unwrap_or("List").to_string();
    let implied = list_item_kind(&kind).flatten();
    if kind == "List"
        && let Some(v) = doc.get("apiVersion")
        && v.as_str() != Some("v1")
    {
        return Err(Error::invalid(
            format!("manifest file {source}{at} {path}apiVersion of the List"),
            v.as_str().map_or_else(|| v.to_string(), str::to_string),
            "v1",
        ));
    }
    let Value::Object(mut m) = doc else {
        return Ok(());
    };
    let items = match m.remove("items") {
        Some(Value::Array(items)) => items,
        other => {
            return Err(Error::invalid(
                format!("manifest file {source}{at} {path}items of the {kind}"),
                match other {
                    None => "(missing)".to_string(),
                    Some(v) => v.to_string(),
                },
                "a list of objects (write `items: []` for a cluster without objects)",
            ));
        }
    };
    for (i, mut item) in items.into_iter().enumerate() {
        let here = format!("{path}items[{i}]");
        if let (Some(k), Value::Object(o)) = (implied, &mut item)
            && !o.contains_key("kind")
        {
            o.insert("kind".into(), Value::from(k));
        }
        match kind_of(&item) {
            Some(k) if KINDS.contains(&k) => out.push(item),
            Some(k) if list_item_kind(k).is_some() => {
                list_items(source, at, &format!("{here}."), item, out)?
            }
            k => {
                let name = item
                    .get("metadata")
                    .map(|m| {
                        let ns = m.get("namespace").and_then(Value::as_str);
                        let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
                        ns.map_or_else(|| name.to_string(), |ns| format!("{ns}/{name}"))
                    })
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                return Err(Error::invalid(
                    format!("manifest file {source}{at} {here}{name} kind"),
                    k.unwrap_or("(none)"),
                    "Pod, Namespace or NetworkPolicy; nftkit does not know other kinds, so it \
                     refuses the file rather than guess (list only pods,namespaces,networkpolicies)",
                ));
            }
        }
    }
    Ok(())
}

/// Error context: which object and which field.
struct Ctx<'a> {
    object: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: &str, value: &Value, expected: &str) -> Error {
        let shown = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Error::invalid(format!("{} field {field}", self.object), shown, expected)
    }
}

fn get<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn string(ctx: &Ctx, v: &Value, path: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| ctx.err(path, v, "a string"))
}

fn array<'v>(ctx: &Ctx, v: Option<&'v Value>, path: &str) -> Result<&'v [Value]> {
    match v {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(ctx.err(path, other, "a list")),
    }
}

fn string_map(ctx: &Ctx, v: Option<&Value>, path: &str) -> Result<Labels> {
    let mut out = Labels::new();
    match v {
        None => {}
        Some(Value::Object(m)) => {
            for (k, val) in m {
                let s = match val {
                    Value::String(s) => s.clone(),
                    // YAML `app: 1` / `on: true` arrive as numbers and booleans.
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    other => return Err(ctx.err(&format!("{path}.{k}"), other, "a string")),
                };
                out.insert(k.clone(), s);
            }
        }
        Some(other) => return Err(ctx.err(path, other, "a map of strings")),
    }
    Ok(out)
}

/// (namespace, name, labels) from `metadata`. Also used by live mode (`netpol::live`) on
/// the objects the API server sends, so both sources share one validation.
pub fn meta(item: &Value, kind: &str, namespaced: bool) -> Result<(String, String, Labels)> {
    let m = get(item, "metadata");
    let name = m.and_then(|m| get(m, "name")).and_then(Value::as_str);
    let ns = m
        .and_then(|m| get(m, "namespace"))
        .and_then(Value::as_str)
        .unwrap_or(if namespaced { "default" } else { "" });
    let Some(name) = name.filter(|n| !n.is_empty()) else {
        return Err(Error::invalid(
            format!("{kind} field metadata.name"),
            m.and_then(|m| m.get("name"))
                .cloned()
                .unwrap_or(Value::Null),
            "a non-empty name",
        ));
    };
    let object = if namespaced {
        format!("{kind} {ns}/{name}")
    } else {
        format!("{kind} {name}")
    };
    let ctx = Ctx { object: &object };
    let labels = string_map(&ctx, m.and_then(|m| get(m, "labels")), "metadata.labels")?;
    Ok((ns.to_string(), name.to_string(), labels))
}

/// One Pod object (as kubectl or the API server writes it).
pub fn pod(item: &Value) -> Result<Pod> {
    let (namespace, name, labels) = meta(item, "Pod", true)?;
    let object = format!("Pod {namespace}/{name}");
    let ctx = Ctx { object: &object };
    let spec = get(item, "spec");
    let status = get(item, "status");
    let node = spec
        .and_then(|s| get(s, "nodeName"))
        .map(|v| string(&ctx, v, "spec.nodeName"))
        .transpose()?;
    let host_network = match spec.and_then(|s| get(s, "hostNetwork")) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(ctx.err("spec.hostNetwork", other, "true or false")),
    };
    let mut ips = Vec::new();
    let ip_of = |v: &Value, path: &str| -> Result<IpAddr> {
        let s = string(&ctx, v, path)?;
        s.parse()
            .map_err(|_| ctx.err(path, v, "an IPv4 or IPv6 address"))
    };
    for (i, entry) in array(&ctx, status.and_then(|s| get(s, "podIPs")), "status.podIPs")?
        .iter()
        .enumerate()
    {
        let path = format!("status.podIPs[{i}].ip");
        let v = get(entry, "ip").ok_or_else(|| ctx.err(&path, &Value::Null, "an address"))?;
        let ip = ip_of(v, &path)?;
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    if let Some(v) = status.and_then(|s| get(s, "podIP"))
        && !v.as_str().is_some_and(str::is_empty)
    {
        let ip = ip_of(v, "status.podIP")?;
        if !ips.contains(&ip) {
            ips.insert(0, ip);
        }
    }
    let terminated = matches!(
        status.and_then(|s| get(s, "phase")).and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let mut ports = Vec::new();
    for list in ["containers", "initContainers"] {
        for (c, container) in array(
            &ctx,
            spec.and_then(|s| get(s, list)),
            &format!("spec.{list}"),
        )?
        .iter()
        .enumerate()
        {
            let base = format!("spec.{list}[{c}].ports");
            for (p, port) in array(&ctx, get(container, "ports"), &base)?
                .iter()
                .enumerate()
            {
                let path = format!("{base}[{p}]");
                let number = get(port, "containerPort").ok_or_else(|| {
                    ctx.err(
                        &format!("{path}.containerPort"),
                        &Value::Null,
                        "a port 1-65535",
                    )
                })?;
                let number = port_number(&ctx, number, &format!("{path}.containerPort"))?;
                let protocol = protocol(&ctx, get(port, "protocol"), &format!("{path}.protocol"))?;
                let name = get(port, "name")
                    .map(|v| string(&ctx, v, &format!("{path}.name")))
                    .transpose()?;
                ports.push(ContainerPort {
                    name,
                    port: number,
                    protocol,
                });
            }
        }
    }
    Ok(Pod {
        namespace,
        name,
        labels,
        node,
        host_network,
        ips,
        ports,
        terminated,
    })
}

fn port_number(ctx: &Ctx, v: &Value, path: &str) -> Result<u16> {
    match v.as_u64() {
        Some(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(ctx.err(path, v, "a port number 1-65535")),
    }
}

fn protocol(ctx: &Ctx, v: Option<&Value>, path: &str) -> Result<Protocol> {
    match v {
        None => Ok(Protocol::Tcp),
        Some(v) => v
            .as_str()
            .and_then(Protocol::parse)
            .ok_or_else(|| ctx.err(path, v, "TCP, UDP or SCTP")),
    }
}

fn selector(ctx: &Ctx, v: &Value, path: &str) -> Result<Selector> {
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

fn cidr(ctx: &Ctx, v: &Value, path: &str) -> Result<IpNet> {
    let s = string(ctx, v, path)?;
    let net: IpNet = s
        .trim()
        .parse()
        .map_err(|_| ctx.err(path, v, "a CIDR such as 10.0.0.0/8 or 2001:db8::/32"))?;
    // The API server (before 1.33's strict validation) stores `10.0.0.1/8` as given and
    // means the whole prefix; so do we.
    Ok(net.trunc())
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
    Ok(Policy {
        namespace,
        name,
        pod_selector,
        affects_ingress,
        affects_egress,
        ingress,
        egress,
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
            let cidr = cidr(ctx, c, &format!("{bp}.cidr"))?;
            let mut except = Vec::new();
            for (k, e) in array(ctx, get(b, "except"), &format!("{bp}.except"))?
                .iter()
                .enumerate()
            {
                let ep = format!("{bp}.except[{k}]");
                let net = cidr_of(ctx, e, &ep)?;
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

fn cidr_of(ctx: &Ctx, v: &Value, path: &str) -> Result<IpNet> {
    cidr(ctx, v, path)
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
    use super::*;

    const LIST: &str = r#"
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Namespace
  metadata:
    name: prod
    labels: {team: a}
- apiVersion: v1
  kind: Pod
  metadata:
    name: db-0
    namespace: prod
    labels: {app: db}
  spec:
    nodeName: node-1
    containers:
    - name: pg
      ports:
      - {name: pg, containerPort: 5432}
      - {name: metrics, containerPort: 9187, protocol: TCP}
  status:
    phase: Running
    podIP: 10.244.1.5
    podIPs: [{ip: 10.244.1.5}, {ip: "2001:db8::5"}]
- apiVersion: networking.k8s.io/v1
  kind: NetworkPolicy
  metadata: {name: db, namespace: prod}
  spec:
    podSelector: {matchLabels: {app: db}}
    ingress:
    - from:
      - podSelector: {matchLabels: {app: web}}
        namespaceSelector: {matchExpressions: [{key: team, operator: In, values: [a]}]}
      - ipBlock: {cidr: 192.0.2.0/24, except: [192.0.2.128/25]}
      ports:
      - {port: pg}
      - {protocol: UDP, port: 8000, endPort: 8100}
    egress:
    - {}
"#;

    #[test]
    fn parses_a_kubectl_list() {
        let c = parse("t.yaml", LIST).unwrap();
        assert_eq!(c.pods.len(), 1);
        let p = &c.pods[0];
        assert_eq!(p.ips.len(), 2);
        assert_eq!(p.ports[0].protocol, Protocol::Tcp);
        assert_eq!(
            c.namespace_labels("prod")
                .get(NAMESPACE_NAME_LABEL)
                .unwrap(),
            "prod"
        );
        let pol = &c.policies[0];
        assert!(
            pol.affects_ingress && pol.affects_egress,
            "egress rules default Egress on"
        );
        assert_eq!(pol.ingress[0].peers.len(), 2);
        assert_eq!(
            pol.ingress[0].ports[0].port,
            Some(PortRef::Name("pg".into()))
        );
        assert_eq!(pol.ingress[0].ports[1].end_port, Some(8100));
        assert_eq!(
            pol.egress,
            vec![PolicyRule {
                peers: vec![],
                ports: vec![]
            }]
        );
    }

    #[test]
    fn json_is_accepted() {
        let v: Value = serde_norway::from_str(LIST).unwrap();
        let c = parse("t.json", &serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(c, parse("t.yaml", LIST).unwrap());
    }

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
    fn the_file_must_say_what_it_is() {
        let refused = [
            ("", "is empty"),
            ("  \n# only a comment\n", "is empty"),
            ("---\n---\n", "is empty"),
            (
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n",
                "\"ConfigMap\"",
            ),
            ("{}", "kind \"\""),
            ("[]", "a bare list"),
            ("just text\n", "\"\\\"just text\\\"\""),
            // Truncated after `kind: List`, or after `items:`.
            (
                "apiVersion: v1\nkind: List\n",
                "items of the List \"(missing)\"",
            ),
            (
                "apiVersion: v1\nkind: List\nitems:\n",
                "items of the List \"null\"",
            ),
            (
                "apiVersion: v2\nkind: List\nitems: []\n",
                "apiVersion of the List \"v2\"",
            ),
            (
                "kind: List\nitems:\n- {kind: Service, apiVersion: v1, metadata: {name: s, namespace: n}}\n",
                "items[0] (n/s) kind \"Service\"",
            ),
            (
                "kind: List\nitems:\n- {metadata: {name: x}}\n",
                "items[0] (x) kind \"(none)\"",
            ),
            (
                "kind: Namespace\nmetadata: {name: a}\n---\nkind: Secret\n",
                "document 2 kind \"Secret\"",
            ),
            (
                "kind: List\nitems:\n- kind: List\n  items: [{kind: Endpoints}]\n",
                "items[0].items[0] kind \"Endpoints\"",
            ),
        ];
        for (text, needle) in refused {
            let e = parse("/m.yaml", text).expect_err(text);
            let msg = e.to_string();
            assert_eq!(e.exit_code(), 2, "{msg}");
            assert!(
                msg.contains("/m.yaml") && msg.contains(needle),
                "{text:?} => {msg}"
            );
            assert_eq!(msg.lines().count(), 1, "{msg}");
        }
        // An explicit empty List is a cluster without objects; typed lists imply their
        // items' kind (the API server leaves it out); a single object is accepted.
        assert_eq!(
            parse("t", "apiVersion: v1\nkind: List\nitems: []\n").unwrap(),
            Cluster::default()
        );
        assert_eq!(
            parse("t", r#"{"kind": "List", "items": []}"#).unwrap(),
            Cluster::default()
        );
        let typed = parse(
            "t",
            "kind: NamespaceList\napiVersion: v1\nitems: [{metadata: {name: a, labels: {x: y}}}]\n",
        )
        .unwrap();
        assert_eq!(
            typed.namespace_labels("a").get("x").map(String::as_str),
            Some("y")
        );
        let one = parse("t", "kind: Namespace\nmetadata: {name: a}\n").unwrap();
        assert!(one.namespaces.contains_key("a"));
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
