//! Bisecting a lineage: lint every step, compare each step against the reference and against its
//! parent, and name the first step that crossed a threshold with its most likely cause.
//!
//! Cause attribution ranks static findings (tokenizer, EOS, template, merge algebra) over numeric
//! drift: a static finding that explains the numbers is named first, the numbers follow as
//! evidence. Every step runs one teacher-forced pass, all steps in lockstep on the reference's
//! answers (`compare_all`); both comparisons of a step come from those passes.

use std::path::Path;

use serde::Serialize;

use super::causes::{self, Cause};
use super::manifest::{Manifest, StepKind};
use crate::checkpoint::Checkpoint;
use crate::checks::fingerprint::Fingerprints;
use crate::checks::ids::{self, FindingId};
use crate::checks::merge::{self as merge_check, ModuleRow};
use crate::checks::{self, Context, Finding, LintOptions, Severity};
use crate::compare::metrics::fmt_num;
use crate::compare::prompts::{self, Prompt};
use crate::compare::run::{compare_all, reference_answers, CompareOptions, CompareResult, Pair, Progress};
use crate::compare::thresholds::{Metric, Verdict};
use crate::compare::variant::Variant;
use crate::error::Result;

/// Version of the bisect/gate JSON report; documented in docs/report-schema.json.
pub const REPORT_SCHEMA_VERSION: u32 = 2;

/// Static finding ids that explain a broken model, most decisive first.
const CAUSE_RANK: &[FindingId] = &[
    ids::TEMPLATE_EOT_NOT_EOS,
    ids::GGUF_EOS_DIFFERS,
    ids::GGUF_TURN_END_NOT_EOG,
    ids::GGUF_TOKENS_DIFFER,
    ids::GGUF_TOKENIZATION_DIFFERS,
    ids::GGUF_TEMPLATE_MISSING,
    ids::GGUF_DOUBLE_BOS,
    ids::GGUF_ROPE_BASE_DIFFERS,
    ids::GGUF_VOCAB_EXCEEDS_EMBEDDING,
    ids::LINEAGE_TOKENIZER_CHANGED,
    ids::LINEAGE_TEMPLATE_DROPPED,
    ids::VOCAB_TOKENIZER_EXCEEDS_ROWS,
    ids::VOCAB_SPECIAL_ID_OUT_OF_RANGE,
    ids::TEMPLATE_SPECIAL_SPLIT,
    ids::MERGE_WRONG_SCALE,
    ids::MERGE_NOT_MERGED,
    ids::MERGE_OVERFLOW,
    ids::MERGE_TRANSPOSED,
    ids::MERGE_WRONG_MODULE,
    ids::MERGE_MISMATCH,
    ids::VALUES_NAN,
    ids::VALUES_INF,
    ids::SPECIAL_UNKNOWN_TOKEN,
    ids::SPECIAL_EOS_MISMATCH,
    ids::TEMPLATE_MISSING,
    ids::TEMPLATE_RENDER_FAILED,
];

#[derive(Debug, Clone, Serialize)]
pub struct MergeSummary {
    pub modules: Vec<ModuleRow>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub index: usize,
    pub label: String,
    pub source: String,
    /// `derived` (judged on drift and behaviour) or `finetune` (behaviour only; later steps are
    /// judged against it).
    pub kind: StepKind,
    pub is_reference: bool,
    pub findings: Vec<Finding>,
    pub merge: Option<MergeSummary>,
    pub vs_reference: Option<CompareResult>,
    pub vs_parent: Option<CompareResult>,
    pub status: Verdict,
    /// The first of `causes`, in one line.
    pub cause: Option<String>,
    /// Why the step failed, most likely first (empty unless it failed).
    pub causes: Vec<Cause>,
    /// Set when the step could not be run at all.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    pub schema_version: u32,
    pub name: String,
    pub reference: String,
    pub steps: Vec<StepReport>,
    pub first_bad_step: Option<String>,
    pub cause: Option<String>,
    /// The first bad step's causes, structured.
    pub causes: Vec<Cause>,
    pub verdict: Verdict,
    /// Some step could not be run (exit code 2).
    pub incomplete: bool,
}

/// Notes progress to the user (stderr); the pipeline never prints.
pub trait Notes {
    fn note(&self, _msg: &str) {}
    fn progress(&self) -> &dyn Progress;
}

/// A GGUF step is checked against the nearest earlier HF step (its source); any other step on
/// its own (a base+adapter step by its adapter directory).
fn lint_step(ckpts: &[Opened], i: usize) -> std::result::Result<(Vec<Finding>, Option<Fingerprints>), String> {
    let ckpt = ckpts[i].as_ref().map_err(String::clone)?;
    let source = match ckpt {
        Checkpoint::Gguf(_) => ckpts[..i].iter().rev().find_map(|c| match c {
            Ok(Checkpoint::Hf(d)) => Some(d),
            _ => None,
        }),
        _ => None,
    };
    Ok(checks::lint_fingerprinted(ckpt, source, &LintOptions::default()))
}

