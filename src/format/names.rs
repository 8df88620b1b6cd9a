//! Tensor names across layouts: the names the decoder, LoRA, merge-check and the lineage
//! fingerprints speak (a text model's `model.layers.N.…`, `lm_head.weight`), and the other
//! layouts that store the same tensors. Used by `hf` (lookups by either name) and `safetensors`.

/// Where vision-language checkpoints keep their language model, and the text model's name for
/// each: (stored prefix, canonical prefix). Gemma 3, Mistral 3 and LLaVA repositories store
/// `language_model.model.*` (+ `language_model.lm_head.weight`); transformers 4.52+ saves
/// `model.language_model.*` (Qwen2-VL, Qwen2.5-VL and the others) with `lm_head.weight` at the top.
/// The vision tower and projector (`vision_tower.*`, `model.visual.*`, `multi_modal_projector.*`)
/// keep their names: the decoder never asks for them, lint still scans them.
const TEXT_TOWER_PREFIXES: [(&str, &str); 3] =
    [("language_model.model.", "model."), ("language_model.lm_head.", "lm_head."), ("model.language_model.", "model.")];

/// The name a text-only checkpoint gives tensor `name`: a VLM's language-model prefix
/// (`TEXT_TOWER_PREFIXES`) replaced, every other name unchanged. The decoder, merge-check, LoRA
/// and the lineage fingerprints all speak canonical names, so a VLM and its text-only export, or
/// two transformers versions' layouts of one VLM, line up tensor by tensor.
pub fn canonical_name(name: &str) -> std::borrow::Cow<'_, str> {
    for (stored, canonical) in TEXT_TOWER_PREFIXES {
        if let Some(rest) = name.strip_prefix(stored) {
            return format!("{canonical}{rest}").into();
        }
    }
    name.into()
}

#[cfg(test)]
mod tests {
    use super::canonical_name;

    #[test]
    fn vlm_language_model_names_are_canonical() {
        for (stored, canonical) in [
            ("language_model.model.layers.3.mlp.up_proj.weight", "model.layers.3.mlp.up_proj.weight"),
            ("language_model.lm_head.weight", "lm_head.weight"),
            ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
            ("model.language_model.layers.0.self_attn.q_proj.qweight", "model.layers.0.self_attn.q_proj.qweight"),
            // Text models, vision towers and adapters keep their names.
            ("model.layers.0.mlp.up_proj.weight", "model.layers.0.mlp.up_proj.weight"),
            ("lm_head.weight", "lm_head.weight"),
            ("vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight", "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"),
            ("model.visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"),
            ("multi_modal_projector.mm_input_projection_weight", "multi_modal_projector.mm_input_projection_weight"),
        ] {
            assert_eq!(canonical_name(stored), canonical, "{stored}");
        }
    }
}
