//! LoRA merge algebra, no forward pass: for every adapted module, does the merged weight equal
//! `W_base + s·B·A` (DoRA: `m / ‖W_base + s·B·A‖_row ⊙ (W_base + s·B·A)`) up to the rounding of
//! the merged file's dtype? When it does not, name the fault: not merged, wrong scale (alpha vs
//! alpha/r vs rsLoRA), sign, transposed, another layer's delta, overflow to inf.

use candle_core::{Device, Tensor};
use serde::Serialize;

use super::{Finding, Findings, Severity};
use crate::checks::ids::{self, FindingId};
use crate::error::{Error, Result};
use crate::format::dtype::{decode_f32, Dtype};
use crate::format::hf::HfDir;
use crate::format::lora::{Adapter, Factors, LoraModule};

/// Residual ‖W_M − W_expected‖ / ‖s·B·A‖ accepted on top of the merged dtype's rounding. The
/// upstream merge computes B·A in the adapter dtype with another summation order; f32 merges of
/// the zoo agree to ~1e-6, so 1e-3 leaves room and still catches a 0.1 % wrong scale.
pub const MIN_REL_TOL: f64 = 1e-3;

/// Largest ‖W_merged − c·B·A − W_deq‖ / ‖W_deq‖ still read as the rounding of a quantized base
/// (a merge into the unquantized original): a 4-bit absmax grid rounds by ~5-10 % of ‖W‖ (nf4 on
/// the zoo: 8 %), an 8-bit one by < 1 %; a merged weight farther than this from the base is not
/// that base plus a delta.
pub const QUANT_NOISE_MAX: f64 = 0.25;

/// A dense `[out, in]` weight: (row-major values, out, in).
pub type DenseWeight = (Vec<f32>, usize, usize);

/// A quantized base model: its linear layers dequantized by their scheme. The caller builds it
/// (the engine owns the schemes); merge-check then compares against the dequantized weights.
pub struct QuantBase<'a> {
    /// `quant_method`, for messages.
    pub scheme: &'a str,
    /// The dense `[out, in]` weight of linear `prefix`, `None` when that linear is not quantized.
    pub dequantize: &'a dyn Fn(&str) -> Result<Option<DenseWeight>>,
    /// The quantized linear whose storage (packed weight, scales…) a tensor name is part of.
    pub owner: &'a dyn Fn(&str) -> Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModuleRow {
    pub module: String,
    pub rank: u64,
    pub scale: f64,
    pub delta_norm: f64,
    /// ‖W_M − W_expected‖ / ‖s·B·A‖.
    pub residual: f64,
    pub tolerance: f64,
    /// Least-squares scale c with W_M − W_B ≈ c·B·A.
    pub fitted_scale: f64,
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergeReport {
    pub modules: Vec<ModuleRow>,
    pub findings: Vec<Finding>,
}

struct Mat {
    v: Vec<f32>,
    shape: Vec<u64>,
    dtype: Dtype,
}

fn load(dir: &HfDir, name: &str) -> Result<Option<Mat>> {
    let Some((f, t)) = dir.tensor(name) else { return Ok(None) };
    let bytes = f.checked_bytes(name)?;
    let v = decode_f32(t.dtype, bytes).ok_or_else(|| Error::Tensor {
        path: f.path.clone(),
        tensor: name.to_string(),
        detail: format!("dtype {} cannot be checked (quantized?)", t.dtype),
    })?;
    Ok(Some(Mat { v, shape: t.shape.clone(), dtype: t.dtype }))
}

/// The weight `name` of a linear that `quant` stores quantized, dequantized; `None` otherwise.
fn dequantized(quant: Option<&QuantBase>, name: &str) -> Result<Option<Mat>> {
    let (Some(q), Some(prefix)) = (quant, name.strip_suffix(".weight")) else { return Ok(None) };
    Ok((q.dequantize)(prefix)?.map(|(v, o, i)| Mat { v, shape: vec![o as u64, i as u64], dtype: Dtype::F32 }))
}

