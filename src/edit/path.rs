//! Path policy: every path from a reply is resolved inside the worktree or
//! refused with a reason written for the model.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use super::PathPolicy;

/// A path that passed the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// Real path relative to the root, `/`-separated, symlinks resolved.
    pub rel: String,
    pub abs: PathBuf,
}

fn clean(raw: &str) -> &str {
    let mut s = raw.trim();
    for w in ["`", "\"", "'"] {
        if let Some(x) = s.strip_prefix(w).and_then(|x| x.strip_suffix(w)) {
            s = x.trim();
        }
    }
    s
}

fn protected(comps: &[&str], policy: &PathPolicy, shown: &str) -> Result<(), String> {
    if comps.iter().any(|c| c.eq_ignore_ascii_case(".git")) {
        return Err(format!(
            "`{shown}` is inside `.git/`, which may not be edited"
        ));
    }
    if policy.protect_workflows
        && comps.len() >= 2
        && comps[0].eq_ignore_ascii_case(".github")
        && comps[1].eq_ignore_ascii_case("workflows")
    {
        return Err(format!(
            "`{shown}` is under `.github/workflows/`, which may not be edited"
        ));
    }
    Ok(())
}

/// Resolves `raw` (as written in the reply) against the canonical `root`.
pub(crate) fn resolve(root: &Path, raw: &str, policy: &PathPolicy) -> Result<Resolved, String> {
    let s = clean(raw);
    if s.is_empty() {
        return Err("empty file path".into());
    }
    let s = s.replace('\\', "/");
    let b = s.as_bytes();
    let drive = b.len() >= 2 && b[1] == b':' && b[0].is_ascii_alphabetic();
    if s.starts_with('/') || s.starts_with('~') || drive {
        return Err(format!(
            "absolute path `{s}` is not allowed; use a path relative to the repository root"
        ));
    }
    let comps: Vec<&str> = s
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if comps.contains(&"..") {
        return Err(format!(
            "path `{s}` contains `..`; use a path relative to the repository root without `..`"
        ));
    }
    if comps.is_empty() {
        return Err(format!("path `{s}` names no file"));
    }
    protected(&comps, policy, &s)?;

    // Walk the existing components; every symlink met must stay inside root.
    let mut real = root.to_path_buf();
    let mut i = 0;
    while i < comps.len() {
        let cand = real.join(comps[i]);
        match fs::symlink_metadata(&cand) {
            Ok(md) if md.file_type().is_symlink() => match fs::canonicalize(&cand) {
                Ok(target) if target.starts_with(root) => real = target,
                Ok(_) => {
                    return Err(format!(
                        "`{s}` goes through a symlink that points outside the repository"
                    ));
                }
                Err(_) => return Err(format!("`{s}` goes through a dangling symlink")),
            },
            Ok(_) => real = cand,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                for c in &comps[i..] {
                    real.push(c);
                }
                break;
            }
            Err(e) => return Err(format!("cannot use `{s}`: {e}")),
        }
        i += 1;
    }
    let rel_path = real
        .strip_prefix(root)
        .map_err(|_| format!("`{s}` resolves outside the repository"))?;
    let rel_comps: Vec<String> = rel_path
        .components()
        .map(|c| match c {
            Component::Normal(x) => Ok(x.to_string_lossy().into_owned()),
            _ => Err(format!("`{s}` resolves outside the repository")),
        })
        .collect::<Result<_, _>>()?;
    if rel_comps.is_empty() {
        return Err(format!("`{s}` is the repository root, not a file"));
    }
    let refs: Vec<&str> = rel_comps.iter().map(String::as_str).collect();
    protected(&refs, policy, &s)?;
    Ok(Resolved {
        rel: rel_comps.join("/"),
        abs: real,
    })
}
