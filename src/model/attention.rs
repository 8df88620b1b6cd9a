//! Attention on the CPU in f32, in blocks with an online softmax (FlashAttention's recurrence):
//! memory is linear in sequence length (one `Q_BLOCK × K_BLOCK` score tile per task, never
//! `heads × T × T`), every thread works, and the two matmuls of each tile run in `gemm`.
//!
//! Layout follows the projections: queries `[n, heads · head_dim]`, keys and values
//! `[t, kv_heads · head_dim]` (a KV cache grows by appending rows), output like the queries.

use rayon::prelude::*;

/// Queries per task.
const Q_BLOCK: usize = 128;
/// Keys per score tile.
const K_BLOCK: usize = 256;

/// What one attention call needs to know besides the tensors.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies q·k before any softcap.
    pub scale: f32,
    /// Gemma 2: `c · tanh(s / c)` on the scaled scores.
    pub softcap: Option<f32>,
    /// Sliding window: a query sees keys with `query − key < window`.
    pub window: Option<usize>,
}

/// A raw output pointer shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: every task writes a disjoint (query block, head) region of the output.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// (A method, so closures capture the `Send` wrapper, not its raw field.)
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the buffer the pointer came from.
        unsafe { self.0.add(offset) }
    }
}

/// Causal attention of `n` new queries at positions `past..past + n` over keys/values at
/// positions `0..past + n` (`k`, `v` hold `past + n` rows). Writes `out` `[n, heads · head_dim]`.
pub fn attend(s: &AttnShape, q: &[f32], n: usize, k: &[f32], v: &[f32], past: usize, out: &mut [f32]) {
    let (hd, qw, kw) = (s.head_dim, s.heads * s.head_dim, s.kv_heads * s.head_dim);
    let t = past + n;
    debug_assert!(q.len() == n * qw && out.len() == n * qw && k.len() == t * kw && v.len() == t * kw);
    let rep = s.heads / s.kv_heads.max(1);
    let blocks = n.div_ceil(Q_BLOCK);
    let dst = Out(out.as_mut_ptr());
    (0..s.heads * blocks).into_par_iter().for_each(|task| {
        let (h, b) = (task / blocks, task % blocks);
        let g = h / rep.max(1);
        let (i0, i1) = (b * Q_BLOCK, ((b + 1) * Q_BLOCK).min(n));
        let bq = i1 - i0;
        // Keys any query of the block can see.
        let j_hi = past + i1;
        let j_lo = s.window.map(|w| (past + i0 + 1).saturating_sub(w)).unwrap_or(0);
        let mut acc = vec![0f32; bq * hd];
        let mut m = vec![f32::NEG_INFINITY; bq];
        let mut l = vec![0f32; bq];
        let mut scores = vec![0f32; bq * K_BLOCK];
        let mut j0 = j_lo;
        while j0 < j_hi {
            let bk = K_BLOCK.min(j_hi - j0);
            let sc = &mut scores[..bq * bk];
            // Without a softcap the scale rides on the matmul (S = scale · Q·Kᵀ); with one it must
            // come before the tanh.
            let beta = if s.softcap.is_some() { 1.0 } else { s.scale };
            // SAFETY: S[bq, bk] = β · Q[i0.., h] · K[j0.., g]ᵀ; strides index inside q, k and sc.
            unsafe {
                gemm::gemm(
                    bq,
                    bk,
                    hd,
                    sc.as_mut_ptr(),
                    1,
                    bk as isize,
                    false,
                    q.as_ptr().add(i0 * qw + h * hd),
                    1,
                    qw as isize,
                    k.as_ptr().add(j0 * kw + g * hd),
                    kw as isize,
                    1,
                    0.0,
                    beta,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (r, row) in sc.chunks_exact_mut(bk).enumerate() {
                // The keys this query sees form one run of the tile: causal on the right, the
                // window on the left. Everything outside it gets probability 0.
                let qpos = past + i0 + r;
                let hi = (qpos + 1).saturating_sub(j0).min(bk);
                let lo = s.window.map_or(0, |w| (qpos + 1).saturating_sub(w).saturating_sub(j0)).min(hi);
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                let seen = &mut row[lo..hi];
                if seen.is_empty() {
                    continue;
                }
                if let Some(cap) = s.softcap {
                    seen.iter_mut().for_each(|x| *x = (*x * s.scale / cap).tanh() * cap);
                }
                let mx = m[r].max(max_of(seen));
                let corr = (m[r] - mx).exp();
                let sum = exp_shifted_sum(seen, mx);
                l[r] = l[r] * corr + sum;
                m[r] = mx;
                if corr != 1.0 {
                    acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= corr);
                }
            }
            // SAFETY: acc[bq, hd] += P[bq, bk] · V[j0.., g]; strides index inside sc, v and acc.
            unsafe {
                gemm::gemm(
                    bq,
                    hd,
                    bk,
                    acc.as_mut_ptr(),
                    1,
                    hd as isize,
                    true,
                    sc.as_ptr(),
                    1,
                    bk as isize,
                    v.as_ptr().add(j0 * kw + g * hd),
                    1,
                    kw as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            j0 += bk;
        }
        for r in 0..bq {
            let inv = 1.0 / l[r];
            // SAFETY: row i0 + r, columns h·hd..(h+1)·hd of out belong to this task alone.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.at((i0 + r) * qw + h * hd), hd) };
            for (o, a) in o.iter_mut().zip(&acc[r * hd..(r + 1) * hd]) {
                *o = a * inv;
            }
        }
    });
}

/// The largest element, NaN ignored (as `f32::max` does), in lanes the compiler vectorises.
fn max_of(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = m.max(*v);
        }
    }
    lanes.into_iter().fold(tail, f32::max)
}

/// `x ← exp(x − shift)` in place; returns the sum. AVX2 + FMA when the CPU has them (detected
/// once at run time), else the scalar `f32::exp`. NaN stays NaN.
fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the features the function is compiled for were just detected.
        return unsafe { vexp::exp_shifted_sum_avx2(x, shift) };
    }
    exp_shifted_sum_scalar(x, shift)
}

