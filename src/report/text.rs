//! The terminal table for `bisect` / `gate`: one row per step (its numbers against the
//! reference, and why it warns or fails), a `vs <parent>` row under each step compared with its
//! parent, then the verdict in words. A NaN is printed as NaN, never as the mean of the finite
//! rest.

use crate::checks::Severity;
use crate::compare::metrics::fmt_num;
use crate::compare::run::CompareResult;
use crate::pipeline::run::PipelineReport;
use crate::verdict::Verdict;

pub struct Text {
    /// ANSI colours (only when stdout is a terminal).
    pub color: bool,
    /// Every reason of a row (else the first `REASONS_SHOWN` and a count).
    pub verbose: bool,
}

/// Reasons a row lists before it counts the rest: the most telling come first (`Metric` order,
/// then findings), and three keep a failing row on one or two lines.
const REASONS_SHOWN: usize = 3;

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

/// A KL statistic, or `NaN` when some positions had NaN KL (the statistic over the finite rest
/// would read as a healthy 0.000).
fn kl_stat(c: &CompareResult, v: f64) -> String {
    if c.summary.kl.nan > 0 || v.is_nan() {
        "NaN".into()
    } else {
        fmt_num(v)
    }
}

/// A ratio (`×1.175`), `NaN` as such.
fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        format!("{v}")
    }
}

/// The KL mean with its standard error (`0.108±0.008`; no `±` at 10 tokens or fewer).
fn kl_mean(c: &CompareResult) -> String {
    let mean = kl_stat(c, c.summary.kl.mean);
    match c.summary.estimates.kl_mean.se.filter(|se| se.is_finite() && c.summary.kl.nan == 0) {
        Some(se) => format!("{mean}±{}", fmt_num(se)),
        None => mean,
    }
}

/// One comparison in the columns the table uses: KL mean ± SE, KL p99, top-1, PPL ratio,
/// P(EOS), stops, flips (greedy answers changed / prompts).
fn columns(c: &CompareResult) -> [String; 7] {
    let s = &c.summary;
    let flips = if s.flips.prompts > 0 { format!("{}/{}", s.flips.changed, s.flips.prompts) } else { "-".into() };
    let (eos, stops) = if s.corpus {
        ("-".to_string(), "-".to_string())
    } else {
        (format!("{:.3}→{:.3}", s.p_eos_ref_mean, s.p_eos_cand_mean), format!("{:.0}%", 100.0 * s.cand_stop_rate))
    };
    [kl_mean(c), kl_stat(c, s.kl.p99), format!("{:.0}%", 100.0 * s.top1), ratio(s.ppl_ratio), eos, stops, flips]
}

/// One table row, a step's or its `vs <parent>` line's: `status` comes padded to 5 columns (its
/// ANSI colour codes would throw `{:<5}` off), trailing blanks trimmed.
fn row(index: &str, label: &str, status: &str, kind: &str, lint: &[String; 2], cols: &[String; 7], reason: &str) -> String {
    let [kl, p99, top1, ppl, eos, stops, flips] = cols;
    let line = format!(
        "{index:<3} {:<20} {status} {kind:<10} {:>6} {:>6} {kl:>17} {p99:>8} {top1:>5} {ppl:>6} {eos:>15} {stops:>5} {flips:>5}  {reason}",
        label.chars().take(20).collect::<String>(),
        lint[0],
        lint[1],
    );
    format!("{}\n", line.trim_end())
}

