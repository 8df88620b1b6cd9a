//! The GGUF's own tokenizer: the `tokenizer.ggml.*` keys and `tokenizer.chat_template` borrowed
//! from the header (`Header::tokenizer`), llama.cpp's token types, the split regexes of the
//! `tokenizer.ggml.pre` names ckptcheck knows, and `GgufTokenizer::to_hf`, which rebuilds the
//! vocabulary as an HF `tokenizers` tokenizer that encodes the way llama.cpp does: byte-level BPE
//! (`gpt2`) with a known pre-tokenizer, and SentencePiece (`llama`: llama.cpp's `llm_tokenizer_spm`,
//! rebuilt as transformers' legacy `LlamaConverter` builds it, see `to_hf_spm`).
//!
//! It does not compare anything with the HF source or judge the vocabulary (`checks::gguf`).
//! Other models (`bert`, `t5`, `rwkv`, an unknown or `default` BPE pre-tokenizer) are refused with
//! the reason.

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
            add_space_prefix: self.get_bool("tokenizer.ggml.add_space_prefix"),
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
    /// `tokenizer.ggml.add_space_prefix`: SentencePiece's dummy prefix (llama.cpp defaults it to
    /// true for `llama` vocabularies: `GgufTokenizer::space_prefix`).
    pub add_space_prefix: Option<bool>,
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

/// Mistral's tekken (NeMo, Pixtral-12B-2409, Ministral) `Split` regex, as in Mistral NeMo's
/// tokenizer.json (llama.cpp's "original regex" for `tekken`): case-aware words, single digits.
pub const TEKKEN_REGEX: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

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
    ("tekken", &[TEKKEN_REGEX]),
    ("default", &["(llama.cpp default BPE regexes)"]),
];

