//! GitHub's REST API through octocrab: the dispatch issue, its comments, the target
//! repository and the task's pull request. `api_url` points at github.com, GitHub Enterprise
//! (`https://HOST/api/v3`) or a local fake. There is no merge call anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method};
use octocrab::Octocrab;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::Secret;
use crate::dispatch::{IssueInput, RepoName};

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub answered {status} to {what}: {message}{hint}")]
    Api {
        what: String,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("GitHub could not be reached for {what}: {message}")]
    Transport { what: String, message: String },
    #[error("the GitHub API URL {url:?} is not valid: {message}")]
    BadUrl { url: String, message: String },
    #[error(
        "the GitHub App private key is not an RSA private key in PEM form ({message}); set GITHUB_APP_PRIVATE_KEY_PATH to the .pem file downloaded from the App's settings page"
    )]
    AppKey { message: String },
}

impl GitHubError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn from_octocrab(what: &str, error: octocrab::Error) -> GitHubError {
        match error {
            octocrab::Error::GitHub { source, .. } => {
                let status = source.status_code.as_u16();
                let mut message = source.message.clone();
                for detail in source.errors.iter().flatten() {
                    if let Some(m) = detail.get("message").and_then(|m| m.as_str()) {
                        message.push_str(&format!(" ({m})"));
                    }
                }
                GitHubError::Api {
                    what: what.to_string(),
                    status,
                    message,
                    hint: hint_for(status),
                }
            }
            other => GitHubError::Transport {
                what: what.to_string(),
                message: other.to_string(),
            },
        }
    }
}

/// What to check, after GitHub's own message; the same for token and App credentials, since
/// an error does not know which were used.
fn hint_for(status: u16) -> &'static str {
    match status {
        401 => {
            ". Check the credentials: GITHUB_TOKEN is missing, expired or revoked, or (with a GitHub App) GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID or the private key does not match the app"
        }
        403 => {
            ". The token lacks a permission (issues, contents and pull requests need write access) or a rate limit was hit"
        }
        404 => ". Check the repository name and that the token can see it",
        _ => "",
    }
}

/// The parts of a repository a task needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoInfo {
    pub clone_url: String,
    pub default_branch: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequestRef {
    pub number: u64,
    pub url: String,
}

impl From<RawPull> for PullRequestRef {
    fn from(pr: RawPull) -> PullRequestRef {
        PullRequestRef {
            number: pr.number,
            url: pr.html_url.unwrap_or_default(),
        }
    }
}

/// The issue or pull request a task targets, as context for the model.
#[derive(Debug, Clone)]
pub struct IssueText {
    pub title: String,
    pub body: String,
}

/// How the client waits and retries. Every call goes through it.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per call for 5xx and transport errors (rate-limit waits do not count).
    pub max_attempts: u32,
    /// First backoff for 5xx / transport errors; doubled each attempt, with jitter.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Wait after a secondary rate limit that names no `Retry-After` (GitHub asks ≥ 1 min).
    pub secondary_wait: Duration,
    /// Longest single wait for a rate-limit reset; longer resets fail the call.
    pub max_rate_wait: Duration,
    /// Rate-limit waits per call before giving up (a limit that never lifts).
    pub max_rate_waits: u32,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            secondary_wait: Duration::from_secs(60),
            max_rate_wait: Duration::from_secs(3700),
            max_rate_waits: 5,
        }
    }
}

impl RetryPolicy {
    /// Exponential backoff with full jitter in [d/2, d], so runners do not retry in step.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        exp.mul_f64(0.5 + jitter / 2.0)
            .max(Duration::from_millis(10))
    }
}

/// The last rate-limit figures GitHub reported, shared by clones of one client.
#[derive(Debug)]
struct RateState {
    /// -1 until a response said.
    remaining: AtomicI64,
    reset: AtomicI64,
}

/// What the poller got.
#[derive(Debug)]
pub enum Polled {
    /// 304: nothing changed since the ETag (not counted against the rate limit).
    NotModified,
    Issues {
        issues: Vec<IssueInput>,
        etag: Option<String>,
    },
}

/// A comment on an issue.
#[derive(Debug, Clone)]
pub struct CommentInfo {
    pub id: u64,
    pub author: String,
    pub body: String,
}

#[derive(Deserialize)]
struct RawUser {
    login: String,
}

#[derive(Deserialize)]
struct RawLabel {
    name: String,
}

#[derive(Deserialize)]
struct RawIssue {
    number: u64,
    title: String,
    body: Option<String>,
    #[serde(default)]
    labels: Vec<RawLabel>,
    pull_request: Option<serde_json::Value>,
    user: Option<RawUser>,
    author_association: Option<String>,
}

