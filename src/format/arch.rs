//! Architectures as data: everything that differs between the decoder-only families ckptcheck
//! runs, read from `config.json` (through `config::text_field`, the one precedence rule). The
//! decoder (`model/decoder.rs`) is written once and branches only on these fields; no family has
//! its own copy of a layer. Pure data: no candle here, so `checks/` reads it too.

use serde_json::Value;

use super::config::text_field;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma,
    Gemma2,
    Gemma3,
    Mixtral,
    Qwen2Moe,
    Qwen3Moe,
    /// Phi-3 / Phi-4-mini: fused `qkv_proj` and `gate_up_proj` (the `Topology`), rope on the first
    /// `partial_rotary_factor` of each head (Phi-4-mini: 0.75).
    Phi3,
    /// IBM Granite (3.x): Llama's layout with `embedding_multiplier`, `attention_multiplier`,
    /// `residual_multiplier` and `logits_scaling` (`embed_scale`, `attn_scale`, `residual_scale`,
    /// `logit_divisor`).
    Granite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Norm {
    /// `x / rms(x) * w` (Llama, Qwen, Mistral).
    Rms,
    /// `x / rms(x) * (1 + w)` (Gemma family).
    RmsPlusOne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Activation {
    Silu,
    /// `gelu_pytorch_tanh`, the tanh approximation.
    GeluTanh,
    /// Exact erf GELU.
    Gelu,
}

/// Rope frequency scaling, as transformers' `ROPE_INIT_FUNCTIONS` define them.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub enum RopeScaling {
    None,
    Linear {
        factor: f64,
    },
    Dynamic {
        factor: f64,
        original_max: usize,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: usize,
    },
    Yarn {
        factor: f64,
        original_max: usize,
        beta_fast: f64,
        beta_slow: f64,
        attention_factor: Option<f64>,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
    },
    /// Per-frequency divisors, as llama.cpp stores Llama-3.x scaling in a GGUF (`rope_freqs.weight`).
    FreqFactors(Vec<f32>),
    /// Phi-3 128k / Phi-4-mini `longrope` (`su`): per-frequency divisors, `long` for a sequence
    /// longer than `original_max`, else `short`; cos/sin × `attention_factor`.
    LongRope {
        short: Vec<f32>,
        long: Vec<f32>,
        original_max: usize,
        attention_factor: f64,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
}

/// How a block's projections are stored: separate matrices (Llama's `q_proj`/`k_proj`/`v_proj`,
/// `gate_proj`/`up_proj`) or fused ones (Phi-3's `qkv_proj` rows = q, k, v; `gate_up_proj` rows =
/// gate, up). The decoder splits a fused output, so a family with fused projections is this data,
/// never a second decoder. Read from the weights (`from_weights`): the tensors are the truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Topology {
    pub fused_qkv: bool,
    pub fused_gate_up: bool,
}

impl Topology {
    /// From which projections layer 0 stores (`has` answers by HF tensor name).
    pub fn from_weights(has: impl Fn(&str) -> bool) -> Topology {
        Topology {
            fused_qkv: has("model.layers.0.self_attn.qkv_proj.weight") && !has("model.layers.0.self_attn.q_proj.weight"),
            fused_gate_up: has("model.layers.0.mlp.gate_up_proj.weight") && !has("model.layers.0.mlp.gate_proj.weight"),
        }
    }
}

/// How a family names its router and experts (HF names; the GGUF reader maps them to llama.cpp's
/// 3-D `ffn_*_exps` tensors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ExpertNames {
    /// `block_sparse_moe.gate`, `block_sparse_moe.experts.N.{w1,w3,w2}` (gate, up, down).
    Mixtral,
    /// `mlp.gate`, `mlp.experts.N.{gate_proj,up_proj,down_proj}` (Qwen2/3-MoE); Qwen2-MoE's
    /// shared expert `mlp.shared_expert.{gate,up,down}_proj` and its gate `mlp.shared_expert_gate`.
    Qwen,
}

impl ExpertNames {
    /// Expert `e`'s projection `p` in this family's names (prefix of `.weight`).
    pub fn expert(self, layer: usize, e: usize, p: ExpertProj) -> String {
        match self {
            Self::Mixtral => {
                let w = match p {
                    ExpertProj::Gate => "w1",
                    ExpertProj::Up => "w3",
                    ExpertProj::Down => "w2",
                };
                format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}")
            }
            Self::Qwen => {
                let w = match p {
                    ExpertProj::Gate => "gate_proj",
                    ExpertProj::Up => "up_proj",
                    ExpertProj::Down => "down_proj",
                };
                format!("model.layers.{layer}.mlp.experts.{e}.{w}")
            }
        }
    }
}

/// One expert's projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertProj {
    Gate,
    Up,
    Down,
}

/// A sparse mixture-of-experts MLP: a linear router scores `experts` gated MLPs per token, the
/// `top_k` best run on that token and their outputs are summed, weighted by the router's softmax
/// probabilities (renormalised over the chosen `top_k` when `norm_topk`), as transformers'
/// `MixtralSparseMoeBlock` / `Qwen3MoeSparseMoeBlock` do.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Moe {
    pub experts: usize,
    pub top_k: usize,
    /// Each expert's intermediate size (Mixtral: `intermediate_size`; Qwen: `moe_intermediate_size`).
    pub intermediate: usize,
    /// Renormalise the top-k probabilities to sum to 1 (Mixtral always; Qwen: `norm_topk_prob`).
    pub norm_topk: bool,
    pub names: ExpertNames,
    /// Per layer: sparse (true) or the dense MLP of `intermediate_size` (Qwen's `mlp_only_layers`,
    /// `decoder_sparse_step`).
    pub sparse_layers: Vec<bool>,
    /// Qwen2-MoE: a shared expert of this intermediate size runs on every token, its output
    /// scaled by `sigmoid(shared_expert_gate · x)` and added to the routed experts'.
    pub shared: Option<usize>,
}

