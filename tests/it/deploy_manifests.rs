//! Every manifest under deploy/ parses into typed Kubernetes objects (k8s-openapi), with no
//! field the types do not know (a typo would vanish in the round trip), every nftkit
//! container's args parse as an nftkit command line, and each container asks for
//! NET_ADMIN only, with a read-only root filesystem, the RuntimeDefault seccomp profile,
//! and resource requests and limits. Every DaemonSet serves `--metrics-addr` on
//! 127.0.0.1 (hostNetwork) with readiness and liveness probes on it, has an emptyDir at
//! the state directory, and gets no service account token unless it calls the API
//! (netpol), whose ClusterRole may only list and watch.

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Deserialize;
use serde_json::Value;

/// `v` without nulls and empty objects, for comparing a round trip.
pub(crate) fn prune(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<_, _> = m
                .iter()
                .filter_map(|(k, v)| prune(v).map(|v| (k.clone(), v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => Some(Value::Array(a.iter().filter_map(prune).collect())),
        other => Some(other.clone()),
    }
}

pub(crate) fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    doc: &Value,
    file: &str,
) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        prune(&back),
        prune(doc),
        "{file}: a field is unknown to the Kubernetes types (typo?)"
    );
    typed
}

/// The container's args as an nftkit command line.
fn parse_args(c: &Container, file: &str) -> nftkit::cli::Cli {
    let args = c.args.clone().unwrap_or_default();
    // $(VAR) is expanded by the kubelet; any address will do for parsing.
    let argv: Vec<String> = std::iter::once("nftkit".to_string())
        .chain(args.iter().map(|a| a.replace("$(NODE_IP)", "192.0.2.10")))
        .collect();
    nftkit::cli::Cli::try_parse_from(&argv).unwrap_or_else(|e| {
        panic!(
            "{file}: container {} args {args:?} do not parse: {e}",
            c.name
        )
    })
}

fn check_nftkit_container(c: &Container, pod: &PodSpec, file: &str) {
    parse_args(c, file);
    let sc = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("{file}: {} has no securityContext", c.name));
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_string()][..]),
        "{file}: NET_ADMIN only"
    );
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_string()][..]),
        "{file}: drop ALL"
    );
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{file}");
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{file}");
    assert_ne!(sc.privileged, Some(true), "{file}");
    let seccomp = sc.seccomp_profile.as_ref().or_else(|| {
        pod.security_context
            .as_ref()
            .and_then(|p| p.seccomp_profile.as_ref())
    });
    assert_eq!(
        seccomp.map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{file}: {} needs seccompProfile RuntimeDefault (pod or container)",
        c.name
    );
    let res = c
        .resources
        .as_ref()
        .unwrap_or_else(|| panic!("{file}: {} has no resources", c.name));
    for (kind, list) in [("requests", &res.requests), ("limits", &res.limits)] {
        for what in ["cpu", "memory"] {
            assert!(
                list.as_ref().is_some_and(|l| l.contains_key(what)),
                "{file}: {} lacks resources.{kind}.{what}",
                c.name
            );
        }
    }
}

/// A DaemonSet's nftkit container: metrics on 127.0.0.1 (the pod shares the node's
/// network namespace), probed there; an emptyDir at the state directory; a service
/// account token only for the command that calls the API.
fn check_daemonset(spec: &PodSpec, file: &str) {
    assert_eq!(spec.host_network, Some(true), "{file}: hostNetwork");
    for c in nftkit_containers(spec) {
        let cli = parse_args(c, file);
        let command = c
            .args
            .as_ref()
            .and_then(|a| a.first().cloned())
            .unwrap_or_default();
        let raw = cli
            .metrics_addr
            .as_deref()
            .unwrap_or_else(|| panic!("{file}: {command} has no --metrics-addr"));
        let addr = nftkit::metrics::parse_addr(raw).unwrap();
        assert_eq!(
            addr.ip().to_string(),
            "127.0.0.1",
            "{file}: metrics must bind 127.0.0.1, not {addr}"
        );
        for (probe, path) in [
            (&c.readiness_probe, "/readyz"),
            (&c.liveness_probe, "/healthz"),
        ] {
            let get = probe
                .as_ref()
                .and_then(|p| p.http_get.as_ref())
                .unwrap_or_else(|| panic!("{file}: {command} has no httpGet probe for {path}"));
            assert_eq!(get.path.as_deref(), Some(path), "{file}: {command}");
            assert_eq!(
                get.host.as_deref(),
                Some("127.0.0.1"),
                "{file}: {command} probe {path} must ask 127.0.0.1"
            );
            assert_eq!(
                get.port,
                IntOrString::Int(i32::from(addr.port())),
                "{file}: {command} probe {path} port"
            );
        }
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == nftkit::jobs::masquerade::DEFAULT_STATE_DIR)
            .unwrap_or_else(|| {
                panic!(
                    "{file}: {command} has nothing mounted at {}",
                    nftkit::jobs::masquerade::DEFAULT_STATE_DIR
                )
            });
        assert_ne!(mount.read_only, Some(true), "{file}: state dir read-only");
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name == mount.name && v.empty_dir.is_some()),
            "{file}: volume {} is not an emptyDir",
            mount.name
        );
        if command == "netpol" {
            assert_ne!(
                spec.automount_service_account_token,
                Some(false),
                "{file}: netpol needs its token"
            );
        } else {
            assert_eq!(
                spec.automount_service_account_token,
                Some(false),
                "{file}: {command} never calls the API: automountServiceAccountToken: false"
            );
        }
    }
}

