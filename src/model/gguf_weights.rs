//! A `WeightSource` over a GGUF file: HF tensor names mapped to llama.cpp's (`blk.N.attn_q`…),
//! llama.cpp's Q/K row permutation for interleaved rope undone on the raw blocks, blocks
//! dequantized by candle (F32…Q8_0, K-quants) or here (IQ4_NL, IQ4_XS, MXFP4, NVFP4; candle 0.11
//! has none of them).
//!
//! Linear layers are dense f32 from the dequantized blocks by default: measured on the zoo's Q8_0
//! GGUF, candle 0.11's quantized CPU matmul (`QMatMul`, which quantizes activations like ggml)
//! lands up to 1.45 logits from llama.cpp's own output, dense dequantized weights 0.41 (llama.cpp
//! vs the f32 HF model: 0.38). `with_quantized_matmul(true)` keeps blocks quantized (memory for
//! large models) at that cost.
//!
//! Families: those whose GGUF tensors are the HF ones renamed (llama, mistral as `llama`, qwen2,
//! qwen3) and gemma3 (its converter folds `1 +` into the norm weights, undone here, and renames the
//! sandwich norms). Other architectures are refused by name rather than run wrong.

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{DType, Device, Module, Tensor};

use super::weights::{DenseLinear, LinearOp, NativeLinear, NativeMatrix, RowCodec, WeightSource};
use crate::error::{Error, Result};
use crate::format::arch::{ExpertProj, Moe};
use crate::format::gguf::{GgmlType, GgufFile, Header, TensorInfo};

pub use super::native::KVALUES_IQ4NL;

/// Architectures whose tensors map one-to-one onto the HF names below.
/// The one list, shared with lint's `gguf.architecture-not-run`.
const SUPPORTED_ARCHS: &[&str] = Header::ENGINE_ARCHS;

#[derive(Clone, Copy)]
pub struct GgufWeights<'a> {
    pub file: &'a GgufFile,
    /// llama.cpp's converter permutes Q/K rows for `llama` (rotate-half → interleaved rope).
    unpermute_qk: bool,
    /// Multiply on quantized blocks (`QMatMul`) instead of dense dequantized weights.
    quantized_matmul: bool,
    /// Q4_K / Q5_K / Q6_K linear layers in llama.cpp's integer arithmetic (`model::qdot`), where the
    /// CPU has the kernels; implied by `quantized_matmul`.
    llama_arithmetic: bool,
    n_head: usize,
    n_head_kv: usize,
    /// Gemma: the converter stores norm weights as `1 + w`; the decoder adds the 1 itself.
    gemma: bool,
    /// Phi-3: fused `attn_qkv` and `ffn_up` (= HF's `gate_up_proj`, gate rows first).
    phi3: bool,
}

