//! `bisect` and `gate` through the real binary: synthetic lineages broken at a known step, the
//! shipped zoo lineages, and the JSON / JUnit / HTML outputs.

use std::path::Path;

use crate::common::*;
use serde_json::{json, Value};

fn write_prompts(dir: &Path) -> String {
    let p = dir.join("prompts.jsonl");
    std::fs::write(&p, "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n").unwrap();
    p.to_str().unwrap().to_string()
}

fn manifest(dir: &Path, steps: &[(&str, &str)], extra: &str) -> std::path::PathBuf {
    let mut s = format!("name = \"test lineage\"\nprompts = \"prompts.jsonl\"\nmax_new_tokens = 4\n{extra}\n");
    for (label, path) in steps {
        s.push_str(&format!("[[step]]\nlabel = \"{label}\"\npath = \"{path}\"\n"));
    }
    let p = dir.join("lineage.toml");
    std::fs::write(&p, s).unwrap();
    p
}

#[test]
fn healthy_lineage_passes() {
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("a"));
    Fixture::healthy().write(&d.path().join("b"));
    let m = manifest(d.path(), &[("base", "a"), ("copy", "b")], "");
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    assert_eq!(v["schema_version"], 2);
    assert!(v["first_bad_step"].is_null());
    assert_eq!(v["verdict"], "pass");
    assert_eq!(v["steps"][1]["vs_reference"]["summary"]["kl"]["max"], 0.0);
}

#[test]
fn static_cause_is_named_over_numbers() {
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("base"));
    Fixture::healthy().write(&d.path().join("sft"));
    let mut f = Fixture::healthy();
    f.generation_config = Some(json!({"eos_token_id": 0}));
    f.write(&d.path().join("export"));
    let mut g = Fixture::healthy();
    g.tensor_mut("model.norm.weight").data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    g.write(&d.path().join("later"));
    let m = manifest(d.path(), &[("base", "base"), ("sft", "sft"), ("export", "export"), ("later", "later")], "");
    let r = ckptcheck(&["bisect", m.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("step 2 `export` breaks it: template.eot-not-eos"), "{}", r.stdout);
    let v = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]).json();
    assert_eq!(v["first_bad_step"], "export");
    assert_eq!(v["steps"][3]["status"], "fail", "the NaN step fails too");
    assert!(v["steps"][3]["cause"].as_str().unwrap().contains("values.nan"));
}

#[test]
fn bisect_without_manifest_and_parent_comparison() {
    let d = tmp();
    let prompts = write_prompts(d.path());
    let _ = prompts;
    Fixture::healthy().write(&d.path().join("a"));
    Fixture::healthy().write(&d.path().join("b"));
    let mut f = Fixture::healthy();
    f.tensor_mut("model.layers.1.mlp.down_proj.weight").data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    f.write(&d.path().join("c"));
    let p = |n: &str| d.path().join(n).to_str().unwrap().to_string();
    let r = ckptcheck(&["bisect", "--json", &p("a"), &p("b"), &p("c")]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["first_bad_step"], "2:c");
    assert!(v["steps"][2]["vs_parent"].is_object(), "step 2 is compared with step 1 too");
    assert!(v["steps"][1]["vs_parent"].is_null(), "step 1's parent is the reference");
}

