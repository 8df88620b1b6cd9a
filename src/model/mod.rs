//! The forward engine: one decoder parameterised by `ArchSpec`, weights through `WeightSource`.
//! Built on candle tensors; CPU by default, CUDA with the `cuda` feature.

pub mod attention;
pub mod decoder;
pub mod dot;
pub mod gguf_weights;
pub mod native;
pub mod qdot;
pub mod quant;
pub mod rope;
pub mod splice;
pub mod vmath;
pub mod weights;

use candle_core::{DType, Device};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::format::arch;
use crate::format::hf::HfDir;
pub use crate::settings::GgufMatmul;
use crate::settings::{ComputeDtype, DeviceChoice};

pub use decoder::{Forward, Model};

/// Sets the threads every forward pass uses: `n`, or every core. The engine's kernels run on
/// rayon's global pool; candle's own CPU ops read `RAYON_NUM_THREADS`, set here to agree. Call
/// once, before any model runs (the binary does, from `--threads`).
pub fn set_threads(n: Option<usize>) -> Result<()> {
    let n = match n {
        Some(0) => return Err(Error::Device { detail: "--threads 0: give at least one thread, or leave it out to use every core".into() }),
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    // Before any other thread exists (the binary calls this first), so the write races nothing.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .map_err(|e| Error::Device { detail: format!("could not start {n} threads: {e}") })
}

/// The candle device a `DeviceChoice` names.
pub fn device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Auto => Ok(default_device()),
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda(n) => cuda_device(n),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(n: usize) -> Result<Device> {
    Device::new_cuda(n).map_err(|e| Error::Device { detail: format!("no usable CUDA device {n}: {e}") })
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_: usize) -> Result<Device> {
    Err(Error::Device { detail: "this build has no CUDA support: rebuild with `cargo build --release --features cuda`".into() })
}

/// The compute device: CUDA 0 when built with `cuda` and a GPU is present, else CPU.
pub fn default_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

/// Loads whatever a checkpoint is into the engine: dense or quantized HF weights, a GGUF, or a
/// base with its adapter applied on the fly. A PEFT adapter alone cannot run.
pub fn load(ckpt: &Checkpoint, device: &Device, dtype: ComputeDtype, gguf_matmul: GgufMatmul) -> Result<Model> {
    with_weights(ckpt, device, dtype, gguf_matmul, |w, spec, dt| Model::load(spec, w, device, dt))
}

/// Runs `f` with the weight source a checkpoint needs (HF tensor names, whatever the format),
/// its architecture, validated against the stored shapes, and the compute dtype `dtype`
/// resolves to. `load` is `f` = `Model::load`; blame builds hybrids of two sources with it.
pub fn with_weights<R>(
    ckpt: &Checkpoint,
    device: &Device,
    dtype: ComputeDtype,
    gguf_matmul: GgufMatmul,
    f: impl FnOnce(&dyn weights::WeightSource, arch::ArchSpec, DType) -> Result<R>,
) -> Result<R> {
    match ckpt {
        Checkpoint::Hf(dir) => with_hf_weights(dir, |w| f(w, hf_spec(dir, w)?, resolve_dtype(dtype, dir))),
        Checkpoint::Gguf(file) if file.header.is_lora_adapter() => Err(Error::NotACheckpoint {
            path: file.path.clone(),
            reason: "a GGUF LoRA adapter on its own cannot run: pass `BASE.gguf+ADAPTER.gguf` to apply it to its base".into(),
        }),
        Checkpoint::GgufWithAdapter { base, adapter } => {
            let (b, dt) = gguf_source(base, device, dtype, gguf_matmul)?;
            let w = gguf_weights::GgufLoraWeights::new(b, b.adapter(adapter))?;
            f(&w, gguf_spec(base)?, dt)
        }
        Checkpoint::Gguf(file) => {
            let (w, dt) = gguf_source(file, device, dtype, gguf_matmul)?;
            f(&w, gguf_spec(file)?, dt)
        }
        Checkpoint::BaseWithAdapter { base, adapter } => {
            if adapter.config.fan_in_fan_out {
                return Err(Error::Field {
                    path: adapter.dir.root.join("adapter_config.json"),
                    field: "fan_in_fan_out".into(),
                    detail: "Conv1D (GPT-2 style) adapters are not supported by the engine".into(),
                });
            }
            // The base runs as it would alone (a quantized base through its own scheme: QLoRA).
            with_hf_weights(base, |base_w| {
                if let Some(m) = adapter.modules.iter().find(|m| !base_w.has_linear(&m.base)) {
                    return Err(Error::Tensor {
                        path: adapter.dir.root.join("adapter_model.safetensors"),
                        tensor: m.a.clone(),
                        detail: format!("adapts `{}`, which the base model `{}` does not have", m.base, base.root.display()),
                    });
                }
                let w = weights::LoraWeights { base: base_w, adapter };
                f(&w, hf_spec(base, &w)?, resolve_dtype(dtype, base))
            })
        }
        Checkpoint::Adapter(dir) => Err(Error::NotACheckpoint {
            path: dir.root.clone(),
            reason: "a PEFT adapter on its own cannot run: pass `BASE+ADAPTER` to apply it on the fly, or the merged model".into(),
        }),
    }
}

/// A GGUF's weights as the engine reads them, and the compute dtype: a GGUF has no config dtype,
/// so `auto` computes in f32.
fn gguf_source<'a>(
    file: &'a crate::format::gguf::GgufFile,
    device: &Device,
    dtype: ComputeDtype,
    gguf_matmul: GgufMatmul,
) -> Result<(gguf_weights::GgufWeights<'a>, DType)> {
    let dt = match dtype {
        ComputeDtype::Auto => DType::F32,
        other => fixed_dtype(other),
    };
    Ok((gguf_weights_with(file, gguf_matmul, dt, device)?, dt))
}

