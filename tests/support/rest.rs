//! REST routes. Handlers work on the locked `State` and return a `Reply`; `finish` turns
//! it into an HTTP response with GitHub's common headers, ETag / 304 and rate limiting.

use std::collections::HashMap;

use axum::body::Body;
use axum::response::Response;
use chrono::Utc;
use http::{StatusCode, Uri};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fake::{Issue, Pull, State, VIEWER_LOGIN, header_value};
use super::fixtures::{commits_between, rev_parse};
use super::json;

const DOCS: &str = "https://docs.github.com/rest";
const RATE_LIMIT: u64 = 5000;

pub(super) struct ApiRequest<'a> {
    pub method: &'a str,
    /// Path as requested (with `/api/v3` if the client used it); used for `Link` URLs.
    pub raw_path: &'a str,
    /// Path without the `/api/v3` prefix.
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    pub if_none_match: Option<&'a str>,
}

pub(super) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
    /// Extra headers (lower-case names); they override the common ones.
    pub headers: Vec<(String, String)>,
}

fn reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        body: Some(body),
        headers: Vec::new(),
    }
}

/// A GitHub error body: `{"message", "documentation_url", "status"}`.
pub(super) fn error(status: u16, message: &str) -> Reply {
    reply(
        status,
        json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

fn not_found() -> Reply {
    error(404, "Not Found")
}

/// 422 `Validation Failed` with GitHub's `errors` array.
fn invalid(errors: Value) -> Reply {
    reply(
        422,
        json!({"message": "Validation Failed", "errors": errors, "documentation_url": DOCS, "status": "422"}),
    )
}

fn created(body: Value) -> Reply {
    let location = body["url"].as_str().unwrap_or_default().to_string();
    let mut reply = reply(201, body);
    reply.headers.push(("location".into(), location));
    reply
}

pub(super) fn route(st: &mut State, req: &ApiRequest) -> Reply {
    let segments: Vec<String> = req
        .path
        .trim_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let query = parse_query(req.query);
    let body = if req.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(req.body) {
            Ok(body) => body,
            Err(_) => return error(400, "Problems parsing JSON"),
        }
    };

    match (req.method, segments.as_slice()) {
        ("GET", ["rate_limit"]) => rate_limit(st),
        ("GET", ["user"]) => {
            let mut r = reply(200, json::user_profile(st, VIEWER_LOGIN));
            if let Some(scopes) = &st.token_scopes {
                r.headers.push(("x-oauth-scopes".into(), scopes.clone()));
            }
            r
        }
        (method, ["repos", owner, name, rest @ ..]) => {
            let Some(ri) = st.repo_index(owner, name) else {
                return not_found();
            };
            let number = rest.get(1).and_then(|n| n.parse::<u64>().ok());
            match (method, rest, number) {
                ("GET", [], _) => {
                    let mut repo = json::repo(st, &st.repos[ri]);
                    if let Some(permissions) = &st.repo_permissions {
                        repo["permissions"] = permissions.clone();
                    }
                    reply(200, repo)
                }
                ("GET", ["issues"], _) => list_issues(st, ri, req, &query),
                ("POST", ["issues"], _) => create_issue(st, ri, &body),
                ("GET", ["issues", _], Some(n)) => get_issue(st, ri, n),
                ("PATCH", ["issues", _], Some(n)) => update_issue(st, ri, n, &body),
                ("GET", ["issues", _, "comments"], Some(n)) => {
                    list_comments(st, ri, n, req, &query)
                }
                ("POST", ["issues", _, "comments"], Some(n)) => create_comment(st, ri, n, &body),
                ("GET", ["issues", _, "labels"], Some(n)) => issue_labels(st, ri, n),
                ("POST", ["issues", _, "labels"], Some(n)) => add_labels(st, ri, n, &body),
                ("PUT", ["issues", _, "labels"], Some(n)) => set_labels(st, ri, n, &body),
                ("DELETE", ["issues", _, "labels", label], Some(n)) => {
                    remove_label(st, ri, n, label)
                }
                ("GET", ["pulls"], _) => list_pulls(st, ri, req, &query),
                ("POST", ["pulls"], _) => create_pull(st, ri, &body),
                ("GET", ["pulls", _], Some(n)) => get_pull(st, ri, n),
                ("PATCH", ["pulls", _], Some(n)) => update_pull(st, ri, n, &body),
                // Deliberately no `PUT /pulls/{n}/merge`: agent-runner must never merge, and
                // tests assert on the recorded (404) request if it ever tries.
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// Serializes the reply, answers 304 to a matching `If-None-Match`, counts the request
/// against the rate limit (not for 304s, `/rate_limit` or unauthenticated requests) and
/// adds GitHub's common headers.
pub(super) fn finish(
    st: &mut State,
    reply: Reply,
    req: &ApiRequest,
    authenticated: bool,
) -> Response {
    let mut status = reply.status;
    let mut body = reply
        .body
        .map(|value| serde_json::to_vec_pretty(&value).unwrap_or_default())
        .unwrap_or_default();
    let mut etag = None;
    if req.method == "GET" && status == 200 {
        let tag = format!("W/\"{:x}\"", Sha256::digest(&body));
        if req.if_none_match.is_some_and(|inm| etag_matches(inm, &tag)) {
            status = 304;
            body.clear();
        }
        etag = Some(tag);
    }
    if authenticated && status != 304 && req.path != "/rate_limit" {
        st.rate_used += 1;
    }
    st.request_count += 1;

    let mut headers: Vec<(String, String)> = vec![
        ("x-ratelimit-limit".into(), RATE_LIMIT.to_string()),
        (
            "x-ratelimit-remaining".into(),
            RATE_LIMIT.saturating_sub(st.rate_used).to_string(),
        ),
        ("x-ratelimit-used".into(), st.rate_used.to_string()),
        ("x-ratelimit-reset".into(), st.rate_reset.to_string()),
        ("x-ratelimit-resource".into(), "core".into()),
        (
            "x-github-request-id".into(),
            format!("FAKE:{:06X}:{:08X}", st.request_count, st.rate_reset),
        ),
        ("x-github-api-version-selected".into(), "2022-11-28".into()),
        (
            "x-github-media-type".into(),
            "github.v3; format=json".into(),
        ),
    ];
    if !body.is_empty() {
        headers.push((
            "content-type".into(),
            "application/json; charset=utf-8".into(),
        ));
    }
    if let Some(tag) = etag {
        headers.push(("etag".into(), tag));
    }
    for (name, value) in reply.headers {
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    }

    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in headers {
        if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            response.headers_mut().insert(name, header_value(&value));
        }
    }
    response
}

fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    if_none_match
        .split(',')
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == opaque(etag))
}

fn rate_limit(st: &State) -> Reply {
    let bucket = |limit: u64, used: u64| json!({"limit": limit, "used": used, "remaining": limit - used, "reset": st.rate_reset});
    let core = bucket(RATE_LIMIT, st.rate_used.min(RATE_LIMIT));
    reply(
        200,
        json!({
            "resources": {
                "core": core,
                "search": bucket(30, 0),
                "graphql": bucket(5000, 0),
                "integration_manifest": bucket(5000, 0),
                "source_import": bucket(100, 0),
                "code_scanning_upload": bucket(1000, 0),
                "actions_runner_registration": bucket(10000, 0),
                "scim": bucket(15000, 0),
                "dependency_snapshots": bucket(100, 0),
                "code_search": bucket(10, 0),
            },
            "rate": core,
        }),
    )
}

// ---- issues ----

fn list_issues(st: &State, ri: usize, req: &ApiRequest, query: &HashMap<String, String>) -> Reply {
    let repo = &st.repos[ri];
    let state = query.get("state").map_or("open", String::as_str);
    let wanted_labels: Vec<&str> = query
        .get("labels")
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut issues: Vec<&Issue> = repo
        .issues
        .iter()
        .filter(|i| state == "all" || i.state == state)
        .filter(|i| {
            wanted_labels
                .iter()
                .all(|w| i.labels.iter().any(|l| l == w))
        })
        .filter(|i| {
            query
                .get("creator")
                .is_none_or(|c| c.eq_ignore_ascii_case(&i.author))
        })
        .collect();
    sort_issues(&mut issues, query);
    let (page, links) = paginate(&issues, query, st, req);
    let items = page.iter().map(|i| json::issue(st, repo, i)).collect();
    let mut reply = reply(200, Value::Array(items));
    reply.headers.extend(links);
    reply
}

/// `sort` = created (default) | updated | comments; `direction` = desc (default) | asc.
fn sort_issues(issues: &mut [&Issue], query: &HashMap<String, String>) {
    match query.get("sort").map(String::as_str) {
        Some("updated") => issues.sort_by_key(|i| (i.updated_at, i.number)),
        Some("comments") => issues.sort_by_key(|i| (i.comments.len(), i.number)),
        _ => issues.sort_by_key(|i| (i.created_at, i.number)),
    }
    if query.get("direction").map(String::as_str) != Some("asc") {
        issues.reverse();
    }
}

fn get_issue(st: &State, ri: usize, number: u64) -> Reply {
    let repo = &st.repos[ri];
    match repo.issue(number) {
        Some(issue) => reply(200, json::issue(st, repo, issue)),
        None => not_found(),
    }
}

fn create_issue(st: &mut State, ri: usize, body: &Value) -> Reply {
    let Some(title) = body["title"].as_str().filter(|t| !t.is_empty()) else {
        return invalid(json!([{"resource": "Issue", "field": "title", "code": "missing_field"}]));
    };
    let labels = label_names(&body["labels"]);
    let id = st.new_id();
    let mut next_id = st.next_id;
    let repo = &mut st.repos[ri];
    for label in &labels {
        repo.ensure_label(label, &mut next_id);
    }
    let now = Utc::now();
    let number = repo.issues.len() as u64 + 1;
    repo.issues.push(Issue {
        id,
        number,
        title: title.to_string(),
        body: body["body"].as_str().map(str::to_string),
        state: "open".into(),
        state_reason: None,
        labels,
        author: VIEWER_LOGIN.into(),
        // The token's user can write to the repository, so GitHub calls it a collaborator.
        author_association: "COLLABORATOR".into(),
        comments: Vec::new(),
        created_at: now,
        updated_at: now,
        closed_at: None,
        pull: None,
    });
    st.next_id = next_id;
    let repo = &st.repos[ri];
    created(json::issue(st, repo, &repo.issues[repo.issues.len() - 1]))
}

fn update_issue(st: &mut State, ri: usize, number: u64, body: &Value) -> Reply {
    if let Err(reply) = apply_issue_edits(st, ri, number, body, "Issue") {
        return reply;
    }
    get_issue(st, ri, number)
}

/// Applies `title`, `body`, `state`, `state_reason` and `labels` from a PATCH body.
fn apply_issue_edits(
    st: &mut State,
    ri: usize,
    number: u64,
    body: &Value,
    resource: &str,
) -> Result<(), Reply> {
    let mut next_id = st.next_id;
    let repo = &mut st.repos[ri];
    let Some(issue) = repo.issue(number) else {
        return Err(not_found());
    };
    let state = body.get("state").and_then(Value::as_str);
    if state.is_some_and(|s| s != "open" && s != "closed") {
        return Err(invalid(
            json!([{"resource": resource, "field": "state", "code": "invalid"}]),
        ));
    }
    if body
        .get("title")
        .is_some_and(|t| t.as_str().is_none_or(str::is_empty))
    {
        return Err(invalid(
            json!([{"resource": resource, "field": "title", "code": "missing_field"}]),
        ));
    }
    let labels = body.get("labels").map(label_names);
    let pull_head = issue.pull.as_ref().map(|p| p.head.clone());
    let now = Utc::now();
    for label in labels.iter().flatten() {
        repo.ensure_label(label, &mut next_id);
    }
    let issue = repo.issue_mut(number).expect("checked above");
    if let Some(title) = body.get("title").and_then(Value::as_str) {
        issue.title = title.to_string();
    }
    if let Some(text) = body.get("body") {
        issue.body = text.as_str().map(str::to_string);
    }
    if let Some(state) = state {
        if state != issue.state {
            issue.closed_at = (state == "closed").then_some(now);
            issue.state_reason = match state {
                "closed" if pull_head.is_none() => Some("completed".into()),
                "open" => Some("reopened".into()),
                _ => None,
            };
        }
        issue.state = state.to_string();
    }
    if let Some(reason) = body.get("state_reason").and_then(Value::as_str) {
        issue.state_reason = Some(reason.to_string());
    }
    if let Some(labels) = labels {
        issue.labels = labels;
    }
    issue.updated_at = now;
    st.next_id = next_id;
    Ok(())
}

/// Label names from `["a", "b"]` or `[{"name": "a"}]`.
fn label_names(value: &Value) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for item in value.as_array().into_iter().flatten() {
        let name = item.as_str().or_else(|| item["name"].as_str());
        if let Some(name) = name.filter(|n| !names.iter().any(|x| x == n)) {
            names.push(name.to_string());
        }
    }
    names
}

// ---- comments and labels ----

fn list_comments(
    st: &State,
    ri: usize,
    number: u64,
    req: &ApiRequest,
    query: &HashMap<String, String>,
) -> Reply {
    let repo = &st.repos[ri];
    let Some(issue) = repo.issue(number) else {
        return not_found();
    };
    let comments: Vec<_> = issue.comments.iter().collect();
    let (page, links) = paginate(&comments, query, st, req);
    let items = page
        .iter()
        .map(|c| json::comment(st, repo, issue, c))
        .collect();
    let mut reply = reply(200, Value::Array(items));
    reply.headers.extend(links);
    reply
}

fn create_comment(st: &mut State, ri: usize, number: u64, body: &Value) -> Reply {
    if st.repos[ri].issue(number).is_none() {
        return not_found();
    }
    let Some(text) = body["body"].as_str().filter(|t| !t.is_empty()) else {
        return invalid(
            json!([{"resource": "IssueComment", "field": "body", "code": "missing_field"}]),
        );
    };
    let id = st.new_id();
    let now = Utc::now();
    let issue = st.repos[ri].issue_mut(number).expect("checked above");
    issue.updated_at = now;
    issue.comments.push(super::fake::Comment {
        id,
        body: text.to_string(),
        author: VIEWER_LOGIN.into(),
        author_association: "NONE".into(),
        created_at: now,
    });
    let repo = &st.repos[ri];
    let issue = repo.issue(number).expect("checked above");
    created(json::comment(
        st,
        repo,
        issue,
        &issue.comments[issue.comments.len() - 1],
    ))
}

fn issue_labels(st: &State, ri: usize, number: u64) -> Reply {
    let repo = &st.repos[ri];
    match repo.issue(number) {
        Some(issue) => reply(200, json::labels(st, repo, &issue.labels)),
        None => not_found(),
    }
}

/// Body `{"labels": [...]}` or a bare array; unknown labels are created.
fn add_labels(st: &mut State, ri: usize, number: u64, body: &Value) -> Reply {
    if st.repos[ri].issue(number).is_none() {
        return not_found();
    }
    let names = label_names(if body.is_array() {
        body
    } else {
        &body["labels"]
    });
    let mut next_id = st.next_id;
    let repo = &mut st.repos[ri];
    for name in &names {
        repo.ensure_label(name, &mut next_id);
    }
    let issue = repo.issue_mut(number).expect("checked above");
    for name in names {
        if !issue.labels.contains(&name) {
            issue.labels.push(name);
        }
    }
    issue.updated_at = Utc::now();
    st.next_id = next_id;
    issue_labels(st, ri, number)
}

/// Replaces all labels; body as for `add_labels`.
fn set_labels(st: &mut State, ri: usize, number: u64, body: &Value) -> Reply {
    let labels = if body.is_array() {
        body
    } else {
        &body["labels"]
    };
    let edits = json!({ "labels": label_names(labels) });
    match apply_issue_edits(st, ri, number, &edits, "Issue") {
        Ok(()) => issue_labels(st, ri, number),
        Err(reply) => reply,
    }
}

fn remove_label(st: &mut State, ri: usize, number: u64, label: &str) -> Reply {
    let Some(issue) = st.repos[ri].issue_mut(number) else {
        return not_found();
    };
    let Some(index) = issue.labels.iter().position(|l| l == label) else {
        return error(404, "Label does not exist");
    };
    issue.labels.remove(index);
    issue.updated_at = Utc::now();
    issue_labels(st, ri, number)
}

// ---- pull requests ----

fn list_pulls(st: &State, ri: usize, req: &ApiRequest, query: &HashMap<String, String>) -> Reply {
    let repo = &st.repos[ri];
    let state = query.get("state").map_or("open", String::as_str);
    // `head` is `owner:branch` (or just `owner`); `base` is a branch name.
    let head_matches = |pull: &Pull| match query.get("head") {
        None => true,
        Some(head) => match head.split_once(':') {
            Some((owner, branch)) => owner.eq_ignore_ascii_case(&repo.owner) && branch == pull.head,
            None => head.eq_ignore_ascii_case(&repo.owner),
        },
    };
    let mut pulls: Vec<&Issue> = repo
        .issues
        .iter()
        .filter(|i| i.pull.as_ref().is_some_and(head_matches))
        .filter(|i| state == "all" || i.state == state)
        .filter(|i| {
            query
                .get("base")
                .is_none_or(|b| i.pull.as_ref().is_some_and(|p| &p.base == b))
        })
        .collect();
    sort_issues(&mut pulls, query);
    let (page, links) = paginate(&pulls, query, st, req);
    let items = page
        .iter()
        .map(|i| json::pull(st, repo, i, false))
        .collect();
    let mut reply = reply(200, Value::Array(items));
    reply.headers.extend(links);
    reply
}

fn get_pull(st: &State, ri: usize, number: u64) -> Reply {
    let repo = &st.repos[ri];
    match repo.issue(number) {
        Some(issue) if issue.pull.is_some() => reply(200, json::pull(st, repo, issue, true)),
        _ => not_found(),
    }
}

fn create_pull(st: &mut State, ri: usize, body: &Value) -> Reply {
    let field_error = |field: &str, code: &str| {
        invalid(json!([{"resource": "PullRequest", "field": field, "code": code}]))
    };
    let custom_error = |message: String| {
        invalid(json!([{"resource": "PullRequest", "code": "custom", "message": message}]))
    };
    let repo = &st.repos[ri];
    let Some(title) = body["title"].as_str().filter(|t| !t.is_empty()) else {
        return field_error("title", "missing_field");
    };
    let Some(head) = body["head"].as_str() else {
        return field_error("head", "missing_field");
    };
    let Some(base) = body["base"].as_str() else {
        return field_error("base", "missing_field");
    };
    let head = match head.split_once(':') {
        Some((owner, branch)) if owner.eq_ignore_ascii_case(&repo.owner) => branch,
        Some(_) => return field_error("head", "invalid"), // forks are not modelled
        None => head,
    };
    let Some(head_sha) = rev_parse(&repo.bare, head) else {
        return field_error("head", "invalid");
    };
    if rev_parse(&repo.bare, base).is_none() {
        return field_error("base", "invalid");
    }
    let duplicate = repo.issues.iter().any(|i| {
        i.state == "open"
            && i.pull
                .as_ref()
                .is_some_and(|p| p.head == head && p.base == base)
    });
    if duplicate {
        return custom_error(format!(
            "A pull request already exists for {}:{head}.",
            repo.owner
        ));
    }
    if commits_between(&repo.bare, base, head) == 0 {
        return custom_error(format!("No commits between {base} and {head}"));
    }

    let (head, base) = (head.to_string(), base.to_string());
    let (id, pull_id) = (st.new_id(), st.new_id());
    let repo = &mut st.repos[ri];
    let number = repo.issues.len() as u64 + 1;
    let now = Utc::now();
    repo.issues.push(Issue {
        id,
        number,
        title: title.to_string(),
        body: body["body"].as_str().map(str::to_string),
        state: "open".into(),
        state_reason: None,
        labels: Vec::new(),
        author: VIEWER_LOGIN.into(),
        author_association: "NONE".into(),
        comments: Vec::new(),
        created_at: now,
        updated_at: now,
        closed_at: None,
        pull: Some(Pull {
            id: pull_id,
            head,
            head_sha,
            base,
            draft: body["draft"].as_bool().unwrap_or(false),
        }),
    });
    let repo = &st.repos[ri];
    created(json::pull(
        st,
        repo,
        &repo.issues[repo.issues.len() - 1],
        true,
    ))
}

fn update_pull(st: &mut State, ri: usize, number: u64, body: &Value) -> Reply {
    let repo = &st.repos[ri];
    if repo.issue(number).is_none_or(|i| i.pull.is_none()) {
        return not_found();
    }
    let base = body.get("base").and_then(Value::as_str);
    if base.is_some_and(|base| rev_parse(&repo.bare, base).is_none()) {
        return invalid(json!([{"resource": "PullRequest", "field": "base", "code": "invalid"}]));
    }
    let mut edits = serde_json::Map::new();
    for key in ["title", "body", "state"] {
        if let Some(value) = body.get(key) {
            edits.insert(key.to_string(), value.clone());
        }
    }
    if let Err(reply) = apply_issue_edits(st, ri, number, &Value::Object(edits), "PullRequest") {
        return reply;
    }
    if let (Some(base), Some(pull)) = (
        base,
        st.repos[ri].issue_mut(number).and_then(|i| i.pull.as_mut()),
    ) {
        pull.base = base.to_string();
    }
    get_pull(st, ri, number)
}

// ---- helpers ----

/// Applies `per_page` (default 30, max 100) and `page` (default 1), and builds GitHub's
/// `Link` header with absolute URLs back to this server.
fn paginate<'a, T>(
    items: &'a [T],
    query: &HashMap<String, String>,
    st: &State,
    req: &ApiRequest,
) -> (&'a [T], Vec<(String, String)>) {
    let per_page = query
        .get("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = query
        .get("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let start = ((page - 1) * per_page).min(items.len());
    let end = (start + per_page).min(items.len());

    let other_params: Vec<&str> = req
        .query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("page="))
        .collect();
    let url = |n: usize| {
        let mut params = other_params.clone();
        let page_param = format!("page={n}");
        params.push(&page_param);
        format!("{}{}?{}", st.base, req.raw_path, params.join("&"))
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(page - 1)));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    let headers = if links.is_empty() {
        Vec::new()
    } else {
        vec![("link".to_string(), links.join(", "))]
    };
    (&items[start..end], headers)
}

fn parse_query(query: &str) -> HashMap<String, String> {
    let uri: Uri = format!("/?{query}").parse().unwrap_or_default();
    axum::extract::Query::<HashMap<String, String>>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