/// Experts a config may declare: far above any published model (DeepSeek-V3: 256), low enough
/// that a hostile number costs nothing.
pub const MAX_EXPERTS: usize = 1 << 12;

impl Moe {
    /// Whether layer `i` runs the experts.
    pub fn sparse(&self, i: usize) -> bool {
        self.sparse_layers.get(i).copied().unwrap_or(false)
    }

    /// The router's linear layer (prefix of `.weight`), `[experts, hidden]`.
    pub fn router(&self, layer: usize) -> String {
        match self.names {
            ExpertNames::Mixtral => format!("model.layers.{layer}.block_sparse_moe.gate"),
            ExpertNames::Qwen => format!("model.layers.{layer}.mlp.gate"),
        }
    }

    /// Expert `e`'s projection `p` (prefix of `.weight`).
    pub fn expert(&self, layer: usize, e: usize, p: ExpertProj) -> String {
        self.names.expert(layer, e, p)
    }

    /// The shared expert's projection `p` (prefix of `.weight`; Qwen2-MoE).
    pub fn shared_expert(&self, layer: usize, p: ExpertProj) -> String {
        let w = match p {
            ExpertProj::Gate => "gate_proj",
            ExpertProj::Up => "up_proj",
            ExpertProj::Down => "down_proj",
        };
        format!("model.layers.{layer}.mlp.shared_expert.{w}")
    }

    /// The shared expert's gate, `[1, hidden]` (prefix of `.weight`).
    pub fn shared_gate(&self, layer: usize) -> String {
        format!("model.layers.{layer}.mlp.shared_expert_gate")
    }

    /// The reverse of `router` / `expert`: (layer, `None` for the router or `Some((expert, proj))`)
    /// of an HF name of either family.
    pub fn parse_name(hf: &str) -> Option<(usize, Option<(usize, ExpertProj)>)> {
        let rest = hf.strip_prefix("model.layers.")?.strip_suffix(".weight")?;
        let (n, tail) = rest.split_once('.')?;
        let layer = n.parse().ok()?;
        let tail = tail.strip_prefix("block_sparse_moe.").or_else(|| tail.strip_prefix("mlp."))?;
        if tail == "gate" {
            return Some((layer, None));
        }
        let (e, w) = tail.strip_prefix("experts.")?.split_once('.')?;
        let p = match w {
            "w1" | "gate_proj" => ExpertProj::Gate,
            "w3" | "up_proj" => ExpertProj::Up,
            "w2" | "down_proj" => ExpertProj::Down,
            _ => return None,
        };
        Some((layer, Some((e.parse().ok()?, p))))
    }
}

/// Everything the decoder needs to know about a model.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArchSpec {
    pub family: Family,
    pub vocab_size: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Dimensions of each head rope rotates (the first ones; `partial_rotary_factor` · head_dim,
    /// else all of them).
    pub rotary_dim: usize,
    pub norm: Norm,
    pub norm_eps: f64,
    pub qkv_bias: bool,
    pub qk_norm: bool,
    pub tied_embeddings: bool,
    /// Multiply embeddings by this (Gemma: sqrt(hidden); Granite: `embedding_multiplier`).
    pub embed_scale: Option<f64>,
    /// Multiply each attention and MLP output by this before its residual add (Granite's
    /// `residual_multiplier`).
    pub residual_scale: Option<f64>,
    /// Divide the logits by this (Granite's `logits_scaling`).
    pub logit_divisor: Option<f64>,
    /// Rope for full-attention layers.
    pub rope: Rope,
    /// Rope for sliding-window layers where it differs (Gemma 3's local base frequency).
    pub rope_local: Option<Rope>,
    pub sliding_window: Option<usize>,
    /// Per layer: does it use the sliding window?
    pub sliding_layers: Vec<bool>,
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// Scale applied to q·kᵀ.
    pub attn_scale: f64,
    pub activation: Activation,
    /// Gemma 2/3: norms after attention and after the MLP too (`pre_feedforward_layernorm`,
    /// `post_feedforward_layernorm`).
    pub sandwich_norms: bool,
    pub max_positions: Option<usize>,
    /// Separate or fused projections (set from the weights when a model loads).
    pub topology: Topology,
    /// What `config.json` says (or the family's transformers default): are embeddings and head
    /// tied? A missing `lm_head` with this false is a random head in transformers, never a tie.
    pub declared_tie: bool,
    /// Sparse mixture-of-experts MLPs (Mixtral, Qwen3-MoE); `None`: every MLP is dense.
    pub moe: Option<Moe>,
}

fn field_err(field: &str, detail: impl Into<String>) -> Error {
    Error::Field { path: "config.json".into(), field: field.into(), detail: detail.into() }
}

