//! `agent-runner doctor` against the GitHub fake, a tiny OpenAI-compatible `/models` server
//! and the real Docker Engine.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Output;

use support::{FakeGitHub, make_bare_repo};

const TOKEN: &str = "ghp_doctortoken123";
const LLM_KEY: &str = "sk-doctor-key-456";
const DISPATCH: &str = "acme/dispatch";
const MODEL: &str = "test-model";

struct World {
    gh: FakeGitHub,
    tmp: tempfile::TempDir,
    llm_url: String,
}

impl World {
    async fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let gh = FakeGitHub::start(TOKEN).await;
        let bare = make_bare_repo(
            &tmp.path().join("dispatch.git"),
            &[("README.md", "dispatch\n")],
            "main",
        );
        gh.add_repo(DISPATCH, "main", &bare);
        World {
            gh,
            llm_url: serve_models().await,
            tmp,
        }
    }

    async fn doctor(&self, env: &[(&str, &str)]) -> (Output, String) {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_agent-runner"));
        command
            .arg("doctor")
            .current_dir(self.tmp.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("GITHUB_TOKEN", TOKEN)
            .env("GITHUB_API_URL", self.gh.api_url())
            .env("DISPATCH_REPO", DISPATCH)
            .env("LLM_BASE_URL", &self.llm_url)
            .env("LLM_MODEL", MODEL)
            .env("LLM_API_KEY", LLM_KEY)
            .env("AGENT_RUNNER_STATE_DIR", self.tmp.path().join("state"));
        if let Ok(host) = std::env::var("DOCKER_HOST") {
            command.env("DOCKER_HOST", host);
        }
        command.envs(env.iter().copied());
        let output = command.output().await.unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !stdout.contains(TOKEN) && !stdout.contains(LLM_KEY) && !stderr.contains(TOKEN),
            "a secret was printed:\n{stdout}\n{stderr}"
        );
        (output, format!("{stdout}\n--- stderr ---\n{stderr}"))
    }
}

/// An OpenAI-compatible server that serves `GET /v1/models` with [`MODEL`], requiring the key.
async fn serve_models() -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/v1/models",
        get(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if auth != format!("Bearer {LLM_KEY}") {
                return (StatusCode::UNAUTHORIZED, "{}".to_string());
            }
            let body = serde_json::json!({"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 0, "owned_by": "me", "max_model_len": 32768},
                {"id": "other-model", "object": "model", "created": 0, "owned_by": "me"},
            ]});
            (StatusCode::OK, body.to_string())
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

fn line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find(|l| {
            l.get(6..)
                .is_some_and(|rest| rest.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn healthy_setup_passes() {
    let world = World::new().await;
    let (output, out) = world.doctor(&[]).await;
    assert!(
        output.status.success() && !out.contains("FAIL"),
        "doctor failed (this test needs a reachable Docker Engine):\n{out}"
    );
    for name in [
        "docker",
        "github token",
        "dispatch repo",
        "model",
        "journal",
    ] {
        assert!(line(&out, name).starts_with("ok "), "{name}:\n{out}");
    }
    assert!(
        line(&out, "model window").starts_with("ok ")
            && line(&out, "model window")
                .contains("context window 32768 tokens; explores with text actions"),
        "{out}"
    );
    // The image is present or buildable here: ok or a warning, never a failure.
    assert!(!line(&out, "sandbox image").starts_with("FAIL"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_small_context_window_warns_with_where_to_set_it() {
    let world = World::new().await;
    let (output, out) = world.doctor(&[("LLM_CONTEXT_TOKENS", "2048")]).await;
    assert!(
        output.status.success(),
        "a warning is not a failure:\n{out}"
    );
    let window = line(&out, "model window");
    assert!(window.starts_with("warn"), "{out}");
    assert!(
        window.contains("context window 2048 tokens is small"),
        "{out}"
    );
    assert!(
        out.contains("num_ctx") && out.contains("--max-model-len"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_token_fails_with_the_fix() {
    let world = World::new().await;
    let (output, out) = world.doctor(&[("GITHUB_TOKEN", "ghp_wrongtoken999")]).await;
    assert_eq!(output.status.code(), Some(1), "{out}");
    let token = line(&out, "github token");
    assert!(
        token.starts_with("FAIL")
            && token.contains("401")
            && token.contains("Fix: the token is wrong"),
        "{out}"
    );
    assert!(line(&out, "dispatch repo").starts_with("FAIL"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn broad_scopes_warn() {
    let world = World::new().await;
    world
        .gh
        .set_token_scopes(Some("repo, admin:org, delete_repo"));
    let (_, out) = world.doctor(&[]).await;
    let token = line(&out, "github token");
    assert!(
        token.starts_with("warn")
            && token.contains("admin:org, delete_repo")
            && token.contains("Fix: create a token with only the `repo` scope"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_scope_fails_and_fine_grained_tokens_pass() {
    let world = World::new().await;
    world.gh.set_token_scopes(Some("gist"));
    let (_, out) = world.doctor(&[]).await;
    assert!(line(&out, "github token").starts_with("FAIL"), "{out}");
    world.gh.set_token_scopes(None);
    let (_, out) = world.doctor(&[]).await;
    assert!(line(&out, "github token").starts_with("ok "), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_unreachable_fails_with_the_fix() {
    let world = World::new().await;
    let (output, out) = world
        .doctor(&[("DOCKER_HOST", "unix:///nonexistent.sock")])
        .await;
    assert_eq!(output.status.code(), Some(1), "{out}");
    let docker = line(&out, "docker");
    assert!(
        docker.starts_with("FAIL")
            && docker.contains("unix:///nonexistent.sock")
            && docker.contains("Fix: start the Docker Engine"),
        "{out}"
    );
    // The other checks still run.
    assert!(line(&out, "github token").starts_with("ok "), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn model_missing_or_key_refused_fails() {
    let world = World::new().await;
    let (output, out) = world.doctor(&[("LLM_MODEL", "gpt-9")]).await;
    assert_eq!(output.status.code(), Some(1), "{out}");
    let model = line(&out, "model");
    assert!(
        model.starts_with("FAIL")
            && model.contains("test-model, other-model")
            && model.contains("Fix: set LLM_MODEL"),
        "{out}"
    );
    let (_, out) = world.doctor(&[("LLM_API_KEY", "sk-wrong-key-000")]).await;
    assert!(line(&out, "model").contains("LLM_API_KEY"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dispatch_repo_permissions_are_judged() {
    let world = World::new().await;
    world.gh.set_repo_permissions(true, true);
    let (_, out) = world.doctor(&[]).await;
    let repo = line(&out, "dispatch repo");
    assert!(
        repo.starts_with("warn")
            && repo.contains("admin")
            && repo.contains("Fix: write access is enough"),
        "{out}"
    );
    world.gh.set_repo_permissions(false, false);
    let (output, out) = world.doctor(&[]).await;
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(line(&out, "dispatch repo").starts_with("FAIL"), "{out}");
    let (output, out) = world.doctor(&[("DISPATCH_REPO", "acme/nowhere")]).await;
    assert_eq!(output.status.code(), Some(1), "{out}");
    assert!(line(&out, "dispatch repo").contains("404"), "{out}");
}
