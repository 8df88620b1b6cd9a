//! Whether two variants can be compared at all, decided from their facts before either is loaded
//! or scored: `compare` scores both on the reference's token ids, so the candidate must read
//! those ids as the same tokens; the layer trace (`--layers`) pairs hidden states layer by layer,
//! so it needs the same family and depth.
//!
//! `compare` refuses a pair that fails either; `bisect` refuses nothing here: a lineage step
//! that changed its tokenizer is a finding with its own id (`lineage.tokenizer-changed`,
//! `gguf.tokens-differ`) that the step is judged and blamed on, and a step of another depth is
//! compared without its layer trace (`trace_mismatch`).

use std::path::Path;

use crate::checkpoint::Facts;
use crate::error::{Error, Result};
use crate::format::config::ModelConfig;
use crate::format::tokens::TokenizerInfo;

/// How many of the ids both tokenizers have mean the same token string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub same: usize,
    pub shared: usize,
    /// The first id that differs, with its token in each.
    pub first_difference: Option<(u32, String, String)>,
}

/// Token-by-token agreement of two vocabularies over the ids both have.
pub fn token_agreement(a: &TokenizerInfo, b: &TokenizerInfo) -> Agreement {
    let shared = a.id_space.min(b.id_space).min(u32::MAX as u64) as u32;
    let mut out = Agreement { same: 0, shared: shared as usize, first_difference: None };
    for id in 0..shared {
        let (x, y) = (a.token(id), b.token(id));
        if x == y {
            out.same += 1;
        } else if out.first_difference.is_none() {
            out.first_difference = Some((id, x.unwrap_or_else(|| "(none)".into()), y.unwrap_or_else(|| "(none)".into())));
        }
    }
    out
}

/// Below this share of shared ids meaning the same token, two tokenizers are different id
/// spaces. Added tokens and resized vocabularies keep every old id (agreement ≈ 1); unrelated
/// tokenizers agree on almost nothing (the zoo's SentencePiece llama against its byte-level BPE
/// llama: 0 of 1000 ids; the zoo's "other tokenizer" GGUF: 259 of 1024). Half is far from both.
pub const MIN_TOKEN_AGREEMENT: f64 = 0.5;

/// The architecture family as far as the layer trace cares: llama.cpp runs Mistral as `llama`,
/// so a Mistral checkpoint and its GGUF are one family; transformers' text-only Gemma 3
/// (`gemma3_text`) converts to the GGUF architecture `gemma3`.
fn family(c: &ModelConfig) -> Option<&str> {
    match c.model_type.as_deref() {
        Some("mistral") => Some("llama"),
        Some("gemma3_text") => Some("gemma3"),
        other => other,
    }
}

/// Why hidden states of the two cannot be compared layer by layer, if they cannot.
pub fn trace_mismatch(a: &ModelConfig, b: &ModelConfig) -> Option<String> {
    if let (Some(x), Some(y)) = (family(a), family(b)) {
        if x != y {
            return Some(format!(
                "the architectures differ ({} vs {})",
                a.model_type.as_deref().unwrap_or(x),
                b.model_type.as_deref().unwrap_or(y)
            ));
        }
    }
    if let (Some(x), Some(y)) = (a.num_hidden_layers, b.num_hidden_layers) {
        if x != y {
            return Some(format!("the depths differ ({x} vs {y} layers)"));
        }
    }
    if let (Some(x), Some(y)) = (a.hidden_size, b.hidden_size) {
        if x != y {
            return Some(format!("the hidden sizes differ ({x} vs {y})"));
        }
    }
    None
}

/// `compare`'s up-front check: refuses, naming both paths, a pair whose tokenizers are different
/// id spaces (unless a `token_map` declares how they correspond), or (with `layers`) whose
/// layers do not pair up.
pub fn check(reference: (&Path, &Facts), candidate: (&Path, &Facts), layers: bool, token_map: bool) -> Result<()> {
    let refuse =
        |reason: String| Error::NotComparable { reference: reference.0.to_path_buf(), candidate: candidate.0.to_path_buf(), reason };
    if let (Some(a), Some(b), false) = (&reference.1.tokenizer, &candidate.1.tokenizer, token_map) {
        let g = token_agreement(a, b);
        if g.shared > 0 && (g.same as f64) < MIN_TOKEN_AGREEMENT * g.shared as f64 {
            let example = g
                .first_difference
                .map(|(id, x, y)| format!("; id {id} is {x:?} in the reference and {y:?} in the candidate"))
                .unwrap_or_default();
            return Err(refuse(format!(
                "their tokenizers are different id spaces: only {} of the {} ids both have mean the same token{example}. \
                 Both are scored on the reference's ids, so the candidate would read other tokens; compare checkpoints \
                 that share a tokenizer (`ckptcheck lint --source HF_DIR x.gguf` explains a conversion's tokenizer), or, \
                 for a trimmed or re-indexed vocabulary, declare how the ids correspond: `--token-map auto` (equal token \
                 strings) or `--token-map FILE`",
                g.same, g.shared
            )));
        }
    }
    if layers {
        if let Some(why) = trace_mismatch(&reference.1.config, &candidate.1.config) {
            return Err(refuse(format!("--layers pairs hidden states layer by layer, and {why}; run without --layers")));
        }
    }
    Ok(())
}
