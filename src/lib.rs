//! ckptcheck: tells an ML engineer whether a saved, merged or quantized LLM checkpoint still
//! behaves like the model it came from, and if not, which step broke it and why.
//!
//! Layers, bottom up: `format` reads files (no candle), `checks` turns what was read into
//! findings, `commands` run one subcommand each, `output` is the only writer to the terminal.
//! See ARCHITECTURE.md for the codemap and invariants.

pub mod chat;
pub mod checkpoint;
pub mod checks;
pub mod cli;
pub mod commands;
pub mod compare;
pub mod error;
pub mod format;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod settings;
pub mod verdict;

pub use error::{Error, Result};
