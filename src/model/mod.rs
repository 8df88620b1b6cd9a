//! The forward engine: one decoder parameterised by `ArchSpec`, weights through `WeightSource`.
//! Built on candle tensors; CPU by default, CUDA with the `cuda` feature.

pub mod arch;
pub mod decoder;
pub mod gguf_weights;
pub mod quant;
pub mod rope;
pub mod weights;

/// The quantized weight source's former path (`model::quant_weights::QuantWeights`), kept for callers.
pub use quant as quant_weights;

use candle_core::{DType, Device};

use crate::error::{Error, Result};
use crate::format::hf::HfDir;

pub use decoder::{Forward, Model};

/// `--device` / manifest `device`: `cpu`, `cuda` (GPU 0; needs a build with `--features cuda`), or
/// `auto` (CUDA when available, else CPU).
pub fn device_named(name: &str) -> Result<Device> {
    let err = |detail: String| Error::Field { path: "--device".into(), field: "device".into(), detail };
    match name {
        "auto" => Ok(default_device()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => {
            #[cfg(feature = "cuda")]
            {
                Device::new_cuda(0).map_err(|e| err(format!("no usable CUDA device: {e}")))
            }
            #[cfg(not(feature = "cuda"))]
            {
                Err(err("this build has no CUDA support: rebuild with `cargo build --release --features cuda`".into()))
            }
        }
        other => Err(err(format!("`{other}` is not one of auto, cpu, cuda"))),
    }
}

/// The compute device: CUDA 0 when built with `cuda` and a GPU is present, else CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Loads an HF checkpoint directory's dense weights into the engine.
pub fn load_hf(dir: &HfDir, device: &Device) -> Result<Model> {
    load_with(dir, &weights::HfWeights { dir }, device, DType::F32)
}

/// Loads with the architecture from `dir`'s config.json and the weights from `w` (e.g. a base
/// with a LoRA adapter applied on the fly).
pub fn load_with(dir: &HfDir, w: &dyn weights::WeightSource, device: &Device, dtype: DType) -> Result<Model> {
    let cfg = dir
        .config
        .as_ref()
        .ok_or_else(|| Error::NotACheckpoint { path: dir.root.clone(), reason: "no config.json, so the architecture is unknown".into() })?;
    let has_head = dir.tensor("lm_head.weight").is_some();
    let spec = arch::ArchSpec::from_config(&cfg.value, Some(has_head)).map_err(|e| match e {
        Error::Field { field, detail, .. } => Error::Field { path: cfg.path.clone(), field, detail },
        other => other,
    })?;
    Model::load(spec, w, device, dtype)
}

/// Loads a GGUF file: architecture from its metadata, weights dequantized from its blocks.
/// How a GGUF's quantized linear layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufMatmul {
    /// Dequantize every weight to the compute dtype: closest to llama.cpp (measured, see
    /// gguf_weights.rs), 4–8× the memory of the file.
    Dense,
    /// Multiply on the quantized blocks (candle `QMatMul`): the file's memory, further from
    /// llama.cpp.
    Quantized,
    /// Dense when two models of this size fit in a quarter of the available memory, else quantized.
    Auto,
}

impl GgufMatmul {
    pub fn parse(s: &str) -> Result<GgufMatmul> {
        match s {
            "dense" => Ok(GgufMatmul::Dense),
            "quantized" => Ok(GgufMatmul::Quantized),
            "auto" => Ok(GgufMatmul::Auto),
            other => Err(Error::Field {
                path: "--gguf-matmul".into(),
                field: "gguf-matmul".into(),
                detail: format!("`{other}` is not one of auto, dense, quantized"),
            }),
        }
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes (None off Linux).
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resolves `Auto` for a file: compare holds two models, and activations need room too, so dense
/// is chosen only when two dense copies take at most a quarter of the available memory.
pub fn resolve_gguf_matmul(mode: GgufMatmul, file: &crate::format::gguf::GgufFile, dtype: DType) -> GgufMatmul {
    if mode != GgufMatmul::Auto {
        return mode;
    }
    let dense: u64 = file.header.tensors.iter().map(|t| t.numel().saturating_mul(dtype.size_in_bytes() as u64)).sum();
    match available_memory() {
        Some(avail) if dense.saturating_mul(2) > avail / 4 => GgufMatmul::Quantized,
        _ => GgufMatmul::Dense,
    }
}

pub fn load_gguf(file: &crate::format::gguf::GgufFile, device: &Device, dtype: DType) -> Result<Model> {
    load_gguf_with(file, device, dtype, GgufMatmul::Dense)
}

/// Loads a GGUF with the given matmul mode (`Auto` resolved against available memory).
pub fn load_gguf_with(file: &crate::format::gguf::GgufFile, device: &Device, dtype: DType, mode: GgufMatmul) -> Result<Model> {
    let quantized = resolve_gguf_matmul(mode, file, dtype) == GgufMatmul::Quantized;
    let w = gguf_weights::GgufWeights::new(file)?.with_quantized_matmul(quantized);
    let freq_factors = rope_freq_factors(file)?;
    let cfg = gguf_weights::config_json(file);
    let has_head = file.header.tensor("output.weight").is_some();
    let spec = arch::ArchSpec::from_config(&cfg, Some(has_head)).map_err(|e| match e {
        Error::Field { field, detail, .. } => Error::Field { path: file.path.clone(), field: format!("GGUF metadata ({field})"), detail },
        other => other,
    })?;
    let mut spec = spec;
    if let Some(f) = freq_factors {
        spec.rope.scaling = arch::RopeScaling::FreqFactors(f);
    }
    Model::load(spec, &w, device, dtype)
}

/// llama.cpp keeps Llama-3.x rope scaling as a tensor of per-frequency divisors.
fn rope_freq_factors(file: &crate::format::gguf::GgufFile) -> Result<Option<Vec<f32>>> {
    let Some(t) = file.header.tensor("rope_freqs.weight") else { return Ok(None) };
    if t.ggml_type != crate::format::gguf::GgmlType::F32 {
        return Err(Error::Tensor {
            path: file.path.clone(),
            tensor: "rope_freqs.weight".into(),
            detail: format!("type {} (expected F32)", t.ggml_type),
        });
    }
    let bytes = file.checked_bytes(&t.name)?;
    Ok(Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

/// `--dtype`: the compute dtype; `auto` takes the checkpoint's `config.json` dtype.
pub fn resolve_dtype(name: &str, dir: &HfDir) -> Result<DType> {
    if name == "auto" {
        let cfg = dir.config.as_ref().map(|c| crate::format::config::ModelConfig::from_json(&c.value));
        return Ok(cfg.and_then(|c| c.dtype).and_then(|d| parse_dtype(&d)).unwrap_or(DType::F32));
    }
    parse_dtype(name).ok_or_else(|| Error::Field {
        path: "--dtype".into(),
        field: "dtype".into(),
        detail: format!("`{name}` is not one of f32, bf16, f16, auto"),
    })
}

/// A dtype name as `--dtype` or `config.json` spells it.
pub fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f32" | "float32" => Some(DType::F32),
        "bf16" | "bfloat16" => Some(DType::BF16),
        "f16" | "float16" => Some(DType::F16),
        _ => None,
    }
}
