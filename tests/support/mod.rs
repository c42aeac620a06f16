//! Test support: an in-process fake of the GitHub REST API and git smart HTTP.
//!
//! ```ignore
//! let gh = FakeGitHub::start("t0ken").await;
//! let bare = make_bare_repo(&tmp.path().join("repo.git"), &[("README.md", "hi\n")], "main");
//! gh.add_repo("acme/widgets", "main", &bare);
//! let n = gh.add_issue("acme/widgets", "Dispatch", "body", &["agent"], "alice", "OWNER");
//! // run agent-runner with GITHUB_API_URL = gh.api_url(), GITHUB_TOKEN = "t0ken" ...
//! assert_eq!(gh.pulls("acme/widgets")[0].base, "main");
//! ```
//!
//! Each integration test binary includes this with `mod support;` and uses only a part
//! of it, hence the `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

mod fake;
mod fixtures;
mod git_http;
mod json;
pub mod llama;
mod rest;

pub use fake::{
    FakeGitHub, FakeIssue, FakePull, HookPoint, RecordedRequest, RequestHook, VIEWER_LOGIN,
};
pub use fixtures::{
    branch_commit_message, branch_files, branch_names, dispatch_body, make_bare_repo, push_commit,
    serve_calculator,
};
pub use llama::LlamaServer;
