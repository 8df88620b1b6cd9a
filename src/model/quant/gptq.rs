//! GPTQ (gptqmodel / AutoGPTQ layout), 4-bit, v1 and v2 zero points.
//!
//! `qweight` i32 `[in/8, out]`: nibble j of row r is input `8r + j`; `qzeros` i32
//! `[groups, out/8]`: nibble j is output `8c + j`, and v1 (`checkpoint_format: gptq`) stores
//! `z − 1`; `scales` `[groups, out]`; `g_idx` `[in]` gives each input's group (act-order, so
//! `desc_act` needs no special case; absent: `i / group_size`).
//! `W[o, i] = s[g, o] · (q[i, o] − z[g, o])`.

use std::sync::Arc;

use super::{four_bit_groups, nibble, word_at, Packed, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::QuantConfig;
use crate::format::MappedBytes;
use crate::model::native::PackedRows;

pub struct Gptq {
    /// v1 checkpoints store zero points minus one.
    zero_offset: bool,
    group_size: usize,
}

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    let format = cfg.format.as_deref().unwrap_or("gptq");
    let zero_offset = format != "gptq_v2";
    Ok(Box::new(Gptq { zero_offset, group_size: four_bit_groups(cfg)? }))
}

impl QuantScheme for Gptq {
    fn name(&self) -> &'static str {
        "gptq"
    }

    fn suffixes(&self) -> &'static [&'static str] {
        &["qweight", "qzeros", "scales", "g_idx"]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        let g = self.group_size;
        let qn = format!("{prefix}.qweight");
        let (qweight, qs) = t.words(&qn)?;
        let (qz, _) = t.ints(&format!("{prefix}.qzeros"))?;
        let (scales, ss) = t.floats(&format!("{prefix}.scales"))?;
        let (rows, out) = t.dims2(&qn, &qs)?;
        let inp = rows * 8;
        let (groups, _) = t.dims2(&format!("{prefix}.scales"), &ss)?;
        let g_idx: Vec<u32> = match t.ints(&format!("{prefix}.g_idx")) {
            Ok((v, _)) => v.iter().map(|&x| u32::try_from(x).unwrap_or(u32::MAX)).collect(),
            Err(_) => (0..inp).map(|i| (i / g) as u32).collect(),
        };
        if scales.len() != groups * out || qz.len() * 8 != groups * out || g_idx.len() != inp || g_idx.iter().any(|&x| x as usize >= groups)
        {
            return Err(t.bad(&qn, format!("qweight {qs:?}, qzeros, scales {ss:?} and g_idx do not fit together")));
        }
        let off = self.zero_offset as i64;
        let zeros = (0..groups * out).map(|k| nibble(qz[(k / out) * (out / 8) + (k % out) / 8], (k % out) % 8) + off).collect();
        Ok((Arc::new(GptqRows { qweight, zeros, scales, g_idx, out, inp }), out, inp))
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
}

impl PackedRows for GptqRows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let (out, inp) = (self.out, self.inp);
        let q = self.qweight.bytes();
        let n = w.len() / inp;
        for p in 0..inp / 8 {
            for o in r0..r0 + n {
                let word = word_at(q, p * out + o);
                for j in 0..8 {
                    let i = p * 8 + j;
                    let gi = self.g_idx[i] as usize;
                    w[(o - r0) * inp + i] = self.scales[gi * out + o] * (nibble(word, j) - self.zeros[gi * out + o]) as f32;
                }
            }
        }
    }
}