impl ArchSpec {
    /// Reads the spec from `config.json`. `has_lm_head` says whether the weights have a separate
    /// output head (tie detection by weights beats the config flag).
    pub fn from_config(cfg: &Value, has_lm_head: Option<bool>) -> Result<ArchSpec> {
        let get = |k: &str| text_field(cfg, k);
        let req = |k: &str| -> Result<usize> {
            let v = get(k).ok_or_else(|| field_err(k, "is missing; the decoder needs it"))?;
            let n = v.as_u64().ok_or_else(|| field_err(k, format!("must be a positive integer, found {v}")))?;
            usize::try_from(n).ok().filter(|&n| n > 0 && n <= 1 << 24).ok_or_else(|| field_err(k, format!("{n} is out of range")))
        };
        let opt_f = |k: &str| get(k).and_then(Value::as_f64);
        // A vision-language checkpoint names its language model's type in `text_config`
        // (`gemma3` → `gemma3_text`, `mistral3` → `mistral`, `llava` → `llama`…): the decoder is that.
        let model_type = text_field(cfg, "model_type").and_then(Value::as_str).unwrap_or("");
        let family = match model_type {
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            // Qwen2-VL / Qwen2.5-VL: a Qwen2 decoder with mrope, which for text-only ids gives every
            // section the same positions, i.e. plain rope (transformers' `get_rope_index`).
            "qwen2" | "qwen2_vl" | "qwen2_vl_text" | "qwen2_5_vl" | "qwen2_5_vl_text" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            "gemma" => Family::Gemma,
            "gemma2" => Family::Gemma2,
            "gemma3" | "gemma3_text" => Family::Gemma3,
            "mixtral" => Family::Mixtral,
            "qwen2_moe" => Family::Qwen2Moe,
            "qwen3_moe" => Family::Qwen3Moe,
            "phi3" => Family::Phi3,
            "granite" => Family::Granite,
            other => {
                return Err(field_err(
                    "model_type",
                    format!(
                        "`{other}` is not supported (supported: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3, mixtral, qwen2_moe, qwen3_moe, phi3, granite, and vision-language checkpoints whose text_config is one of them)"
                    ),
                ))
            }
        };
        let gemma = matches!(family, Family::Gemma | Family::Gemma2 | Family::Gemma3);
        let hidden = req("hidden_size")?;
        let heads = req("num_attention_heads")?;
        let kv_heads = get("num_key_value_heads").and_then(Value::as_u64).map(|v| v as usize).unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(field_err("num_key_value_heads", format!("{kv_heads} does not divide num_attention_heads {heads}")));
        }
        let head_dim = match get("head_dim").and_then(Value::as_u64) {
            Some(d) => d as usize,
            None => {
                if hidden % heads != 0 {
                    return Err(field_err("head_dim", "is missing and hidden_size is not a multiple of num_attention_heads"));
                }
                hidden / heads
            }
        };
        if head_dim % 2 != 0 || head_dim == 0 {
            return Err(field_err("head_dim", format!("{head_dim} must be even for rope")));
        }
        let layers = req("num_hidden_layers")?;
        let act_name = get("hidden_activation").or_else(|| get("hidden_act")).and_then(Value::as_str).unwrap_or("silu");
        let activation = match act_name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::Gelu,
            other => return Err(field_err("hidden_act", format!("activation `{other}` is not supported"))),
        };

        let rope_params = get("rope_parameters");
        let full_rope = rope_params.and_then(|r| r.get("full_attention")).or(rope_params);
        let rope_theta =
            opt_f("rope_theta").or_else(|| full_rope.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64)).unwrap_or(10000.0);
        let scaling_v = get("rope_scaling").or(full_rope);
        let max_pos = get("max_position_embeddings").and_then(Value::as_u64);
        let top_original = get("original_max_position_embeddings").and_then(Value::as_u64);
        let rope = Rope { theta: rope_theta, scaling: parse_scaling(scaling_v, max_pos, top_original)? };
        // transformers: `int(head_dim * partial_rotary_factor)` (top level or in rope_parameters).
        let partial =
            opt_f("partial_rotary_factor").or_else(|| full_rope.and_then(|r| r.get("partial_rotary_factor")).and_then(Value::as_f64));
        let rotary_dim = match partial {
            None => head_dim,
            Some(f) if f > 0.0 && f <= 1.0 && ((head_dim as f64 * f) as usize).is_multiple_of(2) && (head_dim as f64 * f) as usize > 0 => {
                (head_dim as f64 * f) as usize
            }
            Some(f) => {
                return Err(field_err(
                    "partial_rotary_factor",
                    format!("{f} × head_dim {head_dim} must give an even number of dimensions in 2..={head_dim}"),
                ))
            }
        };

        if let RopeScaling::LongRope { short, long, .. } = &rope.scaling {
            if short.len() != rotary_dim / 2 || long.len() != rotary_dim / 2 {
                return Err(field_err(
                    "rope_scaling.short_factor",
                    format!(
                        "short_factor has {} and long_factor {} values; rope turns {rotary_dim} dimensions, so both need {}",
                        short.len(),
                        long.len(),
                        rotary_dim / 2
                    ),
                ));
            }
        }
        let sliding_window = get("sliding_window").and_then(Value::as_u64).map(|w| w as usize);
        let use_sliding = get("use_sliding_window").and_then(Value::as_bool);
        let sliding_layers: Vec<bool> = match get("layer_types").and_then(Value::as_array) {
            Some(types) => {
                if types.len() != layers {
                    return Err(field_err("layer_types", format!("has {} entries for {layers} layers", types.len())));
                }
                types.iter().map(|t| t.as_str() == Some("sliding_attention")).collect()
            }
            None => (0..layers)
                .map(|i| match family {
                    Family::Gemma2 => i % 2 == 0,
                    Family::Gemma3 => {
                        let p = get("sliding_window_pattern").and_then(Value::as_u64).unwrap_or(6) as usize;
                        (i + 1) % p.max(1) != 0
                    }
                    Family::Mistral | Family::Mixtral => sliding_window.is_some(),
                    Family::Qwen2 | Family::Qwen3 | Family::Qwen2Moe | Family::Qwen3Moe => {
                        use_sliding == Some(true) && sliding_window.is_some()
                    }
                    _ => false,
                })
                .collect(),
        };
        let sliding_window = sliding_window.filter(|_| sliding_layers.iter().any(|&s| s));
        let rope_local = if family == Family::Gemma3 {
            let local_theta = opt_f("rope_local_base_freq")
                .or_else(|| rope_params.and_then(|r| r.get("sliding_attention")).and_then(|r| r.get("rope_theta")).and_then(Value::as_f64))
                .unwrap_or(10000.0);
            Some(Rope { theta: local_theta, scaling: RopeScaling::None })
        } else {
            None
        };
        let granite = family == Family::Granite;
        // Granite's four scalars (transformers' GraniteConfig defaults: 1.0 each).
        let granite_f = |k: &str| -> Result<Option<f64>> {
            match get(k).filter(|_| granite) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(f) if f.is_finite() && f != 0.0 => Ok(Some(f)),
                    _ => Err(field_err(k, format!("must be a finite non-zero number, found {v}"))),
                },
            }
        };
        let (embedding_multiplier, attention_multiplier) = (granite_f("embedding_multiplier")?, granite_f("attention_multiplier")?);
        let (residual_scale, logit_divisor) = (granite_f("residual_multiplier")?, granite_f("logits_scaling")?);
        let attn_scale = match (gemma, opt_f("query_pre_attn_scalar")) {
            (true, Some(q)) => q.powf(-0.5),
            _ => attention_multiplier.unwrap_or((head_dim as f64).powf(-0.5)),
        };
        // transformers' defaults: tied for the Gemma family, untied for the others.
        let declared_tie = get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(gemma);
        let tied_embeddings = match has_lm_head {
            Some(h) => !h,
            None => declared_tie,
        };
        let vocab_size = req("vocab_size")?;
        let intermediate = req("intermediate_size")?;
        let moe = parse_moe(cfg, family, layers, intermediate)?;
        Ok(ArchSpec {
            family,
            vocab_size,
            hidden,
            intermediate,
            layers,
            heads,
            kv_heads,
            head_dim,
            rotary_dim,
            norm: if gemma { Norm::RmsPlusOne } else { Norm::Rms },
            norm_eps: opt_f("rms_norm_eps").unwrap_or(1e-6),
            qkv_bias: match family {
                Family::Qwen2 => true,
                Family::Qwen2Moe => get("qkv_bias").and_then(Value::as_bool).unwrap_or(true),
                _ => get("attention_bias").and_then(Value::as_bool).unwrap_or(false),
            },
            qk_norm: matches!(family, Family::Qwen3 | Family::Qwen3Moe | Family::Gemma3),
            tied_embeddings,
            embed_scale: if gemma { Some((hidden as f64).sqrt()) } else { embedding_multiplier },
            residual_scale,
            logit_divisor,
            rope,
            rope_local,
            sliding_window,
            sliding_layers,
            attn_softcap: if family == Family::Gemma2 { opt_f("attn_logit_softcapping") } else { None },
            final_softcap: opt_f("final_logit_softcapping"),
            attn_scale,
            activation,
            sandwich_norms: matches!(family, Family::Gemma2 | Family::Gemma3),
            max_positions: get("max_position_embeddings").and_then(Value::as_u64).map(|v| v as usize),
            topology: Topology::default(),
            declared_tie,
            moe,
        })
    }
}

