//! The GGUF against the HF checkpoint it was converted from (`lint --source`): token strings and
//! ids, merges, pre-tokenizer and a probe round trip, EOS/stop ids vs `generation_config.json`,
//! BOS and PAD, the chat template, and the architecture numbers in `config.json` (shape, heads,
//! context, rope base and scaling, rms eps, sliding-window layers).
//!
//! `check_source` runs one function per comparison, in a fixed order, each appending its findings.
//! A comparison that cannot run because a source file is missing or unreadable is a finding
//! (`gguf.source-unreadable`), never a silent skip. It does not repeat what `alone` reports about
//! the GGUF by itself.

use std::collections::BTreeSet;

use serde_json::Value as Json;

use super::tokenizer::{llama_cpp_eog, pre_tokenizer, round_trip, show_id, spm_source};
use crate::checks::ids::{self, FindingId};
use crate::checks::special::describe_ids;
use crate::checks::{Context, Finding, Findings, Severity};
use crate::error::Error;
use crate::format::config::ModelConfig;
use crate::format::gguf::{ArchMeta, GgufFile, GgufTokenizer, Header};
use crate::format::hf;
use crate::format::tokens::{stop_decl, stop_ids, Role};

/// Relative tolerance for numbers GGUF stores as float32 and config.json as float64: float32
/// rounding is at most 2^-24 ≈ 6e-8 relative; 1e-6 leaves room and still flags any real change
/// (the smallest real one seen, rms eps 1e-5 vs 1e-6, is a factor of 10).
pub const F32_REL_TOL: f64 = 1e-6;

/// The GGUF against the HF checkpoint it was converted from.
pub fn check_source(g: &GgufFile, ctx: &Context, out: &mut Findings) {
    let file = g.file_name();
    let h = &g.header;
    unreadable_source(ctx, out);
    architecture(&file, h, ctx, out);
    let tok = h.tokenizer();
    sliding_layers(g, ctx, &file, out);
    tokens(&file, &tok, ctx, out);
    merges_and_pre_tokenizer(&file, &tok, ctx, out);
    if let (Some(hf), Ok(gt)) = (&ctx.tokenizer, tok.to_hf()) {
        round_trip(&file, &tok, hf, &gt, out);
    }
    eos_and_stop(&file, &tok, ctx, out);
    bos(&file, &tok, ctx, out);
    pad(&file, &tok, ctx, out);
    template(&file, &tok, ctx, out);
    let meta = h.arch_meta();
    let arch = meta.architecture.clone().unwrap_or_else(|| "?".into());
    config_numbers(&file, &meta, &arch, &ctx.config, out);
    rope_scaling(&file, h, &meta, &arch, &ctx.config, out);
    granite_scales(&file, h, &arch, ctx, out);
    softcapping(&file, h, &arch, ctx, out);
    experts(&file, &meta, &arch, ctx, out);
}

