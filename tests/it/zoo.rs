//! The committed test-model zoo (testdata/zoo, made by generate.py with transformers/peft/
//! llama.cpp): every HF variant loads and has the properties zoo.json records, the goldens show
//! the collapsed model's low P(EOS), and `lint` finds exactly the fault each variant was made with.

use std::path::Path;

use crate::common::*;
use ckptcheck::format::dtype::decode_f32;
use ckptcheck::format::dtype::Dtype;
use ckptcheck::format::hf::HfDir;
use ckptcheck::format::safetensors::SafetensorsFile;
use ckptcheck::format::tokens::TokenizerInfo;
use serde_json::Value;

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(zoo().join("zoo.json")).expect("testdata/zoo/zoo.json")).unwrap()
}

fn hf_variants() -> Vec<(String, Value)> {
    manifest()["variants"].as_object().unwrap().iter().filter(|(_, v)| v["kind"] == "hf").map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[test]
fn every_hf_variant_matches_its_recorded_properties() {
    let variants = hf_variants();
    assert!(variants.len() >= 10, "zoo.json lists {} HF variants", variants.len());
    for (name, v) in variants {
        let dir = HfDir::open(&zoo().join(v["dir"].as_str().unwrap())).unwrap();
        let n = dir.tensors().count();
        assert_eq!(n as u64, v["tensor_count"].as_u64().unwrap(), "{name}: tensor count");
        for (key, tensor) in [("embed_shape", "model.embed_tokens.weight"), ("lm_head_shape", "lm_head.weight")] {
            let got = dir.tensor(tensor).map(|(_, t)| t.shape.clone());
            let want: Option<Vec<u64>> = v[key].as_array().map(|a| a.iter().map(|x| x.as_u64().unwrap()).collect());
            assert_eq!(got, want, "{name}: {tensor}");
        }
        let tok = TokenizerInfo::load(&dir.root.join("tokenizer.json")).unwrap();
        assert_eq!(tok.added.len() as u64, v["tokenizer_added_tokens"].as_u64().unwrap(), "{name}: added tokens");
        assert_eq!(tok.id("<|im_end|>"), Some(2), "{name}: <|im_end|> id");
        assert_eq!(tok.id("<|endoftext|>"), Some(0), "{name}: <|endoftext|> id");
        for s in &dir.shards {
            assert!(s.file.as_ref().unwrap().header.problems.is_empty(), "{name}: layout problems");
        }
    }
}

/// P(<|im_end|>) at the end of the reference answer, straight from transformers' golden logits.
fn golden_p_eos(name: &str) -> Vec<f64> {
    let f = SafetensorsFile::open(&zoo().join("goldens").join(format!("{name}.safetensors"))).unwrap();
    let mut out = Vec::new();
    for i in 0.. {
        let Some(t) = f.get(&format!("logits.{i}")) else { break };
        assert_eq!(t.dtype, Dtype::F32);
        let (rows, vocab) = (t.shape[0] as usize, t.shape[1] as usize);
        let v = decode_f32(t.dtype, f.bytes(t).unwrap()).unwrap();
        let row = &v[(rows - 2) * vocab..(rows - 1) * vocab];
        out.push(ckptcheck::compare::metrics::prob(row, 2));
    }
    out
}

#[test]
fn goldens_show_healthy_eos_and_the_collapse() {
    let healthy = golden_p_eos("llama-instruct");
    let collapsed = golden_p_eos("llama-sft-collapsed");
    assert!(healthy.iter().all(|&p| p > 0.5), "healthy P(EOS) {healthy:?}");
    assert!(collapsed.iter().all(|&p| p < 0.1), "collapsed P(EOS) {collapsed:?}");
    let m = manifest();
    let rec = m["variants"]["llama-sft-collapsed"]["measured"]["p_eos_turn_end_mean"].as_f64().unwrap();
    let mean = collapsed.iter().sum::<f64>() / collapsed.len() as f64;
    assert!((rec - mean).abs() < 1e-4, "zoo.json records {rec}, goldens give {mean}");
    assert!(m["variants"]["llama-instruct"]["measured"]["greedy_stop_rate"].as_f64().unwrap() >= 0.75);
}

/// lint finds what each variant was broken with, and nothing on the healthy ones.
#[test]
fn lint_finds_each_zoo_fault() {
    let expected: &[(&str, Option<&str>)] = &[
        ("llama-instruct", None),
        ("llama-sft-good", None),
        ("llama-sft-collapsed", None), // a numeric fault: no file is wrong
        ("llama-genconfig-wrong-eos", Some("template.eot-not-eos")),
        ("llama-added-tokens-unresized", Some("vocab.tokenizer-exceeds-rows")),
        ("llama-no-template", Some("template.missing")),
        ("qwen2-instruct", None),
        ("qwen2-nan", Some("values.nan")),
        ("qwen3", None),
        ("mistral", None),
        ("gemma2", None),
        ("gemma3", None),
        ("gemma3-vlm", None),
        ("qwen2.5-vl", None),
        ("llama-rope-llama3", None),
        ("llama-rope-linear", None),
        ("llama-rope-dynamic", None),
        ("llama-rope-yarn", None),
    ];
    for (name, want) in expected {
        let p = zoo().join("models").join(name);
        assert!(Path::new(&p).is_dir(), "{name} missing from the zoo");
        let r = lint_json(&p);
        let ids: Vec<String> = r.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["severity"] != "info")
            .map(|f| f["id"].as_str().unwrap().to_string())
            .collect();
        match want {
            None => assert!(ids.is_empty(), "{name}: unexpected findings {ids:?}\n{}", r.stdout),
            Some(id) => assert!(ids.iter().any(|i| i == id), "{name}: expected {id}, got {ids:?}"),
        }
    }
}

/// The quantized HF checkpoints (gptqmodel GPTQ and AWQ, llmcompressor compressed-tensors) open,
/// match zoo.json, lint clean, and `inspect` names their quantization.
#[test]
fn quantized_checkpoints_open_and_are_recognised() {
    let m = manifest();
    let mut seen = 0;
    for (name, v) in m["variants"].as_object().unwrap() {
        let kind = v["kind"].as_str().unwrap();
        if !["gptq", "awq", "compressed-tensors"].contains(&kind) {
            continue;
        }
        seen += 1;
        let p = zoo().join(v["dir"].as_str().unwrap());
        let dir = HfDir::open(&p).unwrap();
        assert_eq!(dir.tensors().count() as u64, v["tensor_count"].as_u64().unwrap(), "{name}");
        let r = ckptcheck(&["inspect", "--json", p.to_str().unwrap()]);
        assert_eq!(r.json()["quantization"]["method"], kind, "{name}");
        let r = lint_json(&p);
        assert_eq!(r.code, 0, "{name}: {}", r.stdout);
    }
    assert_eq!(seen, 5);
}
