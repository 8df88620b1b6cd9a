//! Every command's report, one family: a report is `Serialize` (its JSON, with a
//! `schema_version`) and implements `Report` (its terminal text, and HTML / JUnit where they
//! fit). Commands build a report and hand it to `print` (stdout: JSON under `--json`, else text)
//! and `write_file` (`--report F.html`, `--junit F.xml`, written atomically). The lineage
//! report's writers are `text.rs`, `html.rs` and `junit.rs`.

pub mod html;
pub mod junit;
pub mod text;

use std::io::Write;
use std::path::Path;

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

/// Prints the report on stdout: JSON under `--json`, else text (coloured on a terminal).
pub fn print<R: Report>(printer: &Printer, r: &R, as_json: bool) -> Result<()> {
    use std::io::IsTerminal;
    let out = if as_json { json(r)? } else { r.text(std::io::stdout().is_terminal()) };
    printer.data(&out);
    Ok(())
}

/// Writes the report to `path` in `format`, atomically, and notes it on stderr.
pub fn write_file<R: Report>(printer: &Printer, r: &R, format: FileFormat, path: &Path) -> Result<()> {
    let (body, name) = match format {
        FileFormat::Html => (r.html(), "HTML"),
        FileFormat::Junit => (r.junit(), "JUnit"),
    };
    let body = body.ok_or_else(|| Error::Serialize { what: R::KIND, detail: format!("this report has no {name} form") })?;
    write_atomic(path, &body)?;
    printer.note(&format!("wrote {}", path.display()));
    Ok(())
}

impl Report for PipelineReport {
    const KIND: &'static str = "lineage";
    fn text(&self, color: bool) -> String {
        text::Text { color }.render(self)
    }
    fn html(&self) -> Option<String> {
        Some(html::Html.render(self))
    }
    fn junit(&self) -> Option<String> {
        Some(junit::Junit.render(self))
    }
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, then rename,
/// so a reader never sees half a report.
pub fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(contents.as_bytes()).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
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
    fn escape_handles_markup_and_control_chars() {
        assert_eq!(super::escape("<|im_end|> & \"x\"\u{1}"), "&lt;|im_end|&gt; &amp; &quot;x&quot;\\u{1}");
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
