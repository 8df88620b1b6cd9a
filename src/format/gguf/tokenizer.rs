//! The GGUF's own tokenizer: the `tokenizer.ggml.*` keys and `tokenizer.chat_template` borrowed
//! from the header (`Header::tokenizer`), llama.cpp's token types, the split regexes of the
//! `tokenizer.ggml.pre` names ckptcheck knows, and `GgufTokenizer::to_hf`, which rebuilds a
//! byte-level BPE vocabulary as an HF `tokenizers` tokenizer.
//!
//! It does not compare anything with the HF source or judge the vocabulary (`checks::gguf`), and
//! it rebuilds only byte-level BPE with a known pre-tokenizer: SentencePiece and other models are
//! refused with the reason.

use super::parse::Header;
use super::types::Array;

impl Header {
    /// The tokenizer metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn tokenizer(&self) -> GgufTokenizer<'_> {
        let strings = |k: &str| match self.get_array(k) {
            Some(Array::String(v)) => Some(v.as_slice()),
            _ => None,
        };
        GgufTokenizer {
            model: self.get_str("tokenizer.ggml.model"),
            pre: self.get_str("tokenizer.ggml.pre"),
            tokens: strings("tokenizer.ggml.tokens"),
            scores: match self.get_array("tokenizer.ggml.scores") {
                Some(Array::F32(v)) => Some(v.as_slice()),
                _ => None,
            },
            token_type: self.get_array("tokenizer.ggml.token_type").and_then(Array::as_i64s),
            merges: strings("tokenizer.ggml.merges"),
            bos: self.get_u64("tokenizer.ggml.bos_token_id"),
            eos: self.get_u64("tokenizer.ggml.eos_token_id"),
            eot: self.get_u64("tokenizer.ggml.eot_token_id"),
            eom: self.get_u64("tokenizer.ggml.eom_token_id"),
            pad: self.get_u64("tokenizer.ggml.padding_token_id"),
            unk: self.get_u64("tokenizer.ggml.unknown_token_id"),
            add_bos: self.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: self.get_bool("tokenizer.ggml.add_eos_token"),
            chat_template: self.get_str("tokenizer.chat_template"),
        }
    }
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`, `enum llama_token_type`).
pub mod token_type {
    pub const UNDEFINED: i64 = 0;
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const UNUSED: i64 = 5;
    pub const BYTE: i64 = 6;
}

/// The GGUF's own tokenizer, borrowed from the header.
#[derive(Debug, Clone)]
pub struct GgufTokenizer<'a> {
    /// `gpt2` (BPE), `llama` (SentencePiece), `bert`, `t5`, `rwkv`, `none`…
    pub model: Option<&'a str>,
    /// Pre-tokenizer name llama.cpp picks its split regex by (`llama-bpe`, `qwen2`, `gpt-2`…).
    pub pre: Option<&'a str>,
    pub tokens: Option<&'a [String]>,
    pub scores: Option<&'a [f32]>,
    pub token_type: Option<Vec<i64>>,
    pub merges: Option<&'a [String]>,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub eot: Option<u64>,
    pub eom: Option<u64>,
    pub pad: Option<u64>,
    pub unk: Option<u64>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub chat_template: Option<&'a str>,
}

/// The split regex GPT-2's byte-level pre-tokenizer applies (`tokenizers` `ByteLevel` with
/// `use_regex: true`).
pub const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's `Split` regex, as in its tokenizer.json.
pub const LLAMA3_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's `Split` regex, as in its tokenizer.json.
pub const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` names whose split regexes are known here, with the tokenizer.json regexes
/// they stand for (llama.cpp `llm_tokenizer_bpe`: gpt-2/mpt/olmo share GPT-2's regex; llama3 and
/// its aliases share Llama 3's; qwen2 and stablelm2 share Qwen 2's). `default` is llama.cpp's
/// fallback when the key is missing: its four regexes match no HF tokenizer.
pub const KNOWN_PRE: &[(&str, &[&str])] = &[
    ("gpt-2", &[GPT2_REGEX]),
    ("mpt", &[GPT2_REGEX]),
    ("olmo", &[GPT2_REGEX]),
    ("llama-bpe", &[LLAMA3_REGEX]),
    ("llama3", &[LLAMA3_REGEX]),
    ("llama-v3", &[LLAMA3_REGEX]),
    ("falcon3", &[LLAMA3_REGEX]),
    ("pixtral", &[LLAMA3_REGEX]),
    ("qwen2", &[QWEN2_REGEX]),
    ("stablelm2", &[QWEN2_REGEX]),
    ("default", &["(llama.cpp default BPE regexes)"]),
];

impl GgufTokenizer<'_> {
    /// llama.cpp's tokenizer for this vocabulary, rebuilt as an HF `tokenizers` tokenizer: byte-level
    /// BPE (`tokenizer.ggml.model = gpt2`) with the tokens, merges and the split regex of
    /// `tokenizer.ggml.pre`; CONTROL/USER_DEFINED tokens as added tokens. `Err` says why it cannot
    /// be rebuilt (SentencePiece and other models, an unknown or `default` pre-tokenizer).
    pub fn to_hf(&self) -> std::result::Result<tokenizers::Tokenizer, String> {
        use serde_json::{json, Map, Value as J};
        if self.model != Some("gpt2") {
            return Err(format!("tokenizer model `{}` is not rebuilt (only byte-level BPE, `gpt2`)", self.model.unwrap_or("none")));
        }
        let pre = self.pre.unwrap_or("default");
        let regex = match KNOWN_PRE.iter().find(|(n, _)| *n == pre) {
            Some((_, [r])) if *r == GPT2_REGEX || *r == LLAMA3_REGEX || *r == QWEN2_REGEX => *r,
            _ => return Err(format!("pre-tokenizer `{pre}` is not one ckptcheck can rebuild")),
        };
        let tokens = self.tokens.ok_or("no `tokenizer.ggml.tokens`")?;
        let merges = self.merges.ok_or("no `tokenizer.ggml.merges`")?;
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), J::from(i as u64));
        }
        let types = self.token_type.clone().unwrap_or_default();
        let added: Vec<J> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = *types.get(i)?;
                (ty == token_type::CONTROL || ty == token_type::USER_DEFINED).then(|| {
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": ty == token_type::CONTROL})
                })
            })
            .collect();
        let byte_level =
            |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let pre_tokenizer = if regex == GPT2_REGEX {
            byte_level(true)
        } else {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                byte_level(false)]})
        };
        let doc = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("the rebuilt tokenizer does not load: {e}"))
    }

    pub fn token(&self, id: u64) -> Option<&str> {
        self.tokens?.get(usize::try_from(id).ok()?).map(String::as_str)
    }
    pub fn id(&self, token: &str) -> Option<u64> {
        self.tokens?.iter().position(|t| t == token).map(|i| i as u64)
    }
    /// Tokens marked CONTROL or USER_DEFINED (the added/special tokens).
    pub fn special_tokens(&self) -> Vec<(u64, &str)> {
        let (Some(tokens), Some(types)) = (self.tokens, &self.token_type) else {
            return Vec::new();
        };
        tokens
            .iter()
            .zip(types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == token_type::CONTROL || ty == token_type::USER_DEFINED)
            .map(|(i, (t, _))| (i as u64, t.as_str()))
            .collect()
    }
}
