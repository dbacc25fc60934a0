//! The conformance cluster on one node: a "node" namespace routing (ip_forward on) between
//! eight pod namespaces (the four StatefulSets of upstream's `conformance/base/manifests.yaml`,
//! two replicas each, all with `spec.nodeName: node-1`) and one "external" namespace
//! (192.0.2.10, TEST-NET-1) standing for addresses outside the cluster. Both ends of every
//! pod-to-pod connection are local pods, so the node's forward hook enforces the client's
//! egress and the server's ingress.
//!
//! Every pod serves what upstream's agnhost containers serve: TCP 80 (`web`) and 8080, UDP
//! 53 (`dns`) and 5353, each answering/recording with `<pod>:<port>`; SCTP 9003 and 9005
//! (socat) only where this kernel has SCTP in a namespace ([`sctp_support`]).
//!
//! What each probe checks, and how:
//! - TCP and UDP: always a real packet through the node's forward hook ([`Cluster::poke`]).
//! - SCTP where [`sctp_support`] is `Ok`: a real packet too (socat SCTP4).
//! - SCTP where it is `Err` (no SCTP in a namespace on this kernel): a **model** probe
//!   ([`Run::explain`]): `nftkit netpol explain --from-file FILE --node-name node-1
//!   --from NS/POD --to NS/POD --port PORT/sctp --json`, run in the node namespace against the
//!   very file the phase applied. It sends no packet: it runs the compiled ruleset through
//!   nftkit's nf_tables evaluator, so it checks the compiled SCTP rules (l4proto 132,
//!   dport) but not the kernel's handling of them. Exit 0 (decision `allow`) means allowed,
//!   exit 4 (decision `deny`) blocked; anything else is a mismatch. Its expectation is
//!   asserted exactly like a packet probe's, and its results read `[model] sctp ...` in the
//!   log and in the failure report, so they are never mistaken for packet results.
//!
//! [`Run`] is the API server of one upstream test: the policy objects it starts from
//! (built in [`super::policies`]), mutated in memory the way the upstream test patches
//! them, written as one kubectl List (namespaces, pods, policies) and applied with
//! `nftkit netpol --from-file` (then `nftkit verify netpol`) before the next probes.
//! Probes of one step run in parallel, each bounded; a mismatch is probed once more
//! (upstream's PokeServer polls too), and every mismatch of every phase is reported at
//! the end, with the ruleset that was loaded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;

pub const NODE: &str = "node-1";
pub const NS_PREFIX: &str = "network-policy-conformance-";
/// (house, StatefulSet), in manifests.yaml order.
pub const HOUSES: &[(&str, &str)] = &[
    ("gryffindor", "harry-potter"),
    ("slytherin", "draco-malfoy"),
    ("hufflepuff", "cedric-diggory"),
    ("ravenclaw", "luna-lovegood"),
];
/// The fifth namespace; its StatefulSet (centaur) is host-network (a templated
/// experimental fixture), so it has no pods here.
pub const EMPTY_HOUSE: &str = "forbidden-forrest";
pub const TCP_PORTS: [u16; 2] = [80, 8080];
pub const UDP_PORTS: [u16; 2] = [53, 5353];
pub const SCTP_PORTS: [u16; 2] = [9003, 9005];
/// The address on the external namespace (probe target `"external"`).
pub const EXTERNAL: &str = "192.0.2.10";

const TCP_CONNECT_TIMEOUT: &str = "connect-timeout=1";
const UDP_WAIT: Duration = Duration::from_millis(1500);

pub struct Pod {
    pub name: String,
    pub house: &'static str,
    pub sts: &'static str,
    pub ip: String,
    pub netns: Netns,
}

impl Pod {
    pub fn namespace(&self) -> String {
        format!("{NS_PREFIX}{}", self.house)
    }
}

