//! Any byte string as a lineage manifest (`bisect`/`gate` TOML) must load or fail with an error,
//! never panic. The paths it names need not exist: `Manifest::load` only resolves them.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none manifest` (see fuzz/README.md).
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// One temp dir for the whole run; each input overwrites the same file.
fn manifest_path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lineage.toml");
        (dir, path)
    })
    .1
}

fuzz_target!(|data: &[u8]| {
    let path = manifest_path();
    std::fs::write(path, data).expect("write manifest");
    if let Ok(m) = ckptcheck::pipeline::manifest::Manifest::load(path) {
        let _ = format!("{m:?}");
    }
});