impl From<RawIssue> for IssueInput {
    fn from(issue: RawIssue) -> IssueInput {
        IssueInput {
            number: issue.number,
            title: issue.title,
            body: issue.body.unwrap_or_default(),
            labels: issue.labels.into_iter().map(|l| l.name).collect(),
            is_pull_request: issue.pull_request.is_some(),
            author: issue.user.map(|u| u.login).unwrap_or_default(),
            author_association: issue.author_association.unwrap_or_default(),
        }
    }
}

#[derive(Deserialize)]
struct RawComment {
    id: u64,
    body: Option<String>,
    user: Option<RawUser>,
}

#[derive(Deserialize)]
pub struct RawPull {
    number: u64,
    html_url: Option<String>,
    head: RawHead,
}

#[derive(Deserialize)]
struct RawHead {
    #[serde(rename = "ref")]
    ref_field: String,
}

#[derive(Deserialize)]
struct RawRepo {
    clone_url: Option<String>,
    default_branch: Option<String>,
}

/// A response read in full.
struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn has_next_page(&self) -> bool {
        self.header("link")
            .is_some_and(|l| l.contains("rel=\"next\""))
    }
}

/// How the runner authenticates to GitHub (see [`crate::config::Config::github_credentials`]).
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A personal access token (classic or fine-grained), used as is for the API and git.
    Token(Secret),
    /// A GitHub App installation: short-lived installation tokens are minted with a JWT
    /// signed by the App's private key.
    App(AppCredentials),
}

#[derive(Debug, Clone)]
pub struct AppCredentials {
    pub app_id: u64,
    pub installation_id: u64,
    /// The App's RSA private key, PEM.
    pub private_key: Secret,
}

/// An installation token is renewed when less than this is left: a clone or push that
/// starts with it must not see it expire halfway.
const RENEW_BEFORE: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Claims of the JWT that authenticates as the App itself (only to mint tokens).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct AppClaims {
    pub iat: i64,
    pub exp: i64,
    pub iss: String,
}

impl AppClaims {
    /// Issued 60 s in the past against clock drift; GitHub refuses an `exp` more than
    /// 10 minutes ahead, so 9 leaves a margin on the other side too.
    pub fn new(app_id: u64, now: i64) -> AppClaims {
        AppClaims {
            iat: now - 60,
            exp: now + 9 * 60,
            iss: app_id.to_string(),
        }
    }
}

/// An installation token and the client that uses it.
#[derive(Clone)]
struct Installation {
    client: Octocrab,
    token: Secret,
    expires_at: chrono::DateTime<chrono::Utc>,
}

/// Whether a token expiring at `expires_at` must be replaced at `now`.
fn needs_renewal(
    expires_at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    expires_at - now < RENEW_BEFORE
}

struct AppAuth {
    api_url: String,
    app_id: u64,
    installation_id: u64,
    key: octocrab::jsonwebtoken::EncodingKey,
    /// Held across a mint so concurrent callers wait for one token instead of minting many.
    current: tokio::sync::Mutex<Option<Installation>>,
    /// Every token minted so far, for redaction (an old one may still be in a message).
    minted: std::sync::Mutex<Vec<String>>,
}

enum Auth {
    Token { client: Octocrab, token: Secret },
    App(AppAuth),
}

#[derive(Clone)]
pub struct GitHub {
    auth: Arc<Auth>,
    policy: RetryPolicy,
    rate: Arc<RateState>,
}

/// A client for `api_url` sending `authorization` (a whole header value) or a token.
fn build_client(api_url: &str, auth: ClientAuth) -> Result<Octocrab, GitHubError> {
    let bad_url = |message: String| GitHubError::BadUrl {
        url: api_url.to_string(),
        message,
    };
    // octocrab retries 5xx and 429 immediately, POSTs included, which can duplicate a
    // comment or PR; without its `retry` feature it does not, and `send` owns waiting.
    let builder = Octocrab::builder()
        .base_uri(api_url)
        .map_err(|e| bad_url(e.to_string()))?
        .set_connect_timeout(Some(Duration::from_secs(15)))
        .set_read_timeout(Some(Duration::from_secs(60)));
    let builder = match auth {
        ClientAuth::Token(token) => builder.personal_token(token.expose().to_string()),
        ClientAuth::Header(value) => builder.add_header(http::header::AUTHORIZATION, value),
    };
    builder.build().map_err(|e| bad_url(e.to_string()))
}

