//! A GGUF LoRA adapter (`convert_lora_to_gguf.py`: `general.type = adapter`): every
//! `blk.N.<proj>.weight.lora_a` has its `lora_b` and one rank, `adapter.lora.alpha` is a number,
//! and against the GGUF base it is applied to (`BASE.gguf+ADAPTER.gguf`), each pair fits the
//! base weight it adapts. Nothing here decodes a value.

use super::{Finding, Findings};
use crate::checks::{ids, Severity};
use crate::format::gguf::GgufFile;

/// The adapter alone: pairs, ranks, alpha.
pub fn check(g: &GgufFile, out: &mut Findings) {
    let file = g.file_name();
    let h = &g.header;
    let invalid = |field: &str, message: String| {
        Finding::new(ids::ADAPTER_INVALID, Severity::Error, &file, message)
            .field(field.to_string())
            .hint("convert the PEFT adapter again with llama.cpp's convert_lora_to_gguf.py")
    };
    if !h.lora_alpha().is_some_and(f64::is_finite) {
        out.push(invalid(
            "adapter.lora.alpha",
            "`adapter.lora.alpha` is missing or not a finite number: the adapter's scale is unknown".into(),
        ));
    }
    let mut pairs = 0;
    for t in &h.tensors {
        let Some(w) = t.name.strip_suffix(".lora_a") else {
            if let Some(w) = t.name.strip_suffix(".lora_b") {
                if h.tensor(&format!("{w}.lora_a")).is_none() {
                    out.push(invalid(&t.name, format!("`{}` has no `{w}.lora_a`", t.name)));
                }
            }
            continue;
        };
        let Some(b) = h.tensor(&format!("{w}.lora_b")) else {
            out.push(invalid(&t.name, format!("`{}` has no `{w}.lora_b`", t.name)));
            continue;
        };
        pairs += 1;
        // ggml dims: lora_a [in, r], lora_b [r, out].
        let (ra, rb) = (t.dims.get(1).copied(), b.dims.first().copied());
        if t.dims.len() != 2 || b.dims.len() != 2 || ra != rb {
            out.push(
                Finding::new(
                    ids::ADAPTER_RANK_MISMATCH,
                    Severity::Error,
                    &file,
                    format!("`{}` {:?} and `{w}.lora_b` {:?} (ggml dims) do not share one rank", t.name, t.dims, b.dims),
                )
                .field(t.name.clone())
                .hint("convert the PEFT adapter again with llama.cpp's convert_lora_to_gguf.py"),
            );
        }
    }
    if pairs == 0 {
        out.push(
            Finding::new(ids::ADAPTER_NO_MODULES, Severity::Error, &file, "the adapter holds no lora_a / lora_b pair".to_string())
                .hint("convert the PEFT adapter again; check its target_modules matched the model's projections"),
        );
    }
}

/// The adapter against the base it is applied to: every adapted weight exists there, with the
/// input and output sizes the pair expects.
pub fn check_base(adapter: &GgufFile, base: &GgufFile, out: &mut Findings) {
    let file = adapter.file_name();
    for t in &adapter.header.tensors {
        let Some(w) = t.name.strip_suffix(".lora_a") else { continue };
        let Some(b) = adapter.header.tensor(&format!("{w}.lora_b")) else { continue };
        let fits = match (base.header.tensor(w), t.dims.first(), b.dims.get(1)) {
            (Some(bw), Some(&inp), Some(&outp)) => bw.dims.len() == 2 && bw.dims[0] == inp && bw.dims[1] == outp,
            _ => false,
        };
        if !fits {
            let base_dims = base.header.tensor(w).map(|bw| format!("{:?}", bw.dims)).unwrap_or_else(|| "missing".into());
            out.push(
                Finding::new(
                    ids::MERGE_ADAPTER_SHAPE,
                    Severity::Error,
                    &file,
                    format!(
                        "`{w}`: lora_a {:?} / lora_b {:?} (ggml dims) do not fit the base's `{w}` ({base_dims}): the adapter was trained on another model",
                        t.dims, b.dims
                    ),
                )
                .field(t.name.clone())
                .hint("apply the adapter to the base it was trained on (its general.base_model.* metadata names it)"),
            );
        }
    }
}
