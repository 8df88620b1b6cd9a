//! Splice to blame: which of a step's tensors make it differ from its parent.
//!
//! A hybrid is the parent with one group of the step's tensors swapped in
//! (`model::load_spliced`). Each hybrid is scored against the parent on the same teacher-forced
//! answers as the step itself; a group's share is KL(parent‖hybrid) / KL(parent‖step). The
//! search is in levels, each one forward pass per hybrid: every layer (plus embeddings, head and
//! final norm) alone, then every module of the guiltiest layer, then — when several modules
//! share the blame — one hybrid of the smallest set of them whose shares add up to most of the
//! KL, to measure that set together. Passes: layers + 3 + modules + 1 (a 32-layer Llama: ~45);
//! `budget` caps them by grouping contiguous layers first.
//!
//! For a quantized step, the first level is also the quantization sensitivity table: each
//! row is the KL when only that layer is quantized.

use std::collections::BTreeMap;

use candle_core::Device;
use serde::Serialize;

use super::prompts::Prompt;
use super::run::{compare_all, CompareOptions, NoProgress, Pair, Progress, ReferenceAnswers};
use super::variant::Variant;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::model;
use crate::settings::RunSettings;

/// Hybrids scored in one lockstep pass with the parent (each holds a model's worth of tile
/// buffers; with dense weights, a copy).
const HYBRIDS_PER_PASS: usize = 8;
/// The culprit set is the fewest modules whose shares add up to this much of the KL.
const CULPRIT_SHARE: f64 = 0.8;
/// Below this KL(parent‖step) there is nothing to blame.
const MIN_KL: f64 = 1e-9;

/// One checkpoint as blame needs it: opened (to splice its tensors) and loaded (to run).
pub struct Side<'a> {
    pub checkpoint: &'a Checkpoint,
    pub variant: &'a Variant,
}

pub struct BlameInputs<'a> {
    /// The variant whose answers `answers` are (the reference, or the parent itself).
    pub answered_by: &'a Variant,
    pub answers: &'a ReferenceAnswers,
    pub parent: Side<'a>,
    pub step: Side<'a>,
    pub prompts: &'a [Prompt],
    pub opts: &'a CompareOptions,
    pub settings: &'a RunSettings,
    pub device: &'a Device,
    /// At most this many hybrid forward passes (at least 2).
    pub budget: usize,
}

/// One group of tensors swapped in alone.
#[derive(Debug, Clone, Serialize)]
pub struct BlameRow {
    /// `layer 3`, `layers 0-3`, `embeddings`, `head`, `final norm`, or a module
    /// (`model.layers.1.mlp.down_proj`).
    pub group: String,
    pub tensors: Vec<String>,
    /// Mean KL(parent‖hybrid) per answer token; None when the hybrid could not run.
    pub kl_mean: Option<f64>,
    /// `kl_mean` / the step's own KL.
    pub share: Option<f64>,
    /// Why the hybrid could not run.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Blame {
    pub parent: String,
    pub step: String,
    /// Mean KL(parent‖step) on the same tokens.
    pub kl_mean: f64,
    pub scored_tokens: usize,
    /// Level 1: each layer (or block of layers) and each non-layer tensor group alone.
    pub groups: Vec<BlameRow>,
    /// The guiltiest level-1 group, refined: its layers (a block) or its modules (a layer).
    pub refined: Option<String>,
    pub modules: Vec<BlameRow>,
    /// The smallest set of tensors found that reproduces most of the KL, measured together.
    pub culprit: Option<BlameRow>,
    pub forward_passes: usize,
}

impl Blame {
    /// One line: the culprit and its share, or why there is none.
    pub fn headline(&self) -> String {
        match &self.culprit {
            Some(c) => {
                let pct = c.share.map(|s| format!("{:.0} %", 100.0 * s)).unwrap_or_else(|| "?".into());
                let verb = if c.tensors.len() > 1 || c.group.contains(' ') { "together account" } else { "alone accounts" };
                format!("{} {verb} for {pct} of the KL (KL {:.4} of {:.4})", c.group, c.kl_mean.unwrap_or(f64::NAN), self.kl_mean)
            }
            None => "no group of tensors accounts for the KL on its own: the difference is spread over the model, or lies outside the weights (metadata, tokenizer)".into(),
        }
    }
}

