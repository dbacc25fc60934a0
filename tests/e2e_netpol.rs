//! End to end: `nftkit netpol --from-file` in a "node" network namespace that routes
//! between pod namespaces (one veth pair each, ip_forward on) and a "remote" namespace
//! standing for other nodes' pods and external addresses. Reachability matrices with real
//! TCP connections (the server answers with its tag, so replies must pass) and UDP
//! datagrams, run in parallel with short timeouts.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const NODE: &str = "node-1";
const TCP_PORTS: &[u16] = &[80, 5432, 8080, 30005, 40000];
const UDP_PORT: u16 = 5353;

/// Remote addresses (other nodes' pods, external hosts), all on the remote namespace.
const WEB_REMOTE: &str = "10.244.200.2";
const EXT_IN: &str = "192.0.2.10"; // inside ipBlock 192.0.2.0/24
const EXT_EXCEPT: &str = "192.0.2.200"; // in its except 192.0.2.128/25
const EXT_B: &str = "203.0.113.10";

struct PodSpec {
    ns: &'static str,
    name: &'static str,
    labels: Value,
    /// Named container ports.
    ports: Value,
}

fn local_pods() -> Vec<PodSpec> {
    vec![
        PodSpec {
            ns: "shop",
            name: "db",
            labels: json!({"app": "db"}),
            ports: json!([{"name": "sql", "containerPort": 5432}, {"name": "http", "containerPort": 8080}]),
        },
        PodSpec {
            ns: "shop",
            name: "web",
            labels: json!({"app": "web"}),
            ports: json!([{"name": "web-http", "containerPort": 8080}]),
        },
        PodSpec {
            ns: "shop",
            name: "other",
            labels: json!({}),
            ports: json!([]),
        },
        PodSpec {
            ns: "ops",
            name: "monitor",
            labels: json!({"app": "monitor"}),
            ports: json!([]),
        },
        PodSpec {
            ns: "dev",
            name: "monitor",
            labels: json!({"app": "monitor"}),
            ports: json!([]),
        },
    ]
}

/// Pod i (1-based) has 10.244.i.2; the node's side of its veth is 10.244.i.1.
fn pod_ip(i: usize) -> String {
    format!("10.244.{i}.2")
}

struct Cluster {
    node: Netns,
    remote: Netns,
    /// (namespace/name) -> netns, in local_pods() order.
    pods: Vec<(String, Netns)>,
    ips: BTreeMap<String, String>,
    _tcp: Vec<TcpServer>,
    udp: BTreeMap<String, UdpServer>,
    file: PathBuf,
}

impl Cluster {
    fn new() -> Cluster {
        require_root();
        let node = Netns::new();
        node.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let remote = Netns::new();
        veth(&node, "rem", &remote, "eth0");
        addr_add(&node, "rem", "10.255.0.1/30");
        addr_add(&remote, "eth0", "10.255.0.2/30");
        for a in [WEB_REMOTE, EXT_IN, EXT_EXCEPT, EXT_B] {
            addr_add(&remote, "eth0", &format!("{a}/32"));
        }
        remote.must(&["ip", "route", "add", "default", "via", "10.255.0.1"]);
        for net in ["10.244.200.0/24", "192.0.2.0/24", "203.0.113.0/24"] {
            route_add(&node, net, "10.255.0.2");
        }
        let mut pods = Vec::new();
        let mut ips = BTreeMap::new();
        let mut tcp = Vec::new();
        let mut udp = BTreeMap::new();
        for (i, p) in local_pods().iter().enumerate() {
            let i = i + 1;
            let ns = Netns::new();
            let dev = format!("p{i}");
            veth(&node, &dev, &ns, "eth0");
            addr_add(&node, &dev, &format!("10.244.{i}.1/24"));
            addr_add(&ns, "eth0", &format!("{}/24", pod_ip(i)));
            ns.must(&[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("10.244.{i}.1"),
            ]);
            let key = format!("{}/{}", p.ns, p.name);
            ips.insert(key.clone(), pod_ip(i));
            tcp.push(servers(&ns, &key));
            udp.insert(
                pod_ip(i),
                UdpServer::start(&ns, &[(sa("0.0.0.0", UDP_PORT), &key)]),
            );
            pods.push((key, ns));
        }
        tcp.push(servers(&remote, "remote"));
        udp.insert(
            EXT_B.to_string(),
            UdpServer::start(&remote, &[(sa(EXT_B, UDP_PORT), "remote")]),
        );
        let file = std::env::temp_dir().join(format!("{}-cluster.yaml", unique_name()));
        Cluster {
            node,
            remote,
            pods,
            ips,
            _tcp: tcp,
            udp,
            file,
        }
    }

