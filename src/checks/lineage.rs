//! Checks between a step and its parent in a lineage: what a conversion or save lost or changed
//! that lint on the step alone cannot call wrong (a model without a template may be a base model;
//! a model whose parent had one lost it).

use super::fingerprint::Fingerprints;
use super::{Context, Finding, Severity};
use crate::checkpoint::Checkpoint;
use crate::checks::ids;
use crate::format::hf::HfDir;
use crate::format::tokens::stop_ids;

/// Token ids listed when tokenizers differ.
const SHOWN_DIFFS: usize = 3;

/// Ids compared at most. The largest released vocabularies are ~260k (Gemma 3); a tokenizer.json
/// claiming an id in the billions must not turn this into a billion-step loop.
const MAX_COMPARED_IDS: u64 = 1 << 22;

/// Everything a step is checked for against its parent (bisect's lineage checks, `lint
/// --parent`): tokenizer, template and EOS changes (`check`) and the weight fingerprints
/// (`lineage_weights`). GGUF steps are checked against their HF source by the GGUF checks
/// instead. `prints`: fingerprints lint already computed for [parent, step] (else computed here).
pub fn step_vs_parent(parent: &Checkpoint, step: &Checkpoint, parent_label: &str, prints: [Option<&Fingerprints>; 2]) -> Vec<Finding> {
    let mut out = Vec::new();
    if let (Some(pd), Some(sd)) = (parent.side_dir(), step.side_dir()) {
        let (pc, sc) = (Context::new(pd), Context::new(sd));
        check(&pc, &sc, parent_label, &mut out);
        super::lineage_weights::check_steps(parent, &pc, prints[0], step, &sc, prints[1], parent_label, &mut out);
    }
    out
}

/// A base + adapter: when the adapter directory saved a tokenizer of its own (a Trainer given
/// the tokenizer saves it in every checkpoint; it is what the run is served with), it must be the
/// base's: template, tokens and (with a generation_config.json of its own) stop ids.
pub fn adapter_vs_base(base: &HfDir, adapter: &HfDir) -> Vec<Finding> {
    let mut out = Vec::new();
    let saved = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"].iter().any(|f| adapter.root.join(f).is_file());
    if !saved {
        return out;
    }
    check(&Context::new(base), &Context::new(adapter), "base", &mut out);
    if !adapter.root.join("generation_config.json").is_file() {
        out.retain(|f| f.id != ids::LINEAGE_EOS_CHANGED.as_str());
    }
    out
}

pub fn check(parent: &Context, step: &Context, parent_label: &str, out: &mut Vec<Finding>) {
    match (&parent.template, &step.template) {
        (Some(_), None) => out.push(
            Finding::new(
                ids::LINEAGE_TEMPLATE_DROPPED,
                Severity::Error,
                "tokenizer_config.json",
                format!("the parent step `{parent_label}` has a chat template; this step has none, so chat prompts cannot be formatted"),
            )
            .field("chat_template")
            .hint("save the tokenizer with its chat_template (or copy chat_template.jinja) into this step"),
        ),
        (Some(a), Some(b)) if a.text != b.text => out.push(
            Finding::new(
                ids::LINEAGE_TEMPLATE_CHANGED,
                Severity::Warning,
                step.dir.rel(&b.source),
                format!("the chat template differs from the parent step `{parent_label}`'s"),
            )
            .hint("intended? a changed template changes every prompt the model sees"),
        ),
        _ => {}
    }

    let (ps, _) = stop_ids(&parent.decls);
    let (ss, file) = stop_ids(&step.decls);
    if !ps.is_empty() && ps != ss {
        out.push(
            Finding::new(
                ids::LINEAGE_EOS_CHANGED,
                Severity::Warning,
                file.unwrap_or("generation_config.json"),
                format!("stop ids {ss:?} differ from the parent step `{parent_label}`'s {ps:?}"),
            )
            .field("eos_token_id"),
        );
    }

    if let (Some(pt), Some(st)) = (&parent.tokenizer, &step.tokenizer) {
        let n = pt.id_space.max(st.id_space).min(MAX_COMPARED_IDS) as u32;
        let (mut changed, mut added, mut removed) = (0u64, 0u64, 0u64);
        let mut shown = Vec::new();
        for id in 0..n {
            match (pt.token(id), st.token(id)) {
                (Some(a), Some(b)) if a != b => {
                    changed += 1;
                    if shown.len() < SHOWN_DIFFS {
                        shown.push(format!("{id} {a:?} vs {b:?}"));
                    }
                }
                (None, Some(_)) => added += 1,
                (Some(_), None) => removed += 1,
                _ => {}
            }
        }
        if changed + removed > 0 {
            out.push(
                Finding::new(
                    ids::LINEAGE_TOKENIZER_CHANGED,
                    Severity::Error,
                    "tokenizer.json",
                    format!(
                        "the tokenizer differs from the parent step `{parent_label}`'s: {changed} ids map to other tokens{}, {removed} removed, {added} added — the weights expect the parent's ids",
                        if shown.is_empty() { String::new() } else { format!(" (first: {})", shown.join(", ")) }
                    ),
                )
                .hint("ship the tokenizer the model was trained with"),
            );
        } else if added > 0 {
            out.push(
                Finding::new(
                    ids::LINEAGE_TOKENS_ADDED,
                    Severity::Warning,
                    "tokenizer.json",
                    format!("{added} tokens added since the parent step `{parent_label}`"),
                )
                .hint("new tokens need resized and trained embedding rows (see vocab.* findings)"),
            );
        }
    }
}