fn exp_shifted_sum_scalar(x: &mut [f32], shift: f32) -> f32 {
    let mut sum = 0f32;
    for v in x.iter_mut() {
        *v = (*v - shift).exp();
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod vexp {
    //! exp in eight lanes: Cephes' `expf` (range reduction by ln 2 in two parts, a degree-5
    //! polynomial, the exponent added as integer bits); within 2 ulp of the C library on the
    //! range the softmax uses (x ≤ 0).
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_shifted_sum_avx2(x: &mut [f32], shift: f32) -> f32 {
        let mut sum = _mm256_setzero_ps();
        let s = _mm256_set1_ps(shift);
        let mut chunks = x.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` is 8 floats; unaligned loads and stores.
            let v = unsafe { _mm256_loadu_ps(c.as_ptr()) };
            let e = exp8(_mm256_sub_ps(v, s));
            unsafe { _mm256_storeu_ps(c.as_mut_ptr(), e) };
            sum = _mm256_add_ps(sum, e);
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` is 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
        let mut total = lanes.iter().sum::<f32>();
        for v in chunks.into_remainder() {
            *v = (*v - shift).exp();
            total += *v;
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        // Clamp so 2^n stays a normal float; `min(bound, x)` keeps a NaN `x` (it returns the
        // second operand when either is NaN).
        let x = _mm256_min_ps(_mm256_set1_ps(88.376_26), x);
        let x = _mm256_max_ps(_mm256_set1_ps(-87.336_54), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    }
}

/// Rotate-half rope in place on the first `rotary_dim` of each head of `x` `[n, heads ·
/// head_dim]` (the rest passes through: partial rotary), row `i` with the angles of table row `i`
/// (`cos`, `sin`: `[n, rotary_dim / 2]`).
pub fn rope_in_place(x: &mut [f32], heads: usize, head_dim: usize, rotary_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = rotary_dim / 2;
    x.par_chunks_mut(heads * head_dim).enumerate().for_each(|(i, row)| {
        let (c, s) = (&cos[i * half..(i + 1) * half], &sin[i * half..(i + 1) * half]);
        for head in row.chunks_exact_mut(head_dim) {
            let (a, b) = head[..rotary_dim].split_at_mut(half);
            for j in 0..half {
                let (x1, x2) = (a[j], b[j]);
                a[j] = x1 * c[j] - x2 * s[j];
                b[j] = x2 * c[j] + x1 * s[j];
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention written the obvious way: full score rows, one head at a time.
    fn naive(s: &AttnShape, q: &[f32], n: usize, k: &[f32], v: &[f32], past: usize) -> Vec<f32> {
        let (hd, qw, kw) = (s.head_dim, s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let mut out = vec![0f32; n * qw];
        for h in 0..s.heads {
            let g = h / (s.heads / s.kv_heads);
            for i in 0..n {
                let qp = past + i;
                let sc: Vec<f32> = (0..=qp)
                    .map(|j| {
                        if s.window.is_some_and(|w| qp - j >= w) {
                            return f32::NEG_INFINITY;
                        }
                        let d: f32 = (0..hd).map(|e| q[i * qw + h * hd + e] * k[j * kw + g * hd + e]).sum::<f32>() * s.scale;
                        s.softcap.map(|c| (d / c).tanh() * c).unwrap_or(d)
                    })
                    .collect();
                let mx = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = sc.iter().map(|x| (x - mx).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for d in 0..hd {
                        out[i * qw + h * hd + d] += p / z * v[j * kw + g * hd + d];
                    }
                }
            }
        }
        out
    }

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| (((i + seed) * 2654435761 % 1000) as f32 - 500.0) / 250.0).collect()
    }

    /// Blocked attention equals the full-matrix softmax across tile edges (n and t not multiples
    /// of the blocks), with GQA, a cache offset, a sliding window and a softcap.
    #[test]
    fn blocked_matches_naive() {
        for (n, past, window, softcap) in
            [(70, 0, None, None), (5, 300, None, None), (300, 20, Some(100), Some(20.0)), (1, 600, Some(50), None)]
        {
            let s = AttnShape { heads: 4, kv_heads: 2, head_dim: 8, scale: 0.35, softcap, window };
            let t = past + n;
            let (q, k, v) = (data(n * 32, 1), data(t * 16, 2), data(t * 16, 3));
            let mut out = vec![0f32; n * 32];
            attend(&s, &q, n, &k, &v, past, &mut out);
            let want = naive(&s, &q, n, &k, &v, past);
            let worst = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "n={n} past={past} window={window:?}: worst {worst}");
        }
    }

    /// The vector exp agrees with the C library's to 2 ulp across the softmax's range, keeps NaN,
    /// and its sum covers the tail that does not fill a lane.
    #[test]
    fn vector_exp_matches_libm() {
        let xs: Vec<f32> = (0..10_007).map(|i| -95.0 + i as f32 * 0.0095).chain([0.0, -0.0, 3.5]).collect();
        let mut got = xs.clone();
        let sum = exp_shifted_sum(&mut got, 0.5);
        let mut want = xs.clone();
        let want_sum = exp_shifted_sum_scalar(&mut want, 0.5);
        for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
            if *w < 1e-37 {
                assert!(*g < 1e-37, "exp({x} - 0.5) = {g}, want {w}");
                continue;
            }
            let ulp = (g.to_bits() as i64 - w.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x} - 0.5) = {g}, want {w} ({ulp} ulp)");
        }
        assert!((sum - want_sum).abs() <= 1e-5 * want_sum, "{sum} vs {want_sum}");
        let mut nan = vec![0.0, f32::NAN, -1.0, 2.0, 0.5, -3.0, 1.0, 0.0, f32::NAN];
        assert!(exp_shifted_sum(&mut nan, 0.0).is_nan());
        assert!(nan[1].is_nan() && nan[8].is_nan() && (nan[2] - (-1f32).exp()).abs() < 1e-7);
    }

    /// A NaN score reaches the output (a NaN checkpoint must show as NaN, not as a quiet 0).
    #[test]
    fn nan_scores_propagate() {
        let s = AttnShape { heads: 1, kv_heads: 1, head_dim: 8, scale: 0.35, softcap: None, window: None };
        let (n, mut q, k, v) = (3, data(24, 1), data(24, 2), data(24, 3));
        q[9] = f32::NAN;
        let mut out = vec![0f32; 24];
        attend(&s, &q, n, &k, &v, 0, &mut out);
        assert!(out[..8].iter().all(|x| x.is_finite()), "row 0 never sees the NaN query");
        assert!(out[8..16].iter().all(|x| x.is_nan()), "{:?}", &out[8..16]);
    }
}
