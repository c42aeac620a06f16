//! What the model sees, fitted to its context window: a map of the repository (paths and
//! top-level symbols), the files most likely to matter, and a conversation that drops its
//! oldest turns before it overflows. Whatever does not fit is named, never cut silently.
//! Token counts are `llm`'s estimates (three bytes a token: code tokenises denser than
//! prose), so a window is never overfilled by an optimistic guess.

use std::path::Path;

use crate::llm::{Message, Role, estimate_message_tokens as message_tokens};

/// Files larger than this are listed in the map but never inlined or scanned for symbols.
pub const MAX_INLINE_FILE_BYTES: u64 = 64 * 1024;
/// Top-level symbols listed per file in the map.
const MAX_SYMBOLS_PER_FILE: usize = 12;

/// How many tokens of input the model can take: its window less what its reply needs
/// (at most a quarter of the window: a small local window with a large output limit must
/// still leave room for the task). `None` when neither configured nor probed.
pub fn input_tokens(context_tokens: Option<u64>, max_output_tokens: u64) -> Option<usize> {
    context_tokens.map(|ctx| ctx.saturating_sub(max_output_tokens.min(ctx / 4)) as usize)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    pub path: String,
    pub size: u64,
}

/// Regular files under `root`, without `.git`; symlinks are never followed, so a link to
/// a host file cannot pull its content into a prompt.
pub fn repo_files(root: &Path) -> Vec<RepoFile> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if entry.file_name() == ".git" {
                continue;
            }
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file()
                && let (Ok(rel), Ok(meta)) = (path.strip_prefix(root), entry.metadata())
            {
                files.push(RepoFile {
                    path: rel.to_string_lossy().into_owned(),
                    size: meta.len(),
                });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

/// The text of a small, non-binary, UTF-8 file.
fn small_text(root: &Path, file: &RepoFile) -> Option<String> {
    (file.size <= MAX_INLINE_FILE_BYTES)
        .then(|| std::fs::read(root.join(&file.path)).ok())
        .flatten()
        .filter(|bytes| !bytes.contains(&0))
        .and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Top-level definitions of a source file, by its extension; empty for other files.
pub fn top_level_symbols(path: &str, text: &str) -> Vec<String> {
    static PATTERNS: std::sync::OnceLock<Vec<(&'static [&'static str], regex::Regex)>> =
        std::sync::OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        let table: [(&'static [&'static str], &str); 6] = [
            (&["py"], r"^(?:async\s+)?(?:def|class)\s+(\w+)"),
            (
                &["rs"],
                r"^(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:fn|struct|enum|trait|mod|type|const|static)\s+(\w+)",
            ),
            // A function definition at column 0: a name and `(`, not a declaration (`;`).
            (
                &["c", "h", "cc", "cpp", "hpp"],
                r"^(?:[A-Za-z_][\w\s\*]*?[\s\*])?(\w+)\s*\([^;]*$",
            ),
            (&["sh", "bash"], r"^(?:function\s+)?([A-Za-z_][\w-]*)\s*\(\)"),
            (
                &["js", "ts", "mjs"],
                r"^(?:export\s+)?(?:default\s+)?(?:async\s+)?(?:function\*?|class)\s+(\w+)",
            ),
            (&["go"], r"^(?:func(?:\s+\([^)]*\))?|type)\s+(\w+)"),
        ];
        table
            .into_iter()
            .filter_map(|(exts, p)| regex::Regex::new(p).ok().map(|re| (exts, re)))
            .collect()
    });
    let ext = Path::new(path)
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let Some((_, re)) = patterns
        .iter()
        .find(|(exts, _)| exts.contains(&ext.as_str()))
    else {
        return Vec::new();
    };
    const NOT_NAMES: [&str; 6] = ["if", "for", "while", "switch", "return", "sizeof"];
    let mut symbols: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(name) = re.captures(line).and_then(|c| c.get(1))
            && !NOT_NAMES.contains(&name.as_str())
            && !symbols.iter().any(|s| s == name.as_str())
        {
            symbols.push(name.as_str().to_string());
            if symbols.len() == MAX_SYMBOLS_PER_FILE {
                break;
            }
        }
    }
    symbols
}

/// One line per file: path, size and top-level symbols, within `max_bytes`; the rest is
/// counted in a last line that says how to see it.
pub fn repo_map(root: &Path, files: &[RepoFile], max_bytes: usize) -> String {
    let mut out = String::new();
    for (i, file) in files.iter().enumerate() {
        let symbols = small_text(root, file)
            .map(|text| top_level_symbols(&file.path, &text))
            .unwrap_or_default();
        let line = if symbols.is_empty() {
            format!("{} ({} bytes)\n", file.path, file.size)
        } else {
            format!(
                "{} ({} bytes): {}\n",
                file.path,
                file.size,
                symbols.join(", ")
            )
        };
        if out.len() + line.len() > max_bytes {
            out.push_str(&format!(
                "[{} more files not listed to fit the context window; use list_dir to see them]\n",
                files.len() - i
            ));
            break;
        }
        out.push_str(&line);
    }
    out
}

