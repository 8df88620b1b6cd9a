//! The GGUF by itself, without its HF source: layout problems, float metadata that is not a
//! finite number, an architecture (and whether the engine runs it), block count vs `blk.N` tensors, token arrays of one length, special ids inside the vocabulary, an EOS,
//! vocabulary vs embedding rows, a named pre-tokenizer, a chat template for a chat vocabulary that
//! renders, ends turns on an end-of-generation token and does not double BOS.
//!
//! It does not compare with the HF checkpoint (`source`) or read tensor values (`values`).

use super::tokenizer::{llama_cpp_eog, show_id, special_ids, spm_alone};
use crate::chat::{sample_conversation, turn_end, ChatTemplate};
use crate::checks::ids::{self, FindingId};
use crate::checks::template::ROLE_MARKERS;
use crate::checks::{Finding, Findings, Severity};
use crate::format::gguf::LayoutProblem;
use crate::format::gguf::{GgufFile, Header};

/// Architectures whose llama.cpp loader needs a separate `output.weight` (see `check`).
const OUTPUT_REQUIRED: &[&str] = &["qwen2moe"];

/// The finding id of a layout problem the parser found.
pub fn layout_id(p: &LayoutProblem) -> FindingId {
    match p {
        LayoutProblem::OutOfBounds { .. } => ids::GGUF_TENSOR_OUT_OF_BOUNDS,
        LayoutProblem::Misaligned { .. } => ids::GGUF_TENSOR_MISALIGNED,
        LayoutProblem::Overlap { .. } => ids::GGUF_TENSOR_OVERLAP,
        LayoutProblem::NotPacked { .. } => ids::GGUF_TENSOR_NOT_PACKED,
        LayoutProblem::NameTooLong { .. } => ids::GGUF_TENSOR_NAME_TOO_LONG,
    }
}

/// The file's layout problems (truncation, overlapping or misaligned tensors, lying counts): what
/// every GGUF is checked for, a LoRA adapter too.
pub fn integrity(g: &GgufFile, out: &mut Findings) {
    let file = g.file_name();
    let finding = |p: &LayoutProblem| {
        Finding::new(layout_id(p), Severity::Error, &file, p.message())
            .field(p.tensor())
            .hint("the file is damaged or was written by a broken tool: re-download or re-convert it")
    };
    for p in &g.header.problems {
        out.push(finding(p));
    }
    // The parser counted these without keeping them.
    for (p, n) in &g.header.unlisted {
        out.count_more(&finding(p), *n);
    }
}

