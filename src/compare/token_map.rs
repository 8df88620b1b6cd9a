//! A declared correspondence between two tokenizers' ids (`compare --token-map`), for a candidate
//! whose vocabulary was trimmed, reordered or rebuilt: the reference's sequences are fed to it
//! through the map, and both distributions are compared on the tokens both have (each
//! renormalized there), with the reference's probability outside that shared vocabulary reported
//! beside the scores.
//!
//! Two ways to declare one: `auto` pairs ids whose token strings are equal (what a vocabulary
//! trimmer or a re-indexing keeps), or a JSON file: an object `{"<reference id>": <candidate id>}`
//! or an array indexed by reference id whose entries are a candidate id or `null`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::format::read_capped;
use crate::format::tokens::TokenizerInfo;

/// Largest token-map file read (a 256 k vocabulary as a JSON object is ~5 MiB).
const MAX_MAP_BYTES: u64 = 64 << 20;
const NONE: u32 = u32::MAX;

/// Where a map came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MapSource {
    /// Ids paired by equal token strings.
    Auto,
    File(PathBuf),
}

/// The shared vocabulary of a reference and a candidate: pairs `(reference id, candidate id)`,
/// one-to-one, in reference-id order.
#[derive(Debug, Clone)]
pub struct TokenMap {
    pub source: MapSource,
    /// The shared vocabulary, sorted by reference id.
    pub pairs: Vec<(u32, u32)>,
    /// Per reference id: its index in `pairs`, or `NONE`.
    slot_of_ref: Vec<u32>,
    /// Per candidate id: the reference id, or `NONE`.
    ref_of_cand: Vec<u32>,
    pub reference_ids: usize,
    pub candidate_ids: usize,
}

impl TokenMap {
    /// Pairs every reference id with the candidate id of the same token string (the first such
    /// candidate id, each used once).
    pub fn by_token_text(reference: &TokenizerInfo, candidate: &TokenizerInfo) -> TokenMap {
        let (rn, cn) = (space(reference), space(candidate));
        let mut by_text: HashMap<String, u32> = HashMap::with_capacity(cn as usize);
        for id in (0..cn).rev() {
            if let Some(t) = candidate.token(id) {
                by_text.insert(t, id); // lowest id wins
            }
        }
        let mut used = vec![false; cn as usize];
        let mut pairs = Vec::new();
        for id in 0..rn {
            if let Some(c) = reference.token(id).and_then(|t| by_text.get(&t).copied()) {
                if !std::mem::replace(&mut used[c as usize], true) {
                    pairs.push((id, c));
                }
            }
        }
        TokenMap::new(MapSource::Auto, pairs, rn as usize, cn as usize)
    }

    /// Reads a map file, checking every id against both id spaces; errors name the file and the
    /// entry.
    pub fn from_file(path: &Path, reference: &TokenizerInfo, candidate: &TokenizerInfo) -> Result<TokenMap> {
        let bytes = read_capped(path, MAX_MAP_BYTES, "a token map")?;
        let field = |f: String, detail: String| Error::Field { path: path.to_path_buf(), field: f, detail };
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| field("(document)".into(), format!("not JSON: {e}")))?;
        let (rn, cn) = (space(reference) as u64, space(candidate) as u64);
        let id = |v: &Value, at: &str| -> Result<Option<u32>> {
            match v {
                Value::Null => Ok(None),
                v => match v.as_u64() {
                    Some(c) if c < cn => Ok(Some(c as u32)),
                    Some(c) => Err(field(at.into(), format!("candidate id {c} is outside the candidate's {cn} ids"))),
                    None => Err(field(at.into(), format!("{v} is not a token id (a non-negative integer or null)"))),
                },
            }
        };
        let mut raw = Vec::new();
        match &doc {
            Value::Object(m) => {
                for (k, v) in m {
                    let r: u64 = k.parse().map_err(|_| field(k.clone(), "the key is not a reference token id".into()))?;
                    if r >= rn {
                        return Err(field(k.clone(), format!("reference id {r} is outside the reference's {rn} ids")));
                    }
                    if let Some(c) = id(v, k)? {
                        raw.push((r as u32, c));
                    }
                }
            }
            Value::Array(a) => {
                if a.len() as u64 > rn {
                    return Err(field("(document)".into(), format!("{} entries, more than the reference's {rn} ids", a.len())));
                }
                for (r, v) in a.iter().enumerate() {
                    if let Some(c) = id(v, &format!("[{r}]"))? {
                        raw.push((r as u32, c));
                    }
                }
            }
            _ => {
                return Err(field(
                    "(document)".into(),
                    "expected an object {\"<reference id>\": <candidate id>} or an array indexed by reference id".into(),
                ))
            }
        }
        raw.sort_unstable();
        let mut seen: HashMap<u32, u32> = HashMap::with_capacity(raw.len());
        for &(r, c) in &raw {
            if let Some(prev) = seen.insert(c, r) {
                return Err(field(
                    r.to_string(),
                    format!("candidate id {c} is mapped from reference ids {prev} and {r}; a token map is one-to-one"),
                ));
            }
        }
        Ok(TokenMap::new(MapSource::File(path.to_path_buf()), raw, rn as usize, cn as usize))
    }

    fn new(source: MapSource, pairs: Vec<(u32, u32)>, reference_ids: usize, candidate_ids: usize) -> TokenMap {
        let mut slot_of_ref = vec![NONE; reference_ids];
        let mut ref_of_cand = vec![NONE; candidate_ids];
        for (k, &(r, c)) in pairs.iter().enumerate() {
            slot_of_ref[r as usize] = k as u32;
            ref_of_cand[c as usize] = r;
        }
        TokenMap { source, pairs, slot_of_ref, ref_of_cand, reference_ids, candidate_ids }
    }

    /// The candidate's id for reference id `r`.
    pub fn candidate(&self, r: u32) -> Option<u32> {
        self.slot(r).map(|k| self.pairs[k].1)
    }

    /// The reference's id for candidate id `c`.
    pub fn reference(&self, c: u32) -> Option<u32> {
        self.ref_of_cand.get(c as usize).copied().filter(|&r| r != NONE)
    }

    /// Where reference id `r` sits in the shared vocabulary (the rows `restrict` returns).
    pub fn slot(&self, r: u32) -> Option<usize> {
        self.slot_of_ref.get(r as usize).copied().filter(|&k| k != NONE).map(|k| k as usize)
    }

    /// A reference row and a candidate row of logits, each cut to the shared vocabulary in the
    /// same order (index `slot(r)` is reference id `r`); softmax renormalizes each there.
    pub fn restrict(&self, reference: &[f32], candidate: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let at = |row: &[f32], i: u32| row.get(i as usize).copied().unwrap_or(f32::NAN);
        self.pairs.iter().map(|&(r, c)| (at(reference, r), at(candidate, c))).unzip()
    }

    /// Reference ids in `ids` translated to the candidate's, or the first one without a
    /// counterpart (its index).
    pub fn to_candidate(&self, ids: &[u32]) -> std::result::Result<Vec<u32>, usize> {
        ids.iter().enumerate().map(|(i, &r)| self.candidate(r).ok_or(i)).collect()
    }

    /// What reports say of it.
    pub fn info(&self) -> TokenMapInfo {
        TokenMapInfo {
            source: match &self.source {
                MapSource::Auto => "auto (equal token strings)".into(),
                MapSource::File(p) => p.display().to_string(),
            },
            shared: self.pairs.len(),
            reference_ids: self.reference_ids,
            candidate_ids: self.candidate_ids,
            ref_mass_outside_mean: f64::NAN,
            ref_mass_outside_max: f64::NAN,
        }
    }
}

