//! Quantized HF checkpoints as a `WeightSource`: `QuantWeights` over any `QuantScheme`. A
//! quantized linear layer stays packed in its file on the native engine (f32 on the CPU), its
//! rows decoded a tile at a time inside each matmul (`PackedRows`); elsewhere it is dequantized
//! to a dense weight once at load. Everything else
//! (embeddings, norms, layers the quantizer skipped such as `lm_head`) passes through as the dense
//! tensors of the same directory.
//!
//! A scheme is a unit in one file, holding its own unpacking: `gptq.rs` (v1 and v2 zero points),
//! `awq.rs` (GEMM), `compressed_tensors.rs` (`pack-quantized` int4, `float-quantized` FP8,
//! `int-quantized` W8A8, with their run-time input rounding, `ActQuant`; NVFP4 / MXFP4 weights),
//! and `bnb.rs`
//! (bitsandbytes nf4 / fp4 with or without double quantization, LLM.int8); the layouts are
//! written at the top of each file and checked against the upstream dequantized tensors in
//! testdata/zoo/goldens (tests/quant.rs). The scheme is picked by `quant_method` from the
//! `QuantConfig` that `format::quant` parsed.
//!
//! Adding a scheme: one new file here with a type implementing `QuantScheme` and a
//! `fn from_config(&QuantConfig) -> Result<Box<dyn QuantScheme>>` that refuses the settings it
//! cannot run, and one line in `SCHEMES`. Nothing else (decoder, LoRA, compare) changes.
//!
//! Not here: integer kernels on the packed values (every scheme decodes to f32), AWQ other than
//! 4-bit GEMM, and transformers' own `quant_method: fp8` (refused in `HfWeights`).

pub mod awq;
pub mod bnb;
pub mod compressed_tensors;
pub mod gptq;

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use std::sync::Arc;

pub use compressed_tensors::ActQuant;

use super::native::{NativeMatrix, PackedRows};
use super::weights::{native_engine, DenseLinear, HfWeights, LinearOp, NativeLinear, WeightSource};
use crate::error::{Error, Result};
use crate::format::dtype::{decode_f32, Dtype};
use crate::format::hf::HfDir;
use crate::format::quant::QuantConfig;
use crate::format::MappedBytes;

/// A scheme's constructor: refuses the settings it cannot run, naming the config field.
pub type MakeScheme = fn(&QuantConfig) -> Result<Box<dyn QuantScheme>>;

/// Every scheme the engine runs, by `quant_method`; a `quant_method` not listed loads as dense.
/// One line per scheme (kept so by `rustfmt::skip`).
#[rustfmt::skip]
const SCHEMES: &[(&str, MakeScheme)] = &[
    ("gptq", gptq::from_config),
    ("awq", awq::from_config),
    ("compressed-tensors", compressed_tensors::from_config),
    ("bitsandbytes", bnb::from_config),
];

/// A dequantized `[out, in]` weight: (row-major values, out, in).
pub type Dequantized = (Vec<f32>, usize, usize);

/// A quantized `[out, in]` weight left packed: (its row decoder, out, in).
pub type Packed = (Arc<dyn PackedRows>, usize, usize);

/// One way of storing a quantized linear layer.
pub trait QuantScheme: Send + Sync {
    /// As `quant_method` spells it.
    fn name(&self) -> &'static str;
    /// The tensor suffixes (after `prefix.`) this scheme stores one linear layer as, packed
    /// weight first: a linear is quantized when `prefix.<first>` exists, else it is dense. Its
    /// bias stays a dense `prefix.bias` (in every scheme so far), which `QuantWeights` reads.
    fn suffixes(&self) -> &'static [&'static str];
    /// The quantized linear `prefix` as a row decoder over its packed tensor, still mapped (the
    /// small side tensors, scales, zero points, `g_idx`, decoded once); the one formula of the
    /// scheme.
    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed>;
    /// How the scheme quantizes the input of the quantized linear `prefix` at run time (W8A8,
    /// FP8), which the engine applies before the matmul; `None` for weight-only schemes.
    fn input_quant(&self, _t: &Tensors<'_>, _prefix: &str) -> Result<Option<ActQuant>> {
        Ok(None)
    }
    /// The dense `[out, in]` f32 weight of the quantized linear `prefix`: every row of `packed`.
    fn dequantize(&self, t: &Tensors<'_>, prefix: &str) -> Result<Dequantized> {
        let (p, out, inp) = self.packed(t, prefix)?;
        let mut w = vec![0f32; out * inp];
        if inp > 0 {
            p.decode_rows(0, &mut w);
        }
        Ok((w, out, inp))
    }
}

