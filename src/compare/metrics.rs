//! Per-token metrics between a reference and a candidate distribution, as pure functions over
//! logit rows. Accumulation is f64 from a stable log-softmax (max-subtracted log-sum-exp), so a
//! 150k+ vocabulary loses nothing. Definitions follow llama.cpp's `--kl-divergence` where it has
//! one (see docs/metrics.md).

/// What one scored position yields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenScore {
    /// KL(ref ‖ cand) in nats; NaN when either row has a NaN, +∞ when the candidate gives zero
    /// probability to a token the reference does not.
    pub kl: f64,
    pub top1_agree: bool,
    /// |top-5(ref) ∩ top-5(cand)| / 5.
    pub top5_overlap: f64,
    /// p_cand(target) − p_ref(target).
    pub delta_p: f64,
    /// −log p(target) under each.
    pub nll_ref: f64,
    pub nll_cand: f64,
    /// NaN / ±Inf logits in the candidate row (the reference's are counted by the caller).
    pub cand_nonfinite: usize,
}

/// Log-softmax in f64. A row with a NaN yields all-NaN; −∞ logits stay −∞.
pub fn log_softmax(row: &[f32]) -> Vec<f64> {
    if row.iter().any(|x| x.is_nan()) {
        return vec![f64::NAN; row.len()];
    }
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    if max == f64::INFINITY {
        // +∞ logit: all mass on those entries.
        let n = row.iter().filter(|&&x| x == f32::INFINITY).count() as f64;
        return row.iter().map(|&x| if x == f32::INFINITY { -(n.ln()) } else { f64::NEG_INFINITY }).collect();
    }
    if max == f64::NEG_INFINITY {
        return vec![f64::NAN; row.len()];
    }
    let sum: f64 = row.iter().map(|&x| ((x as f64) - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x as f64 - lse).collect()
}

/// KL(p ‖ q) = Σ p (log p − log q) from log-probabilities.
pub fn kl(lp: &[f64], lq: &[f64]) -> f64 {
    let mut acc = 0.0f64;
    for (&a, &b) in lp.iter().zip(lq) {
        if a.is_nan() || b.is_nan() {
            return f64::NAN;
        }
        if a == f64::NEG_INFINITY {
            continue; // p = 0 contributes nothing
        }
        acc += a.exp() * (a - b);
    }
    // Rounding can leave −1e-17 for identical rows.
    acc.max(0.0)
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || (row[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest entries (ties by lower index), NaN last.
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    let key = |i: &usize| if row[*i].is_nan() { f32::NEG_INFINITY } else { row[*i] };
    let k = k.min(row.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    let mut top = idx[..k].to_vec();
    top.sort_by(|a, b| key(b).total_cmp(&key(a)).then(a.cmp(b)));
    top
}

/// Scores one position: reference row, candidate row, the token that actually comes next.
pub fn score_token(r: &[f32], c: &[f32], target: usize) -> TokenScore {
    let lr = log_softmax(r);
    let lc = log_softmax(c);
    let tr = top_k(r, 5);
    let tc = top_k(c, 5);
    let overlap = tr.iter().filter(|i| tc.contains(i)).count() as f64 / tr.len().max(1) as f64;
    let p_ref = lr.get(target).copied().unwrap_or(f64::NAN);
    let p_cand = lc.get(target).copied().unwrap_or(f64::NAN);
    TokenScore {
        kl: kl(&lr, &lc),
        top1_agree: argmax(r) == argmax(c),
        top5_overlap: overlap,
        delta_p: p_cand.exp() - p_ref.exp(),
        nll_ref: -p_ref,
        nll_cand: -p_cand,
        cand_nonfinite: c.iter().filter(|x| !x.is_finite()).count(),
    }
}

/// Probability of `id` under a logit row.
pub fn prob(row: &[f32], id: usize) -> f64 {
    log_softmax(row).get(id).map(|l| l.exp()).unwrap_or(f64::NAN)
}

/// Percentile with linear interpolation at f·(n−1) over sorted values (llama.cpp's rule).
/// NaNs must be removed by the caller.
pub fn percentile(sorted: &[f64], f: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = f.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let w = pos - lo as f64;
    sorted[lo] * (1.0 - w) + sorted[hi] * w
}

/// Summary of a distribution of per-token values.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    pub median: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// Values that were NaN (excluded from the statistics above, and a failure on their own).
    pub nan: usize,
}

pub fn summarize(values: &[f64]) -> Summary {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    let nan = values.len() - v.len();
    if v.is_empty() {
        return Summary { nan, ..Summary::default() };
    }
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Summary {
        n: v.len(),
        mean,
        median: percentile(&v, 0.5),
        p90: percentile(&v, 0.9),
        p99: percentile(&v, 0.99),
        p999: percentile(&v, 0.999),
        max: *v.last().unwrap(),
        nan,
    }
}

/// A mean with its standard error and the count it is over.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub value: f64,
    /// `None` where llama.cpp prints 0: 10 values or fewer, or no spread.
    pub se: Option<f64>,
    pub n: usize,
}

/// Mean and standard error of the mean from Σx, Σx² over `n` values, as llama.cpp's
/// `mean_and_uncertainty` (tools/perplexity/perplexity.cpp): √((Σx²/n − mean²)/(n − 1)), only
/// for n > 10 and a positive variance.
pub fn mean_and_se(sum: f64, sum2: f64, n: usize) -> (f64, Option<f64>) {
    if n < 1 {
        return (f64::NAN, None);
    }
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    (mean, (var > 0.0 && n > 10).then(|| (var / (n - 1) as f64).sqrt()))
}

/// llama.cpp's `covariance` of two per-token series (0 for fewer than 10 values).
fn covariance(sa: f64, sb: f64, sab: f64, n: usize) -> f64 {
    if n < 10 {
        return 0.0;
    }
    (sab / n as f64 - (sa / n as f64) * (sb / n as f64)) / (n - 1) as f64
}

/// Every token-level rate and mean with its standard error, by llama.cpp's `--kl-divergence`
/// formulas, so the two tools' numbers can be set side by side.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Estimates {
    /// `Mean KLD ± SE` (positions with a NaN KL excluded; they fail the verdict on their own).
    pub kl_mean: Estimate,
    /// `Same top p ± SE`: √(p(1 − p)/(n − 1)).
    pub top1: Estimate,
    /// `Mean ln(PPL(Q)/PPL(base)) ± SE`: √(se_q² + se_b² − 2 cov).
    pub ln_ppl_ratio: Estimate,
    /// `Mean PPL(Q)/PPL(base) ± SE`: ratio · se(ln ratio).
    pub ppl_ratio: Estimate,
    /// `Mean Δp ± SE` (as a fraction, not %).
    pub delta_p_mean: Estimate,
    /// `RMS Δp ± SE`: √mean(Δp²), SE 0.5/rms · se(Δp²).
    pub delta_p_rms: Estimate,
}

/// The estimates over every scored token.
pub fn estimates(scores: &[TokenScore]) -> Estimates {
    let n = scores.len();
    let (mut kl, mut kl2, mut nk) = (0.0, 0.0, 0usize);
    let (mut a, mut a2, mut b, mut b2, mut ab) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let (mut dp, mut dp2, mut dp4, mut nd) = (0.0, 0.0, 0.0, 0usize);
    for s in scores {
        if !s.kl.is_nan() {
            kl += s.kl;
            kl2 += s.kl * s.kl;
            nk += 1;
        }
        a += s.nll_cand;
        a2 += s.nll_cand * s.nll_cand;
        b += s.nll_ref;
        b2 += s.nll_ref * s.nll_ref;
        ab += s.nll_cand * s.nll_ref;
        if !s.delta_p.is_nan() {
            dp += s.delta_p;
            dp2 += s.delta_p * s.delta_p;
            dp4 += s.delta_p.powi(4);
            nd += 1;
        }
    }
    let est = |(value, se): (f64, Option<f64>), n: usize| Estimate { value, se, n };
    let kl_mean = est(mean_and_se(kl, kl2, nk), nk);
    let same = scores.iter().filter(|s| s.top1_agree).count() as f64;
    let p = if n > 0 { same / n as f64 } else { f64::NAN };
    let top1 = Estimate { value: p, se: (n > 1).then(|| (p * (1.0 - p) / (n - 1) as f64).sqrt()), n };
    let (lq, sq) = mean_and_se(a, a2, n);
    let (lb, sb) = mean_and_se(b, b2, n);
    let ln_se = match (sq, sb) {
        (Some(x), Some(y)) => Some((x * x + y * y - 2.0 * covariance(a, b, ab, n)).max(0.0).sqrt()),
        _ => None,
    };
    let ln_ppl_ratio = Estimate { value: lq - lb, se: ln_se, n };
    let ratio = (lq - lb).exp();
    let ppl_ratio = Estimate { value: ratio, se: ln_se.map(|s| ratio * s), n };
    let delta_p_mean = est(mean_and_se(dp, dp2, nd), nd);
    let (mse, mse_se) = mean_and_se(dp2, dp4, nd);
    let rms = mse.sqrt();
    let delta_p_rms = Estimate { value: rms, se: mse_se.filter(|_| rms > 0.0).map(|s| 0.5 / rms * s), n: nd };
    Estimates { kl_mean, top1, ln_ppl_ratio, ppl_ratio, delta_p_mean, delta_p_rms }
}

/// The percentiles a summary shows that `n` values cannot resolve: a percentile f needs at least
/// one value above it, n·(1 − f) ≥ 1 (p99.9 over 24 tokens is the maximum again, interpolated).
pub fn unresolved_percentiles(n: usize) -> Vec<String> {
    [("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)]
        .iter()
        .filter(|(_, f)| (n as f64) * (1.0 - f) < 1.0 - 1e-9)
        .map(|(name, f)| format!("{name} over {n} tokens is not resolved (it needs at least {:.0})", (1.0 / (1.0 - f)).round()))
        .collect()
}

/// 3 significant decimals, or scientific notation for small values.
pub fn fmt_num(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference values computed in Python float64 (math.exp/log, independent of this code):
    //   p = softmax([1, 2, 3]); q = softmax([1, 1, 1])
    //   sum(p * (log p - log q)) = 0.2662167068281707
    #[test]
    fn kl_matches_python_float64() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let lq = log_softmax(&[1.0, 1.0, 1.0]);
        assert!((kl(&lp, &lq) - 0.266_216_706_828_170_7).abs() < 1e-12, "{}", kl(&lp, &lq));
        assert_eq!(kl(&lp, &lp), 0.0);
    }

    #[test]
    fn log_softmax_is_stable_for_large_logits_and_vocab() {
        let mut row = vec![-1.0e4f32; 200_000];
        row[7] = 1.0e4;
        let l = log_softmax(&row);
        assert!(l[7].abs() < 1e-12);
        assert!(l.iter().all(|x| x.is_finite()));
    }

    #[test]
    fn nan_and_inf_rows() {
        let lp = log_softmax(&[0.0, 1.0]);
        assert!(kl(&lp, &log_softmax(&[f32::NAN, 1.0])).is_nan());
        // The candidate gives zero probability to a token the reference likes: KL is infinite.
        assert_eq!(kl(&lp, &log_softmax(&[f32::NEG_INFINITY, 1.0])), f64::INFINITY);
        // A reference zero contributes nothing.
        let lz = log_softmax(&[f32::NEG_INFINITY, 1.0]);
        assert_eq!(kl(&lz, &lp), -lp[1]);
        let s = score_token(&[0.0, 1.0], &[f32::NAN, f32::INFINITY], 1);
        assert_eq!(s.cand_nonfinite, 2);
        assert!(s.kl.is_nan());
    }

    #[test]
    fn token_score_fields() {
        // by hand: softmax([0, ln 3]) = [0.25, 0.75]; softmax([ln 3, 0]) = [0.75, 0.25]
        let r = [0.0, 3f32.ln()];
        let c = [3f32.ln(), 0.0];
        let s = score_token(&r, &c, 1);
        assert!(!s.top1_agree);
        assert!((s.delta_p - (0.25 - 0.75)).abs() < 1e-6);
        assert!((s.nll_ref - (-(0.75f64).ln())).abs() < 1e-6);
        assert!((s.nll_cand - (-(0.25f64).ln())).abs() < 1e-6);
        // KL = 0.25 ln(1/3) + 0.75 ln 3 = 0.5 ln 3
        assert!((s.kl - 0.5 * 3f64.ln()).abs() < 1e-6);
        assert_eq!(s.top5_overlap, 1.0);
    }

    #[test]
    fn top_k_and_overlap() {
        let r = [0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.8];
        assert_eq!(top_k(&r, 3), vec![1, 6, 4]);
        let c = [0.9, 0.1, 0.5, 0.3, 0.7, 0.2, 0.8];
        let s = score_token(&r, &c, 0);
        // top5(r) = {1,6,4,2,3}; top5(c) = {0,6,4,2,3}: 4 of 5 shared.
        assert!((s.top5_overlap - 0.8).abs() < 1e-12);
    }

    /// Standard errors by llama.cpp's formulas, values computed in Python float64: for
    /// kl = [0.1·(i+1) for i in range(12)], statistics.stdev(kl)/sqrt(12) = 0.10408329997330665,
    /// which is llama.cpp's √(var_pop/(n − 1)) (stdev² = var_pop·n/(n − 1)).
    #[test]
    fn standard_errors_follow_llama_cpp() {
        let kl: Vec<f64> = (0..12).map(|i| 0.1 * (i + 1) as f64).collect();
        let (m, se) = mean_and_se(kl.iter().sum(), kl.iter().map(|x| x * x).sum(), kl.len());
        assert!((m - 0.65).abs() < 1e-12);
        assert!((se.unwrap() - 0.104_083_299_973_306_64).abs() < 1e-12, "{se:?}");
        // Ten values or fewer: llama.cpp prints 0; here there is no SE.
        assert_eq!(mean_and_se(1.0, 1.0, 10).1, None);
        let t = |kl: f64, agree: bool, nll_ref: f64, nll_cand: f64, dp: f64| TokenScore {
            kl,
            top1_agree: agree,
            top5_overlap: 1.0,
            delta_p: dp,
            nll_ref,
            nll_cand,
            cand_nonfinite: 0,
        };
        let scores: Vec<TokenScore> =
            (0..20).map(|i| t(0.01 * i as f64, i % 4 != 0, 1.0 + 0.1 * i as f64, 1.2 + 0.1 * i as f64, 0.0)).collect();
        let e = estimates(&scores);
        // Same top p = 0.75 over 20: √(0.75·0.25/19) = 0.09933992677987828.
        assert!((e.top1.value - 0.75).abs() < 1e-12 && (e.top1.se.unwrap() - 0.099_339_926_779_878_28).abs() < 1e-12);
        // nll_cand − nll_ref is 0.2 everywhere: the ratio is e^0.2 with no uncertainty (the two
        // series are perfectly correlated, so their covariance cancels their variances).
        assert!((e.ln_ppl_ratio.value - 0.2).abs() < 1e-12 && (e.ppl_ratio.value - 0.2f64.exp()).abs() < 1e-12);
        assert!(e.ln_ppl_ratio.se.unwrap() < 1e-6, "{:?}", e.ln_ppl_ratio);
        assert_eq!(e.delta_p_rms.value, 0.0);
        assert_eq!((e.kl_mean.n, e.top1.n), (20, 20));
        assert_eq!(
            unresolved_percentiles(24),
            vec![
                "p99 over 24 tokens is not resolved (it needs at least 100)",
                "p99.9 over 24 tokens is not resolved (it needs at least 1000)"
            ]
        );
        assert!(unresolved_percentiles(1000).is_empty());
    }

    #[test]
    fn percentiles_interpolate_like_llama_cpp() {
        // numpy.percentile([1,2,3,4], 90) (linear method) = 1 + 0.9·3 = 3.7
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!((percentile(&v, 0.9) - 3.7).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.5), 2.5);
        let s = summarize(&[4.0, f64::NAN, 1.0, 3.0, 2.0]);
        assert_eq!((s.n, s.nan, s.max, s.mean), (4, 1, 4.0, 2.5));
        assert!((s.p99 - 3.97).abs() < 1e-12);
    }
}
