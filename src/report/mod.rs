//! Every command's report, one family: a report is `Serialize` (its JSON, with a
//! `schema_version`) and implements `Report` (its terminal text, and HTML / JUnit where they
//! fit). Commands build a report and hand it to `print` (stdout: JSON under `--json`, else text)
//! and to `Outputs` (`--report F.html`, `--junit F.xml`), the one place that writes files. The
//! lineage report's writers are `text.rs`, `html.rs` and `junit.rs`.
//!
//! An output never destroys an input: `Outputs` knows every path the command reads and refuses
//! (before the run, and again just before writing) an output that resolves to one of them or lies
//! inside an input checkpoint directory, one that exists and is not a regular file, and two
//! outputs naming the same file. Files are written atomically with mode 0644 less the umask.

pub mod blame;
pub mod html;
pub mod inspect;
pub mod junit;
pub mod text;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::output::Printer;
use crate::pipeline::run::PipelineReport;

/// A command's report.
pub trait Report: Serialize {
    /// What it is, for messages ("compare", "lineage").
    const KIND: &'static str;
    /// The terminal rendering; `color` adds ANSI colours.
    fn text(&self, color: bool) -> String;
    /// The terminal rendering with every grouped finding and row listed (`--verbose`); a report
    /// that groups nothing prints its `text`.
    fn text_verbose(&self, color: bool) -> String {
        self.text(color)
    }
    /// A self-contained HTML page, where the report has one.
    fn html(&self) -> Option<String> {
        None
    }
    /// JUnit XML, where the report has one.
    fn junit(&self) -> Option<String> {
        None
    }
}

/// Files a report can be written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Html,
    Junit,
}

/// The report as pretty JSON; a serialization failure is an error, never a made-up document.
pub fn json<R: Report>(r: &R) -> Result<String> {
    serde_json::to_string_pretty(r).map_err(|e| Error::Serialize { what: R::KIND, detail: e.to_string() })
}

/// Prints the report on stdout: JSON under `--json`, else text (coloured on a terminal; every
/// grouped line listed under `--verbose`).
pub fn print<R: Report>(printer: &Printer, r: &R, as_json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let color = std::io::stdout().is_terminal();
    let out = match (as_json, printer.verbose) {
        (true, _) => json(r)?,
        (false, true) => r.text_verbose(color),
        (false, false) => r.text(color),
    };
    printer.data(&out);
    Ok(())
}

/// One path the command reads, resolved.
#[derive(Debug)]
struct Input {
    /// What it is, for messages ("the manifest", "the checkpoint file").
    role: &'static str,
    /// As the command was given it (or, for a file of a checkpoint directory, as listed).
    given: PathBuf,
    /// With every symlink resolved.
    resolved: PathBuf,
    /// A checkpoint directory: nothing inside it is written either.
    dir: bool,
}

/// One requested output.
#[derive(Debug)]
struct Planned {
    flag: &'static str,
    path: PathBuf,
    format: FileFormat,
}

/// The files a command writes, checked against the files it reads. Build it with every input
/// (`read`, `checkpoint`) before the run, `plan` each output flag (checked at once, so a bad path
/// fails before any model runs), then `write` the report once it exists (checked again).
#[derive(Debug, Default)]
pub struct Outputs {
    inputs: Vec<Input>,
    planned: Vec<Planned>,
}

impl Outputs {
    pub fn new() -> Outputs {
        Outputs::default()
    }

    /// A file the command reads (manifest, prompts, thresholds); `role` names it in messages.
    pub fn read(&mut self, role: &'static str, path: &Path) {
        if let Ok(resolved) = std::fs::canonicalize(path) {
            let dir = resolved.is_dir();
            self.inputs.push(Input { role, given: path.to_path_buf(), resolved, dir });
        }
    }

