//! PEFT LoRA adapters: `adapter_config.json` + `adapter_model.safetensors`, mapped onto the base
//! checkpoint's tensor names.
//!
//! PEFT saves `base_model.model.<base name>.lora_A.weight` `[r, in]`, `...lora_B.weight`
//! `[out, r]`, DoRA's `...lora_magnitude_vector` `[out]`, and `modules_to_save` copies as
//! `base_model.model.<base name>.weight`. The update is `ΔW = s · B · A` with `s = alpha / r`, or
//! `alpha / sqrt(r)` under rsLoRA; `rank_pattern` / `alpha_pattern` override r and alpha per module.
//!
//! Fused MoE experts (transformers 5 holds them as 3-D parameters, `mlp.experts.gate_up_proj`
//! `[E, 2·I, H]` and `mlp.experts.down_proj` `[E, H, I]`) are adapted through peft's
//! `target_parameters` (`lora.ParamWrapper`): one factor pair per parameter, saved as
//! `<module>.lora_A.weight` `[r·E, in]` / `<module>.lora_B.weight` `[out, r·E]`, a second parameter
//! on the same module one `base_layer.` deeper. Expert e's delta is `s · B_e · A_e` with
//! `A_e = A[e·r .. (e+1)·r, :]` and `B_e[:, k] = B[:, k·E + e]` (peft reshapes B as `[out, r, E]`).
//! The adapter is expanded here into one module per stored expert weight
//! (`<module>.E.{gate,up,down}_proj`; gate and up are the two halves of gate_up_proj's rows), so
//! the engine and merge-check see per-expert linears like any other; `Adapter::factors` slices.
//! Those are Qwen-MoE's stored names; paired with a base that stores its experts as Mixtral does
//! (`block_sparse_moe.experts.E.{w1,w3,w2}`, which transformers 5 renames to `mlp.experts` in
//! memory, where peft names them), `Adapter::name_experts_like` renames them to the base's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::hf::{HfDir, ADAPTER_CONFIG};
use crate::error::{Error, Result};

pub const PEFT_PREFIX: &str = "base_model.model.";

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoraConfig {
    pub r: u64,
    pub alpha: f64,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub fan_in_fan_out: bool,
    /// A list of module-name suffixes, or one regex the whole name must match.
    pub target_modules: Targets,
    pub layers_to_transform: Option<Vec<u64>>,
    pub modules_to_save: Vec<String>,
    pub rank_pattern: BTreeMap<String, u64>,
    pub alpha_pattern: BTreeMap<String, f64>,
    /// peft's `target_parameters`: parameters adapted directly (fused MoE experts).
    pub target_parameters: Vec<String>,
    pub base_model: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub enum Targets {
    Names(Vec<String>),
    Regex(String),
}

/// One adapted linear layer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoraModule {
    /// Base module name, e.g. `model.layers.0.self_attn.q_proj` (its weight is `<name>.weight`).
    pub base: String,
    pub a: String,
    pub b: String,
    pub magnitude: Option<String>,
    pub rank: u64,
    pub alpha: f64,
    pub scale: f64,
    /// Set when the factors are one expert's share of a fused-expert parameter's factors.
    pub expert: Option<ExpertSlice>,
}

/// Where one expert weight's factors sit in a `target_parameters` factor pair.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ExpertSlice {
    /// The adapted parameter, e.g. `model.layers.0.mlp.experts.gate_up_proj`.
    pub parameter: String,
    pub expert: usize,
    pub experts: usize,
    /// The rows of the parameter's per-expert output this weight is: `[start, end)`.
    pub rows: (usize, usize),
}

/// One module's factors as f32: `a` is `[rank, inp]`, `b` is `[out, rank]`, row-major.
#[derive(Debug, Clone)]
pub struct Factors {
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub rank: usize,
    pub inp: usize,
    pub out: usize,
}

/// A loaded adapter.
#[derive(Debug)]
pub struct Adapter {
    pub dir: HfDir,
    pub config: LoraConfig,
    pub modules: Vec<LoraModule>,
    /// `modules_to_save` copies: adapter tensor → base tensor name.
    pub saved: Vec<(String, String)>,
    /// Adapter tensors that are neither LoRA factors nor saved modules.
    pub unrecognised: Vec<String>,
}

fn field(path: &Path, f: &str, detail: impl Into<String>) -> Error {
    Error::Field { path: path.to_path_buf(), field: f.to_string(), detail: detail.into() }
}

