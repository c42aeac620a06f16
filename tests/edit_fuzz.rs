//! Stable-toolchain fuzz driver for the edit engine, run with the rest of the suite: the
//! invariant of `fuzz/invariant.rs` (no panic, a refused reply leaves every file untouched,
//! an applied one changes exactly what it reports) on arbitrary text, on soups of format
//! markers, and on valid edits in every format mangled by structured mutations. The
//! cargo-fuzz target `fuzz/fuzz_targets/parse.rs` checks the same invariant (`.ci/fuzz`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use proptest::test_runner::Config;

#[path = "../fuzz/invariant.rs"]
mod invariant;

use invariant::FILES;

/// Lines that drive the parser: every format's markers, paths (good, escaping, protected,
/// through a symlink), hunk lines that match the files, and odd characters.
const VOCAB: &[&str] = &[
    "<<<<<<< SEARCH",
    "=======",
    ">>>>>>> REPLACE",
    "*** Begin Patch",
    "*** End Patch",
    "*** Update File: a.txt",
    "*** Update File: crlf.txt",
    "*** Add File: new.txt",
    "*** Delete File: a.txt",
    "*** Move to: moved.txt",
    "*** End of File",
    "@@",
    "@@ alpha",
    "@@ -1,3 +1,3 @@",
    "@@ -0,0 +1 @@",
    "@@ -5,0 +6 @@",
    "--- a/a.txt",
    "+++ b/a.txt",
    "--- /dev/null",
    "+++ /dev/null",
    "--- a/../outside.txt",
    "+++ b/link.txt",
    "diff --git a/a.txt b/a.txt",
    "diff --git a/src/lib.rs b/src/lib.rs",
    "rename from a.txt",
    "rename to b.txt",
    "new file mode 100755",
    "deleted file mode 100644",
    "GIT binary patch",
    "\\ No newline at end of file",
    "```",
    "```diff",
    "```rust src/lib.rs",
    "~~~",
    "a.txt",
    "src/lib.rs",
    "empty.txt",
    ".github/workflows/ci.yml",
    "../outside.txt",
    "/etc/passwd",
    ".git/config",
    " alpha",
    "-alpha",
    "+ALPHA",
    " beta",
    "-beta",
    "+BETA",
    " ",
    "",
    "alpha",
    "two\r",
    "-two\r",
    "    a - b",
    "-    a - b",
    "+    a + b",
    "// ... rest unchanged",
    "\u{feff}alpha",
    "\u{201c}é\u{201d}\u{a0}\t",
];

fn marker_soup() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        8 => prop::sample::select(VOCAB).prop_map(str::to_string),
        1 => "[ -~]{0,12}",
        1 => any::<String>(),
    ];
    (prop::collection::vec(line, 0..40), any::<bool>()).prop_map(|(lines, nl)| {
        let mut s = lines.join("\n");
        if nl {
            s.push('\n');
        }
        s
    })
}

