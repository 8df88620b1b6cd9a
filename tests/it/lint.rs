//! `ckptcheck lint` through the real binary: a healthy synthetic checkpoint is clean, and each
//! check fires on a copy broken the way real pipelines break it. Each test fails if its check is
//! removed.

use crate::common::*;
use serde_json::json;

fn lint_fixture(f: &Fixture) -> (tempfile::TempDir, Run) {
    let d = tmp();
    f.write(d.path());
    let r = lint_json(d.path());
    (d, r)
}

fn assert_finding(r: &Run, id: &str, severity: &str) -> serde_json::Value {
    let f = r.finding(id);
    assert_eq!(f["severity"], severity, "{f}");
    f
}

#[test]
fn healthy_checkpoint_is_clean() {
    let (_d, r) = lint_fixture(&Fixture::healthy());
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.finding_ids().is_empty(), "{}", r.stdout);
    assert_eq!(r.json()["verdict"], "pass");
}

#[test]
fn sharded_healthy_checkpoint_is_clean() {
    let d = tmp();
    Fixture::healthy().write_sharded(d.path(), 3);
    let r = lint_json(d.path());
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(r.finding_ids().is_empty(), "{}", r.stdout);
}

#[test]
fn text_output_names_finding_file_and_fix() {
    let mut f = Fixture::healthy();
    f.generation_config = Some(json!({"eos_token_id": 0}));
    let d = tmp();
    f.write(d.path());
    let r = ckptcheck(&["lint", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("template.eot-not-eos"), "{}", r.stdout);
    assert!(r.stdout.contains("generation_config.json [eos_token_id]"), "{}", r.stdout);
    assert!(r.stdout.contains("fix: add 2 to eos_token_id"), "{}", r.stdout);
    assert!(r.stdout.contains("FAIL"), "{}", r.stdout);
}

// --- integrity -------------------------------------------------------------------------------

#[test]
fn truncated_file_is_out_of_bounds() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    let p = d.path().join("model.safetensors");
    let len = std::fs::metadata(&p).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(len - 100).unwrap();
    let r = lint_json(d.path());
    assert_eq!(r.code, 1);
    let f = assert_finding(&r, "integrity.out-of-bounds", "error");
    assert_eq!(f["file"], "model.safetensors");
    assert!(f["message"].as_str().unwrap().contains("truncated"), "{f}");
}

#[test]
fn lying_header_length_is_a_header_finding_not_a_panic() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    let p = d.path().join("model.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    b[..8].copy_from_slice(&(u64::MAX / 3).to_le_bytes());
    std::fs::write(&p, b).unwrap();
    let r = lint_json(d.path());
    assert_eq!(r.code, 1, "{}", r.stderr);
    let f = assert_finding(&r, "integrity.header", "error");
    assert!(f["message"].as_str().unwrap().contains("model.safetensors"), "{f}");
}

/// Rewrites the JSON header of a safetensors file in place (keeps the data section).
fn rewrite_header(p: &std::path::Path, edit: impl Fn(&str) -> String) {
    let b = std::fs::read(p).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&b[8..8 + n]).unwrap().trim_end().to_string();
    let new = edit(&header);
    let mut out = (new.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&b[8 + n..]);
    std::fs::write(p, out).unwrap();
}

#[test]
fn duplicate_tensor_names_are_reported() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    // Declare `model.norm.weight` a second time over the bytes of the final layer norm.
    rewrite_header(&d.path().join("model.safetensors"), |h| {
        let v: serde_json::Value = serde_json::from_str(h).unwrap();
        let other = &v["model.layers.0.post_attention_layernorm.weight"];
        let dup = format!(",\"model.norm.weight\":{other}}}");
        let mut s = h.replacen("\"model.layers.0.post_attention_layernorm.weight\"", "\"model.norm.weight\"", 1);
        s.pop();
        s + &dup[..dup.len() - 1] + "}"
    });
    let r = lint_json(d.path());
    let f = assert_finding(&r, "integrity.duplicate-tensor", "error");
    assert_eq!(f["field"], "model.norm.weight");
}

