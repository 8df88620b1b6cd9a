//! A step's weights against its parent's, by fingerprint (`checks::fingerprint`): which tensors
//! are the parent's unchanged (in this or another precision), which moved, and which were
//! transformed in a way a script does by mistake. Names the structural mistakes directly:
//! layers swapped or duplicated, a Q/K projection left in llama.cpp's interleaved row order or
//! transposed, a tensor an update skipped, the output head tied or untied, frozen layers.
//!
//! Only same-shape tensors are compared, by name (HF names; a GGUF's are mapped before they get
//! here). Candidates come from the fingerprints; a hypothesis about moved rows is then verified
//! on the step's sampled elements against the parent's elements read from its memory map.
//! What a change does to the outputs is `compare`'s business, not this module's.

use std::collections::{BTreeMap, BTreeSet};

use super::fingerprint::{coarser, element, same_value, Fingerprint, Fingerprints};
use super::values::fingerprints as of_dir;
use super::{Context, Finding, Severity};
use crate::checkpoint::Checkpoint;
use crate::checks::ids;
use crate::format::hf::HfDir;

/// Layers named at most in one message; the count says how many more.
const SHOWN_LAYERS: usize = 8;

/// Most layers whose origins are matched across a step and its parent. Released decoders have at
/// most ~130 layers (Llama 3.1 405B: 126); a header naming more is hostile or not a decoder, and
/// matching every layer against every layer must stay bounded.
const MAX_MATCHED_LAYERS: usize = 1024;

/// One side of the comparison: its directory (for element reads and file names), its facts
/// (head counts, tie flag) and its fingerprints.
pub struct Side<'a> {
    pub ctx: &'a Context<'a>,
    pub prints: &'a Fingerprints,
}

impl Side<'_> {
    fn dir(&self) -> &HfDir {
        self.ctx.dir
    }
    fn get(&self, name: &str) -> Option<&Fingerprint> {
        self.prints.tensors.get(name)
    }
    fn file_of(&self, name: &str) -> String {
        self.dir().tensor(name).map(|(f, _)| self.dir().rel(&f.path)).unwrap_or_else(|| "model.safetensors".into())
    }
    /// Element `i` (flat, row-major) of tensor `name`, decoded.
    fn element(&self, name: &str, i: u64) -> Option<f32> {
        let (f, t) = self.dir().tensor(name)?;
        element(t.dtype, f.bytes(t)?, i)
    }
}

/// `model.layers.7.mlp.up_proj.weight` → (`model.layers.`, 7, `mlp.up_proj.weight`).
fn split_layer(name: &str) -> Option<(&str, u64, &str)> {
    let at = name.find("layers.")? + "layers.".len();
    let rest = &name[at..];
    let dot = rest.find('.')?;
    let layer = rest[..dot].parse().ok()?;
    Some((&name[..at], layer, &rest[dot + 1..]))
}

/// `layer 3` or `layers 0, 1, 2` (the first `SHOWN_LAYERS`, then the count).
fn list(layers: &BTreeSet<u64>) -> String {
    let mut v: Vec<String> = layers.iter().take(SHOWN_LAYERS).map(u64::to_string).collect();
    if layers.len() > SHOWN_LAYERS {
        v.push(format!("… ({} layers)", layers.len()));
    }
    format!("{} {}", if layers.len() == 1 { "layer" } else { "layers" }, v.join(", "))
}

/// How a tensor's rows may have been moved by a script, each checked on the sampled elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Moved {
    /// llama.cpp's `permute` (convert_hf_to_gguf.py) applied: rotate-half rows → interleaved.
    Permuted,
    /// Its inverse (a GGUF's unpermute) applied to rows that were already in HF order.
    Unpermuted,
    /// A square matrix transposed.
    Transposed,
}

/// The parent's flat index holding what the step's flat index `i` holds under `how`, for a
/// `[rows, cols]` matrix whose rows form `heads` heads.
fn source_index(how: Moved, i: u64, rows: u64, cols: u64, heads: u64) -> Option<u64> {
    let (r, c) = (i / cols, i % cols);
    let src_row = match how {
        Moved::Transposed => return (rows == cols).then(|| c * cols + r),
        Moved::Permuted | Moved::Unpermuted => {
            let hd = rows.checked_div(heads)?;
            if hd < 2 || hd % 2 != 0 || hd * heads != rows {
                return None;
            }
            let (h, within) = (r / hd, r % hd);
            let half = hd / 2;
            match how {
                // step row h·hd + 2k + t holds parent row h·hd + t·hd/2 + k
                Moved::Permuted => h * hd + (within % 2) * half + within / 2,
                // step row h·hd + t·hd/2 + k holds parent row h·hd + 2k + t
                _ => h * hd + (within % half) * 2 + within / half,
            }
        }
    };
    Some(src_row * cols + c)
}

