//! LoRA: merge-check on merges made by the test (right and wrong), and pre-merge (base+adapter
//! applied on the fly) against the merged model in `compare`.

use std::path::Path;

use crate::common::*;
use serde_json::json;

const R: usize = 2;
const ALPHA: f64 = 8.0;
const SCALE: f32 = (ALPHA / R as f64) as f32;
const TARGETS: &[&str] = &["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"];

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

fn set(t: &mut Tensor, v: &[f32]) {
    t.data = v.iter().flat_map(|x| x.to_le_bytes()).collect();
}

/// (module, A [r×in], B [out×r], out, in)
type Module = (String, Vec<f32>, Vec<f32>, usize, usize);

struct Lora {
    mods: Vec<Module>,
}

fn make_adapter(base: &Fixture, dir: &Path) -> Lora {
    let mut tensors = Vec::new();
    let mut mods = Vec::new();
    for layer in 0..LAYERS {
        for (k, m) in TARGETS.iter().enumerate() {
            let name = format!("model.layers.{layer}.{m}");
            let w = base.tensors.iter().find(|t| t.name == format!("{name}.weight")).unwrap();
            let (out, inp) = (w.shape[0], w.shape[1]);
            let seed = 100 + 10 * layer as u32 + k as u32;
            let a = f32_tensor(&format!("base_model.model.{name}.lora_A.weight"), &[R, inp], seed);
            let b = f32_tensor(&format!("base_model.model.{name}.lora_B.weight"), &[out, R], seed + 50);
            mods.push((name, f32s(&a), f32s(&b), out, inp));
            tensors.push(a);
            tensors.push(b);
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), serialize(tensors.iter())).unwrap();
    let cfg = json!({"peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "target_modules": ["q_proj", "v_proj", "down_proj"],
                     "use_rslora": false, "use_dora": false, "fan_in_fan_out": false, "base_model_name_or_path": "base"});
    std::fs::write(dir.join("adapter_config.json"), cfg.to_string()).unwrap();
    Lora { mods }
}

/// s·B·A for module i.
fn delta(l: &Lora, i: usize, scale: f32) -> Vec<f32> {
    let (_, a, b, out, inp) = &l.mods[i];
    let mut d = vec![0f32; out * inp];
    for o in 0..*out {
        for j in 0..*inp {
            d[o * inp + j] = scale * (0..R).map(|k| b[o * R + k] * a[k * inp + j]).sum::<f32>();
        }
    }
    d
}

/// Merges with `how(i, W, Δ)` deciding each module's merged weight.
fn merged(base: &Fixture, l: &Lora, how: impl Fn(usize, &[f32], &[f32]) -> Vec<f32>) -> Fixture {
    let mut m = Fixture::healthy();
    for (i, (name, ..)) in l.mods.iter().enumerate() {
        let w = f32s(base.tensors.iter().find(|t| t.name == format!("{name}.weight")).unwrap());
        let d = delta(l, i, SCALE);
        set(m.tensor_mut(&format!("{name}.weight")), &how(i, &w, &d));
    }
    m
}

fn add(w: &[f32], d: &[f32]) -> Vec<f32> {
    w.iter().zip(d).map(|(a, b)| a + b).collect()
}

struct Setup {
    _d: tempfile::TempDir,
    base: std::path::PathBuf,
    adapter: std::path::PathBuf,
    lora: Lora,
    root: std::path::PathBuf,
}

fn setup() -> Setup {
    let d = tmp();
    let base = d.path().join("base");
    let adapter = d.path().join("adapter");
    let f = Fixture::healthy();
    f.write(&base);
    let lora = make_adapter(&f, &adapter);
    let root = d.path().to_path_buf();
    Setup { _d: d, base, adapter, lora, root }
}

fn merge_check(s: &Setup, merged: &Fixture, name: &str) -> Run {
    let m = s.root.join(name);
    merged.write(&m);
    ckptcheck(&[
        "merge-check",
        "--json",
        "--base",
        s.base.to_str().unwrap(),
        "--adapter",
        s.adapter.to_str().unwrap(),
        "--merged",
        m.to_str().unwrap(),
    ])
}

