//! Bisecting a lineage: lint every step, compare each step against the reference and against its
//! parent, and name the first step that crossed a threshold with its most likely cause.
//!
//! Cause attribution ranks static findings (tokenizer, EOS, template, merge algebra) over numeric
//! drift: a static finding that explains the numbers is named first, the numbers follow as
//! evidence. Every step runs one teacher-forced pass, all steps in lockstep on the reference's
//! answers (`compare_all`); both comparisons of a step come from those passes.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::causes::{self, Cause};
use super::manifest::{Manifest, StepKind};
use crate::checkpoint::Checkpoint;
use crate::checks::fingerprint::Fingerprints;
use crate::checks::ids::{self, FindingId};
use crate::checks::merge::{self as merge_check, ModuleRow};
use crate::checks::{self, Finding, LintOptions, Severity};
use crate::compare::blame::{self, Blame, BlameInputs, Side};
use crate::compare::metrics::fmt_num;
use crate::compare::prompts::{self, Prompt};
use crate::compare::run::{compare_all, reference_answers, CompareOptions, CompareResult, Pair, Progress, ReferenceAnswers};
use crate::compare::thresholds::{Metric, Thresholds, Verdict};
use crate::compare::variant::Variant;
use crate::error::Result;
use crate::format::hf::HfDir;
use crate::format::lora::Adapter;
use crate::model::quant::QuantWeights;

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
    ids::MERGE_EXPERT_DELTA_DROPPED,
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
    /// Why the step is not `pass`: every judged metric past a threshold, then every static
    /// finding id at warning or error (empty for a passing step).
    pub reasons: Vec<Reason>,
    /// The first of `causes`, in one line.
    pub cause: Option<String>,
    /// `causes[0].cause_id`: the stable id a manifest's `[expect] cause_id` names.
    pub cause_id: Option<String>,
    /// Why the step failed, most likely first (empty unless it failed).
    pub causes: Vec<Cause>,
    /// Set when the step could not be run at all.
    pub error: Option<String>,
    /// The first failing step of a conversion, quantization or merge, when no static finding
    /// explains it: which of its tensors make the difference (`compare::blame`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blame: Option<Blame>,
    /// Wall time of this step's own work.
    pub seconds: StepSeconds,
}

/// Wall time, in seconds, of the work one step does alone (its comparisons run in lockstep with
/// every other step's: `PipelineReport::compare_seconds`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct StepSeconds {
    /// Static checks: lint and the lineage checks against its parent.
    pub lint: f64,
    /// The merge algebra (a merged step after base + adapter).
    pub merge: f64,
    /// Opening and loading the weights for the forward pass.
    pub load: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PipelineReport {
    pub schema_version: u32,
    pub name: String,
    pub reference: String,
    pub steps: Vec<StepReport>,
    pub first_bad_step: Option<String>,
    pub cause: Option<String>,
    /// The first bad step's `cause_id` (what a manifest's `[expect] cause_id` is held to).
    pub cause_id: Option<String>,
    /// The first bad step's causes, structured.
    pub causes: Vec<Cause>,
    pub verdict: Verdict,
    /// Some step could not be run (exit code 2).
    pub incomplete: bool,
    /// The lineage's thresholds (defaults with the manifest's `[thresholds]`); a step's own
    /// overrides are in its judgements' bounds.
    pub thresholds: Thresholds,
    /// Wall time of the numeric comparisons: the reference's answers and the one lockstep pass
    /// in which every step is scored.
    pub compare_seconds: f64,
    /// A training run's log beside its checkpoints' behaviour (`bisect RUN_DIR`, `[run]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub training: Option<super::train_log::TrainingReport>,
}

