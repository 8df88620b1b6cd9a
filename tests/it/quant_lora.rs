//! A LoRA adapter applied on the fly over a quantized base: the zoo's peft adapter (trained on
//! llama-instruct) over the zoo's GPTQ, AWQ and compressed-tensors quantizations of llama-instruct
//! and over its Q4_0 GGUF running on the quantized blocks. `LoraWeights` wraps the base source's own
//! linear op, so `y = base_q(x) + s·(x·Aᵀ)·Bᵀ` with `base_q` the base as the engine runs it.
//!
//! Self-contained (no `common`): only the zoo and the binary.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use ckptcheck::format::gguf::GgufFile;
use ckptcheck::format::hf::HfDir;
use ckptcheck::format::lora::Adapter;
use ckptcheck::model::gguf_weights::GgufWeights;
use ckptcheck::model::quant::QuantWeights;
use ckptcheck::model::weights::{DenseLinear, HfWeights, LinearOp, LoraWeights, WeightSource};
use ckptcheck::model::{self, Model};

const QUANTIZED: [&str; 3] = ["llama-gptq-w4g128", "llama-awq-w4g128", "llama-ct-w4a16"];

/// Tokens per test input.
const T: usize = 3;

fn zoo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo")
}

fn adapter() -> Adapter {
    Adapter::open(&zoo().join("models/llama-lora-adapter")).unwrap()
}

fn vals(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// A deterministic `[T, inp]` input in [-1, 1].
fn input(inp: usize) -> Tensor {
    let v: Vec<f32> = (0..T * inp).map(|i| ((i as f32) * 0.37 + 0.11).sin()).collect();
    Tensor::from_vec(v, (T, inp), &Device::Cpu).unwrap()
}

fn max_abs(v: impl IntoIterator<Item = f64>) -> f64 {
    v.into_iter().fold(0f64, |m, x| m.max(x.abs()))
}

/// `W + s·B·A` in f64, `[out, in]` row-major.
fn merged_f64(w: &[f32], out: usize, inp: usize, a: &[f32], b: &[f32], r: usize, s: f64) -> Vec<f64> {
    let mut m = vec![0f64; out * inp];
    for o in 0..out {
        for i in 0..inp {
            let ba: f64 = (0..r).map(|k| b[o * r + k] as f64 * a[k * inp + i] as f64).sum();
            m[o * inp + i] = w[o * inp + i] as f64 + s * ba;
        }
    }
    m
}

/// `x·Mᵀ` in f64.
fn apply_f64(x: &[f32], m: &[f64], out: usize, inp: usize) -> Vec<f64> {
    let mut y = vec![0f64; T * out];
    for t in 0..T {
        for o in 0..out {
            y[t * out + o] = (0..inp).map(|i| x[t * inp + i] as f64 * m[o * inp + i]).sum();
        }
    }
    y
}

/// For every adapted module of every quantized base: the on-the-fly LoRA linear equals
/// `x·(W_q + s·B·A)ᵀ` computed in f64 from the scheme's dequantized `W_q`, the adapter changes the
/// output, and `dense_weight` is the merged `W_q + s·B·A`. Tolerances: f32 sums over ≤ 512 terms
/// against f64; measured max |Δy| ≤ 9.3e-7 and |ΔW| ≤ 5.5e-8 of scale, bounds 5–10× that.
#[test]
fn lora_over_each_quantized_base_is_base_q_plus_s_b_a() {
    let adapter = adapter();
    let ad = HfWeights { dir: &adapter.dir };
    assert_eq!(adapter.modules.len(), 21, "7 target modules × 3 layers");
    for dir in QUANTIZED {
        let hf = HfDir::open(&zoo().join("models").join(dir)).unwrap();
        let q = QuantWeights::from_config(&hf).unwrap().unwrap();
        let lora = LoraWeights { base: &q, adapter: &adapter };
        let (mut worst_y, mut worst_w) = (0f64, 0f64);
        for m in &adapter.modules {
            assert!(lora.has_linear(&m.base), "{dir}: {}", m.base);
            let (w, out, inp) = q.dequantize(&m.base).unwrap().unwrap_or_else(|| panic!("{dir}: {} is not quantized", m.base));
            let a = ad.tensor(&m.a, DType::F32, &Device::Cpu).unwrap();
            let r = a.dims2().unwrap().0;
            let (a, b) = (vals(&a), vals(&ad.tensor(&m.b, DType::F32, &Device::Cpu).unwrap()));
            let want_w = merged_f64(&w, out, inp, &a, &b, r, m.scale);

            let x = input(inp);
            let got = vals(&lora.linear(&m.base, false, DType::F32, &Device::Cpu).unwrap().forward(&x).unwrap());
            let want = apply_f64(&vals(&x), &want_w, out, inp);
            let scale = max_abs(want.iter().copied());
            let d = max_abs(got.iter().zip(&want).map(|(g, w)| *g as f64 - w));
            assert!(d <= 5e-6 * scale, "{dir} {}: max |Δy| {d:.2e} of {scale:.2e}", m.base);
            worst_y = worst_y.max(d / scale);

            let base_only = vals(&q.linear(&m.base, false, DType::F32, &Device::Cpu).unwrap().forward(&x).unwrap());
            let moved = max_abs(got.iter().zip(&base_only).map(|(g, b)| (g - b) as f64));
            assert!(moved > 1e-3 * scale, "{dir} {}: the adapter moved the output by only {moved:.2e}", m.base);

            let merged = vals(&lora.dense_weight(&m.base, DType::F32, &Device::Cpu).unwrap());
            let wscale = max_abs(want_w.iter().copied());
            let dw = max_abs(merged.iter().zip(&want_w).map(|(g, w)| *g as f64 - w));
            assert!(dw <= 5e-7 * wscale, "{dir} {}: merged weight max |ΔW| {dw:.2e} of {wscale:.2e}", m.base);
            worst_w = worst_w.max(dw / wscale);
        }
        eprintln!("{dir}: max |Δy| {worst_y:.1e}, max |ΔW| {worst_w:.1e} of scale");
    }
}

/// A source whose every linear is the merged dense weight of `inner` (merge, then run).
struct Merged<'a>(&'a dyn WeightSource);

