//! Special tokens: BOS/EOS/PAD ids must agree between `config.json`, `generation_config.json`,
//! `tokenizer_config.json` and `special_tokens_map.json`, and every token string must exist in
//! `tokenizer.json`.

use std::collections::BTreeSet;

use super::{grouped, Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::tokens::{stop_decl, stop_ids, Role, SpecialDecl};

/// Invalid values quoted in one message; the count says how many there are in all.
const SHOWN_BAD_VALUES: usize = 3;

/// `*_token_id` fields that hold something other than a non-negative integer or a list of them
/// (a string, -1, 2.5, 1e30): transformers refuses or misreads them, and the other checks would
/// silently see no id.
fn invalid_ids(ctx: &Context, out: &mut Findings) {
    for doc in [&ctx.dir.config, &ctx.dir.generation_config].into_iter().flatten() {
        for role in Role::ALL {
            let field = format!("{}_token_id", role.name());
            let Some(v) = doc.value.get(&field).filter(|v| !v.is_null()) else { continue };
            let items: Vec<&serde_json::Value> = match v {
                serde_json::Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            let bad: Vec<String> = items.iter().filter(|x| x.as_u64().is_none()).map(|x| x.to_string()).collect();
            if bad.is_empty() {
                continue;
            }
            let shown: Vec<&str> = bad.iter().take(SHOWN_BAD_VALUES).map(String::as_str).collect();
            out.push(
                Finding::new(
                    ids::SPECIAL_INVALID_ID,
                    Severity::Error,
                    doc.file_name(),
                    format!(
                        "`{field}` holds {} value(s) that are not token ids: {}{}",
                        bad.len(),
                        shown.join(", "),
                        if bad.len() > shown.len() { ", …" } else { "" }
                    ),
                )
                .field(field)
                .hint("a token id is a non-negative integer (or a list of them): write the tokenizer's id for the token"),
            );
        }
    }
}

/// Ids named in full in a message; longer sets end with how many there are in all.
const SHOWN_IDS: usize = 8;

pub fn check(ctx: &Context, out: &mut Findings) {
    invalid_ids(ctx, out);
    for d in ctx.decls.iter().filter(|d| d.more_ids > 0) {
        out.push(
            Finding::new(
                ids::SPECIAL_TOO_MANY_IDS,
                Severity::Warning,
                &d.file,
                format!(
                    "{} lists {} ids; only the first {} are checked (a real {} list has a handful)",
                    d.field,
                    grouped(d.listed_ids() as u64),
                    d.ids.len(),
                    d.role.name()
                ),
            )
            .field(d.field.clone())
            .hint("list only the tokens that really end generation; every id listed stops `generate()`"),
        );
    }
    for d in &ctx.decls {
        if let (Some(tok), true, Some(_)) = (&d.token, d.ids.is_empty(), &ctx.tokenizer) {
            out.push(
                Finding::new(
                    ids::SPECIAL_UNKNOWN_TOKEN,
                    Severity::Error,
                    &d.file,
                    format!("{} token `{tok}` is not in tokenizer.json", d.role.name()),
                )
                .field(d.field.clone())
                .hint("the side files come from another tokenizer: save tokenizer and model together with `save_pretrained`"),
            );
        }
    }

    let (stop, stop_file) = stop_ids(&ctx.decls);
    for role in [Role::Bos, Role::Eos, Role::Pad] {
        let decls: Vec<&SpecialDecl> = ctx.decls.iter().filter(|d| d.role == role && !d.ids.is_empty()).collect();
        // EOS is judged against the stop set `generate()` uses; the others against the first file.
        let reference: Option<(BTreeSet<u64>, String, usize)> = if role == Role::Eos {
            stop_decl(&ctx.decls).map(|(d, f)| (stop.iter().copied().collect(), format!("{f} eos_token_id"), d.listed_ids()))
        } else {
            decls.first().map(|d| (d.ids.iter().copied().collect(), format!("{} {}", d.file, d.field), d.listed_ids()))
        };
        let Some((ref_ids, ref_name, ref_listed)) = reference else { continue };
        for d in &decls {
            let ids: BTreeSet<u64> = d.ids.iter().copied().collect();
            if ids.is_subset(&ref_ids) || ref_ids.is_subset(&ids) {
                continue;
            }
            let shown = |s: &BTreeSet<u64>, listed: usize| describe_ids(ctx, s.iter().copied(), listed);
            let (id, severity, hint) = match role {
                Role::Eos => (
                    ids::SPECIAL_EOS_MISMATCH,
                    Severity::Warning,
                    "make generation_config.json's eos_token_id include the token the tokenizer and chat template end turns with",
                ),
                Role::Bos => (
                    ids::SPECIAL_BOS_MISMATCH,
                    Severity::Warning,
                    "make every file name the same BOS token; a wrong BOS shifts every prompt",
                ),
                _ => (
                    ids::SPECIAL_PAD_MISMATCH,
                    Severity::Info,
                    "padding only matters for batched inference and training masks, but the files should agree",
                ),
            };
            out.push(
                Finding::new(
                    id,
                    severity,
                    &d.file,
                    format!("{} says {} but {ref_name} says {}", d.field, shown(&ids, d.listed_ids()), shown(&ref_ids, ref_listed)),
                )
                .field(d.field.clone())
                .hint(hint),
            );
        }
    }

    if stop.is_empty() && !ctx.dir.is_adapter() && ctx.dir.config.is_some() {
        out.push(
            Finding::new(
                ids::SPECIAL_NO_EOS,
                Severity::Warning,
                "generation_config.json",
                "no eos_token_id in generation_config.json or config.json: generation will not stop",
            )
            .field("eos_token_id")
            .hint("set eos_token_id to the token that ends an assistant turn"),
        );
    }

    let pad: BTreeSet<u64> = ctx.decls.iter().filter(|d| d.role == Role::Pad).flat_map(|d| d.ids.iter().copied()).collect();
    if let Some(p) = pad.iter().find(|p| stop.contains(p)) {
        out.push(
            Finding::new(
                ids::SPECIAL_PAD_IS_EOS,
                Severity::Info,
                stop_file.unwrap_or("config.json"),
                format!("PAD and EOS are the same token ({})", describe(ctx, *p)),
            )
            .field("pad_token_id")
            .hint("fine for inference, but a training collator that masks PAD also masks every EOS: the model never learns to stop"),
        );
    }
}

/// The first `SHOWN_IDS` of `ids` described, then how many are `listed` in all when that is more
/// (`1, 2, 3, … (2 000 000 ids)`).
pub fn describe_ids(ctx: &Context, ids: impl IntoIterator<Item = u64>, listed: usize) -> String {
    let mut n = 0;
    let mut named = Vec::new();
    for id in ids {
        n += 1;
        if named.len() < SHOWN_IDS {
            named.push(describe(ctx, id));
        }
    }
    let listed = listed.max(n);
    if listed > named.len() {
        named.push(format!("… ({} ids)", grouped(listed as u64)));
    }
    named.join(", ")
}

/// `2 '<|im_end|>'`, or the bare id when the tokenizer does not know it.
pub fn describe(ctx: &Context, id: u64) -> String {
    match ctx.tokenizer.as_ref().and_then(|t| t.token(u32::try_from(id).ok()?)) {
        Some(s) => format!("{id} `{s}`"),
        None => id.to_string(),
    }
}
