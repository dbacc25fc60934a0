//! Property: `nftkit netpol explain` agrees with the kernel. For seeded random small
//! clusters (labels, named ports) and random NetworkPolicies, the ruleset is applied in a
//! "node" namespace routing between pod namespaces and a "remote" one (another node's pod,
//! external hosts); on sampled TCP flows through the node, explain's decision (and its exit
//! code, 0 or 4) must match whether a real connection (bounded by a timeout) is answered,
//! and every allow of an isolated pod must name the policy rule that allows it.
//! Every failure names its seed, the flow, the policies, explain's report and the ruleset.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

const NODE: &str = "node-1";
const PORTS: [u16; 3] = [80, 5432, 8080];
const LOCAL: usize = 4;
const REMOTE_POD: &str = "10.244.200.2";
/// External hosts: one inside the ipBlocks' except, one inside the cidr, one outside.
const EXTERNAL: [&str; 3] = ["192.0.2.10", "192.0.2.200", "203.0.113.10"];
const SEEDS: [u64; 12] = [1, 2, 3, 5, 7, 11, 42, 99, 1234, 2026, 65_535, 987_654_321];
const FLOWS_PER_SEED: usize = 14;

/// A small deterministic generator (xorshift64*), so a seed is a test case.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

const NAMESPACES: [&str; 2] = ["a", "b"];
const APPS: [&str; 3] = ["x", "y", "z"];

/// A pod of the generated cluster.
struct PodGen {
    ns: &'static str,
    name: String,
    app: &'static str,
    /// The number its container port named `web` has.
    web: u16,
    node: &'static str,
    ip: String,
}

fn local_ip(i: usize) -> String {
    format!("10.244.{}.2", i + 1)
}

fn gen_pods(rng: &mut Rng) -> Vec<PodGen> {
    let mut pods: Vec<PodGen> = (0..LOCAL)
        .map(|i| PodGen {
            ns: rng.pick(&NAMESPACES),
            name: format!("p{i}"),
            app: rng.pick(&APPS),
            web: rng.pick(&[80, 8080]),
            node: NODE,
            ip: local_ip(i),
        })
        .collect();
    pods.push(PodGen {
        ns: rng.pick(&NAMESPACES),
        name: "remote".into(),
        app: rng.pick(&APPS),
        web: 8080,
        node: "node-2",
        ip: REMOTE_POD.into(),
    });
    pods
}

fn gen_peer(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 => json!({"podSelector": {"matchLabels": {"app": rng.pick(&APPS)}}}),
        1 => json!({"namespaceSelector": {"matchLabels": {"team": rng.pick(&NAMESPACES)}}}),
        2 => json!({"namespaceSelector": {"matchLabels": {"team": rng.pick(&NAMESPACES)}},
                    "podSelector": {"matchLabels": {"app": rng.pick(&APPS)}}}),
        3 => json!({"namespaceSelector": {}}),
        _ => {
            let cidr = rng.pick(&["192.0.2.0/24", "10.244.0.0/16", "0.0.0.0/0"]);
            let except: Vec<&str> = match cidr {
                "192.0.2.0/24" if rng.chance(50) => vec!["192.0.2.128/25"],
                "10.244.0.0/16" if rng.chance(50) => vec!["10.244.1.0/24"],
                _ => vec![],
            };
            json!({"ipBlock": {"cidr": cidr, "except": except}})
        }
    }
}

fn gen_ports(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 | 1 => json!([]),
        2 => json!([{"protocol": "TCP", "port": rng.pick(&PORTS)}]),
        3 => json!([{"port": "web"}]),
        _ => json!([{"port": 5000, "endPort": 6000}, {"protocol": "UDP", "port": 80}]),
    }
}

fn gen_rules(rng: &mut Rng, dir: &str) -> Value {
    let peers_key = if dir == "ingress" { "from" } else { "to" };
    let rules: Vec<Value> = (0..rng.below(3))
        .map(|_| {
            let mut r = json!({"ports": gen_ports(rng)});
            if rng.chance(70) {
                let peers: Vec<Value> = (0..1 + rng.below(2)).map(|_| gen_peer(rng)).collect();
                r[peers_key] = json!(peers);
            }
            r
        })
        .collect();
    json!(rules)
}

