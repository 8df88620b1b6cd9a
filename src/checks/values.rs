//! Value scan: per floating tensor, NaN / +Inf / -Inf / zero counts, the largest finite |w|, and
//! values sitting at the dtype's maximum: f16 ±65504 (an overflow clamped during a save or
//! merge), FP8 E4M3 ±448 (values clipped by a quantization scale too small for them).
//!
//! Streams over the memory map in fixed chunks on all cores (rayon); never copies a tensor.

use rayon::prelude::*;

use super::fingerprint::{self, Digest, Fingerprint, Fingerprints};
use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::dtype::{f8_e4m3_to_f32, f8_e5m2_to_f32, Dtype};
use crate::format::safetensors::{SafetensorsFile, TensorInfo};

/// Largest |w| accepted in a weight. Trained LLM weights, norms included, stay far below this
/// (the largest seen in Llama/Qwen/Gemma releases are a few hundred in norm vectors); 1e4 is the
/// level the lint issue names as absurd, and 6.5× below the f16 maximum.
pub const ABSURD_MAGNITUDE: f64 = 1e4;

/// Largest finite f16.
pub const F16_MAX: f64 = 65504.0;

/// Elements per parallel work item: big enough to amortise scheduling, small enough to balance.
const CHUNK_ELEMS: usize = 1 << 20;

#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct ValueStats {
    pub count: u64,
    pub nan: u64,
    pub pos_inf: u64,
    pub neg_inf: u64,
    pub zero: u64,
    pub max_abs: f64,
    /// Values at the dtype's largest magnitude: |v| == 65504 in an F16 tensor, 448 in F8_E4M3.
    pub saturated: u64,
}

impl ValueStats {
    fn add(&mut self, v: f64) {
        self.count += 1;
        if v.is_nan() {
            self.nan += 1;
        } else if v == f64::INFINITY {
            self.pos_inf += 1;
        } else if v == f64::NEG_INFINITY {
            self.neg_inf += 1;
        } else {
            if v == 0.0 {
                self.zero += 1;
            }
            let a = v.abs();
            if a > self.max_abs {
                self.max_abs = a;
            }
        }
    }

    fn merge(mut self, o: ValueStats) -> ValueStats {
        self.count += o.count;
        self.nan += o.nan;
        self.pos_inf += o.pos_inf;
        self.neg_inf += o.neg_inf;
        self.zero += o.zero;
        self.max_abs = self.max_abs.max(o.max_abs);
        self.saturated += o.saturated;
        self
    }
}

/// Counts over the raw bits of an IEEE-style float: with `abs = bits & ABS`, a value is NaN when
/// `abs > EXP`, ±∞ when `abs == EXP` (sign bit `SIGN`), zero when `abs == 0`, and for finite values
/// the integer order of `abs` is the order of |x| — so the whole scan is integer compares and
/// maxima that vectorise, with no conversion per element.
#[inline]
fn scan_bits<const EXP: u32, const ABS: u32, const SIGN: u32>(bits: impl Iterator<Item = u32>) -> (ValueStats, u32) {
    let (mut count, mut nan, mut pinf, mut ninf, mut zero) = (0u32, 0u32, 0u32, 0u32, 0u32);
    let mut max_bits = 0u32;
    for b in bits {
        let a = b & ABS;
        count += 1;
        nan += (a > EXP) as u32;
        let inf = (a == EXP) as u32;
        ninf += inf & ((b & SIGN) != 0) as u32;
        pinf += inf & ((b & SIGN) == 0) as u32;
        zero += (a == 0) as u32;
        max_bits = max_bits.max(if a < EXP { a } else { 0 });
    }
    let s = ValueStats {
        count: count as u64,
        nan: nan as u64,
        pos_inf: pinf as u64,
        neg_inf: ninf as u64,
        zero: zero as u64,
        max_abs: 0.0,
        saturated: 0,
    };
    (s, max_bits)
}

/// Scans one tensor's bytes. `None` for dtypes that are not scanned (integers, packed quants).
pub fn scan(dtype: Dtype, bytes: &[u8]) -> Option<ValueStats> {
    scan_inner(dtype, bytes, false).map(|(s, _)| s)
}

