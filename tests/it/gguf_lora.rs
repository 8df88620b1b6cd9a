//! GGUF LoRA adapters: the zoo's PEFT adapter converted by llama.cpp's own
//! `convert_lora_to_gguf.py` (testdata/zoo/gguf_stage.py `lora`), applied on the fly to the F16
//! GGUF of its base (`BASE.gguf+ADAPTER.gguf`), against peft's unmerged forward of the HF pair.

use candle_core::Device;
use ckptcheck::checkpoint::Checkpoint;
use ckptcheck::model::{self, GgufMatmul};
use ckptcheck::settings::ComputeDtype;

use crate::common::{self, zoo_path};
use crate::engine::goldens;

fn pair(base: &str, adapter: &str) -> String {
    format!("{}+{}", zoo_path(base).display(), zoo_path(adapter).display())
}

/// The adapter over the F16 base against goldens/llama-lora-premerge (peft, f32, unmerged):
/// the same argmax everywhere, and logits within the F16 rounding of base and factors (measured:
/// ≤ 2.4e-4 of the logit scale; bound 5e-4). The base alone is far off the same golden
/// (measured ≥ 50× as far), so the bound holds only with the adapter applied, Q/K rows of its B
/// unpermuted as the converter permuted them.
#[test]
fn gguf_lora_matches_peft() {
    let load = |p: &str| {
        let ckpt = Checkpoint::open(std::path::Path::new(p)).unwrap();
        model::load(&ckpt, &Device::Cpu, ComputeDtype::F32, GgufMatmul::Dense).map(|m| (ckpt.kind(), m)).unwrap()
    };
    let (kind, m) = load(&pair("gguf/llama-instruct-f16.gguf", "gguf/llama-lora-adapter-f16.gguf"));
    assert_eq!(kind, "a GGUF base with a GGUF LoRA adapter");
    let (_, base) = load(zoo_path("gguf/llama-instruct-f16.gguf").to_str().unwrap());
    for (pi, g) in goldens("llama-lora-premerge").iter().enumerate() {
        let max_diff = |m: &model::Model| {
            let got: Vec<f32> = m.forward(&g.ids, false).unwrap().logits.flatten_all().unwrap().to_vec1().unwrap();
            (got.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max), got)
        };
        let scale = g.logits.iter().fold(1.0f32, |m, x| m.max(x.abs()));
        let ((d, got), (d_base, _)) = (max_diff(&m), max_diff(&base));
        eprintln!("prompt {pi}: max |Δlogit| {:.2e} of scale {scale:.1} (base alone {:.2e})", d / scale, d_base / scale);
        for (pos, (a, b)) in got.chunks(g.vocab).zip(g.logits.chunks(g.vocab)).enumerate() {
            assert_eq!(ckptcheck::compare::metrics::argmax(a), ckptcheck::compare::metrics::argmax(b), "prompt {pi} position {pos}");
        }
        assert!(d <= 5e-4 * scale, "prompt {pi}: max |Δlogit| {d} (scale {scale})");
        assert!(d_base >= 20.0 * d, "prompt {pi}: the base alone is as close ({d_base}) as with the adapter ({d})");
    }
}

