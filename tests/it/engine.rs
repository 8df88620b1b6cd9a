//! The engine against transformers: golden logits (and hidden states) written by transformers in
//! f32 for every zoo architecture (testdata/zoo/goldens, made by testdata/zoo/generate.py).
//!
//! Tolerance: max |Δlogit| ≤ 1e-4 × max(1, max |logit|) and the same argmax at every position.
//! Both sides compute in f32; the residual difference is summation order in matmuls.

use std::path::Path;

use candle_core::Device;
use ckptcheck::format::dtype::decode_f32;
use ckptcheck::format::dtype::Dtype;
use ckptcheck::format::hf::HfDir;
use ckptcheck::format::safetensors::SafetensorsFile;
use ckptcheck::model;

use crate::common;

pub(crate) struct Golden {
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    pub vocab: usize,
    hidden: Option<(Vec<f32>, usize, usize)>, // values, layers+1, hidden
}

pub(crate) fn goldens(name: &str) -> Vec<Golden> {
    let p = common::zoo().join("goldens").join(format!("{name}.safetensors"));
    let f = SafetensorsFile::open(&p).unwrap();
    assert!(f.header.problems.is_empty());
    let mut out = Vec::new();
    for i in 0.. {
        let Some(ids_t) = f.get(&format!("input_ids.{i}")) else { break };
        assert_eq!(ids_t.dtype, Dtype::I64);
        let ids: Vec<u32> = f.bytes(ids_t).unwrap().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
        let lt = f.get(&format!("logits.{i}")).unwrap();
        let logits = decode_f32(lt.dtype, f.bytes(lt).unwrap()).unwrap();
        let hidden = f
            .get(&format!("hidden.{i}"))
            .map(|h| (decode_f32(h.dtype, f.bytes(h).unwrap()).unwrap(), h.shape[0] as usize, h.shape[2] as usize));
        out.push(Golden { ids, vocab: lt.shape[1] as usize, logits, hidden });
    }
    assert!(!out.is_empty(), "no goldens in {}", p.display());
    out
}

pub(crate) fn check_variant(name: &str) {
    let dir = HfDir::open(&common::zoo().join("models").join(name)).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    check_model(name, &m);
}

pub(crate) fn check_model(name: &str, m: &model::Model) {
    for (pi, g) in goldens(name).iter().enumerate() {
        let f = m.forward(&g.ids, g.hidden.is_some()).unwrap();
        let got: Vec<f32> = f.logits.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(got.len(), g.logits.len(), "{name} prompt {pi}: logits shape");
        let scale = g.logits.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let max_diff = got.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{name} prompt {pi}: {} positions, max |Δlogit| {max_diff:.2e}, logit scale {scale:.1}", g.ids.len());
        assert!(max_diff <= 1e-4 * scale, "{name} prompt {pi}: max |Δlogit| {max_diff} > 1e-4 × {scale}");
        for (pos, (a, b)) in got.chunks(g.vocab).zip(g.logits.chunks(g.vocab)).enumerate() {
            let am = ckptcheck::compare::metrics::argmax(a);
            let bm = ckptcheck::compare::metrics::argmax(b);
            assert_eq!(am, bm, "{name} prompt {pi} position {pos}: argmax differs");
        }
        if let Some((h, n, hid)) = &g.hidden {
            // transformers' hidden_states: the input of layer 0 (scaled embeddings), then each
            // layer's output — except that the last entry has the final norm applied (measured:
            // it differs from the raw last-layer output and the logits match through it). The
            // engine's trace keeps the raw output, so the last entry is checked via the logits.
            let t = g.ids.len();
            assert_eq!(*n, f.hidden.len(), "{name}: layer count");
            for l in 0..n - 1 {
                let mine: Vec<f32> = f.hidden[l].flatten_all().unwrap().to_vec1().unwrap();
                let theirs = &h[l * t * hid..(l + 1) * t * hid];
                let scale = theirs.iter().fold(1.0f32, |m, x| m.max(x.abs()));
                let d = mine.iter().zip(theirs).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                assert!(d <= 1e-4 * scale, "{name} prompt {pi} hidden {l}: max |Δ| {d} (scale {scale})");
            }
        }
    }
}

