//! The daemon's HTTP side: `POST /webhook` (GitHub `issues` events, HMAC-verified),
//! `GET /metrics` (Prometheus text) and `GET /healthz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::config::Secret;
use crate::dispatch::IssueInput;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot listen on {addr}: {source}. Pick another address with --listen or AGENT_RUNNER_LISTEN"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PatchLabel {
    pub format: String,
    pub outcome: String,
}

/// Everything `/metrics` shows. Cheap to share: every metric is atomic.
pub struct Metrics {
    registry: Registry,
    pub tasks_processed: Family<OutcomeLabel, Counter>,
    pub task_duration: Histogram,
    pub rate_limit_remaining: Gauge<i64, AtomicI64>,
    pub queue_depth: Gauge<i64, AtomicI64>,
    pub running_tasks: Gauge<i64, AtomicI64>,
    pub sandbox_exec_seconds: Histogram,
    pub llm_calls: Counter<u64, AtomicU64>,
    pub llm_tokens: Family<KindLabel, Counter>,
    pub patch_outcomes: Family<PatchLabel, Counter>,
    pub webhook_deliveries: Family<OutcomeLabel, Counter>,
    pub polls: Family<OutcomeLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut registry = Registry::default();
        let tasks_processed = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "agent_tasks_processed",
            "Tasks finished, by outcome (done, failed, retry, skipped)",
            tasks_processed.clone(),
        );
        // 10 s .. ~3 h: tasks are minutes long.
        let task_duration = Histogram::new(exponential_buckets(10.0, 2.0, 11));
        registry.register(
            "agent_task_duration_seconds",
            "Wall time of one task attempt",
            task_duration.clone(),
        );
        let rate_limit_remaining = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "github_api_rate_limit_remaining",
            "x-ratelimit-remaining of the last counted GitHub response",
            rate_limit_remaining.clone(),
        );
        let queue_depth = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "agent_queue_depth",
            "Tasks queued and due",
            queue_depth.clone(),
        );
        let running_tasks = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "agent_running_tasks",
            "Tasks being worked on",
            running_tasks.clone(),
        );
        let sandbox_exec_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 14));
        registry.register(
            "agent_sandbox_exec_seconds",
            "Duration of test runs in the sandbox",
            sandbox_exec_seconds.clone(),
        );
        let llm_calls = Counter::<u64, AtomicU64>::default();
        registry.register("agent_llm_calls", "Model replies", llm_calls.clone());
        let llm_tokens = Family::<KindLabel, Counter>::default();
        registry.register(
            "agent_llm_tokens",
            "Tokens, by kind (prompt, completion)",
            llm_tokens.clone(),
        );
        let patch_outcomes = Family::<PatchLabel, Counter>::default();
        registry.register(
            "agent_patch_outcomes",
            "Edit sets applied or rejected, by edit format",
            patch_outcomes.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "agent_webhook_deliveries",
            "Webhook deliveries, by outcome (queued, ignored, unauthorized)",
            webhook_deliveries.clone(),
        );
        let polls = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "agent_polls",
            "Polls of the dispatch repository, by outcome (not_modified, changed, error)",
            polls.clone(),
        );
        Metrics {
            registry,
            tasks_processed,
            task_duration,
            rate_limit_remaining,
            queue_depth,
            running_tasks,
            sandbox_exec_seconds,
            llm_calls,
            llm_tokens,
            patch_outcomes,
            webhook_deliveries,
            polls,
        }
    }
}

impl Metrics {
    pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the server needs from the daemon.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// None: webhooks are refused (no secret configured).
    pub webhook_secret: Option<Secret>,
    /// `owner/repo` of the dispatch repository; events from elsewhere are ignored.
    pub dispatch_repo: String,
    pub dispatch_label: String,
    pub intake: mpsc::Sender<IssueInput>,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/webhook", post(webhook))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)
}

pub async fn bind(addr: &str) -> Result<tokio::net::TcpListener, ServerError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// `X-Hub-Signature-256: sha256=<hex>` over the raw body, compared in constant time.
pub fn signature_valid(secret: &Secret, body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Deserialize)]
struct IssuesEvent {
    action: String,
    issue: WebhookIssue,
    repository: WebhookRepo,
}

#[derive(Deserialize)]
struct WebhookIssue {
    number: u64,
    title: String,
    body: Option<String>,
    #[serde(default)]
    labels: Vec<WebhookLabel>,
    pull_request: Option<serde_json::Value>,
    user: Option<WebhookUser>,
    author_association: Option<String>,
    state: Option<String>,
}

#[derive(Deserialize)]
struct WebhookLabel {
    name: String,
}

#[derive(Deserialize)]
struct WebhookUser {
    login: String,
}

#[derive(Deserialize)]
struct WebhookRepo {
    full_name: String,
}

