//! Quantized HF checkpoints (GPTQ, AWQ, compressed-tensors, FP8): layout facts a loader would trip
//! on, no forward pass. Scales are float tensors and get the ordinary value scan.

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::dtype::Dtype;
use crate::format::quant::{QuantConfig, FP8_SCALE_SUFFIXES};

pub fn check(ctx: &Context, out: &mut Findings) {
    fp8_scales(ctx, out);
    let Some(q) = QuantConfig::from_config_json(ctx.dir) else { return };
    // 4-bit GPTQ in the v1 format (`checkpoint_format` absent or `gptq`).
    if q.method != "gptq" || q.format.as_deref().unwrap_or("gptq") != "gptq" || q.bits != Some(4) {
        return;
    }
    // GPTQ v1 stores zero points minus one: a zero point of 0 (asymmetric quantization) is stored
    // as −1 and masked to 0xF, which readers turn back into 16 — the v1 overflow gptqmodel's v2
    // format exists to fix (failure catalogue #18).
    for (f, t) in ctx.dir.tensors() {
        if !t.name.ends_with(".qzeros") {
            continue;
        }
        let Some(bytes) = f.bytes(t) else { continue };
        let overflowed: usize = bytes
            .chunks_exact(4)
            .map(|c| {
                let w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                (0..8).filter(|k| (w >> (4 * k)) & 0xF == 0xF).count()
            })
            .sum();
        if overflowed > 0 {
            out.push(
                Finding::new(
                    ids::QUANT_GPTQ_ZERO_OVERFLOW,
                    Severity::Error,
                    ctx.dir.rel(&f.path),
                    format!(
                        "`{}` has {overflowed} zero points stored as 0xF: in the v1 format that is a zero point of 0 wrapped to 16",
                        t.name
                    ),
                )
                .field(t.name.clone())
                .hint("re-save in gptqmodel's v2 format (checkpoint_format: gptq_v2) or quantize symmetrically"),
            );
        }
    }
}

/// FP8 weights are stored divided by a scale; one with no scale beside it (dropped by a re-save
/// or a conversion that did not know the format) is off by that factor in every element.
fn fp8_scales(ctx: &Context, out: &mut Findings) {
    for (f, t) in ctx.dir.tensors() {
        let Some(prefix) = t.name.strip_suffix(".weight") else { continue };
        if !matches!(t.dtype, Dtype::F8_E4M3 | Dtype::F8_E5M2)
            || FP8_SCALE_SUFFIXES.iter().any(|s| ctx.dir.tensor(&format!("{prefix}.{s}")).is_some())
        {
            continue;
        }
        out.push(
            Finding::new(
                ids::QUANT_FP8_UNSCALED,
                Severity::Error,
                ctx.dir.rel(&f.path),
                format!("`{}` is {} with no `{prefix}.weight_scale` beside it: the stored values are the weight divided by a scale that is gone", t.name, t.dtype),
            )
            .field(t.name.clone())
            .hint("the scales were dropped on a re-save or conversion: export again from the quantized original (with its weight_scale tensors and quantization_config), or dequantize there and save bf16"),
        );
    }
}
