//! `bench patch` end to end on a two-commit repository made here: every kind of case is
//! generated, ours never applies an edit wrongly, every must-reject case is refused, and
//! the same seed gives the same corpus.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use agent_runner::bench::patch::{Kind, Options, bench, render_table};

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

fn lib(version: u8) -> String {
    let mut s = String::new();
    for i in 0..30 {
        let body = match (version, i) {
            (2, 4) => "    x * 2 // doubled".to_string(),
            (2, 22) => "    x - 22 // fixed".to_string(),
            _ => format!("    x + {i}"),
        };
        s.push_str(&format!("pub fn f{i}(x: u32) -> u32 {{\n{body}\n}}\n\n"));
    }
    s
}

fn notes(version: u8) -> String {
    let status = if version == 1 { "draft" } else { "final" };
    format!("# Notes\n\nStatus: {status}\n\n- one\n- two\n- three\n\nThe end.\n")
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

#[test]
fn bench_on_a_tiny_history_covers_every_kind_without_wrong_applications() {
    let repo = tempfile::tempdir().unwrap();
    let dir = repo.path();
    git(dir, &["init", "-q"]);
    write(dir, "src/lib.rs", &lib(1));
    write(dir, "NOTES.md", &notes(1));
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "one"]);
    write(dir, "src/lib.rs", &lib(2));
    write(dir, "NOTES.md", &notes(2));
    git(dir, &["commit", "-q", "-am", "two"]);

    let opts = Options {
        repo: dir.to_path_buf(),
        max_cases: 1000,
        seed: 7,
    };
    let report = bench(&opts).unwrap();
    let table = render_table(&report);
    assert_eq!((report.commits, report.files), (1, 2), "{table}");
    for kind in Kind::ALL {
        let row = report.rows.iter().find(|r| r.kind == kind).unwrap();
        assert!(row.cases > 0, "no case of {}:\n{table}", kind.name());
        assert!(table.contains(kind.name()), "{table}");
        assert_eq!(row.ours.wrong, 0, "{}:\n{table}", kind.name());
        if kind.must_reject() {
            assert_eq!(row.ours.rejected, row.cases, "{}:\n{table}", kind.name());
        }
        // git apply and patch run exactly on the diff-shaped kinds (when installed).
        assert_eq!(
            row.git_apply.is_some(),
            kind.diff_shaped() && report.git_version.is_some()
        );
    }
    assert_eq!(report.total_ours.wrong, 0, "{table}");
    assert!(report.targets.met, "{table}");
    assert!(report.misses.is_empty(), "{table}");

    let again = bench(&opts).unwrap();
    let counts = |r: &agent_runner::bench::patch::Report| {
        r.rows
            .iter()
            .map(|row| (row.kind, row.cases, row.ambiguous, row.ours))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&report), counts(&again));
}
