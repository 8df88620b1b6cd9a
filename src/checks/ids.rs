//! The registry of finding ids. A `Finding` can only be made with a `FindingId` from here, so
//! every id a check emits is listed once; a test holds this list equal to the ids documented in
//! docs/lint.md, docs/gguf.md and docs/merge-check.md (every id documented, no doc entry without
//! an id).
//!
//! Ids are stable (`area.what`): tests, manifests (`cause_id`) and users' CI refer to them.

use serde::Serialize;

/// A registered finding id; made only by the `ids!` list below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct FindingId(&'static str);

impl FindingId {
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for FindingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

macro_rules! ids {
    ($($name:ident => $id:literal,)*) => {
        $(pub const $name: FindingId = FindingId($id);)*
        /// Every registered id.
        pub const ALL: &[FindingId] = &[$($name),*];
    };
}

ids! {
    ADAPTER_INVALID => "adapter.invalid",
    ADAPTER_NO_MODULES => "adapter.no-modules",
    ADAPTER_RANK_MISMATCH => "adapter.rank-mismatch",
    ADAPTER_UNSUPPORTED => "adapter.unsupported",
    CONFIG_UNSUPPORTED => "config.unsupported",
    FILES_MISSING_CONFIG => "files.missing-config",
    FILES_MISSING_TOKENIZER => "files.missing-tokenizer",
    FILES_PICKLE_IGNORED => "files.pickle-ignored",
    FILES_UNREADABLE => "files.unreadable",
    GGUF_ADDED_TOKEN_NOT_SPECIAL => "gguf.added-token-not-special",
    GGUF_ARCHITECTURE_DIFFERS => "gguf.architecture-differs",
    GGUF_ARCHITECTURE_NOT_RUN => "gguf.architecture-not-run",
    GGUF_BLOCK_COUNT_MISMATCH => "gguf.block-count-mismatch",
    GGUF_BOS_DIFFERS => "gguf.bos-differs",
    GGUF_BYTE_FALLBACK_DIFFERS => "gguf.byte-fallback-differs",
    GGUF_BYTE_FALLBACK_INCOMPLETE => "gguf.byte-fallback-incomplete",
    GGUF_CONTEXT_LENGTH_DIFFERS => "gguf.context-length-differs",
    GGUF_DOUBLE_BOS => "gguf.double-bos",
    GGUF_EOS_DIFFERS => "gguf.eos-differs",
    GGUF_EXPERTS_DIFFER => "gguf.experts-differ",
    GGUF_EXPERTS_INCONSISTENT => "gguf.experts-inconsistent",
    GGUF_HEADS_DIFFER => "gguf.heads-differ",
    GGUF_LEADING_SPACE_DIFFERS => "gguf.leading-space-differs",
    GGUF_MERGES_DIFFER => "gguf.merges-differ",
    GGUF_MMPROJ_MISMATCH => "gguf.mmproj-mismatch",
    GGUF_MMPROJ_MISSING => "gguf.mmproj-missing",
    GGUF_METADATA_NOT_FINITE => "gguf.metadata-not-finite",
    GGUF_MOE_NORM_DIFFERS => "gguf.moe-norm-differs",
    GGUF_NO_ARCHITECTURE => "gguf.no-architecture",
    GGUF_NO_EOS => "gguf.no-eos",
    GGUF_NO_TOKENIZER => "gguf.no-tokenizer",
    GGUF_OUTPUT_REQUIRED => "gguf.output-required",
    GGUF_PAD_DIFFERS => "gguf.pad-differs",
    GGUF_PRE_MISSING => "gguf.pre-missing",
    GGUF_PRE_TOKENIZER_DIFFERS => "gguf.pre-tokenizer-differs",
    GGUF_PRE_UNVERIFIED => "gguf.pre-unverified",
    GGUF_RMS_EPS_DIFFERS => "gguf.rms-eps-differs",
    GGUF_ROPE_BASE_DIFFERS => "gguf.rope-base-differs",
    GGUF_MULTIPLIER_DIFFERS => "gguf.multiplier-differs",
    GGUF_ROPE_SCALING_DIFFERS => "gguf.rope-scaling-differs",
    GGUF_LONGROPE_CONTEXT => "gguf.longrope-context",
    GGUF_SCORES_DIFFER => "gguf.scores-differ",
    GGUF_SCORES_MISSING => "gguf.scores-missing",
    GGUF_SHAPE_DIFFERS => "gguf.shape-differs",
    GGUF_SLIDING_LAYERS_DIFFER => "gguf.sliding-layers-differ",
    GGUF_SOFTCAP_DIFFERS => "gguf.softcap-differs",
    GGUF_SOURCE_UNREADABLE => "gguf.source-unreadable",
    GGUF_SPACE_PREFIX_DIFFERS => "gguf.space-prefix-differs",
    GGUF_SPECIAL_OUT_OF_RANGE => "gguf.special-out-of-range",
    GGUF_STOP_NOT_EOG => "gguf.stop-not-eog",
    GGUF_TEMPLATE_DIFFERS => "gguf.template-differs",
    GGUF_TEMPLATE_MISSING => "gguf.template-missing",
    GGUF_TEMPLATE_RENDER_FAILED => "gguf.template-render-failed",
    GGUF_TENSOR_MISALIGNED => "gguf.tensor-misaligned",
    GGUF_TENSOR_NAME_TOO_LONG => "gguf.tensor-name-too-long",
    GGUF_TENSOR_NOT_PACKED => "gguf.tensor-not-packed",
    GGUF_TENSOR_OUT_OF_BOUNDS => "gguf.tensor-out-of-bounds",
    GGUF_TENSOR_OVERLAP => "gguf.tensor-overlap",
    GGUF_TOKEN_ARRAYS_MISMATCH => "gguf.token-arrays-mismatch",
    GGUF_TOKENIZATION_DIFFERS => "gguf.tokenization-differs",
    GGUF_TOKENS_DIFFER => "gguf.tokens-differ",
    GGUF_TURN_END_NOT_EOG => "gguf.turn-end-not-eog",
    GGUF_VOCAB_EXCEEDS_EMBEDDING => "gguf.vocab-exceeds-embedding",
    INTEGRITY_BAD_ENTRY => "integrity.bad-entry",
    INTEGRITY_DUPLICATE_TENSOR => "integrity.duplicate-tensor",
    INTEGRITY_GAP => "integrity.gap",
    INTEGRITY_HEADER => "integrity.header",
    INTEGRITY_INDEX_MISSING_TENSOR => "integrity.index-missing-tensor",
    INTEGRITY_INDEX_TOTAL_SIZE => "integrity.index-total-size",
    INTEGRITY_INDEX_UNLISTED_TENSOR => "integrity.index-unlisted-tensor",
    INTEGRITY_MISSING_SHARD => "integrity.missing-shard",
    INTEGRITY_OUT_OF_BOUNDS => "integrity.out-of-bounds",
    INTEGRITY_OVERLAP => "integrity.overlap",
    INTEGRITY_SHAPE_OVERFLOW => "integrity.shape-overflow",
    INTEGRITY_SIZE_MISMATCH => "integrity.size-mismatch",
    LINEAGE_EOS_CHANGED => "lineage.eos-changed",
    LINEAGE_FROZEN_LAYERS => "lineage.frozen-layers",
    LINEAGE_HEAD_TIED => "lineage.head-tied",
    LINEAGE_HEAD_UNTIED => "lineage.head-untied",
    LINEAGE_LAYER_DUPLICATED => "lineage.layer-duplicated",
    LINEAGE_LAYERS_SWAPPED => "lineage.layers-swapped",
    LINEAGE_QK_PERMUTED => "lineage.qk-permuted",
    LINEAGE_TEMPLATE_CHANGED => "lineage.template-changed",
    LINEAGE_TEMPLATE_DROPPED => "lineage.template-dropped",
    LINEAGE_TENSOR_UNCHANGED => "lineage.tensor-unchanged",
    LINEAGE_TOKENIZER_CHANGED => "lineage.tokenizer-changed",
    LINEAGE_TOKENS_ADDED => "lineage.tokens-added",
    LINEAGE_TRANSPOSED => "lineage.transposed",
    MERGE_ADAPTER_SHAPE => "merge.adapter-shape",
    MERGE_ADAPTER_NOT_FINITE => "merge.adapter-not-finite",
    MERGE_EXPERT_DELTA_DROPPED => "merge.expert-delta-dropped",
    MERGE_MISMATCH => "merge.mismatch",
    MERGE_MODULE_MISSING => "merge.module-missing",
    MERGE_MODULE_NOT_IN_BASE => "merge.module-not-in-base",
    MERGE_MODULES_TO_SAVE_NOT_COPIED => "merge.modules-to-save-not-copied",
    MERGE_NEW_TENSOR => "merge.new-tensor",
    MERGE_NOT_MERGED => "merge.not-merged",
    MERGE_OVERFLOW => "merge.overflow",
    MERGE_QUANTIZED_BASE_ORIGINAL => "merge.quantized-base-original",
    MERGE_RESIZED_EMBEDDINGS => "merge.resized-embeddings",
    MERGE_SHAPE_CHANGED => "merge.shape-changed",
    MERGE_SHAPE_MISMATCH => "merge.shape-mismatch",
    MERGE_TENSOR_DROPPED => "merge.tensor-dropped",
    MERGE_TRANSPOSED => "merge.transposed",
    MERGE_UNMERGED_LORA_TENSORS => "merge.unmerged-lora-tensors",
    MERGE_UNTARGETED_CHANGE => "merge.untargeted-change",
    MERGE_WRONG_MODULE => "merge.wrong-module",
    MERGE_WRONG_SCALE => "merge.wrong-scale",
    QUANT_CONFIG_MISMATCH => "quant.config-mismatch",
    QUANT_FP8_SATURATED => "quant.fp8-saturated",
    QUANT_FP8_UNSCALED => "quant.fp8-unscaled",
    QUANT_GIDX_OUT_OF_RANGE => "quant.gidx-out-of-range",
    QUANT_GIDX_UNORDERED => "quant.gidx-unordered",
    QUANT_GPTQ_ZERO_OVERFLOW => "quant.gptq-zero-overflow",
    QUANT_SCALE_IMPLAUSIBLE => "quant.scale-implausible",
    SPECIAL_BOS_MISMATCH => "special.bos-mismatch",
    SPECIAL_EOS_MISMATCH => "special.eos-mismatch",
    SPECIAL_INVALID_ID => "special.invalid-id",
    SPECIAL_NO_EOS => "special.no-eos",
    SPECIAL_PAD_IS_EOS => "special.pad-is-eos",
    SPECIAL_PAD_MISMATCH => "special.pad-mismatch",
    SPECIAL_TOO_MANY_IDS => "special.too-many-ids",
    SPECIAL_UNKNOWN_TOKEN => "special.unknown-token",
    TEMPLATE_DOUBLE_BOS => "template.double-bos",
    TEMPLATE_DROPS_ASSISTANT => "template.drops-assistant",
    TEMPLATE_EOT_NOT_EOS => "template.eot-not-eos",
    TEMPLATE_MISSING => "template.missing",
    TEMPLATE_NO_TURN_END_TOKEN => "template.no-turn-end-token",
    TEMPLATE_RENDER_FAILED => "template.render-failed",
    TEMPLATE_SPECIAL_SPLIT => "template.special-split",
    TOKENIZER_UNREADABLE => "tokenizer.unreadable",
    VALUES_ALL_ZERO => "values.all-zero",
    VALUES_F16_SATURATED => "values.f16-saturated",
    VALUES_HUGE => "values.huge",
    VALUES_INF => "values.inf",
    VALUES_NAN => "values.nan",
    VOCAB_ADDED_TOKEN_OUT_OF_RANGE => "vocab.added-token-out-of-range",
    VOCAB_CONFIG_MISMATCH => "vocab.config-mismatch",
    VOCAB_EMBED_HEAD_MISMATCH => "vocab.embed-head-mismatch",
    VOCAB_ROWS_FAR_BEYOND_TOKENIZER => "vocab.rows-far-beyond-tokenizer",
    VOCAB_SPECIAL_ID_OUT_OF_RANGE => "vocab.special-id-out-of-range",
    VOCAB_TOKENIZER_EXCEEDS_ROWS => "vocab.tokenizer-exceeds-rows",
    WEIGHTS_EXPERT_COUNT_MISMATCH => "weights.expert-count-mismatch",
    WEIGHTS_LAYERS_MISSING => "weights.layers-missing",
    WEIGHTS_LM_HEAD_MISSING => "weights.lm-head-missing",
    WEIGHTS_MISSING_TENSOR => "weights.missing-tensor",
    WEIGHTS_NOT_FLOAT => "weights.not-float",
    WEIGHTS_SHAPE_MISMATCH => "weights.shape-mismatch",
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// Ids in the first column of the docs' finding tables (`| \`area.what\`` or `\`a\`, \`b\``).
    fn documented() -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for doc in ["docs/lint.md", "docs/gguf.md", "docs/merge-check.md"] {
            let text = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(doc)).unwrap();
            for line in text.lines().filter(|l| l.starts_with("| `")) {
                let first = line.split('|').nth(1).unwrap_or("");
                for part in first.split('`').skip(1).step_by(2) {
                    if part.contains('.') && !part.contains(' ') {
                        out.insert(part.to_string());
                    }
                }
            }
        }
        out
    }

    /// Every registered id is documented, and every documented id is registered.
    #[test]
    fn registry_matches_the_docs() {
        let registered: BTreeSet<String> = super::ALL.iter().map(|i| i.as_str().to_string()).collect();
        let documented = documented();
        let undocumented: Vec<_> = registered.difference(&documented).collect();
        let unregistered: Vec<_> = documented.difference(&registered).collect();
        assert!(undocumented.is_empty(), "ids without a row in docs/lint.md, docs/gguf.md or docs/merge-check.md: {undocumented:?}");
        assert!(unregistered.is_empty(), "documented ids no check emits (not in checks/ids.rs): {unregistered:?}");
    }

    #[test]
    fn ids_are_unique_and_well_formed() {
        let all: BTreeSet<_> = super::ALL.iter().collect();
        assert_eq!(all.len(), super::ALL.len(), "an id is registered twice");
        for id in super::ALL {
            let (area, what) = id.as_str().split_once('.').unwrap();
            assert!(
                !area.is_empty()
                    && !what.is_empty()
                    && id.as_str().chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-'),
                "{id}"
            );
        }
    }
}
