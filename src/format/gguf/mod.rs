//! A hostile-input GGUF reader (versions 2 and 3, little-endian): memory-maps the file read-only,
//! parses the header, every metadata value and every tensor info itself, computes each tensor's
//! byte size from its ggml type, and reports every layout problem (out of the file, misaligned,
//! overlapping, not where llama.cpp expects it) instead of stopping at the first.
//!
//! candle's `gguf_file` refuses a whole file over one IQ/TQ/MXFP4 tensor and panics on
//! `general.alignment = 0`; gguf-rs gets several byte sizes wrong (measured against files from llama.cpp's converter).
//! This reader knows every type id llama.cpp's `ggml.h` defines, names the removed ones, and never
//! allocates more than the file could describe: every count and length is checked against the
//! bytes left before anything is reserved.
//!
//! It never decodes tensor values and never depends on candle; `checks::gguf` reads the
//! tokenizer/architecture metadata through the accessors in `metadata` and `tokenizer`.
//!
//! Files: `types` (ggml type ids and sizes), `parse` (caps, `parse_header`, layout problems),
//! `metadata` (values, `Header` lookups, `ArchMeta`, `hf_config`), `tokenizer` (`GgufTokenizer`,
//! `to_hf`); this file holds `GgufFile`, the memory-mapped file, and re-exports them all.

use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::error::Error;

mod metadata;
mod parse;
mod tokenizer;
mod types;

pub use metadata::{gemma_softcaps, ArchMeta, ARCH_KEYS, GRANITE_SCALES, VALUE_TYPE_NAMES};
pub use parse::{
    parse_header, GgufError, GgufErrorKind, Header, LayoutProblem, TensorInfo, DEFAULT_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH, MAX_ARRAY_LEN,
    MAX_DIMS, MAX_KV, MAX_STRING_BYTES, MAX_TENSORS, MAX_TENSOR_NAME_BYTES, MAX_VERSION,
};
pub use tokenizer::{token_type, GgufTokenizer, GPT2_REGEX, KNOWN_PRE, LLAMA3_REGEX, QWEN2_REGEX};
pub use types::{describe_types, GgmlType, TypeBytes, REMOVED_TYPES, TYPES, TYPE_COUNT};
pub use types::{Array, Value};

/// A memory-mapped, read-only GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub header: Header,
    mmap: std::sync::Arc<Mmap>,
}

impl GgufFile {
    /// Opens and parses; fails only when the header cannot be read. Layout problems are in
    /// `header.problems`.
    /// A FIFO or device is refused before it is opened or mapped (`format::open_regular`).
    pub fn open(path: &Path) -> Result<GgufFile, Error> {
        let (file, _) = crate::format::open_regular(path)?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is the
        // usual mmap caveat, accepted by every GGUF reader (llama.cpp maps files the same way).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse_header(&mmap, path)?;
        Ok(GgufFile { path: path.to_path_buf(), header, mmap: std::sync::Arc::new(mmap) })
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// File name for findings.
    pub fn file_name(&self) -> String {
        super::hf::file_name(&self.path)
    }

    /// The tensor's bytes, or `None` when they fall outside the file.
    pub fn bytes(&self, t: &TensorInfo) -> Option<&[u8]> {
        let start = self.header.data_start.checked_add(t.offset)?;
        let end = start.checked_add(t.n_bytes)?;
        self.mmap.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    /// `checked_bytes` as a handle that keeps the file mapped (the engine's weights stay there).
    pub fn shared_bytes(&self, name: &str) -> Result<crate::format::MappedBytes, Error> {
        let b = self.checked_bytes(name)?;
        Ok(crate::format::MappedBytes::within(&self.mmap, b))
    }

    /// The tensor's bytes for compute: errors unless no layout problem touches it (llama.cpp's
    /// packing order is not required here, only in-bounds, aligned and not overlapping).
    pub fn checked_bytes(&self, name: &str) -> Result<&[u8], Error> {
        let t = self.header.tensor(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            detail: "not in this GGUF".into(),
        })?;
        // Problems past the listed ones were only counted: no tensor of such a file is trusted.
        if let Some((p, n)) = self.header.unlisted.first() {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                detail: format!("the file has {n} more layout problems like: {}; run `ckptcheck lint`", p.message()),
            });
        }
        if let Some(p) = self.header.problems.iter().find(|p| {
            !matches!(p, LayoutProblem::NotPacked { .. } | LayoutProblem::NameTooLong { .. })
                && (p.tensor() == name || matches!(p, LayoutProblem::Overlap { first, .. } if first == name))
        }) {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                detail: format!("{}; run `ckptcheck lint` for all problems", p.message()),
            });
        }
        self.bytes(t).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            detail: "data falls outside the file".into(),
        })
    }
}

