//! A hostile-input GGUF reader (versions 2 and 3, little-endian): memory-maps the file read-only,
//! parses the header, every metadata value and every tensor info itself, computes each tensor's
//! byte size from its ggml type, and reports every layout problem (out of the file, misaligned,
//! overlapping, not where llama.cpp expects it) instead of stopping at the first.
//!
//! candle's `gguf_file` refuses a whole file over one IQ/TQ/MXFP4 tensor and panics on
//! `general.alignment = 0`; gguf-rs gets several byte sizes wrong (../shared/notes/toolchain.md).
//! This reader knows every type id llama.cpp's `ggml.h` defines, names the removed ones, and never
//! allocates more than the file could describe: every count and length is checked against the
//! bytes left before anything is reserved.
//!
//! It never decodes tensor values and never depends on candle; `checks::gguf` reads the
//! tokenizer/architecture metadata through the accessors at the bottom of this file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use serde::Serialize;

use crate::error::Error;

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
/// Smallest possible encoding of one tensor info: name length (8) + n_dims (4) + type (4) +
/// offset (8). A count the remaining bytes cannot hold is refused before anything is allocated.
const MIN_TENSOR_INFO_BYTES: u64 = 24;
/// Smallest possible metadata entry: key length (8) + a 1-byte key + type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 14;

// ---------------------------------------------------------------------------------------------
// ggml types

/// Every tensor type id llama.cpp's `ggml.h` defines (`enum ggml_type`). Ids 4, 5, 31–33 and 36–38
/// were removed upstream and are refused by name (see `REMOVED_TYPES`).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// `(type, id, elements per block, bytes per block)`, from llama.cpp's `ggml.c` `type_traits`
/// (`blck_size`, `type_size` = `sizeof(block_*)` in `ggml-common.h`; sizes printed with `sizeof`
/// from the llama.cpp vendored by llama-cpp-python 0.3.36 and equal to gguf-py 0.19's
/// `GGML_QUANT_SIZES` where that lists the type).
pub const TYPES: &[(GgmlType, u32, u64, u64)] = &[
    (GgmlType::F32, 0, 1, 4),
    (GgmlType::F16, 1, 1, 2),
    (GgmlType::Q4_0, 2, 32, 18),
    (GgmlType::Q4_1, 3, 32, 20),
    (GgmlType::Q5_0, 6, 32, 22),
    (GgmlType::Q5_1, 7, 32, 24),
    (GgmlType::Q8_0, 8, 32, 34),
    (GgmlType::Q8_1, 9, 32, 36),
    (GgmlType::Q2_K, 10, 256, 84),
    (GgmlType::Q3_K, 11, 256, 110),
    (GgmlType::Q4_K, 12, 256, 144),
    (GgmlType::Q5_K, 13, 256, 176),
    (GgmlType::Q6_K, 14, 256, 210),
    (GgmlType::Q8_K, 15, 256, 292),
    (GgmlType::IQ2_XXS, 16, 256, 66),
    (GgmlType::IQ2_XS, 17, 256, 74),
    (GgmlType::IQ3_XXS, 18, 256, 98),
    (GgmlType::IQ1_S, 19, 256, 50),
    (GgmlType::IQ4_NL, 20, 32, 18),
    (GgmlType::IQ3_S, 21, 256, 110),
    (GgmlType::IQ2_S, 22, 256, 82),
    (GgmlType::IQ4_XS, 23, 256, 136),
    (GgmlType::I8, 24, 1, 1),
    (GgmlType::I16, 25, 1, 2),
    (GgmlType::I32, 26, 1, 4),
    (GgmlType::I64, 27, 1, 8),
    (GgmlType::F64, 28, 1, 8),
    (GgmlType::IQ1_M, 29, 256, 56),
    (GgmlType::BF16, 30, 1, 2),
    (GgmlType::TQ1_0, 34, 256, 54),
    (GgmlType::TQ2_0, 35, 256, 66),
    (GgmlType::MXFP4, 39, 32, 17),
    (GgmlType::NVFP4, 40, 64, 36),
    (GgmlType::Q1_0, 41, 128, 18),
    (GgmlType::Q2_0, 42, 64, 18),
];

