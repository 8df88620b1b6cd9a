//! The GGUF's vocabulary as llama.cpp will use it: the token texts it ends generation on
//! (`llama_cpp_eog`), its special ids and template tokens, the
//! tokenizer comparisons with the source (`pre_tokenizer` by split regex, `round_trip` by
//! encoding `PROBES` with both), and the SentencePiece (`llama`) vocabulary checks: byte-fallback
//! tokens and scores alone (`spm_alone`), space prefix, byte fallback, scores and added tokens
//! against tokenizer.json (`spm_source`).
//!
//! Shared by `alone` and `source`; it reports only what those two ask it to compare, and does not
//! rebuild the tokenizer itself (`format::gguf::GgufTokenizer::to_hf`).

use std::collections::BTreeSet;

use serde_json::Value as Json;

use crate::checks::ids;
use crate::checks::{Finding, Findings, Severity};
use crate::format::gguf::{token_type, GgufTokenizer};

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

/// The probes `round_trip` encodes for this vocabulary: `PROBES`, and for SentencePiece a
/// Llama 2 chat turn built from the GGUF's own BOS/EOS texts (text right after a special token
/// is where transformers' `legacy=False` tokenizer and llama.cpp part: `SpacePrefix::First`).
pub fn probes_for(tok: &GgufTokenizer) -> Vec<String> {
    let mut v: Vec<String> = PROBES.iter().map(|s| s.to_string()).collect();
    if tok.model == Some("llama") {
        let name = |id: Option<u64>| id.and_then(|i| tok.token(i)).unwrap_or("");
        let (bos, eos) = (name(tok.bos), name(tok.eos));
        v.push(format!("{bos}[INST] What is 6 times 7? [/INST] 42{eos}{bos}[INST] and 8 times 9? [/INST]"));
    }
    v
}

/// Encodes the probes with the source tokenizer and the GGUF's own; any difference in ids means
/// llama.cpp sees other tokens than the model was trained on (catalogue #10). For SentencePiece,
/// a probe that starts with a space and differs only there is a known difference, not this
/// error: transformers' `Metaspace` does not prepend `▁` to text that already starts with one,
/// llama.cpp always prepends (`gguf.leading-space-differs`, info).
pub(super) fn round_trip(
    file: &str,
    tok: &GgufTokenizer,
    hf: &crate::format::tokens::TokenizerInfo,
    gguf: &tokenizers::Tokenizer,
    out: &mut Findings,
) {
    let probes = probes_for(tok);
    let spm = tok.model == Some("llama");
    let mut differing = Vec::new();
    let mut leading_space = Vec::new();
    for (i, text) in probes.iter().enumerate() {
        let (Ok(a), Ok(b)) = (hf.encode_raw(text), gguf.encode(text.as_str(), false)) else { continue };
        let b = b.get_ids();
        if a != b {
            if spm && text.starts_with(' ') && leading_space_only(hf, text, b) {
                leading_space.push(i);
                continue;
            }
            let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
            differing.push((i, at, a.len(), b.len()));
        }
    }
    if let Some(&i) = leading_space.first() {
        out.push(
            Finding::new(
                ids::GGUF_LEADING_SPACE_DIFFERS,
                Severity::Info,
                file,
                format!(
                    "probe {i} {:?} starts with a space: llama.cpp prepends `▁` to it anyway, tokenizer.json's Metaspace does not (a text that already starts with `▁` gets none), so llama.cpp encodes one space more there",
                    probes[i]
                ),
            )
            .field("tokenizer.ggml.add_space_prefix")
            .hint("a known llama.cpp / transformers difference for text that begins with whitespace; chat prompts rarely do"),
        );
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
                    probes.len(),
                    probes[i]
                ),
            )
            .field("tokenizer.ggml.tokens")
            .hint("llama.cpp will feed the model other token ids than it was trained on: re-convert with the right tokenizer and pre-tokenizer"),
        );
    }
}

/// Whether the GGUF's ids for `text` (which starts with a space) are the source's ids for the
/// text with one more space in front: the only difference is llama.cpp's unconditional prefix.
fn leading_space_only(hf: &crate::format::tokens::TokenizerInfo, text: &str, gguf_ids: &[u32]) -> bool {
    hf.encode_raw(&format!(" {text}")).is_ok_and(|ids| ids == gguf_ids)
}

