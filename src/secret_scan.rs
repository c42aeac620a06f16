//! Looks for credentials in the lines a change adds, before anything is pushed. A model can
//! be talked into writing a token into a file; the push is refused when it does, and the
//! finding names the kind and place of the secret, never the secret itself.

use std::sync::LazyLock;

use regex::Regex;

/// One credential-shaped string in an added line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: &'static str,
    pub file: String,
    /// Line number in the new version of the file.
    pub line: usize,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} in {} line {}", self.kind, self.file, self.line)
    }
}

static PATTERNS: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    [
        (
            "a GitHub token",
            r"\b(gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})",
        ),
        (
            "an OpenAI-style API key",
            r"\bsk-(proj-|svcacct-|ant-)?[A-Za-z0-9_-]{20,}",
        ),
        (
            "a private key",
            r"-----BEGIN ([A-Z]+ )*PRIVATE KEY( BLOCK)?-----",
        ),
        ("an AWS access key id", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        ("a Slack token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ]
    .into_iter()
    .map(|(kind, pattern)| {
        let regex =
            Regex::new(pattern).unwrap_or_else(|e| unreachable!("constant regex {pattern}: {e}"));
        (kind, regex)
    })
    .collect()
});

/// Scans the added lines of a unified diff for credential shapes and for any of `own`
/// (the runner's own secrets) verbatim.
pub fn scan_diff(diff: &str, own: &[&str]) -> Vec<Finding> {
    let mut findings = Vec::new();
    let mut file = String::new();
    let mut line_no = 0usize;
    for line in diff.lines() {
        if let Some(path) = line.strip_prefix("+++ ") {
            file = path.strip_prefix("b/").unwrap_or(path).to_string();
            continue;
        }
        if let Some(header) = line.strip_prefix("@@ ") {
            line_no = new_start(header).saturating_sub(1);
            continue;
        }
        if line.starts_with("--- ") || line.starts_with("diff ") || line.starts_with("index ") {
            continue;
        }
        match line.chars().next() {
            Some('+') => {
                line_no += 1;
                let added = &line[1..];
                let own_hit = own.iter().any(|s| s.len() >= 6 && added.contains(s));
                let kind = PATTERNS
                    .iter()
                    .find(|(_, re)| re.is_match(added))
                    .map(|(kind, _)| *kind)
                    .or(own_hit.then_some("a secret of this runner"));
                if let Some(kind) = kind {
                    findings.push(Finding {
                        kind,
                        file: file.clone(),
                        line: line_no,
                    });
                }
            }
            Some(' ') => line_no += 1,
            _ => {}
        }
    }
    findings
}

/// The start line of the new side in a hunk header's `-a,b +c,d @@` part.
fn new_start(header: &str) -> usize {
    header
        .split_whitespace()
        .find_map(|part| part.strip_prefix('+'))
        .and_then(|range| range.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff(added: &str) -> String {
        format!(
            "diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n@@ -10,2 +10,3 @@\n context\n+{added}\n context\n"
        )
    }

    #[test]
    fn credential_shapes_are_found_with_their_place() {
        let cases = [
            (
                "token = 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'",
                "a GitHub token",
            ),
            (
                "t = github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
                "a GitHub token",
            ),
            (
                "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwx",
                "an OpenAI-style API key",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----", "a private key"),
            ("-----BEGIN OPENSSH PRIVATE KEY-----", "a private key"),
            (
                "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
                "an AWS access key id",
            ),
        ];
        for (line, kind) in cases {
            let found = scan_diff(&diff(line), &[]);
            assert_eq!(
                found,
                [Finding {
                    kind,
                    file: "app.py".into(),
                    line: 11
                }],
                "{line}"
            );
            assert!(
                !found[0].to_string().contains(&line[line.len() - 6..]),
                "the finding never repeats the secret"
            );
        }
    }

    #[test]
    fn the_runners_own_secrets_are_found_verbatim() {
        let found = scan_diff(
            &diff("password = 'hunter2-very-long'"),
            &["hunter2-very-long"],
        );
        assert_eq!(found[0].kind, "a secret of this runner");
    }

    #[test]
    fn removed_lines_context_and_ordinary_code_are_fine() {
        let text = "--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-old = 'ghp_abcdefghijklmnopqrstuvwxyz0123456789'\n key = 'sk-proj-abcdefghijklmnopqrstuvwx'\n+def ask(sk_model, token_count): return 'github_pat_'\n";
        assert!(scan_diff(text, &[]).is_empty());
    }
}
