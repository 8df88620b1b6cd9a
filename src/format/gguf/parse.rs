//! Parsing a GGUF header from hostile bytes: the size caps (llama.cpp's own limits where it has
//! them), the little-endian `Reader` that checks every count and length against the bytes left
//! before reserving anything, `parse_header`, and `validate_layout`, which lists tensors placed
//! where no reader can use it instead of stopping at the first (the first
//! `MAX_PROBLEMS_PER_KIND` of each kind in full, the rest counted).
//!
//! It reads the bytes it is given and nothing else: no file I/O or memory-mapping (`GgufFile`), no
//! interpretation of metadata keys (`metadata`, `tokenizer`), no tensor values.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::types::{Array, Value};
use super::types::{GgmlType, REMOVED_TYPES, TYPE_COUNT};
use crate::error::Error;
use crate::format::safetensors::push_capped;

pub const MAGIC: &[u8; 4] = b"GGUF";
/// Newest GGUF version (llama.cpp `GGUF_VERSION`). Version 1 used 32-bit counts and is refused, as
/// llama.cpp refuses it.
pub const MAX_VERSION: u32 = 3;
/// `general.alignment` when the key is absent (llama.cpp `GGUF_DEFAULT_ALIGNMENT`).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// llama.cpp `GGML_MAX_DIMS`.
pub const MAX_DIMS: u32 = 4;
/// llama.cpp `GGML_MAX_NAME` (64, including the terminating NUL): llama.cpp refuses longer names.
pub const MAX_TENSOR_NAME_BYTES: usize = 63;
/// Longest string accepted (llama.cpp `GGUF_MAX_STRING_LENGTH`, 1 GiB). Real chat templates are
/// tens of kB.
pub const MAX_STRING_BYTES: u64 = 1 << 30;
/// Longest array accepted (llama.cpp `GGUF_MAX_ARRAY_ELEMENTS`, 2^30). The largest real arrays are
/// token lists and merges, under a million entries.
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// Arrays of arrays nest at most this deep. gguf-py writes nested arrays; llama.cpp's reader does
/// not read them at all; no real file nests deeper than 2. The cap bounds recursion.
pub const MAX_ARRAY_DEPTH: usize = 4;
/// Most tensors accepted. The largest published GGUFs (MoE models with per-expert tensors) have a
/// few thousand per file; 2^20 is far above that and bounds the tensor table.
pub const MAX_TENSORS: u64 = 1 << 20;
/// Most metadata keys accepted. Real files have 20–60; 2^20 bounds the key table.
pub const MAX_KV: u64 = 1 << 20;
/// Layout problems of one kind kept in full; further ones are only counted (`Header::unlisted`).
/// Same cap and reasoning as the safetensors reader's: a table of 2^20 tensors each placed wrong
/// makes the header hold 64 problems per kind, not millions.
pub const MAX_PROBLEMS_PER_KIND: usize = crate::format::safetensors::MAX_PROBLEMS_PER_KIND;
/// Smallest possible encoding of one tensor info: name length (8) + n_dims (4) + type (4) +
/// offset (8). A count the remaining bytes cannot hold is refused before anything is allocated.
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Smallest possible metadata entry: key length (8) + a 1-byte key + type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 14;

// ---------------------------------------------------------------------------------------------
// errors

/// A GGUF that cannot be read at all: which file, which field, what was wrong.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{path}`: GGUF {field}: {kind}")]
pub struct GgufError {
    pub path: PathBuf,
    /// `header version`, `metadata key #12 (`tokenizer.ggml.tokens`)`, `tensor #3 (`blk.0.attn_q.weight`) type`…
    pub field: String,
    pub kind: GgufErrorKind,
}

