//! LoRA over an MoE model's fused experts (peft `target_parameters`): the adapter expanded per
//! expert, applied on the fly against peft's own forward, and merges checked — the right one, and
//! one that kept the base experts (testdata/zoo/moe_lora.py makes them).

use std::path::Path;

use ckptcheck::format::hf::HfDir;
use ckptcheck::format::lora::Adapter;
use serde_json::Value;

use crate::{common, engine};

const LAYERS: usize = 2;
const EXPERTS: usize = 4;

fn adapter() -> Adapter {
    Adapter::open(&common::zoo_path("models/qwen3-moe-lora-adapter")).unwrap()
}

#[test]
fn fused_expert_factors_expand_to_one_module_per_expert_weight() {
    let a = adapter();
    assert_eq!(a.config.target_parameters, ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]);
    let experts: Vec<_> = a.modules.iter().filter(|m| m.expert.is_some()).collect();
    assert_eq!(experts.len(), LAYERS * EXPERTS * 3, "gate, up and down of every expert");
    assert_eq!(a.modules.len() - experts.len(), LAYERS * 4, "q/k/v/o of every layer");
    assert!(a.unrecognised.is_empty(), "{:?}", a.unrecognised);
    // gate and up are the two halves of gate_up_proj's rows (moe_intermediate_size 128).
    let find = |n: &str| a.modules.iter().find(|m| m.base == n).unwrap_or_else(|| panic!("no module {n}"));
    let gate = find("model.layers.1.mlp.experts.3.gate_proj");
    let up = find("model.layers.1.mlp.experts.3.up_proj");
    let down = find("model.layers.1.mlp.experts.3.down_proj");
    assert_eq!(gate.expert.as_ref().unwrap().rows, (0, 128));
    assert_eq!(up.expert.as_ref().unwrap().rows, (128, 256));
    assert_eq!(down.expert.as_ref().unwrap().parameter, "model.layers.1.mlp.experts.down_proj");
    for (m, inp, out) in [(gate, 64, 128), (up, 64, 128), (down, 128, 64)] {
        let f = a.factors(m).unwrap();
        assert_eq!((f.rank, f.inp, f.out), (4, inp, out), "{}", m.base);
    }
    // Two experts' slices of one pair differ (the slicing picks each expert's own factors).
    let e0 = a.factors(find("model.layers.1.mlp.experts.0.gate_proj")).unwrap();
    assert_ne!(e0.a, a.factors(gate).unwrap().a);
    assert_ne!(e0.b, a.factors(gate).unwrap().b);
}

/// Base + adapter in the engine (x·Wᵀ + s·(x·A_eᵀ)·B_eᵀ per expert) against peft's unmerged
/// PeftModel over the f32 base: the usual 1e-4 × logit scale, hidden states too.
#[test]
fn expert_lora_premerge_matches_peft() {
    let base = HfDir::open(&common::zoo_path("models/qwen3-moe")).unwrap();
    let a = adapter();
    let m = engine::premerge(&base, &a);
    engine::check_model("qwen3-moe-lora-premerge", &m);
}

fn merge_check(merged: &str) -> common::Run {
    common::ckptcheck(&[
        "merge-check",
        "--json",
        "--base",
        common::zoo_path("models/qwen3-moe").to_str().unwrap(),
        "--adapter",
        common::zoo_path("models/qwen3-moe-lora-adapter").to_str().unwrap(),
        "--merged",
        common::zoo_path(&format!("models/{merged}")).to_str().unwrap(),
    ])
}

fn statuses(r: &common::Run) -> Vec<(String, String)> {
    r.json()["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["module"].as_str().unwrap().to_string(), m["status"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn merge_check_accepts_peft_merge_of_expert_lora() {
    let r = merge_check("qwen3-moe-lora-merged");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let rows = statuses(&r);
    assert_eq!(rows.len(), LAYERS * (4 + EXPERTS * 3));
    assert!(rows.iter().all(|(_, s)| s == "ok"), "{rows:?}");
    assert!(r.finding_ids().is_empty(), "{}", r.stdout);
    let fits: Vec<f64> = r.json()["modules"].as_array().unwrap().iter().map(|m| m["fitted_scale"].as_f64().unwrap()).collect();
    assert!(fits.iter().all(|c| (c - 2.0).abs() < 1e-3), "{fits:?}");
}

#[test]
fn merge_check_names_dropped_expert_deltas() {
    let r = merge_check("qwen3-moe-lora-merged-no-experts");
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    for (module, status) in statuses(&r) {
        let want = if module.contains(".experts.") { "not merged" } else { "ok" };
        assert_eq!(status, want, "{module}");
    }
    // One finding for the 24 expert weights, not 24 `merge.not-merged`.
    assert_eq!(r.finding_ids(), ["merge.expert-delta-dropped"], "{}", r.stdout);
    let f = r.finding("merge.expert-delta-dropped");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.starts_with("24 of 24 adapted expert weights equal the base weights (2 of 2 MoE layers"), "{msg}");
    assert!(msg.contains("target_parameters"), "{msg}");
    assert_eq!(f["field"], "model.layers.0.mlp.experts.0.down_proj.weight");
    assert!(f["hint"].as_str().unwrap().contains("peft ≥ 0.17"), "{f}");
}

