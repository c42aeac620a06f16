#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;

use proptest::prelude::*;

use super::*;

/// Texts from a small alphabet so that repeated lines (and so ambiguous
/// contexts) are common; with or without a final newline.
fn text(alphabet: &'static [&'static str]) -> impl Strategy<Value = String> {
    text_n(alphabet, 14)
}

fn text_n(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(alphabet), 0..max),
        any::<bool>(),
    )
        .prop_map(|(lines, nl)| {
            let mut s = lines.join("\n");
            if nl && !lines.is_empty() {
                s.push('\n');
            }
            s
        })
}

const SMALL: &[&str] = &["a", "b", "c", ""];
const TINY: &[&str] = &["a", "b"];
const SPACY: &[&str] = &["a", " a", "a ", "\ta", "b", "  b", ""];

/// A repetitive text and a copy with a few line edits: small hunks whose
/// 3-line context is often ambiguous.
fn text_and_small_edit() -> impl Strategy<Value = (String, String)> {
    (
        prop::collection::vec(prop::sample::select(TINY), 1..30),
        prop::collection::vec(
            (
                any::<prop::sample::Index>(),
                0u8..3,
                prop::sample::select(TINY),
            ),
            1..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(lines, edits, nl)| {
            let mut new: Vec<&str> = lines.clone();
            for (at, op, with) in edits {
                let i = at.index(new.len() + 1);
                match op {
                    0 if i < new.len() => new[i] = with,
                    1 if i < new.len() => {
                        new.remove(i);
                    }
                    _ => new.insert(i, with),
                }
            }
            let join = |v: &[&str]| {
                let mut s = v.join("\n");
                if nl && !v.is_empty() {
                    s.push('\n');
                }
                s
            };
            (join(&lines), join(&new))
        })
}

/// Old-side and new-side lines of each hunk of a canonical diff.
fn hunks(diff: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let mut out = Vec::new();
    let mut cur: Option<(Vec<String>, Vec<String>)> = None;
    for l in diff.lines() {
        if l.starts_with("@@") {
            out.extend(cur.take());
            cur = Some((Vec::new(), Vec::new()));
        } else if let Some((old, new)) = cur.as_mut() {
            let body = || l[1..].to_string();
            match l.chars().next() {
                Some(' ') => {
                    old.push(body());
                    new.push(body());
                }
                Some('-') => old.push(body()),
                Some('+') => new.push(body()),
                _ => {}
            }
        }
    }
    out.extend(cur);
    out
}

fn positions(lines: &[&str], needle: &[String]) -> Vec<usize> {
    if needle.is_empty() || lines.len() < needle.len() {
        return Vec::new();
    }
    (0..=lines.len() - needle.len())
        .filter(|&s| {
            lines[s..s + needle.len()]
                .iter()
                .zip(needle)
                .all(|(a, b)| *a == b)
        })
        .collect()
}

/// `(old text occurs exactly once, new text already surrounds it)` for each
/// hunk of a canonical diff, computed independently of the engine.
fn hunk_facts(diff: &str, text: &str) -> Vec<(bool, bool)> {
    let lines: Vec<&str> = text.lines().collect();
    hunks(diff)
        .iter()
        .map(|(old, new)| {
            if old.is_empty() {
                return (true, false);
            }
            let at = positions(&lines, old);
            let present = at.len() == 1
                && new.len() > old.len()
                && positions(&lines, new)
                    .iter()
                    .any(|&q| q <= at[0] && q + new.len() >= at[0] + old.len());
            (at.len() == 1, present)
        })
        .collect()
}

/// Every hunk's old (`side == 2`, the `-a,b` part) or new (`side == 3`)
/// text at its header's start line.
fn image_at_header_lines(diff: &str, text: &str, side: usize) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    let starts: Vec<usize> = diff
        .lines()
        .filter(|l| l.starts_with("@@"))
        .map(|l| {
            let part = l.split_whitespace().nth(side - 1).unwrap();
            part[1..].split(',').next().unwrap().parse().unwrap()
        })
        .collect();
    let mut any = false;
    for ((old, new), start) in hunks(diff).iter().zip(starts) {
        let image = if side == 2 { old } else { new };
        if image.is_empty() {
            continue;
        }
        any = true;
        if start == 0 || !positions(&lines, image).contains(&(start - 1)) {
            return false;
        }
    }
    any
}

