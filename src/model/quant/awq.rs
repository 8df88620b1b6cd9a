//! AWQ GEMM (AutoAWQ / gptqmodel layout), 4-bit.
//!
//! `qweight` i32 `[in, out/8]` and `qzeros` `[groups, out/8]`: nibble k of column c is output
//! `8c + ORDER[k]` with ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; `scales` `[groups, out]`;
//! `W[o, i] = (q − z) · s`. Other packings (GEMV, …) are refused at load.

use super::{four_bit_groups, nibble, Dequantized, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::QuantConfig;

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

    fn dequantize(&self, t: &Tensors<'_>, prefix: &str) -> Result<Dequantized> {
        let g = self.group_size;
        let qn = format!("{prefix}.qweight");
        let (qw, qs) = t.ints(&qn)?;
        let (qz, _) = t.ints(&format!("{prefix}.qzeros"))?;
        let (sc, ss) = t.floats(&format!("{prefix}.scales"))?;
        let (inp, cols) = t.dims2(&qn, &qs)?;
        let out = cols * 8;
        let (groups, _) = t.dims2(&format!("{prefix}.scales"), &ss)?;
        if sc.len() != groups * out || qz.len() != groups * cols || inp.div_ceil(g) != groups {
            return Err(t.bad(&qn, format!("qweight {qs:?}, qzeros and scales {ss:?} do not fit together")));
        }
        let mut w = vec![0f32; out * inp];
        for i in 0..inp {
            let gi = i / g;
            for c in 0..cols {
                let word = qw[i * cols + c];
                let zword = qz[gi * cols + c];
                for (k, &ord) in AWQ_ORDER.iter().enumerate() {
                    let o = c * 8 + ord;
                    w[o * inp + i] = (nibble(word, k) - nibble(zword, k)) as f32 * sc[gi * out + o];
                }
            }
        }
        Ok((w, out, inp))
    }
}
