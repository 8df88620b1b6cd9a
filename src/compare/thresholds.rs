//! The metrics `compare` judges (`Metric`, one name shared by thresholds, evidence, JSON and
//! reports) and their pass / warn / fail thresholds, each with where its default comes from.
//! Overridable from a TOML file (`--thresholds FILE`) whose keys are `<metric>_warn` /
//! `<metric>_fail` (the spellings of earlier versions are accepted as aliases), and from a
//! manifest's `thresholds` tables (`Thresholds::overlay`).
//!
//! Every value is validated when it is read: finite, inside the range its metric can take, and
//! warn before fail. A NaN, infinite or inverted threshold never trips, so it would pass anything
//! silently; it is an error naming the file and the key instead.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::read_capped_text;
pub use crate::verdict::Verdict;

/// Thresholds files larger than this are refused: the file holds two dozen `key = number` lines;
/// 1 MiB leaves room for any amount of comments.
const MAX_THRESHOLDS_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize)]
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
    pub p_eos_ratio_warn: f64,
    pub p_eos_ratio_fail: f64,
    pub p_eos_ref_min: f64,
    /// Drop in the share of prompts whose greedy generation stops (reference − candidate).
    pub stop_rate_drop_warn: f64,
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

/// The spellings of earlier versions, and the key each now is.
pub const ALIASES: [(&str, &str); 5] = [
    ("eos_ratio_warn", "p_eos_ratio_warn"),
    ("eos_ratio_fail", "p_eos_ratio_fail"),
    ("eos_ref_min", "p_eos_ref_min"),
    ("stop_drop_warn", "stop_rate_drop_warn"),
    ("stop_drop_fail", "stop_rate_drop_fail"),
];

const INF: f64 = f64::INFINITY;

/// Every key, the closed range its value may take, and why. The side of each bound is fixed by one
/// rule: the reference compared with itself (KL 0, top-1 1, every ratio 1, no drop in stops) must
/// pass; shares and probabilities lie in [0, 1].
pub const RANGES: [(&str, f64, f64, &str); 14] = [
    ("kl_mean_warn", 0.0, INF, "a KL divergence is never negative"),
    ("kl_mean_fail", 0.0, INF, "a KL divergence is never negative"),
    ("kl_p99_warn", 0.0, INF, "a KL divergence is never negative"),
    ("kl_p99_fail", 0.0, INF, "a KL divergence is never negative"),
    ("top1_warn", 0.0, 1.0, "it is a share of positions"),
    ("top1_fail", 0.0, 1.0, "it is a share of positions"),
    ("ppl_ratio_warn", 1.0, INF, "below 1 the reference compared with itself (ratio 1) would cross it"),
    ("ppl_ratio_fail", 1.0, INF, "below 1 the reference compared with itself (ratio 1) would cross it"),
    ("p_eos_ratio_warn", 0.0, 1.0, "it is a ratio of probabilities, and above 1 the reference compared with itself would cross it"),
    ("p_eos_ratio_fail", 0.0, 1.0, "it is a ratio of probabilities, and above 1 the reference compared with itself would cross it"),
    ("p_eos_ref_min", 0.0, 1.0, "it is a probability"),
    ("stop_rate_drop_warn", 0.0, 1.0, "it is a drop in a share of prompts, and below 0 the reference compared with itself would cross it"),
    ("stop_rate_drop_fail", 0.0, 1.0, "it is a drop in a share of prompts, and below 0 the reference compared with itself would cross it"),
    ("layer_rel_err", 0.0, INF, "a relative error is never negative"),
];

impl Thresholds {
    /// Reads a `--thresholds` TOML file over the defaults (a regular file of at most
    /// `MAX_THRESHOLDS_BYTES`, through `format::read_capped`); an error names the file and the key.
    pub fn load(path: &Path) -> Result<Thresholds> {
        Thresholds::default().load_over(path)
    }

