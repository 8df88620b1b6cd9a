//! Weights where they are stored: a `NativeMatrix` is a `[rows, cols]` matrix inside a
//! memory-mapped safetensors or GGUF file, in its stored encoding (f32, bf16, f16, ggml blocks,
//! or a packed quantization its scheme decodes: `PackedRows`).
//! Nothing is converted up front: a matmul decodes a tile of rows into a small f32 buffer and
//! multiplies it with `gemm` (the kernel candle's CPU matmul uses), so the model costs page cache
//! and one tile per matmul, not a dense f32 copy. Decoding is exact (the same values a whole-model
//! dequantization produces), so only the f32 summation order can differ from the dense path.

use std::sync::Arc;

use candle_core::quantized::k_quants::{self, GgmlType as Block};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::dtype::Dtype;
use crate::format::gguf::GgmlType;
use crate::format::MappedBytes;

/// How one stored row decodes to f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowCodec {
    F32,
    Bf16,
    F16,
    /// ggml blocks (GGUF), row length a multiple of the type's block size.
    Ggml(GgmlType),
}

impl RowCodec {
    /// The codec of a safetensors dtype the engine multiplies natively.
    pub fn of_dtype(d: Dtype) -> Option<RowCodec> {
        match d {
            Dtype::F32 => Some(RowCodec::F32),
            Dtype::BF16 => Some(RowCodec::Bf16),
            Dtype::F16 => Some(RowCodec::F16),
            _ => None,
        }
    }

    /// The codec of a ggml type, when rows of it can be decoded here.
    pub fn of_ggml(t: GgmlType) -> Option<RowCodec> {
        match t {
            GgmlType::F32 => Some(RowCodec::F32),
            GgmlType::F16 => Some(RowCodec::F16),
            GgmlType::BF16 => Some(RowCodec::Bf16),
            GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2_K
            | GgmlType::Q3_K
            | GgmlType::Q4_K
            | GgmlType::Q5_K
            | GgmlType::Q6_K
            | GgmlType::IQ4_NL
            | GgmlType::IQ4_XS
            | GgmlType::MXFP4
            | GgmlType::NVFP4 => Some(RowCodec::Ggml(t)),
            _ => None,
        }
    }

    /// (values per block, bytes per block).
    fn block(self) -> (usize, usize) {
        match self {
            RowCodec::F32 => (1, 4),
            RowCodec::Bf16 | RowCodec::F16 => (1, 2),
            RowCodec::Ggml(t) => match t {
                GgmlType::IQ4_NL => (32, 18),
                GgmlType::IQ4_XS => (256, 136),
                GgmlType::MXFP4 => (32, 17),
                GgmlType::NVFP4 => (64, 36),
                GgmlType::Q4_0 => (32, std::mem::size_of::<k_quants::BlockQ4_0>()),
                GgmlType::Q4_1 => (32, std::mem::size_of::<k_quants::BlockQ4_1>()),
                GgmlType::Q5_0 => (32, std::mem::size_of::<k_quants::BlockQ5_0>()),
                GgmlType::Q5_1 => (32, std::mem::size_of::<k_quants::BlockQ5_1>()),
                GgmlType::Q8_0 => (32, std::mem::size_of::<k_quants::BlockQ8_0>()),
                GgmlType::Q2_K => (256, std::mem::size_of::<k_quants::BlockQ2K>()),
                GgmlType::Q3_K => (256, std::mem::size_of::<k_quants::BlockQ3K>()),
                GgmlType::Q4_K => (256, std::mem::size_of::<k_quants::BlockQ4K>()),
                GgmlType::Q5_K => (256, std::mem::size_of::<k_quants::BlockQ5K>()),
                GgmlType::Q6_K => (256, std::mem::size_of::<k_quants::BlockQ6K>()),
                GgmlType::F32 => (1, 4),
                GgmlType::F16 | GgmlType::BF16 => (1, 2),
                _ => (0, 0),
            },
        }
    }
}

/// Decodes one row of `Block`s into `out` (the row may sit at any alignment inside the map).
fn blocks_to_f32<B: Block>(bytes: &[u8], out: &mut [f32]) {
    let n = bytes.len() / std::mem::size_of::<B>();
    if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()) {
        // SAFETY: aligned, in bounds, and every bit pattern is a valid block (plain integers and
        // f16 fields, as candle's own `qtensor_from_ggml` assumes for the same bytes).
        let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const B, n) };
        B::to_float(blocks, out);
    } else {
        let mut owned: Vec<B> = Vec::with_capacity(n);
        // SAFETY: copies `n` whole blocks into fresh, aligned storage of capacity `n`.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), owned.as_mut_ptr() as *mut u8, n * std::mem::size_of::<B>());
            owned.set_len(n);
        }
        B::to_float(&owned, out);
    }
}