/// The tensors (HF names, sorted) the decoder loads from `ckpt`.
pub fn loaded_tensors(ckpt: &Checkpoint, device: &Device, dtype: ComputeDtype, gguf_matmul: GgufMatmul) -> Result<Vec<String>> {
    with_weights(ckpt, device, dtype, gguf_matmul, |w, spec, dt| {
        let r = splice::Recorder::new(w);
        Model::load(spec, &r, device, dt)?;
        Ok(r.names())
    })
}

/// A hybrid: `parent` with the tensors `take` names loaded from `step` instead, run with the
/// parent's architecture. Refused when the two do not share the tensor shapes (dimensions,
/// depth, experts), since a swapped tensor must fit where it goes. `paths` name the two in
/// errors.
pub fn load_spliced(
    (parent, step): (&Checkpoint, &Checkpoint),
    paths: (&std::path::Path, &std::path::Path),
    take: &dyn Fn(&str) -> bool,
    device: &Device,
    dtype: ComputeDtype,
    gguf_matmul: GgufMatmul,
) -> Result<Model> {
    with_weights(parent, device, dtype, gguf_matmul, |pw, spec, dt| {
        with_weights(step, device, dtype, gguf_matmul, |sw, step_spec, _| {
            let dims = |s: &arch::ArchSpec| {
                (s.vocab_size, s.hidden, s.intermediate, s.layers, s.heads, s.kv_heads, s.head_dim, s.moe.as_ref().map(|m| m.experts))
            };
            if dims(&spec) != dims(&step_spec) {
                return Err(Error::NotACheckpoint {
                    path: paths.1.to_path_buf(),
                    reason: format!(
                        "its tensors cannot be swapped into `{}`: (vocab, hidden, intermediate, layers, heads, kv heads, head dim, experts) = {:?} vs {:?}",
                        paths.0.display(),
                        dims(&step_spec),
                        dims(&spec)
                    ),
                });
            }
            Model::load(spec, &splice::SpliceWeights { parent: pw, step: sw, take }, device, dt)
        })
    })
}

/// Runs `f` with the weight source an HF directory needs: its quantization scheme's (GPTQ / AWQ /
/// compressed-tensors, unpacked by the project's own code) or plain dense safetensors.
fn with_hf_weights<R>(dir: &HfDir, f: impl FnOnce(&dyn weights::WeightSource) -> Result<R>) -> Result<R> {
    match quant::QuantWeights::from_config(dir)? {
        Some(q) => f(&q),
        None => f(&weights::HfWeights { dir }),
    }
}

/// Loads an HF checkpoint directory's dense weights into the engine.
pub fn load_hf(dir: &HfDir, device: &Device) -> Result<Model> {
    load_with(dir, &weights::HfWeights { dir }, device, DType::F32)
}

/// Loads with the architecture from `dir`'s config.json and the weights from `w` (e.g. a base
/// with a LoRA adapter applied on the fly).
pub fn load_with(dir: &HfDir, w: &dyn weights::WeightSource, device: &Device, dtype: DType) -> Result<Model> {
    Model::load(hf_spec(dir, w)?, w, device, dtype)
}

