//! The one decoder-only transformer: embeddings → N × (attention, MLP) → norm → head, returning
//! logits for every position and, on request, the hidden state after every layer.
//!
//! Family differences come only from `ArchSpec` fields; there is one attention, one MLP, one norm
//! and one rope here. Projections stored fused (`Topology`) are split after their matmul. One
//! sequence at a time: teacher-forced scoring runs every position at once; greedy generation
//! carries a `KvCache`.

use candle_core::{DType, Device, Tensor, D};

use super::rope;
use super::weights::{LinearOp, WeightSource};
use crate::error::{Error, Result};
use crate::format::arch::{Activation, ArchSpec, Norm, Topology};

/// The attention input projections, as stored.
enum Qkv {
    Separate {
        q: Box<dyn LinearOp>,
        k: Box<dyn LinearOp>,
        v: Box<dyn LinearOp>,
    },
    /// One `[q + k + v, hidden]` matrix.
    Fused(Box<dyn LinearOp>),
}

/// The MLP input projections, as stored.
enum GateUp {
    Separate {
        gate: Box<dyn LinearOp>,
        up: Box<dyn LinearOp>,
    },
    /// One `[2 · intermediate, hidden]` matrix, gate rows first.
    Fused(Box<dyn LinearOp>),
}

struct Layer {
    qkv: Qkv,
    o: Box<dyn LinearOp>,
    gate_up: GateUp,
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
    pub fn load(mut spec: ArchSpec, w: &dyn WeightSource, device: &Device, dt: DType) -> Result<Model> {
        spec.topology = Topology::from_weights(|n| w.has(n));
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
            let qkv = if spec.topology.fused_qkv {
                Qkv::Fused(w.linear(&format!("{a}.qkv_proj"), spec.qkv_bias, dt, device)?)
            } else {
                Qkv::Separate {
                    q: w.linear(&format!("{a}.q_proj"), spec.qkv_bias, dt, device)?,
                    k: w.linear(&format!("{a}.k_proj"), spec.qkv_bias, dt, device)?,
                    v: w.linear(&format!("{a}.v_proj"), spec.qkv_bias, dt, device)?,
                }
            };
            let gate_up = if spec.topology.fused_gate_up {
                GateUp::Fused(w.linear(&format!("{m}.gate_up_proj"), false, dt, device)?)
            } else {
                GateUp::Separate {
                    gate: w.linear(&format!("{m}.gate_proj"), false, dt, device)?,
                    up: w.linear(&format!("{m}.up_proj"), false, dt, device)?,
                }
            };
            layers.push(Layer {
                qkv,
                o: w.linear(&format!("{a}.o_proj"), false, dt, device)?,
                gate_up,
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
        let (g, u) = match &l.gate_up {
            GateUp::Separate { gate, up } => (gate.forward(x)?, up.forward(x)?),
            GateUp::Fused(f) => {
                let y = f.forward(x)?;
                let i = self.spec.intermediate;
                (y.narrow(1, 0, i)?, y.narrow(1, i, i)?)
            }
        };
        let g = match self.spec.activation {
            Activation::Silu => candle_nn::ops::silu(&g)?,
            Activation::GeluTanh => g.gelu()?,
            Activation::Gelu => g.gelu_erf()?,
        };
        l.down.forward(&(g * u)?)
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
        let heads = |y: Tensor, h: usize| y.contiguous()?.reshape((n, h, s.head_dim))?.transpose(0, 1)?.contiguous();
        let (q, k, v) = match &l.qkv {
            Qkv::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            Qkv::Fused(f) => {
                let y = f.forward(x)?;
                let (nq, nkv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
                (y.narrow(1, 0, nq)?, y.narrow(1, nq, nkv)?, y.narrow(1, nq + nkv, nkv)?)
            }
        };
        let mut q = heads(q, s.heads)?;
        let mut k = heads(k, s.kv_heads)?;
        let v = heads(v, s.kv_heads)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::hf::HfDir;
    use crate::model::weights::HfWeights;

    /// The zoo's Llama as Phi-3 stores it: `qkv_proj` = [q; k; v] and `gate_up_proj` = [gate; up].
    struct Fused<'a>(HfWeights<'a>);

    fn split_name(name: &str) -> Option<(String, &'static [&'static str])> {
        if let Some(p) = name.strip_suffix("qkv_proj.weight") {
            return Some((p.to_string(), &["q_proj", "k_proj", "v_proj"]));
        }
        name.strip_suffix("gate_up_proj.weight").map(|p| (p.to_string(), &["gate_proj", "up_proj"][..]))
    }

    impl WeightSource for Fused<'_> {
        fn has(&self, name: &str) -> bool {
            match split_name(name) {
                Some((p, parts)) => self.0.has(&format!("{p}{}.weight", parts[0])),
                None => {
                    !["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"].iter().any(|s| name.ends_with(&format!("{s}.weight")))
                        && self.0.has(name)
                }
            }
        }
        fn tensor(&self, name: &str, dtype: DType, device: &Device) -> Result<Tensor> {
            let Some((p, parts)) = split_name(name) else { return self.0.tensor(name, dtype, device) };
            let ts = parts.iter().map(|s| self.0.tensor(&format!("{p}{s}.weight"), dtype, device)).collect::<Result<Vec<_>>>()?;
            Tensor::cat(&ts, 0).map_err(cerr(name))
        }
    }

    /// A fused-projection layout computes the same function as the separate one: the decoder's
    /// split of `qkv_proj` / `gate_up_proj` outputs is exact.
    #[test]
    fn fused_projections_match_separate_ones() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo/models/llama-instruct");
        let dir = HfDir::open(&root).unwrap();
        let cfg = &dir.config.as_ref().unwrap().value;
        let spec = ArchSpec::from_config(cfg, Some(dir.tensor("lm_head.weight").is_some())).unwrap();
        let separate = Model::load(spec.clone(), &HfWeights { dir: &dir }, &Device::Cpu, DType::F32).unwrap();
        let fused = Model::load(spec, &Fused(HfWeights { dir: &dir }), &Device::Cpu, DType::F32).unwrap();
        assert_eq!(fused.spec.topology, Topology { fused_qkv: true, fused_gate_up: true });
        assert_eq!(separate.spec.topology, Topology::default());
        let ids = [1u32, 5, 9, 12, 3, 7, 2];
        let a = separate.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = fused.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "fused vs separate logits differ by {worst}");
    }
}