impl LoraConfig {
    pub fn from_json(v: &Value, path: &Path) -> Result<LoraConfig> {
        let peft_type = v.get("peft_type").and_then(Value::as_str).unwrap_or("LORA");
        if peft_type != "LORA" {
            return Err(field(path, "peft_type", format!("`{peft_type}` adapters are not supported (LORA is)")));
        }
        let r = v
            .get("r")
            .and_then(Value::as_u64)
            .filter(|&r| r > 0 && r < 1 << 20)
            .ok_or_else(|| field(path, "r", "must be a positive integer"))?;
        let alpha = v.get("lora_alpha").and_then(Value::as_f64).ok_or_else(|| field(path, "lora_alpha", "must be a number"))?;
        let target_modules = match v.get("target_modules") {
            Some(Value::String(s)) => Targets::Regex(s.clone()),
            Some(Value::Array(a)) => Targets::Names(a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()),
            _ => Targets::Names(Vec::new()),
        };
        let layers_to_transform = match v.get("layers_to_transform") {
            Some(Value::Number(n)) => n.as_u64().map(|x| vec![x]),
            Some(Value::Array(a)) => Some(a.iter().filter_map(Value::as_u64).collect()),
            _ => None,
        };
        let map_u = |k: &str| -> BTreeMap<String, u64> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|o| o.iter().filter_map(|(k, x)| Some((k.clone(), x.as_u64()?))).collect())
                .unwrap_or_default()
        };
        let map_f = |k: &str| -> BTreeMap<String, f64> {
            v.get(k)
                .and_then(Value::as_object)
                .map(|o| o.iter().filter_map(|(k, x)| Some((k.clone(), x.as_f64()?))).collect())
                .unwrap_or_default()
        };
        Ok(LoraConfig {
            r,
            alpha,
            use_rslora: v.get("use_rslora").and_then(Value::as_bool).unwrap_or(false),
            use_dora: v.get("use_dora").and_then(Value::as_bool).unwrap_or(false),
            fan_in_fan_out: v.get("fan_in_fan_out").and_then(Value::as_bool).unwrap_or(false),
            target_modules,
            layers_to_transform,
            modules_to_save: v
                .get("modules_to_save")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            rank_pattern: map_u("rank_pattern"),
            alpha_pattern: map_f("alpha_pattern"),
            target_parameters: match v.get("target_parameters") {
                Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
                Some(Value::String(s)) => vec![s.clone()],
                _ => Vec::new(),
            },
            base_model: v.get("base_model_name_or_path").and_then(Value::as_str).map(str::to_string),
        })
    }

    /// Rank and alpha for a module, after `rank_pattern` / `alpha_pattern` (PEFT matches a
    /// pattern key as a regex against the end of the module name, at a dot boundary).
    pub fn rank_alpha(&self, module: &str) -> (u64, f64) {
        let find = |keys: Vec<&String>| keys.into_iter().find(|k| pattern_matches(k, module)).cloned();
        let rank = find(self.rank_pattern.keys().collect()).map(|k| self.rank_pattern[&k]).unwrap_or(self.r);
        let alpha = find(self.alpha_pattern.keys().collect()).map(|k| self.alpha_pattern[&k]).unwrap_or(self.alpha);
        (rank, alpha)
    }

    pub fn scale(&self, rank: u64, alpha: f64) -> f64 {
        if self.use_rslora {
            alpha / (rank as f64).sqrt()
        } else {
            alpha / rank as f64
        }
    }

    /// Whether PEFT would adapt this base module (for the "targeted but missing" check).
    pub fn targets(&self, module: &str) -> bool {
        let hit = match &self.target_modules {
            Targets::Regex(r) => regex::Regex::new(&format!("^(?:{r})$")).map(|re| re.is_match(module)).unwrap_or(false),
            Targets::Names(names) => {
                names.iter().any(|n| n == "all-linear" && module.contains(".layers.") || module == n || module.ends_with(&format!(".{n}")))
            }
        };
        if !hit {
            return false;
        }
        match &self.layers_to_transform {
            Some(ls) => layer_index(module).is_some_and(|i| ls.contains(&i)),
            None => true,
        }
    }
}

