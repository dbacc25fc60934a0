//! End to end: `nftkit netpol --from-file` in a "node" network namespace that routes
//! between pod namespaces (one veth pair each, ip_forward on) and a "remote" namespace
//! standing for other nodes' pods and external addresses. Reachability matrices with real
//! TCP connections (the server answers with its tag, so replies must pass) and UDP
//! datagrams, run in parallel with short timeouts. Live mode's guarantees that show in
//! packets (rules outlive the daemon and an unreachable API server; an unconvertible
//! policy keeps the last good rules) run the same matrix against a fake API server.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use crate::common::*;
use crate::netpol_api::*;
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
    // shop/other (pod 3) is no longer sent to a chain of policies.
    assert!(!ruleset.contains("10.244.3.2 : goto"), "{ruleset}");
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

// ---------------------------------------------------------------------------
// Live mode (a fake API server in the node namespace, tests/netns/netpol_api.rs)
// ---------------------------------------------------------------------------

/// Serve the cluster's objects (a `Cluster::manifest`) from `api`.
fn serve(api: &FakeApi, manifest: &Value) {
    for item in manifest["items"].as_array().expect("items") {
        api.apply(
            plural_of(item["kind"].as_str().expect("kind")),
            item.clone(),
        );
    }
}

/// `nftkit --metrics-addr METRICS netpol` against the API server at 127.0.0.1:`api`.
fn live_daemon(c: &Cluster, dir: &TempDir, api: u16, metrics: u16, extra: &[&str]) -> NftkitDaemon {
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{api}"));
    let mut args = vec![
        "--metrics-addr".to_string(),
        metrics.to_string(),
        "netpol".into(),
        "--node-name".into(),
        NODE.into(),
        "--kubeconfig".into(),
        kc.display().to_string(),
        "--debounce".into(),
        "100ms".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    NftkitDaemon::start(&c.node, &args)
}

fn wait_ready(c: &Cluster, d: &NftkitDaemon, metrics: u16, what: &str) {
    if !poll_until(Duration::from_secs(60), || readyz(&c.node, metrics) == 200) {
        panic!("never ready ({what}):\n{}", plain(&d.log()));
    }
}

/// The table as `nft -s` lists it: without the counters' values, which the kernel moves
/// with every packet (what nftkit wrote, nothing else, is compared).
fn table(c: &Cluster) -> Option<String> {
    let out = c
        .node
        .nft(&["-s", "list", "table", "inet", "nftkit-netpol"]);
    out.success().then_some(out.stdout)
}

/// CONTRACT.md "Ownership and atomicity", `netpol`: the table outlives the daemon by
/// default (SIGKILL) and keeps filtering; a restart while the API server is unreachable
/// leaves it exactly as it is, keeps running past --sync-timeout and reports not ready;
/// once the server answers, the new state is applied and the daemon is ready.
/// `--persist=false` puts the owner flag on the table, which then dies with the process.
#[test]
fn live_table_outlives_the_daemon_and_an_unreachable_api_server() {
    let c = Cluster::new();
    let dir = TempDir::new("live");
    let api_port = free_port(&c.node);
    let metrics = free_port(&c.node);
    let api = FakeApi::start_at(&c.node, api_port);
    let policies = ingress_policies();
    serve(&api, &c.manifest(&policies));
    let mut d = live_daemon(&c, &dir, api_port, metrics, &[]);
    wait_ready(&c, &d, metrics, "first run");
    let enforced = [
        tcp(Pod("shop/web"), "shop/db", 5432, true),
        tcp(Pod("shop/other"), "shop/db", 5432, false),
        tcp(Remote(EXT_B), "shop/web", 80, true),
        tcp(Pod("shop/other"), "ops/monitor", 80, true),
    ];
    c.check("live", &enforced);
    let first = table(&c).expect("table");
    assert!(
        !first.contains("flags owner"),
        "persists by default:\n{first}"
    );

    // SIGKILL: no chance to clean up; the table stays and still filters.
    assert_eq!(d.stop_with(libc::SIGKILL), None);
    assert_eq!(
        table(&c).as_deref(),
        Some(first.as_str()),
        "table gone with SIGKILL"
    );
    c.check("after SIGKILL", &enforced);

    // Restart with the API server down: no exit, the table untouched, not ready.
    drop(api);
    let mut d = live_daemon(&c, &dir, api_port, metrics, &["--sync-timeout", "2s"]);
    if !poll_until(Duration::from_secs(20), || {
        plain(&d.log()).contains("API server unreachable: no complete list")
    }) {
        panic!("no unreachable error:\n{}", plain(&d.log()));
    }
    thread::sleep(Duration::from_secs(3));
    assert!(d.running(), "exited:\n{}", plain(&d.log()));
    assert_eq!(readyz(&c.node, metrics), 503);
    assert_eq!(table(&c).as_deref(), Some(first.as_str()), "table touched");
    c.check("API server down", &enforced);
    let log = plain(&d.log());
    assert!(log.matches("API server unreachable").count() >= 2, "{log}");
    assert!(!log.contains("netpol table updated"), "{log}");

    // The server comes back, without db-allow: web loses its way into db.
    let api = FakeApi::start_at(&c.node, api_port);
    serve(&api, &c.manifest(&policies[1..]));
    wait_ready(&c, &d, metrics, "API server back");
    c.check(
        "API server back",
        &[
            tcp(Pod("shop/web"), "shop/db", 5432, false),
            tcp(Remote(EXT_B), "shop/web", 80, true),
            tcp(Pod("shop/other"), "ops/monitor", 80, true),
        ],
    );
    assert!(plain(&d.log()).contains("API server reachable again"));
    assert_eq!(d.stop_with(libc::SIGKILL), None);
    assert!(table(&c).is_some());

    // --persist=false: the kernel's owner flag; the table goes with the process.
    let mut d = live_daemon(&c, &dir, api_port, metrics, &["--persist=false"]);
    wait_ready(&c, &d, metrics, "--persist=false");
    assert!(
        poll_until(Duration::from_secs(10), || table(&c)
            .is_some_and(|t| t.contains("flags owner"))),
        "{:?}",
        table(&c)
    );
    assert_eq!(d.stop_with(libc::SIGKILL), None);
    assert!(
        poll_until(Duration::from_secs(5), || table(&c).is_none()),
        "--persist=false table outlived the process"
    );
}

/// A NetworkPolicy nftkit cannot convert refuses the whole update: the last good rules
/// keep enforcing (a valid change in the same update is not applied either: never a
/// partial view), /readyz says 503, the gauge counts the object and the log names it.
/// Fixing it applies everything.
#[test]
fn live_unconvertible_policy_keeps_the_last_good_rules() {
    let c = Cluster::new();
    let dir = TempDir::new("live");
    let api_port = free_port(&c.node);
    let metrics = free_port(&c.node);
    let api = FakeApi::start_at(&c.node, api_port);
    let mut policies = ingress_policies();
    serve(&api, &c.manifest(&policies));
    let d = live_daemon(&c, &dir, api_port, metrics, &[]);
    wait_ready(&c, &d, metrics, "start");
    let gauge = "nftkit_netpol_unconvertible_objects{";
    assert_eq!(metric(&c.node, metrics, gauge), Some(0.0));
    let good = [
        tcp(Pod("shop/web"), "shop/db", 5432, true),
        tcp(Pod("shop/other"), "shop/db", 5432, false),
        tcp(Remote(EXT_IN), "shop/db", 30005, true),
    ];
    c.check("good", &good);
    let before = table(&c).expect("table");

    // One valid change (db-allow no longer admits web on 5432) and one policy that
    // cannot be converted (a /33).
    policies[0]["spec"]["ingress"][0]["from"] =
        json!([{"podSelector": {"matchLabels": {"app": "nobody"}}}]);
    api.apply("networkpolicies", policies[0].clone());
    let mut lockdown = policy(
        "shop",
        "db-lockdown",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"ipBlock": {"cidr": "192.0.2.0/33"}}]}]}),
    );
    api.apply("networkpolicies", lockdown.clone());
    if !poll_until(Duration::from_secs(20), || {
        readyz(&c.node, metrics) == 503 && metric(&c.node, metrics, gauge) == Some(1.0)
    }) {
        panic!("still ready:\n{}", plain(&d.log()));
    }
    thread::sleep(Duration::from_millis(500));
    let log = plain(&d.log());
    assert!(
        log.lines().any(|l| l.contains("update refused")
            && l.contains("networkpolicies shop/db-lockdown")
            && l.contains("192.0.2.0/33")),
        "{log}"
    );
    assert_eq!(table(&c).as_deref(), Some(before.as_str()), "table changed");
    c.check("refused update", &good);

    // Fixed: everything applies, ready again.
    lockdown["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"] = json!("192.0.2.0/25");
    api.apply("networkpolicies", lockdown);
    wait_ready(&c, &d, metrics, "fixed");
    assert_eq!(metric(&c.node, metrics, gauge), Some(0.0));
    c.check(
        "fixed",
        &[
            tcp(Pod("shop/web"), "shop/db", 5432, false),
            tcp(Remote(EXT_IN), "shop/db", 5432, true),
            tcp(Remote(EXT_EXCEPT), "shop/db", 5432, false),
        ],
    );
}

