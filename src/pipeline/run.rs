//! Bisecting a lineage: lint every step, compare each step against the reference and against its
//! parent, and name the first step that crossed a threshold with its most likely cause.
//!
//! Cause attribution ranks static findings (tokenizer, EOS, template, merge algebra) over numeric
//! drift: a static finding that explains the numbers is named first, the numbers follow as
//! evidence. At most two models are in memory at once: the previous step and the current one,
//! with the reference reloaded for its comparison.

use candle_core::Device;
use serde::Serialize;

use super::manifest::{Manifest, Source, Step};
use crate::checks::merge::{self as merge_check, ModuleRow};
use crate::checks::{self, Context, Finding, LintOptions, Severity};
use crate::compare::prompts::{self, Prompt};
use crate::compare::run::{compare, CompareOptions, CompareResult, Progress};
use crate::compare::thresholds::Status;
use crate::compare::variant::{LoadOptions, Variant};
use crate::error::Result;
use crate::format::hf::HfDir;
use crate::format::lora::Adapter;

/// Version of the bisect/gate JSON report; documented in docs/report-schema.json.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// Static finding ids that explain a broken model, most decisive first.
const CAUSE_RANK: &[&str] = &[
    "template.eot-not-eos",
    "gguf.eos-differs",
    "gguf.turn-end-not-eog",
    "gguf.tokens-differ",
    "gguf.tokenization-differs",
    "gguf.template-missing",
    "gguf.double-bos",
    "gguf.rope-base-differs",
    "gguf.vocab-exceeds-embedding",
    "lineage.tokenizer-changed",
    "lineage.template-dropped",
    "vocab.tokenizer-exceeds-rows",
    "vocab.special-id-out-of-range",
    "template.special-split",
    "merge.wrong-scale",
    "merge.not-merged",
    "merge.overflow",
    "merge.transposed",
    "merge.wrong-module",
    "merge.mismatch",
    "values.nan",
    "values.inf",
    "special.unknown-token",
    "special.eos-mismatch",
    "template.missing",
    "template.render-failed",
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
    pub is_reference: bool,
    pub findings: Vec<Finding>,
    pub merge: Option<MergeSummary>,
    pub vs_reference: Option<CompareResult>,
    pub vs_parent: Option<CompareResult>,
    pub status: Status,
    pub cause: Option<String>,
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
    pub verdict: Status,
    /// Some step could not be run (exit code 2).
    pub incomplete: bool,
}

/// Notes progress to the user (stderr); the pipeline never prints.
pub trait Notes {
    fn note(&self, _msg: &str) {}
    fn progress(&self) -> &dyn Progress;
}

fn load(step: &Step, device: &Device, opts: &LoadOptions) -> Result<Variant> {
    match &step.source {
        Source::Path { path } => Variant::open(path, device, opts),
        Source::Adapter { base, adapter } => {
            Variant::open_with_adapter(std::path::Path::new(&step.source.describe()), base, adapter, device, opts)
        }
    }
}

fn is_gguf(step: &Step) -> bool {
    matches!(&step.source, Source::Path { path } if path.is_file() && crate::format::sniff(path).ok() == Some(crate::format::FileKind::Gguf))
}

/// A GGUF step is checked against itself and against the nearest earlier HF step (its source).
fn lint_gguf(steps: &[Step], i: usize) -> Result<Vec<Finding>> {
    let Source::Path { path } = &steps[i].source else { return Ok(Vec::new()) };
    let g = crate::format::gguf::GgufFile::open(path)?;
    let source = steps[..i].iter().rev().find_map(|s| match &s.source {
        Source::Path { path } if path.is_dir() => HfDir::open(path).ok(),
        _ => None,
    });
    let ctx = source.as_ref().map(Context::new);
    Ok(checks::gguf::run(&g, ctx.as_ref()))
}

fn lint_step(step: &Step) -> Result<Vec<Finding>> {
    let dir = match &step.source {
        Source::Path { path } => match crate::format::open(path)? {
            crate::format::Checkpoint::Hf(d) => d,
        },
        Source::Adapter { adapter, .. } => HfDir::open(adapter)?,
    };
    let ctx = Context::new(&dir);
    Ok(checks::run_all(&ctx, &LintOptions::default()))
}

/// The HF directory whose tokenizer and template a step presents (a base+adapter step: its base).
fn side_dir(step: &Step) -> Result<HfDir> {
    match &step.source {
        Source::Path { path } => match crate::format::open(path)? {
            crate::format::Checkpoint::Hf(d) => Ok(d),
        },
        Source::Adapter { base, .. } => HfDir::open(base),
    }
}

