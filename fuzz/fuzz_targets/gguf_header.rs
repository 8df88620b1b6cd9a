//! Any byte string must parse to a GGUF header or an error, never panic or allocate without bound;
//! the accessors `inspect` and `lint` use must not panic on what parsed.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none gguf_header` (see fuzz/README.md); the corpus was seeded with
//! testdata/gguf-fixtures/*.gguf.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ckptcheck::format::gguf::parse_header(data, std::path::Path::new("fuzz.gguf")) {
        for p in &h.problems {
            let _ = p.message();
        }
        let _ = (h.arch_meta(), h.type_summary(), h.blocks_in_tensors());
        let t = h.tokenizer();
        let _ = t.special_tokens();
        for (_, v) in &h.metadata {
            let _ = v.summary();
        }
    }
});
