//! Vision-language checkpoints (testdata/zoo/vlm.py): the language model of a Gemma 3 VLM as
//! transformers saves it (`language_model.model.*` beside a SigLIP tower and a projector, config in
//! `text_config`), the text GGUF llama.cpp's converter makes of it, and the mmproj file beside it.

use candle_core::{DType, Device};
use ckptcheck::format::gguf::GgufFile;
use ckptcheck::format::hf::HfDir;
use ckptcheck::model;

use crate::common::{self, ckptcheck};
use crate::engine;
use crate::gguf_engine;

const VLM: &str = "models/gemma3-vlm";
const TEXT_GGUF: &str = "gguf/gemma3-vlm-f16.gguf";
const MMPROJ: &str = "gguf/mmproj-gemma3-vlm-f16.gguf";

/// The decoder runs the VLM's language model and matches transformers' own VLM forward on
/// text-only ids (logits and every layer's hidden state).
#[test]
fn vlm_language_model_matches_transformers() {
    engine::check_variant("gemma3-vlm");
}

/// Qwen2.5-VL (transformers 5 saves the hub's layout: `model.layers.*` beside `visual.*`; config in
/// `text_config` with mrope sections): on text-only ids its mrope gives every section the same
/// positions, so the decoder's plain rope matches transformers' VLM forward.
#[test]
fn qwen2_5_vl_language_model_matches_transformers() {
    engine::check_variant("qwen2.5-vl");
    let r = ckptcheck(&["inspect", "--json", common::zoo_path("models/qwen2.5-vl").to_str().unwrap()]);
    let m = &r.json()["multimodal"];
    assert_eq!(m["language_model_prefix"], "model.");
    assert!(m["other_parameters"]["visual"].as_u64().unwrap() > 0, "{m}");
}

/// transformers 4.52+ saves the same model as `model.language_model.*` with `lm_head` at the top:
/// that layout loads too, to the same logits bit for bit.
#[test]
fn both_vlm_layouts_load_to_the_same_model() {
    let copy = common::zoo_copy("gemma3-vlm", &|_| {});
    common::rename_tensors(copy.path(), &|n| match n.strip_prefix("language_model.model.") {
        Some(rest) => format!("model.language_model.{rest}"),
        None => n.to_string(),
    });
    let renamed = HfDir::open(copy.path()).unwrap();
    assert!(renamed.tensors().all(|(_, t)| !t.name.starts_with("language_model.")));
    let a = model::load_hf(&HfDir::open(&common::zoo_path(VLM)).unwrap(), &Device::Cpu).unwrap();
    let b = model::load_hf(&renamed, &Device::Cpu).unwrap();
    let ids: Vec<u32> = (1..40).collect();
    let la: Vec<f32> = a.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
    let lb: Vec<f32> = b.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(la, lb);
}

