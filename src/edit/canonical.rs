//! Canonical git-style unified diffs, made with `similar`.

use similar::{Algorithm, TextDiff};

/// Unified diff of one modified file (`a/` `b/` headers, 3 context lines);
/// empty when `old == new`. The engine applies its own output exactly.
pub fn canonical_diff(path: &str, old: &str, new: &str) -> String {
    canonical_file_diff(path, Some(old), Some(new))
}

/// Like [`canonical_diff`]; `None` means the file does not exist on that
/// side (creation: `--- /dev/null`, deletion: `+++ /dev/null`).
pub fn canonical_file_diff(path: &str, old: Option<&str>, new: Option<&str>) -> String {
    file_diff(path, old, new, 0o644)
}

pub(crate) fn file_diff(path: &str, old: Option<&str>, new: Option<&str>, mode: u32) -> String {
    if old.is_some() && old == new {
        return String::new();
    }
    let a = old.unwrap_or("");
    let b = new.unwrap_or("");
    let ha = if old.is_some() {
        format!("a/{path}")
    } else {
        "/dev/null".to_string()
    };
    let hb = if new.is_some() {
        format!("b/{path}")
    } else {
        "/dev/null".to_string()
    };
    let git_mode = if mode & 0o111 != 0 {
        "100755"
    } else {
        "100644"
    };
    let mut out = format!("diff --git a/{path} b/{path}\n");
    if old.is_none() {
        out.push_str(&format!("new file mode {git_mode}\n"));
    } else if new.is_none() {
        out.push_str(&format!("deleted file mode {git_mode}\n"));
    }
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .diff_lines(a, b);
    let body = diff
        .unified_diff()
        .context_radius(3)
        .header(&ha, &hb)
        .to_string();
    out.push_str(&body);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Header-only diff for a deleted binary file.
pub(crate) fn binary_deletion(path: &str, mode: u32) -> String {
    let git_mode = if mode & 0o111 != 0 {
        "100755"
    } else {
        "100644"
    };
    format!(
        "diff --git a/{path} b/{path}\ndeleted file mode {git_mode}\nBinary files a/{path} and /dev/null differ\n"
    )
}
