//! `ckptcheck bisect MANIFEST` (or `bisect A B C …`) and `ckptcheck gate MANIFEST`: run the
//! lineage, name the first step that broke it and why; `gate` adds CI outputs.

use crate::cli::{BisectArgs, GateArgs};
use crate::commands::{Outcome, EXIT_COULD_NOT_RUN};
use crate::compare::run::Progress;
use crate::output::{Bar, Printer};
use crate::pipeline::manifest::Manifest;
use crate::pipeline::run::{self, Notes, PipelineReport};
use crate::pipeline::train_log::RunDir;
use crate::report::{self, FileFormat, Outputs};
use std::path::{Path, PathBuf};

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

fn manifest(inputs: &[PathBuf], base: Option<&Path>) -> anyhow::Result<Manifest> {
    let m = match inputs {
        [one] if one.is_file() => Manifest::load(one)?,
        [run, exports @ ..] if RunDir::looks_like_run(run) => Manifest::from_run(run, base, exports)?,
        many => Manifest::from_paths(many)?,
    };
    if base.is_some() && m.run.is_none() {
        anyhow::bail!("--base names a training run's base model, and {} is not a training run directory", inputs[0].display());
    }
    if base.is_some() && m.path.is_some() {
        anyhow::bail!("--base: give the base in the manifest's [run] table (`base = \"…\"`)");
    }
    Ok(m)
}

fn execute(m: &Manifest, printer: &Printer) -> anyhow::Result<PipelineReport> {
    let bar = Bar::new(printer);
    let notes = CliNotes { printer, bar };
    let r = match &m.run {
        Some(_) => crate::pipeline::training::run(m, &notes)?,
        None => run::run(m, &notes)?,
    };
    notes.bar.0.finish_and_clear();
    Ok(r)
}

/// Exit code: 2 when a step could not run, else 0/1 by verdict.
pub fn exit_code(r: &PipelineReport, strict: bool) -> u8 {
    if r.incomplete {
        EXIT_COULD_NOT_RUN
    } else {
        Outcome::of(r.verdict, strict).exit_code()
    }
}

/// The `--junit` / `--report` files, checked against every path the manifest reads before
/// anything runs.
fn outputs(m: &Manifest, junit: Option<&Path>, html: Option<&Path>) -> anyhow::Result<Outputs> {
    let mut o = Outputs::new();
    for (role, p) in m.input_files() {
        o.read(role, p);
    }
    for p in m.checkpoint_paths() {
        o.checkpoint(p);
    }
    o.plan("--junit", junit, FileFormat::Junit)?;
    o.plan("--report", html, FileFormat::Html)?;
    Ok(o)
}

/// Writes the requested files, then prints the report.
fn finish(r: &PipelineReport, printer: &Printer, outputs: &Outputs, json: bool) -> anyhow::Result<()> {
    outputs.write(printer, r)?;
    report::print(printer, r, json)?;
    Ok(())
}

pub fn bisect(args: &BisectArgs, printer: &Printer) -> anyhow::Result<u8> {
    let mut m = manifest(&args.inputs, args.base.as_deref())?;
    m.apply(&args.run.overrides())?;
    let o = outputs(&m, args.junit.as_deref(), args.report.as_deref())?;
    let r = execute(&m, printer)?;
    finish(&r, printer, &o, args.json)?;
    Ok(exit_code(&r, args.strict))
}

pub fn gate(args: &GateArgs, printer: &Printer) -> anyhow::Result<u8> {
    let mut m = Manifest::load(&args.manifest)?;
    m.apply(&args.run.overrides())?;
    let o = outputs(&m, args.junit.as_deref(), args.report.as_deref())?;
    let r = execute(&m, printer)?;
    finish(&r, printer, &o, args.json)?;
    Ok(exit_code(&r, args.strict))
}
