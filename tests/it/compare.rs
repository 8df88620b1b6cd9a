//! `ckptcheck compare` through the real binary: on the synthetic checkpoint (self-compare, NaN
//! weights, a damaged layer) and on the zoo's healthy vs collapsed fine-tune.

use crate::common::*;
use serde_json::json;

fn prompts_file(dir: &std::path::Path) -> String {
    let p = dir.join("prompts.jsonl");
    std::fs::write(&p, "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n{\"text\": \"The answer is\"}\n")
        .unwrap();
    p.to_str().unwrap().to_string()
}

fn compare_json(r: &std::path::Path, c: &std::path::Path, prompts: &str, extra: &[&str]) -> Run {
    let mut args = vec!["compare", "--json", "--max-new-tokens", "6", "--prompts", prompts, r.to_str().unwrap(), c.to_str().unwrap()];
    args.extend_from_slice(extra);
    ckptcheck(&args)
}

#[test]
fn self_compare_is_exactly_zero() {
    let d = tmp();
    let m = d.path().join("m");
    Fixture::healthy().write(&m);
    let r = compare_json(&m, &m, &prompts_file(d.path()), &["--layers"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["summary"]["kl"]["max"], 0.0);
    assert_eq!(v["summary"]["top1"], 1.0);
    assert_eq!(v["summary"]["ppl_ratio"], 1.0);
    assert_eq!(v["summary"]["nonfinite_cand"], 0);
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["prompts"].as_array().unwrap().len(), 2);
    assert!(v["layers"].as_array().unwrap().iter().all(|l| l["rel_l2"] == 0.0));
    assert!(v["first_bad_layer"].is_null());
}

#[test]
fn nan_weights_fail_and_are_counted() {
    let d = tmp();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    Fixture::healthy().write(&a);
    let mut f = Fixture::healthy();
    f.tensor_mut("model.layers.1.mlp.down_proj.weight").data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    f.write(&b);
    let r = compare_json(&a, &b, &prompts_file(d.path()), &["--layers"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert!(v["summary"]["nonfinite_cand"].as_u64().unwrap() > 0);
    assert_eq!(v["verdict"], "fail");
    let j = v["judgements"].as_array().unwrap().iter().find(|j| j["metric"] == "nonfinite_logits").unwrap().clone();
    assert_eq!(j["status"], "fail");
    assert_eq!(v["first_bad_layer"], "layer 1", "{}", v["layers"]);
}

#[test]
fn damaged_layer_is_named_by_the_trace() {
    let d = tmp();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    Fixture::healthy().write(&a);
    let mut f = Fixture::healthy();
    // A merge with a wildly wrong scale on one projection: layer 1's down_proj × −20.
    let t = f.tensor_mut("model.layers.1.mlp.down_proj.weight");
    for c in t.data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * -20.0;
        c.copy_from_slice(&x.to_le_bytes());
    }
    f.write(&b);
    let r = compare_json(&a, &b, &prompts_file(d.path()), &["--layers"]);
    let v = r.json();
    let layers = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), LAYERS + 1);
    assert_eq!(layers[1]["rel_l2"], 0.0, "layer 0 is untouched");
    assert!(layers[2]["rel_l2"].as_f64().unwrap() > 0.1, "{layers:?}");
    assert_eq!(v["first_bad_layer"], "layer 1");
    assert!(v["summary"]["kl"]["mean"].as_f64().unwrap() > 0.0);
}