/// Decodes one stored row (`bytes`, exactly one row) into `out` (`cols` values).
fn decode_row(codec: RowCodec, bytes: &[u8], out: &mut [f32]) {
    use half::{bf16, f16};
    match codec {
        RowCodec::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        RowCodec::Bf16 => {
            // bf16 is the top half of an f32: a shift on u16 pairs, which the compiler vectorises.
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16);
            }
            debug_assert!(out.first().is_none_or(|v| v.to_bits() == bf16::from_le_bytes([bytes[0], bytes[1]]).to_f32().to_bits()));
        }
        RowCodec::F16 => {
            // half converts whole slices with F16C where the CPU has it (detected at run time).
            use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
            let n = bytes.len() / 2;
            if cfg!(target_endian = "little") && (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<u16>()) {
                // SAFETY: aligned for u16, `n` whole u16s in bounds; every bit pattern is a valid
                // u16, and on a little-endian host the stored bytes are the values' own.
                let bits = unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const u16, n) };
                bits.reinterpret_cast::<f16>().convert_to_f32_slice(&mut out[..n]);
            } else {
                let bits: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                bits.reinterpret_cast::<f16>().convert_to_f32_slice(&mut out[..n]);
            }
        }
        RowCodec::Ggml(t) => match t {
            GgmlType::Q4_0 => blocks_to_f32::<k_quants::BlockQ4_0>(bytes, out),
            GgmlType::Q4_1 => blocks_to_f32::<k_quants::BlockQ4_1>(bytes, out),
            GgmlType::Q5_0 => blocks_to_f32::<k_quants::BlockQ5_0>(bytes, out),
            GgmlType::Q5_1 => blocks_to_f32::<k_quants::BlockQ5_1>(bytes, out),
            GgmlType::Q8_0 => q8_0_into(bytes, out),
            GgmlType::Q2_K => blocks_to_f32::<k_quants::BlockQ2K>(bytes, out),
            GgmlType::Q3_K => blocks_to_f32::<k_quants::BlockQ3K>(bytes, out),
            GgmlType::Q4_K => q4k_into(bytes, out),
            GgmlType::Q5_K => blocks_to_f32::<k_quants::BlockQ5K>(bytes, out),
            GgmlType::Q6_K => q6k_into(bytes, out),
            GgmlType::IQ4_NL => iq4_nl_into(bytes, out),
            GgmlType::IQ4_XS => iq4_xs_into(bytes, out),
            GgmlType::MXFP4 => mxfp4_into(bytes, out),
            GgmlType::NVFP4 => nvfp4_into(bytes, out),
            GgmlType::F32 => decode_row(RowCodec::F32, bytes, out),
            GgmlType::F16 => decode_row(RowCodec::F16, bytes, out),
            GgmlType::BF16 => decode_row(RowCodec::Bf16, bytes, out),
            // `of_ggml` admits no other type.
            _ => out.fill(f32::NAN),
        },
    }
}

/// A matrix whose rows are not stored one after another (the GPTQ, AWQ and compressed-tensors
/// packings, where a word holds eight inputs or eight outputs and scales sit in other tensors):
/// its scheme decodes any run of rows from the packed tensors, which stay mapped.
pub trait PackedRows: Send + Sync {
    /// Decodes rows `r0..r0 + out.len() / cols` into `out` (row-major), exactly.
    fn decode_rows(&self, r0: usize, out: &mut [f32]);
}

/// Where a matrix's values are.
#[derive(Clone)]
enum Store {
    /// Row `r` is `row_bytes` bytes at `r · row_bytes`, in `codec`.
    Rows {
        data: MappedBytes,
        codec: RowCodec,
        row_bytes: usize,
    },
    Packed(Arc<dyn PackedRows>),
}

/// Rows one task of a packed decode takes (its words hold 8 outputs in GPTQ/AWQ).
const PACKED_ROWS_PER_TASK: usize = 32;

/// A `[rows, cols]` weight matrix left in its file, in its stored encoding.
#[derive(Clone)]
pub struct NativeMatrix {
    store: Store,
    rows: usize,
    cols: usize,
    /// Logical row `r` is stored at row `row_map[r]` (llama.cpp's Q/K permutation, undone here).
    row_map: Option<Arc<[u32]>>,
    /// Multiply in llama.cpp's integer arithmetic where a kernel exists (`with_llama_arithmetic`).
    llama_arithmetic: bool,
}

/// Rows decoded per tile: about 4 MiB of f32, so a tile stays in cache while gemm packs it.
const TILE_FLOATS: usize = 1 << 20;

thread_local! {
    /// The calling thread's tile buffer, kept between matmuls (one allocation, not one per call).
    static TILE_BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's buffer for the transposed input (`transpose_into`).
    static XT_BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Weight rows of one unit of `matmul_t_dot` (a multiple of the dot tile's 4 rows and of the
/// packed schemes' 32-row decode).
const DOT_PANEL: usize = 32;
/// Input rows one unit of `matmul_t_dot` multiplies at most (each part re-reads, or re-decodes,
/// the weights once). 384-768 measured 5-15 % faster than no cap at 4096 tokens (0.25 B); at
/// 512 tokens nothing changes.
const DOT_INPUT_ROWS: usize = 512;

thread_local! {
    /// The calling thread's decoded panel (`matmul_t_dot`, encodings the kernels do not read).
    static PANEL_BUF: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The calling thread's panel of block scales (`matmul_t_q8`).
    static SCALES_BUF: std::cell::RefCell<Vec<super::qdot::BlockScales>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// y's address, shared by the units of `matmul_t_dot` (each writes its own elements).
struct SendPtr(*mut f32);
// SAFETY: only used to write disjoint elements from rayon's threads while the Vec is alive.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(&self) -> *mut f32 {
        self.0
    }
}

/// Most input values `matmul_t` transposes at once (64 MiB of f32).
const XT_FLOATS: usize = 1 << 24;

/// Columns of the source one task of `transpose_into` takes.
const TRANSPOSE_COLS: usize = 64;

/// `xt[c · rows + r] = x[r · cols + c]`: the `[rows, cols]` row-major `x` as `[cols, rows]`.
/// Both matmul operands are stored with the shared dimension contiguous, and gemm packs such
/// operands one strided scalar at a time, for each weight tile (measured: 31 % of a 0.25 B
/// forward with its AVX-512 kernels); transposed first, its packing is contiguous copies. 8 × 8
/// blocks in AVX registers where the CPU has AVX, the ragged edges (and other CPUs) one by one.
fn transpose_into(x: &[f32], rows: usize, cols: usize, xt: &mut [f32]) {
    assert!(x.len() >= rows * cols && xt.len() >= rows * cols, "transpose_into: buffers too short");
    #[cfg(target_arch = "x86_64")]
    let avx = std::arch::is_x86_feature_detected!("avx");
    #[cfg(not(target_arch = "x86_64"))]
    let avx = false;
    xt[..rows * cols].par_chunks_mut(TRANSPOSE_COLS * rows).enumerate().for_each(|(cb, out)| {
        let c0 = cb * TRANSPOSE_COLS;
        let cn = out.len() / rows;
        let (r8, c8) = if avx { (rows / 8 * 8, cn / 8 * 8) } else { (0, 0) };
        #[cfg(target_arch = "x86_64")]
        for r0 in (0..r8).step_by(8) {
            for c in (0..c8).step_by(8) {
                // SAFETY: AVX was detected; rows r0..r0+8 ≤ rows at columns c0+c..c0+c+8 ≤ cols
                // are in x, rows c..c+8 ≤ cn of `out` (each `rows` long) at r0..r0+8 are in out.
                unsafe { transpose8x8(x.as_ptr().add(r0 * cols + c0 + c), cols, out.as_mut_ptr().add(c * rows + r0), rows) };
            }
        }
        for c in 0..cn {
            let from = if c < c8 { r8 } else { 0 };
            for r in from..rows {
                out[c * rows + r] = x[r * cols + c0 + c];
            }
        }
    });
}

/// Eight bf16 (`is_f16` false) or f16 values from column `c` of each of the 8 rows in `src`,
/// widened to f32 and stored transposed: `dst[j · ds + i]` = row i, column c + j.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,f16c")]
unsafe fn half_to_f32_transposed8x8(src: &[&[u8]; 8], c: usize, is_f16: bool, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| {
        let h = unsafe { _mm_loadu_si128(src[i].as_ptr().add(2 * c) as *const __m128i) };
        if is_f16 {
            _mm256_cvtph_ps(h)
        } else {
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    });
    unsafe { store_transposed8x8(r, dst, ds) };
}

/// One 8 × 8 block: `dst[j · ds + i] = src[i · ss + j]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * ss)) });
    unsafe { store_transposed8x8(r, dst, ds) };
}

