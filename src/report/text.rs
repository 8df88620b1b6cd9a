//! The terminal table for `bisect` / `gate`: one row per step, then the verdict in words.

use crate::pipeline::run::PipelineReport;
use crate::verdict::Verdict;

pub struct Text {
    /// ANSI colours (only when stdout is a terminal).
    pub color: bool,
}

impl Text {
    fn status(&self, s: Verdict, error: bool) -> String {
        let (word, code) = match (error, s) {
            (true, _) => ("ERROR", "35"),
            (_, Verdict::Pass) => ("pass", "32"),
            (_, Verdict::Warn) => ("warn", "33"),
            (_, Verdict::Fail) => ("FAIL", "31"),
        };
        if self.color {
            format!("\x1b[{code}m{word:<5}\x1b[0m")
        } else {
            format!("{word:<5}")
        }
    }
}

impl Text {
    pub fn render(&self, r: &PipelineReport) -> String {
        let mut o = format!("lineage {} (reference: {})\n", r.name, r.reference);
        o.push_str(&format!(
            "{:<3} {:<20} {:<5} {:>6} {:>6} {:>8} {:>7} {:>6} {:>15}  {}\n",
            "#", "step", "", "lint E", "lint W", "KL mean", "KL p99", "top1", "P(EOS) ref→cand", "stops"
        ));
        for s in &r.steps {
            // A summary finding stands for `more` findings (`Finding::weight`).
            let count = |severity| {
                s.findings
                    .iter()
                    .chain(s.merge.iter().flat_map(|m| m.findings.iter()))
                    .filter(|f| f.severity == severity)
                    .map(|f| f.weight())
                    .sum::<u64>()
            };
            let (errs, warns) = (count(crate::checks::Severity::Error), count(crate::checks::Severity::Warning));
            let (kl, p99, top1, eos, stops) = match &s.vs_reference {
                Some(c) => (
                    crate::compare::metrics::fmt_num(c.summary.kl.mean),
                    format!("{:.3}", c.summary.kl.p99),
                    format!("{:.0}%", 100.0 * c.summary.top1),
                    format!("{:.3}→{:.3}", c.summary.p_eos_ref_mean, c.summary.p_eos_cand_mean),
                    format!("{:.0}%", 100.0 * c.summary.cand_stop_rate),
                ),
                None => ("-".into(), "-".into(), "-".into(), if s.is_reference { "(reference)".into() } else { "-".into() }, "-".into()),
            };
            o.push_str(&format!(
                "{:<3} {:<20} {} {:>6} {:>6} {:>8} {:>7} {:>6} {:>15}  {}\n",
                s.index,
                s.label.chars().take(20).collect::<String>(),
                self.status(s.status, s.error.is_some()),
                errs,
                warns,
                kl,
                p99,
                top1,
                eos,
                stops
            ));
            if let Some(e) = &s.error {
                o.push_str(&format!("    could not run: {e}\n"));
            }
        }
        o.push('\n');
        let unrun: Vec<String> = r.steps.iter().filter(|s| s.error.is_some()).map(|s| format!("{} `{}`", s.index, s.label)).collect();
        if !unrun.is_empty() {
            o.push_str(&format!(
                "incomplete: step {} could not run (see above); the verdict covers the other steps\n",
                unrun.join(", step ")
            ));
        }
        match (&r.first_bad_step, &r.cause) {
            (Some(step), Some(cause)) => {
                let i = r.steps.iter().find(|s| &s.label == step).map(|s| s.index).unwrap_or(0);
                o.push_str(&format!("step {i} `{step}` breaks it: {cause}\n"));
                if let Some(c) = r.causes.first() {
                    o.push_str(&format!("  cause {} ({} confidence); fix: {}\n", c.cause_id, c.confidence.name(), c.fix));
                }
                if let Some(b) = r.steps.iter().find(|s| &s.label == step).and_then(|s| s.blame.as_ref()) {
                    o.push_str(&super::blame::render(b));
                }
            }
            (Some(step), None) => o.push_str(&format!("step `{step}` breaks it\n")),
            (None, _) => o.push_str(&format!(
                "no {}step crossed a threshold{}\n",
                if unrun.is_empty() { "" } else { "step that ran " },
                if r.verdict == Verdict::Warn { " (warnings above)" } else { "" }
            )),
        }
        o
    }
}
