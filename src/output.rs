//! The one place that writes to the terminal: data to stdout, notes and progress to stderr.
//! Commands build strings and hand them here; nothing else calls `println!`.

use std::io::Write;

#[derive(Debug, Clone, Copy)]
pub struct Printer {
    /// Suppress notes on stderr (`--json` keeps stderr for errors only).
    pub quiet: bool,
    /// `--verbose`: text reports list every grouped finding and row.
    pub verbose: bool,
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

/// The progress bar on stderr for long commands; hidden under `--json` (quiet) or when stderr is
/// not a terminal. Implements the compare procedure's `Progress`.
pub struct Bar(pub indicatif::ProgressBar);

impl Bar {
    pub fn new(printer: &Printer) -> Bar {
        use std::io::IsTerminal;
        if printer.quiet || !std::io::stderr().is_terminal() {
            return Bar(indicatif::ProgressBar::hidden());
        }
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len}") {
            b.set_style(style.progress_chars("=> "));
        }
        Bar(b)
    }

    /// Prints a note without tearing the bar.
    pub fn note(&self, printer: &Printer, msg: &str) {
        self.0.suspend(|| printer.note(msg));
    }
}

impl crate::compare::run::Progress for Bar {
    fn stage(&self, name: &str, total: usize) {
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }
    fn tick(&self) {
        self.0.inc(1);
    }
}
