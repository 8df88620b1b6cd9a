//! compressed-tensors `pack-quantized` (llmcompressor), int4.
//!
//! `weight_packed` i32 `[out, in/8]`: nibble k of word c is input `8c + k`, stored as `q + 8`;
//! `weight_scale` `[out, groups]`; `weight_shape` `[out, in]` when `in` is not a multiple of 8;
//! `W[o, i] = (nibble − 8 − z) · s[o, i / group]`, with `z` from `weight_zero_point` when
//! asymmetric (else 0). Other formats (`int-quantized`, `float-quantized`, …) are refused at load.

use std::sync::Arc;

use super::{four_bit_groups, nibble, word_at, Packed, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::QuantConfig;
use crate::format::MappedBytes;
use crate::model::native::PackedRows;

pub struct CompressedTensors {
    symmetric: bool,
    group_size: usize,
}

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    let format = cfg.format.as_deref().unwrap_or("");
    if format != "pack-quantized" {
        return Err(cfg.field_error("format", format!("compressed-tensors `{format}` is not supported (pack-quantized is)")));
    }
    let symmetric = cfg.symmetric.unwrap_or(true);
    Ok(Box::new(CompressedTensors { symmetric, group_size: four_bit_groups(cfg)? }))
}

impl QuantScheme for CompressedTensors {
    fn name(&self) -> &'static str {
        "compressed-tensors"
    }

    fn suffixes(&self) -> &'static [&'static str] {
        &["weight_packed", "weight_scale", "weight_shape", "weight_zero_point"]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        let g = self.group_size;
        let pn = format!("{prefix}.weight_packed");
        let (packed, ps) = t.words(&pn)?;
        let (scales, ss) = t.floats(&format!("{prefix}.weight_scale"))?;
        let (out, cols) = t.dims2(&pn, &ps)?;
        let inp = match t.ints(&format!("{prefix}.weight_shape")) {
            Ok((v, _)) if v.len() == 2 => v[1] as usize,
            _ => cols * 8,
        };
        let (_, groups) = t.dims2(&format!("{prefix}.weight_scale"), &ss)?;
        let zeros = if self.symmetric { None } else { Some(t.ints(&format!("{prefix}.weight_zero_point"))?.0) };
        if scales.len() != out * groups || inp > cols * 8 || inp.div_ceil(g) != groups {
            return Err(t.bad(&pn, format!("weight_packed {ps:?} and weight_scale {ss:?} do not fit together")));
        }
        Ok((Arc::new(CtRows { packed, zeros, scales, group_size: g, groups, cols, inp }), out, inp))
    }
}

/// A pack-quantized weight: `weight_packed` still mapped; scales and zero points decoded.
struct CtRows {
    packed: MappedBytes,
    /// `[out, groups]` when asymmetric.
    zeros: Option<Vec<i64>>,
    scales: Vec<f32>,
    group_size: usize,
    groups: usize,
    cols: usize,
    inp: usize,
}

impl PackedRows for CtRows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let (inp, groups) = (self.inp, self.groups);
        let q = self.packed.bytes();
        for (r, row) in w.chunks_exact_mut(inp).enumerate() {
            let o = r0 + r;
            for (i, v) in row.iter_mut().enumerate() {
                let gi = i / self.group_size;
                let word = word_at(q, o * self.cols + i / 8);
                let z = self.zeros.as_ref().map(|z| z.get(o * groups + gi).copied().unwrap_or(0)).unwrap_or(0);
                *v = (nibble(word, i % 8) - 8 - z) as f32 * self.scales[o * groups + gi];
            }
        }
    }
}