/// Eight rows of 8 values in registers, stored transposed: `dst[j · ds + i] = r[i][j]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
unsafe fn store_transposed8x8(r: [std::arch::x86_64::__m256; 8], dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves swapped.
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for j in 0..4 {
        _mm256_storeu_ps(dst.add(j * ds), _mm256_permute2f128_ps::<0x20>(u[j], u[j + 4]));
        _mm256_storeu_ps(dst.add((j + 4) * ds), _mm256_permute2f128_ps::<0x31>(u[j], u[j + 4]));
    }
}

impl NativeMatrix {
    /// Checks that `data` holds exactly `rows × cols` values in `codec`; `what` names the tensor
    /// (file and name) in the error.
    pub fn new(data: MappedBytes, rows: usize, cols: usize, codec: RowCodec, what: impl Fn(String) -> Error) -> Result<NativeMatrix> {
        let (per_block, block_bytes) = codec.block();
        if per_block == 0 || !cols.is_multiple_of(per_block) {
            return Err(what(format!("rows of {cols} values do not split into blocks of {per_block} for {codec:?}")));
        }
        let row_bytes = cols / per_block * block_bytes;
        let want = rows.checked_mul(row_bytes);
        if want != Some(data.bytes().len()) {
            return Err(what(format!("{} bytes stored, {rows}×{cols} in {codec:?} needs {}", data.bytes().len(), rows * row_bytes)));
        }
        Ok(NativeMatrix { store: Store::Rows { data, codec, row_bytes }, rows, cols, row_map: None, llama_arithmetic: false })
    }

    /// A packed matrix its scheme decodes (`PackedRows`).
    pub fn packed(rows: usize, cols: usize, packed: Arc<dyn PackedRows>) -> NativeMatrix {
        NativeMatrix { store: Store::Packed(packed), rows, cols, row_map: None, llama_arithmetic: false }
    }

    /// Reads logical row `r` from stored row `map[r]` (`map` must be a permutation of `0..rows`).
    pub fn with_row_map(mut self, map: Vec<u32>) -> NativeMatrix {
        debug_assert_eq!(map.len(), self.rows);
        self.row_map = Some(map.into());
        self
    }

    /// Multiply as llama.cpp does where this CPU has the kernel (`qdot`: Q4_K, Q5_K and Q6_K rows,
    /// inputs quantized to Q8_K), instead of exactly on the dequantized values; other encodings
    /// and CPUs are unaffected.
    pub fn with_llama_arithmetic(mut self, on: bool) -> NativeMatrix {
        self.llama_arithmetic = on;
        self
    }

    /// The `qdot` encoding `matmul_t` multiplies this matrix in, if any.
    fn int8_codec(&self) -> Option<u8> {
        if !self.llama_arithmetic || !super::qdot::available() {
            return None;
        }
        match &self.store {
            Store::Rows { codec: RowCodec::Ggml(GgmlType::Q4_K), .. } => Some(super::qdot::Q4K),
            Store::Rows { codec: RowCodec::Ggml(GgmlType::Q5_K), .. } => Some(super::qdot::Q5K),
            Store::Rows { codec: RowCodec::Ggml(GgmlType::Q6_K), .. } => Some(super::qdot::Q6K),
            _ => None,
        }
    }

