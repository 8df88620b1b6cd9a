//! The lineage manifest: a TOML file listing a model's pipeline steps in order.
//!
//! ```toml
//! name = "sft then merge"
//! reference = "base"              # label of the reference step (default: the first)
//! prompts = "prompts.jsonl"       # optional; paths are relative to the manifest
//! max_prompts = 8                 # optional; only the first N prompts
//! max_new_tokens = 32
//! # text = "wiki.test.raw"        # or a text corpus instead of prompts; ctx = 512, chunks = K
//! dtype = "f32"                   # or bf16, f16, auto (each checkpoint's own)
//! gguf_matmul = "auto"            # GGUF steps: dense, quantized, or auto (by available memory)
//! blame_budget = 48               # forward passes to blame a conversion's tensors (0: off)
//!
//! [[step]]
//! label = "base"
//! path = "models/instruct"
//!
//! [[step]]
//! label = "lora"
//! base = "models/instruct"        # a base model with an adapter applied on the fly
//! adapter = "adapters/lora"
//!
//! [[step]]
//! label = "sft"
//! kind = "finetune"               # a training step: judged on behaviour only (EOS, stops, NaN,
//! path = "models/sft"             # tokenizer, template); later steps are judged against it
//!
//! [[step]]
//! label = "merged"
//! path = "models/merged"
//! thresholds = { kl_mean_fail = 0.2 }   # per-step overrides
//! ```
//!
//! A training run is a lineage too: a `[run]` table names the Trainer's `output_dir`, and its
//! `checkpoint-N/` folders and final save become the steps after the base, kind `checkpoint`
//! (`training`); `[[step]]` tables then list exports after the final save.
//!
//! ```toml
//! [run]
//! dir = "runs/sft"                # checkpoint-N/ folders, trainer_state.json, the final save
//! base = "models/instruct"        # default: the adapters' base_model_name_or_path
//! checkpoint_budget = 8           # checkpoints evaluated; more are binary-searched
//!
//! [[step]]
//! label = "q4_k_m"
//! path = "exports/model-q4_k_m.gguf"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::checkpoint::Checkpoint;
use crate::compare::thresholds::Thresholds;
use crate::error::{Error, Result};
use crate::format::hub::HubId;
use crate::format::read_capped_text;
use crate::pipeline::train_log::{RunDir, TrainerLog};
use crate::settings::{ComputeDtype, DeviceChoice, GgufMatmul, RunSettings};

/// Steps beyond this are refused: a lineage is a handful of steps, not a sweep.
pub const MAX_STEPS: usize = 64;

/// Manifests larger than this are refused: `MAX_STEPS` steps of a few lines each (with per-step
/// thresholds) are a few KB; 1 MiB leaves room for any amount of comments.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Option<String>,
    reference: Option<String>,
    prompts: Option<PathBuf>,
    max_prompts: Option<usize>,
    max_new_tokens: Option<usize>,
    text: Option<PathBuf>,
    ctx: Option<usize>,
    chunks: Option<usize>,
    device: Option<DeviceChoice>,
    dtype: Option<ComputeDtype>,
    gguf_matmul: Option<GgufMatmul>,
    blame_budget: Option<usize>,
    thresholds: Option<toml::Value>,
    run: Option<RawRun>,
    #[serde(rename = "step", default)]
    steps: Vec<RawStep>,
    expect: Option<Expect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    dir: PathBuf,
    base: Option<PathBuf>,
    checkpoint_budget: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    label: Option<String>,
    path: Option<PathBuf>,
    base: Option<PathBuf>,
    adapter: Option<PathBuf>,
    kind: Option<StepKind>,
    thresholds: Option<toml::Value>,
}

/// What a step is to the lineage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// A conversion, merge, quantization or export: it should behave like what it came from, so
    /// drift (KL, top-1, PPL) counts against it.
    #[default]
    Derived,
    /// A training step (SFT, RL, a LoRA run): its numbers are meant to move, so it is judged only
    /// on behaviour (EOS at turn end, greedy stops, NaN/Inf, tokenization, the static checks),
    /// and every later step is judged against it instead of the reference.
    Finetune,
    /// A checkpoint saved during a training run (`[run]`): judged on behaviour only, always
    /// against the reference (the run's base), never an anchor for the steps after it.
    Checkpoint,
}