/// A step's checkpoint, or why it could not be opened (reported on the step).
type Opened = std::result::Result<Checkpoint, String>;

/// Tokenizer, template and EOS of a step against its parent's (GGUF steps are checked against
/// their HF source by the GGUF checks instead).
fn lineage_step(parent: &Checkpoint, step: &Checkpoint, parent_label: &str, prints: [Option<&Fingerprints>; 2]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let (Some(pd), Some(sd)) = (parent.side_dir(), step.side_dir()) {
        let (pc, sc) = (Context::new(pd), Context::new(sd));
        checks::lineage::check(&pc, &sc, parent_label, &mut out);
        checks::lineage_weights::check_steps(parent, &pc, prints[0], step, &sc, prints[1], parent_label, &mut out);
    }
    out
}

/// A merged step after a base+adapter step: the merge algebra.
fn merge_step(parent: &Checkpoint, step: &Checkpoint) -> Result<Option<MergeSummary>> {
    let (Checkpoint::BaseWithAdapter { base, adapter }, Checkpoint::Hf(merged)) = (parent, step) else {
        return Ok(None);
    };
    let r = merge_check::check(base, adapter, merged)?;
    Ok(Some(MergeSummary { modules: r.modules, findings: r.findings }))
}

pub fn run(m: &Manifest, notes: &dyn Notes) -> Result<PipelineReport> {
    let device = crate::model::device(m.settings.device)?;
    let mut prompts: Vec<Prompt> = match &m.prompts {
        Some(p) => prompts::load_jsonl(p)?,
        None => prompts::builtin(),
    };
    prompts.truncate(m.max_prompts.unwrap_or(usize::MAX));
    let mut steps: Vec<StepReport> = m
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepReport {
            index: i,
            label: s.label.clone(),
            source: s.source.describe(),
            kind: s.kind,
            is_reference: i == m.reference,
            findings: Vec::new(),
            merge: None,
            vs_reference: None,
            vs_parent: None,
            status: Verdict::Pass,
            cause: None,
            causes: Vec::new(),
            error: None,
        })
        .collect();

    // Every step opened once (files mapped, nothing loaded), then static checks: cheap, and they
    // explain most breakages.
    let ckpts: Vec<Opened> = m.steps.iter().map(|s| s.source.open().map_err(|e| e.to_string())).collect();
    let mut prints: Vec<Option<Fingerprints>> = Vec::with_capacity(m.steps.len());
    for (i, s) in m.steps.iter().enumerate() {
        notes.note(&format!("lint {} ({})", s.label, s.source.describe()));
        match lint_step(&ckpts, i) {
            Ok((f, p)) => {
                steps[i].findings = f;
                prints.push(p);
            }
            Err(e) => {
                steps[i].error = Some(e);
                prints.push(None);
            }
        }
        let (Some(Ok(parent)), Ok(cur)) = (i.checked_sub(1).map(|p| &ckpts[p]), &ckpts[i]) else { continue };
        match merge_step(parent, cur) {
            Ok(ms) => steps[i].merge = ms,
            Err(e) => steps[i].error = Some(e.to_string()),
        }
        steps[i].findings.extend(lineage_step(parent, cur, &m.steps[i - 1].label, [prints[i - 1].as_ref(), prints[i].as_ref()]));
    }

    // Numeric comparisons: every step that opened is loaded (weights stay in their files), the
    // reference answers the prompts once, and every variant runs one teacher-forced pass on those
    // answers in lockstep with the others; each step is scored against the reference and its
    // parent from those passes.
    let opts = CompareOptions {
        prompts_from: crate::compare::prompts::source_name(m.prompts.as_deref()),
        max_new_tokens: m.max_new_tokens,
        layers: true,
        thresholds: m.steps[m.reference].thresholds.clone(),
    };
    let mut order: Vec<usize> = (0..m.steps.len()).filter(|&i| i != m.reference).collect();
    order.insert(0, m.reference);
    let mut loaded: Vec<Option<Variant>> = (0..m.steps.len()).map(|_| None).collect();
    for &i in &order {
        if steps[i].error.is_some() {
            continue;
        }
        notes.note(&format!("load {}", m.steps[i].label));
        let ckpt = match &ckpts[i] {
            Ok(c) => c,
            Err(e) => {
                steps[i].error = Some(e.clone());
                continue;
            }
        };
        match Variant::load(Path::new(&m.steps[i].source.describe()), ckpt, &device, &m.settings) {
            Ok(v) => loaded[i] = Some(v),
            Err(e) => steps[i].error = Some(e.to_string()),
        }
    }
    let Some(reference) = loaded[m.reference].as_ref() else {
        let why = steps[m.reference].error.clone().unwrap_or_default();
        for (i, s) in steps.iter_mut().enumerate() {
            if i != m.reference && s.error.is_none() {
                s.error = Some(format!("reference: {why}"));
            }
        }
        return Ok(finish(m, steps));
    };
    // (step, against, is the parent) for every comparison to make. A step is judged against its
    // anchor: the latest finetune step between the reference and it that runs, else the reference.
    let runs = |j: usize| loaded[j].is_some() && steps[j].error.is_none();
    let anchor = |i: usize| (m.reference + 1..i).rev().find(|&j| m.steps[j].kind == StepKind::Finetune && runs(j)).unwrap_or(m.reference);
    let mut wanted: Vec<(usize, usize, bool)> = Vec::new();
    for i in (0..m.steps.len()).filter(|&i| i != m.reference && loaded[i].is_some()) {
        let a = anchor(i);
        if let Some(p) = i.checked_sub(1).filter(|&p| p != m.reference && p != a && runs(p)) {
            wanted.push((i, p, true));
        }
        wanted.push((i, a, false));
    }
    if !wanted.is_empty() {
        let answers = match reference_answers(reference, &prompts, &opts, notes.progress()) {
            Ok(a) => a,
            Err(e) => {
                for &(i, _, _) in &wanted {
                    steps[i].error = Some(format!("reference: {e}"));
                }
                return Ok(finish(m, steps));
            }
        };
        let index: Vec<usize> = (0..m.steps.len()).filter(|&i| loaded[i].is_some()).collect();
        let variants: Vec<&Variant> = index.iter().map(|&i| loaded[i].as_ref().expect("filtered")).collect();
        let at = |i: usize| index.iter().position(|&j| j == i).expect("loaded");
        let pairs: Vec<Pair> = wanted
            .iter()
            .map(|&(i, against, _)| Pair { reference: at(against), candidate: at(i), thresholds: m.steps[i].thresholds.clone() })
            .collect();
        for &(i, against, _) in &wanted {
            notes.note(&format!("compare {} → {}", m.steps[against].label, m.steps[i].label));
        }
        let results = compare_all(&variants, at(m.reference), &pairs, &prompts, &answers, &opts, notes.progress())?;
        for (&(i, _, parent), r) in wanted.iter().zip(results) {
            let r = r.map(|mut r| {
                if m.steps[i].kind == StepKind::Finetune {
                    r.judge_behaviour_only();
                }
                r
            });
            match (r, parent) {
                (Ok(r), true) => steps[i].vs_parent = Some(r),
                (Ok(r), false) => steps[i].vs_reference = Some(r),
                (Err(e), _) => steps[i].error = Some(e.to_string()),
            }
        }
    }
    Ok(finish(m, steps))
}