/// Whether every sampled element of the step's `name` equals the parent's element that `how`
/// moves there.
fn moved_from(parent: &Side, name: &str, sp: &Fingerprint, how: Moved, heads: u64) -> bool {
    let [rows, cols] = sp.shape[..] else { return false };
    let Some(pp) = parent.get(name) else { return false };
    let dtype = coarser(pp.dtype, sp.dtype);
    let positions = super::fingerprint::sample_positions(sp.count);
    // An element that stays in place under `how` proves nothing: at least one must move.
    let mut moved = 0;
    for (&i, &v) in positions.iter().zip(&sp.samples) {
        let Some(src) = source_index(how, i, rows, cols, heads) else { return false };
        let Some(pv) = parent.element(name, src) else { return false };
        if !same_value(dtype, pv, v) {
            return false;
        }
        moved += (src != i) as usize;
    }
    moved > 0
}

/// The weight checks of a lineage step against its parent, for the checkpoint forms that have
/// HF weights of their own: an HF directory, or a base+adapter parent by its base (what a merge
/// starts from). Fingerprints lint already computed are reused (`prints`); missing ones are
/// computed here. A GGUF or an adapter-only step is not compared.
#[allow(clippy::too_many_arguments)]
pub fn check_steps(
    parent: &Checkpoint,
    parent_ctx: &Context,
    parent_prints: Option<&Fingerprints>,
    step: &Checkpoint,
    step_ctx: &Context,
    step_prints: Option<&Fingerprints>,
    parent_label: &str,
    out: &mut Vec<Finding>,
) {
    fn weights_of(c: &Checkpoint) -> Option<&HfDir> {
        match c {
            Checkpoint::Hf(d) | Checkpoint::BaseWithAdapter { base: d, .. } => Some(d),
            _ => None,
        }
    }
    let (Some(pd), Some(sd)) = (weights_of(parent), weights_of(step)) else { return };
    if matches!(step, Checkpoint::BaseWithAdapter { .. }) {
        return;
    }
    let computed_p;
    let pp = match (parent, parent_prints) {
        (Checkpoint::Hf(_), Some(p)) => p,
        _ => {
            computed_p = of_dir(pd);
            &computed_p
        }
    };
    let computed_s;
    let sp = match step_prints {
        Some(p) => p,
        None => {
            computed_s = of_dir(sd);
            &computed_s
        }
    };
    check(&Side { ctx: parent_ctx, prints: pp }, &Side { ctx: step_ctx, prints: sp }, parent_label, out);
}

