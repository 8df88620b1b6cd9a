//! Splice to blame (issue 16, part 2): hybrids of a parent and a step, and the search that names
//! the step's tensors that make the difference. The step is a real mixed quantization made by
//! llama.cpp's llama-quantize (layer 1 in Q2_K, the rest Q8_0: testdata/zoo/mixed_quant.py).

use candle_core::Device;
use ckptcheck::checkpoint::Checkpoint;
use ckptcheck::model::{self, GgufMatmul};
use ckptcheck::settings::ComputeDtype;
use serde_json::Value;

use crate::common::*;

const MIXED: &str = "gguf/llama-instruct-q8_0-blk1-q2_k.gguf";
const F16: &str = "gguf/llama-instruct-f16.gguf";

fn logits(m: &model::Model, ids: &[u32]) -> Vec<f32> {
    m.forward(ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap()
}

/// A hybrid that takes every tensor from the step is the step, and one that takes none is the
/// parent, bit for bit, across formats (an HF parent, a GGUF step through its name map).
#[test]
fn splicing_everything_or_nothing_gives_the_two_models() {
    let (pp, sp) = (zoo_path("models/llama-instruct"), zoo_path(MIXED));
    let (parent, step) = (Checkpoint::open(&pp).unwrap(), Checkpoint::open(&sp).unwrap());
    let load = |take: &dyn Fn(&str) -> bool| {
        model::load_spliced((&parent, &step), (&pp, &sp), take, &Device::Cpu, ComputeDtype::F32, GgufMatmul::Auto).unwrap()
    };
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 % 1000) as u32 + 3).collect();
    let p = logits(&model::load(&parent, &Device::Cpu, ComputeDtype::F32, GgufMatmul::Auto).unwrap(), &ids);
    let s = logits(&model::load(&step, &Device::Cpu, ComputeDtype::F32, GgufMatmul::Auto).unwrap(), &ids);
    assert!(p.iter().zip(&s).any(|(a, b)| (a - b).abs() > 1e-2), "the two models must differ for this test to mean anything");
    assert_eq!(logits(&load(&|_| true), &ids), s);
    assert_eq!(logits(&load(&|_| false), &ids), p);
    // One layer from the step: neither.
    let one = logits(&load(&|n| n.starts_with("model.layers.1.")), &ids);
    assert!(one != p && one != s);
    let names = model::loaded_tensors(&parent, &Device::Cpu, ComputeDtype::F32, GgufMatmul::Auto).unwrap();
    assert_eq!(names.len(), 3 * 9 + 3, "{names:?}");
    assert!(names.contains(&"model.layers.1.self_attn.k_proj.weight".to_string()) && names.contains(&"lm_head.weight".to_string()));
}

fn blame(args: &[&str]) -> Value {
    let mut a = vec!["compare", "--json", "--blame"];
    a.extend_from_slice(args);
    let r = ckptcheck(&a);
    assert_ne!(r.code, 2, "{}", r.stderr);
    r.json()["blame"].clone()
}

fn share(rows: &Value, group: &str) -> f64 {
    rows.as_array().unwrap().iter().find(|r| r["group"] == group).unwrap_or_else(|| panic!("no row {group}: {rows:#}"))["share"]
        .as_f64()
        .unwrap()
}

/// Each layer swapped alone: layer 1 (the Q2_K one) carries the KL, the others almost none;
/// inside it the attention projections do; the culprit set is measured together.
#[test]
fn blame_names_the_damaged_layer_and_its_modules() {
    let b = blame(&[&zoo_path(F16).to_string_lossy(), &zoo_path(MIXED).to_string_lossy()]);
    assert!(share(&b["groups"], "layer 1") > 0.9, "{:#}", b["groups"]);
    for g in ["layer 0", "layer 2", "embeddings", "head", "final norm"] {
        assert!(share(&b["groups"], g) < 0.05, "{g}: {:#}", b["groups"]);
    }
    assert_eq!(b["refined"], "layer 1");
    assert_eq!(b["modules"].as_array().unwrap().len(), 9);
    assert!(share(&b["modules"], "model.layers.1.self_attn.k_proj") > 0.4, "{:#}", b["modules"]);
    let culprit = &b["culprit"];
    let tensors: Vec<&str> = culprit["tensors"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(tensors.iter().all(|t| t.starts_with("model.layers.1.")) && tensors.len() < 9, "{culprit:#}");
    assert!(culprit["share"].as_f64().unwrap() >= 0.4, "{culprit:#}");
    // Step + 6 level-1 hybrids + 9 modules + the culprit set together.
    assert_eq!(b["forward_passes"], 17);
}

/// The same from the HF original (a cross-format hybrid: HF parent, GGUF tensors), and with a
/// budget too small for one hybrid per layer: the layers are grouped into a block.
#[test]
fn blame_across_formats_and_within_a_budget() {
    let b = blame(&[&zoo_path("models/llama-instruct").to_string_lossy(), &zoo_path(MIXED).to_string_lossy()]);
    assert!(share(&b["groups"], "layer 1") > 0.8, "{:#}", b["groups"]);
    let small = blame(&["--blame-budget", "4", &zoo_path(F16).to_string_lossy(), &zoo_path(MIXED).to_string_lossy()]);
    assert!(share(&small["groups"], "layers 0-2") > 0.9, "{:#}", small["groups"]);
    assert!(small["forward_passes"].as_u64().unwrap() <= 5, "{small:#}");
    assert_eq!(small["culprit"]["group"], "layers 0-2");
}

/// Blame on two identical models: nothing to blame, one pass.
#[test]
fn blame_of_an_unchanged_step_is_empty() {
    let f = zoo_path(F16).to_string_lossy().into_owned();
    let b = blame(&[&f, &f]);
    assert_eq!(b["groups"].as_array().unwrap().len(), 0);
    assert!(b["culprit"].is_null());
    assert_eq!(b["forward_passes"], 1);
}

/// bisect blames the first failing conversion by itself (quant-mixed-layer.toml), and
/// `--blame-budget 0` turns it off: the numbers are the cause again.
#[test]
fn bisect_blames_the_mixed_quant_and_the_budget_turns_it_off() {
    let m = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/quant-mixed-layer.toml");
    let on = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    let v = on.json();
    assert_eq!((on.code, v["cause_id"].as_str()), (1, Some("cause.tensors-blamed")), "{}", v["cause"]);
    assert!(v["steps"][2]["blame"]["culprit"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.as_str().unwrap().starts_with("model.layers.1.")));
    assert!(v["causes"][0]["fix"].as_str().unwrap().contains("blk.1.attn_k.weight"), "{}", v["causes"][0]["fix"]);
    let off = ckptcheck(&["bisect", "--json", "--blame-budget", "0", m.to_str().unwrap()]);
    let w = off.json();
    assert_eq!((off.code, w["cause_id"].as_str()), (1, Some("metric.kl_mean")));
    assert!(w["steps"][2].get("blame").is_none());
}