/// `scan` plus the tensor's fingerprint digest (raw-byte hash, sum and sum of squares of the
/// finite values) in the same pass over each chunk while it is in cache.
pub fn scan_digest(dtype: Dtype, bytes: &[u8]) -> Option<(ValueStats, Digest)> {
    scan_inner(dtype, bytes, true)
}

/// Sum and sum of squares of the finite values, four f64 lanes so it vectorises.
#[inline]
fn moments(vals: impl Iterator<Item = f32>) -> (f64, f64, u64) {
    let (mut s, mut q, mut n) = ([0f64; 4], [0f64; 4], 0u64);
    let mut lane = 0;
    for v in vals {
        let finite = v.is_finite();
        let x = if finite { v as f64 } else { 0.0 };
        s[lane] += x;
        q[lane] += x * x;
        n += finite as u64;
        lane = (lane + 1) & 3;
    }
    (s.iter().sum(), q.iter().sum(), n)
}

/// Elements of a chunk digested in full; a larger chunk is digested `DIGEST_BLOCK` elements in
/// every `DIGEST_STRIDE`. Counted in elements, not bytes, so an f32 tensor and its bf16 copy have
/// their moments taken over the same elements. Digesting every byte cost 2–4× the scan itself
/// (benches/value_scan.rs), one block in 64 still 15 % for f32; one in 128 keeps it under the
/// 10 % budget of issue 16. The tensors covered in full (≤ 16 Ki elements: norms, biases) are
/// the ones a stride would miss.
const DIGEST_FULL: usize = 16 << 10;
const DIGEST_BLOCK: usize = 8;
const DIGEST_STRIDE: usize = 128 * DIGEST_BLOCK;

fn digest_chunk(dtype: Dtype, chunk: &[u8], offset: u64) -> Digest {
    let width = (dtype.bits() / 8) as usize;
    if chunk.len() <= DIGEST_FULL * width {
        return digest_bytes(dtype, chunk, offset);
    }
    chunk
        .chunks(DIGEST_STRIDE * width)
        .enumerate()
        .map(|(i, c)| digest_bytes(dtype, &c[..c.len().min(DIGEST_BLOCK * width)], offset + (i * DIGEST_STRIDE * width) as u64))
        .fold(Digest::default(), Digest::merge)
}

fn digest_bytes(dtype: Dtype, chunk: &[u8], offset: u64) -> Digest {
    let hash = fingerprint::hash_bytes(chunk, offset);
    let (sum, sum_sq, finite) = match dtype {
        Dtype::F32 => moments(chunk.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        Dtype::BF16 => moments(chunk.chunks_exact(2).map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))),
        Dtype::F16 => moments(chunk.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())),
        Dtype::F64 => moments(chunk.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)),
        Dtype::F8_E4M3 => moments(chunk.iter().map(|&b| f8_e4m3_to_f32(b))),
        Dtype::F8_E5M2 => moments(chunk.iter().map(|&b| f8_e5m2_to_f32(b))),
        _ => (0.0, 0.0, 0),
    };
    Digest { hash, sum, sum_sq, finite }
}

fn scan_inner(dtype: Dtype, bytes: &[u8], digest: bool) -> Option<(ValueStats, Digest)> {
    let width = match dtype {
        Dtype::F64 => 8,
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        Dtype::F8_E4M3 | Dtype::F8_E5M2 => 1,
        _ => return None,
    };
    let chunk_bytes = CHUNK_ELEMS * width;
    let (stats, dig) = bytes
        .par_chunks(chunk_bytes)
        .enumerate()
        .map(|(ci, chunk)| {
            // Stats first: the digest then reads the chunk from cache.
            let st = stats_chunk(dtype, chunk);
            let d = if digest { digest_chunk(dtype, chunk, (ci * chunk_bytes) as u64) } else { Digest::default() };
            (st, d)
        })
        .reduce(|| (ValueStats::default(), Digest::default()), |a, b| (a.0.merge(b.0), a.1.merge(b.1)));
    Some((stats, dig))
}