    /// A checkpoint path as a command takes it: a directory (every file in it, symlinks resolved,
    /// is an input, and nothing is written inside it), a `.gguf` file, a `.safetensors` file (its
    /// directory is what is read), or `BASE+ADAPTER`.
    pub fn checkpoint(&mut self, path: &Path) {
        // A Hub id is protected as the cache snapshot it names.
        let located = crate::format::hub::locate(path).unwrap_or_else(|_| path.to_path_buf());
        let Ok(resolved) = std::fs::canonicalize(&located) else {
            if let Some((base, adapter)) = crate::checkpoint::split_base_adapter(path) {
                self.checkpoint(&base);
                self.checkpoint(&adapter);
            }
            // A path that does not exist is not read: there is nothing to protect.
            return;
        };
        if !resolved.is_dir() {
            self.inputs.push(Input { role: "the checkpoint file", given: path.to_path_buf(), resolved: resolved.clone(), dir: false });
            if resolved.extension().is_some_and(|e| e == "safetensors") {
                if let Some(d) = resolved.parent() {
                    self.checkpoint(d);
                }
            }
            return;
        }
        // The files of the directory, each resolved: a side file or shard may be a symlink to a
        // file elsewhere (the Hugging Face cache links snapshots to blobs).
        for e in std::fs::read_dir(&resolved).into_iter().flatten().flatten() {
            if let Ok(r) = std::fs::canonicalize(e.path()) {
                if !r.starts_with(&resolved) {
                    self.inputs.push(Input { role: "the checkpoint file", given: e.path(), resolved: r, dir: false });
                }
            }
        }
        self.inputs.push(Input { role: "checkpoint directory", given: path.to_path_buf(), resolved, dir: true });
    }

    /// Requests `--flag path` in `format` (nothing when `path` is `None`); refused at once when it
    /// would replace an input, is not a regular file, or is already an output.
    pub fn plan(&mut self, flag: &'static str, path: Option<&Path>, format: FileFormat) -> Result<()> {
        let Some(path) = path else { return Ok(()) };
        self.planned.push(Planned { flag, path: path.to_path_buf(), format });
        self.check().map(|_| ())
    }