    /// These thresholds with a thresholds file's keys applied (`bisect --thresholds` over a
    /// manifest's); errors name the file and the key.
    pub fn load_over(&self, path: &Path) -> Result<Thresholds> {
        let text = read_capped_text(path, MAX_THRESHOLDS_BYTES, "a thresholds file")?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| Error::Field {
            path: path.to_path_buf(),
            field: "thresholds".into(),
            detail: e.to_string(),
        })?;
        self.overlay(&table).map_err(|(field, detail)| Error::Field { path: path.to_path_buf(), field, detail })
    }

    /// These thresholds with the keys of `set` applied (old spellings accepted), then validated.
    /// A bound `set` leaves alone follows one it moves past it (`kl_mean_fail = 0.0` alone lowers
    /// the inherited warning to 0.0 too); two bounds `set` gives must be in order. Errors are
    /// `(key, what is wrong)`.
    pub fn overlay(&self, set: &toml::Table) -> std::result::Result<Thresholds, (String, String)> {
        let mut t = self.clone();
        // Canonical key → the spelling `set` used, for errors.
        let mut given: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in set {
            let key = ALIASES.iter().find(|(old, _)| old == k).map_or(k.as_str(), |(_, new)| new);
            let Some(slot) = t.get_mut(key) else {
                return Err((k.clone(), format!("is not a threshold key (known: {})", KEYS.join(", "))));
            };
            *slot = match v {
                toml::Value::Float(x) => *x,
                toml::Value::Integer(i) => *i as f64,
                other => return Err((k.clone(), format!("must be a number, found {} {other}", other.type_str()))),
            };
            if given.insert(key, k).is_some() {
                return Err((k.clone(), format!("is given twice (as `{key}` and by its old spelling)")));
            }
        }
        for (key, spelled) in &given {
            let (_, lo, hi, why) = RANGES.iter().find(|r| r.0 == *key).expect("every key has a range");
            check_range(t.value(key), *lo, *hi, why).map_err(|d| (spelled.to_string(), d))?;
        }
        for m in Metric::ALL {
            let (w_key, f_key) = (format!("{}_warn", m.name()), format!("{}_fail", m.name()));
            let (Some(w), Some(f)) = (t.get(&w_key), t.get(&f_key)) else { continue };
            if in_order(m, w, f) {
                continue;
            }
            match (given.get(w_key.as_str()), given.get(f_key.as_str())) {
                (Some(w_spelled), Some(f_spelled)) => return Err((w_spelled.to_string(), order_error(m, w_spelled, w, f_spelled, f))),
                (Some(_), None) => *t.get_mut(&f_key).expect("a threshold key") = w,
                _ => *t.get_mut(&w_key).expect("a threshold key") = f,
            }
        }
        t.validate()?;
        Ok(t)
    }

    /// Every value finite, in range, and each metric's warning before its failure.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        for (key, lo, hi, why) in &RANGES {
            check_range(self.value(key), *lo, *hi, why).map_err(|d| (key.to_string(), d))?;
        }
        for m in Metric::ALL {
            let (w_key, f_key) = (format!("{}_warn", m.name()), format!("{}_fail", m.name()));
            if let (Some(w), Some(f)) = (self.get(&w_key), self.get(&f_key)) {
                if !in_order(m, w, f) {
                    return Err((w_key.clone(), order_error(m, &w_key, w, &f_key, f)));
                }
            }
        }
        Ok(())
    }

    /// A key of `RANGES` (always present).
    fn value(&self, key: &str) -> f64 {
        self.get(key).unwrap_or(f64::NAN)
    }
}

/// `KEYS` and by-name access to the fields, from one list.
macro_rules! keys {
    ($($k:ident),* $(,)?) => {
        /// Every key, as files spell it.
        pub const KEYS: &[&str] = &[$(stringify!($k)),*];
        impl Thresholds {
            fn get(&self, key: &str) -> Option<f64> {
                match key {
                    $(stringify!($k) => Some(self.$k),)*
                    _ => None,
                }
            }
            fn get_mut(&mut self, key: &str) -> Option<&mut f64> {
                match key {
                    $(stringify!($k) => Some(&mut self.$k),)*
                    _ => None,
                }
            }
        }
    };
}

keys! {
    kl_mean_warn, kl_mean_fail, kl_p99_warn, kl_p99_fail, top1_warn, top1_fail, ppl_ratio_warn, ppl_ratio_fail,
    p_eos_ratio_warn, p_eos_ratio_fail, p_eos_ref_min, stop_rate_drop_warn, stop_rate_drop_fail, layer_rel_err,
}

/// Finite and inside `[lo, hi]`.
fn check_range(x: f64, lo: f64, hi: f64, why: &str) -> std::result::Result<(), String> {
    if x.is_nan() {
        return Err("is NaN: a NaN threshold never trips, so the gate would pass anything".into());
    }
    if x.is_infinite() {
        return Err(format!("is {x}: an infinite threshold disables its gate; give a finite number"));
    }
    if x < lo || x > hi {
        let range = if hi.is_infinite() { format!("[{lo}, ∞)") } else { format!("[{lo}, {hi}]") };
        return Err(format!("is {x}, outside {range}: {why}"));
    }
    Ok(())
}

/// The warning comes before the failure: `warn ≤ fail` where larger is worse, `warn ≥ fail` where
/// smaller is.
fn in_order(m: Metric, warn: f64, fail: f64) -> bool {
    if m.smaller_is_worse() {
        warn >= fail
    } else {
        warn <= fail
    }
}

