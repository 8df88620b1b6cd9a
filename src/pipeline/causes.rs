//! Structured causes of a failed step: `cause_id`, the evidence behind it, how confident the
//! attribution is, and the line that fixes it.
//!
//! A cause is one of three kinds: a static finding that explains the failure (its id, message
//! and hint); a rule that reads a collapse the numbers alone show but cannot explain (the rules
//! below: EOS masked as padding, a model trained on another template, a divergence that starts at
//! the embeddings); or, failing both, the numbers themselves. The rules only read what bisect
//! already measured (findings, comparisons, the layer trace); they never load a model.

use serde::Serialize;

use crate::checks::{ids, Finding, Severity};
use crate::compare::blame::Blame;
use crate::compare::run::CompareResult;
use crate::compare::thresholds::{Metric, Verdict};

/// The tokenizer pads with its EOS token and the model lost its end of turn: a collator that
/// masks pad labels masked every EOS label.
pub const EOS_MASKED_AS_PAD: &str = "cause.eos-masked-as-pad";
/// The step's chat template differs from its parent's and its numbers broke: it was probably
/// trained on another prompt format than the one it is scored (and served) with.
pub const TRAINED_ON_OTHER_TEMPLATE: &str = "cause.trained-on-other-template";
/// Every layer diverges, starting at the embedding output: the tokenizer or the embedding matrix
/// is the suspect, not the layers.
pub const TOKENIZER_OR_EMBEDDING: &str = "cause.tokenizer-or-embedding";

/// A conversion, quantization or merge failed on the numbers alone, and swapping a few of its
/// tensors into the parent reproduces most of the KL (`compare::blame`): those tensors broke.
pub const TENSORS_BLAMED: &str = "cause.tensors-blamed";

/// Every rule's cause id (docs/bisect.md documents each; a test holds them equal).
pub const RULE_IDS: &[&str] = &[EOS_MASKED_AS_PAD, TRAINED_ON_OTHER_TEMPLATE, TOKENIZER_OR_EMBEDDING, TENSORS_BLAMED];

/// How sure the attribution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn name(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    /// A finding id (`lineage.layers-swapped`), a rule id (`cause.eos-masked-as-pad`) or, when only
    /// the numbers explain the failure, `metric.<name>` of the most telling failing metric.
    pub cause_id: String,
    /// One sentence: what went wrong.
    pub summary: String,
    /// What it rests on, most telling first: findings' messages and measured numbers.
    pub evidence: Vec<String>,
    pub confidence: Confidence,
    /// What to do about it.
    pub fix: String,
}

impl Cause {
    /// The one-line form bisect prints after "breaks it:" (and the report's `cause` string).
    pub fn line(&self) -> String {
        if self.cause_id.starts_with("metric.") {
            return self.evidence.join("; ");
        }
        let mut s = format!("{}: {}", self.cause_id, self.summary);
        // A finding's cause repeats its message as the first evidence; the line says it once.
        let numbers: Vec<&str> = self.evidence.iter().filter(|e| **e != self.summary).map(String::as_str).collect();
        if !numbers.is_empty() {
            s.push_str("; ");
            s.push_str(&numbers.join("; "));
        }
        s
    }

    /// A static finding as the cause: its message first, then the numbers.
    pub fn of_finding(f: &Finding, numbers: Vec<String>) -> Cause {
        Cause {
            cause_id: f.id.to_string(),
            summary: f.message.clone(),
            evidence: std::iter::once(f.message.clone()).chain(numbers).collect(),
            confidence: if f.severity == Severity::Error { Confidence::High } else { Confidence::Medium },
            fix: if f.hint.is_empty() { "see the finding's documentation in docs/lint.md".into() } else { f.hint.clone() },
        }
    }

