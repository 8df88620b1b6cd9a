//! The one decoder-only transformer: embeddings → N × (attention, MLP) → norm → head.
//!
//! Family differences come only from `ArchSpec` fields; there is one attention, one MLP, one norm
//! and one rope here. Projections stored fused (`Topology`) are split after their matmul.
//!
//! The forward pass runs a *batch*: several sequences' rows stacked into one `[rows, hidden]`
//! matrix, so every matmul reads its weights once for all of them, while attention keeps each
//! sequence to itself. It advances one layer at a time (`begin`, `step`, `finish`), so a caller
//! can run two models in lockstep and compare their hidden states at each layer as it goes;
//! `logits` runs the head on whichever rows the caller needs, in chunks of its choosing.
//! Greedy generation batches prompts too, each with its own `KvCache`.
//!
//! Two kernels sit under the one decoder. f32 on the CPU (the default) multiplies weights where
//! they are stored (`native`) and runs blocked attention (`attention`); other dtypes and devices
//! run candle's ops on dense copies. A unit test holds the two to the same logits.

use candle_core::{DType, Device, Tensor, D};

use super::attention::{self, AttnShape};
use super::rope;
use super::weights::{native_engine, DenseLinear, LinearOp, NativeLinear, NativeMatrix, WeightSource};
use crate::error::{Error, Result};
use crate::format::arch::{Activation, ArchSpec, ExpertProj, Norm, Topology};

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

/// A gated MLP, `down(act(gate(x)) · up(x))`: a dense layer's, or one expert's.
struct GatedMlp {
    gate_up: GateUp,
    down: Box<dyn LinearOp>,
    intermediate: usize,
}

/// A layer's feed-forward block.
enum Ffn {
    Dense(GatedMlp),
    /// A router `[experts, hidden]` and its experts (`ArchSpec::moe`); Qwen2-MoE's shared expert
    /// with its `[1, hidden]` gate.
    Moe {
        router: Box<dyn LinearOp>,
        experts: Vec<GatedMlp>,
        shared: Option<(GatedMlp, Box<dyn LinearOp>)>,
    },
}

struct Layer {
    qkv: Qkv,
    o: Box<dyn LinearOp>,
    ffn: Ffn,
    input_norm: Tensor,
    /// Llama: the pre-MLP norm. Gemma 2/3: the norm on the attention output.
    post_attn_norm: Tensor,
    pre_ff_norm: Option<Tensor>,
    post_ff_norm: Option<Tensor>,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    sliding: bool,
}

/// The token embeddings: left in the file (native engine) or a dense tensor.
enum Embed {
    Native(NativeMatrix),
    Dense(Tensor),
}

/// A loaded model, ready to run.
pub struct Model {
    pub spec: ArchSpec,
    embed: Embed,
    /// The output projection (the embeddings again when they are tied).
    lm_head: Box<dyn LinearOp>,
    layers: Vec<Layer>,
    final_norm: Tensor,
    device: Device,
    dtype: DType,
    /// f32 on the CPU: stored weights and blocked attention (module docs).
    native: bool,
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

/// Rows the MLP (and the norms around it) process at once: bounds the `[rows, intermediate]`
/// activations of a long sequence (row-wise ops, so chunking changes no number) and keeps them
/// in cache (512 × 2816 f32 is 5.8 MB; 2048 rows measured slower at 4096 tokens).
const MLP_ROWS: usize = 512;

/// One sequence's rows in a batch: `len` rows from `start`, at positions `past..past + len`.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub start: usize,
    pub len: usize,
    pub past: usize,
}

/// (cos, sin) rows on the host.
type HostTables = (Vec<f32>, Vec<f32>);

/// Rope angles for every row of a batch, `[rows, head_dim / 2]`, global and (Gemma 3) local.
struct RopeRows {
    global: (Tensor, Tensor),
    local: Option<(Tensor, Tensor)>,
    /// The same on the host, for the native kernels.
    host: Option<(HostTables, Option<HostTables>)>,
}

/// A batch of sequences part-way through the model.
pub struct Batch {
    /// `[rows, hidden]`: the embeddings, then each layer's output in turn.
    x: Tensor,
    segments: Vec<Segment>,
    rope: RopeRows,
    /// The next layer to run.
    next: usize,
    /// The experts the last layer run routed each row to (`top_k` per row, ascending), when it
    /// was a sparse MoE layer.
    routes: Option<Vec<u32>>,
}

