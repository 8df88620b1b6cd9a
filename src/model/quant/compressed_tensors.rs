//! compressed-tensors (llmcompressor), as `config.json:quantization_config.format` names it:
//!
//! - `pack-quantized`, int4: `weight_packed` i32 `[out, in/8]`: nibble k of word c is input
//!   `8c + k`, stored as `q + 8`; `weight_scale` `[out, groups]`; `weight_shape` `[out, in]` when
//!   `in` is not a multiple of 8; `W[o, i] = (nibble − 8 − z) · s[o, i / group]`, with `z` from
//!   `weight_zero_point` when asymmetric (else 0).
//! - `float-quantized` (FP8) and `int-quantized` (W8A8): `weight` F8_E4M3 or I8 `[out, in]`, one
//!   value per element, and `weight_scale` by the weights' `strategy`: `tensor` `[1]`, `channel`
//!   `[out, 1]`, `group` `[out, ⌈in/g⌉]`, `block` `[⌈out/bo⌉, ⌈in/bi⌉]` (`block_structure`
//!   `[bo, bi]`, DeepSeek-V3 style); `weight_zero_point` of the same shape when asymmetric (int
//!   only). `W[o, i] = (q − z) · s[unit of (o, i)]`, in f32 (compressed-tensors' `dequantize`).
//!
//! - `nvfp4-pack-quantized` / `mxfp4-pack-quantized` (weights only: `NVFP4A16`, `MXFP4A16`):
//!   `weight_packed` U8 `[out, in/2]`, element `2k` of a row in the low nibble, `2k + 1` in the
//!   high one, each an FP4 E2M1 code (bit 3 the sign, bits 0-2 an index into 0, 0.5, 1, 1.5, 2,
//!   3, 4, 6). NVFP4: `weight_scale` F8_E4M3 `[out, in/16]` and `weight_global_scale` F32 `[1]`,
//!   `W = bf16(q · (s / g))` (the division and product in f32, then rounded to bf16, as
//!   compressed-tensors decompresses it). MXFP4: `weight_scale` U8 `[out, in/32]`, E8M0
//!   exponents, `W = q · 2^(e − 127)` (exact; 255 is NaN).
//!
//! `input_activations` (W8A8, FP8): compressed-tensors' forward quantizes each linear's input
//! too, and the engine does the same (`ActQuant`), since that rounding is what the quantized
//! model runs with (measured on the zoo: int8 activations are 98 % of W8A8's KL to the original).
//! Dynamic, symmetric: per `token` (row), `tensor` or `group` of `group_size` columns, a scale
//! `s = max|x| / (range / 2)` (448 for FP8 E4M3, 127.5 for int8), then `round(clamp(x / s)) · s`
//! (FP8: round to nearest E4M3, ties to even; int: to the nearest integer, ties to even). Static
//! (`dynamic: false`, strategy `tensor`): `s` is the layer's `input_scale` (no zoo checkpoint has
//! one yet: the zoo's are dynamic).
//!
//! Refused at load, naming the field: a `sparsity_config` format (2:4 sparse), other formats
//! (`naive-quantized`, `marlin-24`, …), weights other than 4-bit packed int or FP4 or 8-bit
//! float/int, FP4 activations (NVFP4 / MXFP4 W4A4), asymmetric or `local` activation
//! quantization, output activations, and `config_groups` whose settings differ.

use std::sync::Arc;

use serde_json::Value;

use super::{four_bit_groups, nibble, word_at, Packed, QuantScheme, Tensors};
use crate::error::Result;
use crate::format::dtype::{f8_e4m3_to_f32, Dtype};
use crate::format::quant::QuantConfig;
use crate::format::MappedBytes;
use crate::model::native::PackedRows;

/// Largest FP8 E4M3 value (the OCP "fn" variant compressed-tensors uses).
const FP8_MAX: f32 = 448.0;

pub struct CompressedTensors {
    layout: Layout,
    /// How the input of every quantized linear is quantized, if it is.
    input: Option<InputQuant>,
}

/// `input_activations` as configured: the rounding, and whether its scale is each layer's
/// `input_scale` (static) rather than computed from the input (dynamic).
#[derive(Clone, Copy)]
struct InputQuant {
    quant: ActQuant,
    static_scale: bool,
}