/// Mixture of experts: expert count, experts per token and the expert MLP width against
/// config.json (as the engine reads it: `ArchSpec::moe`), and the top-k normalisation llama.cpp
/// will apply against the one transformers applies.
fn experts(file: &str, meta: &ArchMeta, arch: &str, ctx: &Context, out: &mut Findings) {
    let Some(cfg) = &ctx.dir.config else { return };
    let moe = crate::format::arch::ArchSpec::from_config(&cfg.value, None).ok().and_then(|s| s.moe);
    let differ = |key: &str, msg: String| {
        Finding::new(ids::GGUF_EXPERTS_DIFFER, Severity::Error, file, msg)
            .field(format!("{arch}.{key}"))
            .hint("the GGUF routes tokens differently than the source: re-convert from this checkpoint")
    };
    let Some(moe) = moe else {
        if let Some(n) = meta.expert_count.filter(|&n| n > 0) {
            out.push(differ("expert_count", format!("{arch}.expert_count is {n} but config.json describes a dense model (no experts)")));
        }
        return;
    };
    let rows: [(&str, Option<u64>, usize, &str); 2] = [
        ("expert_count", meta.expert_count, moe.experts, "num_local_experts"),
        ("expert_used_count", meta.expert_used_count, moe.top_k, "num_experts_per_tok"),
    ];
    for (key, g, hf, hf_key) in rows {
        match g {
            Some(g) if g == hf as u64 => {}
            Some(g) => out.push(differ(key, format!("{arch}.{key} is {g} but config.json {hf_key} is {hf}"))),
            None => out.push(differ(key, format!("{arch}.{key} is missing; config.json {hf_key} is {hf}"))),
        }
    }
    if let Some(g) = meta.expert_feed_forward_length.filter(|&g| g != moe.intermediate as u64) {
        out.push(
            Finding::new(
                ids::GGUF_SHAPE_DIFFERS,
                Severity::Error,
                file,
                format!("{arch}.expert_feed_forward_length is {g} but config.json moe_intermediate_size is {}", moe.intermediate),
            )
            .field(format!("{arch}.expert_feed_forward_length"))
            .hint("the GGUF was converted from another model or its metadata was edited: re-convert from this checkpoint"),
        );
    }
    if let Some(si) = moe.shared {
        if let Some(g) = meta.expert_shared_feed_forward_length.filter(|&g| g != si as u64) {
            out.push(
                Finding::new(
                    ids::GGUF_SHAPE_DIFFERS,
                    Severity::Error,
                    file,
                    format!("{arch}.expert_shared_feed_forward_length is {g} but config.json shared_expert_intermediate_size is {si}"),
                )
                .field(format!("{arch}.expert_shared_feed_forward_length"))
                .hint("the GGUF was converted from another model or its metadata was edited: re-convert from this checkpoint"),
            );
        }
    }
    // llama.cpp hard-codes the top-k normalisation per graph (`build_moe_ffn(…, norm_w, …)`):
    // qwen3moe.cpp always renormalises, qwen2moe.cpp never does; the converter writes no key for
    // `norm_topk_prob`.
    let llama_cpp_norm = match arch {
        "qwen3moe" => Some(true),
        "qwen2moe" => Some(false),
        _ => None,
    };
    if let Some(norm) = llama_cpp_norm.filter(|&n| n != moe.norm_topk) {
        let (src, cpp) = if norm { ("false", "always renormalises them") } else { ("true", "never renormalises them") };
        out.push(
            Finding::new(
                ids::GGUF_MOE_NORM_DIFFERS,
                Severity::Warning,
                file,
                format!(
                    "config.json has `norm_topk_prob: {src}`, but llama.cpp's {arch} graph {cpp} to sum to 1: \
                     the GGUF computes another function than the source"
                ),
            )
            .field("norm_topk_prob")
            .hint("expect compare to show the difference; llama.cpp has no metadata key to change the normalisation"),
        );
    }
}

/// What each source file feeds, for the finding when it cannot be read.
fn skipped_with(name: &str) -> &'static str {
    match name {
        hf::CONFIG => {
            "the architecture, shapes, heads, context length, rope base and scaling, rms eps and sliding layers were not compared"
        }
        hf::TOKENIZER_JSON => "token strings and ids, merges, the pre-tokenizer and the probe round trip were not compared",
        hf::GENERATION_CONFIG => "the GGUF's EOS was compared with config.json's eos_token_id only",
        hf::TOKENIZER_CONFIG => "its BOS/EOS/PAD strings and chat template were not compared",
        hf::SPECIAL_TOKENS_MAP => "its special-token strings were not compared",
        hf::CHAT_TEMPLATE_JSON | hf::CHAT_TEMPLATE_JINJA => "its chat template was not compared",
        _ => "what it holds was not compared",
    }
}

