//! Pod churn is cheap: `netpol --from-file F --watch` updates only set elements when a
//! change touches nothing else (pods of other nodes added, deleted, relabelled into and
//! out of a policy's peers; namespaces relabelled), in one batch that `nft monitor` sees
//! as element events only; the table it ends with is the one a fresh one-shot apply of
//! the final manifest writes. Below it, the netlink backend's element batch itself:
//! interval ranges removed in the form they were added, lists longer than one message.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use nftkit::backend::netlink::NetlinkBackend;
use nftkit::backend::{Backend, Options};
use nftkit::model::delta::element_delta;
use nftkit::model::{Chain, Element, KeyType, Ruleset, Set, VerdictMap};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const TABLE: &str = "nftkit-netpol";
const UPDATED: &str = "netpol table updated";
const ELEMENTS_ONLY: &str = "netpol table updated (set elements only, one batch)";
const WHOLE: &str = "netpol table updated (whole-table replacement, one batch)";

fn pod(ns: &str, name: &str, labels: Value, node: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
}

fn namespace(name: &str, team: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {"team": team}}})
}

/// The cluster, as the churn changes it.
#[derive(Clone)]
struct State {
    /// (namespace, name, app label, node, ip)
    pods: Vec<(
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    )>,
    /// (namespace, team label)
    namespaces: Vec<(&'static str, &'static str)>,
    /// A third policy, isolating app=client pods: a change of structure.
    clients_isolated: bool,
}

impl State {
    fn initial() -> State {
        State {
            pods: vec![
                ("shop", "db", "db", NODE, "10.244.1.2"),
                ("shop", "web", "web", NODE, "10.244.1.3"),
                ("shop", "client-1", "client", "node-2", "10.244.100.6"),
                ("shop", "x-1", "none", "node-2", "10.244.100.5"),
                ("front", "f-1", "f", "node-2", "10.244.101.1"),
                ("other", "o-1", "o", "node-3", "10.244.102.1"),
            ],
            namespaces: vec![("shop", "shop"), ("front", "frontend"), ("other", "other")],
            clients_isolated: false,
        }
    }

    fn relabel_pod(&mut self, name: &str, app: &'static str) {
        self.pods.iter_mut().find(|p| p.1 == name).unwrap().2 = app;
    }

    fn relabel_ns(&mut self, name: &str, team: &'static str) {
        self.namespaces.iter_mut().find(|n| n.0 == name).unwrap().1 = team;
    }

    /// The kubectl List: namespaces, pods, and two policies on shop/db: from app=client
    /// pods of shop, and from every pod of team=frontend namespaces (peer sets that hold
    /// other nodes' pods).
    fn manifest(&self) -> String {
        let mut items: Vec<Value> = self
            .namespaces
            .iter()
            .map(|(n, t)| namespace(n, t))
            .collect();
        items.extend(
            self.pods
                .iter()
                .map(|(ns, n, app, node, ip)| pod(ns, n, json!({"app": app}), node, ip)),
        );
        let policy = |name: &str, from: Value| {
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": name, "namespace": "shop"},
                "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                         "policyTypes": ["Ingress"],
                         "ingress": [{"from": [from], "ports": [{"protocol": "TCP", "port": 5432}]}]}})
        };
        items.push(policy(
            "from-clients",
            json!({"podSelector": {"matchLabels": {"app": "client"}}}),
        ));
        items.push(policy(
            "from-frontend",
            json!({"namespaceSelector": {"matchLabels": {"team": "frontend"}}}),
        ));
        // And an Admin ClusterNetworkPolicy whose subject and peers follow the churn.
        items.push(json!({"apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy", "metadata": {"name": "no-ssh-from-other"},
            "spec": {"tier": "Admin", "priority": 10,
                "subject": {"namespaces": {"matchLabels": {"team": "shop"}}},
                "ingress": [{"action": "Deny",
                    "from": [{"namespaces": {"matchLabels": {"team": "other"}}}],
                    "protocols": [{"tcp": {"destinationPort": {"number": 22}}}]}]}}));
        if self.clients_isolated {
            items.push(
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "clients", "namespace": "shop"},
                "spec": {"podSelector": {"matchLabels": {"app": "client"}},
                         "policyTypes": ["Ingress"]}}),
            );
        }
        json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
    }
}