/// Issue "see what the policies do", counters: every policy's allows count into its own
/// kernel counter and every isolation drop into its namespace's default-deny counter;
/// `/metrics` shows them per policy (never per pod), they count the real packets sent,
/// and a whole-table replacement (a policy added) neither loses nor resets them on
/// `/metrics`, although the kernel's counters start again at zero.
#[test]
fn live_policy_counters_count_real_packets_and_survive_an_update() {
    let c = Cluster::new();
    let dir = TempDir::new("live");
    let api_port = free_port(&c.node);
    let metrics = free_port(&c.node);
    let api = FakeApi::start_at(&c.node, api_port);
    let policies = ingress_policies();
    serve(&api, &c.manifest(&policies));
    let d = live_daemon(&c, &dir, api_port, metrics, &[]);
    wait_ready(&c, &d, metrics, "start");
    let allowed = "nftkit_netpol_packets_total{table=\"nftkit-netpol\",kind=\"NetworkPolicy\",\
                   namespace=\"shop\",policy=\"db-allow\",direction=\"ingress\",verdict=\"accept\"}";
    let denied = "nftkit_netpol_packets_total{table=\"nftkit-netpol\",kind=\"default-deny\",\
                  namespace=\"shop\",policy=\"\",direction=\"ingress\",verdict=\"drop\"}";
    let bytes = "nftkit_netpol_bytes_total{table=\"nftkit-netpol\",kind=\"NetworkPolicy\",\
                 namespace=\"shop\",policy=\"db-allow\",direction=\"ingress\",verdict=\"accept\"}";
    let at_least = |prefix: &str, n: f64| {
        poll_until(Duration::from_secs(10), || {
            metric(&c.node, metrics, prefix).is_some_and(|v| v >= n)
        })
    };
    // Each allowed connection passes the policy's rule with its first packet only (the
    // rest are established); a refused one is dropped at least once (SYN).
    for _ in 0..5 {
        c.check("allowed", &[tcp(Pod("shop/web"), "shop/db", 5432, true)]);
    }
    c.check("denied", &[tcp(Pod("shop/other"), "shop/db", 5432, false)]);
    assert!(at_least(allowed, 5.0), "{}", scrape(&c, metrics));
    assert!(at_least(denied, 1.0), "{}", scrape(&c, metrics));
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        metric(&c.node, metrics, allowed),
        Some(5.0),
        "{}",
        scrape(&c, metrics)
    );
    assert!(metric(&c.node, metrics, bytes).is_some_and(|b| b >= 5.0 * 40.0));
    let body = scrape(&c, metrics);
    assert!(
        !body.contains("10.244.") && !body.contains("pod="),
        "labels never name a pod or an address:\n{body}"
    );

    // A new policy: one whole-table replacement. The kernel's counter restarts at zero,
    // /metrics keeps counting from where it was.
    let mut more = policies.clone();
    more.push(policy(
        "shop",
        "db-from-ext",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}]}]}),
    ));
    api.apply("networkpolicies", more.last().unwrap().clone());
    assert!(
        poll_until(Duration::from_secs(20), || table(&c)
            .is_some_and(|t| t.contains("db-from-ext"))),
        "update not applied:\n{}",
        plain(&d.log())
    );
    let kernel = c.node.nft(&[
        "list",
        "counter",
        "inet",
        "nftkit-netpol",
        "ingress/shop/db-allow",
    ]);
    assert!(kernel.stdout.contains("packets 0 "), "{kernel}");
    for _ in 0..3 {
        c.check(
            "after update",
            &[tcp(Pod("shop/web"), "shop/db", 5432, true)],
        );
    }
    assert!(at_least(allowed, 8.0), "{}", scrape(&c, metrics));
    thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        metric(&c.node, metrics, allowed),
        Some(8.0),
        "{}",
        scrape(&c, metrics)
    );
}