/// Ids llama.cpp once defined and removed, with what replaced them (`ggml.h` comments and the
/// `type_traits` "REMOVED" names).
pub const REMOVED_TYPES: &[(u32, &str, &str)] = &[
    (4, "Q4_2", "removed from ggml in 2023; re-quantize from the original model"),
    (5, "Q4_3", "removed from ggml in 2023; re-quantize from the original model"),
    (31, "Q4_0_4_4", "removed from GGUF files; llama.cpp now repacks Q4_0 at load time, use Q4_0"),
    (32, "Q4_0_4_8", "removed from GGUF files; llama.cpp now repacks Q4_0 at load time, use Q4_0"),
    (33, "Q4_0_8_8", "removed from GGUF files; llama.cpp now repacks Q4_0 at load time, use Q4_0"),
    (36, "IQ4_NL_4_4", "removed from GGUF files; llama.cpp now repacks IQ4_NL at load time, use IQ4_NL"),
    (37, "IQ4_NL_4_8", "removed from GGUF files; llama.cpp now repacks IQ4_NL at load time, use IQ4_NL"),
    (38, "IQ4_NL_8_8", "removed from GGUF files; llama.cpp now repacks IQ4_NL at load time, use IQ4_NL"),
];

/// One past the largest id llama.cpp defines (`GGML_TYPE_COUNT`).
pub const TYPE_COUNT: u32 = 43;

impl GgmlType {
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TYPES.iter().find(|t| t.1 == id).map(|t| t.0)
    }
    fn row(self) -> &'static (GgmlType, u32, u64, u64) {
        // Every variant has exactly one row (test `type_table_is_complete`).
        TYPES.iter().find(|t| t.0 == self).unwrap_or(&TYPES[0])
    }
    pub fn id(self) -> u32 {
        self.row().1
    }
    /// Elements per block.
    pub fn block_size(self) -> u64 {
        self.row().2
    }
    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.row().3
    }
    /// The name gguf-py and `llama-quantize` print (`Q4_K`, `IQ4_NL`, `BF16`).
    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            IQ2_XXS => "IQ2_XXS",
            IQ2_XS => "IQ2_XS",
            IQ3_XXS => "IQ3_XXS",
            IQ1_S => "IQ1_S",
            IQ4_NL => "IQ4_NL",
            IQ3_S => "IQ3_S",
            IQ2_S => "IQ2_S",
            IQ4_XS => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            IQ1_M => "IQ1_M",
            BF16 => "BF16",
            TQ1_0 => "TQ1_0",
            TQ2_0 => "TQ2_0",
            MXFP4 => "MXFP4",
            NVFP4 => "NVFP4",
            Q1_0 => "Q1_0",
            Q2_0 => "Q2_0",
        }
    }
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1
    }
    /// Bytes for `numel` elements, `None` when `numel` is not a whole number of blocks or the
    /// size overflows.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let b = self.block_size();
        if numel % b != 0 {
            return None;
        }
        (numel / b).checked_mul(self.type_size())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
// metadata values

/// GGUF value type ids (`enum gguf_type`).
pub const VALUE_TYPE_NAMES: [&str; 13] =
    ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool", "string", "array", "uint64", "int64", "float64"];

/// One metadata value.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Array),
}

