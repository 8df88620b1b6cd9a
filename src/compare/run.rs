//! The compare procedure: the reference answers each prompt greedily (or the prompts file gives
//! its answer); both variants are then scored teacher-forced on prompt + reference answer +
//! end-of-turn token (identical ids for both); each candidate also generates on its own to see
//! whether it still stops.
//!
//! Scoring runs both models in lockstep over batches of sequences (`SCORE_BATCH_TOKENS` rows):
//! layer i of the reference, then of the candidate, their hidden states compared there (the
//! layer trace costs nothing extra), then layer i + 1. Logits are computed only for the rows
//! that predict an answer token, `LOGIT_ROWS` at a time, so rows × vocab is never held whole.
//! Generation is batched over prompts (`Model::generate_batch`). `compare_all` does the same for
//! any number of variants and comparisons among them (bisect): each variant runs once.

use std::borrow::Cow;
use std::path::PathBuf;

use candle_core::Tensor;
use serde::Serialize;

use super::metrics::{self, summarize, Summary, TokenScore};
use super::prompts::Prompt;
use super::thresholds::{Judgement, Metric, Thresholds, Verdict};
use super::token_map::TokenMapInfo;
use super::variant::Variant;
use crate::error::{Error, Result};
use crate::model::decoder::Batch;

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
    /// The candidate's own greedy generation, decoded by its tokenizer (its stop token kept), to
    /// read beside the reference's `answer`.
    pub cand_answer: String,
    /// Per-answer-token KL (for heat strips).
    pub token_kl: Vec<f64>,
    pub tokens: Vec<String>,
    /// Where the candidate's own greedy answer first differs from the reference's (absent when
    /// they agree, and for prompts whose answer the prompts file gives).
    pub flip: Option<Flip>,
}

/// The first token at which two greedy answers differ.
#[derive(Debug, Clone, Serialize)]
pub struct Flip {
    /// Index into the answer (0 = the first generated token).
    pub at: usize,
    /// The reference's token there, or `<end>` when its answer ended first.
    pub reference: String,
    pub candidate: String,
}

/// How many greedy answers changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Flips {
    /// Prompts whose reference answer was generated (answers from the prompts file are not).
    pub prompts: usize,
    pub changed: usize,
    /// changed / prompts (NaN for no prompts).
    pub rate: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayerResult {
    /// 0 = embeddings, i = output of layer i−1.
    pub index: usize,
    pub name: String,
    pub rel_l2: f64,
    pub cosine: f64,
    pub nonfinite: usize,
    /// Largest finite |value| of the hidden state, reference and candidate: against 65504 (f16's
    /// largest), the headroom an f16 export or f16 inference has at this layer.
    pub max_abs_ref: f64,
    pub max_abs_cand: f64,
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
    /// Every token-level mean and rate with its standard error (llama.cpp's formulas).
    pub estimates: metrics::Estimates,
    /// Share of prompts whose greedy answer the candidate changes.
    pub flips: Flips,
    /// Percentiles shown that the token count cannot resolve (p99.9 over 24 tokens).
    pub sample_notes: Vec<String>,
    /// Scored on a corpus (`compare --text`): no turn ends, nothing generated.
    #[serde(skip)]
    pub corpus: bool,
    /// Compared through a token map (`compare --token-map`): every score above is on the
    /// shared vocabulary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_map: Option<TokenMapInfo>,
}

/// What a corpus comparison (`compare --text`) scored: the text cut into chunks of `ctx` tokens,
/// the second half of each scored, as `llama-perplexity -f FILE -c CTX` does.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusInfo {
    pub source: PathBuf,
    /// Tokens per chunk (`-c`).
    pub ctx: usize,
    pub chunks: usize,
    /// Tokens the whole text encodes to with the reference's tokenizer.
    pub text_tokens: usize,
    /// The BOS id that replaces each chunk's first token (the reference's tokenizer adds one).
    pub bos: Option<u32>,
    /// The text's ids (BOS first when added), for the candidate's own-tokenizer check. Shared:
    /// every comparison's result holds this info, and the text may be 64 MiB.
    #[serde(skip)]
    pub ids: std::sync::Arc<[u32]>,
    #[serde(skip)]
    pub text: std::sync::Arc<str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareResult {
    pub reference: String,
    pub candidate: String,
    /// `compare --text`: the corpus the chunks (`prompts`) come from; absent for prompts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corpus: Option<CorpusInfo>,
    pub prompts: Vec<PromptResult>,
    pub summary: CompareSummary,
    pub layers: Option<Vec<LayerResult>>,
    pub first_bad_layer: Option<String>,
    pub judgements: Vec<Judgement>,
    pub verdict: Verdict,
}

