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
