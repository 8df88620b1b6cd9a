//! `compare --text FILE -c N`: a plain-text corpus scored the way `llama-perplexity -f FILE -c N`
//! scores it, so the numbers can be set beside llama.cpp's.
//!
//! The whole text is tokenized once by the reference's tokenizer as llama.cpp does
//! (`Variant::encode_text_stream`: BOS first when the tokenizer adds one), cut into `len / N`
//! chunks of N tokens (a partial last chunk is dropped), and each chunk's first token is replaced
//! by that BOS (llama-perplexity: `tokens[batch_start] = bos`). Each chunk runs
//! teacher-forced from position 0, and only its second half is scored: the rows at positions
//! N/2 … N−2, predicting tokens N/2+1 … N−1 (`first = n_ctx/2` in llama-perplexity), so every
//! scored token has at least N/2 tokens of context. Nothing is generated and no turn ends: the
//! behaviour checks of prompts (P(EOS), stops, flips) do not apply; KL, top-1, Δp and the PPL
//! ratio do, with llama.cpp's formulas (`metrics::estimates`).

use std::path::Path;

use super::prompts::Prompt;
use super::run::{CorpusInfo, ReferenceAnswers, MIN_SEQ_LIMIT};
use super::variant::Variant;
use crate::error::{Error, Result};
use crate::format::read_capped_text;

/// Text files larger than this are refused: wikitext-2's test split is 1.3 MB; 64 MiB is ~16 M
/// tokens, hours of scoring on a CPU already.
const MAX_TEXT_BYTES: u64 = 64 << 20;

/// The smallest `-c`: a chunk must score at least one token (positions N/2 … N−2).
const MIN_CTX: usize = 4;

/// Reads `path`, tokenizes it with `r`'s tokenizer and cuts it into chunks of `ctx` tokens (at
/// most `max_chunks`): the prompts (one per chunk, for labels) and the sequences to score.
pub fn load(path: &Path, r: &Variant, ctx: usize, max_chunks: Option<usize>) -> Result<(Vec<Prompt>, ReferenceAnswers)> {
    let field = |field: &str, detail: String| Error::Field { path: path.to_path_buf(), field: field.into(), detail };
    if ctx < MIN_CTX {
        return Err(field(
            "-c",
            format!("a chunk of {ctx} tokens scores nothing (the second half minus the last token): give -c {MIN_CTX} or more"),
        ));
    }
    let limit = r.model.spec.max_positions.unwrap_or(0).max(MIN_SEQ_LIMIT);
    if ctx > limit {
        return Err(field("-c", format!("chunks of {ctx} tokens exceed the {limit} positions the reference runs: lower -c")));
    }
    let text = read_capped_text(path, MAX_TEXT_BYTES, "a --text corpus")?;
    let (ids, bos) = r.encode_text_stream(&text)?;
    let available = ids.len() / ctx;
    if available == 0 {
        return Err(field(
            "text",
            format!(
                "the text encodes to {} tokens with the reference's tokenizer, fewer than one chunk of -c {ctx}: give more text or a smaller -c",
                ids.len()
            ),
        ));
    }
    let chunks = max_chunks.map_or(available, |m| m.min(available));
    let first = ctx / 2;
    let mut prompts = Vec::with_capacity(chunks);
    let mut seqs = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let mut chunk = ids[i * ctx..(i + 1) * ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        let rest = chunk.split_off(first + 1);
        prompts.push(Prompt::Text { text: format!("chunk {} (tokens {}–{})", i + 1, i * ctx, (i + 1) * ctx - 1), answer: None });
        seqs.push((chunk, rest));
    }
    let info = CorpusInfo { source: path.to_path_buf(), ctx, chunks, text_tokens: ids.len(), bos, ids: ids.into(), text: text.into() };
    Ok((prompts, ReferenceAnswers::corpus(r, seqs, info)))
}
