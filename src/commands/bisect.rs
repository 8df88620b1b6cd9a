//! `ckptcheck bisect MANIFEST` (or `bisect A B C …`) and `ckptcheck gate MANIFEST`: run the
//! lineage, name the first step that broke it and why; `gate` adds CI outputs.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::{BisectArgs, GateArgs};
use crate::commands::{Outcome, EXIT_COULD_NOT_RUN};
use crate::compare::run::Progress;
use crate::compare::thresholds::Status;
use crate::output::{Bar, Printer};
use crate::pipeline::manifest::Manifest;
use crate::pipeline::run::{self, Notes, PipelineReport};
use crate::report::{self, ReportWriter};

struct CliNotes<'a> {
    printer: &'a Printer,
    bar: Bar,
}

impl Notes for CliNotes<'_> {
    fn note(&self, msg: &str) {
        self.bar.note(self.printer, msg);
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
    let bar = Bar::new(printer);
    let notes = CliNotes { printer, bar };
    let r = run::run(m, &notes)?;
    notes.bar.0.finish_and_clear();
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