fn gen_policies(rng: &mut Rng) -> Vec<Value> {
    (0..1 + rng.below(3))
        .map(|i| {
            const TYPES: [&[&str]; 3] = [&["Ingress"], &["Egress"], &["Ingress", "Egress"]];
            let types: &[&str] = rng.pick(&TYPES);
            let mut spec = json!({"policyTypes": types});
            spec["podSelector"] = if rng.chance(30) {
                json!({})
            } else {
                json!({"matchLabels": {"app": rng.pick(&APPS)}})
            };
            for t in types {
                let dir = t.to_lowercase();
                spec[&dir] = gen_rules(rng, &dir);
            }
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": format!("pol{i}"), "namespace": rng.pick(&NAMESPACES)},
                "spec": spec})
        })
        .collect()
}

fn manifest(pods: &[PodGen], policies: &[Value]) -> Value {
    let mut items: Vec<Value> = NAMESPACES
        .iter()
        .map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {"team": n}}}))
        .collect();
    for p in pods {
        items.push(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.ns, "labels": {"app": p.app}},
            "spec": {"nodeName": p.node, "containers": [{"name": "c", "image": "x",
                "ports": [{"name": "web", "containerPort": p.web}]}]},
            "status": {"phase": "Running", "podIP": p.ip, "podIPs": [{"ip": p.ip}]}}));
    }
    items.extend(policies.iter().cloned());
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// One end of a flow: how explain names it, and where the connection starts or ends.
#[derive(Clone)]
enum End {
    Local(usize),
    RemotePod,
    External(&'static str),
}

struct Lab {
    node: Netns,
    remote: Netns,
    pods: Vec<Netns>,
    _servers: Vec<TcpServer>,
}

fn tcp_servers(ns: &Netns, tag: &str) -> TcpServer {
    let tags: Vec<String> = PORTS.iter().map(|p| format!("{tag}:{p}")).collect();
    let listeners: Vec<(std::net::SocketAddr, &str)> = PORTS
        .iter()
        .zip(&tags)
        .map(|(p, t)| (sa("0.0.0.0", *p), t.as_str()))
        .collect();
    TcpServer::start(ns, &listeners)
}

impl Lab {
    fn new() -> Lab {
        let node = Netns::new();
        node.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let remote = Netns::new();
        veth(&node, "rem", &remote, "eth0");
        addr_add(&node, "rem", "10.255.0.1/30");
        addr_add(&remote, "eth0", "10.255.0.2/30");
        for a in std::iter::once(REMOTE_POD).chain(EXTERNAL) {
            addr_add(&remote, "eth0", &format!("{a}/32"));
        }
        remote.must(&["ip", "route", "add", "default", "via", "10.255.0.1"]);
        for net in ["10.244.200.0/24", "192.0.2.0/24", "203.0.113.0/24"] {
            route_add(&node, net, "10.255.0.2");
        }
        let mut servers = vec![tcp_servers(&remote, "remote")];
        let pods = (0..LOCAL)
            .map(|i| {
                let ns = Netns::new();
                let dev = format!("p{i}");
                veth(&node, &dev, &ns, "eth0");
                addr_add(&node, &dev, &format!("10.244.{}.1/24", i + 1));
                addr_add(&ns, "eth0", &format!("{}/24", local_ip(i)));
                ns.must(&[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.244.{}.1", i + 1),
                ]);
                servers.push(tcp_servers(&ns, &format!("p{i}")));
                ns
            })
            .collect();
        Lab {
            node,
            remote,
            pods,
            _servers: servers,
        }
    }