/// The architecture of an HF directory (config.json, the topology its weights have), refused
/// when a stored shape disagrees with it.
fn hf_spec(dir: &HfDir, w: &dyn weights::WeightSource) -> Result<arch::ArchSpec> {
    let cfg = dir
        .config
        .as_ref()
        .ok_or_else(|| Error::NotACheckpoint { path: dir.root.clone(), reason: "no config.json, so the architecture is unknown".into() })?;
    if let Some(why) = dir.index_problem() {
        return Err(Error::NotACheckpoint {
            path: dir.root.clone(),
            reason: format!(
                "{why}; the engine loads the shards the index names, so fix or regenerate the index (`ckptcheck lint` lists every problem)"
            ),
        });
    }
    let has_head = dir.tensor("lm_head.weight").is_some();
    let mut spec = arch::ArchSpec::from_config(&cfg.value, Some(has_head)).map_err(|e| match e {
        Error::Field { field, detail, .. } => Error::Field { path: cfg.path.clone(), field, detail },
        other => other,
    })?;
    // The decoder never meets a tensor it has not validated: the same checks as lint's
    // `weights.*` findings, on the stored shapes, before anything is loaded.
    spec.topology = arch::Topology::from_weights(|n| w.has(n));
    if let Some(p) = spec.shape_problems_in(dir).into_iter().next() {
        let path = dir.tensor(p.tensor()).map(|(f, _)| f.path.clone()).unwrap_or_else(|| cfg.path.clone());
        return Err(Error::Tensor {
            path,
            tensor: p.tensor().to_string(),
            detail: format!("{}; run `ckptcheck lint` for every problem", p.message()),
        });
    }
    Ok(spec)
}

/// `MemAvailable` from /proc/meminfo, in bytes (None off Linux).
fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resolves `Auto` for a file: on the native engine (f32 on the CPU: blocks are decoded a tile
/// at a time, so dense costs no memory) `Auto` stays `Auto`, which `gguf_weights_with` reads as
/// llama.cpp's integer arithmetic for Q4_K / Q5_K / Q6_K where the CPU has the kernels and exact
/// dequantized values for the rest; otherwise dense only when two dense copies take at most a
/// quarter of the available memory.
pub fn resolve_gguf_matmul(mode: GgufMatmul, file: &crate::format::gguf::GgufFile, dtype: DType, device: &Device) -> GgufMatmul {
    if mode != GgufMatmul::Auto || weights::native_engine(dtype, device) {
        return mode;
    }
    let dense: u64 = file.header.tensors.iter().map(|t| t.numel().saturating_mul(dtype.size_in_bytes() as u64)).sum();
    match available_memory() {
        Some(avail) if dense.saturating_mul(2) > avail / 4 => GgufMatmul::Quantized,
        _ => GgufMatmul::Dense,
    }
}

/// A GGUF's weight source for a matmul mode (`Auto` resolved as `resolve_gguf_matmul` says).
fn gguf_weights_with<'a>(
    file: &'a crate::format::gguf::GgufFile,
    mode: GgufMatmul,
    dtype: DType,
    device: &Device,
) -> Result<gguf_weights::GgufWeights<'a>> {
    let w = gguf_weights::GgufWeights::new(file)?;
    Ok(match resolve_gguf_matmul(mode, file, dtype, device) {
        GgufMatmul::Quantized => w.with_quantized_matmul(true),
        GgufMatmul::Auto => w.with_llama_arithmetic(true),
        GgufMatmul::Dense => w,
    })
}

pub fn load_gguf(file: &crate::format::gguf::GgufFile, device: &Device, dtype: DType) -> Result<Model> {
    load_gguf_with(file, device, dtype, GgufMatmul::Dense)
}

/// Loads a GGUF file: architecture from its metadata, weights from its blocks, with the given
/// matmul mode (`Auto` resolved as `resolve_gguf_matmul` says).
pub fn load_gguf_with(file: &crate::format::gguf::GgufFile, device: &Device, dtype: DType, mode: GgufMatmul) -> Result<Model> {
    Model::load(gguf_spec(file)?, &gguf_weights_with(file, mode, dtype, device)?, device, dtype)
}

