//! Tests of the fake itself, through the real clients agent-runner uses (octocrab, git2)
//! and the git CLI. Include from a test crate root next to `mod support;` with
//! `#[path = "support/self_test.rs"] mod self_test;`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use http::header::IF_NONE_MATCH;
use octocrab::models::issues::Issue;
use octocrab::models::{AuthorAssociation, IssueState};
use octocrab::{Octocrab, params};

use crate::support::*;

const TOKEN: &str = "ghs_fakeTOKEN1234567890";
const REPO: &str = "acme/widgets";

struct Setup {
    gh: FakeGitHub,
    bare: PathBuf,
    tmp: tempfile::TempDir,
}

async fn setup() -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let files = [
        ("README.md", "# Widgets\n"),
        ("src/lib.rs", "pub fn f() {}\n"),
    ];
    let bare = make_bare_repo(&tmp.path().join("widgets.git"), &files, "main");
    let gh = FakeGitHub::start(TOKEN).await;
    gh.add_repo(REPO, "main", &bare);
    Setup { gh, bare, tmp }
}

fn client(gh: &FakeGitHub, token: Option<&str>) -> Octocrab {
    let builder = Octocrab::builder().base_uri(gh.api_url()).unwrap();
    match token {
        Some(token) => builder.personal_token(token.to_string()).build().unwrap(),
        None => builder.build().unwrap(),
    }
}

/// `(status, message, errors)` of an octocrab GitHub error.
fn github_error<T: std::fmt::Debug>(
    result: octocrab::Result<T>,
) -> (u16, String, Vec<serde_json::Value>) {
    match result.unwrap_err() {
        octocrab::Error::GitHub { source, .. } => (
            source.status_code.as_u16(),
            source.message.clone(),
            source.errors.clone().unwrap_or_default(),
        ),
        other => panic!("expected a GitHub error, got {other:?}"),
    }
}

fn header<'a>(response: &'a http::Response<impl Sized>, name: &str) -> &'a str {
    response.headers().get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn octocrab_reads_and_writes_issues() {
    let s = setup().await;
    let n = s.gh.add_issue(
        REPO,
        "Dispatch: add g",
        "Please add g()",
        &["agent", "needs triage"],
        "alice",
        "OWNER",
    );
    s.gh.add_comment(REPO, n, "Also update README", "bob", "MEMBER");
    let oc = client(&s.gh, Some(TOKEN));

    let repo = oc.repos("acme", "widgets").get().await.unwrap();
    assert_eq!(repo.full_name.as_deref(), Some(REPO));
    assert_eq!(repo.default_branch.as_deref(), Some("main"));
    assert_eq!(repo.clone_url.unwrap().as_str(), s.gh.clone_url(REPO));
    assert_eq!(repo.owner.unwrap().login, "acme");

    let issue = oc.issues("acme", "widgets").get(n).await.unwrap();
    assert_eq!(
        (issue.title.as_str(), issue.body.as_deref()),
        ("Dispatch: add g", Some("Please add g()"))
    );
    assert_eq!(issue.user.login, "alice");
    assert_eq!(issue.author_association, Some(AuthorAssociation::Owner));
    let names: Vec<_> = issue.labels.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["agent", "needs triage"]);
    assert!(issue.pull_request.is_none());

    let page = oc
        .issues("acme", "widgets")
        .list()
        .labels(&["agent".to_string()])
        .send()
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|i| i.number).collect::<Vec<_>>(), [n]);
    let none = oc
        .issues("acme", "widgets")
        .list()
        .labels(&["other".to_string()])
        .send()
        .await
        .unwrap();
    assert!(none.items.is_empty());

    let comment = oc
        .issues("acme", "widgets")
        .create_comment(n, "Working on it")
        .await
        .unwrap();
    assert_eq!(comment.user.login, VIEWER_LOGIN);
    assert_eq!(comment.body.as_deref(), Some("Working on it"));
    let comments = oc
        .issues("acme", "widgets")
        .list_comments(n)
        .send()
        .await
        .unwrap();
    assert_eq!(
        comments.items[0].author_association,
        Some(AuthorAssociation::Member)
    );
    assert_eq!(
        s.gh.comments(REPO, n),
        ["Also update README", "Working on it"]
    );

    oc.issues("acme", "widgets")
        .add_labels(n, &["agent:running".to_string()])
        .await
        .unwrap();
    let left = oc
        .issues("acme", "widgets")
        .remove_label(n, "needs triage")
        .await
        .unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(s.gh.labels_of(REPO, n), ["agent", "agent:running"]);
    let missing = oc.issues("acme", "widgets").remove_label(n, "nope").await;
    assert_eq!(github_error(missing).0, 404);

    let closed = oc
        .issues("acme", "widgets")
        .update(n)
        .state(IssueState::Closed)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.state, IssueState::Closed);
    assert_eq!(s.gh.issue(REPO, n).unwrap().state, "closed");

    assert_eq!(oc.current().user().await.unwrap().login, VIEWER_LOGIN);
    let rate = oc.ratelimit().get().await.unwrap();
    assert_eq!(rate.resources.core.limit, 5000);
    assert!(rate.resources.core.used > 0);
    assert!(rate.resources.graphql.is_some());
}