    /// Whether a TCP connection from `from` to `to`:`port` is answered.
    fn connects(&self, from: &End, to: &End, port: u16) -> bool {
        let (ns, bind) = match from {
            End::Local(i) => (&self.pods[*i], String::new()),
            End::RemotePod => (&self.remote, format!(",bind={REMOTE_POD}")),
            End::External(a) => (&self.remote, format!(",bind={a}")),
        };
        let dst = addr(to);
        let out = ns
            .cmd(&[
                "timeout",
                "4",
                "socat",
                "-T2",
                "-t2",
                "-",
                &format!("TCP4:{dst}:{port}{bind},connect-timeout=1"),
            ])
            .timeout(Duration::from_secs(6))
            .run();
        answered_tag(&out).is_some()
    }
}

fn addr(e: &End) -> String {
    match e {
        End::Local(i) => local_ip(*i),
        End::RemotePod => REMOTE_POD.into(),
        End::External(a) => a.to_string(),
    }
}

/// How `explain` is asked about `e`: pods by name, external hosts by address.
fn arg(e: &End, pods: &[PodGen]) -> String {
    match e {
        End::Local(i) => format!("{}/{}", pods[*i].ns, pods[*i].name),
        End::RemotePod => format!("{}/remote", pods[LOCAL].ns),
        End::External(a) => a.to_string(),
    }
}

/// Flows through the node: local <-> local, local <-> remote pod or external host.
fn gen_flows(rng: &mut Rng) -> Vec<(End, End, u16)> {
    let ends = |rng: &mut Rng, local_only: bool| -> End {
        match rng.below(if local_only { 1 } else { 4 }) {
            0 => End::Local(rng.below(LOCAL)),
            1 => End::RemotePod,
            _ => End::External(rng.pick(&EXTERNAL)),
        }
    };
    (0..FLOWS_PER_SEED)
        .map(|_| {
            let port = rng.pick(&PORTS);
            loop {
                let from = ends(rng, false);
                let to = ends(rng, !matches!(from, End::Local(_)));
                if addr(&from) != addr(&to) {
                    return (from, to, port);
                }
            }
        })
        .collect()
}

#[test]
fn explain_agrees_with_the_datapath_on_random_clusters() {
    require_root();
    let started = Instant::now();
    let lab = Lab::new();
    let file = std::env::temp_dir().join(format!("{}-explain.json", unique_name()));
    let f = file.display().to_string();
    let mut failures = Vec::new();
    let mut flows_checked = 0;
    let (mut allowed_seen, mut denied_seen) = (0, 0);
    for seed in SEEDS {
        let mut rng = Rng::new(seed);
        let pods = gen_pods(&mut rng);
        let policies = gen_policies(&mut rng);
        std::fs::write(&file, manifest(&pods, &policies).to_string()).unwrap();
        lab.node
            .nftkit_ok(&[("NODE_NAME", NODE)], &["netpol", "--from-file", &f]);
        let flows = gen_flows(&mut rng);
        let results: Vec<(String, bool, Result<bool, String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = flows
                .iter()
                .map(|(from, to, port)| {
                    let (lab, f, pods) = (&lab, &f, &pods);
                    s.spawn(move || {
                        let (from_arg, to_arg) = (arg(from, pods), arg(to, pods));
                        let what = format!(
                            "{from_arg} ({}) -> {to_arg} ({}) tcp/{port}",
                            addr(from),
                            addr(to)
                        );
                        let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
                            .args([
                                "netpol",
                                "explain",
                                "--from-file",
                                f,
                                "--node-name",
                                NODE,
                                "--from",
                                &from_arg,
                                "--to",
                                &to_arg,
                                "--port",
                                &port.to_string(),
                                "--json",
                            ])
                            .output()
                            .expect("run nftkit");
                        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
                        let said = match (out.status.code(), serde_json::from_str::<Value>(&stdout))
                        {
                            // Every allow of an isolated pod is named (policy and rule).
                            (Some(_), Ok(v))
                                if v["checks"].as_array().into_iter().flatten().any(|c| {
                                    c["result"] == "allowed"
                                        && c["rules"].as_array().is_none_or(|r| r.is_empty())
                                }) =>
                            {
                                Err(format!("an allowed check names no policy rule: {stdout}"))
                            }
                            (Some(code @ (0 | 4)), Ok(v))
                                if v["decision"] == if code == 0 { "allow" } else { "deny" } =>
                            {
                                Ok(code == 0)
                            }
                            (code, _) => Err(format!(
                                "explain exited {code:?}: {stdout}{}",
                                String::from_utf8_lossy(&out.stderr)
                            )),
                        };
                        let real = lab.connects(from, to, *port);
                        let report = format!("{what}\n      explain: {stdout}");
                        (report, real, said)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (what, real, said) in results {
            flows_checked += 1;
            if real {
                allowed_seen += 1;
            } else {
                denied_seen += 1;
            }
            match said {
                Ok(allowed) if allowed == real => {}
                Ok(allowed) => failures.push(format!(
                    "seed {seed}: {what}\n      explain says {}, the datapath {}\n      policies: {}\n      ruleset:\n{}",
                    if allowed { "allow" } else { "deny" },
                    if real { "connected" } else { "did not connect" },
                    Value::Array(policies.clone()),
                    lab.node.ruleset()
                )),
                Err(e) => failures.push(format!("seed {seed}: {what}\n      {e}")),
            }
        }
    }
    let _ = std::fs::remove_file(&file);
    assert!(
        failures.is_empty(),
        "{} of {flows_checked} flows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // Both answers must be exercised, or the property says little.
    assert!(
        allowed_seen > 0 && denied_seen > 0,
        "degenerate sample: {allowed_seen} allowed, {denied_seen} denied"
    );
    eprintln!(
        "netpol explain property: {flows_checked} flows ({allowed_seen} allowed, {denied_seen} denied) over {} seeds agree with the datapath in {:.1?}",
        SEEDS.len(),
        started.elapsed()
    );
}
