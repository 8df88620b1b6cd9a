//! The one checkpoint: what a path on the command line or in a manifest names, opened once, and
//! the facts every command derives from it (config, tokenizer, chat template, special tokens, stop
//! ids, the token that ends a turn). `inspect`, `lint`, `compare`, `merge-check` and `bisect` all
//! open paths here; the engine builds weights from a `Checkpoint` (`model::load`), the checks read
//! its facts (`checks::Context`, `checks::lint`).
//!
//! Reading only: nothing here runs a model or decodes a weight. Pickles are refused by
//! `format::open_path`, which this wraps.

use std::path::{Path, PathBuf};

use crate::chat::{sample_conversation, turn_end, ChatTemplate, TemplateTokens};
use crate::error::{Error, Result};
use crate::format::config::ModelConfig;
use crate::format::gguf::{GgufFile, GgufTokenizer};
use crate::format::hf::HfDir;
use crate::format::hub;
use crate::format::lora::Adapter;
use crate::format::tokens::{special_decls, stop_ids, token_string, Role, SpecialDecl, TokenizerInfo};
use crate::format::{self, Opened};

/// What a path turned out to be.
#[derive(Debug)]
pub enum Checkpoint {
    /// An HF model directory (dense, or GPTQ / AWQ / compressed-tensors quantized).
    Hf(HfDir),
    /// A GGUF file: runs with its own metadata, tokenizer and template.
    Gguf(GgufFile),
    /// A PEFT adapter directory on its own (lint and inspect read it; running needs its base).
    Adapter(HfDir),
    /// `BASE+ADAPTER`: a base model with a PEFT adapter applied on the fly.
    BaseWithAdapter { base: HfDir, adapter: Box<Adapter> },
    /// `BASE.gguf+ADAPTER.gguf`: a GGUF base with a GGUF LoRA adapter (`convert_lora_to_gguf.py`)
    /// applied on the fly, as `llama-cli --lora` does.
    GgufWithAdapter { base: GgufFile, adapter: GgufFile },
}

/// Everything about a checkpoint that is not its weights, derived once.
#[derive(Debug, Default)]
pub struct Facts {
    /// `config.json` (a GGUF: its metadata in config.json's shape), parsed once.
    pub config: ModelConfig,
    pub tokenizer: Option<TokenizerInfo>,
    /// Why there is no tokenizer, when one exists but cannot be loaded or rebuilt.
    pub tokenizer_error: Option<Error>,
    /// Every BOS/EOS/PAD/UNK declaration in every side file (none for a GGUF).
    pub decls: Vec<SpecialDecl>,
    pub template: Option<ChatTemplate>,
    /// The special-token strings a template may reference, as transformers passes them.
    pub template_tokens: TemplateTokens,
    /// Ids its own generation stops on.
    pub stop_ids: Vec<u32>,
    /// The token its chat template ends an assistant turn with (else its first stop id).
    pub turn_end_id: Option<u32>,
}

impl Checkpoint {
    /// Opens what `path` names: an HF directory, a PEFT adapter directory, a `.safetensors` file
    /// inside either, a `.gguf` file, or `BASE+ADAPTER` when `path` itself does not exist and both
    /// halves are directories, or both `.gguf` files.
    pub fn open(path: &Path) -> Result<Checkpoint> {
        if let Some((base, adapter)) = split_base_adapter(path) {
            return Self::with_adapter(&base, &adapter);
        }
        Ok(match format::open_path(&hub::locate(path)?)? {
            Opened::Dir(d) if d.is_adapter() => Checkpoint::Adapter(d),
            Opened::Dir(d) => Checkpoint::Hf(d),
            Opened::Gguf(g) => Checkpoint::Gguf(g),
        })
    }

