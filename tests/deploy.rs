//! Deployment artefacts that must not drift: the example GitHub Actions workflow, and the
//! README's configuration reference against `Config` and the environment variables read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

use agent_runner::config::{Config, Secret};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workflow() -> Yaml {
    let text = std::fs::read_to_string(root().join("examples/dispatch-workflow/agent-runner.yml"))
        .unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn string_map(yaml: &Yaml) -> Vec<(String, String)> {
    yaml.as_hash()
        .unwrap_or_else(|| panic!("not a map: {yaml:?}"))
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Yaml::String(s) => s.clone(),
                Yaml::Integer(i) => i.to_string(),
                Yaml::Boolean(b) => b.to_string(),
                other => panic!("not a scalar: {other:?}"),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn steps(wf: &Yaml) -> Vec<Yaml> {
    let jobs = wf["jobs"].as_hash().unwrap();
    jobs.values()
        .flat_map(|job| job["steps"].as_vec().cloned().unwrap_or_default())
        .collect()
}

#[test]
fn workflow_triggers_only_on_dispatch_issues() {
    let wf = workflow();
    let on = wf["on"].as_hash().expect("`on:` must be a map");
    assert_eq!(on.len(), 1, "only `issues` events");
    let types: Vec<&str> = wf["on"]["issues"]["types"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(types, ["opened", "labeled"]);
    let jobs = wf["jobs"].as_hash().unwrap();
    assert!(!jobs.is_empty());
    for job in jobs.values() {
        let condition = job["if"].as_str().expect("every job has an `if:`");
        assert!(
            condition.contains("contains(github.event.issue.labels.*.name, 'copilot-agent')")
                && condition.contains("github.event.label.name == 'copilot-agent'"),
            "{condition}"
        );
    }
}

#[test]
fn workflow_permissions_are_exactly_what_is_needed() {
    let wf = workflow();
    let mut permissions = string_map(&wf["permissions"]);
    permissions.sort();
    assert_eq!(
        permissions,
        [
            ("contents".to_string(), "write".to_string()),
            ("issues".to_string(), "write".to_string()),
            ("pull-requests".to_string(), "write".to_string()),
        ]
    );
    for job in wf["jobs"].as_hash().unwrap().values() {
        assert!(job["permissions"].is_badvalue(), "a job widens permissions");
    }
}

#[test]
fn workflow_never_interpolates_issue_fields_into_scripts() {
    let wf = workflow();
    let steps = steps(&wf);
    assert!(!steps.is_empty());
    for step in &steps {
        if let Some(script) = step["run"].as_str() {
            assert!(
                !script.contains("${{ github.event.issue.") && !script.contains("${{github.event"),
                "script injection: {script}"
            );
        }
    }
}

#[test]
fn workflow_installs_and_runs_the_runner() {
    let wf = workflow();
    let source = wf["env"]["AGENT_RUNNER_SOURCE"].as_str().unwrap();
    assert!(source.starts_with("https://"), "{source}");
    let steps = steps(&wf);
    let scripts: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        scripts
            .iter()
            .any(|s| s
                .contains("cargo install --git \"$AGENT_RUNNER_SOURCE\" agent-runner --locked")),
        "{scripts:?}"
    );
    let run = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("agent-runner run-issue --issue \"$ISSUE_NUMBER\""))
        })
        .expect("a step runs `agent-runner run-issue`");
    let env: std::collections::BTreeMap<String, String> =
        string_map(&run["env"]).into_iter().collect();
    let expect = [
        ("ISSUE_NUMBER", "${{ github.event.issue.number }}"),
        ("GITHUB_TOKEN", "${{ secrets.AGENT_RUNNER_TOKEN }}"),
        ("DISPATCH_REPO", "${{ github.repository }}"),
        ("LLM_API_KEY", "${{ secrets.LLM_API_KEY }}"),
        ("LLM_BASE_URL", "${{ vars.LLM_BASE_URL }}"),
        ("LLM_MODEL", "${{ vars.LLM_MODEL }}"),
    ];
    for (name, value) in expect {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
}