/// Whether SCTP works inside a network namespace here (socat SCTP-LISTEN and connect over
/// lo); checked once. `Err` holds the reason why SCTP probes are answered by the model
/// ([`Run::explain`]) instead of a packet.
pub fn sctp_support() -> &'static Result<(), String> {
    static S: OnceLock<Result<(), String>> = OnceLock::new();
    S.get_or_init(|| {
        let modprobe = run(&["modprobe", "sctp"]);
        let ns = Netns::new();
        let server = SctpServer::start(&ns, 9003, "sctp-check");
        thread::sleep(Duration::from_millis(300));
        let out = ns
            .cmd(&[
                "timeout",
                "3",
                "socat",
                "-T1",
                "-",
                "SCTP4:127.0.0.1:9003,connect-timeout=1",
            ])
            .timeout(Duration::from_secs(5))
            .run();
        drop(server);
        if answered_tag(&out).as_deref() == Some("sctp-check") {
            Ok(())
        } else {
            Err(format!(
                "SCTP unusable in a network namespace on this kernel: `modprobe sctp`: {}; \
                 `socat SCTP4:127.0.0.1:9003` against `socat SCTP4-LISTEN`: {}",
                if modprobe.success() {
                    "ok".to_string()
                } else {
                    modprobe.stderr.trim().to_string()
                },
                out.stderr.trim()
            ))
        }
    })
}

/// `socat SCTP4-LISTEN:PORT,fork EXEC:echo TAG` in a namespace; SIGTERM on drop.
struct SctpServer(Child);

impl SctpServer {
    fn start(ns: &Netns, port: u16, tag: &str) -> SctpServer {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "timeout", "600", "socat"])
            .arg(format!("SCTP4-LISTEN:{port},fork,reuseaddr"))
            .arg(format!("EXEC:echo {tag}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn socat SCTP server");
        SctpServer(child)
    }
}

impl Drop for SctpServer {
    fn drop(&mut self) {
        // SIGTERM: `timeout` passes it on to socat (SIGKILL would orphan socat).
        // SAFETY: kill(2) of our own child process.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

pub struct Cluster {
    pub node: Netns,
    _external: Netns,
    pub pods: Vec<Pod>,
    _tcp: Vec<TcpServer>,
    udp: BTreeMap<String, UdpServer>,
    _sctp: Vec<SctpServer>,
}

impl Cluster {
    pub fn new() -> Cluster {
        require_root();
        let sctp = sctp_support().is_ok();
        let node = Netns::new();
        node.must(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        let external = Netns::new();
        veth(&node, "ext", &external, "eth0");
        addr_add(&node, "ext", "10.255.0.1/30");
        addr_add(&external, "eth0", "10.255.0.2/30");
        addr_add(&external, "eth0", &format!("{EXTERNAL}/32"));
        external.must(&["ip", "route", "add", "default", "via", "10.255.0.1"]);
        route_add(&node, "192.0.2.0/24", "10.255.0.2");
        let mut tcp = vec![tcp_servers(&external, "external")];
        let mut udp = BTreeMap::new();
        udp.insert(EXTERNAL.to_string(), udp_servers(&external, "external"));
        let mut sctp_servers = Vec::new();
        let mut pods = Vec::new();
        for (house, sts) in HOUSES {
            for k in 0..2 {
                let i = pods.len() + 1;
                let name = format!("{sts}-{k}");
                let ns = Netns::new();
                let dev = format!("p{i}");
                let ip = format!("10.244.{i}.2");
                veth(&node, &dev, &ns, "eth0");
                addr_add(&node, &dev, &format!("10.244.{i}.1/24"));
                addr_add(&ns, "eth0", &format!("{ip}/24"));
                route_add(&ns, "default", &format!("10.244.{i}.1"));
                tcp.push(tcp_servers(&ns, &name));
                udp.insert(ip.clone(), udp_servers(&ns, &name));
                if sctp {
                    for port in SCTP_PORTS {
                        sctp_servers.push(SctpServer::start(&ns, port, &format!("{name}:{port}")));
                    }
                }
                pods.push(Pod {
                    name,
                    house,
                    sts,
                    ip,
                    netns: ns,
                });
            }
        }
        Cluster {
            node,
            _external: external,
            pods,
            _tcp: tcp,
            udp,
            _sctp: sctp_servers,
        }
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// A probe target's address: a pod's IP, or [`EXTERNAL`] for `"external"`.
    pub fn ip_of(&self, target: &str) -> String {
        if target == "external" {
            EXTERNAL.to_string()
        } else {
            self.pod(target).ip.clone()
        }
    }

    /// One poke: `Ok(true)` if the right server answered (TCP, SCTP) or received the
    /// datagram (UDP), `Ok(false)` if nothing came through, `Err` if another server did.
    pub fn poke(&self, p: &P, tag: &str) -> Result<bool, String> {
        let from = &self.pod(p.from).netns;
        let dst = self.ip_of(p.to);
        let want_tag = format!("{}:{}", p.to, p.port);
        let got = match p.proto {
            "tcp" | "sctp" => {
                let addr = if p.proto == "tcp" {
                    format!("TCP4:{dst}:{},{TCP_CONNECT_TIMEOUT}", p.port)
                } else {
                    format!("SCTP4:{dst}:{},{TCP_CONNECT_TIMEOUT}", p.port)
                };
                let out = from
                    .cmd(&["timeout", "3", "socat", "-T2", "-t2", "-", &addr])
                    .timeout(Duration::from_secs(5))
                    .run();
                answered_tag(&out)
            }
            "udp" => {
                let out = from
                    .cmd(&[
                        "timeout",
                        "2",
                        "socat",
                        "-u",
                        "-",
                        &format!("UDP4:{dst}:{}", p.port),
                    ])
                    .stdin(format!("{tag}\n"))
                    .timeout(Duration::from_secs(4))
                    .run();
                if !out.success() {
                    return Err(format!("udp send failed: {out}"));
                }
                self.udp[&dst].wait_for(tag, UDP_WAIT)
            }
            other => panic!("unknown protocol {other}"),
        };
        match got {
            None => Ok(false),
            Some(t) if t == want_tag => Ok(true),
            Some(t) => Err(format!("answered by {t}, not {want_tag}")),
        }
    }

    fn namespace_obj(name: &str, labels: &BTreeMap<String, String>) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels}})
    }