enum Layout {
    /// `pack-quantized`, 4-bit.
    Packed { symmetric: bool, group_size: usize },
    /// `float-quantized` / `int-quantized`: one 8-bit value per element.
    Unpacked { values: Values, strategy: Strategy, symmetric: bool },
    /// `nvfp4-pack-quantized` / `mxfp4-pack-quantized`: two FP4 E2M1 codes a byte.
    Fp4(Fp4Scales),
}

/// How FP4 groups are scaled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fp4Scales {
    /// NVFP4: an FP8 E4M3 scale per 16 inputs over one F32 global scale.
    Nv,
    /// MXFP4: an E8M0 power of two per 32 inputs.
    Mx,
}

impl Fp4Scales {
    fn group(self) -> usize {
        match self {
            Fp4Scales::Nv => 16,
            Fp4Scales::Mx => 32,
        }
    }
}

/// FP4 E2M1 magnitudes by code (bits 0-2).
const E2M1: [f32; 8] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

fn e2m1(code: u8) -> f32 {
    let v = E2M1[(code & 7) as usize];
    if code & 8 != 0 {
        -v
    } else {
        v
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Values {
    Fp8,
    Int8,
}

impl Values {
    /// The 8-bit values a config's `type` and `num_bits` name, if the engine runs them.
    fn of(ty: Option<&str>, bits: Option<u64>) -> Option<Values> {
        match (ty, bits) {
            (Some("float"), Some(8)) => Some(Values::Fp8),
            (Some("int"), Some(8)) => Some(Values::Int8),
            _ => None,
        }
    }

    /// Every stored byte's value, once (the decode of a weight is then a table lookup).
    fn table(self) -> [f32; 256] {
        std::array::from_fn(|b| match self {
            Values::Fp8 => f8_e4m3_to_f32(b as u8),
            Values::Int8 => b as u8 as i8 as f32,
        })
    }

    fn dtype(self) -> Dtype {
        match self {
            Values::Fp8 => Dtype::F8_E4M3,
            Values::Int8 => Dtype::I8,
        }
    }

    /// Half the representable range: what `max |x|` is divided by to get a symmetric scale.
    fn half_range(self) -> f32 {
        match self {
            Values::Fp8 => FP8_MAX,
            Values::Int8 => 127.5,
        }
    }

    /// `x` (already divided by its scale) clamped and rounded to a representable value.
    fn round(self, x: f32) -> f32 {
        match self {
            Values::Fp8 => round_to_e4m3(x.clamp(-FP8_MAX, FP8_MAX)),
            Values::Int8 => x.clamp(-128.0, 127.0).round_ties_even(),
        }
    }
}

/// Which elements share one scale.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Strategy {
    Tensor,
    Channel,
    Group(usize),
    Block(usize, usize),
}

/// The input quantization of a linear, applied to its `[T, in]` input before the matmul.
#[derive(Clone, Copy, Debug)]
pub struct ActQuant {
    values: Values,
    /// Which inputs share a scale: the whole input, a token (one row), or a group of a row.
    unit: ActUnit,
    /// A static scale (`input_scale`); `None`: computed from each unit's `max |x|`.
    scale: Option<f32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ActUnit {
    Tensor,
    Token,
    Group(usize),
}

impl ActQuant {
    /// Rounds `x` (`[T, k]`, row-major) in place, as compressed-tensors' forward does.
    pub fn apply(&self, x: &mut [f32], k: usize) {
        if k == 0 {
            return;
        }
        match self.unit {
            ActUnit::Tensor => self.round_unit(x),
            ActUnit::Token => x.chunks_mut(k).for_each(|r| self.round_unit(r)),
            ActUnit::Group(g) => x.chunks_mut(k).for_each(|r| r.chunks_mut(g.max(1)).for_each(|u| self.round_unit(u))),
        }
    }

    fn round_unit(&self, u: &mut [f32]) {
        let s = self.scale.unwrap_or_else(|| {
            let s = u.iter().fold(0f32, |m, v| m.max(v.abs())) / self.values.half_range();
            // compressed-tensors replaces a zero scale by the dtype's epsilon.
            if s == 0.0 {
                f32::EPSILON
            } else {
                s
            }
        });
        for v in u {
            *v = self.values.round(*v / s) * s;
        }
    }
}

/// `x` (|x| ≤ 448) rounded to the nearest FP8 E4M3 value, ties to even (as torch's cast).
pub fn round_to_e4m3(x: f32) -> f32 {
    let a = x.abs();
    if a == 0.0 || a.is_nan() {
        return x;
    }
    // Normal E4M3 values have 3 mantissa bits; below 2^-6 the spacing is fixed at 2^-9.
    let e = ((a.to_bits() >> 23) as i32 - 127).max(-6);
    let quantum = 2f32.powi(e - 3);
    let r = (a / quantum).round_ties_even() * quantum;
    r.min(FP8_MAX).copysign(x)
}

pub fn from_config(cfg: &QuantConfig) -> Result<Box<dyn QuantScheme>> {
    // 2:4 sparsity (`sparse-24-bitmask`, `marlin-24`) stores weights compressed in another layout.
    if let Some(f) = cfg.raw.get("sparsity_config").and_then(|s| s.get("format")).and_then(Value::as_str).filter(|f| *f != "dense") {
        return Err(cfg.field_error(
            "sparsity_config.format",
            format!("compressed-tensors sparsity `{f}` is not supported: save the model without sparsity compression (llmcompressor: save_pretrained(..., disable_sparse_compression=True))"),
        ));
    }
    let groups = cfg.raw.get("config_groups").and_then(Value::as_object);
    let first = groups.and_then(|g| g.values().next());
    if let Some(g) = groups {
        let key = |v: &Value| (v.get("weights").cloned(), v.get("input_activations").cloned(), v.get("format").cloned());
        if g.values().any(|v| key(v) != first.map(key).unwrap_or_default()) {
            return Err(
                cfg.field_error("config_groups", "groups with different settings are not supported (one scheme for every layer is)")
            );
        }
    }
    let group = first.cloned().unwrap_or(Value::Null);
    let format = group.get("format").and_then(Value::as_str).or(cfg.format.as_deref()).unwrap_or("");
    if group.get("output_activations").is_some_and(|v| !v.is_null()) {
        return Err(cfg.field_error("config_groups.*.output_activations", "output activation quantization is not supported"));
    }
    let input = act_quant(cfg, group.get("input_activations"))?;
    let layout = match format {
        "pack-quantized" => Layout::Packed { symmetric: cfg.symmetric.unwrap_or(true), group_size: four_bit_groups(cfg)? },
        "float-quantized" | "int-quantized" => unpacked(cfg, &group, format)?,
        "nvfp4-pack-quantized" | "mxfp4-pack-quantized" => {
            let scales = if format == "nvfp4-pack-quantized" { Fp4Scales::Nv } else { Fp4Scales::Mx };
            let w = group.get("weights").unwrap_or(&Value::Null);
            let fits = w.get("type").and_then(Value::as_str) == Some("float") && cfg.bits == Some(4);
            if !fits || cfg.group_size != Some(scales.group() as u64) {
                return Err(cfg.field_error(
                    "config_groups.*.weights",
                    format!("{format} expects 4-bit float weights in groups of {}", scales.group()),
                ));
            }
            Layout::Fp4(scales)
        }
        other => {
            return Err(cfg.field_error(
                "format",
                format!("compressed-tensors `{other}` is not supported (pack-quantized, float-quantized, int-quantized, nvfp4-pack-quantized and mxfp4-pack-quantized are)"),
            ))
        }
    };
    Ok(Box::new(CompressedTensors { layout, input }))
}

/// The weights of a `float-quantized` / `int-quantized` group.
fn unpacked(cfg: &QuantConfig, group: &Value, format: &str) -> Result<Layout> {
    let w = group.get("weights").unwrap_or(&Value::Null);
    let field = |k: &str| format!("config_groups.*.weights.{k}");
    let (t, b) = (w.get("type").and_then(Value::as_str), cfg.bits);
    let Some(values) = Values::of(t, b) else {
        return Err(
            cfg.field_error(&field("type"), format!("{format} with {t:?} {b:?}-bit weights is not supported (8-bit float or int is)"))
        );
    };
    let symmetric = cfg.symmetric.unwrap_or(true);
    if values == Values::Fp8 && !symmetric {
        return Err(cfg.field_error(&field("symmetric"), "asymmetric FP8 weights are not supported"));
    }
    Ok(Layout::Unpacked { values, strategy: strategy(cfg, w, &field)?, symmetric })
}

fn strategy(cfg: &QuantConfig, w: &Value, field: &dyn Fn(&str) -> String) -> Result<Strategy> {
    let positive = |v: Option<&Value>| v.and_then(Value::as_u64).filter(|&n| n > 0).map(|n| n as usize);
    Ok(match w.get("strategy").and_then(Value::as_str) {
        Some("tensor") => Strategy::Tensor,
        Some("channel") => Strategy::Channel,
        Some("group") => {
            Strategy::Group(positive(w.get("group_size")).ok_or_else(|| cfg.field_error(&field("group_size"), "missing or not positive"))?)
        }
        Some("block") => {
            match w.get("block_structure").and_then(Value::as_array).map(|b| b.iter().map(|v| positive(Some(v))).collect::<Vec<_>>()) {
                Some(b) if b.len() == 2 && b.iter().all(Option::is_some) => Strategy::Block(b[0].unwrap(), b[1].unwrap()),
                _ => return Err(cfg.field_error(&field("block_structure"), "expected two positive block sides [rows, columns]")),
            }
        }
        other => return Err(cfg.field_error(&field("strategy"), format!("{other:?} is not supported (tensor, channel, group, block are)"))),
    })
}

/// The group's `input_activations`, as the engine emulates them.
fn act_quant(cfg: &QuantConfig, a: Option<&Value>) -> Result<Option<InputQuant>> {
    let Some(a) = a.filter(|a| !a.is_null()) else { return Ok(None) };
    let field = |k: &str| format!("config_groups.*.input_activations.{k}");
    let (t, b) = (a.get("type").and_then(Value::as_str), a.get("num_bits").and_then(Value::as_u64));
    let Some(values) = Values::of(t, b) else {
        return Err(cfg.field_error(&field("type"), format!("{t:?} {b:?}-bit activations are not supported (8-bit float or int are)")));
    };
    if !a.get("symmetric").and_then(Value::as_bool).unwrap_or(true) {
        return Err(cfg.field_error(&field("symmetric"), "asymmetric activation quantization is not supported"));
    }
    let dynamic = match a.get("dynamic") {
        Some(Value::Bool(b)) => *b,
        None | Some(Value::Null) => false,
        Some(other) => return Err(cfg.field_error(&field("dynamic"), format!("{other} is not supported (true or false is)"))),
    };
    let unit = match a.get("strategy").and_then(Value::as_str) {
        Some("tensor") => ActUnit::Tensor,
        Some("token") if dynamic => ActUnit::Token,
        Some("group") if dynamic => match a.get("group_size").and_then(Value::as_u64).filter(|&g| g > 0) {
            Some(g) => ActUnit::Group(g as usize),
            None => return Err(cfg.field_error(&field("group_size"), "missing or not positive")),
        },
        other => {
            let how = if dynamic { "dynamic" } else { "static" };
            return Err(cfg.field_error(&field("strategy"), format!("{how} {other:?} activation quantization is not supported")));
        }
    };
    Ok(Some(InputQuant { quant: ActQuant { values, unit, scale: None }, static_scale: !dynamic }))
}

impl QuantScheme for CompressedTensors {
    fn name(&self) -> &'static str {
        "compressed-tensors"
    }

    fn suffixes(&self) -> &'static [&'static str] {
        match self.layout {
            Layout::Packed { .. } => &["weight_packed", "weight_scale", "weight_shape", "weight_zero_point", "input_scale"],
            Layout::Unpacked { .. } => &["weight_scale", "weight", "weight_zero_point", "input_scale"],
            Layout::Fp4(_) => &["weight_packed", "weight_scale", "weight_global_scale"],
        }
    }

    fn packed(&self, t: &Tensors<'_>, prefix: &str) -> Result<Packed> {
        match self.layout {
            Layout::Packed { symmetric, group_size } => packed4(t, prefix, symmetric, group_size),
            Layout::Unpacked { values, strategy, symmetric } => unpacked_rows(t, prefix, values, strategy, symmetric),
            Layout::Fp4(scales) => fp4_rows(t, prefix, scales),
        }
    }

    fn input_quant(&self, t: &Tensors<'_>, prefix: &str) -> Result<Option<ActQuant>> {
        let Some(InputQuant { quant: q, static_scale }) = self.input else { return Ok(None) };
        if !static_scale {
            return Ok(Some(q));
        }
        let name = format!("{prefix}.input_scale");
        let (s, shape) = t.floats(&name)?;
        match s[..] {
            [s] if s.is_finite() && s > 0.0 => Ok(Some(ActQuant { scale: Some(s), ..q })),
            [s] => Err(t.bad(&name, format!("static input scale {s} is not a positive number"))),
            _ => Err(t.bad(&name, format!("shape {shape:?}, expected one per-tensor scale"))),
        }
    }
}