/// The scheme for `cfg`, `None` when its `quant_method` is not one the engine runs; an error
/// naming the config field when it is, with settings the scheme cannot run.
pub fn scheme_for(cfg: &QuantConfig) -> Result<Option<Box<dyn QuantScheme>>> {
    SCHEMES.iter().find(|(method, _)| *method == cfg.method).map(|(_, make)| make(cfg)).transpose()
}

/// The settings AWQ and compressed-tensors' int4 packing share: 4 bits, and a positive group
/// size, which it returns.
pub fn four_bit_groups(cfg: &QuantConfig) -> Result<usize> {
    if cfg.bits != Some(4) {
        return Err(cfg.field_error("bits", format!("{:?}: only 4-bit {} checkpoints are run", cfg.bits, cfg.method)));
    }
    let g = cfg.group_size.filter(|&g| g > 0);
    Ok(g.ok_or_else(|| cfg.field_error("group_size", "missing or not positive (per-channel is not supported)"))? as usize)
}

/// Packed little-endian I32 word `i` of `bytes`, widened like `Tensors::ints`.
pub fn word_at(bytes: &[u8], i: usize) -> i64 {
    let at = i * 4;
    i32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]) as i64
}

/// Nibble `k` (0 = lowest) of a packed word.
pub fn nibble(word: i64, k: usize) -> i64 {
    ((word as u64 >> (4 * k)) & 0xF) as i64
}

/// A scheme's view of the checkpoint's tensors: decoded integer and float values, with errors
/// naming the tensor when it is missing, damaged or misshapen.
pub struct Tensors<'a> {
    pub dir: &'a HfDir,
}

impl Tensors<'_> {
    /// A tensor's dtype, shape and bytes.
    fn raw(&self, name: &str) -> Result<(Dtype, Vec<u64>, &[u8], PathBuf)> {
        let (f, t) = self.dir.tensor(name).ok_or_else(|| Error::Tensor {
            path: self.dir.root.clone(),
            tensor: name.to_string(),
            detail: "missing from the quantized checkpoint".into(),
        })?;
        Ok((t.dtype, t.shape.clone(), f.checked_bytes(name)?, f.path.clone()))
    }

    /// An integer tensor (packed I32, or I64 / I8) widened to i64, and its shape.
    pub fn ints(&self, name: &str) -> Result<(Vec<i64>, Vec<u64>)> {
        let (dtype, shape, b, path) = self.raw(name)?;
        let wrong = |detail: String| Error::Tensor { path: path.clone(), tensor: name.to_string(), detail };
        let v: Vec<i64> = match dtype {
            Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            other => return Err(wrong(format!("dtype {other}, expected packed I32"))),
        };
        Ok((v, shape))
    }

    /// A float tensor as f32, and its shape.
    pub fn floats(&self, name: &str) -> Result<(Vec<f32>, Vec<u64>)> {
        let (dtype, shape, b, path) = self.raw(name)?;
        let v = decode_f32(dtype, b).ok_or_else(|| Error::Tensor {
            path,
            tensor: name.to_string(),
            detail: format!("dtype {dtype} is not a float"),
        })?;
        Ok((v, shape))
    }

    /// A packed I32 tensor left in its file: its bytes (little-endian words) and its shape.
    pub fn words(&self, name: &str) -> Result<(MappedBytes, Vec<u64>)> {
        self.mapped(name, Dtype::I32, "packed I32")
    }

    /// A tensor of dtype `want` left in its file: its bytes and its shape (`what` names the
    /// expected kind in the error).
    pub fn mapped(&self, name: &str, want: Dtype, what: &str) -> Result<(MappedBytes, Vec<u64>)> {
        let (f, t) = self.dir.tensor(name).ok_or_else(|| Error::Tensor {
            path: self.dir.root.clone(),
            tensor: name.to_string(),
            detail: "missing from the quantized checkpoint".into(),
        })?;
        if t.dtype != want {
            return Err(Error::Tensor {
                path: f.path.clone(),
                tensor: name.to_string(),
                detail: format!("dtype {}, expected {what}", t.dtype),
            });
        }
        Ok((f.shared_bytes(name)?, t.shape.clone()))
    }

    /// Whether the checkpoint has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.dir.tensor(name).is_some()
    }

    /// `[rows, cols]` of a tensor that must be a matrix.
    pub fn dims2(&self, name: &str, shape: &[u64]) -> Result<(usize, usize)> {
        match shape {
            [a, b] => Ok((*a as usize, *b as usize)),
            _ => Err(self.bad(name, format!("shape {shape:?}, expected a matrix"))),
        }
    }

    /// An error about tensor `name` of this checkpoint.
    pub fn bad(&self, name: &str, detail: String) -> Error {
        Error::Tensor { path: self.dir.root.clone(), tensor: name.to_string(), detail }
    }
}

