//! The matching cascade and the "closest region" search used for feedback.
//!
//! Levels are cumulative normalisations applied to both the file lines and
//! the hunk's old lines, tried in order. The first level with any match
//! decides: one match is used, two or more are an ambiguity error. Matches
//! are always searched in the whole file (or the apply_patch anchor's
//! scope); line numbers from diff headers never choose between matches.

use std::cell::OnceCell;
use std::ops::Range;

use super::MatchLevel;
use super::text::{Doc, indent_of, indent_width};

/// The text levels, in cascade order. `AnyLine` is not a text level: it is
/// reported when an exact match sits elsewhere than the header said.
pub(crate) const LEVELS: [MatchLevel; 5] = [
    MatchLevel::Exact,
    MatchLevel::TrailingWhitespace,
    MatchLevel::LineEndings,
    MatchLevel::Indentation,
    MatchLevel::UnicodeLookalikes,
];

/// How loose a level is, for picking a block's overall level.
pub(crate) fn rank(l: MatchLevel) -> u8 {
    match l {
        MatchLevel::Exact => 0,
        MatchLevel::AnyLine => 1,
        MatchLevel::TrailingWhitespace => 2,
        MatchLevel::LineEndings => 3,
        MatchLevel::Indentation => 4,
        MatchLevel::UnicodeLookalikes => 5,
    }
}

/// Whether a match at this level ignored indentation (so added lines must
/// be re-indented).
pub(crate) fn ignores_indentation(l: MatchLevel) -> bool {
    matches!(l, MatchLevel::Indentation | MatchLevel::UnicodeLookalikes)
}

fn level_index(l: MatchLevel) -> usize {
    LEVELS.iter().position(|x| *x == l).unwrap_or(0)
}

/// Normalises one line (with a trailing `\r` for CRLF lines) for a level.
pub(crate) fn normalize(level: MatchLevel, s: &str) -> String {
    match level {
        MatchLevel::Exact | MatchLevel::AnyLine => s.to_string(),
        MatchLevel::TrailingWhitespace => {
            let (body, cr) = match s.strip_suffix('\r') {
                Some(b) => (b, true),
                None => (s, false),
            };
            let mut o = body.trim_end_matches([' ', '\t']).to_string();
            if cr {
                o.push('\r');
            }
            o
        }
        MatchLevel::LineEndings => s.trim_end().to_string(),
        MatchLevel::Indentation => s.trim().to_string(),
        MatchLevel::UnicodeLookalikes => fold_unicode(s).trim().to_string(),
    }
}

/// Maps Unicode look-alikes to their ASCII counterparts.
pub(crate) fn fold_unicode(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' | '\u{2032}' | '\u{FF07}' => {
                o.push('\'')
            }
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' | '\u{2033}' | '\u{FF02}'
            | '\u{00AB}' | '\u{00BB}' => o.push('"'),
            '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => {
                o.push('-')
            }
            '\u{00A0}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' | '\u{3000}' => {
                o.push(' ')
            }
            '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            '\u{2026}' => o.push_str("..."),
            '\u{2039}' => o.push('<'),
            '\u{203A}' => o.push('>'),
            _ => o.push(c),
        }
    }
    o
}

/// A file's lines, normalised lazily per level.
pub(crate) struct Haystack<'d> {
    pub doc: &'d Doc,
    cache: [OnceCell<Vec<String>>; 5],
}