/// Source files `lint --source` needs that are missing or do not parse: each comparison they feed
/// did not run, which must not read as "no difference found".
fn unreadable_source(ctx: &Context, out: &mut Findings) {
    let dir = ctx.dir;
    let shown = |name: &str| dir.root.join(name).display().to_string();
    let mut push = |name: &str, severity: Severity, problem: String| {
        out.push(
            Finding::new(
                ids::GGUF_SOURCE_UNREADABLE,
                severity,
                shown(name),
                format!("the source's {name} {problem}: {}", skipped_with(name)),
            )
            .hint(format!("give `--source` the HF checkpoint directory the GGUF came from, with a readable {name}")),
        );
    };
    let mut config_reported = false;
    for e in &dir.load_problems {
        let (path, detail) = match e {
            Error::Json { path, detail } => (path, detail.clone()),
            Error::Field { path, field, detail } => (path, format!("`{field}`: {detail}")),
            Error::Io { path, source } => (path, source.to_string()),
            _ => continue,
        };
        let name = dir.rel(path);
        config_reported |= name == hf::CONFIG;
        let severity = if name == hf::CONFIG { Severity::Error } else { Severity::Warning };
        push(&name, severity, format!("cannot be read ({detail})"));
    }
    if dir.config.is_none() && !config_reported {
        push(hf::CONFIG, Severity::Error, "is missing".into());
    }
    match (&dir.tokenizer_json, &ctx.tokenizer_error) {
        (None, _) => push(hf::TOKENIZER_JSON, Severity::Warning, "is missing".into()),
        (Some(_), Some(e)) => push(hf::TOKENIZER_JSON, Severity::Error, format!("does not load ({e})")),
        _ => {}
    }
}

/// llama.cpp's `general.architecture` for an HF `model_type` (convert_hf_to_gguf.py: Mistral and
/// Mixtral convert as `llama`, Gemma 3's text model as `gemma3`). A model type not listed is not
/// compared: llama.cpp's names differ from HF's in ways no rule covers (`deepseek_v2` →
/// `deepseek2`, `cohere` → `command-r`).
pub const GGUF_ARCH_OF: &[(&str, &str)] = &[
    ("llama", "llama"),
    ("mistral", "llama"),
    ("mixtral", "llama"),
    ("qwen2", "qwen2"),
    ("qwen2_moe", "qwen2moe"),
    ("qwen3", "qwen3"),
    ("qwen3_moe", "qwen3moe"),
    ("qwen2_vl", "qwen2vl"),
    ("qwen2_5_vl", "qwen2vl"),
    ("gemma", "gemma"),
    ("gemma2", "gemma2"),
    ("gemma3", "gemma3"),
    ("gemma3_text", "gemma3"),
    ("phi3", "phi3"),
    ("granite", "granite"),
];

/// The GGUF's architecture against the source's `model_type`: another architecture means another
/// model (or a conversion run on the wrong directory).
fn architecture(file: &str, h: &Header, ctx: &Context, out: &mut Findings) {
    let (Some(arch), Some(model_type)) = (h.architecture(), ctx.config.model_type.as_deref()) else { return };
    let Some(&(_, expected)) = GGUF_ARCH_OF.iter().find(|(t, _)| *t == model_type) else { return };
    if arch != expected {
        out.push(
            Finding::new(
                ids::GGUF_ARCHITECTURE_DIFFERS,
                Severity::Error,
                file,
                format!(
                    "`general.architecture` is `{arch}` but the source's config.json model_type `{model_type}` converts to `{expected}`"
                ),
            )
            .field("general.architecture")
            .hint("the GGUF was converted from another model, or `--source` names the wrong directory"),
        );
    }
}

/// Tokens: strings and ids, against the source tokenizer's.
fn tokens(file: &str, tok: &GgufTokenizer, ctx: &Context, out: &mut Findings) {
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
                    ids::GGUF_TOKENS_DIFFER,
                    Severity::Error,
                    file,
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
}

/// Merges and pre-tokenizer, from tokenizer.json itself.
fn merges_and_pre_tokenizer(file: &str, tok: &GgufTokenizer, ctx: &Context, out: &mut Findings) {
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
                        ids::GGUF_MERGES_DIFFER,
                        Severity::Error,
                        file,
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
        pre_tokenizer(file, tok.pre, tj.value.get("pre_tokenizer"), out);
    }
    if let Some(tj) = &tj {
        spm_source(file, tok, &tj.value, ctx.tokenizer.as_ref(), out);
    }
}