/// The level-1 group of a tensor (HF name).
fn group_of(name: &str) -> Group {
    if let Some(i) = layer_of(name) {
        return Group::Layer(i);
    }
    let label = if name.contains("embed_tokens") {
        "embeddings"
    } else if name.starts_with("lm_head") {
        "head"
    } else if name.ends_with("norm.weight") || name.ends_with("norm.bias") {
        "final norm"
    } else {
        "other"
    };
    Group::Named(label)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Group {
    Layer(usize),
    Named(&'static str),
}

/// `i` of a `….layers.{i}.…` name.
fn layer_of(name: &str) -> Option<usize> {
    let rest = &name[name.find("layers.")? + "layers.".len()..];
    rest[..rest.find('.')?].parse().ok()
}

/// A module: the name without `.weight` / `.bias`.
fn module_of(name: &str) -> &str {
    name.strip_suffix(".weight").or_else(|| name.strip_suffix(".bias")).unwrap_or(name)
}

/// Groups named tensors by `key`, in first-seen order of the keys' sort.
fn grouped<K: Ord>(names: &[String], key: impl Fn(&str) -> K) -> BTreeMap<K, Vec<String>> {
    let mut m: BTreeMap<K, Vec<String>> = BTreeMap::new();
    for n in names {
        m.entry(key(n)).or_default().push(n.clone());
    }
    m
}

/// Contiguous runs of layers, at most `blocks` of them.
fn layer_blocks(layers: &BTreeMap<usize, Vec<String>>, blocks: usize) -> Vec<(String, Vec<String>)> {
    let ids: Vec<usize> = layers.keys().copied().collect();
    let per = ids.len().div_ceil(blocks.max(1)).max(1);
    ids.chunks(per)
        .map(|c| {
            let label = if c.len() == 1 { format!("layer {}", c[0]) } else { format!("layers {}-{}", c[0], c[c.len() - 1]) };
            (label, c.iter().flat_map(|i| layers[i].iter().cloned()).collect())
        })
        .collect()
}

pub fn blame(b: &BlameInputs, progress: &dyn Progress) -> Result<Blame> {
    let (ps, ss) = (&b.parent.variant.model.spec, &b.step.variant.model.spec);
    if ps.layers != ss.layers || ps.hidden != ss.hidden || b.parent.variant.model.embed_rows() != b.step.variant.model.embed_rows() {
        return Err(Error::NotACheckpoint {
            path: b.step.variant.path.clone(),
            reason: format!(
                "blame swaps tensors between same-shaped models; this step has {} layers, hidden {}, {} embedding rows and its parent `{}` {}, {}, {}",
                ss.layers,
                ss.hidden,
                b.step.variant.model.embed_rows(),
                b.parent.variant.label,
                ps.layers,
                ps.hidden,
                b.parent.variant.model.embed_rows()
            ),
        });
    }
    progress.stage("blame (hybrid forward passes)", b.budget.max(2) + 1);
    let names = model::loaded_tensors(b.parent.checkpoint, b.device, b.settings.dtype, b.settings.gguf_matmul)?;
    let budget = b.budget.max(2);

    // The step itself, against the parent on the same tokens: the KL every share is of.
    let step = score(b, &[], progress)?.remove(0)?;
    let (kl, tokens) = (step.0, step.1);
    let mut passes = 1;
    let mut out = Blame {
        parent: b.parent.variant.label.clone(),
        step: b.step.variant.label.clone(),
        kl_mean: kl,
        scored_tokens: tokens,
        groups: Vec::new(),
        refined: None,
        modules: Vec::new(),
        culprit: None,
        forward_passes: 0,
    };
    if kl.is_nan() || kl <= MIN_KL {
        out.forward_passes = passes;
        return Ok(out);
    }

    // Level 1: layers (grouped into blocks when the budget is short) and the rest.
    let by_group = grouped(&names, group_of);
    let layers: BTreeMap<usize, Vec<String>> =
        by_group.iter().filter_map(|(g, t)| if let Group::Layer(i) = g { Some((*i, t.clone())) } else { None }).collect();
    let named: Vec<(String, Vec<String>)> =
        by_group.iter().filter_map(|(g, t)| if let Group::Named(n) = g { Some((n.to_string(), t.clone())) } else { None }).collect();
    // Half the budget for level 1 (at least one block), the rest to refine and confirm.
    let blocks = (budget / 2).saturating_sub(named.len()).max(1);
    let mut level1 = layer_blocks(&layers, blocks);
    level1.extend(named);
    out.groups = rows(b, &level1, kl, progress)?;
    passes += level1.len();

    // Level 2: inside the guiltiest group.
    let Some(top) = guiltiest(&out.groups) else {
        out.forward_passes = passes;
        return Ok(out);
    };
    let left = budget.saturating_sub(passes - 1);
    let top_row = out.groups[top].clone();
    let level2: Vec<(String, Vec<String>)> = if top_row.group.starts_with("layers ") {
        // A block: its layers.
        grouped(&top_row.tensors, |n| layer_of(n).unwrap_or(0)).into_iter().map(|(i, t)| (format!("layer {i}"), t)).collect()
    } else {
        grouped(&top_row.tensors, |n| module_of(n).to_string()).into_iter().collect()
    };
    if level2.len() > 1 && level2.len() < left {
        out.refined = Some(top_row.group.clone());
        out.modules = rows(b, &level2, kl, progress)?;
        passes += level2.len();
    }

    // The culprit: the fewest level-2 rows whose shares reach CULPRIT_SHARE, measured together;
    // else the top level-1 group itself when it alone reaches it.
    let mut ranked: Vec<&BlameRow> = out.modules.iter().filter(|r| r.share.is_some()).collect();
    ranked.sort_by(|a, b| b.share.partial_cmp(&a.share).unwrap_or(std::cmp::Ordering::Equal));
    let mut set: Vec<&BlameRow> = Vec::new();
    let mut sum = 0.0;
    for r in ranked {
        if sum >= CULPRIT_SHARE {
            break;
        }
        sum += r.share.unwrap_or(0.0);
        set.push(r);
    }
    out.culprit = match set.len() {
        0 => top_row.share.filter(|s| *s >= CULPRIT_SHARE).map(|_| top_row.clone()),
        1 => set[0].share.filter(|s| *s >= CULPRIT_SHARE / 2.0).map(|_| set[0].clone()),
        _ if passes <= budget => {
            let label = set.iter().map(|r| r.group.as_str()).collect::<Vec<_>>().join(" + ");
            let tensors: Vec<String> = set.iter().flat_map(|r| r.tensors.iter().cloned()).collect();
            passes += 1;
            let together = rows(b, &[(label, tensors)], kl, progress)?.remove(0);
            together.share.filter(|s| *s >= CULPRIT_SHARE / 2.0).map(|_| together)
        }
        _ => None,
    };
    out.forward_passes = passes;
    Ok(out)
}

/// The row with the largest share, if any ran.
fn guiltiest(rows: &[BlameRow]) -> Option<usize> {
    rows.iter()
        .enumerate()
        .filter_map(|(i, r)| r.share.map(|s| (i, s)))
        .max_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal))
        .map(|(i, _)| i)
}

