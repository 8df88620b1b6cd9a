//! Every command opens paths through the one `Checkpoint`: each form (HF dir, GGUF, adapter,
//! BASE+ADAPTER) reaches every command that can use it, and a form a command cannot use gets a
//! message naming what it is and what was needed. Every report goes through one writer family:
//! `--report` on compare and bisect, `--junit` on bisect.

use crate::common::*;

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// Regression: `merge-check --base x.gguf` and `lint --source a.gguf b.gguf` used to say GGUF is
/// a format "this version … does not read yet".
#[test]
fn a_gguf_where_an_hf_directory_is_needed_is_named_as_such() {
    let gguf = zoo_path("gguf/llama-instruct-f16.gguf");
    let r = ckptcheck(&[
        "merge-check",
        "--base",
        s(&gguf),
        "--adapter",
        s(&zoo_path("models/llama-lora-adapter")),
        "--merged",
        s(&zoo_path("models/llama-lora-merged")),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("needs an HF model directory, and this is a GGUF file"), "{}", r.stderr);
    assert!(!r.stderr.contains("does not read yet"), "{}", r.stderr);
    let r = ckptcheck(&["lint", "--source", s(&gguf), s(&zoo_path("gguf/llama-instruct-q8_0.gguf"))]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("llama-instruct-f16.gguf` is a GGUF file"), "{}", r.stderr);
    assert!(r.stderr.contains("takes the HF model directory") && r.stderr.contains("run `ckptcheck compare "), "{}", r.stderr);
}

#[test]
fn an_adapter_alone_cannot_run_and_says_how_to() {
    let adapter = zoo_path("models/llama-lora-adapter");
    let r = ckptcheck(&["compare", "--max-prompts", "1", s(&zoo_path("models/llama-instruct")), s(&adapter)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("BASE+ADAPTER"), "{}", r.stderr);
    // lint and inspect read it as an adapter directory.
    assert_eq!(ckptcheck(&["inspect", "--json", s(&adapter)]).json()["format"], "peft-adapter");
    assert!(lint_json(&adapter).code <= 1);
}

#[test]
fn compare_writes_the_html_report_with_both_variants() {
    let d = tmp();
    let html = d.path().join("r.html");
    let r = ckptcheck(&[
        "compare",
        "--prompts",
        s(&zoo_path("prompts.jsonl")),
        "--max-prompts",
        "2",
        "--report",
        s(&html),
        s(&zoo_path("models/llama-instruct")),
        s(&zoo_path("models/llama-sft-collapsed")),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"verdict\"") && page.contains("id=\"plot-kl\""), "{page}");
    assert!(page.contains("llama-sft-collapsed</b> breaks it"), "the candidate is named as the failing step");
    assert!(r.stderr.contains(&format!("wrote {}", html.display())), "{}", r.stderr);
}

#[test]
fn bisect_writes_junit_and_html_like_gate() {
    let d = tmp();
    let (junit, html) = (d.path().join("j.xml"), d.path().join("r.html"));
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/sft-collapse.toml");
    let r = ckptcheck(&["bisect", "--junit", s(&junit), "--report", s(&html), s(&manifest)]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.starts_with("<?xml") && xml.contains("<failure"), "{xml}");
    assert!(std::fs::read_to_string(&html).unwrap().contains("id=\"steps\""));
}

#[test]
fn manifest_settings_are_typed_and_a_bad_one_names_the_field() {
    let d = tmp();
    let m = d.path().join("m.toml");
    let model = zoo_path("models/llama-instruct");
    std::fs::write(&m, format!("dtype = \"f8\"\n[[step]]\npath = \"{}\"\n[[step]]\npath = \"{}\"\n", s(&model), s(&model))).unwrap();
    let r = ckptcheck(&["bisect", s(&m)]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("m.toml") && r.stderr.contains("`f8` is not one of f32, bf16, f16, auto"), "{}", r.stderr);
    let r = ckptcheck(&["compare", "--device", "cuda:x", s(&model), s(&model)]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`cuda:x` is not one of auto, cpu, cuda"), "{}", r.stderr);
}
