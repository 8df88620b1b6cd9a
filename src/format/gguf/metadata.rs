//! Metadata values and what they say: the typed `Value`/`Array` of each key, `Header`'s lookups
//! (`get`, `tensor`, `arch_key`…), the architecture numbers llama.cpp reads (`ArchMeta`) and the
//! HF-style `config.json` they amount to (`Header::hf_config`), which the architecture spec reads
//! so that a GGUF runs as its own metadata says.
//!
//! A NaN or infinite float cannot be written into that JSON (it would become `null`, which the
//! architecture spec reads as "absent" and replaces by a default, rope base 10000):
//! `non_finite_floats` lists them, `hf_config_checked` refuses them, `checks::gguf` reports them.
//!
//! It only reads what `parse` produced: no parsing, no checking against an HF source
//! (`checks::gguf`), no tokenizer keys (`tokenizer`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::parse::{Header, TensorInfo};
use super::types::{Array, GgmlType, TypeBytes, Value};

/// GGUF value type ids (`enum gguf_type`).
pub const VALUE_TYPE_NAMES: [&str; 13] =
    ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"];

/// A float metadata value that is not a finite number.
#[derive(Debug, Clone, PartialEq)]
pub struct NonFinite {
    pub key: String,
    /// The value (`NaN`, `inf`, `-inf`), or for an array the first such element.
    pub value: String,
    /// For an array: how many of its elements are not finite, and the index of the first.
    pub in_array: Option<(u64, u64)>,
}

/// The logit softcaps llama.cpp's Gemma graphs read (`{arch}.<key>`, named as in config.json) and
/// the cap each falls back to when its key is absent (`None`: no cap). gemma2 always caps both,
/// with Gemma 2's own 50 and 30 (llama-hparams.h defaults, src/models/gemma2.cpp); gemma3 caps the
/// final logits only when its key is there and not 0. The GGUF's config and lint's
/// `gguf.softcap-differs` both read this.
pub fn gemma_softcaps(arch: &str) -> &'static [(&'static str, Option<f64>)] {
    match arch {
        "gemma2" => &[("attn_logit_softcapping", Some(50.0)), ("final_logit_softcapping", Some(30.0))],
        "gemma3" => &[("final_logit_softcapping", None)],
        _ => &[],
    }
}

/// Granite's scalars: llama.cpp's `granite.<key>` and the config.json field it converts from.
pub const GRANITE_SCALES: [(&str, &str); 4] = [
    ("embedding_scale", "embedding_multiplier"),
    ("attention.scale", "attention_multiplier"),
    ("residual_scale", "residual_multiplier"),
    ("logit_scale", "logits_scaling"),
];