/// EOS vs the source's stop ids (`generation_config.json`), and stop ids llama.cpp does not end on.
fn eos_and_stop(file: &str, tok: &GgufTokenizer, ctx: &Context, out: &mut Findings) {
    let (stop, stop_file) = stop_ids(&ctx.decls);
    let stop_listed = stop_decl(&ctx.decls).map_or(0, |(d, _)| d.listed_ids());
    if let Some(eos) = tok.eos {
        if !stop.is_empty() && !stop.contains(&eos) {
            let still = if llama_cpp_eog(tok).iter().any(|i| stop.contains(i)) {
                " (current llama.cpp still stops on the HF token by its text; runtimes that read eos_token_id do not)"
            } else {
                ""
            };
            out.push(
                Finding::new(
                    ids::GGUF_EOS_DIFFERS,
                    Severity::Error,
                    file,
                    format!(
                        "tokenizer.ggml.eos_token_id is {} but {} eos_token_id is {}{still}",
                        show_id(tok, Some(eos)),
                        stop_file.unwrap_or("generation_config.json"),
                        describe_ids(ctx, stop.iter().copied(), stop_listed)
                    ),
                )
                .field("tokenizer.ggml.eos_token_id")
                .hint("set it to the source's EOS (gguf_new_metadata.py --special-token eos ...) or re-convert with generation_config.json present"),
            );
        }
    }
    let eog = llama_cpp_eog(tok);
    let missing: Vec<u64> = stop.iter().copied().filter(|i| !eog.contains(i)).collect();
    if !missing.is_empty() && tok.eos.is_some() {
        out.push(
            Finding::new(
                ids::GGUF_STOP_NOT_EOG,
                Severity::Warning,
                file,
                format!(
                    "generation stops on {} in the HF checkpoint but that is not an end-of-generation token in the GGUF",
                    describe_ids(ctx, missing.iter().copied(), 0)
                ),
            )
            .field("tokenizer.ggml.eot_token_id")
            .hint("set tokenizer.ggml.eot_token_id to it so llama.cpp stops there too"),
        );
    }
}

/// The BOS the GGUF adds vs the source's BOS, both ways.
fn bos(file: &str, tok: &GgufTokenizer, ctx: &Context, out: &mut Findings) {
    let hf_bos = hf_ids(ctx, Role::Bos);
    let gguf_bos_used = tok.bos.filter(|_| tok.adds_bos());
    match (gguf_bos_used, hf_bos.is_empty()) {
        (Some(b), true) => out.push(
            Finding::new(
                ids::GGUF_BOS_DIFFERS,
                Severity::Error,
                file,
                format!("the GGUF adds BOS {} to every prompt but the HF checkpoint has no BOS token", show_id(tok, Some(b))),
            )
            .field("tokenizer.ggml.bos_token_id")
            .hint("set tokenizer.ggml.add_bos_token = false: every prompt otherwise starts with a token the model never saw there"),
        ),
        (Some(b), false) if !hf_bos.contains(&b) => out.push(
            Finding::new(
                ids::GGUF_BOS_DIFFERS,
                Severity::Error,
                file,
                format!(
                    "tokenizer.ggml.bos_token_id is {} but the HF checkpoint's BOS is {}",
                    show_id(tok, Some(b)),
                    describe_ids(ctx, hf_bos.iter().copied(), 0)
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
                    ids::GGUF_BOS_DIFFERS,
                    Severity::Warning,
                    file,
                    format!(
                        "the HF tokenizer starts every prompt with BOS {} but the GGUF does not add it",
                        describe_ids(ctx, hf_bos.iter().copied(), 0)
                    ),
                )
                .field("tokenizer.ggml.add_bos_token")
                .hint("set tokenizer.ggml.add_bos_token = true"),
            );
        }
    }
}

