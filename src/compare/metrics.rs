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
