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

/// The native kernels and candle's ops (other dtypes and devices) route and compute the same.
#[test]
fn moe_native_and_candle_paths_agree() {
    for name in ["mixtral", "qwen3-moe", "qwen3-moe-mixed"] {
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
/// tolerance nearly absolute. Measured max |Δlogit| per position (2026-12-02): F16 ≤ 3.7e-4
/// (llama.cpp vs transformers: 4.4e-4), Q8_0 ≤ 0.012 (llama.cpp quantizes activations to Q8_0),
/// except one position of Mixtral Q8_0 prompt 1 at 0.035: there llama.cpp vs transformers is
/// 0.0345 as well while every neighbour is ~0.007 — llama.cpp's quantized activations moved one
/// token's router over the top-2 boundary (the zoo's smallest top-2 margin is 3.4e-4 of
/// probability, measured_moe.json). So: every position within `tol`, but one position per file
/// may be a routing flip, bounded by `flip`.
#[test]
fn moe_ggufs_match_llama_cpp() {
    for (variant, file, tol, flip) in [
        ("gguf-mixtral-f16", "mixtral-f16.gguf", 1e-3f32, 1e-3f32),
        ("gguf-mixtral-q8_0", "mixtral-q8_0.gguf", 0.02, 0.06),
        ("gguf-qwen3-moe-f16", "qwen3-moe-f16.gguf", 1e-3, 1e-3),
        ("gguf-qwen3-moe-q8_0", "qwen3-moe-q8_0.gguf", 0.02, 0.06),
    ] {
        let g = GgufFile::open(&common::zoo_path(&format!("gguf/{file}"))).unwrap();
        let m = model::load_gguf(&g, &Device::Cpu, DType::F32).unwrap();
        let moe = m.spec.moe.as_ref().unwrap_or_else(|| panic!("{file}: loaded without experts"));
        assert_eq!((moe.experts, moe.top_k, moe.norm_topk), (4, 2, true), "{file}");
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

/// The F16 GGUF's experts are the HF experts: the engine on the GGUF matches transformers on the
/// HF checkpoint within F16 rounding of bf16 weights (exact) plus llama.cpp-free summation order.
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

fn lint_ids(args: &[&str]) -> Vec<String> {
    let mut a = vec!["lint", "--json"];
    a.extend_from_slice(args);
    let r = ckptcheck(&a);
    assert_ne!(r.code, 2, "{args:?}: {}", r.stderr);
    r.finding_ids()
}

/// The good MoE checkpoints lint clean, alone and (GGUF) against their source.
#[test]
fn moe_models_lint_clean() {
    for name in ["mixtral", "qwen3-moe", "qwen3-moe-mixed"] {
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