impl StepKind {
    /// The name manifests and the JSON use.
    pub fn name(self) -> &'static str {
        match self {
            StepKind::Derived => "derived",
            StepKind::Finetune => "finetune",
            StepKind::Checkpoint => "checkpoint",
        }
    }

    /// Judged on behaviour only (its numbers are meant to move).
    pub fn is_training(self) -> bool {
        matches!(self, StepKind::Finetune | StepKind::Checkpoint)
    }
}

/// Checkpoints a run evaluates when neither the manifest nor the command line says; beyond it
/// the first failing checkpoint is binary-searched.
pub const DEFAULT_CHECKPOINT_BUDGET: usize = 8;

/// A training run behind a lineage: where it is, its log, and each step's training step.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunPlan {
    pub dir: PathBuf,
    /// The run's `trainer_state.json` (None when it has none or it could not be read: `log_error`).
    #[serde(skip)]
    pub log: Option<TrainerLog>,
    pub log_error: Option<String>,
    /// Per manifest step: its training step (checkpoint-N → N; the final save: the log's
    /// global_step); None for the base and the exports.
    pub train_step: Vec<Option<u64>>,
    /// Per manifest step: it is one of the run's `checkpoint-N` folders.
    pub is_checkpoint: Vec<bool>,
    /// Checkpoints evaluated at most (the rest binary-searched).
    pub checkpoint_budget: usize,
}

/// What the manifest's author expects (used by tests of the shipped lineages).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub first_bad_step: Option<String>,
    pub cause: Option<String>,
    /// A finding id or metric name the cause must mention.
    pub cause_id: Option<String>,
    /// Finding ids expected on steps, as `"step label: finding id"` (a note such as
    /// `lineage.frozen-layers` on a lineage that passes), among its lint or merge-check findings.
    #[serde(default)]
    pub findings: Vec<String>,
}

/// Run options given on the command line, each over the manifest's value when given.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub prompts: Option<PathBuf>,
    pub max_prompts: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub text: Option<PathBuf>,
    pub ctx: Option<usize>,
    pub chunks: Option<usize>,
    pub thresholds: Option<PathBuf>,
    pub dtype: Option<ComputeDtype>,
    pub device: Option<DeviceChoice>,
    pub gguf_matmul: Option<GgufMatmul>,
    pub blame_budget: Option<usize>,
    pub checkpoint_budget: Option<usize>,
}

/// Where a step's model comes from.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Path { path: PathBuf },
    Adapter { base: PathBuf, adapter: PathBuf },
}

impl Source {
    /// Opens the step's checkpoint (files mapped, nothing loaded).
    pub fn open(&self) -> Result<Checkpoint> {
        match self {
            Source::Path { path } => Checkpoint::open(path),
            Source::Adapter { base, adapter } => Checkpoint::with_adapter(base, adapter),
        }
    }

