//! Mixture-of-experts models (Mixtral, Qwen3-MoE) through the one decoder: transformers' goldens
//! for the HF checkpoints (bf16, computed in f32), llama.cpp's for the GGUFs its converter and
//! quantizer made, compare between the two, and lint on good and broken ones
//! (testdata/zoo/moe.py).

use candle_core::{DType, Device};
use ckptcheck::format::gguf::GgufFile;
use ckptcheck::format::hf::HfDir;
use ckptcheck::model;

use crate::common::{self, ckptcheck};
use crate::engine;

/// Routing: softmax → top-2 → renormalised (Mixtral), one layer of each expert size.
#[test]
fn mixtral_matches_transformers() {
    engine::check_variant("mixtral");
}

/// Qwen3-MoE with `norm_topk_prob: true` and q/k norms, every layer sparse.
#[test]
fn qwen3_moe_matches_transformers() {
    engine::check_variant("qwen3-moe");
}

/// The other Qwen3-MoE branches: top-k weights not renormalised (`norm_topk_prob: false`) and a
/// dense MLP of `intermediate_size` in layer 0 (`mlp_only_layers: [0]`).
#[test]
fn qwen3_moe_dense_layer_and_unnormalised_weights_match_transformers() {
    let dir = HfDir::open(&common::zoo_path("models/qwen3-moe-mixed")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    let moe = m.spec.moe.as_ref().unwrap();
    assert_eq!((moe.sparse_layers.as_slice(), moe.norm_topk), (&[false, true][..], false));
    engine::check_variant("qwen3-moe-mixed");
}

/// Qwen2-MoE: qkv bias, top-k weights not renormalised, and the shared expert on every token
/// gated by `sigmoid(shared_expert_gate · x)`.
#[test]
fn qwen2_moe_shared_expert_matches_transformers() {
    let dir = HfDir::open(&common::zoo_path("models/qwen2-moe")).unwrap();
    let m = model::load_hf(&dir, &Device::Cpu).unwrap();
    let moe = m.spec.moe.as_ref().unwrap();
    assert_eq!((moe.shared, moe.norm_topk, m.spec.qkv_bias), (Some(64), false, true));
    engine::check_variant("qwen2-moe");
}

/// The native kernels and candle's ops (other dtypes and devices) route and compute the same.
#[test]
fn moe_native_and_candle_paths_agree() {
    for name in ["mixtral", "qwen3-moe", "qwen3-moe-mixed", "qwen2-moe"] {
        let dir = HfDir::open(&common::zoo_path(&format!("models/{name}"))).unwrap();
        let native = model::load_hf(&dir, &Device::Cpu).unwrap();
        let candle = model::load_hf(&dir, &Device::Cpu).unwrap().with_candle_attention();
        let gs = engine::goldens(name);
        let seqs: Vec<&[u32]> = gs.iter().map(|g| g.ids.as_slice()).collect();
        let run = |m: &model::Model| {
            let b = m.begin(&seqs, None).unwrap();
            m.logits(&m.finish(b, None).unwrap()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (run(&native), run(&candle));
        let w = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(w <= 1e-4, "{name}: native vs candle differ by {w}");
        // The batch of four gives each sequence its own logits (routing is per row).
        let alone = gs[0].logits.len();
        let w0 = a[..alone].iter().zip(&gs[0].logits).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(w0 <= 1e-4, "{name}: batched row 0 vs golden {w0}");
        let gen = |m: &model::Model| m.generate_batch(&seqs, 6, &[]).unwrap();
        assert_eq!(gen(&native), gen(&candle), "{name}: generation differs between kernels");
    }
}

/// The GGUFs llama.cpp's converter (F16) and llama-quantize (Q8_0) made, run with the
/// architecture from their own metadata (`llama` + experts = Mixtral, `qwen3moe`; experts as
/// slices of the 3-D `ffn_*_exps` tensors), against llama.cpp's logits on the same ids
/// (testdata/zoo/llama_logits.c). Random-init models: logits ≲ 1.3, so the scale is ~1 and the
/// tolerance nearly absolute. Measured max |Δlogit| of the engine vs llama.cpp (2026-12-02): F16
/// ≤ 4.4e-4 (llama.cpp vs transformers is the same, 4.4e-4), Q8_0 ≤ 6.6e-3 (llama.cpp quantizes
/// activations to Q8_0), except one position of Mixtral Q8_0 prompt 1 at 0.035: there llama.cpp vs transformers is
/// 0.0345 as well while every neighbour is ~0.007 — llama.cpp's quantized activations moved one
/// token's router over the top-2 boundary (the zoo's smallest top-2 margin is 3.4e-4 of
/// probability, measured_moe.json). So: every position within `tol`, but one position per file
/// may be a routing flip, bounded by `flip`.
///
/// `qwen2moe` (untied: llama.cpp's graph requires `output.weight`; moe.py `qwen2moe-gguf`): top-k
/// weights not renormalised, plus the shared expert (`ffn_{gate,up,down}_shexp`) gated by
/// `sigmoid(ffn_gate_inp_shexp · x)`. Measured (2026-12-07): llama.cpp vs transformers 3.8e-4;
/// dropping the shared expert moves transformers' logits by ≥ 0.034 on every prompt, 34× `tol`.
#[test]
fn moe_ggufs_match_llama_cpp() {
    for (variant, file, tol, flip, norm_topk, shared) in [
        ("gguf-mixtral-f16", "mixtral-f16.gguf", 1e-3f32, 1e-3f32, true, None),
        ("gguf-mixtral-q8_0", "mixtral-q8_0.gguf", 0.02, 0.06, true, None),
        ("gguf-qwen3-moe-f16", "qwen3-moe-f16.gguf", 1e-3, 1e-3, true, None),
        ("gguf-qwen3-moe-q8_0", "qwen3-moe-q8_0.gguf", 0.02, 0.06, true, None),
        ("gguf-qwen2-moe-f16", "qwen2-moe-f16.gguf", 1e-3, 1e-3, false, Some(64)),
    ] {
        let g = GgufFile::open(&common::zoo_path(&format!("gguf/{file}"))).unwrap();
        let m = model::load_gguf(&g, &Device::Cpu, DType::F32).unwrap();
        let moe = m.spec.moe.as_ref().unwrap_or_else(|| panic!("{file}: loaded without experts"));
        assert_eq!((moe.experts, moe.top_k, moe.norm_topk, moe.shared), (4, 2, norm_topk, shared), "{file}");
        let mut over = 0;
        for (pi, g) in engine::goldens(variant).iter().enumerate() {
            let got: Vec<f32> = m.forward(&g.ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(got.len(), g.logits.len(), "{variant}");
            let scale = g.logits.iter().fold(1f32, |m, x| m.max(x.abs()));
            let per_pos: Vec<f32> = got
                .chunks(g.vocab)
                .zip(g.logits.chunks(g.vocab))
                .map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max))
                .collect();
            let d = per_pos.iter().copied().fold(0f32, f32::max);
            eprintln!("{variant} prompt {pi}: max |Δlogit| {d:.3e} (scale {scale:.1})");
            assert!(d <= flip * scale, "{variant} prompt {pi}: max |Δlogit| {d} > {flip} × {scale}");
            over += per_pos.iter().filter(|&&x| x > tol * scale).count();
        }
        assert!(over <= 1, "{variant}: {over} positions beyond {tol} (one routing flip allowed)");
    }
}

/// The F16 GGUF's experts are the HF experts: bf16 → F16 is exact for these weights, so the
/// engine on the GGUF matches transformers on the HF checkpoint as tightly as on the HF files
/// (measured ≤ 3.6e-7): a wrong expert slice or router mapping would be off by far more.
#[test]
fn moe_f16_gguf_matches_transformers() {
    for name in ["mixtral", "qwen3-moe"] {
        let g = GgufFile::open(&common::zoo_path(&format!("gguf/{name}-f16.gguf"))).unwrap();
        let m = model::load_gguf(&g, &Device::Cpu, DType::F32).unwrap();
        for (pi, g) in engine::goldens(name).iter().enumerate() {
            let got: Vec<f32> = m.forward(&g.ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            let d = got.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            eprintln!("{name}-f16.gguf vs transformers prompt {pi}: max |Δlogit| {d:.3e}");
            assert!(d <= 1e-4, "{name} prompt {pi}: {d}");
        }
    }
}

/// Ids of `lint --json ARGS`'s warnings and errors. Info findings are left out, as in zoo.rs:
/// the random-init qwen2-moe has all-zero q/k/v biases (transformers initialises biases to 0),
/// which lint notes as `values.all-zero` at info severity.
fn lint_ids(args: &[&str]) -> Vec<String> {
    let mut a = vec!["lint", "--json"];
    a.extend_from_slice(args);
    let r = ckptcheck(&a);
    assert_ne!(r.code, 2, "{args:?}: {}", r.stderr);
    let v = r.json();
    v["findings"].as_array().unwrap().iter().filter(|f| f["severity"] != "info").map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

/// The good MoE checkpoints lint clean, alone and (GGUF) against their source.
#[test]
fn moe_models_lint_clean() {
    for name in ["mixtral", "qwen3-moe", "qwen3-moe-mixed", "qwen2-moe"] {
        let p = common::zoo_path(&format!("models/{name}"));
        assert_eq!(lint_ids(&[p.to_str().unwrap()]), Vec::<String>::new(), "{name}");
    }
    for name in ["mixtral", "qwen3-moe"] {
        let src = common::zoo_path(&format!("models/{name}"));
        for t in ["f16", "q8_0"] {
            let g = common::zoo_path(&format!("gguf/{name}-{t}.gguf"));
            // The zoo's tokenizer needed the converter's gpt-2 pre-tokenizer workaround (README):
            // that finding is expected against the source, nothing else.
            let ids = lint_ids(&["--source", src.to_str().unwrap(), g.to_str().unwrap()]);
            assert!(ids.iter().all(|i| i == "gguf.pre-tokenizer-differs"), "{name}-{t}: {ids:?}");
            assert_eq!(lint_ids(&[g.to_str().unwrap()]), Vec::<String>::new(), "{name}-{t} alone");
        }
    }
}

/// `compare HF GGUF`: the F16 and Q8_0 conversions of each MoE model pass against the source.
#[test]
fn compare_moe_hf_against_its_ggufs() {
    let zoo = common::zoo();
    let prompts = zoo.join("prompts.jsonl");
    for name in ["mixtral", "qwen3-moe"] {
        for t in ["f16", "q8_0"] {
            let r = ckptcheck(&[
                "compare",
                "--json",
                "--prompts",
                prompts.to_str().unwrap(),
                zoo.join(format!("models/{name}")).to_str().unwrap(),
                zoo.join(format!("gguf/{name}-{t}.gguf")).to_str().unwrap(),
            ]);
            assert_eq!(r.code, 0, "{name}-{t}: {}\n{}", r.stdout, r.stderr);
            let v = r.json();
            let kl = v["summary"]["kl"]["mean"].as_f64().unwrap();
            eprintln!("compare {name} vs {name}-{t}.gguf: KL mean {kl:.3e}");
            assert!(kl < 1e-4, "{name}-{t}: KL mean {kl}");
        }
    }
}

/// A copy of a zoo model directory whose config.json is edited by `edit`.
fn edited_copy(name: &str, edit: impl Fn(&mut serde_json::Value)) -> tempfile::TempDir {
    let d = common::tmp();
    let src = common::zoo_path(&format!("models/{name}"));
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), d.path().join(e.file_name())).unwrap();
    }
    let p = d.path().join("config.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    d
}

/// A config that declares 8 experts over weights holding 4: lint names the count (and the
/// router's shape), and the engine refuses to load it with the same reason.
#[test]
fn expert_count_config_vs_weights() {
    let d = edited_copy("mixtral", |v| v["num_local_experts"] = 8.into());
    let ids = lint_ids(&[d.path().to_str().unwrap()]);
    for want in ["weights.expert-count-mismatch", "weights.shape-mismatch", "weights.missing-tensor"] {
        assert!(ids.iter().any(|i| i == want), "{want} not in {ids:?}");
    }
    let e = model::load_hf(&HfDir::open(d.path()).unwrap(), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("8 experts") && e.contains("stores 4"), "{e}");
    // More experts per token than experts: refused as a config error, never a panic.
    let d = edited_copy("qwen3-moe", |v| v["num_experts_per_tok"] = 5.into());
    let r = ckptcheck(&["lint", "--json", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.finding("config.unsupported")["message"].as_str().unwrap().contains("num_experts_per_tok"));
}

/// The MoE GGUF checks on copies of a real conversion with one metadata value rewritten in
/// place (as gguf-py's gguf_set_metadata.py does): experts per token against the source, and
/// against the file's own expert count; an expert count the tensors do not hold.
#[test]
fn gguf_expert_metadata_checks() {
    let src = common::zoo_path("models/mixtral");
    let orig = std::fs::read(common::zoo_path("gguf/mixtral-f16.gguf")).unwrap();
    let d = common::tmp();
    let patched = |key: &str, value: u32| {
        let mut b = orig.clone();
        let k = key.as_bytes();
        let at = b.windows(k.len()).position(|w| w == k).unwrap() + k.len();
        assert_eq!(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()), 4, "{key}: a u32 value"); // GGUF type 4 = u32
        b[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
        let p = d.path().join(format!("{key}-{value}.gguf"));
        std::fs::write(&p, b).unwrap();
        p
    };
    let used3 = patched("llama.expert_used_count", 3);
    let ids = lint_ids(&["--source", src.to_str().unwrap(), used3.to_str().unwrap()]);
    assert!(ids.contains(&"gguf.experts-differ".to_string()), "{ids:?}");
    assert_eq!(lint_ids(&[used3.to_str().unwrap()]), Vec::<String>::new(), "3 of 4 is consistent alone");
    let used9 = patched("llama.expert_used_count", 9);
    assert_eq!(lint_ids(&[used9.to_str().unwrap()]), vec!["gguf.experts-inconsistent".to_string()]);
    let count8 = patched("llama.expert_count", 8);
    let r = ckptcheck(&["lint", "--json", count8.to_str().unwrap()]);
    // Every router and expert tensor of both blocks (2 × 4), grouped under one id.
    assert!(r.finding_ids().iter().all(|i| i == "gguf.experts-inconsistent"), "{:?}", r.finding_ids());
    assert!(r.finding("gguf.experts-inconsistent")["message"].as_str().unwrap().contains("holds 4 experts but `llama.expert_count` is 8"));
    let g = GgufFile::open(&count8).unwrap();
    let e = model::load_gguf(&g, &Device::Cpu, DType::F32).err().unwrap().to_string();
    assert!(e.contains("ffn_gate_exps") && e.contains("holds 4 experts"), "{e}");
}

/// `norm_topk_prob: false` in a Qwen3-MoE source: llama.cpp's qwen3moe graph renormalises
/// anyway, which lint --source says (and the qwen3-moe source itself, `true`, does not get).
#[test]
fn qwen3_moe_unnormalised_source_against_llama_cpp() {
    let d = edited_copy("qwen3-moe", |v| v["norm_topk_prob"] = false.into());
    let g = common::zoo_path("gguf/qwen3-moe-f16.gguf");
    let ids = lint_ids(&["--source", d.path().to_str().unwrap(), g.to_str().unwrap()]);
    assert!(ids.contains(&"gguf.moe-norm-differs".to_string()), "{ids:?}");
}

/// Router agreement in compare's layer trace: every sparse layer of the F16 conversion routes
/// every position as the source does (bf16 → F16 is exact; the smallest top-2 margin, 3.4e-4, is
/// far above f32 noise); Q8_0 still mostly does; a dense model's trace has no such column.
#[test]
fn compare_layer_trace_reports_router_agreement() {
    let zoo = common::zoo();
    let prompts = zoo.join("prompts.jsonl");
    let trace = |a: &std::path::Path, b: &std::path::Path| {
        let r =
            ckptcheck(&["compare", "--json", "--layers", "--prompts", prompts.to_str().unwrap(), a.to_str().unwrap(), b.to_str().unwrap()]);
        assert_ne!(r.code, 2, "{}", r.stderr);
        r.json()["layers"].as_array().unwrap().clone()
    };
    let agreement = |layers: &[serde_json::Value]| -> Vec<Option<f64>> { layers.iter().map(|l| l["router_agreement"].as_f64()).collect() };
    let src = zoo.join("models/mixtral");
    let f16 = agreement(&trace(&src, &zoo.join("gguf/mixtral-f16.gguf")));
    assert_eq!(f16, vec![None, Some(1.0), Some(1.0)], "embeddings, layer 0, layer 1");
    let q8 = agreement(&trace(&src, &zoo.join("gguf/mixtral-q8_0.gguf")));
    eprintln!("mixtral vs Q8_0 router agreement per layer: {q8:?}");
    assert!(q8[1..].iter().all(|a| a.is_some_and(|a| (0.9..=1.0).contains(&a))), "{q8:?}");
    let llama = zoo.join("models/llama-instruct");
    assert!(agreement(&trace(&llama, &llama)).iter().all(Option::is_none));
    // The Qwen2-MoE GGUF (shared experts) runs through compare's layer trace too.
    let q2 = zoo.join("gguf/qwen2-moe-f16.gguf");
    assert_eq!(agreement(&trace(&q2, &q2)), vec![None, Some(1.0), Some(1.0)], "qwen2-moe-f16.gguf against itself");
}

/// llama.cpp's qwen2moe loader needs `output.weight` (no tied-embedding fallback): a tied-head
/// qwen2moe GGUF is refused by llama.cpp, which lint says. Made from the committed tied
/// qwen3-moe F16 conversion with its architecture renamed (`qwen3moe` → `qwen2moe`, same length,
/// every key and the `general.architecture` value); the qwen3moe original has no such finding.
#[test]
fn tied_qwen2moe_gguf_is_refused_by_llama_cpp_and_lint_says_so() {
    let orig = std::fs::read(common::zoo_path("gguf/qwen3-moe-f16.gguf")).unwrap();
    let (from, to) = (b"qwen3moe", b"qwen2moe");
    let mut b = orig.clone();
    let mut n = 0;
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + from.len()].copy_from_slice(to);
            n += 1;
            i += from.len();
        } else {
            i += 1;
        }
    }
    assert!(n > 10, "renamed {n} occurrences");
    let d = common::tmp();
    let p = d.path().join("tied-qwen2moe.gguf");
    std::fs::write(&p, b).unwrap();
    assert!(lint_ids(&[p.to_str().unwrap()]).contains(&"gguf.output-required".to_string()));
    let g = common::zoo_path("gguf/qwen3-moe-f16.gguf");
    assert!(!lint_ids(&[g.to_str().unwrap()]).contains(&"gguf.output-required".to_string()));
}

