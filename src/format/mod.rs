//! Checkpoint readers. Everything here reads files and describes them; nothing runs a model and
//! nothing depends on candle. Inputs are opened read-only and never written.
//!
//! `open_path` decides what a path is on disk (HF or PEFT adapter directory, a safetensors file
//! inside one, GGUF, pickle) and refuses pickles with a message that says how to convert them.
//! `crate::checkpoint::Checkpoint` builds on it; commands never call it directly.

pub mod arch;
pub mod config;
pub mod dtype;
pub mod gguf;
pub mod hf;
pub mod lora;
pub mod quant;
pub mod safetensors;
pub mod tokens;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What a path turned out to be on disk. Returned once and moved into a `Checkpoint`, so the size
/// difference of its variants costs nothing.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Opened {
    /// An HF model directory or a PEFT adapter directory (see `HfDir::is_adapter`).
    Dir(hf::HfDir),
    Gguf(gguf::GgufFile),
}

/// The kind of file at a path, from its name and first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Safetensors,
    Gguf,
    Pickle(&'static str),
    Unknown,
}

/// Sniffs a file: GGUF magic, zip/pickle magic, or the `.safetensors` extension.
pub fn sniff(path: &Path) -> Result<FileKind> {
    let mut head = [0u8; 4];
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    if head == b"GGUF" {
        return Ok(FileKind::Gguf);
    }
    if let Some(k) = hf::pickle_kind(path) {
        return Ok(FileKind::Pickle(k));
    }
    // torch.save writes a zip (PK\x03\x04) or a raw pickle (protocol byte 0x80).
    if head.starts_with(b"PK\x03\x04") || head.first() == Some(&0x80) {
        return Ok(FileKind::Pickle("pickle or torch zip archive"));
    }
    if path.extension().is_some_and(|e| e == "safetensors") {
        return Ok(FileKind::Safetensors);
    }
    Ok(FileKind::Unknown)
}

/// Opens whatever `path` names on disk.
pub fn open_path(path: &Path) -> Result<Opened> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Ok(Opened::Dir(hf::HfDir::open(path)?));
    }
    match sniff(path)? {
        FileKind::Pickle(what) => Err(Error::Pickle { path: path.to_path_buf(), what }),
        FileKind::Gguf => Ok(Opened::Gguf(gguf::GgufFile::open(path)?)),
        // A weights file inside an HF directory: read the directory, so side files count.
        FileKind::Safetensors => Ok(Opened::Dir(hf::HfDir::open(&parent_dir(path))?)),
        FileKind::Unknown => Err(Error::NotACheckpoint {
            path: path.to_path_buf(),
            reason: "expected an HF model directory, a `.safetensors` file or a `.gguf` file".into(),
        }),
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
