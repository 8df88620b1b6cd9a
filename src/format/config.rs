//! The parts of `config.json` ckptcheck reads, parsed leniently: every field is optional, both the
//! transformers 4 (`rope_theta`, `torch_dtype`) and 5 (`rope_parameters`, `dtype`) spellings are
//! accepted. A multimodal config nests the language model in `text_config`: its fields win over
//! the top level for everything about the text model (`text_field`), the top level keeps what
//! belongs to the checkpoint (`model_type`, `architectures`, `quantization_config`). `lint` and the
//! engine (`arch::ArchSpec`) read through the same accessor, so they cannot disagree.

use serde_json::Value;

/// What `config.json` says about the model. `None` means the file does not say.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ModelConfig {
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    pub hidden_size: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub num_hidden_layers: Option<u64>,
    pub num_attention_heads: Option<u64>,
    pub num_key_value_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub vocab_size: Option<u64>,
    pub max_position_embeddings: Option<u64>,
    pub tie_word_embeddings: Option<bool>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<Value>,
    pub rms_norm_eps: Option<f64>,
    pub dtype: Option<String>,
    pub quantization_config: Option<Value>,
    pub bos_token_id: Vec<u64>,
    pub eos_token_id: Vec<u64>,
    pub pad_token_id: Vec<u64>,
}

/// A text-model field of `config.json`: `text_config.KEY` when present and not null, else the top
/// level's `KEY`. The one precedence rule every reader of config.json uses.
pub fn text_field<'a>(cfg: &'a Value, key: &str) -> Option<&'a Value> {
    let nonnull = |v: Option<&'a Value>| v.filter(|x| !x.is_null());
    nonnull(cfg.get("text_config").and_then(|t| t.get(key))).or_else(|| nonnull(cfg.get(key)))
}

/// A vision-language checkpoint: config.json has a (non-null) `vision_config`.
pub fn has_vision_config(cfg: &Value) -> bool {
    cfg.get("vision_config").is_some_and(|v| !v.is_null())
}

/// A checkpoint-level field: the top level's `KEY`, else `text_config.KEY`.
pub fn checkpoint_field<'a>(cfg: &'a Value, key: &str) -> Option<&'a Value> {
    let nonnull = |v: Option<&'a Value>| v.filter(|x| !x.is_null());
    nonnull(cfg.get(key)).or_else(|| nonnull(cfg.get("text_config").and_then(|t| t.get(key))))
}

impl ModelConfig {
    pub fn from_json(v: &Value) -> ModelConfig {
        let get = |k: &str| text_field(v, k);
        let u = |k: &str| get(k).and_then(Value::as_u64);
        let rope_params = get("rope_parameters");
        // transformers 5 nests per-attention-type rope parameters for Gemma 3 (`full_attention`).
        let rope_params = rope_params.and_then(|r| if r.get("rope_theta").is_some() { Some(r) } else { r.get("full_attention") });
        let rope_theta =
            get("rope_theta").and_then(Value::as_f64).or_else(|| rope_params.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64));
        let rope_scaling = get("rope_scaling")
            .cloned()
            .or_else(|| rope_params.filter(|r| r.get("rope_type").and_then(Value::as_str).is_some_and(|t| t != "default")).cloned());
        ModelConfig {
            model_type: checkpoint_field(v, "model_type").and_then(Value::as_str).map(str::to_string),
            architectures: checkpoint_field(v, "architectures")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            hidden_size: u("hidden_size"),
            intermediate_size: u("intermediate_size"),
            num_hidden_layers: u("num_hidden_layers"),
            num_attention_heads: u("num_attention_heads"),
            num_key_value_heads: u("num_key_value_heads"),
            head_dim: u("head_dim"),
            vocab_size: u("vocab_size"),
            max_position_embeddings: u("max_position_embeddings"),
            tie_word_embeddings: get("tie_word_embeddings").and_then(Value::as_bool),
            rope_theta,
            rope_scaling,
            rms_norm_eps: get("rms_norm_eps").and_then(Value::as_f64),
            dtype: get("dtype").or_else(|| get("torch_dtype")).and_then(Value::as_str).map(str::to_string),
            quantization_config: v.get("quantization_config").cloned(),
            bos_token_id: token_ids(get("bos_token_id")),
            eos_token_id: token_ids(get("eos_token_id")),
            pad_token_id: token_ids(get("pad_token_id")),
        }
    }
}

/// A token id field: an integer, a list of integers, or null/absent (empty).
pub fn token_ids(v: Option<&Value>) -> Vec<u64> {
    match v {
        Some(Value::Number(n)) => n.as_u64().into_iter().collect(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_transformers_4_and_5_spellings() {
        let v4 = json!({"rope_theta": 10000.0, "torch_dtype": "bfloat16", "eos_token_id": [1, 2]});
        let c = ModelConfig::from_json(&v4);
        assert_eq!(c.rope_theta, Some(10000.0));
        assert_eq!(c.dtype.as_deref(), Some("bfloat16"));
        assert_eq!(c.eos_token_id, vec![1, 2]);
        let v5 = json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 8.0}, "dtype": "float32", "eos_token_id": 2});
        let c = ModelConfig::from_json(&v5);
        assert_eq!(c.rope_theta, Some(500000.0));
        assert_eq!(c.rope_scaling.unwrap()["factor"], 8.0);
        assert_eq!(c.eos_token_id, vec![2]);
    }

    /// Regression: lint (ModelConfig) read the top level first and the engine (ArchSpec)
    /// `text_config` first, so a multimodal config could be judged and run as two models.
    #[test]
    fn lint_and_engine_read_a_multimodal_config_alike() {
        let v = json!({"model_type": "gemma3", "vocab_size": 999, "hidden_size": 32,
            "text_config": {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 100}});
        let c = ModelConfig::from_json(&v);
        let s = crate::format::arch::ArchSpec::from_config(&v, None).unwrap();
        assert_eq!(c.model_type.as_deref(), Some("gemma3"));
        assert_eq!((c.hidden_size, c.vocab_size), (Some(64), Some(100)));
        assert_eq!((s.hidden, s.vocab_size), (64, 100));
    }

    #[test]
    fn text_config_fills_missing_fields() {
        let v = json!({"model_type": "gemma3", "text_config": {"hidden_size": 64, "vocab_size": 10}});
        let c = ModelConfig::from_json(&v);
        assert_eq!(c.model_type.as_deref(), Some("gemma3"));
        assert_eq!(c.hidden_size, Some(64));
        assert_eq!(c.vocab_size, Some(10));
    }
}
