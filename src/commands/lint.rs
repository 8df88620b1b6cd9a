//! `ckptcheck lint PATH`: run every static check and print the findings.

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::checks::{self, Finding, LintOptions, Severity};
use crate::cli::LintArgs;
use crate::commands::Outcome;
use crate::output::Printer;
use crate::report::{self, Report};
use crate::verdict::Verdict;

/// Version of the `lint --json` layout; bump on any incompatible change.
pub const LINT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct LintReport {
    pub schema_version: u32,
    pub path: String,
    /// Grouped: past `checks::LISTED_PER_ID` of one id, one summary entry carries the count
    /// (`more`) of the rest.
    pub findings: Vec<Finding>,
    /// Counts of every finding, the unlisted ones of a summary included.
    pub errors: usize,
    pub warnings: usize,
    pub infos: usize,
    /// Lowest severity that fails the run (`error`, or `warning` under `--strict`).
    pub fail_level: Severity,
    /// `fail` when a finding is at or above the fail level, else `pass`.
    pub verdict: Verdict,
}

pub fn run(args: &LintArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let ckpt = Checkpoint::open(&args.path)?;
    let source = match (&args.source, &ckpt) {
        (None, _) => None,
        (Some(src), Checkpoint::Gguf(_)) => match Checkpoint::open(src)? {
            Checkpoint::Hf(d) => Some(d),
            other => anyhow::bail!(
                "`--source {}` is {}, and `--source` takes the HF model directory the GGUF was converted from \
                 (config.json, tokenizer files); to measure one GGUF against another, run `ckptcheck compare {} {}`",
                src.display(),
                other.kind(),
                src.display(),
                args.path.display()
            ),
        },
        (Some(_), _) => {
            anyhow::bail!("`--source` compares a GGUF with the HF checkpoint it came from; `{}` is not a GGUF file", args.path.display())
        }
    };
    let parent = args.parent.as_deref().map(Checkpoint::open).transpose()?;
    let (mut findings, prints) = checks::lint_fingerprinted(&ckpt, source.as_ref(), &LintOptions { no_values: args.no_values });
    if let (Some(parent), Some(path)) = (&parent, &args.parent) {
        findings.extend(checks::lineage::step_vs_parent(parent, &ckpt, &path.display().to_string(), [None, prints.as_ref()]));
    }
    let fail_level = if args.strict { Severity::Warning } else { Severity::Error };
    let report = report(args.path.display().to_string(), findings, fail_level);
    report::print(printer, &report, args.json)?;
    Ok(Outcome::of(report.verdict, false))
}

impl Report for LintReport {
    const KIND: &'static str = "lint";
    fn text(&self, _color: bool) -> String {
        render_text(self, false)
    }
    fn text_verbose(&self, _color: bool) -> String {
        render_text(self, true)
    }
}

pub fn report(path: String, findings: Vec<Finding>, fail_level: Severity) -> LintReport {
    let count = |s: Severity| findings.iter().filter(|f| f.severity == s).map(|f| f.weight() as usize).sum();
    let failed = findings.iter().any(|f| f.severity >= fail_level);
    LintReport {
        schema_version: LINT_SCHEMA_VERSION,
        path,
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        infos: count(Severity::Info),
        findings,
        fail_level,
        verdict: if failed { Verdict::Fail } else { Verdict::Pass },
    }
}

/// The lint text: findings worst first, each id's first `checks::SHOWN_PER_ID` in full and one line
/// counting the rest (every collected finding under `verbose`), then the totals.
pub fn render_text(r: &LintReport, verbose: bool) -> String {
    let mut s = String::new();
    for group in checks::runs_by_id(&r.findings) {
        let (listed, hidden) = if verbose { (&group[..], 0) } else { checks::split_run(&group, checks::SHOWN_PER_ID) };
        for f in listed {
            let place = match &f.field {
                Some(field) => format!("{} [{}]", f.file, field),
                None => f.file.clone(),
            };
            s.push_str(&format!("{:<8} {:<32} {place}\n", f.severity.name(), f.id));
            s.push_str(&format!("         {}\n", f.message));
            // A summary's findings share the hint of the ones listed above it.
            if !f.hint.is_empty() && f.more.is_none() {
                s.push_str(&format!("         fix: {}\n", f.hint));
            }
        }
        if hidden > 0 {
            let (sev, id) = (group[0].severity.name(), group[0].id);
            s.push_str(&format!("{sev:<8} {id:<32} … and {} more like these (--verbose lists them)\n", checks::grouped(hidden)));
        }
    }
    s.push_str(&format!(
        "{}: {} error(s), {} warning(s), {} info — {}\n",
        r.path,
        r.errors,
        r.warnings,
        r.infos,
        if r.verdict == Verdict::Fail { "FAIL" } else { "ok" }
    ));
    s
}