/// The `## Configuration` section of the README.
fn readme_configuration() -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Configuration\n")
        .expect("README has a Configuration section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_string()
}

/// Dotted keys of a serialised config: `llm.model`, `labels.done`, ...
fn keys(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
    for (k, v) in value.as_object().unwrap() {
        let key = format!("{prefix}{k}");
        match v {
            // Maps keyed by the user (`targets`) are checked separately.
            serde_json::Value::Object(_) if k != "targets" => {
                keys(&format!("{key}."), v, out);
            }
            _ => out.push(key),
        }
    }
}

#[test]
fn every_config_key_is_in_the_readme_table() {
    let config = serde_json::to_value(Config::default()).unwrap();
    let mut all = Vec::new();
    keys("", &config, &mut all);
    assert!(all.contains(&"llm.model".to_string()) && all.contains(&"labels.done".to_string()));
    let section = readme_configuration();
    let missing: Vec<&String> = all
        .iter()
        .filter(|k| *k != "targets" && !section.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README's Configuration table lacks: {missing:?}"
    );
    // Per-target keys, on the `[targets."owner/repo"]` row.
    let row = section
        .lines()
        .find(|l| l.contains("`[targets.\"owner/repo\"]"))
        .expect("a row for [targets.\"owner/repo\"]");
    let target = serde_json::to_value(agent_runner::config::TargetConfig::default()).unwrap();
    for k in target.as_object().unwrap().keys() {
        let named = row.contains(&format!("`{k}`")) || row.contains(&format!("] {k}`"));
        assert!(named, "targets row lacks `{k}`: {row}");
    }
}

#[test]
fn every_environment_variable_read_is_in_the_readme() {
    // Every name `Config::load` asks the environment for, found by asking it.
    let asked = RefCell::new(BTreeSet::new());
    Config::load(None, &|name| {
        asked.borrow_mut().insert(name.to_string());
        None
    })
    .unwrap();
    let asked = asked.into_inner();
    assert!(asked.contains("GITHUB_TOKEN") && asked.contains("LLM_MODEL"));
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let missing: Vec<&String> = asked
        .iter()
        .filter(|name| !readme.contains(&format!("`{name}`")) && !readme.contains(name.as_str()))
        .collect();
    assert!(missing.is_empty(), "README never mentions: {missing:?}");
    let section = readme_configuration();
    let not_in_table: Vec<&String> = asked
        .iter()
        .filter(|name| *name != "AGENT_RUNNER_CONFIG" && !section.contains(name.as_str()))
        .collect();
    assert!(
        not_in_table.is_empty(),
        "README's Configuration table lacks: {not_in_table:?}"
    );
}

#[test]
fn serialised_config_holds_no_secret() {
    let mut config = Config {
        github_token: Some(Secret::new("ghp_verysecretvalue")),
        ..Config::default()
    };
    config.llm.api_key = Some(Secret::new("sk-verysecretvalue"));
    config.webhook_secret = Some(Secret::new("hook-verysecretvalue"));
    let text = serde_json::to_string(&config).unwrap();
    assert!(!text.contains("verysecretvalue"), "{text}");
    assert!(text.contains("\"github_token\":\"***\""), "{text}");
}

fn compose_service() -> Yaml {
    let text = std::fs::read_to_string(root().join("docker-compose.agent-runner.yml")).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1);
    let doc = docs.remove(0);
    assert!(
        !doc["volumes"]["agent-runner-state"].is_badvalue(),
        "the state volume is declared"
    );
    doc["services"]["agent-runner"].clone()
}

