//! `y = x·Wᵀ` for Q4_K, Q5_K and Q6_K weight rows in llama.cpp's own integer arithmetic: each input row
//! is quantized to Q8_K (blocks of 256 int8 with one f32 scale and sums of every 16, ggml's
//! `quantize_row_q8_K_ref`), the 4-, 5- or 6-bit weights are multiplied with those int8 four at a
//! time (`vpdpbusd`), packed to 16 bits and scaled by the sub-block scales in the step that
//! widens back to 32 bits (`vpdpwssd`), and each super-block's sum is scaled in f32 by
//! `d_weight · d_input`, with the
//! weight minimum (Q4_K, Q5_K) or the −32 offset (Q6_K) subtracted through the input's 16-value sums:
//! the terms ggml's `vec_dot_q{4,5,6}_K_q8_K` compute, only summed in another
//! order. The weights are read where they are stored (nibbles widened in registers); nothing is
//! decoded to f32.
//!
//! This is *not* the exact dequantized matmul (`--gguf-matmul dense`): the inputs carry int8
//! rounding, as they do in llama.cpp. Only on x86-64 CPUs with AVX-512 BW and VNNI (`available`).

/// Values per super-block (ggml's QK_K).
pub const QK: usize = 256;
/// Input rows of one register tile (one weight row each).
pub const TILE_INPUTS: usize = 12;
/// Super-blocks of k one pass of the tiles covers (see `block`).
const SPAN_BLOCKS: usize = 8;

/// The weight encodings the kernels read (a const parameter, one inner loop each).
pub const Q4K: u8 = 0;
pub const Q6K: u8 = 1;
pub const Q5K: u8 = 2;

/// Stored bytes of one super-block of encoding `Q`.
pub const fn block_bytes(q: u8) -> usize {
    match q {
        Q4K => 144,
        Q5K => 176,
        _ => 210,
    }
}

/// Whether this CPU runs the kernels here (`super::dot::available()` plus AVX-512 BW and VNNI).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *ON.get_or_init(|| {
            super::dot::available() && std::arch::is_x86_feature_detected!("avx512bw") && std::arch::is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Input rows quantized to Q8_K: row `j`'s int8 at `qs[j·k..]`, and for its super-block `b`
/// (`i = j·nb + b`) the scale `d[i]`, the sums of its int8 values 16s..16s+16 (ggml's `bsums`)
/// in `bsums[16·i + s]`, and those sums times d in `sums[16·i + s]`.
pub struct Q8K {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub bsums: Vec<i32>,
    pub sums: Vec<f32>,
    pub k: usize,
}

impl Q8K {
    /// Super-blocks per row.
    pub fn blocks(&self) -> usize {
        self.k / QK
    }
}

/// ggml's `nearest_int`: round half to even (exact for |v| < 2²²; here |v| ≤ 127).
fn nearest_int(v: f32) -> i32 {
    v.round_ties_even() as i32
}

/// `t` rows of `k` f32 (`k` a multiple of 256) quantized as ggml's `quantize_row_q8_K_ref` does:
/// per block, the value of largest magnitude `max` maps to −127 (`iscale = −127 / max`), each
/// value to `min(127, nearest_int(iscale · x))`, and `d = 1 / iscale`; an all-zero block has
/// d = 0 and zeros. A block holding NaN or ±Inf gets d = NaN (its products are NaN, not
/// integers). In parallel over rows.
pub fn quantize(x: &[f32], t: usize, k: usize) -> Q8K {
    use rayon::prelude::*;
    assert!(k.is_multiple_of(QK) && x.len() >= t * k, "qdot::quantize: rows of {k} do not split into blocks of {QK}");
    let nb = k / QK;
    let mut q = Q8K { qs: vec![0; t * k], d: vec![0.0; t * nb], bsums: vec![0; t * nb * 16], sums: vec![0.0; t * nb * 16], k };
    q.qs.par_chunks_mut(QK)
        .zip(q.d.par_iter_mut())
        .zip(q.bsums.par_chunks_mut(16).zip(q.sums.par_chunks_mut(16)))
        .zip(x[..t * k].par_chunks(QK))
        .with_min_len(64)
        .for_each(|(((qs, d), (bsums, sums)), x)| {
            #[cfg(target_arch = "x86_64")]
            if available() {
                // SAFETY: AVX-512 F and BW (available()); the slices are one whole block each.
                unsafe { *d = quantize_block_avx512(x, qs, bsums) };
            } else {
                *d = quantize_block(x, qs, bsums);
            }
            #[cfg(not(target_arch = "x86_64"))]
            {
                *d = quantize_block(x, qs, bsums);
            }
            for (s, &b) in sums.iter_mut().zip(bsums.iter()) {
                *s = *d * b as f32;
            }
        });
    q
}