impl<'d> Haystack<'d> {
    pub(crate) fn new(doc: &'d Doc) -> Self {
        Haystack {
            doc,
            cache: Default::default(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.doc.len()
    }

    pub(crate) fn level(&self, level: MatchLevel) -> &[String] {
        let i = level_index(level);
        self.cache[i].get_or_init(|| {
            self.doc
                .lines
                .iter()
                .map(|l| normalize(LEVELS[i], &l.raw()))
                .collect()
        })
    }
}

pub(crate) fn normalize_all(level: MatchLevel, lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| normalize(level, l)).collect()
}

/// Start indices in `range` where `needle` matches `hay` line for line.
pub(crate) fn find_all(hay: &[String], needle: &[String], range: Range<usize>) -> Vec<usize> {
    let m = needle.len();
    let end = range.end.min(hay.len());
    if m == 0 || end < range.start + m {
        return Vec::new();
    }
    (range.start..=end - m)
        .filter(|&s| hay[s..s + m] == *needle)
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Search {
    At {
        start: usize,
        level: MatchLevel,
    },
    Ambiguous {
        level: MatchLevel,
        starts: Vec<usize>,
    },
    NotFound,
}

/// Runs the cascade over `range`. With `prefer_eof`, a match ending at the
/// end of the file wins over others (apply_patch `*** End of File`).
pub(crate) fn locate(
    hay: &Haystack<'_>,
    needle: &[String],
    range: Range<usize>,
    prefer_eof: bool,
) -> Search {
    let len = hay.len();
    for level in LEVELS {
        let n = normalize_all(level, needle);
        let mut starts = find_all(hay.level(level), &n, range.clone());
        if prefer_eof && starts.len() > 1 {
            let at_eof: Vec<usize> = starts
                .iter()
                .copied()
                .filter(|s| s + needle.len() == len)
                .collect();
            if at_eof.len() == 1 {
                starts = at_eof;
            }
        }
        match starts.len() {
            0 => continue,
            1 => {
                return Search::At {
                    start: starts[0],
                    level,
                };
            }
            _ => return Search::Ambiguous { level, starts },
        }
    }
    Search::NotFound
}

/// Like [`locate`], but scoped to an apply_patch anchor: first inside the
/// anchor's block (its more-indented body), then from the anchor to the end.
/// `skip` is 1 to search strictly after the anchor line.
pub(crate) fn locate_scoped(
    hay: &Haystack<'_>,
    needle: &[String],
    anchor: Option<usize>,
    skip: usize,
    prefer_eof: bool,
) -> Search {
    let len = hay.len();
    match anchor {
        None => locate(hay, needle, 0..len, prefer_eof),
        Some(a) => {
            let from = (a + skip).min(len);
            let end = block_end(hay.doc, a).max(from);
            match locate(hay, needle, from..end, prefer_eof) {
                Search::NotFound => locate(hay, needle, from..len, prefer_eof),
                f => f,
            }
        }
    }
}

/// End (exclusive) of the indentation block opened by line `a`: up to the
/// first later non-blank line indented no deeper than `a`; a closing
/// bracket line at that depth is included.
fn block_end(doc: &Doc, a: usize) -> usize {
    let Some(anchor) = doc.lines.get(a) else {
        return doc.len();
    };
    let w = indent_width(indent_of(&anchor.text));
    for j in a + 1..doc.len() {
        let t = &doc.lines[j].text;
        if t.trim().is_empty() {
            continue;
        }
        if indent_width(indent_of(t)) <= w {
            let tt = t.trim();
            let closes = tt.starts_with('}')
                || tt.starts_with(')')
                || tt.starts_with(']')
                || tt == "end"
                || tt.starts_with("end ");
            return if closes { j + 1 } else { j };
        }
    }
    doc.len()
}

/// Longest prefix of `needle` found anywhere at the loosest level, and the
/// places where that prefix matches.
pub(crate) fn longest_prefix(hay: &Haystack<'_>, needle: &[String]) -> (usize, Vec<usize>) {
    let level = MatchLevel::UnicodeLookalikes;
    let h = hay.level(level);
    let n = normalize_all(level, needle);
    let Some(first) = n.first() else {
        return (0, Vec::new());
    };
    let mut starts: Vec<usize> = (0..h.len()).filter(|&s| h[s] == *first).collect();
    if starts.is_empty() {
        return (0, starts);
    }
    let mut k = 1;
    while k < n.len() {
        let next: Vec<usize> = starts
            .iter()
            .copied()
            .filter(|&s| s + k < h.len() && h[s + k] == n[k])
            .collect();
        if next.is_empty() {
            break;
        }
        starts = next;
        k += 1;
    }
    (k, starts)
}

/// Lines are cut to this many characters before they are compared.
const CUT: usize = 200;

/// Similarity of two lines in `0..=1`, ignoring surrounding whitespace.
fn line_ratio(a: &str, b: &str) -> f32 {
    let (a, b) = (a.trim(), b.trim());
    if a == b {
        return 1.0;
    }
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let cut = |s: &str| -> String { s.chars().take(CUT).collect() };
    let (a, b) = (cut(a), cut(b));
    similar::TextDiff::from_chars(a.as_str(), b.as_str()).ratio()
}

/// What [`Profile::bound`] needs of a line: its trimmed text, its length in characters
/// once cut, and a histogram of those characters (ASCII one bucket each, the rest shared).
struct Profile<'a> {
    trimmed: &'a str,
    len: usize,
    hist: [u8; 129],
}

impl<'a> Profile<'a> {
    fn new(line: &'a str) -> Self {
        let trimmed = line.trim();
        let mut hist = [0u8; 129];
        let mut len = 0;
        for c in trimmed.chars().take(CUT) {
            let i = if c.is_ascii() { c as usize } else { 128 };
            hist[i] += 1;
            len += 1;
        }
        Profile { trimmed, len, hist }
    }

