//! Hybrids of two checkpoints for blame: a parent with some of a step's tensors swapped in,
//! and the list of tensors a model loads (what there is to swap).
//!
//! Both work on the decoder's HF names, which every weight source speaks (a GGUF's through its
//! name map, dequantized or still in blocks), so a hybrid can mix formats: an HF parent with one
//! layer of its GGUF conversion.

use std::collections::BTreeSet;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use super::native::NativeMatrix;
use super::weights::{LinearOp, WeightSource};
use crate::error::Result;

/// The parent's weights, except the tensors `take` names, which come from the step.
pub struct SpliceWeights<'a> {
    pub parent: &'a dyn WeightSource,
    pub step: &'a dyn WeightSource,
    /// Whether the tensor (full name, `….weight` / `….bias`) is the step's.
    pub take: &'a dyn Fn(&str) -> bool,
}

impl SpliceWeights<'_> {
    fn source(&self, name: &str) -> &dyn WeightSource {
        if (self.take)(name) {
            self.step
        } else {
            self.parent
        }
    }
}

impl WeightSource for SpliceWeights<'_> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.source(name).tensor(name, dtype, device)
    }
    fn has(&self, name: &str) -> bool {
        self.source(name).has(name)
    }
    fn native(&self, name: &str) -> Result<Option<NativeMatrix>> {
        self.source(name).native(name)
    }
    // A linear layer is routed whole by its weight's name, so a step's own LinearOp (a LoRA
    // delta, a quantized block matmul) comes with it.
    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        self.source(&format!("{prefix}.weight")).linear(prefix, bias, dtype, device)
    }
    fn dense_weight(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.source(&format!("{prefix}.weight")).dense_weight(prefix, dtype, device)
    }
    fn has_linear(&self, prefix: &str) -> bool {
        self.source(&format!("{prefix}.weight")).has_linear(prefix)
    }
}

/// A source that notes the name of every tensor the decoder loads from it.
pub struct Recorder<'a> {
    pub inner: &'a dyn WeightSource,
    names: Mutex<BTreeSet<String>>,
}

impl<'a> Recorder<'a> {
    pub fn new(inner: &'a dyn WeightSource) -> Self {
        Recorder { inner, names: Mutex::new(BTreeSet::new()) }
    }

    /// The names loaded so far, sorted.
    pub fn names(&self) -> Vec<String> {
        self.names.lock().map(|n| n.iter().cloned().collect()).unwrap_or_default()
    }

    fn note(&self, name: String) {
        if let Ok(mut n) = self.names.lock() {
            n.insert(name);
        }
    }
}

impl WeightSource for Recorder<'_> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.note(name.to_string());
        self.inner.tensor(name, dtype, device)
    }
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
    fn native(&self, name: &str) -> Result<Option<NativeMatrix>> {
        self.note(name.to_string());
        self.inner.native(name)
    }
    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        self.note(format!("{prefix}.weight"));
        if bias {
            self.note(format!("{prefix}.bias"));
        }
        self.inner.linear(prefix, bias, dtype, device)
    }
    fn dense_weight(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.note(format!("{prefix}.weight"));
        self.inner.dense_weight(prefix, dtype, device)
    }
    fn has_linear(&self, prefix: &str) -> bool {
        self.inner.has_linear(prefix)
    }
}
