//! The one decoder-only transformer: embeddings → N × (attention, MLP) → norm → head, returning
//! logits for every position and, on request, the hidden state after every layer.
//!
//! Family differences come only from `ArchSpec` fields; there is one attention, one MLP, one norm
//! and one rope here. Single sequence, no KV cache: teacher-forced scoring needs every position
//! anyway, and greedy generation recomputes the prefix (fine for the short answers compare uses).

use candle_core::{DType, Device, Tensor, D};

use super::rope;
use super::weights::{LinearOp, WeightSource};
use crate::error::{Error, Result};
use crate::format::arch::{Activation, ArchSpec, Norm};

struct Layer {
    q: Box<dyn LinearOp>,
    k: Box<dyn LinearOp>,
    v: Box<dyn LinearOp>,
    o: Box<dyn LinearOp>,
    gate: Box<dyn LinearOp>,
    up: Box<dyn LinearOp>,
    down: Box<dyn LinearOp>,
    input_norm: Tensor,
    /// Llama: the pre-MLP norm. Gemma 2/3: the norm on the attention output.
    post_attn_norm: Tensor,
    pre_ff_norm: Option<Tensor>,
    post_ff_norm: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    sliding: bool,
}

/// A loaded model, ready to run.
pub struct Model {
    pub spec: ArchSpec,
    embed: Tensor,
    lm_head: Option<Box<dyn LinearOp>>,
    layers: Vec<Layer>,
    final_norm: Tensor,
    device: Device,
    dtype: DType,
}

/// The result of one forward pass over a sequence of `T` tokens.
pub struct Forward {
    /// `[T, vocab]`, f32.
    pub logits: Tensor,
    /// With tracing: the embeddings (after any scale) then the output of every layer, `layers + 1`
    /// tensors of `[T, hidden]`; the final norm is not applied to the last one.
    pub hidden: Vec<Tensor>,
}

fn cerr(what: &str) -> impl Fn(candle_core::Error) -> Error + '_ {
    move |e| Error::Tensor { path: "<forward pass>".into(), tensor: what.to_string(), detail: e.to_string() }
}

impl Model {
    /// Loads weights in `dt` (F32, BF16 or F16); logits always come back as f32.
    pub fn load(spec: ArchSpec, w: &dyn WeightSource, device: &Device, dt: DType) -> Result<Model> {
        let norm = |name: &str| -> Result<Tensor> {
            let t = w.tensor(name, dt, device)?;
            match spec.norm {
                Norm::Rms => Ok(t),
                // Gemma computes x̂ · (1 + w) in f32: fold the 1 in once, before any cast.
                Norm::RmsPlusOne => (t.to_dtype(DType::F32).and_then(|t| t + 1.0).and_then(|t| t.to_dtype(dt))).map_err(cerr(name)),
            }
        };
        let embed_name = "model.embed_tokens.weight";
        let embed = w.tensor(embed_name, dt, device)?;
        let lm_head = if spec.tied_embeddings { None } else { Some(w.linear("lm_head", false, dt, device)?) };
        let mut layers = Vec::with_capacity(spec.layers);
        for i in 0..spec.layers {
            let p = format!("model.layers.{i}");
            let a = format!("{p}.self_attn");
            let m = format!("{p}.mlp");
            layers.push(Layer {
                q: w.linear(&format!("{a}.q_proj"), spec.qkv_bias, dt, device)?,
                k: w.linear(&format!("{a}.k_proj"), spec.qkv_bias, dt, device)?,
                v: w.linear(&format!("{a}.v_proj"), spec.qkv_bias, dt, device)?,
                o: w.linear(&format!("{a}.o_proj"), false, dt, device)?,
                gate: w.linear(&format!("{m}.gate_proj"), false, dt, device)?,
                up: w.linear(&format!("{m}.up_proj"), false, dt, device)?,
                down: w.linear(&format!("{m}.down_proj"), false, dt, device)?,
                input_norm: norm(&format!("{p}.input_layernorm.weight"))?,
                post_attn_norm: norm(&format!("{p}.post_attention_layernorm.weight"))?,
                pre_ff_norm: spec.sandwich_norms.then(|| norm(&format!("{p}.pre_feedforward_layernorm.weight"))).transpose()?,
                post_ff_norm: spec.sandwich_norms.then(|| norm(&format!("{p}.post_feedforward_layernorm.weight"))).transpose()?,
                q_norm: spec.qk_norm.then(|| norm(&format!("{a}.q_norm.weight"))).transpose()?,
                k_norm: spec.qk_norm.then(|| norm(&format!("{a}.k_norm.weight"))).transpose()?,
                sliding: spec.sliding_layers.get(i).copied().unwrap_or(false),
            });
        }
        let final_norm = norm("model.norm.weight")?;
        Ok(Model { spec, embed, lm_head, layers, final_norm, device: device.clone(), dtype: dt })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs the whole sequence; `trace` keeps every layer's hidden state.
    pub fn forward(&self, ids: &[u32], trace: bool) -> Result<Forward> {
        self.forward_inner(ids, trace, None).map_err(cerr("forward"))
    }

    /// Runs `ids` as the continuation of what `cache` holds (positions `cache.len()..`), appends
    /// their keys and values to it, and returns their logits.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        self.forward_inner(ids, false, Some(cache)).map(|f| f.logits).map_err(cerr("forward"))
    }