/// Inlines the files most likely to matter (named in the instruction first, then the
/// smallest) up to `max_bytes`, and says which were left out.
pub fn pack_files(root: &Path, files: &[RepoFile], instruction: &str, max_bytes: usize) -> String {
    // Room for the notice of what was left out.
    let max_bytes = max_bytes.saturating_sub(600);
    let mut order: Vec<&RepoFile> = files.iter().collect();
    order.sort_by_key(|f| {
        let name = Path::new(&f.path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (!instruction.contains(&name), f.size)
    });
    let mut out = String::new();
    let mut left_out = Vec::new();
    let mut used = 0usize;
    for file in order {
        match small_text(root, file) {
            Some(text) if used + text.len() + file.path.len() + 16 <= max_bytes => {
                used += text.len() + file.path.len() + 16;
                let fence = crate::dispatch::fence_for(&text);
                out.push_str(&format!("{}\n{fence}\n{}", file.path, text));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("{fence}\n\n"));
            }
            _ => left_out.push(file.path.as_str()),
        }
    }
    if !left_out.is_empty() {
        out.push_str(&format!(
            "Not shown (too large, binary, or over the context budget; read them with read_file if you need them): {}\n",
            name_some(&left_out, 400)
        ));
    }
    out
}

/// `a, b, c` up to about `max_bytes`, then how many more.
fn name_some(names: &[&str], max_bytes: usize) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if !out.is_empty() && out.len() + name.len() > max_bytes {
            return format!("{out} and {} more", names.len() - i);
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(name);
    }
    out
}

/// Keeps the head and the tail of a long text and says how much of the middle was cut.
pub fn cap_middle(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes {
        return text.to_string();
    }
    let half = max_bytes / 2;
    let mut head = half;
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = text.len() - half;
    while !text.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{}\n[... {} bytes not shown; ask for a smaller part ...]\n{}",
        &text[..head],
        tail - head,
        &text[tail..]
    )
}

