//! Every manifest under deploy/ parses into typed Kubernetes objects (k8s-openapi), with no
//! field the types do not know (a typo would vanish in the round trip), every nftkit
//! container's args parse as an nftkit command line, and each container asks for
//! NET_ADMIN only, with a read-only root filesystem.

use clap::Parser;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_json::Value;

/// `v` without nulls and empty objects, for comparing a round trip.
fn prune(v: &Value) -> Option<Value> {
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

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, file: &str) -> T {
    let typed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        prune(&back),
        prune(doc),
        "{file}: a field is unknown to the Kubernetes types (typo?)"
    );
    typed
}

fn check_nftkit_container(c: &Container, file: &str) {
    let args = c.args.clone().unwrap_or_default();
    // $(VAR) is expanded by the kubelet; any address will do for parsing.
    let argv: Vec<String> = std::iter::once("nftkit".to_string())
        .chain(args.iter().map(|a| a.replace("$(NODE_IP)", "192.0.2.10")))
        .collect();
    if let Err(e) = nftkit::cli::Cli::try_parse_from(&argv) {
        panic!(
            "{file}: container {} args {args:?} do not parse: {e}",
            c.name
        );
    }
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
                "DaemonSet" => round_trip::<DaemonSet>(&doc, &file)
                    .spec
                    .and_then(|s| s.template.spec),
                "ConfigMap" => {
                    round_trip::<ConfigMap>(&doc, &file);
                    None
                }
                "ServiceAccount" => {
                    round_trip::<ServiceAccount>(&doc, &file);
                    None
                }
                "ClusterRole" => {
                    round_trip::<ClusterRole>(&doc, &file);
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
                    check_nftkit_container(c, &file);
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