/// How a tokenizer prepends SentencePiece's `▁` (the dummy prefix) to a text segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpacePrefix {
    /// Never (`add_space_prefix = false`, Gemma; `prepend_scheme: never`).
    Never,
    /// Only at the start of the text, not after special or added tokens: transformers'
    /// `legacy=False` Llama tokenizer (`prepend_scheme: first`), its default since 4.4x.
    First,
    /// Every text segment, also after special tokens: llama.cpp with `add_space_prefix`, and
    /// transformers' legacy Llama tokenizer (`Prepend` normalizer or `prepend_scheme: always`).
    Always,
}

impl SpacePrefix {
    fn describe(self) -> &'static str {
        match self {
            SpacePrefix::Never => "prepends no `▁`",
            SpacePrefix::First => "prepends `▁` at the start of the text only, not after special tokens",
            SpacePrefix::Always => "prepends `▁` to every text segment, also after special tokens",
        }
    }
}

/// The space prefix tokenizer.json applies: a `Prepend("▁")` normalizer or a `Metaspace`
/// pre-tokenizer (its `prepend_scheme`, or the older `add_prefix_space`). `None` when it has
/// neither and no `▁` replacement either: not a SentencePiece-style tokenizer.
pub fn hf_space_prefix(tj: &Json) -> Option<SpacePrefix> {
    fn walk<'a>(v: &'a Json, list: &str, depth: usize, found: &mut Vec<&'a Json>) {
        if depth > 8 {
            return;
        }
        if v.get("type").and_then(Json::as_str) == Some("Sequence") {
            for x in v.get(list).and_then(Json::as_array).into_iter().flatten() {
                walk(x, list, depth + 1, found);
            }
        } else if v.is_object() {
            found.push(v);
        }
    }
    let mut parts = Vec::new();
    if let Some(n) = tj.get("normalizer") {
        walk(n, "normalizers", 0, &mut parts);
    }
    if let Some(p) = tj.get("pre_tokenizer") {
        walk(p, "pretokenizers", 0, &mut parts);
    }
    let mut spm_like = false;
    for p in parts {
        match p.get("type").and_then(Json::as_str) {
            Some("Prepend") if p.get("prepend").and_then(Json::as_str) == Some("\u{2581}") => return Some(SpacePrefix::Always),
            Some("Metaspace") => {
                return Some(match p.get("prepend_scheme").and_then(Json::as_str) {
                    Some("first") => SpacePrefix::First,
                    Some("never") => SpacePrefix::Never,
                    Some(_) => SpacePrefix::Always,
                    None if p.get("add_prefix_space").and_then(Json::as_bool) == Some(false) => SpacePrefix::Never,
                    None => SpacePrefix::Always,
                })
            }
            Some("Replace") if p.get("content").and_then(Json::as_str) == Some("\u{2581}") => spm_like = true,
            _ => {}
        }
    }
    spm_like.then_some(SpacePrefix::Never)
}

/// A SentencePiece vocabulary by itself: all 256 byte-fallback tokens or none, and scores that
/// rank the pieces (llama.cpp merges by them).
pub(super) fn spm_alone(file: &str, tok: &GgufTokenizer, out: &mut Findings) {
    if tok.model != Some("llama") {
        return;
    }
    let bytes = tok.byte_tokens();
    let present = bytes.iter().filter(|b| b.is_some()).count();
    if present > 0 && present < 256 {
        let missing: Vec<String> =
            bytes.iter().enumerate().filter(|(_, b)| b.is_none()).take(4).map(|(i, _)| format!("<0x{i:02X}>")).collect();
        out.push(
            Finding::new(
                ids::GGUF_BYTE_FALLBACK_INCOMPLETE,
                Severity::Error,
                file,
                format!(
                    "the vocabulary has {present} of the 256 byte-fallback tokens (BYTE type; missing {}{}): llama.cpp cannot encode a character outside the vocabulary whose bytes are missing",
                    missing.join(", "),
                    if 256 - present > missing.len() { ", …" } else { "" }
                ),
            )
            .field("tokenizer.ggml.token_type")
            .hint("re-convert from the tokenizer.model the model was trained with"),
        );
    }
    let normal: Vec<f32> = match (tok.scores, &tok.token_type) {
        (Some(s), Some(t)) => s.iter().zip(t).filter(|(_, &ty)| ty == token_type::NORMAL).map(|(&x, _)| x).collect(),
        (Some(s), None) => s.to_vec(),
        (None, _) => Vec::new(),
    };
    let flat = normal.len() > 1 && normal.iter().all(|&x| x == normal[0]);
    if tok.scores.is_none() || flat {
        let what = if flat {
            format!("every one of the {} normal tokens has the score {}", normal.len(), normal[0])
        } else {
            "there is no `tokenizer.ggml.scores`".to_string()
        };
        out.push(
            Finding::new(
                ids::GGUF_SCORES_MISSING,
                Severity::Error,
                file,
                format!(
                    "{what}: llama.cpp's SentencePiece tokenizer merges the highest-scoring pair first, so with no ranking it merges the leftmost pair and tokenizes text into other ids than the model was trained on"
                ),
            )
            .field("tokenizer.ggml.scores")
            .hint(if flat && normal[0] == -1000.0 {
                "-1000 for every token is gguf-py's LlamaHfVocab placeholder: the converter read tokenizer.json without tokenizer.model. Put the model's tokenizer.model beside it and re-convert"
            } else {
                "re-convert with the model's tokenizer.model beside the weights"
            }),
        );
    }
}