fn order_error(m: Metric, w_key: &str, w: f64, f_key: &str, f: f64) -> String {
    if m.smaller_is_worse() {
        format!("is {w}, below {f_key} = {f}: smaller is worse for `{m}`, so the warning must come first ({w_key} ≥ {f_key})")
    } else {
        format!("is {w}, above {f_key} = {f}: larger is worse for `{m}`, so the warning must come first ({w_key} ≤ {f_key})")
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
    /// Drift of the distribution (KL, top-1, PPL), as opposed to behaviour (EOS at turn end,
    /// greedy stops, NaN/Inf, tokenization): what a training step is meant to change.
    pub fn is_drift(self) -> bool {
        matches!(self, Metric::KlMean | Metric::KlP99 | Metric::Top1 | Metric::PplRatio)
    }

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

    /// Smaller values are worse (`top1`, `p_eos_ratio`: shares and ratios kept near 1 from
    /// below); for every other metric larger is worse.
    pub fn smaller_is_worse(self) -> bool {
        matches!(self, Metric::Top1 | Metric::PEosRatio)
    }

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
        if m.smaller_is_worse() {
            below(m, value, warn, fail, note)
        } else {
            above(m, value, warn, fail, note)
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

    /// `KEYS`, `RANGES` and the serialized fields name the same keys, and the defaults validate.
    #[test]
    fn every_key_has_a_range_and_the_defaults_are_valid() {
        let fields: Vec<String> = toml::Value::try_from(Thresholds::default()).unwrap().as_table().unwrap().keys().cloned().collect();
        let mut keys: Vec<String> = KEYS.iter().map(|k| k.to_string()).collect();
        let mut ranged: Vec<String> = RANGES.iter().map(|r| r.0.to_string()).collect();
        keys.sort();
        ranged.sort();
        let mut fields = fields;
        fields.sort();
        assert_eq!(keys, fields);
        assert_eq!(ranged, fields);
        Thresholds::default().validate().unwrap();
    }

    fn overlay(text: &str) -> std::result::Result<Thresholds, (String, String)> {
        Thresholds::default().overlay(&toml::from_str(text).unwrap())
    }

    /// Issue 12: `kl_mean_fail = nan` (or inf, negative, inverted) disabled the gate silently.
    #[test]
    fn non_finite_out_of_range_and_inverted_thresholds_are_refused() {
        for (text, key, says) in [
            ("kl_mean_fail = nan", "kl_mean_fail", "NaN"),
            ("kl_p99_warn = inf", "kl_p99_warn", "infinite"),
            ("ppl_ratio_fail = -inf", "ppl_ratio_fail", "infinite"),
            ("kl_mean_warn = -0.1", "kl_mean_warn", "outside [0, ∞)"),
            ("top1_fail = 1.5", "top1_fail", "outside [0, 1]"),
            ("p_eos_ref_min = 2", "p_eos_ref_min", "probability"),
            ("stop_rate_drop_fail = -0.5", "stop_rate_drop_fail", "outside [0, 1]"),
            ("ppl_ratio_warn = 0.9", "ppl_ratio_warn", "compared with itself"),
            ("layer_rel_err = nan", "layer_rel_err", "NaN"),
            ("kl_mean_warn = 0.6\nkl_mean_fail = 0.5", "kl_mean_warn", "kl_mean_warn ≤ kl_mean_fail"),
            ("top1_warn = 0.6\ntop1_fail = 0.8", "top1_warn", "top1_warn ≥ top1_fail"),
            ("p_eos_ratio_warn = 0.3\np_eos_ratio_fail = 0.4", "p_eos_ratio_warn", "smaller is worse"),
            ("kl_mean_fail = \"0.5\"", "kl_mean_fail", "must be a number"),
            ("eos_ratio_fail = 0.3\np_eos_ratio_fail = 0.3", "p_eos_ratio_fail", "twice"),
        ] {
            let (k, detail) = overlay(text).expect_err(text);
            assert!(k == key || (key == "p_eos_ratio_fail" && k == "eos_ratio_fail"), "{text}: key {k}");
            assert!(detail.contains(says), "{text}: {detail}");
        }
    }

    /// A bound the file does not give follows one it gives past it; equal bounds are fine.
    #[test]
    fn an_inherited_bound_follows_the_one_given() {
        let t = overlay("kl_mean_fail = 0.0").unwrap();
        assert_eq!((t.kl_mean_warn, t.kl_mean_fail), (0.0, 0.0));
        let t = overlay("kl_mean_warn = 2.0").unwrap();
        assert_eq!((t.kl_mean_warn, t.kl_mean_fail), (2.0, 2.0));
        let t = overlay("top1_fail = 0.95").unwrap();
        assert_eq!((t.top1_warn, t.top1_fail), (0.95, 0.95));
        let t = overlay("kl_mean_warn = 0.1\nkl_mean_fail = 0.1\ntop1_warn = 1\nstop_rate_drop_fail = 0").unwrap();
        assert_eq!((t.kl_mean_warn, t.top1_warn, t.stop_rate_drop_warn), (0.1, 1.0, 0.0));
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