impl Text {
    /// The reasons at the worst level among them (a failing step's warnings are noise in the
    /// table; the JSON keeps every reason), the first `REASONS_SHOWN` unless verbose, joined.
    fn worst_reasons<'a>(&self, reasons: impl Iterator<Item = (Verdict, &'a str)> + Clone) -> String {
        let worst = reasons.clone().map(|(v, _)| v).max().unwrap_or(Verdict::Pass);
        let at_worst: Vec<&str> = reasons.filter(|(v, _)| *v == worst).map(|(_, t)| t).collect();
        let shown = if self.verbose { at_worst.len() } else { at_worst.len().min(REASONS_SHOWN) };
        let mut o = at_worst[..shown].join("; ");
        if at_worst.len() > shown {
            o.push_str(&format!("; +{} more (--verbose)", at_worst.len() - shown));
        }
        o
    }

    pub fn render(&self, r: &PipelineReport) -> String {
        let mut o = format!("lineage {} (reference: {})\n", r.name, r.reference);
        if let Some(c) = r.steps.iter().find_map(|s| s.vs_reference.as_ref()?.corpus.as_ref()) {
            o.push_str(&format!(
                "scored on {}: {} chunks of {} tokens, the second half of each (as llama-perplexity -c {})\n",
                c.source.display(),
                c.chunks,
                c.ctx,
                c.ctx
            ));
        }
        let head = ["KL mean ± SE", "KL p99", "top1", "PPL ×", "P(EOS) ref→cand", "stops", "flips"].map(String::from);
        o.push_str(&row("#", "step", &format!("{:<5}", ""), "kind", &["lint E".into(), "lint W".into()], &head, "reason"));
        for s in &r.steps {
            let (errs, warns) = (super::step_findings(s, Severity::Error), super::step_findings(s, Severity::Warning));
            let cols = match &s.vs_reference {
                Some(c) => columns(c),
                None => {
                    let eos = if s.is_reference { "(reference)" } else { "-" };
                    ["-", "-", "-", "-", eos, "-", "-"].map(String::from)
                }
            };
            let reason = self.worst_reasons(s.reasons.iter().map(|r| (r.status, r.text.as_str())));
            let lint = [errs.to_string(), warns.to_string()];
            let kind = if s.is_reference { "reference" } else { s.kind.name() };
            o.push_str(&row(&s.index.to_string(), &s.label, &self.status(s.status, s.error.is_some()), kind, &lint, &cols, &reason));
            // Against the parent: the proof an exact step (a merge of base + adapter) is exact.
            if let (Some(c), Some(parent)) = (&s.vs_parent, s.index.checked_sub(1).and_then(|p| r.steps.get(p))) {
                let reasons = crate::pipeline::run::threshold_reasons(c);
                let reason = self.worst_reasons(reasons.iter().map(|r| (r.status, r.text.as_str())));
                let label = format!("  vs {}", parent.label);
                o.push_str(&row("", &label, &format!("{:<5}", ""), "", &[String::new(), String::new()], &columns(c), &reason));
            }
            if let Some(e) = &s.error {
                o.push_str(&format!("    could not run: {e}\n"));
            }
        }
        o.push('\n');
        o.push_str(&notes(r));
        if let Some(t) = &r.training {
            o.push_str(&training(t));
        }
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

/// The steps' info findings, one line per step and id (a frozen-layer SFT, a merge into the
/// unquantized original of a quantized base): what a passing row does not say.
fn notes(r: &PipelineReport) -> String {
    let mut o = String::new();
    for s in &r.steps {
        let mut ids: Vec<(&str, u64, &str)> = Vec::new();
        for f in s.findings.iter().chain(s.merge.iter().flat_map(|m| m.findings.iter())).filter(|f| f.severity == Severity::Info) {
            match ids.iter_mut().find(|(id, _, _)| *id == f.id) {
                Some((_, n, _)) => *n += f.weight(),
                None => ids.push((f.id, f.weight(), f.message.as_str())),
            }
        }
        for (id, n, first) in ids {
            let times = if n > 1 { format!(" ×{n}") } else { String::new() };
            o.push_str(&format!("note: step {} `{}`: {id}{times}: {first}\n", s.index, s.label));
        }
    }
    o
}

/// `-` for a value the log or the comparison does not have.
fn or_dash(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

/// A training run's table: each training step's log beside its behaviour against the base, then
/// how the checkpoints were chosen and what the run shows.
fn training(t: &crate::pipeline::train_log::TrainingReport) -> String {
    use crate::pipeline::train_log::short;
    let log = match (&t.log_file, &t.log_error) {
        (Some(f), _) => format!("{f}: {} log entries", t.curve.len()),
        (None, Some(e)) => format!("no training log: {e}"),
        (None, None) => "no training log".into(),
    };
    let mut o = format!("training run {} ({log}; {} of {} checkpoints evaluated)\n", t.dir, t.checkpoints_evaluated, t.checkpoints_found);
    o.push_str(&format!(
        "{:>8}  {:<20} {:<6} {:>8} {:>7} {:>9} {:>9} {:>7} {:>5} {:>8}\n",
        "step", "label", "status", "lr", "loss", "eval_loss", "grad_norm", "P(EOS)", "stops", "KL mean"
    ));
    for row in t.rows.iter().filter(|r| r.step.is_some()) {
        let l = row.log.as_ref();
        let line = format!(
            "{:>8}  {:<20} {:<6} {:>8} {:>7} {:>9} {:>9} {:>7} {:>5} {:>8}",
            row.step.map(|s| s.to_string()).unwrap_or_default(),
            row.label.chars().take(20).collect::<String>(),
            row.status.name(),
            or_dash(l.and_then(|l| l.learning_rate), short),
            or_dash(l.and_then(|l| l.loss), short),
            or_dash(l.and_then(|l| l.eval_loss), short),
            or_dash(l.and_then(|l| l.grad_norm), short),
            or_dash(row.p_eos, |v| format!("{v:.3}")),
            or_dash(row.stop_rate, |v| format!("{:.0}%", 100.0 * v)),
            or_dash(row.kl_mean, fmt_num),
        );
        o.push_str(line.trim_end());
        o.push('\n');
    }
    if let Some(s) = &t.search {
        let probes: Vec<String> = s.probes.iter().map(|(l, fail)| format!("{l} {}", if *fail { "fails" } else { "passes" })).collect();
        o.push_str(&format!("  binary search over the checkpoints: {}\n", probes.join(", ")));
    }
    o.push_str(&format!("  {}\n\n", t.summary));
    o
}