/// A copy of the adapter with its adapter_config.json passed through `edit`.
fn adapter_copy(edit: &dyn Fn(&mut Value)) -> tempfile::TempDir {
    let d = common::tmp();
    let src = common::zoo_path("models/qwen3-moe-lora-adapter");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    let cp = d.path().join("adapter_config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&cp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    d
}

fn open_err(dir: &Path) -> String {
    Adapter::open(dir).map(|_| ()).unwrap_err().to_string()
}

/// Factors that do not split into experts × r, or more factor pairs than target_parameters name,
/// are refused with the file and the tensor named; lint of the adapter says the same.
#[test]
fn fused_expert_factors_that_do_not_fit_are_refused() {
    let d = adapter_copy(&|v| v["r"] = 3.into());
    let e = open_err(d.path());
    assert!(
        e.contains("adapter_model.safetensors") && e.contains("mlp.experts.") && e.contains("lora_A.weight") && e.contains("r = 3"),
        "{e}"
    );
    let r = common::lint_json(d.path());
    assert!(r.finding_ids().contains(&"adapter.invalid".to_string()), "{}", r.stdout);

    let d = adapter_copy(&|v| v["target_parameters"] = serde_json::json!(["mlp.experts.down_proj"]));
    let e = open_err(d.path());
    assert!(e.contains("2 target_parameters factor pairs") && e.contains("down_proj"), "{e}");
}

/// The adapter over the base compares with its right merge as the same model, and with the merge
/// that kept the base experts as a different one.
#[test]
fn compare_expert_lora_with_its_merges() {
    let spec =
        format!("{}+{}", common::zoo_path("models/qwen3-moe").display(), common::zoo_path("models/qwen3-moe-lora-adapter").display());
    let run = |merged: &str| {
        let r = common::ckptcheck(&["compare", "--json", &spec, common::zoo_path(&format!("models/{merged}")).to_str().unwrap()]);
        let kl = r.json()["summary"]["kl"]["mean"].as_f64().unwrap_or_else(|| panic!("{}", r.stdout));
        (r.code, kl)
    };
    let (code, kl) = run("qwen3-moe-lora-merged");
    assert!(code == 0 && kl < 1e-5, "right merge: exit {code}, KL {kl}");
    let (_, kl) = run("qwen3-moe-lora-merged-no-experts");
    assert!(kl > 1e-3, "merge without experts: KL {kl}");
}

/// Mixtral stores its experts as `block_sparse_moe.experts.E.{w1,w3,w2}`, but transformers 5
/// holds them as `mlp.experts.gate_up_proj` / `down_proj`, so peft saves Qwen-style expert names
/// that no stored tensor has. Paired with the base, the adapter takes the base's names, and the
/// engine's base + adapter matches peft's unmerged forward (testdata/zoo/moe_lora.py mixtral).
#[test]
fn mixtral_expert_lora_takes_the_base_names_and_matches_peft() {
    let base = common::zoo_path("models/mixtral");
    let adapter = common::zoo_path("models/mixtral-lora-adapter");
    let raw = Adapter::open(&adapter).unwrap();
    let experts = |a: &Adapter| a.modules.iter().filter(|m| m.expert.is_some()).map(|m| m.base.clone()).collect::<Vec<_>>();
    let saved = experts(&raw);
    assert_eq!(saved.len(), LAYERS * EXPERTS * 3);
    assert!(saved.iter().all(|n| n.contains(".mlp.experts.")), "{saved:?}");

    let ckpt = ckptcheck::checkpoint::Checkpoint::with_adapter(&base, &adapter).unwrap();
    let ckptcheck::checkpoint::Checkpoint::BaseWithAdapter { base: b, adapter: a } = &ckpt else { panic!("not base+adapter") };
    let named = experts(a);
    assert!(named.contains(&"model.layers.1.block_sparse_moe.experts.3.w3".to_string()), "{named:?}");
    assert!(named.iter().all(|n| b.tensor(&format!("{n}.weight")).is_some()), "{named:?}");
    let m = ckptcheck::model::load(
        &ckpt,
        &candle_core::Device::Cpu,
        ckptcheck::settings::ComputeDtype::F32,
        ckptcheck::model::GgufMatmul::Dense,
    )
    .unwrap();
    engine::check_model("mixtral-lora-premerge", &m);

    // merge-check against the base itself: every expert delta dropped, named as Mixtral stores it.
    let r = common::ckptcheck(&[
        "merge-check",
        "--json",
        "--base",
        base.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--merged",
        base.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(statuses(&r).iter().all(|(_, s)| s == "not merged"), "{}", r.stdout);
    let f = r.finding("merge.expert-delta-dropped");
    assert_eq!(f["field"], "model.layers.0.block_sparse_moe.experts.0.w2.weight", "{f}");
}