impl CompareResult {
    /// Judged on behaviour only (a training step): drift judgements (KL, top-1, PPL) are kept
    /// with their numbers but pass, their note saying why, and the verdict follows the rest.
    pub fn judge_behaviour_only(&mut self) {
        for j in self.judgements.iter_mut().filter(|j| j.metric.is_drift() && j.status != Verdict::Pass) {
            j.note.push_str(&format!(" (would be {}; not judged: a finetune step is meant to move)", j.status.name()));
            j.status = Verdict::Pass;
        }
        self.verdict = self.judgements.iter().map(|j| j.status).max().unwrap_or(Verdict::Pass);
    }
}

/// Reports progress; `tick` is called once per prompt and stage, `tokens` with the token
/// positions each batch ran (for a tokens/s rate).
pub trait Progress {
    fn stage(&self, _name: &str, _total: usize) {}
    fn tick(&self) {}
    fn tokens(&self, _n: usize) {}
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
/// Per hidden state: (Σ‖b−a‖², Σ‖a‖², Σ cosine, non-finite count in b, max |a|, max |b| over finite values).
type LayerAcc = Vec<(f64, f64, f64, usize, f32, f32)>;

pub fn compare(r: &Variant, c: &Variant, prompts: &[Prompt], opts: &CompareOptions, progress: &dyn Progress) -> Result<CompareResult> {
    let answers = reference_answers(r, prompts, opts, progress)?;
    compare_with(r, c, prompts, &answers, opts, progress)
}

/// One comparison `compare_all` makes: indices into its variants, and the thresholds that judge it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub reference: usize,
    pub candidate: usize,
    pub thresholds: Thresholds,
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
    let pair = Pair { reference: 0, candidate: 1, thresholds: opts.thresholds.clone() };
    compare_all(&[r, c], 0, &[pair], prompts, answers, opts, progress)?.pop().expect("one pair, one result")
}

