//! Static checks of a GGUF: against itself (layout, special ids inside the vocabulary, an
//! end-of-turn token llama.cpp stops on, a chat template for a chat vocabulary, no double BOS,
//! block count = `blk.N` tensors) and against the HF checkpoint it was converted from (token
//! strings and ids, merges, special ids, EOS vs `generation_config.json`, chat template,
//! pre-tokenizer, and the architecture numbers in `config.json`).
//!
//! These are the conversion faults of the failure catalogue (#2 EOS/EOT, #9 vocab vs embedding,
//! #10 pre-tokenizer, #11 double BOS, #12 rope metadata). Nothing here decodes tensor values or runs
//! the model. Finding ids are stable and documented in `docs/gguf.md`.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::template::ROLE_MARKERS;
use super::{Context, Finding, Severity};
use crate::chat::{sample_conversation, turn_end, ChatTemplate, TemplateTokens};
use crate::format::gguf::{GgmlType, GgufFile, GgufTokenizer};
use crate::format::tokens::{stop_ids, Role};

/// Relative tolerance for numbers GGUF stores as float32 and config.json as float64: float32
/// rounding is at most 2^-24 ≈ 6e-8 relative; 1e-6 leaves room and still flags any real change
/// (the smallest real one seen, rms eps 1e-5 vs 1e-6, is a factor of 10).
pub const F32_REL_TOL: f64 = 1e-6;

/// Token texts llama.cpp treats as end-of-generation by their text alone, in addition to
/// `tokenizer.ggml.{eos,eot,eom}_token_id` (llama.cpp `src/llama-vocab.cpp`, `special_eog_ids`,
/// as vendored by llama-cpp-python 0.3.36). Older llama.cpp builds, ollama before 2024 and other
/// runtimes stop on `eos_token_id` only.
pub const LLAMA_CPP_EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

pub use crate::format::gguf::{GPT2_REGEX, KNOWN_PRE, LLAMA3_REGEX, QWEN2_REGEX};

/// Texts encoded by the source tokenizer and by the GGUF's own (rebuilt from its metadata):
/// contractions in both cases, digit runs, leading/trailing and repeated whitespace, newlines,
/// punctuation glued to words, non-ASCII, code, and a chat turn with special tokens — the places
/// where pre-tokenizer regexes differ (llama.cpp#7724).
pub const PROBES: &[&str] = &[
    "Hello world! It's 2024: I'LL buy 12345 apples, you'd say.",
    "  two leading spaces,\n\nblank lines\n\t tab and trailing   ",
    "(parenthesised) \"quoted\" hyphen-ated e-mail@example.com 3.14159",
    "naïve café — Ünïcödé 東京 🙂",
    "fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }",
    "<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n<|im_start|>assistant\n",
];

