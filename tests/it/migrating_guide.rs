//! docs/migrating.md cannot drift from the binary: every ```` ```yaml nftkit ```` block
//! parses into typed Kubernetes objects with no unknown field, every nftkit container in
//! it runs its command with `--dry-run` (its literal and downward-API environment set,
//! `$(VAR)` expanded as the kubelet would), every `nftkit ...` line of a ```` ```sh ````
//! block and every `` `nftkit ...` `` code span parses with nftkit's own command line
//! parser, every YAML block says whose it is, and every `#anchor` link resolves.

use std::collections::BTreeMap;
use std::process::Command;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::Deserialize;
use serde_json::Value;

const GUIDE: &str = include_str!("../../docs/migrating.md");

/// (info string, body) of every fenced block.
fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) => current = Some((info.trim().to_string(), String::new())),
            (Some(_), Some(rest)) if rest.trim().is_empty() => {
                blocks.push(current.take().unwrap());
            }
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "unclosed code block");
    blocks
}

/// Typed as Kubernetes objects with no unknown field (the deploy/ manifests' check).
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(doc: &Value, what: &str) -> T {
    crate::deploy_manifests::round_trip(doc, what)
}

/// Split a command line the way a shell would for the simple lines the guide has:
/// whitespace, single and double quotes; a `#` word starts a comment.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {line:?}");
    if in_word {
        words.push(word);
    }
    words
}

/// An nftkit command line as the binary parses it (Go and klog forms included).
fn parses(argv: &[String], what: &str) {
    if let Err(e) = nftkit::cli::parse_args(argv.iter().map(Into::into).collect()) {
        panic!("{what}: {argv:?} does not parse: {e:?}");
    }
}

/// The container's environment with downward-API values filled in, as the kubelet would.
fn container_env(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| {
            let value = match (&e.value, &e.value_from) {
                (Some(v), _) => v.clone(),
                (None, Some(from)) => {
                    match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                        Some("status.hostIP" | "status.podIP") => "192.0.2.10".into(),
                        Some("spec.nodeName") => "node-1".into(),
                        other => panic!("{}: no test value for {other:?}", e.name),
                    }
                }
                (None, None) => String::new(),
            };
            (e.name.clone(), value)
        })
        .collect()
}

/// Run the container's nftkit command with `--dry-run`: masquerade reads `config` (the
/// ConfigMaps of the same block) and netpol an empty cluster instead of the API server.
fn dry_run(c: &Container, config: &BTreeMap<String, String>, what: &str) {
    let env = container_env(c);
    let mut args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|a| {
            env.iter()
                .fold(a.clone(), |a, (k, v)| a.replace(&format!("$({k})"), v))
        })
        .collect();
    assert!(
        !args.iter().any(|a| a.contains("$(")),
        "{what}: unexpanded variable in {args:?}"
    );
    let tmp = std::env::temp_dir().join(format!("nftkit-guide-{}-{}", std::process::id(), c.name));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    match args.first().map(String::as_str) {
        Some("masquerade") => {
            args.retain(|a| !a.starts_with("--config-dir"));
            for (file, text) in config {
                std::fs::write(tmp.join(file), text).unwrap();
            }
            args.push(format!("--config-dir={}", tmp.display()));
        }
        Some("netpol") => {
            let list = tmp.join("cluster.yaml");
            std::fs::write(&list, "apiVersion: v1\nkind: List\nitems: []\n").unwrap();
            args.push(format!("--from-file={}", list.display()));
        }
        _ => {}
    }
    let mut argv = vec!["nftkit".to_string()];
    argv.extend(args.iter().cloned());
    parses(&argv, what);
    let out = Command::new(env!("CARGO_BIN_EXE_nftkit"))
        .env_clear()
        .envs(&env)
        .arg("--dry-run")
        .args(&args)
        .output()
        .expect("run nftkit");
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(
        out.status.success(),
        "{what}: nftkit --dry-run {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nftkit_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter(|c| c.image.as_deref().is_some_and(|i| i.starts_with("nftkit")))
}

