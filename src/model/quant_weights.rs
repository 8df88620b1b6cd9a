//! Weight source for quantized HF checkpoints: GPTQ (gptqmodel / AutoGPTQ layout, v1 and v2 zero
//! points), AWQ GEMM, and compressed-tensors `pack-quantized`, 4-bit. Linear layers are dequantized
//! to dense weights once at load; everything else passes through as dense tensors.
//!
//! Layouts (checked against the upstream dequantized tensors in testdata/zoo/goldens):
//! - GPTQ: `qweight` i32 `[in/8, out]`, nibble j of row r is input `8r + j`; `qzeros` i32
//!   `[groups, out/8]`, nibble j is output `8c + j`; v1 stores `z − 1`; `scales` `[groups, out]`;
//!   `g_idx` `[in]` gives each input's group. `W[o, i] = s[g, o] · (q[i, o] − z[g, o])`.
//! - AWQ GEMM: `qweight` i32 `[in, out/8]` and `qzeros` `[groups, out/8]`, nibble k of column c is
//!   output `8c + ORDER[k]` with ORDER = [0, 2, 4, 6, 1, 3, 5, 7]; `W[o, i] = (q − z) · s`.
//! - compressed-tensors pack-quantized (symmetric int4): `weight_packed` i32 `[out, in/8]`, nibble
//!   k of word c is input `8c + k`, stored as `q + 8`; `weight_scale` `[out, groups]`;
//!   `W[o, i] = (nibble − 8) · s[o, i / group]`, plus `weight_zero_point` when asymmetric.

use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use super::weights::{decode_f32, DenseLinear, HfWeights, LinearOp, WeightSource};
use crate::error::{Error, Result};
use crate::format::dtype::Dtype;
use crate::format::hf::HfDir;

/// AutoAWQ's packing order of the eight nibbles of an int32 (`order_map` in its GEMM packer).
const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantKind {
    /// `zero_offset`: v1 checkpoints store zero points minus one.
    Gptq {
        zero_offset: bool,
    },
    Awq,
    CompressedTensors {
        symmetric: bool,
    },
}

pub struct QuantWeights<'a> {
    pub dense: HfWeights<'a>,
    pub kind: QuantKind,
    pub group_size: usize,
}

fn field(dir: &HfDir, f: &str, detail: impl Into<String>) -> Error {
    Error::Field { path: dir.root.join("config.json"), field: f.to_string(), detail: detail.into() }
}

