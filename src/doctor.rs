//! `agent-runner doctor`: checks what a deployment needs, one line per check, each problem
//! with how to fix it. Docker (and its socket permission), the sandbox image, the GitHub
//! token and its scopes, the dispatch repository and the token's permissions on it, the
//! model server and the model, and the journal directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Config;
use crate::github::{GitHub, RetryPolicy};

/// Scopes a classic token needs one of.
const NEEDED_SCOPES: &[&str] = &["repo", "public_repo"];
/// Scopes that give far more than the runner needs.
const BROAD_SCOPES: &[&str] = &[
    "admin:org",
    "delete_repo",
    "admin:repo_hook",
    "workflow",
    "admin:public_key",
    "admin:gpg_key",
    "admin:enterprise",
    "admin:org_hook",
    "site_admin",
    "write:packages",
    "delete:packages",
    "user",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        })
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:<4}  {}: {}", self.level, self.name, self.detail)?;
        if let Some(fix) = &self.fix {
            write!(f, " Fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs every check, in a fixed order.
pub async fn run(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let docker = match crate::sandbox::connect().await {
        Ok(docker) => {
            let version = match docker.version().await {
                Ok(v) => v.version.unwrap_or_else(|| "unknown version".into()),
                Err(_) => "unknown version".into(),
            };
            checks.push(Check::ok(
                "docker",
                format!("Docker Engine {version} at {}", docker_host()),
            ));
            Some(docker)
        }
        Err(e) => {
            checks.push(docker_failure(&e.to_string()));
            None
        }
    };
    checks.extend(image_checks(config, docker.as_ref()).await);
    checks.extend(github_checks(config).await);
    let model = llm_check(config).await;
    let served = model.level == Level::Ok && config.llm.provider == "openai";
    checks.push(model);
    if served {
        checks.push(window_check(config).await);
    }
    checks.push(journal_check(&config.state_dir));
    let redactor = config.redactor();
    for check in &mut checks {
        check.detail = redactor.redact(&check.detail);
        check.fix = check.fix.as_deref().map(|f| redactor.redact(f));
    }
    checks
}

/// The report, one line per check.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for check in checks {
        out.push_str(&check.to_string());
        out.push('\n');
    }
    let fails = checks.iter().filter(|c| c.level == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.level == Level::Warn).count();
    out.push_str(&format!(
        "{} checks: {} failed, {} warnings\n",
        checks.len(),
        fails,
        warns
    ));
    out
}

pub fn has_failure(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.level == Level::Fail)
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".to_string())
}

fn docker_failure(message: &str) -> Check {
    if message.to_ascii_lowercase().contains("permission denied") {
        Check::fail(
            "docker",
            message.to_string(),
            "this user may not use the Docker socket: add it to the `docker` group \
             (`sudo usermod -aG docker $USER`, then log in again) or run the runner as a user \
             that may; in docker-compose, mount /var/run/docker.sock and run with the socket's group.",
        )
    } else {
        Check::fail(
            "docker",
            message.to_string(),
            "start the Docker Engine (`sudo systemctl start docker`) or point DOCKER_HOST at a \
             running one (e.g. unix:///var/run/docker.sock).",
        )
    }
}

async fn image_checks(config: &Config, docker: Option<&bollard::Docker>) -> Vec<Check> {
    const NAME: &str = "sandbox image";
    let Some(docker) = docker else {
        return vec![Check::fail(
            NAME,
            "not checked: Docker is unreachable",
            "fix the docker check first.",
        )];
    };
    let mut checks = Vec::new();
    // Images named in the configuration must exist: they are never built.
    let mut named: Vec<(String, String)> = Vec::new();
    if let Some(image) = &config.sandbox.image {
        named.push((image.clone(), "sandbox.image".into()));
    }
    for (repo, target) in &config.targets {
        if let Some(image) = &target.image {
            named.push((image.clone(), format!("targets.\"{repo}\".image")));
        }
    }
    for (image, key) in &named {
        checks.push(match image_present(docker, image).await {
            Ok(true) => Check::ok(NAME, format!("{image} ({key}) is present")),
            Ok(false) => Check::fail(
                NAME,
                format!("{image} ({key}) is not present on the Docker Engine"),
                format!(
                    "build or load it (`docker build -t {image} ...` or `docker load`), or remove {key} to use the default image."
                ),
            ),
            Err(e) => Check::fail(
                NAME,
                format!("cannot inspect {image}: {e}"),
                "check the Docker Engine.",
            ),
        });
    }
    // Targets without their own image use `sandbox.image`, else the default one.
    if config.sandbox.image.is_none() {
        let tag = crate::sandbox::default_image_tag();
        checks.push(match image_present(docker, &tag).await {
            Ok(true) => Check::ok(NAME, format!("default image {tag} is present")),
            Ok(false) => default_image_missing(&tag),
            Err(e) => Check::fail(
                NAME,
                format!("cannot inspect {tag}: {e}"),
                "check the Docker Engine.",
            ),
        });
    }
    checks
}

