//! A variant ready to run: the model, its own tokenizer, chat template and stop tokens.

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::chat::{sample_conversation, turn_end, ChatTemplate, TemplateTokens};
use crate::checks::template::template_tokens;
use crate::checks::Context;
use crate::error::{Error, Result};
use crate::format::gguf::GgufFile;
use crate::format::lora::Adapter;
use crate::format::tokens::{stop_ids, TokenizerInfo};
use crate::format::{self, Checkpoint};
use crate::model::quant_weights::QuantWeights;
use crate::model::weights::{HfWeights, LoraWeights};
use crate::model::{self, Model};

use super::prompts::Prompt;

/// How variants are loaded: compute dtype (`f32`, `bf16`, `f16`, `auto`) and how a GGUF's
/// quantized layers run.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub dtype: String,
    pub gguf_matmul: model::GgufMatmul,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions { dtype: "f32".into(), gguf_matmul: model::GgufMatmul::Auto }
    }
}

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
}

impl Variant {
    /// Opens `PATH`, or `BASE+ADAPTER` (a base model with a PEFT adapter applied on the fly) when
    /// `PATH` does not exist and both halves do.
    pub fn open(path: &Path, device: &Device, opts: &LoadOptions) -> Result<Variant> {
        let dtype = opts.dtype.as_str();
        if let Some((base, adapter)) = split_base_adapter(path) {
            return Self::open_with_adapter(path, &base, &adapter, device, opts);
        }
        if path.is_file() && format::sniff(path)? == format::FileKind::Gguf {
            return Self::open_gguf(path, device, opts);
        }
        let Checkpoint::Hf(dir) = format::open(path)?;
        if dir.is_adapter() {
            return Err(Error::Unsupported {
                path: path.to_path_buf(),
                format: "a PEFT adapter on its own",
                hint: "compare needs a full model: pass `BASE+ADAPTER` to apply it on the fly, or the merged model",
            });
        }
        let dt = model::resolve_dtype(dtype, &dir)?;
        // GPTQ / AWQ / compressed-tensors: dequantized once at load by the project's own unpackers.
        let model = match QuantWeights::from_config(&dir)? {
            Some(q) => model::load_with(&dir, &q, device, dt)?,
            None => model::load_with(&dir, &HfWeights { dir: &dir }, device, dt)?,
        };
        Self::finish(path, &dir, model)
    }

    pub fn open_with_adapter(label: &Path, base: &Path, adapter: &Path, device: &Device, opts: &LoadOptions) -> Result<Variant> {
        let dtype = opts.dtype.as_str();
        let Checkpoint::Hf(dir) = format::open(base)?;
        let ad = Adapter::open(adapter)?;
        if ad.config.fan_in_fan_out {
            return Err(Error::Field {
                path: adapter.join("adapter_config.json"),
                field: "fan_in_fan_out".into(),
                detail: "Conv1D (GPT-2 style) adapters are not supported by the engine".into(),
            });
        }
        // The base runs as `open` would run it: a quantized base through its own scheme.
        let (dense, quant) = (HfWeights { dir: &dir }, QuantWeights::from_config(&dir)?);
        let base_w: &dyn model::weights::WeightSource = match &quant {
            Some(q) => q,
            None => &dense,
        };
        let w = LoraWeights { base: base_w, adapter: &ad };
        for m in &ad.modules {
            if !base_w.has_linear(&m.base) {
                return Err(Error::Tensor {
                    path: adapter.join("adapter_model.safetensors"),
                    tensor: m.a.clone(),
                    detail: format!("adapts `{}`, which the base model `{}` does not have", m.base, base.display()),
                });
            }
        }
        let model = model::load_with(&dir, &w, device, model::resolve_dtype(dtype, &dir)?)?;
        Self::finish(label, &dir, model)
    }

