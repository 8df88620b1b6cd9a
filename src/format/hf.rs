//! A Hugging Face model directory: the JSON side files, the tokenizer, the chat template and the
//! safetensors weights (single file or sharded with `model.safetensors.index.json`).
//!
//! Opening never fails because one side file is bad: parse failures, and side files that are not
//! regular files (a FIFO, `/dev/zero` behind a symlink), are kept in `load_problems` for `lint` to
//! report. It fails only when there are no weights to read at all, or only pickles. Side files
//! are read through `format::read_capped`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use super::names::canonical_name;
use super::safetensors::{SafetensorsFile, TensorInfo};
use super::{read_capped, read_capped_text};
use crate::error::{Error, Result};

pub const CONFIG: &str = "config.json";
pub const GENERATION_CONFIG: &str = "generation_config.json";
pub const TOKENIZER_JSON: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
pub const SPECIAL_TOKENS_MAP: &str = "special_tokens_map.json";
pub const CHAT_TEMPLATE_JINJA: &str = "chat_template.jinja";
pub const CHAT_TEMPLATE_JSON: &str = "chat_template.json";
pub const SINGLE_WEIGHTS: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// Side files (JSON, `tokenizer.json`, `chat_template.jinja`) larger than this are refused: real
/// ones are at most a few tens of MB (tokenizer.json of a 256k-vocab model is ~35 MB).
pub const MAX_SIDE_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// A parsed JSON side file.
#[derive(Debug, Clone)]
pub struct JsonDoc {
    pub path: PathBuf,
    pub value: Value,
}

impl JsonDoc {
    pub fn file_name(&self) -> String {
        file_name(&self.path)
    }
}

/// `model.safetensors.index.json`.
#[derive(Debug, Clone)]
pub struct ShardIndex {
    pub path: PathBuf,
    /// Tensor name → shard file name.
    pub weight_map: BTreeMap<String, String>,
    pub total_size: Option<u64>,
}

/// One weights file; a file whose header cannot be read is kept with its error.
#[derive(Debug)]
pub struct Shard {
    pub name: String,
    pub path: PathBuf,
    pub file: Result<SafetensorsFile>,
}

/// An HF checkpoint directory (or a PEFT adapter directory, see `is_adapter`).
#[derive(Debug)]
pub struct HfDir {
    pub root: PathBuf,
    pub config: Option<JsonDoc>,
    pub generation_config: Option<JsonDoc>,
    pub tokenizer_config: Option<JsonDoc>,
    pub special_tokens_map: Option<JsonDoc>,
    pub chat_template_json: Option<JsonDoc>,
    pub adapter_config: Option<JsonDoc>,
    pub chat_template_jinja: Option<(PathBuf, String)>,
    pub tokenizer_json: Option<PathBuf>,
    pub index: Option<ShardIndex>,
    pub shards: Vec<Shard>,
    /// Shard files named by the index but not present.
    pub missing_shards: Vec<String>,
    /// `.bin`/`.pt`/`.pth` files present (never loaded).
    pub pickles: Vec<PathBuf>,
    /// Side files that exist but could not be parsed.
    pub load_problems: Vec<Error>,
    /// Canonical tensor name (`canonical_name`) → (shard index, tensor index) over readable
    /// shards; first shard wins.
    by_name: BTreeMap<String, (usize, usize)>,
}

