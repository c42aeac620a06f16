//! Text written for the model: short, exact, with line numbers.

use super::matching::{self, Haystack, Search};
use super::parse::{Hunk, HunkLine};
use super::patch::HunkErr;
use super::text::strip_cr;
use super::{ApplyReport, Format, MatchLevel};

const MAX_SHOWN_LINES: usize = 12;
const MAX_LINE_CHARS: usize = 160;

pub(crate) fn format_name(f: Format) -> &'static str {
    match f {
        Format::UnifiedDiff => "unified diff",
        Format::SearchReplace => "SEARCH/REPLACE",
        Format::ApplyPatch => "apply_patch",
        Format::WholeFile => "whole file",
    }
}

pub(crate) fn level_phrase(l: MatchLevel) -> String {
    match l {
        MatchLevel::Exact => "exact".into(),
        MatchLevel::AnyLine => "exact text, at other lines than the header said".into(),
        MatchLevel::TrailingWhitespace => "ignoring trailing whitespace".into(),
        MatchLevel::LineEndings => "ignoring line endings".into(),
        MatchLevel::Indentation => "ignoring indentation; added lines re-indented".into(),
        MatchLevel::UnicodeLookalikes => {
            "after normalising Unicode look-alikes (quotes, dashes, spaces)".into()
        }
    }
}

fn level_note(l: MatchLevel) -> &'static str {
    match l {
        MatchLevel::Exact | MatchLevel::AnyLine => "",
        MatchLevel::TrailingWhitespace => " (ignoring trailing whitespace)",
        MatchLevel::LineEndings => " (ignoring line endings)",
        MatchLevel::Indentation => " (ignoring indentation)",
        MatchLevel::UnicodeLookalikes => " (ignoring Unicode look-alikes)",
    }
}

/// "the hunk", "hunk 2 of 3", "the SEARCH text", "@@ section 2 of 3".
pub(crate) fn hunk_name(i: usize, total: usize, format: Format) -> String {
    match (format, total) {
        (Format::SearchReplace, _) => "the SEARCH text".into(),
        (Format::ApplyPatch, 1) => "the @@ section".into(),
        (Format::ApplyPatch, _) => format!("@@ section {} of {}", i + 1, total),
        (_, 1) => "the hunk".into(),
        _ => format!("hunk {} of {}", i + 1, total),
    }
}

/// Name plus header and first lines, so the model can find the hunk.
fn hunk_label(h: &Hunk, i: usize, total: usize, format: Format) -> String {
    let mut parts = Vec::new();
    if !h.header.is_empty() && format != Format::SearchReplace {
        parts.push(format!("`{}`", clip(&h.header)));
    }
    let old = h.old_lines();
    let src = if old.is_empty() { h.new_lines() } else { old };
    let first: Vec<String> = src
        .iter()
        .filter(|l| !l.trim().is_empty())
        .take(2)
        .map(|l| q(l))
        .collect();
    if !first.is_empty() {
        parts.push(format!("starting {}", first.join(" / ")));
    }
    let name = hunk_name(i, total, format);
    if parts.is_empty() {
        name
    } else {
        format!("{name} ({})", parts.join(", "))
    }
}

fn clip(s: &str) -> String {
    let s = strip_cr(s);
    if s.chars().count() > MAX_LINE_CHARS {
        let t: String = s.chars().take(MAX_LINE_CHARS).collect();
        format!("{t}...")
    } else {
        s.to_string()
    }
}

/// A line quoted for the model; indentation is kept visible.
pub(crate) fn q(s: &str) -> String {
    format!("`{}`", clip(s))
}

fn line_list(starts: &[usize]) -> String {
    let mut v: Vec<String> = starts
        .iter()
        .take(10)
        .map(|s| (s + 1).to_string())
        .collect();
    if starts.len() > 10 {
        v.push(format!("... ({} in all)", starts.len()));
    }
    v.join(", ")
}