/// What was wrong; tests match on these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GgufErrorKind {
    #[error("file ends at byte {file_len} but {need} more bytes are needed at byte {at} (truncated file?)")]
    Truncated { at: u64, need: u64, file_len: u64 },
    #[error("magic is {found:?}, not \"GGUF\" (not a GGUF file)")]
    BadMagic { found: String },
    #[error("version {version} is not supported: {why}")]
    Version { version: u32, why: &'static str },
    #[error("count {} exceeds {}: {why}", pow2(*count), pow2(*limit))]
    CountTooLarge { count: u64, limit: u64, why: &'static str },
    #[error("string length {} exceeds {}: {why}", pow2(*len), pow2(*limit))]
    StringTooLong { len: u64, limit: u64, why: &'static str },
    #[error("array length {} exceeds {}: {why}", pow2(*len), pow2(*limit))]
    ArrayTooLong { len: u64, limit: u64, why: &'static str },
    #[error("arrays nest deeper than {MAX_ARRAY_DEPTH} levels")]
    ArrayTooDeep,
    #[error("value type id {0} is not a GGUF type (0..=12)")]
    BadValueType(u32),
    #[error("key is empty")]
    EmptyKey,
    #[error("key appears twice; readers silently keep one of them")]
    DuplicateKey,
    #[error("must be a uint32 (as llama.cpp requires) but is {found}")]
    AlignmentType { found: &'static str },
    #[error("alignment {0} is not a power of two (llama.cpp refuses the file)")]
    BadAlignment(u64),
    #[error("{0} dimensions, but ggml tensors have at most {MAX_DIMS} (GGML_MAX_DIMS)")]
    TooManyDims(u32),
    #[error("dimension {dim} is {value}, which is negative as ggml's int64 (corrupt file)")]
    NegativeDim { dim: usize, value: u64 },
    #[error("ggml type id {0} is not one llama.cpp defines (known ids 0..{TYPE_COUNT}, see ggml.h)")]
    UnknownType(u32),
    #[error("ggml type {id} ({name}) is no longer supported: {why}")]
    RemovedType { id: u32, name: &'static str, why: &'static str },
    #[error("{ne0} elements per row is not a multiple of {ggml_type}'s block size {block} (llama.cpp refuses the file)")]
    RowNotBlockMultiple { ne0: u64, ggml_type: GgmlType, block: u64 },
    #[error("shape × type size overflows 64 bits")]
    SizeOverflow,
    #[error("tensor name appears twice; readers silently keep one of them")]
    DuplicateTensor,
}

/// `2^62` for large powers of two (hostile lengths usually are), the plain number otherwise.
fn pow2(n: u64) -> String {
    if n >= 1 << 20 && n.is_power_of_two() {
        format!("2^{}", n.trailing_zeros())
    } else {
        n.to_string()
    }
}

impl From<GgufError> for Error {
    fn from(e: GgufError) -> Error {
        Error::Field { path: e.path, field: e.field, detail: e.kind.to_string() }
    }
}

type Res<T> = std::result::Result<T, GgufErrorKind>;

// ---------------------------------------------------------------------------------------------
// tensors and layout

/// One tensor info as the header declares it.
#[derive(Debug, Clone, Serialize)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (innermost), the reverse of the PyTorch shape.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset from the start of the data section, as stored.
    pub offset: u64,
    /// Bytes the data occupies (from the type's block size and bytes per block).
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        // Validated at parse time not to overflow.
        self.dims.iter().product()
    }
    /// PyTorch order (`[rows, cols]` for a weight matrix).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A tensor placed where no reader can use it. A file with any of these is not loaded for compute.
#[derive(Debug, Clone, PartialEq)]
pub enum LayoutProblem {
    /// Data reaches past the end of the file.
    OutOfBounds { tensor: String, end: u64, file_len: u64 },
    /// Offset is not a multiple of `general.alignment`.
    Misaligned { tensor: String, offset: u64, alignment: u64 },
    /// Two tensors share bytes.
    Overlap { first: String, second: String },
    /// Not at the offset llama.cpp computes (each tensor at the padded end of the one declared
    /// before it); llama.cpp refuses such files even when they are otherwise sound.
    NotPacked { tensor: String, offset: u64, expected: u64 },
    /// Name of 64 bytes or more: llama.cpp refuses it (`GGML_MAX_NAME`).
    NameTooLong { tensor: String, len: usize },
}

impl LayoutProblem {
    pub fn tensor(&self) -> &str {
        match self {
            LayoutProblem::OutOfBounds { tensor, .. }
            | LayoutProblem::Misaligned { tensor, .. }
            | LayoutProblem::NotPacked { tensor, .. }
            | LayoutProblem::NameTooLong { tensor, .. } => tensor,
            LayoutProblem::Overlap { second, .. } => second,
        }
    }

    pub fn message(&self) -> String {
        match self {
            LayoutProblem::OutOfBounds { tensor, end, file_len } => format!(
                "tensor `{tensor}` ends at byte {end} but the file has only {file_len} bytes (truncated file?)"
            ),
            LayoutProblem::Misaligned { tensor, offset, alignment } => format!(
                "tensor `{tensor}` starts at data offset {offset}, not a multiple of general.alignment = {alignment}"
            ),
            LayoutProblem::Overlap { first, second } => format!("tensors `{first}` and `{second}` overlap in the file"),
            LayoutProblem::NotPacked { tensor, offset, expected } => format!(
                "tensor `{tensor}` is at data offset {offset} but llama.cpp expects {expected} (tensors must follow each other in declaration order): llama.cpp refuses this file"
            ),
            LayoutProblem::NameTooLong { tensor, len } => format!(
                "tensor name `{tensor}` is {len} bytes; llama.cpp refuses names of {} bytes or more",
                MAX_TENSOR_NAME_BYTES + 1
            ),
        }
    }
}

/// Everything before the tensor data.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section (end of the tensor infos, padded to `alignment`).
    pub data_start: u64,
    /// The first `MAX_PROBLEMS_PER_KIND` problems of each kind.
    pub problems: Vec<LayoutProblem>,
    /// Problems past that cap, per kind: the first one not kept, and how many were not kept.
    pub unlisted: Vec<(LayoutProblem, u64)>,
    pub(super) by_key: HashMap<String, usize>,
    pub(super) by_name: HashMap<String, usize>,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }
    fn take(&mut self, n: u64) -> Res<&'a [u8]> {
        let truncated = || GgufErrorKind::Truncated { at: self.pos as u64, need: n, file_len: self.buf.len() as u64 };
        let n_usize = usize::try_from(n).map_err(|_| truncated())?;
        let end = self.pos.checked_add(n_usize).ok_or_else(truncated)?;
        let s = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Res<[u8; N]> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u8(&mut self) -> Res<u8> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Res<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Res<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Res<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Res<String> {
        let len = self.u64()?;
        if len > MAX_STRING_BYTES {
            return Err(GgufErrorKind::StringTooLong {
                len,
                limit: MAX_STRING_BYTES,
                why: "llama.cpp's GGUF_MAX_STRING_LENGTH (corrupt length field?)",
            });
        }
        if len > self.remaining() {
            return Err(GgufErrorKind::StringTooLong {
                len,
                limit: self.remaining(),
                why: "the bytes left in the file (truncated or corrupt length field?)",
            });
        }
        // Lossy: a token that is not UTF-8 is still listed, with U+FFFD in its place.
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn value(&mut self, vtype: u32, depth: usize) -> Res<Value> {
        Ok(match vtype {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::String(self.string()?),
            9 => {
                let elem = self.u32()?;
                let len = self.u64()?;
                Value::Array(self.array_body(elem, len, depth + 1)?)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            t => return Err(GgufErrorKind::BadValueType(t)),
        })
    }

    fn array_body(&mut self, elem: u32, len: u64, depth: usize) -> Res<Array> {
        if depth > MAX_ARRAY_DEPTH {
            return Err(GgufErrorKind::ArrayTooDeep);
        }
        // Smallest encoding of one element: strings carry an 8-byte length, nested arrays a
        // 4-byte type and an 8-byte length.
        let min_elem: u64 = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            t => return Err(GgufErrorKind::BadValueType(t)),
        };
        if len > MAX_ARRAY_LEN {
            return Err(GgufErrorKind::ArrayTooLong {
                len,
                limit: MAX_ARRAY_LEN,
                why: "llama.cpp's GGUF_MAX_ARRAY_ELEMENTS (corrupt length field?)",
            });
        }
        let fits = self.remaining() / min_elem;
        if len > fits {
            return Err(GgufErrorKind::ArrayTooLong {
                len,
                limit: fits,
                why: "what the bytes left in the file can hold (truncated or corrupt length field?)",
            });
        }
        // `len` is now bounded by the file size, so reserving it is safe.
        let n = len as usize;
        macro_rules! fixed {
            ($variant:ident, $read:expr) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push($read(self)?);
                }
                Array::$variant(v)
            }};
        }
        Ok(match elem {
            0 => fixed!(U8, |r: &mut Self| r.u8()),
            1 => fixed!(I8, |r: &mut Self| r.u8().map(|x| x as i8)),
            2 => fixed!(U16, |r: &mut Self| r.u16()),
            3 => fixed!(I16, |r: &mut Self| r.u16().map(|x| x as i16)),
            4 => fixed!(U32, |r: &mut Self| r.u32()),
            5 => fixed!(I32, |r: &mut Self| r.u32().map(|x| x as i32)),
            6 => fixed!(F32, |r: &mut Self| r.u32().map(f32::from_bits)),
            7 => fixed!(Bool, |r: &mut Self| r.u8().map(|x| x != 0)),
            8 => fixed!(String, |r: &mut Self| r.string()),
            10 => fixed!(U64, |r: &mut Self| r.u64()),
            11 => fixed!(I64, |r: &mut Self| r.u64().map(|x| x as i64)),
            12 => fixed!(F64, |r: &mut Self| r.u64().map(f64::from_bits)),
            _ => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    let e = self.u32()?;
                    let l = self.u64()?;
                    v.push(self.array_body(e, l, depth + 1)?);
                }
                Array::Array(v)
            }
        })
    }
}

