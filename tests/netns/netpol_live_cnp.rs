//! `nftkit netpol` live mode and ClusterNetworkPolicy (`policy.networking.k8s.io/v1alpha2`)
//! against the fake API server (tests/netns/netpol_api.rs): without the CRD the daemon is
//! ready and NetworkPolicy enforced, with one info line; a CRD installed later is picked
//! up at the next re-check (every --resync-interval); a ClusterNetworkPolicy nftkit
//! cannot convert makes the daemon not ready, names it, and leaves the table as it was.

use std::time::Duration;

use crate::common::*;
use crate::netpol_api::*;
use serde_json::{Value, json};

const TABLE: &str = "nftkit-netpol";
const WAIT: Duration = Duration::from_secs(20);
const NOT_SERVED: &str = "ClusterNetworkPolicy CRD not served; NetworkPolicy still enforced";
const GAUGE: &str = "nftkit_netpol_unconvertible_objects{";

fn cnp(name: &str, priority: i64) -> Value {
    json!({"metadata": {"name": name},
        "spec": {"tier": "Admin", "priority": priority,
            "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
            "ingress": [{"name": "deny-dev", "action": "Deny",
                "from": [{"namespaces": {"matchLabels": {"team": "b"}}}],
                "protocols": [{"tcp": {"destinationPort": {"range": {"start": 5000, "end": 6000}}}}]}]}})
}

fn seed(api: &FakeApi) {
    api.apply(
        "namespaces",
        json!({"metadata": {"name": "prod", "labels": {"team": "a"}}}),
    );
    api.apply(
        "pods",
        json!({"metadata": {"name": "db-0", "namespace": "prod", "labels": {"app": "db"}},
            "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}}),
    );
    api.apply(
        "networkpolicies",
        json!({"metadata": {"name": "db", "namespace": "prod"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]}}),
    );
}

fn lines_with(d: &NftkitDaemon, needles: &[&str]) -> usize {
    plain(&d.log())
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .count()
}

#[test]
fn crd_absent_then_installed_then_an_invalid_object() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    let metrics = free_port(&ns);
    seed(&api);
    let dir = TempDir::new("cnp");
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let mut d = NftkitDaemon::start(
        &ns,
        &[
            "--metrics-addr",
            &metrics.to_string(),
            "netpol",
            "--node-name",
            "node-1",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--debounce",
            "200ms",
            "--resync-interval",
            "1s",
        ],
    );

    // (a) No CRD: ready, the NetworkPolicy enforced, one info line however many re-checks.
    if !poll_until(WAIT, || readyz(&ns, metrics) == 200) {
        panic!("never ready without the CRD:\n{}", plain(&d.log()));
    }
    let table = ns.table("inet", TABLE).unwrap_or_default();
    assert!(table.contains("chain ingress/prod/db {"), "{table}");
    if !poll_until(WAIT, || api.crd_404s() >= 3) {
        panic!("the CRD is not re-checked:\n{}", plain(&d.log()));
    }
    assert_eq!(lines_with(&d, &[NOT_SERVED]), 1, "{}", plain(&d.log()));
    assert_eq!(lines_with(&d, &["WARN"]), 0, "{}", plain(&d.log()));
    assert_eq!(readyz(&ns, metrics), 200);

    // (b) The CRD installed with one policy: listed at the next re-check.
    api.apply(CNP, cnp("deny-dev", 10));
    api.serve_crd(true);
    let listed = ["clusternetworkpolicies", "objects=1", "refused=0"];
    if !poll_until(WAIT, || lines_with(&d, &listed) == 1) {
        panic!("the CRD's objects never listed:\n{}", plain(&d.log()));
    }
    assert_eq!(readyz(&ns, metrics), 200);
    assert_eq!(metric(&ns, metrics, GAUGE), Some(0.0));
    // ... and enforced: db-0 (namespace team=a) goes through the Admin tier's chain.
    if !poll_until(WAIT, || {
        ns.table("inet", TABLE)
            .is_some_and(|t| t.contains("10.244.1.5 : goto ingress/Admin/deny-dev"))
    }) {
        panic!(
            "the ClusterNetworkPolicy never reached the kernel:\n{}\n{}",
            ns.table("inet", TABLE).unwrap_or_default(),
            plain(&d.log())
        );
    }

    // An object nftkit cannot convert: not ready, counted, named; the table stays.
    let before = ns.table("inet", TABLE).unwrap_or_default();
    api.apply(CNP, cnp("bad-priority", 1001));
    if !poll_until(WAIT, || {
        readyz(&ns, metrics) == 503 && metric(&ns, metrics, GAUGE) == Some(1.0)
    }) {
        panic!(
            "an invalid object left the daemon ready:\n{}",
            plain(&d.log())
        );
    }
    assert!(
        lines_with(
            &d,
            &["ClusterNetworkPolicy bad-priority", "spec.priority", "1001"]
        ) >= 1,
        "{}",
        plain(&d.log())
    );
    assert_eq!(ns.table("inet", TABLE).unwrap_or_default(), before);
    // Deleted: ready again.
    api.delete(CNP, "/bad-priority");
    if !poll_until(WAIT, || readyz(&ns, metrics) == 200) {
        panic!("not ready after the fix:\n{}", plain(&d.log()));
    }

    // The CRD removed: its objects go with it, told once more; still ready.
    api.serve_crd(false);
    if !poll_until(WAIT, || lines_with(&d, &[NOT_SERVED]) == 2) {
        panic!("the CRD's removal not seen:\n{}", plain(&d.log()));
    }
    assert_eq!(readyz(&ns, metrics), 200);
    if !poll_until(WAIT, || {
        ns.table("inet", TABLE)
            .is_some_and(|t| !t.contains("ingress/Admin/deny-dev"))
    }) {
        panic!(
            "the removed CRD's policy stays in the kernel:\n{}",
            plain(&d.log())
        );
    }
    assert!(d.running(), "{}", plain(&d.log()));
    eprintln!("LOG:\n{}", plain(&d.log()));
    assert_eq!(d.stop_with(libc::SIGTERM), Some(0), "{}", plain(&d.log()));
}