fn scrape(c: &Cluster, metrics: u16) -> String {
    http_get(&c.node, metrics, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The verdict events of a daemon's log (target nftkit::verdict), one line each.
fn verdicts(d: &NftkitDaemon) -> Vec<String> {
    plain(&d.log())
        .lines()
        .filter(|l| l.contains(" verdict ") && l.contains("tier=NetworkPolicy"))
        .map(str::to_string)
        .collect()
}

/// Issue "see what the policies do", verdict logs: with `--log-verdicts drops` a refused
/// packet is one event naming the pods, the flow and the default deny; an allowed
/// connection is not logged; a flood of 10 000 refused packets is cut to about
/// `--log-rate` events a second in the kernel. With `all` the allowed connection is
/// logged naming the policy and rule that admitted it.
#[test]
fn live_verdict_logs_name_the_decision_and_are_rate_limited() {
    let c = Cluster::new();
    let dir = TempDir::new("live");
    let api_port = free_port(&c.node);
    let metrics = free_port(&c.node);
    let api = FakeApi::start_at(&c.node, api_port);
    serve(&api, &c.manifest(&ingress_policies()));
    let flags = [
        "--log-verdicts",
        "drops",
        "--log-rate",
        "50",
        "--log-group",
        "77",
    ];
    let mut d = live_daemon(&c, &dir, api_port, metrics, &flags);
    wait_ready(&c, &d, metrics, "drops");
    let db = c.ip("shop/db");
    let other = c.ip("shop/other");

    c.check("refused", &[udp(Pod("shop/other"), "shop/db", false)]);
    c.check("allowed", &[tcp(Pod("shop/web"), "shop/db", 5432, true)]);
    assert!(
        poll_until(Duration::from_secs(5), || !verdicts(&d).is_empty()),
        "no verdict logged:\n{}",
        plain(&d.log())
    );
    thread::sleep(Duration::from_millis(500));
    let events = verdicts(&d);
    assert_eq!(
        events.len(),
        1,
        "one refused datagram, one event:\n{events:#?}"
    );
    let e = &events[0];
    for want in [
        "verdict=drop".to_string(),
        "direction=ingress".into(),
        "protocol=udp".into(),
        format!("src={other}"),
        format!("dst={db}"),
        format!("dport={UDP_PORT}"),
        "pod=shop/db".into(),
        "peer_pod=shop/other".into(),
        "kind=default-deny".into(),
        "namespace=shop".into(),
    ] {
        assert!(e.contains(&want), "{want} missing in {e}");
    }

    // 10 000 refused datagrams at once: the kernel logs about --log-rate a second.
    let started = std::time::Instant::now();
    let flood = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for _ in range(10000):\n    s.sendto(b'x', ('{db}', {UDP_PORT}))\n"
    );
    let out = c
        .ns("shop/other")
        .cmd(&["python3", "-c", &flood])
        .timeout(Duration::from_secs(30))
        .run();
    assert!(out.success(), "{out}");
    let seconds = started.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(1500));
    let logged = verdicts(&d).len() - 1;
    let most = (50.0 * (seconds + 1.5) + 10.0) as usize;
    assert!(
        (1..=most).contains(&logged),
        "{logged} events for 10 000 packets in {seconds:.2} s at 50/s"
    );

    // Every verdict: the allowed connection names its policy and rule.
    assert_eq!(d.stop(), Some(0));
    let flags = ["--log-verdicts", "all", "--log-group", "77"];
    let d = live_daemon(&c, &dir, api_port, metrics, &flags);
    wait_ready(&c, &d, metrics, "all");
    c.check(
        "allowed, all",
        &[tcp(Pod("shop/web"), "shop/db", 5432, true)],
    );
    assert!(
        poll_until(Duration::from_secs(5), || verdicts(&d)
            .iter()
            .any(|l| l.contains("verdict=accept"))),
        "accept not logged:\n{}",
        plain(&d.log())
    );
    let accepted: Vec<String> = verdicts(&d)
        .into_iter()
        .filter(|l| l.contains("verdict=accept"))
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    for want in [
        "kind=NetworkPolicy",
        "policy=shop/db-allow",
        "rule=0",
        "dport=5432",
        "pod=shop/db",
        "peer_pod=shop/web",
    ] {
        assert!(
            accepted[0].contains(want),
            "{want} missing in {}",
            accepted[0]
        );
    }
}

