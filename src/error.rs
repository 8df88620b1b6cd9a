//! Typed library errors: each variant names the file (and the tensor or field) it is about and
//! says what to do. Commands wrap these in `anyhow` only at the top level.
//!
//! Errors here mean "could not run" (exit code 2). Problems that a check can describe and keep
//! going past are `checks::Finding`s instead, never errors.

use std::path::PathBuf;

/// Everything the readers can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "refusing to load `{path}`: it is a Python pickle ({what}), and unpickling can run arbitrary code. \
         Convert it to safetensors first, e.g. `python -c \"from transformers import AutoModelForCausalLM as M; \
         M.from_pretrained('DIR', torch_dtype='auto').save_pretrained('OUT', safe_serialization=True)\"` \
         (tokenizer files can be copied as they are), then point ckptcheck at OUT"
    )]
    Pickle { path: PathBuf, what: &'static str },

    /// A Hub id (`org/name[@revision]`) that is neither a local path nor in the local cache.
    #[error(
        "`{id}` is not a local path and not in the Hugging Face cache at `{cache}` ({what}); download it with \
         `{command}` (or set HF_HUB_CACHE / HF_HOME to the cache that has it), or give a local directory"
    )]
    NotCached { id: String, cache: PathBuf, what: String, command: String },

    #[error("`{path}` is not a checkpoint ckptcheck can read: {reason}")]
    NotACheckpoint { path: PathBuf, reason: String },

    /// Two variants that `compare` cannot score against each other, found before loading either.
    #[error("cannot compare `{candidate}` with `{reference}`: {reason}")]
    NotComparable { reference: PathBuf, candidate: PathBuf, reason: String },

    #[error("`{path}`: safetensors header: {detail}")]
    SafetensorsHeader { path: PathBuf, detail: String },

    #[error("`{path}`: tensor `{tensor}`: {detail}")]
    Tensor { path: PathBuf, tensor: String, detail: String },

    #[error("`{path}`: field `{field}`: {detail}")]
    Field { path: PathBuf, field: String, detail: String },

    #[error("`{path}` is not valid JSON: {detail}")]
    Json { path: PathBuf, detail: String },

    #[error("`{path}`: tokenizer could not be loaded: {detail}")]
    Tokenizer { path: PathBuf, detail: String },

    /// An output path (`--report`, `--junit`) that would replace an input, or is not a regular
    /// file, or is named twice.
    #[error("refusing to write {flag} `{path}`: {reason}")]
    Output { flag: &'static str, path: PathBuf, reason: String },

    #[error("cannot write the {what} report: {detail}")]
    Serialize { what: &'static str, detail: String },

    /// An error already reported once, repeated for another comparison that needed the same
    /// variant (its message unchanged).
    #[error("{0}")]
    Again(String),

    #[error("cannot use the requested device: {detail}")]
    Device { detail: String },

    #[error("chat template from `{path}`: {detail}")]
    Template { path: PathBuf, detail: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
