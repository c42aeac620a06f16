#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;

use tempfile::TempDir;

use super::*;

fn repo(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (p, c) in files {
        let path = dir.path().join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, c).unwrap();
    }
    dir
}

fn run(dir: &TempDir, reply: &str) -> ApplyReport {
    apply(dir.path(), reply, &PathPolicy::default(), false).unwrap()
}

fn read(dir: &TempDir, p: &str) -> String {
    fs::read_to_string(dir.path().join(p)).unwrap()
}

fn exists(dir: &TempDir, p: &str) -> bool {
    dir.path().join(p).exists()
}

/// Every file under the root with its bytes, for byte-for-byte comparisons.
fn snapshot(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            let rel = e
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if ft.is_dir() {
                out.push((format!("{rel}/"), Vec::new()));
                stack.push(e.path());
            } else if ft.is_symlink() {
                out.push((rel, Vec::new()));
            } else {
                out.push((rel, fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn ok(r: &ApplyReport) {
    assert!(r.applied, "expected applied, feedback:\n{}", r.feedback());
}

fn rejected(r: &ApplyReport) {
    assert!(!r.applied, "expected rejection, got {r:#?}");
    assert!(r.changes.is_empty() && r.diff.is_empty());
}

const PY: &str = "import os\n\ndef load(path):\n    with open(path) as f:\n        return f.read()\n\ndef save(path, data):\n    with open(path, 'w') as f:\n        f.write(data)\n";

// ----- unified diff ---------------------------------------------------------

#[test]
fn git_diff_exact() {
    let d = repo(&[("app.py", PY)]);
    let reply = "Here you go:\n\n```diff\ndiff --git a/app.py b/app.py\nindex 123..456 100644\n--- a/app.py\n+++ b/app.py\n@@ -3,3 +3,4 @@ import os\n def load(path):\n     with open(path) as f:\n-        return f.read()\n+        data = f.read()\n+        return data\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks.len(), 1);
    let b = &r.blocks[0];
    assert_eq!(b.format, Format::UnifiedDiff);
    assert_eq!(b.path, "app.py");
    assert_eq!(b.level, Some(MatchLevel::Exact));
    assert_eq!(
        read(&d, "app.py"),
        PY.replace(
            "        return f.read()\n",
            "        data = f.read()\n        return data\n"
        )
    );
    assert_eq!(
        r.changes,
        vec![FileChange {
            path: "app.py".into(),
            kind: ChangeKind::Modified
        }]
    );
    assert!(
        r.diff
            .starts_with("diff --git a/app.py b/app.py\n--- a/app.py\n+++ b/app.py\n")
    );
    assert!(r.diff.contains("+        data = f.read()\n"));
}

#[test]
fn model_style_diff_wrong_numbers_no_prefix_unfenced() {
    let d = repo(&[("app.py", PY)]);
    let reply = "--- app.py\n+++ app.py\n@@ -40,9 +41,2 @@\n def save(path, data):\n-    with open(path, 'w') as f:\n+    with open(path, 'a') as f:\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::AnyLine));
    assert!(r.blocks[0].message.contains("found at line 7, not 40"));
    assert!(read(&d, "app.py").contains("open(path, 'a')"));
}

#[test]
fn bare_hunk_headers_and_multiple_files() {
    let d = repo(&[("a.txt", "one\ntwo\nthree\n"), ("sub/b.txt", "x\ny\n")]);
    let reply = "```diff\n--- a/a.txt\n+++ b/a.txt\n@@\n one\n-two\n+TWO\n three\n--- a/sub/b.txt\n+++ b/sub/b.txt\n@@ ... @@\n x\n-y\n+z\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks.len(), 2);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::Exact));
    assert_eq!(read(&d, "a.txt"), "one\nTWO\nthree\n");
    assert_eq!(read(&d, "sub/b.txt"), "x\nz\n");
    assert_eq!(r.changes.len(), 2);
}

#[test]
fn headerless_hunk_in_fence_with_path() {
    let d = repo(&[("a.txt", "one\ntwo\n")]);
    let r = run(&d, "a.txt\n```diff\n@@\n-one\n+uno\n two\n```\n");
    ok(&r);
    assert_eq!(read(&d, "a.txt"), "uno\ntwo\n");
    let r = run(
        &d,
        "```diff a.txt\n@@ -1,2 +1,2 @@\n uno\n-two\n+dos\n```\n",
    );
    ok(&r);
    assert_eq!(read(&d, "a.txt"), "uno\ndos\n");
}

#[test]
fn headerless_hunk_without_path_is_reported() {
    let d = repo(&[("a.txt", "one\n")]);
    let r = run(&d, "```diff\n@@ -1 +1 @@\n-one\n+two\n```\n");
    rejected(&r);
    assert!(!r.found_no_edits());
    assert!(r.blocks[0].message.contains("file header"));
    assert_eq!(read(&d, "a.txt"), "one\n");
}

#[test]
fn diff_create_delete_rename() {
    let d = repo(&[("old.txt", "bye\n"), ("src/m.rs", "fn a() {}\nfn b() {}\n")]);
    let reply = "diff --git a/new/dir/n.sh b/new/dir/n.sh\nnew file mode 100755\n--- /dev/null\n+++ b/new/dir/n.sh\n@@ -0,0 +1,2 @@\n+#!/bin/sh\n+echo hi\ndiff --git a/old.txt b/old.txt\ndeleted file mode 100644\n--- a/old.txt\n+++ /dev/null\n@@ -1 +0,0 @@\n-bye\ndiff --git a/src/m.rs b/src/n.rs\nsimilarity index 90%\nrename from src/m.rs\nrename to src/n.rs\n--- a/src/m.rs\n+++ b/src/n.rs\n@@ -1,2 +1,2 @@\n fn a() {}\n-fn b() {}\n+fn c() {}\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(read(&d, "new/dir/n.sh"), "#!/bin/sh\necho hi\n");
    assert!(!exists(&d, "old.txt"));
    assert!(!exists(&d, "src/m.rs"));
    assert_eq!(read(&d, "src/n.rs"), "fn a() {}\nfn c() {}\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = fs::metadata(d.path().join("new/dir/n.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o777, 0o755);
    }
    let kinds: Vec<_> = r
        .changes
        .iter()
        .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
        .collect();
    assert!(kinds.contains(&("new/dir/n.sh".into(), ChangeKind::Created)));
    assert!(kinds.contains(&("old.txt".into(), ChangeKind::Deleted)));
    assert!(kinds.contains(&("src/m.rs".into(), ChangeKind::Deleted)));
    assert!(kinds.contains(&("src/n.rs".into(), ChangeKind::Created)));
    assert!(r.diff.contains("--- /dev/null\n+++ b/new/dir/n.sh\n"));
    assert!(r.diff.contains("--- a/old.txt\n+++ /dev/null\n"));
}

#[test]
fn diff_create_on_existing_file_is_rejected() {
    let d = repo(&[("a.txt", "keep\n")]);
    let r = run(&d, "--- /dev/null\n+++ b/a.txt\n@@ -0,0 +1 @@\n+new\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("already exists"));
    assert_eq!(read(&d, "a.txt"), "keep\n");
}

#[test]
fn out_of_order_hunks() {
    let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let d = repo(&[("f.txt", &text)]);
    let reply = "--- a/f.txt\n+++ b/f.txt\n@@ -20,3 +20,3 @@\n line 20\n-line 21\n+LINE 21\n line 22\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+LINE 3\n line 4\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(
        read(&d, "f.txt"),
        text.replace("line 21\n", "LINE 21\n")
            .replace("line 3\n", "LINE 3\n")
    );
}

#[test]
fn overlapping_hunks_are_an_error() {
    let text: String = (1..=10).map(|i| format!("line {i}\n")).collect();
    let d = repo(&[("f.txt", &text)]);
    let reply = "--- a/f.txt\n+++ b/f.txt\n@@ -2,3 +2,3 @@\n line 2\n-line 3\n+X\n line 4\n@@ -3,3 +3,3 @@\n line 3\n-line 4\n+Y\n line 5\n";
    let r = run(&d, reply);
    rejected(&r);
    let m = &r.blocks[0].message;
    assert!(m.contains("hunk 1 of 2 and hunk 2 of 2 overlap"), "{m}");
    assert!(m.contains("lines 3-4"), "{m}");
    assert_eq!(read(&d, "f.txt"), text);
}

#[test]
fn ambiguity_names_candidate_lines() {
    let text = "fn a() {\n    x += 1;\n}\nfn b() {\n    x += 1;\n}\n";
    let d = repo(&[("f.rs", text)]);
    let r = run(
        &d,
        "--- a/f.rs\n+++ b/f.rs\n@@ -2 +2 @@\n-    x += 1;\n+    x += 2;\n",
    );
    rejected(&r);
    let m = &r.blocks[0].message;
    assert!(m.contains("matches 2 places"), "{m}");
    assert!(m.contains("lines 2, 5"), "{m}");
    assert_eq!(read(&d, "f.rs"), text);
}

#[test]
fn ambiguity_is_decided_at_first_level_with_a_match() {
    // Exact matches once; a looser level would match twice: exact wins.
    let text = "  x\nx\n";
    let d = repo(&[("f", text)]);
    let r = run(
        &d,
        "f\n```\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n```\n",
    );
    ok(&r);
    assert_eq!(read(&d, "f"), "  x\ny\n");
    // No exact match, two at the indentation level: ambiguous.
    let d = repo(&[("f", "  x\n    x\n")]);
    let r = run(
        &d,
        "f\n```\n<<<<<<< SEARCH\n x\n=======\n y\n>>>>>>> REPLACE\n```\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("(ignoring indentation)"));
    assert!(r.blocks[0].message.contains("lines 1, 2"));
}

#[test]
fn no_newline_markers_are_honoured() {
    let d = repo(&[("f", "a\nb")]);
    let r = run(
        &d,
        "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n",
    );
    ok(&r);
    assert_eq!(read(&d, "f"), "a\nb\n");
    let r = run(
        &d,
        "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n",
    );
    ok(&r);
    assert_eq!(read(&d, "f"), "a\nc");
}

#[test]
fn missing_final_newline_is_preserved() {
    let d = repo(&[("f", "a\nb\nc")]);
    let r = run(&d, "--- a/f\n+++ b/f\n@@\n a\n b\n-c\n+C\n+D\n");
    ok(&r);
    assert_eq!(read(&d, "f"), "a\nb\nC\nD");
    let r = run(&d, "--- a/f\n+++ b/f\n@@\n a\n-b\n+B\n");
    ok(&r);
    assert_eq!(read(&d, "f"), "a\nB\nC\nD");
}

#[test]
fn pure_insertion_without_context() {
    let d = repo(&[("f", "a\nb\n")]);
    let r = run(&d, "--- a/f\n+++ b/f\n@@ -0,0 +1 @@\n+top\n");
    ok(&r);
    assert_eq!(read(&d, "f"), "top\na\nb\n");
    let r = run(&d, "--- a/f\n+++ b/f\n@@ -3,0 +4 @@\n+end\n");
    ok(&r);
    assert_eq!(read(&d, "f"), "top\na\nb\nend\n");
    let r = run(&d, "--- a/f\n+++ b/f\n@@ -2,0 +3 @@\n+mid\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("no context"));
    let r = run(&d, "--- a/f\n+++ b/f\n@@\n+where?\n");
    rejected(&r);
    // An empty file takes it anywhere.
    let d = repo(&[("e", "")]);
    let r = run(&d, "--- a/e\n+++ b/e\n@@\n+x\n");
    ok(&r);
    assert_eq!(read(&d, "e"), "x\n");
}

#[test]
fn deleted_line_that_looks_like_a_header() {
    let d = repo(&[("f.sql", "-- a\nselect 1;\n")]);
    let r = run(
        &d,
        "--- a/f.sql\n+++ b/f.sql\n@@ -1,2 +1,2 @@\n--- a\n+++ b\n select 1;\n",
    );
    ok(&r);
    assert_eq!(read(&d, "f.sql"), "++ b\nselect 1;\n");
}

// ----- match levels ---------------------------------------------------------

#[test]
fn level_trailing_whitespace_keeps_file_context() {
    let d = repo(&[("f", "a  \nb\t\nc\n")]);
    let r = run(&d, "--- a/f\n+++ b/f\n@@\n a\n-b\n+B\n c\n");
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::TrailingWhitespace));
    assert_eq!(read(&d, "f"), "a  \nB\nc\n");
}

#[test]
fn level_line_endings_preserves_crlf() {
    let d = repo(&[("w.txt", "one\r\ntwo\r\nthree\r\n")]);
    let r = run(
        &d,
        "--- a/w.txt\n+++ b/w.txt\n@@\n one\n-two\n+2\n+2b\n three\n",
    );
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::LineEndings));
    assert_eq!(read(&d, "w.txt"), "one\r\n2\r\n2b\r\nthree\r\n");
    // A CRLF diff (as git makes for CRLF files) is exact.
    let r = run(&d, "--- a/w.txt\n+++ b/w.txt\n@@\n one\r\n-2\r\n+deux\r\n");
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::Exact));
    assert_eq!(read(&d, "w.txt"), "one\r\ndeux\r\n2b\r\nthree\r\n");
}

