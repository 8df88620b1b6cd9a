//! A hostile-input safetensors reader: memory-maps a file read-only, parses the header itself and
//! reports every layout problem instead of stopping at the first (the first
//! `MAX_PROBLEMS_PER_KIND` of each kind in full, the rest counted). Entries are parsed one at a
//! time as the JSON is read, never all held as JSON values at once.
//!
//! The upstream `safetensors` crate silently keeps the last of two tensors with the same name and
//! needs the whole file in one buffer, so the header is parsed here. This module never decodes
//! tensor values (that is `checks::values`) and never depends on candle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::de::{Deserializer, MapAccess, Visitor};

use super::dtype::Dtype;
use crate::error::{Error, Result};

/// Largest header accepted. Same limit as the safetensors crate's `MAX_HEADER_SIZE` (100 MB): real
/// headers of 100k-tensor checkpoints are a few MB.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// Layout problems of one kind kept in full; further ones are only counted (`Header::unlisted`).
/// A broken real file has a handful; 64 is more than the findings list per id
/// (`checks::LISTED_PER_ID`), so the cut shown to users is the findings', while a header of 500 000
/// bad entries makes the parser hold 64 of them, not 500 000.
pub const MAX_PROBLEMS_PER_KIND: usize = 64;

/// One tensor as the header declares it. Offsets are relative to the start of the data section.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<u64>,
    pub start: u64,
    pub end: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        // Validated at parse time not to overflow.
        self.shape.iter().product()
    }
}

/// Something wrong with the header's layout. A file with any of these is not loaded for compute.
#[derive(Debug, Clone, PartialEq)]
pub enum LayoutProblem {
    /// Two entries with one name: readers keep one of them silently.
    Duplicate { tensor: String },
    /// An entry that is not `{dtype, shape, data_offsets}` or names an unknown dtype.
    BadEntry { tensor: String, field: &'static str, detail: String },
    /// Shape × dtype does not fit in 64 bits or ends inside a byte.
    Overflow { tensor: String },
    /// `data_offsets` span differs from what dtype × shape needs.
    SizeMismatch { tensor: String, expected: u64, got: u64 },
    /// `data_offsets` reach past the end of the file.
    OutOfBounds { tensor: String, end: u64, data_len: u64 },
    /// Two tensors share bytes.
    Overlap { first: String, second: String },
    /// Bytes no tensor owns between two tensors or after the last one (trailing data / truncation).
    Gap { after: Option<String>, start: u64, len: u64 },
}

impl LayoutProblem {
    /// The header field the problem is about, for findings.
    pub fn field(&self) -> String {
        match self {
            LayoutProblem::Duplicate { tensor } => tensor.clone(),
            LayoutProblem::BadEntry { tensor, field, .. } => format!("{tensor}.{field}"),
            LayoutProblem::Overflow { tensor } => format!("{tensor}.shape"),
            LayoutProblem::SizeMismatch { tensor, .. } | LayoutProblem::OutOfBounds { tensor, .. } => {
                format!("{tensor}.data_offsets")
            }
            LayoutProblem::Overlap { second, .. } => format!("{second}.data_offsets"),
            LayoutProblem::Gap { after, .. } => match after {
                Some(t) => format!("{t}.data_offsets"),
                None => "data_offsets".to_string(),
            },
        }
    }