impl Batch {
    /// Layers run so far.
    pub fn layers_done(&self) -> usize {
        self.next
    }
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    /// The current hidden state, `[rows, hidden]`, as f32.
    pub fn hidden(&self) -> Result<Tensor> {
        self.x.to_dtype(DType::F32).map_err(cerr("hidden state"))
    }
    /// The experts the last layer run chose for each row, `top_k` ids per row in ascending
    /// order (row-major); `None` when that layer was dense (or none has run).
    pub fn routes(&self) -> Option<&[u32]> {
        self.routes.as_deref()
    }
}

/// Keys and values of one layer of one sequence, after rope and before the GQA repeat.
#[derive(Default)]
enum LayerKv {
    #[default]
    Empty,
    /// `[t, kv_heads · head_dim]` row-major (native engine).
    Host { k: Vec<f32>, v: Vec<f32> },
    /// `[kv_heads, t, head_dim]` (candle path).
    Dev(Tensor, Tensor),
}

/// Keys and values of every position seen so far, per layer, for one sequence.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
}

impl KvCache {
    pub fn new(layers: usize) -> KvCache {
        KvCache { layers: (0..layers).map(|_| LayerKv::Empty).collect(), len: 0 }
    }
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Prompts prefilled together in batched generation, at most this many tokens in all.
const GEN_GROUP_TOKENS: usize = 4096;
/// And at most this many prompts (each holds a KV cache).
const GEN_GROUP_PROMPTS: usize = 32;

impl Model {
    /// Loads weights in `dt` (F32, BF16 or F16); logits always come back as f32. With f32 on the
    /// CPU, 2-D weights the source can leave in place stay in their file (`WeightSource::native`).
    pub fn load(mut spec: ArchSpec, w: &dyn WeightSource, device: &Device, dt: DType) -> Result<Model> {
        spec.topology = Topology::from_weights(|n| w.has(n));
        let native = native_engine(dt, device);
        let norm = |name: &str| -> Result<Tensor> {
            let t = w.tensor(name, dt, device)?;
            match spec.norm {
                Norm::Rms => Ok(t),
                // Gemma computes x̂ · (1 + w) in f32: fold the 1 in once, before any cast.
                Norm::RmsPlusOne => (t.to_dtype(DType::F32).and_then(|t| t + 1.0).and_then(|t| t.to_dtype(dt))).map_err(cerr(name)),
            }
        };
        let embed_name = "model.embed_tokens.weight";
        let embed = match if native { w.native(embed_name)? } else { None } {
            Some(m) => Embed::Native(m),
            None => Embed::Dense(w.tensor(embed_name, dt, device)?),
        };
        let lm_head: Box<dyn LinearOp> = if spec.tied_embeddings {
            match &embed {
                Embed::Native(m) => Box::new(NativeLinear { weight: m.clone(), bias: None }),
                Embed::Dense(t) => Box::new(DenseLinear { weight: t.clone(), bias: None }),
            }
        } else {
            w.linear("lm_head", false, dt, device)?
        };
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
            let ffn = match spec.moe.as_ref().filter(|moe| moe.sparse(i)) {
                Some(moe) => {
                    let gated = |name: &dyn Fn(ExpertProj) -> String, intermediate: usize| -> Result<GatedMlp> {
                        let lin = |p: ExpertProj| w.linear(&name(p), false, dt, device);
                        Ok(GatedMlp {
                            gate_up: GateUp::Separate { gate: lin(ExpertProj::Gate)?, up: lin(ExpertProj::Up)? },
                            down: lin(ExpertProj::Down)?,
                            intermediate,
                        })
                    };
                    let shared = match moe.shared {
                        Some(si) => Some((gated(&|p| moe.shared_expert(i, p), si)?, w.linear(&moe.shared_gate(i), false, dt, device)?)),
                        None => None,
                    };
                    Ffn::Moe {
                        router: w.linear(&moe.router(i), false, dt, device)?,
                        experts: (0..moe.experts).map(|e| gated(&|p| moe.expert(i, e, p), moe.intermediate)).collect::<Result<_>>()?,
                        shared,
                    }
                }
                None => {
                    let gate_up = if spec.topology.fused_gate_up {
                        GateUp::Fused(w.linear(&format!("{m}.gate_up_proj"), false, dt, device)?)
                    } else {
                        GateUp::Separate {
                            gate: w.linear(&format!("{m}.gate_proj"), false, dt, device)?,
                            up: w.linear(&format!("{m}.up_proj"), false, dt, device)?,
                        }
                    };
                    let down = w.linear(&format!("{m}.down_proj"), false, dt, device)?;
                    Ffn::Dense(GatedMlp { gate_up, down, intermediate: spec.intermediate })
                }
            };
            layers.push(Layer {
                qkv,
                o: w.linear(&format!("{a}.o_proj"), false, dt, device)?,
                ffn,
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
        Ok(Model { spec, embed, lm_head, layers, final_norm, device: device.clone(), dtype: dt, native })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs attention with candle's ops (the path of other dtypes and devices) even where the
    /// native kernels would run: for tests holding the two to the same numbers.
    pub fn with_candle_attention(mut self) -> Model {
        self.native = false;
        self
    }

    /// Rows of the embedding matrix.
    pub fn embed_rows(&self) -> usize {
        match &self.embed {
            Embed::Native(m) => m.rows(),
            Embed::Dense(t) => t.dim(0).unwrap_or(0),
        }
    }

    /// Runs the whole sequence; `trace` keeps every layer's hidden state.
    pub fn forward(&self, ids: &[u32], trace: bool) -> Result<Forward> {
        let mut b = self.begin(&[ids], None)?;
        let mut hidden = Vec::new();
        if trace {
            hidden.push(b.hidden()?);
        }
        while b.next < self.layers.len() {
            self.step(&mut b, None)?;
            if trace {
                hidden.push(b.hidden()?);
            }
        }
        let h = self.finish(b, None)?;
        Ok(Forward { logits: self.logits(&h)?, hidden })
    }

    /// Runs `ids` as the continuation of what `cache` holds (positions `cache.len()..`), appends
    /// their keys and values to it, and returns their logits.
    pub fn forward_cached(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor> {
        let caches = std::slice::from_mut(cache);
        let mut b = self.begin(&[ids], Some(caches))?;
        while b.next < self.layers.len() {
            self.step(&mut b, Some(caches))?;
        }
        let h = self.finish(b, Some(caches))?;
        self.logits(&h)
    }

    /// Embeds a batch of sequences (each continuing its cache, when `caches` is given): the start
    /// of a forward pass, before layer 0.
    pub fn begin(&self, seqs: &[&[u32]], caches: Option<&[KvCache]>) -> Result<Batch> {
        self.begin_inner(seqs, caches).map_err(cerr("embeddings"))
    }

    fn begin_inner(&self, seqs: &[&[u32]], caches: Option<&[KvCache]>) -> candle_core::Result<Batch> {
        let s = &self.spec;
        let rows_in_embed = self.embed_rows();
        let mut segments = Vec::with_capacity(seqs.len());
        let mut ids = Vec::new();
        for (i, q) in seqs.iter().enumerate() {
            if q.is_empty() {
                candle_core::bail!("forward needs at least one token per sequence");
            }
            if let Some(&bad) = q.iter().find(|&&t| t as usize >= rows_in_embed) {
                candle_core::bail!("token id {bad} is outside the embedding ({rows_in_embed} rows)");
            }
            let past = caches.and_then(|c| c.get(i)).map(|c| c.len).unwrap_or(0);
            segments.push(Segment { start: ids.len(), len: q.len(), past });
            ids.extend_from_slice(q);
        }
        let rows = ids.len();
        let mut x = match &self.embed {
            Embed::Native(m) => Tensor::from_vec(m.gather(&ids), (rows, m.cols()), &self.device)?,
            Embed::Dense(t) => t.index_select(&Tensor::from_slice(&ids, rows, &self.device)?, 0)?,
        };
        if let Some(scale) = s.embed_scale {
            // transformers casts the normaliser to the hidden dtype first (f32 here).
            x = (x * (scale as f32) as f64)?;
        }
        let rope = self.rope_rows(&segments)?;
        Ok(Batch { x, segments, rope, next: 0, routes: None })
    }

    /// Each row's rope angles. Tables are built per sequence for its own length (dynamic NTK
    /// scaling depends on it, as in transformers).
    fn rope_rows(&self, segments: &[Segment]) -> candle_core::Result<RopeRows> {
        let s = &self.spec;
        let build = |r: &crate::format::arch::Rope| -> candle_core::Result<(Tensor, Tensor)> {
            let mut cs = Vec::with_capacity(segments.len());
            let mut ss = Vec::with_capacity(segments.len());
            for g in segments {
                let (c, sn) = rope::tables_for(r, s.rotary_dim, g.past + g.len, g.past..g.past + g.len, &self.device)?;
                cs.push(c);
                ss.push(sn);
            }
            let dt = if self.native { DType::F32 } else { self.dtype };
            Ok((Tensor::cat(&cs, 0)?.to_dtype(dt)?, Tensor::cat(&ss, 0)?.to_dtype(dt)?))
        };
        let global = build(&s.rope)?;
        let local = s.rope_local.as_ref().map(build).transpose()?;
        let host = if self.native {
            let v = |p: &(Tensor, Tensor)| -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
                Ok((p.0.flatten_all()?.to_vec1()?, p.1.flatten_all()?.to_vec1()?))
            };
            Some((v(&global)?, local.as_ref().map(v).transpose()?))
        } else {
            None
        };
        Ok(RopeRows { global, local, host })
    }

    /// Runs the batch through its next layer (appending keys and values to `caches`, when given:
    /// the same caches `begin` saw).
    pub fn step(&self, b: &mut Batch, caches: Option<&mut [KvCache]>) -> Result<()> {
        let li = b.next;
        let Some(layer) = self.layers.get(li) else { return Ok(()) };
        (b.x, b.routes) = self.layer(layer, li, b, caches).map_err(|e| Error::Tensor {
            path: "<forward pass>".into(),
            tensor: format!("model.layers.{li}"),
            detail: e.to_string(),
        })?;
        b.next += 1;
        Ok(())
    }

    /// Runs any layers left, applies the final norm and returns `[rows, hidden]` (the input of
    /// `logits`); the caches then hold the batch's positions too.
    pub fn finish(&self, mut b: Batch, mut caches: Option<&mut [KvCache]>) -> Result<Tensor> {
        while b.next < self.layers.len() {
            self.step(&mut b, caches.as_deref_mut())?;
        }
        if let Some(cs) = caches {
            for (c, g) in cs.iter_mut().zip(&b.segments) {
                c.len = g.past + g.len;
            }
        }
        self.norm(&b.x, &self.final_norm).map_err(cerr("model.norm"))
    }

    /// Logits `[rows, vocab]` (f32) of final hidden states `[rows, hidden]` from `finish`.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let mut logits = self.lm_head.forward(h)?;
            if let Some(d) = self.spec.logit_divisor {
                logits = (logits / d)?;
            }
            if let Some(c) = self.spec.final_softcap {
                logits = ((logits / c)?.tanh()? * c)?;
            }
            logits.to_dtype(DType::F32)
        };
        run().map_err(cerr("lm_head"))
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, w, self.spec.norm_eps as f32)
    }

