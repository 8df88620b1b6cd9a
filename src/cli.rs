//! Command-line arguments (clap derive). Values with a fixed set of spellings (`--dtype`,
//! `--device`, `--gguf-matmul`) parse into the typed `settings` here, before any command runs;
//! paths are resolved by the commands.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::{ComputeDtype, DeviceChoice, GgufMatmul, RunSettings};

#[derive(Debug, Parser)]
#[command(
    name = "ckptcheck",
    version = env!("CKPTCHECK_VERSION"),
    about = "Tells whether a saved, merged or quantized LLM checkpoint still behaves like the model it came from",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Threads for the forward pass (default: every core).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// List every finding and merge-check row (text output groups repeats: the first few and a
    /// count).
    #[arg(long, short, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what a checkpoint really is: format, architecture, dtypes, shards, vocab, special
    /// tokens, chat template, quantization.
    Inspect(InspectArgs),
    /// Static checks with no forward pass: integrity, NaN/Inf, tokenizer ↔ weights, special
    /// tokens, chat template. Exit 0 clean, 1 findings at or above the fail level, 2 could not run.
    Lint(LintArgs),
    /// Run reference prompts through two variants (HF directories, GGUF files, base+adapter),
    /// teacher-forced on the reference's own greedy
    /// answers; report KL, top-1 agreement, Δp, perplexity, NaN/Inf, P(EOS) at turn end, whether
    /// greedy generation still stops, and (`--layers`) the first layer that diverges.
    Compare(CompareArgs),
    /// Check a LoRA merge statically: merged = base + s·B·A for every adapted module, with the
    /// fault named (not merged, wrong scale, transposed, wrong layer, overflow, untargeted changes).
    MergeCheck(MergeCheckArgs),
    /// Run a lineage (a manifest, or `A B C …` in order): lint every step, compare each against
    /// the reference and its parent, and name the first step that broke it and the cause.
    Bisect(BisectArgs),
    /// `bisect` for release CI: exit 0/1/2, `--json`, `--junit FILE`, `--report report.html`.
    Gate(GateArgs),
    /// Print a shell completion script or a man page, generated from these arguments.
    Completions(CompletionsArgs),
    /// Forward-pass throughput of one checkpoint (for `bench/run.py`).
    #[command(hide = true)]
    BenchForward(BenchArgs),
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// HF model directory or `.gguf` file.
    pub model: PathBuf,
    /// Tokens in the teacher-forced sequence.
    #[arg(long, default_value_t = 512)]
    pub tokens: usize,
    /// Timed passes (after one untimed warm-up).
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Logits for every position; by default only for positions ≥ tokens / 2, the half that
    /// `llama-perplexity` (and its `--kl-divergence`) scores, so both tools do the same work.
    #[arg(long)]
    pub all_logits: bool,
    #[command(flatten)]
    pub engine: EngineArgs,
    #[arg(long)]
    pub json: bool,
}

/// How the engine runs a checkpoint: the options every command that runs models shares.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Compute dtype: f32 (stored weights decoded inside each matmul), bf16, f16, or auto (the
    /// checkpoint's own).
    #[arg(long, default_value = "f32")]
    pub dtype: ComputeDtype,
    /// How a GGUF's quantized layers run: dense (exactly on the dequantized values, f32
    /// activations), quantized (activations quantized as ggml does, every quantized type), auto
    /// (llama.cpp's integer arithmetic for Q4_K/Q5_K/Q6_K on AVX-512 VNNI CPUs, dense for the rest).
    #[arg(long, default_value = "auto")]
    pub gguf_matmul: GgufMatmul,
    /// Compute device: auto (CUDA when built with `--features cuda` and a GPU is present), cpu,
    /// cuda (GPU 0) or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: DeviceChoice,
}