fn nftkit_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter(|c| c.image.as_deref().is_some_and(|i| i.starts_with("nftkit")))
}

#[test]
fn deploy_manifests_are_valid_kubernetes_objects_running_valid_nftkit_commands() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut kinds = Vec::new();
    let mut nftkit_commands = Vec::new();
    let mut daemonsets = 0;
    for path in &files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let doc = Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
            let kind = doc["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no kind"))
                .to_string();
            let spec = match kind.as_str() {
                "Pod" => round_trip::<Pod>(&doc, &file).spec,
                "DaemonSet" => {
                    let spec = round_trip::<DaemonSet>(&doc, &file)
                        .spec
                        .and_then(|s| s.template.spec)
                        .unwrap_or_else(|| panic!("{file}: DaemonSet without a pod spec"));
                    check_daemonset(&spec, &file);
                    daemonsets += 1;
                    Some(spec)
                }
                "ConfigMap" => {
                    round_trip::<ConfigMap>(&doc, &file);
                    None
                }
                "ServiceAccount" => {
                    round_trip::<ServiceAccount>(&doc, &file);
                    None
                }
                "ClusterRole" => {
                    let role = round_trip::<ClusterRole>(&doc, &file);
                    for rule in role.rules.iter().flatten() {
                        for verb in &rule.verbs {
                            assert!(
                                verb == "list" || verb == "watch",
                                "{file}: ClusterRole may only list and watch, not {verb} ({:?})",
                                rule.resources
                            );
                        }
                    }
                    None
                }
                "ClusterRoleBinding" => {
                    round_trip::<ClusterRoleBinding>(&doc, &file);
                    None
                }
                other => panic!("{file}: unexpected kind {other}"),
            };
            if let Some(spec) = spec {
                for c in nftkit_containers(&spec) {
                    check_nftkit_container(c, &spec, &file);
                    nftkit_commands.push(
                        c.args
                            .as_ref()
                            .and_then(|a| a.first().cloned())
                            .unwrap_or_default(),
                    );
                }
            }
            kinds.push(kind);
        }
    }
    assert_eq!(daemonsets, 4, "dnat, local-address, masquerade, netpol");
    nftkit_commands.sort();
    assert_eq!(
        nftkit_commands,
        ["dnat", "local-address", "masquerade", "netpol", "redirect"]
    );
    for kind in [
        "Pod",
        "DaemonSet",
        "ConfigMap",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in deploy/");
    }
}

#[test]
fn the_masquerade_configmap_is_a_valid_ip_masq_agent_config() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/masquerade-daemonset.yaml"
    ))
    .unwrap();
    let doc = serde_norway::Deserializer::from_str(&text).next().unwrap();
    let cm: ConfigMap = serde_json::from_value(Value::deserialize(doc).unwrap()).unwrap();
    let config = cm.data.unwrap()["ip-masq-agent"].clone();
    let dir = std::env::temp_dir().join(format!("nftkit-deploy-cm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ip-masq-agent"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .args([
            "-q",
            "--dry-run",
            "masquerade",
            "--config-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("172.16.0.0/12"));
}