impl HfDir {
    pub fn open(root: &Path) -> Result<HfDir> {
        let mut load_problems = Vec::new();
        let mut json = |name: &str| match read_json(&root.join(name)) {
            Ok(v) => v,
            Err(e) => {
                load_problems.push(e);
                None
            }
        };
        let config = json(CONFIG);
        let generation_config = json(GENERATION_CONFIG);
        let tokenizer_config = json(TOKENIZER_CONFIG);
        let special_tokens_map = json(SPECIAL_TOKENS_MAP);
        let chat_template_json = json(CHAT_TEMPLATE_JSON);
        let adapter_config = json(ADAPTER_CONFIG);
        let index_doc = json(SHARD_INDEX);

        let chat_template_jinja = {
            let p = root.join(CHAT_TEMPLATE_JINJA);
            match read_capped_text(&p, MAX_SIDE_FILE_BYTES, "a side file") {
                Ok(s) => Some((p, s)),
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    load_problems.push(e);
                    None
                }
            }
        };
        // Loaded later (`TokenizerInfo::load`); here only refused when it is not a regular file.
        let tokenizer_json = {
            let p = root.join(TOKENIZER_JSON);
            match std::fs::metadata(&p) {
                Ok(m) if m.is_file() => Some(p),
                Ok(_) => {
                    if let Err(e) = super::open_regular(&p) {
                        load_problems.push(e);
                    }
                    None
                }
                Err(_) => None,
            }
        };

        let mut index = None;
        if let Some(doc) = index_doc {
            match parse_index(&doc) {
                Ok(i) => index = Some(i),
                Err(e) => load_problems.push(e),
            }
        }

        let entries = list_dir(root)?;
        let pickles: Vec<PathBuf> = entries.iter().filter(|p| pickle_kind(p).is_some()).cloned().collect();
        let is_adapter = adapter_config.is_some();
        let mut shard_names: Vec<String> = Vec::new();
        let mut missing_shards = Vec::new();
        if let Some(idx) = &index {
            let mut names: Vec<&String> = idx.weight_map.values().collect();
            names.sort();
            names.dedup();
            for n in names {
                if root.join(n).is_file() {
                    shard_names.push(n.clone());
                } else {
                    missing_shards.push(n.clone());
                }
            }
        } else if is_adapter && root.join(ADAPTER_WEIGHTS).is_file() {
            shard_names.push(ADAPTER_WEIGHTS.to_string());
        } else if root.join(SINGLE_WEIGHTS).is_file() {
            shard_names.push(SINGLE_WEIGHTS.to_string());
        } else {
            shard_names = entries.iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")).map(|p| file_name(p)).collect();
            shard_names.sort();
        }

        if shard_names.is_empty() && missing_shards.is_empty() {
            if let Some(p) = pickles.first() {
                return Err(Error::Pickle { path: p.clone(), what: pickle_kind(p).unwrap_or("pickle") });
            }
            return Err(Error::NotACheckpoint {
                path: root.to_path_buf(),
                reason: format!("no `{SINGLE_WEIGHTS}`, `{SHARD_INDEX}`, `{ADAPTER_WEIGHTS}` or other `*.safetensors` file in it"),
            });
        }