    fn forward_inner(&self, ids: &[u32], trace: bool, mut cache: Option<&mut KvCache>) -> candle_core::Result<Forward> {
        let s = &self.spec;
        let n = ids.len();
        let past = cache.as_ref().map(|c| c.len).unwrap_or(0);
        let t = past + n;
        if n == 0 {
            candle_core::bail!("forward needs at least one token");
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= s.vocab_size.max(self.embed.dim(0).unwrap_or(0))) {
            candle_core::bail!("token id {bad} is outside the embedding ({} rows)", self.embed.dim(0)?);
        }
        let ids_t = Tensor::from_slice(ids, n, &self.device)?;
        let mut x = self.embed.index_select(&ids_t, 0)?;
        if let Some(scale) = s.embed_scale {
            // transformers casts the normaliser to the hidden dtype first (f32 here).
            x = (x * (scale as f32) as f64)?;
        }
        let mut hidden = Vec::new();
        if trace {
            hidden.push(x.to_dtype(DType::F32)?);
        }
        let dt = self.dtype;
        // Tables for positions 0..t, then the rows of the new tokens.
        let cast = |(c, s): (Tensor, Tensor)| -> candle_core::Result<(Tensor, Tensor)> {
            Ok((c.narrow(0, past, n)?.contiguous()?.to_dtype(dt)?, s.narrow(0, past, n)?.contiguous()?.to_dtype(dt)?))
        };
        let (cos, sin) = cast(rope::tables(&s.rope, s.head_dim, t, &self.device)?)?;
        let local = match &s.rope_local {
            Some(r) => Some(cast(rope::tables(r, s.head_dim, t, &self.device)?)?),
            None => None,
        };
        let full_mask = mask(past, n, None, &self.device)?.to_dtype(dt)?;
        let sliding_mask = match s.sliding_window {
            Some(w) if w < t => Some(mask(past, n, Some(w), &self.device)?.to_dtype(dt)?),
            _ => None,
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let (c, sn) = match (&local, layer.sliding) {
                (Some((lc, ls)), true) => (lc, ls),
                _ => (&cos, &sin),
            };
            let m = match (&sliding_mask, layer.sliding) {
                (Some(sm), true) => sm,
                _ => &full_mask,
            };
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[li]);
            x = self.layer(layer, &x, c, sn, m, kv)?;
            if trace {
                hidden.push(x.to_dtype(DType::F32)?);
            }
        }
        if let Some(c) = cache {
            c.len = t;
        }
        let x = self.norm(&x, &self.final_norm)?;
        let mut logits = match &self.lm_head {
            Some(h) => h.forward(&x)?,
            None => x.matmul(&self.embed.t()?)?,
        };
        if let Some(c) = s.final_softcap {
            logits = ((logits / c)?.tanh()? * c)?;
        }
        Ok(Forward { logits: logits.to_dtype(DType::F32)?, hidden })
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, w, self.spec.norm_eps as f32)
    }

    fn layer(
        &self,
        l: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> candle_core::Result<Tensor> {
        let h = self.norm(x, &l.input_norm)?;
        let mut h = self.attention(l, &h, cos, sin, mask, kv)?;
        if self.spec.sandwich_norms {
            h = self.norm(&h, &l.post_attn_norm)?;
        }
        let x = (x + h)?;
        let pre = l.pre_ff_norm.as_ref().unwrap_or(&l.post_attn_norm);
        let h = self.norm(&x, pre)?;
        let mut h = self.mlp(l, &h)?;
        if let Some(post) = &l.post_ff_norm {
            h = self.norm(&h, post)?;
        }
        x + h
    }

    fn mlp(&self, l: &Layer, x: &Tensor) -> candle_core::Result<Tensor> {
        let g = l.gate.forward(x)?;
        let g = match self.spec.activation {
            Activation::Silu => candle_nn::ops::silu(&g)?,
            Activation::GeluTanh => g.gelu()?,
            Activation::Gelu => g.gelu_erf()?,
        };
        l.down.forward(&(g * l.up.forward(x)?)?)
    }

    fn attention(
        &self,
        l: &Layer,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let n = x.dim(0)?;
        let heads = |y: Tensor, h: usize| y.reshape((n, h, s.head_dim))?.transpose(0, 1)?.contiguous();
        let mut q = heads(l.q.forward(x)?, s.heads)?;
        let mut k = heads(l.k.forward(x)?, s.kv_heads)?;
        let v = heads(l.v.forward(x)?, s.kv_heads)?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            q = self.norm(&q, qn)?;
            k = self.norm(&k, kn)?;
        }
        let q = candle_nn::rotary_emb::rope(&q.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        let k = candle_nn::rotary_emb::rope(&k.unsqueeze(0)?, cos, sin)?.squeeze(0)?;
        // With a cache: keys/values of earlier positions (already roped) come first.
        let (k, v) = match kv {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                    None => (k, v),
                };
                *slot = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let t = k.dim(1)?;
        let rep = s.heads / s.kv_heads;
        let expand = |y: Tensor| -> candle_core::Result<Tensor> {
            if rep == 1 {
                return Ok(y);
            }
            y.unsqueeze(1)?.expand((s.kv_heads, rep, t, s.head_dim))?.reshape((s.heads, t, s.head_dim))
        };
        let k = expand(k)?;
        let v = expand(v)?;
        let mut scores = (q.matmul(&k.t()?)? * s.attn_scale)?;
        if let Some(c) = s.attn_softcap {
            scores = ((scores / c)?.tanh()? * c)?;
        }
        let scores = scores.broadcast_add(mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.matmul(&v)?.transpose(0, 1)?.reshape((n, s.heads * s.head_dim))?;
        l.o.forward(&out)
    }

    /// Greedy generation from `prompt` until a stop id or `max_new` tokens, with a KV cache.
    /// Returns the new ids and whether a stop id was produced.
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<(Vec<u32>, bool)> {
        let mut cache = KvCache::new(self.layers.len());
        let mut out = Vec::new();
        let mut input = prompt.to_vec();
        for _ in 0..max_new {
            let logits = self.forward_cached(&input, &mut cache)?;
            let last = logits.get(input.len() - 1).and_then(|r| r.argmax(D::Minus1)).and_then(|a| a.to_scalar::<u32>());
            let next = last.map_err(cerr("argmax"))?;
            out.push(next);
            if stop.contains(&next) {
                return Ok((out, true));
            }
            input = vec![next];
        }
        Ok((out, false))
    }
}

/// Keys and values (after rope, before the GQA repeat) of every position seen so far, per layer.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> KvCache {
        KvCache { layers: vec![None; layers], len: 0 }
    }
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Additive causal mask `[n, past + n]` for `n` new queries after `past` cached positions: 0 where
/// key ≤ query (and within `window` when sliding), −∞ elsewhere. transformers' sliding overlay
/// keeps keys with `query − key < window`.
fn mask(past: usize, n: usize, window: Option<usize>, device: &Device) -> candle_core::Result<Tensor> {
    let t = past + n;
    let v: Vec<f32> = (0..n)
        .flat_map(|qi| {
            let i = past + qi;
            (0..t).map(move |j| {
                let visible = j <= i && window.is_none_or(|w| i - j < w);
                if visible {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Tensor::from_vec(v, (n, t), device)
}
