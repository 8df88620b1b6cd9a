//! `inspect` and `lint` on GGUF files through the real binary (fixtures: testdata/gguf-fixtures).

mod common;

use common::*;

fn fixture(name: &str) -> String {
    format!("{}/testdata/gguf-fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn lint_gguf_alone_and_against_its_source() {
    let r = ckptcheck(&["lint", "--json", &fixture("tiny-llama.gguf")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = ckptcheck(&["lint", "--json", "--source", &fixture("hf"), &fixture("tiny-llama.gguf")]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.finding_ids().is_empty(), "{}", r.stdout);
    for (name, id) in [
        ("tiny-llama-wrong-eos.gguf", "gguf.eos-differs"),
        ("tiny-llama-no-template.gguf", "gguf.template-missing"),
        ("tiny-llama-other-tokenizer.gguf", "gguf.tokens-differ"),
        ("tiny-llama-wrong-rope.gguf", "gguf.rope-base-differs"),
    ] {
        let r = ckptcheck(&["lint", "--json", "--source", &fixture("hf"), &fixture(name)]);
        assert_eq!(r.code, 1, "{name}: {}{}", r.stdout, r.stderr);
        assert!(r.finding_ids().iter().any(|f| f == id), "{name}: {:?}", r.finding_ids());
    }
}

#[test]
fn source_needs_a_gguf_and_broken_gguf_is_exit_2() {
    let r = ckptcheck(&["lint", "--source", &fixture("hf"), &fixture("hf")]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("is not a GGUF file"), "{}", r.stderr);
    let d = tmp();
    let p = d.path().join("bad.gguf");
    let mut b = std::fs::read(fixture("all-types.gguf")).unwrap();
    let at = b.windows(17).position(|w| w == b"general.alignment").unwrap() + 17 + 4;
    b[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    std::fs::write(&p, b).unwrap();
    let r = ckptcheck(&["lint", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("bad.gguf") && r.stderr.contains("alignment 0 is not a power of two"), "{}", r.stderr);
}

#[test]
fn inspect_gguf_shows_metadata_and_type_mix() {
    let r = ckptcheck(&["inspect", "--json", &fixture("tiny-llama.gguf")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["format"], "gguf");
    assert_eq!(j["arch"]["block_count"], 2);
    assert_eq!(j["kind"], "instruct");
    assert_eq!(j["types"]["Q8_0"]["bytes"], 87040);
    assert_eq!(j["tokenizer"]["eos"], "2 `<|im_end|>`");
    let r = ckptcheck(&["inspect", &fixture("all-types.gguf")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for t in ["IQ4_NL", "TQ2_0", "MXFP4", "NVFP4", "Q8_K"] {
        assert!(r.stdout.contains(t), "{t}: {}", r.stdout);
    }
}
