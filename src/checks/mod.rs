//! Static checks: no forward pass. Each check reads a `Context` and appends `Finding`s to a
//! `Findings` collector; none stops at the first bad tensor or file, and none writes anything.
//!
//! Finding ids are stable (`area.what`) and documented in `docs/lint.md`; tests refer to them.
//! Repeated findings are grouped while they are collected (`Findings`): a hostile file with half a
//! million bad entries yields a few findings in full and one count, never half a million.

pub mod adapter;
pub mod fingerprint;
pub mod gguf;
pub mod ids;
pub mod integrity;
pub mod lineage;
pub mod lineage_weights;
pub mod merge;
pub mod quant;
pub mod special;
pub mod template;
pub mod values;
pub mod vocab;
pub mod weights;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::checkpoint::{Checkpoint, Facts};
use crate::format::hf::HfDir;
use fingerprint::Fingerprints;
use ids::FindingId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One thing a check found: what, where (file and field), how bad, and what to do.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub id: &'static str,
    pub severity: Severity,
    /// File relative to the checkpoint root.
    pub file: String,
    /// Field, tensor or header key inside the file, when there is one.
    pub field: Option<String>,
    pub message: String,
    pub hint: String,
    /// Set only on a summary: how many further findings with this id (and severity) were counted
    /// but not listed. Such an entry stands for that many findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub more: Option<u64>,
}

impl Finding {
    /// A finding; its id must be registered in `ids` (the only way to get a `FindingId`).
    pub fn new(id: FindingId, severity: Severity, file: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding { id: id.as_str(), severity, file: file.into(), field: None, message: message.into(), hint: String::new(), more: None }
    }
    pub fn field(mut self, f: impl Into<String>) -> Finding {
        self.field = Some(f.into());
        self
    }
    pub fn hint(mut self, h: impl Into<String>) -> Finding {
        self.hint = h.into();
        self
    }
    /// How many findings this entry stands for: 1, or a summary's count.
    pub fn weight(&self) -> u64 {
        self.more.unwrap_or(1)
    }
}

/// Findings listed in full per id (and severity) before the rest are only counted. Five show the
/// pattern (which tensors, which ids) and keep a report of a hostile file a screenful long; the
/// count says how far it goes.
pub const LISTED_PER_ID: usize = 5;

/// Findings a report shows per id and severity before it folds the rest into a count (`--verbose`
/// shows all it has): three show the pattern (which tensors, which fields) and keep a truncated
/// file's or a wrong-scale merge's report on one screen.
pub const SHOWN_PER_ID: usize = 3;

/// Findings worst first in runs of one id and severity (first-seen order within a severity), for
/// reports that show the first `SHOWN_PER_ID` of each run (`split_run`).
pub fn runs_by_id<'a>(findings: impl IntoIterator<Item = &'a Finding>) -> Vec<Vec<&'a Finding>> {
    let mut sorted: Vec<&Finding> = findings.into_iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut runs: Vec<Vec<&Finding>> = Vec::new();
    for f in sorted {
        match runs.iter_mut().find(|g| g[0].id == f.id && g[0].severity == f.severity) {
            Some(g) => g.push(f),
            None => runs.push(vec![f]),
        }
    }
    runs
}

/// The first `shown` findings of a run (never a collector's summary: summaries follow the
/// findings they count), and how many more the run stands for, summaries counted as their `more`.
pub fn split_run<'r, 'a>(run: &'r [&'a Finding], shown: usize) -> (&'r [&'a Finding], u64) {
    let shown = run.iter().take_while(|f| f.more.is_none()).count().min(shown);
    let total: u64 = run.iter().map(|f| f.weight()).sum();
    (&run[..shown], total - shown as u64)
}

/// Collects findings, keeping the first `LISTED_PER_ID` of each id and severity and counting the
/// rest, so memory stays bounded however many a hostile file produces; `into_vec` adds one
/// summary per group that was cut ("… and 499 995 more `integrity.bad-entry` findings").
#[derive(Debug, Default)]
pub struct Findings {
    listed: Vec<Finding>,
    groups: BTreeMap<(&'static str, Severity), Group>,
}

/// One id and severity: how many are listed, how many more were counted, and what the summary
/// will say about them.
#[derive(Debug, Default)]
struct Group {
    listed: usize,
    more: u64,
    /// File of the first counted finding; `None` once counted findings name different files.
    file: Option<String>,
    several_files: bool,
    hint: String,
}

impl Findings {
    pub fn new() -> Findings {
        Findings::default()
    }

    /// Keeps `f` if fewer than `LISTED_PER_ID` of its id and severity are kept, else counts it.
    pub fn push(&mut self, f: Finding) {
        let g = self.groups.entry((f.id, f.severity)).or_default();
        if g.listed < LISTED_PER_ID {
            g.listed += 1;
            self.listed.push(f);
        } else {
            g.count(&f, 1);
        }
    }