#[tokio::test]
async fn octocrab_pull_request_flow() {
    let s = setup().await;
    let issue =
        s.gh.add_issue(REPO, "Dispatch", "body", &[], "alice", "OWNER");
    push_commit(
        &s.bare,
        "main",
        "agent/issue-1",
        &[("src/lib.rs", "pub fn g() {}\n")],
        "Add g",
    );
    let oc = client(&s.gh, Some(TOKEN));
    let pulls = oc.pulls("acme", "widgets");

    let pr = pulls
        .create("Add g", "agent/issue-1", "main")
        .body("Closes #1")
        .draft(true)
        .send()
        .await
        .unwrap();
    assert_eq!(pr.number, issue + 1, "issues and PRs share numbers");
    assert_eq!(pr.head.ref_field, "agent/issue-1");
    assert_eq!(pr.head.label.as_deref(), Some("acme:agent/issue-1"));
    assert_eq!(pr.base.ref_field, "main");
    assert_eq!(
        (pr.draft, pr.merged, pr.commits, pr.changed_files),
        (Some(true), Some(false), Some(1), Some(1))
    );
    assert_eq!(
        pr.head.repo.as_ref().unwrap().full_name.as_deref(),
        Some(REPO)
    );
    assert_eq!(
        s.gh.pulls(REPO),
        [FakePull {
            number: pr.number,
            title: "Add g".into(),
            body: "Closes #1".into(),
            head: "agent/issue-1".into(),
            base: "main".into(),
            state: "open".into(),
            draft: true,
        }]
    );

    let by_head = pulls
        .list()
        .state(params::State::Open)
        .head("acme:agent/issue-1")
        .send()
        .await
        .unwrap();
    assert_eq!(by_head.items.len(), 1);
    assert!(
        pulls
            .list()
            .head("acme:other")
            .send()
            .await
            .unwrap()
            .items
            .is_empty()
    );
    let issues = oc
        .issues("acme", "widgets")
        .list()
        .state(params::State::All)
        .send()
        .await
        .unwrap();
    let is_pull: Vec<bool> = issues
        .items
        .iter()
        .map(|i| i.pull_request.is_some())
        .collect();
    assert_eq!(
        is_pull,
        [true, false],
        "newest first; the PR is listed with a pull_request key"
    );

    let duplicate = pulls.create("Again", "agent/issue-1", "main").send().await;
    let (status, message, errors) = github_error(duplicate);
    assert_eq!((status, message.as_str()), (422, "Validation Failed"));
    assert_eq!(
        errors[0]["message"],
        "A pull request already exists for acme:agent/issue-1."
    );
    let no_branch = pulls.create("X", "agent/missing", "main").send().await;
    let (status, _, errors) = github_error(no_branch);
    assert_eq!(
        (status, &errors[0]["field"], &errors[0]["code"]),
        (422, &"head".into(), &"invalid".into())
    );

    let updated = pulls
        .update(pr.number)
        .title("Add g()")
        .body("Closes #1\n\nDone")
        .send()
        .await
        .unwrap();
    assert_eq!(updated.title.as_deref(), Some("Add g()"));
    assert_eq!(
        oc.pulls("acme", "widgets")
            .get(pr.number)
            .await
            .unwrap()
            .body
            .as_deref(),
        Some("Closes #1\n\nDone")
    );
    assert_eq!(
        github_error(pulls.get(issue).await).0,
        404,
        "an issue is not a PR"
    );

    assert_eq!(github_error(pulls.merge(pr.number).send().await).0, 404);
    let merge =
        s.gh.requests()
            .into_iter()
            .find(|r| r.method == "PUT")
            .unwrap();
    assert_eq!(
        (merge.path.as_str(), merge.status),
        ("/repos/acme/widgets/pulls/2/merge", 404)
    );

    let closed = pulls
        .update(pr.number)
        .state(params::pulls::State::Closed)
        .send()
        .await
        .unwrap();
    assert_eq!(closed.state, Some(IssueState::Closed));
    assert_eq!(s.gh.pulls(REPO)[0].state, "closed");
}

