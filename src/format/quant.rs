//! `quantization_config`: how a quantized HF checkpoint says it was quantized, parsed once into
//! `QuantConfig` for the engine (`model::quant`), the checks (`checks::quant`) and `inspect`.
//!
//! Lenient like `config.rs`: every typed field is optional and the JSON is kept whole in `raw`.
//! Whether a setting is supported is decided where it is used (the engine's schemes), which say so
//! through `QuantConfig::field_error`, naming the file and the field. No candle, no tensor values.
//!
//! Spellings per `quant_method`:
//! - `gptq` (gptqmodel, AutoGPTQ, transformers): `bits`, `group_size` (−1 = per-channel),
//!   `checkpoint_format` else `format` (`gptq` = v1 zero points, `gptq_v2`), `sym`, `desc_act`.
//! - `awq` (AutoAWQ, gptqmodel): `bits` or `w_bit`, `group_size` or `q_group_size`, `version`
//!   else `format` (`gemm`, `gemv`, …), `zero_point` (asymmetric when true).
//! - `compressed-tensors` (llmcompressor): the top-level `format` (`pack-quantized`, …) and the
//!   first `config_groups` entry's `weights`: `num_bits`, `group_size`, `symmetric`.

use std::path::PathBuf;

use serde_json::Value;

use super::hf::{read_json, HfDir};
use crate::error::Error;

/// AutoGPTQ's side file, which older GPTQ checkpoints carry instead of (or besides) the
/// `quantization_config` in config.json.
pub const QUANTIZE_CONFIG: &str = "quantize_config.json";

/// Code `k` of a bit stream of `bits`-bit codes (1..=32) over little-endian 32-bit words laid end
/// to end, `word(n)` giving word `n`: GPTQ's `qweight` columns and `qzeros` rows at 2, 3, 4 and
/// 8 bits (a 3-bit code may straddle two words).
pub fn packed_code(word: impl Fn(usize) -> u32, k: usize, bits: u32) -> u32 {
    let bit = k * bits as usize;
    let (n, shift) = (bit / 32, (bit % 32) as u32);
    let mut v = (word(n) >> shift) as u64;
    if shift + bits > 32 {
        v |= (word(n + 1) as u64) << (32 - shift);
    }
    (v & ((1u64 << bits) - 1)) as u32
}

/// The scale tensors an FP8 weight `prefix.weight` is stored with: compressed-tensors'
/// `weight_scale`, transformers' / DeepSeek's block-wise `weight_scale_inv` (a multiplier despite
/// its name).
pub const FP8_SCALE_SUFFIXES: [&str; 2] = ["weight_scale", "weight_scale_inv"];

/// For an FP8 `prefix.weight` (tensor `name` of `dtype`): `Some(scale)` with the name of the scale
/// tensor beside it, or `Some(None)` when it has none; `None` for any other tensor. Lint's
/// `quant.fp8-unscaled` and the engine's refusal of scales it would not apply both ask this.
pub fn fp8_scale(dir: &HfDir, name: &str, dtype: crate::format::dtype::Dtype) -> Option<Option<String>> {
    use crate::format::dtype::Dtype;
    let prefix = name.strip_suffix(".weight").filter(|_| matches!(dtype, Dtype::F8_E4M3 | Dtype::F8_E5M2))?;
    Some(FP8_SCALE_SUFFIXES.iter().map(|s| format!("{prefix}.{s}")).find(|s| dir.tensor(s).is_some()))
}

/// Where a `QuantConfig` was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantSource {
    /// `config.json:quantization_config`: what transformers loads a checkpoint by, and what the
    /// engine and the checks read.
    ConfigJson,
    /// `quantize_config.json` (AutoGPTQ), read by `inspect` when config.json says nothing.
    QuantizeConfigJson,
}

impl QuantSource {
    /// The name `inspect` reports it under.
    pub fn name(self) -> &'static str {
        match self {
            QuantSource::ConfigJson => "config.json:quantization_config",
            QuantSource::QuantizeConfigJson => QUANTIZE_CONFIG,
        }
    }
}

/// A checkpoint's quantization settings. `None` means the config does not say (or says it with
/// the wrong JSON type).
#[derive(Debug, Clone)]
pub struct QuantConfig {
    /// `quant_method`; when absent, `unknown` in config.json and `gptq` in quantize_config.json
    /// (AutoGPTQ's own file, which its older versions wrote without one).
    pub method: String,
    /// Weight bits.
    pub bits: Option<u64>,
    /// Inputs per quantization group; `None` also for a negative value (GPTQ's −1, per-channel).
    pub group_size: Option<u64>,
    /// Packing format or version, as written: absent means GPTQ v1 (`gptq`) or AWQ `gemm`.
    pub format: Option<String>,
    /// Symmetric quantization (no zero points): GPTQ `sym`, AWQ `!zero_point`,
    /// compressed-tensors `weights.symmetric`.
    pub symmetric: Option<bool>,
    /// GPTQ act-order (`desc_act`).
    pub desc_act: Option<bool>,
    /// The whole JSON object as written.
    pub raw: Value,
    pub source: QuantSource,
    /// The file it was read from.
    pub path: PathBuf,
}

