//! GPTQ (gptqmodel / AutoGPTQ layout), 2/3/4/8-bit, v1 and v2 zero points, act-order.
//!
//! Both packed tensors are bit streams of `b`-bit codes over little-endian i32 words: `qweight`
//! `[in·b/32, out]` holds column `o`'s codes for inputs `0, 1, …` at bits `b·i, b·i + b` of the
//! words `qweight[0.., o]` laid end to end (for b = 2, 4, 8 code j of word r is input
//! `r·32/b + j`; for b = 3 a code may straddle two words, 32 codes to every 3 words);
//! `qzeros` `[groups, out·b/32]` the same along the outputs of each group's row, and v1
//! (`checkpoint_format: gptq`) stores `z − 1`; `scales` `[groups, out]`; `g_idx` `[in]` gives
//! each input's group (act-order, `desc_act`, needs no special case; absent: `i / group_size`).
//! `W[o, i] = s[g, o] · (q[i, o] − z[g, o])`, `g = g_idx[i]`. `group_size: -1` (per channel) is
//! one group over all inputs.

use std::sync::Arc;

use super::{word_at, Packed, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::{packed_code, QuantConfig};
use crate::format::MappedBytes;
use crate::model::native::PackedRows;

pub struct Gptq {
    /// v1 checkpoints store zero points minus one.
    zero_offset: bool,
    bits: u32,
    /// `None`: per channel (`group_size: -1`).
    group_size: Option<usize>,
}

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    let format = cfg.format.as_deref().unwrap_or("gptq");
    let zero_offset = format != "gptq_v2";
    let bits = match cfg.bits {
        Some(b @ (2 | 3 | 4 | 8)) => b as u32,
        b => return Err(cfg.field_error("bits", format!("{b:?}: GPTQ checkpoints of 2, 3, 4 or 8 bits are run"))),
    };
    // A negative group size (−1) is per channel; QuantConfig reads it as absent.
    let per_channel = cfg.raw.get("group_size").and_then(serde_json::Value::as_i64).is_some_and(|g| g < 0);
    let group_size = match cfg.group_size.filter(|&g| g > 0) {
        Some(g) => Some(g as usize),
        None if per_channel => None,
        None => return Err(cfg.field_error("group_size", "missing or 0 (a positive size, or -1 for per channel)")),
    };
    Ok(Box::new(Gptq { zero_offset, bits, group_size }))
}

/// Code `k` (`b` bits) of a bit stream whose word `n` is `word(n)` (sign-extended, as
/// `Tensors::ints` and `word_at` give them).
fn code(word: impl Fn(usize) -> i64, k: usize, b: u32) -> i64 {
    packed_code(|n| word(n) as u32, k, b) as i64
}

impl QuantScheme for Gptq {
    fn name(&self) -> &'static str {
        "gptq"
    }

    fn suffixes(&self) -> &'static [&'static str] {
        &["qweight", "qzeros", "scales", "g_idx"]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        let b = self.bits as usize;
        let qn = format!("{prefix}.qweight");
        let (qweight, qs) = t.words(&qn)?;
        let (qz, zs) = t.ints(&format!("{prefix}.qzeros"))?;
        let (scales, ss) = t.floats(&format!("{prefix}.scales"))?;
        let (rows, out) = t.dims2(&qn, &qs)?;
        let inp = rows * 32 / b;
        let (groups, _) = t.dims2(&format!("{prefix}.scales"), &ss)?;
        let g = self.group_size.unwrap_or(inp.max(1));
        let g_idx: Vec<u32> = match t.ints(&format!("{prefix}.g_idx")) {
            Ok((v, _)) => v.iter().map(|&x| u32::try_from(x).unwrap_or(u32::MAX)).collect(),
            Err(_) => (0..inp).map(|i| (i / g) as u32).collect(),
        };
        let zcols = (out * b).div_ceil(32);
        let fits = rows * 32 % b == 0
            && scales.len() == groups * out
            && zs == [groups as u64, zcols as u64]
            && g_idx.len() == inp
            && g_idx.iter().all(|&x| (x as usize) < groups);
        if !fits {
            return Err(t.bad(&qn, format!("qweight {qs:?}, qzeros {zs:?}, scales {ss:?} and g_idx do not fit together ({b}-bit)")));
        }
        let off = self.zero_offset as i64;
        let zeros = (0..groups * out).map(|k| code(|n| qz[(k / out) * zcols + n], k % out, self.bits) + off).collect();
        Ok((Arc::new(GptqRows { qweight, zeros, scales, g_idx, out, inp, bits: self.bits }), out, inp))
    }
}

/// A GPTQ weight: `qweight` still mapped; zero points (offset applied), scales, `g_idx` decoded.
struct GptqRows {
    qweight: MappedBytes,
    /// `[groups, out]`.
    zeros: Vec<i64>,
    scales: Vec<f32>,
    g_idx: Vec<u32>,
    out: usize,
    inp: usize,
    bits: u32,
}

impl PackedRows for GptqRows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let (out, inp, b) = (self.out, self.inp, self.bits);
        let q = self.qweight.bytes();
        let n = w.len() / inp;
        let value = |o: usize, i: usize, c: i64| {
            let gi = self.g_idx[i] as usize;
            self.scales[gi * out + o] * (c - self.zeros[gi * out + o]) as f32
        };
        if 32 % b == 0 {
            // Whole codes per word: one word read serves 32 / b inputs.
            let per = (32 / b) as usize;
            let mask = (1i64 << b) - 1;
            for p in 0..inp / per {
                for o in r0..r0 + n {
                    let word = word_at(q, p * out + o) as u64 as u32 as i64;
                    for j in 0..per {
                        let i = p * per + j;
                        w[(o - r0) * inp + i] = value(o, i, (word >> (b as usize * j)) & mask);
                    }
                }
            }
        } else {
            for o in r0..r0 + n {
                for i in 0..inp {
                    w[(o - r0) * inp + i] = value(o, i, code(|k| word_at(q, k * out + o), i, b));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3-bit stream: codes 0..32 laid end to end over three words, as gptqmodel packs them.
    #[test]
    fn three_bit_codes_straddle_words() {
        let codes: Vec<u64> = (0..32).map(|k| (k * 5 + 3) % 8).collect();
        let mut stream = 0u128;
        for (k, &c) in codes.iter().enumerate() {
            stream |= (c as u128) << (3 * k);
        }
        let words: Vec<i64> = (0..3).map(|n| (stream >> (32 * n)) as u32 as i32 as i64).collect();
        for (k, &c) in codes.iter().enumerate() {
            assert_eq!(code(|n| words[n], k, 3), c as i64, "code {k}");
        }
    }
}