fn stats_chunk(dtype: Dtype, chunk: &[u8]) -> ValueStats {
    fn u16s(c: &[u8]) -> impl Iterator<Item = u32> + '_ {
        c.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]]) as u32)
    }
    match dtype {
        Dtype::F64 => {
            let mut s = ValueStats::default();
            chunk.chunks_exact(8).for_each(|b| s.add(f64::from_le_bytes(b.try_into().unwrap())));
            s
        }
        Dtype::F32 => {
            let bits = chunk.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let (mut s, m) = scan_bits::<0x7f80_0000, 0x7fff_ffff, 0x8000_0000>(bits);
            s.max_abs = f32::from_bits(m) as f64;
            s
        }
        // bf16 is the top half of an f32.
        Dtype::BF16 => {
            let (mut s, m) = scan_bits::<0x7f80, 0x7fff, 0x8000>(u16s(chunk));
            s.max_abs = f32::from_bits(m << 16) as f64;
            s
        }
        Dtype::F16 => {
            let (mut s, m) = scan_bits::<0x7c00, 0x7fff, 0x8000>(u16s(chunk));
            s.max_abs = half::f16::from_bits(m as u16).to_f64();
            // ±65504 is 0x7bff / 0xfbff.
            s.saturated = u16s(chunk).map(|b| (b & 0x7fff == 0x7bff) as u64).sum();
            s
        }
        Dtype::F8_E4M3 | Dtype::F8_E5M2 => {
            let mut s = ValueStats::default();
            let dec = if dtype == Dtype::F8_E4M3 { f8_e4m3_to_f32 } else { f8_e5m2_to_f32 };
            chunk.iter().for_each(|&b| s.add(dec(b) as f64));
            if dtype == Dtype::F8_E4M3 {
                // ±448 is 0x7e / 0xfe.
                s.saturated = chunk.iter().map(|&b| (b & 0x7f == 0x7e) as u64).sum();
            }
            s
        }
        _ => unreachable!("filtered above"),
    }
}

/// Every scanned float tensor of `dir` through the value scan, once: its file, info, stats and
/// fingerprint. A tensor whose bytes fall outside its file is left to integrity. Fingerprints are
/// keyed by canonical name (`names::canonical_name`) so lineages line up across VLM layouts.
fn scan_all(dir: &crate::format::hf::HfDir) -> impl Iterator<Item = (&SafetensorsFile, &TensorInfo, ValueStats, Fingerprint)> {
    dir.tensors().filter(|(_, t)| t.dtype.is_scanned_float()).filter_map(|(f, t)| {
        let bytes = f.bytes(t)?;
        let (s, d) = scan_digest(t.dtype, bytes)?;
        let print = Fingerprint::new(t.dtype, &t.shape, bytes, s.count, s.max_abs, &d);
        Some((f, t, s, print))
    })
}

/// Fingerprints of every scanned float tensor of an HF directory: the value scan run for them
/// (bisect uses this for a step lint did not fingerprint, e.g. the base of a base+adapter step).
pub fn fingerprints(dir: &crate::format::hf::HfDir) -> Fingerprints {
    let mut out = Fingerprints::default();
    for (_, t, _, print) in scan_all(dir) {
        out.tensors.insert(crate::format::hf::canonical_name(&t.name).into_owned(), print);
    }
    out
}

pub fn check(ctx: &Context, out: &mut Findings) {
    check_fingerprinted(ctx, out);
}

