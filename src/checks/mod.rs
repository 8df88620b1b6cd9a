//! Static checks: no forward pass. Each check reads a `Context` and appends `Finding`s; none stops
//! at the first bad tensor or file, and none writes anything.
//!
//! Finding ids are stable (`area.what`) and documented in `docs/lint.md`; tests refer to them.

pub mod adapter;
pub mod gguf;
pub mod ids;
pub mod integrity;
pub mod lineage;
pub mod merge;
pub mod quant;
pub mod special;
pub mod template;
pub mod values;
pub mod vocab;
pub mod weights;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, Facts};
use crate::format::hf::HfDir;
use ids::FindingId;

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
    /// A finding; its id must be registered in `ids` (the only way to get a `FindingId`).
    pub fn new(id: FindingId, severity: Severity, file: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding { id: id.as_str(), severity, file: file.into(), field: None, message: message.into(), hint: String::new() }
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

/// Everything the checks read about one HF directory, loaded once: the directory and its
/// `Facts` (config, tokenizer, special-token declarations, template), which deref from it.
pub struct Context<'a> {
    pub dir: &'a HfDir,
    pub facts: Facts,
}

impl std::ops::Deref for Context<'_> {
    type Target = Facts;
    fn deref(&self) -> &Facts {
        &self.facts
    }
}

impl<'a> Context<'a> {
    pub fn new(dir: &'a HfDir) -> Context<'a> {
        Context { dir, facts: Facts::of_hf(dir) }
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
    adapter::check(ctx, &mut out);
    if !opts.no_values {
        values::check(ctx, &mut out);
    }
    // An adapter directory's tokenizer and template (if saved) belong to its base model; they are
    // checked there, not against the adapter's missing config.
    if !ctx.dir.is_adapter() {
        weights::check(ctx, &mut out);
        vocab::check(ctx, &mut out);
        special::check(ctx, &mut out);
        template::check(ctx, &mut out);
        quant::check(ctx, &mut out);
    }
    out
}

/// Lints any checkpoint: an HF or adapter directory with every check, a GGUF alone or against
/// the HF checkpoint it came from (`source`), a base+adapter by its adapter directory (the base is
/// a step of its own in a lineage).
pub fn lint(ckpt: &Checkpoint, source: Option<&HfDir>, opts: &LintOptions) -> Vec<Finding> {
    match ckpt {
        Checkpoint::Gguf(g) => gguf::run(g, source.map(Context::new).as_ref()),
        Checkpoint::Hf(d) | Checkpoint::Adapter(d) => run_all(&Context::new(d), opts),
        Checkpoint::BaseWithAdapter { adapter, .. } => run_all(&Context::new(&adapter.dir), opts),
    }
}