impl QuantConfig {
    /// `config.json:quantization_config`, else `quantize_config.json`; `None` when neither says
    /// anything (an unreadable quantize_config.json counts as saying nothing here).
    pub fn find(dir: &HfDir) -> Option<QuantConfig> {
        QuantConfig::from_config_json(dir).or_else(|| {
            let doc = read_json(&dir.root.join(QUANTIZE_CONFIG)).ok().flatten()?;
            Some(QuantConfig::parse(doc.value, QuantSource::QuantizeConfigJson, doc.path))
        })
    }

    /// Only `config.json:quantization_config` (what the engine and the checks go by).
    pub fn from_config_json(dir: &HfDir) -> Option<QuantConfig> {
        let doc = dir.config.as_ref()?;
        let q = doc.value.get("quantization_config")?;
        Some(QuantConfig::parse(q.clone(), QuantSource::ConfigJson, doc.path.clone()))
    }

    /// The one parse of a quantization config object.
    pub fn parse(raw: Value, source: QuantSource, path: PathBuf) -> QuantConfig {
        let default_method = match source {
            QuantSource::ConfigJson => "unknown",
            QuantSource::QuantizeConfigJson => "gptq",
        };
        let method = raw.get("quant_method").and_then(Value::as_str).unwrap_or(default_method).to_string();
        let u = |v: Option<&Value>| v.and_then(Value::as_u64);
        let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let b = |v: Option<&Value>| v.and_then(Value::as_bool);
        let q = |k: &str| raw.get(k);
        let (bits, group_size, format, symmetric) = match method.as_str() {
            "gptq" => (u(q("bits")), u(q("group_size")), s(q("checkpoint_format").or_else(|| q("format"))), b(q("sym"))),
            "awq" => (
                u(q("bits")).or(u(q("w_bit"))),
                u(q("group_size")).or(u(q("q_group_size"))),
                s(q("version").or_else(|| q("format"))),
                b(q("zero_point")).map(|z| !z),
            ),
            "compressed-tensors" => {
                let groups = q("config_groups").and_then(Value::as_object);
                let w = groups.and_then(|g| g.values().next()).and_then(|g| g.get("weights"));
                let wk = |k: &str| w.and_then(|w| w.get(k));
                (u(wk("num_bits")), u(wk("group_size")), s(q("format")), b(wk("symmetric")))
            }
            _ => (u(q("bits")), u(q("group_size")), s(q("format")), b(q("sym"))),
        };
        QuantConfig { method, bits, group_size, format, symmetric, desc_act: b(q("desc_act")), raw, source, path }
    }

    /// The scheme's settings in one line, as `inspect` shows them (`4-bit, group 128, act-order`;
    /// `float-quantized: weights 8-bit float per 128×128 block; inputs 8-bit float dynamic per
    /// group of 128`); empty when the config says nothing this reads.
    pub fn summary(&self) -> String {
        let raw = &self.raw;
        let flag = |k: &str| raw.get(k).and_then(Value::as_bool).unwrap_or(false);
        let mut parts: Vec<String> = Vec::new();
        let group = |g: Option<u64>| g.map(|g| format!("group {g}")).unwrap_or_else(|| "per channel".into());
        match self.method.as_str() {
            "bitsandbytes" if flag("load_in_4bit") => {
                let t = raw.get("bnb_4bit_quant_type").and_then(Value::as_str).unwrap_or("fp4");
                parts.push(format!("4-bit {t}"));
                if flag("bnb_4bit_use_double_quant") {
                    parts.push("double quantization".into());
                }
            }
            "bitsandbytes" if flag("load_in_8bit") => parts.push("8-bit LLM.int8".into()),
            "compressed-tensors" => {
                let g = raw.get("config_groups").and_then(Value::as_object).and_then(|g| g.values().next());
                let args = |k: &str| {
                    let a = g.and_then(|g| g.get(k)).filter(|a| !a.is_null())?;
                    let bits = a.get("num_bits").and_then(Value::as_u64).map(|b| format!("{b}-bit")).unwrap_or_default();
                    let ty = a.get("type").and_then(Value::as_str).unwrap_or("?");
                    let unit = match a.get("strategy").and_then(Value::as_str) {
                        Some("block") => match a.get("block_structure").and_then(Value::as_array) {
                            Some(b) => format!("per {} block", b.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("×")),
                            None => "per block".into(),
                        },
                        Some("group") | Some("tensor_group") => {
                            format!("per group of {}", a.get("group_size").and_then(Value::as_u64).unwrap_or(0))
                        }
                        Some(s) => format!("per {s}"),
                        None => String::new(),
                    };
                    let dynamic = match a.get("dynamic") {
                        Some(Value::Bool(true)) => " dynamic",
                        Some(Value::String(_)) => " dynamic (local)",
                        _ if k == "input_activations" => " static",
                        _ => "",
                    };
                    let sym = if a.get("symmetric").and_then(Value::as_bool) == Some(false) { ", asymmetric" } else { "" };
                    Some(format!("{bits} {ty}{dynamic} {unit}{sym}"))
                };
                let fmt = g.and_then(|g| g.get("format")).and_then(Value::as_str).or(self.format.as_deref()).unwrap_or("?");
                parts.push(fmt.to_string());
                parts.extend(args("weights").map(|w| format!("weights {w}")));
                parts.extend(args("input_activations").map(|a| format!("inputs {a}")));
            }
            _ => {
                parts.extend(self.bits.map(|b| format!("{b}-bit")));
                if self.bits.is_some() || self.group_size.is_some() {
                    parts.push(group(self.group_size));
                }
                parts.extend(self.format.as_ref().map(|f| format!("format {f}")));
                if self.symmetric == Some(false) {
                    parts.push("asymmetric".into());
                }
                if self.desc_act == Some(true) {
                    parts.push("act-order".into());
                }
            }
        }
        parts.join(", ")
    }