    /// Whether `matmul_t` runs in llama.cpp's integer arithmetic (see `with_llama_arithmetic`).
    pub fn uses_llama_arithmetic(&self) -> bool {
        self.int8_codec().is_some()
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Decodes logical row `r` into `out` (`cols` values).
    /// Where logical row `r` is stored (`row_map`, or `r` itself).
    fn stored_row(&self, r: usize) -> usize {
        self.row_map.as_ref().map(|m| m[r] as usize).unwrap_or(r)
    }

    fn decode_one(&self, r: usize, out: &mut [f32]) {
        let s = self.stored_row(r);
        match &self.store {
            Store::Rows { data, codec, row_bytes } => decode_row(*codec, &data.bytes()[s * row_bytes..(s + 1) * row_bytes], out),
            Store::Packed(p) => p.decode_rows(s, out),
        }
    }

    /// Rows `r0..r0 + rows` decoded straight into `wt` as `[cols, rows]` (the transpose of what
    /// `decode_rows` writes), in one pass over their bytes: bf16 and f16 rows on a CPU with AVX2
    /// and F16C. `false` (and `wt` untouched) for every other encoding or CPU.
    fn decode_rows_transposed(&self, r0: usize, rows: usize, wt: &mut [f32]) -> bool {
        #[cfg(target_arch = "x86_64")]
        if let Store::Rows { data, codec: codec @ (RowCodec::Bf16 | RowCodec::F16), row_bytes } = &self.store {
            if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")) {
                return false;
            }
            let (k, bytes, is_f16) = (self.cols, data.bytes(), matches!(codec, RowCodec::F16));
            let row = |r: usize| {
                let s = self.stored_row(r);
                &bytes[s * row_bytes..(s + 1) * row_bytes]
            };
            wt[..k * rows].par_chunks_mut(TRANSPOSE_COLS * rows).enumerate().for_each(|(cb, out)| {
                let c0 = cb * TRANSPOSE_COLS;
                let cn = out.len() / rows;
                for g in (0..rows).step_by(8) {
                    let gn = 8.min(rows - g);
                    let src: [&[u8]; 8] = std::array::from_fn(|i| &row(r0 + g + i.min(gn - 1))[c0 * 2..(c0 + cn) * 2]);
                    let c8 = if gn == 8 { cn / 8 * 8 } else { 0 };
                    for c in (0..c8).step_by(8) {
                        // SAFETY: AVX2 and F16C were detected; each source slice holds cn ≥ c + 8
                        // values from column c0, and rows c..c+8 of `out` at g..g+8 are in out.
                        unsafe { half_to_f32_transposed8x8(&src, c, is_f16, out.as_mut_ptr().add(c * rows + g), rows) };
                    }
                    for c in 0..cn {
                        for (i, s) in src.iter().enumerate().take(gn).skip(if c < c8 { gn } else { 0 }) {
                            let b = u16::from_le_bytes([s[2 * c], s[2 * c + 1]]);
                            out[c * rows + g + i] =
                                if is_f16 { half::f16::from_bits(b).to_f32() } else { half::bf16::from_bits(b).to_f32() };
                        }
                    }
                }
            });
            return true;
        }
        let _ = (r0, rows, wt);
        false
    }

    /// Decodes rows `r0..r0 + out.len() / cols` into `out`, in parallel.
    fn decode_rows(&self, r0: usize, out: &mut [f32]) {
        match &self.store {
            Store::Packed(p) if self.row_map.is_none() => {
                let step = PACKED_ROWS_PER_TASK * self.cols;
                out.par_chunks_mut(step).enumerate().for_each(|(i, o)| p.decode_rows(r0 + i * PACKED_ROWS_PER_TASK, o));
            }
            _ => out.par_chunks_mut(self.cols).enumerate().for_each(|(i, row)| self.decode_one(r0 + i, row)),
        }
    }

    /// The rows `ids` (an embedding lookup), `[ids.len(), cols]` row-major; ids must be < rows.
    pub fn gather(&self, ids: &[u32]) -> Vec<f32> {
        let mut out = vec![0f32; ids.len() * self.cols];
        out.par_chunks_mut(self.cols).zip(ids).for_each(|(row, &id)| self.decode_one(id as usize, row));
        out
    }

