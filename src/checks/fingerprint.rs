//! Weight fingerprints: per tensor a cheap signature — moments, a hash of the raw bytes, and the
//! values at a few fixed positions — that tells whether two checkpoints of the same shape hold
//! the same tensor, the same values in another precision, or the same values moved (another
//! layer, permuted rows, transposed).
//!
//! The moments and the hash are computed inside lint's value scan (`values::scan_digest`, in the
//! same pass over the memory map) — over every element of a tensor up to 16 Ki elements, over 8
//! elements in every 1024 of a larger one (the scan's time budget) — and the samples are read
//! afterwards, a few elements per tensor. So two large tensors that differ only outside the
//! digested elements and the samples pass for equal: fine-tuning changes nearly every weight, a
//! one-element edit may not show. This module only describes tensors; matching a step's fingerprints against its parent's is
//! `checks::lineage_weights`. It never decodes through `model/` (quantized GGUF blocks are not
//! fingerprinted: their values differ from the source by design).

use std::collections::BTreeMap;

use crate::format::dtype::{f8_e4m3_to_f32, f8_e5m2_to_f32, Dtype};

/// Values sampled per tensor. Two different trained tensors agree on none of them; 32 stratified
/// positions make an accidental match of a changed tensor (every sample unchanged after rounding)
/// need every one of 32 independent weights to have moved less than half a unit in the last place.
pub const SAMPLES: usize = 32;

/// What the value scan adds per tensor: a hash of the raw bytes and the first two moments of the
/// finite values (f64 sums).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Digest {
    pub hash: u64,
    pub sum: f64,
    pub sum_sq: f64,
    /// Finite values summed.
    pub finite: u64,
}

impl Digest {
    /// Order-independent combination of chunk digests: the word hash is a sum over positions,
    /// so rayon may reduce chunks in any order.
    pub fn merge(self, o: Digest) -> Digest {
        Digest {
            hash: self.hash.wrapping_add(o.hash),
            sum: self.sum + o.sum,
            sum_sq: self.sum_sq + o.sum_sq,
            finite: self.finite + o.finite,
        }
    }
}

/// One tensor's fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// Storage type: the precision two fingerprints are compared in is the coarser one's.
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub count: u64,
    pub mean: f64,
    pub rms: f64,
    pub max_abs: f64,
    /// Hash of the raw bytes digested (all of a tensor up to 16 Ki elements, a stride of a larger one).
    pub hash: u64,
    /// Values at `sample_positions(count)`.
    pub samples: Vec<f32>,
}

/// Fingerprints of a checkpoint's tensors by (HF) name.
#[derive(Debug, Clone, Default)]
pub struct Fingerprints {
    pub tensors: BTreeMap<String, Fingerprint>,
}

const K1: u64 = 0x9e37_79b9_7f4a_7c15;
const K2: u64 = 0xbf58_476d_1ce4_e5b9;
const K3: u64 = 0x94d0_49bb_1331_11eb;

#[inline]
fn mix(x: u64) -> u64 {
    let m = x.wrapping_mul(K2);
    m ^ (m >> 31)
}

/// splitmix64's finaliser.
#[inline]
fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(K2);
    z = (z ^ (z >> 27)).wrapping_mul(K3);
    z ^ (z >> 31)
}

/// Hash of `bytes` that starts at byte `offset` of the tensor (a multiple of 8): a sum over the
/// 8-byte words of a nonlinear mix of the word and its position, so moving a word changes it and
/// chunks combine in any order (`Digest::merge`).
pub fn hash_bytes(bytes: &[u8], offset: u64) -> u64 {
    let base = offset / 8;
    let mut acc = [0u64; 4];
    let mut blocks = bytes.chunks_exact(32);
    let mut i = base;
    for b in &mut blocks {
        for (l, a) in acc.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[l * 8..l * 8 + 8].try_into().expect("8 bytes"));
            *a = a.wrapping_add(mix(w ^ (i + l as u64).wrapping_mul(K1)));
        }
        i += 4;
    }
    let mut h = acc[0].wrapping_add(acc[1]).wrapping_add(acc[2]).wrapping_add(acc[3]);
    let rest = blocks.remainder();
    for (j, w) in rest.chunks(8).enumerate() {
        let mut buf = [0u8; 8];
        buf[..w.len()].copy_from_slice(w);
        // A partial word also carries its length, so trailing zeros are not free.
        let word = if w.len() == 8 { u64::from_le_bytes(buf) } else { u64::from_le_bytes(buf) ^ ((w.len() as u64) << 59) };
        h = h.wrapping_add(mix(word ^ (i + j as u64).wrapping_mul(K1)));
    }
    h
}

/// The flat indices sampled in a tensor of `numel` elements: one per stratum of `numel / SAMPLES`
/// elements, at a pseudo-random offset inside it that depends only on `numel` and the stratum —
/// so tensors of one shape are sampled at the same positions in every checkpoint.
pub fn sample_positions(numel: u64) -> Vec<u64> {
    if numel <= SAMPLES as u64 {
        return (0..numel).collect();
    }
    let stride = numel / SAMPLES as u64;
    (0..SAMPLES as u64).map(|k| k * stride + fmix(numel ^ k.wrapping_mul(K1)) % stride).collect()
}