/// A tiny GGUF writer for the unit tests of this module.
#[cfg(test)]
mod test_writer {
    use super::GgmlType;

    /// A tiny GGUF writer for unit tests (the fixtures in testdata/gguf-fixtures come from gguf-py).
    pub(crate) struct W {
        pub kv: Vec<u8>,
        pub n_kv: u64,
        pub infos: Vec<u8>,
        pub n_tensors: u64,
        pub data: Vec<u8>,
    }
    impl W {
        pub(crate) fn new() -> W {
            W { kv: vec![], n_kv: 0, infos: vec![], n_tensors: 0, data: vec![] }
        }
        pub(crate) fn s(b: &mut Vec<u8>, s: &str) {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        }
        pub(crate) fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        pub(crate) fn kv_f32(&mut self, k: &str, v: f32) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(6u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        pub(crate) fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(8u32.to_le_bytes());
            Self::s(&mut self.kv, v);
            self.n_kv += 1;
            self
        }
        pub(crate) fn kv_strs(&mut self, k: &str, v: &[&str]) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(9u32.to_le_bytes());
            self.kv.extend(8u32.to_le_bytes());
            self.kv.extend((v.len() as u64).to_le_bytes());
            for x in v {
                Self::s(&mut self.kv, x);
            }
            self.n_kv += 1;
            self
        }
        pub(crate) fn tensor(&mut self, name: &str, dims: &[u64], ty: u32) -> &mut Self {
            let t = GgmlType::from_id(ty).unwrap();
            let n = t.byte_len(dims.iter().product()).unwrap();
            Self::s(&mut self.infos, name);
            self.infos.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.infos.extend(d.to_le_bytes());
            }
            self.infos.extend(ty.to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            self.data.extend((0..n).map(|i| i as u8));
            while !self.data.len().is_multiple_of(32) {
                self.data.push(0);
            }
            self.n_tensors += 1;
            self
        }
        pub(crate) fn build(&self) -> Vec<u8> {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(self.n_tensors.to_le_bytes());
            b.extend(self.n_kv.to_le_bytes());
            b.extend(&self.kv);
            b.extend(&self.infos);
            while !b.len().is_multiple_of(32) {
                b.push(0);
            }
            b.extend(&self.data);
            b
        }
    }

    /// A valid three-tensor llama file.
    pub(crate) fn sample() -> Vec<u8> {
        W::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_strs("tokenizer.ggml.tokens", &["<s>", "a", "b"])
            .tensor("token_embd.weight", &[32, 3], 8)
            .tensor("blk.0.attn_norm.weight", &[32], 0)
            .tensor("blk.0.ffn_down.weight", &[256, 2], 12)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::sample;
    use super::*;

    /// Poor man's fuzzing in the normal test run: random byte flips, truncations and count
    /// rewrites of a valid file never panic and never allocate unboundedly.
    #[test]
    fn mutated_files_never_panic() {
        let good = sample();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20000 {
            let mut b = good.clone();
            match next() % 4 {
                0 => {
                    for _ in 0..(1 + next() % 4) {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
                1 => b.truncate((next() as usize) % b.len()),
                2 => {
                    // Rewrite an 8-byte little-endian field at a random spot with a hostile value.
                    let i = (next() as usize) % (b.len() - 8);
                    let v = [u64::MAX, 1 << 62, 1 << 40, 0, next() % 1000][(next() % 5) as usize];
                    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
                _ => {
                    let i = (next() as usize) % (b.len() - 4);
                    let v = [0u32, 3, 31, 99, u32::MAX, 9][(next() % 6) as usize];
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            match parse_header(&b, Path::new("m")) {
                Ok(h) => {
                    for p in &h.problems {
                        let _ = (p.message(), p.tensor());
                    }
                    let _ = (h.arch_meta(), h.tokenizer().special_tokens(), h.type_summary(), h.blocks_in_tensors());
                    for (_, v) in &h.metadata {
                        let _ = v.summary();
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}
