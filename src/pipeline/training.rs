//! Training runs as lineages: a transformers/TRL `output_dir` bisected (every checkpoint within
//! the budget, else a binary search for the first failing one), its log beside the behaviour, and
//! the training cause of the first bad checkpoint (`train_log`).

use super::causes::Cause;
use super::manifest::{Manifest, StepKind};
use super::run::{self as lineage, Notes, PipelineReport};
use super::train_log::{cause, export_cause, Search, TrainerLog, TrainingReport, TrainingRow, LEARNED_IT};
use crate::compare::thresholds::Verdict;
use crate::error::Result;

pub use super::train_log::CAUSE_IDS;

/// Bisects a training run: every checkpoint when they fit the budget, else a binary search for
/// the first failing one (each probe is that checkpoint alone against the base), then one
/// lineage of the base, the checkpoints evaluated, the final save and the exports, with the log
/// beside them and the training cause of a collapse.
pub fn run(m: &Manifest, notes: &dyn Notes) -> Result<PipelineReport> {
    let plan = m.run.as_ref().expect("a training run");
    let checkpoints: Vec<usize> = (0..m.steps.len()).filter(|&i| plan.is_checkpoint[i]).collect();
    let (lineage_m, search) = if checkpoints.len() <= plan.checkpoint_budget {
        (m.clone(), None)
    } else {
        let (keep, search) = binary_search(m, &checkpoints, plan.checkpoint_budget, notes)?;
        // The last checkpoint stays when it is what the exports come from (no final save).
        let last = *checkpoints.last().expect("more than the budget");
        let anchor = m.steps[last].kind == StepKind::Finetune;
        (m.subset(|i| !plan.is_checkpoint[i] || keep.contains(&i) || anchor && i == last), Some(search))
    };
    let mut report = lineage::run(&lineage_m, notes)?;
    attach(&mut report, &lineage_m, checkpoints.len(), search);
    Ok(report)
}

/// Whether checkpoint `i` of `m` fails its behaviour checks against the base, alone.
fn probe(m: &Manifest, i: usize, notes: &dyn Notes) -> Result<bool> {
    notes.note(&format!("probe {}: alone against the base", m.steps[i].label));
    let r = lineage::run(&m.subset(|j| j == i), notes)?;
    Ok(r.steps.iter().any(|s| !s.is_reference && (s.status == Verdict::Fail || s.error.is_some())))
}