    /// The whole matrix as f32 (the dense path for other devices and dtypes).
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.decode_rows(0, &mut out);
        out
    }

    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_vec(self.to_dense(), (self.rows, self.cols), device)
    }

    /// `y = x·Wᵀ` for `x` `[t, cols]` row-major: `[t, rows]`. Row tiles are decoded into one
    /// reused buffer and multiplied there, with every thread of the current rayon pool.
    /// On a CPU with AVX-512F the weight rows are multiplied where they are (`dot`); elsewhere
    /// through gemm.
    pub fn matmul_t(&self, x: &[f32], t: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if let Some(q) = self.int8_codec() {
            return self.matmul_t_q8(q, x, t);
        }
        if super::dot::available() {
            return self.matmul_t_dot(x, t);
        }
        self.matmul_t_in(x, t, XT_FLOATS)
    }

    /// Decodes rows `r0..r0 + out.len() / cols` into `out` on the calling thread.
    fn decode_rows_here(&self, r0: usize, out: &mut [f32]) {
        match &self.store {
            Store::Packed(p) if self.row_map.is_none() => p.decode_rows(r0, out),
            _ => out.chunks_mut(self.cols).enumerate().for_each(|(i, row)| self.decode_one(r0 + i, row)),
        }
    }

    /// `matmul_t` by the dot-product kernels (`dot::available()` must be true). The work is
    /// split into panels of `DOT_PANEL` weight rows, each multiplied with every input row while
    /// it sits in L2: f32 / bf16 / f16 rows straight from the map, other encodings decoded into
    /// the thread's panel buffer first (once per panel, not once per input row).
    fn matmul_t_dot(&self, x: &[f32], t: usize) -> Vec<f32> {
        use super::dot;
        let k = self.cols;
        debug_assert_eq!(x.len(), t * k);
        self.in_units(t, dot::TILE_INPUTS, |r0, rows, j0, m, yb| {
            let xs = &x[j0 * k..(j0 + m) * k];
            let n = self.rows;
            let mut ptrs = [std::ptr::null::<u8>(); DOT_PANEL];
            match &self.store {
                Store::Rows { data, codec: codec @ (RowCodec::F32 | RowCodec::Bf16 | RowCodec::F16), row_bytes } => {
                    for (i, p) in ptrs[..rows].iter_mut().enumerate() {
                        *p = data.bytes()[self.stored_row(r0 + i) * row_bytes..].as_ptr();
                    }
                    // SAFETY: dot::available(); each pointer starts a whole stored row of k
                    // values (`new` checked the byte count); y is the unit's (`in_units`).
                    unsafe {
                        match codec {
                            RowCodec::F32 => dot::block::<{ dot::F32 }>(&ptrs[..rows], xs, m, k, yb, n),
                            RowCodec::F16 => dot::block::<{ dot::F16 }>(&ptrs[..rows], xs, m, k, yb, n),
                            _ => dot::block::<{ dot::BF16 }>(&ptrs[..rows], xs, m, k, yb, n),
                        }
                    }
                }
                _ => PANEL_BUF.with(|b| {
                    let mut b = b.borrow_mut();
                    if b.len() < DOT_PANEL * k {
                        b.resize(DOT_PANEL * k, 0.0);
                    }
                    self.decode_rows_here(r0, &mut b[..rows * k]);
                    for (i, p) in ptrs[..rows].iter_mut().enumerate() {
                        *p = b[i * k..].as_ptr() as *const u8;
                    }
                    // SAFETY: dot::available(); the panel buffer holds rows × k decoded f32; y
                    // as above.
                    unsafe { dot::block::<{ dot::F32 }>(&ptrs[..rows], xs, m, k, yb, n) };
                }),
            }
        })
    }

    /// `matmul_t` in llama.cpp's integer arithmetic (`qdot`: the inputs quantized to Q8_K once,
    /// the Q4_K / Q5_K / Q6_K rows read where they are); `qdot::available()` must be true and the
    /// matrix one `int8_codec` admits.
    #[cfg(target_arch = "x86_64")]
    fn matmul_t_q8(&self, q: u8, x: &[f32], t: usize) -> Vec<f32> {
        use super::qdot;
        let k = self.cols;
        let Store::Rows { data, row_bytes, .. } = &self.store else { unreachable!("int8_codec admits stored rows only") };
        let xq = qdot::quantize(x, t, k);
        let nb = xq.blocks();
        self.in_units(t, qdot::TILE_INPUTS, |r0, rows, j0, m, yb| {
            let mut ptrs = [std::ptr::null::<u8>(); DOT_PANEL];
            for (i, p) in ptrs[..rows].iter_mut().enumerate() {
                *p = data.bytes()[self.stored_row(r0 + i) * row_bytes..].as_ptr();
            }
            SCALES_BUF.with(|b| {
                let mut b = b.borrow_mut();
                b.resize(DOT_PANEL * nb, qdot::BlockScales::default());
                for i in 0..rows {
                    let s = self.stored_row(r0 + i) * row_bytes;
                    qdot::row_scales(q, &data.bytes()[s..s + row_bytes], &mut b[i * nb..(i + 1) * nb]);
                }
                // SAFETY: qdot::available(); each pointer starts a whole stored row of nb blocks
                // (`new` checked the byte count); y is the unit's (`in_units`).
                unsafe { qdot::block_of(q, &ptrs[..rows], &b, &xq, j0, m, yb, self.rows) }
            })
        })
    }

    /// Runs `unit(r0, rows, j0, m, y)` over panels of `DOT_PANEL` weight rows × parts of the
    /// `t` input rows (a multiple of `tile_inputs` long), in parallel, each writing
    /// `y[j0..j0 + m, r0..r0 + rows]` (row stride `self.rows`) through the pointer it is given
    /// (element (j0, r0)); returns y, `[t, rows]`, every element written by exactly one unit.
    fn in_units(&self, t: usize, tile_inputs: usize, unit: impl Fn(usize, usize, usize, usize, *mut f32) + Sync) -> Vec<f32> {
        let n = self.rows;
        if t == 0 || n == 0 {
            return vec![0f32; t * n];
        }
        let mut y: Vec<f32> = Vec::with_capacity(t * n);
        let yp = SendPtr(y.as_mut_ptr());
        let panels = n.div_ceil(DOT_PANEL);
        // At least 4 units per thread; where there are fewer panels (a k/v projection on many
        // cores) the input rows are split too, and each part decodes its panel again.
        // Past DOT_INPUT_ROWS input rows the inputs are cut into parts as well, taken part-major,
        // so a part's inputs stay in cache while every panel passes by (without it each panel
        // streams all of x from memory: 16 MiB at 4096 × 1024).
        let parts = (4 * rayon::current_num_threads()).div_ceil(panels).min(t.div_ceil(tile_inputs));
        let part_len = t.div_ceil(parts).next_multiple_of(tile_inputs).min(DOT_INPUT_ROWS.next_multiple_of(tile_inputs));
        let parts = t.div_ceil(part_len);
        (0..panels * parts).into_par_iter().for_each(|u| {
            let (r0, j0) = (u % panels * DOT_PANEL, u / panels * part_len);
            let (rows, m) = (DOT_PANEL.min(n - r0), part_len.min(t - j0));
            // SAFETY: y has capacity t × n; this unit alone writes rows j0..j0+m, columns
            // r0..r0+rows of it.
            let yb = unsafe { yp.get().add(j0 * n + r0) };
            unit(r0, rows, j0, m, yb);
        });
        // SAFETY: the units cover every row and every column of y.
        unsafe { y.set_len(t * n) };
        y
    }

    /// `matmul_t`, transposing at most `xt_floats` input values at once.
    fn matmul_t_in(&self, x: &[f32], t: usize, xt_floats: usize) -> Vec<f32> {
        let (n, k) = (self.rows, self.cols);
        debug_assert_eq!(x.len(), t * k);
        if t == 0 || n == 0 {
            return vec![0f32; t * n];
        }
        // Neither buffer is zeroed first: every tile is decoded over in full, and gemm (beta = 0,
        // dst not read) writes every element of y, tile column range by column range.
        let mut y: Vec<f32> = Vec::with_capacity(t * n);
        let tile = (TILE_FLOATS / k.max(1)).max(16).min(n);
        let mut buf = TILE_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if buf.len() < 2 * tile * k {
            buf = vec![0f32; 2 * tile * k];
        }
        // Rows of x transposed at once: all of them up to 16 Mi floats (64 MiB); past that the
        // weight tiles are decoded again for each chunk of rows.
        let chunk = (xt_floats / k.max(1)).max(1).min(t);
        let mut xt = XT_BUF.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if xt.len() < chunk * k {
            xt = vec![0f32; chunk * k];
        }
        let threads = rayon::current_num_threads();
        for m0 in (0..t).step_by(chunk) {
            let m = chunk.min(t - m0);
            transpose_into(&x[m0 * k..(m0 + m) * k], m, k, &mut xt);
            for r0 in (0..n).step_by(tile) {
                let rows = tile.min(n - r0);
                let (w, wt) = buf.split_at_mut(tile * k);
                if !self.decode_rows_transposed(r0, rows, wt) {
                    self.decode_rows(r0, &mut w[..rows * k]);
                    transpose_into(&w[..rows * k], rows, k, wt);
                }
                // SAFETY: dst is y[m0..m0+m, r0..r0+rows] (row stride n), lhs x[m0..m0+m] [m, k]
                // read from its column-major copy xt, rhs wᵀ [k, rows] row-major in wt; all in
                // bounds of their buffers.
                unsafe {
                    gemm::gemm(
                        m,
                        rows,
                        k,
                        y.as_mut_ptr().add(m0 * n + r0),
                        1,
                        n as isize,
                        false,
                        xt.as_ptr(),
                        m as isize,
                        1,
                        wt.as_ptr(),
                        1,
                        rows as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        if threads > 1 { gemm::Parallelism::Rayon(threads) } else { gemm::Parallelism::None },
                    );
                }
            }
        }
        // SAFETY: the loop above wrote all t × n elements (columns 0..n in tiles, every row).
        unsafe { y.set_len(t * n) };
        TILE_BUF.with(|b| *b.borrow_mut() = buf);
        XT_BUF.with(|b| *b.borrow_mut() = xt);
        y
    }
}