/// Audit mode changes no packet's fate: what isolation would drop passes, is logged as
/// would-drop and counted with verdict would-drop; allowed traffic stays allowed.
#[test]
fn live_audit_mode_lets_packets_through_and_logs_would_drops() {
    let c = Cluster::new();
    let dir = TempDir::new("live");
    let api_port = free_port(&c.node);
    let metrics = free_port(&c.node);
    let api = FakeApi::start_at(&c.node, api_port);
    serve(&api, &c.manifest(&ingress_policies()));
    let d = live_daemon(
        &c,
        &dir,
        api_port,
        metrics,
        &["--audit", "--log-group", "78"],
    );
    wait_ready(&c, &d, metrics, "audit");
    c.check(
        "audit",
        &[
            udp(Pod("shop/other"), "shop/db", true),
            tcp(Pod("shop/other"), "shop/db", 5432, true),
            tcp(Pod("shop/web"), "shop/db", 5432, true),
        ],
    );
    assert!(
        poll_until(Duration::from_secs(5), || verdicts(&d)
            .iter()
            .filter(|l| l.contains("verdict=would-drop"))
            .count()
            >= 2),
        "would-drops not logged:\n{}",
        plain(&d.log())
    );
    assert!(
        verdicts(&d)
            .iter()
            .all(|l| l.contains("verdict=would-drop")),
        "only would-drops are logged in audit mode without --log-verdicts:\n{:#?}",
        verdicts(&d)
    );
    let would = "nftkit_netpol_packets_total{table=\"nftkit-netpol\",kind=\"default-deny\",\
                 namespace=\"shop\",policy=\"\",direction=\"ingress\",verdict=\"would-drop\"}";
    assert!(
        poll_until(Duration::from_secs(5), || metric(&c.node, metrics, would)
            .is_some_and(|v| v >= 2.0)),
        "{}",
        scrape(&c, metrics)
    );

    // One policy in audit mode (annotation), no --audit: shop/other, isolated only by
    // that policy, lets the refused traffic through as would-drops; shop/db, isolated
    // by an enforcing policy too, still drops it.
    let mut d = d;
    assert_eq!(d.stop(), Some(0));
    let mut policies = ingress_policies();
    policies[1]["metadata"]["annotations"] = json!({"nftkit.io/audit": "true"});
    api.apply("networkpolicies", policies[1].clone());
    let d = live_daemon(&c, &dir, api_port, metrics, &["--log-group", "78"]);
    wait_ready(&c, &d, metrics, "annotation");
    c.check(
        "annotated",
        &[
            tcp(Pod("shop/web"), "shop/other", 80, true),
            tcp(Pod("shop/other"), "shop/db", 5432, false),
            tcp(Pod("shop/web"), "shop/db", 5432, true),
        ],
    );
    assert!(
        poll_until(Duration::from_secs(5), || verdicts(&d).iter().any(|l| l
            .contains("verdict=would-drop")
            && l.contains("pod=shop/other"))),
        "the annotated policy's would-drop is not logged:\n{}",
        plain(&d.log())
    );
}