/// Several comparisons from one teacher-forced pass per variant: every variant a pair names runs
/// once, on the sequences of `variants[answered_by]` (its prompt ids, its answer, its end of
/// turn), all in lockstep one layer at a time, and every pair is scored from those passes
/// (bisect: each step against the reference and against its parent). Each candidate generates
/// once. A variant that cannot run fails only the pairs that name it; the outer error is for
/// answers that do not belong to `variants[answered_by]`.
pub fn compare_all(
    variants: &[&Variant],
    answered_by: usize,
    pairs: &[Pair],
    prompts: &[Prompt],
    answers: &ReferenceAnswers,
    opts: &CompareOptions,
    progress: &dyn Progress,
) -> Result<Vec<Result<CompareResult>>> {
    let r = variants[answered_by];
    let seqs = sequences(r, prompts, answers)?;
    let n = variants.len();
    let mut used = vec![false; n];
    for p in pairs {
        used[p.reference] = true;
        used[p.candidate] = true;
    }
    let mut failed: Vec<Option<Error>> =
        (0..n).map(|v| if used[v] { fits_vocabulary(variants[v], r, prompts, &seqs).err() } else { None }).collect();
    let corpus = answers.corpus.as_ref();
    let tokenization: Vec<Tokenization> = (0..n)
        .map(|v| match (pairs.iter().any(|p| p.candidate == v), corpus) {
            (false, _) => Tokenization::default(),
            (true, None) => tokenize(r, variants[v], prompts, &seqs),
            (true, Some(info)) => tokenize_corpus(r, variants[v], info),
        })
        .collect();
    let mut acc: Vec<PairAcc> = pairs
        .iter()
        .map(|p| {
            // Layers pair up only at the same depth and width (`compare --layers` refuses other
            // pairs up front, `compat::check`); a lineage step of another shape is compared
            // without its trace.
            let (a, b) = (&variants[p.reference].model.spec, &variants[p.candidate].model.spec);
            let traced = opts.layers && a.layers == b.layers && a.hidden == b.hidden;
            // A token map translates the answering variant's ids; a pair's reference is read as it is.
            let error = (variants[p.reference].token_map.is_some()).then(|| Error::NotComparable {
                reference: variants[p.reference].path.clone(),
                candidate: variants[p.candidate].path.clone(),
                reason: "a variant read through a token map can only be a candidate".into(),
            });
            PairAcc { layers: traced.then(|| vec![(0.0, 0.0, 0.0, 0, 0.0, 0.0); a.layers + 1]), error, ..PairAcc::default() }
        })
        .collect();

    progress.stage("scoring", prompts.len());
    score(variants, answered_by, pairs, prompts, &seqs, &mut failed, &mut acc, progress);

    progress.stage("candidate generation", prompts.len());
    let ref_prompts: Vec<&[u32]> = seqs.iter().map(|s| &s.full[..s.prompt_len]).collect();
    // Per variant: each prompt's greedy tokens and whether it stopped.
    type Generated = Vec<(Vec<u32>, bool)>;
    let mut generated: Vec<Option<Generated>> = (0..n).map(|_| None).collect();
    for v in 0..n {
        let wanted = pairs.iter().zip(&acc).any(|(p, a)| p.candidate == v && a.error.is_none() && failed[p.reference].is_none());
        if !wanted || failed[v].is_some() || corpus.is_some() {
            continue;
        }
        let own: Vec<Cow<[u32]>> = ref_prompts.iter().map(|s| variants[v].own_ids(s).unwrap_or_default()).collect();
        let own_prompts: Vec<&[u32]> = own.iter().map(|s| s.as_ref()).collect();
        match variants[v].model.generate_batch(&own_prompts, opts.max_new_tokens, &variants[v].stop_ids) {
            Ok(g) => {
                progress.tokens(g.iter().map(|(t, _)| t.len()).sum());
                generated[v] = Some(g)
            }
            Err(e) => failed[v] = Some(e),
        }
    }
    prompts.iter().for_each(|_| progress.tick());

    let mut out = Vec::with_capacity(pairs.len());
    for (p, mut a) in pairs.iter().zip(acc) {
        let error = a.error.take().or_else(|| [p.reference, p.candidate].into_iter().find_map(|v| shared_error(&mut failed[v])));
        if let Some(e) = error {
            out.push(Err(e));
            continue;
        }
        let r = variants[p.reference];
        let c = variants[p.candidate];
        // Flips are against the pair's reference's own greedy answer: the answers scored (the
        // `answered_by` variant's) when it is the pair's reference, else what it generated.
        let own_answer =
            |gen: &[u32], stopped: bool| -> Vec<u32> { gen[..if stopped { gen.len().saturating_sub(1) } else { gen.len() }].to_vec() };
        let mut judged = 0;
        for (i, (((res, (gen, stopped)), seq), prompt)) in
            a.results.iter_mut().zip(generated[p.candidate].iter().flatten()).zip(&seqs).zip(prompts).enumerate()
        {
            res.cand_stopped = *stopped;
            res.cand_generated_tokens = gen.len();
            res.cand_answer = variants[p.candidate].tokenizer.tokenizer.decode(gen, false).unwrap_or_default();
            if prompt.answer().is_some() || corpus.is_some() {
                continue;
            }
            // Both answers in the answering variant's id space (a mapped one through its map),
            // their tokens shown in their own vocabularies.
            let reference = if p.reference == answered_by {
                Some((seq.answer.clone(), seq.answer.clone()))
            } else {
                generated[p.reference].as_ref().and_then(|g| g.get(i)).map(|(g, st)| {
                    let own = own_answer(g, *st);
                    (r.reference_ids(&own), own)
                })
            };
            let Some((reference, reference_own)) = reference else { continue };
            judged += 1;
            // The stop token ends the candidate's answer; the reference's was popped.
            let own = own_answer(gen, *stopped);
            res.flip = first_difference(&reference, &c.reference_ids(&own)).map(|at| Flip {
                at,
                reference: reference_own.get(at).map(|&t| r.tokenizer.token(t).unwrap_or_default()).unwrap_or_else(|| "<end>".into()),
                candidate: own.get(at).map(|&t| c.tokenizer.token(t).unwrap_or_default()).unwrap_or_else(|| "<end>".into()),
            });
        }
        let changed = a.results.iter().filter(|r| r.flip.is_some()).count();
        let flips = Flips { prompts: judged, changed, rate: if judged > 0 { changed as f64 / judged as f64 } else { f64::NAN } };
        let mut summary = summarize_all(&a, &tokenization[p.candidate]);
        summary.flips = flips;
        summary.token_map = c.token_map.as_ref().map(|m| {
            let mut info = m.info();
            if !a.mass_outside.is_empty() {
                info.ref_mass_outside_mean = a.mass_outside.iter().sum::<f64>() / a.mass_outside.len() as f64;
                info.ref_mass_outside_max = a.mass_outside.iter().copied().fold(0.0, f64::max);
            }
            info
        });
        if corpus.is_some() {
            // Nothing generated: no stop rates to judge.
            summary.corpus = true;
            summary.ref_stop_rate = f64::NAN;
            summary.cand_stop_rate = f64::NAN;
        }
        let layers = a.layers.as_ref().map(|l| layer_results(l, &a.routes, a.positions));
        let first_bad_layer = layers.as_ref().and_then(|ls| {
            ls.iter().find(|l| l.nonfinite > 0 || l.rel_l2.is_nan() || l.rel_l2 > p.thresholds.layer_rel_err).map(|l| l.name.clone())
        });
        let judgements = judge(&summary, &p.thresholds);
        let verdict = judgements.iter().map(|j| j.status).max().unwrap_or(Verdict::Pass);
        out.push(Ok(CompareResult {
            reference: variants[p.reference].label.clone(),
            candidate: variants[p.candidate].label.clone(),
            corpus: corpus.cloned(),
            prompts: a.results,
            summary,
            layers,
            first_bad_layer,
            judgements,
            verdict,
        }));
    }
    Ok(out)
}

