//! Tokenizer ↔ config ↔ weights: the tokenizer's id space (base vocabulary plus added tokens) must
//! fit the rows of `embed_tokens` and `lm_head`, and those must agree with `config.vocab_size`.

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::hf;

/// Extra embedding rows beyond the tokenizer that are still normal: vocabularies are padded to a
/// multiple of 64/128 for kernels (Qwen2.5: 151936 rows for 151665 ids, +271 = 0.18 %). Beyond
/// both 1 % of the vocabulary and 1024 rows, something else is going on.
pub const PAD_ROWS_ABS: u64 = 1024;
pub const PAD_ROWS_REL: f64 = 0.01;

pub fn check(ctx: &Context, out: &mut Findings) {
    let (embed, head) = ctx.embedding_rows();
    let file_of = |name: &str| ctx.dir.tensor(name).map(|(f, _)| ctx.dir.rel(&f.path)).unwrap_or_default();

    if let (Some((en, er)), Some((hn, hr))) = (&embed, &head) {
        if er != hr {
            out.push(
                Finding::new(
                    ids::VOCAB_EMBED_HEAD_MISMATCH,
                    Severity::Error,
                    file_of(hn),
                    format!("`{en}` has {er} rows but `{hn}` has {hr}"),
                )
                .field(hn.clone())
                .hint("resize both with `model.resize_token_embeddings(len(tokenizer))` before saving"),
            );
        }
    }
    let rows = head.as_ref().or(embed.as_ref());
    let Some((rows_name, rows)) = rows.cloned() else { return };
    added_tokens_decoder(ctx, rows, out);

    if let Some(v) = ctx.config.vocab_size {
        if v != rows {
            out.push(
                Finding::new(
                    ids::VOCAB_CONFIG_MISMATCH,
                    Severity::Error,
                    hf::CONFIG,
                    format!("vocab_size is {v} but `{rows_name}` has {rows} rows; loaders will refuse or mis-shape the model"),
                )
                .field("vocab_size")
                .hint("set vocab_size to the embedding rows (resize_token_embeddings does both)"),
            );
        }
    }

    let Some(tok) = &ctx.tokenizer else { return };
    if tok.id_space > rows {
        let beyond: Vec<String> =
            tok.added.iter().filter(|t| t.id as u64 >= rows).take(5).map(|t| format!("{} `{}`", t.id, t.content)).collect();
        out.push(
            Finding::new(
                ids::VOCAB_TOKENIZER_EXCEEDS_ROWS,
                Severity::Error,
                hf::TOKENIZER_JSON,
                format!(
                    "the tokenizer has {} ids but `{rows_name}` has only {rows} rows; ids ≥ {rows} index past the embedding{}",
                    tok.id_space,
                    if beyond.is_empty() { String::new() } else { format!(" (first: {})", beyond.join(", ")) }
                ),
            )
            .hint("tokens were added without `model.resize_token_embeddings(len(tokenizer))`: resize, train the new rows, re-save"),
        );
    }

    let mut reported = std::collections::BTreeSet::new();
    for d in &ctx.decls {
        for &id in &d.ids {
            if id >= rows && reported.insert((d.file.clone(), d.field.clone(), id)) {
                out.push(
                    Finding::new(
                        ids::VOCAB_SPECIAL_ID_OUT_OF_RANGE,
                        Severity::Error,
                        &d.file,
                        format!("{} id {id} is not a row of `{rows_name}` ({rows} rows)", d.role.name()),
                    )
                    .field(d.field.clone())
                    .hint("the special token was added after the embeddings were sized, or the id belongs to another tokenizer"),
                );
            }
        }
    }

    let extra = rows.saturating_sub(tok.id_space);
    if extra > PAD_ROWS_ABS && extra as f64 > PAD_ROWS_REL * tok.id_space as f64 {
        out.push(
            Finding::new(
                ids::VOCAB_ROWS_FAR_BEYOND_TOKENIZER,
                Severity::Warning,
                file_of(&rows_name),
                format!("`{rows_name}` has {rows} rows but the tokenizer uses only {} ids ({extra} unused rows)", tok.id_space),
            )
            .field(rows_name.clone())
            .hint("the tokenizer may belong to another model (a smaller vocabulary saved beside a bigger model)"),
        );
    }
}

/// `tokenizer_config.json:added_tokens_decoder` maps ids (as strings) to tokens: a key that is
/// not an id, or an id no embedding row exists for, is a token the model can never see or emit.
/// Only the first few bad keys are named; the count covers the rest.
fn added_tokens_decoder(ctx: &Context, rows: u64, out: &mut Findings) {
    let Some(map) = ctx.dir.tokenizer_config.as_ref().and_then(|d| d.value.get("added_tokens_decoder")).and_then(|v| v.as_object()) else {
        return;
    };
    let bad: Vec<&String> = map.keys().filter(|k| k.parse::<u64>().map_or(true, |id| id >= rows)).collect();
    if bad.is_empty() {
        return;
    }
    let shown: Vec<&str> = bad.iter().take(5).map(|k| k.as_str()).collect();
    out.push(
        Finding::new(
            ids::VOCAB_ADDED_TOKEN_OUT_OF_RANGE,
            Severity::Error,
            hf::TOKENIZER_CONFIG,
            format!(
                "{} `added_tokens_decoder` key(s) are not ids below the {rows} embedding rows: {}{}",
                bad.len(),
                shown.join(", "),
                if bad.len() > shown.len() { ", …" } else { "" }
            ),
        )
        .field("added_tokens_decoder")
        .hint("the tokenizer config belongs to another vocabulary, or tokens were added without `resize_token_embeddings`"),
    );
}