/// The architecture a GGUF's metadata describes (with llama.cpp's rope divisors).
fn gguf_spec(file: &crate::format::gguf::GgufFile) -> Result<arch::ArchSpec> {
    let freq_factors = rope_freq_factors(file, "rope_freqs.weight")?;
    // A NaN/Inf float in the metadata is refused, never replaced by a default (lint reports it as
    // `gguf.metadata-not-finite`).
    let mut cfg = file.header.hf_config_checked().map_err(|(field, detail)| Error::Field { path: file.path.clone(), field, detail })?;
    if let Some(rope) = longrope_scaling(file)? {
        cfg["rope_scaling"] = rope;
    }
    let has_head = file.header.tensor("output.weight").is_some();
    let mut spec = arch::ArchSpec::from_config(&cfg, Some(has_head)).map_err(|e| match e {
        Error::Field { field, detail, .. } => Error::Field { path: file.path.clone(), field: format!("GGUF metadata ({field})"), detail },
        other => other,
    })?;
    if let Some(f) = freq_factors {
        spec.rope.scaling = arch::RopeScaling::FreqFactors(f);
    }
    Ok(spec)
}

/// llama.cpp keeps Llama-3.x rope scaling (`rope_freqs.weight`) and Phi-3's longrope factor sets
/// as tensors of per-frequency divisors (F32).
fn rope_freq_factors(file: &crate::format::gguf::GgufFile, name: &str) -> Result<Option<Vec<f32>>> {
    let Some(t) = file.header.tensor(name) else { return Ok(None) };
    if t.ggml_type != crate::format::gguf::GgmlType::F32 {
        return Err(Error::Tensor { path: file.path.clone(), tensor: name.into(), detail: format!("type {} (expected F32)", t.ggml_type) });
    }
    let bytes = file.checked_bytes(&t.name)?;
    Ok(Some(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

/// Phi-3 128k / Phi-4-mini longrope in a GGUF: `rope_factors_short/long.weight`, the original
/// context (`rope.scaling.original_context_length`) and llama.cpp's `rope.scaling.attn_factor`
/// (the converter's sqrt(1 + ln(max/original) / ln(original)); 1 when absent, as llama.cpp reads
/// it), as the `rope_scaling` a config.json would hold. The engine then picks the factor set by
/// sequence length, as transformers does; llama.cpp picks by context size (n_ctx > original: long),
/// the same choice when llama.cpp's context is the sequence's (`gguf.longrope-context` says so).
fn longrope_scaling(file: &crate::format::gguf::GgufFile) -> Result<Option<serde_json::Value>> {
    let (short, long) = (rope_freq_factors(file, "rope_factors_short.weight")?, rope_freq_factors(file, "rope_factors_long.weight")?);
    let (short, long) = match (short, long) {
        (None, None) => return Ok(None),
        (Some(s), Some(l)) => (s, l),
        (s, _) => {
            let missing = if s.is_none() { "rope_factors_short.weight" } else { "rope_factors_long.weight" };
            return Err(Error::Tensor {
                path: file.path.clone(),
                tensor: missing.into(),
                detail: "is missing while the other longrope factor set is present: re-convert the model".into(),
            });
        }
    };
    let key = |k: &str| file.header.arch_key(k).and_then(|v| v.as_f64());
    let original = file.header.arch_meta().rope_scaling_original_context_length.ok_or_else(|| Error::Field {
        path: file.path.clone(),
        field: "GGUF metadata (rope.scaling.original_context_length)".into(),
        detail: "is missing: longrope factors need the original context to choose between them".into(),
    })?;
    Ok(Some(serde_json::json!({
        "rope_type": "longrope", "short_factor": short, "long_factor": long,
        "original_max_position_embeddings": original, "attention_factor": key("rope.scaling.attn_factor").unwrap_or(1.0),
    })))
}

/// The compute dtype: `Auto` takes the checkpoint's `config.json` dtype (f32 when it names none).
pub fn resolve_dtype(dtype: ComputeDtype, dir: &HfDir) -> DType {
    match dtype {
        ComputeDtype::Auto => {
            let cfg = dir.config.as_ref().map(|c| crate::format::config::ModelConfig::from_json(&c.value));
            cfg.and_then(|c| c.dtype).and_then(|d| d.parse::<ComputeDtype>().ok()).map(fixed_dtype).unwrap_or(DType::F32)
        }
        other => fixed_dtype(other),
    }
}

/// The candle dtype of a dtype that is not `Auto` (`Auto` here: f32).
fn fixed_dtype(d: ComputeDtype) -> DType {
    match d {
        ComputeDtype::Bf16 => DType::BF16,
        ComputeDtype::F16 => DType::F16,
        ComputeDtype::F32 | ComputeDtype::Auto => DType::F32,
    }
}