/// `nft -j list table inet nftkit-netpol`, without handles, set elements sorted, counter
/// values zeroed: what two applies of the same cluster must agree on.
fn normalised_table(ns: &Netns) -> Value {
    let out = ns.nft(&["-j", "list", "table", "inet", TABLE]);
    assert!(out.success(), "nft -j list table failed:\n{out}");
    let mut v = strip_json_key(&out.stdout, "handle");
    fn walk(v: &mut Value) {
        match v {
            Value::Array(a) => a.iter_mut().for_each(walk),
            Value::Object(m) => {
                if let Some(Value::Array(elem)) = m.get_mut("elem") {
                    elem.sort_by_key(|e| e.to_string());
                }
                for k in ["packets", "bytes"] {
                    if m.get(k).is_some_and(Value::is_number) {
                        m.insert(k.into(), json!(0));
                    }
                }
                m.values_mut().for_each(walk);
            }
            _ => {}
        }
    }
    walk(&mut v);
    // The metainfo entry names nft's version, the same for both.
    v
}

/// `nft monitor` in `ns` until stopped (bounded by `timeout`), its output in a file.
struct Monitor {
    child: std::process::Child,
    out: std::path::PathBuf,
}

impl Monitor {
    fn start(ns: &Netns) -> Monitor {
        let out = std::env::temp_dir().join(format!("{}-monitor.txt", unique_name()));
        let child = Command::new("ip")
            .args([
                "netns", "exec", &ns.name, "timeout", "120", "nft", "monitor",
            ])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("monitor output file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nft monitor");
        // Let it subscribe before anything is committed.
        std::thread::sleep(Duration::from_millis(700));
        Monitor { child, out }
    }

    /// Stop it (SIGTERM, which `timeout` passes on) and return what it printed.
    fn stop(mut self) -> String {
        // SAFETY: kill(2) of our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        text
    }
}