#[tokio::test]
async fn errors_auth_and_injected_failures() {
    let s = setup().await;
    let n =
        s.gh.add_issue(REPO, "Dispatch", "body", &[], "alice", "OWNER");

    for oc in [client(&s.gh, Some("wrong")), client(&s.gh, None)] {
        let (status, message, _) = github_error(oc.repos("acme", "widgets").get().await);
        assert_eq!((status, message.as_str()), (401, "Bad credentials"));
    }
    let oc = client(&s.gh, Some(TOKEN));
    assert_eq!(github_error(oc.repos("acme", "nope").get().await).0, 404);
    assert_eq!(
        github_error(oc.issues("acme", "widgets").create_comment(99, "x").await).0,
        404
    );
    let (status, _, errors) = github_error(oc.issues("acme", "widgets").create("").send().await);
    assert_eq!((status, &errors[0]["code"]), (422, &"missing_field".into()));

    s.gh.fail_next(
        "GET",
        "/repos/acme/widgets/issues",
        429,
        &[("retry-after", "7")],
    );
    s.gh.fail_next("*", "/repos/acme/widgets/issues", 403, &[]);
    s.gh.fail_next("GET", "/repos/acme/widgets/issues", 502, &[]);
    let issues = oc.issues("acme", "widgets");
    match issues.get(n).await.unwrap_err() {
        octocrab::Error::GitHub { source, .. } => {
            assert_eq!(source.status_code.as_u16(), 429);
            assert_eq!(source.headers.unwrap()["retry-after"], "7");
        }
        other => panic!("{other:?}"),
    }
    let (status, message, _) = github_error(issues.get(n).await);
    assert_eq!(status, 403);
    assert!(message.contains("secondary rate limit"), "{message}");
    assert_eq!(github_error(issues.get(n).await).0, 502);
    assert_eq!(issues.get(n).await.unwrap().number, n);

    let response = oc
        ._get(format!("{}/repos/acme/widgets", s.gh.api_url()))
        .await
        .unwrap();
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
    ] {
        header(&response, name).parse::<u64>().unwrap();
    }
    assert_eq!(header(&response, "x-ratelimit-resource"), "core");
    assert!(!header(&response, "x-github-request-id").is_empty());
    // Routes also answer without the /api/v3 prefix.
    let bare_path = oc
        ._get(format!("{}/repos/acme/widgets", s.gh.base_url()))
        .await
        .unwrap();
    assert_eq!(bare_path.status(), 200);

    let statuses: Vec<u16> = s.gh.requests().iter().map(|r| r.status).collect();
    assert_eq!(&statuses[..2], [401, 401]);
    let created =
        s.gh.requests()
            .into_iter()
            .find(|r| r.method == "POST")
            .unwrap();
    assert_eq!(created.body, r#"{"body":"x"}"#);
}

