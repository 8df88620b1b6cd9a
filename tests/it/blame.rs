//! Inside a broken step (issue 16): weight fingerprints name the structural mistake and the cause
//! rules name the collapse. The zoo lineages made by blame.py (real transformers saves) through
//! the real binary, then synthetic steps for the findings no zoo lineage carries.

use std::path::Path;

use serde_json::{json, Value};

use crate::common::*;

fn pipeline(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/pipelines").join(name).to_str().unwrap().to_string()
}

fn bisect(manifest: &str) -> (i32, Value) {
    let r = ckptcheck(&["bisect", "--json", manifest]);
    assert_ne!(r.code, 2, "{manifest}: {}", r.stderr);
    (r.code, r.json())
}

/// The findings with `id` on step `i`.
fn findings(v: &Value, i: usize, id: &str) -> Vec<Value> {
    v["steps"][i]["findings"].as_array().unwrap().iter().filter(|f| f["id"] == id).cloned().collect()
}

fn weight_ids(v: &Value, i: usize) -> Vec<String> {
    v["steps"][i]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["id"].as_str())
        .filter(|id| {
            [
                "lineage.layers-swapped",
                "lineage.layer-duplicated",
                "lineage.qk-permuted",
                "lineage.transposed",
                "lineage.tensor-unchanged",
                "lineage.head-tied",
                "lineage.head-untied",
                "lineage.frozen-layers",
            ]
            .contains(id)
        })
        .map(String::from)
        .collect()
}

// --- zoo lineages (blame.py) ------------------------------------------------------------------

#[test]
fn swapped_layers_are_named_layer_by_layer() {
    zoo_path("models/mistral-layers-swapped");
    let (code, v) = bisect(&pipeline("layers-swapped.toml"));
    assert_eq!(code, 1);
    assert_eq!(v["first_bad_step"], "converted");
    let cause = &v["causes"][0];
    assert_eq!((cause["cause_id"].as_str(), cause["confidence"].as_str()), (Some("lineage.layers-swapped"), Some("high")), "{cause}");
    let f = findings(&v, 1, "lineage.layers-swapped");
    assert_eq!(f.len(), 1, "{:#?}", v["steps"][1]["findings"]);
    let msg = f[0]["message"].as_str().unwrap();
    // The bf16 step is matched against the f32 parent in bf16: both directions of the swap.
    assert!(
        msg.contains("layer 0's weights equal the parent's layer 1") && msg.contains("layer 1's weights equal the parent's layer 0"),
        "{msg}"
    );
    assert_eq!(weight_ids(&v, 1), ["lineage.layers-swapped"], "moved layers are not also reported as changed or frozen");
}