fn default_image_missing(tag: &str) -> Check {
    const NAME: &str = "sandbox image";
    let root = is_root();
    let debootstrap = find_program("debootstrap").is_some();
    let apt = find_program("apt-get").is_some();
    let missing = format!("default image {tag} is missing");
    match (root, debootstrap, apt) {
        (true, true, _) => Check::warn(
            NAME,
            format!("{missing}; it can be built here (root, debootstrap present)"),
            "build it ahead of the first task (a few minutes): `agent-runner sandbox build`.",
        ),
        (true, false, true) => Check::warn(
            NAME,
            format!("{missing}; debootstrap is not installed but apt-get can install it"),
            "build it ahead of the first task: `agent-runner sandbox build` (installs debootstrap with apt-get), or `apt-get install debootstrap` first.",
        ),
        (true, false, false) => Check::fail(
            NAME,
            format!("{missing} and cannot be built: no debootstrap and no apt-get"),
            "install debootstrap, or build the image on a Debian/Ubuntu host and `docker save`/`docker load` it here, or set sandbox.image to a local image.",
        ),
        (false, _, _) => Check::fail(
            NAME,
            format!("{missing} and cannot be built by this user: debootstrap needs root"),
            "build it once as root (`sudo agent-runner sandbox build`), or set sandbox.image to a local image.",
        ),
    }
}

