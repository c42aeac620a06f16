//! Deployment artefacts that must not drift: the example GitHub Actions workflow with the
//! release it installs (the package script and the release workflow), and the README's
//! configuration reference against `Config` and the environment variables read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use agent_runner::config::{Config, Secret};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_yaml(relative: &str) -> Yaml {
    let text = std::fs::read_to_string(root().join(relative)).unwrap();
    let mut docs = YamlLoader::load_from_str(&text).unwrap();
    assert_eq!(docs.len(), 1, "{relative}");
    docs.remove(0)
}

fn workflow() -> Yaml {
    load_yaml("examples/dispatch-workflow/agent-runner.yml")
}

fn release_workflow() -> Yaml {
    load_yaml(".github/workflows/release.yml")
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

fn step_named(wf: &Yaml, name: &str) -> Yaml {
    steps(wf)
        .into_iter()
        .find(|s| s["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no step named {name:?}"))
}

/// Everything a step hands to its action or script: `run:`, `with:` and `env:` values.
fn step_text(step: &Yaml) -> String {
    let mut text = step["run"].as_str().unwrap_or_default().to_string();
    for key in ["with", "env"] {
        if !step[key].is_badvalue() {
            for (k, v) in string_map(&step[key]) {
                text.push_str(&format!("\n{k}: {v}"));
            }
        }
    }
    text
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
    assert_eq!(
        wf["concurrency"]["group"].as_str(),
        Some("agent-runner-issue-${{ github.event.issue.number }}")
    );
}

#[test]
fn workflow_permissions_are_exactly_what_is_needed() {
    let wf = workflow();
    // The built-in token only comments when agent-runner could not start; the runner itself
    // uses AGENT_RUNNER_TOKEN for the dispatch and the target repository.
    assert_eq!(
        string_map(&wf["permissions"]),
        [("issues".to_string(), "write".to_string())]
    );
    for job in wf["jobs"].as_hash().unwrap().values() {
        assert!(job["permissions"].is_badvalue(), "a job widens permissions");
    }
    let steps = steps(&wf);
    let users: Vec<&Yaml> = steps
        .iter()
        .filter(|s| step_text(s).contains("github.token"))
        .collect();
    assert_eq!(
        users.len(),
        1,
        "one step uses the built-in token: {users:?}"
    );
    let comment = users[0];
    assert_eq!(
        comment["if"].as_str(),
        Some("failure() && steps.run.outcome == 'skipped'")
    );
    let script = comment["run"].as_str().unwrap();
    assert!(
        script.contains("--request POST")
            && script.contains(
                "\"$GITHUB_API_URL/repos/$GITHUB_REPOSITORY/issues/$ISSUE_NUMBER/comments\""
            ),
        "{script}"
    );
    // ... and only when the task never ran: `run-issue` comments on its own failures.
    let run = steps
        .iter()
        .find(|s| s["id"].as_str() == Some("run"))
        .unwrap();
    assert!(
        run["run"]
            .as_str()
            .unwrap()
            .starts_with("agent-runner run-issue")
    );
    for step in &steps {
        assert!(
            !step_text(step).contains("secrets.GITHUB_TOKEN"),
            "{step:?}"
        );
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
fn workflow_installs_the_release_and_runs_the_runner() {
    let wf = workflow();
    let env: BTreeMap<String, String> = string_map(&wf["env"]).into_iter().collect();
    assert_eq!(env["AGENT_RUNNER_VERSION"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        env["AGENT_RUNNER_RELEASES"],
        "https://github.com/OWNER/agent-runner/releases"
    );
    assert_eq!(env["AGENT_RUNNER_SHA256"], "", "nothing pinned by default");
    let steps = steps(&wf);
    let scripts: Vec<&str> = steps.iter().filter_map(|s| s["run"].as_str()).collect();
    assert!(
        !scripts.iter().any(|s| s.contains("cargo ")),
        "nothing is built from source: {scripts:?}"
    );
    // The install step is the first script, and reads its settings from `env:` only.
    let install = step_named(&wf, "Install agent-runner");
    let script = install["run"].as_str().unwrap();
    assert_eq!(scripts.first(), Some(&script));
    assert!(!script.contains("${{"), "{script}");
    for needed in [
        "agent-runner-${AGENT_RUNNER_VERSION}-x86_64-unknown-linux-gnu.tar.gz",
        "${AGENT_RUNNER_RELEASES%/}/download/v${AGENT_RUNNER_VERSION}",
        "curl --fail --silent --show-error --location --retry 3",
        ">> \"$GITHUB_PATH\"",
        "--version",
    ] {
        assert!(script.contains(needed), "{needed} not in {script}");
    }
    // The cache holds what the script downloads, per version and pinned checksum.
    let cache = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/cache@"))
        })
        .expect("the download is cached");
    assert_eq!(
        cache["with"]["path"].as_str(),
        Some("${{ runner.temp }}/agent-runner-download")
    );
    assert!(script.contains("downloads=\"$RUNNER_TEMP/agent-runner-download\""));
    let key = cache["with"]["key"].as_str().unwrap();
    assert!(
        key.contains("${{ env.AGENT_RUNNER_VERSION }}")
            && key.contains("${{ env.AGENT_RUNNER_SHA256 }}"),
        "{key}"
    );
    let run = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("agent-runner run-issue --issue \"$ISSUE_NUMBER\""))
        })
        .expect("a step runs `agent-runner run-issue`");
    let env: BTreeMap<String, String> = string_map(&run["env"]).into_iter().collect();
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