    fn ns(&self, key: &str) -> &Netns {
        &self
            .pods
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no pod {key}"))
            .1
    }

    fn ip(&self, key: &str) -> String {
        self.ips
            .get(key)
            .cloned()
            .unwrap_or_else(|| key.to_string())
    }

    /// The kubectl List: namespaces, the local pods, one pod on node-2, `policies`.
    fn manifest(&self, policies: &[Value]) -> Value {
        let mut items = vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "shop"}}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ops", "labels": {"team": "ops"}}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "dev", "labels": {"team": "dev"}}}),
        ];
        for (i, p) in local_pods().iter().enumerate() {
            items.push(pod_json(
                p.ns,
                p.name,
                &p.labels,
                &p.ports,
                NODE,
                &pod_ip(i + 1),
            ));
        }
        items.push(pod_json(
            "shop",
            "web-remote",
            &json!({"app": "web"}),
            &json!([{"name": "web-http", "containerPort": 8080}]),
            "node-2",
            WEB_REMOTE,
        ));
        items.extend(policies.iter().cloned());
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    /// Write the manifest (as YAML) and apply it in the node namespace.
    fn apply(&self, policies: &[Value]) {
        let yaml = serde_norway::to_string(&self.manifest(policies)).expect("yaml");
        std::fs::write(&self.file, yaml).expect("write manifest");
        let f = self.file.display().to_string();
        self.node
            .nftkit_ok(&[("NODE_NAME", NODE)], &["netpol", "--from-file", &f]);
        self.node.nftkit_ok(
            &[("NODE_NAME", NODE)],
            &["verify", "netpol", "--from-file", &f],
        );
    }

    /// Run every probe in parallel; panic listing the ones that disagree.
    fn check(&self, phase: &str, probes: &[Probe]) {
        let results: Vec<(String, bool, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = probes
                .iter()
                .enumerate()
                .map(|(n, p)| s.spawn(move || (p.describe(), p.want, self.run_probe(p, n, phase))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("probe thread"))
                .collect()
        });
        let bad: Vec<String> = results
            .iter()
            .filter(|(_, want, got)| want != got)
            .map(|(d, want, _)| {
                format!(
                    "{d}: expected {}",
                    if *want { "allowed" } else { "blocked" }
                )
            })
            .collect();
        assert!(
            bad.is_empty(),
            "phase {phase}: {} of {} probes wrong:\n{}\n--- node ruleset ---\n{}",
            bad.len(),
            probes.len(),
            bad.join("\n"),
            self.node.ruleset()
        );
    }

    fn run_probe(&self, p: &Probe, n: usize, phase: &str) -> bool {
        let (ns, bind) = match p.from {
            Src::Pod(k) => (self.ns(k), None),
            Src::Remote(addr) => (&self.remote, Some(addr)),
            Src::Node => (&self.node, None),
        };
        let dst = self.ip(p.to);
        let bind = bind.map(|b| format!(",bind={b}")).unwrap_or_default();
        if p.udp {
            let data = format!("{phase}-{n}-{}", unique_name());
            let out = ns
                .cmd(&[
                    "timeout",
                    "3",
                    "socat",
                    "-u",
                    "-",
                    &format!("UDP4:{dst}:{UDP_PORT}{bind}"),
                ])
                .stdin(format!("{data}\n"))
                .timeout(Duration::from_secs(5))
                .run();
            assert!(out.success(), "udp send failed:\n{out}");
            let server = self
                .udp
                .get(&dst)
                .unwrap_or_else(|| panic!("no udp server on {dst}"));
            server
                .wait_for(&data, Duration::from_millis(1500))
                .is_some()
        } else {
            let out = ns
                .cmd(&[
                    "timeout",
                    "4",
                    "socat",
                    "-T2",
                    "-t2",
                    "-",
                    &format!("TCP4:{dst}:{}{bind},connect-timeout=1", p.port),
                ])
                .timeout(Duration::from_secs(6))
                .run();
            match answered_tag(&out) {
                Some(tag) => {
                    // The right server answered (and its reply came back through).
                    let want = if p.to.contains('/') { p.to } else { "remote" };
                    assert_eq!(tag, format!("{want}:{}", p.port), "{}", p.describe());
                    true
                }
                None => false,
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

fn servers(ns: &Netns, tag: &str) -> TcpServer {
    let tags: Vec<String> = TCP_PORTS.iter().map(|p| format!("{tag}:{p}")).collect();
    let listeners: Vec<(std::net::SocketAddr, &str)> = TCP_PORTS
        .iter()
        .zip(&tags)
        .map(|(p, t)| (sa("0.0.0.0", *p), t.as_str()))
        .collect();
    TcpServer::start(ns, &listeners)
}

fn pod_json(ns: &str, name: &str, labels: &Value, ports: &Value, node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

#[derive(Clone, Copy)]
enum Src {
    Pod(&'static str),
    Remote(&'static str),
    Node,
}

struct Probe {
    from: Src,
    /// A pod key (`shop/db`) or a remote address.
    to: &'static str,
    port: u16,
    udp: bool,
    want: bool,
}

impl Probe {
    fn describe(&self) -> String {
        let from = match self.from {
            Src::Pod(k) => k.to_string(),
            Src::Remote(a) => a.to_string(),
            Src::Node => "node".to_string(),
        };
        let port = if self.udp {
            format!("udp/{UDP_PORT}")
        } else {
            format!("tcp/{}", self.port)
        };
        format!("{from} -> {} {port}", self.to)
    }
}

fn tcp(from: Src, to: &'static str, port: u16, want: bool) -> Probe {
    Probe {
        from,
        to,
        port,
        udp: false,
        want,
    }
}

fn udp(from: Src, to: &'static str, want: bool) -> Probe {
    Probe {
        from,
        to,
        port: UDP_PORT,
        udp: true,
        want,
    }
}

use Src::{Node, Pod, Remote};

fn ingress_policies() -> Vec<Value> {
    vec![
        policy(
            "shop",
            "db-allow",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"protocol": "TCP", "port": 5432}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "ops"}}}], "ports": [{"port": "http"}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "dev"}}, "podSelector": {"matchLabels": {"app": "monitor"}}}],
                 "ports": [{"protocol": "UDP", "port": UDP_PORT}]},
                {"from": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}],
                 "ports": [{"protocol": "TCP", "port": 30000, "endPort": 30010}]}
            ]}),
        ),
        policy(
            "shop",
            "default-deny-ingress",
            json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        ),
        // Two policies on web: their allows add up.
        policy(
            "shop",
            "web-from-b",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}),
        ),
        policy(
            "shop",
            "web-from-db",
            json!({"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": 80}]}]}),
        ),
    ]
}