/// One reason a step warns or fails: a threshold its numbers crossed (`id` is the metric, named
/// as its threshold keys are) or a static finding (`id` is the finding id).
#[derive(Debug, Clone, Serialize)]
pub struct Reason {
    pub id: String,
    pub status: Verdict,
    /// In words: `ppl_ratio 1.175 > ppl_ratio_warn 1.1`, `merge.wrong-scale ×21 (error)`.
    pub text: String,
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

/// A merged step after a base+adapter step: the merge algebra.
fn merge_step(parent: &Checkpoint, step: &Checkpoint) -> Result<Option<MergeSummary>> {
    let (Checkpoint::BaseWithAdapter { base, adapter }, Checkpoint::Hf(merged)) = (parent, step) else {
        return Ok(None);
    };
    let r = merge_algebra(base, adapter, merged)?;
    Ok(Some(MergeSummary { modules: r.modules, findings: r.findings }))
}

/// The merge algebra of `merged` against `base` + `adapter`, with a quantized base (QLoRA)
/// dequantized by its scheme: what `merge-check` and a bisect's merged step both run.
pub fn merge_algebra(base: &HfDir, adapter: &Adapter, merged: &HfDir) -> Result<merge_check::MergeReport> {
    let Some(q) = QuantWeights::from_config(base)? else { return merge_check::check(base, None, adapter, merged) };
    let dequantize = |prefix: &str| q.dequantize(prefix);
    let owner = |name: &str| q.owner(name);
    let quant = merge_check::QuantBase { scheme: q.scheme.name(), dequantize: &dequantize, owner: &owner };
    merge_check::check(base, Some(&quant), adapter, merged)
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
            reasons: Vec::new(),
            cause: None,
            cause_id: None,
            causes: Vec::new(),
            error: None,
            blame: None,
            seconds: StepSeconds::default(),
        })
        .collect();

    // Every step opened once (files mapped, nothing loaded), then static checks: cheap, and they
    // explain most breakages.
    let ckpts: Vec<Opened> = m.steps.iter().map(|s| s.source.open().map_err(|e| e.to_string())).collect();
    let mut prints: Vec<Option<Fingerprints>> = Vec::with_capacity(m.steps.len());
    for (i, s) in m.steps.iter().enumerate() {
        notes.note(&format!("step {}/{}: lint {} ({})", i + 1, m.steps.len(), s.label, s.source.describe()));
        let clock = Instant::now();
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
        steps[i].seconds.lint = clock.elapsed().as_secs_f64();
        let (Some(Ok(parent)), Ok(cur)) = (i.checked_sub(1).map(|p| &ckpts[p]), &ckpts[i]) else { continue };
        let clock = Instant::now();
        match merge_step(parent, cur) {
            Ok(ms) => steps[i].merge = ms,
            Err(e) => steps[i].error = Some(e.to_string()),
        }
        steps[i].seconds.merge = clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        steps[i].findings.extend(checks::lineage::step_vs_parent(
            parent,
            cur,
            &m.steps[i - 1].label,
            [prints[i - 1].as_ref(), prints[i].as_ref()],
        ));
        steps[i].seconds.lint += clock.elapsed().as_secs_f64();
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
    notes.progress().stage("loading weights", order.len());
    for (k, &i) in order.iter().enumerate() {
        notes.progress().tick();
        if steps[i].error.is_some() {
            continue;
        }
        notes.note(&format!("step {}/{}: load {}", k + 1, order.len(), m.steps[i].label));
        let clock = Instant::now();
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
        steps[i].seconds.load = clock.elapsed().as_secs_f64();
    }
    let clock = Instant::now();
    let Some(reference) = loaded[m.reference].as_ref() else {
        let why = steps[m.reference].error.clone().unwrap_or_default();
        for (i, s) in steps.iter_mut().enumerate() {
            if i != m.reference && s.error.is_none() {
                s.error = Some(format!("reference: {why}"));
            }
        }
        return Ok(finish(m, steps, 0.0));
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
        let answered = match &m.text {
            Some(t) => crate::compare::corpus::load(&t.path, reference, t.ctx, t.chunks).map(|(p, a)| {
                prompts = p;
                a
            }),
            None => reference_answers(reference, &prompts, &opts, notes.progress()),
        };
        let answers = match answered {
            Ok(a) => a,
            Err(e) => {
                for &(i, _, _) in &wanted {
                    steps[i].error = Some(format!("reference: {e}"));
                }
                return Ok(finish(m, steps, clock.elapsed().as_secs_f64()));
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
                if m.steps[i].kind.is_training() {
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
        let mut report = finish(m, steps, clock.elapsed().as_secs_f64());
        let env =
            BlameEnv { m, ckpts: &ckpts, loaded: &loaded, reference, answers: &answers, prompts: &prompts, opts: &opts, device: &device };
        blame_first_bad(&mut report, &env, notes);
        return Ok(report);
    }
    Ok(finish(m, steps, clock.elapsed().as_secs_f64()))
}

/// What a blame search of a step needs from the run.
struct BlameEnv<'a> {
    m: &'a Manifest,
    ckpts: &'a [Opened],
    loaded: &'a [Option<Variant>],
    reference: &'a Variant,
    answers: &'a ReferenceAnswers,
    prompts: &'a [Prompt],
    opts: &'a CompareOptions,
    device: &'a candle_core::Device,
}

/// Blames the first failing step's tensors when it is a conversion, quantization or merge of its
/// parent (a GGUF, a quantized HF checkpoint, or the step after base+adapter) and no static
/// finding or rule explains it: the search's culprit becomes the step's first cause. A search
/// that cannot run (shapes differ, budget 0) leaves the report as it was, with a note.
fn blame_first_bad(report: &mut PipelineReport, env: &BlameEnv, notes: &dyn Notes) {
    let Some(i) = report.steps.iter().position(|s| !s.is_reference && s.status == Verdict::Fail && s.error.is_none()) else { return };
    let numbers_only = report.steps[i].causes.first().is_some_and(|c| c.cause_id.starts_with("metric."));
    let Some(p) = i.checked_sub(1) else { return };
    let (Ok(step_ckpt), Ok(parent_ckpt), Some(step), Some(parent)) = (&env.ckpts[i], &env.ckpts[p], &env.loaded[i], &env.loaded[p]) else {
        return;
    };
    let converted = match step_ckpt {
        Checkpoint::Gguf(_) => true,
        Checkpoint::Hf(d) => d.config.as_ref().is_some_and(|c| c.value.get("quantization_config").is_some()),
        _ => false,
    } || matches!(parent_ckpt, Checkpoint::BaseWithAdapter { .. });
    // A training step is meant to move: which tensors moved is the training, not a mistake.
    if !numbers_only || !converted || env.m.blame_budget == 0 || env.m.steps[i].kind.is_training() {
        return;
    }
    notes.note(&format!(
        "blame {} → {}: swapping its tensors into the parent, one group at a time",
        env.m.steps[p].label, env.m.steps[i].label
    ));
    let inputs = BlameInputs {
        answered_by: env.reference,
        answers: env.answers,
        parent: Side { checkpoint: parent_ckpt, variant: parent },
        step: Side { checkpoint: step_ckpt, variant: step },
        prompts: env.prompts,
        opts: env.opts,
        settings: &env.m.settings,
        device: env.device,
        budget: env.m.blame_budget,
    };
    match blame::blame(&inputs, notes.progress()) {
        Ok(mut b) => {
            (b.parent, b.step) = (env.m.steps[p].label.clone(), env.m.steps[i].label.clone());
            let s = &mut report.steps[i];
            if let Some(c) = Cause::of_blame(&b, &env.m.steps[p].label, matches!(step_ckpt, Checkpoint::Gguf(_))) {
                s.causes.insert(0, c);
                s.cause = s.causes.first().map(Cause::line);
                s.cause_id = s.causes.first().map(|c| c.cause_id.clone());
                report.cause = s.cause.clone();
                report.cause_id = s.cause_id.clone();
                report.causes = s.causes.clone();
            }
            s.blame = Some(b);
        }
        Err(e) => notes.note(&format!("blame of {} skipped: {e}", env.m.steps[i].label)),
    }
}

/// Judges every step and names the first that breaks the lineage.
fn finish(m: &Manifest, mut steps: Vec<StepReport>, compare_seconds: f64) -> PipelineReport {
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
        cause_id: first_bad.and_then(|s| s.cause_id.clone()),
        causes: first_bad.map(|s| s.causes.clone()).unwrap_or_default(),
        incomplete: steps.iter().any(|s| s.error.is_some()),
        steps,
        verdict,
        thresholds: m.steps[m.reference].thresholds.clone(),
        compare_seconds,
        training: None,
    }
}

impl PipelineReport {
    /// A comparison as a two-step lineage (reference, candidate), so every lineage writer (the
    /// HTML page above all) renders `compare` too.
    pub fn of_compare(c: &CompareResult, thresholds: &Thresholds) -> PipelineReport {
        let step = |index: usize, label: &str, vs: Option<CompareResult>| StepReport {
            index,
            label: label.to_string(),
            source: label.to_string(),
            kind: StepKind::Derived,
            is_reference: index == 0,
            findings: Vec::new(),
            merge: None,
            status: vs.as_ref().map(|v| v.verdict).unwrap_or(Verdict::Pass),
            reasons: vs.as_ref().map(threshold_reasons).unwrap_or_default(),
            cause: vs.as_ref().filter(|v| v.verdict == Verdict::Fail).map(evidence),
            causes: vs
                .as_ref()
                .filter(|v| v.verdict == Verdict::Fail)
                .map(|v| Cause::of_numbers(v, evidence_parts(v)))
                .into_iter()
                .collect(),
            cause_id: None,
            vs_reference: vs,
            vs_parent: None,
            error: None,
            blame: None,
            seconds: StepSeconds::default(),
        };
        let mut steps = vec![step(0, &c.reference, None), step(1, &c.candidate, Some(c.clone()))];
        steps[1].cause_id = steps[1].causes.first().map(|c| c.cause_id.clone());
        let bad = steps[1].status == Verdict::Fail;
        PipelineReport {
            schema_version: REPORT_SCHEMA_VERSION,
            name: format!("compare {} → {}", c.reference, c.candidate),
            reference: c.reference.clone(),
            first_bad_step: bad.then(|| c.candidate.clone()),
            cause: steps[1].cause.clone(),
            cause_id: steps[1].cause_id.clone(),
            causes: steps[1].causes.clone(),
            verdict: c.verdict,
            incomplete: false,
            steps,
            thresholds: thresholds.clone(),
            compare_seconds: 0.0,
            training: None,
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
    s.reasons = numeric.map(threshold_reasons).unwrap_or_default();
    s.reasons.extend(finding_reasons(&statics));
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
    s.cause_id = s.causes.first().map(|c| c.cause_id.clone());
}

/// Every judgement of a comparison past a threshold, worst first, in words that name the
/// threshold key it crossed.
pub fn threshold_reasons(r: &CompareResult) -> Vec<Reason> {
    let mut crossed: Vec<_> = r.judgements.iter().filter(|j| j.status != Verdict::Pass).collect();
    crossed.sort_by_key(|j| (std::cmp::Reverse(j.status), j.metric));
    crossed
        .into_iter()
        .map(|j| {
            let m = j.metric.name();
            let text = match j.metric {
                Metric::NonfiniteLogits | Metric::PromptTokenization => format!("{m} {} (any fails)", j.value),
                _ if j.value.is_nan() => format!("{m} NaN (a NaN fails)"),
                _ => {
                    let (level, bound) = if j.status == Verdict::Fail { ("fail", j.fail) } else { ("warn", j.warn) };
                    let op = if j.metric.smaller_is_worse() { "<" } else { ">" };
                    format!("{m} {} {op} {m}_{level} {bound}", fmt_num(j.value))
                }
            };
            Reason { id: m.to_string(), status: j.status, text }
        })
        .collect()
}

/// Static findings at warning or error as reasons, one per id and severity with its count
/// (`statics` is sorted worst first).
fn finding_reasons(statics: &[&Finding]) -> Vec<Reason> {
    let mut out: Vec<(Reason, u64)> = Vec::new();
    for f in statics.iter().filter(|f| f.severity >= Severity::Warning) {
        let status = if f.severity == Severity::Error { Verdict::Fail } else { Verdict::Warn };
        match out.iter_mut().find(|(r, _)| r.id == f.id && r.status == status) {
            Some((_, n)) => *n += f.weight(),
            None => out.push((Reason { id: f.id.to_string(), status, text: String::new() }, f.weight())),
        }
    }
    out.into_iter()
        .map(|(mut r, n)| {
            let sev = if r.status == Verdict::Fail { "error" } else { "warning" };
            r.text = if n > 1 { format!("{} ×{n} ({sev})", r.id) } else { format!("{} ({sev})", r.id) };
            r
        })
        .collect()
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