impl<'a> GgufWeights<'a> {
    pub fn new(file: &'a GgufFile) -> Result<GgufWeights<'a>> {
        let meta = file.header.arch_meta();
        let arch = meta.architecture.clone().unwrap_or_default();
        if file.header.is_mmproj() {
            return Err(Error::Field {
                path: file.path.clone(),
                field: "general.architecture".into(),
                detail: "is `clip`: this is a VLM's multimodal projector (mmproj: vision encoder + projector), not a language model; \
                         compare the language-model GGUF converted from the same checkpoint (llama.cpp loads this file beside it with --mmproj)"
                    .into(),
            });
        }
        if !SUPPORTED_ARCHS.contains(&arch.as_str()) {
            return Err(Error::Field {
                path: file.path.clone(),
                field: "general.architecture".into(),
                detail: format!("`{arch}` GGUFs are not run yet (supported: {})", SUPPORTED_ARCHS.join(", ")),
            });
        }
        let field_err = |k: &str| Error::Field {
            path: file.path.clone(),
            field: format!("{arch}.{k}"),
            detail: "missing; needed to undo llama.cpp's Q/K row permutation".into(),
        };
        let n_head = meta.head_count.ok_or_else(|| field_err("attention.head_count"))? as usize;
        let n_head_kv = meta.head_count_kv.unwrap_or(n_head as u64) as usize;
        Ok(GgufWeights {
            file,
            // Granite's converter is LlamaModel's, permutation included.
            unpermute_qk: arch == "llama" || arch == "granite",
            quantized_matmul: false,
            llama_arithmetic: false,
            n_head,
            n_head_kv,
            gemma: arch.starts_with("gemma"),
            phi3: arch == "phi3",
        })
    }

    /// The same reading (architecture, head counts for the Q/K row permutation) over a GGUF LoRA
    /// adapter of this base, whose tensors are named by HF weight name + `.lora_a` / `.lora_b`.
    pub fn adapter(&self, adapter: &'a GgufFile) -> GgufWeights<'a> {
        GgufWeights { file: adapter, quantized_matmul: false, llama_arithmetic: false, ..*self }
    }

    /// Keep linear layers as quantized blocks and quantize their inputs as ggml does: Q4_K, Q5_K
    /// and Q6_K by the engine's own kernels where the CPU has them (`with_llama_arithmetic`), every
    /// other quantized type by candle's `QMatMul` (further from llama.cpp; see above).
    pub fn with_quantized_matmul(mut self, on: bool) -> Self {
        self.quantized_matmul = on;
        self.llama_arithmetic = on;
        self
    }

    /// Q4_K, Q5_K and Q6_K linear layers in llama.cpp's integer arithmetic (`model::qdot`: inputs
    /// quantized to Q8_K, blocks read in place) on the native engine where the CPU has AVX-512
    /// VNNI; every other layer as before.
    pub fn with_llama_arithmetic(mut self, on: bool) -> Self {
        self.llama_arithmetic = on;
        self
    }

    /// The GGUF tensor behind an HF name, and for an expert's projection which slice of the
    /// 3-D `blk.N.ffn_{gate,up,down}_exps.weight` (ggml dims `[cols, rows, experts]`) it is.
    fn locate(&self, hf_name: &str) -> Result<(&'a TensorInfo, Option<usize>)> {
        let Some((layer, Some((e, p)))) = Moe::parse_name(hf_name) else { return self.info(hf_name).map(|(t, _)| (t, None)) };
        let kind = match p {
            ExpertProj::Gate => "gate",
            ExpertProj::Up => "up",
            ExpertProj::Down => "down",
        };
        let g = format!("blk.{layer}.ffn_{kind}_exps.weight");
        let t = self.file.header.tensor(&g).ok_or_else(|| self.err(hf_name, format!("`{g}` is not in the file")))?;
        match t.dims.as_slice() {
            [_, _, n] if (e as u64) < *n => Ok((t, Some(e))),
            [_, _, n] => Err(self.err(hf_name, format!("`{g}` holds {n} experts, not expert {e}"))),
            d => Err(self.err(hf_name, format!("`{g}` has {} dims where [cols, rows, experts] was expected", d.len()))),
        }
    }

    /// A located tensor's bytes (one expert's slice of a 3-D expert tensor).
    fn located_bytes(&self, hf_name: &str, t: &TensorInfo, expert: Option<usize>) -> Result<&'a [u8]> {
        let bytes = self.file.checked_bytes(&t.name)?;
        let Some(e) = expert else { return Ok(bytes) };
        let n = t.dims.get(2).copied().unwrap_or(1).max(1) as usize;
        let per = bytes.len() / n;
        if per * n != bytes.len() {
            return Err(self.err(hf_name, format!("{} bytes do not split into {n} experts", bytes.len())));
        }
        bytes.get(e * per..(e + 1) * per).ok_or_else(|| self.err(hf_name, format!("expert {e} lies outside the tensor")))
    }

    /// HF-order shape of a located tensor (an expert: its 2-D matrix).
    fn located_shape(t: &TensorInfo, expert: Option<usize>) -> Vec<usize> {
        let shape: Vec<usize> = t.shape().iter().map(|&d| d as usize).collect();
        match expert {
            Some(_) => shape.get(1..).map(<[usize]>::to_vec).unwrap_or_default(),
            None => shape,
        }
    }

    fn info(&self, hf_name: &str) -> Result<(&'a TensorInfo, String)> {
        // A LoRA factor: the adapted weight's GGUF name + the same suffix.
        let (weight, lora) = match [".lora_a", ".lora_b"].iter().find_map(|s| Some((hf_name.strip_suffix(s)?, *s))) {
            Some((w, s)) => (w, s),
            None => (hf_name, ""),
        };
        let g = if self.gemma { gemma_name(weight) } else { None }
            .or_else(|| if self.phi3 { phi3_name(weight) } else { None })
            .or_else(|| gguf_name(weight))
            .map(|g| format!("{g}{lora}"))
            .ok_or_else(|| self.err(hf_name, "no GGUF name is known for it".into()))?;
        let h = &self.file.header;
        let t = match h.tensor(&g) {
            Some(t) => t,
            // Tied embeddings: llama.cpp has no `output.weight` and uses `token_embd.weight`.
            None if g == "output.weight" => h
                .tensor("token_embd.weight")
                .ok_or_else(|| self.err(hf_name, "neither `output.weight` nor `token_embd.weight` is in the file".into()))?,
            None => return Err(self.err(hf_name, format!("`{g}` is not in the file"))),
        };
        Ok((t, g))
    }

    fn err(&self, tensor: &str, detail: String) -> Error {
        Error::Tensor { path: self.file.path.clone(), tensor: tensor.to_string(), detail }
    }

    /// The head count of a Q or K projection (whose rows the converter may have permuted).
    fn qk_heads(&self, hf_name: &str) -> Option<usize> {
        // A LoRA B (`[out, r]`) has the weight's rows, permuted with them; A keeps its order.
        let hf_name = hf_name.strip_suffix(".lora_b").unwrap_or(hf_name);
        if hf_name.ends_with("q_proj.weight") {
            Some(self.n_head)
        } else if hf_name.ends_with("k_proj.weight") {
            Some(self.n_head_kv)
        } else {
            None
        }
    }

    /// For a Q/K projection of `rows` rows that llama.cpp's converter permuted (rotate-half →
    /// interleaved rope): `map[hf_row]` = the GGUF row holding it. `None` for every other tensor.
    fn qk_row_map(&self, hf_name: &str, rows: usize) -> Result<Option<Vec<u32>>> {
        let Some(n_head) = self.qk_heads(hf_name).filter(|_| self.unpermute_qk) else { return Ok(None) };
        if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
            return Err(self.err(hf_name, format!("{rows} rows do not split into {n_head} heads of two rope halves")));
        }
        let (hd, half) = (rows / n_head, rows / n_head / 2);
        // convert_hf_to_gguf.py: gguf row h·hd + 2i + j holds hf row h·hd + j·half + i.
        let mut map = vec![0u32; rows];
        for h in 0..n_head {
            for i in 0..half {
                for j in 0..2 {
                    map[h * hd + j * half + i] = (h * hd + 2 * i + j) as u32;
                }
            }
        }
        Ok(Some(map))
    }