#[test]
fn gate_writes_junit_and_html() {
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("a"));
    let mut f = Fixture::healthy();
    let t = f.tensor_mut("model.layers.1.mlp.down_proj.weight");
    for c in t.data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * -20.0;
        c.copy_from_slice(&x.to_le_bytes());
    }
    f.write(&d.path().join("b"));
    let m = manifest(d.path(), &[("base", "a"), ("broken", "b")], "[thresholds]\nkl_mean_fail = 0.0\nkl_mean_warn = 0.0\n");
    let junit = d.path().join("out/junit.xml");
    let html = d.path().join("out/report.html");
    std::fs::create_dir_all(d.path().join("out")).unwrap();
    let r = ckptcheck(&["gate", m.to_str().unwrap(), "--junit", junit.to_str().unwrap(), "--report", html.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let x = std::fs::read_to_string(&junit).unwrap();
    assert!(x.starts_with("<?xml"));
    // lint of each step, and the broken step against the reference (its parent is the reference).
    assert_eq!(x.matches("<testcase ").count(), 3, "{x}");
    assert_eq!(x.matches("<failure ").count(), 1, "{x}");
    assert!(x.contains("name=\"compare-vs-reference\""));
    let h = std::fs::read_to_string(&html).unwrap();
    for id in ["id=\"plot-kl\"", "id=\"plot-eos\"", "id=\"plot-layers\"", "id=\"heat\"", "id=\"steps\"", "id=\"verdict\""] {
        assert!(h.contains(id), "missing {id}");
    }
    assert!(!h.contains("http://") && !h.contains("https://") && !h.contains("<script"), "self-contained, no network");
}

#[test]
fn manifest_errors_name_the_field() {
    let d = tmp();
    let p = d.path().join("m.toml");
    std::fs::write(&p, "[[step]]\npath = \"a\"\n").unwrap();
    let r = ckptcheck(&["bisect", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("m.toml") && r.stderr.contains("step"), "{}", r.stderr);
    std::fs::write(&p, "refrence = \"x\"\n[[step]]\npath = \"a\"\n[[step]]\npath = \"b\"\n").unwrap();
    let r = ckptcheck(&["bisect", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("refrence"), "{}", r.stderr);
    std::fs::write(&p, "reference = \"x\"\n[[step]]\npath = \"a\"\n[[step]]\npath = \"b\"\n").unwrap();
    let r = ckptcheck(&["bisect", p.to_str().unwrap()]);
    assert!(r.stderr.contains("no step is labelled `x`"), "{}", r.stderr);
}

/// Regression (issue 13): a wrong step path was found only after step 0 had been linted and
/// loaded. Every path is checked first: the manifest's field is named, nothing runs.
#[test]
fn a_missing_step_path_is_refused_before_anything_runs() {
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("a"));
    let m = manifest(d.path(), &[("base", "a"), ("gone", "nowhere")], "");
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(r.stderr.contains("lineage.toml`: field `step[1].path`: `") && r.stderr.contains("nowhere` does not exist"), "{}", r.stderr);
    assert!(!r.stderr.contains("lint base") && !r.stderr.contains("load base"), "nothing runs first: {}", r.stderr);
    // The same for a step on the command line, and for an adapter step's base.
    let r = ckptcheck(&["bisect", d.path().join("a").to_str().unwrap(), d.path().join("nowhere").to_str().unwrap()]);
    assert!(r.code == 2 && r.stderr.contains("step 1 (1:nowhere)") && r.stderr.contains("does not exist"), "{}", r.stderr);
    std::fs::write(&m, "[[step]]\npath = \"a\"\n[[step]]\nbase = \"missing-base\"\nadapter = \"a\"\n").unwrap();
    let r = ckptcheck(&["bisect", m.to_str().unwrap()]);
    assert!(r.stderr.contains("field `step[1].base`: `") && r.stderr.contains("missing-base` does not exist"), "{}", r.stderr);
}

/// A step whose path exists but cannot be run still leaves an incomplete run (exit 2), reported
/// on the step.
#[test]
fn a_step_that_cannot_run_makes_the_run_incomplete() {
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("a"));
    std::fs::create_dir(d.path().join("empty")).unwrap();
    let m = manifest(d.path(), &[("base", "a"), ("empty", "empty")], "");
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    let v = r.json();
    assert_eq!(v["incomplete"], true);
    assert!(v["steps"][1]["error"].as_str().unwrap().contains("empty"));
}

// --- the shipped lineages ---------------------------------------------------------------------

/// Every manifest under testdata/pipelines names its expected first bad step (or none) and a
/// finding id or metric the cause must mention; bisect must agree.
#[test]
fn shipped_lineages_break_where_expected() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let m: toml::Value = toml::from_str(&text).unwrap();
        let expect = m.get("expect").and_then(|e| e.as_table()).unwrap_or_else(|| panic!("{} has no [expect]", p.display()));
        let r = ckptcheck(&["bisect", "--json", p.to_str().unwrap()]);
        assert_ne!(r.code, 2, "{}: {}", p.display(), r.stderr);
        let v = r.json();
        match expect.get("first_bad_step").and_then(|s| s.as_str()) {
            Some(step) => {
                assert_eq!(v["first_bad_step"], step, "{}: {}", p.display(), v["cause"]);
                let id = expect.get("cause_id").and_then(|s| s.as_str()).unwrap();
                assert!(v["cause"].as_str().unwrap().contains(id), "{}: cause {} lacks {id}", p.display(), v["cause"]);
                assert_eq!(r.code, 1);
            }
            None => {
                assert!(v["first_bad_step"].is_null(), "{}: {}", p.display(), v["cause"]);
                assert_eq!(r.code, 0);
            }
        }
        for want in expect.get("findings").and_then(|f| f.as_array()).into_iter().flatten() {
            let (label, id) =
                want.as_str().and_then(|w| w.split_once(": ")).unwrap_or_else(|| panic!("{}: findings entry {want}", p.display()));
            let step = v["steps"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["label"] == label)
                .unwrap_or_else(|| panic!("{}: no step {label}", p.display()));
            // A merged step's merge-check findings sit beside its lint findings.
            let merge = step["merge"]["findings"].as_array().into_iter().flatten();
            assert!(
                step["findings"].as_array().unwrap().iter().chain(merge).any(|f| f["id"] == id),
                "{}: step {label} lacks {id}: {:#} {:#}",
                p.display(),
                step["findings"],
                step["merge"]
            );
        }
        n += 1;
    }
    assert!(n >= 3, "expected at least 3 shipped lineages, found {n}");
}