    /// A base model (an HF directory) with a PEFT adapter applied on the fly; or a GGUF base with
    /// a GGUF LoRA adapter.
    pub fn with_adapter(base: &Path, adapter: &Path) -> Result<Checkpoint> {
        let gguf = |p: &Path| p.extension().is_some_and(|e| e == "gguf");
        if gguf(base) || gguf(adapter) {
            let (Checkpoint::Gguf(b), Checkpoint::Gguf(a)) = (Self::open(base)?, Self::open(adapter)?) else {
                return Err(Error::NotACheckpoint {
                    path: if gguf(base) { adapter.to_path_buf() } else { base.to_path_buf() },
                    reason: "a GGUF and an HF half do not combine: apply a GGUF LoRA adapter (convert_lora_to_gguf.py) to a GGUF base, or a PEFT adapter directory to an HF base".into(),
                });
            };
            for (g, want, what) in [(&b, false, "the base"), (&a, true, "the adapter")] {
                if g.header.is_lora_adapter() != want {
                    let is =
                        if want { "a model, not a LoRA adapter (general.type is not `adapter`)" } else { "a LoRA adapter, not a model" };
                    return Err(Error::NotACheckpoint { path: g.path.clone(), reason: format!("{what} of BASE+ADAPTER is {is}") });
                }
            }
            return Ok(Checkpoint::GgufWithAdapter { base: b, adapter: a });
        }
        let base = Self::open_hf(base)?;
        let mut adapter = Box::new(Adapter::open(&hub::locate(adapter)?)?);
        adapter.name_experts_like(&|n| base.tensor(n).is_some());
        Ok(Checkpoint::BaseWithAdapter { base, adapter })
    }

    /// Opens `path`, which must be an HF model directory (`merge-check`, `lint --source`).
    pub fn open_hf(path: &Path) -> Result<HfDir> {
        match Self::open(path)? {
            Checkpoint::Hf(d) => Ok(d),
            other => Err(Error::NotACheckpoint {
                path: path.to_path_buf(),
                reason: format!("this needs an HF model directory, and this is {}", other.kind()),
            }),
        }
    }

    /// Opens `path`, which must be a PEFT adapter directory (`merge-check --adapter`).
    pub fn open_adapter(path: &Path) -> Result<Adapter> {
        match Self::open(path)? {
            Checkpoint::Adapter(d) => Adapter::open(&d.root),
            other => Err(Error::NotACheckpoint {
                path: path.to_path_buf(),
                reason: format!("this needs a PEFT adapter directory (adapter_config.json), and this is {}", other.kind()),
            }),
        }
    }

    /// What it is, in words.
    pub fn kind(&self) -> &'static str {
        match self {
            Checkpoint::Hf(_) => "an HF model directory",
            Checkpoint::Gguf(_) => "a GGUF file",
            Checkpoint::Adapter(_) => "a PEFT adapter directory",
            Checkpoint::BaseWithAdapter { .. } => "a base model with an adapter",
            Checkpoint::GgufWithAdapter { .. } => "a GGUF base with a GGUF LoRA adapter",
        }
    }

    /// The HF directory whose side files (tokenizer, template, config) the checkpoint presents:
    /// a base+adapter checkpoint presents its base's. None for a GGUF.
    pub fn side_dir(&self) -> Option<&HfDir> {
        match self {
            Checkpoint::Hf(d) | Checkpoint::Adapter(d) => Some(d),
            Checkpoint::BaseWithAdapter { base, .. } => Some(base),
            Checkpoint::Gguf(_) | Checkpoint::GgufWithAdapter { .. } => None,
        }
    }

    /// The GGUF it runs as (a GGUF base with an adapter: the base's metadata and tokenizer).
    pub fn gguf(&self) -> Option<&GgufFile> {
        match self {
            Checkpoint::Gguf(g) | Checkpoint::GgufWithAdapter { base: g, .. } => Some(g),
            _ => None,
        }
    }

    /// The facts (tokenizer, template, stop ids, config) of the checkpoint.
    pub fn facts(&self) -> Facts {
        match self {
            Checkpoint::Gguf(g) | Checkpoint::GgufWithAdapter { base: g, .. } => Facts::of_gguf(g),
            other => Facts::of_hf(other.side_dir().expect("every non-GGUF checkpoint has a side directory")),
        }
    }
}