impl GgufTokenizer<'_> {
    /// llama.cpp's tokenizer for this vocabulary, rebuilt as an HF `tokenizers` tokenizer: byte-level
    /// BPE (`tokenizer.ggml.model = gpt2`) with the tokens, merges and the split regex of
    /// `tokenizer.ggml.pre`; CONTROL/USER_DEFINED tokens as added tokens. `Err` says why it cannot
    /// be rebuilt (other models, an unknown or `default` pre-tokenizer).
    pub fn to_hf(&self) -> std::result::Result<tokenizers::Tokenizer, String> {
        use serde_json::{json, Map, Value as J};
        match self.model {
            Some("gpt2") => {}
            Some("llama") => return self.to_hf_spm(),
            other => {
                return Err(format!(
                    "tokenizer model `{}` is not rebuilt (only byte-level BPE, `gpt2`, and SentencePiece, `llama`)",
                    other.unwrap_or("none")
                ))
            }
        }
        let pre = self.pre.unwrap_or("default");
        let regex = match KNOWN_PRE.iter().find(|(n, _)| *n == pre) {
            Some((_, [r])) if [GPT2_REGEX, LLAMA3_REGEX, QWEN2_REGEX, TEKKEN_REGEX].contains(r) => *r,
            _ => return Err(format!("pre-tokenizer `{pre}` is not one ckptcheck can rebuild")),
        };
        // llama.cpp looks a whole pre-token up in the vocabulary before merging for Llama 3's
        // family and tekken (`ignore_merges`), as their tokenizer.json files say.
        let ignore_merges = regex == LLAMA3_REGEX || regex == TEKKEN_REGEX;
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
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": self.bos_processor(),
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": ignore_merges,
                      "vocab": vocab, "merges": merges},
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("the rebuilt tokenizer does not load: {e}"))
    }

    /// Whether llama.cpp adds BOS to a text it tokenizes with its specials (`llama_tokenize(…,
    /// add_special = true)`, as `llama-cli` and `llama-perplexity` do): `add_bos_token`, defaulting
    /// to true for SentencePiece (`llama`), `t5` and `bert` vocabularies and for the Llama 3 and
    /// tekken pre-tokenizers, false otherwise (llama.cpp `llama_vocab::impl::load`).
    pub fn adds_bos(&self) -> bool {
        let pre_bos = matches!(self.pre, Some("llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "tekken"));
        self.add_bos.unwrap_or(pre_bos || matches!(self.model, Some("llama") | Some("t5") | Some("bert")))
    }

    /// The rebuilt tokenizer's post-processor: BOS first when llama.cpp adds it, so that
    /// `encode(text, true)` gives llama.cpp's ids (chat prompts encode without specials: their
    /// template writes any BOS itself).
    fn bos_processor(&self) -> serde_json::Value {
        let bos = self.bos.filter(|_| self.adds_bos()).and_then(|b| Some((b, self.token(b)?)));
        match bos {
            Some((id, text)) => serde_json::json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": text, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": serde_json::Map::from_iter([(
                    text.to_string(),
                    serde_json::json!({"id": text, "ids": [id], "tokens": [text]}),
                )]),
            }),
            None => serde_json::Value::Null,
        }
    }

    /// Whether llama.cpp prepends a space to each text segment (`add_space_prefix`, default true
    /// for SentencePiece vocabularies: llama.cpp `llama_vocab::impl::load`).
    pub fn space_prefix(&self) -> bool {
        self.add_space_prefix.unwrap_or(self.model == Some("llama"))
    }

    /// Ids of the byte-fallback tokens (`BYTE` type) by byte value: `<0x00>` … `<0xFF>`.
    pub fn byte_tokens(&self) -> Vec<Option<u64>> {
        let mut out = vec![None; 256];
        let (Some(tokens), Some(types)) = (self.tokens, &self.token_type) else { return out };
        for (i, (t, &ty)) in tokens.iter().zip(types).enumerate() {
            if ty != token_type::BYTE {
                continue;
            }
            if let Some(b) = t.strip_prefix("<0x").and_then(|r| r.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out[b as usize].get_or_insert(i as u64);
            }
        }
        out
    }

    /// llama.cpp's SentencePiece tokenizer (`llm_tokenizer_spm`) as an HF tokenizer. llama.cpp
    /// splits a text segment into UTF-8 characters and merges, again and again, the adjacent pair
    /// whose concatenation is a token with the highest score (ties: leftmost); a symbol left that
    /// is no token is emitted as its `<0xXX>` byte tokens. That is BPE whose merges are every
    /// split `(l, r)` of every token `l + r`, ranked by the token's score — what transformers'
    /// `LlamaConverter` derives from the same vocabulary (`SentencePieceExtractor` /
    /// `generate_merges`) — with byte fallback. The space handling is transformers' *legacy*
    /// Llama tokenizer, which is llama.cpp's: with `add_space_prefix` every text segment (the
    /// start, and the text after each special or added token) gets `▁` prepended, then spaces
    /// become `▁`; no pre-tokenizer splits the segment. CONTROL, USER_DEFINED and UNKNOWN tokens
    /// are added tokens (llama.cpp's `cache_special_tokens`), CONTROL/UNKNOWN as special.
    ///
    /// Where it can differ from llama.cpp: two different tokens with the *same* score competing
    /// in one segment (llama.cpp takes the leftmost pair, BPE the lower rank: the token with the
    /// lower id); SentencePiece *Unigram* vocabularies, which llama.cpp also merges by score
    /// (transformers and sentencepiece run Viterbi instead, so both llama.cpp and this rebuild
    /// can tokenize such a vocabulary differently from the HF tokenizer — `gguf.tokenization-differs`
    /// reports it). No SentencePiece normalizer (`precompiled_charsmap`) is applied: llama.cpp
    /// applies none.
    fn to_hf_spm(&self) -> std::result::Result<tokenizers::Tokenizer, String> {
        use serde_json::{json, Map, Value as J};
        use std::collections::HashMap;
        let tokens = self.tokens.ok_or("no `tokenizer.ggml.tokens`")?;
        let types = self.token_type.clone().unwrap_or_default();
        let score = |i: usize| self.scores.and_then(|s| s.get(i)).copied().unwrap_or(0.0);
        // llama.cpp's token_to_id keeps the last of duplicate texts; the HF vocab map the same.
        let mut id_of: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            id_of.insert(t.as_str(), i);
        }
        // Every split of every token into two tokens, ranked by the merged token's score
        // (descending), then its id, then the left and right ids (transformers' order).
        let mut merges: Vec<(f32, usize, usize, usize)> = Vec::new();
        for (i, t) in tokens.iter().enumerate() {
            if id_of.get(t.as_str()) != Some(&i) {
                continue;
            }
            for (k, _) in t.char_indices().skip(1) {
                let (l, r) = t.split_at(k);
                if let (Some(&li), Some(&ri)) = (id_of.get(l), id_of.get(r)) {
                    merges.push((score(i), i, li, ri));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
        let merges: Vec<J> = merges.iter().map(|&(_, _, l, r)| json!([tokens[l], tokens[r]])).collect();
        let mut vocab = Map::new();
        for (t, &i) in &id_of {
            vocab.insert(t.to_string(), J::from(i as u64));
        }
        let added: Vec<J> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = *types.get(i)?;
                let special = ty == token_type::CONTROL || ty == token_type::UNKNOWN;
                (special || ty == token_type::USER_DEFINED).then(|| {
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": special})
                })
            })
            .collect();
        let unk = self.unk.and_then(|u| self.token(u)).map(str::to_string);
        let byte_fallback = self.byte_tokens().iter().any(Option::is_some);
        let replace = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let normalizer = if self.space_prefix() {
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace]})
        } else {
            replace
        };
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if self.space_prefix() {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        let doc = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": null, "post_processor": self.bos_processor(),
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": byte_fallback, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("the rebuilt SentencePiece tokenizer does not load: {e}"))
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
