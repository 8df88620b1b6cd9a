//! Gemma 2 GGUFs (testdata/zoo/gemma2_spm.py): a Gemma 2 with a SentencePiece vocabulary (the only
//! kind llama.cpp's Gemma2Model converts), its F16 GGUF, transformers' and llama.cpp's goldens, and
//! the softcapping metadata llama.cpp runs it with.

use candle_core::{DType, Device};
use ckptcheck::format::gguf::GgufFile;
use ckptcheck::model;

use crate::common::{self, ckptcheck};
use crate::engine;
use crate::gguf_engine::goldens;

const HF: &str = "models/gemma2-spm";
const GGUF: &str = "gguf/gemma2-spm-f16.gguf";

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

/// transformers on the HF directory: softcaps, sandwich norms, (1+w) norms, sliding + full layers.
#[test]
fn gemma2_spm_matches_transformers() {
    engine::check_variant("gemma2-spm");
}

/// The engine on the GGUF, with the architecture read from the GGUF's own metadata, against
/// llama.cpp's logits (and transformers', which llama.cpp is within 0.0043 of).
#[test]
fn gemma2_gguf_matches_llama_cpp_and_transformers() {
    let g = GgufFile::open(&common::zoo_path(GGUF)).unwrap();
    assert_eq!(g.header.get_str("general.architecture"), Some("gemma2"));
    assert_eq!(g.header.tokenizer().model, Some("llama"));
    let m = load(&g);
    assert_eq!((m.spec.attn_softcap, m.spec.final_softcap), (Some(50.0), Some(30.0)));
    for (variant, tol) in [("gguf-gemma2-spm-f16", 0.003f32), ("gemma2-spm", 0.003)] {
        for (pi, (ids, want, vocab)) in goldens(variant).iter().enumerate() {
            let got: Vec<f32> = m.forward(ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            let d = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let scale = want.iter().fold(1f32, |m, x| m.max(x.abs()));
            eprintln!("{variant} prompt {pi}: max |Δlogit| {d:.3e} (scale {scale:.1})");
            assert!(d <= tol * scale, "{variant} prompt {pi}: {d} > {tol} × {scale}");
            for (a, b) in got.chunks(*vocab).zip(want.chunks(*vocab)) {
                assert_eq!(ckptcheck::compare::metrics::argmax(a), ckptcheck::compare::metrics::argmax(b), "{variant} prompt {pi}");
            }
        }
    }
}

fn load(g: &GgufFile) -> model::Model {
    model::load_gguf(g, &Device::Cpu, DType::F32).unwrap()
}

/// compare runs the pair (the GGUF's SentencePiece tokenizer, no space prefix, rebuilt and
/// agreeing with transformers on every prompt), and lint --source finds nothing wrong with the
/// conversion beyond llama.cpp's second BOS (Gemma's converter sets add_bos_token; the template
/// starts with one).
#[test]
fn compare_and_lint_a_gemma2_gguf() {
    let (hf, gguf) = (common::zoo_path(HF), common::zoo_path(GGUF));
    let r = ckptcheck(&["compare", "--json", "--max-new-tokens", "8", s(&hf), s(&gguf)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["summary"]["prompt_token_mismatches"], 0, "{}", v["summary"]);
    assert!(v["summary"]["kl"]["mean"].as_f64().unwrap() < 1e-4, "{}", v["summary"]["kl"]);
    let r = ckptcheck(&["lint", "--json", "--source", s(&hf), s(&gguf)]);
    assert_eq!(r.finding_ids(), vec!["gguf.double-bos"], "{}", r.stdout);
}

/// Rewrites the f32 value of metadata key `key` in a copy of the zoo GGUF (what gguf-py's
/// gguf_set_metadata.py does in place), or with `rename` gives the key another name of the same
/// length, as a converter that never wrote it.
fn edited_gguf(dir: &std::path::Path, key: &str, value: Option<f32>, rename: Option<&str>) -> std::path::PathBuf {
    let mut bytes = std::fs::read(common::zoo_path(GGUF)).unwrap();
    let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap();
    let after = at + key.len();
    assert_eq!(u32::from_le_bytes(bytes[after..after + 4].try_into().unwrap()), 6, "{key} is not an f32");
    if let Some(v) = value {
        bytes[after + 4..after + 8].copy_from_slice(&v.to_le_bytes());
    }
    if let Some(new) = rename {
        assert_eq!(new.len(), key.len());
        bytes[at..after].copy_from_slice(new.as_bytes());
    }
    let p = dir.join("gemma2-spm-edited.gguf");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Softcapping metadata against config.json: an edited final cap is an error and changes what the
/// model computes; a missing key is a warning (current llama.cpp falls back to Gemma 2's 30, which
/// is the source's, and the engine does the same: same logits).
#[test]
fn softcap_metadata_is_checked_against_the_source() {
    let hf = common::zoo_path(HF);
    let d = common::tmp();
    let edited = edited_gguf(d.path(), "gemma2.final_logit_softcapping", Some(5.0), None);
    let r = ckptcheck(&["lint", "--json", "--source", s(&hf), s(&edited)]);
    let f = r.finding("gguf.softcap-differs");
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap().contains("caps at 5") && f["message"].as_str().unwrap().contains("is 30"), "{f}");
    let m = load(&GgufFile::open(&edited).unwrap());
    assert_eq!(m.spec.final_softcap, Some(5.0));
    let r = ckptcheck(&["compare", "--json", "--max-new-tokens", "8", s(&hf), s(&edited)]);
    let kl = r.json()["summary"]["kl"]["mean"].as_f64().unwrap();
    eprintln!("final cap 5 instead of 30: KL {kl}");
    assert!(kl > 0.05, "a final cap of 5 instead of 30 must move the distribution: KL {kl}");

    let d = common::tmp();
    let missing = edited_gguf(d.path(), "gemma2.final_logit_softcapping", None, Some("gemma2.final_logit_softcappinX"));
    let r = ckptcheck(&["lint", "--json", "--source", s(&hf), s(&missing)]);
    let f = r.finding("gguf.softcap-differs");
    assert_eq!(f["severity"], "warning", "{f}");
    let m = load(&GgufFile::open(&missing).unwrap());
    assert_eq!(m.spec.final_softcap, Some(30.0));
    let ids: Vec<u32> = goldens("gemma2-spm")[0].0.clone();
    let base = load(&GgufFile::open(&common::zoo_path(GGUF)).unwrap());
    let a: Vec<f32> = base.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = m.forward(&ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, b);
}