/// A comparison made through a token map: the map and the reference's probability on tokens the
/// candidate does not have (what the shared-vocabulary scores leave out), over scored positions.
#[derive(Debug, Clone, Serialize)]
pub struct TokenMapInfo {
    pub source: String,
    /// Ids both vocabularies have (the shared vocabulary the scores are computed on).
    pub shared: usize,
    pub reference_ids: usize,
    pub candidate_ids: usize,
    pub ref_mass_outside_mean: f64,
    pub ref_mass_outside_max: f64,
}

fn space(t: &TokenizerInfo) -> u32 {
    t.id_space.min(u32::MAX as u64 - 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(words: &[&str]) -> TokenizerInfo {
        let vocab: Vec<String> = words.iter().enumerate().map(|(i, w)| format!("\"{w}\": {i}")).collect();
        let json = format!(
            r#"{{"version":"1.0","model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"{}"}},"pre_tokenizer":{{"type":"Whitespace"}}}}"#,
            vocab.join(","),
            words[0]
        );
        TokenizerInfo::from_tokenizer(Path::new("t/tokenizer.json"), tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap())
    }

    #[test]
    fn auto_pairs_equal_strings_and_restricts_both_rows_alike() {
        let r = tok(&["<unk>", "a", "b", "c", "d"]);
        let c = tok(&["<unk>", "d", "b", "x"]);
        let m = TokenMap::by_token_text(&r, &c);
        assert_eq!(m.pairs, vec![(0, 0), (2, 2), (4, 1)]);
        assert_eq!((m.candidate(4), m.candidate(1), m.reference(1), m.reference(3)), (Some(1), None, Some(4), None));
        assert_eq!(m.to_candidate(&[4, 2, 0]), Ok(vec![1, 2, 0]));
        assert_eq!(m.to_candidate(&[4, 3]), Err(1));
        let (a, b) = m.restrict(&[0.0, 1.0, 2.0, 3.0, 4.0], &[10.0, 11.0, 12.0, 13.0]);
        assert_eq!((a, b), (vec![0.0, 2.0, 4.0], vec![10.0, 12.0, 11.0]));
        assert_eq!(m.slot(4), Some(2));
    }

    #[test]
    fn map_files_are_checked_entry_by_entry() {
        let dir = std::env::temp_dir().join(format!("ckptcheck-token-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (r, c) = (tok(&["<unk>", "a", "b", "c"]), tok(&["<unk>", "b", "a"]));
        let read = |text: &str| {
            let p = dir.join("map.json");
            std::fs::write(&p, text).unwrap();
            TokenMap::from_file(&p, &r, &c).map(|m| m.pairs).map_err(|e| e.to_string())
        };
        assert_eq!(read(r#"{"0": 0, "1": 2, "2": 1, "3": null}"#), Ok(vec![(0, 0), (1, 2), (2, 1)]));
        assert_eq!(read("[0, 2, 1]"), Ok(vec![(0, 0), (1, 2), (2, 1)]));
        let err = |text: &str| read(text).unwrap_err();
        assert!(
            err(r#"{"1": 2, "2": 2}"#).contains("field `2`: candidate id 2 is mapped from reference ids 1 and 2"),
            "{}",
            err(r#"{"1": 2, "2": 2}"#)
        );
        assert!(err(r#"{"1": 9}"#).contains("candidate id 9 is outside the candidate's 3 ids"));
        assert!(err(r#"{"7": 1}"#).contains("reference id 7 is outside the reference's 4 ids"));
        assert!(err(r#"{"a": 1}"#).contains("the key is not a reference token id"));
        assert!(err(r#"[0, -1]"#).contains("field `[1]`: -1 is not a token id"));
        assert!(err("3").contains("expected an object"));
        assert!(err("{").contains("not JSON"));
        std::fs::remove_dir_all(&dir).ok();
    }
}