/// A typed array; arrays of arrays hold one `Array` per element.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
    Array(Vec<Array>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "uint8",
            Value::I8(_) => "int8",
            Value::U16(_) => "uint16",
            Value::I16(_) => "int16",
            Value::U32(_) => "uint32",
            Value::I32(_) => "int32",
            Value::F32(_) => "float32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::U64(_) => "uint64",
            Value::I64(_) => "int64",
            Value::F64(_) => "float64",
            Value::Array(_) => "array",
        }
    }

    /// Any non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A short rendering for `inspect`: scalars in full, strings cut, arrays as `[type; n]`.
    pub fn summary(&self) -> String {
        match self {
            Value::String(s) if s.chars().count() > 80 => {
                format!("{:?}… ({} bytes)", s.chars().take(60).collect::<String>(), s.len())
            }
            Value::String(s) => format!("{s:?}"),
            Value::Array(a) => format!("[{}; {}]", a.elem_type_name(), a.len()),
            Value::F32(v) => v.to_string(),
            Value::F64(v) => v.to_string(),
            Value::Bool(v) => v.to_string(),
            other => other.as_u64().map(|v| v.to_string()).or_else(|| other.as_f64().map(|v| v.to_string())).unwrap_or_default(),
        }
    }
}

impl Array {
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
            Array::Array(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn elem_type_name(&self) -> &'static str {
        match self {
            Array::U8(_) => "uint8",
            Array::I8(_) => "int8",
            Array::U16(_) => "uint16",
            Array::I16(_) => "int16",
            Array::U32(_) => "uint32",
            Array::I32(_) => "int32",
            Array::F32(_) => "float32",
            Array::Bool(_) => "bool",
            Array::String(_) => "string",
            Array::U64(_) => "uint64",
            Array::I64(_) => "int64",
            Array::F64(_) => "float64",
            Array::Array(_) => "array",
        }
    }