/// A variant's error for a pair that names it: the error itself the first time, its message again
/// for later pairs.
fn shared_error(failed: &mut Option<Error>) -> Option<Error> {
    let e = failed.take()?;
    *failed = Some(Error::Again(e.to_string()));
    Some(e)
}

/// The reference's side of stage 1, which depends on no candidate: every prompt encoded by the
/// reference and answered by it (greedily, all prompts in one batch, or from the prompts file).
/// `bisect` computes it once per reference and reuses it for every step.
pub struct ReferenceAnswers {
    /// The reference this was computed for (its label), checked on use.
    reference: String,
    prompts: Vec<(Vec<u32>, Vec<u32>, bool)>,
    /// Chunks of a corpus (`compare::corpus`) rather than prompts: no end of turn is appended,
    /// nothing is generated.
    corpus: Option<CorpusInfo>,
}

impl ReferenceAnswers {
    /// Chunks of a text as sequences to score: each is (context, scored continuation).
    pub fn corpus(r: &Variant, chunks: Vec<(Vec<u32>, Vec<u32>)>, info: CorpusInfo) -> ReferenceAnswers {
        let prompts = chunks.into_iter().map(|(context, rest)| (context, rest, false)).collect();
        ReferenceAnswers { reference: r.label.clone(), prompts, corpus: Some(info) }
    }
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
    let generated = r.model.generate_batch(&to_generate, opts.max_new_tokens, &stop)?;
    progress.tokens(generated.iter().map(|(t, _)| t.len()).sum());
    let mut generated = generated.into_iter();
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
    Ok(ReferenceAnswers { reference: r.label.clone(), prompts: out, corpus: None })
}

/// The teacher-forcing sequences from the reference's answers: prompt ids, answer, end of turn.
fn sequences(r: &Variant, prompts: &[Prompt], answers: &ReferenceAnswers) -> Result<Vec<Sequence>> {
    if answers.reference != r.label || answers.prompts.len() != prompts.len() {
        return Err(Error::Device { detail: format!("internal: answers of {} reused for {}", answers.reference, r.label) });
    }
    let eot = if answers.corpus.is_some() { None } else { r.turn_end_id.or_else(|| r.stop_ids.first().copied()) };
    Ok(answers
        .prompts
        .iter()
        .map(|(prompt_ids, answer, ref_stopped)| {
            let mut full = prompt_ids.clone();
            full.extend(answer);
            full.extend(eot);
            Sequence { prompt_len: prompt_ids.len(), answer: answer.clone(), ref_stopped: *ref_stopped, eot, full }
        })
        .collect())
}

/// Every id of the sequences is a row of `v`'s embedding (through its token map, which must
/// have a counterpart for each).
fn fits_vocabulary(v: &Variant, r: &Variant, prompts: &[Prompt], seqs: &[Sequence]) -> Result<()> {
    let rows = v.model.spec.vocab_size;
    for (p, s) in prompts.iter().zip(seqs) {
        let own = match v.own_ids(&s.full) {
            Ok(own) => own,
            Err(i) => {
                let m = v.token_map.as_ref().expect("only a token map leaves an id without counterpart");
                let id = s.full[i];
                let part = if i < s.prompt_len { "prompt" } else { "reference's answer" };
                return Err(Error::NotComparable {
                    reference: r.path.clone(),
                    candidate: v.path.clone(),
                    reason: format!(
                        "{:?} uses the reference's token {id} {:?} (in the {part}), which the token map ({}) gives no counterpart \
                         in the candidate's vocabulary ({} of the reference's {} ids are shared); use prompts the candidate's vocabulary covers, \
                         or a map that covers this token",
                        p.label(),
                        r.tokenizer.token(id).unwrap_or_default(),
                        m.info().source,
                        m.pairs.len(),
                        m.reference_ids
                    ),
                });
            }
        };
        if let Some(&bad) = own.iter().find(|&&i| i as usize >= rows) {
            return Err(Error::Tensor {
                path: v.path.clone(),
                tensor: "model.embed_tokens.weight".into(),
                detail: format!("the reference's token id {bad} is beyond the candidate's vocabulary ({rows}); the two use different tokenizers — run `ckptcheck lint` on both"),
            });
        }
    }
    Ok(())
}

