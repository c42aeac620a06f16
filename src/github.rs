//! GitHub's REST API through octocrab: the dispatch issue, its comments, the target
//! repository and the task's pull request. `api_url` points at github.com, GitHub Enterprise
//! (`https://HOST/api/v3`) or a local fake. There is no merge call anywhere.

use octocrab::Octocrab;
use octocrab::models::pulls::PullRequest;
use octocrab::params::State;

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

fn hint_for(status: u16) -> &'static str {
    match status {
        401 => ". Check GITHUB_TOKEN: it is missing, expired or revoked",
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

impl From<PullRequest> for PullRequestRef {
    fn from(pr: PullRequest) -> PullRequestRef {
        PullRequestRef {
            number: pr.number,
            url: pr.html_url.map(|u| u.to_string()).unwrap_or_default(),
        }
    }
}

/// The issue or pull request a task targets, as context for the model.
#[derive(Debug, Clone)]
pub struct IssueText {
    pub title: String,
    pub body: String,
}

pub struct GitHub {
    client: Octocrab,
}

impl GitHub {
    pub fn new(api_url: &str, token: &Secret) -> Result<GitHub, GitHubError> {
        let bad_url = |message: String| GitHubError::BadUrl {
            url: api_url.to_string(),
            message,
        };
        // octocrab retries 5xx and 429 immediately, POSTs included, which can duplicate a
        // comment or PR; without its `retry` feature it does not, and failures surface here.
        let client = Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| bad_url(e.to_string()))?
            .personal_token(token.expose().to_string())
            .set_connect_timeout(Some(std::time::Duration::from_secs(15)))
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .build()
            .map_err(|e| bad_url(e.to_string()))?;
        Ok(GitHub { client })
    }

    pub async fn issue(&self, repo: &RepoName, number: u64) -> Result<IssueInput, GitHubError> {
        let what = format!("reading issue {repo}#{number}");
        let issue = self
            .client
            .issues(&repo.owner, &repo.name)
            .get(number)
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        Ok(IssueInput {
            number: issue.number,
            title: issue.title,
            body: issue.body.unwrap_or_default(),
            labels: issue.labels.into_iter().map(|l| l.name).collect(),
            is_pull_request: issue.pull_request.is_some(),
        })
    }

    pub async fn issue_text(&self, repo: &RepoName, number: u64) -> Result<IssueText, GitHubError> {
        let issue = self.issue(repo, number).await?;
        Ok(IssueText {
            title: issue.title,
            body: issue.body,
        })
    }

    pub async fn comment(
        &self,
        repo: &RepoName,
        number: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let what = format!("commenting on {repo}#{number}");
        self.client
            .issues(&repo.owner, &repo.name)
            .create_comment(number, body)
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        Ok(())
    }

    pub async fn repo_info(&self, repo: &RepoName) -> Result<RepoInfo, GitHubError> {
        let what = format!("reading repository {repo}");
        let info = self
            .client
            .repos(&repo.owner, &repo.name)
            .get()
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        let missing = |field: &str| GitHubError::Api {
            what: what.clone(),
            status: 200,
            message: format!("the repository has no {field}"),
            hint: "",
        };
        Ok(RepoInfo {
            clone_url: info
                .clone_url
                .map(|u| u.to_string())
                .ok_or_else(|| missing("clone_url"))?,
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
        let page = self
            .client
            .pulls(&repo.owner, &repo.name)
            .list()
            .state(State::Open)
            .head(format!("{}:{branch}", repo.owner))
            .per_page(10)
            .send()
            .await
            .map_err(|e| GitHubError::from_octocrab(&what, e))?;
        Ok(page
            .items
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
        self.client
            .pulls(&repo.owner, &repo.name)
            .create(title, head, base)
            .body(body)
            .send()
            .await
            .map(PullRequestRef::from)
            .map_err(|e| GitHubError::from_octocrab(&what, e))
    }

    pub async fn update_pr(
        &self,
        repo: &RepoName,
        number: u64,
        title: &str,
        body: &str,
    ) -> Result<PullRequestRef, GitHubError> {
        let what = format!("updating pull request {repo}#{number}");
        self.client
            .pulls(&repo.owner, &repo.name)
            .update(number)
            .title(title)
            .body(body)
            .send()
            .await
            .map(PullRequestRef::from)
            .map_err(|e| GitHubError::from_octocrab(&what, e))
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
            // Opened meanwhile (or by an earlier attempt whose answer was lost).
            Err(e) if e.status() == Some(422) => match self.find_open_pr(repo, branch).await? {
                Some(existing) => Ok((
                    self.update_pr(repo, existing.number, title, body).await?,
                    false,
                )),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}
