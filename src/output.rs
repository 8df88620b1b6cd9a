//! The one place that writes to the terminal: data to stdout, notes and progress to stderr.
//! Commands build strings and hand them here; nothing else calls `println!`.

use std::io::Write;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// Suppress notes on stderr (`--json` keeps stderr for errors only).
    pub quiet: bool,
}

impl Printer {
    /// Writes command output to stdout. A closed pipe (`| head`) is not an error worth a panic.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// A progress or context note on stderr.
    pub fn note(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    /// An error on stderr, always shown.
    pub fn error(&self, text: &str) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}
