//! AWQ, 4-bit, in its two common layouts (AutoAWQ / gptqmodel `version`):
//!
//! - GEMM: `qweight` i32 `[in, out/8]` and `qzeros` `[groups, out/8]`: nibble k of column c is
//!   output `8c + ORDER[k]` with ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; `scales` `[groups, out]`.
//! - GEMV (output-major): `qweight` i32 `[out, in/8]`, nibble k of word c is input `8c + k`;
//!   `qzeros` `[out, W]` with the zero of group `8w + k` in nibble k of word w and `scales`
//!   `[out, 8W]`, where `W` (gptqmodel / AutoAWQ `calculate_zeros_width`) pads the groups to a
//!   multiple of 8, 16 or 32 (group size 128+, 64, 32): the padding columns are ignored.
//!
//! Both: `W[o, i] = (q − z) · s`. Other packings (GEMV_FAST / llm-awq, Marlin, …) are refused.

use std::sync::Arc;

use super::{four_bit_groups, nibble, word_at, Packed, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::QuantConfig;
use crate::format::MappedBytes;
use crate::model::native::PackedRows;

/// AutoAWQ's packing order of the eight nibbles of an int32 (`order_map` in its GEMM packer).
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

pub struct Awq {
    group_size: usize,
    gemv: bool,
}

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    let version = cfg.format.as_deref().unwrap_or("gemm");
    let gemv = match version.to_ascii_lowercase().as_str() {
        "gemm" => false,
        "gemv" => true,
        _ => {
            return Err(cfg.field_error(
                "version",
                format!(
                "AWQ `{version}` packing is not supported (gemm and gemv are); export the model as GEMM (gptqmodel FORMAT.GEMM) to check it"
            ),
            ))
        }
    };
    Ok(Box::new(Awq { group_size: four_bit_groups(cfg)?, gemv }))
}

impl QuantScheme for Awq {
    fn name(&self) -> &'static str {
        "awq"
    }

    fn suffixes(&self) -> &'static [&'static str] {
        &["qweight", "qzeros", "scales"]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        if self.gemv {
            return self.packed_gemv(t, prefix);
        }
        let g = self.group_size;
        let qn = format!("{prefix}.qweight");
        let (qweight, qs) = t.words(&qn)?;
        let (qz, _) = t.ints(&format!("{prefix}.qzeros"))?;
        let (scales, ss) = t.floats(&format!("{prefix}.scales"))?;
        let (inp, cols) = t.dims2(&qn, &qs)?;
        let out = cols * 8;
        let (groups, _) = t.dims2(&format!("{prefix}.scales"), &ss)?;
        if scales.len() != groups * out || qz.len() != groups * cols || inp.div_ceil(g) != groups {
            return Err(t.bad(&qn, format!("qweight {qs:?}, qzeros and scales {ss:?} do not fit together")));
        }
        let zeros = (0..groups * out).map(|k| nibble(qz[(k / out) * cols + (k % out) / 8], NIBBLE_OF[(k % out) % 8])).collect();
        Ok((Arc::new(AwqRows { qweight, zeros, scales, group_size: g, out, inp }), out, inp))
    }
}

impl Awq {
    /// The GEMV layout: zero points and scales decoded to `[out, groups]`, padding dropped.
    fn packed_gemv(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        let g = self.group_size;
        let qn = format!("{prefix}.qweight");
        let (qweight, qs) = t.words(&qn)?;
        let (qz, zs) = t.ints(&format!("{prefix}.qzeros"))?;
        let (sc, ss) = t.floats(&format!("{prefix}.scales"))?;
        let (out, words) = t.dims2(&qn, &qs)?;
        let inp = words * 8;
        let groups = inp.div_ceil(g);
        let (zo, zw) = t.dims2(&format!("{prefix}.qzeros"), &zs)?;
        let (so, sw) = t.dims2(&format!("{prefix}.scales"), &ss)?;
        if zo != out || so != out || zw * 8 < groups || sw < groups {
            return Err(t.bad(
                &qn,
                format!(
                    "GEMV qweight {qs:?} ({out} outputs × {inp} inputs, {groups} groups of {g}), qzeros {zs:?} and scales {ss:?} \
                     do not fit together (a GEMM checkpoint labelled `version: gemv`?)"
                ),
            ));
        }
        let mut zeros = Vec::with_capacity(out * groups);
        let mut scales = Vec::with_capacity(out * groups);
        for o in 0..out {
            zeros.extend((0..groups).map(|k| nibble(qz[o * zw + k / 8], k % 8)));
            scales.extend_from_slice(&sc[o * sw..o * sw + groups]);
        }
        Ok((Arc::new(AwqGemvRows { qweight, zeros, scales, group_size: g, groups, inp }), out, inp))
    }
}

/// An AWQ GEMV weight: `qweight` still mapped; zero points and scales (`[out, groups]`) decoded.
struct AwqGemvRows {
    qweight: MappedBytes,
    zeros: Vec<i64>,
    scales: Vec<f32>,
    group_size: usize,
    groups: usize,
    inp: usize,
}

impl PackedRows for AwqGemvRows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let (inp, words) = (self.inp, self.inp / 8);
        let q = self.qweight.bytes();
        for (r, row) in w.chunks_exact_mut(inp).enumerate() {
            let o = r0 + r;
            for (i, x) in row.iter_mut().enumerate() {
                let k = o * self.groups + i / self.group_size;
                *x = (nibble(word_at(q, o * words + i / 8), i % 8) - self.zeros[k]) as f32 * self.scales[k];
            }
        }
    }
}

/// Which nibble of a word holds output `8c + r`: the inverse of `AWQ_ORDER`.
const NIBBLE_OF: [usize; 8] = {
    let mut inv = [0; 8];
    let mut k = 0;
    while k < 8 {
        inv[AWQ_ORDER[k]] = k;
        k += 1;
    }
    inv
};

/// An AWQ weight: `qweight` still mapped; zero points (`[groups, out]`) and scales decoded.
struct AwqRows {
    qweight: MappedBytes,
    zeros: Vec<i64>,
    scales: Vec<f32>,
    group_size: usize,
    out: usize,
    inp: usize,
}

impl PackedRows for AwqRows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let (out, inp, cols) = (self.out, self.inp, self.out / 8);
        let q = self.qweight.bytes();
        let n = w.len() / inp;
        for i in 0..inp {
            let gi = i / self.group_size;
            for o in r0..r0 + n {
                let word = word_at(q, i * cols + o / 8);
                let k = gi * out + o;
                w[(o - r0) * inp + i] = (nibble(word, NIBBLE_OF[o % 8]) - self.zeros[k]) as f32 * self.scales[k];
            }
        }
    }
}