async fn webhook(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let outcome = handle_webhook(&state, &headers, &body).await;
    let (status, label, message) = match outcome {
        Webhook::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "bad signature"),
        Webhook::Disabled => (
            StatusCode::SERVICE_UNAVAILABLE,
            "disabled",
            "webhooks are off: set GITHUB_WEBHOOK_SECRET",
        ),
        Webhook::BadRequest => (
            StatusCode::BAD_REQUEST,
            "bad_request",
            "not an issues event",
        ),
        Webhook::Ignored => (StatusCode::OK, "ignored", "ignored"),
        Webhook::Queued => (StatusCode::ACCEPTED, "queued", "queued"),
        Webhook::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "intake is closed or full; polling will pick it up",
        ),
    };
    Metrics::count(&state.metrics.webhook_deliveries, label);
    (status, format!("{message}\n")).into_response()
}

enum Webhook {
    Unauthorized,
    Disabled,
    BadRequest,
    Ignored,
    Queued,
    Busy,
}

async fn handle_webhook(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Webhook {
    let Some(secret) = &state.webhook_secret else {
        return Webhook::Disabled;
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    // Nothing in the body is looked at before the signature is checked.
    if !signature_valid(secret, body, signature) {
        tracing::warn!("webhook delivery with a missing or bad signature refused");
        return Webhook::Unauthorized;
    }
    let event = headers.get("x-github-event").and_then(|v| v.to_str().ok());
    match event {
        Some("issues") => {}
        // `ping` on hook creation, and every other event, is acknowledged and ignored.
        _ => return Webhook::Ignored,
    }
    let Ok(event) = serde_json::from_slice::<IssuesEvent>(body) else {
        return Webhook::BadRequest;
    };
    if !matches!(
        event.action.as_str(),
        "opened" | "labeled" | "reopened" | "edited"
    ) || !event
        .repository
        .full_name
        .eq_ignore_ascii_case(&state.dispatch_repo)
        || event.issue.state.as_deref().is_some_and(|s| s != "open")
        || !event
            .issue
            .labels
            .iter()
            .any(|l| l.name == state.dispatch_label)
    {
        return Webhook::Ignored;
    }
    let issue = IssueInput {
        number: event.issue.number,
        title: event.issue.title,
        body: event.issue.body.unwrap_or_default(),
        labels: event.issue.labels.into_iter().map(|l| l.name).collect(),
        is_pull_request: event.issue.pull_request.is_some(),
        author: event.issue.user.map(|u| u.login).unwrap_or_default(),
        author_association: event.issue.author_association.unwrap_or_default(),
    };
    match state.intake.try_send(issue) {
        Ok(()) => Webhook::Queued,
        Err(_) => Webhook::Busy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body);
        let bytes = mac.finalize().into_bytes();
        format!(
            "sha256={}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    fn state() -> (AppState, mpsc::Receiver<IssueInput>) {
        let (tx, rx) = mpsc::channel(8);
        (
            AppState {
                metrics: Arc::new(Metrics::default()),
                webhook_secret: Some(Secret::new("whsec-test")),
                dispatch_repo: "acme/dispatch".into(),
                dispatch_label: "copilot-agent".into(),
                intake: tx,
            },
            rx,
        )
    }

    fn payload(action: &str) -> Vec<u8> {
        serde_json::json!({
            "action": action,
            "issue": {"number": 3, "title": "T", "body": "b", "state": "open",
                      "labels": [{"name": "copilot-agent"}], "user": {"login": "alice"},
                      "author_association": "OWNER"},
            "repository": {"full_name": "acme/dispatch"}
        })
        .to_string()
        .into_bytes()
    }

    async fn deliver(state: &AppState, body: Vec<u8>, signature: Option<String>) -> StatusCode {
        let mut req = Request::post("/webhook").header("x-github-event", "issues");
        if let Some(sig) = signature {
            req = req.header("x-hub-signature-256", sig);
        }
        app(state.clone())
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test]
    async fn webhook_signatures_decide() {
        let (state, mut rx) = state();
        let body = payload("opened");
        assert_eq!(
            deliver(&state, body.clone(), None).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            deliver(&state, body.clone(), Some(sign("wrong", &body))).await,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            deliver(&state, body.clone(), Some("sha256=zz".into())).await,
            StatusCode::UNAUTHORIZED
        );
        assert!(rx.try_recv().is_err(), "nothing queued by bad signatures");
        assert_eq!(
            deliver(&state, body.clone(), Some(sign("whsec-test", &body))).await,
            StatusCode::ACCEPTED
        );
        assert_eq!(rx.try_recv().unwrap().number, 3);
        let closed = payload("closed");
        assert_eq!(
            deliver(&state, closed.clone(), Some(sign("whsec-test", &closed))).await,
            StatusCode::OK
        );
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn metrics_and_health() {
        let (state, _rx) = state();
        Metrics::count(&state.metrics.tasks_processed, "done");
        state.metrics.task_duration.observe(12.0);
        state.metrics.rate_limit_remaining.set(4999);
        let text = state.metrics.encode();
        for name in [
            "agent_tasks_processed_total{outcome=\"done\"} 1",
            "agent_task_duration_seconds_bucket",
            "github_api_rate_limit_remaining 4999",
            "agent_queue_depth",
            "agent_running_tasks",
            "agent_sandbox_exec_seconds",
            "agent_llm_calls_total",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
        let res = app(state)
            .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}
