//! Elementwise math on f32 slices in SIMD lanes: the softmax's shifted exp (attention) and the
//! gated MLP's `silu(g) · u` (decoder), both on one vector exp (Cephes' `expf`, within 2 ulp of
//! the C library), with scalar fallbacks for CPUs without the features.

use rayon::prelude::*;

/// `x ← exp(x − shift)` in place; returns the sum. AVX-512F where the dot kernels run
/// (`dot::available`), else AVX2 + FMA when the CPU has them (detected at run time), else the
/// scalar `f32::exp`. NaN stays NaN.
pub fn exp_shifted_sum(x: &mut [f32], shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if super::dot::available() {
        // SAFETY: dot::available() implies AVX-512F.
        return unsafe { vexp::exp_shifted_sum_avx512(x, shift) };
    }
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

/// `silu(g) · u = g / (1 + exp(−g)) · u`, elementwise, in parallel chunks: the gated MLP's
/// activation and product in one pass (candle's `silu` then `mul` make two, with a scalar exp).
/// The vector exp only on CPUs with AVX-512F where the dot kernels run (`dot::available`, so
/// `CKPTCHECK_MATMUL=gemm` keeps the whole portable path); `None` elsewhere, and the caller
/// takes candle's.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Option<Vec<f32>> {
    #[cfg(target_arch = "x86_64")]
    if g.len() == u.len() && super::dot::available() {
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(SILU_CHUNK).zip(g.par_chunks(SILU_CHUNK).zip(u.par_chunks(SILU_CHUNK))).for_each(|(o, (g, u))| {
            // SAFETY: dot::available() implies AVX-512F.
            unsafe { vexp::silu_mul_avx512(g, u, o) }
        });
        return Some(out);
    }
    None
}

/// Elements per parallel task of `silu_mul`.
const SILU_CHUNK: usize = 16 * 1024;

/// `silu_mul`'s scalar form, the formula candle uses (the tests' reference).
#[cfg(test)]
fn silu_mul_scalar(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()
}

