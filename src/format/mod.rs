//! Checkpoint readers. Everything here reads files and describes them; nothing runs a model and
//! nothing depends on candle. Inputs are opened read-only and never written.
//!
//! `open_path` decides what a path is on disk (HF or PEFT adapter directory, a safetensors file
//! inside one, GGUF, pickle) and refuses pickles with a message that says how to convert them.
//! `crate::checkpoint::Checkpoint` builds on it; commands never call it directly.
//!
//! Every file is opened through `open_regular` (memory-mapped weights, sniffing) or read through
//! `read_capped` (side files, prompts, manifests, thresholds): a FIFO, a device or a socket is
//! refused before it is opened, so nothing blocks on a pipe or reads `/dev/zero` until memory
//! runs out, and a text read never holds more than its cap.

pub mod arch;
pub mod config;
pub mod dtype;
pub mod gguf;
pub mod hf;
pub mod hub;
pub mod lora;
pub mod names;
pub mod quant;
pub mod safetensors;
pub mod tokens;

use std::fs::File;
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

/// What a non-regular file is, in words ("a FIFO", "a character device", "a directory").
pub fn file_type_name(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else if t.is_file() {
        "a regular file"
    } else {
        "not a regular file"
    }
}

/// The error for a path that is not a regular file; an `Error::Io`, so lint's `files.unreadable`
/// names the file.
fn not_regular(path: &Path, t: std::fs::FileType) -> Error {
    let msg = format!("it is {}, not a regular file", file_type_name(t));
    Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidInput, msg))
}

/// Opens `path` read-only if it is a regular file (symlinks followed), with its length. The type
/// is checked with `metadata` before opening, so a FIFO never blocks the open, and again on the
/// open file.
pub fn open_regular(path: &Path) -> Result<(File, u64)> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
    }
    Ok((f, meta.len()))
}

/// Reads a whole regular file of at most `cap` bytes; `what` names it in the error ("a side
/// file", "a prompts file"). A file whose length is over the cap is refused unread; at most
/// `cap + 1` bytes are ever read, so a file that grows, or one whose length says 0 (procfs), is
/// refused by the bytes actually read. A missing file is an `Error::Io` of kind `NotFound`.
pub fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let too_large = |got: String| {
        let msg = format!("{got}, over the {cap}-byte limit for {what}");
        Error::io(path, std::io::Error::new(std::io::ErrorKind::FileTooLarge, msg))
    };
    let (f, len) = open_regular(path)?;
    if len > cap {
        return Err(too_large(format!("{len} bytes")));
    }
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.take(cap.saturating_add(1)).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
    if buf.len() as u64 > cap {
        return Err(too_large(format!("more than {cap} bytes")));
    }
    Ok(buf)
}

/// `read_capped` as UTF-8 text.
pub fn read_capped_text(path: &Path, cap: u64, what: &str) -> Result<String> {
    String::from_utf8(read_capped(path, cap, what)?).map_err(|e| {
        let msg = format!("not UTF-8 text: {}", e.utf8_error());
        Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, msg))
    })
}