#[test]
fn level_indentation_reindents_new_lines() {
    let text =
        "class A:\n    def f(self):\n        if x:\n            return 1\n        return 2\n";
    let d = repo(&[("a.py", text)]);
    let reply = "a.py\n```python\n<<<<<<< SEARCH\nif x:\n    return 1\n=======\nif x:\n    log()\n    return 1\nelse:\n  pass\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::Indentation));
    assert_eq!(
        read(&d, "a.py"),
        "class A:\n    def f(self):\n        if x:\n            log()\n            return 1\n        else:\n          pass\n        return 2\n"
    );
}

#[test]
fn level_indentation_tabs() {
    let d = repo(&[("m.go", "func f() {\n\tif x {\n\t\ty()\n\t}\n}\n")]);
    let reply = "m.go\n```go\n<<<<<<< SEARCH\n    if x {\n        y()\n    }\n=======\n    if x {\n        y()\n        z()\n    }\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::Indentation));
    assert_eq!(
        read(&d, "m.go"),
        "func f() {\n\tif x {\n\t\ty()\n\t\tz()\n\t}\n}\n"
    );
}

#[test]
fn level_unicode_lookalikes() {
    let d = repo(&[(
        "t.md",
        "He said \u{201C}hi\u{201D} \u{2014} ok\nnext\u{00A0}line\n",
    )]);
    let reply = "t.md\n```\n<<<<<<< SEARCH\nHe said \"hi\" - ok\nnext line\n=======\nHe said \"hello\" - ok\nnext line\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::UnicodeLookalikes));
    // The unchanged line keeps its non-breaking space.
    assert_eq!(
        read(&d, "t.md"),
        "He said \"hello\" - ok\nnext\u{00A0}line\n"
    );
}

