//! Where the decoder gets its weights: one trait, so that a dense safetensors checkpoint, a base
//! with a LoRA adapter applied on the fly, or a GGUF with quantized blocks plug in without the
//! decoder knowing which.
//!
//! Names are HF names (`model.layers.3.self_attn.q_proj`); sources that store other names map them.
//!
//! Sources compose: `LoraWeights` wraps whatever `LinearOp` its base source builds (dense, a GPTQ /
//! AWQ / compressed-tensors `QuantWeights` dequantized at load, a GGUF's quantized blocks), and
//! asks the base for a linear's dense weight only where the algebra needs it (shape checks, DoRA).

use candle_core::{DType, Device, Tensor};

pub use super::native::{NativeLinear, NativeMatrix, RowCodec};
use crate::error::{Error, Result};
/// Re-exported from `format::dtype`, where it lives, for callers that name it here (the tests).
use crate::format::dtype::decode_f32;
use crate::format::hf::HfDir;
use crate::format::lora::{Adapter, LoraModule};

/// A linear layer `y = x·Wᵀ (+ b)`, however it is stored or modified.
pub trait LinearOp: Send + Sync {
    /// `x`: `[T, in]` → `[T, out]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>;
    /// The dense `[out, in]` weight, when the op holds one (so a wrapper need not build it again).
    fn weight(&self) -> Option<&Tensor> {
        None
    }
}

impl LinearOp for NativeLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (t, k) = x.dims2()?;
        if k != self.weight.cols() {
            candle_core::bail!("linear input has {k} features, the weight {}", self.weight.cols());
        }
        let y = {
            // A contiguous f32 input on the CPU is read where it is, not copied out first.
            let (storage, layout) = x.storage_and_layout();
            let y = match (&*storage, layout.contiguous_offsets()) {
                (candle_core::Storage::Cpu(cpu), Some((a, b))) if x.dtype() == candle_core::DType::F32 => {
                    self.weight.matmul_t(&cpu.as_slice::<f32>()?[a..b], t)
                }
                _ => {
                    drop(storage);
                    self.weight.matmul_t(&x.flatten_all()?.to_vec1::<f32>()?, t)
                }
            };
            Tensor::from_vec(y, (t, self.weight.rows()), x.device())?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A dense weight `[out, in]` and optional bias `[out]`.
pub struct DenseLinear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl LinearOp for DenseLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.matmul(&self.weight.t()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    fn weight(&self) -> Option<&Tensor> {
        Some(&self.weight)
    }
}

/// Supplies tensors and linear layers by HF name.
pub trait WeightSource {
    /// A dense tensor in `dtype` on `device` (embeddings, norms).
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor>;
    /// Whether a tensor exists.
    fn has(&self, name: &str) -> bool;
    /// The 2-D weight `name` left in its file in its stored encoding, when this source can
    /// (`None`: the engine takes a dense copy from `tensor`).
    fn native(&self, _name: &str) -> Result<Option<NativeMatrix>> {
        Ok(None)
    }
    /// The linear layer `prefix.weight` (+ `prefix.bias` when `bias`): multiplied where it is
    /// stored when the engine runs f32 on the CPU and the source can, else a dense copy.
    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        let name = format!("{prefix}.weight");
        let bias = if bias { Some(self.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        if native_engine(dtype, device) {
            if let Some(weight) = self.native(&name)? {
                return Ok(Box::new(NativeLinear { weight, bias }));
            }
        }
        Ok(Box::new(DenseLinear { weight: self.tensor(&name, dtype, device)?, bias }))
    }
    /// The dense (dequantized) `[out, in]` weight of the linear layer `prefix`, however it is
    /// stored.
    fn dense_weight(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.tensor(&format!("{prefix}.weight"), dtype, device)
    }
    /// Whether the linear layer `prefix` exists, however it is stored.
    fn has_linear(&self, prefix: &str) -> bool {
        self.has(&format!("{prefix}.weight"))
    }
}

/// Whether the engine multiplies stored weights itself: f32 compute on the CPU. Other dtypes
/// and devices run candle's ops on dense copies.
pub fn native_engine(dtype: DType, device: &Device) -> bool {
    dtype == DType::F32 && device.is_cpu()
}

/// Dense weights straight from an HF directory's safetensors.
pub struct HfWeights<'a> {
    pub dir: &'a HfDir,
}

impl WeightSource for HfWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.dir.tensor(name).is_some()
    }

    fn native(&self, name: &str) -> Result<Option<NativeMatrix>> {
        let Some((file, info)) = self.dir.tensor(name) else { return Ok(None) };
        let (Some(codec), [rows, cols]) = (RowCodec::of_dtype(info.dtype), info.shape.as_slice()) else { return Ok(None) };
        let err = |detail| Error::Tensor { path: file.path.clone(), tensor: name.to_string(), detail };
        NativeMatrix::new(file.shared_bytes(name)?, *rows as usize, *cols as usize, codec, err).map(Some)
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (file, info) = self.dir.tensor(name).ok_or_else(|| Error::Tensor {
            path: self.dir.root.clone(),
            tensor: name.to_string(),
            detail: "not found in any weights file; the checkpoint does not match its config.json".into(),
        })?;
        fp8_unapplied_scale(self.dir, name, info.dtype)?;
        let bytes = file.checked_bytes(name)?;
        let shape: Vec<usize> = info.shape.iter().map(|&d| d as usize).collect();
        let values = decode_f32(info.dtype, bytes).ok_or_else(|| Error::Tensor {
            path: file.path.clone(),
            tensor: name.to_string(),
            detail: format!("dtype {} is not a dense float type the engine runs (quantized checkpoints need their own reader)", info.dtype),
        })?;
        let t = Tensor::from_vec(values, shape, device).map_err(|e| Error::Tensor {
            path: file.path.clone(),
            tensor: name.to_string(),
            detail: e.to_string(),
        })?;
        t.to_dtype(dtype).map_err(|e| Error::Tensor { path: file.path.clone(), tensor: name.to_string(), detail: e.to_string() })
    }
}

