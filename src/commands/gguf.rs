//! `inspect` and `lint` for a GGUF file: the metadata, tokenizer and type mix, and the GGUF
//! checks (alone, or with `lint --source HF_DIR` against the HF checkpoint it came from).
//! The HF paths of `inspect` and `lint` are unchanged; they hand a `.gguf` path to this module.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::checks::{self, Context, Severity};
use crate::cli::LintArgs;
use crate::commands::{lint, open_hf, Outcome};
use crate::format::gguf::{ArchMeta, GgufFile, TypeBytes};
use crate::output::Printer;

/// Version of the GGUF `inspect --json` layout.
pub const GGUF_INSPECT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct GgufInspectReport {
    pub schema_version: u32,
    pub path: String,
    pub format: &'static str,
    pub gguf_version: u32,
    pub file_bytes: u64,
    pub alignment: u64,
    pub arch: ArchMeta,
    /// "instruct" (chat template or role tokens) or "base".
    pub kind: &'static str,
    pub tensor_count: usize,
    /// Elements over all tensors.
    pub parameters: u64,
    /// Tensor data bytes.
    pub bytes: u64,
    /// ggml type → tensors, elements, bytes.
    pub types: BTreeMap<String, TypeBytes>,
    pub tokenizer: TokenizerSummary,
    /// Every metadata key with a short rendering of its value (arrays as `[type; n]`).
    pub metadata: BTreeMap<String, String>,
    pub layout_problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct TokenizerSummary {
    pub model: Option<String>,
    pub pre: Option<String>,
    pub tokens: Option<usize>,
    pub merges: Option<usize>,
    pub bos: Option<String>,
    pub eos: Option<String>,
    pub eot: Option<String>,
    pub pad: Option<String>,
    pub add_bos: Option<bool>,
    pub chat_template_chars: Option<usize>,
}

pub fn is_gguf(path: &Path) -> bool {
    path.is_file() && matches!(crate::format::sniff(path), Ok(crate::format::FileKind::Gguf))
}

pub fn inspect(path: &Path, json: bool, printer: &Printer) -> anyhow::Result<Outcome> {
    let r = build(path)?;
    if json {
        printer.data(&serde_json::to_string_pretty(&r)?);
    } else {
        printer.data(&render_text(&r));
    }
    Ok(Outcome::Clean)
}

pub fn build(path: &Path) -> anyhow::Result<GgufInspectReport> {
    let g = GgufFile::open(path)?;
    let h = &g.header;
    let tok = h.tokenizer();
    let show = |id: Option<u64>| {
        id.map(|i| match tok.token(i) {
            Some(t) => format!("{i} `{t}`"),
            None => i.to_string(),
        })
    };
    let has_markers = tok.tokens.is_some_and(|ts| checks::template::ROLE_MARKERS.iter().any(|m| ts.iter().any(|t| t == m)));
    let types = h.type_summary();
    Ok(GgufInspectReport {
        schema_version: GGUF_INSPECT_SCHEMA_VERSION,
        path: path.display().to_string(),
        format: "gguf",
        gguf_version: h.version,
        file_bytes: g.file_len(),
        alignment: h.alignment,
        arch: h.arch_meta(),
        kind: if tok.chat_template.is_some() || has_markers { "instruct" } else { "base" },
        tensor_count: h.tensors.len(),
        parameters: types.values().map(|t| t.elements).sum(),
        bytes: types.values().map(|t| t.bytes).sum(),
        types: types.into_iter().map(|(k, v)| (k.name().to_string(), v)).collect(),
        tokenizer: TokenizerSummary {
            model: tok.model.map(str::to_string),
            pre: tok.pre.map(str::to_string),
            tokens: tok.tokens.map(<[String]>::len),
            merges: tok.merges.map(<[String]>::len),
            bos: show(tok.bos),
            eos: show(tok.eos),
            eot: show(tok.eot),
            pad: show(tok.pad),
            add_bos: tok.add_bos,
            chat_template_chars: tok.chat_template.map(|t| t.chars().count()),
        },
        metadata: h.metadata.iter().map(|(k, v)| (k.clone(), v.summary())).collect(),
        layout_problems: h.problems.iter().map(|p| p.message()).collect(),
    })
}

pub fn render_text(r: &GgufInspectReport) -> String {
    let mut s = String::new();
    let mut row = |k: &str, v: String| s.push_str(&format!("{k:<18} {v}\n"));
    let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "?".into());
    let a = &r.arch;
    row("path", r.path.clone());
    row("format", format!("gguf v{} ({} bytes, alignment {})", r.gguf_version, r.file_bytes, r.alignment));
    row("architecture", a.architecture.clone().unwrap_or_else(|| "?".into()));
    row("kind", r.kind.to_string());
    row(
        "shape",
        format!(
            "{} layers, hidden {}, heads {}/{} kv, ffn {}, context {}{}",
            o(a.block_count),
            o(a.embedding_length),
            o(a.head_count),
            o(a.head_count_kv),
            o(a.feed_forward_length),
            o(a.context_length),
            a.expert_count.map(|e| format!(", {e} experts")).unwrap_or_default()
        ),
    );
    row(
        "rope",
        format!(
            "base {}{}, rms eps {}",
            a.rope_freq_base.map(|t| t.to_string()).unwrap_or_else(|| "?".into()),
            a.rope_scaling_type.as_ref().map(|t| format!(", scaling {t} ×{}", a.rope_scaling_factor.unwrap_or(1.0))).unwrap_or_default(),
            a.rms_norm_eps.map(|t| (t as f32).to_string()).unwrap_or_else(|| "?".into())
        ),
    );
    row("parameters", format!("{} ({} tensors, {} bytes)", r.parameters, r.tensor_count, r.bytes));
    for (t, b) in &r.types {
        let pct = if r.bytes > 0 { 100.0 * b.bytes as f64 / r.bytes as f64 } else { 0.0 };
        row("type", format!("{t:<8} {:>4} tensors {:>14} bytes ({pct:.1}%)", b.tensors, b.bytes));
    }
    let t = &r.tokenizer;
    let os = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    row(
        "tokenizer",
        format!(
            "{} (pre {}), {} tokens, {} merges",
            os(&t.model),
            os(&t.pre),
            t.tokens.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
            t.merges.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
        ),
    );
    row(
        "special tokens",
        format!(
            "bos {} (add {}), eos {}, eot {}, pad {}",
            os(&t.bos),
            t.add_bos.map(|b| b.to_string()).unwrap_or_else(|| "-".into()),
            os(&t.eos),
            os(&t.eot),
            os(&t.pad)
        ),
    );
    row("chat template", t.chat_template_chars.map(|c| format!("{c} characters")).unwrap_or_else(|| "none".into()));
    for p in &r.layout_problems {
        row("LAYOUT PROBLEM", p.clone());
    }
    s
}

pub fn lint(args: &LintArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let g = GgufFile::open(&args.path)?;
    let source = args.source.as_deref().map(open_hf).transpose()?;
    let ctx = source.as_ref().map(Context::new);
    let findings = checks::gguf::run(&g, ctx.as_ref());
    let fail_level = if args.strict { Severity::Warning } else { Severity::Error };
    let report = lint::report(args.path.display().to_string(), findings, fail_level);
    if args.json {
        printer.data(&serde_json::to_string_pretty(&report)?);
    } else {
        printer.data(&lint::render_text(&report));
    }
    Ok(if report.verdict == "fail" { Outcome::Findings } else { Outcome::Clean })
}