#[test]
fn level_exact_and_any_line() {
    let d = repo(&[("f", "a\nb\nc\n")]);
    let r = run(&d, "--- a/f\n+++ b/f\n@@ -2,1 +2,1 @@\n-b\n+B\n");
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::Exact));
    let r = run(&d, "--- a/f\n+++ b/f\n@@ -1,1 +1,1 @@\n-c\n+C\n");
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::AnyLine));
    assert_eq!(read(&d, "f"), "a\nB\nC\n");
}

// ----- SEARCH/REPLACE -------------------------------------------------------

#[test]
fn search_replace_aider_style_multiple_blocks() {
    let d = repo(&[("app.py", PY)]);
    let reply = "I'll change both functions.\n\napp.py\n```python\n<<<<<<< SEARCH\n        return f.read()\n=======\n        return f.read().strip()\n>>>>>>> REPLACE\n```\n\n`app.py`\n```python\n<<<<<<< SEARCH\n    with open(path, 'w') as f:\n=======\n    with open(path, 'x') as f:\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks.len(), 2);
    assert!(r.blocks.iter().all(|b| b.format == Format::SearchReplace));
    let t = read(&d, "app.py");
    assert!(t.contains("return f.read().strip()") && t.contains("open(path, 'x')"));
}

#[test]
fn search_replace_path_variants() {
    let d = repo(&[("src/a.rs", "let x = 1;\n")]);
    // Path inside the fence, bold path, reused path for a following block.
    let reply = "```rust\nsrc/a.rs\n<<<<<<< SEARCH\nlet x = 1;\n=======\nlet x = 2;\n>>>>>>> REPLACE\n\n<<<<<<< SEARCH\nlet x = 2;\n=======\nlet x = 3;\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(read(&d, "src/a.rs"), "let x = 3;\n");
    let r = run(
        &d,
        "**src/a.rs**\n```\n<<<<<<< ORIGINAL\nlet x = 3;\n=======\nlet x = 4;\n>>>>>>> UPDATED\n```\n",
    );
    ok(&r);
    assert_eq!(read(&d, "src/a.rs"), "let x = 4;\n");
}