    /// Integer elements as i64 (token types, per-layer head counts), `None` for other types.
    pub fn as_i64s(&self) -> Option<Vec<i64>> {
        Some(match self {
            Array::U8(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I8(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U16(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I16(v) => v.iter().map(|&x| x.into()).collect(),
            Array::U32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I32(v) => v.iter().map(|&x| x.into()).collect(),
            Array::I64(v) => v.clone(),
            Array::U64(v) => v.iter().map(|&x| i64::try_from(x).unwrap_or(i64::MAX)).collect(),
            _ => return None,
        })
    }
}

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

    /// Stable finding id.
    pub fn id(&self) -> &'static str {
        match self {
            LayoutProblem::OutOfBounds { .. } => "gguf.tensor-out-of-bounds",
            LayoutProblem::Misaligned { .. } => "gguf.tensor-misaligned",
            LayoutProblem::Overlap { .. } => "gguf.tensor-overlap",
            LayoutProblem::NotPacked { .. } => "gguf.tensor-not-packed",
            LayoutProblem::NameTooLong { .. } => "gguf.tensor-name-too-long",
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
    pub problems: Vec<LayoutProblem>,
    by_key: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
}

/// Bytes of each ggml type in one file, for `inspect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeBytes {
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
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
    let problems = validate_layout(&tensors, data_start, alignment, buf.len() as u64);
    Ok(Header { version, metadata, tensors, alignment, data_start, problems, by_key, by_name })
}

fn validate_layout(tensors: &[TensorInfo], data_start: u64, alignment: u64, file_len: u64) -> Vec<LayoutProblem> {
    let mut problems = Vec::new();
    let mut expected = 0u64;
    for t in tensors {
        if t.name.len() > MAX_TENSOR_NAME_BYTES {
            problems.push(LayoutProblem::NameTooLong { tensor: t.name.clone(), len: t.name.len() });
        }
        let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.n_bytes));
        match end {
            Some(end) if end <= file_len => {}
            _ => problems.push(LayoutProblem::OutOfBounds { tensor: t.name.clone(), end: end.unwrap_or(u64::MAX), file_len }),
        }
        if t.offset % alignment != 0 {
            problems.push(LayoutProblem::Misaligned { tensor: t.name.clone(), offset: t.offset, alignment });
        }
        if t.offset != expected {
            problems.push(LayoutProblem::NotPacked { tensor: t.name.clone(), offset: t.offset, expected });
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
                problems.push(LayoutProblem::Overlap { first: p.name.clone(), second: t.name.clone() });
            }
            if end > p_end {
                reach = Some((t, end));
            }
        } else {
            reach = Some((t, end));
        }
    }
    problems
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.by_key.get(key).map(|&i| &self.metadata[i].1)
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)?.as_str()
    }
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.as_u64()
    }
    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key)?.as_f64()
    }
    pub fn get_bool(&self, key: &str) -> Option<bool> {
        self.get(key)?.as_bool()
    }
    pub fn get_array(&self, key: &str) -> Option<&Array> {
        match self.get(key)? {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// `general.architecture` (`llama`, `qwen2`, `gemma3`…).
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// `{arch}.{suffix}`, e.g. `arch_key("rope.freq_base")` → `llama.rope.freq_base`.
    pub fn arch_key(&self, suffix: &str) -> Option<&Value> {
        self.get(&format!("{}.{suffix}", self.architecture()?))
    }

    /// The architecture metadata, `None` where the file does not say.
    pub fn arch_meta(&self) -> ArchMeta {
        let u = |s: &str| self.arch_key(s).and_then(Value::as_u64);
        let f = |s: &str| self.arch_key(s).and_then(Value::as_f64);
        ArchMeta {
            architecture: self.architecture().map(str::to_string),
            context_length: u("context_length"),
            embedding_length: u("embedding_length"),
            block_count: u("block_count"),
            feed_forward_length: u("feed_forward_length"),
            head_count: u("attention.head_count"),
            head_count_kv: u("attention.head_count_kv"),
            key_length: u("attention.key_length"),
            value_length: u("attention.value_length"),
            rope_dimension_count: u("rope.dimension_count"),
            rope_freq_base: f("rope.freq_base"),
            rope_scaling_type: self.arch_key("rope.scaling.type").and_then(Value::as_str).map(str::to_string),
            rope_scaling_factor: f("rope.scaling.factor"),
            rope_scaling_original_context_length: u("rope.scaling.original_context_length"),
            rms_norm_eps: f("attention.layer_norm_rms_epsilon"),
            expert_count: u("expert_count"),
            expert_used_count: u("expert_used_count"),
            vocab_size: u("vocab_size"),
            sliding_window: u("attention.sliding_window"),
        }
    }

    /// The tokenizer metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`).
    pub fn tokenizer(&self) -> GgufTokenizer<'_> {
        let strings = |k: &str| match self.get_array(k) {
            Some(Array::String(v)) => Some(v.as_slice()),
            _ => None,
        };
        GgufTokenizer {
            model: self.get_str("tokenizer.ggml.model"),
            pre: self.get_str("tokenizer.ggml.pre"),
            tokens: strings("tokenizer.ggml.tokens"),
            scores: match self.get_array("tokenizer.ggml.scores") {
                Some(Array::F32(v)) => Some(v.as_slice()),
                _ => None,
            },
            token_type: self.get_array("tokenizer.ggml.token_type").and_then(Array::as_i64s),
            merges: strings("tokenizer.ggml.merges"),
            bos: self.get_u64("tokenizer.ggml.bos_token_id"),
            eos: self.get_u64("tokenizer.ggml.eos_token_id"),
            eot: self.get_u64("tokenizer.ggml.eot_token_id"),
            eom: self.get_u64("tokenizer.ggml.eom_token_id"),
            pad: self.get_u64("tokenizer.ggml.padding_token_id"),
            unk: self.get_u64("tokenizer.ggml.unknown_token_id"),
            add_bos: self.get_bool("tokenizer.ggml.add_bos_token"),
            add_eos: self.get_bool("tokenizer.ggml.add_eos_token"),
            chat_template: self.get_str("tokenizer.chat_template"),
        }
    }

    /// Tensors, elements and bytes per ggml type.
    pub fn type_summary(&self) -> BTreeMap<GgmlType, TypeBytes> {
        let mut m: BTreeMap<GgmlType, TypeBytes> = BTreeMap::new();
        for t in &self.tensors {
            let e = m.entry(t.ggml_type).or_default();
            e.tensors += 1;
            e.elements = e.elements.saturating_add(t.numel());
            e.bytes = e.bytes.saturating_add(t.n_bytes);
        }
        m
    }

    /// Largest `N` + 1 over tensors named `blk.N.*`.
    pub fn blocks_in_tensors(&self) -> Option<u64> {
        self.tensors.iter().filter_map(|t| t.name.strip_prefix("blk.")?.split('.').next()?.parse::<u64>().ok()).max().map(|n| n + 1)
    }
}

