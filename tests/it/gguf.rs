//! GGUF reader and GGUF checks on the fixtures in testdata/gguf-fixtures (made by gguf-py 0.19's
//! GGUFWriter, see make_fixtures.py there). Every error path is built by mutating fixture bytes
//! here; every check has a fixture broken the way conversions break.

use std::path::{Path, PathBuf};

use ckptcheck::checks::{gguf as gchecks, Context, Finding, Severity};
use ckptcheck::format::gguf::{parse_header, GgmlType, GgufError, GgufErrorKind, GgufFile, Header, LayoutProblem};
use ckptcheck::format::hf::HfDir;

use crate::common;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/gguf-fixtures")
}

fn bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(name)).unwrap()
}

fn parse(b: &[u8]) -> Result<Header, GgufError> {
    parse_header(b, Path::new("fixture.gguf"))
}

fn parse_err(b: &[u8]) -> GgufError {
    match parse(b) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Position of a length-prefixed GGUF string (a key or a tensor name) in the file.
fn find_string(b: &[u8], s: &str) -> usize {
    let mut needle = (s.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(s.as_bytes());
    b.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap_or_else(|| panic!("`{s}` not in file"))
}

/// Position just after a metadata key (where its u32 value type starts).
fn after_key(b: &[u8], key: &str) -> usize {
    find_string(b, key) + 8 + key.len()
}

/// Position of a tensor info's n_dims field; returns (n_dims at, type at, offset at).
fn tensor_fields(b: &[u8], name: &str) -> (usize, usize, usize) {
    // Tensor names also appear nowhere else in the header, so the first match is the info.
    let at = find_string(b, name) + 8 + name.len();
    let n_dims = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let ty = at + 4 + 8 * n_dims;
    (at, ty, ty + 4)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn replace_all(b: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let mut i = 0;
    while i + from.len() <= b.len() {
        if &b[i..i + from.len()] == from {
            b[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// parser on the fixtures

#[test]
fn tiny_llama_metadata_tokenizer_and_types() {
    let g = GgufFile::open(&fixtures().join("tiny-llama.gguf")).unwrap();
    let h = &g.header;
    assert_eq!(h.version, 3);
    assert!(h.problems.is_empty(), "{:?}", h.problems);
    assert_eq!(h.tensors.len(), 20);
    assert_eq!(h.alignment, 32);

    let m = h.arch_meta();
    assert_eq!(m.architecture.as_deref(), Some("llama"));
    assert_eq!(m.context_length, Some(256));
    assert_eq!(m.embedding_length, Some(64));
    assert_eq!(m.block_count, Some(2));
    assert_eq!(m.feed_forward_length, Some(128));
    assert_eq!(m.head_count, Some(4));
    assert_eq!(m.head_count_kv, Some(2));
    assert_eq!(m.rope_freq_base, Some(10000.0));
    assert_eq!(m.rms_norm_eps, Some(f64::from(1e-6f32)));
    assert_eq!(m.rope_dimension_count, Some(16));
    assert_eq!(m.expert_count, None);

    let t = h.tokenizer();
    assert_eq!(t.model, Some("gpt2"));
    assert_eq!(t.pre, Some("gpt-2"));
    assert_eq!(t.tokens.unwrap().len(), 1024);
    assert_eq!(t.token_type.as_ref().unwrap().len(), 1024);
    assert_eq!(t.merges.unwrap().len(), 765);
    assert_eq!((t.bos, t.eos, t.eot, t.pad), (None, Some(2), None, Some(0)));
    assert_eq!(t.token(2), Some("<|im_end|>"));
    assert_eq!(t.id("<|im_start|>"), Some(1));
    assert!(t.chat_template.unwrap().contains("<|im_start|>"));
    assert_eq!(t.special_tokens().len(), 3);

    // Offsets and sizes as gguf-py's GGUFReader reports them (data_offset is absolute).
    let embd = h.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ggml_type, GgmlType::Q8_0);
    assert_eq!(embd.shape(), vec![1024, 64]);
    assert_eq!(embd.n_bytes, 69632);
    assert_eq!(h.data_start + embd.offset, 28224);
    let last = h.tensor("output_norm.weight").unwrap();
    assert_eq!(h.data_start + last.offset, 197952);

    let s = h.type_summary();
    let types: Vec<&str> = s.keys().map(|t| t.name()).collect();
    assert_eq!(types, ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "BF16"]);
    assert_eq!(s[&GgmlType::Q8_0].tensors, 3);
    assert_eq!(s[&GgmlType::Q8_0].bytes, 69632 + 2 * 8704);
    assert_eq!(s[&GgmlType::F32].bytes, 5 * 256);
    assert_eq!(g.checked_bytes("blk.1.ffn_down.weight").unwrap().len(), 16384);
}

/// Byte sizes of one tensor of every type for 2 rows × 2 blocks, as gguf-py 0.19's GGUFReader
/// computes them (`n_bytes`) — an independent implementation of the same table — except Q8_1:
/// gguf-py's `GGML_QUANT_SIZES` still says 40 bytes a block (two f32 scales), llama.cpp's
/// `block_q8_1` has been two f16 (36 bytes) since 2023 (`ggml-common.h` static_assert).
#[test]
fn every_type_size_matches_gguf_py() {
    let expected: &[(&str, u64)] = &[
        ("F32", 16),
        ("F16", 8),
        ("Q4_0", 72),
        ("Q4_1", 80),
        ("Q5_0", 88),
        ("Q5_1", 96),
        ("Q8_0", 136),
        ("Q8_1", 144),
        ("Q2_K", 336),
        ("Q3_K", 440),
        ("Q4_K", 576),
        ("Q5_K", 704),
        ("Q6_K", 840),
        ("Q8_K", 1168),
        ("IQ2_XXS", 264),
        ("IQ2_XS", 296),
        ("IQ3_XXS", 392),
        ("IQ1_S", 200),
        ("IQ4_NL", 72),
        ("IQ3_S", 440),
        ("IQ2_S", 328),
        ("IQ4_XS", 544),
        ("I8", 4),
        ("I16", 8),
        ("I32", 16),
        ("I64", 32),
        ("F64", 32),
        ("IQ1_M", 224),
        ("BF16", 8),
        ("TQ1_0", 216),
        ("TQ2_0", 264),
        ("MXFP4", 68),
        ("NVFP4", 144),
        ("Q1_0", 72),
    ];
    let h = parse(&bytes("all-types.gguf")).unwrap();
    assert!(h.problems.is_empty(), "{:?}", h.problems);
    assert_eq!(h.alignment, 64);
    assert_eq!(h.tensors.len(), expected.len());
    for (t, (name, n)) in h.tensors.iter().zip(expected) {
        assert_eq!(t.name, format!("t.{name}"));
        assert_eq!(t.ggml_type.name(), *name);
        assert_eq!(t.n_bytes, *n, "{name}");
        assert_eq!(t.offset % 64, 0, "{name} aligned");
        assert_eq!(t.dims, vec![2 * t.ggml_type.block_size(), 2]);
    }
    assert_eq!(h.data_start % 64, 0);
}

// ---------------------------------------------------------------------------------------------
// every error path, by mutating fixture bytes

#[test]
fn truncated_files_are_errors_naming_the_field() {
    let b = bytes("tiny-llama.gguf");
    let e = parse_err(&b[..10]);
    assert!(matches!(e.kind, GgufErrorKind::Truncated { .. } | GgufErrorKind::CountTooLarge { .. }), "{e}");
    let e = parse_err(&b[..2]);
    assert_eq!(e.field, "header magic");
    assert!(matches!(e.kind, GgufErrorKind::Truncated { need: 4, file_len: 2, .. }));
    // Cut inside the token list: the length check against the bytes left fires first.
    let cut = after_key(&b, "tokenizer.ggml.tokens") + 100;
    let e = parse_err(&b[..cut]);
    assert!(e.field.contains("`tokenizer.ggml.tokens`"), "{e}");
    assert!(matches!(e.kind, GgufErrorKind::ArrayTooLong { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("fixture.gguf") && msg.contains("bytes left in the file"), "{msg}");
    // Cut inside the tensor infos.
    let (at, _, _) = tensor_fields(&b, "blk.1.ffn_up.weight");
    let e = parse_err(&b[..at + 6]);
    assert!(e.field.starts_with("tensor #"), "{e}");
    assert!(matches!(e.kind, GgufErrorKind::Truncated { .. }), "{e}");
    // Cut inside the data: the header parses, the tensors past the end are reported.
    let h = parse(&b[..b.len() - 1000]).unwrap();
    assert!(
        h.problems.iter().any(|p| matches!(p, LayoutProblem::OutOfBounds { tensor, .. } if tensor == "blk.1.ffn_down.weight")),
        "{:?}",
        h.problems
    );
    assert!(h.problems.iter().all(|p| ckptcheck::checks::gguf::layout_id(p).as_str() == "gguf.tensor-out-of-bounds"));
}

#[test]
fn lying_counts_are_refused_before_allocating() {
    let b = bytes("tiny-llama.gguf");
    let mut m = b.clone();
    put_u64(&mut m, 8, u64::MAX);
    let e = parse_err(&m);
    assert_eq!(e.field, "header tensor_count");
    assert!(matches!(e.kind, GgufErrorKind::CountTooLarge { count: u64::MAX, limit, .. } if limit == 1 << 20), "{e}");
    let mut m = b.clone();
    put_u64(&mut m, 16, 1 << 40);
    let e = parse_err(&m);
    assert_eq!(e.field, "header metadata_kv_count");
    assert!(e.to_string().contains("count 2^40 exceeds 2^20"), "{e}");
    // A count within the cap but more than the file can hold.
    let mut m = b.clone();
    put_u64(&mut m, 8, 500_000);
    let e = parse_err(&m);
    assert!(matches!(e.kind, GgufErrorKind::CountTooLarge { count: 500_000, .. }), "{e}");
    assert!(e.to_string().contains("what the bytes left in the file can hold"), "{e}");
    // One tensor more than declared: reading runs into the data section and fails cleanly.
    let mut m = b.clone();
    put_u64(&mut m, 8, 21);
    assert!(parse(&m).is_err());
}

#[test]
fn huge_array_and_string_lengths() {
    let b = bytes("tiny-llama.gguf");
    let at = after_key(&b, "tokenizer.ggml.tokens"); // type (4) = array, elem type (4), len (8)
    let mut m = b.clone();
    put_u64(&mut m, at + 8, 1 << 62);
    let e = parse_err(&m);
    assert!(matches!(e.kind, GgufErrorKind::ArrayTooLong { len, limit, .. } if len == 1 << 62 && limit == 1 << 30), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("metadata key #") && msg.contains("(`tokenizer.ggml.tokens`): array length 2^62 exceeds 2^30"), "{msg}");
    // A string length inside the token list.
    let mut m = b.clone();
    put_u64(&mut m, at + 16, 1 << 50);
    let e = parse_err(&m);
    assert!(matches!(e.kind, GgufErrorKind::StringTooLong { len, .. } if len == 1 << 50), "{e}");
    assert!(e.field.contains("tokenizer.ggml.tokens"));
    // A key length.
    let k = find_string(&b, "general.name");
    let mut m = b.clone();
    put_u64(&mut m, k, u64::MAX);
    let e = parse_err(&m);
    assert!(e.field.ends_with("name") && matches!(e.kind, GgufErrorKind::StringTooLong { .. }), "{e}");
}

#[test]
fn alignment_zero_non_power_of_two_and_wrong_type() {
    let b = bytes("all-types.gguf");
    let at = after_key(&b, "general.alignment");
    for (v, want) in [(0u32, 0u64), (48, 48)] {
        let mut m = b.clone();
        put_u32(&mut m, at + 4, v);
        let e = parse_err(&m);
        assert_eq!(e.kind, GgufErrorKind::BadAlignment(want));
        assert_eq!(
            e.to_string(),
            format!(
                "`fixture.gguf`: GGUF metadata `general.alignment`: alignment {want} is not a power of two (llama.cpp refuses the file)"
            )
        );
    }
    let mut m = b.clone();
    put_u32(&mut m, at, 5); // int32 instead of uint32
    let e = parse_err(&m);
    assert_eq!(e.kind, GgufErrorKind::AlignmentType { found: "int32" });
    // Alignment 32 instead of 64: the tensors' offsets (multiples of 64) are still aligned but the
    // data section moves, so the last tensors run off the end.
    let mut m = b.clone();
    put_u32(&mut m, at + 4, 32);
    let h = parse(&m).unwrap();
    assert_eq!(h.alignment, 32);
}

#[test]
fn unknown_and_removed_type_ids() {
    let b = bytes("all-types.gguf");
    let (_, ty, _) = tensor_fields(&b, "t.IQ4_NL");
    let mut m = b.clone();
    put_u32(&mut m, ty, 99);
    let e = parse_err(&m);
    assert_eq!(e.kind, GgufErrorKind::UnknownType(99));
    assert_eq!(e.field, "tensor #18 (`t.IQ4_NL`) type");
    assert!(e.to_string().contains("ggml type id 99 is not one llama.cpp defines"), "{e}");
    put_u32(&mut m, ty, 31);
    let e = parse_err(&m);
    assert!(matches!(e.kind, GgufErrorKind::RemovedType { id: 31, name: "Q4_0_4_4", .. }), "{e}");
    assert!(e.to_string().contains("repacks Q4_0"), "{e}");
}

#[test]
fn header_field_errors() {
    let b = bytes("tiny-llama.gguf");
    let mut m = b.clone();
    m[..4].copy_from_slice(b"GGUG");
    assert!(matches!(parse_err(&m).kind, GgufErrorKind::BadMagic { .. }));
    for (v, needle) in [(1u32, "v1"), (0x0300_0000, "big-endian"), (4, "newer"), (0, "does not exist")] {
        let mut m = b.clone();
        put_u32(&mut m, 4, v);
        let e = parse_err(&m);
        assert!(matches!(e.kind, GgufErrorKind::Version { version, .. } if version == v), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
    // GGUF v2 has the same layout as v3 for little-endian files.
    let mut m = b.clone();
    put_u32(&mut m, 4, 2);
    assert_eq!(parse(&m).unwrap().version, 2);

    let (nd, ty, off) = tensor_fields(&b, "token_embd.weight");
    let mut m = b.clone();
    put_u32(&mut m, nd, 5);
    assert_eq!(parse_err(&m).kind, GgufErrorKind::TooManyDims(5));
    let mut m = b.clone();
    put_u64(&mut m, nd + 4, 48); // 48 columns of Q8_0 (block 32)
    let e = parse_err(&m);
    assert!(matches!(e.kind, GgufErrorKind::RowNotBlockMultiple { ne0: 48, ggml_type: GgmlType::Q8_0, block: 32 }), "{e}");
    let mut m = b.clone();
    put_u64(&mut m, nd + 4, u64::MAX);
    assert!(matches!(parse_err(&m).kind, GgufErrorKind::NegativeDim { dim: 0, .. }));
    let mut m = b.clone();
    put_u64(&mut m, nd + 4, 1 << 40);
    put_u64(&mut m, nd + 12, 1 << 40);
    assert_eq!(parse_err(&m).kind, GgufErrorKind::SizeOverflow);
    let _ = (ty, off);

    let at = after_key(&b, "general.name");
    let mut m = b.clone();
    put_u32(&mut m, at, 13);
    assert_eq!(parse_err(&m).kind, GgufErrorKind::BadValueType(13));

    let mut m = bytes("tiny-llama-double-bos.gguf");
    let k = find_string(&m, "tokenizer.ggml.eos_token_id");
    m[k + 8..k + 8 + 27].copy_from_slice(b"tokenizer.ggml.bos_token_id");
    let e = parse_err(&m);
    assert_eq!(e.kind, GgufErrorKind::DuplicateKey);
    assert!(e.field.contains("tokenizer.ggml.bos_token_id"));

    let mut m = b.clone();
    let k = find_string(&m, "blk.0.attn_q.weight");
    m[k + 8..k + 8 + 19].copy_from_slice(b"blk.1.attn_q.weight");
    // blk.1.attn_q.weight now appears twice; the second declaration is refused.
    assert_eq!(parse_err(&m).kind, GgufErrorKind::DuplicateTensor);

    let mut m = b.clone();
    let k = find_string(&m, "general.name");
    put_u64(&mut m, k, 0);
    // An empty key leaves the rest misaligned; any error is fine, but not a panic.
    assert!(parse(&m).is_err());
}

#[test]
fn misaligned_overlapping_and_unpacked_tensors() {
    let b = bytes("tiny-llama.gguf");
    let h = parse(&b).unwrap();
    let q = h.tensor("blk.0.attn_q.weight").unwrap().offset;
    let (_, _, off) = tensor_fields(&b, "blk.0.attn_k.weight");
    let mut m = b.clone();
    put_u64(&mut m, off, q + 4);
    let h = parse(&m).unwrap();
    let ids: Vec<&str> = h.problems.iter().map(|p| ckptcheck::checks::gguf::layout_id(p).as_str()).collect();
    assert!(ids.contains(&"gguf.tensor-misaligned"), "{ids:?}");
    assert!(ids.contains(&"gguf.tensor-overlap"), "{ids:?}");
    assert!(ids.contains(&"gguf.tensor-not-packed"), "{ids:?}");
    assert!(h.problems.iter().any(
        |p| matches!(p, LayoutProblem::Overlap { first, second } if first == "blk.0.attn_q.weight" && second == "blk.0.attn_k.weight")
    ));

    // checked_bytes refuses a tensor with a layout problem; the error names file and tensor.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.gguf");
    std::fs::write(&p, &m).unwrap();
    let g = GgufFile::open(&p).unwrap();
    let e = g.checked_bytes("blk.0.attn_k.weight").unwrap_err().to_string();
    assert!(e.contains("bad.gguf") && e.contains("blk.0.attn_k.weight") && e.contains("not a multiple of general.alignment = 32"), "{e}");
    assert!(g.checked_bytes("blk.1.attn_k.weight").is_ok());
    let e = g.checked_bytes("nope").unwrap_err().to_string();
    assert!(e.contains("not in this GGUF"), "{e}");
}

#[test]
fn open_errors_convert_to_the_crate_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00").unwrap();
    let e = GgufFile::open(&p).unwrap_err();
    assert!(matches!(e, ckptcheck::error::Error::Field { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("t.gguf") && msg.contains("header tensor_count") && msg.contains("truncated"), "{msg}");
    assert!(GgufFile::open(&dir.path().join("missing.gguf")).is_err());
}

/// The fixture itself, mutated at random: never a panic (the unit test does the same on a
/// synthetic file; this one reaches the long token and merge arrays).
#[test]
fn mutated_fixture_never_panics() {
    let good = bytes("tiny-llama-no-template.gguf");
    let header_len = parse(&good).unwrap().data_start as usize;
    let mut state = 0x2545f4914f6cdd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..1500 {
        let mut b = good.clone();
        match next() % 3 {
            0 => {
                for _ in 0..(1 + next() % 3) {
                    let i = (next() as usize) % header_len;
                    b[i] = next() as u8;
                }
            }
            1 => b.truncate((next() as usize) % header_len),
            _ => {
                let i = (next() as usize) % (header_len - 8);
                put_u64(&mut b, i, [u64::MAX, 1 << 62, 1 << 31, 0, 7][(next() % 5) as usize]);
            }
        }
        if let Ok(h) = parse(&b) {
            let _ = (h.arch_meta(), h.tokenizer().special_tokens(), h.type_summary());
            // The rebuilt tokenizer takes strings from the file: it must fail cleanly too.
            if let Ok(t) = h.tokenizer().to_hf() {
                let _ = t.encode(gchecks::PROBES[0], false);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// checks

fn ids(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.id).collect()
}

fn hf() -> HfDir {
    HfDir::open(&fixtures().join("hf")).unwrap()
}

fn lint(name: &str, with_source: bool) -> Vec<Finding> {
    let g = GgufFile::open(&fixtures().join(name)).unwrap();
    let dir = hf();
    let ctx = Context::new(&dir);
    gchecks::run(&g, if with_source { Some(&ctx) } else { None })
}

fn lint_bytes(b: &[u8], with_source: bool) -> Vec<Finding> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mutated.gguf");
    std::fs::write(&p, b).unwrap();
    let g = GgufFile::open(&p).unwrap();
    let src = hf();
    let ctx = Context::new(&src);
    gchecks::run(&g, if with_source { Some(&ctx) } else { None })
}

fn find<'a>(f: &'a [Finding], id: &str) -> &'a Finding {
    f.iter().find(|x| x.id == id).unwrap_or_else(|| panic!("no {id} in {:?}", ids(f)))
}

#[test]
fn good_conversion_is_clean_alone_and_against_its_source() {
    let f = lint("tiny-llama.gguf", false);
    assert!(f.is_empty(), "{f:#?}");
    let f = lint("tiny-llama.gguf", true);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn wrong_eos_id_is_caught_against_the_source() {
    let f = lint("tiny-llama-wrong-eos.gguf", true);
    assert_eq!(ids(&f), ["gguf.eos-differs"], "{f:#?}");
    let e = find(&f, "gguf.eos-differs");
    assert_eq!(e.severity, Severity::Error);
    assert_eq!(e.file, "tiny-llama-wrong-eos.gguf");
    assert_eq!(e.field.as_deref(), Some("tokenizer.ggml.eos_token_id"));
    assert!(e.message.contains("0 `<|endoftext|>`") && e.message.contains("2 `<|im_end|>`"), "{}", e.message);
    // Alone, the file is consistent: llama.cpp still stops on <|im_end|> by its text.
    assert!(lint("tiny-llama-wrong-eos.gguf", false).is_empty());
}

#[test]
fn missing_chat_template_is_caught_alone_and_against_the_source() {
    let f = lint("tiny-llama-no-template.gguf", false);
    assert_eq!(ids(&f), ["gguf.template-missing"]);
    assert_eq!(f[0].severity, Severity::Warning);
    assert!(f[0].message.contains("<|im_start|>"));
    let f = lint("tiny-llama-no-template.gguf", true);
    assert_eq!(ids(&f), ["gguf.template-missing"]);
    assert_eq!(f[0].severity, Severity::Error);
    assert!(f[0].message.contains("chat_template.jinja"), "{}", f[0].message);
}

#[test]
fn different_tokenizer_is_caught() {
    let f = lint("tiny-llama-other-tokenizer.gguf", true);
    assert!(ids(&f).contains(&"gguf.tokenization-differs"), "{:?}", ids(&f));
    let t = find(&f, "gguf.tokens-differ");
    assert_eq!(t.severity, Severity::Error);
    assert!(t.message.starts_with("1024 of 1024 token ids differ"), "{}", t.message);
    assert!(t.message.contains("first: 0 '") && t.message.ends_with("vs '<|endoftext|>'"), "{}", t.message);
    // Its EOS is <|im_end|> at another id: the id differs from the source's.
    assert!(ids(&f).contains(&"gguf.eos-differs"), "{:?}", ids(&f));
    // Alone, the file is self-consistent.
    assert!(lint("tiny-llama-other-tokenizer.gguf", false).is_empty());
}

#[test]
fn wrong_rope_base_is_caught() {
    let f = lint("tiny-llama-wrong-rope.gguf", true);
    assert_eq!(ids(&f), ["gguf.rope-base-differs"]);
    assert_eq!(f[0].field.as_deref(), Some("llama.rope.freq_base"));
    assert_eq!(f[0].message, "llama.rope.freq_base is 500000 but config.json rope_theta is 10000");
}

#[test]
fn double_bos_and_added_bos_are_caught() {
    let f = lint("tiny-llama-double-bos.gguf", false);
    assert_eq!(ids(&f), ["gguf.double-bos"]);
    assert!(f[0].message.contains("`<|im_start|>`"), "{}", f[0].message);
    let f = lint("tiny-llama-double-bos.gguf", true);
    assert!(ids(&f).contains(&"gguf.bos-differs"), "{:?}", ids(&f));
    assert!(ids(&f).contains(&"gguf.template-differs"), "{:?}", ids(&f));
}

#[test]
fn pre_tokenizer_mismatch_is_caught() {
    let f = lint("tiny-llama-pre-llama3.gguf", true);
    assert_eq!(ids(&f), ["gguf.pre-tokenizer-differs", "gguf.tokenization-differs"]);
    assert!(f[0].message.contains("`llama-bpe`"), "{}", f[0].message);
    // The probe round trip sees the consequence: other token ids for the same text.
    assert!(f[1].message.contains("probe texts tokenize differently"), "{}", f[1].message);
    // The fixture's own `gpt-2` (the unknown-hash workaround) is right for a plain ByteLevel
    // tokenizer, so the good file has no finding (good_conversion_is_clean_...).
}

/// The GGUF's tokenizer rebuilt from its metadata encodes every probe exactly as the source's
/// tokenizer.json does (the round-trip check's premise), and refuses what it cannot rebuild.
#[test]
fn rebuilt_gguf_tokenizer_equals_the_source() {
    let g = GgufFile::open(&fixtures().join("tiny-llama.gguf")).unwrap();
    let gt = g.header.tokenizer().to_hf().unwrap();
    let hf = ckptcheck::format::tokens::TokenizerInfo::load(&fixtures().join("hf/tokenizer.json")).unwrap();
    for p in gchecks::PROBES {
        let a = hf.encode_raw(p).unwrap();
        assert_eq!(gt.encode(*p, false).unwrap().get_ids(), a.as_slice(), "{p:?}");
        assert_eq!(gt.decode(&a, false).unwrap(), *p);
    }
    let mut t = g.header.tokenizer();
    t.pre = Some("default");
    assert!(t.to_hf().unwrap_err().contains("`default`"));
    // SentencePiece is rebuilt now (tests/it/spm.rs); other models are refused by name.
    t.model = Some("bert");
    assert!(t.to_hf().unwrap_err().contains("`bert`"));
}

#[test]
fn missing_pre_tokenizer_is_a_warning() {
    let mut b = bytes("tiny-llama.gguf");
    // Rename the key: llama.cpp then falls back to its `default` pre-tokenizer.
    let k = find_string(&b, "tokenizer.ggml.pre");
    b[k + 8..k + 8 + 18].copy_from_slice(b"tokenizer.ggml.prX");
    let f = lint_bytes(&b, false);
    assert_eq!(ids(&f), ["gguf.pre-missing"]);
}

#[test]
fn turn_end_token_that_does_not_stop_generation() {
    // EOS = <|endoftext|> and the template's turn end renamed to a text llama.cpp does not know.
    let mut b = bytes("tiny-llama-wrong-eos.gguf");
    replace_all(&mut b, b"<|im_end|>", b"<|im_fin|>");
    let f = lint_bytes(&b, false);
    assert_eq!(ids(&f), ["gguf.turn-end-not-eog"]);
    assert!(f[0].message.contains("`<|im_fin|>` (id 2)"), "{}", f[0].message);
    assert!(f[0].message.contains("eos 0 `<|endoftext|>`"), "{}", f[0].message);
}

#[test]
fn block_count_special_range_and_embedding_rows() {
    let b = bytes("tiny-llama.gguf");
    let mut m = b.clone();
    put_u32(&mut m, after_key(&b, "llama.block_count") + 4, 3);
    let f = lint_bytes(&m, false);
    assert_eq!(ids(&f), ["gguf.block-count-mismatch"]);
    let f = lint_bytes(&m, true);
    assert!(ids(&f).contains(&"gguf.shape-differs"), "{:?}", ids(&f));

    let mut m = b.clone();
    put_u32(&mut m, after_key(&b, "tokenizer.ggml.eos_token_id") + 4, 5000);
    let f = lint_bytes(&m, false);
    let e = find(&f, "gguf.special-out-of-range");
    assert_eq!(e.message, "`tokenizer.ggml.eos_token_id` is 5000 but the vocabulary has only 1024 tokens");

    // token_embd with 1000 rows (its data then no longer tiles the file: layout findings too).
    let (nd, _, _) = tensor_fields(&b, "token_embd.weight");
    let mut m = b.clone();
    put_u64(&mut m, nd + 12, 1000);
    let f = lint_bytes(&m, false);
    let e = find(&f, "gguf.vocab-exceeds-embedding");
    assert!(e.message.contains("1024 tokens but `token_embd.weight` has 1000 rows"), "{}", e.message);
    assert!(ids(&f).contains(&"gguf.tensor-not-packed"));
}

#[test]
fn rms_eps_heads_and_context_against_config() {
    let b = bytes("tiny-llama.gguf");
    let mut m = b.clone();
    let at = after_key(&b, "llama.attention.layer_norm_rms_epsilon") + 4;
    m[at..at + 4].copy_from_slice(&1e-5f32.to_le_bytes());
    put_u32(&mut m, after_key(&b, "llama.attention.head_count_kv") + 4, 4);
    put_u32(&mut m, after_key(&b, "llama.context_length") + 4, 4096);
    let f = lint_bytes(&m, true);
    assert_eq!(ids(&f), ["gguf.context-length-differs", "gguf.heads-differ", "gguf.rms-eps-differs"]);
    assert_eq!(find(&f, "gguf.context-length-differs").severity, Severity::Warning);
    assert_eq!(
        find(&f, "gguf.rms-eps-differs").message,
        "llama.attention.layer_norm_rms_epsilon is 0.00001 but config.json rms_norm_eps is 0.000001"
    );
}

/// GGUFs made by llama.cpp's own converter and quantizer: every GGUF zoo.json lists must be in
/// the zoo, and every one there parses with no layout problem and is consistent with itself.
#[test]
fn zoo_gguf_files_parse_when_present() {
    let zoo = common::zoo();
    let mut found = Vec::new();
    let mut stack = vec![zoo.clone()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "gguf") {
                found.push(p);
            }
        }
    }
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(common::zoo_path("zoo.json")).unwrap()).unwrap();
    let listed: Vec<&str> =
        manifest["variants"].as_object().unwrap().values().filter(|v| v["kind"] == "gguf").map(|v| v["path"].as_str().unwrap()).collect();
    assert!(!listed.is_empty(), "zoo.json lists no GGUF");
    for rel in &listed {
        assert!(found.contains(&common::zoo_path(rel)), "{rel}: listed in zoo.json but not found under {}", zoo.display());
    }
    // Files broken in a way the GGUF shows by itself name that finding in zoo.json (`lint_alone`).
    let alone_fault = |p: &std::path::Path| {
        manifest["variants"]
            .as_object()
            .unwrap()
            .values()
            .find(|v| v["path"].as_str().is_some_and(|r| common::zoo().join(r) == *p))
            .and_then(|v| v["lint_alone"].as_str().map(str::to_string))
    };
    for p in &found {
        let g = GgufFile::open(p).unwrap_or_else(|e| panic!("{e}"));
        assert!(g.header.problems.is_empty(), "{}: {:?}", p.display(), g.header.problems);
        assert!(!g.header.type_summary().is_empty());
        let f: Vec<Finding> = gchecks::run(&g, None).into_iter().filter(|f| f.severity == Severity::Error).collect();
        match alone_fault(p) {
            None => assert!(f.is_empty(), "{}: {f:#?}", p.display()),
            Some(id) => assert!(f.iter().all(|f| f.id == id) && !f.is_empty(), "{}: expected only {id}: {f:#?}", p.display()),
        }
    }
    eprintln!("{} zoo GGUF file(s) checked", found.len());
}

/// The zoo's conversions of models/llama-instruct by llama.cpp's own convert_hf_to_gguf.py and
/// llama-quantize (testdata/zoo/gguf_stage.py): the healthy quantizations are clean against
/// their source, each broken conversion is caught with exactly its finding. A missing file fails.
#[test]
fn zoo_llama_cpp_conversions_against_source() {
    let dir = HfDir::open(&common::zoo_path("models/llama-instruct")).unwrap();
    let ctx = Context::new(&dir);
    let cases: &[(&str, &[&str], &[&str])] = &[
        ("llama-instruct-q8_0.gguf", &[], &["Q8_0"]),
        ("llama-instruct-q4_0.gguf", &[], &["Q4_0", "Q6_K"]),
        ("llama-instruct-q4_k_m.gguf", &[], &["Q4_K", "Q6_K"]),
        ("llama-instruct-f16.gguf", &[], &["F16"]),
        ("llama-instruct-q6_k.gguf", &[], &["Q6_K"]),
        ("llama-instruct-wrong-eos.gguf", &["gguf.eos-differs"], &[]),
        ("llama-instruct-no-template.gguf", &["gguf.template-missing"], &[]),
        ("llama-instruct-other-tokenizer.gguf", &["gguf.tokens-differ", "gguf.merges-differ", "gguf.tokenization-differs"], &[]),
    ];
    for (name, want, types) in cases {
        let p = common::zoo_path(&format!("gguf/{name}"));
        let g = GgufFile::open(&p).unwrap();
        assert!(g.header.problems.is_empty(), "{name}: {:?}", g.header.problems);
        assert_eq!(g.header.arch_meta().block_count, Some(3), "{name}");
        let summary = g.header.type_summary();
        for t in *types {
            assert!(summary.keys().any(|k| k.name() == *t), "{name}: no {t} in {summary:?}");
        }
        let f = gchecks::run(&g, Some(&ctx));
        assert_eq!(ids(&f), *want, "{name}: {f:#?}");
    }
}

/// Granite's multipliers survive llama.cpp's conversion (GraniteModel writes them as
/// `granite.*_scale`): lint --source is clean on the zoo's conversion, and names each scale that
/// differs from the source's config.json (here the config edited to other values, as a GGUF made
/// by a converter that dropped or mangled them would differ).
#[test]
fn granite_scales_are_checked_against_the_source() {
    let gguf = common::zoo_path("gguf/granite-mini-f16.gguf");
    let clean = common::ckptcheck(&[
        "lint",
        "--json",
        "--source",
        common::zoo_path("models/granite-mini").to_str().unwrap(),
        gguf.to_str().unwrap(),
    ]);
    assert_eq!((clean.code, clean.finding_ids()), (0, vec![]), "{}", clean.stdout);
    let d = common::zoo_copy("granite-mini", &|c| {
        c["residual_multiplier"] = serde_json::json!(1.0);
        c["logits_scaling"] = serde_json::json!(16.0);
    });
    let r = common::ckptcheck(&["lint", "--json", "--source", d.path().to_str().unwrap(), gguf.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let fields: Vec<String> = r.json()["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["id"] == "gguf.multiplier-differs")
        .map(|f| f["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(fields, ["granite.residual_scale", "granite.logit_scale"], "{}", r.stdout);
}