#[test]
fn release_workflow_packages_and_uploads_on_version_tags() {
    let wf = release_workflow();
    let on = wf["on"].as_hash().expect("`on:` must be a map");
    assert_eq!(on.len(), 1, "only pushes");
    let push = wf["on"]["push"].as_hash().unwrap();
    assert_eq!(push.len(), 1, "only tags, no branches: {push:?}");
    let tags: Vec<&str> = wf["on"]["push"]["tags"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(tags, ["v*"]);
    assert_eq!(
        string_map(&wf["permissions"]),
        [("contents".to_string(), "write".to_string())]
    );
    let jobs = wf["jobs"].as_hash().unwrap();
    assert_eq!(jobs.len(), 1);
    for job in jobs.values() {
        assert!(job["permissions"].is_badvalue(), "a job widens permissions");
        assert_eq!(
            job["runs-on"].as_str(),
            Some("ubuntu-22.04"),
            "oldest glibc"
        );
    }
    let steps = steps(&wf);
    let package = steps
        .iter()
        .find(|s| {
            s["run"]
                .as_str()
                .is_some_and(|r| r.contains("scripts/package-release.sh --out dist"))
        })
        .expect("a step runs the package script");
    let script = package["run"].as_str().unwrap();
    assert!(
        script.contains("\"agent-runner-${TAG#v}-x86_64-unknown-linux-gnu.tar.gz\")"),
        "the tag is checked against the packaged version: {script}"
    );
    let upload = step_named(&wf, "Upload to the release");
    let script = upload["run"].as_str().unwrap();
    for needed in [
        "gh release create \"$TAG\" \"$ARCHIVE\" \"$ARCHIVE.sha256\"",
        "gh release upload \"$TAG\" \"$ARCHIVE\" \"$ARCHIVE.sha256\"",
    ] {
        assert!(script.contains(needed), "{needed} not in {script}");
    }
    assert!(
        !script.contains("--clobber"),
        "published assets are never replaced"
    );
    let env: BTreeMap<String, String> = string_map(&upload["env"]).into_iter().collect();
    assert_eq!(env["GH_TOKEN"], "${{ github.token }}");
    assert_eq!(env["TAG"], "${{ github.ref_name }}");
    // The checkout leaves no token behind for the build to read.
    let checkout = steps
        .iter()
        .find(|s| {
            s["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("actions/checkout@"))
        })
        .unwrap();
    assert_eq!(
        checkout["with"]["persist-credentials"].as_bool(),
        Some(false)
    );
}

/// Serves the files under `dir` over HTTP on 127.0.0.1 for the rest of the test process;
/// returns the base URL.
fn serve(dir: PathBuf) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 0) && header != "\r\n" {
                header.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let file = (!path.contains(".."))
                .then(|| std::fs::read(dir.join(path.trim_start_matches('/'))).ok())
                .flatten();
            let (status, body) = match file {
                Some(body) => ("200 OK", body),
                None => ("404 Not Found", b"not found\n".to_vec()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    url
}

fn package(out: &Path) -> (PathBuf, Output) {
    let output = Command::new("bash")
        .arg(root().join("scripts/package-release.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_agent-runner"), "--out"])
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "package-release.sh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let archive = String::from_utf8(output.stdout.clone()).unwrap();
    (PathBuf::from(archive.trim_end()), output)
}

/// Runs the example workflow's install step as Actions would (`bash -e`), with the
/// workflow's `env:` and the overrides; nothing else of this process's environment.
fn run_install_step(runner_temp: &Path, overrides: &[(&str, &str)]) -> Output {
    let wf = workflow();
    let script = runner_temp.join("install-step.sh");
    std::fs::create_dir_all(runner_temp).unwrap();
    std::fs::write(
        &script,
        step_named(&wf, "Install agent-runner")["run"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let github_path = runner_temp.join("github_path");
    std::fs::write(&github_path, "").unwrap();
    let mut command = Command::new("bash");
    command
        .arg("-e")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap())
        .env("RUNNER_TEMP", runner_temp)
        .env("GITHUB_PATH", &github_path)
        .envs(string_map(&wf["env"]))
        .envs(overrides.iter().copied());
    command.output().unwrap()
}

fn combined(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn the_install_step_installs_the_packaged_release_and_refuses_a_wrong_checksum() {
    let version = env!("CARGO_PKG_VERSION");
    let tmp = tempfile::tempdir().unwrap();
    let releases = tmp.path().join("releases");
    let download = releases.join(format!("download/v{version}"));

    let started = Instant::now();
    let (archive, output) = package(&download);
    println!("package-release.sh: {:.1?}", started.elapsed());
    let name = format!("agent-runner-{version}-x86_64-unknown-linux-gnu.tar.gz");
    assert_eq!(
        archive,
        download.join(&name),
        "the example workflow installs the x86_64 Linux build; this host packaged another \
         ({})",
        String::from_utf8_lossy(&output.stderr)
    );
    // `sha256sum` format with the bare name: `sha256sum --check` works where both land.
    let sums = std::fs::read_to_string(download.join(format!("{name}.sha256"))).unwrap();
    let (sum, file) = sums.trim_end().split_once("  ").unwrap();
    assert!(
        sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sums}"
    );
    assert_eq!(file, name);
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", &format!("{name}.sha256")])
        .current_dir(&download)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", combined(&check));

    // Contents: one directory with the binary, README and example workflow, owned by 0:0,
    // every mtime SOURCE_DATE_EPOCH (2023-11-14 22:13:20 UTC).
    let listing = Command::new("tar")
        .args(["--list", "--verbose", "--gzip", "--numeric-owner", "--file"])
        .arg(&archive)
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(listing.status.success(), "{}", combined(&listing));
    let listing = String::from_utf8(listing.stdout).unwrap();
    let top = name.trim_end_matches(".tar.gz");
    let entries: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        entries,
        [
            format!("{top}/"),
            format!("{top}/README.md"),
            format!("{top}/agent-runner"),
            format!("{top}/examples/"),
            format!("{top}/examples/dispatch-workflow/"),
            format!("{top}/examples/dispatch-workflow/agent-runner.yml"),
        ]
    );
    for line in listing.lines() {
        assert!(
            line.contains(" 0/0 ") && line.contains(" 2023-11-14 22:13"),
            "{line}"
        );
    }
    assert!(listing.contains("-rwxr-xr-x 0/0"), "{listing}");

    // The same inputs give the same archive.
    let (again, _) = package(&tmp.path().join("again"));
    assert!(
        std::fs::read(&again).unwrap() == std::fs::read(&archive).unwrap(),
        "packaging twice gave different archives"
    );

    let base = serve(tmp.path().to_path_buf());
    let releases_url = format!("{base}/releases");

    // The install step as the workflow runs it, against the local "release".
    let runner_temp = tmp.path().join("runner-temp");
    let started = Instant::now();
    let output = run_install_step(
        &runner_temp,
        &[("AGENT_RUNNER_RELEASES", releases_url.as_str())],
    );
    println!("install step: {:.1?}", started.elapsed());
    assert!(output.status.success(), "{}", combined(&output));
    let installed = runner_temp.join("agent-runner");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("agent-runner {version}\n")),
        "--version ran: {stdout}"
    );
    assert_eq!(
        std::fs::read_to_string(runner_temp.join("github_path")).unwrap(),
        format!("{}\n", installed.display())
    );
    for file in [
        "agent-runner",
        "README.md",
        "examples/dispatch-workflow/agent-runner.yml",
    ] {
        assert!(installed.join(file).is_file(), "{file} not installed");
    }
    let version_out = Command::new(installed.join("agent-runner"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version_out.stdout),
        format!("agent-runner {version}\n")
    );

    // A pinned checksum that matches (in capitals) installs too, without the .sha256 file.
    let output = run_install_step(
        &tmp.path().join("runner-temp-pinned"),
        &[
            ("AGENT_RUNNER_RELEASES", releases_url.as_str()),
            ("AGENT_RUNNER_SHA256", &sum.to_ascii_uppercase()),
        ],
    );
    assert!(output.status.success(), "{}", combined(&output));
    assert!(
        !combined(&output).contains(".sha256"),
        "{}",
        combined(&output)
    );

    // A pinned checksum that differs: refused, nothing installed, nothing on the PATH,
    // nothing left in the download cache.
    let wrong = "0".repeat(64);
    let runner_temp = tmp.path().join("runner-temp-wrong");
    let output = run_install_step(
        &runner_temp,
        &[
            ("AGENT_RUNNER_RELEASES", releases_url.as_str()),
            ("AGENT_RUNNER_SHA256", wrong.as_str()),
        ],
    );
    assert!(!output.status.success(), "{}", combined(&output));
    let text = combined(&output);
    assert!(
        text.contains(&format!(
            "::error::agent-runner checksum mismatch: {name} has sha256 {sum} but the pinned AGENT_RUNNER_SHA256 says {wrong}; nothing was installed"
        )),
        "{text}"
    );
    assert!(
        !runner_temp.join("agent-runner").exists(),
        "installed anyway"
    );
    assert_eq!(
        std::fs::read_to_string(runner_temp.join("github_path")).unwrap(),
        ""
    );
    assert_eq!(
        std::fs::read_dir(runner_temp.join("agent-runner-download"))
            .unwrap()
            .count(),
        0,
        "a refused archive stays in the cache"
    );

    // Nothing pinned and a published .sha256 that does not match the archive: refused too.
    let tampered = tmp
        .path()
        .join("tampered/download")
        .join(format!("v{version}"));
    std::fs::create_dir_all(&tampered).unwrap();
    std::fs::copy(&archive, tampered.join(&name)).unwrap();
    std::fs::write(
        tampered.join(format!("{name}.sha256")),
        format!("{wrong}  {name}\n"),
    )
    .unwrap();
    let runner_temp = tmp.path().join("runner-temp-tampered");
    let output = run_install_step(
        &runner_temp,
        &[("AGENT_RUNNER_RELEASES", &format!("{base}/tampered"))],
    );
    assert!(!output.status.success(), "{}", combined(&output));
    let text = combined(&output);
    assert!(
        text.contains("checksum mismatch") && text.contains(&format!("{name}.sha256 says {wrong}")),
        "{text}"
    );
    assert!(
        !runner_temp.join("agent-runner").exists(),
        "installed anyway"
    );

    // A version that was never released: a clear error, not a bare 404.
    let output = run_install_step(
        &tmp.path().join("runner-temp-missing"),
        &[
            ("AGENT_RUNNER_RELEASES", releases_url.as_str()),
            ("AGENT_RUNNER_VERSION", "0.0.0-missing"),
        ],
    );
    assert!(!output.status.success());
    assert!(
        combined(&output).contains("::error::could not download"),
        "{}",
        combined(&output)
    );
}

#[test]
fn the_package_script_refuses_a_binary_of_another_version() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = tmp.path().join("agent-runner");
    // Written by a child process: an executable this process held open for writing could
    // fail with ETXTBSY when another test's child inherits the descriptor.
    let status = Command::new("sh")
        .arg("-c")
        .arg("printf '#!/bin/sh\\necho agent-runner 0.0.1\\n' > \"$1\" && chmod +x \"$1\"")
        .arg("sh")
        .arg(&fake)
        .status()
        .unwrap();
    assert!(status.success());
    let output = Command::new("bash")
        .arg(root().join("scripts/package-release.sh"))
        .arg("--binary")
        .arg(&fake)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "reports `agent-runner 0.0.1`, Cargo.toml says {}: rebuild it",
            env!("CARGO_PKG_VERSION")
        )),
        "{stderr}"
    );
    assert!(!tmp.path().join("out").exists(), "wrote something anyway");
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
