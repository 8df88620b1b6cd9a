//! GPTQ (gptqmodel / AutoGPTQ layout), 4-bit, v1 and v2 zero points.
//!
//! `qweight` i32 `[in/8, out]`: nibble j of row r is input `8r + j`; `qzeros` i32
//! `[groups, out/8]`: nibble j is output `8c + j`, and v1 (`checkpoint_format: gptq`) stores
//! `z − 1`; `scales` `[groups, out]`; `g_idx` `[in]` gives each input's group (act-order, so
//! `desc_act` needs no special case; absent: `i / group_size`).
//! `W[o, i] = s[g, o] · (q[i, o] − z[g, o])`.

use super::{four_bit_groups, nibble, Dequantized, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::quant::QuantConfig;

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

    fn dequantize(&self, t: &Tensors<'_>, prefix: &str) -> Result<Dequantized> {
        let g = self.group_size;
        let qn = format!("{prefix}.qweight");
        let (qw, qs) = t.ints(&qn)?;
        let (qz, _) = t.ints(&format!("{prefix}.qzeros"))?;
        let (sc, ss) = t.floats(&format!("{prefix}.scales"))?;
        let (rows, out) = t.dims2(&qn, &qs)?;
        let inp = rows * 8;
        let (groups, _) = t.dims2(&format!("{prefix}.scales"), &ss)?;
        let g_idx: Vec<usize> = match t.ints(&format!("{prefix}.g_idx")) {
            Ok((v, _)) => v.iter().map(|&x| x as usize).collect(),
            Err(_) => (0..inp).map(|i| i / g).collect(),
        };
        if sc.len() != groups * out || qz.len() * 8 != groups * out || g_idx.len() != inp || g_idx.iter().any(|&x| x >= groups) {
            return Err(t.bad(&qn, format!("qweight {qs:?}, qzeros, scales {ss:?} and g_idx do not fit together")));
        }
        let off = self.zero_offset as i64;
        let mut w = vec![0f32; out * inp];
        for i in 0..inp {
            let gi = g_idx[i];
            for o in 0..out {
                let q = nibble(qw[(i / 8) * out + o], i % 8);
                let z = nibble(qz[gi * (out / 8) + o / 8], o % 8) + off;
                w[o * inp + i] = sc[gi * out + o] * (q - z) as f32;
            }
        }
        Ok((w, out, inp))
    }
}