fn packed4(t: &Tensors<'_>, prefix: &str, symmetric: bool, g: usize) -> Result<Packed> {
    let pn = format!("{prefix}.weight_packed");
    let (packed, ps) = t.words(&pn)?;
    let (scales, ss) = t.floats(&format!("{prefix}.weight_scale"))?;
    let (out, cols) = t.dims2(&pn, &ps)?;
    let inp = match t.ints(&format!("{prefix}.weight_shape")) {
        Ok((v, _)) if v.len() == 2 => v[1] as usize,
        _ => cols * 8,
    };
    let (_, groups) = t.dims2(&format!("{prefix}.weight_scale"), &ss)?;
    let zeros = if symmetric { None } else { Some(t.ints(&format!("{prefix}.weight_zero_point"))?.0) };
    if scales.len() != out * groups || inp > cols * 8 || inp.div_ceil(g) != groups {
        return Err(t.bad(&pn, format!("weight_packed {ps:?} and weight_scale {ss:?} do not fit together")));
    }
    Ok((Arc::new(CtRows { packed, zeros, scales, group_size: g, groups, cols, inp }), out, inp))
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

fn unpacked_rows(t: &Tensors<'_>, prefix: &str, values: Values, strategy: Strategy, symmetric: bool) -> Result<Packed> {
    let wn = format!("{prefix}.weight");
    let sn = format!("{prefix}.weight_scale");
    let (data, ws) = t.mapped(&wn, values.dtype(), values.dtype().name())?;
    let (out, inp) = t.dims2(&wn, &ws)?;
    let (scales, ss) = t.floats(&sn)?;
    // Scale rows × columns: which unit each (o, i) falls in.
    let (srows, scols) = match strategy {
        Strategy::Tensor => (1, 1),
        Strategy::Channel => (out, 1),
        Strategy::Group(g) => (out, inp.div_ceil(g)),
        Strategy::Block(bo, bi) => (out.div_ceil(bo), inp.div_ceil(bi)),
    };
    let want: &[u64] = &[srows as u64, scols as u64];
    let fits = match strategy {
        Strategy::Tensor => scales.len() == 1,
        Strategy::Channel => ss == want || ss == [out as u64],
        _ => ss == want,
    };
    if !fits {
        return Err(t.bad(&sn, format!("shape {ss:?} does not fit weight {ws:?} quantized per {strategy:?} (expected {want:?})")));
    }
    let zeros = if symmetric {
        None
    } else {
        let zn = format!("{prefix}.weight_zero_point");
        let (z, zs) = t.ints(&zn)?;
        if z.len() != scales.len() {
            return Err(t.bad(&zn, format!("shape {zs:?}, expected that of weight_scale {ss:?}")));
        }
        Some(z)
    };
    Ok((Arc::new(UnpackedRows { data, table: values.table(), scales, zeros, strategy, scols, inp }), out, inp))
}

/// An FP8 or int8 weight: the values still mapped, scales (and zero points) decoded.
struct UnpackedRows {
    data: MappedBytes,
    /// The value of each stored byte (`Values::table`).
    table: [f32; 256],
    scales: Vec<f32>,
    zeros: Option<Vec<i64>>,
    strategy: Strategy,
    scols: usize,
    inp: usize,
}

impl PackedRows for UnpackedRows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let inp = self.inp;
        let q = self.data.bytes();
        for (r, row) in w.chunks_exact_mut(inp).enumerate() {
            let o = r0 + r;
            let bytes = &q[o * inp..(o + 1) * inp];
            for (i, (v, &b)) in row.iter_mut().zip(bytes).enumerate() {
                let unit = match self.strategy {
                    Strategy::Tensor => 0,
                    Strategy::Channel => o,
                    Strategy::Group(g) => o * self.scols + i / g,
                    Strategy::Block(bo, bi) => (o / bo) * self.scols + i / bi,
                };
                let z = self.zeros.as_ref().map_or(0.0, |z| z[unit] as f32);
                *v = (self.table[b as usize] - z) * self.scales[unit];
            }
        }
    }
}