#[test]
fn search_replace_create_and_refuse_empty_search_on_existing() {
    let d = repo(&[("a.txt", "content\n")]);
    let r = run(
        &d,
        "docs/new.md\n```\n<<<<<<< SEARCH\n=======\n# Title\n\ntext\n>>>>>>> REPLACE\n```\n",
    );
    ok(&r);
    assert_eq!(read(&d, "docs/new.md"), "# Title\n\ntext\n");
    assert_eq!(r.changes[0].kind, ChangeKind::Created);
    let r = run(
        &d,
        "a.txt\n```\n<<<<<<< SEARCH\n=======\nnew\n>>>>>>> REPLACE\n```\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("already exists"));
    assert_eq!(read(&d, "a.txt"), "content\n");
}

#[test]
fn search_replace_without_path_or_end_is_malformed() {
    let d = repo(&[("a.txt", "x\n")]);
    let r = run(
        &d,
        "Do this:\n\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("no file path"));
    let r = run(&d, "a.txt\n<<<<<<< SEARCH\nx\n=======\ny\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("REPLACE"));
}

#[test]
fn feedback_names_unmatched_line_and_closest_region() {
    let d = repo(&[("app.py", PY)]);
    let reply = "app.py\n```python\n<<<<<<< SEARCH\ndef save(path, data):\n    with open(path, 'wb') as f:\n        f.write(data)\n=======\ndef save(path, data):\n    pass\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    rejected(&r);
    let m = &r.blocks[0].message;
    assert!(m.contains("was not found in app.py"), "{m}");
    assert!(
        m.contains("SEARCH line 2 `    with open(path, 'wb') as f:`"),
        "{m}"
    );
    assert!(
        m.contains("differs from line 8: `    with open(path, 'w') as f:`"),
        "{m}"
    );
    assert!(m.contains("did you mean: app.py lines 7-9\n"), "{m}");
    assert!(m.contains("8 |     with open(path, 'w') as f:"), "{m}");
    let fb = r.feedback();
    assert!(
        fb.contains("Edit 1 (SEARCH/REPLACE, app.py): FAILED:"),
        "{fb}"
    );
    assert!(fb.contains("Nothing was changed"), "{fb}");
}

#[test]
fn feedback_first_line_nowhere() {
    let d = repo(&[("f.txt", "alpha\nbeta\ngamma\n")]);
    let r = run(
        &d,
        "--- a/f.txt\n+++ b/f.txt\n@@ -1,2 +1,2 @@\n zeta\n-beta\n+BETA\n",
    );
    rejected(&r);
    let m = &r.blocks[0].message;
    assert!(m.contains("`@@ -1,2 +1,2 @@`"), "{m}");
    assert!(
        m.contains("hunk line 1 `zeta`, is nowhere in the file"),
        "{m}"
    );
}

#[test]
fn already_applied_is_detected() {
    let d = repo(&[("f", "a\nb\n")]);
    let reply = "f\n```\n<<<<<<< SEARCH\na\n=======\na\nadded\n>>>>>>> REPLACE\n```\n";
    ok(&run(&d, reply));
    assert_eq!(read(&d, "f"), "a\nadded\nb\n");
    let r = run(&d, reply);
    rejected(&r);
    assert!(
        r.blocks[0].message.contains("already applied"),
        "{}",
        r.blocks[0].message
    );
    assert_eq!(read(&d, "f"), "a\nadded\nb\n");
    // Replaced text: the hint says the new text is already there.
    let reply = "f\n```\n<<<<<<< SEARCH\nadded\n=======\nchanged\n>>>>>>> REPLACE\n```\n";
    ok(&run(&d, reply));
    let r = run(&d, reply);
    rejected(&r);
    assert!(r.blocks[0].message.contains("may already be applied"));
}

// ----- apply_patch ----------------------------------------------------------

#[test]
fn apply_patch_envelope() {
    let d = repo(&[
        (
            "src/lib.py",
            "class A:\n    def f(self):\n        return 1\n\nclass B:\n    def f(self):\n        return 1\n",
        ),
        ("gone.txt", "x\n"),
        ("mv.txt", "m1\nm2\n"),
    ]);
    let reply = "```\n*** Begin Patch\n*** Add File: docs/hello.txt\n+hello\n+world\n*** Update File: src/lib.py\n@@ class B:\n@@     def f(self):\n-        return 1\n+        return 2\n*** Delete File: gone.txt\n*** Update File: mv.txt\n*** Move to: moved/mv.txt\n@@\n m1\n-m2\n+M2\n*** End of File\n*** End Patch\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks.len(), 4);
    assert!(r.blocks.iter().all(|b| b.format == Format::ApplyPatch));
    assert_eq!(read(&d, "docs/hello.txt"), "hello\nworld\n");
    assert_eq!(
        read(&d, "src/lib.py"),
        "class A:\n    def f(self):\n        return 1\n\nclass B:\n    def f(self):\n        return 2\n"
    );
    assert!(!exists(&d, "gone.txt") && !exists(&d, "mv.txt"));
    assert_eq!(read(&d, "moved/mv.txt"), "m1\nM2\n");
}

#[test]
fn apply_patch_anchor_scopes_the_match() {
    let text = "def a():\n    x = 1\n    return x\n\ndef b():\n    x = 1\n    return x\n";
    let d = repo(&[("m.py", text)]);
    let reply = "*** Begin Patch\n*** Update File: m.py\n@@ def b():\n-    x = 1\n+    x = 2\n*** End Patch\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(
        read(&d, "m.py"),
        "def a():\n    x = 1\n    return x\n\ndef b():\n    x = 2\n    return x\n"
    );
    // Without the anchor it is ambiguous.
    let r = run(
        &d,
        "*** Begin Patch\n*** Update File: m.py\n@@\n-    return x\n+    return -x\n*** End Patch\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("lines 3, 7"));
}

#[test]
fn apply_patch_anchor_not_found_and_pure_additions() {
    let d = repo(&[("m.py", "def a():\n    pass\n")]);
    let r = run(
        &d,
        "*** Begin Patch\n*** Update File: m.py\n@@ def zz():\n-    pass\n+    return\n*** End Patch\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("anchor line `@@ def zz():`"));
    // Pure addition after the anchor line, and one at the end of the file.
    let r = run(
        &d,
        "*** Begin Patch\n*** Update File: m.py\n@@ def a():\n+    \"\"\"Doc.\"\"\"\n@@\n+\n+def b():\n+    pass\n*** End Patch\n",
    );
    ok(&r);
    assert_eq!(
        read(&d, "m.py"),
        "def a():\n    \"\"\"Doc.\"\"\"\n    pass\n\ndef b():\n    pass\n"
    );
}

#[test]
fn apply_patch_add_existing_and_end_of_file() {
    let d = repo(&[("f", "x\ny\nx\n")]);
    let r = run(&d, "*** Begin Patch\n*** Add File: f\n+z\n*** End Patch\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("Update File"));
    let r = run(
        &d,
        "*** Begin Patch\n*** Update File: f\n@@\n-x\n+X\n*** End of File\n*** End Patch\n",
    );
    ok(&r);
    assert_eq!(read(&d, "f"), "x\ny\nX\n");
}

// ----- whole file -----------------------------------------------------------

#[test]
fn whole_file_path_forms() {
    let d = repo(&[
        ("a.py", "old\n"),
        ("b/c.py", "old\n"),
        ("d.rs", "old\n"),
        ("e.rs", "old\n"),
    ]);
    let reply = "a.py\n```python\nnew a\n```\n\n**b/c.py**\n```python\nnew c\n```\n\n```rust d.rs\nnew d\n```\n\n```e.rs\nnew e\n```\n\nAnd a plain example:\n```\nnot an edit\n```\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(r.blocks.len(), 4);
    assert!(
        r.blocks
            .iter()
            .all(|b| b.format == Format::WholeFile && b.level.is_none())
    );
    for (p, c) in [
        ("a.py", "new a\n"),
        ("b/c.py", "new c\n"),
        ("d.rs", "new d\n"),
        ("e.rs", "new e\n"),
    ] {
        assert_eq!(read(&d, p), c);
    }
}

#[test]
fn whole_file_new_and_preserved_endings() {
    let d = repo(&[("w.txt", "a\r\nb\r\n"), ("n.txt", "a\nb")]);
    let r = run(
        &d,
        "w.txt\n```\nx\ny\n```\nn.txt\n```\nx\ny\n```\nnew/f.txt\n```\nz\n```\n",
    );
    ok(&r);
    assert_eq!(read(&d, "w.txt"), "x\r\ny\r\n");
    assert_eq!(read(&d, "n.txt"), "x\ny");
    assert_eq!(read(&d, "new/f.txt"), "z\n");
}

#[test]
fn whole_file_markdown_with_nested_fences() {
    let d = repo(&[("README.md", "# Old\n")]);
    let r = run(
        &d,
        "README.md\n```markdown\n# New\n\n```bash\nmake\n```\n\nend\n```\n",
    );
    ok(&r);
    assert_eq!(
        read(&d, "README.md"),
        "# New\n\n```bash\nmake\n```\n\nend\n"
    );
}

#[test]
fn whole_file_elision_and_unclosed_are_refused() {
    let d = repo(&[("a.js", "function a() {}\nfunction b() {}\n")]);
    let r = run(
        &d,
        "a.js\n```js\nfunction a() { return 1; }\n// ... rest of the code unchanged ...\n```\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("elision"));
    let r = run(&d, "a.js\n```js\nfunction a() {}\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("never closed"));
    assert_eq!(read(&d, "a.js"), "function a() {}\nfunction b() {}\n");
}

#[test]
fn no_edits_found() {
    let d = repo(&[("a.txt", "x\n")]);
    let r = run(
        &d,
        "I think the bug is in `a.txt`. Example:\n\n```python\nprint('hi')\n```\n",
    );
    assert!(r.found_no_edits());
    assert!(!r.applied);
    assert!(r.feedback().contains("No edits found"));
}

// ----- mixed, atomicity, dry run --------------------------------------------

#[test]
fn mixed_formats_in_one_reply() {
    let d = repo(&[
        ("a.txt", "1\n2\n"),
        ("b.txt", "b\n"),
        ("c.txt", "c\n"),
        ("d.txt", "d\n"),
    ]);
    let reply = "First:\n```diff\n--- a/a.txt\n+++ b/a.txt\n@@\n 1\n-2\n+two\n```\nThen:\nb.txt\n```\n<<<<<<< SEARCH\nb\n=======\nB\n>>>>>>> REPLACE\n```\n*** Begin Patch\n*** Update File: c.txt\n@@\n-c\n+C\n*** End Patch\n\nd.txt\n```\nD\n```\n";
    let r = run(&d, reply);
    ok(&r);
    let formats: Vec<Format> = r.blocks.iter().map(|b| b.format).collect();
    assert_eq!(
        formats,
        vec![
            Format::UnifiedDiff,
            Format::SearchReplace,
            Format::ApplyPatch,
            Format::WholeFile
        ]
    );
    assert_eq!(read(&d, "a.txt"), "1\ntwo\n");
    assert_eq!(read(&d, "b.txt"), "B\n");
    assert_eq!(read(&d, "c.txt"), "C\n");
    assert_eq!(read(&d, "d.txt"), "D\n");
    assert!(
        r.feedback()
            .contains("All 4 edits applied (4 files changed).")
    );
}

#[test]
fn all_or_nothing_across_files() {
    let d = repo(&[("a.txt", "a\r\nb"), ("b.txt", "x\n")]);
    let before = snapshot(d.path());
    let reply = "a.txt\n```\n<<<<<<< SEARCH\na\n=======\nA\n>>>>>>> REPLACE\n```\nnew.txt\n```\nnew\n```\nb.txt\n```\n<<<<<<< SEARCH\nnope\n=======\ny\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    rejected(&r);
    assert!(r.blocks[0].applied && r.blocks[1].applied && !r.blocks[2].applied);
    assert_eq!(snapshot(d.path()), before);
    let fb = r.feedback();
    assert!(
        fb.contains("ok, not applied") && fb.contains("FAILED"),
        "{fb}"
    );
}

#[test]
fn rollback_when_a_rename_fails_midway() {
    let d = repo(&[("a.txt", "a\n"), ("b.txt", "b\n"), ("c.txt", "c\n")]);
    let before = snapshot(d.path());
    let reply = "a.txt\n```\nA\n```\n*** Begin Patch\n*** Delete File: b.txt\n*** Add File: x/y/new.txt\n+n\n*** End Patch\nc.txt\n```\nC\n```\n";
    for step in 0..4 {
        vfs::FAIL_STEP.with(|f| f.set(Some(step)));
        let err = apply(d.path(), reply, &PathPolicy::default(), false);
        vfs::FAIL_STEP.with(|f| f.set(None));
        let err = err.expect_err("injected failure must surface");
        assert!(
            err.to_string()
                .contains("every file already written was restored"),
            "{err}"
        );
        assert_eq!(snapshot(d.path()), before, "step {step}");
    }
    ok(&run(&d, reply));
    assert_eq!(read(&d, "x/y/new.txt"), "n\n");
}

#[test]
fn dry_run_writes_nothing() {
    let d = repo(&[("a.txt", "a\n")]);
    let before = snapshot(d.path());
    let reply =
        "a.txt\n```\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n```\nn/new.txt\n```\nx\n```\n";
    let r = apply(d.path(), reply, &PathPolicy::default(), true).unwrap();
    ok(&r);
    assert_eq!(r.changes.len(), 2);
    assert!(r.diff.contains("-a\n+b\n"));
    assert_eq!(snapshot(d.path()), before);
}

#[test]
fn no_change_is_not_applied() {
    let d = repo(&[("a.txt", "a\n")]);
    let r = run(&d, "a.txt\n```\na\n```\n");
    assert!(!r.applied && r.blocks[0].applied);
    assert!(
        r.feedback()
            .contains("already contain exactly this content")
    );
}

#[test]
fn root_missing_is_an_error() {
    let d = repo(&[]);
    let missing = d.path().join("nope");
    assert!(matches!(
        apply(&missing, "x", &PathPolicy::default(), false),
        Err(EditError::Root { .. })
    ));
}

// ----- paths, binaries, modes -----------------------------------------------

#[test]
fn path_escapes_are_refused() {
    let outside = repo(&[("secret.txt", "s\n")]);
    let d = repo(&[("a.txt", "a\n")]);
    let abs = outside.path().join("secret.txt");
    let reply = format!("{}\n```\nx\n```\n", abs.display());
    let r = run(&d, &reply);
    rejected(&r);
    assert!(r.blocks[0].message.contains("absolute path"));
    let r = run(&d, "--- a/../x.txt\n+++ b/../x.txt\n@@\n-a\n+b\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("`..`"));
    assert_eq!(read(&outside, "secret.txt"), "s\n");
}

#[cfg(unix)]
#[test]
fn symlinks_out_of_the_root_are_refused() {
    let outside = repo(&[("secret.txt", "s\n")]);
    let d = repo(&[("in.txt", "i\n")]);
    std::os::unix::fs::symlink(outside.path(), d.path().join("outdir")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), d.path().join("link.txt"))
        .unwrap();
    std::os::unix::fs::symlink(d.path().join("in.txt"), d.path().join("inlink.txt")).unwrap();
    for reply in [
        "outdir/secret.txt\n```\nhacked\n```\n",
        "outdir/new.txt\n```\nhacked\n```\n",
        "link.txt\n```\n<<<<<<< SEARCH\ns\n=======\nhacked\n>>>>>>> REPLACE\n```\n",
    ] {
        let r = run(&d, reply);
        rejected(&r);
        assert!(
            r.blocks[0].message.contains("outside the repository"),
            "{}",
            r.blocks[0].message
        );
    }
    assert_eq!(read(&outside, "secret.txt"), "s\n");
    assert!(!outside.path().join("new.txt").exists());
    // A symlink inside the root edits its target.
    let r = run(
        &d,
        "inlink.txt\n```\n<<<<<<< SEARCH\ni\n=======\nI\n>>>>>>> REPLACE\n```\n",
    );
    ok(&r);
    assert_eq!(r.blocks[0].path, "in.txt");
    assert_eq!(read(&d, "in.txt"), "I\n");
    assert!(
        fs::symlink_metadata(d.path().join("inlink.txt"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn git_and_workflows_are_protected() {
    let d = repo(&[
        (".git/config", "[core]\n"),
        (".github/workflows/ci.yml", "on: push\n"),
    ]);
    let r = run(&d, ".git/config\n```\nevil\n```\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains(".git/"));
    let r = run(
        &d,
        "--- a/.github/workflows/ci.yml\n+++ b/.github/workflows/ci.yml\n@@\n-on: push\n+on: pull_request\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains(".github/workflows/"));
    let open = PathPolicy {
        protect_workflows: false,
    };
    let r = apply(d.path(), "--- a/.github/workflows/ci.yml\n+++ b/.github/workflows/ci.yml\n@@\n-on: push\n+on: pull_request\n", &open, false).unwrap();
    ok(&r);
    assert_eq!(read(&d, ".git/config"), "[core]\n");
}

#[test]
fn binary_files_are_not_edited() {
    let d = repo(&[]);
    fs::write(d.path().join("img.bin"), b"ab\0cd\n").unwrap();
    fs::write(d.path().join("latin1.txt"), b"caf\xe9\n").unwrap();
    let r = run(
        &d,
        "img.bin\n```\n<<<<<<< SEARCH\nab\n=======\nxy\n>>>>>>> REPLACE\n```\n",
    );
    rejected(&r);
    assert!(r.blocks[0].message.contains("binary"));
    let r = run(&d, "latin1.txt\n```\ncafe\n```\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("binary"));
    assert_eq!(fs::read(d.path().join("latin1.txt")).unwrap(), b"caf\xe9\n");
}

#[cfg(unix)]
#[test]
fn file_mode_and_bom_are_preserved() {
    use std::os::unix::fs::PermissionsExt;
    let d = repo(&[("run.sh", "\u{feff}#!/bin/sh\necho a\n")]);
    let p = d.path().join("run.sh");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    let r = run(
        &d,
        "run.sh\n```\n<<<<<<< SEARCH\n#!/bin/sh\necho a\n=======\n#!/bin/sh\necho b\n>>>>>>> REPLACE\n```\n",
    );
    ok(&r);
    assert_eq!(read(&d, "run.sh"), "\u{feff}#!/bin/sh\necho b\n");
    assert_eq!(
        fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o755
    );
}

#[test]
fn missing_file_suggests_same_name() {
    let d = repo(&[("src/deep/util.rs", "x\n")]);
    let r = run(
        &d,
        "util.rs\n```\n<<<<<<< SEARCH\nx\n=======\ny\n>>>>>>> REPLACE\n```\n",
    );
    rejected(&r);
    assert!(
        r.blocks[0]
            .message
            .contains("did you mean: src/deep/util.rs?"),
        "{}",
        r.blocks[0].message
    );
}

#[test]
fn report_serializes() {
    let d = repo(&[("a.txt", "a\n")]);
    let r = run(
        &d,
        "a.txt\n```\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n```\n",
    );
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.contains("\"format\":\"search_replace\""));
    assert!(json.contains("\"level\":\"exact\""));
    assert!(json.contains("\"kind\":\"modified\""));
    let back: ApplyReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}

#[test]
fn canonical_diff_shapes() {
    assert_eq!(canonical_diff("f", "a\n", "a\n"), "");
    assert_eq!(
        canonical_diff("f", "a\nb\n", "a\nc\n"),
        "diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"
    );
    let c = canonical_file_diff("n", None, Some("x\n"));
    assert!(
        c.contains("new file mode 100644\n--- /dev/null\n+++ b/n\n@@ -0,0 +1 @@\n+x\n"),
        "{c}"
    );
}

#[test]
fn apply_patch_without_begin_line_is_tolerated() {
    let d = repo(&[("f.txt", "a\nb\n")]);
    let r = run(
        &d,
        "*** Update File: f.txt\n@@\n a\n-b\n+B\n*** End Patch\n",
    );
    ok(&r);
    assert_eq!(r.blocks[0].format, Format::ApplyPatch);
    assert_eq!(read(&d, "f.txt"), "a\nB\n");
}

#[test]
fn repeated_identical_block_is_applied_once() {
    let d = repo(&[("f.txt", "a\nb\n")]);
    let block = "f.txt\n```\n<<<<<<< SEARCH\nb\n=======\nb\nc\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, &format!("{block}\nAgain:\n{block}"));
    ok(&r);
    assert_eq!(r.blocks.len(), 2);
    assert!(r.blocks[1].message.contains("same as edit 1"));
    assert_eq!(read(&d, "f.txt"), "a\nb\nc\n");
}

#[test]
fn reapplied_diff_is_rejected_as_already_applied() {
    let a = "1\n2\n3\n4\n5\n6\n7\n8\n";
    let b = "1\n2\n3\n4\nfour and a half\n5\n6\n7\n8\n";
    let d = repo(&[("n.txt", a)]);
    let diff = canonical_diff("n.txt", a, b);
    ok(&run(&d, &diff));
    let r = run(&d, &diff);
    rejected(&r);
    assert!(
        r.blocks[0].message.contains("looks already applied"),
        "{}",
        r.blocks[0].message
    );
    assert_eq!(read(&d, "n.txt"), b);
}

#[test]
fn failure_after_earlier_edit_says_line_numbers_are_for_changed_file() {
    let d = repo(&[("f.txt", "a\nb\nc\n")]);
    let reply = "f.txt\n```\n<<<<<<< SEARCH\na\n=======\nA\n>>>>>>> REPLACE\n```\nf.txt\n```\n<<<<<<< SEARCH\nzzz\n=======\ny\n>>>>>>> REPLACE\n```\n";
    let r = run(&d, reply);
    rejected(&r);
    assert!(
        r.blocks[1]
            .message
            .contains("as changed by the earlier edits")
    );
}

#[test]
fn sequential_blocks_see_earlier_results() {
    let d = repo(&[("f.txt", "a\n")]);
    let reply = "f.txt\n```\nx\ny\n```\nf.txt\n```\n<<<<<<< SEARCH\ny\n=======\nz\n>>>>>>> REPLACE\n```\n*** Begin Patch\n*** Delete File: f.txt\n*** Add File: f.txt\n+fresh\n*** End Patch\n";
    let r = run(&d, reply);
    ok(&r);
    assert_eq!(read(&d, "f.txt"), "fresh\n");
    assert_eq!(r.changes[0].kind, ChangeKind::Modified);
}

#[test]
fn shell_block_under_a_file_name_is_not_a_whole_file() {
    let d = repo(&[
        ("setup.py", "from setuptools import setup\n"),
        ("run.sh", "old\n"),
    ]);
    let r = run(&d, "setup.py\n```bash\npython setup.py install\n```\n");
    assert!(r.found_no_edits());
    assert_eq!(read(&d, "setup.py"), "from setuptools import setup\n");
    let r = run(&d, "run.sh\n```bash\necho new\n```\n");
    ok(&r);
    assert_eq!(read(&d, "run.sh"), "echo new\n");
}

#[test]
fn deleting_the_last_lines_is_not_mistaken_for_already_applied() {
    let a = "1\n2\n3\n4\n5\n";
    let d = repo(&[("n.txt", a)]);
    let r = run(&d, &canonical_diff("n.txt", a, "1\n2\n3\n"));
    ok(&r);
    assert_eq!(read(&d, "n.txt"), "1\n2\n3\n");
}

#[test]
fn path_line_with_multibyte_text_does_not_panic() {
    // Found by tests/edit_fuzz.rs: the `file:` prefix test cut a line inside `ⷠ`.
    let d = repo(&[("a.txt", "hi\n")]);
    let r = run(&d, "<<<<<<< SEARCH\n!00\u{2de0}\n<<<<<<< SEARCH");
    assert!(!r.applied);
    let r = run(
        &d,
        "fileé.txt\n<<<<<<< SEARCH\nhi\n=======\nho\n>>>>>>> REPLACE\n",
    );
    assert!(!r.applied);
    let r = run(
        &d,
        "file: a.txt\n<<<<<<< SEARCH\nhi\n=======\nho\n>>>>>>> REPLACE\n",
    );
    ok(&r);
    assert_eq!(read(&d, "a.txt"), "ho\n");
}

#[test]
fn strict_match_away_from_a_header_line_that_holds_the_text_loosely_is_ambiguous() {
    // The same three closers at two depths; a re-indented hunk whose header
    // names the shallow ones matches the deep ones exactly (found by the bench).
    let a = "mod m {\n    fn f() {\n        if x {\n            y();\n        }\n    }\n}\nfn g() {\n    if x {\n        y();\n    }\n}\n";
    let d = repo(&[("f.rs", a)]);
    let shifted = "--- a/f.rs\n+++ b/f.rs\n@@ -10,3 +10,4 @@\n             y();\n         }\n     }\n+    // added\n";
    let r = run(&d, shifted);
    rejected(&r);
    assert!(r.blocks[0].message.contains("2 places"), "{}", r.feedback());
    assert!(
        r.blocks[0].message.contains("lines 4, 10"),
        "{}",
        r.feedback()
    );
    // With its own indentation it applies.
    let right = "--- a/f.rs\n+++ b/f.rs\n@@ -10,3 +10,4 @@\n         y();\n     }\n }\n+// added\n";
    ok(&run(&d, right));
    assert!(read(&d, "f.rs").ends_with("        y();\n    }\n}\n// added\n"));
    // A wrong line number on unrelated text still only moves the hunk.
    let d = repo(&[("f.rs", a)]);
    let moved = "--- a/f.rs\n+++ b/f.rs\n@@ -1,2 +1,3 @@\n fn g() {\n+    // first\n     if x {\n";
    let r = run(&d, moved);
    ok(&r);
    assert_eq!(r.blocks[0].level, Some(MatchLevel::AnyLine));
}

#[test]
fn whole_file_line_mentioning_an_elision_is_content() {
    let d = repo(&[("t.rs", "fn t() {}\n")]);
    let new = "fn t() {\n    let s = \"// ... rest of the code unchanged\";\n}\n";
    ok(&run(&d, &format!("t.rs\n```rust\n{new}```\n")));
    assert_eq!(read(&d, "t.rs"), new);
    let r = run(&d, "t.rs\n```rust\nfn t() {}\n... rest unchanged\n```\n");
    rejected(&r);
    assert!(r.blocks[0].message.contains("elision"));
}
