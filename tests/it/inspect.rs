//! `ckptcheck inspect` through the real binary on synthetic checkpoints.

use crate::common::*;
use serde_json::json;

#[test]
fn inspect_json_describes_the_checkpoint() {
    let d = tmp();
    Fixture::healthy().write_sharded(d.path(), 2);
    let r = ckptcheck(&["inspect", "--json", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["format"], "hf-safetensors");
    assert_eq!(v["model_type"], "llama");
    assert_eq!(v["kind"], "instruct");
    assert_eq!(v["shards"].as_array().unwrap().len(), 2);
    let f = Fixture::healthy();
    let params: usize = f.tensors.iter().map(|t| t.shape.iter().product::<usize>()).sum();
    assert_eq!(v["parameters"], json!(params));
    assert_eq!(v["dtypes"]["F32"], json!(params));
    assert_eq!(v["tensor_count"], json!(f.tensors.len()));
    assert_eq!(v["tied_embeddings"], false);
    assert_eq!(v["vocab"]["tokenizer_ids"], 16);
    assert_eq!(v["vocab"]["embedding_rows"], 16);
    assert_eq!(v["stop_token_ids"], json!([2]));
    assert_eq!(v["chat_template"]["turn_end_token"], "<|im_end|>");
    let sample = v["chat_template"]["rendered_sample"]["Ok"].as_str().unwrap();
    assert!(sample.starts_with("<|im_start|>user\nWhat is 6 times 7?<|im_end|>"), "{sample}");
    let eos: Vec<&serde_json::Value> = v["special_tokens"].as_array().unwrap().iter().filter(|d| d["role"] == "eos").collect();
    let files: Vec<&str> = eos.iter().map(|d| d["file"].as_str().unwrap()).collect();
    assert_eq!(files, ["config.json", "generation_config.json", "tokenizer_config.json", "special_tokens_map.json"]);
    assert!(eos.iter().all(|d| d["ids"] == json!([2])), "{eos:?}");
    assert!(v["quantization"].is_null());
}

#[test]
fn inspect_text_table_and_base_model_detection() {
    let mut f = Fixture::healthy();
    f.tokenizer_config.as_object_mut().unwrap().remove("chat_template");
    f.tokenizer["added_tokens"].as_array_mut().unwrap().retain(|t| t["content"] == "<|endoftext|>");
    let vocab = f.tokenizer["model"]["vocab"].as_object_mut().unwrap();
    vocab.remove("<|im_start|>");
    vocab.remove("<|im_end|>");
    let d = tmp();
    f.write(d.path());
    let r = ckptcheck(&["inspect", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("kind               base"), "{}", r.stdout);
    assert!(r.stdout.contains("chat template      none"), "{}", r.stdout);
    assert!(r.stdout.contains("architecture       llama LlamaForCausalLM"), "{}", r.stdout);
}

#[test]
fn inspect_reports_quantization_config() {
    let mut f = Fixture::healthy();
    f.config["quantization_config"] = json!({"quant_method": "gptq", "bits": 4, "group_size": 128});
    let d = tmp();
    f.write(d.path());
    let v = ckptcheck(&["inspect", "--json", d.path().to_str().unwrap()]).json();
    assert_eq!(v["quantization"]["method"], "gptq");
    assert_eq!(v["quantization"]["details"]["bits"], 4);
}

#[test]
fn inspect_of_unreadable_shard_still_reports() {
    let d = tmp();
    Fixture::healthy().write_sharded(d.path(), 2);
    std::fs::write(d.path().join("model-00002-of-00002.safetensors"), b"junk").unwrap();
    let r = ckptcheck(&["inspect", "--json", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 0);
    let shards = r.json()["shards"].as_array().unwrap().clone();
    let bad = shards.iter().find(|s| s["name"] == "model-00002-of-00002.safetensors").unwrap();
    assert!(bad["error"].as_str().unwrap().contains("shorter than the 8-byte"), "{bad}");
}

/// On a checkpoint written by transformers 5 (`chat_template.jinja`, `dtype`, no BOS).
#[test]
fn inspect_zoo_instruct_model() {
    let p = zoo().join("models/llama-instruct");
    let r = ckptcheck(&["inspect", "--json", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["kind"], "instruct");
    assert_eq!(v["architectures"], json!(["LlamaForCausalLM"]));
    assert_eq!(v["config"]["num_hidden_layers"], 3);
    assert_eq!(v["config"]["num_key_value_heads"], 2);
    assert_eq!(v["tied_embeddings"], false);
    assert_eq!(v["vocab"]["tokenizer_ids"], 1024);
    assert_eq!(v["vocab"]["lm_head_rows"], 1024);
    assert_eq!(v["stop_token_ids"], json!([2]));
    assert_eq!(v["chat_template"]["turn_end_token"], "<|im_end|>");
    assert!(v["chat_template"]["source"].as_str().unwrap().starts_with("chat_template.jinja"), "{}", v["chat_template"]["source"]);
    assert_eq!(v["chat_template"]["generation_prompt"]["Ok"], "<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n<|im_start|>assistant\n");
    // bf16 fine-tune
    let v = ckptcheck(&["inspect", "--json", zoo().join("models/llama-sft-good").to_str().unwrap()]).json();
    assert!(v["dtypes"]["BF16"].as_u64().unwrap() > 0);
    // A PEFT adapter directory.
    let v = ckptcheck(&["inspect", "--json", zoo().join("models/llama-lora-adapter").to_str().unwrap()]).json();
    assert_eq!(v["format"], "peft-adapter");
    assert_eq!(v["adapter"]["r"], 8);
}