    /// The step's path(s) for people: `pipelines/../zoo/m` shown as `zoo/m` (display only: the
    /// files are opened by the paths as given).
    pub fn describe(&self) -> String {
        let show = |p: &Path| crate::format::lexical(p).display().to_string();
        match self {
            Source::Path { path } => show(path),
            Source::Adapter { base, adapter } => format!("{}+{}", show(base), show(adapter)),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub label: String,
    pub source: Source,
    pub kind: StepKind,
    pub thresholds: Thresholds,
}

/// A text corpus scored instead of prompts (`text`, `--text`): chunks of `ctx` tokens as
/// llama-perplexity cuts them (`compare::corpus`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorpusPlan {
    pub path: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
}

/// Tokens per chunk when a corpus is given without `ctx` (llama-perplexity's default too).
pub const DEFAULT_CTX: usize = 512;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Manifest {
    pub name: String,
    pub path: Option<PathBuf>,
    pub reference: usize,
    pub prompts: Option<PathBuf>,
    /// Only the first N prompts (`max_prompts`, `--max-prompts`).
    pub max_prompts: Option<usize>,
    pub max_new_tokens: usize,
    /// A text corpus scored instead of the prompts (`text`, `ctx`, `chunks`).
    pub text: Option<CorpusPlan>,
    /// A thresholds file given on the command line (applied over every step's thresholds).
    pub thresholds_file: Option<PathBuf>,
    /// Device, compute dtype (f32 default; auto = each checkpoint's own) and how GGUF steps run
    /// their quantized layers (auto default), for every step.
    pub settings: RunSettings,
    /// Most hybrid forward passes the blame search of the first failing step may run (0: none).
    pub blame_budget: usize,
    pub steps: Vec<Step>,
    pub expect: Option<Expect>,
    /// The training run the steps come from (`[run]`, `bisect RUN_DIR`).
    pub run: Option<RunPlan>,
}

/// Blame passes when a manifest does not say (a 32-layer model: every layer, then the modules of
/// the guiltiest).
pub const DEFAULT_BLAME_BUDGET: usize = 48;

/// `base` with a manifest's `thresholds` table applied and validated (`Thresholds::overlay`); an
/// error names the manifest and the key (`step[1].thresholds.kl_mean_fail`).
fn merge_thresholds(base: &Thresholds, over: Option<&toml::Value>, path: &Path, field: &str) -> Result<Thresholds> {
    let Some(over) = over else { return Ok(base.clone()) };
    let table = over.as_table().ok_or_else(|| Error::Field {
        path: path.into(),
        field: field.into(),
        detail: format!("must be a table of threshold keys, found {} {over}", over.type_str()),
    })?;
    base.overlay(table).map_err(|(key, detail)| Error::Field { path: path.into(), field: format!("{field}.{key}"), detail })
}

impl Manifest {
    /// Reads the manifest (a regular file of at most `MAX_MANIFEST_BYTES`, through
    /// `format::read_capped`) and resolves its paths relative to it.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = read_capped_text(path, MAX_MANIFEST_BYTES, "a manifest")?;
        let raw: RawManifest = toml::from_str(&text).map_err(|e| Error::Field {
            path: path.to_path_buf(),
            field: "manifest".into(),
            detail: e.to_string(),
        })?;
        let root = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { root.join(p) };
        // A checkpoint path relative to the manifest, or a Hub id when no such path exists.
        let ckpt = |p: &Path| {
            let joined = rel(p);
            if !joined.exists() && p.to_str().and_then(HubId::parse).is_some() {
                p.to_path_buf()
            } else {
                joined
            }
        };
        let global = merge_thresholds(&Thresholds::default(), raw.thresholds.as_ref(), path, "thresholds")?;
        let least = if raw.run.is_some() { 0 } else { 2 };
        if raw.steps.len() < least || raw.steps.len() > MAX_STEPS {
            return Err(Error::Field {
                path: path.to_path_buf(),
                field: "step".into(),
                detail: format!("{} steps; a lineage needs 2 to {MAX_STEPS} `[[step]]` tables (or a `[run]` table)", raw.steps.len()),
            });
        }
        let (mut steps, mut run) = match &raw.run {
            Some(r) => {
                let (steps, plan) = expand_run(&rel(&r.dir), r.base.as_deref().map(ckpt), r.checkpoint_budget, &global)
                    .map_err(|e| Error::Field { path: path.to_path_buf(), field: "run".into(), detail: e.to_string() })?;
                (steps, Some(plan))
            }
            None => (Vec::new(), None),
        };
        for (i, s) in raw.steps.iter().enumerate() {
            let field = format!("step[{i}]");
            let source = match (&s.path, &s.base, &s.adapter) {
                (Some(p), None, None) => Source::Path { path: ckpt(p) },
                (None, Some(b), Some(a)) => Source::Adapter { base: ckpt(b), adapter: ckpt(a) },
                _ => {
                    return Err(Error::Field {
                        path: path.to_path_buf(),
                        field,
                        detail: "give either `path`, or both `base` and `adapter`".into(),
                    })
                }
            };
            let label = s.label.clone().unwrap_or_else(|| format!("step{i}"));
            if steps.iter().any(|x: &Step| x.label == label) {
                return Err(Error::Field {
                    path: path.to_path_buf(),
                    field: format!("{field}.label"),
                    detail: format!("`{label}` is used twice"),
                });
            }
            steps.push(Step {
                label,
                source,
                kind: s.kind.unwrap_or_default(),
                thresholds: merge_thresholds(&global, s.thresholds.as_ref(), path, &format!("{field}.thresholds"))?,
            });
            if let Some(r) = &mut run {
                r.train_step.push(None);
                r.is_checkpoint.push(false);
            }
        }
        let reference = match &raw.reference {
            None => 0,
            Some(l) => steps.iter().position(|s| &s.label == l).ok_or_else(|| Error::Field {
                path: path.to_path_buf(),
                field: "reference".into(),
                detail: format!("no step is labelled `{l}`"),
            })?,
        };
        let m = Manifest {
            name: raw.name.unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()),
            path: Some(path.to_path_buf()),
            reference,
            prompts: raw.prompts.as_ref().map(|p| rel(p)),
            max_prompts: match raw.max_prompts {
                Some(0) => {
                    return Err(Error::Field { path: path.to_path_buf(), field: "max_prompts".into(), detail: "must be at least 1".into() })
                }
                n => n,
            },
            max_new_tokens: raw.max_new_tokens.unwrap_or(32),
            text: match (raw.text, raw.ctx, raw.chunks) {
                (Some(t), ctx, chunks) => {
                    if raw.prompts.is_some() {
                        return Err(Error::Field {
                            path: path.to_path_buf(),
                            field: "text".into(),
                            detail: "a lineage scores either `prompts` or a `text` corpus, not both: drop one".into(),
                        });
                    }
                    Some(CorpusPlan { path: rel(&t), ctx: ctx.unwrap_or(DEFAULT_CTX), chunks })
                }
                (None, Some(_), _) | (None, _, Some(_)) => {
                    return Err(Error::Field {
                        path: path.to_path_buf(),
                        field: if raw.ctx.is_some() { "ctx" } else { "chunks" }.into(),
                        detail: "only means something with `text = \"FILE\"` (a corpus scored as llama-perplexity does)".into(),
                    })
                }
                (None, None, None) => None,
            },
            thresholds_file: None,
            settings: RunSettings {
                device: raw.device.unwrap_or_default(),
                dtype: raw.dtype.unwrap_or_default(),
                gguf_matmul: raw.gguf_matmul.unwrap_or_default(),
            },
            blame_budget: raw.blame_budget.unwrap_or(DEFAULT_BLAME_BUDGET),
            steps,
            expect: raw.expect,
            run,
        };
        m.check_paths()?;
        Ok(m)
    }

    /// `bisect RUN_DIR [EXPORT…]`: a training run's output directory as a lineage (base,
    /// checkpoints, final save), then the exports given after it.
    pub fn from_run(dir: &Path, base: Option<&Path>, exports: &[PathBuf]) -> Result<Manifest> {
        let global = Thresholds::default();
        let (mut steps, mut plan) = expand_run(dir, base.map(Path::to_path_buf), None, &global)?;
        for (i, p) in exports.iter().enumerate() {
            let source = match crate::checkpoint::split_base_adapter(p) {
                Some((base, adapter)) => Source::Adapter { base, adapter },
                None => Source::Path { path: p.clone() },
            };
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("export{i}"));
            let label = if steps.iter().any(|s| s.label == name) { format!("export{i}:{name}") } else { name };
            steps.push(Step { label, source, kind: StepKind::Derived, thresholds: global.clone() });
            plan.train_step.push(None);
            plan.is_checkpoint.push(false);
        }
        let m = Manifest {
            name: format!("training run {}", crate::format::lexical(dir).display()),
            path: None,
            reference: 0,
            prompts: None,
            max_prompts: None,
            max_new_tokens: 32,
            text: None,
            thresholds_file: None,
            settings: RunSettings::default(),
            blame_budget: DEFAULT_BLAME_BUDGET,
            steps,
            expect: None,
            run: Some(plan),
        };
        m.check_paths()?;
        Ok(m)
    }

    /// The same lineage with only the steps `keep` says yes to (a binary search's probes).
    pub fn subset(&self, keep: impl Fn(usize) -> bool) -> Manifest {
        let idx: Vec<usize> = (0..self.steps.len()).filter(|&i| i == self.reference || keep(i)).collect();
        let mut m = self.clone();
        m.steps = idx.iter().map(|&i| self.steps[i].clone()).collect();
        m.reference = idx.iter().position(|&i| i == self.reference).expect("kept");
        if let (Some(r), Some(orig)) = (&mut m.run, &self.run) {
            r.train_step = idx.iter().map(|&i| orig.train_step[i]).collect();
            r.is_checkpoint = idx.iter().map(|&i| orig.is_checkpoint[i]).collect();
        }
        m
    }

    /// Every path the run will read exists (a Hub id: is in the local cache), checked before
    /// anything is opened or loaded: a wrong step path is the manifest's error, named by its
    /// field, never a step that "breaks" the lineage after the others ran.
    pub fn check_paths(&self) -> Result<()> {
        let field_of = |i: usize, key: &str| match &self.path {
            Some(_) => format!("step[{i}].{key}"),
            None => format!("step {i} ({})", self.steps[i].label),
        };
        let problem = |p: &Path| -> Option<String> {
            match crate::format::hub::locate(p) {
                Ok(l) if l.exists() => None,
                Ok(_) => Some(format!(
                    "`{}` does not exist{}",
                    p.display(),
                    if self.path.is_some() { " (paths are relative to the manifest)" } else { "" }
                )),
                Err(e) => Some(e.to_string()),
            }
        };
        let err = |field: String, detail: String, p: &Path| match &self.path {
            Some(m) => Error::Field { path: m.clone(), field, detail },
            None => Error::NotACheckpoint { path: p.to_path_buf(), reason: format!("{field}: {detail}") },
        };
        for (i, s) in self.steps.iter().enumerate() {
            let parts: Vec<(&str, &Path)> = match &s.source {
                Source::Path { path } => vec![("path", path)],
                Source::Adapter { base, adapter } => vec![("base", base), ("adapter", adapter)],
            };
            for (key, p) in parts {
                if let Some(detail) = problem(p) {
                    return Err(err(field_of(i, key), detail, p));
                }
            }
        }
        // A prompts path that exists is read (and its kind refused) by `format::read_capped`.
        if let Some(p) = self.prompts.as_deref().filter(|p| !p.exists()) {
            return Err(err("prompts".into(), format!("`{}` does not exist (paths are relative to the manifest)", p.display()), p));
        }
        if let Some(p) = self.text.as_ref().map(|t| t.path.as_path()).filter(|p| !p.exists()) {
            return Err(err("text".into(), format!("`{}` does not exist (paths are relative to the manifest)", p.display()), p));
        }
        Ok(())
    }

    /// The files the run reads besides checkpoints, by role: the manifest itself and the prompts
    /// file (outputs must never replace them).
    pub fn input_files(&self) -> Vec<(&'static str, &Path)> {
        let mut v = Vec::new();
        if let Some(p) = &self.path {
            v.push(("the manifest", p.as_path()));
        }
        if let Some(p) = &self.prompts {
            v.push(("the prompts file", p.as_path()));
        }
        if let Some(t) = &self.text {
            v.push(("the --text corpus", t.path.as_path()));
        }
        if let Some(p) = &self.thresholds_file {
            v.push(("the thresholds file", p.as_path()));
        }
        v
    }

    /// Command-line values over the manifest's (`bisect`/`gate` take compare's run options):
    /// each one given replaces the manifest's; a thresholds file applies over every step's
    /// thresholds, per-step overrides included.
    pub fn apply(&mut self, o: &Overrides) -> Result<()> {
        if let Some(p) = &o.prompts {
            if !p.exists() {
                return Err(Error::Field { path: p.clone(), field: "--prompts".into(), detail: "does not exist".into() });
            }
            self.prompts = Some(p.clone());
            self.text = None;
        }
        if let Some(p) = &o.text {
            if !p.exists() {
                return Err(Error::Field { path: p.clone(), field: "--text".into(), detail: "does not exist".into() });
            }
            let ctx = self.text.as_ref().map_or(DEFAULT_CTX, |t| t.ctx);
            self.text = Some(CorpusPlan { path: p.clone(), ctx, chunks: self.text.as_ref().and_then(|t| t.chunks) });
            self.prompts = None;
        }
        if o.ctx.is_some() || o.chunks.is_some() {
            match &mut self.text {
                Some(t) => {
                    t.ctx = o.ctx.unwrap_or(t.ctx);
                    t.chunks = o.chunks.or(t.chunks);
                }
                None => {
                    return Err(Error::Field {
                        path: self.path.clone().unwrap_or_default(),
                        field: if o.ctx.is_some() { "-c" } else { "--chunks" }.into(),
                        detail: "only means something with a text corpus: give --text FILE (or `text` in the manifest)".into(),
                    })
                }
            }
        }
        self.max_prompts = o.max_prompts.or(self.max_prompts);
        self.max_new_tokens = o.max_new_tokens.unwrap_or(self.max_new_tokens);
        self.settings.dtype = o.dtype.unwrap_or(self.settings.dtype);
        self.settings.device = o.device.unwrap_or(self.settings.device);
        self.settings.gguf_matmul = o.gguf_matmul.unwrap_or(self.settings.gguf_matmul);
        self.blame_budget = o.blame_budget.unwrap_or(self.blame_budget);
        if let Some(b) = o.checkpoint_budget {
            match &mut self.run {
                Some(r) => r.checkpoint_budget = b.max(1),
                None => {
                    return Err(Error::Field {
                        path: self.path.clone().unwrap_or_default(),
                        field: "--checkpoint-budget".into(),
                        detail: "applies to a training run (a `[run]` table or `bisect RUN_DIR`), and this lineage is not one".into(),
                    })
                }
            }
        }
        if let Some(p) = &o.thresholds {
            for s in &mut self.steps {
                s.thresholds = s.thresholds.load_over(p)?;
            }
            self.thresholds_file = Some(p.clone());
        }
        Ok(())
    }

    /// Every checkpoint path the steps open (an adapter step's base and adapter both).
    pub fn checkpoint_paths(&self) -> Vec<&Path> {
        self.steps
            .iter()
            .flat_map(|s| match &s.source {
                Source::Path { path } => vec![path.as_path()],
                Source::Adapter { base, adapter } => vec![base.as_path(), adapter.as_path()],
            })
            .collect()
    }

    /// A manifest from paths on the command line (`bisect A B C`); `X+Y` is base+adapter.
    pub fn from_paths(paths: &[PathBuf]) -> Result<Manifest> {
        if paths.len() < 2 {
            return Err(Error::NotACheckpoint {
                path: paths.first().cloned().unwrap_or_default(),
                reason: "bisect needs a manifest or at least two steps".into(),
            });
        }
        let steps = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let source = match crate::checkpoint::split_base_adapter(p) {
                    Some((base, adapter)) => Source::Adapter { base, adapter },
                    None => Source::Path { path: p.clone() },
                };
                let label = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| format!("step{i}"));
                Step { label: format!("{i}:{label}"), source, kind: StepKind::Derived, thresholds: Thresholds::default() }
            })
            .collect();
        let m = Manifest {
            name: "command line".into(),
            path: None,
            reference: 0,
            prompts: None,
            max_prompts: None,
            max_new_tokens: 32,
            text: None,
            thresholds_file: None,
            settings: RunSettings::default(),
            blame_budget: DEFAULT_BLAME_BUDGET,
            steps,
            expect: None,
            run: None,
        };
        m.check_paths()?;
        Ok(m)
    }
}