/// `check`, keeping each scanned tensor's fingerprint (computed in the same pass) for the
/// lineage checks.
pub fn check_fingerprinted(ctx: &Context, out: &mut Findings) -> Fingerprints {
    let mut scanned: Vec<(String, &TensorInfo, ValueStats)> = Vec::new();
    let mut prints = Fingerprints::default();
    for (f, t, s, print) in scan_all(ctx.dir) {
        prints.tensors.insert(crate::format::hf::canonical_name(&t.name).into_owned(), print);
        scanned.push((ctx.dir.rel(&f.path), t, s));
    }
    for (file, t, s) in scanned {
        let name = &t.name;
        let non_finite = s.nan + s.pos_inf + s.neg_inf;
        if non_finite > 0 {
            let id = if s.nan > 0 { ids::VALUES_NAN } else { ids::VALUES_INF };
            out.push(
                Finding::new(
                    id,
                    Severity::Error,
                    &file,
                    format!(
                        "tensor `{name}` has {} NaN, {} +Inf and {} -Inf values out of {}",
                        s.nan, s.pos_inf, s.neg_inf, s.count
                    ),
                )
                .field(name.clone())
                .hint("the weights overflowed or diverged: redo the step that wrote them in f32/bf16 (fp16 merges overflow), or lower the learning rate"),
            );
        }
        if s.count > 0 && s.zero == s.count {
            let matrix = t.shape.len() >= 2;
            out.push(
                Finding::new(
                    ids::VALUES_ALL_ZERO,
                    if matrix { Severity::Warning } else { Severity::Info },
                    &file,
                    format!("tensor `{name}` is all zeros ({} values)", s.count),
                )
                .field(name.clone())
                .hint(if matrix {
                    "a weight matrix of zeros carries no signal: a failed load, merge or conversion wrote it"
                } else {
                    "zero biases or zero (1+w)-style norm weights can be legitimate; check the step that wrote it"
                }),
            );
        }
        // NVFP4's global scales divide (448 · 6 / max |w|): large by construction.
        if s.max_abs > ABSURD_MAGNITUDE && !name.ends_with("_global_scale") {
            out.push(
                Finding::new(
                    ids::VALUES_HUGE,
                    Severity::Warning,
                    &file,
                    format!("tensor `{name}` has max |w| = {:.4e}, above {ABSURD_MAGNITUDE:e}", s.max_abs),
                )
                .field(name.clone())
                .hint("weights this large overflow fp16 activations: suspect a wrong LoRA scale, a bad merge or diverged training"),
            );
        }
        if t.dtype == Dtype::F16 && s.saturated > 0 {
            out.push(
                Finding::new(
                    ids::VALUES_F16_SATURATED,
                    Severity::Warning,
                    &file,
                    format!("tensor `{name}` has {} values at ±65504, the f16 maximum (overflow clamped in a save or merge)", s.saturated),
                )
                .field(name.clone())
                .hint("redo the merge/save in f32 or bf16, then cast"),
            );
        }
        if t.dtype == Dtype::F8_E4M3 {
            fp8_saturation(ctx, &file, t, &s, out);
        }
    }
    prints
}