/// The GGUF against itself. `with_source`: an HF source will be checked too, so findings it
/// reports with more detail (missing template) are left to `check_source`.
pub fn check(g: &GgufFile, with_source: bool, out: &mut Vec<Finding>) {
    let file = g.file_name();
    let h = &g.header;
    for p in &h.problems {
        out.push(
            Finding::new(p.id(), Severity::Error, &file, p.message())
                .field(p.tensor())
                .hint("the file is damaged or was written by a broken tool: re-download or re-convert it"),
        );
    }
    let meta = h.arch_meta();
    let Some(arch) = meta.architecture.clone() else {
        out.push(
            Finding::new("gguf.no-architecture", Severity::Error, &file, "no `general.architecture`: llama.cpp cannot load it")
                .field("general.architecture")
                .hint("re-convert with llama.cpp's convert_hf_to_gguf.py"),
        );
        return;
    };

    if let (Some(declared), Some(found)) = (meta.block_count, h.blocks_in_tensors()) {
        if declared != found {
            out.push(
                Finding::new(
                    "gguf.block-count-mismatch",
                    Severity::Error,
                    &file,
                    format!("{arch}.block_count is {declared} but the file has tensors for {found} blocks (`blk.0` … `blk.{}`)", found - 1),
                )
                .field(format!("{arch}.block_count"))
                .hint("the metadata and the tensors come from different models, or layers were dropped: re-convert"),
            );
        }
    }

    let tok = h.tokenizer();
    let Some(tokens) = tok.tokens else {
        out.push(
            Finding::new("gguf.no-tokenizer", Severity::Warning, &file, "no `tokenizer.ggml.tokens`: the file carries no vocabulary")
                .field("tokenizer.ggml.tokens")
                .hint("convert with the tokenizer files beside the weights; llama.cpp needs the vocabulary to run"),
        );
        return;
    };
    let n = tokens.len() as u64;
    for (key, len) in
        [("tokenizer.ggml.scores", tok.scores.map(|s| s.len())), ("tokenizer.ggml.token_type", tok.token_type.as_ref().map(|t| t.len()))]
    {
        if let Some(len) = len.filter(|&l| l as u64 != n) {
            out.push(
                Finding::new(
                    "gguf.token-arrays-mismatch",
                    Severity::Error,
                    &file,
                    format!("`{key}` has {len} entries but `tokenizer.ggml.tokens` has {n}"),
                )
                .field(key)
                .hint("llama.cpp indexes these arrays by token id: re-convert the tokenizer"),
            );
        }
    }
    for (key, id) in special_ids(&tok) {
        if let Some(id) = id.filter(|&i| i >= n) {
            out.push(
                Finding::new(
                    "gguf.special-out-of-range",
                    Severity::Error,
                    &file,
                    format!("`{key}` is {id} but the vocabulary has only {n} tokens"),
                )
                .field(key)
                .hint("the special ids come from another tokenizer: re-convert with the model's own tokenizer files"),
            );
        }
    }
    if tok.eos.is_none() && tok.eot.is_none() {
        out.push(
            Finding::new(
                "gguf.no-eos",
                Severity::Warning,
                &file,
                "neither `tokenizer.ggml.eos_token_id` nor `eot_token_id` is set: runtimes that read them never stop",
            )
            .field("tokenizer.ggml.eos_token_id")
            .hint("convert with generation_config.json / tokenizer_config.json present so the converter finds EOS"),
        );
    }
    if let Some(embd) = h.tensor("token_embd.weight") {
        let rows = embd.dims.get(1).copied().unwrap_or(1);
        if rows < n {
            out.push(
                Finding::new(
                    "gguf.vocab-exceeds-embedding",
                    Severity::Error,
                    &file,
                    format!("the vocabulary has {n} tokens but `token_embd.weight` has {rows} rows: ids ≥ {rows} index past the embedding"),
                )
                .field("token_embd.weight")
                .hint("resize the embeddings to the tokenizer (resize_token_embeddings) before converting"),
            );
        }
    }
    if tok.model == Some("gpt2") && tok.pre.is_none() {
        out.push(
            Finding::new(
                "gguf.pre-missing",
                Severity::Warning,
                &file,
                "BPE vocabulary without `tokenizer.ggml.pre`: llama.cpp falls back to its `default` pre-tokenizer and warns that generation quality will be degraded",
            )
            .field("tokenizer.ggml.pre")
            .hint("re-convert with a llama.cpp that recognizes this tokenizer (convert_hf_to_gguf_update.py)"),
        );
    }

    let markers: Vec<&str> = ROLE_MARKERS.iter().copied().filter(|m| tokens.iter().any(|t| t == m)).collect();
    let Some(text) = tok.chat_template else {
        if !markers.is_empty() && !with_source {
            out.push(
                Finding::new(
                    "gguf.template-missing",
                    Severity::Warning,
                    &file,
                    format!("the vocabulary has chat role tokens ({}) but no `tokenizer.chat_template`", markers.join(", ")),
                )
                .field("tokenizer.chat_template")
                .hint("re-convert with the tokenizer_config.json / chat_template.jinja of the chat model beside the weights"),
            );
        }
        return;
    };
    let tmpl = ChatTemplate { source: g.path.clone(), field: Some("tokenizer.chat_template".into()), text: text.to_string() };
    let rendered = match tmpl.render(&sample_conversation(), false, &template_tokens(&tok)) {
        Ok(r) => r,
        Err(e) => {
            out.push(
                Finding::new("gguf.template-render-failed", Severity::Error, &file, e.to_string())
                    .field("tokenizer.chat_template")
                    .hint("llama.cpp's own Jinja engine fails the same way; fix the template in the source and re-convert"),
            );
            return;
        }
    };
    let specials: Vec<String> = tok.special_tokens().into_iter().map(|(_, t)| t.to_string()).collect();
    if let Some(end) = turn_end(&rendered, &specials).and_then(|e| e.token) {
        let eog = llama_cpp_eog(&tok);
        if let Some(id) = tok.id(&end).filter(|id| !eog.contains(id)) {
            out.push(
                Finding::new(
                    "gguf.turn-end-not-eog",
                    Severity::Error,
                    &file,
                    format!(
                        "the chat template ends assistant turns with `{end}` (id {id}) but it is not an end-of-generation token (eos {}, eot {}): generation runs past the turn",
                        show_id(&tok, tok.eos),
                        show_id(&tok, tok.eot)
                    ),
                )
                .field("tokenizer.ggml.eos_token_id")
                .hint(format!("set tokenizer.ggml.eot_token_id (or eos_token_id) to {id}, e.g. with gguf-py's gguf_new_metadata.py --special-token eot '{end}'")),
            );
        }
    }
    let bos_text = tok.bos.and_then(|b| tok.token(b));
    if let Some(bos) = bos_text.filter(|b| !b.is_empty() && rendered.starts_with(*b)) {
        if adds_bos(&tok) {
            out.push(
                Finding::new(
                    "gguf.double-bos",
                    Severity::Warning,
                    &file,
                    format!("the chat template starts with `{bos}` and `tokenizer.ggml.add_bos_token` adds it again: prompts start with two BOS tokens"),
                )
                .field("tokenizer.ggml.add_bos_token")
                .hint("set tokenizer.ggml.add_bos_token = false, or drop bos_token from the template"),
            );
        }
    }
}

