//! The forward engine: one decoder parameterised by `ArchSpec`, weights through `WeightSource`.
//! Built on candle tensors; CPU by default, CUDA with the `cuda` feature.

pub mod arch;
pub mod decoder;
pub mod rope;
pub mod weights;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::format::hf::HfDir;

pub use decoder::{Forward, Model};

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
    load_with(dir, &weights::HfWeights { dir }, device)
}

/// Loads with the architecture from `dir`'s config.json and the weights from `w` (e.g. a base
/// with a LoRA adapter applied on the fly).
pub fn load_with(dir: &HfDir, w: &dyn weights::WeightSource, device: &Device) -> Result<Model> {
    let cfg = dir.config.as_ref().ok_or_else(|| Error::NotACheckpoint {
        path: dir.root.clone(),
        reason: "no config.json, so the architecture is unknown".into(),
    })?;
    let has_head = dir.tensor("lm_head.weight").is_some();
    let spec = arch::ArchSpec::from_config(&cfg.value, Some(has_head)).map_err(|e| match e {
        Error::Field { field, detail, .. } => Error::Field {
            path: cfg.path.clone(),
            field,
            detail,
        },
        other => other,
    })?;
    Model::load(spec, w, device)
}
