//! Runs the parsed blocks against the staged worktree, in reply order.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::parse::{self, Block, Kind};
use super::path::Resolved;
use super::text::{Doc, Line};
use super::vfs::{Content, Entry, StageErr, Vfs};
use super::{
    ApplyReport, BlockOutcome, ChangeKind, EditError, FileChange, Format, MatchLevel, PathPolicy,
    canonical, patch,
};

struct Done {
    level: Option<MatchLevel>,
    message: String,
}

pub(crate) fn run(
    root: &Path,
    reply: &str,
    policy: &PathPolicy,
    dry_run: bool,
) -> Result<ApplyReport, EditError> {
    let mut vfs = Vfs::new(root, policy)?;
    let blocks = parse::parse_reply(reply);
    let mut outcomes = Vec::with_capacity(blocks.len());
    for (index, b) in blocks.iter().enumerate() {
        let mut path = b.display_path();
        // A block repeated verbatim (models do that) is applied once.
        let dup = blocks[..index]
            .iter()
            .zip(&outcomes)
            .position(|(prev, o): (&Block, &BlockOutcome)| o.applied && prev == b);
        if let Some(first) = dup {
            let o: &BlockOutcome = &outcomes[first];
            let (path, level) = (o.path.clone(), o.level);
            outcomes.push(BlockOutcome {
                index,
                format: b.format,
                path,
                applied: true,
                level,
                message: format!("same as edit {}; applied once", first + 1),
            });
            continue;
        }
        let (applied, level, message) = match stage(&mut vfs, b, &mut path) {
            Ok(d) => (true, d.level, d.message),
            Err(StageErr::Block(m)) => (false, None, m),
            Err(StageErr::Io(e)) => return Err(e),
        };
        outcomes.push(BlockOutcome {
            index,
            format: b.format,
            path,
            applied,
            level,
            message,
        });
    }
    let all_ok = !outcomes.is_empty() && outcomes.iter().all(|o| o.applied);
    let changed = vfs.changed();
    if !all_ok || changed.is_empty() {
        return Ok(ApplyReport {
            applied: false,
            blocks: outcomes,
            changes: Vec::new(),
            diff: String::new(),
        });
    }
    let mut changes = Vec::with_capacity(changed.len());
    let mut diff = String::new();
    for (e, kind) in &changed {
        changes.push(FileChange {
            path: PathBuf::from(&e.rel),
            kind: *kind,
        });
        diff.push_str(&entry_diff(e, *kind));
    }
    if !dry_run {
        vfs.commit()?;
    }
    Ok(ApplyReport {
        applied: true,
        blocks: outcomes,
        changes,
        diff,
    })
}

fn entry_diff(e: &Entry, kind: ChangeKind) -> String {
    let cur = match &e.cur {
        Content::Text(s) => Some(s.as_str()),
        _ => None,
    };
    match kind {
        ChangeKind::Created => canonical::file_diff(&e.rel, None, cur, e.new_mode.unwrap_or(0o644)),
        ChangeKind::Deleted => match e.orig_text() {
            Some(t) => canonical::file_diff(&e.rel, Some(t), None, e.orig_mode.unwrap_or(0o644)),
            None => canonical::binary_deletion(&e.rel, e.orig_mode.unwrap_or(0o644)),
        },
        ChangeKind::Modified => {
            canonical::file_diff(&e.rel, e.orig_text(), cur, e.orig_mode.unwrap_or(0o644))
        }
    }
}

/// First candidate that exists in the staged tree, else the first one.
fn pick_path(vfs: &mut Vfs, paths: &[String]) -> Result<Resolved, StageErr> {
    let mut first: Option<Result<Resolved, String>> = None;
    for p in paths {
        let r = vfs.resolve(p);
        if let Ok(res) = &r {
            match vfs.load(res) {
                Ok(i) if vfs.get(i).cur != Content::Missing => return Ok(res.clone()),
                Err(StageErr::Io(e)) => return Err(StageErr::Io(e)),
                _ => {}
            }
        }
        if first.is_none() {
            first = Some(r);
        }
    }
    match first {
        Some(r) => r.map_err(StageErr::Block),
        None => Err(StageErr::Block(
            "no file path given for this edit".to_string(),
        )),
    }
}

fn missing_msg(vfs: &Vfs, e: &Entry, format: Format) -> String {
    if e.orig != Content::Missing {
        return format!(
            "`{}` was deleted or moved by an earlier edit in this reply.",
            e.rel
        );
    }
    let mut m = format!("`{}` does not exist.", e.rel);
    let others = vfs.same_name_files(&e.rel);
    if !others.is_empty() {
        m.push_str(&format!(" did you mean: {}?", others.join(", ")));
    }
    m.push_str(match format {
        Format::SearchReplace => " To create a new file, use an empty SEARCH section.",
        Format::UnifiedDiff => " To create a new file, use `--- /dev/null` as the old file.",
        Format::ApplyPatch => " To create a new file, use `*** Add File:`.",
        Format::WholeFile => "",
    });
    m
}