/// The GGUF against the HF checkpoint it was converted from.
pub fn check_source(g: &GgufFile, ctx: &Context, out: &mut Vec<Finding>) {
    let file = g.file_name();
    let h = &g.header;
    let tok = h.tokenizer();
    sliding_layers(g, ctx, &file, out);

    // Tokens: strings and ids.
    if let (Some(tokens), Some(hf)) = (tok.tokens, &ctx.tokenizer) {
        let n = (tokens.len() as u64).max(hf.id_space);
        let mut differing = 0u64;
        let mut first: Option<(u64, String, String)> = None;
        for id in 0..n {
            let g_tok = tokens.get(id as usize).map(String::as_str);
            let h_tok = u32::try_from(id).ok().and_then(|i| hf.token(i));
            let same = match (g_tok, &h_tok) {
                (Some(a), Some(b)) => a == b,
                // convert_hf_to_gguf.py fills ids the tokenizer lacks with `[PAD{id}]`.
                (Some(a), None) => a == format!("[PAD{id}]"),
                (None, _) => false,
            };
            if !same {
                differing += 1;
                if first.is_none() {
                    first = Some((id, g_tok.unwrap_or("(none)").to_string(), h_tok.unwrap_or_else(|| "(none)".into())));
                }
            }
        }
        if let Some((id, a, b)) = first {
            out.push(
                Finding::new(
                    "gguf.tokens-differ",
                    Severity::Error,
                    &file,
                    format!(
                        "{differing} of {n} token ids differ from {} (GGUF {} tokens, HF {}); first: {id} '{a}' vs '{b}'",
                        ctx.dir.rel(&hf.path),
                        tokens.len(),
                        hf.id_space
                    ),
                )
                .field("tokenizer.ggml.tokens")
                .hint("the GGUF was converted with another tokenizer: re-convert with this checkpoint's tokenizer files"),
            );
        }
    }

    // Merges and pre-tokenizer, from tokenizer.json itself.
    let tj = ctx.dir.tokenizer_json.as_ref().and_then(|p| crate::format::hf::read_json(p).ok().flatten());
    if let (Some(tj), Some(merges)) = (&tj, tok.merges) {
        if let Some(hf_merges) = tj.value.pointer("/model/merges").and_then(Json::as_array) {
            let hf_merges: Vec<String> = hf_merges
                .iter()
                .map(|m| match m {
                    Json::String(s) => s.clone(),
                    Json::Array(p) => p.iter().filter_map(Json::as_str).collect::<Vec<_>>().join(" "),
                    _ => String::new(),
                })
                .collect();
            if hf_merges != merges {
                let first = hf_merges.iter().zip(merges).position(|(a, b)| a != b).unwrap_or(hf_merges.len().min(merges.len()));
                out.push(
                    Finding::new(
                        "gguf.merges-differ",
                        Severity::Error,
                        &file,
                        format!(
                            "`tokenizer.ggml.merges` ({} entries) differs from tokenizer.json's merges ({}) from rank {first}",
                            merges.len(),
                            hf_merges.len()
                        ),
                    )
                    .field("tokenizer.ggml.merges")
                    .hint("the GGUF tokenizes text differently: re-convert with this checkpoint's tokenizer.json"),
                );
            }
        }
    }
    if let (Some(tj), Some("gpt2")) = (&tj, tok.model) {
        pre_tokenizer(&file, tok.pre, tj.value.get("pre_tokenizer"), out);
    }
    if let (Some(hf), Ok(gt)) = (&ctx.tokenizer, tok.to_hf()) {
        round_trip(&file, hf, &gt, out);
    }

    // Special ids.
    let (stop, stop_file) = stop_ids(&ctx.decls);
    let show_hf = |id: u64| super::special::describe(ctx, id);
    if let Some(eos) = tok.eos {
        if !stop.is_empty() && !stop.contains(&eos) {
            let still = if llama_cpp_eog(&tok).iter().any(|i| stop.contains(i)) {
                " (current llama.cpp still stops on the HF token by its text; runtimes that read eos_token_id do not)"
            } else {
                ""
            };
            out.push(
                Finding::new(
                    "gguf.eos-differs",
                    Severity::Error,
                    &file,
                    format!(
                        "tokenizer.ggml.eos_token_id is {} but {} eos_token_id is {}{still}",
                        show_id(&tok, Some(eos)),
                        stop_file.unwrap_or("generation_config.json"),
                        stop.iter().map(|&i| show_hf(i)).collect::<Vec<_>>().join(", ")
                    ),
                )
                .field("tokenizer.ggml.eos_token_id")
                .hint("set it to the source's EOS (gguf_new_metadata.py --special-token eos ...) or re-convert with generation_config.json present"),
            );
        }
    }
    let eog = llama_cpp_eog(&tok);
    let missing: Vec<u64> = stop.iter().copied().filter(|i| !eog.contains(i)).collect();
    if !missing.is_empty() && tok.eos.is_some() {
        out.push(
            Finding::new(
                "gguf.stop-not-eog",
                Severity::Warning,
                &file,
                format!(
                    "generation stops on {} in the HF checkpoint but that is not an end-of-generation token in the GGUF",
                    missing.iter().map(|&i| show_hf(i)).collect::<Vec<_>>().join(", ")
                ),
            )
            .field("tokenizer.ggml.eot_token_id")
            .hint("set tokenizer.ggml.eot_token_id to it so llama.cpp stops there too"),
        );
    }
    let hf_ids =
        |role: Role| -> BTreeSet<u64> { ctx.decls.iter().filter(|d| d.role == role).flat_map(|d| d.ids.iter().copied()).collect() };
    let hf_bos = hf_ids(Role::Bos);
    let gguf_bos_used = tok.bos.filter(|_| adds_bos(&tok));
    match (gguf_bos_used, hf_bos.is_empty()) {
        (Some(b), true) => out.push(
            Finding::new(
                "gguf.bos-differs",
                Severity::Error,
                &file,
                format!("the GGUF adds BOS {} to every prompt but the HF checkpoint has no BOS token", show_id(&tok, Some(b))),
            )
            .field("tokenizer.ggml.bos_token_id")
            .hint("set tokenizer.ggml.add_bos_token = false: every prompt otherwise starts with a token the model never saw there"),
        ),
        (Some(b), false) if !hf_bos.contains(&b) => out.push(
            Finding::new(
                "gguf.bos-differs",
                Severity::Error,
                &file,
                format!(
                    "tokenizer.ggml.bos_token_id is {} but the HF checkpoint's BOS is {}",
                    show_id(&tok, Some(b)),
                    hf_bos.iter().map(|&i| show_hf(i)).collect::<Vec<_>>().join(", ")
                ),
            )
            .field("tokenizer.ggml.bos_token_id")
            .hint("re-convert with this checkpoint's tokenizer_config.json"),
        ),
        _ => {}
    }
    if let Some(hf) = &ctx.tokenizer {
        // Does the HF tokenizer add BOS on its own? (its post-processor; transformers' default)
        let hf_adds = hf
            .tokenizer
            .encode("a", true)
            .ok()
            .and_then(|e| e.get_ids().first().copied())
            .is_some_and(|first| hf_bos.contains(&u64::from(first)));
        if hf_adds && gguf_bos_used.is_none() && !hf_bos.is_empty() {
            out.push(
                Finding::new(
                    "gguf.bos-differs",
                    Severity::Warning,
                    &file,
                    format!(
                        "the HF tokenizer starts every prompt with BOS {} but the GGUF does not add it",
                        hf_bos.iter().map(|&i| show_hf(i)).collect::<Vec<_>>().join(", ")
                    ),
                )
                .field("tokenizer.ggml.add_bos_token")
                .hint("set tokenizer.ggml.add_bos_token = true"),
            );
        }
    }
    let hf_pad = hf_ids(Role::Pad);
    if let Some(p) = tok.pad.filter(|p| !hf_pad.is_empty() && !hf_pad.contains(p)) {
        out.push(
            Finding::new(
                "gguf.pad-differs",
                Severity::Info,
                &file,
                format!(
                    "tokenizer.ggml.padding_token_id is {} but the HF checkpoint's PAD is {}",
                    show_id(&tok, Some(p)),
                    hf_pad.iter().map(|&i| show_hf(i)).collect::<Vec<_>>().join(", ")
                ),
            )
            .field("tokenizer.ggml.padding_token_id")
            .hint("only batched inference pads, but the files should agree"),
        );
    }

    // Chat template.
    match (&ctx.template, tok.chat_template) {
        (Some(t), None) => out.push(
            Finding::new(
                "gguf.template-missing",
                Severity::Error,
                &file,
                format!("the HF checkpoint has a chat template ({}) but the GGUF has no `tokenizer.chat_template`", ctx.dir.rel(&t.source)),
            )
            .field("tokenizer.chat_template")
            .hint("re-convert with the template file beside the weights, or add it with gguf_new_metadata.py --chat-template"),
        ),
        (Some(t), Some(g_text)) if t.text != g_text => {
            let at =
                t.text.chars().zip(g_text.chars()).position(|(a, b)| a != b).unwrap_or(t.text.chars().count().min(g_text.chars().count()));
            out.push(
                Finding::new(
                    "gguf.template-differs",
                    Severity::Error,
                    &file,
                    format!(
                        "`tokenizer.chat_template` differs from {} from character {at} ({} vs {} characters)",
                        ctx.dir.rel(&t.source),
                        g_text.chars().count(),
                        t.text.chars().count()
                    ),
                )
                .field("tokenizer.chat_template")
                .hint("llama.cpp renders the GGUF's own template: re-convert, or replace it with gguf_new_metadata.py --chat-template"),
            );
        }
        _ => {}
    }

    // Architecture numbers vs config.json.
    let meta = h.arch_meta();
    let arch = meta.architecture.clone().unwrap_or_else(|| "?".into());
    let c = &ctx.config;
    let int_pairs: [Row<u64>; 7] = [
        ("gguf.context-length-differs", "context_length", meta.context_length, c.max_position_embeddings, "max_position_embeddings"),
        ("gguf.shape-differs", "embedding_length", meta.embedding_length, c.hidden_size, "hidden_size"),
        ("gguf.shape-differs", "feed_forward_length", meta.feed_forward_length, c.intermediate_size, "intermediate_size"),
        ("gguf.shape-differs", "block_count", meta.block_count, c.num_hidden_layers, "num_hidden_layers"),
        ("gguf.heads-differ", "attention.head_count", meta.head_count, c.num_attention_heads, "num_attention_heads"),
        (
            "gguf.heads-differ",
            "attention.head_count_kv",
            meta.head_count_kv,
            c.num_key_value_heads.or(c.num_attention_heads),
            "num_key_value_heads",
        ),
        ("gguf.shape-differs", "attention.key_length", meta.key_length, c.head_dim, "head_dim"),
    ];
    for (id, key, g_v, hf_v, hf_key) in int_pairs {
        if let (Some(a), Some(b)) = (g_v, hf_v) {
            if a != b {
                let severity = if id == "gguf.context-length-differs" { Severity::Warning } else { Severity::Error };
                out.push(
                    Finding::new(id, severity, &file, format!("{arch}.{key} is {a} but config.json {hf_key} is {b}"))
                        .field(format!("{arch}.{key}"))
                        .hint("the GGUF was converted from another model or its metadata was edited: re-convert from this checkpoint"),
                );
            }
        }
    }
    let float_pairs: [Row<f64>; 2] = [
        ("gguf.rope-base-differs", "rope.freq_base", meta.rope_freq_base, c.rope_theta, "rope_theta"),
        ("gguf.rms-eps-differs", "attention.layer_norm_rms_epsilon", meta.rms_norm_eps, c.rms_norm_eps, "rms_norm_eps"),
    ];
    for (id, key, g_v, hf_v, hf_key) in float_pairs {
        if let (Some(a), Some(b)) = (g_v, hf_v) {
            if !close(a, b) {
                out.push(
                    // GGUF stores these as float32: print them as such (1e-6, not 9.99999997e-7).
                    Finding::new(id, Severity::Error, &file, format!("{arch}.{key} is {} but config.json {hf_key} is {b}", a as f32))
                        .field(format!("{arch}.{key}"))
                        .hint(
                            "positions or norms are computed differently than in training: re-convert, or fix it with gguf_new_metadata.py",
                        ),
                );
            }
        }
    }
    // Rope scaling (catalogue #12: Llama-3.1 scaling dropped at conversion).
    if let Some(scaling) = &c.rope_scaling {
        let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Json::as_str).unwrap_or("default");
        let factor = scaling.get("factor").and_then(Json::as_f64);
        let problem = match kind {
            // convert_hf_to_gguf.py stores llama3 scaling as precomputed frequencies, not metadata.
            "llama3" if h.tensor("rope_freqs.weight").is_none() => {
                Some("config.json has llama3 rope scaling but the GGUF has no `rope_freqs.weight` tensor".to_string())
            }
            "linear" | "yarn" | "longrope" => match (meta.rope_scaling_type.as_deref(), meta.rope_scaling_factor) {
                (None, _) | (Some("none"), _) => {
                    Some(format!("config.json has {kind} rope scaling but the GGUF has no {arch}.rope.scaling.type"))
                }
                (Some(t), _) if t != kind && kind != "longrope" => {
                    Some(format!("{arch}.rope.scaling.type is {t} but config.json says {kind}"))
                }
                (_, Some(f)) if factor.is_some_and(|hf| !close(f, hf)) => {
                    Some(format!("{arch}.rope.scaling.factor is {f} but config.json says {}", factor.unwrap_or_default()))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(message) = problem {
            out.push(
                Finding::new("gguf.rope-scaling-differs", Severity::Error, &file, format!("{message}: long prompts break"))
                    .field(format!("{arch}.rope.scaling.type"))
                    .hint("re-convert with a llama.cpp that supports this scaling type"),
            );
        }
    } else if meta.rope_scaling_type.as_deref().is_some_and(|t| t != "none") {
        out.push(
            Finding::new(
                "gguf.rope-scaling-differs",
                Severity::Error,
                &file,
                format!(
                    "{arch}.rope.scaling.type is {} but config.json has no rope scaling",
                    meta.rope_scaling_type.clone().unwrap_or_default()
                ),
            )
            .field(format!("{arch}.rope.scaling.type"))
            .hint("positions are computed differently than in training: re-convert"),
        );
    } else if h.tensor("rope_freqs.weight").is_some() {
        out.push(
            Finding::new(
                "gguf.rope-scaling-differs",
                Severity::Error,
                &file,
                "the GGUF has a `rope_freqs.weight` tensor (llama3-style rope scaling) but config.json has no rope scaling",
            )
            .field("rope_freqs.weight")
            .hint("the GGUF was converted from another config (or the wrong source directory is given): re-convert"),
        );
    }
}

/// `(finding id, GGUF key after `{arch}.`, GGUF value, config.json value, config.json key)`.
type Row<T> = (&'static str, &'static str, Option<T>, Option<T>, &'static str);

/// Runs every GGUF check: against itself, and against `source` when given.
pub fn run(g: &GgufFile, source: Option<&Context>) -> Vec<Finding> {
    let mut out = Vec::new();
    check(g, source.is_some(), &mut out);
    values(g, &mut out);
    if let Some(ctx) = source {
        check_source(g, ctx, &mut out);
    }
    out
}

/// Compares the GGUF's pre-tokenizer with tokenizer.json's (catalogue #10).
fn pre_tokenizer(file: &str, pre: Option<&str>, hf: Option<&Json>, out: &mut Vec<Finding>) {
    let Some(pre) = pre else { return }; // `gguf.pre-missing` already reported by `check`
    let Some(hf_regexes) = hf.map(split_regexes) else { return };
    let Some((_, expected)) = KNOWN_PRE.iter().find(|(name, _)| *name == pre) else {
        out.push(
            Finding::new(
                "gguf.pre-unverified",
                Severity::Info,
                file,
                format!("pre-tokenizer `{pre}` is not one ckptcheck knows the split regex of; not compared with tokenizer.json"),
            )
            .field("tokenizer.ggml.pre"),
        );
        return;
    };
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    if expected != hf_regexes {
        let workaround = if pre == "gpt-2" {
            " (`gpt-2` is what the usual workaround for convert_hf_to_gguf.py's \"BPE pre-tokenizer was not recognized\" writes)"
        } else {
            ""
        };
        out.push(
            Finding::new(
                "gguf.pre-tokenizer-differs",
                Severity::Error,
                file,
                format!(
                    "`tokenizer.ggml.pre` is `{pre}`{workaround}, whose split regex differs from tokenizer.json's pre_tokenizer ({}): llama.cpp splits text differently and token ids drift",
                    if hf_regexes.is_empty() { "none".to_string() } else { hf_regexes.join(" ; ") }
                ),
            )
            .field("tokenizer.ggml.pre")
            .hint("register the tokenizer's hash in convert_hf_to_gguf_update.py with the matching pre-tokenizer and re-convert"),
        );
    }
}

/// Encodes `PROBES` with the source tokenizer and the GGUF's own; any difference in ids means
/// llama.cpp sees other tokens than the model was trained on (catalogue #10).
fn round_trip(file: &str, hf: &crate::format::tokens::TokenizerInfo, gguf: &tokenizers::Tokenizer, out: &mut Vec<Finding>) {
    let mut differing = Vec::new();
    for (i, text) in PROBES.iter().enumerate() {
        let (Ok(a), Ok(b)) = (hf.encode_raw(text), gguf.encode(*text, false)) else { continue };
        let b = b.get_ids();
        if a != b {
            let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            differing.push((i, at, a.len(), b.len()));
        }
    }
    if let Some(&(i, at, n_hf, n_gguf)) = differing.first() {
        out.push(
            Finding::new(
                "gguf.tokenization-differs",
                Severity::Error,
                file,
                format!(
                    "{} of {} probe texts tokenize differently with the GGUF's tokenizer than with tokenizer.json; first: probe {i} {:?} from token {at} ({n_gguf} vs {n_hf} tokens)",
                    differing.len(),
                    PROBES.len(),
                    PROBES[i]
                ),
            )
            .field("tokenizer.ggml.tokens")
            .hint("llama.cpp will feed the model other token ids than it was trained on: re-convert with the right tokenizer and pre-tokenizer"),
        );
    }
}

/// The split regexes a tokenizer.json `pre_tokenizer` applies, in order. `ByteLevel` with
/// `use_regex` (the default) applies GPT-2's; other pre-tokenizers are named in angle brackets.
pub fn split_regexes(v: &Json) -> Vec<String> {
    let mut out = Vec::new();
    collect_regexes(v, &mut out, 0);
    out
}

fn collect_regexes(v: &Json, out: &mut Vec<String>, depth: usize) {
    // tokenizer.json nests Sequences one level deep in practice; the cap bounds hostile files.
    if depth > 8 {
        return;
    }
    match v.get("type").and_then(Json::as_str) {
        Some("Sequence") => {
            for p in v.get("pretokenizers").and_then(Json::as_array).into_iter().flatten() {
                collect_regexes(p, out, depth + 1);
            }
        }
        Some("ByteLevel") if v.get("use_regex").and_then(Json::as_bool).unwrap_or(true) => {
            out.push(GPT2_REGEX.to_string());
        }
        Some("ByteLevel") => {}
        Some("Split") => match v.get("pattern") {
            Some(p) => match (p.get("Regex").and_then(Json::as_str), p.get("String").and_then(Json::as_str)) {
                (Some(r), _) => out.push(r.to_string()),
                (None, Some(s)) => out.push(regex::escape(s)),
                _ => out.push("<Split>".into()),
            },
            None => out.push("<Split>".into()),
        },
        Some(other) => out.push(format!("<{other}>")),
        None => {}
    }
}

/// llama.cpp's end-of-generation ids for this vocabulary: eos, eot, eom and tokens whose text it
/// treats as end-of-generation.
pub fn llama_cpp_eog(tok: &GgufTokenizer) -> BTreeSet<u64> {
    let mut s: BTreeSet<u64> = [tok.eos, tok.eot, tok.eom].into_iter().flatten().collect();
    if let Some(tokens) = tok.tokens {
        for (i, t) in tokens.iter().enumerate() {
            if LLAMA_CPP_EOG_TEXTS.contains(&t.as_str()) {
                s.insert(i as u64);
            }
        }
    }
    s
}

/// Whether llama.cpp adds BOS: `add_bos_token`, defaulting to true for SentencePiece (`llama`)
/// vocabularies and false otherwise (llama.cpp `llama_vocab::impl::load`).
pub fn adds_bos(tok: &GgufTokenizer) -> bool {
    tok.add_bos.unwrap_or(matches!(tok.model, Some("llama") | Some("t5") | Some("bert")))
}

fn special_ids<'a>(tok: &GgufTokenizer<'a>) -> [(&'static str, Option<u64>); 6] {
    [
        ("tokenizer.ggml.bos_token_id", tok.bos),
        ("tokenizer.ggml.eos_token_id", tok.eos),
        ("tokenizer.ggml.eot_token_id", tok.eot),
        ("tokenizer.ggml.eom_token_id", tok.eom),
        ("tokenizer.ggml.padding_token_id", tok.pad),
        ("tokenizer.ggml.unknown_token_id", tok.unk),
    ]
}

/// The special-token strings the GGUF's template sees, as llama.cpp passes them.
pub fn template_tokens(tok: &GgufTokenizer) -> TemplateTokens {
    let text = |id: Option<u64>| id.and_then(|i| tok.token(i)).map(str::to_string);
    TemplateTokens { bos_token: text(tok.bos), eos_token: text(tok.eos), pad_token: text(tok.pad), unk_token: text(tok.unk) }
}

fn show_id(tok: &GgufTokenizer, id: Option<u64>) -> String {
    match id {
        None => "unset".into(),
        Some(i) => match tok.token(i) {
            Some(t) => format!("{i} `{t}`"),
            None => i.to_string(),
        },
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= F32_REL_TOL * a.abs().max(b.abs())
}

/// Which layers use the sliding window, as the GGUF will be run (llama.cpp derives Gemma 2/3's
/// pattern from the architecture: alternating, or 5 sliding to 1 global) versus the source's
/// `layer_types`. A model whose pattern differs runs differently past the window.
fn sliding_layers(g: &GgufFile, ctx: &Context, file: &str, out: &mut Vec<Finding>) {
    use crate::format::arch::ArchSpec;
    let Some(cfg) = ctx.dir.config.as_ref() else { return };
    let (Ok(hf), Ok(gg)) = (ArchSpec::from_config(&cfg.value, None), ArchSpec::from_config(&g.header.hf_config(), None)) else {
        return;
    };
    if hf.sliding_window.is_none() || hf.sliding_layers.len() != gg.sliding_layers.len() || hf.sliding_layers == gg.sliding_layers {
        return;
    }
    let list = |v: &[bool]| v.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i.to_string()).collect::<Vec<_>>().join(", ");
    out.push(
        Finding::new(
            "gguf.sliding-layers-differ",
            Severity::Warning,
            file,
            format!(
                "llama.cpp runs layers [{}] with the {}-token sliding window, config.json (layer_types) says [{}]: outputs differ once a prompt is longer than the window",
                list(&gg.sliding_layers),
                hf.sliding_window.unwrap_or_default(),
                list(&hf.sliding_layers)
            ),
        )
        .field("layer_types")
        .hint("llama.cpp fixes the pattern per architecture; a model with its own layer_types needs a llama.cpp that reads them"),
    );
}

/// Where a block keeps its f16 scale(s), for the types whose layout is fixed (ggml-common.h):
/// `(block bytes, byte offsets of the f16 scale fields)`.
fn block_scales(t: GgmlType) -> Option<(usize, &'static [usize])> {
    Some(match t {
        GgmlType::Q4_0 => (18, &[0]),
        GgmlType::Q4_1 => (20, &[0, 2]),
        GgmlType::Q5_0 => (22, &[0]),
        GgmlType::Q5_1 => (24, &[0, 2]),
        GgmlType::Q8_0 => (34, &[0]),
        GgmlType::Q2_K => (84, &[80, 82]),
        GgmlType::Q3_K => (110, &[108]),
        GgmlType::Q4_K => (144, &[0, 2]),
        GgmlType::Q5_K => (176, &[0, 2]),
        GgmlType::Q6_K => (210, &[208]),
        _ => return None,
    })
}

/// NaN / ±Inf in a GGUF's float tensors, and in the f16 block scales of its quantized tensors (a
/// NaN scale poisons all 32 or 256 weights of its block). Same ids as the safetensors value scan.
pub fn values(g: &GgufFile, out: &mut Vec<Finding>) {
    use crate::checks::values::scan;
    use crate::format::dtype::Dtype;
    let file = g.file_name();
    for t in &g.header.tensors {
        let Ok(bytes) = g.checked_bytes(&t.name) else { continue }; // layout problems are reported
        let (nan, inf, what) = match t.ggml_type {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let d = match t.ggml_type {
                    GgmlType::F32 => Dtype::F32,
                    GgmlType::F16 => Dtype::F16,
                    _ => Dtype::BF16,
                };
                let Some(s) = scan(d, bytes) else { continue };
                (s.nan, s.pos_inf + s.neg_inf, "values")
            }
            other => {
                let Some((size, offsets)) = block_scales(other) else { continue };
                let (mut nan, mut inf) = (0u64, 0u64);
                for block in bytes.chunks_exact(size) {
                    for &o in offsets {
                        let v = half::f16::from_le_bytes([block[o], block[o + 1]]);
                        nan += v.is_nan() as u64;
                        inf += v.is_infinite() as u64;
                    }
                }
                (nan, inf, "block scales")
            }
        };
        if nan + inf > 0 {
            out.push(
                Finding::new(
                    if nan > 0 { "values.nan" } else { "values.inf" },
                    Severity::Error,
                    &file,
                    format!("tensor `{}` ({}) has {nan} NaN and {inf} infinite {what}", t.name, t.ggml_type),
                )
                .field(t.name.clone())
                .hint("the source had non-finite weights or the conversion overflowed: lint the source and re-convert"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_regexes_reads_sequences_and_bytelevel() {
        let v: Json = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}
        ]});
        assert_eq!(split_regexes(&v), vec![LLAMA3_REGEX.to_string()]);
        let v: Json = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false});
        assert_eq!(split_regexes(&v), vec![GPT2_REGEX.to_string()]);
        let v: Json = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
        assert_eq!(split_regexes(&v), vec!["<Metaspace>".to_string()]);
    }

    #[test]
    fn float32_tolerance_accepts_rounding_only() {
        assert!(close(f64::from(1e-6f32), 1e-6));
        assert!(close(f64::from(500000f32), 500000.0));
        assert!(!close(1e-5, 1e-6));
        assert!(!close(10000.0, 500000.0));
    }
}