/// The text GGUF the converter makes of the VLM directory runs as the VLM does in transformers
/// (F16 of bf16 weights: the tolerance of the other F16 GGUFs).
#[test]
fn text_gguf_of_a_vlm_matches_transformers() {
    let g = GgufFile::open(&common::zoo_path(TEXT_GGUF)).unwrap();
    assert_eq!(g.header.get_str("general.architecture"), Some("gemma3"));
    let m = model::load_gguf(&g, &Device::Cpu, DType::F32).unwrap();
    for (pi, (ids, want, vocab)) in gguf_engine::goldens("gemma3-vlm").iter().enumerate() {
        let got: Vec<f32> = m.forward(ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
        let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
        eprintln!("prompt {pi}: max |Δlogit| {d:.3e} (scale {scale:.2})");
        assert!(d <= 0.003 * scale, "prompt {pi}: {d}");
        for (a, b) in got.chunks(*vocab).zip(want.chunks(*vocab)) {
            assert_eq!(ckptcheck::compare::metrics::argmax(a), ckptcheck::compare::metrics::argmax(b), "prompt {pi}");
        }
    }
}

/// Qwen2.5-VL's text GGUF (`qwen2vl`: M-RoPE over `rope.dimension_sections`) runs as a Qwen2:
/// it matches llama.cpp's own logits and transformers' VLM forward; lint --source knows
/// `qwen2_5_vl` converts to `qwen2vl`, and finds the projector missing.
#[test]
fn qwen2vl_gguf_matches_llama_cpp_and_transformers() {
    let g = GgufFile::open(&common::zoo_path("gguf/qwen2.5-vl-f16.gguf")).unwrap();
    assert_eq!(g.header.get_str("general.architecture"), Some("qwen2vl"));
    let m = model::load_gguf(&g, &Device::Cpu, DType::F32).unwrap();
    for variant in ["gguf-qwen2.5-vl-f16", "qwen2.5-vl"] {
        for (pi, (ids, want, vocab)) in gguf_engine::goldens(variant).iter().enumerate() {
            let got: Vec<f32> = m.forward(ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
            eprintln!("{variant} prompt {pi}: max |Δlogit| {d:.3e} (scale {scale:.2})");
            assert!(d <= 0.003 * scale, "{variant} prompt {pi}: {d}");
            for (a, b) in got.chunks(*vocab).zip(want.chunks(*vocab)) {
                assert_eq!(ckptcheck::compare::metrics::argmax(a), ckptcheck::compare::metrics::argmax(b), "{variant} prompt {pi}");
            }
        }
    }
    // Beside it in gguf/ is Gemma's projector only (of the same width, 64): not Qwen's.
    let qwen = common::zoo_path("models/qwen2.5-vl");
    let r =
        ckptcheck(&["lint", "--json", "--source", qwen.to_str().unwrap(), common::zoo_path("gguf/qwen2.5-vl-f16.gguf").to_str().unwrap()]);
    assert_eq!(r.finding_ids(), vec!["gguf.mmproj-mismatch"], "{}", r.stdout);
    let msg = r.finding("gguf.mmproj-mismatch")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("is a `gemma3` projector, qwen2_5_vl needs `qwen2.5vl_merger`"), "{msg}");
    let alone = common::tmp();
    let copy = alone.path().join("qwen2.5-vl-f16.gguf");
    std::fs::copy(common::zoo_path("gguf/qwen2.5-vl-f16.gguf"), &copy).unwrap();
    assert_eq!(lint_ids(&["--source", qwen.to_str().unwrap(), copy.to_str().unwrap()]), vec!["gguf.mmproj-missing"]);
    // Another model's source: the architecture check now compares qwen2_5_vl.
    let ids =
        lint_ids(&["--source", common::zoo_path(VLM).to_str().unwrap(), common::zoo_path("gguf/qwen2.5-vl-f16.gguf").to_str().unwrap()]);
    assert!(ids.contains(&"gguf.architecture-differs".to_string()), "{ids:?}");
}

/// inspect says where the language model is and what else the directory holds; an mmproj GGUF
/// is named for what it is.
#[test]
fn inspect_names_the_parts_of_a_vlm() {
    let r = ckptcheck(&["inspect", "--json", common::zoo_path(VLM).to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let m = &v["multimodal"];
    assert_eq!(m["language_model_prefix"], "language_model.model.");
    let others = m["other_parameters"].as_object().unwrap();
    assert!(others["vision_tower"].as_u64().unwrap() > 0 && others["multi_modal_projector"].as_u64().unwrap() > 0, "{m}");
    let total = m["language_model_parameters"].as_u64().unwrap() + others.values().map(|x| x.as_u64().unwrap()).sum::<u64>();
    assert_eq!(total, v["parameters"].as_u64().unwrap());
    // A text model has no such section.
    let t = ckptcheck(&["inspect", "--json", common::zoo_path("models/gemma3").to_str().unwrap()]);
    assert!(t.json().get("multimodal").is_none());

    let p = ckptcheck(&["inspect", "--json", common::zoo_path(MMPROJ).to_str().unwrap()]);
    assert_eq!(p.json()["kind"], "multimodal projector (mmproj)");
}

/// compare runs the VLM against its text GGUF (the same weights: KL ≈ 0) and refuses the
/// projector with what to pass instead.
#[test]
fn compare_runs_a_vlm_against_its_gguf_and_refuses_the_projector() {
    let vlm = common::zoo_path(VLM);
    let r =
        ckptcheck(&["compare", "--json", "--max-new-tokens", "8", vlm.to_str().unwrap(), common::zoo_path(TEXT_GGUF).to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let kl = r.json()["summary"]["kl"]["mean"].as_f64().unwrap();
    assert!(kl < 1e-4, "KL {kl}");

    let r = ckptcheck(&["compare", vlm.to_str().unwrap(), common::zoo_path(MMPROJ).to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("multimodal projector") && r.stderr.contains("--mmproj"), "{}", r.stderr);
}

fn lint_ids(args: &[&str]) -> Vec<String> {
    let mut a = vec!["lint", "--json"];
    a.extend_from_slice(args);
    let r = ckptcheck(&a);
    r.json()["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
}

/// lint --source: the GGUF of a VLM with its projector beside it is clean; alone it is told the
/// projector is missing; with the projector of another model (another width) it is an error.
#[test]
fn lint_checks_the_projector_beside_a_vlm_gguf() {
    let vlm = common::zoo_path(VLM);
    let vlm = vlm.to_str().unwrap();
    let gguf = common::zoo_path(TEXT_GGUF);
    assert_eq!(lint_ids(&["--source", vlm, gguf.to_str().unwrap()]), Vec::<String>::new());

    let alone = common::tmp();
    let copy = alone.path().join("gemma3-vlm-f16.gguf");
    std::fs::copy(&gguf, &copy).unwrap();
    assert_eq!(lint_ids(&["--source", vlm, copy.to_str().unwrap()]), vec!["gguf.mmproj-missing"]);
    // Without a source nothing says the model was a VLM (a Gemma 3 1B is text-only).
    assert_eq!(lint_ids(&[copy.to_str().unwrap()]), Vec::<String>::new());

    // The projector of another model beside it: here a 128-wide model (qwen2-instruct's F16
    // GGUF, other findings aside) with the VLM's 64-wide projector.
    let other = common::tmp();
    let q = other.path().join("qwen2-instruct-f16.gguf");
    std::fs::copy(common::zoo_path("gguf/qwen2-instruct-f16.gguf"), &q).unwrap();
    std::fs::copy(common::zoo_path(MMPROJ), other.path().join("mmproj-f16.gguf")).unwrap();
    let r = ckptcheck(&["lint", "--json", "--source", vlm, q.to_str().unwrap()]);
    let f = r.finding("gguf.mmproj-mismatch");
    let msg = f["message"].as_str().unwrap();
    assert!(msg.contains("`mmproj-f16.gguf` projects images to 64-wide embeddings") && msg.contains("embedding_length is 128"), "{f}");
    assert_eq!(r.code, 1);
    // Without a VLM source nothing is checked: a folder may hold one model's projector beside
    // text models (the zoo's gguf/ does).
    assert!(!lint_ids(&[q.to_str().unwrap()]).iter().any(|i| i.starts_with("gguf.mmproj")));

    // The projector by itself: integrity and values only (no vocabulary to miss).
    assert_eq!(lint_ids(&[common::zoo_path(MMPROJ).to_str().unwrap()]), Vec::<String>::new());
}

/// bisect of a VLM → text GGUF lineage whose GGUF was shipped without its projector: the step
/// still computes the same function (it passes the metrics) and carries gguf.mmproj-missing.
#[test]
fn bisect_notes_a_vlm_gguf_shipped_without_its_projector() {
    let d = common::tmp();
    let gguf = d.path().join("gemma3-vlm-f16.gguf");
    std::fs::copy(common::zoo_path(TEXT_GGUF), &gguf).unwrap();
    let manifest = d.path().join("lineage.toml");
    let text = format!(
        "name = \"vlm without mmproj\"\nprompts = {:?}\nmax_new_tokens = 4\n\n[[step]]\nlabel = \"vlm\"\npath = {:?}\n\n[[step]]\nlabel = \"gguf\"\npath = {:?}\n",
        common::zoo_path("prompts.jsonl"),
        common::zoo_path(VLM),
        gguf
    );
    std::fs::write(&manifest, text).unwrap();
    let r = ckptcheck(&["bisect", "--json", manifest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    let step = v["steps"].as_array().unwrap().iter().find(|s| s["label"] == "gguf").unwrap();
    assert!(step["findings"].as_array().unwrap().iter().any(|f| f["id"] == "gguf.mmproj-missing"), "{:#}", step["findings"]);
}
