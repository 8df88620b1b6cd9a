//! Rotary position embedding tables, written once for every family and scaling type, following
//! transformers' `ROPE_INIT_FUNCTIONS` (computed in f32 as torch does, so angles match bit-for-bit
//! closely at the positions the goldens use).

use candle_core::{Device, Tensor};

use crate::format::arch::{Rope, RopeScaling};

/// Inverse frequencies (length `dim / 2`) and the attention factor that scales cos/sin.
pub fn inv_freq(rope: &Rope, dim: usize, seq_len: usize) -> (Vec<f32>, f32) {
    let half = dim / 2;
    let base_freqs = |theta: f64| -> Vec<f32> { (0..half).map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / dim as f32)).collect() };
    match &rope.scaling {
        RopeScaling::None => (base_freqs(rope.theta), 1.0),
        RopeScaling::Linear { factor } => (base_freqs(rope.theta).into_iter().map(|f| f / *factor as f32).collect(), 1.0),
        RopeScaling::FreqFactors(factors) => {
            (base_freqs(rope.theta).into_iter().zip(factors.iter().chain(std::iter::repeat(&1.0))).map(|(f, d)| f / d).collect(), 1.0)
        }
        RopeScaling::LongRope { short, long, original_max, attention_factor } => {
            // transformers: 1 / (ext · base^(2i / dim)), in f32.
            let ext = if seq_len > *original_max { long } else { short };
            let freqs = (0..half)
                .map(|i| 1.0f32 / (ext.get(i).copied().unwrap_or(1.0) * (rope.theta as f32).powf((2 * i) as f32 / dim as f32)))
                .collect();
            (freqs, *attention_factor as f32)
        }
        RopeScaling::Dynamic { factor, original_max } => {
            let theta = if seq_len > *original_max {
                let s = factor * seq_len as f64 / *original_max as f64 - (factor - 1.0);
                rope.theta * s.powf(dim as f64 / (dim as f64 - 2.0))
            } else {
                rope.theta
            };
            (base_freqs(theta), 1.0)
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max } => {
            let low_wavelen = *original_max as f64 / low_freq_factor;
            let high_wavelen = *original_max as f64 / high_freq_factor;
            let freqs = base_freqs(rope.theta)
                .into_iter()
                .map(|f| {
                    let f = f as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    let scaled = if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (*original_max as f64 / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    };
                    scaled as f32
                })
                .collect();
            (freqs, 1.0)
        }
        RopeScaling::Yarn { factor, original_max, beta_fast, beta_slow, attention_factor, mscale, mscale_all_dim } => {
            let get_mscale = |scale: f64, m: f64| if scale <= 1.0 { 1.0 } else { 0.1 * m * scale.ln() + 1.0 };
            let attn = attention_factor.unwrap_or_else(|| match (mscale, mscale_all_dim) {
                (Some(m), Some(a)) if *m != 0.0 && *a != 0.0 => get_mscale(*factor, *m) / get_mscale(*factor, *a),
                _ => get_mscale(*factor, 1.0),
            });
            let correction_dim =
                |rot: f64| (dim as f64 * (*original_max as f64 / (rot * 2.0 * std::f64::consts::PI)).ln()) / (2.0 * rope.theta.ln());
            let low = correction_dim(*beta_fast).floor().max(0.0);
            let mut high = correction_dim(*beta_slow).ceil().min(dim as f64 - 1.0);
            if low == high {
                high += 0.001;
            }
            let freqs = (0..half)
                .map(|i| {
                    let pos_freq = (rope.theta as f32).powf((2 * i) as f32 / dim as f32);
                    let extrapolation = 1.0 / pos_freq;
                    let interpolation = 1.0 / (*factor as f32 * pos_freq);
                    let ramp = ((i as f64 - low) / (high - low)).clamp(0.0, 1.0) as f32;
                    let extrapolation_factor = 1.0 - ramp;
                    interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
                })
                .collect();
            (freqs, attn as f32)
        }
    }
}