impl WeightSource for Merged<'_> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> ckptcheck::error::Result<Tensor> {
        self.0.tensor(name, dtype, device)
    }
    fn has(&self, name: &str) -> bool {
        self.0.has(name)
    }
    fn linear(&self, prefix: &str, bias: bool, dtype: DType, device: &Device) -> ckptcheck::error::Result<Box<dyn LinearOp>> {
        let bias = if bias { Some(self.0.tensor(&format!("{prefix}.bias"), dtype, device)?) } else { None };
        Ok(Box::new(DenseLinear { weight: self.0.dense_weight(prefix, dtype, device)?, bias }))
    }
}

fn logits(m: &Model, ids: &[u32]) -> Vec<f32> {
    vals(&m.forward(ids, false).unwrap().logits)
}

/// The whole model: quantized base + adapter on the fly equals the same adapter merged into the
/// dequantized base (as PEFT's unmerged forward equals its merge), to f32 summation order
/// (measured ≤ 9.1e-7 of the logit scale, bound 5e-6).
#[test]
fn unmerged_lora_over_quantized_base_equals_its_merge() {
    let adapter = adapter();
    let ids = [1u32, 17, 42, 99, 250, 3, 7];
    for dir in QUANTIZED {
        let hf = HfDir::open(&zoo().join("models").join(dir)).unwrap();
        let q = QuantWeights::from_config(&hf).unwrap().unwrap();
        let lora = LoraWeights { base: &q, adapter: &adapter };
        let on_the_fly = logits(&model::load_with(&hf, &lora, &Device::Cpu, DType::F32).unwrap(), &ids);
        let merged = logits(&model::load_with(&hf, &Merged(&lora), &Device::Cpu, DType::F32).unwrap(), &ids);
        let base = logits(&model::load_with(&hf, &q, &Device::Cpu, DType::F32).unwrap(), &ids);
        let scale = max_abs(merged.iter().map(|&x| x as f64)).max(1.0);
        let d = max_abs(on_the_fly.iter().zip(&merged).map(|(a, b)| (a - b) as f64));
        let moved = max_abs(on_the_fly.iter().zip(&base).map(|(a, b)| (a - b) as f64));
        eprintln!("{dir}: on the fly vs merged max |Δlogit| {:.1e} of scale; adapter moved logits by {moved:.2}", d / scale);
        assert!(d <= 5e-6 * scale, "{dir}: max |Δlogit| {d} (scale {scale})");
        assert!(moved > 1e-2 * scale, "{dir}: the adapter changed the logits by only {moved}");
    }
}