    pub fn message(&self) -> String {
        match self {
            LayoutProblem::Duplicate { tensor } => {
                format!("tensor `{tensor}` is declared twice; loaders silently keep one of them")
            }
            LayoutProblem::BadEntry { tensor, field, detail } => {
                format!("tensor `{tensor}`: `{field}` {detail}")
            }
            LayoutProblem::Overflow { tensor } => {
                format!("tensor `{tensor}`: shape × dtype size overflows or does not end on a byte")
            }
            LayoutProblem::SizeMismatch { tensor, expected, got } => {
                format!("tensor `{tensor}`: dtype × shape needs {expected} bytes but data_offsets span {got}")
            }
            LayoutProblem::OutOfBounds { tensor, end, data_len } => {
                format!("tensor `{tensor}` ends at data byte {end} but the file has only {data_len} data bytes (truncated file?)")
            }
            LayoutProblem::Overlap { first, second } => {
                format!("tensors `{first}` and `{second}` overlap in the file")
            }
            LayoutProblem::Gap { after, start, len } => match after {
                Some(t) => format!("{len} bytes at data offset {start} after tensor `{t}` belong to no tensor"),
                None => format!("{len} bytes at data offset {start} belong to no tensor"),
            },
        }
    }
}

/// A parsed header plus every layout problem found in it.
#[derive(Debug, Clone)]
pub struct Header {
    /// Entries in file order of appearance in the JSON (duplicates and bad entries excluded).
    pub tensors: Vec<TensorInfo>,
    pub metadata: BTreeMap<String, String>,
    /// Byte offset where the data section starts (8 + header length).
    pub data_start: u64,
    /// The first `MAX_PROBLEMS_PER_KIND` problems of each kind.
    pub problems: Vec<LayoutProblem>,
    /// Problems past that cap, per kind: the first one not kept, and how many were not kept.
    pub unlisted: Vec<(LayoutProblem, u64)>,
}

/// Keeps `p` in `kept` while fewer than `cap` problems of its kind (enum variant) are kept there;
/// past that, counts it in `unlisted` (the first problem not kept of each kind, and how many).
/// Shared by the safetensors and GGUF parsers.
pub(crate) fn push_capped<P>(kept: &mut Vec<P>, unlisted: &mut Vec<(P, u64)>, cap: usize, p: P) {
    let kind = std::mem::discriminant(&p);
    if let Some((_, n)) = unlisted.iter_mut().find(|(q, _)| std::mem::discriminant(q) == kind) {
        *n += 1;
    } else if kept.iter().filter(|q| std::mem::discriminant(*q) == kind).count() < cap {
        kept.push(p);
    } else {
        unlisted.push((p, 1));
    }
}

impl Header {
    /// Problems of every kind, the unlisted ones included.
    pub fn problem_count(&self) -> u64 {
        self.problems.len() as u64 + self.unlisted.iter().map(|(_, n)| n).sum::<u64>()
    }

    fn push(&mut self, p: LayoutProblem) {
        push_capped(&mut self.problems, &mut self.unlisted, MAX_PROBLEMS_PER_KIND, p);
    }
}

/// A memory-mapped, read-only safetensors file.
#[derive(Debug)]
pub struct SafetensorsFile {
    pub path: PathBuf,
    pub header: Header,
    mmap: std::sync::Arc<Mmap>,
    by_name: BTreeMap<String, usize>,
}

impl SafetensorsFile {
    /// Opens and parses; fails only when the header itself cannot be read. Layout problems are in
    /// `header.problems`.
    /// A FIFO or device is refused before it is opened or mapped (`format::open_regular`).
    pub fn open(path: &Path) -> Result<Self> {
        let (file, _) = super::open_regular(path)?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is the
        // usual mmap caveat, accepted by every safetensors reader.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse_header(&mmap, path)?;
        let mut by_name: BTreeMap<String, usize> = header.tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        // A VLM's language-model tensors answer to their canonical names too (`names::canonical_name`).
        for (i, t) in header.tensors.iter().enumerate() {
            if let std::borrow::Cow::Owned(c) = super::names::canonical_name(&t.name) {
                by_name.entry(c).or_insert(i);
            }
        }
        Ok(SafetensorsFile { path: path.to_path_buf(), header, mmap: std::sync::Arc::new(mmap), by_name })
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.header.tensors[i])
    }