fn binary_msg(rel: &str) -> String {
    format!("`{rel}` is a binary file (or not UTF-8); it is not edited.")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn stage(vfs: &mut Vfs, b: &Block, path_out: &mut String) -> Result<Done, StageErr> {
    if let Kind::Malformed(m) = &b.kind {
        return Err(StageErr::Block(m.clone()));
    }
    let r = pick_path(vfs, &b.paths)?;
    path_out.clone_from(&r.rel);
    let i = vfs.load(&r)?;
    let cur = vfs.get(i).cur.clone();
    match &b.kind {
        Kind::Hunks { hunks, move_to } => {
            let text = match cur {
                Content::Missing => return Err(missing_msg(vfs, vfs.get(i), b.format).into()),
                Content::Binary => return Err(binary_msg(&r.rel).into()),
                Content::Text(s) => s,
            };
            let doc = Doc::parse(&text);
            let p = patch::apply_hunks(&doc, hunks, b.format, &r.rel).map_err(|m| {
                if vfs.get(i).orig == Content::Text(text.clone()) {
                    StageErr::Block(m)
                } else {
                    StageErr::Block(format!(
                        "{m}\n(Line numbers are for `{}` as changed by the earlier edits in \
                         this reply.)",
                        r.rel
                    ))
                }
            })?;
            let new_text = p.doc.render();
            let mut message = p.message;
            match move_to {
                Some(to) => {
                    let t = vfs.resolve(to)?;
                    if t.rel != r.rel {
                        let ti = vfs.load(&t)?;
                        if vfs.get(ti).cur != Content::Missing {
                            return Err(format!(
                                "cannot move `{}` to `{}`: the target already exists.",
                                r.rel, t.rel
                            )
                            .into());
                        }
                        if let Some(p) = vfs.parent_blocked(&t) {
                            return Err(format!(
                                "cannot move to `{}`: `{p}` is a file, not a directory.",
                                t.rel
                            )
                            .into());
                        }
                        let mode = vfs.get(i).orig_mode;
                        vfs.get_mut(i).cur = Content::Missing;
                        let te = vfs.get_mut(ti);
                        te.cur = Content::Text(new_text);
                        te.new_mode = mode;
                        message.push_str(&format!("; moved to `{}`", t.rel));
                    } else {
                        vfs.get_mut(i).cur = Content::Text(new_text);
                    }
                }
                None => {
                    if new_text == text {
                        message.push_str("; no change to the file");
                    }
                    vfs.get_mut(i).cur = Content::Text(new_text);
                }
            }
            Ok(Done {
                level: Some(p.level),
                message,
            })
        }
        Kind::Create {
            lines,
            final_newline,
            executable,
        } => {
            let mut doc = Doc::new_file(lines);
            doc.final_newline = *final_newline;
            let new_text = doc.render();
            let n = lines.len();
            match cur {
                Content::Missing => {
                    if let Some(p) = vfs.parent_blocked(&r) {
                        return Err(format!(
                            "cannot create `{}`: `{p}` is a file, not a directory.",
                            r.rel
                        )
                        .into());
                    }
                    let e = vfs.get_mut(i);
                    e.cur = Content::Text(new_text);
                    e.new_mode = Some(if *executable { 0o755 } else { 0o644 });
                    Ok(Done {
                        level: None,
                        message: format!("new file, {n} line{}", plural(n)),
                    })
                }
                Content::Text(s) if s.is_empty() => {
                    vfs.get_mut(i).cur = Content::Text(new_text);
                    Ok(Done {
                        level: None,
                        message: format!("filled the empty file, {n} line{}", plural(n)),
                    })
                }
                Content::Text(s) if s == new_text => Ok(Done {
                    level: None,
                    message: "the file already has exactly this content; no change".into(),
                }),
                Content::Text(s) => {
                    let have = Doc::parse(&s).len();
                    Err(exists_msg(b.format, &r.rel, have).into())
                }
                Content::Binary => Err(exists_msg(b.format, &r.rel, 0).into()),
            }
        }
        Kind::Replace { lines } => match cur {
            Content::Missing => {
                if let Some(p) = vfs.parent_blocked(&r) {
                    return Err(format!(
                        "cannot create `{}`: `{p}` is a file, not a directory.",
                        r.rel
                    )
                    .into());
                }
                let e = vfs.get_mut(i);
                e.cur = Content::Text(Doc::new_file(lines).render());
                e.new_mode = Some(0o644);
                let n = lines.len();
                Ok(Done {
                    level: None,
                    message: format!("new file, {n} line{}", plural(n)),
                })
            }
            Content::Binary => Err(binary_msg(&r.rel).into()),
            Content::Text(s) => {
                let old = Doc::parse(&s);
                if lines.iter().all(|l| l.trim().is_empty()) && !s.trim().is_empty() {
                    return Err(format!(
                        "the code block for `{}` is empty; a whole-file block must contain the \
                         complete new file.",
                        r.rel
                    )
                    .into());
                }
                if let Some((k, l)) = elision(lines, &old) {
                    return Err(format!(
                        "line {} of the code block for `{}`, {}, looks like an elision (\"rest \
                         unchanged\"); a whole-file block must contain the complete file. Send \
                         the complete file, or use SEARCH/REPLACE blocks for partial edits.",
                        k + 1,
                        r.rel,
                        super::feedback::q(l)
                    )
                    .into());
                }
                let new = Doc {
                    bom: old.bom,
                    lines: lines
                        .iter()
                        .map(|t| Line {
                            text: t.clone(),
                            eol: old.eol,
                        })
                        .collect(),
                    final_newline: old.final_newline,
                    eol: old.eol,
                };
                let new_text = new.render();
                let n = lines.len();
                let mut message = format!("whole file replaced, {n} line{}", plural(n));
                if new_text == s {
                    message.push_str("; no change to the file");
                }
                vfs.get_mut(i).cur = Content::Text(new_text);
                Ok(Done {
                    level: None,
                    message,
                })
            }
        },
        Kind::Delete => match cur {
            Content::Missing => Err(missing_msg(vfs, vfs.get(i), b.format).into()),
            _ => {
                vfs.get_mut(i).cur = Content::Missing;
                Ok(Done {
                    level: None,
                    message: "file deleted".into(),
                })
            }
        },
        Kind::Malformed(m) => Err(StageErr::Block(m.clone())),
    }
}

fn exists_msg(format: Format, rel: &str, have: usize) -> String {
    match format {
        Format::SearchReplace => format!(
            "the SEARCH section is empty, which creates a new file, but `{rel}` already exists \
             ({have} lines). Put the exact lines to replace in SEARCH."
        ),
        Format::UnifiedDiff => format!(
            "the diff creates `{rel}` (`--- /dev/null`) but it already exists ({have} lines). \
             Diff against its current content (`--- a/{rel}`)."
        ),
        Format::ApplyPatch => format!(
            "`*** Add File: {rel}` but the file already exists ({have} lines). Use `*** Update \
             File: {rel}`."
        ),
        Format::WholeFile => format!("`{rel}` already exists."),
    }
}

/// A line of a whole-file block that stands for omitted code (`// ...`,
/// `# ... rest unchanged ...`) and is not in the current file.
fn elision<'a>(lines: &'a [String], old: &Doc) -> Option<(usize, &'a String)> {
    let existing: HashSet<&str> = old.lines.iter().map(|l| l.text.trim()).collect();
    lines
        .iter()
        .enumerate()
        .find(|(_, l)| !existing.contains(l.trim()) && is_elision(l.trim()))
}