/// Parses a whole GGUF held in `buf`. Fails on anything that makes the header unreadable;
/// tensors placed badly are listed in `problems`.
pub fn parse_header(buf: &[u8], path: &Path) -> Result<Header, GgufError> {
    let err = |field: String, kind: GgufErrorKind| GgufError { path: path.to_path_buf(), field, kind };
    let mut r = Reader { buf, pos: 0 };
    let magic = r.array::<4>().map_err(|k| err("header magic".into(), k))?;
    if &magic != MAGIC {
        return Err(err("header magic".into(), GgufErrorKind::BadMagic { found: String::from_utf8_lossy(&magic).into_owned() }));
    }
    let version = r.u32().map_err(|k| err("header version".into(), k))?;
    let why = match version {
        0 => Some("version 0 does not exist"),
        1 => Some("GGUF v1 (32-bit counts) is no longer read by llama.cpp; re-convert the model"),
        v if v & 0xFFFF == 0 => Some("the file looks big-endian (version bytes reversed); only little-endian GGUF is read"),
        v if v > MAX_VERSION => Some("newer than version 3, the newest this reader knows"),
        _ => None,
    };
    if let Some(why) = why {
        return Err(err("header version".into(), GgufErrorKind::Version { version, why }));
    }
    let n_tensors = r.u64().map_err(|k| err("header tensor_count".into(), k))?;
    let n_kv = r.u64().map_err(|k| err("header metadata_kv_count".into(), k))?;
    let count_check = |field: &str, n: u64, cap: u64, min: u64, what: &'static str, r: &Reader| {
        if n > cap {
            return Err(err(field.into(), GgufErrorKind::CountTooLarge { count: n, limit: cap, why: what }));
        }
        let fits = r.remaining() / min;
        if n > fits {
            return Err(err(
                field.into(),
                GgufErrorKind::CountTooLarge {
                    count: n,
                    limit: fits,
                    why: "what the bytes left in the file can hold (truncated or corrupt count?)",
                },
            ));
        }
        Ok(())
    };
    count_check(
        "header tensor_count",
        n_tensors,
        MAX_TENSORS,
        MIN_TENSOR_INFO_BYTES,
        "the tensor limit (real files have a few thousand)",
        &r,
    )?;
    count_check("header metadata_kv_count", n_kv, MAX_KV, MIN_KV_BYTES, "the metadata limit (real files have under a hundred keys)", &r)?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut by_key = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.string().map_err(|k| err(format!("metadata key #{i} name"), k))?;
        let field = || format!("metadata key #{i} (`{key}`)");
        if key.is_empty() {
            return Err(err(field(), GgufErrorKind::EmptyKey));
        }
        if by_key.contains_key(&key) {
            return Err(err(field(), GgufErrorKind::DuplicateKey));
        }
        let vtype = r.u32().map_err(|k| err(field(), k))?;
        let value = r.value(vtype, 0).map_err(|k| err(field(), k))?;
        by_key.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match by_key.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(other) => return Err(err("metadata `general.alignment`".into(), GgufErrorKind::AlignmentType { found: other.type_name() })),
    };
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(err("metadata `general.alignment`".into(), GgufErrorKind::BadAlignment(alignment)));
    }

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    let mut by_name = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = r.string().map_err(|k| err(format!("tensor #{i} name"), k))?;
        let field = |what: &str| format!("tensor #{i} (`{name}`) {what}");
        if by_name.contains_key(&name) {
            return Err(err(field("name"), GgufErrorKind::DuplicateTensor));
        }
        let n_dims = r.u32().map_err(|k| err(field("n_dims"), k))?;
        if n_dims > MAX_DIMS {
            return Err(err(field("n_dims"), GgufErrorKind::TooManyDims(n_dims)));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims as usize {
            let v = r.u64().map_err(|k| err(field("dims"), k))?;
            if v > i64::MAX as u64 {
                return Err(err(field("dims"), GgufErrorKind::NegativeDim { dim: d, value: v }));
            }
            dims.push(v);
        }
        let type_id = r.u32().map_err(|k| err(field("type"), k))?;
        let ggml_type = match GgmlType::from_id(type_id) {
            Some(t) => t,
            None => {
                let kind = match REMOVED_TYPES.iter().find(|t| t.0 == type_id) {
                    Some(&(id, name, why)) => GgufErrorKind::RemovedType { id, name, why },
                    None => GgufErrorKind::UnknownType(type_id),
                };
                return Err(err(field("type"), kind));
            }
        };
        let offset = r.u64().map_err(|k| err(field("offset"), k))?;
        let ne0 = dims.first().copied().unwrap_or(1);
        if ne0 % ggml_type.block_size() != 0 {
            return Err(err(field("dims"), GgufErrorKind::RowNotBlockMultiple { ne0, ggml_type, block: ggml_type.block_size() }));
        }
        let n_bytes = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .and_then(|n| ggml_type.byte_len(n))
            .ok_or_else(|| err(field("dims"), GgufErrorKind::SizeOverflow))?;
        by_name.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo { name, dims, ggml_type, offset, n_bytes });
    }

    // The data section starts at the end of the tensor infos, padded to the alignment.
    let end_of_infos = r.pos as u64;
    let data_start = end_of_infos.div_ceil(alignment).saturating_mul(alignment);
    let (problems, unlisted) = validate_layout(&tensors, data_start, alignment, buf.len() as u64);
    Ok(Header { version, metadata, tensors, alignment, data_start, problems, unlisted, by_key, by_name })
}