/// The MoE fields of a Mixtral / Qwen2-MoE / Qwen3-MoE config, with transformers' defaults where a
/// key is absent (`MixtralConfig`: 8 experts, top 2; `Qwen3MoeConfig`: 128, top 8, expert width
/// 768; `Qwen2MoeConfig`: 60, top 4, 1408, shared expert 5632; both Qwen: `norm_topk_prob` false,
/// `decoder_sparse_step` 1). transformers 5 writes `num_local_experts` for Qwen3-MoE too
/// (`num_experts` is its alias).
fn parse_moe(cfg: &Value, family: Family, layers: usize, intermediate: usize) -> Result<Option<Moe>> {
    let get = |k: &str| text_field(cfg, k);
    let count = |keys: &[&str], default: usize| -> Result<usize> {
        let Some((k, v)) = keys.iter().find_map(|k| get(k).filter(|v| !v.is_null()).map(|v| (*k, v))) else { return Ok(default) };
        let n = v.as_u64().ok_or_else(|| field_err(k, format!("must be a non-negative integer, found {v}")))?;
        usize::try_from(n).ok().filter(|&n| n <= MAX_EXPERTS).ok_or_else(|| field_err(k, format!("{n} is out of range")))
    };
    let (names, experts, top_k, expert_inter, norm_topk, sparse_layers) = match family {
        Family::Mixtral => {
            let experts = count(&["num_local_experts", "num_experts"], 8)?;
            (ExpertNames::Mixtral, experts, count(&["num_experts_per_tok"], 2)?, intermediate, true, vec![true; layers])
        }
        Family::Qwen2Moe | Family::Qwen3Moe => {
            let qwen2 = family == Family::Qwen2Moe;
            let experts = count(&["num_local_experts", "num_experts"], if qwen2 { 60 } else { 128 })?;
            let inter = count(&["moe_intermediate_size"], if qwen2 { 1408 } else { 768 })?;
            let step = count(&["decoder_sparse_step"], 1)?;
            let only: Vec<u64> = match get("mlp_only_layers") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_u64().ok_or_else(|| field_err("mlp_only_layers", format!("must list layer indices, found {v}"))))
                    .collect::<Result<_>>()?,
                Some(v) => return Err(field_err("mlp_only_layers", format!("must be a list of layer indices, found {v}"))),
            };
            if step == 0 {
                return Err(field_err("decoder_sparse_step", "is 0; transformers divides by it"));
            }
            let norm = get("norm_topk_prob").and_then(Value::as_bool).unwrap_or(false);
            // transformers' Qwen3MoeDecoderLayer: sparse unless listed in mlp_only_layers, when there
            // are experts and (i + 1) is a multiple of decoder_sparse_step.
            let sparse = (0..layers).map(|i| !only.contains(&(i as u64)) && experts > 0 && (i + 1) % step == 0).collect();
            let top_k = count(&["num_experts_per_tok"], if qwen2 { 4 } else { 8 })?;
            (ExpertNames::Qwen, experts, top_k, inter, norm, sparse)
        }
        _ => return Ok(None),
    };
    let shared = match family {
        Family::Qwen2Moe => Some(count(&["shared_expert_intermediate_size"], 5632)?).filter(|&n| n > 0),
        _ => None,
    };
    if experts == 0 || top_k == 0 || top_k > experts {
        return Err(field_err("num_experts_per_tok", format!("{top_k} experts per token of {experts}: must be 1..={experts}")));
    }
    if expert_inter == 0 {
        return Err(field_err("moe_intermediate_size", "is 0"));
    }
    Ok(Some(Moe { experts, top_k, intermediate: expert_inter, norm_topk, names, sparse_layers, shared }))
}