impl<'a> QuantWeights<'a> {
    /// From `config.json:quantization_config`; `None` when the checkpoint is not quantized.
    pub fn from_config(dir: &'a HfDir) -> Result<Option<QuantWeights<'a>>> {
        let Some(q) = dir.config.as_ref().and_then(|c| c.value.get("quantization_config")) else { return Ok(None) };
        let method = q.get("quant_method").and_then(Value::as_str).unwrap_or("");
        let u = |v: Option<&Value>| v.and_then(Value::as_u64);
        let (kind, bits, group) = match method {
            "gptq" => {
                let fmt = q.get("checkpoint_format").or_else(|| q.get("format")).and_then(Value::as_str).unwrap_or("gptq");
                // desc_act (act-order) needs no special case: `g_idx` gives each input its group.
                (QuantKind::Gptq { zero_offset: fmt != "gptq_v2" }, u(q.get("bits")), u(q.get("group_size")))
            }
            "awq" => {
                let version = q.get("version").or_else(|| q.get("format")).and_then(Value::as_str).unwrap_or("gemm");
                if version != "gemm" {
                    return Err(field(dir, "quantization_config.version", format!("AWQ `{version}` packing is not supported (gemm is)")));
                }
                (QuantKind::Awq, u(q.get("bits")).or(u(q.get("w_bit"))), u(q.get("group_size")).or(u(q.get("q_group_size"))))
            }
            "compressed-tensors" => {
                let fmt = q.get("format").and_then(Value::as_str).unwrap_or("");
                if fmt != "pack-quantized" {
                    return Err(field(
                        dir,
                        "quantization_config.format",
                        format!("compressed-tensors `{fmt}` is not supported (pack-quantized is)"),
                    ));
                }
                let groups = q.get("config_groups").and_then(Value::as_object);
                let w = groups.and_then(|g| g.values().next()).and_then(|g| g.get("weights"));
                let symmetric = w.and_then(|w| w.get("symmetric")).and_then(Value::as_bool).unwrap_or(true);
                (QuantKind::CompressedTensors { symmetric }, u(w.and_then(|w| w.get("num_bits"))), u(w.and_then(|w| w.get("group_size"))))
            }
            _ => return Ok(None),
        };
        if bits != Some(4) {
            return Err(field(dir, "quantization_config.bits", format!("{bits:?}: only 4-bit {method} checkpoints are run")));
        }
        let group_size = group
            .filter(|&g| g > 0)
            .ok_or_else(|| field(dir, "quantization_config.group_size", "missing or not positive (per-channel is not supported)"))?
            as usize;
        Ok(Some(QuantWeights { dense: HfWeights { dir }, kind, group_size }))
    }

    /// A tensor's dtype, shape and bytes, with an error naming it when missing or damaged.
    fn raw(&self, name: &str) -> Result<(Dtype, Vec<u64>, &[u8], std::path::PathBuf)> {
        let dir = self.dense.dir;
        let (f, t) = dir.tensor(name).ok_or_else(|| Error::Tensor {
            path: dir.root.clone(),
            tensor: name.to_string(),
            detail: "missing from the quantized checkpoint".into(),
        })?;
        Ok((t.dtype, t.shape.clone(), f.checked_bytes(name)?, f.path.clone()))
    }

    fn ints(&self, name: &str) -> Result<(Vec<i64>, Vec<u64>)> {
        let (dtype, shape, b, path) = self.raw(name)?;
        let wrong = |detail: String| Error::Tensor { path: path.clone(), tensor: name.to_string(), detail };
        let v: Vec<i64> = match dtype {
            Dtype::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64).collect(),
            Dtype::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect(),
            Dtype::I8 => b.iter().map(|&x| x as i8 as i64).collect(),
            other => return Err(wrong(format!("dtype {other}, expected packed I32"))),
        };
        Ok((v, shape))
    }

    fn floats(&self, name: &str) -> Result<(Vec<f32>, Vec<u64>)> {
        let (dtype, shape, b, path) = self.raw(name)?;
        let v = decode_f32(dtype, b).ok_or_else(|| Error::Tensor {
            path,
            tensor: name.to_string(),
            detail: format!("dtype {dtype} is not a float"),
        })?;
        Ok((v, shape))
    }

    /// `[rows, cols]` of a tensor that must be a matrix.
    fn dims2(&self, name: &str, shape: &[u64]) -> Result<(usize, usize)> {
        match shape {
            [a, b] => Ok((*a as usize, *b as usize)),
            _ => Err(self.bad(name, format!("shape {shape:?}, expected a matrix"))),
        }
    }

    fn bad(&self, name: &str, detail: String) -> Error {
        Error::Tensor { path: self.dense.dir.root.clone(), tensor: name.to_string(), detail }
    }

