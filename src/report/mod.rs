//! Writers for a lineage report: text (terminal), JSON, JUnit XML, self-contained HTML. One writer
//! each behind `ReportWriter`; files are written atomically (temp file + rename).

pub mod html;
pub mod junit;
pub mod text;

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::run::PipelineReport;

pub trait ReportWriter {
    fn render(&self, r: &PipelineReport) -> String;
}

pub struct Json;

impl ReportWriter for Json {
    fn render(&self, r: &PipelineReport) -> String {
        serde_json::to_string_pretty(r).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
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
