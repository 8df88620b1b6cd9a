//! The GitHub Action cannot run here, so what it runs is tested instead: scripts/ckptcheck-gate.sh
//! through bash with the real binary on shipped lineages (exit codes 0/1/2 passed through, the
//! JUnit and HTML reports written on failure too, the step outputs and job summary GitHub reads,
//! bad inputs named), and action.yml and the example workflow in docs/install.md read as YAML and
//! held to the inputs the action declares and the outputs the script writes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use crate::common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

struct ScriptRun {
    code: i32,
    stdout: String,
    stderr: String,
    /// $GITHUB_OUTPUT after the run ("" when the script wrote none).
    outputs: String,
    /// $GITHUB_STEP_SUMMARY after the run.
    summary: String,
}

impl ScriptRun {
    /// The value of `key` in $GITHUB_OUTPUT: its last `key=value` line, as GitHub reads it.
    fn output(&self, key: &str) -> Option<&str> {
        self.outputs.lines().rev().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// `bash scripts/ckptcheck-gate.sh ARGS` in `cwd`, with GitHub's step files inside `cwd`,
/// `CKPTCHECK_BIN` the binary under test unless `bin` says otherwise, and none of the GitHub
/// variables of a CI that might be running these tests leaking in.
fn script_with(cwd: &Path, bin: Option<&str>, args: &[&str]) -> ScriptRun {
    let out_file = cwd.join("github_output");
    let summary_file = cwd.join("step_summary");
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("scripts/ckptcheck-gate.sh")).args(args).current_dir(cwd);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("GITHUB_") || k.to_string_lossy().starts_with("CKPTCHECK_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("GITHUB_OUTPUT", &out_file).env("GITHUB_STEP_SUMMARY", &summary_file);
    cmd.env("CKPTCHECK_BIN", bin.unwrap_or(env!("CARGO_BIN_EXE_ckptcheck")));
    let out = cmd.output().expect("bash runs");
    ScriptRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        outputs: std::fs::read_to_string(&out_file).unwrap_or_default(),
        summary: std::fs::read_to_string(&summary_file).unwrap_or_default(),
    }
}

fn script(cwd: &Path, args: &[&str]) -> ScriptRun {
    script_with(cwd, None, args)
}

fn pipeline(name: &str) -> String {
    Path::new(ROOT).join("testdata/pipelines").join(name).to_str().unwrap().to_string()
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display())).remove(0)
}

fn action() -> Yaml {
    yaml(&Path::new(ROOT).join("action.yml"))
}

/// The keys of a YAML mapping.
fn keys(y: &Yaml) -> BTreeSet<String> {
    y.as_hash().map(|h| h.keys().filter_map(|k| k.as_str().map(String::from)).collect()).unwrap_or_default()
}

/// `${{ steps.STEP.outputs.KEY }}` references in `text`: the KEYs for STEP.
fn step_output_refs(text: &str, step: &str) -> BTreeSet<String> {
    let pat = format!("steps.{step}.outputs.");
    text.match_indices(&pat)
        .map(|(i, _)| text[i + pat.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect())
        .collect()
}

// --- the script ---------------------------------------------------------------------------------

#[test]
fn gate_passes_a_healthy_lineage_and_writes_reports_and_step_outputs() {
    let tmp = tmp();
    let r = script(tmp.path(), &["gate", &pipeline("healthy.toml"), "--out-dir", "reports"]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let dir = tmp.path().join("reports");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<testsuites") && junit.contains("failures=\"0\""), "{junit}");
    assert!(std::fs::read_to_string(dir.join("report.html")).unwrap().starts_with("<!DOCTYPE html>"));
    // The text report is in the log and in report.txt, and the summary holds it.
    let text = std::fs::read_to_string(dir.join("report.txt")).unwrap();
    assert!(text.contains("no step crossed a threshold"), "{text}");
    assert_eq!(r.stdout, text);
    assert!(r.summary.contains("passed") && r.summary.contains(text.trim_end()), "{}", r.summary);
    assert_eq!(r.output("exit-code"), Some("0"));
    assert_eq!(r.output("junit"), Some("reports/junit.xml"));
    assert_eq!(r.output("report"), Some("reports/report.html"));
    // Every output action.yml exposes from the gate step is one the script wrote.
    let action_text = std::fs::read_to_string(Path::new(ROOT).join("action.yml")).unwrap();
    let exposed = step_output_refs(&action_text, "gate");
    assert!(!exposed.is_empty());
    for key in exposed {
        assert!(r.output(&key).is_some(), "action.yml reads steps.gate.outputs.{key}, which the script never writes:\n{}", r.outputs);
    }
}