#[test]
fn thresholds_file_changes_the_verdict() {
    let d = tmp();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    Fixture::healthy().write(&a);
    let mut f = Fixture::healthy();
    let t = f.tensor_mut("model.layers.1.mlp.up_proj.weight");
    for c in t.data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * 1.05;
        c.copy_from_slice(&x.to_le_bytes());
    }
    f.write(&b);
    let prompts = prompts_file(d.path());
    let tight = d.path().join("tight.toml");
    std::fs::write(&tight, "kl_mean_warn = 0.0\nkl_mean_fail = 0.0\n").unwrap();
    let r = compare_json(&a, &b, &prompts, &["--thresholds", tight.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let bad = d.path().join("bad.toml");
    std::fs::write(&bad, "kl_mean_fial = 1\n").unwrap();
    let r = compare_json(&a, &b, &prompts, &["--thresholds", bad.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bad.toml") && r.stderr.contains("kl_mean_fial"), "{}", r.stderr);
}

#[test]
fn reference_ids_beyond_candidate_vocab_is_a_clear_error() {
    let d = tmp();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    Fixture::healthy().write(&a);
    let mut f = Fixture::healthy();
    *f.tensor_mut("model.embed_tokens.weight") = f32_tensor("model.embed_tokens.weight", &[4, HIDDEN], 1);
    *f.tensor_mut("lm_head.weight") = f32_tensor("lm_head.weight", &[4, HIDDEN], 2);
    f.config["vocab_size"] = json!(4);
    f.write(&b);
    let r = compare_json(&a, &b, &prompts_file(d.path()), &[]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("beyond the candidate's vocabulary"), "{}", r.stderr);
}

// --- on the zoo -----------------------------------------------------------------------------

#[test]
fn zoo_healthy_vs_collapsed_fails_on_eos_and_kl() {
    let zoo = zoo();
    let r = ckptcheck(&[
        "compare",
        "--json",
        "--prompts",
        zoo.join("prompts.jsonl").to_str().unwrap(),
        zoo.join("models/llama-instruct").to_str().unwrap(),
        zoo.join("models/llama-sft-collapsed").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    let s = &v["summary"];
    assert!(s["p_eos_ref_mean"].as_f64().unwrap() > 0.5, "{s}");
    assert!(s["p_eos_cand_mean"].as_f64().unwrap() < 0.1, "{s}");
    assert!(s["kl"]["mean"].as_f64().unwrap() > 0.5, "{s}");
    let failed: Vec<&str> =
        v["judgements"].as_array().unwrap().iter().filter(|j| j["status"] == "fail").map(|j| j["metric"].as_str().unwrap()).collect();
    assert!(failed.contains(&"p_eos_ratio") && failed.contains(&"kl_mean"), "{failed:?}");
}

#[test]
fn zoo_self_compare_and_wrong_eos_config() {
    let zoo = zoo();
    let prompts = zoo.join("prompts.jsonl");
    let healthy = zoo.join("models/llama-instruct");
    let r = ckptcheck(&["compare", "--json", "--prompts", prompts.to_str().unwrap(), healthy.to_str().unwrap(), healthy.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["summary"]["kl"]["max"], 0.0);
    assert_eq!(v["summary"]["top1"], 1.0);
    assert_eq!(v["summary"]["cand_stop_rate"], 1.0, "the healthy model ends its turns");
    // Same weights, but generation_config stops on <|endoftext|>: identical logits, and the
    // candidate never stops on its own.
    let wrong = zoo.join("models/llama-genconfig-wrong-eos");
    let r = ckptcheck(&["compare", "--json", "--prompts", prompts.to_str().unwrap(), healthy.to_str().unwrap(), wrong.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = r.json();
    assert_eq!(v["summary"]["kl"]["max"], 0.0);
    assert_eq!(v["summary"]["cand_stop_rate"], 0.0);
    let j = v["judgements"].as_array().unwrap().iter().find(|j| j["metric"] == "stop_rate_drop").unwrap().clone();
    assert_eq!(j["status"], "fail");
}

#[test]
fn dtype_option_runs_bf16_and_rejects_unknown() {
    let zoo = zoo();
    let prompts = zoo.join("prompts.jsonl");
    let healthy = zoo.join("models/llama-instruct");
    let run = |dt: &str| {
        ckptcheck(&[
            "compare",
            "--json",
            "--dtype",
            dt,
            "--prompts",
            prompts.to_str().unwrap(),
            healthy.to_str().unwrap(),
            healthy.to_str().unwrap(),
        ])
    };
    let f32_eos = run("f32").json()["summary"]["p_eos_ref_mean"].as_f64().unwrap();
    let r = run("bf16");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = r.json()["summary"].clone();
    assert_eq!(s["kl"]["max"], 0.0);
    // bf16 arithmetic moves P(EOS) a little, not a lot.
    assert!((s["p_eos_ref_mean"].as_f64().unwrap() - f32_eos).abs() < 0.01, "{s}");
    let r = run("f8");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`f8` is not one of f32, bf16, f16, auto"), "{}", r.stderr);
}

#[test]
fn empty_prompt_is_a_clear_error() {
    let d = tmp();
    let mut f = Fixture::healthy();
    // A base model (no template) and an empty text prompt: nothing to encode.
    f.tokenizer_config.as_object_mut().unwrap().remove("chat_template");
    let m = d.path().join("m");
    f.write(&m);
    let p = d.path().join("p.jsonl");
    std::fs::write(&p, "{\"text\": \"\"}\n").unwrap();
    let r = ckptcheck(&["compare", "--prompts", p.to_str().unwrap(), m.to_str().unwrap(), m.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("encodes to no tokens"), "{}", r.stderr);
}

#[test]
fn overlong_prompt_is_refused_before_any_allocation() {
    let d = tmp();
    let m = d.path().join("m");
    Fixture::healthy().write(&m);
    let p = d.path().join("p.jsonl");
    std::fs::write(&p, format!("{{\"text\": \"{}\"}}\n", "What is ".repeat(9000))).unwrap();
    let r = ckptcheck(&["compare", "--prompts", p.to_str().unwrap(), m.to_str().unwrap(), m.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("exceeds the 16384 positions the reference runs") && r.stderr.contains("p.jsonl"), "{}", r.stderr);
}

#[test]
fn device_option_names_cuda_requirement() {
    let d = tmp();
    let m = d.path().join("m");
    Fixture::healthy().write(&m);
    let p = prompts_file(d.path());
    let r = compare_json(&m, &m, &p, &["--device", "cpu"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = compare_json(&m, &m, &p, &["--device", "tpu"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`tpu` is not one of auto, cpu, cuda"), "{}", r.stderr);
    if !cfg!(feature = "cuda") {
        let r = compare_json(&m, &m, &p, &["--device", "cuda"]);
        assert_eq!(r.code, 2);
        assert!(r.stderr.contains("--features cuda"), "{}", r.stderr);
    }
}

/// Issue 13: an incomparable pair is refused before either variant loads, naming both paths.
#[test]
fn incomparable_variants_are_refused_before_loading() {
    let (llama, spm, qwen2) = (zoo_path("models/llama-instruct"), zoo_path("models/spm-llama"), zoo_path("models/qwen2-instruct"));
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    // Another tokenizer (SentencePiece vs byte-level BPE: no id means the same token).
    let r = ckptcheck(&["compare", &s(&llama), &s(&spm)]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("cannot compare `") && r.stderr.contains("spm-llama` with `"), "{}", r.stderr);
    assert!(r.stderr.contains("tokenizers are different id spaces: only 0 of the 1000 ids"), "{}", r.stderr);
    assert!(!r.stderr.contains("loading"), "refused before loading: {}", r.stderr);
    // The same tokenizer but another family: comparable, but not layer by layer.
    let r = ckptcheck(&["compare", "--layers", &s(&llama), &s(&qwen2)]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(
        r.stderr.contains("--layers pairs hidden states layer by layer, and the architectures differ (llama vs qwen2)"),
        "{}",
        r.stderr
    );
    let r = ckptcheck(&["compare", "--max-prompts", "1", "--max-new-tokens", "4", &s(&llama), &s(&qwen2)]);
    assert_ne!(r.code, 2, "{}", r.stderr);
    // One family under two names: transformers' `gemma3_text` and the GGUF's `gemma3`.
    let (g, gg) = (zoo_path("models/gemma3"), zoo_path("gguf/gemma3-f16.gguf"));
    let r = ckptcheck(&["compare", "--layers", "--json", "--max-prompts", "2", "--max-new-tokens", "4", &s(&g), &s(&gg)]);
    assert_ne!(r.code, 2, "{}", r.stderr);
    assert!(r.json()["layers"].as_array().is_some_and(|l| !l.is_empty()), "traced layer by layer");
    // A missing candidate is found before the reference loads.
    let r = ckptcheck(&["compare", &s(&llama), "/nonexistent/cand"]);
    assert!(r.code == 2 && r.stderr.contains("/nonexistent/cand") && !r.stderr.contains("loading"), "{}", r.stderr);
}

/// Issue 13 (numbers a reader can trust): every mean and rate with its standard error and count
/// (llama.cpp's formulas, recomputed here from the per-token KL the report carries), a note for
/// percentiles the sample cannot resolve, the llama.cpp-style block, and greedy-answer flips.
#[test]
fn numbers_carry_standard_errors_flips_and_sample_notes() {
    let (r, c) = (zoo_path("models/llama-instruct"), zoo_path("models/llama-sft-collapsed"));
    let prompts = zoo_path("prompts.jsonl");
    let run = |extra: &[&str]| {
        let mut a =
            vec!["compare", "--max-new-tokens", "24", "--prompts", prompts.to_str().unwrap(), r.to_str().unwrap(), c.to_str().unwrap()];
        a.extend_from_slice(extra);
        ckptcheck(&a)
    };
    let v = run(&["--json"]).json();
    let s = &v["summary"];
    let kl: Vec<f64> = v["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["token_kl"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    let n = kl.len() as f64;
    let mean = kl.iter().sum::<f64>() / n;
    let stdev = (kl.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let e = &s["estimates"];
    assert_eq!(e["kl_mean"]["n"], kl.len());
    assert!((e["kl_mean"]["value"].as_f64().unwrap() - mean).abs() < 1e-9);
    assert!((e["kl_mean"]["se"].as_f64().unwrap() - stdev / n.sqrt()).abs() < 1e-9, "{} vs {}", e["kl_mean"], stdev / n.sqrt());
    let p = s["top1"].as_f64().unwrap();
    assert!((e["top1"]["se"].as_f64().unwrap() - (p * (1.0 - p) / (n - 1.0)).sqrt()).abs() < 1e-12);
    assert!((e["ppl_ratio"]["value"].as_f64().unwrap() - s["ppl_ratio"].as_f64().unwrap()).abs() < 1e-6 * s["ppl_ratio"].as_f64().unwrap());
    assert!(e["ln_ppl_ratio"]["se"].as_f64().unwrap() > 0.0 && e["delta_p_rms"]["se"].as_f64().unwrap() > 0.0);
    // The collapsed SFT changes every greedy answer; the first differing token is named.
    assert_eq!(s["flips"]["prompts"], 4);
    assert_eq!(s["flips"]["changed"], 4);
    let flip = &v["prompts"][0]["flip"];
    assert!(flip["at"].is_u64() && flip["reference"].is_string() && flip["reference"] != flip["candidate"], "{flip}");
    let notes: Vec<&str> = s["sample_notes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    assert!(
        kl.len() < 1000 && notes.iter().any(|n| n.starts_with(&format!("p99.9 over {} tokens is not resolved", kl.len()))),
        "{notes:?}"
    );
    let t = run(&[]);
    for line in [
        "====== llama.cpp-style summary over",
        "Mean PPL(Q)/PPL(base)     : ",
        "Mean    KLD: ",
        "RMS Δp    : ",
        "Same top p: ",
        "greedy answer changed: 4 of 4 prompts (100%); first: ",
        "note: p99.9 over",
    ] {
        assert!(t.stdout.contains(line), "{line:?} missing:\n{}", t.stdout);
    }
    assert!(t.stdout.contains(&format!("Mean    KLD: {:.6} ± {:.6}", mean, stdev / n.sqrt())), "{}", t.stdout);
    // The same model twice: nothing flips.
    let v =
        ckptcheck(&["compare", "--json", "--max-prompts", "2", "--max-new-tokens", "6", r.to_str().unwrap(), r.to_str().unwrap()]).json();
    assert_eq!((v["summary"]["flips"]["changed"].as_u64(), v["summary"]["flips"]["prompts"].as_u64()), (Some(0), Some(2)));
    assert!(v["prompts"][0]["flip"].is_null());
}

/// Issue 19's fp16 headroom: the layer trace records each hidden state's largest |value| in both
/// models; a layer past f16's 65504 is named (an f16 export of that model overflows there).
#[test]
fn fp16_headroom_names_the_layer_past_f16_range() {
    let d = tmp();
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    Fixture::healthy().write(&a);
    let mut f = Fixture::healthy();
    // Layer 1's MLP writes values ~3e5 into the residual stream (exact in f32, inf in f16).
    let t = f.tensor_mut("model.layers.1.mlp.down_proj.weight");
    for c in t.data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * 1e8;
        c.copy_from_slice(&x.to_le_bytes());
    }
    f.write(&b);
    let p = prompts_file(d.path());
    let v = compare_json(&a, &b, &p, &["--layers"]).json();
    let layers = v["layers"].as_array().unwrap();
    let max = |i: usize, k: &str| layers[i][k].as_f64().unwrap();
    assert!(max(1, "max_abs_cand") < 100.0 && max(1, "max_abs_cand") == max(1, "max_abs_ref"), "{layers:?}");
    assert!(max(2, "max_abs_cand") > 65504.0 && max(2, "max_abs_ref") < 100.0, "{layers:?}");
    let text = ckptcheck(&["compare", a.to_str().unwrap(), b.to_str().unwrap(), "--prompts", &p, "--layers"]);
    assert!(
        text.stdout.contains("fp16 headroom: the candidate's hidden state reaches")
            && text.stdout.contains("at layer 1, past f16's largest value 65504"),
        "{}",
        text.stdout
    );
    let healthy = ckptcheck(&["compare", a.to_str().unwrap(), a.to_str().unwrap(), "--prompts", &p, "--layers"]);
    assert!(!healthy.stdout.contains("fp16 headroom"), "{}", healthy.stdout);
}