fn lineage_step(parent: &Step, step: &Step) -> Result<Vec<Finding>> {
    let (pd, sd) = (side_dir(parent)?, side_dir(step)?);
    let mut out = Vec::new();
    checks::lineage::check(&Context::new(&pd), &Context::new(&sd), &parent.label, &mut out);
    Ok(out)
}

fn merge_step(parent: &Step, step: &Step) -> Result<Option<MergeSummary>> {
    let (Source::Adapter { base, adapter }, Source::Path { path }) = (&parent.source, &step.source) else {
        return Ok(None);
    };
    if !path.is_dir() {
        return Ok(None);
    }
    let base = HfDir::open(base)?;
    let adapter = Adapter::open(adapter)?;
    let merged = HfDir::open(path)?;
    let r = merge_check::check(&base, &adapter, &merged)?;
    Ok(Some(MergeSummary { modules: r.modules, findings: r.findings }))
}

pub fn run(m: &Manifest, notes: &dyn Notes) -> Result<PipelineReport> {
    let device = crate::model::device_named(&m.device)?;
    let load_opts = LoadOptions { dtype: m.dtype.clone(), gguf_matmul: crate::model::GgufMatmul::parse(&m.gguf_matmul)? };
    let prompts: Vec<Prompt> = match &m.prompts {
        Some(p) => prompts::load_jsonl(p)?,
        None => prompts::builtin(),
    };
    let mut steps: Vec<StepReport> = m
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| StepReport {
            index: i,
            label: s.label.clone(),
            source: s.source.describe(),
            is_reference: i == m.reference,
            findings: Vec::new(),
            merge: None,
            vs_reference: None,
            vs_parent: None,
            status: Status::Pass,
            cause: None,
            error: None,
        })
        .collect();

    // Static checks first: cheap, and they explain most breakages.
    for (i, s) in m.steps.iter().enumerate() {
        notes.note(&format!("lint {} ({})", s.label, s.source.describe()));
        let linted = if is_gguf(s) { lint_gguf(&m.steps, i) } else { lint_step(s) };
        match linted {
            Ok(f) => steps[i].findings = f,
            Err(e) => steps[i].error = Some(e.to_string()),
        }
        if i > 0 {
            match merge_step(&m.steps[i - 1], s) {
                Ok(ms) => steps[i].merge = ms,
                Err(e) => steps[i].error = Some(e.to_string()),
            }
            // GGUF steps are checked against their HF source by the GGUF checks instead.
            if !is_gguf(&m.steps[i - 1]) && !is_gguf(s) {
                if let Ok(f) = lineage_step(&m.steps[i - 1], s) {
                    steps[i].findings.extend(f);
                }
            }
        }
    }

    // Numeric comparisons, in lineage order after the reference.
    let mut prev: Option<(usize, Variant)> = None;
    for i in 0..m.steps.len() {
        if steps[i].error.is_some() {
            prev = None;
            continue;
        }
        notes.note(&format!("load {}", m.steps[i].label));
        let cur = match load(&m.steps[i], &device, &load_opts) {
            Ok(v) => v,
            Err(e) => {
                steps[i].error = Some(e.to_string());
                prev = None;
                continue;
            }
        };
        let opts = CompareOptions { max_new_tokens: m.max_new_tokens, layers: true, thresholds: m.steps[i].thresholds.clone() };
        if i != m.reference {
            // Parent first (already in memory), then the reference.
            if let Some((pi, parent)) = prev.take() {
                if pi != m.reference {
                    notes.note(&format!("compare {} → {}", m.steps[pi].label, m.steps[i].label));
                    match compare(&parent, &cur, &prompts, &opts, notes.progress()) {
                        Ok(r) => steps[i].vs_parent = Some(r),
                        Err(e) => steps[i].error = Some(e.to_string()),
                    }
                }
            }
            let reference = load(&m.steps[m.reference], &device, &load_opts);
            match reference {
                Ok(reference) => {
                    notes.note(&format!("compare {} → {}", m.steps[m.reference].label, m.steps[i].label));
                    match compare(&reference, &cur, &prompts, &opts, notes.progress()) {
                        Ok(r) => steps[i].vs_reference = Some(r),
                        Err(e) => steps[i].error = Some(e.to_string()),
                    }
                }
                Err(e) => steps[i].error = Some(format!("reference: {e}")),
            }
        }
        prev = Some((i, cur));
    }

    for s in &mut steps {
        judge_step(s);
    }
    let first_bad = steps.iter().find(|s| !s.is_reference && (s.status == Status::Fail || s.error.is_some()));
    let verdict = steps.iter().map(|s| if s.error.is_some() { Status::Fail } else { s.status }).max().unwrap_or(Status::Pass);
    Ok(PipelineReport {
        schema_version: REPORT_SCHEMA_VERSION,
        name: m.name.clone(),
        reference: m.steps[m.reference].label.clone(),
        first_bad_step: first_bad.map(|s| s.label.clone()),
        cause: first_bad.and_then(|s| s.cause.clone().or_else(|| s.error.clone())),
        incomplete: steps.iter().any(|s| s.error.is_some()),
        steps,
        verdict,
    })
}