/// The per-expert modules of one fused-expert module's `target_parameters` factor pairs. Which
/// parameter a pair adapts is read from its shapes (peft's nesting order is not in the file):
/// gate_up_proj maps H → 2·I, down_proj I → H.
fn expert_modules(dir: &HfDir, config: &LoraConfig, module: &str, pairs: &[(String, String)]) -> Result<Vec<LoraModule>> {
    let path = dir.root.join(super::hf::ADAPTER_WEIGHTS);
    let shape = |n: &str| dir.tensor(n).map(|(_, t)| t.shape.clone()).unwrap_or_default();
    let err = |tensor: &str, detail: String| Error::Tensor { path: path.clone(), tensor: tensor.to_string(), detail };
    let params: Vec<&str> = config
        .target_parameters
        .iter()
        .filter_map(|t| {
            let (tmod, p) = t.rsplit_once('.')?;
            (module == tmod || module.ends_with(&format!(".{tmod}"))).then_some(p)
        })
        .collect();
    // (a, b, in, out) per pair.
    let dims: Vec<(&String, &String, u64, u64)> = pairs
        .iter()
        .map(|(a, b)| match (&shape(a)[..], &shape(b)[..]) {
            (&[_, i], &[o, _]) => Ok((a, b, i, o)),
            _ => Err(err(a, "a LoRA factor is 2-D".into())),
        })
        .collect::<Result<_>>()?;
    let which: Vec<&str> = match (&dims[..], &params[..]) {
        ([_], [p]) => vec![*p],
        ([x, y], [_, _]) if params.contains(&"gate_up_proj") && params.contains(&"down_proj") => {
            // gate_up (H → 2I) and down (I → H): gate_up.out = 2·down.in, down.out = gate_up.in.
            let fits = |g: &(&String, &String, u64, u64), d: &(&String, &String, u64, u64)| g.3 == 2 * d.2 && d.3 == g.2;
            match (fits(x, y), fits(y, x)) {
                (true, false) => vec!["gate_up_proj", "down_proj"],
                (false, true) => vec!["down_proj", "gate_up_proj"],
                _ => {
                    return Err(err(
                        x.0,
                        format!("`{module}`: cannot tell which of gate_up_proj / down_proj each factor pair adapts from their shapes"),
                    ))
                }
            }
        }
        _ => {
            return Err(err(
                dims[0].0,
                format!(
                "`{module}` has {} target_parameters factor pairs but target_parameters name {:?} for it: cannot map them to parameters",
                dims.len(),
                params
            ),
            ))
        }
    };
    let stored = pairs[0].0.strip_prefix(PEFT_PREFIX).unwrap_or(&pairs[0].0);
    let stored = stored.split(".base_layer").next().unwrap_or(stored).trim_end_matches(".lora_A.weight");
    let (r, alpha) = config.rank_alpha(stored);
    let scale = config.scale(r, alpha);
    let mut out = Vec::new();
    for ((a, b, _, o), p) in dims.iter().zip(which) {
        let ra = shape(a).first().copied().unwrap_or(0);
        if r == 0 || ra % r != 0 {
            return Err(err(a, format!("{ra} rows are not experts × r = {r}: adapter_config.json's r (or rank_pattern) does not belong to these factors; save the adapter's own config")));
        }
        let experts = (ra / r) as usize;
        let o = *o as usize;
        let parts: Vec<(&str, (usize, usize))> = match p {
            "gate_up_proj" if o.is_multiple_of(2) => vec![("gate_proj", (0, o / 2)), ("up_proj", (o / 2, o))],
            "down_proj" => vec![("down_proj", (0, o))],
            _ => {
                return Err(err(
                    a,
                    format!("target parameter `{module}.{p}` is not a fused expert parameter the engine knows (gate_up_proj, down_proj)"),
                ))
            }
        };
        for e in 0..experts {
            for (name, rows) in &parts {
                out.push(LoraModule {
                    base: format!("{module}.{e}.{name}"),
                    a: (*a).clone(),
                    b: (*b).clone(),
                    magnitude: None,
                    rank: r,
                    alpha,
                    scale,
                    expert: Some(ExpertSlice { parameter: format!("{module}.{p}"), expert: e, experts, rows: *rows }),
                });
            }
        }
    }
    Ok(out)
}

fn pattern_matches(key: &str, module: &str) -> bool {
    regex::Regex::new(&format!(r"(^|.*\.)(?:{key})$")).map(|re| re.is_match(module)).unwrap_or(key == module)
}