fn fp4_rows(t: &Tensors<'_>, prefix: &str, kind: Fp4Scales) -> Result<Packed> {
    let pn = format!("{prefix}.weight_packed");
    let sn = format!("{prefix}.weight_scale");
    let (packed, ps) = t.mapped(&pn, Dtype::U8, "U8 (two FP4 codes a byte)")?;
    let (out, half) = t.dims2(&pn, &ps)?;
    let (inp, g) = (half * 2, kind.group());
    let want = [out as u64, inp.div_ceil(g) as u64];
    let scales: Vec<f32> = match kind {
        Fp4Scales::Nv => {
            let (s, ss) = t.floats(&sn)?;
            if ss != want {
                return Err(t.bad(&sn, format!("shape {ss:?}, expected {want:?} for weight_packed {ps:?} (one per {g} inputs)")));
            }
            let gn = format!("{prefix}.weight_global_scale");
            let global = match t.floats(&gn)? {
                (v, _) if v.len() == 1 && v[0].is_finite() && v[0] != 0.0 => v[0],
                (v, shape) => return Err(t.bad(&gn, format!("shape {shape:?} = {v:?}, expected one finite non-zero scale"))),
            };
            s.into_iter().map(|s| s / global).collect()
        }
        Fp4Scales::Mx => {
            let (e, es) = t.mapped(&sn, Dtype::U8, "U8 (E8M0 exponents)")?;
            if es != want {
                return Err(t.bad(&sn, format!("shape {es:?}, expected {want:?} for weight_packed {ps:?} (one per {g} inputs)")));
            }
            e.bytes().iter().map(|&e| if e == 255 { f32::NAN } else { 2f32.powi(e as i32 - 127) }).collect()
        }
    };
    Ok((Arc::new(Fp4Rows { packed, scales, kind, groups: want[1] as usize, inp }), out, inp))
}

