//! Issue 19: a training run's output directory as a lineage. The synthetic runs here lay zoo
//! checkpoints out as a Trainer does (`checkpoint-N/`, `trainer_state.json`, pickles that must
//! never be opened) with logs written the way Python's json writes them (NaN, Infinity); the
//! real runs made by the Trainer are the shipped lineages.

use std::path::{Path, PathBuf};

use crate::common::*;
use serde_json::Value;

/// A run dir under `root`: `checkpoint-{10·k}` is a copy of zoo model `models[k-1]`, the log is
/// `log` (a `log_history` list as Python's json writes it), every checkpoint holds the Trainer's
/// pickles, and `final_model` (if any) is saved in the root.
fn run_dir(root: &Path, models: &[&str], log: &str, final_model: Option<&str>) -> PathBuf {
    let run = root.join("run");
    let copy = |from: &str, to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(zoo_path(&format!("models/{from}"))).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    };
    let state = format!("{{\"global_step\": {}, \"log_history\": [{log}]}}", 10 * models.len());
    for (k, m) in models.iter().enumerate() {
        let c = run.join(format!("checkpoint-{}", 10 * (k + 1)));
        copy(m, &c);
        // What the Trainer saves beside the weights: pickles, never to be unpickled.
        for pickle in ["training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth"] {
            std::fs::write(c.join(pickle), b"\x80\x04\x95 not to be opened").unwrap();
        }
        std::fs::write(c.join("trainer_state.json"), &state).unwrap();
    }
    if let Some(f) = final_model {
        copy(f, &run);
    }
    run
}

/// A log whose learning rate peaks at step 25 with the gradients blowing up after it.
const LR_SPIKE_LOG: &str = r#"
 {"step": 5, "loss": 2.0, "learning_rate": 1e-3, "grad_norm": 1.0, "epoch": 0.1},
 {"step": 10, "loss": 1.8, "learning_rate": 5e-3, "grad_norm": 1.1, "epoch": 0.2},
 {"step": 15, "loss": 1.7, "learning_rate": 1e-2, "grad_norm": 0.9, "epoch": 0.3},
 {"step": 20, "loss": 1.6, "learning_rate": 1.5e-2, "grad_norm": 1.2, "epoch": 0.4},
 {"step": 20, "eval_loss": 1.65, "epoch": 0.4},
 {"step": 25, "loss": 4.0, "learning_rate": 2e-2, "grad_norm": 40.0, "epoch": 0.5},
 {"step": 30, "loss": NaN, "learning_rate": 1e-2, "grad_norm": Infinity, "epoch": 0.6},
 {"step": 30, "eval_loss": NaN, "epoch": 0.6}"#;

fn prompts() -> String {
    zoo_path("prompts.jsonl").to_str().unwrap().to_string()
}

fn bisect(args: &[&str]) -> (Run, Value) {
    let p = prompts();
    let mut all = vec!["bisect", "--json", "--prompts", &p, "--max-new-tokens", "24"];
    all.extend_from_slice(args);
    let r = ckptcheck(&all);
    assert_ne!(r.code, 2, "{}\n{}", r.stderr, r.stdout);
    let v = r.json();
    (r, v)
}