/// `--from-file F --watch`: a daemon without an API server. A changed file (replaced by
/// rename) is applied; a file that does not read keeps the last good rules, byte for byte,
/// and reports not ready until it is fixed; verdict logs and counters work as in live mode.
#[test]
fn file_watch_applies_changes_and_keeps_the_last_good_rules_on_a_bad_file() {
    let c = Cluster::new();
    let dir = TempDir::new("watch");
    let metrics = free_port(&c.node);
    let file = dir.0.join("cluster.json");
    let write = |text: String| {
        let tmp = dir.0.join("next.json");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    let mut policies = ingress_policies();
    write(c.manifest(&policies).to_string());
    let args: Vec<String> = [
        "--metrics-addr",
        &metrics.to_string(),
        "netpol",
        "--node-name",
        NODE,
        "--from-file",
        &file.display().to_string(),
        "--watch",
        "--debounce",
        "100ms",
        "--log-verdicts",
        "drops",
        "--log-group",
        "79",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let d = NftkitDaemon::start(&c.node, &args);
    wait_ready(&c, &d, metrics, "file");
    let isolated = [
        tcp(Pod("shop/web"), "shop/other", 80, false),
        tcp(Pod("shop/web"), "shop/db", 5432, true),
    ];
    c.check("from the file", &isolated);
    assert!(
        poll_until(Duration::from_secs(5), || {
            verdicts(&d)
                .iter()
                .any(|l| l.contains("verdict=drop") && l.contains("pod=shop/other"))
        }),
        "the refused connection is logged without an API server:\n{}",
        plain(&d.log())
    );
    let dropped = "nftkit_netpol_packets_total{table=\"nftkit-netpol\",kind=\"default-deny\",\
                   namespace=\"shop\",policy=\"\",direction=\"ingress\",verdict=\"drop\"}";
    assert!(
        poll_until(Duration::from_secs(5), || metric(&c.node, metrics, dropped)
            .is_some_and(|v| v >= 1.0)),
        "{}",
        scrape(&c, metrics)
    );

    // The default deny goes: shop/other opens up.
    policies.remove(1);
    write(c.manifest(&policies).to_string());
    assert!(
        poll_until(Duration::from_secs(10), || table(&c)
            .is_some_and(|t| !t.contains("10.244.3.2 : goto"))),
        "change not applied:\n{}",
        plain(&d.log())
    );
    let open = [
        tcp(Pod("shop/web"), "shop/other", 80, true),
        tcp(Pod("shop/web"), "shop/db", 5432, true),
    ];
    c.check("changed file", &open);
    let good = table(&c).expect("table");

    // A file that does not read: refused, the rules stay, not ready; fixed: ready.
    write("{\"kind\": \"List\", \"items\": [{\"kind\": \"Nope\"}]}".into());
    assert!(
        poll_until(Duration::from_secs(10), || readyz(&c.node, metrics) == 503),
        "still ready:\n{}",
        plain(&d.log())
    );
    assert!(
        poll_until(Duration::from_secs(5), || plain(&d.log())
            .lines()
            .any(|l| l.contains("update refused") && l.contains("Nope"))),
        "{}",
        plain(&d.log())
    );
    assert_eq!(table(&c).as_deref(), Some(good.as_str()), "table changed");
    c.check("bad file", &open);
    write(c.manifest(&policies).to_string());
    wait_ready(&c, &d, metrics, "fixed file");
    assert_eq!(table(&c).as_deref(), Some(good.as_str()));
}

/// `--log-format json`: each verdict is one JSON object on its own line, the fields under
/// `fields` as tracing writes them.
#[test]
fn live_verdict_logs_in_json_are_one_object_per_line() {
    let c = Cluster::new();
    let dir = TempDir::new("live");
    let api_port = free_port(&c.node);
    let metrics = free_port(&c.node);
    let api = FakeApi::start_at(&c.node, api_port);
    serve(&api, &c.manifest(&ingress_policies()));
    let flags = [
        "--log-verdicts",
        "drops",
        "--log-group",
        "80",
        "--log-format",
        "json",
    ];
    let d = live_daemon(&c, &dir, api_port, metrics, &flags);
    wait_ready(&c, &d, metrics, "json");
    c.check("refused", &[udp(Pod("shop/other"), "shop/db", false)]);
    let events = || -> Vec<Value> {
        d.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["target"] == "nftkit::verdict")
            .collect()
    };
    assert!(
        poll_until(Duration::from_secs(5), || !events().is_empty()),
        "no JSON verdict:\n{}",
        d.log()
    );
    thread::sleep(Duration::from_millis(300));
    let all = events();
    assert_eq!(all.len(), 1, "{all:#?}");
    let f = &all[0]["fields"];
    assert_eq!(f["verdict"], "drop", "{f}");
    assert_eq!(f["direction"], "ingress", "{f}");
    assert_eq!(f["pod"], "shop/db", "{f}");
    assert_eq!(f["peer_pod"], "shop/other", "{f}");
    assert_eq!(f["kind"], "default-deny", "{f}");
    assert_eq!(f["dport"], UDP_PORT.to_string(), "{f}");
    // Every line of the log is JSON.
    for line in d.log().lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
}

/// An Admin ClusterNetworkPolicy beside the NetworkPolicies: its Deny drops real packets
/// (even where a NetworkPolicy allows), its named counter counts them, and `netpol
/// explain` names it.
#[test]
fn cluster_policy_denies_counts_and_is_explained() {
    let c = Cluster::new();
    let mut policies = ingress_policies();
    policies.push(json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
        "kind": "ClusterNetworkPolicy", "metadata": {"name": "no-web-to-db"},
        "spec": {"tier": "Admin", "priority": 5,
            "subject": {"pods": {"namespaceSelector": {"matchLabels": {"team": "shop"}},
                                 "podSelector": {"matchLabels": {"app": "db"}}}},
            "ingress": [{"name": "web", "action": "Deny",
                "from": [{"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}}],
                "protocols": [{"tcp": {"destinationPort": {"number": 5432}}}]}]}}));
    c.apply(&policies);
    c.check(
        "admin deny",
        &[
            // db-allow lets web in on 5432; the Admin tier's Deny comes first.
            tcp(Pod("shop/web"), "shop/db", 5432, false),
            // web-remote (node-2) is an app=web peer too.
            tcp(Remote(WEB_REMOTE), "shop/db", 5432, false),
            // What the Deny does not match, the NetworkPolicies still decide.
            tcp(Pod("ops/monitor"), "shop/db", 8080, true),
            tcp(Pod("shop/other"), "shop/db", 5432, false),
        ],
    );
    let counter = c.node.nft(&[
        "list",
        "counter",
        "inet",
        "nftkit-netpol",
        "ingress/Admin/no-web-to-db/Deny",
    ]);
    assert!(
        counter.stdout.contains("packets") && !counter.stdout.contains("packets 0 "),
        "{counter}"
    );
    let f = c.file.display().to_string();
    let out = c.node.nftkit(
        &[("NODE_NAME", NODE)],
        &[
            "netpol",
            "explain",
            "--from-file",
            &f,
            "--from",
            "shop/web",
            "--to",
            "shop/db",
            "--port",
            "5432",
        ],
    );
    assert_eq!(out.code, Some(4), "{out}");
    assert!(
        out.stdout
            .contains("denied by ClusterNetworkPolicy no-web-to-db (admin tier) rule 0"),
        "{out}"
    );

    // Verdict logs name the ClusterNetworkPolicy and its rule.
    let d = NftkitDaemon::start(
        &c.node,
        &[
            "netpol",
            "--node-name",
            NODE,
            "--from-file",
            &f,
            "--watch",
            "--log-verdicts",
            "drops",
            "--log-group",
            "81",
        ],
    );
    let logged = || {
        plain(&d.log()).lines().any(|l| {
            l.contains(" verdict ")
                && l.contains("kind=ClusterNetworkPolicy")
                && l.contains("tier=Admin")
                && l.contains("policy=no-web-to-db")
                && l.contains("rule=0")
                && l.contains("verdict=drop")
                && l.contains("pod=shop/db")
        })
    };
    // Probe until the daemon's log reader is up (its table is the same: nothing sent).
    assert!(
        poll_until(Duration::from_secs(15), || {
            c.check(
                "logged deny",
                &[tcp(Pod("shop/web"), "shop/db", 5432, false)],
            );
            logged()
        }),
        "no verdict naming the ClusterNetworkPolicy:\n{}",
        plain(&d.log())
    );
}