/// Refuses an FP8 `prefix.weight` stored with scales (`FP8_SCALE_SUFFIXES`) that no scheme of the
/// engine applies (`quant_method: fp8`, DeepSeek / Qwen block FP8, or a config that lost its
/// `quantization_config`): run dense, it would be off by its scale in every element.
fn fp8_unapplied_scale(dir: &HfDir, name: &str, dtype: crate::format::dtype::Dtype) -> Result<()> {
    use crate::format::quant::{fp8_scale, QuantConfig};
    let Some(Some(scale)) = fp8_scale(dir, name, dtype) else { return Ok(()) };
    let how = match QuantConfig::from_config_json(dir) {
        Some(q) => format!(
            "quantization_config.quant_method `{}` is not a scheme the engine runs for it (compressed-tensors float-quantized is)",
            q.method
        ),
        None => "config.json has no quantization_config saying how to apply it".into(),
    };
    Err(Error::Tensor {
        path: dir.root.clone(),
        tensor: name.to_string(),
        detail: format!(
            "{dtype} weight scaled by `{scale}`, and {how}: dequantize it to bf16 first (transformers: FineGrainedFP8Config(dequantize=True), then save_pretrained)"
        ),
    })
}

/// `y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ b)`, the LoRA update applied in the forward pass exactly as PEFT
/// does before merging; with DoRA, `y = m / ‖W + s·B·A‖_row ⊙ (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) + b`.
/// `x·Wᵀ` is the base source's own linear op, built without its bias (DoRA scales before the bias).
pub struct LoraLinear {
    pub base: Box<dyn LinearOp>,
    pub bias: Option<Tensor>,
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
    /// DoRA: magnitude / row norm of the updated weight, `[out]`.
    pub dora_scale: Option<Tensor>,
}

impl LinearOp for LoraLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let base = self.base.forward(x)?;
        let lora = (x.matmul(&self.a.t()?)?.matmul(&self.b.t()?)? * self.scale)?;
        let mut y = (base + lora)?;
        if let Some(m) = &self.dora_scale {
            y = y.broadcast_mul(m)?;
        }
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// A base checkpoint with a PEFT adapter applied on the fly (not merged).
pub struct LoraWeights<'a> {
    pub base: &'a dyn WeightSource,
    pub adapter: &'a Adapter,
}