fn parse_scaling(v: Option<&Value>, max_pos: Option<u64>, top_original: Option<u64>) -> Result<RopeScaling> {
    let Some(v) = v.filter(|v| v.is_object()) else {
        return Ok(RopeScaling::None);
    };
    let kind = v.get("rope_type").or_else(|| v.get("type")).and_then(Value::as_str).unwrap_or("default");
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let factor = || f("factor").ok_or_else(|| field_err("rope_scaling.factor", "is missing"));
    let original_max = v.get("original_max_position_embeddings").and_then(Value::as_u64).or(max_pos).unwrap_or(2048) as usize;
    Ok(match kind {
        // Qwen2-VL's multimodal rope (transformers 4 spelling): on text-only ids all three sections
        // turn by the same position, which is plain rope.
        "default" | "mrope" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic { factor: factor()?, original_max: max_pos.unwrap_or(2048) as usize },
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
            high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
            original_max,
        },
        "yarn" => RopeScaling::Yarn {
            factor: factor()?,
            original_max,
            beta_fast: f("beta_fast").unwrap_or(32.0),
            beta_slow: f("beta_slow").unwrap_or(1.0),
            attention_factor: f("attention_factor"),
            mscale: f("mscale"),
            mscale_all_dim: f("mscale_all_dim"),
        },
        "longrope" | "su" => {
            let factors = |k: &str| -> Result<Vec<f32>> {
                let a = v
                    .get(k)
                    .and_then(Value::as_array)
                    .ok_or_else(|| field_err(&format!("rope_scaling.{k}"), "is missing (longrope needs it)"))?;
                a.iter()
                    .map(|x| x.as_f64().filter(|f| f.is_finite() && *f > 0.0).map(|f| f as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| field_err(&format!("rope_scaling.{k}"), "must hold positive finite numbers"))
            };
            let original = v.get("original_max_position_embeddings").and_then(Value::as_u64).or(top_original);
            let original = original
                .filter(|&o| o > 0)
                .ok_or_else(|| field_err("original_max_position_embeddings", "is missing (longrope needs it)"))?
                as usize;
            // transformers: `factor` else max / original; the attention factor as the paper suggests.
            let factor = f("factor").unwrap_or_else(|| max_pos.map(|m| m as f64 / original as f64).unwrap_or(1.0));
            let suggested = if factor <= 1.0 { 1.0 } else { (1.0 + factor.ln() / (original as f64).ln()).sqrt() };
            let attention_factor = f("attention_factor").unwrap_or(suggested);
            RopeScaling::LongRope {
                short: factors("short_factor")?,
                long: factors("long_factor")?,
                original_max: original,
                attention_factor,
            }
        }
        other => {
            return Err(field_err(
                "rope_scaling.rope_type",
                format!("`{other}` is not supported (linear, dynamic, llama3, yarn, longrope are)"),
            ))
        }
    })
}

/// A tensor the decoder loads, by HF name, with the shape it must have (`None`: any size there).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTensor {
    pub name: String,
    pub shape: Vec<Option<usize>>,
    /// A linear layer's weight or bias: quantized checkpoints store it packed under other names.
    pub linear: bool,
}

/// What is wrong with a checkpoint's tensors against its spec.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeProblem {
    Missing {
        name: String,
    },
    Shape {
        name: String,
        expected: Vec<Option<usize>>,
        found: Vec<u64>,
    },
    /// A weight the engine computes with is not a float type.
    NotFloat {
        name: String,
        dtype: String,
    },
    /// No `lm_head.weight` while the config does not tie it to the embeddings.
    HeadMissing,
    /// `num_hidden_layers` names layers the weights do not have (only the first is listed).
    LayersMissing {
        declared: usize,
        present: usize,
    },
    /// The first sparse layer stores another number of experts than the config declares.
    ExpertCount {
        layer: usize,
        declared: usize,
        stored: usize,
    },
}

impl ShapeProblem {
    pub fn tensor(&self) -> &str {
        match self {
            ShapeProblem::Missing { name } | ShapeProblem::Shape { name, .. } | ShapeProblem::NotFloat { name, .. } => name,
            ShapeProblem::HeadMissing => "lm_head.weight",
            ShapeProblem::LayersMissing { .. } => "model.layers",
            ShapeProblem::ExpertCount { .. } => "num_local_experts",
        }
    }

