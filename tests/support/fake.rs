//! `FakeGitHub`: server lifecycle, shared state, the test-facing API, and the entry
//! handler that authenticates, records and (optionally) fails every request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::{git_http, rest};

/// Login of the user the token belongs to (`GET /user`, author of API-made comments/PRs).
pub const VIEWER_LOGIN: &str = "agent-runner-bot";

/// API path prefix, as on GitHub Enterprise Server. Routes also work without it.
pub(super) const API_PREFIX: &str = "/api/v3";

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path with the `/api/v3` prefix removed, e.g. `/repos/acme/widgets/pulls` or
    /// `/git/acme/widgets.git/info/refs`.
    pub path: String,
    /// Raw query string without `?` (empty if none).
    pub query: String,
    pub status: u16,
    /// Whether the request carried an `If-None-Match` header.
    pub if_none_match: bool,
    /// Request body as text (lossy UTF-8). Empty for git requests, whose bodies are streamed.
    pub body: String,
}

/// An issue as stored by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeIssue {
    pub number: u64,
    pub title: String,
    /// Empty when the issue has no body.
    pub body: String,
    /// `"open"` or `"closed"`.
    pub state: String,
    pub labels: Vec<String>,
    pub author: String,
}

/// A pull request as stored by the fake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakePull {
    pub number: u64,
    pub title: String,
    /// Empty when the PR has no body.
    pub body: String,
    /// Head branch name (no `owner:` prefix).
    pub head: String,
    pub base: String,
    /// `"open"` or `"closed"`.
    pub state: String,
    pub draft: bool,
}

/// When a [`FakeGitHub::set_hook`] hook runs for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookPoint {
    /// On arrival, before anything is applied (the recorded body is still empty). The hook
    /// returning false drops the request: it is answered 503 and has no effect.
    Before,
    /// After the request took effect and was recorded, before its response is sent.
    After,
}

/// See [`FakeGitHub::set_hook`].
pub type RequestHook = Arc<dyn Fn(HookPoint, &RecordedRequest) -> bool + Send + Sync>;

pub struct FakeGitHub {
    state: Arc<Mutex<State>>,
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

pub(super) type Shared = Arc<Mutex<State>>;

pub(super) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(super) struct State {
    pub token: String,
    /// Set by [`FakeGitHub::enable_app`].
    pub app: Option<FakeApp>,
    /// Installation tokens minted so far; accepted like `token`.
    pub app_tokens: Vec<String>,
    /// Expiry of each of `app_tokens`: an expired one is refused, as GitHub does.
    pub app_token_expiry: HashMap<String, DateTime<Utc>>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    pub repos: Vec<Repo>,
    /// Login -> user id.
    pub users: HashMap<String, u64>,
    /// Ids for issues, PRs, comments, labels, repos (GitHub ids are global too).
    pub next_id: u64,
    pub rate_used: u64,
    pub rate_reset: i64,
    pub request_count: u64,
    pub requests: Vec<RecordedRequest>,
    pub failures: Vec<Failure>,
    pub hook: Option<RequestHook>,
    /// `x-oauth-scopes` of `GET /user` (a classic token's scopes); `None`: no header, as
    /// for fine-grained tokens.
    pub token_scopes: Option<String>,
    /// `permissions` of every `GET /repos/{owner}/{repo}` answer; `None`: write access.
    pub repo_permissions: Option<serde_json::Value>,
}

/// A GitHub App installed once: `(app id, installation id, public key PEM)`.
pub(super) struct FakeApp {
    token_lifetime: chrono::TimeDelta,
    app_id: u64,
    installation_id: u64,
    public_key_pem: String,
}

pub(super) struct Failure {
    method: String,
    path_prefix: String,
    status: u16,
    headers: Vec<(String, String)>,
}

pub(super) struct Repo {
    pub id: u64,
    pub owner: String,
    pub name: String,
    pub default_branch: String,
    pub bare: PathBuf,
    pub created_at: DateTime<Utc>,
    /// Issues and pull requests; number `n` is at index `n - 1`.
    pub issues: Vec<Issue>,
    pub labels: Vec<LabelDef>,
}

pub(super) struct LabelDef {
    pub id: u64,
    pub name: String,
}

pub(super) struct Issue {
    pub id: u64,
    pub number: u64,
    pub title: String,
    pub body: Option<String>,
    /// `"open"` or `"closed"`.
    pub state: String,
    pub state_reason: Option<String>,
    pub labels: Vec<String>,
    pub author: String,
    pub author_association: String,
    pub comments: Vec<Comment>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Set when this "issue" is a pull request.
    pub pull: Option<Pull>,
}

pub(super) struct Pull {
    pub id: u64,
    pub head: String,
    /// Head tip when the PR was opened (shown if the branch is later deleted).
    pub head_sha: String,
    pub base: String,
    pub draft: bool,
}

pub(super) struct Comment {
    pub id: u64,
    pub body: String,
    pub author: String,
    pub author_association: String,
    pub created_at: DateTime<Utc>,
}

impl State {
    pub fn api(&self) -> String {
        format!("{}{API_PREFIX}", self.base)
    }

