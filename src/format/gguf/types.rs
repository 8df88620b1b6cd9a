//! The format's data types: every ggml tensor type id llama.cpp's `ggml.h` defines, with its block
//! size and bytes per block (`TYPES`), the ids removed upstream and why (`REMOVED_TYPES`), per-type
//! totals for `inspect` (`TypeBytes`, `describe_types`); and the metadata value types (`Value`,
//! `Array`) the parser produces and `metadata` interprets.
//!
//! Sizes only: nothing here reads a file or decodes a block (dequantization lives in
//! `model::gguf_weights`, block-scale checks in `checks::gguf::values`).

use std::collections::BTreeMap;

use serde::Serialize;

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
        if !numel.is_multiple_of(b) {
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

/// Bytes of each ggml type in one file, for `inspect`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TypeBytes {
    pub tensors: usize,
    pub elements: u64,
    pub bytes: u64,
}

/// Names a set of tensors by type for messages: `Q4_K ×120, F32 ×40`.
pub fn describe_types(summary: &BTreeMap<GgmlType, TypeBytes>) -> String {
    summary.iter().map(|(t, b)| format!("{t} ×{}", b.tensors)).collect::<Vec<_>>().join(", ")
}

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