/// Binary search over `checkpoints` (manifest indices in step order) for the first that fails,
/// assuming a collapse does not heal; at most `budget` probes. Returns the checkpoints to
/// evaluate in the final lineage.
fn binary_search(m: &Manifest, checkpoints: &[usize], budget: usize, notes: &dyn Notes) -> Result<(Vec<usize>, Search)> {
    let label = |k: usize| m.steps[checkpoints[k]].label.clone();
    let n = checkpoints.len();
    let mut probes = Vec::new();
    let last_fails = probe(m, checkpoints[n - 1], notes)?;
    probes.push((label(n - 1), last_fails));
    if !last_fails {
        // No collapse to find: the last checkpoint and evenly spaced others fill the budget.
        let mut keep: Vec<usize> = (0..budget).map(|k| checkpoints[(k + 1) * n / budget - 1]).collect();
        keep.dedup();
        return Ok((keep, Search { probes, bracket: None, exhausted: false }));
    }
    // Invariant: checkpoint `lo` passes (-1: the base) and `hi` fails.
    let (mut lo, mut hi) = (-1isize, (n - 1) as isize);
    while hi - lo > 1 && probes.len() < budget {
        let mid = (lo + hi) / 2;
        let fails = probe(m, checkpoints[mid as usize], notes)?;
        probes.push((label(mid as usize), fails));
        if fails {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let keep: Vec<usize> = probes.iter().map(|(l, _)| m.steps.iter().position(|s| &s.label == l).expect("probed")).collect();
    let good = if lo < 0 { "base".to_string() } else { label(lo as usize) };
    Ok((keep, Search { probes, bracket: Some((good, label(hi as usize))), exhausted: hi - lo > 1 }))
}

/// The training table, the summary and the training cause of the first bad step.
fn attach(r: &mut PipelineReport, m: &Manifest, found: usize, search: Option<Search>) {
    let plan = m.run.as_ref().expect("a training run");
    let log = plan.log.as_ref();
    let rows: Vec<TrainingRow> = r
        .steps
        .iter()
        .zip(&plan.train_step)
        .map(|(s, step)| {
            let vs = s.vs_reference.as_ref().map(|c| &c.summary);
            TrainingRow {
                label: s.label.clone(),
                step: *step,
                status: if s.error.is_some() { Verdict::Fail } else { s.status },
                log: step.and_then(|n| log.map(|l| l.at(n))),
                p_eos: vs.map(|v| v.p_eos_cand_mean),
                stop_rate: vs.map(|v| v.cand_stop_rate),
                kl_mean: vs.map(|v| v.kl.mean),
            }
        })
        .collect();
    let training = |i: usize| m.steps[i].kind.is_training();
    let evaluated = plan.is_checkpoint.iter().filter(|c| **c).count();
    let bad = r.steps.iter().position(|s| !s.is_reference && s.status == Verdict::Fail && s.error.is_none());
    let summary;
    match bad {
        Some(b) if training(b) => {
            let good = (0..b).rev().find(|&i| training(i) && r.steps[i].status != Verdict::Fail && r.steps[i].error.is_none());
            let good_step = good.and_then(|g| plan.train_step[g]).unwrap_or(0);
            let bad_step = plan.train_step[b].unwrap_or(good_step);
            let after = match good {
                Some(g) => format!(" ({} passes)", r.steps[g].label),
                None if evaluated < found => " (no earlier checkpoint was evaluated)".into(),
                None => " (no earlier one passes)".into(),
            };
            summary = format!("`{}` is the first training step that fails its behaviour checks{after}", r.steps[b].label);
            if let Some(c) = log.and_then(|l| cause(l, good_step, bad_step, &r.steps[b].label)) {
                let s = &mut r.steps[b];
                // A blow-up in the log explains a collapse better than the numbers; a static
                // finding or a rule (EOS masked as padding, another template) stays first.
                let first_metric = s.causes.iter().position(|c| c.cause_id.starts_with("metric."));
                let at = if s.causes.is_empty() || first_metric == Some(0) {
                    0
                } else if c.cause_id != LEARNED_IT {
                    1
                } else {
                    first_metric.unwrap_or(s.causes.len())
                };
                s.causes.insert(at, c);
            }
        }
        Some(b) => {
            let healthy = (0..b).filter(|&i| training(i)).count();
            if healthy > 0 && (0..b).filter(|&i| training(i)).all(|i| r.steps[i].status != Verdict::Fail && r.steps[i].error.is_none()) {
                summary = format!(
                    "every training step evaluated ({healthy}) behaves; `{}` is the first step to fail: the save, merge or conversion broke it, not the training",
                    r.steps[b].label
                );
                let s = &mut r.steps[b];
                let c = export_cause(&s.label, healthy);
                if let Some(first) = s.causes.first_mut() {
                    first.evidence.push(c.summary.clone());
                }
                s.causes.push(c);
            } else {
                summary = format!("`{}` is the first step to fail", r.steps[b].label);
            }
        }
        None => summary = format!("every step behaves ({evaluated} of {found} checkpoints evaluated)"),
    }
    if let Some(b) = bad {
        let s = &mut r.steps[b];
        if let Some(Search { bracket: Some((good, first)), exhausted: true, .. }) = &search {
            if let Some(c) = s.causes.first_mut() {
                c.evidence.push(format!(
                    "the checkpoint budget ran out: the first failing checkpoint is after `{good}` and at or before `{first}` (raise --checkpoint-budget)"
                ));
            }
        }
        s.cause = s.causes.first().map(Cause::line);
        s.cause_id = s.causes.first().map(|c| c.cause_id.clone());
        r.cause = s.cause.clone();
        r.cause_id = s.cause_id.clone();
        r.causes = s.causes.clone();
    }
    // f16 headroom of every training step (its layer trace against the base): an f16 export of
    // a bf16-trained step that overflows is named before anyone exports it.
    let mut summary = summary;
    for (s, i) in r.steps.iter().zip(0..) {
        let layers = s.vs_reference.as_ref().and_then(|c| c.layers.as_deref());
        if let Some(line) = layers.filter(|_| training(i)).and_then(crate::compare::run::fp16_headroom) {
            summary.push_str(&format!("; `{}`: {}", s.label, line.replace("the candidate's", "its")));
            break;
        }
    }
    r.training = Some(TrainingReport {
        dir: crate::format::lexical(&plan.dir).display().to_string(),
        log_file: log.map(|l| crate::format::lexical(&l.path).display().to_string()),
        log_error: plan.log_error.clone(),
        checkpoints_found: found,
        checkpoints_evaluated: evaluated,
        search,
        rows,
        curve: log.map(TrainerLog::curve).unwrap_or_default(),
        summary,
    });
}