#[tokio::test]
async fn etag_round_trip_gives_304_without_using_rate_limit() {
    let s = setup().await;
    s.gh.add_issue(REPO, "Dispatch", "body", &["agent"], "alice", "OWNER");
    let oc = client(&s.gh, Some(TOKEN));
    let uri = format!("{}/repos/acme/widgets/issues?labels=agent", s.gh.api_url());

    let first = oc._get(uri.clone()).await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].clone();
    let remaining = header(&first, "x-ratelimit-remaining").to_string();

    let mut headers = http::HeaderMap::new();
    headers.insert(IF_NONE_MATCH, etag.clone());
    let second = oc
        ._get_with_headers(uri.clone(), Some(headers.clone()))
        .await
        .unwrap();
    assert_eq!(second.status(), 304);
    assert_eq!(header(&second, "x-ratelimit-remaining"), remaining);
    assert_eq!(oc.body_to_string(second).await.unwrap(), "");

    s.gh.add_issue(REPO, "Another", "body", &["agent"], "alice", "OWNER");
    let third = oc._get_with_headers(uri, Some(headers)).await.unwrap();
    assert_eq!(third.status(), 200);
    assert_ne!(third.headers()["etag"], etag);

    let recorded: Vec<(u16, bool)> =
        s.gh.requests()
            .iter()
            .map(|r| (r.status, r.if_none_match))
            .collect();
    assert_eq!(recorded, [(200, false), (304, true), (200, true)]);
    assert_eq!(s.gh.requests()[0].query, "labels=agent");
}

#[tokio::test]
async fn link_pagination_with_get_page() {
    let s = setup().await;
    for i in 1..=5 {
        s.gh.add_issue(REPO, &format!("Issue {i}"), "", &[], "alice", "OWNER");
    }
    let oc = client(&s.gh, Some(TOKEN));
    let numbers =
        |page: &octocrab::Page<Issue>| page.items.iter().map(|i| i.number).collect::<Vec<_>>();

    let first = oc
        .issues("acme", "widgets")
        .list()
        .per_page(2)
        .send()
        .await
        .unwrap();
    assert_eq!(numbers(&first), [5, 4]);
    assert_eq!(first.number_of_pages(), Some(3));
    assert!(
        first
            .next
            .as_ref()
            .unwrap()
            .to_string()
            .starts_with(&s.gh.api_url())
    );
    assert!(first.prev.is_none());
    let second = oc.get_page::<Issue>(&first.next).await.unwrap().unwrap();
    assert_eq!(numbers(&second), [3, 2]);
    assert!(second.prev.is_some() && second.first.is_some());
    let all = oc.all_pages(first).await.unwrap();
    assert_eq!(
        all.iter().map(|i| i.number).collect::<Vec<_>>(),
        [5, 4, 3, 2, 1]
    );

    let asc = oc
        .issues("acme", "widgets")
        .list()
        .direction(params::Direction::Ascending)
        .send()
        .await
        .unwrap();
    assert_eq!(numbers(&asc), [1, 2, 3, 4, 5]);
    assert!(asc.next.is_none());
}

fn callbacks(token: &str) -> git2::RemoteCallbacks<'static> {
    let token = token.to_string();
    let mut attempts = 0;
    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(move |_url, _user, _allowed| {
        attempts += 1;
        if attempts > 1 {
            return Err(git2::Error::from_str("credentials rejected"));
        }
        git2::Cred::userpass_plaintext("x-access-token", &token)
    });
    callbacks
}

fn clone(url: &str, dir: &Path, token: Option<&str>) -> Result<git2::Repository, git2::Error> {
    let mut fetch = git2::FetchOptions::new();
    if let Some(token) = token {
        fetch.remote_callbacks(callbacks(token));
    }
    git2::build::RepoBuilder::new()
        .fetch_options(fetch)
        .clone(url, dir)
}

fn push(repo: &git2::Repository, refspec: &str, token: &str) -> Result<(), git2::Error> {
    let mut options = git2::PushOptions::new();
    options.remote_callbacks(callbacks(token));
    repo.find_remote("origin")?
        .push(&[refspec], Some(&mut options))
}