/// Each group's hybrid scored against the parent.
fn rows(b: &BlameInputs, groups: &[(String, Vec<String>)], kl: f64, progress: &dyn Progress) -> Result<Vec<BlameRow>> {
    let mut out = Vec::with_capacity(groups.len());
    for chunk in groups.chunks(HYBRIDS_PER_PASS) {
        let scored = score(b, chunk, progress)?;
        for ((group, tensors), r) in chunk.iter().zip(scored) {
            let (kl_mean, error) = match r {
                Ok((k, _)) => (Some(k), None),
                Err(e) => (None, Some(e.to_string())),
            };
            out.push(BlameRow { group: group.clone(), tensors: tensors.clone(), kl_mean, share: kl_mean.map(|k| k / kl), error });
        }
    }
    Ok(out)
}

/// KL(parent‖x) and scored tokens for x = the step when `groups` is empty, else for each
/// group's hybrid; one lockstep pass over the prompts, no generation.
fn score(b: &BlameInputs, groups: &[(String, Vec<String>)], progress: &dyn Progress) -> Result<Vec<Result<(f64, usize)>>> {
    let hybrids: Vec<Result<Variant>> = groups
        .iter()
        .map(|(label, tensors)| {
            let take = |n: &str| tensors.iter().any(|t| t == n);
            let m = model::load_spliced(
                (b.parent.checkpoint, b.step.checkpoint),
                (&b.parent.variant.path, &b.step.variant.path),
                &take,
                b.device,
                b.settings.dtype,
                b.settings.gguf_matmul,
            )?;
            Ok(b.parent.variant.with_model(format!("{} + {label} of {}", b.parent.variant.label, b.step.variant.label), m))
        })
        .collect();
    let mut variants: Vec<&Variant> = vec![b.answered_by];
    let parent = if std::ptr::eq(b.answered_by, b.parent.variant) {
        0
    } else {
        variants.push(b.parent.variant);
        1
    };
    let mut slots: Vec<std::result::Result<usize, Error>> = Vec::new();
    if groups.is_empty() {
        variants.push(b.step.variant);
        slots.push(Ok(variants.len() - 1));
    }
    for h in &hybrids {
        match h {
            Ok(v) => {
                variants.push(v);
                slots.push(Ok(variants.len() - 1));
            }
            Err(e) => slots.push(Err(Error::Again(e.to_string()))),
        }
    }
    let pairs: Vec<Pair> = slots
        .iter()
        .filter_map(|s| s.as_ref().ok())
        .map(|&c| Pair { reference: parent, candidate: c, thresholds: b.opts.thresholds.clone() })
        .collect();
    let mut opts = b.opts.clone();
    opts.max_new_tokens = 0;
    opts.layers = false;
    let mut results = compare_all(&variants, 0, &pairs, b.prompts, b.answers, &opts, &NoProgress)?.into_iter();
    groups.iter().for_each(|_| progress.tick());
    Ok(slots
        .into_iter()
        .map(|s| match s {
            Ok(_) => results.next().expect("one result per pair").map(|r| (r.summary.kl.mean, r.summary.scored_tokens)),
            Err(e) => Err(e),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_modules() {
        assert_eq!(group_of("model.layers.12.mlp.down_proj.weight"), Group::Layer(12));
        assert_eq!(group_of("model.embed_tokens.weight"), Group::Named("embeddings"));
        assert_eq!(group_of("lm_head.weight"), Group::Named("head"));
        assert_eq!(group_of("model.norm.weight"), Group::Named("final norm"));
        assert_eq!(module_of("model.layers.1.self_attn.q_proj.bias"), "model.layers.1.self_attn.q_proj");
        let names: Vec<String> =
            (0..10).flat_map(|i| [format!("model.layers.{i}.a.weight"), format!("model.layers.{i}.b.weight")]).collect();
        let layers: BTreeMap<usize, Vec<String>> =
            grouped(&names, group_of).into_iter().filter_map(|(g, t)| if let Group::Layer(i) = g { Some((i, t)) } else { None }).collect();
        let blocks = layer_blocks(&layers, 4);
        assert_eq!(blocks.iter().map(|b| b.0.as_str()).collect::<Vec<_>>(), ["layers 0-2", "layers 3-5", "layers 6-8", "layer 9"]);
        assert_eq!(blocks[0].1.len(), 6);
        assert_eq!(layer_blocks(&layers, 100).len(), 10);
    }
}
