//! Tensors against `config.json`: the architecture it describes parses (every field the engine
//! refuses is a finding here first), and every tensor the decoder will load exists with the shape
//! and a dtype the config implies (`ArchSpec::expected_tensors`, the same list the engine checks at
//! load). A missing `lm_head` that the config does not tie is an error: transformers would run a
//! random head. Linear layers of a quantized checkpoint are stored packed and are left to its
//! unpacker.

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::format::arch::{ArchSpec, ShapeProblem, Topology};
use crate::format::hf::CONFIG;

pub fn check(ctx: &Context, out: &mut Findings) {
    let Some(cfg) = &ctx.dir.config else { return };
    let dir = ctx.dir;
    let mut spec = match ArchSpec::from_config(&cfg.value, Some(dir.tensor("lm_head.weight").is_some())) {
        Ok(s) => s,
        Err(e) => {
            let (field, detail) = match &e {
                crate::error::Error::Field { field, detail, .. } => (field.clone(), detail.clone()),
                other => (String::new(), other.to_string()),
            };
            out.push(
                Finding::new(ids::CONFIG_UNSUPPORTED, Severity::Error, CONFIG, format!("`{field}` {detail}"))
                    .field(field)
                    .hint("compare cannot run this config: fix the field (it must match the weights), or report the architecture"),
            );
            return;
        }
    };
    spec.topology = Topology::from_weights(|n| dir.tensor(n).is_some());
    for p in spec.shape_problems_in(dir) {
        let (id, hint) = match &p {
            ShapeProblem::Missing { .. } => {
                (ids::WEIGHTS_MISSING_TENSOR, "the weights do not match config.json: re-save the model, or fix the config")
            }
            ShapeProblem::Shape { .. } => {
                (ids::WEIGHTS_SHAPE_MISMATCH, "config.json's sizes (hidden, heads, head_dim, intermediate) must match the weights")
            }
            ShapeProblem::NotFloat { .. } => (
                ids::WEIGHTS_NOT_FLOAT,
                "a dense weight must be f32/f16/bf16 (or float8); quantized checkpoints need their quantization_config",
            ),
            ShapeProblem::HeadMissing => {
                (ids::WEIGHTS_LM_HEAD_MISSING, "save lm_head.weight, or set `tie_word_embeddings: true` if the model really ties it")
            }
            ShapeProblem::LayersMissing { .. } => {
                (ids::WEIGHTS_LAYERS_MISSING, "num_hidden_layers must equal the layers saved: a truncated save or a wrong config")
            }
            ShapeProblem::ExpertCount { .. } => (
                ids::WEIGHTS_EXPERT_COUNT_MISMATCH,
                "num_local_experts / num_experts must equal the experts saved (and the router's rows): fix the config or re-save",
            ),
        };
        let file = dir.tensor(p.tensor()).map(|(f, _)| crate::format::hf::file_name(&f.path)).unwrap_or_else(|| CONFIG.to_string());
        out.push(Finding::new(id, Severity::Error, file, p.message()).field(p.tensor()).hint(hint));
    }
}