/// A ServiceAccount whose ClusterRole predates ClusterNetworkPolicy (403 for the CRD's
/// path): the upgraded daemon still becomes ready and enforces NetworkPolicy, with one
/// warning that names what to grant; once the role is extended, the policies are read.
#[test]
fn crd_forbidden_by_an_old_cluster_role_warns_and_keeps_working() {
    require_root();
    let ns = Netns::new();
    let api = FakeApi::start(&ns);
    let metrics = free_port(&ns);
    seed(&api);
    api.forbid_crd(true);
    api.serve_crd(true);
    api.apply(CNP, cnp("deny-dev", 10));
    let dir = TempDir::new("cnp403");
    let kc = kubeconfig(&dir.0, &format!("http://127.0.0.1:{}", api.port));
    let d = NftkitDaemon::start(
        &ns,
        &[
            "--metrics-addr",
            &metrics.to_string(),
            "netpol",
            "--node-name",
            "node-1",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "--resync-interval",
            "1s",
            "--sync-timeout",
            "3s",
        ],
    );
    if !poll_until(WAIT, || readyz(&ns, metrics) == 200) {
        panic!("never ready with the CRD forbidden:\n{}", plain(&d.log()));
    }
    let table = ns.table("inet", TABLE).unwrap_or_default();
    assert!(table.contains("chain ingress/prod/db {"), "{table}");
    assert!(!table.contains("deny-dev"), "{table}");
    let warning = ["WARN", "clusternetworkpolicies not readable (403 Forbidden"];
    assert_eq!(lines_with(&d, &warning), 1, "{}", plain(&d.log()));
    // The role extended: the next re-check lists the policy and enforces it.
    api.forbid_crd(false);
    if !poll_until(WAIT, || {
        ns.table("inet", TABLE)
            .is_some_and(|t| t.contains("10.244.1.5 : goto ingress/Admin/deny-dev"))
    }) {
        panic!(
            "the policy never read after the role was extended:\n{}",
            plain(&d.log())
        );
    }
    assert_eq!(readyz(&ns, metrics), 200);
    // Forbidden again after a listing: an error like any other (not ready once it lasts
    // --sync-timeout); the rules stay.
    let before = ns.table("inet", TABLE).unwrap_or_default();
    api.forbid_crd(true);
    api.serve_crd(false);
    api.serve_crd(true);
    if !poll_until(WAIT, || readyz(&ns, metrics) == 503) {
        panic!(
            "a 403 after a listing left the daemon ready:\n{}",
            plain(&d.log())
        );
    }
    assert_eq!(ns.table("inet", TABLE).unwrap_or_default(), before);
}