    /// The dequantized `[out, in]` weight of a quantized linear layer, or `None` if it is dense.
    pub fn dequantize(&self, prefix: &str) -> Result<Option<(Vec<f32>, usize, usize)>> {
        let nib = |w: i64, k: usize| ((w as u64 >> (4 * k)) & 0xF) as i64;
        let g = self.group_size;
        match self.kind {
            QuantKind::Gptq { zero_offset } => {
                let qn = format!("{prefix}.qweight");
                if !self.dense.has(&qn) {
                    return Ok(None);
                }
                let (qw, qs) = self.ints(&qn)?;
                let (qz, _) = self.ints(&format!("{prefix}.qzeros"))?;
                let (sc, ss) = self.floats(&format!("{prefix}.scales"))?;
                let (rows, out) = self.dims2(&qn, &qs)?;
                let inp = rows * 8;
                let (groups, _) = self.dims2(&format!("{prefix}.scales"), &ss)?;
                let g_idx: Vec<usize> = match self.ints(&format!("{prefix}.g_idx")) {
                    Ok((v, _)) => v.iter().map(|&x| x as usize).collect(),
                    Err(_) => (0..inp).map(|i| i / g).collect(),
                };
                if sc.len() != groups * out || qz.len() * 8 != groups * out || g_idx.len() != inp || g_idx.iter().any(|&x| x >= groups) {
                    return Err(self.bad(&qn, format!("qweight {qs:?}, qzeros, scales {ss:?} and g_idx do not fit together")));
                }
                let off = zero_offset as i64;
                let mut w = vec![0f32; out * inp];
                for i in 0..inp {
                    let gi = g_idx[i];
                    for o in 0..out {
                        let q = nib(qw[(i / 8) * out + o], i % 8);
                        let z = nib(qz[gi * (out / 8) + o / 8], o % 8) + off;
                        w[o * inp + i] = sc[gi * out + o] * (q - z) as f32;
                    }
                }
                Ok(Some((w, out, inp)))
            }
            QuantKind::Awq => {
                let qn = format!("{prefix}.qweight");
                if !self.dense.has(&qn) {
                    return Ok(None);
                }
                let (qw, qs) = self.ints(&qn)?;
                let (qz, _) = self.ints(&format!("{prefix}.qzeros"))?;
                let (sc, ss) = self.floats(&format!("{prefix}.scales"))?;
                let (inp, cols) = self.dims2(&qn, &qs)?;
                let out = cols * 8;
                let (groups, _) = self.dims2(&format!("{prefix}.scales"), &ss)?;
                if sc.len() != groups * out || qz.len() != groups * cols || inp.div_ceil(g) != groups {
                    return Err(self.bad(&qn, format!("qweight {qs:?}, qzeros and scales {ss:?} do not fit together")));
                }
                let mut w = vec![0f32; out * inp];
                for i in 0..inp {
                    let gi = i / g;
                    for c in 0..cols {
                        let word = qw[i * cols + c];
                        let zword = qz[gi * cols + c];
                        for (k, &ord) in AWQ_ORDER.iter().enumerate() {
                            let o = c * 8 + ord;
                            w[o * inp + i] = (nib(word, k) - nib(zword, k)) as f32 * sc[gi * out + o];
                        }
                    }
                }
                Ok(Some((w, out, inp)))
            }
            QuantKind::CompressedTensors { symmetric } => {
                let pn = format!("{prefix}.weight_packed");
                if !self.dense.has(&pn) {
                    return Ok(None);
                }
                let (pw, ps) = self.ints(&pn)?;
                let (sc, ss) = self.floats(&format!("{prefix}.weight_scale"))?;
                let (out, cols) = self.dims2(&pn, &ps)?;
                let inp = match self.ints(&format!("{prefix}.weight_shape")) {
                    Ok((v, _)) if v.len() == 2 => v[1] as usize,
                    _ => cols * 8,
                };
                let (_, groups) = self.dims2(&format!("{prefix}.weight_scale"), &ss)?;
                let zp = if symmetric { None } else { Some(self.ints(&format!("{prefix}.weight_zero_point"))?.0) };
                if sc.len() != out * groups || inp > cols * 8 || inp.div_ceil(g) != groups {
                    return Err(self.bad(&pn, format!("weight_packed {ps:?} and weight_scale {ss:?} do not fit together")));
                }
                let mut w = vec![0f32; out * inp];
                for o in 0..out {
                    for i in 0..inp {
                        let gi = i / g;
                        let q = nib(pw[o * cols + i / 8], i % 8) - 8;
                        let z = zp.as_ref().map(|z| z.get(o * groups + gi).copied().unwrap_or(0)).unwrap_or(0);
                        w[o * inp + i] = (q - z) as f32 * sc[o * groups + gi];
                    }
                }
                Ok(Some((w, out, inp)))
            }
        }
    }
}

impl WeightSource for QuantWeights<'_> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.dense.tensor(name, dtype, device)
    }

    fn has(&self, name: &str) -> bool {
        self.dense.has(name)
    }

    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        let Some((w, out, inp)) = self.dequantize(prefix)? else {
            return self.dense.linear(prefix, bias, dtype, device);
        };
        let err = |e: candle_core::Error| self.bad(prefix, e.to_string());
        let weight = Tensor::from_vec(w, (out, inp), device).and_then(|t| t.to_dtype(dtype)).map_err(err)?;
        let bias = if bias { Some(self.dense.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        Ok(Box::new(DenseLinear { weight, bias }))
    }
}
