//! Shared test helpers: a small synthetic HF checkpoint that tests break on purpose, the zoo's
//! location, and a runner for the real binary.
//!
//! The synthetic checkpoint is written with the `safetensors` crate (not hand-packed bytes) and a
//! `tokenizer.json` the `tokenizers` crate loads; tests mutate its parts before `write`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

pub const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub const WORDS: &[&str] = &[
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "[UNK]",
    "user",
    "assistant",
    "What",
    "is",
    "6",
    "times",
    "7",
    "?",
    "The",
    "answer",
    "42",
    ".",
];
pub const HIDDEN: usize = 8;
pub const LAYERS: usize = 2;

pub struct Tensor {
    pub name: String,
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn f32_tensor(name: &str, shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    // Deterministic, nonzero, |w| < 0.5.
    let data = (0..n)
        .flat_map(|i| {
            let x = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503)) % 1000) as f32;
            ((x + 1.0) / 2002.0 - 0.25).to_le_bytes()
        })
        .collect();
    Tensor { name: name.into(), dtype: safetensors::Dtype::F32, shape: shape.to_vec(), data }
}

/// A tiny Llama-layout checkpoint, healthy by construction.
pub struct Fixture {
    pub config: Value,
    pub generation_config: Option<Value>,
    pub tokenizer_config: Value,
    pub special_tokens_map: Option<Value>,
    pub tokenizer: Value,
    pub tensors: Vec<Tensor>,
}

impl Fixture {
    pub fn healthy() -> Fixture {
        let vocab: serde_json::Map<String, Value> = WORDS.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
        let added: Vec<Value> = WORDS[..3]
            .iter()
            .enumerate()
            .map(|(i, w)| json!({"id": i, "content": w, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        let v = WORDS.len();
        let mut tensors = vec![
            f32_tensor("model.embed_tokens.weight", &[v, HIDDEN], 1),
            f32_tensor("lm_head.weight", &[v, HIDDEN], 2),
            f32_tensor("model.norm.weight", &[HIDDEN], 3),
        ];
        for layer in 0..LAYERS {
            for (i, (n, shape)) in [
                ("self_attn.q_proj.weight", vec![HIDDEN, HIDDEN]),
                ("self_attn.k_proj.weight", vec![HIDDEN / 2, HIDDEN]),
                ("self_attn.v_proj.weight", vec![HIDDEN / 2, HIDDEN]),
                ("self_attn.o_proj.weight", vec![HIDDEN, HIDDEN]),
                ("mlp.gate_proj.weight", vec![16, HIDDEN]),
                ("mlp.up_proj.weight", vec![16, HIDDEN]),
                ("mlp.down_proj.weight", vec![HIDDEN, 16]),
                ("input_layernorm.weight", vec![HIDDEN]),
                ("post_attention_layernorm.weight", vec![HIDDEN]),
            ]
            .into_iter()
            .enumerate()
            {
                tensors.push(f32_tensor(&format!("model.layers.{layer}.{n}"), &shape, 10 + 20 * layer as u32 + i as u32));
            }
        }
        Fixture {
            config: json!({
                "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v,
                "hidden_size": HIDDEN, "intermediate_size": 16, "num_hidden_layers": LAYERS,
                "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
                "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
                "bos_token_id": null, "eos_token_id": 2, "pad_token_id": 0
            }),
            generation_config: Some(json!({"eos_token_id": 2, "pad_token_id": 0})),
            tokenizer_config: json!({
                "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": null,
                "chat_template": CHATML, "tokenizer_class": "PreTrainedTokenizerFast"
            }),
            special_tokens_map: Some(json!({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})),
            tokenizer,
            tensors,
        }
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut Tensor {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// Writes the checkpoint into `dir` (single `model.safetensors`).
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let put = |name: &str, v: &Value| std::fs::write(dir.join(name), serde_json::to_string_pretty(v).unwrap()).unwrap();
        put("config.json", &self.config);
        if let Some(g) = &self.generation_config {
            put("generation_config.json", g);
        }
        put("tokenizer_config.json", &self.tokenizer_config);
        if let Some(s) = &self.special_tokens_map {
            put("special_tokens_map.json", s);
        }
        put("tokenizer.json", &self.tokenizer);
        std::fs::write(dir.join("model.safetensors"), serialize(self.tensors.iter())).unwrap();
    }

    /// Writes the weights as `n` shards with a `model.safetensors.index.json`.
    pub fn write_sharded(&self, dir: &Path, n: usize) {
        self.write(dir);
        std::fs::remove_file(dir.join("model.safetensors")).unwrap();
        let mut weight_map = serde_json::Map::new();
        let per = self.tensors.len().div_ceil(n);
        for (i, chunk) in self.tensors.chunks(per).enumerate() {
            let name = format!("model-{:05}-of-{:05}.safetensors", i + 1, n);
            for t in chunk {
                weight_map.insert(t.name.clone(), json!(name));
            }
            std::fs::write(dir.join(&name), serialize(chunk.iter())).unwrap();
        }
        let total: usize = self.tensors.iter().map(|t| t.data.len()).sum();
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
    }
}

pub fn serialize<'a>(tensors: impl Iterator<Item = &'a Tensor>) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView)> =
        tensors.map(|t| (t.name.clone(), safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

/// Result of running the real binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
    /// Finding ids in a `lint --json` report.
    pub fn finding_ids(&self) -> Vec<String> {
        self.json()["findings"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()).collect()
    }
    pub fn finding(&self, id: &str) -> Value {
        self.json()["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no finding {id} in:\n{}", self.stdout))
    }
}

pub fn ckptcheck(args: &[&str]) -> Run {
    ckptcheck_env(args, &[])
}

/// `ckptcheck` with extra environment variables.
pub fn ckptcheck_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_ckptcheck")).args(args).envs(env.iter().copied()).output().expect("binary runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub fn lint_json(dir: &Path) -> Run {
    ckptcheck(&["lint", "--json", dir.to_str().unwrap()])
}

/// The committed test-model zoo.
pub fn zoo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/zoo")
}

/// A file or directory of the zoo (`rel` under testdata/zoo) that a test needs: a missing one is a
/// failure, never a skip, and the message says how to get it back.
#[track_caller]
pub fn zoo_path(rel: &str) -> PathBuf {
    let p = zoo().join(rel);
    assert!(
        p.exists(),
        "zoo fixture testdata/zoo/{rel} is missing: the zoo is committed, so restore it with \
         `git checkout -- testdata/zoo/{rel}`, or regenerate it as testdata/zoo/README.md says \
         (\"How to regenerate\"; its Layout section names the script that writes each file)"
    );
    p
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A copy of zoo model `model` (files as they are) whose config.json is passed through `config`.
pub fn zoo_copy(model: &str, config: &dyn Fn(&mut Value)) -> tempfile::TempDir {
    let d = tmp();
    for e in std::fs::read_dir(zoo().join("models").join(model)).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, d.path().join(p.file_name().unwrap())).unwrap();
    }
    let cp = d.path().join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&cp).unwrap()).unwrap();
    config(&mut v);
    std::fs::write(&cp, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    d
}