/// Sniffs a file: GGUF magic, zip/pickle magic, or the `.safetensors` extension.
pub fn sniff(path: &Path) -> Result<FileKind> {
    let mut head = [0u8; 4];
    let (mut f, _) = open_regular(path)?;
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
    if !meta.is_file() {
        return Err(not_regular(path, meta.file_type()));
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

/// A range of a memory-mapped weights file that keeps the map alive: the engine multiplies by
/// weights where they are stored, so a model costs page cache, not anonymous memory.
#[derive(Clone)]
pub struct MappedBytes {
    map: std::sync::Arc<memmap2::Mmap>,
    start: usize,
    len: usize,
}

impl MappedBytes {
    /// `part` must be a sub-slice of `map` (it is, from `checked_bytes`).
    fn within(map: &std::sync::Arc<memmap2::Mmap>, part: &[u8]) -> MappedBytes {
        let start = (part.as_ptr() as usize).checked_sub(map.as_ptr() as usize).filter(|s| s + part.len() <= map.len());
        let start = start.expect("MappedBytes::within: the slice lies in the map");
        MappedBytes { map: map.clone(), start, len: part.len() }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.start + self.len]
    }

    /// `len` bytes from `offset` within these bytes (one expert of a GGUF's 3-D expert tensor);
    /// `None` when that range is not inside.
    pub fn slice(&self, offset: usize, len: usize) -> Option<MappedBytes> {
        let end = offset.checked_add(len).filter(|&e| e <= self.len)?;
        Some(MappedBytes { map: self.map.clone(), start: self.start + offset, len: end - offset })
    }

    /// The whole of a file, mapped (unit tests of the engine's kernels).
    #[cfg(test)]
    pub fn test_map(path: &Path) -> MappedBytes {
        let f = File::open(path).unwrap();
        // SAFETY: a test's own temporary file, not modified while mapped.
        let map = std::sync::Arc::new(unsafe { memmap2::Mmap::map(&f) }.unwrap());
        let len = map.len();
        MappedBytes { map, start: 0, len }
    }
}

impl std::fmt::Debug for MappedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MappedBytes({} bytes at {})", self.len, self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(e: &Error) -> std::io::ErrorKind {
        match e {
            Error::Io { source, .. } => source.kind(),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    #[test]
    fn read_capped_reads_a_regular_file_within_the_cap() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a.txt");
        std::fs::write(&p, "hello").unwrap();
        assert_eq!(read_capped(&p, 5, "a test file").unwrap(), b"hello");
        assert_eq!(read_capped_text(&p, 5, "a test file").unwrap(), "hello");
        let e = read_capped(&p, 4, "a test file").unwrap_err();
        assert_eq!(kind(&e), std::io::ErrorKind::FileTooLarge);
        assert!(e.to_string().contains("a.txt") && e.to_string().contains("5 bytes, over the 4-byte limit for a test file"), "{e}");
        let e = read_capped(&d.path().join("missing"), 4, "a test file").unwrap_err();
        assert_eq!(kind(&e), std::io::ErrorKind::NotFound);
    }

    /// The cap holds by bytes read, not by the length metadata claims: procfs files say 0 bytes.
    #[cfg(target_os = "linux")]
    #[test]
    fn read_capped_counts_bytes_read_not_the_metadata_length() {
        let p = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(p).unwrap().len(), 0);
        let e = read_capped(p, 16, "a test file").unwrap_err().to_string();
        assert!(e.contains("more than 16 bytes, over the 16-byte limit"), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_before_opening() {
        let e = read_capped(Path::new("/dev/zero"), 1 << 20, "a test file").unwrap_err();
        assert_eq!(kind(&e), std::io::ErrorKind::InvalidInput);
        assert_eq!(e.to_string(), "cannot read `/dev/zero`: it is a character device, not a regular file");
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        // Opening a FIFO for reading blocks until a writer comes: the refusal must come first.
        let e = open_regular(&fifo).unwrap_err().to_string();
        assert!(e.ends_with("it is a FIFO, not a regular file"), "{e}");
        assert!(sniff(&fifo).is_err());
        let e = open_path(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        let e = open_regular(d.path()).unwrap_err().to_string();
        assert!(e.ends_with("it is a directory, not a regular file"), "{e}");
    }
}

/// `path` with `.` dropped and each `dir/..` pair removed, lexically (no file system access), for
/// showing paths: `testdata/pipelines/../zoo/m` → `testdata/zoo/m`. A leading `..` stays. Never
/// used to open a file: through a symlinked `dir`, `dir/..` is another directory.
pub fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            Component::ParentDir if matches!(out.last(), Some(Component::RootDir | Component::Prefix(_))) => {}
            c => out.push(c),
        }
    }
    if out.is_empty() {
        return PathBuf::from(".");
    }
    out.iter().collect()
}

#[cfg(test)]
mod lexical_tests {
    use std::path::Path;

    #[test]
    fn lexical_paths_drop_dot_and_dir_dotdot_pairs() {
        for (given, want) in [
            ("testdata/pipelines/../zoo/models/m", "testdata/zoo/models/m"),
            ("/r/testdata/pipelines/../zoo/./m", "/r/testdata/zoo/m"),
            ("../zoo/m", "../zoo/m"),
            ("a/..", "."),
            ("/..", "/"),
            ("a/../../b", "../b"),
        ] {
            assert_eq!(super::lexical(Path::new(given)), Path::new(want), "{given}");
        }
    }
}
