//! Static checks of a GGUF: against itself (layout, special ids inside the vocabulary, an
//! end-of-turn token llama.cpp stops on, a chat template for a chat vocabulary, no double BOS,
//! block count = `blk.N` tensors) and against the HF checkpoint it was converted from (token
//! strings and ids, merges, special ids, EOS vs `generation_config.json`, chat template,
//! pre-tokenizer, and the architecture numbers in `config.json`).
//!
//! These are the conversion faults of the failure catalogue (#2 EOS/EOT, #9 vocab vs embedding,
//! #10 pre-tokenizer, #11 double BOS, #12 rope metadata). Nothing here decodes tensor values or runs
//! the model. Finding ids are stable and documented in `docs/gguf.md`.
//!
//! Files: `adapter` (a GGUF LoRA adapter, alone and against its base), `alone` (the GGUF by
//! itself), `projector` (a VLM's mmproj file beside it), `source` (against the HF checkpoint), `tokenizer` (the
//! GGUF's vocabulary: pre-tokenizer, probe round trip, end-of-generation ids, BOS), `values`
//! (NaN/Inf in tensors and block scales); this file runs them in order.

use super::{Context, Finding, Findings};
use crate::format::gguf::GgufFile;

pub mod adapter;
mod alone;
mod projector;
mod source;
mod tokenizer;
mod values;

pub use alone::{check, integrity, layout_id};
pub use source::{check_source, F32_REL_TOL};
pub use tokenizer::{llama_cpp_eog, split_regexes, GPT2_REGEX, KNOWN_PRE, LLAMA3_REGEX, LLAMA_CPP_EOG_TEXTS, PROBES, QWEN2_REGEX};
pub use values::values;

/// A GGUF LoRA adapter's checks: its file, its pairs, its values, and with `base` (the GGUF it is
/// applied to) the fit of each pair to the weight it adapts.
pub fn run_adapter(adapter: &GgufFile, base: Option<&GgufFile>) -> Vec<Finding> {
    let mut out = Findings::new();
    integrity(adapter, &mut out);
    adapter::check(adapter, &mut out);
    values(adapter, &mut out);
    if let Some(base) = base {
        adapter::check_base(adapter, base, &mut out);
    }
    out.into_vec()
}

/// Runs every GGUF check: against itself, and against `source` when given; repeated findings
/// grouped (`Findings`).
pub fn run(g: &GgufFile, source: Option<&Context>) -> Vec<Finding> {
    if g.header.is_lora_adapter() {
        return run_adapter(g, None);
    }
    let mut out = Findings::new();
    if g.header.is_mmproj() {
        // A projector has no vocabulary, template or language-model shape to check.
        integrity(g, &mut out);
        values(g, &mut out);
        return out.into_vec();
    }
    check(g, source.is_some(), &mut out);
    values(g, &mut out);
    projector::check(g, source, &mut out);
    if let Some(ctx) = source {
        check_source(g, ctx, &mut out);
    }
    out.into_vec()
}