#[test]
fn correct_merge_passes_every_module() {
    let s = setup();
    let r = merge_check(&s, &merged(&Fixture::healthy(), &s.lora, |_, w, d| add(w, d)), "ok");
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    let mods = v["modules"].as_array().unwrap();
    assert_eq!(mods.len(), LAYERS * TARGETS.len());
    assert!(mods.iter().all(|m| m["status"] == "ok"), "{mods:?}");
    assert!(r.finding_ids().is_empty(), "{}", r.stdout);
    assert_eq!(v["scale_rule"], "s = lora_alpha / r = 8 / 2");
}

#[test]
fn wrong_scale_is_named_as_alpha_without_r() {
    let s = setup();
    let base = Fixture::healthy();
    // alpha instead of alpha / r: Δ × r
    let m = merged(&base, &s.lora, |_, w, d| add(w, &d.iter().map(|x| x * R as f32).collect::<Vec<_>>()));
    let r = merge_check(&s, &m, "scale");
    assert_eq!(r.code, 1);
    let f = r.finding("merge.wrong-scale");
    assert!(f["message"].as_str().unwrap().contains("alpha was used without dividing by r"), "{f}");
}

#[test]
fn skipped_module_is_not_merged() {
    let s = setup();
    let m = merged(&Fixture::healthy(), &s.lora, |i, w, d| if i == 4 { w.to_vec() } else { add(w, d) });
    let r = merge_check(&s, &m, "skip");
    assert_eq!(r.code, 1);
    let ids = r.finding_ids();
    assert_eq!(ids, vec!["merge.not-merged"], "{}", r.stdout);
    assert_eq!(r.finding("merge.not-merged")["field"], "model.layers.1.self_attn.v_proj.weight");
}

#[test]
fn transposed_and_wrong_layer_deltas() {
    let s = setup();
    // q_proj is square: give layer 0's q_proj the transposed delta.
    let n = HIDDEN;
    let m = merged(&Fixture::healthy(), &s.lora, |i, w, d| {
        if i == 0 {
            add(w, &(0..n * n).map(|k| d[(k % n) * n + k / n]).collect::<Vec<_>>())
        } else {
            add(w, d)
        }
    });
    let r = merge_check(&s, &m, "transposed");
    assert_eq!(r.finding("merge.transposed")["field"], "model.layers.0.self_attn.q_proj.weight");

    // layer 1's down_proj gets layer 0's down_proj delta.
    let l = &s.lora;
    let m = merged(&Fixture::healthy(), l, |i, w, d| if i == 5 { add(w, &delta(l, 2, SCALE)) } else { add(w, d) });
    let r = merge_check(&s, &m, "wrong-layer");
    let f = r.finding("merge.wrong-module");
    assert!(f["message"].as_str().unwrap().contains("model.layers.0.mlp.down_proj"), "{f}");
}

#[test]
fn f16_overflow_and_untargeted_change() {
    let s = setup();
    let mut m = merged(&Fixture::healthy(), &s.lora, |_, w, d| add(w, d));
    // An fp16 merge that overflowed: store q_proj of layer 1 as F16 with infinities.
    let t = m.tensor_mut("model.layers.1.self_attn.q_proj.weight");
    let vals = f32s(t);
    t.dtype = safetensors::Dtype::F16;
    t.data = vals.iter().enumerate().flat_map(|(i, &x)| half::f16::from_f32(if i % 7 == 0 { 1e6 } else { x }).to_le_bytes()).collect();
    // And an untargeted tensor that changed.
    let k = m.tensor_mut("model.layers.0.self_attn.k_proj.weight");
    let kv: Vec<f32> = f32s(k).iter().map(|x| x * 1.5).collect();
    set(k, &kv);
    let r = merge_check(&s, &m, "overflow");
    assert_eq!(r.code, 1);
    assert!(r.finding("merge.overflow")["message"].as_str().unwrap().contains("non-finite"));
    assert_eq!(r.finding("merge.untargeted-change")["field"], "model.layers.0.self_attn.k_proj.weight");
}