fn zoo_has(name: &str) -> bool {
    let ok = Path::new(&common::zoo().join("goldens").join(format!("{name}.safetensors"))).exists();
    assert!(ok, "zoo golden for {name} missing: regenerate testdata/zoo (see its README)");
    ok
}

#[test]
fn llama_matches_transformers() {
    zoo_has("llama-instruct");
    check_variant("llama-instruct");
}

#[test]
fn llama_bf16_fine_tunes_match_transformers() {
    check_variant("llama-sft-good");
    check_variant("llama-sft-collapsed");
}

#[test]
fn qwen2_matches_transformers() {
    check_variant("qwen2-instruct");
}

#[test]
fn qwen3_matches_transformers() {
    check_variant("qwen3");
}

#[test]
fn mistral_matches_transformers() {
    check_variant("mistral");
}

#[test]
fn gemma2_matches_transformers() {
    check_variant("gemma2");
}

/// Granite: Llama's layout with embeddings × 12, attention scores × 1/64 (not 1/sqrt(16)), each
/// block's output × 0.22 before its residual add, logits ÷ 8 — each a visible change of the
/// logits, so a missing one fails (testdata/zoo/granite.py).
#[test]
fn granite_multipliers_match_transformers() {
    let dir = HfDir::open(&common::zoo().join("models/granite-mini")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    let s = &m.spec;
    assert_eq!(
        (s.family, s.embed_scale, s.residual_scale, s.logit_divisor),
        (ckptcheck::format::arch::Family::Granite, Some(12.0), Some(0.22), Some(8.0))
    );
    assert_eq!(s.attn_scale, 1.0 / 64.0);
    check_variant("granite-mini");
}

/// Phi-3 128k's `longrope`: the long factors for the three golden sequences longer than
/// `original_max_position_embeddings` (21), the short ones for the fourth (20 tokens), cos/sin ×
/// sqrt(1 + ln 4 / ln 21) (testdata/zoo/phi.py `longrope`).
#[test]
fn phi3_longrope_matches_transformers() {
    let dir = HfDir::open(&common::zoo().join("models/phi3-longrope")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    let ckptcheck::format::arch::RopeScaling::LongRope { original_max, attention_factor, .. } = &m.spec.rope.scaling else {
        panic!("not longrope: {:?}", m.spec.rope.scaling)
    };
    assert_eq!(*original_max, 21);
    assert!((attention_factor - (1.0 + 4f64.ln() / 21f64.ln()).sqrt()).abs() < 1e-12);
    check_variant("phi3-longrope");
}

#[test]
fn gemma3_matches_transformers() {
    check_variant("gemma3");
}

/// Phi-3 / Phi-4-mini: fused `qkv_proj` and `gate_up_proj` as transformers' Phi3 stores them,
/// rope on the first 12 of 16 dimensions of each head (`partial_rotary_factor` 0.75).
#[test]
fn phi3_partial_rotary_matches_transformers() {
    let dir = HfDir::open(&common::zoo().join("models/phi3-partial")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    assert_eq!((m.spec.family, m.spec.head_dim, m.spec.rotary_dim), (ckptcheck::format::arch::Family::Phi3, 16, 12));
    assert!(m.spec.topology.fused_qkv && m.spec.topology.fused_gate_up);
    check_variant("phi3-partial");
}

/// `base` with `adapter` applied in the forward pass, as `compare BASE+ADAPTER` runs it.
pub(crate) fn premerge(base: &HfDir, adapter: &ckptcheck::format::lora::Adapter) -> model::Model {
    let base_w = ckptcheck::model::weights::HfWeights { dir: base };
    let w = ckptcheck::model::weights::LoraWeights { base: &base_w, adapter };
    model::load_with(base, &w, &Device::Cpu, candle_core::DType::F32).unwrap()
}

/// The adapter applied on the fly (x·Wᵀ + s·(x·Aᵀ)·Bᵀ) against transformers + peft running the
/// unmerged PeftModel.
#[test]
fn lora_premerge_matches_peft() {
    let zoo = common::zoo().join("models");
    let base = HfDir::open(&zoo.join("llama-instruct")).unwrap();
    let adapter = ckptcheck::format::lora::Adapter::open(&zoo.join("llama-lora-adapter")).unwrap();
    assert_eq!(adapter.modules.len(), 21, "7 target modules × 3 layers");
    let m = premerge(&base, &adapter);
    check_model("llama-lora-premerge", &m);
}

/// QLoRA: the adapter applied on the fly over the nf4 base, which the engine runs packed through
/// its bitsandbytes scheme (the path `compare NF4_BASE+ADAPTER` takes), against peft's unmerged
/// PeftModel over bitsandbytes' own Linear4bit (f32 compute, testdata/zoo/quant_bnb.py).
#[test]
fn qlora_premerge_matches_peft() {
    let zoo = common::zoo().join("models");
    let ckpt = ckptcheck::checkpoint::Checkpoint::with_adapter(&zoo.join("llama-bnb-nf4"), &zoo.join("llama-qlora-adapter")).unwrap();
    let m = model::load(&ckpt, &Device::Cpu, ckptcheck::settings::ComputeDtype::F32, model::GgufMatmul::Dense).unwrap();
    check_model("qlora-premerge", &m);
}

#[test]
fn lora_merged_matches_transformers() {
    check_variant("llama-lora-merged");
}

/// Greedy generation with the KV cache produces exactly the tokens of recomputing the whole
/// sequence every step (sliding-window families included: mistral and gemma2 use a window of 16,
/// shorter than prompt + answer).
#[test]
fn kv_cache_generation_equals_full_recompute() {
    for name in ["llama-instruct", "mistral", "gemma2", "gemma3", "qwen3"] {
        let dir = HfDir::open(&common::zoo().join("models").join(name)).unwrap();
        let m = model::load_hf(&dir, &Device::Cpu).unwrap();
        for g in goldens(name).iter().take(2) {
            let prompt = &g.ids[..g.ids.len() / 2];
            let (cached, _) = m.generate_greedy(prompt, 12, &[]).unwrap();
            let mut ids = prompt.to_vec();
            let mut full = Vec::new();
            for _ in 0..12 {
                let f = m.forward(&ids, false).unwrap();
                let row: Vec<f32> = f.logits.get(ids.len() - 1).unwrap().to_vec1().unwrap();
                let next = ckptcheck::compare::metrics::argmax(&row) as u32;
                full.push(next);
                ids.push(next);
            }
            assert_eq!(cached, full, "{name}: cached and recomputed generation differ");
        }
    }
}

/// Llama-3.1-style rope scaling (`rope_type: llama3`), against transformers on the same weights
/// with the scaled config (original context 64, so the golden prompts are affected).
#[test]
fn llama3_rope_scaling_matches_transformers() {
    check_variant("llama-rope-llama3");
}

/// DoRA with rsLoRA (peft `use_dora=True, use_rslora=True`) applied on the fly against the
/// unmerged PeftModel: magnitude / row norm of W + s·B·A, s = alpha / sqrt(r).
#[test]
fn dora_premerge_matches_peft() {
    let zoo = common::zoo().join("models");
    let base = HfDir::open(&zoo.join("llama-instruct")).unwrap();
    let adapter = ckptcheck::format::lora::Adapter::open(&zoo.join("llama-dora-adapter")).unwrap();
    assert!(adapter.config.use_dora && adapter.config.use_rslora);
    assert!(adapter.modules.iter().all(|m| m.magnitude.is_some() && (m.scale - 8.0 / 2.0).abs() < 1e-12));
    let m = premerge(&base, &adapter);
    check_model("llama-dora-premerge", &m);
}

/// Linear, dynamic-NTK and YaRN rope scaling against transformers on the same weights (configs set
/// so the golden prompts are affected; see testdata/zoo/rope_variants.py).
#[test]
fn rope_scalings_match_transformers() {
    let plain = goldens("llama-instruct");
    for name in ["llama-rope-linear", "llama-rope-dynamic", "llama-rope-yarn", "llama-rope-llama3"] {
        // The scaling must matter on these prompts, or the test would prove nothing.
        let effect = goldens(name)
            .iter()
            .zip(&plain)
            .map(|(a, b)| a.logits.iter().zip(&b.logits).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max))
            .fold(0f32, f32::max);
        assert!(effect > 0.5, "{name}: scaling moves logits by only {effect}");
        check_variant(name);
    }
}

fn vals(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max)
}

/// The native kernels (stored weights, blocked attention) and candle's ops compute the same
/// logits on every attention variant the zoo has (GQA, sliding windows, softcaps, local rope,
/// q/k norms), in a batch of sequences of different lengths, and generate the same tokens.
#[test]
fn native_and_candle_attention_agree() {
    for name in ["llama-instruct", "mistral", "gemma2", "gemma3", "qwen3", "qwen2-instruct", "phi3-partial", "granite-mini"] {
        let dir = HfDir::open(&common::zoo().join("models").join(name)).unwrap();
        let native = model::load_hf(&dir, &Device::Cpu).unwrap();
        let candle = model::load_hf(&dir, &Device::Cpu).unwrap().with_candle_attention();
        let gs = goldens(name);
        let seqs: Vec<&[u32]> = gs.iter().map(|g| g.ids.as_slice()).take(3).collect();
        let run = |m: &model::Model| {
            let b = m.begin(&seqs, None).unwrap();
            vals(&m.logits(&m.finish(b, None).unwrap()).unwrap())
        };
        let (a, b) = (run(&native), run(&candle));
        let scale = a.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let w = worst(&a, &b);
        assert!(w <= 1e-4 * scale, "{name}: native vs candle attention differ by {w}");
        let gen = |m: &model::Model| m.generate_batch(&seqs, 8, &[]).unwrap();
        assert_eq!(gen(&native), gen(&candle), "{name}: generation differs between kernels");
    }
}

/// A batch of sequences gives each sequence exactly the logits it gets alone: attention never
/// crosses from one sequence into another.
#[test]
fn batched_sequences_match_each_alone() {
    let dir = HfDir::open(&common::zoo().join("models").join("gemma2")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    let gs = goldens("gemma2");
    let seqs: Vec<&[u32]> = gs.iter().map(|g| g.ids.as_slice()).collect();
    assert!(seqs.len() >= 2);
    let b = m.begin(&seqs, None).unwrap();
    let segments = b.segments().to_vec();
    let h = m.finish(b, None).unwrap();
    for (s, g) in seqs.iter().zip(&segments) {
        let batched = vals(&m.logits(&h.narrow(0, g.start, g.len).unwrap()).unwrap());
        let alone = vals(&m.forward(s, false).unwrap().logits);
        assert!(worst(&batched, &alone) < 1e-4, "batched and alone differ");
    }
}

/// Far past the old 16 k cap and the zoo model's 256-position context: memory is linear in
/// length (blocked attention), the logits stay finite, and causality holds (the first positions
/// equal a short run's).
#[test]
fn long_sequence_runs_in_linear_memory() {
    let dir = HfDir::open(&common::zoo().join("models").join("llama-instruct")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    let n = 8192;
    let ids: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 3) % 1000 + 4).collect();
    let b = m.begin(&[&ids], None).unwrap();
    let h = m.finish(b, None).unwrap();
    let last = vals(&m.logits(&h.narrow(0, n - 4, 4).unwrap()).unwrap());
    assert!(last.iter().all(|x| x.is_finite()), "non-finite logits at position {n}");
    let head = vals(&m.logits(&h.narrow(0, 0, 200).unwrap()).unwrap());
    let short = vals(&m.forward(&ids[..200], false).unwrap().logits);
    assert!(worst(&head, &short) < 1e-4, "the first 200 positions changed with the sequence's length");
}
