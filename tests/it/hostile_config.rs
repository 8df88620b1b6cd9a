//! Issue 12, class 4: every reason compare can refuse a checkpoint is a lint error with a stable id
//! first, and the engine never meets a shape it has not validated nor papers over a missing
//! tensor. Each case breaks the synthetic checkpoint one way and asserts lint's exit code and
//! finding id, then that compare refuses it with an error naming the tensor or field.

use serde_json::json;

use crate::common::*;

/// One way to break a healthy checkpoint, the finding lint must report, and what compare's error
/// must name (`None`: compare runs — the finding is about a model that runs wrong).
struct Case {
    name: &'static str,
    damage: fn(&mut Fixture),
    id: &'static str,
    compare_names: Option<&'static str>,
}

fn remove(f: &mut Fixture, name: &str) {
    let before = f.tensors.len();
    f.tensors.retain(|t| t.name != name);
    assert_eq!(f.tensors.len(), before - 1, "fixture has no {name}");
}

fn reshape(f: &mut Fixture, name: &str, shape: &[usize]) {
    let seed = 99;
    let t = f32_tensor(name, shape, seed);
    *f.tensor_mut(name) = t;
}

const CASES: &[Case] = &[
    Case {
        name: "missing layer tensor",
        damage: |f| remove(f, "model.layers.1.mlp.down_proj.weight"),
        id: "weights.missing-tensor",
        compare_names: Some("model.layers.1.mlp.down_proj.weight"),
    },
    Case {
        name: "missing final norm",
        damage: |f| remove(f, "model.norm.weight"),
        id: "weights.missing-tensor",
        compare_names: Some("model.norm.weight"),
    },
    Case {
        name: "i32 weight",
        damage: |f| {
            let t = f.tensor_mut("model.layers.0.self_attn.o_proj.weight");
            t.dtype = safetensors::Dtype::I32;
        },
        id: "weights.not-float",
        compare_names: Some("model.layers.0.self_attn.o_proj.weight"),
    },
    Case {
        name: "bool weight",
        damage: |f| {
            let t = f32_tensor("model.layers.0.mlp.up_proj.weight", &[16, HIDDEN], 5);
            let n = t.shape.iter().product::<usize>();
            *f.tensor_mut("model.layers.0.mlp.up_proj.weight") =
                Tensor { name: t.name, dtype: safetensors::Dtype::BOOL, shape: t.shape, data: vec![1u8; n] };
        },
        id: "weights.not-float",
        compare_names: Some("model.layers.0.mlp.up_proj.weight"),
    },
    Case {
        name: "wrong q_proj shape",
        damage: |f| reshape(f, "model.layers.0.self_attn.q_proj.weight", &[HIDDEN + 2, HIDDEN]),
        id: "weights.shape-mismatch",
        compare_names: Some("q_proj"),
    },
    Case {
        name: "transposed down_proj",
        damage: |f| reshape(f, "model.layers.1.mlp.down_proj.weight", &[16, HIDDEN]),
        id: "weights.shape-mismatch",
        compare_names: Some("down_proj"),
    },
    Case {
        name: "0-d norm",
        damage: |f| reshape(f, "model.layers.0.input_layernorm.weight", &[]),
        id: "weights.shape-mismatch",
        compare_names: Some("input_layernorm"),
    },
    Case {
        name: "embedding of the wrong width",
        damage: |f| reshape(f, "model.embed_tokens.weight", &[WORDS.len(), HIDDEN + 1]),
        id: "weights.shape-mismatch",
        compare_names: Some("embed_tokens"),
    },
    Case {
        name: "num_hidden_layers 0",
        damage: |f| f.config["num_hidden_layers"] = json!(0),
        id: "config.unsupported",
        compare_names: Some("num_hidden_layers"),
    },
    Case {
        name: "num_hidden_layers 1e9",
        damage: |f| f.config["num_hidden_layers"] = json!(1_000_000_000u64),
        id: "config.unsupported",
        compare_names: Some("num_hidden_layers"),
    },
    Case {
        name: "num_hidden_layers beyond the weights",
        damage: |f| f.config["num_hidden_layers"] = json!(LAYERS + 1),
        id: "weights.layers-missing",
        compare_names: Some("model.layers"),
    },
    Case {
        name: "huge num_hidden_layers within range",
        damage: |f| f.config["num_hidden_layers"] = json!(1 << 20),
        id: "weights.layers-missing",
        compare_names: Some("1048576 layers"),
    },
    Case {
        name: "zero heads",
        damage: |f| f.config["num_attention_heads"] = json!(0),
        id: "config.unsupported",
        compare_names: Some("num_attention_heads"),
    },
    Case {
        name: "zero kv heads",
        damage: |f| f.config["num_key_value_heads"] = json!(0),
        id: "config.unsupported",
        compare_names: Some("num_key_value_heads"),
    },
    Case {
        name: "kv heads not dividing heads",
        damage: |f| {
            f.config["num_attention_heads"] = json!(4);
            f.config["num_key_value_heads"] = json!(3);
        },
        id: "config.unsupported",
        compare_names: Some("num_key_value_heads"),
    },
    Case { name: "head_dim 0", damage: |f| f.config["head_dim"] = json!(0), id: "config.unsupported", compare_names: Some("head_dim") },
    Case {
        name: "head_dim wrong for the weights",
        damage: |f| f.config["head_dim"] = json!(2 * HIDDEN),
        id: "weights.shape-mismatch",
        compare_names: Some("q_proj"),
    },
    Case {
        name: "vocab_size negative",
        damage: |f| f.config["vocab_size"] = json!(-1024),
        id: "config.unsupported",
        compare_names: Some("vocab_size"),
    },
    Case {
        name: "vocab_size a string",
        damage: |f| f.config["vocab_size"] = json!("1024"),
        id: "config.unsupported",
        compare_names: Some("vocab_size"),
    },
    Case {
        name: "hidden_size narrower than the weights",
        damage: |f| {
            f.config["hidden_size"] = json!(HIDDEN - 2);
            f.config["head_dim"] = json!(HIDDEN / 2);
        },
        id: "weights.shape-mismatch",
        compare_names: Some("embed_tokens"),
    },
    Case {
        name: "intermediate_size wrong",
        damage: |f| f.config["intermediate_size"] = json!(12),
        id: "weights.shape-mismatch",
        compare_names: Some("gate_proj"),
    },
    Case {
        name: "unknown model_type",
        damage: |f| f.config["model_type"] = json!("mamba"),
        id: "config.unsupported",
        compare_names: Some("model_type"),
    },
    Case {
        name: "lm_head missing, tie false",
        damage: |f| remove(f, "lm_head.weight"),
        id: "weights.lm-head-missing",
        compare_names: Some("lm_head.weight"),
    },
    Case {
        name: "lm_head missing, tie unset (llama default: untied)",
        damage: |f| {
            remove(f, "lm_head.weight");
            f.config.as_object_mut().unwrap().remove("tie_word_embeddings");
        },
        id: "weights.lm-head-missing",
        compare_names: Some("lm_head.weight"),
    },
];