/// `compare` takes `BASE.gguf+ADAPTER.gguf` like an HF pair (an F16 or a Q4_K_M base) and lint
/// checks the adapter against its base; a lone adapter, mixed halves, swapped halves and another model's base are refused
/// with messages that say what to pass instead.
#[test]
fn gguf_lora_on_the_command_line() {
    let (hf, gg) = (
        pair("models/llama-instruct", "models/llama-lora-adapter"),
        pair("gguf/llama-instruct-f16.gguf", "gguf/llama-lora-adapter-f16.gguf"),
    );
    let prompts = zoo_path("prompts.jsonl");
    let r = common::ckptcheck(&["compare", "--json", "--prompts", prompts.to_str().unwrap(), &hf, &gg]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kl = r.json()["summary"]["kl"]["mean"].as_f64().unwrap();
    assert!(kl < 1e-6, "GGUF pair vs HF pair: KL {kl}");
    let alone = zoo_path("gguf/llama-instruct-f16.gguf");
    let r = common::ckptcheck(&["compare", "--json", "--prompts", prompts.to_str().unwrap(), &hf, alone.to_str().unwrap()]);
    assert!(r.json()["summary"]["kl"]["mean"].as_f64().unwrap() > 1e3 * kl.max(1e-9), "the adapter changes the model");

    // Over a quantized base, as llama.cpp users apply adapters: within the base's own
    // quantization noise (measured: KL 3.1e-4 against the HF pair; Q4_K_M alone is 6.2e-4 from
    // the HF base).
    let q4 = pair("gguf/llama-instruct-q4_k_m.gguf", "gguf/llama-lora-adapter-f16.gguf");
    let r = common::ckptcheck(&["compare", "--json", "--prompts", prompts.to_str().unwrap(), &hf, &q4]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kl_q4 = r.json()["summary"]["kl"]["mean"].as_f64().unwrap();
    assert!(kl_q4 < 2e-3, "Q4_K_M + adapter vs HF pair: KL {kl_q4}");

    let lint = common::ckptcheck(&["lint", "--json", &gg]);
    assert_eq!((lint.code, lint.finding_ids()), (0, vec![]), "{}", lint.stdout);
    let adapter = zoo_path("gguf/llama-lora-adapter-f16.gguf");
    let inspect = common::ckptcheck(&["inspect", "--json", adapter.to_str().unwrap()]);
    let v = inspect.json();
    assert_eq!(
        (v["kind"].as_str(), v["lora"]["alpha"].as_f64(), v["lora"]["modules"].as_u64()),
        (Some("LoRA adapter"), Some(16.0), Some(21))
    );

    let refused = |a: &str, b: &str, want: &str| {
        let r = common::ckptcheck(&["compare", &hf, &format!("{}+{}", zoo_path(a).display(), zoo_path(b).display())]);
        assert_eq!(r.code, 2, "{a}+{b}: {}", r.stdout);
        assert!(r.stderr.contains(want), "{a}+{b}: {}", r.stderr);
    };
    let r = common::ckptcheck(&["compare", &hf, adapter.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("a GGUF LoRA adapter on its own cannot run: pass `BASE.gguf+ADAPTER.gguf`"), "{}", r.stderr);
    refused("gguf/llama-lora-adapter-f16.gguf", "gguf/llama-instruct-f16.gguf", "the base of BASE+ADAPTER is a LoRA adapter, not a model");
    refused("models/llama-instruct", "gguf/llama-lora-adapter-f16.gguf", "a GGUF and an HF half do not combine");
    // Another model's base: lint names every weight that does not fit, the engine refuses.
    let other = pair("gguf/mixtral-f16.gguf", "gguf/llama-lora-adapter-f16.gguf");
    let lint = common::ckptcheck(&["lint", "--json", &other]);
    assert_eq!(lint.code, 1, "{}", lint.stdout);
    assert!(lint.finding("merge.adapter-shape")["message"].as_str().unwrap().contains("the adapter was trained on another model"));
    let r = common::ckptcheck(&["compare", &hf, &other]);
    assert_eq!(r.code, 2, "{}", r.stdout);
}

/// A truncated adapter (a download cut short): lint reports the file's layout problem and the
/// pairs it can no longer read, and compare refuses it naming the file, never a panic.
#[test]
fn a_truncated_gguf_adapter_is_an_error() {
    let d = common::tmp();
    let full = std::fs::read(zoo_path("gguf/llama-lora-adapter-f16.gguf")).unwrap();
    let cut = d.path().join("adapter.gguf");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let base = zoo_path("gguf/llama-instruct-f16.gguf");
    let spec = format!("{}+{}", base.display(), cut.display());
    let lint = common::ckptcheck(&["lint", "--json", &spec]);
    assert_eq!(lint.code, 1, "{}{}", lint.stdout, lint.stderr);
    let r = common::ckptcheck(&["compare", &pair("models/llama-instruct", "models/llama-lora-adapter"), &spec]);
    assert_eq!(r.code, 2, "{}", r.stdout);
    assert!(r.stderr.contains("adapter.gguf"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