    /// Raw blocks in an 8-byte-aligned buffer (candle reinterprets them as block structs), with
    /// Q/K rows put back in HF order when the converter permuted them.
    fn blocks(&self, hf_name: &str, t: &TensorInfo, expert: Option<usize>) -> Result<Vec<u64>> {
        let bytes = self.located_bytes(hf_name, t, expert)?;
        let mut buf = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: u64 → u8 view of an owned buffer of at least `bytes.len()` bytes.
        let dst = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut u8, bytes.len()) };
        let map = if self.unpermute_qk && self.qk_heads(hf_name).is_some() {
            if t.dims.len() != 2 {
                return Err(self.err(hf_name, format!("{} dims where a 2-D projection was expected", t.dims.len())));
            }
            self.qk_row_map(hf_name, t.dims[1] as usize)?
        } else {
            None
        };
        match map {
            None => dst.copy_from_slice(bytes),
            Some(map) => {
                let row_bytes = bytes.len() / map.len();
                for (hf, &g) in map.iter().enumerate() {
                    let g = g as usize;
                    dst[hf * row_bytes..(hf + 1) * row_bytes].copy_from_slice(&bytes[g * row_bytes..(g + 1) * row_bytes]);
                }
            }
        }
        Ok(buf)
    }

    fn qtensor(
        &self,
        hf_name: &str,
        t: &TensorInfo,
        expert: Option<usize>,
        device: &Device,
    ) -> Result<Option<candle_core::quantized::QTensor>> {
        let Some(dt) = candle_type(t.ggml_type) else { return Ok(None) };
        let n_bytes = self.located_bytes(hf_name, t, expert)?.len();
        let buf = self.blocks(hf_name, t, expert)?;
        // SAFETY: as above; exactly `n_bytes` bytes, the size candle computes for these dims.
        let raw = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, n_bytes) };
        let dims = Self::located_shape(t, expert);
        qtensor_from_ggml(dt, raw, dims, device).map(Some).map_err(|e| self.err(hf_name, e.to_string()))
    }
}

