//! NaN and ±Inf in a GGUF's tensors: every value of its F32/F16/BF16 tensors and the f16 block
//! scales of the quantized types whose block layout is fixed, with the same finding ids as the
//! safetensors value scan.
//!
//! It does not dequantize blocks. Not scanned: quantized types outside `block_scales` (IQ*, TQ*,
//! MXFP4, Q8_1, Q8_K…), integer and F64 tensors, and tensors whose bytes fall outside the file
//! (`alone` reports those layout problems).

use crate::checks::ids;
use crate::checks::{Finding, Findings, Severity};
use crate::format::gguf::{GgmlType, GgufFile};

/// Where a block keeps its f16 scale(s), for the types whose layout is fixed (ggml-common.h):
/// `(block bytes, byte offsets of the f16 scale fields)`.
fn block_scales(t: GgmlType) -> Option<(usize, &'static [usize])> {
    Some(match t {
        GgmlType::Q4_0 => (18, &[0]),
        GgmlType::Q4_1 => (20, &[0, 2]),
        GgmlType::Q5_0 => (22, &[0]),
        GgmlType::Q5_1 => (24, &[0, 2]),
        GgmlType::Q8_0 => (34, &[0]),
        GgmlType::Q2_K => (84, &[80, 82]),
        GgmlType::Q3_K => (110, &[108]),
        GgmlType::Q4_K => (144, &[0, 2]),
        GgmlType::Q5_K => (176, &[0, 2]),
        GgmlType::Q6_K => (210, &[208]),
        _ => return None,
    })
}

/// NaN / ±Inf in a GGUF's float tensors, and in the f16 block scales of its quantized tensors (a
/// NaN scale poisons all 32 or 256 weights of its block). Same ids as the safetensors value scan.
pub fn values(g: &GgufFile, out: &mut Findings) {
    use crate::checks::values::scan;
    use crate::format::dtype::Dtype;
    let file = g.file_name();
    for t in &g.header.tensors {
        let Ok(bytes) = g.checked_bytes(&t.name) else { continue }; // layout problems are reported
        let (nan, inf, what) = match t.ggml_type {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                let d = match t.ggml_type {
                    GgmlType::F32 => Dtype::F32,
                    GgmlType::F16 => Dtype::F16,
                    _ => Dtype::BF16,
                };
                let Some(s) = scan(d, bytes) else { continue };
                (s.nan, s.pos_inf + s.neg_inf, "values")
            }
            other => {
                let Some((size, offsets)) = block_scales(other) else { continue };
                let (mut nan, mut inf) = (0u64, 0u64);
                for block in bytes.chunks_exact(size) {
                    for &o in offsets {
                        let v = half::f16::from_le_bytes([block[o], block[o + 1]]);
                        nan += v.is_nan() as u64;
                        inf += v.is_infinite() as u64;
                    }
                }
                (nan, inf, "block scales")
            }
        };
        if nan + inf > 0 {
            out.push(
                Finding::new(
                    if nan > 0 { ids::VALUES_NAN } else { ids::VALUES_INF },
                    Severity::Error,
                    &file,
                    format!("tensor `{}` ({}) has {nan} NaN and {inf} infinite {what}", t.name, t.ggml_type),
                )
                .field(t.name.clone())
                .hint("the source had non-finite weights or the conversion overflowed: lint the source and re-convert"),
            );
        }
    }
}