    /// A blame search's culprit (None when no small set of tensors explains the KL). `gguf`: the
    /// step is a GGUF, so the fix names llama.cpp's tensor names too.
    pub fn of_blame(b: &Blame, parent_label: &str, gguf: bool) -> Option<Cause> {
        let c = b.culprit.as_ref()?;
        let share = c.share?;
        let names: Vec<String> = c
            .tensors
            .iter()
            .map(|t| match gguf.then(|| crate::model::gguf_weights::gguf_name(t)).flatten() {
                Some(g) => format!("{t} (`{g}`)"),
                None => t.clone(),
            })
            .collect();
        // The summary says the culprit's share; the evidence is the search around it.
        let mut evidence: Vec<String> = Vec::new();
        evidence.extend(
            b.groups
                .iter()
                .filter(|g| g.share.is_some_and(|s| s >= 0.1))
                .map(|g| format!("{} alone: {:.0} % of the KL", g.group, 100.0 * g.share.unwrap_or(0.0))),
        );
        evidence.push(format!("{} hybrid forward passes of `{parent_label}` with some of this step's tensors", b.forward_passes));
        Some(Cause {
            cause_id: TENSORS_BLAMED.into(),
            summary: b.headline(),
            evidence,
            confidence: if share >= 0.8 { Confidence::High } else { Confidence::Medium },
            fix: format!(
                "redo the conversion or quantization of {} (keep them at higher precision, e.g. `llama-quantize --tensor-type NAME=q8_0`), or check what the converter did to them",
                names.join(", ")
            ),
        })
    }

    /// The numbers alone: the most telling failing metric names the cause.
    pub fn of_numbers(r: &CompareResult, numbers: Vec<String>) -> Cause {
        let top = r.judgements.iter().filter(|j| j.status == Verdict::Fail).map(|j| j.metric).min();
        Cause {
            cause_id: format!("metric.{}", top.map(Metric::name).unwrap_or("layers")),
            summary: "the outputs moved past a threshold and no static finding explains it".into(),
            evidence: numbers,
            confidence: Confidence::Low,
            fix: "bisect the step's own recipe: compare its checkpoints during training or conversion to find where the numbers move"
                .into(),
        }
    }
}

/// What the rules read of a step: its label, findings and comparison with the reference.
#[derive(Clone, Copy)]
pub struct StepView<'a> {
    pub label: &'a str,
    pub findings: &'a [Finding],
    pub vs_reference: Option<&'a CompareResult>,
}

/// At or above this cosine between the two models' embedding outputs, the rows are the same rows
/// with noise (quantization, precision), not moved or re-initialised ones (cosine ~0).
pub const EMBEDDING_SAME_ROWS_COSINE: f64 = 0.9;