/// One block of 256 (`quantize`'s rule): its int8 values into `qs`, their 16-value sums into
/// `bsums`; returns d.
fn quantize_block(x: &[f32], qs: &mut [i8], bsums: &mut [i32]) -> f32 {
    if !x.iter().all(|v| v.is_finite()) {
        return non_finite(qs, bsums);
    }
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if v.abs() > amax {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (o, &v) in qs.iter_mut().zip(x) {
        *o = nearest_int(iscale * v).min(127) as i8;
    }
    for (b, g) in bsums.iter_mut().zip(qs.chunks_exact(16)) {
        *b = g.iter().map(|&v| i32::from(v)).sum::<i32>();
    }
    1.0 / iscale
}

/// A block holding NaN or ±Inf: zeros and d = NaN, so every product with it is NaN (ggml's
/// rounding would turn them into arbitrary integers, and a checker must see them).
fn non_finite(qs: &mut [i8], bsums: &mut [i32]) -> f32 {
    qs[..QK].fill(0);
    bsums[..QK / 16].fill(0);
    f32::NAN
}

/// `quantize_block` in 16 lanes: the same first value of largest magnitude, the same products,
/// and `vcvtps2dq` rounds half to even as `nearest_int` does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_block_avx512(x: &[f32], qs: &mut [i8], bsums: &mut [i32]) -> f32 {
    use std::arch::x86_64::*;
    assert!(x.len() >= QK && qs.len() >= QK && bsums.len() >= QK / 16);
    unsafe {
        let v: [__m512; 16] = std::array::from_fn(|i| _mm512_loadu_ps(x.as_ptr().add(16 * i)));
        let big = _mm512_set1_ps(f32::MAX);
        if v.iter().any(|&x| _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(_mm512_abs_ps(x), big) != 0) {
            return non_finite(qs, bsums);
        }
        let amax = _mm512_reduce_max_ps(v.iter().fold(_mm512_setzero_ps(), |m, &x| _mm512_max_ps(m, _mm512_abs_ps(x))));
        if amax == 0.0 {
            qs[..QK].fill(0);
            bsums[..QK / 16].fill(0);
            return 0.0;
        }
        // The first value whose magnitude is amax (the scalar loop keeps the first strict max).
        let at = (0..16)
            .find_map(|i| {
                let m = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(v[i]), _mm512_set1_ps(amax));
                (m != 0).then(|| 16 * i + m.trailing_zeros() as usize)
            })
            .unwrap_or(0);
        let iscale = -127.0 / x[at];
        let sc = _mm512_set1_ps(iscale);
        for (i, &vi) in v.iter().enumerate() {
            let q = _mm512_min_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(sc, vi)), _mm512_set1_epi32(127));
            _mm_storeu_si128(qs.as_mut_ptr().add(16 * i) as *mut __m128i, _mm512_cvtsepi32_epi8(q));
            bsums[i] = _mm512_reduce_add_epi32(q);
        }
        1.0 / iscale
    }
}

