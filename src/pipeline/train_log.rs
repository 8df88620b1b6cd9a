//! What a training run's output directory holds (`RunDir`: its `checkpoint-N/` folders and final
//! save), its `trainer_state.json` log, the training cause of a collapse that the log explains, and
//! the report's training section. `training` runs the lineage over it.
//!
//! Only JSON and safetensors are read: `training_args.bin`, `optimizer.pt`, `scheduler.pt` and
//! `rng_state.pth` are pickles and are never opened.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use super::causes::{Cause, Confidence};
use crate::compare::thresholds::Verdict;
use crate::error::{Error, Result};
use crate::format::read_capped_text;

/// `checkpoint-N` folders beyond this are refused: a run saves tens to hundreds, not millions.
pub const MAX_CHECKPOINTS: usize = 4096;
/// Directory entries read while looking for checkpoints.
const MAX_DIR_ENTRIES: usize = 100_000;
/// `trainer_state.json` beyond this is refused (a million log entries are ~200 MB).
const MAX_STATE_BYTES: u64 = 256 << 20;
/// Log entries kept for the report's curves (evenly thinned beyond; the checkpoints' own rows
/// are read from the whole log).
pub const MAX_CURVE_POINTS: usize = 2000;

/// The files a training run's output directory holds that ckptcheck reads.
#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
    /// `checkpoint-N` folders with a model or adapter in them, by step.
    pub checkpoints: Vec<(u64, PathBuf)>,
    /// The root holds a saved model or adapter (`trainer.save_model()`).
    pub final_save: bool,
    /// The `trainer_state.json` with the longest history (the latest checkpoint's, or the root's).
    pub state: Option<PathBuf>,
}

/// A model or adapter is saved in `dir` (what `Checkpoint::open` would accept as HF or PEFT).
fn holds_model(dir: &Path) -> bool {
    dir.join("adapter_config.json").is_file() || dir.join("config.json").is_file()
}

/// `checkpoint-123` → 123.
fn checkpoint_step(name: &str) -> Option<u64> {
    name.strip_prefix("checkpoint-").and_then(|n| n.parse().ok())
}

impl RunDir {
    /// A directory is a run when it has `checkpoint-N` folders (a checkpoint folder itself, with
    /// its trainer_state.json, is one model, not a run).
    pub fn looks_like_run(dir: &Path) -> bool {
        dir.is_dir()
            && std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .take(MAX_DIR_ENTRIES)
                .flatten()
                .any(|e| e.file_name().to_str().and_then(checkpoint_step).is_some() && e.path().is_dir())
    }

    pub fn discover(root: &Path) -> Result<RunDir> {
        let entries = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
        let mut checkpoints = Vec::new();
        for e in entries.take(MAX_DIR_ENTRIES) {
            let e = e.map_err(|e| Error::io(root, e))?;
            let Some(step) = e.file_name().to_str().and_then(checkpoint_step) else { continue };
            let p = e.path();
            if p.is_dir() && holds_model(&p) {
                checkpoints.push((step, p));
            }
            if checkpoints.len() > MAX_CHECKPOINTS {
                return Err(Error::NotACheckpoint {
                    path: root.to_path_buf(),
                    reason: format!("more than {MAX_CHECKPOINTS} checkpoint-N folders; bisect a manifest that lists the ones to check"),
                });
            }
        }
        checkpoints.sort();
        let final_save = holds_model(root);
        if checkpoints.is_empty() && !final_save {
            return Err(Error::NotACheckpoint {
                path: root.to_path_buf(),
                reason: "no checkpoint-N folder with a model or adapter in it, and no model saved in the directory itself: \
                         is this the Trainer's output_dir?"
                    .into(),
            });
        }
        // The latest checkpoint's state holds the whole history up to it; the root's (save_state)
        // may be newer.
        let candidates = checkpoints.iter().rev().map(|(_, p)| p.join("trainer_state.json")).chain([root.join("trainer_state.json")]);
        let mut state: Option<(u64, PathBuf)> = None;
        for p in candidates.filter(|p| p.is_file()) {
            let step = TrainerLog::load(&p).map(|l| l.global_step.unwrap_or(0)).unwrap_or(0);
            if state.as_ref().is_none_or(|(s, _)| step > *s) {
                state = Some((step, p));
            }
        }
        Ok(RunDir { root: root.to_path_buf(), checkpoints, final_save, state: state.map(|(_, p)| p) })
    }
}

/// One `log_history` entry: what the Trainer logged at a step (absent fields are `None`; a NaN
/// or infinite value is kept as such).
#[derive(Debug, Clone, Default, Serialize)]
pub struct LogEntry {
    pub step: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
}