/// Appends the weight-lineage findings of `step` against `parent` (labelled `parent_label`).
pub fn check(parent: &Side, step: &Side, parent_label: &str, out: &mut Vec<Finding>) {
    // Tensors of both, same shape: equal values or not.
    let mut equal: BTreeMap<&str, bool> = BTreeMap::new();
    for (name, sp) in &step.prints.tensors {
        if let Some(pp) = parent.get(name) {
            if pp.shape == sp.shape {
                equal.insert(name.as_str(), pp.same_values(sp));
            }
        }
    }
    if equal.is_empty() {
        return;
    }

    // Layers: where each of the step's layers came from in the parent.
    let mut step_layers: BTreeMap<u64, Vec<(&str, &str, &str)>> = BTreeMap::new();
    for name in step.prints.tensors.keys() {
        if let Some((prefix, l, suffix)) = split_layer(name) {
            step_layers.entry(l).or_default().push((name.as_str(), prefix, suffix));
        }
    }
    // The parent's layer tensors by (prefix, suffix): a step tensor is compared with the same
    // tensor of every parent layer, never with every tensor.
    let mut parent_by_suffix: BTreeMap<(&str, &str), Vec<(u64, &Fingerprint)>> = BTreeMap::new();
    for (name, fp) in &parent.prints.tensors {
        if let Some((prefix, l, suffix)) = split_layer(name) {
            parent_by_suffix.entry((prefix, suffix)).or_default().push((l, fp));
        }
    }
    let layer_count = |m: &BTreeMap<(&str, &str), Vec<(u64, &Fingerprint)>>| m.values().map(Vec::len).max().unwrap_or(0);
    let mut origin: BTreeMap<u64, u64> = BTreeMap::new();
    // Bounded work on a hostile header: only as many layers as a real model has are matched.
    let matchable = step_layers.len() <= MAX_MATCHED_LAYERS && layer_count(&parent_by_suffix) <= MAX_MATCHED_LAYERS;
    for (&l, tensors) in step_layers.iter().filter(|_| matchable) {
        let mut votes = Vec::new();
        for &(name, prefix, suffix) in tensors {
            let sp = &step.prints.tensors[name];
            let cands: Vec<u64> = parent_by_suffix
                .get(&(prefix, suffix))
                .into_iter()
                .flatten()
                .filter(|(_, pp)| pp.same_values(sp))
                .map(|&(j, _)| j)
                .collect();
            // A tensor equal in several parent layers (untrained norms of ones) says nothing.
            if let [j] = cands[..] {
                votes.push(j);
            }
        }
        // The parent layer most of this layer's tensors come from (a strict majority of all its
        // tensors: a layer copied without its norms still counts as copied).
        let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
        for j in votes {
            *counts.entry(j).or_default() += 1;
        }
        if let Some((&j, &n)) = counts.iter().max_by_key(|(_, &n)| n) {
            if n * 2 > tensors.len() {
                origin.insert(l, j);
            }
        }
    }
    let moved: BTreeMap<u64, u64> = origin.iter().filter(|(l, j)| l != j).map(|(&l, &j)| (l, j)).collect();
    let mut by_source: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for (&l, &j) in &origin {
        by_source.entry(j).or_default().insert(l);
    }
    let file = step.file_of(step_layers.values().flatten().next().map(|t| t.0).unwrap_or(""));
    let dups: Vec<(u64, &BTreeSet<u64>)> = by_source.iter().filter(|(_, ls)| ls.len() > 1).map(|(&j, ls)| (j, ls)).collect();
    for (j, ls) in &dups {
        out.push(
            Finding::new(
                ids::LINEAGE_LAYER_DUPLICATED,
                Severity::Error,
                &file,
                format!("{} all hold the parent step `{parent_label}`'s layer {j} weights: a layer was copied over another", list(ls)),
            )
            .field(format!("model.layers.{j}"))
            .hint("fix the layer map of the script that wrote this checkpoint (each layer index must come from its own source layer) and re-export"),
        );
    }
    let swapped: BTreeMap<u64, u64> =
        moved.iter().filter(|(_, j)| by_source.get(j).is_some_and(|s| s.len() == 1)).map(|(&l, &j)| (l, j)).collect();
    if !swapped.is_empty() {
        let pairs: Vec<String> =
            swapped.iter().take(SHOWN_LAYERS).map(|(l, j)| format!("layer {l}'s weights equal the parent's layer {j}")).collect();
        let more = swapped.len().saturating_sub(SHOWN_LAYERS);
        out.push(
            Finding::new(
                ids::LINEAGE_LAYERS_SWAPPED,
                Severity::Error,
                &file,
                format!(
                    "layers are in another order than in the parent step `{parent_label}`: {}{}",
                    pairs.join(", "),
                    if more > 0 { format!(" (and {more} more)") } else { String::new() }
                ),
            )
            .field(format!("model.layers.{}", swapped.keys().next().expect("not empty")))
            .hint("the script that renamed or converted the layers mapped indices wrongly: fix its layer map and re-export"),
        );
    }

    // Tensors that differ but hold the parent's values moved by a known mistake.
    let heads_of = |name: &str| {
        let c = &step.ctx.config;
        if name.ends_with("k_proj.weight") {
            c.num_key_value_heads.or(c.num_attention_heads)
        } else {
            c.num_attention_heads
        }
    };
    let mut permuted: BTreeMap<(&str, Moved), BTreeSet<u64>> = BTreeMap::new();
    let mut transposed = Vec::new();
    for (&name, &eq) in &equal {
        if eq || split_layer(name).is_some_and(|(_, l, _)| moved.contains_key(&l)) {
            continue;
        }
        let sp = &step.prints.tensors[name];
        if sp.shape.len() != 2 {
            continue;
        }
        let qk = name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight");
        if qk {
            if let Some(heads) = heads_of(name) {
                for how in [Moved::Permuted, Moved::Unpermuted] {
                    if moved_from(parent, name, sp, how, heads) {
                        let (_, l, suffix) = split_layer(name).unwrap_or(("", 0, name));
                        permuted.entry((suffix, how)).or_default().insert(l);
                        break;
                    }
                }
            }
        }
        if sp.shape[0] == sp.shape[1] && moved_from(parent, name, sp, Moved::Transposed, 1) {
            transposed.push(name);
        }
    }
    for ((suffix, how), layers) in &permuted {
        let what = match how {
            Moved::Permuted => "in llama.cpp's interleaved-rope order (convert_hf_to_gguf.py's Q/K permutation applied)",
            _ => "in the order llama.cpp's Q/K unpermute gives (it was undone once too often)",
        };
        let name = format!("model.layers.{}.{suffix}", layers.first().expect("not empty"));
        out.push(
            Finding::new(
                ids::LINEAGE_QK_PERMUTED,
                Severity::Error,
                step.file_of(&name),
                format!("`{suffix}` of {} holds the parent step `{parent_label}`'s rows permuted per head, {what}: rotary embedding now rotates the wrong pairs", list(layers)),
            )
            .field(name)
            .hint("a GGUF ↔ HF conversion permuted Q/K rows without undoing it: convert again with a converter that (un)permutes Q/K for this architecture"),
        );
    }
    for name in transposed {
        out.push(
            Finding::new(
                ids::LINEAGE_TRANSPOSED,
                Severity::Error,
                step.file_of(name),
                format!("`{name}` is the parent step `{parent_label}`'s matrix transposed"),
            )
            .field(name)
            .hint("the script that wrote it stored [in, out] where [out, in] is expected (a Conv1D or a JAX/Keras kernel?): transpose it back on export"),
        );
    }

    // Which layers changed at all, which stayed the parent's.
    let layer_unchanged = |l: u64| step_layers.get(&l).is_some_and(|ts| ts.iter().all(|(n, _, _)| equal.get(n).copied() == Some(true)));
    let (mut frozen, mut trained) = (BTreeSet::new(), BTreeSet::new());
    for &l in step_layers.keys() {
        if moved.contains_key(&l) {
            continue;
        }
        if layer_unchanged(l) {
            frozen.insert(l);
        } else {
            trained.insert(l);
        }
    }
    if moved.is_empty() && dups.is_empty() && !frozen.is_empty() && !trained.is_empty() {
        let others: Vec<&str> = equal.iter().filter(|(n, eq)| **eq && split_layer(n).is_none()).map(|(n, _)| *n).collect();
        out.push(
            Finding::new(
                ids::LINEAGE_FROZEN_LAYERS,
                Severity::Info,
                &file,
                format!(
                    "only {} changed since the parent step `{parent_label}`; {} {} its weights unchanged{}",
                    list(&trained),
                    list(&frozen),
                    if frozen.len() == 1 { "holds" } else { "hold" },
                    if others.is_empty() { String::new() } else { format!(" (and so do {})", others.join(", ")) }
                ),
            )
            .hint("expected if those layers were frozen on purpose; if the whole model was meant to train, the optimizer never saw them"),
        );
    }

    // A tensor one update skipped: equal to the parent's in a layer that otherwise changed,
    // while the same tensor changed in the other layers.
    let mut by_suffix: BTreeMap<&str, (Vec<&str>, usize)> = BTreeMap::new();
    for (&name, &eq) in &equal {
        let Some((_, l, suffix)) = split_layer(name) else { continue };
        if moved.contains_key(&l) {
            continue;
        }
        let e = by_suffix.entry(suffix).or_default();
        if !eq {
            e.1 += 1;
        } else if trained.contains(&l) {
            e.0.push(name);
        }
    }
    for (suffix, (skipped, changed)) in by_suffix {
        if changed < 2 || skipped.is_empty() || skipped.len() >= changed {
            continue;
        }
        for name in skipped {
            out.push(
                Finding::new(
                    ids::LINEAGE_TENSOR_UNCHANGED,
                    Severity::Warning,
                    step.file_of(name),
                    format!(
                        "`{name}` still equals the parent step `{parent_label}`'s, while `{suffix}` changed in {changed} other layers and the rest of its layer changed: the update (a merge, a training step) skipped it"
                    ),
                )
                .field(name)
                .hint("if this was a merge, check that the adapter's keys for this module were loaded (peft warns about missing keys) and merge again"),
            );
        }
    }

    tie_check(parent, step, parent_label, out);
}