/// `cos` and `sin` tables of shape `[positions.len(), dim / 2]` for `positions` of a sequence of
/// `seq_len` (a decoding step needs only its new position, with the frequencies of the whole
/// length: dynamic scaling depends on it).
pub fn tables_for(
    rope: &Rope,
    dim: usize,
    seq_len: usize,
    positions: std::ops::Range<usize>,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let (freqs, attn) = inv_freq(rope, dim, seq_len);
    let (half, rows) = (freqs.len(), positions.len());
    let mut cos = Vec::with_capacity(rows * half);
    let mut sin = Vec::with_capacity(rows * half);
    for p in positions {
        for f in &freqs {
            let angle = p as f32 * f;
            cos.push(angle.cos() * attn);
            sin.push(angle.sin() * attn);
        }
    }
    Ok((Tensor::from_vec(cos, (rows, half), device)?, Tensor::from_vec(sin, (rows, half), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rope(scaling: RopeScaling) -> Rope {
        Rope { theta: 500000.0, scaling }
    }

    #[test]
    fn default_frequencies() {
        let (f, a) = inv_freq(&Rope { theta: 10000.0, scaling: RopeScaling::None }, 8, 4);
        // 1 / 10000^(2i/8) for i = 0..4
        let want = [1.0, 0.1, 0.01, 0.001];
        for (g, w) in f.iter().zip(want) {
            assert!((g - w).abs() / w < 1e-5, "{g} vs {w}");
        }
        assert_eq!(a, 1.0);
    }

    #[test]
    fn llama3_scaling_matches_transformers() {
        // The rule of transformers' `_compute_llama3_parameters` for Llama-3.1 (theta 5e5, factor
        // 8, low 1, high 4, original 8192, head_dim 128): wavelengths shorter than 8192/4 keep
        // their frequency, longer than 8192 are divided by 8, and the band between is blended.
        let (f, _) =
            inv_freq(&rope(RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max: 8192 }), 128, 16);
        let base = |i: usize| 1.0 / 500000f64.powf(2.0 * i as f64 / 128.0);
        // High frequencies untouched, low ones divided by 8.
        assert!((f[0] as f64 - base(0)).abs() < 1e-7);
        assert!((f[63] as f64 - base(63) / 8.0).abs() / (base(63) / 8.0) < 1e-4);
        // In the smooth band, between the two.
        let i = (0..64).find(|&i| {
            let w = 2.0 * std::f64::consts::PI / base(i);
            w > 8192.0 / 4.0 && w < 8192.0
        });
        let i = i.expect("a frequency in the smooth band");
        assert!((f[i] as f64) < base(i) && (f[i] as f64) > base(i) / 8.0);
    }

    #[test]
    fn linear_divides_and_yarn_scales_attention() {
        let (f, _) = inv_freq(&rope(RopeScaling::Linear { factor: 4.0 }), 8, 4);
        assert!((f[0] - 0.25).abs() < 1e-7);
        let (_, a) = inv_freq(
            &rope(RopeScaling::Yarn {
                factor: 4.0,
                original_max: 32768,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attention_factor: None,
                mscale: None,
                mscale_all_dim: None,
            }),
            128,
            4,
        );
        // 0.1 * ln(4) + 1
        assert!((a as f64 - (0.1 * 4f64.ln() + 1.0)).abs() < 1e-6);
    }

    #[test]
    fn dynamic_only_changes_past_the_original_length() {
        let r = rope(RopeScaling::Dynamic { factor: 2.0, original_max: 16 });
        let (short, _) = inv_freq(&r, 8, 16);
        let (long, _) = inv_freq(&r, 8, 64);
        let (plain, _) = inv_freq(&rope(RopeScaling::None), 8, 16);
        assert_eq!(short, plain);
        assert!(long[3] < plain[3]);
    }
}