/// A linear layer over a `NativeMatrix`: candle tensors in and out (f32, CPU), the matmul here
/// (`LinearOp` is implemented in `weights`).
pub struct NativeLinear {
    pub weight: NativeMatrix,
    pub bias: Option<Tensor>,
}

/// IQ4_NL's 16 non-linear levels (llama.cpp `ggml-common.h` `kvalues_iq4nl`).
pub const KVALUES_IQ4NL: [i8; 16] = [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113];

/// Whole blocks of ggml type `t` decoded to f32 by the row decoder (every block of `bytes`; a
/// partial block at the end is left out). `None` for a type it does not decode.
pub fn decode_blocks(t: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    let codec = RowCodec::of_ggml(t)?;
    let (values, size) = codec.block();
    let n = bytes.len() / size;
    let mut out = vec![0f32; n * values];
    decode_row(codec, &bytes[..n * size], &mut out);
    Some(out)
}

/// IQ4_NL: blocks of 32 = f16 scale `d` + 16 bytes of 4-bit indices into `KVALUES_IQ4NL`; low
/// nibbles are elements 0..16, high nibbles 16..32 (llama.cpp `dequantize_row_iq4_nl`), into a
/// buffer of `bytes.len() / 18 · 32` values.
pub fn iq4_nl_into(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(18).zip(out.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs = &block[2..18];
        for (i, q) in qs.iter().enumerate() {
            o[i] = d * f32::from(KVALUES_IQ4NL[(q & 0xf) as usize]);
            o[i + 16] = d * f32::from(KVALUES_IQ4NL[(q >> 4) as usize]);
        }
    }
}

/// FP4 E2M1 values doubled, by 4-bit code (llama.cpp `kvalues_mxfp4`; the scales below are
/// halved to match).
const KVALUES_MXFP4: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// An E8M0 scale halved (`ggml_e8m0_to_fp32_half`): 2^(e − 128), the two smallest as subnormals.
fn e8m0_half(e: u8) -> f32 {
    f32::from_bits(if e < 2 { 0x0020_0000u32 << e } else { u32::from(e - 1) << 23 })
}

/// An unsigned E4M3 scale (bias 7) halved (`ggml_ue4m3_to_fp32`); 0 and 0x7F decode to 0.
fn ue4m3_half(x: u8) -> f32 {
    if x == 0 || x == 0x7f {
        return 0.0;
    }
    let (exp, man) = (i32::from((x >> 3) & 0xf), f32::from(x & 7));
    let raw = if exp == 0 { man * 2f32.powi(-9) } else { (1.0 + man / 8.0) * 2f32.powi(exp - 7) };
    raw * 0.5
}

/// MXFP4 (gpt-oss's GGUF type): blocks of 32 = an E8M0 exponent byte + 16 bytes of E2M1 codes, low
/// nibbles elements 0..16, high 16..32 (llama.cpp `dequantize_row_mxfp4`).
pub fn mxfp4_into(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(17).zip(out.chunks_exact_mut(32)) {
        let d = e8m0_half(block[0]);
        for (j, q) in block[1..].iter().enumerate() {
            o[j] = f32::from(KVALUES_MXFP4[(q & 0xf) as usize]) * d;
            o[j + 16] = f32::from(KVALUES_MXFP4[(q >> 4) as usize]) * d;
        }
    }
}

/// NVFP4: blocks of 64 = four UE4M3 scales (one per 16 values) + 32 bytes of E2M1 codes; in each
/// 16, low nibbles are elements 0..8, high 8..16 (llama.cpp `dequantize_row_nvfp4`).
pub fn nvfp4_into(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(36).zip(out.chunks_exact_mut(64)) {
        for (s, (qs, o)) in block[4..].chunks_exact(8).zip(o.chunks_exact_mut(16)).enumerate() {
            let d = ue4m3_half(block[s]);
            for (j, q) in qs.iter().enumerate() {
                o[j] = f32::from(KVALUES_MXFP4[(q & 0xf) as usize]) * d;
                o[j + 8] = f32::from(KVALUES_MXFP4[(q >> 4) as usize]) * d;
            }
        }
    }
}

