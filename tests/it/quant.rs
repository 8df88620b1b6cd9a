//! GPTQ (gptqmodel), AWQ GEMM (gptqmodel), compressed-tensors pack-quantized (llmcompressor) and
//! bitsandbytes nf4 / fp4 / int8 (transformers + bitsandbytes) checkpoints from the zoo: the project's dequantization equals the upstream dequantized weights
//! (`dequant.*` in the goldens, written by gptqmodel / compressed-tensors), and the engine on them
//! matches the upstream forward's logits.

use candle_core::{DType, Device};
use ckptcheck::format::dtype::decode_f32;
use ckptcheck::format::hf::HfDir;
use ckptcheck::format::safetensors::SafetensorsFile;
use ckptcheck::model;
use ckptcheck::model::quant::QuantWeights;

use crate::common;

fn golden(name: &str) -> SafetensorsFile {
    SafetensorsFile::open(&common::zoo().join("goldens").join(format!("{name}.safetensors"))).unwrap()
}

fn f32s(f: &SafetensorsFile, key: &str) -> Vec<f32> {
    let t = f.get(key).unwrap();
    decode_f32(t.dtype, f.bytes(t).unwrap()).unwrap()
}

#[test]
fn dequantization_equals_upstream_and_logits_match() {
    // (model dir, golden, max |Δw| / max |w|, max |Δlogit| / logit scale). The references differ
    // in precision: compressed-tensors is decompressed in f32 and run by transformers in f32, so
    // it must match to summation order (measured: Δw 0, Δlogit 2.5e-6 of scale). gptqmodel's
    // torch backend dequantizes and multiplies in the checkpoint's bf16/f16, so its weights carry
    // up to two bf16 roundings (measured Δw 3.4e-3 GPTQ, 3.9e-4 AWQ of max |w|) and its logits
    // drift accordingly (measured 9.5e-3 GPTQ, 1.9e-3 AWQ of scale); tolerances ~1.5–2× those.
    // bitsandbytes (0.50.2, transformers on CPU): 4-bit weights dequantized by bnb's own
    // `dequantize_4bit` are equal to ours bit for bit, and its forward multiplies them in f32
    // (measured Δlogit 3.6e-6 of scale). Its LLM.int8 forward quantizes the activations too
    // (per row to int8, outliers above 6.0 kept in float) where the engine keeps them in f32:
    // the weights are equal (Δw 0), the logits differ by that activation rounding (measured
    // 1.8e-2 of scale; bnb's own int8 forward is 0.31 logits from the f32 model).
    // Tolerances: 3× and 1.7×.
    for (dir, name, w_tol, tol) in [
        ("llama-gptq-w4g128", "gptq-w4g128", 5e-3f32, 2e-2f32),
        ("llama-awq-w4g128", "awq-w4g128", 1e-3, 4e-3),
        ("llama-ct-w4a16", "ct-w4a16", 1e-7, 1e-4),
        ("llama-bnb-nf4", "bnb-nf4", 1e-7, 1e-5),
        ("llama-bnb-fp4", "bnb-fp4", 1e-7, 1e-5),
        ("llama-bnb-int8", "bnb-int8", 1e-7, 3e-2),
    ] {
        let hf = HfDir::open(&common::zoo().join("models").join(dir)).unwrap();
        let q = QuantWeights::from_config(&hf).unwrap().unwrap_or_else(|| panic!("{dir}: not recognised as quantized"));
        let g = golden(name);
        let mut checked = 0;
        for t in &g.header.tensors {
            let Some(module) = t.name.strip_prefix("dequant.").and_then(|n| n.strip_suffix(".weight")) else { continue };
            let want = f32s(&g, &t.name);
            let (got, out, inp) = q.dequantize(module).unwrap().unwrap();
            assert_eq!((out as u64, inp as u64), (t.shape[0], t.shape[1]), "{dir} {module}");
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            eprintln!("{dir} {module}: max |Δw| / max |w| = {:.2e}", d / scale);
            assert!(d <= scale * w_tol, "{dir} {module}: max |Δw| {d} (scale {scale})");
            checked += 1;
        }
        assert!(checked >= 2, "{dir}: {checked} dequantized references");

        let m = model::load_with(&hf, &q, &Device::Cpu, DType::F32).unwrap();
        for i in 0.. {
            let Some(ids_t) = g.get(&format!("input_ids.{i}")) else { break };
            let ids: Vec<u32> = g.bytes(ids_t).unwrap().chunks(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect();
            let want = f32s(&g, &format!("logits.{i}"));
            let got: Vec<f32> = m.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            eprintln!("{dir} prompt {i}: max |Δlogit| {d:.2e} (scale {scale:.1})");
            assert!(d <= tol * scale, "{dir} prompt {i}: max |Δlogit| {d} > {tol} × {scale}");
        }
    }
}

/// `compare HF quantized` runs the quantized checkpoints through the project's dequantization;
/// 4-bit group-128 quantization of the zoo model stays well inside the default thresholds.
#[test]
fn compare_against_quantized_checkpoints() {
    let zoo = common::zoo();
    for dir in ["llama-gptq-w4g128", "llama-awq-w4g128", "llama-ct-w4a16", "llama-bnb-nf4", "llama-bnb-fp4", "llama-bnb-int8"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ckptcheck"))
            .args(["compare", "--json", "--prompts"])
            .arg(zoo.join("prompts.jsonl"))
            .arg(zoo.join("models/llama-instruct"))
            .arg(zoo.join("models").join(dir))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{dir}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let kl = v["summary"]["kl"]["mean"].as_f64().unwrap();
        assert!(kl > 0.0 && kl < 0.01, "{dir}: KL mean {kl}");
        assert_eq!(v["summary"]["cand_stop_rate"], 1.0, "{dir}");
    }
}

/// Failure catalogue #18: a GPTQ v1 checkpoint whose stored zero point wrapped to 0xF (a copy of
/// the zoo's gptqmodel checkpoint with one qzeros nibble set by the test) fails lint.
#[test]
fn gptq_v1_zero_point_overflow_is_an_error() {
    let src = common::zoo().join("models/llama-gptq-w4g128");
    let d = common::tmp();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
        }
    }
    let st = d.path().join("model.safetensors");
    let f = SafetensorsFile::open(&st).unwrap();
    let t = f.get("model.layers.1.mlp.up_proj.qzeros").unwrap();
    let pos = (f.header.data_start + t.start) as usize;
    drop(f);
    let mut bytes = std::fs::read(&st).unwrap();
    bytes[pos] |= 0x0F;
    std::fs::write(&st, bytes).unwrap();
    let r = common::lint_json(d.path());
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert_eq!(r.finding("quant.gptq-zero-overflow")["field"], "model.layers.1.mlp.up_proj.qzeros");
}