/// A base weight: dequantized when `quant` stores that linear quantized (`true` then), else as
/// stored.
fn load_base(base: &HfDir, quant: Option<&QuantBase>, name: &str) -> Result<Option<(Mat, bool)>> {
    if let Some(w) = dequantized(quant, name)? {
        return Ok(Some((w, true)));
    }
    Ok(load(base, name)?.map(|m| (m, false)))
}

/// Unit roundoff of a storage dtype: the largest relative error of one rounding.
fn unit_roundoff(d: Dtype) -> f64 {
    match d {
        Dtype::F64 => 2f64.powi(-53),
        Dtype::F32 => 2f64.powi(-24),
        Dtype::F16 => 2f64.powi(-11),
        Dtype::BF16 => 2f64.powi(-8),
        _ => 2f64.powi(-4),
    }
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// B·A as f64, `[out × in]` row-major.
fn product(f: &Factors) -> Result<Vec<f64>> {
    let dev = Device::Cpu;
    let err =
        |e: candle_core::Error| Error::Tensor { path: "<merge-check>".into(), tensor: "lora_B·lora_A".into(), detail: e.to_string() };
    let tb = Tensor::from_slice(&f.b, (f.out, f.rank), &dev).map_err(err)?;
    let ta = Tensor::from_slice(&f.a, (f.rank, f.inp), &dev).map_err(err)?;
    let p: Vec<f32> = tb.matmul(&ta).and_then(|p| p.flatten_all()).and_then(|p| p.to_vec1()).map_err(err)?;
    Ok(p.into_iter().map(|x| x as f64).collect())
}

/// `quant`: the base is quantized (QLoRA); its linears are compared dequantized, and a merge into
/// the unquantized original (the base's rounding noise on top of the right delta) is accepted
/// with a note.
pub fn check(base: &HfDir, quant: Option<&QuantBase>, adapter: &Adapter, merged: &HfDir) -> Result<MergeReport> {
    // One finding per module at most, listed in full beside the module rows (which list every
    // module anyway); findings about the other tensors are grouped (`untargeted`).
    let mut findings = Vec::new();
    let mut rows = Vec::new();
    let merged_file = |name: &str| merged.tensor(name).map(|(f, _)| merged.rel(&f.path)).unwrap_or_else(|| "model.safetensors".into());

    let mut applicable = super::Findings::new();
    super::adapter::applicable(adapter, &mut applicable);
    findings.extend(applicable.into_vec());
    if merged.tensors().any(|(_, t)| t.name.contains(".lora_A.") || t.name.contains(".lora_B.")) {
        findings.push(
            Finding::new(
                ids::MERGE_UNMERGED_LORA_TENSORS,
                Severity::Error,
                "model.safetensors",
                "the merged checkpoint still holds lora_A/lora_B tensors",
            )
            .hint("call `merged = model.merge_and_unload()` and save `merged`, not the PeftModel"),
        );
    }

    // Deltas by module, computed once (wrong-layer diagnosis compares against the others).
    let mut deltas: Vec<(usize, Vec<f64>, Vec<u64>)> = Vec::new();
    // Modules merged into a quantized base's unquantized original: (weight, relative noise).
    let mut quant_original: Vec<(String, f64)> = Vec::new();
    // Expert weights left equal to the base: (weight, file), reported as one finding.
    let mut dropped_experts: Vec<(String, String)> = Vec::new();
    for (mi, m) in adapter.modules.iter().enumerate() {
        let f = match adapter.factors(m) {
            Ok(f) => f,
            Err(Error::Tensor { detail, .. }) => {
                findings.push(
                    Finding::new(ids::MERGE_ADAPTER_SHAPE, Severity::Error, "adapter_model.safetensors", format!("`{}`: {detail}", m.base))
                        .field(m.a.clone()),
                );
                continue;
            }
            Err(e) => return Err(e),
        };
        // A NaN/Inf factor makes every merge of it non-finite: name the adapter, not the merge.
        let bad = f.a.iter().chain(&f.b).filter(|x| !x.is_finite()).count();
        if bad > 0 {
            findings.push(
                Finding::new(
                    ids::MERGE_ADAPTER_NOT_FINITE,
                    Severity::Error,
                    "adapter_model.safetensors",
                    format!("`{}`: lora_A / lora_B hold {bad} NaN/Inf values, so no merge of them can be right", m.base),
                )
                .field(m.a.clone())
                .hint("the adapter itself is broken (training diverged or the save was damaged): retrain or re-save it"),
            );
            continue;
        }
        let ba = product(&f)?;
        deltas.push((mi, ba, vec![f.out as u64, f.inp as u64]));
    }

    for (mi, ba, shape) in &deltas {
        let m = &adapter.modules[*mi];
        let wname = format!("{}.weight", m.base);
        let Some((wb, dequantized)) = load_base(base, quant, &wname)? else {
            findings.push(
                Finding::new(
                    ids::MERGE_MODULE_NOT_IN_BASE,
                    Severity::Error,
                    "adapter_model.safetensors",
                    format!("the adapter adapts `{}`, which the base model does not have", m.base),
                )
                .field(m.a.clone())
                .hint("the adapter was trained on another base model"),
            );
            continue;
        };
        let Some(wm) = load(merged, &wname)? else {
            findings.push(
                Finding::new(
                    ids::MERGE_MODULE_MISSING,
                    Severity::Error,
                    merged_file(&wname),
                    format!("`{wname}` is missing from the merged checkpoint"),
                )
                .field(wname.clone()),
            );
            continue;
        };
        if wb.shape != *shape || wm.shape != *shape {
            findings.push(
                Finding::new(
                    ids::MERGE_SHAPE_MISMATCH,
                    Severity::Error,
                    merged_file(&wname),
                    format!("`{wname}`: base {:?}, merged {:?}, s·B·A {:?}", wb.shape, wm.shape, shape),
                )
                .field(wname.clone()),
            );
            continue;
        }
        let nonfinite = wm.v.iter().filter(|x| !x.is_finite()).count();
        let delta: Vec<f64> = ba.iter().map(|x| x * m.scale).collect();
        let expected: Vec<f64> = expected_weight(adapter, m, &wb, &delta)?;
        let resid_v: Vec<f64> = wm.v.iter().zip(&expected).map(|(&x, e)| x as f64 - e).collect();
        let d_norm = norm(&delta).max(f64::MIN_POSITIVE);
        let residual = norm(&resid_v) / d_norm;
        let wm_norm = norm(&wm.v.iter().map(|&x| x as f64).collect::<Vec<_>>());
        let tolerance = MIN_REL_TOL.max(2.0 * unit_roundoff(wm.dtype) * wm_norm / d_norm);
        let diff: Vec<f64> = wm.v.iter().zip(&wb.v).map(|(&x, &y)| x as f64 - y as f64).collect();
        let ba_sq = dot(ba, ba).max(f64::MIN_POSITIVE);
        let fitted = dot(&diff, ba) / ba_sq;
        let file = merged_file(&wname);
        let status = if nonfinite > 0 {
            findings.push(
                Finding::new(
                    ids::MERGE_OVERFLOW,
                    Severity::Error,
                    &file,
                    format!("`{wname}` has {nonfinite} non-finite values after the merge"),
                )
                .field(wname.clone())
                .hint("the merge overflowed its dtype (fp16 max 65504): merge in f32 or bf16, then cast"),
            );
            "overflow"
        } else if residual <= tolerance {
            "ok"
        } else {
            // Over a dequantized base the fit carries the base's rounding noise: the scale is
            // known to its standard error, and a right scale with noise no larger than the
            // base's grid is a merge into the unquantized original.
            let noise = dequantized.then(|| {
                let e: Vec<f64> = diff.iter().zip(ba).map(|(d, x)| d - fitted * x).collect();
                let se = norm(&e) / ((e.len().max(2) - 1) as f64).sqrt() / norm(ba).max(f64::MIN_POSITIVE);
                let wb_norm = norm(&wb.v.iter().map(|&x| x as f64).collect::<Vec<_>>()).max(f64::MIN_POSITIVE);
                (se, norm(&e) / wb_norm)
            });
            let original =
                noise.is_some_and(|(se, rel)| (fitted - m.scale).abs() <= (4.0 * se).max(1e-2 * m.scale.abs()) && rel <= QUANT_NOISE_MAX);
            if original {
                quant_original.push((wname.clone(), noise.map_or(0.0, |n| n.1)));
                "ok (original base)"
            } else {
                let (id, msg, hint, status) =
                    diagnose(adapter, m, &wname, &diff, ba, fitted, d_norm, tolerance, noise.map(|n| n.0), &deltas, *mi);
                if id == ids::MERGE_NOT_MERGED && is_expert(m) {
                    dropped_experts.push((wname.clone(), file.clone()));
                } else {
                    findings.push(Finding::new(id, Severity::Error, &file, msg).field(wname.clone()).hint(hint));
                }
                status
            }
        };
        rows.push(ModuleRow {
            module: m.base.clone(),
            rank: m.rank,
            scale: m.scale,
            delta_norm: d_norm,
            residual,
            tolerance,
            fitted_scale: fitted,
            status,
        });
    }

    if let Some((first, file)) = dropped_experts.first() {
        findings.push(expert_deltas_dropped(adapter, &dropped_experts, first, file));
    }
    if let (Some(q), Some((first, _))) = (quant, quant_original.first()) {
        let worst = quant_original.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        findings.push(
            Finding::new(
                ids::MERGE_QUANTIZED_BASE_ORIGINAL,
                Severity::Info,
                merged_file(first),
                format!(
                    "{} of {} modules were merged into the unquantized original of this {} base, not into its dequantized \
                     weights: the right delta (scale within its standard error) plus the base's rounding noise (at most \
                     {:.1} % of ‖W‖)",
                    quant_original.len(),
                    rows.len(),
                    q.scheme,
                    100.0 * worst
                ),
            )
            .field(first.clone())
            .hint("expected for a QLoRA merge into the bf16 original; the adapter was trained against the dequantized weights, so `compare` the merge against base+adapter to see what the rounding costs"),
        );
    }
    let mut others = Findings::new();
    untargeted(base, quant, adapter, merged, &mut others)?;
    findings.extend(others.into_vec());
    Ok(MergeReport { modules: rows, findings })
}

/// An MoE expert's weight: a fused-expert `target_parameters` slice, or a per-expert linear.
fn is_expert(m: &LoraModule) -> bool {
    m.expert.is_some() || m.base.contains(".experts.")
}

/// One finding for every expert weight the merge left equal to the base: the usual cause is a
/// merge that never saw the expert factors (a peft or merge script that predates
/// `target_parameters` loads them as unexpected keys), not one module lost at a time.
fn expert_deltas_dropped(adapter: &Adapter, dropped: &[(String, String)], first: &str, file: &str) -> Finding {
    let experts: Vec<&LoraModule> = adapter.modules.iter().filter(|m| is_expert(m)).collect();
    let layers: std::collections::BTreeSet<u64> = dropped.iter().filter_map(|(w, _)| crate::format::lora::layer_index(w)).collect();
    let all_layers: std::collections::BTreeSet<u64> = experts.iter().filter_map(|m| crate::format::lora::layer_index(&m.base)).collect();
    let fused = !adapter.config.target_parameters.is_empty() && experts.iter().any(|m| m.expert.is_some());
    let others_ok = adapter.modules.len() > experts.len();
    let msg = format!(
        "{} of {} adapted expert weights equal the base weights ({} of {} MoE layers, first `{first}`) although the adapter has a delta for each{}",
        dropped.len(),
        experts.len(),
        layers.len(),
        all_layers.len(),
        if fused && others_ok {
            format!(
                ": the adapter adapts the fused experts through target_parameters {:?}, and the merge folded in only its target_modules",
                adapter.config.target_parameters
            )
        } else {
            String::new()
        }
    );
    let hint = if fused {
        "merge with peft ≥ 0.17 (it knows `target_parameters`; an older peft or a merge script that predates it loads the expert factors as unexpected keys and skips them): `PeftModel.from_pretrained(base, adapter).merge_and_unload()` on transformers ≥ 5, then save"
    } else {
        "merge every expert module the adapter targets (`merge_and_unload()` on the PeftModel), and save the returned model"
    };
    Finding::new(ids::MERGE_EXPERT_DELTA_DROPPED, Severity::Error, file, msg).field(first.to_string()).hint(hint)
}

fn expected_weight(adapter: &Adapter, m: &LoraModule, wb: &Mat, delta: &[f64]) -> Result<Vec<f64>> {
    let mut w: Vec<f64> = wb.v.iter().zip(delta).map(|(&x, d)| x as f64 + d).collect();
    if let Some(mag_name) = &m.magnitude {
        let Some(mag) = load(&adapter.dir, mag_name)? else { return Ok(w) };
        let cols = wb.shape[1] as usize;
        for (row, chunk) in w.chunks_mut(cols).enumerate() {
            let n = norm(chunk).max(f64::MIN_POSITIVE);
            let s = mag.v.get(row).copied().unwrap_or(1.0) as f64 / n;
            chunk.iter_mut().for_each(|x| *x *= s);
        }
    }
    Ok(w)
}

#[allow(clippy::too_many_arguments)]
fn diagnose(
    adapter: &Adapter,
    m: &LoraModule,
    wname: &str,
    diff: &[f64],
    ba: &[f64],
    fitted: f64,
    d_norm: f64,
    tol: f64,
    scale_se: Option<f64>,
    deltas: &[(usize, Vec<f64>, Vec<u64>)],
    me: usize,
) -> (FindingId, String, String, &'static str) {
    let cfg = &adapter.config;
    let diff_norm = norm(diff);
    // Over a dequantized base (`scale_se`: the fitted scale's standard error) the diff holds the
    // base's rounding noise: "not merged" and the scale are read from the fit, not the residual.
    let unmerged = match scale_se {
        Some(se) => fitted.abs() <= 4.0 * se,
        None => diff_norm / d_norm <= tol,
    };
    if unmerged {
        return (
            ids::MERGE_NOT_MERGED,
            format!("`{wname}` equals the base weight: the LoRA delta (‖s·B·A‖ = {d_norm:.3e}) was never added"),
            "merge every target module (`merge_and_unload()` on the PeftModel), and save the returned model".into(),
            "not merged",
        );
    }
    let fit_resid: Vec<f64> = diff.iter().zip(ba).map(|(d, x)| d - fitted * x).collect();
    let ba_norm = norm(ba);
    let fit_ok = scale_se.is_some() || norm(&fit_resid) / (fitted.abs() * ba_norm).max(f64::MIN_POSITIVE) <= tol * 10.0;
    if fit_ok {
        let r = m.rank as f64;
        let alpha = m.alpha;
        let near = |x: f64| (fitted - x).abs() <= (1e-2 * x.abs()).max(4.0 * scale_se.unwrap_or(0.0));
        let what = if near(-m.scale) {
            "the delta was subtracted (sign flipped)".to_string()
        } else if near(alpha) && !near(m.scale) {
            let twice = if near(2.0 * m.scale) { " (or, the same here since r = 2, the delta was added twice)" } else { "" };
            format!("scale {fitted:.4} = lora_alpha: alpha was used without dividing by r = {r}{twice}")
        } else if near(2.0 * m.scale) {
            "the delta was added twice".to_string()
        } else if !cfg.use_rslora && near(alpha / r.sqrt()) {
            format!("scale {fitted:.4} = alpha/sqrt(r): rsLoRA scaling applied to a plain LoRA adapter")
        } else if cfg.use_rslora && near(alpha / r) {
            format!("scale {fitted:.4} = alpha/r: use_rslora is set, the scale should be alpha/sqrt(r) = {:.4}", alpha / r.sqrt())
        } else if near(1.0) {
            "scale 1: the raw B·A was added without lora_alpha / r".to_string()
        } else {
            format!("scale {fitted:.4} instead of {:.4}", m.scale)
        };
        return (
            ids::MERGE_WRONG_SCALE,
            format!("`{wname}` = W_base + c·B·A with c = {fitted:.4}, expected s = {:.4}: {what}", m.scale),
            format!(
                "merge with PEFT's own `merge_and_unload()` (s = lora_alpha / r{})",
                if cfg.use_rslora { ", sqrt(r) under rsLoRA" } else { "" }
            ),
            "wrong scale",
        );
    }
    // Transposed delta (square modules only).
    let n = (ba.len() as f64).sqrt() as usize;
    if n * n == ba.len() {
        let mut t = 0.0;
        for i in 0..n {
            for j in 0..n {
                let e = diff[i * n + j] - m.scale * ba[j * n + i];
                t += e * e;
            }
        }
        if t.sqrt() / d_norm <= tol * 10.0 {
            return (
                ids::MERGE_TRANSPOSED,
                format!("`{wname}` got (s·B·A)ᵀ: the delta was transposed (fan_in_fan_out mix-up)"),
                "set fan_in_fan_out only for Conv1D (GPT-2 style) layers".into(),
                "transposed",
            );
        }
    }
    // Another module's delta.
    for (oi, oba, _) in deltas.iter().filter(|(i, b, _)| *i != me && b.len() == ba.len()) {
        let o = &adapter.modules[*oi];
        let r: Vec<f64> = diff.iter().zip(oba).map(|(d, x)| d - o.scale * x).collect();
        if norm(&r) / (o.scale.abs() * norm(oba)).max(f64::MIN_POSITIVE) <= tol * 10.0 {
            return (
                ids::MERGE_WRONG_MODULE,
                format!("`{wname}` got the delta of `{}`", o.base),
                "the merge script mapped adapter tensors to the wrong modules (layer index or name off)".into(),
                "wrong module",
            );
        }
    }
    (
        ids::MERGE_MISMATCH,
        format!(
            "`{wname}` differs from W_base + s·B·A by {:.3e} of ‖s·B·A‖ (tolerance {tol:.1e}); best-fit scale {fitted:.4} vs s = {:.4}",
            norm(diff.iter().zip(ba).map(|(d, x)| d - m.scale * x).collect::<Vec<_>>().as_slice()) / d_norm,
            m.scale
        ),
        "the merged weight is not the base plus this adapter: wrong base model, wrong adapter, or a lossy re-quantization".into(),
        "mismatch",
    )
}

/// Tensors that changed without being targeted, modules_to_save, resized embeddings.
fn untargeted(base: &HfDir, quant: Option<&QuantBase>, adapter: &Adapter, merged: &HfDir, out: &mut Findings) -> Result<()> {
    let targeted: std::collections::BTreeSet<String> = adapter.modules.iter().map(|m| format!("{}.weight", m.base)).collect();
    let saved: std::collections::BTreeMap<&str, &str> = adapter.saved.iter().map(|(a, b)| (b.as_str(), a.as_str())).collect();
    for (f, t) in merged.tensors() {
        let name = t.name.as_str();
        if targeted.contains(name) || name.contains(".lora_") {
            continue;
        }
        let file = merged.rel(&f.path);
        // An untargeted linear of a quantized base: the merged copy is its dequantization (or
        // the unquantized original, within the base's rounding).
        if let Some(wb) = dequantized(quant, name)? {
            let Some(wm) = load(merged, name)? else { continue };
            let rd = if wm.shape == wb.shape { rel_diff(&wm.v, &wb.v) } else { f64::INFINITY };
            if rd > QUANT_NOISE_MAX {
                out.push(
                    Finding::new(
                        ids::MERGE_UNTARGETED_CHANGE,
                        Severity::Warning,
                        &file,
                        format!("`{name}` is not adapted by the adapter but differs by {rd:.2e} (relative) from the dequantized base"),
                    )
                    .field(name.to_string())
                    .hint("the merged model was trained further or merged from another base; check this is intended"),
                );
            }
            continue;
        }
        let Some((_, bt)) = base.tensor(name) else {
            out.push(
                Finding::new(ids::MERGE_NEW_TENSOR, Severity::Warning, &file, format!("`{name}` is not in the base model"))
                    .field(name.to_string()),
            );
            continue;
        };
        if bt.shape != t.shape {
            let embed = name.contains("embed_tokens") || name.starts_with("lm_head");
            out.push(
                Finding::new(
                    if embed { ids::MERGE_RESIZED_EMBEDDINGS } else { ids::MERGE_SHAPE_CHANGED },
                    Severity::Warning,
                    &file,
                    format!("`{name}` is {:?} in the merged model but {:?} in the base", t.shape, bt.shape),
                )
                .field(name.to_string())
                .hint(if embed {
                    "tokens were added: check the tokenizer matches (`ckptcheck lint`) and the new rows were trained (modules_to_save)"
                } else {
                    ""
                }),
            );
            continue;
        }
        let (Some(wm), Some(wb)) = (load(merged, name)?, load(base, name)?) else { continue };
        if let Some(adapter_name) = saved.get(name) {
            let Some(ws) = load(&adapter.dir, adapter_name)? else { continue };
            let equal_saved = wm.v == ws.v || rel_diff(&wm.v, &ws.v) <= unit_roundoff(wm.dtype);
            if !equal_saved {
                let equal_base = rel_diff(&wm.v, &wb.v) <= unit_roundoff(wm.dtype);
                out.push(
                    Finding::new(
                        ids::MERGE_MODULES_TO_SAVE_NOT_COPIED,
                        Severity::Error,
                        &file,
                        if equal_base {
                            format!("`{name}` is in modules_to_save but the merged model kept the base weights")
                        } else {
                            format!("`{name}` is in modules_to_save but equals neither the adapter's copy nor the base")
                        },
                    )
                    .field(name.to_string())
                    .hint("merge_and_unload copies modules_to_save; a hand-written merge must copy them too"),
                );
            }
            continue;
        }
        let rd = rel_diff(&wm.v, &wb.v);
        // Allow one rounding of the merged dtype (a cast f32 → bf16 of the whole model).
        if rd > unit_roundoff(wm.dtype).max(unit_roundoff(wb.dtype)) {
            out.push(
                Finding::new(
                    ids::MERGE_UNTARGETED_CHANGE,
                    Severity::Warning,
                    &file,
                    format!("`{name}` is not adapted by the adapter but changed by {rd:.2e} (relative) from the base"),
                )
                .field(name.to_string())
                .hint("the merged model was trained further or merged from another base; check this is intended"),
            );
        }
    }
    for (f, t) in base.tensors() {
        // A quantized linear's storage is dropped by design when the merge holds it dense.
        if let Some(prefix) = quant.and_then(|q| (q.owner)(&t.name)) {
            if merged.tensor(&format!("{prefix}.weight")).is_some() {
                continue;
            }
        }
        if merged.tensor(&t.name).is_none() {
            out.push(
                Finding::new(
                    ids::MERGE_TENSOR_DROPPED,
                    Severity::Error,
                    base.rel(&f.path),
                    format!("`{}` is in the base model but missing from the merged one", t.name),
                )
                .field(t.name.clone()),
            );
        }
    }
    Ok(())
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let mut d = 0.0f64;
    let mut n = 0.0f64;
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        d += (x - y) * (x - y);
        n += y * y;
    }
    (d / n.max(f64::MIN_POSITIVE)).sqrt()
}