/// IQ4_XS: super-blocks of 256 = f16 `d`, u16 `scales_h`, 4 bytes `scales_l`, 128 bytes of
/// IQ4_NL-style indices; sub-block `ib` (32 values) has a 6-bit scale `ls` (low 4 bits from
/// `scales_l`, high 2 from `scales_h`) and multiplier `d · (ls − 32)` (llama.cpp
/// `dequantize_row_iq4_xs`), into a buffer of `bytes.len() / 136 · 256` values.
pub fn iq4_xs_into(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(136).zip(out.chunks_exact_mut(256)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let scales_h = u16::from_le_bytes([block[2], block[3]]);
        let scales_l = &block[4..8];
        for (ib, (qs, o)) in block[8..136].chunks_exact(16).zip(o.chunks_exact_mut(32)).enumerate() {
            let ls = ((scales_l[ib / 2] >> (4 * (ib % 2))) & 0xf) as i32 | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            let dl = d * (ls - 32) as f32;
            for (i, q) in qs.iter().enumerate() {
                o[i] = dl * f32::from(KVALUES_IQ4NL[(q & 0xf) as usize]);
                o[i + 16] = dl * f32::from(KVALUES_IQ4NL[(q >> 4) as usize]);
            }
        }
    }
}

/// Q8_0 blocks (34 bytes: f16 d, 32 i8) as ggml's `dequantize_row_q8_0` computes them, `q · d`
/// (bit for bit candle's `to_float`), straight from the bytes in runs the compiler vectorises.
pub fn q8_0_into(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(34).zip(out.chunks_exact_mut(32)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let qs: &[u8; 32] = block[2..34].try_into().expect("32 bytes");
        for (o, q) in o.iter_mut().zip(qs) {
            *o = (*q as i8) as f32 * d;
        }
    }
}

/// Q4_K blocks (144 bytes: f16 d and dmin, 12 bytes of 6-bit scales and mins, 128 bytes of
/// nibbles) as ggml's `dequantize_row_q4_K` computes them: `d·sc · q − dmin·m` per 32 values, in
/// that order of operations (so bit for bit candle's `to_float`). Straight from the bytes, in
/// fixed-size runs the compiler vectorises: the K-quant tiles of a Q4_K_M forward spent 8 % of
/// its time in the scalar loops of `to_float`.
pub fn q4k_into(bytes: &[u8], out: &mut [f32]) {
    let scale_min = super::qdot::q4k_scale_min;
    for (block, o) in bytes.chunks_exact(144).zip(out.chunks_exact_mut(256)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let dmin = half::f16::from_le_bytes([block[2], block[3]]).to_f32();
        let scales = &block[4..16];
        for (g, (qs, o)) in block[16..144].chunks_exact(32).zip(o.chunks_exact_mut(64)).enumerate() {
            let (sc1, m1) = scale_min(2 * g, scales);
            let (sc2, m2) = scale_min(2 * g + 1, scales);
            let (d1, m1, d2, m2) = (d * sc1 as f32, dmin * m1 as f32, d * sc2 as f32, dmin * m2 as f32);
            let qs: &[u8; 32] = qs.try_into().expect("32-byte chunk");
            let (lo, hi) = o.split_at_mut(32);
            for ((l, h), q) in lo.iter_mut().zip(hi.iter_mut()).zip(qs) {
                *l = d1 * (q & 0xF) as f32 - m1;
                *h = d2 * (q >> 4) as f32 - m2;
            }
        }
    }
}