/// A quantized HF checkpoint: linear layers through its scheme, everything else dense.
pub struct QuantWeights<'a> {
    pub dense: HfWeights<'a>,
    pub scheme: Box<dyn QuantScheme>,
}

impl<'a> QuantWeights<'a> {
    /// From `config.json:quantization_config`; `None` when the checkpoint is not quantized with a
    /// scheme the engine runs.
    pub fn from_config(dir: &'a HfDir) -> Result<Option<QuantWeights<'a>>> {
        let Some(cfg) = QuantConfig::from_config_json(dir) else { return Ok(None) };
        Ok(scheme_for(&cfg)?.map(|scheme| QuantWeights { dense: HfWeights { dir }, scheme }))
    }

    fn tensors(&self) -> Tensors<'a> {
        Tensors { dir: self.dense.dir }
    }

    /// Whether `prefix` is stored quantized (its packed weight exists).
    fn is_quantized(&self, prefix: &str) -> bool {
        self.scheme.suffixes().first().is_some_and(|packed| self.dense.has(&format!("{prefix}.{packed}")))
    }

    /// The quantized linear whose storage tensor `name` is (`prefix.<suffix>` for one of the
    /// scheme's suffixes, with the packed weight present), or `None`.
    pub fn owner(&self, name: &str) -> Option<String> {
        self.scheme.suffixes().iter().find_map(|suffix| {
            let prefix = name.strip_suffix(suffix)?.strip_suffix('.')?;
            self.is_quantized(prefix).then(|| prefix.to_string())
        })
    }

    /// The dequantized `[out, in]` weight of a quantized linear layer, or `None` if it is dense.
    pub fn dequantize(&self, prefix: &str) -> Result<Option<Dequantized>> {
        if !self.is_quantized(prefix) {
            return Ok(None);
        }
        self.scheme.dequantize(&self.tensors(), prefix).map(Some)
    }

    /// The dequantized weight as a tensor, or `None` if it is dense.
    fn dequantized_tensor(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Option<Tensor>> {
        let Some((w, out, inp)) = self.dequantize(prefix)? else { return Ok(None) };
        let t = Tensor::from_vec(w, (out, inp), device).and_then(|t| t.to_dtype(dtype));
        t.map(Some).map_err(|e| self.tensors().bad(prefix, e.to_string()))
    }
}

impl WeightSource for QuantWeights<'_> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.dense.tensor(name, dtype, device)
    }

    fn has(&self, name: &str) -> bool {
        self.dense.has(name)
    }

    /// Unquantized tensors (embeddings, the head of most checkpoints) stay where they are.
    fn native(&self, name: &str) -> Result<Option<super::weights::NativeMatrix>> {
        match name.strip_suffix(".weight") {
            Some(prefix) if self.is_quantized(prefix) => Ok(None),
            _ => self.dense.native(name),
        }
    }

    /// On the native engine a quantized layer stays packed and is decoded a tile at a time
    /// inside each matmul; elsewhere it is dequantized once, here.
    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        if !self.is_quantized(prefix) {
            return self.dense.linear(prefix, bias, dtype, device);
        }
        let bias = if bias { Some(self.dense.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        let op: Box<dyn LinearOp> = if native_engine(dtype, device) {
            let (p, out, inp) = self.scheme.packed(&self.tensors(), prefix)?;
            Box::new(NativeLinear { weight: NativeMatrix::packed(out, inp, p), bias })
        } else {
            let weight = self.dequantized_tensor(prefix, dtype, device)?.expect("quantized");
            Box::new(DenseLinear { weight, bias })
        };
        Ok(match self.scheme.input_quant(&self.tensors(), prefix)? {
            Some(quant) => Box::new(InputQuantLinear { inner: op, quant }),
            None => op,
        })
    }

    fn dense_weight(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        match self.dequantized_tensor(prefix, dtype, device)? {
            Some(w) => Ok(w),
            None => self.dense.dense_weight(prefix, dtype, device),
        }
    }

    fn has_linear(&self, prefix: &str) -> bool {
        self.is_quantized(prefix) || self.dense.has_linear(prefix)
    }
}

