//! One file per subcommand. Each takes its resolved arguments and a `Printer`, returns an
//! `Outcome` (exit 0 or 1) or an error (exit 2, "could not run").

pub mod bisect;
pub mod compare;
pub mod gguf;
pub mod inspect;
pub mod lint;
pub mod merge_check;

use std::path::Path;

use crate::format::{self, hf::HfDir, Checkpoint};

/// How a command that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing at or above the fail level.
    Clean,
    /// Findings at or above the fail level.
    Findings,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Findings => 1,
        }
    }
}

/// Exit code for "could not run": bad path, unreadable input, unsupported format.
pub const EXIT_COULD_NOT_RUN: u8 = 2;

pub(crate) fn open_hf(path: &Path) -> anyhow::Result<HfDir> {
    match format::open(path)? {
        Checkpoint::Hf(d) => Ok(d),
    }
}