const EMBED: &str = "model.embed_tokens.weight";
const HEAD: &str = "lm_head.weight";

/// The output head tied to the embeddings (by config or by equal values) in one step and not in
/// the other.
fn tie_check(parent: &Side, step: &Side, parent_label: &str, out: &mut Vec<Finding>) {
    let tied = |s: &Side| -> Option<bool> {
        let e = s.get(EMBED)?;
        Some(match s.get(HEAD) {
            Some(h) => h.same_values(e),
            None => s.ctx.config.tie_word_embeddings.unwrap_or(true),
        })
    };
    let (Some(p), Some(s)) = (tied(parent), tied(step)) else { return };
    if !p && s {
        let how = if step.get(HEAD).is_some() {
            format!("`{HEAD}` holds the same values as `{EMBED}`")
        } else {
            format!("there is no `{HEAD}`: the head is tied to `{EMBED}`")
        };
        out.push(
            Finding::new(
                ids::LINEAGE_HEAD_TIED,
                Severity::Error,
                step.file_of(step.get(HEAD).map(|_| HEAD).unwrap_or(EMBED)),
                format!(
                    "{how}, but the parent step `{parent_label}` has its own output head: the export tied them and lost the trained head"
                ),
            )
            .field(HEAD)
            .hint("save the checkpoint with tie_word_embeddings = false and its own lm_head.weight"),
        );
    } else if p && !s {
        // A materialised copy of a tied head is fine; a head that no longer equals the
        // embedding it was tied to was trained or written apart from it.
        let head_from_parent = match (step.get(HEAD), parent.get(EMBED)) {
            (Some(h), Some(pe)) => h.same_values(pe),
            _ => false,
        };
        if !head_from_parent {
            out.push(
                Finding::new(
                    ids::LINEAGE_HEAD_UNTIED,
                    Severity::Warning,
                    step.file_of(HEAD),
                    format!("the parent step `{parent_label}` ties its output head to the embeddings; here `{HEAD}` is a separate tensor that differs from `{EMBED}`"),
                )
                .field(HEAD)
                .hint("intended? a loader that ties by config (tie_word_embeddings) will ignore this lm_head; train and save tied, or set tie_word_embeddings = false everywhere"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_names_split() {
        assert_eq!(split_layer("model.layers.12.mlp.up_proj.weight"), Some(("model.layers.", 12, "mlp.up_proj.weight")));
        assert_eq!(split_layer("model.norm.weight"), None);
        assert_eq!(split_layer("model.layers.x.mlp"), None);
    }

    /// The index maps are llama.cpp's `permute` and its inverse, on a 2-head 4-row-per-head
    /// matrix of one column: permute([0..8]) = [0, 2, 1, 3, 4, 6, 5, 7].
    #[test]
    fn permutation_index_maps_match_llama_cpp() {
        let permuted: Vec<u64> = (0..8).map(|i| source_index(Moved::Permuted, i, 8, 1, 2).unwrap()).collect();
        assert_eq!(permuted, [0, 2, 1, 3, 4, 6, 5, 7]);
        // head_dim 8: rows h·8 + 2k + t ← h·8 + 4t + k
        let p8: Vec<u64> = (0..8).map(|i| source_index(Moved::Permuted, i, 8, 1, 1).unwrap()).collect();
        assert_eq!(p8, [0, 4, 1, 5, 2, 6, 3, 7]);
        let u8_: Vec<u64> = (0..8).map(|i| source_index(Moved::Unpermuted, i, 8, 1, 1).unwrap()).collect();
        assert_eq!(u8_, [0, 2, 4, 6, 1, 3, 5, 7]);
        assert_eq!(source_index(Moved::Transposed, 1, 2, 2, 1), Some(2));
        assert_eq!(source_index(Moved::Permuted, 0, 6, 1, 4), None, "rows not a multiple of heads");
    }
}