/// A quantized linear whose input is rounded first, as the scheme's own forward does.
struct InputQuantLinear {
    inner: Box<dyn LinearOp>,
    quant: ActQuant,
}

impl LinearOp for InputQuantLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (t, k) = x.dims2()?;
        let mut v = x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        self.quant.apply(&mut v, k);
        self.inner.forward(&Tensor::from_vec(v, (t, k), x.device())?.to_dtype(x.dtype())?)
    }

    fn weight(&self) -> Option<&Tensor> {
        self.inner.weight()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::quant::QuantSource;
    use serde_json::json;

    fn scheme(v: serde_json::Value) -> Result<Option<Box<dyn QuantScheme>>> {
        scheme_for(&QuantConfig::parse(v, QuantSource::ConfigJson, "m/config.json".into()))
    }

    fn refused(v: serde_json::Value) -> String {
        match scheme(v) {
            Err(e @ Error::Field { .. }) => e.to_string(),
            Err(e) => panic!("not a field error: {e}"),
            Ok(s) => panic!("accepted as {:?}", s.map(|s| s.name())),
        }
    }

    #[test]
    fn registry_picks_by_method_and_refuses_what_it_cannot_run() {
        let g = json!({"quant_method": "gptq", "bits": 4, "group_size": 128});
        assert_eq!(scheme(g).unwrap().unwrap().name(), "gptq");
        let a = json!({"quant_method": "awq", "w_bit": 4, "q_group_size": 128});
        assert_eq!(scheme(a).unwrap().unwrap().name(), "awq");
        assert_eq!(scheme(json!({"quant_method": "bitsandbytes", "load_in_4bit": true})).unwrap().unwrap().name(), "bitsandbytes");
        assert!(scheme(json!({"quant_method": "hqq"})).unwrap().is_none());
        assert_eq!(
            refused(json!({"quant_method": "bitsandbytes", "load_in_4bit": true, "bnb_4bit_quant_storage": "bfloat16"})),
            "`m/config.json`: field `quantization_config.bnb_4bit_quant_storage`: `bfloat16`: only uint8 storage (the default) is read; re-save the model with bnb_4bit_quant_storage=torch.uint8"
        );
        assert!(refused(json!({"quant_method": "bitsandbytes"})).contains("neither load_in_4bit nor load_in_8bit"));

        assert_eq!(
            refused(json!({"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemv_fast"})),
            "`m/config.json`: field `quantization_config.version`: AWQ `gemv_fast` packing is not supported (gemm and gemv are); \
             export the model as GEMM (gptqmodel FORMAT.GEMM) to check it"
        );
        assert_eq!(
            refused(json!({"quant_method": "compressed-tensors", "format": "marlin-24"})),
            "`m/config.json`: field `quantization_config.format`: compressed-tensors `marlin-24` is not supported (pack-quantized, float-quantized, int-quantized, nvfp4-pack-quantized and mxfp4-pack-quantized are)"
        );
        assert!(refused(json!({"quant_method": "compressed-tensors", "format": "float-quantized",
                               "sparsity_config": {"format": "sparse-24-bitmask", "sparsity_structure": "2:4"}}))
        .contains("field `quantization_config.sparsity_config.format`: compressed-tensors sparsity `sparse-24-bitmask` is not supported"));
        let fp8 = |weights: serde_json::Value, input: serde_json::Value| {
            json!({"quant_method": "compressed-tensors", "format": "float-quantized",
                   "config_groups": {"group_0": {"weights": weights, "input_activations": input, "targets": ["Linear"]}}})
        };
        let w = json!({"num_bits": 8, "type": "float", "strategy": "channel", "symmetric": true});
        let tok = json!({"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true, "symmetric": true});
        assert_eq!(scheme(fp8(w.clone(), tok.clone())).unwrap().unwrap().name(), "compressed-tensors");
        assert!(refused(fp8(json!({"num_bits": 8, "type": "float", "strategy": "block"}), tok.clone()))
            .contains("field `quantization_config.config_groups.*.weights.block_structure`: expected two positive block sides"));
        assert!(refused(fp8(w.clone(), json!({"num_bits": 8, "type": "float", "strategy": "token", "dynamic": true, "symmetric": false})))
            .contains("asymmetric activation quantization is not supported"));
        assert!(refused(fp8(w.clone(), json!({"num_bits": 4, "type": "float", "strategy": "tensor_group", "dynamic": "local"})))
            .contains("input_activations.type`: Some(\"float\") Some(4)-bit activations are not supported"));
        assert!(
            refused(fp8(json!({"num_bits": 8, "type": "float", "strategy": "token"}), tok)).contains("Some(\"token\") is not supported")
        );
        assert_eq!(
            refused(json!({"quant_method": "gptq", "bits": 5, "group_size": 128})),
            "`m/config.json`: field `quantization_config.bits`: Some(5): GPTQ checkpoints of 2, 3, 4 or 8 bits are run"
        );
        assert_eq!(scheme(json!({"quant_method": "gptq", "bits": 8, "group_size": -1})).unwrap().unwrap().name(), "gptq");
        assert_eq!(
            refused(json!({"quant_method": "gptq", "bits": 4})),
            "`m/config.json`: field `quantization_config.group_size`: missing or 0 (a positive size, or -1 for per channel)"
        );
        assert_eq!(
            refused(json!({"quant_method": "awq", "bits": 4, "group_size": -1})),
            "`m/config.json`: field `quantization_config.group_size`: missing or not positive (per-channel is not supported)"
        );
    }

    /// `suffixes` is what each scheme stores: in the zoo's quantized checkpoints every tensor is
    /// either one of its scheme's suffixes of a quantized linear, or a dense `.weight`.
    #[test]
    fn each_scheme_owns_its_tensors_in_the_zoo() {
        let zoo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo/models");
        for (dir, name) in [
            ("llama-gptq-w4g128", "gptq"),
            ("llama-awq-w4g128", "awq"),
            ("llama-ct-w4a16", "compressed-tensors"),
            ("llama-ct-fp8-dynamic", "compressed-tensors"),
            ("llama-ct-fp8-block", "compressed-tensors"),
            ("llama-ct-w8a8", "compressed-tensors"),
            ("llama-ct-nvfp4a16", "compressed-tensors"),
            ("llama-ct-mxfp4a16", "compressed-tensors"),
            ("llama-bnb-nf4", "bitsandbytes"),
            ("llama-bnb-fp4", "bitsandbytes"),
            ("llama-bnb-int8", "bitsandbytes"),
        ] {
            let hf = HfDir::open(&zoo.join(dir)).unwrap();
            let q = QuantWeights::from_config(&hf).unwrap().unwrap();
            assert_eq!(q.scheme.name(), name);
            let mut quantized = 0;
            for (_, t) in hf.tensors() {
                // A suffix can be `weight` itself (bitsandbytes): owned only where the linear is quantized.
                let owner = q.scheme.suffixes().iter().filter_map(|s| t.name.strip_suffix(&format!(".{s}"))).find(|p| q.is_quantized(p));
                match owner {
                    Some(prefix) => {
                        assert!(q.has_linear(prefix), "{dir}: {}", t.name);
                        quantized += 1;
                    }
                    None => assert!(t.name.ends_with(".weight"), "{dir}: {} is neither dense nor owned by {name}", t.name),
                }
            }
            assert!(quantized >= 21 * 2, "{dir}: {quantized}");
        }
    }

    /// A run of rows decoded from the packed tensors (as each matmul tile is) equals the same
    /// rows of the whole dequantized weight, at offsets that split packed words and groups.
    #[test]
    fn packed_rows_equal_the_dequantized_weight() {
        let zoo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo/models");
        for dir in [
            "llama-gptq-w4g128",
            "llama-awq-w4g128",
            "llama-ct-w4a16",
            "llama-ct-fp8-dynamic",
            "llama-ct-fp8-block",
            "llama-ct-w8a8",
            "llama-ct-nvfp4a16",
            "llama-ct-mxfp4a16",
            "llama-bnb-nf4",
            "llama-bnb-fp4",
            "llama-bnb-int8",
        ] {
            let hf = HfDir::open(&zoo.join(dir)).unwrap();
            let q = QuantWeights::from_config(&hf).unwrap().unwrap();
            for prefix in ["model.layers.0.self_attn.k_proj", "model.layers.1.mlp.down_proj"] {
                let (w, out, inp) = q.dequantize(prefix).unwrap().expect("quantized");
                let (p, pout, pinp) = q.scheme.packed(&q.tensors(), prefix).unwrap();
                assert_eq!((pout, pinp), (out, inp));
                for (r0, n) in [(0, 1), (3, 5), (13, 19), (out - 7, 7)] {
                    let mut got = vec![f32::NAN; n * inp];
                    p.decode_rows(r0, &mut got);
                    assert_eq!(got, w[r0 * inp..(r0 + n) * inp], "{dir} {prefix} rows {r0}..{}", r0 + n);
                }
            }
        }
    }
}
