//! A PEFT adapter directory on its own: its `adapter_config.json` parses into something the
//! engine and merge-check can apply (every reason `compare BASE+ADAPTER` or `merge-check` would
//! refuse it is a finding here first), it adapts at least one module, and the rank its tensors
//! have is the rank its config declares (merge-check's scale would otherwise be computed from one
//! and printed from the other).

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::error::Error;
use crate::format::hf::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::format::lora::Adapter;

pub fn check(ctx: &Context, out: &mut Findings) {
    let dir = ctx.dir;
    if dir.adapter_config.is_none() {
        return;
    }
    let adapter = match Adapter::open(&dir.root) {
        Ok(a) => a,
        Err(e) => {
            let (file, field, detail) = match &e {
                Error::Field { path, field, detail } => (crate::format::hf::file_name(path), field.clone(), detail.clone()),
                Error::Tensor { tensor, detail, .. } => (ADAPTER_WEIGHTS.to_string(), tensor.clone(), detail.clone()),
                other => (ADAPTER_CONFIG.to_string(), String::new(), other.to_string()),
            };
            let id = if field == "peft_type" { ids::ADAPTER_UNSUPPORTED } else { ids::ADAPTER_INVALID };
            out.push(
                Finding::new(id, Severity::Error, file, format!("`{field}` {detail}"))
                    .field(field)
                    .hint("the adapter cannot be applied or merge-checked: fix adapter_config.json or re-save the adapter with peft"),
            );
            return;
        }
    };
    applicable(&adapter, out);
}

/// What makes a parsed adapter inapplicable: no modules, or tensors of another rank than its
/// config declares (peft refuses to load those). merge-check reports these too.
pub fn applicable(adapter: &Adapter, out: &mut Findings) {
    if adapter.modules.is_empty() {
        out.push(
            Finding::new(
                ids::ADAPTER_NO_MODULES,
                Severity::Error,
                ADAPTER_WEIGHTS,
                "the adapter holds no lora_A/lora_B pairs: it changes nothing",
            )
            .hint("`target_modules` matched no module of the base model when the adapter was made: check the module names"),
        );
    }
    for m in &adapter.modules {
        let (declared, _) = adapter.config.rank_alpha(&m.base);
        if declared != m.rank {
            out.push(
                Finding::new(
                    ids::ADAPTER_RANK_MISMATCH,
                    Severity::Error,
                    ADAPTER_CONFIG,
                    format!(
                        "`{}`: lora_A has {} rows but adapter_config.json gives r = {declared}: the LoRA scale alpha/r is ambiguous",
                        m.base, m.rank
                    ),
                )
                .field("r")
                .hint("the config does not belong to these tensors: save the adapter's own adapter_config.json"),
            );
        }
    }
}