#[test]
fn every_nftkit_manifest_in_the_guide_is_valid_and_runs() {
    let mut commands = Vec::new();
    for (i, (info, body)) in fenced_blocks(GUIDE).iter().enumerate() {
        let what = format!("docs/migrating.md block {} ({info})", i + 1);
        if info.starts_with("yaml") {
            assert!(
                info == "yaml nftkit" || info == "yaml upstream",
                "{what}: say whose manifest it is: ```yaml nftkit or ```yaml upstream"
            );
        }
        if info != "yaml nftkit" {
            continue;
        }
        let mut specs = Vec::new();
        let mut config = BTreeMap::new();
        for doc in serde_norway::Deserializer::from_str(body) {
            let doc = Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: not YAML: {e}"));
            match doc["kind"].as_str() {
                Some("Pod") => specs.extend(typed::<Pod>(&doc, &what).spec),
                Some("DaemonSet") => specs.extend(
                    typed::<DaemonSet>(&doc, &what)
                        .spec
                        .and_then(|s| s.template.spec),
                ),
                Some("ConfigMap") => {
                    config.extend(typed::<ConfigMap>(&doc, &what).data.unwrap_or_default())
                }
                Some("ServiceAccount") => drop(typed::<ServiceAccount>(&doc, &what)),
                Some("ClusterRole") => drop(typed::<ClusterRole>(&doc, &what)),
                Some("ClusterRoleBinding") => drop(typed::<ClusterRoleBinding>(&doc, &what)),
                other => panic!("{what}: unexpected kind {other:?}"),
            }
        }
        for spec in &specs {
            for c in nftkit_containers(spec) {
                let caps = c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.capabilities.as_ref())
                    .unwrap_or_else(|| panic!("{what}: {} sets no capabilities", c.name));
                assert_eq!(
                    caps.add.as_deref(),
                    Some(&["NET_ADMIN".to_string()][..]),
                    "{what}: {} should add NET_ADMIN only",
                    c.name
                );
                dry_run(c, &config, &what);
                commands.extend(c.args.iter().flatten().next().cloned());
            }
        }
    }
    commands.sort();
    commands.dedup();
    assert_eq!(
        commands,
        [
            "delete",
            "dnat",
            "local-address",
            "masquerade",
            "netpol",
            "redirect"
        ],
        "the guide shows every command's manifest (and the rollback's delete)"
    );
}

#[test]
fn every_nftkit_command_line_in_the_guide_parses() {
    let mut checked = 0;
    for (info, body) in fenced_blocks(GUIDE) {
        if info != "sh" {
            continue;
        }
        for line in body.lines() {
            let words = shell_words(line);
            if words.first().map(String::as_str) == Some("nftkit") {
                parses(&words, &format!("docs/migrating.md: {line}"));
                checked += 1;
            }
        }
    }
    // Inline code spans outside fenced blocks.
    let mut in_block = false;
    for line in GUIDE.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if in_block {
            continue;
        }
        for (i, span) in line.split('`').enumerate() {
            if i % 2 == 1 && span.starts_with("nftkit ") {
                parses(&shell_words(span), &format!("docs/migrating.md: `{span}`"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} command lines found");
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn links_within_the_guide_resolve() {
    let mut in_block = false;
    let mut anchors = Vec::new();
    for line in GUIDE.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block && line.starts_with('#') {
            anchors.push(anchor(line.trim_start_matches('#')));
        }
    }
    let mut links = 0;
    for piece in GUIDE.split("](#").skip(1) {
        let target = &piece[..piece.find(')').expect("closing parenthesis")];
        assert!(
            anchors.iter().any(|a| a == target),
            "#{target} is no heading of docs/migrating.md ({anchors:?})"
        );
        links += 1;
    }
    assert!(links >= 5);
}

#[test]
fn readme_links_the_guide_from_its_first_screen() {
    let readme = include_str!("../../README.md");
    let first_screen: String = readme.lines().take(30).collect::<Vec<_>>().join("\n");
    assert!(
        first_screen.contains("(docs/migrating.md)"),
        "README's first 30 lines should link docs/migrating.md"
    );
}