async fn image_present(docker: &bollard::Docker, tag: &str) -> Result<bool, String> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `name` on PATH or in the sbin directories (not on a normal user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

async fn github_checks(config: &Config) -> Vec<Check> {
    const TOKEN: &str = "github token";
    const REPO: &str = "dispatch repo";
    let credentials = match config.github_credentials() {
        Ok(credentials) => credentials,
        Err(e) => {
            return vec![
                Check::fail(
                    TOKEN,
                    e.to_string(),
                    "set GITHUB_TOKEN (or AGENT_RUNNER_GITHUB_TOKEN) to a token with the `repo` scope (classic) or issues, contents and pull requests write access (fine-grained), or configure a GitHub App (GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID, GITHUB_APP_PRIVATE_KEY_PATH).",
                ),
                Check::fail(
                    REPO,
                    "not checked: no credentials",
                    "fix the github token check first.",
                ),
            ];
        }
    };
    let github = match GitHub::with_credentials(&config.github_api_url, &credentials) {
        Ok(github) => github.with_policy(RetryPolicy {
            max_attempts: 2,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(2),
            secondary_wait: Duration::from_secs(5),
            max_rate_wait: Duration::from_secs(5),
            max_rate_waits: 0,
        }),
        Err(e) => {
            return vec![
                Check::fail(
                    TOKEN,
                    e.to_string(),
                    "set GITHUB_API_URL to https://api.github.com or https://HOST/api/v3 (GitHub Enterprise).",
                ),
                Check::fail(
                    REPO,
                    "not checked: bad API URL",
                    "fix the github token check first.",
                ),
            ];
        }
    };
    let mut checks = Vec::new();
    // An App has no user or scopes: minting an installation token is the check; its
    // permissions show in the dispatch repository check below.
    let identity = match &credentials {
        crate::github::Credentials::App(_) => github
            .git_token()
            .await
            .map(|_| Check::ok(TOKEN, "GitHub App: an installation token was minted")),
        crate::github::Credentials::Token(_) => github
            .token_info()
            .await
            .map(|info| scope_check(&info.login, info.scopes.as_deref())),
    };
    match identity {
        Ok(check) => checks.push(check),
        Err(e) => {
            let fix = match e.status() {
                Some(401) => {
                    "the token is wrong, expired or revoked: create a new one (classic: `repo` scope; fine-grained: issues, contents and pull requests read and write on the dispatch and target repositories) and set GITHUB_TOKEN."
                }
                None => {
                    "check GITHUB_API_URL and the network (proxy variables) between this host and GitHub."
                }
                Some(_) => "check GITHUB_API_URL and the token.",
            };
            checks.push(Check::fail(TOKEN, e.to_string(), fix));
            checks.push(Check::fail(
                REPO,
                "not checked: the token does not work",
                "fix the github token check first.",
            ));
            return checks;
        }
    }
    checks.push(match config.dispatch_repo() {
        Err(e) => Check::fail(
            REPO,
            e.to_string(),
            "set DISPATCH_REPO to `owner/repo`.",
        ),
        Ok(repo) => match github.repo_permissions(&repo).await {
            Ok(Some(p)) if !p.push => Check::fail(
                REPO,
                format!("{repo}: the token cannot write to it (permissions: push false)"),
                "give the token's user write access to the dispatch repository (it comments on and labels issues), or use a token that has it.",
            ),
            Ok(Some(p)) if p.admin => Check::warn(
                REPO,
                format!("{repo}: reachable; the token has admin rights on it"),
                "write access is enough: use a token of a user (or a fine-grained token) without admin on the repository.",
            ),
            Ok(Some(_)) => Check::ok(REPO, format!("{repo}: reachable, the token can write")),
            Ok(None) => Check::warn(
                REPO,
                format!("{repo}: reachable, but GitHub did not report the token's permissions"),
                "make sure the token can write issues, contents and pull requests there.",
            ),
            Err(e) => Check::fail(
                REPO,
                e.to_string(),
                match e.status() {
                    Some(404) => "check DISPATCH_REPO (owner/repo) and that the token can see the repository (a fine-grained token must list it).",
                    _ => "check DISPATCH_REPO and the token.",
                },
            ),
        },
    });
    checks
}

/// Classic tokens report their scopes; anything beyond `repo` / `public_repo` is a warning.
fn scope_check(login: &str, scopes: Option<&[String]>) -> Check {
    const TOKEN: &str = "github token";
    let Some(scopes) = scopes else {
        return Check::ok(
            TOKEN,
            format!(
                "valid, user {login}; scopes not reported (fine-grained or app token): its repository permissions are checked below"
            ),
        );
    };
    if !scopes.iter().any(|s| NEEDED_SCOPES.contains(&s.as_str())) {
        return Check::fail(
            TOKEN,
            format!(
                "valid, user {login}, but its scopes ({}) include neither `repo` nor `public_repo`",
                list_or_none(scopes)
            ),
            "create a token with the `repo` scope (`public_repo` if every repository is public) and set GITHUB_TOKEN.",
        );
    }
    let broad: Vec<&str> = scopes
        .iter()
        .map(String::as_str)
        .filter(|s| BROAD_SCOPES.contains(s))
        .collect();
    if broad.is_empty() {
        Check::ok(
            TOKEN,
            format!("valid, user {login}, scopes {}", list_or_none(scopes)),
        )
    } else {
        Check::warn(
            TOKEN,
            format!(
                "valid, user {login}, but it has more scopes than needed: {}",
                broad.join(", ")
            ),
            "create a token with only the `repo` scope (or a fine-grained token limited to the dispatch and target repositories) and set GITHUB_TOKEN.",
        )
    }
}

fn list_or_none(scopes: &[String]) -> String {
    if scopes.is_empty() {
        "none".into()
    } else {
        scopes.join(", ")
    }
}

async fn llm_check(config: &Config) -> Check {
    const NAME: &str = "model";
    let llm = &config.llm;
    if llm.provider == "replay" {
        let Some(path) = &llm.replay_file else {
            return Check::fail(
                NAME,
                "the replay provider has no transcript",
                "set LLM_REPLAY_FILE or pass --llm replay:FILE.",
            );
        };
        return match crate::llm::ReplayModel::load(path) {
            Ok(_) => Check::ok(
                NAME,
                format!("replay transcript {} is readable", path.display()),
            ),
            Err(e) => Check::fail(
                NAME,
                e.to_string(),
                "point LLM_REPLAY_FILE at a JSONL transcript written with --record.",
            ),
        };
    }
    let url = format!("{}/models", llm.base_url.trim_end_matches('/'));
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
    {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, format!("no HTTP client: {e}"), "report this bug."),
    };
    let mut request = client.get(&url);
    if let Some(key) = &llm.api_key {
        request = request.bearer_auth(key.expose());
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot reach {url}: {}", crate::sandbox::error_chain(&e)),
                "start the model server, or set LLM_BASE_URL to its OpenAI-compatible API root (e.g. http://localhost:11434/v1 for Ollama, http://localhost:8000/v1 for vLLM).",
            );
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status == 401 || status == 403 {
        return Check::fail(
            NAME,
            format!("{url} answered {status}: the key was refused"),
            "set LLM_API_KEY to a valid key for this server.",
        );
    }
    if !(200..300).contains(&status) {
        return Check::fail(
            NAME,
            format!("{url} answered {status}"),
            "check LLM_BASE_URL: it must be the OpenAI-compatible API root (ending in /v1 for most servers).",
        );
    }
    let ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("data").and_then(|d| d.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_string))
        .collect();
    if ids.contains(&llm.model) {
        Check::ok(NAME, format!("{} is served at {}", llm.model, llm.base_url))
    } else {
        let shown: Vec<&str> = ids.iter().take(10).map(String::as_str).collect();
        Check::fail(
            NAME,
            format!(
                "{} is not among the models served at {} (served: {})",
                llm.model,
                llm.base_url,
                if shown.is_empty() {
                    "none".into()
                } else {
                    shown.join(", ")
                }
            ),
            "set LLM_MODEL to a served model id, or load the model into the server (e.g. `ollama pull MODEL`).",
        )
    }
}