/// QLoRA (quant_bnb.py, peft over the zoo's nf4 base): merge-check dequantizes the nf4 base with
/// the engine's bitsandbytes scheme. A merge into that dequantized base equals W_deq + s·B·A to
/// bf16 rounding; a merge into the bf16 original (the usual QLoRA merge) is the right delta plus
/// the base's 4-bit rounding, accepted with an info; a merge with lora_alpha 4× fails as a wrong
/// scale with c ≈ 8 — the noise of the base does not hide it.
#[test]
fn qlora_merges_into_a_quantized_base() {
    let m = |rel: &str| common::zoo_path(&format!("models/{rel}")).to_str().unwrap().to_string();
    let (base, adapter) = (m("llama-bnb-nf4"), m("llama-qlora-adapter"));
    let check = |merged: &str| {
        let r = common::ckptcheck(&["merge-check", "--json", "--base", &base, "--adapter", &adapter, "--merged", &m(merged)]);
        let v = r.json();
        let statuses: Vec<String> = v["modules"].as_array().unwrap().iter().map(|m| m["status"].as_str().unwrap().to_string()).collect();
        assert_eq!(statuses.len(), 21, "{merged}: {}", r.stdout);
        let fits: Vec<f64> = v["modules"].as_array().unwrap().iter().map(|m| m["fitted_scale"].as_f64().unwrap()).collect();
        (r, statuses, fits)
    };

    let (r, statuses, fits) = check("llama-qlora-merged-dequant");
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(statuses.iter().all(|s| s == "ok"), "{statuses:?}");
    assert!(fits.iter().all(|c| (c - 2.0).abs() < 1e-3), "{fits:?}");
    assert!(r.finding_ids().is_empty(), "{}", r.stdout);

    let (r, statuses, fits) = check("llama-qlora-merged");
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(statuses.iter().all(|s| s == "ok (original base)"), "{statuses:?}");
    assert!(fits.iter().all(|c| (c - 2.0).abs() < 0.05), "{fits:?}");
    assert_eq!(r.finding_ids(), vec!["merge.quantized-base-original"], "{}", r.stdout);
    assert!(r.finding("merge.quantized-base-original")["message"].as_str().unwrap().contains("21 of 21"));

    let (r, statuses, fits) = check("llama-qlora-merged-wrong-scale");
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(statuses.iter().all(|s| s == "wrong scale"), "{statuses:?}");
    assert!(fits.iter().all(|c| (c - 8.0).abs() < 0.05), "{fits:?}");
    assert!(r.finding_ids().iter().all(|id| id == "merge.wrong-scale"), "{}", r.stdout);
}

/// `compare nf4+adapter merged`: the adapter runs over the engine's nf4 weights as peft runs it;
/// the merge into the dequantized base matches it to bf16 rounding, the wrong scale does not.
#[test]
fn qlora_adapter_over_nf4_compares_with_its_merges() {
    let m = |rel: &str| common::zoo_path(&format!("models/{rel}")).to_str().unwrap().to_string();
    let pair = format!("{}+{}", m("llama-bnb-nf4"), m("llama-qlora-adapter"));
    let kl = |merged: &str| {
        let r = common::ckptcheck(&["compare", "--json", &pair, &m(merged)]);
        let v = r.json();
        (r.code, v["summary"]["kl"]["mean"].as_f64().unwrap())
    };
    let (code, good) = kl("llama-qlora-merged-dequant");
    assert_eq!(code, 0);
    assert!(good < 1e-3, "KL {good}");
    let (code, bad) = kl("llama-qlora-merged-wrong-scale");
    assert_eq!(code, 1);
    assert!(bad > 0.05, "KL {bad}");
}
