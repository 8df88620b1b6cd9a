//! The tokenizer (`tokenizer.json` through the `tokenizers` crate) and every declaration of a
//! special token (BOS/EOS/PAD/UNK) in every side file, resolved to ids, so checks can compare them.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::config::token_ids;
use super::hf::{HfDir, JsonDoc, MAX_SIDE_FILE_BYTES};
use super::read_capped;
use crate::error::{Error, Result};

/// A loaded `tokenizer.json`.
#[derive(Clone)]
pub struct TokenizerInfo {
    pub path: PathBuf,
    pub tokenizer: tokenizers::Tokenizer,
    /// Largest id + 1 over the base vocabulary and added tokens: the rows an embedding needs.
    pub id_space: u64,
    /// Added tokens, sorted by id.
    pub added: Vec<AddedTokenInfo>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AddedTokenInfo {
    pub id: u32,
    pub content: String,
    pub special: bool,
}

impl std::fmt::Debug for TokenizerInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenizerInfo").field("path", &self.path).field("id_space", &self.id_space).finish_non_exhaustive()
    }
}

impl TokenizerInfo {
    /// Loads `tokenizer.json` through the capped side-file read (a regular file of at most
    /// `MAX_SIDE_FILE_BYTES`), never through `Tokenizer::from_file`, which reads whatever is there.
    pub fn load(path: &Path) -> Result<TokenizerInfo> {
        let bytes = read_capped(path, MAX_SIDE_FILE_BYTES, "a side file")?;
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| Error::Tokenizer { path: path.to_path_buf(), detail: e.to_string() })?;
        Ok(Self::from_tokenizer(path, tokenizer))
    }

    /// Wraps a tokenizer built elsewhere (a GGUF's own vocabulary rebuilt by `GgufTokenizer::to_hf`).
    pub fn from_tokenizer(path: &Path, tokenizer: tokenizers::Tokenizer) -> TokenizerInfo {
        let vocab = tokenizer.get_vocab(true);
        let id_space = vocab.values().map(|&i| i as u64 + 1).max().unwrap_or(0);
        let mut added: Vec<AddedTokenInfo> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .map(|(id, t)| AddedTokenInfo { id, content: t.content, special: t.special })
            .collect();
        added.sort_by_key(|t| t.id);
        TokenizerInfo { path: path.to_path_buf(), tokenizer, id_space, added }
    }

    /// The contents of the added tokens marked special.
    pub fn special_strings(&self) -> Vec<String> {
        self.added.iter().filter(|t| t.special).map(|t| t.content.clone()).collect()
    }

    pub fn id(&self, token: &str) -> Option<u32> {
        self.tokenizer.token_to_id(token)
    }

    pub fn token(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    /// Encodes text as a model would see it after a chat template (no automatic specials).
    pub fn encode_raw(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| Error::Tokenizer { path: self.path.clone(), detail: format!("encoding failed: {e}") })?;
        Ok(enc.get_ids().to_vec())
    }
}

/// Which special token a declaration is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Bos,
    Eos,
    Pad,
    Unk,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Bos, Role::Eos, Role::Pad, Role::Unk];
    pub fn name(self) -> &'static str {
        match self {
            Role::Bos => "bos",
            Role::Eos => "eos",
            Role::Pad => "pad",
            Role::Unk => "unk",
        }
    }
}

/// Ids of one declaration kept. Real lists hold a handful (Llama 3.1's eos_token_id has 3, Gemma
/// 3's 2); 256 is far above any, and bounds what a hostile `generation_config.json` listing two
/// million ids makes every check, message and stop set carry.
pub const MAX_DECL_IDS: usize = 256;

/// One file's statement of one special token: "`generation_config.json` says eos_token_id = [2, 7]".
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpecialDecl {
    pub role: Role,
    pub file: String,
    pub field: String,
    /// The token string, where the file gives a string.
    pub token: Option<String>,
    /// Ids: given directly (the first `MAX_DECL_IDS`), or resolved from the string through the
    /// tokenizer (empty if unresolvable).
    pub ids: Vec<u64>,
    /// Ids the file lists beyond the `MAX_DECL_IDS` kept in `ids`.
    #[serde(skip_serializing_if = "is_zero")]
    pub more_ids: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl SpecialDecl {
    /// How many ids the file lists, the ones not kept included.
    pub fn listed_ids(&self) -> usize {
        self.ids.len() + self.more_ids
    }
}

/// Collects every BOS/EOS/PAD/UNK declaration in the directory's side files.
pub fn special_decls(dir: &HfDir, tok: Option<&TokenizerInfo>) -> Vec<SpecialDecl> {
    let mut out = Vec::new();
    for doc in [&dir.config, &dir.generation_config].into_iter().flatten() {
        let text = doc.value.get("text_config");
        for role in [Role::Bos, Role::Eos, Role::Pad] {
            let field = format!("{}_token_id", role.name());
            let v = doc.value.get(&field).filter(|v| !v.is_null()).or_else(|| text.and_then(|t| t.get(&field)).filter(|v| !v.is_null()));
            if v.is_some() {
                let mut ids = token_ids(v);
                let more_ids = ids.len().saturating_sub(MAX_DECL_IDS);
                ids.truncate(MAX_DECL_IDS);
                ids.shrink_to_fit();
                out.push(SpecialDecl { role, file: doc.file_name(), field, token: None, ids, more_ids });
            }
        }
    }
    for doc in [&dir.tokenizer_config, &dir.special_tokens_map].into_iter().flatten() {
        string_decls(doc, tok, &mut out);
    }
    out
}

fn string_decls(doc: &JsonDoc, tok: Option<&TokenizerInfo>, out: &mut Vec<SpecialDecl>) {
    for role in Role::ALL {
        let field = format!("{}_token", role.name());
        let Some(s) = doc.value.get(&field).and_then(token_string) else {
            continue;
        };
        let ids = tok.and_then(|t| t.id(&s)).map(|i| vec![i as u64]).unwrap_or_default();
        out.push(SpecialDecl { role, file: doc.file_name(), field, token: Some(s), ids, more_ids: 0 });
    }
}

/// A special-token field is a string or an `AddedToken` dict `{"content": ...}`.
pub fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The ids that stop generation: `generation_config.json`'s eos (what `generate()` uses), falling
/// back to `config.json`'s.
pub fn stop_ids(decls: &[SpecialDecl]) -> (Vec<u64>, Option<&'static str>) {
    match stop_decl(decls) {
        Some((d, file)) => (d.ids.clone(), Some(file)),
        None => (Vec::new(), None),
    }
}

/// The declaration `stop_ids` reads, and its file.
pub fn stop_decl(decls: &[SpecialDecl]) -> Option<(&SpecialDecl, &'static str)> {
    ["generation_config.json", "config.json"]
        .into_iter()
        .find_map(|file| decls.iter().find(|d| d.role == Role::Eos && d.file == file && !d.ids.is_empty()).map(|d| (d, file)))
}
