//! Quantized HF checkpoints (GPTQ, AWQ, compressed-tensors, FP8): layout facts a loader would trip
//! on, no forward pass. Scales are float tensors and get the ordinary value scan.

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::dtype::Dtype;
use crate::format::quant::{fp8_scale, packed_code, QuantConfig};

pub fn check(ctx: &Context, out: &mut Findings) {
    fp8_scales(ctx, out);
    scale_magnitude(ctx, out);
    let Some(q) = QuantConfig::from_config_json(ctx.dir) else { return };
    head_and_embedding(ctx, &q, out);
    if q.method == "gptq" {
        gptq_g_idx(ctx, &q, out);
    }
    // GPTQ in the v1 format (`checkpoint_format` absent or `gptq`), 2/3/4/8-bit.
    let bits = match q.bits {
        Some(b @ (2 | 3 | 4 | 8)) => b as u32,
        _ => return,
    };
    if q.method != "gptq" || q.format.as_deref().unwrap_or("gptq") != "gptq" {
        return;
    }
    // GPTQ v1 stores zero points minus one: a zero point of 0 (asymmetric quantization) is stored
    // as −1 and masked to all ones (0xF at 4 bits), which readers turn back into 2^bits — the v1
    // overflow gptqmodel's v2 format exists to fix (failure catalogue #18).
    let all_ones = (1u32 << bits) - 1;
    for (f, t) in ctx.dir.tensors() {
        if !t.name.ends_with(".qzeros") {
            continue;
        }
        let (Some(bytes), [_, cols]) = (f.bytes(t), t.shape.as_slice()) else { continue };
        let cols = *cols as usize;
        let words: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        let per_row = cols * 32 / bits as usize;
        let overflowed: usize = words
            .chunks(cols.max(1))
            .map(|row| (0..per_row).filter(|&k| packed_code(|n| row.get(n).copied().unwrap_or(0), k, bits) == all_ones).count())
            .sum();
        if overflowed > 0 {
            out.push(
                Finding::new(
                    ids::QUANT_GPTQ_ZERO_OVERFLOW,
                    Severity::Error,
                    ctx.dir.rel(&f.path),
                    format!(
                        "`{}` has {overflowed} zero points stored as {all_ones:#x}: in the v1 format that is a zero point of 0 wrapped to {}",
                        t.name,
                        all_ones + 1
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
        let (Some(None), Some(prefix)) = (fp8_scale(ctx.dir, &t.name, t.dtype), t.name.strip_suffix(".weight")) else { continue };
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

/// The largest |w| an FP8 or NVFP4 weight's scales allow: 448 · max s (FP8), 6 · max s / g
/// (NVFP4's group scales over its global scale); `None` when the tensors are not those.
fn implied_max(ctx: &Context, prefix: &str) -> Option<(f64, String)> {
    let floats = |name: &str| -> Option<Vec<f32>> {
        let (f, t) = ctx.dir.tensor(name)?;
        crate::format::dtype::decode_f32(t.dtype, f.bytes(t)?)
    };
    let amax = |v: &[f32]| v.iter().filter(|x| x.is_finite()).fold(0f64, |m, &x| m.max(x.abs() as f64));
    let (_, w) = ctx.dir.tensor(&format!("{prefix}.weight")).or_else(|| ctx.dir.tensor(&format!("{prefix}.weight_packed")))?;
    let scale = format!("{prefix}.weight_scale");
    match w.dtype {
        Dtype::F8_E4M3 => Some((448.0 * amax(&floats(&scale)?), scale)),
        Dtype::U8 => {
            let g = floats(&format!("{prefix}.weight_global_scale"))?;
            let g = *g.first().filter(|g| g.is_finite() && **g != 0.0)? as f64;
            Some((6.0 * amax(&floats(&scale)?) / g.abs(), format!("{prefix}.weight_global_scale")))
        }
        _ => None,
    }
}

/// Scales that dequantize to weights no trained model has (max |w| above 1e4, as values.huge):
/// a scale stored as its reciprocal — ModelOpt's `weight_scale_2` multiplies where
/// compressed-tensors' `weight_global_scale` divides; DeepSeek's `weight_scale_inv` multiplies
/// despite its name — or a scale edited by hand.
fn scale_magnitude(ctx: &Context, out: &mut Findings) {
    for (f, t) in ctx.dir.tensors() {
        let Some(prefix) = t.name.strip_suffix(".weight_scale") else { continue };
        let Some((max, field)) = implied_max(ctx, prefix) else { continue };
        if max > crate::checks::values::ABSURD_MAGNITUDE {
            out.push(
                Finding::new(
                    ids::QUANT_SCALE_IMPLAUSIBLE,
                    Severity::Error,
                    ctx.dir.rel(&f.path),
                    format!("`{prefix}` dequantizes to |w| up to {max:.3e} through `{field}`: a scale stored inverted or edited"),
                )
                .field(field)
                .hint("a converter took a divisor for a multiplier (ModelOpt weight_scale_2 vs compressed-tensors weight_global_scale, weight_scale_inv vs weight_scale): re-export from the quantizer"),
            );
        }
    }
}

/// Whether the linear `prefix` is stored quantized, by the tensors beside its weight.
fn stored_quantized(ctx: &Context, prefix: &str) -> bool {
    ["qweight", "weight_packed", "weight_scale", "weight.absmax", "SCB"].iter().any(|s| ctx.dir.tensor(&format!("{prefix}.{s}")).is_some())
}

/// The head (and the embedding) against what the config says of them: a serving stack loads
/// each layer by the config, so a quantized head the config calls dense, or the reverse, fails
/// to load or runs the wrong kernel.
fn head_and_embedding(ctx: &Context, q: &QuantConfig, out: &mut Findings) {
    let file = ctx.dir.config.as_ref().map(|c| ctx.dir.rel(&c.path)).unwrap_or_default();
    let says_quantized: Option<(bool, &str)> = match q.method.as_str() {
        "gptq" => Some((q.raw.get("lm_head").and_then(serde_json::Value::as_bool).unwrap_or(false), "lm_head")),
        "compressed-tensors" => {
            let ignored = q.raw.get("ignore").and_then(serde_json::Value::as_array).is_some_and(|a| a.iter().any(|v| v == "lm_head"));
            Some((!ignored, "ignore"))
        }
        _ => None,
    };
    let mut mismatch = |field: &str, message: String| {
        out.push(
            Finding::new(ids::QUANT_CONFIG_MISMATCH, Severity::Warning, &file, message)
                .field(format!("quantization_config.{field}"))
                .hint("make quantization_config say what the tensors are (serving stacks such as vLLM load each layer by the config), or re-export from the quantizer"),
        )
    };
    if let Some((config_says, field)) =
        says_quantized.filter(|_| ctx.dir.tensor("lm_head.weight").is_some() || stored_quantized(ctx, "lm_head"))
    {
        let stored = stored_quantized(ctx, "lm_head");
        if stored != config_says {
            let (is, says) = if stored { ("quantized", "dense") } else { ("dense", "quantized") };
            mismatch(field, format!("`lm_head` is stored {is}, but quantization_config.{field} says it is {says}"));
        }
    }
    if stored_quantized(ctx, "model.embed_tokens") {
        mismatch(
            "",
            "`model.embed_tokens` is stored quantized: no quantizer here quantizes the embedding, and no loader expects it".into(),
        );
    }
}

/// GPTQ's `g_idx` (each input's group): out of range breaks every reader; not sequential while
/// `desc_act` is false breaks the kernels that ignore `g_idx` then (exllama, marlin), which
/// dequantize with `i / group_size` instead.
fn gptq_g_idx(ctx: &Context, q: &QuantConfig, out: &mut Findings) {
    for (f, t) in ctx.dir.tensors() {
        let Some(prefix) = t.name.strip_suffix(".g_idx") else { continue };
        let (Some(bytes), Dtype::I32) = (f.bytes(t), t.dtype) else { continue };
        let Some((_, scales)) = ctx.dir.tensor(&format!("{prefix}.scales")) else { continue };
        let groups = scales.shape.first().copied().unwrap_or(0) as i64;
        let g_idx: Vec<i64> = bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect();
        let bad = g_idx.iter().filter(|&&g| g < 0 || g >= groups).count();
        let file = ctx.dir.rel(&f.path);
        if bad > 0 {
            out.push(
                Finding::new(
                    ids::QUANT_GIDX_OUT_OF_RANGE,
                    Severity::Error,
                    &file,
                    format!("`{}`: {bad} of {} entries are outside the {groups} groups `{prefix}.scales` has", t.name, g_idx.len()),
                )
                .field(t.name.clone())
                .hint("the checkpoint's g_idx and scales do not belong together: re-export it from the quantizer"),
            );
            continue;
        }
        let g = q.group_size.filter(|&g| g > 0).unwrap_or(g_idx.len().max(1) as u64) as i64;
        let sequential = g_idx.iter().enumerate().all(|(i, &x)| x == i as i64 / g);
        if !sequential && q.desc_act != Some(true) {
            out.push(
                Finding::new(
                    ids::QUANT_GIDX_UNORDERED,
                    Severity::Warning,
                    &file,
                    format!("`{}` is not i / group_size ({g}) but desc_act is not true: kernels that skip g_idx without act-order dequantize it with the wrong groups", t.name),
                )
                .field(t.name.clone())
                .hint("set desc_act: true in quantization_config (the quantizer used act-order), or re-export without act-order"),
            );
        }
    }
}