/// `NAME=value` entries of the compose service's `environment:`.
fn compose_environment(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_vec()
        .expect("environment is a list of NAME=value")
        .iter()
        .map(|e| {
            let (k, v) = e.as_str().unwrap().split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

#[test]
fn compose_file_speaks_the_setup_guides_names_and_only_names_the_runner_reads() {
    let service = compose_service();
    let env: std::collections::BTreeMap<String, String> =
        compose_environment(&service).into_iter().collect();
    // The setup guide's Docker Compose example maps these names.
    for (name, value) in [
        ("GITHUB_TOKEN", "${AGENT_RUNNER_GITHUB_TOKEN:-}"),
        (
            "DISPATCH_REPO",
            "${HANDSFREE_AGENT_DISPATCH_REPO:-endomorphosis/lift_coding_dispatch}",
        ),
        ("POLL_INTERVAL_SECONDS", "${AGENT_POLL_INTERVAL:-30}"),
        ("AGENT_NAME", "${AGENT_NAME:-custom-agent}"),
        ("LLM_PROVIDER", "${LLM_PROVIDER:-openai}"),
        ("LLM_API_KEY", "${LLM_API_KEY:-}"),
        ("LLM_MODEL", "${LLM_MODEL:-gpt-4}"),
        ("LOG_LEVEL", "${LOG_LEVEL:-INFO}"),
    ] {
        assert_eq!(env.get(name).map(String::as_str), Some(value), "{name}");
    }
    // Every name passed in is one the runner reads (a typo would be silently ignored).
    let asked = RefCell::new(BTreeSet::new());
    Config::load(None, &|name| {
        asked.borrow_mut().insert(name.to_string());
        None
    })
    .unwrap();
    let asked = asked.into_inner();
    let unread: Vec<&String> = env.keys().filter(|k| !asked.contains(*k)).collect();
    assert!(unread.is_empty(), "the runner never reads {unread:?}");
    assert_eq!(env["AGENT_RUNNER_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["AGENT_RUNNER_STATE_DIR"], "/var/lib/agent-runner");
}

#[test]
fn compose_file_has_health_restart_limits_volume_and_the_socket() {
    let service = compose_service();
    let test: Vec<&str> = service["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(test[0], "CMD");
    assert_eq!(test.last(), Some(&"http://127.0.0.1:8080/healthz"));
    assert_eq!(service["restart"].as_str(), Some("unless-stopped"));
    for key in ["mem_limit", "cpus", "pids_limit"] {
        assert!(!service[key].is_badvalue(), "no {key}");
    }
    let volumes: Vec<&str> = service["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(volumes.contains(&"agent-runner-state:/var/lib/agent-runner"));
    assert!(volumes.contains(&"${DOCKER_SOCKET:-/var/run/docker.sock}:/var/run/docker.sock"));
    assert!(
        service["group_add"][0]
            .as_str()
            .unwrap()
            .starts_with("${DOCKER_GID:?"),
        "the socket's group is required"
    );
    assert_eq!(
        service["extra_hosts"][0].as_str(),
        Some("host.docker.internal:host-gateway")
    );
}

#[test]
fn the_runner_image_builds_from_the_offline_base_and_a_small_context() {
    let service = compose_service();
    let build = &service["build"];
    assert_eq!(build["context"].as_str(), Some("."));
    assert_eq!(build["dockerfile"].as_str(), Some("Dockerfile"));
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let base = format!(
        "ARG BASE_IMAGE={}",
        agent_runner::sandbox::BASE_IMAGE_LATEST
    );
    assert!(dockerfile.contains(&base), "{dockerfile}");
    assert_eq!(
        build["args"]["BASE_IMAGE"].as_str(),
        Some(format!(
            "${{AGENT_RUNNER_BASE_IMAGE:-{}}}",
            agent_runner::sandbox::BASE_IMAGE_LATEST
        ))
        .as_deref()
    );
    assert!(dockerfile.contains("ARG BINARY=target/release/agent-runner"));
    assert_eq!(
        build["args"]["BINARY"].as_str(),
        Some("${AGENT_RUNNER_BINARY:-target/release/agent-runner}")
    );
    // Every FROM is the base image: nothing is pulled from a registry.
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().to_ascii_uppercase().starts_with("FROM "))
        .collect();
    assert_eq!(froms, ["FROM ${BASE_IMAGE}"]);
    // The build context is everything but what the image needs: target/ is gigabytes.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "{ignore}");
    for needed in [
        "!target/release/agent-runner",
        "!target/debug/agent-runner",
        "!examples/calculator/fix.jsonl",
    ] {
        assert!(
            rules.contains(&needed),
            "{needed} missing from .dockerignore"
        );
    }
}