/// A valid reply: one line of one file replaced, inserted or deleted, written in one of
/// the four formats.
fn valid_reply() -> impl Strategy<Value = String> {
    (0..2usize, any::<prop::sample::Index>(), 0..3u8, 0..4u8).prop_map(|(file, at, op, format)| {
        let (path, old) = FILES[file];
        let mut lines: Vec<&str> = old.lines().collect();
        let i = at.index(lines.len());
        match op {
            0 => lines[i] = "CHANGED",
            1 => lines.insert(i, "INSERTED"),
            _ => {
                lines.remove(i);
            }
        }
        let mut new = lines.join("\n");
        new.push('\n');
        match format {
            0 => agent_runner::edit::canonical_diff(path, old, &new),
            1 => {
                let (from, to) = (i.saturating_sub(1), (i + 2).min(old.lines().count()));
                let search: Vec<&str> = old.lines().collect::<Vec<_>>()[from..to].to_vec();
                let mut replace = search.clone();
                match op {
                    0 => replace[i - from] = "CHANGED",
                    1 => replace.insert(i - from, "INSERTED"),
                    _ => {
                        replace.remove(i - from);
                    }
                }
                format!(
                    "{path}\n```\n<<<<<<< SEARCH\n{}\n=======\n{}\n>>>>>>> REPLACE\n```\n",
                    search.join("\n"),
                    replace.join("\n")
                )
            }
            2 => {
                let body: String = agent_runner::edit::canonical_diff(path, old, &new)
                    .lines()
                    .skip_while(|l| !l.starts_with("@@"))
                    .map(|l| {
                        if l.starts_with("@@") {
                            "@@\n".to_string()
                        } else {
                            format!("{l}\n")
                        }
                    })
                    .collect();
                format!("*** Begin Patch\n*** Update File: {path}\n{body}*** End Patch\n")
            }
            _ => format!("{path}\n```\n{new}```\n"),
        }
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    InsertLine(prop::sample::Index, &'static str),
    Truncate(prop::sample::Index),
    DropFirstChar(prop::sample::Index),
    TrailingSpace(prop::sample::Index),
    Indent(prop::sample::Index),
    Crlf,
    RetargetPath(&'static str),
    BumpNumbers(u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let ix = any::<prop::sample::Index>;
    prop_oneof![
        ix().prop_map(Mutation::DeleteLine),
        ix().prop_map(Mutation::DuplicateLine),
        (ix(), ix()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        (ix(), prop::sample::select(VOCAB)).prop_map(|(a, l)| Mutation::InsertLine(a, l)),
        ix().prop_map(Mutation::Truncate),
        ix().prop_map(Mutation::DropFirstChar),
        ix().prop_map(Mutation::TrailingSpace),
        ix().prop_map(Mutation::Indent),
        Just(Mutation::Crlf),
        prop::sample::select(
            &[
                "../outside.txt",
                "link.txt",
                ".git/config",
                "/tmp/x.txt",
                ".github/workflows/ci.yml",
                "empty.txt",
                "crlf.txt",
                "src",
            ][..]
        )
        .prop_map(Mutation::RetargetPath),
        (1..9u8).prop_map(Mutation::BumpNumbers),
    ]
}

fn mutate(reply: &str, m: &Mutation) -> String {
    let mut lines: Vec<String> = reply.split('\n').map(str::to_string).collect();
    let n = lines.len();
    match m {
        Mutation::DeleteLine(i) => {
            lines.remove(i.index(n));
        }
        Mutation::DuplicateLine(i) => {
            let i = i.index(n);
            lines.insert(i, lines[i].clone());
        }
        Mutation::SwapLines(a, b) => lines.swap(a.index(n), b.index(n)),
        Mutation::InsertLine(i, l) => lines.insert(i.index(n + 1), (*l).to_string()),
        Mutation::Truncate(i) => {
            let mut cut = i.index(reply.len() + 1);
            while !reply.is_char_boundary(cut) {
                cut -= 1;
            }
            return reply[..cut].to_string();
        }
        Mutation::DropFirstChar(i) => {
            let l = &mut lines[i.index(n)];
            if let Some(c) = l.chars().next() {
                l.drain(..c.len_utf8());
            }
        }
        Mutation::TrailingSpace(i) => lines[i.index(n)].push_str("  "),
        Mutation::Indent(i) => lines[i.index(n)].insert_str(0, "    "),
        Mutation::Crlf => return reply.replace('\n', "\r\n"),
        Mutation::RetargetPath(p) => {
            return ["src/lib.rs", "a.txt"]
                .iter()
                .fold(reply.to_string(), |r, from| r.replace(from, p));
        }
        Mutation::BumpNumbers(k) => {
            return reply
                .chars()
                .map(|c| match c.to_digit(10) {
                    Some(d) => char::from_digit((d + u32::from(*k)) % 10, 10).unwrap_or(c),
                    None => c,
                })
                .collect();
        }
    }
    lines.join("\n")
}

fn cfg(cases: u32) -> Config {
    Config {
        cases,
        // Inputs are cheap to regenerate; a failure prints its minimal reply.
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `strategy`'s replies through one [`invariant::Fixture`].
fn fuzz<S: Strategy<Value = (String, bool)>>(cases: u32, strategy: S) {
    // `run` takes a `Fn`; the fixture is reused across cases, hence the cell.
    let fixture = std::cell::RefCell::new(invariant::Fixture::new().unwrap());
    let mut runner = proptest::test_runner::TestRunner::new(cfg(cases));
    let result = runner.run(&strategy, |(reply, dry_run)| {
        fixture
            .borrow_mut()
            .check(&reply, dry_run)
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn arbitrary_text() {
    fuzz(1500, (any::<String>(), any::<bool>()));
}

#[test]
fn marker_soup_replies() {
    fuzz(2000, (marker_soup(), any::<bool>()));
}

#[test]
fn mutated_valid_replies() {
    let mutated = (valid_reply(), prop::collection::vec(mutation(), 0..5))
        .prop_map(|(reply, muts)| (muts.iter().fold(reply, |r, m| mutate(&r, m)), false));
    fuzz(3000, mutated);
}

/// The unmutated replies must all apply: otherwise the mutation test above would only be
/// exercising the refusal path.
#[test]
fn valid_replies_apply() {
    let mut runner = proptest::test_runner::TestRunner::new(cfg(200));
    runner
        .run(&valid_reply(), |reply| {
            let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (rel, content) in FILES {
                let p = dir.path().join(rel);
                std::fs::create_dir_all(p.parent().unwrap_or(dir.path())).unwrap();
                std::fs::write(&p, content).unwrap();
            }
            let r = agent_runner::edit::apply(
                dir.path(),
                &reply,
                &agent_runner::edit::PathPolicy::default(),
                false,
            )
            .unwrap();
            prop_assert!(r.applied, "{reply}\n{}", r.feedback());
            Ok(())
        })
        .unwrap();
}