    /// One layer: its output and, for a sparse layer, the experts each row was routed to.
    fn layer(&self, l: &Layer, li: usize, b: &Batch, caches: Option<&mut [KvCache]>) -> candle_core::Result<(Tensor, Option<Vec<u32>>)> {
        let x = &b.x;
        let h = self.norm(x, &l.input_norm)?;
        let mut h = self.attention(l, li, &h, b, caches)?;
        if self.spec.sandwich_norms {
            h = self.norm(&h, &l.post_attn_norm)?;
        }
        if let Some(r) = self.spec.residual_scale {
            h = (h * r)?;
        }
        let x = (x + h)?;
        let rows = x.dim(0)?;
        let mut outs = Vec::with_capacity(rows.div_ceil(MLP_ROWS));
        let mut routes: Option<Vec<u32>> = None;
        for r0 in (0..rows).step_by(MLP_ROWS) {
            let x = x.narrow(0, r0, MLP_ROWS.min(rows - r0))?;
            let pre = l.pre_ff_norm.as_ref().unwrap_or(&l.post_attn_norm);
            let h = self.norm(&x, pre)?;
            let (mut h, r) = self.mlp(l, &h)?;
            if let Some(r) = r {
                routes.get_or_insert_with(Vec::new).extend(r);
            }
            if let Some(post) = &l.post_ff_norm {
                h = self.norm(&h, post)?;
            }
            if let Some(r) = self.spec.residual_scale {
                h = (h * r)?;
            }
            outs.push((x + h)?);
        }
        let out = if outs.len() == 1 { outs.pop().expect("one chunk") } else { Tensor::cat(&outs, 0)? };
        Ok((out, routes))
    }