#[cfg(target_arch = "x86_64")]
mod vexp {
    //! exp in eight or sixteen lanes: Cephes' `expf` (range reduction by ln 2 in two parts, a degree-5
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

    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp_shifted_sum_avx512(x: &mut [f32], shift: f32) -> f32 {
        let mut sum = _mm512_setzero_ps();
        let s = _mm512_set1_ps(shift);
        let mut chunks = x.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: `c` is 16 floats; unaligned loads and stores.
            let v = unsafe { _mm512_loadu_ps(c.as_ptr()) };
            let e = exp16(_mm512_sub_ps(v, s));
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), e) };
            sum = _mm512_add_ps(sum, e);
        }
        let mut total = _mm512_reduce_add_ps(sum);
        for v in chunks.into_remainder() {
            *v = (*v - shift).exp();
            total += *v;
        }
        total
    }

    /// `o = g / (1 + exp(−g)) · u`; `g`, `u` and `o` of one length.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul_avx512(g: &[f32], u: &[f32], o: &mut [f32]) {
        let n = o.len().min(g.len()).min(u.len());
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        while i + 16 <= n {
            // SAFETY: i + 16 ≤ n elements of each slice.
            unsafe {
                let gv = _mm512_loadu_ps(g.as_ptr().add(i));
                let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv));
                let s = _mm512_div_ps(gv, _mm512_add_ps(one, e));
                _mm512_storeu_ps(o.as_mut_ptr().add(i), _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr().add(i))));
            }
            i += 16;
        }
        for j in i..n {
            o[j] = g[j] / (1.0 + (-g[j]).exp()) * u[j];
        }
    }

    /// Clamp bounds that keep 2^n a normal float.
    const EXP_HI: f32 = 88.376_26;
    const EXP_LO: f32 = -87.336_54;
    /// ln 2 in two parts (high part exact in few bits, so n · LN2_HI is exact).
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    /// The degree-5 polynomial's coefficients, highest first.
    const POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 0.5];

    /// `exp8`'s steps in 16 lanes (the same constants, so the same value in every lane).
    #[target_feature(enable = "avx512f")]
    fn exp16(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_set1_ps(EXP_HI), x);
        let x = _mm512_max_ps(_mm512_set1_ps(EXP_LO), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(POLY[0]);
        for c in POLY[1..].iter().copied() {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
        let pow2 = _mm512_slli_epi32::<23>(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)));
        _mm512_mul_ps(y, _mm512_castsi512_ps(pow2))
    }

    #[target_feature(enable = "avx2,fma")]
    fn exp8(x: __m256) -> __m256 {
        // Clamp so 2^n stays a normal float; `min(bound, x)` keeps a NaN `x` (it returns the
        // second operand when either is NaN).
        let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
        let x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x);
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(POLY[0]);
        for c in POLY[1..].iter().copied() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let y = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)));
        _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vector exp this CPU runs agrees with the C library's to 2 ulp across the softmax's
    /// range, keeps NaN, and its sum covers the tail that does not fill a lane.
    #[test]
    fn vector_exp_matches_libm() {
        type ExpSum = fn(&mut [f32], f32) -> f32;
        let mut impls: Vec<(&str, ExpSum)> = vec![("dispatch", exp_shifted_sum)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the features were just detected.
                impls.push(("avx2", |x, s| unsafe { vexp::exp_shifted_sum_avx2(x, s) }));
            }
            if std::is_x86_feature_detected!("avx512f") {
                // SAFETY: the feature was just detected.
                impls.push(("avx512", |x, s| unsafe { vexp::exp_shifted_sum_avx512(x, s) }));
            }
        }
        let xs: Vec<f32> = (0..10_007).map(|i| -95.0 + i as f32 * 0.0095).chain([0.0, -0.0, 3.5]).collect();
        let mut want = xs.clone();
        let want_sum = exp_shifted_sum_scalar(&mut want, 0.5);
        for (name, exp) in impls {
            let mut got = xs.clone();
            let sum = exp(&mut got, 0.5);
            for ((g, w), x) in got.iter().zip(&want).zip(&xs) {
                if *w < 1e-37 {
                    assert!(*g < 1e-37, "{name}: exp({x} - 0.5) = {g}, want {w}");
                    continue;
                }
                let ulp = (g.to_bits() as i64 - w.to_bits() as i64).abs();
                assert!(ulp <= 2, "{name}: exp({x} - 0.5) = {g}, want {w} ({ulp} ulp)");
            }
            assert!((sum - want_sum).abs() <= 1e-5 * want_sum, "{name}: {sum} vs {want_sum}");
            let mut nan = vec![0.0, f32::NAN, -1.0, 2.0, 0.5, -3.0, 1.0, 0.0, f32::NAN, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
            assert!(exp(&mut nan, 0.0).is_nan(), "{name}");
            assert!(nan[1].is_nan() && nan[8].is_nan() && (nan[2] - (-1f32).exp()).abs() < 1e-7, "{name}");
        }
    }

    /// The fused `silu(g) · u` equals candle's formula to a few ulp across the range where the
    /// exp clamps (|g| > 87), keeps NaN, and covers a tail that does not fill a lane.
    #[test]
    fn silu_mul_matches_the_formula() {
        let g: Vec<f32> = (0..40_003).map(|i| -120.0 + i as f32 * 0.006).chain([f32::NAN, 0.0, -0.0, 1e-30]).collect();
        let u: Vec<f32> = (0..g.len()).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let Some(got) = silu_mul(&g, &u) else { return };
        let want = silu_mul_scalar(&g, &u);
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            if b.is_nan() {
                assert!(a.is_nan(), "g={} u={}: {a}, want NaN", g[i], u[i]);
                continue;
            }
            assert!((a - b).abs() <= 4.0 * f32::EPSILON * b.abs() + 1e-30, "g={} u={}: {a} vs {b}", g[i], u[i]);
        }
    }
}