    /// Every planned output's resolved path, or the first refusal.
    fn check(&self) -> Result<Vec<PathBuf>> {
        let mut done: Vec<(PathBuf, &'static str)> = Vec::new();
        for p in &self.planned {
            let refuse = |reason: String| Error::Output { flag: p.flag, path: p.path.clone(), reason };
            let resolved = resolve_output(&p.path).map_err(refuse)?;
            let literal = std::path::absolute(&p.path).unwrap_or_else(|_| p.path.clone());
            let via = if resolved != literal { format!(" (it resolves to `{}`)", resolved.display()) } else { String::new() };
            for i in &self.inputs {
                if i.dir && resolved.starts_with(&i.resolved) {
                    return Err(refuse(format!(
                        "it is inside the checkpoint directory `{}`{via}, an input of this run; write reports elsewhere",
                        i.given.display()
                    )));
                }
                if !i.dir && resolved == i.resolved {
                    return Err(refuse(format!("it is {} `{}`{via}, an input of this run", i.role, i.given.display())));
                }
            }
            if let Some((_, other)) = done.iter().find(|(r, _)| *r == resolved) {
                return Err(refuse(format!("`{other}` writes the same file{via}; give each output its own path")));
            }
            done.push((resolved, p.flag));
        }
        Ok(done.into_iter().map(|(r, _)| r).collect())
    }

    /// Writes every planned output of `r` (checked again: the run may have taken hours), each
    /// atomically, and notes it on stderr.
    pub fn write<R: Report>(&self, printer: &Printer, r: &R) -> Result<()> {
        let targets = self.check()?;
        for (p, target) in self.planned.iter().zip(targets) {
            let (body, name) = match p.format {
                FileFormat::Html => (r.html(), "HTML"),
                FileFormat::Junit => (r.junit(), "JUnit"),
            };
            let body = body.ok_or_else(|| Error::Serialize { what: R::KIND, detail: format!("this report has no {name} form") })?;
            write_atomic(&target, &body)?;
            printer.note(&format!("wrote {}", p.path.display()));
        }
        Ok(())
    }
}

/// Where writing `path` lands: the path with its symlinks resolved, or, when it does not exist
/// yet, its directory resolved joined with its name. `Err` says why it cannot be written.
fn resolve_output(path: &Path) -> std::result::Result<PathBuf, String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => std::fs::canonicalize(path).map_err(|e| e.to_string()),
        Ok(m) => Err(format!("it exists and is {}; only a regular file is ever replaced", crate::format::file_type_name(m.file_type()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if std::fs::symlink_metadata(path).is_ok() {
                return Err("it is a symbolic link to a file that does not exist".into());
            }
            let name = path.file_name().ok_or_else(|| "it does not name a file".to_string())?;
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let dir = std::fs::canonicalize(dir).map_err(|e| format!("its directory `{}`: {e}", dir.display()))?;
            Ok(dir.join(name))
        }
        Err(e) => Err(e.to_string()),
    }
}

impl Report for PipelineReport {
    const KIND: &'static str = "lineage";
    fn text(&self, color: bool) -> String {
        text::Text { color, verbose: false }.render(self)
    }
    fn text_verbose(&self, color: bool) -> String {
        text::Text { color, verbose: true }.render(self)
    }
    fn html(&self) -> Option<String> {
        Some(html::Html.render(self))
    }
    fn junit(&self) -> Option<String> {
        Some(junit::Junit.render(self))
    }
}

/// Report files are readable by everyone, as any file a tool writes (0644 less the umask):
/// tempfile's own default, 0600, would leave CI artifacts unreadable to the web server or the
/// next job.
#[cfg(unix)]
const REPORT_MODE: u32 = 0o644;

/// Writes `contents` to `path` atomically: a temporary file in the same directory, created with
/// `REPORT_MODE` (the kernel applies the umask), then rename, so a reader never sees half a
/// report. Callers check the path first (`Outputs`).
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(REPORT_MODE));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(contents.as_bytes()).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// How many findings of `severity` a step has, its merge-check's included, a collector's summary
/// counted as the findings it stands for (`Finding::weight`): the bisect table's lint columns.
pub fn step_findings(s: &crate::pipeline::run::StepReport, severity: crate::checks::Severity) -> u64 {
    s.findings.iter().chain(s.merge.iter().flat_map(|m| m.findings.iter())).filter(|f| f.severity == severity).map(|f| f.weight()).sum()
}

/// A count for people: `2295552` → `2.30 M` (k, M, B: how parameter counts are spoken); exact
/// below 10 000. JSON keeps the exact number.
pub fn count(n: u64) -> String {
    human(n as f64, 1000.0, &["", " k", " M", " B", " T"])
}

/// A size for people: `9182208` → `8.76 MiB` (powers of 1024, as file managers and `ls -h`).
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    human(n as f64, 1024.0, &[" B", " KiB", " MiB", " GiB", " TiB"])
}

/// Three significant digits in the largest unit that keeps the number ≥ 1.
fn human(mut v: f64, base: f64, units: &[&str]) -> String {
    if v < 10_000.0 && units[0].is_empty() {
        return format!("{v}");
    }
    let mut u = 0;
    while v >= base && u + 1 < units.len() {
        v /= base;
        u += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$}{}", units[u])
}