/// How the candidate's own tokenizer and template encode the prompts, against the reference's
/// ids (a GGUF uses its own).
fn tokenize(r: &Variant, c: &Variant, prompts: &[Prompt], seqs: &[Sequence]) -> Tokenization {
    let mut t = Tokenization::default();
    for (p, s) in prompts.iter().zip(seqs) {
        let prompt_ids = &s.full[..s.prompt_len];
        let own = c.encode_prompt(p).map_err(|e| e.to_string());
        if own.as_ref().ok().map(|ids| c.reference_ids(ids)).as_deref() != Some(prompt_ids) {
            t.mismatches += 1;
            if t.first.is_none() {
                t.first = Some(describe_mismatch(p, prompt_ids, &own, r, c));
            }
        }
    }
    t
}

/// How the candidate's own tokenizer encodes a corpus against the reference's ids: the chunks
/// (of the reference's length) that differ, and the first difference in words.
fn tokenize_corpus(r: &Variant, c: &Variant, info: &CorpusInfo) -> Tokenization {
    let own = match c.encode_text_stream(&info.text) {
        Ok((ids, _)) => ids,
        Err(e) => return Tokenization { mismatches: info.chunks, first: Some(format!("the candidate cannot encode the text: {e}")) },
    };
    let chunk = |ids: &[u32], i: usize| ids.get(i * info.ctx..((i + 1) * info.ctx).min(ids.len())).map(<[u32]>::to_vec).unwrap_or_default();
    let own_in_ref = c.reference_ids(&own);
    let mismatches = (0..info.chunks).filter(|&i| chunk(&own_in_ref, i) != chunk(&info.ids, i)).count();
    let first = first_difference(&info.ids, &own_in_ref).map(|at| {
        let show = |v: &[u32], t: &crate::format::tokens::TokenizerInfo| {
            v.get(at).map(|&i| format!("{i} {:?}", t.token(i).unwrap_or_default())).unwrap_or_else(|| "end".into())
        };
        format!(
            "the text is {} tokens with the reference's tokenizer and {} with the candidate's, first difference at token {at}: {} (reference) vs {} (candidate)",
            info.ids.len(),
            own.len(),
            show(&info.ids, &r.tokenizer),
            show(&own, &c.tokenizer)
        )
    });
    Tokenization { mismatches, first: first.filter(|_| mismatches > 0) }
}