/// What a GGUF says about its architecture. `None`: the file does not say.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ArchMeta {
    pub architecture: Option<String>,
    pub context_length: Option<u64>,
    pub embedding_length: Option<u64>,
    pub block_count: Option<u64>,
    pub feed_forward_length: Option<u64>,
    pub head_count: Option<u64>,
    pub head_count_kv: Option<u64>,
    pub key_length: Option<u64>,
    pub value_length: Option<u64>,
    pub rope_dimension_count: Option<u64>,
    pub rope_freq_base: Option<f64>,
    pub rope_scaling_type: Option<String>,
    pub rope_scaling_factor: Option<f64>,
    pub rope_scaling_original_context_length: Option<u64>,
    pub rms_norm_eps: Option<f64>,
    pub expert_count: Option<u64>,
    pub expert_used_count: Option<u64>,
    pub vocab_size: Option<u64>,
    pub sliding_window: Option<u64>,
}

/// llama.cpp's token types (`tokenizer.ggml.token_type`, `enum llama_token_type`).
pub mod token_type {
    pub const UNDEFINED: i64 = 0;
    pub const NORMAL: i64 = 1;
    pub const UNKNOWN: i64 = 2;
    pub const CONTROL: i64 = 3;
    pub const USER_DEFINED: i64 = 4;
    pub const UNUSED: i64 = 5;
    pub const BYTE: i64 = 6;
}

/// The GGUF's own tokenizer, borrowed from the header.
#[derive(Debug, Clone)]
pub struct GgufTokenizer<'a> {
    /// `gpt2` (BPE), `llama` (SentencePiece), `bert`, `t5`, `rwkv`, `none`…
    pub model: Option<&'a str>,
    /// Pre-tokenizer name llama.cpp picks its split regex by (`llama-bpe`, `qwen2`, `gpt-2`…).
    pub pre: Option<&'a str>,
    pub tokens: Option<&'a [String]>,
    pub scores: Option<&'a [f32]>,
    pub token_type: Option<Vec<i64>>,
    pub merges: Option<&'a [String]>,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub eot: Option<u64>,
    pub eom: Option<u64>,
    pub pad: Option<u64>,
    pub unk: Option<u64>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub chat_template: Option<&'a str>,
}