enum ClientAuth<'a> {
    Token(&'a Secret),
    Header(String),
}

impl GitHub {
    /// A client authenticated with a fixed token.
    pub fn new(api_url: &str, token: &Secret) -> Result<GitHub, GitHubError> {
        GitHub::with_credentials(api_url, &Credentials::Token(token.clone()))
    }

    /// A client for either kind of credentials. For an App nothing is minted yet: the
    /// first call does it.
    pub fn with_credentials(
        api_url: &str,
        credentials: &Credentials,
    ) -> Result<GitHub, GitHubError> {
        let auth = match credentials {
            Credentials::Token(token) => Auth::Token {
                client: build_client(api_url, ClientAuth::Token(token))?,
                token: token.clone(),
            },
            Credentials::App(app) => {
                let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(
                    app.private_key.expose().as_bytes(),
                )
                .map_err(|e| GitHubError::AppKey {
                    message: e.to_string(),
                })?;
                // Fail on a bad URL now rather than at the first mint.
                build_client(api_url, ClientAuth::Header(String::new()))?;
                Auth::App(AppAuth {
                    api_url: api_url.to_string(),
                    app_id: app.app_id,
                    installation_id: app.installation_id,
                    key,
                    current: tokio::sync::Mutex::new(None),
                    minted: std::sync::Mutex::new(Vec::new()),
                })
            }
        };
        Ok(GitHub {
            auth: Arc::new(auth),
            policy: RetryPolicy::default(),
            rate: Arc::new(RateState {
                remaining: AtomicI64::new(-1),
                reset: AtomicI64::new(0),
            }),
        })
    }

    /// The token for git over https (`x-access-token`): the App's installation token,
    /// renewed when less than 5 minutes are left, so call this right before each clone or
    /// push rather than keeping the value.
    pub async fn git_token(&self) -> Result<Secret, GitHubError> {
        match self.auth.as_ref() {
            Auth::Token { token, .. } => Ok(token.clone()),
            Auth::App(app) => Ok(self.installation(app).await?.token),
        }
    }

    /// The tokens this client minted, which must be redacted like configured secrets.
    pub fn minted_tokens(&self) -> Vec<String> {
        match self.auth.as_ref() {
            Auth::Token { .. } => Vec::new(),
            Auth::App(app) => app
                .minted
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
        }
    }

    /// The config's redactor plus the tokens this client minted.
    pub fn redactor(&self, config: &crate::config::Config) -> crate::config::Redactor {
        crate::config::Redactor::new(
            config
                .secret_values()
                .into_iter()
                .map(str::to_string)
                .chain(self.minted_tokens()),
        )
    }

    /// The client to send the next request with.
    async fn client(&self) -> Result<Octocrab, GitHubError> {
        match self.auth.as_ref() {
            Auth::Token { client, .. } => Ok(client.clone()),
            Auth::App(app) => Ok(self.installation(app).await?.client),
        }
    }

    /// The cached installation token, minted anew when missing or about to expire. The
    /// daemon's long-lived client renews here, on its next call after the margin is hit.
    async fn installation(&self, app: &AppAuth) -> Result<Installation, GitHubError> {
        let mut current = app.current.lock().await;
        if let Some(installation) = current.as_ref()
            && !needs_renewal(installation.expires_at, chrono::Utc::now())
        {
            return Ok(installation.clone());
        }
        let installation = mint(app).await?;
        app.minted
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(installation.token.expose().to_string());
        *current = Some(installation.clone());
        Ok(installation)
    }

    pub fn with_policy(mut self, policy: RetryPolicy) -> GitHub {
        self.policy = policy;
        self
    }

    /// `x-ratelimit-remaining` of the last counted response (None before the first).
    pub fn rate_limit_remaining(&self) -> Option<i64> {
        let r = self.rate.remaining.load(Ordering::Relaxed);
        (r >= 0).then_some(r)
    }