    /// The tensor's bytes, or `None` when its offsets fall outside the file.
    pub fn bytes(&self, t: &TensorInfo) -> Option<&[u8]> {
        let start = self.header.data_start.checked_add(t.start)?;
        let end = self.header.data_start.checked_add(t.end)?;
        self.mmap.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    /// `checked_bytes` as a handle that keeps the file mapped (the engine's weights stay there).
    pub fn shared_bytes(&self, name: &str) -> Result<super::MappedBytes> {
        let b = self.checked_bytes(name)?;
        Ok(super::MappedBytes::within(&self.mmap, b))
    }

    /// The tensor's bytes for compute: errors unless the header had no layout problem touching it.
    pub fn checked_bytes(&self, name: &str) -> Result<&[u8]> {
        let t = self.get(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            detail: "not in this file".into(),
        })?;
        let own_field = |f: &str| f == name || f.strip_prefix(name).is_some_and(|rest| rest.starts_with('.'));
        // Problems past the cap are not listed, so any tensor may be among them.
        if !self.header.unlisted.is_empty() {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                detail: format!(
                    "the header has {} layout problems, too many to tell which tensors are sound; run `ckptcheck lint`",
                    self.header.problem_count()
                ),
            });
        }
        if let Some(p) = self.header.problems.iter().find(|p| own_field(&p.field())) {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                detail: format!("{}; run `ckptcheck lint` for all problems", p.message()),
            });
        }
        self.bytes(t).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            detail: "data_offsets fall outside the file".into(),
        })
    }
}

/// Parses the 8-byte length, the JSON header and validates the layout against the buffer length.
pub fn parse_header(buf: &[u8], path: &Path) -> Result<Header> {
    let err = |detail: String| Error::SafetensorsHeader { path: path.to_path_buf(), detail };
    let len_bytes: [u8; 8] = buf
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| err(format!("file is {} bytes, shorter than the 8-byte header length", buf.len())))?;
    let n = u64::from_le_bytes(len_bytes);
    if n > MAX_HEADER_BYTES {
        return Err(err(format!(
            "header length field says {n} bytes, over the {MAX_HEADER_BYTES}-byte limit (corrupt file or not safetensors)"
        )));
    }
    let data_start = 8 + n;
    let json = buf.get(8..data_start as usize).ok_or_else(|| {
        err(format!("header length field says {n} bytes but the file has only {} after it (truncated file)", buf.len() - 8))
    })?;
    let text = std::str::from_utf8(json).map_err(|e| err(format!("header is not UTF-8: {e}")))?;

    let mut h = Header { tensors: Vec::new(), metadata: BTreeMap::new(), data_start, problems: Vec::new(), unlisted: Vec::new() };
    let mut seen = std::collections::HashSet::new();
    for_each_entry(text, &mut |name, value| {
        if name == "__metadata__" {
            match value {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        match v {
                            serde_json::Value::String(s) => {
                                h.metadata.insert(k, s);
                            }
                            other => h.push(LayoutProblem::BadEntry {
                                tensor: "__metadata__".into(),
                                field: "value",
                                detail: format!("`{k}` must be a string, found {other}"),
                            }),
                        }
                    }
                }
                _ => h.push(LayoutProblem::BadEntry {
                    tensor: "__metadata__".into(),
                    field: "value",
                    detail: "must be an object of strings".into(),
                }),
            }
            return;
        }
        if !seen.insert(name.clone()) {
            h.push(LayoutProblem::Duplicate { tensor: name });
            return;
        }
        match parse_entry(&name, &value) {
            Ok(t) => h.tensors.push(t),
            Err(p) => h.push(p),
        }
    })
    .map_err(|e| err(format!("header is not a JSON object: {e}")))?;
    drop(seen);

    let data_len = buf.len() as u64 - data_start;
    let all_entries_valid = h.problems.is_empty();
    let tensors = std::mem::take(&mut h.tensors);
    validate_layout(&tensors, data_len, all_entries_valid, &mut h);
    h.tensors = tensors;
    Ok(h)
}