/// Wraps a weight source so every linear op counts the rows it multiplies, per prefix.
struct Counting<'a> {
    inner: ckptcheck::model::weights::HfWeights<'a>,
    rows: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
}

struct CountingOp {
    inner: Box<dyn ckptcheck::model::weights::LinearOp>,
    name: String,
    rows: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, usize>>>,
}

impl ckptcheck::model::weights::LinearOp for CountingOp {
    fn forward(&self, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        *self.rows.lock().unwrap().entry(self.name.clone()).or_default() += x.dim(0)?;
        self.inner.forward(x)
    }
}

impl ckptcheck::model::weights::WeightSource for Counting<'_> {
    fn tensor(&self, name: &str, dtype: DType, device: &Device) -> ckptcheck::error::Result<candle_core::Tensor> {
        self.inner.tensor(name, dtype, device)
    }
    fn has(&self, name: &str) -> bool {
        self.inner.has(name)
    }
    fn linear(
        &self,
        prefix: &str,
        bias: bool,
        dtype: DType,
        device: &Device,
    ) -> ckptcheck::error::Result<Box<dyn ckptcheck::model::weights::LinearOp>> {
        let inner = self.inner.linear(prefix, bias, dtype, device)?;
        Ok(Box::new(CountingOp { inner, name: prefix.to_string(), rows: self.rows.clone() }))
    }
}