/// Judges every step and names the first that breaks the lineage.
fn finish(m: &Manifest, mut steps: Vec<StepReport>) -> PipelineReport {
    for i in 0..steps.len() {
        let (before, rest) = steps.split_at_mut(i);
        judge_step(&mut rest[0], before.last(), m.steps[i].thresholds.layer_rel_err);
    }
    // Only a judged failure breaks a lineage; a step that could not run is reported as such (the
    // run is incomplete, exit 2), never blamed for the break.
    let first_bad = steps.iter().find(|s| !s.is_reference && s.status == Verdict::Fail && s.error.is_none());
    let verdict = steps.iter().map(|s| if s.error.is_some() { Verdict::Fail } else { s.status }).max().unwrap_or(Verdict::Pass);
    PipelineReport {
        schema_version: REPORT_SCHEMA_VERSION,
        name: m.name.clone(),
        reference: m.steps[m.reference].label.clone(),
        first_bad_step: first_bad.map(|s| s.label.clone()),
        cause: first_bad.and_then(|s| s.cause.clone()),
        causes: first_bad.map(|s| s.causes.clone()).unwrap_or_default(),
        incomplete: steps.iter().any(|s| s.error.is_some()),
        steps,
        verdict,
    }
}

impl PipelineReport {
    /// A comparison as a two-step lineage (reference, candidate), so every lineage writer (the
    /// HTML page above all) renders `compare` too.
    pub fn of_compare(c: &CompareResult) -> PipelineReport {
        let step = |index: usize, label: &str, vs: Option<CompareResult>| StepReport {
            index,
            label: label.to_string(),
            source: label.to_string(),
            kind: StepKind::Derived,
            is_reference: index == 0,
            findings: Vec::new(),
            merge: None,
            status: vs.as_ref().map(|v| v.verdict).unwrap_or(Verdict::Pass),
            cause: vs.as_ref().filter(|v| v.verdict == Verdict::Fail).map(evidence),
            causes: vs
                .as_ref()
                .filter(|v| v.verdict == Verdict::Fail)
                .map(|v| Cause::of_numbers(v, evidence_parts(v)))
                .into_iter()
                .collect(),
            vs_reference: vs,
            vs_parent: None,
            error: None,
        };
        let steps = vec![step(0, &c.reference, None), step(1, &c.candidate, Some(c.clone()))];
        let bad = steps[1].status == Verdict::Fail;
        PipelineReport {
            schema_version: REPORT_SCHEMA_VERSION,
            name: format!("compare {} → {}", c.reference, c.candidate),
            reference: c.reference.clone(),
            first_bad_step: bad.then(|| c.candidate.clone()),
            cause: steps[1].cause.clone(),
            causes: steps[1].causes.clone(),
            verdict: c.verdict,
            incomplete: false,
            steps,
        }
    }
}

