//! The element types a safetensors file can declare, with their bit widths, and decoders of
//! little-endian float bytes to f32 (`decode_f32`, float8). Names are exactly the strings
//! safetensors writes. Plain byte decoding: no candle, no tensors.

use std::fmt;

/// Every dtype the safetensors format (0.8) defines.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Dtype {
    BOOL,
    F4,
    F6_E2M3,
    F6_E3M2,
    U8,
    I8,
    F8_E5M2,
    F8_E4M3,
    F8_E8M0,
    F8_E4M3FNUZ,
    F8_E5M2FNUZ,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    C64,
    I64,
    U64,
}

impl Dtype {
    pub const ALL: [Dtype; 22] = [
        Dtype::BOOL,
        Dtype::F4,
        Dtype::F6_E2M3,
        Dtype::F6_E3M2,
        Dtype::U8,
        Dtype::I8,
        Dtype::F8_E5M2,
        Dtype::F8_E4M3,
        Dtype::F8_E8M0,
        Dtype::F8_E4M3FNUZ,
        Dtype::F8_E5M2FNUZ,
        Dtype::I16,
        Dtype::U16,
        Dtype::F16,
        Dtype::BF16,
        Dtype::I32,
        Dtype::U32,
        Dtype::F32,
        Dtype::F64,
        Dtype::C64,
        Dtype::I64,
        Dtype::U64,
    ];

    pub fn parse(s: &str) -> Option<Dtype> {
        Dtype::ALL.into_iter().find(|d| d.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::BOOL => "BOOL",
            Dtype::F4 => "F4",
            Dtype::F6_E2M3 => "F6_E2M3",
            Dtype::F6_E3M2 => "F6_E3M2",
            Dtype::U8 => "U8",
            Dtype::I8 => "I8",
            Dtype::F8_E5M2 => "F8_E5M2",
            Dtype::F8_E4M3 => "F8_E4M3",
            Dtype::F8_E8M0 => "F8_E8M0",
            Dtype::F8_E4M3FNUZ => "F8_E4M3FNUZ",
            Dtype::F8_E5M2FNUZ => "F8_E5M2FNUZ",
            Dtype::I16 => "I16",
            Dtype::U16 => "U16",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::I32 => "I32",
            Dtype::U32 => "U32",
            Dtype::F32 => "F32",
            Dtype::F64 => "F64",
            Dtype::C64 => "C64",
            Dtype::I64 => "I64",
            Dtype::U64 => "U64",
        }
    }

    /// Bits per element.
    pub fn bits(self) -> u64 {
        match self {
            Dtype::F4 => 4,
            Dtype::F6_E2M3 | Dtype::F6_E3M2 => 6,
            Dtype::BOOL
            | Dtype::U8
            | Dtype::I8
            | Dtype::F8_E5M2
            | Dtype::F8_E4M3
            | Dtype::F8_E8M0
            | Dtype::F8_E4M3FNUZ
            | Dtype::F8_E5M2FNUZ => 8,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 16,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 32,
            Dtype::F64 | Dtype::C64 | Dtype::I64 | Dtype::U64 => 64,
        }
    }

    /// Whether the value scan decodes this type (the floating types whose NaN/Inf mean something).
    pub fn is_scanned_float(self) -> bool {
        matches!(self, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64 | Dtype::F8_E4M3 | Dtype::F8_E5M2)
    }

    /// Bytes for `numel` elements, or `None` on overflow or a sub-byte count that does not end on a
    /// byte boundary.
    pub fn byte_len(self, numel: u64) -> Option<u64> {
        let bits = numel.checked_mul(self.bits())?;
        (bits % 8 == 0).then_some(bits / 8)
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Decodes one float8 E4M3 (OCP "fn" variant: no infinities, 0x7f/0xff are NaN).
pub fn f8_e4m3_to_f32(b: u8) -> f32 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = ((b >> 3) & 0x0f) as i32;
    let man = (b & 0x07) as f32;
    if exp == 0x0f && (b & 0x07) == 0x07 {
        return f32::NAN;
    }
    if exp == 0 {
        sign * man / 8.0 * 2f32.powi(-6)
    } else {
        sign * (1.0 + man / 8.0) * 2f32.powi(exp - 7)
    }
}

/// Decodes one float8 E5M2 (IEEE-like: has infinities and NaNs).
pub fn f8_e5m2_to_f32(b: u8) -> f32 {
    // E5M2 is the top byte of an f16.
    half::f16::from_bits((b as u16) << 8).to_f32()
}

/// Decodes little-endian float data to f32 (the engine's compute type on CPU; bf16 matmuls on
/// CPU widen to f32 anyway); `None` for a type that is not a dense float. Pure data decoding: the
/// engine, the merge check and the tests share it.
/// Whether `decode_f32` decodes this dtype: the float types the engine computes with.
pub fn engine_float(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64 | Dtype::F8_E4M3 | Dtype::F8_E5M2)
}

pub fn decode_f32(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
        Dtype::F8_E4M3 => b.iter().map(|&x| f8_e4m3_to_f32(x)).collect(),
        Dtype::F8_E5M2 => b.iter().map(|&x| f8_e5m2_to_f32(x)).collect(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Dtype::ALL {
            assert_eq!(Dtype::parse(d.name()), Some(d));
        }
        assert_eq!(Dtype::parse("F17"), None);
    }

    #[test]
    fn byte_len_checks_overflow_and_sub_byte_alignment() {
        assert_eq!(Dtype::F32.byte_len(3), Some(12));
        assert_eq!(Dtype::F4.byte_len(4), Some(2));
        assert_eq!(Dtype::F4.byte_len(3), None);
        assert_eq!(Dtype::F64.byte_len(u64::MAX / 2), None);
    }

    #[test]
    fn float8_decoders_match_known_values() {
        // Values from the OCP FP8 spec tables.
        assert_eq!(f8_e4m3_to_f32(0x38), 1.0);
        assert_eq!(f8_e4m3_to_f32(0x7e), 448.0);
        assert!(f8_e4m3_to_f32(0x7f).is_nan());
        assert_eq!(f8_e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(f8_e5m2_to_f32(0x3c), 1.0);
        assert_eq!(f8_e5m2_to_f32(0x7b), 57344.0);
        assert!(f8_e5m2_to_f32(0x7c).is_infinite());
    }

    #[test]
    fn decode_f32_reads_little_endian_floats_and_refuses_ints() {
        let bf16 = [0x80, 0x3f, 0x00, 0xc0]; // 1.0, -2.0
        assert_eq!(decode_f32(Dtype::BF16, &bf16), Some(vec![1.0, -2.0]));
        assert_eq!(decode_f32(Dtype::F64, &0.5f64.to_le_bytes()), Some(vec![0.5]));
        assert_eq!(decode_f32(Dtype::I32, &[0; 4]), None);
    }
}