impl EngineArgs {
    pub fn settings(&self) -> RunSettings {
        RunSettings { dtype: self.dtype, device: self.device, gguf_matmul: self.gguf_matmul }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// HF model directory, PEFT adapter directory, `.safetensors` file or `.gguf` file.
    pub path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// HF model directory, PEFT adapter directory, `.safetensors` file or `.gguf` file.
    pub path: PathBuf,
    /// For a `.gguf` PATH: the HF checkpoint it was converted from; checks tokens, special ids,
    /// chat template, pre-tokenizer and config.json numbers against it.
    #[arg(long, value_name = "HF_DIR")]
    pub source: Option<PathBuf>,
    /// The checkpoint PATH was made from (HF directory or `BASE+ADAPTER`): also checks tokenizer,
    /// template and EOS changes against it, and matches weight fingerprints (layers swapped or
    /// duplicated, Q/K permuted, transposed, tensors left unchanged, head tied/untied, frozen
    /// layers), as bisect does between steps.
    #[arg(long, value_name = "PARENT")]
    pub parent: Option<PathBuf>,
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

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The reference variant: an HF model directory (or a `.safetensors` file in one), a `.gguf`
    /// file, or `BASE+ADAPTER` for a base model with a PEFT adapter applied on the fly.
    pub reference: PathBuf,
    /// The candidate variant (same forms as the reference: a GGUF runs with its own metadata
    /// and tokenizer).
    pub candidate: PathBuf,
    /// Prompts as JSONL (`{"messages": [...]}` or `{"text": ...}` per line); default: built-in set.
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Use only the first N prompts (N ≥ 1).
    #[arg(long, value_parser = at_least_one)]
    pub max_prompts: Option<usize>,
    /// Longest greedy answer, in tokens.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Score a plain-text file instead of prompts, as `llama-perplexity -f FILE` does: chunks of
    /// `-c` tokens, the second half of each scored (KL, top-1, PPL ratio; nothing generated).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["prompts", "max_prompts"])]
    pub text: Option<PathBuf>,
    /// With --text: tokens per chunk (llama-perplexity's `-c`).
    #[arg(short = 'c', long = "ctx-size", value_name = "N", default_value_t = 512, requires = "text")]
    pub ctx_size: usize,
    /// With --text: score only the first N chunks (llama-perplexity's `--chunks`).
    #[arg(long, value_name = "N", value_parser = at_least_one, requires = "text")]
    pub chunks: Option<usize>,
    /// Trace hidden states per layer and name the first layer that diverges.
    #[arg(long)]
    pub layers: bool,
    /// The candidate has another id space (a trimmed, reordered or rebuilt vocabulary): read the
    /// reference's ids through a map, `auto` (equal token strings) or a JSON file
    /// (`{"<reference id>": <candidate id>}`), and score both on the shared vocabulary.
    /// See docs/compare.md#token-maps.
    #[arg(long, value_name = "auto|FILE", conflicts_with = "blame")]
    pub token_map: Option<PathBuf>,
    /// Name the candidate's tensors that make the difference: swap groups of them into the
    /// reference (each layer alone, then the guiltiest layer's modules) and score each hybrid.
    /// Both must have the same shapes (any formats). See docs/bisect.md#splice-to-blame.
    #[arg(long)]
    pub blame: bool,
    /// Most hybrid forward passes `--blame` runs (layers are grouped into blocks to fit).
    #[arg(long, default_value_t = 48, value_parser = at_least_one, value_name = "N")]
    pub blame_budget: usize,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// TOML file overriding the default thresholds (see docs/metrics.md).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct MergeCheckArgs {
    /// The base model the adapter was trained on (HF directory).
    #[arg(long)]
    pub base: PathBuf,
    /// The PEFT adapter directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    pub adapter: PathBuf,
    /// The merged model to check (HF directory).
    #[arg(long)]
    pub merged: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
}

/// `compare`'s run options for `bisect` and `gate`: each one given replaces the manifest's value.
#[derive(Debug, Args)]
pub struct LineageRunArgs {
    /// Prompts as JSONL (over the manifest's `prompts`).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Use only the first N prompts (N ≥ 1).
    #[arg(long, value_parser = at_least_one)]
    pub max_prompts: Option<usize>,
    /// Longest greedy answer, in tokens (over the manifest's `max_new_tokens`; default 32).
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Score a plain-text file instead of prompts, as `llama-perplexity -f FILE` does (over the
    /// manifest's `text`; replaces its prompts).
    #[arg(long, value_name = "FILE", conflicts_with = "prompts")]
    pub text: Option<PathBuf>,
    /// With a text corpus: tokens per chunk (over the manifest's `ctx`; default 512).
    #[arg(short = 'c', long = "ctx-size", value_name = "N")]
    pub ctx_size: Option<usize>,
    /// With a text corpus: score only the first N chunks (over the manifest's `chunks`).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub chunks: Option<usize>,
    /// TOML thresholds file applied over every step's thresholds (see docs/metrics.md).
    #[arg(long)]
    pub thresholds: Option<PathBuf>,
    /// Compute dtype: f32, bf16, f16 or auto (over the manifest's `dtype`; default f32).
    #[arg(long)]
    pub dtype: Option<ComputeDtype>,
    /// Compute device: auto, cpu, cuda or cuda:N (over the manifest's `device`).
    #[arg(long)]
    pub device: Option<DeviceChoice>,
    /// How GGUF steps run their quantized layers: dense, quantized or auto (over the manifest's).
    #[arg(long)]
    pub gguf_matmul: Option<GgufMatmul>,
    /// Most hybrid forward passes the blame of the first failing conversion may run; 0 turns it
    /// off (over the manifest's `blame_budget`; default 48). See docs/bisect.md#splice-to-blame.
    #[arg(long, value_name = "N")]
    pub blame_budget: Option<usize>,
    /// A training run: most checkpoints to evaluate; with more, the first failing one is
    /// binary-searched (over the manifest's `[run] checkpoint_budget`; default 8).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub checkpoint_budget: Option<usize>,
}

impl LineageRunArgs {
    pub fn overrides(&self) -> crate::pipeline::manifest::Overrides {
        crate::pipeline::manifest::Overrides {
            prompts: self.prompts.clone(),
            max_prompts: self.max_prompts,
            max_new_tokens: self.max_new_tokens,
            text: self.text.clone(),
            ctx: self.ctx_size,
            chunks: self.chunks,
            thresholds: self.thresholds.clone(),
            dtype: self.dtype,
            device: self.device,
            gguf_matmul: self.gguf_matmul,
            blame_budget: self.blame_budget,
            checkpoint_budget: self.checkpoint_budget,
        }
    }
}

#[derive(Debug, Args)]
pub struct BisectArgs {
    /// A lineage manifest (TOML), two or more steps in order (`BASE+ADAPTER` allowed), or a
    /// training run's output directory (its `checkpoint-N/` folders) followed by its exports.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// The model a training run started from (default: its adapters' base_model_name_or_path).
    #[arg(long, value_name = "MODEL")]
    pub base: Option<PathBuf>,
    #[command(flatten)]
    pub run: LineageRunArgs,
    /// Print the full report as JSON (docs/report-schema.json).
    #[arg(long)]
    pub json: bool,
    /// Write JUnit XML here (one test case per step × check).
    #[arg(long, value_name = "FILE.xml")]
    pub junit: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long, value_name = "FILE.html")]
    pub report: Option<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct GateArgs {
    /// The lineage manifest (TOML).
    pub manifest: PathBuf,
    #[command(flatten)]
    pub run: LineageRunArgs,
    /// Print the full report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Write JUnit XML here (one test case per step × check).
    #[arg(long)]
    pub junit: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Fail on warnings too.
    #[arg(long)]
    pub strict: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// What to print: a completion script for bash, zsh, fish, powershell or elvish, or `man` (roff).
    pub shell: Generated,
    /// With `man`: the page of this subcommand (`ckptcheck-bisect.1`) instead of `ckptcheck.1`.
    #[arg(value_name = "SUBCOMMAND")]
    pub page: Option<String>,
}

/// What `completions` generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
    Man,
}

/// A count that must be at least 1 (`--max-prompts 0` would score nothing and judge it).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