impl WeightSource for GgufWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.locate(name).is_ok()
    }

    /// A 2-D tensor's blocks where they lie, with llama.cpp's Q/K row permutation undone by a
    /// row map (rows are whole blocks, so permuting rows of blocks is exact).
    fn native(&self, name: &str) -> Result<Option<NativeMatrix>> {
        let (t, expert) = self.locate(name)?;
        let dims = match (expert, t.dims.as_slice()) {
            (None, [cols, rows]) | (Some(_), [cols, rows, _]) => (*rows as usize, *cols as usize),
            _ => return Ok(None),
        };
        let Some(codec) = RowCodec::of_ggml(t.ggml_type) else { return Ok(None) };
        let (rows, cols) = dims;
        let mut data = self.file.shared_bytes(&t.name)?;
        if expert.is_some() {
            // One expert: its rows × cols slice of the mapped 3-D tensor, still in the file.
            let part = self.located_bytes(name, t, expert)?;
            let offset = part.as_ptr() as usize - data.bytes().as_ptr() as usize;
            data = data.slice(offset, part.len()).ok_or_else(|| self.err(name, "expert slice outside the tensor".into()))?;
        }
        let m = NativeMatrix::new(data, rows, cols, codec, |d| self.err(name, d))?;
        match self.qk_row_map(name, rows)? {
            Some(map) => Ok(Some(m.with_row_map(map))),
            None => Ok(Some(m)),
        }
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let (t, expert) = self.locate(name)?;
        let cerr = |e: candle_core::Error| self.err(name, e.to_string());
        let dense = match self.qtensor(name, t, expert, device)? {
            Some(q) => q.dequantize(device).map_err(cerr)?,
            None => {
                let n_bytes = self.located_bytes(name, t, expert)?.len();
                let values = dequantize_own(t.ggml_type, &self.blocks(name, t, expert)?, n_bytes).ok_or_else(|| {
                    self.err(
                        name,
                        format!("ggml type {} is not one ckptcheck can run (it runs F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K…Q6_K IQ4_NL IQ4_XS MXFP4 NVFP4)", t.ggml_type),
                    )
                })?;
                Tensor::from_vec(values, Self::located_shape(t, expert), device).map_err(cerr)?
            }
        };
        // Gemma norms: undo the converter's `+ 1` (gguf-py `Gemma*Model.modify_tensors`), so the
        // decoder's `(1 + w)` sees HF's w.
        let dense = if self.gemma && name.ends_with("norm.weight") { (dense - 1.0).map_err(cerr)? } else { dense };
        dense.to_dtype(dtype).map_err(cerr)
    }

    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        let name = format!("{prefix}.weight");
        let (t, expert) = self.locate(&name)?;
        let bias = if bias { Some(self.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        // The weight where it lies (native engine): in llama.cpp's arithmetic where the engine has
        // kernels for its type (Q4_K, Q5_K, Q6_K on AVX-512 VNNI CPUs), first of all.
        let native = if super::weights::native_engine(dtype, device) {
            self.native(&name)?.map(|m| m.with_llama_arithmetic(self.llama_arithmetic))
        } else {
            None
        };
        let native = match native {
            Some(weight) if weight.uses_llama_arithmetic() => return Ok(Box::new(NativeLinear { weight, bias })),
            other => other,
        };
        // Quantized blocks stay quantized (f32 activations); dense and own-dequantized types run
        // as the engine's dense linear in the requested dtype.
        if self.quantized_matmul && t.ggml_type.is_quantized() && dtype == DType::F32 {
            if let Some(q) = self.qtensor(&name, t, expert, device)? {
                let w = QMatMul::from_qtensor(q).map_err(|e| self.err(&name, e.to_string()))?;
                return Ok(Box::new(QLinear { w, bias }));
            }
        }
        if let Some(weight) = native {
            return Ok(Box::new(NativeLinear { weight, bias }));
        }
        Ok(Box::new(DenseLinear { weight: self.tensor(&name, dtype, device)?, bias }))
    }
}

/// A GGUF base with a GGUF LoRA adapter applied on the fly: `y = x·Wᵀ + (α/r)·(x·Aᵀ)·Bᵀ`, as
/// llama.cpp applies `--lora` (scale 1). Every other tensor is the base's.
pub struct GgufLoraWeights<'a> {
    pub base: GgufWeights<'a>,
    pub adapter: GgufWeights<'a>,
    pub alpha: f64,
}