/// Over a GGUF whose linears run on Q4_0 blocks, the LoRA linear is exactly the base's own
/// quantized op plus the low-rank update (the blocks are not densified), and `dense_weight`
/// (dequantized) serves the shape check.
#[test]
fn lora_over_gguf_wraps_its_quantized_matmul() {
    let adapter = adapter();
    let ad = HfWeights { dir: &adapter.dir };
    let file = GgufFile::open(&zoo().join("gguf/llama-instruct-q4_0.gguf")).unwrap();
    let g = GgufWeights::new(&file).unwrap().with_quantized_matmul(true);
    let lora = LoraWeights { base: &g, adapter: &adapter };
    let mut differs_from_dense = 0;
    for m in &adapter.modules {
        let w = g.dense_weight(&m.base, DType::F32, &Device::Cpu).unwrap();
        let inp = w.dims2().unwrap().1;
        let x = input(inp);
        let got = vals(&lora.linear(&m.base, false, DType::F32, &Device::Cpu).unwrap().forward(&x).unwrap());
        let a = ad.tensor(&m.a, DType::F32, &Device::Cpu).unwrap();
        let b = ad.tensor(&m.b, DType::F32, &Device::Cpu).unwrap();
        let update = (x.matmul(&a.t().unwrap()).unwrap().matmul(&b.t().unwrap()).unwrap() * m.scale).unwrap();
        let base_q = g.linear(&m.base, false, DType::F32, &Device::Cpu).unwrap().forward(&x).unwrap();
        let want = vals(&(base_q + &update).unwrap());
        assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{}: not base_q(x) + s·B·A·x", m.base);
        let dense = vals(&(x.matmul(&w.t().unwrap()).unwrap() + &update).unwrap());
        differs_from_dense += usize::from(got != dense);
    }
    // candle's Q4_0 matmul quantizes the activations to Q8_0, so it never equals the dense
    // product: had the wrapper densified the base, these would be equal.
    assert_eq!(differs_from_dense, adapter.modules.len());
}

/// `compare` runs `QUANTIZED+ADAPTER` (the base chosen as `compare QUANTIZED` chooses it) against
/// peft's merge into the dense base: only the base's 4-bit quantization error remains (measured
/// mean KL 1.3e-5 GPTQ, 4.6e-4 AWQ, 3.4e-5 compressed-tensors; bound 0.01 as for the quantized
/// bases alone in tests/quant.rs), and the adapter is applied (KL against the quantized base alone
/// is not zero).
#[test]
fn compare_quantized_base_plus_adapter() {
    let z = zoo();
    let run = |a: &str, b: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckptcheck"))
            .args(["compare", "--json", "--prompts"])
            .arg(z.join("prompts.jsonl"))
            .args([a, b])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{a} vs {b}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["summary"]["kl"]["mean"].as_f64().unwrap()
    };
    let models = z.join("models");
    let merged = models.join("llama-lora-merged");
    let adapter = models.join("llama-lora-adapter");
    for dir in QUANTIZED {
        let base = models.join(dir);
        let pre = format!("{}+{}", base.display(), adapter.display());
        let kl = run(merged.to_str().unwrap(), &pre);
        eprintln!("{dir}+adapter vs peft merge: KL mean {kl:.2e}");
        assert!(kl > 0.0 && kl < 0.01, "{dir}: KL mean {kl}");
        let kl = run(base.to_str().unwrap(), &pre);
        assert!(kl > 0.0, "{dir}: the adapter changed nothing");
    }
}