fn prompts(dir: &std::path::Path) -> String {
    let p = dir.join("prompts.jsonl");
    std::fs::write(&p, "{\"messages\": [{\"role\": \"user\", \"content\": \"What is 6 times 7 ?\"}]}\n").unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn every_refusal_is_a_lint_error_first() {
    let d = tmp();
    let p = prompts(d.path());
    let healthy = d.path().join("healthy");
    Fixture::healthy().write(&healthy);
    let mut failures = Vec::new();
    for (i, c) in CASES.iter().enumerate() {
        let m = d.path().join(format!("case{i}"));
        let mut f = Fixture::healthy();
        (c.damage)(&mut f);
        f.write(&m);
        let lint = lint_json(&m);
        let ids = lint.finding_ids();
        if lint.code != 1 || !ids.iter().any(|x| x == c.id) {
            failures.push(format!("{}: lint exit {} with {ids:?}, expected {} (exit 1)", c.name, lint.code, c.id));
            continue;
        }
        let r = ckptcheck(&["compare", "--prompts", &p, "--max-new-tokens", "2", healthy.to_str().unwrap(), m.to_str().unwrap()]);
        match c.compare_names {
            Some(what) if r.code != 2 || !r.stderr.contains(what) => {
                failures.push(format!("{}: compare exit {}, stderr must name `{what}`:\n{}", c.name, r.code, r.stderr))
            }
            _ => {}
        }
        if r.stderr.contains("shape mismatch in matmul") || r.stderr.contains("panicked") {
            failures.push(format!("{}: the engine met an unvalidated shape:\n{}", c.name, r.stderr));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases:\n{}", failures.len(), CASES.len(), failures.join("\n\n"));
}

/// A model that ties its head (config says so) is not flagged.
#[test]
fn a_declared_tie_without_lm_head_is_clean() {
    let d = tmp();
    let mut f = Fixture::healthy();
    remove(&mut f, "lm_head.weight");
    f.config["tie_word_embeddings"] = json!(true);
    f.write(d.path());
    let ids = lint_json(d.path()).finding_ids();
    assert!(!ids.iter().any(|i| i.starts_with("weights.") || i.starts_with("config.")), "{ids:?}");
}

/// Every zoo model (dense, quantized, tied, untied, sandwich-norm, qk-norm, biased) satisfies the
/// shape checks: they are not noise on real checkpoints.
#[test]
fn zoo_models_have_no_weights_findings() {
    for entry in std::fs::read_dir(zoo_path("models")).unwrap() {
        let dir = entry.unwrap().path();
        let ids = lint_json(&dir).finding_ids();
        assert!(!ids.iter().any(|i| i.starts_with("weights.") || i.starts_with("config.")), "{}: {ids:?}", dir.display());
    }
}

/// A copy of the zoo's LoRA adapter with its adapter_config.json edited.
fn adapter_with(d: &std::path::Path, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let src = zoo_path("models/llama-lora-adapter");
    let dst = d.join("adapter");
    std::fs::create_dir_all(&dst).unwrap();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dst.join(p.file_name().unwrap())).unwrap();
    }
    let cfg = dst.join("adapter_config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&cfg, v.to_string()).unwrap();
    dst
}

/// Adapter configs merge-check or `BASE+ADAPTER` would refuse or misread are lint errors first.
#[test]
fn broken_adapter_configs_are_lint_errors_first() {
    type Edit = fn(&mut serde_json::Value);
    let cases: &[(&str, Edit, &str)] = &[
        ("r 0", |v| v["r"] = json!(0), "adapter.invalid"),
        ("r negative", |v| v["r"] = json!(-8), "adapter.invalid"),
        ("r 2^62", |v| v["r"] = json!(1u64 << 62), "adapter.invalid"),
        ("alpha a string", |v| v["lora_alpha"] = json!("16"), "adapter.invalid"),
        ("IA3", |v| v["peft_type"] = json!("IA3"), "adapter.unsupported"),
        ("r inconsistent with the tensors", |v| v["r"] = json!(4), "adapter.rank-mismatch"),
    ];
    let base = zoo_path("models/llama-instruct");
    let merged = zoo_path("models/llama-lora-merged");
    let mut failures = Vec::new();
    for (name, edit, id) in cases {
        let d = tmp();
        let a = adapter_with(d.path(), edit);
        let lint = lint_json(&a);
        let ids = lint.finding_ids();
        if lint.code != 1 || !ids.iter().any(|x| x == id) {
            failures.push(format!("{name}: lint exit {} with {ids:?}, expected {id}", lint.code));
        }
        // merge-check refuses (2) or fails (1) it; never passes it.
        let r = ckptcheck(&[
            "merge-check",
            "--base",
            base.to_str().unwrap(),
            "--adapter",
            a.to_str().unwrap(),
            "--merged",
            merged.to_str().unwrap(),
        ]);
        if r.code == 0 {
            failures.push(format!("{name}: merge-check passed a broken adapter:\n{}", r.stdout));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_adapter_with_no_modules_is_an_error() {
    let d = tmp();
    let a = adapter_with(d.path(), |_| {});
    // Keep only the non-LoRA tensors: an adapter whose targets matched nothing.
    let f = a.join("adapter_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = st.tensors().into_iter().filter(|(n, _)| !n.contains("lora_")).collect();
    std::fs::write(&f, safetensors::serialize(kept, None).unwrap()).unwrap();
    let lint = lint_json(&a);
    assert_eq!(lint.code, 1, "{}", lint.stdout);
    assert!(lint.finding_ids().contains(&"adapter.no-modules".to_string()), "{:?}", lint.finding_ids());
}

#[test]
fn the_zoo_adapters_are_clean() {
    for a in ["models/llama-lora-adapter", "models/llama-dora-adapter"] {
        let ids = lint_json(&zoo_path(a)).finding_ids();
        assert!(!ids.iter().any(|i| i.starts_with("adapter.")), "{a}: {ids:?}");
    }
}

/// Regression (issue 12, wrong blame): an unparseable config.json was also reported as missing.
#[test]
fn an_unparseable_config_is_unreadable_not_missing() {
    let d = tmp();
    Fixture::healthy().write(d.path());
    std::fs::write(d.path().join("config.json"), "{not json").unwrap();
    let ids = lint_json(d.path()).finding_ids();
    assert!(ids.contains(&"files.unreadable".to_string()) && !ids.contains(&"files.missing-config".to_string()), "{ids:?}");
}

/// Regression (issue 12, wrong blame): `--max-prompts 0` scored nothing and failed on "top1 0".
#[test]
fn max_prompts_zero_is_a_usage_error() {
    let m = zoo_path("models/llama-instruct");
    let r = ckptcheck(&["compare", "--max-prompts", "0", m.to_str().unwrap(), m.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--max-prompts") && r.stderr.contains("at least 1"), "{}", r.stderr);
}

/// Regression (issue 12, wrong blame): NaN in lora_A was diagnosed as a merge into the wrong module.
#[test]
fn nan_in_the_adapter_is_named_as_such() {
    let d = tmp();
    let a = adapter_with(d.path(), |_| {});
    let f = a.join("adapter_model.safetensors");
    let bytes = std::fs::read(&f).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    let (_, dtype, _, data) = owned.iter_mut().find(|(n, ..)| n.contains("lora_A")).unwrap();
    let nan: &[u8] = match dtype {
        safetensors::Dtype::F32 => &[0, 0, 0xc0, 0x7f],
        safetensors::Dtype::BF16 => &[0xc0, 0x7f],
        _ => &[0x00, 0x7e],
    };
    data[..nan.len()].copy_from_slice(nan);
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        owned.iter().map(|(n, dt, s, d)| (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), d).unwrap())).collect();
    std::fs::write(&f, safetensors::serialize(views, None).unwrap()).unwrap();
    let r = ckptcheck(&[
        "merge-check",
        "--json",
        "--base",
        zoo_path("models/llama-instruct").to_str().unwrap(),
        "--adapter",
        a.to_str().unwrap(),
        "--merged",
        zoo_path("models/llama-lora-merged").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let ids = r.finding_ids();
    assert!(ids.contains(&"merge.adapter-not-finite".to_string()) && !ids.contains(&"merge.wrong-module".to_string()), "{ids:?}");
}

/// Regression (issue 12, wrong blame): a step that could not run was called the one that breaks
/// the lineage.
#[test]
fn a_step_that_could_not_run_is_not_blamed() {
    let d = tmp();
    let model = zoo_path("models/llama-instruct");
    let m = d.path().join("m.toml");
    std::fs::write(
        &m,
        format!(
            "prompts = \"{}\"\nmax_new_tokens = 4\n[[step]]\nlabel = \"base\"\npath = \"{}\"\n[[step]]\nlabel = \"gone\"\npath = \"{}\"\n",
            zoo_path("prompts.jsonl").display(),
            model.display(),
            d.path().join("nowhere").display()
        ),
    )
    .unwrap();
    // It exists (a missing path is refused before the run), but holds no weights.
    std::fs::create_dir(d.path().join("nowhere")).unwrap();
    let r = ckptcheck(&["bisect", "--json", m.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.json()["first_bad_step"].is_null(), "{}", r.stdout);
    let t = ckptcheck(&["bisect", m.to_str().unwrap()]);
    assert!(t.stdout.contains("incomplete: step 1 `gone` could not run") && !t.stdout.contains("breaks it"), "{}", t.stdout);
}

/// Token-id fields holding what is not an id were silently dropped (no id: nothing checked).
#[test]
fn invalid_token_ids_are_errors() {
    for (name, v) in [
        ("string", json!("2")),
        ("negative", json!(-1)),
        ("huge float", json!(1e30)),
        ("fraction", json!(2.5)),
        ("mixed list", json!([2, "x"])),
    ] {
        let d = tmp();
        let mut f = Fixture::healthy();
        f.generation_config = Some(json!({"eos_token_id": v, "pad_token_id": 0}));
        f.write(d.path());
        let r = lint_json(d.path());
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        let found = r.finding("special.invalid-id");
        assert_eq!((found["file"].as_str(), found["field"].as_str()), (Some("generation_config.json"), Some("eos_token_id")), "{name}");
    }
}

#[test]
fn merge_check_names_what_each_path_must_be() {
    let m = zoo_path("models/llama-instruct");
    let r = ckptcheck(&["merge-check", "--base", m.to_str().unwrap(), "--adapter", m.to_str().unwrap(), "--merged", m.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("needs a PEFT adapter directory") && r.stderr.contains("llama-instruct"), "{}", r.stderr);
}

/// Regression (issue 12, wrong blame): a too-long or empty prompt was blamed on tokenizer.json.
#[test]
fn an_unscorable_prompt_names_the_prompts_file() {
    let d = tmp();
    let m = d.path().join("m");
    Fixture::healthy().write(&m);
    let p = d.path().join("p.jsonl");
    std::fs::write(&p, format!("\"6 times 7\"\n{{\"text\": \"{}\"}}\n", "6 ".repeat(20000))).unwrap();
    let r = ckptcheck(&["compare", "--prompts", p.to_str().unwrap(), m.to_str().unwrap(), m.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("p.jsonl") && r.stderr.contains("prompt 2") && !r.stderr.contains("tokenizer.json"), "{}", r.stderr);
}

/// Regression (issue 12, wrong blame): an empty `weight_map` was reported as "no safetensors"
/// though both shards exist, and compare globbed shards around a broken index that lint flags.
#[test]
fn a_broken_shard_index_is_named_and_never_worked_around() {
    let cases: &[(&str, &str)] = &[
        ("empty weight_map", "{\"metadata\": {}, \"weight_map\": {}}"),
        ("path traversal", "{\"weight_map\": {\"model.norm.weight\": \"../x.safetensors\"}}"),
        ("absolute path", "{\"weight_map\": {\"model.norm.weight\": \"/etc/x.safetensors\"}}"),
        ("not JSON", "{weight_map"),
    ];
    let d = tmp();
    let healthy = d.path().join("healthy");
    Fixture::healthy().write(&healthy);
    for (name, index) in cases {
        let m = d.path().join(name.replace(' ', "-"));
        Fixture::healthy().write_sharded(&m, 2);
        std::fs::write(m.join("model.safetensors.index.json"), index).unwrap();
        let lint = lint_json(&m);
        assert_eq!(lint.code, 1, "{name}: {}{}", lint.stdout, lint.stderr);
        let f = lint.finding("files.unreadable");
        assert_eq!(f["file"], "model.safetensors.index.json", "{name}");
        let r = ckptcheck(&["compare", "--max-prompts", "1", healthy.to_str().unwrap(), m.to_str().unwrap()]);
        assert_eq!(r.code, 2, "{name}: compare ran around a broken index:\n{}", r.stdout);
        assert!(r.stderr.contains("model.safetensors.index.json"), "{name}: {}", r.stderr);
    }
}

#[test]
fn added_tokens_decoder_ids_out_of_range_are_errors() {
    for (name, key) in [("beyond the rows", "100000"), ("not an id", "x"), ("negative", "-1")] {
        let d = tmp();
        let mut f = Fixture::healthy();
        f.tokenizer_config["added_tokens_decoder"] = json!({ key: {"content": "<extra>", "special": true} });
        f.write(d.path());
        let r = lint_json(d.path());
        assert_eq!(r.code, 1, "{name}: {}", r.stdout);
        assert_eq!(r.finding("vocab.added-token-out-of-range")["field"], "added_tokens_decoder", "{name}");
    }
}

/// Regression (issue 12, wrong blame): an adapter whose adapter_config.json does not parse was
/// linted as a model missing its config.json.
#[test]
fn an_unparseable_adapter_config_is_unreadable_not_a_missing_model_config() {
    let d = tmp();
    let a = adapter_with(d.path(), |_| {});
    std::fs::write(a.join("adapter_config.json"), "{\"r\": ").unwrap();
    let r = lint_json(&a);
    let ids = r.finding_ids();
    assert_eq!(r.code, 1);
    assert_eq!(r.finding("files.unreadable")["file"], "adapter_config.json", "{ids:?}");
    assert!(!ids.contains(&"files.missing-config".to_string()), "{ids:?}");
}
