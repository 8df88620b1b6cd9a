//! AWQ GEMM (AutoAWQ / gptqmodel layout), 4-bit.
//!
//! `qweight` i32 `[in, out/8]` and `qzeros` `[groups, out/8]`: nibble k of column c is output
//! `8c + ORDER[k]` with ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; `scales` `[groups, out]`;
//! `W[o, i] = (q − z) · s`. Other packings (GEMV, …) are refused at load.

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
}

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    let version = cfg.format.as_deref().unwrap_or("gemm");
    if version != "gemm" {
        return Err(cfg.field_error("version", format!("AWQ `{version}` packing is not supported (gemm is)")));
    }
    Ok(Box::new(Awq { group_size: four_bit_groups(cfg)? }))
}

impl QuantScheme for Awq {
    fn name(&self) -> &'static str {
        "awq"
    }

    fn suffixes(&self) -> &'static [&'static str] {
        &["qweight", "qzeros", "scales"]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
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