    /// One request with GitHub's waiting rules: an exhausted rate limit is waited out until
    /// its reset, `Retry-After` and secondary limits are honoured, 5xx and transport errors
    /// are retried with jittered exponential backoff when `idempotent` (a POST that got a
    /// 5xx may have been applied, so it is not blindly resent). Never spins: every retry
    /// sleeps, and every loop is bounded.
    async fn send(
        &self,
        what: &str,
        method: Method,
        route: &str,
        body: Option<&serde_json::Value>,
        headers: Option<HeaderMap>,
        idempotent: bool,
    ) -> Result<Reply, GitHubError> {
        let (mut attempt, mut rate_waits) = (0u32, 0u32);
        loop {
            self.wait_for_reset(what).await?;
            let client = self.client().await?;
            let result = match method.clone() {
                Method::GET => client._get_with_headers(route, headers.clone()).await,
                Method::POST => client._post(route, body).await,
                Method::PATCH => client._patch(route, body).await,
                Method::PUT => client._put(route, body).await,
                Method::DELETE => client._delete(route, body).await,
                other => {
                    return Err(GitHubError::Transport {
                        what: what.to_string(),
                        message: format!("unsupported method {other}"),
                    });
                }
            };
            let response = match result {
                Ok(response) => response,
                Err(e) => {
                    attempt += 1;
                    if !idempotent || attempt >= self.policy.max_attempts {
                        return Err(GitHubError::from_octocrab(what, e));
                    }
                    let delay = self.policy.backoff(attempt - 1);
                    tracing::warn!(what, error = %e, delay_ms = delay.as_millis() as u64, "GitHub unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let status = response.status().as_u16();
            let headers_in = response.headers().clone();
            let body_text = client
                .body_to_string(response)
                .await
                .map_err(|e| GitHubError::from_octocrab(what, e))?;
            let reply = Reply {
                status,
                headers: headers_in,
                body: body_text,
            };
            self.note_rate(&reply);
            if let Some(wait) = self.rate_limit_wait(&reply) {
                rate_waits += 1;
                if rate_waits > self.policy.max_rate_waits || wait > self.policy.max_rate_wait {
                    return Err(self.api_error(what, &reply));
                }
                tracing::warn!(
                    what,
                    status,
                    wait_secs = wait.as_secs_f64(),
                    "GitHub rate limit; waiting"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            if status >= 500 && idempotent {
                attempt += 1;
                if attempt < self.policy.max_attempts {
                    let delay = self.policy.backoff(attempt - 1);
                    tracing::warn!(
                        what,
                        status,
                        delay_ms = delay.as_millis() as u64,
                        "GitHub server error; retrying"
                    );
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            return Ok(reply);
        }
    }

    /// Before a request: if the last response said the limit is spent, sleep until reset.
    async fn wait_for_reset(&self, what: &str) -> Result<(), GitHubError> {
        if self.rate.remaining.load(Ordering::Relaxed) != 0 {
            return Ok(());
        }
        let until = self.rate.reset.load(Ordering::Relaxed) - chrono::Utc::now().timestamp();
        if until > 0 {
            let wait = Duration::from_secs(until as u64 + 1);
            if wait > self.policy.max_rate_wait {
                return Err(GitHubError::Api {
                    what: what.to_string(),
                    status: 403,
                    message: format!("the rate limit resets only in {until} s"),
                    hint: "",
                });
            }
            tracing::info!(
                what,
                wait_secs = wait.as_secs(),
                "rate limit spent; waiting for its reset"
            );
            tokio::time::sleep(wait).await;
        }
        // Unknown again until the next response: a stale 0 must not block forever.
        self.rate.remaining.store(-1, Ordering::Relaxed);
        Ok(())
    }

    fn note_rate(&self, reply: &Reply) {
        if reply.status == 304 {
            return;
        }
        let num = |name: &str| {
            reply
                .header(name)
                .and_then(|v| v.trim().parse::<i64>().ok())
        };
        if let Some(remaining) = num("x-ratelimit-remaining") {
            self.rate.remaining.store(remaining, Ordering::Relaxed);
        }
        if let Some(reset) = num("x-ratelimit-reset") {
            self.rate.reset.store(reset, Ordering::Relaxed);
        }
    }

    /// How long to wait before resending, if this reply is a rate limit (primary: wait for
    /// the reset; secondary: `Retry-After`, else the policy's default). GitHub did not act
    /// on a rate-limited request, so any method may be resent.
    fn rate_limit_wait(&self, reply: &Reply) -> Option<Duration> {
        if reply.status != 429 && reply.status != 403 {
            return None;
        }
        let retry_after = reply
            .header("retry-after")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let spent = reply.header("x-ratelimit-remaining").map(str::trim) == Some("0");
        let secondary = reply.body.to_ascii_lowercase().contains("rate limit");
        if let Some(secs) = retry_after {
            return Some(Duration::from_secs(secs.max(1)));
        }
        if spent {
            let reset = reply
                .header("x-ratelimit-reset")
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(0);
            let until = (reset - chrono::Utc::now().timestamp()).max(0) as u64;
            // The reset is an epoch second; one more second covers clock rounding.
            return Some(Duration::from_secs(until + 1));
        }
        if reply.status == 429 || secondary {
            return Some(self.policy.secondary_wait);
        }
        None
    }

    fn api_error(&self, what: &str, reply: &Reply) -> GitHubError {
        api_error(what, reply, hint_for(reply.status))
    }

    /// A call whose 2xx body is JSON of type `T`.
    async fn json<T: DeserializeOwned>(
        &self,
        what: &str,
        method: Method,
        route: &str,
        body: Option<&serde_json::Value>,
        idempotent: bool,
    ) -> Result<T, GitHubError> {
        let reply = self
            .send(what, method, route, body, None, idempotent)
            .await?;
        self.parse(what, &reply)
    }

    fn parse<T: DeserializeOwned>(&self, what: &str, reply: &Reply) -> Result<T, GitHubError> {
        if !(200..300).contains(&reply.status) {
            return Err(self.api_error(what, reply));
        }
        serde_json::from_str(&reply.body).map_err(|e| GitHubError::Api {
            what: what.to_string(),
            status: reply.status,
            message: format!("unexpected response: {e}"),
            hint: "",
        })
    }

    pub async fn issue(&self, repo: &RepoName, number: u64) -> Result<IssueInput, GitHubError> {
        let what = format!("reading issue {repo}#{number}");
        let route = format!("/repos/{}/{}/issues/{number}", repo.owner, repo.name);
        let issue: RawIssue = self.json(&what, Method::GET, &route, None, true).await?;
        Ok(issue.into())
    }

    pub async fn issue_text(&self, repo: &RepoName, number: u64) -> Result<IssueText, GitHubError> {
        let issue = self.issue(repo, number).await?;
        Ok(IssueText {
            title: issue.title,
            body: issue.body,
        })
    }

    /// Open issues carrying `label`, oldest first, with a conditional request: given the
    /// ETag of the last answer, an unchanged list is a 304 that costs no rate limit. Newest
    /// first on the wire so that a new issue always changes the first page (the one the
    /// ETag covers); further pages are read only when the first one changed.
    pub async fn list_labelled_issues(
        &self,
        repo: &RepoName,
        label: &str,
        etag: Option<&str>,
    ) -> Result<Polled, GitHubError> {
        let what = format!("listing open `{label}` issues of {repo}");
        let route = |page: u32| {
            format!(
                "/repos/{}/{}/issues?state=open&labels={}&sort=created&direction=desc&per_page=100&page={page}",
                repo.owner,
                repo.name,
                encode(label)
            )
        };
        let mut headers = HeaderMap::new();
        if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
            headers.insert(http::header::IF_NONE_MATCH, tag);
        }
        let first = self
            .send(&what, Method::GET, &route(1), None, Some(headers), true)
            .await?;
        if first.status == 304 {
            return Ok(Polled::NotModified);
        }
        let new_etag = first.header("etag").map(str::to_string);
        let mut raw: Vec<RawIssue> = self.parse(&what, &first)?;
        let mut more = first.has_next_page();
        let mut page = 1;
        while more && page < 50 {
            page += 1;
            let reply = self
                .send(&what, Method::GET, &route(page), None, None, true)
                .await?;
            let items: Vec<RawIssue> = self.parse(&what, &reply)?;
            more = reply.has_next_page() && !items.is_empty();
            raw.extend(items);
        }
        let mut issues: Vec<IssueInput> = raw.into_iter().map(IssueInput::from).collect();
        issues.sort_by_key(|i| i.number);
        Ok(Polled::Issues {
            issues,
            etag: new_etag,
        })
    }

    pub async fn comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let what = format!("commenting on {repo}#{number}");
        let route = format!(
            "/repos/{}/{}/issues/{number}/comments",
            repo.owner, repo.name
        );
        let payload = serde_json::json!({ "body": body });
        // Not idempotent: a 5xx may have created the comment.
        let _: serde_json::Value = self
            .json(&what, Method::POST, &route, Some(&payload), false)
            .await?;
        Ok(())
    }

    /// All comments of an issue, oldest first.
    pub async fn comments(
        &self,
        repo: &RepoName,
        number: u64,
    ) -> Result<Vec<CommentInfo>, GitHubError> {
        let what = format!("reading comments of {repo}#{number}");
        let mut out = Vec::new();
        for page in 1..=50 {
            let route = format!(
                "/repos/{}/{}/issues/{number}/comments?per_page=100&page={page}",
                repo.owner, repo.name
            );
            let reply = self
                .send(&what, Method::GET, &route, None, None, true)
                .await?;
            let items: Vec<RawComment> = self.parse(&what, &reply)?;
            let done = items.is_empty() || !reply.has_next_page();
            out.extend(items.into_iter().map(|c| CommentInfo {
                id: c.id,
                author: c.user.map(|u| u.login).unwrap_or_default(),
                body: c.body.unwrap_or_default(),
            }));
            if done {
                break;
            }
        }
        Ok(out)
    }

    /// Adds labels (creating them on the repository if needed). Idempotent on GitHub.
    pub async fn add_labels(
        &self,
        repo: &RepoName,
        number: u64,
        labels: &[&str],
    ) -> Result<(), GitHubError> {
        let what = format!("labelling {repo}#{number}");
        let route = format!("/repos/{}/{}/issues/{number}/labels", repo.owner, repo.name);
        let payload = serde_json::json!({ "labels": labels });
        let _: serde_json::Value = self
            .json(&what, Method::POST, &route, Some(&payload), true)
            .await?;
        Ok(())
    }

    /// Removes a label; a label that is not there is not an error.
    pub async fn remove_label(
        &self,
        repo: &RepoName,
        number: u64,
        label: &str,
    ) -> Result<(), GitHubError> {
        let what = format!("removing label `{label}` from {repo}#{number}");
        let route = format!(
            "/repos/{}/{}/issues/{number}/labels/{}",
            repo.owner,
            repo.name,
            encode(label)
        );
        let reply = self
            .send(&what, Method::DELETE, &route, None, None, true)
            .await?;
        match reply.status {
            200..=299 | 404 => Ok(()),
            _ => Err(self.api_error(&what, &reply)),
        }
    }

    pub async fn repo_info(&self, repo: &RepoName) -> Result<RepoInfo, GitHubError> {
        let what = format!("reading repository {repo}");
        let route = format!("/repos/{}/{}", repo.owner, repo.name);
        let info: RawRepo = self.json(&what, Method::GET, &route, None, true).await?;
        let missing = |field: &str| GitHubError::Api {
            what: what.clone(),
            status: 200,
            message: format!("the repository has no {field}"),
            hint: "",
        };
        Ok(RepoInfo {
            clone_url: info.clone_url.ok_or_else(|| missing("clone_url"))?,
            default_branch: info
                .default_branch
                .ok_or_else(|| missing("default_branch"))?,
        })
    }

    /// The open pull request whose head is `branch` of `repo`, if any.
    pub async fn find_open_pr(
        &self,
        repo: &RepoName,
        branch: &str,
    ) -> Result<Option<PullRequestRef>, GitHubError> {
        let what = format!("listing pull requests of {repo}");
        let route = format!(
            "/repos/{}/{}/pulls?state=open&head={}&per_page=10",
            repo.owner,
            repo.name,
            encode(&format!("{}:{branch}", repo.owner))
        );
        let pulls: Vec<RawPull> = self.json(&what, Method::GET, &route, None, true).await?;
        Ok(pulls
            .into_iter()
            .find(|pr| pr.head.ref_field == branch)
            .map(PullRequestRef::from))
    }

    pub async fn create_pr(
        &self,
        repo: &RepoName,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequestRef, GitHubError> {
        let what = format!("opening a pull request on {repo}");
        let route = format!("/repos/{}/{}/pulls", repo.owner, repo.name);
        let payload =
            serde_json::json!({ "title": title, "head": head, "base": base, "body": body });
        // Not resent on 5xx: the caller looks for the PR first (see `open_or_update_pr`).
        let pr: RawPull = self
            .json(&what, Method::POST, &route, Some(&payload), false)
            .await?;
        Ok(pr.into())
    }

    pub async fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        title: &str,
        body: &str,
    ) -> Result<PullRequestRef, GitHubError> {
        let what = format!("updating pull request {repo}#{number}");
        let route = format!("/repos/{}/{}/pulls/{number}", repo.owner, repo.name);
        let payload = serde_json::json!({ "title": title, "body": body });
        let pr: RawPull = self
            .json(&what, Method::PATCH, &route, Some(&payload), true)
            .await?;
        Ok(pr.into())
    }

    /// Opens the task's pull request, or updates the open one for its branch: a re-run never
    /// opens a second one. The body carries the correlation markers from the start, since the
    /// backend reads them only when the PR is opened.
    pub async fn open_or_update_pr(
        &self,
        repo: &RepoName,
        branch: &str,
        base: &str,
        title: &str,
        body: &str,
    ) -> Result<(PullRequestRef, bool), GitHubError> {
        if let Some(existing) = self.find_open_pr(repo, branch).await? {
            return Ok((
                self.update_pr(repo, existing.number, title, body).await?,
                false,
            ));
        }
        match self.create_pr(repo, title, branch, base, body).await {
            Ok(pr) => Ok((pr, true)),
            // Opened meanwhile, or by an attempt whose answer was lost (422), or the create
            // may have been applied before a 5xx: look again before failing.
            Err(e) if matches!(e.status(), Some(422) | Some(500..=599)) => {
                match self.find_open_pr(repo, branch).await? {
                    Some(existing) => Ok((
                        self.update_pr(repo, existing.number, title, body).await?,
                        false,
                    )),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }
}

/// Mints an installation token: `POST /app/installations/{id}/access_tokens`, authenticated
/// as the App by a fresh JWT. Sent once: a failure fails the call (the daemon retries the
/// task later), and minting twice would be harmless anyway.
async fn mint(app: &AppAuth) -> Result<Installation, GitHubError> {
    use octocrab::jsonwebtoken::{Algorithm, Header, encode};
    let what = format!(
        "minting an installation token for GitHub App {} (installation {})",
        app.app_id, app.installation_id
    );
    let claims = AppClaims::new(app.app_id, chrono::Utc::now().timestamp());
    let jwt = encode(&Header::new(Algorithm::RS256), &claims, &app.key).map_err(|e| {
        GitHubError::AppKey {
            message: e.to_string(),
        }
    })?;
    let client = build_client(&app.api_url, ClientAuth::Header(format!("Bearer {jwt}")))?;
    let route = format!("/app/installations/{}/access_tokens", app.installation_id);
    let transport = |e: octocrab::Error| GitHubError::Transport {
        what: what.clone(),
        message: e.to_string(),
    };
    let response = client
        ._post(route.as_str(), None::<&()>)
        .await
        .map_err(transport)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = client.body_to_string(response).await.map_err(transport)?;
    let reply = Reply {
        status,
        headers,
        body,
    };
    if !(200..300).contains(&status) {
        let hint = match status {
            401 => {
                ". Check GITHUB_APP_ID and the private key (GITHUB_APP_PRIVATE_KEY_PATH): GitHub did not accept the JWT signed with it. Use the App's current key, and check this host's clock"
            }
            404 => {
                ". Check GITHUB_APP_INSTALLATION_ID: the App has no such installation (see the App's installations page)"
            }
            _ => hint_for(status),
        };
        return Err(api_error(&what, &reply, hint));
    }
    #[derive(Deserialize)]
    struct Minted {
        token: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    }
    let minted: Minted = serde_json::from_str(&reply.body).map_err(|e| GitHubError::Api {
        what: what.clone(),
        status,
        message: format!("unexpected response: {e}"),
        hint: "",
    })?;
    let token = Secret::new(minted.token);
    tracing::info!(
        app_id = app.app_id,
        installation_id = app.installation_id,
        expires_at = %minted.expires_at,
        "minted a GitHub App installation token"
    );
    Ok(Installation {
        client: build_client(&app.api_url, ClientAuth::Token(&token))?,
        token,
        expires_at: minted.expires_at,
    })
}

/// A non-2xx reply as an error: GitHub's `message` and its `errors` details, plus `hint`.
fn api_error(what: &str, reply: &Reply, hint: &'static str) -> GitHubError {
    #[derive(Deserialize)]
    struct Message {
        message: Option<String>,
        errors: Option<Vec<serde_json::Value>>,
    }
    let parsed: Option<Message> = serde_json::from_str(&reply.body).ok();
    let mut message = parsed
        .as_ref()
        .and_then(|m| m.message.clone())
        .unwrap_or_else(|| reply.body.chars().take(200).collect());
    for detail in parsed.iter().flat_map(|m| m.errors.iter().flatten()) {
        if let Some(m) = detail.get("message").and_then(|m| m.as_str()) {
            message.push_str(&format!(" ({m})"));
        }
    }
    GitHubError::Api {
        what: what.to_string(),
        status: reply.status,
        message,
        hint,
    }
}

/// Percent-encodes a path segment or query value (labels may hold spaces or `:`).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether an error is worth retrying the whole task for later (GitHub down or rate
/// limited), as opposed to one the task itself caused.
pub fn is_transient(error: &GitHubError) -> bool {
    match error {
        GitHubError::Transport { .. } => true,
        // A 403 that is not a rate limit is a permission problem: retrying will not help.
        GitHubError::Api {
            status, message, ..
        } => {
            *status >= 500
                || *status == 429
                || (*status == 403 && message.to_ascii_lowercase().contains("rate limit"))
        }
        GitHubError::BadUrl { .. } | GitHubError::AppKey { .. } => false,
    }
}

/// Creating dispatch issues (the `dispatch` command: trying the runner without the backend).
impl GitHub {
    /// Opens an issue with exactly `title`, `body` and `labels`, as the backend does; returns
    /// its number.
    pub async fn create_issue(
        &self,
        repo: &RepoName,
        title: &str,
        body: &str,
        labels: &[&str],
    ) -> Result<u64, GitHubError> {
        let what = format!("opening an issue in {repo}");
        let route = format!("/repos/{}/{}/issues", repo.owner, repo.name);
        let payload = serde_json::json!({ "title": title, "body": body, "labels": labels });
        // Not idempotent: a 5xx may have created the issue.
        let created: serde_json::Value = self
            .json(&what, Method::POST, &route, Some(&payload), false)
            .await?;
        created
            .get("number")
            .and_then(|n| n.as_u64())
            .ok_or_else(|| GitHubError::Api {
                what,
                status: 201,
                message: "the answer has no issue number".into(),
                hint: "",
            })
    }
}

/// What a token is (`GET /user`) and what it may do on a repository: `agent-runner doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub login: String,
    /// The classic token's scopes (`x-oauth-scopes`); `None` when GitHub does not say
    /// (fine-grained tokens, GitHub App tokens).
    pub scopes: Option<Vec<String>>,
}

/// The token's permissions on a repository, as `GET /repos/{owner}/{repo}` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub struct RepoPermissions {
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub push: bool,
    #[serde(default)]
    pub pull: bool,
}

impl GitHub {
    /// The token's user and, for classic tokens, its scopes.
    pub async fn token_info(&self) -> Result<TokenInfo, GitHubError> {
        let what = "reading the token's user (GET /user)";
        let reply = self
            .send(what, Method::GET, "/user", None, None, true)
            .await?;
        let user: RawUser = self.parse(what, &reply)?;
        let scopes = reply.header("x-oauth-scopes").map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        Ok(TokenInfo {
            login: user.login,
            scopes,
        })
    }

    /// The token's permissions on `repo`; `None` when the answer carries none.
    pub async fn repo_permissions(
        &self,
        repo: &RepoName,
    ) -> Result<Option<RepoPermissions>, GitHubError> {
        #[derive(Deserialize)]
        struct WithPermissions {
            permissions: Option<RepoPermissions>,
        }
        let what = format!("reading repository {repo}");
        let route = format!("/repos/{}/{}", repo.owner, repo.name);
        let answer: WithPermissions = self.json(&what, Method::GET, &route, None, true).await?;
        Ok(answer.permissions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = RetryPolicy {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        for attempt in 0..10 {
            let d = policy.backoff(attempt);
            let cap = Duration::from_millis(100 * (1 << attempt.min(16))).min(policy.max_delay);
            assert!(
                d <= cap && d >= cap / 2,
                "attempt {attempt}: {d:?} vs {cap:?}"
            );
        }
    }

    #[test]
    fn app_jwt_claims_are_backdated_and_short_lived() {
        let now = 1_700_000_000;
        let claims = AppClaims::new(4242, now);
        assert_eq!(claims.iss, "4242");
        assert_eq!(claims.iat, now - 60);
        assert!(claims.exp > now && claims.exp - now <= 600, "{claims:?}");
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"iat": now - 60, "exp": now + 540, "iss": "4242"})
        );
    }

    #[test]
    fn installation_tokens_are_renewed_five_minutes_before_expiry() {
        let now = chrono::Utc::now();
        assert!(!needs_renewal(now + chrono::TimeDelta::minutes(59), now));
        assert!(!needs_renewal(now + chrono::TimeDelta::seconds(301), now));
        assert!(needs_renewal(now + chrono::TimeDelta::seconds(299), now));
        assert!(needs_renewal(now - chrono::TimeDelta::seconds(1), now));
    }

    #[test]
    fn a_key_that_is_not_pem_is_a_clear_error() {
        let credentials = Credentials::App(AppCredentials {
            app_id: 1,
            installation_id: 2,
            private_key: Secret::new("not a key"),
        });
        let Err(err) = GitHub::with_credentials("http://127.0.0.1:1/api/v3", &credentials) else {
            panic!("a garbage key was accepted");
        };
        let message = err.to_string();
        assert!(message.contains("GITHUB_APP_PRIVATE_KEY_PATH"), "{message}");
        assert!(!message.contains("not a key"), "{message}");
    }

    #[test]
    fn labels_are_encoded() {
        assert_eq!(encode("agent:in-progress"), "agent%3Ain-progress");
        assert_eq!(encode("a b"), "a%20b");
    }
}