    /// The feed-forward block; for a sparse layer also the experts chosen per row (`moe`).
    fn mlp(&self, l: &Layer, x: &Tensor) -> candle_core::Result<(Tensor, Option<Vec<u32>>)> {
        match &l.ffn {
            Ffn::Dense(m) => Ok((self.gated(m, x)?, None)),
            Ffn::Moe { router, experts, shared } => {
                let (y, r) = self.moe(router.as_ref(), experts, x)?;
                let y = match shared {
                    // transformers: routed output + sigmoid(shared_expert_gate(x)) · shared_expert(x).
                    Some((mlp, gate)) => {
                        let g = candle_nn::ops::sigmoid(&gate.forward(x)?)?;
                        (y + self.gated(mlp, x)?.broadcast_mul(&g)?)?
                    }
                    None => y,
                };
                Ok((y, Some(r)))
            }
        }
    }

    /// The sparse MoE block: route every row to its top-k experts, run each expert only on the
    /// rows routed to it (gathered), and add its output, weighted, back into those rows — in
    /// expert order, as transformers' `index_add_` loop does. Cost ≈ top_k / experts of running
    /// every expert on every row. Also returns each row's chosen experts, ascending (`Batch::routes`).
    fn moe(&self, router: &dyn LinearOp, experts: &[GatedMlp], x: &Tensor) -> candle_core::Result<(Tensor, Vec<u32>)> {
        let Some(spec) = &self.spec.moe else { candle_core::bail!("an MoE layer without an MoE spec") };
        let (rows, hidden) = x.dims2()?;
        let logits = router.forward(x)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let picks = route(&logits, spec.top_k, spec.norm_topk);
        let mut chosen = Vec::with_capacity(rows * spec.top_k);
        for row in &picks {
            let mut ids: Vec<u32> = row.iter().map(|&(e, _)| e as u32).collect();
            ids.sort_unstable();
            chosen.extend(ids);
        }
        // Per expert: the rows routed to it and their weights.
        let mut per: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); experts.len()];
        for (r, row) in picks.iter().enumerate() {
            for &(e, w) in row {
                let slot =
                    per.get_mut(e).ok_or_else(|| candle_core::Error::Msg(format!("router chose expert {e} of {}", experts.len())))?;
                slot.0.push(r as u32);
                slot.1.push(w);
            }
        }
        let on_host = x.device().is_cpu();
        let mut host = if on_host { vec![0f32; rows * hidden] } else { Vec::new() };
        let mut dev = if on_host { None } else { Some(x.zeros_like()?) };
        for (expert, (idx, w)) in experts.iter().zip(&per) {
            if idx.is_empty() {
                continue;
            }
            let ids = Tensor::from_slice(idx, idx.len(), x.device())?;
            let y = self.gated(expert, &x.index_select(&ids, 0)?)?;
            // transformers weights the expert's output in its dtype (the top-k values cast to it).
            let wt = Tensor::from_slice(w, (idx.len(), 1), x.device())?.to_dtype(y.dtype())?;
            let y = y.broadcast_mul(&wt)?;
            match &mut dev {
                Some(out) => *out = out.index_add(&ids, &y, 0)?,
                None => {
                    let y = y.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                    for (&r, yr) in idx.iter().zip(y.chunks_exact(hidden)) {
                        let o = &mut host[r as usize * hidden..(r as usize + 1) * hidden];
                        o.iter_mut().zip(yr).for_each(|(o, v)| *o += v);
                    }
                }
            }
        }
        let out = match dev {
            Some(out) => out,
            None => Tensor::from_vec(host, (rows, hidden), x.device())?.to_dtype(x.dtype())?,
        };
        Ok((out, chosen))
    }

    fn gated(&self, m: &GatedMlp, x: &Tensor) -> candle_core::Result<Tensor> {
        let (g, u) = match &m.gate_up {
            GateUp::Separate { gate, up } => (gate.forward(x)?, up.forward(x)?),
            GateUp::Fused(f) => {
                let y = f.forward(x)?;
                let i = m.intermediate;
                (y.narrow(1, 0, i)?, y.narrow(1, i, i)?)
            }
        };
        if self.spec.activation == Activation::Silu {
            if let Some(h) = silu_mul_cpu(&g, &u)? {
                return m.down.forward(&h);
            }
        }
        let g = match self.spec.activation {
            Activation::Silu => candle_nn::ops::silu(&g)?,
            Activation::GeluTanh => g.gelu()?,
            Activation::Gelu => g.gelu_erf()?,
        };
        m.down.forward(&(g * u)?)
    }

    fn attention(&self, l: &Layer, li: usize, x: &Tensor, b: &Batch, caches: Option<&mut [KvCache]>) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let rows = x.dim(0)?;
        let (q, k, v) = match &l.qkv {
            Qkv::Separate { q, k, v } => (q.forward(x)?, k.forward(x)?, v.forward(x)?),
            Qkv::Fused(f) => {
                let y = f.forward(x)?;
                let (nq, nkv) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
                (y.narrow(1, 0, nq)?, y.narrow(1, nq, nkv)?, y.narrow(1, nq + nkv, nkv)?)
            }
        };
        let (mut q, mut k) = (q.contiguous()?, k.contiguous()?);
        let v = v.contiguous()?;
        if let (Some(qn), Some(kn)) = (&l.q_norm, &l.k_norm) {
            // Per-head RMS norm over head_dim.
            q = self.norm(&q.reshape((rows * s.heads, s.head_dim))?, qn)?.reshape((rows, s.heads * s.head_dim))?;
            k = self.norm(&k.reshape((rows * s.kv_heads, s.head_dim))?, kn)?.reshape((rows, s.kv_heads * s.head_dim))?;
        }
        let local = l.sliding && b.rope.local.is_some();
        let window = if l.sliding { s.sliding_window } else { None };
        let out = if self.native {
            self.attention_native(li, &q, &k, &v, b, local, window, caches)?
        } else {
            self.attention_candle(li, &q, &k, &v, b, local, window, caches)?
        };
        l.o.forward(&out)
    }

    /// Native engine: rope and blocked attention on the host, per sequence of the batch.
    #[allow(clippy::too_many_arguments)]
    fn attention_native(
        &self,
        li: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        b: &Batch,
        local: bool,
        window: Option<usize>,
        mut caches: Option<&mut [KvCache]>,
    ) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let (qw, kw) = (s.heads * s.head_dim, s.kv_heads * s.head_dim);
        let rows = q.dim(0)?;
        let mut qv = q.flatten_all()?.to_vec1::<f32>()?;
        let mut kv = k.flatten_all()?.to_vec1::<f32>()?;
        let vv = v.flatten_all()?.to_vec1::<f32>()?;
        let Some((global, local_host)) = &b.rope.host else { candle_core::bail!("native attention without host rope tables") };
        let (cos, sin) = match (local, local_host) {
            (true, Some(t)) => t,
            _ => global,
        };
        attention::rope_in_place(&mut qv, s.heads, s.head_dim, s.rotary_dim, cos, sin);
        attention::rope_in_place(&mut kv, s.kv_heads, s.head_dim, s.rotary_dim, cos, sin);
        let shape = AttnShape {
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            scale: s.attn_scale as f32,
            softcap: s.attn_softcap.map(|c| c as f32),
            window,
        };
        let mut out = vec![0f32; rows * qw];
        for (si, g) in b.segments.iter().enumerate() {
            let (qs, ks, vs) =
                (g.start * qw..(g.start + g.len) * qw, g.start * kw..(g.start + g.len) * kw, g.start * kw..(g.start + g.len) * kw);
            let o = &mut out[qs.clone()];
            match caches.as_deref_mut().and_then(|c| c.get_mut(si)) {
                Some(cache) => {
                    let slot = &mut cache.layers[li];
                    if matches!(slot, LayerKv::Empty) {
                        *slot = LayerKv::Host { k: Vec::new(), v: Vec::new() };
                    }
                    let LayerKv::Host { k: ck, v: cv } = slot else { candle_core::bail!("KV cache of another engine") };
                    ck.extend_from_slice(&kv[ks]);
                    cv.extend_from_slice(&vv[vs]);
                    attention::attend(&shape, &qv[qs], g.len, ck, cv, g.past, o);
                }
                None => attention::attend(&shape, &qv[qs], g.len, &kv[ks], &vv[vs], 0, o),
            }
        }
        Tensor::from_vec(out, (rows, qw), &self.device)
    }

    /// Other dtypes and devices: candle's ops, the full score matrix per sequence.
    #[allow(clippy::too_many_arguments)]
    fn attention_candle(
        &self,
        li: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        b: &Batch,
        local: bool,
        window: Option<usize>,
        mut caches: Option<&mut [KvCache]>,
    ) -> candle_core::Result<Tensor> {
        let s = &self.spec;
        let (cos, sin) = match (local, &b.rope.local) {
            (true, Some(t)) => t,
            _ => &b.rope.global,
        };
        let mut outs = Vec::with_capacity(b.segments.len());
        for (si, g) in b.segments.iter().enumerate() {
            let n = g.len;
            let heads = |y: &Tensor, h: usize| y.narrow(0, g.start, n)?.reshape((n, h, s.head_dim))?.transpose(0, 1)?.contiguous();
            let (c, sn) = (cos.narrow(0, g.start, n)?.contiguous()?, sin.narrow(0, g.start, n)?.contiguous()?);
            // Rope on the first `rotary_dim` of each head; the rest passes through.
            let rope = |x: Tensor| -> candle_core::Result<Tensor> {
                if s.rotary_dim == s.head_dim {
                    return candle_nn::rotary_emb::rope(&x.unsqueeze(0)?, &c, &sn)?.squeeze(0);
                }
                let rot = candle_nn::rotary_emb::rope(&x.narrow(2, 0, s.rotary_dim)?.contiguous()?.unsqueeze(0)?, &c, &sn)?.squeeze(0)?;
                Tensor::cat(&[&rot, &x.narrow(2, s.rotary_dim, s.head_dim - s.rotary_dim)?], 2)?.contiguous()
            };
            let q = rope(heads(q, s.heads)?)?;
            let k = rope(heads(k, s.kv_heads)?)?;
            let v = heads(v, s.kv_heads)?;
            // With a cache: keys/values of earlier positions (already roped) come first.
            let (k, v) = match caches.as_deref_mut().and_then(|c| c.get_mut(si)) {
                Some(cache) => {
                    let slot = &mut cache.layers[li];
                    let (k, v) = match std::mem::take(slot) {
                        LayerKv::Dev(pk, pv) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                        LayerKv::Empty => (k, v),
                        LayerKv::Host { .. } => candle_core::bail!("KV cache of another engine"),
                    };
                    *slot = LayerKv::Dev(k.clone(), v.clone());
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
            let m = mask(g.past, n, window, &self.device)?.to_dtype(self.dtype)?;
            let scores = scores.broadcast_add(&m)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            outs.push(probs.matmul(&v)?.transpose(0, 1)?.reshape((n, s.heads * s.head_dim))?);
        }
        Tensor::cat(&outs, 0)
    }

    /// Greedy generation from `prompt` until a stop id or `max_new` tokens, with a KV cache.
    /// Returns the new ids and whether a stop id was produced.
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<(Vec<u32>, bool)> {
        Ok(self.generate_batch(&[prompt], max_new, stop)?.pop().unwrap_or_default())
    }

    /// Greedy generation for several prompts at once: each decoding step runs every unfinished
    /// prompt as one batch (weights read once per step for all of them), each with its own KV
    /// cache. Prompts are taken in groups (`GEN_GROUP_TOKENS`, `GEN_GROUP_PROMPTS`) so caches and
    /// prefill stay bounded. Returns, per prompt, the new ids and whether a stop id was produced.
    pub fn generate_batch(&self, prompts: &[&[u32]], max_new: usize, stop: &[u32]) -> Result<Vec<(Vec<u32>, bool)>> {
        let mut results = Vec::with_capacity(prompts.len());
        let mut i = 0;
        while i < prompts.len() {
            let mut j = i + 1;
            let mut tokens = prompts[i].len();
            while j < prompts.len() && j - i < GEN_GROUP_PROMPTS && tokens + prompts[j].len() <= GEN_GROUP_TOKENS {
                tokens += prompts[j].len();
                j += 1;
            }
            results.extend(self.generate_group(&prompts[i..j], max_new, stop)?);
            i = j;
        }
        Ok(results)
    }

    fn generate_group(&self, prompts: &[&[u32]], max_new: usize, stop: &[u32]) -> Result<Vec<(Vec<u32>, bool)>> {
        let mut out: Vec<(Vec<u32>, bool)> = vec![(Vec::new(), false); prompts.len()];
        let mut caches: Vec<KvCache> = prompts.iter().map(|_| KvCache::new(self.layers.len())).collect();
        let mut inputs: Vec<Vec<u32>> = prompts.iter().map(|p| p.to_vec()).collect();
        let mut active: Vec<usize> = (0..prompts.len()).collect();
        for _ in 0..max_new {
            if active.is_empty() {
                break;
            }
            let mut cs: Vec<KvCache> = active.iter().map(|&a| std::mem::take(&mut caches[a])).collect();
            let seqs: Vec<&[u32]> = active.iter().map(|&a| inputs[a].as_slice()).collect();
            let b = self.begin(&seqs, Some(&cs))?;
            let last: Vec<u32> = b.segments.iter().map(|g| (g.start + g.len - 1) as u32).collect();
            let h = self.finish(b, Some(&mut cs))?;
            let run = || -> candle_core::Result<Vec<u32>> {
                let rows = h.index_select(&Tensor::from_vec(last.clone(), last.len(), &self.device)?, 0)?;
                self.logits(&rows).map_err(|e| candle_core::Error::Msg(e.to_string()))?.argmax(D::Minus1)?.to_vec1::<u32>()
            };
            let next = run().map_err(cerr("argmax"))?;
            let mut still = Vec::with_capacity(active.len());
            for ((&a, c), &n) in active.iter().zip(cs).zip(&next) {
                caches[a] = c;
                out[a].0.push(n);
                if stop.contains(&n) {
                    out[a].1 = true;
                    caches[a] = KvCache::default();
                } else {
                    inputs[a] = vec![n];
                    still.push(a);
                }
            }
            active = still;
        }
        Ok(out)
    }
}

/// Top-k routing of each row's router logits, as transformers' `MixtralTopKRouter` /
/// `Qwen3MoeTopKRouter`: softmax in f32, the `k` largest probabilities (ties to the lower expert
/// index, as `torch.topk` on CPU), renormalised to sum to 1 when `norm`. Returns (expert, weight)
/// per row, best first.
pub fn route(logits: &[Vec<f32>], k: usize, norm: bool) -> Vec<Vec<(usize, f32)>> {
    logits
        .iter()
        .map(|l| {
            let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = l.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            let mut order: Vec<usize> = (0..l.len()).collect();
            // NaN probabilities sort last and never panic (total_cmp).
            order.sort_by(|&a, &b| (e[b] / sum).total_cmp(&(e[a] / sum)).then(a.cmp(&b)));
            let mut top: Vec<(usize, f32)> = order.into_iter().take(k).map(|i| (i, e[i] / sum)).collect();
            if norm {
                let s: f32 = top.iter().map(|t| t.1).sum();
                top.iter_mut().for_each(|t| t.1 /= s);
            }
            top
        })
        .collect()
}

/// Additive causal mask `[n, past + n]` for `n` new queries after `past` cached positions: 0 where
/// key ≤ query (and within `window` when sliding), −∞ elsewhere. transformers' sliding overlay
/// keeps keys with `query − key < window`.
/// `silu(g) · u` in one pass (`vmath::silu_mul`) when both are contiguous f32 on the CPU and the
/// vector path runs; `None` sends the caller to candle's ops.
fn silu_mul_cpu(g: &Tensor, u: &Tensor) -> candle_core::Result<Option<Tensor>> {
    if g.dtype() != candle_core::DType::F32 || u.dtype() != candle_core::DType::F32 || g.shape() != u.shape() {
        return Ok(None);
    }
    let (gs, gl) = g.storage_and_layout();
    let (us, ul) = u.storage_and_layout();
    let out = match (&*gs, &*us, gl.contiguous_offsets(), ul.contiguous_offsets()) {
        (candle_core::Storage::Cpu(gc), candle_core::Storage::Cpu(uc), Some((ga, gb)), Some((ua, ub))) => {
            super::vmath::silu_mul(&gc.as_slice::<f32>()?[ga..gb], &uc.as_slice::<f32>()?[ua..ub])
        }
        _ => None,
    };
    drop((gs, us));
    out.map(|v| Tensor::from_vec(v, g.shape(), g.device())).transpose()
}

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

    /// Top-k routing as transformers: softmax, the k best (ties to the lower index), weights
    /// renormalised only when asked.
    #[test]
    fn route_picks_top_k_and_normalises_as_asked() {
        let logits = vec![vec![0.0f32, 2.0, 1.0, 2.0], vec![f32::NAN, 0.0, 0.0, 0.0]];
        let p = route(&logits, 2, false);
        let z: f32 = [0.0f32, 2.0, 1.0, 2.0].iter().map(|v| (v - 2.0).exp()).sum();
        assert_eq!(p[0].iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((p[0][0].1 - 1.0 / z).abs() < 1e-7 && (p[0][1].1 - 1.0 / z).abs() < 1e-7);
        let n = route(&logits, 2, true);
        assert!((n[0][0].1 - 0.5).abs() < 1e-7 && (n[0][1].1 - 0.5).abs() < 1e-7);
        // A NaN router logit gives NaN weights, never a panic; the decoder's outputs then carry it.
        assert!(n[1].iter().all(|t| t.1.is_nan()) && n[1].len() == 2);
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