    /// A GGUF runs with its own metadata, tokenizer, chat template and stop ids, as llama.cpp
    /// would: a conversion that broke any of them shows up in the comparison.
    pub fn open_gguf(path: &Path, device: &Device, opts: &LoadOptions) -> Result<Variant> {
        let dtype = opts.dtype.as_str();
        let file = GgufFile::open(path)?;
        // A GGUF has no config dtype: `auto` computes in f32.
        let dt = match dtype {
            "auto" => candle_core::DType::F32,
            other => model::parse_dtype(other).ok_or_else(|| Error::Field {
                path: "--dtype".into(),
                field: "dtype".into(),
                detail: format!("`{other}` is not one of f32, bf16, f16, auto"),
            })?,
        };
        let model = model::load_gguf_with(&file, device, dt, opts.gguf_matmul)?;
        let tok = file.header.tokenizer();
        let hf_tok = tok.to_hf().map_err(|detail| Error::Tokenizer {
            path: path.to_path_buf(),
            detail: format!("the GGUF's own tokenizer cannot be rebuilt: {detail}"),
        })?;
        let tokenizer = TokenizerInfo::from_tokenizer(path, hf_tok);
        let name = |id: Option<u64>| id.and_then(|i| tok.token(i)).map(str::to_string);
        let template_tokens =
            TemplateTokens { bos_token: name(tok.bos), eos_token: name(tok.eos), pad_token: name(tok.pad), unk_token: name(tok.unk) };
        let template = tok.chat_template.map(|t| ChatTemplate {
            source: path.to_path_buf(),
            field: Some("tokenizer.chat_template".into()),
            text: t.to_string(),
        });
        // The ids the file declares as ending generation (eos, eot, eom).
        let stop_ids: Vec<u32> = [tok.eos, tok.eot, tok.eom].into_iter().flatten().filter_map(|i| u32::try_from(i).ok()).collect();
        let turn_end_id = turn_end_of(&template, &template_tokens, &tokenizer).or_else(|| stop_ids.first().copied());
        Ok(Variant {
            label: path.display().to_string(),
            path: path.to_path_buf(),
            model,
            tokenizer,
            template,
            template_tokens,
            stop_ids,
            turn_end_id,
        })
    }

    fn finish(path: &Path, dir: &crate::format::hf::HfDir, model: Model) -> Result<Variant> {
        let ctx = Context::new(dir);
        let template_tokens = template_tokens(&ctx);
        let (stop, _) = stop_ids(&ctx.decls);
        let Context { tokenizer, tokenizer_error, template, .. } = ctx;
        let tokenizer = match (tokenizer, tokenizer_error) {
            (Some(t), _) => t,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(Error::NotACheckpoint {
                    path: path.to_path_buf(),
                    reason: "no tokenizer.json; compare needs the tokenizer to build prompts".into(),
                })
            }
        };
        let stop_ids: Vec<u32> = stop.iter().filter_map(|&i| u32::try_from(i).ok()).collect();
        let turn_end_id = turn_end_of(&template, &template_tokens, &tokenizer).or_else(|| stop_ids.first().copied());
        Ok(Variant {
            label: path.display().to_string(),
            path: path.to_path_buf(),
            model,
            tokenizer,
            template,
            template_tokens,
            stop_ids,
            turn_end_id,
        })
    }

    pub fn is_chat(&self) -> bool {
        self.template.is_some()
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

/// `BASE+ADAPTER` when `path` itself does not exist and both halves are directories.
pub fn split_base_adapter(path: &Path) -> Option<(PathBuf, PathBuf)> {
    if path.exists() {
        return None;
    }
    let s = path.to_str()?;
    s.match_indices('+').find_map(|(i, _)| {
        let (b, a) = (Path::new(&s[..i]), Path::new(&s[i + 1..]));
        (b.is_dir() && a.is_dir()).then(|| (b.to_path_buf(), a.to_path_buf()))
    })
}

/// The id of the token the chat template ends an assistant turn with.
fn turn_end_of(template: &Option<ChatTemplate>, tokens: &TemplateTokens, tokenizer: &TokenizerInfo) -> Option<u32> {
    let rendered = template.as_ref()?.render(&sample_conversation(), false, tokens).ok()?;
    tokenizer.id(&turn_end(&rendered, &tokenizer.special_strings())?.token?)
}
