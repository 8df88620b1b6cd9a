//! `y = x·Wᵀ` with both operands as they are stored: the input `[t, k]` and the weight rows
//! `[rows, k]` both keep the shared dimension `k` contiguous, so a register tile of dot products
//! (4 weight rows × 6 input rows, 24 AVX-512 accumulators of 16 lanes, reduced once at the end)
//! reads them in place: nothing is packed, transposed or, for f32 / f16 / bf16 rows, even decoded
//! into a buffer (the widening happens in registers). This is the layout llama.cpp's tinyBLAS
//! multiplies in; gemm (`native`'s other path) wants the opposite one and pays for the copies.
//!
//! Only on x86-64 CPUs with AVX-512F, detected at run time (`available`); `native` keeps gemm
//! everywhere else. Products and sums are f32 (each lane accumulates every 16th product, the 16
//! lanes are summed at the end): only the summation order differs from any other f32 matmul.

/// Weight rows of one register tile.
pub const TILE_ROWS: usize = 4;
/// Input rows of one register tile.
pub const TILE_INPUTS: usize = 6;

/// How a weight row is stored (a const parameter of the kernels, so each encoding gets its own
/// inner loop).
pub const F32: u8 = 0;
pub const F16: u8 = 1;
pub const BF16: u8 = 2;

/// Whether this CPU runs the kernels here (`native` asks before every matmul; the check is a
/// cached load). `CKPTCHECK_MATMUL=gemm` turns them off, for A/B measurements in one binary, and
/// with them every other AVX-512 path that asks here (attention's tiles, `vmath`'s exp and
/// fused silu): the portable engine, summing as it did before these kernels.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f") && std::env::var("CKPTCHECK_MATMUL").as_deref() != Ok("gemm"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Bytes of one stored value of encoding `E`.
pub const fn elem_bytes(e: u8) -> usize {
    if e == F32 {
        4
    } else {
        2
    }
}

/// `y[j · ys + i] = Σ_c w_i[c] · x[j · k + c]` for `i < w.len()` and `j < t`, where row `w[i]`
/// points at `k` values in encoding `E` (any alignment) and `x` holds `t` rows of `k` f32.
///
/// # Safety
/// `available()` is true; each `w[i]` is valid for `k · elem_bytes(E)` bytes; `y[j · ys + i]` is
/// writable for every such `i, j` and no other thread touches those elements meanwhile.
#[cfg(target_arch = "x86_64")]
pub unsafe fn block<const E: u8>(w: &[*const u8], x: &[f32], t: usize, k: usize, y: *mut f32, ys: usize) {
    assert!(x.len() >= t * k, "dot::block: input shorter than t × k");
    // Each group of 6 input rows stays in L1 while every weight tile of the block passes by it.
    for j0 in (0..t).step_by(TILE_INPUTS) {
        let nj = TILE_INPUTS.min(t - j0);
        for i0 in (0..w.len()).step_by(TILE_ROWS) {
            let ni = TILE_ROWS.min(w.len() - i0);
            let (wr, xr, yr) = (&w[i0..i0 + ni], unsafe { x.as_ptr().add(j0 * k) }, unsafe { y.add(j0 * ys + i0) });
            // SAFETY: rows i0..i0+ni of w and j0..j0+nj of x exist; y's elements are the
            // caller's (see above).
            unsafe {
                match ni {
                    4 => tile_m::<E, 4>(wr, xr, nj, k, yr, ys),
                    3 => tile_m::<E, 3>(wr, xr, nj, k, yr, ys),
                    2 => tile_m::<E, 2>(wr, xr, nj, k, yr, ys),
                    _ => tile_m::<E, 1>(wr, xr, nj, k, yr, ys),
                }
            }
        }
    }
}

/// A tile of `M` weight rows and `n ≤ 8` input rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_m<const E: u8, const M: usize>(w: &[*const u8], x: *const f32, n: usize, k: usize, y: *mut f32, ys: usize) {
    unsafe {
        match n {
            8 => tile::<E, M, 8>(w, x, k, y, ys),
            7 => tile::<E, M, 7>(w, x, k, y, ys),
            6 => tile::<E, M, 6>(w, x, k, y, ys),
            5 => tile::<E, M, 5>(w, x, k, y, ys),
            4 => tile::<E, M, 4>(w, x, k, y, ys),
            3 => tile::<E, M, 3>(w, x, k, y, ys),
            2 => tile::<E, M, 2>(w, x, k, y, ys),
            _ => tile::<E, M, 1>(w, x, k, y, ys),
        }
    }
}

/// 16 values of encoding `E` at `p`, widened to f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load16<const E: u8>(p: *const u8) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    unsafe {
        match E {
            F32 => _mm512_loadu_ps(p as *const f32),
            F16 => _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i)),
            // bf16 is the top half of an f32.
            _ => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i)))),
        }
    }
}

/// One value of encoding `E` at `p`.
#[inline]
unsafe fn load1<const E: u8>(p: *const u8) -> f32 {
    unsafe {
        match E {
            F32 => f32::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 4])),
            F16 => half::f16::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 2])).to_f32(),
            _ => half::bf16::from_le_bytes(std::ptr::read_unaligned(p as *const [u8; 2])).to_f32(),
        }
    }
}

