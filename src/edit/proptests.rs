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

/// Old-side lines of each hunk of a canonical diff.
fn hunk_olds(diff: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<String>> = None;
    for l in diff.lines() {
        if l.starts_with("@@") {
            out.extend(cur.take());
            cur = Some(Vec::new());
        } else if let Some(c) = cur.as_mut()
            && (l.starts_with(' ') || l.starts_with('-'))
        {
            c.push(l[1..].to_string());
        }
    }
    out.extend(cur);
    out
}

fn occurrences(text: &str, needle: &[String]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    if needle.is_empty() {
        return 1;
    }
    if lines.len() < needle.len() {
        return 0;
    }
    lines
        .windows(needle.len())
        .filter(|w| w.iter().zip(needle).all(|(a, b)| *a == b.as_str()))
        .count()
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
    let unique = hunk_olds(&diff)
        .iter()
        .all(|o| occurrences(a, o) == 1 || o.is_empty());
    if unique {
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
