//! bitsandbytes, as transformers saves a `load_in_4bit` / `load_in_8bit` model
//! (`quant_method: bitsandbytes`).
//!
//! 4-bit (nf4, fp4), per quantized linear `prefix`:
//! - `weight` U8 `[n/2, 1]`: the `[out, in]` weight flattened row-major, two 4-bit codes a byte,
//!   element `2k` in the high nibble, `2k + 1` in the low one;
//! - `weight.quant_map` F32 `[16]`: the code book (NF4's or FP4's values, stored in the file);
//! - `weight.absmax`: one scale per `blocksize` elements — F32, or with double quantization
//!   (`bnb_4bit_use_double_quant`) U8 codes into `weight.nested_quant_map` F32 `[256]`, scaled by
//!   `weight.nested_absmax` F32 (one per `nested_blocksize` scales) plus `nested_offset`;
//! - `weight.quant_state.bitsandbytes__<nf4|fp4>` U8: JSON `{quant_type, blocksize, dtype, shape,
//!   nested_blocksize, nested_offset}`.
//!
//! `W[j] = quant_map[code j] · absmax[j / blocksize]`, `absmax[b] = nested_quant_map[c b] ·
//! nested_absmax[b / nested_blocksize] + nested_offset` (f32 throughout, as bitsandbytes' own
//! `dequantize_4bit`).
//!
//! 8-bit (LLM.int8): `weight` I8 `[out, in]`, `SCB` F32 `[out]` (each row's absmax),
//! `weight_format` U8; `W[o, i] = q · SCB[o] / 127`. bitsandbytes' own int8 forward also
//! quantizes the activations (outlier columns above `llm_int8_threshold` kept in float); the engine
//! multiplies the dequantized weight by float activations, so it matches that forward to within
//! activation rounding (tests/quant.rs measures it).

use std::sync::Arc;

use serde_json::Value;

use super::{Packed, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::dtype::Dtype;
use crate::format::quant::QuantConfig;
use crate::format::MappedBytes;
use crate::model::native::PackedRows;

/// Largest block a quant state may declare (bitsandbytes uses 32-4096).
const MAX_BLOCK: u64 = 1 << 16;

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    let flag = |k: &str| cfg.raw.get(k).and_then(Value::as_bool).unwrap_or(false);
    match (flag("load_in_4bit"), flag("load_in_8bit")) {
        (true, false) => {
            let storage = cfg.raw.get("bnb_4bit_quant_storage").and_then(Value::as_str).unwrap_or("uint8");
            if storage != "uint8" {
                return Err(cfg.field_error(
                    "bnb_4bit_quant_storage",
                    format!(
                        "`{storage}`: only uint8 storage (the default) is read; re-save the model with bnb_4bit_quant_storage=torch.uint8"
                    ),
                ));
            }
            Ok(Box::new(Bnb4))
        }
        (false, true) => Ok(Box::new(Bnb8)),
        (true, true) => {
            Err(cfg.field_error("load_in_4bit", "both load_in_4bit and load_in_8bit are true; a checkpoint is one or the other"))
        }
        (false, false) => {
            Err(cfg.field_error("load_in_4bit", "neither load_in_4bit nor load_in_8bit is true: not a quantized bitsandbytes save"))
        }
    }
}

/// bitsandbytes 4-bit (nf4 / fp4, with or without double quantization).
pub struct Bnb4;