/// The first difference between the reference's and the candidate's encoding of a prompt, in words.
fn describe_mismatch(p: &Prompt, prompt_ids: &[u32], own: &std::result::Result<Vec<u32>, String>, r: &Variant, c: &Variant) -> String {
    match own {
        Err(e) => format!("prompt {:?}: the candidate cannot encode it: {e}", p.label()),
        Ok(ids) => {
            let at = c.reference_ids(ids).iter().zip(prompt_ids).position(|(a, b)| a != b).unwrap_or(ids.len().min(prompt_ids.len()));
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

/// Stage 2: every variant teacher-forced on every sequence, all in lockstep batches; per pair,
/// per-token scores, P(EOS) at the turn end and (with `layers`) the hidden-state trace. A
/// variant whose pass fails is dropped from the lockstep (`failed`).
#[allow(clippy::too_many_arguments)]
fn score(
    variants: &[&Variant],
    answered_by: usize,
    pairs: &[Pair],
    prompts: &[Prompt],
    seqs: &[Sequence],
    failed: &mut [Option<Error>],
    acc: &mut [PairAcc],
    progress: &dyn Progress,
) {
    let n = variants.len();
    let live = |failed: &[Option<Error>], acc: &[PairAcc], v: usize| {
        failed[v].is_none() && pairs.iter().zip(acc).any(|(p, a)| a.error.is_none() && (p.reference == v || p.candidate == v))
    };
    let traced = |failed: &[Option<Error>], acc: &[PairAcc], k: usize| acc[k].layers.is_some() && scoring(pairs, failed, acc, k);
    let mut first = 0;
    while first < seqs.len() {
        let mut end = first + 1;
        let mut rows_in = seqs[first].full.len();
        while end < seqs.len() && rows_in + seqs[end].full.len() <= SCORE_BATCH_TOKENS {
            rows_in += seqs[end].full.len();
            end += 1;
        }
        let group = &seqs[first..end];
        let ids: Vec<&[u32]> = group.iter().map(|s| s.full.as_slice()).collect();
        let mut batches: Vec<Option<Batch>> = (0..n).map(|_| None).collect();
        for v in 0..n {
            if live(failed, acc, v) {
                // A mapped variant reads the reference's ids through its map (every one has a
                // counterpart: `fits_vocabulary`).
                let own: Vec<Cow<[u32]>> = ids.iter().map(|s| variants[v].own_ids(s).unwrap_or_default()).collect();
                let own: Vec<&[u32]> = own.iter().map(|s| s.as_ref()).collect();
                match variants[v].model.begin(&own, None) {
                    Ok(b) => batches[v] = Some(b),
                    Err(e) => failed[v] = Some(e),
                }
            }
        }
        let depth = (0..n).filter(|&v| batches[v].is_some()).map(|v| variants[v].model.spec.layers).max().unwrap_or(0);
        for layer in 0..=depth {
            if layer > 0 {
                for v in 0..n {
                    let Some(b) = batches[v].as_mut().filter(|b| b.layers_done() < variants[v].model.spec.layers) else { continue };
                    if let Err(e) = variants[v].model.step(b, None) {
                        failed[v] = Some(e);
                        batches[v] = None;
                    }
                }
            }
            // Each variant's hidden rows taken once per layer, for every pair traced with it.
            let mut hidden: Vec<Option<Vec<Vec<f32>>>> = (0..n).map(|_| None).collect();
            for k in 0..pairs.len() {
                if !traced(failed, acc, k) {
                    continue;
                }
                let (pr, pc) = (pairs[k].reference, pairs[k].candidate);
                for v in [pr, pc] {
                    if hidden[v].is_none() {
                        match batches[v].as_ref().map(|b| b.hidden().and_then(|h| rows(&h))) {
                            Some(Ok(h)) => hidden[v] = Some(h),
                            Some(Err(e)) => failed[v] = Some(e),
                            None => {}
                        }
                    }
                }
                if let (Some(a), Some(b)) = (&hidden[pr], &hidden[pc]) {
                    let l = acc[k].layers.as_mut().expect("traced");
                    if let Err(e) = layer_trace(layer, a, b, l) {
                        acc[k].error = Some(e);
                    }
                }
                if layer > 0 {
                    let top_k = |v: usize| variants[v].model.spec.moe.as_ref().map(|m| m.top_k);
                    let routes = |v: usize| batches[v].as_ref().and_then(|b| b.routes());
                    if let ((Some(kr), Some(kc)), Some(a), Some(b)) = ((top_k(pr), top_k(pc)), routes(pr), routes(pc)) {
                        if kr == kc && a.len() == b.len() {
                            let r = &mut acc[k].routes;
                            r.resize(r.len().max(layer + 1), (0, 0));
                            r[layer].0 += a.chunks(kr).zip(b.chunks(kc)).filter(|(x, y)| x == y).count();
                            r[layer].1 += a.len() / kr;
                        }
                    }
                }
            }
        }
        for k in 0..pairs.len() {
            if traced(failed, acc, k) {
                acc[k].positions += rows_in;
            }
        }
        let segments = match batches.iter().flatten().next() {
            Some(b) => b.segments().to_vec(),
            None => return,
        };
        let mut finals: Vec<Option<Tensor>> = (0..n).map(|_| None).collect();
        for v in 0..n {
            if let Some(b) = batches[v].take() {
                match variants[v].model.finish(b, None) {
                    Ok(h) => finals[v] = Some(h),
                    Err(e) => failed[v] = Some(e),
                }
            }
        }
        progress.tokens(rows_in);
        for ((p, seq), g) in prompts[first..end].iter().zip(group).zip(&segments) {
            score_sequence(variants, answered_by, pairs, p, seq, g.start, &finals, failed, acc);
            progress.tick();
        }
        first = end;
    }
}

/// Whether pair `k` is still being scored: no error of its own, both its variants running.
fn scoring(pairs: &[Pair], failed: &[Option<Error>], acc: &[PairAcc], k: usize) -> bool {
    acc[k].error.is_none() && failed[pairs[k].reference].is_none() && failed[pairs[k].candidate].is_none()
}

/// What one pair accumulates over all sequences.
#[derive(Default)]
struct PairAcc {
    results: Vec<PromptResult>,
    tokens: Vec<TokenScore>,
    nonfinite_ref: usize,
    layers: Option<LayerAcc>,
    /// Per hidden-state index: (positions routed to the same experts, positions compared), for
    /// layers where both variants are sparse with the same top-k.
    routes: Vec<(usize, usize)>,
    positions: usize,
    /// Through a token map: the reference's probability outside the shared vocabulary, per
    /// scored position.
    mass_outside: Vec<f64>,
    /// Why this pair cannot be scored (its own reason; a variant's is in `failed`).
    error: Option<Error>,
}

/// One pair's scores on one sequence so far.
struct SeqScores {
    scores: Vec<TokenScore>,
    /// Through a token map: the reference's probability outside the shared vocabulary, per position.
    mass_outside: Vec<f64>,
    token_kl: Vec<f64>,
    tokens: Vec<String>,
    p_eos: (f64, f64),
    nonfinite_ref: usize,
}

/// Scores one sequence of a batch for every pair from the variants' final hidden states
/// (`start`: its first row): each variant's head runs once on the rows that predict answer tokens,
/// in chunks of `LOGIT_ROWS` shared out among the variants.
#[allow(clippy::too_many_arguments)]
fn score_sequence(
    variants: &[&Variant],
    answered_by: usize,
    pairs: &[Pair],
    p: &Prompt,
    seq: &Sequence,
    start: usize,
    finals: &[Option<Tensor>],
    failed: &mut [Option<Error>],
    acc: &mut [PairAcc],
) {
    let n = variants.len();
    let full = &seq.full;
    let r = variants[answered_by];
    // Row `pos − 1` predicts token `pos`, for every answer position (the end-of-turn included).
    let (lo, hi) = (seq.prompt_len - 1, full.len() - 1);
    let heads = finals.iter().filter(|f| f.is_some()).count().max(1);
    let chunk = (2 * LOGIT_ROWS / heads).clamp(16, LOGIT_ROWS);
    let mut per: Vec<SeqScores> = pairs
        .iter()
        .map(|_| SeqScores {
            scores: Vec::new(),
            mass_outside: Vec::new(),
            token_kl: Vec::new(),
            tokens: Vec::new(),
            p_eos: (f64::NAN, f64::NAN),
            nonfinite_ref: 0,
        })
        .collect();
    for a in (lo..hi).step_by(chunk) {
        let m = chunk.min(hi - a);
        let mut logits: Vec<Option<Vec<Vec<f32>>>> = (0..n).map(|_| None).collect();
        for k in 0..pairs.len() {
            if !scoring(pairs, failed, acc, k) {
                continue;
            }
            for v in [pairs[k].reference, pairs[k].candidate] {
                if logits[v].is_some() || failed[v].is_some() {
                    continue;
                }
                let Some(h) = &finals[v] else { continue };
                let got = h
                    .narrow(0, start + a, m)
                    .map_err(|e| Error::Tensor { path: "<forward pass>".into(), tensor: "hidden".into(), detail: e.to_string() })
                    .and_then(|h| variants[v].model.logits(&h))
                    .and_then(|l| rows(&l));
                match got {
                    Ok(l) => logits[v] = Some(l),
                    Err(e) => failed[v] = Some(e),
                }
            }
            let (Some(lr), Some(lc)) = (&logits[pairs[k].reference], &logits[pairs[k].candidate]) else { continue };
            let s = &mut per[k];
            s.nonfinite_ref += lr.iter().flatten().filter(|x| !x.is_finite()).count();
            let map = variants[pairs[k].candidate].token_map.as_deref();
            // Another id space: both rows cut to the shared vocabulary (each renormalized
            // there), the reference's mass outside it kept aside; ids are then slots of it.
            let slot = |id: u32| match map {
                None => id as usize,
                Some(m) => m.slot(id).unwrap_or(usize::MAX),
            };
            for (j, (rr, cr)) in lr.iter().zip(lc).enumerate() {
                let pos = a + j + 1;
                let (rs, cs): (Cow<[f32]>, Cow<[f32]>) = match map {
                    None => (Cow::Borrowed(rr), Cow::Borrowed(cr)),
                    Some(m) => {
                        let lp = metrics::log_softmax(rr);
                        let inside: f64 = m.pairs.iter().map(|&(id, _)| lp[id as usize].exp()).sum();
                        s.mass_outside.push((1.0 - inside).max(0.0));
                        let (rs, cs) = m.restrict(rr, cr);
                        (Cow::Owned(rs), Cow::Owned(cs))
                    }
                };
                let mut t = metrics::score_token(&rs, &cs, slot(full[pos]));
                if map.is_some() {
                    // Non-finite logits anywhere in the candidate's row, not only the shared part.
                    t.cand_nonfinite = cr.iter().filter(|x| !x.is_finite()).count();
                }
                s.token_kl.push(t.kl);
                s.tokens.push(r.tokenizer.token(full[pos]).unwrap_or_default());
                s.scores.push(t);
                // The end-of-turn token is the last of `full`, predicted at the row before it.
                if let (Some(e), true) = (seq.eot, pos == full.len() - 1) {
                    s.p_eos = (metrics::prob(&rs, slot(e)), metrics::prob(&cs, slot(e)));
                }
            }
        }
    }
    for (k, s) in per.into_iter().enumerate() {
        if !scoring(pairs, failed, acc, k) {
            continue;
        }
        let sum = summarize(&s.token_kl);
        acc[k].results.push(PromptResult {
            label: p.label(),
            prompt_tokens: seq.prompt_len,
            answer_tokens: seq.answer.len(),
            answer: r.tokenizer.tokenizer.decode(&seq.answer, false).unwrap_or_default(),
            ref_stopped: seq.ref_stopped,
            kl_mean: sum.mean,
            kl_max: sum.max,
            top1: s.scores.iter().filter(|s| s.top1_agree).count() as f64 / s.scores.len().max(1) as f64,
            p_eos_ref: s.p_eos.0,
            p_eos_cand: s.p_eos.1,
            cand_stopped: false,
            cand_generated_tokens: 0,
            cand_answer: String::new(),
            token_kl: s.token_kl,
            tokens: s.tokens,
            flip: None,
        });
        acc[k].nonfinite_ref += s.nonfinite_ref;
        acc[k].tokens.extend(s.scores);
        acc[k].mass_outside.extend(s.mass_outside);
    }
}

/// Stage 4: the summary over every scored token and prompt.
fn summarize_all(scored: &PairAcc, tokenization: &Tokenization) -> CompareSummary {
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
        first_token_mismatch: tokenization.first.clone(),
        estimates: metrics::estimates(all),
        flips: Flips::default(),
        sample_notes: metrics::unresolved_percentiles(all.len()),
        token_map: None,
        corpus: false,
    }
}

/// The first index where two token sequences differ (a length difference counts), if any.
fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None => (a.len() != b.len()).then(|| a.len().min(b.len())),
    }
}