/// Rewrites the bytes of tensor `name` in the copy `dir`, in place.
pub fn edit_tensor(dir: &Path, name: &str, edit: &dyn Fn(&mut [u8])) {
    let hf = ckptcheck::format::hf::HfDir::open(dir).unwrap();
    let (f, t) = hf.tensor(name).unwrap();
    let (path, at, len) = (f.path.clone(), (f.header.data_start + t.start) as usize, (t.end - t.start) as usize);
    drop(hf);
    let mut bytes = std::fs::read(&path).unwrap();
    edit(&mut bytes[at..at + len]);
    std::fs::write(&path, bytes).unwrap();
}

/// Rewrites every shard of the copy `dir` without the tensors `drop` names, and its index too,
/// as a re-save that filtered them would.
pub fn drop_tensors(dir: &Path, drop: &dyn Fn(&str) -> bool) {
    resave_tensors(dir, &|n| (!drop(n)).then(|| n.to_string()));
}

/// Rewrites every shard of the copy `dir` (and its index) with each tensor renamed by `rename`,
/// as a re-save by another library version would name them.
pub fn rename_tensors(dir: &Path, rename: &dyn Fn(&str) -> String) {
    resave_tensors(dir, &|n| Some(rename(n)));
}

/// Every shard and the index of `dir` rewritten: `keep` gives each tensor's new name, or `None`
/// to drop it.
fn resave_tensors(dir: &Path, keep: &dyn Fn(&str) -> Option<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".safetensors") {
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let kept: Vec<_> = st.tensors().into_iter().filter_map(|(n, t)| keep(&n).map(|n| (n, t))).collect();
            std::fs::write(&p, safetensors::serialize(kept, None).unwrap()).unwrap();
        } else if name == "model.safetensors.index.json" {
            let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let map = v["weight_map"].as_object().unwrap().clone();
            v["weight_map"] = map.into_iter().filter_map(|(k, f)| keep(&k).map(|k| (k, f))).collect::<serde_json::Map<_, _>>().into();
            std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        }
    }
}
