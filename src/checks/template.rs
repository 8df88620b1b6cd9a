//! Chat template: present for a chat model, renders a sample conversation, ends assistant turns with
//! a token generation stops on (the Llama-3 `<|eot_id|>` / Qwen `<|im_end|>` class of bug), its
//! special tokens survive tokenisation as single ids, and BOS is not added twice.

use super::special::describe_ids;
use super::{Context, Finding, Findings, Severity};
use crate::chat::{sample_conversation, turn_end, Message};
use crate::checks::ids;
use crate::format::tokens::{stop_decl, stop_ids};

/// Added tokens that only chat models have: their presence means a template is expected.
pub const ROLE_MARKERS: &[&str] =
    &["<|im_start|>", "<|start_header_id|>", "<start_of_turn>", "[INST]", "<|user|>", "<|assistant|>", "<|eot_id|>"];

pub fn check(ctx: &Context, out: &mut Findings) {
    let role_markers: Vec<&str> =
        ctx.tokenizer.as_ref().map(|t| ROLE_MARKERS.iter().copied().filter(|m| t.id(m).is_some()).collect()).unwrap_or_default();
    let Some(tmpl) = &ctx.template else {
        if !role_markers.is_empty() && !ctx.dir.is_adapter() {
            out.push(
                Finding::new(
                    ids::TEMPLATE_MISSING,
                    Severity::Warning,
                    "tokenizer_config.json",
                    format!(
                        "the tokenizer has chat role tokens ({}) but no chat template is saved",
                        role_markers.join(", ")
                    ),
                )
                .field("chat_template")
                .hint("save the tokenizer the model was trained with (its chat_template), or set `tokenizer.chat_template` before `save_pretrained`"),
            );
        }
        return;
    };
    let file = ctx.dir.rel(&tmpl.source);
    let field = tmpl.field.clone().unwrap_or_else(|| "template".into());
    let tokens = &ctx.template_tokens;

    let rendered = match tmpl.render(&sample_conversation(), false, tokens) {
        Ok(r) => r,
        Err(e) => {
            out.push(
                Finding::new(ids::TEMPLATE_RENDER_FAILED, Severity::Error, &file, e.to_string())
                    .field(field)
                    .hint("fix the template: servers that render it (vLLM, TGI, llama.cpp) fail the same way"),
            );
            return;
        }
    };
    if let Err(e) = tmpl.render(&[Message::new("user", "Hi")], true, tokens) {
        out.push(
            Finding::new(ids::TEMPLATE_RENDER_FAILED, Severity::Error, &file, format!("with add_generation_prompt=true: {e}"))
                .field(field.clone())
                .hint("fix the template's add_generation_prompt branch"),
        );
    }

    let Some(tok) = &ctx.tokenizer else { return };
    let mut specials = tok.special_strings();
    if let Some(e) = &tokens.eos_token {
        specials.push(e.clone());
    }

    match turn_end(&rendered, &specials) {
        None => out.push(
            Finding::new(
                ids::TEMPLATE_DROPS_ASSISTANT,
                Severity::Warning,
                &file,
                "the rendered sample conversation does not contain the assistant's reply",
            )
            .field(field.clone())
            .hint("the template may only render the last turn or filter roles; check it renders assistant messages"),
        ),
        Some(end) => match end.token {
            None => out.push(
                Finding::new(
                    ids::TEMPLATE_NO_TURN_END_TOKEN,
                    Severity::Warning,
                    &file,
                    format!("no special token follows an assistant reply (text after it: {:?})", end.suffix),
                )
                .field(field.clone())
                .hint("end assistant turns with a special token that is in generation_config.json's eos_token_id"),
            ),
            Some(t) => {
                let (stop, stop_file) = stop_ids(&ctx.decls);
                let listed = stop_decl(&ctx.decls).map_or(0, |(d, _)| d.listed_ids());
                let id = tok.id(&t).map(u64::from);
                if let Some(id) = id {
                    if !stop.contains(&id) {
                        let declared =
                            if stop.is_empty() { "nothing".to_string() } else { describe_ids(ctx, stop.iter().copied(), listed) };
                        out.push(
                            Finding::new(
                                ids::TEMPLATE_EOT_NOT_EOS,
                                Severity::Error,
                                stop_file.unwrap_or("generation_config.json"),
                                format!(
                                    "the chat template ends assistant turns with `{t}` (id {id}) but eos_token_id is {declared}: generation runs past the end of the turn"
                                ),
                            )
                            .field("eos_token_id")
                            .hint(format!("add {id} to eos_token_id in generation_config.json (and config.json)")),
                        );
                    }
                }
            }
        },
    }

    // Special tokens in the rendered text must tokenise to their single ids. Candidates: added
    // special tokens, declared BOS/EOS/PAD/UNK strings and role markers in the vocabulary (a token
    // that is in the vocabulary but not registered as added is split by the pre-tokenizer).
    let mut candidates = tok.special_strings();
    candidates.extend(ctx.decls.iter().filter_map(|d| d.token.clone()));
    candidates.extend(ROLE_MARKERS.iter().map(|m| m.to_string()));
    candidates.sort();
    candidates.dedup();
    if let Ok(ids) = tok.encode_raw(&rendered) {
        for content in candidates.iter().filter(|c| !c.is_empty()) {
            let Some(id) = tok.id(content) else { continue };
            let in_text = rendered.matches(content.as_str()).count();
            if in_text == 0 {
                continue;
            }
            let as_id = ids.iter().filter(|&&i| i == id).count();
            if as_id < in_text {
                out.push(
                    Finding::new(
                        ids::TEMPLATE_SPECIAL_SPLIT,
                        Severity::Error,
                        "tokenizer.json",
                        format!(
                            "`{content}` appears {in_text} times in the rendered chat but tokenises to id {id} only {as_id} times: it is split into ordinary pieces"
                        ),
                    )
                    .field("added_tokens")
                    .hint("register it as a special added token (tokenizer.add_special_tokens) so it encodes as one id"),
                );
            }
        }
    }

    // Double BOS: the template writes bos_token and the tokenizer's post-processor adds another.
    if let Some(bos) = &tokens.bos_token {
        let bos_id = tok.id(bos);
        let auto = tok.tokenizer.encode("a", true).ok().map(|e| e.get_ids().first().copied());
        if rendered.starts_with(bos.as_str()) && bos_id.is_some() && auto == Some(bos_id) {
            out.push(
                Finding::new(
                    ids::TEMPLATE_DOUBLE_BOS,
                    Severity::Warning,
                    &file,
                    format!("the template starts with `{bos}` and the tokenizer also adds it: prompts start with two BOS tokens"),
                )
                .field(field)
                .hint("tokenize rendered chats with add_special_tokens=False, or drop bos_token from the template"),
            );
        }
    }
}