/// Step status and cause from its static findings and numbers.
fn judge_step(s: &mut StepReport) {
    let mut statics: Vec<&Finding> = s.findings.iter().collect();
    if let Some(m) = &s.merge {
        statics.extend(m.findings.iter());
    }
    let rank = |f: &Finding| CAUSE_RANK.iter().position(|id| *id == f.id).unwrap_or(CAUSE_RANK.len());
    statics.sort_by_key(|f| (std::cmp::Reverse(f.severity), rank(f)));
    let static_error = statics.iter().find(|f| f.severity == Severity::Error);
    let numeric = s.vs_reference.as_ref();
    let numeric_status = numeric.map(|r| r.verdict).unwrap_or(Status::Pass);
    let static_status = match statics.first().map(|f| f.severity) {
        Some(Severity::Error) => Status::Fail,
        Some(Severity::Warning) => Status::Warn,
        _ => Status::Pass,
    };
    s.status = static_status.max(numeric_status);
    if s.status != Status::Fail {
        return;
    }
    let evidence = numeric.map(evidence).filter(|e| !e.is_empty());
    // A static finding explains the numbers; when only warnings exist, one that names the same
    // symptom (EOS, template, tokenizer) is still the best explanation for a numeric failure.
    let explaining = static_error.copied().or_else(|| statics.iter().find(|f| rank(f) < CAUSE_RANK.len()).copied());
    s.cause = match (explaining, evidence) {
        (Some(f), Some(e)) => Some(format!("{}: {}; {e}", f.id, f.message)),
        (Some(f), None) => Some(format!("{}: {}", f.id, f.message)),
        (None, Some(e)) => Some(e),
        (None, None) => None,
    };
}

/// The failing numbers of a comparison, most telling first.
pub fn evidence(r: &CompareResult) -> String {
    let s = &r.summary;
    let mut parts = Vec::new();
    for j in r.judgements.iter().filter(|j| j.status != Status::Pass) {
        parts.push(match j.metric {
            "p_eos_ratio" => format!("P(EOS at turn end) {:.3} → {:.3}", s.p_eos_ref_mean, s.p_eos_cand_mean),
            "stop_rate_drop" => format!("greedy stops {:.0}% → {:.0}%", 100.0 * s.ref_stop_rate, 100.0 * s.cand_stop_rate),
            "kl_mean" => format!("KL mean {}", crate::report::html::fmt_num(s.kl.mean)),
            "kl_p99" => format!("KL p99 {:.2}", s.kl.p99),
            "top1" => format!("same top token {:.0}%", 100.0 * s.top1),
            "ppl_ratio" => format!("PPL ×{:.2}", s.ppl_ratio),
            "nonfinite_logits" => format!("{} NaN/Inf logits", s.nonfinite_cand + s.nonfinite_ref),
            "prompt_tokenization" => format!(
                "{} of {} prompts tokenize differently{}",
                s.prompt_token_mismatches,
                r.prompts.len(),
                s.first_token_mismatch.as_ref().map(|m| format!(" ({m})")).unwrap_or_default()
            ),
            other => format!("{other} {:.3}", j.value),
        });
    }
    let order = |p: &String| {
        ["NaN", "tokenize", "P(EOS", "greedy", "KL mean", "KL p99", "same top", "PPL"].iter().position(|k| p.contains(k)).unwrap_or(9)
    };
    parts.sort_by_key(order);
    if let Some(l) = &r.first_bad_layer {
        parts.push(format!("first diverging layer: {l}"));
    }
    parts.join("; ")
}
