//! The GGUF's vocabulary as llama.cpp will use it: the token texts it ends generation on
//! (`llama_cpp_eog`), whether it adds BOS (`adds_bos`), its special ids and template tokens, and
//! the two tokenizer comparisons with the source (`pre_tokenizer` by split regex, `round_trip` by
//! encoding `PROBES` with both).
//!
//! Shared by `alone` and `source`; it reports only what those two ask it to compare, and does not
//! rebuild the tokenizer itself (`format::gguf::GgufTokenizer::to_hf`).

use std::collections::BTreeSet;

use serde_json::Value as Json;

use crate::checks::ids;
use crate::checks::{Finding, Findings, Severity};
use crate::format::gguf::GgufTokenizer;

/// Token texts llama.cpp treats as end-of-generation by their text alone, in addition to
/// `tokenizer.ggml.{eos,eot,eom}_token_id` (llama.cpp `src/llama-vocab.cpp`, `special_eog_ids`,
/// as vendored by llama-cpp-python 0.3.36). Older llama.cpp builds, ollama before 2024 and other
/// runtimes stop on `eos_token_id` only.
pub const LLAMA_CPP_EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

pub use crate::format::gguf::{GPT2_REGEX, KNOWN_PRE, LLAMA3_REGEX, QWEN2_REGEX};

/// Texts encoded by the source tokenizer and by the GGUF's own (rebuilt from its metadata):
/// contractions in both cases, digit runs, leading/trailing and repeated whitespace, newlines,
/// punctuation glued to words, non-ASCII, code, and a chat turn with special tokens — the places
/// where pre-tokenizer regexes differ (llama.cpp#7724).
pub const PROBES: &[&str] = &[
    "Hello world! It's 2024: I'LL buy 12345 apples, you'd say.",
    "  two leading spaces,\n\nblank lines\n\t tab and trailing   ",
    "(parenthesised) \"quoted\" hyphen-ated e-mail@example.com 3.14159",
    "naïve café — Ünïcödé 東京 🙂",
    "fn main() { let x = vec![1, 2, 3]; println!(\"{:?}\", x); }",
    "<|im_start|>user\nWhat is 6 times 7?<|im_end|>\n<|im_start|>assistant\n",
];

/// Compares the GGUF's pre-tokenizer with tokenizer.json's (catalogue #10).
pub(super) fn pre_tokenizer(file: &str, pre: Option<&str>, hf: Option<&Json>, out: &mut Findings) {
    let Some(pre) = pre else { return }; // `gguf.pre-missing` already reported by `check`
    let Some(hf_regexes) = hf.map(split_regexes) else { return };
    let Some((_, expected)) = KNOWN_PRE.iter().find(|(name, _)| *name == pre) else {
        out.push(
            Finding::new(
                ids::GGUF_PRE_UNVERIFIED,
                Severity::Info,
                file,
                format!("pre-tokenizer `{pre}` is not one ckptcheck knows the split regex of; not compared with tokenizer.json"),
            )
            .field("tokenizer.ggml.pre"),
        );
        return;
    };
    let expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    if expected != hf_regexes {
        let workaround = if pre == "gpt-2" {
            " (`gpt-2` is what the usual workaround for convert_hf_to_gguf.py's \"BPE pre-tokenizer was not recognized\" writes)"
        } else {
            ""
        };
        out.push(
            Finding::new(
                ids::GGUF_PRE_TOKENIZER_DIFFERS,
                Severity::Error,
                file,
                format!(
                    "`tokenizer.ggml.pre` is `{pre}`{workaround}, whose split regex differs from tokenizer.json's pre_tokenizer ({}): llama.cpp splits text differently and token ids drift",
                    if hf_regexes.is_empty() { "none".to_string() } else { hf_regexes.join(" ; ") }
                ),
            )
            .field("tokenizer.ggml.pre")
            .hint("register the tokenizer's hash in convert_hf_to_gguf_update.py with the matching pre-tokenizer and re-convert"),
        );
    }
}