fn parse_entry(name: &str, v: &serde_json::Value) -> std::result::Result<TensorInfo, LayoutProblem> {
    let bad = |field: &'static str, detail: &str| LayoutProblem::BadEntry { tensor: name.to_string(), field, detail: detail.to_string() };
    let obj = v.as_object().ok_or_else(|| bad("entry", "is not an object"))?;
    let dtype_s = obj.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("dtype", "is missing or not a string"))?;
    let dtype = Dtype::parse(dtype_s).ok_or_else(|| {
        bad(
            "dtype",
            &format!(
                "is `{dtype_s}`, not a safetensors dtype (known: F64 F32 F16 BF16 I64 I32 I16 I8 U64 U32 U16 U8 BOOL F8_E4M3 F8_E5M2 …)"
            ),
        )
    })?;
    let shape = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| bad("shape", "is missing or not a list"))?
        .iter()
        .map(|d| d.as_u64())
        .collect::<Option<Vec<u64>>>()
        .ok_or_else(|| bad("shape", "must hold non-negative integers"))?;
    let offs = obj.get("data_offsets").and_then(|s| s.as_array()).ok_or_else(|| bad("data_offsets", "is missing or not a list"))?;
    let (start, end) = match offs.as_slice() {
        [a, b] => match (a.as_u64(), b.as_u64()) {
            (Some(a), Some(b)) if a <= b => (a, b),
            _ => return Err(bad("data_offsets", "must be two non-negative integers [begin, end] with begin ≤ end")),
        },
        _ => return Err(bad("data_offsets", "must be exactly [begin, end]")),
    };
    let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let expected = numel.and_then(|n| dtype.byte_len(n));
    match expected {
        None => Err(LayoutProblem::Overflow { tensor: name.to_string() }),
        Some(expected) if expected != end - start => {
            Err(LayoutProblem::SizeMismatch { tensor: name.to_string(), expected, got: end - start })
        }
        Some(_) => Ok(TensorInfo { name: name.to_string(), dtype, shape, start, end }),
    }
}

/// Offsets must tile `[0, data_len)` exactly: in bounds, no overlap, no gap, no trailing bytes.
/// Gap checks are skipped when entries were dropped as invalid (their bytes would show as gaps).
fn validate_layout(tensors: &[TensorInfo], data_len: u64, all_entries_valid: bool, h: &mut Header) {
    let mut order: Vec<&TensorInfo> = tensors.iter().collect();
    order.sort_by_key(|t| (t.start, t.end));
    let mut cursor = 0u64;
    let mut prev: Option<&TensorInfo> = None;
    for t in order {
        if t.end > data_len {
            h.push(LayoutProblem::OutOfBounds { tensor: t.name.clone(), end: t.end, data_len });
        }
        if t.start < cursor {
            if let Some(p) = prev {
                h.push(LayoutProblem::Overlap { first: p.name.clone(), second: t.name.clone() });
            }
        } else if t.start > cursor && all_entries_valid {
            h.push(LayoutProblem::Gap { after: prev.map(|p| p.name.clone()), start: cursor, len: t.start - cursor });
        }
        if t.end >= cursor {
            cursor = t.end;
            prev = Some(t);
        }
    }
    if cursor < data_len && all_entries_valid {
        h.push(LayoutProblem::Gap { after: prev.map(|p| p.name.clone()), start: cursor, len: data_len - cursor });
    }
}