/// PAD vs the source's PAD.
fn pad(file: &str, tok: &GgufTokenizer, ctx: &Context, out: &mut Findings) {
    let hf_pad = hf_ids(ctx, Role::Pad);
    if let Some(p) = tok.pad.filter(|p| !hf_pad.is_empty() && !hf_pad.contains(p)) {
        out.push(
            Finding::new(
                ids::GGUF_PAD_DIFFERS,
                Severity::Info,
                file,
                format!(
                    "tokenizer.ggml.padding_token_id is {} but the HF checkpoint's PAD is {}",
                    show_id(tok, Some(p)),
                    describe_ids(ctx, hf_pad.iter().copied(), 0)
                ),
            )
            .field("tokenizer.ggml.padding_token_id")
            .hint("only batched inference pads, but the files should agree"),
        );
    }
}

/// The ids the source declares for `role`, over all its files.
fn hf_ids(ctx: &Context, role: Role) -> BTreeSet<u64> {
    ctx.decls.iter().filter(|d| d.role == role).flat_map(|d| d.ids.iter().copied()).collect()
}

/// Chat template: missing from the GGUF, or different from the source's.
fn template(file: &str, tok: &GgufTokenizer, ctx: &Context, out: &mut Findings) {
    match (&ctx.template, tok.chat_template) {
        (Some(t), None) => out.push(
            Finding::new(
                ids::GGUF_TEMPLATE_MISSING,
                Severity::Error,
                file,
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
                    ids::GGUF_TEMPLATE_DIFFERS,
                    Severity::Error,
                    file,
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
}

/// Architecture numbers vs config.json: context length, shapes, heads, rope base, rms eps.
fn config_numbers(file: &str, meta: &ArchMeta, arch: &str, c: &ModelConfig, out: &mut Findings) {
    let int_pairs: [Row<u64>; 7] = [
        (ids::GGUF_CONTEXT_LENGTH_DIFFERS, "context_length", meta.context_length, c.max_position_embeddings, "max_position_embeddings"),
        (ids::GGUF_SHAPE_DIFFERS, "embedding_length", meta.embedding_length, c.hidden_size, "hidden_size"),
        (ids::GGUF_SHAPE_DIFFERS, "feed_forward_length", meta.feed_forward_length, c.intermediate_size, "intermediate_size"),
        (ids::GGUF_SHAPE_DIFFERS, "block_count", meta.block_count, c.num_hidden_layers, "num_hidden_layers"),
        (ids::GGUF_HEADS_DIFFER, "attention.head_count", meta.head_count, c.num_attention_heads, "num_attention_heads"),
        (
            ids::GGUF_HEADS_DIFFER,
            "attention.head_count_kv",
            meta.head_count_kv,
            c.num_key_value_heads.or(c.num_attention_heads),
            "num_key_value_heads",
        ),
        (ids::GGUF_SHAPE_DIFFERS, "attention.key_length", meta.key_length, c.head_dim, "head_dim"),
    ];
    for (id, key, g_v, hf_v, hf_key) in int_pairs {
        if let (Some(a), Some(b)) = (g_v, hf_v) {
            if a != b {
                let severity = if id == ids::GGUF_CONTEXT_LENGTH_DIFFERS { Severity::Warning } else { Severity::Error };
                out.push(
                    Finding::new(id, severity, file, format!("{arch}.{key} is {a} but config.json {hf_key} is {b}"))
                        .field(format!("{arch}.{key}"))
                        .hint("the GGUF was converted from another model or its metadata was edited: re-convert from this checkpoint"),
                );
            }
        }
    }
    let float_pairs: [Row<f64>; 2] = [
        (ids::GGUF_ROPE_BASE_DIFFERS, "rope.freq_base", meta.rope_freq_base, c.rope_theta, "rope_theta"),
        (ids::GGUF_RMS_EPS_DIFFERS, "attention.layer_norm_rms_epsilon", meta.rms_norm_eps, c.rms_norm_eps, "rms_norm_eps"),
    ];
    for (id, key, g_v, hf_v, hf_key) in float_pairs {
        if let (Some(a), Some(b)) = (g_v, hf_v) {
            if !close(a, b) {
                out.push(
                    // GGUF stores these as float32: print them as such (1e-6, not 9.99999997e-7).
                    Finding::new(id, Severity::Error, file, format!("{arch}.{key} is {} but config.json {hf_key} is {b}", a as f32))
                        .field(format!("{arch}.{key}"))
                        .hint(
                            "positions or norms are computed differently than in training: re-convert, or fix it with gguf_new_metadata.py",
                        ),
                );
            }
        }
    }
}

/// Granite's four scalars: a GGUF converted without them (as plain `llama`, or by a converter
/// that drops them) runs another model; llama.cpp reads each from `granite.*`.
fn granite_scales(file: &str, h: &Header, arch: &str, ctx: &Context, out: &mut Findings) {
    let Some(cfg) = ctx.dir.config.as_ref().map(|c| &c.value) else { return };
    if cfg.get("model_type").and_then(Json::as_str) != Some("granite") {
        return;
    }
    for (key, hf) in crate::format::gguf::GRANITE_SCALES {
        let Some(want) = cfg.get(hf).and_then(Json::as_f64) else { continue };
        let got = h.arch_key(key).and_then(|v| v.as_f64());
        if got.is_some_and(|g| close(g, want)) {
            continue;
        }
        let is = got.map(|g| (g as f32).to_string()).unwrap_or_else(|| "missing".into());
        out.push(
            Finding::new(
                ids::GGUF_MULTIPLIER_DIFFERS,
                Severity::Error,
                file,
                format!("{arch}.{key} is {is} but config.json {hf} is {want}: llama.cpp runs the model with another scale"),
            )
            .field(format!("{arch}.{key}"))
            .hint("re-convert with a llama.cpp whose converter writes Granite's multipliers (GraniteModel), or set the key with gguf_new_metadata.py"),
        );
    }
}

/// Gemma's logit softcapping (`tanh(x / c) · c` on attention scores and on the final logits), as
/// llama.cpp applies it (`gemma_softcaps`: the keys and their fallbacks), against config.json. A
/// gemma2 key absent falls back to Gemma 2's own cap: GGUFs converted before llama.cpp PR 8197
/// (June 2024) carry neither key, and builds of that time ran them uncapped.
fn softcapping(file: &str, h: &Header, arch: &str, ctx: &Context, out: &mut Findings) {
    let keys = crate::format::gguf::gemma_softcaps(arch);
    if keys.is_empty() {
        return;
    }
    let Some(cfg) = ctx.dir.config.as_ref().map(|c| &c.value) else { return };
    for &(key, default) in keys {
        let want = crate::format::config::text_field(cfg, key).and_then(Json::as_f64).filter(|&f| f != 0.0);
        let stored = h.arch_key(key).and_then(|v| v.as_f64());
        // What llama.cpp runs with.
        let runs = stored.filter(|&f| f != 0.0).or(if stored.is_none() { default } else { None });
        let (severity, problem) = match (want, stored, runs) {
            (Some(w), _, Some(r)) if !close(r, w) => {
                (Severity::Error, format!("llama.cpp caps at {} ({arch}.{key} {}) but config.json {key} is {w}", r as f32, shown(stored)))
            }
            (Some(w), _, None) => {
                (Severity::Error, format!("{arch}.{key} is {}, so llama.cpp does not cap; config.json {key} is {w}", shown(stored)))
            }
            (Some(w), None, Some(_)) => (
                Severity::Warning,
                format!(
                    "{arch}.{key} is missing: current llama.cpp falls back to {w}, as config.json says, but builds before June 2024 \
                     and other GGUF runtimes (vLLM's loader) run it uncapped"
                ),
            ),
            (None, _, Some(r)) => (
                Severity::Error,
                format!(
                    "llama.cpp caps at {} ({arch}.{key} {}) but config.json has no {key}: transformers does not cap",
                    r as f32,
                    shown(stored)
                ),
            ),
            _ => continue,
        };
        out.push(
            Finding::new(
                ids::GGUF_SOFTCAP_DIFFERS,
                severity,
                file,
                format!("{problem}: the GGUF computes another function than the source"),
            )
            .field(format!("{arch}.{key}"))
            .hint("re-convert with a current convert_hf_to_gguf.py (it writes both softcaps), or set the key with gguf_new_metadata.py"),
        );
    }
}

/// A metadata value as a finding shows it: its value, or `missing`.
fn shown(v: Option<f64>) -> String {
    v.map(|f| (f as f32).to_string()).unwrap_or_else(|| "missing".into())
}

/// Rope scaling (catalogue #12: Llama-3.1 scaling dropped at conversion).
fn rope_scaling(file: &str, h: &Header, meta: &ArchMeta, arch: &str, c: &ModelConfig, out: &mut Findings) {
    if let Some(scaling) = &c.rope_scaling {
        let kind = scaling.get("rope_type").or_else(|| scaling.get("type")).and_then(Json::as_str).unwrap_or("default");
        let factor = scaling.get("factor").and_then(Json::as_f64);
        let mut field = None;
        let problem = match kind {
            // convert_hf_to_gguf.py stores llama3 scaling as precomputed frequencies, not metadata.
            "llama3" if h.tensor("rope_freqs.weight").is_none() => {
                Some("config.json has llama3 rope scaling but the GGUF has no `rope_freqs.weight` tensor".to_string())
            }
            // convert_hf_to_gguf.py stores longrope (Phi-3 128k, Phi-4-mini) as two factor tensors
            // and the original context as metadata; no scaling type.
            "longrope" | "su" => longrope_problem(h, meta, arch, scaling).map(|(m, f)| {
                field = Some(f);
                m
            }),
            "linear" | "yarn" => match (meta.rope_scaling_type.as_deref(), meta.rope_scaling_factor) {
                (None, _) | (Some("none"), _) => {
                    Some(format!("config.json has {kind} rope scaling but the GGUF has no {arch}.rope.scaling.type"))
                }
                (Some(t), _) if t != kind => Some(format!("{arch}.rope.scaling.type is {t} but config.json says {kind}")),
                (_, Some(f)) if factor.is_some_and(|hf| !close(f, hf)) => {
                    Some(format!("{arch}.rope.scaling.factor is {f} but config.json says {}", factor.unwrap_or_default()))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(message) = problem {
            out.push(
                Finding::new(ids::GGUF_ROPE_SCALING_DIFFERS, Severity::Error, file, format!("{message}: long prompts break"))
                    .field(field.unwrap_or_else(|| format!("{arch}.rope.scaling.type")))
                    .hint("re-convert with a llama.cpp that supports this scaling type"),
            );
        } else if matches!(kind, "longrope" | "su") {
            let orig = meta.rope_scaling_original_context_length.unwrap_or_default();
            out.push(
                Finding::new(
                    ids::GGUF_LONGROPE_CONTEXT,
                    Severity::Info,
                    file,
                    format!(
                        "llama.cpp picks the longrope factor set by context size (long when n_ctx > {orig}, and it rounds n_ctx up to a multiple of 256), \
                         transformers by sequence length (long past {orig} tokens): run with n_ctx > {orig}, prompts of at most {orig} tokens \
                         get other logits than the HF model (compare runs the GGUF by transformers' rule)"
                    ),
                )
                .field(format!("{arch}.rope.scaling.original_context_length"))
                .hint(if orig >= 256 {
                    format!("expected, not a conversion fault; to match the HF model on short prompts run llama.cpp with n_ctx ≤ {orig}")
                } else {
                    format!("expected, not a conversion fault; llama.cpp's smallest context (256) exceeds {orig}, so it always runs the long factors")
                }),
            );
        }
    } else if meta.rope_scaling_type.as_deref().is_some_and(|t| t != "none") {
        out.push(
            Finding::new(
                ids::GGUF_ROPE_SCALING_DIFFERS,
                Severity::Error,
                file,
                format!(
                    "{arch}.rope.scaling.type is {} but config.json has no rope scaling",
                    meta.rope_scaling_type.clone().unwrap_or_default()
                ),
            )
            .field(format!("{arch}.rope.scaling.type"))
            .hint("positions are computed differently than in training: re-convert"),
        );
    } else if let Some(t) = ["rope_factors_long.weight", "rope_factors_short.weight"].into_iter().find(|t| h.tensor(t).is_some()) {
        out.push(
            Finding::new(
                ids::GGUF_ROPE_SCALING_DIFFERS,
                Severity::Error,
                file,
                format!("the GGUF has a `{t}` tensor (longrope scaling) but config.json has no rope scaling"),
            )
            .field(t)
            .hint("the GGUF was converted from another config (or the wrong source directory is given): re-convert"),
        );
    } else if h.tensor("rope_freqs.weight").is_some() {
        out.push(
            Finding::new(
                ids::GGUF_ROPE_SCALING_DIFFERS,
                Severity::Error,
                file,
                "the GGUF has a `rope_freqs.weight` tensor (llama3-style rope scaling) but config.json has no rope scaling",
            )
            .field("rope_freqs.weight")
            .hint("the GGUF was converted from another config (or the wrong source directory is given): re-convert"),
        );
    }
}

/// What a longrope source's GGUF lacks: either factor tensor, or the original context the
/// choice between them is made against (the factors' values are checked by the engine's parity,
/// not here: lint reads metadata).
/// `(message, field)`.
fn longrope_problem(h: &Header, meta: &ArchMeta, arch: &str, scaling: &Json) -> Option<(String, String)> {
    let missing: Vec<&str> =
        ["rope_factors_long.weight", "rope_factors_short.weight"].into_iter().filter(|t| h.tensor(t).is_none()).collect();
    if let Some(first) = missing.first() {
        let msg = format!("config.json has longrope rope scaling but the GGUF has no `{}` tensor", missing.join("` / `"));
        return Some((msg, first.to_string()));
    }
    let key = format!("{arch}.rope.scaling.original_context_length");
    let want = scaling.get("original_max_position_embeddings").and_then(Json::as_u64);
    match (meta.rope_scaling_original_context_length, want) {
        (None, _) => Some((format!("config.json has longrope rope scaling but the GGUF has no {key}"), key)),
        (Some(g), Some(w)) if g != w => Some((format!("{key} is {g} but config.json says original_max_position_embeddings {w}"), key)),
        _ => None,
    }
}

/// `(finding id, GGUF key after `{arch}.`, GGUF value, config.json value, config.json key)`.
type Row<T> = (FindingId, &'static str, Option<T>, Option<T>, &'static str);

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= F32_REL_TOL * a.abs().max(b.abs())
}

/// Which layers use the sliding window, as the GGUF will be run (llama.cpp derives Gemma 2/3's
/// pattern from the architecture: alternating, or 5 sliding to 1 global) versus the source's
/// `layer_types`. A model whose pattern differs runs differently past the window.
fn sliding_layers(g: &GgufFile, ctx: &Context, file: &str, out: &mut Findings) {
    use crate::format::arch::ArchSpec;
    let Some(cfg) = ctx.dir.config.as_ref() else { return };
    // A non-finite float in the GGUF is reported by `alone`; nothing to compare it with here.
    let Ok(gguf_config) = g.header.hf_config_checked() else { return };
    let (Ok(hf), Ok(gg)) = (ArchSpec::from_config(&cfg.value, None), ArchSpec::from_config(&gguf_config, None)) else {
        return;
    };
    if hf.sliding_window.is_none() || hf.sliding_layers.len() != gg.sliding_layers.len() || hf.sliding_layers == gg.sliding_layers {
        return;
    }
    let list = |v: &[bool]| v.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i.to_string()).collect::<Vec<_>>().join(", ");
    out.push(
        Finding::new(
            ids::GGUF_SLIDING_LAYERS_DIFFER,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_tolerance_accepts_rounding_only() {
        assert!(close(f64::from(1e-6f32), 1e-6));
        assert!(close(f64::from(500000f32), 500000.0));
        assert!(!close(1e-5, 1e-6));
        assert!(!close(10000.0, 500000.0));
    }
}
