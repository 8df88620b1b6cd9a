//! compressed-tensors `pack-quantized` (llmcompressor), int4.
//!
//! `weight_packed` i32 `[out, in/8]`: nibble k of word c is input `8c + k`, stored as `q + 8`;
//! `weight_scale` `[out, groups]`; `weight_shape` `[out, in]` when `in` is not a multiple of 8;
//! `W[o, i] = (nibble − 8 − z) · s[o, i / group]`, with `z` from `weight_zero_point` when
//! asymmetric (else 0). Other formats (`int-quantized`, `float-quantized`, …) are refused at load.

use super::{four_bit_groups, nibble, Dequantized, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::QuantConfig;

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

    fn dequantize(&self, t: &Tensors<'_>, prefix: &str) -> Result<Dequantized> {
        let g = self.group_size;
        let pn = format!("{prefix}.weight_packed");
        let (pw, ps) = t.ints(&pn)?;
        let (sc, ss) = t.floats(&format!("{prefix}.weight_scale"))?;
        let (out, cols) = t.dims2(&pn, &ps)?;
        let inp = match t.ints(&format!("{prefix}.weight_shape")) {
            Ok((v, _)) if v.len() == 2 => v[1] as usize,
            _ => cols * 8,
        };
        let (_, groups) = t.dims2(&format!("{prefix}.weight_scale"), &ss)?;
        let zp = if self.symmetric { None } else { Some(t.ints(&format!("{prefix}.weight_zero_point"))?.0) };
        if sc.len() != out * groups || inp > cols * 8 || inp.div_ceil(g) != groups {
            return Err(t.bad(&pn, format!("weight_packed {ps:?} and weight_scale {ss:?} do not fit together")));
        }
        let mut w = vec![0f32; out * inp];
        for o in 0..out {
            for i in 0..inp {
                let gi = i / g;
                let q = nibble(pw[o * cols + i / 8], i % 8) - 8;
                let z = zp.as_ref().map(|z| z.get(o * groups + gi).copied().unwrap_or(0)).unwrap_or(0);
                w[o * inp + i] = (q - z) as f32 * sc[o * groups + gi];
            }
        }
        Ok((w, out, inp))
    }
}