    /// A Pod as `kubectl get -o yaml` shows it: labels, node, IPs and upstream's containers
    /// (the named ports `web` TCP 80 and `dns` UDP 53).
    fn pod_obj(p: &Pod) -> Value {
        let sts = p.sts;
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.namespace(),
                "labels": {"conformance-house": p.house}},
            "spec": {"nodeName": NODE, "containers": [
                {"name": format!("{sts}-client"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"},
                {"name": format!("{sts}-80"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45",
                 "ports": [{"containerPort": 80, "protocol": "TCP", "name": "web"}]},
                {"name": format!("{sts}-8080"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"},
                {"name": format!("{sts}-5353"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"},
                {"name": format!("{sts}-53"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45",
                 "ports": [{"containerPort": 53, "protocol": "UDP", "name": "dns"}]},
                {"name": format!("{sts}-9003"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"},
                {"name": format!("{sts}-9005"), "image": "registry.k8s.io/e2e-test-images/agnhost:2.45"}
            ]},
            "status": {"phase": "Running", "podIP": p.ip, "podIPs": [{"ip": p.ip}]}})
    }
}

fn tcp_servers(ns: &Netns, name: &str) -> TcpServer {
    let tags: Vec<String> = TCP_PORTS.iter().map(|p| format!("{name}:{p}")).collect();
    let l: Vec<_> = TCP_PORTS
        .iter()
        .zip(&tags)
        .map(|(p, t)| (sa("0.0.0.0", *p), t.as_str()))
        .collect();
    TcpServer::start(ns, &l)
}

fn udp_servers(ns: &Netns, name: &str) -> UdpServer {
    let tags: Vec<String> = UDP_PORTS.iter().map(|p| format!("{name}:{p}")).collect();
    let l: Vec<_> = UDP_PORTS
        .iter()
        .zip(&tags)
        .map(|(p, t)| (sa("0.0.0.0", *p), t.as_str()))
        .collect();
    UdpServer::start(ns, &l)
}

/// One upstream `PokeServer(clientNamespace, clientPod, protocol, serverIP, port, expect)`:
/// `to` is the server pod's name (or `"external"`).
#[derive(Clone, Copy, Debug)]
pub struct P {
    pub from: &'static str,
    pub proto: &'static str,
    pub to: &'static str,
    pub port: u16,
    pub want: bool,
}

pub fn p(from: &'static str, proto: &'static str, to: &'static str, port: u16, want: bool) -> P {
    P {
        from,
        proto,
        to,
        port,
        want,
    }
}

fn verdict(allowed: bool) -> &'static str {
    if allowed { "allowed" } else { "blocked" }
}

/// One upstream conformance test against one cluster: its objects, mutated as the test
/// patches them, and the mismatches seen so far.
pub struct Run {
    pub c: Cluster,
    test: &'static str,
    objects: Vec<Value>,
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
    dirty: bool,
    phase: String,
    failures: Vec<String>,
    rulesets: Vec<String>,
    /// Probes answered by a real packet.
    probed: usize,
    /// SCTP probes answered by the model (`nftkit netpol explain`) for want of kernel SCTP.
    modelled: usize,
    file: PathBuf,
}

impl Run {
    /// `objects`: the policies the test starts from ([`super::policies`]).
    pub fn new(test: &'static str, objects: Vec<Value>) -> Run {
        let c = Cluster::new();
        let mut ns_labels = BTreeMap::new();
        for house in HOUSES.iter().map(|h| h.0).chain([EMPTY_HOUSE]) {
            let name = format!("{NS_PREFIX}{house}");
            ns_labels.insert(
                name.clone(),
                BTreeMap::from([("conformance-house".to_string(), house.to_string())]),
            );
        }
        let file = std::env::temp_dir().join(format!("{}-cnp-{test}.yaml", unique_name()));
        Run {
            c,
            test,
            objects,
            ns_labels,
            dirty: true,
            phase: "(setup)".into(),
            failures: Vec::new(),
            rulesets: Vec::new(),
            probed: 0,
            modelled: 0,
            file,
        }
    }

    /// Starts an upstream subtest (`t.Run(desc, ...)`).
    pub fn phase(&mut self, desc: &str) {
        eprintln!("[{}] phase: {desc}", self.test);
        self.phase = desc.to_string();
    }

    fn object(&mut self, kind: &str, name: &str) -> &mut Value {
        self.dirty = true;
        self.objects
            .iter_mut()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    }

    fn rules(&mut self, cnp: &str, dir: &str) -> &mut Vec<Value> {
        match &mut self.object("ClusterNetworkPolicy", cnp)["spec"][dir] {
            Value::Array(a) => a,
            other => panic!("{cnp} has no {dir} rules: {other}"),
        }
    }

    /// `mutate.Spec.<Dir>[i], mutate.Spec.<Dir>[j] = [j], [i]`.
    pub fn swap(&mut self, cnp: &str, dir: &str, i: usize, j: usize) {
        self.rules(cnp, dir).swap(i, j);
    }

    /// `mutate.Spec.<Dir>[i].Action = action`.
    pub fn set_action(&mut self, cnp: &str, dir: &str, i: usize, action: &str) {
        self.rules(cnp, dir)[i]["action"] = json!(action);
    }

    /// `mutate.Spec.Priority = priority`.
    pub fn set_priority(&mut self, cnp: &str, priority: u32) {
        self.object("ClusterNetworkPolicy", cnp)["spec"]["priority"] = json!(priority);
    }

    /// `namespace.SetLabels({"conformance-house": value})`: upstream replaces every label;
    /// the API server keeps `kubernetes.io/metadata.name` (added when the List is written).
    pub fn set_house_label(&mut self, namespace: &str, value: &str) {
        self.dirty = true;
        self.ns_labels.insert(
            namespace.to_string(),
            BTreeMap::from([("conformance-house".to_string(), value.to_string())]),
        );
    }

    /// `client.Delete(object)`.
    pub fn delete(&mut self, kind: &str, name: &str) {
        self.dirty = true;
        let before = self.objects.len();
        self.objects
            .retain(|o| !(o["kind"] == kind && o["metadata"]["name"] == name));
        assert_eq!(before, self.objects.len() + 1, "no {kind} {name} to delete");
    }

    /// Creates (or replaces) an object.
    pub fn put(&mut self, obj: Value) {
        self.dirty = true;
        self.objects
            .retain(|o| !(o["kind"] == obj["kind"] && o["metadata"] == obj["metadata"]));
        self.objects.push(obj);
    }

    /// Upstream's inline-CIDR step: a rule `networks: [<pod IP>/32, ...]` put first.
    pub fn prepend_egress_networks(&mut self, cnp: &str, rule: &str, action: &str, pods: &[&str]) {
        let nets: Vec<String> = pods
            .iter()
            .map(|n| format!("{}/32", self.c.pod(n).ip))
            .collect();
        let rule = json!({"name": rule, "action": action, "to": [{"networks": nets}]});
        self.rules(cnp, "egress").insert(0, rule);
    }

    fn manifest(&self) -> Value {
        let mut items: Vec<Value> = self
            .ns_labels
            .iter()
            .map(|(name, labels)| {
                let mut labels = labels.clone();
                labels.insert("kubernetes.io/metadata.name".into(), name.clone());
                Cluster::namespace_obj(name, &labels)
            })
            .collect();
        items.extend(self.c.pods.iter().map(Cluster::pod_obj));
        items.extend(self.objects.iter().cloned());
        json!({"apiVersion": "v1", "kind": "List", "items": items})
    }

    fn policies_yaml(&self) -> String {
        serde_norway::to_string(&self.objects).unwrap_or_default()
    }

    /// Writes the List and applies it (`nftkit netpol`, then `nftkit verify netpol`).
    fn apply(&mut self) {
        let yaml = serde_norway::to_string(&self.manifest()).expect("yaml");
        std::fs::write(&self.file, yaml).expect("write manifest");
        let f = self.file.display().to_string();
        for args in [
            vec!["netpol", "--from-file", &f],
            vec!["verify", "netpol", "--from-file", &f],
        ] {
            let out = self.c.node.nftkit(&[("NODE_NAME", NODE)], &args);
            if !out.success() {
                panic!(
                    "{} / \"{}\": `nftkit {}` failed\n{out}\n--- policies ---\n{}\n--- node ruleset ---\n{}{}",
                    self.test,
                    self.phase,
                    args.join(" "),
                    self.policies_yaml(),
                    self.c.node.ruleset(),
                    self.earlier_failures()
                );
            }
        }
        self.dirty = false;
    }

    fn earlier_failures(&self) -> String {
        if self.failures.is_empty() {
            String::new()
        } else {
            format!(
                "\n--- mismatches before that ---\n{}",
                self.failures.join("\n")
            )
        }
    }

    /// A model probe: what `nftkit netpol explain` (the compiled ruleset through nftkit's
    /// nf_tables evaluator, no packet) decides for `p` against the file the phase applied.
    /// `Ok(allowed)` when exit code and `decision` agree (0/`allow`, 4/`deny`), `Err` with
    /// explain's output otherwise.
    fn explain(&self, p: &P) -> Result<bool, String> {
        let from = self.c.pod(p.from);
        let from = format!("{}/{}", from.namespace(), from.name);
        let to = if p.to == "external" {
            EXTERNAL.to_string()
        } else {
            let to = self.c.pod(p.to);
            format!("{}/{}", to.namespace(), to.name)
        };
        let port = format!("{}/{}", p.port, p.proto);
        let f = self.file.display().to_string();
        let out = self.c.node.nftkit(
            &[("NODE_NAME", NODE)],
            &[
                "netpol",
                "explain",
                "--from-file",
                &f,
                "--node-name",
                NODE,
                "--from",
                &from,
                "--to",
                &to,
                "--port",
                &port,
                "--json",
            ],
        );
        let v: Option<Value> = serde_json::from_str(&out.stdout).ok();
        let decision = v.as_ref().map(|v| v["decision"].clone());
        match (out.code, decision) {
            (Some(0), Some(d)) if d == "allow" => Ok(true),
            (Some(4), Some(d)) if d == "deny" => Ok(false),
            _ => Err(format!("`nftkit netpol explain` failed:\n{out}")),
        }
    }

    /// Applies pending changes, then runs the probes in parallel: packets for TCP, UDP and
    /// (where [`sctp_support`] is `Ok`) SCTP, the model ([`Run::explain`]) for SCTP
    /// elsewhere.
    pub fn probe(&mut self, probes: &[P]) {
        if self.dirty {
            self.apply();
        }
        let sctp_ok = sctp_support().is_ok();
        let (run, model): (Vec<&P>, Vec<&P>) =
            probes.iter().partition(|p| p.proto != "sctp" || sctp_ok);
        self.probed += run.len();
        self.modelled += model.len();
        let this = &*self;
        let c = &self.c;
        let phase = &self.phase;
        // (probe, by the model?, result)
        let results: Vec<(P, bool, Result<bool, String>)> = thread::scope(|s| {
            let packets: Vec<_> = run
                .iter()
                .enumerate()
                .map(|(n, p)| {
                    s.spawn(move || {
                        let tag = format!("{}-{n}", unique_name());
                        let mut got = c.poke(p, &tag);
                        if got != Ok(p.want) {
                            // Upstream polls (require.Eventually); the last poke decides.
                            thread::sleep(Duration::from_millis(300));
                            got = c.poke(p, &format!("{tag}-again"));
                        }
                        (**p, false, got)
                    })
                })
                .collect();
            let models: Vec<_> = model
                .iter()
                .map(|p| s.spawn(move || (**p, true, this.explain(p))))
                .collect();
            packets
                .into_iter()
                .chain(models)
                .map(|h| h.join().expect("probe thread"))
                .collect()
        });
        let mut bad = 0;
        for (p, by_model, got) in results {
            let what = format!(
                "{} -> {} ({}) {}/{}",
                p.from,
                p.to,
                c.ip_of(p.to),
                p.proto,
                p.port
            );
            let what = if by_model {
                format!("[model] sctp {what}")
            } else {
                what
            };
            if by_model {
                eprintln!(
                    "[{}] {what}: expected {}, explain says {}",
                    self.test,
                    verdict(p.want),
                    match &got {
                        Ok(g) => verdict(*g),
                        Err(_) => "(error)",
                    }
                );
            }
            let got = match got {
                Ok(g) if g == p.want => continue,
                Ok(g) => verdict(g).to_string(),
                Err(e) => e,
            };
            bad += 1;
            self.failures.push(format!(
                "{} / \"{phase}\": {what}: expected {}, got {got}",
                self.test,
                verdict(p.want)
            ));
        }
        if bad > 0 {
            self.rulesets.push(format!(
                "--- node ruleset at \"{phase}\" ({bad} mismatches) ---\n{}--- policies ---\n{}",
                c.node.ruleset(),
                self.policies_yaml()
            ));
        }
    }

    /// Panics with every mismatch of every phase, and if nothing was checked at all.
    pub fn finish(self) {
        if self.modelled > 0 {
            eprintln!(
                "[{}] {} packet probes, {} [model] sctp probes (`nftkit netpol explain`, no \
                 packet): {}",
                self.test,
                self.probed,
                self.modelled,
                sctp_support()
                    .as_ref()
                    .err()
                    .map(String::as_str)
                    .unwrap_or("")
            );
        } else {
            eprintln!("[{}] {} packet probes", self.test, self.probed);
        }
        assert!(
            self.probed + self.modelled > 0,
            "{}: no probe ran (neither a packet nor a [model] probe): the test checks nothing",
            self.test
        );
        assert!(
            self.failures.is_empty(),
            "{}: {} probes disagree with upstream ({} packet, {} [model] sctp probes in all):\n{}\n{}",
            self.test,
            self.failures.len(),
            self.probed,
            self.modelled,
            self.failures.join("\n"),
            self.rulesets.join("\n")
        );
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}