/// One weight super-block's scales as the kernels read them: `s[i]` multiplies the int8 products
/// of values 16i..16i+16 and `d` the block's integer sum. Q4_K: `s = sc[i/2]`, and `off[i]` =
/// dmin · m[i/2] times the input's `sums[i]` is subtracted in f32 (as ggml does: its own
/// multiplier). Q6_K: `s = sc[i]`, and the −32 offset stays in the integer sum, exactly:
/// `ioff[i]` = −32 · sc[i] (in the low 16 bits, the high ones zero) times the input's `bsums[i]`.
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct BlockScales {
    pub s: [i16; 16],
    pub off: [f32; 16],
    pub ioff: [u32; 16],
    pub d: f32,
}

/// ggml's `get_scale_min_k4`: Q4_K's (and Q5_K's) 8 (scale, min) pairs of 6 bits packed into 12
/// bytes (also `native`'s Q4_K row decoder).
pub(crate) fn q4k_scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// The scales of every super-block of one stored row (`row`, whole blocks of encoding `q`) into
/// `out` (one per block).
pub fn row_scales(q: u8, row: &[u8], out: &mut [BlockScales]) {
    let f16 = |b: &[u8]| half::f16::from_le_bytes([b[0], b[1]]).to_f32();
    for (blk, o) in row.chunks_exact(block_bytes(q)).zip(out.iter_mut()) {
        if q == Q4K || q == Q5K {
            let (d, dmin) = (f16(&blk[0..2]), f16(&blk[2..4]));
            for j in 0..8 {
                let (sc, m) = q4k_scale_min(j, &blk[4..16]);
                o.s[2 * j] = i16::from(sc);
                o.s[2 * j + 1] = i16::from(sc);
                o.off[2 * j] = dmin * f32::from(m);
                o.off[2 * j + 1] = dmin * f32::from(m);
            }
            o.d = d;
        } else {
            let d = f16(&blk[208..210]);
            for i in 0..16 {
                let sc = blk[192 + i] as i8;
                o.s[i] = i16::from(sc);
                o.ioff[i] = u32::from((-32 * i16::from(sc)) as u16);
            }
            o.d = d;
        }
    }
}

/// `y[j · ys + i] = Σ_c W_i[c] · x_j[c]` for weight rows `w[i]` (each `nb` whole super-blocks of
/// encoding `Q`, any alignment) with their scales at `scales[i · nb..]`, and quantized input rows
/// `j0..j0 + t` of `x`. Each group of `TILE_INPUTS` inputs stays in L1 while every row passes.
///
/// # Safety
/// `available()` is true; each `w[i]` is valid for `nb · block_bytes(Q)` bytes; `y[j · ys + i]`
/// is writable for every such `i, j` and no other thread touches those elements meanwhile.
#[cfg(target_arch = "x86_64")]
pub unsafe fn block<const Q: u8>(w: &[*const u8], scales: &[BlockScales], x: &Q8K, j0: usize, t: usize, y: *mut f32, ys: usize) {
    let nb = x.blocks();
    assert!(scales.len() >= w.len() * nb && x.d.len() >= (j0 + t) * nb, "qdot::block: scales or inputs too short");
    // Along k in spans of ≤ SPAN_BLOCKS blocks, so the tile's inputs (12 × 2 KiB per span) stay
    // in L1 while every row passes; the spans after the first add to y.
    for b0 in (0..nb).step_by(SPAN_BLOCKS) {
        let bn = SPAN_BLOCKS.min(nb - b0);
        for jt in (0..t).step_by(TILE_INPUTS) {
            let nj = TILE_INPUTS.min(t - jt);
            for (i, &wr) in w.iter().enumerate() {
                let (sr, yr) = (&scales[i * nb + b0..i * nb + b0 + bn], unsafe { y.add(jt * ys + i) });
                // SAFETY: as the caller promised, for row i and inputs j0+jt..j0+jt+nj.
                unsafe { tile_n::<Q>(wr, sr, x, (j0 + jt, b0), nj, yr, ys) }
            }
        }
    }
}