/// An NVFP4 / MXFP4 weight: the codes still mapped, each group's scale decoded (NVFP4's already
/// divided by the global scale).
struct Fp4Rows {
    packed: MappedBytes,
    scales: Vec<f32>,
    kind: Fp4Scales,
    groups: usize,
    inp: usize,
}

impl PackedRows for Fp4Rows {
    fn decode_rows(&self, r0: usize, w: &mut [f32]) {
        let (inp, g) = (self.inp, self.kind.group());
        let q = self.packed.bytes();
        for (r, row) in w.chunks_exact_mut(inp).enumerate() {
            let o = r0 + r;
            let bytes = &q[o * inp / 2..(o + 1) * inp / 2];
            for (i, v) in row.iter_mut().enumerate() {
                let code = bytes[i / 2] >> (4 * (i % 2)) & 0xF;
                let x = e2m1(code) * self.scales[o * self.groups + i / g];
                *v = match self.kind {
                    Fp4Scales::Nv => half::bf16::from_f32(x).to_f32(),
                    Fp4Scales::Mx => x,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e4m3_rounding_matches_the_format() {
        // Every E4M3 value rounds to itself; midpoints go to the even neighbour.
        let all: Vec<f32> = (0u8..=0x7e).map(f8_e4m3_to_f32).collect();
        for &v in &all {
            assert_eq!(round_to_e4m3(v), v);
            assert_eq!(round_to_e4m3(-v), -v);
        }
        for w in all.windows(2) {
            let mid = (w[0] + w[1]) / 2.0;
            let even = if (all.iter().position(|&x| x == w[0]).unwrap()) % 2 == 0 { w[0] } else { w[1] };
            assert_eq!(round_to_e4m3(mid), even, "midpoint of {} and {}", w[0], w[1]);
            assert_eq!(round_to_e4m3(w[0] + (w[1] - w[0]) * 0.25), w[0]);
            assert_eq!(round_to_e4m3(w[0] + (w[1] - w[0]) * 0.75), w[1]);
        }
    }

    #[test]
    fn dynamic_token_quantization_keeps_each_rows_max() {
        let q = ActQuant { values: Values::Int8, unit: ActUnit::Token, scale: None };
        let mut x = vec![1.0, -0.5, 0.26, 0.0, 0.0, 0.0];
        q.apply(&mut x, 3);
        let s = 1.0 / 127.5;
        assert_eq!(x[..3], [(1.0f32 / s).round_ties_even() * s, (-0.5f32 / s).round_ties_even() * s, (0.26f32 / s).round_ties_even() * s]);
        assert_eq!(x[3..], [0.0, 0.0, 0.0], "an all-zero row stays zero (epsilon scale)");
        let f = ActQuant { values: Values::Fp8, unit: ActUnit::Group(2), scale: None };
        let mut y = vec![448.0, 1.0, 3.0, 0.1];
        f.apply(&mut y, 4);
        assert_eq!(y, [448.0, 1.0, 3.0, round_to_e4m3(0.1 / (3.0 / 448.0)) * (3.0 / 448.0)]);
    }
}