    pub fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn user_id(&mut self, login: &str) -> u64 {
        let next = self.users.len() as u64 + 1;
        *self.users.entry(login.to_string()).or_insert(next)
    }

    /// Case-insensitive, like GitHub.
    pub fn repo_index(&self, owner: &str, name: &str) -> Option<usize> {
        self.repos
            .iter()
            .position(|r| r.owner.eq_ignore_ascii_case(owner) && r.name.eq_ignore_ascii_case(name))
    }

    fn repo_by_full_name(&self, full_name: &str) -> &Repo {
        let (owner, name) = split_full_name(full_name);
        let index = self.repo_index(owner, name);
        &self.repos[index.unwrap_or_else(|| panic!("fake: no repo {full_name}"))]
    }

    fn repo_by_full_name_mut(&mut self, full_name: &str) -> &mut Repo {
        let (owner, name) = split_full_name(full_name);
        let index = self.repo_index(owner, name);
        &mut self.repos[index.unwrap_or_else(|| panic!("fake: no repo {full_name}"))]
    }

    /// Removes and returns the first injected failure matching this request.
    fn take_failure(&mut self, method: &str, path: &str) -> Option<Failure> {
        let index = self.failures.iter().position(|f| {
            (f.method == "*" || f.method.eq_ignore_ascii_case(method))
                && path.starts_with(&f.path_prefix)
        })?;
        Some(self.failures.remove(index))
    }
}

impl Repo {
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    pub fn issue(&self, number: u64) -> Option<&Issue> {
        let index = usize::try_from(number).ok()?.checked_sub(1)?;
        self.issues.get(index)
    }

    pub fn issue_mut(&mut self, number: u64) -> Option<&mut Issue> {
        let index = usize::try_from(number).ok()?.checked_sub(1)?;
        self.issues.get_mut(index)
    }

    /// Id of the repo label `name`, creating the label if needed (GitHub does the same when
    /// labels are added to an issue).
    pub fn ensure_label(&mut self, name: &str, next_id: &mut u64) -> u64 {
        if let Some(label) = self.labels.iter().find(|l| l.name == name) {
            return label.id;
        }
        *next_id += 1;
        self.labels.push(LabelDef {
            id: *next_id,
            name: name.to_string(),
        });
        *next_id
    }
}

fn split_full_name(full_name: &str) -> (&str, &str) {
    full_name
        .split_once('/')
        .unwrap_or_else(|| panic!("fake: repo name must be owner/name, got {full_name}"))
}

impl FakeGitHub {
    /// Starts the server on `127.0.0.1:0`. `token` is the only credential it accepts.
    ///
    /// The server runs on its own thread and runtime, so tests may block their own
    /// runtime (e.g. synchronous git2 calls) without starving it.
    pub async fn start(token: &str) -> FakeGitHub {
        let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        FakeGitHub::start_on(token, any_port, "127.0.0.1").await
    }

