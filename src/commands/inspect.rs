//! `ckptcheck inspect PATH`: what is this checkpoint really?

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::checkpoint::Checkpoint;
use crate::checks::template::ROLE_MARKERS;
use crate::checks::Context;
use crate::cli::InspectArgs;
use crate::commands::{inspect_gguf, Outcome};
use crate::format::hf::HfDir;
use crate::format::tokens::{stop_ids, SpecialDecl};
use crate::output::Printer;
use crate::report::inspect::{head_dim, summarize_template, template_text, TemplateSummary};
use crate::report::{self, bytes, count, Report};

/// Version of the `inspect --json` layout.
pub const INSPECT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct InspectReport {
    pub schema_version: u32,
    pub path: String,
    pub format: &'static str,
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    /// "instruct", "base" or "adapter", with the evidence.
    pub kind: &'static str,
    pub kind_evidence: Vec<String>,
    pub config: Option<crate::format::config::ModelConfig>,
    /// Mixture of experts, as the engine reads config.json (absent for dense models).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experts: Option<crate::format::arch::Moe>,
    /// Stored elements over all tensors (packed quantized tensors count their storage elements).
    pub parameters: u64,
    pub bytes: u64,
    /// A vision-language checkpoint: where its language model is and what else it holds (absent
    /// for a text model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multimodal: Option<MultimodalSummary>,
    /// dtype → stored elements.
    pub dtypes: BTreeMap<String, u64>,
    pub shards: Vec<ShardSummary>,
    pub tensor_count: usize,
    pub tied_embeddings: Option<bool>,
    pub vocab: VocabSummary,
    pub special_tokens: Vec<SpecialDecl>,
    pub stop_token_ids: Vec<u64>,
    pub chat_template: Option<TemplateSummary>,
    pub quantization: Option<Quantization>,
    pub adapter: Option<Value>,
    /// The adapter's LoRA settings as PEFT applies them (absent for a model, or when
    /// adapter_config.json does not parse: `lint` says why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSummary>,
    pub pickles_ignored: Vec<String>,
}