#[test]
fn unknown_dtype_names_tensor_and_field() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    rewrite_header(&d.path().join("model.safetensors"), |h| h.replacen("\"F32\"", "\"Q4_K\"", 1));
    let r = lint_json(d.path());
    let f = assert_finding(&r, "integrity.bad-entry", "error");
    assert!(f["field"].as_str().unwrap().ends_with(".dtype"), "{f}");
    assert!(f["message"].as_str().unwrap().contains("`Q4_K`"), "{f}");
}

#[test]
fn shape_that_lies_about_size_is_reported() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    rewrite_header(&d.path().join("model.safetensors"), |h| h.replacen("[16,8]", "[16,9]", 1));
    let r = lint_json(d.path());
    assert_finding(&r, "integrity.size-mismatch", "error");
}

#[test]
fn missing_shard_and_index_mismatch() {
    let d = tmp();
    Fixture::healthy().write_sharded(d.path(), 3);
    std::fs::remove_file(d.path().join("model-00002-of-00003.safetensors")).unwrap();
    let r = lint_json(d.path());
    assert_eq!(r.code, 1);
    let f = assert_finding(&r, "integrity.missing-shard", "error");
    assert_eq!(f["file"], "model-00002-of-00003.safetensors");

    let d = tmp();
    Fixture::healthy().write_sharded(d.path(), 2);
    let idx = d.path().join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&idx).unwrap()).unwrap();
    v["weight_map"]["model.ghost.weight"] = json!("model-00001-of-00002.safetensors");
    std::fs::write(&idx, v.to_string()).unwrap();
    let r = lint_json(d.path());
    let f = assert_finding(&r, "integrity.index-missing-tensor", "error");
    assert_eq!(f["field"], "weight_map.model.ghost.weight");
}

#[test]
fn malformed_side_file_is_named() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    std::fs::write(d.path().join("generation_config.json"), "{\"eos_token_id\": 2,").unwrap();
    let r = lint_json(d.path());
    let f = assert_finding(&r, "files.unreadable", "error");
    assert_eq!(f["file"], "generation_config.json");
}

// --- values ------------------------------------------------------------------------------------