/// A run's `trainer_state.json`.
#[derive(Debug, Clone)]
pub struct TrainerLog {
    pub path: PathBuf,
    pub global_step: Option<u64>,
    pub entries: Vec<LogEntry>,
}

/// Python's `json.dump` writes `NaN`, `Infinity` and `-Infinity` for non-finite floats (a
/// diverged loss, an infinite grad_norm), which JSON does not allow: they become strings
/// outside string literals, and `number` reads them back.
fn python_json_to_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_str, mut escaped) = (false, false);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_str = true;
        }
        if let Some(word) = ["-Infinity", "Infinity", "NaN"].iter().find(|w| rest.starts_with(**w)) {
            out.push('"');
            out.push_str(word);
            out.push('"');
            rest = &rest[word.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

impl TrainerLog {
    pub fn load(path: &Path) -> Result<TrainerLog> {
        let text = read_capped_text(path, MAX_STATE_BYTES, "trainer_state.json")?;
        let bad = |detail: String| Error::Field { path: path.to_path_buf(), field: "log_history".into(), detail };
        let v: Value = serde_json::from_str(&python_json_to_json(&text)).map_err(|e| Error::Field {
            path: path.to_path_buf(),
            field: "trainer_state".into(),
            detail: format!("not JSON: {e}"),
        })?;
        let history = match v.get("log_history") {
            Some(Value::Array(a)) => a,
            Some(other) => return Err(bad(format!("must be a list, found {other}"))),
            None => return Err(bad("missing: is this a transformers Trainer's trainer_state.json?".into())),
        };
        let mut entries = Vec::with_capacity(history.len());
        for (i, e) in history.iter().enumerate() {
            let Some(step) = e.get("step").and_then(Value::as_u64) else {
                return Err(bad(format!("entry {i} has no integer `step`")));
            };
            entries.push(LogEntry {
                step,
                epoch: number(e.get("epoch")),
                loss: number(e.get("loss")),
                eval_loss: number(e.get("eval_loss")),
                learning_rate: number(e.get("learning_rate")),
                grad_norm: number(e.get("grad_norm")),
            });
        }
        entries.sort_by_key(|e| e.step);
        Ok(TrainerLog { path: path.to_path_buf(), global_step: v.get("global_step").and_then(Value::as_u64), entries })
    }

    /// The latest value of `field` logged at or before `step`.
    fn latest(&self, step: u64, field: impl Fn(&LogEntry) -> Option<f64>) -> Option<f64> {
        self.entries.iter().take_while(|e| e.step <= step).filter_map(&field).last()
    }

    /// What the log says at `step`: each field's latest value at or before it.
    pub fn at(&self, step: u64) -> LogEntry {
        LogEntry {
            step,
            epoch: self.latest(step, |e| e.epoch),
            loss: self.latest(step, |e| e.loss),
            eval_loss: self.latest(step, |e| e.eval_loss),
            learning_rate: self.latest(step, |e| e.learning_rate),
            grad_norm: self.latest(step, |e| e.grad_norm),
        }
    }

    /// The log thinned evenly to at most `MAX_CURVE_POINTS` entries (first and last kept).
    pub fn curve(&self) -> Vec<LogEntry> {
        let n = self.entries.len();
        if n <= MAX_CURVE_POINTS {
            return self.entries.clone();
        }
        (0..MAX_CURVE_POINTS).map(|k| self.entries[k * (n - 1) / (MAX_CURVE_POINTS - 1)].clone()).collect()
    }
}

/// The training cause of a checkpoint that broke: the log between the last good checkpoint and
/// the first bad one shows the learning rate at its peak with the gradients blowing up.
pub const LEARNING_RATE: &str = "training.learning-rate";
/// The log shows the run diverging (a gradient spike, the loss rising or NaN) with the learning
/// rate not at its peak: a bad batch, no gradient clipping, an fp16 overflow.
pub const DIVERGED: &str = "training.diverged";
/// The behaviour broke while the loss kept falling without a spike: the model learned what it
/// was taught (the data, its labels, its template), not a blow-up.
pub const LEARNED_IT: &str = "training.learned-from-data";
/// Every checkpoint and the final save behave; an export after them is the first to break.
pub const EXPORT_BROKE_IT: &str = "training.export-broke-it";

/// Every training cause id (docs/bisect.md documents each; a test holds them equal).
pub const CAUSE_IDS: &[&str] = &[LEARNING_RATE, DIVERGED, LEARNED_IT, EXPORT_BROKE_IT];

/// A gradient norm this many times the run's median before the collapse is a spike.
const GRAD_SPIKE: f64 = 10.0;
/// A learning rate at least this share of the run's peak counts as "at its peak".
const NEAR_PEAK: f64 = 0.9;

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// `(value, step)` of the largest finite-or-infinite value of `field` in `entries` (a NaN counts
/// as the largest: it is the blow-up).
fn peak(entries: &[&LogEntry], field: impl Fn(&LogEntry) -> Option<f64>) -> Option<(f64, u64)> {
    let mut best: Option<(f64, u64)> = None;
    for e in entries {
        let Some(v) = field(e) else { continue };
        let better = match best {
            None => true,
            Some((b, _)) => v.is_nan() && !b.is_nan() || !b.is_nan() && v > b,
        };
        if better {
            best = Some((v, e.step));
        }
    }
    best
}

/// `3e-4`, `0.05`, `NaN`: a logged value in a sentence.
pub fn short(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v != 0.0 && (v.abs() < 1e-2 || v.abs() >= 1e4) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Reads the log between the last healthy checkpoint (`good`, step 0 when the first checkpoint
/// already broke) and the first broken one (`bad`): a learning-rate or divergence cause when the
/// log shows a blow-up there, else that the model learned it from its data.
pub fn cause(log: &TrainerLog, good: u64, bad: u64, bad_label: &str) -> Option<Cause> {
    let window: Vec<&LogEntry> = log.entries.iter().filter(|e| e.step > good && e.step <= bad).collect();
    if window.is_empty() {
        return None;
    }
    let all: Vec<&LogEntry> = log.entries.iter().collect();
    let span = if good == 0 { format!("by step {bad}") } else { format!("between step {good} and {bad}") };
    let mut evidence = Vec::new();

    let lr_run = peak(&all, |e| e.learning_rate);
    let lr_win = peak(&window, |e| e.learning_rate);
    let lr_at_peak = match (lr_run, lr_win) {
        (Some((p, _)), Some((w, _))) => p > 0.0 && w >= NEAR_PEAK * p,
        _ => false,
    };
    if let Some((w, at)) = lr_win {
        let run_peak = lr_run.filter(|(p, s)| *s != at && *p > w).map(|(p, s)| format!(" (the run's peak: {} at step {s})", short(p)));
        evidence.push(format!(
            "learning rate {} at step {at}{}",
            short(w),
            run_peak.unwrap_or_else(|| if lr_at_peak { ", the run's peak".into() } else { String::new() })
        ));
    }

    // The healthy phase: up to the best loss logged before the window. A run can start to
    // diverge before its last passing checkpoint (the loss already rising); its baseline is what
    // the run looked like before that.
    let best = log
        .entries
        .iter()
        .filter(|e| e.step <= good)
        .filter_map(|e| e.loss.filter(|l| l.is_finite()).map(|l| (l, e.step)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let healthy_until = best.map(|b| b.1).unwrap_or(good);
    let norms = |until: u64| log.entries.iter().filter(|e| e.step <= until).filter_map(|e| e.grad_norm).collect::<Vec<_>>();
    let baseline = [norms(healthy_until), norms(good), log.entries.iter().filter_map(|e| e.grad_norm).collect()]
        .into_iter()
        .find(|v| v.iter().filter(|g| g.is_finite()).count() >= 3)
        .and_then(median);
    let gn = peak(&window, |e| e.grad_norm);
    let spike = match (gn, baseline) {
        (Some((g, _)), _) if !g.is_finite() => true,
        (Some((g, _)), Some(b)) => b > 0.0 && g >= GRAD_SPIKE * b,
        _ => false,
    };
    let times = |g: f64| baseline.filter(|b| *b > 0.0 && g.is_finite()).map(|b| format!(", {:.0}× its median {}", g / b, short(b)));
    if let Some((g, at)) = gn {
        evidence.push(format!("grad_norm {} at step {at}{}", short(g), times(g).unwrap_or_default()));
    }
    // After an inf or NaN, the largest finite norm shows how it built up.
    if let Some((g, at)) = gn.filter(|(g, _)| !g.is_finite()).and(peak(&window, |e| e.grad_norm.filter(|g| g.is_finite()))) {
        evidence.push(format!("grad_norm {} at step {at}{}", short(g), times(g).unwrap_or_default()));
    }

    let loss_before = best.or_else(|| window.iter().find_map(|e| e.loss.map(|l| (l, e.step))));
    let loss_after = window.iter().rev().find_map(|e| e.loss);
    let loss_max = peak(&window, |e| e.loss);
    let nonfinite_loss = window.iter().any(|e| e.loss.is_some_and(|l| !l.is_finite()));
    let rose = match (loss_before, loss_max) {
        (Some((b, _)), Some((m, _))) => !m.is_finite() || m > 1.5 * b.max(1e-9),
        _ => false,
    };
    if let (Some((b, at_b)), Some(a)) = (loss_before, loss_after) {
        let how = if nonfinite_loss {
            "the loss became NaN/inf".to_string()
        } else if rose {
            let (m, at) = loss_max.expect("rose");
            format!("loss rose from {} (step {at_b}) to {} at step {at}", short(b), short(m))
        } else if a < b {
            format!("loss still falling ({} → {})", short(b), short(a))
        } else {
            format!("loss about level ({} → {})", short(b), short(a))
        };
        evidence.push(how);
    }
    let best_eval = log
        .entries
        .iter()
        .filter(|e| e.step <= good)
        .filter_map(|e| e.eval_loss.filter(|l| l.is_finite()).map(|l| (l, e.step)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some((b, at)), Some(a)) = (best_eval, window.iter().rev().find_map(|e| e.eval_loss)) {
        evidence.push(format!("eval_loss {} (step {at}) → {}", short(b), short(a)));
    }

    let blew_up = spike || rose || nonfinite_loss;
    let (cause_id, summary, confidence, fix) = if blew_up && lr_at_peak {
        (
            LEARNING_RATE,
            format!(
                "`{bad_label}` collapsed {span}, with the learning rate at its peak and the run blowing up: the learning rate is too high"
            ),
            if spike { Confidence::High } else { Confidence::Medium },
            "train again with a lower peak learning rate (a third to a tenth of this one), longer warmup and gradient \
             clipping (max_grad_norm 1.0); the last healthy checkpoint is the one to keep meanwhile",
        )
    } else if blew_up {
        (
            DIVERGED,
            format!("`{bad_label}` collapsed {span} as the run diverged, with the learning rate below its peak"),
            Confidence::Medium,
            "look at the batches logged at those steps and at gradient clipping (max_grad_norm) and loss scaling; lower \
             the learning rate if the spikes repeat",
        )
    } else {
        (
            LEARNED_IT,
            format!("`{bad_label}` collapsed {span} while the training log stayed smooth: it learned this from the data"),
            Confidence::Low,
            "check what the training examples teach at the end of a turn: the chat template used in training, and that \
             the end-of-turn token is in the labels (not masked as padding)",
        )
    };
    Some(Cause { cause_id: cause_id.into(), summary, evidence, confidence, fix: fix.into() })
}

/// Every checkpoint and the final save pass and `label`, an export after them, is the first to
/// fail: the export broke it. `healthy`: how many training steps behaved.
pub fn export_cause(label: &str, healthy: usize) -> Cause {
    Cause {
        cause_id: EXPORT_BROKE_IT.into(),
        summary: format!(
            "every training step evaluated ({healthy}: checkpoints and the final save) behaves; `{label}` is the first step to \
             break: the save, merge or conversion broke it, not the training"
        ),
        evidence: Vec::new(),
        confidence: Confidence::High,
        fix: "redo the export from the final save; the causes below name what in it".into(),
    }
}

/// A training step's row in the report: the log at its step beside its behaviour.
#[derive(Debug, Clone, Serialize)]
pub struct TrainingRow {
    pub label: String,
    /// Its training step (None for the base and the exports).
    pub step: Option<u64>,
    pub status: Verdict,
    /// What `trainer_state.json` logged at or before its step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogEntry>,
    /// Against the base: P(EOS at turn end), the greedy stop rate, KL mean.
    pub p_eos: Option<f64>,
    pub stop_rate: Option<f64>,
    pub kl_mean: Option<f64>,
}

/// How the checkpoints to evaluate were chosen when there were more than the budget.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    /// Each checkpoint probed alone against the base, in probe order: (label, failed).
    pub probes: Vec<(String, bool)>,
    /// The last passing and first failing checkpoint found (the base when none passed).
    pub bracket: Option<(String, String)>,
    /// The budget ran out before the two were adjacent.
    pub exhausted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainingReport {
    pub dir: String,
    /// The `trainer_state.json` read, or why none was.
    pub log_file: Option<String>,
    pub log_error: Option<String>,
    pub checkpoints_found: usize,
    pub checkpoints_evaluated: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub search: Option<Search>,
    /// Every step of the lineage, in order.
    pub rows: Vec<TrainingRow>,
    /// The whole log (thinned to `MAX_CURVE_POINTS`), for the plots.
    pub curve: Vec<LogEntry>,
    /// What the run shows, in one sentence.
    pub summary: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(u64, f64, f64, f64)]) -> TrainerLog {
        TrainerLog {
            path: "trainer_state.json".into(),
            global_step: entries.last().map(|e| e.0),
            entries: entries
                .iter()
                .map(|&(step, lr, loss, gn)| LogEntry {
                    step,
                    learning_rate: Some(lr),
                    loss: Some(loss),
                    grad_norm: Some(gn),
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn python_nan_and_infinity_parse_outside_strings_only() {
        let t = r#"{"a": NaN, "b": -Infinity, "c": "NaN \" Infinity", "d": [Infinity, 1.5]}"#;
        let v: Value = serde_json::from_str(&python_json_to_json(t)).unwrap();
        assert!(number(v.get("a")).unwrap().is_nan());
        assert_eq!(number(v.get("b")), Some(f64::NEG_INFINITY));
        assert_eq!(v["c"], "NaN \" Infinity");
        assert_eq!(number(v["d"].get(0)), Some(f64::INFINITY));
        assert_eq!(number(v["d"].get(1)), Some(1.5));
    }

    #[test]
    fn a_blow_up_at_the_learning_rate_peak_is_the_learning_rate() {
        let l = log(&[(10, 1e-3, 2.0, 1.0), (20, 5e-3, 1.5, 1.2), (30, 1e-2, 1.4, 0.9), (40, 1e-2, 3.5, 45.0), (50, 5e-3, 3.0, 2.0)]);
        let c = cause(&l, 30, 40, "checkpoint-40").unwrap();
        assert_eq!(c.cause_id, LEARNING_RATE, "{c:?}");
        assert_eq!(c.confidence, Confidence::High);
        assert!(c.evidence.iter().any(|e| e.contains("grad_norm 45 at step 40, 45× its median 1")), "{:?}", c.evidence);
        assert!(c.evidence.iter().any(|e| e.contains("learning rate 0.01 at step 40, the run's peak")), "{:?}", c.evidence);
    }

    #[test]
    fn a_smooth_log_blames_the_data_and_a_spike_below_the_peak_is_a_divergence() {
        let smooth = log(&[(10, 1e-4, 2.0, 1.0), (20, 1e-4, 1.5, 1.1), (30, 1e-4, 1.2, 0.9)]);
        let c = cause(&smooth, 10, 30, "checkpoint-30").unwrap();
        assert_eq!(c.cause_id, LEARNED_IT);
        assert!(c.evidence.iter().any(|e| e == "loss still falling (2 → 1.2)"), "{:?}", c.evidence);
        // The loss already rising at the last good checkpoint: measured from its best.
        let early = log(&[(10, 1e-3, 0.7, 0.1), (20, 5e-3, 0.8, 0.1), (30, 1e-2, 3.4, 0.2), (40, 2e-2, 4.7, 0.1), (50, 2e-2, 4.5, 13.0)]);
        let c = cause(&early, 30, 50, "checkpoint-50").unwrap();
        assert_eq!(c.cause_id, LEARNING_RATE, "{c:?}");
        assert!(c.evidence.iter().any(|e| e == "loss rose from 0.7 (step 10) to 4.7 at step 40"), "{:?}", c.evidence);
        assert!(c.evidence.iter().any(|e| e == "grad_norm 13 at step 50, 130× its median 0.1"), "{:?}", c.evidence);
        let spike = log(&[(10, 1e-2, 2.0, 1.0), (20, 1e-3, 1.5, 1.0), (30, 1e-3, 1.4, 1.0), (40, 1e-3, f64::NAN, f64::INFINITY)]);
        let c = cause(&spike, 30, 40, "checkpoint-40").unwrap();
        assert_eq!(c.cause_id, DIVERGED, "{c:?}");
        assert!(c.evidence.iter().any(|e| e.contains("NaN")), "{:?}", c.evidence);
    }

    #[test]
    fn values_at_a_checkpoint_are_the_latest_logged_at_or_before_it() {
        let mut l = log(&[(10, 1e-3, 2.0, 1.0), (20, 2e-3, 1.5, 1.2)]);
        l.entries.push(LogEntry { step: 20, eval_loss: Some(1.7), ..Default::default() });
        let at = l.at(25);
        assert_eq!((at.learning_rate, at.loss, at.eval_loss), (Some(2e-3), Some(1.5), Some(1.7)));
        assert_eq!(l.at(5).loss, None);
        assert_eq!(short(3e-4), "3e-4");
        assert_eq!(short(0.125), "0.125");
    }
}