/// The parts of a vision-language checkpoint: the language model ckptcheck runs, and the vision
/// tower / projector it only scans.
#[derive(Debug, Serialize)]
pub struct MultimodalSummary {
    /// Where the language model's tensors are stored (`language_model.model.`, `model.language_model.`,
    /// or `model.` for Qwen2-VL's hub layout).
    pub language_model_prefix: String,
    pub language_model_parameters: u64,
    /// Top-level name → stored elements, for everything else (`vision_tower`, `multi_modal_projector`, `visual`…).
    pub other_parameters: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct LoraSummary {
    pub r: u64,
    pub alpha: f64,
    /// The scale PEFT multiplies B·A by: alpha / r (alpha / sqrt(r) with rsLoRA).
    pub scale: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    /// Module-name suffixes, or the regex PEFT matches whole names against.
    pub targets: String,
    pub base_model: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ShardSummary {
    pub name: String,
    pub tensors: usize,
    pub bytes: u64,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, Default)]
pub struct VocabSummary {
    /// Largest tokenizer id + 1.
    pub tokenizer_ids: Option<u64>,
    pub added_tokens: Option<usize>,
    pub config_vocab_size: Option<u64>,
    pub embedding_rows: Option<u64>,
    pub lm_head_rows: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Quantization {
    pub method: String,
    pub source: String,
    /// The scheme's settings in one line (`QuantConfig::summary`); empty when unknown.
    pub scheme: String,
    pub details: Value,
}

pub fn run(args: &InspectArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    match Checkpoint::open(&args.path)? {
        Checkpoint::Gguf(g) => report::print(printer, &inspect_gguf::build(&args.path, &g), args.json)?,
        Checkpoint::Hf(d) | Checkpoint::Adapter(d) => report::print(printer, &build(&args.path, &d), args.json)?,
        // A base with an adapter: the adapter directory says what was applied to which base.
        Checkpoint::BaseWithAdapter { adapter, .. } => report::print(printer, &build(&args.path, &adapter.dir), args.json)?,
        Checkpoint::GgufWithAdapter { adapter, .. } => report::print(printer, &inspect_gguf::build(&args.path, &adapter), args.json)?,
    }
    Ok(Outcome::Clean)
}

impl Report for InspectReport {
    const KIND: &'static str = "inspect";
    fn text(&self, _color: bool) -> String {
        render_text(self)
    }
}

/// `Some` for a vision-language checkpoint (config.json has `vision_config`, or its language model
/// sits under a VLM prefix): the language model's prefix and size, and the rest by top-level name.
fn multimodal(dir: &HfDir) -> Option<MultimodalSummary> {
    let declared = dir.config.as_ref().is_some_and(|c| crate::format::config::has_vision_config(&c.value));
    let mut prefix: Option<String> = None;
    let (mut language, mut other) = (0u64, BTreeMap::new());
    for (_, t) in dir.tensors() {
        let canonical = crate::format::hf::canonical_name(&t.name);
        if canonical.starts_with("model.") || canonical.starts_with("lm_head.") {
            language += t.numel();
            if canonical.starts_with("model.") && prefix.is_none() {
                let stored_prefix = &t.name[..t.name.len() - (canonical.len() - "model.".len())];
                prefix = Some(stored_prefix.to_string());
            }
        } else {
            let top = t.name.strip_prefix("model.").unwrap_or(&t.name);
            *other.entry(top.split('.').next().unwrap_or(top).to_string()).or_insert(0) += t.numel();
        }
    }
    let prefix = prefix.unwrap_or_else(|| "model.".into());
    (declared || prefix != "model.").then_some(MultimodalSummary {
        language_model_prefix: prefix,
        language_model_parameters: language,
        other_parameters: other,
    })
}

pub fn build(path: &std::path::Path, dir: &HfDir) -> InspectReport {
    let ctx = Context::new(dir);
    let mut dtypes = BTreeMap::new();
    let mut parameters = 0u64;
    let mut bytes = 0u64;
    let mut tensor_count = 0;
    for (_, t) in dir.tensors() {
        *dtypes.entry(t.dtype.name().to_string()).or_insert(0) += t.numel();
        parameters += t.numel();
        bytes += t.end - t.start;
        tensor_count += 1;
    }
    let multimodal = multimodal(dir);
    let shards = dir
        .shards
        .iter()
        .map(|s| match &s.file {
            Ok(f) => ShardSummary { name: s.name.clone(), tensors: f.header.tensors.len(), bytes: f.file_len(), error: None },
            Err(e) => ShardSummary { name: s.name.clone(), tensors: 0, bytes: 0, error: Some(e.to_string()) },
        })
        .collect();
    let (embed, head) = ctx.embedding_rows();
    let tied_embeddings = match (&embed, &head) {
        (Some(_), None) => Some(true),
        (Some(_), Some(_)) => Some(false),
        _ => ctx.config.tie_word_embeddings,
    };
    let vocab = VocabSummary {
        tokenizer_ids: ctx.tokenizer.as_ref().map(|t| t.id_space),
        added_tokens: ctx.tokenizer.as_ref().map(|t| t.added.len()),
        config_vocab_size: ctx.config.vocab_size,
        embedding_rows: embed.map(|e| e.1),
        lm_head_rows: head.map(|h| h.1),
    };

    let chat_template = ctx.template.as_ref().map(|t| {
        let source = match &t.field {
            Some(f) => format!("{}:{f}", ctx.dir.rel(&t.source)),
            None => ctx.dir.rel(&t.source),
        };
        summarize_template(&ctx, t, source)
    });
    let role_markers: Vec<String> = ctx
        .tokenizer
        .as_ref()
        .map(|t| ROLE_MARKERS.iter().filter(|m| t.id(m).is_some()).map(|m| m.to_string()).collect())
        .unwrap_or_default();
    let (kind, kind_evidence) = if dir.is_adapter() {
        ("adapter", vec!["adapter_config.json present".to_string()])
    } else {
        let mut ev = Vec::new();
        if let Some(t) = &ctx.template {
            ev.push(format!("chat template in {}", dir.rel(&t.source)));
        }
        if !role_markers.is_empty() {
            ev.push(format!("role tokens {}", role_markers.join(" ")));
        }
        if ev.is_empty() {
            ("base", vec!["no chat template and no chat role tokens".to_string()])
        } else {
            ("instruct", ev)
        }
    };
    let (stop, _) = stop_ids(&ctx.decls);
    let experts = dir.config.as_ref().and_then(|c| crate::format::arch::ArchSpec::from_config(&c.value, None).ok()).and_then(|s| s.moe);
    InspectReport {
        experts,
        schema_version: INSPECT_SCHEMA_VERSION,
        path: path.display().to_string(),
        format: if dir.is_adapter() { "peft-adapter" } else { "hf-safetensors" },
        model_type: ctx.config.model_type.clone(),
        architectures: ctx.config.architectures.clone(),
        kind,
        kind_evidence,
        config: dir.config.as_ref().map(|_| ctx.config.clone()),
        parameters,
        bytes,
        multimodal,
        dtypes,
        shards,
        tensor_count,
        tied_embeddings,
        vocab,
        special_tokens: ctx.decls.clone(),
        stop_token_ids: stop,
        chat_template,
        quantization: quantization(dir),
        adapter: dir.adapter_config.as_ref().map(|a| a.value.clone()),
        lora: dir.adapter_config.as_ref().and_then(|a| crate::format::lora::LoraConfig::from_json(&a.value, &a.path).ok()).map(|c| {
            LoraSummary {
                r: c.r,
                alpha: c.alpha,
                scale: c.scale(c.r, c.alpha),
                use_rslora: c.use_rslora,
                use_dora: c.use_dora,
                targets: match &c.target_modules {
                    crate::format::lora::Targets::Names(n) => n.join(", "),
                    crate::format::lora::Targets::Regex(r) => format!("regex {r}"),
                },
                base_model: c.base_model.clone(),
            }
        }),
        pickles_ignored: dir.pickles.iter().map(|p| dir.rel(p)).collect(),
    }
}

/// From `config.json:quantization_config`, `quantize_config.json`, or the tensor names.
fn quantization(dir: &HfDir) -> Option<Quantization> {
    if let Some(q) = crate::format::quant::QuantConfig::find(dir) {
        let scheme = q.summary();
        return Some(Quantization { method: q.method, source: q.source.name().into(), scheme, details: q.raw });
    }
    let suffix = |s: &str| dir.tensors().any(|(_, t)| t.name.ends_with(s));
    let method = if suffix(".qweight") {
        "gptq-or-awq (qweight tensors)"
    } else if suffix(".weight_packed") {
        "compressed-tensors (weight_packed tensors)"
    } else if suffix(".weight.absmax") {
        "bitsandbytes (absmax tensors)"
    } else {
        return None;
    };
    let source = "tensor names (no quantization_config)".into();
    Some(Quantization { method: method.into(), source, scheme: String::new(), details: Value::Null })
}

pub fn render_text(r: &InspectReport) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18} {v}\n"));
    row("path", r.path.clone());
    row("format", r.format.to_string());
    row("architecture", format!("{} {}", r.model_type.clone().unwrap_or_else(|| "?".into()), r.architectures.join(",")));
    row("kind", format!("{} ({})", r.kind, r.kind_evidence.join("; ")));
    if let Some(c) = &r.config {
        let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
        row(
            "shape",
            format!(
                "{} layers, hidden {}, heads {}/{} kv, head_dim {}, ffn {}",
                o(c.num_hidden_layers),
                o(c.hidden_size),
                o(c.num_attention_heads),
                o(c.num_key_value_heads),
                head_dim(c.head_dim, c.hidden_size, c.num_attention_heads),
                o(c.intermediate_size)
            ),
        );
        if let Some(m) = &r.experts {
            let sparse = m.sparse_layers.iter().filter(|&&s| s).count();
            row(
                "experts",
                format!(
                    "{} per sparse layer, top-{} per token ({}), expert ffn {}, sparse layers {sparse} of {}{}",
                    m.experts,
                    m.top_k,
                    if m.norm_topk { "weights renormalised" } else { "weights as routed" },
                    m.intermediate,
                    m.sparse_layers.len(),
                    m.shared.map(|s| format!(", shared expert ffn {s}")).unwrap_or_default()
                ),
            );
        }
        row(
            "rope",
            format!(
                "theta {}{}",
                c.rope_theta.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
                c.rope_scaling.as_ref().map(|v| format!(", scaling {v}")).unwrap_or_default()
            ),
        );
    }
    if let Some(l) = &r.lora {
        row(
            "lora",
            format!(
                "r {}, alpha {} (scale {} = alpha / {}){}",
                l.r,
                l.alpha,
                l.scale,
                if l.use_rslora { "sqrt(r), rsLoRA" } else { "r" },
                if l.use_dora { ", DoRA" } else { "" }
            ),
        );
        row("lora targets", l.targets.clone());
        row("lora base", l.base_model.clone().unwrap_or_else(|| "? (base_model_name_or_path not set)".into()));
    }
    row("parameters", format!("{} ({} tensors, {})", count(r.parameters), r.tensor_count, bytes(r.bytes)));
    if let Some(m) = &r.multimodal {
        let others: Vec<String> = m.other_parameters.iter().map(|(k, v)| format!("{k} {}", count(*v))).collect();
        row(
            "multimodal",
            format!(
                "language model `{}*` {} (run by compare); also {} (scanned by lint, not run)",
                m.language_model_prefix,
                count(m.language_model_parameters),
                if others.is_empty() { "nothing else".to_string() } else { others.join(", ") }
            ),
        );
    }
    row("dtypes", r.dtypes.iter().map(|(k, v)| format!("{k}: {}", count(*v))).collect::<Vec<_>>().join(", "));
    for sh in &r.shards {
        match &sh.error {
            None => row("shard", format!("{} ({} tensors, {})", sh.name, sh.tensors, bytes(sh.bytes))),
            Some(e) => row("shard", format!("{} UNREADABLE: {e}", sh.name)),
        }
    }
    row("tied embeddings", r.tied_embeddings.map(|t| t.to_string()).unwrap_or_else(|| "?".into()));
    let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    row(
        "vocab",
        format!(
            "tokenizer {} ids ({} added), config {}, embed rows {}, lm_head rows {}",
            o(r.vocab.tokenizer_ids),
            r.vocab.added_tokens.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
            o(r.vocab.config_vocab_size),
            o(r.vocab.embedding_rows),
            o(r.vocab.lm_head_rows)
        ),
    );
    for d in &r.special_tokens {
        let ids = d.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let tok = d.token.as_ref().map(|t| format!(" `{t}`")).unwrap_or_default();
        row(
            &format!("{} token", d.role.name()),
            format!("{}{tok} ({} {})", if ids.is_empty() { "?".into() } else { ids }, d.file, d.field),
        );
    }
    row("stops on", r.stop_token_ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    template_text(&mut s, r.chat_template.as_ref());
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18} {v}\n"));
    let quant = |q: &Quantization| match q.scheme.as_str() {
        "" => format!("{} ({})", q.method, q.source),
        s => format!("{}: {s} ({})", q.method, q.source),
    };
    row("quantization", r.quantization.as_ref().map(quant).unwrap_or_else(|| "none".into()));
    if !r.pickles_ignored.is_empty() {
        row("ignored pickles", r.pickles_ignored.join(", "));
    }
    s
}