/// `block` for the encoding `q` names at run time (`Q4K`, `Q5K`, `Q6K`).
///
/// # Safety
/// As `block`.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn block_of(q: u8, w: &[*const u8], scales: &[BlockScales], x: &Q8K, j0: usize, t: usize, y: *mut f32, ys: usize) {
    // SAFETY: the caller's promise, passed on.
    unsafe {
        match q {
            Q4K => block::<Q4K>(w, scales, x, j0, t, y, ys),
            Q5K => block::<Q5K>(w, scales, x, j0, t, y, ys),
            _ => block::<Q6K>(w, scales, x, j0, t, y, ys),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_n<const Q: u8>(w: *const u8, s: &[BlockScales], x: &Q8K, j: (usize, usize), n: usize, y: *mut f32, ys: usize) {
    unsafe {
        match n {
            12 => tile::<Q, 12>(w, s, x, j, y, ys),
            11 => tile::<Q, 11>(w, s, x, j, y, ys),
            10 => tile::<Q, 10>(w, s, x, j, y, ys),
            9 => tile::<Q, 9>(w, s, x, j, y, ys),
            8 => tile::<Q, 8>(w, s, x, j, y, ys),
            7 => tile::<Q, 7>(w, s, x, j, y, ys),
            6 => tile::<Q, 6>(w, s, x, j, y, ys),
            5 => tile::<Q, 5>(w, s, x, j, y, ys),
            4 => tile::<Q, 4>(w, s, x, j, y, ys),
            3 => tile::<Q, 3>(w, s, x, j, y, ys),
            2 => tile::<Q, 2>(w, s, x, j, y, ys),
            _ => tile::<Q, 1>(w, s, x, j, y, ys),
        }
    }
}

/// One super-block's 256 weight values as unsigned bytes, in four vectors of 64 consecutive
/// values (Q4_K: 0..15; Q5_K: 0..31; Q6_K: 0..63, the −32 is the scales' `ioff`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn weights<const Q: u8>(blk: *const u8) -> [std::arch::x86_64::__m512i; 4] {
    use std::arch::x86_64::*;
    unsafe {
        let lo4 = _mm512_set1_epi8(0x0F);
        if Q == Q4K {
            // 32 bytes hold values 64g..64g+32 in their low nibbles and 64g+32..64g+64 in their
            // high ones: both halves of a vector get the bytes, the upper half shifted by 4.
            let shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
            std::array::from_fn(|g| {
                let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.add(16 + 32 * g) as *const __m256i));
                _mm512_and_si512(_mm512_srlv_epi16(q, shift), lo4)
            })
        } else if Q == Q5K {
            // As Q4_K (nibbles at byte 48), plus the fifth bit: qh byte l bit 2g is the top bit
            // of value 64g + l, bit 2g + 1 that of 64g + 32 + l. 16-bit shifts move bit p of
            // each byte to bit 4 (left by 4 − p, or right by p − 4, never across into the
            // other byte's bit 4), per half of the vector.
            let shift = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(4));
            let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.add(16) as *const __m256i));
            let bit4 = _mm512_set1_epi8(0x10);
            let halves = |a: i16, b: i16| _mm512_inserti64x4::<1>(_mm512_set1_epi16(a), _mm256_set1_epi16(b));
            let top = [
                _mm512_sllv_epi16(qh, halves(4, 3)),
                _mm512_sllv_epi16(qh, halves(2, 1)),
                _mm512_srlv_epi16(qh, halves(0, 1)),
                _mm512_srlv_epi16(qh, halves(2, 3)),
            ];
            std::array::from_fn(|g| {
                let q = _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.add(48 + 32 * g) as *const __m256i));
                _mm512_or_si512(_mm512_and_si512(_mm512_srlv_epi16(q, shift), lo4), _mm512_and_si512(top[g], bit4))
            })
        } else {
            // Half h (128 values): ql bytes l (l < 32) hold values l and l+64 (low, high nibble),
            // bytes l+32 values l+32 and l+96; qh byte l bits 2i..2i+2 are the top bits of value
            // l + 32i. The top bits are moved to bits 4-5 of each byte by 16-bit shifts (a bit
            // crossing into the other byte is masked off).
            let hi2 = _mm512_set1_epi8(0x30);
            let up = _mm512_inserti64x4::<1>(_mm512_set1_epi16(4), _mm256_set1_epi16(2));
            let down = _mm512_inserti64x4::<1>(_mm512_setzero_si512(), _mm256_set1_epi16(2));
            let mut out = [_mm512_setzero_si512(); 4];
            for h in 0..2 {
                let ql = _mm512_loadu_si512(blk.add(64 * h) as *const __m512i);
                let qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.add(128 + 32 * h) as *const __m256i));
                let top_lo = _mm512_and_si512(_mm512_sllv_epi16(qh, up), hi2);
                let top_hi = _mm512_and_si512(_mm512_srlv_epi16(qh, down), hi2);
                out[2 * h] = _mm512_or_si512(_mm512_and_si512(ql, lo4), top_lo);
                out[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(ql), lo4), top_hi);
            }
            out
        }
    }
}