    pub fn message(&self) -> String {
        let dims = |s: &[Option<usize>]| {
            let d: Vec<String> = s.iter().map(|d| d.map(|d| d.to_string()).unwrap_or_else(|| "*".into())).collect();
            format!("[{}]", d.join(", "))
        };
        match self {
            ShapeProblem::Missing { name } => format!("`{name}` is missing: the decoder config.json describes needs it"),
            ShapeProblem::Shape { name, expected, found } => {
                format!("`{name}` has shape {found:?} but config.json implies {}", dims(expected))
            }
            ShapeProblem::NotFloat { name, dtype } => format!("`{name}` is {dtype}, not a float type the engine computes with"),
            ShapeProblem::HeadMissing => "no `lm_head.weight` while config.json does not tie the embeddings \
                (`tie_word_embeddings` false or unset): transformers initialises a random head, so the model outputs garbage"
                .into(),
            ShapeProblem::LayersMissing { declared, present } => {
                format!("config.json declares {declared} layers but the weights hold {present}")
            }
            ShapeProblem::ExpertCount { layer, declared, stored } => format!(
                "config.json declares {declared} experts (`num_local_experts` / `num_experts`) but layer {layer} stores {stored}: \
                 the router and the experts come from different configurations"
            ),
        }
    }
}

impl ArchSpec {
    /// Every tensor the decoder loads for this spec, in load order.
    pub fn expected_tensors(&self) -> Vec<ExpectedTensor> {
        let (h, hd, kv, inter) = (self.hidden, self.head_dim, self.kv_heads, self.intermediate);
        let mut out = Vec::new();
        let mut push = |name: String, shape: Vec<Option<usize>>, linear: bool| out.push(ExpectedTensor { name, shape, linear });
        push("model.embed_tokens.weight".into(), vec![None, Some(h)], false);
        for i in 0..self.layers {
            let (a, m) = (format!("model.layers.{i}.self_attn"), format!("model.layers.{i}.mlp"));
            let attn: Vec<(&str, usize)> = if self.topology.fused_qkv {
                vec![("qkv_proj", (self.heads + 2 * kv) * hd)]
            } else {
                vec![("q_proj", self.heads * hd), ("k_proj", kv * hd), ("v_proj", kv * hd)]
            };
            for (p, rows) in attn {
                push(format!("{a}.{p}.weight"), vec![Some(rows), Some(h)], true);
                if self.qkv_bias {
                    push(format!("{a}.{p}.bias"), vec![Some(rows)], true);
                }
            }
            push(format!("{a}.o_proj.weight"), vec![Some(h), Some(self.heads * hd)], true);
            if let Some(moe) = self.moe.as_ref().filter(|m| m.sparse(i)) {
                let ei = moe.intermediate;
                push(format!("{}.weight", moe.router(i)), vec![Some(moe.experts), Some(h)], true);
                for e in 0..moe.experts {
                    push(format!("{}.weight", moe.expert(i, e, ExpertProj::Gate)), vec![Some(ei), Some(h)], true);
                    push(format!("{}.weight", moe.expert(i, e, ExpertProj::Up)), vec![Some(ei), Some(h)], true);
                    push(format!("{}.weight", moe.expert(i, e, ExpertProj::Down)), vec![Some(h), Some(ei)], true);
                }
                if let Some(si) = moe.shared {
                    push(format!("{}.weight", moe.shared_expert(i, ExpertProj::Gate)), vec![Some(si), Some(h)], true);
                    push(format!("{}.weight", moe.shared_expert(i, ExpertProj::Up)), vec![Some(si), Some(h)], true);
                    push(format!("{}.weight", moe.shared_expert(i, ExpertProj::Down)), vec![Some(h), Some(si)], true);
                    push(format!("{}.weight", moe.shared_gate(i)), vec![Some(1), Some(h)], true);
                }
            } else {
                if self.topology.fused_gate_up {
                    push(format!("{m}.gate_up_proj.weight"), vec![Some(2 * inter), Some(h)], true);
                } else {
                    push(format!("{m}.gate_proj.weight"), vec![Some(inter), Some(h)], true);
                    push(format!("{m}.up_proj.weight"), vec![Some(inter), Some(h)], true);
                }
                push(format!("{m}.down_proj.weight"), vec![Some(h), Some(inter)], true);
            }
            let mut norms = vec!["input_layernorm", "post_attention_layernorm"];
            if self.sandwich_norms {
                norms.extend(["pre_feedforward_layernorm", "post_feedforward_layernorm"]);
            }
            for n in norms {
                push(format!("model.layers.{i}.{n}.weight"), vec![Some(h)], false);
            }
            if self.qk_norm {
                push(format!("{a}.q_norm.weight"), vec![Some(hd)], false);
                push(format!("{a}.k_norm.weight"), vec![Some(hd)], false);
            }
        }
        push("model.norm.weight".into(), vec![Some(h)], false);
        if !self.tied_embeddings {
            push("lm_head.weight".into(), vec![None, Some(h)], true);
        }
        out
    }

    /// `shape_problems` over an HF directory's stored tensors (linear layers skipped when its
    /// `quantization_config` says they are packed): what lint reports and the engine refuses.
    pub fn shape_problems_in(&self, dir: &super::hf::HfDir) -> Vec<ShapeProblem> {
        let quantized = super::quant::QuantConfig::from_config_json(dir).is_some();
        let lookup =
            |name: &str| dir.tensor(name).map(|(_, t)| (t.shape.clone(), super::dtype::engine_float(t.dtype), t.dtype.name().to_string()));
        self.shape_problems(lookup, quantized)
    }

