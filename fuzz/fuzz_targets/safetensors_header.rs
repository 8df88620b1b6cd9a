//! Any byte string must parse to a header or an error, never panic or allocate without bound.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none safetensors_header` (see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = ckptcheck::format::safetensors::parse_header(data, std::path::Path::new("fuzz.safetensors")) {
        for p in &h.problems {
            let _ = p.message();
        }
    }
});