    /// An error about one of its fields (`field` as inside the object, e.g. `bits`), naming the
    /// file and the field's full path there (`quantization_config.bits` in config.json).
    pub fn field_error(&self, field: &str, detail: impl Into<String>) -> Error {
        let field = match self.source {
            QuantSource::ConfigJson => format!("quantization_config.{field}"),
            QuantSource::QuantizeConfigJson => field.to_string(),
        };
        Error::Field { path: self.path.clone(), field, detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> QuantConfig {
        QuantConfig::parse(v, QuantSource::ConfigJson, PathBuf::from("m/config.json"))
    }

    #[test]
    fn reads_each_quantizers_spelling() {
        let g = parse(json!({"quant_method": "gptq", "bits": 4, "group_size": -1, "checkpoint_format": "gptq_v2", "format": "gptq",
                             "sym": false, "desc_act": true}));
        assert_eq!(
            (g.bits, g.group_size, g.format.as_deref(), g.symmetric, g.desc_act),
            (Some(4), None, Some("gptq_v2"), Some(false), Some(true))
        );
        let a = parse(json!({"quant_method": "awq", "w_bit": 4, "q_group_size": 64, "version": "GEMV", "zero_point": true}));
        assert_eq!((a.bits, a.group_size, a.format.as_deref(), a.symmetric), (Some(4), Some(64), Some("GEMV"), Some(false)));
        let c = parse(json!({"quant_method": "compressed-tensors", "format": "pack-quantized",
                             "config_groups": {"group_0": {"weights": {"num_bits": 4, "group_size": 128, "symmetric": true}}}}));
        assert_eq!((c.bits, c.group_size, c.format.as_deref(), c.symmetric), (Some(4), Some(128), Some("pack-quantized"), Some(true)));
        assert_eq!(parse(json!({"bits": 8})).method, "unknown");
        let side = QuantConfig::parse(json!({"bits": 4}), QuantSource::QuantizeConfigJson, PathBuf::from("m/quantize_config.json"));
        assert_eq!(side.method, "gptq");
    }

    #[test]
    fn summary_names_the_scheme_settings() {
        assert_eq!(
            parse(json!({"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": true, "sym": false})).summary(),
            "4-bit, group 128, asymmetric, act-order"
        );
        assert_eq!(parse(json!({"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": true})).summary(), "4-bit nf4, double quantization");
        let fp8 = json!({"quant_method": "compressed-tensors", "format": "float-quantized", "config_groups": {"group_0": {
            "weights": {"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128], "dynamic": false, "symmetric": true},
            "input_activations": {"num_bits": 8, "type": "float", "strategy": "group", "group_size": 128, "dynamic": true, "symmetric": true}}}});
        assert_eq!(
            parse(fp8).summary(),
            "float-quantized, weights 8-bit float per 128×128 block, inputs 8-bit float dynamic per group of 128"
        );
    }

    #[test]
    fn field_error_names_the_file_and_the_field() {
        let e = parse(json!({"quant_method": "gptq"})).field_error("bits", "only 4-bit");
        assert!(matches!(&e, Error::Field { field, .. } if field == "quantization_config.bits"));
        assert_eq!(e.to_string(), "`m/config.json`: field `quantization_config.bits`: only 4-bit");
        let side = QuantConfig::parse(json!({}), QuantSource::QuantizeConfigJson, PathBuf::from("m/quantize_config.json"));
        assert_eq!(side.field_error("bits", "x").to_string(), "`m/quantize_config.json`: field `bits`: x");
    }
}
