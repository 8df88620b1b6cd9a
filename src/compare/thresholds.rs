//! Pass / warn / fail thresholds for `compare`, each with where its default comes from.
//! Overridable from a TOML file (`--thresholds FILE`) whose keys are the field names.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Mean per-token KL (nats). llama.cpp's published Llama-3-8B values: Q8_0 0.0014, Q4_K_M
    /// 0.031, Q2_K 0.445. A sound 4-bit quant stays under the warning; Q2_K-level damage warns;
    /// ten times that is broken.
    pub kl_mean_warn: f64,
    pub kl_mean_fail: f64,
    /// 99th percentile KL: catches a few destroyed positions a healthy mean hides.
    pub kl_p99_warn: f64,
    pub kl_p99_fail: f64,
    /// Same-top-token rate. Published: Q4_K_M 91.9 %, Q2_K 71.1 %.
    pub top1_warn: f64,
    pub top1_fail: f64,
    /// PPL(cand) / PPL(ref) on the reference answers.
    pub ppl_ratio_warn: f64,
    pub ppl_ratio_fail: f64,
    /// Mean P(end-of-turn) where the reference turn ends, candidate relative to reference.
    /// Applied only when the reference itself ends turns (mean P ≥ `eos_ref_min`).
    pub eos_ratio_warn: f64,
    pub eos_ratio_fail: f64,
    pub eos_ref_min: f64,
    /// Drop in the share of prompts whose greedy generation stops (reference − candidate).
    pub stop_drop_warn: f64,
    pub stop_drop_fail: f64,
    /// Relative L2 error of a layer's hidden state that counts as "this layer broke it".
    pub layer_rel_err: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            kl_mean_warn: 0.05,
            kl_mean_fail: 0.5,
            kl_p99_warn: 1.0,
            kl_p99_fail: 5.0,
            top1_warn: 0.90,
            top1_fail: 0.70,
            ppl_ratio_warn: 1.10,
            ppl_ratio_fail: 1.50,
            eos_ratio_warn: 0.8,
            eos_ratio_fail: 0.5,
            eos_ref_min: 0.5,
            stop_drop_warn: 0.0,
            stop_drop_fail: 0.25,
            // A 4-bit quant's per-layer error on small models is a few percent; 10 % means the
            // layer no longer computes the same function.
            layer_rel_err: 0.10,
        }
    }
}

impl Thresholds {
    pub fn load(path: &Path) -> Result<Thresholds> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::Field { path: path.to_path_buf(), field: "thresholds".into(), detail: e.to_string() })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

/// One metric judged against its thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    pub metric: &'static str,
    pub value: f64,
    pub warn: f64,
    pub fail: f64,
    pub status: Status,
    pub note: String,
}

/// Larger is worse.
pub fn above(metric: &'static str, value: f64, warn: f64, fail: f64, note: impl Into<String>) -> Judgement {
    let status = if value.is_nan() || value > fail {
        Status::Fail
    } else if value > warn {
        Status::Warn
    } else {
        Status::Pass
    };
    Judgement { metric, value, warn, fail, status, note: note.into() }
}

/// Smaller is worse.
pub fn below(metric: &'static str, value: f64, warn: f64, fail: f64, note: impl Into<String>) -> Judgement {
    let status = if value.is_nan() || value < fail {
        Status::Fail
    } else if value < warn {
        Status::Warn
    } else {
        Status::Pass
    };
    Judgement { metric, value, warn, fail, status, note: note.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_and_nan() {
        assert_eq!(above("kl", 0.01, 0.05, 0.5, "").status, Status::Pass);
        assert_eq!(above("kl", 0.1, 0.05, 0.5, "").status, Status::Warn);
        assert_eq!(above("kl", 1.0, 0.05, 0.5, "").status, Status::Fail);
        assert_eq!(above("kl", f64::NAN, 0.05, 0.5, "").status, Status::Fail);
        assert_eq!(below("top1", 0.95, 0.9, 0.7, "").status, Status::Pass);
        assert_eq!(below("top1", 0.5, 0.9, 0.7, "").status, Status::Fail);
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.toml");
        std::fs::write(&p, "kl_mean_fail = 0.2\n").unwrap();
        let t = Thresholds::load(&p).unwrap();
        assert_eq!(t.kl_mean_fail, 0.2);
        assert_eq!(t.kl_mean_warn, Thresholds::default().kl_mean_warn);
        std::fs::write(&p, "kl_mean = 0.2\n").unwrap();
        let e = Thresholds::load(&p).unwrap_err().to_string();
        assert!(e.contains("t.toml") && e.contains("kl_mean"), "{e}");
    }
}