fn span(start: usize, len: usize) -> String {
    if len <= 1 {
        format!("line {}", start + 1)
    } else {
        format!("lines {}-{}", start + 1, start + len)
    }
}

/// The file's lines `start..start+len`, numbered.
pub(crate) fn show_region(hay: &Haystack<'_>, start: usize, len: usize) -> String {
    let lines = &hay.doc.lines;
    let end = (start + len).min(lines.len());
    let shown = end.saturating_sub(start).min(MAX_SHOWN_LINES);
    let width = (start + shown).to_string().len();
    let mut out = String::new();
    for (k, l) in lines[start..start + shown].iter().enumerate() {
        out.push_str(&format!(
            "    {:>width$} | {}\n",
            start + k + 1,
            clip(&l.text),
            width = width
        ));
    }
    if end - start > shown {
        out.push_str(&format!("    ... ({} more lines)\n", end - start - shown));
    }
    out
}

/// 1-based position, among the hunk's body lines as written, of the
/// `k`-th old line; SEARCH lines are counted in the SEARCH section.
fn line_ref(h: &Hunk, k: usize, format: Format) -> String {
    if format == Format::SearchReplace {
        return format!("SEARCH line {}", k + 1);
    }
    let mut seen = 0;
    for (pos, l) in h.lines.iter().enumerate() {
        if matches!(l, HunkLine::Context(_) | HunkLine::Del(_)) {
            if seen == k {
                return format!("hunk line {}", pos + 1);
            }
            seen += 1;
        }
    }
    format!("hunk line {}", k + 1)
}

pub(crate) fn hunk_error(
    hay: &Haystack<'_>,
    h: &Hunk,
    i: usize,
    total: usize,
    format: Format,
    path: &str,
    err: &HunkErr,
) -> String {
    let label = hunk_label(h, i, total, format);
    match err {
        HunkErr::Ambiguous { level, starts } => format!(
            "{label} matches {} places in {path}{}, starting at lines {}. Add unchanged lines \
             around the change so that it matches only one place.",
            starts.len(),
            level_note(*level),
            line_list(starts)
        ),
        HunkErr::AlreadyApplied { at, len } => format!(
            "{label} looks already applied: its new text is already at {path} {}. Leave it out.",
            span(*at, *len)
        ),
        HunkErr::NoContext => format!(
            "{label} has no context or removed lines, so its place in {path} ({} lines) is \
             ambiguous. Include a few unchanged lines next to the insertion (or say `@@ -0,0` \
             for the start of the file, `@@ -{},0` for its end).",
            hay.len(),
            hay.len()
        ),
        HunkErr::AnchorNotFound { anchor } => {
            let mut s = format!("the anchor line `@@ {anchor}` of {label} is not in {path}.");
            if let Some((st, _, score)) =
                matching::closest_region(hay.doc, std::slice::from_ref(anchor))
                && score >= 0.5
            {
                s.push_str(&format!(
                    " did you mean: line {}, {}?",
                    st + 1,
                    q(&hay.doc.lines[st].text)
                ));
            }
            s
        }
        HunkErr::AnchorAmbiguous { anchor, starts } => format!(
            "the anchor line `@@ {anchor}` of {label} matches {path} lines {}. Add an outer `@@` \
             line (e.g. the enclosing class) before it, or more context.",
            line_list(starts)
        ),
        HunkErr::NotFound => not_found(hay, h, &label, format, path),
    }
}