impl LoraWeights<'_> {
    /// The adapter's own tensors (lora_A/B, magnitudes, modules_to_save copies).
    fn adapter_weights(&self) -> HfWeights<'_> {
        HfWeights { dir: &self.adapter.dir }
    }

    /// Whether `modules_to_save` replaces the base tensor `name`.
    fn saves(&self, name: &str) -> bool {
        self.adapter.saved.iter().any(|(_, base)| base == name)
    }

    fn module(&self, prefix: &str) -> Option<&LoraModule> {
        self.adapter.modules.iter().find(|m| m.base == prefix)
    }

    /// lora_A, lora_B (checked against the base weight's shape) and DoRA's
    /// `magnitude / ‖W + s·B·A‖_row`.
    fn factors(
        &self,
        m: &LoraModule,
        prefix: &str,
        weight: &Tensor,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let err = |e: candle_core::Error| Error::Tensor { path: self.adapter.path(), tensor: m.a.clone(), detail: e.to_string() };
        let f = self.adapter.factors(m)?;
        let (ra, ia, ob, rb) = (f.rank, f.inp, f.out, f.rank);
        let a = Tensor::from_vec(f.a, (ra, ia), device).and_then(|t| t.to_dtype(dtype)).map_err(err)?;
        let b = Tensor::from_vec(f.b, (ob, rb), device).and_then(|t| t.to_dtype(dtype)).map_err(err)?;
        let (out, inp) = weight.dims2().map_err(err)?;
        if ia != inp || ob != out {
            return Err(Error::Tensor {
                path: self.adapter.path(),
                tensor: m.a.clone(),
                detail: format!(
                    "lora_A {ra}×{ia} and lora_B {ob}×{rb} do not fit the base weight `{prefix}.weight` {out}×{inp}: the adapter was trained on another base model"
                ),
            });
        }
        let dora_scale = match &m.magnitude {
            Some(mag) => {
                let mag = self.adapter_weights().tensor(mag, dtype, device)?;
                let merged = (weight + (b.matmul(&a).map_err(err)? * m.scale).map_err(err)?).map_err(err)?;
                let norm = merged.sqr().and_then(|s| s.sum(1)).and_then(|s| s.sqrt()).map_err(err)?;
                Some((mag / norm).map_err(err)?)
            }
            None => None,
        };
        Ok((a, b, dora_scale))
    }
}

impl WeightSource for LoraWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.base.has(name)
    }

    fn native(&self, name: &str) -> Result<Option<NativeMatrix>> {
        if self.saves(name) {
            return self
                .adapter_weights()
                .native(self.adapter.saved.iter().find(|(_, b)| b == name).map(|(a, _)| a.as_str()).unwrap_or(name));
        }
        self.base.native(name)
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        // modules_to_save replace the base tensor wholesale.
        if let Some((adapter_name, _)) = self.adapter.saved.iter().find(|(_, base)| base == name) {
            return self.adapter_weights().tensor(adapter_name, dtype, device);
        }
        self.base.tensor(name, dtype, device)
    }

    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        let (weight_name, bias_name) = (format!("{prefix}.weight"), format!("{prefix}.bias"));
        let Some(m) = self.module(prefix) else {
            // Not adapted: the base's own linear, unless a modules_to_save copy replaces it.
            let replaced = self.saves(&weight_name) || (bias && self.saves(&bias_name));
            if !replaced {
                return self.base.linear(prefix, bias, dtype, device);
            }
            let weight = self.tensor(&weight_name, dtype, device)?;
            let bias = if bias { Some(self.tensor(&bias_name, dtype, device)?) } else { None };
            return Ok(Box::new(DenseLinear { weight, bias }));
        };
        let base = self.base.linear(prefix, false, dtype, device)?;
        let weight = match base.weight() {
            Some(w) => w.clone(),
            None => self.base.dense_weight(prefix, dtype, device)?,
        };
        let bias = if bias { Some(self.tensor(&bias_name, dtype, device)?) } else { None };
        let (a, b, dora_scale) = self.factors(m, prefix, &weight, dtype, device)?;
        Ok(Box::new(LoraLinear { base, bias, a, b, scale: m.scale, dora_scale }))
    }

    /// The merged weight: `W + s·B·A`, with DoRA `m / ‖W + s·B·A‖_row ⊙ (W + s·B·A)`.
    fn dense_weight(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let weight_name = format!("{prefix}.weight");
        let weight = if self.saves(&weight_name) {
            self.tensor(&weight_name, dtype, device)?
        } else {
            self.base.dense_weight(prefix, dtype, device)?
        };
        let Some(m) = self.module(prefix) else { return Ok(weight) };
        let (a, b, dora_scale) = self.factors(m, prefix, &weight, dtype, device)?;
        let err = |e: candle_core::Error| Error::Tensor { path: self.adapter.path(), tensor: m.a.clone(), detail: e.to_string() };
        let merged = (&weight + (b.matmul(&a).map_err(err)? * m.scale).map_err(err)?).map_err(err)?;
        match dora_scale {
            Some(d) => d.unsqueeze(1).and_then(|d| merged.broadcast_mul(&d)).map_err(err),
            None => Ok(merged),
        }
    }

    fn has_linear(&self, prefix: &str) -> bool {
        self.base.has_linear(prefix) || self.saves(&format!("{prefix}.weight"))
    }
}