    /// Like [`FakeGitHub::start`], but listening on `bind` (e.g. `0.0.0.0:0`, so that
    /// containers reach it) and naming itself `http://{public_host}:PORT` in every URL it
    /// hands out (`api_url`, `clone_url`, `html_url`...), e.g. `host.docker.internal` for a
    /// client in a container.
    pub async fn start_on(
        token: &str,
        bind: std::net::SocketAddr,
        public_host: &str,
    ) -> FakeGitHub {
        let listener =
            std::net::TcpListener::bind(bind).unwrap_or_else(|e| panic!("fake: bind {bind}: {e}"));
        listener.set_nonblocking(true).expect("set_nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let base = format!("http://{public_host}:{port}");
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            app: None,
            app_tokens: Vec::new(),
            app_token_expiry: HashMap::new(),
            base: base.clone(),
            repos: Vec::new(),
            users: HashMap::new(),
            next_id: 1000,
            rate_used: 0,
            rate_reset: Utc::now().timestamp() + 3600,
            request_count: 0,
            requests: Vec::new(),
            failures: Vec::new(),
            hook: None,
            token_scopes: Some("repo".to_string()),
            repo_permissions: None,
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("fake runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    result = axum::serve(listener, app) => result.expect("fake server"),
                    _ = stopped => {}
                }
            });
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        });
        FakeGitHub {
            state,
            base,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Installs a GitHub App: `POST /app/installations/{installation_id}/access_tokens` with
    /// a JWT that `public_key_pem` verifies (RS256, `iss` = `app_id`, not expired, at most
    /// 10 minutes long) mints a token that is then accepted for the API and git.
    pub fn enable_app(&self, app_id: u64, installation_id: u64, public_key_pem: &str) {
        self.lock().app = Some(FakeApp {
            token_lifetime: chrono::TimeDelta::hours(1),
            app_id,
            installation_id,
            public_key_pem: public_key_pem.to_string(),
        });
    }

    /// How long tokens minted from now on live (GitHub: one hour).
    pub fn set_app_token_lifetime(&self, lifetime: std::time::Duration) {
        if let Some(app) = self.lock().app.as_mut() {
            app.token_lifetime = chrono::TimeDelta::from_std(lifetime).expect("lifetime");
        }
    }

    /// Installation tokens minted so far, oldest first.
    pub fn app_tokens(&self) -> Vec<String> {
        self.lock().app_tokens.clone()
    }

    /// What the program gets as `GITHUB_API_URL`, e.g. `http://127.0.0.1:PORT/api/v3`.
    pub fn api_url(&self) -> String {
        format!("{}{API_PREFIX}", self.base)
    }

    /// `http://127.0.0.1:PORT` (web and git root).
    pub fn base_url(&self) -> String {
        self.base.clone()
    }

    /// The URL git clients use for `full_name`; also the repo's `clone_url`.
    pub fn clone_url(&self, full_name: &str) -> String {
        format!("{}/git/{full_name}.git", self.base)
    }

    /// Serves `bare_repo` as `full_name` over the API and git smart HTTP.
    pub fn add_repo(&self, full_name: &str, default_branch: &str, bare_repo: &Path) {
        let (owner, name) = split_full_name(full_name);
        let mut st = self.lock();
        assert!(
            st.repo_index(owner, name).is_none(),
            "fake: {full_name} added twice"
        );
        st.user_id(owner);
        let id = st.new_id();
        st.repos.push(Repo {
            id,
            owner: owner.to_string(),
            name: name.to_string(),
            default_branch: default_branch.to_string(),
            bare: bare_repo
                .canonicalize()
                .unwrap_or_else(|_| bare_repo.into()),
            created_at: Utc::now(),
            issues: Vec::new(),
            labels: Vec::new(),
        });
    }

    /// Creates an open issue and returns its number.
    pub fn add_issue(
        &self,
        full_name: &str,
        title: &str,
        body: &str,
        labels: &[&str],
        author: &str,
        author_association: &str,
    ) -> u64 {
        let mut st = self.lock();
        st.user_id(author);
        let id = st.new_id();
        let mut next_id = st.next_id;
        let repo = st.repo_by_full_name_mut(full_name);
        for label in labels {
            repo.ensure_label(label, &mut next_id);
        }
        let number = repo.issues.len() as u64 + 1;
        let now = Utc::now();
        repo.issues.push(Issue {
            id,
            number,
            title: title.to_string(),
            body: Some(body.to_string()),
            state: "open".to_string(),
            state_reason: None,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            author: author.to_string(),
            author_association: author_association.to_string(),
            comments: Vec::new(),
            created_at: now,
            updated_at: now,
            closed_at: None,
            pull: None,
        });
        st.next_id = next_id;
        number
    }

    /// Adds a comment as `author` (e.g. a human replying on the dispatch issue).
    pub fn add_comment(
        &self,
        full_name: &str,
        number: u64,
        body: &str,
        author: &str,
        author_association: &str,
    ) {
        let mut st = self.lock();
        st.user_id(author);
        let id = st.new_id();
        let repo = st.repo_by_full_name_mut(full_name);
        let issue = repo
            .issue_mut(number)
            .unwrap_or_else(|| panic!("fake: no issue #{number}"));
        issue.updated_at = Utc::now();
        issue.comments.push(Comment {
            id,
            body: body.to_string(),
            author: author.to_string(),
            author_association: author_association.to_string(),
            created_at: issue.updated_at,
        });
    }

    /// Comment bodies on issue/PR `number`, oldest first.
    pub fn comments(&self, full_name: &str, number: u64) -> Vec<String> {
        let st = self.lock();
        let repo = st.repo_by_full_name(full_name);
        repo.issue(number)
            .map(|i| i.comments.iter().map(|c| c.body.clone()).collect())
            .unwrap_or_default()
    }

    /// All pull requests, by number.
    pub fn pulls(&self, full_name: &str) -> Vec<FakePull> {
        let st = self.lock();
        let repo = st.repo_by_full_name(full_name);
        repo.issues
            .iter()
            .filter_map(|issue| {
                let pull = issue.pull.as_ref()?;
                Some(FakePull {
                    number: issue.number,
                    title: issue.title.clone(),
                    body: issue.body.clone().unwrap_or_default(),
                    head: pull.head.clone(),
                    base: pull.base.clone(),
                    state: issue.state.clone(),
                    draft: pull.draft,
                })
            })
            .collect()
    }

    /// Label names on issue/PR `number`.
    pub fn labels_of(&self, full_name: &str, number: u64) -> Vec<String> {
        let st = self.lock();
        let repo = st.repo_by_full_name(full_name);
        repo.issue(number)
            .map(|i| i.labels.clone())
            .unwrap_or_default()
    }

    /// Issue (or PR, seen as an issue) `number`, if it exists.
    pub fn issue(&self, full_name: &str, number: u64) -> Option<FakeIssue> {
        let st = self.lock();
        let issue = st.repo_by_full_name(full_name).issue(number)?;
        Some(FakeIssue {
            number,
            title: issue.title.clone(),
            body: issue.body.clone().unwrap_or_default(),
            state: issue.state.clone(),
            labels: issue.labels.clone(),
            author: issue.author.clone(),
        })
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Makes the next request whose method matches (`"*"` for any) and whose path
    /// (without `/api/v3`) starts with `path_prefix` fail with `status`, a GitHub-style
    /// JSON error body and `headers` (which override the default rate-limit headers,
    /// e.g. `("retry-after", "1")` or `("x-ratelimit-remaining", "0")`).
    /// Several calls queue several failures.
    pub fn fail_next(
        &self,
        method: &str,
        path_prefix: &str,
        status: u16,
        headers: &[(&str, &str)],
    ) {
        self.lock().failures.push(Failure {
            method: method.to_string(),
            path_prefix: path_prefix.to_string(),
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
        });
    }

    /// Runs `hook` for every request, synchronously inside the request's handling: before
    /// it is applied (returning false drops it) and after it took effect but before the
    /// client sees the response. For tests that must act at an exact point of a client's
    /// conversation, e.g. kill the client right after its comment was created.
    pub fn set_hook(
        &self,
        hook: impl Fn(HookPoint, &RecordedRequest) -> bool + Send + Sync + 'static,
    ) {
        self.lock().hook = Some(Arc::new(hook));
    }

    /// Sets the scopes `GET /user` reports in `x-oauth-scopes` (default `"repo"`), e.g.
    /// `Some("repo, admin:org")`; `None` sends no header (a fine-grained token).
    pub fn set_token_scopes(&self, scopes: Option<&str>) {
        self.lock().token_scopes = scopes.map(str::to_string);
    }

    /// Sets the `permissions` the repository answers report for the token (default: push,
    /// triage and pull, no admin).
    pub fn set_repo_permissions(&self, admin: bool, push: bool) {
        self.lock().repo_permissions = Some(serde_json::json!({
            "admin": admin, "maintain": admin, "push": push, "triage": push, "pull": true,
        }));
    }

    /// Stops the server (dropping does the same).
    pub fn shutdown(self) {}

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts `Bearer <token>`, `token <token>` and Basic auth whose password is the token.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
    let credentials = credentials.trim();
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => credentials == token,
        "basic" => base64_decode(credentials)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .is_some_and(|pair| pair.split_once(':').is_some_and(|(_, p)| p == token)),
        _ => false,
    }
}