#[test]
fn gate_exits_1_on_a_broken_lineage_and_still_writes_both_reports() {
    let tmp = tmp();
    let r = script(tmp.path(), &["gate", &pipeline("sft-collapse.toml")]);
    assert_eq!(r.code, 1, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    // The default directory, and both artifacts the upload step looks for.
    let dir = tmp.path().join("ckptcheck-report");
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<failure"), "{junit}");
    assert!(dir.join("report.html").is_file());
    assert_eq!(r.output("exit-code"), Some("1"));
    assert!(r.summary.contains("failed (exit 1)"), "{}", r.summary);
    assert!(r.stderr.contains("::error title=ckptcheck gate::"), "{}", r.stderr);
}

#[test]
fn gate_exits_2_when_ckptcheck_could_not_run_and_records_it() {
    let tmp = tmp();
    let r = script(tmp.path(), &["gate", "missing.toml"]);
    assert_eq!(r.code, 2, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("missing.toml"), "ckptcheck's own error reaches the log: {}", r.stderr);
    assert_eq!(r.output("exit-code"), Some("2"));
    assert!(r.summary.contains("could not run (exit 2)"), "{}", r.summary);
}

#[test]
fn gate_strict_true_fails_a_lineage_that_only_warns() {
    // sft-frozen.toml passes with a warning (frozen layers): exit 0, and 1 under --strict.
    let (a, b) = (tmp(), tmp());
    let lenient = script(a.path(), &["gate", &pipeline("sft-frozen.toml"), "--strict", "false"]);
    assert_eq!(lenient.code, 0, "{}", lenient.stderr);
    assert_eq!(lenient.output("exit-code"), Some("0"));
    let strict = script(b.path(), &["gate", &pipeline("sft-frozen.toml"), "--strict", "true"]);
    assert_eq!(strict.code, 1, "{}", strict.stderr);
    assert_eq!(strict.output("exit-code"), Some("1"));
}

#[test]
fn gate_names_each_bad_input_and_exits_2_before_running() {
    let tmp = tmp();
    let healthy = pipeline("healthy.toml");
    let cases: &[(&[&str], &str)] = &[
        (&["gate", &healthy, "--strict", "yes"], "`strict` input) is `yes`: it must be true or false"),
        (&["gate", &healthy, "--strict"], "--strict needs true or false"),
        (&["gate", &healthy, "--out-dir"], "--out-dir needs a directory"),
        (&["gate", &healthy, "--junit", "x.xml"], "unknown option `--junit`"),
        (&["gate", &healthy, &healthy], "two manifests given"),
        (&["gate"], "no manifest given"),
        (&["publish"], "unknown subcommand `publish`"),
        (&["install"], "install: no package given"),
    ];
    for (args, message) in cases {
        let r = script(tmp.path(), args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{args:?}: expected {message:?} in:\n{}", r.stderr);
        assert!(r.outputs.is_empty(), "{args:?} ran nothing, so it records no step outputs: {}", r.outputs);
    }
    // No binary where CKPTCHECK_BIN points: says how to get one.
    let r = script_with(tmp.path(), Some("/nonexistent/ckptcheck"), &["gate", &healthy]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("`/nonexistent/ckptcheck` not found") && r.stderr.contains("CKPTCHECK_BIN"), "{}", r.stderr);
}

#[test]
fn install_refuses_a_venv_that_already_exists() {
    let tmp = tmp();
    let venv = tmp.path().join("venv");
    std::fs::create_dir(&venv).unwrap();
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("scripts/ckptcheck-gate.sh")).args(["install", "ckptcheck"]).env("CKPTCHECK_VENV", &venv);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already exists: the venv must be fresh"), "{stderr}");
}

#[test]
fn script_passes_bash_syntax_check() {
    let out = Command::new("bash").arg("-n").arg(Path::new(ROOT).join("scripts/ckptcheck-gate.sh")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

// --- action.yml and the docs' example workflow ----------------------------------------------------

#[test]
fn action_is_composite_and_uploads_reports_even_when_the_gate_failed() {
    let a = action();
    assert_eq!(a["runs"]["using"].as_str(), Some("composite"));
    let steps = a["runs"]["steps"].as_vec().expect("runs.steps");
    let step = |id: &str| steps.iter().find(|s| s["id"].as_str() == Some(id)).unwrap_or_else(|| panic!("no step with id `{id}`"));

    // Every shell step is bash and runs the script that tests/it/gate_action.rs tests.
    for s in steps.iter().filter(|s| !s["run"].is_badvalue()) {
        assert_eq!(s["shell"].as_str(), Some("bash"), "{s:?}");
        let run = s["run"].as_str().unwrap();
        assert!(run.starts_with("bash \"$GITHUB_ACTION_PATH/scripts/ckptcheck-gate.sh\" "), "{run}");
    }
    assert!(Path::new(ROOT).join("scripts/ckptcheck-gate.sh").is_file());
    assert!(step("install")["run"].as_str().unwrap().contains(" install "));
    let gate = step("gate");
    let run = gate["run"].as_str().unwrap();
    assert!(run.contains(" gate \"$MANIFEST\"") && run.contains("--out-dir \"$OUT_DIR\"") && run.contains("--strict \"$STRICT\""), "{run}");
    assert_eq!(gate["env"]["CKPTCHECK_BIN"].as_str(), Some("${{ steps.install.outputs.bin }}"));
    // The gate step fails the job on any non-zero exit: nothing may swallow it.
    assert!(gate["continue-on-error"].is_badvalue(), "the gate step must fail the job on exit 1 and 2");

    let upload =
        steps.iter().find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/upload-artifact@"))).expect("an upload step");
    let cond = upload["if"].as_str().unwrap_or("");
    assert!(cond.contains("always()"), "the upload must run after a failed gate too: if: {cond:?}");
    assert_eq!(upload["with"]["path"].as_str(), Some("${{ inputs.out-dir }}"));
    // The upload comes after the gate.
    let pos = |s: &Yaml| steps.iter().position(|x| x == s).unwrap();
    assert!(pos(upload) > pos(gate));
}

#[test]
fn action_reads_only_declared_inputs_and_declares_each_one_it_documents() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("action.yml")).unwrap();
    let declared = keys(&action()["inputs"]);
    let used: BTreeSet<String> = text
        .match_indices("inputs.")
        .map(|(i, _)| text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect())
        .collect();
    assert!(used.is_subset(&declared), "undeclared inputs read: {:?}", used.difference(&declared).collect::<Vec<_>>());
    assert_eq!(used, declared, "every declared input is used");
    // docs/install.md's input table lists exactly the declared inputs.
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/install.md")).unwrap();
    let header = docs.lines().position(|l| l.starts_with("| input |")).expect("docs/install.md has the `| input |` table");
    let table: BTreeSet<String> = docs
        .lines()
        .skip(header + 2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(String::from))
        .collect();
    assert_eq!(table, declared, "docs/install.md's input table vs action.yml");
}

/// The fenced ```LANG blocks of docs/install.md.
fn doc_blocks(lang: &str) -> Vec<String> {
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/install.md")).unwrap();
    let fence = format!("```{lang}\n");
    docs.match_indices(&fence)
        .map(|(i, _)| {
            let body = &docs[i + fence.len()..];
            body[..body.find("```").expect("closed fence")].to_string()
        })
        .collect()
}

#[test]
fn docs_example_workflow_uses_the_action_with_its_real_inputs() {
    let blocks = doc_blocks("yaml");
    assert_eq!(blocks.len(), 1, "one example workflow in docs/install.md");
    let wf = YamlLoader::load_from_str(&blocks[0]).expect("the example workflow is YAML").remove(0);
    let a = action();
    let declared = keys(&a["inputs"]);
    let required: BTreeSet<String> =
        declared.iter().filter(|k| a["inputs"][k.as_str()]["required"].as_bool() == Some(true)).cloned().collect();
    let steps = wf["jobs"]["gate"]["steps"].as_vec().expect("jobs.gate.steps");
    let uses_action =
        steps.iter().find(|s| s["uses"].as_str().is_some_and(|u| u.contains("/ckptcheck@"))).expect("a step using the action");
    let given = keys(&uses_action["with"]);
    assert!(given.is_subset(&declared), "example passes undeclared inputs {:?}", given.difference(&declared).collect::<Vec<_>>());
    assert!(required.is_subset(&given), "example misses required inputs {:?}", required.difference(&given).collect::<Vec<_>>());
    // It gates the quantized artifact the manifest names, before the publish step.
    let manifest = uses_action["with"]["manifest"].as_str().unwrap();
    assert_eq!(manifest, "release/lineage.toml");
    let publish = steps.iter().position(|s| s["name"].as_str().is_some_and(|n| n.starts_with("Publish"))).expect("a publish step");
    assert!(steps.iter().position(|s| s == uses_action).unwrap() < publish);
}

#[test]
fn docs_example_manifest_is_a_valid_lineage() {
    let blocks = doc_blocks("toml");
    assert_eq!(blocks.len(), 1, "one example manifest in docs/install.md");
    let tmp = tmp();
    let path: PathBuf = tmp.path().join("release/lineage.toml");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &blocks[0]).unwrap();
    // A manifest's paths are checked before anything runs: lay out the files the example names
    // (the workflow's build/ directory and the prompts beside the manifest).
    let build = tmp.path().join("build");
    std::fs::create_dir_all(build.join("sft")).unwrap();
    for f in ["sft-f16.gguf", "sft-q4_k_m.gguf"] {
        std::fs::write(build.join(f), b"").unwrap();
    }
    std::fs::write(tmp.path().join("release/prompts.jsonl"), b"").unwrap();
    let m = ckptcheck::pipeline::manifest::Manifest::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let labels: Vec<&str> = m.steps.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["sft", "gguf-f16", "q4_k_m"]);
}
