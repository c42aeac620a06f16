//! JSON bodies shaped like GitHub's REST responses (every field octocrab's models require,
//! plus the common optional ones).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::fake::{Comment, Issue, Repo, State};
use super::fixtures::{diff_stats, rev_parse};

fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Percent-encodes one URL path segment (e.g. `bot[bot]` or a label with spaces).
fn enc(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Adds the fields of object `extra` to object `value`.
fn merge(value: &mut Value, extra: Value) {
    if let (Some(target), Value::Object(extra)) = (value.as_object_mut(), extra) {
        target.extend(extra);
    }
}

/// `simple-user`.
pub(super) fn user(st: &State, login: &str) -> Value {
    let id = st.users.get(login).copied().unwrap_or(0);
    let api = format!("{}/users/{}", st.api(), enc(login));
    json!({
        "login": login,
        "id": id,
        "node_id": format!("U_fake{id}"),
        "avatar_url": format!("{}/avatars/u/{id}", st.base),
        "gravatar_id": "",
        "url": api,
        "html_url": format!("{}/{}", st.base, enc(login)),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": if login.ends_with("[bot]") { "Bot" } else { "User" },
        "user_view_type": "public",
        "site_admin": false,
    })
}

/// `private-user` (`GET /user`).
pub(super) fn user_profile(st: &State, login: &str) -> Value {
    let mut value = user(st, login);
    let profile = json!({
        "name": null, "company": null, "blog": "", "location": null, "email": null,
        "hireable": null, "bio": null, "twitter_username": null,
        "public_repos": st.repos.len(), "public_gists": 0, "followers": 0, "following": 0,
        "created_at": "2020-01-01T00:00:00Z", "updated_at": "2020-01-01T00:00:00Z",
    });
    merge(&mut value, profile);
    value
}

fn repo_api(st: &State, repo: &Repo) -> String {
    format!("{}/repos/{}", st.api(), repo.full_name())
}

/// `*_url` fields of a repository: name and suffix after the repo's API URL.
const REPO_URLS: &[(&str, &str)] = &[
    ("archive_url", "/{archive_format}{/ref}"),
    ("assignees_url", "/assignees{/user}"),
    ("blobs_url", "/git/blobs{/sha}"),
    ("branches_url", "/branches{/branch}"),
    ("collaborators_url", "/collaborators{/collaborator}"),
    ("comments_url", "/comments{/number}"),
    ("commits_url", "/commits{/sha}"),
    ("compare_url", "/compare/{base}...{head}"),
    ("contents_url", "/contents/{+path}"),
    ("contributors_url", "/contributors"),
    ("deployments_url", "/deployments"),
    ("downloads_url", "/downloads"),
    ("events_url", "/events"),
    ("forks_url", "/forks"),
    ("git_commits_url", "/git/commits{/sha}"),
    ("git_refs_url", "/git/refs{/sha}"),
    ("git_tags_url", "/git/tags{/sha}"),
    ("issue_comment_url", "/issues/comments{/number}"),
    ("issue_events_url", "/issues/events{/number}"),
    ("issues_url", "/issues{/number}"),
    ("keys_url", "/keys{/key_id}"),
    ("labels_url", "/labels{/name}"),
    ("languages_url", "/languages"),
    ("merges_url", "/merges"),
    ("milestones_url", "/milestones{/number}"),
    (
        "notifications_url",
        "/notifications{?since,all,participating}",
    ),
    ("pulls_url", "/pulls{/number}"),
    ("releases_url", "/releases{/id}"),
    ("stargazers_url", "/stargazers"),
    ("statuses_url", "/statuses/{sha}"),
    ("subscribers_url", "/subscribers"),
    ("subscription_url", "/subscription"),
    ("tags_url", "/tags"),
    ("teams_url", "/teams"),
    ("trees_url", "/git/trees{/sha}"),
    ("hooks_url", "/hooks"),
];

/// `full-repository`.
pub(super) fn repo(st: &State, repo: &Repo) -> Value {
    let api = repo_api(st, repo);
    let html = format!("{}/{}", st.base, repo.full_name());
    let open_issues = repo.issues.iter().filter(|i| i.state == "open").count();
    let created = ts(repo.created_at);
    let mut value = json!({
        "id": repo.id,
        "node_id": format!("R_fake{}", repo.id),
        "name": repo.name,
        "full_name": repo.full_name(),
        "owner": user(st, &repo.owner),
        "private": false,
        "html_url": html,
        "description": null,
        "fork": false,
        "url": api,
        "git_url": format!("git://{}/{}.git", st.base.trim_start_matches("http://"), repo.full_name()),
        "ssh_url": format!("git@{}:{}.git", st.base.trim_start_matches("http://"), repo.full_name()),
        "clone_url": format!("{}/git/{}.git", st.base, repo.full_name()),
        "mirror_url": null,
        "svn_url": html,
        "default_branch": repo.default_branch,
        "open_issues_count": open_issues,
        "pushed_at": created,
        "created_at": created,
        "updated_at": created,
        "forks": 0,
        "open_issues": open_issues,
        "watchers": 0,
        "network_count": 0,
        "subscribers_count": 0,
    });
    // Fixed settings of every fake repo.
    merge(
        &mut value,
        json!({
            "homepage": null,
            "language": null,
            "forks_count": 0,
            "stargazers_count": 0,
            "watchers_count": 0,
            "size": 1,
            "is_template": false,
            "topics": [],
            "has_issues": true,
            "has_projects": false,
            "has_wiki": false,
            "has_pages": false,
            "has_downloads": true,
            "has_discussions": false,
            "archived": false,
            "disabled": false,
            "visibility": "public",
            "permissions": {"admin": false, "maintain": false, "push": true, "triage": true, "pull": true},
            "allow_forking": true,
            "allow_rebase_merge": true,
            "allow_squash_merge": true,
            "allow_merge_commit": true,
            "allow_auto_merge": false,
            "delete_branch_on_merge": false,
            "web_commit_signoff_required": false,
        }),
    );
    for (name, suffix) in REPO_URLS {
        value[*name] = json!(format!("{api}{suffix}"));
    }
    value
}

pub(super) fn label(st: &State, repo: &Repo, name: &str) -> Value {
    let id = repo
        .labels
        .iter()
        .find(|l| l.name == name)
        .map_or(0, |l| l.id);
    json!({
        "id": id,
        "node_id": format!("LA_fake{id}"),
        "url": format!("{}/labels/{}", repo_api(st, repo), enc(name)),
        "name": name,
        "color": "ededed",
        "default": false,
        "description": null,
    })
}

pub(super) fn labels(st: &State, repo: &Repo, names: &[String]) -> Value {
    names.iter().map(|n| label(st, repo, n)).collect()
}

/// `issue`; pull requests carry a `pull_request` key, as in GitHub's issue list.
pub(super) fn issue(st: &State, repo: &Repo, issue: &Issue) -> Value {
    let api = format!("{}/issues/{}", repo_api(st, repo), issue.number);
    let kind = if issue.pull.is_some() {
        "pull"
    } else {
        "issues"
    };
    let mut value = json!({
        "id": issue.id,
        "node_id": format!("I_fake{}", issue.id),
        "url": api,
        "repository_url": repo_api(st, repo),
        "labels_url": format!("{api}/labels{{/name}}"),
        "comments_url": format!("{api}/comments"),
        "events_url": format!("{api}/events"),
        "html_url": format!("{}/{}/{kind}/{}", st.base, repo.full_name(), issue.number),
        "timeline_url": format!("{api}/timeline"),
        "number": issue.number,
        "state": issue.state,
        "state_reason": issue.state_reason,
        "title": issue.title,
        "body": issue.body,
        "user": user(st, &issue.author),
        "labels": labels(st, repo, &issue.labels),
        "assignee": null,
        "assignees": [],
        "milestone": null,
        "locked": false,
        "active_lock_reason": null,
        "comments": issue.comments.len(),
        "closed_at": issue.closed_at.map(ts),
        "created_at": ts(issue.created_at),
        "updated_at": ts(issue.updated_at),
        "closed_by": null,
        "author_association": issue.author_association,
    });
    if let Some(pull) = &issue.pull {
        let pull_api = format!("{}/pulls/{}", repo_api(st, repo), issue.number);
        let html = format!("{}/{}/pull/{}", st.base, repo.full_name(), issue.number);
        value["draft"] = json!(pull.draft);
        value["pull_request"] = json!({
            "url": pull_api,
            "html_url": html,
            "diff_url": format!("{html}.diff"),
            "patch_url": format!("{html}.patch"),
            "merged_at": null,
        });
    }
    value
}

pub(super) fn comment(st: &State, repo: &Repo, issue: &Issue, comment: &Comment) -> Value {
    let issue_url = format!("{}/issues/{}", repo_api(st, repo), issue.number);
    let kind = if issue.pull.is_some() {
        "pull"
    } else {
        "issues"
    };
    json!({
        "id": comment.id,
        "node_id": format!("IC_fake{}", comment.id),
        "url": format!("{}/issues/comments/{}", repo_api(st, repo), comment.id),
        "html_url": format!("{}/{}/{kind}/{}#issuecomment-{}", st.base, repo.full_name(), issue.number, comment.id),
        "issue_url": issue_url,
        "body": comment.body,
        "user": user(st, &comment.author),
        "created_at": ts(comment.created_at),
        "updated_at": ts(comment.created_at),
        "author_association": comment.author_association,
    })
}

/// `pull-request` when `full` (single PR, create, update), else `pull-request-simple`
/// (list). Panics if `issue` is not a pull request.
pub(super) fn pull(st: &State, repo: &Repo, issue: &Issue, full: bool) -> Value {
    let pull = issue.pull.as_ref().expect("issue is a pull request");
    let repo_api = repo_api(st, repo);
    let api = format!("{repo_api}/pulls/{}", issue.number);
    let issue_api = format!("{repo_api}/issues/{}", issue.number);
    let html = format!("{}/{}/pull/{}", st.base, repo.full_name(), issue.number);
    let head_sha = rev_parse(&repo.bare, &pull.head).unwrap_or_else(|| pull.head_sha.clone());
    let base_sha = rev_parse(&repo.bare, &pull.base).unwrap_or_default();
    let branch = |name: &str, sha: &str| {
        json!({
            "label": format!("{}:{name}", repo.owner),
            "ref": name,
            "sha": sha,
            "user": user(st, &repo.owner),
            "repo": self::repo(st, repo),
        })
    };
    let links = json!({
        "self": {"href": api},
        "html": {"href": html},
        "issue": {"href": issue_api},
        "comments": {"href": format!("{issue_api}/comments")},
        "review_comments": {"href": format!("{api}/comments")},
        "review_comment": {"href": format!("{repo_api}/pulls/comments{{/number}}")},
        "commits": {"href": format!("{api}/commits")},
        "statuses": {"href": format!("{repo_api}/statuses/{head_sha}")},
    });
    let mut value = json!({
        "url": api,
        "id": pull.id,
        "node_id": format!("PR_fake{}", pull.id),
        "html_url": html,
        "diff_url": format!("{html}.diff"),
        "patch_url": format!("{html}.patch"),
        "issue_url": issue_api,
        "commits_url": format!("{api}/commits"),
        "review_comments_url": format!("{api}/comments"),
        "review_comment_url": format!("{repo_api}/pulls/comments{{/number}}"),
        "comments_url": format!("{issue_api}/comments"),
        "statuses_url": format!("{repo_api}/statuses/{head_sha}"),
        "number": issue.number,
        "state": issue.state,
        "locked": false,
        "title": issue.title,
        "user": user(st, &issue.author),
        "body": issue.body,
        "labels": labels(st, repo, &issue.labels),
        "milestone": null,
        "active_lock_reason": null,
        "created_at": ts(issue.created_at),
        "updated_at": ts(issue.updated_at),
        "closed_at": issue.closed_at.map(ts),
        "merged_at": null,
        "merge_commit_sha": null,
        "assignee": null,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "head": branch(&pull.head, &head_sha),
        "base": branch(&pull.base, &base_sha),
        "_links": links,
        "author_association": issue.author_association,
        "auto_merge": null,
        "draft": pull.draft,
    });
    if full {
        let (commits, additions, deletions, changed_files) =
            diff_stats(&repo.bare, &pull.base, &pull.head);
        let extra = json!({
            "merged": false,
            "mergeable": null,
            "rebaseable": null,
            "mergeable_state": "unknown",
            "merged_by": null,
            "comments": issue.comments.len(),
            "review_comments": 0,
            "maintainer_can_modify": false,
            "commits": commits,
            "additions": additions,
            "deletions": deletions,
            "changed_files": changed_files,
        });
        merge(&mut value, extra);
    }
    value
}