#[test]
fn ingress_reachability_matrix() {
    let c = Cluster::new();
    // Before any policy everything is reachable.
    c.apply(&[]);
    c.check(
        "no policies",
        &[
            tcp(Pod("shop/other"), "shop/db", 5432, true),
            tcp(Remote(EXT_EXCEPT), "shop/db", 40000, true),
            udp(Pod("ops/monitor"), "shop/db", true),
        ],
    );
    c.apply(&ingress_policies());
    c.check(
        "ingress",
        &[
            // podSelector (same namespace), port + protocol.
            tcp(Pod("shop/web"), "shop/db", 5432, true),
            tcp(Pod("shop/web"), "shop/db", 8080, false),
            udp(Pod("shop/web"), "shop/db", false),
            // default deny for everyone else.
            tcp(Pod("shop/other"), "shop/db", 5432, false),
            // namespaceSelector + named port (http = 8080 on db).
            tcp(Pod("ops/monitor"), "shop/db", 8080, true),
            tcp(Pod("ops/monitor"), "shop/db", 5432, false),
            // namespaceSelector AND podSelector, UDP.
            udp(Pod("dev/monitor"), "shop/db", true),
            udp(Pod("ops/monitor"), "shop/db", false),
            tcp(Pod("dev/monitor"), "shop/db", 8080, false),
            // A peer pod on another node counts.
            tcp(Remote(WEB_REMOTE), "shop/db", 5432, true),
            // ipBlock with except, endPort range.
            tcp(Remote(EXT_IN), "shop/db", 30005, true),
            tcp(Remote(EXT_EXCEPT), "shop/db", 30005, false),
            tcp(Remote(EXT_IN), "shop/db", 40000, false),
            tcp(Remote(EXT_B), "shop/db", 30005, false),
            // Two policies unioned on web.
            tcp(Remote(EXT_B), "shop/web", 80, true),
            tcp(Remote(EXT_B), "shop/web", 8080, true),
            tcp(Pod("shop/db"), "shop/web", 80, true),
            tcp(Pod("shop/db"), "shop/web", 8080, false),
            tcp(Pod("shop/other"), "shop/web", 80, false),
            // default-deny-ingress covers every pod of shop.
            tcp(Pod("shop/web"), "shop/other", 80, false),
            // Other namespaces are not isolated.
            tcp(Pod("shop/other"), "ops/monitor", 80, true),
            // The policies also select web-remote (node-2): not programmed here.
            tcp(Pod("shop/other"), WEB_REMOTE, 80, true),
            // No egress isolation: db reaches out freely.
            tcp(Pod("shop/db"), EXT_B, 80, true),
            // The node itself (kubelet probes) reaches isolated pods.
            tcp(Node, "shop/db", 80, true),
            tcp(Node, "shop/other", 8080, true),
        ],
    );
}