/// A SentencePiece vocabulary against tokenizer.json: the space prefix, byte fallback, the scores
/// (per id for a Unigram model, as a ranking of the merges for BPE) and the added tokens.
pub(super) fn spm_source(
    file: &str,
    tok: &GgufTokenizer,
    tj: &Json,
    hf: Option<&crate::format::tokens::TokenizerInfo>,
    out: &mut Findings,
) {
    if tok.model != Some("llama") {
        return;
    }
    let gguf_prefix = if tok.space_prefix() { SpacePrefix::Always } else { SpacePrefix::Never };
    if let Some(hf_prefix) = hf_space_prefix(tj).filter(|p| *p != gguf_prefix) {
        let (severity, effect) = match (gguf_prefix, hf_prefix) {
            (SpacePrefix::Always, SpacePrefix::First) => (
                Severity::Warning,
                "text right after a special token (`<s>[INST]`, the answer after `[/INST]`…) starts with `▁` in llama.cpp but not in transformers",
            ),
            _ => (Severity::Error, "the first word of every prompt is another token in llama.cpp than in transformers"),
        };
        out.push(
            Finding::new(
                ids::GGUF_SPACE_PREFIX_DIFFERS,
                severity,
                file,
                format!(
                    "llama.cpp {} (`tokenizer.ggml.add_space_prefix` = {}) but tokenizer.json {}: {effect}",
                    gguf_prefix.describe(),
                    tok.space_prefix(),
                    hf_prefix.describe()
                ),
            )
            .field("tokenizer.ggml.add_space_prefix")
            .hint(match hf_prefix {
                SpacePrefix::First => "the model was trained with transformers' legacy=False tokenizer: llama.cpp cannot reproduce it; load the HF tokenizer with legacy=True if that is what training used, or expect these prompts to differ",
                SpacePrefix::Never => "set tokenizer.ggml.add_space_prefix = false (gguf_new_metadata.py) or re-convert with add_prefix_space: false in tokenizer_config.json",
                SpacePrefix::Always => "set tokenizer.ggml.add_space_prefix = true or re-convert",
            }),
        );
    }
    let model = tj.get("model");
    let hf_byte_fallback = model.and_then(|m| m.get("byte_fallback")).and_then(Json::as_bool).unwrap_or(false);
    let gguf_bytes = tok.byte_tokens().iter().any(Option::is_some);
    if hf_byte_fallback != gguf_bytes {
        out.push(
            Finding::new(
                ids::GGUF_BYTE_FALLBACK_DIFFERS,
                if hf_byte_fallback { Severity::Error } else { Severity::Warning },
                file,
                if hf_byte_fallback {
                    "tokenizer.json falls back to byte tokens (`byte_fallback`) but the GGUF has no BYTE-type `<0xXX>` tokens: llama.cpp cannot encode characters outside the vocabulary".to_string()
                } else {
                    "the GGUF has BYTE-type `<0xXX>` tokens but tokenizer.json does not fall back to them: characters outside the vocabulary become bytes in llama.cpp and `<unk>` in transformers".to_string()
                },
            )
            .field("tokenizer.ggml.token_type")
            .hint("re-convert from the model's own tokenizer.model / tokenizer.json"),
        );
    }
    scores(file, tok, model, out);
    if let Some(hf) = hf {
        added_tokens(file, tok, hf, out);
    }
}

/// Relative tolerance for a score GGUF stores as float32 and tokenizer.json as a JSON float
/// (float64 from float32): the float32 rounding, 2^-24, with room.
const SCORE_REL_TOL: f64 = 1e-6;