/// Below this many tokens, a window holds little of a repository.
const SMALL_WINDOW_TOKENS: u64 = 8192;

/// What the preflight probe sees: the context window prompts are packed to, and whether
/// the model explores with native tool calls or text actions.
async fn window_check(config: &Config) -> Check {
    const NAME: &str = "model window";
    let found = crate::llm::ChatModel::probe(&crate::llm::OpenAiModel::new(&config.llm)).await;
    let tools = match found.native_tools {
        Some(true) => "explores with native tool calls",
        Some(false) => "explores with text actions (no native tool call when offered one)",
        None => "explores with text actions (tool-call support unknown)",
    };
    let where_set = "serve the model with a larger window (Ollama `num_ctx`, vLLM `--max-model-len`, llama.cpp `-c`) and, if the server does not report it, set LLM_CONTEXT_TOKENS to it.";
    match found.context_tokens {
        None => Check::warn(
            NAME,
            format!(
                "the server does not report {}'s context window; {tools}",
                config.llm.model
            ),
            "set LLM_CONTEXT_TOKENS to the model's window, so prompts are packed to fit it instead of to agent.max_context_bytes.",
        ),
        Some(n) if n < SMALL_WINDOW_TOKENS => Check::warn(
            NAME,
            format!(
                "context window {n} tokens is small: the first prompt gets about half of it; {tools}"
            ),
            where_set,
        ),
        Some(n) => Check::ok(NAME, format!("context window {n} tokens; {tools}")),
    }
}

fn journal_check(dir: &Path) -> Check {
    const NAME: &str = "journal";
    let fix = format!(
        "make {} writable by this user, or set AGENT_RUNNER_STATE_DIR (or --state-dir) to a writable directory.",
        dir.display()
    );
    if let Err(e) = std::fs::create_dir_all(dir) {
        return Check::fail(NAME, format!("cannot create {}: {e}", dir.display()), fix);
    }
    match tempfile::NamedTempFile::new_in(dir) {
        Ok(_) => Check::ok(NAME, format!("{} is writable", dir.display())),
        Err(e) => Check::fail(NAME, format!("cannot write in {}: {e}", dir.display()), fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_judged() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(scope_check("u", Some(&s(&["repo"]))).level, Level::Ok);
        assert_eq!(
            scope_check("u", Some(&s(&["public_repo"]))).level,
            Level::Ok
        );
        assert_eq!(scope_check("u", None).level, Level::Ok);
        let broad = scope_check("u", Some(&s(&["repo", "delete_repo", "workflow"])));
        assert_eq!(broad.level, Level::Warn);
        assert!(broad.detail.contains("delete_repo, workflow"), "{broad}");
        let narrow = scope_check("u", Some(&s(&["gist"])));
        assert_eq!(narrow.level, Level::Fail);
        assert!(narrow.fix.unwrap_or_default().contains("`repo` scope"));
    }

    #[test]
    fn socket_permission_gets_its_own_fix() {
        let c = docker_failure(
            "Docker is unreachable at unix:///var/run/docker.sock: Permission denied (os error 13)",
        );
        assert!(c.fix.unwrap_or_default().contains("docker` group"));
        let c = docker_failure("Docker is unreachable at unix:///x.sock: Socket not found");
        assert!(
            c.fix
                .unwrap_or_default()
                .contains("start the Docker Engine")
        );
    }

    #[test]
    fn journal_dir_must_be_writable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(journal_check(dir.path()).level, Level::Ok);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let c = journal_check(&file.join("sub"));
        assert_eq!(c.level, Level::Fail);
        assert!(c.to_string().contains("AGENT_RUNNER_STATE_DIR"));
    }
}
