//! Attention on the CPU in f32, in blocks with an online softmax (FlashAttention's recurrence):
//! memory is linear in sequence length (one `Q_BLOCK × K_BLOCK` score tile per task, never
//! `heads × T × T`), every thread works, and the two matmuls of each tile run in `gemm`.
//!
//! Layout follows the projections: queries `[n, heads · head_dim]`, keys and values
//! `[t, kv_heads · head_dim]` (a KV cache grows by appending rows), output like the queries.

use rayon::prelude::*;

/// Queries per task.
const Q_BLOCK: usize = 64;
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
            // SAFETY: S[bq, bk] = Q[i0.., h] · K[j0.., g]ᵀ; strides index inside q, k and sc.
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
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for (r, row) in sc.chunks_exact_mut(bk).enumerate() {
                let qpos = past + i0 + r;
                let mut mx = m[r];
                for (c, x) in row.iter_mut().enumerate() {
                    let kpos = j0 + c;
                    let visible = kpos <= qpos && s.window.is_none_or(|w| qpos - kpos < w);
                    *x = if visible {
                        let y = *x * s.scale;
                        match s.softcap {
                            Some(cap) => (y / cap).tanh() * cap,
                            None => y,
                        }
                    } else {
                        f32::NEG_INFINITY
                    };
                    mx = mx.max(*x);
                }
                if mx == f32::NEG_INFINITY {
                    // Nothing visible in this tile for this query yet.
                    row.fill(0.0);
                    continue;
                }
                let corr = (m[r] - mx).exp();
                let mut sum = 0f32;
                for x in row.iter_mut() {
                    *x = (*x - mx).exp();
                    sum += *x;
                }
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

/// Rotate-half rope in place on `x` `[n, heads · head_dim]`, row `i` with the angles of table
/// row `i` (`cos`, `sin`: `[n, head_dim / 2]`).
pub fn rope_in_place(x: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    x.par_chunks_mut(heads * head_dim).enumerate().for_each(|(i, row)| {
        let (c, s) = (&cos[i * half..(i + 1) * half], &sin[i * half..(i + 1) * half]);
        for head in row.chunks_exact_mut(head_dim) {
            let (a, b) = head.split_at_mut(half);
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
}
