//! The compare procedure: the reference answers each prompt greedily (or the prompts file gives
//! its answer); both variants are then scored teacher-forced on prompt + reference answer +
//! end-of-turn token (identical ids for both); each candidate also generates on its own to see
//! whether it still stops.
//!
//! Scoring runs both models in lockstep over batches of sequences (`SCORE_BATCH_TOKENS` rows):
//! layer i of the reference, then of the candidate, their hidden states compared there (the
//! layer trace costs nothing extra), then layer i + 1. Logits are computed only for the rows
//! that predict an answer token, `LOGIT_ROWS` at a time, so rows × vocab is never held whole.
//! Generation is batched over prompts (`Model::generate_batch`).

use std::path::PathBuf;

use candle_core::Tensor;
use serde::Serialize;

use super::metrics::{self, summarize, Summary, TokenScore};
use super::prompts::Prompt;
use super::thresholds::{Judgement, Metric, Thresholds, Verdict};
use super::variant::Variant;
use crate::error::{Error, Result};

/// Sequences are refused past the reference's context (`max_position_embeddings`), but never
/// below this: the zoo's tiny models declare 256 positions and are run past it on purpose; a
/// config that declares none gets this.
pub const MIN_SEQ_LIMIT: usize = 16384;

/// Rows of sequences run through the two models together (a longer sequence runs alone).
const SCORE_BATCH_TOKENS: usize = 2048;
/// Rows whose logits are held at once per model (`LOGIT_ROWS × vocab` f32).
pub const LOGIT_ROWS: usize = 128;

#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Where the prompts come from (a JSONL file, or `<built-in prompts>`), for messages.
    pub prompts_from: PathBuf,
    pub max_new_tokens: usize,
    pub layers: bool,
    pub thresholds: Thresholds,
}

#[derive(Debug, Clone, Serialize)]
pub struct PromptResult {
    pub label: String,
    pub prompt_tokens: usize,
    pub answer_tokens: usize,
    pub answer: String,
    pub ref_stopped: bool,
    pub kl_mean: f64,
    pub kl_max: f64,
    pub top1: f64,
    /// P(end-of-turn token) where the reference turn ends.
    pub p_eos_ref: f64,
    pub p_eos_cand: f64,
    pub cand_stopped: bool,
    pub cand_generated_tokens: usize,
    /// Per-answer-token KL (for heat strips).
    pub token_kl: Vec<f64>,
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// 0 = embeddings, i = output of layer i−1.
    pub index: usize,
    pub name: String,
    pub rel_l2: f64,
    pub cosine: f64,
    pub nonfinite: usize,
    /// MoE layers: the share of positions whose top-k experts are the same set in both variants
    /// (absent for dense layers and the embeddings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_agreement: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareSummary {
    pub kl: Summary,
    pub top1: f64,
    pub top5_overlap: f64,
    pub delta_p_mean: f64,
    pub delta_p_rms: f64,
    pub delta_p_worst: f64,
    pub ppl_ref: f64,
    pub ppl_cand: f64,
    pub ppl_ratio: f64,
    pub nonfinite_ref: usize,
    pub nonfinite_cand: usize,
    pub p_eos_ref_mean: f64,
    pub p_eos_cand_mean: f64,
    pub ref_stop_rate: f64,
    pub cand_stop_rate: f64,
    pub scored_tokens: usize,
    /// Prompts the candidate's own tokenizer and template encode differently from the reference.
    pub prompt_token_mismatches: usize,
    /// The first such difference, in words.
    pub first_token_mismatch: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareResult {
    pub reference: String,
    pub candidate: String,
    pub prompts: Vec<PromptResult>,
    pub summary: CompareSummary,
    pub layers: Option<Vec<LayerResult>>,
    pub first_bad_layer: Option<String>,
    pub judgements: Vec<Judgement>,
    pub verdict: Verdict,
}

/// Reports progress; `tick` is called once per prompt and stage.
pub trait Progress {
    fn stage(&self, _name: &str, _total: usize) {}
    fn tick(&self) {}
}
pub struct NoProgress;
impl Progress for NoProgress {}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.to_vec2::<f32>().map_err(|e| Error::Tensor { path: "<forward pass>".into(), tensor: "logits".into(), detail: e.to_string() })
}