        let shards: Vec<Shard> = shard_names
            .into_iter()
            .map(|name| {
                let path = root.join(&name);
                let file = SafetensorsFile::open(&path);
                Shard { name, path, file }
            })
            .collect();
        let mut by_name = BTreeMap::new();
        for (si, s) in shards.iter().enumerate() {
            if let Ok(f) = &s.file {
                for (ti, t) in f.header.tensors.iter().enumerate() {
                    by_name.entry(canonical_name(&t.name).into_owned()).or_insert((si, ti));
                }
            }
        }
        Ok(HfDir {
            root: root.to_path_buf(),
            config,
            generation_config,
            tokenizer_config,
            special_tokens_map,
            chat_template_json,
            adapter_config,
            chat_template_jinja,
            tokenizer_json,
            index,
            shards,
            missing_shards,
            pickles,
            load_problems,
            by_name,
        })
    }

    /// Why `model.safetensors.index.json` exists but could not be read, if it did not: the
    /// engine follows the index and never guesses shards by name around a broken one.
    pub fn index_problem(&self) -> Option<String> {
        let path = self.root.join(SHARD_INDEX);
        if self.index.is_some() || !path.exists() {
            return None;
        }
        let why = self.load_problems.iter().map(|e| e.to_string()).find(|m| m.contains(SHARD_INDEX));
        Some(why.unwrap_or_else(|| format!("`{}` could not be read", path.display())))
    }

    /// A PEFT adapter directory: it has `adapter_config.json`, even one that does not parse (lint
    /// reports that file as unreadable; it is not a model missing its config.json).
    pub fn is_adapter(&self) -> bool {
        self.adapter_config.is_some() || self.root.join(ADAPTER_CONFIG).is_file()
    }

    /// Every readable tensor, with the file it lives in.
    pub fn tensors(&self) -> impl Iterator<Item = (&SafetensorsFile, &TensorInfo)> {
        self.by_name.values().filter_map(|&(si, ti)| {
            let f = self.shards[si].file.as_ref().ok()?;
            Some((f, &f.header.tensors[ti]))
        })
    }

    /// A tensor by its stored or its canonical name (`canonical_name`): `model.layers.0.mlp.up_proj.weight`
    /// finds a VLM's `language_model.model.layers.0.mlp.up_proj.weight`.
    pub fn tensor(&self, name: &str) -> Option<(&SafetensorsFile, &TensorInfo)> {
        let &(si, ti) = self.by_name.get(canonical_name(name).as_ref())?;
        let f = self.shards[si].file.as_ref().ok()?;
        Some((f, &f.header.tensors[ti]))
    }

    /// Path relative to the checkpoint root, for messages.
    pub fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root).unwrap_or(p).display().to_string()
    }
}

/// Reads a JSON side file: `Ok(None)` when absent, an error naming the file when unreadable, not a
/// regular file, or over `MAX_SIDE_FILE_BYTES`.
pub fn read_json(path: &Path) -> Result<Option<JsonDoc>> {
    let bytes = match read_capped(path, MAX_SIDE_FILE_BYTES, "a side file") {
        Ok(b) => b,
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let value = serde_json::from_slice(&bytes).map_err(|e| Error::Json { path: path.to_path_buf(), detail: e.to_string() })?;
    Ok(Some(JsonDoc { path: path.to_path_buf(), value }))
}

fn parse_index(doc: &JsonDoc) -> Result<ShardIndex> {
    let field_err =
        |field: &str, detail: &str| Error::Field { path: doc.path.clone(), field: field.to_string(), detail: detail.to_string() };
    let map = doc
        .value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| field_err("weight_map", "missing or not an object of tensor name → shard file"))?;
    if map.is_empty() {
        return Err(field_err("weight_map", "is empty: it maps no tensor to a shard"));
    }
    let mut weight_map = BTreeMap::new();
    for (k, v) in map {
        let shard = v.as_str().ok_or_else(|| field_err(&format!("weight_map.{k}"), "must be a shard file name"))?;
        // A shard name must stay inside the checkpoint directory.
        if shard.contains('/') || shard.contains('\\') || shard == ".." {
            return Err(field_err(&format!("weight_map.{k}"), &format!("`{shard}` is not a plain file name")));
        }
        weight_map.insert(k.clone(), shard.to_string());
    }
    let total_size = doc.value.get("metadata").and_then(|m| m.get("total_size")).and_then(|t| t.as_u64());
    Ok(ShardIndex { path: doc.path.clone(), weight_map, total_size })
}

fn list_dir(root: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(root).map_err(|e| Error::io(root, e))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(|e| Error::io(root, e))?;
        out.push(e.path());
    }
    out.sort();
    Ok(out)
}

/// Names the pickle flavour for files that must never be loaded.
pub fn pickle_kind(p: &Path) -> Option<&'static str> {
    match p.extension()?.to_str()? {
        "bin" => Some("PyTorch `.bin` checkpoint"),
        "pt" | "pth" => Some("PyTorch `torch.save` file"),
        "pkl" | "pickle" => Some("pickle"),
        "ckpt" => Some("PyTorch Lightning checkpoint"),
        _ => None,
    }
}

pub fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}