/// Element `i` of a little-endian float tensor, decoded; `None` out of range or for a type that
/// is not a dense float.
pub fn element(dtype: Dtype, bytes: &[u8], i: u64) -> Option<f32> {
    let w = (dtype.bits() / 8) as usize;
    let at = usize::try_from(i).ok()?.checked_mul(w)?;
    let b = bytes.get(at..at.checked_add(w)?)?;
    Some(match dtype {
        Dtype::F32 => f32::from_le_bytes(b.try_into().ok()?),
        Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
        Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        Dtype::F64 => f64::from_le_bytes(b.try_into().ok()?) as f32,
        Dtype::F8_E4M3 => f8_e4m3_to_f32(b[0]),
        Dtype::F8_E5M2 => f8_e5m2_to_f32(b[0]),
        _ => return None,
    })
}

/// Significand bits (without the implicit one) of a float storage type: the precision a value
/// survives a cast to it with.
pub fn mantissa_bits(dtype: Dtype) -> u32 {
    match dtype {
        Dtype::F64 => 52,
        Dtype::F32 => 23,
        Dtype::F16 => 10,
        Dtype::BF16 => 7,
        Dtype::F8_E4M3 => 3,
        Dtype::F8_E5M2 => 2,
        _ => 0,
    }
}

/// `v` as a cast to `dtype` would store it (round to nearest even, as torch's `.to()` does);
/// unchanged for types it cannot round to exactly here (float8: compared with a tolerance).
pub fn round_to(dtype: Dtype, v: f32) -> f32 {
    match dtype {
        Dtype::F16 => half::f16::from_f32(v).to_f32(),
        Dtype::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

/// The coarser of two storage types (the one fewer significand bits survive in).
pub fn coarser(a: Dtype, b: Dtype) -> Dtype {
    if mantissa_bits(a) <= mantissa_bits(b) {
        a
    } else {
        b
    }
}

/// Whether `a` and `b` are the same value once both are stored as `dtype` (NaN equals NaN: a
/// NaN copied is still the same tensor).
pub fn same_value(dtype: Dtype, a: f32, b: f32) -> bool {
    let (x, y) = (round_to(dtype, a), round_to(dtype, b));
    if x.is_nan() || y.is_nan() {
        return x.is_nan() && y.is_nan();
    }
    if x == y {
        return true;
    }
    // Types rounded with a tolerance: half a unit in the last place of the coarser type.
    let exact = matches!(dtype, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64);
    !exact && (x - y).abs() <= x.abs().max(y.abs()) * 2f32.powi(-(mantissa_bits(dtype) as i32) - 1)
}

impl Fingerprint {
    /// Builds a fingerprint from the scan's statistics and digest and the tensor's bytes (for
    /// the samples).
    pub fn new(dtype: Dtype, shape: &[u64], bytes: &[u8], count: u64, max_abs: f64, digest: &Digest) -> Fingerprint {
        let n = digest.finite.max(1) as f64;
        let samples = sample_positions(count).into_iter().map(|i| element(dtype, bytes, i).unwrap_or(f32::NAN)).collect();
        Fingerprint {
            dtype,
            shape: shape.to_vec(),
            count,
            mean: digest.sum / n,
            rms: (digest.sum_sq / n).sqrt(),
            max_abs,
            hash: fmix(digest.hash ^ count.wrapping_mul(K3)),
            samples,
        }
    }

    /// Whether `self` and `o` hold the same values: identical bytes when the types agree, else
    /// every sample equal once rounded to the coarser type and the moments equal within that
    /// type's precision.
    pub fn same_values(&self, o: &Fingerprint) -> bool {
        if self.shape != o.shape || self.count != o.count || self.samples.len() != o.samples.len() {
            return false;
        }
        if self.dtype == o.dtype {
            return self.hash == o.hash && self.samples.iter().zip(&o.samples).all(|(a, b)| a.to_bits() == b.to_bits());
        }
        let d = coarser(self.dtype, o.dtype);
        self.samples.iter().zip(&o.samples).all(|(&a, &b)| same_value(d, a, b)) && self.moments_match(o, d)
    }

    /// Same mean and rms within the precision of `dtype`: rounding every element moves the rms by
    /// at most half a unit in the last place (relative), and the mean by that much of the rms.
    pub fn moments_match(&self, o: &Fingerprint, dtype: Dtype) -> bool {
        let tol = 2f64.powi(-(mantissa_bits(dtype) as i32)).max(1e-6);
        let scale = self.rms.max(o.rms).max(f64::MIN_POSITIVE);
        (self.rms - o.rms).abs() <= tol * scale && (self.mean - o.mean).abs() <= tol * scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_stratified_in_range_and_stable() {
        let p = sample_positions(1_000_003);
        assert_eq!(p.len(), SAMPLES);
        assert!(p.windows(2).all(|w| w[0] < w[1]) && *p.last().unwrap() < 1_000_003);
        assert_eq!(p, sample_positions(1_000_003));
        assert_eq!(sample_positions(5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn moved_words_change_the_hash() {
        let a: Vec<u8> = (0..64u8).collect();
        let mut b = a.clone();
        b[..8].copy_from_slice(&a[8..16]);
        b[8..16].copy_from_slice(&a[..8]);
        assert_ne!(hash_bytes(&a, 0), hash_bytes(&b, 0));
        // Split anywhere on a word boundary, the chunk hashes add up to the whole.
        assert_eq!(hash_bytes(&a, 0), hash_bytes(&a[..24], 0).wrapping_add(hash_bytes(&a[24..], 24)));
    }

    #[test]
    fn elements_decode_and_out_of_range_is_none() {
        let b: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(element(Dtype::F32, &b, 1), Some(-2.0));
        assert_eq!(element(Dtype::F32, &b, 2), None);
        assert_eq!(element(Dtype::I32, &b, 0), None);
        assert_eq!(element(Dtype::F32, &b, u64::MAX), None);
    }
}