/// Problems kept (the first `MAX_PROBLEMS_PER_KIND` of each kind) and those only counted.
type Problems = (Vec<LayoutProblem>, Vec<(LayoutProblem, u64)>);

fn validate_layout(tensors: &[TensorInfo], data_start: u64, alignment: u64, file_len: u64) -> Problems {
    let mut problems = Vec::new();
    let mut unlisted = Vec::new();
    let mut push = |p| push_capped(&mut problems, &mut unlisted, MAX_PROBLEMS_PER_KIND, p);
    let mut expected = 0u64;
    for t in tensors {
        if t.name.len() > MAX_TENSOR_NAME_BYTES {
            push(LayoutProblem::NameTooLong { tensor: t.name.clone(), len: t.name.len() });
        }
        let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => push(LayoutProblem::OutOfBounds { tensor: t.name.clone(), end: end.unwrap_or(u64::MAX), file_len }),
        }
        if t.offset % alignment != 0 {
            push(LayoutProblem::Misaligned { tensor: t.name.clone(), offset: t.offset, alignment });
        }
        if t.offset != expected {
            push(LayoutProblem::NotPacked { tensor: t.name.clone(), offset: t.offset, expected });
        }
        // Where llama.cpp expects the next tensor: this one's declared offset + padded size.
        expected = t.offset.saturating_add(t.n_bytes.div_ceil(alignment).saturating_mul(alignment));
    }
    let mut order: Vec<&TensorInfo> = tensors.iter().filter(|t| t.n_bytes > 0).collect();
    order.sort_by_key(|t| (t.offset, t.n_bytes));
    let mut reach: Option<(&TensorInfo, u64)> = None;
    for t in order {
        let end = t.offset.saturating_add(t.n_bytes);
        if let Some((p, p_end)) = reach {
            if t.offset < p_end {
                push(LayoutProblem::Overlap { first: p.name.clone(), second: t.name.clone() });
            }
            if end > p_end {
                reach = Some((t, end));
            }
        } else {
            reach = Some((t, end));
        }
    }
    (problems, unlisted)
}

