//! How a run is carried out, typed: compute dtype, device, how a GGUF's quantized layers multiply.
//! The CLI (`cli.rs`) and the lineage manifest (`pipeline/manifest.rs`) parse their strings into
//! these once, before any command runs; nothing below them sees a flag's string or names a flag in
//! an error.
//!
//! Each type parses from the spelling users write (`FromStr`, also used by clap and by the
//! manifest's serde) and says which spellings exist when one is wrong.

use std::fmt;
use std::str::FromStr;

/// `--dtype`: what the engine computes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDtype {
    /// Weights widened to f32 (the default: closest to the f32 goldens).
    #[default]
    F32,
    Bf16,
    F16,
    /// The checkpoint's own `config.json` dtype (f32 for a GGUF, which has none).
    Auto,
}

/// `--device`: where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// CUDA 0 when built with `--features cuda` and a GPU is present, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device by ordinal (`cuda` is `cuda:0`).
    Cuda(usize),
}

/// `--gguf-matmul`: how a GGUF's quantized linear layers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgufMatmul {
    /// Exactly on the dequantized values, f32 activations (the engine decodes blocks a tile at a
    /// time; other devices and dtypes hold a dense copy, 4–8× the memory of the file).
    Dense,
    /// On the quantized blocks with activations quantized as ggml does (llama.cpp's arithmetic):
    /// the engine's own kernels for Q4_K / Q5_K / Q6_K on AVX-512 VNNI CPUs, candle's `QMatMul` for the
    /// other types (further from llama.cpp than dense, measured).
    Quantized,
    /// The native engine (f32, CPU): llama.cpp's arithmetic for Q4_K / Q5_K / Q6_K where the CPU has the
    /// kernels (nearer llama.cpp's logits, and faster), dense for the rest. Other devices and
    /// dtypes: dense when two models of this size fit in a quarter of the available memory,
    /// else quantized.
    #[default]
    Auto,
}

/// How variants are loaded and run; one value per command or manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct RunSettings {
    pub dtype: ComputeDtype,
    pub device: DeviceChoice,
    pub gguf_matmul: GgufMatmul,
}

/// A spelling that is not one of the choices: says which exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{given}` is not one of {choices}")]
pub struct BadChoice {
    pub given: String,
    pub choices: &'static str,
}

fn bad(given: &str, choices: &'static str) -> BadChoice {
    BadChoice { given: given.to_string(), choices }
}

impl FromStr for ComputeDtype {
    type Err = BadChoice;
    fn from_str(s: &str) -> Result<Self, BadChoice> {
        match s {
            "f32" | "float32" => Ok(ComputeDtype::F32),
            "bf16" | "bfloat16" => Ok(ComputeDtype::Bf16),
            "f16" | "float16" => Ok(ComputeDtype::F16),
            "auto" => Ok(ComputeDtype::Auto),
            other => Err(bad(other, "f32, bf16, f16, auto")),
        }
    }
}

impl FromStr for DeviceChoice {
    type Err = BadChoice;
    fn from_str(s: &str) -> Result<Self, BadChoice> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda(0)),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Ok(DeviceChoice::Cuda(n)),
                None => Err(bad(other, "auto, cpu, cuda")),
            },
        }
    }
}

impl FromStr for GgufMatmul {
    type Err = BadChoice;
    fn from_str(s: &str) -> Result<Self, BadChoice> {
        match s {
            "dense" => Ok(GgufMatmul::Dense),
            "quantized" => Ok(GgufMatmul::Quantized),
            "auto" => Ok(GgufMatmul::Auto),
            other => Err(bad(other, "auto, dense, quantized")),
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeDtype::F32 => "f32",
            ComputeDtype::Bf16 => "bf16",
            ComputeDtype::F16 => "f16",
            ComputeDtype::Auto => "auto",
        })
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceChoice::Auto => f.write_str("auto"),
            DeviceChoice::Cpu => f.write_str("cpu"),
            DeviceChoice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl fmt::Display for GgufMatmul {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GgufMatmul::Dense => "dense",
            GgufMatmul::Quantized => "quantized",
            GgufMatmul::Auto => "auto",
        })
    }
}

/// serde for the manifest: the same spellings as the CLI, the same error.
macro_rules! serde_via_str {
    ($($t:ty),*) => {$(
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    )*};
}
serde_via_str!(ComputeDtype, DeviceChoice, GgufMatmul);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_bad_ones_list_the_choices() {
        for s in ["f32", "bf16", "f16", "auto"] {
            assert_eq!(s.parse::<ComputeDtype>().unwrap().to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceChoice>().unwrap(), DeviceChoice::Cuda(0));
        assert_eq!("cuda:3".parse::<DeviceChoice>().unwrap().to_string(), "cuda:3");
        assert_eq!("f8".parse::<ComputeDtype>().unwrap_err().to_string(), "`f8` is not one of f32, bf16, f16, auto");
        assert_eq!("tpu".parse::<DeviceChoice>().unwrap_err().to_string(), "`tpu` is not one of auto, cpu, cuda");
        assert_eq!("fast".parse::<GgufMatmul>().unwrap_err().to_string(), "`fast` is not one of auto, dense, quantized");
    }
}