/// Q6_K blocks (210 bytes: 128 bytes of low nibbles, 64 of high 2-bit pairs, 16 i8 scales, f16
/// d) as ggml's `dequantize_row_q6_K` computes them: `d·sc · (q − 32)` (bit for bit candle's
/// `to_float`), in fixed-size runs the compiler vectorises.
pub fn q6k_into(bytes: &[u8], out: &mut [f32]) {
    for (block, o) in bytes.chunks_exact(210).zip(out.chunks_exact_mut(256)) {
        let d = half::f16::from_le_bytes([block[208], block[209]]).to_f32();
        for h in 0..2 {
            let ql: &[u8; 64] = block[64 * h..64 * h + 64].try_into().expect("64 bytes");
            let qh: &[u8; 32] = block[128 + 32 * h..160 + 32 * h].try_into().expect("32 bytes");
            let sc = &block[192 + 8 * h..200 + 8 * h];
            let o: &mut [f32; 128] = (&mut o[128 * h..128 * h + 128]).try_into().expect("128 values");
            for half16 in 0..2 {
                // Values l of this 16-run use scales sc[is], sc[is + 2], sc[is + 4], sc[is + 6].
                let is = half16;
                let ds: [f32; 4] = std::array::from_fn(|s| d * (sc[is + 2 * s] as i8) as f32);
                for l in 16 * half16..16 * half16 + 16 {
                    let q1 = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                    let q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                    let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                    let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                    o[l] = ds[0] * q1 as f32;
                    o[l + 32] = ds[1] * q2 as f32;
                    o[l + 64] = ds[2] * q3 as f32;
                    o[l + 96] = ds[3] * q4 as f32;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(bytes: &[u8]) -> MappedBytes {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        crate::format::MappedBytes::test_map(f.path())
    }

    /// The tiled matmul equals a plain triple loop, for a row count that is not a tile multiple
    /// and a permuted row map.
    #[test]
    fn tiled_matmul_matches_naive() {
        let (rows, cols, t) = (37usize, 300usize, 5usize);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 977.0).collect();
        let bytes: Vec<u8> = w.iter().flat_map(|v| half::bf16::from_f32(*v).to_le_bytes()).collect();
        let wq: Vec<f32> = w.iter().map(|v| half::bf16::from_f32(*v).to_f32()).collect();
        let map: Vec<u32> = (0..rows as u32).rev().collect();
        let m = NativeMatrix::new(mapped(&bytes), rows, cols, RowCodec::Bf16, |d| Error::Device { detail: d }).unwrap().with_row_map(map);
        let x: Vec<f32> = (0..t * cols).map(|i| ((i * 31 % 17) as f32 - 8.0) / 8.0).collect();
        // Both paths: gemm (`matmul_t_in`) and, on AVX-512 CPUs, the dot kernels.
        let mut paths = vec![("gemm", m.matmul_t_in(&x, t, XT_FLOATS))];
        if super::super::dot::available() {
            paths.push(("dot", m.matmul_t_dot(&x, t)));
        }
        for (path, y) in paths {
            for i in 0..t {
                for r in 0..rows {
                    let s = rows - 1 - r;
                    let want: f32 = (0..cols).map(|c| x[i * cols + c] * wq[s * cols + c]).sum();
                    assert!((y[i * rows + r] - want).abs() < 1e-3, "{path}: y[{i},{r}] = {} vs {want}", y[i * rows + r]);
                }
            }
        }
        assert_eq!(m.gather(&[0])[..cols], wq[(rows - 1) * cols..]);
        // Input rows transposed in chunks (7, then 6 left over for t = 13 here) give the same y.
        let t = 13;
        let x: Vec<f32> = (0..t * cols).map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0).collect();
        assert_eq!(m.matmul_t_in(&x, t, 7 * cols), m.matmul_t_in(&x, t, XT_FLOATS));
        // Past DOT_INPUT_ROWS the dot path cuts the inputs into parts (3 here): the same y.
        if super::super::dot::available() {
            let t = 2 * DOT_INPUT_ROWS + 70;
            let x: Vec<f32> = (0..t * cols).map(|i| ((i * 13 % 29) as f32 - 14.0) / 9.0).collect();
            let (dot, gemm) = (m.matmul_t_dot(&x, t), m.matmul_t_in(&x, t, XT_FLOATS));
            let worst = dot.iter().zip(&gemm).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3 && dot.iter().all(|v| v.is_finite()), "parts: worst {worst}");
        }
    }

    /// bf16 and f16 rows decoded straight into the transposed layout equal the row decoder's
    /// output transposed, for ragged row groups and column blocks and with a row map.
    #[test]
    fn fused_half_decode_equals_decode_then_transpose() {
        let (rows, cols) = (8 * 2 + 5, TRANSPOSE_COLS + 8 + 3);
        let w: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 97.0).collect();
        for codec in [RowCodec::Bf16, RowCodec::F16] {
            let bytes: Vec<u8> = w
                .iter()
                .flat_map(|v| {
                    if codec == RowCodec::F16 {
                        half::f16::from_f32(*v).to_le_bytes()
                    } else {
                        half::bf16::from_f32(*v).to_le_bytes()
                    }
                })
                .collect();
            let map: Vec<u32> = (0..rows as u32).map(|r| (r * 5) % rows as u32).collect();
            let m = NativeMatrix::new(mapped(&bytes), rows, cols, codec, |d| Error::Device { detail: d }).unwrap().with_row_map(map);
            let (r0, n) = (2, rows - 3);
            let mut plain = vec![0f32; n * cols];
            m.decode_rows(r0, &mut plain);
            let mut want = vec![0f32; n * cols];
            transpose_into(&plain, n, cols, &mut want);
            let mut got = vec![f32::NAN; n * cols];
            let fused = m.decode_rows_transposed(r0, n, &mut got);
            #[cfg(target_arch = "x86_64")]
            assert_eq!(fused, std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c"));
            if fused {
                assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{codec:?}");
            }
        }
    }

    #[test]
    fn transpose_covers_ragged_blocks() {
        let (rows, cols) = (8 * 3 + 5, TRANSPOSE_COLS + 8 * 2 + 3);
        let x: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
        let mut xt = vec![f32::NAN; rows * cols];
        transpose_into(&x, rows, cols, &mut xt);
        for r in 0..rows {
            for c in 0..cols {
                assert_eq!(xt[c * rows + r], x[r * cols + c], "({r}, {c})");
            }
        }
    }

    #[test]
    fn wrong_size_is_an_error_not_a_panic() {
        let e = NativeMatrix::new(mapped(&[0u8; 10]), 2, 3, RowCodec::F32, |d| Error::Device { detail: d }).err().unwrap();
        assert!(e.to_string().contains("10 bytes stored"), "{e}");
    }

    /// The Q4_K, Q6_K and Q8_0 decoders read the bytes candle's `to_float` reads and give its values
    /// bit for bit (random blocks with finite f16 scales, several blocks per row).
    #[test]
    fn k_quant_decoders_equal_candle() {
        let mut state = 0x9E3779B97F4A7C15u64;
        let mut byte = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        };
        for (t, size, d_at) in
            [(GgmlType::Q4_K, 144usize, &[0usize, 2][..]), (GgmlType::Q6_K, 210, &[208][..]), (GgmlType::Q8_0, 34, &[0][..])]
        {
            let blocks = if t == GgmlType::Q8_0 { 40 } else { 5 };
            let mut bytes: Vec<u8> = (0..blocks * size).map(|_| byte()).collect();
            for b in 0..blocks {
                for &at in d_at {
                    let v = half::f16::from_f32((byte() as f32 - 128.0) / 4096.0).to_le_bytes();
                    bytes[b * size + at..b * size + at + 2].copy_from_slice(&v);
                }
            }
            let values = blocks * if t == GgmlType::Q8_0 { 32 } else { 256 };
            let mut ours = vec![f32::NAN; values];
            let mut theirs = vec![f32::NAN; values];
            match t {
                GgmlType::Q4_K => {
                    q4k_into(&bytes, &mut ours);
                    blocks_to_f32::<k_quants::BlockQ4K>(&bytes, &mut theirs);
                }
                GgmlType::Q8_0 => {
                    q8_0_into(&bytes, &mut ours);
                    blocks_to_f32::<k_quants::BlockQ8_0>(&bytes, &mut theirs);
                }
                _ => {
                    q6k_into(&bytes, &mut ours);
                    blocks_to_f32::<k_quants::BlockQ6K>(&bytes, &mut theirs);
                }
            }
            assert!(ours.iter().zip(&theirs).all(|(a, b)| a.to_bits() == b.to_bits()), "{t:?}");
            assert!(ours.iter().any(|v| *v != 0.0), "{t:?}: all zero");
        }
    }
}