#[test]
fn premerge_equals_merge_in_compare() {
    let s = setup();
    let m = s.root.join("merged");
    merged(&Fixture::healthy(), &s.lora, |_, w, d| add(w, d)).write(&m);
    let prompts = s.root.join("p.jsonl");
    std::fs::write(&prompts, "{\"text\": \"What is 6 times 7 ?\"}\n").unwrap();
    let pre = format!("{}+{}", s.base.display(), s.adapter.display());
    let r = ckptcheck(&["compare", "--json", "--max-new-tokens", "4", "--prompts", prompts.to_str().unwrap(), &pre, m.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert!(v["summary"]["kl"]["max"].as_f64().unwrap() < 1e-9, "{}", v["summary"]);
    assert_eq!(v["summary"]["top1"], 1.0);
    // And base+adapter is not the base: the adapter changes the outputs.
    let r =
        ckptcheck(&["compare", "--json", "--max-new-tokens", "4", "--prompts", prompts.to_str().unwrap(), s.base.to_str().unwrap(), &pre]);
    assert!(r.json()["summary"]["kl"]["mean"].as_f64().unwrap() > 0.0);
}

#[test]
fn adapter_for_another_base_is_a_clear_error() {
    let s = setup();
    // lora_A of layer 0 q_proj with the wrong input width.
    let bad = s.root.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::copy(s.adapter.join("adapter_config.json"), bad.join("adapter_config.json")).unwrap();
    let tensors = [
        f32_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", &[R, HIDDEN + 4], 1),
        f32_tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", &[HIDDEN, R], 2),
    ];
    std::fs::write(bad.join("adapter_model.safetensors"), serialize(tensors.iter())).unwrap();
    let prompts = s.root.join("p.jsonl");
    std::fs::write(&prompts, "{\"text\": \"hi\"}\n").unwrap();
    let pre = format!("{}+{}", s.base.display(), bad.display());
    let r = ckptcheck(&["compare", "--prompts", prompts.to_str().unwrap(), &pre, s.base.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("another base model") && r.stderr.contains("lora_A"), "{}", r.stderr);
}

// --- on the zoo: adapter and merges made by peft (see testdata/zoo/lora.py) -------------------

fn zoo_merge_check(merged: &str) -> Run {
    let z = zoo().join("models");
    ckptcheck(&[
        "merge-check",
        "--json",
        "--base",
        z.join("llama-instruct").to_str().unwrap(),
        "--adapter",
        z.join("llama-lora-adapter").to_str().unwrap(),
        "--merged",
        z.join(merged).to_str().unwrap(),
    ])
}

#[test]
fn zoo_peft_merge_passes_and_broken_merges_are_named() {
    let r = zoo_merge_check("llama-lora-merged");
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.json()["modules"].as_array().unwrap().iter().all(|m| m["status"] == "ok"));

    let r = zoo_merge_check("llama-merge-wrong-scale");
    assert_eq!(r.code, 1);
    let ids = r.finding_ids();
    assert!(!ids.is_empty() && ids.iter().all(|i| i == "merge.wrong-scale"), "{ids:?}");
    assert!(r.finding("merge.wrong-scale")["message"].as_str().unwrap().contains("alpha was used without dividing by r"));

    let r = zoo_merge_check("llama-merge-skip-module");
    assert_eq!(r.code, 1);
    assert_eq!(r.finding_ids(), vec!["merge.not-merged"], "{}", r.stdout);

    let r = zoo_merge_check("llama-merge-fp16-overflow");
    assert_eq!(r.code, 1);
    assert!(r.finding_ids().contains(&"merge.overflow".to_string()), "{}", r.stdout);
}

#[test]
fn zoo_premerge_vs_merge_is_kl_zero() {
    let z = zoo().join("models");
    let pre = format!("{}+{}", z.join("llama-instruct").display(), z.join("llama-lora-adapter").display());
    let r = ckptcheck(&[
        "compare",
        "--json",
        "--prompts",
        zoo().join("prompts.jsonl").to_str().unwrap(),
        &pre,
        z.join("llama-lora-merged").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = &r.json()["summary"];
    assert!(s["kl"]["max"].as_f64().unwrap() < 1e-6, "{s}");
    assert_eq!(s["top1"], 1.0);
}

#[test]
fn modules_to_save_must_be_copied_into_the_merge() {
    let s = setup();
    // Re-write the adapter with a trained lm_head copy in modules_to_save.
    let mut tensors: Vec<Tensor> = Vec::new();
    for (name, a, b, out, inp) in &s.lora.mods {
        let mut ta = f32_tensor(&format!("base_model.model.{name}.lora_A.weight"), &[R, *inp], 0);
        set(&mut ta, a);
        let mut tb = f32_tensor(&format!("base_model.model.{name}.lora_B.weight"), &[*out, R], 0);
        set(&mut tb, b);
        tensors.push(ta);
        tensors.push(tb);
    }
    let head = f32_tensor("base_model.model.lm_head.weight", &[WORDS.len(), HIDDEN], 777);
    let head_vals = f32s(&head);
    tensors.push(head);
    std::fs::write(s.adapter.join("adapter_model.safetensors"), serialize(tensors.iter())).unwrap();
    let cfg = json!({"peft_type": "LORA", "r": R, "lora_alpha": ALPHA, "target_modules": ["q_proj", "v_proj", "down_proj"],
                     "modules_to_save": ["lm_head"]});
    std::fs::write(s.adapter.join("adapter_config.json"), cfg.to_string()).unwrap();

    let mut good = merged(&Fixture::healthy(), &s.lora, |_, w, d| add(w, d));
    set(good.tensor_mut("lm_head.weight"), &head_vals);
    let r = merge_check(&s, &good, "good");
    assert_eq!(r.code, 0, "{}", r.stdout);

    let forgot = merged(&Fixture::healthy(), &s.lora, |_, w, d| add(w, d));
    let r = merge_check(&s, &forgot, "forgot");
    assert_eq!(r.code, 1);
    let f = r.finding("merge.modules-to-save-not-copied");
    assert!(f["message"].as_str().unwrap().contains("kept the base weights"), "{f}");

    // The adapter applied on the fly uses the saved lm_head too: it equals the good merge.
    let prompts = s.root.join("p.jsonl");
    std::fs::write(&prompts, "{\"text\": \"What is 6 times 7 ?\"}\n").unwrap();
    let pre = format!("{}+{}", s.base.display(), s.adapter.display());
    let r = ckptcheck(&[
        "compare",
        "--json",
        "--max-new-tokens",
        "4",
        "--prompts",
        prompts.to_str().unwrap(),
        &pre,
        s.root.join("good").to_str().unwrap(),
    ]);
    assert!(r.json()["summary"]["kl"]["max"].as_f64().unwrap() < 1e-9, "{}", r.stdout);
}

/// peft's DoRA + rsLoRA merge passes merge-check, and the check is not blind to DoRA: the same
/// merged file judged as a plain LoRA merge (magnitude vectors dropped from a copy of the adapter)
/// fails every module.
#[test]
fn zoo_dora_merge_and_dora_blindness() {
    let z = zoo().join("models");
    let check = |adapter: &std::path::Path| {
        ckptcheck(&[
            "merge-check",
            "--json",
            "--base",
            z.join("llama-instruct").to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--merged",
            z.join("llama-dora-merged").to_str().unwrap(),
        ])
    };
    let r = check(&z.join("llama-dora-adapter"));
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.json()["scale_rule"].as_str().unwrap().contains("sqrt(r)"));

    let d = tmp();
    let bytes = std::fs::read(z.join("llama-dora-adapter/adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<Tensor> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("lora_magnitude_vector"))
        .map(|(n, t)| Tensor { name: n, dtype: t.dtype(), shape: t.shape().to_vec(), data: t.data().to_vec() })
        .collect();
    std::fs::write(d.path().join("adapter_model.safetensors"), serialize(kept.iter())).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(z.join("llama-dora-adapter/adapter_config.json")).unwrap()).unwrap();
    cfg["use_dora"] = json!(false);
    std::fs::write(d.path().join("adapter_config.json"), cfg.to_string()).unwrap();
    let r = check(d.path());
    assert_eq!(r.code, 1);
    assert!(r.json()["modules"].as_array().unwrap().iter().all(|m| m["status"] != "ok"), "{}", r.stdout);
}