impl<'a> GgufLoraWeights<'a> {
    /// Refuses an adapter with a tensor the engine would not apply (an adapted embedding or
    /// head, a projection name it does not map) rather than silently running without it.
    pub fn new(base: GgufWeights<'a>, adapter: GgufWeights<'a>) -> Result<GgufLoraWeights<'a>> {
        let h = &adapter.file.header;
        let alpha = h.lora_alpha().filter(|a| a.is_finite()).ok_or_else(|| Error::Field {
            path: adapter.file.path.clone(),
            field: "adapter.lora.alpha".into(),
            detail: "missing or not a number: the adapter's scale is unknown".into(),
        })?;
        const APPLIED: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
        for t in &h.tensors {
            let Some(w) = t.name.strip_suffix(".lora_a").or_else(|| t.name.strip_suffix(".lora_b")) else { continue };
            let proj = w.strip_prefix("blk.").and_then(|r| r.split_once('.')).map(|(_, p)| p.trim_end_matches(".weight"));
            if !proj.is_some_and(|p| APPLIED.contains(&p)) {
                return Err(adapter.err(
                    &t.name,
                    format!("adapts `{w}`, which the engine does not apply from a GGUF adapter (it applies {})", APPLIED.join(", ")),
                ));
            }
        }
        Ok(GgufLoraWeights { base, adapter, alpha })
    }

    /// The adapted linear `prefix`'s factors, checked against its base weight's shape.
    fn factors(&self, prefix: &str, out: usize, inp: usize, dtype: DType, device: &Device) -> Result<Option<(Tensor, Tensor, f64)>> {
        let name = format!("{prefix}.weight");
        if !self.adapter.has(&format!("{name}.lora_a")) {
            return Ok(None);
        }
        let a = self.adapter.tensor(&format!("{name}.lora_a"), dtype, device)?;
        let b = self.adapter.tensor(&format!("{name}.lora_b"), dtype, device)?;
        let (ra, ia) = a.dims2().map_err(|e| self.adapter.err(&name, e.to_string()))?;
        let (ob, rb) = b.dims2().map_err(|e| self.adapter.err(&name, e.to_string()))?;
        if ia != inp || ob != out || ra != rb || ra == 0 {
            return Err(self.adapter.err(
                &name,
                format!("lora_a {ra}×{ia} and lora_b {ob}×{rb} do not fit the base weight {out}×{inp}: the adapter was trained on another base model"),
            ));
        }
        Ok(Some((a, b, self.alpha / ra as f64)))
    }
}

impl WeightSource for GgufLoraWeights<'_> {
    fn has(&self, name: &str) -> bool {
        self.base.has(name)
    }

    fn native(&self, name: &str) -> Result<Option<NativeMatrix>> {
        self.base.native(name)
    }

    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        self.base.tensor(name, dtype, device)
    }

    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> Result<Box<dyn LinearOp>> {
        let (t, _) = self.base.locate(&format!("{prefix}.weight"))?;
        let (out, inp) = match t.dims.as_slice() {
            [cols, rows] => (*rows as usize, *cols as usize),
            _ => return self.base.linear(prefix, bias, dtype, device),
        };
        let Some((a, b, scale)) = self.factors(prefix, out, inp, dtype, device)? else {
            return self.base.linear(prefix, bias, dtype, device);
        };
        let base = self.base.linear(prefix, false, dtype, device)?;
        let bias = if bias { Some(self.base.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        Ok(Box::new(super::weights::LoraLinear { base, bias, a, b, scale, dora_scale: None }))
    }

    /// The merged weight `W + (α/r)·B·A`.
    fn dense_weight(&self, prefix: &str, dtype: DType, device: &Device) -> Result<Tensor> {
        let w = self.base.dense_weight(prefix, dtype, device)?;
        let (out, inp) = w.dims2().map_err(|e| self.base.err(prefix, e.to_string()))?;
        let Some((a, b, scale)) = self.factors(prefix, out, inp, dtype, device)? else { return Ok(w) };
        let err = |e: candle_core::Error| self.adapter.err(prefix, e.to_string());
        (&w + (b.matmul(&a).map_err(err)? * scale).map_err(err)?).map_err(err)
    }

    fn has_linear(&self, prefix: &str) -> bool {
        self.base.has_linear(prefix)
    }
}

/// `y = x·Wᵀ (+ b)` on quantized blocks.
pub struct QLinear {
    pub w: QMatMul,
    pub bias: Option<Tensor>,
}

impl LinearOp for QLinear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.w.forward(&x.contiguous()?)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// Gemma 2/3's sandwich norms, whose llama.cpp names differ from Llama's meaning of
/// `post_attention_layernorm` (Llama's pre-MLP norm is `ffn_norm`; Gemma's is
/// `pre_feedforward_layernorm`).
fn gemma_name(hf: &str) -> Option<String> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let g = match tail {
        "post_attention_layernorm.weight" => "post_attention_norm.weight",
        "pre_feedforward_layernorm.weight" => "ffn_norm.weight",
        "post_feedforward_layernorm.weight" => "post_ffw_norm.weight",
        _ => return None,
    };
    Some(format!("blk.{n}.{g}"))
}

