//! File integrity: side files parse, headers parse, offsets tile each file exactly, every tensor
//! the shard index names exists in its shard and every shard file is present.

use std::collections::BTreeMap;

use super::{Context, Finding, Findings, Severity};
use crate::checks::ids;
use crate::error::Error;
use crate::format::hf::{self, file_name};
use crate::format::safetensors::LayoutProblem;

/// The finding id of a safetensors layout problem.
fn layout_id(p: &LayoutProblem) -> ids::FindingId {
    match p {
        LayoutProblem::Duplicate { .. } => ids::INTEGRITY_DUPLICATE_TENSOR,
        LayoutProblem::BadEntry { .. } => ids::INTEGRITY_BAD_ENTRY,
        LayoutProblem::Overflow { .. } => ids::INTEGRITY_SHAPE_OVERFLOW,
        LayoutProblem::SizeMismatch { .. } => ids::INTEGRITY_SIZE_MISMATCH,
        LayoutProblem::OutOfBounds { .. } => ids::INTEGRITY_OUT_OF_BOUNDS,
        LayoutProblem::Overlap { .. } => ids::INTEGRITY_OVERLAP,
        LayoutProblem::Gap { .. } => ids::INTEGRITY_GAP,
    }
}

pub fn check(ctx: &Context, out: &mut Findings) {
    let dir = ctx.dir;
    for e in &dir.load_problems {
        let (file, detail) = match e {
            Error::Json { path, detail } => (dir.rel(path), detail.clone()),
            Error::Field { path, field, detail } => (dir.rel(path), format!("`{field}`: {detail}")),
            Error::Io { path, source } => (dir.rel(path), source.to_string()),
            other => (String::new(), other.to_string()),
        };
        out.push(
            Finding::new(ids::FILES_UNREADABLE, Severity::Error, file, format!("cannot be parsed: {detail}"))
                .hint("restore the file from the tool that wrote it (save_pretrained) or fix the JSON by hand"),
        );
    }
    if !dir.pickles.is_empty() {
        let names: Vec<String> = dir.pickles.iter().map(|p| file_name(p)).collect();
        out.push(
            Finding::new(
                ids::FILES_PICKLE_IGNORED,
                Severity::Info,
                names.join(", "),
                "pickle files present; they were not loaded (unpickling can run code)",
            )
            .hint("delete them if the safetensors weights are complete; loaders may prefer them otherwise"),
        );
    }
    // An unparseable config.json is `files.unreadable` above, not missing.
    if dir.config.is_none() && !dir.is_adapter() && !dir.root.join(hf::CONFIG).exists() {
        out.push(
            Finding::new(ids::FILES_MISSING_CONFIG, Severity::Error, hf::CONFIG, "no config.json: the architecture is unknown")
                .hint("save the model with `save_pretrained`, which writes config.json beside the weights"),
        );
    }
    if dir.tokenizer_json.is_none() && !dir.is_adapter() {
        out.push(
            Finding::new(
                ids::FILES_MISSING_TOKENIZER,
                Severity::Warning,
                hf::TOKENIZER_JSON,
                "no tokenizer.json: token ids cannot be checked against the weights",
            )
            .hint("save the tokenizer with the model: `tokenizer.save_pretrained(out_dir)`"),
        );
    }
    if let Some(e) = &ctx.tokenizer_error {
        out.push(
            Finding::new(ids::TOKENIZER_UNREADABLE, Severity::Error, hf::TOKENIZER_JSON, e.to_string())
                .hint("re-save the tokenizer with a current `tokenizers`/transformers"),
        );
    }

    for shard in &dir.shards {
        let f = match &shard.file {
            Ok(f) => f,
            Err(e) => {
                out.push(
                    Finding::new(ids::INTEGRITY_HEADER, Severity::Error, &shard.name, e.to_string())
                        .field("header")
                        .hint("the file is corrupt or truncated: copy or download it again"),
                );
                continue;
            }
        };
        let finding = |p: &LayoutProblem| {
            Finding::new(layout_id(p), Severity::Error, &shard.name, p.message())
                .field(p.field())
                .hint("the file is corrupt, truncated or was written by a buggy tool: re-save it with `save_pretrained`")
        };
        for p in &f.header.problems {
            out.push(finding(p));
        }
        // The parser counted these without keeping them.
        for (p, n) in &f.header.unlisted {
            out.count_more(&finding(p), *n);
        }
    }

    let Some(index) = &dir.index else { return };
    let index_name = file_name(&index.path);
    for missing in &dir.missing_shards {
        let n = index.weight_map.values().filter(|s| *s == missing).count();
        out.push(
            Finding::new(
                ids::INTEGRITY_MISSING_SHARD,
                Severity::Error,
                missing.clone(),
                format!("shard file is missing; {index_name} maps {n} tensors to it"),
            )
            .hint("copy the missing shard (an interrupted download or upload?)"),
        );
    }
    let shards: BTreeMap<&str, _> = dir.shards.iter().filter_map(|s| Some((s.name.as_str(), s.file.as_ref().ok()?))).collect();
    let mut total = 0u64;
    for (tensor, shard) in &index.weight_map {
        let Some(f) = shards.get(shard.as_str()) else { continue };
        match f.get(tensor) {
            Some(t) => total += t.end - t.start,
            None => out.push(
                Finding::new(
                    ids::INTEGRITY_INDEX_MISSING_TENSOR,
                    Severity::Error,
                    &index_name,
                    format!("the index maps tensor `{tensor}` to `{shard}`, which does not contain it"),
                )
                .field(format!("weight_map.{tensor}"))
                .hint("the index and the shards come from different saves: re-save the checkpoint"),
            ),
        }
    }
    for (name, f) in &shards {
        for t in &f.header.tensors {
            if index.weight_map.get(&t.name).map(String::as_str) != Some(*name) {
                out.push(
                    Finding::new(
                        ids::INTEGRITY_INDEX_UNLISTED_TENSOR,
                        Severity::Warning,
                        *name,
                        format!("tensor `{}` is in this shard but the index does not map it here; loaders will ignore it", t.name),
                    )
                    .field(t.name.clone())
                    .hint("re-save the checkpoint so the index matches the shards"),
                );
            }
        }
    }
    if let Some(declared) = index.total_size {
        if dir.missing_shards.is_empty() && declared != total {
            out.push(
                Finding::new(
                    ids::INTEGRITY_INDEX_TOTAL_SIZE,
                    Severity::Warning,
                    &index_name,
                    format!("metadata.total_size is {declared} bytes but the indexed tensors hold {total}"),
                )
                .field("metadata.total_size")
                .hint("usually harmless, but a sign the index was edited by hand or shards were swapped"),
            );
        }
    }
}