fn is_elision(t: &str) -> bool {
    let mut s = t;
    let mut commented = false;
    for lead in ["//", "#", "--", "/*", "<!--", ";", "*", "%", "{/*"] {
        if let Some(x) = s.strip_prefix(lead) {
            s = x.trim();
            commented = true;
            break;
        }
    }
    for trail in ["*/}", "*/", "-->"] {
        if let Some(x) = s.strip_suffix(trail) {
            s = x.trim();
        }
    }
    if !(s.contains("...") || s.contains('\u{2026}')) {
        return false;
    }
    // Without a comment marker, only a line that opens with the dots (`...
    // rest unchanged`, `[...]`) stands for omitted code; code that merely
    // mentions them, in a string or a message, is content.
    let opening = s.trim_start_matches(['[', '(', '{', '<']).trim_start();
    if !(commented || opening.starts_with("...") || opening.starts_with('\u{2026}')) {
        return false;
    }
    let only_dots = s
        .chars()
        .all(|c| c == '.' || c == '\u{2026}' || c.is_whitespace());
    if only_dots {
        return commented;
    }
    let lower = s.to_lowercase();
    [
        "existing",
        "rest of",
        "unchanged",
        "remain",
        "omitted",
        "same as",
        "as before",
        "previous",
        "other code",
        "more code",
        "code here",
        "keep ",
    ]
    .iter()
    .any(|k| lower.contains(k))
}
