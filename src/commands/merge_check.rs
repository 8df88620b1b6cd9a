//! `ckptcheck merge-check --base B --adapter A --merged M`: static LoRA merge algebra.

use serde::Serialize;

use crate::checks::merge::{self, MergeReport};
use crate::checks::Severity;
use crate::cli::MergeCheckArgs;
use crate::commands::{lint, open_hf, Outcome};
use crate::format::lora::Adapter;
use crate::output::Printer;

/// Version of the `merge-check --json` layout.
pub const MERGE_SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
struct Report<'a> {
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
    let base = open_hf(&args.base)?;
    let adapter = Adapter::open(&args.adapter)?;
    let merged = open_hf(&args.merged)?;
    let MergeReport { modules, findings } = merge::check(&base, &adapter, &merged)?;
    let fail_level = if args.strict { Severity::Warning } else { Severity::Error };
    let report = lint::report(args.merged.display().to_string(), findings, fail_level);
    let c = &adapter.config;
    let scale_rule = format!(
        "s = lora_alpha / {} = {} / {}{}",
        if c.use_rslora { "sqrt(r)" } else { "r" },
        c.alpha,
        c.r,
        if c.use_dora { " (DoRA: magnitude / row norm applied)" } else { "" }
    );
    if args.json {
        printer.data(&serde_json::to_string_pretty(&Report {
            schema_version: MERGE_SCHEMA_VERSION,
            base: args.base.display().to_string(),
            adapter: args.adapter.display().to_string(),
            merged: args.merged.display().to_string(),
            scale_rule,
            modules: &modules,
            lint: &report,
        })?);
    } else {
        let mut s = format!(
            "{scale_rule}\n{:<44} {:>4} {:>8} {:>10} {:>10} {:>9}  status\n",
            "module", "r", "scale", "‖s·B·A‖", "residual", "fit c"
        );
        for m in &modules {
            s.push_str(&format!(
                "{:<44} {:>4} {:>8.4} {:>10.3e} {:>10.2e} {:>9.4}  {}\n",
                m.module, m.rank, m.scale, m.delta_norm, m.residual, m.fitted_scale, m.status
            ));
        }
        let ok = modules.iter().filter(|m| m.status == "ok").count();
        s.push_str(&format!("{ok} of {} adapted modules merged correctly\n\n", modules.len()));
        s.push_str(&lint::render_text(&report));
        printer.data(&s);
    }
    Ok(if report.verdict == "fail" { Outcome::Findings } else { Outcome::Clean })
}
