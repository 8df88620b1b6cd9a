//! Snapshots of every command's text output on the shipped zoo, through the real binary: the
//! command line, exit code, stdout and stderr, with the repository root written `[ROOT]` and the
//! test's temporary directory `[TMP]`. They pin today's output exactly, as the guard for changes to
//! the output code: any change to the text is a snapshot diff (tests/it/snapshots/; review with
//! `cargo insta review`, or compare the `.snap.new` file insta writes beside the `.snap`).
//!
//! Every number printed here is reproducible, so nothing is filtered but paths: the zoo runs on
//! the CPU in f32, and each run twice, with one thread and with all, gave the same text (AMD EPYC,
//! AVX2). A CPU on which candle's matmul picks other SIMD kernels could move a last digit; the
//! most exposed numbers are merge-check's residuals, which sit at f32 rounding.

use std::path::Path;

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `ckptcheck ARGS`, where `[ROOT]` in an argument stands for the repository root and
/// `[TMP]` for `tmp`, and returns the run as one text with both placeholders put back.
fn cli_in(tmp: Option<&Path>, args: &[&str]) -> String {
    let tmp = tmp.map(|t| t.to_str().unwrap().to_string());
    let expand = |a: &str| {
        let a = a.replace("[ROOT]", ROOT);
        match &tmp {
            Some(t) => a.replace("[TMP]", t),
            None => a,
        }
    };
    // The temporary directory first: it is never above the repository, and could be inside it.
    let mask = |s: &str| {
        let s = match &tmp {
            Some(t) => s.replace(t.as_str(), "[TMP]"),
            None => s.to_string(),
        };
        s.replace(ROOT, "[ROOT]")
    };
    let real: Vec<String> = args.iter().map(|a| expand(a)).collect();
    let r = ckptcheck(&real.iter().map(String::as_str).collect::<Vec<_>>());
    // `--- end` keeps the last newline (or its absence) in the comparison: insta trims the end.
    format!("$ ckptcheck {}\nexit code: {}\n--- stdout\n{}--- stderr\n{}--- end", args.join(" "), r.code, mask(&r.stdout), mask(&r.stderr))
}

fn cli(args: &[&str]) -> String {
    cli_in(None, args)
}

/// `insta::assert_snapshot!`, named after the test, without the expression in the `.snap` header
/// (the command line is in the snapshot itself).
macro_rules! snapshot {
    ($text:expr) => {
        insta::with_settings!({ omit_expression => true }, { insta::assert_snapshot!($text) })
    };
}

// --- inspect ----------------------------------------------------------------------------------

#[test]
fn inspect_hf_model() {
    snapshot!(cli(&["inspect", "[ROOT]/testdata/zoo/models/llama-instruct"]));
}

#[test]
fn inspect_gguf() {
    snapshot!(cli(&["inspect", "[ROOT]/testdata/zoo/gguf/llama-instruct-q4_k_m.gguf"]));
}

#[test]
fn inspect_lora_adapter() {
    snapshot!(cli(&["inspect", "[ROOT]/testdata/zoo/models/llama-lora-adapter"]));
}

#[test]
fn inspect_gptq_checkpoint() {
    snapshot!(cli(&["inspect", "[ROOT]/testdata/zoo/models/llama-gptq-w4g128"]));
}

// --- lint -------------------------------------------------------------------------------------

#[test]
fn lint_clean_model() {
    snapshot!(cli(&["lint", "[ROOT]/testdata/zoo/models/llama-instruct"]));
}

/// An error, two warnings and an info.
#[test]
fn lint_model_with_findings() {
    snapshot!(cli(&["lint", "[ROOT]/testdata/zoo/models/llama-genconfig-wrong-eos"]));
}

#[test]
fn lint_gguf_against_its_source() {
    snapshot!(cli(&[
        "lint",
        "--source",
        "[ROOT]/testdata/zoo/models/llama-instruct",
        "[ROOT]/testdata/zoo/gguf/llama-instruct-wrong-eos.gguf"
    ]));
}

// --- compare ----------------------------------------------------------------------------------

#[test]
fn compare_healthy_vs_collapsed_sft_with_layers() {
    snapshot!(cli(&[
        "compare",
        "--prompts",
        "[ROOT]/testdata/zoo/prompts.jsonl",
        "--layers",
        "[ROOT]/testdata/zoo/models/llama-instruct",
        "[ROOT]/testdata/zoo/models/llama-sft-collapsed"
    ]));
}

// --- merge-check ------------------------------------------------------------------------------

#[test]
fn merge_check_correct_merge() {
    snapshot!(cli(&[
        "merge-check",
        "--base",
        "[ROOT]/testdata/zoo/models/llama-instruct",
        "--adapter",
        "[ROOT]/testdata/zoo/models/llama-lora-adapter",
        "--merged",
        "[ROOT]/testdata/zoo/models/llama-lora-merged"
    ]));
}

#[test]
fn merge_check_wrong_scale() {
    snapshot!(cli(&[
        "merge-check",
        "--base",
        "[ROOT]/testdata/zoo/models/llama-instruct",
        "--adapter",
        "[ROOT]/testdata/zoo/models/llama-lora-adapter",
        "--merged",
        "[ROOT]/testdata/zoo/models/llama-merge-wrong-scale"
    ]));
}

// --- bisect and gate --------------------------------------------------------------------------

#[test]
fn bisect_sft_collapse() {
    snapshot!(cli(&["bisect", "[ROOT]/testdata/pipelines/sft-collapse.toml"]));
}

#[test]
fn bisect_gguf_wrong_eos() {
    snapshot!(cli(&["bisect", "[ROOT]/testdata/pipelines/gguf-wrong-eos.toml"]));
}

/// The text report on stdout; the JUnit and HTML files are only announced on stderr.
#[test]
fn gate_healthy_with_junit_and_report() {
    let d = tmp();
    snapshot!(cli_in(
        Some(d.path()),
        &["gate", "--junit", "[TMP]/junit.xml", "--report", "[TMP]/report.html", "[ROOT]/testdata/pipelines/healthy.toml"]
    ));
}

#[test]
fn gate_lora_merge_wrong_scale() {
    snapshot!(cli(&["gate", "[ROOT]/testdata/pipelines/lora-merge-wrong-scale.toml"]));
}