/// `acc + p ⊙ s` in 32-bit pair sums, one `vpdpwssd` (LLVM otherwise splits the intrinsic into
/// `vpmaddwd` + `vpaddd`, a third more work in the tile's inner loop).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn dpwssd(
    acc: std::arch::x86_64::__m512i,
    p: std::arch::x86_64::__m512i,
    s: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    let mut acc = acc;
    // SAFETY: register operands only; AVX-512 VNNI is enabled for this function.
    unsafe {
        std::arch::asm!("vpdpwssd {a}, {p}, {s}", a = inout(zmm_reg) acc, p = in(zmm_reg) p, s = in(zmm_reg) s, options(pure, nomem, nostack))
    };
    acc
}

/// One weight super-block (its 4 vectors `wv`, scale vectors `sv`, `off` / `ioff`, `dw`) times one
/// input's block: its int8 at `q8`, scale `dx`, sums at `bsums` / `sums`, into `acc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn block_step<const Q: u8>(
    acc: &mut std::arch::x86_64::__m512,
    wv: &[std::arch::x86_64::__m512i; 4],
    sv: &[std::arch::x86_64::__m512i; 2],
    (off, ioff, dw): (std::arch::x86_64::__m512, std::arch::x86_64::__m512i, std::arch::x86_64::__m512),
    q8: *const i8,
    dx: f32,
    bsums: *const i32,
    sums: *const f32,
) {
    use std::arch::x86_64::*;
    unsafe {
        // Four products per 32-bit lane (lane l of group g: values 64g + 4l..4l+4, 16-value
        // sub-block 4g + l/4), packed to 16 bits in pairs of groups (|sum| ≤ 4·63·127 fits),
        // then scaled and widened in one vpdpwssd per pair (`sv`'s layout matches the pack's).
        let z = _mm512_setzero_si512();
        let d: [__m512i; 4] = std::array::from_fn(|g| _mm512_dpbusd_epi32(z, wv[g], _mm512_loadu_si512(q8.add(64 * g) as *const __m512i)));
        let mut isum = _mm512_madd_epi16(_mm512_packs_epi32(d[0], d[1]), sv[0]);
        isum = dpwssd(isum, _mm512_packs_epi32(d[2], d[3]), sv[1]);
        if Q == Q6K {
            // Lane i: −32 · sc[i] · bsums[i] (the bsums' sign-extension bits meet the zero high
            // halves of ioff).
            isum = dpwssd(isum, _mm512_loadu_si512(bsums as *const __m512i), ioff);
        }
        *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_mul_ps(dw, _mm512_set1_ps(dx)), *acc);
        if Q == Q4K || Q == Q5K {
            *acc = _mm512_fnmadd_ps(off, _mm512_loadu_ps(sums), *acc);
        }
    }
}