/// Escapes text for XML and HTML.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // XML 1.0 forbids most control characters.
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => o.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    /// Regression: the JSON writer turned a serialization error into a made-up `{"error": …}`
    /// document on stdout; now it is an error naming the report.
    #[test]
    fn a_report_that_cannot_serialize_is_an_error_not_fake_json() {
        #[derive(serde::Serialize)]
        struct Bad(std::collections::BTreeMap<(u8, u8), u8>);
        impl super::Report for Bad {
            const KIND: &'static str = "test";
            fn text(&self, _: bool) -> String {
                String::new()
            }
        }
        let e = super::json(&Bad([((1, 2), 3)].into_iter().collect())).unwrap_err().to_string();
        assert!(e.starts_with("cannot write the test report:"), "{e}");
    }

    #[test]
    fn counts_and_sizes_read_like_people_write_them() {
        assert_eq!(super::count(42), "42");
        assert_eq!(super::count(9_999), "9999");
        assert_eq!(super::count(2_295_552), "2.30 M");
        assert_eq!(super::count(98_304), "98.3 k");
        assert_eq!(super::count(7_615_616_512), "7.62 B");
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(9_182_208), "8.76 MiB");
        assert_eq!(super::bytes(1 << 30), "1.00 GiB");
    }

    #[test]
    fn escape_handles_markup_and_control_chars() {
        assert_eq!(super::escape("<|im_end|> & \"x\"\u{1}"), "&lt;|im_end|&gt; &amp; &quot;x&quot;\\u{1}");
    }

    fn refusal(o: &mut super::Outputs, flag: &'static str, p: &std::path::Path) -> String {
        match o.plan(flag, Some(p), super::FileFormat::Html) {
            Err(e @ crate::error::Error::Output { .. }) => e.to_string(),
            other => panic!("expected a refusal for {}, got {other:?}", p.display()),
        }
    }

    #[cfg(unix)]
    #[test]
    fn outputs_refuse_inputs_checkpoint_files_and_each_other() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m.toml");
        std::fs::write(&m, "").unwrap();
        let ckpt = d.path().join("ckpt");
        std::fs::create_dir(&ckpt).unwrap();
        std::fs::write(ckpt.join("config.json"), "{}").unwrap();
        // A side file linked from elsewhere, as in the Hugging Face cache.
        let blob = d.path().join("blob");
        std::fs::write(&blob, "{}").unwrap();
        std::os::unix::fs::symlink(&blob, ckpt.join("tokenizer.json")).unwrap();
        let inputs = || {
            let mut o = super::Outputs::new();
            o.read("the manifest", &m);
            o.checkpoint(&ckpt);
            o
        };
        let e = refusal(&mut inputs(), "--report", &m);
        assert!(e.starts_with("refusing to write --report `") && e.contains("it is the manifest"), "{e}");
        let e = refusal(&mut inputs(), "--report", &ckpt.join("config.json"));
        assert!(e.contains("inside the checkpoint directory"), "{e}");
        let e = refusal(&mut inputs(), "--report", &ckpt.join("new.html"));
        assert!(e.contains("inside the checkpoint directory"), "a new file in a checkpoint directory changes the checkpoint: {e}");
        let e = refusal(&mut inputs(), "--report", &blob);
        assert!(e.contains("the checkpoint file") && e.contains("tokenizer.json"), "{e}");
        inputs().plan("--report", Some(&d.path().join("r.html")), super::FileFormat::Html).unwrap();
        let mut o = super::Outputs::new();
        o.plan("--junit", Some(&d.path().join("r.xml")), super::FileFormat::Junit).unwrap();
        let e = refusal(&mut o, "--report", &d.path().join("r.xml"));
        assert!(e.contains("`--junit` writes the same file"), "{e}");
        let e = refusal(&mut super::Outputs::new(), "--report", d.path());
        assert!(e.contains("it exists and is a directory"), "{e}");
        let e = refusal(&mut super::Outputs::new(), "--report", &d.path().join("no/such/dir/r.html"));
        assert!(e.contains("its directory"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn reports_are_written_0644_less_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.html");
        super::write_atomic(&p, "x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // The test process's umask is unknown here; the mode is 0644 with some bits cleared, and
        // never tempfile's 0600 when the umask allows group/other read.
        assert_eq!(mode & !0o644, 0, "{mode:o}");
        assert_eq!(mode & 0o600, 0o600, "{mode:o}");
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        super::write_atomic(&p, "one").unwrap();
        super::write_atomic(&p, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1, "no temp files left behind");
    }
}