impl Header {
    /// `general.architecture` values the engine runs (`model::gguf_weights` maps their tensor
    /// names and refuses the others by this list). Others are checked statically only.
    pub const ENGINE_ARCHS: &'static [&'static str] =
        &["llama", "qwen2", "qwen2vl", "qwen2moe", "qwen3", "qwen3moe", "gemma2", "gemma3", "phi3", "granite"];

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.by_key.get(key).map(|&i| &self.metadata[i].1)
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    pub fn get_array(&self, key: &str) -> Option<&Array> {
        match self.get(key)? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// A LoRA adapter written by llama.cpp's `convert_lora_to_gguf.py` (`general.type = adapter`,
    /// `adapter.type = lora`): `lora_a` / `lora_b` tensors, no model of its own.
    pub fn is_lora_adapter(&self) -> bool {
        self.get_str("general.type") == Some("adapter")
    }

    /// A multimodal projector (`mmproj`) written by `convert_hf_to_gguf.py --mmproj`
    /// (`general.architecture = clip`): a VLM's vision encoder and projector, which llama.cpp loads
    /// beside the language-model GGUF (`--mmproj`); no language model of its own.
    pub fn is_mmproj(&self) -> bool {
        self.get_str("general.architecture") == Some("clip")
    }

    /// An adapter's `adapter.lora.alpha`.
    pub fn lora_alpha(&self) -> Option<f64> {
        self.get_f64("adapter.lora.alpha")
    }

    /// `general.architecture` (`llama`, `qwen2`, `gemma3`…).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `{arch}.{suffix}`, e.g. `arch_key("rope.freq_base")` → `llama.rope.freq_base`.
    pub fn arch_key(&self, suffix: &str) -> Option<&Value> {
        self.get(&format!("{}.{suffix}", self.architecture()?))
    }

    /// The architecture metadata, `None` where the file does not say.
    pub fn arch_meta(&self) -> ArchMeta {
        let u = |s: &str| self.arch_key(s).and_then(Value::as_u64);
        let f = |s: &str| self.arch_key(s).and_then(Value::as_f64);
        ArchMeta {
            architecture: self.architecture().map(str::to_string),
            context_length: u("context_length"),
            embedding_length: u("embedding_length"),
            block_count: u("block_count"),
            feed_forward_length: u("feed_forward_length"),
            head_count: u("attention.head_count"),
            head_count_kv: u("attention.head_count_kv"),
            key_length: u("attention.key_length"),
            value_length: u("attention.value_length"),
            rope_dimension_count: u("rope.dimension_count"),
            rope_freq_base: f("rope.freq_base"),
            rope_scaling_type: self.arch_key("rope.scaling.type").and_then(Value::as_str).map(str::to_string),
            rope_scaling_factor: f("rope.scaling.factor"),
            rope_scaling_original_context_length: u("rope.scaling.original_context_length"),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon"),
            expert_count: u("expert_count"),
            expert_used_count: u("expert_used_count"),
            expert_feed_forward_length: u("expert_feed_forward_length"),
            expert_shared_feed_forward_length: u("expert_shared_feed_forward_length"),
            vocab_size: u("vocab_size"),
            sliding_window: u("attention.sliding_window"),
        }
    }

    /// Every float32/float64 value (scalar, or in an array at any depth) that is NaN or infinite,
    /// in file order: one entry per key.
    pub fn non_finite_floats(&self) -> Vec<NonFinite> {
        let show = |x: f64| if x.is_nan() { "NaN".to_string() } else { x.to_string() };
        let mut out = Vec::new();
        for (key, v) in &self.metadata {
            match v {
                Value::F32(x) if !x.is_finite() => out.push(NonFinite { key: key.clone(), value: show(f64::from(*x)), in_array: None }),
                Value::F64(x) if !x.is_finite() => out.push(NonFinite { key: key.clone(), value: show(*x), in_array: None }),
                Value::Array(a) => {
                    let (mut n, mut first) = (0u64, None);
                    let mut index = 0u64;
                    non_finite_in(a, &mut index, &mut n, &mut first);
                    if let Some((i, x)) = first {
                        out.push(NonFinite { key: key.clone(), value: show(x), in_array: Some((n, i)) });
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// `hf_config`, refusing a non-finite float instead of letting it become `null` and then a
    /// default: `Err((key, what))` names the first one. What runs a GGUF should read this.
    pub fn hf_config_checked(&self) -> Result<serde_json::Value, (String, String)> {
        match self.non_finite_floats().into_iter().next() {
            Some(bad) => Err((bad.key, format!("is {}, not a finite number: refusing to run it with a default in its place", bad.value))),
            None => Ok(self.hf_config()),
        }
    }

    /// An HF-style `config.json` synthesised from the GGUF's own metadata, so the decoder's
    /// `ArchSpec` comes from the file being run (not from the HF source it claims to come from).
    /// A non-finite float becomes `null` here: see `hf_config_checked`.
    pub fn hf_config(&self) -> serde_json::Value {
        let m = self.arch_meta();
        let arch = m.architecture.clone().unwrap_or_default();
        // `shape()` is in HF (row-major) order: [vocab, hidden].
        let rows = self.tensor("token_embd.weight").map(|t| t.shape()).and_then(|s| s.first().copied());
        // MoE: llama.cpp's `llama` arch with experts is Mixtral; `qwen3moe` is transformers'
        // `qwen3_moe`, whose graph always renormalises the top-k weights (`build_moe_ffn(…, norm_w
        // = true, …)` in llama.cpp's qwen3moe.cpp), whatever the source's `norm_topk_prob` said;
        // `qwen2moe` never does (`norm_w = false`, qwen2moe.cpp).
        let experts = m.expert_count.filter(|&n| n > 0);
        let model_type = match (arch.as_str(), experts) {
            ("llama", Some(_)) => "mixtral".to_string(),
            ("qwen3moe", _) => "qwen3_moe".to_string(),
            ("qwen2moe", _) => "qwen2_moe".to_string(),
            // Qwen2-VL / Qwen2.5-VL's language model: Qwen2's tensors with M-RoPE over
            // `rope.dimension_sections`, which turns text positions exactly as plain rope does.
            ("qwen2vl", _) => "qwen2".to_string(),
            (a, _) => a.to_string(),
        };
        let mut v = serde_json::json!({
            "model_type": model_type,
            "hidden_size": m.embedding_length,
            "intermediate_size": m.feed_forward_length,
            "num_hidden_layers": m.block_count,
            "num_attention_heads": m.head_count,
            "num_key_value_heads": m.head_count_kv.or(m.head_count),
            "vocab_size": rows.or(m.vocab_size),
            "rms_norm_eps": m.rms_norm_eps,
            "rope_theta": m.rope_freq_base,
            "max_position_embeddings": m.context_length,
        });
        // llama.cpp writes key_length only when head_dim ≠ hidden / heads.
        if let Some(k) = m.key_length {
            v["head_dim"] = k.into();
        }
        // Partial rotary (Phi-3 / Phi-4-mini): rope turns the first `rope.dimension_count` of
        // each head.
        let head_dim = m.key_length.or_else(|| Some(m.embedding_length? / m.head_count.filter(|&h| h > 0)?));
        if let (Some(rot), Some(hd)) = (m.rope_dimension_count, head_dim) {
            if rot < hd && rot > 0 {
                v["partial_rotary_factor"] = (rot as f64 / hd as f64).into();
            }
        }
        if let Some(w) = m.sliding_window {
            v["sliding_window"] = w.into();
        }
        if let Some(n) = experts {
            v["num_local_experts"] = n.into();
            v["num_experts_per_tok"] = m.expert_used_count.into();
            if arch == "qwen3moe" || arch == "qwen2moe" {
                v["moe_intermediate_size"] = m.expert_feed_forward_length.into();
                v["norm_topk_prob"] = (arch == "qwen3moe").into();
            }
            if arch == "qwen2moe" {
                v["shared_expert_intermediate_size"] = m.expert_shared_feed_forward_length.into();
            }
        }
        if arch == "granite" {
            // llama.cpp's granite graph: `embedding_scale`, `attention.scale`, `residual_scale`,
            // `logit_scale` (a divisor), each skipped when absent or 0, as transformers' 1.0 defaults.
            for (key, hf) in GRANITE_SCALES {
                if let Some(f) = self.arch_key(key).and_then(Value::as_f64).filter(|&f| f != 0.0) {
                    v[hf] = f.into();
                }
            }
        }
        if arch.starts_with("gemma") {
            // llama.cpp's Gemma graphs use the tanh GELU and scale q by 1/sqrt(head_dim), except
            // for the 27B models (told by their layer count: 46 for Gemma 2, 62 for Gemma 3),
            // which scale by 1/sqrt(hidden / heads) — transformers' `query_pre_attn_scalar`.
            v["hidden_activation"] = "gelu_pytorch_tanh".into();
            let is_27b = matches!((arch.as_str(), m.block_count), ("gemma2", Some(46)) | ("gemma3", Some(62)));
            let per_head = m.embedding_length.zip(m.head_count.filter(|&h| h > 0)).map(|(e, h)| e / h);
            if let Some(s) = if is_27b { per_head } else { m.key_length.or(per_head) } {
                v["query_pre_attn_scalar"] = s.into();
            }
            // Softcapping as llama.cpp applies it (`gemma_softcaps`).
            for &(key, default) in gemma_softcaps(&arch) {
                if let Some(f) = self.arch_key(key).and_then(Value::as_f64).filter(|&f| f != 0.0).or(default) {
                    v[key] = f.into();
                }
            }
            // llama.cpp's gemma2 loader defaults the window to 4096 (Gemma 2's own) when the key is absent.
            if arch == "gemma2" && m.sliding_window.is_none() {
                v["sliding_window"] = 4096u64.into();
            }
        }
        if let (Some(kind), Some(factor)) = (m.rope_scaling_type.as_deref(), m.rope_scaling_factor) {
            if kind != "none" {
                v["rope_scaling"] = serde_json::json!({
                    "rope_type": kind, "factor": factor,
                    "original_max_position_embeddings": m.rope_scaling_original_context_length,
                });
            }
        }
        v
    }

    /// Tensors, elements and bytes per ggml type.
    pub fn type_summary(&self) -> BTreeMap<GgmlType, TypeBytes> {
        let mut m: BTreeMap<GgmlType, TypeBytes> = BTreeMap::new();
        for t in &self.tensors {
            let e = m.entry(t.ggml_type).or_default();
            e.tensors += 1;
            e.elements = e.elements.saturating_add(t.numel());
            e.bytes = e.bytes.saturating_add(t.n_bytes);
        }
        m
    }

    /// Largest `N` + 1 over tensors named `blk.N.*`.
    pub fn blocks_in_tensors(&self) -> Option<u64> {
        self.tensors.iter().filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse::<u64>().ok()).max().map(|n| n + 1)
    }
}

/// Counts the non-finite floats of `a` (nested arrays flattened in order), keeping the flat index
/// and value of the first.
fn non_finite_in(a: &Array, index: &mut u64, n: &mut u64, first: &mut Option<(u64, f64)>) {
    let mut see = |x: f64, index: &mut u64| {
        if !x.is_finite() {
            *n += 1;
            first.get_or_insert((*index, x));
        }
        *index += 1;
    };
    match a {
        Array::F32(v) => v.iter().for_each(|x| see(f64::from(*x), index)),
        Array::F64(v) => v.iter().for_each(|x| see(*x, index)),
        Array::Array(v) => v.iter().for_each(|inner| non_finite_in(inner, index, n, first)),
        _ => {}
    }
}

/// What a GGUF says about its architecture. `None`: the file does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchMeta {
    pub architecture: Option<String>,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub block_count: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub key_length: Option<u64>,
    pub value_length: Option<u64>,
    pub rope_dimension_count: Option<u64>,
    pub rope_freq_base: Option<f64>,
    pub rope_scaling_type: Option<String>,
    pub rope_scaling_factor: Option<f64>,
    pub rope_scaling_original_context_length: Option<u64>,
    pub rms_norm_eps: Option<f64>,
    pub expert_count: Option<u64>,
    pub expert_used_count: Option<u64>,
    pub expert_feed_forward_length: Option<u64>,
    pub expert_shared_feed_forward_length: Option<u64>,
    pub vocab_size: Option<u64>,
    pub sliding_window: Option<u64>,
}

/// Keys llama.cpp reads as `{arch}.*` that ckptcheck compares; kept here so docs and checks agree.
pub const ARCH_KEYS: &[&str] = &[
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "rope.freq_base",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "attention.layer_norm_rms_epsilon",
    "expert_count",
];

#[cfg(test)]
mod tests {
    use super::super::parse::parse_header;
    use super::super::test_writer::W;
    use std::path::Path;

    /// A Gemma GGUF's header: `arch`, `layers` blocks, hidden 3584, 16 heads of 256.
    fn gemma(arch: &str, layers: u32, edit: impl Fn(&mut W)) -> serde_json::Value {
        let mut w = W::new();
        w.kv_str("general.architecture", arch);
        for (k, v) in [("block_count", layers), ("embedding_length", 3584), ("attention.head_count", 16), ("attention.key_length", 256)] {
            w.kv_u32(&format!("{arch}.{k}"), v);
        }
        edit(&mut w);
        parse_header(&w.build(), Path::new("g.gguf")).unwrap().hf_config()
    }

    /// llama.cpp's Gemma graphs: q scaled by 1/sqrt(head_dim), but by 1/sqrt(hidden / heads) for
    /// the 27B models (46 layers for Gemma 2, 62 for Gemma 3); gemma2 caps with 50 / 30 when its
    /// keys are absent, gemma3 only with its key.
    #[test]
    fn gemma_q_scale_and_softcaps_follow_llama_cpp() {
        let nine_b = gemma("gemma2", 42, |_| {});
        assert_eq!(nine_b["query_pre_attn_scalar"], 256);
        assert_eq!((nine_b["attn_logit_softcapping"].as_f64(), nine_b["final_logit_softcapping"].as_f64()), (Some(50.0), Some(30.0)));
        assert_eq!(nine_b["sliding_window"], 4096);
        assert_eq!(gemma("gemma2", 46, |_| {})["query_pre_attn_scalar"], 3584 / 16);
        assert_eq!(gemma("gemma3", 62, |_| {})["query_pre_attn_scalar"], 3584 / 16);
        assert_eq!(gemma("gemma3", 46, |_| {})["query_pre_attn_scalar"], 256);
        let g3 = gemma("gemma3", 34, |_| {});
        assert!(g3.get("attn_logit_softcapping").is_none() && g3.get("final_logit_softcapping").is_none(), "{g3}");
        let capped = gemma("gemma2", 42, |w| {
            w.kv_f32("gemma2.final_logit_softcapping", 5.0);
        });
        assert_eq!(capped["final_logit_softcapping"].as_f64(), Some(5.0));
        let g3 = gemma("gemma3", 34, |w| {
            w.kv_f32("gemma3.final_logit_softcapping", 30.0);
        });
        assert_eq!(g3["final_logit_softcapping"].as_f64(), Some(30.0));
    }
}