impl Facts {
    /// From an HF directory's side files.
    pub fn of_hf(dir: &HfDir) -> Facts {
        let config = dir.config.as_ref().map(|c| ModelConfig::from_json(&c.value)).unwrap_or_default();
        let (tokenizer, tokenizer_error) = match &dir.tokenizer_json {
            Some(p) => match TokenizerInfo::load(p) {
                Ok(t) => (Some(t), None),
                Err(e) => (None, Some(e)),
            },
            None => (None, None),
        };
        let decls = special_decls(dir, tokenizer.as_ref());
        let template = ChatTemplate::find(dir);
        let get = |role: Role| {
            decls.iter().find(|d| d.role == role && d.token.is_some()).and_then(|d| d.token.clone()).or_else(|| {
                let tc = dir.tokenizer_config.as_ref()?;
                token_string(tc.value.get(format!("{}_token", role.name()))?)
            })
        };
        let template_tokens =
            TemplateTokens { bos_token: get(Role::Bos), eos_token: get(Role::Eos), pad_token: get(Role::Pad), unk_token: get(Role::Unk) };
        let stop_ids = stop_ids(&decls).0.iter().filter_map(|&i| u32::try_from(i).ok()).collect();
        Facts { config, tokenizer, tokenizer_error, decls, template, template_tokens, stop_ids, turn_end_id: None }.with_turn_end()
    }

    /// From a GGUF's metadata, as llama.cpp would run it: its own tokenizer (rebuilt), template
    /// and the ids it declares as ending generation (eos, eot, eom).
    pub fn of_gguf(g: &GgufFile) -> Facts {
        let tok = g.header.tokenizer();
        let (tokenizer, tokenizer_error) = match tok.to_hf() {
            Ok(t) => (Some(TokenizerInfo::from_tokenizer(&g.path, t)), None),
            Err(detail) => (
                None,
                Some(Error::Tokenizer { path: g.path.clone(), detail: format!("the GGUF's own tokenizer cannot be rebuilt: {detail}") }),
            ),
        };
        let name = |id: Option<u64>| id.and_then(|i| tok.token(i)).map(str::to_string);
        let template_tokens =
            TemplateTokens { bos_token: name(tok.bos), eos_token: name(tok.eos), pad_token: name(tok.pad), unk_token: name(tok.unk) };
        let template = tok.chat_template.map(|t| ChatTemplate {
            source: g.path.clone(),
            field: Some("tokenizer.chat_template".into()),
            text: t.to_string(),
        });
        let stop_ids = [tok.eos, tok.eot, tok.eom].into_iter().flatten().filter_map(|i| u32::try_from(i).ok()).collect();
        let config = ModelConfig::from_json(&g.header.hf_config());
        Facts { config, tokenizer, tokenizer_error, decls: Vec::new(), template, template_tokens, stop_ids, turn_end_id: None }
            .with_turn_end()
    }

    fn with_turn_end(mut self) -> Facts {
        self.turn_end_id = self.template_turn_end().or_else(|| self.stop_ids.first().copied());
        self
    }

    /// The id of the token the chat template ends an assistant turn with.
    fn template_turn_end(&self) -> Option<u32> {
        let tokenizer = self.tokenizer.as_ref()?;
        let rendered = self.template.as_ref()?.render(&sample_conversation(), false, &self.template_tokens).ok()?;
        tokenizer.id(&turn_end(&rendered, &tokenizer.special_strings())?.token?)
    }
}

/// The special-token strings a GGUF's template may reference: its declared ids' token texts.
pub fn gguf_template_tokens(tok: &GgufTokenizer) -> TemplateTokens {
    let text = |id: Option<u64>| id.and_then(|i| tok.token(i)).map(str::to_string);
    TemplateTokens { bos_token: text(tok.bos), eos_token: text(tok.eos), pad_token: text(tok.pad), unk_token: text(tok.unk) }
}

/// `BASE+ADAPTER` when `path` itself does not exist and both halves are directories (local, or
/// Hub ids in the local cache: `Qwen/Qwen2.5-0.5B+./lora`) or `.gguf` files. The halves are
/// returned as written.
pub fn split_base_adapter(path: &Path) -> Option<(PathBuf, PathBuf)> {
    if path.exists() {
        return None;
    }
    let s = path.to_str()?;
    let is_dir = |p: &Path| hub::locate(p).is_ok_and(|d| d.is_dir());
    let is_gguf = |p: &Path| p.is_file() && p.extension().is_some_and(|e| e == "gguf");
    s.match_indices('+').find_map(|(i, _)| {
        let (b, a) = (Path::new(&s[..i]), Path::new(&s[i + 1..]));
        // Mixed halves split too, so that `with_adapter` can say why they do not combine.
        let half = |p: &Path| is_dir(p) || is_gguf(p);
        (half(b) && half(a)).then(|| (b.to_path_buf(), a.to_path_buf()))
    })
}
