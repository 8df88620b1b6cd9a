//! Any byte string as one side JSON file of a tiny, otherwise healthy checkpoint must open and
//! lint to findings or an error, never panic. The input is `config.json`, unless its first byte
//! picks another file (the rest of the input is then that file):
//! `T` tokenizer_config.json, `G` generation_config.json, `A` adapter_config.json,
//! `S` special_tokens_map.json.
//! The checkpoint (two layers of Llama layout written with the `safetensors` crate, a WordLevel
//! tokenizer) is written once to a temp dir; each input replaces one file, which is restored after.
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run -a -s none side_files` (see fuzz/README.md).
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ckptcheck::checkpoint::Checkpoint;
use ckptcheck::checks::{lint, LintOptions};
use libfuzzer_sys::fuzz_target;
use serde_json::json;

const HIDDEN: usize = 8;
const INTER: usize = 16;
const WORDS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]", "user", "assistant", "hello", "world"];
const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    /// The healthy contents of each side file the fuzzer may replace (None: absent).
    originals: Vec<(&'static str, Option<Vec<u8>>)>,
}

fn tensor_bytes(n: usize, seed: u32) -> Vec<u8> {
    (0..n).flat_map(|i| (((i as u32 * 31 + seed * 17) % 97) as f32 / 97.0 - 0.5).to_le_bytes()).collect()
}

fn fixture() -> &'static Fixture {
    static FIX: OnceLock<Fixture> = OnceLock::new();
    FIX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let v = WORDS.len();
        let mut specs: Vec<(String, Vec<usize>)> = vec![
            ("model.embed_tokens.weight".into(), vec![v, HIDDEN]),
            ("lm_head.weight".into(), vec![v, HIDDEN]),
            ("model.norm.weight".into(), vec![HIDDEN]),
        ];
        for l in 0..2 {
            for (n, s) in [
                ("self_attn.q_proj.weight", vec![HIDDEN, HIDDEN]),
                ("self_attn.k_proj.weight", vec![HIDDEN / 2, HIDDEN]),
                ("self_attn.v_proj.weight", vec![HIDDEN / 2, HIDDEN]),
                ("self_attn.o_proj.weight", vec![HIDDEN, HIDDEN]),
                ("mlp.gate_proj.weight", vec![INTER, HIDDEN]),
                ("mlp.up_proj.weight", vec![INTER, HIDDEN]),
                ("mlp.down_proj.weight", vec![HIDDEN, INTER]),
                ("input_layernorm.weight", vec![HIDDEN]),
                ("post_attention_layernorm.weight", vec![HIDDEN]),
            ] {
                specs.push((format!("model.layers.{l}.{n}"), s));
            }
        }
        let data: Vec<Vec<u8>> = specs.iter().enumerate().map(|(i, (_, s))| tensor_bytes(s.iter().product(), i as u32)).collect();
        let views: Vec<(String, safetensors::tensor::TensorView)> = specs
            .iter()
            .zip(&data)
            .map(|((n, s), d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).expect("view")))
            .collect();
        std::fs::write(root.join("model.safetensors"), safetensors::serialize(views, None).expect("serialize")).expect("write");

        let vocab: serde_json::Map<String, serde_json::Value> = WORDS.iter().enumerate().map(|(i, w)| (w.to_string(), json!(i))).collect();
        let added: Vec<serde_json::Value> = WORDS[..3]
            .iter()
            .enumerate()
            .map(|(i, w)| json!({"id": i, "content": w, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let tokenizer = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
        });
        let config = json!({
            "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": v,
            "hidden_size": HIDDEN, "intermediate_size": INTER, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-6,
            "rope_theta": 10000.0, "tie_word_embeddings": false, "torch_dtype": "float32",
            "bos_token_id": null, "eos_token_id": 2, "pad_token_id": 0
        });
        let tokenizer_config = json!({
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": null,
            "chat_template": CHATML, "tokenizer_class": "PreTrainedTokenizerFast"
        });
        let bytes = |v: &serde_json::Value| serde_json::to_vec_pretty(v).expect("json");
        std::fs::write(root.join("tokenizer.json"), bytes(&tokenizer)).expect("write");
        let originals = vec![
            ("config.json", Some(bytes(&config))),
            ("tokenizer_config.json", Some(bytes(&tokenizer_config))),
            ("generation_config.json", Some(bytes(&json!({"eos_token_id": 2, "pad_token_id": 0})))),
            ("adapter_config.json", None),
            ("special_tokens_map.json", Some(bytes(&json!({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})))),
        ];
        for (name, content) in &originals {
            if let Some(c) = content {
                std::fs::write(root.join(name), c).expect("write");
            }
        }
        Fixture { _dir: dir, root, originals }
    })
}

fn restore(root: &Path, name: &str, original: &Option<Vec<u8>>) {
    match original {
        Some(c) => std::fs::write(root.join(name), c).expect("restore"),
        None => std::fs::remove_file(root.join(name)).expect("remove"),
    }
}

fuzz_target!(|data: &[u8]| {
    let fix = fixture();
    let (index, body) = match data.first() {
        Some(b'T') => (1, &data[1..]),
        Some(b'G') => (2, &data[1..]),
        Some(b'A') => (3, &data[1..]),
        Some(b'S') => (4, &data[1..]),
        _ => (0, data),
    };
    let (name, original) = &fix.originals[index];
    std::fs::write(fix.root.join(name), body).expect("write side file");
    if let Ok(ckpt) = Checkpoint::open(&fix.root) {
        for f in lint(&ckpt, None, &LintOptions::default()) {
            let _ = (f.id, f.message.len(), f.hint.len());
        }
    }
    restore(&fix.root, name, original);
});