#[cfg(test)]
mod tests {
    use super::super::test_writer::{sample, W};
    use super::*;

    #[test]
    fn parses_a_small_file() {
        let b = sample();
        let h = parse_header(&b, Path::new("t.gguf")).unwrap();
        assert!(h.problems.is_empty(), "{:?}", h.problems);
        assert_eq!(h.tensors.len(), 3);
        assert_eq!(h.tensors[0].n_bytes, 3 * 34);
        assert_eq!(h.tensors[0].shape(), vec![3, 32]);
        assert_eq!(h.architecture(), Some("llama"));
        assert_eq!(h.arch_meta().block_count, Some(1));
        assert_eq!(h.tokenizer().tokens.unwrap().len(), 3);
        assert_eq!(h.blocks_in_tensors(), Some(1));
        let s = h.type_summary();
        assert_eq!(s[&GgmlType::Q4_K].bytes, 288);
        assert_eq!(h.data_start % 32, 0);
    }

    #[test]
    fn error_names_file_and_field() {
        let mut w = W::new();
        w.kv_str("general.architecture", "llama");
        push_huge_tokens_array(&mut w);
        let b = w.build();
        let e = parse_header(&b, Path::new("x.gguf")).unwrap_err();
        assert!(matches!(e.kind, GgufErrorKind::ArrayTooLong { len, .. } if len == 1 << 62), "{e}");
        let msg = e.to_string();
        assert!(msg.contains("x.gguf") && msg.contains("metadata key #1 (`tokenizer.ggml.tokens`)") && msg.contains("2^62"), "{msg}");
    }