/// The register tile: `M` weight rows × `N` input rows over all of `k`, 16 columns per step; a
/// tail of `k % 16` columns is added one product at a time after the lanes are summed.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
// Index loops over the register arrays: constant trip counts LLVM unrolls into named registers.
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const E: u8, const M: usize, const N: usize>(w: &[*const u8], x: *const f32, k: usize, y: *mut f32, ys: usize) {
    use std::arch::x86_64::*;
    let eb = elem_bytes(E);
    let mut wp = [std::ptr::null::<u8>(); M];
    wp.copy_from_slice(&w[..M]);
    let mut acc = [[_mm512_setzero_ps(); N]; M];
    let k16 = k / 16 * 16;
    let mut c = 0;
    while c < k16 {
        let mut wv = [_mm512_setzero_ps(); M];
        for i in 0..M {
            // SAFETY: c + 16 ≤ k values of row i (the caller's bound).
            wv[i] = unsafe { load16::<E>(wp[i].add(c * eb)) };
        }
        for j in 0..N {
            // SAFETY: input row j holds k values; c + 16 ≤ k.
            let xv = unsafe { _mm512_loadu_ps(x.add(j * k + c)) };
            for i in 0..M {
                acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
            }
        }
        c += 16;
    }
    for j in 0..N {
        // Up to 4 rows reduced together (a missing row repeats row 0, its sum unused).
        let mut sums = [0f32; 4];
        let a = |i: usize| acc[if i < M { i } else { 0 }][j];
        _mm_storeu_ps(sums.as_mut_ptr(), reduce4(a(0), a(1), a(2), a(3)));
        for (i, s) in sums.iter_mut().enumerate().take(M) {
            for cc in k16..k {
                // SAFETY: cc < k, in row i of w and row j of x.
                *s += unsafe { load1::<E>(wp[i].add(cc * eb)) * *x.add(j * k + cc) };
            }
            // SAFETY: the caller owns y[j · ys + i].
            unsafe { *y.add(j * ys + i) = *s };
        }
    }
}

/// The lane sums of four vectors, `[Σa, Σb, Σc, Σd]`: halves added, then horizontal adds, about
/// half the instructions of four separate reductions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn reduce4(
    a: std::arch::x86_64::__m512,
    b: std::arch::x86_64::__m512,
    c: std::arch::x86_64::__m512,
    d: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    let (a, b, c, d) = (halves(a), halves(b), halves(c), halves(d));
    let abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps::<1>(abcd))
}

/// The two 256-bit halves of `v` added.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn halves(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    fn encode(e: u8, v: &[f32]) -> (Vec<u8>, Vec<f32>) {
        let bytes: Vec<u8> = match e {
            F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            F16 => v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            _ => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        };
        let back = match e {
            F32 => v.to_vec(),
            F16 => v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect(),
            _ => v.iter().map(|x| half::bf16::from_f32(*x).to_f32()).collect(),
        };
        (bytes, back)
    }

    /// Every tile shape (ragged rows and inputs), a `k` with a tail past the 16-column steps, rows
    /// at odd byte offsets, each encoding: equal to an f64 triple loop within f32 rounding.
    #[test]
    fn block_matches_naive_for_every_tile_shape() {
        if !available() {
            eprintln!("no AVX-512F here: the dot kernels are not used on this CPU");
            return;
        }
        let (rows, t, k) = (4 * 2 + 3, 6 * 2 + 5, 16 * 5 + 7);
        let wv: Vec<f32> = (0..rows * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 371.0).collect();
        let x: Vec<f32> = (0..t * k).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        for e in [F32, F16, BF16] {
            let (bytes, wq) = encode(e, &wv);
            // One byte in front, so no row is aligned.
            let mut store = vec![0u8; 1];
            store.extend_from_slice(&bytes);
            let rb = k * elem_bytes(e);
            // Rows in reverse order, as a row map gives them.
            let ptrs: Vec<*const u8> = (0..rows).map(|r| unsafe { store.as_ptr().add(1 + (rows - 1 - r) * rb) }).collect();
            let ys = rows + 2;
            let mut y = vec![f32::NAN; t * ys];
            // SAFETY: available(); every row holds k values; y has t rows of ys ≥ rows.
            unsafe { block::<{ F32 }>(&[], &x, t, k, y.as_mut_ptr(), ys) };
            match e {
                F32 => unsafe { block::<{ F32 }>(&ptrs, &x, t, k, y.as_mut_ptr(), ys) },
                F16 => unsafe { block::<{ F16 }>(&ptrs, &x, t, k, y.as_mut_ptr(), ys) },
                _ => unsafe { block::<{ BF16 }>(&ptrs, &x, t, k, y.as_mut_ptr(), ys) },
            }
            for j in 0..t {
                for r in 0..rows {
                    let s = rows - 1 - r;
                    let want: f64 = (0..k).map(|c| x[j * k + c] as f64 * wq[s * k + c] as f64).sum();
                    let got = y[j * ys + r];
                    assert!((got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()), "encoding {e}: y[{j},{r}] = {got} vs {want}");
                }
                assert!(y[j * ys + rows].is_nan() && y[j * ys + rows + 1].is_nan(), "wrote past the block's columns");
            }
        }
    }
}