fn check_roundtrip(a: &str, b: &str, second: bool) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.txt");
    fs::write(&f, a).unwrap();
    let diff = canonical_diff("f.txt", a, b);
    let r = apply(dir.path(), &diff, &PathPolicy::default(), false).unwrap();
    let now = fs::read_to_string(&f).unwrap();
    if a == b {
        prop_assert!(diff.is_empty() && r.found_no_edits());
        return Ok(());
    }
    let facts = hunk_facts(&diff, a);
    let unique = facts.iter().all(|f| f.0);
    let present = facts.iter().any(|f| f.1)
        || (image_at_header_lines(&diff, a, 3) && !image_at_header_lines(&diff, a, 2));
    if present {
        // The post-image is already there too: "already applied" is allowed.
        prop_assert_eq!(&now, if r.applied { b } else { a });
    } else if unique {
        prop_assert!(r.applied, "diff:\n{}\nfeedback:\n{}", diff, r.feedback());
        prop_assert_eq!(&now, b);
        prop_assert_eq!(&r.diff, &diff);
    } else {
        prop_assert!(!r.applied, "ambiguous diff applied:\n{}", diff);
        prop_assert_eq!(&now, a);
        prop_assert!(r.feedback().contains("places"), "{}", r.feedback());
    }
    if second && r.applied {
        let r2 = apply(dir.path(), &diff, &PathPolicy::default(), false).unwrap();
        let again = fs::read_to_string(&f).unwrap();
        prop_assert_eq!(
            &again,
            b,
            "second application corrupted the file; diff:\n{}\nfeedback:\n{}",
            diff,
            r2.feedback()
        );
        prop_assert!(!r2.applied);
    }
    Ok(())
}

// 256 cases by default; set PROPTEST_CASES for longer runs.
proptest! {
    #[test]
    fn own_diff_applies_exactly_or_is_rejected_as_ambiguous(a in text(SMALL), b in text(SMALL)) {
        check_roundtrip(&a, &b, true)?;
    }

    #[test]
    fn small_edits_to_repetitive_texts((a, b) in text_and_small_edit()) {
        check_roundtrip(&a, &b, true)?;
    }

    #[test]
    fn long_repetitive_texts_with_many_hunks(a in text_n(TINY, 40), b in text_n(TINY, 40)) {
        check_roundtrip(&a, &b, true)?;
    }

    #[test]
    fn own_diff_roundtrip_with_whitespace_variants(a in text(SPACY), b in text(SPACY)) {
        check_roundtrip(&a, &b, false)?;
    }

    #[test]
    fn dry_run_reports_without_writing(a in text(SMALL), b in text(SMALL)) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f.txt");
        fs::write(&f, &a).unwrap();
        let diff = canonical_diff("f.txt", &a, &b);
        let r = apply(dir.path(), &diff, &PathPolicy::default(), true).unwrap();
        prop_assert_eq!(fs::read_to_string(&f).unwrap(), a);
        if r.applied {
            prop_assert_eq!(r.diff, diff);
        }
    }
}

/// Lines that share many characters, so that bounds are close and ties common.
const SIMILAR: &[&str] = &[
    "let x = 1;",
    "let y = 1;",
    "    let x = 1;",
    "let x = 2; // é",
    "fn f(x: u8) {}",
    "fn g(x: u8) {}",
    "}",
    "",
    "é",
    "return x;",
];

proptest! {
    #[test]
    fn closest_region_pruned_search_equals_exhaustive(
        file in text_n(SIMILAR, 40),
        needle in prop::collection::vec(prop::sample::select(SIMILAR), 1..6),
    ) {
        let doc = super::text::Doc::parse(&file);
        let needle: Vec<String> = needle.iter().map(|s| s.to_string()).collect();
        prop_assert_eq!(
            super::matching::closest_region(&doc, &needle),
            super::matching::closest_region_exhaustive(&doc, &needle)
        );
    }
}