    /// Regression (issue 12): a table of badly placed tensors made the header hold one problem
    /// per tensor; past `MAX_PROBLEMS_PER_KIND` of a kind they are counted, not kept.
    #[test]
    fn problems_past_the_cap_are_counted_not_kept() {
        let mut w = W::new();
        w.kv_str("general.architecture", "llama");
        let n = MAX_PROBLEMS_PER_KIND + 136;
        for i in 0..n {
            w.tensor(&format!("{i:0>70}"), &[32], 0);
        }
        let h = parse_header(&w.build(), Path::new("x.gguf")).unwrap();
        assert_eq!(h.problems.len(), MAX_PROBLEMS_PER_KIND);
        assert!(h.problems.iter().all(|p| matches!(p, LayoutProblem::NameTooLong { .. })));
        assert_eq!(h.unlisted.len(), 1);
        assert_eq!(h.unlisted[0].1, 136);
        assert_eq!(h.unlisted[0].0.tensor(), format!("{MAX_PROBLEMS_PER_KIND:0>70}"));
    }

    fn push_huge_tokens_array(w: &mut W) {
        W::s(&mut w.kv, "tokenizer.ggml.tokens");
        w.kv.extend(9u32.to_le_bytes());
        w.kv.extend(8u32.to_le_bytes());
        w.kv.extend((1u64 << 62).to_le_bytes());
        w.n_kv += 1;
    }
}
