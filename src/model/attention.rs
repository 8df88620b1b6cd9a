//! Attention on the CPU in f32, in blocks with an online softmax (FlashAttention's recurrence):
//! memory is linear in sequence length (one `Q_BLOCK × K_BLOCK` score tile per task, never
//! `heads × T × T`), every thread works. The two matmuls of each tile run in a register-tile
//! kernel of our own (`bcast`: 6 rows × 64 columns, 24 AVX-512 accumulators, the rows' values
//! broadcast) on CPUs with AVX-512F — the keys are transposed once per call so both products read
//! contiguous rows — and in `gemm` elsewhere (or under `CKPTCHECK_MATMUL=gemm`).
//!
//! Layout follows the projections: queries `[n, heads · head_dim]`, keys and values
//! `[t, kv_heads · head_dim]` (a KV cache grows by appending rows), output like the queries.

use rayon::prelude::*;

use super::vmath;

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
    let fast = super::dot::available();
    // kt[(g · hd + d) · t + j] = k[j · kw + g · hd + d]: a score tile's keys side by side.
    let kt = if fast { transpose_keys(k, t, s.kv_heads, hd) } else { Vec::new() };
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
            if fast {
                // SAFETY: S[bq, bk] = β · Q[i0.., h] · Kᵀ[g, .., j0..]; rows of q, kt and sc.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    bcast::gemm(
                        bq,
                        bk,
                        hd,
                        q.as_ptr().add(i0 * qw + h * hd),
                        qw,
                        kt.as_ptr().add(g * hd * t + j0),
                        t,
                        sc.as_mut_ptr(),
                        bk,
                        beta,
                        false,
                    )
                };
            } else {
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
                let sum = vmath::exp_shifted_sum(seen, mx);
                l[r] = l[r] * corr + sum;
                m[r] = mx;
                if corr != 1.0 {
                    acc[r * hd..(r + 1) * hd].iter_mut().for_each(|a| *a *= corr);
                }
            }
            if fast {
                // SAFETY: acc[bq, hd] += P[bq, bk] · V[j0.., g]; rows of sc, v and acc.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    bcast::gemm(bq, hd, bk, sc.as_ptr(), bk, v.as_ptr().add(j0 * kw + g * hd), kw, acc.as_mut_ptr(), hd, 1.0, true)
                };
            } else {
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

/// `k` `[t, kv_heads · hd]` as `[kv_heads · hd, t]`, in blocks of 64 keys (each block's `hd`
/// output rows stay in L1), the blocks in parallel.
fn transpose_keys(k: &[f32], t: usize, kv_heads: usize, hd: usize) -> Vec<f32> {
    const KEYS: usize = 64;
    let kw = kv_heads * hd;
    let mut kt = vec![0f32; kw * t];
    let dst = Out(kt.as_mut_ptr());
    let chunks = t.div_ceil(KEYS);
    (0..kv_heads * chunks).into_par_iter().for_each(|task| {
        let (g, j0) = (task / chunks, task % chunks * KEYS);
        for j in j0..(j0 + KEYS).min(t) {
            for d in 0..hd {
                // SAFETY: (g · hd + d) · t + j < kw · t; each (g, key block) task writes its own
                // columns j0..j0 + 64 of rows g · hd.. only.
                unsafe { *dst.at((g * hd + d) * t + j) = k[j * kw + g * hd + d] };
            }
        }
    });
    kt
}

#[cfg(target_arch = "x86_64")]
mod bcast {
    //! `C = α · A·B (+ C)` for row-major f32 operands with row strides, as a register tile of 6
    //! rows of A × 64 columns of B: each step loads one 64-wide row of B (4 vectors), broadcasts
    //! 6 values of A and adds 24 products into 24 accumulators. Column tails use masked loads and
    //! stores (nothing past a row is read or written); sums run in `d` order, as in gemm.
    use std::arch::x86_64::*;

    const ROWS: usize = 6;
    const COLS: usize = 64;

    /// `C[r, c] = α · Σ_d A[r, d] · B[d, c]`, plus the old `C[r, c]` when `add`, for `r < m`,
    /// `c < n`, `d < kd`.
    ///
    /// # Safety
    /// `dot::available()`; `a` valid for `m` rows of `kd` values at stride `lda`, `b` for `kd`
    /// rows of `n` at `ldb`, `c` for `m` rows of `n` at `ldc`, and `c` not aliased meanwhile.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn gemm(
        m: usize,
        n: usize,
        kd: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        alpha: f32,
        add: bool,
    ) {
        let op = Op { kd, lda, ldb, ldc, alpha, add };
        for c0 in (0..n).step_by(COLS) {
            let nc = COLS.min(n - c0);
            for r0 in (0..m).step_by(ROWS) {
                let nr = ROWS.min(m - r0);
                // SAFETY: rows r0..r0 + nr and columns c0..c0 + nc are inside the operands.
                unsafe {
                    let (a, b, c) = (a.add(r0 * lda), b.add(c0), c.add(r0 * ldc + c0));
                    match nr {
                        6 => cols::<6>(&op, nc, a, b, c),
                        5 => cols::<5>(&op, nc, a, b, c),
                        4 => cols::<4>(&op, nc, a, b, c),
                        3 => cols::<3>(&op, nc, a, b, c),
                        2 => cols::<2>(&op, nc, a, b, c),
                        _ => cols::<1>(&op, nc, a, b, c),
                    }
                }
            }
        }
    }

    struct Op {
        kd: usize,
        lda: usize,
        ldb: usize,
        ldc: usize,
        alpha: f32,
        add: bool,
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn cols<const R: usize>(op: &Op, nc: usize, a: *const f32, b: *const f32, c: *mut f32) {
        // SAFETY: the caller's bounds; `nc` columns, 1..=64.
        unsafe {
            match nc.div_ceil(16) {
                4 => tile::<R, 4>(op, nc, a, b, c),
                3 => tile::<R, 3>(op, nc, a, b, c),
                2 => tile::<R, 2>(op, nc, a, b, c),
                _ => tile::<R, 1>(op, nc, a, b, c),
            }
        }
    }

    /// `R` rows × `V` vectors of 16 columns, the last one masked to `nc`.
    #[target_feature(enable = "avx512f")]
    // Index loops over the register arrays: constant trip counts LLVM unrolls into registers.
    #[allow(clippy::needless_range_loop)]
    unsafe fn tile<const R: usize, const V: usize>(op: &Op, nc: usize, a: *const f32, b: *const f32, c: *mut f32) {
        // nc − (V − 1) · 16 is 1..=16 columns.
        let tail = ((1u32 << (nc - (V - 1) * 16)) - 1) as __mmask16;
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        for d in 0..op.kd {
            let mut bv = [_mm512_setzero_ps(); V];
            for v in 0..V {
                // SAFETY: row d of B has nc ≥ v · 16 (+ the masked tail) columns here.
                bv[v] = unsafe {
                    let p = b.add(d * op.ldb + v * 16);
                    if v + 1 == V {
                        _mm512_maskz_loadu_ps(tail, p)
                    } else {
                        _mm512_loadu_ps(p)
                    }
                };
            }
            for r in 0..R {
                // SAFETY: A[r, d] exists (r < R rows, d < kd).
                let av = _mm512_set1_ps(unsafe { *a.add(r * op.lda + d) });
                for v in 0..V {
                    acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
                }
            }
        }
        let alpha = _mm512_set1_ps(op.alpha);
        for r in 0..R {
            for v in 0..V {
                let m = if v + 1 == V { tail } else { 0xffff };
                // SAFETY: C[r, v · 16..] inside the nc columns (masked), owned by the caller.
                unsafe {
                    let p = c.add(r * op.ldc + v * 16);
                    let mut o = _mm512_mul_ps(acc[r][v], alpha);
                    if op.add {
                        o = _mm512_add_ps(o, _mm512_maskz_loadu_ps(m, p));
                    }
                    _mm512_mask_storeu_ps(p, m, o);
                }
            }
        }
    }
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
        for (n, past, window, softcap, hd) in [
            (70, 0, None, None, 8),
            (5, 300, None, None, 8),
            (300, 20, Some(100), Some(20.0), 8),
            (1, 600, Some(50), None, 8),
            (141, 3, None, None, 64),
            (37, 290, Some(200), None, 80),
            (9, 0, None, None, 128),
        ] {
            let s = AttnShape { heads: 4, kv_heads: 2, head_dim: hd, scale: 0.35 / (hd as f32 / 8.0).sqrt(), softcap, window };
            let t = past + n;
            let (q, k, v) = (data(n * 4 * hd, 1), data(t * 2 * hd, 2), data(t * 2 * hd, 3));
            let mut out = vec![0f32; n * 4 * hd];
            attend(&s, &q, n, &k, &v, past, &mut out);
            let want = naive(&s, &q, n, &k, &v, past);
            let worst = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-4, "n={n} past={past} window={window:?}: worst {worst}");
        }
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