/// The GGUF against itself. `with_source`: an HF source will be checked too, so findings it
/// reports with more detail (missing template) are left to `check_source`.
pub fn check(g: &GgufFile, with_source: bool, out: &mut Findings) {
    integrity(g, out);
    let file = g.file_name();
    let h = &g.header;
    for bad in h.non_finite_floats() {
        let what = match bad.in_array {
            None => format!("`{}` is {}", bad.key, bad.value),
            Some((n, first)) => format!("`{}` holds {n} non-finite value(s) (the first, at index {first}, is {})", bad.key, bad.value),
        };
        out.push(
            Finding::new(
                ids::GGUF_METADATA_NOT_FINITE,
                Severity::Error,
                &file,
                format!("{what}, not a finite number: llama.cpp computes with it as it is, and no default (such as rope base 10000) may stand in for it"),
            )
            .field(bad.key.clone())
            .hint("set the value from the source config.json (gguf-py's gguf_set_metadata.py / gguf_new_metadata.py) or re-convert"),
        );
    }
    let meta = h.arch_meta();
    let Some(arch) = meta.architecture.clone() else {
        out.push(
            Finding::new(ids::GGUF_NO_ARCHITECTURE, Severity::Error, &file, "no `general.architecture`: llama.cpp cannot load it")
                .field("general.architecture")
                .hint("re-convert with llama.cpp's convert_hf_to_gguf.py"),
        );
        return;
    };
    if !Header::ENGINE_ARCHS.contains(&arch.as_str()) {
        out.push(
            Finding::new(
                ids::GGUF_ARCHITECTURE_NOT_RUN,
                Severity::Info,
                &file,
                format!(
                    "`general.architecture` is `{arch}`, which ckptcheck's engine does not run (it runs {}): `compare` and `bisect` cannot run this file; these static checks still apply",
                    Header::ENGINE_ARCHS.join(", ")
                ),
            )
            .field("general.architecture")
            .hint("compare it with llama.cpp's own tools (llama-perplexity --kl-divergence) instead"),
        );
    }

    if let (Some(declared), Some(found)) = (meta.block_count, h.blocks_in_tensors()) {
        if declared != found {
            out.push(
                Finding::new(
                    ids::GGUF_BLOCK_COUNT_MISMATCH,
                    Severity::Error,
                    &file,
                    format!("{arch}.block_count is {declared} but the file has tensors for {found} blocks (`blk.0` … `blk.{}`)", found - 1),
                )
                .field(format!("{arch}.block_count"))
                .hint("the metadata and the tensors come from different models, or layers were dropped: re-convert"),
            );
        }
    }

    experts(&file, h, &arch, meta.expert_count, meta.expert_used_count, out);
    // llama.cpp's loaders that create `output.weight` without TENSOR_NOT_REQUIRED (no fallback to
    // the tied `token_embd.weight`): src/models/qwen2moe.cpp. The converter writes no
    // `output.weight` for a model with tied embeddings, so such a GGUF never loads in llama.cpp
    // (measured: "check_tensor_dims: tensor 'output.weight' not found"), though ckptcheck runs it.
    if OUTPUT_REQUIRED.contains(&arch.as_str()) && h.tensor("output.weight").is_none() {
        out.push(
            Finding::new(
                ids::GGUF_OUTPUT_REQUIRED,
                Severity::Error,
                &file,
                format!(
                    "no `output.weight`: llama.cpp's `{arch}` loader requires it (it does not fall back to the tied `token_embd.weight`), so llama.cpp refuses this file; ckptcheck's own engine would still run it"
                ),
            )
            .field("output.weight")
            .hint("the source ties its embeddings (`tie_word_embeddings: true`): save an untied lm_head before converting"),
        );
    }

    let tok = h.tokenizer();
    let Some(tokens) = tok.tokens else {
        out.push(
            Finding::new(ids::GGUF_NO_TOKENIZER, Severity::Warning, &file, "no `tokenizer.ggml.tokens`: the file carries no vocabulary")
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
                    ids::GGUF_TOKEN_ARRAYS_MISMATCH,
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
                    ids::GGUF_SPECIAL_OUT_OF_RANGE,
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
                ids::GGUF_NO_EOS,
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
                    ids::GGUF_VOCAB_EXCEEDS_EMBEDDING,
                    Severity::Error,
                    &file,
                    format!("the vocabulary has {n} tokens but `token_embd.weight` has {rows} rows: ids ≥ {rows} index past the embedding"),
                )
                .field("token_embd.weight")
                .hint("resize the embeddings to the tokenizer (resize_token_embeddings) before converting"),
            );
        }
    }
    spm_alone(&file, &tok, out);
    if tok.model == Some("gpt2") && tok.pre.is_none() {
        out.push(
            Finding::new(
                ids::GGUF_PRE_MISSING,
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
                    ids::GGUF_TEMPLATE_MISSING,
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
    let rendered = match tmpl.render(&sample_conversation(), false, &crate::checkpoint::gguf_template_tokens(&tok)) {
        Ok(r) => r,
        Err(e) => {
            out.push(
                Finding::new(ids::GGUF_TEMPLATE_RENDER_FAILED, Severity::Error, &file, e.to_string())
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
                    ids::GGUF_TURN_END_NOT_EOG,
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
        if tok.adds_bos() {
            out.push(
                Finding::new(
                    ids::GGUF_DOUBLE_BOS,
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

/// Mixture-of-experts metadata against the tensors: `{arch}.expert_count` is the router's output
/// width (`blk.N.ffn_gate_inp`, ggml dims `[hidden, experts]`) and the third dim of every
/// `blk.N.ffn_{gate,up,down}_exps`; `expert_used_count` (experts per token) is in 1..=expert_count.
/// llama.cpp refuses or misroutes a file where these disagree.
fn experts(file: &str, h: &Header, arch: &str, count: Option<u64>, used: Option<u64>, out: &mut Findings) {
    let inconsistent = |field: String, msg: String| {
        Finding::new(ids::GGUF_EXPERTS_INCONSISTENT, Severity::Error, file, msg)
            .field(field)
            .hint("the metadata was edited or the conversion is broken: re-convert from the source checkpoint")
    };
    let declared = count.filter(|&n| n > 0);
    for t in &h.tensors {
        let Some(rest) = t.name.strip_prefix("blk.") else { continue };
        let Some((_, tail)) = rest.split_once('.') else { continue };
        let width = match tail {
            "ffn_gate_inp.weight" => t.dims.get(1).copied().filter(|_| t.dims.len() == 2),
            "ffn_gate_exps.weight" | "ffn_up_exps.weight" | "ffn_down_exps.weight" => t.dims.get(2).copied().filter(|_| t.dims.len() == 3),
            _ => continue,
        };
        let msg = match (declared, width) {
            (None, _) => format!("`{}` is an expert tensor but `{arch}.expert_count` is missing or 0", t.name),
            (Some(_), None) => {
                format!("`{}` has {} dims, not the [hidden, experts] / [cols, rows, experts] llama.cpp reads", t.name, t.dims.len())
            }
            (Some(n), Some(w)) if w != n => format!("`{}` holds {w} experts but `{arch}.expert_count` is {n}", t.name),
            _ => continue,
        };
        out.push(inconsistent(format!("{arch}.expert_count"), msg));
    }
    if let Some(n) = declared {
        match used {
            Some(k) if k >= 1 && k <= n => {}
            Some(k) => out.push(inconsistent(
                format!("{arch}.expert_used_count"),
                format!("`{arch}.expert_used_count` is {k}: experts per token must be 1..={n} (`expert_count`)"),
            )),
            None => out.push(inconsistent(
                format!("{arch}.expert_used_count"),
                format!("`{arch}.expert_count` is {n} but `{arch}.expert_used_count` (experts per token) is missing"),
            )),
        }
    }
}