/// GGUF scores vs tokenizer.json: a Unigram model's scores by id; for BPE the merges' order
/// (rank k merges into a token llama.cpp must score at least as high as rank k+1's).
fn scores(file: &str, tok: &GgufTokenizer, model: Option<&Json>, out: &mut Findings) {
    let (Some(scores), Some(model)) = (tok.scores, model) else { return };
    let first = scores.first().copied();
    if scores.iter().all(|&x| Some(x) == first) {
        return; // no ranking at all: `gguf.scores-missing` says so
    }
    let mut differing = 0usize;
    let mut example = None;
    match model.get("type").and_then(Json::as_str) {
        Some("Unigram") => {
            for (i, e) in model.get("vocab").and_then(Json::as_array).into_iter().flatten().enumerate() {
                let (Some(hf), Some(&g)) = (e.get(1).and_then(Json::as_f64), scores.get(i)) else { continue };
                if (hf - f64::from(g)).abs() > SCORE_REL_TOL * hf.abs().max(1.0) {
                    differing += 1;
                    example.get_or_insert(format!("id {i}: {g} vs {hf}"));
                }
            }
        }
        Some("BPE") => {
            let id = |t: &str| model.pointer("/vocab").and_then(|v| v.get(t)).and_then(Json::as_u64);
            let mut prev: Option<(f32, String)> = None;
            for m in model.get("merges").and_then(Json::as_array).into_iter().flatten() {
                let merged = match m {
                    Json::String(s) => s.replacen(' ', "", 1),
                    Json::Array(p) => p.iter().filter_map(Json::as_str).collect::<String>(),
                    _ => continue,
                };
                let Some(s) = id(&merged).and_then(|i| scores.get(usize::try_from(i).ok()?)).copied() else { continue };
                if let Some((p, pt)) = &prev {
                    if s > *p {
                        differing += 1;
                        example.get_or_insert(format!("`{merged}` (score {s}) is merged after `{pt}` (score {p})"));
                    }
                }
                prev = Some((s, merged));
            }
        }
        _ => return,
    }
    if let Some(example) = example {
        out.push(
            Finding::new(
                ids::GGUF_SCORES_DIFFER,
                Severity::Error,
                file,
                format!(
                    "{differing} token scores disagree with tokenizer.json's model (first: {example}): llama.cpp merges pieces in another order than transformers"
                ),
            )
            .field("tokenizer.ggml.scores")
            .hint("re-convert with the tokenizer.model that belongs to this tokenizer.json"),
        );
    }
}

/// Every token tokenizer.json adds must be an added token for llama.cpp too (CONTROL,
/// USER_DEFINED or UNKNOWN type, the types its `tokenizer_st_partition` splits out of text), or
/// llama.cpp tokenizes its text into pieces.
fn added_tokens(file: &str, tok: &GgufTokenizer, hf: &crate::format::tokens::TokenizerInfo, out: &mut Findings) {
    let (Some(tokens), Some(types)) = (tok.tokens, &tok.token_type) else { return };
    let mut bad = Vec::new();
    for a in &hf.added {
        let i = a.id as usize;
        let (Some(t), Some(&ty)) = (tokens.get(i), types.get(i)) else { continue };
        let ok = matches!(ty, token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN);
        if !ok {
            bad.push(format!("{} `{}` is `{t}` of type {}", a.id, a.content, type_name(ty)));
        }
    }
    if let Some(first) = bad.first() {
        out.push(
            Finding::new(
                ids::GGUF_ADDED_TOKEN_NOT_SPECIAL,
                Severity::Error,
                file,
                format!(
                    "{} of tokenizer.json's {} added tokens are not special or user-defined in the GGUF (first: {first}): llama.cpp splits their text into pieces instead of emitting the token",
                    bad.len(),
                    hf.added.len()
                ),
            )
            .field("tokenizer.ggml.token_type")
            .hint("convert_hf_to_gguf.py's SentencePiece path takes added tokens from added_tokens.json or tokenizer_config.json's added_tokens_decoder, which transformers 5 does not write: add them there and re-convert"),
        );
    }
}

fn type_name(ty: i64) -> &'static str {
    match ty {
        token_type::NORMAL => "NORMAL",
        token_type::UNKNOWN => "UNKNOWN",
        token_type::CONTROL => "CONTROL",
        token_type::USER_DEFINED => "USER_DEFINED",
        token_type::UNUSED => "UNUSED",
        token_type::BYTE => "BYTE",
        _ => "UNDEFINED",
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
