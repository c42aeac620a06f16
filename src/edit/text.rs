//! Line model of a text file that round-trips byte for byte: per-line
//! endings (LF / CRLF), the final-newline state and a UTF-8 BOM are kept.

/// Line terminator of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eol {
    Lf,
    CrLf,
}

impl Eol {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Eol::Lf => "\n",
            Eol::CrLf => "\r\n",
        }
    }
}

/// One line, without its terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub text: String,
    pub eol: Eol,
}

impl Line {
    /// The line as the matcher's `Exact` level sees it: CRLF lines keep
    /// their `\r` so that a model's LF-only lines only match a CRLF file at
    /// the `LineEndings` level.
    pub(crate) fn raw(&self) -> String {
        match self.eol {
            Eol::Lf => self.text.clone(),
            Eol::CrLf => format!("{}\r", self.text),
        }
    }
}

/// A parsed text file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Doc {
    pub bom: bool,
    pub lines: Vec<Line>,
    /// Whether the last line is terminated. An empty file counts as `true`,
    /// so that text inserted into it ends with a newline.
    pub final_newline: bool,
    /// Dominant line ending, used for lines the edit adds.
    pub eol: Eol,
}

impl Doc {
    pub(crate) fn parse(s: &str) -> Doc {
        let (bom, s) = match s.strip_prefix('\u{feff}') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        if s.is_empty() {
            return Doc {
                bom,
                lines: Vec::new(),
                final_newline: true,
                eol: Eol::Lf,
            };
        }
        let mut pieces: Vec<&str> = s.split('\n').collect();
        let final_newline = pieces.last().is_some_and(|p| p.is_empty());
        if final_newline {
            pieces.pop();
        }
        let n = pieces.len();
        let mut lines = Vec::with_capacity(n);
        let (mut crlf, mut lf) = (0usize, 0usize);
        for (i, p) in pieces.iter().enumerate() {
            let terminated = i + 1 < n || final_newline;
            if terminated && let Some(body) = p.strip_suffix('\r') {
                crlf += 1;
                lines.push(Line {
                    text: body.to_string(),
                    eol: Eol::CrLf,
                });
                continue;
            }
            if terminated {
                lf += 1;
            }
            lines.push(Line {
                text: (*p).to_string(),
                eol: Eol::Lf,
            });
        }
        let eol = if crlf > lf { Eol::CrLf } else { Eol::Lf };
        if !final_newline && let Some(last) = lines.last_mut() {
            last.eol = eol;
        }
        Doc {
            bom,
            lines,
            final_newline,
            eol,
        }
    }

    /// A new file: LF endings and a final newline.
    pub(crate) fn new_file(lines: &[String]) -> Doc {
        Doc {
            bom: false,
            lines: lines
                .iter()
                .map(|l| Line {
                    text: strip_cr(l).to_string(),
                    eol: Eol::Lf,
                })
                .collect(),
            final_newline: true,
            eol: Eol::Lf,
        }
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if self.bom {
            out.push('\u{feff}');
        }
        let n = self.lines.len();
        for (i, l) in self.lines.iter().enumerate() {
            out.push_str(&l.text);
            if i + 1 < n || self.final_newline {
                out.push_str(l.eol.as_str());
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }
}

pub(crate) fn strip_cr(s: &str) -> &str {
    s.strip_suffix('\r').unwrap_or(s)
}

/// Leading whitespace of a line.
pub(crate) fn indent_of(s: &str) -> &str {
    let body = s.trim_start_matches([' ', '\t']);
    &s[..s.len() - body.len()]
}

/// Width of an indentation string, a tab counting as 4 columns.
pub(crate) fn indent_width(ws: &str) -> usize {
    ws.chars().map(|c| if c == '\t' { 4 } else { 1 }).sum()
}
