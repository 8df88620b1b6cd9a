//! Issue 12, "Hostile inputs, round two", through the real binary where possible.
//!
//! Findings without bound: two million EOS ids and half a million bad safetensors entries used to
//! yield one finding each (1.7 GB RSS, 525 MB of output); now the first few of an id are listed
//! and one summary carries the count, in text and JSON, with memory bounded while collecting.
//!
//! Silent gates: NaN / infinite / negative / inverted / out-of-range thresholds disabled their
//! gate and passed; a NaN GGUF rope base became a default; `lint --source` with an unreadable
//! source file skipped its comparisons and said ok; an architecture the engine cannot run, or one
//! that is not the source's, went unmentioned. Each is now an error or a finding.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::*;

/// Peak RSS allowed for a hostile input (the checkpoints themselves are tiny). Before the fix
/// the two inputs below took 2.1 GB and 0.9 GB (debug build); after, about 180 MB and 95 MB.
const MAX_RSS_KB: u64 = 300 * 1024;
/// Output allowed for a hostile input: before, 600 MB and 170 MB of text.
const MAX_STDOUT: usize = 2 * 1024 * 1024;

/// A run of the real binary with its peak resident set size, polled from /proc (VmHWM is the
/// kernel's own high-water mark, so polling only has to see it before the child exits).
struct Measured {
    code: i32,
    stdout: String,
    stderr: String,
    peak_rss_kb: u64,
}

fn measured(args: &[&str]) -> Measured {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ckptcheck"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let status_path = format!("/proc/{}/status", child.id());
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = Vec::new();
        out_pipe.read_to_end(&mut s).unwrap();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = Vec::new();
        err_pipe.read_to_end(&mut s).unwrap();
        s
    });
    let mut peak = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) =
                text.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(peak > 0 || !Path::new("/proc/self/status").exists(), "VmHWM was never read");
    eprintln!("{args:?}: peak RSS {peak} kB");
    Measured {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap()).into_owned(),
        peak_rss_kb: peak,
    }
}

fn findings(v: &Value) -> &Vec<Value> {
    v["findings"].as_array().unwrap()
}

/// Findings with `id` that are listed, and the count their summary carries.
fn listed_and_more(v: &Value, id: &str) -> (usize, u64) {
    let of_id: Vec<&Value> = findings(v).iter().filter(|f| f["id"] == id).collect();
    let listed = of_id.iter().filter(|f| f.get("more").is_none()).count();
    let more = of_id.iter().filter_map(|f| f.get("more")).map(|m| m.as_u64().unwrap()).sum();
    (listed, more)
}

/// Every finding a report stands for: a summary counts as its `more`.
fn weight_of(v: &Value, severity: &str) -> u64 {
    findings(v).iter().filter(|f| f["severity"] == severity).map(|f| f.get("more").and_then(Value::as_u64).unwrap_or(1)).sum()
}

/// The finding shape of the bisect/gate report schema (docs/report-schema.json).
fn finding_validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/report-schema.json")).unwrap())
            .unwrap();
    jsonschema::validator_for(&schema["$defs"]["finding"]).unwrap()
}

// ---------------------------------------------------------------------------------------------
// A. findings without bound