#[test]
#[ignore = "needs root: network namespaces"]
fn pod_churn_updates_set_elements_only_and_ends_as_a_fresh_apply() {
    require_root();
    let node = Netns::new();
    let dir = std::env::temp_dir().join(format!("{}-churn", unique_name()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("cluster.json");
    let write = |text: String| {
        let tmp = dir.join("next.json");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
    };
    let mut state = State::initial();
    write(state.manifest());
    let f = file.display().to_string();
    let args = [
        "--metrics-addr",
        "127.0.0.1:9464",
        "netpol",
        "--node-name",
        NODE,
        "--from-file",
        &f,
        "--watch",
        "--debounce",
        "100ms",
    ];
    let d = NftkitDaemon::start(&node, &args);
    d.wait_log(WHOLE, Duration::from_secs(20));

    let monitor = Monitor::start(&node);
    type Event = (&'static str, fn(&mut State));
    let events: Vec<Event> = vec![
        (
            "add a client pod on node-2 (merges with client-1's address)",
            |s| {
                s.pods
                    .push(("shop", "client-2", "client", "node-2", "10.244.100.7"))
            },
        ),
        ("delete client-1", |s| s.pods.retain(|p| p.1 != "client-1")),
        ("relabel x-1 into the clients", |s| {
            s.relabel_pod("x-1", "client")
        }),
        ("relabel client-2 out of the clients", |s| {
            s.relabel_pod("client-2", "gone")
        }),
        ("namespace other joins team frontend", |s| {
            s.relabel_ns("other", "frontend")
        }),
        ("namespace front leaves team frontend", |s| {
            s.relabel_ns("front", "backend")
        }),
        // Local pods: dispatched by the verdict maps to the chain of their policies, so
        // one with the policies of an existing pod is a map entry.
        ("a local pod like db comes", |s| {
            s.pods.push(("shop", "db-2", "db", NODE, "10.244.1.4"))
        }),
        ("local web relabelled to db (isolated now)", |s| {
            s.relabel_pod("web", "db")
        }),
        ("local db-2 relabelled out of the policies", |s| {
            s.relabel_pod("db-2", "cache")
        }),
        ("local web deleted", |s| s.pods.retain(|p| p.1 != "web")),
    ];
    for (what, change) in &events {
        let before = d.count(UPDATED);
        change(&mut state);
        write(state.manifest());
        assert!(
            poll_until(Duration::from_secs(15), || d.count(UPDATED) > before),
            "{what}: not applied:\n{}",
            d.log()
        );
    }
    let seen = monitor.stop();
    let log = d.log();
    for l in log.lines().filter(|l| l.contains(UPDATED)) {
        eprintln!("{l}");
    }
    assert_eq!(
        log.matches(ELEMENTS_ONLY).count(),
        events.len(),
        "every churn event goes as elements only:\n{log}"
    );
    assert_eq!(
        log.matches(WHOLE).count(),
        1,
        "only the first apply:\n{log}"
    );
    let changes: Vec<&str> = seen
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(
        changes
            .iter()
            .all(|l| l.starts_with("add element ") || l.starts_with("delete element ")),
        "nft monitor saw more than element events:\n{seen}"
    );
    assert!(
        changes.iter().any(|l| l.starts_with("delete element "))
            && changes.iter().any(|l| l.starts_with("add element ")),
        "nft monitor saw no element events:\n{seen}\n{log}"
    );
    let fresh = |state: &State| {
        let other = Netns::new();
        let final_file = dir.join("final.json");
        std::fs::write(&final_file, state.manifest()).unwrap();
        other.nftkit_ok(
            &[("NODE_NAME", NODE)],
            &["netpol", "--from-file", &final_file.display().to_string()],
        );
        normalised_table(&other)
    };
    assert_eq!(
        normalised_table(&node),
        fresh(&state),
        "the churned table differs from a fresh apply"
    );

    // A new policy isolating a local pod: a new chain, so a whole replacement, and the
    // same table either way.
    let before = d.count(UPDATED);
    let whole = d.count(WHOLE);
    state
        .pods
        .push(("shop", "db-3", "client", NODE, "10.244.1.5"));
    state.clients_isolated = true;
    write(state.manifest());
    assert!(
        poll_until(Duration::from_secs(15), || d.count(UPDATED) > before),
        "new combination: not applied:\n{}",
        d.log()
    );
    assert_eq!(normalised_table(&node), fresh(&state));
    assert_eq!(d.count(WHOLE), whole + 1, "{}", d.log());
    let _ = std::fs::remove_dir_all(&dir);
}

fn v4(s: &str) -> Element {
    Element::V4(s.parse().unwrap())
}

fn ruleset(v4_ranges: Vec<Element>, v6_ranges: Vec<Element>, ports: Vec<Element>) -> Ruleset {
    ruleset_with_map(v4_ranges, v6_ranges, ports, &[])
}

/// With a verdict map `pods` (address -> goto one of the chains pod-a, pod-b, pod-c).
fn ruleset_with_map(
    v4_ranges: Vec<Element>,
    v6_ranges: Vec<Element>,
    ports: Vec<Element>,
    entries: &[(&str, &str)],
) -> Ruleset {
    let set = |name: &str, key, interval, elements| Set {
        name: name.into(),
        key,
        interval,
        elements,
    };
    Ruleset {
        table: "churn".into(),
        comment: "managed by nftkit test".into(),
        sets: vec![
            set("r4", KeyType::Ipv4Addr, true, v4_ranges),
            set("r6", KeyType::Ipv6Addr, true, v6_ranges),
            set("ports", KeyType::InetService, false, ports),
        ],
        maps: vec![VerdictMap {
            name: "pods".into(),
            key: KeyType::Ipv4Addr,
            entries: entries
                .iter()
                .map(|(k, c)| (v4(k), c.to_string()))
                .collect(),
        }],
        chains: ["pod-a", "pod-b", "pod-c"]
            .iter()
            .map(|n| Chain {
                name: n.to_string(),
                base: None,
                rules: Vec::new(),
            })
            .collect(),
    }
}

/// The netlink backend's element batch on its own: interval ranges split, merged, moved
/// and running to the top of the address space; a list of 600 ranges (three messages)
/// replaced by another; the result reads back as a fresh apply of the new ruleset.
#[test]
#[ignore = "needs root: network namespaces"]
fn netlink_element_batches_end_where_a_fresh_apply_does() {
    require_root();
    let v6 = |from: u32, to: u32| -> Vec<Element> {
        (from..to)
            .map(|i| Element::V6(format!("fd00:{i:x}::/64").parse().unwrap()))
            .collect()
    };
    let steps = [
        ruleset_with_map(
            vec![v4("10.0.0.0/24"), v4("10.0.1.0/25"), v4("255.255.255.0/24")],
            v6(1, 601),
            vec![Element::Port(80)],
            &[("10.244.1.2/32", "pod-a"), ("10.244.1.3/32", "pod-b")],
        ),
        // Split a range, merge two, drop the top one; all v6 ranges replaced; a map entry
        // sent to another chain, one removed, one added.
        ruleset_with_map(
            vec![
                v4("10.0.0.0/25"),
                v4("10.0.0.128/25"),
                v4("10.0.2.0/23"),
                v4("255.255.255.254/31"),
            ],
            v6(601, 1201),
            vec![Element::Port(80), Element::Port(443)],
            &[("10.244.1.2/32", "pod-c"), ("10.244.1.4/32", "pod-a")],
        ),
        ruleset(vec![v4("10.0.0.0/23")], v6(1000, 1001), vec![]),
    ];
    let ns = Netns::new();
    ns.enter(|| {
        let mut b = NetlinkBackend::open(Options::default()).expect("open nf_tables");
        b.apply(&steps[0]).expect("first apply");
        for w in steps.windows(2) {
            let mut delta = element_delta(&w[0], &w[1]).expect("elements only");
            delta.expect_generation = b.ruleset_generation();
            let t = Instant::now();
            b.apply_delta(&w[1], &delta).expect("element batch");
            eprintln!(
                "element batch: {} removed, {} added in {:?}",
                delta.removed(),
                delta.added(),
                t.elapsed()
            );
            let c = b.compare(&w[1]).expect("compare");
            assert!(c.in_place(), "after the element batch: {:?}", c.diff);
        }
        // A stale generation: refused, nothing changes.
        let mut delta = element_delta(&steps[2], &steps[0]).unwrap();
        delta.expect_generation = b.ruleset_generation().map(|g| g.wrapping_sub(1));
        assert!(b.apply_delta(&steps[0], &delta).is_err());
        assert!(b.compare(&steps[2]).unwrap().in_place());
        // Removing an element the kernel lacks refuses the whole batch.
        let delta = element_delta(&steps[1], &steps[0]).unwrap();
        assert!(b.apply_delta(&steps[0], &delta).is_err());
        assert!(b.compare(&steps[2]).unwrap().in_place());
    });
    // The same as a fresh apply, as nft itself lists it.
    let other = Netns::new();
    other.enter(|| {
        let mut b = NetlinkBackend::open(Options::default()).expect("open nf_tables");
        b.apply(&steps[2]).expect("fresh apply");
    });
    let list = |n: &Netns| {
        let out = n.nft(&["-j", "list", "table", "inet", "churn"]);
        assert!(out.success(), "{out}");
        strip_json_key(&out.stdout, "handle")
    };
    assert_eq!(list(&ns), list(&other));
    // A table that is not ours is refused.
    ns.nft_load("table inet foreign {\n  set s {\n    type inet_service\n  }\n}\n");
    let mut foreign = ruleset(vec![], vec![], vec![Element::Port(1)]);
    foreign.table = "foreign".into();
    foreign.sets.retain(|s| s.name == "ports");
    foreign.maps.clear();
    foreign.chains.clear();
    foreign.sets[0].name = "s".into();
    let delta = element_delta(
        &ruleset(vec![], vec![], vec![]),
        &ruleset(vec![], vec![], vec![Element::Port(1)]),
    )
    .unwrap();
    ns.enter(|| {
        let mut b = NetlinkBackend::open(Options::default()).expect("open nf_tables");
        let mut d = delta.clone();
        d.sets[0].name = "s".into();
        assert!(b.apply_delta(&foreign, &d).is_err());
    });
    assert!(
        !ns.nft(&["list", "set", "inet", "foreign", "s"])
            .stdout
            .contains("elements")
    );
}