#[tokio::test]
async fn git2_clones_and_pushes_with_the_token_only() {
    let s = setup().await;
    let url = s.gh.clone_url(REPO);
    assert!(clone(&url, &s.tmp.path().join("anon"), None).is_err());
    assert!(clone(&url, &s.tmp.path().join("wrong"), Some("wrong")).is_err());

    let work = s.tmp.path().join("work");
    let repo = clone(&url, &work, Some(TOKEN)).unwrap();
    assert_eq!(
        std::fs::read_to_string(work.join("README.md")).unwrap(),
        "# Widgets\n"
    );

    std::fs::write(work.join("NEW.md"), "hello\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("NEW.md")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let signature = git2::Signature::now("Agent", "agent@example.com").unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        "Add NEW.md\n\nBecause.",
        &tree,
        &[&parent],
    )
    .unwrap();

    assert!(push(&repo, "HEAD:refs/heads/agent/denied", "wrong").is_err());
    assert!(!branch_names(&s.bare).contains(&"agent/denied".to_string()));

    push(&repo, "HEAD:refs/heads/agent/new", TOKEN).unwrap();
    assert_eq!(branch_names(&s.bare), ["agent/new", "main"]);
    let files = branch_files(&s.bare, "agent/new").unwrap();
    assert!(files.contains(&("NEW.md".to_string(), "hello\n".to_string())));
    assert_eq!(files.len(), 3);
    assert_eq!(
        branch_commit_message(&s.bare, "agent/new").unwrap(),
        "Add NEW.md\n\nBecause."
    );
    assert_eq!(branch_files(&s.bare, "main").unwrap().len(), 2);
    assert!(branch_files(&s.bare, "nope").is_none());

    let git_requests: Vec<(String, u16)> =
        s.gh.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/git/"))
            .map(|r| (r.path, r.status))
            .collect();
    assert!(git_requests.contains(&("/git/acme/widgets.git/info/refs".into(), 401)));
    assert!(git_requests.contains(&("/git/acme/widgets.git/git-receive-pack".into(), 200)));
}

fn git_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_TRACE_CURL", "1")
        .env("GIT_TRACE_CURL_NO_DATA", "1")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[tokio::test]
async fn git_cli_clone_sends_gzip_bodies_and_pushes() {
    let s = setup().await;
    // Enough distinct branch tips that the clone's "want" list exceeds git's gzip threshold.
    let local = s.tmp.path().join("local");
    git_cli(
        s.tmp.path(),
        &["clone", "-q", s.bare.to_str().unwrap(), "local"],
    );
    for i in 0..40 {
        git_cli(
            &local,
            &["commit", "-q", "--allow-empty", "-m", &format!("c{i}")],
        );
        git_cli(&local, &["branch", &format!("b{i}")]);
    }
    git_cli(&local, &["push", "-q", "origin", "--all"]);

    let url =
        s.gh.clone_url(REPO)
            .replace("http://", &format!("http://x-access-token:{TOKEN}@"));
    let cloned = git_cli(s.tmp.path(), &["clone", "-q", &url, "cloned"]);
    let trace = String::from_utf8_lossy(&cloned.stderr);
    assert!(
        trace.contains("Content-Encoding: gzip"),
        "git did not gzip: {trace}"
    );
    let remote_branches = git_cli(&s.tmp.path().join("cloned"), &["branch", "-r"]).stdout;
    assert!(String::from_utf8_lossy(&remote_branches).contains("origin/b39"));

    let cloned = s.tmp.path().join("cloned");
    std::fs::write(cloned.join("cli.txt"), "cli\n").unwrap();
    git_cli(&cloned, &["add", "cli.txt"]);
    git_cli(&cloned, &["commit", "-q", "-m", "From the CLI"]);
    git_cli(&cloned, &["push", "-q", "origin", "HEAD:refs/heads/cli"]);
    assert_eq!(
        branch_commit_message(&s.bare, "cli").unwrap(),
        "From the CLI"
    );
}
