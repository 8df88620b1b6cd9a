//! `ckptcheck bisect MANIFEST` (or `bisect A B C …`) and `ckptcheck gate MANIFEST`: run the
//! lineage, name the first step that broke it and why; `gate` adds CI outputs.

use std::io::IsTerminal;
use std::path::PathBuf;

use indicatif::ProgressBar;

use crate::cli::{BisectArgs, GateArgs};
use crate::commands::{Outcome, EXIT_COULD_NOT_RUN};
use crate::compare::run::Progress;
use crate::compare::thresholds::Status;
use crate::output::Printer;
use crate::pipeline::manifest::Manifest;
use crate::pipeline::run::{self, Notes, PipelineReport};
use crate::report::{self, ReportWriter};

struct CliNotes<'a> {
    printer: &'a Printer,
    bar: BarProgress,
}

struct BarProgress(ProgressBar);

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }
    fn tick(&self) {
        self.0.inc(1);
    }
}

impl Notes for CliNotes<'_> {
    fn note(&self, msg: &str) {
        self.bar.0.suspend(|| self.printer.note(msg));
    }
    fn progress(&self) -> &dyn Progress {
        &self.bar
    }
}

fn manifest(inputs: &[PathBuf]) -> anyhow::Result<Manifest> {
    Ok(match inputs {
        [one] if one.is_file() => Manifest::load(one)?,
        many => Manifest::from_paths(many)?,
    })
}

fn execute(m: &Manifest, printer: &Printer) -> anyhow::Result<PipelineReport> {
    let bar = if printer.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(indicatif::ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len}").unwrap().progress_chars("=> "));
        b
    };
    let notes = CliNotes { printer, bar: BarProgress(bar.clone()) };
    let r = run::run(m, &notes)?;
    bar.finish_and_clear();
    Ok(r)
}

fn outcome(r: &PipelineReport, strict: bool) -> Outcome {
    if r.verdict == Status::Fail || (strict && r.verdict == Status::Warn) {
        Outcome::Findings
    } else {
        Outcome::Clean
    }
}

/// Exit code: 2 when a step could not run, else 0/1 by verdict.
pub fn exit_code(r: &PipelineReport, strict: bool) -> u8 {
    if r.incomplete {
        EXIT_COULD_NOT_RUN
    } else {
        outcome(r, strict).exit_code()
    }
}

pub fn bisect(args: &BisectArgs, printer: &Printer) -> anyhow::Result<u8> {
    let m = manifest(&args.inputs)?;
    let r = execute(&m, printer)?;
    if args.json {
        printer.data(&report::Json.render(&r));
    } else {
        printer.data(&report::text::Text { color: std::io::stdout().is_terminal() }.render(&r));
    }
    Ok(exit_code(&r, args.strict))
}

pub fn gate(args: &GateArgs, printer: &Printer) -> anyhow::Result<u8> {
    let m = Manifest::load(&args.manifest)?;
    let r = execute(&m, printer)?;
    if let Some(p) = &args.junit {
        report::write_atomic(p, &report::junit::Junit.render(&r))?;
        printer.note(&format!("wrote {}", p.display()));
    }
    if let Some(p) = &args.report {
        report::write_atomic(p, &report::html::Html.render(&r))?;
        printer.note(&format!("wrote {}", p.display()));
    }
    if args.json {
        printer.data(&report::Json.render(&r));
    } else {
        printer.data(&report::text::Text { color: std::io::stdout().is_terminal() }.render(&r));
    }
    Ok(exit_code(&r, args.strict))
}