/// The JSON report validates against docs/report-schema.json (healthy, broken and incomplete runs).
#[test]
fn json_report_matches_the_documented_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report-schema.json")).unwrap())
            .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("a"));
    let mut f = Fixture::healthy();
    f.generation_config = Some(json!({"eos_token_id": 0}));
    f.tensor_mut("model.layers.0.mlp.up_proj.weight").data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    f.write(&d.path().join("b"));
    std::fs::create_dir(d.path().join("empty")).unwrap();
    for steps in [vec![("base", "a"), ("copy", "a")], vec![("base", "a"), ("broken", "b"), ("empty", "empty")]] {
        let m = manifest(d.path(), &steps, "");
        let v = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]).json();
        let errors: Vec<String> = validator.iter_errors(&v).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{errors:#?}");
    }
    // The schema is strict enough to catch drift: an unknown field is rejected.
    let mut v = ckptcheck(&["bisect", "--json", manifest(d.path(), &[("base", "a"), ("copy", "a")], "").to_str().unwrap()]).json();
    v["surprise"] = json!(1);
    assert!(!validator.is_valid(&v));
}

/// Issue 13: the JSON names its cause with the stable `cause_id` a manifest expects, each step
/// says why it warns or fails, and every judged metric is named as its threshold keys are.
#[test]
fn json_cause_id_reasons_and_metric_names_match_threshold_keys() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/lora-merge-wrong-scale.toml");
    let v = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]).json();
    assert_eq!(v["cause_id"], "merge.wrong-scale");
    assert_eq!(v["cause_id"], v["causes"][0]["cause_id"]);
    assert_eq!(v["steps"][2]["cause_id"], "merge.wrong-scale");
    assert_eq!(v["steps"][1]["cause_id"], serde_json::Value::Null, "a warning step has no cause");
    let thresholds = v["thresholds"].as_object().unwrap();
    for step in v["steps"].as_array().unwrap() {
        for side in ["vs_reference", "vs_parent"] {
            for j in step[side]["judgements"].as_array().into_iter().flatten() {
                let metric = j["metric"].as_str().unwrap();
                if metric == "nonfinite_logits" || metric == "prompt_tokenization" {
                    continue;
                }
                assert_eq!(thresholds[&format!("{metric}_warn")], j["warn"], "{metric}: the key its warning is read from");
                assert_eq!(thresholds[&format!("{metric}_fail")], j["fail"], "{metric}");
            }
        }
    }
    let reasons = |i: usize| -> Vec<(String, String)> {
        v["steps"][i]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["id"].as_str().unwrap().into(), r["status"].as_str().unwrap().into()))
            .collect()
    };
    assert_eq!(reasons(0), vec![]);
    assert_eq!(reasons(1), vec![("ppl_ratio".to_string(), "warn".to_string())], "the warning lora-healthy left unexplained");
    let merged = reasons(2);
    assert!(
        merged.contains(&("kl_mean".into(), "fail".into())) && merged.contains(&("merge.wrong-scale".into(), "fail".into())),
        "{merged:?}"
    );
    assert_eq!(v["steps"][2]["reasons"].as_array().unwrap().last().unwrap()["text"], "merge.wrong-scale ×21 (error)");
}

