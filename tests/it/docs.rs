//! The README and `docs/` hold what they show: every config example passes `check` on the real
//! binary, every JSON example parses, the command list is the binary's own, the scripts named
//! exist, and every relative link (and its `#anchor`) leads somewhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page of docs/, as (path, text).
fn pages() -> Vec<(PathBuf, String)> {
    let mut paths = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 8, "docs/ lost its pages: {docs:?}");
    paths.extend(docs);
    paths.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// Fenced code blocks: (language, body).
fn blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), String::new())),
            (Some(_), Some(_)) => out.push(current.take().unwrap()),
            (Some((_, body)), None) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(current.is_none(), "an unclosed code block");
    out
}

/// What the workload-identity webhook injects into a pod: enough for `check` on any example.
fn webhook_env() -> Vec<(&'static str, String)> {
    vec![
        ("AZURE_CLIENT_ID", "c11e4700-aaaa-4bbb-8ccc-dddd0000e001".to_string()),
        ("AZURE_TENANT_ID", "e0e0e0e0-1111-4222-8333-444455556666".to_string()),
        ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/secrets/azure/tokens/azure-identity-token".to_string()),
    ]
}

fn check(yaml: &str, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = base_command(&webhook_env()).args(["check", "--config", path.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{what} does not pass `check`:\n{yaml}\n{err}");
}

#[test]
fn every_config_example_passes_check_and_every_json_example_parses() {
    let mut configs = 0;
    for (path, text) in pages() {
        for (i, (lang, body)) in blocks(&text).into_iter().enumerate() {
            let what = format!("{} block {}", path.display(), i + 1);
            match lang.as_str() {
                "yaml" if body.lines().any(|l| l.starts_with("sources:")) => {
                    check(&body, &what);
                    configs += 1;
                }
                // A fragment of a Key Vault source (`secrets:` entries): checked inside one.
                "yaml" if body.starts_with("secrets:") => {
                    let indented: String = body.lines().map(|l| format!("    {l}\n")).collect();
                    check(&format!("sources:\n  - type: keyvault\n    vault: myvault\n{indented}"), &what);
                    configs += 1;
                }
                // Kubernetes objects (the CSI guide's class and Deployment): YAML that parses;
                // what migrate makes of them is checked in migrate::the_guide_s_examples_are_what_migrate_gives.
                "yaml" if body.lines().any(|l| l.starts_with("apiVersion:")) => {
                    for doc in serde_yaml::Deserializer::from_str(&body) {
                        serde_yaml::Value::deserialize(doc).unwrap_or_else(|e| panic!("{what}: {e}\n{body}"));
                    }
                }
                "yaml" => panic!(
                    "{what}: a YAML example that is neither a config, a `secrets:` fragment nor a Kubernetes object"
                ),
                "json" => {
                    serde_json::from_str::<serde_json::Value>(&body).unwrap_or_else(|e| panic!("{what}: {e}\n{body}"));
                }
                "toml" => {
                    panic!("{what}: TOML examples live in config/ (checked by cli::every_example_config_passes_check)")
                }
                _ => {}
            }
        }
    }
    assert!(configs >= 2, "no config examples found");
}

#[test]
fn the_documented_commands_are_the_binarys() {
    let (_, text) = pages().into_iter().find(|(p, _)| p.ends_with("docs/configuration.md")).unwrap();
    let listed: BTreeSet<String> = blocks(&text)
        .into_iter()
        .flat_map(|(_, body)| body.lines().map(str::to_string).collect::<Vec<_>>())
        .filter_map(|l| l.strip_prefix("azure-secrets-sidecar ").map(str::to_string))
        .map(|rest| rest.trim_start_matches('[').split([' ', ']']).next().unwrap().to_string())
        .collect();
    let out = base_command(&[]).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for command in &listed {
        assert!(help.contains(command.as_str()), "docs list `{command}`, --help does not:\n{help}");
    }
    for command in ["run", "check", "demo", "probe", "inject", "version"] {
        assert!(listed.contains(command), "docs/configuration.md does not list `{command}`: {listed:?}");
    }
}

#[test]
fn every_script_shown_exists() {
    for (path, text) in pages() {
        for (lang, body) in blocks(&text) {
            if lang != "sh" {
                continue;
            }
            for word in body.split_whitespace().filter(|w| w.starts_with("scripts/")) {
                assert!(root().join(word).is_file(), "{}: `{word}` does not exist", path.display());
            }
        }
    }
}

/// GitHub's anchor for a heading: lower-cased, punctuation but `-` and `_` dropped, spaces `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut links = 0;
    for (path, text) in pages() {
        let dir = path.parent().unwrap();
        for target in text.split("](").skip(1).filter_map(|rest| rest.split(')').next()) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            links += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() { path.clone() } else { dir.join(file) };
            assert!(file.exists(), "{}: link `{target}`: {} does not exist", path.display(), file.display());
            if !anchor.is_empty() {
                let headings = anchors(&std::fs::read_to_string(&file).unwrap());
                assert!(
                    headings.contains(anchor),
                    "{}: link `{target}`: no such heading in {}: {headings:?}",
                    path.display(),
                    file.display()
                );
            }
        }
    }
    assert!(links >= 20, "only {links} relative links found");
}