/// The base a run trained from: `given`, else what its adapters record
/// (`base_model_name_or_path`: a path, or a Hub id in the local cache).
fn run_base(run: &RunDir, given: Option<PathBuf>) -> Result<PathBuf> {
    if let Some(b) = given {
        return Ok(b);
    }
    let first = run.checkpoints.first().map(|(_, p)| p.clone()).unwrap_or_else(|| run.root.clone());
    let need = |why: String| Error::NotACheckpoint {
        path: first.clone(),
        reason: format!("{why}: give the model the run started from with --base (or `base =` in the manifest's [run] table)"),
    };
    let cfg = first.join("adapter_config.json");
    if !cfg.is_file() {
        return Err(need("a full-model checkpoint does not name the model it was trained from".into()));
    }
    let text = read_capped_text(&cfg, 1 << 20, "adapter_config.json")?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Field {
        path: cfg.clone(),
        field: "adapter_config".into(),
        detail: format!("not JSON: {e}"),
    })?;
    let Some(name) = v.get("base_model_name_or_path").and_then(|b| b.as_str()).filter(|b| !b.is_empty()) else {
        return Err(need("its adapter_config.json has no base_model_name_or_path".into()));
    };
    let p = PathBuf::from(name);
    if p.exists() || HubId::parse(name).is_some() {
        return Ok(p);
    }
    Err(need(format!("its adapter_config.json names `{name}` as the base, which is neither a directory here nor a Hub id")))
}

