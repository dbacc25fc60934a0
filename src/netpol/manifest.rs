//! The cluster objects netpol reads — pods, namespaces, `networking.k8s.io/v1`
//! NetworkPolicies and `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicies — from
//! a `kubectl get pods,namespaces,networkpolicies,clusternetworkpolicies -A -o yaml` List
//! (YAML or JSON; several `---` documents, typed lists such as `PodList` or
//! `ClusterNetworkPolicyList`, nested Lists, and single Pod, Namespace, NetworkPolicy or
//! ClusterNetworkPolicy objects are accepted too). A ClusterNetworkPolicy of another
//! apiVersion is refused, as is one using a peer nftkit does not implement (`nodes`,
//! `domainNames`): it is not enforced in part.
//!
//! The file must say what it is: an empty file, a top level that is neither a List nor
//! one of those kinds, a List without an `items` list, or an item of another kind
//! (Service, ConfigMap, ...) is refused, naming the file and the value — a truncated or
//! wrong file must not become "no policies", which would open every pod. An explicit
//! `items: []` is a valid, empty cluster.
//!
//! Only the fields the semantics need are read, each validated as the API server would;
//! an error names the object (`NetworkPolicy default/allow-db`,
//! `ClusterNetworkPolicy deny-all`), the field path (`spec.ingress[0].ports[1].endPort`),
//! the value and what is expected. Unknown fields are ignored. Objects are sorted
//! (namespace and name; ClusterNetworkPolicies by name) and a duplicate is refused.
//!
//! This file holds the cluster model and pods, the file's structure (documents, Lists,
//! kinds) and the objects' metadata; `policy` converts a NetworkPolicy spec,
//! `cnp_parse` a ClusterNetworkPolicy, and `fields` holds the validating field readers
//! they use.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use super::fields::{Ctx, array, get, port_number, protocol, string};
pub use super::fields::{Protocol, meta};
use super::selector::Labels;
use crate::error::{Error, Result};

pub use super::cnp_parse::cluster_policy;
pub use super::policy::{Peer, Policy, PolicyRule, PortRef, PortSpec, policy};

/// Label the API server puts on every namespace (1.21+); added here when a namespace
/// object is missing or predates it, so `namespaceSelector` on it works everywhere.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cluster {
    pub pods: Vec<Pod>,
    /// Namespace name -> labels.
    pub namespaces: BTreeMap<String, Labels>,
    pub policies: Vec<Policy>,
    /// `policy.networking.k8s.io/v1alpha2` ClusterNetworkPolicies, sorted by name.
    pub cluster_policies: Vec<super::cnp::ClusterPolicy>,
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
            "ClusterNetworkPolicy" => cluster
                .cluster_policies
                .push(cluster_policy(item).map_err(in_file)?),
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
    cluster.cluster_policies.sort_by(|a, b| a.name.cmp(&b.name));
    for w in cluster.cluster_policies.windows(2) {
        if w[0].name == w[1].name {
            return Err(Error::invalid(
                format!("{source}: ClusterNetworkPolicy {}", w[0].name),
                "duplicate",
                "each ClusterNetworkPolicy once",
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

/// The kinds nftkit reads (`kubectl get pods,namespaces,networkpolicies,clusternetworkpolicies`).
pub const KINDS: [&str; 4] = ["Pod", "Namespace", "NetworkPolicy", "ClusterNetworkPolicy"];

const WHAT_TOP: &str = "a kubectl List (`apiVersion: v1`, `kind: List`, `items: [...]`) of \
    pods, namespaces, networkpolicies and clusternetworkpolicies, or one Pod, Namespace, \
    NetworkPolicy or ClusterNetworkPolicy";

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
                    "Pod, Namespace, NetworkPolicy or ClusterNetworkPolicy; nftkit does not know \
                     other kinds, so it refuses the file rather than guess (list only \
                     pods,namespaces,networkpolicies,clusternetworkpolicies)",
                ));
            }
        }
    }
    Ok(())
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
}
