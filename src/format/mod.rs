//! Checkpoint readers. Everything here reads files and describes them; nothing runs a model and
//! nothing depends on candle. Inputs are opened read-only and never written.
//!
//! `open` decides what a path is (HF directory, PEFT adapter, single safetensors file, GGUF,
//! pickle) and refuses pickles with a message that says how to convert them.

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

/// What a path on the command line turned out to be.
#[derive(Debug)]
pub enum Checkpoint {
    /// An HF model directory or a PEFT adapter directory (see `HfDir::is_adapter`).
    Hf(hf::HfDir),
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

/// Opens whatever `path` names.
pub fn open(path: &Path) -> Result<Checkpoint> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Ok(Checkpoint::Hf(hf::HfDir::open(path)?));
    }
    match sniff(path)? {
        FileKind::Pickle(what) => Err(Error::Pickle {
            path: path.to_path_buf(),
            what,
        }),
        FileKind::Gguf => Err(Error::Unsupported {
            path: path.to_path_buf(),
            format: "GGUF",
            hint: "`inspect` and `lint` (with `--source HF_DIR`) read GGUF; running it (`compare`) is planned: meanwhile compare the HF directory it was converted from",
        }),
        // A weights file inside an HF directory: read the directory, so side files count.
        FileKind::Safetensors => {
            let dir = parent_dir(path);
            Ok(Checkpoint::Hf(hf::HfDir::open(&dir)?))
        }
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
