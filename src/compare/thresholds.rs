//! The metrics `compare` judges (`Metric`, one name shared by thresholds, evidence, JSON and
//! reports) and their pass / warn / fail thresholds, each with where its default comes from.
//! Overridable from a TOML file (`--thresholds FILE`) whose keys are `<metric>_warn` /
//! `<metric>_fail` (the spellings of earlier versions are accepted as aliases).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::read_capped_text;
pub use crate::verdict::Verdict;

/// Thresholds files larger than this are refused: the file holds two dozen `key = number` lines;
/// 1 MiB leaves room for any amount of comments.
const MAX_THRESHOLDS_BYTES: u64 = 1 << 20;

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
    /// Applied only when the reference itself ends turns (mean P ≥ `p_eos_ref_min`).
    #[serde(alias = "eos_ratio_warn")]
    pub p_eos_ratio_warn: f64,
    #[serde(alias = "eos_ratio_fail")]
    pub p_eos_ratio_fail: f64,
    #[serde(alias = "eos_ref_min")]
    pub p_eos_ref_min: f64,
    /// Drop in the share of prompts whose greedy generation stops (reference − candidate).
    #[serde(alias = "stop_drop_warn")]
    pub stop_rate_drop_warn: f64,
    #[serde(alias = "stop_drop_fail")]
    pub stop_rate_drop_fail: f64,
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
            p_eos_ratio_warn: 0.8,
            p_eos_ratio_fail: 0.5,
            p_eos_ref_min: 0.5,
            stop_rate_drop_warn: 0.0,
            stop_rate_drop_fail: 0.25,
            // A 4-bit quant's per-layer error on small models is a few percent; 10 % means the
            // layer no longer computes the same function.
            layer_rel_err: 0.10,
        }
    }
}

impl Thresholds {
    /// Reads a thresholds TOML file (a regular file of at most `MAX_THRESHOLDS_BYTES`, through
    /// `format::read_capped`).
    pub fn load(path: &Path) -> Result<Thresholds> {
        let text = read_capped_text(path, MAX_THRESHOLDS_BYTES, "a thresholds file")?;
        toml::from_str(&text).map_err(|e| Error::Field { path: path.to_path_buf(), field: "thresholds".into(), detail: e.to_string() })
    }
}

/// A judged metric. The order is how telling a failure of it is, most telling first: evidence
/// lists failing metrics in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// NaN/Inf logits in either variant (fixed thresholds: any is a failure).
    NonfiniteLogits,
    /// Prompts the candidate's own tokenizer/template encode differently (any is a failure).
    PromptTokenization,
    PEosRatio,
    StopRateDrop,
    KlMean,
    KlP99,
    Top1,
    PplRatio,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::NonfiniteLogits,
        Metric::PromptTokenization,
        Metric::PEosRatio,
        Metric::StopRateDrop,
        Metric::KlMean,
        Metric::KlP99,
        Metric::Top1,
        Metric::PplRatio,
    ];

    /// The name in JSON, reports and threshold keys.
    pub fn name(self) -> &'static str {
        match self {
            Metric::NonfiniteLogits => "nonfinite_logits",
            Metric::PromptTokenization => "prompt_tokenization",
            Metric::PEosRatio => "p_eos_ratio",
            Metric::StopRateDrop => "stop_rate_drop",
            Metric::KlMean => "kl_mean",
            Metric::KlP99 => "kl_p99",
            Metric::Top1 => "top1",
            Metric::PplRatio => "ppl_ratio",
        }
    }
}

impl std::fmt::Display for Metric {
    /// Honours width and alignment (`{:<16}`), as a `&str` would.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl Thresholds {
    /// `(warn, fail)` for a metric; the two "any is a failure" metrics are `(0, 0)`.
    pub fn bounds(&self, m: Metric) -> (f64, f64) {
        match m {
            Metric::NonfiniteLogits | Metric::PromptTokenization => (0.0, 0.0),
            Metric::PEosRatio => (self.p_eos_ratio_warn, self.p_eos_ratio_fail),
            Metric::StopRateDrop => (self.stop_rate_drop_warn, self.stop_rate_drop_fail),
            Metric::KlMean => (self.kl_mean_warn, self.kl_mean_fail),
            Metric::KlP99 => (self.kl_p99_warn, self.kl_p99_fail),
            Metric::Top1 => (self.top1_warn, self.top1_fail),
            Metric::PplRatio => (self.ppl_ratio_warn, self.ppl_ratio_fail),
        }
    }

    /// Judges `value` of `m` against its bounds; larger is worse except for ratios kept near 1
    /// from below (`top1`, `p_eos_ratio`).
    pub fn judge(&self, m: Metric, value: f64, note: impl Into<String>) -> Judgement {
        let (warn, fail) = self.bounds(m);
        match m {
            Metric::Top1 | Metric::PEosRatio => below(m, value, warn, fail, note),
            _ => above(m, value, warn, fail, note),
        }
    }
}

/// One metric judged against its thresholds.
#[derive(Debug, Clone, Serialize)]
pub struct Judgement {
    pub metric: Metric,
    pub value: f64,
    pub warn: f64,
    pub fail: f64,
    pub status: Verdict,
    pub note: String,
}

/// Larger is worse.
fn above(metric: Metric, value: f64, warn: f64, fail: f64, note: impl Into<String>) -> Judgement {
    let status = if value.is_nan() || value > fail {
        Verdict::Fail
    } else if value > warn {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    Judgement { metric, value, warn, fail, status, note: note.into() }
}

/// Smaller is worse.
fn below(metric: Metric, value: f64, warn: f64, fail: f64, note: impl Into<String>) -> Judgement {
    let status = if value.is_nan() || value < fail {
        Verdict::Fail
    } else if value < warn {
        Verdict::Warn
    } else {
        Verdict::Pass
    };
    Judgement { metric, value, warn, fail, status, note: note.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_and_nan() {
        let t = Thresholds::default();
        assert_eq!(t.judge(Metric::KlMean, 0.01, "").status, Verdict::Pass);
        assert_eq!(t.judge(Metric::KlMean, 0.1, "").status, Verdict::Warn);
        assert_eq!(t.judge(Metric::KlMean, 1.0, "").status, Verdict::Fail);
        assert_eq!(t.judge(Metric::KlMean, f64::NAN, "").status, Verdict::Fail);
        assert_eq!(t.judge(Metric::Top1, 0.95, "").status, Verdict::Pass);
        assert_eq!(t.judge(Metric::Top1, 0.5, "").status, Verdict::Fail);
        assert_eq!(t.judge(Metric::NonfiniteLogits, 1.0, "").status, Verdict::Fail);
    }

    /// Every threshold key is `<metric>_warn` / `<metric>_fail` of a judged metric (or one of the
    /// two documented extras), so a key names what it bounds.
    #[test]
    fn threshold_keys_are_named_after_their_metric() {
        let v = toml::Value::try_from(Thresholds::default()).unwrap();
        for k in v.as_table().unwrap().keys() {
            let named = Metric::ALL.iter().any(|m| *k == format!("{}_warn", m.name()) || *k == format!("{}_fail", m.name()));
            assert!(named || k == "p_eos_ref_min" || k == "layer_rel_err", "threshold key `{k}` names no metric");
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.toml");
        std::fs::write(&p, "eos_ratio_fail = 0.3\nstop_drop_fail = 0.5\n").unwrap();
        let t = Thresholds::load(&p).unwrap();
        assert_eq!((t.p_eos_ratio_fail, t.stop_rate_drop_fail), (0.3, 0.5), "old spellings still load");
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
