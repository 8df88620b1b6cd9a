//! Special tokens: BOS/EOS/PAD ids must agree between `config.json`, `generation_config.json`,
//! `tokenizer_config.json` and `special_tokens_map.json`, and every token string must exist in
//! `tokenizer.json`.

use std::collections::BTreeSet;

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::tokens::{stop_ids, Role, SpecialDecl};

pub fn check(ctx: &Context, out: &mut Findings) {
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
        let reference: Option<(BTreeSet<u64>, String)> = if role == Role::Eos {
            stop_file.map(|f| (stop.iter().copied().collect(), format!("{f} eos_token_id")))
        } else {
            decls.first().map(|d| (d.ids.iter().copied().collect(), format!("{} {}", d.file, d.field)))
        };
        let Some((ref_ids, ref_name)) = reference else { continue };
        for d in &decls {
            let ids: BTreeSet<u64> = d.ids.iter().copied().collect();
            if ids.is_subset(&ref_ids) || ref_ids.is_subset(&ids) {
                continue;
            }
            let shown = |s: &BTreeSet<u64>| s.iter().map(|i| describe(ctx, *i)).collect::<Vec<_>>().join(", ");
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
                Finding::new(id, severity, &d.file, format!("{} says {} but {ref_name} says {}", d.field, shown(&ids), shown(&ref_ids)))
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

/// `2 '<|im_end|>'`, or the bare id when the tokenizer does not know it.
pub fn describe(ctx: &Context, id: u64) -> String {
    match ctx.tokenizer.as_ref().and_then(|t| t.token(u32::try_from(id).ok()?)) {
        Some(s) => format!("{id} `{s}`"),
        None => id.to_string(),
    }
}