/// A register tile: one weight row × `N` (≤ `TILE_INPUTS`) input rows over the blocks b0.. that
/// `s` holds the scales of, one f32 accumulator of 16 lanes per input, reduced at the end into
/// y (added when b0 > 0). The inputs are written out one by one (a macro) so the
/// accumulators stay in registers: as a loop, LLVM kept them on the stack.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const Q: u8, const N: usize>(w: *const u8, s: &[BlockScales], x: &Q8K, (j, b0): (usize, usize), y: *mut f32, ys: usize) {
    use std::arch::x86_64::*;
    const { assert!(N <= TILE_INPUTS) };
    let (k, nb) = (x.k, x.blocks());
    // vpermw indices for the packed pairs of groups (g, g+1): int16 i comes from 128-bit lane
    // L = i/8 of group g (i % 8 < 4) or g + 1, whose sub-block is 4g + L or 4g + 4 + L.
    let idx: [__m512i; 2] = std::array::from_fn(|h| {
        let v: [i16; 32] = std::array::from_fn(|i| (8 * h + i / 8 + if i % 8 < 4 { 0 } else { 4 }) as i16);
        // SAFETY: 64 bytes read from a 64-byte array.
        unsafe { _mm512_loadu_si512(v.as_ptr() as *const __m512i) }
    });
    let mut acc = [_mm512_setzero_ps(); TILE_INPUTS];
    unsafe {
        let (xq, xd, xb, xs) =
            (x.qs.as_ptr().add(j * k), x.d.as_ptr().add(j * nb), x.bsums.as_ptr().add(j * nb * 16), x.sums.as_ptr().add(j * nb * 16));
        for (b, bs) in s.iter().enumerate().map(|(i, bs)| (b0 + i, bs)) {
            let wv = weights::<Q>(w.add(b * block_bytes(Q)));
            let s_all = _mm512_castsi256_si512(_mm256_loadu_si256(bs.s.as_ptr() as *const __m256i));
            let sv: [__m512i; 2] = std::array::from_fn(|h| _mm512_permutexvar_epi16(idx[h], s_all));
            let scales = (_mm512_loadu_ps(bs.off.as_ptr()), _mm512_loadu_si512(bs.ioff.as_ptr() as *const __m512i), _mm512_set1_ps(bs.d));
            macro_rules! inputs {
                ($($c:literal)*) => {$(
                    if $c < N {
                        let row = $c * nb + b;
                        block_step::<Q>(&mut acc[$c], &wv, &sv, scales, xq.add($c * k + b * QK), *xd.add(row), xb.add(16 * row), xs.add(16 * row));
                    }
                )*};
            }
            inputs!(0 1 2 3 4 5 6 7 8 9 10 11);
        }
        for (c, a) in acc.iter().enumerate().take(N) {
            let v = _mm512_reduce_add_ps(*a);
            *y.add(c * ys) = if b0 == 0 { v } else { *y.add(c * ys) + v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic pseudo-random stream (xorshift), for test data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
    }

    /// Random but valid blocks: f16 scales of a realistic size, random bytes elsewhere.
    fn random_blocks(q: u8, rows: usize, nb: usize, rng: &mut Rng) -> Vec<u8> {
        let mut out = vec![0u8; rows * nb * block_bytes(q)];
        for blk in out.chunks_exact_mut(block_bytes(q)) {
            for b in blk.iter_mut() {
                *b = rng.next() as u8;
            }
            let d = half::f16::from_f32(0.01 + 0.01 * rng.unit()).to_le_bytes();
            if q == Q4K || q == Q5K {
                let dmin = half::f16::from_f32(0.005 * (1.0 + rng.unit())).to_le_bytes();
                blk[0..2].copy_from_slice(&d);
                blk[2..4].copy_from_slice(&dmin);
            } else {
                blk[208..210].copy_from_slice(&d);
            }
        }
        out
    }

    /// ggml's scalar `vec_dot_q4_K_q8_K` / `vec_dot_q6_K_q8_K` (generic): integer sums per
    /// block, then `d · dx · Σ sc·dot − (min or 32·sc terms)`, here in f64; with the sum of the
    /// terms' magnitudes, which bounds an f32 evaluation's rounding.
    fn reference(q: u8, row: &[u8], x: &Q8K, j: usize) -> (f32, f32) {
        let nb = x.blocks();
        let (mut sum, mut mag) = (0f64, 0f64);
        for b in 0..nb {
            let blk = &row[b * block_bytes(q)..(b + 1) * block_bytes(q)];
            let xq = &x.qs[j * x.k + b * QK..j * x.k + (b + 1) * QK];
            let dx = x.d[j * nb + b];
            let mut w = [0i32; QK];
            let (d, mut isum, mut offsum) = if q == Q4K || q == Q5K {
                // ggml's dequantize_row_q4_K / _q5_K: nibbles of 32 bytes per 64 values, and for
                // Q5_K bit 2g (low nibbles) / 2g + 1 (high) of qh[l] as 16.
                let at = if q == Q4K { 16 } else { 48 };
                for g in 0..4 {
                    for l in 0..32 {
                        let byte = blk[at + 32 * g + l];
                        let (h1, h2) = if q == Q5K { ((blk[16 + l] >> (2 * g)) & 1, (blk[16 + l] >> (2 * g + 1)) & 1) } else { (0, 0) };
                        w[64 * g + l] = i32::from(byte & 0xF) + 16 * i32::from(h1);
                        w[64 * g + 32 + l] = i32::from(byte >> 4) + 16 * i32::from(h2);
                    }
                }
                (half::f16::from_le_bytes([blk[0], blk[1]]).to_f32(), 0i64, 0f64)
            } else {
                for h in 0..2 {
                    for l in 0..32 {
                        let (ql, qh) = (&blk[64 * h..], blk[128 + 32 * h + l]);
                        w[128 * h + l] = i32::from((ql[l] & 0xF) | ((qh & 3) << 4)) - 32;
                        w[128 * h + l + 32] = i32::from((ql[l + 32] & 0xF) | (((qh >> 2) & 3) << 4)) - 32;
                        w[128 * h + l + 64] = i32::from((ql[l] >> 4) | (((qh >> 4) & 3) << 4)) - 32;
                        w[128 * h + l + 96] = i32::from((ql[l + 32] >> 4) | (((qh >> 6) & 3) << 4)) - 32;
                    }
                }
                (half::f16::from_le_bytes([blk[208], blk[209]]).to_f32(), 0i64, 0f64)
            };
            for v in 0..QK {
                let sc = if q != Q6K { i64::from(q4k_scale_min(v / 32, &blk[4..16]).0) } else { i64::from(blk[192 + v / 16] as i8) };
                isum += sc * i64::from(w[v]) * i64::from(xq[v]);
                mag += f64::from(d * dx).abs() * (sc * i64::from(w[v]) * i64::from(xq[v])).abs() as f64;
            }
            if q != Q6K {
                let dmin = half::f16::from_le_bytes([blk[2], blk[3]]).to_f32();
                for sb in 0..8 {
                    let bsum: i32 = xq[32 * sb..32 * sb + 32].iter().map(|&v| i32::from(v)).sum();
                    offsum += f64::from(dmin) * f64::from(q4k_scale_min(sb, &blk[4..16]).1) * f64::from(bsum);
                }
            }
            sum += f64::from(d) * f64::from(dx) * isum as f64 - f64::from(dx) * offsum;
            mag += f64::from(dx).abs() * offsum.abs();
        }
        (sum as f32, mag as f32)
    }

    #[test]
    fn quantize_matches_ggml() {
        let mut rng = Rng(7);
        let x: Vec<f32> = (0..3 * 512).map(|i| if i < 256 { 0.0 } else { 3.0 * rng.unit() }).collect();
        let q = quantize(&x, 3, 512);
        // The all-zero block.
        assert_eq!(q.d[0], 0.0);
        assert!(q.qs[..256].iter().all(|&v| v == 0));
        for b in 1..6 {
            let xs = &x[b * 256..(b + 1) * 256];
            let max = xs.iter().copied().fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let iscale = -127.0 / max;
            assert_eq!(q.d[b], 1.0 / iscale);
            for (i, &v) in xs.iter().enumerate() {
                assert_eq!(i32::from(q.qs[b * 256 + i]), ((iscale * v).round_ties_even() as i32).min(127));
            }
            // The largest magnitude lands on −127, never −128.
            assert!(q.qs[b * 256..(b + 1) * 256].contains(&-127));
            assert!(q.qs[b * 256..(b + 1) * 256].iter().all(|&v| v >= -127));
            let s0: i32 = q.qs[b * 256..b * 256 + 16].iter().map(|&v| i32::from(v)).sum();
            assert_eq!(q.sums[16 * b], q.d[b] * s0 as f32);
        }
    }

    /// The vector quantizer equals the scalar one bit for bit (ties at .5, a repeated largest
    /// magnitude of both signs, NaN and Inf blocks).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_quantize_matches_scalar() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rng = Rng(5);
        let mut blocks: Vec<Vec<f32>> = (0..20).map(|_| (0..QK).map(|_| 4.0 * rng.unit()).collect()).collect();
        blocks[0][3] = 8.0;
        blocks[0][200] = -8.0;
        blocks[1][7] = -8.0;
        blocks[1][9] = 8.0;
        blocks[2] = (0..QK).map(|i| (i as f32 - 128.0) / 127.0 * 0.5).collect();
        blocks[3][17] = f32::NAN;
        blocks[4][255] = f32::INFINITY;
        blocks[5] = vec![0.0; QK];
        for (i, x) in blocks.iter().enumerate() {
            let (mut q1, mut b1, mut q2, mut b2) = (vec![0i8; QK], vec![0i32; 16], vec![1i8; QK], vec![1i32; 16]);
            let d1 = quantize_block(x, &mut q1, &mut b1);
            let d2 = unsafe { quantize_block_avx512(x, &mut q2, &mut b2) };
            assert_eq!((d1.to_bits(), &q1, &b1), (d2.to_bits(), &q2, &b2), "block {i}");
        }
        assert!(quantize_block(&blocks[3], &mut [0; QK], &mut [0; 16]).is_nan());
    }

    /// The kernels equal ggml's scalar dot products, for every tile shape (rows and inputs that
    /// are not tile multiples) and both encodings.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn kernels_match_ggml_dot() {
        if !available() {
            eprintln!("skipped: no AVX-512 VNNI here");
            return;
        }
        let mut rng = Rng(11);
        for q in [Q4K, Q5K, Q6K] {
            let (rows, nb, t) = (5, SPAN_BLOCKS + 3, 27);
            let k = nb * QK;
            let w = random_blocks(q, rows, nb, &mut rng);
            let x: Vec<f32> = (0..t * k).map(|_| rng.unit()).collect();
            let xq = quantize(&x, t, k);
            let mut scales = vec![BlockScales::default(); rows * nb];
            let rb = nb * block_bytes(q);
            for r in 0..rows {
                row_scales(q, &w[r * rb..(r + 1) * rb], &mut scales[r * nb..(r + 1) * nb]);
            }
            let ptrs: Vec<*const u8> = (0..rows).map(|r| w[r * rb..].as_ptr()).collect();
            // Inputs 1..t of xq (an offset j0), into y with a row stride larger than `rows`.
            let ys = rows + 3;
            let mut y = vec![f32::NAN; (t - 1) * ys];
            unsafe { block_of(q, &ptrs, &scales, &xq, 1, t - 1, y.as_mut_ptr(), ys) }
            // A NaN input row gives NaN outputs (not whatever its rounding would make).
            let mut xn = x[..k].to_vec();
            xn[5] = f32::NAN;
            let xqn = quantize(&xn, 1, k);
            let mut yn = vec![0f32; rows];
            unsafe { block_of(q, &ptrs, &scales, &xqn, 0, 1, yn.as_mut_ptr(), rows) }
            assert!(yn.iter().all(|v| v.is_nan()), "{yn:?}");
            for j in 0..t - 1 {
                for r in 0..rows {
                    let (want, mag) = reference(q, &w[r * rb..(r + 1) * rb], &xq, j + 1);
                    let got = y[j * ys + r];
                    // f32 rounding: a few ulps of the largest partial sums (the weights here are
                    // random bytes, so the terms are large and cancel).
                    assert!((got - want).abs() <= 1e-6 * mag, "q {q} row {r} input {j}: {got} vs {want} (terms {mag})");
                }
            }
        }
    }
}