/// Encodes `PROBES` with the source tokenizer and the GGUF's own; any difference in ids means
/// llama.cpp sees other tokens than the model was trained on (catalogue #10).
pub(super) fn round_trip(file: &str, hf: &crate::format::tokens::TokenizerInfo, gguf: &tokenizers::Tokenizer, out: &mut Findings) {
    let mut differing = Vec::new();
    for (i, text) in PROBES.iter().enumerate() {
        let (Ok(a), Ok(b)) = (hf.encode_raw(text), gguf.encode(*text, false)) else { continue };
        let b = b.get_ids();
        if a != b {
            let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            differing.push((i, at, a.len(), b.len()));
        }
    }
    if let Some(&(i, at, n_hf, n_gguf)) = differing.first() {
        out.push(
            Finding::new(
                ids::GGUF_TOKENIZATION_DIFFERS,
                Severity::Error,
                file,
                format!(
                    "{} of {} probe texts tokenize differently with the GGUF's tokenizer than with tokenizer.json; first: probe {i} {:?} from token {at} ({n_gguf} vs {n_hf} tokens)",
                    differing.len(),
                    PROBES.len(),
                    PROBES[i]
                ),
            )
            .field("tokenizer.ggml.tokens")
            .hint("llama.cpp will feed the model other token ids than it was trained on: re-convert with the right tokenizer and pre-tokenizer"),
        );
    }
}

/// The split regexes a tokenizer.json `pre_tokenizer` applies, in order. `ByteLevel` with
/// `use_regex` (the default) applies GPT-2's; other pre-tokenizers are named in angle brackets.
pub fn split_regexes(v: &Json) -> Vec<String> {
    let mut out = Vec::new();
    collect_regexes(v, &mut out, 0);
    out
}

fn collect_regexes(v: &Json, out: &mut Vec<String>, depth: usize) {
    // tokenizer.json nests Sequences one level deep in practice; the cap bounds hostile files.
    if depth > 8 {
        return;
    }
    match v.get("type").and_then(Json::as_str) {
        Some("Sequence") => {
            for p in v.get("pretokenizers").and_then(Json::as_array).into_iter().flatten() {
                collect_regexes(p, out, depth + 1);
            }
        }
        Some("ByteLevel") if v.get("use_regex").and_then(Json::as_bool).unwrap_or(true) => {
            out.push(GPT2_REGEX.to_string());
        }
        Some("ByteLevel") => {}
        Some("Split") => match v.get("pattern") {
            Some(p) => match (p.get("Regex").and_then(Json::as_str), p.get("String").and_then(Json::as_str)) {
                (Some(r), _) => out.push(r.to_string()),
                (None, Some(s)) => out.push(regex::escape(s)),
                _ => out.push("<Split>".into()),
            },
            None => out.push("<Split>".into()),
        },
        Some(other) => out.push(format!("<{other}>")),
        None => {}
    }
}

/// llama.cpp's end-of-generation ids for this vocabulary: eos, eot, eom and tokens whose text it
/// treats as end-of-generation.
pub fn llama_cpp_eog(tok: &GgufTokenizer) -> BTreeSet<u64> {
    let mut s: BTreeSet<u64> = [tok.eos, tok.eot, tok.eom].into_iter().flatten().collect();
    if let Some(tokens) = tok.tokens {
        for (i, t) in tokens.iter().enumerate() {
            if LLAMA_CPP_EOG_TEXTS.contains(&t.as_str()) {
                s.insert(i as u64);
            }
        }
    }
    s
}

/// Whether llama.cpp adds BOS: `add_bos_token`, defaulting to true for SentencePiece (`llama`)
/// vocabularies and false otherwise (llama.cpp `llama_vocab::impl::load`).
pub fn adds_bos(tok: &GgufTokenizer) -> bool {
    tok.add_bos.unwrap_or(matches!(tok.model, Some("llama") | Some("t5") | Some("bert")))
}

pub(super) fn special_ids<'a>(tok: &GgufTokenizer<'a>) -> [(&'static str, Option<u64>); 6] {
    [
        ("tokenizer.ggml.bos_token_id", tok.bos),
        ("tokenizer.ggml.eos_token_id", tok.eos),
        ("tokenizer.ggml.eot_token_id", tok.eot),
        ("tokenizer.ggml.eom_token_id", tok.eom),
        ("tokenizer.ggml.padding_token_id", tok.pad),
        ("tokenizer.ggml.unknown_token_id", tok.unk),
    ]
}

pub(super) fn show_id(tok: &GgufTokenizer, id: Option<u64>) -> String {
    match id {
        None => "unset".into(),
        Some(i) => match tok.token(i) {
            Some(t) => format!("{i} `{t}`"),
            None => i.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_regexes_reads_sequences_and_bytelevel() {
        let v: Json = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}
        ]});
        assert_eq!(split_regexes(&v), vec![LLAMA3_REGEX.to_string()]);
        let v: Json = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false});
        assert_eq!(split_regexes(&v), vec![GPT2_REGEX.to_string()]);
        let v: Json = serde_json::json!({"type": "Metaspace", "replacement": "▁"});
        assert_eq!(split_regexes(&v), vec!["<Metaspace>".to_string()]);
    }
}
