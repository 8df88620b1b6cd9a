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
/// not a terminal (a CI log gets the notes, never bar redraws). Implements the compare
/// procedure's `Progress`: each stage shows its count, an ETA, and the token positions per
/// second it runs (both models of a pair count a position once).
pub struct Bar(pub indicatif::ProgressBar, std::sync::Mutex<Rate>);

/// The current stage's name, when it began, and the token positions it has run.
struct Rate {
    stage: String,
    since: std::time::Instant,
    tokens: usize,
}

impl Bar {
    pub fn new(printer: &Printer) -> Bar {
        use std::io::IsTerminal;
        let rate = std::sync::Mutex::new(Rate { stage: String::new(), since: std::time::Instant::now(), tokens: 0 });
        if printer.quiet || !std::io::stderr().is_terminal() {
            return Bar(indicatif::ProgressBar::hidden(), rate);
        }
        let b = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>34} [{bar:30}] {pos}/{len} · ETA {eta}") {
            b.set_style(style.progress_chars("=> "));
        }
        Bar(b, rate)
    }

    /// Prints a note without tearing the bar.
    pub fn note(&self, printer: &Printer, msg: &str) {
        self.0.suspend(|| printer.note(msg));
    }
}

/// `stage · 1234 tok/s` once the stage has run tokens for a moment.
fn rate_message(r: &Rate) -> String {
    let secs = r.since.elapsed().as_secs_f64();
    if r.tokens == 0 || secs < 0.05 {
        return r.stage.clone();
    }
    format!("{} · {:.0} tok/s", r.stage, r.tokens as f64 / secs)
}

impl crate::compare::run::Progress for Bar {
    fn stage(&self, name: &str, total: usize) {
        if let Ok(mut r) = self.1.lock() {
            *r = Rate { stage: name.to_string(), since: std::time::Instant::now(), tokens: 0 };
        }
        self.0.set_length(total as u64);
        self.0.set_position(0);
        self.0.set_message(name.to_string());
    }
    fn tick(&self) {
        self.0.inc(1);
    }
    fn tokens(&self, n: usize) {
        if let Ok(mut r) = self.1.lock() {
            r.tokens += n;
            self.0.set_message(rate_message(&r));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_message_shows_tokens_per_second_once_tokens_ran() {
        let mut r = super::Rate { stage: "scoring".into(), since: std::time::Instant::now(), tokens: 0 };
        assert_eq!(super::rate_message(&r), "scoring");
        r.since -= std::time::Duration::from_secs(2);
        r.tokens = 1000;
        assert_eq!(super::rate_message(&r), "scoring · 500 tok/s");
    }
}
