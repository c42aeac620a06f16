//! Applies the hunks of one block to one file's text, in memory.
//!
//! Every hunk is located independently in the file as it was before the
//! block (so hunks may come in any order), the placements are sorted and
//! checked for overlap, then spliced in one pass. Context lines keep the
//! file's exact text; added lines take the file's dominant line ending and,
//! when the match ignored indentation, are re-indented by the delta between
//! the hunk's first non-blank old line and the file line it matched.

use super::matching::{self, Haystack, Search};
use super::parse::{Hunk, HunkLine};
use super::text::{Doc, Line, indent_of, indent_width, strip_cr};
use super::{Format, MatchLevel, feedback};

/// Why one hunk could not be placed.
#[derive(Debug, Clone)]
pub(crate) enum HunkErr {
    NotFound,
    Ambiguous {
        level: MatchLevel,
        starts: Vec<usize>,
    },
    AlreadyApplied {
        at: usize,
        len: usize,
    },
    NoContext,
    AnchorNotFound {
        anchor: String,
    },
    AnchorAmbiguous {
        anchor: String,
        starts: Vec<usize>,
    },
}

#[derive(Debug, Clone)]
struct Plan {
    hunk: usize,
    start: usize,
    end: usize,
    level: MatchLevel,
    /// `Exact`, or `AnyLine` when the header's line number was wrong.
    reported: MatchLevel,
}

pub(crate) struct Patched {
    pub doc: Doc,
    pub level: MatchLevel,
    pub message: String,
}