    /// An upper bound of [`line_ratio`], computed the same way: `similar`'s ratio is
    /// `2 * matching chars / (len a + len b)`, and the matching characters are at most the
    /// multiset intersection of the two lines' characters.
    fn bound(&self, o: &Profile<'_>) -> f32 {
        if self.trimmed == o.trimmed {
            return 1.0;
        }
        if self.len == 0 || o.len == 0 {
            return 0.0;
        }
        let inter: usize = self
            .hist
            .iter()
            .zip(&o.hist)
            .map(|(a, b)| usize::from(*a.min(b)))
            .sum();
        2.0 * inter as f32 / (self.len + o.len) as f32
    }
}

fn words(s: &str) -> std::collections::HashSet<&str> {
    s.split(|c: char| !c.is_alphanumeric() && c != '_')
        .filter(|w| !w.is_empty())
        .collect()
}

/// Start lines of the windows worth scoring: all of them on small inputs; on big ones a
/// word-overlap pre-filter keeps the 8 best.
fn candidate_windows(file: &[&str], needle: &[String], w: usize) -> Vec<usize> {
    let (n, m) = (file.len(), needle.len());
    if n * m <= 20_000 {
        return (0..=n - w).collect();
    }
    let fw: Vec<_> = file.iter().map(|l| words(l)).collect();
    let nw: Vec<_> = needle.iter().map(|l| words(l)).collect();
    let jac = |a: &std::collections::HashSet<&str>, b: &std::collections::HashSet<&str>| {
        let inter = a.intersection(b).count();
        let uni = a.len() + b.len() - inter;
        if uni == 0 {
            1.0
        } else {
            inter as f32 / uni as f32
        }
    };
    let mut pre: Vec<(usize, f32)> = (0..=n - w)
        .map(|s| (s, (0..w).map(|k| jac(&fw[s + k], &nw[k])).sum::<f32>()))
        .collect();
    pre.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    pre.into_iter().take(8).map(|(s, _)| s).collect()
}

/// The region of the file most similar to `needle`: `(start, len, score)`.
/// A sliding window of the needle's length is scored line by line with
/// `similar`'s character ratio; on big inputs a word-overlap pre-filter
/// picks the windows worth scoring. The best score wins, the earliest
/// window among equals.
///
/// The character diffs are what costs, so windows are visited best upper
/// bound first (see [`Profile::bound`]) and the visit stops once no bound
/// can reach the best score found: the answer is the exhaustive search's,
/// at a fraction of the diffs.
pub(crate) fn closest_region(doc: &Doc, needle: &[String]) -> Option<(usize, usize, f32)> {
    let n = doc.len();
    let m = needle.len();
    if n == 0 || m == 0 {
        return None;
    }
    let w = m.min(n);
    let file: Vec<&str> = doc.lines.iter().map(|l| l.text.as_str()).collect();
    let starts = candidate_windows(&file, needle, w);
    let fp: Vec<Profile<'_>> = file.iter().map(|l| Profile::new(l)).collect();
    let np: Vec<Profile<'_>> = needle[..w].iter().map(|l| Profile::new(l)).collect();
    // Each bound is summed in the same order as its score, and float
    // addition is monotone, so a window's score never exceeds its bound.
    let mut order: Vec<(f32, usize)> = starts
        .iter()
        .map(|&s| {
            let sum: f32 = (0..w).map(|k| fp[s + k].bound(&np[k])).sum();
            (sum / m as f32, s)
        })
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut best: Option<(usize, f32)> = None;
    for (bound, s) in order {
        if best.is_some_and(|(_, b)| bound < b) {
            break;
        }
        let sc = (0..w)
            .map(|k| line_ratio(file[s + k], &needle[k]))
            .sum::<f32>()
            / m as f32;
        if best.is_none_or(|(bs, b)| sc > b || (sc == b && s < bs)) {
            best = Some((s, sc));
        }
    }
    best.map(|(s, sc)| (s, w, sc))
}

/// The exhaustive search [`closest_region`] must agree with.
#[cfg(test)]
pub(crate) fn closest_region_exhaustive(
    doc: &Doc,
    needle: &[String],
) -> Option<(usize, usize, f32)> {
    let n = doc.len();
    let m = needle.len();
    if n == 0 || m == 0 {
        return None;
    }
    let w = m.min(n);
    let file: Vec<&str> = doc.lines.iter().map(|l| l.text.as_str()).collect();
    let mut best: Option<(usize, usize, f32)> = None;
    for s in candidate_windows(&file, needle, w) {
        let sc = (0..w)
            .map(|k| line_ratio(file[s + k], &needle[k]))
            .sum::<f32>()
            / m as f32;
        if best.is_none_or(|b| sc > b.2) {
            best = Some((s, w, sc));
        }
    }
    best
}