/// Phi-3's fused projections (`conversion/phi.py` keeps them fused): `qkv_proj` → `attn_qkv`,
/// `gate_up_proj` → `ffn_up` (which in other architectures is the up projection alone).
fn phi3_name(hf: &str) -> Option<String> {
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let g = match tail {
        "self_attn.qkv_proj.weight" => "attn_qkv.weight",
        "mlp.gate_up_proj.weight" => "ffn_up.weight",
        _ => return None,
    };
    Some(format!("blk.{n}.{g}"))
}

/// HF tensor name → llama.cpp's (`convert_hf_to_gguf.py` / gguf-py `TensorNameMap`).
pub fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let n: u64 = n.parse().ok()?;
    let (module, kind) = tail.rsplit_once('.')?;
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        // The MoE router (Qwen-MoE, Mixtral); experts are slices of 3-D tensors (`locate`).
        "mlp.gate" | "block_sparse_moe.gate" => "ffn_gate_inp",
        // Qwen2-MoE's shared expert and its gate.
        "mlp.shared_expert.gate_proj" => "ffn_gate_shexp",
        "mlp.shared_expert.up_proj" => "ffn_up_shexp",
        "mlp.shared_expert.down_proj" => "ffn_down_shexp",
        "mlp.shared_expert_gate" => "ffn_gate_inp_shexp",
        _ => return None,
    };
    Some(format!("blk.{n}.{g}.{kind}"))
}

/// The ggml types candle 0.11 dequantizes and multiplies.
pub fn candle_type(t: GgmlType) -> Option<GgmlDType> {
    Some(match t {
        GgmlType::F32 => GgmlDType::F32,
        GgmlType::F16 => GgmlDType::F16,
        GgmlType::BF16 => GgmlDType::BF16,
        GgmlType::Q4_0 => GgmlDType::Q4_0,
        GgmlType::Q4_1 => GgmlDType::Q4_1,
        GgmlType::Q5_0 => GgmlDType::Q5_0,
        GgmlType::Q5_1 => GgmlDType::Q5_1,
        GgmlType::Q8_0 => GgmlDType::Q8_0,
        GgmlType::Q2_K => GgmlDType::Q2K,
        GgmlType::Q3_K => GgmlDType::Q3K,
        GgmlType::Q4_K => GgmlDType::Q4K,
        GgmlType::Q5_K => GgmlDType::Q5K,
        GgmlType::Q6_K => GgmlDType::Q6K,
        _ => return None,
    })
}

/// Types dequantized here rather than by candle: IQ4_NL, IQ4_XS, MXFP4, NVFP4. `None` for any other.
fn dequantize_own(t: GgmlType, buf: &[u64], n_bytes: usize) -> Option<Vec<f32>> {
    // SAFETY: u64 → u8 view, `n_bytes` ≤ 8 · buf.len() (built by `blocks`).
    let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr() as *const u8, n_bytes) };
    dequantize_blocks(t, bytes)
}

/// Whole blocks of a type candle 0.11 lacks (IQ4_NL, IQ4_XS, MXFP4, NVFP4), decoded by the
/// engine's row decoder as llama.cpp's `dequantize_row_*` does; `None` for any other type.
pub fn dequantize_blocks(t: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    match t {
        GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::MXFP4 | GgmlType::NVFP4 => super::native::decode_blocks(t, bytes),
        _ => None,
    }
}