pub(crate) fn apply_hunks(
    doc: &Doc,
    hunks: &[Hunk],
    format: Format,
    path: &str,
) -> Result<Patched, String> {
    let hay = Haystack::new(doc);
    let total = hunks.len();
    if format == Format::UnifiedDiff
        && image_at_header_lines(&hay, hunks, Side::Old).is_none_or(|v| v.is_empty())
        && let Some(at) = image_at_header_lines(&hay, hunks, Side::New)
        && !at.is_empty()
    {
        return Err(format!(
            "this diff looks already applied: {path} already has the new text of every hunk \
             at the lines the headers name (new side starting at {}). Leave it out.",
            at.iter()
                .map(|l| format!("line {l}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for (i, h) in hunks.iter().enumerate() {
        match place(&hay, h, i, format) {
            Ok(p) => plans.push(p),
            Err(e) => errors.push(feedback::hunk_error(&hay, h, i, total, format, path, &e)),
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    plans.sort_by_key(|p| (p.start, p.end));
    for w in plans.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let both_empty_same = a.start == a.end && b.start == b.end && a.start == b.start;
        if b.start < a.end || both_empty_same {
            let (x, y) = (a.hunk.min(b.hunk), a.hunk.max(b.hunk));
            let from = b.start + 1;
            let to = a.end.min(b.end).max(from);
            return Err(format!(
                "{} and {} overlap: both touch {} line{} {}. Merge them into one hunk.",
                feedback::hunk_name(x, total, format),
                feedback::hunk_name(y, total, format),
                path,
                if to > from { "s" } else { "" },
                if to > from {
                    format!("{from}-{to}")
                } else {
                    from.to_string()
                },
            ));
        }
    }

    let mut out: Vec<Line> = Vec::with_capacity(doc.len() + 8);
    let mut cursor = 0;
    let mut final_newline = doc.final_newline;
    for p in &plans {
        out.extend_from_slice(&doc.lines[cursor..p.start]);
        let h = &hunks[p.hunk];
        emit(doc, h, p, &mut out);
        cursor = p.end;
        if p.end == doc.len() {
            if h.new_no_eol {
                final_newline = false;
            } else if h.old_no_eol {
                final_newline = true;
            }
        }
    }
    out.extend_from_slice(&doc.lines[cursor..]);
    let new_doc = Doc {
        bom: doc.bom,
        lines: out,
        final_newline,
        eol: doc.eol,
    };

    let level = plans
        .iter()
        .map(|p| {
            if p.reported == MatchLevel::AnyLine {
                MatchLevel::AnyLine
            } else {
                p.level
            }
        })
        .max_by_key(|l| matching::rank(*l))
        .unwrap_or(MatchLevel::Exact);
    let mut message = if format == Format::SearchReplace {
        format!("SEARCH text matched ({})", feedback::level_phrase(level))
    } else {
        format!(
            "{} hunk{} matched ({})",
            total,
            if total == 1 { "" } else { "s" },
            feedback::level_phrase(level)
        )
    };
    let moved: Vec<String> = plans
        .iter()
        .filter(|p| p.reported == MatchLevel::AnyLine)
        .filter_map(|p| {
            let said = hunks[p.hunk].old_start?;
            Some(format!(
                "{} found at line {}, not {}",
                feedback::hunk_name(p.hunk, total, format),
                p.start + 1,
                said
            ))
        })
        .collect();
    if !moved.is_empty() {
        message.push_str(&format!("; {}", moved.join(", ")));
    }
    Ok(Patched {
        doc: new_doc,
        level,
        message,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Old,
    New,
}

/// GNU patch's "previously applied" test: does every hunk's old (or new)
/// text sit exactly at the line its header names for that side? `None` if
/// not; else the 1-based lines checked. A diff whose new text is all in
/// place while its old text is not is refused as already applied. Line
/// numbers are used only to refuse, never to pick a match.
fn image_at_header_lines(hay: &Haystack<'_>, hunks: &[Hunk], side: Side) -> Option<Vec<usize>> {
    let file = &hay.doc.lines;
    let mut at = Vec::new();
    for h in hunks {
        let (start, lines, no_eol) = match side {
            Side::Old => (h.old_start?, h.old_lines(), h.old_no_eol),
            Side::New => (h.new_start?, h.new_lines(), h.new_no_eol),
        };
        if lines.is_empty() {
            continue;
        }
        let s = start.checked_sub(1)?;
        let region = file.get(s..s + lines.len())?;
        // Exact text; only a `\r` difference (CRLF file, LF diff) is ignored.
        if !region
            .iter()
            .zip(&lines)
            .all(|(f, n)| f.text == strip_cr(n))
        {
            return None;
        }
        // A `\ No newline at end of file` marker makes the final-newline
        // state part of the image.
        if (h.old_no_eol || h.new_no_eol)
            && (s + lines.len() != file.len() || hay.doc.final_newline == no_eol)
        {
            return None;
        }
        at.push(start);
    }
    Some(at)
}

fn place(hay: &Haystack<'_>, h: &Hunk, idx: usize, format: Format) -> Result<Plan, HunkErr> {
    let doc = hay.doc;
    let len = doc.len();
    // apply_patch anchors, outermost first, each inside the previous scope.
    let mut anchor: Option<usize> = None;
    for a in &h.anchors {
        match matching::locate_scoped(hay, std::slice::from_ref(a), anchor, 1, false) {
            Search::At { start, .. } => anchor = Some(start),
            Search::Ambiguous { starts, .. } => {
                return Err(HunkErr::AnchorAmbiguous {
                    anchor: a.clone(),
                    starts,
                });
            }
            Search::NotFound => return Err(HunkErr::AnchorNotFound { anchor: a.clone() }),
        }
    }
    let old = h.old_lines();
    if old.is_empty() {
        let at = insertion_point(h, len, anchor, format)?;
        // The lines to insert are already right there: applied before.
        let new = h.new_lines();
        let l0 = MatchLevel::Exact;
        let n = matching::normalize_all(l0, &new);
        let hl = hay.level(l0);
        let after = at + n.len() <= len && hl[at..at + n.len()] == *n;
        let before = at == len && n.len() <= at && hl[at - n.len()..at] == *n;
        if !n.is_empty() && (after || before) {
            return Err(HunkErr::AlreadyApplied {
                at: if after { at } else { at - n.len() },
                len: n.len(),
            });
        }
        return Ok(Plan {
            hunk: idx,
            start: at,
            end: at,
            level: MatchLevel::Exact,
            reported: MatchLevel::Exact,
        });
    }
    let (start, level) = match matching::locate_scoped(hay, &old, anchor, 0, h.eof) {
        Search::At { start, level } => (start, level),
        Search::Ambiguous { level, starts } => return Err(HunkErr::Ambiguous { level, starts }),
        Search::NotFound => return Err(HunkErr::NotFound),
    };
    // A hunk whose old text sits inside an occurrence of its own new text
    // has most likely been applied already; applying it again would corrupt.
    let new = h.new_lines();
    if new.len() > old.len() {
        let n = matching::normalize_all(level, &new);
        for q in matching::find_all(hay.level(level), &n, 0..len) {
            if q <= start && q + new.len() >= start + old.len() {
                return Err(HunkErr::AlreadyApplied {
                    at: q,
                    len: new.len(),
                });
            }
        }
    }
    // Line numbers only ever refuse: when the one match is not at the line the
    // header names, yet that line holds the same text at a looser level (say,
    // re-indented), the reply points at two places.
    if let Some(at) = h.old_start.and_then(|s| s.checked_sub(1))
        && at != start
        && let Some(loose) = header_line_holds(hay, &old, at, level)
    {
        let mut starts = vec![start, at];
        starts.sort_unstable();
        return Err(HunkErr::Ambiguous {
            level: loose,
            starts,
        });
    }
    let reported = match (level, h.old_start) {
        (MatchLevel::Exact, Some(s)) if s != start + 1 => MatchLevel::AnyLine,
        _ => level,
    };
    Ok(Plan {
        hunk: idx,
        start,
        end: start + old.len(),
        level,
        reported,
    })
}

/// The first level looser than `found` at which `old` sits at line `at`.
fn header_line_holds(
    hay: &Haystack<'_>,
    old: &[String],
    at: usize,
    found: MatchLevel,
) -> Option<MatchLevel> {
    let end = at.checked_add(old.len()).filter(|e| *e <= hay.len())?;
    matching::LEVELS
        .into_iter()
        .filter(|l| matching::rank(*l) > matching::rank(found))
        .find(|l| hay.level(*l)[at..end] == *matching::normalize_all(*l, old))
}

/// Where a hunk with no old lines goes. Documented rules: an empty file
/// takes it at the start; apply_patch puts it after its last anchor line or
/// at the end of the file (the format's definition); a unified diff needs
/// its header to say start (`-0,0`, or `-1,0 +1,..`) or end (`-N,0` with N
/// the file's line count or more). Anything else is ambiguous.
fn insertion_point(
    h: &Hunk,
    len: usize,
    anchor: Option<usize>,
    format: Format,
) -> Result<usize, HunkErr> {
    if len == 0 {
        return Ok(0);
    }
    match format {
        Format::ApplyPatch => Ok(anchor.map_or(len, |a| a + 1)),
        Format::UnifiedDiff => match h.old_start {
            Some(0) => Ok(0),
            Some(s) if s >= len => Ok(len),
            Some(1) if h.new_start == Some(1) => Ok(0),
            _ => Err(HunkErr::NoContext),
        },
        _ => Err(HunkErr::NoContext),
    }
}

fn emit(doc: &Doc, h: &Hunk, p: &Plan, out: &mut Vec<Line>) {
    let reindent = if matching::ignores_indentation(p.level) {
        indent_delta(doc, h, p.start)
    } else {
        None
    };
    let mut fi = p.start;
    for l in &h.lines {
        match l {
            HunkLine::Context(_) => {
                if let Some(line) = doc.lines.get(fi) {
                    out.push(line.clone());
                }
                fi += 1;
            }
            HunkLine::Del(_) => fi += 1,
            HunkLine::Add(s) => {
                let text = strip_cr(s);
                let text = match &reindent {
                    Some((from, to)) => reindent_line(text, from, to),
                    None => text.to_string(),
                };
                out.push(Line { text, eol: doc.eol });
            }
        }
    }
}

/// `(hunk indentation, file indentation)` of the hunk's first non-blank old
/// line and the file line it matched.
fn indent_delta(doc: &Doc, h: &Hunk, start: usize) -> Option<(String, String)> {
    let mut fi = start;
    for l in &h.lines {
        match l {
            HunkLine::Context(s) | HunkLine::Del(s) => {
                if !s.trim().is_empty() {
                    let file_line = doc.lines.get(fi)?;
                    return Some((
                        indent_of(strip_cr(s)).to_string(),
                        indent_of(&file_line.text).to_string(),
                    ));
                }
                fi += 1;
            }
            HunkLine::Add(_) => {}
        }
    }
    None
}

fn reindent_line(text: &str, from: &str, to: &str) -> String {
    if text.trim().is_empty() || from == to {
        return text.to_string();
    }
    let lead = indent_of(text);
    let body = &text[lead.len()..];
    let uniform = |s: &str| s.chars().all(|c| c == ' ') || s.chars().all(|c| c == '\t');
    if let Some(rest) = lead.strip_prefix(from) {
        let ws = format!("{to}{rest}");
        // Keep the file's own style; only avoid creating mixed indentation.
        if rest.is_empty() || uniform(&ws) || !uniform(to) {
            return format!("{ws}{body}");
        }
    }
    // Less indented than the reference line, or mixed tabs/spaces: shift by
    // columns and render in the file's style.
    let delta = indent_width(to) as isize - indent_width(from) as isize;
    let w = (indent_width(lead) as isize + delta).max(0) as usize;
    let ws = if to.contains('\t') || (to.is_empty() && lead.contains('\t')) {
        format!("{}{}", "\t".repeat(w / 4), " ".repeat(w % 4))
    } else {
        " ".repeat(w)
    };
    format!("{ws}{body}")
}