    /// Counts `n` findings like `like` that were never built one by one (a parser kept only the
    /// first few problems of a kind and counted the rest).
    pub fn count_more(&mut self, like: &Finding, n: u64) {
        if n > 0 {
            self.groups.entry((like.id, like.severity)).or_default().count(like, n);
        }
    }

    pub fn extend(&mut self, fs: impl IntoIterator<Item = Finding>) {
        for f in fs {
            self.push(f);
        }
    }

    /// How many findings were pushed or counted in all.
    pub fn total(&self) -> u64 {
        self.groups.values().map(|g| g.listed as u64 + g.more).sum()
    }

    /// The listed findings in the order they came, each cut group followed by its summary.
    pub fn into_vec(self) -> Vec<Finding> {
        let Findings { listed, groups } = self;
        let mut seen: BTreeMap<(&'static str, Severity), usize> = BTreeMap::new();
        let mut out = Vec::with_capacity(listed.len() + groups.len());
        for f in listed {
            let key = (f.id, f.severity);
            let n = seen.entry(key).or_default();
            *n += 1;
            let last = groups.get(&key).filter(|g| g.listed == *n && g.more > 0);
            out.push(f);
            if let Some(g) = last {
                out.push(g.summary(key));
            }
        }
        // Groups only counted (nothing listed: `count_more` before any `push`).
        for (key, g) in &groups {
            if g.listed == 0 && g.more > 0 {
                out.push(g.summary(*key));
            }
        }
        out
    }
}

impl Group {
    fn count(&mut self, f: &Finding, n: u64) {
        if self.more == 0 {
            self.file = Some(f.file.clone());
            self.hint = f.hint.clone();
        } else if !self.several_files && self.file.as_deref() != Some(f.file.as_str()) {
            self.several_files = true;
            self.file = None;
        }
        self.more = self.more.saturating_add(n);
    }