/// Issue 13: JUnit class names had spaces and arrows, and no case had a `time`.
#[test]
fn junit_has_times_and_plain_class_names() {
    let d = tmp();
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/lora-merge-wrong-scale.toml");
    let junit = d.path().join("j.xml");
    let r = ckptcheck(&["gate", m.to_str().unwrap(), "--junit", junit.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let x = std::fs::read_to_string(&junit).unwrap();
    let attr = |tag: &str, name: &str| -> Vec<String> {
        x.split(&format!("<{tag} "))
            .skip(1)
            .map(|t| {
                t.split(&format!("{name}=\""))
                    .nth(1)
                    .unwrap_or_else(|| panic!("<{tag}> without {name}: {t}"))
                    .split('"')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let classes = attr("testcase", "classname");
    assert_eq!(classes.len(), 7, "lint per step, merge-check, two comparisons of `merged`, one of `lora`: {x}");
    for c in &classes {
        assert!(c.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)), "class name `{c}`");
        assert_eq!(c.matches('.').count(), 1, "`lineage.step`: {c}");
    }
    assert!(classes.contains(&"LoRA_merged_with_the_wrong_scale_instruct_instruct_lora_merged.merged".to_string()), "{classes:?}");
    for t in attr("testcase", "time").iter().chain(&attr("testsuite", "time")) {
        let secs: f64 = t.parse().unwrap_or_else(|_| panic!("time `{t}`"));
        assert!(secs >= 0.0 && secs.is_finite(), "{t}");
    }
    let suite: f64 = attr("testsuite", "time")[0].parse().unwrap();
    assert!(suite > 0.0, "the run took time: {suite}");
}

#[test]
fn lineage_checks_catch_what_lint_alone_cannot() {
    // A step without a chat template lints with a warning only (it could be a base model), but
    // its parent had one: the export dropped it.
    let d = tmp();
    write_prompts(d.path());
    Fixture::healthy().write(&d.path().join("a"));
    let mut f = Fixture::healthy();
    f.tokenizer_config.as_object_mut().unwrap().remove("chat_template");
    f.write(&d.path().join("b"));
    let m = manifest(d.path(), &[("base", "a"), ("export", "b")], "");
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = r.json();
    assert_eq!(v["first_bad_step"], "export");
    assert!(v["cause"].as_str().unwrap().starts_with("lineage.template-dropped"), "{}", v["cause"]);

    // A tokenizer whose ids moved.
    let mut g = Fixture::healthy();
    let vocab = g.tokenizer["model"]["vocab"].as_object_mut().unwrap();
    vocab.insert("What".into(), json!(7));
    vocab.insert("is".into(), json!(6));
    g.write(&d.path().join("c"));
    let m = manifest(d.path(), &[("base", "a"), ("retok", "c")], "");
    let v = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]).json();
    assert_eq!(v["first_bad_step"], "retok");
    let cause = v["cause"].as_str().unwrap();
    assert!(cause.starts_with("lineage.tokenizer-changed") && cause.contains("2 ids map to other tokens"), "{cause}");
}

/// bisect runs every step once, in lockstep with the others, and scores both of a step's
/// comparisons from those passes: its numbers against the reference must be exactly those of a
/// pairwise `compare`, and its comparison with the parent must be on the same sequences.
#[test]
fn lockstep_bisect_matches_pairwise_compare() {
    let d = tmp();
    let prompts = zoo_path("prompts.jsonl");
    let models = ["llama-instruct", "llama-sft-good", "llama-sft-collapsed"].map(|m| zoo_path(&format!("models/{m}")));
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let mut toml = format!("name = \"lockstep\"\nprompts = \"{}\"\nmax_new_tokens = 8\n", s(&prompts));
    for (i, m) in models.iter().enumerate() {
        toml.push_str(&format!("[[step]]\nlabel = \"s{i}\"\npath = \"{}\"\n", s(m)));
    }
    let manifest = d.path().join("l.toml");
    std::fs::write(&manifest, toml).unwrap();
    let b = ckptcheck(&["bisect", "--json", s(&manifest).as_str()]);
    assert_eq!(b.code, 1, "{}\n{}", b.stdout, b.stderr);
    let b = b.json();
    for step in [1, 2] {
        let c = ckptcheck(&[
            "compare",
            "--json",
            "--layers",
            "--max-new-tokens",
            "8",
            "--prompts",
            &s(&prompts),
            &s(&models[0]),
            &s(&models[step]),
        ]);
        let c = c.json();
        let vs = &b["steps"][step]["vs_reference"];
        for key in ["kl", "top1", "ppl_ratio", "p_eos_cand_mean", "cand_stop_rate", "scored_tokens"] {
            assert_eq!(vs["summary"][key], c["summary"][key], "step {step} {key}");
        }
        assert_eq!(vs["layers"], c["layers"], "step {step} layer trace");
    }
    let parent = &b["steps"][2]["vs_parent"];
    assert_eq!(parent["summary"]["scored_tokens"], b["steps"][2]["vs_reference"]["summary"]["scored_tokens"]);
    assert_eq!(parent["summary"]["cand_stop_rate"], b["steps"][2]["vs_reference"]["summary"]["cand_stop_rate"]);
    assert_ne!(parent["summary"]["kl"], b["steps"][2]["vs_reference"]["summary"]["kl"], "scored against another model");
    assert!(b["steps"][1]["vs_parent"].is_null());
}

/// Issue 13: bisect and gate take compare's run options; the manifest's values are defaults and
/// the command line wins.
#[test]
fn bisect_and_gate_take_compare_run_options_over_the_manifest() {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/healthy.toml");
    let m = m.to_str().unwrap();
    let d = tmp();
    let loose = d.path().join("loose.toml");
    std::fs::write(
        &loose,
        "top1_warn = 0.1\ntop1_fail = 0.05\nkl_mean_warn = 5.0\nkl_mean_fail = 9.0\nppl_ratio_warn = 9.0\nppl_ratio_fail = 10.0\n",
    )
    .unwrap();
    let run = |cmd: &str, extra: &[&str]| {
        let mut args = vec![cmd, "--json", m, "--max-prompts", "2", "--max-new-tokens", "3", "--threads", "1"];
        args.extend_from_slice(extra);
        let r = ckptcheck(&args);
        assert_ne!(r.code, 2, "{}", r.stderr);
        r.json()
    };
    for cmd in ["bisect", "gate"] {
        let v = run(cmd, &[]);
        let c = &v["steps"][1]["vs_reference"];
        let prompts = c["prompts"].as_array().unwrap();
        assert_eq!(prompts.len(), 2, "--max-prompts over the manifest's 4 prompts");
        assert!(prompts.iter().all(|p| p["answer_tokens"] == 3), "--max-new-tokens 3 over the manifest's 24: {prompts:?}");
        assert_eq!(v["verdict"], "warn", "{cmd}");
        // A thresholds file over the manifest's (and every step's) thresholds changes the verdict.
        let v = run(cmd, &["--thresholds", loose.to_str().unwrap()]);
        assert_eq!(v["verdict"], "pass", "{cmd}: {}", v["steps"][1]["vs_reference"]["judgements"]);
    }
    let r = ckptcheck(&["bisect", m, "--dtype", "f8"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--dtype"), "{}", r.stderr);
    let r = ckptcheck(&["gate", m, "--prompts", "/nonexistent/p.jsonl"]);
    assert!(r.code == 2 && r.stderr.contains("/nonexistent/p.jsonl"), "{}", r.stderr);
    // The thresholds file is an input: no report may replace it.
    let r = ckptcheck(&["gate", m, "--thresholds", loose.to_str().unwrap(), "--report", loose.to_str().unwrap()]);
    assert!(r.code == 2 && r.stderr.contains("thresholds file"), "{}", r.stderr);
}

/// Issue 13 (intended change vs damage): a step marked `kind = "finetune"` is judged on
/// behaviour only, and the steps after it against it. lora-healthy.toml warns on its intended
/// fine-tune; the same lineage with the LoRA step marked passes, and its merge is judged against
/// the LoRA step (KL ~1e-13, not the fine-tune's drift again). A broken step after a finetune
/// step still breaks the lineage.
#[test]
fn finetune_steps_are_judged_on_behaviour_and_anchor_later_steps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines");
    let bisect = |name: &str| ckptcheck(&["bisect", "--json", dir.join(name).to_str().unwrap()]).json();
    let plain = bisect("lora-healthy.toml");
    assert_eq!(plain["verdict"], "warn");
    let marked = bisect("lora-finetune.toml");
    assert_eq!(marked["verdict"], "pass", "{:#}", marked["steps"][1]["vs_reference"]["judgements"]);
    let lora = &marked["steps"][1];
    assert_eq!(lora["kind"], "finetune");
    // The drift is still measured and shown, only not judged.
    assert_eq!(lora["vs_reference"]["summary"]["kl"]["mean"], plain["steps"][1]["vs_reference"]["summary"]["kl"]["mean"]);
    let warned: Vec<&serde_json::Value> =
        plain["steps"][1]["vs_reference"]["judgements"].as_array().unwrap().iter().filter(|j| j["status"] == "warn").collect();
    assert!(!warned.is_empty());
    for w in warned {
        let j = lora["vs_reference"]["judgements"].as_array().unwrap().iter().find(|j| j["metric"] == w["metric"]).unwrap();
        assert!(j["status"] == "pass" && j["note"].as_str().unwrap().contains("would be warn; not judged"), "{j}");
    }
    let merged = &marked["steps"][2];
    assert_eq!(merged["kind"], "derived");
    assert_eq!(merged["vs_reference"]["reference"], lora["source"], "the merge is judged against the fine-tune");
    assert!(merged["vs_reference"]["summary"]["kl"]["mean"].as_f64().unwrap() < 1e-9, "{}", merged["vs_reference"]["summary"]["kl"]);
    assert!(merged["vs_parent"].is_null(), "the parent is the anchor: one comparison");

    let v = bisect("sft-collapse-finetune.toml");
    assert_eq!(v["first_bad_step"], "sft-raw-text");
    assert_eq!(v["steps"][1]["status"], "pass");
    assert!(
        v["steps"][2]["vs_reference"]["reference"].as_str().unwrap().ends_with("llama-sft-good"),
        "{}",
        v["steps"][2]["vs_reference"]["reference"]
    );
    // Behaviour still fails a finetune step: the collapsed SFT marked as one fails on P(EOS).
    let d = tmp();
    let m = d.path().join("m.toml");
    std::fs::write(
        &m,
        format!(
            "prompts = \"{}\"\nmax_new_tokens = 24\n[[step]]\npath = \"{}\"\n[[step]]\nkind = \"finetune\"\npath = \"{}\"\n",
            zoo_path("prompts.jsonl").display(),
            zoo_path("models/llama-instruct").display(),
            zoo_path("models/llama-sft-collapsed").display()
        ),
    )
    .unwrap();
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.json()["cause"].as_str().unwrap().contains("P(EOS at turn end)"), "{}", r.stdout);
}

/// A step's flips against its parent count answers that differ from the parent's own greedy
/// answers (an exact merge changes none), not from the reference's; the table and the page show
/// each step's kind and its flips, and the KL mean with its standard error.
#[test]
fn flips_against_the_parent_are_against_the_parents_own_answers() {
    let d = tmp();
    let page = d.path().join("r.html");
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/lora-healthy.toml");
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_ne!(r.code, 2, "{}", r.stderr);
    let v = r.json();
    let steps = v["steps"].as_array().unwrap();
    let merged =
        steps.iter().find(|s| s["vs_parent"].is_object() && s["merge"].is_object()).expect("a merged step with a parent comparison");
    let flips = |c: &Value| (c["summary"]["flips"]["changed"].as_u64().unwrap(), c["summary"]["flips"]["prompts"].as_u64().unwrap());
    let (vs_parent, vs_ref) = (flips(&merged["vs_parent"]), flips(&merged["vs_reference"]));
    assert_eq!(vs_parent.0, 0, "an exact merge answers as its parent does: {vs_parent:?}");
    assert!(vs_parent.1 > 0 && vs_ref.1 == vs_parent.1, "{vs_parent:?} {vs_ref:?}");
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines/lora-finetune.toml");
    let r = ckptcheck(&["bisect", m.to_str().unwrap(), "--report", page.to_str().unwrap()]);
    assert_ne!(r.code, 2, "{}", r.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("<td class=\"kind\">finetune</td>") && html.contains("<th>flips</th>") && html.contains("<th>KL mean ± SE</th>"));
    assert!(r.stdout.contains("kind") && r.stdout.contains("finetune") && r.stdout.contains("flips"), "{}", r.stdout);
}