/// Each expert runs only on the rows routed to it: over a sequence of T tokens, the router of a
/// sparse layer sees T rows and its experts T × top_k in all (not T × experts), while the logits
/// stay the golden's.
#[test]
fn experts_run_only_on_their_rows() {
    let dir = HfDir::open(&common::zoo_path("models/mixtral")).unwrap();
    let rows = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let w = Counting { inner: ckptcheck::model::weights::HfWeights { dir: &dir }, rows: rows.clone() };
    let m = model::load_with(&dir, &w, &Device::Cpu, DType::F32).unwrap();
    let g = &engine::goldens("mixtral")[0];
    let got: Vec<f32> = m.forward(&g.ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
    let d = got.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(d <= 1e-4, "{d}");
    let t = g.ids.len();
    let seen = rows.lock().unwrap();
    for layer in 0..2 {
        assert_eq!(seen[&format!("model.layers.{layer}.block_sparse_moe.gate")], t, "layer {layer} router");
        for w in ["w1", "w2", "w3"] {
            let n: usize =
                (0..4).map(|e| seen.get(&format!("model.layers.{layer}.block_sparse_moe.experts.{e}.{w}")).copied().unwrap_or(0)).sum();
            assert_eq!(n, t * 2, "layer {layer} {w}: rows through the experts");
        }
    }
}

/// The other two ways a GGUF expert is built: quantized blocks kept for candle's `QMatMul` (an
/// expert's slice of the 3-D Q8_0 tensor as its own QTensor), and dense dequantized copies for a
/// bf16 compute dtype (`WeightSource::tensor` on an expert slice). Both against llama.cpp's
/// logits. Measured (2026-12-02): QMatMul 5.5e-3, bf16 compute 8.8e-3; bounds about 3× that.
#[test]
fn moe_gguf_quantized_matmul_and_dense_copies() {
    let g = GgufFile::open(&common::zoo_path("gguf/qwen3-moe-q8_0.gguf")).unwrap();
    let golden = engine::goldens("gguf-qwen3-moe-q8_0");
    for (what, m, tol) in [
        ("QMatMul", model::load_gguf_with(&g, &Device::Cpu, DType::F32, model::GgufMatmul::Quantized).unwrap(), 0.02f32),
        ("bf16 dense", model::load_gguf(&g, &Device::Cpu, DType::BF16).unwrap(), 0.03),
    ] {
        let mut worst = 0f32;
        for g in &golden {
            let got: Vec<f32> = m.forward(&g.ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            worst = got.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(worst, f32::max);
        }
        eprintln!("qwen3-moe-q8_0.gguf {what}: max |Δlogit| vs llama.cpp {worst:.3e}");
        assert!(worst <= tol, "{what}: {worst}");
    }
}

/// `inspect` names the MoE layout (HF: as the engine reads the config; GGUF: its metadata).
#[test]
fn inspect_shows_the_experts() {
    let r = ckptcheck(&["inspect", common::zoo_path("models/qwen3-moe-mixed").to_str().unwrap()]);
    assert!(
        r.stdout.contains("4 per sparse layer, top-2 per token (weights as routed), expert ffn 128, sparse layers 1 of 2"),
        "{}",
        r.stdout
    );
    let r = ckptcheck(&["inspect", "--json", common::zoo_path("models/qwen2-moe").to_str().unwrap()]);
    assert_eq!(r.json()["experts"]["shared"], 64);
    let r = ckptcheck(&["inspect", common::zoo_path("gguf/mixtral-top1.gguf").to_str().unwrap()]);
    assert!(r.stdout.contains("4 experts (1 per token)"), "{}", r.stdout);
}
