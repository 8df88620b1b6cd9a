//! `inspect` for a GGUF file: its metadata, tokenizer and type mix. `inspect.rs` hands an opened
//! GGUF here; `lint` needs nothing GGUF-specific (`checks::lint` routes the checks).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::checkpoint::Facts;
use crate::checks;
use crate::format::gguf::{ArchMeta, GgufFile, TypeBytes};
use crate::report::inspect::{head_dim, summarize_template, template_text, TemplateSummary};
use crate::report::{bytes, count, Report};

/// Version of the GGUF `inspect --json` layout.
pub const GGUF_INSPECT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct GgufInspectReport {
    pub schema_version: u32,
    pub path: String,
    pub format: &'static str,
    pub gguf_version: u32,
    pub file_bytes: u64,
    pub alignment: u64,
    pub arch: ArchMeta,
    /// "instruct" (chat template or role tokens), "base", "LoRA adapter" or "multimodal projector (mmproj)".
    pub kind: &'static str,
    /// A GGUF LoRA adapter's settings (`general.type = adapter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSummary>,
    pub tensor_count: usize,
    /// Elements over all tensors.
    pub parameters: u64,
    /// Tensor data bytes.
    pub bytes: u64,
    /// ggml type → tensors, elements, bytes.
    pub types: BTreeMap<String, TypeBytes>,
    pub tokenizer: TokenizerSummary,
    /// `tokenizer.chat_template` rendered on the sample conversation as transformers renders an
    /// HF one (with the GGUF's own special tokens).
    pub chat_template: Option<TemplateSummary>,
    /// Every metadata key with a short rendering of its value (arrays as `[type; n]`).
    pub metadata: BTreeMap<String, String>,
    pub layout_problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct LoraSummary {
    pub alpha: Option<f64>,
    /// The ranks of its lora_a tensors (one, normally).
    pub ranks: Vec<u64>,
    /// Adapted weights (lora_a / lora_b pairs).
    pub modules: usize,
    /// `general.base_model.0.name`, as the converter recorded it.
    pub base_model: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenizerSummary {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub tokens: Option<usize>,
    pub merges: Option<usize>,
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub eot: Option<String>,
    pub pad: Option<String>,
    pub add_bos: Option<bool>,
    pub chat_template_chars: Option<usize>,
}

pub fn build(path: &Path, g: &GgufFile) -> GgufInspectReport {
    let h = &g.header;
    let tok = h.tokenizer();
    let show = |id: Option<u64>| {
        id.map(|i| match tok.token(i) {
            Some(t) => format!("{i} `{t}`"),
            None => i.to_string(),
        })
    };
    let has_markers = tok.tokens.is_some_and(|ts| checks::template::ROLE_MARKERS.iter().any(|m| ts.iter().any(|t| t == m)));
    let types = h.type_summary();
    GgufInspectReport {
        schema_version: GGUF_INSPECT_SCHEMA_VERSION,
        path: path.display().to_string(),
        format: "gguf",
        gguf_version: h.version,
        file_bytes: g.file_len(),
        alignment: h.alignment,
        arch: h.arch_meta(),
        kind: if h.is_lora_adapter() {
            "LoRA adapter"
        } else if h.is_mmproj() {
            "multimodal projector (mmproj)"
        } else if tok.chat_template.is_some() || has_markers {
            "instruct"
        } else {
            "base"
        },
        lora: h.is_lora_adapter().then(|| {
            let a: Vec<_> = h.tensors.iter().filter(|t| t.name.ends_with(".lora_a")).collect();
            let mut ranks: Vec<u64> = a.iter().filter_map(|t| t.dims.get(1).copied()).collect();
            ranks.sort_unstable();
            ranks.dedup();
            LoraSummary {
                alpha: h.lora_alpha(),
                ranks,
                modules: a.len(),
                base_model: h.get_str("general.base_model.0.name").map(str::to_string),
            }
        }),
        tensor_count: h.tensors.len(),
        parameters: types.values().map(|t| t.elements).sum(),
        bytes: types.values().map(|t| t.bytes).sum(),
        types: types.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect(),
        tokenizer: TokenizerSummary {
            model: tok.model.map(str::to_string),
            pre: tok.pre.map(str::to_string),
            tokens: tok.tokens.map(<[String]>::len),
            merges: tok.merges.map(<[String]>::len),
            bos: show(tok.bos),
            eos: show(tok.eos),
            eot: show(tok.eot),
            pad: show(tok.pad),
            add_bos: tok.add_bos,
            chat_template_chars: tok.chat_template.map(|t| t.chars().count()),
        },
        chat_template: {
            let facts = Facts::of_gguf(g);
            facts.template.as_ref().map(|t| summarize_template(&facts, t, "tokenizer.chat_template".into()))
        },
        metadata: h.metadata.iter().map(|(k, v)| (k.clone(), v.summary())).collect(),
        layout_problems: h.problems.iter().map(|p| p.message()).collect(),
    }
}

impl Report for GgufInspectReport {
    const KIND: &'static str = "inspect";
    fn text(&self, _color: bool) -> String {
        render_text(self)
    }
}

pub fn render_text(r: &GgufInspectReport) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18} {v}\n"));
    let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
    let a = &r.arch;
    row("path", r.path.clone());
    row("format", format!("gguf v{} ({}, alignment {})", r.gguf_version, bytes(r.file_bytes), r.alignment));
    row("architecture", a.architecture.clone().unwrap_or_else(|| "?".into()));
    row("kind", r.kind.to_string());
    if let Some(l) = &r.lora {
        let ranks: Vec<String> = l.ranks.iter().map(u64::to_string).collect();
        let scale = match (l.alpha, l.ranks.as_slice()) {
            (Some(a), [r]) if *r > 0 => format!(" (scale α/r = {})", a / *r as f64),
            _ => String::new(),
        };
        let alpha = l.alpha.map(|a| a.to_string()).unwrap_or_else(|| "?".into());
        row("lora", format!("alpha {alpha}, rank {}{scale}, {} adapted weights", ranks.join("/"), l.modules));
        row("base model", l.base_model.clone().unwrap_or_else(|| "-".into()));
        row("parameters", format!("{} ({} tensors, {})", count(r.parameters), r.tensor_count, bytes(r.bytes)));
        row("runs as", "BASE.gguf+ADAPTER.gguf (compare, bisect)".into());
        return s;
    }
    row(
        "shape",
        format!(
            "{} layers, hidden {}, heads {}/{} kv, head_dim {}, ffn {}, context {}{}",
            o(a.block_count),
            o(a.embedding_length),
            o(a.head_count),
            o(a.head_count_kv),
            head_dim(a.key_length, a.embedding_length, a.head_count),
            o(a.feed_forward_length),
            o(a.context_length),
            a.expert_count
                .map(|e| format!(", {e} experts{}", a.expert_used_count.map(|k| format!(" ({k} per token)")).unwrap_or_default()))
                .unwrap_or_default()
        ),
    );
    row(
        "rope",
        format!(
            "base {}{}, rms eps {}",
            a.rope_freq_base.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            a.rope_scaling_type.as_ref().map(|t| format!(", scaling {t} ×{}", a.rope_scaling_factor.unwrap_or(1.0))).unwrap_or_default(),
            a.rms_norm_eps.map(|t| (t as f32).to_string()).unwrap_or_else(|| "?".into())
        ),
    );
    row("parameters", format!("{} ({} tensors, {})", count(r.parameters), r.tensor_count, bytes(r.bytes)));
    for (t, b) in &r.types {
        let pct = if r.bytes > 0 { 100.0 * b.bytes as f64 / r.bytes as f64 } else { 0.0 };
        row("type", format!("{t:<8} {:>4} tensors {:>10} ({pct:.1}%)", b.tensors, bytes(b.bytes)));
    }
    let t = &r.tokenizer;
    let os = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    row(
        "tokenizer",
        format!(
            "{} (pre {}), {} tokens, {} merges",
            os(&t.model),
            os(&t.pre),
            t.tokens.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
            t.merges.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
        ),
    );
    row(
        "special tokens",
        format!(
            "bos {} (add {}), eos {}, eot {}, pad {}",
            os(&t.bos),
            t.add_bos.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            os(&t.eos),
            os(&t.eot),
            os(&t.pad)
        ),
    );
    template_text(&mut s, r.chat_template.as_ref());
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18} {v}\n"));
    for p in &r.layout_problems {
        row("LAYOUT PROBLEM", p.clone());
    }
    s
}