/// The rule causes a failed step supports, most confident first. `parent` is the previous
/// step's report (for what changed since); `layer_rel_err` the layer-trace threshold the step
/// was compared with.
pub fn rules(step: StepView, parent: Option<StepView>, numbers: &[String], layer_rel_err: f64) -> Vec<Cause> {
    let mut out = Vec::new();
    let has = |s: &StepView, id: ids::FindingId| s.findings.iter().find(|f| f.id == id.as_str()).cloned();
    let Some(r) = step.vs_reference else { return out };
    let failed = |m: Metric| r.judgements.iter().any(|j| j.metric == m && j.status == Verdict::Fail);

    // 1. pad == eos and the end of turn collapsed.
    if failed(Metric::PEosRatio) {
        if let Some(pad) = has(&step, ids::SPECIAL_PAD_IS_EOS) {
            let parent_pads_apart = parent.as_ref().is_some_and(|p| has(p, ids::SPECIAL_PAD_IS_EOS).is_none());
            let mut evidence = vec![format!("P(EOS at turn end) {:.3} → {:.3}", r.summary.p_eos_ref_mean, r.summary.p_eos_cand_mean)];
            evidence.push(format!("{} ({}: `{}`)", pad.message, pad.file, pad.field.as_deref().unwrap_or("pad_token_id")));
            if parent_pads_apart {
                evidence.push(format!(
                    "the parent step `{}` pads with another token: pad was set to EOS for this step",
                    parent.as_ref().map(|p| p.label).unwrap_or("")
                ));
            }
            evidence.extend(numbers.iter().filter(|n| !n.starts_with("P(EOS")).cloned());
            out.push(Cause {
                cause_id: EOS_MASKED_AS_PAD.into(),
                summary: "the tokenizer pads with its EOS token and the model no longer ends its turns: a collator that masks pad labels (DataCollatorForLanguageModeling, most SFT scripts) masked every EOS label, so the end of turn was never trained".into(),
                evidence,
                confidence: if parent_pads_apart { Confidence::High } else { Confidence::Medium },
                fix: "give the tokenizer a pad token that is not EOS (an unused special token, or `<|endoftext|>`), or build labels from the attention mask so the final EOS keeps its label; then fine-tune again".into(),
            });
        }
    }

    // 2. the template changed and the numbers broke.
    if r.verdict == Verdict::Fail {
        if let Some(t) = has(&step, ids::LINEAGE_TEMPLATE_CHANGED) {
            let mut evidence = vec![format!("{} ({})", t.message, t.file)];
            evidence.extend(numbers.iter().cloned());
            out.push(Cause {
                cause_id: TRAINED_ON_OTHER_TEMPLATE.into(),
                summary: "the chat template this step renders differs from its parent's and its outputs broke on the parent's format: the model was probably trained on another prompt format".into(),
                evidence,
                confidence: Confidence::Medium,
                fix: "ship the template the model was fine-tuned with (and prompt it in that format), or fine-tune again on the parent's template".into(),
            });
        }
    }

    // 3. the divergence starts at the embeddings and never recovers, and the embedding rows are
    // other rows, not the same rows with noise: quantizing `token_embd` (Q2_K: cosine 0.956,
    // relative error 0.31) trips the relative threshold but keeps the direction of every row.
    if let Some(layers) = r.layers.as_ref().filter(|l| l.len() >= 2) {
        let thr = layer_rel_err;
        let over = |l: &crate::compare::run::LayerResult| l.nonfinite > 0 || l.rel_l2.is_nan() || l.rel_l2 > thr;
        // A NaN cosine (non-finite embeddings) counts as other rows.
        let other_rows = layers[0].cosine.is_nan() || layers[0].cosine < EMBEDDING_SAME_ROWS_COSINE;
        {
            if other_rows && layers.iter().all(over) {
                let last = layers.last().expect("len >= 2");
                let mut evidence = vec![format!(
                    "hidden states differ from the embedding output on: relative error {:.3} (cosine {:.3}) at the embeddings, {:.3} after {} (threshold {thr})",
                    layers[0].rel_l2, layers[0].cosine, last.rel_l2, last.name
                )];
                evidence.extend(numbers.iter().cloned());
                out.push(Cause {
                    cause_id: TOKENIZER_OR_EMBEDDING.into(),
                    summary: "every layer diverges from the embeddings on: the tokenizer (ids mapped to other rows) or the embedding matrix (re-initialised, resized, trained) is the suspect, not the layers".into(),
                    evidence,
                    // Alone it is the best lead; beside a more specific cause, or when the end of
                    // turn collapsed (a full fine-tune moves the embeddings too), it is a symptom.
                    confidence: if out.is_empty() && !failed(Metric::PEosRatio) { Confidence::Medium } else { Confidence::Low },
                    fix: "check that this step ships the tokenizer its embeddings were trained with and that `embed_tokens` was not re-initialised or resized with moved rows".into(),
                });
            }
        }
    }
    out.sort_by_key(|c| std::cmp::Reverse(c.confidence));
    out
}

/// Orders a failed step's causes: a static error first (it explains the numbers), then the rules,
/// then a static warning that names the symptom, then the numbers.
/// A rule of low confidence comes after the numbers: it is listed, never the headline over them.
pub fn rank(static_cause: Option<Cause>, rules: Vec<Cause>, numeric: Option<Cause>) -> Vec<Cause> {
    let mut out = Vec::new();
    let (first, later): (Vec<Cause>, Vec<Cause>) = static_cause.into_iter().partition(|c| c.confidence == Confidence::High);
    let (sure, weak): (Vec<Cause>, Vec<Cause>) = rules.into_iter().partition(|c| c.confidence > Confidence::Low);
    out.extend(first);
    out.extend(sure);
    out.extend(later);
    if out.is_empty() {
        out.extend(numeric);
    }
    out.extend(weak);
    out
}
