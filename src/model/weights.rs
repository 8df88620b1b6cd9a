//! Where the decoder gets its weights: one trait, so that a dense safetensors checkpoint, a base
//! with a LoRA adapter applied on the fly, or a GGUF with quantized blocks plug in without the
//! decoder knowing which.
//!
//! Names are HF names (`model.layers.3.self_attn.q_proj`); sources that store other names map them.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::format::dtype::{f8_e4m3_to_f32, f8_e5m2_to_f32, Dtype};
use crate::format::hf::HfDir;

/// A linear layer `y = x·Wᵀ (+ b)`, however it is stored or modified.
pub trait LinearOp: Send + Sync {
    /// `x`: `[T, in]` → `[T, out]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>;
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
}

/// Supplies tensors and linear layers by HF name.
pub trait WeightSource {
    /// A dense tensor in `dtype` on `device` (embeddings, norms).
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor>;
    /// Whether a tensor exists.
    fn has(&self, name: &str) -> bool;
    /// The linear layer `prefix.weight` (+ `prefix.bias` when `bias`).
    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        let weight = self.tensor(&format!("{prefix}.weight"), dtype, device)?;
        let bias = if bias { Some(self.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        Ok(Box::new(DenseLinear { weight, bias }))
    }
}

/// Dense weights straight from an HF directory's safetensors.
pub struct HfWeights<'a> {
    pub dir: &'a HfDir,
}

impl WeightSource for HfWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.dir.tensor(name).is_some()
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (file, info) = self.dir.tensor(name).ok_or_else(|| Error::Tensor {
            path: self.dir.root.clone(),
            tensor: name.to_string(),
            detail: "not found in any weights file; the checkpoint does not match its config.json".into(),
        })?;
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
        t.to_dtype(dtype).map_err(|e| Error::Tensor {
            path: file.path.clone(),
            tensor: name.to_string(),
            detail: e.to_string(),
        })
    }
}

/// Decodes little-endian float data to f32 (the engine's compute type on CPU; bf16 matmuls on
/// CPU widen to f32 anyway).
pub fn decode_f32(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        Dtype::F8_E4M3 => b.iter().map(|&x| f8_e4m3_to_f32(x)).collect(),
        Dtype::F8_E5M2 => b.iter().map(|&x| f8_e5m2_to_f32(x)).collect(),
        _ => return None,
    })
}