/// One prompt ready to score: its length, the reference's answer, whether the reference stopped,
/// the end-of-turn id appended, and the full teacher-forcing sequence.
struct Sequence {
    prompt_len: usize,
    answer: Vec<u32>,
    ref_stopped: bool,
    eot: Option<u32>,
    full: Vec<u32>,
}

/// How the candidate's own tokenizer and template encode the prompts, against the reference.
#[derive(Default)]
struct Tokenization {
    mismatches: usize,
    first: Option<String>,
}

/// Per-layer sums over all positions: (Σ‖Δ‖², Σ‖r‖², Σcos, nonfinite).
type LayerAcc = Vec<(f64, f64, f64, usize)>;

/// What scoring every sequence produced.
struct Scored {
    results: Vec<PromptResult>,
    tokens: Vec<TokenScore>,
    nonfinite_ref: usize,
    layers: Option<LayerAcc>,
    /// Per hidden-state index: (positions routed to the same experts, positions compared), for
    /// layers where both variants are sparse with the same top-k.
    routes: Vec<(usize, usize)>,
    positions: usize,
}

pub fn compare(r: &Variant, c: &Variant, prompts: &[Prompt], opts: &CompareOptions, progress: &dyn Progress) -> Result<CompareResult> {
    let answers = reference_answers(r, prompts, opts, progress)?;
    compare_with(r, c, prompts, &answers, opts, progress)
}