/// Regression: `generation_config.json` with 2 000 000 eos ids gave 2 000 001 findings, 2.1 GB
/// RSS and 600 MB of text. Now: the first 256 ids are kept and checked (5 listed, one summary),
/// `special.too-many-ids` gives the real count, output and memory stay small.
#[test]
fn two_million_eos_ids_are_bounded() {
    let d = tmp();
    let dir = d.path().join("m");
    Fixture::healthy().write(&dir);
    let ids: Vec<String> = (1000..2_001_000u64).map(|i| i.to_string()).collect();
    std::fs::write(dir.join("generation_config.json"), format!("{{\"eos_token_id\": [{}], \"pad_token_id\": 0}}", ids.join(","))).unwrap();
    drop(ids);

    let r = measured(&["lint", "--json", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.len() < MAX_STDOUT, "{} bytes of JSON", r.stdout.len());
    assert!(r.peak_rss_kb < MAX_RSS_KB, "peak RSS {} kB", r.peak_rss_kb);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let (listed, more) = listed_and_more(&v, "vocab.special-id-out-of-range");
    assert_eq!((listed, more), (5, 251), "the 256 checked ids, every one past the 16 rows");
    let too_many = findings(&v).iter().find(|f| f["id"] == "special.too-many-ids").expect("special.too-many-ids");
    assert_eq!(too_many["severity"], "warning");
    assert!(too_many["message"].as_str().unwrap().contains("2 000 000 ids"), "{too_many}");
    assert_eq!(v["errors"].as_u64().unwrap(), weight_of(&v, "error"), "counts include what summaries stand for");
    // Messages name a few ids and the full count, never all of them.
    for f in findings(&v) {
        assert!(f["message"].as_str().unwrap().len() < 2000, "{f}");
    }

    let t = measured(&["lint", dir.to_str().unwrap()]);
    assert_eq!(t.code, 1);
    assert!(t.stdout.len() < MAX_STDOUT && t.peak_rss_kb < MAX_RSS_KB, "{} bytes, {} kB", t.stdout.len(), t.peak_rss_kb);
    // The text shows three of the five kept and counts the rest (`--verbose`: the five and the summary).
    assert!(t.stdout.contains("vocab.special-id-out-of-range    … and 253 more like these"), "{}", t.stdout);
    let all = measured(&["lint", "--verbose", dir.to_str().unwrap()]);
    assert!(all.stdout.contains("… and 251 more `vocab.special-id-out-of-range` findings"), "{}", all.stdout);
}

/// A model.safetensors whose header holds the fixture's tensors and `n` entries with an unknown
/// dtype, written by hand (the safetensors crate refuses to write them).
fn write_bad_entries(dir: &Path, n: usize) {
    let f = Fixture::healthy();
    f.write(dir);
    let good = serialize(f.tensors.iter());
    let len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&good[8..8 + len]).unwrap().trim_end();
    let mut h = String::with_capacity(n * 64 + header.len());
    h.push_str(header.strip_suffix('}').unwrap());
    for i in 0..n {
        h.push_str(&format!(",\"bad.{i:06}\":{{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}"));
    }
    h.push('}');
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&good[8 + len..]);
    assert!(bytes.len() < 50 << 20, "{} bytes", bytes.len());
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
}