fn base64_decode(input: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.bytes().filter(|&c| c != b'=') {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Entry point for every request.
async fn handle(
    axum::extract::State(shared): axum::extract::State<Shared>,
    req: Request,
) -> Response {
    let method = req.method().to_string();
    let raw_path = req.uri().path().to_string();
    let path = match raw_path.strip_prefix(API_PREFIX) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.to_string(),
        _ => raw_path.clone(),
    };
    let query = req.uri().query().unwrap_or("").to_string();
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let is_git = path.starts_with("/git/");
    let hook = lock(&shared).hook.clone();
    let head = |status: u16, body: String| RecordedRequest {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        status,
        if_none_match: if_none_match.is_some(),
        body,
    };
    if let Some(hook) = &hook
        && !hook(HookPoint::Before, &head(0, String::new()))
    {
        lock(&shared).requests.push(head(503, String::new()));
        let response = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .body(Body::from("dropped by a test hook\n"))
            .expect("response");
        return response;
    }

    let app_reply = app_token_reply(&shared, req.headers(), &method, &path);
    let (ok, failure) = match app_reply {
        // Authenticated by the JWT, checked there.
        Some(_) => (true, None),
        None => authorize(&shared, req.headers(), &method, &path),
    };

    let (response, body_text) = if !ok && is_git {
        let response = Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"GitHub\"")
            .body(Body::from("Authentication required\n"))
            .expect("response");
        (response, String::new())
    } else if is_git && failure.is_none() {
        (git_http::serve(&shared, req, &path).await, String::new())
    } else {
        let body = axum::body::to_bytes(req.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).into_owned();
        let api = rest::ApiRequest {
            method: &method,
            raw_path: &raw_path,
            path: &path,
            query: &query,
            body: &body,
            if_none_match: if_none_match.as_deref(),
        };
        let response = match app_reply {
            Some(reply) => rest::finish(&mut lock(&shared), reply, &api, false),
            None => api_response(&shared, &api, ok, failure),
        };
        (response, text)
    };

    let recorded = head(response.status().as_u16(), body_text);
    lock(&shared).requests.push(recorded.clone());
    if let Some(hook) = &hook {
        hook(HookPoint::After, &recorded);
    }
    response
}

