//! Mistral's tekken vocabulary in a GGUF (`tokenizer.ggml.pre = "tekken"`): the tokenizer rebuilt
//! from the GGUF's metadata against llama.cpp's own `llama_tokenize`, and the conversion compared
//! and linted against its HF source (testdata/zoo/tekken.py).

use ckptcheck::format::gguf::GgufFile;

use crate::common::{self, zoo_path};

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// Probes (case changes, digits one at a time, paths, CRLF, characters outside the vocabulary,
/// specials inside text) and the rendered golden prompts: the rebuild gives llama.cpp's ids, with
/// and without the BOS llama.cpp adds for tekken.
#[test]
fn rebuilt_tekken_tokenizer_gives_llama_cpp_ids() {
    let g = GgufFile::open(&zoo_path("gguf/mistral-tekken-f16.gguf")).unwrap();
    let tok = g.header.tokenizer();
    assert_eq!((tok.model, tok.pre), (Some("gpt2"), Some("tekken")));
    assert!(tok.adds_bos());
    let t = tok.to_hf().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(zoo_path("goldens/tekken-tokenize.json")).unwrap()).unwrap();
    let probes = doc["probes"].as_array().unwrap();
    assert!(probes.len() >= 14);
    for p in probes {
        let text = p["text"].as_str().unwrap();
        assert_eq!(t.encode(text, false).unwrap().get_ids(), ids(&p["llama_cpp"]), "{text:?}");
        assert_eq!(t.encode(text, true).unwrap().get_ids(), ids(&p["llama_cpp_add_special"]), "{text:?} with BOS");
        // The HF tokenizer the GGUF came from agrees (recorded by the generator).
        assert_eq!(ids(&p["llama_cpp"]), ids(&p["transformers"]), "{text:?}");
    }
}

/// The regex matters: the same vocabulary split by GPT-2's regex (the converter's fallback for an
/// unknown pre-tokenizer) tokenizes some probe differently, so the test above can fail. Few differ:
/// a vocabulary learned under tekken's splits has no token across GPT-2's boundaries, so only
/// where tekken's pre-tokens are the larger ones (punctuation joined to the word after it,
/// `/to`) can the results part.
#[test]
fn tekken_regex_is_not_gpt2s() {
    let g = GgufFile::open(&zoo_path("gguf/mistral-tekken-f16.gguf")).unwrap();
    let mut tok = g.header.tokenizer();
    tok.pre = Some("gpt-2");
    let t = tok.to_hf().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(zoo_path("goldens/tekken-tokenize.json")).unwrap()).unwrap();
    let differ = doc["probes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| t.encode(p["text"].as_str().unwrap(), false).unwrap().get_ids() != ids(&p["llama_cpp"]).as_slice())
        .count();
    assert!(differ >= 1, "no probe differs under GPT-2's regex");
}

#[test]
fn tekken_gguf_compares_and_lints_like_its_source() {
    let src = zoo_path("models/mistral-tekken");
    let gguf = zoo_path("gguf/mistral-tekken-f16.gguf");
    let r = common::ckptcheck(&["lint", "--json", gguf.to_str().unwrap(), "--source", src.to_str().unwrap()]);
    // Only the double BOS Mistral NeMo's own files have (template `<s>` + add_bos_token).
    assert_eq!(r.finding_ids(), ["gguf.double-bos"], "{}", r.stdout);
    let r = common::ckptcheck(&["compare", "--json", src.to_str().unwrap(), gguf.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    let s = &r.json()["summary"];
    assert_eq!(s["prompt_token_mismatches"], 0, "{s}");
    assert!(s["kl"]["mean"].as_f64().unwrap() < 1e-6, "{s}");
}
