//! A vision-language model's GGUF and its multimodal projector. `convert_hf_to_gguf.py` writes a
//! VLM as two files: the language model, and with `--mmproj` the vision encoder + projector
//! (`general.architecture = clip`), which llama.cpp, LM Studio and Ollama load from beside it.
//! A release that ships only the first runs text-only; one that ships the projector of another
//! model size fails when the first image is embedded.

use std::path::{Path, PathBuf};

use crate::checks::ids;
use crate::checks::{Context, Finding, Findings, Severity};
use crate::format::gguf::GgufFile;

/// `clip.projector_type` that `convert_hf_to_gguf.py --mmproj` writes for a source `model_type`
/// (gguf-py `VisionProjectorType`); types not listed are not compared.
const PROJECTOR_OF: &[(&str, &str)] = &[
    ("gemma3", "gemma3"),
    ("qwen2_vl", "qwen2vl_merger"),
    ("qwen2_5_vl", "qwen2.5vl_merger"),
    ("qwen3_vl", "qwen3vl_merger"),
    ("mistral3", "pixtral"),
    ("llama4", "llama4"),
    ("idefics3", "idefics3"),
    ("internvl", "internvl"),
];

/// How many directory entries are looked at for a projector (a model folder has a few files;
/// a GGUF in a huge download folder must not make lint read every header in it).
const MAX_ENTRIES: usize = 4096;

/// `mmproj*.gguf` files beside `model` that open as projectors, by name.
fn projectors_beside(model: &Path) -> Vec<(PathBuf, GgufFile)> {
    let Some(dir) = model.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d }) else { return Vec::new() };
    let Ok(rd) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<PathBuf> = rd
        .take(MAX_ENTRIES)
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().to_ascii_lowercase().contains("mmproj")))
        .filter(|p| p.as_path() != model)
        .collect();
    names.sort();
    names.into_iter().filter_map(|p| GgufFile::open(&p).ok().filter(|g| g.header.is_mmproj()).map(|g| (p, g))).collect()
}

/// The projector checks of a language-model GGUF `g` converted from a vision-language `source`
/// (config.json has `vision_config`): a projector must be beside it, and one of those beside it
/// must fit — the projector type the converter writes for the source's `model_type`
/// (`PROJECTOR_OF`, where known) and embeddings of the model's width (`clip.vision.projection_dim`
/// = `{arch}.embedding_length`). Without such a source nothing is checked: a folder of GGUFs may
/// hold one model's projector beside other, text-only models, and a Gemma 3 1B GGUF looks like a
/// 4B one's language model.
pub fn check(g: &GgufFile, source: Option<&Context>, out: &mut Findings) {
    let Some(ctx) = source else { return };
    let vlm = ctx.dir.config.as_ref().is_some_and(|c| crate::format::config::has_vision_config(&c.value));
    if !vlm || g.header.is_mmproj() || g.header.is_lora_adapter() {
        return;
    }
    let file = g.file_name();
    let found = projectors_beside(&g.path);
    if found.is_empty() {
        let what = Some(ctx.config.architectures.join(", ")).filter(|a| !a.is_empty()).unwrap_or_else(|| "a vision-language model".into());
        out.push(
            Finding::new(
                ids::GGUF_MMPROJ_MISSING,
                Severity::Warning,
                &file,
                format!(
                    "the source is a vision-language model ({what}: config.json has `vision_config`), but no multimodal projector \
                     (`mmproj*.gguf`, general.architecture `clip`) is beside `{file}`: llama.cpp runs it text-only and cannot take images"
                ),
            )
            .field("vision_config")
            .hint("convert the projector too (`convert_hf_to_gguf.py SOURCE --mmproj`) and ship the mmproj-*.gguf beside the model GGUF; ignore this if the release is text-only on purpose"),
        );
        return;
    }
    let meta = g.header.arch_meta();
    let arch = meta.architecture.clone().unwrap_or_else(|| "?".into());
    let expected_type = ctx.config.model_type.as_deref().and_then(|t| PROJECTOR_OF.iter().find(|(m, _)| *m == t)).map(|(_, p)| *p);
    // Why each projector does not fit (None: it fits).
    let misfits: Vec<Option<String>> = found
        .iter()
        .map(|(p, proj)| {
            let name = crate::format::hf::file_name(p);
            let h = &proj.header;
            let kind = h.get_str("clip.projector_type").or_else(|| h.get_str("clip.vision.projector_type"));
            if let (Some(want), Some(kind)) = (expected_type, kind) {
                if kind != want {
                    return Some(format!(
                        "`{name}` is a `{kind}` projector, {} needs `{want}`",
                        ctx.config.model_type.as_deref().unwrap_or("?")
                    ));
                }
            }
            match (h.get_u64("clip.vision.projection_dim"), meta.embedding_length) {
                (Some(dim), Some(width)) if dim != width => {
                    Some(format!("`{name}` projects images to {dim}-wide embeddings, but {arch}.embedding_length is {width}"))
                }
                _ => None,
            }
        })
        .collect();
    if misfits.iter().any(Option::is_none) {
        return;
    }
    let shown: Vec<String> = misfits.into_iter().flatten().collect();
    out.push(
        Finding::new(
            ids::GGUF_MMPROJ_MISMATCH,
            Severity::Error,
            &file,
            format!(
                "no projector beside it fits this model ({}): it belongs to another model or size, and llama.cpp fails on the first image",
                shown.join("; ")
            ),
        )
        .field("clip.vision.projection_dim")
        .hint("ship the mmproj converted from the same checkpoint (`convert_hf_to_gguf.py SOURCE --mmproj`)"),
    );
}
