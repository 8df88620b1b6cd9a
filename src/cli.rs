//! Command-line arguments (clap derive). Raw input only: commands resolve and validate it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ckptcheck",
    version,
    about = "Tells whether a saved, merged or quantized LLM checkpoint still behaves like the model it came from",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a checkpoint really is: format, architecture, dtypes, shards, vocab, special
    /// tokens, chat template, quantization.
    Inspect(InspectArgs),
    /// Static checks with no forward pass: integrity, NaN/Inf, tokenizer ↔ weights, special
    /// tokens, chat template. Exit 0 clean, 1 findings at or above the fail level, 2 could not run.
    Lint(LintArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// HF model directory, PEFT adapter directory or `.safetensors` file.
    pub path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// HF model directory, PEFT adapter directory or `.safetensors` file.
    pub path: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Skip the NaN/Inf/zero/magnitude scan of every tensor value (metadata checks only).
    #[arg(long)]
    pub no_values: bool,
}
