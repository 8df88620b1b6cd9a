//! Static checks: no forward pass. Each check reads a `Context` and appends `Finding`s; none stops
//! at the first bad tensor or file, and none writes anything.
//!
//! Finding ids are stable (`area.what`) and documented in `docs/lint.md`; tests refer to them.

pub mod gguf;
pub mod integrity;
pub mod lineage;
pub mod merge;
pub mod quant;
pub mod special;
pub mod template;
pub mod values;
pub mod vocab;

use serde::Serialize;

use crate::chat::ChatTemplate;
use crate::error::Error;
use crate::format::config::ModelConfig;
use crate::format::hf::HfDir;
use crate::format::tokens::{special_decls, SpecialDecl, TokenizerInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing a check found: what, where (file and field), how bad, and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    /// File relative to the checkpoint root.
    pub file: String,
    /// Field, tensor or header key inside the file, when there is one.
    pub field: Option<String>,
    pub message: String,
    pub hint: String,
}

impl Finding {
    pub fn new(id: &'static str, severity: Severity, file: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding { id, severity, file: file.into(), field: None, message: message.into(), hint: String::new() }
    }
    pub fn field(mut self, f: impl Into<String>) -> Finding {
        self.field = Some(f.into());
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> Finding {
        self.hint = h.into();
        self
    }
}

/// A tensor name and its first dimension.
pub type NamedRows = (String, u64);

/// Everything the checks read, loaded once.
pub struct Context<'a> {
    pub dir: &'a HfDir,
    pub config: ModelConfig,
    pub tokenizer: Option<TokenizerInfo>,
    pub tokenizer_error: Option<Error>,
    pub decls: Vec<SpecialDecl>,
    pub template: Option<ChatTemplate>,
}

impl<'a> Context<'a> {
    pub fn new(dir: &'a HfDir) -> Context<'a> {
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
        Context { dir, config, tokenizer, tokenizer_error, decls, template }
    }

    /// Rows of the input embedding and of the output head (the same tensor when tied).
    pub fn embedding_rows(&self) -> (Option<NamedRows>, Option<NamedRows>) {
        let rows = |names: &[&str]| {
            names.iter().find_map(|n| {
                let (_, t) = self.dir.tensor(n)?;
                Some((n.to_string(), *t.shape.first()?))
            })
        };
        let embed = rows(&["model.embed_tokens.weight", "model.language_model.embed_tokens.weight", "transformer.wte.weight"]);
        let head = rows(&["lm_head.weight", "model.lm_head.weight"]);
        (embed, head)
    }
}

/// Options that change what the checks do.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// Skip the value scan (NaN/Inf/zero/magnitude) for a fast metadata-only lint.
    pub no_values: bool,
}

/// Runs every check, in a stable order.
pub fn run_all(ctx: &Context, opts: &LintOptions) -> Vec<Finding> {
    let mut out = Vec::new();
    integrity::check(ctx, &mut out);
    if !opts.no_values {
        values::check(ctx, &mut out);
    }
    // An adapter directory's tokenizer and template (if saved) belong to its base model; they are
    // checked there, not against the adapter's missing config.
    if !ctx.dir.is_adapter() {
        vocab::check(ctx, &mut out);
        special::check(ctx, &mut out);
        template::check(ctx, &mut out);
        quant::check(ctx, &mut out);
    }
    out
}
