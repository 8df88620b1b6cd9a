//! `ckptcheck merge-check --base B --adapter A --merged M`: static LoRA merge algebra.

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::checks::merge::{self, MergeReport};
use crate::checks::Severity;
use crate::cli::MergeCheckArgs;
use crate::commands::{lint, Outcome};
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
    let adapter = Checkpoint::open_adapter(&args.adapter)?;
    let merged = Checkpoint::open_hf(&args.merged)?;
    let MergeReport { modules, findings } = merge::check(&base, &adapter, &merged)?;
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

impl Report for MergeCheckReport<'_> {
    const KIND: &'static str = "merge-check";
    fn text(&self, _color: bool) -> String {
        let mut s = format!(
            "{}\n{:<44} {:>4} {:>8} {:>10} {:>10} {:>9}  status\n",
            self.scale_rule, "module", "r", "scale", "‖s·B·A‖", "residual", "fit c"
        );
        for m in self.modules {
            s.push_str(&format!(
                "{:<44} {:>4} {:>8.4} {:>10.3e} {:>10.2e} {:>9.4}  {}\n",
                m.module, m.rank, m.scale, m.delta_norm, m.residual, m.fitted_scale, m.status
            ));
        }
        let ok = self.modules.iter().filter(|m| m.status == "ok").count();
        s.push_str(&format!("{ok} of {} adapted modules merged correctly\n\n", self.modules.len()));
        s.push_str(&lint::render_text(self.lint));
        s
    }
}