/// A quantizer puts each scale unit's own max |w| at ±448 (one value, a few more that round up to
/// it); many more there means values were clipped — a static or edited scale too small for them.
fn fp8_saturation(ctx: &Context, file: &str, t: &TensorInfo, s: &ValueStats, out: &mut Findings) {
    let Some(prefix) = t.name.strip_suffix(".weight") else { return };
    let Some((_, scale)) = ctx.dir.tensor(&format!("{prefix}.weight_scale")) else { return };
    let units: u64 = scale.shape.iter().product::<u64>().max(1);
    // Large blocks (128 × 128) round a few values next to their max up to it too: 0.1 % of the
    // values is still not clipping (a scale half too small clips ~8 % of Gaussian weights).
    if s.saturated > (2 * units).max(s.count / 1000) {
        out.push(
            Finding::new(
                ids::QUANT_FP8_SATURATED,
                Severity::Warning,
                file,
                format!(
                    "`{}`: {} of {} FP8 values sit at ±448, the format's maximum, for {units} scale(s) (a scale puts one there): values were clipped",
                    t.name, s.saturated, s.count
                ),
            )
            .field(t.name.clone())
            .hint("the weight scale is too small for the weights (a static, calibrated or edited scale): re-quantize with min-max weight scales"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn counts_nan_inf_zero_and_max() {
        let s = scan(Dtype::F32, &f32_bytes(&[0.0, -3.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 2.0])).unwrap();
        assert_eq!((s.count, s.nan, s.pos_inf, s.neg_inf, s.zero), (6, 1, 1, 1, 1));
        assert_eq!(s.max_abs, 3.5);
    }

    #[test]
    fn f16_saturation_and_bf16_decode() {
        let b: Vec<u8> = [65504.0f32, -65504.0, 1.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        let s = scan(Dtype::F16, &b).unwrap();
        assert_eq!(s.saturated, 2);
        let b: Vec<u8> = [1.0f32, -2.0].iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect();
        assert_eq!(scan(Dtype::BF16, &b).unwrap().max_abs, 2.0);
    }

    #[test]
    fn chunked_parallel_scan_equals_serial() {
        let v: Vec<f32> = (0..(CHUNK_ELEMS * 3 + 17)).map(|i| ((i % 1000) as f32) - 500.0).collect();
        let s = scan(Dtype::F32, &f32_bytes(&v)).unwrap();
        assert_eq!(s.count, v.len() as u64);
        assert_eq!(s.zero, v.iter().filter(|&&x| x == 0.0).count() as u64);
        assert_eq!(s.max_abs, 500.0);
    }

    #[test]
    fn integer_tensors_are_not_scanned() {
        assert!(scan(Dtype::I32, &[0; 8]).is_none());
    }

    /// The bit-level scan agrees with a plain float loop on random bit patterns (NaN payloads,
    /// infinities, subnormals, signed zeros included).
    #[test]
    fn bit_scan_matches_float_reference() {
        let mut x = 0x2545f4914f6cdd1du64;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let reference = |vals: &[f64]| {
            let mut s = ValueStats::default();
            vals.iter().for_each(|&v| s.add(v));
            s
        };
        let f32s: Vec<u32> = (0..50_000).map(|_| rnd() as u32).collect();
        let b: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let want = reference(&f32s.iter().map(|&v| f32::from_bits(v) as f64).collect::<Vec<_>>());
        assert_eq!(scan(Dtype::F32, &b).unwrap(), want);
        let u16s: Vec<u16> = (0..50_000).map(|_| rnd() as u16).collect();
        let b: Vec<u8> = u16s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let want = reference(&u16s.iter().map(|&v| half::bf16::from_bits(v).to_f64()).collect::<Vec<_>>());
        assert_eq!(scan(Dtype::BF16, &b).unwrap(), want);
        let mut want = reference(&u16s.iter().map(|&v| half::f16::from_bits(v).to_f64()).collect::<Vec<_>>());
        want.saturated = u16s.iter().filter(|&&v| half::f16::from_bits(v).to_f64().abs() == F16_MAX).count() as u64;
        assert_eq!(scan(Dtype::F16, &b).unwrap(), want);
    }

    // --- fingerprints (checks::fingerprint) over this scan's digest ---

    fn fingerprint_mix(x: u64) -> u64 {
        x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29) ^ x
    }

    fn fp(dtype: Dtype, v: &[f32]) -> Fingerprint {
        let bytes: Vec<u8> = match dtype {
            Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::BF16 => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
            Dtype::F16 => v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
            _ => unreachable!(),
        };
        let (s, d) = scan_digest(dtype, &bytes).unwrap();
        Fingerprint::new(dtype, &[v.len() as u64], &bytes, s.count, s.max_abs, &d)
    }

    fn values(n: usize, seed: u64) -> Vec<f32> {
        (0..n).map(|i| ((fingerprint_mix(i as u64 ^ seed) >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1).collect()
    }

    #[test]
    fn equal_tensors_match_and_changed_ones_do_not() {
        // ≤ 16 Ki elements: digested in full, so any changed element changes the hash.
        let v = values(16_000, 1);
        assert!(fp(Dtype::F32, &v).same_values(&fp(Dtype::F32, &v)));
        let mut w = v.clone();
        w[12345] += 0.01;
        let (a, b) = (fp(Dtype::F32, &v), fp(Dtype::F32, &w));
        assert_ne!(a.hash, b.hash, "one changed element changes the hash");
        assert!(!a.same_values(&b));
    }

    #[test]
    fn a_cast_copy_matches_across_precisions_but_a_trained_one_does_not() {
        let v = values(70_000, 2);
        let f32_ = fp(Dtype::F32, &v);
        assert!(f32_.same_values(&fp(Dtype::BF16, &v)) && fp(Dtype::BF16, &v).same_values(&f32_));
        assert!(f32_.same_values(&fp(Dtype::F16, &v)));
        // An update of 1e-3 (a small fine-tuning step) is visible through bf16 rounding.
        let trained: Vec<f32> = v.iter().enumerate().map(|(i, x)| x + if i % 2 == 0 { 1e-3 } else { -1e-3 }).collect();
        assert!(!f32_.same_values(&fp(Dtype::BF16, &trained)));
    }
}
