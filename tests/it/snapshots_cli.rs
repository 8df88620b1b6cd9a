//! Snapshots of every command's text output on the shipped zoo, through the real binary: the
//! command line, exit code, stdout and stderr, with the repository root written `[ROOT]` and the
//! test's temporary directory `[TMP]`. They pin today's output exactly, as the guard for changes to
//! the output code: any change to the text is a snapshot diff (tests/it/snapshots/; review with
//! `cargo insta review`, or compare the `.snap.new` file insta writes beside the `.snap`).
//!
//! Every number printed here is reproducible, so nothing is filtered but paths: the zoo runs on
//! the CPU in f32, and each run twice, with one thread and with all, gave the same text (AMD EPYC,
//! AVX2 and AVX-512). The runs here use gemm for every matmul (`CKPTCHECK_MATMUL=gemm`): it sums
//! each output in `k` order whatever SIMD width it picks, where the AVX-512 dot kernels
//! (`model::dot`, only on such CPUs) sum 16 lanes apart and move last digits (a KL of 17.8339
//! reads 17.8338); their numbers are checked against the goldens by the other tests. The most
//! exposed numbers are merge-check's residuals, which sit at f32 rounding.

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
        // The zoo's PEFT adapters record the absolute base path they were made at (the lead's
        // checkout, /work/main): masked too, so a snapshot reads the same from any checkout.
        let s = s.replace(ROOT, "[ROOT]").replace("/work/main/", "[ROOT]/");
        // Float noise (an exact merge against base + adapter: KL ~1e-13) differs with the CPU's
        // kernels and summation order; any value below 1e-10 reads `[<1e-10]`.
        let noise = regex::Regex::new(r"\b\d\.\d+e-(1[0-9]|[2-9][0-9])\b").unwrap();
        noise.replace_all(&s, "[<1e-10]").into_owned()
    };
    let real: Vec<String> = args.iter().map(|a| expand(a)).collect();
    let r = ckptcheck_env(&real.iter().map(String::as_str).collect::<Vec<_>>(), &[("CKPTCHECK_MATMUL", "gemm")]);
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

/// Issue 13: Qwen2's config has no `head_dim`; it is derived (hidden / heads), not `?`.
#[test]
fn inspect_qwen2_derives_head_dim() {
    snapshot!(cli(&["inspect", "[ROOT]/testdata/zoo/models/qwen2-instruct"]));
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

/// Issue 13: a truncated GGUF listed 25 identical errors; the text shows three and a count.
#[test]
fn lint_truncated_gguf_groups_repeated_findings() {
    let d = tmp();
    let whole = std::fs::read(Path::new(ROOT).join("testdata/zoo/gguf/llama-instruct-q8_0.gguf")).unwrap();
    std::fs::write(d.path().join("truncated.gguf"), &whole[..300_000]).unwrap();
    snapshot!(cli_in(Some(d.path()), &["lint", "[TMP]/truncated.gguf"]));
}

/// `--verbose` lists every finding the collector kept (and its own count of the rest).
#[test]
fn lint_truncated_gguf_verbose_lists_all() {
    let d = tmp();
    let whole = std::fs::read(Path::new(ROOT).join("testdata/zoo/gguf/llama-instruct-q8_0.gguf")).unwrap();
    std::fs::write(d.path().join("truncated.gguf"), &whole[..300_000]).unwrap();
    let grouped = ckptcheck(&["lint", d.path().join("truncated.gguf").to_str().unwrap()]);
    let all = ckptcheck(&["lint", "--verbose", d.path().join("truncated.gguf").to_str().unwrap()]);
    let listed =
        |t: &str| t.lines().filter(|l| l.starts_with("error    gguf.tensor-out-of-bounds") && !l.contains("more like these")).count();
    assert_eq!(listed(&grouped.stdout), 3, "{}", grouped.stdout);
    assert_eq!(listed(&all.stdout), 6, "five listed by the collector and its summary: {}", all.stdout);
    assert!(grouped.stdout.contains("… and 27 more like these (--verbose lists them)"), "{}", grouped.stdout);
    assert_eq!(grouped.code, all.code);
}

/// Issue 13: `lint --source` given a GGUF said the format could not be read.
#[test]
fn lint_source_that_is_a_gguf() {
    snapshot!(cli(&[
        "lint",
        "--source",
        "[ROOT]/testdata/zoo/gguf/llama-instruct-f16.gguf",
        "[ROOT]/testdata/zoo/gguf/llama-instruct-q8_0.gguf"
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

/// `--verbose` lists all 21 rows and all 21 findings the default text groups.
#[test]
fn merge_check_wrong_scale_verbose_lists_every_row() {
    let args = |v: bool| {
        let mut a = vec!["merge-check"];
        if v {
            a.push("--verbose");
        }
        let base = format!("{ROOT}/testdata/zoo/models/llama-instruct");
        let adapter = format!("{ROOT}/testdata/zoo/models/llama-lora-adapter");
        let merged = format!("{ROOT}/testdata/zoo/models/llama-merge-wrong-scale");
        let owned = [
            a.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            vec!["--base".into(), base, "--adapter".into(), adapter, "--merged".into(), merged],
        ]
        .concat();
        ckptcheck(&owned.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (grouped, all) = (args(false), args(true));
    let rows = |t: &str| t.lines().filter(|l| l.starts_with("model.layers.") && l.ends_with("wrong scale")).count();
    let findings = |t: &str| t.lines().filter(|l| l.starts_with("error    merge.wrong-scale") && !l.contains("more like these")).count();
    assert_eq!((rows(&grouped.stdout), findings(&grouped.stdout)), (3, 3), "{}", grouped.stdout);
    assert_eq!((rows(&all.stdout), findings(&all.stdout)), (21, 21), "{}", all.stdout);
}

// --- bisect and gate --------------------------------------------------------------------------

#[test]
fn bisect_sft_collapse() {
    snapshot!(cli(&["bisect", "[ROOT]/testdata/pipelines/sft-collapse.toml"]));
}

/// Issue 13: "warn" with nothing explaining it; now the reason column names the threshold, and the
/// merged step's row against its parent (base + adapter) shows the KL ~1e-13 of an exact merge.
#[test]
fn bisect_lora_healthy_reason_and_vs_parent() {
    snapshot!(cli(&["bisect", "[ROOT]/testdata/pipelines/lora-healthy.toml"]));
}

/// Issue 13: NaN logits printed `KL mean 0.000`; NaN is shown as NaN.
#[test]
fn bisect_nan_weights_shows_nan() {
    snapshot!(cli(&["bisect", "[ROOT]/testdata/pipelines/nan-weights.toml"]));
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

/// Issue 13: `compare --help` did not say a variant may be a GGUF file.
#[test]
fn compare_help_names_gguf() {
    let r = ckptcheck(&["compare", "--help"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("`.gguf`"), "{}", r.stdout);
    assert!(r.stdout.contains("GGUF"), "{}", r.stdout);
    let top = ckptcheck(&["--help"]);
    assert!(top.stdout.contains("--verbose"), "{}", top.stdout);
}