impl QuantScheme for Bnb4 {
    fn name(&self) -> &'static str {
        "bitsandbytes"
    }

    /// `weight.absmax` marks a quantized linear (a dense one has a `weight` too).
    fn suffixes(&self) -> &'static [&'static str] {
        &[
            "weight.absmax",
            "weight",
            "weight.quant_map",
            "weight.nested_absmax",
            "weight.nested_quant_map",
            "weight.quant_state.bitsandbytes__nf4",
            "weight.quant_state.bitsandbytes__fp4",
        ]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        let wn = format!("{prefix}.weight");
        let state_name = ["nf4", "fp4"]
            .iter()
            .map(|q| format!("{wn}.quant_state.bitsandbytes__{q}"))
            .find(|n| t.has(n))
            .ok_or_else(|| t.bad(&wn, "no `weight.quant_state.bitsandbytes__nf4` (or `__fp4`) beside the 4-bit weight".into()))?;
        let (state_bytes, _) = t.mapped(&state_name, Dtype::U8, "U8 (JSON bytes)")?;
        let state: Value =
            serde_json::from_slice(state_bytes.bytes()).map_err(|e| t.bad(&state_name, format!("the quant state is not JSON: {e}")))?;
        let num = |k: &str| state.get(k).and_then(Value::as_u64);
        let bad_state = |detail: String| t.bad(&state_name, detail);
        let (out, inp) = match state.get("shape").and_then(Value::as_array).map(|a| a.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
        {
            Some(Some(s)) if s.len() == 2 => (s[0], s[1]),
            _ => return Err(bad_state(format!("`shape` is {:?}, expected [out, in]", state.get("shape")))),
        };
        let block = num("blocksize")
            .filter(|&b| b > 0 && b <= MAX_BLOCK)
            .ok_or_else(|| bad_state(format!("`blocksize` {:?} is not in 1..={MAX_BLOCK}", state.get("blocksize"))))?;
        let n = out
            .checked_mul(inp)
            .filter(|&n| n > 0)
            .ok_or_else(|| bad_state(format!("shape [{out}, {inp}] has no elements or overflows")))?;
        let (packed, ps) = t.mapped(&wn, Dtype::U8, "U8 (two 4-bit codes a byte)")?;
        if packed.bytes().len() as u64 != n.div_ceil(2) {
            return Err(t.bad(
                &wn,
                format!("{} bytes {ps:?} for a [{out}, {inp}] weight, which packs into {}", packed.bytes().len(), n.div_ceil(2)),
            ));
        }
        let (code, _) = t.floats(&format!("{wn}.quant_map"))?;
        let code: [f32; 16] =
            code.try_into().map_err(|c: Vec<f32>| t.bad(&format!("{wn}.quant_map"), format!("{} entries, expected 16", c.len())))?;
        let blocks = n.div_ceil(block) as usize;
        let an = format!("{wn}.absmax");
        let absmax = match t.dir.tensor(&an).map(|(_, i)| i.dtype) {
            Some(Dtype::U8) => {
                let (codes, _) = t.mapped(&an, Dtype::U8, "U8 codes")?;
                let (map, _) = t.floats(&format!("{wn}.nested_quant_map"))?;
                let map: [f32; 256] = map
                    .try_into()
                    .map_err(|m: Vec<f32>| t.bad(&format!("{wn}.nested_quant_map"), format!("{} entries, expected 256", m.len())))?;
                let (scales, _) = t.floats(&format!("{wn}.nested_absmax"))?;
                let nb = num("nested_blocksize")
                    .filter(|&b| b > 0 && b <= MAX_BLOCK)
                    .ok_or_else(|| bad_state("`nested_blocksize` missing or out of range".into()))?;
                let offset =
                    state.get("nested_offset").and_then(Value::as_f64).ok_or_else(|| bad_state("`nested_offset` missing".into()))? as f32;
                if codes.bytes().len() != blocks || scales.len() as u64 != (blocks as u64).div_ceil(nb) {
                    return Err(t.bad(
                        &an,
                        format!("{} scales and {} nested scales for {blocks} blocks of {block}", codes.bytes().len(), scales.len()),
                    ));
                }
                Absmax::Nested { codes, map: Box::new(map), scales, block: nb as usize, offset }
            }
            _ => {
                let (v, _) = t.floats(&an)?;
                if v.len() != blocks {
                    return Err(t.bad(&an, format!("{} scales for {blocks} blocks of {block}", v.len())));
                }
                Absmax::Plain(v)
            }
        };
        let rows = Bnb4Rows { packed, code, absmax, block: block as usize, inp: inp as usize };
        Ok((Arc::new(rows), out as usize, inp as usize))
    }
}

/// One scale per block, decoded when a row needs it.
enum Absmax {
    Plain(Vec<f32>),
    /// Double quantization: a U8 code per block (still mapped) into `map`, times the nested scale.
    Nested {
        codes: MappedBytes,
        map: Box<[f32; 256]>,
        scales: Vec<f32>,
        block: usize,
        offset: f32,
    },
}

impl Absmax {
    fn get(&self, b: usize) -> f32 {
        match self {
            Absmax::Plain(v) => v[b],
            Absmax::Nested { codes, map, scales, block, offset } => map[codes.bytes()[b] as usize] * scales[b / block] + offset,
        }
    }
}

struct Bnb4Rows {
    packed: MappedBytes,
    code: [f32; 16],
    absmax: Absmax,
    block: usize,
    inp: usize,
}

impl PackedRows for Bnb4Rows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let q = self.packed.bytes();
        let j0 = r0 * self.inp;
        let mut scale_block = usize::MAX;
        let mut scale = 0.0;
        for (k, x) in w.iter_mut().enumerate() {
            let j = j0 + k;
            if j / self.block != scale_block {
                scale_block = j / self.block;
                scale = self.absmax.get(scale_block);
            }
            let byte = q[j / 2];
            let c = if j.is_multiple_of(2) { byte >> 4 } else { byte & 0xF };
            *x = self.code[c as usize] * scale;
        }
    }
}

/// bitsandbytes LLM.int8 (8-bit rows with a per-row absmax).
pub struct Bnb8;

/// bitsandbytes' 1/127 (`int8_vectorwise_dequant` multiplies by 7.874015718698502e-3, this f32).
const INV_127: f32 = 1.0 / 127.0;

impl QuantScheme for Bnb8 {
    fn name(&self) -> &'static str {
        "bitsandbytes"
    }

    /// `SCB` marks a quantized linear.
    fn suffixes(&self) -> &'static [&'static str] {
        &["SCB", "weight", "weight_format"]
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        let wn = format!("{prefix}.weight");
        let (q, qs) = t.mapped(&wn, Dtype::I8, "I8")?;
        let (out, inp) = t.dims2(&wn, &qs)?;
        let (scb, _) = t.floats(&format!("{prefix}.SCB"))?;
        if scb.len() != out {
            return Err(t.bad(&format!("{prefix}.SCB"), format!("{} row scales for a weight of {out} rows", scb.len())));
        }
        Ok((Arc::new(Bnb8Rows { q, scb, inp }), out, inp))
    }
}

struct Bnb8Rows {
    q: MappedBytes,
    scb: Vec<f32>,
    inp: usize,
}

impl PackedRows for Bnb8Rows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let q = self.q.bytes();
        for (r, row) in w.chunks_exact_mut(self.inp).enumerate() {
            let o = r0 + r;
            let s = self.scb[o];
            for (x, &b) in row.iter_mut().zip(&q[o * self.inp..(o + 1) * self.inp]) {
                *x = (b as i8 as f32 * s) * INV_127;
            }
        }
    }
}