/// The conversation as sent: the system prompt and the task prompt always, then the most
/// recent turns that fit `max_tokens`. When turns are left out, the task prompt says how
/// many, and the kept part starts at an assistant turn so roles still alternate and no
/// tool result is separated from its call. Returns the messages to send and how many were
/// left out, or `None` when the whole conversation fits.
pub fn fit_history(messages: &[Message], max_tokens: usize) -> Option<(Vec<Message>, usize)> {
    let total: usize = messages.iter().map(message_tokens).sum();
    if total <= max_tokens || messages.len() <= 3 {
        return None;
    }
    let head = &messages[..2];
    let note_tokens = 40;
    let mut room = max_tokens
        .saturating_sub(head.iter().map(message_tokens).sum::<usize>())
        .saturating_sub(note_tokens);
    // From the newest backwards; the newest message is always kept.
    let mut start = messages.len() - 1;
    room = room.saturating_sub(message_tokens(&messages[start]));
    while start > 2 && message_tokens(&messages[start - 1]) <= room {
        start -= 1;
        room -= message_tokens(&messages[start]);
    }
    while start < messages.len() - 1 && messages[start].role != Role::Assistant {
        start += 1;
    }
    let left_out = start - 2;
    if left_out == 0 {
        return None;
    }
    let mut task = head[1].clone();
    task.content.push_str(&format!(
        "\n\n[{left_out} earlier messages of this conversation are left out to fit the model's context window; the latest feedback below is current.]"
    ));
    let mut out = vec![head[0].clone(), task];
    out.extend_from_slice(&messages[start..]);
    Some((out, left_out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_prefers_named_files_and_reports_what_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("calc.py"),
            "def add(a, b):\n    return a - b\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("big.txt"), "x".repeat(500)).unwrap();
        std::fs::write(dir.path().join("bin.dat"), [0u8, 1, 2]).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/config"), "secret").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("passwd")).unwrap();
        let files = repo_files(dir.path());
        let names: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(names, ["big.txt", "bin.dat", "calc.py"]);
        let packed = pack_files(dir.path(), &files, "fix calc.py", 700);
        assert!(packed.starts_with("calc.py\n```\ndef add"), "{packed}");
        assert!(packed.contains("bin.dat, big.txt\n"), "{packed}");
        assert!(packed.contains("read them with read_file"), "{packed}");
        assert!(
            !packed.contains("root:"),
            "symlinked host files never reach the prompt"
        );
    }

    #[test]
    fn symbols_per_language() {
        let cases: [(&str, &str, &[&str]); 6] = [
            (
                "m.py",
                "import os\nclass Money:\n    def inner(self): pass\ndef parse(s):\n    pass\nasync def fetch():\n    pass\n",
                &["Money", "parse", "fetch"],
            ),
            (
                "l.rs",
                "use x;\npub fn add() {}\nstruct S;\npub(crate) enum E {}\nimpl S {\n    fn m() {}\n}\n",
                &["add", "S", "E"],
            ),
            (
                "w.c",
                "#include <stdio.h>\nint count(const char *s);\nstatic int count_words(const char *s)\n{\n    if (x) {\n}\nint main(void) {\n",
                &["count_words", "main"],
            ),
            (
                "s.sh",
                "#!/bin/sh\nsemver_cmp() {\n  :\n}\nfunction bump {\n}\nparse_kv () {\n}\n",
                &["semver_cmp", "parse_kv"],
            ),
            (
                "a.js",
                "export function slug(s) {}\nclass A {}\nconst x = 1;\n",
                &["slug", "A"],
            ),
            ("README.md", "def not_code():\n", &[]),
        ];
        for (path, text, want) in cases {
            assert_eq!(top_level_symbols(path, text), want, "{path}");
        }
    }

    #[test]
    fn map_lists_symbols_and_counts_what_does_not_fit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.py"), "def one():\n    pass\n").unwrap();
        for i in 0..20 {
            std::fs::write(dir.path().join(format!("f{i:02}.txt")), "x").unwrap();
        }
        let files = repo_files(dir.path());
        let full = repo_map(dir.path(), &files, 10_000);
        assert!(
            full.starts_with("a.py (20 bytes): one\nf00.txt (1 bytes)\n"),
            "{full}"
        );
        let cut = repo_map(dir.path(), &files, 60);
        assert!(
            cut.starts_with("a.py (20 bytes): one\nf00.txt (1 bytes)\nf01.txt (1 bytes)\n["),
            "{cut}"
        );
        assert!(
            cut.ends_with(
                "[18 more files not listed to fit the context window; use list_dir to see them]\n"
            ),
            "{cut}"
        );
        assert!(cut.len() < 200);
    }

    #[test]
    fn long_lists_of_names_are_counted() {
        assert_eq!(name_some(&["a", "b"], 10), "a, b");
        assert_eq!(
            name_some(&["aaaa", "bbbb", "cccc", "dddd"], 10),
            "aaaa, bbbb and 2 more"
        );
    }

    #[test]
    fn cap_middle_keeps_both_ends() {
        assert_eq!(cap_middle("abc", 10), "abc");
        let capped = cap_middle(&"a".repeat(50).replace("aaaaa", "aaaab"), 10);
        assert!(
            capped.starts_with("aaaab\n[... 40 bytes not shown"),
            "{capped}"
        );
        assert!(capped.ends_with("\naaaab"), "{capped}");
    }

    fn conversation(turns: usize, size: usize) -> Vec<Message> {
        let mut m = vec![Message::system("sys"), Message::user("task")];
        for i in 0..turns {
            m.push(Message::assistant(format!("{i}{}", "r".repeat(size))));
            m.push(Message::user(format!("{i}{}", "f".repeat(size))));
        }
        m
    }

    #[test]
    fn the_input_window_keeps_room_for_the_reply() {
        assert_eq!(input_tokens(None, 4096), None);
        assert_eq!(input_tokens(Some(32_768), 4096), Some(28_672));
        // llama.cpp's 4096 with the default 4096 output tokens: a quarter for the reply.
        assert_eq!(input_tokens(Some(4096), 4096), Some(3072));
        assert_eq!(input_tokens(Some(4096), 256), Some(3840));
    }

    #[test]
    fn history_that_fits_is_sent_whole() {
        let messages = conversation(3, 10);
        assert_eq!(fit_history(&messages, 10_000), None);
    }

    #[test]
    fn history_drops_the_oldest_turns_and_says_so() {
        let messages = conversation(10, 300); // ~110 tokens a message
        let (sent, left_out) = fit_history(&messages, 600).unwrap();
        assert!(left_out > 0 && left_out % 2 == 0, "whole turns: {left_out}");
        assert_eq!(sent[0].content, "sys");
        assert!(
            sent[1].content.starts_with("task\n\n["),
            "{}",
            sent[1].content
        );
        assert!(
            sent[1]
                .content
                .contains(&format!("{left_out} earlier messages"))
        );
        assert_eq!(sent[2].role, Role::Assistant);
        assert_eq!(sent.last(), messages.last());
        assert!(sent.iter().map(message_tokens).sum::<usize>() <= 600 + 40);
        assert_eq!(sent.len() + left_out, messages.len());
    }

    #[test]
    fn history_keeps_tool_results_with_their_call() {
        let mut messages = conversation(4, 300);
        let call = crate::llm::ToolCall {
            id: "c1".into(),
            name: "read_file".into(),
            arguments: "{}".into(),
        };
        messages.push(Message::assistant_with_tools("", vec![call]));
        messages.push(Message::tool_result("c1", "x".repeat(300)));
        messages.push(Message::tool_result("c1", "y".repeat(300)));
        let (sent, _) = fit_history(&messages, 400).unwrap();
        assert_eq!(sent[2].role, Role::Assistant, "{sent:?}");
        assert_eq!(sent[2].tool_calls.len(), 1);
    }
}