/// Regression: a 30 MB safetensors header with 500 000 bad entries took 890 MB RSS and printed
/// 170 MB. Now 5 are listed, one summary counts the other 499 995, in JSON and text; the summary
/// fits the report schema's finding; the file lends no tensor to compute.
#[test]
fn half_a_million_bad_entries_are_grouped() {
    let d = tmp();
    let dir = d.path().join("m");
    write_bad_entries(&dir, 500_000);

    let r = measured(&["lint", "--json", dir.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.len() < MAX_STDOUT, "{} bytes of JSON", r.stdout.len());
    assert!(r.peak_rss_kb < MAX_RSS_KB, "peak RSS {} kB", r.peak_rss_kb);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(listed_and_more(&v, "integrity.bad-entry"), (5, 499_995));
    assert_eq!(v["errors"], 500_000);
    assert_eq!(v["schema_version"], 1);
    let summary = findings(&v).iter().find(|f| f.get("more").is_some()).unwrap();
    assert_eq!(summary["message"], "… and 499 995 more `integrity.bad-entry` findings");
    assert_eq!(summary["file"], "model.safetensors");
    let validator = finding_validator();
    for f in findings(&v) {
        assert!(validator.validate(f).is_ok(), "not a schema finding: {f}");
    }

    let t = measured(&["lint", dir.to_str().unwrap()]);
    assert_eq!(t.code, 1);
    assert!(t.stdout.len() < 16 * 1024 && t.peak_rss_kb < MAX_RSS_KB, "{} bytes, {} kB", t.stdout.len(), t.peak_rss_kb);
    assert_eq!(t.stdout.matches("integrity.bad-entry").count(), 3 + 1, "3 shown and the line counting the rest:\n{}", t.stdout);
    assert!(t.stdout.contains("… and 499 997 more like these (--verbose lists them)"), "{}", t.stdout);
    let all = measured(&["lint", "--verbose", dir.to_str().unwrap()]);
    assert_eq!(all.stdout.matches("integrity.bad-entry").count(), 6 + 1, "5 kept, the summary's id and its message:\n{}", all.stdout);
    assert!(all.stdout.contains("… and 499 995 more `integrity.bad-entry` findings"));
    assert!(t.stdout.contains("500000 error(s)"), "{}", t.stdout);

    let f = ckptcheck::format::safetensors::SafetensorsFile::open(&dir.join("model.safetensors")).unwrap();
    assert_eq!(f.header.problems.len(), ckptcheck::format::safetensors::MAX_PROBLEMS_PER_KIND);
    assert_eq!(f.header.problem_count(), 500_000);
    let e = f.checked_bytes("model.norm.weight").unwrap_err().to_string();
    assert!(e.contains("500000 layout problems"), "{e}");
}

/// Exactly `LISTED_PER_ID` of an id: listed in full, no summary (the cut is past it).
#[test]
fn five_of_an_id_need_no_summary_and_six_get_one() {
    for (n, want) in [(5usize, (5usize, 0u64)), (6, (5, 1))] {
        let d = tmp();
        let dir = d.path().join("m");
        write_bad_entries(&dir, n);
        let v = lint_json(&dir).json();
        assert_eq!(listed_and_more(&v, "integrity.bad-entry"), want, "{n}");
    }
}

/// A tiny GGUF writer: `general.architecture = llama` and `n` F32 tensors of 32 values.
fn gguf_with_tensors(names: impl Iterator<Item = String>) -> Vec<u8> {
    let s = |b: &mut Vec<u8>, s: &str| {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    };
    let (mut infos, mut n) = (Vec::new(), 0u64);
    for name in names {
        s(&mut infos, &name);
        infos.extend(1u32.to_le_bytes());
        infos.extend(32u64.to_le_bytes());
        infos.extend(0u32.to_le_bytes());
        infos.extend((n * 128).to_le_bytes());
        n += 1;
    }
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    b.extend(n.to_le_bytes());
    b.extend(1u64.to_le_bytes());
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    s(&mut b, "llama");
    b.extend(infos);
    while !b.len().is_multiple_of(32) {
        b.push(0);
    }
    b.extend(std::iter::repeat_n(0u8, n as usize * 128));
    b
}

/// A GGUF whose 3 000 tensors all have names llama.cpp refuses: the parser keeps 64, the findings
/// list 5 and count the rest.
#[test]
fn gguf_layout_problems_are_grouped() {
    let d = tmp();
    let p = d.path().join("long-names.gguf");
    std::fs::write(&p, gguf_with_tensors((0..3000).map(|i| format!("blk.0.{i:0>70}")))).unwrap();
    let r = lint_json(&p);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v = r.json();
    assert_eq!(listed_and_more(&v, "gguf.tensor-name-too-long"), (5, 2995));
    let g = ckptcheck::format::gguf::GgufFile::open(&p).unwrap();
    assert_eq!(g.header.problems.len(), 64);
    assert_eq!(g.header.unlisted[0].1, 3000 - 64);
}

// ---------------------------------------------------------------------------------------------
// B. silent gates: thresholds

/// `compare --thresholds FILE` with a bad FILE: exit 2, the file and the key named, before any
/// model is opened (the checkpoints here do not exist).
fn thresholds_file_is_refused(text: &str, key: &str, says: &str) {
    let d = tmp();
    let p = d.path().join("gate.toml");
    std::fs::write(&p, text).unwrap();
    let r = ckptcheck(&["compare", "--thresholds", p.to_str().unwrap(), "/nonexistent/a", "/nonexistent/b"]);
    assert_eq!(r.code, 2, "{text}: {}", r.stderr);
    assert!(r.stderr.contains("gate.toml") && r.stderr.contains(&format!("`{key}`")), "{text}: {}", r.stderr);
    assert!(r.stderr.contains(says), "{text}: {}", r.stderr);
    assert!(!r.stderr.contains("nonexistent"), "thresholds are checked before anything is opened: {}", r.stderr);
}

/// The same line in a manifest's global `[thresholds]` table and in a step's `thresholds`.
fn manifest_is_refused(text: &str, key: &str, says: &str) {
    let d = tmp();
    let global = d.path().join("global.toml");
    std::fs::write(&global, format!("[thresholds]\n{text}\n[[step]]\npath = \"a\"\n[[step]]\npath = \"b\"\n")).unwrap();
    let r = ckptcheck(&["bisect", global.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{text}: {}", r.stderr);
    assert!(r.stderr.contains("global.toml") && r.stderr.contains(&format!("`thresholds.{key}`")), "{text}: {}", r.stderr);
    assert!(r.stderr.contains(says), "{text}: {}", r.stderr);

    let inline = text.replace('\n', ", ");
    let step = d.path().join("step.toml");
    std::fs::write(&step, format!("[[step]]\npath = \"a\"\n[[step]]\npath = \"b\"\nthresholds = {{ {inline} }}\n")).unwrap();
    let r = ckptcheck(&["gate", step.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{text}: {}", r.stderr);
    assert!(r.stderr.contains("step.toml") && r.stderr.contains(&format!("`step[1].thresholds.{key}`")), "{text}: {}", r.stderr);
    assert!(r.stderr.contains(says), "{text}: {}", r.stderr);
}

macro_rules! threshold_cases {
    ($($name:ident: $text:expr, $key:expr, $says:expr;)*) => {
        mod thresholds_file {
            $(#[test] fn $name() { super::thresholds_file_is_refused($text, $key, $says) })*
        }
        mod thresholds_in_manifest {
            $(#[test] fn $name() { super::manifest_is_refused($text, $key, $says) })*
        }
    };
}

threshold_cases! {
    kl_mean_fail_nan: "kl_mean_fail = nan", "kl_mean_fail", "NaN";
    kl_p99_fail_inf: "kl_p99_fail = inf", "kl_p99_fail", "infinite";
    ppl_ratio_warn_minus_inf: "ppl_ratio_warn = -inf", "ppl_ratio_warn", "infinite";
    kl_mean_warn_negative: "kl_mean_warn = -0.01", "kl_mean_warn", "outside [0, ∞)";
    kl_mean_warn_above_fail: "kl_mean_warn = 0.6\nkl_mean_fail = 0.5", "kl_mean_warn", "kl_mean_warn ≤ kl_mean_fail";
    top1_warn_below_fail: "top1_warn = 0.6\ntop1_fail = 0.8", "top1_warn", "top1_warn ≥ top1_fail";
    p_eos_ratio_warn_below_fail: "p_eos_ratio_warn = 0.2\np_eos_ratio_fail = 0.4", "p_eos_ratio_warn", "smaller is worse";
    top1_fail_above_one: "top1_fail = 1.5", "top1_fail", "outside [0, 1]";
    stop_rate_drop_fail_above_one: "stop_rate_drop_fail = 2", "stop_rate_drop_fail", "outside [0, 1]";
    p_eos_ref_min_negative: "p_eos_ref_min = -0.5", "p_eos_ref_min", "probability";
    ppl_ratio_fail_below_one: "ppl_ratio_fail = 0.5", "ppl_ratio_fail", "compared with itself";
    layer_rel_err_nan: "layer_rel_err = nan", "layer_rel_err", "NaN";
    old_spelling_nan: "eos_ratio_fail = nan", "eos_ratio_fail", "NaN";
    not_a_number: "kl_mean_fail = \"0.5\"", "kl_mean_fail", "must be a number";
}

/// A bound given alone past the one it inherits moves that one too (no error), as the shipped
/// tests' `kl_mean_fail = 0.0` expects; the run then fails only because the models do not exist.
#[test]
fn a_single_bound_moves_the_inherited_one() {
    let d = tmp();
    let p = d.path().join("gate.toml");
    std::fs::write(&p, "kl_mean_fail = 0.0\ntop1_fail = 0.95\n").unwrap();
    let r = ckptcheck(&["compare", "--thresholds", p.to_str().unwrap(), "/nonexistent/a", "/nonexistent/b"]);
    assert_eq!(r.code, 2);
    assert!(!r.stderr.contains("gate.toml") && r.stderr.contains("nonexistent"), "{}", r.stderr);
}

/// A step's `thresholds` that is not a table was ignored; now it is an error.
#[test]
fn step_thresholds_must_be_a_table() {
    let d = tmp();
    let m = d.path().join("m.toml");
    std::fs::write(&m, "[[step]]\npath = \"a\"\nthresholds = 0.5\n[[step]]\npath = \"b\"\n").unwrap();
    let r = ckptcheck(&["bisect", m.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("m.toml") && r.stderr.contains("`step[0].thresholds`") && r.stderr.contains("must be a table"),
        "{}",
        r.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// C. silent gates: GGUF metadata and `lint --source`

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/gguf-fixtures")
}

/// Position just after a length-prefixed metadata key (where its u32 value type starts).
fn after_key(b: &[u8], key: &str) -> usize {
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(key.as_bytes());
    b.windows(needle.len()).position(|w| w == needle.as_slice()).unwrap_or_else(|| panic!("`{key}` not in file")) + needle.len()
}

/// tiny-llama.gguf with the float32 value of `key` replaced by `value`, written into `dir`.
fn with_f32(dir: &Path, key: &str, value: f32) -> PathBuf {
    let mut b = std::fs::read(fixtures().join("tiny-llama.gguf")).unwrap();
    let at = after_key(&b, key);
    assert_eq!(u32::from_le_bytes(b[at..at + 4].try_into().unwrap()), 6, "{key} is float32");
    b[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    let p = dir.join("mutated.gguf");
    std::fs::write(&p, b).unwrap();
    p
}

/// tiny-llama.gguf with `general.architecture` (5 bytes, `llama`) replaced by another 5-byte name.
fn with_architecture(dir: &Path, arch: &str) -> PathBuf {
    assert_eq!(arch.len(), 5);
    let mut b = std::fs::read(fixtures().join("tiny-llama.gguf")).unwrap();
    let at = after_key(&b, "general.architecture");
    assert_eq!(&b[at + 4..at + 12], &5u64.to_le_bytes());
    assert_eq!(&b[at + 12..at + 17], b"llama");
    b[at + 12..at + 17].copy_from_slice(arch.as_bytes());
    let p = dir.join(format!("{arch}.gguf"));
    std::fs::write(&p, b).unwrap();
    p
}

/// Regression: `rope.freq_base = NaN` became JSON null in the GGUF's config and then rope base
/// 10000 without a word. Now it is `gguf.metadata-not-finite` (exit 1), and `hf_config_checked`
/// refuses it naming the key.
#[test]
fn nan_rope_base_is_a_finding() {
    let d = tmp();
    let p = with_f32(d.path(), "llama.rope.freq_base", f32::NAN);
    let r = lint_json(&p);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let f = r.finding("gguf.metadata-not-finite");
    assert_eq!((f["severity"].as_str(), f["field"].as_str()), (Some("error"), Some("llama.rope.freq_base")));
    assert!(f["message"].as_str().unwrap().contains("is NaN"), "{f}");
    let g = ckptcheck::format::gguf::GgufFile::open(&p).unwrap();
    let (key, detail) = g.header.hf_config_checked().unwrap_err();
    assert_eq!(key, "llama.rope.freq_base");
    assert!(detail.contains("NaN"), "{detail}");
    // The engine refuses it too, rather than running with rope base 10000.
    let e =
        ckptcheck::model::load_gguf(&g, &candle_core::Device::Cpu, candle_core::DType::F32).err().expect("the engine refuses NaN metadata");
    assert!(e.to_string().contains("llama.rope.freq_base") && e.to_string().contains("NaN"), "{e}");
}

/// Against its source the NaN rope base is also a difference, never "equal".
#[test]
fn nan_rope_base_against_the_source() {
    let d = tmp();
    let p = with_f32(d.path(), "llama.rope.freq_base", f32::NAN);
    let r = ckptcheck(&["lint", "--json", "--source", fixtures().join("hf").to_str().unwrap(), p.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    let ids = r.finding_ids();
    assert!(ids.contains(&"gguf.metadata-not-finite".to_string()) && ids.contains(&"gguf.rope-base-differs".to_string()), "{ids:?}");
}

#[test]
fn infinite_rms_eps_is_a_finding() {
    let d = tmp();
    let p = with_f32(d.path(), "llama.attention.layer_norm_rms_epsilon", f32::INFINITY);
    let r = lint_json(&p);
    assert_eq!(r.code, 1);
    let f = r.finding("gguf.metadata-not-finite");
    assert_eq!(f["field"], "llama.attention.layer_norm_rms_epsilon");
    assert!(f["message"].as_str().unwrap().contains("is inf"), "{f}");
}

/// The fixture's HF source copied to `dir`, with `edit` applied to it.
fn source_copy(dir: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for e in std::fs::read_dir(fixtures().join("hf")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), src.join(e.file_name())).unwrap();
    }
    edit(&src);
    src
}

fn lint_source(src: &Path, gguf: &str) -> Run {
    ckptcheck(&["lint", "--json", "--source", src.to_str().unwrap(), fixtures().join(gguf).to_str().unwrap()])
}

/// The `gguf.source-unreadable` finding about `file`.
fn unreadable<'a>(v: &'a Value, file: &str) -> &'a Value {
    findings(v)
        .iter()
        .find(|f| f["id"] == "gguf.source-unreadable" && f["file"].as_str().unwrap().ends_with(file))
        .unwrap_or_else(|| panic!("no gguf.source-unreadable for {file}: {v}"))
}

/// Regression: with the source's config.json unparseable, `lint --source` compared nothing of the
/// architecture and said ok even for the wrong-rope GGUF.
#[test]
fn unparseable_source_config_is_a_finding() {
    let d = tmp();
    let src = source_copy(d.path(), |s| std::fs::write(s.join("config.json"), "{\"model_type\": \"llama\", ").unwrap());
    let r = lint_source(&src, "tiny-llama-wrong-rope.gguf");
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = r.json();
    let f = unreadable(&v, "config.json");
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap().contains("rope base"), "{f}");
}

#[test]
fn missing_source_config_is_a_finding() {
    let d = tmp();
    let src = source_copy(d.path(), |s| std::fs::remove_file(s.join("config.json")).unwrap());
    let r = lint_source(&src, "tiny-llama.gguf");
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(unreadable(&r.json(), "config.json")["message"].as_str().unwrap().contains("is missing"));
}

/// Regression: a truncated source tokenizer.json skipped every token comparison without a word.
#[test]
fn truncated_source_tokenizer_is_a_finding() {
    let d = tmp();
    let src = source_copy(d.path(), |s| {
        let t = std::fs::read(s.join("tokenizer.json")).unwrap();
        std::fs::write(s.join("tokenizer.json"), &t[..t.len() / 2]).unwrap();
    });
    let r = lint_source(&src, "tiny-llama-other-tokenizer.gguf");
    assert!(r.code >= 1, "{}", r.stdout);
    let v = r.json();
    let f = unreadable(&v, "tokenizer.json");
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap().contains("token strings and ids"), "{f}");
}

#[test]
fn missing_source_tokenizer_is_a_warning() {
    let d = tmp();
    let src = source_copy(d.path(), |s| std::fs::remove_file(s.join("tokenizer.json")).unwrap());
    let r = lint_source(&src, "tiny-llama.gguf");
    assert_eq!(unreadable(&r.json(), "tokenizer.json")["severity"], "warning");
    let strict = ckptcheck(&["lint", "--strict", "--source", src.to_str().unwrap(), fixtures().join("tiny-llama.gguf").to_str().unwrap()]);
    assert_eq!(strict.code, 1, "{}", strict.stdout);
}

#[test]
fn unparseable_source_generation_config_is_a_finding() {
    let d = tmp();
    let src = source_copy(d.path(), |s| std::fs::write(s.join("generation_config.json"), "[").unwrap());
    let r = lint_source(&src, "tiny-llama.gguf");
    let v = r.json();
    let f = unreadable(&v, "generation_config.json");
    assert_eq!(f["severity"], "warning");
    assert!(f["message"].as_str().unwrap().contains("config.json's eos_token_id only"), "{f}");
}

/// An intact source: no `gguf.source-unreadable`, no `gguf.architecture-differs`.
#[test]
fn intact_source_has_neither_new_finding() {
    let r = lint_source(&fixtures().join("hf"), "tiny-llama.gguf");
    assert_eq!(r.code, 0);
    assert!(r.finding_ids().is_empty(), "{:?}", r.finding_ids());
}

/// `general.architecture` the engine does not run: an info finding saying compare cannot run it.
#[test]
fn unknown_architecture_is_an_info() {
    let d = tmp();
    let p = with_architecture(d.path(), "mamba");
    let r = lint_json(&p);
    let f = r.finding("gguf.architecture-not-run");
    assert_eq!(f["severity"], "info");
    assert!(f["message"].as_str().unwrap().contains("`compare` and `bisect` cannot run"), "{f}");
    assert_eq!(r.code, 0, "an info alone does not fail lint: {}", r.stdout);
    let llama = lint_json(&fixtures().join("tiny-llama.gguf")).finding_ids();
    assert!(!llama.contains(&"gguf.architecture-not-run".to_string()), "llama runs: {llama:?}");
}

/// The GGUF's architecture against the source's `model_type`: another one is an error.
#[test]
fn architecture_other_than_the_sources_is_an_error() {
    let d = tmp();
    let p = with_architecture(d.path(), "qwen2");
    let r = ckptcheck(&["lint", "--json", "--source", fixtures().join("hf").to_str().unwrap(), p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let f = r.finding("gguf.architecture-differs");
    assert_eq!(f["severity"], "error");
    assert!(f["message"].as_str().unwrap().contains("`qwen2`") && f["message"].as_str().unwrap().contains("`llama`"), "{f}");
}

/// Mistral converts as `llama`: the source's `model_type = mistral` is no mismatch.
#[test]
fn mistral_source_converts_as_llama() {
    let d = tmp();
    let src = source_copy(d.path(), |s| {
        let mut c: Value = serde_json::from_str(&std::fs::read_to_string(s.join("config.json")).unwrap()).unwrap();
        c["model_type"] = "mistral".into();
        std::fs::write(s.join("config.json"), c.to_string()).unwrap();
    });
    let r = lint_source(&src, "tiny-llama.gguf");
    assert!(!r.finding_ids().contains(&"gguf.architecture-differs".to_string()), "{:?}", r.finding_ids());
}
