//! One file per subcommand. Each takes its resolved arguments and a `Printer`, returns an
//! `Outcome` (exit 0 or 1) or an error (exit 2, "could not run").

pub mod bench;
pub mod bisect;
pub mod compare;
pub mod completions;
pub mod inspect;
pub mod inspect_gguf;
pub mod lint;
pub mod merge_check;

use crate::verdict::Verdict;

/// How a command that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing at or above the fail level.
    Clean,
    /// Findings at or above the fail level.
    Findings,
}

impl Outcome {
    /// Exit 1 when the verdict fails (a warning too under `--strict`).
    pub fn of(verdict: Verdict, strict: bool) -> Outcome {
        if verdict.fails(strict) {
            Outcome::Findings
        } else {
            Outcome::Clean
        }
    }

    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Findings => 1,
        }
    }
}

/// Exit code for "could not run": bad path, unreadable input, unsupported format.
pub const EXIT_COULD_NOT_RUN: u8 = 2;

/// An error and its causes in one line, each cause once: a cause whose text the message before
/// it already ends with (`Error::Io` prints its OS error, which is also its source) is not
/// repeated, so a missing file reads "…: No such file or directory (os error 2)" once.
pub fn error_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    /// Regression: `compare /missing x` printed "No such file or directory (os error 2)" twice.
    #[test]
    fn error_text_prints_each_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory (os error 2)");
        let e = anyhow::Error::from(crate::error::Error::Io { path: "/missing".into(), source: io });
        assert_eq!(super::error_text(&e), "cannot read `/missing`: No such file or directory (os error 2)");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_text(&e), "outer: inner");
    }
}
