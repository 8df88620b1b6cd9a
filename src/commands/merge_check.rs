//! `ckptcheck merge-check --base B --adapter A --merged M`: static LoRA merge algebra. The text
//! lists faults first and the first few rows of each status, counting the rest (`--verbose`:
//! every row).

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::checks::merge::{self, MergeReport};
use crate::checks::Severity;
use crate::cli::MergeCheckArgs;
use crate::commands::{lint, Outcome};
use crate::compare::metrics::fmt_num;
use crate::output::Printer;
use crate::report::{self, Report};

/// Version of the `merge-check --json` layout.
pub const MERGE_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct MergeCheckReport<'a> {
    schema_version: u32,
    base: String,
    adapter: String,
    merged: String,
    scale_rule: String,
    modules: &'a [merge::ModuleRow],
    #[serde(flatten)]
    lint: &'a lint::LintReport,
}

pub fn run(args: &MergeCheckArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let base = Checkpoint::open_hf(&args.base)?;
    let mut adapter = Checkpoint::open_adapter(&args.adapter)?;
    adapter.name_experts_like(&|n| base.tensor(n).is_some());
    let merged = Checkpoint::open_hf(&args.merged)?;
    let MergeReport { modules, findings } = crate::pipeline::run::merge_algebra(&base, &adapter, &merged)?;
    let fail_level = if args.strict { Severity::Warning } else { Severity::Error };
    let lint = lint::report(args.merged.display().to_string(), findings, fail_level);
    let c = &adapter.config;
    let scale_rule = format!(
        "s = lora_alpha / {} = {} / {}{}",
        if c.use_rslora { "sqrt(r)" } else { "r" },
        c.alpha,
        c.r,
        if c.use_dora { " (DoRA: magnitude / row norm applied)" } else { "" }
    );
    let report = MergeCheckReport {
        schema_version: MERGE_SCHEMA_VERSION,
        base: args.base.display().to_string(),
        adapter: args.adapter.display().to_string(),
        merged: args.merged.display().to_string(),
        scale_rule,
        modules: &modules,
        lint: &lint,
    };
    report::print(printer, &report, args.json)?;
    Ok(Outcome::of(lint.verdict, false))
}

/// Module rows the text lists per status before it counts the rest (`--verbose` lists all):
/// the same rule as the findings below them.
const SHOWN_PER_STATUS: usize = crate::checks::SHOWN_PER_ID;

impl MergeCheckReport<'_> {
    fn render(&self, verbose: bool) -> String {
        let mut s = format!(
            "{}\n{:<44} {:>4} {:>8} {:>10} {:>10} {:>9}  status\n",
            self.scale_rule, "module", "r", "scale", "‖s·B·A‖", "residual", "fit c"
        );
        // Faults first, then the rows that merged correctly; each status's first rows listed.
        let mut statuses: Vec<&str> = Vec::new();
        for m in self.modules {
            if !statuses.contains(&m.status) {
                statuses.push(m.status);
            }
        }
        statuses.sort_by_key(|st| st.starts_with("ok"));
        for st in statuses {
            let rows: Vec<&merge::ModuleRow> = self.modules.iter().filter(|m| m.status == st).collect();
            let shown = if verbose { rows.len() } else { rows.len().min(SHOWN_PER_STATUS) };
            for m in &rows[..shown] {
                s.push_str(&format!(
                    "{:<44} {:>4} {:>8.4} {:>10} {:>10} {:>9.4}  {}\n",
                    m.module,
                    m.rank,
                    m.scale,
                    fmt_num(m.delta_norm),
                    fmt_num(m.residual),
                    m.fitted_scale,
                    m.status
                ));
            }
            if rows.len() > shown {
                let fits = rows[shown..].iter().map(|m| m.fitted_scale).filter(|c| c.is_finite());
                let (lo, hi) = fits.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), c| (a.min(c), b.max(c)));
                let range = if lo <= hi { format!(", fit c {lo:.4} … {hi:.4}") } else { String::new() };
                s.push_str(&format!("… and {} more `{st}` modules{range} (--verbose lists them)\n", rows.len() - shown));
            }
        }
        let ok = self.modules.iter().filter(|m| m.status.starts_with("ok")).count();
        s.push_str(&format!("{ok} of {} adapted modules merged correctly\n\n", self.modules.len()));
        s.push_str(&lint::render_text(self.lint, verbose));
        s
    }
}

impl Report for MergeCheckReport<'_> {
    const KIND: &'static str = "merge-check";
    fn text(&self, _color: bool) -> String {
        self.render(false)
    }
    fn text_verbose(&self, _color: bool) -> String {
        self.render(true)
    }
}