#[test]
fn qk_rows_in_llama_cpp_order_are_named() {
    zoo_path("models/mistral-qk-permuted");
    let (code, v) = bisect(&pipeline("qk-permuted.toml"));
    assert_eq!(code, 1);
    assert_eq!(v["first_bad_step"], "re-exported");
    assert_eq!(v["causes"][0]["cause_id"], "lineage.qk-permuted");
    let f = findings(&v, 1, "lineage.qk-permuted");
    let fields: Vec<&str> = f.iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.q_proj.weight"], "{f:#?}");
    for x in &f {
        let m = x["message"].as_str().unwrap();
        assert!(m.contains("layers 0, 1") && m.contains("interleaved-rope order"), "{m}");
    }
    // Only the projections moved: nothing else changed, nothing is called transposed or frozen.
    let mut ids = weight_ids(&v, 1);
    ids.dedup();
    assert_eq!(ids, ["lineage.qk-permuted"]);
}

#[test]
fn a_frozen_layer_sft_is_a_note_naming_the_layers() {
    zoo_path("models/mistral-sft-frozen");
    let (code, v) = bisect(&pipeline("sft-frozen.toml"));
    assert_eq!(code, 0, "a frozen-layer SFT is not a failure: {}", v["cause"]);
    let f = findings(&v, 1, "lineage.frozen-layers");
    assert_eq!(f.len(), 1, "{:#?}", v["steps"][1]["findings"]);
    assert_eq!(f[0]["severity"], "info");
    let m = f[0]["message"].as_str().unwrap();
    assert!(m.contains("only layer 1 changed") && m.contains("layer 0 holds its weights unchanged"), "{m}");
    assert!(m.contains("model.embed_tokens.weight") && m.contains("lm_head.weight"), "{m}");
    assert_eq!(weight_ids(&v, 1), ["lineage.frozen-layers"]);
    // The text report says it too, under the table: a passing row alone would not.
    let text = ckptcheck(&["bisect", &pipeline("sft-frozen.toml")]);
    assert!(text.stdout.contains("note: step 1 `sft-layer1`: lineage.frozen-layers: only layer 1 changed"), "{}", text.stdout);
}

#[test]
fn pad_eq_eos_sft_is_blamed_on_the_collator() {
    zoo_path("models/llama-sft-pad-eos");
    let (code, v) = bisect(&pipeline("sft-pad-eos.toml"));
    assert_eq!(code, 1);
    assert_eq!(v["first_bad_step"], "sft-pad-eos");
    let c = &v["causes"][0];
    assert_eq!(c["cause_id"], "cause.eos-masked-as-pad", "{:#}", v["causes"]);
    assert_eq!(c["confidence"], "high", "the parent pads with another token");
    let ev: Vec<&str> = c["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(ev[0].starts_with("P(EOS at turn end) 0.98"), "{ev:?}");
    assert!(ev.iter().any(|e| e.contains("PAD and EOS are the same token") && e.contains("<|im_end|>")), "{ev:?}");
    assert!(c["fix"].as_str().unwrap().contains("pad token that is not EOS"));
    let p = v["steps"][1]["vs_reference"]["summary"]["p_eos_cand_mean"].as_f64().unwrap();
    assert!(p < 0.2, "the zoo variant lost its end of turn: P(EOS) {p}");
    assert!(v["cause"].as_str().unwrap().starts_with("cause.eos-masked-as-pad: "));
}

#[test]
fn a_merge_that_skipped_a_module_leaves_that_tensor_unchanged() {
    zoo_path("models/llama-merge-skip-module");
    let (_, v) = bisect(&pipeline("lora-merge-skip-module.toml"));
    let f = findings(&v, 2, "lineage.tensor-unchanged");
    let fields: Vec<&str> = f.iter().map(|f| f["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["model.layers.1.self_attn.v_proj.weight"], "{f:#?}");
    // The merge algebra still names the cause (it is the more decisive finding).
    assert_eq!(v["causes"][0]["cause_id"], "merge.not-merged");
}

/// Healthy steps — a bf16 SFT of every layer, a correct merge, config-only edits — carry no
/// weight-lineage finding: the checks do not fire on ordinary training or casting.
#[test]
fn healthy_lineages_have_no_weight_findings() {
    for m in ["healthy.toml", "lora-healthy.toml", "export-wrong-eos.toml", "sft-collapse.toml"] {
        let (_, v) = bisect(&pipeline(m));
        for i in 1..v["steps"].as_array().unwrap().len() {
            assert!(weight_ids(&v, i).is_empty(), "{m} step {i}: {:?}", weight_ids(&v, i));
        }
    }
}

// --- synthetic steps --------------------------------------------------------------------------

fn write_prompts(dir: &Path) {
    std::fs::write(dir.join("prompts.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n").unwrap();
}

fn two_steps(dir: &Path, step: &Fixture, extra: &str) -> String {
    write_prompts(dir);
    Fixture::healthy().write(&dir.join("base"));
    step.write(&dir.join("step"));
    let p = dir.join("lineage.toml");
    std::fs::write(
        &p,
        format!("prompts = \"prompts.jsonl\"\nmax_new_tokens = 4\n{extra}\n[[step]]\nlabel = \"base\"\npath = \"base\"\n[[step]]\nlabel = \"step\"\npath = \"step\"\n"),
    )
    .unwrap();
    p.to_str().unwrap().to_string()
}

fn copy_tensor(f: &mut Fixture, from: &str, to: &str) {
    let data = f.tensor_mut(from).data.clone();
    f.tensor_mut(to).data = data;
}

#[test]
fn a_layer_copied_over_another_is_a_duplicate() {
    let d = tmp();
    let mut f = Fixture::healthy();
    for t in
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    {
        copy_tensor(&mut f, &format!("model.layers.0.{t}.weight"), &format!("model.layers.1.{t}.weight"));
    }
    let (code, v) = bisect(&two_steps(d.path(), &f, ""));
    assert_eq!(code, 1);
    let dup = findings(&v, 1, "lineage.layer-duplicated");
    assert_eq!(dup.len(), 1, "{:#?}", v["steps"][1]["findings"]);
    assert!(dup[0]["message"].as_str().unwrap().contains("layers 0, 1 all hold the parent step `base`'s layer 0"), "{}", dup[0]);
    assert!(findings(&v, 1, "lineage.layers-swapped").is_empty());
    assert_eq!(v["causes"][0]["cause_id"], "lineage.layer-duplicated");
}

#[test]
fn a_transposed_projection_is_named() {
    let d = tmp();
    let mut f = Fixture::healthy();
    let t = f.tensor_mut("model.layers.1.self_attn.o_proj.weight");
    let vals: Vec<[u8; 4]> = t.data.chunks(4).map(|c| c.try_into().unwrap()).collect();
    t.data = (0..HIDDEN * HIDDEN).flat_map(|i| vals[(i % HIDDEN) * HIDDEN + i / HIDDEN]).collect();
    let (code, v) = bisect(&two_steps(d.path(), &f, ""));
    assert_eq!(code, 1);
    let tr = findings(&v, 1, "lineage.transposed");
    assert_eq!(tr.len(), 1, "{:#?}", v["steps"][1]["findings"]);
    assert_eq!(tr[0]["field"], "model.layers.1.self_attn.o_proj.weight");
    assert_eq!(v["first_bad_step"], "step");
}

#[test]
fn a_head_tied_to_the_embeddings_on_export_is_named() {
    let d = tmp();
    let mut f = Fixture::healthy();
    copy_tensor(&mut f, "model.embed_tokens.weight", "lm_head.weight");
    let (code, v) = bisect(&two_steps(d.path(), &f, ""));
    assert_eq!(code, 1);
    let t = findings(&v, 1, "lineage.head-tied");
    assert_eq!(t.len(), 1, "{:#?}", v["steps"][1]["findings"]);
    assert_eq!(v["causes"][0]["cause_id"], "lineage.head-tied");
    // The other direction: a parent tied by config, a step with a head of its own that differs.
    let d2 = tmp();
    write_prompts(d2.path());
    let mut tied = Fixture::healthy();
    tied.config["tie_word_embeddings"] = json!(true);
    tied.tensors.retain(|t| t.name != "lm_head.weight");
    tied.write(&d2.path().join("base"));
    Fixture::healthy().write(&d2.path().join("step"));
    let p = d2.path().join("lineage.toml");
    std::fs::write(&p, "prompts = \"prompts.jsonl\"\nmax_new_tokens = 4\n[[step]]\nlabel = \"base\"\npath = \"base\"\n[[step]]\nlabel = \"step\"\npath = \"step\"\n").unwrap();
    let (_, v) = bisect(p.to_str().unwrap());
    assert_eq!(findings(&v, 1, "lineage.head-untied").len(), 1, "{:#?}", v["steps"][1]["findings"]);
}

/// A bf16 copy of the parent is the parent: no weight finding, no frozen-layer note (nothing changed).
#[test]
fn a_cast_copy_is_not_a_change() {
    let d = tmp();
    let mut f = Fixture::healthy();
    for t in &mut f.tensors {
        t.data = t.data.chunks(4).flat_map(|c| half::bf16::from_f32(f32::from_le_bytes(c.try_into().unwrap())).to_le_bytes()).collect();
        t.dtype = safetensors::Dtype::BF16;
    }
    f.config["torch_dtype"] = json!("bfloat16");
    let (_, v) = bisect(&two_steps(d.path(), &f, ""));
    assert!(weight_ids(&v, 1).is_empty(), "{:?}", weight_ids(&v, 1));
}

#[test]
fn a_changed_template_with_broken_numbers_points_at_the_training_format() {
    let d = tmp();
    let mut f = Fixture::healthy();
    f.tokenizer_config["chat_template"] = json!(format!("{{{{ 'System: answer briefly.\n' }}}}{CHATML}"));
    let t = f.tensor_mut("model.layers.1.mlp.down_proj.weight");
    for c in t.data.chunks_mut(4) {
        let x = f32::from_le_bytes(c.try_into().unwrap()) * -20.0;
        c.copy_from_slice(&x.to_le_bytes());
    }
    let (code, v) = bisect(&two_steps(d.path(), &f, "[thresholds]\nkl_mean_fail = 0.0\nkl_mean_warn = 0.0\n"));
    assert_eq!(code, 1);
    assert!(!findings(&v, 1, "lineage.template-changed").is_empty(), "{:#?}", v["steps"][1]["findings"]);
    let c = &v["causes"][0];
    assert_eq!(c["cause_id"], "cause.trained-on-other-template", "{:#}", v["causes"]);
    assert_eq!(c["confidence"], "medium");
}

#[test]
fn a_divergence_from_the_embeddings_on_suspects_the_embedding() {
    let d = tmp();
    let mut f = Fixture::healthy();
    // The rows of the embedding in reverse order: what ids do when a tokenizer is swapped under it.
    let t = f.tensor_mut("model.embed_tokens.weight");
    let rows: Vec<Vec<u8>> = t.data.chunks(HIDDEN * 4).map(<[u8]>::to_vec).collect();
    t.data = rows.into_iter().rev().flatten().collect();
    let (code, v) = bisect(&two_steps(d.path(), &f, "[thresholds]\nkl_mean_fail = 0.0\nkl_mean_warn = 0.0\n"));
    assert_eq!(code, 1);
    assert_eq!(v["steps"][1]["vs_reference"]["first_bad_layer"], "embeddings");
    let c = &v["causes"][0];
    assert_eq!(c["cause_id"], "cause.tokenizer-or-embedding", "{:#}", v["causes"]);
    assert_eq!(c["confidence"], "medium");
    // Only the embedding changed: no layer is said to be frozen or moved.
    assert!(weight_ids(&v, 1).is_empty(), "{:?}", weight_ids(&v, 1));
}

/// Every cause rule id is documented in docs/bisect.md, and every `cause.*` id documented there
/// is a rule.
#[test]
fn cause_ids_are_documented() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bisect.md")).unwrap();
    let documented: std::collections::BTreeSet<&str> =
        doc.split('`').filter(|s| s.starts_with("cause.") && s.len() > 6 && !s.contains(' ')).collect();
    let rules: std::collections::BTreeSet<&str> = ckptcheck::pipeline::causes::RULE_IDS.iter().copied().collect();
    assert_eq!(documented, rules);
}

/// `lint --parent` runs the same step-vs-parent checks as bisect on two checkpoints: the swapped
/// layers and the Q/K permutation are errors there too, the frozen layers a note; without
/// `--parent` lint cannot see any of them.
#[test]
fn lint_against_a_parent_names_the_structural_mistake() {
    let model = |n: &str| zoo_path(&format!("models/{n}")).to_string_lossy().into_owned();
    for (step, id, code) in [
        ("mistral-layers-swapped", "lineage.layers-swapped", 1),
        ("mistral-qk-permuted", "lineage.qk-permuted", 1),
        ("mistral-sft-frozen", "lineage.frozen-layers", 0),
    ] {
        let with = ckptcheck(&["lint", "--json", &model(step), "--parent", &model("mistral")]);
        assert_eq!(with.code, code, "{step}: {}", with.stdout);
        let ids: Vec<String> = with.json()["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
        assert!(ids.iter().any(|i| i == id), "{step}: {ids:?}");
        let alone = ckptcheck(&["lint", "--json", &model(step)]);
        assert!(!alone.stdout.contains(id), "{step} without --parent: {}", alone.stdout);
    }
}