    fn summary(&self, (id, severity): (&'static str, Severity)) -> Finding {
        let where_ = if self.several_files { " in several files" } else { "" };
        Finding {
            id,
            severity,
            file: self.file.clone().unwrap_or_default(),
            field: None,
            message: format!("… and {} more `{id}` findings{where_}", grouped(self.more)),
            hint: self.hint.clone(),
            more: Some(self.more),
        }
    }
}

/// `499995` → `499 995`: counts of hostile inputs are long.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A tensor name and its first dimension.
pub type NamedRows = (String, u64);

/// Everything the checks read about one HF directory, loaded once: the directory and its
/// `Facts` (config, tokenizer, special-token declarations, template), which deref from it.
pub struct Context<'a> {
    pub dir: &'a HfDir,
    pub facts: Facts,
}

impl std::ops::Deref for Context<'_> {
    type Target = Facts;
    fn deref(&self) -> &Facts {
        &self.facts
    }
}

impl<'a> Context<'a> {
    pub fn new(dir: &'a HfDir) -> Context<'a> {
        Context { dir, facts: Facts::of_hf(dir) }
    }

    /// Rows of the input embedding and of the output head (the same tensor when tied).
    pub fn embedding_rows(&self) -> (Option<NamedRows>, Option<NamedRows>) {
        let rows = |names: &[&str]| {
            names.iter().find_map(|n| {
                let (_, t) = self.dir.tensor(n)?;
                Some((n.to_string(), *t.shape.first()?))
            })
        };
        let embed = rows(&["model.embed_tokens.weight", "model.language_model.embed_tokens.weight", "transformer.wte.weight"]);
        let head = rows(&["lm_head.weight", "model.lm_head.weight"]);
        (embed, head)
    }
}

/// Options that change what the checks do.
#[derive(Debug, Clone, Default)]
pub struct LintOptions {
    /// Skip the value scan (NaN/Inf/zero/magnitude) for a fast metadata-only lint.
    pub no_values: bool,
}

/// Runs every check, in a stable order; repeated findings grouped (`Findings`).
pub fn run_all(ctx: &Context, opts: &LintOptions) -> Vec<Finding> {
    run_all_fingerprinted(ctx, opts).0
}

/// `run_all`, also returning the weight fingerprints the value scan computed (none when the scan
/// is skipped).
pub fn run_all_fingerprinted(ctx: &Context, opts: &LintOptions) -> (Vec<Finding>, Option<Fingerprints>) {
    let mut out = Findings::new();
    integrity::check(ctx, &mut out);
    adapter::check(ctx, &mut out);
    let prints = (!opts.no_values).then(|| values::check_fingerprinted(ctx, &mut out));
    // An adapter directory's tokenizer and template (if saved) belong to its base model; they are
    // checked there, not against the adapter's missing config.
    if !ctx.dir.is_adapter() {
        weights::check(ctx, &mut out);
        vocab::check(ctx, &mut out);
        special::check(ctx, &mut out);
        template::check(ctx, &mut out);
        quant::check(ctx, &mut out);
    }
    (out.into_vec(), prints)
}

/// Lints any checkpoint: an HF or adapter directory with every check, a GGUF alone or against
/// the HF checkpoint it came from (`source`), a base+adapter by its adapter directory (the base is
/// a step of its own in a lineage).
pub fn lint(ckpt: &Checkpoint, source: Option<&HfDir>, opts: &LintOptions) -> Vec<Finding> {
    lint_fingerprinted(ckpt, source, opts).0
}

/// `lint`, also returning the fingerprints of an HF checkpoint's weights from the value scan (an
/// adapter directory's tensors are not the model's; a GGUF is fingerprinted by the lineage
/// checks themselves).
pub fn lint_fingerprinted(ckpt: &Checkpoint, source: Option<&HfDir>, opts: &LintOptions) -> (Vec<Finding>, Option<Fingerprints>) {
    match ckpt {
        Checkpoint::Gguf(g) => (gguf::run(g, source.map(Context::new).as_ref()), None),
        Checkpoint::Hf(d) => run_all_fingerprinted(&Context::new(d), opts),
        Checkpoint::Adapter(d) => (run_all(&Context::new(d), opts), None),
        Checkpoint::BaseWithAdapter { base, adapter } => {
            let mut f = run_all(&Context::new(&adapter.dir), opts);
            f.extend(lineage::adapter_vs_base(base, &adapter.dir));
            (f, None)
        }
        Checkpoint::GgufWithAdapter { base, adapter } => (gguf::run_adapter(adapter, Some(base)), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bad(i: usize) -> Finding {
        Finding::new(ids::INTEGRITY_BAD_ENTRY, Severity::Error, "model.safetensors", format!("entry {i}")).hint("re-save")
    }

    #[test]
    fn findings_list_the_first_few_per_id_and_count_the_rest() {
        let mut out = Findings::new();
        for i in 0..1000 {
            out.push(bad(i));
            if i == 2 {
                out.push(Finding::new(ids::INTEGRITY_GAP, Severity::Error, "model.safetensors", "gap"));
            }
        }
        out.count_more(&bad(0), 500);
        assert_eq!(out.total(), 1501);
        let v = out.into_vec();
        let ids: Vec<(&str, Option<u64>)> = v.iter().map(|f| (f.id, f.more)).collect();
        let bad_id = "integrity.bad-entry";
        assert_eq!(
            ids,
            [(bad_id, None), (bad_id, None), (bad_id, None), ("integrity.gap", None), (bad_id, None), (bad_id, None), (bad_id, Some(1495)),]
        );
        let summary = v.last().unwrap();
        assert_eq!(summary.message, "… and 1 495 more `integrity.bad-entry` findings");
        assert_eq!((summary.file.as_str(), summary.hint.as_str(), summary.weight()), ("model.safetensors", "re-save", 1495));
        assert_eq!(v.iter().map(Finding::weight).sum::<u64>(), 1501);
    }

    #[test]
    fn severities_group_apart_and_files_are_named_once() {
        let mut out = Findings::new();
        for i in 0..7 {
            out.push(Finding::new(ids::GGUF_SHAPE_DIFFERS, Severity::Error, format!("f{}", i % 2), "x"));
            out.push(Finding::new(ids::GGUF_SHAPE_DIFFERS, Severity::Warning, "w", "x"));
        }
        let v = out.into_vec();
        let summaries: Vec<&Finding> = v.iter().filter(|f| f.more.is_some()).collect();
        assert_eq!(summaries.len(), 2);
        assert_eq!((summaries[0].severity, summaries[0].more, summaries[0].file.as_str()), (Severity::Error, Some(2), ""));
        assert!(summaries[0].message.ends_with("in several files"), "{}", summaries[0].message);
        assert_eq!((summaries[1].severity, summaries[1].file.as_str()), (Severity::Warning, "w"));
    }

    #[test]
    fn a_group_only_counted_still_gets_its_summary() {
        let mut out = Findings::new();
        out.count_more(&bad(0), 3);
        let v = out.into_vec();
        assert_eq!((v.len(), v[0].more), (1, Some(3)));
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1000), "1 000");
        assert_eq!(grouped(2_000_000), "2 000 000");
    }

    #[test]
    fn a_summary_serializes_its_count_and_a_plain_finding_does_not() {
        let plain = serde_json::to_value(bad(0)).unwrap();
        assert!(plain.get("more").is_none(), "{plain}");
        let mut out = Findings::new();
        for i in 0..=LISTED_PER_ID {
            out.push(bad(i));
        }
        let v = out.into_vec();
        assert_eq!(serde_json::to_value(v.last().unwrap()).unwrap()["more"], 1);
    }
}