/// A run's steps: the base (the reference), every checkpoint in step order (kind `checkpoint`),
/// and the final save (kind `finetune`: the exports after it are judged against it).
fn expand_run(dir: &Path, base: Option<PathBuf>, budget: Option<usize>, thresholds: &Thresholds) -> Result<(Vec<Step>, RunPlan)> {
    let run = RunDir::discover(dir)?;
    let base = run_base(&run, base)?;
    let (log, log_error) = match run.state.as_deref().map(TrainerLog::load) {
        Some(Ok(l)) => (Some(l), None),
        Some(Err(e)) => (None, Some(e.to_string())),
        None => (None, Some(format!("no trainer_state.json in {} or its checkpoints", dir.display()))),
    };
    let is_adapter = |p: &Path| p.join("adapter_config.json").is_file();
    let source = |p: &Path| {
        if is_adapter(p) {
            Source::Adapter { base: base.clone(), adapter: p.to_path_buf() }
        } else {
            Source::Path { path: p.to_path_buf() }
        }
    };
    let step = |label: String, source: Source, kind: StepKind| Step { label, source, kind, thresholds: thresholds.clone() };
    let mut steps = vec![step("base".into(), Source::Path { path: base.clone() }, StepKind::Derived)];
    let mut train_step = vec![None];
    for (n, p) in &run.checkpoints {
        steps.push(step(format!("checkpoint-{n}"), source(p), StepKind::Checkpoint));
        train_step.push(Some(*n));
    }
    if run.final_save {
        let last = run.checkpoints.last().map(|c| c.0);
        let at = log.as_ref().and_then(|l| l.global_step).or(last);
        steps.push(step("final".into(), source(&run.root), StepKind::Finetune));
        train_step.push(at);
    } else if let Some(last) = steps.last_mut().filter(|_| !run.checkpoints.is_empty()) {
        // No final save: the last checkpoint is what the exports come from.
        last.kind = StepKind::Finetune;
    }
    let mut is_checkpoint = vec![true; train_step.len()];
    is_checkpoint[0] = false;
    if run.final_save {
        *is_checkpoint.last_mut().expect("final") = false;
    }
    let plan = RunPlan {
        dir: dir.to_path_buf(),
        log,
        log_error,
        train_step,
        is_checkpoint,
        checkpoint_budget: budget.unwrap_or(DEFAULT_CHECKPOINT_BUDGET).max(1),
    };
    Ok((steps, plan))
}