fn not_found(hay: &Haystack<'_>, h: &Hunk, label: &str, format: Format, path: &str) -> String {
    let old = h.old_lines();
    let mut s = format!("{label} was not found in {path}.");
    if hay.len() == 0 {
        s.push_str(" The file is empty.");
        return s;
    }
    let (k, starts) = matching::longest_prefix(hay, &old);
    let file = &hay.doc.lines;
    if k == 0 {
        s.push_str(&format!(
            " Its first line, {} {}, is nowhere in the file (even ignoring whitespace).",
            line_ref(h, 0, format),
            q(&old[0])
        ));
    } else if k >= old.len() {
        s.push_str(&format!(
            " Its text is at {path} line {} but not after its `@@` anchor line.",
            line_list(&starts)
        ));
    } else if starts.len() == 1 {
        let st = starts[0];
        let head = if k == 1 {
            format!("Its first line matches line {}", st + 1)
        } else {
            format!("Its first {k} lines match lines {}-{}", st + 1, st + k)
        };
        match file.get(st + k) {
            Some(fl) => s.push_str(&format!(
                " {head}, but {} {} differs from line {}: {}.",
                line_ref(h, k, format),
                q(&old[k]),
                st + k + 1,
                q(&fl.text)
            )),
            None => s.push_str(&format!(
                " {head}, but the file ends there; {} {} is missing.",
                line_ref(h, k, format),
                q(&old[k])
            )),
        }
    } else {
        s.push_str(&format!(
            " Its first {} line{} occur at lines {}, but none continues with {} {}.",
            k,
            if k == 1 { "" } else { "s" },
            line_list(&starts),
            line_ref(h, k, format),
            q(&old[k])
        ));
    }
    let new = h.new_lines();
    if !new.is_empty()
        && new != old
        && let Search::At { start, .. } = matching::locate(hay, &new, 0..hay.len(), false)
    {
        s.push_str(&format!(
            " Its new text is already at {}: this change may already be applied.",
            span(start, new.len())
        ));
    }
    match matching::closest_region(hay.doc, &old) {
        Some((st, len, score)) if score >= 0.4 => {
            s.push_str(&format!("\ndid you mean: {path} {}\n", span(st, len)));
            s.push_str(show_region(hay, st, len).trim_end_matches('\n'));
        }
        _ => s.push_str(" No similar region found."),
    }
    s
}

impl ApplyReport {
    /// The reply contained no recognisable edit block.
    pub fn found_no_edits(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Feedback for the model: per block, applied or exactly why not.
    pub fn feedback(&self) -> String {
        if self.found_no_edits() {
            return "No edits found in your reply; nothing was changed. To edit files use \
                    SEARCH/REPLACE blocks (path on the line before), a unified diff with \
                    `--- a/path` / `+++ b/path` headers, an apply_patch envelope \
                    (`*** Begin Patch` ... `*** End Patch`), or a whole file in a fenced code \
                    block with its path alone on the line before the fence."
                .to_string();
        }
        let n = self.blocks.len();
        let mut out = String::new();
        for b in &self.blocks {
            let status = match (b.applied, self.applied) {
                (true, true) => "applied",
                (true, false) => "ok, not applied",
                (false, _) => "FAILED",
            };
            let path = if b.path.is_empty() {
                String::new()
            } else {
                format!(", {}", b.path)
            };
            let mut lines = b.message.lines();
            let first = lines.next().unwrap_or("");
            out.push_str(&format!(
                "Edit {} ({}{}): {}: {}\n",
                b.index + 1,
                format_name(b.format),
                path,
                status,
                first
            ));
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
        let failed = self.blocks.iter().filter(|b| !b.applied).count();
        if self.applied {
            out.push_str(&format!(
                "All {n} edit{} applied ({} file{} changed).",
                if n == 1 { "" } else { "s" },
                self.changes.len(),
                if self.changes.len() == 1 { "" } else { "s" }
            ));
        } else if failed > 0 && n == 1 {
            out.push_str("Nothing was changed. Fix the edit and send it again.");
        } else if failed > 0 {
            out.push_str(&format!(
                "Nothing was changed: edits are applied all together or not at all. Fix the \
                 FAILED edit{} and send all {n} edits again, including those marked ok.",
                if failed == 1 { "" } else { "s" },
            ));
        } else {
            out.push_str("Nothing was changed: the files already contain exactly this content.");
        }
        out
    }
}