fn set_f32(f: &mut Fixture, name: &str, i: usize, v: f32) {
    f.tensor_mut(name).data[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn nan_and_inf_are_errors_with_counts() {
    let mut f = Fixture::healthy();
    set_f32(&mut f, "model.layers.0.mlp.down_proj.weight", 3, f32::NAN);
    set_f32(&mut f, "model.layers.0.mlp.down_proj.weight", 5, f32::NAN);
    set_f32(&mut f, "model.layers.0.self_attn.q_proj.weight", 0, f32::NEG_INFINITY);
    let (_d, r) = lint_fixture(&f);
    assert_eq!(r.code, 1);
    let nan = assert_finding(&r, "values.nan", "error");
    assert_eq!(nan["field"], "model.layers.0.mlp.down_proj.weight");
    assert!(nan["message"].as_str().unwrap().contains("has 2 NaN"), "{nan}");
    let inf = assert_finding(&r, "values.inf", "error");
    assert!(inf["message"].as_str().unwrap().contains("1 -Inf"), "{inf}");
}

#[test]
fn all_zero_matrix_and_huge_values_warn() {
    let mut f = Fixture::healthy();
    f.tensor_mut("model.layers.0.self_attn.v_proj.weight").data.fill(0);
    set_f32(&mut f, "model.layers.0.mlp.up_proj.weight", 7, 3.0e4);
    let (_d, r) = lint_fixture(&f);
    assert_eq!(r.code, 0, "warnings do not fail without --strict");
    assert_eq!(assert_finding(&r, "values.all-zero", "warning")["field"], "model.layers.0.self_attn.v_proj.weight");
    assert_eq!(assert_finding(&r, "values.huge", "warning")["field"], "model.layers.0.mlp.up_proj.weight");
    let d = tmp();
    f.write(d.path());
    let strict = ckptcheck(&["lint", "--json", "--strict", d.path().to_str().unwrap()]);
    assert_eq!(strict.code, 1);
}

#[test]
fn f16_values_at_the_f16_max_warn() {
    let mut f = Fixture::healthy();
    let t = f.tensor_mut("model.layers.0.mlp.gate_proj.weight");
    let vals: Vec<f32> = t.data.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    t.dtype = safetensors::Dtype::F16;
    t.data = vals.iter().enumerate().flat_map(|(i, &x)| half::f16::from_f32(if i < 3 { 65504.0 } else { x }).to_le_bytes()).collect();
    let (_d, r) = lint_fixture(&f);
    let w = assert_finding(&r, "values.f16-saturated", "warning");
    assert!(w["message"].as_str().unwrap().contains("3 values"), "{w}");
}

// --- tokenizer ↔ weights ----------------------------------------------------------------------

#[test]
fn added_tokens_without_resized_embeddings() {
    let mut f = Fixture::healthy();
    let added = f.tokenizer["added_tokens"].as_array_mut().unwrap();
    for (i, c) in ["<tool_call>", "</tool_call>"].iter().enumerate() {
        added.push(json!({"id": 16 + i, "content": c, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    }
    let (_d, r) = lint_fixture(&f);
    assert_eq!(r.code, 1);
    let e = assert_finding(&r, "vocab.tokenizer-exceeds-rows", "error");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("18 ids") && m.contains("16 rows") && m.contains("16 `<tool_call>`"), "{m}");
}

#[test]
fn config_vocab_and_head_rows_disagree() {
    let mut f = Fixture::healthy();
    f.config["vocab_size"] = json!(32);
    let (_d, r) = lint_fixture(&f);
    assert_eq!(assert_finding(&r, "vocab.config-mismatch", "error")["field"], "vocab_size");

    let mut f = Fixture::healthy();
    *f.tensor_mut("lm_head.weight") = f32_tensor("lm_head.weight", &[24, HIDDEN], 2);
    let (_d, r) = lint_fixture(&f);
    assert_finding(&r, "vocab.embed-head-mismatch", "error");
}

#[test]
fn special_id_beyond_embedding_rows() {
    let mut f = Fixture::healthy();
    f.generation_config = Some(json!({"eos_token_id": [2, 99]}));
    let (_d, r) = lint_fixture(&f);
    let e = assert_finding(&r, "vocab.special-id-out-of-range", "error");
    assert_eq!(e["file"], "generation_config.json");
    assert!(e["message"].as_str().unwrap().contains("99"));
}

#[test]
fn embedding_far_bigger_than_tokenizer_warns() {
    let mut f = Fixture::healthy();
    *f.tensor_mut("lm_head.weight") = f32_tensor("lm_head.weight", &[2048, HIDDEN], 2);
    *f.tensor_mut("model.embed_tokens.weight") = f32_tensor("model.embed_tokens.weight", &[2048, HIDDEN], 1);
    f.config["vocab_size"] = json!(2048);
    let (_d, r) = lint_fixture(&f);
    assert_finding(&r, "vocab.rows-far-beyond-tokenizer", "warning");
}

// --- special tokens --------------------------------------------------------------------------

#[test]
fn eos_disagreement_between_files() {
    let mut f = Fixture::healthy();
    f.config["eos_token_id"] = json!(0);
    let (_d, r) = lint_fixture(&f);
    let w = assert_finding(&r, "special.eos-mismatch", "warning");
    assert_eq!(w["file"], "config.json");
    assert!(w["message"].as_str().unwrap().contains("0 `<|endoftext|>`"), "{w}");
}

#[test]
fn special_token_string_missing_from_tokenizer() {
    let mut f = Fixture::healthy();
    f.special_tokens_map = Some(json!({"eos_token": "<|eot_id|>"}));
    let (_d, r) = lint_fixture(&f);
    let e = assert_finding(&r, "special.unknown-token", "error");
    assert_eq!(e["file"], "special_tokens_map.json");
    assert_eq!(e["field"], "eos_token");
}

#[test]
fn pad_equal_to_eos_is_noted() {
    let mut f = Fixture::healthy();
    f.generation_config = Some(json!({"eos_token_id": 2, "pad_token_id": 2}));
    let (_d, r) = lint_fixture(&f);
    assert_finding(&r, "special.pad-is-eos", "info");
}

// --- chat template ----------------------------------------------------------------------------

#[test]
fn template_turn_end_not_in_generation_eos() {
    // The Llama-3 `<|eot_id|>` / Qwen `<|im_end|>` bug: turns end with one token, generation
    // stops on another.
    let mut f = Fixture::healthy();
    f.generation_config = Some(json!({"eos_token_id": 0}));
    f.config["eos_token_id"] = json!(0);
    let (_d, r) = lint_fixture(&f);
    assert_eq!(r.code, 1);
    let e = assert_finding(&r, "template.eot-not-eos", "error");
    let m = e["message"].as_str().unwrap();
    assert!(m.contains("`<|im_end|>` (id 2)") && m.contains("0 `<|endoftext|>`"), "{m}");
}

#[test]
fn chat_model_without_template() {
    let mut f = Fixture::healthy();
    f.tokenizer_config.as_object_mut().unwrap().remove("chat_template");
    let (_d, r) = lint_fixture(&f);
    assert_eq!(r.code, 0);
    let w = assert_finding(&r, "template.missing", "warning");
    assert!(w["message"].as_str().unwrap().contains("<|im_start|>"));
}

#[test]
fn template_that_does_not_render() {
    let mut f = Fixture::healthy();
    f.tokenizer_config["chat_template"] = json!("{% for m in messages %}{{ m['content'] }{% endfor %}");
    let (_d, r) = lint_fixture(&f);
    assert_eq!(r.code, 1);
    assert_eq!(assert_finding(&r, "template.render-failed", "error")["file"], "tokenizer_config.json");
}

#[test]
fn template_from_chat_template_jinja_file_wins() {
    let mut f = Fixture::healthy();
    f.tokenizer_config.as_object_mut().unwrap().remove("chat_template");
    let d = tmp();
    f.write(d.path());
    std::fs::write(d.path().join("chat_template.jinja"), "{{ raise_exception('broken on purpose') }}").unwrap();
    let r = lint_json(d.path());
    let e = assert_finding(&r, "template.render-failed", "error");
    assert_eq!(e["file"], "chat_template.jinja");
    assert!(e["message"].as_str().unwrap().contains("broken on purpose"));
}

#[test]
fn special_token_split_by_the_tokenizer() {
    // `<|im_end|>` is in the vocabulary but not registered as an added token: the pre-tokenizer
    // splits it, so the model never sees its id.
    let mut f = Fixture::healthy();
    f.tokenizer["added_tokens"].as_array_mut().unwrap().retain(|t| t["content"] != "<|im_end|>");
    let (_d, r) = lint_fixture(&f);
    let e = assert_finding(&r, "template.special-split", "error");
    assert!(e["message"].as_str().unwrap().contains("`<|im_end|>` appears 4 times"), "{e}");
}

#[test]
fn double_bos_from_template_and_post_processor() {
    let mut f = Fixture::healthy();
    f.tokenizer["post_processor"] = json!({
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [0], "tokens": ["<|endoftext|>"]}}
    });
    f.tokenizer_config["bos_token"] = json!("<|endoftext|>");
    f.tokenizer_config["chat_template"] = json!(format!("{{{{ bos_token }}}}{CHATML}"));
    let (_d, r) = lint_fixture(&f);
    assert_finding(&r, "template.double-bos", "warning");
}

// --- could not run ----------------------------------------------------------------------------

#[test]
fn pickle_only_directory_is_refused_with_conversion_hint() {
    let d = tmp();
    std::fs::write(d.path().join("config.json"), "{}").unwrap();
    std::fs::write(d.path().join("pytorch_model.bin"), b"PK\x03\x04 not really").unwrap();
    let r = ckptcheck(&["lint", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("refusing to load") && r.stderr.contains("pytorch_model.bin"), "{}", r.stderr);
    assert!(r.stderr.contains("save_pretrained") && r.stderr.contains("safe_serialization=True"), "{}", r.stderr);
}

#[test]
fn pickle_file_path_is_refused() {
    let d = tmp();
    let p = d.path().join("adapter.pt");
    std::fs::write(&p, [0x80u8, 0x04, 0x95]).unwrap();
    let r = ckptcheck(&["inspect", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("adapter.pt") && r.stderr.contains("pickle"), "{}", r.stderr);
}

#[test]
fn pickles_beside_safetensors_are_ignored_and_noted() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    std::fs::write(d.path().join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
    let r = lint_json(d.path());
    assert_eq!(r.code, 0);
    assert_finding(&r, "files.pickle-ignored", "info");
}

#[test]
fn missing_path_and_empty_dir_cannot_run() {
    let r = ckptcheck(&["lint", "/nonexistent/ckpt"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("/nonexistent/ckpt"), "{}", r.stderr);
    let d = tmp();
    let r = ckptcheck(&["lint", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("no `model.safetensors`"), "{}", r.stderr);
}
