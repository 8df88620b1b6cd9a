//! `ckptcheck bench-forward MODEL` (hidden): the engine's teacher-forced forward throughput on
//! one checkpoint, for `bench/run.py` to set beside llama.cpp and transformers in one run. Token
//! ids are a fixed pseudo-random sequence; logits are computed (in chunks) for the positions
//! `llama-perplexity` scores, the second half of the sequence (it asks its batch for logits at
//! `pos ≥ n_ctx / 2` only), or for every position with `--all-logits`.

use std::time::Instant;

use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::cli::BenchArgs;
use crate::commands::Outcome;
use crate::compare::run::LOGIT_ROWS;
use crate::model;
use crate::output::Printer;

#[derive(Debug, Serialize)]
struct BenchResult {
    model: String,
    tokens: usize,
    /// Positions whose logits each pass computes (the last ones).
    logit_positions: usize,
    threads: usize,
    /// `--gguf-matmul` as given, and whether this CPU has the kernels its `auto` / `quantized`
    /// use for Q4_K / Q5_K / Q6_K (llama.cpp's integer arithmetic).
    gguf_matmul: String,
    llama_arithmetic_kernels: bool,
    load_seconds: f64,
    /// Wall seconds of each timed forward pass.
    seconds: Vec<f64>,
    /// Tokens per second of the fastest pass.
    tokens_per_s: f64,
    median_tokens_per_s: f64,
}

pub fn run(args: &BenchArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let settings = args.engine.settings();
    let device = model::device(settings.device)?;
    let t0 = Instant::now();
    let ckpt = Checkpoint::open(&args.model)?;
    let m = model::load(&ckpt, &device, settings.dtype, settings.gguf_matmul)?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let vocab = m.embed_rows().min(m.spec.vocab_size).max(1) as u64;
    // xorshift: a fixed, model-independent sequence of ids.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let ids: Vec<u32> = (0..args.tokens.max(1))
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab) as u32
        })
        .collect();
    let mut seconds = Vec::new();
    for _ in 0..args.repeat.max(1) + 1 {
        let t = Instant::now();
        let b = m.begin(&[&ids], None)?;
        let h = m.finish(b, None)?;
        let from = if args.all_logits { 0 } else { ids.len() / 2 };
        for a in (from..ids.len()).step_by(LOGIT_ROWS) {
            let n = LOGIT_ROWS.min(ids.len() - a);
            m.logits(&h.narrow(0, a, n)?)?;
        }
        seconds.push(t.elapsed().as_secs_f64());
    }
    // The first pass warms the page cache and the allocator; it is not reported.
    seconds.remove(0);
    let mut sorted = seconds.clone();
    sorted.sort_by(f64::total_cmp);
    let n = ids.len() as f64;
    let result = BenchResult {
        model: args.model.display().to_string(),
        tokens: ids.len(),
        logit_positions: if args.all_logits { ids.len() } else { ids.len() - ids.len() / 2 },
        threads: rayon::current_num_threads(),
        gguf_matmul: settings.gguf_matmul.to_string(),
        llama_arithmetic_kernels: model::qdot::available(),
        load_seconds,
        tokens_per_s: n / sorted[0],
        median_tokens_per_s: n / sorted[sorted.len() / 2],
        seconds,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        printer.note(&format!(
            "{}: {} tokens, {} threads: {:.1} tokens/s (median {:.1}), load {:.2} s",
            result.model, result.tokens, result.threads, result.tokens_per_s, result.median_tokens_per_s, result.load_seconds
        ));
    }
    Ok(Outcome::Clean)
}
