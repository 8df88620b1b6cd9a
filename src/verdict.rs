//! The one verdict every command reaches: pass, warn or fail, ordered so the worst wins. Lint,
//! merge-check, compare, bisect and gate all report it (serialized `"pass"`, `"warn"`, `"fail"`),
//! and `--strict` turns a warning into a failing exit code in one place (`Verdict::fails`).

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    /// Whether the run exits 1: a failure, or a warning under `--strict`.
    pub fn fails(self, strict: bool) -> bool {
        self == Verdict::Fail || (strict && self == Verdict::Warn)
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}