/// The split regex GPT-2's byte-level pre-tokenizer applies (`tokenizers` `ByteLevel` with
/// `use_regex: true`).
pub const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's `Split` regex, as in its tokenizer.json.
pub const LLAMA3_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's `Split` regex, as in its tokenizer.json.
pub const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` names whose split regexes are known here, with the tokenizer.json regexes
/// they stand for (llama.cpp `llm_tokenizer_bpe`: gpt-2/mpt/olmo share GPT-2's regex; llama3 and
/// its aliases share Llama 3's; qwen2 and stablelm2 share Qwen 2's). `default` is llama.cpp's
/// fallback when the key is missing: its four regexes match no HF tokenizer.
pub const KNOWN_PRE: &[(&str, &[&str])] = &[
    ("gpt-2", &[GPT2_REGEX]),
    ("mpt", &[GPT2_REGEX]),
    ("olmo", &[GPT2_REGEX]),
    ("llama-bpe", &[LLAMA3_REGEX]),
    ("llama3", &[LLAMA3_REGEX]),
    ("llama-v3", &[LLAMA3_REGEX]),
    ("falcon3", &[LLAMA3_REGEX]),
    ("pixtral", &[LLAMA3_REGEX]),
    ("qwen2", &[QWEN2_REGEX]),
    ("stablelm2", &[QWEN2_REGEX]),
    ("default", &["(llama.cpp default BPE regexes)"]),
];

impl GgufTokenizer<'_> {
    /// llama.cpp's tokenizer for this vocabulary, rebuilt as an HF `tokenizers` tokenizer: byte-level
    /// BPE (`tokenizer.ggml.model = gpt2`) with the tokens, merges and the split regex of
    /// `tokenizer.ggml.pre`; CONTROL/USER_DEFINED tokens as added tokens. `Err` says why it cannot
    /// be rebuilt (SentencePiece and other models, an unknown or `default` pre-tokenizer).
    pub fn to_hf(&self) -> std::result::Result<tokenizers::Tokenizer, String> {
        use serde_json::{json, Map, Value as J};
        if self.model != Some("gpt2") {
            return Err(format!("tokenizer model `{}` is not rebuilt (only byte-level BPE, `gpt2`)", self.model.unwrap_or("none")));
        }
        let pre = self.pre.unwrap_or("default");
        let regex = match KNOWN_PRE.iter().find(|(n, _)| *n == pre) {
            Some((_, [r])) if *r == GPT2_REGEX || *r == LLAMA3_REGEX || *r == QWEN2_REGEX => *r,
            _ => return Err(format!("pre-tokenizer `{pre}` is not one ckptcheck can rebuild")),
        };
        let tokens = self.tokens.ok_or("no `tokenizer.ggml.tokens`")?;
        let merges = self.merges.ok_or("no `tokenizer.ggml.merges`")?;
        let mut vocab = Map::new();
        for (i, t) in tokens.iter().enumerate() {
            vocab.insert(t.clone(), J::from(i as u64));
        }
        let types = self.token_type.clone().unwrap_or_default();
        let added: Vec<J> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let ty = *types.get(i)?;
                (ty == token_type::CONTROL || ty == token_type::USER_DEFINED).then(|| {
                    json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": ty == token_type::CONTROL})
                })
            })
            .collect();
        let byte_level =
            |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
        let pre_tokenizer = if regex == GPT2_REGEX {
            byte_level(true)
        } else {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
                byte_level(false)]})
        };
        let doc = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let bytes = serde_json::to_vec(&doc).map_err(|e| e.to_string())?;
        tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| format!("the rebuilt tokenizer does not load: {e}"))
    }

    pub fn token(&self, id: u64) -> Option<&str> {
        self.tokens?.get(usize::try_from(id).ok()?).map(String::as_str)
    }
    pub fn id(&self, token: &str) -> Option<u64> {
        self.tokens?.iter().position(|t| t == token).map(|i| i as u64)
    }
    /// Tokens marked CONTROL or USER_DEFINED (the added/special tokens).
    pub fn special_tokens(&self) -> Vec<(u64, &str)> {
        let (Some(tokens), Some(types)) = (self.tokens, &self.token_type) else {
            return Vec::new();
        };
        tokens
            .iter()
            .zip(types)
            .enumerate()
            .filter(|(_, (_, &ty))| ty == token_type::CONTROL || ty == token_type::USER_DEFINED)
            .map(|(i, (t, _))| (i as u64, t.as_str()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// the file

/// A memory-mapped, read-only GGUF file.
#[derive(Debug)]
pub struct GgufFile {
    pub path: PathBuf,
    pub header: Header,
    mmap: Mmap,
}

impl GgufFile {
    /// Opens and parses; fails only when the header cannot be read. Layout problems are in
    /// `header.problems`.
    pub fn open(path: &Path) -> Result<GgufFile, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file truncated underneath us by another process is the
        // usual mmap caveat, accepted by every GGUF reader (llama.cpp maps files the same way).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let header = parse_header(&mmap, path)?;
        Ok(GgufFile { path: path.to_path_buf(), header, mmap })
    }

    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// File name for findings.
    pub fn file_name(&self) -> String {
        super::hf::file_name(&self.path)
    }

    /// The tensor's bytes, or `None` when they fall outside the file.
    pub fn bytes(&self, t: &TensorInfo) -> Option<&[u8]> {
        let start = self.header.data_start.checked_add(t.offset)?;
        let end = start.checked_add(t.n_bytes)?;
        self.mmap.get(usize::try_from(start).ok()?..usize::try_from(end).ok()?)
    }

    /// The tensor's bytes for compute: errors unless no layout problem touches it (llama.cpp's
    /// packing order is not required here, only in-bounds, aligned and not overlapping).
    pub fn checked_bytes(&self, name: &str) -> Result<&[u8], Error> {
        let t = self.header.tensor(name).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            detail: "not in this GGUF".into(),
        })?;
        if let Some(p) = self.header.problems.iter().find(|p| {
            !matches!(p, LayoutProblem::NotPacked { .. } | LayoutProblem::NameTooLong { .. })
                && (p.tensor() == name || matches!(p, LayoutProblem::Overlap { first, .. } if first == name))
        }) {
            return Err(Error::Tensor {
                path: self.path.clone(),
                tensor: name.to_string(),
                detail: format!("{}; run `ckptcheck lint` for all problems", p.message()),
            });
        }
        self.bytes(t).ok_or_else(|| Error::Tensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            detail: "data falls outside the file".into(),
        })
    }
}

/// Names a set of tensors by type for messages: `Q4_K ×120, F32 ×40`.
pub fn describe_types(summary: &BTreeMap<GgmlType, TypeBytes>) -> String {
    summary.iter().map(|(t, b)| format!("{t} ×{}", b.tensors)).collect::<Vec<_>>().join(", ")
}

/// Keys llama.cpp reads as `{arch}.*` that ckptcheck compares; kept here so docs and checks agree.
pub const ARCH_KEYS: &[&str] = &[
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "rope.freq_base",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "attention.layer_norm_rms_epsilon",
    "expert_count",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny GGUF writer for unit tests (the fixtures in testdata/gguf-fixtures come from gguf-py).
    pub(crate) struct W {
        pub kv: Vec<u8>,
        pub n_kv: u64,
        pub infos: Vec<u8>,
        pub n_tensors: u64,
        pub data: Vec<u8>,
    }
    impl W {
        fn new() -> W {
            W { kv: vec![], n_kv: 0, infos: vec![], n_tensors: 0, data: vec![] }
        }
        fn s(b: &mut Vec<u8>, s: &str) {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        }
        fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(4u32.to_le_bytes());
            self.kv.extend(v.to_le_bytes());
            self.n_kv += 1;
            self
        }
        fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(8u32.to_le_bytes());
            Self::s(&mut self.kv, v);
            self.n_kv += 1;
            self
        }
        fn kv_strs(&mut self, k: &str, v: &[&str]) -> &mut Self {
            Self::s(&mut self.kv, k);
            self.kv.extend(9u32.to_le_bytes());
            self.kv.extend(8u32.to_le_bytes());
            self.kv.extend((v.len() as u64).to_le_bytes());
            for x in v {
                Self::s(&mut self.kv, x);
            }
            self.n_kv += 1;
            self
        }
        fn tensor(&mut self, name: &str, dims: &[u64], ty: u32) -> &mut Self {
            let t = GgmlType::from_id(ty).unwrap();
            let n = t.byte_len(dims.iter().product()).unwrap();
            Self::s(&mut self.infos, name);
            self.infos.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                self.infos.extend(d.to_le_bytes());
            }
            self.infos.extend(ty.to_le_bytes());
            self.infos.extend((self.data.len() as u64).to_le_bytes());
            self.data.extend((0..n).map(|i| i as u8));
            while self.data.len() % 32 != 0 {
                self.data.push(0);
            }
            self.n_tensors += 1;
            self
        }
        fn build(&self) -> Vec<u8> {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(self.n_tensors.to_le_bytes());
            b.extend(self.n_kv.to_le_bytes());
            b.extend(&self.kv);
            b.extend(&self.infos);
            while b.len() % 32 != 0 {
                b.push(0);
            }
            b.extend(&self.data);
            b
        }
    }

    fn sample() -> Vec<u8> {
        W::new()
            .kv_str("general.architecture", "llama")
            .kv_u32("llama.block_count", 1)
            .kv_strs("tokenizer.ggml.tokens", &["<s>", "a", "b"])
            .tensor("token_embd.weight", &[32, 3], 8)
            .tensor("blk.0.attn_norm.weight", &[32], 0)
            .tensor("blk.0.ffn_down.weight", &[256, 2], 12)
            .build()
    }

    #[test]
    fn type_table_is_complete() {
        let mut ids: Vec<u32> = TYPES.iter().map(|t| t.1).collect();
        ids.extend(REMOVED_TYPES.iter().map(|t| t.0));
        ids.sort();
        assert_eq!(ids, (0..TYPE_COUNT).collect::<Vec<_>>(), "every id below GGML_TYPE_COUNT is known or removed");
        for &(t, id, _, _) in TYPES {
            assert_eq!(GgmlType::from_id(id), Some(t));
            assert_eq!(t.id(), id);
        }
        assert_eq!(GgmlType::Q4_K.byte_len(512), Some(288));
        assert_eq!(GgmlType::IQ4_NL.byte_len(64), Some(36));
        assert_eq!(GgmlType::BF16.byte_len(3), Some(6));
        assert_eq!(GgmlType::Q8_0.byte_len(33), None);
    }

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

    fn push_huge_tokens_array(w: &mut W) {
        W::s(&mut w.kv, "tokenizer.ggml.tokens");
        w.kv.extend(9u32.to_le_bytes());
        w.kv.extend(8u32.to_le_bytes());
        w.kv.extend((1u64 << 62).to_le_bytes());
        w.n_kv += 1;
    }

    /// Poor man's fuzzing in the normal test run: random byte flips, truncations and count
    /// rewrites of a valid file never panic and never allocate unboundedly.
    #[test]
    fn mutated_files_never_panic() {
        let good = sample();
        let mut state = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20000 {
            let mut b = good.clone();
            match next() % 4 {
                0 => {
                    for _ in 0..(1 + next() % 4) {
                        let i = (next() as usize) % b.len();
                        b[i] = next() as u8;
                    }
                }
                1 => b.truncate((next() as usize) % b.len()),
                2 => {
                    // Rewrite an 8-byte little-endian field at a random spot with a hostile value.
                    let i = (next() as usize) % (b.len() - 8);
                    let v = [u64::MAX, 1 << 62, 1 << 40, 0, next() % 1000][(next() % 5) as usize];
                    b[i..i + 8].copy_from_slice(&v.to_le_bytes());
                }
                _ => {
                    let i = (next() as usize) % (b.len() - 4);
                    let v = [0u32, 3, 31, 99, u32::MAX, 9][(next() % 6) as usize];
                    b[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            match parse_header(&b, Path::new("m")) {
                Ok(h) => {
                    for p in &h.problems {
                        let _ = (p.message(), p.id());
                    }
                    let _ = (h.arch_meta(), h.tokenizer().special_tokens(), h.type_summary(), h.blocks_in_tensors());
                    for (_, v) in &h.metadata {
                        let _ = v.summary();
                    }
                }
                Err(e) => {
                    let _ = e.to_string();
                }
            }
        }
    }
}