/// Calls `f` on each entry of a JSON object, in file order, duplicate keys included (serde_json's
/// maps keep only the last). One entry's JSON value is alive at a time.
fn for_each_entry(text: &str, f: &mut dyn FnMut(String, serde_json::Value)) -> serde_json::Result<()> {
    struct Entries<'f>(&'f mut dyn FnMut(String, serde_json::Value));
    impl<'de> Visitor<'de> for Entries<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                (self.0)(k, v);
            }
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    (&mut de).deserialize_map(Entries(f))?;
    de.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data_len: usize) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend(std::iter::repeat_n(0u8, data_len));
        b
    }

    fn problems(header: &str, data_len: usize) -> Vec<LayoutProblem> {
        parse_header(&file(header, data_len), Path::new("x.safetensors")).unwrap().problems
    }

    #[test]
    fn clean_file_has_no_problems() {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2,2],"data_offsets":[8,16]}}"#;
        let parsed = parse_header(&file(h, 16), Path::new("x")).unwrap();
        assert!(parsed.problems.is_empty(), "{:?}", parsed.problems);
        assert_eq!(parsed.tensors.len(), 2);
        assert_eq!(parsed.metadata["format"], "pt");
    }

    #[test]
    fn duplicate_names_are_reported() {
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
        let p = problems(h, 8);
        assert!(p.contains(&LayoutProblem::Duplicate { tensor: "a".into() }), "{p:?}");
    }

    #[test]
    fn truncated_data_is_out_of_bounds() {
        let h = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let p = problems(h, 10);
        assert!(matches!(p[0], LayoutProblem::OutOfBounds { end: 16, data_len: 10, .. }), "{p:?}");
    }

    #[test]
    fn overlap_gap_and_trailing_bytes() {
        let h = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
        assert!(matches!(problems(h, 12)[0], LayoutProblem::Overlap { .. }));
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
        assert!(matches!(problems(h, 12)[0], LayoutProblem::Gap { start: 4, len: 4, .. }));
        let h = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        assert!(matches!(problems(h, 9)[0], LayoutProblem::Gap { start: 4, len: 5, .. }));
    }

    #[test]
    fn shape_dtype_mismatch_and_overflow() {
        let h = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
        assert!(matches!(problems(h, 8)[0], LayoutProblem::SizeMismatch { expected: 12, got: 8, .. }));
        let h = r#"{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#;
        assert!(matches!(problems(h, 8)[0], LayoutProblem::Overflow { .. }));
    }

    #[test]
    fn unknown_dtype_names_the_field() {
        let h = r#"{"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#;
        let p = problems(h, 1);
        assert!(matches!(&p[0], LayoutProblem::BadEntry { field: "dtype", .. }), "{p:?}");
        assert!(p[0].message().contains("`Q4`"));
    }

    #[test]
    fn hostile_header_lengths_are_errors_not_panics() {
        let e = parse_header(&[1, 2, 3], Path::new("t.safetensors")).unwrap_err().to_string();
        assert!(e.contains("t.safetensors") && e.contains("shorter than the 8-byte"), "{e}");
        let mut b = u64::MAX.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        let e = parse_header(&b, Path::new("t")).unwrap_err().to_string();
        assert!(e.contains("over the"), "{e}");
        let mut b = 100u64.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        let e = parse_header(&b, Path::new("t")).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        let e = parse_header(&file("[1,2]", 0), Path::new("t")).unwrap_err().to_string();
        assert!(e.contains("not a JSON object"), "{e}");
    }

    /// Regression (issue 12, hostile inputs round two): 500 000 bad entries made the header hold
    /// 500 000 problems. The first `MAX_PROBLEMS_PER_KIND` of a kind are kept, the rest counted,
    /// and a file with unlisted problems lends no tensor to compute.
    #[test]
    fn problems_past_the_cap_are_counted_not_kept() {
        let n = MAX_PROBLEMS_PER_KIND + 100;
        let mut h = String::from(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}"#);
        for i in 0..n {
            h.push_str(&format!(r#","bad{i}":{{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#));
        }
        h.push_str(r#","a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#);
        let parsed = parse_header(&file(&h, 4), Path::new("x")).unwrap();
        let bad = parsed.problems.iter().filter(|p| matches!(p, LayoutProblem::BadEntry { .. })).count();
        assert_eq!(bad, MAX_PROBLEMS_PER_KIND);
        assert!(parsed.problems.contains(&LayoutProblem::Duplicate { tensor: "a".into() }), "another kind is still kept");
        assert_eq!(parsed.unlisted.len(), 1);
        let (first, more) = &parsed.unlisted[0];
        assert_eq!(*more, 100);
        assert!(first.message().contains(&format!("bad{MAX_PROBLEMS_PER_KIND}")), "{}", first.message());
        assert_eq!(parsed.problem_count(), n as u64 + 1);
    }

    /// Poor man's fuzzing in the normal test run (the libFuzzer target is in fuzz/): random byte
    /// flips, truncations and length-field rewrites of a valid file never panic.
    #[test]
    fn mutated_files_never_panic() {
        let h = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}}"#;
        let good = file(h, 32);
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..5000 {
            let mut b = good.clone();
            match next() % 3 {
                0 => {
                    for _ in 0..(1 + next() % 4) {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
                1 => b.truncate((next() as usize) % b.len()),
                _ => b[..8].copy_from_slice(&(next() % 400).to_le_bytes()),
            }
            if let Ok(parsed) = parse_header(&b, Path::new("m")) {
                for p in &parsed.problems {
                    let _ = (p.message(), p.field());
                }
            }
        }
    }
}