fn view(s: &StepReport) -> causes::StepView<'_> {
    causes::StepView { label: &s.label, findings: &s.findings, vs_reference: s.vs_reference.as_ref() }
}

/// Step status and causes from its static findings, its numbers and the cause rules.
fn judge_step(s: &mut StepReport, parent: Option<&StepReport>, layer_rel_err: f64) {
    let mut statics: Vec<&Finding> = s.findings.iter().collect();
    if let Some(m) = &s.merge {
        statics.extend(m.findings.iter());
    }
    let rank = |f: &Finding| CAUSE_RANK.iter().position(|id| id.as_str() == f.id).unwrap_or(CAUSE_RANK.len());
    statics.sort_by_key(|f| (std::cmp::Reverse(f.severity), rank(f)));
    let static_error = statics.iter().find(|f| f.severity == Severity::Error);
    let numeric = s.vs_reference.as_ref();
    let numeric_status = numeric.map(|r| r.verdict).unwrap_or(Verdict::Pass);
    let static_status = match statics.first().map(|f| f.severity) {
        Some(Severity::Error) => Verdict::Fail,
        Some(Severity::Warning) => Verdict::Warn,
        _ => Verdict::Pass,
    };
    s.status = static_status.max(numeric_status);
    if s.status != Verdict::Fail {
        return;
    }
    let numbers = numeric.map(evidence_parts).unwrap_or_default();
    // A static finding explains the numbers; when only warnings exist, one that names the same
    // symptom (EOS, template, tokenizer) is still the best explanation for a numeric failure.
    let explaining = static_error.copied().or_else(|| statics.iter().find(|f| rank(f) < CAUSE_RANK.len()).copied());
    s.causes = causes::rank(
        explaining.map(|f| Cause::of_finding(f, numbers.clone())),
        causes::rules(view(s), parent.map(view), &numbers, layer_rel_err),
        numeric.filter(|_| !numbers.is_empty()).map(|r| Cause::of_numbers(r, numbers.clone())),
    );
    s.cause = s.causes.first().map(Cause::line);
}

/// The failing numbers of a comparison, most telling first (`Metric` order), in one line.
pub fn evidence(r: &CompareResult) -> String {
    evidence_parts(r).join("; ")
}

/// The failing numbers of a comparison, most telling first (`Metric` order).
pub fn evidence_parts(r: &CompareResult) -> Vec<String> {
    let s = &r.summary;
    let mut failing: Vec<_> = r.judgements.iter().filter(|j| j.status != Verdict::Pass).collect();
    failing.sort_by_key(|j| j.metric);
    let mut parts: Vec<String> = failing
        .iter()
        .map(|j| match j.metric {
            Metric::PEosRatio => format!("P(EOS at turn end) {:.3} → {:.3}", s.p_eos_ref_mean, s.p_eos_cand_mean),
            Metric::StopRateDrop => format!("greedy stops {:.0}% → {:.0}%", 100.0 * s.ref_stop_rate, 100.0 * s.cand_stop_rate),
            Metric::KlMean => format!("KL mean {}", fmt_num(s.kl.mean)),
            Metric::KlP99 => format!("KL p99 {:.2}", s.kl.p99),
            Metric::Top1 => format!("same top token {:.0}%", 100.0 * s.top1),
            Metric::PplRatio => format!("PPL ×{:.2}", s.ppl_ratio),
            Metric::NonfiniteLogits => format!("{} NaN/Inf logits", s.nonfinite_cand + s.nonfinite_ref),
            Metric::PromptTokenization => format!(
                "{} of {} prompts tokenize differently{}",
                s.prompt_token_mismatches,
                r.prompts.len(),
                s.first_token_mismatch.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
            ),
        })
        .collect();
    if let Some(l) = &r.first_bad_layer {
        parts.push(format!("first diverging layer: {l}"));
    }
    parts
}