/// The `N` in `....layers.N....`.
pub fn layer_index(name: &str) -> Option<u64> {
    let mut it = name.split('.');
    while let Some(p) = it.next() {
        if p == "layers" || p == "h" || p == "blocks" {
            return it.next()?.parse().ok();
        }
    }
    None
}

impl Adapter {
    pub fn open(root: &Path) -> Result<Adapter> {
        let dir = HfDir::open(root)?;
        let cfg_doc = dir.adapter_config.clone().ok_or_else(|| Error::NotACheckpoint {
            path: root.to_path_buf(),
            reason: format!("no `{ADAPTER_CONFIG}`: not a PEFT adapter directory"),
        })?;
        let config = LoraConfig::from_json(&cfg_doc.value, &cfg_doc.path)?;
        // base module → (lora_A, lora_B, magnitude) tensor names
        type Parts = (Option<String>, Option<String>, Option<String>);
        let mut by_base: BTreeMap<String, Parts> = BTreeMap::new();
        let mut saved = Vec::new();
        let mut unrecognised = Vec::new();
        let names: Vec<String> = dir.tensors().map(|(_, t)| t.name.clone()).collect();
        for n in names {
            // A VLM's adapter names its base's stored language-model prefix: keyed by canonical names.
            let bare = crate::format::hf::canonical_name(n.strip_prefix(PEFT_PREFIX).unwrap_or(&n)).into_owned();
            if let Some(base) = bare.strip_suffix(".lora_A.weight") {
                by_base.entry(base.to_string()).or_default().0 = Some(n.clone());
            } else if let Some(base) = bare.strip_suffix(".lora_B.weight") {
                by_base.entry(base.to_string()).or_default().1 = Some(n.clone());
            } else if let Some(base) = bare.strip_suffix(".lora_magnitude_vector") {
                by_base.entry(base.to_string()).or_default().2 = Some(n.clone());
            } else if config.modules_to_save.iter().any(|m| bare.split('.').any(|p| p == m)) {
                saved.push((n.clone(), bare.clone()));
            } else {
                unrecognised.push(n.clone());
            }
        }
        let mut modules = Vec::new();
        // target_parameters wrappers: `<module>(.base_layer)*` → (a, b), expanded per expert below.
        let mut fused: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for (base, (a, b, m)) in by_base {
            if let (false, Some(a), Some(b), None) = (config.target_parameters.is_empty(), &a, &b, &m) {
                let module = base.split(".base_layer").next().unwrap_or(&base).to_string();
                if module.ends_with(".experts") {
                    fused.entry(module).or_default().push((a.clone(), b.clone()));
                    continue;
                }
            }
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                (a, b) => {
                    return Err(Error::Tensor {
                        path: dir.root.join(super::hf::ADAPTER_WEIGHTS),
                        tensor: a.or(b).unwrap_or_default(),
                        detail: format!("`{base}` has only one of lora_A / lora_B; the adapter file is incomplete"),
                    })
                }
            };
            let rank = dir.tensor(&a).and_then(|(_, t)| t.shape.first().copied()).unwrap_or(config.r);
            // peft matches rank/alpha patterns against the module's stored name.
            let stored = a.strip_prefix(PEFT_PREFIX).unwrap_or(&a).strip_suffix(".lora_A.weight").unwrap_or(&base);
            let (_, alpha) = config.rank_alpha(stored);
            let scale = config.scale(rank, alpha);
            modules.push(LoraModule { base, a, b, magnitude: m, rank, alpha, scale, expert: None });
        }
        for (module, pairs) in fused {
            modules.extend(expert_modules(&dir, &config, &module, &pairs)?);
        }
        Ok(Adapter { dir, config, modules, saved, unrecognised })
    }

    /// Names the per-expert modules as the base stores them: `has(name)` says whether the base
    /// has tensor `name`. An expert module the base lacks under Qwen-MoE's names takes Mixtral's
    /// when the base has that; anything else is left for the caller's missing-module checks.
    pub fn name_experts_like(&mut self, has: &dyn Fn(&str) -> bool) {
        use crate::format::arch::{ExpertNames, Moe};
        for m in self.modules.iter_mut().filter(|m| m.expert.is_some()) {
            let weight = format!("{}.weight", m.base);
            if has(&weight) {
                continue;
            }
            if let Some((layer, Some((e, p)))) = Moe::parse_name(&weight) {
                let mixtral = ExpertNames::Mixtral.expert(layer, e, p);
                if has(&format!("{mixtral}.weight")) {
                    m.base = mixtral;
                }
            }
        }
    }

    /// A module's factors as f32 (an expert's share sliced out of its parameter's factors).
    pub fn factors(&self, m: &LoraModule) -> Result<Factors> {
        let path = self.dir.root.join(super::hf::ADAPTER_WEIGHTS);
        let bad = |detail: String| Error::Tensor { path: path.clone(), tensor: m.a.clone(), detail };
        let read = |name: &str| -> Result<(Vec<f32>, usize, usize)> {
            let (f, t) = self.dir.tensor(name).ok_or_else(|| Error::Tensor {
                path: path.clone(),
                tensor: name.to_string(),
                detail: "listed in the adapter but not stored".into(),
            })?;
            let [rows, cols] = t.shape[..] else {
                return Err(bad(format!("`{name}` has shape {:?}, a LoRA factor is 2-D", t.shape)));
            };
            let v = crate::format::dtype::decode_f32(t.dtype, f.checked_bytes(name)?)
                .ok_or_else(|| bad(format!("`{name}` has dtype {}, not a float type", t.dtype)))?;
            Ok((v, rows as usize, cols as usize))
        };
        let ((a, ra, inp), (b, out, rb)) = (read(&m.a)?, read(&m.b)?);
        let Some(x) = &m.expert else {
            if ra != rb {
                return Err(bad(format!("lora_A {ra}×{inp} and lora_B {out}×{rb} do not multiply")));
            }
            return Ok(Factors { a, b, rank: ra, inp, out });
        };
        let (r, e, n) = (m.rank as usize, x.expert, x.experts);
        let (lo, hi) = x.rows;
        if ra != r * n || rb != r * n || hi > out || lo >= hi {
            return Err(bad(format!(
                "lora_A {ra}×{inp} and lora_B {out}×{rb} are not {n} experts × rank {r} (rows {lo}..{hi} of `{}`)",
                x.parameter
            )));
        }
        let a_e = a[e * r * inp..(e + 1) * r * inp].to_vec();
        let b_e = (lo..hi).flat_map(|o| (0..r).map(move |k| (o, k))).map(|(o, k)| b[o * rb + k * n + e]).collect();
        Ok(Factors { a: a_e, b: b_e, rank: r, inp, out: hi - lo })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.root.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> LoraConfig {
        LoraConfig::from_json(&v, Path::new("adapter_config.json")).unwrap()
    }

    #[test]
    fn scale_plain_rslora_and_patterns() {
        let c = cfg(json!({"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
                           "rank_pattern": {"layers.1.self_attn.q_proj": 4}, "alpha_pattern": {"v_proj": 32}}));
        assert_eq!(c.scale(8, 16.0), 2.0);
        assert_eq!(c.rank_alpha("model.layers.1.self_attn.q_proj"), (4, 16.0));
        assert_eq!(c.rank_alpha("model.layers.11.self_attn.q_proj"), (8, 16.0));
        assert_eq!(c.rank_alpha("model.layers.0.self_attn.v_proj"), (8, 32.0));
        let c = cfg(json!({"r": 16, "lora_alpha": 16, "use_rslora": true, "target_modules": "q_proj"}));
        assert_eq!(c.scale(16, 16.0), 4.0);
    }

    #[test]
    fn targets_by_suffix_regex_and_layers() {
        let c = cfg(json!({"r": 8, "lora_alpha": 8, "target_modules": ["q_proj"], "layers_to_transform": [0, 2]}));
        assert!(c.targets("model.layers.0.self_attn.q_proj"));
        assert!(!c.targets("model.layers.1.self_attn.q_proj"));
        assert!(!c.targets("model.layers.0.self_attn.k_proj"));
        let c = cfg(json!({"r": 8, "lora_alpha": 8, "target_modules": ".*\\.(q|v)_proj"}));
        assert!(c.targets("model.layers.3.self_attn.v_proj"));
        assert!(!c.targets("model.layers.3.self_attn.o_proj"));
    }

    #[test]
    fn bad_config_names_the_field() {
        let e = LoraConfig::from_json(&json!({"r": 0, "lora_alpha": 8}), Path::new("a/adapter_config.json")).unwrap_err().to_string();
        assert!(e.contains("adapter_config.json") && e.contains("`r`"), "{e}");
        let e = LoraConfig::from_json(&json!({"peft_type": "IA3", "r": 8}), Path::new("x")).unwrap_err().to_string();
        assert!(e.contains("IA3"), "{e}");
    }
}