    /// Checks stored tensors against `expected_tensors`. `lookup` gives a stored tensor's shape and
    /// whether its dtype is a float type; `quantized`: linear layers are stored packed and not
    /// checked here. Layers the config declares beyond those stored are one problem, not one per
    /// tensor.
    pub fn shape_problems(&self, lookup: impl Fn(&str) -> Option<(Vec<u64>, bool, String)>, quantized: bool) -> Vec<ShapeProblem> {
        let mut out = Vec::new();
        if self.tied_embeddings && !self.declared_tie {
            out.push(ShapeProblem::HeadMissing);
        }
        // Layers stored at all (any of their tensors); stops at the first absent one, so a hostile
        // `num_hidden_layers` costs one lookup round more than the real depth.
        let has_layer = |i: usize| {
            [
                "input_layernorm.weight",
                "self_attn.o_proj.weight",
                "mlp.down_proj.weight",
                "self_attn.q_proj.weight",
                "self_attn.qkv_proj.weight",
                "mlp.gate.weight",
                "block_sparse_moe.gate.weight",
            ]
            .iter()
            .any(|t| lookup(&format!("model.layers.{i}.{t}")).is_some())
        };
        let present = (0..self.layers).take_while(|&i| has_layer(i)).count();
        if present < self.layers {
            out.push(ShapeProblem::LayersMissing { declared: self.layers, present });
        }
        let beyond = |name: &str| {
            name.strip_prefix("model.layers.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|n| n >= present)
        };
        // Experts stored in the first sparse layer, counted up to one past the declared number
        // (so a hostile count costs nothing more).
        if let Some((layer, moe)) = self.moe.as_ref().and_then(|m| (0..present).find(|&i| m.sparse(i)).map(|i| (i, m))) {
            let stored_expert = |e: usize| {
                [ExpertProj::Gate, ExpertProj::Up, ExpertProj::Down]
                    .iter()
                    .any(|&p| lookup(&format!("{}.weight", moe.expert(layer, e, p))).is_some())
            };
            let stored = (0..=moe.experts).take_while(|&e| stored_expert(e)).count();
            if stored != moe.experts && !quantized {
                out.push(ShapeProblem::ExpertCount { layer, declared: moe.experts, stored });
            }
        }
        for e in self.expected_tensors() {
            if (quantized && e.linear) || beyond(&e.name) {
                continue;
            }
            match lookup(&e.name) {
                None => out.push(ShapeProblem::Missing { name: e.name }),
                Some((shape, float, dtype)) => {
                    let fits = shape.len() == e.shape.len() && shape.iter().zip(&e.shape).all(|(&s, x)| x.is_none_or(|x| s == x as u64));
                    if !fits {
                        out.push(ShapeProblem::Shape { name: e.name, expected: e.shape, found: shape });
                    } else if !float {
                        out.push(ShapeProblem::NotFloat { name: e.name, dtype });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100})
    }

    #[test]
    fn llama_defaults() {
        let s = ArchSpec::from_config(&base(), Some(true)).unwrap();
        assert_eq!((s.head_dim, s.norm, s.qkv_bias, s.tied_embeddings), (16, Norm::Rms, false, false));
        assert_eq!(s.rope.theta, 10000.0);
        assert!((s.attn_scale - 0.25).abs() < 1e-12);
    }

    #[test]
    fn vision_language_configs_run_their_text_model() {
        // Qwen2.5-VL, transformers 5: the text model in text_config, mrope sections in rope_parameters.
        let text = base();
        let mut t = text.clone();
        t["model_type"] = json!("qwen2_5_vl_text");
        t["rope_parameters"] = json!({"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]});
        let c = json!({"model_type": "qwen2_5_vl", "architectures": ["Qwen2_5_VLForConditionalGeneration"],
                       "text_config": t, "vision_config": {"depth": 32}});
        let s = ArchSpec::from_config(&c, Some(true)).unwrap();
        assert_eq!(s.family, Family::Qwen2);
        assert_eq!((s.rope.theta, &s.rope.scaling), (1e6, &RopeScaling::None));
        // Qwen2-VL, transformers 4: one flat config, mrope spelled as a rope_scaling type.
        let mut c = text.clone();
        c["model_type"] = json!("qwen2_vl");
        c["rope_scaling"] = json!({"type": "mrope", "mrope_section": [16, 24, 24]});
        let s = ArchSpec::from_config(&c, Some(true)).unwrap();
        assert_eq!((s.family, &s.rope.scaling), (Family::Qwen2, &RopeScaling::None));
        // Mistral 3 / LLaVA: the wrapper's type is not a decoder; text_config's is.
        let mut t = text;
        t["model_type"] = json!("mistral");
        let s = ArchSpec::from_config(&json!({"model_type": "mistral3", "text_config": t}), Some(true)).unwrap();
        assert_eq!(s.family, Family::Mistral);
    }

    #[test]
    fn gemma2_and_gemma3_specifics() {
        let mut c = base();
        c["model_type"] = json!("gemma2");
        c["query_pre_attn_scalar"] = json!(256);
        c["attn_logit_softcapping"] = json!(50.0);
        c["final_logit_softcapping"] = json!(30.0);
        c["sliding_window"] = json!(4096);
        c["hidden_activation"] = json!("gelu_pytorch_tanh");
        let s = ArchSpec::from_config(&c, Some(false)).unwrap();
        assert_eq!(s.norm, Norm::RmsPlusOne);
        assert_eq!(s.sliding_layers, vec![true, false]);
        assert_eq!(s.attn_softcap, Some(50.0));
        assert!((s.attn_scale - 1.0 / 16.0).abs() < 1e-12);
        assert_eq!(s.embed_scale, Some(8.0));
        assert!(s.tied_embeddings && s.sandwich_norms);

        c["model_type"] = json!("gemma3_text");
        c["layer_types"] = json!(["sliding_attention", "full_attention"]);
        c["rope_local_base_freq"] = json!(10000.0);
        c["rope_theta"] = json!(1000000.0);
        let s = ArchSpec::from_config(&c, Some(false)).unwrap();
        assert!(s.qk_norm && s.attn_softcap.is_none());
        assert_eq!(s.rope.theta, 1e6);
        assert_eq!(s.rope_local.unwrap().theta, 1e4);
    }

    #[test]
    fn llama3_rope_scaling_from_either_spelling() {
        let mut c = base();
        c["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let s = ArchSpec::from_config(&c, None).unwrap();
        assert!(matches!(s.rope.scaling, RopeScaling::Llama3 { original_max: 8192, .. }));
        let mut c = base();
        c["rope_parameters"] =
            json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "original_max_position_embeddings": 8192});
        let s = ArchSpec::from_config(&c, None).unwrap();
        assert_eq!(s.rope.theta, 500000.0);
        assert!(matches!(s.rope.scaling, RopeScaling::Llama3 { .. }));
    }

    fn mixtral() -> Value {
        let mut c = base();
        c["model_type"] = json!("mixtral");
        c["num_local_experts"] = json!(4);
        c["num_experts_per_tok"] = json!(2);
        c
    }

    #[test]
    fn moe_fields_and_names() {
        let s = ArchSpec::from_config(&mixtral(), Some(true)).unwrap();
        let m = s.moe.as_ref().unwrap();
        assert_eq!((m.experts, m.top_k, m.intermediate, m.norm_topk, m.names), (4, 2, 128, true, ExpertNames::Mixtral));
        assert_eq!(m.router(1), "model.layers.1.block_sparse_moe.gate");
        assert_eq!(m.expert(0, 3, ExpertProj::Up), "model.layers.0.block_sparse_moe.experts.3.w3");
        assert_eq!(Moe::parse_name("model.layers.1.block_sparse_moe.experts.3.w2.weight"), Some((1, Some((3, ExpertProj::Down)))));
        assert_eq!(Moe::parse_name("model.layers.0.mlp.gate.weight"), Some((0, None)));
        assert_eq!(Moe::parse_name("model.layers.0.mlp.gate_proj.weight"), None);
        let mut q = base();
        q["model_type"] = json!("qwen3_moe");
        q["num_experts"] = json!(8);
        q["num_experts_per_tok"] = json!(2);
        q["moe_intermediate_size"] = json!(32);
        q["mlp_only_layers"] = json!([1]);
        let m = ArchSpec::from_config(&q, Some(true)).unwrap().moe.unwrap();
        assert_eq!((m.experts, m.intermediate, m.norm_topk, m.sparse_layers), (8, 32, false, vec![true, false]));
        q["mlp_only_layers"] = json!([]);
        q["decoder_sparse_step"] = json!(2);
        assert_eq!(ArchSpec::from_config(&q, Some(true)).unwrap().moe.unwrap().sparse_layers, vec![false, true]);
        for (k, v) in [("num_experts_per_tok", json!(9)), ("num_experts_per_tok", json!(0)), ("decoder_sparse_step", json!(0))] {
            let mut bad = q.clone();
            bad[k] = v;
            let e = ArchSpec::from_config(&bad, None).unwrap_err().to_string();
            assert!(e.contains(k), "{k}: {e}");
        }
    }

    /// The router is an expected tensor of every sparse layer: missing or of the wrong shape,
    /// it is a shape problem (lint's weights.* findings, and the engine refuses to load).
    #[test]
    fn router_missing_or_misshapen_is_a_problem() {
        let s = ArchSpec::from_config(&mixtral(), Some(true)).unwrap();
        let all: Vec<ExpectedTensor> = s.expected_tensors();
        let router = "model.layers.1.block_sparse_moe.gate.weight";
        assert!(all.iter().any(|e| e.name == router && e.shape == vec![Some(4), Some(64)]));
        let shapes = |skip: &'static str, wrong: Option<Vec<u64>>| {
            let all = all.clone();
            move |n: &str| {
                let e = all.iter().find(|e| e.name == n)?;
                if n == skip {
                    return wrong.clone().map(|w| (w, true, "F32".to_string()));
                }
                Some((e.shape.iter().map(|d| d.unwrap_or(100) as u64).collect(), true, "F32".to_string()))
            }
        };
        assert!(s.shape_problems(shapes("", None), false).is_empty());
        assert_eq!(s.shape_problems(shapes(router, None), false), vec![ShapeProblem::Missing { name: router.into() }]);
        let p = s.shape_problems(shapes(router, Some(vec![8, 64])), false);
        assert!(matches!(&p[..], [ShapeProblem::Shape { name, .. }] if name == router), "{p:?}");
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut c = base();
        c["model_type"] = json!("mamba");
        let e = ArchSpec::from_config(&c, None).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("model_type") && e.contains("mamba"), "{e}");
        let mut c = base();
        c["num_key_value_heads"] = json!(3);
        let e = ArchSpec::from_config(&c, None).unwrap_err().to_string();
        assert!(e.contains("num_key_value_heads"), "{e}");
        let mut c = base();
        c.as_object_mut().unwrap().remove("hidden_size");
        assert!(ArchSpec::from_config(&c, None).unwrap_err().to_string().contains("hidden_size"));
    }
}