/// `compare` with the reference's answers already computed (`reference_answers`).
pub fn compare_with(
    r: &Variant,
    c: &Variant,
    prompts: &[Prompt],
    answers: &ReferenceAnswers,
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<CompareResult> {
    let (seqs, tokenization) = sequences(r, c, prompts, answers)?;
    progress.stage("scoring", prompts.len());
    let mut scored = score(r, c, prompts, &seqs, opts, progress)?;
    progress.stage("candidate generation", prompts.len());
    let own_prompts: Vec<&[u32]> = seqs.iter().map(|s| &s.full[..s.prompt_len]).collect();
    let generated = c.model.generate_batch(&own_prompts, opts.max_new_tokens, &c.stop_ids)?;
    for (res, (gen, stopped)) in scored.results.iter_mut().zip(generated) {
        res.cand_stopped = stopped;
        res.cand_generated_tokens = gen.len();
        progress.tick();
    }
    let summary = summarize_all(&scored, tokenization);
    let layers = scored.layers.as_ref().map(|acc| layer_results(acc, &scored.routes, scored.positions));
    let first_bad_layer = layers.as_ref().and_then(|ls| {
        ls.iter().find(|l| l.nonfinite > 0 || l.rel_l2.is_nan() || l.rel_l2 > opts.thresholds.layer_rel_err).map(|l| l.name.clone())
    });
    let judgements = judge(&summary, &opts.thresholds);
    let verdict = judgements.iter().map(|j| j.status).max().unwrap_or(Verdict::Pass);
    Ok(CompareResult {
        reference: r.label.clone(),
        candidate: c.label.clone(),
        prompts: scored.results,
        summary,
        layers,
        first_bad_layer,
        judgements,
        verdict,
    })
}

/// The reference's side of stage 1, which depends on no candidate: every prompt encoded by the
/// reference and answered by it (greedily, all prompts in one batch, or from the prompts file).
/// `bisect` computes it once per reference and reuses it for every step.
pub struct ReferenceAnswers {
    /// The reference this was computed for (its label), checked on use.
    reference: String,
    prompts: Vec<(Vec<u32>, Vec<u32>, bool)>,
}

pub fn reference_answers(r: &Variant, prompts: &[Prompt], opts: &CompareOptions, progress: &dyn Progress) -> Result<ReferenceAnswers> {
    progress.stage("reference answers", prompts.len());
    let limit = r.model.spec.max_positions.unwrap_or(0).max(MIN_SEQ_LIMIT);
    let mut encoded = Vec::with_capacity(prompts.len());
    for (i, p) in prompts.iter().enumerate() {
        let prompt_ids = r.encode_prompt(p)?;
        // A prompt that cannot be scored is the prompt's problem: name its file and number.
        let bad_prompt = |detail: String| Error::Field { path: opts.prompts_from.clone(), field: format!("prompt {}", i + 1), detail };
        if prompt_ids.len() + opts.max_new_tokens + 1 > limit {
            return Err(bad_prompt(format!(
                "prompt {:?} is {} tokens; with --max-new-tokens {} that exceeds the {limit} positions the reference runs ({}): shorten it",
                p.label(),
                prompt_ids.len(),
                opts.max_new_tokens,
                match r.model.spec.max_positions {
                    Some(n) if n >= MIN_SEQ_LIMIT => "its max_position_embeddings".to_string(),
                    _ => format!("{MIN_SEQ_LIMIT} for a model that declares a shorter context or none"),
                }
            )));
        }
        if prompt_ids.is_empty() {
            return Err(bad_prompt(format!("prompt {:?} encodes to no tokens; give it some text", p.label())));
        }
        encoded.push(prompt_ids);
    }
    // Answers the prompts file gives are taken as complete turns; the rest are generated.
    let mut stop = r.stop_ids.clone();
    stop.extend(r.turn_end_id);
    let to_generate: Vec<&[u32]> = prompts.iter().zip(&encoded).filter(|(p, _)| p.answer().is_none()).map(|(_, e)| e.as_slice()).collect();
    let mut generated = r.model.generate_batch(&to_generate, opts.max_new_tokens, &stop)?.into_iter();
    let mut out = Vec::with_capacity(prompts.len());
    for (p, prompt_ids) in prompts.iter().zip(encoded) {
        let (answer, stopped) = match p.answer() {
            Some(a) => (r.tokenizer.encode_raw(a)?, true),
            None => {
                let (mut answer, stopped) = generated.next().unwrap_or_default();
                if stopped {
                    answer.pop();
                }
                (answer, stopped)
            }
        };
        out.push((prompt_ids, answer, stopped));
        progress.tick();
    }
    Ok(ReferenceAnswers { reference: r.label.clone(), prompts: out })
}

/// The candidate's side of stage 1: its own encoding of each prompt against the reference's, and
/// the teacher-forcing sequences (checked against its vocabulary).
fn sequences(r: &Variant, c: &Variant, prompts: &[Prompt], answers: &ReferenceAnswers) -> Result<(Vec<Sequence>, Tokenization)> {
    if answers.reference != r.label || answers.prompts.len() != prompts.len() {
        return Err(Error::Device { detail: format!("internal: answers of {} reused for {}", answers.reference, r.label) });
    }
    let cand_rows = c.model.spec.vocab_size;
    let eot = r.turn_end_id.or_else(|| r.stop_ids.first().copied());
    let mut tokenization = Tokenization::default();
    let mut seqs = Vec::with_capacity(prompts.len());
    for (p, (prompt_ids, answer, ref_stopped)) in prompts.iter().zip(&answers.prompts) {
        // The candidate's own tokenizer and template on the same prompt (a GGUF uses its own).
        let own = c.encode_prompt(p).map_err(|e| e.to_string());
        if own.as_ref().ok() != Some(prompt_ids) {
            tokenization.mismatches += 1;
            if tokenization.first.is_none() {
                tokenization.first = Some(describe_mismatch(p, prompt_ids, &own, r, c));
            }
        }
        let mut full = prompt_ids.clone();
        full.extend(answer);
        full.extend(eot);
        if let Some(&bad) = full.iter().find(|&&i| i as usize >= cand_rows) {
            return Err(Error::Tensor {
                path: c.path.clone(),
                tensor: "model.embed_tokens.weight".into(),
                detail: format!("the reference's token id {bad} is beyond the candidate's vocabulary ({cand_rows}); the two use different tokenizers — run `ckptcheck lint` on both"),
            });
        }
        seqs.push(Sequence { prompt_len: prompt_ids.len(), answer: answer.clone(), ref_stopped: *ref_stopped, eot, full });
    }
    Ok((seqs, tokenization))
}

/// The first difference between the reference's and the candidate's encoding of a prompt, in words.
fn describe_mismatch(p: &Prompt, prompt_ids: &[u32], own: &std::result::Result<Vec<u32>, String>, r: &Variant, c: &Variant) -> String {
    match own {
        Err(e) => format!("prompt {:?}: the candidate cannot encode it: {e}", p.label()),
        Ok(ids) => {
            let at = ids.iter().zip(prompt_ids).position(|(a, b)| a != b).unwrap_or(ids.len().min(prompt_ids.len()));
            let show = |v: &[u32], t: &crate::format::tokens::TokenizerInfo| {
                v.get(at).map(|&i| format!("{i} {:?}", t.token(i).unwrap_or_default())).unwrap_or_else(|| "end".into())
            };
            format!(
                "prompt {:?}: {} vs {} tokens, first difference at token {at}: {} (reference) vs {} (candidate)",
                p.label(),
                prompt_ids.len(),
                ids.len(),
                show(prompt_ids, &r.tokenizer),
                show(ids, &c.tokenizer)
            )
        }
    }
}

/// Stage 2: both variants teacher-forced on every sequence, in lockstep batches; per-token
/// scores, P(EOS) at the turn end and (with `layers`) the hidden-state trace.
fn score(
    r: &Variant,
    c: &Variant,
    prompts: &[Prompt],
    seqs: &[Sequence],
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<Scored> {
    let mut out = Scored { results: Vec::new(), tokens: Vec::new(), nonfinite_ref: 0, layers: None, routes: Vec::new(), positions: 0 };
    let depth = (r.model.spec.layers, c.model.spec.layers);
    if opts.layers && depth.0 != depth.1 {
        return Err(Error::Tensor {
            path: "<layer trace>".into(),
            tensor: "hidden states".into(),
            detail: format!("the variants have {} and {} layers; --layers needs the same depth", depth.0, depth.1),
        });
    }
    let mut first = 0;
    while first < seqs.len() {
        let mut end = first + 1;
        let mut rows = seqs[first].full.len();
        while end < seqs.len() && rows + seqs[end].full.len() <= SCORE_BATCH_TOKENS {
            rows += seqs[end].full.len();
            end += 1;
        }
        let group = &seqs[first..end];
        let ids: Vec<&[u32]> = group.iter().map(|s| s.full.as_slice()).collect();
        let mut br = r.model.begin(&ids, None)?;
        let mut bc = c.model.begin(&ids, None)?;
        if opts.layers {
            let acc = out.layers.get_or_insert_with(|| vec![(0.0, 0.0, 0.0, 0); depth.0 + 1]);
            layer_trace(0, &br.hidden()?, &bc.hidden()?, acc)?;
            for i in 0..depth.0 {
                r.model.step(&mut br, None)?;
                c.model.step(&mut bc, None)?;
                layer_trace(i + 1, &br.hidden()?, &bc.hidden()?, acc)?;
                let k = (r.model.spec.moe.as_ref().map(|m| m.top_k), c.model.spec.moe.as_ref().map(|m| m.top_k));
                if let ((Some(kr), Some(kc)), Some(a), Some(b)) = (k, br.routes(), bc.routes()) {
                    if kr == kc && a.len() == b.len() {
                        out.routes.resize(out.routes.len().max(i + 2), (0, 0));
                        let same = a.chunks(kr).zip(b.chunks(kc)).filter(|(x, y)| x == y).count();
                        let slot = &mut out.routes[i + 1];
                        slot.0 += same;
                        slot.1 += a.len() / kr;
                    }
                }
            }
            out.positions += rows;
        }
        let segments = br.segments().to_vec();
        let hr = r.model.finish(br, None)?;
        let hc = c.model.finish(bc, None)?;
        for ((p, seq), g) in prompts[first..end].iter().zip(group).zip(&segments) {
            out.results.push(score_sequence(r, c, p, seq, g.start, &hr, &hc, &mut out.tokens, &mut out.nonfinite_ref)?);
            progress.tick();
        }
        first = end;
    }
    Ok(out)
}

/// Scores one sequence of a batch from the two models' final hidden states (`start`: its first
/// row): the head runs on the rows that predict answer tokens, `LOGIT_ROWS` at a time.
#[allow(clippy::too_many_arguments)]
fn score_sequence(
    r: &Variant,
    c: &Variant,
    p: &Prompt,
    seq: &Sequence,
    start: usize,
    hr: &Tensor,
    hc: &Tensor,
    all: &mut Vec<TokenScore>,
    nonfinite_ref: &mut usize,
) -> Result<PromptResult> {
    let full = &seq.full;
    // Row `pos − 1` predicts token `pos`, for every answer position (the end-of-turn included).
    let (lo, hi) = (seq.prompt_len - 1, full.len() - 1);
    let mut scores = Vec::with_capacity(hi - lo);
    let mut token_kl = Vec::with_capacity(hi - lo);
    let mut tokens = Vec::with_capacity(hi - lo);
    let (mut p_eos_ref, mut p_eos_cand) = (f64::NAN, f64::NAN);
    let narrow = |h: &Tensor, a: usize, n: usize| {
        h.narrow(0, start + a, n).map_err(|e| Error::Tensor {
            path: "<forward pass>".into(),
            tensor: "hidden".into(),
            detail: e.to_string(),
        })
    };
    for a in (lo..hi).step_by(LOGIT_ROWS) {
        let n = LOGIT_ROWS.min(hi - a);
        let lr = rows(&r.model.logits(&narrow(hr, a, n)?)?)?;
        let lc = rows(&c.model.logits(&narrow(hc, a, n)?)?)?;
        *nonfinite_ref += lr.iter().flatten().filter(|x| !x.is_finite()).count();
        for (k, (rr, cr)) in lr.iter().zip(&lc).enumerate() {
            let pos = a + k + 1;
            let s = metrics::score_token(rr, cr, full[pos] as usize);
            token_kl.push(s.kl);
            tokens.push(r.tokenizer.token(full[pos]).unwrap_or_default());
            scores.push(s);
            // The end-of-turn token is the last of `full`, predicted at the row before it.
            if let (Some(e), true) = (seq.eot, pos == full.len() - 1) {
                p_eos_ref = metrics::prob(rr, e as usize);
                p_eos_cand = metrics::prob(cr, e as usize);
            }
        }
    }
    let s = summarize(&token_kl);
    let result = PromptResult {
        label: p.label(),
        prompt_tokens: seq.prompt_len,
        answer_tokens: seq.answer.len(),
        answer: r.tokenizer.tokenizer.decode(&seq.answer, false).unwrap_or_default(),
        ref_stopped: seq.ref_stopped,
        kl_mean: s.mean,
        kl_max: s.max,
        top1: scores.iter().filter(|s| s.top1_agree).count() as f64 / scores.len().max(1) as f64,
        p_eos_ref,
        p_eos_cand,
        cand_stopped: false,
        cand_generated_tokens: 0,
        token_kl,
        tokens,
    };
    all.extend(scores);
    Ok(result)
}

/// Stage 4: the summary over every scored token and prompt.
fn summarize_all(scored: &Scored, tokenization: Tokenization) -> CompareSummary {
    let (all, results) = (&scored.tokens, &scored.results);
    let n = all.len().max(1) as f64;
    let kl: Vec<f64> = all.iter().map(|s| s.kl).collect();
    let nll_ref = all.iter().map(|s| s.nll_ref).sum::<f64>() / n;
    let nll_cand = all.iter().map(|s| s.nll_cand).sum::<f64>() / n;
    let dps: Vec<f64> = all.iter().map(|s| s.delta_p).filter(|d| !d.is_nan()).collect();
    let mean_of = |f: &dyn Fn(&PromptResult) -> f64| {
        let v: Vec<f64> = results.iter().map(f).filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let np = results.len().max(1) as f64;
    CompareSummary {
        kl: summarize(&kl),
        top1: all.iter().filter(|s| s.top1_agree).count() as f64 / n,
        top5_overlap: all.iter().map(|s| s.top5_overlap).sum::<f64>() / n,
        delta_p_mean: dps.iter().sum::<f64>() / dps.len().max(1) as f64,
        delta_p_rms: (dps.iter().map(|d| d * d).sum::<f64>() / dps.len().max(1) as f64).sqrt(),
        delta_p_worst: dps.iter().copied().fold(0.0, f64::min),
        ppl_ref: nll_ref.exp(),
        ppl_cand: nll_cand.exp(),
        ppl_ratio: (nll_cand - nll_ref).exp(),
        nonfinite_ref: scored.nonfinite_ref,
        nonfinite_cand: all.iter().map(|s| s.cand_nonfinite).sum(),
        p_eos_ref_mean: mean_of(&|r| r.p_eos_ref),
        p_eos_cand_mean: mean_of(&|r| r.p_eos_cand),
        ref_stop_rate: results.iter().filter(|r| r.ref_stopped).count() as f64 / np,
        cand_stop_rate: results.iter().filter(|r| r.cand_stopped).count() as f64 / np,
        scored_tokens: all.len(),
        prompt_token_mismatches: tokenization.mismatches,
        first_token_mismatch: tokenization.first,
    }
}

fn layer_results(acc: &LayerAcc, routes: &[(usize, usize)], positions: usize) -> Vec<LayerResult> {
    acc.iter()
        .enumerate()
        .map(|(i, (d2, r2, cos, nf))| LayerResult {
            index: i,
            name: if i == 0 { "embeddings".into() } else { format!("layer {}", i - 1) },
            rel_l2: (d2 / r2.max(f64::MIN_POSITIVE)).sqrt(),
            cosine: cos / positions.max(1) as f64,
            nonfinite: *nf,
            router_agreement: routes.get(i).filter(|r| r.1 > 0).map(|&(same, n)| same as f64 / n as f64),
        })
        .collect()
}

/// Adds one layer's hidden states (`[rows, hidden]` of both models) to the trace sums.
fn layer_trace(i: usize, a: &Tensor, b: &Tensor, acc: &mut LayerAcc) -> Result<()> {
    let ra = rows(a)?;
    let rb = rows(b)?;
    for (x, y) in ra.iter().zip(&rb) {
        if x.len() != y.len() {
            return Err(Error::Tensor {
                path: "<layer trace>".into(),
                tensor: format!("hidden state {i}"),
                detail: format!("hidden sizes differ ({} vs {})", x.len(), y.len()),
            });
        }
        let (mut d2, mut r2, mut c2, mut dot) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for (&u, &v) in x.iter().zip(y) {
            if !v.is_finite() {
                acc[i].3 += 1;
            }
            let (u, v) = (u as f64, v as f64);
            d2 += (v - u) * (v - u);
            r2 += u * u;
            c2 += v * v;
            dot += u * v;
        }
        acc[i].0 += d2;
        acc[i].1 += r2;
        acc[i].2 += dot / (r2.sqrt() * c2.sqrt()).max(f64::MIN_POSITIVE);
    }
    Ok(())
}

/// Applies the thresholds to the summary, in `Metric` order where it matters to readers.
pub fn judge(s: &CompareSummary, t: &Thresholds) -> Vec<Judgement> {
    let mut nonfinite = t.judge(
        Metric::NonfiniteLogits,
        (s.nonfinite_cand + s.nonfinite_ref) as f64,
        format!("{} NaN/Inf logits in the reference, {} in the candidate", s.nonfinite_ref, s.nonfinite_cand),
    );
    if s.kl.nan > 0 {
        nonfinite.status = Verdict::Fail;
        nonfinite.note.push_str(&format!("; {} positions with NaN KL", s.kl.nan));
        nonfinite.value += s.kl.nan as f64;
    }
    let mut j = vec![
        nonfinite,
        t.judge(Metric::KlMean, s.kl.mean, "mean KL(ref‖cand) per answer token, nats"),
        t.judge(Metric::KlP99, s.kl.p99, "99th percentile of per-token KL"),
        t.judge(Metric::Top1, s.top1, "share of answer positions with the same top token"),
        t.judge(Metric::PplRatio, s.ppl_ratio, "PPL(cand) / PPL(ref) on the reference answers"),
    ];
    if s.p_eos_ref_mean >= t.p_eos_ref_min {
        let ratio = s.p_eos_cand_mean / s.p_eos_ref_mean;
        j.push(t.judge(
            Metric::PEosRatio,
            ratio,
            format!("P(end-of-turn) at turn end: {:.3} → {:.3}", s.p_eos_ref_mean, s.p_eos_cand_mean),
        ));
    }
    j.push(t.judge(
        Metric::PromptTokenization,
        s.prompt_token_mismatches as f64,
        match &s.first_token_mismatch {
            Some(m) => format!("{} prompts encode differently with the candidate's own tokenizer/template; {m}", s.prompt_token_mismatches),
            None => "every prompt encodes to the same ids with the candidate's own tokenizer and template".into(),
        },
    ));
    j.push(t.judge(
        Metric::StopRateDrop,
        s.ref_stop_rate - s.cand_stop_rate,
        format!(
            "greedy generation stops on {:.0} % of prompts for the reference, {:.0} % for the candidate",
            100.0 * s.ref_stop_rate,
            100.0 * s.cand_stop_rate
        ),
    ));
    j
}
