//! A variant ready to run: the model and the facts it runs with (its own tokenizer, chat
//! template and stop tokens), both derived from one `Checkpoint`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::Device;

use crate::chat::{ChatTemplate, TemplateTokens};
use crate::checkpoint::{Checkpoint, Facts};
use crate::error::{Error, Result};
use crate::format::tokens::TokenizerInfo;
use crate::model::{self, Model};
use crate::settings::RunSettings;

use super::prompts::Prompt;
use super::token_map::TokenMap;

pub struct Variant {
    pub label: String,
    pub path: PathBuf,
    pub model: Model,
    pub tokenizer: TokenizerInfo,
    pub template: Option<ChatTemplate>,
    pub template_tokens: TemplateTokens,
    /// Ids its own generation config stops on.
    pub stop_ids: Vec<u32>,
    /// The token its chat template ends an assistant turn with (else its first stop id).
    pub turn_end_id: Option<u32>,
    /// A candidate with another id space: how the reference's ids map onto its own
    /// (`compare --token-map`); `None` when it reads the reference's ids as they are.
    pub token_map: Option<Arc<TokenMap>>,
}

impl Variant {
    /// Opens `PATH` (anything `Checkpoint::open` takes, `BASE+ADAPTER` included) and loads it.
    pub fn open(path: &Path, device: &Device, settings: &RunSettings) -> Result<Variant> {
        Self::load(path, &Checkpoint::open(path)?, device, settings)
    }

    /// Loads an opened checkpoint; `label` names it in reports and errors. A GGUF runs with its
    /// own metadata, tokenizer, chat template and stop ids, as llama.cpp would: a conversion
    /// that broke any of them shows up in the comparison.
    pub fn load(label: &Path, ckpt: &Checkpoint, device: &Device, settings: &RunSettings) -> Result<Variant> {
        Self::load_with(label, ckpt, ckpt.facts(), device, settings)
    }

    /// `load` with the checkpoint's facts already derived (`compare` checks them first).
    pub fn load_with(label: &Path, ckpt: &Checkpoint, facts: Facts, device: &Device, settings: &RunSettings) -> Result<Variant> {
        let model = model::load(ckpt, device, settings.dtype, settings.gguf_matmul)?;
        let Facts { tokenizer, tokenizer_error, template, template_tokens, stop_ids, turn_end_id, .. } = facts;
        let tokenizer = match (tokenizer, tokenizer_error) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(Error::NotACheckpoint {
                    path: label.to_path_buf(),
                    reason: "no tokenizer.json; compare needs the tokenizer to build prompts".into(),
                })
            }
        };
        Ok(Variant {
            label: label.display().to_string(),
            path: label.to_path_buf(),
            model,
            tokenizer,
            template,
            template_tokens,
            stop_ids,
            turn_end_id,
            token_map: None,
        })
    }

    /// Another model run with this variant's facts (tokenizer, template, stop ids): a hybrid
    /// of blame's.
    pub fn with_model(&self, label: String, model: Model) -> Variant {
        Variant {
            path: self.path.clone(),
            label,
            model,
            tokenizer: self.tokenizer.clone(),
            template: self.template.clone(),
            template_tokens: self.template_tokens.clone(),
            stop_ids: self.stop_ids.clone(),
            turn_end_id: self.turn_end_id,
            token_map: self.token_map.clone(),
        }
    }

    /// The reference's ids `ids` as this variant reads them (through its token map), or the
    /// position of the first id it has no counterpart for.
    pub fn own_ids<'a>(&self, ids: &'a [u32]) -> std::result::Result<std::borrow::Cow<'a, [u32]>, usize> {
        match &self.token_map {
            None => Ok(std::borrow::Cow::Borrowed(ids)),
            Some(m) => m.to_candidate(ids).map(std::borrow::Cow::Owned),
        }
    }

    /// This variant's own ids in the reference's id space (`u32::MAX` for one the reference
    /// does not have).
    pub fn reference_ids(&self, ids: &[u32]) -> Vec<u32> {
        match &self.token_map {
            None => ids.to_vec(),
            Some(m) => ids.iter().map(|&c| m.reference(c).unwrap_or(u32::MAX)).collect(),
        }
    }

    pub fn is_chat(&self) -> bool {
        self.template.is_some()
    }

    /// A plain text as llama.cpp tokenizes it with its specials (`llama-perplexity -f`): the
    /// tokenizer's BOS first when it adds one (an HF post-processor; a GGUF's
    /// `tokenizer.ggml.add_bos_token`), no EOS, special-token text not parsed apart from the
    /// tokenizer's added tokens. Returns the ids and that BOS.
    pub fn encode_text_stream(&self, text: &str) -> Result<(Vec<u32>, Option<u32>)> {
        let tok = &self.tokenizer;
        let err = |e: tokenizers::Error| Error::Tokenizer { path: tok.path.clone(), detail: format!("encoding failed: {e}") };
        let with = tok.tokenizer.encode("a", true).map_err(err)?;
        let without = tok.tokenizer.encode("a", false).map_err(err)?;
        let (with, without) = (with.get_ids(), without.get_ids());
        let bos = (with.len() > without.len() && with[1..].starts_with(without)).then(|| with[0]);
        let mut ids = tok.encode_raw(text)?;
        if let Some(b) = bos {
            ids.insert(0, b);
        }
        Ok((ids, bos))
    }

    /// Token ids of a prompt as this variant would see it: through its chat template with the
    /// generation prompt (no automatic specials: the template has them), or as raw text with the
    /// tokenizer's own specials for a base model.
    pub fn encode_prompt(&self, p: &Prompt) -> Result<Vec<u32>> {
        match &self.template {
            Some(t) => {
                let text = t.render(&p.as_messages(), true, &self.template_tokens)?;
                self.tokenizer.encode_raw(&text)
            }
            None => {
                let enc = self
                    .tokenizer
                    .tokenizer
                    .encode(p.as_text(), true)
                    .map_err(|e| Error::Tokenizer { path: self.tokenizer.path.clone(), detail: e.to_string() })?;
                Ok(enc.get_ids().to_vec())
            }
        }
    }
}