#[test]
fn egress_reachability_matrix() {
    let c = Cluster::new();
    c.apply(&[
        policy(
            "shop",
            "db-egress",
            json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Egress"], "egress": [
                {"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"protocol": "TCP", "port": 80}]},
                {"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "web-http"}]}
            ]}),
        ),
        policy(
            "shop",
            "unlabelled-deny-egress",
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]},
                   "policyTypes": ["Egress"]}),
        ),
        policy(
            "ops",
            "monitor-egress-cidr",
            json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}]}]}),
        ),
    ]);
    c.check(
        "egress",
        &[
            // Egress allow to a CIDR on a port.
            tcp(Pod("shop/db"), EXT_B, 80, true),
            tcp(Pod("shop/db"), EXT_B, 8080, false),
            tcp(Pod("shop/db"), EXT_IN, 80, false),
            udp(Pod("shop/db"), EXT_B, false),
            // Named port resolved on each destination pod (local and on node-2).
            tcp(Pod("shop/db"), "shop/web", 8080, true),
            tcp(Pod("shop/db"), "shop/web", 80, false),
            tcp(Pod("shop/db"), WEB_REMOTE, 8080, true),
            tcp(Pod("shop/db"), "shop/other", 8080, false),
            // Default deny egress (DoesNotExist selector).
            tcp(Pod("shop/other"), EXT_B, 80, false),
            tcp(Pod("shop/other"), "shop/web", 80, false),
            udp(Pod("shop/other"), EXT_B, false),
            // egress section without policyTypes: Ingress + Egress.
            tcp(Pod("ops/monitor"), EXT_IN, 80, true),
            tcp(Pod("ops/monitor"), EXT_EXCEPT, 80, false),
            tcp(Pod("ops/monitor"), EXT_B, 80, false),
            tcp(Pod("shop/web"), "ops/monitor", 80, false),
            // Not egress-isolated pods.
            tcp(Pod("shop/web"), EXT_B, 8080, true),
            udp(Pod("shop/web"), EXT_B, true),
            // Ingress to an egress-isolated pod still works; its replies pass
            // (established), though db may not open connections to the client.
            tcp(Remote(EXT_IN), "shop/db", 5432, true),
            tcp(Pod("shop/other"), "shop/db", 5432, false), // other's own egress is denied
            tcp(Pod("shop/web"), "shop/db", 5432, true),
            tcp(Node, "ops/monitor", 80, true),
        ],
    );
}

#[test]
fn updates_and_deletes_are_reapplied() {
    let c = Cluster::new();
    let mut policies = ingress_policies();
    c.apply(&policies);
    c.check(
        "initial",
        &[
            tcp(Pod("shop/other"), "shop/db", 5432, false),
            tcp(Pod("shop/web"), "shop/db", 5432, true),
        ],
    );
    // Update: db-allow's first rule now admits pods without an app label too.
    policies[0]["spec"]["ingress"][0]["from"] = json!([
        {"podSelector": {"matchLabels": {"app": "web"}}},
        {"podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}}
    ]);
    c.apply(&policies);
    c.check(
        "updated",
        &[
            tcp(Pod("shop/other"), "shop/db", 5432, true),
            tcp(Pod("shop/web"), "shop/db", 5432, true),
            tcp(Pod("shop/other"), "shop/db", 8080, false),
        ],
    );
    // Delete default-deny-ingress: "other" (selected by no other policy) opens up,
    // db and web stay isolated by their own policies.
    policies.remove(1);
    c.apply(&policies);
    c.check(
        "deleted default deny",
        &[
            tcp(Pod("shop/web"), "shop/other", 80, true),
            tcp(Pod("ops/monitor"), "shop/db", 5432, false),
            tcp(Pod("shop/other"), "shop/web", 80, false),
        ],
    );
    let ruleset = c.node.ruleset();
    assert!(!ruleset.contains("ingress/shop/other"), "{ruleset}");
    assert!(!ruleset.contains("default-deny"), "{ruleset}");
    // Every policy deleted: nothing isolated; then the command's table removed.
    c.apply(&[]);
    c.check(
        "no policies",
        &[
            tcp(Pod("ops/monitor"), "shop/db", 5432, true),
            tcp(Pod("shop/other"), "shop/web", 80, true),
        ],
    );
    c.node.nftkit_ok(&[], &["delete", "netpol"]);
    assert!(c.node.table("inet", "nftkit-netpol").is_none());
}