#[test]
fn a_run_directory_names_the_first_collapsed_checkpoint_and_the_learning_rate() {
    let d = tmp();
    let run = run_dir(d.path(), &["llama-sft-good", "llama-sft-good", "llama-sft-collapsed"], LR_SPIKE_LOG, None);
    let base = zoo_path("models/llama-instruct");
    let (r, v) = bisect(&[run.to_str().unwrap(), "--base", base.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert_eq!(v["first_bad_step"], "checkpoint-30", "{}", v["cause"]);
    assert_eq!(v["cause_id"], "training.learning-rate", "{}", v["cause"]);
    let c = &v["causes"][0];
    assert_eq!(c["confidence"], "high");
    let evidence: Vec<&str> = c["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(evidence.contains(&"learning rate 0.02 at step 25, the run's peak"), "{evidence:?}");
    assert!(evidence.contains(&"grad_norm 40 at step 25, 36× its median 1.1"), "{evidence:?}");
    assert!(evidence.contains(&"the loss became NaN/inf"), "{evidence:?}");
    // The checkpoints are training steps: judged on behaviour against the base, not on drift.
    let steps = v["steps"].as_array().unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["derived", "checkpoint", "checkpoint", "finetune"], "the last checkpoint is what exports would come from");
    assert_eq!(steps[1]["status"], "pass", "an SFT that keeps its behaviour passes: {}", steps[1]["reasons"]);
    // The log beside the behaviour: checkpoint-20 logged lr 1.5e-2, loss 1.6, eval 1.65.
    let t = &v["training"];
    assert_eq!(t["checkpoints_found"], 3);
    let row = t["rows"].as_array().unwrap().iter().find(|r| r["label"] == "checkpoint-20").unwrap();
    assert_eq!((row["log"]["learning_rate"].as_f64(), row["log"]["loss"].as_f64()), (Some(1.5e-2), Some(1.6)));
    assert_eq!(row["log"]["eval_loss"].as_f64(), Some(1.65));
    assert!(row["p_eos"].as_f64().unwrap() > 0.9);
    let last = t["rows"].as_array().unwrap().iter().find(|r| r["label"] == "checkpoint-30").unwrap();
    assert!(last["log"]["loss"].is_null(), "a NaN loss is written as null: {last}");
    assert!(last["p_eos"].as_f64().unwrap() < 0.01);
    assert_eq!(t["curve"].as_array().unwrap().len(), 8);
    // The same run as text: the table and the cause.
    let p = prompts();
    let text = ckptcheck(&["bisect", "--prompts", &p, "--max-new-tokens", "24", run.to_str().unwrap(), "--base", base.to_str().unwrap()]);
    assert!(text.stdout.contains("step 3 `checkpoint-30` breaks it: training.learning-rate"), "{}", text.stdout);
    assert!(text.stdout.contains("3 of 3 checkpoints evaluated"), "{}", text.stdout);
    // The HTML: the training curves on one step axis beside the behaviour, the collapse shaded.
    let html = d.path().join("report.html");
    let r = ckptcheck(&[
        "bisect",
        "--prompts",
        &p,
        "--max-new-tokens",
        "24",
        run.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
        "--report",
        html.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let page = std::fs::read_to_string(&html).unwrap();
    for want in [
        "id=\"plot-train-loss\"",
        "id=\"plot-train-lr\"",
        "id=\"plot-train-grad\"",
        "id=\"plot-train-eos\"",
        "data-series=\"eval_loss\"",
        "<rect class=\"collapse\"",
        "class=\"ckpt fail\" data-step=\"30\"",
        "class=\"nonfinite\">NaN</text>",
        "class=\"nonfinite\">inf</text>",
        "id=\"training-rows\"",
    ] {
        assert!(page.contains(want), "the HTML lacks {want}");
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report-schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn more_checkpoints_than_the_budget_are_binary_searched() {
    let d = tmp();
    let good = "llama-sft-good";
    let bad = "llama-sft-collapsed";
    let run = run_dir(d.path(), &[good, good, good, good, good, bad, bad, bad], "", None);
    let base = zoo_path("models/llama-instruct");
    // 8 checkpoints, 4 probes: checkpoint-80 fails, -40 passes, -60 fails, -50 passes.
    let (_, v) = bisect(&[run.to_str().unwrap(), "--base", base.to_str().unwrap(), "--checkpoint-budget", "4"]);
    assert_eq!(v["first_bad_step"], "checkpoint-60", "{}", v["cause"]);
    let t = &v["training"];
    let probes: Vec<(String, bool)> = serde_json::from_value(t["search"]["probes"].clone()).unwrap();
    let want = [("checkpoint-80", true), ("checkpoint-40", false), ("checkpoint-60", true), ("checkpoint-50", false)];
    assert_eq!(probes, want.map(|(l, f)| (l.to_string(), f)));
    assert_eq!(t["search"]["exhausted"], false);
    assert_eq!((t["checkpoints_found"].as_u64(), t["checkpoints_evaluated"].as_u64()), (Some(8), Some(4)));
    // Two probes cannot close the gap: the report says where the first bad one lies.
    let (_, v) = bisect(&[run.to_str().unwrap(), "--base", base.to_str().unwrap(), "--checkpoint-budget", "2"]);
    assert_eq!(v["training"]["search"]["exhausted"], true);
    let cause = v["cause"].as_str().unwrap();
    assert!(cause.contains("after `checkpoint-40` and at or before `checkpoint-80` (raise --checkpoint-budget)"), "{cause}");
}

#[test]
fn a_healthy_run_with_a_broken_export_blames_the_export_not_the_training() {
    let d = tmp();
    let run = run_dir(d.path(), &["llama-instruct", "llama-instruct"], LR_SPIKE_LOG, Some("llama-instruct"));
    let gguf = zoo_path("gguf/llama-instruct-wrong-eos.gguf");
    let (r, v) = bisect(&[run.to_str().unwrap(), gguf.to_str().unwrap(), "--base", zoo_path("models/llama-instruct").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert_eq!(v["first_bad_step"], "llama-instruct-wrong-eos.gguf");
    assert_eq!(v["cause_id"], "gguf.eos-differs", "the export's own cause stays first: {}", v["cause"]);
    let ids: Vec<&str> = v["causes"].as_array().unwrap().iter().map(|c| c["cause_id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"training.export-broke-it"), "{ids:?}");
    let summary = v["training"]["summary"].as_str().unwrap();
    assert!(summary.contains("every training step evaluated (3) behaves"), "{summary}");
    assert!(summary.contains("not the training"), "{summary}");
    let kinds: Vec<&str> = v["steps"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["derived", "checkpoint", "checkpoint", "finetune", "derived"]);
}

#[test]
fn a_run_without_a_nameable_base_or_with_misused_flags_is_refused_with_what_to_do() {
    let d = tmp();
    let run = run_dir(d.path(), &["llama-sft-good"], "", None);
    let r = ckptcheck(&["bisect", run.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("does not name the model it was trained from") && r.stderr.contains("--base"), "{}", r.stderr);
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/healthy.toml");
    let r = ckptcheck(&["bisect", m.to_str().unwrap(), "--checkpoint-budget", "3"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--checkpoint-budget") && r.stderr.contains("training run"), "{}", r.stderr);
    let empty = d.path().join("empty-run");
    std::fs::create_dir_all(empty.join("checkpoint-5")).unwrap();
    std::fs::write(empty.join("trainer_state.json"), "{}").unwrap();
    let r = ckptcheck(&["bisect", empty.to_str().unwrap(), "--base", "x"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("output_dir"), "{}", r.stderr);
}

#[test]
fn adapter_checkpoints_find_their_base_and_a_tokenizer_saved_unlike_it() {
    let d = tmp();
    let run = d.path().join("run");
    let base = zoo_path("models/llama-instruct");
    for (n, template) in [(10, None), (20, Some("{{ messages[0]['content'] }}"))] {
        let c = run.join(format!("checkpoint-{n}"));
        std::fs::create_dir_all(&c).unwrap();
        for e in std::fs::read_dir(zoo_path("models/llama-lora-adapter")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), c.join(e.file_name())).unwrap();
        }
        // What peft records when the base was loaded from this checkout.
        let cfg = c.join("adapter_config.json");
        let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
        v["base_model_name_or_path"] = base.to_str().unwrap().into();
        std::fs::write(&cfg, v.to_string()).unwrap();
        if let Some(t) = template {
            std::fs::write(c.join("chat_template.jinja"), t).unwrap();
        }
    }
    let (_, v) = bisect(&[run.to_str().unwrap()]);
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps[0]["source"].as_str().unwrap(), base.to_str().unwrap(), "the base comes from adapter_config.json");
    let ids = |s: &Value| s["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert!(!ids(&steps[1]).iter().any(|i| i.starts_with("lineage.")), "{:?}", ids(&steps[1]));
    assert!(ids(&steps[2]).contains(&"lineage.template-changed".to_string()), "{:?}", ids(&steps[2]));
}

/// Every training cause id is documented in docs/bisect.md, and every `training.*` id there is one.
#[test]
fn training_cause_ids_are_documented() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bisect.md")).unwrap();
    let documented: std::collections::BTreeSet<&str> =
        doc.split('`').filter(|s| s.starts_with("training.") && s.len() > 9 && !s.contains(' ')).collect();
    let ids: std::collections::BTreeSet<&str> = ckptcheck::pipeline::training::CAUSE_IDS.iter().copied().collect();
    assert_eq!(documented, ids);
}

/// The zoo's real runs (transformers Trainer + peft, testdata/zoo/train_runs.py): every
/// checkpoint's P(EOS at turn end) and greedy stop rate as ckptcheck measures them against what
/// transformers + peft measured (measured_runs.json), and the first bad checkpoint named with the
/// learning-rate evidence of its log.
#[test]
fn the_zoo_runs_match_transformers_and_name_the_learning_rate() {
    let measured: Value = serde_json::from_str(&std::fs::read_to_string(zoo_path("measured_runs.json")).unwrap()).unwrap();
    for (lineage, run) in [("run-lr-too-high", "lora-lr-too-high"), ("run-healthy", "lora-healthy")] {
        let m = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("testdata/pipelines/{lineage}.toml"));
        let r = ckptcheck(&["bisect", "--json", "--checkpoint-budget", "8", m.to_str().unwrap()]);
        assert_ne!(r.code, 2, "{}", r.stderr);
        let v = r.json();
        let rows = v["training"]["rows"].as_array().unwrap();
        let mut checked = 0;
        for row in rows.iter().filter(|r| r["step"].is_u64()) {
            let label = row["label"].as_str().unwrap();
            let want = &measured[run][label];
            let (p, stops) = (want["p_eos_turn_end_mean"].as_f64().unwrap(), want["greedy_stop_rate"].as_f64().unwrap());
            let got = row["p_eos"].as_f64().unwrap();
            assert!((got - p).abs() < 2e-3, "{run} {label}: P(EOS) {got} vs transformers {p}");
            assert_eq!(row["stop_rate"].as_f64().unwrap(), stops, "{run} {label}: stop rate");
            checked += 1;
        }
        assert_eq!(checked, measured[run].as_object().unwrap().len(), "{run}: every measured checkpoint is a row");
    }
}

/// A training step whose hidden states leave f16's range is named in the run's summary.
#[test]
fn a_checkpoint_past_f16_range_is_named_in_the_run_summary() {
    let d = tmp();
    let base = d.path().join("base");
    Fixture::healthy().write(&base);
    let run = d.path().join("run");
    Fixture::healthy().write(&run.join("checkpoint-10"));
    let mut f = Fixture::healthy();
    for c in f.tensor_mut("model.layers.1.mlp.down_proj.weight").data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * 1e8;
        c.copy_from_slice(&x.to_le_bytes());
    }
    f.write(&run.join("checkpoint-20"));
    let prompts = d.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n").unwrap();
    let r = ckptcheck(&[
        "bisect",
        "--json",
        "--max-new-tokens",
        "4",
        "--prompts",
        prompts.to_str().unwrap(),
        run.to_str().unwrap(),
        "--base",
        base.to_str().unwrap(),
    ]);
    assert_ne!(r.code, 2, "{}", r.stderr);
    let summary = r.json()["training"]["summary"].as_str().unwrap().to_string();
    assert!(summary.contains("`checkpoint-20`: fp16 headroom: its hidden state reaches"), "{summary}");
    assert!(summary.contains("at layer 1, past f16's largest value 65504"), "{summary}");
}

/// The real healthy run with two exports of its merged adapter (run_exports.py): the converter's
/// Q8_0 passes, the whole-model Q2_K fails, the training is cleared, and blame names the Q2_K
/// embedding table, not the tokenizer (its rows keep their direction: cosine 0.96).
#[test]
fn the_zoo_healthy_run_with_a_q2_k_export_blames_the_export_and_its_embedding_table() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/run-healthy-export-q2k.toml");
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["first_bad_step"], "merged-q2_k", "{}", v["cause"]);
    let steps = v["steps"].as_array().unwrap();
    let status = |label: &str| steps.iter().find(|s| s["label"] == label).unwrap()["status"].as_str().unwrap().to_string();
    for label in ["checkpoint-10", "checkpoint-30", "final", "merged-q8_0"] {
        assert_eq!(status(label), "pass", "{label}");
    }
    let ids: Vec<&str> = v["causes"].as_array().unwrap().iter().map(|c| c["cause_id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], "cause.tensors-blamed", "{ids:?}");
    assert!(ids.contains(&"training.export-broke-it"), "{ids:?}");
    assert!(!ids.contains(&"cause.tokenizer-or-embedding"), "quantization noise is not a moved tokenizer: {ids:?}");
    assert!(v["causes"][0]["fix"].as_str().unwrap().contains("token_embd.weight"), "{}", v["causes"][0]);
    let summary = v["training"]["summary"].as_str().unwrap();
    assert!(summary.contains("`merged-q2_k` is the first step to fail") && summary.contains("not the training"), "{summary}");
}