/// Whether the request carries the token and, if so, the injected failure it gets.
fn authorize(
    shared: &Shared,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> (bool, Option<Failure>) {
    let mut st = lock(shared);
    let now = Utc::now();
    let ok = authorized(headers, &st.token)
        || st.app_tokens.iter().any(|t| {
            authorized(headers, t) && st.app_token_expiry.get(t).is_some_and(|e| *e > now)
        });
    let failure = if ok {
        st.take_failure(method, path)
    } else {
        None
    };
    (ok, failure)
}

/// `POST /app/installations/{id}/access_tokens` when an App is enabled: 201 with a new
/// token for a valid JWT, 401 (GitHub's message) otherwise. `None`: not this route.
fn app_token_reply(
    shared: &Shared,
    headers: &HeaderMap,
    method: &str,
    path: &str,
) -> Option<rest::Reply> {
    use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    #[derive(serde::Deserialize)]
    struct Claims {
        iat: i64,
        exp: i64,
        iss: String,
    }
    let mut st = lock(shared);
    let app = st.app.as_ref()?;
    let installation = path
        .strip_prefix("/app/installations/")?
        .strip_suffix("/access_tokens")?;
    if method != "POST" {
        return None;
    }
    let jwt = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let key = DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()).expect("public key PEM");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    let now = Utc::now().timestamp();
    let valid = decode::<Claims>(jwt, &key, &validation).is_ok_and(|data| {
        let c = data.claims;
        c.iss == app.app_id.to_string()
            && c.iat <= now
            && c.exp - c.iat <= 600
            && c.exp - now <= 600
    });
    if !valid {
        return Some(rest::error(401, "A JSON web token could not be decoded"));
    }
    if installation != app.installation_id.to_string() {
        return Some(rest::error(404, "Not Found"));
    }
    let token = format!("ghs_{}", uuid::Uuid::new_v4().simple());
    let expires = Utc::now() + app.token_lifetime;
    st.app_tokens.push(token.clone());
    st.app_token_expiry.insert(token.clone(), expires);
    let expires_at = expires.to_rfc3339();
    Some(rest::Reply {
        status: 201,
        body: Some(serde_json::json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": {"contents": "write", "issues": "write", "pull_requests": "write"},
            "repository_selection": "all",
        })),
        headers: Vec::new(),
    })
}

fn api_response(
    shared: &Shared,
    api: &rest::ApiRequest,
    ok: bool,
    failure: Option<Failure>,
) -> Response {
    let mut st = lock(shared);
    let reply = match (ok, failure) {
        (false, _) => rest::error(401, "Bad credentials"),
        (true, Some(failure)) => failure_reply(&failure),
        (true, None) => rest::route(&mut st, api),
    };
    rest::finish(&mut st, reply, api, ok)
}

fn failure_reply(failure: &Failure) -> rest::Reply {
    let rate_limited = failure
        .headers
        .iter()
        .any(|(k, v)| k == "x-ratelimit-remaining" && v == "0");
    let message = match failure.status {
        403 | 429 if rate_limited => "API rate limit exceeded for user ID 1.".to_string(),
        403 | 429 => "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.".to_string(),
        status => StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .to_string(),
    };
    let mut reply = rest::error(failure.status, &message);
    reply.headers = failure.headers.clone();
    reply
}

pub(super) fn header_value(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