fn layer_results(acc: &LayerAcc, routes: &[(usize, usize)], positions: usize) -> Vec<LayerResult> {
    acc.iter()
        .enumerate()
        .map(|(i, (d2, r2, cos, nf, max_ref, max_cand))| LayerResult {
            max_abs_ref: *max_ref as f64,
            max_abs_cand: *max_cand as f64,
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
fn layer_trace(i: usize, ra: &[Vec<f32>], rb: &[Vec<f32>], acc: &mut LayerAcc) -> Result<()> {
    for (x, y) in ra.iter().zip(rb) {
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
            } else {
                acc[i].5 = acc[i].5.max(v.abs());
            }
            if u.is_finite() {
                acc[i].4 = acc[i].4.max(u.abs());
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
    let (tokens, positions, on, items) = if s.corpus {
        ("scored text token", "scored text", "the text", "chunks")
    } else {
        ("answer token", "answer", "the reference answers", "prompts")
    };
    let mut j = vec![
        nonfinite,
        t.judge(Metric::KlMean, s.kl.mean, format!("mean KL(ref‖cand) per {tokens}, nats")),
        t.judge(Metric::KlP99, s.kl.p99, "99th percentile of per-token KL"),
        t.judge(Metric::Top1, s.top1, format!("share of {positions} positions with the same top token")),
        t.judge(Metric::PplRatio, s.ppl_ratio, format!("PPL(cand) / PPL(ref) on {on}")),
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
            Some(m) => format!("{} {items} encode differently with the candidate's own tokenizer/template; {m}", s.prompt_token_mismatches),
            None => format!("every one of the {items} encodes to the same ids with the candidate's own tokenizer and template"),
        },
    ));
    if s.corpus {
        return j; // nothing generated
    }
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

/// f16's largest finite value.
const F16_MAX: f64 = 65504.0;

/// A line when some layer's hidden state comes within 4× of f16's range (or past it) in either
/// model: an f16 export or an f16 forward overflows there (the Gemma-style NaN of an fp16 run).
pub fn fp16_headroom(layers: &[LayerResult]) -> Option<String> {
    let (l, who, m) = layers
        .iter()
        .flat_map(|l| [(l, "reference", l.max_abs_ref), (l, "candidate", l.max_abs_cand)])
        .max_by(|a, b| a.2.total_cmp(&b.2))?;
    (m * 4.0 > F16_MAX).then(|| {
        let verdict = if m > F16_MAX {
            "past f16's largest value 65504: an f16 export or f16 run overflows to inf/NaN there"
        } else {
            "within 4× of f16's largest value 65504"
        };
        format!("fp16 headroom: the {who}'s hidden state reaches |{m:.4e}| at {}, {verdict}", l.name)
    })
}
